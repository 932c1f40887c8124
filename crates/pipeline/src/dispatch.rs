//! The attempt loop of one chat request: send to the plan's candidates in order, hedge a slow
//! first token, retry or fall back on the failures the route names, and stop at the first
//! answer — before anything has reached the client.
//!
//! Every attempt, sent or skipped, lands in the record with what happened next and why.
//! Bounds: `max_attempts`, the route's retry budget (retries and hedges are charged to the
//! deployment whose failure or slowness caused them), and the request's deadline (the route's
//! total timeout), which also bounds backoff and `Retry-After` waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either, select};
use sluice_providers::{ProviderError, TimeoutPhase, Timeouts, Upstream};
use sluice_routing::health::RateLimitEvidence;
use sluice_routing::{
    CallerTag, Candidate, Condition, Outcome, Role, RoutePlan, RouteTimeouts, Slot, Unavailable,
};
use sluice_types::Classify;
use sluice_types::record::{
    AttemptOutcome, AttemptRecord, Next, PolicyAction, PolicyPlace, SchemaCheck,
};
use tokio::time::Instant;

use crate::operation::{FirstAnswer, Operation};
use crate::structured::Structured;
use crate::trace::{new_span_id, traceparent};
use crate::{Exchange, PipelineError};

/// The attempt that answered, with its slot (held until a stream ends).
pub struct Won<A> {
    pub candidate: Candidate,
    pub slot: Slot,
    pub answer: A,
}

/// One attempt's end: the answer, or the failed candidate's index and why.
type Attempt<A> = Result<Won<A>, (usize, AttemptError<A>)>;

enum AttemptError<A> {
    /// Not sent: the deployment could not take it (circuit opened, queue full).
    Unavailable(Unavailable),
    Provider(ProviderError),
    /// An answer the provider's content filter cut, kept in case nothing better comes.
    Filtered(Box<Won<A>>),
}

struct Finished<A> {
    candidate: Candidate,
    hedge: bool,
    queued_for: Duration,
    sent_at: Instant,
    /// The attempt's span, and when it started after the request did.
    span_id: String,
    offset: Duration,
    /// The slot comes back with the answer (it is held until a stream ends), and with a
    /// failure when the attempt was sent.
    result: Result<(A, Slot), (AttemptError<A>, Option<Slot>)>,
}

type Running<'a, A> = Pin<Box<dyn Future<Output = Finished<A>> + Send + 'a>>;

/// An attempt under way, with the ids it will be recorded under even if it is cancelled.
struct Started<'a, A> {
    span_id: String,
    offset: Duration,
    running: Running<'a, A>,
}

pub(crate) struct Dispatch<'a, Op: Operation> {
    pub upstream: &'a Upstream,
    /// Who is asking: a deployment's breaker and its 429 pauses weigh evidence per caller, so
    /// no single key can take a deployment away from everyone.
    pub caller: CallerTag,
    pub plan: &'a RoutePlan,
    pub req: &'a Op,
    pub timeouts: RouteTimeouts,
    pub deadline: Instant,
    /// The request's trace, and when it started (attempts record their offset from it).
    pub trace_id: String,
    pub started: std::time::Instant,
    /// The structure every answer must hold before it may win; one that does not fails its
    /// attempt with `schema_violation` (see [`crate::structured`]).
    pub structured: Option<&'a Structured>,
}

