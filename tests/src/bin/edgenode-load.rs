//! edgenode-load: a small HTTP/2 and HTTP/3 load generator, so that the serving benchmark
//! (`bench/serving/run`) can compare our node's HTTP/3 with its own HTTP/2 through one
//! client code path.
//!
//! ```text
//! edgenode-load --protocol h2|h3 --url https://127.0.0.1:PORT --paths FILE
//!               --requests N --clients C --streams S --pin sha256/…
//!               [--threads T] [--timeout SECONDS] [--max-udp-payload BYTES]
//! ```
//!
//! C connections, each with S request loops ("streams") in flight. Every loop takes the
//! next request number from one shared counter until N are taken, so exactly N GETs are
//! sent, over the paths of FILE (one per line: a path or a full URL) round-robin. A loop
//! sends its GET, reads the whole body (counting bytes, not copying them) and records the
//! latency from sending the request to the end of the body. Any status but 200, and any
//! transport error, counts as failed; a transport error also ends that loop (its
//! connection is probably gone) and the other loops take its remaining requests.
//!
//! Only HTTP/2 and HTTP/3 differ below `Connection::get`: same counter, same loops, same
//! timing. The time covers connection setup too, like h2load's "finished in".
//!
//! Runtime: `--threads 1` (the default) is a current_thread tokio runtime, one client
//! thread like `h2load -t 1`; `--threads T` > 1 is a multi-thread runtime of T workers.
//!
//! TLS 1.3, accepting exactly the node's SPKI pin (`--pin`, the node's own pinned
//! client configuration), as phones do.
//!
//! HTTP/3: the largest UDP datagram the client accepts (its `max_udp_payload_size`
//! transport parameter, which bounds the server's path MTU discovery) is
//! `--max-udp-payload` (default 65527, QUIC's largest, which leaves the size to the node:
//! on loopback it grows them to 6,548 bytes); 1452 stands for a client behind an
//! ordinary 1,500-byte Ethernet or Wi-Fi path. The result line then also gives the UDP
//! datagrams received and their mean size.
//!
//! Prints one line to stdout:
//! `protocol=h3 requests=N ok=.. failed=.. seconds=.. rps=.. p50_ms=.. p99_ms=.. bytes=.. client_cpu_s=..`
//! (HTTP/3 adds `datagrams_received=.. datagram_bytes_mean=..`)
//! (`rps` counts successful requests). Exits 1 when setup fails or the time limit
//! (default 300 s) runs out, 2 on bad arguments.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

const USAGE: &str = "usage: edgenode-load --protocol h2|h3 --url https://HOST:PORT --paths FILE \
--requests N --clients C --streams S --pin sha256/... [--threads T] [--timeout SECONDS] \
[--max-udp-payload BYTES]";
/// QUIC's largest UDP payload (RFC 9000 §18.2), and its smallest maximum.
const UDP_PAYLOAD_BYTES_MAX: u16 = 65527;
const UDP_PAYLOAD_BYTES_MIN: u16 = 1200;
/// The UDP receive buffer each connection's socket asks for (the node's HTTP/3 socket asks the same).
const CLIENT_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    H2,
    H3,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::H2 => "h2",
            Protocol::H3 => "h3",
        }
    }
}

