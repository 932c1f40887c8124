//! Structured output that holds: every answer to a request that asked for structure
//! (`response_format: json_schema` or `json_object`, or a forced tool) is checked at the gateway
//! against what was asked, whatever the target did with the request (native schema, forced
//! tool, JSON mode or an instruction: `sluice_providers::structured`).
//!
//! - [`Structured::of`] compiles the schema once per request, at admission; a schema that does
//!   not compile is the client's error, before anything is sent.
//! - Whole answers ([`Structured::vet`]): trivial damage is repaired (code fences, text before
//!   the first `{`/`[` and after its matching close) and the answer text replaced by the clean
//!   JSON; an answer still invalid fails its attempt with `schema_violation`, a condition the
//!   route's `fallback_on` names by default, so the next attempt (a retry or a fallback) runs.
//! - Streams ([`StreamCheck`]): text before the JSON value and after its close is dropped as it
//!   streams (nothing is buffered), the value is checked at the end, and an invalid one ends
//!   the stream with an error event instead of its terminal success event. Bytes already sent
//!   cannot be taken back: the client may hold part of an invalid value, never a success.
//!
//! Where the checks run: [`crate::dispatch`] (each attempt's whole answer), [`crate::stream`]
//! (a stream's end), [`crate::chat`] (the record's `schema_valid`).

use std::collections::BTreeMap;

use serde_json::Value;
use sluice_types::record::SchemaCheck;
use sluice_types::{ChatRequest, ChatResponse, Part, ResponseFormat, ToolChoice};

/// A request's schema that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the JSON schema of {what} is not a valid JSON Schema: {detail}")]
pub struct SchemaError {
    /// `response_format` or `the tool `NAME``.
    pub what: String,
    pub detail: String,
}

/// What a structured answer must be.
#[derive(Debug)]
enum Target {
    /// `response_format: json_schema`: each choice's text is JSON valid for the schema.
    Schema(jsonschema::Validator),
    /// `response_format: json_object`: each choice's text is a JSON object.
    Object,
    /// A forced tool: each choice calls it, with arguments valid for its parameters.
    Tool {
        name: String,
        validator: jsonschema::Validator,
    },
}

/// The structure one request asked for, compiled once.
#[derive(Debug)]
pub struct Structured {
    target: Target,
}

/// Why an answer does not hold its structure; a message about the model's output only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

/// Characters of a validation message kept at most (it may quote the model's output).
const DETAIL_CHARS: usize = 200;

fn bounded(message: String) -> String {
    if message.chars().count() <= DETAIL_CHARS {
        return message;
    }
    let mut cut: String = message.chars().take(DETAIL_CHARS).collect();
    cut.push('…');
    cut
}

