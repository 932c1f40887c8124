//! The request lifecycle, free of HTTP:
//!
//! ```text
//! begin        -> Exchange     (the request's record, submitted exactly once, even on drop)
//! authenticate -> Caller       (virtual key -> team, user, allowed aliases)
//! plan         -> RoutePlan    (alias -> deployments; scope checked)
//! dispatch     -> ChatOutcome  (first deployment that answers; fallback before the first byte)
//! settle       -> record       (usage, served model, attempts, latency; streams settle on end or drop)
//! ```
//!
//! `sluice-server` decodes the client's dialect before and encodes it after; everything between
//! is here. See `docs/architecture.md`.

use std::sync::Arc;

use sluice_providers::{ProviderError, Upstream};
use sluice_routing::{Router, RoutingError};
use sluice_store::{RecordSender, Store, StoreError};
use sluice_types::{Classify, ErrorKind, Origin};

mod auth;
mod chat;
mod embeddings;
mod exchange;
pub mod tokens;

pub use auth::Caller;
pub use chat::{ChatOutcome, GuardedStream, Provenance};
pub use exchange::{Endpoint, Exchange};

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
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the gateway's store failed")]
    Store(#[from] StoreError),
}

impl Classify for PipelineError {
    fn kind(&self) -> ErrorKind {
        match self {
            PipelineError::MissingKey | PipelineError::InvalidKey => ErrorKind::Unauthenticated,
            PipelineError::RevokedKey | PipelineError::ExpiredKey => ErrorKind::Unauthenticated,
            PipelineError::AliasNotAllowed(_) => ErrorKind::PermissionDenied,
            PipelineError::Routing(e) => e.kind(),
            PipelineError::Provider(e) => e.kind(),
            PipelineError::Store(e) => e.kind(),
        }
    }
    fn origin(&self) -> Origin {
        match self {
            PipelineError::Routing(e) => e.origin(),
            PipelineError::Provider(e) => e.origin(),
            PipelineError::Store(e) => e.origin(),
            _ => Origin::Client,
        }
    }
    fn retryable(&self) -> bool {
        match self {
            PipelineError::Provider(e) => e.retryable(),
            _ => false,
        }
    }
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            PipelineError::Provider(e) => e.retry_after_secs(),
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
    /// parameter was refused while encoding for the upstream's dialect (`n` for Anthropic...).
    pub fn param(&self) -> Option<String> {
        match self {
            PipelineError::Provider(ProviderError::Encode(wire)) => wire.param(),
            _ => None,
        }
    }
}

/// Everything a request needs, shared by all requests. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    router: Router,
    upstream: Upstream,
    store: Store,
    records: RecordSender,
    keys: auth::KeyCache,
}

impl Gateway {
    pub fn new(router: Router, upstream: Upstream, store: Store, records: RecordSender) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                router,
                upstream,
                store,
                records,
                keys: auth::KeyCache::default(),
            }),
        }
    }

    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Records shed because the record queue was full.
    pub fn records_shed(&self) -> u64 {
        self.inner.records.shed()
    }
}
