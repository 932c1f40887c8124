//! Sluice storage: virtual keys, budgets and request records, behind one trait per capability
//! ([`capabilities`]), in one of three backends bundled as [`Stores`]:
//!
//! - memory: for tests; nothing survives the process.
//! - SQLite (`[store] path`): the embedded default, a file that needs nothing else.
//! - Postgres (`[store] url`): shared by several replicas; request records partitioned by day.
//!
//! The types every backend shares are here: [`keys`] (keys stored as SHA-256 hashes; the
//! plaintext is shown once at creation), [`budgets`] (rows as text, which `sluice-policy`
//! parses), [`records`] (the [`RecordQueue`] that writes records off the request path, and
//! [`RecordRetention`]), [`journal`] (the local copy of records not yet written), [`health`]
//! (whether the store can be reached), [`query`] (filters and cursors for reading records back), [`usage`]
//! (usage reports) and [`charged`] (what budget counters are rebuilt from). [`copy`] copies
//! one store into another (`sluice migrate --from-sqlite`). Each backend's schema changes are
//! files under `migrations/<backend>/`, applied in order at open and by `sluice migrate`.
//! Store code never sees HTTP types.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod budgets;
pub mod capabilities;
pub mod charged;
pub mod copy;
pub mod health;
pub mod journal;
pub mod keys;
mod memory;
mod postgres;
pub mod query;
pub mod records;
mod sqlite;
pub mod usage;

#[cfg(test)]
mod conformance;

pub use budgets::{BudgetChange, BudgetChanges, BudgetRow};
pub use capabilities::{
    BudgetStore, ChargeHistory, KeyStore, RecordPruning, RecordQueries, RecordSink, StoreFuture,
    UsageReports,
};
pub use charged::ChargedUsage;
pub use health::{Outage, StoreHealth};
pub use journal::{Journal, JournalError};
pub use keys::{CreatedKey, KeyChange, KeyChanges, KeyHash, KeyInfo, NewKey, StoredKey};
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
    #[error("`{0}` is not a Postgres URL (postgres://user@host:port/database)")]
    BadUrl(String),
    #[error(
        "the store's schema is at version {found}, newer than this build's {known}: upgrade sluice"
    )]
    SchemaTooNew { found: i64, known: usize },
    #[error("no key matches `{0}`")]
    KeyNotFound(String),
    #[error("`{0}` matches more than one key; give more of its id")]
    KeyAmbiguous(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("there is no file at {0}")]
    NoStoreFile(String),
    #[error(
        "{0} is not a Sluice store (a SQLite database file with Sluice's schema: its `keys` and `requests` tables)"
    )]
    NotAStore(String),
}

impl sluice_types::Classify for StoreError {
    fn kind(&self) -> sluice_types::ErrorKind {
        sluice_types::ErrorKind::Internal
    }
    fn origin(&self) -> sluice_types::Origin {
        sluice_types::Origin::Gateway
    }
}

/// Where the store is: what `[store]` in the configuration names.
#[derive(Clone)]
pub enum StoreLocation {
    /// The embedded SQLite database in this file.
    Sqlite(PathBuf),
    /// A Postgres database (`postgres://user:password@host:port/database?sslmode=...`).
    Postgres(String),
}

/// The URL's password, if any, is never shown.
impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreLocation::Postgres(url) => {
                f.debug_tuple("Postgres").field(&redact_url(url)).finish()
            }
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// `url` with the password of its user info replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

/// A schema change applied by [`migrate`] or at open: its file name without `.sql`.
pub type MigrationName = &'static str;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The migrations applied now, in order.
    pub applied: Vec<MigrationName>,
    /// How many migrations the backend has in all (the schema's version afterwards).
    pub known: usize,
}

/// Brings the store's schema up to date, creating the database file (SQLite) if needed.
/// Several processes may migrate at once: each waits for the others, and a migration is
/// applied once.
pub async fn migrate(location: &StoreLocation) -> Result<Migrated, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => sqlite::migrate_file(path).await,
        StoreLocation::Postgres(url) => postgres::PgStore::migrate_url(url).await,
    }
}

