//! OpenAI clients, served by OpenAI-dialect providers (pass-through) and by Anthropic ones
//! (translated).

use serde_json::{Value, json};
use sluice_providers::ProviderKind;
use sluice_testkit::{MockUpstream, Reply};

use crate::support::{TestGateway, on, openai_stream_text, sse_data};

#[tokio::test]
async fn passes_openai_answers_through_with_provenance_and_a_record() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .start()
        .await;

    let res = gw.openai("/v1/chat/completions", json!({"model": "fast", "messages": [{"role": "user", "content": "hello"}], "user": "end-user-7"})).await;

    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(
        headers["x-sluice-served-model"],
        "gpt-4o-mini-mock-2026-01-01"
    );
    assert_eq!(headers["x-sluice-provider"], "openai");
    assert_eq!(headers["x-sluice-alias"], "fast");
    assert_eq!(headers["x-sluice-attempts"], "1");
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(request_id.starts_with("req_"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini-mock-2026-01-01");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("You said: hello")
    );

    let upstream = mock.last_request().unwrap();
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(upstream.body["model"], "gpt-4o-mini");
    assert_eq!(
        upstream.header("authorization"),
        Some("Bearer upstream-secret")
    );
    assert!(!String::from_utf8_lossy(&upstream.raw).contains(&gw.key));

    let prompt_tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    let key = gw.key.clone();
    let records = gw.finish().await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.id, request_id);
    assert_eq!(
        (r.status, r.endpoint.as_str(), r.dialect.as_str()),
        (200, "chat.completions", "openai")
    );
    assert_eq!(r.alias.as_deref(), Some("fast"));
    assert_eq!(
        r.served_model.as_deref(),
        Some("gpt-4o-mini-mock-2026-01-01")
    );
    assert_eq!(r.team.as_deref(), Some("qa"));
    assert_eq!(r.user.as_deref(), Some("end-user-7"));
    assert_eq!(r.input_tokens, Some(prompt_tokens as u32));
    assert!(!r.usage_estimated);
    assert_eq!(r.attempts.len(), 1);
    assert!(
        r.key_id
            .as_deref()
            .is_some_and(|id| id.starts_with("key_") && !key.contains(id))
    );
}

#[tokio::test]
async fn translates_to_anthropic_and_back() {
    let mock = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route(
            "claude",
            [on(&mock, ProviderKind::Anthropic, "claude-sonnet-4-5")],
        )
        .start()
        .await;

    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({
                "model": "claude",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "hi there"}]}
                ],
                "max_tokens": 200,
                "stop": ["###"],
                "temperature": 0.2,
                "user": "u-1"
            }),
        )
        .await;

    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-sluice-served-model"],
        "claude-sonnet-4-5-mock-2026-01-01"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("You said: hi there")
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    let upstream = mock.last_request().unwrap();
    assert_eq!(upstream.path, "/v1/messages");
    assert_eq!(upstream.header("x-api-key"), Some("upstream-secret"));
    assert_eq!(upstream.header("anthropic-version"), Some("2023-06-01"));
    let sent = &upstream.body;
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["max_tokens"], 200);
    assert_eq!(sent["stop_sequences"], json!(["###"]));
    assert_eq!(sent["metadata"]["user_id"], "u-1");
    let system = serde_json::to_string(&sent["system"]).unwrap();
    assert!(system.contains("Be brief."), "{system}");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 1);
    assert_eq!(sent["messages"][0]["role"], "user");
}

#[tokio::test]
async fn streams_a_translated_anthropic_answer_as_openai_chunks() {
    let mock = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route(
            "claude",
            [on(&mock, ProviderKind::Anthropic, "claude-sonnet-4-5")],
        )
        .start()
        .await;

    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "stream me"}]}),
        )
        .await;

    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]", "{text}");
    let chunks = &events[..events.len() - 1];
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let content: String = openai_stream_text(chunks);
    assert!(content.contains("You said: stream me"), "{content}");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|ch| &ch["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let records = gw.finish().await;
    assert_eq!(records[0].status, 200);
    assert!(records[0].stream && records[0].error_code.is_none());
    assert_eq!(
        records[0].output_tokens,
        usage["usage"]["completion_tokens"]
            .as_u64()
            .map(|n| n as u32)
    );
    assert!(records[0].ttft_us.is_some());
}

