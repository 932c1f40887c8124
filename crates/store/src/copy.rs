//! Copying one store into another: every key with the hash of its secret, every budget row, and
//! every request record with its bodies. `sluice migrate --from-sqlite` moves the embedded
//! store to Postgres with it.
//!
//! A copy can be repeated: what the target has already is left as it is, so running it again
//! copies only what is new, and says how much it found already there ([`Tally`]). Keys are
//! matched by id ([`crate::KeyStore::import_key`]), budget rows by their limit with the row
//! updated last kept ([`crate::BudgetStore::import_budget`]), records by id
//! ([`crate::RecordSink::write_records`]). Nothing is deleted from the target, and the source is
//! only read.
//!
//! Records are read in pages after a cursor ([`crate::RecordQueries::records_after`]), oldest
//! written first, and written in batches with their bodies, so memory stays bounded whatever the
//! size of the store, and the target's records are in the source's order.

use std::collections::HashMap;

use crate::{RecordCursor, RecordFilter, StoreError, Stores};

/// Records read from the source per page.
const PAGE: u32 = 2_000;

/// Records written to the target per batch, with their bodies: bodies are capped per record
/// (`body_max_bytes`, 64 KiB each way by default), so a batch holds at most about 32 MB of them.
const BATCH: usize = 250;

/// What one kind of thing came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Written to the target now.
    pub copied: u64,
    /// Read from the source and left out: the target has it already (a budget row: the same
    /// limit, updated at the same time or later).
    pub present: u64,
}

impl Tally {
    /// How many were read from the source.
    pub fn read(&self) -> u64 {
        self.copied + self.present
    }
}

/// What [`copy_store`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub keys: Tally,
    pub budgets: Tally,
    pub records: Tally,
    /// The ids of keys the source has revoked that the target has too, unrevoked: copied before
    /// their revocation and left as they are, they still work on the target.
    pub revoked_at_source_only: Vec<String>,
}

/// Copies keys, then budget rows, then records from `from` into `to`; `progress` is told the
/// records' tally after each page. Stops at the first error: what was copied until then stays,
/// and a second run goes on from there.
pub async fn copy_store(
    from: &Stores,
    to: &Stores,
    progress: impl FnMut(Tally),
) -> Result<Copied, StoreError> {
    let (keys, revoked_at_source_only) = copy_keys(from, to).await?;
    let budgets = copy_budgets(from, to).await?;
    let records = copy_records(from, to, progress).await?;
    Ok(Copied {
        keys,
        budgets,
        records,
        revoked_at_source_only,
    })
}

/// Copies every key, revoked and expired ones too, with its hash, so the secrets its clients
/// hold work on the target. A key whose id the target has already is left as it is; the ids of
/// those the source has revoked since are returned.
pub async fn copy_keys(from: &Stores, to: &Stores) -> Result<(Tally, Vec<String>), StoreError> {
    let revoked_there: HashMap<String, bool> = to
        .keys
        .list_keys()
        .await?
        .into_iter()
        .map(|k| (k.id, k.revoked_at.is_some()))
        .collect();
    let mut tally = Tally::default();
    let mut revoked_at_source_only = Vec::new();
    // Oldest first, as they were made.
    for key in from.keys.export_keys().await?.iter().rev() {
        if to.keys.import_key(key).await? {
            tally.copied += 1;
            continue;
        }
        tally.present += 1;
        if key.info.revoked_at.is_some() && revoked_there.get(&key.info.id) == Some(&false) {
            revoked_at_source_only.push(key.info.id.clone());
        }
    }
    Ok((tally, revoked_at_source_only))
}

/// Copies every budget row, its `updated_at` kept: a limit the target does not have is added,
/// one it has is replaced only by a row updated later.
pub async fn copy_budgets(from: &Stores, to: &Stores) -> Result<Tally, StoreError> {
    let mut tally = Tally::default();
    for row in from.budgets.budgets().await? {
        if to.budgets.import_budget(&row).await? {
            tally.copied += 1;
        } else {
            tally.present += 1;
        }
    }
    Ok(tally)
}

/// Copies every record with its bodies, in the order they were written; a record whose id the
/// target has already is left as it is. Ends at the first page shorter than a full one: records
/// the source takes after that are for the next run.
pub async fn copy_records(
    from: &Stores,
    to: &Stores,
    progress: impl FnMut(Tally),
) -> Result<Tally, StoreError> {
    copy_records_paged(from, to, PAGE, BATCH, progress).await
}

