//! Usage reports: request records summed per group — requests, errors, tokens, spend, energy
//! and carbon per organisation, team, project, key, end user, alias, model, provider or
//! feature tag, over a span of time.
//!
//! What a report groups by is a closed set ([`UsageDimension`]): each names one column, so
//! the statement is built from our own text and every value (the time span) is a bound
//! parameter. Sums are exact integers in the records' units (micro-USD, micro-Wh, micro-g);
//! the derived figures a person reads (kWh, kgCO2e, per 1,000 requests) are computed from
//! them here, once, for `sluice usage` and the admin API alike. Parsing what a person typed
//! (`--since 30d`) is the caller's job; listing single records is [`crate::query`]'s.

use serde::ser::SerializeMap;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::{Store, StoreError};

/// What a usage report can group records by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageDimension {
    Organisation,
    Team,
    Project,
    /// The virtual key's id.
    Key,
    /// The tenant that owns the key.
    Tenant,
    /// The end user. End-user ids belong to their tenant, so a report by user also groups by
    /// tenant ([`UsageQuery::dimensions`]).
    User,
    /// The model the client asked for.
    Alias,
    /// The model that served, as the provider reported it.
    Model,
    Provider,
    /// The `x-sluice-feature` tag.
    Feature,
}

impl UsageDimension {
    pub const ALL: [UsageDimension; 10] = [
        UsageDimension::Organisation,
        UsageDimension::Team,
        UsageDimension::Project,
        UsageDimension::Key,
        UsageDimension::Tenant,
        UsageDimension::User,
        UsageDimension::Alias,
        UsageDimension::Model,
        UsageDimension::Provider,
        UsageDimension::Feature,
    ];

    /// The name a person types and a JSON row carries: `org`, `team`, ... `feature`.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageDimension::Organisation => "org",
            UsageDimension::Team => "team",
            UsageDimension::Project => "project",
            UsageDimension::Key => "key",
            UsageDimension::Tenant => "tenant",
            UsageDimension::User => "user",
            UsageDimension::Alias => "alias",
            UsageDimension::Model => "model",
            UsageDimension::Provider => "provider",
            UsageDimension::Feature => "feature",
        }
    }

    /// The `requests` column this dimension reads. Only these constants ever reach the SQL.
    fn column(self) -> &'static str {
        match self {
            UsageDimension::Organisation => "organisation",
            UsageDimension::Team => "team",
            UsageDimension::Project => "project",
            UsageDimension::Key => "key_id",
            UsageDimension::Tenant => "tenant",
            UsageDimension::User => "user",
            UsageDimension::Alias => "alias",
            UsageDimension::Model => "served_model",
            UsageDimension::Provider => "provider",
            UsageDimension::Feature => "feature",
        }
    }
}

/// Why a text is not a [`UsageDimension`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not something usage can be grouped by (org, team, project, key, tenant, user, alias, model, provider, feature)"
)]
pub struct UnknownDimension(pub String);

impl std::str::FromStr for UsageDimension {
    type Err = UnknownDimension;

    fn from_str(text: &str) -> Result<UsageDimension, UnknownDimension> {
        let lower = text.trim().to_ascii_lowercase();
        let alias = match lower.as_str() {
            "organisation" | "organization" => "org",
            "key_id" => "key",
            "served_model" => "model",
            other => other,
        };
        UsageDimension::ALL
            .into_iter()
            .find(|d| d.as_str() == alias)
            .ok_or_else(|| UnknownDimension(text.to_owned()))
    }
}

/// Whether drill records (shadow requests to fallbacks) count in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrillRecords {
    /// Only live traffic: what callers asked for.
    #[default]
    Exclude,
    /// Drills too (their own group: no key, team or user).
    Include,
}

/// Which records a report sums, and how it groups them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// One group per distinct combination of these, in this order (repeats are ignored).
    /// Empty: one group, the total.
    pub by: Vec<UsageDimension>,
    /// Started at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Started before this time (Unix milliseconds): the span is `[since, until)`.
    pub until_ms: Option<i64>,
    pub drills: DrillRecords,
}

impl UsageQuery {
    /// What the report groups by, in order: `by` without repeats, with the tenant just before
    /// the end user when `by` names the user but not the tenant (the same end-user id in two
    /// tenants is two people).
    pub fn dimensions(&self) -> Vec<UsageDimension> {
        let mut by: Vec<UsageDimension> = Vec::with_capacity(self.by.len() + 1);
        for dimension in &self.by {
            if by.contains(dimension) {
                continue;
            }
            if *dimension == UsageDimension::User && !self.by.contains(&UsageDimension::Tenant) {
                by.push(UsageDimension::Tenant);
            }
            by.push(*dimension);
        }
        by
    }
}

