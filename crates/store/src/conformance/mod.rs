//! The behaviour every backend must have, as one suite run against each: memory and SQLite
//! always, Postgres when `SLUICE_TEST_POSTGRES_URL` is set (each test in a schema of its own,
//! dropped at the end, so tests run in parallel on one database).
//!
//! Each check is a function of a [`Stores`] (those of records in [`records`]); [`conformance!`]
//! makes one test per check and backend.

use sluice_types::record::{AttemptOutcome, Endpoint};
use sluice_types::{Dialect, TenantId};

use crate::keys::KeyHash;
use crate::*;

mod records;
use records::*;

/// A backend's stores for one test, and what to clean up after it.
pub(crate) struct TestStores {
    pub(crate) stores: Stores,
    postgres: Option<(sqlx::PgPool, String)>,
}

impl TestStores {
    pub(crate) async fn memory() -> Option<TestStores> {
        Some(TestStores {
            stores: Stores::memory(),
            postgres: None,
        })
    }

    pub(crate) async fn sqlite() -> Option<TestStores> {
        Some(TestStores {
            stores: Stores::sqlite_in_memory().await.unwrap(),
            postgres: None,
        })
    }

    /// Stores in a new schema of the test database; `None` (and a note) when no database is
    /// configured.
    pub(crate) async fn postgres() -> Option<TestStores> {
        let (store, admin, schema) = postgres_store().await?;
        Some(TestStores {
            stores: Stores::of(store, Opened::Postgres),
            postgres: Some((admin, schema)),
        })
    }

    /// Another handle on the same stores, as a second replica opens them: Postgres on the
    /// test's schema; `None` for the stores a single process owns.
    pub(crate) async fn another_replica(&self) -> Option<Stores> {
        let (_, schema) = self.postgres.as_ref()?;
        Some(Stores::of(
            postgres_store_in(schema).await,
            Opened::Postgres,
        ))
    }

    /// Closes the stores and drops the test's schema.
    pub(crate) async fn finish(self) {
        self.stores.close().await;
        if let Some((admin, schema)) = self.postgres {
            drop_schema(&admin, &schema).await;
        }
    }
}

/// A Postgres store in a schema of its own, the pool that made the schema, and its name.
pub(crate) async fn postgres_store() -> Option<(crate::postgres::PgStore, sqlx::PgPool, String)> {
    let Ok(url) = std::env::var("SLUICE_TEST_POSTGRES_URL") else {
        eprintln!("SLUICE_TEST_POSTGRES_URL is not set: the Postgres store is not tested");
        return None;
    };
    let schema = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let store = postgres_store_in(&schema).await;
    Some((store, admin, schema))
}

/// Another store on the test database's `schema`: a second replica.
pub(crate) async fn postgres_store_in(schema: &str) -> crate::postgres::PgStore {
    let url = std::env::var("SLUICE_TEST_POSTGRES_URL").unwrap();
    let options = crate::postgres::options(&url)
        .unwrap()
        .options([("search_path", schema)]);
    crate::postgres::PgStore::open_with(options).await.unwrap()
}

/// The next announcement of a change to one of `ours`, within a second. Postgres announces
/// on channels of the whole database, so a test also hears those of the tests running in other
/// schemas of the test database: theirs are skipped.
pub(crate) async fn next_key_change(changes: &mut KeyChanges, ours: &[KeyHash]) -> KeyChange {
    let ours_only = async {
        loop {
            match changes.next().await.unwrap() {
                KeyChange::Changed(hash) if !ours.contains(&hash) => {}
                change => return change,
            }
        }
    };
    tokio::time::timeout(ANNOUNCED_WITHIN, ours_only)
        .await
        .unwrap()
}

/// [`next_key_change`] of budget changes: the next one to one of the scopes of `ours`.
pub(crate) async fn next_budget_change(changes: &mut BudgetChanges, ours: &[&str]) -> BudgetChange {
    let ours_only = async {
        loop {
            match changes.next().await.unwrap() {
                BudgetChange::Changed { scope } if !ours.contains(&scope.as_str()) => {}
                change => return change,
            }
        }
    };
    tokio::time::timeout(ANNOUNCED_WITHIN, ours_only)
        .await
        .unwrap()
}

