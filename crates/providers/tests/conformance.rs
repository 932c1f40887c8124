//! Provider conformance: every adapter runs one scenario list against `MockUpstream`.
//!
//! Each scenario is a `#[tokio::test]` that runs [`run`] for every [`ProviderKind`]: it starts a
//! mock speaking the adapter's dialect, calls [`Upstream::chat`] with a canonical request
//! (decoded from an OpenAI client body), asserts on what came back (content, stream events,
//! error kinds) and then on what the upstream received (path, credentials, model, body).
//! Every kind supports every scenario: nothing is skipped (Anthropic's `json_object` goes as an
//! instruction, and the pipeline checks the answer; docs/structured-output.md).
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use sluice_providers::{
    Completion, CompletionStream, Deployment, ProviderError, ProviderKind, Reply, TimeoutPhase,
    Timeouts, Upstream,
};
use sluice_testkit::{Fault, MockUpstream, Recorded, Reply as MockReply};
use sluice_types::{
    ChatRequest, ChatResponse, Classify, ErrorKind, FinishReason, Part, StreamEvent, Usage,
};

/// Every adapter, in the order the matrix runs them.
const KINDS: [ProviderKind; 3] = [
    ProviderKind::OpenAi,
    ProviderKind::OpenAiCompatible,
    ProviderKind::Anthropic,
];

