//! [`Breaker`]: the circuit breaker of one deployment.
//!
//! Closed, it counts outcomes over a rolling window and opens on `consecutive_failures` in a
//! row, or when at least `min_requests` were seen and the failure share reached
//! `failure_ratio`. Open, it refuses every request until `open_for` has passed, then turns
//! half-open: up to `half_open_probes` requests go through as probes; the first probe that
//! succeeds closes it, one that fails opens it again. Only failures that say the deployment is
//! unhealthy are counted (the caller decides: see `Condition::is_deployment_fault`).
//!
//! No shared fate: a failure is counted with the [`CallerTag`] of the request that failed, and
//! the breaker opens only once failures in its window came from `min_callers` distinct callers
//! (2 by default). One key sending requests that make the upstream fail (an input it chokes
//! on) therefore cannot open the circuit for everyone; an upstream that fails for several
//! callers still opens it. A half-open probe's failure re-opens it whoever sent it: the
//! evidence that opened it was already shared.
//!
//! Time comes in as arguments (`tokio::time::Instant`), so a paused clock drives the tests.

use std::time::Duration;

use tokio::time::Instant;

use crate::window::Window;

/// Who sent a request, as far as shared-fate decisions care: an opaque tag of the caller's
/// key. [`CallerTag::UNATTRIBUTED`] is a request whose caller is not known (its failures are
/// treated as evidence of their own, as before callers were told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallerTag(u64);

impl CallerTag {
    pub const UNATTRIBUTED: CallerTag = CallerTag(0);

    /// The tag of a key (its id).
    pub fn of(key_id: &str) -> CallerTag {
        use std::hash::{Hash, Hasher};
        // Fixed keys (not a per-process random state): the same key id always gives the same
        // tag in this process, which is all the evidence needs; tags are never stored.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key_id.hash(&mut hasher);
        CallerTag(hasher.finish().max(1))
    }
}

/// Failures remembered with their caller, at most (the oldest are forgotten first; a bound,
/// since only whether there were `min_callers` distinct ones matters).
const FAILING_CALLERS: usize = 32;

/// The callers of recent events (failures, rate limits) within a window: whether they came
/// from enough distinct callers.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallerEvidence {
    events: std::collections::VecDeque<(CallerTag, Instant)>,
}

impl CallerEvidence {
    pub(crate) fn add(&mut self, caller: CallerTag, now: Instant) {
        self.events
            .retain(|(tag, _)| *tag != caller || caller == CallerTag::UNATTRIBUTED);
        if self.events.len() == FAILING_CALLERS {
            self.events.pop_front();
        }
        self.events.push_back((caller, now));
    }

    /// Whether the events of the last `window` came from at least `min_callers` distinct
    /// callers (an unattributed one always suffices).
    pub(crate) fn enough(&mut self, now: Instant, window: Duration, min_callers: u32) -> bool {
        self.events
            .retain(|(_, at)| now.saturating_duration_since(*at) < window);
        if min_callers <= 1 {
            return !self.events.is_empty();
        }
        if self
            .events
            .iter()
            .any(|(tag, _)| *tag == CallerTag::UNATTRIBUTED)
        {
            return true;
        }
        self.events.len() >= min_callers as usize
    }

    pub(crate) fn clear(&mut self) {
        self.events.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub failure_ratio: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub half_open_probes: u32,
    /// Distinct callers whose failures must be in the window before it opens: no single key
    /// can open a deployment's circuit for everyone by sending requests that make it fail.
    /// `0` or `1`: any caller's failures suffice. Failures of unknown callers always count as
    /// evidence of their own.
    pub min_callers: u32,
}

impl BreakerPolicy {
    /// A breaker that never opens (drills of every deployment; tests of fallback alone).
    pub fn disabled() -> BreakerPolicy {
        BreakerPolicy {
            enabled: false,
            consecutive_failures: 0,
            failure_ratio: 1.0,
            min_requests: 1,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(10),
            half_open_probes: 1,
            min_callers: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a request may go to the deployment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Allowed as a half-open probe: its outcome decides the breaker's state.
    Probe,
    /// Open: try again in this long.
    Refused {
        retry_in: Duration,
    },
}

/// How an admitted request ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Ended without telling anything about the deployment (cancelled, lost a hedge, refused
    /// for its content): only frees a probe slot.
    Neutral,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probes: u32 },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: State,
    /// a = successes, b = failures, while closed.
    window: Window,
    consecutive: u32,
    /// Who the window's failures came from.
    failing: CallerEvidence,
    /// Times it opened since start.
    opened: u64,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy, now: Instant) -> Breaker {
        Breaker {
            policy,
            state: State::Closed,
            window: Window::new(policy.window, now),
            consecutive: 0,
            failing: CallerEvidence::default(),
            opened: 0,
        }
    }

