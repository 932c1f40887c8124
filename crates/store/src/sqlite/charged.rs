//! Charged usage from SQLite.

use sqlx::Row;

use crate::sqlite::SqliteStore;
use crate::{ChargedUsage, StoreError};

impl SqliteStore {
    /// Charged usage since `since_ms`, grouped by chain and by spans of `granularity_ms`.
    pub async fn charged_usage(
        &self,
        since_ms: i64,
        granularity_ms: i64,
    ) -> Result<Vec<ChargedUsage>, StoreError> {
        let granularity = granularity_ms.max(1);
        let rows = sqlx::query(
            "SELECT tenant, organisation, team, project, key_id, user, alias,
                    (started_at / ?1) * ?1 AS slot_start,
                    COUNT(*) AS requests,
                    COALESCE(SUM(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)), 0) AS tokens,
                    COALESCE(SUM(MAX(COALESCE(cost_micros, 0), 0)), 0) AS cost_micros
             FROM requests
             WHERE started_at >= ?2 AND drill_of IS NULL AND key_id IS NOT NULL
               AND EXISTS (SELECT 1 FROM json_each(requests.attempts)
                           WHERE json_extract(json_each.value, '$.outcome') != 'skipped')
             GROUP BY tenant, organisation, team, project, key_id, user, alias, slot_start",
        )
        .bind(granularity)
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let unsigned = |column: &str| -> Result<u64, StoreError> {
                    let value: i64 = row.try_get(column)?;
                    Ok(u64::try_from(value).unwrap_or(0))
                };
                Ok(ChargedUsage {
                    tenant: row.try_get("tenant")?,
                    organisation: row.try_get("organisation")?,
                    team: row.try_get("team")?,
                    project: row.try_get("project")?,
                    key_id: row.try_get("key_id")?,
                    user: row.try_get("user")?,
                    alias: row.try_get("alias")?,
                    slot_start: row.try_get("slot_start")?,
                    requests: unsigned("requests")?,
                    tokens: unsigned("tokens")?,
                    cost_micros: unsigned("cost_micros")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttemptRecord, RequestRecord};

    fn record(id: &str, started_at: i64, key: &str, outcome: &str) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            started_at,
            endpoint: sluice_types::record::Endpoint::ChatCompletions,
            dialect: sluice_types::Dialect::OpenAi,
            key_id: Some(key.into()),
            tenant: Some(sluice_types::TenantId(format!("tenant_of_{key}"))),
            team: Some("search".into()),
            user: Some("ana".into()),
            alias: Some("gpt-4o".into()),
            status: 200,
            input_tokens: Some(10),
            output_tokens: Some(5),
            cost_micros: Some(30),
            attempts: vec![AttemptRecord {
                deployment: "d".into(),
                provider: "p".into(),
                outcome: outcome.parse().unwrap(),
                ..AttemptRecord::default()
            }],
            ..RequestRecord::default()
        }
    }

    #[tokio::test]
    async fn sums_what_reached_a_deployment_per_chain_and_span() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let mut drill = record("r5", 1_500, "key_a", "ok");
        drill.drill_of = Some("r1".into());
        store
            .insert_records(&[
                record("r1", 1_000, "key_a", "ok"),
                record("r2", 1_999, "key_a", "upstream_timeout"),
                record("r3", 2_000, "key_a", "ok"),
                // Refused before any deployment: never charged.
                record("r4", 1_100, "key_a", "skipped"),
                drill,
                record("r6", 1_200, "key_b", "ok"),
                // Before the span asked for.
                record("r7", 500, "key_a", "ok"),
            ])
            .await
            .unwrap();
        let mut usage = store.charged_usage(1_000, 1_000).await.unwrap();
        usage.sort_by_key(|u| (u.key_id.clone(), u.slot_start));
        let summary: Vec<_> = usage
            .iter()
            .map(|u| {
                (
                    u.key_id.as_deref().unwrap(),
                    u.slot_start,
                    u.requests,
                    u.tokens,
                    u.cost_micros,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("key_a", 1_000, 2, 30, 60),
                ("key_a", 2_000, 1, 15, 30),
                ("key_b", 1_000, 1, 15, 30),
            ]
        );
        assert_eq!(usage[0].team.as_deref(), Some("search"));
        assert_eq!(usage[0].user.as_deref(), Some("ana"));
        assert_eq!(usage[0].tenant.as_deref(), Some("tenant_of_key_a"));
        assert_eq!(usage[2].tenant.as_deref(), Some("tenant_of_key_b"));
    }
}
