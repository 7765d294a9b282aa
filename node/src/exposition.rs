//! Figures read at scrape time, written through prometheus-client's encoder: the few
//! helpers the collectors of every layer share (api's process metrics, replication's
//! per-sibling state, fan-out's counters). The registry itself is `api::metrics`.
//!
//! A collector's `encode` runs while `/metrics` is answered, on the API's blocking
//! thread: it may take locks and read, but keeps to what a scrape can afford.

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder as Encoder;
pub use prometheus_client::metrics::MetricType as Kind;

/// Writes one counter. `name` without `_total`: the encoder adds it.
pub fn counter<N: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: N,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes one gauge: integers as integers (`3`, not `3.0`), for readers that parse them so.
pub fn gauge<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: N,
) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes a family of gauges or counters (`kind`), one sample per label set; nothing
/// at all when `samples` is empty (a family with no sample is not written).
pub fn family<L: EncodeLabelSet, N: EncodeGaugeValue + EncodeCounterValue + Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(L, N)],
) -> std::fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = family.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
            _ => ConstGauge::new(*value).encode(sample)?,
        }
    }
    Ok(())
}
