//! Updates as an operator sees them on a machine without RAUC: `edgenode update
//! status|check|install` (what they print, their exit codes, with the node serving and
//! stopped), the `update` part of `/api/v1/node` (admins only) and the update metrics;
//! and the database across a rollback: a migration keeps a copy of the database as it
//! was, and a binary that finds a newer schema opens that copy (keeping the newer file),
//! or refuses as before when there is none.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgenode_tests::checks::{expect_status, id_of};
use edgenode_tests::fixtures::sha256_hex;
use edgenode_tests::node::edgenode_binary;
use edgenode_tests::{Client, Node, NodeOptions, Transport, ANONYMOUS};
use serde_json::Value;

/// What one run of `edgenode ARGS` gave.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

fn edgenode(args: &[&OsStr]) -> Ran {
    let output = Command::new(edgenode_binary()).args(args).output().expect("running edgenode");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// As `update`, with the node's config file (`[update] rauc_command` matters when the
/// CLI reads the state itself).
fn update_with_config(node: &Node, args: &[&str]) -> Ran {
    let config = node.data_dir().with_extension("test-config.toml");
    let mut all: Vec<&OsStr> = vec!["update".as_ref()];
    all.extend(args.iter().map(|arg| OsStr::new(*arg)));
    let text = format!("data_dir = {:?}\n[update]\n{NO_RAUC}", node.data_dir().display().to_string());
    std::fs::write(&config, text).unwrap();
    all.extend(["--config".as_ref(), config.as_os_str()]);
    let ran = edgenode(&all);
    let _ = std::fs::remove_file(&config);
    ran
}

fn update(data_dir: &Path, args: &[&str]) -> Ran {
    let mut all: Vec<&OsStr> = vec!["update".as_ref()];
    all.extend(args.iter().map(|arg| OsStr::new(*arg)));
    all.extend(["--data-dir".as_ref(), data_dir.as_os_str()]);
    edgenode(&all)
}

/// `[update]` for a system without RAUC, whatever this machine has installed.
const NO_RAUC: &str = "rauc_command = \"/nonexistent/rauc\"\n";

/// An update server that refuses connections: a port bound and closed again.
fn refused_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("https://127.0.0.1:{port}/edgenode/manifest.json")
}

