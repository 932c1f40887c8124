//! `chat.completion.chunk` streams: upstream SSE events -> [`StreamEvent`]s and
//! [`StreamEvent`]s -> client SSE bytes.
//!
//! # Decoding
//!
//! `Start` is emitted once, from the first chunk. Per choice: `delta.content` ->
//! `TextDelta`, `delta.refusal` -> `RefusalDelta`, a tool call index seen for the first time ->
//! `ToolCallStart` (its `id` and `function.name`, empty when a server omits them), any
//! non-empty `function.arguments` -> `ToolCallDelta` (a server that sends a whole call in one
//! delta yields both), `finish_reason` -> `Finish`. A `usage` object (the `choices: []` chunk
//! of `include_usage`, or a compatible server's last chunk) -> `Usage`. `data: [DONE]` sets
//! [`StreamDecoder::is_done`]; a chunk carrying an `error` (or vLLM's `"object":"error"`) ->
//! `StreamEvent::Error`. Streamed `logprobs` have no canonical slot and are not carried.
//!
//! # Encoding
//!
//! Every chunk is `data: {"id","object":"chat.completion.chunk","created","model","choices":
//! [{"index","delta","logprobs":null,"finish_reason"}]}`. The first chunk of a choice is
//! `delta: {"role":"assistant","content":""}` (for choice 0 it is sent on `Start`). Tool calls
//! open with `{index,id,type:"function",function:{name,arguments:""}}` and continue with
//! argument fragments. Usage is held until [`StreamEncoder::finish`], which sends the usage
//! chunk (`"choices":[]`) when the client asked for it, then `data: [DONE]`.
//!
//! A `StreamEvent::Error` is sent as `data: {"error":{...}}` and ends the stream **without**
//! `[DONE]`: OpenAI's SDKs raise on a chunk with an `error` key, and a missing `[DONE]` keeps
//! any client from mistaking the stream for a clean success.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_types::{ErrorKind, StreamError, StreamEvent, Usage};

use super::error::{encode_error, parse_error_value};
use super::response::{
    StopReason, UpstreamUsage, WireUsage, decode_finish_reason, finish_reason_str,
};
use crate::WireError;
use crate::json;
use crate::sse::{SseEvent, write_event};

/// Turns upstream chunks into canonical events. One per upstream stream.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    done: bool,
    /// `(choice, tool index)` pairs whose `ToolCallStart` was emitted.
    tools_started: Vec<(u32, u32)>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one SSE event. Errors: a chunk that is not JSON or not a chunk
    /// ([`WireError::UpstreamMalformed`]).
    pub fn decode(&mut self, ev: &SseEvent) -> Result<Vec<StreamEvent>, WireError> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        if data.is_empty() {
            // An empty `data:` line is a keep-alive for some compatible servers.
            return Ok(Vec::new());
        }
        match serde_json::from_str::<UpstreamChunk>(data) {
            Ok(chunk) if !chunk.is_error() => Ok(self.decode_chunk(chunk)),
            // An error chunk, or not a chunk at all: read as a tree to tell which.
            _ => self.decode_irregular(data).map_err(WireError::upstream),
        }
    }

    /// Whether `data: [DONE]` was seen: the stream ended cleanly.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// An error chunk (`error`, or vLLM's `"object":"error"`) becomes a `StreamEvent::Error`;
    /// anything else that is not a chunk is reported with the path of the field at fault.
    fn decode_irregular(&mut self, data: &str) -> Result<Vec<StreamEvent>, WireError> {
        let root = json::parse_body(data.as_bytes())?;
        let is_error = root.get("error").is_some_and(|e| !e.is_null())
            || root.get("object").and_then(Value::as_str) == Some("error");
        if is_error {
            return Ok(vec![StreamEvent::Error(stream_error(parse_error_value(
                &root,
            )))]);
        }
        let chunk: UpstreamChunk = json::from_slice_at_path(data.as_bytes())?;
        Ok(self.decode_chunk(chunk))
    }

    fn decode_chunk(&mut self, chunk: UpstreamChunk) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id.unwrap_or_default().into_owned(),
                model: chunk.model.unwrap_or_default().into_owned(),
                created: chunk.created.unwrap_or(0),
            });
        }
        for (position, choice) in chunk.choices.unwrap_or_default().into_iter().enumerate() {
            self.decode_choice(choice, position, &mut out);
        }
        if let Some(usage) = chunk.usage {
            out.push(StreamEvent::Usage(usage.into_canonical()));
        }
        out
    }

    fn decode_choice(
        &mut self,
        upstream: UpstreamChunkChoice<'_>,
        position: usize,
        out: &mut Vec<StreamEvent>,
    ) {
        let choice = upstream.index.unwrap_or_else(|| to_u32(position));
        if let Some(delta) = upstream.delta {
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::TextDelta { choice, text });
            }
            if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::RefusalDelta { choice, text });
            }
            for (j, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let tool = call.index.unwrap_or_else(|| to_u32(j));
                let function = call.function.unwrap_or_default();
                if !self.tools_started.contains(&(choice, tool)) {
                    self.tools_started.push((choice, tool));
                    out.push(StreamEvent::ToolCallStart {
                        choice,
                        index: tool,
                        id: call.id.unwrap_or_default(),
                        name: function.name.unwrap_or_default(),
                    });
                }
                if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
                    out.push(StreamEvent::ToolCallDelta {
                        choice,
                        index: tool,
                        arguments,
                    });
                }
            }
        }
        if let Some(reason) = upstream.finish_reason {
            out.push(StreamEvent::Finish {
                choice,
                reason: decode_finish_reason(&reason, StopReason::sequence(upstream.stop_reason)),
            });
        }
    }
}