impl Structured {
    /// The structure `req` asks for: its forced tool (`tool_choice` naming one of its tools),
    /// else its `response_format` (`json_schema`, `json_object`); `None` when it asks for none.
    pub fn of(req: &ChatRequest) -> Result<Option<Structured>, SchemaError> {
        if let Some(ToolChoice::Named(name)) = &req.tool_choice
            && let Some(tool) = req.tools.iter().find(|t| &t.name == name)
        {
            let validator =
                jsonschema::validator_for(&tool.parameters).map_err(|e| SchemaError {
                    what: format!("the tool `{name}`"),
                    detail: bounded(e.to_string()),
                })?;
            return Ok(Some(Structured {
                target: Target::Tool {
                    name: name.clone(),
                    validator,
                },
            }));
        }
        let target = match &req.response_format {
            None | Some(ResponseFormat::Text) => return Ok(None),
            Some(ResponseFormat::JsonObject) => Target::Object,
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                Target::Schema(jsonschema::validator_for(schema).map_err(|e| SchemaError {
                    what: "response_format".to_owned(),
                    detail: bounded(e.to_string()),
                })?)
            }
        };
        Ok(Some(Structured { target }))
    }

    /// Whether the answer's text is checked (else: a forced tool's arguments).
    fn checks_text(&self) -> bool {
        !matches!(self.target, Target::Tool { .. })
    }

    /// Checks one JSON text: valid as it is, valid once repaired (the clean text), or why not.
    fn check_json(&self, text: &str) -> Result<Option<String>, Violation> {
        let first = match serde_json::from_str::<Value>(text) {
            Ok(value) => match self.check_value(&value) {
                Ok(()) => return Ok(None),
                Err(v) => v,
            },
            Err(e) => Violation(format!("the answer is not JSON ({e})")),
        };
        let Some(clean) = repair(text) else {
            return Err(first);
        };
        if clean == text {
            return Err(first);
        }
        match serde_json::from_str::<Value>(clean) {
            Ok(value) => self.check_value(&value).map(|()| Some(clean.to_owned())),
            Err(_) => Err(first),
        }
    }

    fn check_value(&self, value: &Value) -> Result<(), Violation> {
        match &self.target {
            Target::Object if value.is_object() => Ok(()),
            Target::Object => Err(Violation("the answer is not a JSON object".to_owned())),
            Target::Schema(validator) | Target::Tool { validator, .. } => {
                validator.validate(value).map_err(|e| {
                    let at = e.instance_path().to_string();
                    let at = if at.is_empty() { "/".to_owned() } else { at };
                    Violation(bounded(format!("at {at}: {e}")))
                })
            }
        }
    }

    /// Checks a whole answer, repairing it in place: every choice must hold the structure.
    pub fn vet(&self, response: &mut ChatResponse) -> Result<SchemaCheck, Violation> {
        if response.choices.is_empty() {
            return Err(Violation("the answer has no choices".to_owned()));
        }
        let mut repaired = false;
        for choice in &mut response.choices {
            match &self.target {
                Target::Tool { name, .. } => {
                    let mut called = false;
                    for part in &mut choice.parts {
                        if let Part::ToolCall(call) = part
                            && &call.name == name
                        {
                            called = true;
                            if let Some(clean) = self.check_json(&call.arguments)? {
                                call.arguments = clean;
                                repaired = true;
                            }
                        }
                    }
                    if !called {
                        return Err(Violation(format!(
                            "the answer does not call the forced tool `{name}`"
                        )));
                    }
                }
                Target::Schema(_) | Target::Object => {
                    if choice.refusal.is_some() {
                        return Err(Violation("the model refused to answer".to_owned()));
                    }
                    let text = text_of(&choice.parts);
                    if let Some(clean) = self.check_json(&text)? {
                        // The clean JSON replaces the text parts, where the first one was.
                        let at = choice
                            .parts
                            .iter()
                            .position(|p| matches!(p, Part::Text { .. }))
                            .unwrap_or(0);
                        choice.parts.retain(|p| !matches!(p, Part::Text { .. }));
                        choice
                            .parts
                            .insert(at.min(choice.parts.len()), Part::text(clean));
                        repaired = true;
                    }
                }
            }
        }
        Ok(if repaired {
            SchemaCheck::Repaired
        } else {
            SchemaCheck::Valid
        })
    }

    /// Whether an answer holds the structure as it is (no repair): the record's
    /// `schema_valid`.
    pub fn holds(&self, response: &ChatResponse) -> bool {
        let mut copy = response.clone();
        self.vet(&mut copy) == Ok(SchemaCheck::Valid)
    }

    /// Whether a streamed answer's text holds the structure once repaired (drills).
    pub fn holds_text(&self, text: &str) -> bool {
        self.checks_text() && self.check_json(text).is_ok()
    }
}

