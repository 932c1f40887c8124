use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_testkit::{Fault, MockUpstream, Reply};

use crate::{json, parse_sse, post, read_until_error, sse};

fn openai_chat(mock: &MockUpstream, text: &str, stream: bool) -> (String, Value) {
    (
        format!("{}/v1/chat/completions", mock.base_url()),
        json!({
            "model": "gpt-4o",
            "stream": stream,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": text}]
        }),
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

#[tokio::test]
async fn malformed_replies_are_not_json() {
    let mock = MockUpstream::both().always(Reply::Malformed).start().await;
    for (url, body) in [
        openai_chat(&mock, "hi", false),
        anthropic_chat(&mock, "hi", false),
    ] {
        let response = post(&url, &body, &[]).await;
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        assert!(serde_json::from_slice::<Value>(&bytes).is_err());
    }
    for (url, body) in [
        openai_chat(&mock, "hi", true),
        anthropic_chat(&mock, "hi", true),
    ] {
        let events = sse(post(&url, &body, &[]).await).await;
        let broken = events
            .iter()
            .filter(|e| e.data != "[DONE]" && serde_json::from_str::<Value>(&e.data).is_err())
            .count();
        assert_eq!(broken, 1, "{events:?}");
    }
}

#[tokio::test]
async fn cut_stream_ends_in_an_error_without_terminal_event() {
    let cut = Fault {
        cut_after_events: Some(3),
        ..Fault::default()
    };
    let mock = MockUpstream::both()
        .always(Reply::text("one two three four five six seven").with_fault(cut))
        .start()
        .await;

    let (url, body) = openai_chat(&mock, "hi", true);
    let (text, failed) = read_until_error(post(&url, &body, &[]).await).await;
    assert!(failed, "the client must see an incomplete body");
    let events = parse_sse(&text);
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.data != "[DONE]"));

    let (url, body) = anthropic_chat(&mock, "hi", true);
    let (text, failed) = read_until_error(post(&url, &body, &[]).await).await;
    assert!(failed);
    let names: Vec<String> = parse_sse(&text)
        .into_iter()
        .filter_map(|e| e.name)
        .collect();
    assert_eq!(names, ["message_start", "content_block_start", "ping"]);
    // A cut is the mock's doing, not a client cancel.
    assert_eq!(mock.cancelled(), 0);
}

