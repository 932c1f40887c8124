//! Embeddings dispatch: the route's candidates in order, the same breakers, conditions and
//! retry budget as chat; no hedging (an embedding has no first token to wait for).

use sluice_providers::Embeddings;
use sluice_routing::{Condition, Outcome, TimeoutOverrides};
use sluice_store::AttemptRecord;
use sluice_types::{Classify, EmbeddingsRequest};
use tokio::time::Instant;

use crate::admission::Demand;
use crate::dispatch::{micros, skipped};
use crate::tokens::estimate_embeddings_input;
use crate::{Caller, Exchange, Gateway, PipelineError, Provenance};

impl Gateway {
    pub async fn embeddings(
        &self,
        mut exchange: Exchange,
        caller: &Caller,
        req: EmbeddingsRequest,
        overrides: TimeoutOverrides,
    ) -> Result<(Embeddings, Provenance), (Exchange, PipelineError)> {
        exchange.set_alias(&req.model, false);
        exchange.set_end_user(req.body.get("user").and_then(|u| u.as_str()));
        let plan = match self.plan(caller, &req.model, false) {
            Ok(plan) => plan,
            Err(e) => return Err((exchange, e)),
        };
        let mut demand = Demand {
            input_tokens: estimate_embeddings_input(&req),
            max_tokens: None,
            generates: false,
        };
        let plan = match self
            .admit(&mut exchange, caller, &mut demand, plan, false)
            .await
        {
            Ok(plan) => plan,
            Err(e) => return Err((exchange, e)),
        };
        for (health, why) in &plan.skipped {
            exchange.attempt(skipped(
                health.name(),
                &health.deployment.provider,
                sluice_routing::Role::Pool,
                *why,
            ));
        }
        self.keep_bodies(&mut exchange, plan.policy().log_bodies, caller);
        if let Some(unavailable) = plan.unavailable() {
            return Err((exchange, unavailable.into()));
        }
        let policy = plan.policy();
        let timeouts = policy.timeouts.limited_by(&overrides);
        let upstream = self
            .upstream_for(timeouts.connect)
            .with_timeouts(timeouts.upstream());
        let mut last_error = None;
        for (index, candidate) in plan.candidates.iter().enumerate() {
            let health = &candidate.health;
            let mut slot = match health.acquire().await {
                Ok(slot) => slot,
                Err(why) => {
                    exchange.attempt(skipped(
                        health.name(),
                        &health.deployment.provider,
                        candidate.role,
                        why,
                    ));
                    continue;
                }
            };
            if exchange.attempts() == 0 {
                plan.route.count_request(health.name());
            }
            let started = Instant::now();
            let result = upstream.embeddings(&health.deployment, &req).await;
            let mut attempt = AttemptRecord {
                deployment: health.name().to_owned(),
                provider: health.deployment.provider.clone(),
                latency_us: micros(started.elapsed()),
                role: Some(candidate.role.as_str().to_owned()),
                ..AttemptRecord::default()
            };
            match result {
                Ok(embeddings) => {
                    slot.record(
                        Outcome::Success,
                        Some(started.elapsed()),
                        Some(started.elapsed()),
                    );
                    attempt.outcome = "ok".into();
                    attempt.status = Some(200);
                    exchange.attempt(attempt);
                    let served_model = embeddings
                        .model
                        .clone()
                        .unwrap_or_else(|| health.deployment.model.clone());
                    exchange.served_by(&health.deployment, &served_model);
                    exchange.capture_response(&embeddings.raw);
                    if let Some(usage) = &embeddings.usage {
                        exchange.usage(usage);
                    }
                    let provenance =
                        Provenance::of(&exchange, plan.alias(), &health.deployment, &served_model);
                    exchange.finish(200);
                    return Ok((embeddings, provenance));
                }
                Err(e) => {
                    health.observe(e.kind().code(), started.elapsed(), None);
                    let condition = Condition::of(&e);
                    slot.record(Outcome::of_failure(&e), None, None);
                    attempt.outcome = e.kind().code().to_owned();
                    attempt.status = e.status();
                    exchange.attempt(attempt);
                    let more = index + 1 < plan.candidates.len();
                    let next = match condition {
                        None => Some("not_retryable"),
                        Some(c) if !policy.fallback_on.contains(c) => Some("condition_not_enabled"),
                        Some(_) if !more => Some("no_more_deployments"),
                        Some(_) if !plan.route.spend_retry(health.name()) => {
                            Some("retry_budget_exhausted")
                        }
                        Some(_) => None,
                    };
                    exchange.then(health.name(), next.unwrap_or("fallback"));
                    if next.is_some() {
                        return Err((exchange, e.into()));
                    }
                    last_error = Some(e);
                }
            }
        }
        let error = match last_error {
            Some(e) => e.into(),
            None => PipelineError::Routing(sluice_routing::RoutingError::Unavailable {
                alias: plan.alias().to_string(),
                reasons: "every deployment refused a slot".into(),
                retry_in: std::time::Duration::from_secs(1),
                rate_limited: false,
            }),
        };
        Err((exchange, error))
    }
}
