//! The tokio shell: HTTPS (hyper + rustls) and HTTP/3 (quinn + h3) on one port,
//! TLS identity, and systemd notifications. Transports only adapt; `api` decides.

mod body;
mod fills;
mod h3;
mod https;
mod metrics_listener;
mod onboarding_listener;
mod quic_streams;
mod slots;
pub mod systemd;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tokio::sync::watch;

use crate::api::metrics::Metrics;
use crate::api::{error_response, BodyPlan, ClientAddr, RequestBody, ResponseFile, Transport};
use crate::config::Limits;
use crate::tls::ServingCertificates;
use body::{BodyBudget, BodyError, BodySource, TransportError};
use slots::{Activity, ConnectionSlot, HandlerRunning, Slots};

pub use crate::identity::Identity;
pub use metrics_listener::{bind_metrics, serve_metrics};
pub use onboarding_listener::{bind_onboarding, serve_onboarding};

/// Time a client gets to complete the TLS (or QUIC) handshake.
const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// The one blocking `http` service every transport adapts to. `crate::api::Api`
/// implements it; tests use small stubs.
pub trait Service: Send + Sync + 'static {
    /// The answer to a request the service can give from memory at once, without
    /// blocking (public thumbnails); `None` sends it the long way.
    fn serve_cached(&self, _head: &http::request::Parts) -> Option<Response<Bytes>> {
        None
    }
    /// Whether `serve_cached` may answer this request once the answer is made: misses of
    /// such requests are made once and waited for (`fills.rs`), not once per request.
    fn cacheable(&self, _head: &http::request::Parts) -> bool {
        false
    }
    /// How to read the body of this request, from its head alone (route, credentials,
    /// declared length). Blocking: transports call it from `spawn_blocking`, and only
    /// for requests that carry a body.
    fn plan_body(&self, head: &http::request::Parts) -> BodyPlan;
    /// Serves one request whose body is already read. Blocking: transports call it
    /// from `spawn_blocking`.
    fn handle(&self, request: Request<RequestBody>) -> Response<Bytes>;
    fn metrics(&self) -> &Metrics;
}

impl Service for crate::api::Api {
    fn serve_cached(&self, head: &http::request::Parts) -> Option<Response<Bytes>> {
        crate::api::Api::serve_cached(self, head)
    }

    fn cacheable(&self, head: &http::request::Parts) -> bool {
        crate::api::Api::cacheable(self, head)
    }

    fn plan_body(&self, head: &http::request::Parts) -> BodyPlan {
        crate::api::Api::plan_body(self, head)
    }

    fn handle(&self, request: Request<RequestBody>) -> Response<Bytes> {
        crate::api::Api::handle(self, request)
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot listen on {address} ({protocol}): {source}{hint}", hint = listen_hint(source))]
    Listen { address: SocketAddr, protocol: &'static str, source: std::io::Error },
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot configure QUIC: {0}")]
    Quic(String),
}

fn listen_hint(source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::AddrInUse => " — address in use: is another edgenode running? choose another with --listen",
        std::io::ErrorKind::PermissionDenied => {
            " — ports below 1024 need CAP_NET_BIND_SERVICE; choose a port from 1024 up with --listen"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            " — no interface has this address; listen on [::] or 0.0.0.0, or choose another with --listen"
        }
        _ => "",
    }
}

/// A bound TCP listener and QUIC endpoint sharing one port, with their TLS settings.
pub struct Listeners {
    tcp: tokio::net::TcpListener,
    tls_acceptor: tokio_rustls::TlsAcceptor,
    quic: quinn::Endpoint,
    quic_configs: h3::ServerConfigs,
    /// The address both are bound to (with the real port when 0 was asked for).
    pub local_addr: SocketAddr,
}

/// Binds TCP and UDP on the same address and port. With port 0, TCP picks the port and
/// UDP follows it (retrying with a new port if UDP's is taken). `[::]` falls back to
/// `0.0.0.0` on hosts without IPv6.
pub async fn bind(
    listen: SocketAddr,
    identity: &Identity,
    certificates: Arc<ServingCertificates>,
    limits: &Limits,
) -> Result<Listeners, NetError> {
    let tls_acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(crate::tls::https_server_config(certificates.clone())?));
    let quic_configs = h3::server_configs(certificates, limits)?;
    let (tcp, udp) = match bind_sockets(listen).await {
        Err(NetError::Listen { source, .. })
            if listen.ip() == IpAddr::from(Ipv6Addr::UNSPECIFIED) && ipv6_unavailable(&source) =>
        {
            let fallback = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), listen.port());
            tracing::warn!(%listen, %fallback, "IPv6 is not available on this host; listening on IPv4 only");
            bind_sockets(fallback).await?
        }
        result => result?,
    };
    let local_addr =
        tcp.local_addr().map_err(|source| NetError::Listen { address: listen, protocol: "TCP", source })?;
    enlarge_quic_buffers(&udp);
    let quic = quinn::Endpoint::new(
        identity.quic_endpoint_config(),
        Some(quic_configs.base()),
        udp,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| NetError::Listen { address: local_addr, protocol: "UDP", source })?;
    Ok(Listeners { tcp, tls_acceptor, quic, quic_configs, local_addr })
}

