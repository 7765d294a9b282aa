//! One real `edgenode serve` process on loopback, with its own temporary data dir.
//!
//! The node is started exactly as an operator would start it (see docs/api.md,
//! "Process"), and the harness learns its port, pin and id from the one `ready`
//! line it prints. Everything it writes to stderr is kept, and printed when a test
//! fails, so a failure report always comes with the node's own account of it.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a node may take to print its `ready` line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of the node's stderr is kept for diagnostics (the newest bytes win).
const STDERR_KEPT_BYTES_MAX: usize = 1024 * 1024;

/// The claim code every test node is provisioned with.
pub const CLAIM_CODE: &str = "claim-7319-harbour";

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub name: String,
    pub claim_code: String,
    /// Extra TOML written to a file and passed as `--config`, e.g.
    /// `"[limits]\nupload_bytes_max = 2000000\n"`.
    pub config_toml: Option<String>,
    /// Where the data lives (e.g. a small file system the test mounted); default: a
    /// fresh temporary dir.
    pub data_dir: Option<PathBuf>,
    /// A program started in place of the edgenode binary with the same arguments (a
    /// wrapper script that sets a umask, say); default: `edgenode_binary()`.
    pub program: Option<PathBuf>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            name: "test-node".to_owned(),
            claim_code: CLAIM_CODE.to_owned(),
            config_toml: None,
            data_dir: None,
            program: None,
        }
    }
}

impl NodeOptions {
    /// Default options plus extra TOML configuration.
    pub fn with_config(config_toml: &str) -> Self {
        NodeOptions { config_toml: Some(config_toml.to_owned()), ..NodeOptions::default() }
    }
}

/// What the node announced on its `ready` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyLine {
    pub listen: SocketAddr,
    /// `sha256/BASE64` of the node's SubjectPublicKeyInfo.
    pub pin: String,
    pub node_id: String,
    /// The UDP endpoint for sibling replication (`peer=…`), on nodes that print it.
    pub peer: Option<SocketAddr>,
}

/// A running `edgenode serve`. Dropping it kills the process (only the one we
/// started) and removes the data dir, unless the test is failing: then the data dir
/// and the node's stderr are left for a person to read.
pub struct Node {
    options: NodeOptions,
    data_dir: PathBuf,
    config_file: Option<PathBuf>,
    child: Option<Child>,
    ready: ReadyLine,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Node {
    /// Starts a node on a fresh data dir and waits for its `ready` line.
    pub fn start(options: NodeOptions) -> Node {
        let data_dir = options.data_dir.clone().unwrap_or_else(unique_temp_dir);
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|error| panic!("creating data dir {}: {error}", data_dir.display()));
        let config_file = options.config_toml.as_ref().map(|toml| {
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, toml).unwrap_or_else(|error| panic!("writing config {}: {error}", path.display()));
            path
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (child, ready) = spawn_until_ready(&options, &data_dir, config_file.as_deref(), &stderr);
        Node { options, data_dir, config_file, child: Some(child), ready, stderr }
    }

    /// The address that serves HTTPS (TCP) and HTTP/3 (UDP).
    pub fn addr(&self) -> SocketAddr {
        self.ready.listen
    }

    /// The SPKI pin from the `ready` line.
    pub fn pin(&self) -> &str {
        &self.ready.pin
    }

    pub fn node_id(&self) -> &str {
        &self.ready.node_id
    }

    pub fn name(&self) -> &str {
        &self.options.name
    }

    pub fn claim_code(&self) -> &str {
        &self.options.claim_code
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id of the node we started.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    /// Kills the node with SIGKILL (what `kill -9` does) and reaps it.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix, to our own child only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the node to stop with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        terminate_child(&mut child).unwrap_or_else(|| {
            panic!("the node did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM\n{}", self.stderr_text())
        })
    }

    /// Starts the node again on the same data dir with the same arguments (killing it
    /// first if it still runs), and returns what the new process announced.
    pub fn restart(&mut self) -> ReadyLine {
        self.kill_9();
        let (child, ready) =
            spawn_until_ready(&self.options, &self.data_dir, self.config_file.as_deref(), &self.stderr);
        self.child = Some(child);
        self.ready = ready.clone();
        ready
    }

    /// The node's peak resident set size so far (`VmHWM` in /proc/PID/status), in bytes.
    pub fn peak_resident_bytes(&self) -> u64 {
        peak_resident_bytes_of(self.pid())
    }

    /// Everything the node wrote to stderr so far (its newest megabyte).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr buffer")).into_owned()
    }
}

/// The peak resident set size so far (`VmHWM` in /proc/PID/status) of a live
/// process, in bytes.
pub fn peak_resident_bytes_of(pid: u32) -> u64 {
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path).unwrap_or_else(|error| panic!("reading {status_path}: {error}"));
    let kilobytes = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmHWM line in {status_path}:\n{status}"));
    kilobytes * 1024
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_9();
        if std::thread::panicking() {
            eprintln!(
                "---- edgenode stderr (data dir kept at {}) ----\n{}\n---- end of edgenode stderr ----",
                self.data_dir.display(),
                self.stderr_text()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some(config_file) = &self.config_file {
            let _ = std::fs::remove_file(config_file);
        }
    }
}

