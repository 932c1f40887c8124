//! Budgets and rate limits through the real router: admission before any upstream call,
//! refusals a person can act on in each dialect, quota headers, soft limits, and settlement
//! that agrees with the records on every path (finished, cut, disconnected).

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice_pipeline::RouteRules;
use sluice_policy::{
    Counters, Hold, Limit, OnCounterError, Period, PolicyError, PriceTable, Scope, Tier,
};
use sluice_providers::ProviderKind;
use sluice_testkit::{Fault, MockUpstream, Reply};
use sluice_types::Usage;

use crate::support::{KEY_ORG, KEY_TEAM, KEY_USER, TestGateway, budget, on, policy_parts};

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": text}]})
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn refuses_a_request_over_the_team_budget_before_any_upstream_call() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .budget(budget(&format!("team:{KEY_TEAM}"), "requests", "day", 2))
        .start()
        .await;

    let first = gw.openai("/v1/chat/completions", chat("m", "one")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), Some("1"));
    let reset = header(&first, "x-ratelimit-reset-requests").unwrap();
    assert!(reset.ends_with('s') && reset.len() > 1, "{reset}");
    let second = gw.openai("/v1/chat/completions", chat("m", "two")).await;
    assert_eq!(header(&second, "x-ratelimit-remaining-requests"), Some("0"));

    let refused = gw.openai("/v1/chat/completions", chat("m", "three")).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!(retry_after > 0 && retry_after <= 86_400, "{retry_after}");
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("team `qa` has used 2 of its 2 daily request limit; resets at "),
        "{message}"
    );
    assert!(message.ends_with("Z. Ask #platform for more."), "{message}");
    assert_eq!(mock.hits(), 2, "the refused request never went upstream");

    let records = gw.finish().await;
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].status, 429);
    assert_eq!(
        records[2].error_code.map(|c| c.as_str()),
        Some("budget_exceeded")
    );
    assert!(records[2].attempts.is_empty());
}

#[tokio::test]
async fn a_rate_limited_anthropic_caller_gets_a_rate_limit_error_naming_the_limit() {
    let mock = MockUpstream::anthropic().start().await;
    let gw = TestGateway::builder()
        .route(
            "claude",
            [on(&mock, ProviderKind::Anthropic, "claude-sonnet-4-5")],
        )
        .budget(budget("user:*", "requests", "60s", 1))
        .start()
        .await;

    let ok = gw.anthropic("/v1/messages", chat("claude", "hi")).await;
    assert_eq!(ok.status(), 200);
    // Another end user has a limit of their own.
    let mut other = chat("claude", "hi");
    other["metadata"] = json!({"user_id": "someone-else"});
    assert_eq!(gw.anthropic("/v1/messages", other).await.status(), 200);

    let refused = gw.anthropic("/v1/messages", chat("claude", "again")).await;
    assert_eq!(refused.status(), 429);
    assert!(header(&refused, "retry-after").is_some());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "end user `{KEY_USER}` of tenant `{KEY_ORG}` has used 1 of its 1 rolling 1-minute request limit; capacity frees up from "
        )),
        "{message}"
    );
    assert_eq!(mock.hits(), 2);
    let records = gw.finish().await;
    assert_eq!(
        records[2].error_code.map(|c| c.as_str()),
        Some("rate_limit_exceeded")
    );
}

