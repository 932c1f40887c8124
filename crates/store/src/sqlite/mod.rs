//! The embedded SQLite store: one database file, WAL mode, a pool for reads and one
//! connection kept for the record writer.
//!
//! Each capability's SQL is in a module of its own; the trait impls at the bottom only
//! delegate. Schema changes are `migrations/sqlite/NNNN_name.sql`; `PRAGMA user_version` says
//! how many a database has applied.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio_util::sync::CancellationToken;

use crate::capabilities::{
    BudgetStore, ChargeHistory, KeyStore, RecordPruning, RecordQueries, RecordSink, StoreFuture,
    UsageReports,
};
use crate::keys::{KeyHash, StoredKey};
use crate::{
    Bodies, BudgetRow, ChargedUsage, CreatedKey, KeyInfo, Migrated, NewKey, RecordCursor,
    RecordFilter, RecordMatch, RecordPage, RequestRecord, StoreError, UsageQuery, UsageRow,
};

mod budgets;
mod charged;
mod keys;
pub(crate) mod query;
pub(crate) mod records;
mod threads;
mod usage;

/// Each entry moves the schema one version forward. Never edit a file that has shipped: add
/// one.
const MIGRATIONS: &[(crate::MigrationName, &str)] = &[
    (
        "0001_keys_and_requests",
        include_str!("../../migrations/sqlite/0001_keys_and_requests.sql"),
    ),
    (
        "0002_drills_and_schema_checks",
        include_str!("../../migrations/sqlite/0002_drills_and_schema_checks.sql"),
    ),
    (
        "0003_trace_ids",
        include_str!("../../migrations/sqlite/0003_trace_ids.sql"),
    ),
    (
        "0004_bodies",
        include_str!("../../migrations/sqlite/0004_bodies.sql"),
    ),
    (
        "0005_hierarchy_costs_and_budgets",
        include_str!("../../migrations/sqlite/0005_hierarchy_costs_and_budgets.sql"),
    ),
    (
        "0006_tenants",
        include_str!("../../migrations/sqlite/0006_tenants.sql"),
    ),
    (
        "0007_policy_decisions",
        include_str!("../../migrations/sqlite/0007_policy_decisions.sql"),
    ),
];

/// The options of a database file (its folder created if missing).
fn file_options(path: &Path) -> Result<SqliteConnectOptions, StoreError> {
    crate::create_parent_dir(path)?;
    Ok(SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(5))
        .thread_name(threads::name))
}

/// `sluice migrate` of a database file.
pub(crate) async fn migrate_file(path: &Path) -> Result<Migrated, StoreError> {
    let mut conn = connect_first(&file_options(path)?).await?;
    let migrated = migrate(&mut conn).await?;
    conn.close().await?;
    Ok(migrated)
}

/// The embedded SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection kept for the request-record writer: a connection that only this writer
    /// uses keeps its page cache valid between batches (SQLite drops a connection's cache when
    /// another connection has written).
    records: SqlitePool,
}