/// Defines [`Scenario`] and one test per scenario from a single list, so a scenario cannot
/// exist without its test.
macro_rules! scenarios {
    ($($(#[doc = $doc:literal])+ $variant:ident => $test:ident,)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Scenario {
            $($(#[doc = $doc])+ $variant,)+
        }

        $(
            #[tokio::test]
            async fn $test() {
                run_all(Scenario::$variant).await;
            }
        )+
    };
}

scenarios! {
    /// A non-streamed answer: text, finish reason, usage, served model.
    Plain => plain_completion_carries_text_usage_and_served_model,
    /// A streamed answer: `Start` first, text deltas, `Finish`, usage last.
    Streaming => stream_carries_start_text_finish_and_usage,
    /// The model calls two tools (non-streamed).
    ToolCalls => tool_calls_come_back_with_ids_names_and_arguments,
    /// The model calls two tools while streaming.
    StreamingToolCalls => streamed_tool_calls_reassemble_per_index,
    /// `response_format: json_schema`: the answer is JSON text matching the schema.
    JsonSchema => json_schema_output_is_json_text_matching_the_schema,
    /// The same, streamed.
    StreamingJsonSchema => streamed_json_schema_output_is_json_text,
    /// `response_format: json_object` (JSON mode).
    JsonObject => json_mode_output_is_a_json_object,
    /// The upstream rejects the request with 400 and its own message.
    Rejected400 => upstream_400_is_rejected_not_retryable_and_keeps_its_message,
    /// The upstream refuses the gateway's own credentials.
    Unauthorized401 => upstream_401_is_unavailable_and_retryable,
    /// The upstream rate limits with `Retry-After`.
    RateLimited429 => upstream_429_is_rate_limited_with_retry_after,
    /// The upstream fails with 500.
    ServerError500 => upstream_500_is_unavailable_and_retryable,
    /// The upstream is unavailable with 503.
    Overloaded503 => upstream_503_is_overloaded,
    /// Anthropic's overloaded status, 529.
    Overloaded529 => upstream_529_is_overloaded,
    /// A 200 whose body is not JSON.
    MalformedBody => malformed_body_is_upstream_malformed,
    /// A stream whose second event is not JSON.
    MalformedStream => malformed_sse_event_ends_the_stream_with_malformed,
    /// The connection drops after three events, with no terminal event.
    MidStreamDrop => mid_stream_drop_yields_chunks_then_truncated,
    /// A non-streamed body whose connection drops half way.
    BodyDrop => body_cut_half_way_is_truncated_not_malformed,
    /// The stream goes quiet for longer than the idle timeout.
    IdleTimeout => quiet_stream_ends_with_idle_timeout,
    /// Every gap between events is within the idle timeout, the whole stream is not: it
    /// completes (the timeout is between reads, not over the stream).
    PacedWithinIdle => paced_stream_longer_than_the_idle_timeout_completes,
    /// No response headers within the first-byte timeout.
    FirstByteTimeout => slow_headers_end_with_first_byte_timeout,
}

/// The gateway's provider key, which the mock requires.
const KEY: &str = "sk-conformance-right";
/// A key the mock refuses.
const WRONG_KEY: &str = "sk-conformance-wrong";
/// The model the client asks for; the deployment rewrites it.
const CLIENT_MODEL: &str = "client-alias";
const PROMPT: &str = "Say hello to the conformance suite";
/// `max_tokens` sent by every scenario except `Plain` (which checks the default).
const MAX_TOKENS: u32 = 300;
const DEFAULT_MAX_TOKENS: u32 = 1024;
/// The mock appends this to models without a date version.
const SERVED_SUFFIX: &str = "-mock-2026-01-01";
/// What the mock answers by default.
fn echo() -> String {
    format!("Hello from the Sluice mock. You said: {PROMPT}")
}
/// The provider's own message in the 400 scenario.
const REJECTION: &str = "messages[0].content: this model does not accept haikus";
const RETRY_AFTER_SECS: u64 = 7;
/// Small timeouts for the timeout scenarios; the mock stalls far longer.
const SHORT: Duration = Duration::from_millis(300);
const STALL_MS: u64 = 5_000;
const PACE_MS: u64 = 150;

#[derive(Clone, Copy)]
struct Case {
    kind: ProviderKind,
    scenario: Scenario,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {:?}", self.kind.as_str(), self.scenario)
    }
}

async fn run_all(scenario: Scenario) {
    for kind in KINDS {
        let case = Case { kind, scenario };
        tokio::time::timeout(Duration::from_secs(30), run(kind, scenario))
            .await
            .unwrap_or_else(|_| panic!("{case}: did not finish within 30 s"));
    }
}

/// Runs one scenario against one adapter.
async fn run(kind: ProviderKind, scenario: Scenario) {
    use Scenario as S;
    let case = Case { kind, scenario };
    let mut mock = match kind.dialect() {
        sluice_types::Dialect::OpenAi => MockUpstream::openai(),
        sluice_types::Dialect::Anthropic => MockUpstream::anthropic(),
    }
    .require_key(KEY);
    if let Some(reply) = scripted_reply(kind, scenario) {
        mock = mock.reply(reply);
    }
    let mock = mock.start().await;
    let key = if scenario == S::Unauthorized401 {
        WRONG_KEY
    } else {
        KEY
    };
    let deployment = deployment(kind, &mock, key);
    let request = canonical_request(scenario);
    let upstream = Upstream::new(timeouts(scenario)).unwrap();
    let result = upstream.chat(&deployment, &request).await;
    let served = format!("{}{SERVED_SUFFIX}", deployment.model);

    match scenario {
        S::Plain => {
            let Completion { response, raw } = complete(case, result);
            assert_eq!(text(&response), echo(), "{case}");
            assert_eq!(finish(&response), FinishReason::EndTurn, "{case}");
            assert_eq!(response.model, served, "{case}: served model");
            let raw: Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(raw["model"], json!(served), "{case}: raw body kept");
            assert_usage(case, response.usage, PROMPT, &echo());
        }
        S::Streaming | S::PacedWithinIdle => {
            let out = collect(stream(case, result)).await;
            assert!(out.end.is_none(), "{case}: ended with {:?}", out.end);
            assert_starts(case, &out.events, &served);
            assert_eq!(out.text(), echo(), "{case}");
            assert_eq!(out.finishes(), [FinishReason::EndTurn], "{case}");
            assert_usage(case, out.last_usage(), PROMPT, &echo());
        }
        S::ToolCalls => {
            let response = complete(case, result).response;
            assert_eq!(finish(&response), FinishReason::ToolUse, "{case}");
            let calls: Vec<_> = response.choices[0]
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::ToolCall(call) => Some(call.clone()),
                    _ => None,
                })
                .collect();
            let got: Vec<_> = calls
                .iter()
                .map(|c| (c.name.as_str(), parse_json(case, &c.arguments)))
                .collect();
            assert_eq!(got, expected_tool_calls(), "{case}");
            assert_distinct_ids(case, calls.iter().map(|c| c.id.as_str()));
            assert_eq!(response.model, served, "{case}: served model");
            assert_nonzero_usage(case, response.usage);
        }
        S::StreamingToolCalls => {
            let out = collect(stream(case, result)).await;
            assert!(out.end.is_none(), "{case}: ended with {:?}", out.end);
            assert_starts(case, &out.events, &served);
            let mut calls: Vec<(u32, String, String, String)> = Vec::new();
            for event in &out.events {
                match event {
                    StreamEvent::ToolCallStart {
                        choice: 0,
                        index,
                        id,
                        name,
                    } => {
                        assert_eq!(*index as usize, calls.len(), "{case}: indices in order");
                        calls.push((*index, id.clone(), name.clone(), String::new()));
                    }
                    StreamEvent::ToolCallDelta {
                        choice: 0,
                        index,
                        arguments,
                    } => {
                        let call = calls.iter_mut().find(|c| c.0 == *index);
                        let call = call.unwrap_or_else(|| panic!("{case}: delta before start"));
                        call.3.push_str(arguments);
                    }
                    _ => {}
                }
            }
            let got: Vec<_> = calls
                .iter()
                .map(|(_, _, name, args)| (name.as_str(), parse_json(case, args)))
                .collect();
            assert_eq!(got, expected_tool_calls(), "{case}");
            assert_distinct_ids(case, calls.iter().map(|c| c.1.as_str()));
            assert_eq!(out.text(), "", "{case}: no text");
            assert_eq!(out.finishes(), [FinishReason::ToolUse], "{case}");
            assert_nonzero_usage(case, out.last_usage());
        }
        S::JsonSchema => {
            let response = complete(case, result).response;
            assert_eq!(finish(&response), FinishReason::EndTurn, "{case}");
            assert!(
                response.choices[0]
                    .parts
                    .iter()
                    .all(|p| matches!(p, Part::Text { .. })),
                "{case}: structured output is text, not a tool call: {:?}",
                response.choices[0].parts
            );
            assert_matches_weather_schema(case, &text(&response));
            assert_nonzero_usage(case, response.usage);
        }
        S::StreamingJsonSchema => {
            let out = collect(stream(case, result)).await;
            assert!(out.end.is_none(), "{case}: ended with {:?}", out.end);
            assert_starts(case, &out.events, &served);
            assert!(
                !out.events
                    .iter()
                    .any(|e| matches!(e, StreamEvent::ToolCallStart { .. })),
                "{case}: structured output streams as text"
            );
            assert_matches_weather_schema(case, &out.text());
            assert_eq!(out.finishes(), [FinishReason::EndTurn], "{case}");
            assert_nonzero_usage(case, out.last_usage());
        }
        // Anthropic gets an instruction, not JSON mode: the mock, which reads no instruction,
        // echoes (the pipeline, not the adapter, checks the answer is JSON).
        S::JsonObject if case.kind == ProviderKind::Anthropic => {
            let response = complete(case, result).response;
            assert_eq!(text(&response), echo(), "{case}");
        }
        S::JsonObject => {
            let response = complete(case, result).response;
            let answer = parse_json(case, &text(&response));
            assert_eq!(answer, json!({"reply": echo()}), "{case}");
        }
        S::Rejected400 => {
            let err = failure(case, result);
            assert_status(case, &err, 400, ErrorKind::UpstreamRejected, false);
            assert_eq!(
                err.client_message(),
                REJECTION,
                "{case}: provider message kept"
            );
            assert!(err.to_string().contains(REJECTION), "{case}: {err}");
        }
        S::Unauthorized401 => {
            let err = failure(case, result);
            assert_status(case, &err, 401, ErrorKind::UpstreamUnavailable, true);
            // The provider's complaint about the gateway's key is for the logs, not the client.
            assert!(
                !err.client_message().contains("key"),
                "{case}: {}",
                err.client_message()
            );
        }
        S::RateLimited429 => {
            let err = failure(case, result);
            assert_status(case, &err, 429, ErrorKind::RateLimited, true);
            assert_eq!(err.retry_after_secs(), Some(RETRY_AFTER_SECS), "{case}");
        }
        S::ServerError500 => {
            let err = failure(case, result);
            assert_status(case, &err, 500, ErrorKind::UpstreamUnavailable, true);
            assert_eq!(err.retry_after_secs(), None, "{case}");
        }
        S::Overloaded503 => {
            let err = failure(case, result);
            assert_status(case, &err, 503, ErrorKind::UpstreamOverloaded, true);
        }
        S::Overloaded529 => {
            let err = failure(case, result);
            assert_status(case, &err, 529, ErrorKind::UpstreamOverloaded, true);
        }
        S::MalformedBody => {
            let err = failure(case, result);
            assert!(
                matches!(err, ProviderError::Malformed { .. }),
                "{case}: {err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::UpstreamMalformed, "{case}");
            assert!(err.retryable(), "{case}");
        }
        S::MalformedStream => {
            let out = collect(stream(case, result)).await;
            // The first event (OpenAI role chunk / Anthropic message_start) is fine.
            assert_eq!(out.chunks, 1, "{case}: chunks before the bad event");
            assert_starts(case, &out.events, &served);
            let err = out.error(case);
            assert!(
                matches!(err, ProviderError::Malformed { .. }),
                "{case}: {err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::UpstreamMalformed, "{case}");
        }
        S::MidStreamDrop => {
            let out = collect(stream(case, result)).await;
            assert_eq!(out.chunks, 3, "{case}: every event before the cut arrives");
            assert_starts(case, &out.events, &served);
            assert!(echo().starts_with(&out.text()), "{case}: {:?}", out.text());
            assert_ne!(out.text(), echo(), "{case}: the answer was cut");
            assert_eq!(out.finishes(), [], "{case}: no finish after a cut");
            let err = out.error(case);
            assert!(
                matches!(err, ProviderError::Truncated { .. }),
                "{case}: {err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::UpstreamUnavailable, "{case}");
            assert!(err.retryable(), "{case}");
        }
        S::BodyDrop => {
            let err = failure(case, result);
            assert!(
                matches!(err, ProviderError::Truncated { .. }),
                "{case}: {err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::UpstreamUnavailable, "{case}");
            assert!(err.retryable(), "{case}");
        }
        S::IdleTimeout => {
            let out = collect(stream(case, result)).await;
            assert_eq!(
                out.chunks, 1,
                "{case}: the first event arrives before the stall"
            );
            assert_starts(case, &out.events, &served);
            let err = out.error(case);
            assert!(
                matches!(
                    err,
                    ProviderError::Timeout {
                        phase: TimeoutPhase::Idle,
                        ..
                    }
                ),
                "{case}: {err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::UpstreamTimeout, "{case}");
        }
        S::FirstByteTimeout => {
            let err = failure(case, result);
            assert!(
                matches!(
                    err,
                    ProviderError::Timeout {
                        phase: TimeoutPhase::FirstToken,
                        ..
                    }
                ),
                "{case}: {err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::UpstreamTimeout, "{case}");
            assert!(err.retryable(), "{case}");
        }
    }

    assert_upstream_received(case, &mock, &deployment, &request, key).await;
}

// ---- setup ----

fn deployment(kind: ProviderKind, mock: &MockUpstream, key: &str) -> Deployment {
    let model = match kind {
        ProviderKind::OpenAi => "gpt-conformance",
        ProviderKind::OpenAiCompatible => "llama-conformance",
        ProviderKind::Anthropic => "claude-conformance",
    };
    Deployment {
        name: format!("{}-deployment", kind.as_str()),
        provider: format!("{}-provider", kind.as_str()),
        kind,
        base_url: format!("{}/v1", mock.base_url()).parse().unwrap(),
        model: model.to_owned(),
        api_key: Some(SecretString::from(key.to_owned())),
        default_max_tokens: DEFAULT_MAX_TOKENS,
        structured_output: Default::default(),
        http_version: Default::default(),
    }
}

fn timeouts(scenario: Scenario) -> Timeouts {
    let generous = Duration::from_secs(10);
    Timeouts {
        connect: generous,
        first_token: if scenario == Scenario::FirstByteTimeout {
            SHORT
        } else {
            generous
        },
        idle: if matches!(scenario, Scenario::IdleTimeout | Scenario::PacedWithinIdle) {
            SHORT
        } else {
            generous
        },
        total: generous,
    }
}

/// The reply the mock is scripted with; `None` uses its default behaviour (an echo, or JSON
/// generated from the requested schema).
fn scripted_reply(kind: ProviderKind, scenario: Scenario) -> Option<MockReply> {
    use Scenario as S;
    let status = |status, retry_after| MockReply::Status {
        status,
        body: None,
        retry_after,
    };
    let stall = |fault: Fault| Some(MockReply::text(echo()).with_fault(fault));
    match scenario {
        S::Plain | S::Streaming | S::JsonSchema | S::StreamingJsonSchema | S::JsonObject => None,
        // The 401 comes from `require_key`, before any reply is chosen.
        S::Unauthorized401 => None,
        S::ToolCalls | S::StreamingToolCalls => Some(MockReply::ToolCalls(
            expected_tool_calls()
                .into_iter()
                .map(|(name, args)| (name.to_owned(), args))
                .collect(),
        )),
        S::Rejected400 => {
            let body = match kind.dialect() {
                sluice_types::Dialect::OpenAi => json!({"error": {
                    "message": REJECTION, "type": "invalid_request_error",
                    "param": "messages", "code": null
                }}),
                sluice_types::Dialect::Anthropic => json!({
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": REJECTION},
                    "request_id": "req_conformance"
                }),
            };
            Some(MockReply::Status {
                status: 400,
                body: Some(body.to_string()),
                retry_after: None,
            })
        }
        S::RateLimited429 => Some(status(429, Some(RETRY_AFTER_SECS))),
        S::ServerError500 => Some(status(500, None)),
        S::Overloaded503 => Some(status(503, None)),
        S::Overloaded529 => Some(status(529, None)),
        S::MalformedBody | S::MalformedStream => Some(MockReply::Malformed),
        S::MidStreamDrop | S::BodyDrop => stall(Fault {
            cut_after_events: Some(3),
            ..Fault::default()
        }),
        // Stalls after the first event in both dialects: the OpenAI role chunk is followed by
        // the first content chunk (`first_token_ms`), Anthropic's `message_start` by
        // `content_block_start` (`chunk_delay_ms`).
        S::IdleTimeout => stall(Fault {
            first_token_ms: STALL_MS,
            chunk_delay_ms: STALL_MS,
            ..Fault::default()
        }),
        // Half the idle timeout between events, for more events than two timeouts' worth.
        S::PacedWithinIdle => stall(Fault {
            first_token_ms: PACE_MS,
            chunk_delay_ms: PACE_MS,
            ..Fault::default()
        }),
        S::FirstByteTimeout => stall(Fault {
            delay_ms: STALL_MS,
            ..Fault::default()
        }),
    }
}

fn streams(scenario: Scenario) -> bool {
    use Scenario as S;
    matches!(
        scenario,
        S::Streaming
            | S::StreamingToolCalls
            | S::StreamingJsonSchema
            | S::MalformedStream
            | S::MidStreamDrop
            | S::IdleTimeout
            | S::PacedWithinIdle
    )
}

fn weather_tool_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"]
    })
}

fn weather_report_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "temperature_c": {"type": "number"},
            "sunny": {"type": "boolean"}
        },
        "required": ["city", "temperature_c", "sunny"],
        "additionalProperties": false
    })
}

