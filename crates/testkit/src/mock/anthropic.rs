//! Anthropic wire format: Messages requests into a [`ChatView`], answers back
//! out as `message` objects or the event stream (`message_start`,
//! `content_block_start`, `ping`, `content_block_delta`...,
//! `content_block_stop`, `message_delta`, `message_stop`), plus token
//! counting, the model list and the `{"type": "error", ...}` shape.

use serde_json::{Value, json};

use super::chat::{
    Answer, ChatView, Finish, OutputMode, ToolChoice, ToolDef, Usage, content_text, json_fragments,
    random_id, served_model, text_pieces, tokens,
};
use super::sse::Frame;

/// Identity of one message, shared by all its events.
pub(super) struct Meta {
    id: String,
    model: String,
}

impl Meta {
    pub fn new(requested_model: &str) -> Self {
        Meta {
            id: random_id("msg_01", 22),
            model: served_model(requested_model),
        }
    }
}

/// Reads a Messages (or count_tokens) request; the error is the message of a 400.
pub(super) fn parse(body: &Value) -> Result<ChatView, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model: Field required")?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut view = ChatView {
        model: model.to_owned(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        max_tokens: body.get("max_tokens").and_then(Value::as_u64),
        input_chars: body
            .get("system")
            .map(|s| content_text(s).chars().count())
            .unwrap_or(0),
        ..ChatView::default()
    };
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        let text = content_text(content);
        let mut results = Vec::new();
        for block in content.as_array().into_iter().flatten() {
            match block.get("type").and_then(Value::as_str) {
                Some("tool_use") => {
                    let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                    let input = block.get("input").map(Value::to_string).unwrap_or_default();
                    view.input_chars += name.chars().count() + input.chars().count();
                }
                Some("tool_result") => {
                    results.push(block.get("content").map(content_text).unwrap_or_default());
                }
                _ => {}
            }
        }
        let result_text = results.join("\n");
        view.input_chars += text.chars().count() + result_text.chars().count();
        view.last_is_user = role == "user";
        view.tool_result = (role == "user" && !results.is_empty()).then_some(result_text);
        if role == "user" && (!text.is_empty() || results.is_empty()) {
            view.last_user_text = text;
        }
    }
    view.tools = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tool| {
            // Server tools (web search, bash...) have no `input_schema`; the mock never calls them.
            Some(ToolDef {
                name: tool.get("name")?.as_str()?.to_owned(),
                schema: tool.get("input_schema")?.clone(),
            })
        })
        .collect();
    view.tool_choice = match body.pointer("/tool_choice/type").and_then(Value::as_str) {
        Some("none") => ToolChoice::None,
        Some("any") => ToolChoice::Any,
        Some("tool") => body
            .pointer("/tool_choice/name")
            .and_then(Value::as_str)
            .map_or(ToolChoice::Any, |name| ToolChoice::Named(name.to_owned())),
        _ => ToolChoice::Auto,
    };
    // Structured outputs: `output_format` (beta) or `output_config.format`.
    let format = body
        .get("output_format")
        .or_else(|| body.pointer("/output_config/format"));
    if let Some(format) = format
        && format.get("type").and_then(Value::as_str) == Some("json_schema")
    {
        let schema = format
            .get("schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        view.output = OutputMode::Schema(schema);
    }
    Ok(view)
}

/// `max_tokens` is required on `/v1/messages` (not on count_tokens).
pub(super) fn check_max_tokens(body: &Value) -> Result<(), String> {
    match body.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|n| n >= 1) => Ok(()),
        Some(_) => Err("max_tokens: Input should be greater than or equal to 1".into()),
        None => Err("max_tokens: Field required".into()),
    }
}

/// `{"input_tokens": N}` for `/v1/messages/count_tokens`.
pub(super) fn count_tokens(view: &ChatView) -> Value {
    json!({"input_tokens": tokens(view.input_chars)})
}

fn stop_reason(answer: &Answer) -> &'static str {
    match answer {
        Answer::Text {
            finish: Finish::Stop,
            ..
        } => "end_turn",
        Answer::Text {
            finish: Finish::Length,
            ..
        } => "max_tokens",
        Answer::Tools(_) => "tool_use",
    }
}

/// A non-streaming `message`.
pub(super) fn message(meta: &Meta, answer: &Answer, usage: Usage) -> Value {
    let content: Vec<Value> = match answer {
        Answer::Text { text, .. } => vec![json!({"type": "text", "text": text})],
        Answer::Tools(calls) => calls
            .iter()
            .map(|(name, input)| {
                json!({"type": "tool_use", "id": random_id("toolu_01", 22), "name": name, "input": input})
            })
            .collect(),
    };
    json!({
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": content,
        "stop_reason": stop_reason(answer),
        "stop_sequence": null,
        "usage": {
            "input_tokens": usage.input,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": usage.output,
            "service_tier": "standard"
        }
    })
}

