//! The sibling service: the replication node (`core::replication`) over this node's
//! redb store (`store::replica`), driven over the peer endpoint (`net::peer`), with
//! clients' writes routed through it so one clock versions them and one log carries
//! them to the siblings.
//!
//! Every node runs it, with or without siblings: a node alone still keeps its change
//! log, so pairing later ships everything it wrote.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::config::Config;
use crate::core::model::NodeId;
use crate::core::replication::placement::TRUST_MAX;
use crate::core::replication::{ReplicaConfig, ShardId};
use crate::net::peer::{PeerDriver, PeerDriverConfig, PeerEndpoint, PeerLimits, PeerSibling, PeerState, SharedNode};
use crate::net::tls::Identity;
use crate::store::{LocalBody, LocalTransactions, RedbReplicaStore, Store, StoreResult};

/// The running sibling service. Dropping it without `shutdown` leaves the database
/// open until the process ends; call `shutdown`.
pub struct Siblings {
    driver: PeerDriver<RedbReplicaStore>,
    /// The strong handle of what `Store` reaches through a `Weak`.
    local: Arc<LocalWriter>,
    store: Arc<Store>,
    peer_address: SocketAddr,
}

/// What the API shows of replication (`GET /api/v1/node/replication`).
#[derive(Clone)]
pub struct SiblingsHandle {
    node: Arc<SharedNode<RedbReplicaStore>>,
    store: Arc<Store>,
    peers: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Vec<PeerState>>>,
    /// Public HTTPS addresses of siblings, by node id, as configured.
    addresses: Arc<Vec<(NodeId, String)>>,
}

/// Routes `Store`'s replicated writes through the node: one step of it per client
/// transaction, committed before the client hears back.
struct LocalWriter {
    node: Arc<SharedNode<RedbReplicaStore>>,
}

impl LocalTransactions for LocalWriter {
    fn transact(&self, body: &mut LocalBody<'_>) -> StoreResult<()> {
        self.node.step(|node| {
            let now = crate::os::now_ms();
            node.handle_local_transaction(now, |store, next_version| {
                store.local_transaction(next_version, body).map(|written| ((), written))
            })?;
            // Durable before the client is told (the persist hook after this step
            // then finds nothing left to write).
            node.store().commit(node.durable())
        })
    }
}

impl Siblings {
    pub async fn start(config: &Config, identity: &Identity, store: Arc<Store>) -> Result<Siblings> {
        let listen = config.peers.listen_address(config.listen);
        let mut siblings = Vec::new();
        let mut addresses = Vec::new();
        for sibling in &config.peers.siblings {
            let Some(node_id) = &sibling.node_id else {
                tracing::warn!(address = %sibling.address, "sibling without node_id: known for mDNS only, not replicated");
                continue;
            };
            let node_id = NodeId(u64::from_str_radix(node_id, 16).context("sibling node_id")?);
            addresses.push((node_id, sibling.address.clone()));
            siblings.push(PeerSibling {
                node_id,
                pin: sibling.pin.clone(),
                address: Some(sibling.address.clone()),
                zone: sibling.zone.clone().unwrap_or_else(|| format!("{node_id}")),
                trust: TRUST_MAX,
            });
        }
        let limits = PeerLimits::default();
        let endpoint =
            PeerEndpoint::bind(identity, listen, siblings.iter().map(|sibling| sibling.pin.clone()), &limits)?;
        let peer_address = endpoint.local_addr();
        let replica = ReplicaConfig {
            replicas_wanted: config.peers.replicas.unwrap_or(ReplicaConfig::default().replicas_wanted),
            ..ReplicaConfig::default()
        };
        let (replica_store, durable) = tokio::task::block_in_place(|| RedbReplicaStore::open(store.clone()))?;
        let fresh = durable.log.epoch() == 0;
        let driver_config = PeerDriverConfig {
            node_id: store.node_id(),
            zone: config.peers.zone.clone().unwrap_or_else(|| config.name.clone()),
            siblings,
            replica,
            limits,
            advertised_address: peer_address.to_string(),
            media_store: Some(store.clone()),
        };
        let persist = Box::new(|store: &RedbReplicaStore, durable: &_| {
            if let Err(error) = store.commit(durable) {
                tracing::error!(%error, "cannot persist replication state; the step was rolled back");
            }
        });
        let driver = PeerDriver::start(endpoint, driver_config, replica_store, durable, Some(persist));
        if fresh {
            // First start with replication (or after an upgrade): a new epoch logs
            // every record this node wrote, so siblings get what predates the log.
            driver.node().step(|node| node.start_new_epoch(crate::os::now_ms()));
        }
        let local = Arc::new(LocalWriter { node: driver.node().clone() });
        let local_dyn: Arc<dyn LocalTransactions> = local.clone();
        store.attach_replication(Arc::downgrade(&local_dyn));
        tracing::info!(peer = %peer_address, siblings = addresses.len(), "sibling endpoint ready");
        Ok(Siblings { driver, local, store, peer_address })
    }