/// The HTTP/3 socket's buffers each way. Every client's requests and acknowledgements
/// queue in one receive buffer while the node is busy; at the kernel's default (208 KiB)
/// a loaded node dropped 6,155 datagrams in 20,000 requests from 32 loopback clients
/// (bench/serving/run), each drop a retransmission and a client backing off.
const QUIC_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

fn enlarge_quic_buffers(socket: &std::net::UdpSocket) {
    match crate::os::enlarge_udp_buffers(socket, QUIC_SOCKET_BUFFER_BYTES) {
        // Linux reports twice what it grants.
        Ok((receive, _)) if receive / 2 < QUIC_SOCKET_BUFFER_BYTES => tracing::info!(
            granted_bytes = receive / 2,
            wanted_bytes = QUIC_SOCKET_BUFFER_BYTES,
            "the kernel caps the HTTP/3 receive buffer (net.core.rmem_max); under load it drops datagrams"
        ),
        Ok(_) => {}
        Err(error) => tracing::info!(%error, "cannot enlarge the HTTP/3 socket's buffers; keeping the kernel's"),
    }
}

async fn bind_sockets(listen: SocketAddr) -> Result<(tokio::net::TcpListener, std::net::UdpSocket), NetError> {
    const PORT_ATTEMPTS: usize = 8;
    let listen_error = |address, protocol| move |source| NetError::Listen { address, protocol, source };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tcp = tokio::net::TcpListener::bind(listen).await.map_err(listen_error(listen, "TCP"))?;
        let tcp_addr = tcp.local_addr().map_err(listen_error(listen, "TCP"))?;
        match std::net::UdpSocket::bind(tcp_addr) {
            Ok(udp) => return Ok((tcp, udp)),
            // The port TCP picked may be taken for UDP; try another one.
            Err(source)
                if listen.port() == 0 && source.kind() == std::io::ErrorKind::AddrInUse && attempt < PORT_ATTEMPTS => {}
            Err(source) => return Err(listen_error(tcp_addr, "UDP")(source)),
        }
    }
}

fn ipv6_unavailable(error: &std::io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    const EADDRNOTAVAIL: i32 = 99;
    matches!(error.raw_os_error(), Some(EAFNOSUPPORT | EADDRNOTAVAIL))
}

/// Serves HTTPS and HTTP/3 until `shutdown` becomes true (or its sender is dropped),
/// then stops accepting, gives in-flight requests up to `shutdown_grace_seconds`,
/// closes what is left and returns.
pub async fn serve<S: Service>(
    listeners: Listeners,
    service: Arc<S>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let Listeners { tcp, tls_acceptor, quic, quic_configs, local_addr } = listeners;
    // One budget for TCP and QUIC connections together, and one for request bodies.
    let slots = Arc::new(Slots::new(&limits));
    let bodies = Arc::new(BodyBudget::new(&limits));
    let shared = Shared { service, limits, slots, bodies, fills: Arc::default(), shutdown };
    tracing::debug!(%local_addr, "serving HTTPS and HTTP/3");
    tokio::join!(
        https::serve(tcp, tls_acceptor, local_addr.port(), shared.clone()),
        h3::serve(quic, quic_configs, shared)
    );
    Ok(())
}

