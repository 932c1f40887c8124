use std::time::Duration;

use serde_json::{Value, json};
use sluice_testkit::{Chaos, MockUpstream, Reply};
use tokio::time::Instant;

use crate::{json, post, sse};

fn openai_chat(mock: &MockUpstream, text: &str, stream: bool) -> (String, Value) {
    (
        format!("{}/v1/chat/completions", mock.base_url()),
        json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": text}]}),
    )
}

fn anthropic_chat(mock: &MockUpstream, text: &str, stream: bool) -> (String, Value) {
    (
        format!("{}/v1/messages", mock.base_url()),
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "stream": stream,
            "messages": [{"role": "user", "content": text}]
        }),
    )
}

fn failing(ratio: f64, status: u16) -> Chaos {
    Chaos {
        fail_ratio: ratio,
        fail_status: status,
        ..Chaos::default()
    }
}

/// Sends `count` requests one after another; their statuses and error types.
async fn statuses(url: &str, body: &Value, count: usize) -> Vec<(u16, Option<String>)> {
    let mut seen = Vec::new();
    for _ in 0..count {
        let response = post(url, body, &[]).await;
        let status = response.status().as_u16();
        let kind = json(response).await["error"]["type"]
            .as_str()
            .map(str::to_owned);
        seen.push((status, kind));
    }
    seen
}

#[tokio::test]
async fn half_of_the_requests_fail_with_500_in_both_dialects() {
    let cases = [
        (MockUpstream::openai(), "server_error"),
        (MockUpstream::anthropic(), "api_error"),
    ];
    for (builder, error_type) in cases {
        let mock = builder.chaos(failing(0.5, 500)).start().await;
        let (url, body) = if mock.serves(sluice_testkit::MockDialect::OpenAi) {
            openai_chat(&mock, "hi", false)
        } else {
            anthropic_chat(&mock, "hi", false)
        };
        let seen = statuses(&url, &body, 10).await;
        let failed: Vec<usize> = (0..10).filter(|&i| seen[i].0 == 500).collect();
        // Every second request, starting with the second.
        assert_eq!(failed, [1, 3, 5, 7, 9], "{seen:?}");
        assert!(seen.iter().all(|(status, _)| [200, 500].contains(status)));
        for (status, kind) in &seen {
            if *status == 500 {
                assert_eq!(kind.as_deref(), Some(error_type));
            }
        }
    }
}

#[tokio::test]
async fn failures_use_the_configured_status_on_streams_too() {
    let mock = MockUpstream::both().chaos(failing(1.0, 503)).start().await;
    let (url, body) = openai_chat(&mock, "hi", true);
    let response = post(&url, &body, &[]).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/json");
    let (url, body) = anthropic_chat(&mock, "hi", true);
    let response = post(&url, &body, &[]).await;
    assert_eq!(response.status(), 503);
    assert_eq!(json(response).await["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn queued_replies_and_directives_bypass_chaos_and_are_not_counted() {
    let mock = MockUpstream::openai()
        .chaos(failing(0.5, 500))
        .always(Reply::text("steady"))
        .reply(Reply::text("queued"))
        .start()
        .await;
    let (url, plain) = openai_chat(&mock, "hi", false);
    let (_, directed) = openai_chat(&mock, "#mock text=directed", false);
    let content = |reply: &Value| reply["choices"][0]["message"]["content"].clone();

    let reply = json(post(&url, &plain, &[]).await).await;
    assert_eq!(content(&reply), "queued");
    let reply = json(post(&url, &directed, &[]).await).await;
    assert_eq!(content(&reply), "directed");
    // The first two requests chaos numbers: 0 passes (with the `always` reply), 1 fails.
    let reply = json(post(&url, &plain, &[]).await).await;
    assert_eq!(content(&reply), "steady");
    assert_eq!(post(&url, &plain, &[]).await.status(), 500);
}

/// Time to the response headers, on the paused test clock.
async fn headers_after(url: &str, body: &Value) -> (Duration, reqwest::Response) {
    let started = Instant::now();
    let response = post(url, body, &[]).await;
    (started.elapsed(), response)
}

#[tokio::test(start_paused = true)]
async fn stalls_delay_the_headers_of_their_share() {
    let stall = Duration::from_millis(5000);
    let mock = MockUpstream::both()
        .chaos(Chaos {
            stall_ratio: 0.25,
            stall_ms: 5000,
            ..Chaos::default()
        })
        .start()
        .await;
    let (url, body) = openai_chat(&mock, "hi", false);
    let mut stalled = Vec::new();
    for i in 0..8 {
        let (elapsed, response) = headers_after(&url, &body).await;
        assert_eq!(response.status(), 200);
        json(response).await;
        if elapsed >= stall {
            stalled.push(i);
        }
    }
    // Every fourth request, one ahead of where a 0.25 failure share would fall.
    assert_eq!(stalled, [2, 6]);

    // Streams: no first byte until the stall is over, then a normal stream.
    let (url, body) = anthropic_chat(&mock, "hi", true);
    let mut elapsed = Duration::ZERO;
    let mut response = None;
    for _ in 0..4 {
        let (took, r) = headers_after(&url, &body).await;
        if took >= stall {
            (elapsed, response) = (took, Some(r));
            break;
        }
        sse(r).await;
    }
    assert!(elapsed >= stall, "a stalled stream within four requests");
    let events = sse(response.unwrap()).await;
    assert_eq!(events.last().unwrap().name.as_deref(), Some("message_stop"));
}

#[tokio::test(start_paused = true)]
async fn a_request_in_both_shares_waits_then_fails() {
    let mock = MockUpstream::openai()
        .chaos(Chaos {
            fail_ratio: 1.0,
            fail_status: 500,
            stall_ratio: 1.0,
            stall_ms: 2000,
        })
        .start()
        .await;
    let (url, body) = openai_chat(&mock, "hi", false);
    let (elapsed, response) = headers_after(&url, &body).await;
    assert!(elapsed >= Duration::from_millis(2000), "{elapsed:?}");
    assert_eq!(response.status(), 500);
}
