//! Traces through the whole gateway: the real server exporting to an OTLP/HTTP receiver on
//! loopback (`sluice_testkit::otlp`), asserting on the spans the receiver decoded, on the
//! `traceparent` each provider received, and on the tracer's counters in `/metrics`.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_providers::ProviderKind;
use sluice_telemetry::TraceSettings;
use sluice_testkit::otlp::{
    self, Answer, HAS_IS_REMOTE, IS_REMOTE, Received, Receiver, Silent, SpanKind, StatusCode,
};
use sluice_testkit::{MockUpstream, Reply};

use crate::support::{TestGateway, TestRoute, on, sse_data};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// How long a test waits for spans or a counter. The tracer sends a batch at most 500 ms after
/// its first request, so this is only a safety net against a hung test.
const WITHIN: Duration = Duration::from_secs(10);

fn tracing_to(endpoint: &str) -> TraceSettings {
    TraceSettings {
        endpoint: Some(endpoint.to_owned()),
        service_name: "sluice-it".into(),
        ..TraceSettings::default()
    }
}

/// Alias `chat`: an OpenAI deployment that answers 500, then an Anthropic fallback.
struct Fallback {
    primary: MockUpstream,
    backup: MockUpstream,
    gw: TestGateway,
}

async fn fallback(tracing: TraceSettings) -> Fallback {
    let primary = MockUpstream::openai()
        .always(Reply::status(500))
        .start()
        .await;
    let backup = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route_with(TestRoute {
            alias: "chat".into(),
            pool: vec![on(&primary, ProviderKind::OpenAi, "gpt-4o-mini")],
            fallbacks: vec![on(&backup, ProviderKind::Anthropic, "claude-sonnet-4-5")],
            policy: None,
        })
        .tracing(tracing)
        .start()
        .await;
    Fallback {
        primary,
        backup,
        gw,
    }
}

