//! What a route promises, as plain values built from configuration: how it picks among its
//! deployments ([`Strategy`]), when it moves on ([`Condition`]), how it retries
//! ([`RetryPolicy`]), how long it waits ([`RouteTimeouts`]), when it hedges ([`HedgePolicy`])
//! and how much live traffic it shadows to its fallbacks (`drill_share`).

use std::time::Duration;

use rand::Rng;
use sluice_providers::{ProviderError, Timeouts};

use crate::breaker::Outcome;
use sluice_types::Classify;

/// How a route orders the deployments of its pool for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In configured order: the first healthy deployment takes every request.
    Ordered,
    /// At random, in proportion to the configured weights.
    Weighted,
    /// The lowest EWMA latency first (time to first token for streams, total otherwise);
    /// deployments without a measurement yet go first, so each gets measured.
    LeastLatency,
    /// Two at random; the one with the lower expected wait (EWMA × (in flight + 1)) first.
    PowerOfTwo,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Ordered => "ordered",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least_latency",
            Strategy::PowerOfTwo => "power_of_two",
        }
    }

    pub fn parse(name: &str) -> Option<Strategy> {
        [
            Strategy::Ordered,
            Strategy::Weighted,
            Strategy::LeastLatency,
            Strategy::PowerOfTwo,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

pub use sluice_types::Condition;

impl Outcome {
    /// What a failed attempt tells the deployment's breaker: a failure when it says the
    /// deployment is unhealthy, nothing otherwise (a request refused for its content or size).
    pub fn of_failure(error: &ProviderError) -> Outcome {
        if error
            .condition()
            .is_some_and(Condition::is_deployment_fault)
        {
            Outcome::Failure
        } else {
            Outcome::Neutral
        }
    }
}

/// The set of conditions a route moves on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions(u16);

impl Conditions {
    pub fn new(conditions: impl IntoIterator<Item = Condition>) -> Conditions {
        Conditions(
            conditions
                .into_iter()
                .fold(0, |bits, c| bits | Self::bit(c)),
        )
    }

    fn bit(condition: Condition) -> u16 {
        1 << (condition as u16)
    }

    pub fn contains(self, condition: Condition) -> bool {
        self.0 & Self::bit(condition) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Condition> {
        Condition::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions::new(Condition::DEFAULT)
    }
}

/// Retries of one route: how many attempts, how long between them, and the budget that keeps
/// an outage from turning into a retry storm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request at most, the first and hedges included; `None`: one per
    /// deployment of the route.
    pub max_attempts: Option<u32>,
    /// Backoff before the second attempt on the same deployment; doubles each time.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A `Retry-After` longer than this is not waited for: the deployment is left for the
    /// request (and cooled down for everyone until then).
    pub retry_after_max: Duration,
    pub budget: BudgetPolicy,
}

impl Default for RetryPolicy {
    /// The defaults of the configuration file (docs/configuration.md).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: None,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            retry_after_max: Duration::from_secs(10),
            budget: BudgetPolicy {
                ratio: 0.2,
                window: Duration::from_secs(10),
                min_retries: 10,
            },
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential backoff before retry number `retry` (1 = the first retry) on a
    /// deployment already tried: uniform in `[0, min(max, initial × 2^(retry-1))]`, so that
    /// clients failing together do not come back together.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let exp = self
            .backoff_initial
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let ceiling = exp.min(self.backoff_max);
        if ceiling.is_zero() {
            return Duration::ZERO;
        }
        Duration::from_micros(rng.random_range(0..=ceiling.as_micros() as u64))
    }
}

/// Retries (and hedges) of a deployment are at most `ratio` of the requests it received over
/// `window`, plus `min_retries` per window so a quiet deployment can still retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetPolicy {
    pub ratio: f64,
    pub window: Duration,
    pub min_retries: u32,
}

/// When to send a second attempt while the first is still waiting for its first token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    /// Fixed delay; also used while the deployment has too few samples for `percentile`.
    pub after: Duration,
    /// Hedge at this percentile (0–100) of the deployment's recent time to first token.
    pub percentile: Option<f64>,
}

/// Timeouts of one route; a request may shorten (never lengthen) them with headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTimeouts {
    pub connect: Duration,
    /// Per attempt: until the response headers, and for streams the first event.
    pub first_token: Duration,
    /// Per attempt: between two stream events.
    pub idle: Duration,
    /// The whole request: every attempt, backoff and the stream to its end.
    pub total: Duration,
}

impl RouteTimeouts {
    /// The upstream client's timeouts for one call (`total` bounds reading a whole body).
    pub fn upstream(self) -> Timeouts {
        Timeouts {
            connect: self.connect,
            first_token: self.first_token,
            idle: self.idle,
            total: self.total,
        }
    }

