//! The peer transport: a quinn endpoint of its own (`peer_listen`) where siblings
//! speak `edgenode-peer/1` over mutual TLS, and `PeerDriver`, the async shell that
//! runs a sans-IO `ReplicaNode` over it.
//!
//! Why a separate endpoint rather than the HTTP/3 port with another ALPN: rustls
//! decides whether to ask for a client certificate before ALPN is known, so sharing
//! would mean asking every browser for one; and peers want other transport limits
//! (few connections, keep-alive, larger windows) than the public endpoint.
//!
//! One connection per sibling pair, carrying one bidirectional control stream of
//! `wire` frames (the first stream the dialler opens) and short-lived media streams
//! either side opens to fetch a media item's files (`media`). Both sides dial
//! (jittered, capped backoff); when two connections meet, both keep the one dialled
//! by the lower node id (or the newer of two from the same dialler). A frame that
//! does not decode closes the connection with
//! `close_code::BAD_FRAME` and counts against the peer; the endpoint keeps serving.
//! Each connection's send queue is a bounded channel; when it is full, frames for that
//! peer are dropped and counted rather than buffered (the replication protocol
//! resends or re-derives every message). `ReplicaNode` has one outbox for every peer,
//! so "stop polling that peer's outbox" is not possible without a per-peer poll in
//! core; dropping is the next best bound.
//!
//! Peers are identified by the pin of the certificate they presented (the verifier
//! checked it against the sibling list and checked the handshake signature with that
//! key), mapped to a node id by the sibling list; no node id travels unauthenticated.
//!
//! # What is absent (for now)
//!
//! - The sibling list is fixed for the life of a driver (as in `ReplicaNode`): a
//!   sibling learned by pairing is persisted by the caller and takes effect on restart.
//! - The node runs on the driver task; with a redb store each step is a short
//!   transaction on a runtime worker (a `block_in_place` may be wanted then).
//! - Trust scores (bad frames are only counted), metrics export.

mod connections;
mod crypto;
pub mod neighbours;
pub mod pairing;
pub mod streams;
#[cfg(test)]
pub(crate) mod tests;
pub mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use quinn::VarInt;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::core::model::NodeId;
use crate::core::replication::placement::TRUST_MAX;
use crate::core::replication::{
    wire, DurableState, Item, LocalWrite, Message, ReplicaConfig, ReplicaNode, ReplicaStore, Sibling, WriteError,
};
use crate::core::trust::TrustEvent;
use crate::identity::Identity;
pub use connections::ConnectionTable;
pub use pairing::{join_standalone, PairingCode, PairingError, PairingState, SiblingInfo};

/// ALPN of the sibling protocol.
pub const ALPN_PEER: &[u8] = b"edgenode-peer/1";
/// ALPN of pairing: the only protocol a key not on the sibling list may speak.
pub const ALPN_PAIR: &[u8] = b"edgenode-pair/1";

/// QUIC application close codes of the peer endpoint.
pub mod close_code {
    pub const DONE: u32 = 0;
    /// The peer sent a frame that does not decode or is over the size limit.
    pub const BAD_FRAME: u32 = 1;
    /// The key is not a sibling's (only possible while pairing is open).
    pub const UNKNOWN_PEER: u32 = 2;
    /// Another connection between the same two nodes won the tie-break.
    pub const DUPLICATE: u32 = 3;
    pub const SHUTDOWN: u32 = 4;
    /// Another pairing conversation is in progress.
    pub const BUSY: u32 = 5;
    /// Closed on request (`PeerDriver::disconnect`).
    pub const DISCONNECTED: u32 = 6;
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot listen for peers on {address}: {source} — choose another peer_listen address")]
    Listen { address: SocketAddr, source: std::io::Error },
    #[error("cannot configure peer TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot configure the peer endpoint: {0}")]
    Quic(String),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("the peer driver has stopped")]
    Stopped,
}

/// Limits and timings of the peer transport. Units are last in the names.
#[derive(Debug, Clone)]
pub struct PeerLimits {
    /// Frames queued for one connection's writer; past this, frames are dropped.
    pub send_queue_frames_max: usize,
    /// Bytes of frames queued for one connection's writer; past this, frames are
    /// dropped (a catch-up sends many small frames, so the bound is on bytes).
    pub send_queue_bytes_max: usize,
    /// Connection events waiting for the driver; readers wait (QUIC flow control
    /// then slows the sender) when it is full.
    pub events_max: usize,
    pub dial_backoff_initial_ms: u64,
    pub dial_backoff_max_ms: u64,
    pub handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
    /// Incoming connections being served at once (siblings, pairing, strangers).
    pub incoming_connections_max: usize,
    pub stream_receive_window_bytes: u32,
    pub receive_window_bytes: u32,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            send_queue_frames_max: 1024,
            send_queue_bytes_max: 1024 * 1024,
            events_max: 1024,
            dial_backoff_initial_ms: 500,
            // Short enough that siblings find each other soon after a link heals.
            dial_backoff_max_ms: 10_000,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            keep_alive_interval_ms: 5_000,
            incoming_connections_max: 64,
            stream_receive_window_bytes: 4 * 1024 * 1024,
            receive_window_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A paired sibling as the transport sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSibling {
    pub node_id: NodeId,
    pub pin: String,
    /// `host:port` of its peer endpoint; `None` when only it dials us.
    pub address: Option<String>,
    pub zone: String,
    pub trust: u8,
}

#[derive(Clone)]
pub struct PeerDriverConfig {
    pub node_id: NodeId,
    pub zone: String,
    /// The other siblings (not this node).
    pub siblings: Vec<PeerSibling>,
    pub replica: ReplicaConfig,
    pub limits: PeerLimits,
    /// Where siblings reach this node's peer endpoint (told to joiners when pairing);
    /// empty means "where I dial from".
    pub advertised_address: String,
    /// Where media streams are answered from; `None` refuses them.
    pub media_server: Option<streams::StreamServer>,
    /// Where what siblings do is scored (frames, bad frames, wrong keys, timeouts).
    pub trust: Arc<trust::TrustBook>,
    /// Services answered to siblings and neighbours over `edgenode-neighbour/1`.
    pub neighbours: Option<NeighbourServing>,
    /// Notified when records arrive from a sibling (the media fetcher looks for
    /// photos they name at once rather than at its next round).
    pub records_arrived: Option<Arc<tokio::sync::Notify>>,
}

/// Who may call this node's neighbour services: siblings (by their pins) and these.
#[derive(Debug, Clone)]
pub struct NeighbourServing {
    /// Pins of configured neighbours (not siblings) and the node ids they stand for.
    /// The endpoint must admit them too (`PeerEndpoint::bind`).
    pub pins: BTreeMap<String, NodeId>,
    pub services: Arc<neighbours::NeighbourServices>,
    /// Where accepted neighbour connections are kept, so calls back to that node
    /// use them (shared with `NeighbourLink::with_connections`).
    pub connections: ConnectionTable,
}

/// One sibling's connection and counters, for `edgenode peer list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub node_id: NodeId,
    pub pin: String,
    pub address: Option<String>,
    pub connected: bool,
    /// Since the last frame from it; `None` if never.
    pub last_contact_ms_ago: Option<u64>,
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Frames that did not decode (each closed a connection).
    pub bad_frames: u64,
    /// Frames dropped because the connection's send queue was full.
    pub frames_dropped: u64,
    /// UDP payload bytes of the current connection, media streams included.
    pub connection_bytes_sent: u64,
    pub connection_bytes_received: u64,
}

