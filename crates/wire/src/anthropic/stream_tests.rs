use serde_json::{Value, json};
use sluice_types::{ErrorKind, FinishReason, StreamError, StreamEvent, Usage};

use super::*;
use crate::sse::SseParser;

const UPSTREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check.\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":40}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

fn decode_all(input: &[u8], chunk: usize, structured: Option<&str>) -> (Vec<StreamEvent>, bool) {
    let mut parser = SseParser::default();
    let mut dec = StreamDecoder::new(structured.map(str::to_owned));
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        for (ev, _) in parser.push(piece).unwrap() {
            out.extend(dec.decode(&ev).unwrap());
        }
    }
    (out, dec.is_done())
}

fn input_usage() -> Usage {
    Usage {
        input_tokens: 112,
        output_tokens: 1,
        cached_input_tokens: 100,
        ..Usage::default()
    }
}

fn expected_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "msg_1".into(),
            model: "claude-sonnet-4-5".into(),
            created: 0,
        },
        StreamEvent::Usage(input_usage()),
        StreamEvent::TextDelta {
            choice: 0,
            text: "Let me check.".into(),
        },
        StreamEvent::ToolCallStart {
            choice: 0,
            index: 0,
            id: "toolu_1".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: "{\"city\": \"Paris\"}".into(),
        },
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::ToolUse,
        },
        StreamEvent::Usage(Usage {
            output_tokens: 40,
            ..input_usage()
        }),
    ]
}

#[test]
fn decodes_upstream_stream_byte_by_byte() {
    for chunk in [1, 3, UPSTREAM.len()] {
        let (events, done) = decode_all(UPSTREAM.as_bytes(), chunk, None);
        assert_eq!(events, expected_events());
        assert!(done);
    }
}

#[test]
fn structured_output_tool_streams_as_text() {
    let (events, _) = decode_all(UPSTREAM.as_bytes(), 64, Some("get_weather"));
    assert_eq!(
        events[2..6],
        [
            StreamEvent::TextDelta {
                choice: 0,
                text: "Let me check.".into()
            },
            StreamEvent::TextDelta {
                choice: 0,
                text: "{\"city\": \"Paris\"}".into()
            },
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::EndTurn
            },
            StreamEvent::Usage(Usage {
                output_tokens: 40,
                ..input_usage()
            }),
        ]
    );
}

#[test]
fn error_event_is_classified() {
    let mut dec = StreamDecoder::new(None);
    let ev = SseEvent {
        event: Some("error".into()),
        data: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            .into(),
    };
    assert_eq!(
        dec.decode(&ev).unwrap(),
        vec![StreamEvent::Error(StreamError {
            kind: ErrorKind::UpstreamOverloaded,
            message: "Overloaded".into()
        })]
    );
    let bad = SseEvent {
        event: Some("content_block_delta".into()),
        data: r#"{"type":"content_block_delta"}"#.into(),
    };
    assert!(matches!(
        dec.decode(&bad).unwrap_err(),
        WireError::UpstreamMalformed(_)
    ));
}

fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    let mut parser = SseParser::default();
    parser
        .push(bytes)
        .unwrap()
        .into_iter()
        .map(|(ev, _)| {
            (
                ev.event.unwrap_or_default(),
                serde_json::from_str(&ev.data).unwrap(),
            )
        })
        .collect()
}

#[test]
fn encoder_emits_the_anthropic_sequence() {
    let mut enc = StreamEncoder::new();
    let mut bytes = Vec::new();
    for ev in expected_events() {
        bytes.extend(enc.encode(&ev));
    }
    bytes.extend(enc.finish());
    assert!(enc.finish().is_empty());
    let got = events(&bytes);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &got {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(
        got[0].1["message"],
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
               "stop_reason": null, "stop_sequence": null,
               "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100, "output_tokens": 1}})
    );
    assert_eq!(
        got[2].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        got[3].1["delta"],
        json!({"type": "text_delta", "text": "Let me check."})
    );
    assert_eq!(
        got[5].1,
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}})
    );
    assert_eq!(
        got[6].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"city\": \"Paris\"}"})
    );
    assert_eq!(got[7].1["index"], 1);
    assert_eq!(
        got[8].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100, "output_tokens": 40}})
    );
}

