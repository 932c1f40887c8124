//! Bad input and failing upstreams: a clear error in the caller's dialect, the right status,
//! and a record for every request.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_providers::ProviderKind;
use sluice_routing::{RoutePolicy, RouteTimeouts};
use sluice_testkit::{Fault, MockUpstream, Reply};

use crate::support::{TestGateway, TestRoute, on, openai_stream_text, sse_data, sse_event_names};

async fn error_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(
        res.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    (status, res.json().await.unwrap())
}

fn openai_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an OpenAI error: {body}"))
}

fn anthropic_type(body: &Value) -> &str {
    assert_eq!(body["type"], "error", "not an Anthropic error: {body}");
    body["error"]["type"].as_str().unwrap()
}

#[tokio::test]
async fn authentication_failures_answer_in_each_dialect() {
    let mock = MockUpstream::both().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .start()
        .await;
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let msg =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});

    let (status, body) = error_of(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, openai_code(&body)), (401, "invalid_api_key"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );

    let (status, body) = error_of(
        gw.client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", "sk-sluice-wrong")
            .json(&msg)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, anthropic_type(&body)),
        (401, "authentication_error")
    );

    let revoked = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "old".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    gw.store.keys.revoke_key(&revoked.info.id).await.unwrap();
    let (status, body) = error_of(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&revoked.secret)
            .json(&chat)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    let scoped = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "s".into(),
            aliases: vec!["other".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, body) = error_of(
        gw.client
            .post(gw.url("/v1/messages"))
            .bearer_auth(&scoped.secret)
            .json(&msg)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // An alias outside the key's scope is answered as if it did not exist.
    assert_eq!((status, anthropic_type(&body)), (404, "not_found_error"));
    assert_eq!(
        body["error"]["message"],
        "the model `m` does not exist or is not served by this gateway"
    );
    assert_eq!(mock.hits(), 0);

    let records = gw.finish().await;
    assert_eq!(records.len(), 4, "every refused request leaves a record");
    assert_eq!(
        records.iter().map(|r| r.status).collect::<Vec<_>>(),
        [401, 401, 401, 404]
    );
    assert_eq!(
        records[3].error_code.map(|c| c.as_str()),
        Some("model_not_found")
    );
}

/// A key may not learn which aliases exist by trying names: an alias outside its scope and one
/// that does not exist get the same answer, byte for byte, in either dialect.
#[tokio::test]
async fn forbidden_and_unknown_aliases_are_answered_alike() {
    let mock = MockUpstream::both().start().await;
    let gw = TestGateway::builder()
        .route("secret-model", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .route("open", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .start()
        .await;
    let scoped = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "s".into(),
            aliases: vec!["open".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let ask = |model: &str, dialect: &str| {
        let request = match dialect {
            "openai" => gw
                .client
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(&scoped.secret)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})),
            _ => gw
                .client
                .post(gw.url("/v1/messages"))
                .header("x-api-key", &scoped.secret)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})),
        };
        async move {
            let res = request.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    for dialect in ["openai", "anthropic"] {
        let (forbidden_status, forbidden) = ask("secret-model", dialect).await;
        let (unknown_status, unknown) = ask("no-such-model", dialect).await;
        assert_eq!((forbidden_status, unknown_status), (404, 404));
        assert_eq!(
            forbidden.to_string().replace("secret-model", "X"),
            unknown.to_string().replace("no-such-model", "X"),
        );
    }
    let (_, body) = ask("secret-model", "openai").await;
    assert_eq!(openai_code(&body), "model_not_found");
    assert_eq!(mock.hits(), 0);
}

