//! Changes announced through Postgres: a change to a key or a budget row runs `pg_notify` on
//! the channel of what changed ([`KEY_CHANNEL`], [`BUDGET_CHANNEL`]) in the same transaction,
//! so every process listening hears it when the change commits (within milliseconds),
//! whichever process made it.
//!
//! One [`Listener`] per stream of announcements, each on a connection of its own; what an
//! announcement means is its type's ([`Announcement`]): [`KeyChange`] and [`BudgetChange`].

use std::marker::PhantomData;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::StoreError;
use crate::budgets::BudgetChange;
use crate::keys::{KeyChange, KeyHash};

/// The channel revocations are announced on; the payload is the key's hash (hex).
pub(crate) const KEY_CHANNEL: &str = "sluice_keys";

/// The channel budget changes (a row put, rows deleted) are announced on; the payload is the
/// scope of the rows that changed.
pub(crate) const BUDGET_CHANNEL: &str = "sluice_budgets";

/// How long to wait before listening again after the database could not be reached.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What is announced on one channel, read from a notification's payload.
pub(crate) trait Announcement: Sized {
    /// The channel it is announced on.
    const CHANNEL: &'static str;
    /// What a follower does once announcements were lost, for the log.
    const WHEN_MISSED: &'static str;
    /// The announcement a payload carries; `None` when it carries none (ignored and logged).
    fn from_payload(payload: &str) -> Option<Self>;
    /// Announcements may have been lost: everything the follower holds may be stale.
    fn missed() -> Self;
}

impl Announcement for KeyChange {
    const CHANNEL: &'static str = KEY_CHANNEL;
    const WHEN_MISSED: &'static str = "cached keys are read again";
    fn from_payload(payload: &str) -> Option<KeyChange> {
        KeyHash::from_hex(payload).map(KeyChange::Changed)
    }
    fn missed() -> KeyChange {
        KeyChange::Missed
    }
}

impl Announcement for BudgetChange {
    const CHANNEL: &'static str = BUDGET_CHANNEL;
    const WHEN_MISSED: &'static str = "budgets are read again";
    fn from_payload(payload: &str) -> Option<BudgetChange> {
        Some(BudgetChange::Changed {
            scope: payload.to_owned(),
        })
    }
    fn missed() -> BudgetChange {
        BudgetChange::Missed
    }
}

/// One connection of its own (taken from the pool until dropped), listening on `A`'s channel.
#[derive(Debug)]
pub(crate) struct Listener<A> {
    listener: PgListener,
    announces: PhantomData<fn() -> A>,
}

/// Revocations.
pub(crate) type KeyListener = Listener<KeyChange>;

/// Budget changes.
pub(crate) type BudgetListener = Listener<BudgetChange>;

impl<A: Announcement> Listener<A> {
    pub(crate) async fn start(pool: &PgPool) -> Result<Listener<A>, StoreError> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(A::CHANNEL).await?;
        Ok(Listener {
            listener,
            announces: PhantomData,
        })
    }

    /// The next announcement. A lost connection is reconnected (listening again) and reported
    /// as [`Announcement::missed`]: what was announced meanwhile is gone. While the database
    /// cannot be reached, a missed one every [`RETRY_AFTER`]. Cancel-safe: a notification is
    /// not lost when the future is dropped before it completes.
    pub(crate) async fn next(&mut self) -> A {
        loop {
            match self.listener.try_recv().await {
                Ok(Some(notification)) => match A::from_payload(notification.payload()) {
                    Some(announced) => return announced,
                    None => {
                        tracing::warn!(
                            channel = A::CHANNEL,
                            payload = notification.payload(),
                            "an announcement that cannot be read was ignored"
                        );
                    }
                },
                Ok(None) => {
                    tracing::warn!(
                        channel = A::CHANNEL,
                        "change announcements lost their connection; {}",
                        A::WHEN_MISSED
                    );
                    return A::missed();
                }
                Err(e) => {
                    tracing::warn!(
                        channel = A::CHANNEL,
                        error = %e,
                        "change announcements cannot be received; {}",
                        A::WHEN_MISSED
                    );
                    tokio::time::sleep(RETRY_AFTER).await;
                    return A::missed();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::{BudgetStore, KeyStore};
    use crate::conformance::{
        drop_schema, next_budget_change, next_key_change, postgres_store, postgres_store_in,
        unique_scope,
    };
    use crate::{BudgetChanges, BudgetRow, KeyChanges, NewKey};

    #[tokio::test]
    async fn a_key_revoked_through_one_replica_is_announced_to_another_within_a_second() {
        let Some((one, admin, schema)) = postgres_store().await else {
            return;
        };
        let other = postgres_store_in(&schema).await;
        let mut heard = KeyChanges::postgres(KeyListener::start(other.pool()).await.unwrap());
        let created = KeyStore::create_key(&one, NewKey::default()).await.unwrap();
        let hash = KeyHash::of(&created.secret);
        let started = std::time::Instant::now();
        KeyStore::revoke_key(&one, &created.info.id).await.unwrap();
        let change = next_key_change(&mut heard, &[hash]).await;
        assert_eq!(change, KeyChange::Changed(hash));
        assert!(started.elapsed() < Duration::from_secs(1));
        // The other replica reads the revocation from the shared table.
        let found = KeyStore::find_key_by_hash(&other, &hash).await;
        assert!(found.unwrap().unwrap().revoked_at.is_some());
        // The listener holds one of the pool's connections until it is dropped.
        drop(heard);
        one.close().await;
        other.close().await;
        drop_schema(&admin, &schema).await;
    }

    #[tokio::test]
    async fn each_listener_hears_only_its_own_channel() {
        let Some((store, admin, schema)) = postgres_store().await else {
            return;
        };
        let mut keys = KeyChanges::postgres(KeyListener::start(store.pool()).await.unwrap());
        let mut budgets =
            BudgetChanges::postgres(BudgetListener::start(store.pool()).await.unwrap());
        let created = KeyStore::create_key(&store, NewKey::default())
            .await
            .unwrap();
        let hash = KeyHash::of(&created.secret);
        let (a, b) = (unique_scope("team"), unique_scope("team"));
        BudgetStore::put_budget(&store, BudgetRow::new(&a, "requests", "1m", 5))
            .await
            .unwrap();
        KeyStore::revoke_key(&store, &created.info.id)
            .await
            .unwrap();
        BudgetStore::put_budget(&store, BudgetRow::new(&b, "requests", "1m", 5))
            .await
            .unwrap();
        // Announced in commit order: a budget listener that heard keys too would hear the
        // revocation (the key's hash as a scope) between the two budget changes.
        let ours = [a.as_str(), &hash.to_hex(), b.as_str()];
        for scope in [&a, &b] {
            let change = next_budget_change(&mut budgets, &ours).await;
            assert_eq!(
                change,
                BudgetChange::Changed {
                    scope: scope.clone()
                }
            );
        }
        let change = next_key_change(&mut keys, &[hash]).await;
        assert_eq!(change, KeyChange::Changed(hash));
        drop((keys, budgets));
        store.close().await;
        drop_schema(&admin, &schema).await;
    }
}
