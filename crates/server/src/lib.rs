//! The HTTP surface of Sluice: OpenAI routes (`/v1/chat/completions`, `/v1/embeddings`),
//! `/v1/models` and `/v1/models/{id}` in both dialects ([`models`]), Anthropic routes (`/v1/messages`, `/v1/messages/count_tokens`), health, and
//! the admin API under `/admin/v1` ([`admin`]: budgets, usage and the active configuration,
//! behind its own token).
//!
//! Handlers stay thin: read the body, decode the dialect (`sluice-wire`), call the pipeline,
//! encode the answer (raw bytes when the provider spoke the client's dialect, translated
//! otherwise), add provenance headers. [`error`] holds the only kind -> status table.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use sluice_pipeline::Gateway;
use sluice_types::{Dialect, ErrorKind};

pub mod admin;
mod anthropic;
mod body;
mod chat;
pub mod error;
pub mod listener;
mod models;
mod openai;
mod provenance;
mod quota;
mod stream;
pub mod workers;

pub use admin::AdminToken;
pub use error::{AdminError, ApiError};
pub use listener::{ConnectionLimits, ConnectionStats, bind, bind_with, serve, serve_on};
pub use workers::Workers;

#[derive(Clone, Debug)]
pub struct AppState {
    pub gateway: Gateway,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// A request body must arrive within this once its handler starts reading it.
    pub body_read_timeout: std::time::Duration,
    /// What the listener did with client connections, for `/metrics`.
    pub connections: std::sync::Arc<ConnectionStats>,
    /// Failed budget counter operations, for `/metrics`.
    pub counter_errors: sluice_policy::counters::CounterErrors,
    /// In-process budget counter entries, and reservations refused at a tenant's cap.
    pub counter_entries: sluice_policy::counters::CounterEntries,
    /// The admin API's token; `None` turns the admin API off (its routes answer 404).
    pub admin_token: Option<AdminToken>,
}

/// Builds the router of the client-facing listener. `/health` answers liveness to anyone and
/// its detail (circuits, load, retry budgets: the names of every deployment and route) only
/// with the admin token; `/metrics` needs the admin token. [`metrics_app`] serves both
/// without one, for a listener operators keep private (`server.metrics_listen`).
pub fn app(state: AppState) -> Router {
    Router::new()
        .nest(admin::PREFIX, admin::routes(state.clone()))
        .route(
            "/v1/chat/completions",
            post(openai::chat_completions).fallback(wrong_method_openai),
        )
        .route(
            "/v1/embeddings",
            post(openai::embeddings).fallback(wrong_method_openai),
        )
        .route("/v1/models", get(models::list).fallback(wrong_method_any))
        .route(
            "/v1/models/{*id}",
            get(models::retrieve).fallback(wrong_method_any),
        )
        .route(
            "/v1/messages",
            post(anthropic::messages).fallback(wrong_method_anthropic),
        )
        .route(
            "/v1/messages/count_tokens",
            post(anthropic::count_tokens).fallback(wrong_method_anthropic),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics_with_token))
        .route("/ready", get(ready))
        .fallback(not_found)
        .with_state(state)
}

/// Builds the router of the operators' listener (`server.metrics_listen`): `/metrics`, the
/// detailed `/health` and `/ready`, without a token. Bind it where only operators and the
/// Prometheus scraper reach it.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(detailed_health))
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .fallback(not_found)
        .with_state(state)
}

/// `405` in the OpenAI dialect, with `Allow`.
async fn wrong_method_openai(request: Request) -> Response {
    wrong_method(&request, Dialect::OpenAi)
}

/// `405` in the Anthropic dialect, with `Allow`.
async fn wrong_method_anthropic(request: Request) -> Response {
    wrong_method(&request, Dialect::Anthropic)
}

/// `405` for an endpoint both SDKs call (`/v1/models`): the dialect the client speaks.
async fn wrong_method_any(request: Request) -> Response {
    let dialect = dialect_of(request.headers());
    wrong_method(&request, dialect)
}

/// The methods each API path takes, for `Allow`.
fn allowed_methods(path: &str) -> &'static str {
    if path == "/v1/models" || path.starts_with("/v1/models/") {
        "GET, HEAD"
    } else {
        "POST"
    }
}

fn wrong_method(request: &Request, dialect: Dialect) -> Response {
    let path = request.uri().path();
    let allow = allowed_methods(path);
    let message = format!("{} is not allowed on {path}; use {allow}", request.method());
    let mut response = ApiError::new(ErrorKind::MethodNotAllowed, message).render(dialect);
    response
        .headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    provenance::request_id(
        response.headers_mut(),
        &sluice_types::RequestId::new().to_string(),
    );
    response
}

/// Liveness. To anyone, only `status` (`ok`, or `degraded` while any circuit is not closed:
/// the gateway still serves, fallbacks carry the traffic). With the admin token, the detail of
/// [`detailed_health`].
async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.admin_token.is_some() && admin::authorize(&state, &headers).is_ok() {
        return detailed_health(State(state)).await;
    }
    let degraded = state
        .gateway
        .current()
        .router()
        .deployments()
        .iter()
        .any(|d| d.breaker_state() != sluice_routing::BreakerState::Closed);
    let body = serde_json::json!({ "status": if degraded { "degraded" } else { "ok" } });
    json_response(Bytes::from(body.to_string()))
}

