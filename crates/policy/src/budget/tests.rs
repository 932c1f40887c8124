use std::time::Duration;

use sluice_types::Money;

use super::*;
use crate::calendar::UnixMs;

fn at(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> UnixMs {
    UnixMs::from_date_time(year, month, day, hour, minute, second).unwrap()
}

fn midnight(year: i64, month: u32, day: u32) -> UnixMs {
    UnixMs::from_date(year, month, day).unwrap()
}

fn usd(dollars: i64) -> Money {
    Money::from_usd(dollars).unwrap()
}

fn team(id: &str) -> Scope {
    Scope::Team(id.to_owned())
}

#[test]
fn a_day_runs_from_midnight_to_midnight_utc() {
    let window = Period::Day.window(at(2026, 12, 2, 14, 30, 0));
    assert_eq!(window.start, midnight(2026, 12, 2));
    assert_eq!(window.end, midnight(2026, 12, 3));
    assert_eq!(
        Period::Day
            .resets_at(at(2026, 12, 2, 14, 30, 0))
            .to_string(),
        "2026-12-03T00:00:00Z"
    );
}

#[test]
fn the_last_millisecond_of_a_day_belongs_to_it() {
    let last = UnixMs(midnight(2026, 12, 3).0 - 1);
    assert_eq!(Period::Day.window(last).start, midnight(2026, 12, 2));
    assert_eq!(
        Period::Day.window(midnight(2026, 12, 3)).start,
        midnight(2026, 12, 3)
    );
}

#[test]
fn a_week_starts_on_monday() {
    // 2026-12-02 is a Wednesday; its week runs Monday 2026-11-30 to Monday 2026-12-07.
    let window = Period::Week.window(at(2026, 12, 2, 9, 0, 0));
    assert_eq!(window.start, midnight(2026, 11, 30));
    assert_eq!(window.end, midnight(2026, 12, 7));
    // Sunday night is still the same week; Monday midnight starts the next.
    assert_eq!(
        Period::Week.window(at(2026, 12, 6, 23, 59, 59)).start,
        midnight(2026, 11, 30)
    );
    assert_eq!(
        Period::Week.window(midnight(2026, 12, 7)).start,
        midnight(2026, 12, 7)
    );
}

#[test]
fn a_week_can_span_two_years() {
    // 2027-01-01 is a Friday: its week began on Monday 2026-12-28.
    let window = Period::Week.window(at(2027, 1, 1, 12, 0, 0));
    assert_eq!(window.start, midnight(2026, 12, 28));
    assert_eq!(window.end, midnight(2027, 1, 4));
}

#[test]
fn a_month_follows_the_calendar() {
    let window = Period::Month.window(at(2026, 12, 2, 9, 0, 0));
    assert_eq!(window.start, midnight(2026, 12, 1));
    assert_eq!(window.end, midnight(2027, 1, 1));

    let january = Period::Month.window(at(2026, 1, 31, 23, 59, 59));
    assert_eq!(january.start, midnight(2026, 1, 1));
    assert_eq!(january.end, midnight(2026, 2, 1));

    let leap_february = Period::Month.window(at(2028, 2, 29, 12, 0, 0));
    assert_eq!(leap_february.start, midnight(2028, 2, 1));
    assert_eq!(leap_february.end, midnight(2028, 3, 1));

    let plain_february = Period::Month.window(at(2027, 2, 28, 12, 0, 0));
    assert_eq!(plain_february.end, midnight(2027, 3, 1));
}

#[test]
fn windows_before_1970_are_computed_the_same_way() {
    let window = Period::Day.window(at(1969, 12, 31, 18, 0, 0));
    assert_eq!(window.start, midnight(1969, 12, 31));
    assert_eq!(window.end, midnight(1970, 1, 1));
}

#[test]
fn a_rolling_window_counts_twelve_buckets() {
    let minute = Period::Rolling(Duration::from_secs(60));
    let now = UnixMs(1_000_000_000_000 + 7_000); // 2 s into a 5 s bucket
    let slots = minute.slots(now);
    assert_eq!(slots.len(), 12);
    let current_start = 1_000_000_005_000;
    assert_eq!(
        slots[11],
        (UnixMs(current_start), UnixMs(current_start + 60_000))
    );
    assert_eq!(slots[0].0, UnixMs(current_start - 55_000));
    let window = minute.window(now);
    assert_eq!(window.start, UnixMs(current_start - 55_000));
    assert_eq!(window.end, UnixMs(current_start + 5_000));
    assert_eq!(minute.resets_at(now), UnixMs(current_start + 5_000));
}

#[test]
fn counter_keys_separate_every_kind_of_limit() {
    let daily = Limit::usd(team("search"), usd(5), Period::Day).unwrap();
    let slot = midnight(2026, 12, 2);
    assert_eq!(
        daily.counter_key(slot),
        format!("team=search:usd:day:*:{}", slot.0)
    );

    let weekly = Limit::usd(team("search"), usd(5), Period::Week).unwrap();
    let tokens = Limit::tokens(team("search"), 5, Period::Day).unwrap();
    let for_model = daily.clone().for_model("gpt-4o");
    let other_level = Limit::usd(Scope::Project("search".into()), usd(5), Period::Day).unwrap();
    let keys =
        [&daily, &weekly, &tokens, &for_model, &other_level].map(|limit| limit.counter_key(slot));
    for (index, key) in keys.iter().enumerate() {
        assert!(!keys[index + 1..].contains(key), "{key} is shared");
    }
    // Raising the amount keeps the counter.
    let raised = Limit::usd(team("search"), usd(50), Period::Day).unwrap();
    assert_eq!(raised.counter_key(slot), daily.counter_key(slot));
}

#[test]
fn ids_cannot_forge_another_limits_key() {
    let slot = midnight(2026, 12, 2);
    let tricky = Limit::usd(team("a:usd:day:*"), usd(1), Period::Day).unwrap();
    assert_eq!(
        tricky.counter_key(slot),
        format!("team=a%3Ausd%3Aday%3A*:usd:day:*:{}", slot.0)
    );
}

#[test]
fn a_charge_names_each_slot_by_the_key_it_always_had() {
    let limit = Limit::requests_per_minute(team("search"), 10)
        .unwrap()
        .for_model("gpt-4o");
    let now = UnixMs(1_000_000_007_000);
    let charge = limit.charge(1, now).unwrap();
    let keys: Vec<String> = charge
        .slots
        .iter()
        .map(|slot| charge.slot_key(slot))
        .collect();
    assert_eq!(keys.len(), 12);
    assert_eq!(
        keys[11],
        "team=search:requests:roll60000:gpt-4o:1000000005000"
    );
    assert_eq!(charge.write_key(), Some(keys[11].as_str()));
    let mut reused = String::from("left over");
    for (slot, key) in charge.slots.iter().zip(&keys) {
        charge.slot_key_into(slot, &mut reused);
        assert_eq!(&reused, key);
    }
    // Before 1970 (a test clock), the start is negative, as `write!` wrote it.
    let early = Limit::usd(team("search"), usd(5), Period::Day).unwrap();
    assert_eq!(
        early.counter_key(UnixMs(-86_400_000)),
        "team=search:usd:day:*:-86400000"
    );
}

#[test]
fn rejects_limits_that_cannot_be_counted() {
    assert!(matches!(
        Limit::usd(team("t"), Money::from_micros(-1), Period::Day),
        Err(PolicyError::InvalidLimit {
            problem: LimitProblem::NegativeAmount,
            ..
        })
    ));
    assert!(matches!(
        Limit::tokens(team("t"), MAX_COUNTER_AMOUNT + 1, Period::Day),
        Err(PolicyError::InvalidLimit {
            problem: LimitProblem::AmountTooLarge,
            ..
        })
    ));
    assert!(matches!(
        Limit::requests(team("t"), 1, Period::Rolling(Duration::from_millis(500))),
        Err(PolicyError::InvalidLimit {
            problem: LimitProblem::RollingWindowTooShort,
            ..
        })
    ));
    assert!(matches!(
        Limit::requests(
            team("t"),
            1,
            Period::Rolling(Duration::from_secs(400 * 86_400))
        ),
        Err(PolicyError::InvalidLimit {
            problem: LimitProblem::RollingWindowTooLong,
            ..
        })
    ));
}

#[test]
fn refusal_message_names_limit_used_and_reset() {
    let limit = Limit::usd(team("search"), usd(5), Period::Day).unwrap();
    let message = limit.refusal_message(4_980_000, 100_000, midnight(2026, 12, 3));
    assert_eq!(
        message,
        "team `search` has used $4.98 of its $5.00 daily budget; resets at 2026-12-03T00:00:00Z"
    );
}

#[test]
fn refusal_message_for_rate_limits_and_oversized_requests() {
    let rpm = Limit::requests_per_minute(Scope::Key("k1".into()), 60).unwrap();
    assert_eq!(
        rpm.refusal_message(
            60,
            1,
            UnixMs::from_date_time(2026, 12, 2, 10, 0, 5).unwrap()
        ),
        "key `k1` has used 60 of its 60 rolling 1-minute request limit; capacity frees up from 2026-12-02T10:00:05Z"
    );
    let tokens = Limit::tokens(Scope::EndUser("u".into()), 1_000_000, Period::Month)
        .unwrap()
        .for_model("gpt-4o");
    assert_eq!(
        tokens.refusal_message(999_000, 5_000, midnight(2027, 1, 1)),
        "end user `u` has used 999,000 of its 1,000,000 monthly token limit for `gpt-4o`; resets at 2027-01-01T00:00:00Z"
    );
    let small = Limit::usd(team("search"), usd(5), Period::Day).unwrap();
    assert_eq!(
        small.refusal_message(0, 6_000_000, midnight(2026, 12, 3)),
        "team `search`'s daily budget is $5.00; this request needs up to $6.00, more than the whole limit"
    );
}

#[test]
fn formats_money_exactly_without_noise() {
    assert_eq!(format_usd(5_000_000), "$5.00");
    assert_eq!(format_usd(4_980_000), "$4.98");
    assert_eq!(format_usd(1_200), "$0.0012");
    assert_eq!(format_usd(1_234_567_891), "$1,234.567891");
    assert_eq!(plain_usd(4_980_000), "4.98");
    assert_eq!(plain_usd(5_000_000), "5.00");
    assert_eq!(plain_usd(125), "0.000125");
    assert_eq!(plain_usd(100_000), "0.10");
    assert_eq!(plain_usd(1_234_567_891), "1234.567891");
    assert_eq!(group_thousands(0), "0");
    assert_eq!(group_thousands(999), "999");
    assert_eq!(group_thousands(1_000), "1,000");
}

#[test]
fn plans_one_charge_per_applicable_limit() {
    let now = at(2026, 12, 2, 10, 0, 0);
    let org = Limit::usd(Scope::Organisation("acme".into()), usd(100), Period::Month).unwrap();
    let team_budget = Limit::usd(team("search"), usd(5), Period::Day).unwrap();
    let key_rpm = Limit::requests_per_minute(Scope::Key("k1".into()), 60).unwrap();
    let key_tpm = Limit::tokens_per_minute(Scope::Key("k1".into()), 10_000).unwrap();
    let other_model = Limit::usd(team("search"), usd(1), Period::Day)
        .unwrap()
        .for_model("o1");
    let demand = Consumption {
        cost: Money::from_micros(120_000),
        tokens: 3_000,
    };
    let limits = [
        &org,
        &team_budget,
        &key_rpm,
        &key_tpm,
        &other_model,
        &team_budget,
    ];
    let charges = plan_charges(limits, "gpt-4o-2024-08-06", &demand, now).unwrap();
    let planned: Vec<(&Limit, u64)> = charges
        .iter()
        .map(|charge| (charge.limit(), charge.amount()))
        .collect();
    assert_eq!(
        planned,
        [
            (&org, 120_000),
            (&team_budget, 120_000),
            (&key_rpm, 1),
            (&key_tpm, 3_000)
        ]
    );
}

#[test]
fn model_filters_match_dated_versions() {
    let limit = Limit::tokens(team("t"), 1, Period::Day)
        .unwrap()
        .for_model("GPT-4o");
    assert!(limit.applies_to("gpt-4o-2024-08-06"));
    assert!(limit.applies_to("gpt-4o"));
    assert!(!limit.applies_to("gpt-4o-mini"));
}

#[test]
fn consumption_counts_each_metric_in_its_unit() {
    let used = Consumption {
        cost: Money::from_micros(-5),
        tokens: 42,
    };
    assert_eq!(used.amount_for(Metric::Usd), 0);
    assert_eq!(used.amount_for(Metric::Tokens), 42);
    assert_eq!(used.amount_for(Metric::Requests), 1);
}

mod allocations {
    use super::*;

    fn node(scope: Scope, parent: Option<Scope>, limits: Vec<Limit>) -> BudgetNode {
        BudgetNode {
            scope,
            parent,
            limits,
        }
    }

    fn org() -> Scope {
        Scope::Organisation("acme".into())
    }

    fn monthly(scope: Scope, dollars: i64) -> Limit {
        Limit::usd(scope, usd(dollars), Period::Month).unwrap()
    }

    fn problems(nodes: &[BudgetNode]) -> Vec<AllocationProblem> {
        match validate_allocations(nodes) {
            Err(PolicyError::InvalidAllocations(problems)) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn an_end_user_of_a_tenant_is_looked_up_most_specific_first() {
        let bob = Scope::end_user("acme", "bob");
        assert_eq!(bob.row_ids(), ["acme/bob", "bob", "*"]);
        assert!(!bob.is_template());
        assert!(Scope::EndUser("bob".into()).is_template());
        assert!(Scope::Key("*".into()).is_template());
        assert!(!Scope::Key("key_1".into()).is_template());
        assert_eq!(Scope::Team("t".into()).row_ids(), ["t"]);
        // A tenant with a `/` cannot pass for another tenant's user.
        assert_ne!(Scope::end_user("a/b", "c"), Scope::end_user("a", "b/c"));
        assert_eq!(
            Scope::end_user("a/b", "c").to_string(),
            "end user `c` of tenant `a/b`"
        );
    }

    #[test]
    fn accepts_allocations_that_fit() {
        let nodes = [
            node(org(), None, vec![monthly(org(), 1_000)]),
            node(
                team("search"),
                Some(org()),
                vec![monthly(team("search"), 400)],
            ),
            node(team("ads"), Some(org()), vec![monthly(team("ads"), 600)]),
            node(
                Scope::Key("k1".into()),
                Some(team("search")),
                vec![monthly(Scope::Key("k1".into()), 400)],
            ),
        ];
        assert!(validate_allocations(&nodes).is_ok());
    }

    #[test]
    fn reports_the_parent_and_every_share_when_over_allocated() {
        let nodes = [
            node(org(), None, vec![monthly(org(), 1_000)]),
            node(
                team("search"),
                Some(org()),
                vec![monthly(team("search"), 700)],
            ),
            node(team("ads"), Some(org()), vec![monthly(team("ads"), 600)]),
        ];
        let found = problems(&nodes);
        assert_eq!(
            found,
            [AllocationProblem::OverAllocated {
                parent: org(),
                metric: Metric::Usd,
                period: Period::Month,
                model: None,
                limit: 1_000_000_000,
                allocated: 1_300_000_000,
                children: vec![(team("search"), 700_000_000), (team("ads"), 600_000_000)],
            }]
        );
        assert_eq!(
            found[0].to_string(),
            "organisation `acme` has a monthly limit of $1,000.00 but allocates $1,300.00 to its children (team `search` $700.00, team `ads` $600.00)"
        );
    }

    #[test]
    fn compares_only_limits_of_the_same_kind() {
        let nodes = [
            node(org(), None, vec![monthly(org(), 100)]),
            // A daily limit and a token limit are not shares of a monthly dollar budget.
            node(
                team("search"),
                Some(org()),
                vec![
                    Limit::usd(team("search"), usd(500), Period::Day).unwrap(),
                    Limit::tokens(team("search"), 10_000_000, Period::Month).unwrap(),
                ],
            ),
        ];
        assert!(validate_allocations(&nodes).is_ok());
    }

    #[test]
    fn reports_a_broken_hierarchy() {
        let key = Scope::Key("k1".into());
        let nodes = [
            node(org(), None, vec![]),
            node(team("search"), Some(key.clone()), vec![]),
            node(key.clone(), Some(team("missing")), vec![]),
            node(org(), None, vec![]),
        ];
        assert_eq!(
            problems(&nodes),
            [
                AllocationProblem::ParentNotAbove {
                    child: team("search"),
                    parent: key.clone()
                },
                AllocationProblem::DuplicateScope { scope: org() },
                AllocationProblem::UnknownParent {
                    child: key,
                    parent: team("missing")
                },
            ]
        );
    }

    #[test]
    fn reports_two_limits_of_the_same_kind_on_one_scope() {
        let nodes = [node(
            org(),
            None,
            vec![monthly(org(), 10), monthly(org(), 20)],
        )];
        assert_eq!(
            problems(&nodes),
            [AllocationProblem::DuplicateLimit {
                scope: org(),
                metric: Metric::Usd,
                period: Period::Month,
                model: None,
            }]
        );
    }

    #[test]
    fn checks_every_level_against_its_own_parent() {
        let project = Scope::Project("p".into());
        let nodes = [
            node(team("search"), None, vec![monthly(team("search"), 100)]),
            node(
                project.clone(),
                Some(team("search")),
                vec![monthly(project.clone(), 100)],
            ),
            node(
                Scope::Key("a".into()),
                Some(project.clone()),
                vec![monthly(Scope::Key("a".into()), 60)],
            ),
            node(
                Scope::Key("b".into()),
                Some(project.clone()),
                vec![monthly(Scope::Key("b".into()), 60)],
            ),
        ];
        let found = problems(&nodes);
        assert_eq!(found.len(), 1);
        assert!(
            matches!(&found[0], AllocationProblem::OverAllocated { parent, allocated: 120_000_000, .. } if *parent == project)
        );
    }
}

mod text {
    use std::time::Duration;

    use crate::budget::{Metric, Period, Scope};

    #[test]
    fn scopes_read_and_write_level_colon_id() {
        let scope: Scope = "team:search".parse().unwrap();
        assert_eq!(scope, Scope::Team("search".into()));
        assert_eq!(scope.to_text(), "team:search");
        assert_eq!(
            "organisation:acme".parse::<Scope>().unwrap(),
            Scope::Organisation("acme".into())
        );
        assert_eq!(
            "alias:gpt-4o".parse::<Scope>().unwrap().to_text(),
            "alias:gpt-4o"
        );
        // Ids keep their colons: only the first one separates.
        assert_eq!(
            "user:tenant:7".parse::<Scope>().unwrap(),
            Scope::EndUser("tenant:7".into())
        );
        // An end user may name its tenant; the first `/` ends it.
        let bob = "user:acme/bob/x".parse::<Scope>().unwrap();
        assert_eq!(bob, Scope::end_user("acme", "bob/x"));
        assert_eq!(bob.tenant_user(), Some(("acme", "bob/x")));
        assert_eq!(bob.to_string(), "end user `bob/x` of tenant `acme`");
        for bad in ["user:/bob", "user:acme/", "user:acme/*"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        let unknown = "galaxy:x".parse::<Scope>().unwrap_err().to_string();
        assert!(
            unknown.contains("unknown scope level `galaxy`"),
            "{unknown}"
        );
        assert!("team".parse::<Scope>().is_err());
        assert!("team:".parse::<Scope>().is_err());
    }

    #[test]
    fn periods_are_calendar_words_or_rolling_lengths() {
        assert_eq!("month".parse::<Period>().unwrap(), Period::Month);
        assert_eq!(
            "minute".parse::<Period>().unwrap(),
            Period::Rolling(Duration::from_secs(60))
        );
        assert_eq!(
            "5m".parse::<Period>().unwrap(),
            Period::Rolling(Duration::from_secs(300))
        );
        for text in ["day", "week", "month", "60s", "90m", "1h", "7d", "1500ms"] {
            let period: Period = text.parse().unwrap();
            let again: Period = period.to_text().parse().unwrap();
            assert_eq!(period, again, "{text}");
        }
        assert_eq!("1m".parse::<Period>().unwrap().to_text(), "1m");
        assert_eq!("3600s".parse::<Period>().unwrap().to_text(), "1h");
        for bad in ["", "0s", "fortnight", "5y", "m"] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_are_usd_tokens_or_requests() {
        assert_eq!("USD".parse::<Metric>().unwrap(), Metric::Usd);
        assert_eq!(
            Metric::Tokens.as_str().parse::<Metric>().unwrap(),
            Metric::Tokens
        );
        assert!("euros".parse::<Metric>().is_err());
    }
}
