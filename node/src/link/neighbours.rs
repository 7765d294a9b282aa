//! Calls between nodes of the neighbourhood that are not (only) siblings: fan-out of
//! posts to followers' home nodes, searches forwarded to aggregators, public index
//! entries fed to them. Never replication: records reach a node through this link
//! only when a service here asks for them, and each service decides what to accept.
//!
//! Same UDP endpoint and mutual TLS as siblings, another ALPN (`edgenode-neighbour/1`):
//! both sides present their node key, and each admits only pins it was given (its
//! siblings and its configured neighbours). A request is one bidirectional stream:
//!
//! ```text
//! request:  "ENBR1" <u8 n ≤ 32> <n bytes: service name> <u32 BE m ≤ 1 MiB> <m bytes>  FIN
//! answer:   <u8 status: 0 ok, 1 refused> <u32 BE m ≤ 1 MiB> <m bytes: body or reason> FIN
//! ```
//!
//! Services (`NeighbourHandler`) are blocking functions of (caller, body) → answer,
//! registered by name in `NeighbourServices`; they run on the blocking pool, a few
//! at once per connection. `NeighbourLink` is the calling side: one cached connection
//! per neighbour from its own client endpoint, dialled on demand.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::trust::TrustBook;
use super::{crypto, ConnectionTable, PeerError, PeerLimits};
use crate::core::model::NodeId;
use crate::core::trust::TrustEvent;
use crate::identity::Identity;
use crate::locking::{lock, read, write};

pub const ALPN_NEIGHBOUR: &[u8] = b"edgenode-neighbour/1";
/// The tag of a call stream (`streams`).
pub const REQUEST_MAGIC: &[u8; 5] = b"ENBR1";
/// Longest service name.
pub const SERVICE_NAME_BYTES_MAX: usize = 32;
/// Largest request or answer body.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// From a request's first byte to its answer's last.
const SERVE_TIMEOUT_MS: u64 = 30_000;
const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// One service's answer to a request from `from` (a sibling or configured neighbour,
/// authenticated by its key). `Err` is a refusal with a reason the caller sees.
pub trait NeighbourHandler: Send + Sync {
    fn handle(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, Refusal>;
}

/// A service's refusal of a call: the reason, sent to the caller as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

// Handlers build reasons with `format!`; `?` turns one into a refusal.
impl From<String> for Refusal {
    fn from(reason: String) -> Refusal {
        Refusal(reason)
    }
}

/// The services this node answers, by name. Registered after start (the API and the
/// services are built after the endpoint).
#[derive(Default)]
pub struct NeighbourServices {
    handlers: RwLock<BTreeMap<String, Arc<dyn NeighbourHandler>>>,
}

impl std::fmt::Debug for NeighbourServices {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = read(&self.handlers).keys().cloned().collect();
        formatter.debug_struct("NeighbourServices").field("services", &names).finish()
    }
}

impl NeighbourServices {
    pub fn register(&self, name: &str, handler: Arc<dyn NeighbourHandler>) {
        assert!(name.len() <= SERVICE_NAME_BYTES_MAX, "service name {name:?} is too long");
        write(&self.handlers).insert(name.to_owned(), handler);
    }

    fn get(&self, name: &str) -> Option<Arc<dyn NeighbourHandler>> {
        read(&self.handlers).get(name).cloned()
    }
}

/// A node this node may call: where, and the key it must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourAddress {
    pub node_id: NodeId,
    /// `host:port` of its peer endpoint.
    pub address: String,
    pub pin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("node {0} is not a known neighbour")]
    Unknown(NodeId),
    #[error("cannot reach node {node}: {reason}")]
    Unreachable { node: NodeId, reason: String },
    #[error("node {node} is down ({reason}); trying again in {retry_in_ms} ms")]
    Down { node: NodeId, reason: String, retry_in_ms: u64 },
    #[error("node {node} did not answer within {} ms", timeout.as_millis())]
    Timeout { node: NodeId, timeout: Duration },
    #[error("node {node} refused: {reason}")]
    Refused { node: NodeId, reason: String },
    #[error("node {node} answered badly: {reason}")]
    Malformed { node: NodeId, reason: String },
    #[error("the request is too large ({0} bytes)")]
    TooLarge(usize),
}

