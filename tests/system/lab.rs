//! The system tier's lab: network namespaces joined by a bridge, real `edgenode`
//! processes in them, and an independent mDNS client (python-zeroconf,
//! `mdns_probe.py`) beside them. Nodes can be stopped, killed with SIGKILL and
//! restarted on their data dir; a host's cable can be pulled out of the switch and
//! plugged back in. Included by `tests/tests/system_mdns.rs`,
//! `tests/tests/system_replication.rs`, `tests/tests/system_replace_box.rs` and
//! `tests/tests/system_neighbourhood.rs`; `siblings.rs` pairs lab nodes as siblings.
//!
//! Everything happens inside namespaces this process creates (`en<pid>l<lab><host>`,
//! addresses from 10.213.<lab>.0/24): the host's own interfaces are never touched.
//! Dropping a `Lab` deletes its namespaces, also when a test panics; nodes and probes
//! kill only the processes they started.

#![allow(dead_code)] // each test uses a part of the lab

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use edgenode_tests::node::{edgenode_binary, parse_ready_line, peak_resident_bytes_of, terminate_child, ReadyLine};
use serde_json::{json, Value};

/// Every lab node listens on this port, on all IPv4 addresses.
pub const PORT: u16 = 8443;
pub const CLAIM_CODE: &str = "CODE12345";
pub const ADMIN_PASSWORD: &str = "sunsets over the harbour 42";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const OUTPUT_KEPT_BYTES_MAX: usize = 1024 * 1024;
const HTTPS_TIMEOUT: Duration = Duration::from_secs(5);

