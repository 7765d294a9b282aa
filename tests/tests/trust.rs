//! Trust as a phone gets it: the node's own CA vouches for the node's names (and
//! only those), the onboarding listener hands it out over plain HTTP with its
//! fingerprint and sends everything else to HTTPS, siblings' CAs come in the same
//! bundle, and an operator's own certificate is presented for its name and reloaded
//! when its files change. The browser's side (Chromium trusting the CA through NSS,
//! refusing a name outside the constraints) is tests/web/trust.test.mjs.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgenode_tests::client::{Client, Transport};
use edgenode_tests::cluster::preloaded_siblings;
use edgenode_tests::node::{Node, NodeOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One plain HTTP/1.1 request: (status, headers + body as text, body bytes).
fn plain_get(address: SocketAddr, host: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|window| window == b"\r\n\r\n").expect("a complete head") + 4;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, answer[split..].to_vec())
}

fn ca_der(node: &Node) -> Vec<u8> {
    let pem = std::fs::read(node.data_dir().join("ca.crt")).expect("ca.crt in the data dir");
    CertificateDer::from_pem_slice(&pem).unwrap().to_vec()
}

/// A TLS handshake to the node trusting only `roots` for `server_name`; the chain the
/// node presented, or the error.
fn handshake(node: &Node, roots: &[Vec<u8>], server_name: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(CertificateDer::from(root.clone())).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(node.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).map_err(|error| error.to_string())?;
    }
    Ok(connection.peer_certificates().unwrap_or_default().iter().map(|der| der.clone().into_owned()).collect())
}

fn fingerprint(der: &[u8]) -> String {
    let hex: Vec<String> = Sha256::digest(der).iter().map(|byte| format!("{byte:02X}")).collect();
    format!("SHA-256 {}", hex.join(":"))
}

#[test]
fn the_nodes_ca_vouches_for_its_names_and_onboarding_hands_it_out() {
    let onboarding: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node = Node::start(NodeOptions {
        name: "box-0001".to_owned(),
        ..NodeOptions::with_config(&format!("onboarding_listen = \"{onboarding}\"\n"))
    });
    let ca = ca_der(&node);
    let stranger = Node::start(NodeOptions::default());

    // HTTPS verifies against the node's CA alone, by every name a phone may use, and
    // the leaf still carries the node key (the pin of CLI and siblings).
    for name in ["box-0001.local", &format!("{}.local", node.node_id()), "localhost", "127.0.0.1"] {
        let chain = handshake(&node, std::slice::from_ref(&ca), name).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(chain.last().map(|der| der.as_ref()), Some(ca.as_slice()), "the chain ends with the CA");
        assert_eq!(edgenode::identity::spki_pin_of_certificate(&chain[0]).as_deref(), Some(node.pin()));
    }
    // Another node's CA does not vouch for this node, and this CA not for other names.
    assert!(handshake(&node, &[ca_der(&stranger)], "localhost").is_err());
    assert!(handshake(&node, std::slice::from_ref(&ca), "bank.example").is_err());

    // The page, with the fingerprint `edgenode status` and the label show.
    let (status, head, body) = plain_get(onboarding, "box-0001.local", "/?claim=ABCD-EFGH-JKLM");
    assert_eq!(status, 200, "{head}");
    // The fingerprint may break only between bytes (`<wbr>` after each colon).
    let page = String::from_utf8(body).unwrap().replace("<wbr>", "");
    assert!(page.contains(&fingerprint(&ca)), "the page shows the CA's fingerprint");
    let https_port = node.addr().port();
    assert!(
        page.contains(&format!("href=\"https://box-0001.local:{https_port}/#/claim?code=ABCD-EFGH-JKLM\"")),
        "continue leads to the claim screen with the code"
    );
    let status_output = std::process::Command::new(edgenode_tests::node::edgenode_binary())
        .args(["status", "--json", "--data-dir"])
        .arg(node.data_dir())
        .output()
        .unwrap();
    let status_json: serde_json::Value = serde_json::from_slice(&status_output.stdout).unwrap();
    assert_eq!(status_json["ca_fingerprint"], fingerprint(&ca));

    // The downloads: DER, PEM, iOS profile.
    let (status, head, der) = plain_get(onboarding, "box-0001.local", "/ca.crt");
    assert_eq!((status, der.clone()), (200, ca.clone()), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/x-x509-ca-cert"));
    let (_, _, pem) = plain_get(onboarding, "box-0001.local", "/ca.pem");
    assert_eq!(CertificateDer::from_pem_slice(&pem).unwrap().as_ref(), ca.as_slice());
    let (status, head, profile) = plain_get(onboarding, "box-0001.local", "/ca.mobileconfig");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("application/x-apple-aspen-config"));
    let profile = String::from_utf8(profile).unwrap();
    assert!(profile.contains("com.apple.security.root"));
    use base64::Engine as _;
    assert!(profile.contains(&base64::engine::general_purpose::STANDARD.encode(&ca)));

    // Everything else goes to HTTPS; nothing of the API is served in the clear.
    let (status, head, _) = plain_get(onboarding, "box-0001.local", "/api/v1/node");
    assert_eq!(status, 308, "{head}");
    assert!(head.contains(&format!("location: https://box-0001.local:{https_port}/api/v1/node")), "{head}");
    let (status, _, _) = plain_get(onboarding, "box-0001.local", "/.well-known/acme-challenge/nothing-pending");
    assert_eq!(status, 404);
}