impl SqliteStore {
    /// Opens the database file (creating it and its folder if needed) and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = file_options(path)?;
        // One connection alone first: it switches a new file to WAL (an exclusive lock that
        // several first connections would fight over, failing at once with "database is
        // locked") and migrates; the pools then find both done.
        let mut first = connect_first(&options).await?;
        let migrated = migrate(&mut first).await?;
        first.close().await?;
        crate::log_applied(&migrated, &path.display().to_string());
        Ok(SqliteStore {
            pool: pool(options.clone(), 4).await?,
            records: pool(options, 1).await?,
        })
    }

    /// Opens a database file that must already be a Sluice store: a missing file is not
    /// created, and one that is not a Sluice store is refused before anything is written to it
    /// (checked on a connection that neither creates the file nor changes its journal mode).
    /// Then opens it as [`SqliteStore::open`] does, migrating an older schema.
    pub async fn open_existing(path: &Path) -> Result<SqliteStore, StoreError> {
        let shown = || path.display().to_string();
        if !path.exists() {
            return Err(StoreError::NoStoreFile(shown()));
        }
        if !path.is_file() {
            return Err(StoreError::NotAStore(shown()));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .busy_timeout(std::time::Duration::from_secs(5));
        let checked = async {
            let mut conn = SqliteConnection::connect_with(&options).await?;
            let found = has_sluice_schema(&mut conn).await;
            conn.close().await?;
            found
        };
        match checked.await {
            Ok(true) => SqliteStore::open(path).await,
            Ok(false) => Err(StoreError::NotAStore(shown())),
            // SQLITE_NOTADB: the file is not a SQLite database at all.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("26") => {
                Err(StoreError::NotAStore(shown()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A private in-memory database, for tests.
    pub async fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection: every connection to `:memory:` is a separate database.
        let pool = pool(options, 1).await?;
        migrate(&mut *pool.acquire().await?).await?;
        Ok(SqliteStore {
            records: pool.clone(),
            pool,
        })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn records_pool(&self) -> &SqlitePool {
        &self.records
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.records.close().await;
        self.pool.close().await;
    }
}

/// Whether the database has been migrated by Sluice: a schema version, and the `keys` and
/// `requests` tables of the first migration.
async fn has_sluice_schema(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('keys', 'requests')",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(version > 0 && tables == 2)
}

/// Opens a connection to a file another process may be creating at the same moment: the switch
/// to WAL does not wait on the busy timeout, so "database is locked" is retried briefly.
async fn connect_first(options: &SqliteConnectOptions) -> Result<SqliteConnection, StoreError> {
    const ATTEMPTS: u32 = 50;
    let mut attempt = 1;
    loop {
        match SqliteConnection::connect_with(options).await {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("5") && attempt < ATTEMPTS =>
            {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// A pool that keeps its connections (opening SQLite connections is cheap but not free). A
/// connection is not pinged before each use: an embedded database's connection does not drop,
/// and the ping is a round trip to the connection's thread (a thread woken) per use. Each new
/// connection's thread runs below the request path ([`threads`]).
async fn pool(options: SqliteConnectOptions, connections: u32) -> Result<SqlitePool, StoreError> {
    Ok(SqlitePoolOptions::new()
        .max_connections(connections)
        .test_before_acquire(false)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(|_, _| {
            Box::pin(async {
                threads::lower_priorities();
                Ok(())
            })
        })
        .connect_with(options)
        .await?)
}

/// Brings the schema up to date. `BEGIN IMMEDIATE` takes the write lock before reading the
/// version, so two processes migrating at once wait for each other (busy timeout) instead of
/// failing on a read-to-write upgrade.
async fn migrate(conn: &mut SqliteConnection) -> Result<Migrated, StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *tx)
        .await?;
    if usize::try_from(version).is_ok_and(|v| v > MIGRATIONS.len()) {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    let done = usize::try_from(version).unwrap_or(0);
    let mut applied = Vec::new();
    for (index, (name, migration)) in MIGRATIONS.iter().enumerate().skip(done) {
        sqlx::raw_sql(*migration).execute(&mut *tx).await?;
        applied.push(*name);
        // PRAGMA takes no bind parameters; the value is our own integer.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {}",
            index + 1
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Migrated {
        applied,
        known: MIGRATIONS.len(),
    })
}

// The capabilities: each call is the inherent method of the same name (the SQL lives in the
// modules above).

impl KeyStore for SqliteStore {
    fn create_key(&self, new: NewKey) -> StoreFuture<'_, CreatedKey> {
        Box::pin(SqliteStore::create_key(self, new))
    }
    fn list_keys(&self) -> StoreFuture<'_, Vec<KeyInfo>> {
        Box::pin(SqliteStore::list_keys(self))
    }
    fn find_key_by_hash<'a>(&'a self, hash: &'a KeyHash) -> StoreFuture<'a, Option<KeyInfo>> {
        Box::pin(SqliteStore::find_key_by_hash(self, hash))
    }
    fn revoke_key<'a>(&'a self, id_or_prefix: &'a str) -> StoreFuture<'a, KeyInfo> {
        Box::pin(SqliteStore::revoke_key(self, id_or_prefix))
    }
    /// Another process revoking a key in the file has no way to tell this one.
    fn key_changes(&self) -> StoreFuture<'_, Option<crate::KeyChanges>> {
        Box::pin(std::future::ready(Ok(None)))
    }
    fn export_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(SqliteStore::export_keys(self))
    }
    fn import_key<'a>(&'a self, key: &'a StoredKey) -> StoreFuture<'a, bool> {
        Box::pin(SqliteStore::import_key(self, key))
    }
}

impl BudgetStore for SqliteStore {
    fn budgets(&self) -> StoreFuture<'_, Vec<BudgetRow>> {
        Box::pin(SqliteStore::budgets(self))
    }
    fn put_budget(&self, row: BudgetRow) -> StoreFuture<'_, BudgetRow> {
        Box::pin(SqliteStore::put_budget(self, row))
    }
    fn delete_budgets<'a>(
        &'a self,
        scope: &'a str,
        metric_and_period: Option<(&'a str, &'a str)>,
    ) -> StoreFuture<'a, u64> {
        Box::pin(SqliteStore::delete_budgets(self, scope, metric_and_period))
    }
    /// Another process changing a row in the file has no way to tell this one.
    fn budget_changes(&self) -> StoreFuture<'_, Option<crate::BudgetChanges>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn import_budget<'a>(&'a self, row: &'a BudgetRow) -> StoreFuture<'a, bool> {
        Box::pin(SqliteStore::import_budget(self, row))
    }
}

