//! [`GuardedStream`]: a chat stream from the provider, through the route's stream hooks, that
//! settles the record exactly once — at its end, at its failure (a final chunk carrying
//! [`StreamEvent::Error`]), or when dropped because the client went away.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use sluice_providers::{CompletionStream, ProviderError, StreamChunk, TimeoutPhase};
use sluice_routing::Slot;
use sluice_types::record::{PolicyAction, PolicyPlace, SchemaCheck};
use sluice_types::{ChatRequest, Classify, ErrorKind, StreamError, StreamEvent, Usage};
use tokio::time::Instant;

use crate::Exchange;
use crate::chat::unix_now;
use crate::hooks::{HookError, Watchers};
use crate::structured::{StreamCheck, Structured};
use crate::tokens::{estimate_input, estimate_text};

/// Yields the upstream's chunks as the client will get them. With stream hooks on the route,
/// a chunk the hooks changed has no `raw` bytes, so the server re-encodes it from its events.
pub struct GuardedStream {
    /// Chunks received before the stream was handed over, sent first.
    held: VecDeque<StreamChunk>,
    rest: CompletionStream,
    exchange: Exchange,
    /// The deployment's slot, held to the end of the stream.
    slot: Slot,
    /// The route's total timeout.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The hooks that watch the answer (none: chunks pass as received).
    watchers: Watchers,
    /// The request, for the prompt estimate when the provider reports no usage.
    request: ChatRequest,
    /// The answer's tokens so far, as the gateway counts them (for when no usage comes).
    output_tokens: u32,
    usage: Option<Usage>,
    /// An error event the provider itself sent inside the stream.
    upstream_error: Option<ErrorKind>,
    /// The structure the answer must hold: text outside its JSON value is dropped as it
    /// passes, the value is checked at the end.
    structured: Option<StreamCheck>,
    /// A structured stream's usage, held back until its answer is checked: an Anthropic
    /// client's `message_stop` follows usage, and must not precede the check.
    held_usage: Option<Usage>,
    ended: bool,
}

impl GuardedStream {
    pub(crate) fn new(
        held: Vec<StreamChunk>,
        rest: CompletionStream,
        exchange: Exchange,
        slot: Slot,
        deadline: Instant,
        request: ChatRequest,
        watchers: Watchers,
    ) -> GuardedStream {
        let mut stream = GuardedStream {
            held: VecDeque::with_capacity(held.len()),
            rest,
            exchange,
            slot,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            watchers,
            request,
            output_tokens: 0,
            usage: None,
            upstream_error: None,
            structured: None,
            held_usage: None,
            ended: false,
        };
        for mut chunk in held {
            stream.observe(&mut chunk);
            stream.held.push_back(chunk);
        }
        stream
    }

    /// Checks the answer against `structured` (see [`crate::structured`]). Call before the
    /// first poll: the chunks held so far are observed then.
    pub(crate) fn checking(mut self, structured: Option<Arc<Structured>>) -> GuardedStream {
        self.structured = structured.map(StreamCheck::new);
        let mut held = std::mem::take(&mut self.held);
        for chunk in &mut held {
            self.restructure(chunk);
        }
        self.held = held;
        self
    }

    fn observe(&mut self, chunk: &mut StreamChunk) {
        self.exchange.capture_response(&chunk.raw);
        for event in &mut chunk.events {
            match event {
                StreamEvent::Start { created, .. } if *created == 0 => *created = unix_now(),
                StreamEvent::TextDelta { text, .. } | StreamEvent::RefusalDelta { text, .. } => {
                    self.output_tokens = self.output_tokens.saturating_add(estimate_text(text));
                }
                StreamEvent::ToolCallDelta { arguments, .. } => {
                    let tokens = estimate_text(arguments);
                    self.output_tokens = self.output_tokens.saturating_add(tokens);
                }
                StreamEvent::Usage(usage) => self.usage = Some(*usage),
                StreamEvent::Error(error) => self.upstream_error = Some(error.kind),
                _ => {}
            }
        }
        self.restructure(chunk);
    }

    /// Passes a structured answer's text deltas through its check (text outside the JSON
    /// value is dropped).
    fn restructure(&mut self, chunk: &mut StreamChunk) {
        if let Some(check) = &mut self.structured {
            let mut changed = false;
            let held_usage = &mut self.held_usage;
            chunk.events.retain_mut(|event| {
                if let StreamEvent::Usage(usage) = event {
                    *held_usage = Some(*usage);
                    changed = true;
                    return false;
                }
                if !check.observe(event) {
                    return true;
                }
                changed = true;
                // A delta wholly outside the JSON value is dropped.
                !matches!(event, StreamEvent::TextDelta { text, .. } if text.is_empty())
            });
            if changed {
                // The bytes no longer say what the client gets.
                chunk.raw = bytes::Bytes::new();
            }
        }
    }

