//! Chat: plan the route, run its attempts ([`crate::dispatch`]), settle the record.
//!
//! A request moves on to another attempt only while nothing has reached the client: for
//! streams, the first upstream event is awaited before the stream is handed back, so a failure
//! before it still falls back. After that, a failure (or the route's total timeout) ends the
//! stream with an error event and a record that says so.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use sluice_providers::{
    Completion, CompletionStream, Deployment, ProviderError, StreamChunk, TimeoutPhase,
};
use sluice_routing::{Role, RoutePlan, Slot, TimeoutOverrides};
use sluice_types::{ChatRequest, Classify, Dialect, ErrorKind, StreamError, StreamEvent, Usage};
use tokio::time::Instant;

use crate::admission::Demand;
use crate::dispatch::{Attempted, Dispatch, Won, skipped};
use crate::tokens::{estimate_input, estimate_text};
use crate::{Caller, Exchange, Gateway, PipelineError, schema};

/// Where an answer came from; the server turns it into response headers.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub request_id: String,
    pub alias: Arc<str>,
    pub deployment: String,
    pub provider: String,
    /// The dialect the provider answered in: when it equals the client's, raw bytes pass through.
    pub provider_dialect: Dialect,
    /// The model as the provider reported it.
    pub served_model: String,
    pub attempts: usize,
    /// The caller's budgets and rate limits after admission.
    pub quota: Arc<crate::QuotaState>,
}

impl Provenance {
    pub(crate) fn of(
        exchange: &Exchange,
        alias: &Arc<str>,
        deployment: &Deployment,
        served_model: &str,
    ) -> Self {
        Provenance {
            request_id: exchange.id.to_string(),
            alias: alias.clone(),
            deployment: deployment.name.clone(),
            provider: deployment.provider.clone(),
            provider_dialect: deployment.kind.dialect(),
            served_model: served_model.to_owned(),
            attempts: exchange.attempts(),
            quota: exchange.quota().clone(),
        }
    }
}

pub enum ChatOutcome {
    /// A whole answer. The record is already settled.
    Complete {
        completion: Completion,
        provenance: Provenance,
    },
    /// A stream whose first upstream event has arrived. It settles the record when it ends or
    /// is dropped.
    Stream {
        stream: Box<GuardedStream>,
        provenance: Provenance,
    },
}

impl Gateway {
    /// Plans and dispatches a chat request. `overrides` are the timeouts the request asked
    /// for (never longer than the route's). On error the exchange is handed back to be settled.
    pub async fn chat(
        &self,
        mut exchange: Exchange,
        caller: &Caller,
        mut req: ChatRequest,
        overrides: TimeoutOverrides,
    ) -> Result<ChatOutcome, (Exchange, PipelineError)> {
        exchange.set_alias(&req.model, req.stream);
        exchange.set_end_user(req.user.as_deref());
        let plan = match self.plan(caller, &req.model, req.stream) {
            Ok(plan) => plan,
            Err(e) => return Err((exchange, e)),
        };
        let mut demand = Demand::chat(&req);
        let stream = req.stream;
        let plan = match self
            .admit(&mut exchange, caller, &mut demand, plan, stream)
            .await
        {
            Ok(plan) => plan,
            Err(e) => return Err((exchange, e)),
        };
        // Under a spend or token limit, the reservation is the output bound.
        req.max_tokens = demand.max_tokens;
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
        self.keep_bodies(&mut exchange, plan.policy().log_bodies, caller);
        if let Some(unavailable) = plan.unavailable() {
            return Err((exchange, unavailable.into()));
        }
        let timeouts = plan.policy().timeouts.limited_by(&overrides);
        let deadline = Instant::now() + timeouts.total;
        self.drill(&exchange, &plan, &req);
        let dispatch = Dispatch {
            upstream: self.upstream_for(timeouts.connect),
            plan: &plan,
            req: &req,
            timeouts,
            deadline,
            trace_id: exchange.trace_id().to_owned(),
            started: exchange.started(),
        };
        match dispatch.run(&mut exchange).await {
            Ok(won) => Ok(self.settle(exchange, plan.alias(), &req, won, deadline)),
            Err(e) => Err((exchange, e)),
        }
    }

    /// The route for a model, once the caller may use it.
    pub(crate) fn plan(
        &self,
        caller: &Caller,
        model: &str,
        stream: bool,
    ) -> Result<RoutePlan, PipelineError> {
        let route = self.inner.router.route(model)?;
        if !caller.may_use(&route.alias) {
            return Err(PipelineError::AliasNotAllowed(model.to_owned()));
        }
        if let Some(rules) = self.inner.policy.rules(&route.alias)
            && !rules.roles.is_empty()
            && !rules.roles.iter().any(|role| caller.key.has_role(role))
        {
            return Err(PipelineError::RoleRequired {
                alias: model.to_owned(),
                roles: rules.roles.clone(),
            });
        }
        Ok(self.inner.router.plan(model, stream)?)
    }

