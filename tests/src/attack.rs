//! Attackers for the abuse tier and the phone they must not lock out: floods of
//! unfinished uploads, stalled bodies that hold connection slots, image bombs,
//! password guessing and upload storms, each from chosen loopback source addresses
//! over HTTP/1.1, HTTP/2 or HTTP/3, every loop bounded in count and time; a `Tally`
//! of what the node answered each class; a legitimate `Phone`; and a `MemoryWatch`
//! that samples the node's VmRSS and VmHWM the whole time.
//!
//! Unlike `client::Client` (blocking, one request at a time, a minute per request),
//! everything here is async, so thousands of connections share one small runtime,
//! and every wait ends at a deadline the test chooses.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Transport;
use crate::faults::Memory;
use crate::fixtures::{png_chunk, sha256_hex};
use crate::node::Node;

/// The legitimate phone's address; no attacker uses it.
pub const LEGIT_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 200));
/// Attackers come from 127.0.0.2 to 127.0.0.40.
pub const ATTACKER_ADDRESSES: usize = 39;

/// How long an attacker waits before trying again after the node refused it, so a
/// refusal loop stays a loop of requests, not of CPU.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Attempts one attacker task makes at most, whatever the time left.
const ATTEMPTS_PER_TASK_MAX: u64 = 400;
/// How long the rest of an answer (after its head) may take to arrive.
const ANSWER_BODY_TIME_MAX: Duration = Duration::from_secs(5);
/// Problems kept word for word per class (all are counted).
const PROBLEMS_KEPT_MAX: usize = 12;
/// Bytes of an answer kept; error bodies are small, media we do not read here.
const ANSWER_BYTES_KEPT_MAX: usize = 64 * 1024;

/// The `index`th attacker address, wrapping around the 39 of them.
pub fn attacker_address(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (index % ATTACKER_ADDRESSES) as u8))
}

/// Where the node listens and the pin it proves itself with.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: SocketAddr,
    pub pin: String,
}

impl Target {
    pub fn of(node: &Node) -> Target {
        Target { server: node.addr(), pin: node.pin().to_owned() }
    }
}

// ----- answers, failures and the tally -----

/// An answer from the node (its body cut to `ANSWER_BYTES_KEPT_MAX`).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `error.code` of an error body, if any.
    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }

    /// `201`, or `429 upload_rate_exceeded` when the body names an error.
    pub fn outcome(&self) -> String {
        match self.error_code() {
            Some(code) => format!("{} {code}", self.status),
            None => self.status.to_string(),
        }
    }
}

/// How an exchange failed below HTTP.
#[derive(Debug, Clone)]
pub enum Failure {
    /// TCP connect or UDP bind failed.
    Connect(String),
    /// The TLS or QUIC handshake did not complete: the node closed or refused the
    /// connection (a per-address cap, a full table) or never answered.
    Handshake(String),
    /// The connection or stream ended before an answer.
    Closed(String),
    /// No answer before the wait ended.
    TimedOut,
}

impl Failure {
    /// The tally key of this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect failed",
            Failure::Handshake(_) => "handshake refused",
            Failure::Closed(_) => "closed before an answer",
            Failure::TimedOut => "no answer in time",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(detail) | Failure::Handshake(detail) | Failure::Closed(detail) => {
                write!(f, "{}: {detail}", self.outcome())
            }
            Failure::TimedOut => f.write_str(self.outcome()),
        }
    }
}

/// Outcome key for an attempt still running when its phase ended.
pub const CUT_AT_PHASE_END: &str = "unfinished at phase end";
/// Outcome key (and the start of one) for a request the node neither answered nor
/// closed in the time it should have.
const STILL_OPEN: &str = "still open after";

/// What one attack class sent and what the node made of it.
#[derive(Debug)]
pub struct Tally {
    pub class: String,
    started: AtomicU64,
    outcomes: Mutex<BTreeMap<String, u64>>,
    problem_count: AtomicU64,
    problems: Mutex<Vec<String>>,
    /// For stalled bodies: how long after its head the node ended each request
    /// (408, or closed without an answer).
    ended_after: Mutex<Vec<Duration>>,
}

impl Tally {
    pub fn new(class: &str) -> Arc<Tally> {
        Arc::new(Tally {
            class: class.to_owned(),
            started: AtomicU64::new(0),
            outcomes: Mutex::new(BTreeMap::new()),
            problem_count: AtomicU64::new(0),
            problems: Mutex::new(Vec::new()),
            ended_after: Mutex::new(Vec::new()),
        })
    }

    fn begin(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, outcome: &str) {
        *self.outcomes.lock().expect("tally").entry(outcome.to_owned()).or_default() += 1;
    }

    /// Records an answer, and a problem for an answer no attack should ever get:
    /// an internal error, or a refusal to wait without saying how long.
    fn record_answer(&self, answer: &Answer) {
        self.record(&answer.outcome());
        if answer.status >= 500 && answer.status != 503 && answer.status != 507 {
            self.problem(format!("answered {}: {}", answer.outcome(), String::from_utf8_lossy(&answer.body)));
        }
        if (answer.status == 429 || answer.status == 503) && !answer.headers.contains_key(http::header::RETRY_AFTER) {
            self.problem(format!("answered {} without Retry-After", answer.outcome()));
        }
    }

    fn record_ended_after(&self, elapsed: Duration) {
        self.ended_after.lock().expect("tally").push(elapsed);
    }

    pub fn problem(&self, problem: String) {
        self.problem_count.fetch_add(1, Ordering::Relaxed);
        let mut problems = self.problems.lock().expect("tally");
        if problems.len() < PROBLEMS_KEPT_MAX {
            problems.push(problem);
        }
    }

    /// Attempts begun (requests sent, or connections opened for stalled bodies).
    pub fn requests(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        self.outcomes.lock().expect("tally").clone()
    }

