//! Tool policy end to end, on both ingress dialects, whole and streamed: a user key's
//! destructive call is replaced by an explanation the agent loop can read, an operator key's
//! passes unchanged, and a request offering a tool the key may not use never goes upstream.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sluice_pipeline::hooks::tools::ToolGuard;
use sluice_pipeline::{Hook, Hooks, RouteRules};
use sluice_policy::tools::{RuleAction, ToolPattern, ToolPolicy, ToolRule};
use sluice_providers::ProviderKind;
use sluice_store::NewKey;
use sluice_testkit::{MockUpstream, Reply};

use crate::support::{TestGateway, on, openai_stream_text, policy_parts, sse_data};

const EXPLANATION: &str = "[sluice] the call to `drop_database` was blocked by tool policy rule `no-drop`: it needs the `operator` role.";

fn policy() -> ToolPolicy {
    let pattern = |p: &str| ToolPattern::parse(p).unwrap();
    ToolPolicy {
        default_tools: Some(vec![pattern("drop_database"), pattern("search")]),
        roles: BTreeMap::from([("operator".to_owned(), vec![pattern("*")])]),
        keys: BTreeMap::new(),
        rules: vec![ToolRule {
            name: "no-drop".into(),
            tools: vec![pattern("drop_database")],
            arguments: None,
            bound: None,
            action: RuleAction::Block,
            unless_role: vec!["operator".into()],
        }],
    }
}