// A chunk as it is read: typed, one pass, unknown fields (`logprobs`, `system_fingerprint`,
// ...) skipped; every field may be absent or `null`.

#[derive(Deserialize)]
struct UpstreamChunk<'a> {
    // Borrowed: only the first chunk's are kept, so the rest cost no allocation.
    #[serde(borrow, default, deserialize_with = "borrowed")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    model: Option<Cow<'a, str>>,
    created: Option<i64>,
    object: Option<ChunkObject>,
    error: Option<IgnoredAny>,
    #[serde(borrow)]
    choices: Option<Vec<UpstreamChunkChoice<'a>>>,
    usage: Option<UpstreamUsage>,
}

impl UpstreamChunk<'_> {
    fn is_error(&self) -> bool {
        self.error.is_some() || matches!(self.object, Some(ChunkObject::Error))
    }
}

/// `object`: only vLLM's `error` matters (`chat.completion.chunk` and anything else do not).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChunkObject {
    Error,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct UpstreamChunkChoice<'a> {
    index: Option<u32>,
    delta: Option<UpstreamDelta>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    finish_reason: Option<Cow<'a, str>>,
    stop_reason: Option<StopReason>,
}

#[derive(Deserialize)]
struct UpstreamDelta {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<UpstreamToolCallDelta>>,
}

#[derive(Deserialize)]
struct UpstreamToolCallDelta {
    index: Option<u32>,
    id: Option<String>,
    function: Option<UpstreamFunctionDelta>,
}

#[derive(Deserialize, Default)]
struct UpstreamFunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

/// An optional string borrowed from the chunk when it has no escapes (serde borrows a `Cow`
/// only as a field of its own, not inside an `Option`).
fn borrowed<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text>::deserialize(deserializer)?.map(|text| text.0))
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Classifies an error chunk by its `type` / `code`.
fn stream_error(err: Option<crate::UpstreamError>) -> StreamError {
    let Some(err) = err else {
        return StreamError {
            kind: ErrorKind::UpstreamUnavailable,
            message: "upstream stream failed".into(),
        };
    };
    let is = |v: &Option<String>, names: &[&str]| v.as_deref().is_some_and(|s| names.contains(&s));
    let kind = if is(&err.code, &["rate_limit_exceeded"])
        || is(
            &err.error_type,
            &[
                "requests",
                "tokens",
                "rate_limit_error",
                "rate_limit_exceeded",
            ],
        ) {
        ErrorKind::RateLimited
    } else if is(&err.error_type, &["invalid_request_error"]) {
        ErrorKind::UpstreamRejected
    } else {
        ErrorKind::UpstreamUnavailable
    };
    StreamError {
        kind,
        message: err.message,
    }
}

#[derive(Serialize)]
struct WireChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Vec<WireChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<WireUsage>,
}

#[derive(Serialize)]
struct WireChunkChoice<'a> {
    index: u32,
    delta: WireDelta<'a>,
    logprobs: Option<&'a Value>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct WireDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCallChunk<'a>>,
}

