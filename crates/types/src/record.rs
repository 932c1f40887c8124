//! The request record: everything known about one request once it ended, as typed values.
//!
//! The pipeline fills it, `sluice-policy` prices it, `sluice-telemetry` turns it into metrics
//! and spans, `sluice-store` writes it. Every closed set of values (endpoint, outcome, what
//! happened next, role) is an enum whose wire form is the stable snake_case string the store,
//! the CLI's `--json` output and the metrics labels have always used.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Dialect, ErrorKind, TenantId};

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Endpoint {
    #[default]
    ChatCompletions,
    Messages,
    CountTokens,
    Embeddings,
    Models,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Endpoint::ChatCompletions,
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::Embeddings,
        Endpoint::Models,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "messages.count_tokens",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Models => "models",
        }
    }

    /// The OpenTelemetry GenAI `gen_ai.operation.name`; `None` for endpoints that call no
    /// model. Metrics and spans both use it.
    pub fn gen_ai_operation(self) -> Option<&'static str> {
        match self {
            Endpoint::ChatCompletions | Endpoint::Messages => Some("chat"),
            Endpoint::Embeddings => Some("embeddings"),
            Endpoint::CountTokens | Endpoint::Models => None,
        }
    }
}

/// Why a request failed, as its record says: a failure kind, or the client leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Kind(ErrorKind),
    /// The client went away before the answer was complete (status 499).
    ClientDisconnected,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Kind(kind) => kind.code(),
            ErrorCode::ClientDisconnected => "client_disconnected",
        }
    }
}

/// How one upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AttemptOutcome {
    /// It answered (the first event of a stream, or the whole answer).
    #[default]
    Ok,
    /// It failed with this kind (its code is the outcome's text).
    Failed(ErrorKind),
    /// Dropped while under way: it lost a hedge, or the client left.
    Cancelled,
    /// Not sent: the deployment could not take it (see `next`).
    Skipped,
    /// It answered, but the provider's content filter cut the answer.
    ContentFiltered,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Failed(kind) => kind.code(),
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Skipped => "skipped",
            AttemptOutcome::ContentFiltered => "content_filtered",
        }
    }

    /// Whether the attempt failed. A lost hedge or a client that left, a deployment not tried,
    /// an answer the provider's filter refused (the deployment worked) are not failures.
    pub fn is_failure(self) -> bool {
        matches!(self, AttemptOutcome::Failed(_))
    }

    /// Whether the attempt was sent upstream.
    pub fn was_sent(self) -> bool {
        self != AttemptOutcome::Skipped
    }
}

/// What happened after an attempt, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Next {
    /// The same deployment was tried again.
    Retry,
    /// The next deployment was tried.
    Fallback,
    /// A hedge was sent while this attempt waited for its first token.
    Hedge,
    /// This attempt was cancelled because another answered first.
    LostHedge,
    // Why the request stopped trying here.
    NotRetryable,
    ConditionNotEnabled,
    RetryBudgetExhausted,
    MaxAttempts,
    Deadline,
    NoMoreDeployments,
    // Why a deployment was not sent the request.
    CircuitOpen,
    CoolingDown,
    QueueFull,
    QueueTimeout,
}

impl Next {
    pub const ALL: [Next; 14] = [
        Next::Retry,
        Next::Fallback,
        Next::Hedge,
        Next::LostHedge,
        Next::NotRetryable,
        Next::ConditionNotEnabled,
        Next::RetryBudgetExhausted,
        Next::MaxAttempts,
        Next::Deadline,
        Next::NoMoreDeployments,
        Next::CircuitOpen,
        Next::CoolingDown,
        Next::QueueFull,
        Next::QueueTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Next::Retry => "retry",
            Next::Fallback => "fallback",
            Next::Hedge => "hedge",
            Next::LostHedge => "lost_hedge",
            Next::NotRetryable => "not_retryable",
            Next::ConditionNotEnabled => "condition_not_enabled",
            Next::RetryBudgetExhausted => "retry_budget_exhausted",
            Next::MaxAttempts => "max_attempts",
            Next::Deadline => "deadline",
            Next::NoMoreDeployments => "no_more_deployments",
            Next::CircuitOpen => "circuit_open",
            Next::CoolingDown => "cooling_down",
            Next::QueueFull => "queue_full",
            Next::QueueTimeout => "queue_timeout",
        }
    }
}

/// A deployment's place in its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Pool,
    Fallback,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pool => "pool",
            Role::Fallback => "fallback",
        }
    }
}