#[tokio::test]
async fn tool_calls_cross_the_translation_both_ways() {
    let mock = MockUpstream::anthropic()
        .reply(Reply::ToolCalls(vec![(
            "get_weather".into(),
            json!({"city": "Lyon"}),
        )]))
        .reply(Reply::Text("It is sunny in Lyon.".into()))
        .start()
        .await;
    let gw = TestGateway::builder()
        .route(
            "claude",
            [on(&mock, ProviderKind::Anthropic, "claude-sonnet-4-5")],
        )
        .start()
        .await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);

    let first: Value = gw
        .openai("/v1/chat/completions", json!({"model": "claude", "tools": tools, "tool_choice": "required",
            "parallel_tool_calls": false, "messages": [{"role": "user", "content": "Weather in Lyon?"}]}))
        .await
        .json()
        .await
        .unwrap();
    let sent = mock.last_request().unwrap().body;
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
    assert_eq!(sent["tool_choice"]["type"], "any");
    assert_eq!(sent["tool_choice"]["disable_parallel_tool_use"], true);

    let choice = &first["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Lyon"}));

    let call_id = call["id"].as_str().unwrap();
    let second: Value = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "claude", "tools": tools, "messages": [
                {"role": "user", "content": "Weather in Lyon?"},
                choice["message"].clone(),
                {"role": "tool", "tool_call_id": call_id, "content": "sunny, 24C"}
            ]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "It is sunny in Lyon."
    );
    let sent = mock.last_request().unwrap().body;
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[1]["content"][0]["id"], call_id);
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["tool_use_id"], call_id);
}

#[tokio::test]
async fn json_schema_output_reaches_anthropic_as_a_forced_tool_and_returns_as_text() {
    let mock = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route(
            "claude",
            [on(&mock, ProviderKind::Anthropic, "claude-sonnet-4-5")],
        )
        .start()
        .await;
    let schema = json!({"type": "object", "properties": {"label": {"type": "string", "enum": ["bug", "question"]},
        "score": {"type": "integer"}}, "required": ["label", "score"], "additionalProperties": false});

    for stream in [false, true] {
        let res = gw
            .openai("/v1/chat/completions", json!({"model": "claude", "stream": stream,
                "response_format": {"type": "json_schema", "json_schema": {"name": "triage", "schema": schema, "strict": true}},
                "messages": [{"role": "user", "content": "My app crashes"}]}))
            .await;
        assert_eq!(res.status(), 200);
        let (content, finish) = if stream {
            let text = res.text().await.unwrap();
            let events = sse_data(&text);
            let content: String = openai_stream_text(&events);
            let finish = events
                .iter()
                .filter_map(|c| c["choices"].get(0))
                .map(|c| c["finish_reason"].clone())
                .find(|f| !f.is_null());
            (content, finish.unwrap())
        } else {
            let body: Value = res.json().await.unwrap();
            (
                body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                body["choices"][0]["finish_reason"].clone(),
            )
        };
        let value: Value =
            serde_json::from_str(&content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert_eq!(value["label"], "bug");
        assert!(value["score"].is_i64());
        assert_eq!(finish, "stop");
        let sent = mock.last_request().unwrap().body;
        assert_eq!(
            sent["tool_choice"],
            json!({"type": "tool", "name": "triage"})
        );
        assert_eq!(sent["tools"][0]["input_schema"], schema);
    }
}

#[tokio::test]
async fn openai_stream_passes_through_byte_for_byte_and_hides_unrequested_usage() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .start()
        .await;

    let text = gw
        .openai("/v1/chat/completions", json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": "one two three"}]}))
        .await
        .text()
        .await
        .unwrap();

    // The gateway asks for usage upstream (it needs it for the record) but the client did not.
    assert_eq!(
        mock.last_request().unwrap().body["stream_options"]["include_usage"],
        true
    );
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        events
            .iter()
            .all(|e| e.get("usage").is_none_or(Value::is_null)),
        "{text}"
    );
    assert!(text.starts_with("data: {"));

    let records = gw.finish().await;
    assert!(records[0].output_tokens.unwrap() > 0);
    assert!(!records[0].usage_estimated);
}

