//! Writing request records to Postgres: one INSERT per batch whatever its size, each column
//! bound as one array and unnested (a statement that never changes, prepared once per
//! connection), in a transaction that holds [`WRITE_LOCK`] so that `seq` follows commit order
//! across every writer.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgStore, WRITE_LOCK, to_i64, to_u64};
use crate::{AttemptRecord, RequestRecord, StoreError};

/// The columns every record writes, in bind order, with the type of each one's array.
const RECORD_COLUMNS: [(&str, &str); 35] = [
    ("id", "text"),
    ("started_at", "bigint"),
    ("endpoint", "text"),
    ("dialect", "text"),
    ("tenant", "text"),
    ("key_id", "text"),
    ("organisation", "text"),
    ("team", "text"),
    ("project", "text"),
    ("end_user", "text"),
    ("feature", "text"),
    ("alias", "text"),
    ("served_model", "text"),
    ("provider", "text"),
    ("deployment", "text"),
    ("stream", "boolean"),
    ("status", "integer"),
    ("error_code", "text"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("cached_tokens", "bigint"),
    ("usage_estimated", "boolean"),
    ("ttft_us", "bigint"),
    ("latency_us", "bigint"),
    ("attempts", "jsonb"),
    ("drill_of", "text"),
    ("schema_valid", "boolean"),
    ("trace_id", "text"),
    ("span_id", "text"),
    ("parent_span_id", "text"),
    ("cost_micros", "bigint"),
    ("energy_uwh", "bigint"),
    ("carbon_ug", "bigint"),
    ("degraded_from", "text"),
    ("policy", "jsonb"),
];

/// `INSERT INTO requests (...) SELECT * FROM unnest($1::text[], ...)`; JSON travels as text
/// and is cast on the way in. A record already stored (same id and start) is left as it is,
/// so a batch replayed from the journal writes nothing twice.
fn insert_sql() -> &'static str {
    static INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let columns: Vec<&str> = RECORD_COLUMNS.iter().map(|(c, _)| *c).collect();
        let arrays: Vec<String> = RECORD_COLUMNS
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| {
                let ty = if *ty == "jsonb" { "text" } else { ty };
                format!("${}::{ty}[]", i + 1)
            })
            .collect();
        let selected: Vec<String> = RECORD_COLUMNS
            .iter()
            .map(|(c, ty)| {
                if *ty == "jsonb" {
                    format!("{c}::jsonb")
                } else {
                    (*c).to_owned()
                }
            })
            .collect();
        format!(
            "INSERT INTO requests ({}) SELECT {} FROM unnest({}) AS r({}) ON CONFLICT DO NOTHING",
            columns.join(", "),
            selected.join(", "),
            arrays.join(", "),
            columns.join(", "),
        )
    });
    INSERT.as_str()
}

/// One array per column, filled record by record.
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    started_at: Vec<i64>,
    endpoint: Vec<&'static str>,
    dialect: Vec<&'static str>,
    tenant: Vec<Option<String>>,
    key_id: Vec<Option<String>>,
    organisation: Vec<Option<String>>,
    team: Vec<Option<String>>,
    project: Vec<Option<String>>,
    end_user: Vec<Option<String>>,
    feature: Vec<Option<String>>,
    alias: Vec<Option<String>>,
    served_model: Vec<Option<String>>,
    provider: Vec<Option<String>>,
    deployment: Vec<Option<String>>,
    stream: Vec<bool>,
    status: Vec<i32>,
    error_code: Vec<Option<&'static str>>,
    input_tokens: Vec<Option<i64>>,
    output_tokens: Vec<Option<i64>>,
    cached_tokens: Vec<Option<i64>>,
    usage_estimated: Vec<bool>,
    ttft_us: Vec<Option<i64>>,
    latency_us: Vec<i64>,
    attempts: Vec<String>,
    drill_of: Vec<Option<String>>,
    schema_valid: Vec<Option<bool>>,
    trace_id: Vec<Option<String>>,
    span_id: Vec<Option<String>>,
    parent_span_id: Vec<Option<String>>,
    cost_micros: Vec<Option<i64>>,
    energy_uwh: Vec<Option<i64>>,
    carbon_ug: Vec<Option<i64>>,
    degraded_from: Vec<Option<String>>,
    policy: Vec<Option<String>>,
}

