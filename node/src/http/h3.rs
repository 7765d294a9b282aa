//! HTTP/3 over QUIC: the quinn endpoint's limits, the accept loop with the shared
//! connection cap, and one h3 connection per QUIC connection adapted to the service.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ::h3::error::{Code, ConnectionError, StreamError};
use ::h3::server::{RequestResolver, RequestStream};
use bytes::{Buf as _, Bytes};
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use http::Response;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, VarInt};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::quic_streams;
use super::{
    annotate, body_expected, finish_response, shutdown_requested, Activity, Answer, BodySource, ConnectionSlot,
    FileChunks, HandlerRunning, NetError, ResponseFile, Service, Shared, TransportError, HANDSHAKE_TIMEOUT_MS,
};
use crate::api::Transport;
use crate::config::Limits;
use crate::tls::ServingCertificates;

/// Unidirectional streams a client may open: HTTP/3 needs three (control, QPACK
/// encoder and decoder); the rest leaves room for grease streams.
const UNI_STREAMS_PER_CONNECTION_MAX: u32 = 8;
/// Time for a closing endpoint to tell its peers.
const CLOSE_TIMEOUT_MS: u64 = 1000;
/// Upper bound on waiting, before closing a connection, for the last responses to be
/// delivered (see `linger`).
const LINGER_MAX_MS: u64 = 2000;

type H3Connection = ::h3::server::Connection<quic_streams::Connection, Bytes>;
type H3RequestStream = RequestStream<quic_streams::BidiStream, Bytes>;

/// The UDP payload quinn's path MTU discovery stops at where the interface towards a
/// client is unknown: quinn's own default, Ethernet's 1,500 less the IPv6 and UDP headers.
const DATAGRAM_BYTES_MAX_DEFAULT: u16 = 1452;
/// What an IP packet carries besides the UDP payload: IPv6's 40-byte header and UDP's 8,
/// the larger family's, as in quinn's default (so a 1,500-byte interface gives 1,452).
const IP_AND_UDP_HEADER_BYTES: usize = 48;
/// quinn 0.11 hands the kernel up to 10 datagrams per send call (segmentation offload,
/// its private `MAX_TRANSMIT_SEGMENTS`), and the kernel refuses a call whose datagrams add
/// up to more than an IP packet's 65,535 bytes (EMSGSIZE), which quinn-udp drops without a
/// word: every datagram of it is lost.
const DATAGRAMS_PER_SEND_CALL_MAX: usize = 10;
const IP_PACKET_BYTES_MAX: usize = 65535;
/// So no datagram may exceed a tenth of a packet: 6,548 bytes. Measured on loopback:
/// 6,548 lost nothing; 7,000 lost a quarter of its packets; from 8,952 up, quinn's
/// black-hole detection took the connections down to 1,200-byte datagrams.
const DATAGRAM_BYTES_MAX_CEILING: u16 = 6548;
const _: () = assert!(
    DATAGRAM_BYTES_MAX_CEILING as usize * DATAGRAMS_PER_SEND_CALL_MAX + IP_AND_UDP_HEADER_BYTES <= IP_PACKET_BYTES_MAX
);
const DATAGRAM_BYTES_MIN: u16 = 1200;

/// The QUIC server configuration, TLS 1.3 with ALPN `h3` and the transport limits, and
/// for each client the same with path MTU discovery bounded by the interface towards it.
#[derive(Clone)]
pub(super) struct ServerConfigs {
    base: quinn::ServerConfig,
    limits: Arc<TransportLimits>,
}

/// The limits of `Limits` the QUIC transport takes, checked once.
struct TransportLimits {
    streams_per_connection_max: u32,
    stream_receive_window_bytes: u32,
    receive_window_bytes: u32,
    idle_timeout: Option<IdleTimeout>,
}

