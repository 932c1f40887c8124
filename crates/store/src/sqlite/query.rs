//! Reading request records back from SQLite: filtered listings (newest first), following new
//! records as they are written, and finding one record by its id or a unique start of it.
//!
//! Filters become SQL with bound parameters ([`RecordFilter`]); values are never formatted
//! into the statement. The `requests` table has no secondary index (see
//! `docs/architecture.md`, "Request records"), so a filtered read scans by rowid, newest
//! first, and stops at its limit. Parsing what a person typed (`5xx`, `15m`) is the CLI's
//! job; writing and pruning records is [`crate::sqlite::records`]'s.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite};

use crate::query::AMBIGUOUS_SHOWN;
use crate::sqlite::SqliteStore;
use crate::sqlite::records::record_from_row;
use crate::{
    Bodies, RecordCursor, RecordFilter, RecordMatch, RecordPage, StatusFilter, StoreError,
};

/// Ids per statement of [`SqliteStore::record_bodies`]: one bound parameter each, far below
/// SQLite's 32,766.
const IDS_PER_SELECT: usize = 500;

impl SqliteStore {
    /// The latest `limit` records that match `filter`, the most recently ended first, and a
    /// cursor at the newest record in the store (matching or not) at the time of the read, so
    /// [`SqliteStore::records_after`] continues without a gap or a repeat.
    pub async fn find_records(
        &self,
        filter: &RecordFilter,
        limit: u32,
    ) -> Result<RecordPage, StoreError> {
        // One read transaction: the records and the cursor come from the same snapshot.
        let mut tx = self.pool().begin().await?;
        let newest = newest_rowid(&mut tx).await?;
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM requests WHERE rowid <= ");
        query.push_bind(newest);
        push_filter(&mut query, filter);
        // Rowid order is the order records were written, i.e. when requests ended.
        query.push(" ORDER BY rowid DESC LIMIT ").push_bind(limit);
        let rows = query.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(RecordPage {
            records: rows.iter().map(record_from_row).collect::<Result<_, _>>()?,
            cursor: RecordCursor(newest),
        })
    }

    /// Up to `limit` records matching `filter` written after `cursor`, oldest first, and the
    /// cursor to continue from. A page shorter than `limit` means everything written so far has
    /// been read. When the table has shrunk below the cursor (retention removed every record,
    /// and SQLite numbers rows from 1 again), reading starts over from the beginning.
    pub async fn records_after(
        &self,
        filter: &RecordFilter,
        cursor: RecordCursor,
        limit: u32,
    ) -> Result<RecordPage, StoreError> {
        let mut tx = self.pool().begin().await?;
        let newest = newest_rowid(&mut tx).await?;
        let after = if newest < cursor.0 { 0 } else { cursor.0 };
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT rowid AS record_rowid, * FROM requests WHERE rowid > ",
        );
        query.push_bind(after);
        query.push(" AND rowid <= ").push_bind(newest);
        push_filter(&mut query, filter);
        query.push(" ORDER BY rowid ASC LIMIT ").push_bind(limit);
        let rows = query.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let full = u32::try_from(rows.len()).map_or(true, |n| n >= limit);
        let cursor = match rows.last() {
            // A full page may have left matching records behind it: continue from its end.
            Some(last) if full => RecordCursor(last.try_get("record_rowid")?),
            // Otherwise every record up to the snapshot's newest has been seen.
            _ => RecordCursor(newest),
        };
        Ok(RecordPage {
            records: rows.iter().map(record_from_row).collect::<Result<_, _>>()?,
            cursor,
        })
    }

    /// The record whose id is `id_or_prefix`, or the only one whose id starts with it.
    pub async fn find_record(&self, id_or_prefix: &str) -> Result<RecordMatch, StoreError> {
        // A range on the primary key (an index) rather than LIKE, which would need escaping
        // and, by default, scans: every id starting with the prefix sorts between the prefix
        // itself and the prefix followed by the highest character.
        let upper = format!("{id_or_prefix}{}", char::MAX);
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM requests WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
        )
        .bind(id_or_prefix)
        .bind(&upper)
        .bind(AMBIGUOUS_SHOWN + 1)
        .fetch_all(self.pool())
        .await?;
        // The exact id sorts first among the ids it starts.
        let id = match ids.as_slice() {
            [] => return Ok(RecordMatch::NotFound),
            [first, ..] if first == id_or_prefix => first,
            [only] => only,
            _ => {
                let mut ids = ids;
                let more = ids.len() > AMBIGUOUS_SHOWN as usize;
                ids.truncate(AMBIGUOUS_SHOWN as usize);
                return Ok(RecordMatch::Ambiguous { ids, more });
            }
        };
        // The whole record, as `SqliteStore::record` reads it (with what is kept beside the row).
        Ok(match self.record(id).await? {
            Some(record) => RecordMatch::Found(Box::new(record)),
            // Deleted (by retention) between the two reads.
            None => RecordMatch::NotFound,
        })
    }
}

