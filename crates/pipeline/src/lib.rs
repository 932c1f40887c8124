//! The request lifecycle, free of HTTP, in stages that each take the previous one's output:
//!
//! ```text
//! begin        -> Exchange     (the request's record, submitted exactly once, even on drop)
//! authenticate -> Caller       (virtual key -> tenant, hierarchy, roles, allowed aliases)
//! plan         -> Planned      (alias -> ordered candidates, open circuits skipped; scope checked)
//! admit        -> Admitted     (request hooks; worst case held against every budget and limit)
//! dispatch     -> Dispatched   (attempts: retries, fallbacks, hedges, within budget and deadline)
//! settle       -> Settled      (response hooks; usage, served model, provenance; streams settle
//!                               on end or drop; the record is priced and the hold settled when
//!                               it is submitted)
//! ```
//!
//! Chat, embeddings and token counting run through the same stages ([`stages`]); what differs
//! between them is an [`Operation`]. Route policies attach at one seam, [`hooks`]. Drills
//! ([`drill`]) shadow a share of live requests to each fallback in the background.
//!
//! `sluice-server` decodes the client's dialect before and encodes it after; everything between
//! is here. See `docs/architecture.md`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_providers::{ProviderError, Upstream};
use sluice_routing::{Router, RoutingError};
use sluice_store::{RecordSender, StoreError, Stores};
use sluice_types::{Classify, Condition, ErrorKind, Origin};

pub mod admission;
mod auth;
pub mod bodies;
pub mod budgets;
mod chat;
mod dispatch;
pub mod drill;
mod embeddings;
mod exchange;
pub mod hooks;
mod operation;
mod snapshot;
pub mod stages;
mod stream;
pub mod structured;
#[cfg(test)]
mod test_support;
pub mod tokens;
pub mod trace;

