//! The stop-sequence guard ([`StopGuard`]) on a request that carries stop sequences:
//!
//! - user content (user and tool messages: their text and tool results) that contains one of
//!   the request's stop sequences is handled per `on_collision`: warned about (recorded and
//!   named in `x-sluice-policy`), escaped (a zero-width space after the sequence's first
//!   character; a one-character sequence cannot be escaped and is warned about instead), or
//!   refused with an error naming the sequence and the message;
//! - when the route's deployments accept fewer stop sequences than the request has
//!   (`max_stop_sequences`), only the first ones go upstream and the gateway cuts the answer at
//!   the first of the rest itself: whole answers, and streams (holding back only a tail that
//!   may begin one), with the finish reason set to that stop sequence;
//! - answers ended by a stop sequence (as the provider reports it, or cut by the gateway) are
//!   flagged in the record.
//!
//! The text logic is [`sluice_policy::stops`]; `docs/stop-sequences.md` is the reference.

use std::collections::BTreeMap;

use sluice_policy::stops::{OnCollision, StopCutter, escape, first_match, occurrences};
use sluice_types::record::{Audit, PolicyAction, PolicyPlace};
use sluice_types::{ChatRequest, ChatResponse, FinishReason, Part, Role, StreamEvent};

use super::{AnswerHook, Hook, HookContext, HookError, Verdict};

/// The policy name in the record, `/metrics` and `x-sluice-policy`.
const POLICY: &str = "stop_sequences";

/// `[stop_sequences]` on a route.
#[derive(Debug, Clone, Copy)]
pub struct StopGuard {
    pub on_collision: OnCollision,
    /// The most stop sequences every deployment of the route accepts; `None`: no limit.
    pub max_upstream: Option<usize>,
}

impl Hook for StopGuard {
    fn name(&self) -> &'static str {
        POLICY
    }

    fn on_request(
        &self,
        _context: HookContext<'_>,
        request: &mut ChatRequest,
        audit: &mut Audit,
    ) -> Result<Verdict, HookError> {
        if request.stop.is_empty() {
            return Ok(Verdict::Continue);
        }
        self.guard_content(request, audit)?;
        let extra = match self.max_upstream {
            Some(max) if request.stop.len() > max => request.stop.split_off(max),
            _ => Vec::new(),
        };
        Ok(Verdict::Watch(Box::new(StopAnswer {
            extra,
            cutters: BTreeMap::new(),
        })))
    }
}

impl StopGuard {
    fn guard_content(&self, request: &mut ChatRequest, audit: &mut Audit) -> Result<(), HookError> {
        let stops = request.stop.clone();
        let mut warned = 0usize;
        let mut escaped = 0usize;
        for (m, message) in request.messages.iter_mut().enumerate() {
            if !matches!(message.role, Role::User | Role::Tool) {
                continue;
            }
            for text in user_texts(&mut message.parts) {
                for (index, sequence) in stops.iter().enumerate() {
                    let found = occurrences(text, sequence);
                    if found == 0 {
                        continue;
                    }
                    match self.on_collision {
                        OnCollision::Refuse => {
                            audit.note(
                                POLICY,
                                "collision",
                                PolicyAction::Block,
                                PolicyPlace::Request,
                                1,
                            );
                            return Err(HookError::StopSequenceInContent {
                                index,
                                sequence: sequence.clone(),
                                message: m,
                            });
                        }
                        OnCollision::Escape => match escape(text, sequence) {
                            Some(changed) => {
                                *text = changed;
                                escaped += found;
                            }
                            None => warned += found,
                        },
                        OnCollision::Warn => warned += found,
                    }
                }
            }
        }
        audit.note(
            POLICY,
            "collision",
            PolicyAction::Warn,
            PolicyPlace::Request,
            count(warned),
        );
        audit.note(
            POLICY,
            "collision",
            PolicyAction::Escape,
            PolicyPlace::Request,
            count(escaped),
        );
        Ok(())
    }
}

