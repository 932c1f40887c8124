//! `chat.completion` bodies: upstream body -> [`ChatResponse`] and [`ChatResponse`] -> client
//! body.
//!
//! Decoding is tolerant of compatible servers: a missing `id`, `model` or `created` defaults to
//! empty / 0, a missing `usage` is `None`, a missing choice `index` is the position, and
//! `content` may also be an array of text parts. Only `choices` and each choice's `message` are
//! required; anything else that does not fit is [`WireError::UpstreamMalformed`].
//!
//! Encoding follows `CreateChatCompletionResponse`: `object` is `chat.completion`, every
//! message has `role: assistant`, `content` (the text parts concatenated; `null` when the
//! choice only calls tools or only refuses) and `refusal` (`null` unless refused), every choice
//! has `logprobs` (`null` unless the upstream sent some) and a `finish_reason` from the spec's
//! enum: a reason OpenAI does not know (`pause_turn`, ...) or a missing one becomes `stop`.
//! `usage` carries `total_tokens` and `prompt_tokens_details.cached_tokens`; a canonical
//! `created` of 0 (Anthropic has none) is sent as is, so callers stamp it first.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_types::{ChatResponse, Choice, FinishReason, Part, ToolCall, Usage};

use super::request::WireToolCall;
use crate::WireError;
use crate::json;

/// Decodes an upstream `chat.completion` body.
///
/// Errors: [`WireError::UpstreamMalformed`] wrapping the field-level cause.
pub fn decode_chat_response(body: &[u8]) -> Result<ChatResponse, WireError> {
    let wire: UpstreamResponse = json::from_slice_at_path(body).map_err(WireError::upstream)?;
    Ok(wire.into_canonical())
}

// The body as it is read: typed, so the answer is decoded in one pass without building a
// `Value` tree. Every field but `choices` and each choice's `message` may be absent or `null`;
// unknown fields are skipped.

#[derive(Deserialize)]
struct UpstreamResponse {
    id: Option<String>,
    model: Option<String>,
    created: Option<i64>,
    choices: Vec<UpstreamChoice>,
    usage: Option<UpstreamUsage>,
    system_fingerprint: Option<String>,
}

#[derive(Deserialize)]
struct UpstreamChoice {
    index: Option<u32>,
    message: UpstreamMessage,
    finish_reason: Option<String>,
    stop_reason: Option<StopReason>,
    logprobs: Option<Value>,
}

/// vLLM's `stop_reason` beside `finish_reason: stop`: the stop string that matched, a stop
/// token id, or `null` for a natural end. Only a string names a stop sequence.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum StopReason {
    Sequence(String),
    Other(IgnoredAny),
}