pub(super) fn server_configs(
    certificates: Arc<ServingCertificates>,
    limits: &Limits,
) -> Result<ServerConfigs, NetError> {
    let crypto = QuicServerConfig::try_from(crate::tls::quic_server_config(certificates)?)
        .map_err(|error| NetError::Quic(error.to_string()))?;
    let idle_timeout = match limits.idle_timeout_seconds {
        0 => None,
        seconds => Some(
            IdleTimeout::try_from(Duration::from_secs(seconds))
                .map_err(|_| NetError::Quic(format!("idle_timeout_seconds = {seconds} is too large")))?,
        ),
    };
    let limits = Arc::new(TransportLimits {
        streams_per_connection_max: limits.quic_streams_per_connection_max,
        stream_receive_window_bytes: limits.quic_stream_receive_window_bytes,
        receive_window_bytes: limits.quic_receive_window_bytes,
        idle_timeout,
    });
    let mut base = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    base.transport_config(Arc::new(transport_config(&limits, DATAGRAM_BYTES_MAX_DEFAULT)));
    Ok(ServerConfigs { base, limits })
}

impl ServerConfigs {
    /// What the endpoint is made with; every connection is accepted with `for_client`'s.
    pub(super) fn base(&self) -> quinn::ServerConfig {
        self.base.clone()
    }

    /// The configuration for a client at `remote`: path MTU discovery may probe up to the
    /// MTU of the interface the node reaches it by.
    fn for_client(&self, remote: SocketAddr) -> Arc<quinn::ServerConfig> {
        let mut config = self.base.clone();
        config.transport_config(Arc::new(transport_config(&self.limits, datagram_bytes_max(remote.ip()))));
        Arc::new(config)
    }
}

fn transport_config(limits: &TransportLimits, datagram_bytes_max: u16) -> quinn::TransportConfig {
    let mut mtu_discovery = quinn::MtuDiscoveryConfig::default();
    mtu_discovery.upper_bound(datagram_bytes_max);
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(limits.streams_per_connection_max))
        .max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS_PER_CONNECTION_MAX))
        .stream_receive_window(VarInt::from_u32(limits.stream_receive_window_bytes))
        .receive_window(VarInt::from_u32(limits.receive_window_bytes))
        .max_idle_timeout(limits.idle_timeout)
        // Clients keep connections alive if they want to; the server lets idle ones go.
        .keep_alive_interval(None)
        .datagram_receive_buffer_size(None)
        // A response's packets carry that response until it is done, not a slice of every
        // response in flight, so a feed's thumbnails arrive whole one after another. p99 of
        // 20,000 thumbnails over 32 connections x 8 streams (bench/serving): 29 -> 22 ms.
        .send_fairness(false)
        .mtu_discovery_config(Some(mtu_discovery));
    transport
}

/// The upper bound of path MTU discovery towards `remote` (RFC 8899 §5.1.2: probes never
/// exceed the local interface's MTU): the MTU of the interface its route leaves by, less
/// the headers, at most `DATAGRAM_BYTES_MAX_CEILING`. On a 1,500-byte Ethernet or Wi-Fi
/// interface that is quinn's 1,452, as before; on loopback (65,536) and jumbo-frame LANs
/// (9,000) it is 6,548, and a 25 kB thumbnail takes 4 packets instead of 18. Beyond a
/// jumbo LAN's router a smaller MTU costs lost probes (each size is tried three times)
/// until discovery settles; data is never sent in a size not yet acknowledged. A failed
/// lookup (no route, netlink refused) keeps quinn's default.
fn datagram_bytes_max(remote: IpAddr) -> u16 {
    match mtu::interface_and_mtu(remote.to_canonical()) {
        Ok((interface, interface_mtu)) => {
            let payload = interface_mtu.saturating_sub(IP_AND_UDP_HEADER_BYTES);
            let bound = u16::try_from(payload)
                .unwrap_or(DATAGRAM_BYTES_MAX_CEILING)
                .clamp(DATAGRAM_BYTES_MIN, DATAGRAM_BYTES_MAX_CEILING);
            tracing::trace!(%interface, interface_mtu, datagram_bytes_max = bound, "path MTU discovery bound");
            bound
        }
        Err(error) => {
            tracing::debug!(%error, "no interface MTU towards the client; path MTU discovery stops at 1452");
            DATAGRAM_BYTES_MAX_DEFAULT
        }
    }
}

