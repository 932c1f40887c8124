//! The stages every routed call goes through, each taking the previous one's output:
//!
//! ```text
//! plan      Operation          -> Planned    (the route, once the caller may use it)
//! admit     Planned            -> Admitted   (request hooks; worst case held against every limit)
//! dispatch  Admitted           -> Dispatched (attempts: retries, fallbacks, hedges)
//! settle    Dispatched         -> per operation: chat's Settled, embeddings, a token count
//! ```
//!
//! [`Gateway::run`] runs the first three; settling is the operation's own (`chat`,
//! `embeddings`, `tokens`). The [`Exchange`] is lent to each stage and consumed only by
//! settle, so whatever fails before it, the server still holds the record it answers with.

use std::sync::Arc;

use sluice_routing::{CallerTag, Role, RoutePlan, TimeoutOverrides};
use tokio::time::Instant;

use crate::admission::QuotaState;
use crate::dispatch::{Dispatch, Won, skipped};
use crate::hooks::{HookContext, Hooks, Watchers};
use crate::operation::{Hooked, Operation};
use crate::structured::Structured;
use crate::{Caller, Exchange, Gateway, PipelineError};

/// A request with its route.
#[derive(Debug)]
pub struct Planned<Op> {
    pub request: Op,
    pub plan: RoutePlan,
}

/// A request that may go ahead: the route that serves it (another one when a soft limit moved
/// it), the caller's quota after its reservation, and the hooks that watch its answer. The
/// reservation itself is bound to the exchange: it is settled when the record is, on every
/// path.
pub struct Admitted<Op: Operation> {
    pub request: Op,
    pub plan: RoutePlan,
    pub quota: Arc<QuotaState>,
    pub watchers: Watchers,
    /// An answer a hook gave: nothing is sent upstream.
    pub answered: Option<Op::Answer>,
    /// The structure its answer must hold (compiled once, checked on every attempt).
    pub structured: Option<Arc<Structured>>,
}

/// A request that has an answer: from a deployment (`won`), or from a hook.
pub struct Dispatched<Op: Operation> {
    pub request: Op,
    pub plan: RoutePlan,
    pub watchers: Watchers,
    /// The route's total deadline, which still bounds a stream.
    pub deadline: Instant,
    pub served: Served<Op::Answer>,
    /// The structure the answer was checked against (a stream: is checked at its end).
    pub structured: Option<Arc<Structured>>,
}

/// Who answered.
pub enum Served<A> {
    Upstream(Won<A>),
    /// A hook of the route (a cache hit, a replay): no deployment was called.
    Gateway(A),
}

impl Gateway {
    /// plan, admit and dispatch. On error the exchange keeps what happened so far, for the
    /// caller to answer and record.
    pub async fn run<Op: Operation>(
        &self,
        exchange: &mut Exchange,
        caller: &Caller,
        request: Op,
        overrides: TimeoutOverrides,
    ) -> Result<Dispatched<Op>, PipelineError> {
        let planned = self.plan(exchange, caller, request)?;
        let admitted = self.admit(exchange, caller, planned).await?;
        self.dispatch(exchange, caller, admitted, overrides).await
    }

    /// The route for the request's model, once the caller may use it.
    pub fn plan<Op: Operation>(
        &self,
        exchange: &mut Exchange,
        caller: &Caller,
        request: Op,
    ) -> Result<Planned<Op>, PipelineError> {
        // Client-chosen ids are bounded before they reach the record or a counter key.
        let id_too_long = |field, value: &str| {
            sluice_types::check_client_id(field, sluice_types::IdPlace::Body, value)
                .map_err(PipelineError::IdTooLong)
        };
        id_too_long("model", request.model())?;
        exchange.set_alias(request.model(), request.stream());
        if let Some(user) = request.end_user() {
            id_too_long(exchange.end_user_field(), user)?;
        }
        exchange.set_end_user(request.end_user());
        let plan = self.route_for(caller, request.model(), request.stream())?;
        Ok(Planned { request, plan })
    }

