//! `/metrics` as an operator's scraper reads it: requests over HTTP/1.1, HTTP/2 and
//! HTTP/3 land in the latency histogram under their route pattern, transport and
//! status class, with exactly as many observations as requests were made; the
//! exposition parses with the Prometheus project's own Python parser (Debian
//! `python3-prometheus-client`) as Prometheus text, from the API (admin) and from the
//! plain metrics listener, and as OpenMetrics when the scraper asks for it. Siblings
//! show up per peer: connected, with their lag.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgenode_tests::client::{Client, Response, Transport};
use edgenode_tests::cluster::{control_token, preloaded_siblings};
use edgenode_tests::node::{Node, NodeOptions};
use serde_json::Value;

const INSTALL_PARSER: &str = "install the Debian package python3-prometheus-client \
     (tests/system/install-deps does), or set EDGENODE_TEST_PYTHON to a python3 that has prometheus_client";

/// The request latency buckets the node is built with (seconds), `+Inf` added.
const BUCKET_BOUNDS: [&str; 15] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0",
    "+Inf",
];

/// A different number per transport, so counts put under the wrong transport show.
fn requests_over(transport: Transport) -> u64 {
    match transport {
        Transport::Http1 => 3,
        Transport::Http2 => 5,
        Transport::Http3 => 7,
    }
}

fn transport_label(transport: Transport) -> &'static str {
    match transport {
        Transport::Http1 => "h1",
        Transport::Http2 => "h2",
        Transport::Http3 => "h3",
    }
}

