//! The test harness: the real router on `127.0.0.1:0`, in front of [`MockUpstream`]s, with an
//! in-memory store and a key that may use every alias; tracing off unless a test sets a
//! collector ([`Builder::tracing`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sluice_pipeline::{Gateway, PolicyEngine, PolicyParts};
use sluice_providers::{Deployment, ProviderKind, Timeouts, Upstream};
use sluice_routing::{
    BreakerPolicy, CapacityPolicy, DeploymentHealth, RoutePolicy, RouteSpec, RouteTimeouts, Router,
};
use sluice_server::{AdminToken, AppState};
use sluice_store::{BudgetRow, NewKey, RecordQueue, RequestRecord, Stores};
use sluice_telemetry::{TraceSettings, Tracer};
use sluice_testkit::MockUpstream;
use tokio_util::sync::CancellationToken;

/// A deployment on a mock: what kind of provider it pretends to be, and the model asked for.
pub fn on(mock: &MockUpstream, kind: ProviderKind, model: &str) -> Deployment {
    Deployment {
        name: format!("{}-{}", kind.as_str(), mock.addr().port()),
        provider: kind.as_str().to_owned(),
        kind,
        base_url: format!("{}/v1", mock.base_url()).parse().unwrap(),
        model: model.to_owned(),
        api_key: Some("upstream-secret".to_owned().into()),
        default_max_tokens: 1024,
        structured_output: Default::default(),
        http_version: Default::default(),
    }
}

/// A route for the harness: pool, fallbacks, policy (`None`: the defaults with the harness's
/// timeouts).
pub struct TestRoute {
    pub alias: String,
    pub pool: Vec<Deployment>,
    pub fallbacks: Vec<Deployment>,
    pub policy: Option<RoutePolicy>,
}

/// The breaker of the harness's deployments unless a test sets one: off, so that tests of
/// fallback are not changed by earlier failures.
pub fn breaker_off() -> BreakerPolicy {
    BreakerPolicy {
        enabled: false,
        consecutive_failures: 5,
        failure_ratio: 0.5,
        min_requests: 20,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(10),
        half_open_probes: 1,
        min_callers: 1,
    }
}

#[derive(Default)]
pub struct Builder {
    routes: Vec<TestRoute>,
    max_body_bytes: Option<usize>,
    breaker: Option<BreakerPolicy>,
    capacity: Option<CapacityPolicy>,
    policy: Option<PolicyParts>,
    budgets: Vec<BudgetRow>,
    admin_token: Option<String>,
    tracing: Option<TraceSettings>,
    limits: Option<sluice_server::ConnectionLimits>,
    body_read_timeout: Option<Duration>,
    max_counters_per_tenant: Option<usize>,
}

/// The harness key's place in the hierarchy: `org:acme`, `team:qa`, `project:checkout`,
/// `user:tess`.
pub const KEY_ORG: &str = "acme";
pub const KEY_TEAM: &str = "qa";
pub const KEY_PROJECT: &str = "checkout";
pub const KEY_USER: &str = "tess";

/// Policy parts with nothing configured: in-process counters, built-in prices.
pub fn policy_parts() -> PolicyParts {
    PolicyParts {
        counters: Arc::new(sluice_policy::MemoryCounters::new()),
        on_counter_error: sluice_policy::OnCounterError::Closed,
        help: "Ask #platform for more.".into(),
        prices: sluice_policy::PriceTable::builtin(),
        energy: sluice_policy::EnergyModel::builtin(),
        regions: Default::default(),
        routes: Default::default(),
    }
}

/// A budget row: `scope` like `team:qa`, `metric` usd|tokens|requests, `period` day|60s|...
pub fn budget(scope: &str, metric: &str, period: &str, amount: u64) -> BudgetRow {
    BudgetRow::new(scope, metric, period, amount)
}

impl Builder {
    /// A route whose deployments are tried in order.
    pub fn route(self, alias: &str, deployments: impl IntoIterator<Item = Deployment>) -> Self {
        self.route_with(TestRoute {
            alias: alias.to_owned(),
            pool: deployments.into_iter().collect(),
            fallbacks: Vec::new(),
            policy: None,
        })
    }

