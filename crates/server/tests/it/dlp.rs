//! DLP at egress end to end: what the upstream receives, what the client reads (whole answers
//! and streams, both dialects), the block answered in the caller's dialect, and the audit in
//! the record, the header and `/metrics` — never the values found.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_dlp::{Detector, Scanner};
use sluice_pipeline::Hook;
use sluice_pipeline::hooks::dlp::{Actions, Dlp, DlpAction};
use sluice_providers::ProviderKind;
use sluice_testkit::{MockUpstream, Reply};
use sluice_types::record::{PolicyAction, PolicyPlace, RequestRecord};

use crate::hooks::with_hooks;
use crate::support::{TestGateway, on, openai_stream_text, sse_data};

const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";
const CLOUD_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// Email pseudonymised, cards redacted, secrets blocked; answers scanned.
fn dlp() -> Arc<dyn Hook> {
    let scanner = Scanner::new(&Detector::ALL, Vec::new()).unwrap();
    let actions = Actions::from([
        ("email".to_string(), DlpAction::Pseudonymise),
        ("payment_card".to_string(), DlpAction::Redact),
        ("secret".to_string(), DlpAction::Block),
    ]);
    Arc::new(Dlp::new(Arc::new(scanner), actions, Vec::new(), true))
}

fn decisions(record: &RequestRecord) -> Vec<(String, PolicyAction, PolicyPlace, u32)> {
    record
        .policy
        .decisions()
        .iter()
        .map(|d| (d.rule.clone(), d.action, d.place, d.count))
        .collect()
}

#[tokio::test]
async fn the_upstream_never_sees_a_redacted_or_pseudonymised_value_and_the_client_gets_its_own_back()
 {
    // The mock echoes the user's text: what it echoes is what it received.
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .policy(with_hooks(vec![dlp()]))
        .start()
        .await;
    let prompt = format!("Email {EMAIL} about card {CARD}");

    let response = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-sluice-policy"],
        "dlp:email:pseudonymise:request=1, dlp:payment_card:redact:request=1"
    );
    let body: Value = response.json().await.unwrap();
    let upstream = mock.last_request().unwrap().raw;
    let upstream = String::from_utf8_lossy(&upstream);
    assert!(
        !upstream.contains(EMAIL) && !upstream.contains("4111"),
        "{upstream}"
    );
    assert!(
        upstream.contains("Email <EMAIL_1> about card [REDACTED:payment_card]"),
        "{upstream}"
    );
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!(
            "Hello from the Sluice mock. You said: Email {EMAIL} about card [REDACTED:payment_card]"
        )
    );

    // The same through a stream in each dialect: the placeholder comes back split across
    // the mock's chunks and is restored whole.
    let streamed = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    let chunks = sse_data(&streamed.text().await.unwrap());
    assert_eq!(
        openai_stream_text(&chunks),
        format!(
            "Hello from the Sluice mock. You said: Email {EMAIL} about card [REDACTED:payment_card]"
        )
    );
    let anthropic = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "fast", "max_tokens": 200, "stream": true, "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    let text = anthropic.text().await.unwrap();
    let deltas: String = sse_data(&text)
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        deltas.contains(&format!("Email {EMAIL} about card")),
        "{text}"
    );
    for request in mock.requests() {
        let raw = String::from_utf8_lossy(&request.raw);
        assert!(!raw.contains(EMAIL) && !raw.contains("4111"), "{raw}");
    }

    let records = gw.finish().await;
    assert_eq!(records.len(), 3);
    for record in &records {
        assert_eq!(
            decisions(record),
            [
                (
                    "email".into(),
                    PolicyAction::Pseudonymise,
                    PolicyPlace::Request,
                    1
                ),
                (
                    "payment_card".into(),
                    PolicyAction::Redact,
                    PolicyPlace::Request,
                    1
                ),
            ],
            "{:?}",
            record.id
        );
        let stored = serde_json::to_string(record).unwrap();
        assert!(
            !stored.contains(EMAIL) && !stored.contains("4111"),
            "{stored}"
        );
    }
}