/// Called after every step of the node, before anything it produced is sent and
/// before a local write is acknowledged: where the wiring makes the store and the
/// `DurableState` durable (the driver contract of `ReplicaNode`).
pub type PersistHook<S> = Box<dyn FnMut(&S, &DurableState) + Send>;

/// The replication node, shared by the driver (peer traffic, timers) and by local
/// writers (API threads, through `step`). Every step runs under one lock and ends with
/// the persist hook, so "persist, then send" holds whoever stepped; the driver is
/// woken to send what a local step produced.
pub struct SharedNode<S: ReplicaStore> {
    inner: Mutex<NodeSlot<S>>,
    transmit: tokio::sync::Notify,
}

struct NodeSlot<S: ReplicaStore> {
    node: ReplicaNode<S>,
    persist: Option<PersistHook<S>>,
}

impl<S: ReplicaStore> SharedNode<S> {
    pub fn new(node: ReplicaNode<S>, persist: Option<PersistHook<S>>) -> SharedNode<S> {
        SharedNode { inner: Mutex::new(NodeSlot { node, persist }), transmit: tokio::sync::Notify::new() }
    }

    /// Runs one step of the node, then the persist hook; wakes the driver to send.
    pub fn step<R>(&self, step: impl FnOnce(&mut ReplicaNode<S>) -> R) -> R {
        let result = self.step_and_persist(step);
        self.transmit.notify_one();
        result
    }

    fn step_and_persist<R>(&self, step: impl FnOnce(&mut ReplicaNode<S>) -> R) -> R {
        let mut slot = lock(&self.inner);
        let result = step(&mut slot.node);
        let NodeSlot { node, persist } = &mut *slot;
        if let Some(persist) = persist {
            persist(node.store(), node.durable());
        }
        result
    }

    /// Reads the node between steps (nothing to persist).
    pub fn read<R>(&self, read: impl FnOnce(&ReplicaNode<S>) -> R) -> R {
        read(&lock(&self.inner).node)
    }

    /// Persists, then takes every message the node wants sent.
    fn take_outgoing(&self) -> Vec<(NodeId, Message)> {
        self.step_and_persist(|node| std::iter::from_fn(|| node.poll_transmit()).collect())
    }

    fn into_node(self) -> ReplicaNode<S> {
        self.inner.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).node
    }
}

use crate::locking::{lock, write};

fn close(connection: &quinn::Connection, code: u32, reason: &[u8]) {
    connection.close(VarInt::from_u32(code), reason);
}

/// The bound peer endpoint, before its driver starts (so tests and the wiring can
/// learn the port first).
pub struct PeerEndpoint {
    endpoint: quinn::Endpoint,
    identity: Identity,
    pairing: Arc<Mutex<PairingState>>,
    transport: Arc<quinn::TransportConfig>,
    /// The pins the TLS layer admits, read at each handshake.
    admitted: Arc<RwLock<BTreeSet<String>>>,
}