    /// Attempts the node turned away: any answer but 2xx, and connections it closed
    /// or refused (not attempts cut by the phase end, nor ones it left hanging).
    pub fn refused(&self) -> u64 {
        self.outcomes()
            .iter()
            .filter(|(outcome, _)| {
                !outcome.starts_with('2') && outcome.as_str() != CUT_AT_PHASE_END && !outcome.starts_with(STILL_OPEN)
            })
            .map(|(_, count)| count)
            .sum()
    }

    /// How many of `status` (e.g. `401`, any error code) were answered.
    pub fn answered(&self, status: u16) -> u64 {
        let prefix = status.to_string();
        self.outcomes()
            .iter()
            .filter(|(outcome, _)| outcome.split(' ').next() == Some(prefix.as_str()))
            .map(|(_, count)| count)
            .sum()
    }

    /// (every problem counted, the first few word for word).
    pub fn problems(&self) -> (u64, Vec<String>) {
        (self.problem_count.load(Ordering::Relaxed), self.problems.lock().expect("tally").clone())
    }

    /// (count, median, longest) of the times after which the node ended a stalled
    /// body with 408 or by closing it.
    pub fn ended_after(&self) -> (usize, Duration, Duration) {
        let mut ended = self.ended_after.lock().expect("tally").clone();
        ended.sort();
        let median = ended.get(ended.len() / 2).copied().unwrap_or_default();
        (ended.len(), median, ended.last().copied().unwrap_or_default())
    }
}

// ----- connections -----

async fn connect_tcp(target: &Target, source: IpAddr) -> Result<tokio::net::TcpStream, Failure> {
    let connect = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let tcp = socket.connect(target.server).await?;
        tcp.set_nodelay(true)?;
        Ok::<_, std::io::Error>(tcp)
    };
    connect.await.map_err(|error| Failure::Connect(error.to_string()))
}

/// A TLS connection from `source`, pinned, with one ALPN protocol.
pub async fn connect_tls(
    target: &Target,
    source: IpAddr,
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Failure> {
    let tcp = connect_tcp(target, source).await?;
    let config = edgenode::identity::pinned_client_config(target.pin.clone(), vec![alpn.to_vec()]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = rustls::pki_types::ServerName::IpAddress(target.server.ip().into());
    connector.connect(server_name, tcp).await.map_err(|error| Failure::Handshake(error.to_string()))
}

/// The task that drives a connection; dropping it aborts the task, which closes the
/// connection, so a request given up on never leaves its connection open.
#[derive(Debug)]
struct Driver(tokio::task::JoinHandle<()>);

impl Driver {
    fn spawn(connection: impl Future<Output = ()> + Send + 'static) -> Driver {
        Driver(tokio::spawn(connection))
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An HTTP/2 connection: its request sender and the task that drives it.
async fn open_h2<B>(
    target: &Target,
    source: IpAddr,
) -> Result<(hyper::client::conn::http2::SendRequest<B>, Driver), Failure>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = connect_tls(target, source, b"h2").await?;
    let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .map_err(|error| Failure::Handshake(format!("HTTP/2: {error}")))?;
    let driver = Driver::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, driver))
}

async fn open_h1<B>(
    target: &Target,
    source: IpAddr,
) -> Result<(hyper::client::conn::http1::SendRequest<B>, Driver), Failure>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = connect_tls(target, source, b"http/1.1").await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|error| Failure::Handshake(format!("HTTP/1.1: {error}")))?;
    let driver = Driver::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, driver))
}

/// An HTTP/3 connection from its own UDP endpoint on `source`, closed when dropped.
struct H3Connection {
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    sender: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    _driver: Driver,
}

impl H3Connection {
    async fn open(target: &Target, source: IpAddr) -> Result<H3Connection, Failure> {
        let mut endpoint = quinn::Endpoint::client(SocketAddr::new(source, 0))
            .map_err(|error| Failure::Connect(format!("UDP endpoint: {error}")))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(edgenode::identity::pinned_client_config(
            target.pin.clone(),
            vec![b"h3".to_vec()],
        ))
        .map_err(|error| Failure::Connect(format!("QUIC config: {error}")))?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connecting = endpoint
            .connect(target.server, &target.server.ip().to_string())
            .map_err(|error| Failure::Connect(error.to_string()))?;
        let connection = connecting.await.map_err(|error| Failure::Handshake(format!("QUIC: {error}")))?;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
            .await
            .map_err(|error| Failure::Handshake(format!("HTTP/3: {error}")))?;
        let driver = Driver::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Connection { _endpoint: endpoint, connection, sender, _driver: driver })
    }
}

impl Drop for H3Connection {
    fn drop(&mut self) {
        // The endpoint's driver sends CONNECTION_CLOSE in the background.
        self.connection.close(0u32.into(), b"done");
    }
}

/// One request as the phone or an attacker sends it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    pub content_type: Option<&'static str>,
    /// The `Content-Length` sent, when it differs from the body (unfinished uploads).
    pub declared_bytes: Option<u64>,
    pub body: Bytes,
}

impl Call {
    pub fn get(path: &str, token: Option<&str>) -> Call {
        Call {
            method: Method::GET,
            path: path.to_owned(),
            token: token.map(str::to_owned),
            content_type: None,
            declared_bytes: None,
            body: Bytes::new(),
        }
    }

    pub fn post_json(path: &str, token: Option<&str>, body: &serde_json::Value) -> Call {
        Call {
            method: Method::POST,
            path: path.to_owned(),
            token: token.map(str::to_owned),
            content_type: Some("application/json"),
            declared_bytes: None,
            body: Bytes::from(serde_json::to_vec(body).expect("JSON")),
        }
    }

    /// `PUT /api/v1/media/{sha256}` of `bytes`.
    pub fn upload(token: Option<&str>, content_type: &'static str, bytes: Vec<u8>) -> Call {
        Call {
            method: Method::PUT,
            path: format!("/api/v1/media/{}", sha256_hex(&bytes)),
            token: token.map(str::to_owned),
            content_type: Some(content_type),
            declared_bytes: None,
            body: Bytes::from(bytes),
        }
    }