    pub fn peer_address(&self) -> SocketAddr {
        self.peer_address
    }

    pub fn handle(&self, config: &Config) -> SiblingsHandle {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<Vec<PeerState>>>(8);
        let driver_commands = self.driver.handle();
        tokio::spawn(async move {
            while let Some(reply) = receiver.recv().await {
                let states = driver_commands.peer_states().await.unwrap_or_default();
                let _ = reply.send(states);
            }
        });
        let addresses = config
            .peers
            .siblings
            .iter()
            .filter_map(|sibling| {
                let node_id = u64::from_str_radix(sibling.node_id.as_deref()?, 16).ok()?;
                Some((NodeId(node_id), sibling.address.clone()))
            })
            .collect();
        SiblingsHandle {
            node: self.driver.node().clone(),
            store: self.store.clone(),
            peers: sender,
            addresses: Arc::new(addresses),
        }
    }

    /// Stops replication: local writes commit on their own again, the driver stops
    /// and the replication store is dropped (so the database can close).
    pub async fn shutdown(self) {
        let Siblings { driver, local, .. } = self;
        drop(local);
        match driver.shutdown().await {
            Ok((replica_store, durable)) => {
                if let Err(error) = replica_store.commit(&durable) {
                    tracing::error!(%error, "cannot persist replication state at shutdown");
                }
            }
            Err(error) => tracing::warn!(%error, "replication did not stop cleanly"),
        }
    }
}

impl SiblingsHandle {
    /// The replicas of a user, home first: (node id, address if known, whether it is this node).
    pub fn replicas_of(&self, user_id: &str) -> Vec<(NodeId, Option<String>, bool)> {
        let own = self.store.node_id();
        let replicas = self.node.read(|node| node.replicas_of(&ShardId(user_id.to_owned())));
        replicas
            .into_iter()
            .map(|node_id| {
                let address = self.addresses.iter().find(|(id, _)| *id == node_id).map(|(_, address)| address.clone());
                (node_id, address, node_id == own)
            })
            .collect()
    }

    /// Replication figures for operators and tests. Blocking: call from a blocking thread.
    pub fn status(&self) -> StoreResult<serde_json::Value> {
        let (records, tombstones, digest) = self.store.replication_digest()?;
        let media_missing = self.store.missing_media_count()?;
        let (epoch, log_end, stats) = self
            .node
            .read(|node| (node.durable().log.epoch(), node.durable().log.end_seq(), format!("{:?}", node.stats())));
        let peers = {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let sent = self.peers.blocking_send(reply).is_ok();
            if sent {
                answer.blocking_recv().unwrap_or_default()
            } else {
                Vec::new()
            }
        };
        let peers: Vec<serde_json::Value> = peers
            .into_iter()
            .map(|peer| {
                serde_json::json!({
                    "node_id": peer.node_id.to_string(),
                    "address": peer.address,
                    "connected": peer.connected,
                    "last_contact_ms_ago": peer.last_contact_ms_ago,
                    "bytes_in": peer.bytes_in,
                    "bytes_out": peer.bytes_out,
                    "frames_in": peer.frames_in,
                    "frames_out": peer.frames_out,
                    "bad_frames": peer.bad_frames,
                    "frames_dropped": peer.frames_dropped,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "node_id": self.store.node_id().to_string(),
            "records": records - tombstones,
            "tombstones": tombstones,
            "digest": format!("{digest:016x}"),
            "media_missing": media_missing,
            "epoch": epoch,
            "log_end": log_end,
            "stats": stats,
            "peers": peers,
        }))
    }
}
