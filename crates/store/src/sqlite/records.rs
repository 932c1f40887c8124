//! Request records in SQLite: one row per request in `requests` (bodies apart, in `bodies`),
//! written in batches by the record writer, read back by [`crate::sqlite::query`], deleted in
//! bounded batches once past their retention.

use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::sqlite::SqliteStore;
use crate::{AttemptRecord, Bodies, RequestRecord, StoreError};

/// Rows per INSERT statement at most: 35 bound columns each, 2,240 parameters, far below
/// SQLite's 32,766.
const ROWS_PER_INSERT: usize = 64;

/// The columns every record writes, in bind order.
const RECORD_COLUMNS: &str = "id, started_at, endpoint, dialect, key_id, team, user, alias, \
    served_model, provider, deployment, stream, status, error_code, input_tokens, output_tokens, \
    cached_tokens, usage_estimated, ttft_us, latency_us, attempts, drill_of, schema_valid, \
    trace_id, span_id, parent_span_id, organisation, project, feature, cost_micros, energy_uwh, \
    carbon_ug, degraded_from, tenant, policy";

/// The INSERT of `rows` records (1 to [`ROWS_PER_INSERT`]): a prefix of the statement for the
/// most rows, which is built once. A record already stored (same id) is left as it is, so a
/// batch replayed from the journal writes nothing twice (`OR IGNORE` rather than a trailing
/// `ON CONFLICT`, which would not leave a prefix; the other constraints are NOT NULLs that
/// every record fills). One statement per chunk keeps one round trip to the SQLite
/// worker per chunk; sqlx caches the statement of each size.
fn insert_sql(rows: usize) -> &'static str {
    struct Insert {
        text: String,
        /// `INSERT OR IGNORE INTO requests (...) VALUES `
        head: usize,
        /// `(?, ..., ?), `
        row: usize,
    }
    static INSERT: std::sync::LazyLock<Insert> = std::sync::LazyLock::new(|| {
        let head = format!("INSERT OR IGNORE INTO requests ({RECORD_COLUMNS}) VALUES ");
        let columns = RECORD_COLUMNS.split(", ").count();
        let row = format!("({})", vec!["?"; columns].join(", "));
        Insert {
            text: head.clone() + &vec![row.as_str(); ROWS_PER_INSERT].join(", "),
            head: head.len(),
            row: row.len() + ", ".len(),
        }
    });
    let rows = rows.clamp(1, ROWS_PER_INSERT);
    &INSERT.text[..INSERT.head + rows * INSERT.row - ", ".len()]
}

/// One multi-row INSERT of `chunk` (at most [`ROWS_PER_INSERT`] records); every field but the
/// id is moved out of the records. Returns how many were new.
async fn insert_chunk(
    conn: &mut sqlx::SqliteConnection,
    chunk: &mut [RequestRecord],
) -> Result<u64, StoreError> {
    let mut insert = sqlx::query(insert_sql(chunk.len()));
    for r in chunk {
        let attempts = AttemptRecord::json_list(&r.attempts);
        let policy =
            if r.policy.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&r.policy).map_err(|e| {
                    StoreError::Corrupt(format!("policy decisions of {}: {e}", r.id))
                })?)
            };
        insert = insert
            .bind(r.id.clone())
            .bind(r.started_at)
            .bind(r.endpoint.as_str())
            .bind(r.dialect.as_str())
            .bind(r.key_id.take())
            .bind(r.team.take())
            .bind(r.user.take())
            .bind(r.alias.take())
            .bind(r.served_model.take())
            .bind(r.provider.take())
            .bind(r.deployment.take())
            .bind(r.stream)
            .bind(r.status)
            .bind(r.error_code.map(|code| code.as_str()))
            .bind(r.input_tokens)
            .bind(r.output_tokens)
            .bind(r.cached_tokens)
            .bind(r.usage_estimated)
            .bind(r.ttft_us.map(clamp_i64))
            .bind(clamp_i64(r.latency_us))
            .bind(attempts)
            .bind(r.drill_of.take())
            .bind(r.schema_valid)
            .bind(r.trace_id.take())
            .bind(r.span_id.take())
            .bind(r.parent_span_id.take())
            .bind(r.organisation.take())
            .bind(r.project.take())
            .bind(r.feature.take())
            .bind(r.cost_micros)
            .bind(r.energy_uwh.map(clamp_i64))
            .bind(r.carbon_ug.map(clamp_i64))
            .bind(r.degraded_from.take())
            .bind(r.tenant.take().map(|t| t.0))
            .bind(policy);
    }
    Ok(insert.execute(conn).await?.rows_affected())
}

