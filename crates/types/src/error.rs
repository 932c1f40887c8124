//! Failure kinds shared by every crate. Each crate keeps its own `thiserror` enum and maps it
//! onto [`ErrorKind`] through [`Classify`]; `sluice-server` owns the only kind -> HTTP table.

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream,
    Gateway,
}

/// The closed set of failure kinds. Adding one breaks the exhaustive match in the server's
/// status table on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed JSON, wrong types, missing fields, invalid UTF-8.
    InvalidRequest,
    /// A well-formed parameter the chosen target cannot honour.
    UnsupportedParameter,
    /// No or unknown key.
    Unauthenticated,
    /// The key exists but may not do this (alias outside its scope, revoked, expired).
    PermissionDenied,
    /// Unknown model alias.
    NotFound,
    /// No such endpoint.
    UnknownPath,
    /// The endpoint exists but not for this HTTP method.
    MethodNotAllowed,
    /// The client did not send its request body in time.
    RequestTimeout,
    /// The client holds more connections than the gateway allows it, or the gateway is at
    /// its connection limit.
    TooManyConnections,
    /// Body over the configured limit.
    PayloadTooLarge,
    /// Rate limited (by the gateway or by the upstream).
    RateLimited,
    /// A spend or token budget of the caller's hierarchy has no room for the request.
    BudgetExceeded,
    /// The upstream refused the request as invalid (its 4xx other than auth and rate limit).
    UpstreamRejected,
    /// The upstream answered something we could not decode.
    UpstreamMalformed,
    /// The upstream failed, refused our credentials, or could not be reached.
    UpstreamUnavailable,
    /// The upstream said it is overloaded (503/529).
    UpstreamOverloaded,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// No deployment of the route can take the request now: every circuit is open or every
    /// queue is full. Answered at once instead of queueing without bound.
    RouteUnavailable,
    /// The budget and rate-limit counters could not be reached and policy says fail closed.
    PolicyUnavailable,
    /// A bug or an unexpected state inside the gateway.
    Internal,
}

impl ErrorKind {
    /// Stable snake_case code used in error bodies, records and metrics.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::UnsupportedParameter => "unsupported_parameter",
            ErrorKind::Unauthenticated => "invalid_api_key",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "model_not_found",
            ErrorKind::UnknownPath => "unknown_url",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::TooManyConnections => "too_many_connections",
            ErrorKind::PayloadTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_exceeded",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::UpstreamRejected => "upstream_rejected",
            ErrorKind::UpstreamMalformed => "upstream_malformed_response",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamOverloaded => "upstream_overloaded",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::RouteUnavailable => "route_unavailable",
            ErrorKind::PolicyUnavailable => "policy_unavailable",
            ErrorKind::Internal => "internal_error",
        }
    }
}

/// Implemented by every crate's error enum.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
    fn origin(&self) -> Origin;
    /// Whether another attempt (same or next deployment) may succeed. Routing reads this.
    fn retryable(&self) -> bool;
    /// Seconds the caller should wait, when the failure says so (Retry-After).
    fn retry_after_secs(&self) -> Option<u64> {
        None
    }
}
