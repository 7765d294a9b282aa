//! The sibling service: the replication node (`core::replication`) over this node's
//! redb store (`store::replica`), driven over the peer endpoint (`link`), with
//! clients' writes routed through it so one clock versions them and one log carries
//! them to the siblings. Also pairing (`edgenode peer pair|join`), which persists new
//! siblings in `<data-dir>/siblings.toml` and restarts the driver with them.
//!
//! Every node runs it, with or without siblings: a node alone still keeps its change
//! log, so pairing later ships everything it wrote.
//!
//! Retirement (`edgenode peer retire`): an admin retires a dead sibling's node id.
//! The id is kept in `<data-dir>/retired.toml` and left out of the sibling list from
//! then on, so replication stops waiting for it (horizons, tombstone collection, log
//! truncation), placement no longer names it and the link refuses its key. Each node
//! announces its retired ids to its siblings (call `retired-siblings`, at once and
//! every `RETIRED_ANNOUNCE_INTERVAL_MS`), so a sibling that was down when it happened
//! learns it at the next round; a sibling never retires itself.
//!
//! Trust: the driver and the media fetcher score what each sibling does
//! (`link::trust`, saved to `<data-dir>/trust.json`); placement weighs siblings
//! by trust tier, so when a sibling changes tier the driver restarts with the new
//! weights: an untrusted sibling is placed nothing, and its shards are placed on (and
//! repaired onto) the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{Config, SiblingConfig};
use crate::core::model::NodeId;
use crate::core::operator::{
    Connection, PairingCode, Peer, PeerRetired, ReplicationStatus, RetiredMark, RetiredPeer, SiblingAddress,
    SiblingPeer, SiblingSource,
};
use crate::core::replication::{ReplicaConfig, ShardId};
use crate::exposition;
use crate::identity::Identity;
use crate::link::neighbours::{NeighbourAddress, NeighbourHandler, NeighbourLink, NeighbourServices, Refusal};
use crate::link::trust::TrustBook;
use crate::link::{
    ConnectionTable, NeighbourServing, PeerDriver, PeerDriverConfig, PeerEndpoint, PeerLimits, PeerSibling, PeerState,
    SharedNode, SiblingInfo,
};
use crate::services::media_fetch::{media_server, MediaFetchLimits, MediaFetcher};
use crate::store::{LocalBody, LocalTransactions, RedbReplicaStore, Store, StoreError, StoreResult};

/// Why the sibling service could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("{path} is not a valid siblings file: {reason} — fix or remove it (then pair again)")]
    SiblingsFile { path: PathBuf, reason: String },
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Trust(#[from] crate::link::trust::TrustFileError),
    #[error(transparent)]
    Peer(#[from] crate::link::PeerError),
    #[error(transparent)]
    Pairing(#[from] crate::link::PairingError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("replication has stopped; the node is shutting down")]
    Stopped,
    #[error("{node_id} is this node; retire a dead sibling from one of its siblings instead")]
    RetireOwnNode { node_id: NodeId },
    #[error("{node_id} is not a sibling of this node (see `edgenode peer list`)")]
    NotASibling { node_id: NodeId },
    #[error(
        "{node_id} is connected now: retiring a running box cuts it off; stop it first, or retire it anyway with --force"
    )]
    SiblingConnected { node_id: NodeId },
    #[error("{node_id} was retired; a retired node cannot pair again (a replacement box has a new id)")]
    Retired { node_id: NodeId },
    #[error("{path} is not a valid retired-siblings file: {reason} — fix it (removing it makes every retired node a sibling again)")]
    RetiredFile { path: PathBuf, reason: String },
    #[error("{path} holds {count} retired nodes, the most this node keeps is {max}")]
    TooManyRetired { path: PathBuf, count: usize, max: usize },
}

pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;

/// Where siblings learned by pairing are kept (config siblings stay in the config).
const PAIRED_FILE: &str = "siblings.toml";
/// How often the driver is asked whether someone joined with our code (and the trust
/// ledger is saved if it changed, and looked at for tier changes).
const PAIRED_POLL_MS: u64 = 1000;
/// The trust ledger, in the data dir.
const TRUST_FILE: &str = "trust.json";
/// Sibling ids retired by an admin here or on a sibling, in the data dir.
const RETIRED_FILE: &str = "retired.toml";
/// The call on which siblings announce the ids they retired.
pub const SERVICE_RETIRED_SIBLINGS: &str = "retired-siblings";
/// How often the retired ids are announced to every sibling (also at once, on retire).
const RETIRED_ANNOUNCE_INTERVAL_MS: u64 = 30_000;
const RETIRED_CALL_TIMEOUT_MS: u64 = 5_000;
/// Retired ids kept, and taken from one announcement.
const RETIRED_NODES_MAX: usize = 1024;
/// How long a scrape of `/metrics` waits for the driver to report its peers.
const PEER_STATES_TIMEOUT_MS: u64 = 2_000;

type Node = SharedNode<RedbReplicaStore>;

/// The running sibling service, shared by the API and the pairing watcher.
pub struct Siblings {
    config: Config,
    identity: Identity,
    store: Arc<Store>,
    /// The strong handle of what `Store` reaches through a `Weak`.
    local: Arc<LocalWriter>,
    running: tokio::sync::Mutex<Option<Running>>,
    peer_address: SocketAddr,
    trust: Arc<TrustBook>,
    /// Services this node answers to siblings and neighbours (fan-out, search).
    neighbour_services: Arc<NeighbourServices>,
    /// Calls to siblings' and neighbours' services.
    neighbour_link: Arc<NeighbourLink>,
}

