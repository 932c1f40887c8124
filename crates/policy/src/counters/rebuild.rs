//! Rebuilding counters from what requests used: after a restart (in-process counters start
//! empty) or when Redis lost its data, the current windows' counters are raised to what the
//! request records say was charged, so a budget does not start over.
//!
//! Owns: which limits a recorded request counted against ([`LimitBook`], the same rules as
//! admission: a scope's own rows, else the `*` row of its level for keys and end users; the
//! alias's own limits), and turning recorded usage into one [`Restore`] per counter
//! ([`restorations`]). Leaves to others: reading the records (`sluice-store`, grouped by
//! [`LimitBook::granularity_ms`]) and when to rebuild ([`super::Counters::claim_rebuild`]).
//!
//! A recorded request counts what it was settled to: one request, its input plus output
//! tokens, its cost. Reservations in flight at the moment of a crash, and requests whose
//! records were shed or lost, are not in the records and so are not rebuilt
//! (`docs/budgets.md`).

use std::collections::HashMap;

use super::Restore;
use crate::budget::{Level, Limit, Metric, Period, Scope};
use crate::calendar::{MS_PER_DAY, UnixMs, duration_ms};
use crate::error::PolicyError;

/// Every limit in force, indexed the way admission looks them up.
#[derive(Debug, Default, Clone)]
pub struct LimitBook {
    by_scope: HashMap<Scope, Vec<Limit>>,
}

impl LimitBook {
    /// `limits`: the budget rows (a `*` id stands for every key or end user) and each alias's
    /// own limits.
    pub fn new(limits: impl IntoIterator<Item = Limit>) -> LimitBook {
        let mut by_scope: HashMap<Scope, Vec<Limit>> = HashMap::new();
        for limit in limits {
            let entry = by_scope.entry(limit.scope.clone()).or_default();
            if !entry.contains(&limit) {
                entry.push(limit);
            }
        }
        LimitBook { by_scope }
    }

    pub fn is_empty(&self) -> bool {
        self.by_scope.is_empty()
    }

    /// The limits `scope` is charged against: the rows of each of its [`Scope::row_ids`],
    /// most specific first (its own, the same user id in every tenant, `*`), a row overriding
    /// a later one of the same metric, period and model; each bound to `scope`.
    pub fn limits_of(&self, scope: &Scope) -> Vec<Limit> {
        let mut out: Vec<Limit> = Vec::new();
        for id in scope.row_ids() {
            let row_scope = match scope {
                Scope::Key(_) => Scope::Key(id.to_owned()),
                Scope::EndUser(_) => Scope::EndUser(id.to_owned()),
                other => other.clone(),
            };
            let found = out.len();
            for limit in self.by_scope.get(&row_scope).into_iter().flatten() {
                let overridden = out[..found].iter().any(|o| {
                    o.metric == limit.metric && o.period == limit.period && o.model == limit.model
                });
                if !overridden {
                    out.push(Limit {
                        scope: scope.clone(),
                        ..limit.clone()
                    });
                }
            }
        }
        out
    }

    /// The earliest instant any limit's current window reaches back to at `now`: records
    /// older than it count for nothing.
    pub fn earliest_start(&self, now: UnixMs) -> UnixMs {
        self.by_scope
            .values()
            .flatten()
            .map(|limit| limit.period.window(now).start)
            .min()
            .unwrap_or(now)
    }

