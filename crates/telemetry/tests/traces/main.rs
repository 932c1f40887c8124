//! Traces end to end: a real `Tracer` exporting to real OTLP receivers (HTTP/protobuf and
//! gRPC, from `sluice_testkit::otlp`) on loopback, asserting on the spans they decoded.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests and their helpers may unwrap")]

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;
use sluice_telemetry::{OtlpProtocol, TraceCounts, TraceSettings, Tracer};
use sluice_testkit::otlp::{
    Answer, HAS_IS_REMOTE, IS_REMOTE, Received, Receiver, Silent, SpanKind, StatusCode, Value,
    attributes, hex, spans,
};
use sluice_types::record::{
    AttemptOutcome, AttemptRecord, Endpoint, ErrorCode, Next, RequestRecord, Role,
};
use sluice_types::{Dialect, ErrorKind};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The client's span, from its `traceparent`.
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const REQUEST_SPAN: &str = "a1b2c3d4e5f60718";
const PRIMARY_SPAN: &str = "1111111111111111";
const BACKUP_SPAN: &str = "2222222222222222";
/// 2026-01-01T00:00:00.123Z
const STARTED_AT_MS: i64 = 1_767_225_600_123;
const START_NS: u64 = 1_767_225_600_123 * 1_000_000;

fn tracer(endpoint: &str, protocol: OtlpProtocol) -> Tracer {
    Tracer::start(TraceSettings {
        endpoint: Some(endpoint.to_owned()),
        protocol,
        service_name: "sluice-test".into(),
        ..TraceSettings::default()
    })
    .unwrap()
}

/// A streamed chat completion that skipped `local` (breaker open), failed on `primary` (503)
/// and was answered by the fallback `backup`, continuing the client's trace.
fn fallback() -> RequestRecord {
    RequestRecord {
        id: "req-1".into(),
        started_at: STARTED_AT_MS,
        endpoint: Endpoint::ChatCompletions,
        dialect: Dialect::OpenAi,
        key_id: Some("key-1".into()),
        team: Some("search".into()),
        user: Some("alice".into()),
        alias: Some("fast".into()),
        served_model: Some("gpt-4o-mini-2024-07-18".into()),
        provider: Some("openai".into()),
        deployment: Some("backup".into()),
        stream: true,
        status: 200,
        input_tokens: Some(12),
        output_tokens: Some(30),
        cached_tokens: Some(4),
        ttft_us: Some(310_000),
        latency_us: 850_000,
        attempts: vec![
            AttemptRecord {
                deployment: "local".into(),
                provider: "vllm".into(),
                outcome: AttemptOutcome::Skipped,
                role: Some(Role::Pool),
                next: Some(Next::CircuitOpen),
                offset_us: Some(500),
                ..Default::default()
            },
            AttemptRecord {
                deployment: "primary".into(),
                provider: "openai".into(),
                outcome: AttemptOutcome::Failed(ErrorKind::UpstreamUnavailable),
                status: Some(503),
                latency_us: 120_000,
                role: Some(Role::Pool),
                next: Some(Next::Fallback),
                span_id: Some(PRIMARY_SPAN.into()),
                offset_us: Some(1_000),
                ..Default::default()
            },
            AttemptRecord {
                deployment: "backup".into(),
                provider: "openai".into(),
                outcome: AttemptOutcome::Ok,
                status: Some(200),
                latency_us: 700_000,
                role: Some(Role::Fallback),
                ttft_us: Some(180_000),
                queue_us: Some(2_000),
                span_id: Some(BACKUP_SPAN.into()),
                offset_us: Some(130_000),
                ..Default::default()
            },
        ],
        trace_id: Some(TRACE.into()),
        span_id: Some(REQUEST_SPAN.into()),
        parent_span_id: Some(CLIENT_SPAN.into()),
        ..Default::default()
    }
}

