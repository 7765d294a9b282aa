//! The operator's commands, run as an operator runs them: `edgenode config check` on a
//! good file, on files with a wrong key or value and on files it cannot read;
//! `edgenode status`'s exit code for a serving node, a stopped one and a data dir with
//! no node; a config's `log_level` deciding what the node logs; and (system tier) the
//! node's lines reaching a real journald with the priority of their level.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use edgenode_tests::fixtures::{distinct_photo, sha256_hex};
use edgenode_tests::node::{edgenode_binary, parse_ready_line, CLAIM_CODE};
use edgenode_tests::steps::PASSWORD;
use edgenode_tests::{Node, NodeOptions};

/// How long the journald scenario waits for the node's `ready` line, and for the
/// node and journald to stop.
const JOURNAL_NODE_TIMEOUT: Duration = Duration::from_secs(60);

/// A directory of files a test writes; removed afterwards unless the test failed.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("edgenode-operator-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
        Scratch(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("scratch files kept at {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What one run of `edgenode ARGS` gave: exit code, stdout, stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn edgenode(args: &[&OsStr]) -> Ran {
    let output: Output = Command::new(edgenode_binary()).args(args).output().expect("running edgenode");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn config_check(file: &Path) -> Ran {
    edgenode(&["config".as_ref(), "check".as_ref(), file.as_os_str()])
}

fn status(data_dir: &Path, json: bool) -> Ran {
    let mut args = vec!["status".as_ref(), "--data-dir".as_ref(), data_dir.as_os_str()];
    if json {
        args.push("--json".as_ref());
    }
    edgenode(&args)
}

#[test]
fn config_check_accepts_a_valid_file_and_says_what_it_gives() {
    let scratch = Scratch::new("config-good");
    let file = scratch.write(
        "node.toml",
        "name = \"kitchen\"\nlisten = \"[::]:8443\"\ndata_dir = \"/var/lib/edgenode\"\n\
         log_level = \"info,edgenode::link=debug\"\n[limits]\nmedia_workers = 1\n",
    );
    let ran = config_check(&file);
    assert_eq!(ran.code, Some(0), "a valid file: exit 0\n{}{}", ran.stdout, ran.stderr);
    assert_eq!(ran.stdout.lines().next(), Some(format!("ok: {}", file.display()).as_str()), "{}", ran.stdout);
    for (label, value) in [("name", "kitchen"), ("listen", "[::]:8443"), ("data dir", "/var/lib/edgenode")] {
        assert!(
            ran.stdout.lines().any(|line| line.trim_start().starts_with(label) && line.trim_end().ends_with(value)),
            "the summary gives {label} {value}:\n{}",
            ran.stdout
        );
    }
    assert_eq!(ran.stderr, "", "nothing on stderr");
}

#[test]
fn config_check_names_the_key_that_is_wrong_and_exits_1() {
    let scratch = Scratch::new("config-bad");
    for (case, toml, key) in [
        ("misspelt key", "name = \"kitchen\"\nnmae = \"typo\"\n", "nmae"),
        ("value out of range", "[limits]\nmedia_workers = 0\n", "limits.media_workers"),
        ("misspelt log level", "log_level = \"inof\"\n", "log_level"),
        ("log directive with a bad level", "log_level = \"edgenode=loud\"\n", "log_level"),
        ("not TOML", "name = \n", "line 1"),
    ] {
        let file = scratch.write("node.toml", toml);
        let ran = config_check(&file);
        assert_eq!(ran.code, Some(1), "{case}: exit 1\n{}{}", ran.stdout, ran.stderr);
        assert!(ran.stderr.contains(key), "{case}: the message names {key:?}:\n{}", ran.stderr);
        assert!(ran.stderr.contains(&file.display().to_string()), "{case}: and the file:\n{}", ran.stderr);
        assert!(!ran.stdout.contains("ok:"), "{case}: no `ok`:\n{}", ran.stdout);
    }
}

#[test]
fn config_check_of_a_file_it_cannot_read_exits_2() {
    let scratch = Scratch::new("config-unreadable");
    let missing = scratch.0.join("missing.toml");
    let ran = config_check(&missing);
    assert_eq!(ran.code, Some(2), "a missing file: exit 2\n{}{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("cannot read config file"), "{}", ran.stderr);
    assert!(ran.stderr.contains(&missing.display().to_string()), "{}", ran.stderr);
    let ran = config_check(&scratch.0);
    assert_eq!(ran.code, Some(2), "a directory: exit 2\n{}{}", ran.stdout, ran.stderr);
}

#[test]
fn status_exits_0_while_the_node_serves_1_once_it_stopped_and_2_without_a_node() {
    let mut node = Node::start(NodeOptions::default());
    let ran = status(node.data_dir(), false);
    assert_eq!(ran.code, Some(0), "a serving node: exit 0\n{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains(&format!("yes, https://{}", node.addr())), "{}", ran.stdout);
    let ran = status(node.data_dir(), true);
    assert_eq!(ran.code, Some(0), "--json too\n{}{}", ran.stdout, ran.stderr);
    let answer: serde_json::Value = serde_json::from_str(&ran.stdout).expect("status --json prints JSON");
    assert_eq!(answer["serving"], true);

    let exit = node.terminate();
    assert!(exit.success(), "the node stops cleanly: {exit}");
    let ran = status(node.data_dir(), false);
    assert_eq!(ran.code, Some(1), "a stopped node: exit 1\n{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("no answer on"), "the table says so:\n{}", ran.stdout);
    assert!(ran.stdout.contains(node.pin()), "and still shows the identity:\n{}", ran.stdout);
    let ran = status(node.data_dir(), true);
    assert_eq!(ran.code, Some(1), "--json too\n{}{}", ran.stdout, ran.stderr);
    let answer: serde_json::Value = serde_json::from_str(&ran.stdout).expect("status --json prints JSON");
    assert_eq!(answer["serving"], false);

    let nowhere = node.data_dir().join("no-node-here");
    let ran = status(&nowhere, false);
    assert_eq!(ran.code, Some(2), "no identity to read: exit 2\n{}{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("no TLS identity in"), "it says why:\n{}", ran.stderr);
}

#[test]
fn status_with_a_config_it_cannot_read_exits_2() {
    let scratch = Scratch::new("status-config");
    let missing = scratch.0.join("node.toml");
    let ran = edgenode(&["status".as_ref(), "--config".as_ref(), missing.as_os_str()]);
    assert_eq!(ran.code, Some(2), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("cannot read config file"), "{}", ran.stderr);
}

#[test]
fn the_configs_log_level_decides_what_the_node_logs() {
    // RUST_LOG wins over log_level; this test is about log_level. Other tests' nodes
    // started from now on lose it too: only how much they log changes.
    std::env::remove_var("RUST_LOG");
    let mut debug = Node::start(NodeOptions::with_config("log_level = \"debug\"\n"));
    let mut quiet = Node::start(NodeOptions::with_config("log_level = \"warn\"\n"));
    debug.terminate();
    quiet.terminate();
    let has_level =
        |node: &Node, level: &str| node.stderr_text().lines().any(|line| line.contains(&format!(" {level} ")));
    assert!(has_level(&debug, "DEBUG"), "log_level = \"debug\" logs debug lines:\n{}", debug.stderr_text());
    assert!(
        !has_level(&quiet, "INFO") && !has_level(&quiet, "DEBUG"),
        "log_level = \"warn\" logs no info or debug lines:\n{}",
        quiet.stderr_text()
    );
}

/// Under systemd, stderr is a stream to journald and `JOURNAL_STREAM` names it; the
/// node then sends each line to journald natively, with its level's priority. Here a
/// real systemd-journald runs in a private mount namespace (its sockets and journal
/// files nowhere else), `systemd-cat` connects the node's stderr to it, and
/// `JOURNAL_STREAM` is set to that stream's device and inode as systemd sets it for a
/// service. An error is provoked by a photo whose display file was deleted.
#[test]
#[ignore = "system tier: needs root (a private mount namespace), systemd-journald, systemd-cat, journalctl and curl"]
fn under_a_journal_stream_each_line_reaches_journald_at_its_levels_priority() {
    let scratch = Scratch::new("journald");
    let journal_dir = scratch.0.join("journal");
    let data_dir = scratch.0.join("data");
    std::fs::create_dir_all(&journal_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    // A file an operator left readable by others: fixed at start, with a warning.
    let notes = scratch.write("data/notes.txt", "moved here from the old disk\n");
    std::fs::set_permissions(&notes, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    // The node's own debug lines, not its HTTP libraries' (a bare "debug" has those too).
    let config = scratch.write("node.toml", "log_level = \"info,edgenode=debug\"\n");
    let bad_config = scratch.write("broken.toml", "[limits]\nmedia_workers = 0\n");
    let stop_file = scratch.0.join("stop");
    let stdout_file = scratch.0.join("stdout");
    let script = scratch.write(
        "run.sh",
        format!(
            r#"set -euo pipefail
mount -t tmpfs tmpfs /run/systemd
mkdir /run/systemd/journal
mount -t tmpfs tmpfs /run/log
mkdir /run/log/journal
mount --bind '{journal}' /run/log/journal
mount -t tmpfs tmpfs /var/log/journal
/lib/systemd/systemd-journald &
journald=$!
trap 'kill $journald; wait $journald' EXIT
for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.1; done
# First a start that fails on its config, as a service whose file an operator broke.
if systemd-cat -t edgenode-stderr sh -c 'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$@"' \
    sh '{binary}' serve --config '{bad_config}' --data-dir '{data}' --listen 127.0.0.1:0 --no-mdns; then
    echo "the node started with a broken config" >&2
    exit 1
fi
systemd-cat -t edgenode-stderr sh -c 'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$@" >'"'{stdout}'" \
    sh '{binary}' serve --config '{config}' --data-dir '{data}' --listen 127.0.0.1:0 --name journal-test \
    --claim-code '{claim}' --no-mdns &
node=$!
while [ ! -e '{stop}' ] && kill -0 $node 2>/dev/null; do sleep 0.1; done
kill -TERM $node 2>/dev/null || true
wait $node
"#,
            journal = journal_dir.display(),
            stdout = stdout_file.display(),
            binary = edgenode_binary().display(),
            config = config.display(),
            bad_config = bad_config.display(),
            data = data_dir.display(),
            claim = CLAIM_CODE,
            stop = stop_file.display(),
        ),
    );
    let mut namespace = Namespace {
        script: Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash"])
            .arg(&script)
            .spawn()
            .expect("running unshare (util-linux)"),
        stop_file: stop_file.clone(),
    };

    let deadline = Instant::now() + JOURNAL_NODE_TIMEOUT;
    let ready = loop {
        let stdout = std::fs::read_to_string(&stdout_file).unwrap_or_default();
        if let Some(ready) = stdout.lines().find_map(parse_ready_line) {
            break ready;
        }
        if let Some(exit) = namespace.script.try_wait().unwrap() {
            panic!("the namespace ended before the node was ready ({exit}); stdout:\n{stdout}");
        }
        assert!(Instant::now() < deadline, "no ready line within {JOURNAL_NODE_TIMEOUT:?}; stdout:\n{stdout}");
        std::thread::sleep(Duration::from_millis(100));
    };

    // An error: the display file of an uploaded photo is gone when it is asked for.
    let curl = |args: &[&str]| -> String {
        let url_base = format!("https://localhost:{}", ready.listen.port());
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--cacert"])
            .arg(data_dir.join("ca.crt"))
            .args(args.iter().map(|arg| arg.replace("BASE", &url_base)))
            .output()
            .expect("running curl");
        assert!(output.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let claim = serde_json::json!({ "handle": "ada", "password": PASSWORD, "claim": CLAIM_CODE }).to_string();
    let account: serde_json::Value = serde_json::from_str(&curl(&[
        "-H",
        "content-type: application/json",
        "--data",
        &claim,
        "BASE/api/v1/accounts",
    ]))
    .expect("the claim answers JSON");
    let bearer = format!("authorization: Bearer {}", account["token"].as_str().expect("a token"));
    let photo = scratch.write("photo.jpg", distinct_photo(3));
    let media_id = sha256_hex(&std::fs::read(&photo).unwrap());
    curl(&[
        "-X",
        "PUT",
        "-H",
        &bearer,
        "-H",
        "content-type: image/jpeg",
        "--data-binary",
        &format!("@{}", photo.display()),
        &format!("BASE/api/v1/media/{media_id}"),
    ]);
    // The derivatives are made again from the original when they are missing: remove
    // the original too.
    let removed = remove_files_under(&data_dir.join("media"));
    assert!(removed >= 2, "the upload left its files in media/ to remove");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &bearer,
        &format!("BASE/api/v1/media/{media_id}/display"),
    ]);
    assert_eq!(code, "404", "the photo's files are gone");

    let exit = namespace.stop().expect("the node and journald stop");
    assert!(exit.success(), "the node stopped cleanly and journald with it: {exit}");

    let entries = journal_entries(&journal_dir, &["SYSLOG_IDENTIFIER=edgenode"]);
    let priority_of = |message: &str| {
        entries
            .iter()
            .find(|entry| entry["MESSAGE"].as_str().is_some_and(|text| text.contains(message)))
            .map(|entry| (entry["PRIORITY"].as_str().unwrap_or("?").to_owned(), entry["_TRANSPORT"].clone()))
            .unwrap_or_else(|| panic!("no journal entry {message:?} among:\n{}", messages(&entries)))
    };
    let native = serde_json::json!("journal");
    assert_eq!(priority_of("original missing"), ("3".to_owned(), native.clone()), "error → err");
    assert_eq!(
        priority_of("`limits.media_workers` must be at least 1"),
        ("3".to_owned(), native.clone()),
        "the error that stopped a start → err, so `journalctl -p err` says why a service is down"
    );
    assert_eq!(priority_of("owner-only"), ("4".to_owned(), native.clone()), "warn → warning");
    assert_eq!(priority_of("ready"), ("6".to_owned(), native.clone()), "info → info");
    assert_eq!(priority_of("shutdown: transports stopped"), ("7".to_owned(), native), "debug → debug");
    let errors = journal_entries(&journal_dir, &["-p", "err", "SYSLOG_IDENTIFIER=edgenode"]);
    assert!(
        !errors.is_empty() && errors.iter().all(|entry| entry["PRIORITY"] == "3"),
        "`journalctl -p err` shows the error and nothing milder:\n{}",
        messages(&errors)
    );
    let text_lines = journal_entries(&journal_dir, &["SYSLOG_IDENTIFIER=edgenode-stderr"]);
    assert!(text_lines.is_empty(), "nothing was written as text to stderr:\n{}", messages(&text_lines));
}

/// The journald scenario's script (journald and the node in their mount namespace),
/// stopped when the test ends, passed or not.
struct Namespace {
    script: std::process::Child,
    /// The script stops the node, then journald, once this file exists.
    stop_file: PathBuf,
}

impl Namespace {
    /// Stops the node and journald; `None` when they did not stop in time (the script
    /// is then killed).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = std::fs::write(&self.stop_file, b"");
        let deadline = Instant::now() + JOURNAL_NODE_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(exit) = self.script.try_wait().expect("waiting for the namespace script") {
                return Some(exit);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.script.kill();
        let _ = self.script.wait();
        None
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if self.script.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// `journalctl -D DIR -o json MATCHES…`, one JSON object per entry.
fn journal_entries(dir: &Path, matches: &[&str]) -> Vec<serde_json::Value> {
    let output = Command::new("journalctl")
        .arg("-D")
        .arg(dir)
        .args(["--no-pager", "-o", "json"])
        .args(matches)
        .output()
        .expect("running journalctl");
    assert!(output.status.success(), "journalctl: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("journalctl -o json: {error}: {line}")))
        .collect()
}

fn messages(entries: &[serde_json::Value]) -> String {
    entries.iter().map(|entry| format!("  {} {}", entry["PRIORITY"], entry["MESSAGE"])).collect::<Vec<_>>().join("\n")
}

/// Removes every file under `dir` (directories stay); how many.
fn remove_files_under(dir: &Path) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|error| panic!("reading {}: {error}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            removed += remove_files_under(&path);
        } else {
            std::fs::remove_file(&path).unwrap_or_else(|error| panic!("removing {}: {error}", path.display()));
            removed += 1;
        }
    }
    removed
}