/// The bodies of a batch, one array per column.
#[derive(Default)]
struct BodyColumns {
    request_id: Vec<String>,
    started_at: Vec<i64>,
    request: Vec<Option<String>>,
    response: Vec<Option<String>>,
    truncated: Vec<bool>,
}

impl PgStore {
    /// Writes a batch in one transaction; every field but the id is moved out of `records`.
    /// Returns how many records were stored now.
    pub(crate) async fn write_records(
        &self,
        records: &mut [RequestRecord],
    ) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        // A batch written on a new day first makes that day's partitions (and the next ones).
        // Failing that, the batch is still written: to the default partition if need be.
        if let Err(e) = self.partitions.ensure_ahead(self.pool()).await {
            tracing::warn!(error = %e, "request record partitions could not be made ahead");
        }
        let mut c = Columns::default();
        let mut bodies = BodyColumns::default();
        for r in records.iter_mut() {
            let policy = if r.policy.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&r.policy).map_err(|e| {
                    StoreError::Corrupt(format!("policy decisions of {}: {e}", r.id))
                })?)
            };
            if let Some(kept) = r.bodies.take() {
                bodies.request_id.push(r.id.clone());
                bodies.started_at.push(r.started_at);
                bodies.request.push(kept.request);
                bodies.response.push(kept.response);
                bodies.truncated.push(kept.truncated);
            }
            c.id.push(r.id.clone());
            c.started_at.push(r.started_at);
            c.endpoint.push(r.endpoint.as_str());
            c.dialect.push(r.dialect.as_str());
            c.tenant.push(r.tenant.take().map(|t| t.0));
            c.key_id.push(r.key_id.take());
            c.organisation.push(r.organisation.take());
            c.team.push(r.team.take());
            c.project.push(r.project.take());
            c.end_user.push(r.user.take());
            c.feature.push(r.feature.take());
            c.alias.push(r.alias.take());
            c.served_model.push(r.served_model.take());
            c.provider.push(r.provider.take());
            c.deployment.push(r.deployment.take());
            c.stream.push(r.stream);
            c.status.push(i32::from(r.status));
            c.error_code.push(r.error_code.map(|code| code.as_str()));
            c.input_tokens.push(r.input_tokens.map(i64::from));
            c.output_tokens.push(r.output_tokens.map(i64::from));
            c.cached_tokens.push(r.cached_tokens.map(i64::from));
            c.usage_estimated.push(r.usage_estimated);
            c.ttft_us.push(r.ttft_us.map(to_i64));
            c.latency_us.push(to_i64(r.latency_us));
            c.attempts.push(AttemptRecord::json_list(&r.attempts));
            c.drill_of.push(r.drill_of.take());
            c.schema_valid.push(r.schema_valid);
            c.trace_id.push(r.trace_id.take());
            c.span_id.push(r.span_id.take());
            c.parent_span_id.push(r.parent_span_id.take());
            c.cost_micros.push(r.cost_micros);
            c.energy_uwh.push(r.energy_uwh.map(to_i64));
            c.carbon_ug.push(r.carbon_ug.map(to_i64));
            c.degraded_from.push(r.degraded_from.take());
            c.policy.push(policy);
        }
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        let stored = sqlx::query(insert_sql())
            .bind(c.id)
            .bind(c.started_at)
            .bind(c.endpoint)
            .bind(c.dialect)
            .bind(c.tenant)
            .bind(c.key_id)
            .bind(c.organisation)
            .bind(c.team)
            .bind(c.project)
            .bind(c.end_user)
            .bind(c.feature)
            .bind(c.alias)
            .bind(c.served_model)
            .bind(c.provider)
            .bind(c.deployment)
            .bind(c.stream)
            .bind(c.status)
            .bind(c.error_code)
            .bind(c.input_tokens)
            .bind(c.output_tokens)
            .bind(c.cached_tokens)
            .bind(c.usage_estimated)
            .bind(c.ttft_us)
            .bind(c.latency_us)
            .bind(c.attempts)
            .bind(c.drill_of)
            .bind(c.schema_valid)
            .bind(c.trace_id)
            .bind(c.span_id)
            .bind(c.parent_span_id)
            .bind(c.cost_micros)
            .bind(c.energy_uwh)
            .bind(c.carbon_ug)
            .bind(c.degraded_from)
            .bind(c.policy)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if !bodies.request_id.is_empty() {
            sqlx::query(
                "INSERT INTO bodies (request_id, started_at, request, response, truncated)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::boolean[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(bodies.request_id)
            .bind(bodies.started_at)
            .bind(bodies.request)
            .bind(bodies.response)
            .bind(bodies.truncated)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(stored)
    }
}