/// The replication figures of `/metrics`, read at each scrape (the registry holds
/// this; it does not keep the service alive).
pub struct ReplicationMetrics(std::sync::Weak<Siblings>);

impl std::fmt::Debug for ReplicationMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ReplicationMetrics")
    }
}

impl exposition::Collector for ReplicationMetrics {
    fn encode(&self, mut encoder: exposition::Encoder<'_>) -> std::fmt::Result {
        match self.0.upgrade() {
            Some(siblings) => siblings.encode_metrics(&mut encoder),
            None => Ok(()),
        }
    }
}

struct Running {
    driver: PeerDriver<RedbReplicaStore>,
    media_fetcher: tokio::task::JoinHandle<()>,
    siblings: Vec<SiblingConfig>,
    /// The placement weight each sibling was started with (`TrustTier::placement_weight`).
    placement_weights: Vec<(NodeId, u8)>,
}

/// Routes `Store`'s replicated writes through the node: one step of it per client
/// transaction, committed before the client hears back. While the driver restarts
/// (new siblings) writers wait on the lock rather than bypass the log.
struct LocalWriter {
    node: tokio::sync::RwLock<Option<Arc<Node>>>,
}

impl LocalTransactions for LocalWriter {
    fn transact(&self, body: &mut LocalBody<'_>) -> StoreResult<()> {
        let node = self.node.blocking_read();
        let Some(node) = node.as_ref() else {
            return Err(StoreError::Corrupt("replication has stopped; the node is shutting down".into()));
        };
        node.step(|node| {
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

/// A sibling learned by pairing, as `siblings.toml` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PairedSibling {
    node_id: String,
    address: String,
    pin: String,
    paired_at_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PairedFile {
    #[serde(default)]
    sibling: Vec<PairedSibling>,
}

/// The config's siblings plus those learned by pairing (config first; one per node id),
/// less the retired ones.
pub fn all_siblings(config: &Config) -> Result<Vec<SiblingConfig>> {
    let mut siblings = config.peers.siblings.clone();
    for paired in read_paired(&config.data_dir)?.sibling {
        if !siblings.iter().any(|sibling| sibling.node_id.as_deref() == Some(paired.node_id.as_str())) {
            siblings.push(SiblingConfig {
                address: paired.address,
                pin: paired.pin,
                node_id: Some(paired.node_id),
                zone: None,
            });
        }
    }
    let retired = read_retired(&config.data_dir)?;
    siblings.retain(|sibling| {
        let id = node_id_of(sibling);
        !retired.iter().any(|node| Some(node.node_id) == id)
    });
    Ok(siblings)
}

fn paired_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PAIRED_FILE)
}

fn read_paired(data_dir: &Path) -> Result<PairedFile> {
    let path = paired_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|error| ReplicationError::SiblingsFile { path: path.clone(), reason: error.to_string() }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(PairedFile::default()),
        Err(source) => Err(ReplicationError::Io { action: "read", path, source }),
    }
}

/// Adds (or updates) a paired sibling: written to a temporary file, synced, renamed.
fn save_paired(data_dir: &Path, info: &SiblingInfo) -> Result<()> {
    let mut file = read_paired(data_dir)?;
    let node_id = info.node_id.to_string();
    file.sibling.retain(|sibling| sibling.node_id != node_id);
    file.sibling.push(PairedSibling {
        node_id,
        address: info.address.clone(),
        pin: info.pin.clone(),
        paired_at_ms: crate::os::now_ms(),
    });
    let text = format!(
        "# Siblings learned by `edgenode peer pair` / `edgenode peer join`; read at start with\n\
         # the [peers] siblings of the config. Remove an entry and restart to unpair.\n{}",
        toml::to_string(&file).expect("the siblings file serializes")
    );
    write_owner_only(paired_path(data_dir), &text)
}

/// Writes `text` to a temporary file, synced, then renamed over `path`; owner-only
/// whatever the umask: the file says which nodes this one trusts.
fn write_owner_only(path: PathBuf, text: &str) -> Result<()> {
    let temporary = path.with_extension("toml.tmp");
    let written = (|| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut out =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    written.map_err(|source| ReplicationError::Io { action: "write", path, source })
}

/// A sibling retired by an admin (here or on a sibling), as `retired.toml` keeps it
/// and the `retired-siblings` call carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredNode {
    pub node_id: NodeId,
    /// Its key's pin, when the node that retired it knew it.
    #[serde(default)]
    pub pin: Option<String>,
    pub retired_at_ms: u64,
    /// The node whose admin retired it.
    pub retired_by: NodeId,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RetiredFile {
    #[serde(default)]
    node: Vec<RetiredNode>,
}

fn retired_path(data_dir: &Path) -> PathBuf {
    data_dir.join(RETIRED_FILE)
}

/// The retired siblings kept in the data dir (none when there is no file).
pub fn read_retired(data_dir: &Path) -> Result<Vec<RetiredNode>> {
    let path = retired_path(data_dir);
    let file: RetiredFile = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|error| ReplicationError::RetiredFile { path: path.clone(), reason: error.to_string() })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => RetiredFile::default(),
        Err(source) => return Err(ReplicationError::Io { action: "read", path, source }),
    };
    Ok(file.node)
}

