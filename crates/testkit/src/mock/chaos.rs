//! [`Chaos`]: fixed shares of chat requests that fail or stall, for fault
//! benchmarks and routing tests.
//!
//! Shares are exact and reproducible rather than random, so two runs of a
//! benchmark see the same failure pattern and a test can count on it:
//! request `n` (from 0) is picked when `floor((n + 1) · r) > floor(n · r)`,
//! which spreads `floor(N · r)` picks evenly over any first `N` requests
//! (0.5 picks every second request, 0.25 every fourth). Where chaos sits among
//! the other reply sources is documented on the `mock` module.

use std::sync::atomic::{AtomicU64, Ordering};

/// Shares of chat requests answered with an error status or stalled.
///
/// Ratios are clamped to `0.0..=1.0` (NaN counts as 0). A request can be
/// both stalled and failed: it then waits, then answers the error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chaos {
    /// Share of requests answered `fail_status`, in the dialect's real error
    /// body (as [`super::Reply::status`] sends it).
    pub fail_ratio: f64,
    /// Default 500.
    pub fail_status: u16,
    /// Share of requests whose response headers are held back `stall_ms`
    /// (for streams: no first byte for that long).
    pub stall_ratio: f64,
    pub stall_ms: u64,
}

impl Default for Chaos {
    fn default() -> Self {
        Chaos {
            fail_ratio: 0.0,
            fail_status: 500,
            stall_ratio: 0.0,
            stall_ms: 0,
        }
    }
}

/// What chaos does to one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Answer this error status instead of the reply.
    pub fail: Option<u16>,
    /// Extra wait before the headers.
    pub stall_ms: u64,
}

/// A [`Chaos`] setting with its request counters.
#[derive(Debug)]
pub(super) struct ChaosState {
    chaos: Chaos,
    failures: AtomicU64,
    stalls: AtomicU64,
}

/// The stall counter starts one request ahead of the failure counter: stalls
/// follow the same exact pattern shifted by one request, so equal ratios up
/// to 0.5 never pick the same request and other pairs only sometimes do.
const STALL_OFFSET: u64 = 1;

impl ChaosState {
    pub fn new(chaos: Chaos) -> Self {
        ChaosState {
            chaos,
            failures: AtomicU64::new(0),
            stalls: AtomicU64::new(STALL_OFFSET),
        }
    }

    /// Counts one request and says what happens to it. Requests are numbered
    /// in the order they reach this call.
    pub fn next(&self) -> Verdict {
        let n = self.failures.fetch_add(1, Ordering::Relaxed);
        let m = self.stalls.fetch_add(1, Ordering::Relaxed);
        let fail = picks(n, self.chaos.fail_ratio).then_some(self.chaos.fail_status);
        let stall_ms = if picks(m, self.chaos.stall_ratio) {
            self.chaos.stall_ms
        } else {
            0
        };
        Verdict { fail, stall_ms }
    }
}

/// Whether request `n` belongs to the share `ratio`.
fn picks(n: u64, ratio: f64) -> bool {
    if ratio.is_nan() {
        return false;
    }
    let ratio = ratio.clamp(0.0, 1.0);
    // Exact for n below 2^52, far beyond any test or benchmark.
    ((n + 1) as f64 * ratio).floor() > (n as f64 * ratio).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picked(ratio: f64, from: u64, count: u64) -> Vec<u64> {
        (from..from + count).filter(|&n| picks(n, ratio)).collect()
    }

    #[test]
    fn shares_are_exact_over_every_prefix() {
        for ratio in [0.0, 0.1, 0.25, 1.0 / 3.0, 0.5, 0.75, 1.0] {
            for count in 1..=200u64 {
                let expected = (count as f64 * ratio).floor() as usize;
                assert_eq!(
                    picked(ratio, 0, count).len(),
                    expected,
                    "{ratio} of {count}"
                );
            }
        }
    }

    #[test]
    fn half_is_every_second_request_and_quarter_every_fourth() {
        assert_eq!(picked(0.5, 0, 8), [1, 3, 5, 7]);
        assert_eq!(picked(0.25, 0, 8), [3, 7]);
    }

    #[test]
    fn out_of_range_ratios_are_clamped() {
        assert!(picked(-1.0, 0, 10).is_empty());
        assert!(picked(f64::NAN, 0, 10).is_empty());
        assert_eq!(picked(2.0, 0, 10).len(), 10);
    }

    #[test]
    fn equal_failure_and_stall_shares_do_not_coincide() {
        let state = ChaosState::new(Chaos {
            fail_ratio: 0.5,
            stall_ratio: 0.5,
            stall_ms: 100,
            ..Chaos::default()
        });
        let verdicts: Vec<Verdict> = (0..10).map(|_| state.next()).collect();
        assert_eq!(verdicts.iter().filter(|v| v.fail == Some(500)).count(), 5);
        assert_eq!(verdicts.iter().filter(|v| v.stall_ms == 100).count(), 5);
        assert!(verdicts.iter().all(|v| v.fail.is_none() || v.stall_ms == 0));
    }
}