/// A value of the record read back from text that is not one of its known values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.what, self.value)
    }
}

impl std::error::Error for UnknownValue {}

/// Text forms: `as_str` one way, `FromStr` back, serde through both.
macro_rules! text_form {
    ($ty:ty, $what:literal, $values:expr) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                $values
                    .into_iter()
                    .find(|v: &$ty| v.as_str() == s)
                    .ok_or_else(|| UnknownValue {
                        what: $what,
                        value: s.to_owned(),
                    })
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

text_form!(Endpoint, "endpoint", Endpoint::ALL);
text_form!(Next, "next step", Next::ALL);
text_form!(Role, "role", [Role::Pool, Role::Fallback]);
text_form!(SchemaCheck, "schema check", SchemaCheck::ALL);
text_form!(
    ErrorCode,
    "error code",
    ErrorKind::ALL
        .into_iter()
        .map(ErrorCode::Kind)
        .chain([ErrorCode::ClientDisconnected])
);
text_form!(
    AttemptOutcome,
    "attempt outcome",
    [
        AttemptOutcome::Ok,
        AttemptOutcome::Cancelled,
        AttemptOutcome::Skipped,
        AttemptOutcome::ContentFiltered,
    ]
    .into_iter()
    .chain(ErrorKind::ALL.into_iter().map(AttemptOutcome::Failed))
);

/// One upstream attempt of a request, or a deployment of its route that was not tried.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub deployment: String,
    pub provider: String,
    pub outcome: AttemptOutcome,
    /// Upstream HTTP status, when there was one.
    pub status: Option<u16>,
    pub latency_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Sent while an earlier attempt was still waiting for its first token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hedge: bool,
    /// Time to the first event (streams) or the whole answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_us: Option<u64>,
    /// Time spent waiting for a slot on the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_us: Option<u64>,
    /// What happened next, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Next>,
    /// The attempt's trace span (16 hex), also sent upstream as the parent in `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// When the attempt started, in µs after the request started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_us: Option<u64>,
    /// Tokens this attempt used (or, for a cancelled one, the prompt it sent), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u32>,
    /// What this attempt cost at its deployment's price, in micro-USD (a lost hedge: its
    /// prompt), when the price is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<i64>,
    /// How this attempt's answer to a structured request fared against its schema (none: the
    /// request asked for no structure, or the attempt gave no answer to check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaCheck>,
}

/// The gateway's check of one structured answer against the requested schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaCheck {
    /// Valid as the provider sent it.
    Valid,
    /// Valid once trivial damage was repaired (code fences, text around the JSON).
    Repaired,
    /// Not valid, even after repair.
    Invalid,
}

impl SchemaCheck {
    pub const ALL: [SchemaCheck; 3] = [
        SchemaCheck::Valid,
        SchemaCheck::Repaired,
        SchemaCheck::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchemaCheck::Valid => "valid",
            SchemaCheck::Repaired => "repaired",
            SchemaCheck::Invalid => "invalid",
        }
    }
}

/// Everything known about one request once it ended.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub endpoint: Endpoint,
    /// The dialect the client spoke.
    pub dialect: Dialect,
    /// Who owns the request's data: the key's tenant (`None` before the key is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    pub key_id: Option<String>,
    /// The key's place in the hierarchy: organisation, team, project.
    pub organisation: Option<String>,
    pub team: Option<String>,
    pub project: Option<String>,
    /// End user: the request's `user` / `metadata.user_id` / `x-sluice-user`, else the key's.
    pub user: Option<String>,
    /// The feature tag the client sent in `x-sluice-feature`, for usage reports.
    pub feature: Option<String>,
    /// The model the client asked for.
    pub alias: Option<String>,
    /// The model as the provider reported it.
    pub served_model: Option<String>,
    pub provider: Option<String>,
    pub deployment: Option<String>,
    pub stream: bool,
    /// HTTP status sent to the client (200 for a stream that later failed; see `error_code`).
    pub status: u16,
    pub error_code: Option<ErrorCode>,
    pub input_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    pub cached_tokens: Option<u32>,
    /// The token counts were estimated by the gateway, not reported by the provider.
    pub usage_estimated: bool,
    pub ttft_us: Option<u64>,
    pub latency_us: u64,
    /// Every attempt's cost, in micro-USD: what the request cost, drawn from its budgets.
    /// `None` when no attempt's model has a known price.
    pub cost_micros: Option<i64>,
    /// Estimated energy (micro-Wh) and carbon (micro-gCO2e) of the tokens processed.
    pub energy_uwh: Option<u64>,
    pub carbon_ug: Option<u64>,
    /// Set when the caller was over a soft limit and was served by the route's cheaper alias:
    /// the alias it asked for (`alias` is the one that served).
    pub degraded_from: Option<String>,
    pub attempts: Vec<AttemptRecord>,
    /// Set on a drill: the live request it shadowed. Its cost belongs to the drill, not to
    /// the caller (key, team and user are empty).
    pub drill_of: Option<String>,
    /// Whether the answer was valid JSON for the schema the request asked for (`None` when it
    /// asked for none, or there was no answer).
    pub schema_valid: Option<bool>,
    /// W3C trace context: the trace (32 hex; the client's when it sent `traceparent`), the
    /// request's own span (16 hex), and the client's span it continues, if any.
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub parent_span_id: Option<String>,
    /// The request and response bodies, when the route or key keeps them (stored apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bodies: Option<Bodies>,
    /// What the route's policies found and did (DLP, tool policy, stop sequences, structured
    /// output): never the values they matched.
    #[serde(default, skip_serializing_if = "Audit::is_empty")]
    pub policy: Audit,
}