/// Adds the ids of `retired` not kept yet (never `own_id`); returns those added.
fn save_retired(data_dir: &Path, own_id: NodeId, retired: &[RetiredNode]) -> Result<Vec<RetiredNode>> {
    let mut kept = read_retired(data_dir)?;
    let mut added = Vec::new();
    for node in retired {
        if node.node_id != own_id && !kept.iter().any(|known| known.node_id == node.node_id) {
            kept.push(node.clone());
            added.push(node.clone());
        }
    }
    if added.is_empty() {
        return Ok(added);
    }
    let path = retired_path(data_dir);
    if kept.len() > RETIRED_NODES_MAX {
        return Err(ReplicationError::TooManyRetired { path, count: kept.len(), max: RETIRED_NODES_MAX });
    }
    let text = format!(
        "# Siblings retired by `edgenode peer retire` (here or on a sibling): never siblings\n\
         # again, whatever the config or siblings.toml says. Learnt from siblings too.\n{}",
        toml::to_string(&RetiredFile { node: kept }).expect("the retired file serializes")
    );
    write_owner_only(path, &text)?;
    Ok(added)
}

/// A sibling's node id: as configured, else the one its pin gives (`NodeId::from_pin`,
/// true of every node whose database this version created).
fn node_id_of(sibling: &SiblingConfig) -> Option<NodeId> {
    node_id_from(sibling.node_id.as_deref(), &sibling.pin)
}

fn node_id_from(node_id: Option<&str>, pin: &str) -> Option<NodeId> {
    match node_id {
        Some(node_id) => u64::from_str_radix(node_id, 16).ok().map(NodeId),
        None => Some(NodeId::from_pin(pin)),
    }
}

/// Configured neighbours (not siblings) by pin.
fn neighbour_pins(config: &Config) -> std::collections::BTreeMap<String, NodeId> {
    config
        .peers
        .neighbours
        .iter()
        .filter_map(|neighbour| {
            Some((neighbour.pin.clone(), node_id_from(neighbour.node_id.as_deref(), &neighbour.pin)?))
        })
        .collect()
}

/// Everyone the neighbour link may call: siblings, then configured neighbours.
fn neighbour_book(config: &Config, siblings: &[SiblingConfig]) -> Vec<NeighbourAddress> {
    let siblings = siblings.iter().filter_map(|sibling| {
        Some(NeighbourAddress {
            node_id: node_id_of(sibling)?,
            address: sibling.address.clone(),
            pin: sibling.pin.clone(),
        })
    });
    let neighbours = config.peers.neighbours.iter().filter_map(|neighbour| {
        Some(NeighbourAddress {
            node_id: node_id_from(neighbour.node_id.as_deref(), &neighbour.pin)?,
            address: neighbour.address.clone(),
            pin: neighbour.pin.clone(),
        })
    });
    siblings.chain(neighbours).collect()
}

impl Siblings {
    /// Binds the sibling endpoint and starts replication over `store`; from now on
    /// the store's replicated writes go through it.
    pub async fn start(config: &Config, identity: &Identity, store: Arc<Store>) -> Result<Arc<Siblings>> {
        let siblings = all_siblings(config)?;
        let listen = config.peers.listen_address(config.listen);
        let local = Arc::new(LocalWriter { node: tokio::sync::RwLock::new(None) });
        let trust = Arc::new(TrustBook::load(&config.data_dir.join(TRUST_FILE))?);
        let neighbour_services = Arc::new(NeighbourServices::default());
        let book = neighbour_book(config, &siblings);
        let neighbour_connections = ConnectionTable::default();
        let serving = NeighbourServing {
            pins: neighbour_pins(config),
            services: neighbour_services.clone(),
            connections: neighbour_connections.clone(),
        };
        let running = start_driver(config, identity, &store, listen, siblings, &trust, serving).await?;
        let peer_address = running.driver.local_addr();
        let neighbour_link = NeighbourLink::new(running.driver.endpoint(), identity, &PeerLimits::default())?
            .with_connections(running.driver.sibling_connections(), neighbour_connections)
            .with_services(neighbour_services.clone())
            .with_trust(trust.clone());
        let neighbour_link = Arc::new(neighbour_link);
        neighbour_link.set_neighbours(book);
        *local.node.write().await = Some(running.driver.node().clone());
        let local_dyn: Arc<dyn LocalTransactions> = local.clone();
        store.attach_replication(Arc::downgrade(&local_dyn));
        let service = Arc::new(Siblings {
            config: config.clone(),
            identity: identity.clone(),
            store,
            local,
            running: tokio::sync::Mutex::new(Some(running)),
            peer_address,
            trust,
            neighbour_services,
            neighbour_link,
        });
        tokio::spawn(watch_paired(Arc::downgrade(&service)));
        service
            .neighbour_services
            .register(SERVICE_RETIRED_SIBLINGS, Arc::new(RetiredAnnouncements(Arc::downgrade(&service))));
        tokio::spawn(announce_retired_every_interval(Arc::downgrade(&service)));
        Ok(service)
    }

    pub fn peer_address(&self) -> SocketAddr {
        self.peer_address
    }

    /// Where services answered to siblings and neighbours are registered.
    pub fn neighbour_services(&self) -> &Arc<NeighbourServices> {
        &self.neighbour_services
    }

    /// Calls to siblings' and neighbours' services.
    pub fn neighbour_link(&self) -> &Arc<NeighbourLink> {
        &self.neighbour_link
    }

    /// Replicates with `siblings` from now on: the link admits their pins and keeps
    /// its connections (to siblings that stay, and every neighbour's); nothing is
    /// rebound or restarted.
    async fn set_siblings(&self, siblings: Vec<SiblingConfig>) -> Result<()> {
        let mut running = self.running.lock().await;
        let Some(running) = running.as_mut() else { return Err(ReplicationError::Stopped) };
        let peer_siblings = peer_siblings(&siblings, &self.trust);
        running.placement_weights = peer_siblings.iter().map(|sibling| (sibling.node_id, sibling.trust)).collect();
        running.driver.set_siblings(peer_siblings).await?;
        self.neighbour_link.set_neighbours(neighbour_book(&self.config, &siblings));
        running.siblings = siblings;
        Ok(())
    }

