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
//! `end_turn`.

use serde::Serialize;
use serde_json::{Value, json};
use sluice_types::{ChatResponse, Choice, FinishReason, Part, ToolCall, Usage};

use super::blocks::WireBlock;
use crate::WireError;
use crate::json::{self, Obj, index};

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
    let root = json::parse_body(body)?;
    let obj = Obj::root(&root)?;
    let mut parts = Vec::new();
    let mut used_structured = false;
    for (i, block) in obj.req_array("content")?.iter().enumerate() {
        let b = Obj::at(block, index("content", i))?;
        match b.req_str("type")? {
            "text" => parts.push(Part::text(b.req_str("text")?)),
            "tool_use" => {
                let name = b.req_str("name")?;
                let input = b
                    .get("input")
                    .map_or_else(|| "{}".to_owned(), Value::to_string);
                if structured == Some(name) {
                    used_structured = true;
                    parts.push(Part::text(input));
                } else {
                    parts.push(Part::ToolCall(ToolCall {
                        id: b.req_str("id")?.to_owned(),
                        name: name.to_owned(),
                        arguments: input,
                    }));
                }
            }
            _ => {}
        }
    }
    let finish_reason = obj
        .str("stop_reason")?
        .map(|r| decode_stop_reason(r, obj.get("stop_sequence").and_then(Value::as_str)))
        .map(|r| structured_finish(r, used_structured));
    Ok(ChatResponse {
        id: obj.str("id")?.unwrap_or_default().to_owned(),
        model: obj.str("model")?.unwrap_or_default().to_owned(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            parts,
            refusal: None,
            finish_reason,
            logprobs: None,
        }],
        usage: obj
            .obj("usage")?
            .map(|u| decode_usage(&u, None))
            .transpose()?,
        system_fingerprint: None,
    })
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

/// Reads an Anthropic `usage` object, merging over `base` (stream `message_delta` carries only
/// the counts that changed, older API versions only `output_tokens`).
pub(super) fn decode_usage(u: &Obj<'_>, base: Option<Usage>) -> Result<Usage, WireError> {
    let base = base.unwrap_or_default();
    let fresh = u.u32("input_tokens")?;
    let read = u.u32("cache_read_input_tokens")?;
    let write = u.u32("cache_creation_input_tokens")?;
    let uncached = base
        .input_tokens
        .saturating_sub(base.cached_input_tokens + base.cache_write_tokens);
    let cached_input_tokens = read.unwrap_or(base.cached_input_tokens);
    let cache_write_tokens = write.unwrap_or(base.cache_write_tokens);
    Ok(Usage {
        input_tokens: fresh
            .unwrap_or(uncached)
            .saturating_add(cached_input_tokens)
            .saturating_add(cache_write_tokens),
        output_tokens: u.u32("output_tokens")?.unwrap_or(base.output_tokens),
        cached_input_tokens,
        cache_write_tokens,
        estimated: false,
    })
}

/// Anthropic `usage` (shared with the stream encoder).
#[derive(Serialize)]
pub(super) struct WireUsage {
    input_tokens: u32,
    cache_creation_input_tokens: u32,
    cache_read_input_tokens: u32,
    output_tokens: u32,
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
    let wire = WireResponse {
        id: &resp.id,
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
}
