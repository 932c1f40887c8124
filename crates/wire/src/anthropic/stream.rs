//! The Messages event stream: upstream SSE events -> [`StreamEvent`]s and [`StreamEvent`]s ->
//! client SSE bytes.
//!
//! # Decoding
//!
//! `message_start` -> `Start` (created 0) and `Usage` with the input side. `content_block_start`
//! of a `tool_use` -> `ToolCallStart`, numbering the message's tool calls 0, 1, 2, ... whatever
//! their block index; `text_delta` -> `TextDelta`; `input_json_delta` -> `ToolCallDelta`.
//! The structured-output tool (see [`super::Encoded::structured_output_tool`]) instead streams
//! its JSON as `TextDelta`s and its `tool_use` stop becomes `EndTurn`. `message_delta` ->
//! `Finish` then `Usage`, merged over the `message_start` usage so the last `Usage` is
//! complete. `message_stop` sets [`StreamDecoder::is_done`]. `error` -> `StreamEvent::Error`
//! (`overloaded_error` -> `UpstreamOverloaded`, `api_error` -> `UpstreamUnavailable`,
//! `rate_limit_error` -> `RateLimited`, `timeout_error` -> `UpstreamTimeout`, anything else ->
//! `UpstreamRejected`). `ping`, thinking and server-tool blocks and unknown event types are
//! skipped (Anthropic may add event types).
//!
//! # Encoding
//!
//! Each event is `event: NAME\ndata: JSON\n\n`. `message_start` is held until the event after
//! `Start`, so that an upstream `Usage` right after `Start` (Anthropic's) lands in it; it is
//! followed by one `ping`. Text and tool calls of choice 0 open content blocks with consecutive
//! indices, closing the open block before opening another (other choices are not rendered:
//! Anthropic has no `n`). Refusal text is rendered as text. After `Finish`, `message_delta` is
//! held until a `Usage` arrives (OpenAI sends usage after the finish chunk) or
//! [`StreamEncoder::finish`] is called, then `message_stop` follows. Its usage repeats the input
//! counts, as the current API does, so clients get input usage even when `message_start` had
//! none. An `Error` becomes `event: error` and ends the stream.

use serde::Serialize;
use serde_json::{Value, json};
use sluice_types::{FinishReason, StreamError, StreamEvent, Usage};

use super::blocks::WireBlock;
use super::error::{WireErrorBody, kind_of, parse_error_value};
use super::response::{
    UpstreamUsage, WireUsage, decode_stop_reason, stop_reason_str, structured_finish,
};
use crate::WireError;
use crate::json::{self, Obj};
use crate::sse::{SseEvent, write_event};

/// What an upstream content block turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// A tool call with its canonical index.
    Tool(u32),
    /// The structured-output tool: its arguments are the answer text.
    Structured,
    /// Thinking, server tools, unknown types.
    Ignored,
}

/// Turns upstream Messages events into canonical events. One per upstream stream.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    structured_output_tool: Option<String>,
    done: bool,
    usage: Option<Usage>,
    /// `(block index, kind)` of the blocks seen so far.
    blocks: Vec<(u32, Block)>,
    next_tool: u32,
    used_structured: bool,
}

impl StreamDecoder {
    /// `structured_output_tool`: [`super::Encoded::structured_output_tool`] of the request.
    pub fn new(structured_output_tool: Option<String>) -> Self {
        StreamDecoder {
            structured_output_tool,
            ..Self::default()
        }
    }

    /// Decodes one SSE event. Errors: data that is not JSON or misses required fields
    /// ([`WireError::UpstreamMalformed`]).
    pub fn decode(&mut self, ev: &SseEvent) -> Result<Vec<StreamEvent>, WireError> {
        if ev.data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let root = json::parse_body(ev.data.as_bytes()).map_err(WireError::upstream)?;
        self.decode_value(&root, ev.event.as_deref())
            .map_err(WireError::upstream)
    }