    /// Stops replication: the driver stops and the replication store is dropped (so
    /// the database can close); later local writes fail.
    pub async fn shutdown(&self) {
        let mut running = self.running.lock().await;
        self.local.node.write().await.take();
        if let Some(old) = running.take() {
            stop(old).await;
        }
        if let Err(error) = self.trust.save_if_changed() {
            tracing::error!(%error, "cannot save the trust ledger");
        }
    }

    // ----- for the API (blocking threads) -----

    fn node(&self) -> Option<Arc<Node>> {
        self.local.node.blocking_read().clone()
    }

    /// The replicas of a user, home first: (node id, peer address if known, whether
    /// it is this node). `home` is where the account was created; it leads the list
    /// (rendezvous order would put any replica first).
    pub fn replicas_of(&self, user_id: &str, home: Option<NodeId>) -> Vec<(NodeId, Option<String>, bool)> {
        let own = self.store.node_id();
        let Some(node) = self.node() else { return Vec::new() };
        let siblings =
            self.running.blocking_lock().as_ref().map(|running| running.siblings.clone()).unwrap_or_default();
        let mut replicas = node.read(|node| node.replicas_of(&ShardId(user_id.to_owned())));
        // A retired home (a dead box replaced) leads nothing: placement alone says.
        let home =
            home.filter(|home| *home == own || siblings.iter().any(|sibling| node_id_of(sibling) == Some(*home)));
        if let Some(home) = home {
            replicas.retain(|node_id| *node_id != home);
            replicas.insert(0, home);
        }
        replicas
            .into_iter()
            .map(|node_id| {
                let address = if node_id == own {
                    Some(self.peer_address.to_string())
                } else {
                    siblings.iter().find(|sibling| node_id_of(sibling) == Some(node_id)).map(|s| s.address.clone())
                };
                (node_id, address, node_id == own)
            })
            .collect()
    }

    /// The siblings this node replicates with: `[{id, peer_address}]` (public).
    pub fn sibling_list(&self) -> Vec<SiblingAddress> {
        let running = self.running.blocking_lock();
        let siblings = running.as_ref().map(|running| running.siblings.as_slice()).unwrap_or_default();
        siblings
            .iter()
            .filter_map(|sibling| {
                let id = node_id_of(sibling)?;
                Some(SiblingAddress { id: id.to_string(), peer_address: sibling.address.clone() })
            })
            .collect()
    }

    /// The ids of the siblings this node replicates with now.
    pub fn sibling_ids(&self) -> Vec<NodeId> {
        let running = self.running.blocking_lock();
        let siblings = running.as_ref().map(|running| running.siblings.as_slice()).unwrap_or_default();
        siblings.iter().filter_map(node_id_of).collect()
    }

    /// Every sibling with its connection state and counters (`edgenode peer list`).
    pub fn peers(&self) -> Vec<Peer> {
        let running = self.running.blocking_lock();
        let Some(running) = running.as_ref() else { return Vec::new() };
        let handle = running.driver.handle();
        let states = tokio::runtime::Handle::current().block_on(handle.peer_states()).unwrap_or_default();
        let lags = running
            .driver
            .node()
            .read(|node| states.iter().map(|state| node.peer_lag(state.node_id)).collect::<Vec<_>>());
        states
            .into_iter()
            .zip(lags)
            .map(|(peer, lag)| {
                let paired = running.siblings.iter().find(|sibling| node_id_of(sibling) == Some(peer.node_id));
                let trust = self.trust.peer(peer.node_id).unwrap_or_default();
                let configured = paired.is_some_and(|sibling| {
                    self.config.peers.siblings.iter().any(|config| config.node_id == sibling.node_id)
                });
                Peer::Sibling(SiblingPeer {
                    node_id: peer.node_id.to_string(),
                    address: peer.address,
                    pin: peer.pin,
                    state: if peer.connected { Connection::Connected } else { Connection::Disconnected },
                    connected: peer.connected,
                    last_contact_ms_ago: peer.last_contact_ms_ago,
                    lag_entries: lag,
                    trust: trust.score,
                    trust_tier: trust.tier(),
                    trust_events: trust.counts,
                    trust_recent: trust.recent,
                    placement_weight: running
                        .placement_weights
                        .iter()
                        .find(|(node_id, _)| *node_id == peer.node_id)
                        .map(|(_, weight)| *weight),
                    source: if configured { SiblingSource::Config } else { SiblingSource::Paired },
                    bytes_in: peer.bytes_in,
                    bytes_out: peer.bytes_out,
                    frames_in: peer.frames_in,
                    frames_out: peer.frames_out,
                    bad_frames: peer.bad_frames,
                    frames_dropped: peer.frames_dropped,
                    connection_bytes_sent: peer.connection_bytes_sent,
                    connection_bytes_received: peer.connection_bytes_received,
                })
            })
            .chain(self.retired_peers())
            .collect()
    }

