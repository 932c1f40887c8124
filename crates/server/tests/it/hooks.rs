//! The policy seam end to end: a route's hooks refuse, rewrite and stop answers in the
//! caller's dialect, and the pipeline (not the server) decides when upstream bytes pass through.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_pipeline::hooks::{AnswerHook, HookContext, RequestSize, Verdict};
use sluice_pipeline::{Hook, HookError, Hooks, RouteRules};
use sluice_providers::ProviderKind;
use sluice_testkit::{MockUpstream, Reply};
use sluice_types::record::Audit;
use sluice_types::{ChatResponse, Part, StreamEvent};

use crate::support::{
    TestGateway, on, openai_stream_text, policy_parts, sse_data, sse_event_names,
};

/// Policy parts whose route `fast` runs `hooks`.
pub(crate) fn with_hooks(hooks: Vec<Arc<dyn Hook>>) -> sluice_pipeline::PolicyParts {
    let mut parts = policy_parts();
    parts.routes.insert(
        "fast".into(),
        RouteRules {
            hooks: Hooks::new(hooks),
            ..RouteRules::default()
        },
    );
    parts
}

#[tokio::test]
async fn a_prompt_over_max_input_tokens_is_refused_in_each_dialect_before_any_upstream_call() {
    let mock = MockUpstream::openai().start().await;
    let size: Arc<dyn Hook> = Arc::new(RequestSize {
        max_input_tokens: 50,
    });
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .policy(with_hooks(vec![size]))
        .start()
        .await;
    let long = "lorem ipsum ".repeat(100);

    let small = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(small.status(), 200);

    let openai = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!(openai.status(), 400);
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["code"], "policy_blocked");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("accepts at most 50"), "{message}");

    let anthropic = gw
        .anthropic("/v1/messages", json!({"model": "fast", "max_tokens": 10, "messages": [{"role": "user", "content": long}]}))
        .await;
    assert_eq!(anthropic.status(), 400);
    let body: Value = anthropic.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // Only the small request reached the upstream.
    assert_eq!(mock.hits(), 1);
    let records = gw.finish().await;
    let refused: Vec<_> = records.iter().filter(|r| r.status == 400).collect();
    assert_eq!(refused.len(), 2);
    for r in refused {
        assert_eq!(r.error_code.map(|c| c.as_str()), Some("policy_blocked"));
        assert!(r.attempts.is_empty());
        assert_eq!(r.tenant.as_ref().map(|t| t.as_str()), Some("acme"));
    }
}

/// Reads every answer and uppercases its text: no raw upstream byte may reach the client.
#[derive(Debug)]
struct Upper;

struct UpperStream;

impl Hook for Upper {
    fn name(&self) -> &'static str {
        "upper"
    }
    fn on_request(
        &self,
        _context: HookContext<'_>,
        _request: &mut sluice_types::ChatRequest,
        _audit: &mut Audit,
    ) -> Result<Verdict, HookError> {
        Ok(Verdict::Watch(Box::new(UpperStream)))
    }
}

impl AnswerHook for UpperStream {
    fn on_response(
        &mut self,
        response: &mut ChatResponse,
        _audit: &mut Audit,
    ) -> Result<(), HookError> {
        for choice in &mut response.choices {
            for part in &mut choice.parts {
                if let Part::Text { text, .. } = part {
                    *text = text.to_uppercase();
                }
            }
        }
        Ok(())
    }
    fn on_event(
        &mut self,
        event: StreamEvent,
        out: &mut Vec<StreamEvent>,
        _audit: &mut Audit,
    ) -> Result<(), HookError> {
        match event {
            StreamEvent::TextDelta { text, .. } if text.contains("STOP") => {
                Err(HookError::OutputBlocked {
                    hook: "upper",
                    reason: "the answer said STOP".into(),
                })
            }
            StreamEvent::TextDelta { choice, text } => {
                out.push(StreamEvent::TextDelta {
                    choice,
                    text: text.to_uppercase(),
                });
                Ok(())
            }
            other => {
                out.push(other);
                Ok(())
            }
        }
    }
}

