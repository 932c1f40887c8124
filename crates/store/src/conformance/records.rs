//! The checks of reading records back: every field, lookups, filters, cursors, usage reports,
//! charged usage and retention.

use std::collections::HashSet;

use sluice_types::record::{
    AttemptOutcome, Endpoint, ErrorCode, Next, PolicyAction, PolicyPlace, Role,
};
use sluice_types::{Dialect, ErrorKind, TenantId};
use tokio_util::sync::CancellationToken;

use super::{DAY, ids, now, record};
use crate::*;

/// A record with every field set.
fn full_record(id: &str, started_at: i64) -> RequestRecord {
    let mut policy = sluice_types::record::Audit::default();
    policy.note(
        "dlp",
        "email",
        PolicyAction::Pseudonymise,
        PolicyPlace::Request,
        2,
    );
    RequestRecord {
        id: id.into(),
        started_at,
        endpoint: Endpoint::Messages,
        dialect: Dialect::Anthropic,
        tenant: Some(TenantId("t1".into())),
        key_id: Some("key_a".into()),
        organisation: Some("acme".into()),
        team: Some("search".into()),
        project: Some("ranking".into()),
        user: Some("ana".into()),
        feature: Some("chat".into()),
        alias: Some("fast".into()),
        served_model: Some("claude-sonnet-4-5-20250929".into()),
        provider: Some("anthropic".into()),
        deployment: Some("backup".into()),
        stream: true,
        status: 200,
        error_code: Some(ErrorCode::ClientDisconnected),
        input_tokens: Some(1_200),
        output_tokens: Some(340),
        cached_tokens: Some(1_024),
        usage_estimated: true,
        ttft_us: Some(120_000),
        latency_us: 2_500_000,
        attempts: vec![
            AttemptRecord {
                deployment: "primary".into(),
                provider: "openai".into(),
                outcome: AttemptOutcome::Failed(ErrorKind::UpstreamUnavailable),
                status: Some(503),
                latency_us: 900,
                role: Some(Role::Pool),
                next: Some(Next::Fallback),
                ..Default::default()
            },
            AttemptRecord {
                deployment: "backup".into(),
                provider: "anthropic".into(),
                outcome: AttemptOutcome::Ok,
                status: Some(200),
                latency_us: 1_500,
                role: Some(Role::Fallback),
                hedge: true,
                ttft_us: Some(1_400),
                input_tokens: Some(1_200),
                output_tokens: Some(340),
                cost_micros: Some(-5),
                ..Default::default()
            },
        ],
        drill_of: Some("req_parent".into()),
        schema_valid: Some(false),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        span_id: Some("00f067aa0ba902b7".into()),
        parent_span_id: Some("00f067aa0ba902b8".into()),
        cost_micros: Some(12_345),
        energy_uwh: Some(6_789),
        carbon_ug: Some(1_011),
        degraded_from: Some("smart".into()),
        bodies: Some(Bodies {
            request: Some(r#"{"model":"fast","messages":[]}"#.into()),
            response: Some("event: message_start\ndata: {}\n\n".into()),
            truncated: true,
        }),
        policy,
    }
}

pub(super) async fn records_read_back_field_by_field_with_their_bodies(stores: &Stores) {
    // Today (a day partition in Postgres) and long ago (its default partition).
    let full = full_record("req_full", now());
    let old = full_record("req_old", 1_000);
    let sparse = RequestRecord {
        attempts: Vec::new(),
        ..record("req_sparse", now())
    };
    stores
        .records
        .insert_records(&[full.clone(), old.clone(), sparse.clone()])
        .await
        .unwrap();

    let back = stores.queries.record("req_full").await.unwrap().unwrap();
    assert_eq!(back.id, full.id);
    assert_eq!(back.started_at, full.started_at);
    assert_eq!((back.endpoint, back.dialect), (full.endpoint, full.dialect));
    assert_eq!(back.tenant, full.tenant);
    assert_eq!(
        (&back.organisation, &back.team, &back.project, &back.user),
        (&full.organisation, &full.team, &full.project, &full.user)
    );
    assert_eq!(
        (&back.key_id, &back.feature, &back.alias),
        (&full.key_id, &full.feature, &full.alias)
    );
    assert_eq!(
        (&back.served_model, &back.provider, &back.deployment),
        (&full.served_model, &full.provider, &full.deployment)
    );
    assert_eq!(
        (back.stream, back.status, back.error_code),
        (true, 200, full.error_code)
    );
    assert_eq!(
        (
            back.input_tokens,
            back.output_tokens,
            back.cached_tokens,
            back.usage_estimated
        ),
        (Some(1_200), Some(340), Some(1_024), true)
    );
    assert_eq!(
        (back.ttft_us, back.latency_us),
        (full.ttft_us, full.latency_us)
    );
    assert_eq!(back.attempts, full.attempts);
    assert_eq!(
        (&back.drill_of, back.schema_valid),
        (&full.drill_of, Some(false))
    );
    assert_eq!(
        (&back.trace_id, &back.span_id, &back.parent_span_id),
        (&full.trace_id, &full.span_id, &full.parent_span_id)
    );
    assert_eq!(
        (back.cost_micros, back.energy_uwh, back.carbon_ug),
        (Some(12_345), Some(6_789), Some(1_011))
    );
    assert_eq!(back.degraded_from, full.degraded_from);
    assert_eq!(back.bodies, full.bodies);
    assert_eq!(back.policy, full.policy);
    // And nothing else: every field, compared whole.
    assert_eq!(back, full);
    assert_eq!(stores.queries.record("req_old").await.unwrap(), Some(old));
    assert_eq!(
        stores.queries.record("req_sparse").await.unwrap(),
        Some(sparse)
    );
    assert_eq!(stores.queries.record("req_none").await.unwrap(), None);

    // Listings never carry bodies; newest written first.
    let latest = stores.queries.latest_records(10).await.unwrap();
    assert_eq!(ids(&latest), ["req_sparse", "req_old", "req_full"]);
    assert!(latest.iter().all(|r| r.bodies.is_none()));
    assert_eq!(
        latest[2],
        RequestRecord {
            bodies: None,
            ..full
        }
    );
}

/// The bodies a page of records leaves out are read for many ids at once, wherever the records
/// are kept (today's partition or the default one in Postgres).
pub(super) async fn bodies_are_read_by_record_id_for_a_page(stores: &Stores) {
    let today = full_record("req_today", now());
    let old = full_record("req_long_ago", 1_000);
    let mut other = full_record("req_other", now());
    other.bodies = Some(Bodies {
        request: None,
        response: Some("{}".into()),
        truncated: false,
    });
    let plain = record("req_plain", now());
    stores
        .records
        .insert_records(&[today.clone(), old.clone(), other.clone(), plain])
        .await
        .unwrap();
    let ids: Vec<String> = [
        "req_today",
        "req_long_ago",
        "req_other",
        "req_plain",
        "req_none",
    ]
    .map(String::from)
    .to_vec();
    let found = stores.queries.record_bodies(&ids).await.unwrap();
    let mut expected = std::collections::HashMap::new();
    for record in [today, old, other] {
        expected.insert(record.id, record.bodies.unwrap());
    }
    assert_eq!(found, expected);
    assert!(stores.queries.record_bodies(&[]).await.unwrap().is_empty());
}

/// A batch replayed from the journal may hold records already written: each stays as first
/// written, with its bodies, and is counted once.
pub(super) async fn a_record_written_again_is_stored_once(stores: &Stores) {
    let first = full_record("req_again", now());
    let stored = stores
        .records
        .insert_records(std::slice::from_ref(&first))
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let mut again = first.clone();
    again.status = 500;
    again.bodies = Some(Bodies {
        request: Some("other".into()),
        response: None,
        truncated: false,
    });
    let fresh = record("req_fresh", now());
    let stored = stores
        .records
        .insert_records(&[again.clone(), fresh, again])
        .await
        .unwrap();
    assert_eq!(stored, 1, "only the fresh record is new");
    let empty = stores.records.insert_records(&[]).await.unwrap();
    assert_eq!(empty, 0);
    let latest = stores.queries.latest_records(10).await.unwrap();
    assert_eq!(ids(&latest), ["req_fresh", "req_again"]);
    let stored = stores.queries.record("req_again").await.unwrap().unwrap();
    assert_eq!(stored, first);
}

pub(super) async fn records_are_found_by_id_or_unique_prefix(stores: &Stores) {
    let ids = [
        "req_0199aa01",
        "req_0199aa02",
        "req_0199bb01",
        "req_0199bb0",
        "req_0199cc77",
        "req_0199dd00",
    ];
    let records: Vec<RequestRecord> = ids.iter().map(|id| record(id, now())).collect();
    stores.records.insert_records(&records).await.unwrap();
    let find = |id: &'static str| {
        let queries = stores.queries.clone();
        async move { queries.find_record(id).await.unwrap() }
    };
    let found = |m: RecordMatch| match m {
        RecordMatch::Found(r) => r.id,
        other => panic!("expected one record, got {other:?}"),
    };
    assert_eq!(found(find("req_0199aa02").await), "req_0199aa02");
    assert_eq!(found(find("req_0199c").await), "req_0199cc77");
    assert_eq!(
        found(find("req_0199bb0").await),
        "req_0199bb0",
        "an exact id wins"
    );
    assert_eq!(
        find("req_0199aa").await,
        RecordMatch::Ambiguous {
            ids: vec!["req_0199aa01".into(), "req_0199aa02".into()],
            more: false
        }
    );
    match find("req_0199").await {
        RecordMatch::Ambiguous { ids, more } => {
            assert_eq!(
                ids,
                [
                    "req_0199aa01",
                    "req_0199aa02",
                    "req_0199bb0",
                    "req_0199bb01",
                    "req_0199cc77"
                ]
            );
            assert!(more);
        }
        other => panic!("expected an ambiguous prefix, got {other:?}"),
    }
    assert_eq!(find("req_0199e").await, RecordMatch::NotFound);
    assert_eq!(find("req_0199aa01x").await, RecordMatch::NotFound);
}

