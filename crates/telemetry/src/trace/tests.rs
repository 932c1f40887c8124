//! The span model on its own (no collector), and what `Tracer::start` accepts. The export
//! path is tested end to end against real OTLP receivers in `tests/traces/`.

use std::time::UNIX_EPOCH;

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry::{InstrumentationScope, Value};
use opentelemetry_sdk::trace::{RandomIdGenerator, SpanData};
use secrecy::SecretString;
use sluice_types::record::{AttemptOutcome, AttemptRecord, Endpoint, Next, RequestRecord, Role};

use super::spans::{Traced, attr, spans};
use super::*;

fn build(record: &RequestRecord) -> Vec<SpanData> {
    let scope = InstrumentationScope::builder("sluice").build();
    spans(&Traced::of(record), &scope, &RandomIdGenerator::default())
}

fn get(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn text(v: &str) -> Option<Value> {
    Some(Value::String(v.to_owned().into()))
}

fn attempt(
    deployment: &str,
    outcome: AttemptOutcome,
    offset_us: u64,
    latency_us: u64,
) -> AttemptRecord {
    AttemptRecord {
        deployment: deployment.into(),
        provider: "openai".into(),
        outcome,
        latency_us,
        offset_us: Some(offset_us),
        ..Default::default()
    }
}

fn hedged() -> RequestRecord {
    RequestRecord {
        id: "req-h".into(),
        started_at: 1_000,
        endpoint: Endpoint::Messages,
        alias: Some("fast".into()),
        provider: Some("openai".into()),
        deployment: Some("b".into()),
        served_model: Some("m-1".into()),
        status: 200,
        latency_us: 900_000,
        attempts: vec![
            AttemptRecord {
                next: Some(Next::LostHedge),
                input_tokens: Some(40),
                ..attempt("a", AttemptOutcome::Cancelled, 0, 800_000)
            },
            AttemptRecord {
                hedge: true,
                ..attempt("b", AttemptOutcome::Ok, 300_000, 500_000)
            },
            attempt("c", AttemptOutcome::ContentFiltered, 850_000, 10_000),
        ],
        ..Default::default()
    }
}

#[test]
fn only_error_codes_make_an_attempt_an_error() {
    let spans = build(&hedged());
    let outcome: Vec<_> = spans[1..]
        .iter()
        .map(|s| (s.status.clone(), get(s, attr::ERROR_TYPE)))
        .collect();
    // A lost hedge and a filtered answer are outcomes, not failures of the deployment.
    assert_eq!(
        outcome,
        [
            (Status::Unset, None),
            (Status::Unset, None),
            (Status::Unset, None)
        ]
    );
    assert_eq!(get(&spans[1], attr::OUTCOME), text("cancelled"));
    assert_eq!(get(&spans[1], attr::NEXT), text("lost_hedge"));
    assert_eq!(get(&spans[3], attr::OUTCOME), text("content_filtered"));
}

#[test]
fn hedged_attempts_overlap_at_their_offsets() {
    let spans = build(&hedged());
    let start = UNIX_EPOCH + Duration::from_millis(1_000);
    let at = |us| start + Duration::from_micros(us);
    let times: Vec<_> = spans
        .iter()
        .map(|s| (s.span_kind.clone(), s.start_time, s.end_time))
        .collect();
    assert_eq!(
        times,
        [
            (SpanKind::Server, start, at(900_000)),
            (SpanKind::Client, start, at(800_000)),
            (SpanKind::Client, at(300_000), at(800_000)),
            (SpanKind::Client, at(850_000), at(860_000)),
        ]
    );
    assert_eq!(get(&spans[2], attr::HEDGE), Some(Value::Bool(true)));
    // Only the answering attempt carries the served model; the cancelled one its own prompt.
    assert_eq!(get(&spans[2], attr::RESPONSE_MODEL), text("m-1"));
    assert_eq!(get(&spans[1], attr::RESPONSE_MODEL), None);
    assert_eq!(get(&spans[1], attr::INPUT_TOKENS), Some(Value::I64(40)));
    for span in &spans {
        assert_eq!(span.name, "chat fast");
    }
}

#[test]
fn endpoints_without_a_model_call_are_named_for_the_endpoint() {
    let models = build(&RequestRecord {
        id: "req-m".into(),
        endpoint: Endpoint::Models,
        status: 200,
        ..Default::default()
    });
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].name, "models");
    assert_eq!(get(&models[0], attr::OPERATION), None);
    assert_eq!(get(&models[0], attr::REQUEST_MODEL), None);
    assert_eq!(get(&models[0], attr::ENDPOINT), text("models"));

    let count = build(&RequestRecord {
        id: "req-c".into(),
        endpoint: Endpoint::CountTokens,
        alias: Some("fast".into()),
        attempts: vec![attempt("a", AttemptOutcome::Ok, 0, 1_000)],
        ..Default::default()
    });
    assert_eq!(count[0].name, "messages.count_tokens fast");
    assert_eq!(count[1].name, "messages.count_tokens fast");
    assert_eq!(get(&count[1], attr::OPERATION), None);
    assert_eq!(get(&count[1], attr::PROVIDER), text("openai"));
}

