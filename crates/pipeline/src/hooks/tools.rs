//! Tool policy on the request path ([`ToolGuard`]): a request offering a tool its key may not
//! use is refused before anything is reserved or sent; in the answer, a tool call the key may
//! not make (a tool outside its list, or a call matching a `block` rule whose capability the
//! key lacks) is replaced by a text part that explains why, so the client's agent loop sees a
//! normal answer and never a silent drop.
//!
//! Streams: a call's events are held until its arguments are complete (the next call, text, or
//! the choice's end), then released as one start and one arguments fragment, or replaced by a
//! text delta. Text is never held. Released calls are renumbered from 0 per choice, so a
//! client never sees a gap where a blocked call was.
//!
//! The judgement itself (patterns, rules, capabilities) is [`sluice_policy::tools`]; this module
//! applies it and records every decision (`tool_policy`, rule, block|log, tools|tool_call).
//! `docs/tool-policy.md` is the reference.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_policy::tools::{Judgement, ToolPolicy, ToolRule};
use sluice_types::record::{Audit, PolicyAction, PolicyPlace};
use sluice_types::{
    ChatRequest, ChatResponse, FinishReason, Part, Role, StreamEvent, ToolCall, ToolChoice,
};

use super::{AnswerHook, Hook, HookContext, HookError, Verdict};

/// The policy name in the record, `/metrics` and `x-sluice-policy`.
const POLICY: &str = "tool_policy";
/// The rule name of a tool outside the key's allowed list.
const ALLOWED_TOOLS: &str = "allowed_tools";

/// `tool_policy` on a route.
#[derive(Debug, Clone)]
pub struct ToolGuard {
    pub policy: Arc<ToolPolicy>,
}

impl Hook for ToolGuard {
    fn name(&self) -> &'static str {
        POLICY
    }

    fn on_request(
        &self,
        context: HookContext<'_>,
        request: &mut ChatRequest,
        audit: &mut Audit,
    ) -> Result<Verdict, HookError> {
        let key = &context.caller.key;
        let rights = self.policy.rights(&key.id, &key.roles);
        let mut refused: Vec<String> = request
            .tools
            .iter()
            .filter(|t| !rights.allowed.allows(&t.name))
            .map(|t| t.name.clone())
            .collect();
        if let Some(ToolChoice::Named(name)) = &request.tool_choice
            && !rights.allowed.allows(name)
            && !refused.contains(name)
        {
            refused.push(name.clone());
        }
        if !refused.is_empty() {
            audit.note(
                POLICY,
                ALLOWED_TOOLS,
                PolicyAction::Block,
                PolicyPlace::Tools,
                count(refused.len()),
            );
            return Err(HookError::ToolNotAllowed { tools: refused });
        }
        // Calls in the history are the client's own account of the conversation: the gateway
        // never runs tools, and a call it blocked never reached the client as a call, so a
        // history cannot make one happen. Those the key could not have made are recorded.
        for call in request
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .flat_map(|m| &m.parts)
            .filter_map(|p| match p {
                Part::ToolCall(call) => Some(call),
                _ => None,
            })
        {
            let rule = match self.policy.judge(&rights, &call.name, &call.arguments) {
                Judgement::Pass { .. } => continue,
                Judgement::NotAllowed => ALLOWED_TOOLS,
                Judgement::Blocked { rule } => rule.name.as_str(),
            };
            audit.note(
                POLICY,
                &format!("history.{rule}"),
                PolicyAction::Log,
                PolicyPlace::ToolCall,
                1,
            );
        }
        // A model calls only the tools a request offers: without any, there is nothing to judge
        // in the answer, and its bytes may pass through untouched.
        if request.tools.is_empty() {
            return Ok(Verdict::Continue);
        }
        Ok(Verdict::Watch(Box::new(ToolAnswer {
            policy: self.policy.clone(),
            key_id: key.id.clone(),
            roles: key.roles.clone(),
            choices: BTreeMap::new(),
        })))
    }
}

/// One request's answer under the tool policy.
struct ToolAnswer {
    policy: Arc<ToolPolicy>,
    key_id: String,
    roles: Vec<String>,
    /// Per choice of a stream.
    choices: BTreeMap<u32, ChoiceCalls>,
}

/// A stream choice's calls so far.
#[derive(Default)]
struct ChoiceCalls {
    /// The call whose arguments are still arriving.
    pending: Option<Pending>,
    /// Calls let through (the next one's index as the client sees it).
    passed: u32,
    blocked: u32,
    /// Text went out before: an explanation starts on a new paragraph.
    text_seen: bool,
}

struct Pending {
    /// The upstream's index of the call in its choice.
    index: u32,
    call: ToolCall,
}

/// What becomes of one call, and what it records.
enum Outcome {
    Pass,
    Replace(String),
}

