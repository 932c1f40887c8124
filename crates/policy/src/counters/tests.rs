//! One conformance suite for every [`Counters`] implementation, plus what only one backend can
//! show. Memory runs every time; Redis runs when `SLUICE_TEST_REDIS_URL` is set, with two
//! separate clients standing in for two replicas.

use std::sync::Arc;
use std::time::Duration;

use sluice_types::Money;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use super::*;
use crate::budget::{Consumption, Limit, Metric, Period, Scope, plan_charges};
use crate::calendar::{Clock, SystemClock, UnixMs};

/// Noon UTC of the day after tomorrow: every call of a test uses this one instant, so no test
/// straddles a window boundary, and Redis keys (which expire at real times) outlive the test.
fn fixed_now() -> UnixMs {
    let day = SystemClock.now().day_number() + 2;
    UnixMs(day * 86_400_000 + 12 * 3_600_000)
}

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

fn dollars(micros: i64) -> Money {
    Money::from_micros(micros)
}

fn refusal_of(result: Result<Hold, PolicyError>) -> Refusal {
    match result {
        Err(PolicyError::Refused(refusal)) => *refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Two views of one set of counters: the same instance twice (memory) or two clients (Redis).
type Replicas = (Arc<dyn Counters>, Arc<dyn Counters>);

mod conformance {
    use super::*;

    /// 200 concurrent reservations of $0.10 against a $5.00 team budget: exactly 50 fit. The
    /// key level above has room for all of them, so any partial increment would show there.
    pub(super) async fn admits_exactly_the_budget_under_concurrency((first, second): Replicas) {
        let now = fixed_now();
        let team_budget = Limit::usd(
            Scope::Team(unique("search")),
            dollars(5_000_000),
            Period::Day,
        )
        .unwrap();
        let key_budget =
            Limit::usd(Scope::Key(unique("k")), dollars(100_000_000), Period::Day).unwrap();
        let limits = Arc::new(vec![team_budget.clone(), key_budget.clone()]);
        let mut tasks = JoinSet::new();
        for index in 0..200 {
            let counters = if index % 2 == 0 {
                Arc::clone(&first)
            } else {
                Arc::clone(&second)
            };
            let limits = Arc::clone(&limits);
            tasks.spawn(async move {
                let demand = Consumption {
                    cost: dollars(100_000),
                    tokens: 0,
                };
                let charges = plan_charges(limits.iter(), "gpt-4o", &demand, now).unwrap();
                counters.reserve(&charges).await
            });
        }
        let mut holds = Vec::new();
        let mut refusals = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.unwrap() {
                Ok(hold) => holds.push(hold),
                Err(PolicyError::Refused(refusal)) => refusals.push(*refusal),
                Err(other) => panic!("reserve failed: {other}"),
            }
        }
        assert_eq!(holds.len(), 50);
        assert_eq!(refusals.len(), 150);
        for hold in &holds {
            let team_quota = &hold.quotas()[0];
            assert_eq!(team_quota.limit, team_budget);
            assert!(
                team_quota.used <= 5_000_000,
                "used {} over the cap",
                team_quota.used
            );
        }
        for refusal in &refusals {
            assert_eq!(
                refusal.limit, team_budget,
                "the key level is never the one refusing"
            );
            assert!(refusal.used <= 5_000_000);
            assert!(refusal.used + refusal.requested > 5_000_000);
        }
        assert_eq!(first.usage(&team_budget, now).await.unwrap(), 5_000_000);
        assert_eq!(second.usage(&key_budget, now).await.unwrap(), 5_000_000);

        // Each request turns out to cost $0.04: 50 x $0.04 = $2.00 at both levels.
        let mut settlements = JoinSet::new();
        for (index, hold) in holds.into_iter().enumerate() {
            let counters = if index % 2 == 0 {
                Arc::clone(&first)
            } else {
                Arc::clone(&second)
            };
            settlements.spawn(async move {
                counters
                    .settle(
                        hold,
                        Consumption {
                            cost: dollars(40_000),
                            tokens: 0,
                        },
                    )
                    .await
            });
        }
        while let Some(joined) = settlements.join_next().await {
            joined.unwrap().unwrap();
        }
        assert_eq!(second.usage(&team_budget, now).await.unwrap(), 2_000_000);
        assert_eq!(first.usage(&key_budget, now).await.unwrap(), 2_000_000);
    }

    pub(super) async fn refuses_all_or_nothing_and_names_the_level((counters, _): Replicas) {
        let now = fixed_now();
        let org = Limit::usd(
            Scope::Organisation(unique("acme")),
            dollars(1_000_000),
            Period::Month,
        )
        .unwrap();
        let team_budget =
            Limit::usd(Scope::Team(unique("search")), dollars(250_000), Period::Day).unwrap();
        let charges = |cost| {
            let demand = Consumption {
                cost: dollars(cost),
                tokens: 0,
            };
            plan_charges([&org, &team_budget], "gpt-4o", &demand, now).unwrap()
        };
        let hold = counters.reserve(&charges(200_000)).await.unwrap();

        let refusal = refusal_of(counters.reserve(&charges(200_000)).await);
        assert_eq!(refusal.limit, team_budget);
        assert_eq!(
            (refusal.used, refusal.requested, refusal.remaining()),
            (200_000, 200_000, 50_000)
        );
        let midnight = UnixMs((now.day_number() + 1) * 86_400_000);
        assert_eq!(refusal.resets_at, midnight);
        assert_eq!(refusal.retry_after, Duration::from_secs(12 * 3_600));
        assert_eq!(refusal.retry_after_secs(), 43_200);
        assert!(refusal.message().starts_with("team `search-"));
        assert!(refusal.message().ends_with(&format!(
            "has used $0.20 of its $0.25 daily budget; resets at {midnight}"
        )));

        // The organisation level was not touched by the refused request.
        assert_eq!(counters.usage(&org, now).await.unwrap(), 200_000);
        assert_eq!(counters.usage(&team_budget, now).await.unwrap(), 200_000);
        counters.release(hold).await.unwrap();
        assert_eq!(counters.usage(&org, now).await.unwrap(), 0);
    }

    pub(super) async fn settles_to_actual_amounts((counters, other): Replicas) {
        let now = fixed_now();
        let key = Scope::Key(unique("k"));
        let spend = Limit::usd(key.clone(), dollars(10_000_000), Period::Week).unwrap();
        let tokens = Limit::tokens(key.clone(), 1_000_000, Period::Month).unwrap();
        let requests = Limit::requests(key.clone(), 100, Period::Day).unwrap();
        let demand = Consumption {
            cost: dollars(100_000),
            tokens: 1_000,
        };
        let charges = plan_charges([&spend, &tokens, &requests], "gpt-4o", &demand, now).unwrap();
        let hold = counters.reserve(&charges).await.unwrap();
        assert_eq!(hold.remaining(Metric::Usd), Some(9_900_000));
        assert_eq!(hold.remaining(Metric::Tokens), Some(999_000));
        assert_eq!(hold.remaining(Metric::Requests), Some(99));

        // Cheaper than the worst case, but more tokens than estimated: both are recorded.
        other
            .settle(
                hold,
                Consumption {
                    cost: dollars(30_000),
                    tokens: 1_300,
                },
            )
            .await
            .unwrap();
        assert_eq!(counters.usage(&spend, now).await.unwrap(), 30_000);
        assert_eq!(counters.usage(&tokens, now).await.unwrap(), 1_300);
        assert_eq!(counters.usage(&requests, now).await.unwrap(), 1);

        let second = counters.reserve(&charges).await.unwrap();
        assert_eq!(counters.usage(&spend, now).await.unwrap(), 130_000);
        counters.release(second).await.unwrap();
        assert_eq!(counters.usage(&spend, now).await.unwrap(), 30_000);
        assert_eq!(counters.usage(&tokens, now).await.unwrap(), 1_300);
        assert_eq!(counters.usage(&requests, now).await.unwrap(), 1);
    }

    pub(super) async fn rate_limits_free_capacity_bucket_by_bucket((counters, other): Replicas) {
        let start = fixed_now();
        let rpm = Limit::requests_per_minute(Scope::Key(unique("k")), 3).unwrap();
        let reserve = |counters: &Arc<dyn Counters>, offset_ms: i64| {
            let charge = rpm.charge(1, UnixMs(start.0 + offset_ms)).unwrap();
            let counters = Arc::clone(counters);
            async move { counters.reserve(std::slice::from_ref(&charge)).await }
        };
        let first_hold = reserve(&counters, 0).await.unwrap();
        assert_eq!(first_hold.quotas()[0].resets_at, UnixMs(start.0 + 60_000));
        let _second = reserve(&other, 1_000).await.unwrap();
        let third = reserve(&counters, 2_000).await.unwrap();
        assert_eq!(third.quotas()[0].remaining(), 0);

        let refusal = refusal_of(reserve(&other, 3_000).await);
        assert_eq!((refusal.used, refusal.limit.amount), (3, 3));
        // The bucket holding the first three requests leaves the window 60 s after it began.
        assert_eq!(refusal.resets_at, UnixMs(start.0 + 60_000));
        assert_eq!(refusal.retry_after, Duration::from_secs(57));
        assert!(
            refusal
                .message()
                .contains("rolling 1-minute request limit; capacity frees up from")
        );

        // Still full just before, free again once the bucket has left.
        assert!(reserve(&counters, 59_999).await.is_err());
        let later = reserve(&counters, 60_000).await.unwrap();
        assert_eq!(later.quotas()[0].used, 1);
        assert_eq!(later.quotas()[0].resets_at, UnixMs(start.0 + 120_000));
    }

    pub(super) async fn rejects_charges_sharing_a_counter((counters, _): Replicas) {
        let now = fixed_now();
        let limit = Limit::tokens(Scope::Key(unique("k")), 10, Period::Day).unwrap();
        let charge = limit.charge(1, now).unwrap();
        let result = counters.reserve(&[charge.clone(), charge]).await;
        assert!(matches!(result, Err(PolicyError::DuplicateCounter { .. })));
        assert_eq!(counters.usage(&limit, now).await.unwrap(), 0);
    }

    pub(super) async fn an_empty_reservation_holds_nothing((counters, _): Replicas) {
        let hold = counters.reserve(&[]).await.unwrap();
        assert!(hold.quotas().is_empty());
        counters.release(hold).await.unwrap();
    }

    pub(super) async fn a_dropped_guard_releases_its_hold((counters, _): Replicas) {
        let now = fixed_now();
        let limit =
            Limit::usd(Scope::EndUser(unique("u")), dollars(1_000_000), Period::Day).unwrap();
        let tracker = TaskTracker::new();
        let hold = counters
            .reserve(&[limit.charge(250_000, now).unwrap()])
            .await
            .unwrap();
        let guard = HoldGuard::new(Arc::clone(&counters), hold, tracker.clone());
        assert_eq!(guard.quotas()[0].used, 250_000);
        assert_eq!(counters.usage(&limit, now).await.unwrap(), 250_000);
        drop(guard);
        tracker.close();
        tracker.wait().await;
        assert_eq!(counters.usage(&limit, now).await.unwrap(), 0);

        let hold = counters
            .reserve(&[limit.charge(250_000, now).unwrap()])
            .await
            .unwrap();
        let guard = HoldGuard::new(Arc::clone(&counters), hold, TaskTracker::new());
        guard
            .settle(Consumption {
                cost: dollars(1_000),
                tokens: 0,
            })
            .await
            .unwrap();
        assert_eq!(counters.usage(&limit, now).await.unwrap(), 1_000);
    }
}

/// Runs every conformance case against one pair of replicas.
macro_rules! conformance_suite {
    ($replicas:expr) => {
        use super::conformance;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn admits_exactly_the_budget_under_concurrency() {
            if let Some(replicas) = $replicas {
                conformance::admits_exactly_the_budget_under_concurrency(replicas).await;
            }
        }

        #[tokio::test]
        async fn refuses_all_or_nothing_and_names_the_level() {
            if let Some(replicas) = $replicas {
                conformance::refuses_all_or_nothing_and_names_the_level(replicas).await;
            }
        }

        #[tokio::test]
        async fn settles_to_actual_amounts() {
            if let Some(replicas) = $replicas {
                conformance::settles_to_actual_amounts(replicas).await;
            }
        }

        #[tokio::test]
        async fn rate_limits_free_capacity_bucket_by_bucket() {
            if let Some(replicas) = $replicas {
                conformance::rate_limits_free_capacity_bucket_by_bucket(replicas).await;
            }
        }

        #[tokio::test]
        async fn rejects_charges_sharing_a_counter() {
            if let Some(replicas) = $replicas {
                conformance::rejects_charges_sharing_a_counter(replicas).await;
            }
        }

        #[tokio::test]
        async fn an_empty_reservation_holds_nothing() {
            if let Some(replicas) = $replicas {
                conformance::an_empty_reservation_holds_nothing(replicas).await;
            }
        }

        #[tokio::test]
        async fn a_dropped_guard_releases_its_hold() {
            if let Some(replicas) = $replicas {
                conformance::a_dropped_guard_releases_its_hold(replicas).await;
            }
        }
    };
}

mod memory {
    use super::*;

    fn replicas() -> Option<Replicas> {
        let counters: Arc<dyn Counters> = Arc::new(MemoryCounters::new());
        Some((Arc::clone(&counters), counters))
    }

    conformance_suite!(replicas());

    #[tokio::test]
    async fn forgets_expired_counters_and_never_goes_below_zero() {
        let counters = MemoryCounters::new();
        let day_one = UnixMs::from_date_time(2026, 12, 2, 12, 0, 0).unwrap();
        let old = Limit::usd(Scope::Team("t".into()), dollars(1_000_000), Period::Day).unwrap();
        let hold = counters
            .reserve(&[old.charge(100_000, day_one).unwrap()])
            .await
            .unwrap();
        assert_eq!(counters.counter_count(), 1);

        // Two days later another reservation sweeps the expired counter away.
        let day_three = UnixMs(day_one.0 + 2 * 86_400_000);
        let fresh = Limit::tokens(Scope::Team("t".into()), 10, Period::Day).unwrap();
        let other = counters
            .reserve(&[fresh.charge(1, day_three).unwrap()])
            .await
            .unwrap();
        assert_eq!(counters.counter_count(), 1);

        // Releasing the old hold has nothing left to take back: no counter comes back.
        counters.release(hold).await.unwrap();
        assert_eq!(counters.counter_count(), 1);
        assert_eq!(counters.usage(&old, day_one).await.unwrap(), 0);
        counters.release(other).await.unwrap();
        assert_eq!(counters.usage(&fresh, day_three).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_tenants_end_users_hold_at_most_the_cap_of_entries_and_other_tenants_are_unaffected()
    {
        let counters = MemoryCounters::with_max_per_tenant(3);
        let entries = counters.entries();
        let day_one = UnixMs::from_date_time(2026, 12, 2, 12, 0, 0).unwrap();
        let user = |tenant: &str, user: &str| {
            Limit::requests(Scope::end_user(tenant, user), 10, Period::Day).unwrap()
        };
        let team = Limit::requests(Scope::Team("t".into()), 1_000, Period::Day).unwrap();
        let reserve = |tenant: &'static str, name: &'static str, at: UnixMs| {
            let charges = [
                team.charge(1, at).unwrap(),
                user(tenant, name).charge(1, at).unwrap(),
            ];
            let counters = &counters;
            async move { counters.reserve(&charges).await }
        };
        let mut held = Vec::new();
        for name in ["a", "b", "c"] {
            held.push(reserve("acme", name, day_one).await.unwrap());
        }
        // acme's fourth end user would be a fourth entry: refused, nothing reserved.
        match reserve("acme", "d", day_one).await {
            Err(PolicyError::TooManyCounters { tenant, limit }) => {
                assert_eq!((tenant.as_str(), limit), ("acme", 3));
            }
            other => panic!("expected the cap, got {other:?}"),
        }
        assert_eq!(entries.refused(), 1);
        assert_eq!(counters.usage(&team, day_one).await.unwrap(), 3);
        // An end user already counted is still served, and so is another tenant's.
        held.push(reserve("acme", "a", day_one).await.unwrap());
        held.push(reserve("globex", "d", day_one).await.unwrap());
        assert_eq!(entries.live(), 1 + 3 + 1);
        assert_eq!(counters.counter_count(), 5);

        // Once acme's windows end, their entries are swept and new end users fit again.
        let day_three = UnixMs(day_one.0 + 2 * 86_400_000);
        held.push(reserve("acme", "d", day_three).await.unwrap());
        assert_eq!(entries.refused(), 1);
        assert_eq!(entries.live(), 2, "the team's and acme's d, of the new day");
        drop(held);
    }

    #[tokio::test]
    async fn a_new_window_starts_from_zero() {
        let counters = MemoryCounters::new();
        let before_midnight = UnixMs::from_date_time(2026, 12, 2, 23, 59, 59).unwrap();
        let after_midnight = UnixMs::from_date(2026, 12, 3).unwrap();
        let limit = Limit::usd(Scope::Team("t".into()), dollars(100), Period::Day).unwrap();
        let _spent = counters
            .reserve(&[limit.charge(100, before_midnight).unwrap()])
            .await
            .unwrap();
        assert!(
            counters
                .reserve(&[limit.charge(1, before_midnight).unwrap()])
                .await
                .is_err()
        );
        let next_day = counters
            .reserve(&[limit.charge(100, after_midnight).unwrap()])
            .await
            .unwrap();
        assert_eq!(next_day.quotas()[0].used, 100);
        assert_eq!(
            next_day.quotas()[0].resets_at,
            UnixMs::from_date(2026, 12, 4).unwrap()
        );
    }
}

#[cfg(feature = "redis")]
mod redis {
    use std::io::Write;

    use super::*;

    /// Set to run these tests against a real Redis, e.g. `redis://127.0.0.1:6379`.
    const URL_VARIABLE: &str = "SLUICE_TEST_REDIS_URL";

    fn url() -> Option<String> {
        match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                // Written to the real stderr so the skip shows even when output is captured.
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: Redis counter test (set {URL_VARIABLE}=redis://127.0.0.1:6379 to run it)"
                );
                None
            }
        }
    }

    /// Two clients, each with its own connection, sharing a prefix unique to this test.
    async fn connect_pair() -> Option<(Arc<RedisCounters>, Arc<RedisCounters>)> {
        let url = url()?;
        let settings = RedisSettings {
            key_prefix: format!("sluice-test:{}:", uuid::Uuid::new_v4().simple()),
            ..RedisSettings::new(url)
        };
        let first = RedisCounters::connect(&settings).await.unwrap();
        let second = RedisCounters::connect(&settings).await.unwrap();
        Some((Arc::new(first), Arc::new(second)))
    }

    async fn keys_under_prefix(counters: &RedisCounters) -> Vec<String> {
        let mut connection = counters.connection();
        let pattern = format!("{}*", counters.key_prefix());
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut connection)
                .await
                .unwrap();
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    async fn delete_keys(counters: &RedisCounters) {
        let keys = keys_under_prefix(counters).await;
        if !keys.is_empty() {
            let mut connection = counters.connection();
            let _: i64 = ::redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    }

    /// Runs a conformance case on two replicas, then deletes the test's keys.
    macro_rules! on_two_replicas {
        ($case:path) => {{
            if let Some((first, second)) = connect_pair().await {
                let replicas: Replicas = (first.clone(), second.clone());
                $case(replicas).await;
                delete_keys(&first).await;
                assert!(keys_under_prefix(&second).await.is_empty());
            }
        }};
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admits_exactly_the_budget_under_concurrency() {
        on_two_replicas!(conformance::admits_exactly_the_budget_under_concurrency);
    }

    #[tokio::test]
    async fn refuses_all_or_nothing_and_names_the_level() {
        on_two_replicas!(conformance::refuses_all_or_nothing_and_names_the_level);
    }

    #[tokio::test]
    async fn settles_to_actual_amounts() {
        on_two_replicas!(conformance::settles_to_actual_amounts);
    }

    #[tokio::test]
    async fn rate_limits_free_capacity_bucket_by_bucket() {
        on_two_replicas!(conformance::rate_limits_free_capacity_bucket_by_bucket);
    }

    #[tokio::test]
    async fn rejects_charges_sharing_a_counter() {
        on_two_replicas!(conformance::rejects_charges_sharing_a_counter);
    }

    #[tokio::test]
    async fn an_empty_reservation_holds_nothing() {
        on_two_replicas!(conformance::an_empty_reservation_holds_nothing);
    }

    #[tokio::test]
    async fn a_dropped_guard_releases_its_hold() {
        on_two_replicas!(conformance::a_dropped_guard_releases_its_hold);
    }

    #[tokio::test]
    async fn counters_expire_with_their_window_and_never_go_below_zero() {
        let Some((counters, _)) = connect_pair().await else {
            return;
        };
        let now = fixed_now();
        let limit = Limit::usd(Scope::Team(unique("t")), dollars(1_000_000), Period::Day).unwrap();
        let hold = counters
            .reserve(&[limit.charge(100_000, now).unwrap()])
            .await
            .unwrap();
        let keys = keys_under_prefix(&counters).await;
        assert_eq!(keys.len(), 1);

        let mut connection = counters.connection();
        let expires_at: i64 = ::redis::cmd("PEXPIRETIME")
            .arg(&keys[0])
            .query_async(&mut connection)
            .await
            .unwrap();
        let window_end = (now.day_number() + 1) * 86_400_000;
        assert_eq!(
            expires_at,
            window_end + 300_000,
            "expires at the window's end plus slack"
        );

        // The counter vanishes (as at expiry); releasing must not bring it back negative.
        delete_keys(&counters).await;
        counters.release(hold).await.unwrap();
        assert!(keys_under_prefix(&counters).await.is_empty());
        assert_eq!(counters.usage(&limit, now).await.unwrap(), 0);

        // A settlement above the reservation still records the spend, with an expiry.
        let hold = counters
            .reserve(&[limit.charge(100_000, now).unwrap()])
            .await
            .unwrap();
        delete_keys(&counters).await;
        counters
            .settle(
                hold,
                Consumption {
                    cost: dollars(150_000),
                    tokens: 0,
                },
            )
            .await
            .unwrap();
        assert_eq!(counters.usage(&limit, now).await.unwrap(), 50_000);
        let keys = keys_under_prefix(&counters).await;
        let expires_at: i64 = ::redis::cmd("PEXPIRETIME")
            .arg(&keys[0])
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(expires_at, window_end + 300_000);
        delete_keys(&counters).await;
    }

    #[tokio::test]
    async fn large_amounts_are_added_exactly() {
        let Some((counters, _)) = connect_pair().await else {
            return;
        };
        let now = fixed_now();
        let limit = Limit::usd(
            Scope::Organisation(unique("big")),
            Money::from_micros(MAX_COUNTER_AMOUNT as i64),
            Period::Month,
        )
        .unwrap();
        // 10^15 micro-USD: Lua would print this as 1e+15 if it re-formatted the number.
        let hold = counters
            .reserve(&[limit.charge(1_000_000_000_000_000, now).unwrap()])
            .await
            .unwrap();
        assert_eq!(
            counters.usage(&limit, now).await.unwrap(),
            1_000_000_000_000_000
        );
        counters
            .settle(
                hold,
                Consumption {
                    cost: Money::from_micros(123_456_789_012_345),
                    tokens: 0,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            counters.usage(&limit, now).await.unwrap(),
            123_456_789_012_345
        );
        delete_keys(&counters).await;
    }

    #[tokio::test]
    async fn reports_an_unreachable_store_as_an_error() {
        let settings = RedisSettings {
            connect_timeout: Duration::from_millis(200),
            ..RedisSettings::new("redis://127.0.0.1:1")
        };
        let error = RedisCounters::connect(&settings).await.unwrap_err();
        assert!(matches!(error, PolicyError::CounterStore(_)));
        assert_eq!(
            sluice_types::Classify::kind(&error),
            sluice_types::ErrorKind::PolicyUnavailable
        );
    }
}