    /// A request to `route` that announces `declared_bytes` of body; the caller
    /// sends (some of) them. Each `seed` gives its own path.
    pub fn unfinished(route: BodyRoute, token: Option<&str>, declared_bytes: u64, seed: u64) -> Call {
        let (method, path, content_type) = match route {
            BodyRoute::Upload => {
                (Method::PUT, format!("/api/v1/media/{}", sha256_hex(&seed.to_be_bytes())), "image/jpeg")
            }
            BodyRoute::SignIn => (Method::POST, "/api/v1/sessions".to_owned(), "application/json"),
        };
        Call {
            method,
            path,
            token: token.map(str::to_owned),
            content_type: Some(content_type),
            declared_bytes: Some(declared_bytes),
            body: Bytes::new(),
        }
    }

    /// The request head and body for `transport` (origin form and Host for HTTP/1.1).
    fn head(&self, target: &Target, transport: Transport) -> http::request::Builder {
        let uri = match transport {
            Transport::Http1 => self.path.clone(),
            Transport::Http2 | Transport::Http3 => format!("https://{}{}", target.server, self.path),
        };
        let mut builder = http::Request::builder().method(self.method.clone()).uri(uri);
        if transport == Transport::Http1 {
            builder = builder.header(http::header::HOST, target.server.to_string());
        }
        if let Some(token) = &self.token {
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = self.content_type {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
        }
        let length = self.declared_bytes.unwrap_or(self.body.len() as u64);
        if length > 0 || self.method == Method::PUT || self.method == Method::POST {
            builder = builder.header(http::header::CONTENT_LENGTH, length);
        }
        builder
    }

    /// The request line for messages.
    pub fn describe(&self) -> String {
        format!("{} {}{}", self.method, self.path, if self.token.is_some() { " (signed in)" } else { "" })
    }
}

/// Sends `call` on a new connection from `source` and reads the whole answer. The
/// caller bounds the time (`tokio::time::timeout`); the connection is closed when
/// this returns or is dropped.
pub async fn exchange(target: &Target, source: IpAddr, transport: Transport, call: &Call) -> Result<Answer, Failure> {
    let request = call.head(target, transport).body(()).expect("a valid request");
    match transport {
        Transport::Http1 => {
            let (mut sender, _driver) = open_h1::<Full<Bytes>>(target, source).await?;
            let request = request.map(|()| Full::new(call.body.clone()));
            let response = sender.send_request(request).await.map_err(|error| closed(&error))?;
            read_hyper_answer(response).await
        }
        Transport::Http2 => {
            let (mut sender, _driver) = open_h2::<Full<Bytes>>(target, source).await?;
            let request = request.map(|()| Full::new(call.body.clone()));
            let response = sender.send_request(request).await.map_err(|error| closed(&error))?;
            read_hyper_answer(response).await
        }
        Transport::Http3 => {
            let mut connection = H3Connection::open(target, source).await?;
            let stream = connection.sender.send_request(request).await.map_err(|error| closed(&error))?;
            let (mut send, mut receive) = stream.split();
            // The node may answer before reading the body (401, 413): the answer
            // counts then, not our stopped sending.
            let sent = async {
                if !call.body.is_empty() {
                    send.send_data(call.body.clone()).await?;
                }
                send.finish().await
            };
            let (_, answer) = tokio::join!(sent, read_h3_answer(&mut receive));
            answer
        }
    }
}

fn closed(error: &dyn std::fmt::Display) -> Failure {
    Failure::Closed(error.to_string())
}

async fn read_hyper_answer(response: http::Response<hyper::body::Incoming>) -> Result<Answer, Failure> {
    let (parts, mut body) = response.into_parts();
    let mut kept = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| closed(&error))?;
            if let Ok(data) = frame.into_data() {
                let room = ANSWER_BYTES_KEPT_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        Ok::<(), Failure>(())
    };
    tokio::time::timeout(ANSWER_BODY_TIME_MAX, read).await.map_err(|_| Failure::TimedOut)??;
    Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body: kept })
}

async fn read_h3_answer(
    receive: &mut h3::client::RequestStream<h3_quinn::RecvStream, Bytes>,
) -> Result<Answer, Failure> {
    let response = receive.recv_response().await.map_err(|error| closed(&error))?;
    let mut kept = Vec::new();
    let read = async {
        while let Some(mut chunk) = receive.recv_data().await.map_err(|error| closed(&error))? {
            let data = chunk.copy_to_bytes(chunk.remaining());
            let room = ANSWER_BYTES_KEPT_MAX.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
        Ok::<(), Failure>(())
    };
    tokio::time::timeout(ANSWER_BODY_TIME_MAX, read).await.map_err(|_| Failure::TimedOut)??;
    let (parts, ()) = response.into_parts();
    Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body: kept })
}

fn tokio_instant(deadline: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(deadline)
}

// ----- bodies sent slowly -----

/// A request body sent `chunk_bytes` every `interval` until `bytes_to_send` are
/// out, then nothing more: the upload stays unfinished (its `Content-Length`
/// announces more) until `give_up_at`, when the body fails and the stream is reset.
#[derive(Debug)]
pub struct TrickleBody {
    chunk: Bytes,
    interval: Duration,
    bytes_to_send: u64,
    next: Pin<Box<tokio::time::Sleep>>,
    give_up: Pin<Box<tokio::time::Sleep>>,
}

impl TrickleBody {
    pub fn new(chunk_bytes: usize, interval: Duration, bytes_to_send: u64, give_up_at: Instant) -> TrickleBody {
        TrickleBody {
            chunk: Bytes::from(vec![0x5a; chunk_bytes.max(1)]),
            interval,
            bytes_to_send,
            next: Box::pin(tokio::time::sleep(Duration::ZERO)),
            give_up: Box::pin(tokio::time::sleep_until(tokio_instant(give_up_at))),
        }
    }
}

impl hyper::body::Body for TrickleBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.give_up.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(std::io::Error::other("the attacker gives up on this upload"))));
        }
        if self.bytes_to_send == 0 {
            return Poll::Pending;
        }
        if self.next.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let next = tokio::time::Instant::now() + self.interval;
        self.next.as_mut().reset(next);
        let length = (self.chunk.len() as u64).min(self.bytes_to_send) as usize;
        self.bytes_to_send -= length as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..length)))))
    }
}

