//! HTTPS over TCP: accept loop with the shared connection cap, TLS handshake, then hyper
//! serving HTTP/1.1 or HTTP/2 as negotiated by ALPN, adapted to the blocking service.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALT_SVC, CONNECTION};
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tracing::Instrument as _;

use super::{
    annotate, body_expected, finish_response, shutdown_requested, Activity, Answer, BodySource, ConnectionSlot,
    FileChunks, ResponseFile, Service, Shared, TransportError, HANDSHAKE_TIMEOUT_MS,
};
use crate::api::Transport;
use crate::identity::{ALPN_H2, ALPN_HTTP1};

/// HTTP/1 clients must send a request's headers within this time, and an idle
/// keep-alive connection is closed after it (hyper starts the same timer while waiting
/// for the next request).
const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// HTTP/2 requests in flight per connection.
const HTTP2_STREAMS_PER_CONNECTION_MAX: u32 = 100;
/// hyper refuses an HTTP/1 read buffer smaller than this.
const HTTP1_BUFFER_BYTES_MIN: usize = 8 * 1024;
/// After refusing an oversized body, read (and drop) at most this much of it so the
/// connection closes cleanly instead of with a reset that can hide our 413 response.
const REFUSED_BODY_DRAIN_BYTES_MAX: u64 = 256 * 1024;
const REFUSED_BODY_DRAIN_TIMEOUT_MS: u64 = 2000;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE_MS: u64 = 100;
/// HTTP/2 flow-control windows: what one stream and one connection may have sent
/// that the node has not read yet. Small enough that unread bodies across every
/// connection stay within the memory budget (1024 connections x 512 KiB); large
/// enough for tens of MB/s on a LAN.
const HTTP2_STREAM_WINDOW_BYTES: u32 = 256 * 1024;
const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 512 * 1024;
/// Writes at least this large are response data and count as activity.
const ACTIVE_WRITE_BYTES_MIN: usize = 128;

/// At shutdown, how long a connection with no request in progress may stay silent.
const SHUTDOWN_SILENCE_MS: u64 = 500;

/// Accepts TCP connections until shutdown, then drains them within the grace period.
pub(super) async fn serve<S: Service>(listener: TcpListener, tls_acceptor: TlsAcceptor, port: u16, shared: Shared<S>) {
    let builders = Arc::new(Builders::new(&shared));
    let alt_svc =
        HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).expect("a port number makes a valid header value");
    let mut connections = JoinSet::new();
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let connection = Connection {
                        remote,
                        tls_acceptor: tls_acceptor.clone(),
                        builders: builders.clone(),
                        alt_svc: alt_svc.clone(),
                        shared: shared.clone(),
                    };
                    let span = tracing::info_span!("https", %remote);
                    connections.spawn(connection.serve(tcp).instrument(span));
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "an HTTPS connection task failed");
                }
            }
            () = shutdown_requested(&mut shutdown) => break,
        }
    }
    drop(listener);
    let open = connections.len();
    tracing::debug!(open, "HTTPS: stopped accepting; finishing in-flight requests");
    // Each connection task saw the same signal and is finishing gracefully.
    let drained =
        tokio::time::timeout(shared.grace(), async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = connections.len(), "HTTPS: shutdown grace expired; closing remaining connections");
        connections.shutdown().await;
    }
}

/// One builder per ALPN outcome: forcing the protocol ALPN chose avoids sniffing; with
/// no ALPN, hyper detects the HTTP/2 preface.
struct Builders {
    detect: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new<S>(shared: &Shared<S>) -> Builders {
        let limits = &shared.limits;
        let builder = || {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS))
                .max_buf_size(limits.header_bytes_max.max(HTTP1_BUFFER_BYTES_MIN))
                .keep_alive(true);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(HTTP2_STREAMS_PER_CONNECTION_MAX)
                .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
                .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
                .max_header_list_size(u32::try_from(limits.header_bytes_max).unwrap_or(u32::MAX));
            builder
        };
        Builders { detect: builder(), http1: builder().http1_only(), http2: builder().http2_only() }
    }

    fn for_alpn(&self, alpn: Option<&[u8]>) -> &auto::Builder<TokioExecutor> {
        match alpn {
            Some(ALPN_H2) => &self.http2,
            Some(ALPN_HTTP1) => &self.http1,
            _ => &self.detect,
        }
    }
}