#[test]
fn malformed_ids_are_replaced_and_a_parent_needs_a_valid_trace() {
    let record = RequestRecord {
        id: "req-x".into(),
        endpoint: Endpoint::ChatCompletions,
        trace_id: Some("not-a-trace-id-at-all-0123456789".into()),
        span_id: Some("0000000000000000".into()),
        parent_span_id: Some("00f067aa0ba902b7".into()),
        attempts: vec![AttemptRecord {
            span_id: Some("00F067AA0BA902B".into()),
            ..attempt("a", AttemptOutcome::Ok, 0, 1)
        }],
        ..Default::default()
    };
    let spans = build(&record);
    let request = &spans[0];
    assert_ne!(request.span_context.trace_id(), TraceId::INVALID);
    assert_ne!(request.span_context.span_id(), SpanId::INVALID);
    // The client's span belongs to a trace the record could not name: no parent.
    assert_eq!(request.parent_span_id, SpanId::INVALID);
    assert!(!request.parent_span_is_remote);
    assert_eq!(spans[1].parent_span_id, request.span_context.span_id());
    assert_eq!(
        spans[1].span_context.trace_id(),
        request.span_context.trace_id()
    );
    assert_ne!(spans[1].span_context.span_id(), SpanId::INVALID);
}

#[test]
fn skipped_deployments_are_events_not_spans() {
    let record = RequestRecord {
        id: "req-s".into(),
        endpoint: Endpoint::ChatCompletions,
        attempts: vec![
            AttemptRecord {
                role: Some(Role::Pool),
                next: Some(Next::QueueFull),
                ..attempt("a", AttemptOutcome::Skipped, 10, 0)
            },
            attempt("b", AttemptOutcome::Ok, 20, 5),
        ],
        ..Default::default()
    };
    let spans = build(&record);
    assert_eq!(spans.len(), 2);
    let events = &spans[0].events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, spans::SKIPPED_EVENT);
    assert_eq!(events[0].timestamp, UNIX_EPOCH + Duration::from_micros(10));
    assert_eq!(get(&spans[1], attr::DEPLOYMENT), text("b"));
}

#[test]
fn disabled_tracer_does_nothing() {
    let tracer = Tracer::start(TraceSettings::default()).unwrap();
    assert!(!tracer.is_enabled());
    tracer.export(&hedged());
    assert_eq!(
        (tracer.shed(), tracer.failed(), tracer.exported()),
        (0, 0, 0)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(tracer.shutdown());
}

#[test]
fn start_rejects_endpoints_that_are_not_http_urls() {
    for endpoint in ["collector:4318", "ftp://collector", "http://", "http://a b"] {
        let err = Tracer::start(TraceSettings {
            endpoint: Some(endpoint.into()),
            ..TraceSettings::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, TelemetryError::InvalidEndpoint { endpoint: e } if e == endpoint),
            "{endpoint}: {err}"
        );
    }
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Tracer::start(TraceSettings {
        endpoint: Some("http://127.0.0.1:4318".into()),
        ..TraceSettings::default()
    })
    .unwrap_err();
    assert!(matches!(err, TelemetryError::NoRuntime), "{err}");
}

#[tokio::test]
async fn start_rejects_headers_the_protocol_cannot_carry() {
    for protocol in [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc] {
        for (name, value) in [("bad header", "v"), ("x-key", "line\nbreak-secret")] {
            let err = Tracer::start(TraceSettings {
                endpoint: Some("http://127.0.0.1:4318".into()),
                protocol,
                headers: vec![(name.into(), SecretString::from(value))],
                ..TraceSettings::default()
            })
            .unwrap_err();
            assert!(
                matches!(&err, TelemetryError::InvalidHeader { name: n } if n == name),
                "{protocol} {name}: {err}"
            );
            assert!(!err.to_string().contains("secret"));
        }
    }
}

#[test]
fn traces_url_appends_the_signal_path_once() {
    for (base, url) in [
        ("http://c:4318", "http://c:4318/v1/traces"),
        ("http://c:4318/", "http://c:4318/v1/traces"),
        ("https://c/otlp", "https://c/otlp/v1/traces"),
        ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
    ] {
        assert_eq!(export::traces_url(base), url);
    }
}

#[test]
fn protocol_names_round_trip() {
    for protocol in [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc] {
        assert_eq!(OtlpProtocol::parse(protocol.as_str()), Some(protocol));
    }
    assert_eq!(OtlpProtocol::parse("http/json"), None);
}