    /// These timeouts, each shortened to a request's override when it asks for less.
    pub fn limited_by(self, overrides: &TimeoutOverrides) -> RouteTimeouts {
        let pick = |route: Duration, asked: Option<Duration>| asked.map_or(route, |a| a.min(route));
        RouteTimeouts {
            connect: self.connect,
            first_token: pick(self.first_token, overrides.first_token),
            idle: pick(self.idle, overrides.idle),
            total: pick(self.total, overrides.total),
        }
    }
}

/// Timeouts a request asked for (headers `x-sluice-timeout-ms`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutOverrides {
    pub first_token: Option<Duration>,
    pub idle: Option<Duration>,
    pub total: Option<Duration>,
}

/// Everything a route promises besides which deployments it has.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicy {
    pub strategy: Strategy,
    pub fallback_on: Conditions,
    pub retry: RetryPolicy,
    pub timeouts: RouteTimeouts,
    pub hedge: Option<HedgePolicy>,
    /// Share (0–1) of live requests also sent, in the background, to each fallback.
    pub drill_share: f64,
    /// Keep request and response bodies (redacted), each cut at this many bytes.
    pub log_bodies: Option<usize>,
}

impl RoutePolicy {
    /// A route with every default: deployments in order, the transient conditions, default
    /// retries, no hedging, no drills.
    pub fn ordered(timeouts: RouteTimeouts) -> RoutePolicy {
        RoutePolicy {
            strategy: Strategy::Ordered,
            fallback_on: Conditions::default(),
            retry: RetryPolicy::default(),
            timeouts,
            hedge: None,
            drill_share: 0.0,
            log_bodies: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use sluice_providers::RejectCause;
    use sluice_providers::TimeoutPhase;
    use sluice_types::ErrorKind;

    fn status(status: u16, kind: ErrorKind, cause: Option<RejectCause>) -> ProviderError {
        ProviderError::Status {
            provider: "p".into(),
            status,
            kind,
            message: "m".into(),
            retry_after: None,
            cause,
            quota_exhausted: false,
        }
    }

    #[test]
    fn failures_map_to_the_conditions_named_in_config() {
        let cases = [
            (
                status(429, ErrorKind::RateLimited, None),
                Some("rate_limited"),
            ),
            (
                status(500, ErrorKind::UpstreamUnavailable, None),
                Some("server_error"),
            ),
            (
                status(529, ErrorKind::UpstreamOverloaded, None),
                Some("overloaded"),
            ),
            (
                status(504, ErrorKind::UpstreamTimeout, None),
                Some("timeout"),
            ),
            (status(400, ErrorKind::UpstreamRejected, None), None),
            (
                status(
                    400,
                    ErrorKind::UpstreamRejected,
                    Some(RejectCause::ContextLengthExceeded),
                ),
                Some("context_length_exceeded"),
            ),
            (
                status(
                    400,
                    ErrorKind::UpstreamRejected,
                    Some(RejectCause::ContentFiltered),
                ),
                Some("content_filter"),
            ),
            (
                ProviderError::Truncated {
                    provider: "p".into(),
                },
                Some("malformed"),
            ),
            (
                ProviderError::Timeout {
                    provider: "p".into(),
                    phase: TimeoutPhase::FirstToken,
                },
                Some("timeout"),
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(
                error.condition().map(Condition::as_str),
                expected,
                "{error}"
            );
        }
    }

    #[test]
    fn conditions_parse_and_default_to_the_transient_ones() {
        for c in Condition::ALL {
            assert_eq!(Condition::parse(c.as_str()), Some(c));
        }
        let default = Conditions::default();
        assert!(default.contains(Condition::ServerError));
        assert!(!default.contains(Condition::ContextLengthExceeded));
        assert!(!default.contains(Condition::ContentFilter));
        assert!(default.contains(Condition::SchemaViolation));
        assert_eq!(default.iter().count(), 7);
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let policy = RetryPolicy {
            backoff_max: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (retry, ceiling_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let samples: Vec<Duration> =
                (0..200).map(|_| policy.backoff(retry, &mut rng)).collect();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(samples.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Jitter: the samples spread over the range instead of all waiting the same.
            assert!(samples.iter().any(|d| *d < ceiling / 4), "retry {retry}");
            assert!(
                samples.iter().any(|d| *d > ceiling * 3 / 4),
                "retry {retry}"
            );
        }
    }

    #[test]
    fn a_request_may_shorten_but_not_lengthen_the_route_timeouts() {
        let route = RouteTimeouts {
            connect: Duration::from_secs(1),
            first_token: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(60),
        };
        let limited = route.limited_by(&TimeoutOverrides {
            first_token: Some(Duration::from_secs(2)),
            idle: None,
            total: Some(Duration::from_secs(600)),
        });
        assert_eq!(limited.first_token, Duration::from_secs(2));
        assert_eq!(limited.idle, Duration::from_secs(30));
        assert_eq!(limited.total, Duration::from_secs(60));
    }
}
