//! Anthropic error bodies: `{"type":"error","error":{"type","message"}}`.
//!
//! `error.type` follows Anthropic's documented list: `invalid_request_error` (400, also used
//! for our unsupported parameters and upstream rejections), `authentication_error` (401),
//! `permission_error` (403), `not_found_error` (404), `request_too_large` (413),
//! `rate_limit_error` (429), `api_error` (500), `overloaded_error` (529) and `timeout_error`
//! (504, as the SDKs know it). Anthropic bodies have no `param` or `code`; the message carries
//! the field path.

use serde::Serialize;
use serde_json::Value;
use sluice_types::ErrorKind;

use crate::UpstreamError;
use crate::json;

/// The Anthropic `error.type` for a kind.
pub(super) fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::UnsupportedParameter
        | ErrorKind::MethodNotAllowed
        | ErrorKind::UpstreamRejected
        | ErrorKind::PolicyBlocked => "invalid_request_error",
        ErrorKind::Unauthenticated => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound | ErrorKind::UnknownPath => "not_found_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::RateLimited | ErrorKind::BudgetExceeded => "rate_limit_error",
        ErrorKind::UpstreamOverloaded
        | ErrorKind::RouteUnavailable
        | ErrorKind::PolicyUnavailable
        | ErrorKind::KeysUnavailable
        | ErrorKind::TooManyConnections => "overloaded_error",
        ErrorKind::UpstreamTimeout | ErrorKind::RequestTimeout => "timeout_error",
        ErrorKind::UpstreamMalformed
        | ErrorKind::UpstreamUnavailable
        | ErrorKind::SchemaViolation
        | ErrorKind::Internal => "api_error",
    }
}

/// The kind an upstream `error.type` stands for, used for errors inside a stream (the HTTP
/// status is already 200 there).
pub(super) fn kind_of(error_type: Option<&str>) -> ErrorKind {
    match error_type {
        Some("overloaded_error") => ErrorKind::UpstreamOverloaded,
        Some("api_error") => ErrorKind::UpstreamUnavailable,
        Some("rate_limit_error") => ErrorKind::RateLimited,
        Some("timeout_error") => ErrorKind::UpstreamTimeout,
        _ => ErrorKind::UpstreamRejected,
    }
}

#[derive(Serialize)]
pub(super) struct WireErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: WireErrorObject<'a>,
}

#[derive(Serialize)]
struct WireErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

impl<'a> WireErrorBody<'a> {
    pub(super) fn new(kind: ErrorKind, message: &'a str) -> Self {
        WireErrorBody {
            kind: "error",
            error: WireErrorObject {
                kind: error_type(kind),
                message,
            },
        }
    }
}

/// Renders an Anthropic-shaped error body.
pub fn encode_error(kind: ErrorKind, message: &str) -> Vec<u8> {
    json::to_vec(&WireErrorBody::new(kind, message))
}

/// Parses an upstream error body; `None` when it carries no recognisable error. Accepts the
/// documented shape and, tolerantly, a bare `{"error":{...}}` or `{"message":...}`.
pub fn decode_error(body: &[u8]) -> Option<UpstreamError> {
    let root: Value = serde_json::from_slice(body).ok()?;
    parse_error_value(&root)
}

pub(super) fn parse_error_value(root: &Value) -> Option<UpstreamError> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    match root.get("error") {
        Some(err @ Value::Object(_)) => Some(UpstreamError {
            message: text(err.get("message")).unwrap_or_default(),
            error_type: text(err.get("type")),
            code: None,
        }),
        Some(Value::String(message)) => Some(UpstreamError {
            message: message.clone(),
            error_type: None,
            code: None,
        }),
        _ => Some(UpstreamError {
            message: text(root.get("message"))?,
            error_type: text(root.get("type")).filter(|t| t != "error"),
            code: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_anthropic_shape() {
        let v: Value =
            serde_json::from_slice(&encode_error(ErrorKind::UpstreamOverloaded, "busy")).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        );
        assert_eq!(error_type(ErrorKind::PayloadTooLarge), "request_too_large");
        assert_eq!(
            error_type(ErrorKind::UnsupportedParameter),
            "invalid_request_error"
        );
        assert_eq!(error_type(ErrorKind::Internal), "api_error");
    }

    #[test]
    fn decodes_documented_and_bare_shapes() {
        let body = br#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"},"request_id":"req_1"}"#;
        assert_eq!(
            decode_error(body),
            Some(UpstreamError {
                message: "model: claude-x".into(),
                error_type: Some("not_found_error".into()),
                code: None
            })
        );
        assert_eq!(
            decode_error(br#"{"message":"nope"}"#).unwrap().message,
            "nope"
        );
        assert_eq!(decode_error(b"upstream connect error"), None);
    }

    #[test]
    fn stream_error_kinds() {
        assert_eq!(
            kind_of(Some("overloaded_error")),
            ErrorKind::UpstreamOverloaded
        );
        assert_eq!(kind_of(Some("api_error")), ErrorKind::UpstreamUnavailable);
        assert_eq!(
            kind_of(Some("invalid_request_error")),
            ErrorKind::UpstreamRejected
        );
        assert_eq!(kind_of(None), ErrorKind::UpstreamRejected);
    }
}
