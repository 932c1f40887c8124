//! Reading request records back from Postgres. The cursor is `seq`, the order records were
//! committed in (see [`super::WRITE_LOCK`]); each read runs in one REPEATABLE READ snapshot,
//! so a page and its cursor agree. Filters are bound parameters, never formatted text.

use std::collections::HashMap;

use sqlx::{Postgres, QueryBuilder, Row};

use super::PgStore;
use super::records::{SELECT_RECORD, record_from_row};
use crate::query::AMBIGUOUS_SHOWN;
use crate::{
    Bodies, RecordCursor, RecordFilter, RecordMatch, RecordPage, RequestRecord, StatusFilter,
    StoreError,
};

impl PgStore {
    pub(crate) async fn find_records(
        &self,
        filter: &RecordFilter,
        limit: u32,
    ) -> Result<RecordPage, StoreError> {
        let mut tx = self.snapshot().await?;
        let newest = newest_seq(&mut tx).await?;
        let mut query = QueryBuilder::<Postgres>::new(SELECT_RECORD);
        query.push(" WHERE seq <= ").push_bind(newest);
        push_filter(&mut query, filter);
        query
            .push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(RecordPage {
            records: rows.iter().map(record_from_row).collect::<Result<_, _>>()?,
            cursor: RecordCursor(newest),
        })
    }

    pub(crate) async fn records_after(
        &self,
        filter: &RecordFilter,
        cursor: RecordCursor,
        limit: u32,
    ) -> Result<RecordPage, StoreError> {
        let mut tx = self.snapshot().await?;
        let newest = newest_seq(&mut tx).await?.max(cursor.0);
        let mut query = QueryBuilder::<Postgres>::new(SELECT_RECORD);
        query.push(" WHERE seq > ").push_bind(cursor.0);
        query.push(" AND seq <= ").push_bind(newest);
        push_filter(&mut query, filter);
        query
            .push(" ORDER BY seq ASC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let full = u32::try_from(rows.len()).map_or(true, |n| n >= limit);
        let cursor = match rows.last() {
            // A full page may have left matching records behind it: continue from its end.
            Some(last) if full => RecordCursor(last.try_get("seq")?),
            _ => RecordCursor(newest),
        };
        Ok(RecordPage {
            records: rows.iter().map(record_from_row).collect::<Result<_, _>>()?,
            cursor,
        })
    }

    pub(crate) async fn find_record(&self, id_or_prefix: &str) -> Result<RecordMatch, StoreError> {
        // A range on the primary key (byte order, `COLLATE "C"`): every id starting with the
        // prefix sorts between it and it followed by the highest character.
        let upper = format!("{id_or_prefix}{}", char::MAX);
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT id FROM requests WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3",
        )
        .bind(id_or_prefix)
        .bind(&upper)
        .bind(i64::from(AMBIGUOUS_SHOWN + 1))
        .fetch_all(self.pool())
        .await?;
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
        Ok(match self.record(id).await? {
            Some(record) => RecordMatch::Found(Box::new(record)),
            None => RecordMatch::NotFound,
        })
    }

    pub(crate) async fn record_bodies(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Bodies>, StoreError> {
        // Each day partition is probed by its primary key, which starts with the id.
        let rows = sqlx::query(
            "SELECT request_id, request, response, truncated FROM bodies
             WHERE request_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let bodies = Bodies {
                    request: row.try_get("request")?,
                    response: row.try_get("response")?,
                    truncated: row.try_get("truncated")?,
                };
                Ok((row.try_get("request_id")?, bodies))
            })
            .collect()
    }

    pub(crate) async fn record(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_RECORD} WHERE id = $1 LIMIT 1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(mut record) = row.as_ref().map(record_from_row).transpose()? else {
            return Ok(None);
        };
        let bodies = sqlx::query(
            "SELECT request, response, truncated FROM bodies WHERE request_id = $1 LIMIT 1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        record.bodies = bodies
            .map(|row| -> Result<Bodies, StoreError> {
                Ok(Bodies {
                    request: row.try_get("request")?,
                    response: row.try_get("response")?,
                    truncated: row.try_get("truncated")?,
                })
            })
            .transpose()?;
        Ok(Some(record))
    }

    pub(crate) async fn latest_records(
        &self,
        limit: u32,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_RECORD} ORDER BY seq DESC LIMIT $1"
        )))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// A read-only transaction whose reads all see one snapshot.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'_, Postgres>, StoreError> {
        Ok(self
            .pool()
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?)
    }
}

/// The `seq` of the newest record, 0 when there is none.
async fn newest_seq(conn: &mut sqlx::PgConnection) -> Result<i64, StoreError> {
    let newest: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM requests")
        .fetch_one(conn)
        .await?;
    Ok(newest.unwrap_or(0))
}

/// Appends ` AND ...` for every field of `filter` that is set, each value a bound parameter.
fn push_filter(query: &mut QueryBuilder<Postgres>, filter: &RecordFilter) {
    for (column, value) in [
        ("key_id", &filter.key_id),
        ("team", &filter.team),
        ("end_user", &filter.user),
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
        // What served the request, or any of its attempts (containment: an attempt object
        // with this field and value).
        let attempt = serde_json::json!([{ column: value }]).to_string();
        query
            .push(format_args!(" AND ({column} = "))
            .push_bind(value.clone())
            .push(" OR attempts @> ")
            .push_bind(attempt)
            .push("::jsonb)");
    }
    match filter.status {
        None => {}
        Some(StatusFilter::Code(code)) => {
            query.push(" AND status = ").push_bind(i32::from(code));
        }
        Some(StatusFilter::Class(class)) => {
            let low = i32::from(class) * 100;
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
