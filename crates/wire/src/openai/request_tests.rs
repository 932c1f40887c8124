use serde_json::{Value, json};
use sluice_types::{
    ChatRequest, Classify, Dialect, ErrorKind, ImageSource, Part, ResponseFormat, Role, ToolChoice,
};

use super::*;

fn decode(v: Value) -> Result<ChatRequest, WireError> {
    decode_chat_request(&serde_json::to_vec(&v).unwrap())
}

fn encode(req: &ChatRequest, flavor: OpenAiFlavor) -> Value {
    let body = encode_chat_request(
        req,
        &EncodeOptions {
            model: "up-model",
            flavor,
        },
    )
    .unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn err_text(v: Value) -> String {
    decode(v).unwrap_err().to_string()
}

#[test]
fn decodes_every_parameter() {
    let req = decode(json!({
        "model": "fast",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "d", "parameters": {"type": "object"}, "strict": true}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 20,
        "stop": "END", "n": 2, "seed": -3, "logprobs": true, "top_logprobs": 2,
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "user": "u-1",
        "metadata": {"k": "v"},
        "logit_bias": {"50256": -100}, "store": null
    }))
    .unwrap();
    assert_eq!(req.model, "fast");
    assert_eq!(req.messages.len(), 4);
    assert_eq!(req.messages[0].role, Role::Developer);
    assert_eq!(req.messages[1].name.as_deref(), Some("ann"));
    assert_eq!(
        req.messages[1].parts[1],
        Part::Image {
            source: ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            },
            detail: Some("low".into()),
        }
    );
    assert!(
        matches!(&req.messages[2].parts[..], [Part::ToolCall(c)] if c.arguments == "{\"x\":1}")
    );
    assert_eq!(
        req.messages[3].parts,
        vec![Part::ToolResult {
            tool_call_id: "call_1".into(),
            content: vec![Part::text("a cat")],
            is_error: false
        }]
    );
    assert_eq!(req.tools[0].strict, Some(true));
    assert_eq!(req.tool_choice, Some(ToolChoice::Named("look".into())));
    assert_eq!(req.parallel_tool_calls, Some(false));
    assert!(
        matches!(req.response_format, Some(ResponseFormat::JsonSchema { ref name, .. }) if name == "out")
    );
    assert!(req.stream && req.include_usage);
    assert_eq!(req.max_tokens, Some(20), "max_completion_tokens wins");
    assert_eq!(req.stop, vec!["END".to_string()]);
    assert_eq!(
        (req.n, req.seed, req.logprobs, req.top_logprobs),
        (Some(2), Some(-3), Some(true), Some(2))
    );
    assert_eq!(req.user.as_deref(), Some("u-1"));
    assert_eq!(req.extras.dialect, Dialect::OpenAi);
    assert_eq!(req.extras.fields.len(), 1, "null `store` is not an extra");
    assert!(req.extras.fields.contains_key("logit_bias"));
}

#[test]
fn errors_name_the_field_path() {
    let base = |content: Value| {
        json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
            {"role": "user", "content": content}
        ]})
    };
    assert_eq!(
        err_text(base(json!([{"type": "video", "video": {}}]))),
        "`messages[2].content[0].type`: unknown value `video`, expected one of: text, image_url, input_audio, file"
    );
    let err = decode(base(
        json!([{"type": "text", "text": "a"}, {"type": "input_audio", "input_audio": {}}]),
    ))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedParameter);
    assert_eq!(
        err.to_string(),
        "`messages[2].content[1].type`: `input_audio` is not supported"
    );
    assert_eq!(
        err_text(base(json!(5))),
        "`messages[2].content`: expected string or array, found number"
    );
    assert_eq!(
        err_text(base(json!([{"type": "text"}]))),
        "`messages[2].content[0].text` is required"
    );
}