/// The upload pace of a flood or a stall.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub chunk_bytes: usize,
    pub interval: Duration,
    /// Bytes sent before going silent (fewer than announced: never finished).
    pub bytes_to_send: u64,
}

impl Pace {
    /// Headers, then not one byte of the body.
    pub const SILENT: Pace = Pace { chunk_bytes: 1, interval: Duration::from_secs(1), bytes_to_send: 0 };
    /// One byte a second, for as long as the connection lives.
    pub const BYTE_PER_SECOND: Pace =
        Pace { chunk_bytes: 1, interval: Duration::from_secs(1), bytes_to_send: u64::MAX };
}

// ----- class a and b: unfinished bodies -----

/// Where an unfinished body goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRoute {
    /// `PUT /api/v1/media/{sha256}`: refused at once when anonymous.
    Upload,
    /// `POST /api/v1/sessions`: anyone may send it, so its body must be read.
    SignIn,
}

/// Requests that announce a body and never finish it, from one address.
#[derive(Debug, Clone)]
pub struct UnfinishedBodies {
    pub route: BodyRoute,
    pub transport: Transport,
    pub source: IpAddr,
    pub token: Option<String>,
    /// Requests open at once: streams of one connection over HTTP/2 and HTTP/3,
    /// one connection each over HTTP/1.1 (or always, with `connection_each`).
    pub at_once: usize,
    /// One connection per request even over HTTP/2 and HTTP/3 (to fill slots).
    pub connection_each: bool,
    pub declared_bytes: u64,
    pub pace: Pace,
    /// The node must answer each request (or close it) within this of its head
    /// being sent, else it is a problem: anonymous uploads are refused before their
    /// body, stalled bodies are ended by the minimum body rate.
    pub answer_within: Option<Duration>,
    /// Connections being opened at once, across every attacker sharing it, so the
    /// opening does not turn into a handshake flood of its own.
    pub handshakes: Arc<tokio::sync::Semaphore>,
}

