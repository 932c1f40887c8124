//! Drills: proof that a route's fallbacks work, from live traffic.
//!
//! A route's `drill.share` of live chat requests is also sent, in the background, to each of
//! its fallback deployments. The answer is discarded; a record of its own (`drill_of` = the
//! live request, no key, team or user: the cost is the drill's) keeps latency, outcome and
//! whether the answer parsed and matched the requested schema. Drills never delay or change
//! the live request; at most [`MAX_DRILLS_IN_FLIGHT`] run at once, beyond which they are
//! shed and counted. `sluice drill` replays requests through every deployment on demand.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use rand::Rng;
use sluice_providers::{Reply, Timeouts, Upstream};
use sluice_routing::{Condition, DeploymentHealth, Outcome, Role, RoutePlan, RouteTimeouts};
use sluice_store::AttemptRecord;
use sluice_types::{ChatRequest, Classify, StreamEvent};
use tokio::time::Instant;

use crate::dispatch::micros;
use crate::{Exchange, Gateway, schema};

/// Drills running at once at most, across routes.
pub const MAX_DRILLS_IN_FLIGHT: usize = 32;

impl Gateway {
    /// Starts the drills of a live request, if the route's share picks it.
    pub(crate) fn drill(&self, live: &Exchange, plan: &RoutePlan, req: &ChatRequest) {
        let share = plan.policy().drill_share;
        let fallbacks = plan.route.fallbacks();
        if share <= 0.0 || fallbacks.is_empty() || !rand::rng().random_bool(share.min(1.0)) {
            return;
        }
        for health in fallbacks {
            let Ok(permit) = self.inner.drills.slots.clone().try_acquire_owned() else {
                self.inner.drills.shed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(deployment = %health.name(), "drill shed: too many in flight");
                continue;
            };
            let exchange = live.drill_of(plan.alias());
            let upstream = self.upstream_for(plan.policy().timeouts.connect).clone();
            let (health, req, timeouts) = (health.clone(), req.clone(), plan.policy().timeouts);
            self.inner.drills.tasks.spawn(async move {
                run(exchange, &upstream, &health, &req, timeouts).await;
                drop(permit);
            });
        }
    }

    /// Drills shed because too many were in flight.
    pub fn drills_shed(&self) -> u64 {
        self.inner.drills.shed.load(Ordering::Relaxed)
    }

    /// Waits for running drills (at shutdown, before the record queue drains).
    pub async fn drain_drills(&self) {
        self.inner.drills.tasks.close();
        self.inner.drills.tasks.wait().await;
    }
}

/// One drill: the request, whole, through one deployment; the record says how it went.
async fn run(
    mut exchange: Exchange,
    upstream: &Upstream,
    health: &Arc<DeploymentHealth>,
    req: &ChatRequest,
    timeouts: RouteTimeouts,
) {
    let deployment = &health.deployment;
    let mut attempt = AttemptRecord {
        deployment: deployment.name.clone(),
        provider: deployment.provider.clone(),
        role: Some(Role::Fallback.as_str().to_owned()),
        ..AttemptRecord::default()
    };
    let mut slot = match health.acquire().await {
        Ok(slot) => slot,
        Err(why) => {
            attempt.outcome = "skipped".into();
            attempt.next = Some(why.as_str().to_owned());
            exchange.attempt(attempt);
            exchange.fail_drill(sluice_types::ErrorKind::RouteUnavailable, None);
            return;
        }
    };
    let started = Instant::now();
    let upstream = upstream.with_timeouts(Timeouts {
        connect: timeouts.connect,
        first_token: timeouts.first_token,
        idle: timeouts.idle,
        total: timeouts.total,
    });
    let answer = async {
        match upstream.chat(deployment, req).await? {
            Reply::Complete(completion) => {
                let valid = schema::check_response(req, &completion.response);
                Ok((completion.response.model, completion.response.usage, valid))
            }
            Reply::Stream(mut stream) => {
                let (mut model, mut usage, mut text) = (String::new(), None, String::new());
                while let Some(chunk) = stream.next().await {
                    for event in chunk?.events {
                        match event {
                            StreamEvent::Start { model: m, .. } => model = m,
                            StreamEvent::TextDelta { text: t, .. } => text.push_str(&t),
                            StreamEvent::Usage(u) => usage = Some(u),
                            _ => {}
                        }
                    }
                }
                Ok((model, usage, schema::check_text(req, &text)))
            }
        }
    };
    let result = tokio::time::timeout(timeouts.total, answer)
        .await
        .unwrap_or_else(|_| {
            Err(sluice_providers::ProviderError::Timeout {
                provider: deployment.provider.clone(),
                phase: sluice_providers::TimeoutPhase::Total,
            })
        });
    let elapsed = started.elapsed();
    attempt.latency_us = micros(elapsed);
    match result {
        Ok((model, usage, valid)) => {
            slot.record(Outcome::Success, Some(elapsed), Some(elapsed));
            attempt.outcome = "ok".into();
            attempt.status = Some(200);
            attempt.input_tokens = usage.map(|u| u.input_tokens);
            attempt.output_tokens = usage.map(|u| u.output_tokens);
            exchange.attempt(attempt);
            exchange.served_by(deployment, &model);
            if let Some(usage) = usage {
                exchange.usage(&usage);
            }
            exchange.set_schema_valid(valid);
            exchange.finish(200);
        }
        Err(e) => {
            let unhealthy = Condition::of(&e).is_some_and(Condition::is_deployment_fault);
            slot.record(
                if unhealthy {
                    Outcome::Failure
                } else {
                    Outcome::Neutral
                },
                None,
                None,
            );
            tracing::info!(deployment = %deployment.name, error = %e, "drill failed");
            attempt.outcome = e.kind().code().to_owned();
            attempt.status = e.status();
            exchange.attempt(attempt);
            exchange.served_by(deployment, "");
            exchange.fail_drill(e.kind(), e.status());
        }
    }
}
