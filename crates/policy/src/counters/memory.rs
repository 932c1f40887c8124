//! In-process counters: one mutex-guarded map, for a single replica (the default).
//!
//! Every operation takes the lock once, does its arithmetic and returns a ready future: the
//! lock is never held across an `.await`. Expired counters are swept at most once a minute of
//! the callers' time, during a reservation.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Adjustment, Charge, CounterFuture, Counters, HeldAmount, Hold, Quota, Restore, check_distinct,
    quota_resets_at,
};
use crate::budget::{Consumption, Limit};
use crate::calendar::UnixMs;
use crate::error::PolicyError;

const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Counters for one process. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<String, Counter>,
    next_sweep_at: Option<UnixMs>,
    /// Whether [`Counters::claim_rebuild`] was called: in process, counters start empty once.
    claimed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    value: u64,
    expires_at: UnixMs,
}

impl State {
    /// The value of a counter that has not expired at `now`.
    fn live_value(&self, key: &str, now: UnixMs) -> u64 {
        self.counters
            .get(key)
            .filter(|counter| counter.expires_at > now)
            .map_or(0, |counter| counter.value)
    }

    fn sweep_if_due(&mut self, now: UnixMs) {
        if self.next_sweep_at.is_some_and(|due| now < due) {
            return;
        }
        self.counters.retain(|_, counter| counter.expires_at > now);
        self.next_sweep_at = Some(now.saturating_add(SWEEP_INTERVAL));
    }

    fn apply(&mut self, adjustments: Vec<Adjustment>) {
        for adjustment in adjustments {
            match self.counters.get_mut(&adjustment.key) {
                Some(counter) => {
                    counter.value = if adjustment.delta >= 0 {
                        counter
                            .value
                            .saturating_add(adjustment.delta.unsigned_abs())
                    } else {
                        counter
                            .value
                            .saturating_sub(adjustment.delta.unsigned_abs())
                    };
                }
                // A counter that is gone (expired and swept) only comes back for spend that
                // really happened; a refund to it has nothing left to refund.
                None if adjustment.delta > 0 => {
                    self.counters.insert(
                        adjustment.key,
                        Counter {
                            value: adjustment.delta.unsigned_abs(),
                            expires_at: adjustment.expires_at,
                        },
                    );
                }
                None => {}
            }
        }
    }
}

impl MemoryCounters {
    pub fn new() -> MemoryCounters {
        MemoryCounters::default()
    }

    /// A poisoned lock only means another caller panicked mid-operation; every operation leaves
    /// the map consistent between statements, so carry on with it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reserve_now(&self, charges: &[Charge]) -> Result<Hold, PolicyError> {
        check_distinct(charges)?;
        let now = charges
            .iter()
            .map(|charge| charge.as_of)
            .max()
            .unwrap_or(UnixMs(0));
        let mut state = self.lock();
        state.sweep_if_due(now);

        let mut slot_values: Vec<Vec<u64>> = Vec::with_capacity(charges.len());
        for charge in charges {
            let values: Vec<u64> = charge
                .slots
                .iter()
                .map(|slot| state.live_value(&slot.key, charge.as_of))
                .collect();
            let used = values
                .iter()
                .fold(0_u64, |sum, value| sum.saturating_add(*value));
            if used.saturating_add(charge.amount) > charge.limit.amount {
                return Err(charge.refusal(used, charge.frees_at(&values)));
            }
            slot_values.push(values);
        }

        let mut held = Vec::with_capacity(charges.len());
        let mut quotas = Vec::with_capacity(charges.len());
        for (charge, mut values) in charges.iter().zip(slot_values) {
            let Some(write) = charge.write_slot() else {
                continue;
            };
            let now = charge.as_of;
            let counter = state.counters.entry(write.key.clone()).or_insert(Counter {
                value: 0,
                expires_at: charge.expires_at,
            });
            if counter.expires_at <= now {
                // A stale counter from a window that ended: start over.
                counter.value = 0;
            }
            counter.value = counter.value.saturating_add(charge.amount);
            counter.expires_at = counter.expires_at.max(charge.expires_at);
            if let Some(last) = values.last_mut() {
                *last = last.saturating_add(charge.amount);
            }
            held.push(HeldAmount {
                key: write.key.clone(),
                metric: charge.limit.metric,
                reserved: charge.amount,
                expires_at: charge.expires_at,
            });
            quotas.push(Quota {
                limit: charge.limit.clone(),
                used: values
                    .iter()
                    .fold(0_u64, |sum, value| sum.saturating_add(*value)),
                resets_at: quota_resets_at(charge, values.iter().position(|value| *value > 0)),
            });
        }
        Ok(Hold { held, quotas })
    }

    #[cfg(test)]
    pub(crate) fn counter_count(&self) -> usize {
        self.lock().counters.len()
    }
}

impl Counters for MemoryCounters {
    fn restore<'a>(&'a self, amounts: &'a [Restore]) -> CounterFuture<'a, Result<(), PolicyError>> {
        let mut state = self.lock();
        for restore in amounts {
            let counter = state
                .counters
                .entry(restore.key.clone())
                .or_insert(Counter {
                    value: 0,
                    expires_at: restore.expires_at,
                });
            counter.value = counter.value.max(restore.amount);
            counter.expires_at = counter.expires_at.max(restore.expires_at);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn claim_rebuild(&self) -> CounterFuture<'_, Result<bool, PolicyError>> {
        let first = !std::mem::replace(&mut self.lock().claimed, true);
        Box::pin(std::future::ready(Ok(first)))
    }

    fn reserve<'a>(
        &'a self,
        charges: &'a [Charge],
    ) -> CounterFuture<'a, Result<Hold, PolicyError>> {
        let result = self.reserve_now(charges);
        Box::pin(std::future::ready(result))
    }

    fn settle(
        &self,
        hold: Hold,
        actual: Consumption,
    ) -> CounterFuture<'_, Result<(), PolicyError>> {
        self.lock().apply(hold.settlement(actual));
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, hold: Hold) -> CounterFuture<'_, Result<(), PolicyError>> {
        self.lock().apply(hold.releases());
        Box::pin(std::future::ready(Ok(())))
    }

    fn usage<'a>(
        &'a self,
        limit: &'a Limit,
        now: UnixMs,
    ) -> CounterFuture<'a, Result<u64, PolicyError>> {
        let result = limit.charge(0, now).map(|charge| {
            let state = self.lock();
            charge
                .slots
                .iter()
                .map(|slot| state.live_value(&slot.key, now))
                .fold(0_u64, u64::saturating_add)
        });
        Box::pin(std::future::ready(result))
    }
}
