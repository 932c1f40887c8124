//! Chat dispatch: plan the route, try its deployments in order, settle the record.
//!
//! A deployment is abandoned for the next one only when its failure is retryable and nothing
//! has reached the client yet: for streams, the first upstream event is awaited before the
//! stream is handed back, so a failure before it still falls back. After that, a failure ends
//! the stream with an error event and a record that says so.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use sluice_providers::{
    Completion, CompletionStream, Deployment, ProviderError, Reply, StreamChunk,
};
use sluice_routing::RoutePlan;
use sluice_types::{ChatRequest, Classify, Dialect, ErrorKind, StreamError, StreamEvent, Usage};

use crate::tokens::{estimate_input, estimate_text};
use crate::{Caller, Exchange, Gateway, PipelineError};

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
}

impl Provenance {
    pub(crate) fn of(
        exchange: &Exchange,
        plan: &RoutePlan,
        deployment: &Deployment,
        served_model: &str,
    ) -> Self {
        Provenance {
            request_id: exchange.id.to_string(),
            alias: plan.alias.clone(),
            deployment: deployment.name.clone(),
            provider: deployment.provider.clone(),
            provider_dialect: deployment.kind.dialect(),
            served_model: served_model.to_owned(),
            attempts: exchange.attempts(),
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
    /// Plans and dispatches a chat request. On error the exchange has been settled.
    pub async fn chat(
        &self,
        mut exchange: Exchange,
        caller: &Caller,
        req: ChatRequest,
    ) -> Result<ChatOutcome, (Exchange, PipelineError)> {
        exchange.set_alias(&req.model, req.stream);
        exchange.set_end_user(req.user.as_deref());
        let plan = match self.plan(caller, &req.model) {
            Ok(plan) => plan,
            Err(e) => return Err((exchange, e)),
        };
        for (index, deployment) in plan.deployments.iter().enumerate() {
            let started = Instant::now();
            let result = self.inner.upstream.chat(deployment, &req).await;
            let result = match result {
                Ok(Reply::Stream(stream)) => first_event(deployment, stream)
                    .await
                    .map(|(f, r)| Attempted::Stream(f, r)),
                Ok(Reply::Complete(completion)) => Ok(Attempted::Complete(completion)),
                Err(e) => Err(e),
            };
            match result {
                Ok(attempted) => {
                    exchange.attempt(deployment, started, Ok(()));
                    return Ok(self.settle(exchange, &plan, deployment, &req, attempted));
                }
                Err(e) => {
                    exchange.attempt(deployment, started, Err(&e));
                    let more = index + 1 < plan.deployments.len();
                    tracing::debug!(deployment = %deployment.name, error = %e, fallback = more && e.retryable(), "attempt failed");
                    if !(more && e.retryable()) {
                        return Err((exchange, e.into()));
                    }
                }
            }
        }
        // Only reached when a route has no deployments, which configuration rejects.
        let error = sluice_routing::RoutingError::UnknownAlias(req.model.clone());
        Err((exchange, error.into()))
    }

    pub(crate) fn plan(&self, caller: &Caller, model: &str) -> Result<RoutePlan, PipelineError> {
        let plan = self.inner.router.plan(model)?;
        if !caller.may_use(&plan.alias) {
            return Err(PipelineError::AliasNotAllowed(model.to_owned()));
        }
        Ok(plan)
    }

    fn settle(
        &self,
        mut exchange: Exchange,
        plan: &RoutePlan,
        deployment: &Arc<Deployment>,
        req: &ChatRequest,
        attempted: Attempted,
    ) -> ChatOutcome {
        match attempted {
            Attempted::Complete(mut completion) => {
                // Anthropic answers carry no timestamp; OpenAI clients expect one.
                if completion.response.created == 0 {
                    completion.response.created = unix_now();
                }
                let response = &completion.response;
                exchange.served_by(deployment, &response.model);
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
                let provenance = Provenance::of(&exchange, plan, deployment, &response.model);
                exchange.finish(200);
                ChatOutcome::Complete {
                    completion,
                    provenance,
                }
            }
            Attempted::Stream(mut first, rest) => {
                let served_model = first
                    .events
                    .iter()
                    .find_map(|e| match e {
                        StreamEvent::Start { model, .. } => Some(model.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| deployment.model.clone());
                exchange.served_by(deployment, &served_model);
                exchange.first_token();
                let provenance = Provenance::of(&exchange, plan, deployment, &served_model);
                let mut stream = GuardedStream {
                    first: None,
                    rest,
                    exchange,
                    input_estimate: estimate_input(req),
                    output_chars: 0,
                    usage: None,
                    upstream_error: None,
                    ended: false,
                };
                stream.observe(&mut first);
                stream.first = Some(first);
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

enum Attempted {
    Complete(Completion),
    Stream(StreamChunk, CompletionStream),
}

/// Waits for the first upstream event, so a failure before it can still fall back.
async fn first_event(
    deployment: &Deployment,
    mut stream: CompletionStream,
) -> Result<(StreamChunk, CompletionStream), ProviderError> {
    match stream.next().await {
        Some(Ok(chunk)) => Ok((chunk, stream)),
        Some(Err(e)) => Err(e),
        None => Err(ProviderError::Truncated {
            provider: deployment.provider.clone(),
        }),
    }
}

/// A stream from the provider that settles the exchange exactly once: at its end, at its
/// failure (which it turns into a final chunk carrying [`StreamEvent::Error`], with empty
/// `raw`), or when dropped because the client went away.
pub struct GuardedStream {
    first: Option<StreamChunk>,
    rest: CompletionStream,
    exchange: Exchange,
    input_estimate: u32,
    output_chars: usize,
    usage: Option<Usage>,
    /// An error event the provider itself sent inside the stream.
    upstream_error: Option<ErrorKind>,
    ended: bool,
}

impl GuardedStream {
    fn observe(&mut self, chunk: &mut StreamChunk) {
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
        let usage = self.settled_usage();
        self.exchange.usage(&usage);
        match failure {
            Some(kind) => self.exchange.fail_in_stream(kind),
            None => self.exchange.finish_stream(),
        }
    }
}

impl Stream for GuardedStream {
    type Item = StreamChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamChunk>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rest.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(mut chunk))) => {
                self.observe(&mut chunk);
                Poll::Ready(Some(chunk))
            }
            Poll::Ready(Some(Err(e))) => {
                let kind = e.kind();
                tracing::warn!(request_id = %self.exchange.id, error = %e, "upstream failed mid-stream");
                self.end(Some(kind));
                let event = StreamEvent::Error(StreamError {
                    kind,
                    message: e.client_message(),
                });
                Poll::Ready(Some(StreamChunk {
                    raw: bytes::Bytes::new(),
                    events: vec![event],
                }))
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
            let usage = self.settled_usage();
            self.exchange.usage(&usage);
        }
    }
}