impl RecordSink for SqliteStore {
    fn write_records<'a>(&'a self, records: &'a mut [RequestRecord]) -> StoreFuture<'a, u64> {
        Box::pin(SqliteStore::write_records(self, records))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(self.records_pool()).await?;
            Ok(())
        })
    }
}

impl RecordQueries for SqliteStore {
    fn find_records<'a>(
        &'a self,
        filter: &'a RecordFilter,
        limit: u32,
    ) -> StoreFuture<'a, RecordPage> {
        Box::pin(SqliteStore::find_records(self, filter, limit))
    }
    fn records_after<'a>(
        &'a self,
        filter: &'a RecordFilter,
        cursor: RecordCursor,
        limit: u32,
    ) -> StoreFuture<'a, RecordPage> {
        Box::pin(SqliteStore::records_after(self, filter, cursor, limit))
    }
    fn find_record<'a>(&'a self, id_or_prefix: &'a str) -> StoreFuture<'a, RecordMatch> {
        Box::pin(SqliteStore::find_record(self, id_or_prefix))
    }
    fn record<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<RequestRecord>> {
        Box::pin(SqliteStore::record(self, id))
    }
    fn latest_records(&self, limit: u32) -> StoreFuture<'_, Vec<RequestRecord>> {
        Box::pin(SqliteStore::latest_records(self, limit))
    }
    fn record_bodies<'a>(
        &'a self,
        ids: &'a [String],
    ) -> StoreFuture<'a, std::collections::HashMap<String, Bodies>> {
        Box::pin(SqliteStore::record_bodies(self, ids))
    }
}

impl UsageReports for SqliteStore {
    fn usage_report<'a>(&'a self, query: &'a UsageQuery) -> StoreFuture<'a, Vec<UsageRow>> {
        Box::pin(SqliteStore::usage_report(self, query))
    }
}

impl ChargeHistory for SqliteStore {
    fn charged_usage(
        &self,
        since_ms: i64,
        granularity_ms: i64,
    ) -> StoreFuture<'_, Vec<ChargedUsage>> {
        Box::pin(SqliteStore::charged_usage(self, since_ms, granularity_ms))
    }
}