/// Six records that differ from a plain one in a field or two each.
fn varied() -> Vec<RequestRecord> {
    let t = now();
    vec![
        record("base", t - 6_000),
        RequestRecord {
            key_id: Some("key_a".into()),
            team: Some("search".into()),
            user: Some("alice".into()),
            ..record("who", t - 5_000)
        },
        RequestRecord {
            alias: Some("fast".into()),
            provider: Some("openai".into()),
            deployment: Some("gpt-east".into()),
            ..record("what", t - 4_000)
        },
        RequestRecord {
            status: 502,
            error_code: Some(ErrorCode::Kind(ErrorKind::UpstreamUnavailable)),
            attempts: vec![AttemptRecord {
                deployment: "gpt-west".into(),
                provider: "azure".into(),
                outcome: AttemptOutcome::Failed(ErrorKind::UpstreamUnavailable),
                status: Some(502),
                ..Default::default()
            }],
            ..record("bad_gateway", t - 3_000)
        },
        RequestRecord {
            status: 429,
            error_code: Some(ErrorCode::Kind(ErrorKind::RateLimited)),
            ..record("limited", t - 2_000)
        },
        RequestRecord {
            stream: true,
            error_code: Some(ErrorCode::Kind(ErrorKind::UpstreamTimeout)),
            ..record("stream_failed", t - 1_000)
        },
    ]
}