/// The client-written texts of a message: its text parts and the text of its tool results.
fn user_texts(parts: &mut [Part]) -> impl Iterator<Item = &mut String> {
    parts.iter_mut().flat_map(|part| -> Vec<&mut String> {
        match part {
            Part::Text { text, .. } => vec![text],
            Part::ToolResult { content, .. } => content
                .iter_mut()
                .filter_map(|p| match p {
                    Part::Text { text, .. } => Some(text),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    })
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One request's answer under the guard.
struct StopAnswer {
    /// The stop sequences the gateway enforces itself (those past the route's limit).
    extra: Vec<String>,
    /// Per stream choice.
    cutters: BTreeMap<u32, StopCutter>,
}

fn flag(reason: &FinishReason, audit: &mut Audit) {
    if matches!(reason, FinishReason::StopSequence(_)) {
        audit.note(
            POLICY,
            "ended",
            PolicyAction::Flag,
            PolicyPlace::Response,
            1,
        );
    }
}

impl StopAnswer {
    /// The choice's held text, unless a stop sequence already ended it.
    fn flush(&mut self, choice: u32, out: &mut Vec<StreamEvent>) {
        if let Some(cutter) = self.cutters.get_mut(&choice) {
            let text = cutter.flush();
            if !text.is_empty() {
                out.push(StreamEvent::TextDelta { choice, text });
            }
        }
    }

    fn ended(&self, choice: u32) -> Option<&str> {
        self.cutters.get(&choice).and_then(StopCutter::matched)
    }
}

impl AnswerHook for StopAnswer {
    fn on_response(
        &mut self,
        response: &mut ChatResponse,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        for choice in &mut response.choices {
            let cut = choice.parts.iter_mut().enumerate().find_map(|(i, part)| {
                let Part::Text { text, .. } = part else {
                    return None;
                };
                let (at, sequence) = first_match(text, &self.extra)?;
                text.truncate(at);
                Some((i, sequence.to_owned()))
            });
            if let Some((i, sequence)) = cut {
                // Nothing the model wrote after the stop sequence reaches the client.
                choice.parts.truncate(i + 1);
                choice.finish_reason = Some(FinishReason::StopSequence(Some(sequence)));
                audit.note(
                    POLICY,
                    "enforced",
                    PolicyAction::Enforce,
                    PolicyPlace::Response,
                    1,
                );
            }
            if let Some(reason) = &choice.finish_reason {
                flag(reason, audit);
            }
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        event: StreamEvent,
        out: &mut Vec<StreamEvent>,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        match event {
            StreamEvent::TextDelta { choice, text } if !self.extra.is_empty() => {
                let cutter = self.cutters.entry(choice).or_default();
                let before = cutter.matched().is_some();
                let text = cutter.push(&text, &self.extra);
                if !before && cutter.matched().is_some() {
                    audit.note(
                        POLICY,
                        "enforced",
                        PolicyAction::Enforce,
                        PolicyPlace::Response,
                        1,
                    );
                }
                if !text.is_empty() {
                    out.push(StreamEvent::TextDelta { choice, text });
                }
            }
            StreamEvent::TextDelta { .. } => out.push(event),
            StreamEvent::RefusalDelta { choice, .. }
            | StreamEvent::ToolCallStart { choice, .. }
            | StreamEvent::ToolCallDelta { choice, .. } => {
                // After the stop sequence the model would not have gone on.
                if self.ended(choice).is_none() {
                    self.flush(choice, out);
                    out.push(event);
                }
            }
            StreamEvent::Finish { choice, reason } => {
                let reason = match self.ended(choice) {
                    Some(sequence) => FinishReason::StopSequence(Some(sequence.to_owned())),
                    None => {
                        self.flush(choice, out);
                        reason
                    }
                };
                flag(&reason, audit);
                out.push(StreamEvent::Finish { choice, reason });
            }
            other => out.push(other),
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>, _audit: &mut Audit) -> Result<(), HookError> {
        let choices: Vec<u32> = self.cutters.keys().copied().collect();
        for choice in choices {
            self.flush(choice, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