    /// The state now; an open breaker whose time is up reads as half-open.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Until when an open breaker refuses requests.
    pub fn open_until(&self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Open { until } if now < until => Some(until),
            _ => None,
        }
    }

    pub fn times_opened(&self) -> u64 {
        self.opened
    }

    /// Failures and requests counted in the current window (closed state).
    pub fn window_counts(&self, now: Instant) -> (u64, u64) {
        let counts = self.window.totals(now);
        (counts.b, counts.a + counts.b)
    }

    /// Whether a request would be admitted, without taking a probe slot.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.state {
            _ if !self.policy.enabled => true,
            State::Closed => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probes } => probes < self.policy.half_open_probes,
        }
    }

    /// Admits a request, taking a probe slot when half-open. Every admission must be followed
    /// by exactly one [`Breaker::record`].
    pub fn admit(&mut self, now: Instant) -> Admission {
        if !self.policy.enabled {
            return Admission::Allowed;
        }
        if let State::Open { until } = self.state {
            if now < until {
                return Admission::Refused {
                    retry_in: until - now,
                };
            }
            self.state = State::HalfOpen { probes: 0 };
        }
        match &mut self.state {
            State::Closed => Admission::Allowed,
            State::HalfOpen { probes } if *probes < self.policy.half_open_probes => {
                *probes += 1;
                Admission::Probe
            }
            // Probes are out: wait for their verdict, which comes within a request's time.
            State::HalfOpen { .. } | State::Open { .. } => Admission::Refused {
                retry_in: Duration::from_secs(1),
            },
        }
    }

    /// Counts an admitted request's outcome, its caller unknown; returns the new state when it
    /// changed.
    pub fn record(
        &mut self,
        now: Instant,
        admission: Admission,
        outcome: Outcome,
    ) -> Option<BreakerState> {
        self.record_from(now, admission, outcome, CallerTag::UNATTRIBUTED)
    }

    /// Counts an admitted request's outcome and who sent it; returns the new state when it
    /// changed.
    pub fn record_from(
        &mut self,
        now: Instant,
        admission: Admission,
        outcome: Outcome,
        caller: CallerTag,
    ) -> Option<BreakerState> {
        if !self.policy.enabled {
            return None;
        }
        if admission == Admission::Probe {
            if let State::HalfOpen { probes } = &mut self.state {
                *probes = probes.saturating_sub(1);
                match outcome {
                    Outcome::Success => return Some(self.close(now)),
                    Outcome::Failure => return Some(self.open(now)),
                    Outcome::Neutral => {}
                }
            }
            return None;
        }
        if !matches!(self.state, State::Closed) {
            // A request admitted before the breaker opened: its verdict is stale.
            return None;
        }
        match outcome {
            Outcome::Success => {
                self.consecutive = 0;
                self.window.add_a(now, 1);
            }
            Outcome::Failure => {
                self.consecutive += 1;
                self.window.add_b(now, 1);
                self.failing.add(caller, now);
                let counts = self.window.totals(now);
                let seen = counts.a + counts.b;
                let ratio_tripped = seen >= u64::from(self.policy.min_requests.max(1))
                    && counts.b as f64 >= self.policy.failure_ratio * seen as f64;
                let run_tripped = self.policy.consecutive_failures > 0
                    && self.consecutive >= self.policy.consecutive_failures;
                let shared = self
                    .failing
                    .enough(now, self.policy.window, self.policy.min_callers);
                if (ratio_tripped || run_tripped) && shared {
                    return Some(self.open(now));
                }
            }
            Outcome::Neutral => {}
        }
        None
    }

    fn open(&mut self, now: Instant) -> BreakerState {
        self.state = State::Open {
            until: now + self.policy.open_for,
        };
        self.opened += 1;
        BreakerState::Open
    }

    fn close(&mut self, now: Instant) -> BreakerState {
        self.state = State::Closed;
        self.consecutive = 0;
        self.failing.clear();
        self.window = Window::new(self.policy.window, now);
        BreakerState::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            enabled: true,
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
            min_callers: 1,
        }
    }

    fn run(breaker: &mut Breaker, now: Instant, outcome: Outcome) -> Admission {
        let admission = breaker.admit(now);
        if !matches!(admission, Admission::Refused { .. }) {
            breaker.record(now, admission, outcome);
        }
        admission
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_consecutive_failures_then_probes_and_closes() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(policy(), t0);
        for _ in 0..4 {
            run(&mut breaker, t0, Outcome::Failure);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
        run(&mut breaker, t0, Outcome::Failure);
        assert_eq!(breaker.state(t0), BreakerState::Open);
        assert_eq!(
            breaker.admit(t0 + Duration::from_secs(10)),
            Admission::Refused {
                retry_in: Duration::from_secs(20)
            }
        );
        // Time up: one probe at a time.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(breaker.state(t1), BreakerState::HalfOpen);
        let probe = breaker.admit(t1);
        assert_eq!(probe, Admission::Probe);
        assert!(matches!(breaker.admit(t1), Admission::Refused { .. }));
        breaker.record(t1, probe, Outcome::Success);
        assert_eq!(breaker.state(t1), BreakerState::Closed);
        assert_eq!(breaker.admit(t1), Admission::Allowed);
        assert_eq!(breaker.times_opened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_for_the_full_time() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(policy(), t0);
        for _ in 0..5 {
            run(&mut breaker, t0, Outcome::Failure);
        }
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(run(&mut breaker, t1, Outcome::Failure), Admission::Probe);
        assert_eq!(breaker.state(t1), BreakerState::Open);
        assert_eq!(breaker.open_until(t1), Some(t1 + Duration::from_secs(30)));
        assert_eq!(breaker.times_opened(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_ratio_once_enough_requests_were_seen() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(policy(), t0);
        // Alternating: never 5 in a row, but half of them fail.
        for i in 0..9 {
            let outcome = if i % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            run(&mut breaker, t0, outcome);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed, "9 < min_requests");
        run(&mut breaker, t0, Outcome::Failure);
        assert_eq!(breaker.state(t0), BreakerState::Open, "5 of 10 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_age_out_of_the_window() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(policy(), t0);
        for _ in 0..4 {
            run(&mut breaker, t0, Outcome::Success);
            run(&mut breaker, t0, Outcome::Failure);
        }
        // 15 s later the first eight are gone: one more failure is 1 of 1, below min_requests.
        let later = t0 + Duration::from_secs(15);
        run(&mut breaker, later, Outcome::Success);
        run(&mut breaker, later, Outcome::Failure);
        assert_eq!(breaker.window_counts(later), (1, 2));
        assert_eq!(breaker.state(later), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_outcomes_free_the_probe_without_a_verdict() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(policy(), t0);
        for _ in 0..5 {
            run(&mut breaker, t0, Outcome::Failure);
        }
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(run(&mut breaker, t1, Outcome::Neutral), Admission::Probe);
        assert_eq!(breaker.state(t1), BreakerState::HalfOpen);
        assert_eq!(breaker.admit(t1), Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn one_caller_failing_alone_never_opens_it_two_do() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(
            BreakerPolicy {
                min_callers: 2,
                ..policy()
            },
            t0,
        );
        let (bad, good) = (CallerTag::of("key_bad"), CallerTag::of("key_good"));
        let fail = |breaker: &mut Breaker, caller| {
            let admission = breaker.admit(t0);
            breaker.record_from(t0, admission, Outcome::Failure, caller);
            admission
        };
        // Fifty failures in a row from one key: past both thresholds, still closed.
        for _ in 0..50 {
            assert_eq!(fail(&mut breaker, bad), Admission::Allowed);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
        assert_eq!(breaker.window_counts(t0), (50, 50));
        // A second caller failing too: the upstream is failing for everyone.
        fail(&mut breaker, good);
        assert_eq!(breaker.state(t0), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn another_callers_failure_outside_the_window_is_not_evidence() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(
            BreakerPolicy {
                min_callers: 2,
                ..policy()
            },
            t0,
        );
        let admission = breaker.admit(t0);
        breaker.record_from(t0, admission, Outcome::Failure, CallerTag::of("a"));
        let later = t0 + Duration::from_secs(11);
        for _ in 0..10 {
            let admission = breaker.admit(later);
            breaker.record_from(later, admission, Outcome::Failure, CallerTag::of("b"));
        }
        assert_eq!(breaker.state(later), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_breaker_never_refuses() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(
            BreakerPolicy {
                enabled: false,
                ..policy()
            },
            t0,
        );
        for _ in 0..50 {
            assert_eq!(run(&mut breaker, t0, Outcome::Failure), Admission::Allowed);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
    }
}