/// Called first by every lab test: panics saying what is missing unless everything
/// the tier needs is there (root, iproute2, python-zeroconf, curl, the binary).
/// The tests are `#[ignore]`d, so this runs only when they are asked for.
pub fn require_tools() {
    let mut missing = Vec::new();
    if !running_as_root() {
        missing.push("root (network namespaces need it)".to_owned());
    }
    let works = |program: &str, args: &[&str]| {
        Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if !works("ip", &["-V"]) {
        missing.push("`ip` (iproute2)".to_owned());
    }
    if !works("python3", &["-c", "import zeroconf"]) {
        missing.push("python3 with the `zeroconf` package".to_owned());
    }
    if !works("curl", &["--version"]) {
        missing.push("`curl`".to_owned());
    }
    assert!(
        missing.is_empty(),
        "the system tier needs: {}. Run tests/system/install-deps as root.",
        missing.join(", ")
    );
    let binary = edgenode_binary();
    assert!(binary.is_file(), "no edgenode binary at {}", binary.display());
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?.to_owned();
            Some(uids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs a command to completion; panics with its output if it fails.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// A set of namespaces: one holds the bridge `br0` (the "switch"), each host is a
/// namespace whose `eth0` is a veth cable plugged into that bridge.
pub struct Lab {
    prefix: String,
    subnet: u8,
    switch: String,
    /// Every namespace created, switch first: deleted in reverse on drop.
    namespaces: Vec<String>,
    hosts_made: usize,
}

/// One namespace: a machine on the lab's link (or alone, with only loopback).
#[derive(Debug, Clone)]
pub struct Host {
    pub namespace: String,
    address: Option<Ipv4Addr>,
    /// `(switch namespace, port)`: where this host's cable plugs into the bridge.
    switch_port: Option<(String, String)>,
}

impl Lab {
    pub fn new() -> Lab {
        static LABS: AtomicUsize = AtomicUsize::new(0);
        let index = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("en{}l{index}", std::process::id());
        let switch = format!("{prefix}sw");
        let mut lab =
            Lab { prefix, subnet: (index % 250) as u8, switch: switch.clone(), namespaces: Vec::new(), hosts_made: 0 };
        ip(&["netns", "add", &switch]);
        lab.namespaces.push(switch.clone());
        // Snooping off: the bridge floods multicast like a plain home switch does.
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        lab
    }

    /// A new host plugged into the bridge, with `eth0` at 10.213.<lab>.<11+n>/24.
    /// Named `eth0` like a real NIC: mDNS skips `veth*` by default.
    pub fn host(&mut self) -> Host {
        let host = self.isolated_host();
        let letter = host.namespace.chars().last().expect("a host letter");
        let switch_port = format!("p{letter}");
        let address = Ipv4Addr::new(10, 213, self.subnet, 10 + self.hosts_made as u8);
        ip(&[
            "-n",
            &host.namespace,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &switch_port,
            "netns",
            &self.switch,
        ]);
        ip(&["-n", &self.switch, "link", "set", &switch_port, "master", "br0"]);
        ip(&["-n", &self.switch, "link", "set", &switch_port, "up"]);
        ip(&["-n", &host.namespace, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        ip(&["-n", &host.namespace, "link", "set", "eth0", "up"]);
        Host { address: Some(address), switch_port: Some((self.switch.clone(), switch_port)), ..host }
    }

    /// A host with only loopback: no multicast anywhere.
    pub fn isolated_host(&mut self) -> Host {
        assert!(self.hosts_made < 26, "a lab has at most 26 hosts");
        let letter = (b'a' + self.hosts_made as u8) as char;
        self.hosts_made += 1;
        let namespace = format!("{}{letter}", self.prefix);
        ip(&["netns", "add", &namespace]);
        self.namespaces.push(namespace.clone());
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        Host { namespace, address: None, switch_port: None }
    }

    /// A host on the bridge whose `eth0` has multicast switched off.
    pub fn host_without_multicast(&mut self) -> Host {
        let host = self.host();
        ip(&["-n", &host.namespace, "link", "set", "eth0", "multicast", "off"]);
        host
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for namespace in self.namespaces.iter().rev() {
            let deleted = Command::new("ip").args(["netns", "del", namespace]).stderr(Stdio::null()).status();
            if !deleted.is_ok_and(|status| status.success()) {
                eprintln!("warning: could not delete network namespace {namespace}");
            }
        }
    }
}

impl Host {
    /// `program` run inside this host's namespace (`ip netns exec` execs it: the
    /// child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace]).arg(program);
        command
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address.unwrap_or_else(|| panic!("host {} is not on the lab's link", self.namespace))
    }

    /// Adds 10.213.<lab>.<last_octet>/24 to `eth0`, as DHCP would when it renews.
    pub fn add_address(&self, last_octet: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.address().octets();
        let address = Ipv4Addr::new(a, b, c, last_octet);
        ip(&["-n", &self.namespace, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        address
    }

    /// Bytes sent on this host's `eth0` so far, every frame counted (headers too).
    pub fn link_bytes_sent(&self) -> u64 {
        let stats = ip(&["-n", &self.namespace, "-json", "-statistics", "link", "show", "eth0"]);
        let stats: Value = serde_json::from_str(&stats)
            .unwrap_or_else(|error| panic!("`ip -json` printed no JSON ({error}): {stats}"));
        stats[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no stats64.tx.bytes for eth0 in {}: {stats}", self.namespace))
    }

    /// Pulls this host's cable out of the switch (its port goes down): the host can
    /// no longer reach anyone on the link, nor they it, but the host still reaches
    /// its own address (the kernel keeps local routes on an interface without
    /// carrier), so clients inside its namespace still reach a node there.
    pub fn unplug(&self) {
        let (switch, port) =
            self.switch_port.as_ref().unwrap_or_else(|| panic!("host {} has no cable", self.namespace));
        ip(&["-n", switch, "link", "set", port, "down"]);
    }

    /// Plugs the cable back in.
    pub fn plug(&self) {
        let (switch, port) =
            self.switch_port.as_ref().unwrap_or_else(|| panic!("host {} has no cable", self.namespace));
        ip(&["-n", switch, "link", "set", port, "up"]);
    }
}

/// A real `edgenode serve` inside a lab host.
pub struct LabNode {
    pub name: String,
    pub ready: ReadyLine,
    host: Host,
    mdns: bool,
    child: Option<Child>,
    /// The stderr of every process this node has been, oldest first.
    stderr: Arc<Mutex<Vec<u8>>>,
    data_dir: PathBuf,
    config_file: Option<PathBuf>,
}

/// Where a lab node answers HTTPS, reached with curl from inside the node's host and
/// pinned to its key. Cheap to clone, so client threads can keep writing while the
/// node itself is killed and restarted (its identity, so its pin, survives restarts).
#[derive(Debug, Clone)]
pub struct Endpoint {
    host: Host,
    address: Ipv4Addr,
    pin: String,
}

impl LabNode {
    /// Starts `edgenode serve --listen 0.0.0.0:8443 --name NAME` in `host` with mDNS
    /// on, and `config_toml` (if not empty) as its config file; waits for `ready`.
    pub fn start(host: &Host, name: &str, config_toml: &str) -> LabNode {
        LabNode::start_with(host, name, config_toml, true)
    }

    /// As `start`, with `--no-mdns`.
    pub fn start_without_mdns(host: &Host, name: &str, config_toml: &str) -> LabNode {
        LabNode::start_with(host, name, config_toml, false)
    }

    fn start_with(host: &Host, name: &str, config_toml: &str, mdns: bool) -> LabNode {
        let data_dir = unique_temp_path(&format!("node-{name}"));
        std::fs::create_dir_all(&data_dir).unwrap_or_else(|error| panic!("creating {}: {error}", data_dir.display()));
        let mut node = LabNode {
            name: name.to_owned(),
            ready: ReadyLine {
                listen: ([0, 0, 0, 0], 0).into(),
                pin: String::new(),
                node_id: String::new(),
                peer: None,
            },
            host: host.clone(),
            mdns,
            child: None,
            stderr: Arc::new(Mutex::new(Vec::new())),
            data_dir,
            config_file: None,
        };
        node.write_config(config_toml);
        node.spawn();
        node
    }

    /// Starts the stopped node again on the same data dir, with `config_toml` (if not
    /// empty) as its config file now; waits for `ready`.
    pub fn restart(&mut self, config_toml: &str) {
        assert!(self.child.is_none(), "node {} is still running: stop it before restarting it", self.name);
        self.write_config(config_toml);
        self.spawn();
    }

    fn write_config(&mut self, config_toml: &str) {
        if let Some(old) = self.config_file.take() {
            let _ = std::fs::remove_file(old);
        }
        if config_toml.is_empty() {
            return;
        }
        let path = self.data_dir.with_extension("toml");
        std::fs::write(&path, config_toml).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        self.config_file = Some(path);
    }

    /// Runs `edgenode serve` on the data dir and waits for its ready line.
    fn spawn(&mut self) {
        let mut command = self.host.command(edgenode_binary());
        command.arg("serve").arg("--data-dir").arg(&self.data_dir);
        command.args(["--listen", &format!("0.0.0.0:{PORT}"), "--name", &self.name, "--claim-code", CLAIM_CODE]);
        if !self.mdns {
            command.arg("--no-mdns");
        }
        if let Some(config_file) = &self.config_file {
            command.arg("--config").arg(config_file);
        }
        command.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
        keep_output(child.stderr.take().expect("piped stderr"), &self.stderr);
        let stdout_lines = forward_lines(child.stdout.take().expect("piped stdout"));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match stdout_lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((_, line)) => {
                    if let Some(ready) = parse_ready_line(&line) {
                        self.ready = ready;
                        return;
                    }
                }
                Err(error) => {
                    // Give the stderr reader a moment to collect the last words.
                    std::thread::sleep(Duration::from_millis(200));
                    panic!(
                        "node {} in {} printed no ready line within {READY_TIMEOUT:?} ({error})\n{}",
                        self.name,
                        self.host.namespace,
                        self.stderr_text()
                    )
                }
            }
        }
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The address the node serves on: its link address, else loopback.
    pub fn address(&self) -> Ipv4Addr {
        self.host.address.unwrap_or(Ipv4Addr::LOCALHOST)
    }

    /// Where the node answers HTTPS, for clients that outlive this borrow.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { host: self.host.clone(), address: self.address(), pin: self.ready.pin.clone() }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A file the node keeps in its data dir, as text (trimmed).
    pub fn read_data_file(&self, file_name: &str) -> String {
        let path = self.data_dir.join(file_name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("node {}: reading {}: {error}", self.name, path.display()));
        text.trim().to_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr buffer")).into_owned()
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().expect("waiting for the node").is_none())
    }

    /// The process id of the running node (`ip netns exec` execs it: it is our child).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap_or_else(|| panic!("node {} is not running", self.name)).id()
    }

    /// The running node's peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_resident_bytes(&self) -> u64 {
        peak_resident_bytes_of(self.pid())
    }

    /// Sends SIGTERM to the node (our own child) and waits for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        terminate_child(&mut child).unwrap_or_else(|| {
            panic!("node {} did not exit within its time of SIGTERM\n{}", self.name, self.stderr_text())
        })
    }

    /// Kills the node with SIGKILL (`kill -9`, to our own child only) and reaps it.
    pub fn kill_9(&mut self) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("node {} is not running", self.name));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// One HTTPS request from inside the node's namespace, with curl pinned to the
    /// node's key: `(status, body as JSON, or as a JSON string if it is not JSON)`.
    pub fn https(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        self.endpoint().https(method, path, token, body)
    }

    /// Claims the node (first, admin account) as `admin` and returns the admin's token.
    pub fn claim(&self) -> String {
        self.claim_as("admin")
    }

    /// Claims the node (first, admin account) as `handle` and returns its token.
    pub fn claim_as(&self, handle: &str) -> String {
        let body = json!({ "handle": handle, "password": ADMIN_PASSWORD, "claim": CLAIM_CODE });
        let (status, created) = self.https("POST", "/api/v1/accounts", None, Some(&body));
        assert_eq!(status, 201, "claiming node {} as {handle}: {created}", self.name);
        created["token"].as_str().unwrap_or_else(|| panic!("no token in {created}")).to_owned()
    }

    /// `GET /api/v1/node/nearby` as the admin.
    pub fn nearby(&self, token: &str) -> Vec<Value> {
        let (status, answer) = self.https("GET", "/api/v1/node/nearby", Some(token), None);
        assert_eq!(status, 200, "GET /api/v1/node/nearby on {} (is the route wired?): {answer}", self.name);
        nodes_in(&answer)
    }
}

