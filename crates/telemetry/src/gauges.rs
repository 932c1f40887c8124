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

use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::TraceCounts;
use crate::labels::{DeploymentLabels, ReasonLabels, ResultLabels};

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
    /// Client connections: open now, and those shed or closed for being slow.
    pub connections: ConnectionCounts,
    /// Budget counter operations that failed (the counter store unreachable or too slow).
    pub counter_errors: u64,
    /// Entries held by in-process budget counters (0 with Redis counters).
    pub counter_entries: u64,
    /// Reservations refused because a tenant's end users held the most in-process counter
    /// entries allowed (`budgets.max_counters_per_tenant`).
    pub counter_entries_refused: u64,
    /// Configuration reloads since start.
    pub config_reloads: ReloadCounts,
    /// The store's reachability and the record journal.
    pub store: StoreCounts,
}

/// Whether the store can be reached, and the records kept meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// The store cannot be reached now.
    pub down: bool,
    /// Time spent with the store unreachable since start, the outage under way included.
    pub degraded_ms: u64,
    /// Bytes of the record journal on disk.
    pub journal_bytes: u64,
    /// Records written to the store from the journal since start.
    pub records_replayed: u64,
}

/// Configuration reloads since start: swapped in, and refused because the file was invalid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    pub ok: u64,
    pub invalid: u64,
}

/// What the listener did with client connections, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Connections open now.
    pub open: u64,
    /// Refused because their client address held `max_connections_per_client` already.
    pub shed_per_client: u64,
    /// Refused because the gateway held `max_connections` already.
    pub shed_total: u64,
    /// Closed because a request's headers did not arrive within `header_read_timeout_ms`.
    pub header_timeouts: u64,
    /// Answered 408 because a request's body did not arrive within `body_read_timeout_ms`.
    pub body_timeouts: u64,
    /// Closed because the client read none of its answer for `idle_timeout_ms`.
    pub write_timeouts: u64,
    /// Still open when the shutdown grace ran out, and closed.
    pub cut_at_shutdown: u64,
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
    let c = queues.connections;
    let open = Gauge::<u64, AtomicU64>::default();
    open.set(c.open);
    registry.register(
        "sluice_connections_open",
        "Client connections open now",
        open,
    );
    let shed = Family::<ReasonLabels, Counter<u64, AtomicU64>>::default();
    for (reason, count) in [("per_client", c.shed_per_client), ("total", c.shed_total)] {
        shed.get_or_create(&ReasonLabels { reason }).inc_by(count);
    }
    registry.register(
        "sluice_connections_shed",
        "Client connections refused at accept: over the per-client or the total connection limit",
        shed,
    );
    let timed_out = Family::<ReasonLabels, Counter<u64, AtomicU64>>::default();
    for (reason, count) in [
        ("header", c.header_timeouts),
        ("body", c.body_timeouts),
        ("write", c.write_timeouts),
        ("shutdown", c.cut_at_shutdown),
    ] {
        timed_out
            .get_or_create(&ReasonLabels { reason })
            .inc_by(count);
    }
    registry.register(
        "sluice_connections_timed_out",
        "Client connections closed for being too slow: headers, body, reading the answer, or still open when the shutdown grace ran out",
        timed_out,
    );
    registry.register(
        "sluice_counter_errors",
        "Budget counter operations that failed: the counter store was unreachable or too slow",
        ConstCounter::new(queues.counter_errors),
    );
    let entries = Gauge::<u64, AtomicU64>::default();
    entries.set(queues.counter_entries);
    registry.register(
        "sluice_counter_entries",
        "Entries held by in-process budget counters, expired ones not yet swept included (0 with Redis counters)",
        entries,
    );
    registry.register(
        "sluice_counter_entries_refused",
        "Requests refused because their tenant held budgets.max_counters_per_tenant in-process counter entries for client-chosen ids",
        ConstCounter::new(queues.counter_entries_refused),
    );
    let reloads = Family::<ResultLabels, Counter<u64, AtomicU64>>::default();
    for (result, count) in [
        ("ok", queues.config_reloads.ok),
        ("invalid", queues.config_reloads.invalid),
    ] {
        reloads
            .get_or_create(&ResultLabels { result })
            .inc_by(count);
    }
    let store = queues.store;
    let down = Gauge::<u64, AtomicU64>::default();
    down.set(u64::from(store.down));
    registry.register(
        "sluice_store_degraded",
        "1 while the store cannot be reached: records go to the local journal, keys are served from the last known set",
        down,
    );
    registry.register(
        "sluice_store_degraded_seconds",
        "Time spent with the store unreachable since start",
        ConstCounter::new(store.degraded_ms as f64 / 1000.0),
    );
    let journal = Gauge::<u64, AtomicU64>::default();
    journal.set(store.journal_bytes);
    registry.register(
        "sluice_journal_bytes",
        "Bytes of the local record journal on disk: records not yet known to be in the store",
        journal,
    );
    registry.register(
        "sluice_records_replayed",
        "Request records written to the store from the local journal (after an outage, a full queue or a restart)",
        ConstCounter::new(store.records_replayed),
    );
    registry.register(
        "sluice_config_reloads",
        "Configuration reloads (SIGHUP or a changed file): swapped in, or refused because the file was invalid",
        reloads,
    );
    crate::encode(out, &registry);
}
