//! [`ProviderError`]: everything that can go wrong talking to an upstream, classified once
//! here so routing and rendering never guess.

use sluice_types::{Classify, Condition, ErrorKind, Origin};
use sluice_wire::WireError;

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// No response headers (or, for streams, no first event) in time.
    FirstToken,
    /// A stream went quiet for too long between events.
    Idle,
    /// The request as a whole (all attempts, the stream included) took too long.
    Total,
}

impl TimeoutPhase {
    fn as_str(self) -> &'static str {
        match self {
            TimeoutPhase::FirstToken => "time to first token",
            TimeoutPhase::Idle => "inter-chunk idle",
            TimeoutPhase::Total => "total",
        }
    }
}

/// A refusal another deployment may not share: a longer context window, another filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCause {
    ContextLengthExceeded,
    ContentFiltered,
}

impl RejectCause {
    /// Reads the cause from a decoded error body: OpenAI's `code`, else the message wording
    /// of OpenAI, Anthropic, Azure and the common compatible servers (vLLM, llama.cpp).
    pub(crate) fn of(error: &sluice_wire::UpstreamError) -> Option<RejectCause> {
        let code = error.code.as_deref().unwrap_or_default();
        let message = error.message.to_ascii_lowercase();
        if code == "context_length_exceeded"
            || message.contains("maximum context length")
            || message.contains("prompt is too long")
            || message.contains("context window")
            || message.contains("context length")
        {
            return Some(RejectCause::ContextLengthExceeded);
        }
        if matches!(code, "content_filter" | "content_policy_violation")
            || message.contains("content management policy")
            || message.contains("content filter")
        {
            return Some(RejectCause::ContentFiltered);
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request cannot be expressed for this provider (unsupported parameter, bad input).
    #[error(transparent)]
    Encode(WireError),
    /// The provider type does not offer this endpoint.
    #[error("provider `{provider}` ({kind}) does not support {endpoint}")]
    EndpointUnsupported {
        provider: String,
        kind: &'static str,
        endpoint: &'static str,
    },
    #[error("could not reach provider `{provider}`: {source}")]
    Connect {
        provider: String,
        source: reqwest::Error,
    },
    #[error("provider `{provider}` did not answer within the {} timeout", .phase.as_str())]
    Timeout {
        provider: String,
        phase: TimeoutPhase,
    },
    /// The provider answered an error status.
    #[error("provider `{provider}` answered {status}: {message}")]
    Status {
        provider: String,
        status: u16,
        kind: ErrorKind,
        message: String,
        retry_after: Option<u64>,
        /// Why the provider refused a request it could read, when its body says.
        cause: Option<RejectCause>,
        /// A 429 whose headers say the deployment's quota is spent for the window
        /// (`x-ratelimit-remaining-requests: 0` and the like), not only this request refused.
        quota_exhausted: bool,
    },
    /// The provider's answer could not be decoded.
    #[error("provider `{provider}` sent a malformed response: {detail}")]
    Malformed { provider: String, detail: String },
    /// The stream ended before its terminal event.
    #[error("provider `{provider}` ended the stream before it was complete")]
    Truncated { provider: String },
    /// A structured answer (a `response_format`, a forced tool) that is not JSON holding the
    /// requested schema, even after the gateway's repairs. `detail` says what is wrong with
    /// the model's output (never the schema or the prompt).
    #[error(
        "provider `{provider}` answered JSON that does not hold the requested schema: {detail}"
    )]
    SchemaViolation { provider: String, detail: String },
}

impl Classify for ProviderError {
    fn kind(&self) -> ErrorKind {
        match self {
            ProviderError::Encode(e) => e.kind(),
            ProviderError::EndpointUnsupported { .. } => ErrorKind::UnsupportedParameter,
            ProviderError::Connect { .. } | ProviderError::Truncated { .. } => {
                ErrorKind::UpstreamUnavailable
            }
            ProviderError::Timeout { .. } => ErrorKind::UpstreamTimeout,
            ProviderError::Status { kind, .. } => *kind,
            ProviderError::Malformed { .. } => ErrorKind::UpstreamMalformed,
            ProviderError::SchemaViolation { .. } => ErrorKind::SchemaViolation,
        }
    }

