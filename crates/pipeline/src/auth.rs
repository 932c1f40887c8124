//! Authentication: a presented virtual key becomes a [`Caller`].
//!
//! Key lookups are cached in memory, by the SHA-256 of the presented secret (never the secret
//! itself), for [`KEY_CACHE_TTL`] so the hot path does not touch the store. A store that
//! announces revocations (Postgres, whichever replica or CLI made them) has the key dropped
//! from the cache at once ([`Gateway::follow_key_changes`]); otherwise a revocation takes
//! effect within the TTL. Unknown keys are not cached, so a new key works at once.
//!
//! While the store cannot be reached ([`sluice_store::StoreHealth`]), a key the store
//! confirmed within the configured offline time (`[store] offline_keys_ms`) is still honoured
//! as it was then; any other key is answered `keys_unavailable` (503) at once, without waiting
//! on the store. A revoked key is dropped from the cache when the revocation is announced, so
//! it is never served from it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    entries: RwLock<HashMap<KeyHash, Entry>>,
    /// Bumped when announcements were missed: every entry is read again before it is trusted,
    /// but stays as the last known key while the store cannot be reached.
    generation: AtomicU64,
    /// How long after the store last confirmed it a key is honoured while the store cannot
    /// be reached (0: never).
    offline_ms: AtomicU64,
}

struct Entry {
    key: Arc<KeyInfo>,
    confirmed: Instant,
    generation: u64,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.entries.read().map_or(0, |e| e.len());
        f.debug_struct("KeyCache").field("entries", &len).finish()
    }
}

impl KeyCache {
    /// The key, if the store confirmed it within the TTL and no announcement was missed since.
    fn fresh(&self, hash: &KeyHash) -> Option<Arc<KeyInfo>> {
        let generation = self.generation.load(Ordering::Relaxed);
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|e| e.generation == generation && e.confirmed.elapsed() < KEY_CACHE_TTL)
            .map(|e| e.key.clone())
    }

    /// The key as the store last confirmed it, if that is within the offline time.
    fn last_known(&self, hash: &KeyHash) -> Option<Arc<KeyInfo>> {
        let offline = Duration::from_millis(self.offline_ms.load(Ordering::Relaxed));
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|e| e.confirmed.elapsed() < offline)
            .map(|e| e.key.clone())
    }

    fn put(&self, hash: KeyHash, key: Arc<KeyInfo>) {
        let generation = self.generation.load(Ordering::Relaxed);
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= KEY_CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(
            hash,
            Entry {
                key,
                confirmed: Instant::now(),
                generation,
            },
        );
    }

    fn forget(&self, change: KeyChange) {
        match change {
            KeyChange::Changed(hash) => {
                let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
                entries.remove(&hash);
            }
            KeyChange::Missed => {
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
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
        let key = match self.inner.keys.fresh(&hash) {
            Some(key) => key,
            None => self.look_up_key(hash).await?,
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

    /// Reads a key from the store into the cache; with the store unreachable, the last known
    /// key (within the offline time) or [`PipelineError::KeysUnavailable`].
    async fn look_up_key(&self, hash: KeyHash) -> Result<Arc<KeyInfo>, PipelineError> {
        let store = &self.inner.store;
        if !store.health.is_down() {
            match store.keys.find_key_by_hash(&hash).await {
                Ok(found) => {
                    store.health.note_success();
                    let key = Arc::new(found.ok_or(PipelineError::InvalidKey)?);
                    self.inner.keys.put(hash, key.clone());
                    return Ok(key);
                }
                Err(e) if !store.health.note_failure(&e) => return Err(e.into()),
                Err(_) => {}
            }
        }
        self.inner
            .keys
            .last_known(&hash)
            .ok_or(PipelineError::KeysUnavailable)
    }

    /// How long a key the store confirmed is still honoured while the store cannot be
    /// reached (`[store] offline_keys_ms`; zero: never).
    pub fn honour_keys_offline_for(&self, offline: Duration) {
        let ms = u64::try_from(offline.as_millis()).unwrap_or(u64::MAX);
        self.inner.keys.offline_ms.store(ms, Ordering::Relaxed);
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
