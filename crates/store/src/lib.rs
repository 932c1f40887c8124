//! Sluice storage: virtual keys, budgets and request records, in an embedded SQLite database.
//!
//! - [`Store`] opens (and migrates) the database and owns the connection pool.
//! - [`keys`]: virtual keys, stored as SHA-256 hashes; the plaintext is shown once at creation.
//! - [`budgets`]: budget and rate-limit rows as text, which `sluice-policy` parses.
//! - [`records`]: one [`RequestRecord`] per request, written off the request path by a
//!   [`RecordQueue`] that sheds (and counts) rather than grows, and drains on shutdown;
//!   deleted once past their retention by [`RecordRetention`].
//! - [`query`]: reading records back: filtered listings, following new ones, lookup by id prefix.
//! - [`usage`]: records summed per group (team, key, model, feature...) for usage reports.
//!
//! Store code never sees HTTP types. Schema changes go into `MIGRATIONS` as new entries.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};

pub mod budgets;
pub mod charged;
pub mod keys;
pub mod query;
pub mod records;
pub mod usage;

pub use budgets::BudgetRow;
pub use charged::ChargedUsage;
pub use keys::{CreatedKey, KeyInfo, NewKey};
pub use query::{RecordCursor, RecordFilter, RecordMatch, RecordPage, StatusFilter};
pub use records::{
    AttemptRecord, Bodies, RecordQueue, RecordRetention, RecordSender, RequestRecord,
};
pub use usage::{DrillRecords, UnknownDimension, UsageDimension, UsageQuery, UsageRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data folder {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no key matches `{0}`")]
    KeyNotFound(String),
    #[error("`{0}` matches more than one key; give more of its id")]
    KeyAmbiguous(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl sluice_types::Classify for StoreError {
    fn kind(&self) -> sluice_types::ErrorKind {
        sluice_types::ErrorKind::Internal
    }
    fn origin(&self) -> sluice_types::Origin {
        sluice_types::Origin::Gateway
    }
}

/// Each entry moves the schema one version forward; `PRAGMA user_version` says how far a
/// database has come. Never edit an entry that has shipped: add one.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        team TEXT,
        user TEXT,
        aliases TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
    );
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        started_at INTEGER NOT NULL,
        endpoint TEXT NOT NULL,
        dialect TEXT NOT NULL,
        key_id TEXT,
        team TEXT,
        user TEXT,
        alias TEXT,
        served_model TEXT,
        provider TEXT,
        deployment TEXT,
        stream INTEGER NOT NULL,
        status INTEGER NOT NULL,
        error_code TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cached_tokens INTEGER,
        usage_estimated INTEGER NOT NULL DEFAULT 0,
        ttft_us INTEGER,
        latency_us INTEGER NOT NULL,
        attempts TEXT NOT NULL
    );
    -- No secondary index: every index is written on behalf of the request path, and the
    -- latest records are found by rowid (insertion order). Reports add the ones they need.
    ",
    "ALTER TABLE requests ADD COLUMN drill_of TEXT;
    ALTER TABLE requests ADD COLUMN schema_valid INTEGER;
    ",
    "ALTER TABLE requests ADD COLUMN trace_id TEXT;
    ALTER TABLE requests ADD COLUMN span_id TEXT;
    ALTER TABLE requests ADD COLUMN parent_span_id TEXT;
    ",
    "ALTER TABLE keys ADD COLUMN log_bodies INTEGER NOT NULL DEFAULT 0;
    -- Bodies are kept only where asked for (a route's `log_bodies`, a key's), apart from the
    -- records so that listing records never reads them.
    CREATE TABLE bodies (
        request_id TEXT PRIMARY KEY,
        request TEXT,
        response TEXT,
        truncated INTEGER NOT NULL
    );
    ",
    "ALTER TABLE keys ADD COLUMN organisation TEXT;
    ALTER TABLE keys ADD COLUMN project TEXT;
    ALTER TABLE keys ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE requests ADD COLUMN organisation TEXT;
    ALTER TABLE requests ADD COLUMN project TEXT;
    ALTER TABLE requests ADD COLUMN feature TEXT;
    ALTER TABLE requests ADD COLUMN cost_micros INTEGER;
    ALTER TABLE requests ADD COLUMN energy_uwh INTEGER;
    ALTER TABLE requests ADD COLUMN carbon_ug INTEGER;
    ALTER TABLE requests ADD COLUMN degraded_from TEXT;
    -- Budgets and rate limits: one row per limit. `scope` is LEVEL:ID (`team:search`; the id
    -- `*` on `key:` and `user:` gives each key or end user a limit of its own), `period` is
    -- `day`, `week`, `month` or a rolling length (`60s`), `model` is '' for every model,
    -- `parent` the scope whose allocation this one comes out of.
    CREATE TABLE budgets (
        scope TEXT NOT NULL,
        metric TEXT NOT NULL,
        period TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        amount INTEGER NOT NULL,
        soft_amount INTEGER,
        parent TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (scope, metric, period, model)
    );
    ",
    // The tenant that owns a key's data (NULL: the key's organisation, else `default`), and
    // the tenant of each request.
    "ALTER TABLE keys ADD COLUMN tenant TEXT;
    ALTER TABLE requests ADD COLUMN tenant TEXT;
    ",
    // What the route's policies found and did (JSON list of decisions; NULL when none).
    "ALTER TABLE requests ADD COLUMN policy TEXT;
    ",
];