struct Options {
    protocol: Protocol,
    server: SocketAddr,
    /// `https://host:port`, the prefix of every request URI.
    origin: String,
    paths_file: String,
    requests: usize,
    clients: usize,
    streams: usize,
    /// The node's SPKI pin, the only key accepted.
    pin: String,
    threads: usize,
    timeout: Duration,
    /// HTTP/3: the largest UDP payload accepted from the server.
    max_udp_payload_bytes: u16,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut protocol, mut url, mut paths_file, mut pin) = (None, None, None, None);
    let (mut requests, mut clients, mut streams, mut threads, mut timeout) = (None, None, None, 1, 300);
    let mut max_udp_payload_bytes = UDP_PAYLOAD_BYTES_MAX;
    let number = |name: &str, value: Option<String>| -> Result<usize, String> {
        value
            .ok_or(format!("{name} needs a value"))?
            .parse::<usize>()
            .ok()
            .filter(|number| *number > 0)
            .ok_or(format!("{name} needs a positive number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--protocol" => {
                protocol = Some(match args.next().as_deref() {
                    Some("h2") => Protocol::H2,
                    Some("h3") => Protocol::H3,
                    _ => return Err("--protocol is h2 or h3".into()),
                })
            }
            "--url" => url = Some(args.next().ok_or("--url needs a value")?),
            "--paths" => paths_file = Some(args.next().ok_or("--paths needs a value")?),
            "--pin" => pin = Some(args.next().ok_or("--pin needs a value")?),
            "--requests" => requests = Some(number(&arg, args.next())?),
            "--clients" => clients = Some(number(&arg, args.next())?),
            "--streams" => streams = Some(number(&arg, args.next())?),
            "--threads" => threads = number(&arg, args.next())?,
            "--timeout" => timeout = number(&arg, args.next())?,
            "--max-udp-payload" => {
                max_udp_payload_bytes = u16::try_from(number(&arg, args.next())?)
                    .ok()
                    .filter(|bytes| (UDP_PAYLOAD_BYTES_MIN..=UDP_PAYLOAD_BYTES_MAX).contains(bytes))
                    .ok_or("--max-udp-payload is 1200 to 65527")?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let pin = pin.ok_or("--pin is required")?;
    let url = url.ok_or("--url is required")?;
    let origin = url.trim_end_matches('/').to_owned();
    let authority = origin.strip_prefix("https://").ok_or("--url must start with https://")?;
    let server = authority.parse::<SocketAddr>().map_err(|_| "--url must be https://IP:PORT")?;
    Ok(Options {
        protocol: protocol.ok_or("--protocol is required")?,
        server,
        origin,
        paths_file: paths_file.ok_or("--paths is required")?,
        requests: requests.ok_or("--requests is required")?,
        clients: clients.ok_or("--clients is required")?,
        streams: streams.ok_or("--streams is required")?,
        pin,
        threads,
        timeout: Duration::from_secs(timeout as u64),
        max_udp_payload_bytes,
    })
}

/// What all request loops share.
struct Shared {
    uris: Vec<http::Uri>,
    requests: usize,
    next: AtomicUsize,
    ok: AtomicUsize,
    failed: AtomicUsize,
    bytes: AtomicU64,
    /// HTTP/3: UDP datagrams received and their bytes, over all connections.
    datagrams_received: AtomicU64,
    datagram_bytes_received: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().expect("error lock").get_or_insert(message);
    }
}

/// One connection's request sender; cloned into each of its request loops.
#[derive(Clone)]
enum Connection {
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
    H3(h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>),
}

/// What to close once the loops are done.
enum Closer {
    H2(tokio::task::JoinHandle<Result<(), hyper::Error>>),
    H3(quinn::Endpoint, quinn::Connection, tokio::task::JoinHandle<()>),
}

impl Connection {
    async fn open(
        protocol: Protocol,
        server: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        max_udp_payload_bytes: u16,
    ) -> anyhow::Result<(Connection, Closer)> {
        match protocol {
            Protocol::H2 => {
                let tcp = tokio::net::TcpStream::connect(server).await?;
                tcp.set_nodelay(true)?;
                let connector = tokio_rustls::TlsConnector::from(tls);
                let tls = connector.connect(ServerName::IpAddress(server.ip().into()), tcp).await?;
                let alpn = tls.get_ref().1.alpn_protocol();
                anyhow::ensure!(alpn == Some(b"h2"), "the server did not choose ALPN h2");
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
                Ok((Connection::H2(sender), Closer::H2(tokio::spawn(connection))))
            }
            Protocol::H3 => {
                // One endpoint (UDP socket) per connection, as each TCP connection has its own socket.
                // The unspecified address: the kernel picks the source address the route
                // gives, also when the node listens in another network namespace.
                let any: std::net::IpAddr = match server {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                };
                let bind = SocketAddr::new(any, 0);
                let mut config = quinn::EndpointConfig::default();
                config.max_udp_payload_size(max_udp_payload_bytes)?;
                let socket = std::net::UdpSocket::bind(bind)?;
                // QUIC clients ask for more than the kernel's 208 KiB (quic-go asks 7 MiB): at
                // the default, a burst of the node's datagrams overflows it and counts as loss.
                edgenode::os::enlarge_udp_buffers(&socket, CLIENT_SOCKET_BUFFER_BYTES)?;
                let mut endpoint = quinn::Endpoint::new(config, None, socket, Arc::new(quinn::TokioRuntime))?;
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
                endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
                let quic = endpoint.connect(server, &server.ip().to_string())?.await?;
                let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(quic.clone())).await?;
                let driver = tokio::spawn(async move {
                    std::future::poll_fn(|cx| driver.poll_close(cx)).await;
                });
                Ok((Connection::H3(sender), Closer::H3(endpoint, quic, driver)))
            }
        }
    }

    /// One GET, body read whole: (status, body bytes).
    async fn get(&mut self, uri: &http::Uri) -> anyhow::Result<(u16, u64)> {
        let request = http::Request::get(uri.clone());
        let mut bytes = 0u64;
        match self {
            Connection::H2(sender) => {
                sender.ready().await?;
                let response = sender.send_request(request.body(Empty::new())?).await?;
                let status = response.status().as_u16();
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    if let Some(data) = frame?.data_ref() {
                        bytes += data.len() as u64;
                    }
                }
                Ok((status, bytes))
            }
            Connection::H3(sender) => {
                let mut stream = sender.send_request(request.body(())?).await?;
                stream.finish().await?;
                let status = stream.recv_response().await?.status().as_u16();
                while let Some(mut chunk) = stream.recv_data().await? {
                    let length = chunk.remaining();
                    bytes += length as u64;
                    chunk.advance(length);
                }
                Ok((status, bytes))
            }
        }
    }
}

