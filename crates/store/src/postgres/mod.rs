//! The Postgres store: what several replicas share. Keys and budgets are plain tables; request
//! records go to `requests`, partitioned by the UTC day they started on
//! ([`partitions`]), in one multi-row INSERT per batch (arrays bound as parameters and
//! unnested, one statement whatever the batch's size).
//!
//! Schema changes are `migrations/postgres/NNNN_name.sql`, applied in order under an advisory
//! lock (so replicas starting together migrate once) and listed in `sluice_migrations`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
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

mod keys;
mod notify;
pub(crate) mod partitions;
mod query;
mod records;
mod reports;

/// Each entry moves the schema one version forward. Never edit a file that has shipped: add
/// one.
const MIGRATIONS: &[(crate::MigrationName, &str)] = &[(
    "0001_initial",
    include_str!("../../migrations/postgres/0001_initial.sql"),
)];

pub(crate) use notify::{BudgetListener, KeyListener};

/// Advisory lock ids (any constant the database's other users do not take): one for
/// migrating, one for maintaining partitions, one per record batch.
pub(crate) const MIGRATE_LOCK: i64 = 0x5_1c3e_0001;
pub(crate) const PARTITION_LOCK: i64 = 0x5_1c3e_0002;
pub(crate) const WRITE_LOCK: i64 = 0x5_1c3e_0003;

/// Connections per process: the key and budget listeners (one each, held), the record writer,
/// retention, the key and budget reads, and the CLI's queries, with room to spare.
const POOL_SIZE: u32 = 8;

/// How long a call waits for a connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
    partitions: partitions::Partitions,
}

impl PgStore {
    /// Connects, migrates, and creates the record partitions of today and the next days.
    pub(crate) async fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open_with(options(url)?).await
    }

    pub(crate) async fn open_with(options: PgConnectOptions) -> Result<PgStore, StoreError> {
        // Migrated on a connection of its own first: a database that cannot be reached says
        // why (refused, unknown host, bad password) rather than that the pool timed out.
        let mut first = sqlx::PgConnection::connect_with(&options).await?;
        let migrated = migrate_conn(&mut first).await?;
        first.close().await?;
        crate::log_applied(&migrated, "postgres");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        let store = PgStore {
            pool,
            partitions: partitions::Partitions::default(),
        };
        store.partitions.ensure_ahead(&store.pool).await?;
        Ok(store)
    }

    /// `sluice migrate` of a Postgres database.
    pub(crate) async fn migrate_url(url: &str) -> Result<Migrated, StoreError> {
        let mut conn = sqlx::PgConnection::connect_with(&options(url)?).await?;
        let migrated = migrate_conn(&mut conn).await?;
        conn.close().await?;
        Ok(migrated)
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// The connection options of `url`; a URL that is not one is refused without echoing its
/// password.
pub(crate) fn options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::BadUrl(crate::StoreLocation::Postgres(url.to_owned()).to_string()))
}

/// Applies the migrations not yet in `sluice_migrations`, all in one transaction under
/// [`MIGRATE_LOCK`]: a second process waits, then finds nothing left to do.
async fn migrate_conn(conn: &mut sqlx::PgConnection) -> Result<Migrated, StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS sluice_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await?;
    let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM sluice_migrations")
        .fetch_one(&mut *tx)
        .await?;
    let done = usize::try_from(version.unwrap_or(0)).unwrap_or(0);
    if done > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: i64::from(version.unwrap_or(0)),
            known: MIGRATIONS.len(),
        });
    }
    let mut applied = Vec::new();
    for (index, (name, migration)) in MIGRATIONS.iter().enumerate().skip(done) {
        sqlx::raw_sql(*migration).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO sluice_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(i32::try_from(index + 1).unwrap_or(i32::MAX))
        .bind(*name)
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await?;
        applied.push(*name);
    }
    tx.commit().await?;
    Ok(Migrated {
        applied,
        known: MIGRATIONS.len(),
    })
}

/// Integers the store keeps unsigned, in Postgres's signed BIGINT.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Back from BIGINT: a negative value (never written) reads as 0.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

// The capabilities: each call is the inherent method of the same name, in the modules above.

