//! The tokio shell: HTTPS (hyper + rustls) and HTTP/3 (quinn + h3) on one port,
//! TLS identity, and systemd notifications. Transports only adapt; `api` decides.

mod h3;
mod https;
pub mod systemd;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::api::metrics::Metrics;
use crate::api::{error_response, ClientAddr, Transport};
use crate::config::Limits;

pub use crate::identity::Identity;

/// Time a client gets to complete the TLS (or QUIC) handshake.
const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// The one blocking `http` service every transport adapts to. `crate::api::Api`
/// implements it; tests use small stubs.
pub trait Service: Send + Sync + 'static {
    /// Serves one request whose body is already read. Blocking: transports call it
    /// from `spawn_blocking`.
    fn handle(&self, request: Request<Bytes>) -> Response<Bytes>;
    /// Largest body this request may carry; transports answer 413 beyond it.
    fn body_bytes_max(&self, method: &Method, path: &str) -> usize;
    fn metrics(&self) -> &Metrics;
}

impl Service for crate::api::Api {
    fn handle(&self, request: Request<Bytes>) -> Response<Bytes> {
        crate::api::Api::handle(self, request)
    }

    fn body_bytes_max(&self, method: &Method, path: &str) -> usize {
        crate::api::Api::body_bytes_max(self, method, path)
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
    /// The address both are bound to (with the real port when 0 was asked for).
    pub local_addr: SocketAddr,
}

/// Binds TCP and UDP on the same address and port. With port 0, TCP picks the port and
/// UDP follows it (retrying with a new port if UDP's is taken). `[::]` falls back to
/// `0.0.0.0` on hosts without IPv6.
pub async fn bind(listen: SocketAddr, identity: &Identity, limits: &Limits) -> Result<Listeners, NetError> {
    let tls_acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(crate::identity::https_server_config(identity)?));
    let quic_config = h3::server_config(identity, limits)?;
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
    let quic =
        quinn::Endpoint::new(identity.quic_endpoint_config(), Some(quic_config), udp, Arc::new(quinn::TokioRuntime))
            .map_err(|source| NetError::Listen { address: local_addr, protocol: "UDP", source })?;
    Ok(Listeners { tcp, tls_acceptor, quic, local_addr })
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
    let Listeners { tcp, tls_acceptor, quic, local_addr } = listeners;
    // One budget for TCP and QUIC connections together.
    let connection_permits = Arc::new(Semaphore::new(limits.connections_max));
    let per_address = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let shared = Shared { service, limits, connection_permits, per_address, shutdown };
    tracing::debug!(%local_addr, "serving HTTPS and HTTP/3");
    tokio::join!(https::serve(tcp, tls_acceptor, local_addr.port(), shared.clone()), h3::serve(quic, shared));
    Ok(())
}

/// What both transports share.
struct Shared<S> {
    service: Arc<S>,
    limits: Limits,
    connection_permits: Arc<Semaphore>,
    /// Open connections by client address, so one address cannot take every slot.
    per_address: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    shutdown: watch::Receiver<bool>,
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared {
            service: self.service.clone(),
            limits: self.limits.clone(),
            connection_permits: self.connection_permits.clone(),
            per_address: self.per_address.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<S: Service> Shared<S> {
    /// Takes a connection slot for a client at `remote`, or counts the connection as
    /// refused (every slot taken, or this address holds its share already).
    fn open_connection(&self, remote: SocketAddr) -> Option<ConnectionSlot<S>> {
        let address = remote.ip().to_canonical();
        let refused = || {
            self.service.metrics().connections_refused_total.fetch_add(1, Ordering::Relaxed);
            None
        };
        {
            let mut per_address = crate::locking::lock(&self.per_address);
            let open = per_address.entry(address).or_insert(0);
            if *open >= self.limits.connections_per_address_max {
                return refused();
            }
            *open += 1;
        }
        let owner = AddressShare { address, per_address: self.per_address.clone() };
        match self.connection_permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.service.metrics().connections_open.fetch_add(1, Ordering::Relaxed);
                Some(ConnectionSlot { _permit: permit, _address: owner, service: self.service.clone() })
            }
            Err(_) => refused(),
        }
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(self.limits.shutdown_grace_seconds)
    }

    /// `None` when connections may idle forever (`idle_timeout_seconds = 0`).
    fn idle_timeout(&self) -> Option<Duration> {
        (self.limits.idle_timeout_seconds > 0).then(|| Duration::from_secs(self.limits.idle_timeout_seconds))
    }
}