fn expected_tool_calls() -> Vec<(&'static str, Value)> {
    vec![
        ("get_weather", json!({"city": "Paris"})),
        ("get_time", json!({"zone": "Europe/Paris"})),
    ]
}

/// The client's OpenAI body for a scenario.
fn client_body(scenario: Scenario) -> Value {
    use Scenario as S;
    let mut body = json!({
        "model": CLIENT_MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
    });
    if scenario != S::Plain {
        body["max_tokens"] = json!(MAX_TOKENS);
    }
    if streams(scenario) {
        // No `stream_options`: the adapter must ask for usage itself.
        body["stream"] = json!(true);
    }
    match scenario {
        S::ToolCalls | S::StreamingToolCalls => {
            body["tools"] = json!([
                {"type": "function", "function": {
                    "name": "get_weather", "description": "Weather for a city",
                    "parameters": weather_tool_schema()
                }},
                {"type": "function", "function": {
                    "name": "get_time",
                    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}
                }}
            ]);
            body["tool_choice"] = json!("required");
        }
        S::JsonSchema | S::StreamingJsonSchema => {
            body["response_format"] = json!({"type": "json_schema", "json_schema": {
                "name": "weather_report", "strict": true, "schema": weather_report_schema()
            }});
        }
        S::JsonObject => body["response_format"] = json!({"type": "json_object"}),
        _ => {}
    }
    body
}

