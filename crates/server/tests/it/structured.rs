//! Structured output that holds (PRODUCT §10): every answer to a structured request is checked
//! at the gateway; trivial damage is repaired, a violation falls back to a deployment that
//! conforms, and when none does the client gets a clear error in its dialect.

use serde_json::{Value, json};
use sluice_providers::{Deployment, ProviderKind, StructuredSupport};
use sluice_testkit::{MockUpstream, Reply};
use sluice_types::record::{AttemptOutcome, SchemaCheck};
use sluice_types::{ErrorKind, record::Next};

use crate::support::{TestGateway, on, openai_stream_text, sse_data, sse_event_names};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": false,
    })
}

fn structured_request(stream: bool) -> Value {
    json!({
        "model": "fast",
        "stream": stream,
        "messages": [{"role": "user", "content": "The largest city of France, as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema(), "strict": true}},
    })
}

const VALID: &str = r#"{"city": "Paris", "population": 2100000}"#;
/// Valid JSON, wrong shape: `population` is missing.
const INVALID: &str = r#"{"city": "Paris"}"#;

fn content(body: &Value) -> Value {
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn a_fenced_answer_is_repaired_to_clean_json_and_the_repair_is_recorded() {
    let mock = MockUpstream::openai()
        .reply(Reply::text(format!(
            "Here you go:\n```json\n{VALID}\n```\nAnything else?"
        )))
        .start()
        .await;
    let deployment = on(&mock, ProviderKind::OpenAi, "gpt-4o-mini");
    let gw = TestGateway::builder()
        .route("fast", [deployment.clone()])
        .start()
        .await;

    let res = gw
        .openai("/v1/chat/completions", structured_request(false))
        .await;
    assert_eq!(res.status(), 200);
    let policy = res.headers()["x-sluice-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        policy,
        format!("structured_output:{}:repair:response=1", deployment.name)
    );
    let body: Value = res.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, VALID, "the client gets the JSON alone");
    assert_eq!(mock.hits(), 1);

    let records = gw.finish().await;
    let record = &records[0];
    assert_eq!(record.schema_valid, Some(true));
    assert_eq!(record.attempts[0].schema, Some(SchemaCheck::Repaired));
    let decision = &record.policy.decisions()[0];
    assert_eq!(
        (decision.policy.as_str(), decision.rule.as_str()),
        ("structured_output", deployment.name.as_str())
    );
}

#[tokio::test]
async fn a_schema_violation_falls_back_to_a_deployment_that_conforms() {
    let bad = MockUpstream::openai()
        .reply(Reply::text(INVALID))
        .start()
        .await;
    let good = MockUpstream::openai()
        .reply(Reply::text(VALID))
        .start()
        .await;
    let (first, second) = (
        on(&bad, ProviderKind::OpenAi, "gpt-old"),
        on(&good, ProviderKind::OpenAi, "gpt-new"),
    );
    let gw = TestGateway::builder()
        .route("fast", [first.clone(), second.clone()])
        .start()
        .await;

    let res = gw
        .openai("/v1/chat/completions", structured_request(false))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-sluice-deployment"], second.name.as_str());
    let body: Value = res.json().await.unwrap();
    assert_eq!(content(&body)["population"], 2100000);
    // Both deployments were asked, each with the schema natively.
    for mock in [&bad, &good] {
        let sent = mock.last_request().unwrap().body;
        assert_eq!(sent["response_format"]["json_schema"]["schema"], schema());
    }

    let records = gw.finish().await;
    let attempts = &records[0].attempts;
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[0].outcome,
        AttemptOutcome::Failed(ErrorKind::SchemaViolation)
    );
    assert_eq!(attempts[0].schema, Some(SchemaCheck::Invalid));
    assert_eq!(attempts[0].next, Some(Next::Fallback));
    assert_eq!(attempts[1].outcome, AttemptOutcome::Ok);
    assert_eq!(attempts[1].schema, Some(SchemaCheck::Valid));
    assert_eq!(records[0].schema_valid, Some(true));
}

#[tokio::test]
async fn when_no_deployment_conforms_the_client_gets_a_schema_violation_in_its_dialect() {
    let one = MockUpstream::openai()
        .always(Reply::text(INVALID))
        .start()
        .await;
    let two = MockUpstream::anthropic()
        .always(Reply::text("I cannot answer that in JSON."))
        .start()
        .await;
    let gw = TestGateway::builder()
        .route(
            "fast",
            [
                on(&one, ProviderKind::OpenAi, "gpt"),
                on(&two, ProviderKind::Anthropic, "claude"),
            ],
        )
        .start()
        .await;

    let res = gw
        .openai("/v1/chat/completions", structured_request(false))
        .await;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "schema_violation");
    assert_eq!(body["error"]["type"], "server_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("does not hold the requested schema"),
        "{message}"
    );

    // An Anthropic client forcing a tool: neither the text answer nor the wrong arguments do.
    one.push_reply(Reply::tool_call("record_city", json!({"city": 3})));
    let res = gw
        .anthropic(
            "/v1/messages",
            json!({
                "model": "fast",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": "The largest city of France."}],
                "tools": [{"name": "record_city", "input_schema": schema()}],
                "tool_choice": {"type": "tool", "name": "record_city"},
            }),
        )
        .await;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requested schema")
    );

    let records = gw.finish().await;
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(record.status, 502);
        assert_eq!(
            record.error_code.map(|c| c.as_str()),
            Some("schema_violation")
        );
        assert_eq!(record.attempts.len(), 2);
        assert!(
            record
                .attempts
                .iter()
                .all(|a| a.schema == Some(SchemaCheck::Invalid))
        );
    }
}