/// Liveness with what an operator checks first: shed records and drills, and per deployment its
/// circuit, load and latency, and per route its retry budgets.
async fn detailed_health(State(state): State<AppState>) -> Response {
    let gateway = state.gateway.current();
    let router = gateway.router();
    let deployments: Vec<_> = router.deployments().iter().map(|d| d.status()).collect();
    let degraded = deployments
        .iter()
        .any(|d| d.breaker != sluice_routing::BreakerState::Closed);
    let routes: serde_json::Map<String, serde_json::Value> = router
        .routes()
        .map(|route| {
            let detail = serde_json::json!({
                "strategy": route.policy.strategy.as_str(),
                "retry_budget": route.budgets(),
            });
            (route.alias.to_string(), detail)
        })
        .collect();
    let records = state.gateway.records();
    let body = serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "ready": readiness(&state),
        "store_outage": state.gateway.store_health().outage().map(|o| o.reason),
        "journal_bytes": records.journal_bytes(),
        "records_replayed": records.replayed(),
        "records_shed": state.gateway.records_shed(),
        "drills_shed": state.gateway.drills_shed(),
        "config": admin::config_detail(&gateway),
        "deployments": deployments,
        "routes": routes,
    });
    json_response(Bytes::from(body.to_string()))
}

/// `/metrics` on the client-facing listener: only with the admin token (the series name every
/// alias, deployment and their traffic).
async fn metrics_with_token(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match admin::authorize(&state, &headers) {
        Ok(()) => metrics(State(state)).await,
        Err(error) => error
            .with_message_suffix(
                " (`/metrics` needs the admin token here; or scrape the listener of `server.metrics_listen`)",
            )
            .into_response(),
    }
}

/// Prometheus metrics: request series from the records, gauges read from routing now, and the
/// record queue's and the tracer's counters.
async fn metrics(State(state): State<AppState>) -> Response {
    use sluice_routing::BreakerState;
    use sluice_telemetry::{BreakerGauge, DeploymentGauge, QueueCounts};
    let gateway = state.gateway.current();
    let router = gateway.router();
    let gauges: Vec<DeploymentGauge> = router
        .deployments()
        .iter()
        .map(|health| {
            let status = health.status();
            // A deployment in several routes has a budget in each: their sum is what it can
            // still be retried.
            let retry_budget_available: u64 = router
                .routes()
                .flat_map(|route| route.budgets())
                .filter(|b| b.deployment == status.deployment)
                .map(|b| b.budget.available)
                .sum();
            DeploymentGauge {
                breaker: match status.breaker {
                    BreakerState::Closed => BreakerGauge::Closed,
                    BreakerState::HalfOpen => BreakerGauge::HalfOpen,
                    BreakerState::Open => BreakerGauge::Open,
                },
                in_flight: status.in_flight as u64,
                queued: status.queued as u64,
                retry_budget_available: retry_budget_available as f64,
                deployment: status.deployment,
                provider: status.provider,
            }
        })
        .collect();
    let queues = QueueCounts {
        records_shed: state.gateway.records_shed(),
        traces: state.gateway.tracer().counts(),
        connections: state.connections.counts(),
        counter_errors: state.counter_errors.get(),
        counter_entries: state.counter_entries.live(),
        counter_entries_refused: state.counter_entries.refused(),
        config_reloads: {
            let reloads = state.gateway.reloads();
            sluice_telemetry::ReloadCounts {
                ok: reloads.ok,
                invalid: reloads.refused,
            }
        },
        store: {
            let health = state.gateway.store_health();
            let records = state.gateway.records();
            sluice_telemetry::StoreCounts {
                down: health.is_down(),
                degraded_ms: health.degraded_total().as_millis() as u64,
                journal_bytes: records.journal_bytes(),
                records_replayed: records.replayed(),
            }
        },
    };
    let text = state.gateway.metrics().render(&gauges, queues);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, sluice_telemetry::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// Readiness: the router exists only once the store is open and the configuration loaded. A
/// degraded replica is still ready (it serves); `mode` says which parts it runs without.
async fn ready(State(state): State<AppState>) -> Response {
    json_response(Bytes::from(readiness(&state).to_string()))
}

/// `{"status": "ready", "mode": "normal" | "degraded", "degraded": [...]}`: the store while it
/// cannot be reached (records journaled, keys from the last known set), the budget counters
/// while their last operation failed (`budgets.on_counter_error` applies).
fn readiness(state: &AppState) -> serde_json::Value {
    let mut degraded = Vec::new();
    if let Some(outage) = state.gateway.store_health().outage() {
        degraded.push(serde_json::json!({
            "part": "store",
            "for_ms": outage.for_time.as_millis() as u64,
        }));
    }
    if state.counter_errors.failing() {
        degraded.push(serde_json::json!({ "part": "counters" }));
    }
    serde_json::json!({
        "status": "ready",
        "mode": if degraded.is_empty() { "normal" } else { "degraded" },
        "degraded": degraded,
    })
}

/// The dialect of a request that reached no route: Anthropic SDKs always send
/// `anthropic-version`, OpenAI ones never do.
pub(crate) fn dialect_of(headers: &HeaderMap) -> Dialect {
    if headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

async fn not_found(request: Request) -> Response {
    let dialect = dialect_of(request.headers());
    let message = format!("no route for {} {}", request.method(), request.uri().path());
    let mut response = ApiError::new(ErrorKind::UnknownPath, message).render(dialect);
    provenance::request_id(
        response.headers_mut(),
        &sluice_types::RequestId::new().to_string(),
    );
    response
}

pub(crate) fn json_response(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}