#[tokio::test]
async fn cut_non_stream_body_is_incomplete() {
    let cut = Fault {
        cut_after_events: Some(0),
        ..Fault::default()
    };
    let mock = MockUpstream::openai()
        .reply(Reply::text("hello").with_fault(cut))
        .start()
        .await;
    let (url, body) = openai_chat(&mock, "hi", false);
    let (text, failed) = read_until_error(post(&url, &body, &[]).await).await;
    assert!(failed);
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[tokio::test]
async fn delays_headers_and_first_token() {
    let fault = Fault {
        delay_ms: 150,
        first_token_ms: 200,
        ..Fault::default()
    };
    let mock = MockUpstream::anthropic()
        .reply(Reply::text("hello there").with_fault(fault))
        .start()
        .await;
    let (url, body) = anthropic_chat(&mock, "hi", true);
    let started = Instant::now();
    let mut response = post(&url, &body, &[]).await;
    let headers_at = started.elapsed();
    assert!(headers_at >= Duration::from_millis(150), "{headers_at:?}");

    let mut received = String::new();
    while !received.contains("content_block_delta") {
        let chunk = response.chunk().await.unwrap().unwrap();
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let first_token_at = started.elapsed();
    assert!(
        first_token_at >= headers_at + Duration::from_millis(200),
        "{headers_at:?} then {first_token_at:?}"
    );
}

#[tokio::test]
async fn counts_streams_the_client_abandons() {
    let slow = Fault {
        chunk_delay_ms: 30,
        ..Fault::default()
    };
    let mock = MockUpstream::openai()
        .always(Reply::text("a b c d e f g h i j k l m n o p").with_fault(slow))
        .start()
        .await;
    let (url, body) = openai_chat(&mock, "hi", true);
    let mut response = post(&url, &body, &[]).await;
    response.chunk().await.unwrap().unwrap();
    drop(response);
    tokio::time::timeout(Duration::from_secs(5), mock.wait_cancelled(1))
        .await
        .expect("the abandoned stream is counted");
    assert_eq!(mock.cancelled(), 1);

    // A stream read to the end is not counted.
    let events = sse(post(&url, &body, &[]).await).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(mock.cancelled(), 1);
}

#[tokio::test]
async fn usage_can_be_left_out_of_streams() {
    let no_usage = Fault {
        usage_in_stream: false,
        ..Fault::default()
    };
    let mock = MockUpstream::both()
        .always(Reply::text("hello").with_fault(no_usage))
        .start()
        .await;
    let (url, body) = openai_chat(&mock, "hi", true);
    let events = sse(post(&url, &body, &[]).await).await;
    assert!(events.iter().all(|e| !e.data.contains("usage")));
    assert_eq!(events.last().unwrap().data, "[DONE]");

    let (url, body) = anthropic_chat(&mock, "hi", true);
    let events = sse(post(&url, &body, &[]).await).await;
    assert!(events.iter().all(|e| !e.data.contains("usage")));
}

#[tokio::test]
async fn directives_script_status_and_retry_after() {
    let mock = MockUpstream::both().start().await;
    let (url, body) = openai_chat(&mock, "please fail\n#mock status=429 retry_after=2", false);
    let response = post(&url, &body, &[]).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let error = json(response).await;
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");

    let (url, body) = anthropic_chat(&mock, "#mock status=529", false);
    let response = post(&url, &body, &[]).await;
    assert_eq!(response.status().as_u16(), 529);
    assert_eq!(json(response).await["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn directives_script_text_cuts_and_usage() {
    let mock = MockUpstream::openai().start().await;
    let (url, body) = openai_chat(&mock, "#mock text=hi there", false);
    let reply = json(post(&url, &body, &[]).await).await;
    assert_eq!(reply["choices"][0]["message"]["content"], "hi there");

    let (url, body) = openai_chat(&mock, "#mock cut_after=2", true);
    let (text, failed) = read_until_error(post(&url, &body, &[]).await).await;
    assert!(failed);
    assert_eq!(parse_sse(&text).len(), 2);

    let (url, body) = openai_chat(&mock, "#mock no_usage", true);
    let events = sse(post(&url, &body, &[]).await).await;
    assert!(events.iter().all(|e| !e.data.contains("usage")));

    let (url, body) = openai_chat(&mock, "#mock malformed", false);
    let bytes = post(&url, &body, &[]).await.bytes().await.unwrap();
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    let (url, body) = openai_chat(&mock, "#mock delay_ms=120", false);
    let started = Instant::now();
    let reply = json(post(&url, &body, &[]).await).await;
    assert!(started.elapsed() >= Duration::from_millis(120));
    // Timing-only directives keep the default answer.
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with("Hello from the Sluice mock."));
}

#[tokio::test]
async fn queued_replies_win_over_directives() {
    let mock = MockUpstream::openai()
        .reply(Reply::text("scripted"))
        .start()
        .await;
    let (url, body) = openai_chat(&mock, "#mock status=500", false);
    let reply = json(post(&url, &body, &[]).await).await;
    assert_eq!(reply["choices"][0]["message"]["content"], "scripted");
    let response = post(&url, &body, &[]).await;
    assert_eq!(response.status(), 500);
    assert_eq!(json(response).await["error"]["type"], "server_error");
}

#[tokio::test]
async fn status_replies_apply_to_embeddings_and_custom_bodies() {
    let mock = MockUpstream::openai()
        .reply(Reply::Status {
            status: 503,
            body: Some(r#"{"error":{"message":"custom"}}"#.into()),
            retry_after: Some(1),
        })
        .start()
        .await;
    let url = format!("{}/v1/embeddings", mock.base_url());
    let response = post(&url, &json!({"model": "m", "input": "x"}), &[]).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(json(response).await["error"]["message"], "custom");
    let response = post(&url, &json!({"model": "m", "input": "x"}), &[]).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let mock = MockUpstream::openai().start().await;
    let url = format!("{}/v1/models", mock.base_url());
    mock.shutdown();
    // The accept loop is aborted; give the runtime a moment to drop the listener.
    let mut refused = false;
    for _ in 0..50 {
        if crate::client().get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused);
}

#[tokio::test]
async fn counts_abandonment_while_waiting_for_the_first_token() {
    let stalled = Fault {
        first_token_ms: 30_000,
        ..Fault::default()
    };
    let mock = MockUpstream::anthropic()
        .always(Reply::text("late").with_fault(stalled))
        .start()
        .await;
    let (url, body) = anthropic_chat(&mock, "hi", true);
    let mut response = post(&url, &body, &[]).await;
    response.chunk().await.unwrap().unwrap();
    drop(response);
    tokio::time::timeout(Duration::from_secs(5), mock.wait_cancelled(1))
        .await
        .expect("hyper notices the disconnect while the body is idle");
}