#[tokio::test]
async fn a_server_without_structured_output_gets_an_instruction_and_its_answer_is_checked() {
    let mock = MockUpstream::openai()
        .reply(Reply::text(format!("```\n{VALID}\n```")))
        .reply(Reply::text(INVALID))
        .start()
        .await;
    let deployment = Deployment {
        kind: ProviderKind::OpenAiCompatible,
        structured_output: StructuredSupport::None,
        http_version: Default::default(),
        ..on(&mock, ProviderKind::OpenAiCompatible, "llama")
    };
    let gw = TestGateway::builder()
        .route("fast", [deployment])
        .start()
        .await;

    let res = gw
        .openai("/v1/chat/completions", structured_request(false))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(content(&body)["city"], "Paris");
    let sent = mock.last_request().unwrap().body;
    assert!(sent.get("response_format").is_none(), "{sent}");
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(system.contains("JSON Schema"), "{system}");
    assert!(
        system.contains(r#""required":["city","population"]"#),
        "{system}"
    );

    // Its next answer does not hold the schema: a single deployment, so an error.
    let res = gw
        .openai("/v1/chat/completions", structured_request(false))
        .await;
    assert_eq!(res.status(), 502);
    let records = gw.finish().await;
    assert_eq!(records[0].attempts[0].schema, Some(SchemaCheck::Repaired));
    assert_eq!(records[1].schema_valid, None, "no answer was served");
    assert_eq!(records[1].attempts[0].schema, Some(SchemaCheck::Invalid));
}

#[tokio::test]
async fn structured_requests_crossing_dialects_return_valid_json() {
    // An Anthropic client forcing a tool, served by OpenAI deployments: the first calls the
    // tool with arguments that break its schema, the fallback's hold.
    let wrong = MockUpstream::openai()
        .reply(Reply::tool_call("record_city", json!({"city": "Paris"})))
        .start()
        .await;
    let right = MockUpstream::openai().start().await;
    // An OpenAI client with a schema, served by Anthropic: prose around the forced tool's JSON
    // is repaired.
    let claude = MockUpstream::anthropic()
        .reply(Reply::text(format!("Sure! {VALID} Let me know.")))
        .start()
        .await;
    let gw = TestGateway::builder()
        .route(
            "tools",
            [
                on(&wrong, ProviderKind::OpenAi, "gpt-old"),
                on(&right, ProviderKind::OpenAi, "gpt-new"),
            ],
        )
        .route("fast", [on(&claude, ProviderKind::Anthropic, "claude")])
        .start()
        .await;

    let res = gw
        .anthropic(
            "/v1/messages",
            json!({
                "model": "tools",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": "The largest city of France."}],
                "tools": [{"name": "record_city", "input_schema": schema()}],
                "tool_choice": {"type": "tool", "name": "record_city"},
            }),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let block = &body["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "record_city");
    assert!(block["input"]["population"].is_i64(), "{block}");
    let sent = right.last_request().unwrap().body;
    assert_eq!(sent["tool_choice"]["function"]["name"], "record_city");
    assert_eq!((wrong.hits(), right.hits()), (1, 1));

    let res = gw
        .openai("/v1/chat/completions", structured_request(false))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"].as_str().unwrap(),
        VALID
    );
    let sent = claude.last_request().unwrap().body;
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "city"}));

    let records = gw.finish().await;
    assert_eq!(
        records[0].attempts[0].outcome,
        AttemptOutcome::Failed(ErrorKind::SchemaViolation)
    );
    assert_eq!(records[0].schema_valid, Some(true));
    assert_eq!(records[1].attempts[0].schema, Some(SchemaCheck::Repaired));
}

