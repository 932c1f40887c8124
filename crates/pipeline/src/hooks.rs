//! The policy seam: an ordered, per-route list of [`Hook`]s on the request path.
//!
//! A hook can read and change the canonical request before anything is reserved or sent,
//! refuse it with a typed error, or answer it itself (no upstream call); read and change a whole
//! answer; and, per stream, see each event and rewrite it, hold it back, or end the stream
//! with an error event in the caller's dialect. Hooks run in route order on the way in and on
//! the way out.
//!
//! A hook that needs the answer says so per request ([`Verdict::Watch`]), with an
//! [`AnswerHook`] that keeps that request's state (the pseudonyms it gave, the schema asked
//! for). Raw upstream bytes reach the client only when no hook watches the answer
//! ([`Watchers::read_output`]): the pipeline decides passthrough, not the server. What hooks
//! find and do goes to the record's policy decisions ([`Audit`]), never the values matched.
//!
//! Shipped here: [`RequestSize`] (`max_input_tokens` on a route), [`dlp::Dlp`] (DLP at
//! egress), [`stops::StopGuard`] (the stop-sequence guard) and [`tools::ToolGuard`] (tool
//! policy). Caches and idempotent replay attach here too. Structured output is checked in the
//! attempt loop instead (an invalid answer is a failed attempt that may fall back).

use std::sync::Arc;

use sluice_types::record::Audit;
use sluice_types::{ChatRequest, ChatResponse, Classify, ErrorKind, Origin, StreamEvent};

use crate::Caller;

pub mod stops;
pub mod tools;

/// Why a hook stopped a request or a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The prompt is larger than the route accepts.
    #[error(
        "this request's prompt is about {estimate} tokens; the model `{alias}` accepts at most {limit} (max_input_tokens)"
    )]
    PromptTooLarge {
        alias: String,
        estimate: u32,
        limit: u32,
    },
    /// The DLP policy blocks a value found in the request: nothing is sent upstream.
    #[error(
        "the request was refused by the DLP policy: a value the `{detector}` detector finds (in {place}) may not be sent upstream"
    )]
    DlpBlocked {
        detector: String,
        place: &'static str,
    },
    /// A hook found what its policy forbids in the answer (a stream ends with this error).
    #[error("the answer was stopped by the `{hook}` policy: {reason}")]
    OutputBlocked { hook: &'static str, reason: String },
    /// The request offers (or forces) tools its key may not use (`tool_policy`).
    #[error("this key may not use the tool{} {} (tool_policy)", if .tools.len() == 1 { "" } else { "s" }, tools::quoted(.tools))]
    ToolNotAllowed { tools: Vec<String> },
    /// User content holds one of the request's own stop sequences, and the route refuses such
    /// requests (`stop_sequences.on_collision = "refuse"`). `index` counts from 0 in the
    /// request's stop list; `message` counts from 0 in its messages.
    #[error(
        "stop sequence {index} ({sequence:?}) appears in the content of message {message}: the answer could end early where the model repeats it (stop_sequences.on_collision = \"refuse\")"
    )]
    StopSequenceInContent {
        index: usize,
        sequence: String,
        message: usize,
    },
}

impl Classify for HookError {
    fn kind(&self) -> ErrorKind {
        match self {
            HookError::PromptTooLarge { .. }
            | HookError::DlpBlocked { .. }
            | HookError::OutputBlocked { .. }
            | HookError::ToolNotAllowed { .. }
            | HookError::StopSequenceInContent { .. } => ErrorKind::PolicyBlocked,
        }
    }
    fn origin(&self) -> Origin {
        Origin::Client
    }
}

/// What a hook sees of the request besides its body.
#[derive(Debug, Clone, Copy)]
pub struct HookContext<'a> {
    pub caller: &'a Caller,
    /// The route serving the request.
    pub alias: &'a str,
}

/// What the request stage of a hook decided.
pub enum Verdict {
    /// Go on (the hook may have changed the request).
    Continue,
    /// Go on, and let this see the answer: it keeps what the hook learnt of this request (the
    /// pseudonyms it gave, the schema asked for, the caller's rights).
    Watch(Box<dyn AnswerHook>),
    /// Answer with this, without an upstream call (a cache hit, an idempotent replay).
    Answer(Box<ChatResponse>),
}

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Continue => f.write_str("Continue"),
            Verdict::Watch(_) => f.write_str("Watch"),
            Verdict::Answer(answer) => f.debug_tuple("Answer").field(answer).finish(),
        }
    }
}

/// One policy on the request path, shared by every request of its routes.
pub trait Hook: Send + Sync + std::fmt::Debug {
    /// Its name in configuration, logs, errors and the record's policy decisions.
    fn name(&self) -> &'static str;

    /// Reads or changes the request; refuses it; answers it; or asks to see its answer.
    /// What it finds goes to `audit` (the record's policy decisions).
    fn on_request(
        &self,
        context: HookContext<'_>,
        request: &mut ChatRequest,
        audit: &mut Audit,
    ) -> Result<Verdict, HookError>;

    /// Whether it also guards what a token count (`/v1/messages/count_tokens`) sends upstream:
    /// then its request stage runs on the counted prompt (it may change or refuse it; what it
    /// asks to watch or answers is ignored, a count has no answer to rewrite).
    fn guards_counts(&self) -> bool {
        false
    }

    /// Reads, changes or refuses the texts an embeddings request sends upstream.
    fn on_embeddings(
        &self,
        _context: HookContext<'_>,
        _inputs: &mut [&mut String],
        _audit: &mut Audit,
    ) -> Result<(), HookError> {
        Ok(())
    }
}