impl<'a, Op: Operation + 'a> Dispatch<'a, Op> {
    /// Runs attempts until one answers. On failure the error is the last attempt's (or, when
    /// nothing could be sent, the route's unavailability).
    pub async fn run(self, exchange: &mut Exchange) -> Result<Won<Op::Answer>, PipelineError> {
        let candidates = &self.plan.candidates;
        let route = &self.plan.route;
        let policy = route.policy.clone();
        let max_attempts = policy
            .retry
            .max_attempts
            .unwrap_or(candidates.len() as u32)
            .max(1);
        // Position in the endless sequence of candidates: `cursor % len` is the candidate,
        // `cursor / len` how many times round (a second round retries the same deployments).
        let mut cursor = 0usize;
        let mut tries = vec![0u32; candidates.len()];
        // Deployments not to be tried again by this request (Retry-After beyond the cap).
        let mut barred = vec![false; candidates.len()];
        let mut sent = 0u32;
        let mut last_error: Option<ProviderError> = None;
        let mut last_unavailable: Option<Unavailable> = None;
        let mut filtered: Option<Box<Won<Op::Answer>>> = None;
        let mut may_repeat = true;

        loop {
            let rounds = if may_repeat { max_attempts } else { 1 };
            let Some(index) = self.next_index(&mut cursor, &barred, rounds) else {
                break;
            };
            let candidate = &candidates[index];
            // Back off before going back to a deployment this request already tried.
            if tries[index] > 0 {
                let backoff = policy.retry.backoff(tries[index], &mut rand::rng());
                let wait_until = (Instant::now() + backoff).max(
                    candidate
                        .health
                        .cooling_until()
                        .unwrap_or_else(Instant::now),
                );
                if wait_until >= self.deadline {
                    // The latest attempt (maybe another deployment's) said where it would go
                    // next; that step never came.
                    exchange.then_stop(Next::Deadline);
                    break;
                }
                tokio::time::sleep_until(wait_until).await;
            }
            let first_sent = sent == 0;
            tries[index] += 1;
            sent += 1;
            let primary = self.attempt(candidate.clone(), false);
            let outcome = match self.hedge_target(cursor, &barred, sent, max_attempts) {
                None => self.finish(primary.running.await, exchange),
                Some((hedge_index, cursor_after)) => {
                    let hedge = Hedge {
                        primary: index,
                        index: hedge_index,
                    };
                    let launched = self.hedged(primary, hedge, exchange).await;
                    if launched.sent_hedge {
                        cursor = cursor_after;
                        tries[hedge_index] += 1;
                        sent += 1;
                    }
                    launched.outcome
                }
            };
            let was_sent = !matches!(outcome, Err((_, AttemptError::Unavailable(_))));
            if first_sent && was_sent {
                // The retry budget counts requests the deployment received.
                route.count_request(candidate.health.name());
            }
            let failed = match outcome {
                Ok(won) => return Ok(won),
                Err(failed) => failed,
            };
            // What the latest failure allows.
            let (deployment, error) = failed;
            let condition = match &error {
                AttemptError::Unavailable(why) => {
                    // Not sent: no attempt used, no budget spent; simply the next candidate.
                    sent -= 1;
                    last_unavailable = Some(*why);
                    continue;
                }
                AttemptError::Filtered(_) => Some(Condition::ContentFilter),
                AttemptError::Provider(e) => e.condition(),
            };
            if let AttemptError::Filtered(kept) = error {
                filtered = Some(kept);
            } else if let AttemptError::Provider(e) = error {
                if let Some(secs) = e.retry_after_secs() {
                    let wait = Duration::from_secs(secs);
                    let capped = wait.min(policy.retry.retry_after_max);
                    let evidence = if e.quota_exhausted() {
                        RateLimitEvidence::ProviderQuota
                    } else {
                        RateLimitEvidence::ThisRequest
                    };
                    candidates[deployment].health.cool_down_after(
                        self.caller,
                        Instant::now() + capped,
                        evidence,
                    );
                    if wait > policy.retry.retry_after_max {
                        barred[deployment] = true;
                    }
                }
                last_error = Some(e);
            }
            let name = candidates[deployment].health.name();
            let stop = match condition {
                None => Some(Next::NotRetryable),
                Some(c) if !policy.fallback_on.contains(c) => Some(Next::ConditionNotEnabled),
                Some(_) if Instant::now() >= self.deadline => Some(Next::Deadline),
                Some(_) if sent >= max_attempts => Some(Next::MaxAttempts),
                Some(c) => {
                    may_repeat = c.same_deployment_may_recover();
                    let mut peek = cursor;
                    let rounds = if may_repeat { max_attempts } else { 1 };
                    match self.next_index(&mut peek, &barred, rounds) {
                        None => Some(Next::NoMoreDeployments),
                        Some(_) if !route.spend_retry(name) => Some(Next::RetryBudgetExhausted),
                        Some(next) => {
                            let step = if next == deployment {
                                Next::Retry
                            } else {
                                Next::Fallback
                            };
                            exchange.then(name, step);
                            None
                        }
                    }
                }
            };
            if let Some(stop) = stop {
                exchange.then(name, stop);
                break;
            }
        }
        if let Some(kept) = filtered {
            // Nothing better came: the filtered answer is the answer, as the provider gave it.
            return Ok(*kept);
        }
        match (last_error, last_unavailable) {
            (Some(e), _) => Err(e.into()),
            (None, why) => Err(PipelineError::Routing(
                sluice_routing::RoutingError::Unavailable {
                    alias: self.plan.alias().to_string(),
                    reasons: why.map_or("no deployment left", |w| w.as_str()).to_owned(),
                    retry_in: why.map_or(Duration::from_secs(1), |w| w.retry_in()),
                    rate_limited: false,
                },
            )),
        }
    }

    /// The next candidate to try from `cursor` on, advancing it; `None` when none is left.
    /// `rounds` is how many times through the candidates the request may go (one: each once).
    fn next_index(&self, cursor: &mut usize, barred: &[bool], rounds: u32) -> Option<usize> {
        let len = self.plan.candidates.len();
        let limit = len.saturating_mul(rounds.max(1) as usize);
        while *cursor < limit {
            let index = *cursor % len;
            *cursor += 1;
            if !barred[index] {
                return Some(index);
            }
        }
        None
    }

    /// The candidate a hedge would go to, and the cursor after it, when the route hedges and a
    /// deployment not tried yet is left (hedging onto the same one would double its load).
    fn hedge_target(
        &self,
        cursor: usize,
        barred: &[bool],
        sent: u32,
        max: u32,
    ) -> Option<(usize, usize)> {
        self.plan.policy().hedge?;
        if !self.req.hedges() || sent >= max {
            return None;
        }
        let mut peek = cursor;
        let index = self.next_index(&mut peek, barred, 1)?;
        Some((index, peek))
    }

    /// Races the primary attempt against the hedge delay; past it, sends the hedge (if the
    /// budget allows) and serves whichever answers first. The other is dropped, which cancels
    /// its upstream request, and recorded as `cancelled`.
    async fn hedged(
        &self,
        primary: Started<'a, Op::Answer>,
        hedge: Hedge,
        exchange: &mut Exchange,
    ) -> Hedged<Op::Answer> {
        let primary_ids = (primary.span_id, primary.offset);
        let primary = primary.running;
        let not_sent = |outcome| Hedged {
            outcome,
            sent_hedge: false,
        };
        let Some(policy) = self.plan.policy().hedge else {
            return not_sent(self.finish(primary.await, exchange));
        };
        let first = &self.plan.candidates[hedge.primary];
        let second = &self.plan.candidates[hedge.index];
        let threshold = policy
            .percentile
            .and_then(|p| first.health.ttft_percentile(p))
            .unwrap_or(policy.after);
        let timer = Box::pin(tokio::time::sleep_until(
            (Instant::now() + threshold).min(self.deadline),
        ));
        let primary = match select(primary, timer).await {
            Either::Left((finished, _)) => return not_sent(self.finish(finished, exchange)),
            Either::Right(((), primary)) => primary,
        };
        if Instant::now() >= self.deadline || !self.plan.route.spend_retry(first.health.name()) {
            // Out of time or over budget: no hedge, keep waiting for the first.
            return not_sent(self.finish(primary.await, exchange));
        }
        let racing = self.attempt(second.clone(), true);
        let hedge_ids = (racing.span_id, racing.offset);
        let (done, other) = match select(primary, racing.running).await {
            Either::Left((done, other)) | Either::Right((done, other)) => (done, other),
        };
        let (loser, (loser_span, loser_offset)) = if done.hedge {
            (first, primary_ids)
        } else {
            (second, hedge_ids)
        };
        let loser_was_hedge = !done.hedge;
        let outcome = match self.finish(done, exchange) {
            Ok(won) => {
                drop(other);
                loser
                    .health
                    .observe_slow(self.started.elapsed().saturating_sub(loser_offset));
                exchange.attempt(AttemptRecord {
                    deployment: loser.health.name().to_owned(),
                    provider: loser.health.deployment.provider.clone(),
                    outcome: AttemptOutcome::Cancelled,
                    role: Some(loser.role),
                    hedge: loser_was_hedge,
                    next: Some(Next::LostHedge),
                    span_id: Some(loser_span),
                    offset_us: Some(micros(loser_offset)),
                    latency_us: micros(self.started.elapsed().saturating_sub(loser_offset)),
                    // The prompt was sent, and may be billed: its size is the attempt's cost.
                    input_tokens: Some(self.req.prompt_tokens()),
                    ..AttemptRecord::default()
                });
                Ok(won)
            }
            Err((failed, _)) => {
                exchange.then(self.plan.candidates[failed].health.name(), Next::Hedge);
                self.finish(other.await, exchange)
            }
        };
        Hedged {
            outcome,
            sent_hedge: true,
        }
    }

    /// Starts one attempt: a slot on the deployment, the call, and (streams) the first event,
    /// all within the attempt's timeouts.
    fn attempt(&self, candidate: Candidate, hedge: bool) -> Started<'a, Op::Answer> {
        let upstream = self.upstream;
        let caller = self.caller;
        let req = self.req;
        let timeouts = self.timeouts;
        let deadline = self.deadline;
        let span_id = new_span_id();
        let offset = self.started.elapsed();
        let traceparent = traceparent(&self.trace_id, &span_id);
        let ids = (span_id.clone(), offset);
        let running = Box::pin(async move {
            let acquired =
                tokio::time::timeout_at(deadline, candidate.health.acquire_for(caller)).await;
            let slot = match acquired.unwrap_or(Err(Unavailable::QueueTimeout)) {
                Ok(slot) => slot,
                Err(why) => {
                    return Finished {
                        candidate,
                        hedge,
                        queued_for: Duration::ZERO,
                        sent_at: Instant::now(),
                        span_id,
                        offset,
                        result: Err((AttemptError::Unavailable(why), None)),
                    };
                }
            };
            let sent_at = Instant::now();
            let remaining = deadline.saturating_duration_since(sent_at);
            let (first_token, phase) = if timeouts.first_token < remaining {
                (timeouts.first_token, TimeoutPhase::FirstToken)
            } else {
                (remaining, TimeoutPhase::Total)
            };
            let upstream = upstream
                .with_timeouts(Timeouts {
                    connect: timeouts.connect,
                    first_token,
                    idle: timeouts.idle,
                    total: remaining,
                })
                .with_traceparent(&traceparent);
            let deployment = &candidate.health.deployment;
            let first = FirstAnswer {
                within: first_token,
                phase,
            };
            let result = req.send(upstream, deployment, first).await;
            let queued_for = slot.queued_for;
            let result = match result {
                Ok(attempted) => Ok((attempted, slot)),
                Err(e) => Err((AttemptError::Provider(e), Some(slot))),
            };
            Finished {
                candidate,
                hedge,
                queued_for,
                sent_at,
                span_id,
                offset,
                result,
            }
        });
        Started {
            span_id: ids.0,
            offset: ids.1,
            running,
        }
    }

    /// Checks a whole answer against the request's structure; a repair is noted in the
    /// request's audit under the deployment's name.
    fn vet(
        &self,
        answer: &mut Op::Answer,
        candidate: &Candidate,
        exchange: &mut Exchange,
    ) -> Result<Option<SchemaCheck>, ProviderError> {
        let Some(structured) = self.structured else {
            return Ok(None);
        };
        let deployment = &candidate.health.deployment;
        let check = Op::vet(structured, answer, deployment)?;
        if check == Some(SchemaCheck::Repaired) {
            exchange.audit().note(
                "structured_output",
                candidate.health.name(),
                PolicyAction::Repair,
                PolicyPlace::Response,
                1,
            );
        }
        Ok(check)
    }

    /// Records a finished attempt; the winner, or the failure with the candidate's index.
    fn finish(&self, done: Finished<Op::Answer>, exchange: &mut Exchange) -> Attempt<Op::Answer> {
        let Finished {
            candidate,
            hedge,
            queued_for,
            sent_at,
            span_id,
            offset,
            result,
        } = done;
        let index = self
            .plan
            .candidates
            .iter()
            .position(|c| Arc::ptr_eq(&c.health, &candidate.health))
            .unwrap_or(0);
        let health = &candidate.health;
        let elapsed = sent_at.elapsed();
        let mut attempt = AttemptRecord {
            deployment: health.name().to_owned(),
            provider: health.deployment.provider.clone(),
            latency_us: micros(elapsed),
            role: Some(candidate.role),
            hedge,
            queue_us: (!queued_for.is_zero()).then(|| micros(queued_for)),
            span_id: Some(span_id),
            offset_us: Some(micros(offset)),
            ..AttemptRecord::default()
        };
        let result = match result {
            Ok((answer, mut slot)) if Op::filtered(&answer) => {
                // The deployment works; the content was refused.
                slot.record(Outcome::Neutral, None, None);
                health.observe(AttemptOutcome::ContentFiltered, elapsed, None);
                attempt.outcome = AttemptOutcome::ContentFiltered;
                attempt.status = Some(200);
                exchange.attempt(attempt);
                let kept = Won {
                    candidate,
                    slot,
                    answer,
                };
                return Err((index, AttemptError::Filtered(Box::new(kept))));
            }
            Ok((mut answer, slot)) if self.structured.is_some() => {
                match self.vet(&mut answer, &candidate, exchange) {
                    Ok(check) => {
                        attempt.schema = check;
                        Ok((answer, slot))
                    }
                    Err(violation) => {
                        attempt.schema = Some(SchemaCheck::Invalid);
                        Err((AttemptError::Provider(violation), Some(slot)))
                    }
                }
            }
            other => other,
        };
        let (error, slot) = match result {
            Ok((answer, mut slot)) => {
                // A whole answer's time is its total; a stream's is only to its first event.
                let total = (!self.req.stream()).then_some(elapsed);
                slot.record(Outcome::Success, Some(elapsed), total);
                health.observe(AttemptOutcome::Ok, elapsed, Some(elapsed));
                attempt.outcome = AttemptOutcome::Ok;
                attempt.status = Some(200);
                attempt.ttft_us = Some(micros(elapsed));
                exchange.attempt(attempt);
                return Ok(Won {
                    candidate,
                    slot,
                    answer,
                });
            }
            Err(failure) => failure,
        };
        let breaker_outcome = match &error {
            AttemptError::Unavailable(why) => {
                attempt.outcome = AttemptOutcome::Skipped;
                attempt.latency_us = 0;
                attempt.next = Some(why.next());
                Outcome::Neutral
            }
            AttemptError::Filtered(_) => Outcome::Neutral,
            AttemptError::Provider(e) => {
                tracing::debug!(deployment = %health.name(), error = %e, "attempt failed");
                health.observe(AttemptOutcome::Failed(e.kind()), elapsed, None);
                if matches!(e, ProviderError::Timeout { .. }) {
                    health.observe_slow(elapsed);
                }
                attempt.outcome = AttemptOutcome::Failed(e.kind());
                attempt.status = e.status();
                Outcome::of_failure(e)
            }
        };
        if let Some(mut slot) = slot {
            slot.record(breaker_outcome, None, None);
        }
        exchange.attempt(attempt);
        Err((index, error))
    }
}

struct Hedge {
    /// Candidate indices of the first attempt and of the hedge.
    primary: usize,
    index: usize,
}

struct Hedged<A> {
    outcome: Attempt<A>,
    /// Whether the hedge was sent (it takes an attempt and a place in the sequence).
    sent_hedge: bool,
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The record of a deployment the plan left out.
pub(crate) fn skipped(
    candidate_name: &str,
    provider: &str,
    role: Role,
    why: Unavailable,
) -> AttemptRecord {
    AttemptRecord {
        deployment: candidate_name.to_owned(),
        provider: provider.to_owned(),
        outcome: AttemptOutcome::Skipped,
        role: Some(role),
        next: Some(why.next()),
        ..AttemptRecord::default()
    }
}

#[cfg(test)]
mod tests;