/// One policy's finding on a request: which rule matched, where, how often, and what was done.
/// It names what was found, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// The policy: `dlp`, `tool_policy`, `stop_sequences`, `structured_output`, ...
    pub policy: String,
    /// What matched: a detector (`email`), a tool rule, a stop sequence's index, ...
    pub rule: String,
    pub action: PolicyAction,
    pub place: PolicyPlace,
    pub count: u32,
}

/// What a policy did about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAction {
    /// Replaced by a marker naming what was there.
    Redact,
    /// Replaced by a stable placeholder, restored in the answer the client sees.
    Pseudonymise,
    /// The request or answer was refused.
    Block,
    /// Let through, recorded.
    Log,
    /// Let through with a warning header.
    Warn,
    /// Changed so that it no longer triggers (an escaped stop sequence).
    Escape,
    /// Repaired (a structured answer's code fences or text around the JSON).
    Repair,
    /// Enforced by the gateway itself (a stop sequence the provider could not take).
    Enforce,
    /// Marked for whoever reads the record (an answer ended by a stop sequence).
    Flag,
}

impl PolicyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyAction::Redact => "redact",
            PolicyAction::Pseudonymise => "pseudonymise",
            PolicyAction::Block => "block",
            PolicyAction::Log => "log",
            PolicyAction::Warn => "warn",
            PolicyAction::Escape => "escape",
            PolicyAction::Repair => "repair",
            PolicyAction::Enforce => "enforce",
            PolicyAction::Flag => "flag",
        }
    }
}

/// Where in the exchange a policy found something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyPlace {
    /// The request's messages (system, user, assistant text).
    Request,
    /// Tool results the client sent back.
    ToolResult,
    /// Tool-call arguments: in the request's history, or in the answer.
    ToolCall,
    /// The tools the request offered.
    Tools,
    /// The answer's text.
    Response,
}

impl PolicyPlace {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyPlace::Request => "request",
            PolicyPlace::ToolResult => "tool_result",
            PolicyPlace::ToolCall => "tool_call",
            PolicyPlace::Tools => "tools",
            PolicyPlace::Response => "response",
        }
    }
}

/// A request's policy decisions, merged by (policy, rule, action, place).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Audit(Vec<PolicyDecision>);