    /// Retired siblings as `peer list` shows them (state `retired`).
    fn retired_peers(&self) -> Vec<Peer> {
        let retired = read_retired(&self.config.data_dir).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read the retired siblings");
            Vec::new()
        });
        retired
            .into_iter()
            .map(|node| {
                Peer::Retired(RetiredPeer {
                    node_id: node.node_id.to_string(),
                    pin: node.pin,
                    state: RetiredMark::Retired,
                    connected: false,
                    retired_at_ms: node.retired_at_ms,
                    retired_by: node.retired_by.to_string(),
                    source: RetiredMark::Retired,
                })
            })
            .collect()
    }

    /// Retires the sibling `node_id` (`edgenode peer retire`): kept as retired, left out
    /// of the sibling list from now on (replication stops waiting for it, placement
    /// forgets it, its key is refused), and announced to the siblings. A sibling
    /// connected now is refused unless `force`. Retiring a retired node again changes
    /// nothing (`already_retired`).
    pub fn retire(&self, node_id: NodeId, force: bool) -> Result<PeerRetired> {
        let own_id = self.store.node_id();
        if node_id == own_id {
            return Err(ReplicationError::RetireOwnNode { node_id });
        }
        let runtime = tokio::runtime::Handle::current();
        if let Some(known) = read_retired(&self.config.data_dir)?.into_iter().find(|node| node.node_id == node_id) {
            return Ok(retired_answer(&known, true, self.sibling_ids().len()));
        }
        let (pin, connected) = {
            let running = self.running.blocking_lock();
            let Some(running) = running.as_ref() else { return Err(ReplicationError::Stopped) };
            let Some(sibling) = running.siblings.iter().find(|sibling| node_id_of(sibling) == Some(node_id)) else {
                return Err(ReplicationError::NotASibling { node_id });
            };
            let states = runtime.block_on(running.driver.handle().peer_states())?;
            let connected = states.iter().any(|state| state.node_id == node_id && state.connected);
            (sibling.pin.clone(), connected)
        };
        if connected && !force {
            return Err(ReplicationError::SiblingConnected { node_id });
        }
        let retired = RetiredNode { node_id, pin: Some(pin), retired_at_ms: crate::os::now_ms(), retired_by: own_id };
        self.apply_retired(&runtime, std::slice::from_ref(&retired))?;
        tracing::warn!(peer = %node_id, forced = connected, "sibling retired by an admin; no longer waited for");
        runtime.spawn(announce_retired(self.neighbour_link.clone(), self.sibling_ids(), vec![retired.clone()]));
        Ok(retired_answer(&retired, false, self.sibling_ids().len()))
    }

    /// Keeps the retired nodes not known yet and, when there were any, replicates with
    /// the siblings left.
    fn apply_retired(&self, runtime: &tokio::runtime::Handle, retired: &[RetiredNode]) -> Result<usize> {
        let added = save_retired(&self.config.data_dir, self.store.node_id(), retired)?;
        if added.is_empty() {
            return Ok(0);
        }
        let siblings = all_siblings(&self.config)?;
        runtime.block_on(self.set_siblings(siblings))?;
        Ok(added.len())
    }

    /// A one-time pairing code for `edgenode peer join` on the other node.
    pub fn start_pairing(&self) -> Result<PairingCode> {
        let running = self.running.blocking_lock();
        let Some(running) = running.as_ref() else { return Err(ReplicationError::Stopped) };
        let code = running.driver.start_pairing();
        let addresses = crate::link::pairing::dialable_addresses(self.peer_address);
        Ok(PairingCode {
            code: code.as_str().to_owned(),
            expires_in_seconds: crate::link::pairing::PAIRING_CODE_LIFETIME_MS / 1000,
            peer_address: addresses.first().cloned(),
            peer_addresses: addresses,
            node_id: self.store.node_id().to_string(),
            pin: self.identity.pin.clone(),
        })
    }

    /// Joins the node at `address` with the code it showed; both sides then list
    /// each other and replicate (this side restarts its driver at once).
    pub fn join(&self, address: &str, code: &str) -> Result<SiblingInfo> {
        let runtime = tokio::runtime::Handle::current();
        let info = {
            let running = self.running.blocking_lock();
            let Some(running) = running.as_ref() else { return Err(ReplicationError::Stopped) };
            runtime.block_on(running.driver.join(address, code))?
        };
        self.adopt(&runtime, &info)?;
        Ok(info)
    }

    fn adopt(&self, runtime: &tokio::runtime::Handle, info: &SiblingInfo) -> Result<()> {
        if read_retired(&self.config.data_dir)?.iter().any(|node| node.node_id == info.node_id) {
            return Err(ReplicationError::Retired { node_id: info.node_id });
        }
        save_paired(&self.config.data_dir, info)?;
        let siblings = all_siblings(&self.config)?;
        tracing::info!(peer = %info.node_id, address = %info.address, "paired; restarting replication with the new sibling");
        runtime.block_on(self.set_siblings(siblings))
    }

    /// Replication's figures for `/metrics`, read at each scrape (see `encode_metrics`).
    pub fn metrics_collector(self: &Arc<Self>) -> ReplicationMetrics {
        ReplicationMetrics(Arc::downgrade(self))
    }

    /// The node's replication counters, and per sibling (label `peer`, its node id):
    /// connected or not, log entries it has not acknowledged, seconds since its last
    /// frame, traffic, trust. Blocking: waits (at most `PEER_STATES_TIMEOUT_MS`) for
    /// the driver to report its peers.
    fn encode_metrics(&self, encoder: &mut exposition::Encoder<'_>) -> std::fmt::Result {
        let Some(node) = self.node() else { return Ok(()) };
        let (stats, log_end) = node.read(|node| (node.stats().clone(), node.durable().log.end_seq()));
        // What the scrape needs from `running`, taken without holding it while waiting.
        let (siblings, connected, peer_handle) = match self.running.blocking_lock().as_ref() {
            Some(running) => (
                running.siblings.len(),
                running.driver.sibling_connections().current().len(),
                Some(running.driver.handle()),
            ),
            None => (0, 0, None),
        };
        let gauges = [
            ("edgenode_siblings", "Siblings this node replicates with", siblings as u64),
            ("edgenode_siblings_connected", "Siblings connected now", connected as u64),
            // One connection per remote node carries all node-to-node traffic.
            (
                "edgenode_link_connections",
                "Connections to other nodes (siblings and neighbours)",
                self.neighbour_link.connection_count() as u64,
            ),
            ("edgenode_replication_log_end", "Sequence number after the last entry of this node's change log", log_end),
        ];
        for (name, help, value) in gauges {
            exposition::gauge(encoder, name, help, value)?;
        }
        let counters = [
            ("edgenode_replication_items_applied", "Records applied from siblings", stats.items_applied),
            (
                "edgenode_replication_items_stale",
                "Records from siblings older than what this node holds",
                stats.items_stale,
            ),
            ("edgenode_replication_items_refused", "Records from siblings refused (invalid)", stats.items_refused),
            ("edgenode_replication_messages_stale", "Messages of an earlier epoch or session", stats.messages_stale),
            ("edgenode_replication_messages_dropped", "Messages dropped (queue full)", stats.messages_dropped),
            ("edgenode_replication_log_batches_sent", "Change-log batches sent", stats.log_batches_sent),
            ("edgenode_replication_log_retransmits", "Change-log batches sent again", stats.log_retransmits),
            ("edgenode_replication_repair_rounds", "Repair (set reconciliation) rounds", stats.repair_rounds),
            ("edgenode_replication_repair_items_pushed", "Records pushed by repair", stats.repair_items_pushed),
            ("edgenode_replication_tombstones_purged", "Tombstones purged past their horizon", stats.tombstones_purged),
            ("edgenode_replication_epochs_started", "Change-log epochs started", stats.epochs_started),
            (
                "edgenode_replication_items_collected",
                "Records from siblings refused as deleted: absent here and older than the shard's floor",
                stats.items_collected,
            ),
            (
                "edgenode_replication_records_dropped",
                "Records dropped because a sibling's floor proved them deleted (an old backup restored)",
                stats.records_dropped,
            ),
        ];
        for (name, help, value) in counters {
            exposition::counter(encoder, name, help, value)?;
        }
        let Some(peer_handle) = peer_handle else { return Ok(()) };
        let states = tokio::runtime::Handle::current().block_on(async {
            tokio::time::timeout(Duration::from_millis(PEER_STATES_TIMEOUT_MS), peer_handle.peer_states()).await
        });
        let Ok(Ok(states)) = states else {
            tracing::debug!("the replication driver did not report its peers in time; per-sibling metrics left out");
            return Ok(());
        };
        let lags = node.read(|node| states.iter().map(|state| node.peer_lag(state.node_id)).collect::<Vec<_>>());
        let peer = |state: &PeerState| [("peer", state.node_id.to_string())];
        let (gauge, counter) = (exposition::Kind::Gauge, exposition::Kind::Counter);
        let connected: Vec<_> = states.iter().map(|state| (peer(state), u64::from(state.connected))).collect();
        let help = "1 while the sibling is connected, else 0";
        exposition::family(encoder, "edgenode_replication_peer_connected", help, gauge, &connected)?;
        // Unknown (left out) until the sibling first acknowledges part of the log.
        let lag: Vec<_> = states.iter().zip(&lags).filter_map(|(state, lag)| Some((peer(state), (*lag)?))).collect();
        let help = "Entries of this node's change log the sibling has not acknowledged";
        exposition::family(encoder, "edgenode_replication_peer_lag_entries", help, gauge, &lag)?;
        let last_contact: Vec<_> =
            states.iter().filter_map(|state| Some((peer(state), state.last_contact_ms_ago? as f64 / 1000.0))).collect();
        let help = "Seconds since the last frame from the sibling";
        exposition::family(encoder, "edgenode_replication_peer_last_contact_seconds", help, gauge, &last_contact)?;
        let trust: Vec<_> =
            states.iter().map(|state| (peer(state), u64::from(self.trust.score(state.node_id)))).collect();
        let help = "The sibling's trust score, 0 to 100";
        exposition::family(encoder, "edgenode_replication_peer_trust_score", help, gauge, &trust)?;
        // Name, help, and the counter of `PeerState` it reads.
        type PeerCounter = (&'static str, &'static str, fn(&PeerState) -> u64);
        let traffic: [PeerCounter; 5] = [
            ("edgenode_replication_peer_frames_received", "Replication frames received from the sibling", |state| {
                state.frames_in
            }),
            ("edgenode_replication_peer_frames_sent", "Replication frames queued for the sibling", |state| {
                state.frames_out
            }),
            (
                "edgenode_replication_peer_received_bytes",
                "Replication frame bytes received from the sibling",
                |state| state.bytes_in,
            ),
            ("edgenode_replication_peer_sent_bytes", "Replication frame bytes queued for the sibling", |state| {
                state.bytes_out
            }),
            ("edgenode_replication_peer_frames_dropped", "Frames dropped because the send queue was full", |state| {
                state.frames_dropped
            }),
        ];
        for (name, help, value) in traffic {
            let samples: Vec<_> = states.iter().map(|state| (peer(state), value(state))).collect();
            exposition::family(encoder, name, help, counter, &samples)?;
        }
        Ok(())
    }

    /// Replication figures for operators and tests.
    pub fn status(&self) -> StoreResult<ReplicationStatus> {
        let (records, tombstones, digest) = self.store.replication_digest()?;
        let media_missing = self.store.missing_media_count()?;
        let (epoch, log_end, stats) = match self.node() {
            Some(node) => node
                .read(|node| (node.durable().log.epoch(), node.durable().log.end_seq(), format!("{:?}", node.stats()))),
            None => (0, 0, String::new()),
        };
        Ok(ReplicationStatus {
            node_id: self.store.node_id().to_string(),
            peer_address: self.peer_address.to_string(),
            records: records - tombstones,
            tombstones,
            digest: format!("{digest:016x}"),
            media_missing,
            epoch,
            log_end,
            stats,
            peers: self.peers(),
        })
    }
}