pub use admission::{PolicyEngine, PolicyParts, QuotaState, RouteRules};
pub use auth::Caller;
pub use chat::{ChatAnswer, Provenance, Settled};
pub use exchange::Exchange;
pub use hooks::{Hook, HookError, Hooks};
pub use operation::Operation;
pub use sluice_routing::TimeoutOverrides;
pub use sluice_types::record::Endpoint;
pub use snapshot::{ConfigSource, ReloadCounts, Snapshot};
pub use stages::{Admitted, Dispatched, Planned};
pub use stream::GuardedStream;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("missing API key: send it as `Authorization: Bearer sk-sluice-...`")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this API key was revoked")]
    RevokedKey,
    #[error("this API key has expired")]
    ExpiredKey,
    #[error("this API key may not use the model `{0}`")]
    AliasNotAllowed(String),
    #[error("this API key may not use the model `{alias}`: it needs the role {}", .roles.join(" or "))]
    RoleRequired { alias: String, roles: Vec<String> },
    /// A budget or rate limit has no room: the refusal says which, and `help` how to ask for
    /// more.
    #[error("{}. {help}", .refusal.message())]
    Refused {
        refusal: Box<sluice_policy::Refusal>,
        help: String,
    },
    /// The in-process counters keep no more entries for the tenant's end users: a new end user
    /// waits (the tenant's other callers, and every other tenant, are served).
    #[error(transparent)]
    CounterCapacity(sluice_policy::PolicyError),
    /// The counters failed, and policy says fail closed.
    #[error("budgets cannot be checked right now; try again shortly")]
    CountersUnavailable(#[source] sluice_policy::PolicyError),
    /// A limit could not be charged as written.
    #[error("a budget could not be applied")]
    Policy(#[source] sluice_policy::PolicyError),
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the gateway's store failed")]
    Store(#[from] StoreError),
    /// The store cannot be reached and the key is not among those it confirmed lately.
    #[error(
        "the API key cannot be checked right now: the gateway's key store cannot be reached; try again shortly"
    )]
    KeysUnavailable,
    /// A hook of the route refused the request or stopped its answer.
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    /// A client-chosen id (the end user, the model name) longer than the gateway keeps.
    #[error(transparent)]
    IdTooLong(sluice_types::IdTooLong),
    /// The JSON schema the request asks its answer to hold does not compile.
    #[error(transparent)]
    Schema(#[from] structured::SchemaError),
    /// The deployment answered fewer choices than `n` asked for: it does not honour `n`.
    #[error(
        "deployment `{deployment}` answered {got} of the {asked} choices asked for (`n`): it does not honour `n`; send `n: 1` (and repeat the request), or use a model whose deployments do"
    )]
    ChoicesMissing {
        deployment: String,
        asked: u32,
        got: u32,
    },
    /// A state the pipeline should never reach.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Classify for PipelineError {
    fn kind(&self) -> ErrorKind {
        match self {
            PipelineError::MissingKey | PipelineError::InvalidKey => ErrorKind::Unauthenticated,
            PipelineError::RevokedKey | PipelineError::ExpiredKey => ErrorKind::Unauthenticated,
            PipelineError::AliasNotAllowed(_) | PipelineError::RoleRequired { .. } => {
                ErrorKind::PermissionDenied
            }
            PipelineError::Refused { refusal, .. } => {
                sluice_policy::PolicyError::Refused(refusal.clone()).kind()
            }
            PipelineError::CountersUnavailable(_) => ErrorKind::PolicyUnavailable,
            PipelineError::KeysUnavailable => ErrorKind::KeysUnavailable,
            PipelineError::CounterCapacity(e) => e.kind(),
            PipelineError::Policy(e) => e.kind(),
            PipelineError::Routing(e) => e.kind(),
            PipelineError::Provider(e) => e.kind(),
            PipelineError::Store(e) => e.kind(),
            PipelineError::Hook(e) => e.kind(),
            PipelineError::IdTooLong(_) | PipelineError::Schema(_) => ErrorKind::InvalidRequest,
            PipelineError::ChoicesMissing { .. } => ErrorKind::UnsupportedParameter,
            PipelineError::Internal(_) => ErrorKind::Internal,
        }
    }
    fn origin(&self) -> Origin {
        match self {
            PipelineError::Routing(e) => e.origin(),
            PipelineError::Provider(e) => e.origin(),
            PipelineError::Store(e) => e.origin(),
            PipelineError::Policy(e) | PipelineError::CountersUnavailable(e) => e.origin(),
            PipelineError::Hook(e) => e.origin(),
            PipelineError::ChoicesMissing { .. } => Origin::Upstream,
            PipelineError::Internal(_) | PipelineError::KeysUnavailable => Origin::Gateway,
            _ => Origin::Client,
        }
    }
    fn condition(&self) -> Option<Condition> {
        match self {
            PipelineError::Provider(e) => e.condition(),
            _ => None,
        }
    }
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            PipelineError::Provider(e) => e.retry_after_secs(),
            PipelineError::Routing(e) => e.retry_after_secs(),
            PipelineError::Refused { refusal, .. } => Some(refusal.retry_after_secs()),
            PipelineError::CounterCapacity(e) => e.retry_after_secs(),
            _ => None,
        }
    }
}

impl PipelineError {
    /// The message a client is shown.
    pub fn client_message(&self) -> String {
        match self {
            PipelineError::Provider(e) => e.client_message(),
            other => other.to_string(),
        }
    }

    /// The request parameter at fault, for the OpenAI error body's `param`: set when a
    /// parameter was refused while encoding for the upstream's dialect (`n` for Anthropic...),
    /// or a client-chosen id was too long (`user`).
    pub fn param(&self) -> Option<String> {
        match self {
            PipelineError::Provider(ProviderError::Encode(wire)) => wire.param(),
            PipelineError::IdTooLong(too_long) => Some(too_long.field.to_owned()),
            PipelineError::ChoicesMissing { .. } => Some("n".to_owned()),
            PipelineError::Schema(e) if e.what == "response_format" => {
                Some("response_format".to_owned())
            }
            PipelineError::Schema(_) => Some("tools".to_owned()),
            _ => None,
        }
    }
}

