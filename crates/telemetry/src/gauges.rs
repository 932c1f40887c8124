//! Gauges read at scrape time: the state of each deployment and the gateway's shed records.
//!
//! These are not counted from records; whoever owns the state (routing for breakers, queues and
//! retry budgets, the record queue for shed records) hands a snapshot to
//! [`Metrics::render`](crate::Metrics::render) as plain values. They are encoded from a registry
//! built for that one scrape, so a deployment removed from the configuration disappears from
//! the next scrape instead of lingering with its last value.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

/// Encodes the scrape-time gauges, appending to `out`.
pub(crate) fn render(out: &mut String, deployments: &[DeploymentGauge], records_shed: u64) {
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
        ConstCounter::new(records_shed),
    );
    crate::encode(out, &registry);
}
