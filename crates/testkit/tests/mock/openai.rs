use serde_json::{Value, json};
use sluice_testkit::{MockUpstream, Reply};

use crate::{json, post, sse};

fn chat_url(mock: &MockUpstream) -> String {
    format!("{}/v1/chat/completions", mock.base_url())
}

fn hello(stream: bool) -> Value {
    json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi there"}
        ]
    })
}

#[tokio::test]
async fn echoes_last_user_message() {
    let mock = MockUpstream::openai().start().await;
    let response = post(&chat_url(&mock), &hello(false), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let body = json(response).await;

    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["model"], "gpt-4o-mock-2026-01-01");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    let text = "Hello from the Sluice mock. You said: Hi there";
    assert_eq!(choice["message"]["content"], text);
    // Input "Be brief." + "Hi there" = 17 chars -> 5 tokens; output 46 chars -> 12.
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 5);
    assert_eq!(usage["completion_tokens"], 12);
    assert_eq!(usage["total_tokens"], 17);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(mock.hits(), 1);
}

#[tokio::test]
async fn streams_role_then_content_then_finish_usage_and_done() {
    let mock = MockUpstream::openai().start().await;
    let mut body = hello(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sse(post(&chat_url(&mock), &body, &[]).await).await;

    assert!(events.iter().all(|e| e.name.is_none()));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-mock-2026-01-01");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    let (finish, content) = rest.split_last().unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert!(content.len() > 5, "text arrives in several pieces");
    let text: String = content[1..]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from the Sluice mock. You said: Hi there");
    for chunk in rest {
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 12);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 17);
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage() {
    let mock = MockUpstream::openai().start().await;
    let events = sse(post(&chat_url(&mock), &hello(true), &[]).await).await;
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

fn weather_request(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-2024-08-06",
        "stream": stream,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                        "days": {"type": "integer", "minimum": 1}
                    },
                    "required": ["city", "unit"]
                }
            }
        }]
    })
}

#[tokio::test]
async fn calls_first_tool_with_arguments_from_its_schema() {
    let mock = MockUpstream::openai().start().await;
    let body = json(post(&chat_url(&mock), &weather_request(false), &[]).await).await;
    // A dated model keeps its name.
    assert_eq!(body["model"], "gpt-4o-2024-08-06");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "demo", "unit": "celsius", "days": 1}));
}

#[tokio::test]
async fn streams_tool_call_id_and_name_first_then_argument_fragments() {
    let mock = MockUpstream::openai().start().await;
    let events = sse(post(&chat_url(&mock), &weather_request(true), &[]).await).await;
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    let call = &first["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(
        call["function"],
        json!({"name": "get_weather", "arguments": ""})
    );
    let fragments = &chunks[1..chunks.len() - 1];
    assert!(fragments.len() > 2);
    let args: String = fragments
        .iter()
        .map(|c| {
            let call = &c["choices"][0]["delta"]["tool_calls"][0];
            assert!(call.get("id").is_none());
            call["function"]["arguments"].as_str().unwrap().to_owned()
        })
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args["city"], "demo");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn acknowledges_tool_results_and_respects_tool_choice_none() {
    let mock = MockUpstream::openai().start().await;
    let mut request = weather_request(false);
    request["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"}
    ]);
    let body = json(post(&chat_url(&mock), &request, &[]).await).await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Tool result received: sunny, 21C"
    );

    let mut request = weather_request(false);
    request["tool_choice"] = json!("none");
    let body = json(post(&chat_url(&mock), &request, &[]).await).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn structured_output_matches_the_schema() {
    let mock = MockUpstream::openai().start().await;
    let schemas = [
        (
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer", "minimum": 21},
                    "email": {"type": ["string", "null"], "format": "email"},
                    "tags": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["name", "age", "email", "tags"],
                "additionalProperties": false
            }),
            json!({"name": "demo", "age": 21, "email": "demo@example.com", "tags": ["demo"]}),
        ),
        (
            json!({
                "type": "object",
                "$defs": {"step": {"type": "object", "properties": {"n": {"type": "number"}, "ok": {"type": "boolean"}}, "required": ["n", "ok"]}},
                "properties": {
                    "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 2},
                    "verdict": {"anyOf": [{"type": "string", "enum": ["yes", "no"]}, {"type": "null"}]}
                },
                "required": ["steps", "verdict"]
            }),
            json!({"steps": [{"n": 0.0, "ok": false}, {"n": 0.0, "ok": false}], "verdict": "yes"}),
        ),
    ];
    for (schema, expected) in schemas {
        let mut request = hello(false);
        request["response_format"] = json!({
            "type": "json_schema",
            "json_schema": {"name": "answer", "strict": true, "schema": schema}
        });
        let body = json(post(&chat_url(&mock), &request, &[]).await).await;
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        let value: Value = serde_json::from_str(content).unwrap();
        assert_eq!(value, expected);
    }

    let mut request = hello(false);
    request["response_format"] = json!({"type": "json_object"});
    let body = json(post(&chat_url(&mock), &request, &[]).await).await;
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    let value: Value = serde_json::from_str(content).unwrap();
    assert!(value["reply"].as_str().unwrap().contains("Hi there"));
}