/// `retire`'s answer.
fn retired_answer(node: &RetiredNode, already_retired: bool, siblings_left: usize) -> PeerRetired {
    PeerRetired {
        node_id: node.node_id.to_string(),
        pin: node.pin.clone(),
        retired_at_ms: node.retired_at_ms,
        retired_by: node.retired_by.to_string(),
        already_retired,
        siblings_left: siblings_left as u64,
    }
}

/// The `retired-siblings` call: a sibling tells which nodes it retired (JSON list of
/// `RetiredNode`); this node retires them too. Only siblings are heard.
struct RetiredAnnouncements(std::sync::Weak<Siblings>);

impl NeighbourHandler for RetiredAnnouncements {
    fn handle(&self, from: NodeId, body: &[u8]) -> std::result::Result<Vec<u8>, Refusal> {
        let Some(service) = self.0.upgrade() else { return Err(Refusal("this node is shutting down".into())) };
        if !service.sibling_ids().contains(&from) {
            return Err(Refusal("only a sibling may announce retired siblings".into()));
        }
        let retired: Vec<RetiredNode> =
            serde_json::from_slice(body).map_err(|error| format!("not a list of retired nodes: {error}"))?;
        if retired.len() > RETIRED_NODES_MAX {
            return Err(Refusal(format!("{} retired nodes; at most {RETIRED_NODES_MAX}", retired.len())));
        }
        if retired.iter().any(|node| node.node_id == service.store.node_id()) {
            tracing::warn!(peer = %from, "a sibling says this node was retired; its siblings will refuse it");
        }
        let runtime = tokio::runtime::Handle::current();
        let added = service.apply_retired(&runtime, &retired).map_err(|error| error.to_string())?;
        if added > 0 {
            tracing::warn!(peer = %from, added, "siblings retired on a sibling; no longer waited for");
        }
        Ok(json!({"added": added}).to_string().into_bytes())
    }
}

