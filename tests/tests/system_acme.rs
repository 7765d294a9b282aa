//! System tier, ACME (issue 14, "ACME for boxes with a domain"): a real node with
//! `[tls.acme]` gets its certificate for `box.test` from Pebble (Debian's `pebble`, a
//! test ACME server) by HTTP-01 on its onboarding listener, serves it for SNI
//! `box.test` while serving its own CA's certificate for `localhost`, renews it
//! without a gap, and, with Pebble gone and the node restarted, keeps serving the last
//! good certificate from `<data_dir>/acme/` while its new order fails and is retried.
//!
//! Everything runs on 127.0.0.1: `pebble-challtestsrv` answers every DNS name with
//! 127.0.0.1, Pebble validates on the node's onboarding port. Pebble issues
//! 90-second certificates here, so that the node renews one (with a third of its life
//! left) within the test. Prints one line per check with its timing.
//! `#[ignore]`d: run it with `--include-ignored` (needs the `pebble` package:
//! `tests/system/install-deps`).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgenode_tests::{Node, NodeOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

const DOMAIN: &str = "box.test";
/// Pebble's certificates live this long here (its `certificateValidityPeriod`); the
/// node renews with a third of that left.
const CERTIFICATE_LIFETIME_SECONDS: u64 = 90;
const FIRST_CERTIFICATE_WITHIN: Duration = Duration::from_secs(60);
const RENEWAL_WITHIN: Duration = Duration::from_secs(CERTIFICATE_LIFETIME_SECONDS);
const PROCESS_READY_WITHIN: Duration = Duration::from_secs(15);
const FAILURE_LOGGED_WITHIN: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const INSTALL_PEBBLE: &str = "this test needs pebble and pebble-challtestsrv: install the Debian package pebble \
                              (tests/system/install-deps does)";

#[test]
#[ignore = "system tier: needs pebble (Debian package) and free loopback ports"]
fn a_box_with_a_domain_gets_renews_and_keeps_its_acme_certificate() {
    let workdir = WorkDir::new();
    let pebble_https = PebbleHttps::write(&workdir.path);
    let onboarding_port = free_port();
    let challtestsrv = ChallTestSrv::start(&workdir.path);
    let mut pebble = Pebble::start(&workdir.path, &pebble_https, onboarding_port, challtestsrv.dns_port);
    let pebble_root = pebble.fetch_root(&workdir.path, &pebble_https);

    let config_toml = node_config(onboarding_port, &pebble, &pebble_https, &[DOMAIN]);
    let started = Instant::now();
    let mut node = Node::start(NodeOptions { name: "box".to_owned(), ..NodeOptions::with_config(&config_toml) });
    let node_ca = node.data_dir().join("ca.crt");

    // Check 1: the node gets a certificate from Pebble and serves it for box.test.
    let first = wait_for(FIRST_CERTIFICATE_WITHIN, "the node serves a certificate from Pebble for box.test", || {
        served_leaf(node.addr(), DOMAIN, &pebble_root).ok()
    })
    .unwrap_or_else(|| {
        panic!("no Pebble certificate for {DOMAIN} within {FIRST_CERTIFICATE_WITHIN:?}\n{}", logs(&node, &pebble))
    });
    println!("check 1: first certificate served {} ms after the node was ready", started.elapsed().as_millis());
    assert!(
        contains(&first, b"Pebble Intermediate CA"),
        "the leaf served for {DOMAIN} is not issued by Pebble's intermediate"
    );
    curl_ok(node.addr(), DOMAIN, &pebble_root);
    served_leaf(node.addr(), "localhost", &node_ca).expect("the node's own CA certificate for localhost");
    assert!(
        served_leaf(node.addr(), DOMAIN, &node_ca).is_err(),
        "for {DOMAIN} the node must present Pebble's certificate, not its CA's"
    );
    let stored = std::fs::read(node.data_dir().join("acme/cert.pem")).expect("acme/cert.pem is written");
    assert_eq!(first_certificate(&stored), first, "acme/cert.pem holds the certificate served");
    for file in ["account.json", "cert.pem", "key.pem"] {
        assert_private(&node.data_dir().join("acme").join(file));
    }

    // Check 2: it renews the certificate (a third of its life left) without a gap:
    // every handshake meanwhile gets a valid Pebble certificate for box.test.
    let renewal_started = Instant::now();
    let mut handshakes = 0;
    let renewed = loop {
        let leaf = served_leaf(node.addr(), DOMAIN, &pebble_root)
            .unwrap_or_else(|error| panic!("a gap while renewing: {error}\n{}", logs(&node, &pebble)));
        handshakes += 1;
        if leaf != first {
            break leaf;
        }
        assert!(
            renewal_started.elapsed() < RENEWAL_WITHIN,
            "no renewed certificate within {RENEWAL_WITHIN:?}\n{}",
            logs(&node, &pebble)
        );
        std::thread::sleep(POLL_INTERVAL);
    };
    println!(
        "check 2: renewed {} ms after the first certificate; {handshakes} handshakes meanwhile, all with a Pebble certificate",
        renewal_started.elapsed().as_millis()
    );
    curl_ok(node.addr(), DOMAIN, &pebble_root);
    served_leaf(node.addr(), "localhost", &node_ca).expect("the node's own CA certificate for localhost");
    let stored = wait_for(Duration::from_secs(5), "the renewed certificate is stored", || {
        let stored = std::fs::read(node.data_dir().join("acme/cert.pem")).ok()?;
        (first_certificate(&stored) == renewed).then_some(())
    });
    assert!(stored.is_some(), "acme/cert.pem does not hold the renewed certificate");

    // Check 3: Pebble gone, the node restarted with one more domain (so it orders at
    // once, and fails): it serves the stored certificate for box.test, logs why its
    // order failed, and keeps serving its CA's certificate for localhost.
    pebble.stop();
    let config_file = node.data_dir().with_extension("toml");
    std::fs::write(&config_file, node_config(onboarding_port, &pebble, &pebble_https, &[DOMAIN, "www.box.test"]))
        .expect("rewriting the node's config");
    let restarted = Instant::now();
    node.restart();
    let served = served_leaf(node.addr(), DOMAIN, &pebble_root)
        .unwrap_or_else(|error| panic!("after a restart without Pebble: {error}\n{}", node.stderr_text()));
    assert_eq!(served, renewed, "after a restart the node serves the last good certificate from acme/");
    curl_ok(node.addr(), DOMAIN, &pebble_root);
    served_leaf(node.addr(), "localhost", &node_ca).expect("the node's own CA certificate for localhost");
    let logged = wait_for(FAILURE_LOGGED_WITHIN, "the failed order is logged", || {
        node.stderr_text().contains("could not get a certificate").then_some(())
    });
    assert!(logged.is_some(), "the node did not log its failed order\n{}", node.stderr_text());
    assert_eq!(served_leaf(node.addr(), DOMAIN, &pebble_root).ok(), Some(renewed), "still the last good certificate");
    println!(
        "check 3: without Pebble, the restarted node served the stored certificate and logged its failed order within {} ms",
        restarted.elapsed().as_millis()
    );
}

