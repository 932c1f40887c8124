use serde_json::{Value, json};
use sluice_types::{
    ChatRequest, Classify, Dialect, ErrorKind, ImageSource, Part, Role, ToolChoice,
};

use super::*;

fn decode(v: Value) -> Result<ChatRequest, WireError> {
    decode_chat_request(&serde_json::to_vec(&v).unwrap())
}

fn encode(req: &ChatRequest) -> (Value, Option<String>) {
    let enc = encode_chat_request(
        req,
        &EncodeOptions {
            model: "claude-up",
            default_max_tokens: 4096,
        },
    )
    .unwrap();
    (
        serde_json::from_slice(&enc.body).unwrap(),
        enc.structured_output_tool,
    )
}

fn encode_err(req: &ChatRequest) -> WireError {
    encode_chat_request(
        req,
        &EncodeOptions {
            model: "m",
            default_max_tokens: 1,
        },
    )
    .unwrap_err()
}

fn minimal() -> Value {
    json!({"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
}

fn openai_like(messages: Vec<sluice_types::Message>) -> ChatRequest {
    let mut req = decode(minimal()).unwrap();
    req.messages = messages;
    req.max_tokens = None;
    req.extras.dialect = Dialect::OpenAi;
    req
}

fn msg(role: Role, parts: Vec<Part>) -> sluice_types::Message {
    sluice_types::Message {
        role,
        parts,
        name: None,
    }
}

#[test]
fn decodes_every_parameter() {
    let req = decode(json!({
        "model": "claude", "max_tokens": 1024,
        "system": [{"type": "text", "text": "be kind", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
                {"type": "text", "text": "what?"}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "let me look"},
                {"type": "tool_use", "id": "toolu_1", "name": "zoom", "input": {"level": 2}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "zoomed", "is_error": true, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "now?"}
            ]}
        ],
        "tools": [{"name": "zoom", "description": "z", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["\n\nHuman:"], "temperature": 0.2, "top_p": 0.8, "top_k": 40,
        "metadata": {"user_id": "u-9"}, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 2048}
    }))
    .unwrap();
    assert_eq!(req.max_tokens, Some(1024));
    assert_eq!(
        req.system,
        vec![Part::Text {
            text: "be kind".into(),
            cache_control: Some(json!({"type": "ephemeral"}))
        }]
    );
    let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        vec![Role::User, Role::Assistant, Role::Tool, Role::User]
    );
    assert!(matches!(
        &req.messages[0].parts[0],
        Part::Image {
            source: ImageSource::Base64 { .. },
            detail: None
        }
    ));
    assert!(
        matches!(&req.messages[1].parts[1], Part::ToolCall(c) if c.arguments == r#"{"level":2}"#)
    );
    assert_eq!(
        req.messages[2].parts,
        vec![Part::ToolResult {
            tool_call_id: "toolu_1".into(),
            content: vec![Part::Text {
                text: "zoomed".into(),
                cache_control: Some(json!({"type": "ephemeral"}))
            }],
            is_error: true,
        }]
    );
    assert_eq!(req.messages[3].parts, vec![Part::text("now?")]);
    assert_eq!(req.tool_choice, Some(ToolChoice::Required));
    assert_eq!(req.parallel_tool_calls, Some(false));
    assert_eq!(
        (req.top_k, req.user.as_deref(), req.stream),
        (Some(40), Some("u-9"), true)
    );
    assert_eq!(req.extras.dialect, Dialect::Anthropic);
    assert!(req.extras.fields.contains_key("thinking"));
}

#[test]
fn errors_name_the_field_path() {
    let with_content = |content: Value| {
        let mut v = minimal();
        v["messages"] = json!([
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": content}
        ]);
        decode(v).unwrap_err()
    };
    assert_eq!(
        with_content(json!([{"type": "txt", "text": "x"}])).to_string(),
        "`messages[2].content[0].type`: unknown value `txt`, expected one of: text, image, tool_result"
    );
    let err =
        with_content(json!([{"type": "text", "text": "x"}, {"type": "document", "source": {}}]));
    assert_eq!(err.kind(), ErrorKind::UnsupportedParameter);
    assert_eq!(
        err.to_string(),
        "`messages[2].content[1].type`: `document` is not supported"
    );
    assert_eq!(
        with_content(json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]))
            .to_string(),
        "`messages[2].content[0].content[0].source.type`: `file` is not supported"
    );
    let mut v = minimal();
    v.as_object_mut().unwrap().remove("max_tokens");
    assert_eq!(
        decode(v).unwrap_err().to_string(),
        "`max_tokens` is required"
    );
    let mut v = minimal();
    v.as_object_mut().unwrap().remove("model");
    assert_eq!(decode(v).unwrap_err().to_string(), "`model` is required");
    let mut v = minimal();
    v["messages"][0]["role"] = json!("system");
    assert_eq!(
        decode(v).unwrap_err().to_string(),
        "`messages[0].role`: unknown value `system`, expected one of: user, assistant"
    );
    let mut v = minimal();
    v["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    assert_eq!(
        decode(v).unwrap_err().to_string(),
        "`tools[0].type`: `web_search_20250305` is not supported"
    );
    let mut v = minimal();
    v["metadata"] = json!({"user_id": "u", "team": "x"});
    assert_eq!(
        decode(v).unwrap_err().to_string(),
        "`metadata.team`: `team` is not supported"
    );
}

