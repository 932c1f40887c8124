//! OpenAI wire format: Chat Completions requests into a [`ChatView`], answers
//! back out as `chat.completion` objects or `chat.completion.chunk` streams,
//! plus embeddings, the model list and the `{"error": {...}}` shape.
//!
//! Shapes follow the public API reference; fields real clients read are all
//! present (`refusal`, `logprobs`, `system_fingerprint`, usage details), so an
//! SDK's strict deserializer accepts them.

use serde_json::{Value, json};

use super::chat::{
    Answer, ChatView, Finish, OutputMode, ToolChoice, ToolDef, Usage, content_text, json_fragments,
    random_id, served_model, text_pieces, tokens, unix_now,
};
use super::sse::Frame;

/// Default embedding dimension when the request does not set `dimensions`.
const EMBEDDING_DIMENSIONS: usize = 8;
/// Guard against absurd `dimensions` values.
const MAX_EMBEDDING_DIMENSIONS: u64 = 8192;
const FINGERPRINT: &str = "fp_mock2026";

/// Identity of one completion, shared by all its chunks.
pub(super) struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    pub fn new(requested_model: &str) -> Self {
        Meta {
            id: random_id("chatcmpl-", 29),
            created: unix_now(),
            model: served_model(requested_model),
        }
    }
}

/// Reads a Chat Completions request; the error is the message of a 400.
pub(super) fn parse(body: &Value) -> Result<ChatView, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("you must provide a model parameter")?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("Missing required parameter: 'messages'.")?;
    if messages.is_empty() {
        return Err(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.".into(),
        );
    }
    let mut view = ChatView {
        model: model.to_owned(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        max_tokens: body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens"))
            .and_then(Value::as_u64),
        ..ChatView::default()
    };
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let text = message.get("content").map(content_text).unwrap_or_default();
        view.input_chars += text.chars().count();
        for call in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let args = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("");
            view.input_chars += name.chars().count() + args.chars().count();
        }
        if role == "user" {
            view.last_user_text = text.clone();
        }
        view.last_is_user = role == "user";
        // Parallel tool calls end in several tool messages in a row.
        view.tool_result = match (matches!(role, "tool" | "function"), view.tool_result.take()) {
            (true, Some(previous)) => Some(format!("{previous}\n{text}")),
            (true, None) => Some(text),
            (false, _) => None,
        };
    }
    view.tools = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tool| {
            let function = tool.get("function")?;
            Some(ToolDef {
                name: function.get("name")?.as_str()?.to_owned(),
                schema: function
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            })
        })
        .collect();
    view.tool_choice = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => ToolChoice::None,
        Some(Value::String(s)) if s == "required" => ToolChoice::Any,
        Some(choice @ Value::Object(_)) => choice
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map_or(ToolChoice::Auto, |name| ToolChoice::Named(name.to_owned())),
        _ => ToolChoice::Auto,
    };
    view.output = match body
        .pointer("/response_format/type")
        .and_then(Value::as_str)
    {
        Some("json_schema") => OutputMode::Schema(
            body.pointer("/response_format/json_schema/schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        ),
        Some("json_object") => OutputMode::JsonObject,
        _ => OutputMode::Free,
    };
    Ok(view)
}

fn finish_reason(answer: &Answer) -> &'static str {
    match answer {
        Answer::Text {
            finish: Finish::Stop,
            ..
        } => "stop",
        Answer::Text {
            finish: Finish::Length,
            ..
        } => "length",
        Answer::Tools(_) => "tool_calls",
    }
}

fn usage_json(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// A non-streaming `chat.completion`.
pub(super) fn completion(meta: &Meta, answer: &Answer, usage: Usage) -> Value {
    let message = match answer {
        Answer::Text { text, .. } => json!({
            "role": "assistant",
            "content": text,
            "refusal": null,
            "annotations": []
        }),
        Answer::Tools(calls) => {
            let tool_calls: Vec<Value> = calls
                .iter()
                .map(|(name, args)| {
                    json!({
                        "id": random_id("call_", 24),
                        "type": "function",
                        "function": {"name": name, "arguments": args.to_string()}
                    })
                })
                .collect();
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": tool_calls,
                "refusal": null,
                "annotations": []
            })
        }
    };
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(answer)
        }],
        "usage": usage_json(usage),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT
    })
}

/// Answers `n` choices (up to 8), as OpenAI does: the same message under each index.
pub(super) fn answer_n_choices(completion: &mut Value, n: Option<&Value>) {
    let n = n.and_then(Value::as_u64).unwrap_or(1).clamp(1, 8);
    if let Some(choices) = completion["choices"].as_array_mut()
        && let Some(first) = choices.first().cloned()
    {
        for index in 1..n {
            let mut choice = first.clone();
            choice["index"] = index.into();
            choices.push(choice);
        }
    }
}

/// Builds `chat.completion.chunk` frames for one completion.
struct Chunks<'a> {
    meta: &'a Meta,
    /// With `include_usage`, every chunk carries `"usage": null` until the last.
    usage_field: bool,
    frames: Vec<Frame>,
}

