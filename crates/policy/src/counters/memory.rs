//! In-process counters: one mutex-guarded map, for a single replica (the default).
//!
//! Every operation takes the lock once, does its arithmetic and returns a ready future: the
//! lock is never held across an `.await`. Expired counters are swept at most once a minute of
//! the callers' time, during a reservation.
//!
//! End-user ids are chosen by clients, so the entries counting one tenant's end users are
//! capped ([`MemoryCounters::with_max_per_tenant`]): a reservation that needs a new entry past
//! the cap sweeps expired entries (at most once a second) and, if still past it, is refused
//! ([`PolicyError::TooManyCounters`], counted in [`CounterEntries`]). The tenant's end users
//! already counted, and every other tenant, are unaffected. Entries of the other scopes
//! (organisations, teams, projects, keys, aliases) grow only with what operators create.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Adjustment, Charge, CounterFuture, Counters, HeldAmount, Hold, Quota, Restore, check_distinct,
    quota_resets_at,
};
use crate::budget::{Consumption, Limit, counter_owner};
use crate::calendar::UnixMs;
use crate::error::PolicyError;

const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// The most often a tenant at its cap makes a reservation sweep the whole map: a sweep is
/// linear in the entries, and a client past the cap could otherwise ask for one per request.
const FORCED_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The default of `budgets.max_counters_per_tenant`. An entry of a 256-byte end-user id takes
/// about 400 bytes, so a tenant's end users hold at most about 20 MB.
pub const DEFAULT_MAX_COUNTERS_PER_TENANT: usize = 50_000;

/// Counters for one process. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MemoryCounters {
    state: Mutex<State>,
    max_per_tenant: usize,
    entries: CounterEntries,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        MemoryCounters::with_max_per_tenant(DEFAULT_MAX_COUNTERS_PER_TENANT)
    }
}

/// How many entries in-process counters hold, and how many reservations were refused for a
/// tenant at its cap, since start: for `/metrics`. Cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub struct CounterEntries(Arc<EntryCounts>);

#[derive(Debug, Default)]
struct EntryCounts {
    live: AtomicU64,
    refused: AtomicU64,
}

impl CounterEntries {
    /// Entries held now (expired ones not yet swept included).
    pub fn live(&self) -> u64 {
        self.0.live.load(Ordering::Relaxed)
    }

    /// Reservations refused because their tenant's end users held the most entries allowed.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }
}

/// foldhash, seeded per map, not SipHash: a reservation looks up every slot of every charge
/// (a rolling window has twelve). Keys hold client-chosen end-user ids, hence the quality
/// variant; their number per tenant is capped.
type CounterMap<V> = HashMap<String, V, foldhash::quality::RandomState>;

#[derive(Debug, Default)]
struct State {
    counters: CounterMap<Counter>,
    /// Entries per tenant whose end users they count ([`counter_owner`]).
    per_tenant: CounterMap<usize>,
    next_sweep_at: Option<UnixMs>,
    next_forced_sweep_at: Option<UnixMs>,
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
        self.sweep(now);
        self.next_sweep_at = Some(now.saturating_add(SWEEP_INTERVAL));
    }

    /// Drops every counter expired at `now`.
    fn sweep(&mut self, now: UnixMs) {
        let State {
            counters,
            per_tenant,
            ..
        } = self;
        counters.retain(|key, counter| {
            let live = counter.expires_at > now;
            if !live && let Some(owner) = counter_owner(key) {
                forget(per_tenant, owner);
            }
            live
        });
    }

    /// Adds a counter that is not in the map.
    fn insert(&mut self, key: String, counter: Counter) {
        if let Some(owner) = counter_owner(&key) {
            *self.per_tenant.entry(owner.to_owned()).or_default() += 1;
        }
        self.counters.insert(key, counter);
    }

    /// A tenant whose end users would hold more than `max` entries once `charges` add
    /// theirs; `None` when every one fits.
    fn over_cap(&self, charges: &[Charge], max: usize) -> Option<String> {
        let mut needed: HashMap<&str, usize> = HashMap::new();
        for charge in charges {
            let Some(write) = charge.write_key() else {
                continue;
            };
            if self.counters.contains_key(write) {
                continue;
            }
            if let Some(owner) = counter_owner(write) {
                *needed.entry(owner).or_default() += 1;
            }
        }
        needed.into_iter().find_map(|(owner, new)| {
            let held = self.per_tenant.get(owner).copied().unwrap_or(0);
            (held.saturating_add(new) > max).then(|| owner.to_owned())
        })
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
                    self.insert(
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

/// One entry of `owner` fewer.
fn forget(per_tenant: &mut CounterMap<usize>, owner: &str) {
    if let Some(count) = per_tenant.get_mut(owner) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            per_tenant.remove(owner);
        }
    }
}

