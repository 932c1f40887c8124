//! Counters behind budgets and rate limits: reserve a request's worst case at every level at
//! once, then settle it to what the request actually used.
//!
//! Owns the [`Counters`] trait and its two implementations: [`MemoryCounters`] (one process,
//! the default) and `RedisCounters` (several replicas sharing one Redis; `redis` feature). Both
//! pass the same conformance tests. Leaves to others: which limits apply and what a request may
//! cost ([`crate::budget`], [`crate::pricing`]), owning holds for the life of a request and
//! choosing to fail open or closed when the store is down (`sluice-pipeline`), and rendering a
//! [`Refusal`] as a 429 (`sluice-server`).
//!
//! Life of a hold: [`Counters::reserve`] checks every [`Charge`] against its limit and, only if
//! all fit, adds all of them (all or nothing, atomic against concurrent callers and replicas).
//! The returned [`Hold`] is then consumed exactly once by [`Counters::settle`] (the actual
//! amounts replace the reserved ones) or [`Counters::release`] (the request never ran). A hold
//! that is dropped instead keeps its reserved amounts counted until their windows end: safe
//! (budgets are never overspent) but pessimistic. [`HoldGuard`] releases on drop.

mod memory;
mod observed;
pub mod rebuild;
#[cfg(feature = "redis")]
mod redis;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::budget::{Consumption, Limit, Metric, Period};
use crate::calendar::UnixMs;
use crate::error::PolicyError;

#[cfg(feature = "redis")]
pub use self::redis::{RedisCounters, RedisSettings};
pub use memory::{CounterEntries, DEFAULT_MAX_COUNTERS_PER_TENANT, MemoryCounters};
pub use observed::{CounterErrors, ObservedCounters};

/// The largest amount a limit or a charge may carry: counters add in the integer range that
/// Redis's Lua numbers (doubles) represent exactly, 2^53 - 1. That is $9 billion in micro-USD.
pub const MAX_COUNTER_AMOUNT: u64 = (1 << 53) - 1;

/// The future every [`Counters`] method returns, boxed so the trait can be used as
/// `Arc<dyn Counters>`.
pub type CounterFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Atomic, windowed counters. Implementations must make [`Counters::reserve`] all-or-nothing
/// and linearizable: under any concurrency, the sum admitted in a window never exceeds a limit.
pub trait Counters: Send + Sync {
    /// Adds every charge if every limit still has room; otherwise adds nothing and refuses with
    /// the first charge (in order) that does not fit, as [`PolicyError::Refused`]. Charges must
    /// use distinct counters, or the reservation fails with [`PolicyError::DuplicateCounter`]
    /// ([`crate::budget::plan_charges`] charges a limit listed twice only once).
    ///
    /// Cancel-safety: if the future is dropped before completing, the reservation may or may not
    /// have been applied, and no hold is returned to release it; its amounts then stay counted
    /// until their windows end.
    fn reserve<'a>(&'a self, charges: &'a [Charge])
    -> CounterFuture<'a, Result<Hold, PolicyError>>;

    /// Replaces the reserved amounts by the actual ones: each counter moves by
    /// `actual - reserved` (down, or up when the request used more than its worst case),
    /// never below zero. Request counts stay as reserved. Not checked against limits: the
    /// request has already run.
    fn settle(&self, hold: Hold, actual: Consumption)
    -> CounterFuture<'_, Result<(), PolicyError>>;

    /// Takes back everything the hold reserved, request counts included: the request was
    /// refused later or never sent.
    fn release(&self, hold: Hold) -> CounterFuture<'_, Result<(), PolicyError>>;

    /// What `limit`'s current window holds at `now`.
    fn usage<'a>(
        &'a self,
        limit: &'a Limit,
        now: UnixMs,
    ) -> CounterFuture<'a, Result<u64, PolicyError>>;

    /// Raises each counter to at least its amount (never lowers one), creating it with its
    /// expiry when missing: counters rebuilt from the request records ([`rebuild`]).
    fn restore<'a>(&'a self, amounts: &'a [Restore]) -> CounterFuture<'a, Result<(), PolicyError>>;

    /// Marks the counters as holding this deployment's state, and says whether they did not
    /// already: `true` the first time in process (memory), or when Redis has lost its data
    /// (restarted empty, flushed) since the last mark. The caller then rebuilds them.
    fn claim_rebuild(&self) -> CounterFuture<'_, Result<bool, PolicyError>>;
}

/// One counter to raise to at least `amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub(crate) key: String,
    pub amount: u64,
    pub(crate) expires_at: UnixMs,
}

impl Restore {
    /// The counter's key (under the store's prefix).
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// What admission does when the counters cannot be reached (Redis down or slow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCounterError {
    /// Refuse the request: no spend goes unmetered.
    Closed,
    /// Admit the request without counting it, and say so in the log: availability first.
    Open,
}