/// The embedded SQLite store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// One connection kept for the request-record writer: a connection that only this writer
    /// uses keeps its page cache valid between batches (SQLite drops a connection's cache when
    /// another connection has written).
    records: SqlitePool,
}

impl Store {
    /// Opens the database file (creating it and its folder if needed) and migrates it.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        // One connection alone first: it switches a new file to WAL (an exclusive lock that
        // several first connections would fight over, failing at once with "database is
        // locked") and migrates; the pools then find both done.
        let mut first = connect_first(&options).await?;
        migrate(&mut first).await?;
        first.close().await?;
        Ok(Store {
            pool: pool(options.clone(), 4).await?,
            records: pool(options, 1).await?,
        })
    }

    /// A private in-memory database, for tests.
    pub async fn open_in_memory() -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection: every connection to `:memory:` is a separate database.
        let pool = pool(options, 1).await?;
        migrate(&mut *pool.acquire().await?).await?;
        Ok(Store {
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
/// and the ping is a round trip to the connection's thread (a thread woken) per use.
async fn pool(options: SqliteConnectOptions, connections: u32) -> Result<SqlitePool, StoreError> {
    Ok(SqlitePoolOptions::new()
        .max_connections(connections)
        .test_before_acquire(false)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?)
}

/// Brings the schema up to date. `BEGIN IMMEDIATE` takes the write lock before reading the
/// version, so two processes migrating at once wait for each other (busy timeout) instead of
/// failing on a read-to-write upgrade.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *tx)
        .await?;
    let applied = usize::try_from(version).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        sqlx::raw_sql(*migration).execute(&mut *tx).await?;
        // PRAGMA takes no bind parameters; the value is our own integer.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {}",
            index + 1
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    sluice_types::clock::unix_ms()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests own the tasks they spawn")]
mod tests {
    use super::*;
    use sluice_types::record::{AttemptOutcome, Endpoint, ErrorCode, Next, Role};
    use sluice_types::{Dialect, ErrorKind, TenantId};

    #[tokio::test]
    async fn a_new_file_opened_by_several_at_once_is_created_and_migrated_once() {
        let dir = std::env::temp_dir().join(format!("sluice-store-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("data").join("sluice.db");
        let opens = (0..4).map(|_| {
            let path = path.clone();
            tokio::spawn(async move { Store::open(&path).await })
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
        let store = Store::open_in_memory().await.unwrap();
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
            let found = store.find_key(&created.secret).await.unwrap().unwrap();
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