/// Accepts QUIC connections until shutdown, then drains them within the grace period
/// and closes the endpoint.
pub(super) async fn serve<S: Service>(endpoint: quinn::Endpoint, configs: ServerConfigs, shared: Shared<S>) {
    let mut connections = JoinSet::new();
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let remote = incoming.remote_address();
                let span = tracing::info_span!("h3", %remote);
                connections.spawn(serve_connection(incoming, configs.clone(), shared.clone()).instrument(span));
            }
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "an HTTP/3 connection task failed");
                }
            }
            () = shutdown_requested(&mut shutdown) => break,
        }
    }
    // New handshakes are answered with a stateless reset from now on.
    endpoint.set_server_config(None);
    tracing::debug!(open = connections.len(), "HTTP/3: stopped accepting; finishing in-flight requests");
    let drained =
        tokio::time::timeout(shared.grace(), async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = connections.len(), "HTTP/3: shutdown grace expired; closing remaining connections");
        // Aborting drops each h3 connection, which closes it with H3_NO_ERROR.
        connections.shutdown().await;
    }
    let h3_no_error = VarInt::from_u64(Code::H3_NO_ERROR.value()).expect("H3_NO_ERROR is a valid varint");
    endpoint.close(h3_no_error, b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_millis(CLOSE_TIMEOUT_MS), endpoint.wait_idle()).await;
}

async fn serve_connection<S: Service>(incoming: quinn::Incoming, configs: ServerConfigs, shared: Shared<S>) {
    let Some(slot) = shared.open_connection(incoming.remote_address()).await else {
        tracing::debug!("connection limit reached; refusing QUIC connection");
        incoming.refuse();
        return;
    };
    let slot: ConnectionSlot<S> = slot;
    let activity = slot.activity.clone();
    let mut shutdown = shared.shutdown.clone();
    let config = configs.for_client(incoming.remote_address());
    let connecting = match incoming.accept_with(config) {
        Ok(connecting) => connecting,
        Err(error) => {
            tracing::debug!(%error, "QUIC connection attempt failed");
            return;
        }
    };
    let connection = tokio::select! {
        handshake = tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), connecting) => match handshake {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                tracing::debug!(%error, "QUIC handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("QUIC handshake timed out");
                return;
            }
        },
        () = shutdown_requested(&mut shutdown) => return,
    };
    let remote = connection.remote_address();
    let quic_connection = connection.clone();
    let header_bytes_max = u64::try_from(shared.limits.header_bytes_max).unwrap_or(u64::MAX);
    let h3_connection: Result<H3Connection, _> = ::h3::server::builder()
        .max_field_section_size(header_bytes_max)
        .build(quic_streams::Connection::new(connection))
        .await;
    let mut h3_connection = match h3_connection {
        Ok(h3_connection) => h3_connection,
        Err(error) => {
            tracing::debug!(%error, "HTTP/3 connection setup failed");
            return;
        }
    };
    // Requests are read, and those answered from memory answered, in this task: their
    // writes reach quinn one after another before its connection driver (woken by the
    // first) packs them. bench/serving's load, against a task per request: 6.1 datagrams
    // per send call rather than 5.0, a quarter fewer send calls, half the client's
    // acknowledgements to open, node CPU per thumbnail 32-34 µs rather than 44-48.
    // The long way gets a task of its own, so its work can run on another core.
    let mut quick = FuturesUnordered::new();
    let mut requests = JoinSet::new();
    // QUIC's own idle timeout does not fire while the client sends keep-alives, so an
    // idle connection could hold its slot forever: close one that has had no request
    // in flight for `idle_timeout_seconds`.
    let idle_timeout = shared.idle_timeout().unwrap_or(Duration::MAX);
    let mut last_request = tokio::time::Instant::now();
    loop {
        let idle_at = last_request.checked_add(idle_timeout);
        tokio::select! {
            accepted = h3_connection.accept() => match accepted {
                Ok(Some(resolver)) => {
                    last_request = tokio::time::Instant::now();
                    quick.push(answer_from_memory(resolver, remote, &shared, &activity));
                }
                Ok(None) => break,
                Err(error) => {
                    log_connection_end(&error);
                    break;
                }
            },
            Some(answered) = quick.next(), if !quick.is_empty() => {
                last_request = tokio::time::Instant::now();
                go_the_long_way(answered, &mut requests, &shared, &activity);
            }
            Some(joined) = requests.join_next(), if !requests.is_empty() => {
                last_request = tokio::time::Instant::now();
                if let Err(error) = joined {
                    tracing::error!(%error, "an HTTP/3 request task failed");
                }
            }
            () = sleep_until_or_forever(idle_at), if quick.is_empty() && requests.is_empty() => {
                tracing::debug!("closing idle HTTP/3 connection");
                quic_connection.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"idle");
                break;
            }
            // Evicted to make room, or its client stalled a request body.
            // Evicted to make room, or its client stalled a request body: no new
            // requests; those in flight finish (a stalled one within seconds).
            () = activity.close_requested() => {
                tracing::debug!("closing HTTP/3 connection on request");
                if let Err(error) = h3_connection.shutdown(0).await {
                    tracing::debug!(%error, "sending GOAWAY failed");
                }
                break;
            }
            () = shutdown_requested(&mut shutdown) => {
                // GOAWAY tells the client which of its requests will still be answered.
                if let Err(error) = h3_connection.shutdown(0).await {
                    tracing::debug!(%error, "sending GOAWAY failed");
                }
                break;
            }
        }
    }
    while let Some(answered) = quick.next().await {
        go_the_long_way(answered, &mut requests, &shared, &activity);
    }
    while requests.join_next().await.is_some() {}
    linger(&quic_connection).await;
    // What the transport did, for tuning: packets per response, datagrams per send call
    // (segmentation offload), how often the client acknowledged, losses.
    let stats = quic_connection.stats();
    tracing::debug!(
        packets_sent = stats.path.sent_packets,
        datagrams_sent = stats.udp_tx.datagrams,
        send_calls = stats.udp_tx.ios,
        datagrams_received = stats.udp_rx.datagrams,
        acks_received = stats.frame_rx.acks,
        lost_packets = stats.path.lost_packets,
        datagram_bytes = stats.path.current_mtu,
        "HTTP/3 connection finished"
    );
    // Dropping the h3 connection closes QUIC with H3_NO_ERROR.
    drop(h3_connection);
}

