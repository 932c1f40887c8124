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
    /// A policy of the route refused the request or stopped the answer (a prompt over the
    /// route's size bound, ...).
    PolicyBlocked,
    /// A bug or an unexpected state inside the gateway.
    Internal,
}

impl ErrorKind {
    /// Every kind, for reading codes back.
    pub const ALL: [ErrorKind; 18] = [
        ErrorKind::InvalidRequest,
        ErrorKind::UnsupportedParameter,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::UnknownPath,
        ErrorKind::PayloadTooLarge,
        ErrorKind::RateLimited,
        ErrorKind::BudgetExceeded,
        ErrorKind::UpstreamRejected,
        ErrorKind::UpstreamMalformed,
        ErrorKind::UpstreamUnavailable,
        ErrorKind::UpstreamOverloaded,
        ErrorKind::UpstreamTimeout,
        ErrorKind::RouteUnavailable,
        ErrorKind::PolicyUnavailable,
        ErrorKind::PolicyBlocked,
        ErrorKind::Internal,
    ];

    /// Stable snake_case code used in error bodies, records and metrics.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::UnsupportedParameter => "unsupported_parameter",
            ErrorKind::Unauthenticated => "invalid_api_key",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "model_not_found",
            ErrorKind::UnknownPath => "unknown_url",
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
            ErrorKind::PolicyBlocked => "policy_blocked",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_kind_once() {
        // A new kind must be added to `ALL`: this match fails to compile until it is handled.
        let listed = |kind: ErrorKind| match kind {
            ErrorKind::InvalidRequest
            | ErrorKind::UnsupportedParameter
            | ErrorKind::Unauthenticated
            | ErrorKind::PermissionDenied
            | ErrorKind::NotFound
            | ErrorKind::UnknownPath
            | ErrorKind::PayloadTooLarge
            | ErrorKind::RateLimited
            | ErrorKind::BudgetExceeded
            | ErrorKind::UpstreamRejected
            | ErrorKind::UpstreamMalformed
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamOverloaded
            | ErrorKind::UpstreamTimeout
            | ErrorKind::RouteUnavailable
            | ErrorKind::PolicyUnavailable
            | ErrorKind::PolicyBlocked
            | ErrorKind::Internal => ErrorKind::ALL.contains(&kind),
        };
        assert!(ErrorKind::ALL.into_iter().all(listed));
        let mut codes: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
    }
}
