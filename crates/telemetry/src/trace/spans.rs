//! A finished request as spans: one SERVER span for the request, one CLIENT child per upstream
//! attempt, and an event on the request span for each deployment the route skipped.
//!
//! Names and attributes follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`,
//! `error.type`, `http.response.status_code`); what the conventions have no name for is under
//! `sluice.*`. This module is pure: it turns a [`Traced`] into [`SpanData`] and does no I/O.
//! Sending is `export.rs`'s, queueing `mod.rs`'s; `docs/tracing.md` shows the result.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use sluice_types::record::{AttemptRecord, Endpoint, ErrorCode, RequestRecord};

/// What the spans of one request are built from: the fields of its [`RequestRecord`] that
/// spans show, copied so that a queued request holds no bodies or other large fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Traced {
    id: String,
    started_at: i64,
    endpoint: Endpoint,
    team: Option<String>,
    alias: Option<String>,
    served_model: Option<String>,
    provider: Option<String>,
    deployment: Option<String>,
    stream: bool,
    status: u16,
    error_code: Option<ErrorCode>,
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    cached_tokens: Option<u32>,
    usage_estimated: bool,
    ttft_us: Option<u64>,
    latency_us: u64,
    attempts: Vec<AttemptRecord>,
    drill_of: Option<String>,
    trace_id: Option<String>,
    span_id: Option<String>,
    parent_span_id: Option<String>,
}

impl Traced {
    pub(crate) fn of(r: &RequestRecord) -> Traced {
        Traced {
            id: r.id.clone(),
            started_at: r.started_at,
            endpoint: r.endpoint,
            team: r.team.clone(),
            alias: r.alias.clone(),
            served_model: r.served_model.clone(),
            provider: r.provider.clone(),
            deployment: r.deployment.clone(),
            stream: r.stream,
            status: r.status,
            error_code: r.error_code,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_tokens: r.cached_tokens,
            usage_estimated: r.usage_estimated,
            ttft_us: r.ttft_us,
            latency_us: r.latency_us,
            attempts: r.attempts.clone(),
            drill_of: r.drill_of.clone(),
            trace_id: r.trace_id.clone(),
            span_id: r.span_id.clone(),
            parent_span_id: r.parent_span_id.clone(),
        }
    }
}

/// Attribute names, in one place so the docs and tests can be checked against them.
pub(crate) mod attr {
    pub const OPERATION: &str = "gen_ai.operation.name";
    pub const PROVIDER: &str = "gen_ai.provider.name";
    /// The name `gen_ai.provider.name` replaced (semantic conventions 1.36 and before); sent
    /// as well so that older backends still group by provider.
    pub const SYSTEM: &str = "gen_ai.system";
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const CACHE_READ_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
    pub const ERROR_TYPE: &str = "error.type";
    pub const HTTP_STATUS: &str = "http.response.status_code";
    pub const REQUEST_ID: &str = "sluice.request_id";
    pub const ENDPOINT: &str = "sluice.endpoint";
    pub const ALIAS: &str = "sluice.alias";
    pub const DEPLOYMENT: &str = "sluice.deployment";
    pub const TEAM: &str = "sluice.team";
    pub const STREAM: &str = "sluice.stream";
    pub const TTFT_US: &str = "sluice.time_to_first_token_us";
    pub const USAGE_ESTIMATED: &str = "sluice.usage.estimated";
    pub const DRILL_OF: &str = "sluice.drill_of";
    pub const OUTCOME: &str = "sluice.attempt.outcome";
    pub const NEXT: &str = "sluice.attempt.next";
    pub const HEDGE: &str = "sluice.attempt.hedge";
    pub const ROLE: &str = "sluice.attempt.role";
    pub const QUEUE_US: &str = "sluice.attempt.queue_us";
    pub const ATTEMPT_TTFT_US: &str = "sluice.attempt.time_to_first_token_us";
}

/// The event on the request span for a deployment the route did not try.
pub(crate) const SKIPPED_EVENT: &str = "sluice.attempt.skipped";

