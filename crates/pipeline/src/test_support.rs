//! What the pipeline's unit tests share: a deployment's health, an exchange whose record
//! goes to an in-memory store, and a caller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_providers::{Deployment, ProviderKind};
use sluice_routing::{BreakerPolicy, CapacityPolicy, DeploymentHealth};
use sluice_store::{RecordQueue, Stores};
use sluice_types::Dialect;
use sluice_types::record::{Endpoint, RequestRecord};

use crate::Exchange;
use crate::admission::{PolicyEngine, PolicyParts};

pub(crate) fn health(name: &str) -> Arc<DeploymentHealth> {
    let deployment = Arc::new(Deployment {
        name: name.into(),
        provider: "p".into(),
        kind: ProviderKind::OpenAiCompatible,
        base_url: "http://127.0.0.1:1/v1".parse().unwrap(),
        model: "m".into(),
        api_key: None,
        default_max_tokens: 16,
        structured_output: Default::default(),
        http_version: Default::default(),
    });
    let breaker = BreakerPolicy {
        enabled: false,
        consecutive_failures: 5,
        failure_ratio: 0.5,
        min_requests: 20,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(10),
        half_open_probes: 1,
        min_callers: 1,
    };
    let capacity = CapacityPolicy {
        max_concurrency: None,
        max_queue: 0,
        queue_timeout: Duration::from_secs(1),
    };
    Arc::new(DeploymentHealth::new(deployment, breaker, capacity))
}

/// Where an exchange's record goes, to be read back.
pub(crate) struct Records {
    store: Stores,
    queue: RecordQueue,
}

impl Records {
    /// Every record submitted, oldest first (the clock must be running again).
    pub(crate) async fn read(self) -> Vec<RequestRecord> {
        self.queue.shutdown().await;
        let mut records = self.store.queries.latest_records(100).await.unwrap();
        records.reverse();
        records
    }
}

/// A new chat exchange, its record bound for an in-memory store.
pub(crate) async fn exchange() -> (Exchange, Records) {
    let store = Stores::memory();
    let queue = RecordQueue::start(store.records.clone(), 16);
    let policy = PolicyEngine::new(PolicyParts {
        counters: Arc::new(sluice_policy::MemoryCounters::new()),
        on_counter_error: sluice_policy::OnCounterError::Closed,
        help: String::new(),
        prices: sluice_policy::PriceTable::builtin(),
        energy: sluice_policy::EnergyModel::builtin(),
        regions: HashMap::new(),
        routes: HashMap::new(),
    });
    let exchange = Exchange::new(
        queue.sender(),
        sluice_telemetry::Metrics::new(),
        sluice_telemetry::Tracer::disabled(),
        Arc::new(policy),
        Endpoint::ChatCompletions,
        Dialect::OpenAi,
    );
    (exchange, Records { store, queue })
}

/// A caller whose key (of tenant `acme`) holds `roles`.
pub(crate) fn caller(roles: &[&str]) -> crate::Caller {
    crate::Caller {
        key: Arc::new(sluice_store::KeyInfo {
            id: "key_1".into(),
            prefix: "sk-sluice-ab".into(),
            name: "t".into(),
            tenant: sluice_types::TenantId("acme".into()),
            organisation: Some("acme".into()),
            team: None,
            project: None,
            user: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            aliases: Vec::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            log_bodies: false,
        }),
    }
}