/// One counter of a window: where it starts (its key is the charge's prefix and this start)
/// and when it stops counting towards the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) start: UnixMs,
    pub(crate) leaves_at: UnixMs,
}

/// A request's demand on one limit, in the limit's current window. Built by
/// [`Limit::charge`] or [`crate::budget::plan_charges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub(crate) limit: Limit,
    pub(crate) amount: u64,
    /// Everything of a slot's counter key but the slot's start.
    pub(crate) prefix: String,
    /// Oldest first; the last is where the amount is added.
    pub(crate) slots: Vec<Slot>,
    /// The counter key of the last slot, built once: the one every backend writes.
    pub(crate) write_key: String,
    /// When the written counter may be forgotten: the end of its window plus slack.
    pub(crate) expires_at: UnixMs,
    /// The instant the window was chosen at.
    pub(crate) as_of: UnixMs,
}

impl Charge {
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    pub fn amount(&self) -> u64 {
        self.amount
    }

    pub(crate) fn write_slot(&self) -> Option<&Slot> {
        self.slots.last()
    }

    /// The counter key of the slot written to, if the charge has slots.
    pub(crate) fn write_key(&self) -> Option<&str> {
        self.slots.last().map(|_| self.write_key.as_str())
    }

    /// The counter key of `slot`.
    pub(crate) fn slot_key(&self, slot: &Slot) -> String {
        crate::budget::slot_key(&self.prefix, slot.start)
    }

    /// The counter key of `slot`, written over `key`: one buffer for every slot of a charge.
    pub(crate) fn slot_key_into(&self, slot: &Slot, key: &mut String) {
        key.clear();
        key.push_str(&self.prefix);
        crate::budget::push_decimal(key, slot.start.0);
    }

    /// When capacity starts to free, given each slot's current value (same order as `slots`):
    /// the moment the oldest non-empty slot leaves the window. For a calendar period that is
    /// the window's end.
    pub(crate) fn frees_at(&self, slot_values: &[u64]) -> UnixMs {
        self.frees_at_slot(slot_values.iter().position(|value| *value > 0))
    }

    /// As [`Charge::frees_at`], from the index of the oldest non-empty slot.
    pub(crate) fn frees_at_slot(&self, first_non_empty: Option<usize>) -> UnixMs {
        let slot = first_non_empty
            .and_then(|index| self.slots.get(index))
            .or(self.slots.last());
        slot.map_or(self.as_of, |slot| slot.leaves_at)
    }

    pub(crate) fn refusal(&self, used: u64, frees_at: UnixMs) -> PolicyError {
        PolicyError::Refused(Box::new(Refusal {
            limit: self.limit.clone(),
            used,
            requested: self.amount,
            resets_at: frees_at,
            retry_after: self.as_of.until(frees_at),
        }))
    }
}

/// Rejects a reservation whose charges share a counter.
pub(crate) fn check_distinct(charges: &[Charge]) -> Result<(), PolicyError> {
    let mut keys: Vec<&str> = charges.iter().filter_map(Charge::write_key).collect();
    keys.sort_unstable();
    match keys.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(PolicyError::DuplicateCounter {
            key: pair[0].to_owned(),
        }),
        None => Ok(()),
    }
}

/// Why a request was not admitted: enough for a person to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that would have been exceeded: scope, metric, period, amount.
    pub limit: Limit,
    /// What the window already held.
    pub used: u64,
    /// What the request needed (its worst case).
    pub requested: u64,
    /// When the window resets (calendar) or capacity starts to free (rolling).
    pub resets_at: UnixMs,
    /// From the refusal until `resets_at`.
    pub retry_after: Duration,
}

impl Refusal {
    pub fn remaining(&self) -> u64 {
        self.limit.amount.saturating_sub(self.used)
    }

    /// Whole seconds for `Retry-After`, rounded up so a client never retries early.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after
            .as_millis()
            .div_ceil(1_000)
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// `team `search` has used $4.98 of its $5.00 daily budget; resets at 2026-12-03T00:00:00Z`.
    pub fn message(&self) -> String {
        self.limit
            .refusal_message(self.used, self.requested, self.resets_at)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// The state of one limit right after a reservation, for `x-ratelimit-*` and
/// `x-sluice-budget-remaining` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub limit: Limit,
    /// Used in the window, this reservation included.
    pub used: u64,
    /// When the window resets (calendar) or capacity starts to free (rolling).
    pub resets_at: UnixMs,
}

impl Quota {
    pub fn remaining(&self) -> u64 {
        self.limit.amount.saturating_sub(self.used)
    }
}

/// One counter a hold added to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldAmount {
    pub(crate) key: String,
    pub(crate) metric: Metric,
    pub(crate) reserved: u64,
    pub(crate) expires_at: UnixMs,
}