/// Runs `bodies` until `deadline`: each of its `at_once` slots sends an unfinished
/// request, waits for the node's answer, and sends another after `RETRY_PAUSE`.
pub async fn unfinished_bodies(target: Target, bodies: UnfinishedBodies, tally: Arc<Tally>, deadline: Instant) {
    let shared_connections = bodies.transport != Transport::Http1 && !bodies.connection_each;
    let mut connections_opened = 0u64;
    let mut slot_seed = u64::from(u32::from(match bodies.source {
        IpAddr::V4(address) => address,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    })) << 32;
    while Instant::now() < deadline && connections_opened < ATTEMPTS_PER_TASK_MAX {
        let shared = if shared_connections {
            connections_opened += 1;
            let permit = bodies.handshakes.acquire().await.expect("the handshake semaphore is never closed");
            let opened = tokio::time::timeout_at(tokio_instant(deadline), open_shared(&target, &bodies)).await;
            drop(permit);
            match opened {
                Err(_) => return,
                Ok(Err(failure)) => {
                    tally.begin();
                    tally.record(failure.outcome());
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Ok(Ok(connection)) => Some(Arc::new(connection)),
            }
        } else {
            // Each slot opens its own connections; one round of slots is all.
            connections_opened = ATTEMPTS_PER_TASK_MAX;
            None
        };
        let mut slots = tokio::task::JoinSet::new();
        for _ in 0..bodies.at_once {
            slot_seed += 1 << 16;
            let (target, bodies, tally, shared) = (target.clone(), bodies.clone(), Arc::clone(&tally), shared.clone());
            slots.spawn(body_slot(target, bodies, tally, deadline, shared, slot_seed));
        }
        while slots.join_next().await.is_some() {}
    }
}

/// A connection several request slots share (HTTP/2 or HTTP/3); closed when the
/// last slot lets go of it.
enum Shared {
    H2(hyper::client::conn::http2::SendRequest<TrickleBody>, Driver),
    H3(H3Connection),
}

impl Shared {
    fn is_closed(&self) -> bool {
        match self {
            Shared::H2(sender, driver) => sender.is_closed() || driver.is_finished(),
            Shared::H3(connection) => connection.connection.close_reason().is_some(),
        }
    }
}

async fn open_shared(target: &Target, bodies: &UnfinishedBodies) -> Result<Shared, Failure> {
    match bodies.transport {
        Transport::Http2 => open_h2::<TrickleBody>(target, bodies.source).await.map(|(s, d)| Shared::H2(s, d)),
        Transport::Http3 => H3Connection::open(target, bodies.source).await.map(Shared::H3),
        Transport::Http1 => unreachable!("HTTP/1.1 requests never share a connection"),
    }
}

/// A connection ready for one unfinished request: the request's head not sent yet.
enum Ready {
    H1(tokio_rustls::client::TlsStream<tokio::net::TcpStream>),
    /// With the driver when the connection is this request's own.
    H2(hyper::client::conn::http2::SendRequest<TrickleBody>, Option<Driver>),
    H3(h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>, Option<H3Connection>),
}

/// Opens (or takes from `shared`) a connection and waits until it can carry a new
/// request: the time this takes is the attacker's, not the node's answer time.
async fn get_ready(target: &Target, bodies: &UnfinishedBodies, shared: Option<&Shared>) -> Result<Ready, Failure> {
    if let Some(shared) = shared {
        return match shared {
            Shared::H2(sender, _) => {
                let mut sender = sender.clone();
                sender.ready().await.map_err(|error| closed(&error))?;
                Ok(Ready::H2(sender, None))
            }
            Shared::H3(connection) => Ok(Ready::H3(connection.sender.clone(), None)),
        };
    }
    let _permit = bodies.handshakes.acquire().await.expect("the handshake semaphore is never closed");
    match bodies.transport {
        Transport::Http1 => Ok(Ready::H1(connect_tls(target, bodies.source, b"http/1.1").await?)),
        Transport::Http2 => {
            let (mut sender, driver) = open_h2::<TrickleBody>(target, bodies.source).await?;
            sender.ready().await.map_err(|error| closed(&error))?;
            Ok(Ready::H2(sender, Some(driver)))
        }
        Transport::Http3 => {
            let connection = H3Connection::open(target, bodies.source).await?;
            Ok(Ready::H3(connection.sender.clone(), Some(connection)))
        }
    }
}

/// One request slot: unfinished requests one after another until `deadline`.
async fn body_slot(
    target: Target,
    bodies: UnfinishedBodies,
    tally: Arc<Tally>,
    deadline: Instant,
    shared: Option<Arc<Shared>>,
    seed: u64,
) {
    for attempt in 0..ATTEMPTS_PER_TASK_MAX {
        if Instant::now() + RETRY_PAUSE >= deadline || shared.as_ref().is_some_and(|shared| shared.is_closed()) {
            return;
        }
        let call = Call::unfinished(bodies.route, bodies.token.as_deref(), bodies.declared_bytes, seed + attempt);
        tally.begin();
        let ready = match tokio::time::timeout_at(
            tokio_instant(deadline),
            get_ready(&target, &bodies, shared.as_deref()),
        )
        .await
        {
            Err(_) => {
                tally.record(CUT_AT_PHASE_END);
                return;
            }
            Ok(Err(failure)) => {
                tally.record(failure.outcome());
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Ok(Ok(ready)) => ready,
        };
        let sent_at = Instant::now();
        let wait_until = match bodies.answer_within {
            Some(within) => deadline.min(sent_at + within),
            None => deadline,
        };
        let answer = send_unfinished(ready, &target, &bodies, &call, deadline);
        match tokio::time::timeout_at(tokio_instant(wait_until), answer).await {
            Ok(Ok(answer)) => {
                tally.record_answer(&answer);
                if answer.status == 408 {
                    tally.record_ended_after(sent_at.elapsed());
                }
            }
            Ok(Err(failure)) => {
                tally.record(failure.outcome());
                if matches!(failure, Failure::Closed(_)) {
                    tally.record_ended_after(sent_at.elapsed());
                }
            }
            Err(_) if wait_until < deadline => {
                let within = bodies.answer_within.unwrap_or_default();
                tally.record(&format!("{STILL_OPEN} {within:?}"));
                let pace = match bodies.pace.bytes_to_send {
                    0 => "then no body".to_owned(),
                    _ => format!("body at {} B per {:?}", bodies.pace.chunk_bytes, bodies.pace.interval),
                };
                tally.problem(format!(
                    "{} over {:?} from {} ({} B announced, {pace}): neither answered nor closed by the node within \
                     {within:?}",
                    call.describe(),
                    bodies.transport,
                    bodies.source,
                    bodies.declared_bytes,
                ));
            }
            Err(_) => tally.record(CUT_AT_PHASE_END),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Sends one unfinished request on `ready` and waits for the node to answer or end
/// it; a connection of its own is closed when this returns or is dropped.
async fn send_unfinished(
    ready: Ready,
    target: &Target,
    bodies: &UnfinishedBodies,
    call: &Call,
    deadline: Instant,
) -> Result<Answer, Failure> {
    let pace = bodies.pace;
    let request = call.head(target, bodies.transport).body(()).expect("a valid request");
    match ready {
        Ready::H1(tls) => h1_unfinished(tls, call, target, pace, deadline).await,
        Ready::H2(mut sender, _own_driver) => {
            let body = TrickleBody::new(pace.chunk_bytes, pace.interval, pace.bytes_to_send, deadline);
            let response = sender.send_request(request.map(|()| body)).await.map_err(|error| closed(&error))?;
            read_hyper_answer(response).await
        }
        Ready::H3(sender, _own_connection) => h3_unfinished(sender, request, pace, deadline).await,
    }
}

/// HTTP/1.1 by hand: the head, then the body at `pace`, reading the answer all the
/// while (the node may answer, 401 or 408, and close at any point).
async fn h1_unfinished(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    call: &Call,
    target: &Target,
    pace: Pace,
    deadline: Instant,
) -> Result<Answer, Failure> {
    let mut head = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", call.method, call.path, target.server);
    if let Some(token) = &call.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(content_type) = call.content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", call.declared_bytes.unwrap_or(0)));
    let (mut reader, mut writer) = tokio::io::split(tls);
    let answer = async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    received.extend_from_slice(&buffer[..n]);
                    if received.windows(4).any(|window| window == b"\r\n\r\n") || received.len() > 16 * 1024 {
                        break;
                    }
                }
            }
        }
        parse_h1_head(&received)
    };
    let send = async {
        if writer.write_all(head.as_bytes()).await.is_err() || writer.flush().await.is_err() {
            return std::future::pending::<()>().await;
        }
        let chunk = vec![0x5a; pace.chunk_bytes.max(1)];
        let mut left = pace.bytes_to_send;
        while left > 0 && Instant::now() < deadline {
            tokio::time::sleep(pace.interval).await;
            let length = (chunk.len() as u64).min(left) as usize;
            if writer.write_all(&chunk[..length]).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            left -= length as u64;
        }
        // Written all it will, or the node closed: the reader sees the answer or the close.
        std::future::pending::<()>().await
    };
    tokio::select! {
        answer = answer => answer,
        () = send => unreachable!("the sender never finishes"),
    }
}

/// The status of an HTTP/1.1 answer head (`HTTP/1.1 408 …`), its headers and the
/// start of its body; `Closed` when the node closed without one.
fn parse_h1_head(received: &[u8]) -> Result<Answer, Failure> {
    let text = String::from_utf8_lossy(received);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(Failure::Closed(format!(
            "the node closed the connection after {} bytes of answer",
            received.len()
        )));
    };
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|status| status.parse::<u16>().ok())
        .ok_or_else(|| Failure::Closed(format!("not an HTTP/1.1 answer: {head:?}")))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if let (Ok(name), Ok(value)) =
                (http::HeaderName::from_bytes(name.trim().as_bytes()), http::HeaderValue::from_str(value.trim()))
            {
                headers.append(name, value);
            }
        }
    }
    Ok(Answer { status, headers, body: body.as_bytes().to_vec() })
}