/// The node's TOML: the onboarding listener on Pebble's `httpPort`, `[tls.acme]` on Pebble.
fn node_config(onboarding_port: u16, pebble: &Pebble, pebble_https: &PebbleHttps, domains: &[&str]) -> String {
    let domains: Vec<String> = domains.iter().map(|domain| format!("\"{domain}\"")).collect();
    format!(
        "onboarding_listen = \"127.0.0.1:{onboarding_port}\"\n\n[tls.acme]\n\
         directory_url = \"https://127.0.0.1:{}/dir\"\ndomains = [{}]\ndirectory_ca_file = \"{}\"\n",
        pebble.acme_port,
        domains.join(", "),
        pebble_https.certificate.display()
    )
}

/// Handshakes with the node for `server_name`, verifying against the roots in
/// `roots_pem` (and the dates, with this machine's clock); the leaf's DER.
fn served_leaf(address: SocketAddr, server_name: &str, roots_pem: &Path) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(roots_pem).map_err(|error| error.to_string())? {
        roots.add(certificate.map_err(|error| error.to_string())?).map_err(|error| error.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned()).map_err(|error| error.to_string())?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(|error| error.to_string())?;
    let mut socket = TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(|error| error.to_string())?;
    socket.set_read_timeout(Some(Duration::from_secs(5))).map_err(|error| error.to_string())?;
    socket.set_write_timeout(Some(Duration::from_secs(5))).map_err(|error| error.to_string())?;
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).map_err(|error| format!("TLS for {server_name}: {error}"))?;
    }
    let leaf = connection.peer_certificates().and_then(|chain| chain.first()).ok_or("no certificate presented")?;
    Ok(leaf.to_vec())
}

/// What the issue asks for: `curl --resolve … --cacert <Pebble's root>` succeeds.
fn curl_ok(address: SocketAddr, domain: &str, root: &Path) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "10"])
        .arg("--resolve")
        .arg(format!("{domain}:{}:127.0.0.1", address.port()))
        .arg("--cacert")
        .arg(root)
        .arg(format!("https://{domain}:{}/healthz", address.port()))
        .output()
        .expect("running curl (tests/system/install-deps installs it)");
    assert!(
        output.status.success(),
        "curl https://{domain} with Pebble's root failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn first_certificate(pem: &[u8]) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem).next().expect("a certificate").expect("a PEM certificate").to_vec()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        std::fs::metadata(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())).permissions().mode();
    assert_eq!(mode & 0o077, 0, "{} is readable by others (mode {mode:o})", path.display());
}

