//! What a store can do, one trait per capability: keys, budgets, the record sink, record
//! queries, usage reports, charged usage and record pruning. Every backend (memory, SQLite,
//! Postgres) implements all of them; [`crate::Stores`] bundles one of each.
//!
//! The methods return boxed futures ([`StoreFuture`]) rather than being `async fn`: a trait
//! with `async fn` cannot be a `dyn` object, and `dyn` keeps the gateway, the CLI and the admin
//! API free of a backend type parameter (and lets a later store come from another backend).
//! The box costs one allocation per store call, and the request path makes none: keys are read
//! through the gateway's cache, budgets by a reload task, records by the writer once per batch.
//!
//! Errors are [`StoreError`]s; no method retries. Methods that read return what was committed
//! when they ran.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

use crate::budgets::BudgetChanges;
use crate::keys::{KeyChanges, KeyHash, StoredKey};
use crate::{
    Bodies, BudgetRow, ChargedUsage, CreatedKey, KeyInfo, NewKey, RecordCursor, RecordFilter,
    RecordMatch, RecordPage, RequestRecord, StoreError, UsageQuery, UsageRow,
};

/// The future of a store call.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Virtual keys, stored by the hash of their secret.
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// Creates a key; the returned secret is never stored.
    fn create_key(&self, new: NewKey) -> StoreFuture<'_, CreatedKey>;

    /// Every key, newest first, revoked and expired ones included.
    fn list_keys(&self) -> StoreFuture<'_, Vec<KeyInfo>>;

    /// The key whose secret has this hash. Revoked and expired keys are returned too; the
    /// caller decides what they mean.
    fn find_key_by_hash<'a>(&'a self, hash: &'a KeyHash) -> StoreFuture<'a, Option<KeyInfo>>;

    /// Revokes the key whose id is `id_or_prefix`, else the only one whose id starts with it
    /// ([`StoreError::KeyNotFound`], [`StoreError::KeyAmbiguous`]). Revoking a revoked key
    /// changes nothing. Returns the key as stored.
    fn revoke_key<'a>(&'a self, id_or_prefix: &'a str) -> StoreFuture<'a, KeyInfo>;

    /// Announcements of key changes (revocations) made through any process sharing this store,
    /// as they are committed, so a cache can drop a stale key at once. `None` when the store
    /// cannot announce them (SQLite: a cache must expire its keys instead). A Postgres one
    /// holds a connection of its own until it is dropped.
    fn key_changes(&self) -> StoreFuture<'_, Option<KeyChanges>>;

    /// Every key with the hash of its secret, in the order of [`KeyStore::list_keys`]: what
    /// [`KeyStore::import_key`] takes, to copy keys into another store.
    fn export_keys(&self) -> StoreFuture<'_, Vec<StoredKey>>;

    /// Stores a key read from another store as it is there: its id, hash and every field,
    /// revoked and expired keys included, so the secret its clients hold keeps working. A key
    /// whose id (or hash) is already stored is left as it is, whatever it says. Returns
    /// whether the key was added. Nothing is announced ([`KeyStore::key_changes`]): a key
    /// that was not here was in no cache.
    fn import_key<'a>(&'a self, key: &'a StoredKey) -> StoreFuture<'a, bool>;
}

/// Budget and rate-limit rows.
pub trait BudgetStore: Send + Sync + std::fmt::Debug {
    /// Every row, ordered by scope, metric, period, model.
    fn budgets(&self) -> StoreFuture<'_, Vec<BudgetRow>>;

    /// Adds a limit or replaces the one with the same scope, metric, period and model; returns
    /// the row as stored (its `updated_at` set now).
    fn put_budget(&self, row: BudgetRow) -> StoreFuture<'_, BudgetRow>;

    /// Removes the limits of `scope`: every one, or those of one metric and period. Returns
    /// how many rows went.
    fn delete_budgets<'a>(
        &'a self,
        scope: &'a str,
        metric_and_period: Option<(&'a str, &'a str)>,
    ) -> StoreFuture<'a, u64>;

    /// Announcements of budget changes (a row put, rows deleted) made through any process
    /// sharing this store, as they are committed, so a copy of the rows can be reread at once.
    /// `None` when the store cannot announce them (SQLite and memory: a copy must be reread on
    /// a timer instead). A Postgres one holds a connection of its own until it is dropped.
    fn budget_changes(&self) -> StoreFuture<'_, Option<BudgetChanges>>;
    /// Stores a row read from another store, its `updated_at` kept: added when no row has the
    /// same scope, metric, period and model, replacing one that was updated earlier, and
    /// otherwise (updated at the same time or later) leaving the stored one as it is. Returns
    /// whether the row was written.
    fn import_budget<'a>(&'a self, row: &'a BudgetRow) -> StoreFuture<'a, bool>;
}