/// A chat request on `chat` carrying the client's `traceparent`.
async fn traced_chat(gw: &TestGateway, stream: bool) -> reqwest::Response {
    let mut body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi there"}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    gw.client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .header("traceparent", TRACEPARENT)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// What the client was told: the served model and the usage.
struct Answered {
    model: String,
    input_tokens: i64,
    output_tokens: i64,
}

impl Answered {
    fn of_completion(body: &Value) -> Answered {
        Answered {
            model: body["model"].as_str().unwrap().to_owned(),
            input_tokens: body["usage"]["prompt_tokens"].as_i64().unwrap(),
            output_tokens: body["usage"]["completion_tokens"].as_i64().unwrap(),
        }
    }

    fn of_stream(sse: &str) -> Answered {
        let chunks = sse_data(sse);
        let usage = chunks.iter().find(|c| c["usage"].is_object()).unwrap()["usage"].clone();
        Answered {
            model: chunks[0]["model"].as_str().unwrap().to_owned(),
            input_tokens: usage["prompt_tokens"].as_i64().unwrap(),
            output_tokens: usage["completion_tokens"].as_i64().unwrap(),
        }
    }
}

/// Waits for the request span and its two attempt spans in the client's trace.
async fn fallback_spans(receiver: &mut Receiver) -> Vec<Received> {
    let spans = receiver
        .spans_until(WITHIN, |spans| {
            spans
                .iter()
                .filter(|s| s.trace_id() == CLIENT_TRACE)
                .count()
                >= 3
        })
        .await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    spans
}

fn s(v: &str) -> otlp::Value {
    otlp::Value::str(v)
}

/// The spans of one fallback request, checked against what the client got and what each
/// provider was sent.
fn assert_fallback_trace(spans: &[Received], f: &Fallback, answered: &Answered, stream: bool) {
    for span in spans {
        assert_eq!(
            span.trace_id(),
            CLIENT_TRACE,
            "the client's trace continues"
        );
        assert_eq!(span.span.name, "chat chat");
        assert_eq!(span.resource.get("service.name"), Some(&s("sluice-it")));
    }
    let servers: Vec<&Received> = spans
        .iter()
        .filter(|r| r.span.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 1, "one span for the request");
    let request = servers[0];
    assert_eq!(request.parent_span_id(), CLIENT_SPAN);
    assert_eq!(
        request.span.flags & (HAS_IS_REMOTE | IS_REMOTE),
        HAS_IS_REMOTE | IS_REMOTE,
        "the parent is the client's span"
    );
    assert_eq!(
        request.span.status.clone().unwrap_or_default().code,
        StatusCode::Unset as i32
    );
    let attr = |r: &Received, key: &str| r.attr(key);
    // What the request span and the attempt that answered both say of the answer.
    let answer = [
        ("gen_ai.operation.name", s("chat")),
        ("gen_ai.provider.name", s("anthropic")),
        ("gen_ai.system", s("anthropic")),
        ("gen_ai.request.model", s("chat")),
        ("gen_ai.response.model", s(&answered.model)),
        (
            "gen_ai.usage.input_tokens",
            otlp::Value::Int(answered.input_tokens),
        ),
        (
            "gen_ai.usage.output_tokens",
            otlp::Value::Int(answered.output_tokens),
        ),
        ("http.response.status_code", otlp::Value::Int(200)),
    ];
    let request_only = ("sluice.stream", otlp::Value::Bool(stream));
    for (key, want) in answer.iter().cloned().chain([request_only]) {
        assert_eq!(attr(request, key), Some(want), "request span: {key}");
    }
    assert_eq!(attr(request, "error.type"), None);
    if stream {
        assert!(
            matches!(attr(request, "sluice.time_to_first_token_us"), Some(otlp::Value::Int(us)) if us > 0)
        );
    }

    let mut attempts: Vec<&Received> = spans
        .iter()
        .filter(|r| r.span.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(attempts.len(), 2, "one span per attempt");
    attempts.sort_by_key(|r| r.span.start_time_unix_nano);
    for attempt in &attempts {
        assert_eq!(attempt.parent_span_id(), request.span_id());
        assert_eq!(attempt.span.flags & IS_REMOTE, 0);
        assert_ne!(attempt.span_id(), request.span_id());
    }

    let (failed, answering) = (attempts[0], attempts[1]);
    let status = failed.span.status.clone().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (StatusCode::Error as i32, "upstream_unavailable")
    );
    for (key, want) in [
        ("gen_ai.operation.name", s("chat")),
        ("gen_ai.provider.name", s("openai")),
        ("gen_ai.system", s("openai")),
        ("gen_ai.request.model", s("chat")),
        ("error.type", s("upstream_unavailable")),
        ("http.response.status_code", otlp::Value::Int(500)),
        ("sluice.attempt.outcome", s("upstream_unavailable")),
    ] {
        assert_eq!(attr(failed, key), Some(want), "failed attempt: {key}");
    }
    // Its answer never reached the client: no served model or usage of its own.
    assert_eq!(attr(failed, "gen_ai.response.model"), None);
    assert_eq!(attr(failed, "gen_ai.usage.output_tokens"), None);

    assert_eq!(
        answering.span.status.clone().unwrap_or_default().code,
        StatusCode::Unset as i32
    );
    for (key, want) in answer
        .into_iter()
        .chain([("sluice.attempt.outcome", s("ok"))])
    {
        assert_eq!(attr(answering, key), Some(want), "answering attempt: {key}");
    }
    assert_eq!(attr(answering, "error.type"), None);

    // Each provider was sent the client's trace, with its own attempt's span as the parent:
    // the ids on the wire are the ids in the collector.
    for (mock, attempt) in [(&f.primary, failed), (&f.backup, answering)] {
        assert_eq!(mock.hits(), 1);
        let sent = mock.last_request().unwrap();
        assert_eq!(
            sent.header("traceparent"),
            Some(format!("00-{CLIENT_TRACE}-{}-01", attempt.span_id()).as_str())
        );
    }
}

#[tokio::test]
async fn a_fallback_exports_a_server_span_in_the_clients_trace_and_a_client_span_per_attempt() {
    let mut receiver = Receiver::http(Answer::Accept).await;
    let f = fallback(tracing_to(&receiver.endpoint)).await;

    let res = traced_chat(&f.gw, false).await;
    assert_eq!(res.status(), 200);
    let answered = Answered::of_completion(&res.json().await.unwrap());
    assert_eq!(answered.model, "claude-sonnet-4-5-mock-2026-01-01");

    let spans = fallback_spans(&mut receiver).await;
    assert_fallback_trace(&spans, &f, &answered, false);
    f.gw.finish().await;
}

#[tokio::test]
async fn a_streamed_fallback_is_traced_the_same_way_with_its_time_to_first_token() {
    let mut receiver = Receiver::http(Answer::Accept).await;
    let f = fallback(tracing_to(&receiver.endpoint)).await;

    let res = traced_chat(&f.gw, true).await;
    assert_eq!(res.status(), 200);
    let answered = Answered::of_stream(&res.text().await.unwrap());

    let spans = fallback_spans(&mut receiver).await;
    assert_fallback_trace(&spans, &f, &answered, true);
    let answering = spans
        .iter()
        .find(|r| r.attr("sluice.attempt.outcome") == Some(s("ok")))
        .unwrap();
    assert!(matches!(
        answering.attr("sluice.attempt.time_to_first_token_us"),
        Some(otlp::Value::Int(us)) if us > 0
    ));
    f.gw.finish().await;
}

/// The value of an unlabelled counter in the `/metrics` text.
fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Scrapes `/metrics` until `name` reads `want`, for at most [`WITHIN`]; returns the last
/// scrape. The tracer counts right after the collector answers, so a few scrapes suffice.
async fn scrape_until(gw: &TestGateway, name: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let text = gw.metrics().await;
        if counter(&text, name) == Some(want) || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn counters(text: &str) -> [Option<f64>; 3] {
    [
        "sluice_traces_shed_total",
        "sluice_traces_export_failed_total",
        "sluice_traces_exported_total",
    ]
    .map(|name| counter(text, name))
}

#[tokio::test]
async fn exports_the_collector_refuses_are_counted_as_failed_on_metrics() {
    let mut receiver = Receiver::http(Answer::Refuse).await;
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("chat", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .tracing(tracing_to(&receiver.endpoint))
        .start()
        .await;
    assert_eq!(
        counters(&gw.metrics().await),
        [Some(0.0), Some(0.0), Some(0.0)]
    );

    assert_eq!(traced_chat(&gw, false).await.status(), 200);
    assert!(receiver.next().await.is_some(), "no export arrived");
    let text = scrape_until(&gw, "sluice_traces_export_failed_total", 1.0).await;
    assert_eq!(counters(&text), [Some(0.0), Some(1.0), Some(0.0)], "{text}");
    gw.finish().await;
}

#[tokio::test]
async fn spans_past_a_full_trace_queue_are_counted_as_shed_on_metrics() {
    let mut collector = Silent::start().await;
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("chat", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .tracing(TraceSettings {
            queue: 1,
            // The export hangs for the whole test; shutdown gives up on it quickly.
            export_timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_millis(50),
            ..tracing_to(&collector.endpoint)
        })
        .start()
        .await;

    assert_eq!(traced_chat(&gw, false).await.status(), 200);
    // The tracer is stuck exporting that one: the next fills the queue, two more are shed.
    assert!(collector.request_arrived().await, "no export arrived");
    for _ in 0..3 {
        assert_eq!(traced_chat(&gw, false).await.status(), 200);
    }
    let text = scrape_until(&gw, "sluice_traces_shed_total", 2.0).await;
    assert_eq!(counters(&text), [Some(2.0), Some(0.0), Some(0.0)], "{text}");
    gw.finish().await;
}