// ----- serving (on the peer endpoint) -----

/// Answers one call on a stream whose tag (`REQUEST_MAGIC`) was read, within
/// `Duration::from_millis(SERVE_TIMEOUT_MS)`.
pub(super) async fn serve_call(
    from: NodeId,
    services: &NeighbourServices,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    if tokio::time::timeout(Duration::from_millis(SERVE_TIMEOUT_MS), answer(from, services, send, recv)).await.is_err()
    {
        tracing::debug!(%from, "a call timed out");
    }
}

/// Serves calls on a neighbour connection until it ends.
pub(super) async fn serve(connection: quinn::Connection, from: NodeId, services: Arc<NeighbourServices>) {
    let servers = super::streams::StreamServers { media: None, calls: Some(services) };
    super::streams::accept_streams(connection, from, servers).await;
}

async fn answer(from: NodeId, services: &NeighbourServices, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let (status, body) = match read_request(&mut recv).await {
        Err(reason) => (STATUS_REFUSED, reason.into_bytes()),
        Ok((name, body)) => match services.get(&name) {
            None => (STATUS_REFUSED, format!("this node has no service {name:?}").into_bytes()),
            Some(handler) => {
                let handled = tokio::task::spawn_blocking(move || handler.handle(from, &body)).await;
                match handled {
                    Ok(Ok(answer)) if answer.len() <= BODY_BYTES_MAX => (STATUS_OK, answer),
                    Ok(Ok(answer)) => {
                        (STATUS_REFUSED, format!("the answer is too large ({} bytes)", answer.len()).into_bytes())
                    }
                    Ok(Err(Refusal(reason))) => (STATUS_REFUSED, reason.into_bytes()),
                    Err(error) => (STATUS_REFUSED, format!("the service failed: {error}").into_bytes()),
                }
            }
        },
    };
    let mut framed = Vec::with_capacity(5 + body.len());
    framed.push(status);
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    if send.write_all(&framed).await.is_ok() {
        let _ = send.finish();
        let _ = send.stopped().await;
    }
}

/// The rest of a request whose tag was read.
async fn read_request(recv: &mut quinn::RecvStream) -> Result<(String, Vec<u8>), String> {
    let mut head = [0u8; 1];
    recv.read_exact(&mut head).await.map_err(|error| format!("short request: {error}"))?;
    let name_bytes = usize::from(head[0]);
    if name_bytes == 0 || name_bytes > SERVICE_NAME_BYTES_MAX {
        return Err(format!("a service name of {name_bytes} bytes"));
    }
    let mut name = vec![0u8; name_bytes];
    recv.read_exact(&mut name).await.map_err(|error| format!("short request: {error}"))?;
    let name = String::from_utf8(name).map_err(|_| "the service name is not UTF-8".to_owned())?;
    let body = read_sized(recv).await?;
    Ok((name, body))
}

