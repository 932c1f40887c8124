//! Golden wire fixtures: captured-shape payloads under `tests/fixtures/<dialect>/`, translated
//! to the other dialect and compared with reviewed snapshots (`<case>.to_anthropic.json`,
//! `<case>.to_openai.sse`, ...). Lossless pairs also round-trip.
//!
//! To regenerate snapshots after an intended change, run with `SLUICE_BLESS=1` and review the
//! diff before committing.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns may unwrap"
)]

use std::path::PathBuf;

use serde_json::{Value, json};
use sluice_types::{Dialect, ErrorKind, StreamEvent};
use sluice_wire::sse::SseParser;
use sluice_wire::{WireError, anthropic, openai};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn read_json(name: &str) -> Value {
    serde_json::from_slice(&read(name)).unwrap()
}

fn blessing() -> bool {
    std::env::var_os("SLUICE_BLESS").is_some()
}

/// Compares `actual` with the snapshot `name` (or writes it when blessing).
fn check_json(name: &str, actual: &[u8]) {
    let actual: Value = serde_json::from_slice(actual).unwrap();
    if blessing() {
        let mut text = serde_json::to_string_pretty(&actual).unwrap();
        text.push('\n');
        std::fs::write(path(name), text).unwrap();
        return;
    }
    assert_eq!(actual, read_json(name), "snapshot {name}");
}

/// SSE events as `(event name, data as JSON or string)`, for comparison independent of
/// formatting.
fn sse_events(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut parser = SseParser::default();
    let events = parser.push(bytes).unwrap();
    assert_eq!(parser.pending(), 0, "stream ends with a complete event");
    events
        .into_iter()
        .map(|(ev, _)| {
            let data = serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data));
            (ev.event, data)
        })
        .collect()
}

fn check_sse(name: &str, actual: &[u8]) {
    if blessing() {
        std::fs::write(path(name), actual).unwrap();
        return;
    }
    assert_eq!(
        sse_events(actual),
        sse_events(&read(name)),
        "snapshot {name}"
    );
}

/// Feeds a stream fixture byte by byte (the most awkward chunking).
fn decode_stream(
    bytes: &[u8],
    mut decode: impl FnMut(&sluice_wire::sse::SseEvent) -> Vec<StreamEvent>,
) -> Vec<StreamEvent> {
    let mut parser = SseParser::default();
    let mut out = Vec::new();
    for byte in bytes.chunks(1) {
        for (ev, raw) in parser.push(byte).unwrap() {
            assert!(raw.ends_with(b"\n\n"));
            out.extend(decode(&ev));
        }
    }
    assert_eq!(parser.pending(), 0);
    out
}

fn decode_openai_stream(bytes: &[u8]) -> Vec<StreamEvent> {
    let mut dec = openai::StreamDecoder::new();
    decode_stream(bytes, |ev| dec.decode(ev).unwrap())
}

fn decode_anthropic_stream(bytes: &[u8], structured: Option<&str>) -> Vec<StreamEvent> {
    let mut dec = anthropic::StreamDecoder::new(structured.map(str::to_owned));
    decode_stream(bytes, |ev| dec.decode(ev).unwrap())
}

fn to_openai_sse(events: &[StreamEvent], include_usage: bool) -> Vec<u8> {
    let mut enc = openai::StreamEncoder::new(include_usage);
    let mut out: Vec<u8> = events.iter().flat_map(|ev| enc.encode(ev)).collect();
    out.extend(enc.finish());
    out
}

fn to_anthropic_sse(events: &[StreamEvent]) -> Vec<u8> {
    let mut enc = anthropic::StreamEncoder::new();
    let mut out: Vec<u8> = events.iter().flat_map(|ev| enc.encode(ev)).collect();
    out.extend(enc.finish());
    out
}

const ANTHROPIC_OPTS: anthropic::EncodeOptions<'static> = anthropic::EncodeOptions {
    model: "claude-sonnet-4-5",
    default_max_tokens: 4096,
};
const OPENAI_OPTS: openai::EncodeOptions<'static> = openai::EncodeOptions {
    model: "gpt-4o",
    flavor: openai::OpenAiFlavor::OpenAi,
};

// ---------------------------------------------------------------------------------------------
// Requests

#[test]
fn openai_requests_translate_to_anthropic() {
    for case in ["chat_basic", "tool_conversation", "json_schema"] {
        let req =
            openai::decode_chat_request(&read(&format!("openai/{case}.request.json"))).unwrap();
        let encoded = anthropic::encode_chat_request(&req, &ANTHROPIC_OPTS).unwrap();
        check_json(&format!("openai/{case}.to_anthropic.json"), &encoded.body);
        let expected_tool = (case == "json_schema").then(|| "calendar_event".to_owned());
        assert_eq!(encoded.structured_output_tool, expected_tool, "{case}");
    }
}

