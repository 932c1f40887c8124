//! [`LogThrottle`]: at most one log line per interval for an event that can repeat once per
//! request (a shed connection, an unreachable counter store), with the number of lines left
//! out since the last one. Counting every occurrence is the metrics' job; this only keeps a
//! flood of identical warnings from filling the log. Time is an argument, so tests drive it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one occurrence through per `interval` and counts the others.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were left out
    /// since the last logged one; `None` when it should be left out (and is counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            state.last = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed = state.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.admit(t0), Some(0));
        for s in 1..10 {
            assert_eq!(throttle.admit(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(throttle.admit(t0 + Duration::from_secs(10)), Some(9));
        assert_eq!(throttle.admit(t0 + Duration::from_secs(11)), None);
        assert_eq!(throttle.admit(t0 + Duration::from_secs(30)), Some(1));
    }
}
