//! Virtual keys: `sk-sluice-` followed by 40 random hex digits (160 bits).
//!
//! Only the SHA-256 of a key is stored, and a running gateway caches keys by that hash, never
//! by the secret. A slow password hash (argon2) would add tens of milliseconds to every
//! request for no gain: the keys are random with 160 bits of entropy, so a leaked hash cannot
//! be brute-forced. Every backend stores what this module makes ([`KeyInfo::issue`]).

use rand::RngCore;
use sha2::{Digest, Sha256};

use sluice_types::TenantId;

pub const KEY_PREFIX: &str = "sk-sluice-";

/// What a new key is bound to: its place in the organisation → team → project → key → end
/// user hierarchy, and its roles.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    /// The tenant that owns the key's data; `None`: its organisation, else `default`.
    pub tenant: Option<String>,
    pub organisation: Option<String>,
    pub team: Option<String>,
    pub project: Option<String>,
    pub user: Option<String>,
    /// Claims policy reads (`operator`, `user`, or any custom word).
    pub roles: Vec<String>,
    /// Aliases the key may call; empty means every alias.
    pub aliases: Vec<String>,
    /// Unix milliseconds after which the key stops working.
    pub expires_at: Option<i64>,
    /// Keep the request and response bodies of this key's requests (redacted, capped).
    pub log_bodies: bool,
}

/// A key as stored: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    /// The first characters of the secret, to recognise it in listings.
    pub prefix: String,
    pub name: String,
    /// Who owns the key's data and quota: every record, counter and end-user id of the key.
    pub tenant: TenantId,
    pub organisation: Option<String>,
    pub team: Option<String>,
    pub project: Option<String>,
    pub user: Option<String>,
    pub roles: Vec<String>,
    pub aliases: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The request and response bodies of this key's requests are kept (redacted, capped).
    pub log_bodies: bool,
}

impl KeyInfo {
    /// Whether the key may call `alias`.
    pub fn allows(&self, alias: &str) -> bool {
        self.aliases.is_empty() || self.aliases.iter().any(|a| a == alias)
    }

    /// Whether the key holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// A new key: a fresh secret, its id and prefix, created now. What a backend stores is
    /// the returned key's info and hash.
    pub(crate) fn issue(new: NewKey) -> (CreatedKey, KeyHash) {
        let mut random = [0u8; 20];
        rand::rng().fill_bytes(&mut random);
        let secret = format!("{KEY_PREFIX}{}", hex::encode(random));
        let uuid = uuid::Uuid::now_v7().simple().to_string();
        let info = KeyInfo {
            // The uuid's random tail: ids stay short and distinct.
            id: format!("key_{}", uuid.get(20..).unwrap_or(&uuid)),
            prefix: secret
                .get(..KEY_PREFIX.len() + 6)
                .unwrap_or(&secret)
                .to_owned(),
            tenant: tenant_of(new.tenant.as_deref(), new.organisation.as_deref()),
            name: new.name,
            organisation: new.organisation,
            team: new.team,
            project: new.project,
            user: new.user,
            roles: new.roles,
            aliases: new.aliases,
            created_at: crate::now_ms(),
            expires_at: new.expires_at,
            revoked_at: None,
            log_bodies: new.log_bodies,
        };
        let hash = KeyHash::of(&secret);
        (CreatedKey { info, secret }, hash)
    }
}

/// A key as stored, with the hash of its secret: what [`crate::KeyStore::export_keys`] reads
/// and [`crate::KeyStore::import_key`] writes, so a key copied to another store keeps working
/// with the secret its clients hold. `Debug` shows the start of the hash only ([`KeyHash`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub info: KeyInfo,
    pub hash: KeyHash,
}

/// A freshly created key. `secret` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub info: KeyInfo,
    pub secret: String,
}

/// The SHA-256 of a key's secret: what is stored, looked up and cached. `Copy` and without a
/// heap allocation, so the request path can hash every presented key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(secret: &str) -> KeyHash {
        KeyHash(Sha256::digest(secret.as_bytes()).into())
    }

    /// The stored form: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads the stored form back; `None` unless it is 64 hex digits.
    pub fn from_hex(text: &str) -> Option<KeyHash> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(KeyHash(bytes))
    }
}