/// The columns `record_from_row` reads, JSON as text.
pub(crate) const SELECT_RECORD: &str = "SELECT seq, id, started_at, endpoint, dialect, tenant, \
    key_id, organisation, team, project, end_user, feature, alias, served_model, provider, \
    deployment, stream, status, error_code, input_tokens, output_tokens, cached_tokens, \
    usage_estimated, ttft_us, latency_us, attempts::text AS attempts, drill_of, schema_valid, \
    trace_id, span_id, parent_span_id, cost_micros, energy_uwh, carbon_ug, degraded_from, \
    policy::text AS policy FROM requests";

pub(crate) fn record_from_row(row: &PgRow) -> Result<RequestRecord, StoreError> {
    let parsed = |column: &str, text: &str| -> StoreError {
        StoreError::Corrupt(format!("{column} of a request: `{text}`"))
    };
    let tokens = |column: &str| -> Result<Option<u32>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        Ok(value.map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
    };
    let unsigned = |column: &str| -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        Ok(value.map(to_u64))
    };
    let endpoint: String = row.try_get("endpoint")?;
    let dialect: String = row.try_get("dialect")?;
    let error_code: Option<String> = row.try_get("error_code")?;
    let tenant: Option<String> = row.try_get("tenant")?;
    let status: i32 = row.try_get("status")?;
    let attempts: String = row.try_get("attempts")?;
    let latency: i64 = row.try_get("latency_us")?;
    Ok(RequestRecord {
        id: row.try_get("id")?,
        started_at: row.try_get("started_at")?,
        endpoint: endpoint
            .parse()
            .map_err(|_| parsed("endpoint", &endpoint))?,
        dialect: match dialect.as_str() {
            "openai" => sluice_types::Dialect::OpenAi,
            "anthropic" => sluice_types::Dialect::Anthropic,
            other => return Err(parsed("dialect", other)),
        },
        tenant: tenant.map(sluice_types::TenantId),
        key_id: row.try_get("key_id")?,
        team: row.try_get("team")?,
        user: row.try_get("end_user")?,
        alias: row.try_get("alias")?,
        served_model: row.try_get("served_model")?,
        provider: row.try_get("provider")?,
        deployment: row.try_get("deployment")?,
        stream: row.try_get("stream")?,
        status: u16::try_from(status).map_err(|_| parsed("status", &status.to_string()))?,
        error_code: error_code
            .map(|code| code.parse().map_err(|_| parsed("error_code", &code)))
            .transpose()?,
        input_tokens: tokens("input_tokens")?,
        output_tokens: tokens("output_tokens")?,
        cached_tokens: tokens("cached_tokens")?,
        usage_estimated: row.try_get("usage_estimated")?,
        ttft_us: unsigned("ttft_us")?,
        latency_us: to_u64(latency),
        attempts: serde_json::from_str(&attempts)
            .map_err(|e| StoreError::Corrupt(format!("attempts of a request: {e}")))?,
        drill_of: row.try_get("drill_of")?,
        schema_valid: row.try_get("schema_valid")?,
        trace_id: row.try_get("trace_id")?,
        span_id: row.try_get("span_id")?,
        parent_span_id: row.try_get("parent_span_id")?,
        organisation: row.try_get("organisation")?,
        project: row.try_get("project")?,
        feature: row.try_get("feature")?,
        cost_micros: row.try_get("cost_micros")?,
        energy_uwh: unsigned("energy_uwh")?,
        carbon_ug: unsigned("carbon_ug")?,
        degraded_from: row.try_get("degraded_from")?,
        bodies: None,
        policy: match row.try_get::<Option<String>, _>("policy")? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("policy decisions of a request: {e}")))?,
            None => Default::default(),
        },
    })
}