    fn origin(&self) -> Origin {
        match self {
            ProviderError::Encode(e) => e.origin(),
            ProviderError::EndpointUnsupported { .. } => Origin::Client,
            _ => Origin::Upstream,
        }
    }

    fn condition(&self) -> Option<Condition> {
        if let Some(cause) = self.cause() {
            return Some(match cause {
                RejectCause::ContextLengthExceeded => Condition::ContextLengthExceeded,
                RejectCause::ContentFiltered => Condition::ContentFilter,
            });
        }
        match self {
            // A request this deployment's dialect cannot carry is refused, not moved on from.
            ProviderError::Encode(_) | ProviderError::EndpointUnsupported { .. } => None,
            ProviderError::Connect { .. } => Some(Condition::ConnectError),
            ProviderError::Timeout { .. } => Some(Condition::Timeout),
            ProviderError::Malformed { .. } | ProviderError::Truncated { .. } => {
                Some(Condition::Malformed)
            }
            ProviderError::SchemaViolation { .. } => Some(Condition::SchemaViolation),
            ProviderError::Status { kind, .. } => match kind {
                ErrorKind::RateLimited => Some(Condition::RateLimited),
                ErrorKind::UpstreamOverloaded => Some(Condition::Overloaded),
                ErrorKind::UpstreamTimeout => Some(Condition::Timeout),
                ErrorKind::UpstreamUnavailable | ErrorKind::UpstreamMalformed => {
                    Some(Condition::ServerError)
                }
                _ => None,
            },
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl ProviderError {
    /// Why the provider refused the request, when it said.
    pub fn cause(&self) -> Option<RejectCause> {
        match self {
            ProviderError::Status { cause, .. } => *cause,
            _ => None,
        }
    }

    /// Whether the provider said its quota is spent for everyone (a 429 with a remaining
    /// count of 0), rather than refusing this request alone.
    pub fn quota_exhausted(&self) -> bool {
        matches!(
            self,
            ProviderError::Status {
                quota_exhausted: true,
                ..
            }
        )
    }

    /// The upstream HTTP status, when the provider answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Status { status, .. } => Some(*status),
            // It answered; the answer did not hold its schema.
            ProviderError::SchemaViolation { .. } => Some(200),
            _ => None,
        }
    }

    /// What the client may be told. Upstream error bodies are never passed on; for a request the
    /// provider rejected as invalid, its message is, since only it explains what to fix, scrubbed
    /// of secrets it may echo (keys, URLs with credentials, database URLs). Never the gateway's
    /// internals: a provider that could not be reached is named, its base URL is not (the log
    /// line of the failure has it).
    pub fn client_message(&self) -> String {
        let message = self.unscrubbed_client_message();
        sluice_dlp::secrets::redact(&message).into_owned()
    }

    fn unscrubbed_client_message(&self) -> String {
        match self {
            ProviderError::Connect { provider, .. } => {
                format!("could not reach provider `{provider}`")
            }
            ProviderError::Status {
                kind: ErrorKind::UpstreamRejected,
                message,
                ..
            } => message.clone(),
            ProviderError::Status {
                provider,
                status,
                kind,
                message,
                ..
            } => match kind {
                ErrorKind::RateLimited => {
                    format!("provider `{provider}` is rate limiting requests")
                }
                ErrorKind::UpstreamOverloaded => format!("provider `{provider}` is overloaded"),
                // A server error often says what in the request it choked on (compatible
                // servers answer 500 to input they cannot template or parse): its first line,
                // bounded (and scrubbed of secrets by the caller). A 401/403 is about the
                // gateway's own credentials, not the request: nothing of it is passed on.
                _ if *status >= 500 => match reason(message) {
                    Some(reason) => {
                        format!("provider `{provider}` failed with status {status}: {reason}")
                    }
                    None => format!("provider `{provider}` failed with status {status}"),
                },
                _ => format!("provider `{provider}` failed with status {status}"),
            },
            other => other.to_string(),
        }
    }
}

/// Characters of an upstream's failure message passed on to clients at most.
const REASON_CHARS: usize = 200;

/// The first line of an upstream's failure message, bounded; `None` when it says nothing.
fn reason(message: &str) -> Option<String> {
    let line = message.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut reason: String = line.chars().take(REASON_CHARS).collect();
    if reason.len() < line.len() {
        reason.push('…');
    }
    Some(reason)
}

/// Maps an upstream error status onto a kind. A 401/403 means the gateway's own provider
/// credentials were refused: the client's request was fine, so it is an upstream failure
/// (one another deployment may not share).
pub(crate) fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::UpstreamOverloaded,
        408 | 504 => ErrorKind::UpstreamTimeout,
        401 | 403 => ErrorKind::UpstreamUnavailable,
        400..=499 => ErrorKind::UpstreamRejected,
        _ => ErrorKind::UpstreamUnavailable,
    }
}