#[tokio::test]
async fn estimates_and_flags_usage_when_a_compatible_server_omits_it() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route(
            "local",
            [on(&mock, ProviderKind::OpenAiCompatible, "llama")],
        )
        .start()
        .await;

    let text = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "local", "stream": true, "max_tokens": 50,
            "messages": [{"role": "user", "content": "#mock no_usage\nhow are you"}]}),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let sent = mock.last_request().unwrap().body;
    assert_eq!(sent["max_tokens"], 50, "compatible servers get max_tokens");
    assert!(sent.get("max_completion_tokens").is_none());

    // The client did not ask for usage: none is added.
    assert!(!text.contains("\"usage\":{"), "{text}");

    // Asked for usage: the estimate comes as the last chunk before `[DONE]`, flagged.
    let asked = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "local", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "#mock no_usage\nhow are you"}]}),
        )
        .await
        .text()
        .await
        .unwrap();
    let chunks = sse_data(&asked);
    let (done, rest) = chunks.split_last().unwrap();
    assert_eq!(done, "[DONE]");
    let usage = &rest.last().unwrap()["usage"];
    assert_eq!(usage["estimated"], true, "{asked}");
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(rest.last().unwrap()["choices"], json!([]));
    assert_eq!(
        rest.last().unwrap()["id"],
        rest[0]["id"],
        "one stream id throughout"
    );
    assert_eq!(
        rest.iter().filter(|c| !c["usage"].is_null()).count(),
        1,
        "{asked}"
    );

    // An Anthropic client of the same server gets the estimate in `message_delta`.
    let anthropic = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "local", "stream": true, "max_tokens": 50,
            "messages": [{"role": "user", "content": "#mock no_usage\nhow are you"}]}),
        )
        .await
        .text()
        .await
        .unwrap();
    let delta = sse_data(&anthropic)
        .into_iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["usage"]["estimated"], true, "{anthropic}");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let records = gw.finish().await;
    for r in &records {
        assert!(r.usage_estimated);
        assert!(r.input_tokens.unwrap() > 0 && r.output_tokens.unwrap() > 0);
    }
    assert_eq!(
        records[1].output_tokens,
        usage["completion_tokens"].as_u64().map(|n| n as u32),
        "the client was told what the record holds"
    );
}