/// A gateway whose routes `gpt` (an OpenAI-dialect deployment) and `claude` (an
/// Anthropic-dialect one) run the tool policy, and a key holding the `operator` role.
async fn gateway(mock: &MockUpstream) -> (TestGateway, String) {
    let guard: Arc<dyn Hook> = Arc::new(ToolGuard {
        policy: Arc::new(policy()),
    });
    let mut parts = policy_parts();
    for alias in ["gpt", "claude"] {
        parts.routes.insert(
            alias.into(),
            RouteRules {
                hooks: Hooks::new(vec![guard.clone()]),
                ..RouteRules::default()
            },
        );
    }
    let gw = TestGateway::builder()
        .route("gpt", [on(mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .route(
            "claude",
            [on(mock, ProviderKind::Anthropic, "claude-sonnet-4-5")],
        )
        .policy(parts)
        .start()
        .await;
    let operator = gw
        .store
        .keys
        .create_key(NewKey {
            name: "ops".into(),
            roles: vec!["operator".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    (gw, operator.secret)
}

fn tools_openai() -> Value {
    json!([{"type": "function", "function": {"name": "drop_database", "parameters": {"type": "object", "properties": {"name": {"type": "string"}}}}}])
}

fn tools_anthropic() -> Value {
    json!([{"name": "drop_database", "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}}}])
}

async fn openai(gw: &TestGateway, key: &str, model: &str, stream: bool) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(
            &json!({"model": model, "stream": stream, "tools": tools_openai(),
            "messages": [{"role": "user", "content": "drop the prod database"}]}),
        )
        .send()
        .await
        .unwrap()
}

async fn anthropic(gw: &TestGateway, key: &str, model: &str, stream: bool) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": model, "max_tokens": 100, "stream": stream, "tools": tools_anthropic(),
            "messages": [{"role": "user", "content": "drop the prod database"}]}),
        )
        .send()
        .await
        .unwrap()
}

/// An Anthropic stream's text, tool-use blocks (name, input JSON) and stop reason.
fn anthropic_stream(body: &str) -> (String, Vec<(String, String)>, String) {
    let mut text = String::new();
    let mut tools: Vec<(String, String)> = Vec::new();
    let mut stop = String::new();
    for event in sse_data(body) {
        match event["type"].as_str() {
            Some("content_block_start") if event["content_block"]["type"] == "tool_use" => {
                tools.push((
                    event["content_block"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            Some("content_block_delta") => match event["delta"]["type"].as_str() {
                Some("text_delta") => text.push_str(event["delta"]["text"].as_str().unwrap()),
                Some("input_json_delta") => tools
                    .last_mut()
                    .unwrap()
                    .1
                    .push_str(event["delta"]["partial_json"].as_str().unwrap()),
                _ => {}
            },
            Some("message_delta") => {
                stop = event["delta"]["stop_reason"].as_str().unwrap().to_owned();
            }
            _ => {}
        }
    }
    (text, tools, stop)
}

/// An OpenAI stream's tool calls (index, name, arguments) and finish reason.
fn openai_stream_calls(chunks: &[Value]) -> (Vec<(u64, String, String)>, String) {
    let mut calls: Vec<(u64, String, String)> = Vec::new();
    let mut finish = String::new();
    for chunk in chunks {
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap();
            if let Some(name) = call["function"]["name"].as_str() {
                calls.push((index, name.to_owned(), String::new()));
            }
            if let Some(args) = call["function"]["arguments"].as_str() {
                calls
                    .iter_mut()
                    .find(|c| c.0 == index)
                    .unwrap()
                    .2
                    .push_str(args);
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = reason.to_owned();
        }
    }
    (calls, finish)
}

#[tokio::test]
async fn a_user_keys_drop_database_call_is_replaced_by_an_explanation_in_both_dialects() {
    let mock = MockUpstream::both()
        .always(Reply::tool_call("drop_database", json!({"name": "prod"})))
        .start()
        .await;
    let (gw, _) = gateway(&mock).await;
    let user = gw.key.clone();

    for model in ["gpt", "claude"] {
        // OpenAI dialect, whole.
        let res = openai(&gw, &user, model, false).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["x-sluice-policy"],
            "tool_policy:no-drop:block:tool_call=1"
        );
        let body: Value = res.json().await.unwrap();
        let choice = &body["choices"][0];
        assert_eq!(choice["message"]["content"], EXPLANATION, "{body}");
        assert!(
            choice["message"]
                .get("tool_calls")
                .is_none_or(Value::is_null),
            "{body}"
        );
        assert_eq!(choice["finish_reason"], "stop");

        // OpenAI dialect, streamed.
        let res = openai(&gw, &user, model, true).await;
        assert_eq!(res.status(), 200);
        let chunks = sse_data(&res.text().await.unwrap());
        assert_eq!(openai_stream_text(&chunks), EXPLANATION);
        let (calls, finish) = openai_stream_calls(&chunks);
        assert!(calls.is_empty(), "{calls:?}");
        assert_eq!(finish, "stop");
        assert_eq!(chunks.last(), Some(&Value::String("[DONE]".into())));

        // Anthropic dialect, whole.
        let res = anthropic(&gw, &user, model, false).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["x-sluice-policy"],
            "tool_policy:no-drop:block:tool_call=1"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["content"],
            json!([{"type": "text", "text": EXPLANATION}]),
            "{body}"
        );
        assert_eq!(body["stop_reason"], "end_turn");

        // Anthropic dialect, streamed.
        let res = anthropic(&gw, &user, model, true).await;
        let (text, tools, stop) = anthropic_stream(&res.text().await.unwrap());
        assert_eq!(text, EXPLANATION);
        assert!(tools.is_empty(), "{tools:?}");
        assert_eq!(stop, "end_turn");
    }

    assert_eq!(mock.hits(), 8);
    let metrics = gw.metrics().await;
    let records = gw.finish().await;
    assert_eq!(records.len(), 8);
    for r in &records {
        assert_eq!((r.status, r.error_code), (200, None), "{r:?}");
        assert_eq!(
            r.policy.summary().as_deref(),
            Some("tool_policy:no-drop:block:tool_call=1"),
            "{r:?}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_policy_decisions_total")
                && l.contains(
                    r#"policy="tool_policy",rule="no-drop",action="block",place="tool_call""#
                )),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_operator_keys_drop_database_call_passes_unchanged() {
    let mock = MockUpstream::both()
        .always(Reply::tool_call("drop_database", json!({"name": "prod"})))
        .start()
        .await;
    let (gw, operator) = gateway(&mock).await;

    for model in ["gpt", "claude"] {
        let body: Value = openai(&gw, &operator, model, false)
            .await
            .json()
            .await
            .unwrap();
        let call = &body["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "drop_database", "{body}");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"name": "prod"}));
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");

        let chunks = sse_data(
            &openai(&gw, &operator, model, true)
                .await
                .text()
                .await
                .unwrap(),
        );
        let (calls, finish) = openai_stream_calls(&chunks);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!((calls[0].0, calls[0].1.as_str()), (0, "drop_database"));
        assert_eq!(
            serde_json::from_str::<Value>(&calls[0].2).unwrap(),
            json!({"name": "prod"})
        );
        assert_eq!(finish, "tool_calls");

        let body: Value = anthropic(&gw, &operator, model, false)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["content"][0]["type"], "tool_use", "{body}");
        assert_eq!(body["content"][0]["name"], "drop_database");
        assert_eq!(body["content"][0]["input"], json!({"name": "prod"}));
        assert_eq!(body["stop_reason"], "tool_use");

        let res = anthropic(&gw, &operator, model, true).await;
        let (text, tools, stop) = anthropic_stream(&res.text().await.unwrap());
        assert_eq!(text, "");
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].0, "drop_database");
        assert_eq!(
            serde_json::from_str::<Value>(&tools[0].1).unwrap(),
            json!({"name": "prod"})
        );
        assert_eq!(stop, "tool_use");
    }

    let records = gw.finish().await;
    assert_eq!(records.len(), 8);
    for r in &records {
        // The capability let the call through; the record still says a rule matched.
        assert_eq!(
            r.policy.summary().as_deref(),
            Some("tool_policy:no-drop:log:tool_call=1"),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn a_request_offering_a_tool_the_key_may_not_use_never_goes_upstream() {
    let mock = MockUpstream::both().start().await;
    let (gw, operator) = gateway(&mock).await;
    let user = gw.key.clone();
    let shell_openai = json!([{"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}]);
    let shell_anthropic = json!([{"name": "shell", "input_schema": {"type": "object"}}]);

    for model in ["gpt", "claude"] {
        let res = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&user)
            .json(&json!({"model": model, "tools": shell_openai, "messages": [{"role": "user", "content": "ls"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        assert_eq!(
            res.headers()["x-sluice-policy"],
            "tool_policy:allowed_tools:block:tools=1"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "policy_blocked");
        assert_eq!(
            body["error"]["message"],
            "this key may not use the tool `shell` (tool_policy)"
        );

        let res = gw
            .client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", &user)
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": model, "max_tokens": 10, "stream": true, "tools": shell_anthropic,
                "messages": [{"role": "user", "content": "ls"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`shell`"),
            "{body}"
        );
    }
    assert_eq!(mock.hits(), 0, "nothing was sent upstream");

    // The operator role allows every tool.
    let res = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&operator)
        .json(&json!({"model": "gpt", "tools": shell_openai, "messages": [{"role": "user", "content": "ls"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(mock.hits(), 1);

    let records = gw.finish().await;
    let refused: Vec<_> = records.iter().filter(|r| r.status == 400).collect();
    assert_eq!(refused.len(), 4);
    for r in refused {
        assert_eq!(r.error_code.map(|c| c.as_str()), Some("policy_blocked"));
        assert!(r.attempts.is_empty());
        assert_eq!(
            r.policy.summary().as_deref(),
            Some("tool_policy:allowed_tools:block:tools=1")
        );
    }
}
