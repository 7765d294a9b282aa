//! Nodes on loopback that know each other from their config files, as an ISP would
//! provision them (no pairing): each starts once alone, on a fixed peer port, to make
//! its key; then all restart with every other node's address and pin listed as
//! siblings (`peers.siblings`) or neighbours (`peers.neighbours`). Node ids follow
//! from pins. `converge` waits until siblings hold the same records and photos.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::Client;
use crate::node::{Node, NodeOptions};

/// `host:port` of a running node's peer endpoint (from its data dir).
pub fn peer_address(node: &Node) -> String {
    std::fs::read_to_string(node.data_dir().join("peer-address"))
        .expect("peer-address in the data dir")
        .trim()
        .to_owned()
}

/// Starts one node per `(name, config)` (the config comes before the `[peers]` table:
/// top-level keys such as `region`, and other tables), each listing every other under
/// `[[table]]`, with `peers_extra` lines in each `[peers]` table.
pub fn known_to_each_other<const N: usize>(specs: [(&str, &str); N], table: &str, peers_extra: &str) -> [Node; N] {
    let mut nodes: Vec<(Node, String)> = specs
        .iter()
        .map(|(name, config)| {
            let port =
                std::net::UdpSocket::bind("127.0.0.1:0").and_then(|socket| socket.local_addr()).expect("a free port");
            let config = format!("{config}\n[peers]\nlisten = \"127.0.0.1:{}\"\n{peers_extra}", port.port());
            (Node::start(NodeOptions { name: (*name).to_owned(), ..NodeOptions::with_config(&config) }), config)
        })
        .collect();
    let entry =
        |node: &Node| format!("\n[[{table}]]\naddress = \"{}\"\npin = \"{}\"\n", peer_address(node), node.pin());
    let configs: Vec<String> = (0..nodes.len())
        .map(|index| {
            let others: String =
                (0..nodes.len()).filter(|other| *other != index).map(|other| entry(&nodes[other].0)).collect();
            format!("{}{others}", nodes[index].1)
        })
        .collect();
    for ((node, _), config) in nodes.iter_mut().zip(configs) {
        node.terminate();
        std::fs::write(node.data_dir().with_extension("toml"), config).expect("writing a config");
    }
    for (node, _) in &mut nodes {
        node.restart();
    }
    let nodes: Vec<Node> = nodes.into_iter().map(|(node, _)| node).collect();
    nodes.try_into().unwrap_or_else(|_| unreachable!("one node per spec"))
}

/// Siblings by config, with nothing else configured.
pub fn preloaded_siblings<const N: usize>(names: [&str; N]) -> [Node; N] {
    known_to_each_other(names.map(|name| (name, "")), "peers.siblings", "")
}

/// The control token a running node wrote to its data dir (admin routes accept it).
pub fn control_token(node: &Node) -> String {
    std::fs::read_to_string(node.data_dir().join("control-token"))
        .expect("control-token in the data dir")
        .trim()
        .to_owned()
}

/// `GET /api/v1/node/replication` of a node, with its control token.
pub fn replication_state(client: &Client, node: &Node) -> Value {
    let (status, answer) = client.get_json("/api/v1/node/replication", Some(&control_token(node)));
    assert_eq!(status, 200, "replication state of {}: {answer}", node.name());
    answer
}

/// Waits until every node holds the same replicated records and every photo's files;
/// returns how long that took. Panics with each node's state after `within`.
pub fn converge(nodes: &[(&Client, &Node)], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let states: Vec<Value> = nodes.iter().map(|(client, node)| replication_state(client, node)).collect();
        let same = states.iter().all(|state| state["digest"] == states[0]["digest"]);
        if same && states.iter().all(|state| state["media_missing"] == json!(0)) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "replicas did not converge within {within:?}: {states:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