impl PeerEndpoint {
    /// Binds UDP `listen`; the TLS layer admits exactly the keys in `sibling_pins`
    /// (and, while a pairing code is outstanding, others for pairing only).
    pub fn bind(
        identity: &Identity,
        listen: SocketAddr,
        sibling_pins: impl IntoIterator<Item = String>,
        limits: &PeerLimits,
    ) -> Result<PeerEndpoint, PeerError> {
        let transport = Arc::new(transport_config(limits)?);
        let pairing = Arc::new(Mutex::new(PairingState::default()));
        let admitted = Arc::new(RwLock::new(sibling_pins.into_iter().collect()));
        let server_config = crypto::server_config(identity, admitted.clone(), pairing.clone(), transport.clone())?;
        let listen_error = |source| PeerError::Listen { address: listen, source };
        let socket = std::net::UdpSocket::bind(listen).map_err(listen_error)?;
        enlarge_socket_buffers(&socket);
        let endpoint = quinn::Endpoint::new(
            identity.quic_endpoint_config(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(listen_error)?;
        Ok(PeerEndpoint { endpoint, identity: identity.clone(), pairing, transport, admitted })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("a bound endpoint has an address")
    }
}

/// Socket buffers for a sibling's full speed: with the kernel's default receive
/// buffer (208 KiB) a burst of a catch-up overflows it, and QUIC backs off on the
/// losses (a cold catch-up stalled for seconds).
const PEER_SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

fn enlarge_socket_buffers(socket: &std::net::UdpSocket) {
    if let Err(error) = crate::os::enlarge_udp_buffers(socket, PEER_SOCKET_BUFFER_BYTES) {
        tracing::debug!(%error, "cannot enlarge the peer socket's buffers; keeping the kernel's");
    }
}

fn transport_config(limits: &PeerLimits) -> Result<quinn::TransportConfig, PeerError> {
    let idle_timeout = quinn::IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
        .map_err(|_| PeerError::Quic(format!("idle_timeout_ms = {} is too large", limits.idle_timeout_ms)))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        // The control stream, plus media streams and calls (each served a few at once
        // per connection; the rest wait within this limit).
        .max_concurrent_bidi_streams(VarInt::from_u32(2 + 32))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(limits.stream_receive_window_bytes))
        .receive_window(VarInt::from_u32(limits.receive_window_bytes))
        .max_idle_timeout(Some(idle_timeout))
        .keep_alive_interval(Some(Duration::from_millis(limits.keep_alive_interval_ms)))
        .datagram_receive_buffer_size(None);
    Ok(transport)
}

/// What connection tasks share; not generic over the store.
#[derive(Clone)]
struct Shared {
    endpoint: quinn::Endpoint,
    identity: Identity,
    node_id: NodeId,
    advertised_address: String,
    /// Siblings by pin; replaced by `set_siblings`.
    pin_to_node: Arc<RwLock<BTreeMap<String, NodeId>>>,
    admitted: Arc<RwLock<BTreeSet<String>>>,
    events: mpsc::Sender<NetEvent>,
    limits: PeerLimits,
    frame_bytes_max: usize,
    pairing: Arc<Mutex<PairingState>>,
    pairing_busy: Arc<Semaphore>,
    incoming_slots: Arc<Semaphore>,
    transport: Arc<quinn::TransportConfig>,
    media_server: Option<streams::StreamServer>,
    connections: ConnectionTable,
    trust: Arc<trust::TrustBook>,
    neighbours: Option<NeighbourServing>,
    records_arrived: Option<Arc<tokio::sync::Notify>>,
    /// A connection's writer made room in its queue: frames waiting can move.
    drained: Arc<tokio::sync::Notify>,
}

impl Shared {
    fn sibling_of(&self, pin: &str) -> Option<NodeId> {
        crate::locking::read(&self.pin_to_node).get(pin).copied()
    }
}

enum NetEvent {
    Connected { node_id: NodeId, connection_id: u64, dialer: NodeId, connection: quinn::Connection, frames: FrameQueue },
    DialFailed { node_id: NodeId },
    Frame { node_id: NodeId, connection_id: u64, message: Message, frame_bytes: usize },
    BadFrame { node_id: NodeId },
    Closed { node_id: NodeId, connection_id: u64 },
}

enum Command<S> {
    LocalWrite { write: LocalWrite, reply: oneshot::Sender<Result<Item, WriteError>> },
    PeerStates { reply: oneshot::Sender<Vec<PeerState>> },
    ReadStore { read: Box<dyn FnOnce(&S) + Send> },
    Disconnect { node_id: NodeId, reply: oneshot::Sender<bool> },
    SetSiblings { siblings: Vec<PeerSibling>, reply: oneshot::Sender<()> },
    Shutdown,
}

/// Runs a `ReplicaNode<S>` over the peer endpoint on one task. Dropping it (or
/// `shutdown`) stops the node and closes every connection.
pub struct PeerDriver<S: ReplicaStore> {
    commands: mpsc::Sender<Command<S>>,
    task: JoinHandle<Option<(S, DurableState)>>,
    shared: Shared,
    local_addr: SocketAddr,
    node: Arc<SharedNode<S>>,
}

impl<S: ReplicaStore + Send + 'static> PeerDriver<S> {
    /// Starts the node from its durable parts and starts serving and dialling.
    pub fn start(
        endpoint: PeerEndpoint,
        config: PeerDriverConfig,
        store: S,
        durable: DurableState,
        persist: Option<PersistHook<S>>,
    ) -> PeerDriver<S> {
        let now = crate::os::now_ms();
        let mut siblings: Vec<Sibling> = config
            .siblings
            .iter()
            .map(|sibling| Sibling { id: sibling.node_id, zone: sibling.zone.clone(), trust: sibling.trust })
            .collect();
        siblings.push(Sibling { id: config.node_id, zone: config.zone.clone(), trust: TRUST_MAX });
        let frame_bytes_max = config.replica.frame_bytes_max;
        let node = ReplicaNode::new(config.node_id, config.replica.clone(), siblings, store, durable, now);
        let node = Arc::new(SharedNode::new(node, persist));
        let (event_sender, event_receiver) = mpsc::channel(config.limits.events_max);
        let (command_sender, command_receiver) = mpsc::channel(64);
        let local_addr = endpoint.local_addr();
        let shared = Shared {
            endpoint: endpoint.endpoint,
            identity: endpoint.identity,
            node_id: config.node_id,
            advertised_address: config.advertised_address.clone(),
            pin_to_node: Arc::new(RwLock::new(
                config.siblings.iter().map(|sibling| (sibling.pin.clone(), sibling.node_id)).collect(),
            )),
            admitted: endpoint.admitted,
            events: event_sender,
            limits: config.limits.clone(),
            frame_bytes_max,
            pairing: endpoint.pairing,
            pairing_busy: Arc::new(Semaphore::new(1)),
            incoming_slots: Arc::new(Semaphore::new(config.limits.incoming_connections_max)),
            transport: endpoint.transport,
            media_server: config.media_server.clone(),
            connections: ConnectionTable::default(),
            trust: config.trust.clone(),
            neighbours: config.neighbours.clone(),
            records_arrived: config.records_arrived.clone(),
            drained: Arc::new(tokio::sync::Notify::new()),
        };
        let peers = config.siblings.iter().map(|sibling| (sibling.node_id, PeerEntry::new(sibling.clone()))).collect();
        let state = DriverState {
            node: node.clone(),
            peers,
            zone: config.zone.clone(),
            shared: shared.clone(),
            dials: JoinSet::new(),
        };
        let accept_task = tokio::spawn(accept_loop(shared.clone()));
        let span = tracing::info_span!("peer_driver", node_id = %config.node_id);
        let task = tokio::spawn(run(state, command_receiver, event_receiver, accept_task).instrument(span));
        PeerDriver { commands: command_sender, task, shared, local_addr, node }
    }

    /// A handle for asking the running driver about its peers.
    pub fn handle(&self) -> PeerHandle<S> {
        PeerHandle { commands: self.commands.clone() }
    }