/// What both transports share.
struct Shared<S> {
    service: Arc<S>,
    limits: Limits,
    slots: Arc<Slots>,
    bodies: Arc<BodyBudget>,
    fills: Arc<fills::Fills>,
    shutdown: watch::Receiver<bool>,
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared {
            service: self.service.clone(),
            limits: self.limits.clone(),
            slots: self.slots.clone(),
            bodies: self.bodies.clone(),
            fills: self.fills.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<S: Service> Shared<S> {
    /// Takes a connection slot for a client at `remote` (see `slots.rs`), or counts
    /// the connection as refused.
    async fn open_connection(&self, remote: SocketAddr) -> Option<ConnectionSlot<S>> {
        self.slots.open(remote, &self.service).await
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(self.limits.shutdown_grace_seconds)
    }

    /// `None` when connections may idle forever (`idle_timeout_seconds = 0`).
    fn idle_timeout(&self) -> Option<Duration> {
        (self.limits.idle_timeout_seconds > 0).then(|| Duration::from_secs(self.limits.idle_timeout_seconds))
    }

    /// The answer the service has in memory for a request without a body (public
    /// thumbnails, most of a feed's requests), made at once. Transports ask this first
    /// and take the long way, `serve_request`, only without it (https.rs boxed, h3.rs on
    /// a task of its own), so that a request answered from memory holds no future of that
    /// way's size: an HTTP/2 stream in flight took 3.6 kB of the node's memory instead of
    /// 6.8 (bench/serving/run keeps 256 in flight).
    fn answer_from_memory(&self, head: &http::request::Parts, body_expected: bool) -> Option<Response<Bytes>> {
        if body_expected {
            return None;
        }
        self.service.serve_cached(head)
    }

    /// The long way, after `answer_from_memory`: reads the body (if the request has
    /// one) as the service plans it, then calls the service: the one request path of
    /// every transport. `TooSlow` also asks the connection to close, so a client
    /// stalling bodies gives its slot back.
    async fn serve_request(
        &self,
        mut head: http::request::Parts,
        body_expected: bool,
        source: &mut impl BodySource,
        activity: &Activity,
    ) -> Answer {
        let transport = head.extensions.get::<Transport>().copied();
        if !body_expected {
            let mut filling = None;
            if self.service.cacheable(&head) {
                filling = self.fills.fill_or_wait(head.uri.path()).await;
                if filling.is_none() {
                    if let Some(response) = self.service.serve_cached(&head) {
                        return Answer::Served(response);
                    }
                }
            }
            let request = Request::from_parts(head, RequestBody::Memory(Bytes::new()));
            let response = call_service(&self.service, request).await;
            // The answer is cached now if it can be: requests waiting for it may look.
            drop(filling);
            return Answer::Served(response);
        }
        let service = self.service.clone();
        let planned = tokio::task::spawn_blocking(move || {
            let plan = service.plan_body(&head);
            (head, plan)
        })
        .await;
        let plan;
        (head, plan) = match planned {
            Ok(planned) => planned,
            Err(error) => {
                tracing::error!(%error, "planning a request body failed");
                return Answer::Served(internal_error());
            }
        };
        if let BodyPlan::Refuse(response) = plan {
            return Answer::Refused(response);
        }
        match body::read(source, plan, &self.bodies).await {
            Ok(read) => {
                let response = call_service(&self.service, Request::from_parts(head, read.body)).await;
                Answer::Served(response)
            }
            Err(error) => {
                tracing::debug!(?error, ?transport, "request body not read");
                if matches!(error, BodyError::TooSlow) {
                    activity.request_close();
                }
                self.service.metrics().record_unhandled(&head, error.response().status());
                match error {
                    BodyError::TooLarge { .. } | BodyError::Busy => Answer::Refused(error.response()),
                    _ => Answer::Failed(error.response()),
                }
            }
        }
    }
}

/// What became of a request.
enum Answer {
    Served(Response<Bytes>),
    /// Answered without reading (all of) the body: the client should stop sending.
    Refused(Response<Bytes>),
    /// The body could not be read; the answer may not reach the client.
    Failed(Response<Bytes>),
}

impl Answer {
    fn into_response(self) -> Response<Bytes> {
        match self {
            Answer::Served(response) | Answer::Refused(response) | Answer::Failed(response) => response,
        }
    }
}

/// Resolves once shutdown is asked for. A dropped sender counts as shutdown, so the
/// server can never outlive whoever controls it.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Attaches what the service needs to know about the transport to a request's head.
fn annotate(head: &mut http::request::Parts, transport: Transport, client: SocketAddr) {
    head.extensions.insert(crate::api::metrics::RequestStarted(std::time::Instant::now()));
    head.extensions.insert(transport);
    // Dual-stack sockets show IPv4 clients as ::ffff:a.b.c.d; rate limits want a.b.c.d.
    let client = SocketAddr::new(client.ip().to_canonical(), client.port());
    head.extensions.insert(ClientAddr(client));
}

/// Whether a request's body is to be read: methods that carry one, or any request
/// that says it has one. (Bodies of other requests are not read.)
fn body_expected(head: &http::request::Parts, end_of_stream: Option<bool>) -> bool {
    if end_of_stream == Some(true) {
        return false;
    }
    matches!(head.method, http::Method::POST | http::Method::PUT | http::Method::PATCH)
        || crate::api::declared_length(&head.headers).is_some_and(|length| length > 0)
}

/// Bytes of a streamed file read at a time: what one response holds in memory.
const RESPONSE_CHUNK_BYTES: usize = 256 * 1024;

/// A response file as chunks, each read on the blocking pool when the transport
/// asks for the next one (so a slow client holds one chunk, not the file).
struct FileChunks {
    file: ResponseFile,
    next: u64,
    end: u64,
    reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
}

impl FileChunks {
    fn new(file: ResponseFile) -> FileChunks {
        let (next, end) = (file.offset, file.offset + file.length);
        FileChunks { file, next, end, reading: None }
    }

    fn poll_next(&mut self, context: &mut std::task::Context<'_>) -> std::task::Poll<Option<std::io::Result<Bytes>>> {
        use std::task::Poll;
        if self.next >= self.end {
            return Poll::Ready(None);
        }
        let reading = self.reading.get_or_insert_with(|| {
            let (file, offset) = (self.file.clone(), self.next);
            let length = usize::try_from(self.end - self.next).unwrap_or(usize::MAX).min(RESPONSE_CHUNK_BYTES);
            tokio::task::spawn_blocking(move || file.read_at(offset, length))
        });
        let read = std::task::ready!(std::future::Future::poll(std::pin::Pin::new(reading), context));
        self.reading = None;
        Poll::Ready(Some(match read {
            Ok(Ok(chunk)) => {
                self.next += chunk.len() as u64;
                Ok(chunk)
            }
            Ok(Err(error)) => Err(error),
            Err(error) => Err(std::io::Error::other(error)),
        }))
    }

    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        std::future::poll_fn(|context| self.poll_next(context)).await
    }
}

/// Headers every answer carries, whatever produced it.
fn finish_response(response: &mut Response<Bytes>) {
    response.headers_mut().insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
}

/// Calls the blocking service on the blocking pool; a panic becomes a 500.
async fn call_service<S: Service>(service: &Arc<S>, request: Request<RequestBody>) -> Response<Bytes> {
    let service = service.clone();
    match tokio::task::spawn_blocking(move || service.handle(request)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "request handler failed");
            internal_error()
        }
    }
}

