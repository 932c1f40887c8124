//! [`Operation`]: what differs between the calls a route can serve (chat, embeddings,
//! count_tokens). Everything else — plan, admit, dispatch with its retries, fallbacks, hedges
//! and breakers, settle — is one code path for all of them.

use std::future::Future;
use std::time::Duration;

use sluice_providers::{Deployment, ProviderError, TimeoutPhase, Upstream};

use crate::admission::Demand;
use crate::hooks::{HookContext, HookError, Hooks, Watchers};
use crate::structured::{SchemaError, Structured};
use crate::{Exchange, Gateway};
use sluice_routing::RoutePlan;
use sluice_types::record::{Audit, SchemaCheck};

/// The per-attempt timeout on the first answer, and which limit it stands for.
#[derive(Debug, Clone, Copy)]
pub struct FirstAnswer {
    pub within: Duration,
    pub phase: TimeoutPhase,
}

/// What a request's hooks left for the later stages.
pub struct Hooked<A> {
    pub watchers: Watchers,
    pub answer: Option<A>,
}

impl<A> Default for Hooked<A> {
    fn default() -> Self {
        Hooked {
            watchers: Watchers::default(),
            answer: None,
        }
    }
}

/// One kind of upstream call, as the stages need it.
pub trait Operation: Send + Sync + Sized {
    /// What an attempt gets back before anything reaches the client.
    type Answer: Send;

    /// The alias the client asked for.
    fn model(&self) -> &str;

    /// Whether the answer streams.
    fn stream(&self) -> bool {
        false
    }

    /// The end user the request names itself (`user`, `metadata.user_id`).
    fn end_user(&self) -> Option<&str> {
        None
    }

    /// Whether admission reserves anything for it (`false`: token counting costs nothing).
    fn reserves(&self) -> bool {
        true
    }

    /// What admission reserves. Only called when a limit applies: it may estimate the prompt.
    fn demand(&self) -> Demand;

    /// Applies the bound admission set on the output (`max_tokens`).
    fn bound_output(&mut self, _max_tokens: Option<u32>) {}

    /// The prompt tokens, as far as the gateway can tell, for attempts cancelled after sending.
    fn prompt_tokens(&self) -> u32;

    /// Whether a slow first answer may be hedged (only where there is a first token to wait
    /// for, and the route hedges).
    fn hedges(&self) -> bool {
        false
    }

    /// Runs the route's request hooks: who watches the answer, and an answer a hook gave
    /// without an upstream call. Operations other than chat have no hooks yet.
    fn run_hooks(
        &mut self,
        _hooks: &Hooks,
        _context: HookContext<'_>,
        _audit: &mut Audit,
    ) -> Result<Hooked<Self::Answer>, HookError> {
        Ok(Hooked::default())
    }

    /// One attempt at one deployment. `first` bounds the time to the first answer (a stream's
    /// first content event); the upstream client carries the attempt's other timeouts.
    fn send(
        &self,
        upstream: Upstream,
        deployment: &Deployment,
        first: FirstAnswer,
    ) -> impl Future<Output = Result<Self::Answer, ProviderError>> + Send;

    /// The structure the request asks its answer to hold, compiled once per request (chat:
    /// `response_format`, a forced tool); `None` when it asks for none.
    fn structured(&self) -> Result<Option<Structured>, SchemaError> {
        Ok(None)
    }

    /// Checks one attempt's answer against the request's structure, repairing trivial damage
    /// in place. `Ok(None)`: nothing to check now (a stream is checked at its end). An answer
    /// that does not hold fails its attempt with [`ProviderError::SchemaViolation`].
    fn vet(
        _structured: &Structured,
        _answer: &mut Self::Answer,
        _deployment: &Deployment,
    ) -> Result<Option<SchemaCheck>, ProviderError> {
        Ok(None)
    }

    /// Starts the route's drills of this request, if it has any (chat only).
    fn drill(&self, _gateway: &Gateway, _live: &Exchange, _plan: &RoutePlan) {}

    /// Whether the provider's content filter cut this answer (kept in case nothing better
    /// comes, but another deployment is tried).
    fn filtered(_answer: &Self::Answer) -> bool {
        false
    }
}
