use serde_json::{Value, json};
use sluice_testkit::{MockUpstream, Reply};

use crate::{json, post, sse};

const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

fn messages_url(mock: &MockUpstream) -> String {
    format!("{}/v1/messages", mock.base_url())
}

fn hello(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "stream": stream,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]
    })
}

#[tokio::test]
async fn echoes_last_user_message() {
    let mock = MockUpstream::anthropic().start().await;
    let response = post(&messages_url(&mock), &hello(false), &[VERSION]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(
        response.headers()["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let body = json(response).await;

    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-sonnet-4-5-mock-2026-01-01");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Hello from the Sluice mock. You said: Hi there"}])
    );
    let usage = &body["usage"];
    assert_eq!(usage["input_tokens"], 5);
    assert_eq!(usage["output_tokens"], 12);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);
}

#[tokio::test]
async fn streams_the_real_event_sequence() {
    let mock = MockUpstream::anthropic().start().await;
    let events = sse(post(&messages_url(&mock), &hello(true), &[VERSION]).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!(deltas > 5);
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let data: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    for (event, value) in events.iter().zip(&data) {
        assert_eq!(value["type"], event.name.as_deref().unwrap());
    }
    let message = &data[0]["message"];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["content"], json!([]));
    assert_eq!(message["stop_reason"], Value::Null);
    assert_eq!(message["usage"]["input_tokens"], 5);
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = data[3..3 + deltas]
        .iter()
        .map(|d| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "Hello from the Sluice mock. You said: Hi there");
    let delta = &data[data.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"], json!({"output_tokens": 12}));
}

fn forced_tool(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 256,
        "stream": stream,
        "messages": [{"role": "user", "content": "Extract the person."}],
        "tools": [
            {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
            {"name": "record_person", "input_schema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 6},
                    "age": {"type": "integer", "exclusiveMinimum": 17},
                    "address": {"$ref": "#/$defs/address"},
                    "role": {"oneOf": [{"const": "admin"}, {"const": "user"}]}
                },
                "required": ["name", "age", "address", "role"],
                "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
            }}
        ],
        "tool_choice": {"type": "tool", "name": "record_person"}
    })
}

#[tokio::test]
async fn forced_tool_yields_schema_valid_input() {
    let mock = MockUpstream::anthropic().start().await;
    let body = json(post(&messages_url(&mock), &forced_tool(false), &[VERSION]).await).await;
    assert_eq!(body["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(body["stop_reason"], "tool_use");
    let block = &body["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "record_person");
    assert_eq!(
        block["input"],
        json!({"name": "demooo", "age": 18, "address": {"city": "demo"}, "role": "admin"})
    );
}

#[tokio::test]
async fn streams_tool_input_as_json_deltas() {
    let mock = MockUpstream::anthropic().start().await;
    let events = sse(post(&messages_url(&mock), &forced_tool(true), &[VERSION]).await).await;
    let data: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let start = data
        .iter()
        .find(|d| d["type"] == "content_block_start")
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "record_person");
    assert_eq!(start["content_block"]["input"], json!({}));
    let partial: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    let input: Value = serde_json::from_str(&partial).unwrap();
    assert_eq!(input["address"]["city"], "demo");
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn structured_output_format_is_json_text() {
    let mock = MockUpstream::anthropic().start().await;
    let mut request = hello(false);
    request["output_format"] = json!({"type": "json_schema", "schema": {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["A", "B"]}, "score": {"type": "number", "minimum": 0.5}},
        "required": ["answer", "score"],
        "additionalProperties": false
    }});
    let body = json(post(&messages_url(&mock), &request, &[VERSION]).await).await;
    let text = body["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"answer": "A", "score": 0.5})
    );
}

#[tokio::test]
async fn acknowledges_tool_results() {
    let mock = MockUpstream::anthropic().start().await;
    let mut request = forced_tool(false);
    request["tool_choice"] = json!({"type": "auto"});
    request["messages"] = json!([
        {"role": "user", "content": "Extract the person."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "record_person", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "saved"}]}
    ]);
    let body = json(post(&messages_url(&mock), &request, &[VERSION]).await).await;
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["content"][0]["text"], "Tool result received: saved");
}

#[tokio::test]
async fn scripted_statuses_use_anthropic_error_types() {
    let mock = MockUpstream::anthropic()
        .reply(Reply::status(529))
        .reply(Reply::Status {
            status: 429,
            body: None,
            retry_after: Some(7),
        })
        .start()
        .await;
    let response = post(&messages_url(&mock), &hello(false), &[VERSION]).await;
    assert_eq!(response.status().as_u16(), 529);
    assert!(response.headers().get("retry-after").is_none());
    let body = json(response).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));

    let response = post(&messages_url(&mock), &hello(true), &[VERSION]).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = json(response).await;
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn requires_max_tokens() {
    let mock = MockUpstream::anthropic().start().await;
    let mut request = hello(false);
    request.as_object_mut().unwrap().remove("max_tokens");
    let response = post(&messages_url(&mock), &request, &[VERSION]).await;
    assert_eq!(response.status(), 400);
    let body = json(response).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["message"], "max_tokens: Field required");
}

#[tokio::test]
async fn counts_tokens_like_usage() {
    let mock = MockUpstream::anthropic().start().await;
    let mut request = hello(false);
    request.as_object_mut().unwrap().remove("max_tokens");
    let url = format!("{}/v1/messages/count_tokens", mock.base_url());
    let body = json(post(&url, &request, &[VERSION]).await).await;
    assert_eq!(body, json!({"input_tokens": 5}));
    assert_eq!(mock.hits(), 0);
}

#[tokio::test]
async fn requires_x_api_key_when_configured() {
    let mock = MockUpstream::anthropic()
        .require_key("sk-ant")
        .start()
        .await;
    // A bearer token is the wrong header for Anthropic.
    let response = post(
        &messages_url(&mock),
        &hello(false),
        &[VERSION, ("authorization", "Bearer sk-ant")],
    )
    .await;
    assert_eq!(response.status(), 401);
    let body = json(response).await;
    assert_eq!(body["error"]["type"], "authentication_error");

    let response = post(
        &messages_url(&mock),
        &hello(false),
        &[VERSION, ("x-api-key", "sk-ant")],
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn both_serves_each_dialect_and_picks_model_list_shape() {
    let mock = MockUpstream::both().start().await;
    let openai = post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        &[],
    )
    .await;
    assert_eq!(json(openai).await["object"], "chat.completion");
    let anthropic = post(&messages_url(&mock), &hello(false), &[VERSION]).await;
    assert_eq!(json(anthropic).await["type"], "message");

    let models = |headers: &'static [(&'static str, &'static str)]| {
        let url = format!("{}/v1/models", mock.base_url());
        async move {
            let mut request = crate::client().get(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            json(request.send().await.unwrap()).await
        }
    };
    let listed = models(&[VERSION]).await;
    assert_eq!(listed["data"][0]["type"], "model");
    assert_eq!(listed["has_more"], false);
    let listed = models(&[]).await;
    assert_eq!(listed["object"], "list");
}