fn text_of(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|part| match part {
            Part::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The JSON value inside `text`: from the first `{` or `[` to its matching close, strings and
/// escapes respected. Removes code fences and prose around the value; `None` when no value
/// opens, or the one that opens never closes.
pub fn repair(text: &str) -> Option<&str> {
    let start = text.find(['{', '['])?;
    let mut scanner = Scanner::default();
    for (offset, c) in text[start..].char_indices() {
        if scanner.step(c) == Step::Closed {
            return Some(&text[start..start + offset + c.len_utf8()]);
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Outside the value (before it opens, or after it closed).
    Outside,
    /// Part of the value.
    Inside,
    /// The character that closed the value.
    Closed,
}

/// Follows one JSON value character by character: where it opens and where it closes.
#[derive(Debug, Default, Clone)]
struct Scanner {
    depth: u32,
    opened: bool,
    closed: bool,
    in_string: bool,
    escaped: bool,
}

impl Scanner {
    fn step(&mut self, c: char) -> Step {
        if self.closed {
            return Step::Outside;
        }
        if !self.opened {
            if c != '{' && c != '[' {
                return Step::Outside;
            }
            self.opened = true;
        }
        if self.in_string {
            match (self.escaped, c) {
                (true, _) => self.escaped = false,
                (false, '\\') => self.escaped = true,
                (false, '"') => self.in_string = false,
                _ => {}
            }
            return Step::Inside;
        }
        match c {
            '"' => self.in_string = true,
            '{' | '[' => self.depth += 1,
            '}' | ']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 {
                    self.closed = true;
                    return Step::Closed;
                }
            }
            _ => {}
        }
        Step::Inside
    }
}

/// One choice's text as the client gets it: the JSON value only.
#[derive(Debug, Default)]
struct ChoiceText {
    scanner: Scanner,
    /// What was passed on.
    text: String,
    /// Something other than whitespace was dropped (a fence, prose).
    dropped: bool,
}

/// A structured stream's check: repairs text deltas as they pass, validates at the end.
#[derive(Debug)]
pub struct StreamCheck {
    structured: std::sync::Arc<Structured>,
    choices: BTreeMap<u32, ChoiceText>,
    /// Forced tool: the arguments of each of its calls, by (choice, index).
    calls: BTreeMap<(u32, u32), String>,
    /// Choices that called the forced tool.
    called: Vec<u32>,
    refused: bool,
}

impl StreamCheck {
    pub fn new(structured: std::sync::Arc<Structured>) -> StreamCheck {
        StreamCheck {
            structured,
            choices: BTreeMap::new(),
            calls: BTreeMap::new(),
            called: Vec::new(),
            refused: false,
        }
    }

    /// Sees one upstream event; rewrites a text delta to the part of it inside the JSON value.
    /// Returns whether the event changed.
    pub fn observe(&mut self, event: &mut sluice_types::StreamEvent) -> bool {
        use sluice_types::StreamEvent;
        match event {
            StreamEvent::TextDelta { choice, text } if self.structured.checks_text() => {
                let state = self.choices.entry(*choice).or_default();
                let mut kept = String::with_capacity(text.len());
                for c in text.chars() {
                    match state.scanner.step(c) {
                        Step::Inside | Step::Closed => kept.push(c),
                        Step::Outside => state.dropped |= !c.is_whitespace(),
                    }
                }
                state.text.push_str(&kept);
                let changed = kept.len() != text.len();
                *text = kept;
                changed
            }
            StreamEvent::RefusalDelta { .. } => {
                self.refused = true;
                false
            }
            StreamEvent::ToolCallStart {
                choice,
                index,
                name,
                ..
            } => {
                if let Target::Tool { name: forced, .. } = &self.structured.target
                    && forced == name
                {
                    self.calls.insert((*choice, *index), String::new());
                    self.called.push(*choice);
                }
                false
            }
            StreamEvent::ToolCallDelta {
                choice,
                index,
                arguments,
            } => {
                if let Some(args) = self.calls.get_mut(&(*choice, *index)) {
                    args.push_str(arguments);
                }
                false
            }
            _ => false,
        }
    }

    /// The stream ended: whether what the client got holds the structure.
    pub fn finish(&self) -> Result<SchemaCheck, Violation> {
        match &self.structured.target {
            Target::Tool { name, .. } => {
                if self.called.is_empty() {
                    return Err(Violation(format!(
                        "the answer does not call the forced tool `{name}`"
                    )));
                }
                for args in self.calls.values() {
                    // Arguments are checked as sent: they were passed on unchanged.
                    if self.structured.check_json(args)?.is_some() {
                        return Err(Violation(
                            "the forced tool's arguments are not JSON as sent".to_owned(),
                        ));
                    }
                }
                Ok(SchemaCheck::Valid)
            }
            Target::Schema(_) | Target::Object => {
                if self.refused {
                    return Err(Violation("the model refused to answer".to_owned()));
                }
                if self.choices.is_empty() {
                    return Err(Violation("the answer has no JSON value".to_owned()));
                }
                let mut repaired = false;
                for state in self.choices.values() {
                    if !state.scanner.closed {
                        let why = if state.scanner.opened {
                            "the answer's JSON value never closes"
                        } else {
                            "the answer has no JSON value"
                        };
                        return Err(Violation(why.to_owned()));
                    }
                    let value: Value = serde_json::from_str(&state.text)
                        .map_err(|e| Violation(format!("the answer is not JSON ({e})")))?;
                    self.structured.check_value(&value)?;
                    repaired |= state.dropped;
                }
                Ok(if repaired {
                    SchemaCheck::Repaired
                } else {
                    SchemaCheck::Valid
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