    fn settle(
        &self,
        mut exchange: Exchange,
        alias: &Arc<str>,
        req: &ChatRequest,
        won: Won,
        deadline: Instant,
    ) -> ChatOutcome {
        let deployment = won.candidate.health.deployment.clone();
        match won.attempted {
            Attempted::Complete(mut completion) => {
                // Anthropic answers carry no timestamp; OpenAI clients expect one.
                if completion.response.created == 0 {
                    completion.response.created = unix_now();
                }
                let response = &completion.response;
                exchange.served_by(&deployment, &response.model);
                exchange.first_token();
                let usage = response.usage.unwrap_or_else(|| {
                    let output: String = response
                        .choices
                        .iter()
                        .flat_map(|c| c.parts.iter())
                        .filter_map(text_of)
                        .collect();
                    Usage {
                        input_tokens: estimate_input(req),
                        output_tokens: estimate_text(&output),
                        estimated: true,
                        ..Usage::default()
                    }
                });
                exchange.usage(&usage);
                exchange.attempt_usage(&deployment.name, &usage);
                exchange.set_schema_valid(schema::check_response(req, response));
                exchange.capture_response(&completion.raw);
                let provenance = Provenance::of(&exchange, alias, &deployment, &response.model);
                exchange.finish(200);
                ChatOutcome::Complete {
                    completion,
                    provenance,
                }
            }
            Attempted::Stream(mut held, rest) => {
                let served_model = held
                    .iter()
                    .flat_map(|chunk| chunk.events.iter())
                    .find_map(|e| match e {
                        StreamEvent::Start { model, .. } => Some(model.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| deployment.model.clone());
                exchange.served_by(&deployment, &served_model);
                exchange.first_token();
                let provenance = Provenance::of(&exchange, alias, &deployment, &served_model);
                let mut stream = GuardedStream {
                    held: std::collections::VecDeque::new(),
                    rest,
                    exchange,
                    slot: won.slot,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    input_estimate: estimate_input(req),
                    output_chars: 0,
                    usage: None,
                    upstream_error: None,
                    ended: false,
                };
                for chunk in &mut held {
                    stream.observe(chunk);
                }
                stream.held = held.into();
                ChatOutcome::Stream {
                    stream: Box::new(stream),
                    provenance,
                }
            }
        }
    }
}

fn unix_now() -> i64 {
    sluice_store::now_ms() / 1000
}

fn text_of(part: &sluice_types::Part) -> Option<&str> {
    match part {
        sluice_types::Part::Text { text, .. } => Some(text),
        sluice_types::Part::ToolCall(call) => Some(&call.arguments),
        _ => None,
    }
}

/// A stream from the provider that settles the exchange exactly once: at its end, at its
/// failure (which it turns into a final chunk carrying [`StreamEvent::Error`], with empty
/// `raw`), or when dropped because the client went away.
pub struct GuardedStream {
    /// Chunks received before the stream was handed over, sent first.
    held: std::collections::VecDeque<StreamChunk>,
    rest: CompletionStream,
    exchange: Exchange,
    /// The deployment's slot, held to the end of the stream.
    slot: Slot,
    /// The route's total timeout.
    deadline: Pin<Box<tokio::time::Sleep>>,
    input_estimate: u32,
    output_chars: usize,
    usage: Option<Usage>,
    /// An error event the provider itself sent inside the stream.
    upstream_error: Option<ErrorKind>,
    ended: bool,
}

impl GuardedStream {
    fn observe(&mut self, chunk: &mut StreamChunk) {
        self.exchange.capture_response(&chunk.raw);
        for event in &mut chunk.events {
            match event {
                StreamEvent::Start { created, .. } if *created == 0 => *created = unix_now(),
                StreamEvent::TextDelta { text, .. } | StreamEvent::RefusalDelta { text, .. } => {
                    self.output_chars += text.len();
                }
                StreamEvent::ToolCallDelta { arguments, .. } => {
                    self.output_chars += arguments.len()
                }
                StreamEvent::Usage(usage) => self.usage = Some(*usage),
                StreamEvent::Error(error) => self.upstream_error = Some(error.kind),
                _ => {}
            }
        }
    }

    /// The usage so far, on the record and on the attempt that served the stream.
    fn record_usage(&mut self) {
        let usage = self.settled_usage();
        self.exchange.usage(&usage);
        let deployment = self.slot.health().name().to_owned();
        self.exchange.attempt_usage(&deployment, &usage);
    }

    /// Usage as reported, or estimated (and marked so) when the provider sent none.
    fn settled_usage(&self) -> Usage {
        self.usage.unwrap_or(Usage {
            input_tokens: self.input_estimate,
            output_tokens: u32::try_from(self.output_chars.div_ceil(4)).unwrap_or(u32::MAX),
            estimated: true,
            ..Usage::default()
        })
    }

    fn end(&mut self, failure: Option<ErrorKind>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.record_usage();
        match failure {
            Some(kind) => self.exchange.fail_in_stream(kind),
            None => self.exchange.finish_stream(),
        }
    }
}

impl GuardedStream {
    /// Ends the stream on a failure: the record says so, the client gets an error event.
    fn fail(&mut self, error: ProviderError) -> StreamChunk {
        let kind = error.kind();
        tracing::warn!(request_id = %self.exchange.id, error = %error, "upstream failed mid-stream");
        self.end(Some(kind));
        let event = StreamEvent::Error(StreamError {
            kind,
            message: error.client_message(),
        });
        StreamChunk {
            raw: bytes::Bytes::new(),
            events: vec![event],
        }
    }
}

impl Stream for GuardedStream {
    type Item = StreamChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamChunk>> {
        if let Some(chunk) = self.held.pop_front() {
            return Poll::Ready(Some(chunk));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let provider = self.slot.health().deployment.provider.clone();
            let timeout = ProviderError::Timeout {
                provider,
                phase: TimeoutPhase::Total,
            };
            return Poll::Ready(Some(self.fail(timeout)));
        }
        match self.rest.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(mut chunk))) => {
                self.observe(&mut chunk);
                Poll::Ready(Some(chunk))
            }
            Poll::Ready(Some(Err(e))) => {
                self.slot.health().record_late_failure();
                Poll::Ready(Some(self.fail(e)))
            }
            Poll::Ready(None) => {
                let failure = self.upstream_error;
                self.end(failure);
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        if !self.ended {
            // The client went away before the end: settle what was used so far.
            self.ended = true;
            self.record_usage();
        }
    }
}