impl Chunks<'_> {
    fn push(&mut self, delta: Value, finish: Option<&str>, content: bool) {
        let mut chunk = json!({
            "id": self.meta.id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.meta.model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if self.usage_field {
            chunk["usage"] = Value::Null;
        }
        self.frames
            .push(Frame::event(None, &chunk.to_string(), content));
    }
}

/// The SSE frames of a streamed completion, ending with `data: [DONE]`.
///
/// Usage comes as a final chunk with empty `choices` only when the request
/// set `stream_options.include_usage` and `usage_in_stream` is on.
pub(super) fn stream(
    meta: &Meta,
    answer: &Answer,
    usage: Usage,
    include_usage: bool,
    usage_in_stream: bool,
) -> Vec<Frame> {
    let with_usage = include_usage && usage_in_stream;
    let mut chunks = Chunks {
        meta,
        usage_field: with_usage,
        frames: Vec::new(),
    };
    match answer {
        Answer::Text { text, .. } => {
            chunks.push(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
                false,
            );
            for piece in text_pieces(text) {
                chunks.push(json!({"content": piece}), None, true);
            }
        }
        Answer::Tools(calls) => {
            for (index, (name, args)) in calls.iter().enumerate() {
                let call = json!([{
                    "index": index,
                    "id": random_id("call_", 24),
                    "type": "function",
                    "function": {"name": name, "arguments": ""}
                }]);
                let delta = if index == 0 {
                    json!({"role": "assistant", "content": null, "tool_calls": call, "refusal": null})
                } else {
                    json!({"tool_calls": call})
                };
                chunks.push(delta, None, true);
                for fragment in json_fragments(&args.to_string()) {
                    let delta = json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]});
                    chunks.push(delta, None, true);
                }
            }
        }
    }
    chunks.push(json!({}), Some(finish_reason(answer)), false);
    if with_usage {
        let last = json!({
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage_json(usage)
        });
        chunks
            .frames
            .push(Frame::event(None, &last.to_string(), false));
    }
    chunks.frames.push(Frame::event(None, "[DONE]", false));
    chunks.frames
}

/// A stream whose second event's data is not JSON, then a normal `[DONE]`.
pub(super) fn malformed_stream(meta: &Meta) -> Vec<Frame> {
    let mut chunks = Chunks {
        meta,
        usage_field: false,
        frames: Vec::new(),
    };
    chunks.push(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
        false,
    );
    chunks.frames.push(Frame::event(
        None,
        r#"{"id": "chatcmpl-mock", "choices": [{"delta": {"content": "#,
        true,
    ));
    chunks.frames.push(Frame::event(None, "[DONE]", false));
    chunks.frames
}

/// The `{"error": {...}}` body real OpenAI sends for `status`.
pub(super) fn error_body(status: u16, message: Option<&str>) -> Value {
    let (kind, code, default_message) = match status {
        400 => ("invalid_request_error", None, "Invalid request."),
        401 => (
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided.",
        ),
        403 => (
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
            "Country, region, or territory not supported.",
        ),
        404 => (
            "invalid_request_error",
            Some("model_not_found"),
            "The model does not exist or you do not have access to it.",
        ),
        429 => (
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for requests. Please try again later.",
        ),
        500 => (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        503 => (
            "server_error",
            None,
            "The engine is currently overloaded, please try again later.",
        ),
        s if s >= 500 => ("server_error", None, "Upstream server error."),
        _ => ("invalid_request_error", None, "Invalid request."),
    };
    json!({
        "error": {
            "message": message.unwrap_or(default_message),
            "type": kind,
            "param": null,
            "code": code
        }
    })
}

/// A `list` of embeddings for `input` (a string, strings, or token arrays);
/// the error is the message of a 400.
pub(super) fn embeddings(body: &Value) -> Result<Value, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("you must provide a model parameter")?;
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) && !items.is_empty() => {
            vec![Value::Array(items.clone()).to_string()]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Array(tokens) => Ok(Value::Array(tokens.clone()).to_string()),
                _ => Err("Invalid type for 'input'.".to_owned()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("Missing required parameter: 'input'.".into()),
    };
    if inputs.is_empty() {
        return Err("'input' cannot be an empty array.".into());
    }
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => EMBEDDING_DIMENSIONS,
        Some(d) => match d.as_u64() {
            Some(n @ 1..=MAX_EMBEDDING_DIMENSIONS) => {
                usize::try_from(n).unwrap_or(EMBEDDING_DIMENSIONS)
            }
            _ => {
                return Err("Invalid 'dimensions': expected an integer between 1 and 8192.".into());
            }
        },
    };
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding(input, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(encode_base64(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens: u64 = inputs.iter().map(|i| tokens(i.chars().count())).sum();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": served_model(model),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    }))
}

/// A unit vector derived only from `input`: equal inputs embed equally.
fn embedding(input: &str, dimensions: usize) -> Vec<f32> {
    // FNV-1a seeds a splitmix64 sequence; both are standard, tiny and stable.
    let mut state = input.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // Top 24 bits give an exact f32 in [0, 1), mapped to [-1, 1).
    let raw: Vec<f32> = (0..dimensions)
        .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        raw.iter().map(|x| x / norm).collect()
    } else {
        raw
    }
}

fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `GET /v1/models`.
pub(super) fn models() -> Value {
    // 2026-01-01T00:00:00Z, matching the mock version suffix.
    let created = 1_767_225_600;
    let data: Vec<Value> = ["gpt-mock", "gpt-mock-mini", "text-embedding-mock"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "sluice-mock"}))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(encode_base64(b""), "");
        assert_eq!(encode_base64(b"f"), "Zg==");
        assert_eq!(encode_base64(b"fo"), "Zm8=");
        assert_eq!(encode_base64(b"foo"), "Zm9v");
        assert_eq!(encode_base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello", 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("world", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