/// Whether a 429's headers say the quota is spent for the window: OpenAI's
/// `x-ratelimit-remaining-requests` / `-tokens`, Anthropic's
/// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`, at 0.
pub(crate) fn quota_exhausted(status: u16, headers: &http::HeaderMap) -> bool {
    const REMAINING: [&str; 6] = [
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-output-tokens-remaining",
    ];
    status == 429
        && REMAINING.iter().any(|name| {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "0")
        })
}

/// Reads `Retry-After` as whole seconds (the HTTP-date form is rare from LLM APIs and is
/// ignored), falling back to OpenAI's `retry-after-ms`.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<u64> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(secs) = text("retry-after").and_then(|v| v.parse::<f64>().ok()) {
        return Some(secs.max(0.0).ceil() as u64);
    }
    text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| (ms.max(0.0) / 1000.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, message: &str) -> ProviderError {
        ProviderError::Status {
            provider: "local".into(),
            status,
            kind: kind_for_status(status),
            message: message.into(),
            retry_after: None,
            cause: None,
            quota_exhausted: false,
        }
    }

    #[test]
    fn a_server_error_passes_on_the_first_line_of_its_reason_bounded_and_scrubbed() {
        let err = status(
            500,
            "Failed to apply the chat template: unexpected role 'tool'\n  at template.cc:41\n",
        );
        assert_eq!(
            err.client_message(),
            "provider `local` failed with status 500: Failed to apply the chat template: \
             unexpected role 'tool'"
        );
        let long = status(500, &"x".repeat(1_000));
        assert!(long.client_message().ends_with('…'));
        assert!(long.client_message().len() < 300);
        let leaky = status(
            502,
            "upstream postgres://admin:hunter2@db.internal/prod is down",
        );
        assert!(
            !leaky.client_message().contains("hunter2"),
            "{}",
            leaky.client_message()
        );
        assert_eq!(
            status(500, "  ").client_message(),
            "provider `local` failed with status 500"
        );
        // Our own credentials refused: the request was fine, nothing of the answer goes out.
        assert_eq!(
            status(401, "Incorrect API key provided").client_message(),
            "provider `local` failed with status 401"
        );
    }

    #[test]
    fn a_429_with_no_quota_left_is_the_deployments_not_the_requests() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, http::HeaderValue::from_static(value));
            }
            map
        };
        let spent = headers(&[("x-ratelimit-remaining-requests", "0")]);
        assert!(quota_exhausted(429, &spent));
        assert!(!quota_exhausted(503, &spent));
        assert!(quota_exhausted(
            429,
            &headers(&[("anthropic-ratelimit-output-tokens-remaining", "0")])
        ));
        assert!(!quota_exhausted(
            429,
            &headers(&[("x-ratelimit-remaining-requests", "12")])
        ));
        assert!(!quota_exhausted(429, &headers(&[])));
    }

    #[test]
    fn a_rejections_message_reaches_the_client_scrubbed_of_secrets() {
        let error = ProviderError::Status {
            provider: "openai".into(),
            status: 400,
            kind: ErrorKind::UpstreamRejected,
            message: "bad key sk-proj-abcdefghijklmnop0123 given".into(),
            retry_after: None,
            cause: None,
            quota_exhausted: false,
        };
        assert_eq!(
            error.client_message(),
            "bad key [redacted provider_key] given"
        );
    }
}