    /// The stream ended as the upstream meant it to: whether its answer holds the requested
    /// structure (recorded on the request and its serving attempt).
    fn check_structure(&mut self) -> Result<(), ProviderError> {
        let Some(check) = &self.structured else {
            return Ok(());
        };
        let deployment = self.slot.health().name().to_owned();
        match check.finish() {
            Ok(outcome) => {
                self.exchange.set_schema_valid(Some(true));
                self.exchange.attempt_schema(&deployment, outcome);
                if outcome == SchemaCheck::Repaired {
                    self.exchange.audit().note(
                        "structured_output",
                        &deployment,
                        PolicyAction::Repair,
                        PolicyPlace::Response,
                        1,
                    );
                }
                Ok(())
            }
            Err(violation) => {
                self.exchange.set_schema_valid(Some(false));
                self.exchange
                    .attempt_schema(&deployment, SchemaCheck::Invalid);
                Err(ProviderError::SchemaViolation {
                    provider: self.slot.health().deployment.provider.clone(),
                    detail: violation.0,
                })
            }
        }
    }

    /// Runs a chunk through the route's stream hooks. A chunk the hooks changed loses its raw
    /// bytes (they no longer say what the client gets).
    fn through_hooks(&mut self, chunk: StreamChunk) -> StreamChunk {
        if !self.watchers.read_output() {
            return chunk;
        }
        let original = chunk.events.clone();
        match self.watchers.on_events(chunk.events, self.exchange.audit()) {
            Ok(events) if events == original => StreamChunk {
                raw: chunk.raw,
                events,
            },
            Ok(events) => StreamChunk {
                raw: bytes::Bytes::new(),
                events,
            },
            Err(e) => self.blocked(e),
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
        self.usage.unwrap_or_else(|| Usage {
            input_tokens: estimate_input(&self.request),
            output_tokens: self.output_tokens,
            estimated: true,
            ..Usage::default()
        })
    }

    fn end(&mut self, failure: Option<Failure>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.record_usage();
        match failure {
            Some(Failure::Upstream(kind)) => {
                let deployment = self.slot.health().name().to_owned();
                self.exchange.attempt_failed_late(&deployment, kind);
                self.exchange.fail_in_stream(kind);
            }
            // The upstream did its part; a policy stopped the answer.
            Some(Failure::Policy(kind)) => self.exchange.fail_in_stream(kind),
            None => self.exchange.finish_stream(),
        }
    }

    /// Ends the stream on a failure: the record says so, the client gets an error event.
    fn fail(&mut self, error: ProviderError) -> StreamChunk {
        let kind = error.kind();
        tracing::warn!(request_id = %self.exchange.id, error = %error, "upstream failed mid-stream");
        self.end(Some(Failure::Upstream(kind)));
        error_chunk(kind, error.client_message())
    }

    /// Ends the stream on the route's total timeout.
    fn total_timeout(&mut self) -> StreamChunk {
        let provider = self.slot.health().deployment.provider.clone();
        self.fail(ProviderError::Timeout {
            provider,
            phase: TimeoutPhase::Total,
        })
    }

    /// Ends the stream because a hook stopped it.
    fn blocked(&mut self, error: HookError) -> StreamChunk {
        let kind = error.kind();
        tracing::info!(request_id = %self.exchange.id, error = %error, "stream stopped by a hook");
        self.held.clear();
        self.end(Some(Failure::Policy(kind)));
        error_chunk(kind, error.to_string())
    }

    /// The upstream ended: the hooks release what they held; a stream whose provider reported
    /// no usage gets the gateway's estimate (flagged), so the client sees what the record
    /// holds; then the record settles.
    fn finish(&mut self) -> Option<StreamChunk> {
        if self.upstream_error.is_none()
            && let Err(violation) = self.check_structure()
        {
            // Nothing the hooks still hold is released: the answer failed.
            return Some(self.fail(violation));
        }
        let mut events = match self.watchers.finish(self.exchange.audit()) {
            Ok(events) => events,
            Err(e) => return Some(self.blocked(e)),
        };
        let failure = self.upstream_error;
        if let Some(usage) = self.held_usage.take() {
            events.push(StreamEvent::Usage(usage));
        }
        if self.usage.is_none() && failure.is_none() {
            events.push(StreamEvent::Usage(self.settled_usage()));
        }
        self.end(failure.map(Failure::Upstream));
        (!events.is_empty()).then(|| StreamChunk {
            raw: bytes::Bytes::new(),
            events,
        })
    }
}

/// Why a stream ended early.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// The upstream cut it, sent an error event, or ran out of time: the attempt failed.
    Upstream(ErrorKind),
    /// A hook of the route stopped it.
    Policy(ErrorKind),
}

fn error_chunk(kind: ErrorKind, message: String) -> StreamChunk {
    StreamChunk {
        raw: bytes::Bytes::new(),
        events: vec![StreamEvent::Error(StreamError { kind, message })],
    }
}

impl Stream for GuardedStream {
    type Item = StreamChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamChunk>> {
        if let Some(chunk) = self.held.pop_front() {
            return Poll::Ready(Some(self.through_hooks(chunk)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        // The deadline's timer is polled (its waker registered) only while the upstream has
        // nothing: a chunk that is ready needs just the cheap elapsed check.
        if self.deadline.is_elapsed() {
            return Poll::Ready(Some(self.total_timeout()));
        }
        match self.rest.poll_next_unpin(cx) {
            Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(self.total_timeout()))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(mut chunk))) => {
                self.observe(&mut chunk);
                Poll::Ready(Some(self.through_hooks(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.slot.record_late_failure();
                Poll::Ready(Some(self.fail(e)))
            }
            Poll::Ready(None) => Poll::Ready(self.finish()),
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

#[cfg(test)]
mod tests;
