//! Virtual keys: `sk-sluice-` followed by 40 random hex digits (160 bits).
//!
//! Only the SHA-256 of a key is stored. A slow password hash (argon2) would add tens of
//! milliseconds to every request for no gain: the keys are random with 160 bits of entropy, so
//! a leaked hash cannot be brute-forced.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use sluice_types::TenantId;

use crate::{Store, StoreError, now_ms};

/// The columns `key_from_row` reads, as a macro so queries stay `&'static str`.
macro_rules! key_columns {
    () => {
        "id, prefix, name, tenant, organisation, team, project, user, roles, aliases,
         created_at, expires_at, revoked_at, log_bodies"
    };
}

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
}

/// A freshly created key. `secret` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub info: KeyInfo,
    pub secret: String,
}

/// The stored form of a key secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    pub async fn create_key(&self, new: NewKey) -> Result<CreatedKey, StoreError> {
        let mut random = [0u8; 20];
        rand::rng().fill_bytes(&mut random);
        let secret = format!("{KEY_PREFIX}{}", hex::encode(random));
        let id = format!("key_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let info = KeyInfo {
            id,
            prefix: secret[..KEY_PREFIX.len() + 6].to_owned(),
            tenant: tenant_of(new.tenant.as_deref(), new.organisation.as_deref()),
            name: new.name,
            organisation: new.organisation,
            team: new.team,
            project: new.project,
            user: new.user,
            roles: new.roles,
            aliases: new.aliases,
            created_at: now_ms(),
            expires_at: new.expires_at,
            revoked_at: None,
            log_bodies: new.log_bodies,
        };
        sqlx::query(
            "INSERT INTO keys (id, hash, prefix, name, tenant, organisation, team, project, user,
                roles, aliases, created_at, expires_at, log_bodies)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&info.id)
        .bind(hash_secret(&secret))
        .bind(&info.prefix)
        .bind(&info.name)
        .bind(new.tenant.as_deref())
        .bind(&info.organisation)
        .bind(&info.team)
        .bind(&info.project)
        .bind(&info.user)
        .bind(aliases_to_text(&info.roles))
        .bind(aliases_to_text(&info.aliases))
        .bind(info.created_at)
        .bind(info.expires_at)
        .bind(info.log_bodies)
        .execute(self.pool())
        .await?;
        Ok(CreatedKey { info, secret })
    }

    /// Every key, newest first, revoked ones included.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Looks a presented secret up by its hash. Revoked and expired keys are returned too;
    /// the caller decides what they mean.
    pub async fn find_key(&self, secret: &str) -> Result<Option<KeyInfo>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE hash = ?"
        ))
        .bind(hash_secret(secret))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Revokes the key whose id is `id_or_prefix` or starts with it (it must match one key).
    pub async fn revoke_key(&self, id_or_prefix: &str) -> Result<KeyInfo, StoreError> {
        let pattern = format!("{}%", id_or_prefix.replace(['%', '_'], ""));
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE id = ? OR id LIKE ?"
        ))
        .bind(id_or_prefix)
        .bind(&pattern)
        .fetch_all(self.pool())
        .await?;
        let mut info = match rows.as_slice() {
            [] => return Err(StoreError::KeyNotFound(id_or_prefix.to_owned())),
            [row] => key_from_row(row)?,
            many => match many
                .iter()
                .map(key_from_row)
                .find(|k| matches!(k, Ok(k) if k.id == id_or_prefix))
            {
                Some(exact) => exact?,
                None => return Err(StoreError::KeyAmbiguous(id_or_prefix.to_owned())),
            },
        };
        if info.revoked_at.is_none() {
            let at = now_ms();
            sqlx::query("UPDATE keys SET revoked_at = ? WHERE id = ?")
                .bind(at)
                .bind(&info.id)
                .execute(self.pool())
                .await?;
            info.revoked_at = Some(at);
        }
        Ok(info)
    }
}

fn key_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<KeyInfo, StoreError> {
    let list = |column: &str| -> Result<Vec<String>, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("{column} of a key: {e}")))
    };
    let tenant: Option<String> = row.try_get("tenant")?;
    let organisation: Option<String> = row.try_get("organisation")?;
    Ok(KeyInfo {
        id: row.try_get("id")?,
        prefix: row.try_get("prefix")?,
        name: row.try_get("name")?,
        tenant: tenant_of(tenant.as_deref(), organisation.as_deref()),
        organisation,
        team: row.try_get("team")?,
        project: row.try_get("project")?,
        user: row.try_get("user")?,
        roles: list("roles")?,
        aliases: list("aliases")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        log_bodies: row.try_get("log_bodies")?,
    })
}

/// A key's tenant: the one it names, else its organisation, else the default tenant.
fn tenant_of(named: Option<&str>, organisation: Option<&str>) -> TenantId {
    TenantId(
        named
            .or(organisation)
            .unwrap_or(TenantId::DEFAULT)
            .to_owned(),
    )
}

fn aliases_to_text(aliases: &[String]) -> String {
    serde_json::Value::from(aliases.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn created_key_is_found_by_secret_and_stored_hashed() {
        let store = Store::open_in_memory().await.unwrap();
        let created = store
            .create_key(NewKey {
                name: "ci".into(),
                tenant: None,
                organisation: Some("acme".into()),
                team: Some("search".into()),
                project: Some("ranking".into()),
                user: Some("ana".into()),
                roles: vec!["operator".into()],
                aliases: vec!["fast".into()],
                expires_at: None,
                log_bodies: true,
            })
            .await
            .unwrap();
        assert!(created.secret.starts_with("sk-sluice-"));
        assert_eq!(created.secret.len(), KEY_PREFIX.len() + 40);

        let found = store.find_key(&created.secret).await.unwrap().unwrap();
        assert_eq!(found, created.info);
        assert!(found.allows("fast") && !found.allows("slow"));
        assert!(found.has_role("operator") && !found.has_role("user"));
        assert_eq!(found.project.as_deref(), Some("ranking"));
        assert!(store.find_key("sk-sluice-0000").await.unwrap().is_none());

        let stored: String = sqlx::query_scalar("SELECT hash FROM keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(stored, hash_secret(&created.secret));
        assert!(!stored.contains(&created.secret[KEY_PREFIX.len()..]));
    }

    #[tokio::test]
    async fn revoke_by_id_prefix_marks_the_key() {
        let store = Store::open_in_memory().await.unwrap();
        let a = store
            .create_key(NewKey {
                name: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let revoked = store.revoke_key(&a.info.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        let found = store.find_key(&a.secret).await.unwrap().unwrap();
        assert_eq!(found.revoked_at, revoked.revoked_at);
        assert!(matches!(
            store.revoke_key("key_nope").await,
            Err(StoreError::KeyNotFound(_))
        ));
        let _b = store
            .create_key(NewKey {
                name: "b".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(matches!(
            store.revoke_key("key_").await,
            Err(StoreError::KeyAmbiguous(_))
        ));
        assert_eq!(store.list_keys().await.unwrap().len(), 2);
    }
}
