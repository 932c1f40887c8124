//! `message` bodies: upstream body -> [`ChatResponse`] and [`ChatResponse`] -> client body.
//!
//! # Decoding
//!
//! `text` blocks -> text parts (citations are not carried), `tool_use` -> tool calls with
//! `input` as compact JSON text, except the structured-output tool (see
//! [`super::Encoded::structured_output_tool`]) whose `input` becomes a text part, turning a
//! `tool_use` stop into `EndTurn`. `thinking`, `redacted_thinking` and server-tool blocks have
//! no canonical slot and are skipped. Stop reasons: `end_turn`, `max_tokens`,
//! `stop_sequence` (with the sequence), `tool_use`, `refusal` -> `ContentFilter`, anything
//! else (`pause_turn`, ...) -> `Other`. Usage: canonical `input_tokens` is `input_tokens +
//! cache_read_input_tokens + cache_creation_input_tokens`, `cached_input_tokens` the cache
//! reads and `cache_write_tokens` the cache writes. Anthropic has no `created`: it is 0 and the
//! caller stamps it.
//!
//! # Encoding
//!
//! Only the first choice is rendered (Anthropic has no `n`, so an Anthropic client never gets
//! more). Tool-call arguments that are not a JSON object go out as `input: {}`. An OpenAI
//! `refusal` becomes a text block with stop reason `refusal`. Usage is the inverse of decoding
//! (`input_tokens = input - cached - cache_write`); a reason Anthropic does not know maps to
//! `end_turn`. An id that is not Anthropic-shaped (`chatcmpl-...` from an OpenAI-dialect
//! upstream) becomes `msg_` plus its letters and digits (see [`message_id`]), so clients that
//! check or store Anthropic ids see one; the same id is used by the stream encoder.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_types::{ChatResponse, Choice, FinishReason, Part, ToolCall, Usage};

use super::blocks::WireBlock;
use crate::WireError;
use crate::json;

/// Decodes an upstream `message` body. Same as [`decode_chat_response_with`] without a
/// structured-output tool.
pub fn decode_chat_response(body: &[u8]) -> Result<ChatResponse, WireError> {
    decode_chat_response_with(body, None)
}

/// Decodes an upstream `message` body, turning a call of `structured_output_tool` into text.
///
/// Errors: [`WireError::UpstreamMalformed`] wrapping the field-level cause.
pub fn decode_chat_response_with(
    body: &[u8],
    structured_output_tool: Option<&str>,
) -> Result<ChatResponse, WireError> {
    decode(body, structured_output_tool).map_err(WireError::upstream)
}

fn decode(body: &[u8], structured: Option<&str>) -> Result<ChatResponse, WireError> {
    let message: UpstreamMessage = json::from_slice_at_path(body)?;
    let mut parts = Vec::new();
    let mut used_structured = false;
    for (i, block) in message.content.into_iter().enumerate() {
        let required = |field: Option<String>, key: &str| {
            field.ok_or_else(|| WireError::MissingField {
                path: format!("content[{i}].{key}"),
            })
        };
        match block.kind {
            BlockKind::Text => parts.push(Part::text(required(block.text, "text")?)),
            BlockKind::ToolUse => {
                let name = required(block.name, "name")?;
                let input = block
                    .input
                    .map_or_else(|| "{}".to_owned(), |input| input.to_string());
                if structured == Some(name.as_str()) {
                    used_structured = true;
                    parts.push(Part::text(input));
                } else {
                    parts.push(Part::ToolCall(ToolCall {
                        id: required(block.id, "id")?,
                        name,
                        arguments: input,
                    }));
                }
            }
            BlockKind::Other => {}
        }
    }
    let finish_reason = message
        .stop_reason
        .map(|r| decode_stop_reason(&r, message.stop_sequence.as_deref()))
        .map(|r| structured_finish(r, used_structured));
    Ok(ChatResponse {
        id: message.id.unwrap_or_default(),
        model: message.model.unwrap_or_default(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            parts,
            refusal: None,
            finish_reason,
            logprobs: None,
        }],
        usage: message.usage.map(|u| u.merge(None)),
        system_fingerprint: None,
    })
}

// The body as it is read: typed, one pass, unknown fields skipped; everything but `content`
// and each block's `type` may be absent or `null`.