impl ToolAnswer {
    fn decide(&self, call: &ToolCall, audit: &mut Audit) -> Outcome {
        let rights = self.policy.rights(&self.key_id, &self.roles);
        match self.policy.judge(&rights, &call.name, &call.arguments) {
            Judgement::Pass { logged } => {
                for rule in logged {
                    audit.note(POLICY, rule, PolicyAction::Log, PolicyPlace::ToolCall, 1);
                }
                Outcome::Pass
            }
            Judgement::NotAllowed => {
                audit.note(
                    POLICY,
                    ALLOWED_TOOLS,
                    PolicyAction::Block,
                    PolicyPlace::ToolCall,
                    1,
                );
                Outcome::Replace(format!(
                    "[sluice] the call to `{}` was blocked by tool policy: this key may not use the tool `{}`.",
                    call.name, call.name
                ))
            }
            Judgement::Blocked { rule } => {
                audit.note(
                    POLICY,
                    &rule.name,
                    PolicyAction::Block,
                    PolicyPlace::ToolCall,
                    1,
                );
                Outcome::Replace(explain(&call.name, rule))
            }
        }
    }

    /// Decides the choice's pending call and pushes what the client gets for it.
    fn settle(&mut self, choice: u32, out: &mut Vec<StreamEvent>, audit: &mut Audit) {
        let Some(pending) = self.choices.get_mut(&choice).and_then(|c| c.pending.take()) else {
            return;
        };
        let outcome = self.decide(&pending.call, audit);
        let state = self.choices.entry(choice).or_default();
        match outcome {
            Outcome::Pass => {
                let index = state.passed;
                state.passed += 1;
                let ToolCall {
                    id,
                    name,
                    arguments,
                } = pending.call;
                out.push(StreamEvent::ToolCallStart {
                    choice,
                    index,
                    id,
                    name,
                });
                if !arguments.is_empty() {
                    out.push(StreamEvent::ToolCallDelta {
                        choice,
                        index,
                        arguments,
                    });
                }
            }
            Outcome::Replace(text) => {
                state.blocked += 1;
                let text = if state.text_seen {
                    format!("\n\n{text}")
                } else {
                    text
                };
                state.text_seen = true;
                out.push(StreamEvent::TextDelta { choice, text });
            }
        }
    }
}

/// The text that replaces a call a rule blocked.
fn explain(tool: &str, rule: &ToolRule) -> String {
    let needs = match rule.unless_role.as_slice() {
        [] => "no key may make it".to_owned(),
        [role] => format!("it needs the `{role}` role"),
        roles => format!("it needs one of the roles {}", quoted(roles)),
    };
    format!(
        "[sluice] the call to `{tool}` was blocked by tool policy rule `{}`: {needs}.",
        rule.name
    )
}

/// `a`, `b` and `c` in backticks, comma separated.
pub(crate) fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl AnswerHook for ToolAnswer {
    fn on_response(
        &mut self,
        response: &mut ChatResponse,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        for choice in &mut response.choices {
            let mut calls = 0;
            let mut passed = 0;
            let mut text_seen = false;
            for part in &mut choice.parts {
                match part {
                    Part::ToolCall(call) => {
                        calls += 1;
                        match self.decide(call, audit) {
                            Outcome::Pass => passed += 1,
                            Outcome::Replace(text) => {
                                let text = if text_seen {
                                    format!("\n\n{text}")
                                } else {
                                    text
                                };
                                *part = Part::text(text);
                                text_seen = true;
                            }
                        }
                    }
                    Part::Text { .. } => text_seen = true,
                    _ => {}
                }
            }
            if calls > 0 && passed == 0 && choice.finish_reason == Some(FinishReason::ToolUse) {
                choice.finish_reason = Some(FinishReason::EndTurn);
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
            StreamEvent::ToolCallStart {
                choice,
                index,
                id,
                name,
            } => {
                self.settle(choice, out, audit);
                self.choices.entry(choice).or_default().pending = Some(Pending {
                    index,
                    call: ToolCall {
                        id,
                        name,
                        arguments: String::new(),
                    },
                });
            }
            StreamEvent::ToolCallDelta {
                choice,
                index,
                arguments,
            } => {
                let state = self.choices.entry(choice).or_default();
                match &mut state.pending {
                    Some(pending) if pending.index == index => {
                        pending.call.arguments.push_str(&arguments)
                    }
                    // Arguments of a call already decided (or never started) cannot be judged
                    // with it: the stream ends rather than let them out unjudged.
                    _ => {
                        return Err(HookError::OutputBlocked {
                            hook: POLICY,
                            reason: format!(
                                "arguments for tool call {index} arrived after the call was judged"
                            ),
                        });
                    }
                }
            }
            StreamEvent::TextDelta { choice, text } => {
                self.settle(choice, out, audit);
                self.choices.entry(choice).or_default().text_seen = true;
                out.push(StreamEvent::TextDelta { choice, text });
            }
            StreamEvent::RefusalDelta { choice, text } => {
                self.settle(choice, out, audit);
                out.push(StreamEvent::RefusalDelta { choice, text });
            }
            StreamEvent::Finish { choice, reason } => {
                self.settle(choice, out, audit);
                let state = self.choices.entry(choice).or_default();
                let reason =
                    if reason == FinishReason::ToolUse && state.blocked > 0 && state.passed == 0 {
                        FinishReason::EndTurn
                    } else {
                        reason
                    };
                out.push(StreamEvent::Finish { choice, reason });
            }
            other => out.push(other),
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>, audit: &mut Audit) -> Result<(), HookError> {
        let choices: Vec<u32> = self.choices.keys().copied().collect();
        for choice in choices {
            self.settle(choice, out, audit);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