#[test]
fn count_tokens_needs_no_max_tokens() {
    let body = br#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#;
    let req = decode_count_tokens_request(body).unwrap();
    assert_eq!(req.max_tokens, None);
    let out: Value =
        serde_json::from_slice(&encode_count_tokens_request(&req, "claude-up").unwrap()).unwrap();
    assert_eq!(
        out,
        json!({"model": "claude-up", "messages": [{"role": "user", "content": "hi"}]})
    );
}

#[test]
fn hoists_system_and_merges_roles() {
    let mut req = openai_like(vec![
        msg(Role::System, vec![Part::text("first")]),
        msg(Role::User, vec![Part::text("a")]),
        msg(Role::User, vec![Part::text("b")]),
        msg(
            Role::Assistant,
            vec![
                Part::text(""),
                Part::ToolCall(sluice_types::ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments: String::new(),
                }),
            ],
        ),
        msg(
            Role::Tool,
            vec![Part::ToolResult {
                tool_call_id: "c1".into(),
                content: vec![Part::text("r")],
                is_error: false,
            }],
        ),
        msg(Role::Developer, vec![Part::text("late")]),
        msg(Role::User, vec![Part::text("c")]),
    ]);
    req.stop = vec!["END".into()];
    req.user = Some("u".into());
    let (body, structured) = encode(&req);
    assert_eq!(structured, None);
    assert_eq!(
        body,
        json!({
            "model": "claude-up", "max_tokens": 4096,
            "system": [{"type": "text", "text": "first"}, {"type": "text", "text": "late"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "r"},
                    {"type": "text", "text": "c"}
                ]}
            ],
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u"}
        })
    );
}

