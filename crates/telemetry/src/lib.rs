//! Telemetry for Sluice, built from finished request records: Prometheus metrics (the
//! `/metrics` text) and OpenTelemetry traces (exported over OTLP).
//!
//! This crate owns the metric names, labels, buckets and label-cardinality caps, and the text
//! exposition format (Prometheus 0.0.4, through `prometheus-client`). A [`Metrics`] is one
//! gateway's set of series: the server makes one at startup, calls [`Metrics::observe`] once
//! per finished request with the same [`RequestRecord`] it hands to the store, and calls
//! [`Metrics::render`] per scrape. There is no global recorder, so several gateways in one
//! process keep separate counts.
//!
//! It also owns the span model and its export: a [`Tracer`] is called beside
//! [`Metrics::observe`] with the same record ([`Tracer::export`]), and sends one server span per
//! request and one client span per upstream attempt, following the OpenTelemetry GenAI
//! semantic conventions, over OTLP/HTTP or OTLP/gRPC. Like metrics, tracers are per gateway:
//! no global tracer provider.
//!
//! It leaves to others: serving `/metrics` and its content type header (the server), the state
//! behind the scrape-time gauges (routing owns breakers, queues and retry budgets; the record
//! queue counts shed records, the tracer its shed and failed spans), and the trace context itself (the pipeline draws trace and span
//! ids, reads the client's `traceparent` and sends one upstream; the record carries them).
//!
//! Where to look next: `series.rs` maps record fields to series, `labels.rs` caps label values,
//! `gauges.rs` holds the scrape-time gauges, and `docs/metrics.md` lists every series for
//! operators. `trace/spans.rs` maps a record to spans, `trace/export.rs` builds the OTLP
//! exporter, and `docs/tracing.md` describes the spans. Cost and energy series will sit beside
//! the token counters in `series.rs` once request records carry them.

mod error;
mod gauges;
mod labels;
mod series;
mod trace;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use prometheus_client::registry::Registry;
use sluice_types::record::RequestRecord;

pub use error::TelemetryError;
pub use gauges::{
    BreakerGauge, ConnectionCounts, DeploymentGauge, QueueCounts, ReloadCounts, StoreCounts,
};
pub use labels::{Limits, OVERFLOW};
pub use trace::{OtlpProtocol, TraceCounts, TraceSettings, Tracer};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One gateway's metrics. Cheap to clone: clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    series: series::Series,
    labels: labels::Labels,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty series with the default label caps ([`Limits::default`]).
    pub fn new() -> Metrics {
        Metrics::with_limits(Limits::default())
    }

    /// Empty series; past a label's cap in `limits`, new values are reported as [`OVERFLOW`].
    pub fn with_limits(limits: Limits) -> Metrics {
        let mut registry = Registry::default();
        let series = series::Series::register(&mut registry);
        Metrics {
            inner: Arc::new(Inner {
                registry,
                series,
                labels: labels::Labels::new(limits),
            }),
        }
    }

    /// Counts one finished request: the request, each upstream attempt, tokens, and the GenAI
    /// latency histograms. Safe to call from any number of threads; it takes only short locks,
    /// shared with a concurrent scrape, and allocates only the first time a label set appears.
    pub fn observe(&self, record: &RequestRecord) {
        self.inner.series.observe(&self.inner.labels, record);
    }

    /// The text exposition of every series, followed by the scrape-time gauges built from
    /// `deployments` and the background queues' counters from `queues`. Serve it with
    /// [`CONTENT_TYPE`].
    pub fn render(&self, deployments: &[DeploymentGauge], queues: QueueCounts) -> String {
        let mut out = String::with_capacity(16 * 1024);
        encode(&mut out, &self.inner.registry);
        gauges::render(&mut out, deployments, queues);
        out
    }
}

/// Appends `registry` to `out` in the Prometheus text format.
fn encode(out: &mut String, registry: &Registry) {
    // Writing into a String cannot fail, and no label value here has a fallible encoding, so
    // there is no error to report: the result is dropped rather than unwrapped.
    let _ = prometheus_client::encoding::prometheus_text::encode(out, registry);
}