impl Audit {
    /// Counts `count` more findings of one kind.
    pub fn note(
        &mut self,
        policy: &str,
        rule: &str,
        action: PolicyAction,
        place: PolicyPlace,
        count: u32,
    ) {
        if count == 0 {
            return;
        }
        match self.0.iter_mut().find(|d| {
            d.policy == policy && d.rule == rule && d.action == action && d.place == place
        }) {
            Some(decision) => decision.count = decision.count.saturating_add(count),
            None => self.0.push(PolicyDecision {
                policy: policy.to_owned(),
                rule: rule.to_owned(),
                action,
                place,
                count,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn decisions(&self) -> &[PolicyDecision] {
        &self.0
    }

    /// A one-line summary for a response header: `POLICY:RULE:ACTION:PLACE=COUNT`, comma
    /// separated (`dlp:email:pseudonymise:request=2`). `None` when there is nothing to say.
    pub fn summary(&self) -> Option<String> {
        use std::fmt::Write;
        let mut out = String::new();
        for d in &self.0 {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(
                out,
                "{}:{}:{}:{}={}",
                d.policy,
                d.rule,
                d.action.as_str(),
                d.place.as_str(),
                d.count
            );
        }
        (!out.is_empty()).then_some(out)
    }
}

/// A request's bodies as kept: already redacted, each cut at the configured size.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Bodies {
    /// What the client sent.
    pub request: Option<String>,
    /// What the provider answered (a stream: its events as received, in order).
    pub response: Option<String>,
    /// Either was cut at the size cap.
    pub truncated: bool,
}

impl AttemptRecord {
    /// A request's attempts as the JSON list the store keeps: the same text as
    /// `serde_json::to_string(attempts)` (fields in declaration order, the same ones skipped),
    /// written straight into one buffer sized up front. The record writer calls it for every
    /// request; serde's path escapes every key and grows its buffer several times.
    pub fn json_list(attempts: &[AttemptRecord]) -> String {
        // ~250 bytes for an attempt with its span, offsets and tokens.
        let mut out = String::with_capacity(2 + 288 * attempts.len());
        out.push('[');
        for (i, attempt) in attempts.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            attempt.write_json(&mut out);
        }
        out.push(']');
        out
    }

    fn write_json(&self, out: &mut String) {
        // Destructured whole, so that a new field does not compile until it is written here.
        let AttemptRecord {
            deployment,
            provider,
            outcome,
            status,
            latency_us,
            role,
            hedge,
            ttft_us,
            queue_us,
            next,
            span_id,
            offset_us,
            input_tokens,
            output_tokens,
            cost_micros,
            schema,
        } = self;
        out.push_str("{\"deployment\":");
        json_str(out, deployment);
        out.push_str(",\"provider\":");
        json_str(out, provider);
        out.push_str(",\"outcome\":");
        json_str(out, outcome.as_str());
        out.push_str(",\"status\":");
        match status {
            Some(status) => json_uint(out, u64::from(*status)),
            None => out.push_str("null"),
        }
        out.push_str(",\"latency_us\":");
        json_uint(out, *latency_us);
        if let Some(role) = role {
            out.push_str(",\"role\":");
            json_str(out, role.as_str());
        }
        if *hedge {
            out.push_str(",\"hedge\":true");
        }
        if let Some(ttft_us) = ttft_us {
            out.push_str(",\"ttft_us\":");
            json_uint(out, *ttft_us);
        }
        if let Some(queue_us) = queue_us {
            out.push_str(",\"queue_us\":");
            json_uint(out, *queue_us);
        }
        if let Some(next) = next {
            out.push_str(",\"next\":");
            json_str(out, next.as_str());
        }
        if let Some(span_id) = span_id {
            out.push_str(",\"span_id\":");
            json_str(out, span_id);
        }
        if let Some(offset_us) = offset_us {
            out.push_str(",\"offset_us\":");
            json_uint(out, *offset_us);
        }
        if let Some(input_tokens) = input_tokens {
            out.push_str(",\"input_tokens\":");
            json_uint(out, u64::from(*input_tokens));
        }
        if let Some(output_tokens) = output_tokens {
            out.push_str(",\"output_tokens\":");
            json_uint(out, u64::from(*output_tokens));
        }
        if let Some(cost_micros) = cost_micros {
            out.push_str(",\"cost_micros\":");
            if *cost_micros < 0 {
                out.push('-');
            }
            json_uint(out, cost_micros.unsigned_abs());
        }
        if let Some(schema) = schema {
            out.push_str(",\"schema\":");
            json_str(out, schema.as_str());
        }
        out.push('}');
    }
}

/// `value` as a JSON string, escaped as serde_json escapes it: `\"`, `\\`, the short forms
/// `\b \f \n \r \t`, `\u00XX` (lowercase hex) for the other control characters; everything
/// else as it is.
fn json_str(out: &mut String, value: &str) {
    out.push('"');
    let mut clean = 0;
    for (i, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `i` is on a character boundary.
        out.push_str(value.get(clean..i).unwrap_or_default());
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        } else {
            out.push_str(escape);
        }
        clean = i + 1;
    }
    out.push_str(value.get(clean..).unwrap_or_default());
    out.push('"');
}

/// `value` in decimal.
fn json_uint(out: &mut String, value: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut rest = value;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in digits.iter().skip(digits.len() - len) {
        out.push(char::from(digit));
    }
}

impl RequestRecord {
    /// Attempts sent upstream (skipped deployments not counted).
    pub fn attempts_sent(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.outcome.was_sent())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_merges_findings_of_one_kind_and_summarises_them() {
        let mut audit = Audit::default();
        audit.note(
            "dlp",
            "email",
            PolicyAction::Redact,
            PolicyPlace::Request,
            2,
        );
        audit.note(
            "dlp",
            "email",
            PolicyAction::Redact,
            PolicyPlace::Request,
            1,
        );
        audit.note(
            "dlp",
            "email",
            PolicyAction::Redact,
            PolicyPlace::Response,
            1,
        );
        audit.note("dlp", "iban", PolicyAction::Block, PolicyPlace::Request, 0);
        assert_eq!(audit.decisions().len(), 2);
        assert_eq!(
            audit.summary().as_deref(),
            Some("dlp:email:redact:request=3, dlp:email:redact:response=1")
        );
        assert_eq!(Audit::default().summary(), None);
        let json = serde_json::to_string(&audit).unwrap();
        assert!(
            json.starts_with(r#"[{"policy":"dlp","rule":"email","action":"redact""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Audit>(&json).unwrap(), audit);
    }

    #[test]
    fn the_attempts_list_is_the_text_serde_writes() {
        let full = AttemptRecord {
            deployment: "dep \"quoted\" \\ back\u{1}\u{1f}\n\r\t\u{8}\u{c}\u{7f} é 😀".into(),
            provider: "openai".into(),
            outcome: AttemptOutcome::Failed(ErrorKind::UpstreamUnavailable),
            status: Some(503),
            latency_us: u64::MAX,
            role: Some(Role::Fallback),
            hedge: true,
            ttft_us: Some(0),
            queue_us: Some(10),
            next: Some(Next::RetryBudgetExhausted),
            span_id: Some("00f067aa0ba902b7".into()),
            offset_us: Some(1_234_567),
            input_tokens: Some(u32::MAX),
            output_tokens: Some(7),
            cost_micros: Some(i64::MIN),
            schema: Some(SchemaCheck::Repaired),
        };
        let cases: Vec<Vec<AttemptRecord>> = vec![
            vec![],
            vec![AttemptRecord::default()],
            vec![full.clone()],
            vec![
                full.clone(),
                AttemptRecord {
                    cost_micros: Some(42),
                    status: None,
                    ..AttemptRecord::default()
                },
                AttemptRecord {
                    cost_micros: Some(-5),
                    outcome: AttemptOutcome::Cancelled,
                    ..full
                },
            ],
        ];
        for attempts in cases {
            let ours = AttemptRecord::json_list(&attempts);
            assert_eq!(ours, serde_json::to_string(&attempts).unwrap());
            let back: Vec<AttemptRecord> = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, attempts);
        }
    }

    #[test]
    fn every_value_reads_back_from_its_text() {
        for endpoint in Endpoint::ALL {
            assert_eq!(endpoint.as_str().parse::<Endpoint>(), Ok(endpoint));
        }
        for next in Next::ALL {
            assert_eq!(next.as_str().parse::<Next>(), Ok(next));
        }
        for kind in ErrorKind::ALL {
            let outcome = AttemptOutcome::Failed(kind);
            assert_eq!(outcome.as_str().parse::<AttemptOutcome>(), Ok(outcome));
            assert_eq!(kind.code().parse::<ErrorCode>(), Ok(ErrorCode::Kind(kind)));
        }
        assert_eq!(
            "client_disconnected".parse::<ErrorCode>(),
            Ok(ErrorCode::ClientDisconnected)
        );
        assert!("bogus".parse::<AttemptOutcome>().is_err());
    }

    #[test]
    fn attempts_serialise_as_the_stored_text() {
        let attempt = AttemptRecord {
            deployment: "a".into(),
            provider: "p".into(),
            outcome: AttemptOutcome::Failed(ErrorKind::UpstreamTimeout),
            role: Some(Role::Fallback),
            next: Some(Next::RetryBudgetExhausted),
            ..AttemptRecord::default()
        };
        let json = serde_json::to_value(&attempt).unwrap();
        assert_eq!(json["outcome"], "upstream_timeout");
        assert_eq!(json["role"], "fallback");
        assert_eq!(json["next"], "retry_budget_exhausted");
        let back: AttemptRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, attempt);
    }
}
