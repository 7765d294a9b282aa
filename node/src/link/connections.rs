//! The live connection to each remote node, as the link keeps it: one per node,
//! whoever dialled, replaced when a newer one wins. Read by everything that talks to
//! other nodes (replication's media fetcher, calls), so no service dials its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::core::model::NodeId;
use crate::locking::lock;

/// Connections by node id, each with the number the link gave it. Cheap to clone.
#[derive(Clone, Default)]
pub struct ConnectionTable {
    by_node: Arc<Mutex<BTreeMap<NodeId, (u64, quinn::Connection)>>>,
}

impl std::fmt::Debug for ConnectionTable {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<NodeId> = lock(&self.by_node).keys().copied().collect();
        formatter.debug_struct("ConnectionTable").field("nodes", &nodes).finish()
    }
}

impl ConnectionTable {
    /// The connections that are still open, in node id order.
    pub fn current(&self) -> Vec<(NodeId, quinn::Connection)> {
        lock(&self.by_node)
            .iter()
            .filter(|(_, (_, connection))| connection.close_reason().is_none())
            .map(|(node_id, (_, connection))| (*node_id, connection.clone()))
            .collect()
    }

    /// The open connection to `node_id`, if there is one.
    pub fn get(&self, node_id: NodeId) -> Option<quinn::Connection> {
        let by_node = lock(&self.by_node);
        by_node.get(&node_id).map(|(_, connection)| connection).filter(|c| c.close_reason().is_none()).cloned()
    }

    /// `connection` (number `connection_id`) is now the one to `node_id`.
    pub(super) fn connected(&self, node_id: NodeId, connection_id: u64, connection: &quinn::Connection) {
        lock(&self.by_node).insert(node_id, (connection_id, connection.clone()));
    }

    /// Connection `connection_id` to `node_id` ended; a newer one is kept.
    pub(super) fn closed(&self, node_id: NodeId, connection_id: u64) {
        let mut by_node = lock(&self.by_node);
        if by_node.get(&node_id).is_some_and(|(current, _)| *current == connection_id) {
            by_node.remove(&node_id);
        }
    }

    /// Closes and forgets the connections to nodes `keep` refuses.
    pub(super) fn retain(&self, keep: impl Fn(NodeId) -> bool, reason: &[u8]) {
        lock(&self.by_node).retain(|node_id, (_, connection)| {
            let kept = keep(*node_id);
            if !kept {
                connection.close(0u32.into(), reason);
            }
            kept
        });
    }
}

/// Gives each connection the link makes or accepts a number of its own, so an old
/// connection's end never removes its replacement.
pub(super) fn next_connection_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