/// How soon a change must be announced.
const ANNOUNCED_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// A scope no other test uses (announcements are heard across the test database).
pub(crate) fn unique_scope(level: &str) -> String {
    format!("{level}:{}", uuid::Uuid::new_v4().simple())
}

pub(crate) async fn drop_schema(admin: &sqlx::PgPool, schema: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(admin)
        .await
        .unwrap();
    admin.close().await;
}

/// One test per check for a backend: `conformance!(module, opener; check, ...)`.
macro_rules! conformance {
    ($backend:ident, $open:expr; $($check:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $check() {
                    let Some(test) = $open.await else { return };
                    super::$check(&test.stores).await;
                    test.finish().await;
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($check:ident),* $(,)?) => {
        conformance!(memory, super::TestStores::memory(); $($check),*);
        conformance!(sqlite, super::TestStores::sqlite(); $($check),*);
        conformance!(postgres, super::TestStores::postgres(); $($check),*);
    };
}

every_backend!(
    keys_are_created_found_by_hash_revoked_and_keep_their_expiry,
    keys_are_exported_with_their_hash_and_imported_as_they_were,
    budget_rows_are_put_replaced_listed_and_deleted,
    imported_budget_rows_keep_their_time_and_the_newer_row_wins,
    records_read_back_field_by_field_with_their_bodies,
    bodies_are_read_by_record_id_for_a_page,
    a_record_written_again_is_stored_once,
    records_are_found_by_id_or_unique_prefix,
    filters_select_only_matching_records,
    pages_after_a_cursor_have_no_gap_and_no_repeat,
    usage_is_grouped_ordered_and_totalled,
    a_report_by_user_keeps_tenants_apart,
    charged_usage_sums_what_reached_a_deployment,
    retention_removes_only_old_records_and_their_bodies,
);

// Stores that announce revocations: memory (to its own process) and Postgres (to every process).
conformance!(memory_announcing, super::TestStores::memory(); revocations_are_announced_to_followers);
conformance!(postgres_announcing, super::TestStores::postgres(); revocations_are_announced_to_followers);

#[tokio::test]
async fn the_embedded_store_announces_nothing() {
    let test = TestStores::sqlite().await.unwrap();
    assert!(test.stores.keys.key_changes().await.unwrap().is_none());
    test.finish().await;
}

#[tokio::test]
async fn a_budget_change_through_one_replica_is_announced_on_another() {
    let Some(test) = TestStores::postgres().await else {
        return;
    };
    let other = test.another_replica().await.unwrap();
    let mut heard = other.budgets.budget_changes().await.unwrap().unwrap();
    let mut also = other.budgets.budget_changes().await.unwrap().unwrap();
    let (team, users) = (unique_scope("team"), unique_scope("user"));
    let ours = [team.as_str(), users.as_str(), "team:none"];
    let budgets = &test.stores.budgets;
    budgets
        .put_budget(BudgetRow::new(&team, "usd", "month", 5_000_000))
        .await
        .unwrap();
    budgets
        .put_budget(BudgetRow::new(&users, "tokens", "day", 10_000))
        .await
        .unwrap();
    // Deleting nothing changes nothing, and announces nothing.
    assert_eq!(budgets.delete_budgets("team:none", None).await.unwrap(), 0);
    budgets
        .delete_budgets(&team, Some(("usd", "month")))
        .await
        .unwrap();
    for scope in [&team, &users, &team] {
        let change = next_budget_change(&mut heard, &ours).await;
        assert_eq!(
            change,
            BudgetChange::Changed {
                scope: scope.clone()
            }
        );
    }
    // Every follower hears every change, and reads the rows as they now are.
    let change = next_budget_change(&mut also, &ours).await;
    assert_eq!(
        change,
        BudgetChange::Changed {
            scope: team.clone()
        }
    );
    let rows = other.budgets.budgets().await.unwrap();
    let scopes: Vec<&str> = rows.iter().map(|r| r.scope.as_str()).collect();
    assert_eq!(scopes, [users.as_str()]);
    // Each holds a connection of the pool until it is dropped.
    drop((heard, also));
    other.close().await;
    test.finish().await;
}

#[tokio::test]
async fn stores_of_one_process_announce_no_budget_changes() {
    for test in [
        TestStores::memory().await.unwrap(),
        TestStores::sqlite().await.unwrap(),
    ] {
        assert!(
            test.stores
                .budgets
                .budget_changes()
                .await
                .unwrap()
                .is_none()
        );
        assert!(test.another_replica().await.is_none());
        test.finish().await;
    }
}

fn now() -> i64 {
    crate::now_ms()
}

const DAY: i64 = 86_400_000;

fn record(id: &str, started_at: i64) -> RequestRecord {
    RequestRecord {
        id: id.into(),
        started_at,
        endpoint: Endpoint::ChatCompletions,
        dialect: Dialect::OpenAi,
        status: 200,
        latency_us: 1_000,
        attempts: vec![AttemptRecord {
            deployment: "primary".into(),
            provider: "openai".into(),
            outcome: AttemptOutcome::Ok,
            status: Some(200),
            latency_us: 900,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn ids(records: &[RequestRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

async fn keys_are_created_found_by_hash_revoked_and_keep_their_expiry(stores: &Stores) {
    let keys = &stores.keys;
    let full = keys
        .create_key(NewKey {
            name: "ci".into(),
            tenant: Some("t1".into()),
            organisation: Some("acme".into()),
            team: Some("search".into()),
            project: Some("ranking".into()),
            user: Some("ana".into()),
            roles: vec!["operator".into(), "user".into()],
            aliases: vec!["fast".into(), "smart".into()],
            expires_at: Some(now() + DAY),
            log_bodies: true,
        })
        .await
        .unwrap();
    let expired = keys
        .create_key(NewKey {
            name: "old".into(),
            organisation: Some("acme".into()),
            expires_at: Some(now() - 1),
            ..Default::default()
        })
        .await
        .unwrap();
    let plain = keys
        .create_key(NewKey {
            name: "plain".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let found = keys
        .find_key_by_hash(&KeyHash::of(&full.secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, full.info);
    assert_eq!(found.tenant, TenantId("t1".into()));
    assert_eq!(found.roles, ["operator", "user"]);
    assert_eq!(found.aliases, ["fast", "smart"]);
    assert!(found.log_bodies);
    let old = keys
        .find_key_by_hash(&KeyHash::of(&expired.secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        old.expires_at, expired.info.expires_at,
        "expired keys are found"
    );
    assert_eq!(
        old.tenant,
        TenantId("acme".into()),
        "the organisation's tenant"
    );
    let found = keys.find_key_by_hash(&KeyHash::of(&plain.secret)).await;
    assert_eq!(found.unwrap().unwrap().tenant, TenantId("default".into()));
    let unknown = KeyHash::of("sk-sluice-0000000000000000000000000000000000000000");
    assert_eq!(keys.find_key_by_hash(&unknown).await.unwrap(), None);

    let mut listed: Vec<KeyInfo> = keys.list_keys().await.unwrap();
    assert_eq!(listed.len(), 3);
    let order: Vec<(i64, String)> = listed
        .iter()
        .map(|k| (k.created_at, k.id.clone()))
        .collect();
    let mut newest_first = order.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, newest_first, "newest first, then by id");
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed[0], full.info);

    // Revoked by a unique start of its id; once.
    let prefix = full.info.id.get(..full.info.id.len() - 3).unwrap();
    let revoked = keys.revoke_key(prefix).await.unwrap();
    assert_eq!(revoked.id, full.info.id);
    let at = revoked.revoked_at.unwrap();
    assert!((now() - 60_000..=now()).contains(&at));
    let again = keys.revoke_key(&full.info.id).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(at),
        "a second revocation keeps the first time"
    );
    let found = keys.find_key_by_hash(&KeyHash::of(&full.secret)).await;
    assert_eq!(found.unwrap().unwrap().revoked_at, Some(at));
    let untouched = keys.find_key_by_hash(&KeyHash::of(&plain.secret)).await;
    assert_eq!(untouched.unwrap().unwrap().revoked_at, None);

    assert!(matches!(
        keys.revoke_key("key_nope").await,
        Err(StoreError::KeyNotFound(_))
    ));
    assert!(matches!(
        keys.revoke_key("key_").await,
        Err(StoreError::KeyAmbiguous(_))
    ));
}

/// Keys made in another store (memory) come in with their hashes: their secrets work here, and
/// every field is as it was there. A key already here is left as it is.
async fn keys_are_exported_with_their_hash_and_imported_as_they_were(stores: &Stores) {
    let source = Stores::memory();
    let full = source
        .keys
        .create_key(NewKey {
            name: "ci".into(),
            tenant: Some("t1".into()),
            organisation: Some("acme".into()),
            team: Some("search".into()),
            project: Some("ranking".into()),
            user: Some("ana".into()),
            roles: vec!["operator".into()],
            aliases: vec!["fast".into(), "smart".into()],
            expires_at: Some(now() + DAY),
            log_bodies: true,
        })
        .await
        .unwrap();
    let expired = source
        .keys
        .create_key(NewKey {
            name: "old".into(),
            organisation: Some("acme".into()),
            expires_at: Some(now() - 1),
            ..Default::default()
        })
        .await
        .unwrap();
    let revoked = source
        .keys
        .create_key(NewKey {
            name: "gone".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    source.keys.revoke_key(&revoked.info.id).await.unwrap();
    let exported = source.keys.export_keys().await.unwrap();
    assert_eq!(exported.len(), 3);
    for key in &exported {
        assert!(
            stores.keys.import_key(key).await.unwrap(),
            "{}",
            key.info.id
        );
    }

    for created in [&full, &expired, &revoked] {
        let here = stores
            .keys
            .find_key_by_hash(&KeyHash::of(&created.secret))
            .await
            .unwrap()
            .unwrap();
        let there = source
            .keys
            .find_key_by_hash(&KeyHash::of(&created.secret))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(here, there, "every field of {}", created.info.name);
    }
    let gone = KeyHash::of(&revoked.secret);
    let gone = stores.keys.find_key_by_hash(&gone).await.unwrap().unwrap();
    assert!(gone.revoked_at.is_some());
    assert_eq!(
        stores.keys.export_keys().await.unwrap(),
        exported,
        "the same keys, hashes and order"
    );
    let listed: Vec<KeyInfo> = exported.iter().map(|k| k.info.clone()).collect();
    assert_eq!(stores.keys.list_keys().await.unwrap(), listed);

    // A key made here is exported with the hash of its secret.
    let local = stores.keys.create_key(NewKey::default()).await.unwrap();
    let local_hash = stores
        .keys
        .export_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.info.id == local.info.id)
        .unwrap()
        .hash;
    assert_eq!(local_hash, KeyHash::of(&local.secret));

    // Imported again, or changed at the source since: what is here stays.
    for key in &exported {
        assert!(
            !stores.keys.import_key(key).await.unwrap(),
            "{}",
            key.info.id
        );
    }
    let mut changed = exported
        .iter()
        .find(|k| k.info.id == full.info.id)
        .unwrap()
        .clone();
    changed.info.revoked_at = Some(now());
    changed.info.name = "renamed".into();
    assert!(!stores.keys.import_key(&changed).await.unwrap());
    let kept = KeyHash::of(&full.secret);
    let kept = stores.keys.find_key_by_hash(&kept).await.unwrap().unwrap();
    assert_eq!(kept, full.info);
    assert_eq!(stores.keys.list_keys().await.unwrap().len(), 4);
}

async fn budget_rows_are_put_replaced_listed_and_deleted(stores: &Stores) {
    let budgets = &stores.budgets;
    for row in [
        BudgetRow::new("team:search", "usd", "month", 5_000_000),
        BudgetRow::new("team:search", "requests", "60s", 100),
        BudgetRow::new("user:*", "tokens", "day", 10_000),
        BudgetRow {
            model: "gpt-4o".into(),
            ..BudgetRow::new("team:search", "usd", "month", 1_000)
        },
    ] {
        budgets.put_budget(row).await.unwrap();
    }
    let mut raised = BudgetRow::new("team:search", "usd", "month", 9_000_000);
    raised.soft_amount = Some(8_000_000);
    raised.parent = Some("org:acme".into());
    let stored = budgets.put_budget(raised.clone()).await.unwrap();
    assert!(stored.updated_at > 0);

    let rows = budgets.budgets().await.unwrap();
    let keys: Vec<(&str, &str, &str, &str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r.scope.as_str(),
                r.metric.as_str(),
                r.period.as_str(),
                r.model.as_str(),
                r.amount,
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("team:search", "requests", "60s", "", 100),
            ("team:search", "usd", "month", "", 9_000_000),
            ("team:search", "usd", "month", "gpt-4o", 1_000),
            ("user:*", "tokens", "day", "", 10_000),
        ]
    );
    assert_eq!(rows[1], stored);
    assert_eq!(
        (rows[1].soft_amount, rows[1].parent.as_deref()),
        (Some(8_000_000), Some("org:acme"))
    );

    let removed = budgets
        .delete_budgets("team:search", Some(("usd", "month")))
        .await
        .unwrap();
    assert_eq!(removed, 2, "every model's row of that metric and period");
    assert_eq!(
        budgets.delete_budgets("team:search", None).await.unwrap(),
        1
    );
    assert_eq!(budgets.delete_budgets("team:none", None).await.unwrap(), 0);
    let left: Vec<String> = budgets
        .budgets()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.scope)
        .collect();
    assert_eq!(left, ["user:*"]);
}

/// A row from another store keeps its `updated_at`; of two rows of the same limit, the one
/// updated later is kept.
async fn imported_budget_rows_keep_their_time_and_the_newer_row_wins(stores: &Stores) {
    let budgets = &stores.budgets;
    let here = budgets
        .put_budget(BudgetRow::new("team:search", "usd", "month", 5_000_000))
        .await
        .unwrap();
    let older = BudgetRow {
        updated_at: here.updated_at - 1,
        ..BudgetRow::new("team:search", "usd", "month", 1)
    };
    assert!(!budgets.import_budget(&older).await.unwrap());
    let same_time = BudgetRow {
        updated_at: here.updated_at,
        ..BudgetRow::new("team:search", "usd", "month", 2)
    };
    assert!(!budgets.import_budget(&same_time).await.unwrap());
    assert_eq!(
        budgets.budgets().await.unwrap(),
        std::slice::from_ref(&here)
    );

    let newer = BudgetRow {
        soft_amount: Some(8_000_000),
        parent: Some("org:acme".into()),
        updated_at: here.updated_at + 1_000,
        ..BudgetRow::new("team:search", "usd", "month", 9_000_000)
    };
    assert!(budgets.import_budget(&newer).await.unwrap());
    let fresh = BudgetRow {
        model: "gpt-4o".into(),
        updated_at: 1_234,
        ..BudgetRow::new("user:*", "tokens", "day", 10_000)
    };
    assert!(budgets.import_budget(&fresh).await.unwrap());
    assert_eq!(
        budgets.budgets().await.unwrap(),
        [newer.clone(), fresh.clone()],
        "stored as they came, their times kept"
    );
    for row in [&newer, &fresh] {
        assert!(!budgets.import_budget(row).await.unwrap(), "{row:?} again");
    }
}

async fn revocations_are_announced_to_followers(stores: &Stores) {
    let a = stores.keys.create_key(NewKey::default()).await.unwrap();
    let b = stores.keys.create_key(NewKey::default()).await.unwrap();
    let ours = [KeyHash::of(&a.secret), KeyHash::of(&b.secret)];
    let mut changes = stores.keys.key_changes().await.unwrap().unwrap();
    let second = stores.keys.key_changes().await.unwrap().unwrap();
    stores.keys.revoke_key(&a.info.id).await.unwrap();
    stores.keys.revoke_key(&b.info.id).await.unwrap();
    for hash in ours {
        let change = next_key_change(&mut changes, &ours).await;
        assert_eq!(change, KeyChange::Changed(hash));
    }
    // Every follower hears every change.
    let mut second = second;
    let change = next_key_change(&mut second, &ours).await;
    assert_eq!(change, KeyChange::Changed(ours[0]));
}