    /// A span (ms) that divides every window slot of every limit: usage grouped by it
    /// (`started_at / granularity`) falls in exactly one slot of each limit. A day when only
    /// calendar periods are in force; otherwise the greatest common divisor of a day and each
    /// rolling bucket.
    pub fn granularity_ms(&self) -> i64 {
        self.by_scope
            .values()
            .flatten()
            .map(|limit| match limit.period {
                Period::Day | Period::Week | Period::Month => MS_PER_DAY,
                Period::Rolling(length) => {
                    (duration_ms(length) / crate::budget::ROLLING_BUCKETS).max(1)
                }
            })
            .fold(MS_PER_DAY, gcd)
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// What the requests of one group used: a request chain (organisation … end user), the alias
/// that served, and the group's slot (its start, a multiple of the granularity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedUsage {
    /// The tenant of the key: the end user's counters are the tenant's.
    pub tenant: Option<String>,
    pub organisation: Option<String>,
    pub team: Option<String>,
    pub project: Option<String>,
    pub key: Option<String>,
    pub end_user: Option<String>,
    pub alias: Option<String>,
    pub at: UnixMs,
    pub requests: u64,
    pub tokens: u64,
    pub cost_micros: u64,
}

impl RecordedUsage {
    fn scopes(&self) -> Vec<Scope> {
        let mut scopes = Vec::with_capacity(6);
        let mut push = |id: &Option<String>, scope: fn(String) -> Scope| {
            if let Some(id) = id.as_ref().filter(|id| !id.is_empty()) {
                scopes.push(scope(id.clone()));
            }
        };
        push(&self.organisation, Scope::Organisation);
        push(&self.team, Scope::Team);
        push(&self.project, Scope::Project);
        push(&self.key, Scope::Key);
        push(&self.alias, Scope::Alias);
        if let Some(user) = self.end_user.as_ref().filter(|id| !id.is_empty()) {
            let tenant = self
                .tenant
                .as_deref()
                .unwrap_or(sluice_types::TenantId::DEFAULT);
            scopes.push(Scope::end_user(tenant, user));
        }
        scopes
    }

    fn amount(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Requests => self.requests,
            Metric::Tokens => self.tokens,
            Metric::Usd => self.cost_micros,
        }
    }
}