/// The sums of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRow {
    /// The group: each dimension of the query and its value (`None`: records without one).
    pub group: Vec<(UsageDimension, Option<String>)>,
    pub requests: u64,
    /// Requests answered with an HTTP error, or that failed after they started (a stream's
    /// error event).
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Spend in micro-USD (requests whose model has no price count nothing).
    pub cost_micros: i64,
    /// Estimated energy, micro-Wh.
    pub energy_uwh: u64,
    /// Estimated carbon, micro-gCO2e.
    pub carbon_ug: u64,
}

/// Micro-Wh in one kWh, micro-grams in one kg.
const MICRO_PER_KILO: f64 = 1e9;

impl UsageRow {
    /// The sum of `rows`, with no group: a report's totals line.
    pub fn total<'a>(rows: impl IntoIterator<Item = &'a UsageRow>) -> UsageRow {
        let mut total = UsageRow::default();
        for row in rows {
            total.requests = total.requests.saturating_add(row.requests);
            total.errors = total.errors.saturating_add(row.errors);
            total.input_tokens = total.input_tokens.saturating_add(row.input_tokens);
            total.output_tokens = total.output_tokens.saturating_add(row.output_tokens);
            total.cost_micros = total.cost_micros.saturating_add(row.cost_micros);
            total.energy_uwh = total.energy_uwh.saturating_add(row.energy_uwh);
            total.carbon_ug = total.carbon_ug.saturating_add(row.carbon_ug);
        }
        total
    }

    /// The value of one dimension of the group.
    pub fn value(&self, dimension: UsageDimension) -> Option<&str> {
        self.group
            .iter()
            .find(|(d, _)| *d == dimension)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn kwh(&self) -> f64 {
        self.energy_uwh as f64 / MICRO_PER_KILO
    }

    pub fn kg_co2e(&self) -> f64 {
        self.carbon_ug as f64 / MICRO_PER_KILO
    }

    /// kWh per 1,000 requests; `None` for a group without requests.
    pub fn kwh_per_1k_requests(&self) -> Option<f64> {
        self.per_1k(self.kwh())
    }

    /// kgCO2e per 1,000 requests; `None` for a group without requests.
    pub fn kg_co2e_per_1k_requests(&self) -> Option<f64> {
        self.per_1k(self.kg_co2e())
    }

    fn per_1k(&self, amount: f64) -> Option<f64> {
        (self.requests > 0).then(|| amount * 1000.0 / self.requests as f64)
    }

    /// Spend as exact decimal dollars without a sign: `12.500000`.
    pub fn cost_usd(&self) -> String {
        let micros = self.cost_micros.unsigned_abs();
        let sign = if self.cost_micros < 0 { "-" } else { "" };
        format!("{sign}{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }
}

/// One JSON object: the group's dimensions by name, the raw integer sums, then the derived
/// figures (`cost_usd` as an exact decimal string, energy and carbon as numbers).
impl serde::Serialize for UsageRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (dimension, value) in &self.group {
            map.serialize_entry(dimension.as_str(), value)?;
        }
        map.serialize_entry("requests", &self.requests)?;
        map.serialize_entry("errors", &self.errors)?;
        map.serialize_entry("input_tokens", &self.input_tokens)?;
        map.serialize_entry("output_tokens", &self.output_tokens)?;
        map.serialize_entry("cost_micros", &self.cost_micros)?;
        map.serialize_entry("energy_uwh", &self.energy_uwh)?;
        map.serialize_entry("carbon_ug", &self.carbon_ug)?;
        map.serialize_entry("cost_usd", &self.cost_usd())?;
        map.serialize_entry("kwh", &self.kwh())?;
        map.serialize_entry("kg_co2e", &self.kg_co2e())?;
        map.serialize_entry("kwh_per_1k_requests", &self.kwh_per_1k_requests())?;
        map.serialize_entry("kg_co2e_per_1k_requests", &self.kg_co2e_per_1k_requests())?;
        map.end()
    }
}

impl Store {
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
    use crate::RequestRecord;
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

    async fn store() -> Store {
        let store = Store::open_in_memory().await.unwrap();
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
        let store = Store::open_in_memory().await.unwrap();
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