#[test]
fn anthropic_requests_translate_to_openai() {
    for case in ["messages_basic", "tool_use_conversation"] {
        let req = anthropic::decode_chat_request(&read(&format!("anthropic/{case}.request.json")))
            .unwrap();
        let body = openai::encode_chat_request(&req, &OPENAI_OPTS).unwrap();
        check_json(&format!("anthropic/{case}.to_openai.json"), &body);
    }
}

#[test]
fn requests_round_trip_within_their_dialect() {
    // Exact for the lossless fixtures; canonical fixpoint for the rest (string vs. single-part
    // content, `max_tokens` spelling and `0` vs `0.0` are not preserved byte for byte).
    for (case, exact) in [
        ("chat_basic", true),
        ("json_schema", true),
        ("tool_conversation", false),
    ] {
        let original = read(&format!("openai/{case}.request.json"));
        let req = openai::decode_chat_request(&original).unwrap();
        let opts = openai::EncodeOptions {
            model: &req.model,
            flavor: openai::OpenAiFlavor::OpenAi,
        };
        let body = openai::encode_chat_request(&req, &opts).unwrap();
        if exact {
            assert_eq!(
                serde_json::from_slice::<Value>(&body).unwrap(),
                read_json(&format!("openai/{case}.request.json")),
                "{case}"
            );
        }
        assert_eq!(openai::decode_chat_request(&body).unwrap(), req, "{case}");
    }
    for case in [
        "messages_basic",
        "tool_use_conversation",
        "extended_thinking",
        "top_k",
    ] {
        let original = read(&format!("anthropic/{case}.request.json"));
        let req = anthropic::decode_chat_request(&original).unwrap();
        let opts = anthropic::EncodeOptions {
            model: &req.model,
            default_max_tokens: 1,
        };
        let body = anthropic::encode_chat_request(&req, &opts).unwrap().body;
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            read_json(&format!("anthropic/{case}.request.json")),
            "{case}"
        );
        assert_eq!(
            anthropic::decode_chat_request(&body).unwrap(),
            req,
            "{case}"
        );
    }
}

#[test]
fn translations_refuse_what_the_target_cannot_honour() {
    let req = openai::decode_chat_request(&read("openai/logprobs.request.json")).unwrap();
    let err = anthropic::encode_chat_request(&req, &ANTHROPIC_OPTS).unwrap_err();
    assert!(
        matches!(&err, WireError::Unsupported { param, target: Dialect::Anthropic } if param == "logprobs")
    );
    assert_eq!(
        err.to_string(),
        "`logprobs` is not supported when sending to anthropic"
    );

    let req =
        anthropic::decode_chat_request(&read("anthropic/extended_thinking.request.json")).unwrap();
    let err = openai::encode_chat_request(&req, &OPENAI_OPTS).unwrap_err();
    assert!(
        matches!(&err, WireError::Unsupported { param, target: Dialect::OpenAi } if param == "thinking")
    );

    let req = anthropic::decode_chat_request(&read("anthropic/top_k.request.json")).unwrap();
    let err = openai::encode_chat_request(&req, &OPENAI_OPTS).unwrap_err();
    assert!(matches!(&err, WireError::Unsupported { param, .. } if param == "top_k"));
    assert_eq!(
        sluice_types::Classify::kind(&err),
        ErrorKind::UnsupportedParameter
    );
}

#[test]
fn count_tokens_body_keeps_only_counted_fields() {
    let req = anthropic::decode_count_tokens_request(&read(
        "anthropic/tool_use_conversation.request.json",
    ))
    .unwrap();
    let body: Value = serde_json::from_slice(
        &anthropic::encode_count_tokens_request(&req, "claude-opus-4-1").unwrap(),
    )
    .unwrap();
    let mut expected = read_json("anthropic/tool_use_conversation.request.json");
    expected.as_object_mut().unwrap().remove("max_tokens");
    assert_eq!(body, expected);
}

// ---------------------------------------------------------------------------------------------
// Responses

/// Structural check of an encoded body against `CreateChatCompletionResponse` in the OpenAI
/// OpenAPI spec: required keys, constants and enums of the response, its choices, messages,
/// tool calls and usage.
fn assert_valid_openai_response(body: &Value) {
    for key in ["id", "object", "created", "model", "choices"] {
        assert!(body.get(key).is_some(), "missing {key}");
    }
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].is_i64() && body["id"].is_string() && body["model"].is_string());
    for choice in body["choices"].as_array().unwrap() {
        for key in ["finish_reason", "index", "message", "logprobs"] {
            assert!(choice.get(key).is_some(), "choice missing {key}");
        }
        let reason = choice["finish_reason"].as_str().unwrap();
        assert!(
            [
                "stop",
                "length",
                "tool_calls",
                "content_filter",
                "function_call"
            ]
            .contains(&reason)
        );
        let message = &choice["message"];
        assert_eq!(message["role"], "assistant");
        assert!(message["content"].is_string() || message["content"].is_null());
        assert!(message["refusal"].is_string() || message["refusal"].is_null());
        for call in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert_eq!(call["type"], "function");
            assert!(call["id"].is_string() && call["function"]["name"].is_string());
            assert!(call["function"]["arguments"].is_string());
        }
    }
    if let Some(usage) = body.get("usage") {
        for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert!(usage[key].is_u64(), "usage.{key}");
        }
    }
}