pub(super) async fn filters_select_only_matching_records(stores: &Stores) {
    let records = varied();
    let t = records[0].started_at + 6_000;
    stores.records.insert_records(&records).await.unwrap();
    let filter = |f: fn(&mut RecordFilter)| {
        let mut filter = RecordFilter::default();
        f(&mut filter);
        filter
    };
    let status = |s| RecordFilter {
        status: Some(s),
        ..Default::default()
    };
    let cases: Vec<(RecordFilter, Vec<&str>)> = vec![
        (filter(|f| f.key_id = Some("key_a".into())), vec!["who"]),
        (filter(|f| f.team = Some("search".into())), vec!["who"]),
        (filter(|f| f.user = Some("alice".into())), vec!["who"]),
        (filter(|f| f.alias = Some("fast".into())), vec!["what"]),
        (
            filter(|f| f.deployment = Some("gpt-east".into())),
            vec!["what"],
        ),
        // Failed everywhere, so served by nothing: found by its attempts.
        (
            filter(|f| f.deployment = Some("gpt-west".into())),
            vec!["bad_gateway"],
        ),
        (
            filter(|f| f.provider = Some("azure".into())),
            vec!["bad_gateway"],
        ),
        // Every record but the one whose only attempt was elsewhere was tried on openai.
        (
            filter(|f| f.provider = Some("openai".into())),
            vec!["stream_failed", "limited", "what", "who", "base"],
        ),
        (filter(|f| f.deployment = Some("gpt".into())), vec![]),
        (
            filter(|f| {
                f.team = Some("search".into());
                f.alias = Some("fast".into());
            }),
            vec![],
        ),
        (status(StatusFilter::Code(502)), vec!["bad_gateway"]),
        (status(StatusFilter::Class(5)), vec!["bad_gateway"]),
        (status(StatusFilter::Class(4)), vec!["limited"]),
        (
            status(StatusFilter::Class(2)),
            vec!["stream_failed", "what", "who", "base"],
        ),
        (
            status(StatusFilter::Error),
            vec!["stream_failed", "limited", "bad_gateway"],
        ),
        (status(StatusFilter::Ok), vec!["what", "who", "base"]),
        (
            RecordFilter {
                since_ms: Some(t - 5_000),
                until_ms: Some(t - 3_000),
                ..Default::default()
            },
            vec!["bad_gateway", "what", "who"],
        ),
    ];
    for (filter, expected) in cases {
        let page = stores.queries.find_records(&filter, 100).await.unwrap();
        assert_eq!(ids(&page.records), expected, "{filter:?}");
        for record in &page.records {
            assert!(filter.matches(record), "{filter:?} {}", record.id);
        }
    }
    let limited = stores
        .queries
        .find_records(&RecordFilter::default(), 2)
        .await
        .unwrap();
    assert_eq!(ids(&limited.records), ["stream_failed", "limited"]);
}

