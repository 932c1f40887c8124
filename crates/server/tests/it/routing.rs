//! Reliability routing against mock providers: every fallback condition, breakers, retry
//! budgets, Retry-After, queue limits, timeouts, hedging and drills — asserting on what the
//! client got, what each upstream received, and the attempts in the records.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_providers::{Deployment, ProviderKind};
use sluice_routing::{
    BreakerPolicy, CapacityPolicy, Condition, Conditions, HedgePolicy, RoutePolicy, RouteTimeouts,
};
use sluice_store::{AttemptRecord, RequestRecord};
use sluice_testkit::{Fault, MockUpstream, Reply};

use crate::support::{TestGateway, TestRoute, breaker_off, on, openai_stream_text, sse_data};

fn timeouts() -> RouteTimeouts {
    RouteTimeouts {
        connect: Duration::from_secs(1),
        first_token: Duration::from_secs(5),
        idle: Duration::from_secs(5),
        total: Duration::from_secs(10),
    }
}

fn policy(change: impl FnOnce(&mut RoutePolicy)) -> RoutePolicy {
    let mut policy = RoutePolicy::ordered(timeouts());
    change(&mut policy);
    policy
}

fn route(pool: Vec<Deployment>, fallbacks: Vec<Deployment>, policy: RoutePolicy) -> TestRoute {
    TestRoute {
        alias: "chat".into(),
        pool,
        fallbacks,
        policy: Some(policy),
    }
}

fn chat(stream: bool) -> Value {
    json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn status(code: u16, retry_after: Option<u64>) -> Reply {
    Reply::Status {
        status: code,
        body: None,
        retry_after,
    }
}

/// A 400 whose OpenAI body carries `code`.
fn rejected(code: &str, message: &str) -> Reply {
    Reply::Status {
        status: 400,
        body: Some(
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})
                .to_string(),
        ),
        retry_after: None,
    }
}

/// (deployment, outcome, next) of every attempt of a record.
fn steps(record: &RequestRecord) -> Vec<(String, String, Option<String>)> {
    record
        .attempts
        .iter()
        .map(|a| {
            let next = a.next.map(|n| n.as_str().to_owned());
            (a.deployment.clone(), a.outcome.as_str().to_owned(), next)
        })
        .collect()
}

fn step(
    deployment: &Deployment,
    outcome: &str,
    next: Option<&str>,
) -> (String, String, Option<String>) {
    (
        deployment.name.clone(),
        outcome.to_owned(),
        next.map(str::to_owned),
    )
}

/// A deployment at a loopback port nothing listens on.
async fn unreachable() -> Deployment {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    Deployment {
        name: format!("unreachable-{port}"),
        provider: "nowhere".into(),
        kind: ProviderKind::OpenAiCompatible,
        base_url: format!("http://127.0.0.1:{port}/v1").parse().unwrap(),
        model: "m".into(),
        api_key: None,
        default_max_tokens: 64,
        structured_output: Default::default(),
        http_version: Default::default(),
    }
}