#[test]
fn without_rauc_updates_say_so_everywhere_and_nothing_is_installed() {
    let url = refused_url();
    let mut node = Node::start(NodeOptions::with_config(&format!("[update]\nurl = \"{url}\"\n{NO_RAUC}")));
    let client = Client::new(&node, Transport::Http2);
    let version = expect_status("GET /api/v1/node", client.get_json("/api/v1/node", None), 200)["version"].clone();

    // Anyone: no update part. The admin: running version, no slots, not available.
    let anyone = expect_status("GET /api/v1/node", client.get_json("/api/v1/node", None), 200);
    assert!(anyone.get("update").is_none(), "the update part is for admins: {anyone}");
    let admin = client.claim_admin(&node, "ada");
    let about = expect_status("GET /api/v1/node as admin", client.get_json("/api/v1/node", Some(&admin.token)), 200);
    let update_part = &about["update"];
    assert_eq!(update_part["available"], Value::Bool(false), "{about}");
    assert_eq!(update_part["running_version"], version, "{about}");
    assert_eq!(update_part["state"], "unavailable", "{about}");
    assert_eq!(update_part["url"], Value::String(url.clone()), "{about}");
    assert_eq!(update_part["slots"], serde_json::json!([]), "{about}");
    assert!(update_part["message"].as_str().unwrap_or_default().contains("not available on this system"), "{about}");

    // `update status` through the node.
    let status = update(node.data_dir(), &["status", "--json"]);
    assert_eq!(status.code, Some(0), "update status: {}\n{}", status.stdout, status.stderr);
    let shown = status.json();
    assert_eq!(shown["from_node"], Value::Bool(true), "{shown}");
    assert_eq!(shown["available"], Value::Bool(false), "{shown}");
    assert_eq!(shown["running_version"], version, "{shown}");
    let table = update(node.data_dir(), &["status"]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(table.stdout.contains("updates not available on this system"), "{}", table.stdout);

    // `install`: refused, nothing done (exit 3); a relative path is made absolute.
    let install = update(node.data_dir(), &["install", "no-such-bundle.raucb"]);
    assert_eq!(install.code, Some(3), "install without rauc: {}\n{}", install.stdout, install.stderr);
    assert!(install.stderr.contains("not available"), "{}", install.stderr);

    // `check`: the node asks its server now; the server refuses: exit 1, recorded.
    let check = update(node.data_dir(), &["check"]);
    assert_eq!(check.code, Some(1), "check against a refusing server: {}\n{}", check.stdout, check.stderr);
    assert!(check.stderr.contains("cannot connect"), "{}", check.stderr);
    let shown = update(node.data_dir(), &["status", "--json"]).json();
    assert_eq!(shown["last_check"]["outcome"], "failed", "{shown}");
    assert!(shown["last_check"]["error"].as_str().unwrap_or_default().contains("cannot connect"), "{shown}");
    assert!(shown["next_check_at_unix"].as_u64().is_some(), "a retry is scheduled: {shown}");
    assert!(shown["last_install"].is_null(), "nothing was installed: {shown}");

    // The metrics say the same.
    let metrics = client.request("GET", "/metrics", Some(&admin.token), &[], Vec::new());
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.contains("edgenode_update_state{state=\"unavailable\"} 1"), "{text}");
    assert!(text.contains("edgenode_update_last_check_success 0"), "{text}");
    assert!(text.contains("edgenode_update_check_failures 1"), "{text}");

    // With the node stopped, `status` reads the state file itself.
    node.terminate();
    let status = update_with_config(&node, &["status", "--json"]);
    assert_eq!(status.code, Some(0), "update status with the node stopped: {}", status.stderr);
    let shown = status.json();
    assert_eq!(shown["from_node"], Value::Bool(false), "{shown}");
    assert_eq!(shown["available"], Value::Bool(false), "{shown}");
    assert_eq!(shown["last_check"]["outcome"], "failed", "read from update-state.json: {shown}");
    let check = update(node.data_dir(), &["check"]);
    assert_eq!(check.code, Some(2), "check with no node: {}", check.stderr);
}

