//! An HTTPS client for one transport (HTTP/1.1, HTTP/2 or HTTP/3) that trusts the
//! node only by its SPKI pin, exactly as a paired phone does.
//!
//! The API is blocking: each `Client` owns a small tokio runtime, so tests read as
//! plain sequences of requests. Each request gets its own connection: a server that
//! closes a connection after an error (say, an oversized body) cannot spoil the
//! next request, and every request is one independent, reproducible event.
//!
//! Every JSON answer is checked against the schema the node's `/openapi.json`
//! documents for its method, path and status (`contract::AnswerContract`, the
//! document fetched once per client and node); an answer that differs panics with
//! the request, the status, the validator's message and the body.

use std::cell::{OnceCell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Method, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::contract::AnswerContract;
use crate::node::Node;

/// How long one request (connection, handshake, body, response) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a finished request waits for its connection to close.
const CONNECTION_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How many requests the transcript keeps for failure reports.
const TRANSCRIPT_ENTRIES_MAX: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http1,
    Http2,
    Http3,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Http1, Transport::Http2, Transport::Http3];

    fn alpn(self) -> &'static [u8] {
        match self {
            Transport::Http1 => b"http/1.1",
            Transport::Http2 => b"h2",
            Transport::Http3 => b"h3",
        }
    }

    fn version(self) -> Version {
        match self {
            Transport::Http1 => Version::HTTP_11,
            Transport::Http2 => Version::HTTP_2,
            Transport::Http3 => Version::HTTP_3,
        }
    }
}

/// One answer from the node.
#[derive(Debug, Clone)]
pub struct Response {
    /// The request this answers, e.g. `GET /api/v1/feed (with token)`, for messages.
    pub request: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as JSON; `Null` for an empty body. Panics when the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        if self.body.is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!("{}: answer {} is not JSON ({error}): {}", self.request, self.status, self.body_text())
        })
    }

    /// The body as text (lossy), cut to a readable length for messages.
    pub fn body_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        if text.chars().count() > 600 {
            format!("{}… ({} bytes)", text.chars().take(600).collect::<String>(), self.body.len())
        } else {
            text.into_owned()
        }
    }
}

/// A client of one node over one transport.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    transport: Transport,
    server: SocketAddr,
    pin: String,
    source_ip: IpAddr,
    /// The last requests and their answers, printed when a test fails.
    transcript: RefCell<Vec<String>>,
    /// What the node's `/openapi.json` promises its answers are, fetched at the
    /// first JSON answer; `None` when the server has no such document.
    contract: RefCell<OnceCell<Option<Arc<AnswerContract>>>>,
}

