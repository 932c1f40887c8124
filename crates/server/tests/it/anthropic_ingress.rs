//! Anthropic clients, served by Anthropic providers (pass-through) and by OpenAI-dialect ones
//! (translated).

use serde_json::{Value, json};
use sluice_providers::ProviderKind;
use sluice_testkit::{MockUpstream, Reply};

use crate::support::{TestGateway, on, sse_data, sse_event_names};

#[tokio::test]
async fn translates_messages_to_openai_and_back() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("gpt", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .start()
        .await;

    let res = gw
        .anthropic("/v1/messages", json!({
            "model": "gpt", "max_tokens": 300, "system": "Answer in French.",
            "stop_sequences": ["END"], "metadata": {"user_id": "u-9"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "bonjour"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]
        }))
        .await;

    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-sluice-provider"], "openai");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["content"][0]["type"], "text");
    assert!(
        body["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("You said: bonjour")
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(body["model"], "gpt-4o-mini-mock-2026-01-01");

    let sent = mock.last_request().unwrap().body;
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Answer in French."})
    );
    assert_eq!(sent["max_completion_tokens"], 300);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["user"], "u-9");
    let parts = &sent["messages"][1]["content"];
    assert_eq!(parts[1]["type"], "image_url");
    assert_eq!(
        parts[1]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );

    let records = gw.finish().await;
    assert_eq!(
        (records[0].endpoint.as_str(), records[0].dialect.as_str()),
        ("messages", "anthropic")
    );
    assert_eq!(records[0].user.as_deref(), Some("u-9"));
}

#[tokio::test]
async fn streams_an_openai_answer_as_the_real_anthropic_event_sequence() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("gpt", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .start()
        .await;

    let res = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "gpt", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "stream please"}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let names = sse_event_names(&text);
    assert_eq!(
        names.first().map(String::as_str),
        Some("message_start"),
        "{text}"
    );
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    let index = |name: &str| names.iter().position(|n| n == name).unwrap();
    assert!(index("content_block_start") < index("content_block_delta"));
    assert!(
        names
            .iter()
            .rposition(|n| n == "content_block_delta")
            .unwrap()
            < index("content_block_stop")
    );
    assert!(index("content_block_stop") < index("message_delta"));

    let data = sse_data(&text);
    let content: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert!(content.contains("You said: stream please"), "{content}");
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn passes_anthropic_streams_through_unchanged() {
    let mock = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route(
            "claude",
            [on(&mock, ProviderKind::Anthropic, "claude-sonnet-4-5")],
        )
        .start()
        .await;

    let text = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("event: message_start\ndata: "), "{text}");
    assert_eq!(
        sse_event_names(&text).last().map(String::as_str),
        Some("message_stop")
    );
    assert!(
        sse_event_names(&text).contains(&"ping".to_owned()),
        "pings pass through too"
    );
    let records = gw.finish().await;
    assert!(records[0].input_tokens.unwrap() > 0 && records[0].output_tokens.unwrap() > 0);
}