impl Closer {
    async fn close(self, shared: &Shared) {
        match self {
            // The senders are gone: hyper sends GOAWAY and ends the connection task.
            Closer::H2(task) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            }
            Closer::H3(endpoint, quic, driver) => {
                let received = quic.stats().udp_rx;
                shared.datagrams_received.fetch_add(received.datagrams, Ordering::Relaxed);
                shared.datagram_bytes_received.fetch_add(received.bytes, Ordering::Relaxed);
                quic.close(0u32.into(), b"done");
                driver.abort();
                let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
            }
        }
    }
}

/// One request loop: requests until the shared counter reaches N; its latencies.
async fn request_loop(mut connection: Connection, shared: Arc<Shared>) -> Vec<Duration> {
    let mut latencies = Vec::new();
    loop {
        let number = shared.next.fetch_add(1, Ordering::Relaxed);
        if number >= shared.requests {
            return latencies;
        }
        let uri = &shared.uris[number % shared.uris.len()];
        let started = Instant::now();
        match connection.get(uri).await {
            Ok((200, bytes)) => {
                latencies.push(started.elapsed());
                shared.ok.fetch_add(1, Ordering::Relaxed);
                shared.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Ok((status, _)) => shared.fail(format!("GET {uri}: status {status}")),
            Err(error) => {
                shared.fail(format!("GET {uri}: {error:#}"));
                return latencies;
            }
        }
    }
}

async fn run(options: Options, shared: Arc<Shared>) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let tls = Arc::new(tls_config(&options));
    let (protocol, server) = (options.protocol, options.server);
    let started = Instant::now();
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..options.clients {
        connecting.spawn(Connection::open(protocol, server, tls.clone(), options.max_udp_payload_bytes));
    }
    let mut closers = Vec::new();
    let mut loops = tokio::task::JoinSet::new();
    while let Some(opened) = connecting.join_next().await {
        let (connection, closer) = opened.context("a connection task panicked")?.context("connecting")?;
        for _ in 0..options.streams {
            loops.spawn(request_loop(connection.clone(), shared.clone()));
        }
        closers.push(closer);
    }
    let mut latencies = Vec::with_capacity(options.requests);
    while let Some(result) = loops.join_next().await {
        latencies.extend(result.context("a request loop panicked")?);
    }
    let elapsed = started.elapsed();
    for closer in closers {
        closer.close(&shared).await;
    }
    Ok((elapsed, latencies))
}

