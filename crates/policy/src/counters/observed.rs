//! [`ObservedCounters`]: any [`Counters`] with its failures counted and logged at a bounded
//! rate. When the counter store is down every request fails the same way; one warning every
//! [`LOG_INTERVAL`] (with the number left out) says so as well as a thousand would, and the
//! count goes to `/metrics` (`sluice_counter_errors_total`). Refusals (a limit with no room)
//! are answers, not failures, and are not counted here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_types::LogThrottle;

use super::{CounterFuture, Counters, Hold, Restore};
use crate::budget::{Consumption, Limit};
use crate::calendar::UnixMs;
use crate::error::PolicyError;

/// The most often a counter failure is logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How many counter operations failed, since start, and whether the last one did. Cloning
/// shares them.
#[derive(Debug, Clone, Default)]
pub struct CounterErrors(Arc<(AtomicU64, AtomicBool)>);

impl CounterErrors {
    pub fn get(&self) -> u64 {
        self.0.0.load(Ordering::Relaxed)
    }

    /// The last counter operation failed: budgets are applied per `budgets.on_counter_error`.
    pub fn failing(&self) -> bool {
        self.0.1.load(Ordering::Relaxed)
    }
}

/// Counters whose failures are counted in [`CounterErrors`] and logged at most once per
/// [`LOG_INTERVAL`].
pub struct ObservedCounters {
    inner: Arc<dyn Counters>,
    errors: CounterErrors,
    log: LogThrottle,
}

impl ObservedCounters {
    pub fn new(inner: Arc<dyn Counters>) -> ObservedCounters {
        ObservedCounters {
            inner,
            errors: CounterErrors::default(),
            log: LogThrottle::new(LOG_INTERVAL),
        }
    }

    /// The failure count, for metrics.
    pub fn errors(&self) -> CounterErrors {
        self.errors.clone()
    }

    fn observe<T>(
        &self,
        operation: &'static str,
        result: Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        if let Err(error) = &result
            && !matches!(
                error,
                PolicyError::Refused(_) | PolicyError::TooManyCounters { .. }
            )
        {
            self.errors.0.0.fetch_add(1, Ordering::Relaxed);
            self.errors.0.1.store(true, Ordering::Relaxed);
            if let Some(left_out) = self.log.admit(Instant::now()) {
                tracing::warn!(%error, operation, left_out, "budget counters failed");
            }
        } else if self.errors.failing() {
            // Read before written: no shared write per request while the counters work.
            self.errors.0.1.store(false, Ordering::Relaxed);
        }
        result
    }
}

impl Counters for ObservedCounters {
    fn restore<'a>(&'a self, amounts: &'a [Restore]) -> CounterFuture<'a, Result<(), PolicyError>> {
        Box::pin(async move { self.observe("restore", self.inner.restore(amounts).await) })
    }

    fn claim_rebuild(&self) -> CounterFuture<'_, Result<bool, PolicyError>> {
        Box::pin(async move { self.observe("claim_rebuild", self.inner.claim_rebuild().await) })
    }

    fn reserve<'a>(
        &'a self,
        charges: &'a [super::Charge],
    ) -> CounterFuture<'a, Result<Hold, PolicyError>> {
        Box::pin(async move { self.observe("reserve", self.inner.reserve(charges).await) })
    }

    fn settle(
        &self,
        hold: Hold,
        actual: Consumption,
    ) -> CounterFuture<'_, Result<(), PolicyError>> {
        Box::pin(async move { self.observe("settle", self.inner.settle(hold, actual).await) })
    }

    fn release(&self, hold: Hold) -> CounterFuture<'_, Result<(), PolicyError>> {
        Box::pin(async move { self.observe("release", self.inner.release(hold).await) })
    }

    fn usage<'a>(
        &'a self,
        limit: &'a Limit,
        now: UnixMs,
    ) -> CounterFuture<'a, Result<u64, PolicyError>> {
        Box::pin(async move { self.observe("usage", self.inner.usage(limit, now).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Scope;
    use crate::counters::MemoryCounters;

    /// A counter store that is always too slow.
    struct Down;

    impl Counters for Down {
        fn reserve<'a>(
            &'a self,
            _: &'a [super::super::Charge],
        ) -> CounterFuture<'a, Result<Hold, PolicyError>> {
            Box::pin(async { Err(timeout()) })
        }
        fn settle(&self, _: Hold, _: Consumption) -> CounterFuture<'_, Result<(), PolicyError>> {
            Box::pin(async { Err(timeout()) })
        }
        fn release(&self, _: Hold) -> CounterFuture<'_, Result<(), PolicyError>> {
            Box::pin(async { Err(timeout()) })
        }
        fn usage<'a>(
            &'a self,
            _: &'a Limit,
            _: UnixMs,
        ) -> CounterFuture<'a, Result<u64, PolicyError>> {
            Box::pin(async { Err(timeout()) })
        }
        fn restore<'a>(&'a self, _: &'a [Restore]) -> CounterFuture<'a, Result<(), PolicyError>> {
            Box::pin(async { Err(timeout()) })
        }
        fn claim_rebuild(&self) -> CounterFuture<'_, Result<bool, PolicyError>> {
            Box::pin(async { Err(timeout()) })
        }
    }

    fn timeout() -> PolicyError {
        PolicyError::CounterTimeout {
            timeout: Duration::from_millis(250),
        }
    }

    #[tokio::test]
    async fn failures_are_counted_and_refusals_are_not() {
        let limit = Limit::requests(Scope::Key("k".into()), 0, crate::budget::Period::Day).unwrap();
        let charge = [limit.charge(1, UnixMs(1_800_000_000_000)).unwrap()];

        let down = ObservedCounters::new(Arc::new(Down));
        for _ in 0..3 {
            assert!(matches!(
                down.reserve(&charge).await,
                Err(PolicyError::CounterTimeout { .. })
            ));
        }
        assert_eq!(down.errors().get(), 3);
        assert!(down.errors().failing());

        let full = ObservedCounters::new(Arc::new(MemoryCounters::new()));
        assert!(matches!(
            full.reserve(&charge).await,
            Err(PolicyError::Refused(_))
        ));
        assert_eq!(full.errors().get(), 0);
        assert!(!full.errors().failing(), "a refusal is an answer");
    }
}