/// A wrong HTTP method on an API endpoint is answered 405 in that endpoint's dialect, with
/// `Allow`; an unknown path is a 404 whatever the method.
#[tokio::test]
async fn wrong_methods_get_405_in_the_endpoints_dialect_with_allow() {
    let mock = MockUpstream::both().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .start()
        .await;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/v1/chat/completions", "POST"),
        (reqwest::Method::PUT, "/v1/embeddings", "POST"),
        (reqwest::Method::POST, "/v1/models", "GET, HEAD"),
    ] {
        let res = gw
            .client
            .request(method.clone(), gw.url(path))
            .bearer_auth(&gw.key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        let (status, body) = error_of(res).await;
        assert_eq!((status, openai_code(&body)), (405, "method_not_allowed"));
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(
            body["error"]["message"],
            format!("{method} is not allowed on {path}; use {allow}")
        );
    }
    for (method, path) in [
        (reqwest::Method::GET, "/v1/messages"),
        (reqwest::Method::DELETE, "/v1/messages/count_tokens"),
    ] {
        let res = gw
            .client
            .request(method.clone(), gw.url(path))
            .header("x-api-key", &gw.key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["allow"], "POST");
        let (status, body) = error_of(res).await;
        assert_eq!(
            (status, anthropic_type(&body)),
            (405, "invalid_request_error")
        );
        assert_eq!(
            body["error"]["message"],
            format!("{method} is not allowed on {path}; use POST")
        );
    }
    let res = gw
        .client
        .delete(gw.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(res).await;
    assert_eq!((status, openai_code(&body)), (404, "unknown_url"));
    assert_eq!(mock.hits(), 0);
}

/// Liveness and readiness are open but say nothing about the configuration; the detail and the
/// metrics need the admin token, or the operators' listener.
#[tokio::test]
async fn health_is_minimal_to_anyone_and_detailed_with_the_admin_token() {
    const TOKEN: &str = "an-admin-token-of-some-length-0123";
    let mock = MockUpstream::both().start().await;
    let gw = TestGateway::builder()
        .route("private-alias", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .admin_token(TOKEN)
        .start()
        .await;
    let res = gw.client.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    // A client key is not the admin token.
    let res = gw
        .client
        .get(gw.url("/health"))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    // Readiness says the mode (what a balancer and an operator need), never why.
    let res = gw.client.get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "ready", "mode": "normal", "degraded": []})
    );

    let res = gw
        .client
        .get(gw.url("/health"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let detail: Value = res.json().await.unwrap();
    assert!(detail["routes"].get("private-alias").is_some(), "{detail}");
    assert_eq!(detail, gw.health().await);

    for key in [None, Some(gw.key.as_str())] {
        let mut request = gw.client.get(gw.url("/metrics"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), 401);
        let text = res.text().await.unwrap();
        assert!(!text.contains("private-alias"), "{text}");
        assert!(text.contains("invalid_admin_token"), "{text}");
    }
    let res = gw
        .client
        .get(gw.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("sluice_connections_open")
    );
    assert!(gw.metrics().await.contains("sluice_connections_open"));
}

#[tokio::test]
async fn malformed_requests_get_400s_that_name_the_problem() {
    let mock = MockUpstream::both().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::Anthropic, "claude")])
        .max_body_bytes(4096)
        .start()
        .await;
    let post = |path: &'static str, body: Vec<u8>| {
        gw.client
            .post(gw.url(path))
            .bearer_auth(&gw.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let (status, body) = error_of(
        post("/v1/chat/completions", b"{\"model\": \"m\", ".to_vec())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["type"].as_str().unwrap()),
        (400, "invalid_request_error")
    );

    let (status, body) = error_of(
        post(
            "/v1/chat/completions",
            br#"{"model": "m", "messages": "hello"}"#.to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages"),
        "{body}"
    );

    let (status, body) = error_of(
        post(
            "/v1/messages",
            br#"{"model": "m", "messages": [{"role": "user", "content": "x"}]}"#.to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, anthropic_type(&body)),
        (400, "invalid_request_error")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{body}"
    );

    let mut invalid_utf8 =
        br#"{"model": "m", "messages": [{"role": "user", "content": "caf"#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#""}]}"#);
    let (status, _) = error_of(post("/v1/chat/completions", invalid_utf8).await.unwrap()).await;
    assert_eq!(status, 400);

    let big = format!(
        r#"{{"model": "m", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(5000)
    );
    let (status, body) = error_of(post("/v1/messages", big.into_bytes()).await.unwrap()).await;
    assert_eq!((status, anthropic_type(&body)), (413, "request_too_large"));

    let (status, body) = error_of(
        post(
            "/v1/chat/completions",
            br#"{"model": "nope", "messages": [{"role": "user", "content": "x"}]}"#.to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, openai_code(&body)), (404, "model_not_found"));
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));

    // A parameter the target cannot honour is refused, not dropped.
    let (status, body) = error_of(
        post(
            "/v1/chat/completions",
            br#"{"model": "m", "n": 3, "messages": [{"role": "user", "content": "x"}]}"#.to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, openai_code(&body)), (400, "unsupported_parameter"));
    assert!(
        body["error"]["message"].as_str().unwrap().contains('n'),
        "{body}"
    );
    assert_eq!(mock.hits(), 0, "nothing bad reached the upstream");

    let records = gw.finish().await;
    assert_eq!(records.len(), 7);
    assert!(
        records
            .iter()
            .all(|r| r.status >= 400 && r.error_code.is_some())
    );
}

#[tokio::test]
async fn upstream_failures_map_to_gateway_statuses_in_the_callers_dialect() {
    let mock = MockUpstream::openai().start().await;
    let mut policy = RoutePolicy::ordered(RouteTimeouts {
        connect: Duration::from_secs(1),
        first_token: Duration::from_millis(300),
        idle: Duration::from_secs(5),
        total: Duration::from_secs(5),
    });
    // Every case must reach the mock: no Retry-After is held against the next request.
    policy.retry.retry_after_max = Duration::ZERO;
    let gw = TestGateway::builder()
        .route_with(TestRoute {
            alias: "m".into(),
            pool: vec![on(&mock, ProviderKind::OpenAi, "gpt")],
            fallbacks: vec![],
            policy: Some(policy),
        })
        .start()
        .await;
    let msg =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});

    let cases: [(Reply, u16, &str, Option<&str>); 5] = [
        (
            Reply::Status {
                status: 500,
                body: None,
                retry_after: None,
            },
            502,
            "api_error",
            None,
        ),
        (
            Reply::Status {
                status: 503,
                body: None,
                retry_after: Some(4),
            },
            503,
            "overloaded_error",
            Some("4"),
        ),
        (
            Reply::Status {
                status: 429,
                body: None,
                retry_after: Some(7),
            },
            429,
            "rate_limit_error",
            Some("7"),
        ),
        (Reply::Malformed, 502, "api_error", None),
        (
            Reply::WithFault(
                Box::new(Reply::Text("late".into())),
                Fault {
                    delay_ms: 2_000,
                    ..Fault::default()
                },
            ),
            504,
            "timeout_error",
            None,
        ),
    ];
    for (reply, status, kind, retry_after) in cases {
        mock.push_reply(reply);
        let res = gw.anthropic("/v1/messages", msg.clone()).await;
        let got_retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (got, body) = error_of(res).await;
        assert_eq!((got, anthropic_type(&body)), (status, kind), "{body}");
        assert_eq!(got_retry_after.as_deref(), retry_after);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("upstream-secret") && !message.contains('{'),
            "no upstream body or secret leaks: {message}"
        );
    }
    let records = gw.finish().await;
    assert_eq!(
        records.iter().map(|r| r.status).collect::<Vec<_>>(),
        [502, 503, 429, 502, 504]
    );
    assert_eq!(
        records[4].error_code.map(|c| c.as_str()),
        Some("upstream_timeout")
    );
    assert_eq!(records[1].attempts[0].status, Some(503));
}

