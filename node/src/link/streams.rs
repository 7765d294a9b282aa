//! One framing for every stream opened on a node-to-node connection after
//! replication's control stream: the first five bytes name its kind, and the link
//! hands the rest to that kind's server.
//!
//! ```text
//! "EMED1" …   a media item's files (`media`: siblings only)
//! "ENBR1" …   a call to a named service (`neighbours`: siblings and neighbours)
//! ```
//!
//! Each connection serves at most `STREAMS_SERVED_PER_CONNECTION_MAX` streams at
//! once; the others wait within QUIC's stream limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use quinn::VarInt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::neighbours::{self, NeighbourServices, REQUEST_MAGIC};
use crate::core::model::NodeId;

/// The tag of a media stream; its server is registered by the media service.
pub const MEDIA_TAG: &[u8; TAG_BYTES] = b"EMED1";

/// Length of every stream's tag.
pub const TAG_BYTES: usize = 5;
/// Streams one connection serves at once (media and calls together).
pub const STREAMS_SERVED_PER_CONNECTION_MAX: usize = 20;
/// Time a stream's opener has to send its tag.
const TAG_TIMEOUT_MS: u64 = 10_000;

/// Error code a stream of an unknown or refused kind is reset with.
pub const STREAM_REFUSED: u32 = 1;

/// Answers one stream whose tag was read. The link never reads the store: a
/// service that serves streams registers one of these.
pub type StreamServer =
    Arc<dyn Fn(quinn::SendStream, quinn::RecvStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What a connection's streams may ask for.
#[derive(Clone, Default)]
pub struct StreamServers {
    /// Media is served to siblings only; `None` refuses it.
    pub media: Option<StreamServer>,
    /// Calls, answered to siblings and neighbours; `None` refuses them.
    pub calls: Option<Arc<NeighbourServices>>,
}

/// Serves the streams `caller` opens on `connection` until it ends. Dropping the
/// future stops the streams being served.
pub async fn accept_streams(connection: quinn::Connection, caller: NodeId, servers: StreamServers) {
    let slots = Arc::new(Semaphore::new(STREAMS_SERVED_PER_CONNECTION_MAX));
    let mut serving = JoinSet::new();
    loop {
        let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::trace!(%caller, %error, "no more streams");
                break;
            }
        };
        while serving.try_join_next().is_some() {}
        let servers = servers.clone();
        serving.spawn(
            async move {
                let _slot = slot;
                serve_stream(caller, servers, send, recv).await;
            }
            .in_current_span(),
        );
    }
}

async fn serve_stream(caller: NodeId, servers: StreamServers, send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut tag = [0u8; TAG_BYTES];
    match tokio::time::timeout(Duration::from_millis(TAG_TIMEOUT_MS), recv.read_exact(&mut tag)).await {
        Ok(Ok(())) => {}
        _ => return refuse(send, recv, "no stream tag"),
    }
    match (&tag, &servers) {
        (tag, StreamServers { media: Some(server), .. }) if tag == MEDIA_TAG => server(send, recv).await,
        (tag, StreamServers { calls: Some(services), .. }) if tag == REQUEST_MAGIC => {
            neighbours::serve_call(caller, services, send, recv).await;
        }
        _ => refuse(send, recv, "a stream of a kind this node does not serve to this caller"),
    }
}

fn refuse(mut send: quinn::SendStream, mut recv: quinn::RecvStream, reason: &str) {
    tracing::debug!(reason, "stream refused");
    let _ = send.reset(VarInt::from_u32(STREAM_REFUSED));
    let _ = recv.stop(VarInt::from_u32(STREAM_REFUSED));
}