#[tokio::test]
async fn falls_back_on_every_condition_the_route_names() {
    let slow = Reply::Text("late".into()).with_fault(Fault {
        delay_ms: 3_000,
        ..Fault::default()
    });
    let cases: Vec<(&str, Option<Reply>, &str)> = vec![
        (
            "rate_limited",
            Some(status(429, None)),
            "rate_limit_exceeded",
        ),
        (
            "server_error",
            Some(status(500, None)),
            "upstream_unavailable",
        ),
        ("overloaded", Some(status(529, None)), "upstream_overloaded"),
        ("timeout", Some(slow), "upstream_timeout"),
        (
            "malformed",
            Some(Reply::Malformed),
            "upstream_malformed_response",
        ),
        (
            "context_length_exceeded",
            Some(rejected(
                "context_length_exceeded",
                "This model's maximum context length is 8192 tokens",
            )),
            "upstream_rejected",
        ),
        (
            "content_filter",
            Some(rejected("content_filter", "The response was filtered")),
            "upstream_rejected",
        ),
        ("connect_error", None, "upstream_unavailable"),
    ];
    for (condition, reply, outcome) in cases {
        let mock = match &reply {
            Some(reply) => Some(MockUpstream::openai().always(reply.clone()).start().await),
            None => None,
        };
        let primary = match &mock {
            Some(mock) => on(mock, ProviderKind::OpenAi, "gpt"),
            None => unreachable().await,
        };
        let backup_mock = MockUpstream::anthropic().start().await;
        let backup = on(&backup_mock, ProviderKind::Anthropic, "claude");
        let only = Condition::parse(condition).unwrap();
        let route_policy = policy(|p| {
            p.fallback_on = Conditions::new([only]);
            p.timeouts.first_token = Duration::from_millis(300);
        });
        let gw = TestGateway::builder()
            .route_with(route(
                vec![primary.clone()],
                vec![backup.clone()],
                route_policy,
            ))
            .start()
            .await;

        for stream in [false, true] {
            let res = gw.openai("/v1/chat/completions", chat(stream)).await;
            assert_eq!(res.status(), 200, "{condition}");
            assert_eq!(
                res.headers()["x-sluice-deployment"],
                backup.name.as_str(),
                "{condition}"
            );
            assert_eq!(res.headers()["x-sluice-attempts"], "2", "{condition}");
            let text = res.text().await.unwrap();
            let content = if stream {
                openai_stream_text(&sse_data(&text))
            } else {
                text
            };
            assert!(content.contains("You said: hi"), "{condition}: {content}");
        }
        assert_eq!(backup_mock.hits(), 2, "{condition}");
        if let Some(mock) = &mock {
            assert_eq!(mock.hits(), 2, "{condition}");
        }
        let records = gw.finish().await;
        for record in &records {
            assert_eq!(
                steps(record),
                [
                    step(&primary, outcome, Some("fallback")),
                    step(&backup, "ok", None)
                ],
                "{condition}"
            );
            assert_eq!(record.attempts[0].role.map(|r| r.as_str()), Some("pool"));
            assert_eq!(
                record.attempts[1].role.map(|r| r.as_str()),
                Some("fallback")
            );
        }
    }
}

#[tokio::test]
async fn a_stream_that_dies_before_its_first_content_still_falls_back() {
    // The opening events (OpenAI's role chunk, Anthropic's message_start) carry no content:
    // held back, so a cut right after them is not yet a failure the client has seen.
    let early_cut = Reply::Text("never".into()).with_fault(Fault {
        cut_after_events: Some(1),
        ..Fault::default()
    });
    let primary_mock = MockUpstream::anthropic().always(early_cut).start().await;
    let backup_mock = MockUpstream::openai().start().await;
    let (primary, backup) = (
        on(&primary_mock, ProviderKind::Anthropic, "claude"),
        on(&backup_mock, ProviderKind::OpenAi, "gpt"),
    );
    let gw = TestGateway::builder()
        .route_with(route(
            vec![primary.clone()],
            vec![backup.clone()],
            policy(|_| {}),
        ))
        .start()
        .await;
    let res = gw.openai("/v1/chat/completions", chat(true)).await;
    assert_eq!(res.status(), 200);
    let text = openai_stream_text(&sse_data(&res.text().await.unwrap()));
    assert!(text.contains("You said: hi"), "{text}");
    let records = gw.finish().await;
    assert_eq!(
        steps(&records[0]),
        [
            step(&primary, "upstream_unavailable", Some("fallback")),
            step(&backup, "ok", None)
        ]
    );
    assert_eq!(records[0].error_code, None);
}

#[tokio::test]
async fn a_condition_the_route_does_not_name_ends_the_request_and_says_why() {
    let primary_mock = MockUpstream::openai()
        .always(rejected(
            "context_length_exceeded",
            "maximum context length exceeded",
        ))
        .start()
        .await;
    let backup_mock = MockUpstream::openai().start().await;
    let (primary, backup) = (
        on(&primary_mock, ProviderKind::OpenAi, "gpt"),
        on(&backup_mock, ProviderKind::OpenAi, "gpt-big"),
    );
    // The default conditions are the transient ones: context length is opt-in.
    let gw = TestGateway::builder()
        .route_with(route(vec![primary.clone()], vec![backup], policy(|_| {})))
        .start()
        .await;
    let res = gw.openai("/v1/chat/completions", chat(false)).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "maximum context length exceeded");
    assert_eq!(backup_mock.hits(), 0);
    let records = gw.finish().await;
    assert_eq!(
        steps(&records[0]),
        [step(
            &primary,
            "upstream_rejected",
            Some("condition_not_enabled")
        )]
    );
}