#[test]
fn siblings_hand_out_each_others_ca_in_one_bundle() {
    let [a, b] = preloaded_siblings(["ca-a", "ca-b"]);
    let (ca_a, ca_b) = (ca_der(&a), ca_der(&b));
    let client = Client::new(&a, Transport::Http1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bundle = client.request("GET", "/ca.pem", None, &[], Vec::new()).body;
        let certificates: Vec<Vec<u8>> =
            CertificateDer::pem_slice_iter(&bundle).map(|der| der.unwrap().to_vec()).collect();
        if certificates == vec![ca_a.clone(), ca_b.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "a's bundle never held b's CA: {} certificates", certificates.len());
        std::thread::sleep(Duration::from_millis(500));
    }

    // The same card tells where b serves: a user's profile on a lists b with the
    // address the web app offers when a is down.
    let ada = client.claim_admin(&a, "ada");
    let (status, profile) = client.get_json("/api/v1/users/ada", Some(&ada.token));
    assert_eq!(status, 200, "{profile}");
    let nodes = profile["nodes"].as_array().expect("nodes").clone();
    let on_b = nodes.iter().find(|node| node["id"] == b.node_id()).unwrap_or_else(|| panic!("b holds ada: {nodes:?}"));
    let expected = [format!("127.0.0.1:{}", b.addr().port()), format!("ca-b.local:{}", b.addr().port())];
    assert_eq!(on_b["name"], "ca-b", "{on_b}");
    assert_eq!(on_b["addresses"], serde_json::json!(expected), "{on_b}");
}

#[test]
fn the_operators_own_certificate_is_presented_for_its_name_and_reloaded() {
    let dir = std::env::temp_dir().join(format!("edgenode-own-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("own.crt"), dir.join("own.key"));
    let make = |serial: u8| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["photos.example.org".to_owned()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[serial]));
        let certificate = params.self_signed(&key).unwrap();
        (certificate.der().to_vec(), certificate.pem(), key.serialize_pem())
    };
    let (first_der, first_pem, first_key) = make(1);
    std::fs::write(&cert_file, first_pem).unwrap();
    std::fs::write(&key_file, first_key).unwrap();
    let node = Node::start(NodeOptions::with_config(&format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    )));
    let chain =
        handshake(&node, std::slice::from_ref(&first_der), "photos.example.org").expect("the operator's certificate");
    assert_eq!(chain[0].as_ref(), first_der.as_slice());
    // Other names still get the node's own CA's certificate.
    assert!(handshake(&node, &[ca_der(&node)], "localhost").is_ok());

    // Renewed by the operator's tooling: key first, then certificate (briefly a pair
    // that does not match, which must not be taken).
    let (second_der, second_pem, second_key) = make(2);
    std::fs::write(&key_file, second_key).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&cert_file, second_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match handshake(&node, std::slice::from_ref(&second_der), "photos.example.org") {
            Ok(chain) if chain[0].as_ref() == second_der.as_slice() => break,
            other => assert!(Instant::now() < deadline, "the new certificate was never presented: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