impl MemoryCounters {
    /// Counters keeping at most [`DEFAULT_MAX_COUNTERS_PER_TENANT`] entries per tenant's end
    /// users.
    pub fn new() -> MemoryCounters {
        MemoryCounters::default()
    }

    /// Counters keeping at most `max` entries for one tenant's end users (at least one).
    pub fn with_max_per_tenant(max: usize) -> MemoryCounters {
        MemoryCounters {
            state: Mutex::default(),
            max_per_tenant: max.max(1),
            entries: CounterEntries::default(),
        }
    }

    /// The entry counts, for metrics.
    pub fn entries(&self) -> CounterEntries {
        self.entries.clone()
    }

    fn counted(&self, state: &State) {
        let live = u64::try_from(state.counters.len()).unwrap_or(u64::MAX);
        self.entries.0.live.store(live, Ordering::Relaxed);
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
        let mut key = String::new();
        for charge in charges {
            let values: Vec<u64> = charge
                .slots
                .iter()
                .map(|slot| {
                    charge.slot_key_into(slot, &mut key);
                    state.live_value(&key, charge.as_of)
                })
                .collect();
            let used = values
                .iter()
                .fold(0_u64, |sum, value| sum.saturating_add(*value));
            if used.saturating_add(charge.amount) > charge.limit.amount {
                return Err(charge.refusal(used, charge.frees_at(&values)));
            }
            slot_values.push(values);
        }
        if let Some(tenant) = state.over_cap(charges, self.max_per_tenant) {
            let may_sweep = state.next_forced_sweep_at.is_none_or(|due| now >= due);
            let still_over = if may_sweep {
                state.sweep(now);
                state.next_forced_sweep_at = Some(now.saturating_add(FORCED_SWEEP_INTERVAL));
                self.counted(&state);
                state.over_cap(charges, self.max_per_tenant).is_some()
            } else {
                true
            };
            if still_over {
                self.entries.0.refused.fetch_add(1, Ordering::Relaxed);
                return Err(PolicyError::TooManyCounters {
                    tenant: tenant.replace("%2F", "/").replace("%25", "%"),
                    limit: self.max_per_tenant,
                });
            }
        }

        let mut held = Vec::with_capacity(charges.len());
        let mut quotas = Vec::with_capacity(charges.len());
        for (charge, mut values) in charges.iter().zip(slot_values) {
            let Some(write) = charge.write_key() else {
                continue;
            };
            let now = charge.as_of;
            if !state.counters.contains_key(write) {
                state.insert(
                    write.to_owned(),
                    Counter {
                        value: 0,
                        expires_at: charge.expires_at,
                    },
                );
            }
            let Some(counter) = state.counters.get_mut(write) else {
                continue;
            };
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
                key: write.to_owned(),
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
        self.counted(&state);
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
            // What the records say was used comes back whatever the cap: it was counted before.
            if !state.counters.contains_key(&restore.key) {
                state.insert(
                    restore.key.clone(),
                    Counter {
                        value: 0,
                        expires_at: restore.expires_at,
                    },
                );
            }
            if let Some(counter) = state.counters.get_mut(&restore.key) {
                counter.value = counter.value.max(restore.amount);
                counter.expires_at = counter.expires_at.max(restore.expires_at);
            }
        }
        self.counted(&state);
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
        let mut state = self.lock();
        state.apply(hold.settlement(actual));
        self.counted(&state);
        drop(state);
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, hold: Hold) -> CounterFuture<'_, Result<(), PolicyError>> {
        let mut state = self.lock();
        state.apply(hold.releases());
        self.counted(&state);
        drop(state);
        Box::pin(std::future::ready(Ok(())))
    }

    fn usage<'a>(
        &'a self,
        limit: &'a Limit,
        now: UnixMs,
    ) -> CounterFuture<'a, Result<u64, PolicyError>> {
        let result = limit.charge(0, now).map(|charge| {
            let state = self.lock();
            let mut key = String::new();
            charge
                .slots
                .iter()
                .map(|slot| {
                    charge.slot_key_into(slot, &mut key);
                    state.live_value(&key, now)
                })
                .fold(0_u64, u64::saturating_add)
        });
        Box::pin(std::future::ready(result))
    }
}