/// One hook's view of one request's answer: a whole answer, or a stream's events. Every
/// method but [`AnswerHook::on_event`] has a default that does nothing.
pub trait AnswerHook: Send {
    /// Reads or changes a whole answer before it is encoded for the client.
    fn on_response(
        &mut self,
        _response: &mut ChatResponse,
        _audit: &mut Audit,
    ) -> Result<(), HookError> {
        Ok(())
    }

    /// Sees one stream event and pushes what goes on to the client: the event, a changed one,
    /// nothing (held back, to be released by a later call or by [`AnswerHook::finish`]), or
    /// several. An error ends the stream with an error event.
    fn on_event(
        &mut self,
        event: StreamEvent,
        out: &mut Vec<StreamEvent>,
        audit: &mut Audit,
    ) -> Result<(), HookError>;

    /// The upstream stream ended: releases whatever is still held back.
    fn finish(&mut self, _out: &mut Vec<StreamEvent>, _audit: &mut Audit) -> Result<(), HookError> {
        Ok(())
    }
}

/// A route's hooks, in order. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Hooks(Arc<[Arc<dyn Hook>]>);

impl Hooks {
    pub fn new(hooks: Vec<Arc<dyn Hook>>) -> Hooks {
        Hooks(hooks.into())
    }

    /// Runs every hook's request stage in order; the first refusal or answer ends the walk.
    /// The hooks that asked to see the answer before then see it, a hook's own answer
    /// included.
    pub(crate) fn on_request(
        &self,
        context: HookContext<'_>,
        request: &mut ChatRequest,
        audit: &mut Audit,
    ) -> Result<Started, HookError> {
        let mut watchers = Watchers::default();
        for hook in self.0.iter() {
            match hook.on_request(context, request, audit)? {
                Verdict::Continue => {}
                Verdict::Watch(watcher) => watchers.0.push(watcher),
                Verdict::Answer(answer) => {
                    tracing::debug!(hook = hook.name(), "answered by a hook");
                    return Ok(Started {
                        watchers,
                        answer: Some(answer),
                    });
                }
            }
        }
        Ok(Started {
            watchers,
            answer: None,
        })
    }

    /// The request stages of the hooks that guard token counts.
    pub(crate) fn on_count(
        &self,
        context: HookContext<'_>,
        request: &mut ChatRequest,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        for hook in self.0.iter().filter(|hook| hook.guards_counts()) {
            hook.on_request(context, request, audit)?;
        }
        Ok(())
    }

    /// Every hook's embeddings stage, in order.
    pub(crate) fn on_embeddings(
        &self,
        context: HookContext<'_>,
        inputs: &mut [&mut String],
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        self.0
            .iter()
            .try_for_each(|hook| hook.on_embeddings(context, inputs, audit))
    }
}

/// What the request stage of a route's hooks left: who watches the answer, and the answer a
/// hook gave, if one did.
#[derive(Default)]
pub struct Started {
    pub watchers: Watchers,
    pub answer: Option<Box<ChatResponse>>,
}

/// The answer stages of one request's hooks, chained in route order: each sees what the one
/// before it let out. None: the answer's content is not read, and upstream bytes may pass
/// through as received.
#[derive(Default)]
pub struct Watchers(Vec<Box<dyn AnswerHook>>);

impl Watchers {
    /// Whether any hook reads the answer (then nothing is passed through raw).
    pub fn read_output(&self) -> bool {
        !self.0.is_empty()
    }

    /// Runs every answer stage on a whole answer, in order.
    pub(crate) fn on_response(
        &mut self,
        response: &mut ChatResponse,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        self.0
            .iter_mut()
            .try_for_each(|hook| hook.on_response(response, audit))
    }

    /// Passes `events` through every stage; returns what reaches the client.
    pub(crate) fn on_events(
        &mut self,
        events: Vec<StreamEvent>,
        audit: &mut Audit,
    ) -> Result<Vec<StreamEvent>, HookError> {
        let mut events = events;
        for stage in &mut self.0 {
            let mut out = Vec::with_capacity(events.len());
            for event in events {
                stage.on_event(event, &mut out, audit)?;
            }
            events = out;
        }
        Ok(events)
    }

    /// The upstream ended: every stage releases what it held, through the stages after it.
    pub(crate) fn finish(&mut self, audit: &mut Audit) -> Result<Vec<StreamEvent>, HookError> {
        let mut carried: Vec<StreamEvent> = Vec::new();
        for stage in &mut self.0 {
            let mut out = Vec::with_capacity(carried.len());
            for event in carried {
                stage.on_event(event, &mut out, audit)?;
            }
            stage.finish(&mut out, audit)?;
            carried = out;
        }
        Ok(carried)
    }
}

/// `max_input_tokens` on a route: refuses a prompt over the bound before anything is reserved
/// or sent, so one oversized request (a runaway agent's context) cannot spend a budget or take
/// a deployment's slot. The size is the gateway's estimate of the prompt (the same one that
/// admission reserves).
#[derive(Debug, Clone, Copy)]
pub struct RequestSize {
    pub max_input_tokens: u32,
}

impl Hook for RequestSize {
    fn name(&self) -> &'static str {
        "max_input_tokens"
    }

    fn on_request(
        &self,
        context: HookContext<'_>,
        request: &mut ChatRequest,
        _audit: &mut Audit,
    ) -> Result<Verdict, HookError> {
        let estimate = crate::tokens::estimate_input(request);
        if estimate > self.max_input_tokens {
            return Err(HookError::PromptTooLarge {
                alias: context.alias.to_owned(),
                estimate,
                limit: self.max_input_tokens,
            });
        }
        Ok(Verdict::Continue)
    }
}

pub mod dlp;
#[cfg(test)]
mod tests;