#[tokio::test]
async fn two_tenants_sharing_an_end_user_id_each_get_their_own_allowance_and_see_only_their_own() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .budget(budget("user:*", "requests", "day", 5))
        // Bob of `globex` only: more room, and no effect on `acme`'s bob.
        .budget(budget("user:globex/bob", "tokens", "day", 1_000_000))
        .start()
        .await;
    let globex = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "globex".into(),
            organisation: Some("globex".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .secret;
    let send = |key: &str, body: Value| {
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-sluice-user", "bob")
            .json(&body)
            .send()
    };

    // acme's key spends 3 of acme's bob's 5.
    for n in 0..3 {
        let res = send(&gw.key, chat("m", "acme")).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            header(&res, "x-ratelimit-remaining-requests"),
            Some(["4", "3", "2"][n])
        );
    }
    // globex's bob has a whole allowance of his own, and the headers show only his usage.
    for n in 0..5 {
        let res = send(&globex, chat("m", "globex")).await.unwrap();
        assert_eq!(res.status(), 200, "request {n} of globex's bob");
        assert_eq!(header(&res, "x-ratelimit-limit-requests"), Some("5"));
        let remaining = (4 - n).to_string();
        assert_eq!(
            header(&res, "x-ratelimit-remaining-requests"),
            Some(remaining.as_str())
        );
    }
    let refused = send(&globex, chat("m", "globex again")).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    let scope = header(&refused, "x-sluice-budget-scope");
    assert!(scope.is_none_or(|s| s.contains("globex")), "{scope:?}");
    let headers = format!("{:?}", refused.headers());
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "end user `bob` of tenant `globex` has used 5 of its 5 daily request limit; resets at "
        ),
        "{message}"
    );
    // Nothing of acme's (its name, its 3 requests) reaches globex's caller.
    for shown in [message, headers.as_str()] {
        assert!(!shown.contains(KEY_ORG), "{shown}");
        assert!(!shown.contains("used 3"), "{shown}");
        assert!(!shown.contains("used 8"), "{shown}");
    }

    // acme's bob still has his last 2 requests, then a refusal that speaks of acme only.
    for _ in 0..2 {
        assert_eq!(
            send(&gw.key, chat("m", "acme")).await.unwrap().status(),
            200
        );
    }
    let refused = send(&gw.key, chat("m", "acme again")).await.unwrap();
    assert_eq!(refused.status(), 429);
    let headers = format!("{:?}", refused.headers());
    assert!(!headers.contains("globex"), "{headers}");
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "end user `bob` of tenant `{KEY_ORG}` has used 5 of its 5 daily request limit"
        )),
        "{message}"
    );
    assert!(!message.contains("globex"), "{message}");
    assert_eq!(mock.hits(), 10, "refusals never went upstream");

    // The records carry each request's tenant and end user; a report by user keeps them apart.
    let store = gw.store.clone();
    let records = gw.finish().await;
    let served: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| (r.tenant.clone().unwrap().0, r.user.clone().unwrap()))
        .collect();
    assert_eq!(served.iter().filter(|(t, _)| t == KEY_ORG).count(), 5);
    assert_eq!(served.iter().filter(|(t, _)| t == "globex").count(), 5);
    assert!(served.iter().all(|(_, user)| user == "bob"));
    let report = store
        .usage
        .usage_report(&sluice_store::UsageQuery {
            by: vec![sluice_store::UsageDimension::User],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut groups: Vec<(Option<&str>, Option<&str>, u64)> = report
        .iter()
        .map(|row| {
            (
                row.value(sluice_store::UsageDimension::Tenant),
                row.value(sluice_store::UsageDimension::User),
                row.requests,
            )
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            (Some(KEY_ORG), Some("bob"), 6),
            (Some("globex"), Some("bob"), 6)
        ]
    );
}

#[tokio::test]
async fn concurrent_requests_are_admitted_exactly_up_to_the_budget() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .budget(budget(&format!("team:{KEY_TEAM}"), "requests", "day", 50))
        .start()
        .await;

    let sends = (0..200).map(|i| gw.openai("/v1/chat/completions", chat("m", &format!("q{i}"))));
    let statuses: Vec<u16> = futures_util::future::join_all(sends)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 50);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 150);
    assert_eq!(mock.hits(), 50);
    let records = gw.finish().await;
    assert_eq!(records.iter().filter(|r| r.status == 200).count(), 50);
}

#[tokio::test]
async fn settled_spend_never_exceeds_a_dollar_budget_under_concurrency() {
    // Every answer runs to max_tokens: a request costs about its worst case, so admitting one
    // too many would show as spend past the cap.
    let mock = MockUpstream::openai()
        .always(Reply::text("word ".repeat(2_000)))
        .start()
        .await;
    // gpt-4o: $2.50 in, $10 out per million tokens. Each request reserves its prompt estimate
    // plus 1,000 output tokens (about 1 cent); the budget holds 9 of them.
    let cap = 100_000;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o")])
        .budget(budget(&format!("team:{KEY_TEAM}"), "usd", "month", cap))
        .start()
        .await;
    let body = |i: usize| {
        json!({"model": "m", "max_tokens": 1000,
               "messages": [{"role": "user", "content": format!("question {i}")}]})
    };
    let sends = (0..40).map(|i| gw.openai("/v1/chat/completions", body(i)));
    let responses = futures_util::future::join_all(sends).await;
    let admitted = responses.iter().filter(|r| r.status() == 200).count();
    assert!((8..=9).contains(&admitted), "{admitted} admitted");
    for refused in responses.iter().filter(|r| r.status() != 200) {
        assert_eq!(refused.status(), 429);
        assert_eq!(header(refused, "x-sluice-budget-scope"), Some("team:qa"));
    }
    let records = gw.finish().await;
    let spent: i64 = records.iter().filter_map(|r| r.cost_micros).sum();
    eprintln!("one process, 40 requests: {admitted} admitted, spent {spent} of {cap} micro-USD");
    assert!(spent > 0 && spent <= cap as i64, "spent {spent} of {cap}");
}

