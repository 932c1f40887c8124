//! [`RetryBudget`]: how many retries a deployment's failures may cause.
//!
//! Every request a deployment receives as its first attempt adds to the window; every retry
//! (or hedge) caused by that deployment spends from it. A retry is allowed while the retries
//! in the window stay below `ratio × requests + min_retries`, so however long an outage lasts,
//! the extra load it causes is bounded by a fixed share of the traffic.

use tokio::time::Instant;

use crate::policy::BudgetPolicy;
use crate::window::Window;

#[derive(Debug, Clone)]
pub struct RetryBudget {
    policy: BudgetPolicy,
    /// a = requests, b = retries.
    window: Window,
    refused: u64,
}

/// The budget as `/health` and `sluice status` show it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BudgetStatus {
    pub requests: u64,
    pub retries: u64,
    /// Retries still allowed in the window now.
    pub available: u64,
    /// Retries refused since start.
    pub refused: u64,
}

impl RetryBudget {
    pub fn new(policy: BudgetPolicy, now: Instant) -> RetryBudget {
        RetryBudget {
            policy,
            window: Window::new(policy.window, now),
            refused: 0,
        }
    }

    pub fn policy(&self) -> BudgetPolicy {
        self.policy
    }

    /// A request reached the deployment as its first attempt.
    pub fn request(&mut self, now: Instant) {
        self.window.add_a(now, 1);
    }

    fn allowance(&self, requests: u64) -> u64 {
        (self.policy.ratio * requests as f64) as u64 + u64::from(self.policy.min_retries)
    }

    /// Spends one retry if the budget allows it.
    pub fn try_spend(&mut self, now: Instant) -> bool {
        let counts = self.window.totals(now);
        if counts.b < self.allowance(counts.a) {
            self.window.add_b(now, 1);
            true
        } else {
            self.refused += 1;
            false
        }
    }

    pub fn status(&self, now: Instant) -> BudgetStatus {
        let counts = self.window.totals(now);
        BudgetStatus {
            requests: counts.a,
            retries: counts.b,
            available: self.allowance(counts.a).saturating_sub(counts.b),
            refused: self.refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_share_of_requests() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(
            BudgetPolicy {
                ratio: 0.2,
                window: Duration::from_secs(10),
                min_retries: 3,
            },
            t0,
        );
        // A total outage: every request fails and asks for a retry.
        let mut allowed = 0;
        for _ in 0..1000 {
            budget.request(t0);
            if budget.try_spend(t0) {
                allowed += 1;
            }
        }
        // 20% of 1000, plus the 3 always allowed; never one per failure.
        assert_eq!(allowed, 203);
        let status = budget.status(t0);
        assert_eq!(
            (status.requests, status.retries, status.available),
            (1000, 203, 0)
        );
        assert_eq!(status.refused, 797);
        // Once the window has moved on, the budget is back.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(budget.status(later).available, 3);
        assert!(budget.try_spend(later));
    }
}