/// A settle that failed (a response hook refused the answer): the record, still to be
/// answered and submitted by the caller, and why.
pub type Unsettled = Box<(Exchange, PipelineError)>;

/// Everything a request needs. Cheap to clone (two reference counts).
///
/// A value is pinned to the configuration [`Snapshot`] it was taken with: a request starts
/// from [`Gateway::current`] and keeps that value to its end, so a reload never changes a
/// request under way. What is not configuration (store, keys, records, metrics, counters) is
/// shared by every snapshot.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
    config: Arc<Snapshot>,
}

#[derive(Debug)]
struct Inner {
    /// The configuration in force; [`Gateway::current`] loads it.
    live: ArcSwap<Snapshot>,
    reloads: snapshot::Reloads,
    store: Stores,
    records: RecordSender,
    keys: auth::KeyCache,
    drills: Drills,
    metrics: sluice_telemetry::Metrics,
    tracer: sluice_telemetry::Tracer,
    redact: Arc<dyn bodies::Redact>,
}

/// The drills in flight: owned tasks, bounded.
#[derive(Debug)]
struct Drills {
    tasks: tokio_util::task::TaskTracker,
    slots: Arc<tokio::sync::Semaphore>,
    shed: AtomicU64,
}

impl Gateway {
    /// `tracer` exports every finished request as spans (a disabled one costs nothing);
    /// `policy` admits, prices and settles them.
    pub fn new(
        router: Router,
        upstream: Upstream,
        store: Stores,
        records: RecordSender,
        tracer: sluice_telemetry::Tracer,
        policy: PolicyEngine,
    ) -> Gateway {
        let config = Arc::new(Snapshot::new(
            router,
            upstream,
            policy,
            None,
            ConfigSource::without_file(),
        ));
        Gateway {
            inner: Arc::new(Inner {
                live: ArcSwap::new(config.clone()),
                reloads: snapshot::Reloads::default(),
                store,
                records,
                keys: auth::KeyCache::default(),
                drills: Drills {
                    tasks: tokio_util::task::TaskTracker::new(),
                    slots: Arc::new(tokio::sync::Semaphore::new(drill::MAX_DRILLS_IN_FLIGHT)),
                    shed: AtomicU64::new(0),
                },
                metrics: sluice_telemetry::Metrics::new(),
                tracer,
                redact: Arc::new(bodies::KeepAsSent),
            }),
            config,
        }
    }

    /// The gateway's Prometheus metrics (every finished request is observed).
    pub fn metrics(&self) -> &sluice_telemetry::Metrics {
        &self.inner.metrics
    }

    /// The gateway's tracer (disabled when no collector is configured), for its counts.
    pub fn tracer(&self) -> &sluice_telemetry::Tracer {
        &self.inner.tracer
    }

    /// The upstream client with this connect timeout (the default one when no route set it).
    pub(crate) fn upstream_for(&self, connect: Duration) -> &Upstream {
        self.config
            .upstreams_by_connect
            .iter()
            .find(|(d, _)| *d == connect)
            .map_or(&self.config.upstream, |(_, upstream)| upstream)
    }

    /// The router of this value's snapshot (see [`Gateway::current`]).
    pub fn router(&self) -> &Router {
        &self.config.router
    }

    /// Records shed: the record queue full without a journal, or the journal full.
    pub fn records_shed(&self) -> u64 {
        self.inner.records.shed()
    }

    /// The record queue's intake: its counts and the journal's size.
    pub fn records(&self) -> &RecordSender {
        &self.inner.records
    }

    /// Whether the store can be reached: down means the gateway runs degraded.
    pub fn store_health(&self) -> &sluice_store::StoreHealth {
        &self.inner.store.health
    }
}