/// Where the record writer puts its batches.
pub trait RecordSink: Send + Sync + std::fmt::Debug {
    /// Writes a batch, all or nothing, with the bodies that were kept; a record whose id is
    /// already stored is left as it is (a batch replayed from the journal). Returns how many
    /// records were new. Every field but the id may be moved out of `records` (a moved string
    /// is not copied again), so the records are spent; their ids stay for the log of a failed
    /// batch.
    fn write_records<'a>(&'a self, records: &'a mut [RequestRecord]) -> StoreFuture<'a, u64>;

    /// Whether the store can be written now: one trivial round trip. The record writer asks
    /// while the store is unreachable, to know when to write again.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// [`RecordSink::write_records`] of a copy, for callers that keep their records.
    fn insert_records<'a>(&'a self, records: &'a [RequestRecord]) -> StoreFuture<'a, u64> {
        Box::pin(async move { self.write_records(&mut records.to_vec()).await })
    }
}

/// Reading records back.
pub trait RecordQueries: Send + Sync + std::fmt::Debug {
    /// The latest `limit` records that match `filter`, the most recently written first, and a
    /// cursor at the newest record in the store (matching or not) at the time of the read, so
    /// [`RecordQueries::records_after`] continues without a gap or a repeat.
    fn find_records<'a>(
        &'a self,
        filter: &'a RecordFilter,
        limit: u32,
    ) -> StoreFuture<'a, RecordPage>;

    /// Up to `limit` records matching `filter` written after `cursor`, oldest first, and the
    /// cursor to continue from. A page shorter than `limit` means everything written so far
    /// has been read. Pages never repeat a record, and never skip one that was committed
    /// before the page was read.
    fn records_after<'a>(
        &'a self,
        filter: &'a RecordFilter,
        cursor: RecordCursor,
        limit: u32,
    ) -> StoreFuture<'a, RecordPage>;

    /// The record whose id is `id_or_prefix`, or the only one whose id starts with it, with
    /// its bodies.
    fn find_record<'a>(&'a self, id_or_prefix: &'a str) -> StoreFuture<'a, RecordMatch>;

    /// One record by its exact id, with its bodies when they were kept.
    fn record<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<RequestRecord>>;

    /// The latest `limit` records, the most recently written first, without bodies.
    fn latest_records(&self, limit: u32) -> StoreFuture<'_, Vec<RequestRecord>>;

    /// The bodies kept for the records of `ids`, by id: what listings and pages leave out, for
    /// copying records into another store. An id without bodies (or without a record) is not
    /// in the map.
    fn record_bodies<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, HashMap<String, Bodies>>;
}

/// Records summed per group.
pub trait UsageReports: Send + Sync + std::fmt::Debug {
    /// The records of `query`'s span summed per group ([`UsageQuery::dimensions`]), the largest
    /// spend first (then the most requests, then the group's values, no value first). Groups
    /// without records are not returned, the total of an empty span included.
    fn usage_report<'a>(&'a self, query: &'a UsageQuery) -> StoreFuture<'a, Vec<UsageRow>>;
}

/// What admission charged, for rebuilding budget counters.
pub trait ChargeHistory: Send + Sync + std::fmt::Debug {
    /// Charged usage since `since_ms`, grouped by chain and by spans of `granularity_ms`, in
    /// no particular order.
    fn charged_usage(
        &self,
        since_ms: i64,
        granularity_ms: i64,
    ) -> StoreFuture<'_, Vec<ChargedUsage>>;
}

/// Deleting records past their retention.
pub trait RecordPruning: Send + Sync + std::fmt::Debug {
    /// Deletes every record (and its bodies) that started before `older_than_ms`, at most
    /// `batch` rows per statement where rows are deleted one by one, stopping between two
    /// statements once `stop` is cancelled. Returns how many records went.
    fn prune_records<'a>(
        &'a self,
        older_than_ms: i64,
        batch: u32,
        stop: &'a CancellationToken,
    ) -> StoreFuture<'a, u64>;
}

/// Every capability: what a backend implements to be bundled into [`crate::Stores`].
pub trait Backend:
    KeyStore
    + BudgetStore
    + RecordSink
    + RecordQueries
    + UsageReports
    + ChargeHistory
    + RecordPruning
    + 'static
{
}

impl<T> Backend for T where
    T: KeyStore
        + BudgetStore
        + RecordSink
        + RecordQueries
        + UsageReports
        + ChargeHistory
        + RecordPruning
        + 'static
{
}