#[test]
fn required_fields_and_types_are_checked() {
    assert_eq!(
        err_text(json!({"messages": [{"role": "user", "content": "x"}]})),
        "`model` is required"
    );
    assert_eq!(err_text(json!({"model": "m"})), "`messages` is required");
    assert_eq!(
        err_text(json!({"model": "m", "messages": []})),
        "`messages` must contain at least one message"
    );
    assert_eq!(
        err_text(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"})
        ),
        "`temperature`: expected number, found string"
    );
    assert_eq!(
        err_text(json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]})),
        "`messages[0].role`: unknown value `robot`, expected one of: system, developer, user, assistant, tool, function"
    );
    assert_eq!(
        err_text(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]})),
        "`messages[0].tool_call_id` is required"
    );
    assert_eq!(
        err_text(json!({"model": "m", "messages": [{"role": "assistant"}]})),
        "`messages[0].content` is required"
    );
    assert_eq!(
        err_text(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "maybe"})
        ),
        "`tool_choice`: unknown value `maybe`, expected one of: none, auto, required"
    );
    assert_eq!(
        err_text(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}})
        ),
        "`response_format.type`: unknown value `yaml`, expected one of: text, json_object, json_schema"
    );
    let err = decode_chat_request(b"\xff").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.to_string().contains("UTF-8"));
}

#[test]
fn unsupported_inputs_are_refused() {
    let with = |extra: Value| {
        let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        decode(v).unwrap_err().to_string()
    };
    assert_eq!(
        with(json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]})),
        "`tools[0].type`: `custom` is not supported"
    );
    assert_eq!(
        with(json!({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}})),
        "`tool_choice.type`: `allowed_tools` is not supported"
    );
    assert_eq!(
        err_text(
            json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]})
        ),
        "`messages[0].role`: `function` is not supported"
    );
    assert_eq!(
        err_text(json!({"model": "m", "messages": [{"role": "assistant", "audio": {"id": "a"}}]})),
        "`messages[0].audio`: `audio` is not supported"
    );
}

#[test]
fn stream_always_requests_usage_upstream() {
    let mut req = decode(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}),
    )
    .unwrap();
    assert!(!req.include_usage);
    let body = encode(&req, OpenAiFlavor::OpenAi);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    req.stream = false;
    assert!(
        encode(&req, OpenAiFlavor::OpenAi)
            .get("stream_options")
            .is_none()
    );
}

#[test]
fn flavors_differ_in_max_tokens_and_developer_role() {
    let req = decode(json!({"model": "m", "max_tokens": 7, "messages": [
        {"role": "developer", "content": "rules"}, {"role": "user", "content": "x"}]}))
    .unwrap();
    let openai = encode(&req, OpenAiFlavor::OpenAi);
    assert_eq!(openai["max_completion_tokens"], 7);
    assert!(openai.get("max_tokens").is_none());
    assert_eq!(openai["messages"][0]["role"], "developer");
    assert_eq!(openai["model"], "up-model");
    let compat = encode(&req, OpenAiFlavor::Compatible);
    assert_eq!(compat["max_tokens"], 7);
    assert!(compat.get("max_completion_tokens").is_none());
    assert_eq!(compat["messages"][0]["role"], "system");
}

#[test]
fn refuses_what_openai_cannot_honour() {
    let mut req =
        decode(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).unwrap();
    req.top_k = Some(5);
    let opts = EncodeOptions {
        model: "x",
        flavor: OpenAiFlavor::OpenAi,
    };
    let err = encode_chat_request(&req, &opts).unwrap_err();
    assert!(
        matches!(&err, WireError::Unsupported { param, target: Dialect::OpenAi } if param == "top_k")
    );
    assert_eq!(err.kind(), ErrorKind::UnsupportedParameter);

    req.top_k = None;
    req.extras.dialect = Dialect::Anthropic;
    req.extras.fields.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": 1024}),
    );
    let err = encode_chat_request(&req, &opts).unwrap_err();
    assert!(matches!(&err, WireError::Unsupported { param, .. } if param == "thinking"));

    req.extras.fields.clear();
    req.system = vec![Part::Image {
        source: ImageSource::Url("https://x/y.png".into()),
        detail: None,
    }];
    let err = encode_chat_request(&req, &opts).unwrap_err();
    assert!(matches!(&err, WireError::Unsupported { param, .. } if param == "system.content[0]"));
}