#[test]
fn message_delta_waits_for_late_usage() {
    // OpenAI order: finish chunk, then the usage chunk.
    let mut enc = StreamEncoder::new();
    let mut bytes = enc.encode(&StreamEvent::Start {
        id: "chatcmpl-1".into(),
        model: "gpt-4o".into(),
        created: 1,
    });
    assert!(bytes.is_empty(), "message_start waits for the next event");
    bytes.extend(enc.encode(&StreamEvent::TextDelta {
        choice: 0,
        text: "hi".into(),
    }));
    let finish = enc.encode(&StreamEvent::Finish {
        choice: 0,
        reason: FinishReason::EndTurn,
    });
    assert_eq!(events(&finish).len(), 1, "only content_block_stop");
    bytes.extend(finish);
    bytes.extend(enc.encode(&StreamEvent::Usage(Usage {
        input_tokens: 5,
        output_tokens: 2,
        ..Usage::default()
    })));
    assert!(enc.finish().is_empty());
    let got = events(&bytes);
    assert_eq!(got[0].1["message"]["usage"]["input_tokens"], 0);
    let delta = &got[got.len() - 2].1;
    assert_eq!(delta["usage"]["input_tokens"], 5);
    assert_eq!(delta["usage"]["output_tokens"], 2);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(got.last().unwrap().0, "message_stop");
}

#[test]
fn finish_flushes_when_usage_never_comes() {
    let mut enc = StreamEncoder::new();
    enc.encode(&StreamEvent::Start {
        id: "x".into(),
        model: "m".into(),
        created: 0,
    });
    enc.encode(&StreamEvent::Finish {
        choice: 0,
        reason: FinishReason::StopSequence(Some("END".into())),
    });
    let got = events(&enc.finish());
    assert_eq!(
        got[0].1["delta"],
        json!({"stop_reason": "stop_sequence", "stop_sequence": "END"})
    );
    assert_eq!(got[1].0, "message_stop");
}

#[test]
fn error_ends_the_stream() {
    let mut enc = StreamEncoder::new();
    enc.encode(&StreamEvent::Start {
        id: "x".into(),
        model: "m".into(),
        created: 0,
    });
    enc.encode(&StreamEvent::TextDelta {
        choice: 0,
        text: "a".into(),
    });
    let got = events(&enc.encode(&StreamEvent::Error(StreamError {
        kind: ErrorKind::UpstreamTimeout,
        message: "took too long".into(),
    })));
    assert_eq!(
        got,
        vec![(
            "error".into(),
            json!({"type": "error", "error": {"type": "timeout_error", "message": "took too long"}})
        )]
    );
    assert!(
        enc.encode(&StreamEvent::TextDelta {
            choice: 0,
            text: "b".into()
        })
        .is_empty()
    );
    assert!(enc.finish().is_empty());
}

#[test]
fn other_choices_are_not_rendered() {
    let mut enc = StreamEncoder::new();
    enc.encode(&StreamEvent::Start {
        id: "x".into(),
        model: "m".into(),
        created: 0,
    });
    assert!(
        enc.encode(&StreamEvent::TextDelta {
            choice: 1,
            text: "b".into()
        })
        .is_empty()
    );
}

#[test]
fn openai_dialect_streams_get_an_anthropic_id_and_named_stop_sequences() {
    let mut enc = StreamEncoder::new();
    let mut bytes = enc.encode(&StreamEvent::Start {
        id: "chatcmpl-7f3a-9b".into(),
        model: "qwen".into(),
        created: 1,
    });
    bytes.extend(enc.encode(&StreamEvent::TextDelta {
        choice: 0,
        text: "one, two".into(),
    }));
    bytes.extend(enc.encode(&StreamEvent::Finish {
        choice: 0,
        reason: FinishReason::StopSequence(Some("three".into())),
    }));
    bytes.extend(enc.encode(&StreamEvent::Usage(Usage::default())));
    let got = events(&bytes);
    assert_eq!(got[0].1["message"]["id"], "msg_7f3a9b");
    let delta = &got[got.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
    assert_eq!(delta["delta"]["stop_sequence"], "three");
}