/// Shows the start of the hash only: enough to tell two apart in a log.
impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// What a store announces about its keys, to whoever caches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// The key with this hash changed (it was revoked): a cached copy is stale.
    Changed(KeyHash),
    /// Announcements may have been lost (a dropped connection, a listener that fell behind):
    /// any cached key may be stale.
    Missed,
}

/// A store's announcements of key changes, made by any process that shares the store
/// ([`crate::KeyStore::key_changes`]).
#[derive(Debug)]
pub struct KeyChanges {
    source: ChangeSource,
}

#[derive(Debug)]
enum ChangeSource {
    Memory(tokio::sync::broadcast::Receiver<KeyHash>),
    Postgres(Box<crate::postgres::KeyListener>),
}

impl KeyChanges {
    pub(crate) fn memory(changes: tokio::sync::broadcast::Receiver<KeyHash>) -> KeyChanges {
        KeyChanges {
            source: ChangeSource::Memory(changes),
        }
    }

    pub(crate) fn postgres(listener: crate::postgres::KeyListener) -> KeyChanges {
        KeyChanges {
            source: ChangeSource::Postgres(Box::new(listener)),
        }
    }

    /// The next change; `None` once the store is gone. Cancel-safe: a change is not lost when
    /// the future is dropped before it completes (it is read by the next call).
    pub async fn next(&mut self) -> Option<KeyChange> {
        use tokio::sync::broadcast::error::RecvError;
        match &mut self.source {
            ChangeSource::Memory(changes) => match changes.recv().await {
                Ok(hash) => Some(KeyChange::Changed(hash)),
                Err(RecvError::Lagged(_)) => Some(KeyChange::Missed),
                Err(RecvError::Closed) => None,
            },
            ChangeSource::Postgres(listener) => Some(listener.next().await),
        }
    }
}

/// The stored form of a key secret.
pub fn hash_secret(secret: &str) -> String {
    KeyHash::of(secret).to_hex()
}

/// A key's tenant: the one it names, else its organisation, else the default tenant.
pub(crate) fn tenant_of(named: Option<&str>, organisation: Option<&str>) -> TenantId {
    TenantId(
        named
            .or(organisation)
            .unwrap_or(TenantId::DEFAULT)
            .to_owned(),
    )
}

/// Which keys `id_or_prefix` names: the one with exactly that id, else the only one whose id
/// starts with it. `candidates` are the keys whose id starts with it.
pub(crate) fn pick_key(
    id_or_prefix: &str,
    candidates: Vec<KeyInfo>,
) -> Result<KeyInfo, crate::StoreError> {
    let mut candidates = candidates;
    if let Some(exact) = candidates.iter().position(|k| k.id == id_or_prefix) {
        return Ok(candidates.swap_remove(exact));
    }
    match candidates.len() {
        0 => Err(crate::StoreError::KeyNotFound(id_or_prefix.to_owned())),
        1 => Ok(candidates.swap_remove(0)),
        _ => Err(crate::StoreError::KeyAmbiguous(id_or_prefix.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_reads_back_from_its_stored_form_and_hides_the_secret() {
        let secret = "sk-sluice-0123456789abcdef0123456789abcdef01234567";
        let hash = KeyHash::of(secret);
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(hash.to_hex(), hash_secret(secret));
        assert_eq!(hash.to_hex().len(), 64);
        assert!(!format!("{hash:?}").contains(&hash.to_hex()));
        assert_eq!(KeyHash::from_hex("zz"), None);
    }

    #[test]
    fn an_issued_key_has_the_documented_shape() {
        let (created, hash) = KeyInfo::issue(NewKey {
            name: "ci".into(),
            organisation: Some("acme".into()),
            ..Default::default()
        });
        assert!(created.secret.starts_with(KEY_PREFIX));
        assert_eq!(created.secret.len(), KEY_PREFIX.len() + 40);
        assert!(created.secret.starts_with(&created.info.prefix));
        assert!(created.info.id.starts_with("key_"));
        assert_eq!(created.info.tenant, TenantId("acme".into()));
        assert_eq!(hash, KeyHash::of(&created.secret));
    }
}