/// Logs the migrations an open applied.
pub(crate) fn log_applied(migrated: &Migrated, place: &str) {
    if !migrated.applied.is_empty() {
        tracing::info!(store = place, applied = ?migrated.applied, "store schema migrated");
    }
}

/// Every capability of one store, shared by the gateway, the admin API and the CLI. Cheap to
/// clone. The stores that come next (prompts, routes, sessions, the idempotency ledger, the
/// cache) join as fields of their own, one trait each, implemented by every backend.
#[derive(Clone, Debug)]
pub struct Stores {
    pub keys: Arc<dyn KeyStore>,
    pub budgets: Arc<dyn BudgetStore>,
    /// The record writer's ([`RecordQueue`]); nothing on the request path writes directly.
    pub records: Arc<dyn RecordSink>,
    pub queries: Arc<dyn RecordQueries>,
    pub usage: Arc<dyn UsageReports>,
    pub charged: Arc<dyn ChargeHistory>,
    pub pruning: Arc<dyn RecordPruning>,
    /// Whether the store can be reached, as its users last found.
    pub health: Arc<StoreHealth>,
    backend: Opened,
}

/// What [`Stores::close`] closes.
#[derive(Clone, Debug)]
enum Opened {
    Memory,
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl Stores {
    /// Opens the store at `location` and brings its schema up to date (logging what it applied).
    pub async fn open(location: &StoreLocation) -> Result<Stores, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => Ok(Stores::of(
                sqlite::SqliteStore::open(path).await?,
                Opened::Sqlite,
            )),
            StoreLocation::Postgres(url) => Ok(Stores::of(
                postgres::PgStore::open(url).await?,
                Opened::Postgres,
            )),
        }
    }

    /// The embedded store in the file at `path`, which must be one already: a missing file is
    /// not created ([`StoreError::NoStoreFile`]), and a file that is not a Sluice store is
    /// refused before anything is written to it ([`StoreError::NotAStore`]). An older schema
    /// is brought up to date, as [`Stores::open`] does. For reading a store to copy it
    /// ([`copy`]).
    pub async fn open_existing_sqlite(path: &Path) -> Result<Stores, StoreError> {
        Ok(Stores::of(
            sqlite::SqliteStore::open_existing(path).await?,
            Opened::Sqlite,
        ))
    }

    /// Stores in this process's memory, for tests: empty at start, gone at exit.
    pub fn memory() -> Stores {
        Stores::of(memory::MemoryStore::default(), |_| Opened::Memory)
    }

    /// A private in-memory SQLite database, for tests of what the embedded store does.
    pub async fn sqlite_in_memory() -> Result<Stores, StoreError> {
        Ok(Stores::of(
            sqlite::SqliteStore::open_in_memory().await?,
            Opened::Sqlite,
        ))
    }

    fn of<B: capabilities::Backend + Clone>(
        backend: B,
        opened: impl FnOnce(B) -> Opened,
    ) -> Stores {
        let shared = Arc::new(backend.clone());
        Stores {
            keys: shared.clone(),
            budgets: shared.clone(),
            records: shared.clone(),
            queries: shared.clone(),
            usage: shared.clone(),
            charged: shared.clone(),
            pruning: shared,
            health: Arc::default(),
            backend: opened(backend),
        }
    }

    /// Closes the connection pools, waiting for connections to be returned: drop every
    /// [`KeyChanges`] and [`BudgetChanges`] first (a Postgres one holds a connection until it
    /// is dropped).
    pub async fn close(&self) {
        match &self.backend {
            Opened::Memory => {}
            Opened::Sqlite(store) => store.close().await,
            Opened::Postgres(store) => store.close().await,
        }
    }
}

/// Opens `path`'s folder for a new database file.
pub(crate) fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    sluice_types::clock::unix_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_is_shown_without_its_password() {
        let location = StoreLocation::Postgres("postgres://app:s3cret@db:5432/sluice".into());
        assert_eq!(location.to_string(), "postgres://app:***@db:5432/sluice");
        assert!(!format!("{location:?}").contains("s3cret"));
        let no_password = StoreLocation::Postgres("postgres://app@db/sluice".into());
        assert_eq!(no_password.to_string(), "postgres://app@db/sluice");
    }
}
