//! The node's metrics: one prometheus-client registry with the API's own families
//! (request latency histograms by route, method, transport and status class;
//! connections; media), build info, process figures (`metrics/process.rs`), and the
//! collectors the composition root adds (replication per sibling, fan-out). Served
//! at `/metrics` as Prometheus text (0.0.4), or as OpenMetrics to a scraper that asks
//! for it in `Accept`.
//!
//! The hot path is one counter increment and one histogram observation per request,
//! with labels that are all `&'static str` (the route is the route table's pattern,
//! resolved by dispatch), so a request allocates nothing here and unknown paths cannot
//! grow the number of series.

mod process;

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::{routes, Transport};
use crate::exposition::Collector;
use crate::media::GateStats;

/// When the transport had the request's head; transports put this in the request's
/// extensions. Request durations count from here, so waiting for a blocking thread
/// and reading the body are part of what a client waited for.
#[derive(Debug, Clone, Copy)]
pub struct RequestStarted(pub Instant);

/// The route label of requests that no route matched (404, 405): one label for all
/// of them, so made-up paths cannot add series.
pub const ROUTE_UNMATCHED: &str = "unmatched";

/// Request durations in seconds: from a thumbnail answered from memory (well under a
/// millisecond) to a 12 MP upload converted on a Raspberry Pi (seconds).
const REQUEST_SECONDS_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Conversion of one upload (decode, resize, encode), in seconds.
const MEDIA_SECONDS_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

const TRANSPORT_LABELS: [&str; 4] = ["h1", "h2", "h3", "other"];
const STATUS_CLASS_LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    transport: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestClassLabels {
    transport: &'static str,
    status: &'static str,
}

/// Which text format a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: what anyone gets by default.
    Prometheus,
    /// OpenMetrics 1.0 text, for a scraper whose `Accept` names it (Prometheus does).
    OpenMetrics,
}

