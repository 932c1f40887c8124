//! Authentication: a presented virtual key becomes a [`Caller`].
//!
//! Key lookups are cached in memory, by the SHA-256 of the presented secret (never the secret
//! itself), for [`KEY_CACHE_TTL`] so the hot path does not touch the store. A store that
//! announces revocations (Postgres, whichever replica or CLI made them) has the key dropped
//! from the cache at once ([`Gateway::follow_key_changes`]); otherwise a revocation takes
//! effect within the TTL. Unknown keys are not cached, so a new key works at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sluice_store::{KeyChange, KeyChanges, KeyHash, KeyInfo};
use tokio_util::sync::CancellationToken;

use crate::{Gateway, PipelineError};

/// How long a looked-up key is trusted before it is read again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// Entries kept at most; past it the cache is cleared (a bound, not an eviction policy: the
/// working set of live keys is far smaller).
const KEY_CACHE_CAPACITY: usize = 100_000;

/// Who is calling: the key and what it is bound to.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: Arc<KeyInfo>,
}

impl Caller {
    pub fn may_use(&self, alias: &str) -> bool {
        self.key.allows(alias)
    }
}

/// Hash of a presented secret -> key. Its `Debug` shows only the size.
#[derive(Default)]
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<KeyHash, (Arc<KeyInfo>, Instant)>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.entries.read().map_or(0, |e| e.len());
        f.debug_struct("KeyCache").field("entries", &len).finish()
    }
}

impl KeyCache {
    fn get(&self, hash: &KeyHash) -> Option<Arc<KeyInfo>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(key, _)| key.clone())
    }

    fn put(&self, hash: KeyHash, key: Arc<KeyInfo>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= KEY_CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(hash, (key, Instant::now()));
    }

    fn forget(&self, change: KeyChange) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match change {
            KeyChange::Changed(hash) => {
                entries.remove(&hash);
            }
            KeyChange::Missed => entries.clear(),
        }
    }
}

impl Gateway {
    /// Checks a presented key. `None` means the client sent no key at all.
    pub async fn authenticate(&self, secret: Option<&str>) -> Result<Caller, PipelineError> {
        let secret = secret
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(PipelineError::MissingKey)?;
        let hash = KeyHash::of(secret);
        let key = match self.inner.keys.get(&hash) {
            Some(key) => key,
            None => {
                let key = self
                    .inner
                    .store
                    .keys
                    .find_key_by_hash(&hash)
                    .await?
                    .ok_or(PipelineError::InvalidKey)?;
                let key = Arc::new(key);
                self.inner.keys.put(hash, key.clone());
                key
            }
        };
        if key.revoked_at.is_some() {
            return Err(PipelineError::RevokedKey);
        }
        if key
            .expires_at
            .is_some_and(|at| at <= sluice_store::now_ms())
        {
            return Err(PipelineError::ExpiredKey);
        }
        Ok(Caller { key })
    }

    /// Drops what a key change made stale from the key cache: the next request with that key
    /// reads it from the store again.
    pub fn key_changed(&self, change: KeyChange) {
        self.inner.keys.forget(change);
    }

    /// Applies the store's key changes to the cache as they come, until `stop` (or the store
    /// is gone).
    pub async fn follow_key_changes(&self, mut changes: KeyChanges, stop: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                change = changes.next() => match change {
                    Some(change) => self.key_changed(change),
                    None => return,
                },
            }
        }
    }

    /// The aliases a caller may use, sorted.
    pub fn models_for(&self, caller: &Caller) -> Vec<String> {
        self.config
            .router
            .aliases()
            .filter(|a| caller.may_use(a))
            .map(str::to_owned)
            .collect()
    }
}
