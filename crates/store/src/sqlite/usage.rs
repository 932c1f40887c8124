//! Usage reports from SQLite.

use sqlx::{QueryBuilder, Row, Sqlite};

use crate::sqlite::SqliteStore;
use crate::{DrillRecords, StoreError, UsageQuery, UsageRow};

impl SqliteStore {
    /// The records of `query`'s span summed per group ([`UsageQuery::dimensions`]), the largest spend first (then the most
    /// requests, then the group's values). Groups without records are not returned, the total
    /// of an empty span included.
    pub async fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let by = query.dimensions();
        let mut sql = QueryBuilder::<Sqlite>::new("SELECT ");
        for (index, dimension) in by.iter().enumerate() {
            // Column names and aliases are our own constants, never input.
            sql.push(format_args!("{} AS g{index}, ", dimension.column()));
        }
        sql.push(
            "COUNT(*) AS sum_requests,
             COALESCE(SUM(status >= 400 OR error_code IS NOT NULL), 0) AS sum_errors,
             COALESCE(SUM(input_tokens), 0) AS sum_input_tokens,
             COALESCE(SUM(output_tokens), 0) AS sum_output_tokens,
             COALESCE(SUM(cost_micros), 0) AS sum_cost_micros,
             COALESCE(SUM(energy_uwh), 0) AS sum_energy_uwh,
             COALESCE(SUM(carbon_ug), 0) AS sum_carbon_ug
             FROM requests WHERE 1 = 1",
        );
        if let Some(since) = query.since_ms {
            sql.push(" AND started_at >= ").push_bind(since);
        }
        if let Some(until) = query.until_ms {
            sql.push(" AND started_at < ").push_bind(until);
        }
        if query.drills == DrillRecords::Exclude {
            sql.push(" AND drill_of IS NULL");
        }
        let groups = (0..by.len())
            .map(|index| format!("g{index}"))
            .collect::<Vec<_>>()
            .join(", ");
        if !by.is_empty() {
            sql.push(format_args!(" GROUP BY {groups}"));
        }
        sql.push(" ORDER BY sum_cost_micros DESC, sum_requests DESC");
        if !by.is_empty() {
            sql.push(format_args!(", {groups}"));
        }
        let rows = sql.build().fetch_all(self.pool()).await?;
        let rows = rows
            .iter()
            .map(|row| {
                let unsigned = |column: &str| -> Result<u64, StoreError> {
                    let value: i64 = row.try_get(format!("sum_{column}").as_str())?;
                    u64::try_from(value).map_err(|_| {
                        StoreError::Corrupt(format!("negative {column} in the request records"))
                    })
                };
                let mut group = Vec::with_capacity(by.len());
                for (index, dimension) in by.iter().enumerate() {
                    let value: Option<String> = row.try_get(index)?;
                    group.push((*dimension, value));
                }
                Ok(UsageRow {
                    group,
                    requests: unsigned("requests")?,
                    errors: unsigned("errors")?,
                    input_tokens: unsigned("input_tokens")?,
                    output_tokens: unsigned("output_tokens")?,
                    cost_micros: row.try_get("sum_cost_micros")?,
                    energy_uwh: unsigned("energy_uwh")?,
                    carbon_ug: unsigned("carbon_ug")?,
                })
            })
            .collect::<Result<Vec<UsageRow>, StoreError>>()?;
        // Without a group, an empty span still gives one row of zeros: no records, no row.
        Ok(rows.into_iter().filter(|r| r.requests > 0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RequestRecord, UsageDimension};
    use sluice_types::record::{Endpoint, ErrorCode};
    use sluice_types::{Dialect, ErrorKind};

    #[expect(
        clippy::too_many_arguments,
        reason = "a test record, every field it varies"
    )]
    fn record(
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
            id: id.into(),
            started_at,
            endpoint: Endpoint::ChatCompletions,
            dialect: Dialect::OpenAi,
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
            latency_us: 1_000,
            ..Default::default()
        }
    }

    async fn store() -> SqliteStore {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let failed_stream = RequestRecord {
            error_code: Some(ErrorCode::Kind(ErrorKind::UpstreamTimeout)),
            ..record(
                "r3",
                3_000,
                Some("search"),
                Some("chat"),
                200,
                (5, 0),
                Some(5),
                (1, 1),
            )
        };
        let drill = RequestRecord {
            drill_of: Some("r1".into()),
            key_id: None,
            team: None,
            ..record(
                "d1",
                1_500,
                None,
                None,
                200,
                (10, 10),
                Some(9_000),
                (50, 50),
            )
        };
        let no_price = RequestRecord {
            cost_micros: None,
            energy_uwh: None,
            carbon_ug: None,
            input_tokens: None,
            output_tokens: None,
            ..record("r6", 6_000, None, Some("chat"), 502, (0, 0), None, (0, 0))
        };
        store
            .insert_records(&[
                record(
                    "r1",
                    1_000,
                    Some("search"),
                    Some("chat"),
                    200,
                    (100, 20),
                    Some(1_000),
                    (2_000_000, 1_000_000),
                ),
                record(
                    "r2",
                    2_000,
                    Some("search"),
                    Some("summarise"),
                    200,
                    (50, 10),
                    Some(500),
                    (1_000_000, 500_000),
                ),
                failed_stream,
                record(
                    "r4",
                    4_000,
                    Some("payments"),
                    Some("chat"),
                    429,
                    (0, 0),
                    Some(0),
                    (0, 0),
                ),
                record(
                    "r5",
                    5_000,
                    Some("payments"),
                    None,
                    200,
                    (200, 40),
                    Some(3_000),
                    (4_000_000, 2_000_000),
                ),
                drill,
                no_price,
            ])
            .await
            .unwrap();
        store
    }

    fn by(by: &[UsageDimension]) -> UsageQuery {
        UsageQuery {
            by: by.to_vec(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn records_are_summed_per_team_largest_spend_first_without_drills() {
        let store = store().await;
        let rows = store
            .usage_report(&by(&[UsageDimension::Team]))
            .await
            .unwrap();
        let teams: Vec<Option<&str>> = rows.iter().map(|r| r.value(UsageDimension::Team)).collect();
        assert_eq!(teams, [Some("payments"), Some("search"), None]);
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
        let payments = &rows[0];
        assert_eq!((payments.requests, payments.errors), (2, 1));
        // No team, no price, no tokens: counted, nothing summed.
        let none = &rows[2];
        assert_eq!(
            (
                none.requests,
                none.errors,
                none.cost_micros,
                none.input_tokens
            ),
            (1, 1, 0, 0)
        );
        let total = UsageRow::total(&rows);
        assert_eq!((total.requests, total.cost_micros), (6, 4_505));
    }

    #[tokio::test]
    async fn drills_count_only_when_asked_for() {
        let store = store().await;
        let query = UsageQuery {
            drills: DrillRecords::Include,
            ..by(&[UsageDimension::Team])
        };
        let rows = store.usage_report(&query).await.unwrap();
        let none = rows
            .iter()
            .find(|r| r.value(UsageDimension::Team).is_none())
            .unwrap();
        assert_eq!((none.requests, none.cost_micros), (2, 9_000));
        assert_eq!(UsageRow::total(&rows).requests, 7);
    }

    #[tokio::test]
    async fn groups_combine_several_dimensions_in_the_order_asked() {
        let store = store().await;
        let rows = store
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
                assert_eq!(r.group[0].0, UsageDimension::Feature);
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
                // Equal spend (none) and requests: ordered by the group's values, NULL first.
                (Some("chat"), None),
                (Some("chat"), Some("payments")),
            ]
        );
    }

    #[tokio::test]
    async fn the_span_includes_its_start_and_excludes_its_end() {
        let store = store().await;
        let query = UsageQuery {
            since_ms: Some(2_000),
            until_ms: Some(4_000),
            ..by(&[UsageDimension::Model])
        };
        let rows = store.usage_report(&query).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].value(UsageDimension::Model),
            Some("gpt-4o-mini-2024-07-18")
        );
        assert_eq!(rows[0].requests, 2, "r2 and r3; r4 starts at the end");
        let empty = UsageQuery {
            since_ms: Some(10_000),
            ..Default::default()
        };
        assert!(store.usage_report(&empty).await.unwrap().is_empty());
        let total = store.usage_report(&UsageQuery::default()).await.unwrap();
        assert_eq!((total.len(), total[0].group.len()), (1, 0));
        assert_eq!(total[0].requests, 6);
    }

    #[test]
    fn rows_serialize_raw_sums_and_derived_figures() {
        let row = UsageRow {
            group: vec![
                (UsageDimension::Team, Some("search".into())),
                (UsageDimension::Feature, None),
            ],
            requests: 4,
            errors: 1,
            input_tokens: 100,
            output_tokens: 20,
            cost_micros: 12_500_000,
            energy_uwh: 2_000_000,
            carbon_ug: 500_000,
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "team": "search", "feature": null, "requests": 4, "errors": 1,
                "input_tokens": 100, "output_tokens": 20, "cost_micros": 12_500_000,
                "energy_uwh": 2_000_000, "carbon_ug": 500_000, "cost_usd": "12.500000",
                "kwh": 0.002, "kg_co2e": 0.0005, "kwh_per_1k_requests": 0.5,
                "kg_co2e_per_1k_requests": 0.125,
            })
        );
        let empty = serde_json::to_value(UsageRow::default()).unwrap();
        assert_eq!(empty["kwh_per_1k_requests"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn a_report_by_user_keeps_each_tenants_user_apart() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let of = |id: &str, tenant: &str, user: &str| RequestRecord {
            tenant: Some(sluice_types::TenantId(tenant.into())),
            user: Some(user.into()),
            ..record(id, 1_000, None, None, 200, (1, 1), Some(10), (0, 0))
        };
        store
            .insert_records(&[
                of("r1", "acme", "bob"),
                of("r2", "acme", "bob"),
                of("r3", "globex", "bob"),
            ])
            .await
            .unwrap();
        let query = UsageQuery {
            by: vec![UsageDimension::User],
            ..UsageQuery::default()
        };
        assert_eq!(
            query.dimensions(),
            [UsageDimension::Tenant, UsageDimension::User]
        );
        let rows = store.usage_report(&query).await.unwrap();
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
        // Named explicitly, the tenant keeps its place.
        let query = UsageQuery {
            by: vec![UsageDimension::User, UsageDimension::Tenant],
            ..UsageQuery::default()
        };
        assert_eq!(
            query.dimensions(),
            [UsageDimension::User, UsageDimension::Tenant]
        );
    }

    #[test]
    fn dimensions_are_read_by_name_and_refused_otherwise() {
        for dimension in UsageDimension::ALL {
            assert_eq!(dimension.as_str().parse(), Ok(dimension));
        }
        assert_eq!("Organisation".parse(), Ok(UsageDimension::Organisation));
        assert_eq!("served_model".parse(), Ok(UsageDimension::Model));
        let bad = "team; DROP TABLE requests".parse::<UsageDimension>();
        assert!(bad.unwrap_err().to_string().contains("not something usage"));
    }
}
