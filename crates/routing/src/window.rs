//! [`Window`]: two counters over a rolling time window, in ten buckets, so old outcomes age
//! out a tenth of the window at a time instead of all at once. Used by the breaker (successes,
//! failures) and the retry budget (requests, retries).

use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub a: u64,
    pub b: u64,
}

#[derive(Debug, Clone)]
pub struct Window {
    span: Duration,
    /// Index (since `origin`, in bucket widths) of the bucket each slot holds.
    slots: [(u64, Counts); BUCKETS],
    origin: Instant,
}

impl Window {
    pub fn new(span: Duration, now: Instant) -> Window {
        Window {
            span: span.max(Duration::from_millis(BUCKETS as u64)),
            slots: [(0, Counts::default()); BUCKETS],
            origin: now,
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let width = self.span.as_nanos() / BUCKETS as u128;
        (now.saturating_duration_since(self.origin).as_nanos() / width.max(1)) as u64
    }

    fn slot(&mut self, now: Instant) -> &mut Counts {
        let index = self.index(now);
        let slot = &mut self.slots[(index % BUCKETS as u64) as usize];
        if slot.0 != index {
            *slot = (index, Counts::default());
        }
        &mut slot.1
    }

    pub fn add_a(&mut self, now: Instant, n: u64) {
        self.slot(now).a += n;
    }

    pub fn add_b(&mut self, now: Instant, n: u64) {
        self.slot(now).b += n;
    }

    /// Totals over the buckets still inside the window.
    pub fn totals(&self, now: Instant) -> Counts {
        let current = self.index(now);
        self.slots
            .iter()
            .filter(|(index, _)| current.saturating_sub(*index) < BUCKETS as u64)
            .fold(Counts::default(), |sum, (_, c)| Counts {
                a: sum.a + c.a,
                b: sum.b + c.b,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_age_out_a_bucket_at_a_time() {
        let now = Instant::now();
        let mut window = Window::new(Duration::from_secs(10), now);
        window.add_a(now, 5);
        window.add_b(now + Duration::from_secs(5), 2);
        assert_eq!(
            window.totals(now + Duration::from_secs(5)),
            Counts { a: 5, b: 2 }
        );
        // The first bucket [0 s, 1 s) leaves the window at 10 s; the second stays until 15 s.
        assert_eq!(
            window.totals(now + Duration::from_secs(10)),
            Counts { a: 0, b: 2 }
        );
        assert_eq!(
            window.totals(now + Duration::from_secs(15)),
            Counts::default()
        );
        window.add_a(now + Duration::from_secs(30), 1);
        assert_eq!(
            window.totals(now + Duration::from_secs(30)),
            Counts { a: 1, b: 0 }
        );
    }
}