impl KeyStore for PgStore {
    fn create_key(&self, new: NewKey) -> StoreFuture<'_, CreatedKey> {
        Box::pin(PgStore::create_key(self, new))
    }
    fn list_keys(&self) -> StoreFuture<'_, Vec<KeyInfo>> {
        Box::pin(PgStore::list_keys(self))
    }
    fn find_key_by_hash<'a>(&'a self, hash: &'a KeyHash) -> StoreFuture<'a, Option<KeyInfo>> {
        Box::pin(PgStore::find_key_by_hash(self, hash))
    }
    fn revoke_key<'a>(&'a self, id_or_prefix: &'a str) -> StoreFuture<'a, KeyInfo> {
        Box::pin(PgStore::revoke_key(self, id_or_prefix))
    }
    fn key_changes(&self) -> StoreFuture<'_, Option<crate::KeyChanges>> {
        Box::pin(async move {
            let listener = KeyListener::start(self.pool()).await?;
            Ok(Some(crate::KeyChanges::postgres(listener)))
        })
    }
    fn export_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(PgStore::export_keys(self))
    }
    fn import_key<'a>(&'a self, key: &'a StoredKey) -> StoreFuture<'a, bool> {
        Box::pin(PgStore::import_key(self, key))
    }
}

impl BudgetStore for PgStore {
    fn budgets(&self) -> StoreFuture<'_, Vec<BudgetRow>> {
        Box::pin(PgStore::budgets(self))
    }
    fn put_budget(&self, row: BudgetRow) -> StoreFuture<'_, BudgetRow> {
        Box::pin(PgStore::put_budget(self, row))
    }
    fn delete_budgets<'a>(
        &'a self,
        scope: &'a str,
        metric_and_period: Option<(&'a str, &'a str)>,
    ) -> StoreFuture<'a, u64> {
        Box::pin(PgStore::delete_budgets(self, scope, metric_and_period))
    }
    fn budget_changes(&self) -> StoreFuture<'_, Option<crate::BudgetChanges>> {
        Box::pin(async move {
            let listener = BudgetListener::start(self.pool()).await?;
            Ok(Some(crate::BudgetChanges::postgres(listener)))
        })
    }

    fn import_budget<'a>(&'a self, row: &'a BudgetRow) -> StoreFuture<'a, bool> {
        Box::pin(PgStore::import_budget(self, row))
    }
}

impl RecordSink for PgStore {
    fn write_records<'a>(&'a self, records: &'a mut [RequestRecord]) -> StoreFuture<'a, u64> {
        Box::pin(PgStore::write_records(self, records))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }
}

impl RecordQueries for PgStore {
    fn find_records<'a>(
        &'a self,
        filter: &'a RecordFilter,
        limit: u32,
    ) -> StoreFuture<'a, RecordPage> {
        Box::pin(PgStore::find_records(self, filter, limit))
    }
    fn records_after<'a>(
        &'a self,
        filter: &'a RecordFilter,
        cursor: RecordCursor,
        limit: u32,
    ) -> StoreFuture<'a, RecordPage> {
        Box::pin(PgStore::records_after(self, filter, cursor, limit))
    }
    fn find_record<'a>(&'a self, id_or_prefix: &'a str) -> StoreFuture<'a, RecordMatch> {
        Box::pin(PgStore::find_record(self, id_or_prefix))
    }
    fn record<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<RequestRecord>> {
        Box::pin(PgStore::record(self, id))
    }
    fn latest_records(&self, limit: u32) -> StoreFuture<'_, Vec<RequestRecord>> {
        Box::pin(PgStore::latest_records(self, limit))
    }
    fn record_bodies<'a>(
        &'a self,
        ids: &'a [String],
    ) -> StoreFuture<'a, std::collections::HashMap<String, Bodies>> {
        Box::pin(PgStore::record_bodies(self, ids))
    }
}

impl UsageReports for PgStore {
    fn usage_report<'a>(&'a self, query: &'a UsageQuery) -> StoreFuture<'a, Vec<UsageRow>> {
        Box::pin(PgStore::usage_report(self, query))
    }
}

impl ChargeHistory for PgStore {
    fn charged_usage(
        &self,
        since_ms: i64,
        granularity_ms: i64,
    ) -> StoreFuture<'_, Vec<ChargedUsage>> {
        Box::pin(PgStore::charged_usage(self, since_ms, granularity_ms))
    }
}

impl RecordPruning for PgStore {
    fn prune_records<'a>(
        &'a self,
        older_than_ms: i64,
        batch: u32,
        stop: &'a CancellationToken,
    ) -> StoreFuture<'a, u64> {
        Box::pin(PgStore::prune_records(self, older_than_ms, batch, stop))
    }
}