#[tokio::test]
async fn falls_back_to_the_next_deployment_before_the_first_byte() {
    let primary = MockUpstream::openai()
        .always(Reply::Status {
            status: 503,
            body: None,
            retry_after: None,
        })
        .start()
        .await;
    let backup = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route(
            "m",
            [
                on(&primary, ProviderKind::OpenAi, "gpt"),
                on(&backup, ProviderKind::Anthropic, "claude"),
            ],
        )
        .start()
        .await;

    for stream in [false, true] {
        let res = gw.openai("/v1/chat/completions", json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-sluice-attempts"], "2");
        assert_eq!(res.headers()["x-sluice-provider"], "anthropic");
        let text = res.text().await.unwrap();
        let content: String = if stream {
            openai_stream_text(&sse_data(&text))
        } else {
            text
        };
        assert!(content.contains("You said: hi"), "{content}");
    }
    assert_eq!((primary.hits(), backup.hits()), (2, 2));
    let records = gw.finish().await;
    let outcomes: Vec<(&str, &str)> = records[0]
        .attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [("openai", "upstream_overloaded"), ("anthropic", "ok")]
    );
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_error_event_in_each_dialect() {
    let cut = || {
        Reply::WithFault(
            Box::new(Reply::Text("a long answer that will never finish".into())),
            Fault {
                // After the first content event: a cut before it is not mid-stream (nothing
                // reached the client; the request fails or falls back cleanly).
                cut_after_events: Some(6),
                ..Fault::default()
            },
        )
    };
    let openai = MockUpstream::openai().always(cut()).start().await;
    let anthropic = MockUpstream::anthropic().always(cut()).start().await;
    let gw = TestGateway::builder()
        .route("o", [on(&openai, ProviderKind::OpenAi, "gpt")])
        .route("a", [on(&anthropic, ProviderKind::Anthropic, "claude")])
        .start()
        .await;

    for alias in ["o", "a"] {
        let text = gw.openai("/v1/chat/completions", json!({"model": alias, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await.text().await.unwrap();
        let data = sse_data(&text);
        assert!(
            !data.contains(&Value::String("[DONE]".into())),
            "never a clean end: {text}"
        );
        assert_eq!(
            data.last().unwrap()["error"]["code"],
            "upstream_unavailable",
            "{text}"
        );

        let text = gw.anthropic("/v1/messages", json!({"model": alias, "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await.text().await.unwrap();
        let names = sse_event_names(&text);
        assert_eq!(names.last().map(String::as_str), Some("error"), "{text}");
        assert!(!names.contains(&"message_stop".to_owned()));
        assert_eq!(
            sse_data(&text).last().unwrap()["error"]["type"],
            "api_error"
        );
    }
    let records = gw.finish().await;
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(
        |r| r.status == 200 && r.error_code.map(|c| c.as_str()) == Some("upstream_unavailable")
    ));
}

#[tokio::test]
async fn unknown_routes_answer_404_in_the_dialect_of_the_client() {
    let gw = TestGateway::builder().start().await;
    let res = gw.client.get(gw.url("/v1/nothing")).send().await.unwrap();
    let (status, body) = error_of(res).await;
    assert_eq!((status, openai_code(&body)), (404, "unknown_url"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/nothing")
    );
    let res = gw
        .client
        .post(gw.url("/v1/nothing"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(res).await;
    assert_eq!((status, anthropic_type(&body)), (404, "not_found_error"));
}

#[tokio::test]
async fn a_client_that_leaves_still_leaves_a_record_and_the_upstream_stream_is_cancelled() {
    let slow = Fault {
        chunk_delay_ms: 200,
        ..Fault::default()
    };
    let mock = MockUpstream::openai()
        .always(Reply::WithFault(
            Box::new(Reply::Text("one two three four five six".into())),
            slow,
        ))
        .start()
        .await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .start()
        .await;

    // A stream read up to its first bytes, then abandoned.
    let mut res = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert!(res.chunk().await.unwrap().is_some());
    drop(res);
    tokio::time::timeout(Duration::from_secs(5), mock.wait_cancelled(1))
        .await
        .expect("the upstream stream is closed when the client leaves");

    // A non-streamed request whose client gives up before the answer.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    mock.push_reply(Reply::WithFault(
        Box::new(Reply::Text("late".into())),
        Fault {
            delay_ms: 1_000,
            ..Fault::default()
        },
    ));
    let gave_up = impatient
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    assert!(gave_up.is_err());
    tokio::time::timeout(Duration::from_secs(5), mock.wait_hits(2))
        .await
        .unwrap();

    let records = gw.finish().await;
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(
            (r.status, r.error_code.map(|c| c.as_str())),
            (499, Some("client_disconnected")),
            "{r:?}"
        );
    }
    assert!(
        records[0].stream && records[0].output_tokens.is_some(),
        "usage so far is settled"
    );
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_key() {
    let gw = TestGateway::builder().start().await;
    let mut health: Value = gw
        .client
        .get(gw.metrics_url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let config = health.as_object_mut().unwrap().remove("config").unwrap();
    assert_eq!(
        health,
        json!({
            "status": "ok",
            "ready": {"status": "ready", "mode": "normal", "degraded": []},
            "store_outage": null,
            "journal_bytes": 0,
            "records_replayed": 0,
            "records_shed": 0,
            "drills_shed": 0,
            "deployments": [],
            "routes": {}
        })
    );
    // Settings built in code: no file, no hash, loaded when the gateway was built.
    assert_eq!(
        (&config["path"], &config["sha256"], &config["reloads"]),
        (&Value::Null, &Value::Null, &json!(0))
    );
    assert!(config["loaded_at"].as_str().unwrap().starts_with("20"));
    let ready = gw.client.get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "ready", "mode": "normal", "degraded": []})
    );
}

#[tokio::test]
async fn client_chosen_ids_past_256_bytes_are_refused_in_the_callers_dialect_naming_the_field() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .budget(crate::support::budget("user:*", "requests", "day", 100))
        .start()
        .await;
    let long = "u".repeat(257);
    let chat = |user: Option<&str>| {
        let mut body =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        if let Some(user) = user {
            body["user"] = json!(user);
        }
        body
    };
    let openai = |header: Option<(&'static str, String)>, body: Value| {
        let mut request = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&gw.key)
            .json(&body);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        request.send()
    };

    // Exactly at the limit: served, and counted under that id.
    let at_limit = "u".repeat(256);
    let ok = openai(Some(("x-sluice-user", at_limit.clone())), chat(None))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    for (header, body, field) in [
        (
            Some(("x-sluice-user", long.clone())),
            chat(None),
            "x-sluice-user",
        ),
        (
            Some(("x-sluice-feature", long.clone())),
            chat(None),
            "x-sluice-feature",
        ),
        (None, chat(Some(&long)), "user"),
    ] {
        let (status, body) = error_of(openai(header, body).await.unwrap()).await;
        assert_eq!(status, 400, "{field}");
        assert_eq!(openai_code(&body), "invalid_request", "{body}");
        assert_eq!(body["error"]["param"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}` is 257 bytes long")),
            "{message}"
        );
        assert!(message.contains("at most 256 bytes"), "{message}");
    }
    let mut long_model = chat(None);
    long_model["model"] = json!("m".repeat(300));
    let (status, body) = error_of(openai(None, long_model).await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "model", "{body}");

    // Anthropic callers are told in their own shape, naming their own field.
    let mut message =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    message["metadata"] = json!({"user_id": long});
    let (status, body) = error_of(gw.anthropic("/v1/messages", message).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let text = body["error"]["message"].as_str().unwrap();
    assert!(
        text.starts_with("`metadata.user_id` is 257 bytes long"),
        "{text}"
    );

    assert_eq!(mock.hits(), 1, "refused requests never went upstream");
    let records = gw.finish().await;
    assert_eq!(records.len(), 6);
    assert_eq!(records[0].user.as_deref(), Some(at_limit.as_str()));
    // No refused id was kept: not in a record, and so not in a report.
    for record in &records[1..] {
        assert_eq!(record.status, 400);
        for kept in [&record.user, &record.feature, &record.alias] {
            assert!(kept.as_ref().is_none_or(|id| id.len() <= 256), "{record:?}");
        }
    }
}

#[tokio::test]
async fn a_cached_key_is_refused_as_soon_as_its_revocation_is_announced() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("fast", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .start()
        .await;
    let chat = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
    let status = |secret: String| {
        let request = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(secret)
            .json(&chat);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let created = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "cached".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(status(created.secret.clone()).await, 200);
    gw.store.keys.revoke_key(&created.info.id).await.unwrap();
    // Cached, and this store announces nothing: the key still works until its entry expires.
    assert_eq!(status(created.secret.clone()).await, 200);
    gw.gateway
        .key_changed(sluice_store::KeyChange::Changed(sluice_store::KeyHash::of(
            &created.secret,
        )));
    assert_eq!(status(created.secret.clone()).await, 401);

    // Announcements lost: every cached key is read again.
    let other = gw
        .store
        .keys
        .create_key(sluice_store::NewKey::default())
        .await
        .unwrap();
    assert_eq!(status(other.secret.clone()).await, 200);
    gw.store.keys.revoke_key(&other.info.id).await.unwrap();
    gw.gateway.key_changed(sluice_store::KeyChange::Missed);
    assert_eq!(status(other.secret.clone()).await, 401);
    gw.finish().await;
}
