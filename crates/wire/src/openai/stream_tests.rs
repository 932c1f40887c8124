use serde_json::{Value, json};
use sluice_types::{ErrorKind, FinishReason, StreamError, StreamEvent, Usage};

use super::*;
use crate::sse::SseParser;

const UPSTREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":1}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
    "data: [DONE]\n\n",
);

fn decode_all(input: &[u8], chunk: usize) -> (Vec<StreamEvent>, bool) {
    let mut parser = SseParser::default();
    let mut dec = StreamDecoder::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        for (ev, _) in parser.push(piece).unwrap() {
            out.extend(dec.decode(&ev).unwrap());
        }
    }
    (out, dec.is_done())
}

fn expected_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "chatcmpl-9".into(),
            model: "gpt-4o".into(),
            created: 1700000000,
        },
        StreamEvent::TextDelta {
            choice: 0,
            text: "Hi".into(),
        },
        StreamEvent::ToolCallStart {
            choice: 0,
            index: 0,
            id: "call_a".into(),
            name: "get".into(),
        },
        StreamEvent::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: "{\"q\":1}".into(),
        },
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::ToolUse,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 9,
            output_tokens: 4,
            ..Usage::default()
        }),
    ]
}

#[test]
fn decodes_upstream_stream_byte_by_byte() {
    for chunk in [1, 5, UPSTREAM.len()] {
        let (events, done) = decode_all(UPSTREAM.as_bytes(), chunk);
        assert_eq!(events, expected_events());
        assert!(done);
    }
}

#[test]
fn error_chunk_becomes_error_event() {
    let mut dec = StreamDecoder::new();
    let ev = SseEvent {
        event: None,
        data: r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#.into(),
    };
    assert_eq!(
        dec.decode(&ev).unwrap(),
        vec![StreamEvent::Error(StreamError {
            kind: ErrorKind::UpstreamUnavailable,
            message: "The server had an error".into()
        })]
    );
    let garbage = SseEvent {
        event: None,
        data: "not json".into(),
    };
    let err = dec.decode(&garbage).unwrap_err();
    assert!(matches!(err, WireError::UpstreamMalformed(_)));
}

#[test]
fn error_chunks_of_other_shapes_are_errors_too() {
    let event = |data: &str| SseEvent {
        event: None,
        data: data.into(),
    };
    // vLLM's shape; and an error whose other fields would not fit a chunk.
    for data in [
        r#"{"object":"error","message":"Too many requests","type":"rate_limit_exceeded","code":429}"#,
        r#"{"error":{"message":"boom","type":"server_error"},"choices":"n/a"}"#,
    ] {
        let events = StreamDecoder::new().decode(&event(data)).unwrap();
        assert!(
            matches!(&events[..], [StreamEvent::Error(_)]),
            "{data}: {events:?}"
        );
    }
}

#[test]
fn a_misshapen_chunk_names_the_field() {
    let event = SseEvent {
        event: None,
        data: r#"{"choices":[{"delta":{"content":7}}]}"#.into(),
    };
    let cause = StreamDecoder::new()
        .decode(&event)
        .unwrap_err()
        .upstream_cause();
    assert!(
        cause.starts_with("`choices[0].delta.content`: invalid type: integer `7`"),
        "{cause}"
    );
}

#[test]
fn null_fields_and_unknown_ones_are_skipped() {
    let event = SseEvent {
        event: None,
        data: r#"{"id":null,"object":"chat.completion.chunk","system_fingerprint":"fp",
            "choices":[{"index":0,"delta":{"role":"assistant","content":null,"refusal":null},
            "logprobs":null,"finish_reason":null}],"usage":null}"#
            .into(),
    };
    let events = StreamDecoder::new().decode(&event).unwrap();
    assert_eq!(
        events,
        vec![StreamEvent::Start {
            id: String::new(),
            model: String::new(),
            created: 0
        }]
    );
}

#[test]
fn whole_tool_call_in_one_delta_yields_start_and_delta() {
    let mut dec = StreamDecoder::new();
    let ev = SseEvent {
        event: None,
        data: r#"{"id":"x","model":"llama","created":1,"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#.into(),
    };
    let events = dec.decode(&ev).unwrap();
    assert_eq!(events.len(), 4);
    assert!(matches!(&events[1], StreamEvent::ToolCallStart { index: 0, name, .. } if name == "f"));
    assert!(
        matches!(&events[2], StreamEvent::ToolCallDelta { arguments, .. } if arguments == "{}")
    );
}