/// Both deployments failed: a 503 from `primary`, then a timeout on `backup`.
fn upstream_failure() -> RequestRecord {
    RequestRecord {
        id: "req-2".into(),
        started_at: STARTED_AT_MS,
        endpoint: Endpoint::Messages,
        dialect: Dialect::Anthropic,
        alias: Some("fast".into()),
        status: 504,
        error_code: Some(ErrorCode::Kind(ErrorKind::UpstreamTimeout)),
        latency_us: 3_500_000,
        attempts: vec![
            AttemptRecord {
                deployment: "primary".into(),
                provider: "openai".into(),
                outcome: AttemptOutcome::Failed(ErrorKind::UpstreamUnavailable),
                status: Some(503),
                latency_us: 500_000,
                next: Some(Next::Fallback),
                ..Default::default()
            },
            AttemptRecord {
                deployment: "backup".into(),
                provider: "anthropic".into(),
                outcome: AttemptOutcome::Failed(ErrorKind::UpstreamTimeout),
                latency_us: 3_000_000,
                next: Some(Next::NoMoreDeployments),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::str(v)
}

fn expect(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn by_span_id<'a>(spans: &'a [Received], id: &str) -> &'a Received {
    spans
        .iter()
        .find(|r| hex(&r.span.span_id) == id)
        .unwrap_or_else(|| panic!("no span {id}"))
}

/// Everything about the spans of [`fallback`], whichever protocol carried them.
fn assert_fallback_trace(received: &[Received]) {
    assert_eq!(received.len(), 3, "one request span and two attempt spans");
    for r in received {
        assert_eq!(hex(&r.span.trace_id), TRACE, "the client's trace continues");
        assert_eq!(r.scope, "sluice");
        assert_eq!(r.resource.get("service.name"), Some(&s("sluice-test")));
        assert_eq!(
            r.resource.get("service.version"),
            Some(&s(env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(r.span.name, "chat fast");
    }

    let request = by_span_id(received, REQUEST_SPAN);
    assert_eq!(request.span.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.span.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        request.span.flags & (HAS_IS_REMOTE | IS_REMOTE),
        HAS_IS_REMOTE | IS_REMOTE
    );
    assert_eq!(request.span.start_time_unix_nano, START_NS);
    assert_eq!(request.span.end_time_unix_nano, START_NS + 850_000_000);
    let status = request.span.status.clone().unwrap_or_default();
    assert_eq!(status.code, StatusCode::Unset as i32);
    assert_eq!(
        request.attrs(),
        expect(&[
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.system", s("openai")),
            ("gen_ai.request.model", s("fast")),
            ("gen_ai.response.model", s("gpt-4o-mini-2024-07-18")),
            ("gen_ai.usage.input_tokens", Value::Int(12)),
            ("gen_ai.usage.output_tokens", Value::Int(30)),
            ("gen_ai.usage.cache_read.input_tokens", Value::Int(4)),
            ("http.response.status_code", Value::Int(200)),
            ("sluice.request_id", s("req-1")),
            ("sluice.endpoint", s("chat.completions")),
            ("sluice.alias", s("fast")),
            ("sluice.deployment", s("backup")),
            ("sluice.team", s("search")),
            ("sluice.stream", Value::Bool(true)),
            ("sluice.time_to_first_token_us", Value::Int(310_000)),
            ("sluice.usage.estimated", Value::Bool(false)),
        ])
    );
    // The skipped deployment is an event on the request span, when it was passed over.
    assert_eq!(request.span.events.len(), 1);
    let skipped = &request.span.events[0];
    assert_eq!(skipped.name, "sluice.attempt.skipped");
    assert_eq!(skipped.time_unix_nano, START_NS + 500_000);
    assert_eq!(
        attributes(&skipped.attributes),
        expect(&[
            ("sluice.deployment", s("local")),
            ("gen_ai.provider.name", s("vllm")),
            ("sluice.attempt.role", s("pool")),
            ("sluice.attempt.next", s("circuit_open")),
        ])
    );

    let primary = by_span_id(received, PRIMARY_SPAN);
    assert_eq!(primary.span.kind, SpanKind::Client as i32);
    assert_eq!(hex(&primary.span.parent_span_id), REQUEST_SPAN);
    assert_eq!(
        primary.span.flags & (HAS_IS_REMOTE | IS_REMOTE),
        HAS_IS_REMOTE
    );
    assert_eq!(primary.span.start_time_unix_nano, START_NS + 1_000_000);
    assert_eq!(
        primary.span.end_time_unix_nano,
        START_NS + 1_000_000 + 120_000_000
    );
    let status = primary.span.status.clone().unwrap();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "upstream_unavailable");
    assert_eq!(
        primary.attrs(),
        expect(&[
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.system", s("openai")),
            ("gen_ai.request.model", s("fast")),
            ("error.type", s("upstream_unavailable")),
            ("http.response.status_code", Value::Int(503)),
            ("sluice.request_id", s("req-1")),
            ("sluice.alias", s("fast")),
            ("sluice.deployment", s("primary")),
            ("sluice.attempt.outcome", s("upstream_unavailable")),
            ("sluice.attempt.next", s("fallback")),
            ("sluice.attempt.hedge", Value::Bool(false)),
            ("sluice.attempt.role", s("pool")),
        ])
    );

    let backup = by_span_id(received, BACKUP_SPAN);
    assert_eq!(backup.span.kind, SpanKind::Client as i32);
    assert_eq!(hex(&backup.span.parent_span_id), REQUEST_SPAN);
    assert_eq!(backup.span.start_time_unix_nano, START_NS + 130_000_000);
    assert_eq!(
        backup.span.end_time_unix_nano,
        START_NS + 130_000_000 + 700_000_000
    );
    let status = backup.span.status.clone().unwrap_or_default();
    assert_eq!(status.code, StatusCode::Unset as i32);
    // The answering attempt: the served model and the usage are its own.
    assert_eq!(
        backup.attrs(),
        expect(&[
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.system", s("openai")),
            ("gen_ai.request.model", s("fast")),
            ("gen_ai.response.model", s("gpt-4o-mini-2024-07-18")),
            ("gen_ai.usage.input_tokens", Value::Int(12)),
            ("gen_ai.usage.output_tokens", Value::Int(30)),
            ("gen_ai.usage.cache_read.input_tokens", Value::Int(4)),
            ("http.response.status_code", Value::Int(200)),
            ("sluice.request_id", s("req-1")),
            ("sluice.alias", s("fast")),
            ("sluice.deployment", s("backup")),
            ("sluice.attempt.outcome", s("ok")),
            ("sluice.attempt.hedge", Value::Bool(false)),
            ("sluice.attempt.role", s("fallback")),
            ("sluice.attempt.queue_us", Value::Int(2_000)),
            ("sluice.attempt.time_to_first_token_us", Value::Int(180_000)),
        ])
    );
}

#[tokio::test]
async fn http_export_sends_one_server_span_and_a_client_span_per_attempt() {
    let mut receiver = Receiver::http(Answer::Accept).await;
    let tracer = tracer(&receiver.endpoint, OtlpProtocol::HttpProtobuf);
    tracer.export(&fallback());
    let export = receiver.next().await.expect("no export arrived");
    assert_fallback_trace(&spans(&[export]));
    tracer.shutdown().await;
    assert_eq!(
        (tracer.exported(), tracer.shed(), tracer.failed()),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn grpc_export_sends_the_same_spans() {
    let mut receiver = Receiver::grpc().await;
    let tracer = tracer(&receiver.endpoint, OtlpProtocol::Grpc);
    tracer.export(&fallback());
    let export = receiver.next().await.expect("no export arrived");
    assert_fallback_trace(&spans(&[export]));
    tracer.shutdown().await;
    assert_eq!(
        (tracer.exported(), tracer.shed(), tracer.failed()),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn failed_request_has_error_status_and_error_type() {
    let mut receiver = Receiver::http(Answer::Accept).await;
    let tracer = tracer(&receiver.endpoint, OtlpProtocol::HttpProtobuf);
    tracer.export(&upstream_failure());
    tracer.shutdown().await;
    let received = spans(&receiver.drain());
    assert_eq!(received.len(), 3);

    let request = received
        .iter()
        .find(|r| r.span.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(request.span.name, "chat fast");
    let status = request.span.status.clone().unwrap();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "upstream_timeout");
    assert_eq!(request.attr("error.type"), Some(s("upstream_timeout")));
    assert_eq!(
        request.attr("http.response.status_code"),
        Some(Value::Int(504))
    );
    // Nothing answered: the request is put on the last deployment tried.
    assert_eq!(request.attr("sluice.deployment"), Some(s("backup")));
    assert_eq!(request.attr("gen_ai.provider.name"), Some(s("anthropic")));
    assert_eq!(request.attr("gen_ai.response.model"), None);
    assert_eq!(request.attr("gen_ai.usage.input_tokens"), None);

    let mut attempts: Vec<&Received> = received
        .iter()
        .filter(|r| r.span.kind == SpanKind::Client as i32)
        .collect();
    attempts.sort_by_key(|r| r.span.start_time_unix_nano);
    let outcomes: Vec<_> = attempts
        .iter()
        .map(|r| {
            let status = r.span.status.clone().unwrap();
            (r.attr("error.type"), status.code, status.message)
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (
                Some(s("upstream_unavailable")),
                StatusCode::Error as i32,
                "upstream_unavailable".to_owned()
            ),
            (
                Some(s("upstream_timeout")),
                StatusCode::Error as i32,
                "upstream_timeout".to_owned()
            ),
        ]
    );
    assert_eq!(attempts[1].attr("http.response.status_code"), None);
    assert_eq!(
        attempts[1].attr("gen_ai.provider.name"),
        Some(s("anthropic"))
    );
}

#[tokio::test]
async fn records_without_ids_get_fresh_ids_and_a_consistent_tree() {
    let mut receiver = Receiver::http(Answer::Accept).await;
    let tracer = tracer(&receiver.endpoint, OtlpProtocol::HttpProtobuf);
    // Written before Sluice traced: no trace, span or offset.
    tracer.export(&upstream_failure());
    tracer.export(&upstream_failure());
    tracer.shutdown().await;
    let received = spans(&receiver.drain());
    assert_eq!(received.len(), 6);

    let servers: Vec<&Received> = received
        .iter()
        .filter(|r| r.span.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 2);
    assert_ne!(
        servers[0].span.trace_id, servers[1].span.trace_id,
        "each record is its own trace"
    );
    for server in servers {
        assert_eq!(server.span.trace_id.len(), 16);
        assert!(server.span.trace_id.iter().any(|b| *b != 0));
        assert_eq!(server.span.span_id.len(), 8);
        assert!(server.span.parent_span_id.is_empty(), "a root span");
        let mut children: Vec<&Received> = received
            .iter()
            .filter(|r| r.span.parent_span_id == server.span.span_id)
            .collect();
        assert_eq!(children.len(), 2);
        children.sort_by_key(|r| r.span.start_time_unix_nano);
        for child in &children {
            assert_eq!(child.span.trace_id, server.span.trace_id);
            assert_ne!(child.span.span_id, server.span.span_id);
        }
        // Without offsets, attempts are laid end to end from the request's start.
        assert_eq!(children[0].span.start_time_unix_nano, START_NS);
        assert_eq!(children[0].span.end_time_unix_nano, START_NS + 500_000_000);
        assert_eq!(
            children[1].span.start_time_unix_nano,
            START_NS + 500_000_000
        );
        assert_eq!(
            children[1].span.end_time_unix_nano,
            START_NS + 3_500_000_000
        );
    }
}

#[tokio::test]
async fn headers_go_with_every_export_over_http_and_grpc() {
    let headers = || {
        vec![
            ("x-api-key".to_owned(), SecretString::from("k-123")),
            ("X-Tenant".to_owned(), SecretString::from("acme")),
        ]
    };
    let mut http = Receiver::http(Answer::Accept).await;
    let mut grpc = Receiver::grpc().await;
    for (receiver, protocol) in [
        (&mut http, OtlpProtocol::HttpProtobuf),
        (&mut grpc, OtlpProtocol::Grpc),
    ] {
        let tracer = Tracer::start(TraceSettings {
            endpoint: Some(receiver.endpoint.clone()),
            protocol,
            headers: headers(),
            ..TraceSettings::default()
        })
        .unwrap();
        tracer.export(&fallback());
        let export = receiver.next().await.expect("no export arrived");
        assert_eq!(
            export.headers.get("x-api-key").map(String::as_str),
            Some("k-123"),
            "{protocol}"
        );
        assert_eq!(
            export.headers.get("x-tenant").map(String::as_str),
            Some("acme"),
            "{protocol}"
        );
        // The default service name.
        assert_eq!(
            spans(&[export])[0].resource.get("service.name"),
            Some(&s("sluice"))
        );
        tracer.shutdown().await;
    }
}

#[tokio::test]
async fn shutdown_exports_everything_queued() {
    let mut receiver = Receiver::http(Answer::Accept).await;
    let tracer = tracer(&receiver.endpoint, OtlpProtocol::HttpProtobuf);
    // More than one batch's worth.
    let records = 1_200;
    for i in 0..records {
        tracer.export(&RequestRecord {
            id: format!("req-{i}"),
            trace_id: None,
            span_id: None,
            parent_span_id: None,
            attempts: Vec::new(),
            ..fallback()
        });
    }
    tracer.shutdown().await;
    assert_eq!(tracer.exported(), records);
    assert_eq!(tracer.shed(), 0);
    let received = spans(&receiver.drain());
    assert_eq!(received.len() as u64, records);
    let mut ids: Vec<_> = received
        .iter()
        .map(|r| r.attr("sluice.request_id"))
        .collect();
    ids.sort_by_key(|id| format!("{id:?}"));
    ids.dedup();
    assert_eq!(ids.len() as u64, records);

    // After shutdown, spans are shed and counted.
    tracer.export(&fallback());
    assert_eq!(tracer.shed(), 1);
}

#[tokio::test]
async fn full_queue_sheds_and_counts() {
    let mut collector = Silent::start().await;
    let tracer = Tracer::start(TraceSettings {
        endpoint: Some(collector.endpoint.clone()),
        queue: 2,
        // The export hangs for the whole test; shutdown gives up on it quickly.
        export_timeout: Duration::from_secs(600),
        shutdown_timeout: Duration::from_millis(50),
        ..TraceSettings::default()
    })
    .unwrap();

    tracer.export(&fallback());
    // The task has taken that one and is stuck exporting it: the queue is empty again.
    assert!(collector.request_arrived().await, "no export arrived");
    for _ in 0..5 {
        tracer.export(&fallback());
    }
    assert_eq!(tracer.shed(), 3, "two fit in the queue, three did not");

    // The collector never answers: the in-flight one and the two queued are shed too.
    tracer.shutdown().await;
    assert_eq!(tracer.shed(), 6);
    assert_eq!(tracer.exported(), 0);
}

#[tokio::test]
async fn a_collector_that_refuses_is_counted_as_failed() {
    let mut receiver = Receiver::http(Answer::Refuse).await;
    let tracer = tracer(&receiver.endpoint, OtlpProtocol::HttpProtobuf);
    tracer.export(&fallback());
    tracer.export(&upstream_failure());
    tracer.shutdown().await;
    // 400 means "do not retry": one call, both requests lost, neither shed.
    assert_eq!(receiver.drain().len(), 1);
    assert_eq!(
        tracer.counts(),
        TraceCounts {
            shed: 0,
            failed: 2,
            exported: 0
        }
    );
}

#[tokio::test]
async fn clones_share_one_queue() {
    let mut receiver = Receiver::http(Answer::Accept).await;
    let tracer = tracer(&receiver.endpoint, OtlpProtocol::HttpProtobuf);
    let clone = tracer.clone();
    tracer.export(&fallback());
    clone.export(&upstream_failure());
    clone.shutdown().await;
    assert_eq!(tracer.exported(), 2);
    assert_eq!(spans(&receiver.drain()).len(), 6);
    // Shutting down again, from any clone, returns at once.
    tracer.shutdown().await;
}