fn tls_config(options: &Options) -> rustls::ClientConfig {
    let alpn = options.protocol.name().as_bytes().to_vec();
    edgenode::identity::pinned_client_config(options.pin.clone(), vec![alpn])
}

/// This process's CPU time (user + system) in seconds, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    // After the command name: state is field 0, utime 11 and stime 12 (in clock ticks,
    // 100 per second on Linux).
    let ticks = |index: usize| fields.get(index).and_then(|field| field.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile_ms(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("edgenode-load: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let text = std::fs::read_to_string(&options.paths_file).unwrap_or_else(|error| {
        eprintln!("edgenode-load: reading {}: {error}", options.paths_file);
        std::process::exit(2);
    });
    let mut uris = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        // A full URL keeps only its path: every request goes to --url.
        let path = match line.strip_prefix("https://") {
            Some(rest) => rest.find('/').map_or("/", |slash| &rest[slash..]),
            None => line,
        };
        match format!("{}{path}", options.origin).parse::<http::Uri>() {
            Ok(uri) => uris.push(uri),
            Err(error) => {
                eprintln!("edgenode-load: bad path {line:?}: {error}");
                std::process::exit(2);
            }
        }
    }
    if uris.is_empty() {
        eprintln!("edgenode-load: no paths in {}", options.paths_file);
        std::process::exit(2);
    }
    let shared = Arc::new(Shared {
        uris,
        requests: options.requests,
        next: AtomicUsize::new(0),
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        bytes: AtomicU64::new(0),
        datagrams_received: AtomicU64::new(0),
        datagram_bytes_received: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let runtime = if options.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(options.threads).enable_all().build()
    }
    .expect("building the tokio runtime");
    let (protocol, timeout, requests) = (options.protocol, options.timeout, options.requests);
    let result = runtime.block_on(async { tokio::time::timeout(timeout, run(options, shared.clone())).await });
    let (elapsed, mut latencies) = match result {
        Ok(Ok(measured)) => measured,
        Ok(Err(error)) => {
            eprintln!("edgenode-load: {error:#}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!(
                "edgenode-load: time limit of {timeout:?} reached after {} of {requests} requests",
                shared.ok.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
            );
            std::process::exit(1);
        }
    };
    let ok = shared.ok.load(Ordering::Relaxed);
    // Requests never sent (every loop ended on transport errors) count as failed too.
    let failed = requests - ok;
    if let Some(error) = shared.first_error.lock().expect("error lock").as_ref() {
        eprintln!("edgenode-load: {failed} failed; first: {error}");
    }
    latencies.sort_unstable();
    let seconds = elapsed.as_secs_f64();
    let mut line = format!(
        "protocol={} requests={requests} ok={ok} failed={failed} seconds={seconds:.3} rps={:.1} p50_ms={:.2} p99_ms={:.2} bytes={} client_cpu_s={:.2}",
        protocol.name(),
        ok as f64 / seconds,
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        shared.bytes.load(Ordering::Relaxed),
        cpu_seconds(),
    );
    if protocol == Protocol::H3 {
        let datagrams = shared.datagrams_received.load(Ordering::Relaxed);
        let datagram_bytes = shared.datagram_bytes_received.load(Ordering::Relaxed);
        let mean = datagram_bytes.checked_div(datagrams).unwrap_or(0);
        line.push_str(&format!(" datagrams_received={datagrams} datagram_bytes_mean={mean}"));
    }
    println!("{line}");
}
