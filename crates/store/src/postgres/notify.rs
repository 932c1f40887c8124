//! Key changes announced through Postgres: a revocation runs `pg_notify` on [`KEY_CHANNEL`]
//! with the key's hash in the same transaction, so every process listening hears it when the
//! revocation commits (within milliseconds), whichever process made it.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::StoreError;
use crate::keys::{KeyChange, KeyHash};

/// The channel revocations are announced on; the payload is the key's hash (hex).
pub(crate) const KEY_CHANNEL: &str = "sluice_keys";

/// How long to wait before listening again after the database could not be reached.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One connection of its own, listening on [`KEY_CHANNEL`].
#[derive(Debug)]
pub(crate) struct KeyListener {
    listener: PgListener,
}

impl KeyListener {
    pub(crate) async fn start(pool: &PgPool) -> Result<KeyListener, StoreError> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(KEY_CHANNEL).await?;
        Ok(KeyListener { listener })
    }

    /// The next change. A lost connection is reconnected (listening again) and reported as
    /// [`KeyChange::Missed`]: what was announced meanwhile is gone. While the database cannot
    /// be reached, a [`KeyChange::Missed`] every [`RETRY_AFTER`].
    pub(crate) async fn next(&mut self) -> KeyChange {
        loop {
            match self.listener.try_recv().await {
                Ok(Some(notification)) => match KeyHash::from_hex(notification.payload()) {
                    Some(hash) => return KeyChange::Changed(hash),
                    None => {
                        tracing::warn!(
                            payload = notification.payload(),
                            "a key change without a key hash ignored"
                        );
                    }
                },
                Ok(None) => {
                    tracing::warn!(
                        "key change announcements lost their connection; cached keys are read again"
                    );
                    return KeyChange::Missed;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "key change announcements cannot be received; cached keys are read again");
                    tokio::time::sleep(RETRY_AFTER).await;
                    return KeyChange::Missed;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::KeyStore;
    use crate::conformance::{drop_schema, postgres_store, postgres_store_in};
    use crate::{KeyChanges, NewKey};

    #[tokio::test]
    async fn a_key_revoked_through_one_replica_is_announced_to_another_within_a_second() {
        let Some((one, admin, schema)) = postgres_store().await else {
            return;
        };
        let other = postgres_store_in(&schema).await;
        let mut heard = KeyChanges::postgres(KeyListener::start(other.pool()).await.unwrap());
        let created = KeyStore::create_key(&one, NewKey::default()).await.unwrap();
        let started = std::time::Instant::now();
        KeyStore::revoke_key(&one, &created.info.id).await.unwrap();
        let change = tokio::time::timeout(Duration::from_secs(1), heard.next())
            .await
            .unwrap();
        assert_eq!(
            change,
            Some(KeyChange::Changed(KeyHash::of(&created.secret)))
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // The other replica reads the revocation from the shared table.
        let found = KeyStore::find_key_by_hash(&other, &KeyHash::of(&created.secret)).await;
        assert!(found.unwrap().unwrap().revoked_at.is_some());
        // The listener holds one of the pool's connections until it is dropped.
        drop(heard);
        one.close().await;
        other.close().await;
        drop_schema(&admin, &schema).await;
    }
}