impl SqliteStore {
    /// The bodies kept for the records of `ids`, by id; ids without bodies are left out.
    pub async fn record_bodies(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Bodies>, StoreError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(IDS_PER_SELECT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT request_id, request, response, truncated FROM bodies WHERE request_id IN (",
            );
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id.clone());
            }
            query.push(")");
            for row in query.build().fetch_all(self.pool()).await? {
                let bodies = Bodies {
                    request: row.try_get("request")?,
                    response: row.try_get("response")?,
                    truncated: row.try_get("truncated")?,
                };
                found.insert(row.try_get("request_id")?, bodies);
            }
        }
        Ok(found)
    }
}

/// The rowid of the newest record, 0 when there is none.
async fn newest_rowid(conn: &mut sqlx::SqliteConnection) -> Result<i64, StoreError> {
    let newest: Option<i64> = sqlx::query_scalar("SELECT max(rowid) FROM requests")
        .fetch_one(conn)
        .await?;
    Ok(newest.unwrap_or(0))
}

/// Appends ` AND ...` for every field of `filter` that is set, each value a bound parameter.
fn push_filter(query: &mut QueryBuilder<Sqlite>, filter: &RecordFilter) {
    for (column, value) in [
        ("key_id", &filter.key_id),
        ("team", &filter.team),
        ("user", &filter.user),
        ("alias", &filter.alias),
    ] {
        if let Some(value) = value {
            // `column` is one of the names above, never input.
            query
                .push(format_args!(" AND {column} = "))
                .push_bind(value.clone());
        }
    }
    for (column, value) in [
        ("provider", &filter.provider),
        ("deployment", &filter.deployment),
    ] {
        let Some(value) = value else {
            continue;
        };
        // What served the request, or any of its attempts (a request that failed everywhere
        // has no `deployment`). `instr` on the JSON text first, as the value appears there
        // (quoted, escaped), so the attempts of most rows are never parsed.
        let quoted = serde_json::Value::from(value.as_str()).to_string();
        query
            .push(format_args!(" AND ({column} = "))
            .push_bind(value.clone())
            .push(" OR (instr(attempts, ")
            .push_bind(quoted)
            .push(format_args!(
                ") > 0 AND EXISTS (SELECT 1 FROM json_each(requests.attempts) \
                 WHERE json_extract(value, '$.{column}') = "
            ))
            .push_bind(value.clone())
            .push(")))");
    }
    match filter.status {
        None => {}
        Some(StatusFilter::Code(code)) => {
            query.push(" AND status = ").push_bind(code);
        }
        Some(StatusFilter::Class(class)) => {
            let low = u16::from(class) * 100;
            query
                .push(" AND status BETWEEN ")
                .push_bind(low)
                .push(" AND ")
                .push_bind(low + 99);
        }
        Some(StatusFilter::Error) => {
            query.push(" AND error_code IS NOT NULL");
        }
        Some(StatusFilter::Ok) => {
            query.push(" AND error_code IS NULL");
        }
    }
    if let Some(since) = filter.since_ms {
        query.push(" AND started_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until_ms {
        query.push(" AND started_at <= ").push_bind(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttemptRecord, RequestRecord};
    use sluice_types::record::{AttemptOutcome, Endpoint, ErrorCode};
    use sluice_types::{Dialect, ErrorKind};

    fn record(id: &str, started_at: i64) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            started_at,
            endpoint: Endpoint::ChatCompletions,
            dialect: Dialect::OpenAi,
            status: 200,
            latency_us: 1000,
            ..Default::default()
        }
    }

    fn ids(records: &[RequestRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    async fn find(store: &SqliteStore, filter: RecordFilter) -> Vec<String> {
        let page = store.find_records(&filter, 100).await.unwrap();
        ids(&page.records).into_iter().map(str::to_owned).collect()
    }

    /// Six records that differ in one field each from a plain `base`.
    async fn varied_store() -> SqliteStore {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let records = [
            record("base", 1_000),
            RequestRecord {
                key_id: Some("key_a".into()),
                team: Some("search".into()),
                user: Some("alice".into()),
                ..record("who", 2_000)
            },
            RequestRecord {
                alias: Some("fast".into()),
                provider: Some("openai".into()),
                deployment: Some("gpt-east".into()),
                ..record("what", 3_000)
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
                ..record("bad_gateway", 4_000)
            },
            RequestRecord {
                status: 429,
                error_code: Some(ErrorCode::Kind(ErrorKind::RateLimited)),
                ..record("limited", 5_000)
            },
            RequestRecord {
                stream: true,
                error_code: Some(ErrorCode::Kind(ErrorKind::UpstreamTimeout)),
                ..record("stream_failed", 6_000)
            },
        ];
        store.insert_records(&records).await.unwrap();
        store
    }

    #[tokio::test]
    async fn each_field_of_the_filter_selects_only_matching_records() {
        let store = varied_store().await;
        let cases = [
            (
                RecordFilter {
                    key_id: Some("key_a".into()),
                    ..Default::default()
                },
                vec!["who"],
            ),
            (
                RecordFilter {
                    team: Some("search".into()),
                    ..Default::default()
                },
                vec!["who"],
            ),
            (
                RecordFilter {
                    user: Some("alice".into()),
                    ..Default::default()
                },
                vec!["who"],
            ),
            (
                RecordFilter {
                    alias: Some("fast".into()),
                    ..Default::default()
                },
                vec!["what"],
            ),
            (
                RecordFilter {
                    provider: Some("openai".into()),
                    ..Default::default()
                },
                vec!["what"],
            ),
            (
                RecordFilter {
                    deployment: Some("gpt-east".into()),
                    ..Default::default()
                },
                vec!["what"],
            ),
            // Failed everywhere, so served by nothing: found by its attempts.
            (
                RecordFilter {
                    deployment: Some("gpt-west".into()),
                    ..Default::default()
                },
                vec!["bad_gateway"],
            ),
            (
                RecordFilter {
                    provider: Some("azure".into()),
                    ..Default::default()
                },
                vec!["bad_gateway"],
            ),
            (
                RecordFilter {
                    deployment: Some("gpt".into()),
                    ..Default::default()
                },
                vec![],
            ),
            (
                RecordFilter {
                    user: Some("bob".into()),
                    ..Default::default()
                },
                vec![],
            ),
            (
                RecordFilter {
                    team: Some("search".into()),
                    alias: Some("fast".into()),
                    ..Default::default()
                },
                vec![],
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(find(&store, filter.clone()).await, expected, "{filter:?}");
        }
    }

    #[tokio::test]
    async fn status_filters_match_a_code_a_class_errors_or_successes() {
        let store = varied_store().await;
        let status = |s| RecordFilter {
            status: Some(s),
            ..Default::default()
        };
        assert_eq!(
            find(&store, status(StatusFilter::Code(502))).await,
            ["bad_gateway"]
        );
        assert_eq!(
            find(&store, status(StatusFilter::Class(5))).await,
            ["bad_gateway"]
        );
        assert_eq!(
            find(&store, status(StatusFilter::Class(4))).await,
            ["limited"]
        );
        assert_eq!(
            find(&store, status(StatusFilter::Class(2))).await,
            ["stream_failed", "what", "who", "base"]
        );
        assert_eq!(
            find(&store, status(StatusFilter::Error)).await,
            ["stream_failed", "limited", "bad_gateway"],
            "a stream that failed after it started was sent 200 but is an error"
        );
        assert_eq!(
            find(&store, status(StatusFilter::Ok)).await,
            ["what", "who", "base"]
        );
    }

    #[tokio::test]
    async fn time_range_is_inclusive_at_both_ends() {
        let store = varied_store().await;
        let filter = RecordFilter {
            since_ms: Some(2_000),
            until_ms: Some(4_000),
            ..Default::default()
        };
        assert_eq!(find(&store, filter).await, ["bad_gateway", "what", "who"]);
        let since = RecordFilter {
            since_ms: Some(5_500),
            ..Default::default()
        };
        assert_eq!(find(&store, since).await, ["stream_failed"]);
        let until = RecordFilter {
            until_ms: Some(1_000),
            ..Default::default()
        };
        assert_eq!(find(&store, until).await, ["base"]);
    }

    #[tokio::test]
    async fn listing_is_newest_written_first_and_stops_at_the_limit() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        // Written in this order; started_at deliberately out of order (a long request that
        // started first ends last).
        store
            .insert_records(&[record("r1", 30), record("r2", 10), record("r3", 20)])
            .await
            .unwrap();
        store.insert_records(&[record("r4", 5)]).await.unwrap();
        let page = store
            .find_records(&RecordFilter::default(), 3)
            .await
            .unwrap();
        assert_eq!(ids(&page.records), ["r4", "r3", "r2"]);
        let page = store
            .find_records(&RecordFilter::default(), 0)
            .await
            .unwrap();
        assert!(page.records.is_empty());
    }

    #[tokio::test]
    async fn records_after_a_cursor_are_read_oldest_first_without_gaps_or_repeats() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .insert_records(&[record("old1", 1), record("old2", 2)])
            .await
            .unwrap();
        let errors = RecordFilter {
            status: Some(StatusFilter::Error),
            ..Default::default()
        };
        let first = store.find_records(&errors, 10).await.unwrap();
        assert!(first.records.is_empty());

        let failed = |id: &str| RequestRecord {
            status: 500,
            error_code: Some(ErrorCode::Kind(ErrorKind::Internal)),
            ..record(id, 3)
        };
        store
            .insert_records(&[failed("e1"), record("fine", 4), failed("e2"), failed("e3")])
            .await
            .unwrap();
        // A short limit: the page is full, so the cursor stops at its last record.
        let page = store.records_after(&errors, first.cursor, 2).await.unwrap();
        assert_eq!(ids(&page.records), ["e1", "e2"]);
        let page = store.records_after(&errors, page.cursor, 2).await.unwrap();
        assert_eq!(ids(&page.records), ["e3"]);
        let page = store.records_after(&errors, page.cursor, 2).await.unwrap();
        assert!(page.records.is_empty());
        // Nothing new: the cursor stays where it was.
        let again = store.records_after(&errors, page.cursor, 2).await.unwrap();
        assert_eq!(again.cursor, page.cursor);

        store.insert_records(&[failed("e4")]).await.unwrap();
        let page = store.records_after(&errors, again.cursor, 2).await.unwrap();
        assert_eq!(ids(&page.records), ["e4"]);
    }

    #[tokio::test]
    async fn following_starts_over_when_the_table_was_emptied_below_the_cursor() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .insert_records(&[record("a", 1), record("b", 2), record("c", 3)])
            .await
            .unwrap();
        let all = RecordFilter::default();
        let cursor = store.find_records(&all, 10).await.unwrap().cursor;
        assert_eq!(store.prune_records(10, 100).await.unwrap(), 3);
        store.insert_records(&[record("fresh", 20)]).await.unwrap();
        let page = store.records_after(&all, cursor, 10).await.unwrap();
        assert_eq!(ids(&page.records), ["fresh"]);
    }

    #[tokio::test]
    async fn a_record_is_found_by_its_id_or_a_unique_prefix() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .insert_records(&[
                record("req_0199aa01", 1),
                record("req_0199aa02", 2),
                record("req_0199bb01", 3),
                record("req_0199bb0", 4),
                record("req_0199cc77", 5),
                record("req_0199dd00", 6),
            ])
            .await
            .unwrap();
        let found = |m: RecordMatch| match m {
            RecordMatch::Found(r) => r.id,
            other => panic!("expected one record, got {other:?}"),
        };
        let find = |id: &'static str| {
            let store = store.clone();
            async move { store.find_record(id).await.unwrap() }
        };
        assert_eq!(found(find("req_0199aa02").await), "req_0199aa02");
        assert_eq!(found(find("req_0199c").await), "req_0199cc77");
        assert_eq!(
            found(find("req_0199bb0").await),
            "req_0199bb0",
            "an exact id wins over the longer ids it starts"
        );
        assert_eq!(
            find("req_0199aa").await,
            RecordMatch::Ambiguous {
                ids: vec!["req_0199aa01".into(), "req_0199aa02".into()],
                more: false
            }
        );
        match find("req_0199").await {
            RecordMatch::Ambiguous { ids, more } => assert_eq!((ids.len(), more), (5, true)),
            other => panic!("expected an ambiguous prefix, got {other:?}"),
        }
        assert_eq!(find("req_0199e").await, RecordMatch::NotFound);
        assert_eq!(find("req_0199aa01x").await, RecordMatch::NotFound);
    }
}
