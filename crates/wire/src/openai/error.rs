//! OpenAI error bodies: `{"error":{"message","type","param","code"}}`.
//!
//! [`encode_error`] renders a gateway error the way api.openai.com would: `type` is what the
//! real API sends for that class of failure (it uses `invalid_request_error` for every 4xx
//! except rate limits, including bad keys and missing permissions; `requests` for request-rate
//! limits; `server_error` for 5xx), and `code` is Sluice's stable [`ErrorKind::code`], which for
//! the common cases equals OpenAI's (`invalid_api_key`, `model_not_found`,
//! `rate_limit_exceeded`). SDKs pick their exception class from the HTTP status, not from
//! `type`.
//!
//! [`decode_error`] reads upstream error bodies tolerantly: the OpenAI shape, plus the shapes
//! compatible servers use (`{"error":"text"}`, `{"detail":...}` from FastAPI-based servers,
//! `{"message":...}`, vLLM's `{"object":"error","message",...}`).

use serde::Serialize;
use serde_json::Value;
use sluice_types::ErrorKind;

use crate::UpstreamError;
use crate::json;

/// The OpenAI `error.type` for a kind.
pub(super) fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::UnsupportedParameter
        | ErrorKind::Unauthenticated
        | ErrorKind::PermissionDenied
        | ErrorKind::NotFound
        | ErrorKind::UnknownPath
        | ErrorKind::MethodNotAllowed
        | ErrorKind::RequestTimeout
        | ErrorKind::PayloadTooLarge
        | ErrorKind::UpstreamRejected
        | ErrorKind::PolicyBlocked => "invalid_request_error",
        ErrorKind::RateLimited => "requests",
        // What api.openai.com answers when an account's quota or budget is spent.
        ErrorKind::BudgetExceeded => "insufficient_quota",
        ErrorKind::UpstreamMalformed
        | ErrorKind::UpstreamUnavailable
        | ErrorKind::SchemaViolation
        | ErrorKind::UpstreamOverloaded
        | ErrorKind::UpstreamTimeout
        | ErrorKind::RouteUnavailable
        | ErrorKind::PolicyUnavailable
        | ErrorKind::KeysUnavailable
        | ErrorKind::TooManyConnections
        | ErrorKind::Internal => "server_error",
    }
}

#[derive(Serialize)]
struct WireErrorBody<'a> {
    error: WireErrorObject<'a>,
}

#[derive(Serialize)]
struct WireErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: &'static str,
}

/// Renders an OpenAI-shaped error body. `param` names the offending request field, if any.
pub fn encode_error(kind: ErrorKind, message: &str, param: Option<&str>) -> Vec<u8> {
    json::to_vec(&WireErrorBody {
        error: WireErrorObject {
            message,
            kind: error_type(kind),
            param,
            code: kind.code(),
        },
    })
}

/// Parses an upstream error body; `None` when it carries no recognisable message.
pub fn decode_error(body: &[u8]) -> Option<UpstreamError> {
    let root: Value = serde_json::from_slice(body).ok()?;
    parse_error_value(&root)
}

/// Shared with the stream decoder, which sees the same shapes inside `data:` lines.
pub(super) fn parse_error_value(root: &Value) -> Option<UpstreamError> {
    let obj = root.as_object()?;
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    match obj.get("error") {
        Some(Value::Object(err)) => {
            return Some(UpstreamError {
                message: text(err.get("message")).unwrap_or_default(),
                error_type: text(err.get("type")),
                code: text(err.get("code")),
            });
        }
        Some(Value::String(message)) => {
            return Some(UpstreamError {
                message: message.clone(),
                error_type: text(obj.get("type")),
                code: text(obj.get("code")),
            });
        }
        _ => {}
    }
    if let Some(detail) = obj.get("detail") {
        // FastAPI: a string, or a list of validation errors with `msg`.
        let message = match detail {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.get("msg").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        return Some(UpstreamError {
            message,
            error_type: None,
            code: None,
        });
    }
    let message = text(obj.get("message"))?;
    Some(UpstreamError {
        message,
        error_type: text(obj.get("type")),
        code: text(obj.get("code")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_openai_shape() {
        let body = encode_error(ErrorKind::InvalidRequest, "bad", Some("messages"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": "invalid_request"}})
        );
        let v: Value =
            serde_json::from_slice(&encode_error(ErrorKind::RateLimited, "slow down", None))
                .unwrap();
        assert_eq!(v["error"]["type"], "requests");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["param"], Value::Null);
        assert_eq!(error_type(ErrorKind::UpstreamOverloaded), "server_error");
        assert_eq!(
            error_type(ErrorKind::Unauthenticated),
            "invalid_request_error"
        );
    }

    #[test]
    fn decodes_openai_and_compatible_shapes() {
        let openai = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        assert_eq!(
            decode_error(openai),
            Some(UpstreamError {
                message: "Incorrect API key provided".into(),
                error_type: Some("invalid_request_error".into()),
                code: Some("invalid_api_key".into()),
            })
        );
        assert_eq!(
            decode_error(br#"{"error":"model not found"}"#)
                .unwrap()
                .message,
            "model not found"
        );
        assert_eq!(
            decode_error(br#"{"detail":"Not Found"}"#).unwrap().message,
            "Not Found"
        );
        assert_eq!(
            decode_error(br#"{"detail":[{"loc":["body"],"msg":"field required"}]}"#)
                .unwrap()
                .message,
            "field required"
        );
        let vllm = br#"{"object":"error","message":"max_tokens too large","type":"BadRequestError","param":null,"code":400}"#;
        let e = decode_error(vllm).unwrap();
        assert_eq!(
            (e.message.as_str(), e.code.as_deref()),
            ("max_tokens too large", Some("400"))
        );
        assert_eq!(decode_error(b"<html>502</html>"), None);
        assert_eq!(decode_error(br#"{"ok":true}"#), None);
    }
}
