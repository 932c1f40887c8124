//! The stop-sequence guard end to end: collisions warned about, escaped (what the upstream
//! received) or refused (nothing sent); stop sequences past a route's limit kept back from the
//! upstream and enforced by the gateway on whole answers and streams, in both dialects.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_pipeline::hooks::stops::StopGuard;
use sluice_pipeline::{Hook, Hooks, RouteRules};
use sluice_policy::stops::OnCollision;
use sluice_providers::ProviderKind;
use sluice_testkit::{MockUpstream, Reply};

use crate::support::{TestGateway, on, openai_stream_text, policy_parts, sse_data};

async fn gateway(mock: &MockUpstream, guard: StopGuard) -> TestGateway {
    let guard: Arc<dyn Hook> = Arc::new(guard);
    let mut parts = policy_parts();
    parts.routes.insert(
        "fast".into(),
        RouteRules {
            hooks: Hooks::new(vec![guard]),
            ..RouteRules::default()
        },
    );
    TestGateway::builder()
        .route("fast", [on(mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .policy(parts)
        .start()
        .await
}

const PROMPT: &str = "Repeat after me: ###";

#[tokio::test]
async fn a_collision_is_warned_about_and_sent_unchanged() {
    let mock = MockUpstream::openai().start().await;
    let gw = gateway(
        &mock,
        StopGuard {
            on_collision: OnCollision::Warn,
            max_upstream: None,
        },
    )
    .await;
    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "stop": ["###"], "messages": [{"role": "user", "content": PROMPT}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-sluice-policy"],
        "stop_sequences:collision:warn:request=1"
    );
    let sent = mock.last_request().unwrap().body;
    assert_eq!(sent["messages"][0]["content"], PROMPT);
    assert_eq!(sent["stop"], json!(["###"]));
    let records = gw.finish().await;
    assert_eq!(
        records[0].policy.summary().as_deref(),
        Some("stop_sequences:collision:warn:request=1")
    );
}

#[tokio::test]
async fn a_collision_is_escaped_before_it_goes_upstream_in_both_dialects() {
    let mock = MockUpstream::openai().start().await;
    let gw = gateway(
        &mock,
        StopGuard {
            on_collision: OnCollision::Escape,
            max_upstream: None,
        },
    )
    .await;
    let openai = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "stop": "###", "messages": [{"role": "user", "content": PROMPT}]}),
        )
        .await;
    assert_eq!(openai.status(), 200);
    assert_eq!(
        openai.headers()["x-sluice-policy"],
        "stop_sequences:collision:escape:request=1"
    );
    let sent = mock.last_request().unwrap().body;
    assert_eq!(
        sent["messages"][0]["content"],
        "Repeat after me: #\u{200B}##"
    );

    let anthropic = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "fast", "max_tokens": 50, "stop_sequences": ["###"],
                "messages": [{"role": "user", "content": PROMPT}]}),
        )
        .await;
    assert_eq!(anthropic.status(), 200);
    let sent = mock.last_request().unwrap().body;
    let content = serde_json::to_string(&sent["messages"][0]["content"]).unwrap();
    assert!(content.contains("#\u{200B}##"), "{content}");
    assert!(!content.contains("###"), "{content}");
    gw.finish().await;
}

#[tokio::test]
async fn a_collision_is_refused_naming_the_sequence_before_any_upstream_call() {
    let mock = MockUpstream::openai().start().await;
    let gw = gateway(
        &mock,
        StopGuard {
            on_collision: OnCollision::Refuse,
            max_upstream: None,
        },
    )
    .await;
    let openai = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "stop": ["END", "###"], "messages": [{"role": "user", "content": PROMPT}]}),
        )
        .await;
    assert_eq!(openai.status(), 400);
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["code"], "policy_blocked");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("stop sequence 1 (\"###\") appears in the content of message 0"),
        "{message}"
    );

    let anthropic = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "fast", "max_tokens": 50, "stream": true, "stop_sequences": ["###"],
                "messages": [{"role": "user", "content": PROMPT}]}),
        )
        .await;
    assert_eq!(anthropic.status(), 400);
    let body: Value = anthropic.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    assert_eq!(mock.hits(), 0);
    let records = gw.finish().await;
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.error_code.map(|c| c.as_str()), Some("policy_blocked"));
        assert_eq!(
            r.policy.summary().as_deref(),
            Some("stop_sequences:collision:block:request=1")
        );
    }
}

/// The mock streams text in pieces of at most five characters: `<HALT>` arrives split.
const ANSWER: &str = "alpha beta <HALT> gamma delta";

#[tokio::test]
async fn stop_sequences_past_the_routes_limit_are_enforced_by_the_gateway() {
    let mock = MockUpstream::openai()
        .always(Reply::text(ANSWER))
        .start()
        .await;
    let gw = gateway(
        &mock,
        StopGuard {
            on_collision: OnCollision::Warn,
            max_upstream: Some(1),
        },
    )
    .await;
    let stop = json!(["zzz", "<HALT>"]);

    // OpenAI dialect, whole: only the first stop sequence went upstream.
    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "stop": stop, "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-sluice-policy"],
        "stop_sequences:enforced:enforce:response=1, stop_sequences:ended:flag:response=1"
    );
    assert_eq!(mock.last_request().unwrap().body["stop"], json!(["zzz"]));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "alpha beta ");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // OpenAI dialect, streamed.
    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "stream": true, "stop": stop, "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    let chunks = sse_data(&res.text().await.unwrap());
    assert_eq!(openai_stream_text(&chunks), "alpha beta ");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).map(|ch| &ch["finish_reason"]))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    assert_eq!(chunks.last(), Some(&Value::String("[DONE]".into())));

    // Anthropic dialect, whole: the stop sequence is named.
    let res = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "fast", "max_tokens": 50, "stop_sequences": stop,
                "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    assert_eq!(mock.last_request().unwrap().body["stop"], json!(["zzz"]));
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "alpha beta "}])
    );
    assert_eq!(body["stop_reason"], "stop_sequence");
    assert_eq!(body["stop_sequence"], "<HALT>");

    // Anthropic dialect, streamed.
    let res = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "fast", "max_tokens": 50, "stream": true, "stop_sequences": stop,
                "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    let events = sse_data(&res.text().await.unwrap());
    let text: String = events
        .iter()
        .filter(|e| e["delta"]["type"] == "text_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "alpha beta ");
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
    assert_eq!(delta["delta"]["stop_sequence"], "<HALT>");

    let records = gw.finish().await;
    assert_eq!(records.len(), 4);
    for r in &records {
        assert_eq!((r.status, r.error_code), (200, None));
        assert_eq!(
            r.policy.summary().as_deref(),
            Some(
                "stop_sequences:enforced:enforce:response=1, stop_sequences:ended:flag:response=1"
            ),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn an_answer_without_the_held_back_sequence_is_untouched() {
    let mock = MockUpstream::openai()
        .always(Reply::text("alpha <HAL beta"))
        .start()
        .await;
    let gw = gateway(
        &mock,
        StopGuard {
            on_collision: OnCollision::Warn,
            max_upstream: Some(0),
        },
    )
    .await;
    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "stream": true, "stop": ["<HALT>"], "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    let chunks = sse_data(&res.text().await.unwrap());
    assert_eq!(openai_stream_text(&chunks), "alpha <HAL beta");
    assert!(mock.last_request().unwrap().body.get("stop").is_none());
    let records = gw.finish().await;
    assert!(records[0].policy.is_empty(), "{:?}", records[0].policy);
}
