//! The only table from failure kind to HTTP status, and error bodies in the caller's dialect
//! ([`ApiError`]) or, on the admin API, in our own shape ([`AdminError`]).
//!
//! The match below has no `_` arm on purpose: a new [`ErrorKind`] does not compile until it is
//! mapped here. 429 and 503 always carry `Retry-After`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use sluice_types::{Classify, Dialect, ErrorKind};

/// Seconds suggested to a client told to come back later when nobody said how long.
const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::UnsupportedParameter
        | ErrorKind::UpstreamRejected
        | ErrorKind::PolicyBlocked => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::NotFound | ErrorKind::UnknownPath => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::RateLimited | ErrorKind::BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::UpstreamMalformed
        | ErrorKind::UpstreamUnavailable
        | ErrorKind::SchemaViolation => StatusCode::BAD_GATEWAY,
        ErrorKind::UpstreamOverloaded
        | ErrorKind::RouteUnavailable
        | ErrorKind::PolicyUnavailable
        | ErrorKind::KeysUnavailable
        | ErrorKind::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, when known (`messages[0].content`).
    pub param: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    pub fn from_classified(error: &(impl Classify + std::fmt::Display), message: String) -> Self {
        ApiError {
            kind: error.kind(),
            message,
            param: None,
            retry_after: error.retry_after_secs(),
        }
    }

    pub fn status(&self) -> StatusCode {
        status_for(self.kind)
    }

    /// Renders the error in the dialect the client called.
    pub fn render(&self, dialect: Dialect) -> Response {
        let body = match dialect {
            Dialect::OpenAi => {
                sluice_wire::openai::encode_error(self.kind, &self.message, self.param.as_deref())
            }
            Dialect::Anthropic => sluice_wire::anthropic::encode_error(self.kind, &self.message),
        };
        let status = self.status();
        let mut response =
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            let secs = self.retry_after.unwrap_or(DEFAULT_RETRY_AFTER_SECS);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// An error of the admin API, in our own shape: `{"error": {"code": "...", "message": "..."}}`,
/// with the status of its kind.
#[derive(Debug, Clone)]
pub struct AdminError {
    pub kind: ErrorKind,
    /// Stable snake_case code: the kind's, unless a more precise one is given.
    pub code: &'static str,
    pub message: String,
}

impl AdminError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AdminError {
            kind,
            code: kind.code(),
            message: message.into(),
        }
    }

    /// The same error under a more precise code (`admin_api_disabled`).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// The same error, its message followed by `suffix`.
    pub fn with_message_suffix(mut self, suffix: &str) -> Self {
        self.message.push_str(suffix);
        self
    }

    pub fn status(&self) -> StatusCode {
        status_for(self.kind)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message },
        });
        let status = self.status();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(DEFAULT_RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// A refused row says why; a failure of the gateway is logged here, with its causes, and
/// answered without them.
impl From<sluice_pipeline::budgets::BudgetError> for AdminError {
    fn from(error: sluice_pipeline::budgets::BudgetError) -> Self {
        let kind = error.kind();
        if kind == ErrorKind::Internal {
            let mut chain = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                chain.push_str(": ");
                chain.push_str(&cause.to_string());
                source = cause.source();
            }
            tracing::error!(error = %chain, "admin budget change failed");
            let message = match error {
                sluice_pipeline::budgets::BudgetError::Reload(_) => error.to_string(),
                _ => "the budget store failed; see the gateway's log".to_owned(),
            };
            return AdminError::new(kind, message);
        }
        AdminError::new(kind, error.to_string())
    }
}

impl From<sluice_pipeline::PipelineError> for ApiError {
    fn from(error: sluice_pipeline::PipelineError) -> Self {
        // A key outside an alias's scope is told what a key would be told of an alias that does
        // not exist, word for word: a 403 would confirm to any key which aliases exist.
        if let sluice_pipeline::PipelineError::AliasNotAllowed(model) = error {
            let unknown = sluice_routing::RoutingError::UnknownAlias(model);
            return ApiError::from_classified(&unknown, unknown.to_string());
        }
        let message = error.client_message();
        let mut api = ApiError::from_classified(&error, message);
        // A parameter refused while encoding for the upstream is named, as in a decoding error.
        api.param = error.param();
        api
    }
}

impl From<sluice_wire::WireError> for ApiError {
    fn from(error: sluice_wire::WireError) -> Self {
        ApiError {
            kind: error.kind(),
            message: error.to_string(),
            param: error.param(),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_map_to_gateway_statuses() {
        assert_eq!(
            status_for(ErrorKind::UpstreamTimeout),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status_for(ErrorKind::UpstreamOverloaded),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_for(ErrorKind::UpstreamMalformed),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status_for(ErrorKind::UnsupportedParameter),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn admin_errors_have_our_shape_and_the_status_of_their_kind() {
        let response = AdminError::new(ErrorKind::Unauthenticated, "invalid admin token")
            .with_code("invalid_admin_token")
            .into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = AdminError::new(ErrorKind::InvalidRequest, "bad").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            AdminError::new(ErrorKind::InvalidRequest, "bad").code,
            "invalid_request"
        );
    }

    #[test]
    fn rate_limits_always_say_when_to_retry() {
        let response =
            ApiError::new(ErrorKind::RateLimited, "slow down").render(Dialect::Anthropic);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