pub(super) async fn pages_after_a_cursor_have_no_gap_and_no_repeat(stores: &Stores) {
    let t = now();
    let batch = |from: usize, to: usize| -> Vec<RequestRecord> {
        (from..to)
            .map(|i| {
                let mut r = record(&format!("r{i:03}"), t - 1_000 + (i as i64 % 7));
                if i % 3 == 0 {
                    r.status = 500;
                    r.error_code = Some(ErrorCode::Kind(ErrorKind::Internal));
                }
                r
            })
            .collect()
    };
    stores.records.insert_records(&batch(0, 20)).await.unwrap();
    let all = RecordFilter::default();
    let errors = RecordFilter {
        status: Some(StatusFilter::Error),
        ..Default::default()
    };
    let first = stores.queries.find_records(&all, 5).await.unwrap();
    assert_eq!(
        ids(&first.records),
        ["r019", "r018", "r017", "r016", "r015"]
    );
    let first_errors = stores.queries.find_records(&errors, 5).await.unwrap();

    for (from, to) in [(20, 33), (33, 34), (34, 50)] {
        stores
            .records
            .insert_records(&batch(from, to))
            .await
            .unwrap();
    }
    // Everything written after the first read, in write order, each once, in pages of 7.
    let mut cursors = Vec::new();
    for (filter, start, expected) in [
        (&all, first.cursor, (20..50).collect::<Vec<usize>>()),
        (
            &errors,
            first_errors.cursor,
            (20..50).filter(|i| i % 3 == 0).collect(),
        ),
    ] {
        let mut cursor = start;
        let mut read: Vec<String> = Vec::new();
        loop {
            let page = stores
                .queries
                .records_after(filter, cursor, 7)
                .await
                .unwrap();
            assert!(page.records.len() <= 7);
            read.extend(page.records.iter().map(|r| r.id.clone()));
            cursor = page.cursor;
            if page.records.len() < 7 {
                break;
            }
        }
        let expected: Vec<String> = expected.iter().map(|i| format!("r{i:03}")).collect();
        assert_eq!(read, expected, "{filter:?}");
        let unique: HashSet<&String> = read.iter().collect();
        assert_eq!(unique.len(), read.len(), "no record twice");

        // Nothing new: an empty page, and the cursor stays.
        let again = stores
            .queries
            .records_after(filter, cursor, 7)
            .await
            .unwrap();
        assert!(again.records.is_empty());
        assert_eq!(again.cursor, cursor);
        cursors.push((filter, cursor));
    }
    // Then only what is new.
    let mut fresh = record("fresh", t);
    fresh.error_code = Some(ErrorCode::Kind(ErrorKind::Internal));
    stores.records.insert_records(&[fresh]).await.unwrap();
    for (filter, cursor) in cursors {
        let page = stores
            .queries
            .records_after(filter, cursor, 7)
            .await
            .unwrap();
        assert_eq!(ids(&page.records), ["fresh"], "{filter:?}");
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "a test record, every field it varies"
)]
fn usage_record(
    id: &str,
    started_at: i64,
    team: Option<&str>,
    feature: Option<&str>,
    status: u16,
    tokens: (u32, u32),
    cost_micros: Option<i64>,
    energy_carbon: (u64, u64),
) -> RequestRecord {
    RequestRecord {
        organisation: Some("acme".into()),
        team: team.map(Into::into),
        feature: feature.map(Into::into),
        key_id: Some("key_a".into()),
        served_model: Some("gpt-4o-mini-2024-07-18".into()),
        status,
        input_tokens: Some(tokens.0),
        output_tokens: Some(tokens.1),
        cost_micros,
        energy_uwh: Some(energy_carbon.0),
        carbon_ug: Some(energy_carbon.1),
        ..record(id, started_at)
    }
}