#[tokio::test]
async fn lists_only_the_models_a_key_may_use_and_embeds() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route(
            "embed",
            [on(&mock, ProviderKind::OpenAi, "text-embedding-3-small")],
        )
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .start()
        .await;
    let scoped = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "scoped".into(),
            aliases: vec!["fast".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    let all: Value = gw
        .client
        .get(gw.url("/v1/models"))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["embed", "fast"]);
    let some: Value = gw
        .client
        .get(gw.url("/v1/models"))
        .bearer_auth(&scoped.secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(some["data"][0]["id"], "fast");
    assert_eq!(some["data"].as_array().unwrap().len(), 1);

    let res = gw
        .openai(
            "/v1/embeddings",
            json!({"model": "embed", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        mock.last_request().unwrap().body["model"],
        "text-embedding-3-small"
    );
    let records = gw.finish().await;
    let embed = records
        .iter()
        .find(|r| r.endpoint.as_str() == "embeddings")
        .unwrap();
    assert_eq!(
        embed.input_tokens,
        body["usage"]["prompt_tokens"].as_u64().map(|n| n as u32)
    );
}

#[tokio::test]
async fn models_are_listed_and_retrieved_in_the_dialect_asking() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .route("org/big", [on(&mock, ProviderKind::OpenAi, "gpt-4o")])
        .start()
        .await;
    let scoped = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "scoped".into(),
            aliases: vec!["fast".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let get = |path: &str, key: &str, anthropic: bool| {
        let mut req = gw.client.get(gw.url(path)).bearer_auth(key);
        if anthropic {
            req = req.header("anthropic-version", "2023-06-01");
        }
        req.send()
    };
    let a_day_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 86_400;

    let res = get("/v1/models/fast", &gw.key, false).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let one: Value = res.json().await.unwrap();
    assert_eq!(
        (&one["id"], &one["object"], &one["owned_by"]),
        (&json!("fast"), &json!("model"), &json!("sluice"))
    );
    assert!(one["created"].as_u64().unwrap() > a_day_ago);
    // Aliases may hold a slash, as provider model names do.
    let res = get("/v1/models/org/big", &gw.key, false).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], "org/big");

    let list: Value = get("/v1/models", &gw.key, true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&list["first_id"], &list["last_id"], &list["has_more"]),
        (&json!("fast"), &json!("org/big"), &json!(false))
    );
    let first = &list["data"][0];
    assert_eq!(
        (&first["type"], &first["id"], &first["display_name"]),
        (&json!("model"), &json!("fast"), &json!("fast"))
    );
    assert_eq!(first["lifecycle"], "active");
    let created_at = first["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && !created_at.starts_with("1970"),
        "{created_at}"
    );
    let one: Value = get("/v1/models/fast", &gw.key, true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(&one, first);

    // Unknown, and known but not for this key: the same 404, in the dialect asking.
    for (path, key) in [
        ("/v1/models/nope", gw.key.as_str()),
        ("/v1/models/org/big", scoped.secret.as_str()),
    ] {
        let res = get(path, key, false).await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "model_not_found", "{path}");
        let res = get(path, key, true).await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            (&body["type"], &body["error"]["type"]),
            (&json!("error"), &json!("not_found_error")),
            "{path}"
        );
    }
    let res = get("/v1/models/fast", "sk-sluice-wrong", false)
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let records = gw.finish().await;
    assert_eq!(
        records.iter().filter(|r| r.status == 404).count(),
        4,
        "every lookup leaves a record"
    );
}