async fn copy_records_paged(
    from: &Stores,
    to: &Stores,
    page: u32,
    batch: usize,
    mut progress: impl FnMut(Tally),
) -> Result<Tally, StoreError> {
    let every = RecordFilter::default();
    let mut cursor = RecordCursor::default();
    let mut tally = Tally::default();
    loop {
        let read = from.queries.records_after(&every, cursor, page).await?;
        cursor = read.cursor;
        let full = read.records.len() >= page as usize;
        let mut records = read.records;
        for chunk in records.chunks_mut(batch.max(1)) {
            let ids: Vec<String> = chunk.iter().map(|r| r.id.clone()).collect();
            let mut bodies = from.queries.record_bodies(&ids).await?;
            for record in chunk.iter_mut() {
                record.bodies = bodies.remove(&record.id);
            }
            let stored = to.records.write_records(chunk).await?;
            tally.copied += stored;
            tally.present += chunk.len() as u64 - stored.min(chunk.len() as u64);
        }
        progress(tally);
        if !full {
            return Ok(tally);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::TestStores;
    use crate::keys::KeyHash;
    use crate::{Bodies, BudgetRow, NewKey, RequestRecord};
    use sluice_types::Dialect;
    use sluice_types::record::Endpoint;

    fn record(i: usize) -> RequestRecord {
        RequestRecord {
            id: format!("req_{i:04}"),
            // Today, and long ago (the default partition in Postgres).
            started_at: if i.is_multiple_of(5) {
                1_000 + i as i64
            } else {
                crate::now_ms()
            },
            endpoint: Endpoint::ChatCompletions,
            dialect: Dialect::OpenAi,
            key_id: Some("key_a".into()),
            status: 200,
            latency_us: 1_000,
            bodies: i.is_multiple_of(3).then(|| Bodies {
                request: Some(format!("{{\"n\":{i}}}")),
                response: Some("{}".into()),
                truncated: i.is_multiple_of(2),
            }),
            ..Default::default()
        }
    }

    async fn source() -> (Stores, Vec<String>) {
        let source = Stores::sqlite_in_memory().await.unwrap();
        let mut secrets = Vec::new();
        for name in ["a", "b", "revoked"] {
            let created = source
                .keys
                .create_key(NewKey {
                    name: name.into(),
                    log_bodies: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            if name == "revoked" {
                source.keys.revoke_key(&created.info.id).await.unwrap();
            }
            secrets.push(created.secret);
        }
        for row in [
            BudgetRow::new("team:search", "usd", "month", 5_000_000),
            BudgetRow::new("user:*", "requests", "60s", 10),
        ] {
            source.budgets.put_budget(row).await.unwrap();
        }
        let records: Vec<RequestRecord> = (0..23).map(record).collect();
        source.records.insert_records(&records).await.unwrap();
        (source, secrets)
    }

    /// Three pages of 10 (the last short), written 4 at a time.
    async fn copy(from: &Stores, to: &Stores) -> Copied {
        let (keys, revoked_at_source_only) = copy_keys(from, to).await.unwrap();
        let budgets = copy_budgets(from, to).await.unwrap();
        let mut pages = Vec::new();
        let records = copy_records_paged(from, to, 10, 4, |t| pages.push(t.read()))
            .await
            .unwrap();
        assert_eq!(pages.last(), Some(&records.read()), "{pages:?}");
        Copied {
            keys,
            budgets,
            records,
            revoked_at_source_only,
        }
    }

    async fn a_copy_brings_everything_and_a_second_copies_only_what_is_new(target: TestStores) {
        let (source, secrets) = source().await;
        let to = &target.stores;
        let first = copy(&source, to).await;
        let all = |copied| Tally { copied, present: 0 };
        assert_eq!(
            (first.keys, first.budgets, first.records),
            (all(3), all(2), all(23))
        );
        assert!(first.revoked_at_source_only.is_empty());

        for secret in &secrets {
            let hash = KeyHash::of(secret);
            let there = source.keys.find_key_by_hash(&hash).await.unwrap();
            assert_eq!(to.keys.find_key_by_hash(&hash).await.unwrap(), there);
        }
        assert_eq!(
            to.budgets.budgets().await.unwrap(),
            source.budgets.budgets().await.unwrap()
        );
        for i in 0..23_usize {
            let id = format!("req_{i:04}");
            let copied = to.queries.record(&id).await.unwrap();
            assert_eq!(copied, source.queries.record(&id).await.unwrap(), "{id}");
            assert_eq!(
                copied.unwrap().bodies.is_some(),
                i.is_multiple_of(3),
                "{id}"
            );
        }
        let order = |records: Vec<RequestRecord>| -> Vec<String> {
            records.into_iter().map(|r| r.id).collect()
        };
        assert_eq!(
            order(to.queries.latest_records(100).await.unwrap()),
            order(source.queries.latest_records(100).await.unwrap()),
            "written in the source's order"
        );

        let again = copy(&source, to).await;
        let none = |present| Tally { copied: 0, present };
        assert_eq!(
            (again.keys, again.budgets, again.records),
            (none(3), none(2), none(23))
        );

        // Meanwhile the source served on: a new key, a key revoked, a changed limit, records.
        let later = source.keys.create_key(NewKey::default()).await.unwrap();
        let a = source.keys.list_keys().await.unwrap();
        let a = a.iter().find(|k| k.name == "a").unwrap();
        source.keys.revoke_key(&a.id).await.unwrap();
        source
            .budgets
            .put_budget(BudgetRow::new("team:search", "usd", "month", 9_000_000))
            .await
            .unwrap();
        let newer: Vec<RequestRecord> = (23..26).map(record).collect();
        source.records.insert_records(&newer).await.unwrap();
        let last = copy(&source, to).await;
        assert_eq!(
            (last.keys, last.budgets, last.records),
            (
                Tally {
                    copied: 1,
                    present: 3
                },
                Tally {
                    copied: 1,
                    present: 1
                },
                Tally {
                    copied: 3,
                    present: 23
                }
            )
        );
        assert_eq!(last.revoked_at_source_only, std::slice::from_ref(&a.id));
        let still = to.keys.find_key_by_hash(&KeyHash::of(&secrets[0])).await;
        assert_eq!(still.unwrap().unwrap().revoked_at, None, "left as it is");
        let new_key = to.keys.find_key_by_hash(&KeyHash::of(&later.secret)).await;
        assert!(new_key.unwrap().is_some());
        let usd = to.budgets.budgets().await.unwrap();
        assert_eq!(
            usd.iter().find(|r| r.metric == "usd").unwrap().amount,
            9_000_000
        );
        source.close().await;
        target.finish().await;
    }

    #[tokio::test]
    async fn a_copy_to_memory_brings_everything_and_a_second_copies_only_what_is_new() {
        let target = TestStores::memory().await.unwrap();
        a_copy_brings_everything_and_a_second_copies_only_what_is_new(target).await;
    }

    #[tokio::test]
    async fn a_copy_to_sqlite_brings_everything_and_a_second_copies_only_what_is_new() {
        let target = TestStores::sqlite().await.unwrap();
        a_copy_brings_everything_and_a_second_copies_only_what_is_new(target).await;
    }

    #[tokio::test]
    async fn a_copy_to_postgres_brings_everything_and_a_second_copies_only_what_is_new() {
        let Some(target) = TestStores::postgres().await else {
            return;
        };
        a_copy_brings_everything_and_a_second_copies_only_what_is_new(target).await;
    }

    #[tokio::test]
    async fn only_an_existing_sluice_store_is_opened_to_copy_from() {
        let dir = std::env::temp_dir().join(format!("sluice-copy-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("missing.db");
        let err = Stores::open_existing_sqlite(&missing).await.unwrap_err();
        assert!(matches!(err, StoreError::NoStoreFile(_)), "{err}");
        assert!(!missing.exists(), "nothing is created");
        let err = Stores::open_existing_sqlite(&dir).await.unwrap_err();
        assert!(matches!(err, StoreError::NotAStore(_)), "a folder: {err}");

        let text = dir.join("notes.txt");
        std::fs::write(
            &text,
            "not a database, but long enough to have a header".repeat(4),
        )
        .unwrap();
        let err = Stores::open_existing_sqlite(&text).await.unwrap_err();
        assert!(matches!(err, StoreError::NotAStore(_)), "{err}");

        let empty = dir.join("empty.db");
        std::fs::write(&empty, "").unwrap();
        let err = Stores::open_existing_sqlite(&empty).await.unwrap_err();
        assert!(matches!(err, StoreError::NotAStore(_)), "{err}");
        assert_eq!(
            std::fs::metadata(&empty).unwrap().len(),
            0,
            "left unwritten"
        );

        let store = dir.join("sluice.db");
        crate::migrate(&crate::StoreLocation::Sqlite(store.clone()))
            .await
            .unwrap();
        let opened = Stores::open_existing_sqlite(&store).await.unwrap();
        assert!(opened.keys.list_keys().await.unwrap().is_empty());
        opened.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
