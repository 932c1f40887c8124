//! The policy seam: an ordered, per-route list of [`Hook`]s on the request path.
//!
//! A hook can read and change the canonical request before anything is reserved or sent,
//! refuse it with a typed error, or answer it itself (no upstream call); read and change a whole
//! answer; and, per stream, see each event and rewrite it, hold it back, or end the stream
//! with an error event in the caller's dialect. Hooks run in route order on the way in and on
//! the way out.
//!
//! Raw upstream bytes reach the client only when no hook of the route reads the output
//! ([`Hooks::read_output`]): the pipeline decides passthrough, not the server.
//!
//! The one hook shipped here is [`RequestSize`] (`max_input_tokens` on a route). DLP,
//! structured-output validation, tool policy, caches and idempotent replay attach here too.

use std::sync::Arc;

use sluice_types::{ChatRequest, ChatResponse, Classify, ErrorKind, Origin, StreamEvent};

use crate::Caller;

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
    /// A hook found what its policy forbids in the answer (a stream ends with this error).
    #[error("the answer was stopped by the `{hook}` policy: {reason}")]
    OutputBlocked { hook: &'static str, reason: String },
}

impl Classify for HookError {
    fn kind(&self) -> ErrorKind {
        match self {
            HookError::PromptTooLarge { .. } | HookError::OutputBlocked { .. } => {
                ErrorKind::PolicyBlocked
            }
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
    /// The route serving the request (after any soft-limit move).
    pub alias: &'a str,
}

/// What the request stage of a hook decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on (the hook may have changed the request).
    Continue,
    /// Answer with this, without an upstream call (a cache hit, an idempotent replay).
    Answer(Box<ChatResponse>),
}

/// One policy on the request path. Every method has a default that does nothing, so a hook
/// implements only the stages it acts on.
pub trait Hook: Send + Sync + std::fmt::Debug {
    /// Its name in configuration, logs and errors.
    fn name(&self) -> &'static str;

    /// Whether it needs the answer's content. Any hook that does turns off the byte-for-byte
    /// passthrough of upstream answers on its route.
    fn reads_output(&self) -> bool {
        false
    }

    /// Reads or changes the request; refuses it; or answers it.
    fn on_request(
        &self,
        _context: HookContext<'_>,
        _request: &mut ChatRequest,
    ) -> Result<Verdict, HookError> {
        Ok(Verdict::Continue)
    }

    /// Reads or changes a whole answer before it is encoded for the client.
    fn on_response(&self, _response: &mut ChatResponse) -> Result<(), HookError> {
        Ok(())
    }

    /// The state it keeps across one stream's events; `None` when it does not look at streams.
    fn on_stream(&self) -> Option<Box<dyn StreamHook>> {
        None
    }
}

/// One hook's view of one stream.
pub trait StreamHook: Send {
    /// Sees one event and pushes what goes on to the client: the event, a changed one, nothing
    /// (held back, to be released by a later call or by [`StreamHook::finish`]), or several.
    /// An error ends the stream with an error event.
    fn on_event(&mut self, event: StreamEvent, out: &mut Vec<StreamEvent>)
    -> Result<(), HookError>;

    /// The upstream stream ended: releases whatever is still held back.
    fn finish(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), HookError> {
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

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any hook needs the answer's content (then nothing is passed through raw).
    pub fn read_output(&self) -> bool {
        self.0.iter().any(|hook| hook.reads_output())
    }

    /// Runs every hook's request stage in order; the first refusal or answer wins.
    pub(crate) fn on_request(
        &self,
        context: HookContext<'_>,
        request: &mut ChatRequest,
    ) -> Result<Verdict, HookError> {
        for hook in self.0.iter() {
            if let Verdict::Answer(answer) = hook.on_request(context, request)? {
                tracing::debug!(hook = hook.name(), "answered by a hook");
                return Ok(Verdict::Answer(answer));
            }
        }
        Ok(Verdict::Continue)
    }

    /// Runs every hook's response stage, in order.
    pub(crate) fn on_response(&self, response: &mut ChatResponse) -> Result<(), HookError> {
        self.0
            .iter()
            .try_for_each(|hook| hook.on_response(response))
    }

    /// The stream stages of the hooks that look at streams; `None` when none does.
    pub(crate) fn on_stream(&self) -> Option<StreamHooks> {
        let stages: Vec<Box<dyn StreamHook>> =
            self.0.iter().filter_map(|hook| hook.on_stream()).collect();
        (!stages.is_empty()).then_some(StreamHooks { stages })
    }
}

/// The stream stages of one stream, chained: each hook sees what the one before it let out.
pub(crate) struct StreamHooks {
    stages: Vec<Box<dyn StreamHook>>,
}

impl StreamHooks {
    /// Passes `events` through every stage; returns what reaches the client.
    pub fn on_events(&mut self, events: Vec<StreamEvent>) -> Result<Vec<StreamEvent>, HookError> {
        let mut events = events;
        for stage in &mut self.stages {
            let mut out = Vec::with_capacity(events.len());
            for event in events {
                stage.on_event(event, &mut out)?;
            }
            events = out;
        }
        Ok(events)
    }

    /// The upstream ended: every stage releases what it held, through the stages after it.
    pub fn finish(&mut self) -> Result<Vec<StreamEvent>, HookError> {
        let mut carried: Vec<StreamEvent> = Vec::new();
        for stage in &mut self.stages {
            let mut out = Vec::with_capacity(carried.len());
            for event in carried {
                stage.on_event(event, &mut out)?;
            }
            stage.finish(&mut out)?;
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

#[cfg(test)]
mod tests;