#[tokio::test]
async fn every_request_records_its_cost_energy_and_carbon() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .start()
        .await;
    let res = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .header("x-sluice-feature", "search-suggest")
        .json(&chat("m", "How much did this cost?"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // No budgets: nothing to report in quota headers.
    assert!(header(&res, "x-ratelimit-limit-requests").is_none());
    let records = gw.finish().await;
    let record = &records[0];
    let usage = Usage {
        input_tokens: record.input_tokens.unwrap(),
        output_tokens: record.output_tokens.unwrap(),
        cached_input_tokens: record.cached_tokens.unwrap_or(0),
        ..Usage::default()
    };
    let expected = PriceTable::builtin()
        .lookup("gpt-4o-mini")
        .unwrap()
        .cost(&usage, Tier::Standard);
    assert!(expected.micros() > 0);
    assert_eq!(record.cost_micros, Some(expected.micros()));
    assert_eq!(record.attempts[0].cost_micros, Some(expected.micros()));
    assert!(record.energy_uwh.unwrap() > 0);
    assert!(record.carbon_ug.unwrap() > 0);
    assert_eq!(record.feature.as_deref(), Some("search-suggest"));
    assert_eq!(record.organisation.as_deref(), Some("acme"));
    assert_eq!(record.project.as_deref(), Some("checkout"));
}

#[tokio::test]
async fn a_caller_over_a_soft_limit_is_served_by_the_cheaper_alias_and_told_so() {
    let smart = MockUpstream::openai().start().await;
    let cheap = MockUpstream::openai().start().await;
    let mut parts = policy_parts();
    parts.routes.insert(
        "smart".into(),
        RouteRules {
            over_soft_limit: Some("cheap".into()),
            ..RouteRules::default()
        },
    );
    let mut team_budget = budget(&format!("team:{KEY_TEAM}"), "requests", "day", 100);
    team_budget.soft_amount = Some(1);
    let gw = TestGateway::builder()
        .route("smart", [on(&smart, ProviderKind::OpenAi, "gpt-4o")])
        .route("cheap", [on(&cheap, ProviderKind::OpenAi, "gpt-4o-mini")])
        .policy(parts)
        .budget(team_budget)
        .start()
        .await;

    let under = gw
        .openai("/v1/chat/completions", chat("smart", "first"))
        .await;
    assert_eq!(under.status(), 200);
    assert!(header(&under, "x-sluice-degraded-to").is_none());
    let over = gw
        .openai("/v1/chat/completions", chat("smart", "second"))
        .await;
    assert_eq!(over.status(), 200);
    assert_eq!(header(&over, "x-sluice-degraded-to"), Some("cheap"));
    assert_eq!(
        header(&over, "x-sluice-soft-limit"),
        Some("team:qa requests day")
    );
    assert_eq!(header(&over, "x-sluice-alias"), Some("cheap"));
    assert_eq!((smart.hits(), cheap.hits()), (1, 1));

    let records = gw.finish().await;
    assert_eq!(records[1].alias.as_deref(), Some("cheap"));
    assert_eq!(records[1].degraded_from.as_deref(), Some("smart"));
    assert_eq!(records[0].degraded_from, None);
}

#[tokio::test]
async fn a_route_with_roles_refuses_keys_without_one() {
    let mock = MockUpstream::openai().start().await;
    let mut parts = policy_parts();
    parts.routes.insert(
        "ops".into(),
        RouteRules {
            roles: vec!["operator".into()],
            ..RouteRules::default()
        },
    );
    let gw = TestGateway::builder()
        .route("ops", [on(&mock, ProviderKind::OpenAi, "gpt-4o")])
        .policy(parts)
        .start()
        .await;
    let res = gw
        .openai("/v1/chat/completions", chat("ops", "restart it"))
        .await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "permission_denied");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs the role operator"),
        "{body}"
    );
    assert_eq!(mock.hits(), 0);
}

