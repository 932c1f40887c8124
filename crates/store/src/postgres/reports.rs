//! Usage reports and charged usage from Postgres: grouped and summed in the database. A span
//! of time reads only the day partitions it covers (partition pruning on `started_at`).
//!
//! Each runs with [`REPORT_WORK_MEM`]: with the default 4 MB, grouping a million records by
//! team and user sorts on disk (2.9 s here); with it, they are hashed in memory (0.7 s).

use sqlx::{Postgres, QueryBuilder, Row};

use super::{PgStore, to_u64};
use crate::{ChargedUsage, DrillRecords, StoreError, UsageDimension, UsageQuery, UsageRow};

/// The `requests` column a dimension reads. Only these constants ever reach the SQL.
fn column(dimension: UsageDimension) -> &'static str {
    match dimension {
        UsageDimension::User => "end_user",
        other => other.column(),
    }
}

/// The memory a report's grouping may use, for its transaction only.
const REPORT_WORK_MEM: &str = "SET LOCAL work_mem = '64MB'";

impl PgStore {
    /// A read-only transaction for one report.
    async fn report(&self) -> Result<sqlx::Transaction<'_, Postgres>, StoreError> {
        let mut tx = self.pool().begin_with("BEGIN READ ONLY").await?;
        sqlx::raw_sql(REPORT_WORK_MEM).execute(&mut *tx).await?;
        Ok(tx)
    }

    pub(crate) async fn usage_report(
        &self,
        query: &UsageQuery,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let by = query.dimensions();
        let mut sql = QueryBuilder::<Postgres>::new("SELECT ");
        for (index, dimension) in by.iter().enumerate() {
            // Byte order (as the embedded store sorts), whatever the database's locale.
            sql.push(format_args!(
                "{} COLLATE \"C\" AS g{index}, ",
                column(*dimension)
            ));
        }
        // SUM of BIGINT is NUMERIC in Postgres: back to BIGINT, as the sums are read.
        sql.push(
            "COUNT(*) AS sum_requests,
             COUNT(*) FILTER (WHERE status >= 400 OR error_code IS NOT NULL) AS sum_errors,
             COALESCE(SUM(input_tokens), 0)::BIGINT AS sum_input_tokens,
             COALESCE(SUM(output_tokens), 0)::BIGINT AS sum_output_tokens,
             COALESCE(SUM(cost_micros), 0)::BIGINT AS sum_cost_micros,
             COALESCE(SUM(energy_uwh), 0)::BIGINT AS sum_energy_uwh,
             COALESCE(SUM(carbon_ug), 0)::BIGINT AS sum_carbon_ug
             FROM requests WHERE TRUE",
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
        if !by.is_empty() {
            let groups: Vec<String> = (0..by.len()).map(|i| format!("g{i}")).collect();
            sql.push(format_args!(" GROUP BY {}", groups.join(", ")));
        }
        sql.push(" ORDER BY sum_cost_micros DESC, sum_requests DESC");
        for index in 0..by.len() {
            // No value first, as the embedded store sorts.
            sql.push(format_args!(", g{index} ASC NULLS FIRST"));
        }
        let mut tx = self.report().await?;
        let rows = sql.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
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

    pub(crate) async fn charged_usage(
        &self,
        since_ms: i64,
        granularity_ms: i64,
    ) -> Result<Vec<ChargedUsage>, StoreError> {
        let granularity = granularity_ms.max(1);
        let mut tx = self.report().await?;
        let rows = sqlx::query(
            "SELECT tenant, organisation, team, project, key_id, end_user, alias,
                    (started_at / $1) * $1 AS slot_start,
                    COUNT(*) AS requests,
                    COALESCE(SUM(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)), 0)::BIGINT AS tokens,
                    COALESCE(SUM(GREATEST(COALESCE(cost_micros, 0), 0)), 0)::BIGINT AS cost_micros
             FROM requests
             WHERE started_at >= $2 AND drill_of IS NULL AND key_id IS NOT NULL
               AND EXISTS (SELECT 1 FROM jsonb_array_elements(attempts) AS a
                           WHERE a->>'outcome' <> 'skipped')
             GROUP BY tenant, organisation, team, project, key_id, end_user, alias, slot_start",
        )
        .bind(granularity)
        .bind(since_ms)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(ChargedUsage {
                    tenant: row.try_get("tenant")?,
                    organisation: row.try_get("organisation")?,
                    team: row.try_get("team")?,
                    project: row.try_get("project")?,
                    key_id: row.try_get("key_id")?,
                    user: row.try_get("end_user")?,
                    alias: row.try_get("alias")?,
                    slot_start: row.try_get("slot_start")?,
                    requests: to_u64(row.try_get("requests")?),
                    tokens: to_u64(row.try_get("tokens")?),
                    cost_micros: to_u64(row.try_get("cost_micros")?),
                })
            })
            .collect()
    }
}