impl Format {
    /// From a request's `Accept` header.
    pub fn from_accept(accept: Option<&http::HeaderValue>) -> Format {
        let accept = accept.and_then(|value| value.to_str().ok()).unwrap_or_default();
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` that names this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open connections (TCP and QUIC); transports add and subtract.
    pub connections_open: Gauge,
    /// Connections turned away because `connections_max` was reached.
    pub connections_refused_total: Counter,
    request_duration: Family<RequestLabels, Histogram>,
    requests: Family<RequestClassLabels, Counter>,
    pub logins_throttled_total: Counter,
    pub media_processed_total: Counter,
    media_processing: Histogram,
    /// Uploads and derivative rebuilds that waited for an identical one in flight.
    pub media_coalesced_total: Counter,
    /// Read when scraped (`render`).
    users: Gauge,
    media_conversions_running: Gauge,
    media_conversions_waiting: Gauge,
    media_decoded_bytes_reserved: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Registry::default(),
            connections_open: Gauge::default(),
            connections_refused_total: Counter::default(),
            request_duration: Family::new_with_constructor(|| Histogram::new(REQUEST_SECONDS_BUCKETS)),
            requests: Family::default(),
            logins_throttled_total: Counter::default(),
            media_processed_total: Counter::default(),
            media_processing: Histogram::new(MEDIA_SECONDS_BUCKETS),
            media_coalesced_total: Counter::default(),
            users: Gauge::default(),
            media_conversions_running: Gauge::default(),
            media_conversions_waiting: Gauge::default(),
            media_decoded_bytes_reserved: Gauge::default(),
        };
        // Every transport and status class from the start (20 series), so a scraper
        // sees zeros rather than nothing on a fresh node.
        for transport in TRANSPORT_LABELS {
            for status in STATUS_CLASS_LABELS {
                drop(metrics.requests.get_or_create(&RequestClassLabels { transport, status }));
            }
        }
        metrics.register_all()
    }

    fn register_all(mut self) -> Metrics {
        let registry = &mut self.registry;
        registry.register(
            "edgenode_build",
            "The running binary: version and CPU architecture",
            Info::new([("version", env!("CARGO_PKG_VERSION")), ("arch", std::env::consts::ARCH)]),
        );
        registry.register(
            "edgenode_http_request_duration_seconds",
            "Time from a request's head to its answer (body read and handling included; sending the \
             answer not), by route pattern, method, transport (h1, h2, h3) and status class",
            self.request_duration.clone(),
        );
        registry.register(
            "edgenode_requests",
            "HTTP requests answered, by transport and status class (the histogram's counts, summed over routes)",
            self.requests.clone(),
        );
        registry.register("edgenode_connections_open", "Open TCP and QUIC connections", self.connections_open.clone());
        registry.register(
            "edgenode_connections_refused",
            "Connections turned away because connections_max was reached",
            self.connections_refused_total.clone(),
        );
        registry.register(
            "edgenode_logins_throttled",
            "Sign-ins and claims slowed down or refused by throttling",
            self.logins_throttled_total.clone(),
        );
        registry.register("edgenode_users", "Accounts on this node", self.users.clone());
        registry.register(
            "edgenode_media_processed",
            "Uploads converted (display and thumb made)",
            self.media_processed_total.clone(),
        );
        registry.register(
            "edgenode_media_processing_seconds",
            "Time to convert one upload",
            self.media_processing.clone(),
        );
        registry.register(
            "edgenode_media_coalesced",
            "Uploads and derivative rebuilds that waited for an identical one in flight",
            self.media_coalesced_total.clone(),
        );
        registry.register(
            "edgenode_media_conversions_running",
            "Conversions holding a media worker now",
            self.media_conversions_running.clone(),
        );
        registry.register(
            "edgenode_media_conversions_waiting",
            "Conversions queued for a media worker or for decoded-bytes budget now",
            self.media_conversions_waiting.clone(),
        );
        registry.register(
            "edgenode_media_decoded_bytes_reserved",
            "Decoded-image bytes reserved by the conversions running now",
            self.media_decoded_bytes_reserved.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        self
    }

    /// Adds figures read at each scrape (replication, fan-out). Only while the node is
    /// being built: the registry is not shared yet.
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// One answered request. `route` is the route table's pattern (`ROUTE_UNMATCHED`
    /// when none matched); `elapsed` counts from `RequestStarted`.
    pub fn record_request(
        &self,
        route: &'static str,
        method: &Method,
        transport: Option<Transport>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let transport = transport_label(transport);
        let status = status_class_label(status);
        self.requests.get_or_create(&RequestClassLabels { transport, status }).inc();
        let labels = RequestLabels { route, method: method_label(method), transport, status };
        self.request_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// A request answered before any handler ran (refused from its head, or a body
    /// that could not be read): its route is looked up again, which only these
    /// answers pay for.
    pub fn record_unhandled(&self, head: &http::request::Parts, status: StatusCode) {
        let method = if head.method == Method::HEAD { Method::GET } else { head.method.clone() };
        let route = routes::find(&method, head.uri.path()).map_or(ROUTE_UNMATCHED, |(route, _)| route.pattern);
        let transport = head.extensions.get::<Transport>().copied();
        self.record_request(route, &head.method, transport, status, request_elapsed(&head.extensions));
    }

    /// One upload converted, in `elapsed`.
    pub fn record_media_processed(&self, elapsed: Duration) {
        self.media_processed_total.inc();
        self.media_processing.observe(elapsed.as_secs_f64());
    }

    /// The exposition in `format`, with `users` and the media gate as they are now.
    /// Collectors read replication state: call it from a blocking thread.
    pub fn render(&self, users: u64, gate: GateStats, format: Format) -> String {
        self.users.set(i64::try_from(users).unwrap_or(i64::MAX));
        self.media_conversions_running.set(gate.jobs_running as i64);
        self.media_conversions_waiting.set(gate.jobs_waiting as i64);
        self.media_decoded_bytes_reserved.set(i64::try_from(gate.bytes_reserved).unwrap_or(i64::MAX));
        let mut text = String::new();
        let written = match format {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry),
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &self.registry),
        };
        // Writing to a String fails only if a collector says so; what it wrote stays.
        if let Err(error) = written {
            tracing::warn!(%error, "a metrics collector failed; the exposition is partial");
        }
        text
    }
}

/// Since the transport had the request's head (now, when no transport said).
pub fn request_elapsed(extensions: &http::Extensions) -> Duration {
    extensions.get::<RequestStarted>().map_or(Duration::ZERO, |started| started.0.elapsed())
}

fn transport_label(transport: Option<Transport>) -> &'static str {
    match transport {
        Some(Transport::Http1) => TRANSPORT_LABELS[0],
        Some(Transport::Http2) => TRANSPORT_LABELS[1],
        Some(Transport::Http3) => TRANSPORT_LABELS[2],
        None => TRANSPORT_LABELS[3],
    }
}

fn status_class_label(status: StatusCode) -> &'static str {
    STATUS_CLASS_LABELS[usize::from(status.as_u16() / 100).clamp(1, 5) - 1]
}

/// The methods routes use, and `other` for any other (a client may send any token).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(text: &str, prefix: &str) -> Vec<String> {
        text.lines().filter(|line| line.starts_with(prefix)).map(str::to_owned).collect()
    }

    #[test]
    fn requests_land_in_the_buckets_of_their_route_transport_and_class() {
        let metrics = Metrics::new();
        let route = "/api/v1/posts/{id}";
        for elapsed_ms in [0, 3, 40, 2_000] {
            let elapsed = Duration::from_millis(elapsed_ms);
            metrics.record_request(route, &Method::GET, Some(Transport::Http3), StatusCode::OK, elapsed);
        }
        metrics.record_request(route, &Method::GET, Some(Transport::Http2), StatusCode::NOT_FOUND, Duration::ZERO);
        let text = metrics.render(0, GateStats::default(), Format::Prometheus);
        let series = r#"route="/api/v1/posts/{id}",method="GET",transport="h3",status="2xx""#;
        let count = format!("edgenode_http_request_duration_seconds_count{{{series}}} 4");
        assert!(text.contains(&count), "{count} in\n{text}");
        for (le, cumulative) in [("0.0005", 1), ("0.005", 2), ("0.05", 3), ("1", 3), ("2.5", 4), ("+Inf", 4)] {
            let bucket = format!("edgenode_http_request_duration_seconds_bucket{{{series},le=\"{le}\"}} {cumulative}");
            assert!(text.contains(&bucket), "{bucket} in\n{text}");
        }
        assert!(text.contains(r#"edgenode_requests_total{transport="h3",status="2xx"} 4"#), "{text}");
        assert!(text.contains(r#"edgenode_requests_total{transport="h2",status="4xx"} 1"#), "{text}");
        assert!(text.contains(r#"edgenode_requests_total{transport="h1",status="5xx"} 0"#), "{text}");
        assert!(text.contains("# TYPE edgenode_http_request_duration_seconds histogram\n"), "{text}");
    }

    #[test]
    fn unknown_paths_and_methods_share_one_series() {
        let metrics = Metrics::new();
        for path in ["/nope", "/also/nope", "/api/v1/posts/1/2/3"] {
            let (head, ()) = http::Request::get(path).body(()).unwrap().into_parts();
            metrics.record_unhandled(&head, StatusCode::NOT_FOUND);
        }
        let odd = Method::from_bytes(b"BREW").unwrap();
        metrics.record_request(ROUTE_UNMATCHED, &odd, None, StatusCode::METHOD_NOT_ALLOWED, Duration::ZERO);
        let text = metrics.render(0, GateStats::default(), Format::Prometheus);
        let mut counts = samples(&text, "edgenode_http_request_duration_seconds_count");
        counts.sort();
        assert_eq!(
            counts,
            [
                r#"edgenode_http_request_duration_seconds_count{route="unmatched",method="GET",transport="other",status="4xx"} 3"#,
                r#"edgenode_http_request_duration_seconds_count{route="unmatched",method="other",transport="other",status="4xx"} 1"#,
            ],
            "{text}"
        );
    }

    #[test]
    fn a_refused_request_is_labelled_with_its_route() {
        let metrics = Metrics::new();
        let (head, ()) =
            http::Request::put(format!("/api/v1/media/{}", "ab".repeat(32))).body(()).unwrap().into_parts();
        metrics.record_unhandled(&head, StatusCode::UNAUTHORIZED);
        let text = metrics.render(0, GateStats::default(), Format::Prometheus);
        assert!(
            text.contains(r#"_count{route="/api/v1/media/{sha256}",method="PUT",transport="other",status="4xx"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_is_given_to_whoever_asks_for_it() {
        let metrics = Metrics::new();
        let prometheus = http::HeaderValue::from_static(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1",
        );
        assert_eq!(Format::from_accept(Some(&prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some(&http::HeaderValue::from_static("*/*"))), Format::Prometheus);
        let open = metrics.render(3, GateStats::default(), Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("edgenode_users 3\n"), "{open}");
        let text = metrics.render(3, GateStats::default(), Format::Prometheus);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains(&format!("edgenode_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{text}");
    }

    #[test]
    fn the_cached_thumbnail_route_is_the_route_tables_pattern() {
        let (route, _) = routes::find(&Method::GET, "/api/v1/media/ab/thumb").unwrap();
        assert_eq!(route.pattern, super::super::media::DOWNLOAD_ROUTE);
    }
}