/// Closing a QUIC connection discards stream data the peer has not acknowledged yet, so
/// the last responses could be lost. h3 does not expose acknowledgements; wait a few
/// round trips (enough for a retransmission), or until the client closes first.
async fn linger(connection: &quinn::Connection) {
    let round_trips = (connection.rtt() * 2 + Duration::from_millis(25)) * 3;
    let _ = tokio::time::timeout(round_trips.min(Duration::from_millis(LINGER_MAX_MS)), connection.closed()).await;
}

fn log_connection_end(error: &ConnectionError) {
    if error.is_h3_no_error() || matches!(error, ConnectionError::Timeout { .. }) {
        tracing::debug!(%error, "HTTP/3 connection closed");
    } else {
        tracing::debug!(%error, "HTTP/3 connection ended with an error");
    }
}

/// A request whose headers are read and which memory could not answer.
struct LongWay {
    head: http::request::Parts,
    stream: H3RequestStream,
    body_expected: bool,
    _handler: HandlerRunning,
}

/// Reads a request's headers and answers it if `Shared::answer_from_memory` can; gives
/// it back otherwise, for `serve_request`.
async fn answer_from_memory<S: Service>(
    resolver: RequestResolver<quic_streams::Connection, Bytes>,
    remote: SocketAddr,
    shared: &Shared<S>,
    activity: &Arc<Activity>,
) -> Option<LongWay> {
    let (request, mut stream) = match resolver.resolve_request().await {
        Ok(resolved) => resolved,
        Err(error) => {
            tracing::debug!(%error, "reading HTTP/3 request headers failed");
            return None;
        }
    };
    let handler = activity.handler_started();
    let (mut head, ()) = request.into_parts();
    annotate(&mut head, Transport::Http3, remote);
    let body_expected = body_expected(&head, None);
    match shared.answer_from_memory(&head, body_expected) {
        Some(response) => {
            respond(&mut stream, head.method == http::Method::HEAD, Answer::Served(response)).await;
            None
        }
        None => Some(LongWay { head, stream, body_expected, _handler: handler }),
    }
}