#[test]
fn openai_responses_translate_to_anthropic() {
    for case in ["text_completion", "tool_calls_completion"] {
        let original = read(&format!("openai/{case}.response.json"));
        let resp = openai::decode_chat_response(&original).unwrap();
        check_json(
            &format!("openai/{case}.to_anthropic.json"),
            &anthropic::encode_chat_response(&resp),
        );
        // Same-dialect round trip: valid against the spec and the same canonical response.
        let again = openai::encode_chat_response(&resp);
        assert_valid_openai_response(&serde_json::from_slice(&again).unwrap());
        assert_eq!(
            openai::decode_chat_response(&again).unwrap(),
            resp,
            "{case}"
        );
    }
}

#[test]
fn anthropic_responses_translate_to_openai() {
    for (case, structured) in [
        ("tool_use", None),
        ("structured_output", Some("calendar_event")),
    ] {
        let original = read(&format!("anthropic/{case}.response.json"));
        let resp = anthropic::decode_chat_response_with(&original, structured).unwrap();
        let body = openai::encode_chat_response(&resp);
        assert_valid_openai_response(&serde_json::from_slice(&body).unwrap());
        check_json(&format!("anthropic/{case}.to_openai.json"), &body);
    }
    // Lossless within the dialect, apart from the `cache_creation` breakdown and tier.
    let resp = anthropic::decode_chat_response(&read("anthropic/tool_use.response.json")).unwrap();
    let mut expected = read_json("anthropic/tool_use.response.json");
    let usage = expected["usage"].as_object_mut().unwrap();
    usage.remove("cache_creation");
    usage.remove("service_tier");
    assert_eq!(
        serde_json::from_slice::<Value>(&anthropic::encode_chat_response(&resp)).unwrap(),
        expected
    );
}

#[test]
fn upstream_error_bodies_are_read() {
    let err = openai::decode_error(&read("openai/rate_limited.error.json")).unwrap();
    assert_eq!(
        (err.error_type.as_deref(), err.code.as_deref()),
        (Some("requests"), Some("rate_limit_exceeded"))
    );
    let err = anthropic::decode_error(&read("anthropic/overloaded.error.json")).unwrap();
    assert_eq!(
        (err.error_type.as_deref(), err.message.as_str()),
        (Some("overloaded_error"), "Overloaded")
    );
    let body: Value = serde_json::from_slice(&openai::encode_error(
        ErrorKind::RateLimited,
        &err.message,
        None,
    ))
    .unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "Overloaded", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
    );
}

// ---------------------------------------------------------------------------------------------
// Streams

#[test]
fn openai_streams_translate_to_anthropic() {
    for case in ["text_stream", "tool_stream"] {
        let events = decode_openai_stream(&read(&format!("openai/{case}.stream.sse")));
        check_sse(
            &format!("openai/{case}.to_anthropic.sse"),
            &to_anthropic_sse(&events),
        );
        // Same-dialect round trip keeps every canonical event.
        let again = to_openai_sse(&events, true);
        assert_eq!(decode_openai_stream(&again), events, "{case}");
    }
}

#[test]
fn anthropic_streams_translate_to_openai() {
    for (case, structured) in [
        ("text_stream", None),
        ("tool_use_stream", None),
        ("overloaded", None),
        ("structured_output", Some("calendar_event")),
    ] {
        let events =
            decode_anthropic_stream(&read(&format!("anthropic/{case}.stream.sse")), structured);
        let openai_bytes = to_openai_sse(&events, true);
        check_sse(&format!("anthropic/{case}.to_openai.sse"), &openai_bytes);
        for (_, data) in sse_events(&openai_bytes) {
            if data.get("choices").is_some() {
                assert_eq!(data["object"], "chat.completion.chunk");
            }
        }
        if structured.is_none() {
            let again = to_anthropic_sse(&events);
            assert_eq!(decode_anthropic_stream(&again, None), events, "{case}");
        }
    }
}

#[test]
fn upstream_error_mid_stream_ends_the_client_stream_without_done() {
    let events = decode_anthropic_stream(&read("anthropic/overloaded.stream.sse"), None);
    assert!(
        matches!(events.last(), Some(StreamEvent::Error(e)) if e.kind == ErrorKind::UpstreamOverloaded)
    );
    let bytes = to_openai_sse(&events, true);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("\"error\""));
    assert!(!text.contains("[DONE]"));
}