#[tokio::test]
async fn an_open_circuit_sends_traffic_straight_to_the_fallback_and_shows_in_health() {
    let primary_mock = MockUpstream::openai()
        .always(status(500, None))
        .start()
        .await;
    let backup_mock = MockUpstream::openai().start().await;
    let (primary, backup) = (
        on(&primary_mock, ProviderKind::OpenAi, "gpt"),
        on(&backup_mock, ProviderKind::OpenAi, "gpt"),
    );
    let gw = TestGateway::builder()
        .breaker(BreakerPolicy {
            enabled: true,
            consecutive_failures: 2,
            open_for: Duration::from_secs(60),
            ..breaker_off()
        })
        .route_with(route(
            vec![primary.clone()],
            vec![backup.clone()],
            policy(|_| {}),
        ))
        .start()
        .await;
    for _ in 0..4 {
        let res = gw.openai("/v1/chat/completions", chat(false)).await;
        assert_eq!(res.status(), 200);
    }
    // Two failures opened the circuit: the last two requests never reached the primary.
    assert_eq!((primary_mock.hits(), backup_mock.hits()), (2, 4));
    let health: Value = gw
        .client
        .get(gw.metrics_url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");
    let deployments = health["deployments"].as_array().unwrap();
    let primary_health = deployments
        .iter()
        .find(|d| d["deployment"] == primary.name.as_str())
        .unwrap();
    assert_eq!(primary_health["breaker"], "open");
    assert_eq!(primary_health["breaker_opened"], 1);
    assert!(primary_health["breaker_retry_in_ms"].as_u64().unwrap() > 50_000);
    let backup_health = deployments
        .iter()
        .find(|d| d["deployment"] == backup.name.as_str())
        .unwrap();
    assert_eq!(backup_health["breaker"], "closed");
    assert_eq!(backup_health["attempts"], 4);
    let metrics = gw
        .client
        .get(gw.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = |name: &str, deployment: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("deployment=\"{deployment}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(
        series("sluice_deployment_breaker_state{", &primary.name).as_deref(),
        Some("2"),
        "{metrics}"
    );
    assert_eq!(
        series("sluice_deployment_breaker_state{", &backup.name).as_deref(),
        Some("0")
    );
    assert!(
        metrics.contains("sluice_upstream_attempts_total{deployment=\"")
            && metrics.contains("outcome=\"skipped\""),
        "{metrics}"
    );

    let records = gw.finish().await;
    assert_eq!(
        steps(&records[1]),
        [
            step(&primary, "upstream_unavailable", Some("fallback")),
            step(&backup, "ok", None)
        ]
    );
    assert_eq!(
        steps(&records[3]),
        [
            step(&primary, "skipped", Some("circuit_open")),
            step(&backup, "ok", None)
        ]
    );
    assert_eq!(records[3].attempts[0].latency_us, 0);
}

#[tokio::test]
async fn every_circuit_open_answers_503_with_retry_after_in_the_callers_dialect() {
    let mock = MockUpstream::openai()
        .always(status(500, None))
        .start()
        .await;
    let gw = TestGateway::builder()
        .breaker(BreakerPolicy {
            enabled: true,
            consecutive_failures: 1,
            open_for: Duration::from_secs(30),
            ..breaker_off()
        })
        .route_with(route(
            vec![on(&mock, ProviderKind::OpenAi, "gpt")],
            vec![],
            policy(|_| {}),
        ))
        .start()
        .await;
    let msg =
        json!({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        gw.anthropic("/v1/messages", msg.clone()).await.status(),
        502
    );
    let res = gw.anthropic("/v1/messages", msg).await;
    assert_eq!(res.status(), 503);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit_open"),
        "{body}"
    );
    assert_eq!(mock.hits(), 1);
    let records = gw.finish().await;
    assert_eq!(
        records[1].error_code.map(|c| c.as_str()),
        Some("route_unavailable")
    );
}

#[tokio::test]
async fn retries_back_off_and_stop_at_the_budget() {
    let mock = MockUpstream::openai()
        .always(status(500, None))
        .start()
        .await;
    let only = on(&mock, ProviderKind::OpenAi, "gpt");
    let route_policy = policy(|p| {
        p.retry.max_attempts = Some(3);
        p.retry.backoff_initial = Duration::from_millis(1);
        p.retry.backoff_max = Duration::from_millis(5);
        // No share of the traffic, two retries per window in all.
        p.retry.budget.ratio = 0.0;
        p.retry.budget.min_retries = 2;
    });
    let gw = TestGateway::builder()
        .route_with(route(vec![only.clone()], vec![], route_policy))
        .start()
        .await;
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let res = gw.openai("/v1/chat/completions", chat(false)).await;
        assert_eq!(res.status(), 502);
        // An error answer says where the request went, as far as it got.
        let headers = res.headers();
        assert_eq!(headers["x-sluice-alias"], "chat");
        assert_eq!(headers["x-sluice-deployment"], only.name.as_str());
        assert_eq!(headers["x-sluice-provider"], "openai");
        attempts.push(headers["x-sluice-attempts"].to_str().unwrap().to_owned());
    }
    assert_eq!(attempts, ["3", "1", "1"]);
    // 3 attempts (2 retries spend the budget), then 1 each: an outage is not multiplied.
    assert_eq!(mock.hits(), 5);
    let health: Value = gw
        .client
        .get(gw.metrics_url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let budget = &health["routes"]["chat"]["retry_budget"][0];
    assert_eq!(
        (
            budget["requests"].as_u64(),
            budget["retries"].as_u64(),
            budget["available"].as_u64(),
            budget["refused"].as_u64()
        ),
        (Some(3), Some(2), Some(0), Some(2))
    );
    let records = gw.finish().await;
    assert_eq!(
        steps(&records[0]),
        [
            step(&only, "upstream_unavailable", Some("retry")),
            step(&only, "upstream_unavailable", Some("retry")),
            step(&only, "upstream_unavailable", Some("max_attempts")),
        ]
    );
    assert_eq!(
        steps(&records[1]),
        [step(
            &only,
            "upstream_unavailable",
            Some("retry_budget_exhausted")
        )]
    );
}

#[tokio::test]
async fn retry_after_keeps_requests_away_from_a_rate_limited_deployment() {
    let mock = MockUpstream::openai().start().await;
    mock.push_reply(status(429, Some(2)));
    let only = on(&mock, ProviderKind::OpenAi, "gpt");
    let gw = TestGateway::builder()
        .route_with(route(vec![only.clone()], vec![], policy(|_| {})))
        .start()
        .await;
    let first = gw.openai("/v1/chat/completions", chat(false)).await;
    assert_eq!(first.status(), 429);
    // The next request does not go out at all until the provider's Retry-After has passed.
    let second = gw.openai("/v1/chat/completions", chat(false)).await;
    assert_eq!(second.status(), 429);
    let retry_after: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after));
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cooling_down"),
        "{body}"
    );
    assert_eq!(mock.hits(), 1);
    let records = gw.finish().await;
    assert_eq!(
        steps(&records[0]),
        [step(&only, "rate_limit_exceeded", Some("max_attempts"))]
    );
    assert_eq!(
        steps(&records[1]),
        [step(&only, "skipped", Some("cooling_down"))]
    );
}

