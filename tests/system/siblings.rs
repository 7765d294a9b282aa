//! Nodes of the system tier paired as siblings in the lab (`lab.rs`), and the
//! requests the sibling tests make of them: started alone to learn their id and pin,
//! claimed, then restarted with each other in their `[peers]` config. Included with
//! `#[path]` (after `mod lab;`) by `tests/tests/system_replication.rs`,
//! `tests/tests/system_replace_box.rs` and `tests/tests/system_neighbourhood.rs`.

#![allow(dead_code)] // each test uses a part of it

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::lab::{Endpoint, Host, LabNode};

/// Every node's sibling endpoint (UDP) is its link address with this port.
pub const PEER_PORT: u16 = 8444;

/// A node as another node's config names it.
pub struct Sibling {
    pub node_id: String,
    pub address: SocketAddr,
    pub pin: String,
}

impl Sibling {
    /// How others name `node` (running, with its `[peers]` listen on `PEER_PORT`).
    pub fn of(node: &LabNode) -> Sibling {
        Sibling { node_id: node.ready.node_id.clone(), address: peer_address(node.host()), pin: node.ready.pin.clone() }
    }
}

/// Starts a node per host, alone, to learn its id and pin, claims each with its own
/// admin (`admin_handle`), stops them, and starts them again on the same data dirs
/// with all the others as siblings. Returns the nodes and each one's config; does not
/// wait for them to connect.
pub fn start_paired(hosts: &[Host], names: &[&str], replicas: usize) -> (Vec<LabNode>, Vec<String>) {
    let mut nodes: Vec<LabNode> = hosts
        .iter()
        .zip(names)
        .map(|(host, name)| LabNode::start_without_mdns(host, name, &peers_config(host, replicas, &[])))
        .collect();
    let mut siblings = Vec::new();
    for node in &nodes {
        assert_eq!(
            node.ready.peer,
            Some(peer_address(node.host())),
            "node {}: the ready line names the sibling endpoint (`peer=`) of its [peers] listen; is sibling \
             replication built in? (cargo build -p edgenode) ready line: {:?}",
            node.name,
            node.ready
        );
        // Claimed while alone: each node has its own admin, with a handle no other node uses.
        node.claim_as(&admin_handle(&node.name));
        siblings.push(Sibling::of(node));
    }
    for node in &mut nodes {
        let status = node.terminate();
        assert!(status.success(), "{} exits cleanly on SIGTERM: {status}", node.name);
    }
    let mut configs = Vec::new();
    for (index, node) in nodes.iter_mut().enumerate() {
        let others: Vec<&Sibling> =
            siblings.iter().enumerate().filter(|(other, _)| *other != index).map(|(_, sibling)| sibling).collect();
        let config = peers_config(&hosts[index], replicas, &others);
        node.restart(&config);
        assert_eq!(
            (&node.ready.node_id, &node.ready.pin),
            (&siblings[index].node_id, &siblings[index].pin),
            "{}: node id and pin persist across a restart on the same data dir",
            node.name
        );
        configs.push(config);
    }
    (nodes, configs)
}

/// The `[peers]` section: the sibling endpoint on the host's link address, and the siblings.
pub fn peers_config(host: &Host, replicas: usize, siblings: &[&Sibling]) -> String {
    let mut config = format!("[peers]\nlisten = \"{}\"\nreplicas = {replicas}\n", peer_address(host));
    for sibling in siblings {
        config.push_str(&format!(
            "\n[[peers.siblings]]\nnode_id = \"{}\"\naddress = \"{}\"\npin = \"{}\"\n",
            sibling.node_id, sibling.address, sibling.pin
        ));
    }
    config
}

pub fn peer_address(host: &Host) -> SocketAddr {
    SocketAddr::new(host.address().into(), PEER_PORT)
}

/// The handle of the admin who claimed the node called `node_name`.
pub fn admin_handle(node_name: &str) -> String {
    format!("admin_{node_name}")
}

/// Signs in; the session token.
pub fn log_in(endpoint: &Endpoint, handle: &str, password: &str) -> String {
    let body = json!({ "handle": handle, "password": password });
    text_field(&expect_status(endpoint, "POST", "/api/v1/sessions", None, Some(&body), 200), "token")
}

/// One request that must answer `expected`; the answer.
pub fn expect_status(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    expected: u16,
) -> Value {
    let (status, answer) = endpoint.https(method, path, token, body);
    assert_eq!(status, expected, "{method} {path}: {answer}");
    answer
}

pub fn text_field(object: &Value, key: &str) -> String {
    object[key].as_str().unwrap_or_else(|| panic!("no string `{key}` in {object}")).to_owned()
}

/// Percent-encodes everything but unreserved characters, for a query value.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
