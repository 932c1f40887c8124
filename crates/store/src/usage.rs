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
    pub(crate) fn column(self) -> &'static str {
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

impl UsageDimension {
    /// This dimension's value in a record: what a report groups it under.
    pub fn value_of(self, record: &crate::RequestRecord) -> Option<String> {
        match self {
            UsageDimension::Organisation => record.organisation.clone(),
            UsageDimension::Team => record.team.clone(),
            UsageDimension::Project => record.project.clone(),
            UsageDimension::Key => record.key_id.clone(),
            UsageDimension::Tenant => record.tenant.as_ref().map(|t| t.0.clone()),
            UsageDimension::User => record.user.clone(),
            UsageDimension::Alias => record.alias.clone(),
            UsageDimension::Model => record.served_model.clone(),
            UsageDimension::Provider => record.provider.clone(),
            UsageDimension::Feature => record.feature.clone(),
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

    /// The order of a report's rows: the largest spend first, then the most requests, then the
    /// group's values in byte order, a group without a value before those with one.
    pub fn report_order(a: &UsageRow, b: &UsageRow) -> std::cmp::Ordering {
        b.cost_micros
            .cmp(&a.cost_micros)
            .then(b.requests.cmp(&a.requests))
            .then_with(|| {
                let values = |row: &UsageRow| -> Vec<Option<String>> {
                    row.group.iter().map(|(_, v)| v.clone()).collect()
                };
                values(a).cmp(&values(b))
            })
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
