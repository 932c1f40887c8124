//! The one error type of `sluice-policy` and its classification.
//!
//! A budget or rate-limit refusal is an expected outcome, not a fault: it is carried as
//! [`PolicyError::Refused`] so the pipeline can render a 429 from the [`Refusal`]'s typed data.
//! Everything else is a configuration problem (caught when settings are validated) or a counter
//! store failure, for which the pipeline chooses to fail open or closed.

use sluice_types::{Classify, ErrorKind, Origin};

use crate::budget::{AllocationProblem, Metric, Period, Scope};
use crate::counters::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A limit would be exceeded; nothing was reserved.
    #[error("{0}")]
    Refused(Box<Refusal>),

    /// A limit that cannot be enforced as written.
    #[error("invalid limit for {scope}: {problem}")]
    InvalidLimit { scope: Scope, problem: LimitProblem },

    /// Allocations that do not fit their parents, or a hierarchy that does not hold.
    #[error("invalid budget allocations: {}", list(.0))]
    InvalidAllocations(Vec<AllocationProblem>),

    /// A price entry (usually a config override) that cannot be charged.
    #[error("invalid price for model `{model}`: {problem}")]
    InvalidPrice {
        model: String,
        problem: PriceProblem,
    },

    /// In-process counters hold as many entries for the tenant's end users as they keep per
    /// tenant (`budgets.max_counters_per_tenant`); a reservation that needs a new one waits
    /// for old windows to end. Nothing was reserved.
    #[error(
        "tenant `{tenant}` has {limit} end-user budget counters in use, the most this gateway keeps per tenant; end users already counted are still served, new ones can be once older windows end"
    )]
    TooManyCounters { tenant: String, limit: usize },

    /// Two charges of one reservation target the same counter.
    #[error("two charges of one reservation use the counter `{key}`")]
    DuplicateCounter { key: String },

    /// The shared counter store failed or timed out.
    #[cfg(feature = "redis")]
    #[error("counter store: {0}")]
    CounterStore(#[from] redis::RedisError),

    /// The counter store did not answer within its timeout (`budgets.redis_timeout_ms`), or
    /// ran a reservation only after its deadline had passed (so it did not apply it).
    #[error("counter store: no answer within {} ms", .timeout.as_millis())]
    CounterTimeout { timeout: std::time::Duration },

    /// The counter store answered something the scripts never return.
    #[error("counter store returned an unexpected reply to {operation}")]
    UnexpectedReply { operation: &'static str },
}

/// What is wrong with a [`crate::budget::Limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitProblem {
    /// A budget in dollars below zero.
    NegativeAmount,
    /// Above [`crate::counters::MAX_COUNTER_AMOUNT`], which counters can add exactly.
    AmountTooLarge,
    /// A rolling window shorter than [`crate::budget::MIN_ROLLING`].
    RollingWindowTooShort,
    /// A rolling window longer than [`crate::budget::MAX_ROLLING`].
    RollingWindowTooLong,
}

impl std::fmt::Display for LimitProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitProblem::NegativeAmount => "the amount is negative",
            LimitProblem::AmountTooLarge => "the amount is too large to count exactly",
            LimitProblem::RollingWindowTooShort => "a rolling window must be at least 1 second",
            LimitProblem::RollingWindowTooLong => "a rolling window must be at most 366 days",
        })
    }
}

/// What is wrong with a [`crate::pricing::ModelPrice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceProblem {
    NegativeRate,
    /// A batch discount above 100 %.
    DiscountAbove100,
    /// Long-context rates that start at zero input tokens.
    ZeroLongContextThreshold,
}

impl std::fmt::Display for PriceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PriceProblem::NegativeRate => "a rate is negative",
            PriceProblem::DiscountAbove100 => "the batch discount is above 100%",
            PriceProblem::ZeroLongContextThreshold => "the long-context threshold is zero",
        })
    }
}

fn list(problems: &[AllocationProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Classify for PolicyError {
    fn kind(&self) -> ErrorKind {
        match self {
            // Spend, and tokens or requests per calendar period, are budgets; per rolling
            // window, rate limits. Both are answered 429.
            PolicyError::Refused(refusal) => match (refusal.limit.metric, refusal.limit.period) {
                (Metric::Usd, _) | (_, Period::Day | Period::Week | Period::Month) => {
                    ErrorKind::BudgetExceeded
                }
                (_, Period::Rolling(_)) => ErrorKind::RateLimited,
            },
            PolicyError::TooManyCounters { .. } => ErrorKind::RateLimited,
            PolicyError::InvalidLimit { .. }
            | PolicyError::InvalidAllocations(_)
            | PolicyError::InvalidPrice { .. }
            | PolicyError::DuplicateCounter { .. }
            | PolicyError::UnexpectedReply { .. } => ErrorKind::Internal,
            #[cfg(feature = "redis")]
            PolicyError::CounterStore(_) => ErrorKind::PolicyUnavailable,
            PolicyError::CounterTimeout { .. } => ErrorKind::PolicyUnavailable,
        }
    }

    fn origin(&self) -> Origin {
        match self {
            PolicyError::Refused(_) | PolicyError::TooManyCounters { .. } => Origin::Client,
            _ => Origin::Gateway,
        }
    }

    // No fallback condition (never retryable): another deployment draws on the same budget,
    // and a store failure is not the upstream's fault.

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            PolicyError::Refused(refusal) => Some(refusal.retry_after_secs()),
            // Expired entries are swept at most once a minute.
            PolicyError::TooManyCounters { .. } => Some(60),
            _ => None,
        }
    }
}