pub(super) async fn usage_is_grouped_ordered_and_totalled(stores: &Stores) {
    let t = now() - 10_000;
    let records = vec![
        usage_record(
            "r1",
            t + 1_000,
            Some("search"),
            Some("chat"),
            200,
            (100, 20),
            Some(1_000),
            (2_000_000, 1_000_000),
        ),
        usage_record(
            "r2",
            t + 2_000,
            Some("search"),
            Some("summarise"),
            200,
            (50, 10),
            Some(500),
            (1_000_000, 500_000),
        ),
        RequestRecord {
            error_code: Some(ErrorCode::Kind(ErrorKind::UpstreamTimeout)),
            ..usage_record(
                "r3",
                t + 3_000,
                Some("search"),
                Some("chat"),
                200,
                (5, 0),
                Some(5),
                (1, 1),
            )
        },
        usage_record(
            "r4",
            t + 4_000,
            Some("payments"),
            Some("chat"),
            429,
            (0, 0),
            Some(0),
            (0, 0),
        ),
        usage_record(
            "r5",
            t + 5_000,
            Some("payments"),
            None,
            200,
            (200, 40),
            Some(3_000),
            (4_000_000, 2_000_000),
        ),
        RequestRecord {
            drill_of: Some("r1".into()),
            key_id: None,
            ..usage_record(
                "d1",
                t + 1_500,
                None,
                None,
                200,
                (10, 10),
                Some(9_000),
                (50, 50),
            )
        },
        RequestRecord {
            cost_micros: None,
            energy_uwh: None,
            carbon_ug: None,
            input_tokens: None,
            output_tokens: None,
            ..usage_record(
                "r6",
                t + 6_000,
                None,
                Some("chat"),
                502,
                (0, 0),
                None,
                (0, 0),
            )
        },
    ];
    stores.records.insert_records(&records).await.unwrap();
    let by = |by: &[UsageDimension]| UsageQuery {
        by: by.to_vec(),
        ..Default::default()
    };
    let usage = &stores.usage;

    let rows = usage
        .usage_report(&by(&[UsageDimension::Team]))
        .await
        .unwrap();
    let teams: Vec<Option<&str>> = rows.iter().map(|r| r.value(UsageDimension::Team)).collect();
    assert_eq!(
        teams,
        [Some("payments"), Some("search"), None],
        "largest spend first"
    );
    let search = &rows[1];
    assert_eq!(
        (
            search.requests,
            search.errors,
            search.input_tokens,
            search.output_tokens
        ),
        (3, 1, 155, 30),
        "a stream that failed after it started is an error"
    );
    assert_eq!(
        (search.cost_micros, search.energy_uwh, search.carbon_ug),
        (1_505, 3_000_001, 1_500_001)
    );
    assert_eq!((rows[0].requests, rows[0].errors), (2, 1));
    assert_eq!(
        (
            rows[2].requests,
            rows[2].errors,
            rows[2].cost_micros,
            rows[2].input_tokens
        ),
        (1, 1, 0, 0),
        "no team, no price, no tokens: counted, nothing summed"
    );
    let total = UsageRow::total(&rows);
    assert_eq!(
        (total.requests, total.cost_micros, total.input_tokens),
        (6, 4_505, 355)
    );

    // Drills only when asked for.
    let with_drills = UsageQuery {
        drills: DrillRecords::Include,
        ..by(&[UsageDimension::Team])
    };
    let rows = usage.usage_report(&with_drills).await.unwrap();
    assert_eq!(UsageRow::total(&rows).requests, 7);
    let none = rows
        .iter()
        .find(|r| r.value(UsageDimension::Team).is_none())
        .unwrap();
    assert_eq!((none.requests, none.cost_micros), (2, 9_000));

    // Several dimensions, in the order asked; ties by value, no value first.
    let rows = usage
        .usage_report(&by(&[
            UsageDimension::Feature,
            UsageDimension::Team,
            UsageDimension::Feature,
        ]))
        .await
        .unwrap();
    let groups: Vec<(Option<&str>, Option<&str>)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.group.len(), 2, "a repeated dimension is one column");
            (
                r.value(UsageDimension::Feature),
                r.value(UsageDimension::Team),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            (None, Some("payments")),
            (Some("chat"), Some("search")),
            (Some("summarise"), Some("search")),
            (Some("chat"), None),
            (Some("chat"), Some("payments")),
        ]
    );

    // The span includes its start and excludes its end.
    let span = UsageQuery {
        since_ms: Some(t + 2_000),
        until_ms: Some(t + 4_000),
        ..by(&[UsageDimension::Model])
    };
    let rows = usage.usage_report(&span).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].value(UsageDimension::Model),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(rows[0].requests, 2);
    let empty = UsageQuery {
        since_ms: Some(t + 10_000),
        ..Default::default()
    };
    assert!(usage.usage_report(&empty).await.unwrap().is_empty());
    let total = usage.usage_report(&UsageQuery::default()).await.unwrap();
    assert_eq!(
        (total.len(), total[0].group.len(), total[0].requests),
        (1, 0, 6)
    );
}