fn canonical_request(scenario: Scenario) -> ChatRequest {
    let body = client_body(scenario).to_string();
    sluice_wire::openai::decode_chat_request(body.as_bytes()).unwrap()
}

// ---- reading results ----

fn complete(case: Case, result: Result<Reply, ProviderError>) -> Completion {
    match result {
        Ok(Reply::Complete(completion)) => completion,
        other => panic!("{case}: expected a complete answer, got {other:?}"),
    }
}

fn stream(case: Case, result: Result<Reply, ProviderError>) -> CompletionStream {
    match result {
        Ok(Reply::Stream(stream)) => stream,
        other => panic!("{case}: expected a stream, got {other:?}"),
    }
}

fn failure(case: Case, result: Result<Reply, ProviderError>) -> ProviderError {
    match result {
        Err(err) => err,
        Ok(reply) => panic!("{case}: expected an error, got {reply:?}"),
    }
}

/// What a stream produced until it ended.
struct Collected {
    chunks: usize,
    events: Vec<StreamEvent>,
    /// The error that ended it, if any.
    end: Option<ProviderError>,
}

impl Collected {
    fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::TextDelta { choice: 0, text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    fn finishes(&self) -> Vec<FinishReason> {
        self.events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Finish { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    /// The error that ended the stream.
    fn error(self, case: Case) -> ProviderError {
        self.end
            .unwrap_or_else(|| panic!("{case}: the stream ended cleanly"))
    }

    fn last_usage(&self) -> Option<Usage> {
        self.events.iter().rev().find_map(|e| match e {
            StreamEvent::Usage(usage) => Some(*usage),
            _ => None,
        })
    }
}

async fn collect(mut stream: CompletionStream) -> Collected {
    let mut out = Collected {
        chunks: 0,
        events: Vec::new(),
        end: None,
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                assert!(
                    chunk.raw.ends_with(b"\n\n"),
                    "each chunk is one whole upstream event: {:?}",
                    chunk.raw
                );
                out.chunks += 1;
                out.events.extend(chunk.events);
            }
            Err(err) => {
                assert!(stream.next().await.is_none(), "the stream ends after {err}");
                out.end = Some(err);
                break;
            }
        }
    }
    out
}

fn text(response: &ChatResponse) -> String {
    assert_eq!(response.choices.len(), 1);
    response.choices[0]
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn finish(response: &ChatResponse) -> FinishReason {
    response.choices[0].finish_reason.clone().unwrap()
}

fn parse_json(case: Case, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {text:?}"))
}

// ---- assertions ----

fn assert_starts(case: Case, events: &[StreamEvent], served: &str) {
    match events.first() {
        Some(StreamEvent::Start { id, model, .. }) => {
            assert_eq!(model, served, "{case}: served model");
            assert!(!id.is_empty(), "{case}: response id");
        }
        other => panic!("{case}: the stream must begin with Start, got {other:?}"),
    }
    let starts = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Start { .. }))
        .count();
    assert_eq!(starts, 1, "{case}: one Start");
}

