//! Client connections held to their bounds: slow headers are cut off, a client over its
//! connection limit is answered 503 in its dialect, a slow body is answered 408, and shutdown
//! ends within its grace whatever a client leaves half-sent — while `/health` keeps answering
//! everyone else.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_providers::ProviderKind;
use sluice_server::ConnectionLimits;
use sluice_testkit::MockUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestGateway, on};

/// Slow clients come from 127.0.0.1; everyone else from here (the whole 127/8 is loopback).
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A request head that never ends, sent a byte at a time.
const ENDLESS_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// How a slow connection ended.
#[derive(Debug)]
struct Ended {
    /// The server closed it before the whole head (a bound: some 25 seconds at one byte per
    /// 100 ms) was sent.
    closed_by_server: bool,
    /// What the server sent before closing, if anything.
    answer: String,
}

/// Sends [`ENDLESS_HEAD`] one byte per 100 ms until the server closes the connection.
async fn slowloris(mut stream: TcpStream) -> Ended {
    let mut answer = Vec::new();
    for byte in ENDLESS_HEAD {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            // Still open, nothing to read: send the next byte.
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ended {
                    closed_by_server: true,
                    answer: String::from_utf8_lossy(&answer).into_owned(),
                };
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    // Every byte sent: the server never closed it (or closed it after the last byte).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest))
        .await
        .is_ok();
    answer.extend_from_slice(&rest);
    Ended {
        closed_by_server: closed && answer.is_empty(),
        answer: String::from_utf8_lossy(&answer).into_owned(),
    }
}

/// The value of a series in a `/metrics` text (`name{labels}` as written), 0 when absent.
fn series(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Polls `/metrics` until `name` reads at least `want` (a bounded number of times).
async fn wait_for_series(gw: &TestGateway, name: &str, want: u64) -> u64 {
    let mut value = 0;
    for _ in 0..200 {
        value = series(&gw.metrics().await, name);
        if value >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    value
}

#[tokio::test]
async fn slow_headers_are_cut_off_over_limit_clients_get_503_and_health_still_answers() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .limits(ConnectionLimits {
            // Long enough for the twenty to still be open while the others are refused.
            header_read_timeout: Duration::from_secs(4),
            max_connections_per_client: 20,
            max_connections: 1_000,
            ..ConnectionLimits::default()
        })
        .start()
        .await;

    // Twenty slow connections take every place 127.0.0.1 has...
    let mut slow = Vec::new();
    for _ in 0..20 {
        let stream = TcpStream::connect(gw.addr).await.unwrap();
        slow.push(tokio::spawn(slowloris(stream)));
    }
    assert_eq!(
        wait_for_series(&gw, "sluice_connections_open", 20).await,
        20
    );
    // ...so thirty more from it are refused.
    for _ in 0..30 {
        let stream = TcpStream::connect(gw.addr).await.unwrap();
        slow.push(tokio::spawn(slowloris(stream)));
    }
    assert!(
        wait_for_series(
            &gw,
            "sluice_connections_shed_total{reason=\"per_client\"}",
            30
        )
        .await
            >= 30
    );

    // A well-formed request from the same address is answered 503, in its dialect, and told
    // when to come back.
    let same_client = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .build()
        .unwrap();
    let res = same_client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["connection"], "close");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many connections from your address"),
        "{body}"
    );
    let res = same_client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &gw.key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");

    // Everyone else is still served, liveness included.
    let other_client = reqwest::Client::builder()
        .local_address(OTHER_CLIENT)
        .build()
        .unwrap();
    let res = other_client.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let res = other_client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Every slow connection was closed by the gateway, none of them served.
    let mut unanswered = 0;
    for task in slow {
        let ended = task.await.unwrap();
        assert!(ended.closed_by_server, "{ended:?}");
        assert!(!ended.answer.starts_with("HTTP/1.1 200"), "{ended:?}");
        if ended.answer.is_empty() {
            unanswered += 1;
        }
    }
    // The twenty admitted ones ran out of header time; the thirty refused ones never sent a
    // whole head either, so none got the 503 (that needs a request to answer).
    assert_eq!(unanswered, 50);
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            "sluice_connections_timed_out_total{reason=\"header\"}"
        ),
        20,
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            "sluice_connections_shed_total{reason=\"per_client\"}"
        ),
        32,
        "{metrics}"
    );
    // The places are free again: 127.0.0.1 is served.
    let res = same_client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gw.finish().await;
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_answered_408_in_the_dialect_and_recorded() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .body_read_timeout(Duration::from_millis(300))
        .start()
        .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: sluice\r\nx-api-key: {}\r\n\
         anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"model\":",
        gw.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The rest of the body never comes; the answer does.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}}") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the gateway answers a stalled body")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "timeout_error");
    assert_eq!(
        body["error"]["message"],
        "the request body did not arrive within 300 ms"
    );
    assert_eq!(mock.hits(), 0);
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            "sluice_connections_timed_out_total{reason=\"body\"}"
        ),
        1
    );
    let records = gw.finish().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, 408);
    assert_eq!(
        records[0].error_code.map(|c| c.as_str()),
        Some("request_timeout")
    );
}

#[tokio::test]
async fn shutdown_ends_within_its_grace_with_a_stalled_connection_open() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt")])
        .limits(ConnectionLimits {
            // Neither timeout would end the stalled request before shutdown does.
            header_read_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_millis(300),
            ..ConnectionLimits::default()
        })
        .body_read_timeout(Duration::from_secs(600))
        .start()
        .await;
    // A request whose body stops half-way: its handler waits for the rest.
    let mut stalled = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":",
        gw.key
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    // And a head that stops half-way.
    let mut half_head = TcpStream::connect(gw.addr).await.unwrap();
    half_head
        .write_all(b"GET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert_eq!(wait_for_series(&gw, "sluice_connections_open", 2).await, 2);

    let records = tokio::time::timeout(Duration::from_secs(20), gw.finish())
        .await
        .expect("shutdown ends once its grace is over");
    // Both connections were closed by the gateway.
    for stream in [&mut stalled, &mut half_head] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("closed");
        assert!(read.is_err() || rest.is_empty() || !rest.starts_with(b"HTTP/1.1 200"));
    }
    // The request cut at shutdown is recorded as the client never finishing it.
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(mock.hits(), 0);
}
