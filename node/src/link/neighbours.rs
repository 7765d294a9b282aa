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

use tokio::sync::Semaphore;

use super::{crypto, lock, PeerError, PeerLimits};
use crate::core::model::NodeId;
use crate::identity::Identity;

pub const ALPN_NEIGHBOUR: &[u8] = b"edgenode-neighbour/1";
const REQUEST_MAGIC: &[u8; 5] = b"ENBR1";
/// Longest service name.
pub const SERVICE_NAME_BYTES_MAX: usize = 32;
/// Largest request or answer body.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Requests served at once per connection; the rest wait (QUIC's stream limit bounds
/// how many can wait).
const REQUESTS_SERVED_PER_CONNECTION_MAX: usize = 4;
/// From a request's first byte to its answer's last.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);
const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// One service's answer to a request from `from` (a sibling or configured neighbour,
/// authenticated by its key). `Err` is a refusal with a reason the caller sees.
pub trait NeighbourHandler: Send + Sync {
    fn handle(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, String>;
}

/// The services this node answers, by name. Registered after start (the API and the
/// services are built after the endpoint).
#[derive(Default)]
pub struct NeighbourServices {
    handlers: RwLock<BTreeMap<String, Arc<dyn NeighbourHandler>>>,
}

impl std::fmt::Debug for NeighbourServices {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.handlers.read().map(|h| h.keys().cloned().collect()).unwrap_or_default();
        formatter.debug_struct("NeighbourServices").field("services", &names).finish()
    }
}

impl NeighbourServices {
    pub fn register(&self, name: &str, handler: Arc<dyn NeighbourHandler>) {
        assert!(name.len() <= SERVICE_NAME_BYTES_MAX, "service name {name:?} is too long");
        self.handlers.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(name.to_owned(), handler);
    }

    fn get(&self, name: &str) -> Option<Arc<dyn NeighbourHandler>> {
        self.handlers.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(name).cloned()
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

/// Serves requests on an accepted neighbour connection until it ends.
pub(super) async fn serve(connection: quinn::Connection, from: NodeId, services: Arc<NeighbourServices>) {
    let slots = Arc::new(Semaphore::new(REQUESTS_SERVED_PER_CONNECTION_MAX));
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(%from, %error, "neighbour connection ended");
                return;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let services = services.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(SERVE_TIMEOUT, answer(from, &services, send, recv)).await.is_err() {
                tracing::debug!(%from, "a neighbour request timed out");
            }
        });
    }
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
                    Ok(Err(reason)) => (STATUS_REFUSED, reason.into_bytes()),
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

async fn read_request(recv: &mut quinn::RecvStream) -> Result<(String, Vec<u8>), String> {
    let mut head = [0u8; REQUEST_MAGIC.len() + 1];
    recv.read_exact(&mut head).await.map_err(|error| format!("short request: {error}"))?;
    if &head[..REQUEST_MAGIC.len()] != REQUEST_MAGIC {
        return Err("not a neighbour request (bad magic)".to_owned());
    }
    let name_bytes = usize::from(head[REQUEST_MAGIC.len()]);
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

/// Calls services of other nodes: one connection per neighbour, kept while it lives.
pub struct NeighbourLink {
    endpoint: quinn::Endpoint,
    identity: Identity,
    transport: Arc<quinn::TransportConfig>,
    handshake_timeout: Duration,
    book: RwLock<BTreeMap<NodeId, NeighbourAddress>>,
    connections: Mutex<BTreeMap<NodeId, quinn::Connection>>,
    /// One dial per neighbour at a time; callers of a neighbour being dialled wait for it.
    dialing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for NeighbourLink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("NeighbourLink").finish_non_exhaustive()
    }
}

impl NeighbourLink {
    /// A client endpoint on an ephemeral UDP port of `bind_ip`'s family.
    pub fn new(identity: &Identity, bind: SocketAddr, limits: &PeerLimits) -> Result<NeighbourLink, PeerError> {
        let socket = std::net::UdpSocket::bind(bind).map_err(|source| PeerError::Listen { address: bind, source })?;
        let endpoint =
            quinn::Endpoint::new(identity.quic_endpoint_config(), None, socket, Arc::new(quinn::TokioRuntime))
                .map_err(|source| PeerError::Listen { address: bind, source })?;
        Ok(NeighbourLink {
            endpoint,
            identity: identity.clone(),
            transport: Arc::new(super::transport_config(limits)?),
            handshake_timeout: Duration::from_millis(limits.handshake_timeout_ms),
            book: RwLock::new(BTreeMap::new()),
            connections: Mutex::new(BTreeMap::new()),
            dialing: tokio::sync::Mutex::new(()),
        })
    }

    /// Replaces the address book (siblings and configured neighbours).
    pub fn set_neighbours(&self, neighbours: impl IntoIterator<Item = NeighbourAddress>) {
        let book: BTreeMap<NodeId, NeighbourAddress> =
            neighbours.into_iter().map(|neighbour| (neighbour.node_id, neighbour)).collect();
        // Connections to nodes that left the book, or whose key changed, are closed.
        lock(&self.connections).retain(|node_id, connection| {
            let keep = book.contains_key(node_id);
            if !keep {
                connection.close(0u32.into(), b"no longer a neighbour");
            }
            keep
        });
        *self.book.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = book;
    }

    pub fn neighbours(&self) -> Vec<NeighbourAddress> {
        self.book.read().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
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
        match tokio::time::timeout(timeout, self.call_unbounded(node, service, body)).await {
            Ok(result) => result,
            Err(_) => Err(NeighbourError::Timeout { node, timeout }),
        }
    }

    async fn call_unbounded(&self, node: NodeId, service: &str, body: &[u8]) -> Result<Vec<u8>, NeighbourError> {
        let connection = self.connection(node).await?;
        let unreachable = |reason: String| NeighbourError::Unreachable { node, reason };
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                lock(&self.connections).remove(&node);
                return Err(unreachable(error.to_string()));
            }
        };
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

    async fn connection(&self, node: NodeId) -> Result<quinn::Connection, NeighbourError> {
        let live = |connections: &BTreeMap<NodeId, quinn::Connection>| {
            connections.get(&node).filter(|connection| connection.close_reason().is_none()).cloned()
        };
        if let Some(connection) = live(&lock(&self.connections)) {
            return Ok(connection);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(connection) = live(&lock(&self.connections)) {
            return Ok(connection);
        }
        let neighbour = self
            .book
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&node)
            .cloned()
            .ok_or(NeighbourError::Unknown(node))?;
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
        let connection = tokio::time::timeout(self.handshake_timeout, connecting)
            .await
            .map_err(|_| unreachable("the handshake timed out".to_owned()))?
            .map_err(|error| unreachable(error.to_string()))?;
        lock(&self.connections).insert(node, connection.clone());
        Ok(connection)
    }
}

impl Drop for NeighbourLink {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"node shutting down");
    }
}