    /// The node, for local writers (`SharedNode::step`).
    pub fn node(&self) -> &Arc<SharedNode<S>> {
        &self.node
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn pin(&self) -> &str {
        &self.shared.identity.pin
    }

    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// The open connection to each connected sibling, in node id order.
    pub fn connections(&self) -> Vec<(NodeId, quinn::Connection)> {
        self.shared.connections.current()
    }

    /// A live view of `connections`, for tasks that outlive a borrow of the driver
    /// (the media fetcher's source of connections).
    pub fn sibling_connections(&self) -> ConnectionTable {
        self.shared.connections.clone()
    }

    /// Applies a client's write on this node; returns once it is applied (and passed
    /// to the persist hook), before siblings have it.
    pub async fn handle_local_write(&self, write: LocalWrite) -> Result<Item, PeerError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::LocalWrite { write, reply }).await?;
        Ok(answer.await.map_err(|_| PeerError::Stopped)??)
    }

    /// Every sibling's connection state and counters, in node id order.
    pub async fn peer_states(&self) -> Result<Vec<PeerState>, PeerError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::PeerStates { reply }).await?;
        answer.await.map_err(|_| PeerError::Stopped)
    }

    /// Runs `read` on the node's store, between two steps of the node.
    pub async fn read_store<R: Send + 'static>(
        &self,
        read: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, PeerError> {
        let (reply, answer) = oneshot::channel();
        let read = Box::new(move |store: &S| {
            let _ = reply.send(read(store));
        });
        self.send(Command::ReadStore { read }).await?;
        answer.await.map_err(|_| PeerError::Stopped)
    }

    /// Closes the connection to `node_id` (it is redialled with backoff); false when
    /// there was none.
    pub async fn disconnect(&self, node_id: NodeId) -> Result<bool, PeerError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Disconnect { node_id, reply }).await?;
        answer.await.map_err(|_| PeerError::Stopped)
    }

    /// Replaces the sibling list without a restart (see `DriverState::set_siblings`).
    pub async fn set_siblings(&self, siblings: Vec<PeerSibling>) -> Result<(), PeerError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::SetSiblings { siblings, reply }).await?;
        answer.await.map_err(|_| PeerError::Stopped)
    }

    /// The peer endpoint, for other node-to-node traffic (`neighbours::NeighbourLink`):
    /// one UDP socket for all of it.
    pub fn endpoint(&self) -> quinn::Endpoint {
        self.shared.endpoint.clone()
    }

    /// Makes a one-time pairing code (see `pairing`), replacing any outstanding one.
    pub fn start_pairing(&self) -> PairingCode {
        lock(&self.shared.pairing).start_pairing(crate::os::now_ms(), crate::os::random_bytes::<8>())
    }

    /// Siblings that joined with a code of ours since the last call.
    pub fn take_paired(&self) -> Vec<SiblingInfo> {
        lock(&self.shared.pairing).take_paired()
    }

    /// Joins the node at `address` with the code it showed.
    pub async fn join(&self, address: &str, code: &str) -> Result<SiblingInfo, PairingError> {
        pairing::join(&self.shared, address, code).await
    }

    /// Stops the node and the endpoint; returns the durable parts for a restart.
    /// Fails with `Stopped` while another holder of `node()` remains.
    pub async fn shutdown(self) -> Result<(S, DurableState), PeerError> {
        let PeerDriver { commands, task, node, .. } = self;
        drop(node);
        let _ = commands.send(Command::Shutdown).await;
        task.await.map_err(|_| PeerError::Stopped)?.ok_or(PeerError::Stopped)
    }

    async fn send(&self, command: Command<S>) -> Result<(), PeerError> {
        self.commands.send(command).await.map_err(|_| PeerError::Stopped)
    }
}

/// A cloneable handle on a running `PeerDriver`.
pub struct PeerHandle<S: ReplicaStore> {
    commands: mpsc::Sender<Command<S>>,
}

impl<S: ReplicaStore> PeerHandle<S> {
    /// Every sibling's connection state and counters, in node id order.
    pub async fn peer_states(&self) -> Result<Vec<PeerState>, PeerError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::PeerStates { reply }).await.map_err(|_| PeerError::Stopped)?;
        answer.await.map_err(|_| PeerError::Stopped)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    bad_frames: u64,
    frames_dropped: u64,
}

struct LiveConnection {
    connection_id: u64,
    dialer: NodeId,
    established: Instant,
    connection: quinn::Connection,
    frames: FrameQueue,
    /// Frames waiting for room in `frames`, in order (a burst, e.g. a log window,
    /// is larger than the queue); bounded by `send_queue_bytes_max` too, past which
    /// frames are dropped. Retried whenever a writer drains (`Shared::drained`).
    waiting: std::collections::VecDeque<Bytes>,
    waiting_bytes: usize,
}

/// A connection's outgoing frames, bounded in count and in bytes; the writer task
/// takes them off and gives the bytes back as it writes.
#[derive(Clone)]
struct FrameQueue {
    frames: mpsc::Sender<Bytes>,
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
    bytes_max: usize,
}

enum QueueRefused {
    Full,
    Closed,
}

impl FrameQueue {
    fn new(limits: &PeerLimits) -> (FrameQueue, mpsc::Receiver<Bytes>, Arc<std::sync::atomic::AtomicUsize>) {
        let (frames, queued) = mpsc::channel(limits.send_queue_frames_max.max(1));
        let queued_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let queue = FrameQueue { frames, queued_bytes: queued_bytes.clone(), bytes_max: limits.send_queue_bytes_max };
        (queue, queued, queued_bytes)
    }