impl Client {
    /// A client that connects from 127.0.0.1.
    pub fn new(node: &Node, transport: Transport) -> Client {
        Client::from_address(node, transport, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// A client whose connections come from `source_ip` (any 127.x.y.z works on
    /// Linux loopback), so the node sees a different client address.
    pub fn from_address(node: &Node, transport: Transport, source_ip: IpAddr) -> Client {
        // One worker thread, so connection tasks (QUIC close, hyper shutdown) run on
        // between requests too.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("building a tokio runtime for the client");
        Client {
            runtime,
            transport,
            server: node.addr(),
            pin: node.pin().to_owned(),
            source_ip,
            transcript: RefCell::new(Vec::new()),
            contract: RefCell::new(OnceCell::new()),
        }
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Follows the node after a restart (new port, same pin expected by the caller).
    pub fn reconnect_to(&mut self, node: &Node) {
        self.server = node.addr();
        self.pin = node.pin().to_owned();
        self.contract = RefCell::new(OnceCell::new());
    }

    /// Sends one request and returns the whole answer. Panics (with the request) when
    /// the exchange fails below HTTP, or the answer's HTTP version is not the one this
    /// client's transport speaks.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        self.try_request(method, path, token, headers, body).unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Like `request`, but an exchange that fails below HTTP (refused, reset, timed
    /// out: say, the node was killed mid-request) is returned as `Err` with the same
    /// message `request` panics with, for tests where that is an expected outcome.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, String> {
        let method = Method::from_bytes(method.as_bytes()).expect("a valid method");
        let request_line = format!("{method} {path}{}", if token.is_some() { " (with token)" } else { "" });
        let mut builder = http::Request::builder().method(method.clone()).uri(self.uri(path));
        if self.transport == Transport::Http1 {
            builder = builder.header(http::header::HOST, self.server.to_string());
        }
        if let Some(token) = token {
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Bytes::from(body)).expect("a valid request");

        let exchange = async {
            match self.transport {
                Transport::Http1 | Transport::Http2 => self.send_over_tls_tcp(request).await,
                Transport::Http3 => self.send_over_quic(request).await,
            }
        };
        let result = self.runtime.block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, exchange).await });
        let (version, mut response) = match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                self.record(format!("{request_line} -> transport error: {error:#}"));
                return Err(format!("{request_line} over {:?} failed: {error:#}", self.transport));
            }
            Err(_) => {
                self.record(format!("{request_line} -> timed out"));
                return Err(format!("{request_line} over {:?}: no answer within {REQUEST_TIMEOUT:?}", self.transport));
            }
        };
        self.record(format!("{request_line} -> {} {}", response.status, error_code_of(&response)));
        response.request = request_line.clone();
        assert_eq!(
            version,
            self.transport.version(),
            "{request_line}: answered over {version:?}, but this client speaks {:?}",
            self.transport
        );
        self.check_against_contract(method.as_str(), path, &response);
        Ok(response)
    }

    /// Panics when `response` is JSON and not what `/openapi.json` documents for it.
    fn check_against_contract(&self, method: &str, path: &str, response: &Response) {
        let is_json = response.header("content-type").is_some_and(|value| value.starts_with("application/json"));
        if !is_json || method == "HEAD" || response.body.is_empty() || path.split('?').next() == Some("/openapi.json") {
            return;
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
            panic!("{}: answer {} says JSON but is not: {}", response.request, response.status, response.body_text())
        };
        let Some(contract) = self.contract() else { return };
        if let Err(mismatch) = contract.check(method, path, response.status, &body) {
            panic!(
                "{}: answer {} differs from /openapi.json: {mismatch}\nbody: {}",
                response.request,
                response.status,
                response.body_text()
            );
        }
    }

    /// The node's answer contract, fetched once; `None` when it has no
    /// `/openapi.json` (or could not answer for it: the answer is not checked then).
    fn contract(&self) -> Option<Arc<AnswerContract>> {
        let cell = self.contract.borrow();
        if let Some(contract) = cell.get() {
            return contract.clone();
        }
        // `check_against_contract` passes over `/openapi.json` itself: no recursion.
        let fetched = match self.try_request("GET", "/openapi.json", None, &[], Vec::new()) {
            Ok(response) if response.status == 200 => serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .filter(|document| document["openapi"].is_string())
                .map(|document| Arc::new(AnswerContract::new(document))),
            // The node may be gone (a test killed it): check the next answer instead.
            _ => return None,
        };
        cell.get_or_init(|| fetched).clone()
    }

    /// GET → (status, JSON body).
    pub fn get_json(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        status_and_json(self.request("GET", path, token, &[], Vec::new()))
    }

    /// POST a JSON body → (status, JSON body).
    pub fn post_json(&self, path: &str, token: Option<&str>, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send_json("POST", path, token, body)
    }

    /// PUT a JSON body → (status, JSON body).
    pub fn put_json(&self, path: &str, token: Option<&str>, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send_json("PUT", path, token, body)
    }

    /// DELETE → (status, JSON body or `Null`).
    pub fn delete_json(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        status_and_json(self.request("DELETE", path, token, &[], Vec::new()))
    }

    /// `method` with a JSON body → (status, JSON body).
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let body = serde_json::to_vec(body).expect("serialising JSON");
        status_and_json(self.request(method, path, token, &[("content-type", "application/json")], body))
    }

    /// PUT raw bytes with a content type → (status, JSON body).
    pub fn put_bytes(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        status_and_json(self.request("PUT", path, token, &[("content-type", content_type)], body))
    }

    fn uri(&self, path: &str) -> String {
        match self.transport {
            // HTTP/1.1 sends origin-form plus a Host header.
            Transport::Http1 => path.to_owned(),
            Transport::Http2 | Transport::Http3 => format!("https://{}{path}", self.server),
        }
    }

    fn record(&self, entry: String) {
        let mut transcript = self.transcript.borrow_mut();
        if transcript.len() == TRANSCRIPT_ENTRIES_MAX {
            transcript.remove(0);
        }
        transcript.push(entry);
    }

    fn tls_config(&self) -> rustls::ClientConfig {
        edgenode::identity::pinned_client_config(self.pin.clone(), vec![self.transport.alpn().to_vec()])
    }

    async fn send_over_tls_tcp(&self, request: http::Request<Bytes>) -> anyhow::Result<(Version, Response)> {
        let socket = match self.source_ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(self.source_ip, 0))?;
        let tcp = socket.connect(self.server).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.tls_config()));
        let server_name = rustls::pki_types::ServerName::IpAddress(self.server.ip().into());
        let tls = connector.connect(server_name, tcp).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        anyhow::ensure!(
            alpn.as_deref() == Some(self.transport.alpn()),
            "ALPN: asked for {:?}, the node chose {:?}",
            String::from_utf8_lossy(self.transport.alpn()),
            alpn.map(|protocol| String::from_utf8_lossy(&protocol).into_owned())
        );
        let io = TokioIo::new(EarlyAnswerTolerant { inner: tls, write_failed: false });
        let request = request.map(Full::new);
        let (version, response) = if self.transport == Transport::Http2 {
            let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            let connection = tokio::spawn(connection);
            let answer = read_answer(sender.send_request(request).await?).await?;
            close_connection(sender, connection).await;
            answer
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            let connection = tokio::spawn(connection);
            let answer = read_answer(sender.send_request(request).await?).await?;
            close_connection(sender, connection).await;
            answer
        };
        Ok((version, response))
    }

    async fn send_over_quic(&self, request: http::Request<Bytes>) -> anyhow::Result<(Version, Response)> {
        let mut endpoint = quinn::Endpoint::client(SocketAddr::new(self.source_ip, 0))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(self.tls_config())?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connection = endpoint.connect(self.server, &self.server.ip().to_string())?.await?;
        let (mut driver, mut send_request) = h3::client::new(h3_quinn::Connection::new(connection.clone())).await?;
        let driver = tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });

        let (mut head, body) = request.into_parts();
        // hyper labels HTTP/1.1 and HTTP/2 bodies with their length; browsers do the
        // same over HTTP/3, so this client does too.
        if !body.is_empty() && !head.headers.contains_key(http::header::CONTENT_LENGTH) {
            head.headers.insert(http::header::CONTENT_LENGTH, body.len().into());
        }
        let mut stream = send_request.send_request(http::Request::from_parts(head, ())).await?;
        // The node may answer before it has read the whole body (say, 413 for an
        // oversized upload) and stop our sending; the answer is what counts then.
        let sent = async {
            if !body.is_empty() {
                stream.send_data(body).await?;
            }
            stream.finish().await
        }
        .await;
        let response = match stream.recv_response().await {
            Ok(response) => response,
            Err(receive_error) => match sent {
                Err(send_error) => anyhow::bail!("sending the request: {send_error}; then: {receive_error}"),
                Ok(()) => return Err(receive_error.into()),
            },
        };
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await? {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        let version = response.version();
        let (parts, ()) = response.into_parts();
        drop(stream);
        drop(send_request);
        driver.abort();
        // The runtime's worker sends CONNECTION_CLOSE in the background.
        connection.close(0u32.into(), b"done");
        Ok((version, Response { request: String::new(), status: parts.status.as_u16(), headers: parts.headers, body }))
    }
}