/// Tells each of `siblings` about `retired` (best effort: the periodic round repeats).
async fn announce_retired(link: Arc<NeighbourLink>, siblings: Vec<NodeId>, retired: Vec<RetiredNode>) {
    if retired.is_empty() {
        return;
    }
    let body = serde_json::to_vec(&retired).expect("retired nodes serialize");
    let timeout = Duration::from_millis(RETIRED_CALL_TIMEOUT_MS);
    for node in siblings {
        if let Err(error) = link.call(node, SERVICE_RETIRED_SIBLINGS, &body, timeout).await {
            tracing::debug!(%node, %error, "retired siblings not announced to this sibling this round");
        }
    }
}

/// Announces the retired siblings to every sibling every `RETIRED_ANNOUNCE_INTERVAL_MS`,
/// so one that was down or partitioned when a node was retired stops waiting for it.
async fn announce_retired_every_interval(service: std::sync::Weak<Siblings>) {
    loop {
        tokio::time::sleep(Duration::from_millis(RETIRED_ANNOUNCE_INTERVAL_MS)).await;
        let Some(service) = service.upgrade() else { return };
        let link = service.neighbour_link.clone();
        let found = tokio::task::spawn_blocking(move || {
            let retired = read_retired(&service.config.data_dir);
            (service.sibling_ids(), retired)
        })
        .await;
        match found {
            Ok((siblings, Ok(retired))) => announce_retired(link, siblings, retired).await,
            Ok((_, Err(error))) => tracing::error!(%error, "cannot read the retired siblings"),
            Err(_) => return,
        }
    }
}

/// Siblings who joined with our code: persisted, then the driver restarts with them.
async fn watch_paired(service: std::sync::Weak<Siblings>) {
    loop {
        tokio::time::sleep(Duration::from_millis(PAIRED_POLL_MS)).await;
        let Some(service) = service.upgrade() else { return };
        if let Err(error) = service.trust.save_if_changed() {
            tracing::error!(%error, "cannot save the trust ledger");
        }
        if service.trust.take_tier_changed() {
            tracing::info!("a sibling changed trust tier; placing shards with the new weights");
            let placed = match all_siblings(&service.config) {
                Ok(siblings) => service.set_siblings(siblings).await,
                Err(error) => Err(error),
            };
            if let Err(error) = placed {
                tracing::error!(%error, "cannot apply a trust change to placement");
            }
        }
        let joined = match service.running.lock().await.as_ref() {
            Some(running) => running.driver.take_paired(),
            None => return,
        };
        if joined.is_empty() {
            continue;
        }
        let adopt = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Handle::current();
            for info in &joined {
                if let Err(error) = service.adopt(&runtime, info) {
                    tracing::error!(%error, peer = %info.node_id, "cannot adopt a paired sibling");
                }
            }
        });
        let _ = adopt.await;
    }
}