#[tokio::test]
async fn a_route_rate_limit_counts_every_caller() {
    let mock = MockUpstream::openai().start().await;
    let mut parts = policy_parts();
    parts.routes.insert(
        "m".into(),
        RouteRules {
            limits: vec![Limit::requests_per_minute(Scope::Alias("m".into()), 1).unwrap()],
            ..RouteRules::default()
        },
    );
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o")])
        .policy(parts)
        .start()
        .await;
    assert_eq!(
        gw.openai("/v1/chat/completions", chat("m", "a"))
            .await
            .status(),
        200
    );
    let refused = gw.openai("/v1/chat/completions", chat("m", "b")).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("model `m` has used 1 of its 1 rolling 1-minute request limit"),
        "{body}"
    );
}

#[tokio::test]
async fn a_cut_stream_and_a_client_disconnect_settle_to_what_the_records_say() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .budget(budget(
            &format!("team:{KEY_TEAM}"),
            "tokens",
            "day",
            1_000_000,
        ))
        .start()
        .await;
    let stream = |text: &str| {
        json!({"model": "m", "stream": true, "max_tokens": 400,
               "messages": [{"role": "user", "content": text}]})
    };

    // Cut by the upstream after a few events: the client gets an error event.
    mock.push_reply(Reply::text("word ".repeat(200)).with_fault(Fault {
        cut_after_events: Some(6),
        ..Fault::default()
    }));
    let cut = gw.openai("/v1/chat/completions", stream("cut")).await;
    assert_eq!(cut.status(), 200);
    let text = cut.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");

    // The client goes away after the first chunk of a slow stream.
    mock.push_reply(Reply::text("word ".repeat(200)).with_fault(Fault {
        chunk_delay_ms: 50,
        ..Fault::default()
    }));
    let slow = gw.openai("/v1/chat/completions", stream("slow")).await;
    let mut body = slow.bytes_stream();
    let _first = body.next().await.unwrap().unwrap();
    drop(body);
    mock.wait_cancelled(1).await;

    let gateway = gw.gateway.clone();
    let records = gw.finish().await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].status, 200);
    assert!(
        records[0].error_code.is_some(),
        "the cut stream is recorded as failed"
    );
    assert_eq!(records[1].status, 499);
    let recorded: u64 = records
        .iter()
        .map(|r| u64::from(r.input_tokens.unwrap()) + u64::from(r.output_tokens.unwrap()))
        .sum();
    assert!(recorded > 0);
    let limit = Limit::tokens(Scope::Team(KEY_TEAM.into()), 1_000_000, Period::Day).unwrap();
    let counted = gateway.policy().usage(&limit).await.unwrap();
    assert_eq!(
        counted, recorded,
        "the counters settled to what the records say"
    );
}

/// Counters whose store is down.
struct Unreachable;

impl Counters for Unreachable {
    fn reserve<'a>(
        &'a self,
        _: &'a [sluice_policy::counters::Charge],
    ) -> sluice_policy::counters::CounterFuture<'a, Result<Hold, PolicyError>> {
        Box::pin(async {
            Err(PolicyError::UnexpectedReply {
                operation: "reserve",
            })
        })
    }
    fn settle(
        &self,
        _: Hold,
        _: sluice_policy::Consumption,
    ) -> sluice_policy::counters::CounterFuture<'_, Result<(), PolicyError>> {
        Box::pin(async { Ok(()) })
    }
    fn release(
        &self,
        _: Hold,
    ) -> sluice_policy::counters::CounterFuture<'_, Result<(), PolicyError>> {
        Box::pin(async { Ok(()) })
    }
    fn usage<'a>(
        &'a self,
        _: &'a Limit,
        _: sluice_policy::UnixMs,
    ) -> sluice_policy::counters::CounterFuture<'a, Result<u64, PolicyError>> {
        Box::pin(async { Ok(0) })
    }
    fn restore<'a>(
        &'a self,
        _: &'a [sluice_policy::counters::Restore],
    ) -> sluice_policy::counters::CounterFuture<'a, Result<(), PolicyError>> {
        Box::pin(async { Ok(()) })
    }
    fn claim_rebuild(
        &self,
    ) -> sluice_policy::counters::CounterFuture<'_, Result<bool, PolicyError>> {
        Box::pin(async { Ok(false) })
    }
}