#[derive(Deserialize)]
struct UpstreamMessage {
    id: Option<String>,
    model: Option<String>,
    content: Vec<UpstreamBlock>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    usage: Option<UpstreamUsage>,
}

#[derive(Deserialize)]
struct UpstreamBlock {
    #[serde(rename = "type")]
    kind: BlockKind,
    text: Option<String>,
    id: Option<String>,
    name: Option<String>,
    input: Option<Value>,
}

/// Block types with a canonical slot; `thinking`, server tools and the like are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum BlockKind {
    Text,
    ToolUse,
    #[serde(other)]
    Other,
}

/// An Anthropic `usage` object (also in stream events).
#[derive(Deserialize)]
pub(super) struct UpstreamUsage {
    input_tokens: Option<u32>,
    cache_read_input_tokens: Option<u32>,
    cache_creation_input_tokens: Option<u32>,
    output_tokens: Option<u32>,
}

impl UpstreamUsage {
    /// Reads a `usage` found in a stream event; an error names `path`.
    pub(super) fn read(usage: &Value, path: impl FnOnce() -> String) -> Result<Self, WireError> {
        UpstreamUsage::deserialize(usage).map_err(|e| WireError::InvalidShape {
            path: path(),
            detail: e.to_string(),
        })
    }

    /// The usage, merged over `base` (stream `message_delta` carries only the counts that
    /// changed, older API versions only `output_tokens`).
    pub(super) fn merge(self, base: Option<Usage>) -> Usage {
        let base = base.unwrap_or_default();
        let uncached = base
            .input_tokens
            .saturating_sub(base.cached_input_tokens + base.cache_write_tokens);
        let cached_input_tokens = self
            .cache_read_input_tokens
            .unwrap_or(base.cached_input_tokens);
        let cache_write_tokens = self
            .cache_creation_input_tokens
            .unwrap_or(base.cache_write_tokens);
        Usage {
            input_tokens: self
                .input_tokens
                .unwrap_or(uncached)
                .saturating_add(cached_input_tokens)
                .saturating_add(cache_write_tokens),
            output_tokens: self.output_tokens.unwrap_or(base.output_tokens),
            cached_input_tokens,
            cache_write_tokens,
            estimated: false,
        }
    }
}

/// The forced structured-output tool ends the turn; its call is the answer, not a tool use.
pub(super) fn structured_finish(reason: FinishReason, used_structured: bool) -> FinishReason {
    if used_structured && reason == FinishReason::ToolUse {
        FinishReason::EndTurn
    } else {
        reason
    }
}

pub(super) fn decode_stop_reason(reason: &str, stop_sequence: Option<&str>) -> FinishReason {
    match reason {
        "end_turn" => FinishReason::EndTurn,
        "max_tokens" => FinishReason::MaxTokens,
        "stop_sequence" => FinishReason::StopSequence(stop_sequence.map(str::to_owned)),
        "tool_use" => FinishReason::ToolUse,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Anthropic `stop_reason` and `stop_sequence` for a canonical reason.
pub(super) fn stop_reason_str(reason: &FinishReason) -> (&'static str, Option<&str>) {
    match reason {
        FinishReason::EndTurn => ("end_turn", None),
        FinishReason::MaxTokens => ("max_tokens", None),
        FinishReason::StopSequence(seq) => ("stop_sequence", seq.as_deref()),
        FinishReason::ToolUse => ("tool_use", None),
        FinishReason::ContentFilter => ("refusal", None),
        FinishReason::Other(other) => match other.as_str() {
            "pause_turn" => ("pause_turn", None),
            "model_context_window_exceeded" => ("model_context_window_exceeded", None),
            "function_call" => ("tool_use", None),
            _ => ("end_turn", None),
        },
    }
}

/// An Anthropic-shaped message id: `msg_` ids as they are; any other id (`chatcmpl-B9M...`
/// from an OpenAI-dialect upstream) becomes `msg_` plus its ASCII letters and digits after the
/// `chatcmpl-` prefix, so it still leads back to the upstream's id. An empty id (some compatible
/// servers send none) becomes `msg_unknown`.
pub fn message_id(id: &str) -> Cow<'_, str> {
    if id.starts_with("msg_") {
        return Cow::Borrowed(id);
    }
    let rest: String = id
        .strip_prefix("chatcmpl-")
        .unwrap_or(id)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if rest.is_empty() {
        Cow::Borrowed("msg_unknown")
    } else {
        Cow::Owned(format!("msg_{rest}"))
    }
}

/// Anthropic `usage` (shared with the stream encoder).
#[derive(Serialize)]
pub(super) struct WireUsage {
    input_tokens: u32,
    cache_creation_input_tokens: u32,
    cache_read_input_tokens: u32,
    output_tokens: u32,
    /// Set when the gateway estimated the counts (the provider reported none).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    estimated: bool,
}

impl From<&Usage> for WireUsage {
    fn from(u: &Usage) -> Self {
        WireUsage {
            input_tokens: u
                .input_tokens
                .saturating_sub(u.cached_input_tokens)
                .saturating_sub(u.cache_write_tokens),
            cache_creation_input_tokens: u.cache_write_tokens,
            cache_read_input_tokens: u.cached_input_tokens,
            output_tokens: u.output_tokens,
            estimated: u.estimated,
        }
    }
}

#[derive(Serialize)]
struct WireResponse<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<WireBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: WireUsage,
}