#[tokio::test]
async fn a_full_queue_answers_at_once_or_moves_to_the_fallback() {
    let slow = Reply::Text("slow".into()).with_fault(Fault {
        delay_ms: 600,
        ..Fault::default()
    });
    let primary_mock = MockUpstream::openai().always(slow).start().await;
    let backup_mock = MockUpstream::openai().start().await;
    let (primary, backup) = (
        on(&primary_mock, ProviderKind::OpenAi, "gpt"),
        on(&backup_mock, ProviderKind::OpenAi, "gpt"),
    );
    let gw = TestGateway::builder()
        .capacity(CapacityPolicy {
            max_concurrency: Some(1),
            max_queue: 0,
            queue_timeout: Duration::from_secs(1),
        })
        .route_with(TestRoute {
            alias: "alone".into(),
            pool: vec![primary.clone()],
            fallbacks: vec![],
            policy: Some(policy(|_| {})),
        })
        .route_with(route(
            vec![primary.clone()],
            vec![backup.clone()],
            policy(|_| {}),
        ))
        .start()
        .await;
    let busy = gw.openai(
        "/v1/chat/completions",
        json!({"model": "alone", "messages": [{"role": "user", "content": "hold"}]}),
    );
    let later = async {
        primary_mock.wait_hits(1).await;
        let alone = gw
            .openai(
                "/v1/chat/completions",
                json!({"model": "alone", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        let with_fallback = gw.openai("/v1/chat/completions", chat(false)).await;
        (alone, with_fallback)
    };
    let (busy, (alone, with_fallback)) = tokio::join!(busy, later);
    assert_eq!(busy.status(), 200);
    assert_eq!(alone.status(), 503);
    assert!(alone.headers().contains_key("retry-after"));
    let body: Value = alone.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queue_full"),
        "{body}"
    );
    assert_eq!(with_fallback.status(), 200);
    assert_eq!(
        with_fallback.headers()["x-sluice-deployment"],
        backup.name.as_str()
    );
    assert_eq!((primary_mock.hits(), backup_mock.hits()), (1, 1));
    let records = gw.finish().await;
    let by_alias = |alias: &str, status: u16| {
        records
            .iter()
            .find(|r| r.alias.as_deref() == Some(alias) && r.status == status)
            .unwrap()
    };
    assert_eq!(
        steps(by_alias("alone", 503)),
        [step(&primary, "skipped", Some("queue_full"))]
    );
    assert_eq!(
        steps(by_alias("chat", 200)),
        [
            step(&primary, "skipped", Some("queue_full")),
            step(&backup, "ok", None)
        ]
    );
}

#[tokio::test]
async fn a_request_may_shorten_its_timeouts_by_header() {
    let slow = Reply::Text("late".into()).with_fault(Fault {
        delay_ms: 2_000,
        ..Fault::default()
    });
    let mock = MockUpstream::openai().always(slow).start().await;
    let gw = TestGateway::builder()
        .route_with(route(
            vec![on(&mock, ProviderKind::OpenAi, "gpt")],
            vec![],
            policy(|_| {}),
        ))
        .start()
        .await;
    let started = std::time::Instant::now();
    let res = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .header("x-sluice-first-token-timeout-ms", "150")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
    // Well before the mock's 2 s: the header's 150 ms, not the route's 5 s, applied.
    assert!(started.elapsed() < Duration::from_millis(1_500));
    let bad = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .header("x-sluice-timeout-ms", "soon")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "header `x-sluice-timeout-ms` must be a whole number of milliseconds greater than 0"
    );
    let records = gw.finish().await;
    assert_eq!(
        records[0].error_code.map(|c| c.as_str()),
        Some("upstream_timeout")
    );
    assert_eq!(records[1].status, 400);
}

#[tokio::test]
async fn the_total_timeout_ends_a_running_stream_with_an_error_event() {
    let dribble = Reply::Text("one two three four five six seven eight nine ten".into())
        .with_fault(Fault {
            chunk_delay_ms: 400,
            ..Fault::default()
        });
    let mock = MockUpstream::anthropic().always(dribble).start().await;
    let gw = TestGateway::builder()
        .route_with(route(
            vec![on(&mock, ProviderKind::Anthropic, "claude")],
            vec![],
            policy(|p| p.timeouts.total = Duration::from_millis(1_000)),
        ))
        .start()
        .await;
    let res = gw.anthropic("/v1/messages", json!({"model": "chat", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("timeout_error"), "{text}");
    assert!(
        !text.contains("message_stop"),
        "not passed off as complete: {text}"
    );
    let records = gw.finish().await;
    assert_eq!(records[0].status, 200);
    assert_eq!(
        records[0].error_code.map(|c| c.as_str()),
        Some("upstream_timeout")
    );
}

#[tokio::test]
async fn a_hedge_serves_the_first_answer_and_cancels_the_other_upstream() {
    let stalled = Reply::Text("too late".into()).with_fault(Fault {
        first_token_ms: 3_000,
        ..Fault::default()
    });
    let primary_mock = MockUpstream::openai().always(stalled).start().await;
    let backup_mock = MockUpstream::openai().start().await;
    // Priced models, and a token budget: both attempts are charged.
    let (primary, backup) = (
        on(&primary_mock, ProviderKind::OpenAi, "gpt-4o-mini"),
        on(&backup_mock, ProviderKind::OpenAi, "gpt-4o-mini"),
    );
    let route_policy = policy(|p| {
        p.hedge = Some(HedgePolicy {
            after: Duration::from_millis(100),
            percentile: None,
        });
    });
    let gw = TestGateway::builder()
        .route_with(route(
            vec![primary.clone()],
            vec![backup.clone()],
            route_policy,
        ))
        .budget(crate::support::budget(
            "team:qa", "tokens", "day", 1_000_000,
        ))
        .start()
        .await;
    let gateway = gw.gateway.clone();
    let res = gw.openai("/v1/chat/completions", chat(true)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-sluice-deployment"], backup.name.as_str());
    let text = openai_stream_text(&sse_data(&res.text().await.unwrap()));
    assert!(text.contains("You said: hi"), "{text}");
    // The primary's stream was dropped: the mock sees its client leave.
    tokio::time::timeout(Duration::from_secs(10), primary_mock.wait_cancelled(1))
        .await
        .expect("the losing attempt is cancelled upstream");
    let records = gw.finish().await;
    let attempts: &[AttemptRecord] = &records[0].attempts;
    assert_eq!(
        steps(&records[0]),
        [
            step(&backup, "ok", None),
            step(&primary, "cancelled", Some("lost_hedge"))
        ]
    );
    assert!(attempts[0].hedge && !attempts[1].hedge);
    assert!(
        attempts[1].input_tokens.unwrap() > 0,
        "the cancelled attempt's prompt is counted"
    );
    assert!(attempts[0].output_tokens.unwrap() > 0);
    // The loser's prompt is paid for: in the cost and in what the budget settled to.
    let attempt_costs: i64 = attempts.iter().filter_map(|a| a.cost_micros).sum();
    assert!(attempts[1].cost_micros.unwrap() > 0);
    assert_eq!(records[0].cost_micros, Some(attempt_costs));
    let limit = sluice_policy::Limit::tokens(
        sluice_policy::Scope::Team("qa".into()),
        1_000_000,
        sluice_policy::Period::Day,
    )
    .unwrap();
    let record_tokens = records[0].input_tokens.unwrap()
        + records[0].output_tokens.unwrap()
        + attempts[1].input_tokens.unwrap();
    assert_eq!(
        gateway.policy().usage(&limit).await.unwrap(),
        u64::from(record_tokens)
    );
}

#[tokio::test]
async fn a_hedge_that_loses_is_cancelled_and_the_primary_answers() {
    let primary_mock = MockUpstream::openai()
        .always(Reply::Text("primary".into()).with_fault(Fault {
            delay_ms: 300,
            ..Fault::default()
        }))
        .start()
        .await;
    let backup_mock = MockUpstream::openai()
        .always(Reply::Text("backup".into()).with_fault(Fault {
            delay_ms: 3_000,
            ..Fault::default()
        }))
        .start()
        .await;
    let (primary, backup) = (
        on(&primary_mock, ProviderKind::OpenAi, "gpt"),
        on(&backup_mock, ProviderKind::OpenAi, "gpt"),
    );
    let route_policy = policy(|p| {
        p.hedge = Some(HedgePolicy {
            after: Duration::from_millis(50),
            percentile: None,
        });
    });
    let gw = TestGateway::builder()
        .route_with(route(
            vec![primary.clone()],
            vec![backup.clone()],
            route_policy,
        ))
        .start()
        .await;
    let res = gw.openai("/v1/chat/completions", chat(false)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-sluice-deployment"], primary.name.as_str());
    assert_eq!(res.headers()["x-sluice-attempts"], "2");
    assert_eq!((primary_mock.hits(), backup_mock.hits()), (1, 1));
    let records = gw.finish().await;
    assert_eq!(
        steps(&records[0]),
        [
            step(&primary, "ok", None),
            step(&backup, "cancelled", Some("lost_hedge"))
        ]
    );
    assert!(records[0].attempts[1].hedge);
}

#[tokio::test]
async fn drills_shadow_live_traffic_to_each_fallback_with_their_own_records() {
    let primary_mock = MockUpstream::openai().start().await;
    let good_mock = MockUpstream::anthropic().start().await;
    let broken_mock = MockUpstream::openai()
        .always(Reply::Malformed)
        .start()
        .await;
    let (primary, good, broken) = (
        on(&primary_mock, ProviderKind::OpenAi, "gpt"),
        on(&good_mock, ProviderKind::Anthropic, "claude"),
        on(&broken_mock, ProviderKind::OpenAi, "gpt-old"),
    );
    let gw = TestGateway::builder()
        .route_with(route(
            vec![primary.clone()],
            vec![good.clone(), broken.clone()],
            policy(|p| p.drill_share = 1.0),
        ))
        .start()
        .await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
    let body = json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "Where?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": true}},
    });
    let res = gw.openai("/v1/chat/completions", body).await;
    assert_eq!(res.status(), 200);
    let live_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(res.headers()["x-sluice-deployment"], primary.name.as_str());
    tokio::time::timeout(Duration::from_secs(5), async {
        good_mock.wait_hits(1).await;
        broken_mock.wait_hits(1).await;
    })
    .await
    .unwrap();
    let records = gw.finish().await;
    assert_eq!(records.len(), 3);
    let live = records.iter().find(|r| r.id == live_id).unwrap();
    assert_eq!(live.drill_of, None);
    assert_eq!(live.schema_valid, Some(true));
    assert_eq!(
        live.attempts.len(),
        1,
        "drills are not attempts of the live request"
    );
    let drill = |d: &Deployment| {
        records
            .iter()
            .find(|r| r.deployment.as_deref() == Some(d.name.as_str()) && r.drill_of.is_some())
            .unwrap()
    };
    let ok = drill(&good);
    assert_eq!(ok.drill_of.as_deref(), Some(live_id.as_str()));
    assert_eq!(
        (
            ok.status,
            ok.schema_valid,
            ok.key_id.as_deref(),
            ok.team.as_deref()
        ),
        (200, Some(true), None, None)
    );
    assert!(ok.output_tokens.unwrap() > 0);
    let bad = drill(&broken);
    assert_eq!(
        bad.error_code.map(|c| c.as_str()),
        Some("upstream_malformed_response")
    );
    assert_eq!(bad.schema_valid, None);
    assert_eq!(
        bad.attempts[0].outcome.as_str(),
        "upstream_malformed_response"
    );
}

#[tokio::test]
async fn the_clients_trace_continues_through_each_attempt_to_the_provider() {
    let primary_mock = MockUpstream::openai()
        .always(status(500, None))
        .start()
        .await;
    let backup_mock = MockUpstream::anthropic().start().await;
    let (primary, backup) = (
        on(&primary_mock, ProviderKind::OpenAi, "gpt"),
        on(&backup_mock, ProviderKind::Anthropic, "claude"),
    );
    let gw = TestGateway::builder()
        .route_with(route(vec![primary], vec![backup], policy(|_| {})))
        .start()
        .await;
    let res = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = |mock: &MockUpstream| {
        mock.last_request()
            .unwrap()
            .header("traceparent")
            .unwrap()
            .to_owned()
    };
    let (to_primary, to_backup) = (sent(&primary_mock), sent(&backup_mock));
    let records = gw.finish().await;
    let record = &records[0];
    assert_eq!(
        record.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(record.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    let own_span = record.span_id.clone().unwrap();
    assert_eq!(own_span.len(), 16);
    // Each provider was told its parent is the attempt's own span, in the client's trace.
    for (attempt, header) in record.attempts.iter().zip([to_primary, to_backup]) {
        let span = attempt.span_id.clone().unwrap();
        assert_ne!(span, own_span);
        assert_eq!(
            header,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01")
        );
    }
    assert!(record.attempts[1].offset_us.unwrap() >= record.attempts[0].offset_us.unwrap());
}

#[tokio::test]
async fn a_provider_answering_garbage_shows_in_the_recent_view_of_health() {
    let broken_mock = MockUpstream::openai()
        .always(Reply::Malformed)
        .start()
        .await;
    let good_mock = MockUpstream::openai().start().await;
    let (broken, good) = (
        on(&broken_mock, ProviderKind::OpenAi, "gpt"),
        on(&good_mock, ProviderKind::OpenAi, "gpt"),
    );
    let gw = TestGateway::builder()
        .route_with(route(
            vec![broken.clone()],
            vec![good.clone()],
            policy(|_| {}),
        ))
        .start()
        .await;
    for _ in 0..10 {
        assert_eq!(
            gw.openai("/v1/chat/completions", chat(false))
                .await
                .status(),
            200
        );
    }
    let health: Value = gw
        .client
        .get(gw.metrics_url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let of = |d: &Deployment| {
        health["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["deployment"] == d.name.as_str())
            .unwrap()["recent"]
            .clone()
    };
    let bad = of(&broken);
    assert_eq!(
        (bad["attempts"].as_u64(), bad["errors"].as_u64()),
        (Some(10), Some(10))
    );
    assert_eq!(bad["malformed_rate"], 1.0);
    assert_eq!(bad["errors_by_kind"]["upstream_malformed_response"], 10);
    let ok = of(&good);
    assert_eq!(
        (ok["attempts"].as_u64(), ok["error_rate"].as_f64()),
        (Some(10), Some(0.0))
    );
    assert!(ok["latency_p99_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn bodies_are_kept_only_where_the_route_or_key_asks_and_within_the_cap() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route_with(TestRoute {
            alias: "kept".into(),
            pool: vec![on(&mock, ProviderKind::OpenAi, "gpt")],
            fallbacks: vec![],
            policy: Some(policy(|p| p.log_bodies = Some(4096))),
        })
        .route_with(TestRoute {
            alias: "capped".into(),
            pool: vec![on(&mock, ProviderKind::OpenAi, "gpt")],
            fallbacks: vec![],
            policy: Some(policy(|p| p.log_bodies = Some(32))),
        })
        .route_with(route(
            vec![on(&mock, ProviderKind::OpenAi, "gpt")],
            vec![],
            policy(|_| {}),
        ))
        .start()
        .await;
    let body = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "keep me"}]});
    let id = |res: &reqwest::Response| res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let kept = gw.openai("/v1/chat/completions", body("kept", false)).await;
    let kept_id = id(&kept);
    let streamed = gw.openai("/v1/chat/completions", body("kept", true)).await;
    let streamed_id = id(&streamed);
    let streamed_text = streamed.text().await.unwrap();
    let capped_id = id(&gw
        .openai("/v1/chat/completions", body("capped", false))
        .await);
    let plain_id = id(&gw.openai("/v1/chat/completions", body("chat", false)).await);
    // A key that keeps bodies, on a route that does not.
    let logging = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "audit".into(),
            log_bodies: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let by_key = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&logging.secret)
        .json(&body("chat", false))
        .send()
        .await
        .unwrap();
    let by_key_id = id(&by_key);
    let store = gw.store.clone();
    gw.finish().await;

    let bodies = |id: String| {
        let store = store.clone();
        async move { store.queries.record(&id).await.unwrap().unwrap().bodies }
    };
    let whole = bodies(kept_id).await.unwrap();
    assert!(whole.request.unwrap().contains("keep me"));
    assert!(whole.response.unwrap().contains("You said: keep me"));
    assert!(!whole.truncated);
    let stream = bodies(streamed_id).await.unwrap();
    let kept_stream = stream.response.unwrap();
    assert!(
        kept_stream.starts_with("data: "),
        "the events as received: {kept_stream}"
    );
    assert!(openai_stream_text(&sse_data(&kept_stream)).contains("You said: keep me"));
    assert!(openai_stream_text(&sse_data(&streamed_text)).contains("You said: keep me"));
    let capped = bodies(capped_id).await.unwrap();
    assert_eq!(capped.request.unwrap().len(), 32);
    assert!(capped.truncated);
    assert_eq!(bodies(plain_id).await, None, "off by default");
    assert!(
        bodies(by_key_id)
            .await
            .unwrap()
            .request
            .unwrap()
            .contains("keep me")
    );
}

/// No single key can take a deployment away from everyone: one key's requests that make the
/// upstream fail never open the breaker on their own; failures from a second key do.
#[tokio::test]
async fn one_keys_failures_do_not_open_the_breaker_for_everyone() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .breaker(BreakerPolicy {
            enabled: true,
            consecutive_failures: 3,
            open_for: Duration::from_secs(60),
            min_callers: 2,
            ..breaker_off()
        })
        .route("chat", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .start()
        .await;
    let other = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "other".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let as_other = || {
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&other.secret)
            .json(&chat(false))
            .send()
    };

    for _ in 0..5 {
        mock.push_reply(status(500, None));
        let res = gw.openai("/v1/chat/completions", chat(false)).await;
        assert_eq!(res.status(), 502);
    }
    // Five consecutive failures, all one key's: the other key is still served.
    let res = as_other().await.unwrap();
    assert_eq!(res.status(), 200);

    // Now the other key's requests fail too: failures from two callers within the window, so
    // the deployment is unhealthy and its circuit opens for everyone.
    for _ in 0..3 {
        mock.push_reply(status(500, None));
        assert_eq!(as_other().await.unwrap().status(), 502);
    }
    let res = gw.openai("/v1/chat/completions", chat(false)).await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_unavailable");
}