#[tokio::test]
async fn json_object_reaches_anthropic_as_an_instruction_and_is_checked() {
    let claude = MockUpstream::anthropic()
        .reply(Reply::text("```json\n{\"answer\": 42}\n```"))
        .start()
        .await;
    let gw = TestGateway::builder()
        .route("fast", [on(&claude, ProviderKind::Anthropic, "claude")])
        .start()
        .await;
    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({
                "model": "fast",
                "response_format": {"type": "json_object"},
                "messages": [{"role": "user", "content": "The answer, as a JSON object."}],
            }),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(content(&body), json!({"answer": 42}));
    let sent = claude.last_request().unwrap().body;
    assert!(sent.get("tool_choice").is_none(), "{sent}");
    let system = sent["system"].to_string();
    assert!(system.contains("single JSON object"), "{system}");
    gw.finish().await;
}

#[tokio::test]
async fn a_stream_whose_json_breaks_the_schema_ends_with_an_error_event() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .start()
        .await;

    // A fenced answer: the client gets the JSON alone, and a normal end.
    mock.push_reply(Reply::text(format!("```json\n{VALID}\n```")));
    let res = gw
        .openai("/v1/chat/completions", structured_request(true))
        .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(openai_stream_text(&events), VALID);
    assert_eq!(events.last().unwrap(), "[DONE]");

    // An invalid one: an error event, no [DONE].
    mock.push_reply(Reply::text(INVALID));
    let res = gw
        .openai("/v1/chat/completions", structured_request(true))
        .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let events = sse_data(&text);
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "schema_violation", "{text}");
    assert!(!text.contains("[DONE]"), "{text}");

    // Anthropic dialect, a forced tool whose arguments break its schema: `event: error`, no
    // message_stop.
    let anthropic_body = json!({
        "model": "fast",
        "stream": true,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "The largest city of France."}],
        "tools": [{"name": "record_city", "input_schema": schema()}],
        "tool_choice": {"type": "tool", "name": "record_city"},
    });
    mock.push_reply(Reply::tool_call("record_city", json!({"city": "Paris"})));
    let res = gw.anthropic("/v1/messages", anthropic_body).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let names = sse_event_names(&text);
    assert_eq!(names.last().map(String::as_str), Some("error"), "{text}");
    assert!(!names.iter().any(|n| n == "message_stop"), "{text}");

    let records = gw.finish().await;
    assert_eq!(records[0].schema_valid, Some(true));
    assert_eq!(records[0].attempts[0].schema, Some(SchemaCheck::Repaired));
    for record in &records[1..] {
        assert_eq!(record.status, 200);
        assert_eq!(
            record.error_code.map(|c| c.as_str()),
            Some("schema_violation")
        );
        assert_eq!(record.schema_valid, Some(false));
        assert_eq!(record.attempts[0].schema, Some(SchemaCheck::Invalid));
    }
}