#[tokio::test]
async fn cuts_text_at_max_tokens() {
    let mock = MockUpstream::openai().start().await;
    let mut request = hello(false);
    request["max_completion_tokens"] = json!(2);
    let body = json(post(&chat_url(&mock), &request, &[]).await).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello fr");
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn embeds_deterministically() {
    let mock = MockUpstream::openai().start().await;
    let url = format!("{}/v1/embeddings", mock.base_url());
    let body = json(
        post(
            &url,
            &json!({"model": "text-embedding-3-small", "input": ["hello", "world", "hello"]}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small-mock-2026-01-01");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 6, "total_tokens": 6})
    );

    let body = json(
        post(
            &url,
            &json!({"model": "m", "input": "hello", "dimensions": 3}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 3);
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn lists_models() {
    let mock = MockUpstream::openai().start().await;
    let response = crate::client()
        .get(format!("{}/v1/models", mock.base_url()))
        .send()
        .await
        .unwrap();
    let body = json(response).await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["object"], "model");
    assert!(body["data"].as_array().unwrap().len() >= 2);
    // Listing models is not a hit.
    assert_eq!(mock.hits(), 0);
}

#[tokio::test]
async fn requires_bearer_key_when_configured() {
    let mock = MockUpstream::openai().require_key("sk-test").start().await;
    let response = post(
        &chat_url(&mock),
        &hello(false),
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(response.status(), 401);
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = post(
        &chat_url(&mock),
        &hello(false),
        &[("authorization", "Bearer sk-test")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn rejects_requests_without_messages() {
    let mock = MockUpstream::openai().start().await;
    let response = post(&chat_url(&mock), &json!({"model": "gpt-4o"}), &[]).await;
    assert_eq!(response.status(), 400);
    let body = json(response).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages")
    );

    let response = crate::client()
        .post(chat_url(&mock))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn records_requests_with_headers_and_body() {
    let mock = MockUpstream::openai().start().await;
    post(
        &chat_url(&mock),
        &hello(false),
        &[("authorization", "Bearer sk-abc"), ("X-Custom", "yes")],
    )
    .await;
    crate::client()
        .get(format!("{}/v1/models?limit=5", mock.base_url()))
        .send()
        .await
        .unwrap();

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let chat = &requests[0];
    assert_eq!(chat.method, "POST");
    assert_eq!(chat.path, "/v1/chat/completions");
    assert_eq!(chat.header("Authorization"), Some("Bearer sk-abc"));
    assert!(
        chat.headers
            .iter()
            .any(|(n, v)| n == "x-custom" && v == "yes")
    );
    assert_eq!(chat.body, hello(false));
    assert_eq!(
        serde_json::from_slice::<Value>(&chat.raw).unwrap(),
        hello(false)
    );
    let last = mock.last_request().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/v1/models")
    );
    assert_eq!(last.body, Value::Null);
}

#[tokio::test]
async fn unknown_paths_get_a_dialect_404() {
    let mock = MockUpstream::openai().start().await;
    let response = post(
        &format!("{}/v1/messages", mock.base_url()),
        &hello(false),
        &[],
    )
    .await;
    assert_eq!(response.status(), 404);
    let body = json(response).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn scripted_replies_are_used_in_order_then_always() {
    let mock = MockUpstream::openai()
        .reply(Reply::text("first"))
        .reply(Reply::tool_call("lookup", json!({"q": "x"})))
        .always(Reply::text("fallback"))
        .start()
        .await;
    mock.push_reply(Reply::text("third"));
    let mut contents = Vec::new();
    for _ in 0..4 {
        let body = json(post(&chat_url(&mock), &hello(false), &[]).await).await;
        let message = &body["choices"][0]["message"];
        contents.push(match message["content"].as_str() {
            Some(text) => text.to_owned(),
            None => message["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_owned(),
        });
    }
    assert_eq!(contents, ["first", r#"{"q":"x"}"#, "third", "fallback"]);
}