async fn start_driver(
    config: &Config,
    identity: &Identity,
    store: &Arc<Store>,
    listen: SocketAddr,
    sibling_configs: Vec<SiblingConfig>,
    trust: &Arc<TrustBook>,
    neighbours: NeighbourServing,
) -> Result<Running> {
    let siblings = peer_siblings(&sibling_configs, trust);
    let limits = PeerLimits::default();
    let records_arrived = Arc::new(tokio::sync::Notify::new());
    let admitted: Vec<String> =
        siblings.iter().map(|sibling| sibling.pin.clone()).chain(neighbours.pins.keys().cloned()).collect();
    let endpoint = bind_with_retry(identity, listen, &admitted, &limits).await?;
    let peer_address = endpoint.local_addr();
    let replica = ReplicaConfig {
        replicas_wanted: config.peers.replicas.unwrap_or(ReplicaConfig::default().replicas_wanted),
        ..ReplicaConfig::default()
    };
    let opened = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || RedbReplicaStore::open(store))
            .await
            .map_err(|_| ReplicationError::Stopped)?
    };
    let (replica_store, durable) = opened?;
    let fresh = durable.log.epoch() == 0;
    let sibling_count = siblings.len();
    let placement_weights = siblings.iter().map(|sibling| (sibling.node_id, sibling.trust)).collect();
    let driver_config = PeerDriverConfig {
        node_id: store.node_id(),
        zone: config.peers.zone.clone().unwrap_or_else(|| config.name.clone()),
        siblings,
        replica,
        limits,
        advertised_address: peer_address.to_string(),
        media_server: Some(media_server(store.clone())),
        trust: trust.clone(),
        neighbours: Some(neighbours),
        records_arrived: Some(records_arrived.clone()),
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
    let connections = driver.sibling_connections();
    let media_fetcher = MediaFetcher::new(store.clone(), move || connections.current(), MediaFetchLimits::default())
        .with_trust(trust.clone())
        .spawn(records_arrived);
    tracing::info!(peer = %peer_address, siblings = sibling_count, "sibling endpoint ready");
    Ok(Running { driver, media_fetcher, siblings: sibling_configs, placement_weights })
}

/// The siblings as the link sees them, weighted by trust tier.
fn peer_siblings(sibling_configs: &[SiblingConfig], trust: &TrustBook) -> Vec<PeerSibling> {
    sibling_configs
        .iter()
        .filter_map(|sibling| {
            let node_id = node_id_of(sibling)?;
            Some(PeerSibling {
                node_id,
                pin: sibling.pin.clone(),
                address: Some(sibling.address.clone()),
                zone: sibling.zone.clone().unwrap_or_else(|| format!("{node_id}")),
                trust: trust.placement_weight(node_id),
            })
        })
        .collect()
}

/// A node restarted at once may find its port not yet released; give it a moment.
async fn bind_with_retry(
    identity: &Identity,
    listen: SocketAddr,
    admitted_pins: &[String],
    limits: &PeerLimits,
) -> Result<PeerEndpoint> {
    let mut attempt = 0;
    loop {
        match PeerEndpoint::bind(identity, listen, admitted_pins.iter().cloned(), limits) {
            Ok(endpoint) => return Ok(endpoint),
            Err(error) if attempt < 20 => {
                tracing::debug!(%error, "sibling endpoint not bound yet; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

async fn stop(running: Running) {
    let Running { driver, media_fetcher, .. } = running;
    media_fetcher.abort();
    let _ = media_fetcher.await;
    match driver.shutdown().await {
        Ok((replica_store, durable)) => {
            let committed = tokio::task::spawn_blocking(move || replica_store.commit(&durable)).await;
            if !matches!(committed, Ok(Ok(()))) {
                tracing::error!("cannot persist replication state when stopping");
            }
        }
        Err(error) => tracing::warn!(%error, "replication did not stop cleanly"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn sibling(node_id: u64) -> SiblingConfig {
        SiblingConfig {
            address: format!("10.0.0.{node_id}:8444"),
            pin: format!("sha256/pin-{node_id}"),
            node_id: Some(NodeId(node_id).to_string()),
            zone: None,
        }
    }

    fn retired(node_id: u64, by: u64) -> RetiredNode {
        RetiredNode { node_id: NodeId(node_id), pin: None, retired_at_ms: 1_000 + node_id, retired_by: NodeId(by) }
    }

    fn listed(config: &Config) -> Vec<String> {
        all_siblings(config).unwrap().into_iter().filter_map(|sibling| sibling.node_id).collect()
    }

    #[test]
    fn a_retired_node_is_no_sibling_whether_configured_or_paired() {
        let dir = TempDir::new("retired-siblings");
        let mut config = Config { data_dir: dir.path().to_owned(), ..Config::default() };
        config.peers.siblings = vec![sibling(1), sibling(2)];
        let info = |id: u64| SiblingInfo { node_id: NodeId(id), address: sibling(id).address, pin: sibling(id).pin };
        save_paired(dir.path(), &info(3)).unwrap();
        assert_eq!(listed(&config), [NodeId(1), NodeId(2), NodeId(3)].map(|id| id.to_string()));

        // Retired: the configured 1 and the paired 3; this node (9) is never kept.
        let added = save_retired(dir.path(), NodeId(9), &[retired(1, 2), retired(3, 2), retired(9, 2)]).unwrap();
        assert_eq!(added, [retired(1, 2), retired(3, 2)]);
        assert_eq!(listed(&config), [NodeId(2).to_string()]);
        // Announced again (by another sibling, later): nothing new, the first kept.
        assert!(save_retired(dir.path(), NodeId(9), &[retired(1, 5)]).unwrap().is_empty());
        assert_eq!(read_retired(dir.path()).unwrap(), [retired(1, 2), retired(3, 2)]);
        let text = std::fs::read_to_string(dir.path().join(RETIRED_FILE)).unwrap();
        let mode = std::fs::metadata(dir.path().join(RETIRED_FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600, "{text}");
    }

    #[test]
    fn a_broken_retired_file_is_an_error_not_an_empty_list() {
        let dir = TempDir::new("retired-broken");
        std::fs::write(dir.path().join(RETIRED_FILE), "node = 3").unwrap();
        let error = read_retired(dir.path()).unwrap_err();
        assert!(matches!(error, ReplicationError::RetiredFile { .. }), "{error}");
    }
}