/// The mock counts `ceil(chars / 4)` tokens (at least 1) of input and output text.
fn assert_usage(case: Case, usage: Option<Usage>, input: &str, output: &str) {
    let tokens = |s: &str| u32::try_from(s.chars().count().div_ceil(4).max(1)).unwrap();
    let usage = usage.unwrap_or_else(|| panic!("{case}: no usage"));
    assert_eq!(
        (usage.input_tokens, usage.output_tokens),
        (tokens(input), tokens(output)),
        "{case}: usage {usage:?}"
    );
    assert!(!usage.estimated, "{case}: usage is the provider's");
}

fn assert_nonzero_usage(case: Case, usage: Option<Usage>) {
    let usage = usage.unwrap_or_else(|| panic!("{case}: no usage"));
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "{case}: usage {usage:?}"
    );
}

fn assert_status(case: Case, err: &ProviderError, status: u16, kind: ErrorKind, retryable: bool) {
    assert_eq!(err.status(), Some(status), "{case}: {err:?}");
    assert_eq!(err.kind(), kind, "{case}: {err:?}");
    assert_eq!(err.retryable(), retryable, "{case}: {err:?}");
}

fn assert_distinct_ids<'a>(case: Case, ids: impl Iterator<Item = &'a str>) {
    let ids: Vec<_> = ids.collect();
    assert!(ids.iter().all(|id| !id.is_empty()), "{case}: ids {ids:?}");
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{case}: ids {ids:?}");
}