async fn h3_unfinished(
    mut sender: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    request: http::Request<()>,
    pace: Pace,
    deadline: Instant,
) -> Result<Answer, Failure> {
    let stream = sender.send_request(request).await.map_err(|error| closed(&error))?;
    let (mut send, mut receive) = stream.split();
    let trickle = async {
        let chunk = Bytes::from(vec![0x5a; pace.chunk_bytes.max(1)]);
        let mut left = pace.bytes_to_send;
        while left > 0 && Instant::now() < deadline {
            tokio::time::sleep(pace.interval).await;
            let length = (chunk.len() as u64).min(left) as usize;
            if send.send_data(chunk.slice(..length)).await.is_err() {
                break;
            }
            left -= length as u64;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        answer = read_h3_answer(&mut receive) => answer,
        () = trickle => unreachable!("the trickle never finishes"),
    }
}

// ----- class c and e: finished uploads, as many as the node takes -----

/// Whole uploads one after another from several workers.
#[derive(Clone)]
pub struct Uploads {
    pub sources: Vec<IpAddr>,
    pub transports: Vec<Transport>,
    pub token: String,
    pub content_type: &'static str,
    pub workers: usize,
    pub uploads_max: u64,
    /// The `n`th upload's bytes (each different, so none is a duplicate).
    pub body: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Uploads({} workers from {:?} over {:?})", self.workers, self.sources, self.transports)
    }
}

