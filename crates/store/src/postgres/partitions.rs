//! Day partitions of `requests` and `bodies`: `requests_pYYYYMMDD` holds the records that
//! started on that UTC day, `[day 00:00, next day 00:00)` in Unix milliseconds.
//!
//! Partitions are made ahead: today's and the next [`DAYS_AHEAD`] days' at open, and again by
//! the first batch written on a new day. A record no day partition covers (it started before
//! the first one was made, or a clock was far off) lands in the default partition, so a write
//! never fails for a missing partition; when a day partition is made later, the rows of that
//! day move out of the default partition into it.
//!
//! Retention ([`PgStore::prune_records`]) drops the partitions that end at or before the
//! cutoff (a catalog change, whatever their size) and deletes row by row only in the
//! partition that straddles the cutoff and in the default partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use super::{PARTITION_LOCK, PgStore};
use crate::StoreError;

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Days after today that get their partition ahead of time: a gateway that writes nothing
/// across midnight still finds tomorrow's ready.
pub(crate) const DAYS_AHEAD: i64 = 2;

/// The tables partitioned by day, each with a default partition `<table>_default`.
const PARTITIONED: [&str; 2] = ["requests", "bodies"];

/// The last day (days since the epoch) whose partitions this process has made sure of.
#[derive(Clone, Debug, Default)]
pub(crate) struct Partitions {
    ensured_on: Arc<AtomicI64>,
}

/// The UTC day of a Unix millisecond time.
pub(crate) fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// `YYYYMMDD` of a day since the epoch (the proleptic Gregorian calendar).
pub(crate) fn date_of(day: i64) -> String {
    // Civil date from a day count (H. Hinnant's `civil_from_days`).
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// The day of a partition's name (`requests_p20261206`), if it is a day partition of `table`.
fn day_of_partition(table: &str, name: &str) -> Option<i64> {
    let date = name.strip_prefix(table)?.strip_prefix("_p")?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Scanning the days around the year the name gives finds its day (names are ours).
    let year: i64 = date.get(..4)?.parse().ok()?;
    let first = (year - 1970) * 365 + (year - 1969).div_euclid(4) - 1;
    (first..first + 370).find(|&day| date_of(day) == date)
}

impl Partitions {
    /// Makes sure today's and the next days' partitions exist, tried once per day per process
    /// (a failed try is not repeated for every batch: the days made ahead, or the default
    /// partition, take the records meanwhile).
    pub(crate) async fn ensure_ahead(&self, pool: &PgPool) -> Result<(), StoreError> {
        let today = day_of(crate::now_ms());
        if self.ensured_on.swap(today, Ordering::Relaxed) == today {
            return Ok(());
        }
        for day in today..=today + DAYS_AHEAD {
            ensure_day(pool, day).await?;
        }
        Ok(())
    }
}

/// Creates the partitions of `day` unless they exist, moving that day's rows out of the
/// default partitions. Under [`PARTITION_LOCK`], so replicas do not race to create one.
pub(crate) async fn ensure_day(pool: &PgPool, day: i64) -> Result<(), StoreError> {
    let (from, to) = (day * DAY_MS, (day + 1) * DAY_MS);
    let date = date_of(day);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *tx)
        .await?;
    for table in PARTITIONED {
        let partition = format!("{table}_p{date}");
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&partition)
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            continue;
        }
        // Names and bounds are our own text and integers; DDL takes no bind parameters.
        let create = format!(
            "CREATE TABLE {partition} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             WITH moved AS (DELETE FROM {table}_default WHERE started_at >= {from} AND started_at < {to} RETURNING *)
             INSERT INTO {partition} SELECT * FROM moved;
             ALTER TABLE {table} ATTACH PARTITION {partition} FOR VALUES FROM ({from}) TO ({to});"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The day partitions of `table`, oldest first.
async fn day_partitions(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
) -> Result<Vec<(i64, String)>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = to_regclass($1)",
    )
    .bind(table)
    .fetch_all(&mut **tx)
    .await?;
    let mut days: Vec<(i64, String)> = names
        .into_iter()
        .filter_map(|name| day_of_partition(table, &name).map(|day| (day, name)))
        .collect();
    days.sort();
    Ok(days)
}