    /// Whether `message_stop` was seen: the stream ended cleanly.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn block(&self, index: u32) -> Block {
        self.blocks
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(Block::Ignored, |(_, b)| *b)
    }

    fn decode_value(
        &mut self,
        root: &Value,
        name: Option<&str>,
    ) -> Result<Vec<StreamEvent>, WireError> {
        let obj = Obj::root(root)?;
        let kind = obj.str("type")?.or(name).unwrap_or_default();
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let m = obj.req_obj("message")?;
                out.push(StreamEvent::Start {
                    id: m.str("id")?.unwrap_or_default().to_owned(),
                    model: m.str("model")?.unwrap_or_default().to_owned(),
                    created: 0,
                });
                if let Some(u) = m.get("usage") {
                    let usage = UpstreamUsage::read(u, || m.path("usage"))?.merge(None);
                    self.usage = Some(usage);
                    out.push(StreamEvent::Usage(usage));
                }
            }
            "content_block_start" => {
                let index = obj.req_u32("index")?;
                let b = obj.req_obj("content_block")?;
                let block = match b.req_str("type")? {
                    "text" => {
                        if let Some(text) = b.str("text")?
                            && !text.is_empty()
                        {
                            out.push(StreamEvent::TextDelta {
                                choice: 0,
                                text: text.to_owned(),
                            });
                        }
                        Block::Text
                    }
                    "tool_use" => {
                        let name = b.req_str("name")?;
                        // The input is normally `{}` here and streamed as deltas; a proxy that
                        // sends it whole still gets it carried.
                        let input = b
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()));
                        if self.structured_output_tool.as_deref() == Some(name) {
                            self.used_structured = true;
                            if let Some(input) = input {
                                out.push(StreamEvent::TextDelta {
                                    choice: 0,
                                    text: input.to_string(),
                                });
                            }
                            Block::Structured
                        } else {
                            let tool = self.next_tool;
                            self.next_tool += 1;
                            out.push(StreamEvent::ToolCallStart {
                                choice: 0,
                                index: tool,
                                id: b.req_str("id")?.to_owned(),
                                name: name.to_owned(),
                            });
                            if let Some(input) = input {
                                out.push(StreamEvent::ToolCallDelta {
                                    choice: 0,
                                    index: tool,
                                    arguments: input.to_string(),
                                });
                            }
                            Block::Tool(tool)
                        }
                    }
                    _ => Block::Ignored,
                };
                self.blocks.push((index, block));
            }
            "content_block_delta" => {
                let block = self.block(obj.req_u32("index")?);
                let delta = obj.req_obj("delta")?;
                match (block, delta.req_str("type")?) {
                    (Block::Text, "text_delta") => {
                        let text = delta.req_str("text")?.to_owned();
                        out.push(StreamEvent::TextDelta { choice: 0, text });
                    }
                    (Block::Tool(index), "input_json_delta") => {
                        let arguments = delta.req_str("partial_json")?;
                        if !arguments.is_empty() {
                            let arguments = arguments.to_owned();
                            out.push(StreamEvent::ToolCallDelta {
                                choice: 0,
                                index,
                                arguments,
                            });
                        }
                    }
                    (Block::Structured, "input_json_delta") => {
                        let text = delta.req_str("partial_json")?;
                        if !text.is_empty() {
                            out.push(StreamEvent::TextDelta {
                                choice: 0,
                                text: text.to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(delta) = obj.obj("delta")?
                    && let Some(reason) = delta.str("stop_reason")?
                {
                    let reason = decode_stop_reason(reason, delta.str("stop_sequence")?);
                    let reason = structured_finish(reason, self.used_structured);
                    out.push(StreamEvent::Finish { choice: 0, reason });
                }
                if let Some(u) = obj.get("usage") {
                    let usage = UpstreamUsage::read(u, || obj.path("usage"))?.merge(self.usage);
                    self.usage = Some(usage);
                    out.push(StreamEvent::Usage(usage));
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let err = parse_error_value(root);
                let message = err.as_ref().map(|e| e.message.clone()).unwrap_or_default();
                let kind = kind_of(err.as_ref().and_then(|e| e.error_type.as_deref()));
                out.push(StreamEvent::Error(StreamError { kind, message }));
            }
            _ => {}
        }
        Ok(out)
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent<'a> {
    MessageStart {
        message: WireMessageStart<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: WireBlock<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: u32,
        delta: WireDelta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: WireMessageDelta<'a>,
        usage: WireUsage,
    },
    MessageStop,
}

impl WireEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            WireEvent::MessageStart { .. } => "message_start",
            WireEvent::ContentBlockStart { .. } => "content_block_start",
            WireEvent::Ping => "ping",
            WireEvent::ContentBlockDelta { .. } => "content_block_delta",
            WireEvent::ContentBlockStop { .. } => "content_block_stop",
            WireEvent::MessageDelta { .. } => "message_delta",
            WireEvent::MessageStop => "message_stop",
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        write_event(out, Some(self.name()), &json::to_vec(self));
    }
}

#[derive(Serialize)]
struct WireMessageStart<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: WireUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct WireMessageDelta<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

/// The content block currently open on the client stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u32),
    Tool(u32),
}

impl Open {
    fn index(self) -> u32 {
        match self {
            Open::Text(i) | Open::Tool(i) => i,
        }
    }
}

/// Renders canonical events as a client Messages stream. One per client stream.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    id: String,
    model: String,
    /// `message_start` was sent. It waits for the event after `Start`.
    message_started: bool,
    open: Option<Open>,
    next_block: u32,
    /// `(tool index, block index)` of the tool calls opened so far.
    tool_blocks: Vec<(u32, u32)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// `message_stop` or `error` was sent: nothing more goes out.
    ended: bool,
}

