//! [`WireError`], the one error type of this crate, and [`UpstreamError`], the parsed error body
//! an upstream sent.
//!
//! Errors from decoding a *client* body name the offending field by path
//! (`messages[2].content[0].type`) and classify as `InvalidRequest` / `UnsupportedParameter`
//! with origin `Client`. Errors from decoding an *upstream* body or stream are wrapped in
//! [`WireError::UpstreamMalformed`] / [`WireError::MalformedStream`] and classify as
//! `UpstreamMalformed` with origin `Upstream`.

use sluice_types::{Classify, Dialect, ErrorKind, Origin};

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The body is not UTF-8. `offset` is the first invalid byte.
    #[error("body is not valid UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },

    /// The body is not JSON at all.
    #[error("body is not valid JSON: {0}")]
    MalformedJson(#[source] serde_json::Error),

    /// A required field is absent.
    #[error("`{path}` is required")]
    MissingField { path: String },

    /// A field has the wrong JSON type.
    #[error("`{path}`: expected {expected}, found {found}")]
    InvalidType {
        path: String,
        expected: &'static str,
        found: &'static str,
    },

    /// A body did not have the shape a typed decoder expects; `detail` is the decoder's words.
    #[error("`{path}`: {detail}")]
    InvalidShape { path: String, detail: String },

    /// A string field holds a value outside its enumeration.
    #[error("`{path}`: unknown value `{value}`, expected one of: {}", .expected.join(", "))]
    UnknownValue {
        path: String,
        value: String,
        expected: &'static [&'static str],
    },

    /// A field has the right type but an unacceptable value.
    #[error("`{path}` {reason}")]
    InvalidValue { path: String, reason: &'static str },

    /// A well-formed input feature Sluice cannot carry to any provider (audio input, files,
    /// server tools, thinking blocks, ...). `value` is the type or field name.
    #[error("`{path}`: `{value}` is not supported")]
    UnsupportedInput { path: String, value: String },

    /// A parameter the target dialect cannot honour. Raised while encoding, before any I/O, so
    /// another deployment with a different dialect may still take the request.
    #[error("`{param}` is not supported when sending to {}", .target.as_str())]
    Unsupported { param: String, target: Dialect },

    /// A request the target dialect cannot express at all, with the reason. Raised while
    /// encoding, like [`WireError::Unsupported`].
    #[error("`{param}` cannot be sent to {}: {reason}", .target.as_str())]
    Untranslatable {
        param: String,
        target: Dialect,
        reason: &'static str,
    },

    /// The upstream event stream broke the SSE framing (invalid UTF-8, oversized event).
    #[error("malformed event stream: {reason}")]
    MalformedStream { reason: &'static str },

    /// An upstream body or stream chunk did not have the dialect's shape. The source says where.
    #[error("upstream sent a malformed response")]
    UpstreamMalformed(#[source] Box<WireError>),
}

impl WireError {
    /// The request field at fault, for the OpenAI error body's `param`: the path of a client
    /// decoding error or the refused parameter. `None` for body-level and upstream errors.
    pub fn param(&self) -> Option<String> {
        match self {
            WireError::MissingField { path }
            | WireError::InvalidType { path, .. }
            | WireError::InvalidShape { path, .. }
            | WireError::UnknownValue { path, .. }
            | WireError::InvalidValue { path, .. }
            | WireError::UnsupportedInput { path, .. } => Some(path.clone()),
            WireError::Unsupported { param, .. } | WireError::Untranslatable { param, .. } => {
                Some(param.clone())
            }
            WireError::InvalidUtf8 { .. }
            | WireError::MalformedJson(_)
            | WireError::MalformedStream { .. }
            | WireError::UpstreamMalformed(_) => None,
        }
    }

    /// Re-labels a decoding error as the upstream's fault.
    pub(crate) fn upstream(self) -> Self {
        match self {
            WireError::UpstreamMalformed(_) | WireError::MalformedStream { .. } => self,
            other => WireError::UpstreamMalformed(Box::new(other)),
        }
    }
}

#[cfg(test)]
impl WireError {
    /// What an [`WireError::UpstreamMalformed`] wraps, in words (panics on any other error).
    pub(crate) fn upstream_cause(&self) -> String {
        match self {
            WireError::UpstreamMalformed(inner) => inner.to_string(),
            other => panic!("not an upstream error: {other:?}"),
        }
    }
}

impl Classify for WireError {
    fn kind(&self) -> ErrorKind {
        match self {
            WireError::InvalidUtf8 { .. }
            | WireError::MalformedJson(_)
            | WireError::MissingField { .. }
            | WireError::InvalidType { .. }
            | WireError::InvalidShape { .. }
            | WireError::UnknownValue { .. }
            | WireError::InvalidValue { .. } => ErrorKind::InvalidRequest,
            WireError::UnsupportedInput { .. }
            | WireError::Unsupported { .. }
            | WireError::Untranslatable { .. } => ErrorKind::UnsupportedParameter,
            WireError::MalformedStream { .. } | WireError::UpstreamMalformed(_) => {
                ErrorKind::UpstreamMalformed
            }
        }
    }

    fn origin(&self) -> Origin {
        match self {
            WireError::MalformedStream { .. } | WireError::UpstreamMalformed(_) => Origin::Upstream,
            _ => Origin::Client,
        }
    }
}

/// An error body an upstream sent, parsed tolerantly (see each dialect's `decode_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub message: String,
    /// OpenAI `error.type` / Anthropic `error.type`, when present.
    pub error_type: Option<String>,
    /// OpenAI `error.code` (a string, or a number rendered as text), when present.
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_classify_as_invalid_request() {
        let err = WireError::MissingField {
            path: "model".into(),
        };
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert_eq!(err.origin(), Origin::Client);
        assert!(!err.retryable());
        assert_eq!(err.to_string(), "`model` is required");
    }

    #[test]
    fn unsupported_is_refused_not_moved_on_from() {
        let err = WireError::Unsupported {
            param: "top_k".into(),
            target: Dialect::OpenAi,
        };
        assert_eq!(err.kind(), ErrorKind::UnsupportedParameter);
        // No `fallback_on` condition names it: the client is told what to change.
        assert!(!err.retryable());
        assert_eq!(
            err.to_string(),
            "`top_k` is not supported when sending to openai"
        );
    }

    #[test]
    fn param_names_the_field_for_client_errors_only() {
        let err = WireError::UnsupportedInput {
            path: "messages[1].content[0].type".into(),
            value: "input_audio".into(),
        };
        assert_eq!(err.param().as_deref(), Some("messages[1].content[0].type"));
        let err = WireError::Unsupported {
            param: "seed".into(),
            target: Dialect::Anthropic,
        };
        assert_eq!(err.param().as_deref(), Some("seed"));
        let upstream = WireError::MissingField {
            path: "choices".into(),
        }
        .upstream();
        assert_eq!(upstream.param(), None);
    }

    #[test]
    fn upstream_wrapping_is_idempotent() {
        let err = WireError::MissingField {
            path: "choices".into(),
        }
        .upstream()
        .upstream();
        assert_eq!(err.kind(), ErrorKind::UpstreamMalformed);
        assert_eq!(err.origin(), Origin::Upstream);
        let WireError::UpstreamMalformed(inner) = err else {
            panic!("not wrapped")
        };
        assert!(matches!(*inner, WireError::MissingField { .. }));
    }

    #[test]
    fn unknown_value_lists_expected() {
        let err = WireError::UnknownValue {
            path: "messages[0].role".into(),
            value: "robot".into(),
            expected: &["user", "assistant"],
        };
        assert_eq!(
            err.to_string(),
            "`messages[0].role`: unknown value `robot`, expected one of: user, assistant"
        );
    }
}