/// One [`Restore`] per counter that `usage` adds to and that still counts at `now`: each group
/// is charged, as admission would have charged its requests, to every limit of its chain that
/// applies to its alias, in the slot its time falls in.
pub fn restorations(
    book: &LimitBook,
    usage: impl IntoIterator<Item = RecordedUsage>,
    now: UnixMs,
) -> Result<Vec<Restore>, PolicyError> {
    let mut totals: HashMap<String, Restore> = HashMap::new();
    for group in usage {
        let alias = group.alias.clone().unwrap_or_default();
        for scope in group.scopes() {
            // An alias's limits sit outside the hierarchy: they belong to the alias that served.
            if scope.level() == Level::Alias && group.alias.is_none() {
                continue;
            }
            for limit in book.limits_of(&scope) {
                if !limit.applies_to(&alias) {
                    continue;
                }
                let amount = group.amount(limit.metric);
                let charge = limit.charge(amount, group.at)?;
                let Some(slot) = charge.write_slot() else {
                    continue;
                };
                // A slot that left its window (or a past calendar period) counts nothing now.
                let current = match limit.period {
                    Period::Day | Period::Week | Period::Month => {
                        limit.period.window(now).start <= group.at
                    }
                    Period::Rolling(_) => slot.leaves_at > now,
                };
                if amount == 0 || !current || group.at > now {
                    continue;
                }
                let key = charge.write_key.clone();
                let total = totals.entry(key.clone()).or_insert(Restore {
                    key,
                    amount: 0,
                    expires_at: charge.expires_at,
                });
                total.amount = total.amount.saturating_add(amount);
            }
        }
    }
    let mut restores: Vec<Restore> = totals.into_values().collect();
    restores.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(restores)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::counters::{Counters, MemoryCounters};

    fn day_limit(scope: Scope, amount: u64) -> Limit {
        Limit::requests(scope, amount, Period::Day).unwrap()
    }

    fn usage(key: &str, user: &str, at: UnixMs, requests: u64) -> RecordedUsage {
        RecordedUsage {
            tenant: Some("acme".into()),
            organisation: Some("acme".into()),
            team: Some("search".into()),
            project: None,
            key: Some(key.into()),
            end_user: Some(user.into()),
            alias: Some("gpt-4o".into()),
            at,
            requests,
            tokens: 10 * requests,
            cost_micros: 100 * requests,
        }
    }

    #[tokio::test]
    async fn a_rebuilt_counter_holds_what_the_records_used_in_the_current_window() {
        // 2026-12-06T12:00:00Z
        let now = UnixMs(1_796_212_800_000);
        let yesterday = UnixMs(now.0 - MS_PER_DAY);
        let book = LimitBook::new([
            day_limit(Scope::Team("search".into()), 20),
            day_limit(Scope::EndUser("*".into()), 5),
            Limit::tokens_per_minute(Scope::Key("key_a".into()), 1_000).unwrap(),
            Limit::usd(
                Scope::Organisation("acme".into()),
                sluice_types::Money::from_micros(1_000_000),
                Period::Month,
            )
            .unwrap(),
        ]);
        let groups = [
            usage("key_a", "ana", UnixMs(now.0 - 3_600_000), 7),
            usage("key_b", "bob", UnixMs(now.0 - 10_000), 4),
            // Yesterday: not in today's window, but in this month's.
            usage("key_a", "ana", yesterday, 9),
        ];
        let restores = restorations(&book, groups, now).unwrap();
        let counters = Arc::new(MemoryCounters::new());
        counters.restore(&restores).await.unwrap();

        let team = day_limit(Scope::Team("search".into()), 20);
        assert_eq!(counters.usage(&team, now).await.unwrap(), 11);
        let ana = day_limit(Scope::end_user("acme", "ana"), 5);
        assert_eq!(counters.usage(&ana, now).await.unwrap(), 7);
        let org = Limit::usd(
            Scope::Organisation("acme".into()),
            sluice_types::Money::from_micros(1_000_000),
            Period::Month,
        )
        .unwrap();
        assert_eq!(counters.usage(&org, now).await.unwrap(), 2_000);
        // The rolling minute holds only bob's group (10 s ago)... which is key_b's: nothing of
        // key_a's hour-old usage.
        let rpm = Limit::tokens_per_minute(Scope::Key("key_a".into()), 1_000).unwrap();
        assert_eq!(counters.usage(&rpm, now).await.unwrap(), 0);

        // A restore never lowers a counter that already holds more.
        let charge = [team.charge(1, now).unwrap()];
        let hold = counters.reserve(&charge).await.unwrap();
        assert_eq!(hold.quotas()[0].used, 12);
        counters.restore(&restores).await.unwrap();
        assert_eq!(counters.usage(&team, now).await.unwrap(), 12);
        counters.release(hold).await.unwrap();
    }

    #[tokio::test]
    async fn each_tenants_end_user_is_rebuilt_into_a_counter_of_its_own() {
        let now = UnixMs(1_796_212_800_000);
        let book = LimitBook::new([
            day_limit(Scope::EndUser("*".into()), 5),
            day_limit(Scope::EndUser("bob".into()), 7),
            day_limit(Scope::end_user("globex", "bob"), 9),
        ]);
        let mut globex = usage("key_g", "bob", UnixMs(now.0 - 1_000), 4);
        globex.tenant = Some("globex".into());
        let groups = [usage("key_a", "bob", UnixMs(now.0 - 1_000), 3), globex];
        let restores = restorations(&book, groups, now).unwrap();
        let counters = MemoryCounters::new();
        counters.restore(&restores).await.unwrap();
        // Admission binds the most specific row to each tenant's bob: the same counters.
        let acme_bob = day_limit(Scope::end_user("acme", "bob"), 7);
        let globex_bob = day_limit(Scope::end_user("globex", "bob"), 9);
        assert_eq!(
            book.limits_of(&Scope::end_user("acme", "bob")),
            std::slice::from_ref(&acme_bob)
        );
        assert_eq!(
            book.limits_of(&Scope::end_user("globex", "bob")),
            std::slice::from_ref(&globex_bob)
        );
        assert_eq!(counters.usage(&acme_bob, now).await.unwrap(), 3);
        assert_eq!(counters.usage(&globex_bob, now).await.unwrap(), 4);
    }

    #[test]
    fn granularity_divides_every_slot() {
        let book = LimitBook::new([
            day_limit(Scope::Team("t".into()), 1),
            Limit::requests(
                Scope::Key("k".into()),
                1,
                Period::Rolling(Duration::from_secs(60)),
            )
            .unwrap(),
        ]);
        // A minute in 12 buckets: 5 s.
        assert_eq!(book.granularity_ms(), 5_000);
        assert_eq!(
            LimitBook::new([day_limit(Scope::Team("t".into()), 1)]).granularity_ms(),
            MS_PER_DAY
        );
    }

    #[tokio::test]
    async fn claiming_a_rebuild_is_true_once_in_process() {
        let counters = MemoryCounters::new();
        assert!(counters.claim_rebuild().await.unwrap());
        assert!(!counters.claim_rebuild().await.unwrap());
    }
}
