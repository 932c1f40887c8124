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
    /// The upstream's answer to a structured request (`response_format`, a forced tool) is not
    /// JSON that holds the requested schema, even after the gateway's repairs.
    SchemaViolation,
    /// No deployment of the route can take the request now: every circuit is open or every
    /// queue is full. Answered at once instead of queueing without bound.
    RouteUnavailable,
    /// The budget and rate-limit counters could not be reached and policy says fail closed.
    PolicyUnavailable,
    /// The key could not be checked: the store cannot be reached, and the key is not among
    /// those it last confirmed.
    KeysUnavailable,
    /// A policy of the route refused the request or stopped the answer (a prompt over the
    /// route's size bound, ...).
    PolicyBlocked,
    /// A bug or an unexpected state inside the gateway.
    Internal,
}

impl ErrorKind {
    /// Every kind, for reading codes back.
    pub const ALL: [ErrorKind; 23] = [
        ErrorKind::InvalidRequest,
        ErrorKind::UnsupportedParameter,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::UnknownPath,
        ErrorKind::MethodNotAllowed,
        ErrorKind::RequestTimeout,
        ErrorKind::TooManyConnections,
        ErrorKind::PayloadTooLarge,
        ErrorKind::RateLimited,
        ErrorKind::BudgetExceeded,
        ErrorKind::UpstreamRejected,
        ErrorKind::UpstreamMalformed,
        ErrorKind::UpstreamUnavailable,
        ErrorKind::UpstreamOverloaded,
        ErrorKind::UpstreamTimeout,
        ErrorKind::SchemaViolation,
        ErrorKind::RouteUnavailable,
        ErrorKind::PolicyUnavailable,
        ErrorKind::KeysUnavailable,
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
            ErrorKind::SchemaViolation => "schema_violation",
            ErrorKind::RouteUnavailable => "route_unavailable",
            ErrorKind::PolicyUnavailable => "policy_unavailable",
            ErrorKind::KeysUnavailable => "keys_unavailable",
            ErrorKind::PolicyBlocked => "policy_blocked",
            ErrorKind::Internal => "internal_error",
        }
    }
}

/// Implemented by every crate's error enum: the one place a failure says what it is, where it
/// came from and whether another attempt may fix it. Routing, breakers and rendering read it;
/// nothing else guesses.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
    fn origin(&self) -> Origin;
    /// The condition a failed attempt meets, as routes name it in `fallback_on`; `None` for
    /// failures no other attempt can fix (a request the gateway or the provider found invalid).
    fn condition(&self) -> Option<Condition> {
        None
    }
    /// Whether another attempt (the same deployment or another) may succeed.
    fn retryable(&self) -> bool {
        self.condition().is_some()
    }
    /// Seconds the caller should wait, when the failure says so (Retry-After).
    fn retry_after_secs(&self) -> Option<u64> {
        None
    }
}

/// A failure that may send a request on to another attempt, named as in `fallback_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// 429.
    RateLimited,
    /// 5xx other than 503/529/504, and 401/403 (our provider credentials refused).
    ServerError,
    /// 503 / 529.
    Overloaded,
    /// Connect, first-token, idle or total timeout; 408 / 504.
    Timeout,
    /// The provider could not be reached.
    ConnectError,
    /// An answer that could not be decoded, or a stream that stopped before its first event.
    Malformed,
    /// The prompt does not fit the model's context window.
    ContextLengthExceeded,
    /// The provider's content filter refused the request or the answer.
    ContentFilter,
    /// A structured answer that is not JSON for the requested schema, even after repair.
    SchemaViolation,
}

impl Condition {
    pub const ALL: [Condition; 9] = [
        Condition::RateLimited,
        Condition::ServerError,
        Condition::Overloaded,
        Condition::Timeout,
        Condition::ConnectError,
        Condition::Malformed,
        Condition::ContextLengthExceeded,
        Condition::ContentFilter,
        Condition::SchemaViolation,
    ];

    /// The failures a route moves on from unless told otherwise: the transient ones, and a
    /// structured answer that does not hold its schema (another sample or deployment may).
    /// Context length and content filter are opt-in: moving on from them changes what the
    /// client gets.
    pub const DEFAULT: [Condition; 7] = [
        Condition::RateLimited,
        Condition::ServerError,
        Condition::Overloaded,
        Condition::Timeout,
        Condition::ConnectError,
        Condition::Malformed,
        Condition::SchemaViolation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RateLimited => "rate_limited",
            Condition::ServerError => "server_error",
            Condition::Overloaded => "overloaded",
            Condition::Timeout => "timeout",
            Condition::ConnectError => "connect_error",
            Condition::Malformed => "malformed",
            Condition::ContextLengthExceeded => "context_length_exceeded",
            Condition::ContentFilter => "content_filter",
            Condition::SchemaViolation => "schema_violation",
        }
    }

    pub fn parse(name: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether trying the *same* deployment again may help. A refusal for context length or
    /// content does not change on a second try; only another deployment can differ.
    pub fn same_deployment_may_recover(self) -> bool {
        !matches!(
            self,
            Condition::ContextLengthExceeded | Condition::ContentFilter
        )
    }

    /// Whether the failure says the deployment is unhealthy (counts against its breaker). A
    /// schema violation is about one answer to one schema, not the deployment's health.
    pub fn is_deployment_fault(self) -> bool {
        self.same_deployment_may_recover() && self != Condition::SchemaViolation
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
            | ErrorKind::MethodNotAllowed
            | ErrorKind::RequestTimeout
            | ErrorKind::TooManyConnections
            | ErrorKind::PayloadTooLarge
            | ErrorKind::RateLimited
            | ErrorKind::BudgetExceeded
            | ErrorKind::UpstreamRejected
            | ErrorKind::UpstreamMalformed
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamOverloaded
            | ErrorKind::UpstreamTimeout
            | ErrorKind::SchemaViolation
            | ErrorKind::RouteUnavailable
            | ErrorKind::PolicyUnavailable
            | ErrorKind::KeysUnavailable
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