    pub fn route_with(mut self, route: TestRoute) -> Self {
        self.routes.push(route);
        self
    }

    /// The breaker of every deployment.
    pub fn breaker(mut self, breaker: BreakerPolicy) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The concurrency limit of every deployment.
    pub fn capacity(mut self, capacity: CapacityPolicy) -> Self {
        self.capacity = Some(capacity);
        self
    }

    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = Some(limit);
        self
    }

    /// Admission, pricing and settlement as configured here (default: nothing configured).
    pub fn policy(mut self, parts: PolicyParts) -> Self {
        self.policy = Some(parts);
        self
    }

    /// A budget row in the store, loaded before the first request.
    /// In-process counters keeping at most `max` entries per tenant's end users.
    pub fn max_counters_per_tenant(mut self, max: usize) -> Self {
        self.max_counters_per_tenant = Some(max);
        self
    }

    pub fn budget(mut self, row: BudgetRow) -> Self {
        self.budgets.push(row);
        self
    }

    /// Turns the admin API on with this token.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_owned());
        self
    }

    /// Bounds on client connections (default: `[server]`'s defaults).
    pub fn limits(mut self, limits: sluice_server::ConnectionLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// How long a request body may take to arrive (default 30 s).
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = Some(timeout);
        self
    }

    /// Exports every finished request's spans as `settings` say, as `[telemetry]` does.
    pub fn tracing(mut self, settings: TraceSettings) -> Self {
        self.tracing = Some(settings);
        self
    }

    pub async fn start(self) -> TestGateway {
        let store = Stores::sqlite_in_memory().await.unwrap();
        let key = store
            .keys
            .create_key(NewKey {
                name: "test".into(),
                organisation: Some(KEY_ORG.into()),
                team: Some(KEY_TEAM.into()),
                project: Some(KEY_PROJECT.into()),
                user: Some(KEY_USER.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            first_token: Duration::from_secs(10),
            idle: Duration::from_secs(10),
            total: Duration::from_secs(30),
        };
        let breaker = self.breaker.unwrap_or_else(breaker_off);
        let capacity = self.capacity.unwrap_or(CapacityPolicy {
            max_concurrency: None,
            max_queue: 0,
            queue_timeout: Duration::from_secs(1),
        });
        // One health per deployment name, shared by the routes that use it.
        let mut healths: Vec<Arc<DeploymentHealth>> = Vec::new();
        let mut health_of = |d: Deployment| {
            if let Some(h) = healths.iter().find(|h| h.name() == d.name) {
                return h.clone();
            }
            let h = Arc::new(DeploymentHealth::new(Arc::new(d), breaker, capacity));
            healths.push(h.clone());
            h
        };
        let specs: Vec<RouteSpec> = self
            .routes
            .into_iter()
            .map(|r| RouteSpec {
                alias: r.alias,
                pool: r.pool.into_iter().map(|d| (health_of(d), 1)).collect(),
                fallbacks: r.fallbacks.into_iter().map(&mut health_of).collect(),
                policy: r.policy.unwrap_or_else(|| {
                    RoutePolicy::ordered(RouteTimeouts {
                        connect: timeouts.connect,
                        first_token: timeouts.first_token,
                        idle: timeouts.idle,
                        total: timeouts.total,
                    })
                }),
            })
            .collect();
        let router = Router::new(specs, healths);
        let upstream = Upstream::new(timeouts).unwrap();
        let queue = RecordQueue::start(store.records.clone(), 1024);
        let tracer = match self.tracing {
            Some(settings) => Tracer::start(settings).unwrap(),
            None => Tracer::disabled(),
        };
        let mut parts = self.policy.unwrap_or_else(policy_parts);
        let mut counter_entries = sluice_policy::counters::CounterEntries::default();
        if let Some(max) = self.max_counters_per_tenant {
            let counters = sluice_policy::MemoryCounters::with_max_per_tenant(max);
            counter_entries = counters.entries();
            parts.counters = Arc::new(counters);
        }
        let gateway = Gateway::new(
            router,
            upstream,
            store.clone(),
            queue.sender(),
            tracer.clone(),
            PolicyEngine::new(parts),
        );
        for row in self.budgets {
            store.budgets.put_budget(row).await.unwrap();
        }
        let (_, bad) = gateway.reload_budgets().await.unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        let handle = gateway.clone();
        let connections = Arc::new(sluice_server::ConnectionStats::default());
        let state = AppState {
            gateway: handle,
            max_body_bytes: self.max_body_bytes.unwrap_or(1 << 20),
            body_read_timeout: self.body_read_timeout.unwrap_or(Duration::from_secs(30)),
            connections: connections.clone(),
            counter_errors: Default::default(),
            counter_entries,
            admin_token: self
                .admin_token
                .map(|t| AdminToken::new(&secrecy::SecretString::from(t))),
        };
        let metrics_app = sluice_server::metrics_app(state.clone());
        let app = sluice_server::app(state);
        let listener = sluice_server::bind(
            "127.0.0.1:0".parse().unwrap(),
            sluice_server::listener::DEFAULT_BACKLOG,
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_listener = sluice_server::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stopping = stop.clone();
        let limits = self.limits.unwrap_or_default();
        let server = tokio::spawn(async move {
            sluice_server::serve(
                listener,
                app,
                limits,
                connections,
                stopping.cancelled_owned(),
            )
            .await
            .unwrap();
        });
        let stopping = stop.clone();
        tokio::spawn(async move {
            sluice_server::serve(
                metrics_listener,
                metrics_app,
                sluice_server::ConnectionLimits::default(),
                Arc::default(),
                stopping.cancelled_owned(),
            )
            .await
            .unwrap();
        });
        TestGateway {
            addr,
            metrics_addr,
            key: key.secret,
            gateway,
            store,
            queue,
            tracer,
            stop,
            server,
            client: reqwest::Client::builder().build().unwrap(),
        }
    }
}

pub struct TestGateway {
    pub addr: SocketAddr,
    /// The operators' listener: `/metrics` and the detailed `/health` without a token.
    pub metrics_addr: SocketAddr,
    /// A key that may use every alias.
    pub key: String,
    pub gateway: Gateway,
    pub store: Stores,
    queue: RecordQueue,
    tracer: Tracer,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    pub client: reqwest::Client,
}

impl TestGateway {
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs JSON to an OpenAI route with the bearer key.
    pub async fn openai(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs JSON to an Anthropic route the way the Anthropic SDK does.
    pub async fn anthropic(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("x-api-key", &self.key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A URL on the operators' listener.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics_addr)
    }

    /// The detailed `/health`, from the operators' listener.
    pub async fn health(&self) -> Value {
        let res = self
            .client
            .get(self.metrics_url("/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// The `/metrics` text, from the operators' listener.
    pub async fn metrics(&self) -> String {
        let res = self
            .client
            .get(self.metrics_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    }

    /// Stops the server, waits for budget settlements, drains the record queue and the
    /// tracer, and returns every record, oldest first.
    pub async fn finish(self) -> Vec<RequestRecord> {
        self.stop.cancel();
        self.server.await.unwrap();
        self.gateway.policy().drain().await;
        self.queue.shutdown().await;
        self.tracer.shutdown().await;
        let mut records = self.store.queries.latest_records(10_000).await.unwrap();
        records.reverse();
        records
    }
}

/// The SSE `data:` payloads of a body, parsed as JSON (`[DONE]` kept as a string).
pub fn sse_data(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned())))
        .collect()
}

/// The SSE `event:` names of a body, in order.
pub fn sse_event_names(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("event: ")))
        .map(str::to_owned)
        .collect()
}

/// The text content of an OpenAI stream's chunks, concatenated.
pub fn openai_stream_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
        })
        .collect()
}