#[tokio::test]
async fn a_blocked_value_is_refused_in_each_dialect_with_nothing_sent_upstream() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .policy(with_hooks(vec![dlp()]))
        .start()
        .await;
    let prompt = format!("deploy with {CLOUD_KEY}");

    let openai = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    assert_eq!(openai.status(), 400);
    assert_eq!(
        openai.headers()["x-sluice-policy"],
        "dlp:secret:block:request=1"
    );
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["code"], "policy_blocked");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`secret`") && !message.contains(CLOUD_KEY),
        "{message}"
    );

    let anthropic = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "fast", "max_tokens": 10, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": prompt}]}]}),
        )
        .await;
    assert_eq!(anthropic.status(), 400);
    let body: Value = anthropic.json().await.unwrap();
    assert_eq!(body["type"], "error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("tool_result"), "{message}");

    assert_eq!(mock.hits(), 0);
    let records = gw.finish().await;
    let places: Vec<_> = records.iter().flat_map(decisions).collect();
    assert!(places.contains(&(
        "secret".into(),
        PolicyAction::Block,
        PolicyPlace::Request,
        1
    )));
    assert!(places.contains(&(
        "secret".into(),
        PolicyAction::Block,
        PolicyPlace::ToolResult,
        1
    )));
}

#[tokio::test]
async fn values_in_answers_are_acted_on_and_counted_on_metrics() {
    let mock = MockUpstream::openai()
        .always(Reply::text(format!("Your card {CARD} is on file")))
        .start()
        .await;
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .policy(with_hooks(vec![dlp()]))
        .start()
        .await;
    for stream in [false, true] {
        let response = gw
            .openai(
                "/v1/chat/completions",
                json!({"model": "fast", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        let text = response.text().await.unwrap();
        assert!(!text.contains("4111"), "{text}");
        assert!(text.contains("[REDACTED:payment_card]"), "{text}");
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"sluice_policy_decisions_total{alias="fast",policy="dlp",rule="payment_card",action="redact",place="response"} 2"#),
        "{metrics}"
    );
    gw.finish().await;
}

#[tokio::test]
async fn token_counts_and_embeddings_are_no_way_around_dlp() {
    let openai = MockUpstream::openai().start().await;
    let anthropic = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route(
            "fast",
            [on(&openai, ProviderKind::OpenAi, "text-embedding-3-small")],
        )
        .route(
            "claude",
            [on(&anthropic, ProviderKind::Anthropic, "claude-haiku-4-5")],
        )
        .policy({
            let mut parts = with_hooks(vec![dlp()]);
            let rules = parts.routes["fast"].clone();
            parts.routes.insert("claude".into(), rules);
            parts
        })
        .start()
        .await;

    let embedded = gw
        .openai(
            "/v1/embeddings",
            json!({"model": "fast", "input": [format!("card {CARD}"), "plain"]}),
        )
        .await;
    assert_eq!(embedded.status(), 200);
    let sent = openai.last_request().unwrap().body;
    assert_eq!(
        sent["input"],
        json!(["card [REDACTED:payment_card]", "plain"])
    );
    let refused = gw
        .openai(
            "/v1/embeddings",
            json!({"model": "fast", "input": CLOUD_KEY}),
        )
        .await;
    assert_eq!(refused.status(), 400);

    let counted = gw
        .anthropic(
            "/v1/messages/count_tokens",
            json!({"model": "claude", "messages": [{"role": "user", "content": format!("mail {EMAIL}")}]}),
        )
        .await;
    assert_eq!(counted.status(), 200);
    let sent = anthropic.last_request().unwrap();
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    let raw = String::from_utf8_lossy(&sent.raw);
    assert!(raw.contains("<EMAIL_1>") && !raw.contains(EMAIL), "{raw}");

    assert_eq!(openai.hits(), 1);
    let records = gw.finish().await;
    let blocked = records.iter().find(|r| r.status == 400).unwrap();
    assert_eq!(
        decisions(blocked),
        [(
            "secret".into(),
            PolicyAction::Block,
            PolicyPlace::Request,
            1
        )]
    );
}