/// Lets hyper read an answer the node sent before it had read the whole request.
///
/// A node may refuse an oversized HTTP/1.1 body early (413) and close the connection
/// without reading the rest; our remaining writes then fail with EPIPE or a reset,
/// and hyper would report that instead of the answer waiting in the socket. Browsers
/// and curl read that answer, so this client does too: once a write fails, further
/// writes are dropped and reading goes on. If there is no answer to read, hyper still
/// reports the closed connection.
struct EarlyAnswerTolerant<T> {
    inner: T,
    write_failed: bool,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for EarlyAnswerTolerant<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for EarlyAnswerTolerant<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.write_failed {
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(Err(error)) if is_peer_gone(&error) => {
                self.write_failed = true;
                std::task::Poll::Ready(Ok(buf.len()))
            }
            other => other,
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.write_failed {
            return std::task::Poll::Ready(Ok(()));
        }
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Ready(Err(error)) if is_peer_gone(&error) => {
                self.write_failed = true;
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.write_failed {
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn is_peer_gone(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
    )
}

impl Drop for Client {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- last requests over {:?} (oldest first) ----", self.transport);
            for entry in self.transcript.borrow().iter() {
                eprintln!("  {entry}");
            }
        }
    }
}

/// Reads a hyper response whole: (its HTTP version, our `Response`).
async fn read_answer(response: http::Response<hyper::body::Incoming>) -> anyhow::Result<(Version, Response)> {
    let version = response.version();
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    Ok((version, Response { request: String::new(), status: parts.status.as_u16(), headers: parts.headers, body }))
}

/// Drops the request sender, which makes hyper close the connection (HTTP/2
/// GOAWAY, TLS close_notify), and waits briefly for that, so that no request
/// leaves an idle connection open on the node.
async fn close_connection<S, C>(sender: S, connection: tokio::task::JoinHandle<C>) {
    drop(sender);
    let _ = tokio::time::timeout(CONNECTION_CLOSE_WAIT, connection).await;
}

fn status_and_json(response: Response) -> (u16, serde_json::Value) {
    let json = response.json();
    (response.status, json)
}

/// The `error.code` of an error body, for the transcript; empty when there is none.
fn error_code_of(response: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|json| json["error"]["code"].as_str().map(|code| format!("({code})")))
        .unwrap_or_default()
}