/// Sends SIGTERM to a node process we started and waits up to `TERMINATE_TIMEOUT`
/// for it to exit; `None` (after killing it) when it did not.
pub fn terminate_child(child: &mut Child) -> Option<ExitStatus> {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("running `kill -TERM`");
    assert!(status.success(), "`kill -TERM {}` failed: {status}", child.id());
    let deadline = Instant::now() + TERMINATE_TIMEOUT;
    loop {
        if let Some(exit) = child.try_wait().expect("waiting for the node") {
            return Some(exit);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `edgenode` binary that cargo built: `EDGENODE_BIN`, else
/// `$CARGO_TARGET_DIR/debug/edgenode`, else `<workspace>/target/debug/edgenode`.
pub fn edgenode_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGENODE_BIN") {
        return PathBuf::from(path);
    }
    let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent");
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root.join(dir), // an absolute dir replaces the root
        None => workspace_root.join("target"),
    };
    let binary = target_dir.join("debug").join("edgenode");
    assert!(
        binary.is_file(),
        "no edgenode binary at {}: run `cargo build -p edgenode` first \
         (or set EDGENODE_BIN to the binary to test)",
        binary.display()
    );
    binary
}

fn unique_temp_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    std::env::temp_dir().join(format!(
        "edgenode-test-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Spawns `edgenode serve` and reads its stdout until the `ready` line; stdout and
/// stderr are then drained by background threads for as long as the process lives.
fn spawn_until_ready(
    options: &NodeOptions,
    data_dir: &Path,
    config_file: Option<&Path>,
    stderr_buffer: &Arc<Mutex<Vec<u8>>>,
) -> (Child, ReadyLine) {
    let binary = options.program.clone().unwrap_or_else(edgenode_binary);
    let mut command = Command::new(&binary);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--name", &options.name])
        .args(["--claim-code", &options.claim_code, "--no-mdns"]);
    if let Some(config_file) = config_file {
        command.arg("--config").arg(config_file);
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));

    drain_stderr(child.stderr.take().expect("piped stderr"), Arc::clone(stderr_buffer));
    let stdout_lines = forward_stdout_lines(child.stdout.take().expect("piped stdout"));

    let deadline = Instant::now() + READY_TIMEOUT;
    let mut stdout_seen = String::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match stdout_lines.recv_timeout(remaining) {
            Ok(line) => {
                if let Some(ready) = parse_ready_line(&line) {
                    return (child, ready);
                }
                stdout_seen.push_str(&line);
                stdout_seen.push('\n');
            }
            Err(error) => {
                let exit = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                // Give the stderr thread a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(200));
                let stderr = String::from_utf8_lossy(&stderr_buffer.lock().expect("stderr buffer")).into_owned();
                panic!(
                    "edgenode did not print its ready line within {READY_TIMEOUT:?} ({error}; exit: {exit:?})\n\
                     command: {command:?}\n---- stdout ----\n{stdout_seen}---- stderr ----\n{stderr}"
                );
            }
        }
    }
}

/// Parses `edgenode ready listen=127.0.0.1:PORT pin=sha256/… node_id=… [peer=IP:PORT]`.
pub fn parse_ready_line(line: &str) -> Option<ReadyLine> {
    let fields = line.trim().strip_prefix("edgenode ready ")?;
    let field = |key: &str| {
        fields.split_whitespace().find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')).map(str::to_owned)
    };
    Some(ReadyLine {
        listen: field("listen")?.parse().ok()?,
        pin: field("pin")?,
        node_id: field("node_id")?,
        peer: field("peer").and_then(|peer| peer.parse().ok()),
    })
}

fn drain_stderr(mut stderr: impl Read + Send + 'static, buffer: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let mut kept = buffer.lock().expect("stderr buffer");
            kept.extend_from_slice(&chunk[..n]);
            if kept.len() > STDERR_KEPT_BYTES_MAX {
                let excess = kept.len() - STDERR_KEPT_BYTES_MAX;
                kept.drain(..excess);
            }
        }
    });
}

/// Sends each stdout line to the returned channel; keeps reading (so the node never
/// blocks on a full pipe) after the receiver is gone.
fn forward_stdout_lines(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = sender.send(line);
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line_of_docs_api_md() {
        let ready =
            parse_ready_line("edgenode ready listen=127.0.0.1:40123 pin=sha256/AbC+/= node_id=0123456789abcdef")
                .expect("a ready line");
        assert_eq!(ready.listen, "127.0.0.1:40123".parse().unwrap());
        assert_eq!(ready.pin, "sha256/AbC+/=");
        assert_eq!(ready.node_id, "0123456789abcdef");
        assert_eq!(ready.peer, None);
        let with_peer = parse_ready_line(
            "edgenode ready listen=10.0.0.2:8443 pin=sha256/AbC+/= node_id=0123456789abcdef peer=10.0.0.2:8444",
        )
        .expect("a ready line with peer=");
        assert_eq!(with_peer.peer, Some("10.0.0.2:8444".parse().unwrap()));
        assert_eq!(parse_ready_line("edgenode claim-code=XYZ"), None);
    }
}