    fn try_push(&self, frame: Bytes) -> Result<(), QueueRefused> {
        use std::sync::atomic::Ordering::Relaxed;
        let frame_bytes = frame.len();
        if self.queued_bytes.load(Relaxed).saturating_add(frame_bytes) > self.bytes_max {
            return Err(QueueRefused::Full);
        }
        match self.frames.try_send(frame) {
            Ok(()) => {
                self.queued_bytes.fetch_add(frame_bytes, Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(QueueRefused::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(QueueRefused::Closed),
        }
    }
}

struct PeerEntry {
    sibling: PeerSibling,
    current: Option<LiveConnection>,
    dialing: bool,
    /// Abandons the dial in progress while it is still handshaking (a connection
    /// from the sibling arrived first).
    dial_cancel: Option<oneshot::Sender<()>>,
    dial_attempts: u32,
    next_dial_at: Instant,
    last_contact: Option<Instant>,
    counters: Counters,
}

impl PeerEntry {
    fn new(sibling: PeerSibling) -> PeerEntry {
        PeerEntry {
            sibling,
            current: None,
            dialing: false,
            dial_cancel: None,
            dial_attempts: 0,
            next_dial_at: Instant::now(),
            last_contact: None,
            counters: Counters::default(),
        }
    }
}

struct DriverState<S: ReplicaStore> {
    node: Arc<SharedNode<S>>,
    peers: BTreeMap<NodeId, PeerEntry>,
    /// This node's placement zone.
    zone: String,
    shared: Shared,
    dials: JoinSet<()>,
}

async fn run<S: ReplicaStore>(
    mut state: DriverState<S>,
    mut commands: mpsc::Receiver<Command<S>>,
    mut events: mpsc::Receiver<NetEvent>,
    accept_task: JoinHandle<()>,
) -> Option<(S, DurableState)> {
    loop {
        state.start_due_dials();
        let wake_at = state.wake_at();
        tokio::select! {
            command = commands.recv() => match command {
                None | Some(Command::Shutdown) => break,
                Some(command) => state.on_command(command),
            },
            Some(event) = events.recv() => state.on_event(event),
            () = tokio::time::sleep_until(wake_at) => state.on_wake(),
            Some(_) = state.dials.join_next(), if !state.dials.is_empty() => {}
            () = state.node.transmit.notified() => {}
            () = state.shared.drained.notified() => {}
        }
        state.flush();
    }
    let endpoint = state.shared.endpoint.clone();
    endpoint.close(VarInt::from_u32(close_code::SHUTDOWN), b"node shutting down");
    accept_task.abort();
    let _ = accept_task.await;
    state.dials.shutdown().await;
    // Tell siblings we are going, so they redial at once rather than at idle timeout.
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    let node = Arc::try_unwrap(state.node).ok()?;
    Some(node.into_node().into_parts())
}

/// A delay in `[delay/2, delay]`, so siblings that lost each other at once do not
/// redial in lockstep.
pub(crate) fn jittered(delay_ms: u64) -> Duration {
    let random = u64::from_le_bytes(crate::os::random_bytes::<8>());
    let half = delay_ms / 2;
    Duration::from_millis(half + random % (delay_ms - half + 1))
}

/// `initial_ms` doubled per earlier failure, at most `max_ms`, at least 1.
pub(crate) fn backoff_ms(initial_ms: u64, max_ms: u64, failures: u32) -> u64 {
    initial_ms.saturating_mul(1 << failures.min(20)).min(max_ms).max(1)
}

impl<S: ReplicaStore> DriverState<S> {
    fn node_timeout_at(&self) -> Option<Instant> {
        let timeout_ms = self.node.read(ReplicaNode::poll_timeout)?;
        let now_ms = crate::os::now_ms();
        Some(Instant::now() + Duration::from_millis(timeout_ms.saturating_sub(now_ms)))
    }

    fn wake_at(&self) -> Instant {
        let mut wake_at = self.node_timeout_at().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        for entry in self.peers.values() {
            if entry.current.is_none() && !entry.dialing && entry.sibling.address.is_some() {
                wake_at = wake_at.min(entry.next_dial_at);
            }
        }
        wake_at
    }

    fn on_wake(&mut self) {
        if self.node_timeout_at().is_some_and(|at| at <= Instant::now()) {
            self.node.step_and_persist(|node| node.handle_timeout(crate::os::now_ms()));
        }
    }

    fn start_due_dials(&mut self) {
        let now = Instant::now();
        for entry in self.peers.values_mut() {
            let Some(address) = &entry.sibling.address else { continue };
            if entry.current.is_some() || entry.dialing || entry.next_dial_at > now {
                continue;
            }
            entry.dialing = true;
            let (cancel, cancelled) = oneshot::channel();
            entry.dial_cancel = Some(cancel);
            let shared = self.shared.clone();
            let span = tracing::info_span!("peer", peer = %entry.sibling.node_id, %address);
            let dial = dial(shared, entry.sibling.node_id, entry.sibling.pin.clone(), address.clone(), cancelled);
            self.dials.spawn(dial.instrument(span));
        }
    }

    fn on_command(&mut self, command: Command<S>) {
        let now = crate::os::now_ms();
        match command {
            Command::LocalWrite { write, reply } => {
                let result = self.node.step_and_persist(|node| node.handle_local_write(now, write));
                let _ = reply.send(result);
            }
            Command::PeerStates { reply } => {
                let _ = reply.send(self.peer_states());
            }
            Command::ReadStore { read } => self.node.read(|node| read(node.store())),
            Command::Disconnect { node_id, reply } => {
                let closed = match self.peers.get_mut(&node_id).and_then(|entry| entry.current.take()) {
                    Some(live) => {
                        close(&live.connection, close_code::DISCONNECTED, b"disconnected on request");
                        self.node.step_and_persist(|node| node.handle_disconnected(now, node_id));
                        self.schedule_redial(node_id);
                        true
                    }
                    None => false,
                };
                let _ = reply.send(closed);
            }
            Command::SetSiblings { siblings, reply } => {
                self.set_siblings(siblings);
                let _ = reply.send(());
            }
            Command::Shutdown => unreachable!("handled by the loop"),
        }
    }

    fn peer_states(&self) -> Vec<PeerState> {
        let now = Instant::now();
        self.peers
            .values()
            .map(|entry| PeerState {
                node_id: entry.sibling.node_id,
                pin: entry.sibling.pin.clone(),
                address: entry.sibling.address.clone(),
                connected: entry.current.is_some(),
                last_contact_ms_ago: entry.last_contact.map(|at| now.duration_since(at).as_millis() as u64),
                frames_in: entry.counters.frames_in,
                frames_out: entry.counters.frames_out,
                bytes_in: entry.counters.bytes_in,
                bytes_out: entry.counters.bytes_out,
                bad_frames: entry.counters.bad_frames,
                frames_dropped: entry.counters.frames_dropped,
                connection_bytes_sent: entry.current.as_ref().map_or(0, |live| live.connection.stats().udp_tx.bytes),
                connection_bytes_received: entry
                    .current
                    .as_ref()
                    .map_or(0, |live| live.connection.stats().udp_rx.bytes),
            })
            .collect()
    }

    /// A new sibling list (pairing, a trust tier change): the endpoint admits the
    /// new pins, siblings that left are disconnected, new ones dialled, and the node
    /// places shards afresh; connections to siblings that stay are kept.
    fn set_siblings(&mut self, siblings: Vec<PeerSibling>) {
        let now = crate::os::now_ms();
        let neighbour_pins: Vec<String> =
            self.shared.neighbours.as_ref().map(|serving| serving.pins.keys().cloned().collect()).unwrap_or_default();
        *write(&self.shared.admitted) =
            siblings.iter().map(|sibling| sibling.pin.clone()).chain(neighbour_pins).collect();
        *write(&self.shared.pin_to_node) =
            siblings.iter().map(|sibling| (sibling.pin.clone(), sibling.node_id)).collect();
        let listed = |node_id: NodeId| siblings.iter().any(|sibling| sibling.node_id == node_id);
        let gone: Vec<NodeId> = self.peers.keys().copied().filter(|node_id| !listed(*node_id)).collect();
        for node_id in gone {
            let Some(entry) = self.peers.remove(&node_id) else { continue };
            if let Some(live) = entry.current {
                close(&live.connection, close_code::UNKNOWN_PEER, b"no longer a sibling");
                self.shared.connections.closed(node_id, live.connection_id);
            }
        }
        for sibling in &siblings {
            match self.peers.get_mut(&sibling.node_id) {
                Some(entry) => entry.sibling = sibling.clone(),
                None => {
                    self.peers.insert(sibling.node_id, PeerEntry::new(sibling.clone()));
                }
            }
        }
        let mut placed: Vec<Sibling> = siblings
            .iter()
            .map(|sibling| Sibling { id: sibling.node_id, zone: sibling.zone.clone(), trust: sibling.trust })
            .collect();
        placed.push(Sibling { id: self.shared.node_id, zone: self.zone.clone(), trust: TRUST_MAX });
        let connected: Vec<NodeId> =
            self.peers.iter().filter(|(_, entry)| entry.current.is_some()).map(|(node_id, _)| *node_id).collect();
        self.node.step_and_persist(|node| {
            node.set_siblings(placed);
            for node_id in connected {
                node.handle_connected(now, node_id);
            }
        });
    }

    fn schedule_redial(&mut self, node_id: NodeId) {
        let limits = &self.shared.limits;
        let Some(entry) = self.peers.get_mut(&node_id) else { return };
        let delay_ms = backoff_ms(limits.dial_backoff_initial_ms, limits.dial_backoff_max_ms, entry.dial_attempts);
        entry.dial_attempts = entry.dial_attempts.saturating_add(1);
        entry.next_dial_at = Instant::now() + jittered(delay_ms);
    }

    fn on_event(&mut self, event: NetEvent) {
        let now = crate::os::now_ms();
        let own_id = self.shared.node_id;
        match event {
            NetEvent::Connected { node_id, connection_id, dialer, connection, frames } => {
                let Some(entry) = self.peers.get_mut(&node_id) else {
                    close(&connection, close_code::UNKNOWN_PEER, b"not a sibling");
                    return;
                };
                if dialer == own_id {
                    entry.dialing = false;
                    entry.dial_cancel = None;
                } else if let Some(cancel) = entry.dial_cancel.take() {
                    // The sibling's connection came first: a dial of ours that
                    // completed later would win the tie-break and replace it, losing
                    // every stream in flight on it (a cold catch-up stalled 2 s so).
                    let _ = cancel.send(());
                    entry.dialing = false;
                }
                // Two siblings that dial each other at once keep the connection the
                // lower id dialed. A connection that arrives later than any handshake
                // racing ours could, though, was dialed by a peer that has lost ours
                // (it restarted, or its side timed out): it replaces ours, which may
                // be dead without our knowing yet.
                let preferred_dialer = own_id.min(node_id);
                let race_window = Duration::from_millis(self.shared.limits.handshake_timeout_ms);
                if let Some(current) = &entry.current {
                    let current_alive = current.connection.close_reason().is_none();
                    let racing = current.established.elapsed() < race_window;
                    if current_alive && racing && current.dialer == preferred_dialer && dialer != preferred_dialer {
                        tracing::debug!(peer = %node_id, "closing a duplicate connection");
                        close(&connection, close_code::DUPLICATE, b"duplicate connection");
                        return;
                    }
                    close(&current.connection, close_code::DUPLICATE, b"replaced by a newer connection");
                    entry.current = None;
                    self.node.step_and_persist(|node| node.handle_disconnected(now, node_id));
                }
                let entry = self.peers.get_mut(&node_id).expect("looked up above");
                tracing::info!(peer = %node_id, remote = %connection.remote_address(), "sibling connected");
                self.shared.connections.connected(node_id, connection_id, &connection);
                entry.current = Some(LiveConnection {
                    connection_id,
                    dialer,
                    established: Instant::now(),
                    connection,
                    frames,
                    waiting: std::collections::VecDeque::new(),
                    waiting_bytes: 0,
                });
                entry.dial_attempts = 0;
                entry.last_contact = Some(Instant::now());
                self.node.step_and_persist(|node| node.handle_connected(now, node_id));
            }
            NetEvent::DialFailed { node_id } => {
                if let Some(entry) = self.peers.get_mut(&node_id) {
                    entry.dialing = false;
                    entry.dial_cancel = None;
                }
                self.schedule_redial(node_id);
            }
            NetEvent::Frame { node_id, connection_id, message, frame_bytes } => {
                let Some(entry) = self.peers.get_mut(&node_id) else { return };
                if entry.current.as_ref().is_none_or(|live| live.connection_id != connection_id) {
                    return; // from a connection that lost the tie-break or was replaced
                }
                entry.counters.frames_in += 1;
                entry.counters.bytes_in += frame_bytes as u64;
                entry.last_contact = Some(Instant::now());
                let carries_records = matches!(message, Message::LogBatch(_) | Message::Items(_));
                self.node.step_and_persist(|node| node.handle_message(now, node_id, message));
                if carries_records {
                    if let Some(records_arrived) = &self.shared.records_arrived {
                        records_arrived.notify_one();
                    }
                }
                self.shared.trust.observe(node_id, TrustEvent::Verified, "a frame decoded and applied");
            }
            NetEvent::BadFrame { node_id } => {
                if let Some(entry) = self.peers.get_mut(&node_id) {
                    entry.counters.bad_frames += 1;
                }
            }
            NetEvent::Closed { node_id, connection_id } => {
                self.shared.connections.closed(node_id, connection_id);
                let Some(entry) = self.peers.get_mut(&node_id) else { return };
                if entry.current.as_ref().is_some_and(|live| live.connection_id == connection_id) {
                    entry.current = None;
                    tracing::info!(peer = %node_id, "sibling disconnected");
                    self.node.step_and_persist(|node| node.handle_disconnected(now, node_id));
                    self.schedule_redial(node_id);
                }
            }
        }
    }

    /// Persist, then send whatever the node wants sent: first what waits for room,
    /// then the new frames, in order per peer.
    fn flush(&mut self) {
        for entry in self.peers.values_mut() {
            if let Some(live) = &mut entry.current {
                push_waiting(live, &mut entry.counters);
            }
        }
        let waiting_bytes_max = self.shared.limits.send_queue_bytes_max;
        for (to, message) in self.node.take_outgoing() {
            let Some(entry) = self.peers.get_mut(&to) else { continue };
            let Some(live) = &mut entry.current else { continue };
            let frame = match wire::encode(&message, self.shared.frame_bytes_max) {
                Ok(frame) => Bytes::from(frame),
                Err(error) => {
                    tracing::error!(peer = %to, %error, "replication produced a frame over the limit; dropped");
                    continue;
                }
            };
            if live.waiting_bytes + frame.len() > waiting_bytes_max {
                entry.counters.frames_dropped += 1;
                tracing::debug!(peer = %to, "send queue full; frame dropped (it will be resent)");
                continue;
            }
            live.waiting_bytes += frame.len();
            live.waiting.push_back(frame);
            push_waiting(live, &mut entry.counters);
        }
    }
}

/// Moves waiting frames into the connection's queue while it has room.
fn push_waiting(live: &mut LiveConnection, counters: &mut Counters) {
    while let Some(frame) = live.waiting.front() {
        let frame_bytes = frame.len();
        match live.frames.try_push(frame.clone()) {
            Ok(()) => {
                live.waiting.pop_front();
                live.waiting_bytes -= frame_bytes;
                counters.frames_out += 1;
                counters.bytes_out += frame_bytes as u64;
            }
            Err(QueueRefused::Full) => return,
            Err(QueueRefused::Closed) => {
                live.waiting.clear();
                live.waiting_bytes = 0;
                return;
            }
        }
    }
}

async fn accept_loop(shared: Shared) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = shared.endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let remote = incoming.remote_address();
                let Ok(slot) = shared.incoming_slots.clone().try_acquire_owned() else {
                    tracing::debug!(%remote, "too many incoming peer connections; refusing");
                    incoming.refuse();
                    continue;
                };
                let span = tracing::info_span!("peer_incoming", %remote);
                let shared = shared.clone();
                connections.spawn(
                    async move {
                        let _slot = slot;
                        accept_connection(shared, incoming).await;
                    }
                    .instrument(span),
                );
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn accept_connection(shared: Shared, incoming: quinn::Incoming) {
    let handshake_timeout = Duration::from_millis(shared.limits.handshake_timeout_ms);
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            tracing::debug!(%error, "peer connection attempt failed");
            return;
        }
    };
    let connection = match tokio::time::timeout(handshake_timeout, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            // Unpaired keys end here: the TLS verifier refused them.
            tracing::debug!(%error, "peer handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("peer handshake timed out");
            return;
        }
    };
    match crypto::negotiated_alpn(&connection).as_deref() {
        Some(ALPN_PAIR) => {
            pairing::serve(shared, connection).await;
            return;
        }
        Some(neighbours::ALPN_NEIGHBOUR) => {
            let pin = crypto::remote_pin(&connection);
            let caller = pin.as_ref().and_then(|pin| {
                let neighbour = shared.neighbours.as_ref().and_then(|serving| serving.pins.get(pin));
                shared.sibling_of(pin).or(neighbour.copied())
            });
            match (caller, &shared.neighbours) {
                (Some(caller), Some(serving)) => {
                    let connection_id = connections::next_connection_id();
                    serving.connections.connected(caller, connection_id, &connection);
                    neighbours::serve(connection, caller, serving.services.clone()).await;
                    serving.connections.closed(caller, connection_id);
                }
                _ => close(&connection, close_code::UNKNOWN_PEER, b"not a neighbour"),
            }
            return;
        }
        _ => {}
    }
    let node_id = crypto::remote_pin(&connection).and_then(|pin| shared.sibling_of(&pin));
    let Some(node_id) = node_id else {
        // Only reachable while pairing admits unpinned keys at the TLS layer.
        tracing::info!("a key that is not a sibling's asked for the sibling protocol; closing");
        close(&connection, close_code::UNKNOWN_PEER, b"not a sibling; pair first");
        return;
    };
    let span = tracing::info_span!("peer", peer = %node_id);
    async move {
        match tokio::time::timeout(handshake_timeout, connection.accept_bi()).await {
            Ok(Ok((send, recv))) => run_connection(shared, connection, node_id, node_id, send, recv).await,
            Ok(Err(error)) => tracing::debug!(%error, "sibling closed before opening its control stream"),
            Err(_) => {
                tracing::debug!("sibling did not open its control stream in time");
                close(&connection, close_code::DONE, b"no control stream");
            }
        }
    }
    .instrument(span)
    .await;
}

async fn dial(shared: Shared, node_id: NodeId, pin: String, address: String, cancelled: oneshot::Receiver<()>) {
    let handshake_timeout = Duration::from_millis(shared.limits.handshake_timeout_ms);
    let attempt = async {
        let socket_address = tokio::net::lookup_host(&address)
            .await
            .map_err(|error| error.to_string())?
            .next()
            .ok_or_else(|| "the name has no address".to_owned())?;
        let config = crypto::client_config(&shared.identity, Some(&pin), ALPN_PEER, shared.transport.clone())
            .map_err(|error| error.to_string())?;
        let connecting =
            shared.endpoint.connect_with(config, socket_address, "edgenode").map_err(|error| error.to_string())?;
        let connection = tokio::time::timeout(handshake_timeout, connecting)
            .await
            .map_err(|_| {
                shared.trust.observe(node_id, TrustEvent::Timeout, "the handshake timed out");
                "handshake timed out".to_owned()
            })?
            .map_err(|error| {
                observe_handshake_failure(&shared.trust, node_id, &address, &error);
                error.to_string()
            })?;
        let (send, recv) = connection.open_bi().await.map_err(|error| error.to_string())?;
        Ok::<_, String>((connection, send, recv))
    };
    let attempt = tokio::select! {
        attempt = attempt => attempt,
        _ = cancelled => {
            tracing::debug!("the sibling connected first; dial abandoned");
            return;
        }
    };
    match attempt {
        Ok((connection, send, recv)) => {
            let own_id = shared.node_id;
            run_connection(shared, connection, node_id, own_id, send, recv).await;
        }
        Err(reason) => {
            tracing::debug!(%reason, "cannot reach sibling");
            let _ = shared.events.send(NetEvent::DialFailed { node_id }).await;
        }
    }
}

/// A failed handshake with a sibling counts against it when its address answered
/// with another key (our verifier refused the certificate) or did not answer in time.
/// The sibling refusing *our* key is not its misbehaviour (it may have unpaired us).
fn observe_handshake_failure(trust: &trust::TrustBook, node_id: NodeId, address: &str, error: &quinn::ConnectionError) {
    match error {
        quinn::ConnectionError::TransportError(transport) if transport.to_string().contains("certificate") => {
            let detail = format!("{address} answered with a key that is not the sibling's pin");
            trust.observe(node_id, TrustEvent::RefusedPin, &detail);
        }
        quinn::ConnectionError::TimedOut => trust.observe(node_id, TrustEvent::Timeout, "the handshake timed out"),
        _ => {}
    }
}

/// Why a connection's reader stopped.
enum ReadEnd {
    BadFrame(String),
    Closed(String),
    DriverGone,
}

/// Registers an established connection with the driver, writes what it queues, reads
/// frames until the connection ends, and reports the end.
async fn run_connection(
    shared: Shared,
    connection: quinn::Connection,
    node_id: NodeId,
    dialer: NodeId,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let connection_id = connections::next_connection_id();
    let (frames, queued, queued_bytes) = FrameQueue::new(&shared.limits);
    let connected = NetEvent::Connected { node_id, connection_id, dialer, connection: connection.clone(), frames };
    if shared.events.send(connected).await.is_err() {
        return;
    }
    let writer = tokio::spawn(write_frames(send, queued, queued_bytes, shared.drained.clone()).in_current_span());
    let servers = streams::StreamServers {
        media: shared.media_server.clone(),
        calls: shared.neighbours.as_ref().map(|serving| serving.services.clone()),
    };
    let media_streams = tokio::spawn(streams::accept_streams(connection.clone(), node_id, servers).in_current_span());
    match read_frames(&shared, recv, node_id, connection_id).await {
        ReadEnd::BadFrame(reason) => {
            tracing::warn!(peer = %node_id, %reason, "sibling sent a bad frame; closing the connection");
            close(&connection, close_code::BAD_FRAME, b"bad frame");
            shared.trust.observe(node_id, TrustEvent::BadFrame, &reason);
            let _ = shared.events.send(NetEvent::BadFrame { node_id }).await;
        }
        ReadEnd::Closed(reason) => {
            tracing::debug!(peer = %node_id, %reason, "connection ended");
            close(&connection, close_code::DONE, b"");
        }
        ReadEnd::DriverGone => close(&connection, close_code::SHUTDOWN, b"node shutting down"),
    }
    writer.abort();
    media_streams.abort();
    let _ = shared.events.send(NetEvent::Closed { node_id, connection_id }).await;
}

async fn write_frames(
    mut send: quinn::SendStream,
    mut queued: mpsc::Receiver<Bytes>,
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
    drained: Arc<tokio::sync::Notify>,
) {
    while let Some(frame) = queued.recv().await {
        queued_bytes.fetch_sub(frame.len(), std::sync::atomic::Ordering::Relaxed);
        drained.notify_one();
        if let Err(error) = send.write_chunk(frame).await {
            tracing::debug!(%error, "cannot write to sibling");
            return;
        }
    }
}

/// Reads whole frames. The length prefix is checked by `wire::decode` against
/// `frame_bytes_max` before the frame's buffer is allocated.
async fn read_frames(shared: &Shared, mut recv: quinn::RecvStream, node_id: NodeId, connection_id: u64) -> ReadEnd {
    let frame_bytes_max = shared.frame_bytes_max;
    loop {
        let mut prefix = [0u8; 4];
        if let Err(error) = recv.read_exact(&mut prefix).await {
            return ReadEnd::Closed(error.to_string());
        }
        // With only the prefix, decode either refuses the length or asks for more.
        if let Err(error) = wire::decode(&prefix, frame_bytes_max) {
            return ReadEnd::BadFrame(error.to_string());
        }
        let frame_bytes = u32::from_be_bytes(prefix) as usize + 4;
        let mut frame = vec![0u8; frame_bytes];
        frame[..4].copy_from_slice(&prefix);
        if let Err(error) = recv.read_exact(&mut frame[4..]).await {
            return ReadEnd::Closed(error.to_string());
        }
        let message = match wire::decode(&frame, frame_bytes_max) {
            Ok(Some((message, used))) if used == frame_bytes => message,
            Ok(_) => return ReadEnd::BadFrame("the frame's payload does not match its length".to_owned()),
            Err(error) => return ReadEnd::BadFrame(error.to_string()),
        };
        let event = NetEvent::Frame { node_id, connection_id, message, frame_bytes };
        if shared.events.send(event).await.is_err() {
            return ReadEnd::DriverGone;
        }
    }
}
