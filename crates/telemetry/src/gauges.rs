//! Gauges and counters read at scrape time: the state of each deployment, and what the
//! gateway's background queues (request records, traces) dropped or could not deliver.
//!
//! These are not counted from records; whoever owns the state (routing for breakers, queues and
//! retry budgets, the record queue for shed records, the tracer for its spans) hands a snapshot to
//! [`Metrics::render`](crate::Metrics::render) as plain values. They are encoded from a registry
//! built for that one scrape, so a deployment removed from the configuration disappears from
//! the next scrape instead of lingering with its last value.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::TraceCounts;
use crate::labels::DeploymentLabels;

/// A deployment's circuit breaker, as `sluice_deployment_breaker_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerGauge {
    /// Requests flow (0).
    #[default]
    Closed,
    /// A probe is being let through (1).
    HalfOpen,
    /// Requests skip the deployment (2).
    Open,
}

impl BreakerGauge {
    /// The exported value: 0 closed, 1 half-open, 2 open, so `> 0` means "not healthy".
    pub fn value(self) -> u64 {
        match self {
            BreakerGauge::Closed => 0,
            BreakerGauge::HalfOpen => 1,
            BreakerGauge::Open => 2,
        }
    }
}

/// One deployment's live state at scrape time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeploymentGauge {
    pub deployment: String,
    pub provider: String,
    pub breaker: BreakerGauge,
    /// Upstream calls under way.
    pub in_flight: u64,
    /// Requests waiting for a slot on this deployment.
    pub queued: u64,
    /// Retries the deployment's retry budget would allow right now.
    pub retry_budget_available: f64,
}

/// The counters of the gateway's background queues, which count in their own atomics (they sit
/// beside the request path, not in it) and are read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Request records dropped because the record queue was full or closed.
    pub records_shed: u64,
    /// The tracer's ([`Tracer::counts`](crate::Tracer::counts)); zero when tracing is off.
    pub traces: TraceCounts,
}

/// Encodes the scrape-time gauges and counters, appending to `out`.
pub(crate) fn render(out: &mut String, deployments: &[DeploymentGauge], queues: QueueCounts) {
    let breaker = Family::<DeploymentLabels, Gauge<u64, AtomicU64>>::default();
    let in_flight = Family::<DeploymentLabels, Gauge<u64, AtomicU64>>::default();
    let queued = Family::<DeploymentLabels, Gauge<u64, AtomicU64>>::default();
    let retry_budget = Family::<DeploymentLabels, Gauge<f64, AtomicU64>>::default();
    for d in deployments {
        let labels = DeploymentLabels {
            deployment: Arc::from(d.deployment.as_str()),
            provider: Arc::from(d.provider.as_str()),
        };
        breaker.get_or_create(&labels).set(d.breaker.value());
        in_flight.get_or_create(&labels).set(d.in_flight);
        queued.get_or_create(&labels).set(d.queued);
        retry_budget
            .get_or_create(&labels)
            .set(d.retry_budget_available);
    }

    let mut registry = Registry::default();
    registry.register(
        "sluice_deployment_breaker_state",
        "Circuit breaker of a deployment: 0 closed, 1 half-open, 2 open",
        breaker,
    );
    registry.register(
        "sluice_deployment_in_flight",
        "Upstream calls under way on a deployment",
        in_flight,
    );
    registry.register(
        "sluice_deployment_queue_depth",
        "Requests waiting for a slot on a deployment",
        queued,
    );
    registry.register(
        "sluice_retry_budget_available",
        "Retries a deployment's retry budget would allow now",
        retry_budget,
    );
    registry.register(
        "sluice_records_shed",
        "Request records dropped because the record queue was full or closed",
        ConstCounter::new(queues.records_shed),
    );
    registry.register(
        "sluice_traces_shed",
        "Finished requests whose spans were dropped before export: trace queue full or closed",
        ConstCounter::new(queues.traces.shed),
    );
    registry.register(
        "sluice_traces_export_failed",
        "Finished requests whose spans the OTLP collector did not accept, after retries",
        ConstCounter::new(queues.traces.failed),
    );
    registry.register(
        "sluice_traces_exported",
        "Finished requests whose spans the OTLP collector accepted",
        ConstCounter::new(queues.traces.exported),
    );
    crate::encode(out, &registry);
}