/// Calls `probe` until it returns something or `within` has passed.
fn wait_for<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() > deadline {
            eprintln!("gave up waiting: {what}");
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn logs(node: &Node, pebble: &Pebble) -> String {
    format!("---- node ----\n{}\n---- pebble ----\n{}", node.stderr_text(), pebble.process.log())
}

/// A loopback port free for TCP and UDP now (pebble-challtestsrv's DNS uses both).
fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a loopback port");
        let port = tcp.local_addr().expect("local address").port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both TCP and UDP");
}

fn wait_until_listening(port: u16, process: &Spawned) {
    let ready = wait_for(PROCESS_READY_WITHIN, "a port to listen", || {
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_millis(200)).ok()
    });
    assert!(
        ready.is_some(),
        "{} did not listen on {port} within {PROCESS_READY_WITHIN:?}\n{}",
        process.name,
        process.log()
    );
}

/// A temporary directory for the test's files, removed unless the test fails.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new() -> WorkDir {
        let path = std::env::temp_dir().join(format!("edgenode-acme-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating the work dir");
        WorkDir { path }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("work dir kept at {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A process this test started, killed (by its pid) and reaped when dropped.
struct Spawned {
    name: &'static str,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Spawned {
    fn start(name: &'static str, command: &mut Command, workdir: &Path) -> Spawned {
        let log_path = workdir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("creating a log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| match error.kind() {
                ErrorKind::NotFound => panic!("{name} is not installed: {INSTALL_PEBBLE}"),
                _ => panic!("starting {name}: {error}"),
            });
        Spawned { name, child: Some(child), log_path }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` signals this pid only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pebble-challtestsrv` as a DNS server that answers every name with 127.0.0.1.
struct ChallTestSrv {
    _process: Spawned,
    dns_port: u16,
}

impl ChallTestSrv {
    fn start(workdir: &Path) -> ChallTestSrv {
        let dns_port = free_port();
        let management_port = free_port();
        let process = Spawned::start(
            "pebble-challtestsrv",
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{management_port}")]),
            workdir,
        );
        wait_until_listening(dns_port, &process);
        ChallTestSrv { _process: process, dns_port }
    }
}

/// The certificate and key of Pebble's own HTTPS (its directory and management API),
/// which the node is told to trust by `directory_ca_file`.
struct PebbleHttps {
    certificate: PathBuf,
    key: PathBuf,
}

impl PebbleHttps {
    fn write(workdir: &Path) -> PebbleHttps {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key for Pebble");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate parameters for Pebble");
        let certificate = params.self_signed(&key).expect("Pebble's HTTPS certificate");
        let https =
            PebbleHttps { certificate: workdir.join("pebble-https.pem"), key: workdir.join("pebble-https.key") };
        std::fs::write(&https.certificate, certificate.pem()).expect("writing Pebble's certificate");
        std::fs::write(&https.key, key.serialize_pem()).expect("writing Pebble's key");
        https
    }
}

/// Pebble, with its config written by the test, its DNS through pebble-challtestsrv.
struct Pebble {
    process: Spawned,
    acme_port: u16,
    management_port: u16,
}

impl Pebble {
    fn start(workdir: &Path, https: &PebbleHttps, onboarding_port: u16, dns_port: u16) -> Pebble {
        let acme_port = free_port();
        let management_port = free_port();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": https.certificate,
                "privateKey": https.key,
                "httpPort": onboarding_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": CERTIFICATE_LIFETIME_SECONDS,
            }
        });
        let config_path = workdir.join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).expect("writing Pebble's config");
        let process = Spawned::start(
            "pebble",
            Command::new("pebble")
                .arg("-config")
                .arg(&config_path)
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                // No random sleeps before validating, no rejected nonces, fresh
                // authorizations for every order (so each is validated again).
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0"),
            workdir,
        );
        wait_until_listening(acme_port, &process);
        wait_until_listening(management_port, &process);
        Pebble { process, acme_port, management_port }
    }

    /// Pebble's root (made at its start), from its management interface.
    fn fetch_root(&self, workdir: &Path, https: &PebbleHttps) -> PathBuf {
        let path = workdir.join("pebble-root.pem");
        let status = Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--max-time", "10", "--cacert"])
            .arg(&https.certificate)
            .arg("--output")
            .arg(&path)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management_port))
            .status()
            .expect("running curl (tests/system/install-deps installs it)");
        assert!(status.success(), "fetching Pebble's root failed\n{}", self.process.log());
        path
    }

    fn stop(&mut self) {
        self.process.stop();
    }
}