/// Builds the spans of one request, the request's own span first. Ids come from the record;
/// a record without them (written before Sluice traced) gets random ones from `ids`.
pub(crate) fn spans(
    request: &Traced,
    scope: &InstrumentationScope,
    ids: &RandomIdGenerator,
) -> Vec<SpanData> {
    let operation = request.endpoint.gen_ai_operation();
    let recorded = trace_id(request.trace_id.as_deref());
    let trace = recorded.unwrap_or_else(|| ids.new_trace_id());
    // A parent only means something inside the trace the record names.
    let parent = recorded.and_then(|_| span_id(request.parent_span_id.as_deref()));
    let own = span_id(request.span_id.as_deref()).unwrap_or_else(|| ids.new_span_id());

    let start = UNIX_EPOCH + Duration::from_millis(u64::try_from(request.started_at).unwrap_or(0));
    let alias = request.alias.as_deref().filter(|a| !a.is_empty());
    let name = span_name(operation.unwrap_or(request.endpoint.as_str()), alias);

    // The deployment that answered; for a request that failed upstream, the last one tried.
    let tried_last = request.attempts.iter().rev().find(|a| a.outcome.was_sent());
    let deployment = request
        .deployment
        .as_deref()
        .or(tried_last.map(|a| a.deployment.as_str()));
    let provider = request
        .provider
        .as_deref()
        .or(tried_last.map(|a| a.provider.as_str()));
    // The attempt whose answer the client got: its model and usage are the request's.
    let answered = request.deployment.as_deref().and_then(|d| {
        request
            .attempts
            .iter()
            .rposition(|a| a.outcome.was_sent() && a.deployment == d)
    });

    let mut attributes = Vec::with_capacity(24);
    let mut put = |key: &'static str, value: Option<opentelemetry::Value>| {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value));
        }
    };
    put(attr::OPERATION, operation.map(Into::into));
    put(attr::PROVIDER, provider.map(string));
    put(attr::SYSTEM, provider.map(string));
    put(attr::REQUEST_MODEL, alias.map(string));
    put(
        attr::RESPONSE_MODEL,
        request.served_model.as_deref().map(string),
    );
    put(attr::INPUT_TOKENS, request.input_tokens.map(int));
    put(attr::OUTPUT_TOKENS, request.output_tokens.map(int));
    put(attr::CACHE_READ_TOKENS, request.cached_tokens.map(int));
    put(
        attr::ERROR_TYPE,
        request.error_code.map(|c| string(c.as_str())),
    );
    put(attr::HTTP_STATUS, Some(int(request.status)));
    put(attr::REQUEST_ID, Some(string(&request.id)));
    put(attr::ENDPOINT, Some(string(request.endpoint.as_str())));
    put(attr::ALIAS, alias.map(string));
    put(attr::DEPLOYMENT, deployment.map(string));
    put(attr::TEAM, request.team.as_deref().map(string));
    put(attr::STREAM, Some(request.stream.into()));
    put(attr::TTFT_US, request.ttft_us.map(micros));
    put(attr::USAGE_ESTIMATED, Some(request.usage_estimated.into()));
    put(attr::DRILL_OF, request.drill_of.as_deref().map(string));

    let mut spans = Vec::with_capacity(1 + request.attempts.len());
    let mut events = SpanEvents::default();
    // Where an attempt without a recorded offset starts: right after the one before it.
    let mut cursor = Duration::ZERO;
    for (index, attempt) in request.attempts.iter().enumerate() {
        let offset = attempt.offset_us.map_or(cursor, Duration::from_micros);
        let latency = Duration::from_micros(attempt.latency_us);
        cursor = offset + latency;
        if !attempt.outcome.was_sent() {
            events.events.push(skipped(attempt, start + offset));
            continue;
        }
        let answer = (Some(index) == answered).then_some(request);
        let attempt_span = span_id(attempt.span_id.as_deref()).unwrap_or_else(|| ids.new_span_id());
        spans.push(SpanData {
            span_context: context(trace, attempt_span),
            parent_span_id: own,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: name.clone(),
            start_time: start + offset,
            end_time: start + offset + latency,
            attributes: attempt_attributes(request, attempt, operation, alias, answer),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if attempt.outcome.is_failure() {
                Status::error(attempt.outcome.as_str())
            } else {
                Status::Unset
            },
            instrumentation_scope: scope.clone(),
        });
    }

    spans.insert(
        0,
        SpanData {
            span_context: context(trace, own),
            parent_span_id: parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: parent.is_some(),
            span_kind: SpanKind::Server,
            name,
            start_time: start,
            end_time: start + Duration::from_micros(request.latency_us),
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: match &request.error_code {
                Some(code) => Status::error(code.as_str()),
                None => Status::Unset,
            },
            instrumentation_scope: scope.clone(),
        },
    );
    spans
}