impl StreamEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Zero or more complete SSE events for one canonical event.
    pub fn encode(&mut self, ev: &StreamEvent) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        match ev {
            StreamEvent::Start { id, model, .. } => {
                self.id = super::response::message_id(id).into_owned();
                self.model.clone_from(model);
            }
            StreamEvent::Usage(usage) => {
                self.usage = Some(*usage);
                self.ensure_message_start(&mut out);
                if self.finish.is_some() {
                    self.end(&mut out);
                }
            }
            StreamEvent::Error(err) => {
                self.ended = true;
                let body = WireErrorBody::new(err.kind, &err.message);
                write_event(&mut out, Some("error"), &json::to_vec(&body));
            }
            // Anthropic has a single choice.
            StreamEvent::TextDelta { choice, .. }
            | StreamEvent::RefusalDelta { choice, .. }
            | StreamEvent::ToolCallStart { choice, .. }
            | StreamEvent::ToolCallDelta { choice, .. }
            | StreamEvent::Finish { choice, .. }
                if *choice != 0 => {}
            StreamEvent::TextDelta { text, .. } | StreamEvent::RefusalDelta { text, .. } => {
                self.ensure_message_start(&mut out);
                let index = match self.open {
                    Some(Open::Text(index)) => index,
                    _ => self.open_block(
                        Open::Text,
                        WireBlock::Text {
                            text: "",
                            cache_control: None,
                        },
                        &mut out,
                    ),
                };
                WireEvent::ContentBlockDelta {
                    index,
                    delta: WireDelta::TextDelta { text },
                }
                .write(&mut out);
            }
            StreamEvent::ToolCallStart {
                index: tool,
                id,
                name,
                ..
            } => {
                self.ensure_message_start(&mut out);
                let block = WireBlock::ToolUse {
                    id,
                    name,
                    input: json!({}),
                };
                let index = self.open_block(Open::Tool, block, &mut out);
                self.tool_blocks.push((*tool, index));
            }
            StreamEvent::ToolCallDelta {
                index: tool,
                arguments,
                ..
            } => {
                self.ensure_message_start(&mut out);
                // Fragments of a call whose block has closed (interleaved calls, which OpenAI
                // does not produce) still go to that call's block index.
                let block = self
                    .tool_blocks
                    .iter()
                    .find(|(t, _)| t == tool)
                    .map(|(_, b)| *b);
                if let Some(index) = block
                    && !arguments.is_empty()
                {
                    let delta = WireDelta::InputJsonDelta {
                        partial_json: arguments,
                    };
                    WireEvent::ContentBlockDelta { index, delta }.write(&mut out);
                }
            }
            StreamEvent::Finish { reason, .. } => {
                self.ensure_message_start(&mut out);
                self.close_block(&mut out);
                self.finish = Some(reason.clone());
            }
        }
        out
    }

    /// Ends the stream: `message_start` if never sent, the open block's stop, `message_delta`
    /// (stop reason `end_turn` if no `Finish` was seen) and `message_stop`. Empty after an error
    /// or a previous end.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.ended {
            self.ensure_message_start(&mut out);
            self.end(&mut out);
        }
        out
    }

    fn ensure_message_start(&mut self, out: &mut Vec<u8>) {
        if self.message_started {
            return;
        }
        self.message_started = true;
        let message = WireMessageStart {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: [],
            stop_reason: None,
            stop_sequence: None,
            usage: WireUsage::from(&self.usage.unwrap_or_default()),
        };
        WireEvent::MessageStart { message }.write(out);
        WireEvent::Ping.write(out);
    }

    fn open_block(
        &mut self,
        open: fn(u32) -> Open,
        block: WireBlock<'_>,
        out: &mut Vec<u8>,
    ) -> u32 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some(open(index));
        WireEvent::ContentBlockStart {
            index,
            content_block: block,
        }
        .write(out);
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(open) = self.open.take() {
            WireEvent::ContentBlockStop {
                index: open.index(),
            }
            .write(out);
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.close_block(out);
        let (stop_reason, stop_sequence) = self
            .finish
            .as_ref()
            .map_or(("end_turn", None), stop_reason_str);
        let delta = WireMessageDelta {
            stop_reason,
            stop_sequence,
        };
        let usage = WireUsage::from(&self.usage.unwrap_or_default());
        WireEvent::MessageDelta { delta, usage }.write(out);
        WireEvent::MessageStop.write(out);
        self.ended = true;
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