impl StopReason {
    pub(super) fn sequence(this: Option<Self>) -> Option<String> {
        match this {
            Some(StopReason::Sequence(s)) => Some(s),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct UpstreamMessage {
    content: Option<UpstreamContent>,
    refusal: Option<String>,
    tool_calls: Option<Vec<UpstreamToolCall>>,
}

/// `content`: a string, or (some compatible servers) an array of parts of which only the text
/// is kept.
#[derive(Deserialize)]
#[serde(untagged, expecting = "string, array or null")]
enum UpstreamContent {
    Text(String),
    Parts(Vec<UpstreamContentPart>),
}

#[derive(Deserialize)]
struct UpstreamContentPart {
    text: Option<String>,
}

#[derive(Deserialize)]
struct UpstreamToolCall {
    id: Option<String>,
    function: UpstreamFunction,
}

#[derive(Deserialize)]
struct UpstreamFunction {
    name: String,
    arguments: Option<String>,
}

/// An upstream `usage` object (shared with the stream decoder). Missing counts are 0.
#[derive(Deserialize)]
pub(super) struct UpstreamUsage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    prompt_tokens_details: Option<UpstreamPromptDetails>,
}

#[derive(Deserialize)]
struct UpstreamPromptDetails {
    cached_tokens: Option<u32>,
    cache_write_tokens: Option<u32>,
}

impl UpstreamResponse {
    fn into_canonical(self) -> ChatResponse {
        let choices = self
            .choices
            .into_iter()
            .enumerate()
            .map(|(position, choice)| choice.into_canonical(position))
            .collect();
        ChatResponse {
            id: self.id.unwrap_or_default(),
            model: self.model.unwrap_or_default(),
            created: self.created.unwrap_or(0),
            choices,
            usage: self.usage.map(UpstreamUsage::into_canonical),
            system_fingerprint: self.system_fingerprint,
        }
    }
}

impl UpstreamUsage {
    pub(super) fn into_canonical(self) -> Usage {
        let details = self.prompt_tokens_details;
        let detail = |pick: fn(&UpstreamPromptDetails) -> Option<u32>| {
            details.as_ref().and_then(pick).unwrap_or(0)
        };
        Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
            cached_input_tokens: detail(|d| d.cached_tokens),
            cache_write_tokens: detail(|d| d.cache_write_tokens),
            estimated: false,
        }
    }
}

impl UpstreamChoice {
    fn into_canonical(self, position: usize) -> Choice {
        let message = self.message;
        let mut parts = Vec::new();
        match message.content {
            None => {}
            Some(UpstreamContent::Text(text)) => parts.push(Part::text(text)),
            Some(UpstreamContent::Parts(items)) => {
                parts.extend(items.into_iter().filter_map(|p| p.text).map(Part::text));
            }
        }
        for call in message.tool_calls.unwrap_or_default() {
            parts.push(Part::ToolCall(ToolCall {
                id: call.id.unwrap_or_default(),
                name: call.function.name,
                arguments: call.function.arguments.unwrap_or_default(),
            }));
        }
        Choice {
            index: self
                .index
                .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX)),
            parts,
            refusal: message.refusal,
            finish_reason: self
                .finish_reason
                .as_deref()
                .map(|r| decode_finish_reason(r, StopReason::sequence(self.stop_reason))),
            logprobs: self.logprobs,
        }
    }
}

/// A finish reason; `stop_sequence` is the matched stop string when the server names it
/// (vLLM's `stop_reason`). OpenAI's `stop` covers both a natural end and a matched stop
/// sequence, and OpenAI strips the stop string from the output, so without such a name the
/// gateway cannot tell them apart and says `EndTurn`.
pub(super) fn decode_finish_reason(reason: &str, stop_sequence: Option<String>) -> FinishReason {
    match reason {
        "stop" if stop_sequence.is_some() => FinishReason::StopSequence(stop_sequence),
        "stop" => FinishReason::EndTurn,
        "length" => FinishReason::MaxTokens,
        "tool_calls" => FinishReason::ToolUse,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// The spec's `finish_reason` enum value for a canonical reason.
pub(super) fn finish_reason_str(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::EndTurn | FinishReason::StopSequence(_) => "stop",
        FinishReason::MaxTokens => "length",
        FinishReason::ToolUse => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(other) => match other.as_str() {
            "length" => "length",
            "tool_calls" => "tool_calls",
            "content_filter" => "content_filter",
            "function_call" => "function_call",
            _ => "stop",
        },
    }
}

#[derive(Serialize)]
struct WireResponse<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Vec<WireChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<WireUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
}

#[derive(Serialize)]
struct WireChoice<'a> {
    index: u32,
    message: WireMessage<'a>,
    logprobs: Option<&'a Value>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
}

/// OpenAI `usage` (shared with the stream encoder).
#[derive(Serialize)]
pub(super) struct WireUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    prompt_tokens_details: WirePromptDetails,
    /// Set when the gateway estimated the counts (the provider reported none).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    estimated: bool,
}

