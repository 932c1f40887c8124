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
use sluice_providers::{ProviderError, Reply, TimeoutPhase, Upstream};
use sluice_routing::{DeploymentHealth, Outcome, Role, RoutePlan, RouteTimeouts, Unavailable};
use sluice_types::record::{AttemptOutcome, AttemptRecord};
use sluice_types::{ChatRequest, Classify, StreamEvent, Usage};
use tokio::time::Instant;

use crate::dispatch::micros;
use crate::structured::Structured;
use crate::{Exchange, Gateway};

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

/// What one drill got from one deployment.
#[derive(Debug)]
pub struct Probe {
    pub latency: std::time::Duration,
    pub result: Result<Answered, ProbeError>,
}

#[derive(Debug)]
pub struct Answered {
    /// The model as the provider reported it.
    pub model: String,
    pub usage: Option<Usage>,
    /// Whether the answer matched the requested schema (`None`: none was requested).
    pub schema_valid: Option<bool>,
}

#[derive(Debug)]
pub enum ProbeError {
    /// Not sent: the deployment refused a slot (circuit open, queue full).
    Unavailable(Unavailable),
    Provider(ProviderError),
}

impl ProbeError {
    /// The attempt's outcome in the record: skipped, or failed.
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            ProbeError::Unavailable(_) => AttemptOutcome::Skipped,
            ProbeError::Provider(e) => AttemptOutcome::Failed(e.kind()),
        }
    }

    /// The record's word for it: an error code, or `skipped`.
    pub fn code(&self) -> &'static str {
        self.outcome().as_str()
    }
}

/// Sends `req` whole through one deployment (through its breaker and concurrency limit, so a
/// drill never takes more than its share) and reads the whole answer, stream or not. The
/// breaker counts the outcome: a broken fallback is found by drills before traffic needs it.
pub async fn probe(
    upstream: &Upstream,
    health: &Arc<DeploymentHealth>,
    req: &ChatRequest,
    timeouts: RouteTimeouts,
) -> Probe {
    let mut slot = match health.acquire().await {
        Ok(slot) => slot,
        Err(why) => {
            return Probe {
                latency: std::time::Duration::ZERO,
                result: Err(ProbeError::Unavailable(why)),
            };
        }
    };
    let deployment = &health.deployment;
    let started = Instant::now();
    let upstream = upstream.with_timeouts(timeouts.upstream());
    let answer = async {
        match upstream.chat(deployment, req).await? {
            Reply::Complete(completion) => Ok(Answered {
                schema_valid: structured_of(req).map(|s| {
                    let mut response = completion.response.clone();
                    s.vet(&mut response).is_ok()
                }),
                model: completion.response.model,
                usage: completion.response.usage,
            }),
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
                Ok(Answered {
                    schema_valid: structured_of(req).map(|s| s.holds_text(&text)),
                    model,
                    usage,
                })
            }
        }
    };
    let result = tokio::time::timeout(timeouts.total, answer)
        .await
        .unwrap_or_else(|_| {
            Err(ProviderError::Timeout {
                provider: deployment.provider.clone(),
                phase: TimeoutPhase::Total,
            })
        });
    let latency = started.elapsed();
    match &result {
        Ok(_) => {
            slot.record(Outcome::Success, Some(latency), Some(latency));
            health.observe(AttemptOutcome::Ok, latency, Some(latency));
        }
        Err(e) => {
            health.observe(AttemptOutcome::Failed(e.kind()), latency, None);
            slot.record(Outcome::of_failure(e), None, None);
        }
    }
    Probe {
        latency,
        result: result.map_err(ProbeError::Provider),
    }
}

/// One live drill: the probe, written down as a record of its own.
async fn run(
    mut exchange: Exchange,
    upstream: &Upstream,
    health: &Arc<DeploymentHealth>,
    req: &ChatRequest,
    timeouts: RouteTimeouts,
) {
    let deployment = &health.deployment;
    let probe = probe(upstream, health, req, timeouts).await;
    let mut attempt = AttemptRecord {
        deployment: deployment.name.clone(),
        provider: deployment.provider.clone(),
        role: Some(Role::Fallback),
        latency_us: micros(probe.latency),
        outcome: AttemptOutcome::Ok,
        ..AttemptRecord::default()
    };
    match probe.result {
        Ok(answered) => {
            attempt.status = Some(200);
            attempt.input_tokens = answered.usage.map(|u| u.input_tokens);
            attempt.output_tokens = answered.usage.map(|u| u.output_tokens);
            exchange.attempt(attempt);
            exchange.served_by(deployment, &answered.model);
            if let Some(usage) = answered.usage {
                exchange.usage(&usage);
            }
            exchange.set_schema_valid(answered.schema_valid);
            exchange.finish(200);
        }
        Err(error) => {
            attempt.outcome = error.outcome();
            let (kind, status) = match &error {
                ProbeError::Unavailable(why) => {
                    attempt.next = Some(why.next());
                    (sluice_types::ErrorKind::RouteUnavailable, None)
                }
                ProbeError::Provider(e) => {
                    tracing::info!(deployment = %deployment.name, error = %e, "drill failed");
                    (e.kind(), e.status())
                }
            };
            attempt.status = status;
            exchange.attempt(attempt);
            exchange.served_by(deployment, "");
            exchange.fail_drill(kind, status);
        }
    }
}

/// The structure a drilled request asks for (a schema that does not compile checks nothing).
fn structured_of(req: &ChatRequest) -> Option<Structured> {
    Structured::of(req).ok().flatten()
}
