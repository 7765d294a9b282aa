//! Nodes on loopback that know each other from their config files, as an ISP would
//! provision them (no pairing): each starts once alone, on a fixed peer port, to make
//! its key; then all restart with every other node's address and pin listed as
//! siblings (`peers.siblings`) or neighbours (`peers.neighbours`). Node ids follow
//! from pins.

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