/// Structured outputs are generated in schema order, so the order the client wrote its keys in
/// must reach the upstream, whichever dialect it speaks.
#[tokio::test]
async fn schema_and_tool_key_order_reach_the_upstream_as_the_client_wrote_them() {
    let openai_mock = MockUpstream::openai().start().await;
    let anthropic_mock = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route("gpt", [on(&openai_mock, ProviderKind::OpenAi, "gpt-4o")])
        .route(
            "claude",
            [on(
                &anthropic_mock,
                ProviderKind::Anthropic,
                "claude-sonnet-4-5",
            )],
        )
        .start()
        .await;
    let schema = r#"{"type":"object","properties":{"reasoning":{"type":"string"},"answer":{"type":"string"}},"required":["reasoning","answer"]}"#;
    let params =
        r#"{"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"integer"}}}"#;
    let structured = |model: &str| {
        format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"why?"}}],
            "response_format":{{"type":"json_schema","json_schema":{{"name":"out","schema":{schema}}}}}}}"#
        )
    };
    let with_tools = |model: &str| {
        format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"add"}},
            {{"role":"assistant","content":null,"tool_calls":[{{"id":"c1","type":"function","function":{{"name":"add","arguments":"{{\"zeta\":1,\"alpha\":2}}"}}}}]}},
            {{"role":"tool","tool_call_id":"c1","content":"3"}}],
            "tools":[{{"type":"function","function":{{"name":"add","parameters":{params}}}}}]}}"#
        )
    };
    let post = |body: String| {
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&gw.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let received =
        |mock: &MockUpstream| String::from_utf8(mock.last_request().unwrap().raw.to_vec()).unwrap();

    assert_eq!(post(structured("gpt")).await.unwrap().status(), 200);
    assert!(
        received(&openai_mock).contains(schema),
        "{}",
        received(&openai_mock)
    );
    assert_eq!(post(structured("claude")).await.unwrap().status(), 200);
    assert!(
        received(&anthropic_mock).contains(schema),
        "{}",
        received(&anthropic_mock)
    );

    assert_eq!(post(with_tools("gpt")).await.unwrap().status(), 200);
    let sent = received(&openai_mock);
    assert!(sent.contains(params), "{sent}");
    assert!(
        sent.contains(r#""arguments":"{\"zeta\":1,\"alpha\":2}""#),
        "{sent}"
    );
    assert_eq!(post(with_tools("claude")).await.unwrap().status(), 200);
    let sent = received(&anthropic_mock);
    assert!(sent.contains(params), "{sent}");
    assert!(sent.contains(r#""input":{"zeta":1,"alpha":2}"#), "{sent}");
    gw.finish().await;
}

/// The OpenAI SDK closes the connection as soon as it has read `[DONE]`; Anthropic clients may
/// do the same after `message_stop`. The terminal event goes out only once the record is
/// settled, so such a stream is a success, not a disconnect — even when the upstream lingers
/// before closing.
#[tokio::test]
async fn a_client_that_hangs_up_after_the_last_event_leaves_a_success() {
    use futures_util::StreamExt;
    let openai = MockUpstream::openai().start().await;
    let anthropic = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route("gpt", [on(&openai, ProviderKind::OpenAi, "gpt-4o-mini")])
        .route(
            "claude",
            [on(&anthropic, ProviderKind::Anthropic, "claude-sonnet")],
        )
        .start()
        .await;
    // The mock waits a second after its last event before it closes.
    let prompt = "#mock linger_ms=1000\nhello";
    let requests = [
        (
            gw.client
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(&gw.key)
                .json(&json!({"model": "gpt", "stream": true,
                    "messages": [{"role": "user", "content": prompt}]})),
            "data: [DONE]",
        ),
        (
            gw.client
                .post(gw.url("/v1/messages"))
                .header("x-api-key", &gw.key)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": "claude", "stream": true, "max_tokens": 20,
                    "messages": [{"role": "user", "content": prompt}]})),
            "event: message_stop",
        ),
    ];
    for (request, last) in requests {
        let mut body = request.send().await.unwrap().bytes_stream();
        let mut seen = String::new();
        while let Some(bytes) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&bytes.unwrap()));
            if seen.contains(last) {
                break;
            }
        }
        assert!(seen.contains(last), "{seen}");
        // Hang up at once, as the SDK does.
        drop(body);
    }
    let records = gw.finish().await;
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!((r.status, r.error_code), (200, None), "{r:?}");
    }
}

/// A compatible server that ignores `n` answers one choice: the client is told, not handed one
/// choice for two, and what the call used is still recorded and charged. (The mock answers `n`
/// choices unless told to ignore it.)
#[tokio::test]
async fn n_above_what_the_server_answered_is_an_error_naming_the_parameter() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route(
            "local",
            [on(&mock, ProviderKind::OpenAiCompatible, "llama")],
        )
        .start()
        .await;
    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "local", "n": 2,
                "messages": [{"role": "user", "content": "#mock ignore_n\nhi"}]}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_parameter");
    assert_eq!(body["error"]["param"], "n");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("answered 1 of the 2 choices"), "{message}");
    assert_eq!(mock.last_request().unwrap().body["n"], 2);

    let one = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "local", "n": 1, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(one.status(), 200);

    let records = gw.finish().await;
    assert_eq!(records[0].status, 400);
    assert_eq!(
        records[0].error_code.map(|c| c.as_str()),
        Some("unsupported_parameter")
    );
    assert!(records[0].input_tokens.unwrap() > 0 && records[0].output_tokens.unwrap() > 0);
}