#[tokio::test]
async fn a_hook_that_reads_output_rewrites_same_dialect_answers_and_streams() {
    let mock = MockUpstream::openai()
        .always(Reply::text("quiet words"))
        .start()
        .await;
    let upper: Arc<dyn Hook> = Arc::new(Upper);
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .policy(with_hooks(vec![upper]))
        .start()
        .await;

    let whole = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(whole.status(), 200);
    let body: Value = whole.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "QUIET WORDS");

    let streamed = gw
        .openai("/v1/chat/completions", json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(streamed.status(), 200);
    let text = streamed.text().await.unwrap();
    let chunks = sse_data(&text);
    assert_eq!(openai_stream_text(&chunks), "QUIET WORDS");
    assert_eq!(chunks.last(), Some(&Value::String("[DONE]".into())));

    let anthropic = gw
        .anthropic("/v1/messages", json!({"model": "fast", "max_tokens": 20, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let text = anthropic.text().await.unwrap();
    assert!(text.contains("QUIET"), "{text}");
    assert!(!text.contains("quiet"), "{text}");
    assert_eq!(
        sse_event_names(&text).last().map(String::as_str),
        Some("message_stop")
    );
    gw.finish().await;
}

#[tokio::test]
async fn a_stream_hook_ends_the_stream_with_an_error_event_in_the_callers_dialect() {
    let mock = MockUpstream::openai()
        .always(Reply::text("go on then STOP here"))
        .start()
        .await;
    let upper: Arc<dyn Hook> = Arc::new(Upper);
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .policy(with_hooks(vec![upper]))
        .start()
        .await;

    let openai = gw
        .openai("/v1/chat/completions", json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let text = openai.text().await.unwrap();
    let chunks = sse_data(&text);
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "policy_blocked", "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    // What came before the stop went out (rewritten); the stopped delta did not.
    assert_eq!(openai_stream_text(&chunks), "GO ON THEN");

    let anthropic = gw
        .anthropic("/v1/messages", json!({"model": "fast", "max_tokens": 20, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let text = anthropic.text().await.unwrap();
    let events = sse_event_names(&text);
    assert_eq!(events.last().map(String::as_str), Some("error"), "{text}");
    assert!(!events.iter().any(|e| e == "message_stop"), "{text}");

    let records = gw.finish().await;
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.status, 200);
        assert_eq!(r.error_code.map(|c| c.as_str()), Some("policy_blocked"));
    }
}

/// Answers every request itself, as a cache or an idempotent replay would.
#[derive(Debug)]
struct Canned;

impl Hook for Canned {
    fn name(&self) -> &'static str {
        "canned"
    }
    fn on_request(
        &self,
        _context: HookContext<'_>,
        _request: &mut sluice_types::ChatRequest,
        _audit: &mut Audit,
    ) -> Result<Verdict, HookError> {
        Ok(Verdict::Answer(Box::new(ChatResponse {
            id: "canned-1".into(),
            model: "canned-model".into(),
            created: 0,
            choices: vec![sluice_types::Choice {
                index: 0,
                parts: vec![Part::text("from the gateway")],
                refusal: None,
                finish_reason: Some(sluice_types::FinishReason::EndTurn),
                logprobs: None,
            }],
            usage: None,
            system_fingerprint: None,
        })))
    }
}

#[tokio::test]
async fn a_hook_can_answer_without_an_upstream_call_in_either_dialect() {
    let mock = MockUpstream::openai().start().await;
    let canned: Arc<dyn Hook> = Arc::new(Canned);
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .policy(with_hooks(vec![canned]))
        .start()
        .await;

    let openai = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(openai.status(), 200);
    assert_eq!(openai.headers()["x-sluice-provider"], "sluice");
    assert_eq!(openai.headers()["x-sluice-attempts"], "0");
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from the gateway");
    assert_eq!(body["model"], "canned-model");

    let anthropic = gw
        .anthropic("/v1/messages", json!({"model": "fast", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(anthropic.status(), 200);
    let body: Value = anthropic.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "from the gateway");

    assert_eq!(mock.hits(), 0);
    let records = gw.finish().await;
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!((r.status, r.error_code), (200, None));
        assert!(r.attempts.is_empty());
        assert_eq!(r.served_model.as_deref(), None);
        // The gateway's own estimate, flagged: nothing was reported.
        assert!(r.usage_estimated);
    }
}