impl Drop for LabNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL to our own child only
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- node {} in {} (data dir kept at {}) ----\n{}---- end of node {} ----",
                self.name,
                self.host.namespace,
                self.data_dir.display(),
                self.stderr_text(),
                self.name
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some(config_file) = &self.config_file {
            let _ = std::fs::remove_file(config_file);
        }
    }
}

impl Endpoint {
    /// One HTTPS request (JSON body, if any); panics when no HTTP answer comes back.
    pub fn https(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(|body| body.to_string().into_bytes());
        let body = body.as_deref().map(|bytes| ("application/json", bytes));
        self.request(method, path, token, body, HTTPS_TIMEOUT).unwrap_or_else(|error| panic!("{error}"))
    }

    /// One HTTPS request with an optional `(content type, bytes)` body: `(status, body
    /// as JSON, or as a JSON string if it is not JSON)`, or `Err` saying why no HTTP
    /// answer came within `timeout` (the node is down, say).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
        timeout: Duration,
    ) -> Result<(u16, Value), String> {
        let pin = self.pin.strip_prefix("sha256/").expect("a sha256/ pin");
        let url = format!("https://{}:{PORT}{path}", self.address);
        let mut command = self.host.command("curl");
        command.args(["--silent", "--show-error", "--insecure", "--max-time", &timeout.as_secs_f64().to_string()]);
        command.args(["--pinnedpubkey", &format!("sha256//{pin}"), "--request", method]);
        command.args(["--write-out", "\n%{http_code}"]);
        if let Some(token) = token {
            command.args(["--header", &format!("authorization: Bearer {token}")]);
        }
        if let Some((content_type, _)) = body {
            command.args(["--header", &format!("content-type: {content_type}"), "--data-binary", "@-"]);
        }
        command.arg(&url);
        command.stdin(if body.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|error| panic!("running {command:?}: {error}"));
        if let Some((_, bytes)) = body {
            // curl reads `@-` whole before it connects; a write error shows in its exit.
            let _ = child.stdin.take().expect("piped stdin").write_all(bytes);
        }
        let output = child.wait_with_output().unwrap_or_else(|error| panic!("waiting for {command:?}: {error}"));
        if !output.status.success() {
            return Err(format!(
                "{method} {url}: no answer ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let output = String::from_utf8_lossy(&output.stdout);
        let (body, status) = output.rsplit_once('\n').unwrap_or(("", &output));
        let status = status.trim().parse().unwrap_or_else(|_| panic!("curl printed no status: {output:?}"));
        let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
        Ok((status, body))
    }
}

impl Endpoint {
    /// `GET path` as raw bytes (a photo), curl pinned as in `request`: `(status, body)`,
    /// or `Err` saying why no HTTP answer came within `timeout`.
    pub fn get_bytes(&self, path: &str, token: Option<&str>, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
        let pin = self.pin.strip_prefix("sha256/").expect("a sha256/ pin");
        let url = format!("https://{}:{PORT}{path}", self.address);
        let mut command = self.host.command("curl");
        command.args(["--silent", "--show-error", "--insecure", "--max-time", &timeout.as_secs_f64().to_string()]);
        command.args(["--pinnedpubkey", &format!("sha256//{pin}"), "--write-out", "%{http_code}"]);
        if let Some(token) = token {
            command.args(["--header", &format!("authorization: Bearer {token}")]);
        }
        let output = command.arg(&url).output().unwrap_or_else(|error| panic!("running {command:?}: {error}"));
        if !output.status.success() {
            return Err(format!(
                "GET {url}: no answer ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        // The last three bytes are the status `--write-out` appended to the body.
        let mut body = output.stdout;
        let status_at = body.len().checked_sub(3).ok_or_else(|| format!("GET {url}: curl printed no status"))?;
        let status =
            String::from_utf8_lossy(&body[status_at..]).parse().map_err(|_| format!("GET {url}: no status"))?;
        body.truncate(status_at);
        Ok((status, body))
    }
}

/// `tests/system/mdns_probe.py` running in a lab host; its JSON lines arrive as events.
pub struct Probe {
    child: Option<Child>,
    lines: mpsc::Receiver<(Instant, String)>,
    /// When the line of the last event returned arrived.
    last_arrival: Option<Instant>,
    stderr: Arc<Mutex<Vec<u8>>>,
    seen: Vec<Value>,
    what: String,
}

impl Probe {
    pub fn spawn(host: &Host, args: &[&str]) -> Probe {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("system").join("mdns_probe.py");
        let mut command = host.command("python3");
        command.arg("-u").arg(&script).args(args);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        keep_output(child.stderr.take().expect("piped stderr"), &stderr);
        let lines = forward_lines(child.stdout.take().expect("piped stdout"));
        Probe {
            child: Some(child),
            lines,
            last_arrival: None,
            stderr,
            seen: Vec::new(),
            what: format!("mdns_probe {}", args.join(" ")),
        }
    }

    /// The next event within `timeout`, or `None` (timeout or the probe ended).
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        let (arrival, line) = self.lines.recv_timeout(timeout).ok()?;
        self.last_arrival = Some(arrival);
        let event: Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("{}: not a JSON line ({error}): {line}", self.what));
        self.seen.push(event.clone());
        Some(event)
    }

    /// Waits up to `timeout` for an event `accept` takes; panics with all it saw if none.
    pub fn wait_for(&mut self, timeout: Duration, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        while let Some(event) = self.next_event(deadline.saturating_duration_since(Instant::now())) {
            if accept(&event) {
                return event;
            }
        }
        panic!("{}: no {what} within {timeout:?}; saw {:#?}\nstderr: {}", self.what, self.seen, self.stderr_text())
    }

    /// Every event until the probe says `done` (or ends), waiting at most `timeout`.
    pub fn until_done(&mut self, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        while let Some(event) = self.next_event(deadline.saturating_duration_since(Instant::now())) {
            if event["event"] == "done" {
                return events;
            }
            events.push(event);
        }
        panic!("{}: did not finish within {timeout:?}; saw {:#?}\nstderr: {}", self.what, self.seen, self.stderr_text())
    }

    /// When the last event returned reached us (its line was read from the probe).
    pub fn last_arrival(&self) -> Instant {
        self.last_arrival.expect("an event was received")
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr buffer")).into_owned()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Browses `service_type` from `host` for `timeout_seconds` (stopping early at
/// `count` instances) and returns the resolved events.
pub fn browse(host: &Host, service_type: &str, timeout_seconds: u64, count: usize) -> Vec<Value> {
    let timeout = timeout_seconds.to_string();
    let count = count.to_string();
    let mut probe = Probe::spawn(host, &["browse", service_type, "--timeout", &timeout, "--count", &count]);
    let events = probe.until_done(Duration::from_secs(timeout_seconds + 10));
    events.into_iter().filter(|event| event["event"] == "resolved").collect()
}

/// `edgenode discover --json --timeout S` run in `host`: the nodes it printed.
pub fn discover(host: &Host, timeout_seconds: u64) -> Vec<Value> {
    let mut command = host.command(edgenode_binary());
    command.args(["discover", "--json", "--timeout", &timeout_seconds.to_string()]);
    let stdout = run(&mut command);
    let answer: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("discover --json printed no JSON ({error}): {stdout}"));
    nodes_in(&answer)
}

/// The node list of an answer: a bare array (`discover --json`), or the `items` of
/// an object (`GET /api/v1/node/nearby`).
pub fn nodes_in(answer: &Value) -> Vec<Value> {
    let list = if answer.is_array() { answer } else { answer.get("items").unwrap_or(answer) };
    list.as_array().unwrap_or_else(|| panic!("no list of nodes in {answer}")).clone()
}

/// The names in a list of nodes, sorted.
pub fn names_of(nodes: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = nodes.iter().map(|node| node["name"].as_str().unwrap_or("?").to_owned()).collect();
    names.sort();
    names
}

/// Retries `attempt` every 250 ms until it gives `Ok`, for at most `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => panic!("{what}: not within {timeout:?}; last: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn unique_temp_path(label: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "edgenode-system-{}-{}-{label}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Appends what a process writes to `kept`, keeping its newest `OUTPUT_KEPT_BYTES_MAX` bytes.
fn keep_output(mut output: impl Read + Send + 'static, kept: &Arc<Mutex<Vec<u8>>>) {
    let buffer = kept.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = output.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let mut buffer = buffer.lock().expect("output buffer");
            buffer.extend_from_slice(&chunk[..n]);
            let excess = buffer.len().saturating_sub(OUTPUT_KEPT_BYTES_MAX);
            buffer.drain(..excess);
        }
    });
}

/// Sends each line, with the time it arrived, to the returned channel; keeps
/// draining after the receiver is gone.
fn forward_lines(output: impl Read + Send + 'static) -> mpsc::Receiver<(Instant, String)> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            let _ = sender.send((Instant::now(), line));
        }
    });
    receiver
}
