//! Whether the store can be reached, as the processes using it last found: the record writer
//! and key lookups mark it down when a call fails for want of the database
//! ([`StoreError::is_unavailable`]), and the writer marks it up again once a ping succeeds.
//! While it is down the gateway runs degraded: records go to the local journal, keys are
//! served from the last known set, budgets from the rows last loaded.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::StoreError;

/// Shared by everything that calls the store; cheap to read on the request path.
#[derive(Debug, Default)]
pub struct StoreHealth {
    down: AtomicBool,
    spans: Mutex<Spans>,
}

#[derive(Debug, Default)]
struct Spans {
    /// When the current outage began, and why.
    since: Option<(Instant, String)>,
    /// Time spent down in outages that have ended.
    ended: Duration,
}

/// What `/ready` and `sluice status` show of an outage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub for_time: Duration,
    pub reason: String,
}

impl StoreHealth {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Marks the store down after `error`, if it says the store could not be reached; returns
    /// whether it did. The first mark of an outage is logged.
    pub fn note_failure(&self, error: &StoreError) -> bool {
        if !error.is_unavailable() {
            return false;
        }
        let mut spans = self.spans();
        if spans.since.is_none() {
            tracing::error!(error = %error, "the store cannot be reached: running degraded (records journaled locally, keys from the last known set)");
            spans.since = Some((Instant::now(), error.to_string()));
            self.down.store(true, Ordering::Relaxed);
        }
        true
    }

    /// Marks the store up; the end of an outage is logged with its length.
    pub fn note_success(&self) {
        if !self.is_down() {
            return;
        }
        let mut spans = self.spans();
        if let Some((since, _)) = spans.since.take() {
            let lasted = since.elapsed();
            spans.ended += lasted;
            tracing::warn!(
                degraded_ms = lasted.as_millis() as u64,
                "the store is reachable again"
            );
        }
        self.down.store(false, Ordering::Relaxed);
    }

    /// The outage under way, if any.
    pub fn outage(&self) -> Option<Outage> {
        let spans = self.spans();
        spans.since.as_ref().map(|(since, reason)| Outage {
            for_time: since.elapsed(),
            reason: reason.clone(),
        })
    }

    /// Time spent down since start, the outage under way included.
    pub fn degraded_total(&self) -> Duration {
        let spans = self.spans();
        spans.ended
            + spans
                .since
                .as_ref()
                .map_or(Duration::ZERO, |(s, _)| s.elapsed())
    }

    fn spans(&self) -> std::sync::MutexGuard<'_, Spans> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StoreError {
    /// The store could not be reached, or refused work for now (shutting down, too many
    /// connections, locked, out of disk): the same call may succeed later. Other errors would
    /// fail again, and do not make the store down.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
            _ => false,
        }
    }
}

/// Postgres SQLSTATEs of a server that cannot take work now (class 08 connection exception,
/// 53 insufficient resources, 57P0x shutting down or starting), and SQLite's result codes for
/// busy, locked, I/O error, full and cannot open.
fn unavailable_code(code: &str) -> bool {
    if code.len() == 5 {
        return code.starts_with("08") || code.starts_with("53") || code.starts_with("57P");
    }
    // SQLite: an extended code's low byte is its primary code.
    code.parse::<u32>()
        .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "a plain test: no runtime to block"
    )]
    fn an_outage_is_timed_from_its_first_failure_to_the_next_success() {
        let health = StoreHealth::default();
        assert!(!health.is_down());
        assert!(!health.note_failure(&StoreError::Corrupt("row".into())));
        assert!(!health.is_down(), "a bad row is not an outage");
        assert!(health.note_failure(&StoreError::Database(sqlx::Error::PoolTimedOut)));
        assert!(health.is_down());
        let outage = health.outage().unwrap();
        assert!(outage.reason.contains("timed out"), "{}", outage.reason);
        std::thread::sleep(Duration::from_millis(20));
        health.note_success();
        assert!(!health.is_down());
        assert!(health.outage().is_none());
        let total = health.degraded_total();
        assert!(total >= Duration::from_millis(20), "{total:?}");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(health.degraded_total(), total, "no time counted while up");
    }

    #[test]
    fn codes_of_a_server_that_cannot_take_work_now() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "5", "517", "13", "14", "10",
        ] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "19", "1555", "2067"] {
            assert!(!unavailable_code(code), "{code}");
        }
    }
}