/// Tool-call arguments as an `input` object; anything else becomes `{}`.
pub(super) fn tool_input(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// Encodes a canonical response as a client `message` body.
pub fn encode_chat_response(resp: &ChatResponse) -> Vec<u8> {
    let choice = resp.choices.first();
    let mut content = Vec::new();
    for part in choice.map(|c| c.parts.as_slice()).unwrap_or_default() {
        match part {
            Part::Text { text, .. } if !text.is_empty() => {
                content.push(WireBlock::Text {
                    text,
                    cache_control: None,
                });
            }
            Part::ToolCall(call) => content.push(WireBlock::ToolUse {
                id: &call.id,
                name: &call.name,
                input: tool_input(&call.arguments),
            }),
            _ => {}
        }
    }
    let refusal = choice.and_then(|c| c.refusal.as_deref());
    if let Some(text) = refusal {
        content.push(WireBlock::Text {
            text,
            cache_control: None,
        });
    }
    let finish = choice.and_then(|c| c.finish_reason.as_ref());
    let (stop_reason, stop_sequence) = match finish {
        Some(FinishReason::EndTurn) | None if refusal.is_some() => ("refusal", None),
        Some(reason) => stop_reason_str(reason),
        None => ("end_turn", None),
    };
    let id = message_id(&resp.id);
    let wire = WireResponse {
        id: &id,
        kind: "message",
        role: "assistant",
        model: &resp.model,
        content,
        stop_reason,
        stop_sequence,
        usage: WireUsage::from(&resp.usage.unwrap_or_default()),
    };
    json::to_vec(&wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::Classify;

    const BODY: &str = r#"{
      "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
      "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
      ],
      "stop_reason": "tool_use", "stop_sequence": null,
      "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30, "output_tokens": 5}
    }"#;

    #[test]
    fn decodes_blocks_reason_and_usage() {
        let resp = decode_chat_response(BODY.as_bytes()).unwrap();
        assert_eq!(resp.id, "msg_01");
        let choice = &resp.choices[0];
        assert_eq!(choice.parts.len(), 2, "thinking is skipped");
        assert!(
            matches!(&choice.parts[1], Part::ToolCall(c) if c.arguments == r#"{"city":"Paris"}"#)
        );
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolUse));
        assert_eq!(
            resp.usage,
            Some(Usage {
                input_tokens: 60,
                output_tokens: 5,
                cached_input_tokens: 30,
                cache_write_tokens: 20,
                estimated: false
            })
        );
    }

    #[test]
    fn structured_output_tool_becomes_text() {
        let resp = decode_chat_response_with(BODY.as_bytes(), Some("get_weather")).unwrap();
        let choice = &resp.choices[0];
        assert_eq!(
            choice.parts,
            vec![Part::text("Checking."), Part::text(r#"{"city":"Paris"}"#)]
        );
        assert_eq!(choice.finish_reason, Some(FinishReason::EndTurn));
    }

    #[test]
    fn encode_inverts_decode() {
        let resp = decode_chat_response(BODY.as_bytes()).unwrap();
        let out: Value = serde_json::from_slice(&encode_chat_response(&resp)).unwrap();
        let mut expected: Value = serde_json::from_str(BODY).unwrap();
        expected["content"].as_array_mut().unwrap().remove(0);
        assert_eq!(out, expected);
    }

    #[test]
    fn stop_sequence_and_refusal_are_rendered() {
        let resp = decode_chat_response(
            br#"{"id":"m","model":"c","content":[{"type":"text","text":"a"}],"stop_reason":"stop_sequence","stop_sequence":"END","usage":{"input_tokens":1,"output_tokens":1}}"#,
        )
        .unwrap();
        assert_eq!(
            resp.choices[0].finish_reason,
            Some(FinishReason::StopSequence(Some("END".into())))
        );
        let out: Value = serde_json::from_slice(&encode_chat_response(&resp)).unwrap();
        assert_eq!(
            (out["stop_reason"].as_str(), out["stop_sequence"].as_str()),
            (Some("stop_sequence"), Some("END"))
        );

        let mut refused = resp;
        refused.choices[0].parts.clear();
        refused.choices[0].refusal = Some("I can't help with that.".into());
        refused.choices[0].finish_reason = Some(FinishReason::EndTurn);
        let out: Value = serde_json::from_slice(&encode_chat_response(&refused)).unwrap();
        assert_eq!(out["stop_reason"], "refusal");
        assert_eq!(
            out["content"],
            json!([{"type": "text", "text": "I can't help with that."}])
        );
    }

    #[test]
    fn malformed_body_is_upstream_error() {
        let err = decode_chat_response(br#"{"id":"m"}"#).unwrap_err();
        assert_eq!(err.kind(), sluice_types::ErrorKind::UpstreamMalformed);
    }

    #[test]
    fn a_misshapen_block_is_named_by_its_path() {
        let cases: [(&[u8], &str); 3] = [
            (
                br#"{"content":[{"type":"text"}]}"#,
                "`content[0].text` is required",
            ),
            (
                br#"{"content":[{"type":"text","text":"a"},{"type":"tool_use","name":"f"}]}"#,
                "`content[1].id` is required",
            ),
            (
                br#"{"content":[],"usage":{"output_tokens":"5"}}"#,
                "`usage.output_tokens`: invalid type: string",
            ),
        ];
        for (body, expected) in cases {
            let message = decode_chat_response(body).unwrap_err().upstream_cause();
            assert!(message.starts_with(expected), "{message}");
        }
    }

    #[test]
    fn nulls_count_as_absent() {
        let resp = decode_chat_response(
            br#"{"id":null,"model":null,"content":[{"type":"tool_use","id":"t","name":"f","input":null}],
                "stop_reason":null,"usage":{"input_tokens":3,"cache_read_input_tokens":null,"output_tokens":1}}"#,
        )
        .unwrap();
        assert_eq!((resp.id.as_str(), resp.model.as_str()), ("", ""));
        let choice = &resp.choices[0];
        assert!(matches!(&choice.parts[..], [Part::ToolCall(c)] if c.arguments == "{}"));
        assert_eq!(choice.finish_reason, None);
        let usage = resp.usage.unwrap();
        assert_eq!((usage.input_tokens, usage.cached_input_tokens), (3, 0));
    }

    #[test]
    fn answers_from_openai_dialect_upstreams_get_anthropic_ids() {
        assert_eq!(message_id("msg_01Xk3"), "msg_01Xk3");
        assert_eq!(
            message_id("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"),
            "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
        );
        // llama.cpp: `chatcmpl-` plus a UUID.
        assert_eq!(
            message_id("chatcmpl-4c1f09a3-8e0b-4b57-9b1e-2f0c3d4e5f60"),
            "msg_4c1f09a38e0b4b579b1e2f0c3d4e5f60"
        );
        assert_eq!(message_id(""), "msg_unknown");

        let resp = ChatResponse {
            id: "chatcmpl-abc".into(),
            model: "m".into(),
            created: 0,
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
        };
        let body: Value = serde_json::from_slice(&encode_chat_response(&resp)).unwrap();
        assert_eq!(body["id"], "msg_abc");
    }
}