#[test]
fn request_histograms_count_every_request_by_route_and_transport_and_parse() {
    let python = python_with_prometheus_client();
    let listener_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let node = Node::start(NodeOptions::with_config(&format!("metrics_listen = \"127.0.0.1:{listener_port}\"\n")));
    let admin = Client::new(&node, Transport::Http2).claim_admin(&node, "ada");

    for transport in Transport::ALL {
        let client = Client::new(&node, transport);
        for _ in 0..requests_over(transport) {
            let (status, _) = client.get_json("/api/v1/node", None);
            assert_eq!(status, 200, "{transport:?}: GET /api/v1/node");
        }
        // Made-up paths: counted under one `unmatched` route, whatever the path.
        let missing = client.request("GET", &format!("/no/such/{}", transport_label(transport)), None, &[], Vec::new());
        assert_eq!(missing.status, 404, "{transport:?}: a made-up path");
    }

    // From the API, as the admin, in the default format.
    let from_api = Client::new(&node, Transport::Http1).request("GET", "/metrics", Some(&admin.token), &[], Vec::new());
    assert_eq!(from_api.status, 200, "GET /metrics as the admin: {}", from_api.body_text());
    let content_type = from_api.header("content-type").unwrap_or_default();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8", "the Prometheus text format says so");
    let families = parse(&python, Parser::Prometheus, &exposition(&from_api));
    for transport in Transport::ALL {
        let labels = [
            ("route", "/api/v1/node"),
            ("method", "GET"),
            ("transport", transport_label(transport)),
            ("status", "2xx"),
        ];
        expect_histogram(&families, &labels, requests_over(transport));
        let unmatched =
            [("route", "unmatched"), ("method", "GET"), ("transport", transport_label(transport)), ("status", "4xx")];
        expect_histogram(&families, &unmatched, 1);
    }
    let build = sample(&families, "edgenode_build_info", &[("version", env!("CARGO_PKG_VERSION"))]);
    assert_eq!(build, Some(1.0), "edgenode_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let node_pid_memory =
        sample(&families, "process_resident_memory_bytes", &[]).expect("process_resident_memory_bytes");
    assert!(node_pid_memory > 1e6, "a node's resident memory is more than 1 MB: {node_pid_memory}");
    assert!(sample(&families, "process_open_fds", &[]).is_some_and(|fds| fds >= 3.0), "process_open_fds");
    assert!(
        sample(&families, "process_cpu_seconds_total", &[]).is_some_and(|cpu| cpu > 0.0),
        "process_cpu_seconds_total"
    );
    // Every request of this test so far, over h2, answered 2xx: the claim and its own GETs.
    let h2_ok = sample(&families, "edgenode_requests_total", &[("transport", "h2"), ("status", "2xx")]);
    assert!(h2_ok.is_some_and(|count| count >= (requests_over(Transport::Http2) + 1) as f64), "{h2_ok:?}");

    // From the operator's listener: plain HTTP, no credentials, the same exposition.
    let (head, body) = scrape_listener(listener_port, None);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    let families = parse(&python, Parser::Prometheus, &body);
    for transport in Transport::ALL {
        let labels = [
            ("route", "/api/v1/node"),
            ("method", "GET"),
            ("transport", transport_label(transport)),
            ("status", "2xx"),
        ];
        expect_histogram(&families, &labels, requests_over(transport));
    }
    // The admin's scrape above is one request too.
    let scrapes = [("route", "/metrics"), ("method", "GET"), ("transport", "h1"), ("status", "2xx")];
    expect_histogram(&families, &scrapes, 1);

    // OpenMetrics for a scraper that asks for it (Prometheus does), read by the
    // stricter OpenMetrics parser.
    let accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3";
    let (head, body) = scrape_listener(listener_port, Some(accept));
    assert!(
        head.to_ascii_lowercase().contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    let families = parse(&python, Parser::OpenMetrics, &body);
    for transport in Transport::ALL {
        let labels = [
            ("route", "/api/v1/node"),
            ("method", "GET"),
            ("transport", transport_label(transport)),
            ("status", "2xx"),
        ];
        expect_histogram(&families, &labels, requests_over(transport));
    }
}

#[test]
fn each_sibling_has_its_state_and_lag() {
    let python = python_with_prometheus_client();
    let [home, replica] = preloaded_siblings(["home", "replica"]);
    let at_home = Client::new(&home, Transport::Http2);
    let token = control_token(&home);
    let peer = [("peer", replica.node_id())];
    let started = Instant::now();
    let families = loop {
        let response = at_home.request("GET", "/metrics", Some(&token), &[], Vec::new());
        assert_eq!(response.status, 200, "{}", response.body_text());
        let families = parse(&python, Parser::Prometheus, &exposition(&response));
        let connected = sample(&families, "edgenode_replication_peer_connected", &peer);
        let lag = sample(&families, "edgenode_replication_peer_lag_entries", &peer);
        // The lag is known from acknowledgements kept on disk, so a sibling can show
        // connected and caught up a moment before its first frame of this connection.
        let received = sample(&families, "edgenode_replication_peer_received_bytes_total", &peer);
        if connected == Some(1.0) && lag == Some(0.0) && received.is_some_and(|bytes| bytes > 0.0) {
            break families;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the replica connected, caught up and sent frames within 30 s: connected {connected:?}, lag {lag:?}, \
             bytes {received:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(sample(&families, "edgenode_siblings_connected", &[]), Some(1.0));
    let since = sample(&families, "edgenode_replication_peer_last_contact_seconds", &peer);
    assert!(since.is_some_and(|seconds| (0.0..30.0).contains(&seconds)), "last contact {since:?} s ago");
}

/// Checks one series of `edgenode_http_request_duration_seconds`: `count`
/// observations, every bucket bound of the node, cumulative counts that never fall
/// and end at the count, and a plausible sum.
fn expect_histogram(families: &[Value], labels: &[(&str, &str)], count: u64) {
    let family = families
        .iter()
        .find(|family| family["name"] == "edgenode_http_request_duration_seconds")
        .unwrap_or_else(|| panic!("no edgenode_http_request_duration_seconds in {families:#?}"));
    assert_eq!(family["type"], "histogram", "{family}");
    let series = format!("{labels:?}");
    let observed = sample(families, "edgenode_http_request_duration_seconds_count", labels);
    assert_eq!(observed, Some(count as f64), "_count of {series}");
    let mut buckets: BTreeMap<usize, (String, f64)> = BTreeMap::new();
    for sample in family["samples"].as_array().expect("samples") {
        if sample["name"] != "edgenode_http_request_duration_seconds_bucket" || !has_labels(sample, labels) {
            continue;
        }
        let le = sample["labels"]["le"].as_str().expect("le").to_owned();
        let position = BUCKET_BOUNDS
            .iter()
            .position(|bound| le.parse::<f64>().ok() == bound.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series}: unexpected bucket le={le}"));
        buckets.insert(position, (le, sample["value"].as_f64().expect("value")));
    }
    assert_eq!(buckets.len(), BUCKET_BOUNDS.len(), "{series}: one bucket per bound: {buckets:?}");
    let cumulative: Vec<f64> = buckets.values().map(|(_, value)| *value).collect();
    assert!(cumulative.windows(2).all(|pair| pair[0] <= pair[1]), "{series}: buckets are cumulative: {buckets:?}");
    assert_eq!(cumulative.last().copied(), Some(count as f64), "{series}: +Inf holds every observation");
    let sum = sample(families, "edgenode_http_request_duration_seconds_sum", labels).expect("_sum");
    assert!(sum > 0.0 && sum < count as f64 * 10.0, "{series}: {count} requests took {sum} s in all");
}

/// The value of the sample called `name` whose labels include `labels`.
fn sample(families: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families
        .iter()
        .flat_map(|family| family["samples"].as_array().into_iter().flatten())
        .find(|sample| sample["name"] == name && has_labels(sample, labels))
        .and_then(|sample| sample["value"].as_f64())
}

fn has_labels(sample: &Value, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(key, value)| sample["labels"][key] == *value)
}

/// The whole body of a `/metrics` answer (`body_text` cuts it short for messages).
fn exposition(response: &Response) -> String {
    String::from_utf8(response.body.clone()).expect("the exposition is UTF-8")
}

/// `GET /metrics` on the metrics listener over plain HTTP/1.1: its head and body.
fn scrape_listener(port: u16, accept: Option<&str>) -> (String, String) {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting to the metrics listener");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map(|accept| format!("accept: {accept}\r\n")).unwrap_or_default();
    write!(tcp, "GET /metrics HTTP/1.1\r\nhost: localhost\r\n{accept}connection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("reading the scrape");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("an HTTP answer: {answer}"));
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    (head.to_owned(), body.to_owned())
}

#[derive(Debug, Clone, Copy)]
enum Parser {
    /// `prometheus_client.parser`: the Prometheus text format.
    Prometheus,
    /// `prometheus_client.openmetrics.parser`: OpenMetrics, which must end in `# EOF`.
    OpenMetrics,
}

/// Families as the Python client's parser reads `exposition`: `[{name, type,
/// samples: [{name, labels, value}]}]`. Panics with the parser's error.
fn parse(python: &Path, parser: Parser, exposition: &str) -> Vec<Value> {
    let module = match parser {
        Parser::Prometheus => "prometheus_client.parser",
        Parser::OpenMetrics => "prometheus_client.openmetrics.parser",
    };
    let script = format!(
        "import json, math, sys\n\
         from {module} import text_string_to_metric_families\n\
         families = [{{'name': f.name, 'type': f.type, 'samples': [\n\
             {{'name': s.name, 'labels': s.labels, 'value': s.value if math.isfinite(s.value) else str(s.value)}}\n\
             for s in f.samples]}} for f in text_string_to_metric_families(sys.stdin.read())]\n\
         json.dump(families, sys.stdout)\n"
    );
    let mut child = Command::new(python)
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("running {}: {error}: {INSTALL_PARSER}", python.display()));
    child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("writing to the parser");
    let output = child.wait_with_output().expect("the parser's answer");
    assert!(
        output.status.success(),
        "{module} refused the exposition: {}\n{exposition}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the parser's JSON")
}

/// A python3 that has prometheus_client's parsers.
fn python_with_prometheus_client() -> PathBuf {
    edgenode_tests::fixtures::python_with(
        "import prometheus_client.parser, prometheus_client.openmetrics.parser",
        INSTALL_PARSER,
    )
}