fn internal_error() -> Response<Bytes> {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the request handler failed")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use bytes::{BufMut as _, BytesMut};
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::ServerName;
    use tokio::net::TcpStream;
    use tokio::task::JoinHandle;
    use tokio_rustls::client::TlsStream;

    use super::*;
    use crate::identity::{self as tls, ALPN_H2, ALPN_H3, ALPN_HTTP1};
    use http::{HeaderMap, Method};
    use sha2::Digest as _;

    use crate::test_support::TempDir;

    const STUB_BODY_BYTES_MAX: usize = 1024;
    const STUB_UPLOAD_BYTES_MAX: u64 = 4 * 1024 * 1024;

    /// Answers `<method> <path> <transport> <client ip> <body bytes>`; `/slow` takes
    /// half a second. `/cached` is cacheable: made the long way (100 ms, counted in
    /// `cached_made`) until made once, then answered from "memory".
    struct Stub {
        metrics: Metrics,
        spool: TempDir,
        uploads: crate::api::UploadTickets,
        cached_made: std::sync::atomic::AtomicUsize,
    }

    impl Default for Stub {
        fn default() -> Stub {
            Stub {
                metrics: Metrics::default(),
                spool: TempDir::new("spool"),
                uploads: Default::default(),
                cached_made: Default::default(),
            }
        }
    }

    impl Service for Stub {
        fn serve_cached(&self, head: &http::request::Parts) -> Option<Response<Bytes>> {
            let made = self.cached_made.load(std::sync::atomic::Ordering::SeqCst) > 0;
            (self.cacheable(head) && made).then(|| Response::new(Bytes::from_static(b"from the cache")))
        }

        fn cacheable(&self, head: &http::request::Parts) -> bool {
            head.uri.path() == "/cached"
        }

        fn plan_body(&self, head: &http::request::Parts) -> BodyPlan {
            if head.uri.path() == "/upload" {
                let ticket = self.uploads.take("someone", 8, 8).unwrap();
                return BodyPlan::Spool { bytes_max: STUB_UPLOAD_BYTES_MAX, dir: self.spool.path().to_owned(), ticket };
            }
            if head.uri.path() == "/private" {
                return BodyPlan::Refuse(error_response(StatusCode::UNAUTHORIZED, "unauthorized", "sign in"));
            }
            if crate::api::declared_length(&head.headers).is_some_and(|length| length > STUB_BODY_BYTES_MAX as u64) {
                return BodyPlan::Refuse(BodyError::TooLarge { bytes_max: STUB_BODY_BYTES_MAX as u64 }.response());
            }
            BodyPlan::Memory { bytes_max: STUB_BODY_BYTES_MAX }
        }

        fn handle(&self, request: Request<RequestBody>) -> Response<Bytes> {
            if request.uri().path() == "/slow" {
                std::thread::sleep(Duration::from_millis(500));
            }
            if request.uri().path() == "/cached" {
                std::thread::sleep(Duration::from_millis(100));
                self.cached_made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Response::new(Bytes::from_static(b"made"));
            }
            let transport = request.extensions().get::<Transport>().copied();
            let client = request.extensions().get::<ClientAddr>().map(|client| client.0.ip());
            let body = match request.body() {
                RequestBody::Memory(bytes) => bytes.len().to_string(),
                RequestBody::Spooled(spooled) => {
                    let on_disk = std::fs::read(spooled.path()).unwrap();
                    assert_eq!(on_disk.len() as u64, spooled.bytes());
                    let sha256: [u8; 32] = sha2::Sha256::digest(&on_disk).into();
                    assert_eq!(&sha256, spooled.sha256());
                    format!("{} spooled", spooled.bytes())
                }
            };
            let text = format!("{} {} {:?} {:?} {}", request.method(), request.uri().path(), transport, client, body);
            Response::new(Bytes::from(text))
        }

        fn metrics(&self) -> &Metrics {
            &self.metrics
        }
    }

    struct TestServer {
        address: SocketAddr,
        pin: String,
        service: Arc<Stub>,
        shutdown: watch::Sender<bool>,
        task: JoinHandle<Result<(), NetError>>,
        _dir: TempDir,
    }

    async fn start_server(limits: Limits) -> TestServer {
        let dir = TempDir::new("serve");
        let identity = Identity::load_or_create(dir.path(), "test").unwrap();
        let certificates =
            Arc::new(ServingCertificates::start(dir.path(), &identity, "test", "0000000000000001").unwrap());
        let listeners = bind("127.0.0.1:0".parse().unwrap(), &identity, certificates, &limits).await.unwrap();
        let address = listeners.local_addr;
        assert_ne!(address.port(), 0);
        let service = Arc::new(Stub::default());
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let task = tokio::spawn(serve(listeners, service.clone(), limits, shutdown_receiver));
        TestServer { address, pin: identity.pin, service, shutdown, task, _dir: dir }
    }

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).unwrap()
        }
    }

    async fn tls_connect(address: SocketAddr, pin: &str, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
        let config = tls::pinned_client_config(pin.to_owned(), vec![alpn.to_vec()]);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(address).await?;
        let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        Ok(tls)
    }

    fn request(method: Method, uri: &str, body: &[u8]) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap()
    }

    async fn reply_of(response: Response<hyper::body::Incoming>) -> Reply {
        let (parts, body) = response.into_parts();
        Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
    }

    /// A request body sent in chunks with no declared length (chunked on HTTP/1.1).
    struct Chunked(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Chunked {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _context: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|chunk| Ok(hyper::body::Frame::data(chunk))))
        }
    }

    fn chunked_request(uri: &str, n_chunks: usize, chunk_bytes: usize) -> Request<Chunked> {
        let chunks = (0..n_chunks).map(|_| Bytes::from(vec![3u8; chunk_bytes])).collect();
        Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(http::header::HOST, "localhost")
            .body(Chunked(chunks))
            .unwrap()
    }

    /// Request bodies the hyper test clients can send.
    trait TestBody: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}
    impl<B: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static> TestBody for B {}
    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    async fn http1_send(server: &TestServer, request: Request<impl TestBody>) -> Reply {
        let tls = tls_connect(server.address, &server.pin, ALPN_HTTP1).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        reply_of(sender.send_request(request).await.unwrap()).await
    }

    async fn http2_send(server: &TestServer, request: Request<impl TestBody>) -> Reply {
        let tls = tls_connect(server.address, &server.pin, ALPN_H2).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        reply_of(sender.send_request(request).await.unwrap()).await
    }

    async fn quic_connect(
        address: SocketAddr,
        pin: &str,
    ) -> Result<(quinn::Endpoint, quinn::Connection), quinn::ConnectionError> {
        let config = tls::pinned_client_config(pin.to_owned(), vec![ALPN_H3.to_vec()]);
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connection = endpoint.connect(address, "localhost").unwrap().await?;
        Ok((endpoint, connection))
    }

    /// Sends one HTTP/3 request; `body` is sent as given, whatever the headers say.
    async fn http3_send(server: &TestServer, request: Request<()>, body: &[u8]) -> Reply {
        let (_endpoint, connection) = quic_connect(server.address, &server.pin).await.unwrap();
        let (mut driver, mut sender) = ::h3::client::new(h3_quinn::Connection::new(connection)).await.unwrap();
        let driver = tokio::spawn(async move { driver.wait_idle().await });
        let mut stream = sender.send_request(request).await.unwrap();
        if !body.is_empty() {
            // The server may stop reading early (413); it still answers.
            let _ = stream.send_data(Bytes::copy_from_slice(body)).await;
        }
        let _ = stream.finish().await;
        let reply = http3_reply(&mut stream).await;
        driver.abort();
        reply
    }

    /// The answer on an HTTP/3 request stream whose request is sent.
    async fn http3_reply<S: ::h3::quic::RecvStream>(stream: &mut ::h3::client::RequestStream<S, Bytes>) -> Reply {
        let response = stream.recv_response().await.unwrap();
        let mut body = BytesMut::new();
        while let Some(chunk) = stream.recv_data().await.unwrap() {
            body.put(chunk);
        }
        Reply { status: response.status(), headers: response.headers().clone(), body: body.freeze() }
    }

    fn http3_request(method: Method, path: &str) -> Request<()> {
        Request::builder().method(method).uri(format!("https://localhost{path}")).body(()).unwrap()
    }

    async fn stop(server: TestServer) {
        server.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.task).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_http1_http2_and_http3_on_one_port() {
        let server = start_server(Limits::default()).await;
        let alt_svc = format!("h3=\":{}\"; ma=86400", server.address.port());

        let reply = http1_send(&server, request(Method::POST, "/echo", b"hello")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "POST /echo Some(Http1) Some(127.0.0.1) 5");
        assert_eq!(reply.headers[ALT_SVC_NAME], alt_svc.as_str());

        let reply = http2_send(&server, request(Method::GET, "https://localhost/feed", b"")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "GET /feed Some(Http2) Some(127.0.0.1) 0");
        assert_eq!(reply.headers[ALT_SVC_NAME], alt_svc.as_str());

        let reply = http3_send(&server, http3_request(Method::PUT, "/media"), &[7; 1000]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "PUT /media Some(Http3) Some(127.0.0.1) 1000");

        stop(server).await;
    }

    const ALT_SVC_NAME: http::header::HeaderName = http::header::ALT_SVC;

    /// A burst of requests for one cacheable answer that is not cached yet (a feed page
    /// after a restart) makes it once; the others wait for it and answer from the cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_misses_for_one_cacheable_answer_makes_it_once() {
        let server = start_server(Limits::default()).await;
        let tls = tls_connect(server.address, &server.pin, ALPN_H2).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        let burst: Vec<_> = (0..24)
            .map(|_| {
                let mut sender = sender.clone();
                tokio::spawn(async move {
                    reply_of(sender.send_request(request(Method::GET, "https://localhost/cached", b"")).await.unwrap())
                        .await
                })
            })
            .collect();
        let mut texts = Vec::new();
        for reply in burst {
            let reply = reply.await.unwrap();
            assert_eq!(reply.status, StatusCode::OK);
            texts.push(reply.text().to_owned());
        }
        assert_eq!(server.service.cached_made.load(std::sync::atomic::Ordering::SeqCst), 1, "{texts:?}");
        assert_eq!(texts.iter().filter(|text| *text == "made").count(), 1, "{texts:?}");
        assert_eq!(texts.iter().filter(|text| *text == "from the cache").count(), 23, "{texts:?}");
        stop(server).await;
    }

    /// Answers from memory skip the long way on every transport (https.rs, h3.rs) but not
    /// what every answer carries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_from_memory_carry_what_every_answer_carries() {
        let server = start_server(Limits::default()).await;
        let alt_svc = format!("h3=\":{}\"; ma=86400", server.address.port());
        let made = http1_send(&server, request(Method::GET, "/cached", b"")).await;
        assert_eq!(made.text(), "made");
        let again = http1_send(&server, request(Method::GET, "/cached", b"")).await;
        assert_eq!(again.text(), "from the cache");
        // (reply, whether it came over TCP and so advertises HTTP/3)
        for (reply, over_tcp) in [
            (made, true),
            (again, true),
            (http2_send(&server, request(Method::GET, "https://localhost/cached", b"")).await, true),
            (http3_send(&server, http3_request(Method::GET, "/cached"), b"").await, false),
        ] {
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.headers[http::header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(
                reply.headers.get(ALT_SVC_NAME).map(|value| value.to_str().unwrap()),
                over_tcp.then_some(alt_svc.as_str())
            );
        }
        assert_eq!(server.service.cached_made.load(std::sync::atomic::Ordering::SeqCst), 1);
        stop(server).await;
    }

    fn assert_body_too_large(reply: &Reply) {
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(reply.text().contains("\"code\":\"body_too_large\""), "{}", reply.text());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_over_the_limit_get_413_on_every_transport() {
        let server = start_server(Limits::default()).await;
        let too_large = vec![1u8; STUB_BODY_BYTES_MAX + 1];

        let reply = http1_send(&server, request(Method::POST, "/echo", &too_large)).await;
        assert_body_too_large(&reply);
        assert!(reply.headers.contains_key(ALT_SVC_NAME));
        let reply = http2_send(&server, request(Method::POST, "https://localhost/echo", &too_large)).await;
        assert_body_too_large(&reply);

        // Declared too large: refused before reading.
        let mut declared = http3_request(Method::POST, "/echo");
        declared.headers_mut().insert(http::header::CONTENT_LENGTH, too_large.len().into());
        assert_body_too_large(&http3_send(&server, declared, &too_large).await);
        // Undeclared: refused while reading.
        let undeclared = http3_request(Method::POST, "/echo");
        assert_body_too_large(&http3_send(&server, undeclared, &too_large).await);

        // Larger than the HTTP/2 flow-control window and the HTTP/1 drain allowance.
        let far_too_large = vec![1u8; 512 * 1024];
        assert_body_too_large(
            &http2_send(&server, request(Method::POST, "https://localhost/echo", &far_too_large)).await,
        );

        // Undeclared (chunked HTTP/1.1, HTTP/2 without content-length): refused while reading.
        assert_body_too_large(&http1_send(&server, chunked_request("/echo", 4, 300)).await);
        assert_body_too_large(&http2_send(&server, chunked_request("https://localhost/echo", 4, 300)).await);
        let reply = http1_send(&server, chunked_request("/echo", 4, 256)).await;
        assert_eq!(reply.text(), "POST /echo Some(Http1) Some(127.0.0.1) 1024");

        // Exactly at the limit is fine.
        let at_limit = vec![1u8; STUB_BODY_BYTES_MAX];
        let reply = http1_send(&server, request(Method::POST, "/echo", &at_limit)).await;
        assert_eq!(reply.status, StatusCode::OK);
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_are_spooled_to_a_file_and_hashed_on_every_transport() {
        let server = start_server(Limits::default()).await;
        let upload = vec![9u8; 300 * 1024];
        let expected =
            |transport: &str| format!("POST /upload Some({transport}) Some(127.0.0.1) {} spooled", upload.len());
        let reply = http1_send(&server, request(Method::POST, "/upload", &upload)).await;
        assert_eq!(reply.text(), expected("Http1"));
        let reply = http2_send(&server, request(Method::POST, "https://localhost/upload", &upload)).await;
        assert_eq!(reply.text(), expected("Http2"));
        let reply = http3_send(&server, http3_request(Method::POST, "/upload"), &upload).await;
        assert_eq!(reply.text(), expected("Http3"));
        // Each spool file is removed once its request is answered.
        assert_eq!(std::fs::read_dir(server.service.spool.path()).unwrap().count(), 0);
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_request_is_answered_before_its_body_is_read() {
        let server = start_server(Limits::default()).await;
        // Larger than every flow-control window: answered although never read.
        let body = vec![1u8; 4 * 1024 * 1024];
        let reply = http2_send(&server, request(Method::POST, "https://localhost/private", &body)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let reply = http3_send(&server, http3_request(Method::POST, "/private"), &body).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let reply = http1_send(&server, request(Method::POST, "/private", &body[..1000])).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_answer_says_nosniff() {
        let server = start_server(Limits::default()).await;
        let too_large = vec![1u8; STUB_BODY_BYTES_MAX + 1];
        for reply in [
            http1_send(&server, request(Method::GET, "/", b"")).await,
            http2_send(&server, request(Method::POST, "https://localhost/echo", &too_large)).await,
            http3_send(&server, http3_request(Method::GET, "/"), b"").await,
        ] {
            assert_eq!(reply.headers[http::header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_beyond_the_node_wide_budget_get_503() {
        let server = start_server(Limits { body_bytes_in_flight_max: 512, ..Limits::default() }).await;
        let reply = http2_send(&server, request(Method::POST, "https://localhost/echo", &[1u8; 1000])).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.text().contains("\"code\":\"busy\""), "{}", reply.text());
        assert!(reply.headers.contains_key(http::header::RETRY_AFTER));
        // Within the budget all is well, and the budget is whole again afterwards.
        let reply = http2_send(&server, request(Method::POST, "https://localhost/echo", &[1u8; 500])).await;
        assert_eq!(reply.text(), "POST /echo Some(Http2) Some(127.0.0.1) 500");
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_body_gets_408_and_its_connection_closes_within_seconds() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let server = start_server(Limits::default()).await;
        let started = std::time::Instant::now();
        let mut tls = tls_connect(server.address, &server.pin, ALPN_HTTP1).await.unwrap();
        tls.write_all(b"POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000\r\n\r\nonly ten b")
            .await
            .unwrap();
        let mut answer = Vec::new();
        // The server answers and closes: read to the end.
        tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut answer)).await.unwrap().ok();
        let elapsed = started.elapsed();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_too_slow"), "{answer}");
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        // The slot is free again.
        for _ in 0..50 {
            if server.service.metrics.connections_open.get() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(server.service.metrics.connections_open.get(), 0);
        stop(server).await;
    }

    /// h3.rs answers from memory in the connection's task and takes the long way on a
    /// task of its own: a request whose body stalls holds up neither kind of answer on
    /// its connection, gets 408 within seconds, and the server carries on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_http3_body_gets_408_and_holds_up_nothing_else() {
        let server = start_server(Limits::default()).await;
        let (_endpoint, connection) = quic_connect(server.address, &server.pin).await.unwrap();
        let (mut driver, mut sender) = ::h3::client::new(h3_quinn::Connection::new(connection)).await.unwrap();
        let driver = tokio::spawn(async move { driver.wait_idle().await });
        let mut declared = http3_request(Method::POST, "/echo");
        declared.headers_mut().insert(http::header::CONTENT_LENGTH, 1000.into());
        let mut stalled = sender.send_request(declared).await.unwrap();
        stalled.send_data(Bytes::from_static(b"only ten b")).await.unwrap();
        // ... and nothing more. Meanwhile, on the same connection:
        for (path, text) in
            [("/cached", "made"), ("/cached", "from the cache"), ("/after", "GET /after Some(Http3) Some(127.0.0.1) 0")]
        {
            let mut stream = sender.send_request(http3_request(Method::GET, path)).await.unwrap();
            stream.finish().await.unwrap();
            let reply =
                tokio::time::timeout(Duration::from_secs(2), http3_reply(&mut stream)).await.expect("answered at once");
            assert_eq!((reply.status, reply.text()), (StatusCode::OK, text));
        }
        // The stalled request's answer comes after the grace period.
        let response = tokio::time::timeout(Duration::from_secs(15), stalled.recv_response()).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        driver.abort();
        // The request task did not die, and others are served.
        let reply = http3_send(&server, http3_request(Method::GET, "/after"), b"").await;
        assert_eq!(reply.text(), "GET /after Some(Http3) Some(127.0.0.1) 0");
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn when_every_slot_is_taken_the_idlest_connection_makes_room() {
        let server = start_server(Limits { connections_max: 2, ..Limits::default() }).await;
        let first = tls_connect(server.address, &server.pin, ALPN_H2).await.unwrap();
        let (_first_sender, first_connection) =
            hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), TokioIo::new(first))
                .await
                .unwrap();
        let first_closed = tokio::spawn(first_connection);
        let _second = tls_connect(server.address, &server.pin, ALPN_HTTP1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // A newcomer gets in; one of the idle connections is closed for it.
        let reply = http1_send(&server, request(Method::GET, "/", b"")).await;
        assert_eq!(reply.status, StatusCode::OK);
        let first_gone = tokio::time::timeout(Duration::from_millis(100), first_closed).await.is_ok();
        assert!(first_gone || server.service.metrics.connections_open.get() <= 2);
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_with_another_pin_fails_the_handshake() {
        let server = start_server(Limits::default()).await;
        let other_dir = TempDir::new("other");
        let other_pin = Identity::load_or_create(other_dir.path(), "other").unwrap().pin;
        assert_ne!(other_pin, server.pin);

        assert!(tls_connect(server.address, &other_pin, ALPN_H2).await.is_err());
        assert!(tls_connect(server.address, &other_pin, ALPN_HTTP1).await.is_err());
        assert!(quic_connect(server.address, &other_pin).await.is_err());
        // The right pin still works on both.
        assert!(tls_connect(server.address, &server.pin, ALPN_H2).await.is_ok());
        assert!(quic_connect(server.address, &server.pin).await.is_ok());
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_over_the_cap_are_refused_and_counted() {
        let server = start_server(Limits { connections_max: 1, ..Limits::default() }).await;
        let first = tls_connect(server.address, &server.pin, ALPN_HTTP1).await.unwrap();
        assert_eq!(server.service.metrics.connections_open.get(), 1);

        assert!(tls_connect(server.address, &server.pin, ALPN_HTTP1).await.is_err());
        assert!(quic_connect(server.address, &server.pin).await.is_err());
        assert_eq!(server.service.metrics.connections_refused_total.get(), 2);

        drop(first);
        // The slot comes back once the server notices the close.
        let mut reopened = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if server.service.metrics.connections_open.get() == 0 {
                reopened = tls_connect(server.address, &server.pin, ALPN_HTTP1).await.is_ok();
                break;
            }
        }
        assert!(reopened);
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_finishes_in_flight_requests_then_stops_listening() {
        let server = start_server(Limits::default()).await;
        let address = server.address;
        let tls = tls_connect(address, &server.pin, ALPN_H2).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        let in_flight = tokio::spawn(sender.send_request(request(Method::GET, "https://localhost/slow", b"")));
        tokio::time::sleep(Duration::from_millis(100)).await;

        server.shutdown.send(true).unwrap();
        let reply = reply_of(in_flight.await.unwrap().unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "GET /slow Some(Http2) Some(127.0.0.1) 0");
        tokio::time::timeout(Duration::from_secs(5), server.task).await.unwrap().unwrap().unwrap();
        assert_eq!(server.service.metrics.connections_open.get(), 0);
        assert!(TcpStream::connect(address).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_finishes_http3_requests_and_closes_with_no_error() {
        let server = start_server(Limits::default()).await;
        let (_endpoint, connection) = quic_connect(server.address, &server.pin).await.unwrap();
        let (mut driver, mut sender) = ::h3::client::new(h3_quinn::Connection::new(connection)).await.unwrap();
        let closed = tokio::spawn(async move { driver.wait_idle().await });
        let mut stream = sender.send_request(http3_request(Method::GET, "/slow")).await.unwrap();
        stream.finish().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        server.shutdown.send(true).unwrap();
        let response = stream.recv_response().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = BytesMut::new();
        while let Some(chunk) = stream.recv_data().await.unwrap() {
            body.put(chunk);
        }
        assert_eq!(&body[..], b"GET /slow Some(Http3) Some(127.0.0.1) 0");
        let close = tokio::time::timeout(Duration::from_secs(5), closed).await.unwrap().unwrap();
        assert!(close.is_h3_no_error(), "{close:?}");
        tokio::time::timeout(Duration::from_secs(5), server.task).await.unwrap().unwrap().unwrap();
        // Nobody answers on the port any more: the handshake fails or never completes.
        let attempt = tokio::time::timeout(Duration::from_secs(1), quic_connect(server.address, &server.pin)).await;
        assert!(!matches!(attempt, Ok(Ok(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_closed() {
        let server = start_server(Limits { idle_timeout_seconds: 1, ..Limits::default() }).await;
        for alpn in [ALPN_HTTP1, ALPN_H2] {
            let tls = tls_connect(server.address, &server.pin, alpn).await.unwrap();
            let io = TokioIo::new(tls);
            let closed = if alpn == ALPN_H2 {
                let (_sender, connection) =
                    hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), io).await.unwrap();
                tokio::time::timeout(Duration::from_secs(5), connection).await
            } else {
                let (_sender, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io).await.unwrap();
                tokio::time::timeout(Duration::from_secs(5), connection).await
            };
            assert!(closed.is_ok(), "the server kept an idle {} connection", String::from_utf8_lossy(alpn));
        }
        let (_endpoint, connection) = quic_connect(server.address, &server.pin).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
        // QUIC's idle timeout and the server's own close of a request-less HTTP/3
        // connection are both due after `idle_timeout_seconds`; either may come first.
        let idle_close = |close: &quinn::ApplicationClose| close.error_code == quinn::VarInt::from_u32(0x100);
        assert!(
            matches!(&closed, Ok(quinn::ConnectionError::TimedOut))
                || matches!(&closed, Ok(quinn::ConnectionError::ApplicationClosed(close)) if idle_close(close)),
            "{closed:?}"
        );
        stop(server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_taken_port_is_reported_with_what_to_do() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = TempDir::new("taken");
        let identity = Identity::load_or_create(dir.path(), "test").unwrap();
        let certificates =
            Arc::new(ServingCertificates::start(dir.path(), &identity, "test", "0000000000000001").unwrap());
        let error = bind(taken.local_addr().unwrap(), &identity, certificates, &Limits::default()).await.err().unwrap();
        assert!(matches!(&error, NetError::Listen { protocol: "TCP", .. }), "{error}");
        assert!(error.to_string().contains("is another edgenode running?"), "{error}");
    }
}