impl RecordPruning for SqliteStore {
    fn prune_records<'a>(
        &'a self,
        older_than_ms: i64,
        batch: u32,
        stop: &'a CancellationToken,
    ) -> StoreFuture<'a, u64> {
        Box::pin(SqliteStore::prune_records_until(
            self,
            older_than_ms,
            batch,
            stop,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests own the tasks they spawn")]
mod tests {
    use super::*;
    use crate::AttemptRecord;
    use sluice_types::record::{AttemptOutcome, Endpoint, ErrorCode, Next, Role};
    use sluice_types::{Dialect, ErrorKind, TenantId};

    #[tokio::test]
    async fn a_new_file_opened_by_several_at_once_is_created_and_migrated_once() {
        let dir = std::env::temp_dir().join(format!("sluice-store-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("data").join("sluice.db");
        let opens = (0..4).map(|_| {
            let path = path.clone();
            tokio::spawn(async move { SqliteStore::open(&path).await })
        });
        for open in opens.collect::<Vec<_>>() {
            let store = open.await.unwrap().unwrap();
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64);
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(mode, "wal");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn keys_and_records_keep_their_tenant() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let key = |name: &str, tenant: Option<&str>, organisation: Option<&str>| NewKey {
            name: name.into(),
            tenant: tenant.map(Into::into),
            organisation: organisation.map(Into::into),
            ..Default::default()
        };
        let cases = [
            (key("org", None, Some("acme")), "acme"),
            (key("none", None, None), "default"),
            (key("named", Some("t1"), Some("acme")), "t1"),
        ];
        for (new, tenant) in cases {
            let name = new.name.clone();
            let created = store.create_key(new).await.unwrap();
            assert_eq!(created.info.tenant, TenantId(tenant.into()), "{name}");
            let found = store
                .find_key_by_hash(&KeyHash::of(&created.secret))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found.tenant, TenantId(tenant.into()), "{name}");
        }

        let record = RequestRecord {
            id: "req-t".into(),
            started_at: 1_000,
            endpoint: Endpoint::Messages,
            dialect: Dialect::Anthropic,
            tenant: Some(TenantId("t1".into())),
            organisation: Some("acme".into()),
            status: 504,
            error_code: Some(ErrorCode::Kind(ErrorKind::UpstreamTimeout)),
            latency_us: 3_000,
            attempts: vec![
                AttemptRecord {
                    deployment: "local".into(),
                    provider: "vllm".into(),
                    outcome: AttemptOutcome::Skipped,
                    role: Some(Role::Pool),
                    next: Some(Next::CircuitOpen),
                    ..Default::default()
                },
                AttemptRecord {
                    deployment: "primary".into(),
                    provider: "openai".into(),
                    outcome: AttemptOutcome::Cancelled,
                    role: Some(Role::Pool),
                    next: Some(Next::LostHedge),
                    ..Default::default()
                },
                AttemptRecord {
                    deployment: "backup".into(),
                    provider: "anthropic".into(),
                    outcome: AttemptOutcome::Failed(ErrorKind::UpstreamTimeout),
                    role: Some(Role::Fallback),
                    hedge: true,
                    next: Some(Next::NoMoreDeployments),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        store
            .insert_records(std::slice::from_ref(&record))
            .await
            .unwrap();
        let back = store.record("req-t").await.unwrap().unwrap();
        assert_eq!(back.tenant, Some(TenantId("t1".into())));
        assert_eq!(back.endpoint, Endpoint::Messages);
        assert_eq!(back.dialect, Dialect::Anthropic);
        assert_eq!(
            back.error_code,
            Some(ErrorCode::Kind(ErrorKind::UpstreamTimeout))
        );
        let attempts: Vec<_> = back
            .attempts
            .iter()
            .map(|a| (a.outcome, a.next, a.role))
            .collect();
        assert_eq!(
            attempts,
            [
                (
                    AttemptOutcome::Skipped,
                    Some(Next::CircuitOpen),
                    Some(Role::Pool)
                ),
                (
                    AttemptOutcome::Cancelled,
                    Some(Next::LostHedge),
                    Some(Role::Pool)
                ),
                (
                    AttemptOutcome::Failed(ErrorKind::UpstreamTimeout),
                    Some(Next::NoMoreDeployments),
                    Some(Role::Fallback)
                ),
            ]
        );
        assert_eq!(back, record);
        // Stored as the same text as ever.
        let (tenant, endpoint, dialect, error_code): (String, String, String, String) =
            sqlx::query_as("SELECT tenant, endpoint, dialect, error_code FROM requests")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(
            (
                tenant.as_str(),
                endpoint.as_str(),
                dialect.as_str(),
                error_code.as_str()
            ),
            ("t1", "messages", "anthropic", "upstream_timeout")
        );
    }
}