/// `<u32 BE n ≤ BODY_BYTES_MAX> <n bytes>`, the length checked before allocating.
async fn read_sized(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, String> {
    let mut length = [0u8; 4];
    recv.read_exact(&mut length).await.map_err(|error| format!("short message: {error}"))?;
    let length = u32::from_be_bytes(length) as usize;
    if length > BODY_BYTES_MAX {
        return Err(format!("a body of {length} bytes (at most {BODY_BYTES_MAX})"));
    }
    let mut body = vec![0u8; length];
    recv.read_exact(&mut body).await.map_err(|error| format!("short message: {error}"))?;
    Ok(body)
}

// ----- calling -----

/// Timings of the calling side. Units are last in the names.
#[derive(Debug, Clone)]
pub struct CallLimits {
    pub handshake_timeout_ms: u64,
    /// After a node failed to answer, calls to it fail at once for this long
    /// (doubling per failure, up to the max); then one call tries again.
    pub down_backoff_initial_ms: u64,
    pub down_backoff_max_ms: u64,
}

impl CallLimits {
    pub fn from_peer_limits(limits: &PeerLimits) -> CallLimits {
        CallLimits {
            handshake_timeout_ms: limits.handshake_timeout_ms,
            // Short: a node that comes back is called again within ~2 s (fan-out
            // probes every 2 s), while one that stays down costs a dial that often.
            down_backoff_initial_ms: 200,
            down_backoff_max_ms: 2_000,
        }
    }
}

/// Calls services of other nodes over the node's one peer endpoint, on the one
/// connection to each: a sibling's replication connection when there is one, else the
/// neighbour connection either side dialled. Dials are per node (a node that does not
/// answer holds up only calls to itself), and a node that failed is known to be down
/// for a backoff, during which calls to it fail at once.
pub struct NeighbourLink {
    endpoint: quinn::Endpoint,
    identity: Identity,
    transport: Arc<quinn::TransportConfig>,
    limits: CallLimits,
    book: RwLock<BTreeMap<NodeId, NeighbourAddress>>,
    /// Replication's connections to siblings, used first.
    siblings: ConnectionTable,
    /// Neighbour connections, dialled here or accepted (`serve`).
    neighbours: ConnectionTable,
    reach: Mutex<BTreeMap<NodeId, Arc<Reach>>>,
    /// Calls a neighbour makes on a connection this side dialled are answered too.
    services: Option<Arc<NeighbourServices>>,
    /// Where timeouts and bad answers are scored, as replication's are.
    trust: Option<Arc<TrustBook>>,
}

/// What the link knows of one node's reachability.
#[derive(Default)]
struct Reach {
    /// One dial to the node at a time.
    dialing: tokio::sync::Mutex<()>,
    state: Mutex<ReachState>,
}

#[derive(Default)]
struct ReachState {
    failures: u32,
    /// While set and in the future, the node is known to be down.
    down_until: Option<Instant>,
    last_failure: String,
}

impl std::fmt::Debug for NeighbourLink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("NeighbourLink").finish_non_exhaustive()
    }
}

impl NeighbourLink {
    /// Calls out from `endpoint` (the node's peer endpoint, so no other UDP socket is
    /// bound), presenting `identity`.
    pub fn new(
        endpoint: quinn::Endpoint,
        identity: &Identity,
        limits: &PeerLimits,
    ) -> Result<NeighbourLink, PeerError> {
        Ok(NeighbourLink {
            endpoint,
            identity: identity.clone(),
            transport: Arc::new(super::transport_config(limits)?),
            limits: CallLimits::from_peer_limits(limits),
            book: RwLock::new(BTreeMap::new()),
            siblings: ConnectionTable::default(),
            neighbours: ConnectionTable::default(),
            reach: Mutex::new(BTreeMap::new()),
            services: None,
            trust: None,
        })
    }

    /// A client-only link on its own UDP socket (tools and tests that run no node).
    pub fn bind_client(identity: &Identity, bind: SocketAddr, limits: &PeerLimits) -> Result<NeighbourLink, PeerError> {
        let socket = std::net::UdpSocket::bind(bind).map_err(|source| PeerError::Listen { address: bind, source })?;
        let endpoint =
            quinn::Endpoint::new(identity.quic_endpoint_config(), None, socket, Arc::new(quinn::TokioRuntime))
                .map_err(|source| PeerError::Listen { address: bind, source })?;
        NeighbourLink::new(endpoint, identity, limits)
    }

    /// Shares the node's connections: replication's to siblings, and the table where
    /// accepted neighbour connections are kept (`NeighbourServing::connections`).
    pub fn with_connections(mut self, siblings: ConnectionTable, neighbours: ConnectionTable) -> NeighbourLink {
        self.siblings = siblings;
        self.neighbours = neighbours;
        self
    }

    /// Answers calls that arrive on connections this side dialled.
    pub fn with_services(mut self, services: Arc<NeighbourServices>) -> NeighbourLink {
        self.services = Some(services);
        self
    }

    /// Scores timeouts and bad answers in `trust`.
    pub fn with_trust(mut self, trust: Arc<TrustBook>) -> NeighbourLink {
        self.trust = Some(trust);
        self
    }