impl PgStore {
    /// Deletes every record (and its bodies) that started before `older_than_ms`: whole day
    /// partitions that end at or before it are dropped; the rest (the partition straddling the
    /// cutoff, the default partition) lose their old rows `batch` at a time.
    pub(crate) async fn prune_records(
        &self,
        older_than_ms: i64,
        batch: u32,
        stop: &CancellationToken,
    ) -> Result<u64, StoreError> {
        let mut removed = 0u64;
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        for table in PARTITIONED {
            for (day, partition) in day_partitions(&mut tx, table).await? {
                if (day + 1) * DAY_MS > older_than_ms {
                    break;
                }
                if table == "requests" {
                    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT count(*) FROM {partition}"
                    )))
                    .fetch_one(&mut *tx)
                    .await?;
                    removed += super::to_u64(rows);
                }
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {partition}")))
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(partition, "request records partition dropped by retention");
            }
        }
        tx.commit().await?;
        // What is left below the cutoff: rows of the straddling and default partitions.
        let batch = i64::from(batch.max(1));
        for table in PARTITIONED {
            let key = if table == "requests" {
                "id"
            } else {
                "request_id"
            };
            let delete = format!(
                "DELETE FROM {table} WHERE ({key}, started_at) IN
                    (SELECT {key}, started_at FROM {table} WHERE started_at < $1 LIMIT $2)"
            );
            while !stop.is_cancelled() {
                let deleted = sqlx::query(sqlx::AssertSqlSafe(delete.as_str()))
                    .bind(older_than_ms)
                    .bind(batch)
                    .execute(self.pool())
                    .await?
                    .rows_affected();
                if table == "requests" {
                    removed += deleted;
                }
                if deleted < super::to_u64(batch) {
                    break;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_named_by_their_utc_date_and_read_back() {
        assert_eq!(date_of(0), "19700101");
        assert_eq!(date_of(day_of(1_733_529_600_000)), "20241207");
        assert_eq!(date_of(day_of(951_782_400_000)), "20000229");
        assert_eq!(
            day_of(-1),
            -1,
            "a millisecond before the epoch is the day before"
        );
        for day in [0, 10_957, 11_016, 20_000, 20_428, 29_000] {
            let name = format!("requests_p{}", date_of(day));
            assert_eq!(day_of_partition("requests", &name), Some(day), "{name}");
        }
        assert_eq!(day_of_partition("requests", "requests_default"), None);
        assert_eq!(day_of_partition("requests", "bodies_p20241207"), None);
    }

    fn record(id: &str, started_at: i64) -> crate::RequestRecord {
        crate::RequestRecord {
            id: id.into(),
            started_at,
            status: 200,
            bodies: Some(crate::Bodies {
                request: Some("{}".into()),
                response: None,
                truncated: false,
            }),
            ..Default::default()
        }
    }

    async fn exists(pool: &PgPool, table: &str) -> bool {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    async fn count(pool: &PgPool, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn days_get_partitions_ahead_and_retention_drops_whole_days() {
        let Some((store, admin, schema)) = crate::conformance::postgres_store().await else {
            return;
        };
        let pool = store.pool().clone();
        let today = day_of(crate::now_ms());
        for day in today..=today + DAYS_AHEAD {
            for table in PARTITIONED {
                let name = format!("{table}_p{}", date_of(day));
                assert!(exists(&pool, &name).await, "{name} made at open");
            }
        }
        let at = |day: i64, hour: i64| day * DAY_MS + hour * 3_600_000;
        // Written before their days have partitions: they land in the default partitions.
        store
            .write_records(&mut [
                record("three_days_ago", at(today - 3, 1)),
                record("two_days_ago_early", at(today - 2, 1)),
                record("two_days_ago_late", at(today - 2, 20)),
                record("yesterday", at(today - 1, 1)),
                record("today", crate::now_ms()),
            ])
            .await
            .unwrap();
        assert_eq!(count(&pool, "requests_default").await, 4);
        // Making a day's partitions moves its rows out of the default ones.
        ensure_day(&pool, today - 3).await.unwrap();
        ensure_day(&pool, today - 2).await.unwrap();
        ensure_day(&pool, today - 2).await.unwrap();
        let three = format!("requests_p{}", date_of(today - 3));
        let two = format!("requests_p{}", date_of(today - 2));
        assert_eq!(count(&pool, &three).await, 1);
        assert_eq!(count(&pool, &two).await, 2);
        assert_eq!(
            count(&pool, &format!("bodies_p{}", date_of(today - 2))).await,
            2
        );
        assert_eq!(count(&pool, "requests_default").await, 1);

        // The cutoff falls inside two days ago: three days ago goes whole, two days ago loses
        // its early row, the default partition keeps yesterday's.
        let stop = CancellationToken::new();
        let removed = store
            .prune_records(at(today - 2, 12), 1, &stop)
            .await
            .unwrap();
        assert_eq!(removed, 2);
        assert!(!exists(&pool, &three).await, "dropped");
        assert!(!exists(&pool, &format!("bodies_p{}", date_of(today - 3))).await);
        assert!(exists(&pool, &two).await, "straddles the cutoff: kept");
        let mut left: Vec<String> = sqlx::query_scalar("SELECT id FROM requests")
            .fetch_all(&pool)
            .await
            .unwrap();
        left.sort();
        assert_eq!(left, ["today", "two_days_ago_late", "yesterday"]);
        assert_eq!(
            count(&pool, "bodies").await,
            3,
            "bodies go with their records"
        );
        store.close().await;
        crate::conformance::drop_schema(&admin, &schema).await;
    }
}