#[derive(Serialize)]
struct WirePromptDetails {
    cached_tokens: u32,
    #[serde(skip_serializing_if = "is_zero")]
    cache_write_tokens: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl From<&Usage> for WireUsage {
    fn from(u: &Usage) -> Self {
        WireUsage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total_tokens(),
            prompt_tokens_details: WirePromptDetails {
                cached_tokens: u.cached_input_tokens,
                cache_write_tokens: u.cache_write_tokens,
            },
            estimated: u.estimated,
        }
    }
}

/// Encodes a canonical response as a client `chat.completion` body.
pub fn encode_chat_response(resp: &ChatResponse) -> Vec<u8> {
    let wire = WireResponse {
        id: &resp.id,
        object: "chat.completion",
        created: resp.created,
        model: &resp.model,
        choices: resp.choices.iter().map(encode_choice).collect(),
        usage: resp.usage.as_ref().map(WireUsage::from),
        system_fingerprint: resp.system_fingerprint.as_deref(),
    };
    json::to_vec(&wire)
}

fn encode_choice(choice: &Choice) -> WireChoice<'_> {
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for part in &choice.parts {
        match part {
            Part::Text { text: t, .. } => text.get_or_insert_with(String::new).push_str(t),
            Part::ToolCall(call) => tool_calls.push(WireToolCall::new(call)),
            // Images and tool results never occur in model output.
            Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    if text.is_none() && tool_calls.is_empty() && choice.refusal.is_none() {
        text = Some(String::new());
    }
    WireChoice {
        index: choice.index,
        message: WireMessage {
            role: "assistant",
            content: text,
            refusal: choice.refusal.as_deref(),
            tool_calls,
        },
        logprobs: choice.logprobs.as_ref(),
        finish_reason: choice
            .finish_reason
            .as_ref()
            .map_or("stop", finish_reason_str),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_types::Classify;
    use std::error::Error as _;

    const BODY: &str = r#"{
      "id": "chatcmpl-1", "object": "chat.completion", "created": 1741570283, "model": "gpt-4o-2024-08-06",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
        "logprobs": null, "finish_reason": "tool_calls"}],
      "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0}},
      "system_fingerprint": "fp_1"
    }"#;

    #[test]
    fn decodes_tool_call_response() {
        let resp = decode_chat_response(BODY.as_bytes()).unwrap();
        assert_eq!(resp.id, "chatcmpl-1");
        assert_eq!(resp.created, 1741570283);
        assert_eq!(resp.system_fingerprint.as_deref(), Some("fp_1"));
        let choice = &resp.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolUse));
        assert!(matches!(&choice.parts[..], [Part::ToolCall(c)] if c.name == "f"));
        let usage = resp.usage.unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens
            ),
            (100, 20, 64)
        );
    }

    #[test]
    fn encode_round_trips_and_fills_spec_fields() {
        let resp = decode_chat_response(BODY.as_bytes()).unwrap();
        let out: Value = serde_json::from_slice(&encode_chat_response(&resp)).unwrap();
        let expected: Value = serde_json::from_str(BODY).unwrap();
        let mut expected = expected;
        // We do not echo audio token details.
        expected["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 64});
        assert_eq!(out, expected);
    }

    #[test]
    fn text_parts_are_concatenated_and_unknown_reasons_become_stop() {
        let resp = ChatResponse {
            id: "msg_1".into(),
            model: "claude".into(),
            created: 0,
            choices: vec![Choice {
                index: 0,
                parts: vec![Part::text("a"), Part::text("b")],
                refusal: None,
                finish_reason: Some(FinishReason::Other("pause_turn".into())),
                logprobs: None,
            }],
            usage: None,
            system_fingerprint: None,
        };
        let out: Value = serde_json::from_slice(&encode_chat_response(&resp)).unwrap();
        assert_eq!(
            out["choices"][0],
            json!({"index": 0, "message": {"role": "assistant", "content": "ab", "refusal": null},
                   "logprobs": null, "finish_reason": "stop"})
        );
        assert!(out.get("usage").is_none() && out.get("system_fingerprint").is_none());
    }

    #[test]
    fn malformed_upstream_body_is_upstream_error() {
        let err = decode_chat_response(br#"{"id":"x"}"#).unwrap_err();
        assert_eq!(err.kind(), sluice_types::ErrorKind::UpstreamMalformed);
        assert_eq!(
            err.upstream_cause(),
            "`body`: missing field `choices` at line 1 column 10"
        );
        assert!(decode_chat_response(b"<html>").is_err());
    }

    #[test]
    fn a_misshapen_field_is_named_by_its_path() {
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"choices":[{"message":{"content":5}}]}"#,
                "`choices[0].message.content`: string, array or null",
            ),
            (
                br#"{"choices":[{"message":null}]}"#,
                "`choices[0].message`: invalid type: null",
            ),
            (
                br#"{"choices":[{"message":{"tool_calls":[{"function":{}}]}}]}"#,
                "`choices[0].message.tool_calls[0].function`: missing field `name`",
            ),
            (
                br#"{"choices":[],"usage":{"prompt_tokens":-1}}"#,
                "`usage.prompt_tokens`: invalid value: integer `-1`",
            ),
        ];
        for (body, expected) in cases {
            let message = decode_chat_response(body).unwrap_err().upstream_cause();
            assert!(message.starts_with(expected), "{message}");
        }
        let err = decode_chat_response(b"{\"choices\":[\"\xff\"]}").unwrap_err();
        assert!(err.source().unwrap().to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn nulls_count_as_absent_and_unknown_fields_are_skipped() {
        let body = br#"{"id":null,"model":null,"created":null,"system_fingerprint":null,
            "service_tier":"default","usage":{"prompt_tokens":3,"completion_tokens":null,
            "prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":1}},
            "choices":[{"index":null,"message":{"content":null,"refusal":"no","annotations":[]},
            "logprobs":{"content":[]},"finish_reason":null}]}"#;
        let resp = decode_chat_response(body).unwrap();
        assert_eq!(
            (resp.id.as_str(), resp.model.as_str(), resp.created),
            ("", "", 0)
        );
        let choice = &resp.choices[0];
        assert_eq!((choice.index, choice.parts.len()), (0, 0));
        assert_eq!(choice.refusal.as_deref(), Some("no"));
        assert_eq!(choice.finish_reason, None);
        assert_eq!(choice.logprobs, Some(json!({"content": []})));
        let usage = resp.usage.unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens
            ),
            (3, 0, 0)
        );
    }

    #[test]
    fn tolerates_compatible_server_quirks() {
        let body = br#"{"choices":[{"message":{"content":[{"type":"text","text":"hi"}]},"finish_reason":"eos"}]}"#;
        let resp = decode_chat_response(body).unwrap();
        assert_eq!(resp.choices[0].parts, vec![Part::text("hi")]);
        assert_eq!(
            resp.choices[0].finish_reason,
            Some(FinishReason::Other("eos".into()))
        );
        assert_eq!(resp.usage, None);
    }

    #[test]
    fn a_stop_string_the_server_names_is_a_stop_sequence() {
        // vLLM names the matched stop string in `stop_reason`; OpenAI and llama.cpp do not.
        let decode_reason = |choice: &str| {
            let body = format!(r#"{{"choices":[{{"message":{{"content":"a"}},{choice}}}]}}"#);
            decode_chat_response(body.as_bytes()).unwrap().choices[0]
                .finish_reason
                .clone()
        };
        assert_eq!(
            decode_reason(r#""finish_reason":"stop","stop_reason":"END""#),
            Some(FinishReason::StopSequence(Some("END".into())))
        );
        for natural in [
            r#""finish_reason":"stop","stop_reason":null"#,
            r#""finish_reason":"stop","stop_reason":128001"#,
            r#""finish_reason":"stop""#,
        ] {
            assert_eq!(
                decode_reason(natural),
                Some(FinishReason::EndTurn),
                "{natural}"
            );
        }
    }
}