    /// The route for a model, once the caller may use it.
    pub(crate) fn route_for(
        &self,
        caller: &Caller,
        model: &str,
        stream: bool,
    ) -> Result<RoutePlan, PipelineError> {
        let route = self.config.router.route(model)?;
        if !caller.may_use(&route.alias) {
            return Err(PipelineError::AliasNotAllowed(model.to_owned()));
        }
        if let Some(rules) = self.config.policy.rules(&route.alias)
            && !rules.roles.is_empty()
            && !rules.roles.iter().any(|role| caller.key.has_role(role))
        {
            return Err(PipelineError::RoleRequired {
                alias: model.to_owned(),
                roles: rules.roles.clone(),
            });
        }
        Ok(self.config.router.plan(model, stream)?)
    }

    /// The route's request hooks, then the worst case held against every limit of the caller
    /// and the alias (or the route's cheaper alias, over a soft limit).
    pub async fn admit<Op: Operation>(
        &self,
        exchange: &mut Exchange,
        caller: &Caller,
        planned: Planned<Op>,
    ) -> Result<Admitted<Op>, PipelineError> {
        let Planned { mut request, plan } = planned;
        let context = HookContext {
            caller,
            alias: plan.alias(),
        };
        let Hooked {
            watchers,
            answer: answered,
        } = request.run_hooks(&self.hooks_of(plan.alias()), context, exchange.audit())?;
        // A schema that does not compile is the client's error, before anything is reserved.
        let structured = request.structured()?.map(Arc::new);
        // Nothing to reserve for an answer that costs nothing, or one a hook already gave.
        let (plan, quota) = if request.reserves() && answered.is_none() {
            let held = self.hold(exchange, caller, &request, plan).await?;
            // Under a spend or token limit, the reservation is the output bound.
            if let Some(max_tokens) = held.max_tokens {
                request.bound_output(Some(max_tokens));
            }
            (held.plan, held.quota)
        } else {
            (plan, Arc::default())
        };
        // A soft limit may move the request to the route's cheaper alias: the hooks of the
        // route asked for, which saw the request, watch its answer.
        Ok(Admitted {
            request,
            plan,
            quota,
            watchers,
            answered,
            structured,
        })
    }

    /// Sends the request to the route's candidates until one answers (see [`crate::dispatch`]).
    pub async fn dispatch<Op: Operation>(
        &self,
        exchange: &mut Exchange,
        caller: &Caller,
        admitted: Admitted<Op>,
        overrides: TimeoutOverrides,
    ) -> Result<Dispatched<Op>, PipelineError> {
        let Admitted {
            request,
            plan,
            watchers,
            answered,
            structured,
            ..
        } = admitted;
        let timeouts = plan.policy().timeouts.limited_by(&overrides);
        let deadline = Instant::now() + timeouts.total;
        if let Some(answer) = answered {
            return Ok(Dispatched {
                request,
                plan,
                watchers,
                deadline,
                served: Served::Gateway(answer),
                structured,
            });
        }
        for (health, why) in &plan.skipped {
            let role = plan
                .route
                .members()
                .find(|(h, _)| Arc::ptr_eq(h, health))
                .map_or(Role::Pool, |(_, role)| role);
            exchange.attempt(skipped(
                health.name(),
                &health.deployment.provider,
                role,
                *why,
            ));
        }
        self.keep_bodies(exchange, plan.policy().log_bodies, caller);
        if let Some(unavailable) = plan.unavailable() {
            return Err(unavailable.into());
        }
        request.drill(self, exchange, &plan);
        let won = Dispatch {
            upstream: self.upstream_for(timeouts.connect),
            caller: CallerTag::of(&caller.key.id),
            plan: &plan,
            req: &request,
            timeouts,
            deadline,
            trace_id: exchange.trace_id().to_owned(),
            started: exchange.started(),
            structured: structured.as_deref(),
        }
        .run(exchange)
        .await?;
        Ok(Dispatched {
            request,
            plan,
            watchers,
            deadline,
            served: Served::Upstream(won),
            structured,
        })
    }

    fn hooks_of(&self, alias: &str) -> Hooks {
        self.config
            .policy
            .rules(alias)
            .map(|rules| rules.hooks.clone())
            .unwrap_or_default()
    }
}
