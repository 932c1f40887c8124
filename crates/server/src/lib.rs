//! The HTTP surface of Sluice: OpenAI routes (`/v1/chat/completions`, `/v1/embeddings`),
//! `/v1/models` and `/v1/models/{id}` in both dialects ([`models`]), Anthropic routes (`/v1/messages`, `/v1/messages/count_tokens`), health, and
//! the admin API under `/admin/v1` ([`admin`]: budgets and usage, behind its own token).
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
mod models;
mod openai;
mod provenance;
mod quota;
mod stream;

pub use admin::AdminToken;
pub use error::{AdminError, ApiError};

#[derive(Clone, Debug)]
pub struct AppState {
    pub gateway: Gateway,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The admin API's token; `None` turns the admin API off (its routes answer 404).
    pub admin_token: Option<AdminToken>,
}

/// Builds the router serving every route.
pub fn app(state: AppState) -> Router {
    let loaded = models::LoadedAt::now();
    Router::new()
        .nest(admin::PREFIX, admin::routes(state.clone()))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route(
            "/v1/models",
            get(move |state: State<AppState>, headers: HeaderMap| {
                models::list(state, headers, loaded)
            }),
        )
        .route(
            "/v1/models/{*id}",
            get(
                move |state: State<AppState>,
                      id: axum::extract::Path<String>,
                      headers: HeaderMap| {
                    models::retrieve(state, id, headers, loaded)
                },
            ),
        )
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .fallback(not_found)
        .with_state(state)
}

/// Liveness, with the counters an operator checks first.
/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests (streams
/// included) finish. Accepted sockets get `TCP_NODELAY`: stream events are small writes that
/// Nagle's algorithm would otherwise hold back until the client's delayed ACK (~40 ms).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Liveness, with what an operator checks first: shed records and drills, and per
/// deployment its circuit, load and latency, and per route its retry budgets. `status` is
/// `degraded` while any circuit is open (the gateway still serves: fallbacks carry the traffic).
async fn health(State(state): State<AppState>) -> Response {
    let router = state.gateway.router();
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
    let body = serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "records_shed": state.gateway.records_shed(),
        "drills_shed": state.gateway.drills_shed(),
        "deployments": deployments,
        "routes": routes,
    });
    json_response(Bytes::from(body.to_string()))
}

/// Prometheus metrics: request series from the records, gauges read from routing now, and the
/// record queue's and the tracer's counters.
async fn metrics(State(state): State<AppState>) -> Response {
    use sluice_routing::BreakerState;
    use sluice_telemetry::{BreakerGauge, DeploymentGauge, QueueCounts};
    let router = state.gateway.router();
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
    };
    let text = state.gateway.metrics().render(&gauges, queues);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, sluice_telemetry::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// Readiness: the router exists only once the store is open and the configuration loaded.
async fn ready() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ready"}"#,
    )
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
    if request.method() != http::Method::GET && request.method() != http::Method::POST {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    }
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