fn event(name: &str, data: &Value, content: bool) -> Frame {
    Frame::event(Some(name), &data.to_string(), content)
}

/// The `message_start` frame.
fn message_start(meta: &Meta, usage: Usage, usage_in_stream: bool) -> Vec<Frame> {
    let mut message = json!({
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null
    });
    if usage_in_stream {
        // Real streams report input up front and a token or so of output.
        message["usage"] = json!({
            "input_tokens": usage.input,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
            "service_tier": "standard"
        });
    }
    vec![event(
        "message_start",
        &json!({"type": "message_start", "message": message}),
        false,
    )]
}

fn ping() -> Frame {
    event("ping", &json!({"type": "ping"}), false)
}

/// The event frames of a streamed message, ending with `message_stop`.
///
/// With `usage_in_stream` off, `message_start` and `message_delta` carry no
/// `usage`, as some Anthropic-compatible servers do.
pub(super) fn stream(
    meta: &Meta,
    answer: &Answer,
    usage: Usage,
    usage_in_stream: bool,
) -> Vec<Frame> {
    let mut frames = message_start(meta, usage, usage_in_stream);
    match answer {
        Answer::Text { text, .. } => {
            frames.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                false,
            ));
            frames.push(ping());
            for piece in text_pieces(text) {
                frames.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                    true,
                ));
            }
            frames.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
                false,
            ));
        }
        Answer::Tools(calls) => {
            for (index, (name, input)) in calls.iter().enumerate() {
                let block = json!({"type": "tool_use", "id": random_id("toolu_01", 22), "name": name, "input": {}});
                frames.push(event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": block}),
                    false,
                ));
                if index == 0 {
                    frames.push(ping());
                }
                // The real API opens every tool input with an empty fragment.
                let fragments =
                    std::iter::once(String::new()).chain(json_fragments(&input.to_string()));
                for fragment in fragments {
                    frames.push(event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
                        true,
                    ));
                }
                frames.push(event(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": index}),
                    false,
                ));
            }
        }
    }
    let mut delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(answer), "stop_sequence": null}
    });
    if usage_in_stream {
        delta["usage"] = json!({"output_tokens": usage.output});
    }
    frames.push(event("message_delta", &delta, false));
    frames.push(event(
        "message_stop",
        &json!({"type": "message_stop"}),
        false,
    ));
    frames
}

/// A stream whose first content event's data is not JSON, then `message_stop`.
pub(super) fn malformed_stream(meta: &Meta) -> Vec<Frame> {
    let usage = Usage {
        input: 1,
        output: 1,
    };
    let mut frames = message_start(meta, usage, true);
    frames.push(Frame::event(
        Some("content_block_delta"),
        r#"{"type": "content_block_delta", "index": 0, "delta": {"#,
        true,
    ));
    frames.push(event(
        "message_stop",
        &json!({"type": "message_stop"}),
        false,
    ));
    frames
}

/// The error `type` Anthropic uses for `status`.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The `{"type": "error", ...}` body real Anthropic sends for `status`.
pub(super) fn error_body(status: u16, message: Option<&str>, request_id: &str) -> Value {
    let kind = error_type(status);
    let default_message = match kind {
        "authentication_error" => "invalid x-api-key",
        "billing_error" => "Your credit balance is too low.",
        "permission_error" => {
            "Your API key does not have permission to use the specified resource."
        }
        "not_found_error" => "Not found",
        "request_too_large" => "Request exceeds the maximum allowed number of bytes.",
        "rate_limit_error" => "Number of requests has exceeded your rate limit.",
        "timeout_error" => "Request timed out.",
        "overloaded_error" => "Overloaded",
        "api_error" => "Internal server error",
        _ => "Invalid request",
    };
    json!({
        "type": "error",
        "error": {"type": kind, "message": message.unwrap_or(default_message)},
        "request_id": request_id
    })
}

/// `GET /v1/models`.
pub(super) fn models() -> Value {
    let data: Vec<Value> = [("claude-mock", "Claude Mock"), ("claude-mock-haiku", "Claude Mock Haiku")]
        .iter()
        .map(|(id, name)| {
            json!({"type": "model", "id": id, "display_name": name, "created_at": "2026-01-01T00:00:00Z"})
        })
        .collect();
    json!({"data": data, "has_more": false, "first_id": "claude-mock", "last_id": "claude-mock-haiku"})
}