#[tokio::test]
async fn unreachable_counters_fail_closed_or_open_as_configured() {
    for (mode, expected) in [(OnCounterError::Closed, 503), (OnCounterError::Open, 200)] {
        let mock = MockUpstream::openai().start().await;
        let mut parts = policy_parts();
        parts.counters = Arc::new(Unreachable);
        parts.on_counter_error = mode;
        let gw = TestGateway::builder()
            .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o")])
            .policy(parts)
            .budget(budget(&format!("team:{KEY_TEAM}"), "usd", "day", 1_000_000))
            .start()
            .await;
        let res = gw.openai("/v1/chat/completions", chat("m", "hi")).await;
        assert_eq!(res.status().as_u16(), expected, "{mode:?}");
        if expected == 503 {
            assert!(header(&res, "retry-after").is_some());
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "policy_unavailable");
            assert_eq!(mock.hits(), 0);
        }
        let records = gw.finish().await;
        assert_eq!(records.len(), 1);
    }
}

#[tokio::test]
async fn embeddings_are_admitted_counted_and_priced_too() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route(
            "embed",
            [on(&mock, ProviderKind::OpenAi, "text-embedding-3-small")],
        )
        .budget(budget("key:*", "requests", "day", 1))
        .start()
        .await;
    let embed = json!({"model": "embed", "input": ["alpha", "beta"]});
    let ok = gw.openai("/v1/embeddings", embed.clone()).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-ratelimit-remaining-requests"), Some("0"));
    let refused = gw.openai("/v1/embeddings", embed).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("key `key_"), "{message}");
    assert_eq!(mock.hits(), 1);
    let records = gw.finish().await;
    assert!(records[0].cost_micros.unwrap() > 0, "{:?}", records[0]);
    assert_eq!(
        records[1].error_code.map(|c| c.as_str()),
        Some("budget_exceeded")
    );
}

#[tokio::test]
async fn a_tenant_at_its_counter_cap_is_refused_new_end_users_while_others_are_served() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .budget(budget("user:*", "requests", "day", 100))
        .max_counters_per_tenant(2)
        .start()
        .await;
    let globex = gw
        .store
        .keys
        .create_key(sluice_store::NewKey {
            name: "globex".into(),
            organisation: Some("globex".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .secret;
    let send = |key: &str, user: &str, anthropic: bool| {
        let request = if anthropic {
            gw.client
                .post(gw.url("/v1/messages"))
                .header("anthropic-version", "2023-06-01")
        } else {
            gw.client.post(gw.url("/v1/chat/completions"))
        };
        request
            .bearer_auth(key)
            .header("x-sluice-user", user)
            .json(&chat("m", "hi"))
            .send()
    };

    for user in ["ana", "bob"] {
        assert_eq!(send(&gw.key, user, false).await.unwrap().status(), 200);
    }
    // A third end user of acme needs a third counter: refused before any upstream call.
    let refused = send(&gw.key, "cy", false).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), Some("60"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "tenant `{KEY_ORG}` has 2 end-user budget counters in use, the most this gateway keeps per tenant"
        )),
        "{message}"
    );
    // In the Anthropic dialect too.
    let refused = send(&gw.key, "dee", true).await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // acme's end users already counted are served; so is another tenant's new one.
    assert_eq!(send(&gw.key, "ana", false).await.unwrap().status(), 200);
    assert_eq!(send(&globex, "cy", false).await.unwrap().status(), 200);
    assert_eq!(mock.hits(), 4);

    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "sluice_counter_entries_refused_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "sluice_counter_entries 3"),
        "{metrics}"
    );
    let records = gw.finish().await;
    let refused: Vec<_> = records.iter().filter(|r| r.status == 429).collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|r| r.attempts.is_empty()
        && r.error_code.map(|c| c.as_str()) == Some("rate_limit_exceeded")));
}