/// Everything one accepted TCP connection needs.
struct Connection<S: Service> {
    remote: SocketAddr,
    tls_acceptor: TlsAcceptor,
    builders: Arc<Builders>,
    alt_svc: HeaderValue,
    shared: Shared<S>,
}

impl<S: Service> Connection<S> {
    async fn serve(self, tcp: TcpStream) {
        let Connection { remote, tls_acceptor, builders, alt_svc, shared } = self;
        let Some(slot) = shared.open_connection(remote).await else {
            tracing::debug!(%remote, "connection limit reached; refusing TCP connection");
            return; // dropping `tcp` closes it
        };
        let slot: ConnectionSlot<S> = slot;
        // Responses are written whole; Nagle would only delay their last segment.
        let _ = tcp.set_nodelay(true);
        let mut shutdown = shared.shutdown.clone();
        let tls = tokio::select! {
            handshake = tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), tls_acceptor.accept(tcp)) => {
                match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                }
            }
            () = shutdown_requested(&mut shutdown) => return,
        };
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let activity = slot.activity.clone();
        let io = TokioIo::new(ActivityIo { inner: tls, activity: activity.clone() });
        let service = {
            let activity = activity.clone();
            let shared = shared.clone();
            hyper::service::service_fn(move |request| answer(request, &shared, remote, &activity, &alt_svc))
        };
        let connection = builders.for_alpn(alpn.as_deref()).serve_connection(io, service);
        tokio::pin!(connection);
        let idle = activity.until_idle(shared.idle_timeout());
        tokio::pin!(idle);
        let mut shutting_down = false;
        // Once shutting down, a connection silent this long with no request in progress
        // closes: hyper's graceful shutdown of an HTTP/2 connection that never sent its
        // preface (browsers pre-connect) would wait out the whole grace period.
        let drained = activity.until_idle(Some(Duration::from_millis(SHUTDOWN_SILENCE_MS)));
        tokio::pin!(drained);
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "HTTPS connection ended with an error");
                    }
                    return;
                }
                () = &mut idle => {
                    tracing::debug!("closing idle HTTPS connection");
                    return;
                }
                // Evicted to make room, or its client stalled a request body.
                () = activity.close_requested(), if !shutting_down => {
                    tracing::debug!("closing HTTPS connection on request");
                    shutting_down = true;
                    connection.as_mut().graceful_shutdown();
                }
                // HTTP/1 closes once the current response is written; HTTP/2 sends
                // GOAWAY and finishes the streams it has. `serve` bounds the wait.
                () = shutdown_requested(&mut shutdown), if !shutting_down => {
                    shutting_down = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = &mut drained, if shutting_down => {
                    tracing::debug!("closing an HTTPS connection with nothing in progress at shutdown");
                    return;
                }
            }
        }
    }
}

/// What `answer` gives hyper: the answer made, or the long way to one.
type Answering = Either<
    Ready<Result<Response<Answered>, Infallible>>,
    Pin<Box<dyn Future<Output = Result<Response<Answered>, Infallible>> + Send>>,
>;

/// A request's answer: at once from memory when the service has it there, otherwise
/// the long way, boxed (`Shared::answer_from_memory` says why).
fn answer<S: Service>(
    request: Request<Incoming>,
    shared: &Shared<S>,
    remote: SocketAddr,
    activity: &Arc<Activity>,
    alt_svc: &HeaderValue,
) -> Answering {
    let transport = if request.version() == http::Version::HTTP_2 { Transport::Http2 } else { Transport::Http1 };
    let (mut head, body) = request.into_parts();
    annotate(&mut head, transport, remote);
    let expected = body_expected(&head, Some(body.is_end_stream()));
    if let Some(response) = shared.answer_from_memory(&head, expected) {
        return Either::Left(ready(Ok(finish(response, body, alt_svc.clone(), false))));
    }
    let (shared, activity, alt_svc) = (shared.clone(), activity.clone(), alt_svc.clone());
    Either::Right(Box::pin(handle_request(head, body, expected, shared, activity, alt_svc)))
}