impl SqliteStore {
    /// [`SqliteStore::write_records`] of a copy, for tests that keep their records.
    #[cfg(test)]
    pub async fn insert_records(&self, records: &[RequestRecord]) -> Result<u64, StoreError> {
        self.write_records(&mut records.to_vec()).await
    }

    /// Writes records in one transaction, many rows per statement (one round trip to the
    /// SQLite worker per [`ROWS_PER_INSERT`] records instead of one per record). Every field
    /// but the id is moved out of `records` into the statement (sqlx copies a borrowed string
    /// into a value of its own; a moved one is only wrapped), so the records are spent; their
    /// ids stay for the log of a failed batch. Returns how many records were new.
    pub(crate) async fn write_records(
        &self,
        records: &mut [RequestRecord],
    ) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut conn = self.records_pool().acquire().await?;
        // A batch that is one statement is atomic on its own: no BEGIN and COMMIT, two round
        // trips to SQLite's thread fewer (at low load, nearly every batch).
        if records.len() <= ROWS_PER_INSERT && records.iter().all(|r| r.bodies.is_none()) {
            return insert_chunk(&mut conn, records).await;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let mut new = 0;
        for chunk in records.chunks_mut(ROWS_PER_INSERT) {
            new += insert_chunk(&mut tx, chunk).await?;
        }
        for r in records.iter() {
            if let Some(bodies) = &r.bodies {
                sqlx::query(
                    "INSERT OR IGNORE INTO bodies (request_id, request, response, truncated) VALUES (?, ?, ?, ?)",
                )
                .bind(&r.id)
                .bind(&bodies.request)
                .bind(&bodies.response)
                .bind(bodies.truncated)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    /// The bodies kept for a request, if any.
    pub async fn bodies(&self, request_id: &str) -> Result<Option<Bodies>, StoreError> {
        let row =
            sqlx::query("SELECT request, response, truncated FROM bodies WHERE request_id = ?")
                .bind(request_id)
                .fetch_optional(self.pool())
                .await?;
        row.map(|row| {
            Ok(Bodies {
                request: row.try_get("request")?,
                response: row.try_get("response")?,
                truncated: row.try_get("truncated")?,
            })
        })
        .transpose()
    }

    /// The latest `limit` records, the most recently ended first.
    pub async fn latest_records(&self, limit: u32) -> Result<Vec<RequestRecord>, StoreError> {
        // Rowid order is the order records were written, i.e. when requests ended.
        let rows = sqlx::query("SELECT * FROM requests ORDER BY rowid DESC LIMIT ?")
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// One record by id, with its bodies when they were kept.
    pub async fn record(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM requests WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        let Some(mut record) = row.as_ref().map(record_from_row).transpose()? else {
            return Ok(None);
        };
        record.bodies = self.bodies(id).await?;
        Ok(Some(record))
    }
}

impl SqliteStore {
    /// [`SqliteStore::prune_records_until`] without a stop.
    #[cfg(test)]
    pub async fn prune_records(&self, older_than_ms: i64, batch: u32) -> Result<u64, StoreError> {
        self.prune_records_until(older_than_ms, batch, &CancellationToken::new())
            .await
    }

    /// Deletes every record that started before `older_than_ms` (Unix milliseconds), at most
    /// `batch` rows per DELETE, stopping between two batches once `stop` is cancelled, and
    /// returns how many were deleted. Each batch's rows are found by a read first, so a DELETE
    /// holds the write lock only for the rows it removes; the table is walked once, in the
    /// order records were written.
    pub(crate) async fn prune_records_until(
        &self,
        older_than_ms: i64,
        batch: u32,
        stop: &CancellationToken,
    ) -> Result<u64, StoreError> {
        let batch = batch.max(1);
        let mut after = i64::MIN;
        let mut removed = 0;
        while !stop.is_cancelled() {
            let (last, found): (Option<i64>, i64) = sqlx::query_as(
                "SELECT max(r), count(*) FROM (SELECT rowid AS r FROM requests
                    WHERE rowid > ? AND started_at < ? ORDER BY rowid LIMIT ?)",
            )
            .bind(after)
            .bind(older_than_ms)
            .bind(batch)
            .fetch_one(self.pool())
            .await?;
            let Some(last) = last else {
                break;
            };
            // The range holds exactly the rows just read: rows written since have higher rowids
            // (and recent `started_at`s).
            // The bodies of these records go with them, in the same transaction.
            let mut tx = self.pool().begin().await?;
            sqlx::query(
                "DELETE FROM bodies WHERE request_id IN (SELECT id FROM requests
                    WHERE rowid > ? AND rowid <= ? AND started_at < ?)",
            )
            .bind(after)
            .bind(last)
            .bind(older_than_ms)
            .execute(&mut *tx)
            .await?;
            let deleted = sqlx::query(
                "DELETE FROM requests WHERE rowid > ? AND rowid <= ? AND started_at < ?",
            )
            .bind(after)
            .bind(last)
            .bind(older_than_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            removed += deleted.rows_affected();
            if found < i64::from(batch) {
                // The read reached the end of the table: nothing older is left.
                break;
            }
            after = last;
        }
        Ok(removed)
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn record_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<RequestRecord, StoreError> {
    let attempts: String = row.try_get("attempts")?;
    let ttft: Option<i64> = row.try_get("ttft_us")?;
    let latency: i64 = row.try_get("latency_us")?;
    let unsigned = |column: &str| -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        Ok(value.map(|v| u64::try_from(v).unwrap_or(0)))
    };
    let parsed = |column: &str, text: &str| -> StoreError {
        StoreError::Corrupt(format!("{column} of a request: `{text}`"))
    };
    let endpoint: String = row.try_get("endpoint")?;
    let dialect: String = row.try_get("dialect")?;
    let error_code: Option<String> = row.try_get("error_code")?;
    let tenant: Option<String> = row.try_get("tenant")?;
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
        user: row.try_get("user")?,
        alias: row.try_get("alias")?,
        served_model: row.try_get("served_model")?,
        provider: row.try_get("provider")?,
        deployment: row.try_get("deployment")?,
        stream: row.try_get("stream")?,
        status: row.try_get("status")?,
        error_code: error_code
            .map(|code| code.parse().map_err(|_| parsed("error_code", &code)))
            .transpose()?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cached_tokens: row.try_get("cached_tokens")?,
        usage_estimated: row.try_get("usage_estimated")?,
        ttft_us: ttft.map(|v| u64::try_from(v).unwrap_or(0)),
        latency_us: u64::try_from(latency).unwrap_or(0),
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::record::{AttemptOutcome, Endpoint, Next, Role};
    use sluice_types::{Dialect, ErrorKind};

    fn record(id: &str, started_at: i64) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            started_at,
            endpoint: Endpoint::ChatCompletions,
            dialect: Dialect::OpenAi,
            status: 200,
            input_tokens: Some(12),
            attempts: vec![
                AttemptRecord {
                    deployment: "primary".into(),
                    provider: "openai".into(),
                    outcome: AttemptOutcome::Failed(ErrorKind::UpstreamUnavailable),
                    status: Some(500),
                    latency_us: 900,
                    role: Some(Role::Pool),
                    next: Some(Next::Fallback),
                    ..Default::default()
                },
                AttemptRecord {
                    deployment: "backup".into(),
                    provider: "openai".into(),
                    outcome: AttemptOutcome::Ok,
                    status: Some(200),
                    latency_us: 1500,
                    ttft_us: Some(1400),
                    input_tokens: Some(12),
                    ..Default::default()
                },
            ],
            schema_valid: Some(true),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            span_id: Some("00f067aa0ba902b7".into()),
            latency_us: 2000,
            policy: {
                let mut audit = sluice_types::record::Audit::default();
                audit.note(
                    "dlp",
                    "email",
                    sluice_types::record::PolicyAction::Pseudonymise,
                    sluice_types::record::PolicyPlace::Request,
                    2,
                );
                audit
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn records_round_trip_newest_first() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .insert_records(&[record("a", 1), record("b", 2)])
            .await
            .unwrap();
        let latest = store.latest_records(10).await.unwrap();
        assert_eq!(
            latest.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(latest[1], record("a", 1));
        assert_eq!(store.record("a").await.unwrap(), Some(record("a", 1)));
    }

    #[test]
    fn the_insert_of_n_rows_binds_n_rows_of_every_column() {
        for rows in [1, 2, 23, ROWS_PER_INSERT] {
            let sql = insert_sql(rows);
            let columns = RECORD_COLUMNS.split(", ").count();
            assert_eq!(columns, 35);
            assert_eq!(sql.matches('?').count(), rows * columns, "{rows}");
            assert!(sql.ends_with(')'), "{rows}: {sql}");
        }
    }

    #[tokio::test]
    async fn a_batch_of_any_size_is_written_whole_and_in_order() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        // 87 = 64 + 23: a full statement and a shorter one.
        let records: Vec<RequestRecord> = (0..87)
            .map(|i| RequestRecord {
                cost_micros: Some(i),
                degraded_from: Some(format!("alias{i}")),
                ..record(&format!("r{i:02}"), i)
            })
            .collect();
        store.insert_records(&records).await.unwrap();
        let mut latest = store.latest_records(100).await.unwrap();
        latest.reverse();
        assert_eq!(latest, records);
    }

    #[tokio::test]
    async fn bodies_are_kept_apart_and_read_with_the_record() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let bodies = Bodies {
            request: Some(r#"{"model":"m"}"#.into()),
            response: Some("data: {}\n\n".into()),
            truncated: true,
        };
        let with = RequestRecord {
            bodies: Some(bodies.clone()),
            ..record("with", 1)
        };
        store
            .insert_records(&[with, record("without", 2)])
            .await
            .unwrap();
        assert_eq!(
            store.record("with").await.unwrap().unwrap().bodies,
            Some(bodies)
        );
        assert_eq!(store.record("without").await.unwrap().unwrap().bodies, None);
        // Listings never read them.
        assert!(
            store
                .latest_records(10)
                .await
                .unwrap()
                .iter()
                .all(|r| r.bodies.is_none())
        );
    }

    fn ids(records: &[RequestRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    #[tokio::test]
    async fn prune_deletes_old_records_in_batches_until_none_is_left() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        // Old and new interleaved, as a long request that started early ends among new ones.
        let mut records = Vec::new();
        for i in 0..25 {
            records.push(record(&format!("old{i:02}"), 1_000 + i));
            if i % 5 == 0 {
                records.push(record(&format!("new{i:02}"), 5_000 + i));
            }
        }
        store.insert_records(&records).await.unwrap();

        // Batches of 10: three DELETEs for 25 rows.
        assert_eq!(store.prune_records(5_000, 10).await.unwrap(), 25);
        let left = store.latest_records(100).await.unwrap();
        assert_eq!(ids(&left), ["new20", "new15", "new10", "new05", "new00"]);
        assert_eq!(store.prune_records(5_000, 10).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn prune_keeps_a_record_that_started_exactly_at_the_cutoff() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .insert_records(&[record("before", 999), record("at", 1_000)])
            .await
            .unwrap();
        assert_eq!(
            store
                .prune_records(1_000, crate::records::PRUNE_BATCH)
                .await
                .unwrap(),
            1
        );
        assert_eq!(ids(&store.latest_records(10).await.unwrap()), ["at"]);
    }
}