/// Held for a connection's lifetime: its share of `connections_max` and its place in
/// `connections_open`.
struct ConnectionSlot<S: Service> {
    _permit: OwnedSemaphorePermit,
    _address: AddressShare,
    service: Arc<S>,
}

/// One connection's count against its client address; given back when dropped.
struct AddressShare {
    address: IpAddr,
    per_address: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressShare {
    fn drop(&mut self) {
        let mut per_address = crate::locking::lock(&self.per_address);
        if let Some(open) = per_address.get_mut(&self.address) {
            *open -= 1;
            if *open == 0 {
                per_address.remove(&self.address);
            }
        }
    }
}

impl<S: Service> Drop for ConnectionSlot<S> {
    fn drop(&mut self) {
        self.service.metrics().connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once shutdown is asked for. A dropped sender counts as shutdown, so the
/// server can never outlive whoever controls it.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The request the service sees: body read, transport and client address attached.
fn api_request(parts: http::request::Parts, body: Bytes, transport: Transport, client: SocketAddr) -> Request<Bytes> {
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(transport);
    // Dual-stack sockets show IPv4 clients as ::ffff:a.b.c.d; rate limits want a.b.c.d.
    let client = SocketAddr::new(client.ip().to_canonical(), client.port());
    request.extensions_mut().insert(ClientAddr(client));
    request
}

/// Calls the blocking service on the blocking pool; a panic becomes a 500.
async fn call_service<S: Service>(service: &Arc<S>, request: Request<Bytes>) -> Response<Bytes> {
    let service = service.clone();
    match tokio::task::spawn_blocking(move || service.handle(request)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "request handler failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the request handler failed")
        }
    }
}

fn body_too_large(limit_bytes: usize) -> Response<Bytes> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body exceeds the limit of {limit_bytes} bytes for this endpoint"),
    )
}

fn body_unreadable() -> Response<Bytes> {
    error_response(StatusCode::BAD_REQUEST, "body_unreadable", "the request body could not be read")
}

/// True when the request declares a `content-length` above `limit_bytes`, so it can be
/// refused before any body byte is read.
fn declared_length_exceeds(headers: &HeaderMap, limit_bytes: usize) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .is_some_and(|length| length > limit_bytes as u64)
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

    use crate::test_support::TempDir;

    const STUB_BODY_BYTES_MAX: usize = 1024;

    /// Answers `<method> <path> <transport> <client ip> <body bytes>`; `/slow` takes
    /// half a second.
    #[derive(Default)]
    struct Stub {
        metrics: Metrics,
    }

    impl Service for Stub {
        fn handle(&self, request: Request<Bytes>) -> Response<Bytes> {
            if request.uri().path() == "/slow" {
                std::thread::sleep(Duration::from_millis(500));
            }
            let transport = request.extensions().get::<Transport>().copied();
            let client = request.extensions().get::<ClientAddr>().map(|client| client.0.ip());
            let text = format!(
                "{} {} {:?} {:?} {}",
                request.method(),
                request.uri().path(),
                transport,
                client,
                request.body().len()
            );
            Response::new(Bytes::from(text))
        }

        fn body_bytes_max(&self, _method: &Method, _path: &str) -> usize {
            STUB_BODY_BYTES_MAX
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
        let listeners = bind("127.0.0.1:0".parse().unwrap(), &identity, &limits).await.unwrap();
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
        let response = stream.recv_response().await.unwrap();
        let mut body = BytesMut::new();
        while let Some(chunk) = stream.recv_data().await.unwrap() {
            body.put(chunk);
        }
        driver.abort();
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
        assert_eq!(server.service.metrics.connections_open.load(Ordering::Relaxed), 1);

        assert!(tls_connect(server.address, &server.pin, ALPN_HTTP1).await.is_err());
        assert!(quic_connect(server.address, &server.pin).await.is_err());
        assert_eq!(server.service.metrics.connections_refused_total.load(Ordering::Relaxed), 2);

        drop(first);
        // The slot comes back once the server notices the close.
        let mut reopened = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if server.service.metrics.connections_open.load(Ordering::Relaxed) == 0 {
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
        assert_eq!(server.service.metrics.connections_open.load(Ordering::Relaxed), 0);
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
        let error = bind(taken.local_addr().unwrap(), &identity, &Limits::default()).await.err().unwrap();
        assert!(matches!(&error, NetError::Listen { protocol: "TCP", .. }), "{error}");
        assert!(error.to_string().contains("is another edgenode running?"), "{error}");
    }
}