/// Reads the body as the service plans it, calls the service, adds `alt-svc`.
async fn handle_request<S: Service>(
    head: http::request::Parts,
    mut body: Incoming,
    expected: bool,
    shared: Shared<S>,
    activity: Arc<Activity>,
    alt_svc: HeaderValue,
) -> Result<Response<Answered>, Infallible> {
    let transport = head.extensions.get::<Transport>().copied();
    // From here the connection is busy; a slow body is bounded by the minimum rate.
    let _handler = activity.handler_started();
    // A client that sent `Expect: 100-continue` waits for our answer and has sent no
    // body; reading would make hyper send `100 Continue`.
    let expects_continue = head.headers.contains_key(http::header::EXPECT);
    let mut source = IncomingSource(&mut body);
    let answer = shared.serve_request(head, expected, &mut source, &activity).await;
    let http1 = transport == Some(Transport::Http1);
    let close = http1 && matches!(answer, Answer::Failed(_));
    if http1 && matches!(answer, Answer::Refused(_)) && !expects_continue {
        drain_refused_body(&mut body).await;
    }
    Ok(finish(answer.into_response(), body, alt_svc, close))
}

/// The response as hyper sends it: `nosniff` and `alt-svc` added, `Connection: close`
/// when the HTTP/1 connection is to close, a file answer as chunks.
fn finish(mut response: Response<Bytes>, body: Incoming, alt_svc: HeaderValue, close: bool) -> Response<Answered> {
    finish_response(&mut response);
    response.headers_mut().insert(ALT_SVC, alt_svc);
    if close {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let file = response.extensions_mut().remove::<ResponseFile>().map(FileChunks::new);
    response.map(|data| Answered { data: Some(data).filter(|data| !data.is_empty()), file, _request_body: body })
}

/// A response body that keeps the request's body open until the response is sent:
/// on HTTP/2, dropping an unread request body resets the stream, and a reset that
/// overtakes the answer (a 401 to an unfinished upload) would hide it.
/// The answer is its bytes, or a file streamed in chunks.
struct Answered {
    data: Option<Bytes>,
    file: Option<FileChunks>,
    _request_body: Incoming,
}

impl hyper::body::Body for Answered {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
        }
        match self.file.as_mut() {
            Some(file) => file.poll_next(context).map(|chunk| chunk.map(|chunk| chunk.map(hyper::body::Frame::data))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.file.as_ref().is_none_or(|file| file.next >= file.end)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let file_bytes = self.file.as_ref().map_or(0, |file| file.end - file.next);
        hyper::body::SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64) + file_bytes)
    }
}

/// hyper's request body as chunks.
struct IncomingSource<'a>(&'a mut Incoming);

impl BodySource for IncomingSource<'_> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            match self.0.frame().await {
                None => return Ok(None),
                Some(Err(error)) => return Err(TransportError(error.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing the API uses.
                }
            }
        }
    }
}

/// Reads what is left of a refused HTTP/1 body, bounded in bytes and time, so the
/// client sees the 413 rather than a connection reset; a larger remainder is left
/// unread and hyper closes the connection. (HTTP/2 needs none of this: hyper ends the
/// unread stream with RST_STREAM(NO_ERROR) and the connection carries on.)
async fn drain_refused_body(body: &mut Incoming) {
    let remaining = hyper::body::Body::size_hint(body).upper();
    if remaining.is_some_and(|remaining| remaining > REFUSED_BODY_DRAIN_BYTES_MAX) {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_millis(REFUSED_BODY_DRAIN_TIMEOUT_MS), async {
        let mut drained_bytes = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            drained_bytes += frame.data_ref().map_or(0, |data| data.len() as u64);
            if drained_bytes > REFUSED_BODY_DRAIN_BYTES_MAX {
                break;
            }
        }
    })
    .await;
}

/// The TLS stream, noting response-sized writes in `Activity` (control frames such as
/// PING or SETTINGS acknowledgements are smaller than `ACTIVE_WRITE_BYTES_MIN`).
struct ActivityIo {
    inner: TlsStream<TcpStream>,
    activity: Arc<Activity>,
}

impl AsyncRead for ActivityIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(context, buffer)
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(context, data);
        if matches!(result, Poll::Ready(Ok(written)) if written >= ACTIVE_WRITE_BYTES_MIN) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(context, buffers);
        if matches!(result, Poll::Ready(Ok(written)) if written >= ACTIVE_WRITE_BYTES_MIN) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}