pub async fn uploads(target: Target, uploads: Uploads, tally: Arc<Tally>, deadline: Instant) {
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..uploads.workers {
        let (target, uploads, tally, counter) = (target.clone(), uploads.clone(), Arc::clone(&tally), counter.clone());
        workers.spawn(async move {
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= uploads.uploads_max || Instant::now() >= deadline {
                    return;
                }
                let source = uploads.sources[n as usize % uploads.sources.len()];
                let transport = uploads.transports[n as usize % uploads.transports.len()];
                let call = Call::upload(Some(&uploads.token), uploads.content_type, (uploads.body)(n));
                tally.begin();
                let answer =
                    tokio::time::timeout_at(tokio_instant(deadline), exchange(&target, source, transport, &call));
                match answer.await {
                    Ok(Ok(answer)) => {
                        tally.record_answer(&answer);
                        if !(200..300).contains(&answer.status) {
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                    }
                    Ok(Err(failure)) => {
                        tally.record(failure.outcome());
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Err(_) => tally.record(CUT_AT_PHASE_END),
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

// ----- class d: password guessing -----

/// Wrong passwords for `handle`, the `n`th from `attacker_address(n)` over
/// `Transport::ALL[n % 3]`, from `workers` at once, until `guesses_max` or `deadline`.
pub async fn guess_passwords(
    target: Target,
    handle: String,
    workers: usize,
    guesses_max: u64,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (target, handle, tally, counter) = (target.clone(), handle.clone(), Arc::clone(&tally), counter.clone());
        tasks.spawn(async move {
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= guesses_max || Instant::now() >= deadline {
                    return;
                }
                let call = Call::post_json(
                    "/api/v1/sessions",
                    None,
                    &json!({ "handle": handle, "password": format!("wrong guess {n} for {handle}") }),
                );
                let (source, transport) = (attacker_address(n as usize), Transport::ALL[n as usize % 3]);
                tally.begin();
                let answer =
                    tokio::time::timeout_at(tokio_instant(deadline), exchange(&target, source, transport, &call));
                match answer.await {
                    Ok(Ok(answer)) => {
                        tally.record_answer(&answer);
                        if answer.status == 200 {
                            tally.problem(format!("a wrong password signed in: {}", call.describe()));
                        }
                    }
                    Ok(Err(failure)) => tally.record(failure.outcome()),
                    Err(_) => tally.record(CUT_AT_PHASE_END),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

// ----- the legitimate phone -----

/// One request of the phone: what, over which transport, how long, and its status
/// (or why there was none).
#[derive(Debug, Clone)]
pub struct PhoneRequest {
    pub what: &'static str,
    pub transport: Transport,
    pub started: Instant,
    pub elapsed: Duration,
    pub outcome: Result<Answer, String>,
}

impl PhoneRequest {
    pub fn succeeded_within(&self, time_max: Duration) -> bool {
        matches!(&self.outcome, Ok(answer) if (200..300).contains(&answer.status)) && self.elapsed <= time_max
    }

    pub fn describe(&self) -> String {
        let outcome = match &self.outcome {
            Ok(answer) => format!(
                "{} {}",
                answer.outcome(),
                String::from_utf8_lossy(&answer.body).chars().take(200).collect::<String>()
            ),
            Err(failure) => failure.clone(),
        };
        format!("{} over {:?}: {outcome} in {:.2?}", self.what, self.transport, self.elapsed)
    }
}

/// A person's phone from `LEGIT_ADDRESS`: it signs in with the device token its
/// first sign-in gave it, reads its feed and uploads a small photo.
#[derive(Debug)]
pub struct Phone {
    pub target: Target,
    pub handle: String,
    pub password: String,
    /// From the first sign-in's answer (`device`); `None` when the node gave none.
    pub device: Option<String>,
    pub token: String,
}

impl Phone {
    /// Signs in once, as the phone did the day it was set up; the answer is returned
    /// so the test can check it.
    pub async fn set_up(target: Target, handle: &str, password: &str) -> (Option<Phone>, PhoneRequest) {
        let call = Call::post_json("/api/v1/sessions", None, &json!({ "handle": handle, "password": password }));
        let request = timed("first sign-in", &target, Transport::Http2, &call, Duration::from_secs(30)).await;
        let phone = match &request.outcome {
            Ok(answer) if answer.status == 200 => {
                let json = answer.json();
                Some(Phone {
                    target: target.clone(),
                    handle: handle.to_owned(),
                    password: password.to_owned(),
                    device: json["device"].as_str().map(str::to_owned),
                    token: json["token"].as_str().unwrap_or_default().to_owned(),
                })
            }
            _ => None,
        };
        (phone, request)
    }

    /// Sign in, read the feed, upload `photo` (a small JPEG): each waits at most
    /// `wait_max`. A failed sign-in leaves the previous token for the rest.
    pub async fn round(&mut self, transport: Transport, photo: Vec<u8>, wait_max: Duration) -> Vec<PhoneRequest> {
        let mut credentials = json!({ "handle": self.handle, "password": self.password });
        if let Some(device) = &self.device {
            credentials["device"] = json!(device);
        }
        let sign_in = Call::post_json("/api/v1/sessions", None, &credentials);
        let signed_in = timed("sign in", &self.target, transport, &sign_in, wait_max).await;
        if let Ok(answer) = &signed_in.outcome {
            if answer.status == 200 {
                if let Some(token) = answer.json()["token"].as_str() {
                    self.token = token.to_owned();
                }
            }
        }
        let feed = Call::get("/api/v1/feed?limit=20", Some(&self.token));
        let fed = timed("read the feed", &self.target, transport, &feed, wait_max).await;
        let upload = Call::upload(Some(&self.token), "image/jpeg", photo);
        let uploaded = timed("upload a photo", &self.target, transport, &upload, wait_max).await;
        vec![signed_in, fed, uploaded]
    }
}

async fn timed(
    what: &'static str,
    target: &Target,
    transport: Transport,
    call: &Call,
    wait_max: Duration,
) -> PhoneRequest {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(wait_max, exchange(target, LEGIT_ADDRESS, transport, call)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(failure)) => Err(failure.to_string()),
        Err(_) => Err(format!("no answer within {wait_max:?}")),
    };
    PhoneRequest { what, transport, started, elapsed: started.elapsed(), outcome }
}

// ----- the node's memory -----

/// VmRSS and VmHWM of a live process; `None` once it is gone (or a zombie).
pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kilobytes = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Memory { resident_bytes: kilobytes("VmRSS:")? * 1024, peak_resident_bytes: kilobytes("VmHWM:")? * 1024 })
}

/// What a `MemoryWatch` saw.
#[derive(Debug, Clone, Default)]
pub struct MemorySeen {
    pub samples: u64,
    pub resident_max_bytes: u64,
    pub peak_resident_bytes: u64,
    /// The phase during which VmHWM first reached the limit, and VmHWM then.
    pub first_over_limit: Option<(String, u64)>,
    /// The phase during which the process vanished (crashed, killed).
    pub vanished_during: Option<String>,
}

/// Samples a process's memory every `interval` on its own thread, labelling each
/// sample with the phase the test says it is in.
#[derive(Debug)]
pub struct MemoryWatch {
    phase: Arc<Mutex<String>>,
    seen: Arc<Mutex<MemorySeen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Samples kept at most, whatever the interval (a bound on the watch's loop).
const MEMORY_SAMPLES_MAX: u64 = 100_000;

impl MemoryWatch {
    pub fn start(pid: u32, interval: Duration, peak_limit_bytes: u64) -> MemoryWatch {
        let phase = Arc::new(Mutex::new("start".to_owned()));
        let seen = Arc::new(Mutex::new(MemorySeen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (phase, seen, stop) = (Arc::clone(&phase), Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                for _ in 0..MEMORY_SAMPLES_MAX {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let now = memory_of(pid);
                    let current_phase = phase.lock().expect("phase").clone();
                    let mut seen = seen.lock().expect("memory seen");
                    match now {
                        Some(memory) => {
                            seen.samples += 1;
                            seen.resident_max_bytes = seen.resident_max_bytes.max(memory.resident_bytes);
                            seen.peak_resident_bytes = seen.peak_resident_bytes.max(memory.peak_resident_bytes);
                            if memory.peak_resident_bytes >= peak_limit_bytes && seen.first_over_limit.is_none() {
                                seen.first_over_limit = Some((current_phase, memory.peak_resident_bytes));
                            }
                        }
                        None => {
                            seen.vanished_during.get_or_insert(current_phase);
                            return;
                        }
                    }
                    drop(seen);
                    std::thread::sleep(interval);
                }
            })
        };
        MemoryWatch { phase, seen, stop, thread: Some(thread) }
    }

    pub fn set_phase(&self, phase: &str) {
        phase.clone_into(&mut self.phase.lock().expect("phase"));
    }

    pub fn seen(&self) -> MemorySeen {
        self.seen.lock().expect("memory seen").clone()
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ----- bombs and fodder -----

/// A PNG of `width`×`height` 16-bit RGB pixels, all black: 2 bits of deflate per
/// 258 bytes of pixels, so 8000×8000 (384 MB decoded) fits in under 400 kB.
///
/// Written by hand rather than with the `image` encoder, which takes half a minute
/// to squeeze 384 MB of zeros: one dynamic-Huffman deflate block whose codes are
/// literal 0 = `10`, end of block = `11`, length 258 = `0`, distance 1 = `0`.
pub fn png_bomb_16_bit(width: u32, height: u32) -> Vec<u8> {
    let raw_bytes = u64::from(height) * (1 + u64::from(width) * 6); // a filter byte per row
    assert!(raw_bytes >= 2, "an empty image is no bomb");
    let mut bits = BitWriter::default();
    bits.bits(1, 1); // BFINAL
    bits.bits(2, 2); // BTYPE: dynamic Huffman
    bits.bits(286 - 257, 5); // HLIT: literal/length codes 0..=285
    bits.bits(2 - 1, 5); // HDIST: distance codes 0 and 1
    bits.bits(18 - 4, 4); // HCLEN: code-length codes up to the 18th in the order below
                          // Code-length code lengths in RFC 1951 order 16,17,18,0,8,7,9,6,10,5,11,4,12,3,13,2,14,1:
                          // 18 (a run of zeros) gets `0`, lengths 1 and 2 get `10` and `11`.
    for length in [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2] {
        bits.bits(length, 3);
    }
    let (length_1, length_2, run_of_zeros) = ((0b10, 2), (0b11, 2), (0b0, 1));
    // Literal/length lengths: 0 → 2, 1..=255 → 0, 256 → 2, 257..=284 → 0, 285 → 1;
    // then distances 0 and 1 → 1 each.
    bits.code(length_2);
    bits.code(run_of_zeros);
    bits.bits(138 - 11, 7);
    bits.code(run_of_zeros);
    bits.bits(117 - 11, 7);
    bits.code(length_2);
    bits.code(run_of_zeros);
    bits.bits(28 - 11, 7);
    for _ in 0..3 {
        bits.code(length_1);
    }
    let (literal_zero, end_of_block, length_258, distance_1) = ((0b10, 2), (0b11, 2), (0b0, 1), (0b0, 1));
    bits.code(literal_zero);
    let matches = (raw_bytes - 1) / 258;
    for _ in 0..matches {
        bits.code(length_258);
        bits.code(distance_1);
    }
    for _ in 0..(raw_bytes - 1) % 258 {
        bits.code(literal_zero);
    }
    bits.code(end_of_block);
    let mut zlib = vec![0x78, 0x01];
    zlib.extend_from_slice(&bits.finish());
    // Adler-32 of zeros: a stays 1, b adds 1 per byte.
    let adler = ((raw_bytes % 65_521) << 16 | 1) as u32;
    zlib.extend_from_slice(&adler.to_be_bytes());

    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[16, 2, 0, 0, 0]); // 16 bits, RGB, deflate, adaptive filters, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&png_chunk(b"IHDR", &ihdr));
    png.extend_from_slice(&png_chunk(b"IDAT", &zlib));
    png.extend_from_slice(&png_chunk(b"IEND", &[]));
    png
}

/// Deflate's bit order: values least significant bit first, Huffman codes most
/// significant bit first.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    current: u32,
    filled: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u32, count: u32) {
        for bit in 0..count {
            self.current |= (value >> bit & 1) << self.filled;
            self.filled += 1;
            if self.filled == 8 {
                self.bytes.push(self.current as u8);
                (self.current, self.filled) = (0, 0);
            }
        }
    }

    fn code(&mut self, (code, length): (u32, u32)) {
        for bit in (0..length).rev() {
            self.bits(code >> bit & 1, 1);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.bytes.push(self.current as u8);
        }
        self.bytes
    }
}

/// `png` with a `tEXt` comment after its IHDR, so each copy has its own SHA-256.
pub fn with_png_comment(png: &[u8], comment: &str) -> Vec<u8> {
    const IHDR_END: usize = 8 + 25;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > IHDR_END, "not a PNG");
    let mut data = b"Comment\0".to_vec();
    data.extend_from_slice(comment.as_bytes());
    let mut out = png[..IHDR_END].to_vec();
    out.extend_from_slice(&png_chunk(b"tEXt", &data));
    out.extend_from_slice(&png[IHDR_END..]);
    out
}

/// `jpeg` with a COM segment right after its SOI, so each copy has its own SHA-256.
pub fn with_jpeg_comment(jpeg: &[u8], comment: &str) -> Vec<u8> {
    assert!(jpeg.starts_with(&[0xff, 0xd8]), "not a JPEG");
    let mut out = Vec::with_capacity(jpeg.len() + comment.len() + 4);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xff, 0xfe]);
    out.extend_from_slice(&(comment.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(comment.as_bytes());
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_png_bomb_decodes_to_black_16_bit_pixels() {
        for (width, height) in [(1, 1), (43, 1), (300, 200), (1001, 7)] {
            let image = image::load_from_memory(&with_png_comment(&png_bomb_16_bit(width, height), "small"))
                .unwrap_or_else(|error| panic!("{width}x{height}: {error}"));
            assert_eq!((image.width(), image.height()), (width, height));
            let pixels = image.into_rgb16();
            assert!(pixels.pixels().all(|pixel| pixel.0 == [0, 0, 0]), "{width}x{height} is not all black");
        }
    }

    #[test]
    fn the_png_bomb_is_small_and_claims_8000_by_8000_16_bit() {
        let started = Instant::now();
        let bomb = png_bomb_16_bit(8000, 8000);
        println!("PNG bomb: {} bytes in {:.1?}", bomb.len(), started.elapsed());
        assert!(bomb.len() < 400_000, "{} bytes", bomb.len());
        assert_eq!(&bomb[16..20], &8000u32.to_be_bytes());
        assert_eq!(&bomb[20..24], &8000u32.to_be_bytes());
        assert_eq!(bomb[24], 16, "bit depth");
        let commented = with_png_comment(&bomb, "copy 1");
        let decoder = image::ImageReader::new(std::io::Cursor::new(&commented)).with_guessed_format().expect("format");
        assert_eq!(decoder.into_dimensions().expect("dimensions"), (8000, 8000));
        assert_ne!(sha256_hex(&commented), sha256_hex(&with_png_comment(&bomb, "copy 2")));
    }

    #[test]
    fn a_jpeg_comment_keeps_the_jpeg_decodable() {
        let jpeg = crate::faults::numbered_photo(3);
        let commented = with_jpeg_comment(&jpeg, "copy 1");
        assert_eq!(image::load_from_memory(&commented).expect("decodes").width(), 64);
        assert_ne!(sha256_hex(&jpeg), sha256_hex(&commented));
    }

    #[test]
    fn attacker_addresses_stay_in_127_0_0_2_to_40() {
        assert_eq!(attacker_address(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(attacker_address(38), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 40)));
        assert_eq!(attacker_address(39), attacker_address(0));
    }

    #[test]
    fn an_h1_answer_head_is_parsed() {
        let answer =
            parse_h1_head(b"HTTP/1.1 408 Request Timeout\r\nretry-after: 1\r\n\r\n{\"error\":{\"code\":\"slow\"}}")
                .expect("an answer");
        assert_eq!(answer.outcome(), "408 slow");
        assert!(answer.headers.contains_key("retry-after"));
        assert!(matches!(parse_h1_head(b""), Err(Failure::Closed(_))));
    }
}