#[derive(Serialize)]
struct WireToolCallChunk<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: WireFunctionChunk<'a>,
}

#[derive(Serialize)]
struct WireFunctionChunk<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Renders canonical events as a client `chat.completion.chunk` stream. One per client stream.
#[derive(Debug)]
pub struct StreamEncoder {
    include_usage: bool,
    id: String,
    model: String,
    created: i64,
    /// Choices whose opening role chunk was sent.
    opened: Vec<u32>,
    usage: Option<Usage>,
    /// An error was sent or `finish` ran: nothing more goes out.
    ended: bool,
}

impl StreamEncoder {
    /// `include_usage`: the client's `stream_options.include_usage`.
    pub fn new(include_usage: bool) -> Self {
        StreamEncoder {
            include_usage,
            id: String::new(),
            model: String::new(),
            created: 0,
            opened: Vec::new(),
            usage: None,
            ended: false,
        }
    }

    /// Zero or more complete SSE events for one canonical event.
    pub fn encode(&mut self, ev: &StreamEvent) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        match ev {
            StreamEvent::Start { id, model, created } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                self.created = *created;
                self.open(0, &mut out);
            }
            StreamEvent::TextDelta { choice, text } => {
                let delta = WireDelta {
                    content: Some(text),
                    ..WireDelta::default()
                };
                self.delta(*choice, delta, &mut out);
            }
            StreamEvent::RefusalDelta { choice, text } => {
                let delta = WireDelta {
                    refusal: Some(text),
                    ..WireDelta::default()
                };
                self.delta(*choice, delta, &mut out);
            }
            StreamEvent::ToolCallStart {
                choice,
                index,
                id,
                name,
            } => {
                let call = WireToolCallChunk {
                    index: *index,
                    id: Some(id),
                    kind: Some("function"),
                    function: WireFunctionChunk {
                        name: Some(name),
                        arguments: "",
                    },
                };
                let delta = WireDelta {
                    tool_calls: vec![call],
                    ..WireDelta::default()
                };
                self.delta(*choice, delta, &mut out);
            }
            StreamEvent::ToolCallDelta {
                choice,
                index,
                arguments,
            } => {
                let call = WireToolCallChunk {
                    index: *index,
                    id: None,
                    kind: None,
                    function: WireFunctionChunk {
                        name: None,
                        arguments,
                    },
                };
                let delta = WireDelta {
                    tool_calls: vec![call],
                    ..WireDelta::default()
                };
                self.delta(*choice, delta, &mut out);
            }
            StreamEvent::Finish { choice, reason } => {
                self.open(*choice, &mut out);
                let finish = Some(finish_reason_str(reason));
                self.chunk(*choice, WireDelta::default(), finish, &mut out);
            }
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Error(err) => {
                self.ended = true;
                write_event(&mut out, None, &encode_error(err.kind, &err.message, None));
            }
        }
        out
    }

    /// Ends the stream: the usage chunk (when the client asked for usage and some was seen),
    /// then `data: [DONE]`. Empty after an error or a previous `finish`.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.ended = true;
        if self.include_usage
            && let Some(usage) = &self.usage
        {
            let chunk = WireChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: Vec::new(),
                usage: Some(WireUsage::from(usage)),
            };
            write_event(&mut out, None, &json::to_vec(&chunk));
        }
        write_event(&mut out, None, b"[DONE]");
        out
    }

    fn open(&mut self, choice: u32, out: &mut Vec<u8>) {
        if self.opened.contains(&choice) {
            return;
        }
        self.opened.push(choice);
        let delta = WireDelta {
            role: Some("assistant"),
            content: Some(""),
            ..WireDelta::default()
        };
        self.chunk(choice, delta, None, out);
    }

    fn delta(&mut self, choice: u32, delta: WireDelta<'_>, out: &mut Vec<u8>) {
        self.open(choice, out);
        self.chunk(choice, delta, None, out);
    }

    fn chunk(
        &self,
        choice: u32,
        delta: WireDelta<'_>,
        finish_reason: Option<&'static str>,
        out: &mut Vec<u8>,
    ) {
        let chunk = WireChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: vec![WireChunkChoice {
                index: choice,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: None,
        };
        write_event(out, None, &json::to_vec(&chunk));
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