/// A stand-in for RAUC: answers `status` and `info` as RAUC does (JSON), succeeds at
/// `install`, and records every call; the reboot command records that it ran.
fn fake_rauc(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let rauc = dir.join("rauc");
    let status = r#"{"compatible":"edgenode-test","booted":"A","boot_primary":"rootfs.0","slots":[{"rootfs.0":{"class":"rootfs","device":"/dev/vda2","bootname":"A","state":"booted","boot_status":"good","slot_status":{"bundle":{"version":"0.0.1"},"status":"ok"}}},{"rootfs.1":{"class":"rootfs","device":"/dev/vda3","bootname":"B","state":"inactive","boot_status":"good"}}]}"#;
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{calls}'\ncase \"$1\" in\n  status) echo '{status}' ;;\n  info) echo '{{\"version\":\"9.9.9\"}}' ;;\n  install) exit 0 ;;\n  *) exit 1 ;;\nesac\n",
        calls = dir.join("rauc-calls").display()
    );
    std::fs::write(&rauc, script).unwrap();
    let reboot = dir.join("reboot");
    std::fs::write(&reboot, format!("#!/bin/sh\ntouch '{}'\n", dir.join("rebooted").display())).unwrap();
    for program in [&rauc, &reboot] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (rauc, reboot)
}

#[test]
fn a_bundle_installed_by_hand_goes_to_rauc_and_the_box_reboots_inside_the_window() {
    let tools = std::env::temp_dir().join(format!("edgenode-update-tools-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tools);
    let (rauc, reboot) = fake_rauc(&tools);
    let bundle = tools.join("edgenode-9.9.9.raucb");
    std::fs::write(&bundle, b"not really a bundle: the fake rauc takes it").unwrap();
    // An empty window: any time is inside it.
    let config = format!(
        "[update]\nrauc_command = \"{}\"\nreboot_command = \"{}\"\nmaintenance_window = \"\"\n",
        rauc.display(),
        reboot.display()
    );
    let node = Node::start(NodeOptions::with_config(&config));

    let status = update(node.data_dir(), &["status", "--json"]).json();
    assert_eq!(status["available"], Value::Bool(true), "{status}");
    assert_eq!(status["state"], "idle", "{status}");
    assert_eq!(status["booted_slot"], "A", "from rauc status: {status}");
    assert_eq!(status["slots"][0]["version"], "0.0.1", "{status}");
    assert_eq!(status["slots"][1]["bootname"], "B", "{status}");

    let install = update(node.data_dir(), &["install", bundle.to_str().unwrap(), "--json"]);
    assert_eq!(install.code, Some(0), "install: {}\n{}", install.stdout, install.stderr);
    let installed = &install.json()["installed"];
    assert_eq!(installed["version"], "9.9.9", "the version rauc info gave: {installed}");
    assert_eq!(installed["outcome"], "awaiting_reboot", "{installed}");
    assert_eq!(installed["sha256"].as_str().unwrap(), sha256_hex(&std::fs::read(&bundle).unwrap()));
    let calls = std::fs::read_to_string(tools.join("rauc-calls")).unwrap();
    assert!(calls.lines().any(|line| line == format!("install {}", bundle.display())), "rauc install BUNDLE: {calls}");
    assert!(tools.join("rebooted").exists(), "inside the window the node reboots into it at once");

    let status = update(node.data_dir(), &["status", "--json"]);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let status = status.json();
    assert_eq!(status["state"], "awaiting_reboot", "{status}");
    let overview = edgenode(&["status".as_ref(), "--data-dir".as_ref(), node.data_dir().as_os_str()]);
    assert_eq!(overview.code, Some(0), "{}", overview.stderr);
    assert!(
        overview.stdout.contains("awaiting_reboot, booted slot A; A booted/good 0.0.1, B inactive/good -"),
        "`edgenode status` shows the slots: {}",
        overview.stdout
    );
    assert_eq!(status["last_install"]["version"], "9.9.9", "{status}");

    // A bundle that is not there: exit 1, and the installed update still waits.
    let missing = update(node.data_dir(), &["install", "/nonexistent/bundle.raucb"]);
    assert_eq!(missing.code, Some(1), "{}\n{}", missing.stdout, missing.stderr);
    assert!(missing.stderr.contains("no such file"), "{}", missing.stderr);
    let status = update(node.data_dir(), &["status", "--json"]).json();
    assert_eq!(status["last_install"]["outcome"], "awaiting_reboot", "{status}");

    // Another stand-in RAUC, with the original answering what this one leaves to it.
    std::fs::rename(&rauc, tools.join("rauc-ok")).unwrap();
    let stand_in = |script: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&rauc, format!("#!/bin/sh\n{script}\nexec '{}' \"$@\"\n", tools.join("rauc-ok").display()))
            .unwrap();
        std::fs::set_permissions(&rauc, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let installs = || std::fs::read_to_string(tools.join("rauc-calls")).unwrap().matches("install").count();

    // A bundle whose signature RAUC refuses (`rauc info`): exit 1 with RAUC's reason,
    // `rauc install` never runs, and the installed update still waits.
    stand_in("[ \"$1\" = info ] && { echo 'signature verification failed' >&2; exit 1; }");
    let installs_before = installs();
    let refused = update(node.data_dir(), &["install", bundle.to_str().unwrap()]);
    assert_eq!(refused.code, Some(1), "{}\n{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("signature verification failed"), "RAUC's reason is shown: {}", refused.stderr);
    assert!(refused.stderr.contains("nothing written"), "{}", refused.stderr);
    assert_eq!(installs(), installs_before, "rauc install ran");
    let status = update(node.data_dir(), &["status", "--json"]).json();
    assert_eq!(status["last_install"]["outcome"], "awaiting_reboot", "{status}");

    // `rauc install` itself fails: exit 1, recorded as failed, and `status` exits 1.
    stand_in("[ \"$1\" = install ] && { echo 'failed to write slot rootfs.1' >&2; exit 1; }");
    let failed = update(node.data_dir(), &["install", bundle.to_str().unwrap()]);
    assert_eq!(failed.code, Some(1), "{}\n{}", failed.stdout, failed.stderr);
    assert!(failed.stderr.contains("failed to write slot"), "RAUC's reason is shown: {}", failed.stderr);
    let status = update(node.data_dir(), &["status", "--json"]);
    assert_eq!(status.code, Some(1), "the last install failed: {}", status.stdout);
    let status = status.json();
    assert_eq!(status["last_install"]["outcome"], "failed", "{status}");
    assert_eq!(status["state"], "idle", "{status}");
    drop(node);
    let _ = std::fs::remove_dir_all(&tools);
}

#[test]
fn check_without_an_update_url_says_updates_are_not_set_up() {
    let node = Node::start(NodeOptions::default());
    let check = update(node.data_dir(), &["check"]);
    assert_eq!(check.code, Some(3), "{}\n{}", check.stdout, check.stderr);
    assert!(check.stderr.contains("[update] url"), "{}", check.stderr);
    let client = Client::new(&node, Transport::Http1);
    let (status, _) = client.post_json("/api/v1/node/update/check", None, &serde_json::json!({}));
    assert_eq!(status, 401, "anonymous callers may not make the node poll");
}

// ---- The database across a rollback ---------------------------------------------

const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");

/// The schema version recorded in a database file.
fn schema_of(database: &Path) -> u64 {
    let db = redb::Database::open(database).unwrap_or_else(|error| panic!("opening {}: {error}", database.display()));
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let value = meta.get("schema_version").unwrap().expect("a schema version");
    u64::from_le_bytes(value.value().try_into().unwrap())
}

/// What a newer edgenode's migration leaves: the same file with a higher schema.
fn set_schema(database: &Path, schema: u64) {
    let db = redb::Database::open(database).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META).unwrap().insert("schema_version", schema.to_le_bytes().as_slice()).unwrap();
    txn.commit().unwrap();
}

fn copy_of_store_fixture(name: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store-v2/data");
    let target = std::env::temp_dir().join(format!("edgenode-update-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&target);
    copy_dir(&from, &target);
    target
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Starts `edgenode serve` on `data_dir` expecting it to fail at once; its stderr.
fn serve_expecting_failure(data_dir: &Path) -> String {
    let mut child = Command::new(edgenode_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-mdns", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting edgenode");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "the node must refuse to start");
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return stderr;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node did not refuse a newer database within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rollback_after_a_migration_opens_the_copy_taken_before_it() {
    let dir = copy_of_store_fixture("rollback");
    let database = dir.join("edgenode.redb");
    let fixture_database = std::fs::read(&database).unwrap();
    assert_eq!(schema_of(&database), 2, "the fixture is at schema 2");

    // This version migrates 2 → current, keeping the schema-2 file as it was.
    let mut node = Node::start(NodeOptions { data_dir: Some(dir.clone()), ..NodeOptions::default() });
    let snapshot = dir.join("pre-migration/schema-2.redb");
    let kept = std::fs::read(&snapshot).expect("a copy of the database before the migration");
    assert_eq!(sha256_hex(&kept), sha256_hex(&fixture_database), "the copy is the database as it was");
    let current_schema = schema_of_running(&mut node, &database);
    let mut client = Client::new(&node, Transport::Http2);
    let bob = client.sign_in("bob");
    let before_update = id_of(&client.create_post(&bob, "Written before the update", &[], "public"));

    // A newer version (schema current + 1) takes its copy, migrates, and takes a write.
    node.terminate();
    std::fs::copy(&database, dir.join(format!("pre-migration/schema-{current_schema}.redb"))).unwrap();
    node.restart();
    client.reconnect_to(&node);
    let bob = client.sign_in("bob");
    let after_update = id_of(&client.create_post(&bob, "Written by the newer version", &[], "public"));
    node.terminate();
    set_schema(&database, current_schema + 1);

    // The box goes back to this version: it opens the copy, keeps the newer file.
    node.restart();
    client.reconnect_to(&node);
    expect_status("the post from before the update", client.get_post(ANONYMOUS, &before_update), 200);
    let (status, _) = client.get_post(ANONYMOUS, &after_update);
    assert_eq!(status, 404, "a write after the migration is in the kept file (siblings would bring it back)");
    let stderr = node.stderr_text();
    assert!(stderr.contains("opening the copy taken before that migration"), "the node warns: {stderr}");
    assert!(stderr.contains("WARN"), "at warn level: {stderr}");
    let kept_newer: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|name| name.starts_with(&format!("edgenode.redb.schema-{}-", current_schema + 1)))
        })
        .collect();
    assert_eq!(kept_newer.len(), 1, "the newer database is kept: {kept_newer:?}");
    assert_eq!(schema_of(&kept_newer[0]), current_schema + 1);

    // Without a copy, a newer database is refused as before, and left as it is.
    node.terminate();
    set_schema(&database, current_schema + 1);
    let stderr = serve_expecting_failure(&dir);
    assert!(stderr.contains("run a newer edgenode"), "{stderr}");
    assert_eq!(schema_of(&database), current_schema + 1, "the refused database is untouched");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The schema the running binary wrote (read with the node stopped, then restarted).
fn schema_of_running(node: &mut Node, database: &Path) -> u64 {
    node.terminate();
    let schema = schema_of(database);
    node.restart();
    schema
}

// ---- The poller against an update server ----------------------------------------

/// A pinned HTTPS update server on loopback serving files from a map the test edits.
struct UpdateServer {
    port: u16,
    pin: String,
    files: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UpdateServer {
    fn start() -> UpdateServer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let certificate =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().self_signed(&key).unwrap();
        let pin = edgenode::identity::spki_pin_of_certificate(certificate.der()).unwrap();
        let mut tls =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![certificate.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let files = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = files.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
                let serve = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else { continue };
                        let (acceptor, files) = (acceptor.clone(), served.clone());
                        tokio::spawn(async move {
                            let Ok(stream) = acceptor.accept(tcp).await else { return };
                            let service =
                                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                                    let body = files.lock().unwrap().get(request.uri().path()).cloned();
                                    async move {
                                        let response = match body {
                                            Some(body) => {
                                                http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)))
                                            }
                                            None => {
                                                let mut missing =
                                                    http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                                                *missing.status_mut() = http::StatusCode::NOT_FOUND;
                                                missing
                                            }
                                        };
                                        Ok::<_, std::convert::Infallible>(response)
                                    }
                                });
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        UpdateServer { port, pin, files, stop: Some(stop), thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_owned(), body);
    }

    /// A manifest for `bundle` at `rollout_percent`, with `sha256` (the bundle's own unless given).
    fn publish(&self, version: &str, bundle: &[u8], rollout_percent: u8, sha256: Option<&str>) {
        let manifest = serde_json::json!({
            "format": 1,
            "version": version,
            "bundle_url": format!("edgenode-{version}.raucb"),
            "sha256": sha256.map_or_else(|| sha256_hex(bundle), str::to_owned),
            "size_bytes": bundle.len(),
            "rollout_percent": rollout_percent,
            "published_at": "2026-12-05T18:00:00Z",
        });
        self.put(&format!("/edgenode/edgenode-{version}.raucb"), bundle.to_vec());
        self.put("/edgenode/manifest.json", serde_json::to_vec(&manifest).unwrap());
    }
}

impl Drop for UpdateServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `update status --json` until `done` holds, at most 30 s.
fn wait_for_status(data_dir: &Path, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = update(data_dir, &["status", "--json"]).json();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} within 30 s: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_poller_installs_a_published_bundle_only_when_it_is_whole_and_for_this_box() {
    let tools = std::env::temp_dir().join(format!("edgenode-update-poller-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tools);
    let (rauc, reboot) = fake_rauc(&tools);
    let server = UpdateServer::start();
    let bundle = b"bundle 9.9.9: the fake rauc takes anything".to_vec();
    let config = format!(
        "[update]\nurl = \"{}\"\npin = \"{}\"\nrauc_command = \"{}\"\nreboot_command = \"{}\"\nmaintenance_window = \"\"\n",
        server.url("/edgenode/manifest.json"),
        server.pin,
        rauc.display(),
        reboot.display()
    );
    let node = Node::start(NodeOptions::with_config(&config));

    // Published for no box yet.
    server.publish("9.9.9", &bundle, 0, None);
    let check = update(node.data_dir(), &["check", "--json"]);
    assert_eq!(check.code, Some(0), "{}\n{}", check.stdout, check.stderr);
    assert_eq!(check.json()["outcome"], "not_in_rollout", "{}", check.stdout);

    // For every box, but the bundle is not the one the manifest names: refused.
    server.publish("9.9.9", &bundle, 100, Some(&"0".repeat(64)));
    assert_eq!(update(node.data_dir(), &["check", "--json"]).json()["outcome"], "install");
    let status = wait_for_status(node.data_dir(), "the tampered download refused", |status| {
        status["last_install"]["outcome"] == "failed"
    });
    assert!(status["last_install"]["message"].as_str().unwrap().contains("SHA-256"), "{status}");
    assert!(
        !std::fs::read_to_string(tools.join("rauc-calls")).unwrap_or_default().contains("install"),
        "rauc never saw it"
    );

    // The right bundle: downloaded, checked, installed, rebooted into (the window is open).
    server.publish("9.9.9", &bundle, 100, None);
    assert_eq!(update(node.data_dir(), &["check", "--json"]).json()["outcome"], "install");
    let status = wait_for_status(node.data_dir(), "the install", |status| {
        status["last_install"]["outcome"] == "awaiting_reboot"
    });
    assert_eq!(status["last_install"]["version"], "9.9.9", "{status}");
    assert_eq!(status["last_install"]["sha256"], Value::String(sha256_hex(&bundle)), "{status}");
    let calls = std::fs::read_to_string(tools.join("rauc-calls")).unwrap();
    let downloaded = node.data_dir().join("update/bundle.raucb");
    assert!(calls.contains(&format!("install {}", downloaded.display())), "{calls}");
    // The state says `awaiting_reboot` before the node removes the download and asks
    // for the reboot: both follow within moments.
    let asked_by = Instant::now() + Duration::from_secs(10);
    while (downloaded.exists() || !tools.join("rebooted").exists()) && Instant::now() < asked_by {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!downloaded.exists(), "the download is removed once RAUC has it");
    assert!(tools.join("rebooted").exists(), "rebooted inside the window");
    // Checked again: it waits for its reboot, nothing is downloaded twice.
    assert_eq!(update(node.data_dir(), &["check", "--json"]).json()["outcome"], "awaiting_reboot");
    drop(node);
    drop(server);
    let _ = std::fs::remove_dir_all(&tools);
}
