//! Counters exported in Prometheus text format at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

use super::Transport;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Open connections (TCP and QUIC); transports add and subtract.
    pub connections_open: AtomicI64,
    /// Connections turned away because `connections_max` was reached.
    pub connections_refused_total: AtomicU64,
    /// Requests by transport (h1, h2, h3, other) and status class (2xx..5xx).
    requests_total: [[AtomicU64; 5]; 4],
    request_seconds_sum_micros: AtomicU64,
    pub logins_throttled_total: AtomicU64,
    pub media_processed_total: AtomicU64,
    pub media_processing_micros_total: AtomicU64,
    /// Uploads and derivative rebuilds that waited for an identical one in flight.
    pub media_coalesced_total: AtomicU64,
}

const TRANSPORT_LABELS: [&str; 4] = ["h1", "h2", "h3", "other"];

impl Metrics {
    pub fn record_request(&self, transport: Option<Transport>, status: StatusCode, elapsed: Duration) {
        let transport_index = match transport {
            Some(Transport::Http1) => 0,
            Some(Transport::Http2) => 1,
            Some(Transport::Http3) => 2,
            None => 3,
        };
        let class_index = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests_total[transport_index][class_index].fetch_add(1, Ordering::Relaxed);
        self.request_seconds_sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn render(&self, users: u64) -> String {
        let mut text = String::new();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        text.push_str(
            "# HELP edgenode_requests_total HTTP requests answered.\n# TYPE edgenode_requests_total counter\n",
        );
        for (transport_index, label) in TRANSPORT_LABELS.iter().enumerate() {
            for class_index in 0..5 {
                let count = load(&self.requests_total[transport_index][class_index]);
                let _ = writeln!(
                    text,
                    "edgenode_requests_total{{transport=\"{label}\",status=\"{}xx\"}} {count}",
                    class_index + 1
                );
            }
        }
        let seconds = |micros: u64| micros as f64 / 1e6;
        let metrics = [
            ("edgenode_request_seconds_sum", "counter", seconds(load(&self.request_seconds_sum_micros))),
            ("edgenode_connections_open", "gauge", self.connections_open.load(Ordering::Relaxed) as f64),
            ("edgenode_connections_refused_total", "counter", load(&self.connections_refused_total) as f64),
            ("edgenode_logins_throttled_total", "counter", load(&self.logins_throttled_total) as f64),
            ("edgenode_media_processed_total", "counter", load(&self.media_processed_total) as f64),
            ("edgenode_media_processing_seconds_sum", "counter", seconds(load(&self.media_processing_micros_total))),
            ("edgenode_media_coalesced_total", "counter", load(&self.media_coalesced_total) as f64),
            ("edgenode_users", "gauge", users as f64),
        ];
        for (name, kind, value) in metrics {
            let _ = writeln!(text, "# TYPE {name} {kind}\n{name} {value}");
        }
        text
    }
}