pub(super) async fn a_report_by_user_keeps_tenants_apart(stores: &Stores) {
    let of = |id: &str, tenant: &str, user: &str| RequestRecord {
        tenant: Some(TenantId(tenant.into())),
        user: Some(user.into()),
        ..usage_record(id, now(), None, None, 200, (1, 1), Some(10), (0, 0))
    };
    stores
        .records
        .insert_records(&[
            of("r1", "acme", "bob"),
            of("r2", "acme", "bob"),
            of("r3", "globex", "bob"),
        ])
        .await
        .unwrap();
    let query = UsageQuery {
        by: vec![UsageDimension::User],
        ..Default::default()
    };
    let rows = stores.usage.usage_report(&query).await.unwrap();
    let groups: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.value(UsageDimension::Tenant),
                r.value(UsageDimension::User),
                r.requests,
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            (Some("acme"), Some("bob"), 2),
            (Some("globex"), Some("bob"), 1)
        ]
    );
}

pub(super) async fn charged_usage_sums_what_reached_a_deployment(stores: &Stores) {
    let charged = |id: &str, started_at: i64, key: &str, outcome: &str| RequestRecord {
        key_id: Some(key.into()),
        tenant: Some(TenantId(format!("tenant_of_{key}"))),
        team: Some("search".into()),
        user: Some("ana".into()),
        alias: Some("gpt-4o".into()),
        input_tokens: Some(10),
        output_tokens: Some(5),
        cost_micros: Some(30),
        attempts: vec![AttemptRecord {
            deployment: "d".into(),
            provider: "p".into(),
            outcome: outcome.parse().unwrap(),
            ..Default::default()
        }],
        ..record(id, started_at)
    };
    let base = (now() / 1_000) * 1_000 - 10_000;
    let mut drill = charged("r5", base + 500, "key_a", "ok");
    drill.drill_of = Some("r1".into());
    let refund = RequestRecord {
        cost_micros: Some(-100),
        ..charged("r8", base + 1_100, "key_b", "ok")
    };
    stores
        .records
        .insert_records(&[
            charged("r1", base, "key_a", "ok"),
            charged("r2", base + 999, "key_a", "upstream_timeout"),
            charged("r3", base + 1_000, "key_a", "ok"),
            // Refused before any deployment: never charged.
            charged("r4", base + 100, "key_a", "skipped"),
            drill,
            charged("r6", base + 200, "key_b", "ok"),
            // Before the span asked for.
            charged("r7", base - 500, "key_a", "ok"),
            refund,
            // No key: not a caller's.
            RequestRecord {
                key_id: None,
                ..charged("r9", base, "key_a", "ok")
            },
        ])
        .await
        .unwrap();
    let mut usage = stores.charged.charged_usage(base, 1_000).await.unwrap();
    usage.sort_by_key(|u| (u.key_id.clone(), u.slot_start));
    let summary: Vec<_> = usage
        .iter()
        .map(|u| {
            (
                u.key_id.as_deref().unwrap(),
                u.slot_start - base,
                u.requests,
                u.tokens,
                u.cost_micros,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("key_a", 0, 2, 30, 60),
            ("key_a", 1_000, 1, 15, 30),
            ("key_b", 0, 1, 15, 30),
            ("key_b", 1_000, 1, 15, 0),
        ]
    );
    assert_eq!(usage[0].tenant.as_deref(), Some("tenant_of_key_a"));
    assert_eq!(
        (
            usage[0].team.as_deref(),
            usage[0].user.as_deref(),
            usage[0].alias.as_deref()
        ),
        (Some("search"), Some("ana"), Some("gpt-4o"))
    );
    assert_eq!(usage[2].tenant.as_deref(), Some("tenant_of_key_b"));
}

pub(super) async fn retention_removes_only_old_records_and_their_bodies(stores: &Stores) {
    let t = now();
    let with_bodies = |r: RequestRecord| RequestRecord {
        bodies: Some(Bodies {
            request: Some("{}".into()),
            response: None,
            truncated: false,
        }),
        ..r
    };
    stores
        .records
        .insert_records(&[
            with_bodies(record("old", t - 3 * DAY)),
            record("older", t - 30 * DAY),
            record("at_cutoff", t - 2 * DAY),
            with_bodies(record("recent", t - DAY)),
            record("now", t),
        ])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let removed = stores
        .pruning
        .prune_records(t - 2 * DAY, 1, &stop)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left = stores.queries.latest_records(10).await.unwrap();
    let mut left = ids(&left);
    left.sort_unstable();
    assert_eq!(left, ["at_cutoff", "now", "recent"]);
    assert_eq!(stores.queries.record("old").await.unwrap(), None);
    let recent = stores.queries.record("recent").await.unwrap().unwrap();
    assert!(recent.bodies.is_some(), "bodies of kept records stay");
    assert_eq!(
        stores
            .pruning
            .prune_records(t - 2 * DAY, 1, &stop)
            .await
            .unwrap(),
        0
    );
}