/// Starts the long way's task for a request memory could not answer (`None`: answered).
fn go_the_long_way<S: Service>(
    request: Option<LongWay>,
    requests: &mut JoinSet<()>,
    shared: &Shared<S>,
    activity: &Arc<Activity>,
) {
    if let Some(request) = request {
        requests.spawn(serve_request(request, shared.clone(), activity.clone()).in_current_span());
    }
}

/// The long way of `Shared::serve_request`, on a task of its own.
async fn serve_request<S: Service>(request: LongWay, shared: Shared<S>, activity: Arc<Activity>) {
    let LongWay { head, mut stream, body_expected, _handler } = request;
    let is_head = head.method == http::Method::HEAD;
    let answer = shared.serve_request(head, body_expected, &mut StreamSource(&mut stream), &activity).await;
    // A refused or cut-short body is not read further: dropping the request stream after
    // the answer makes quinn send STOP_SENDING (RFC 9114 §4.1), so the client stops.
    respond(&mut stream, is_head, answer).await;
}

/// Sends `answer` as every answer goes out (`nosniff`; no body for HEAD).
async fn respond(stream: &mut H3RequestStream, is_head: bool, answer: Answer) {
    let mut response = answer.into_response();
    finish_response(&mut response);
    if is_head {
        *response.body_mut() = Bytes::new();
        response.extensions_mut().remove::<ResponseFile>();
    }
    if let Err(error) = send_response(stream, response).await {
        tracing::debug!(%error, "sending an HTTP/3 response failed");
    }
}

/// An HTTP/3 request stream's body as chunks.
struct StreamSource<'a>(&'a mut H3RequestStream);

impl BodySource for StreamSource<'_> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self.0.recv_data().await {
            Ok(Some(mut chunk)) => Ok(Some(chunk.copy_to_bytes(chunk.remaining()))),
            Ok(None) => Ok(None),
            Err(error) => Err(TransportError(error.to_string())),
        }
    }
}

async fn send_response(stream: &mut H3RequestStream, mut response: Response<Bytes>) -> Result<(), StreamError> {
    let file = response.extensions_mut().remove::<ResponseFile>().map(FileChunks::new);
    let (parts, body) = response.into_parts();
    stream.send_response(Response::from_parts(parts, ())).await?;
    if !body.is_empty() {
        quic_streams::send_body(stream, body).await?;
    }
    if let Some(mut file) = file {
        while let Some(chunk) = file.next().await {
            match chunk {
                Ok(chunk) => quic_streams::send_body(stream, chunk).await?,
                Err(error) => {
                    tracing::error!(%error, "reading a file being sent failed");
                    stream.stop_stream(Code::H3_INTERNAL_ERROR);
                    return Ok(());
                }
            }
        }
    }
    stream.finish().await
}

/// HTTP/3's "no error" application close code (RFC 9114, 8.1).
const H3_NO_ERROR: u32 = 0x100;

async fn sleep_until_or_forever(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback's MTU (65,536 on Linux) is above the ceiling that segmentation offload
    /// sets, so a loopback client, IPv4 or IPv4-mapped, gets the ceiling.
    #[test]
    fn loopback_clients_get_the_segmentation_offload_ceiling() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(datagram_bytes_max(loopback), DATAGRAM_BYTES_MAX_CEILING);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("an IPv4-mapped address");
        assert_eq!(datagram_bytes_max(mapped), DATAGRAM_BYTES_MAX_CEILING);
    }
}
