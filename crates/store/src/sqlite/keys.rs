//! Keys in SQLite: one row per key, found by the hash of its secret.

use sqlx::Row;

use crate::keys::{KeyHash, StoredKey, pick_key, tenant_of};
use crate::sqlite::SqliteStore;
use crate::{CreatedKey, KeyInfo, NewKey, StoreError, now_ms};

/// The columns `key_from_row` reads, as a macro so queries stay `&'static str`.
macro_rules! key_columns {
    () => {
        "id, prefix, name, tenant, organisation, team, project, user, roles, aliases,
         created_at, expires_at, revoked_at, log_bodies"
    };
}

impl SqliteStore {
    pub async fn create_key(&self, new: NewKey) -> Result<CreatedKey, StoreError> {
        let tenant = new.tenant.clone();
        let (CreatedKey { info, secret }, hash) = KeyInfo::issue(new);
        self.insert_key(&info, &hash, tenant.as_deref(), false)
            .await?;
        Ok(CreatedKey { info, secret })
    }

    /// Inserts a key as it is; `tenant` as stored (`None`: the organisation's, else the
    /// default). With `skip_existing`, a key whose id or hash is stored is left as it is;
    /// otherwise that is an error. Returns whether the key was added.
    async fn insert_key(
        &self,
        info: &KeyInfo,
        hash: &KeyHash,
        tenant: Option<&str>,
        skip_existing: bool,
    ) -> Result<bool, StoreError> {
        macro_rules! insert {
            () => {
                "INSERT INTO keys (id, hash, prefix, name, tenant, organisation, team, project,
                    user, roles, aliases, created_at, expires_at, revoked_at, log_bodies)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            };
        }
        let sql = if skip_existing {
            concat!(insert!(), " ON CONFLICT DO NOTHING")
        } else {
            insert!()
        };
        let added = sqlx::query(sql)
            .bind(&info.id)
            .bind(hash.to_hex())
            .bind(&info.prefix)
            .bind(&info.name)
            .bind(tenant)
            .bind(&info.organisation)
            .bind(&info.team)
            .bind(&info.project)
            .bind(&info.user)
            .bind(aliases_to_text(&info.roles))
            .bind(aliases_to_text(&info.aliases))
            .bind(info.created_at)
            .bind(info.expires_at)
            .bind(info.revoked_at)
            .bind(info.log_bodies)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(added == 1)
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

    /// Looks a key up by the hash of its secret. Revoked and expired keys are returned too;
    /// the caller decides what they mean.
    pub async fn find_key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyInfo>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE hash = ?"
        ))
        .bind(hash.to_hex())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Every key with its hash, newest first.
    pub async fn export_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT hash, ",
            key_columns!(),
            " FROM keys ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let info = key_from_row(row)?;
                let hash = hash_from_row(row, &info.id)?;
                Ok(StoredKey { info, hash })
            })
            .collect()
    }

    /// Adds a key from another store, hash and every field as they are, unless its id or hash
    /// is already here. Returns whether it was added.
    pub async fn import_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        // The tenant as read (named, else the organisation's, else the default): it reads back
        // the same.
        let tenant = Some(key.info.tenant.0.as_str());
        self.insert_key(&key.info, &key.hash, tenant, true).await
    }

    /// Revokes the key whose id is `id_or_prefix` or starts with it (it must match one key).
    pub async fn revoke_key(&self, id_or_prefix: &str) -> Result<KeyInfo, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            // A start compared as text: LIKE would read the `_` of `key_` as a wildcard.
            " FROM keys WHERE substr(id, 1, length(?1)) = ?1"
        ))
        .bind(id_or_prefix)
        .fetch_all(self.pool())
        .await?;
        let candidates = rows.iter().map(key_from_row).collect::<Result<_, _>>()?;
        let mut info = pick_key(id_or_prefix, candidates)?;
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

/// The `hash` column of a key's row; a malformed one is reported without its text.
fn hash_from_row(row: &sqlx::sqlite::SqliteRow, id: &str) -> Result<KeyHash, StoreError> {
    let text: String = row.try_get("hash")?;
    KeyHash::from_hex(&text)
        .ok_or_else(|| StoreError::Corrupt(format!("the hash of key {id} is not 64 hex digits")))
}

fn aliases_to_text(aliases: &[String]) -> String {
    serde_json::Value::from(aliases.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn created_key_is_found_by_secret_and_stored_hashed() {
        let store = SqliteStore::open_in_memory().await.unwrap();
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
        assert_eq!(created.secret.len(), crate::keys::KEY_PREFIX.len() + 40);

        let found = store
            .find_key_by_hash(&KeyHash::of(&created.secret))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, created.info);
        assert!(found.allows("fast") && !found.allows("slow"));
        assert!(found.has_role("operator") && !found.has_role("user"));
        assert_eq!(found.project.as_deref(), Some("ranking"));
        assert!(
            store
                .find_key_by_hash(&KeyHash::of("sk-sluice-0000"))
                .await
                .unwrap()
                .is_none()
        );

        let stored: String = sqlx::query_scalar("SELECT hash FROM keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(stored, crate::keys::hash_secret(&created.secret));
        assert!(!stored.contains(&created.secret[crate::keys::KEY_PREFIX.len()..]));
    }

    #[tokio::test]
    async fn revoke_by_id_prefix_marks_the_key() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let a = store
            .create_key(NewKey {
                name: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let revoked = store.revoke_key(&a.info.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        let found = store
            .find_key_by_hash(&KeyHash::of(&a.secret))
            .await
            .unwrap()
            .unwrap();
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
