//! HTTP versions to upstreams: `http_version = "http2"` speaks HTTP/2 by prior knowledge to a
//! plain-HTTP upstream, and streams past an HTTP/2 connection's limit open another connection
//! instead of waiting for a stream to end.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

use std::collections::BTreeSet;
use std::time::Duration;

use sluice_providers::{
    CompletionStream, Deployment, HttpVersion, ProviderKind, Reply, Timeouts, Upstream,
};
use sluice_testkit::MockUpstream;
use sluice_types::ChatRequest;

fn upstream() -> Upstream {
    let generous = Duration::from_secs(30);
    Upstream::new(Timeouts {
        connect: generous,
        first_token: generous,
        idle: generous,
        total: generous,
    })
    .unwrap()
}

fn deployment(kind: ProviderKind, mock: &MockUpstream, http_version: HttpVersion) -> Deployment {
    Deployment {
        name: "d".to_owned(),
        provider: "p".to_owned(),
        kind,
        base_url: format!("{}/v1", mock.base_url()).parse().unwrap(),
        model: "m".to_owned(),
        api_key: None,
        default_max_tokens: 64,
        structured_output: Default::default(),
        http_version,
    }
}

/// A streamed request whose answer the mock holds open: its events come a minute apart.
fn held_stream() -> ChatRequest {
    let body = serde_json::json!({
        "model": "m",
        "stream": true,
        "messages": [{"role": "user", "content": "hold on\n#mock chunk_delay_ms=60000"}],
    });
    sluice_wire::openai::decode_chat_request(body.to_string().as_bytes()).unwrap()
}

async fn open(upstream: &Upstream, deployment: &Deployment) -> CompletionStream {
    match upstream.chat(deployment, &held_stream()).await {
        Ok(Reply::Stream(stream)) => stream,
        other => panic!("expected a stream, got {other:?}"),
    }
}

#[tokio::test]
async fn http2_by_prior_knowledge_reaches_a_plain_http_upstream_over_http2() {
    for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic] {
        let mock = MockUpstream::both().start().await;
        let upstream = upstream();
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let request =
            sluice_wire::openai::decode_chat_request(body.to_string().as_bytes()).unwrap();
        for version in [HttpVersion::Http2, HttpVersion::Auto, HttpVersion::Http1] {
            let reply = upstream
                .chat(&deployment(kind, &mock, version), &request)
                .await
                .unwrap();
            assert!(matches!(reply, Reply::Complete(_)), "{kind:?} {version:?}");
        }
        let versions: Vec<String> = mock
            .requests()
            .into_iter()
            .map(|r| r.http_version)
            .collect();
        assert_eq!(versions, ["HTTP/2.0", "HTTP/1.1", "HTTP/1.1"], "{kind:?}");
    }
}

#[tokio::test]
async fn http2_streams_past_a_connections_limit_open_another_connection() {
    let mock = MockUpstream::openai().http2_max_streams(4).start().await;
    let upstream = upstream().with_streams_per_connection(4);
    let deployment = deployment(ProviderKind::OpenAi, &mock, HttpVersion::Http2);
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(open(&upstream, &deployment).await);
    }
    // All ten reached the upstream while the others are still open, on three connections.
    let requests = mock.requests();
    assert_eq!(requests.len(), 10);
    assert!(requests.iter().all(|r| r.http_version == "HTTP/2.0"));
    let connections: BTreeSet<u64> = requests.iter().map(|r| r.connection).collect();
    assert_eq!(connections.len(), 3, "{connections:?}");

    // A stream that ends frees its place: the next request takes it, on a connection that
    // is already open.
    held.truncate(9);
    mock.wait_cancelled(1).await;
    drop(held.remove(0));
    mock.wait_cancelled(2).await;
    held.push(open(&upstream, &deployment).await);
    held.push(open(&upstream, &deployment).await);
    let connections: BTreeSet<u64> = mock.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections.len(), 3, "{connections:?}");
}

#[tokio::test]
async fn streams_past_what_the_server_allows_wait_for_a_stream_to_end() {
    // Counting more streams per connection than the server allows: the ones past its limit
    // wait, unseen, which is what `http2_streams_per_connection` is there to prevent.
    let mock = MockUpstream::openai().http2_max_streams(2).start().await;
    let upstream = upstream().with_streams_per_connection(100);
    let deployment = deployment(ProviderKind::OpenAi, &mock, HttpVersion::Http2);
    let opening: Vec<_> = (0..3)
        .map(|_| {
            let (upstream, deployment) = (upstream.clone(), deployment.clone());
            tokio::spawn(async move { open(&upstream, &deployment).await })
        })
        .collect();
    mock.wait_hits(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.hits(), 2, "the third waits for a stream");
    let open_now: Vec<_> = opening
        .into_iter()
        .filter(|task| task.is_finished())
        .collect();
    assert_eq!(open_now.len(), 2);
    // One ends: the third goes.
    let first = open_now.into_iter().next().unwrap().await.unwrap();
    drop(first);
    mock.wait_hits(3).await;
}