#[tokio::test]
async fn tool_use_from_an_openai_provider_arrives_as_anthropic_blocks() {
    let mock = MockUpstream::openai()
        .reply(Reply::ToolCalls(vec![("lookup".into(), json!({"id": 42}))]))
        .start()
        .await;
    let gw = TestGateway::builder()
        .route("gpt", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .start()
        .await;

    for stream in [false, true] {
        if stream {
            mock.push_reply(Reply::ToolCalls(vec![("lookup".into(), json!({"id": 42}))]));
        }
        let res = gw
            .anthropic("/v1/messages", json!({"model": "gpt", "max_tokens": 100, "stream": stream,
                "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}],
                "tool_choice": {"type": "tool", "name": "lookup"},
                "messages": [{"role": "user", "content": "find 42"}]}))
            .await;
        let sent = mock.last_request().unwrap().body;
        assert_eq!(
            sent["tool_choice"],
            json!({"type": "function", "function": {"name": "lookup"}})
        );
        assert_eq!(
            sent["tools"][0]["function"]["parameters"]["properties"]["id"]["type"],
            "integer"
        );
        if stream {
            let data = sse_data(&res.text().await.unwrap());
            let start = data
                .iter()
                .find(|d| {
                    d["type"] == "content_block_start" && d["content_block"]["type"] == "tool_use"
                })
                .unwrap();
            assert_eq!(start["content_block"]["name"], "lookup");
            let json: String = data
                .iter()
                .filter(|d| d["delta"]["type"] == "input_json_delta")
                .map(|d| d["delta"]["partial_json"].as_str().unwrap())
                .collect();
            assert_eq!(
                serde_json::from_str::<Value>(&json).unwrap(),
                json!({"id": 42})
            );
            let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
            assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        } else {
            let body: Value = res.json().await.unwrap();
            let block = body["content"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["type"] == "tool_use")
                .unwrap();
            assert_eq!(block["name"], "lookup");
            assert_eq!(block["input"], json!({"id": 42}));
            assert_eq!(body["stop_reason"], "tool_use");
        }
    }
}

#[tokio::test]
async fn accepts_bearer_and_x_api_key_on_anthropic_routes() {
    let mock = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route(
            "claude",
            [on(&mock, ProviderKind::Anthropic, "claude-sonnet-4-5")],
        )
        .start()
        .await;
    let body = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});

    let bearer = gw
        .client
        .post(gw.url("/v1/messages"))
        .bearer_auth(&gw.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let x_api_key = gw.anthropic("/v1/messages", body.clone()).await;
    assert_eq!(x_api_key.status(), 200);
    // OpenAI routes take only the bearer form, as the OpenAI SDK sends it.
    let res = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", &gw.key)
        .json(&json!({"model": "claude", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn counts_tokens_with_the_provider_or_flags_the_estimate() {
    let claude = MockUpstream::anthropic().start().await;
    let gpt = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route(
            "claude",
            [on(&claude, ProviderKind::Anthropic, "claude-sonnet-4-5")],
        )
        .route("gpt", [on(&gpt, ProviderKind::OpenAi, "gpt-4o-mini")])
        .start()
        .await;
    let body = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "count these words please"}]});

    let res = gw
        .anthropic("/v1/messages/count_tokens", body("claude"))
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-sluice-token-count").is_none());
    let counted: Value = res.json().await.unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        claude.last_request().unwrap().path,
        "/v1/messages/count_tokens"
    );

    let res = gw.anthropic("/v1/messages/count_tokens", body("gpt")).await;
    assert_eq!(res.headers()["x-sluice-token-count"], "estimated");
    let estimated: Value = res.json().await.unwrap();
    assert_eq!(
        estimated["input_tokens"],
        4 + 5 + 3,
        "four words, a message's chat template and the reply's priming"
    );
    assert_eq!(gpt.hits(), 0);
}

#[tokio::test]
async fn tool_schema_and_input_key_order_reach_an_openai_upstream_as_written() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("gpt", [on(&mock, ProviderKind::OpenAiCompatible, "llama")])
        .start()
        .await;
    let params =
        r#"{"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"integer"}}}"#;
    let body = format!(
        r#"{{"model":"gpt","max_tokens":50,"tools":[{{"name":"add","input_schema":{params}}}],
        "messages":[{{"role":"user","content":"add"}},
          {{"role":"assistant","content":[{{"type":"tool_use","id":"t1","name":"add","input":{{"zeta":1,"alpha":2}}}}]}},
          {{"role":"user","content":[{{"type":"tool_result","tool_use_id":"t1","content":"3"}}]}}]}}"#
    );
    let res = gw
        .client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &gw.key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = String::from_utf8(mock.last_request().unwrap().raw.to_vec()).unwrap();
    assert!(sent.contains(params), "{sent}");
    assert!(
        sent.contains(r#""arguments":"{\"zeta\":1,\"alpha\":2}""#),
        "{sent}"
    );
    // The tool-calling turn carries `content: ""`, which strict servers (llama.cpp) accept.
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent["messages"][1]["content"], "");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "t1");
    gw.finish().await;
}