    /// Replaces the address book (siblings and configured neighbours).
    pub fn set_neighbours(&self, neighbours: impl IntoIterator<Item = NeighbourAddress>) {
        let book: BTreeMap<NodeId, NeighbourAddress> =
            neighbours.into_iter().map(|neighbour| (neighbour.node_id, neighbour)).collect();
        // Connections to nodes that left the book are closed.
        self.neighbours.retain(|node_id| book.contains_key(&node_id), b"no longer a neighbour");
        lock(&self.reach).retain(|node_id, _| book.contains_key(node_id));
        *write(&self.book) = book;
    }

    pub fn neighbours(&self) -> Vec<NeighbourAddress> {
        read(&self.book).values().cloned().collect()
    }

    /// Whether `node` is known to be down now (it failed, and its backoff has not
    /// run out). A node never tried is not down.
    pub fn is_down(&self, node: NodeId) -> bool {
        let reach = lock(&self.reach).get(&node).cloned();
        reach.is_some_and(|reach| lock(&reach.state).down_until.is_some_and(|until| until > Instant::now()))
    }

    /// The open node-to-node connections, one per remote node (siblings' and
    /// neighbours'; a node with both counts once).
    pub fn connection_count(&self) -> usize {
        let mut nodes: std::collections::BTreeSet<NodeId> =
            self.siblings.current().into_iter().map(|(node_id, _)| node_id).collect();
        nodes.extend(self.neighbours.current().into_iter().map(|(node_id, _)| node_id));
        nodes.len()
    }