/// The attributes of one attempt's span. `answer` is the request when this attempt's answer
/// is the one the client got: the served model and the usage are then the attempt's too.
fn attempt_attributes(
    request: &Traced,
    attempt: &AttemptRecord,
    operation: Option<&'static str>,
    alias: Option<&str>,
    answer: Option<&Traced>,
) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(20);
    let mut put = |key: &'static str, value: Option<opentelemetry::Value>| {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value));
        }
    };
    put(attr::OPERATION, operation.map(Into::into));
    put(attr::PROVIDER, Some(string(&attempt.provider)));
    put(attr::SYSTEM, Some(string(&attempt.provider)));
    // The record doesn't say which model the deployment asked for, so the request's alias.
    put(attr::REQUEST_MODEL, alias.map(string));
    put(
        attr::RESPONSE_MODEL,
        answer.and_then(|r| r.served_model.as_deref()).map(string),
    );
    put(
        attr::INPUT_TOKENS,
        attempt
            .input_tokens
            .or(answer.and_then(|r| r.input_tokens))
            .map(int),
    );
    put(
        attr::OUTPUT_TOKENS,
        attempt
            .output_tokens
            .or(answer.and_then(|r| r.output_tokens))
            .map(int),
    );
    put(
        attr::CACHE_READ_TOKENS,
        answer.and_then(|r| r.cached_tokens).map(int),
    );
    put(
        attr::ERROR_TYPE,
        attempt
            .outcome
            .is_failure()
            .then(|| string(attempt.outcome.as_str())),
    );
    put(attr::HTTP_STATUS, attempt.status.map(int));
    put(attr::REQUEST_ID, Some(string(&request.id)));
    put(attr::ALIAS, alias.map(string));
    put(attr::DEPLOYMENT, Some(string(&attempt.deployment)));
    put(attr::OUTCOME, Some(string(attempt.outcome.as_str())));
    put(attr::NEXT, attempt.next.map(|n| string(n.as_str())));
    put(attr::HEDGE, Some(attempt.hedge.into()));
    put(attr::ROLE, attempt.role.map(|r| string(r.as_str())));
    put(attr::QUEUE_US, attempt.queue_us.map(micros));
    put(attr::ATTEMPT_TTFT_US, attempt.ttft_us.map(micros));
    attributes
}

/// A deployment the route did not try, as an event on the request span.
fn skipped(attempt: &AttemptRecord, at: SystemTime) -> Event {
    let mut attributes = vec![
        KeyValue::new(attr::DEPLOYMENT, attempt.deployment.clone()),
        KeyValue::new(attr::PROVIDER, attempt.provider.clone()),
    ];
    if let Some(role) = attempt.role {
        attributes.push(KeyValue::new(attr::ROLE, role.as_str()));
    }
    if let Some(next) = attempt.next {
        attributes.push(KeyValue::new(attr::NEXT, next.as_str()));
    }
    Event::new(SKIPPED_EVENT, at, attributes, 0)
}

/// `{gen_ai.operation.name} {gen_ai.request.model}`, or the operation alone without a model.
fn span_name(operation: &str, alias: Option<&str>) -> Cow<'static, str> {
    match alias {
        Some(alias) => Cow::Owned(format!("{operation} {alias}")),
        None => Cow::Owned(operation.to_owned()),
    }
}

fn context(trace_id: TraceId, span_id: SpanId) -> SpanContext {
    // Every record is exported, so every span is sampled.
    SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

/// A trace id from its 32 hex digits; `None` when missing, malformed or all zeros.
fn trace_id(hex: Option<&str>) -> Option<TraceId> {
    let hex = hex.filter(|h| is_hex(h, 32))?;
    TraceId::from_hex(hex)
        .ok()
        .filter(|id| *id != TraceId::INVALID)
}

/// A span id from its 16 hex digits; `None` when missing, malformed or all zeros.
fn span_id(hex: Option<&str>) -> Option<SpanId> {
    let hex = hex.filter(|h| is_hex(h, 16))?;
    SpanId::from_hex(hex)
        .ok()
        .filter(|id| *id != SpanId::INVALID)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn string(s: &str) -> opentelemetry::Value {
    opentelemetry::Value::String(s.to_owned().into())
}

fn int(n: impl Into<i64>) -> opentelemetry::Value {
    opentelemetry::Value::I64(n.into())
}

/// Microseconds as an attribute; past `i64::MAX` (292,000 years) it saturates.
fn micros(us: u64) -> opentelemetry::Value {
    opentelemetry::Value::I64(i64::try_from(us).unwrap_or(i64::MAX))
}