fn assert_matches_weather_schema(case: Case, text: &str) {
    let value = parse_json(case, text);
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("{case}: {value}"));
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["city", "sunny", "temperature_c"], "{case}: {value}");
    assert!(obj["city"].is_string(), "{case}: {value}");
    assert!(obj["temperature_c"].is_number(), "{case}: {value}");
    assert!(obj["sunny"].is_boolean(), "{case}: {value}");
}

/// The text of a message's `content`: a string or text blocks/parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Checks the one request the upstream received.
async fn assert_upstream_received(
    case: Case,
    mock: &MockUpstream,
    deployment: &Deployment,
    request: &ChatRequest,
    key: &str,
) {
    tokio::time::timeout(Duration::from_secs(5), mock.wait_hits(1))
        .await
        .unwrap_or_else(|_| panic!("{case}: the upstream was never called"));
    let requests = mock.requests();
    assert_eq!(
        requests.len(),
        1,
        "{case}: one call, no retry inside the adapter"
    );
    let got: &Recorded = &requests[0];
    let body = &got.body;
    assert_eq!(got.method, "POST", "{case}");
    assert_eq!(
        got.header("content-type"),
        Some("application/json"),
        "{case}"
    );
    assert_eq!(
        body["model"],
        json!(deployment.model),
        "{case}: model rewritten"
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{case}: {body}");
    assert_eq!(messages[0]["role"], json!("user"), "{case}");
    assert_eq!(content_text(&messages[0]["content"]), PROMPT, "{case}");
    let sent_stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    assert_eq!(sent_stream, request.stream, "{case}: stream flag");
    let field = |name: &str| body.get(name).cloned();
    let max_tokens = request.max_tokens.map(|n| json!(n));

    match case.kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
            assert_eq!(got.path, "/v1/chat/completions", "{case}");
            let bearer = format!("Bearer {key}");
            assert_eq!(got.header("authorization"), Some(bearer.as_str()), "{case}");
            assert_eq!(got.header("x-api-key"), None, "{case}");
            assert_eq!(got.header("anthropic-version"), None, "{case}");
            let (expected, other) = if case.kind == ProviderKind::OpenAi {
                ("max_completion_tokens", "max_tokens")
            } else {
                ("max_tokens", "max_completion_tokens")
            };
            assert_eq!(field(expected), max_tokens, "{case}: {expected}");
            assert_eq!(field(other), None, "{case}: no {other}");
            if request.stream {
                assert_eq!(
                    body.pointer("/stream_options/include_usage"),
                    Some(&json!(true)),
                    "{case}: streams always ask for usage"
                );
            } else {
                assert_eq!(field("stream_options"), None, "{case}");
            }
        }
        ProviderKind::Anthropic => {
            assert_eq!(got.path, "/v1/messages", "{case}");
            assert_eq!(got.header("x-api-key"), Some(key), "{case}");
            assert_eq!(
                got.header("anthropic-version"),
                Some("2023-06-01"),
                "{case}"
            );
            assert_eq!(got.header("authorization"), None, "{case}");
            let expected = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
            assert_eq!(field("max_tokens"), Some(json!(expected)), "{case}");
            assert_eq!(field("stream_options"), None, "{case}");
        }
    }

    let anthropic = case.kind == ProviderKind::Anthropic;
    match case.scenario {
        Scenario::ToolCalls | Scenario::StreamingToolCalls => {
            let names: Vec<_> = body["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let name = if anthropic {
                        &t["name"]
                    } else {
                        &t["function"]["name"]
                    };
                    name.as_str().unwrap()
                })
                .collect();
            assert_eq!(names, ["get_weather", "get_time"], "{case}");
            let (schema, choice) = if anthropic {
                (&body["tools"][0]["input_schema"], json!({"type": "any"}))
            } else {
                (
                    &body["tools"][0]["function"]["parameters"],
                    json!("required"),
                )
            };
            assert_eq!(schema, &weather_tool_schema(), "{case}");
            assert_eq!(body["tool_choice"], choice, "{case}");
        }
        Scenario::JsonSchema | Scenario::StreamingJsonSchema if anthropic => {
            // Sent as a forced tool; the decoders turn its call back into text.
            assert_eq!(body["tools"][0]["name"], json!("weather_report"), "{case}");
            assert_eq!(
                body["tools"][0]["input_schema"],
                weather_report_schema(),
                "{case}"
            );
            assert_eq!(
                body["tool_choice"],
                json!({"type": "tool", "name": "weather_report"}),
                "{case}"
            );
            assert_eq!(field("response_format"), None, "{case}");
        }
        Scenario::JsonSchema | Scenario::StreamingJsonSchema => {
            assert_eq!(
                body["response_format"]["type"],
                json!("json_schema"),
                "{case}"
            );
            assert_eq!(
                body["response_format"]["json_schema"]["schema"],
                weather_report_schema(),
                "{case}"
            );
        }
        Scenario::JsonObject if anthropic => {
            assert_eq!(field("tools"), None, "{case}");
            assert_eq!(field("response_format"), None, "{case}");
            let system = body["system"].to_string();
            assert!(system.contains("single JSON object"), "{case}: {system}");
        }
        Scenario::JsonObject => {
            assert_eq!(
                body["response_format"],
                json!({"type": "json_object"}),
                "{case}"
            );
        }
        _ => {
            assert_eq!(field("tools"), None, "{case}");
            assert_eq!(field("response_format"), None, "{case}");
        }
    }
}