fn chunks(bytes: &[u8]) -> Vec<Value> {
    let mut parser = SseParser::default();
    parser
        .push(bytes)
        .unwrap()
        .into_iter()
        .map(|(ev, _)| serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data)))
        .collect()
}

#[test]
fn encoder_emits_openai_chunks_and_usage_at_finish() {
    let mut enc = StreamEncoder::new(true);
    let mut bytes = Vec::new();
    for ev in expected_events() {
        bytes.extend(enc.encode(&ev));
    }
    bytes.extend(enc.finish());
    assert!(enc.finish().is_empty());
    let got = chunks(&bytes);
    let envelope = |choices: Value| json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o", "choices": choices});
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let mut usage_chunk = envelope(json!([]));
    usage_chunk["usage"] = json!({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 0}});
    assert_eq!(
        got,
        vec![
            envelope(choice(
                json!({"role": "assistant", "content": ""}),
                Value::Null
            )),
            envelope(choice(json!({"content": "Hi"}), Value::Null)),
            envelope(choice(
                json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get", "arguments": ""}}]}),
                Value::Null
            )),
            envelope(choice(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":1}"}}]}),
                Value::Null
            )),
            envelope(choice(json!({}), json!("tool_calls"))),
            usage_chunk,
            Value::String("[DONE]".into()),
        ]
    );
}

#[test]
fn encoder_skips_usage_chunk_unless_asked() {
    let mut enc = StreamEncoder::new(false);
    for ev in expected_events() {
        enc.encode(&ev);
    }
    assert_eq!(enc.finish(), b"data: [DONE]\n\n");
}

#[test]
fn encoder_error_ends_stream_without_done() {
    let mut enc = StreamEncoder::new(true);
    enc.encode(&expected_events()[0]);
    let err = enc.encode(&StreamEvent::Error(StreamError {
        kind: ErrorKind::UpstreamOverloaded,
        message: "overloaded".into(),
    }));
    let got = chunks(&err);
    assert_eq!(got[0]["error"]["type"], "server_error");
    assert_eq!(got[0]["error"]["code"], "upstream_overloaded");
    assert!(enc.encode(&expected_events()[1]).is_empty());
    assert!(enc.finish().is_empty());
}

#[test]
fn second_choice_gets_its_own_role_chunk() {
    let mut enc = StreamEncoder::new(false);
    enc.encode(&expected_events()[0]);
    let got = chunks(&enc.encode(&StreamEvent::TextDelta {
        choice: 1,
        text: "b".into(),
    }));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["choices"][0]["index"], 1);
    assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(got[1]["choices"][0]["delta"]["content"], "b");
}

#[test]
fn a_stop_string_the_server_names_in_a_stream_is_a_stop_sequence() {
    // vLLM puts the matched stop string in the finishing chunk's `stop_reason`.
    let stream = concat!(
        "data: {\"id\":\"cmpl-1\",\"model\":\"qwen\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"one, two\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"model\":\"qwen\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\",\"stop_reason\":\"three\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let (events, done) = decode_all(stream.as_bytes(), 7);
    assert!(done);
    assert!(events.contains(&StreamEvent::Finish {
        choice: 0,
        reason: FinishReason::StopSequence(Some("three".into())),
    }));
}

#[test]
fn escaped_ids_models_and_finish_reasons_decode_to_their_text() {
    // Some servers escape `/` (PHP's json_encode does); the decoded strings carry the text.
    let input = concat!(
        "data: {\"id\":\"chat\\u002d1\",\"created\":1,\"model\":\"meta-llama\\/Llama-3\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\nb\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chat\\u002d1\",\"model\":\"meta-llama\\/Llama-3\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"\\u0073top\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let (events, done) = decode_all(input.as_bytes(), 7);
    assert!(done);
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "chat-1".into(),
                model: "meta-llama/Llama-3".into(),
                created: 1,
            },
            StreamEvent::TextDelta {
                choice: 0,
                text: "a\nb".into(),
            },
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::EndTurn,
            },
        ]
    );
}