/// A change to one counter: the delta is applied, the result clamped at zero, and a missing
/// counter is only created for a positive delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Adjustment {
    pub(crate) key: String,
    pub(crate) delta: i64,
    pub(crate) expires_at: UnixMs,
}

/// Amounts reserved by [`Counters::reserve`]. Consumed by value by exactly one
/// [`Counters::settle`] or [`Counters::release`]; it cannot be cloned. Dropped unsettled, its
/// amounts stay counted until their windows end (see [`HoldGuard`]).
#[must_use = "settle or release the hold; dropped, its amounts stay counted until their windows end"]
#[derive(Debug, PartialEq, Eq)]
pub struct Hold {
    pub(crate) held: Vec<HeldAmount>,
    pub(crate) quotas: Vec<Quota>,
}

impl Hold {
    /// Each limit's state after the reservation, in charge order.
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// The tightest remaining amount among limits of `metric`, if any applies.
    pub fn remaining(&self, metric: Metric) -> Option<u64> {
        self.quotas
            .iter()
            .filter(|quota| quota.limit.metric == metric)
            .map(Quota::remaining)
            .min()
    }

    pub(crate) fn settlement(self, actual: Consumption) -> Vec<Adjustment> {
        self.held
            .into_iter()
            .map(|held| {
                let actual_amount = match held.metric {
                    Metric::Requests => held.reserved,
                    metric => actual.amount_for(metric),
                };
                Adjustment {
                    delta: signed(actual_amount).saturating_sub(signed(held.reserved)),
                    key: held.key,
                    expires_at: held.expires_at,
                }
            })
            .filter(|adjustment| adjustment.delta != 0)
            .collect()
    }

    pub(crate) fn releases(self) -> Vec<Adjustment> {
        self.held
            .into_iter()
            .filter(|held| held.reserved > 0)
            .map(|held| Adjustment {
                delta: -signed(held.reserved),
                key: held.key,
                expires_at: held.expires_at,
            })
            .collect()
    }
}

fn signed(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// When a quota resets: a calendar window's end, or when a rolling window's oldest non-empty
/// slot (after the reservation) leaves it.
pub(crate) fn quota_resets_at(charge: &Charge, first_non_empty_after: Option<usize>) -> UnixMs {
    match charge.limit.period {
        Period::Day | Period::Week | Period::Month => charge.frees_at_slot(None),
        Period::Rolling(_) => charge.frees_at_slot(first_non_empty_after),
    }
}

/// Owns a [`Hold`] for the life of a request and guarantees it is settled at most once and
/// released if nobody settles it: dropping the guard (a client disconnect, a panic, an early
/// return) releases the hold on a task tracked by `tracker`, so shutdown can wait for it.
/// Outside a Tokio runtime the release cannot run; the amounts then stay counted until their
/// windows end and a warning is logged.
pub struct HoldGuard {
    counters: Arc<dyn Counters>,
    hold: Option<Hold>,
    tracker: TaskTracker,
}

impl fmt::Debug for HoldGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HoldGuard")
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

impl HoldGuard {
    pub fn new(counters: Arc<dyn Counters>, hold: Hold, tracker: TaskTracker) -> HoldGuard {
        HoldGuard {
            counters,
            hold: Some(hold),
            tracker,
        }
    }

    /// The quotas of the hold, for response headers.
    pub fn quotas(&self) -> &[Quota] {
        self.hold.as_ref().map_or(&[], Hold::quotas)
    }

    /// Settles to the actual consumption. If this future is dropped before it completes, the
    /// settlement may or may not have been applied, and it is never applied twice.
    pub async fn settle(mut self, actual: Consumption) -> Result<(), PolicyError> {
        match self.hold.take() {
            Some(hold) => self.counters.settle(hold, actual).await,
            None => Ok(()),
        }
    }

    /// Releases everything reserved. Same cancel-safety as [`HoldGuard::settle`].
    pub async fn release(mut self) -> Result<(), PolicyError> {
        match self.hold.take() {
            Some(hold) => self.counters.release(hold).await,
            None => Ok(()),
        }
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        let Some(hold) = self.hold.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let counters = Arc::clone(&self.counters);
                self.tracker.spawn_on(
                    async move {
                        if let Err(error) = counters.release(hold).await {
                            tracing::warn!(%error, "releasing an unsettled budget hold failed");
                        }
                    },
                    &runtime,
                );
            }
            Err(_) => {
                tracing::warn!(
                    "budget hold dropped outside a runtime; it stays counted until its windows end"
                );
            }
        }
    }
}
