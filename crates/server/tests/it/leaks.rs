//! What an upstream echoes back in its errors (a provider key, a database URL, a URL with
//! credentials) never reaches the client; what helps the client fix its request does. Nor does
//! the gateway's own configuration (a provider's base URL).

use serde_json::{Value, json};
use sluice_providers::ProviderKind;
use sluice_testkit::{MockUpstream, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{TestGateway, on, sse_data, sse_event_names};

const PROVIDER_KEY: &str = "sk-proj-Zx81LeakedKeyLeakedKey0001";
const DATABASE_URL: &str = "postgres://billing:pa55word@db.internal:5432/prod";
const CREDENTIAL_URL: &str = "https://svc:t0ken@proxy.corp.internal/v1";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// An error message a careless upstream might send: the useful part, then what it echoed.
fn leaky_message() -> String {
    format!(
        "Invalid value for 'temperature': must be at most 2. (key {PROVIDER_KEY}, \
         store {DATABASE_URL}, via {CREDENTIAL_URL}, aws {AWS_KEY})"
    )
}

fn assert_scrubbed(text: &str) {
    for secret in [
        PROVIDER_KEY,
        "pa55word",
        "db.internal",
        "t0ken",
        "proxy.corp.internal",
        AWS_KEY,
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked: {text}");
    }
}

#[tokio::test]
async fn secrets_in_upstream_rejections_are_scrubbed_and_the_useful_part_kept() {
    let body = json!({"error": {"message": leaky_message(), "type": "invalid_request_error", "code": null}});
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .start()
        .await;
    for status in [400, 404, 422] {
        mock.push_reply(Reply::Status {
            status,
            body: Some(body.to_string()),
            retry_after: None,
        });
        let res = gw
            .openai(
                "/v1/chat/completions",
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(res.status(), 400);
        let text = res.text().await.unwrap();
        assert_scrubbed(&text);
        let got: Value = serde_json::from_str(&text).unwrap();
        let message = got["error"]["message"].as_str().unwrap();
        assert_eq!(
            message,
            "Invalid value for 'temperature': must be at most 2. (key [redacted provider_key], \
             store [redacted database_url], via [redacted credential_url], aws [redacted aws_access_key])"
        );
        assert_eq!(got["error"]["code"], "upstream_rejected");
    }
    // The Anthropic dialect gets the same scrubbed message.
    mock.push_reply(Reply::Status {
        status: 400,
        body: Some(body.to_string()),
        retry_after: None,
    });
    let res = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let text = res.text().await.unwrap();
    assert_scrubbed(&text);
    assert!(text.contains("Invalid value for 'temperature'"), "{text}");
    gw.finish().await;
}

/// A one-shot upstream that answers every request with `response` (raw HTTP), as a provider
/// that fails in the middle of a stream would.
async fn raw_upstream(response: String) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                // Read the request head and its body (Content-Length), then answer.
                let mut seen = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn secrets_in_an_upstream_error_event_mid_stream_are_scrubbed_in_either_dialect() {
    let error_event = json!({"error": {"message": leaky_message(), "type": "server_error"}});
    let first = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]});
    let sse = format!("data: {first}\n\ndata: {error_event}\n\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{sse}",
        sse.len()
    );
    let upstream = raw_upstream(response).await;
    let mock = MockUpstream::openai().start().await;
    let mut deployment = on(&mock, ProviderKind::OpenAi, "gpt");
    deployment.base_url = format!("http://{upstream}/v1").parse().unwrap();
    let gw = TestGateway::builder()
        .route("m", [deployment])
        .start()
        .await;

    // Same dialect: the upstream's event is passed through, scrubbed, and still valid JSON.
    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert_scrubbed(&body);
    let events = sse_data(&body);
    let error = events.iter().find(|e| e.get("error").is_some()).unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().starts_with(
            "Invalid value for 'temperature': must be at most 2. (key [redacted provider_key]"
        ),
        "{error}"
    );

    // Translated: the Anthropic client's error event carries the scrubbed message.
    let res = gw
        .anthropic(
            "/v1/messages",
            json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let body = res.text().await.unwrap();
    assert_scrubbed(&body);
    assert!(
        sse_event_names(&body).contains(&"error".to_owned()),
        "{body}"
    );
    assert!(body.contains("[redacted database_url]"), "{body}");
    gw.finish().await;
}

#[tokio::test]
async fn an_unreachable_provider_is_named_without_its_address() {
    // A port nobody listens on, under a path that would give away the internal layout.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mock = MockUpstream::openai().start().await;
    let mut deployment = on(&mock, ProviderKind::OpenAi, "gpt");
    deployment.base_url = format!("http://127.0.0.1:{port}/internal-llm-proxy/v1")
        .parse()
        .unwrap();
    let gw = TestGateway::builder()
        .route("m", [deployment])
        .start()
        .await;
    let res = gw
        .openai(
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(
        body["error"]["message"],
        "could not reach provider `openai`"
    );
    let text = body.to_string();
    assert!(!text.contains(&port.to_string()) && !text.contains("internal-llm-proxy"));
    gw.finish().await;
}