#[test]
fn refuses_parameters_anthropic_cannot_honour() {
    let base = openai_like(vec![msg(Role::User, vec![Part::text("x")])]);
    type Mutation = Box<dyn Fn(&mut ChatRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("n", Box::new(|r| r.n = Some(2))),
        ("logprobs", Box::new(|r| r.logprobs = Some(true))),
        ("top_logprobs", Box::new(|r| r.top_logprobs = Some(3))),
        ("seed", Box::new(|r| r.seed = Some(7))),
        (
            "presence_penalty",
            Box::new(|r| r.presence_penalty = Some(0.5)),
        ),
        (
            "frequency_penalty",
            Box::new(|r| r.frequency_penalty = Some(-0.5)),
        ),
        ("temperature", Box::new(|r| r.temperature = Some(1.5))),
        (
            "response_format",
            Box::new(|r| r.response_format = Some(sluice_types::ResponseFormat::JsonObject)),
        ),
        (
            "logit_bias",
            Box::new(|r| {
                r.extras.fields.insert("logit_bias".into(), json!({"1": 1}));
            }),
        ),
        (
            "messages[0].content[0]",
            Box::new(|r| {
                r.messages[0].parts[0] = Part::Image {
                    source: ImageSource::Url("data:image/png,xyz".into()),
                    detail: None,
                };
            }),
        ),
    ];
    for (param, mutate) in cases {
        let mut req = base.clone();
        mutate(&mut req);
        let err = encode_err(&req);
        assert!(
            matches!(&err, WireError::Unsupported { param: p, target: Dialect::Anthropic } if p == param),
            "{param}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::UnsupportedParameter);
    }
    // Neutral values pass.
    let mut req = base;
    req.n = Some(1);
    req.logprobs = Some(false);
    req.presence_penalty = Some(0.0);
    assert!(
        encode_chat_request(
            &req,
            &EncodeOptions {
                model: "m",
                default_max_tokens: 1
            }
        )
        .is_ok()
    );
}

#[test]
fn json_schema_becomes_a_forced_tool() {
    let mut req = openai_like(vec![msg(Role::User, vec![Part::text("x")])]);
    req.response_format = Some(sluice_types::ResponseFormat::JsonSchema {
        name: "person".into(),
        description: Some("a person".into()),
        schema: json!({"type": "object", "properties": {"name": {"type": "string"}}}),
        strict: Some(true),
    });
    let (body, structured) = encode(&req);
    assert_eq!(structured.as_deref(), Some("person"));
    assert_eq!(
        body["tools"],
        json!([{"name": "person", "description": "a person", "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}}}])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "person"})
    );

    req.tools.push(sluice_types::Tool {
        name: "t".into(),
        description: None,
        parameters: Value::Null,
        strict: None,
        cache_control: None,
    });
    let err = encode_err(&req);
    assert!(matches!(&err, WireError::Untranslatable { param, .. } if param == "response_format"));
    // Says what cannot be combined, and what would work instead.
    let message = err.to_string();
    assert!(message.contains("`tools`"), "{message}");
    assert!(message.contains("without `tools`"), "{message}");
    assert!(message.contains("OpenAI-dialect"), "{message}");
    assert!(!message.contains("not supported"), "{message}");
}

#[test]
fn schema_and_tool_key_order_survive_translation_to_anthropic() {
    let req = crate::openai::decode_chat_request(
        br#"{"model": "m", "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{\"zeta\":1,\"alpha\":2}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "r"}],
          "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema":
            {"type": "object", "properties": {"reasoning": {"type": "string"}, "answer": {"type": "string"}},
             "required": ["reasoning", "answer"]}}}}"#,
    )
    .unwrap();
    let body = String::from_utf8(
        encode_chat_request(
            &req,
            &EncodeOptions {
                model: "m",
                default_max_tokens: 1,
            },
        )
        .unwrap()
        .body,
    )
    .unwrap();
    assert!(
        body.contains(r#""properties":{"reasoning":{"type":"string"},"answer":{"type":"string"}}"#),
        "{body}"
    );
    assert!(body.contains(r#""input":{"zeta":1,"alpha":2}"#), "{body}");

    let mut req = crate::openai::decode_chat_request(
        br#"{"model": "m", "messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {"zeta": {}, "alpha": {}}}}}]}"#,
    )
    .unwrap();
    req.response_format = None;
    let (body, _) = encode(&req);
    let keys: Vec<&String> = body["tools"][0]["input_schema"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["zeta", "alpha"]);
}

#[test]
fn parallel_tool_calls_false_disables_parallel_use() {
    let mut req = openai_like(vec![msg(Role::User, vec![Part::text("x")])]);
    req.tools.push(sluice_types::Tool {
        name: "t".into(),
        description: None,
        parameters: Value::Null,
        strict: Some(true),
        cache_control: None,
    });
    req.parallel_tool_calls = Some(false);
    let (body, _) = encode(&req);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        body["tools"][0],
        json!({"name": "t", "input_schema": {"type": "object", "properties": {}}, "strict": true})
    );
    req.tool_choice = Some(ToolChoice::Named("t".into()));
    let (body, _) = encode(&req);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "t", "disable_parallel_tool_use": true})
    );
}

#[test]
fn tool_call_arguments_must_be_an_object() {
    let req = openai_like(vec![
        msg(Role::User, vec![Part::text("x")]),
        msg(
            Role::Assistant,
            vec![Part::ToolCall(sluice_types::ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: "[1,2".into(),
            })],
        ),
    ]);
    assert!(
        matches!(encode_err(&req), WireError::Unsupported { param, .. } if param == "messages[1].content[0]")
    );
}

#[test]
fn anthropic_round_trip_is_lossless() {
    let original = json!({
        "model": "claude", "max_tokens": 512,
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "calling"}, {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": [1, 2]}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "ok", "cache_control": {"type": "ephemeral"}},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "a"}, {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}], "is_error": true},
                {"type": "text", "text": "go on"}
            ]}
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": false},
        "stop_sequences": ["x"], "temperature": 0.5, "top_k": 3,
        "metadata": {"user_id": "u"}, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1024}
    });
    let req = decode(original.clone()).unwrap();
    let (mut body, _) = encode(&req);
    body["model"] = json!("claude");
    assert_eq!(body, original);
    assert_eq!(decode(body).unwrap(), req);
}

#[test]
fn refuses_a_conversation_of_only_system_instructions() {
    let req = openai_like(vec![msg(Role::System, vec![Part::text("Be brief.")])]);
    let err = encode_err(&req);
    assert_eq!(err.param().as_deref(), Some("messages"));
    assert!(
        err.to_string()
            .contains("at least one user or assistant message"),
        "{err}"
    );
    assert_eq!(err.kind(), sluice_types::ErrorKind::UnsupportedParameter);
}