#[test]
fn splits_tool_results_out_of_mixed_messages() {
    let mut req =
        decode(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).unwrap();
    req.system = vec![Part::text("sys")];
    req.messages[0] = sluice_types::Message {
        role: Role::User,
        name: None,
        parts: vec![
            Part::ToolResult {
                tool_call_id: "a".into(),
                content: vec![Part::text("1")],
                is_error: true,
            },
            Part::ToolResult {
                tool_call_id: "b".into(),
                content: vec![],
                is_error: false,
            },
            Part::text("and then?"),
        ],
    };
    let body = encode(&req, OpenAiFlavor::OpenAi);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "sys"},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": ""},
            {"role": "user", "content": "and then?"}
        ])
    );
}

#[test]
fn openai_round_trip_is_lossless() {
    let original = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "https://x/i.png"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "r"}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
        "stop": ["x", "y"],
        "seed": 1,
        "logit_bias": {"1": 2}
    });
    let req = decode(original.clone()).unwrap();
    let mut encoded = encode(&req, OpenAiFlavor::OpenAi);
    encoded["model"] = json!("m");
    // The one change: a tool-calling turn's `null` content goes out as `""`.
    let mut expected = original.clone();
    expected["messages"][2]["content"] = json!("");
    assert_eq!(encoded, expected);
    assert_eq!(decode(encoded).unwrap(), req);
}

#[test]
fn image_url_may_be_a_bare_string() {
    let req = decode(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "https://example.com/cat.png"}]}]}),
    )
    .unwrap();
    assert_eq!(
        req.messages[0].parts,
        vec![Part::Image {
            source: ImageSource::Url("https://example.com/cat.png".into()),
            detail: None
        }]
    );
}

#[test]
fn assistant_turn_that_only_calls_tools_goes_out_with_empty_content() {
    // llama.cpp's server rejects `content: null`; OpenAI accepts `""` as well.
    let req = decode(json!({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "sunny"}
    ]}))
    .unwrap();
    for flavor in [OpenAiFlavor::OpenAi, OpenAiFlavor::Compatible] {
        let assistant = &encode(&req, flavor)["messages"][1];
        assert_eq!(assistant["content"], json!(""), "{flavor:?}");
        assert_eq!(assistant["tool_calls"][0]["id"], json!("c"));
    }
}

#[test]
fn schema_tool_and_argument_key_order_survive_re_encoding() {
    // Structured outputs are generated in schema order: `reasoning` must stay before `answer`.
    let raw = br#"{"model": "m", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "{\"zeta\":1,\"alpha\":2}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"}],
      "tools": [{"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "integer"}}}}}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema":
        {"type": "object", "properties": {"reasoning": {"type": "string"}, "answer": {"type": "string"}}}}},
      "logit_bias": {"9": 1, "1": 2}}"#;
    let req = decode_chat_request(raw).unwrap();
    let body = String::from_utf8(
        encode_chat_request(
            &req,
            &EncodeOptions {
                model: "m",
                flavor: OpenAiFlavor::OpenAi,
            },
        )
        .unwrap(),
    )
    .unwrap();
    for expected in [
        r#""properties":{"reasoning":{"type":"string"},"answer":{"type":"string"}}"#,
        r#""properties":{"zeta":{"type":"integer"},"alpha":{"type":"integer"}}"#,
        r#""arguments":"{\"zeta\":1,\"alpha\":2}""#,
        r#""logit_bias":{"9":1,"1":2}"#,
    ] {
        assert!(body.contains(expected), "{expected} in {body}");
    }
}

#[test]
fn schema_and_tool_key_order_survive_translation_to_openai() {
    let req = crate::anthropic::decode_chat_request(
        br#"{"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"zeta": 1, "alpha": 2}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}],
          "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"zeta": {}, "alpha": {}}}}]}"#,
    )
    .unwrap();
    let body = String::from_utf8(
        encode_chat_request(
            &req,
            &EncodeOptions {
                model: "m",
                flavor: OpenAiFlavor::Compatible,
            },
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        body.contains(r#""properties":{"zeta":{},"alpha":{}}"#),
        "{body}"
    );
    assert!(
        body.contains(r#""arguments":"{\"zeta\":1,\"alpha\":2}""#),
        "{body}"
    );
}
