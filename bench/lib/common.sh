# Shared helpers of the benchmarks (sourced by bench/*/run). Nothing here runs by itself.
# Every process is started by the script and stopped by its pid; traffic stays on loopback.

bench_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
edgenode="$bench_root/target/release/edgenode"
edgenode_load="$bench_root/target/release/edgenode-load"
api_py="$bench_root/bench/lib/api.py"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

machine_line() {
    echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Installs Debian packages when missing (as root only).
ensure_packages() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        log "not root: cannot install ${missing[*]}"
        return 1
    fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

# BENCH_NO_BUILD=1 uses the release binaries as they are (e.g. while another cargo holds the
# lock). A build stamp younger than 20 minutes also skips the build, so that the benchmarks of
# one `bench/run` use one binary even while node/src changes under them (BENCH_REBUILD=1: build).
build_release() { release_build "$edgenode" .release-built -p edgenode; }
# The load generator of the serving benchmark (tests/src/bin/edgenode-load.rs).
build_load() { release_build "$edgenode_load" .load-built -p edgenode-tests --bin edgenode-load; }

# release_build BINARY STAMP CARGO_ARGS…: `cargo build --release CARGO_ARGS…` unless skipped as above;
# when the build fails, an existing BINARY is used.
release_build() {
    local binary="$1" stamp="$bench_root/bench/out/$2"
    shift 2
    if [[ "${BENCH_NO_BUILD:-}" == 1 && -x "$binary" ]]; then return 0; fi
    if [[ "${BENCH_REBUILD:-}" != 1 && -x "$binary" && -n "$(find "$stamp" -mmin -20 2>/dev/null)" ]]; then
        log "using $(basename "$binary") built $(date -r "$binary" '+%T') by this suite (BENCH_REBUILD=1 rebuilds)"
        return 0
    fi
    if (cd "$bench_root" && cargo build --release "$@" >&2); then
        mkdir -p "$bench_root/bench/out" && touch "$stamp"
    else
        [[ -x "$binary" ]] || return 1
        log "cargo build failed (sources mid-edit?): using the existing $binary from $(date -r "$binary" '+%F %T')"
    fi
}

# /proc figures of one pid: peak RSS and current RSS in KiB, CPU seconds (user + system).
vmhwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
vmrss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_seconds() {
    local ticks
    ticks=$(getconf CLK_TCK)
    # Fields after the ")" of the command name: utime and stime are 12 and 13 there.
    sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$ticks" '{printf "%.2f", ($12 + $13) / hz}'
}
# children_cpu_seconds VAR: sets VAR to the CPU seconds (user + system) of this shell's
# children that have ended and been waited for (the second line of bash's `times`); the
# difference around a command is that command's CPU, descendants included. `times` must run
# in this very shell (a $(…) subshell would report its own, empty, counts), hence the file.
children_cpu_seconds() {
    local file="${TMPDIR:-/tmp}/bench-times.$BASHPID" user system
    times >"$file"
    { read -r _ && read -r user system; } <"$file"
    rm -f "$file"
    printf -v "$1" '%s' "$(awk -v u="$user" -v s="$system" 'BEGIN { split(u, a, /[ms]/); split(s, b, /[ms]/); printf "%.3f", a[1] * 60 + a[2] + b[1] * 60 + b[2] }')"
}
# Sum over several pids.
sum_kib() { local total=0 pid; for pid in "${@:2}"; do total=$((total + $($1 "$pid"))); done; echo "$total"; }
mib() { awk -v kib="$1" 'BEGIN { printf "%.1f", kib / 1024 }'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

free_port() { # a TCP+UDP port and the next one free on 127.0.0.1
    python3 - <<'PY'
import socket, random
for _ in range(200):
    p = random.randint(20000, 60000)
    try:
        for q in (p, p + 1):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass
PY
}

# in_ns CMD…: runs CMD in network namespace $NS when set, else here. (Not for `&`: a
# backgrounded function is a subshell; use ip netns exec directly, which execs, so $! is
# the command's pid.)
in_ns() { if [[ -n "${NS:-}" ]]; then ip netns exec "$NS" "$@"; else "$@"; fi; }

# start_node DATA_DIR PORT NAME [extra serve args…]: starts edgenode in the background;
# listens on ${NODE_HOST:-127.0.0.1}, in namespace $NS when set, on the CPUs $NODE_CPUS
# (a `taskset -c` list) when set; sets NODE_PID, NODE_URL, NODE_PIN, NODE_ID, NODE_PEER, NODE_READY_MS (start to ready line).
start_node() {
    local data="$1" port="$2" name="$3"
    shift 3
    mkdir -p "$data"
    local out="$data.stdout"
    : >"$out" # truncated here, not in the child: a restart must not see the last ready line
    local started
    started=$(now_ms)
    local prefix=()
    [[ -n "${NS:-}" ]] && prefix=(ip netns exec "$NS")
    [[ -n "${NODE_CPUS:-}" ]] && prefix+=(taskset -c "$NODE_CPUS")
    "${prefix[@]}" "$edgenode" serve --data-dir "$data" --listen "${NODE_HOST:-127.0.0.1}:$port" --name "$name" --claim-code BENCH-CLAIM-CODE --no-mdns "$@" \
        >"$out" 2>"$data.stderr" &
    NODE_PID=$!
    local deadline=$((SECONDS + 120))
    until grep -q '^edgenode ready' "$out" 2>/dev/null; do
        if ! kill -0 "$NODE_PID" 2>/dev/null; then
            log "edgenode exited before ready: $(tail -5 "$data.stderr")"
            return 1
        fi
        ((SECONDS < deadline)) || { log "edgenode not ready after 120 s"; stop_pid "$NODE_PID"; return 1; }
        sleep 0.02
    done
    NODE_READY_MS=$(($(now_ms) - started))
    local line
    line="$(grep '^edgenode ready' "$out" || true)"
    [[ -n "$line" ]] || { log "no ready line in $out"; stop_pid "$NODE_PID"; return 1; }
    NODE_URL="https://${NODE_HOST:-127.0.0.1}:$port"
    NODE_PIN="$(sed -E 's/.* pin=([^ ]+).*/\1/' <<<"$line")"
    NODE_ID="$(sed -E 's/.* node_id=([^ ]+).*/\1/' <<<"$line")"
    NODE_PEER="$(sed -E 's/.* peer=([^ ]+).*/\1/' <<<"$line")"
}

# stop_pid PID: TERM, up to 15 s, then KILL. Only pids this script started.
stop_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# result BENCH METRIC OURS PEER [NOTE]: one row of the table (ratio = ours / peer).
result() {
    local bench="$1" metric="$2" ours="$3" peer="$4" note="${5:-}"
    local ratio
    ratio=$(awk -v a="$ours" -v b="$peer" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else printf "–" }')
    mkdir -p "$bench_root/bench/out/$bench"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$bench" "$metric" "$ours" "$peer" "$ratio" "$(loadavg)" "$note" \
        >>"$bench_root/bench/out/$bench/results.tsv"
    printf '  %-44s edgenode %-12s peer %-12s ratio %-6s load %s\n' "$metric" "$ours" "$peer" "$ratio" "$(loadavg)" >&2
}
reset_results() { mkdir -p "$bench_root/bench/out/$1"; : >"$bench_root/bench/out/$1/results.tsv"; }