    /// Calls `service` on `node` with `body`; the whole exchange within `timeout`.
    pub async fn call(
        &self,
        node: NodeId,
        service: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, NeighbourError> {
        if body.len() > BODY_BYTES_MAX {
            return Err(NeighbourError::TooLarge(body.len()));
        }
        let result = match tokio::time::timeout(timeout, self.call_unbounded(node, service, body)).await {
            Ok(result) => result,
            Err(_) => Err(NeighbourError::Timeout { node, timeout }),
        };
        self.observe(node, service, &result);
        result
    }

    /// What a call's end says about the node: reachability, and trust as
    /// replication scores it (timeouts and bad answers lower it, answers raise it).
    fn observe(&self, node: NodeId, service: &str, result: &Result<Vec<u8>, NeighbourError>) {
        let trust = |event, detail: String| {
            if let Some(trust) = &self.trust {
                trust.observe(node, event, &detail);
            }
        };
        match result {
            Ok(_) | Err(NeighbourError::Refused { .. }) => {
                self.mark_up(node);
                if result.is_ok() {
                    trust(TrustEvent::Verified, format!("answered a {service} call"));
                }
            }
            Err(NeighbourError::Timeout { timeout, .. }) => {
                self.mark_down(node, format!("a {service} call got no answer within {} ms", timeout.as_millis()));
                trust(TrustEvent::Timeout, format!("a {service} call timed out"));
            }
            Err(NeighbourError::Malformed { reason, .. }) => {
                trust(TrustEvent::BadFrame, format!("a malformed answer to a {service} call: {reason}"));
            }
            Err(NeighbourError::Unreachable { reason, .. }) => self.mark_down(node, reason.clone()),
            // Known down already (the backoff is running), or nothing was sent.
            Err(NeighbourError::Down { .. } | NeighbourError::Unknown(_) | NeighbourError::TooLarge(_)) => {}
        }
    }

    fn reach(&self, node: NodeId) -> Arc<Reach> {
        lock(&self.reach).entry(node).or_default().clone()
    }

    fn mark_up(&self, node: NodeId) {
        let reach = self.reach(node);
        let mut state = lock(&reach.state);
        state.failures = 0;
        state.down_until = None;
    }

    fn mark_down(&self, node: NodeId, reason: String) {
        let reach = self.reach(node);
        let mut state = lock(&reach.state);
        let delay_ms =
            super::backoff_ms(self.limits.down_backoff_initial_ms, self.limits.down_backoff_max_ms, state.failures);
        state.failures = state.failures.saturating_add(1);
        state.down_until = Some(Instant::now() + super::jittered(delay_ms));
        state.last_failure = reason;
    }

    /// Fails at once while `node` is known to be down.
    fn check_not_down(&self, node: NodeId, reach: &Reach) -> Result<(), NeighbourError> {
        let state = lock(&reach.state);
        match state.down_until {
            Some(until) if until > Instant::now() => Err(NeighbourError::Down {
                node,
                reason: state.last_failure.clone(),
                retry_in_ms: until.saturating_duration_since(Instant::now()).as_millis() as u64,
            }),
            _ => Ok(()),
        }
    }

    async fn call_unbounded(&self, node: NodeId, service: &str, body: &[u8]) -> Result<Vec<u8>, NeighbourError> {
        let connection = self.connection(node).await?;
        let unreachable = |reason: String| NeighbourError::Unreachable { node, reason };
        let (mut send, mut recv) = connection.open_bi().await.map_err(|error| unreachable(error.to_string()))?;
        let mut request = Vec::with_capacity(REQUEST_MAGIC.len() + 1 + service.len() + 4 + body.len());
        request.extend_from_slice(REQUEST_MAGIC);
        request.push(service.len() as u8);
        request.extend_from_slice(service.as_bytes());
        request.extend_from_slice(&(body.len() as u32).to_be_bytes());
        request.extend_from_slice(body);
        send.write_all(&request).await.map_err(|error| unreachable(error.to_string()))?;
        let _ = send.finish();
        let mut status = [0u8; 1];
        recv.read_exact(&mut status).await.map_err(|error| unreachable(error.to_string()))?;
        let answer = read_sized(&mut recv).await.map_err(|reason| NeighbourError::Malformed { node, reason })?;
        match status[0] {
            STATUS_OK => Ok(answer),
            STATUS_REFUSED => {
                Err(NeighbourError::Refused { node, reason: String::from_utf8_lossy(&answer).into_owned() })
            }
            other => Err(NeighbourError::Malformed { node, reason: format!("status {other}") }),
        }
    }

    /// The one connection to `node`: a live one if there is one, else a new dial
    /// (unless the node is known to be down).
    async fn connection(&self, node: NodeId) -> Result<quinn::Connection, NeighbourError> {
        let live = || self.siblings.get(node).or_else(|| self.neighbours.get(node));
        if let Some(connection) = live() {
            return Ok(connection);
        }
        let neighbour = read(&self.book).get(&node).cloned().ok_or(NeighbourError::Unknown(node))?;
        let reach = self.reach(node);
        self.check_not_down(node, &reach)?;
        let _dialing = reach.dialing.lock().await;
        if let Some(connection) = live() {
            return Ok(connection);
        }
        // Callers that waited for a dial that failed learn it at once.
        self.check_not_down(node, &reach)?;
        let unreachable = |reason: String| NeighbourError::Unreachable { node, reason };
        let address = tokio::net::lookup_host(&neighbour.address)
            .await
            .map_err(|error| unreachable(error.to_string()))?
            .next()
            .ok_or_else(|| unreachable("the name has no address".to_owned()))?;
        let config =
            crypto::client_config(&self.identity, Some(&neighbour.pin), ALPN_NEIGHBOUR, self.transport.clone())
                .map_err(|error| unreachable(error.to_string()))?;
        let connecting =
            self.endpoint.connect_with(config, address, "edgenode").map_err(|error| unreachable(error.to_string()))?;
        let handshake_timeout = Duration::from_millis(self.limits.handshake_timeout_ms);
        let connection = tokio::time::timeout(handshake_timeout, connecting)
            .await
            .map_err(|_| unreachable("the handshake timed out".to_owned()))?
            .map_err(|error| unreachable(error.to_string()))?;
        let connection_id = super::connections::next_connection_id();
        self.neighbours.connected(node, connection_id, &connection);
        // The neighbour may call back on this connection rather than dial its own.
        if let Some(services) = &self.services {
            let (connection, services, table) = (connection.clone(), services.clone(), self.neighbours.clone());
            tokio::spawn(async move {
                serve(connection, node, services).await;
                table.closed(node, connection_id);
            });
        }
        Ok(connection)
    }
}
