//! Keys and budget rows in Postgres; changes to either are announced ([`super::notify`]).

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgStore, to_i64};
use crate::keys::{KeyHash, StoredKey, pick_key, tenant_of};
use crate::{BudgetRow, CreatedKey, KeyInfo, NewKey, StoreError, now_ms};

/// The columns `key_from_row` reads.
macro_rules! key_columns {
    () => {
        "id, prefix, name, tenant, organisation, team, project, end_user, roles, aliases,
         created_at, expires_at, revoked_at, log_bodies"
    };
}

impl PgStore {
    pub(crate) async fn create_key(&self, new: NewKey) -> Result<CreatedKey, StoreError> {
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
                    end_user, roles, aliases, created_at, expires_at, revoked_at, log_bodies)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
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
            .bind(&info.roles)
            .bind(&info.aliases)
            .bind(info.created_at)
            .bind(info.expires_at)
            .bind(info.revoked_at)
            .bind(info.log_bodies)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(added == 1)
    }

    pub(crate) async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    pub(crate) async fn find_key_by_hash(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<KeyInfo>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE hash = $1"
        ))
        .bind(hash.to_hex())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub(crate) async fn export_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
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
                let text: String = row.try_get("hash")?;
                let hash = KeyHash::from_hex(&text).ok_or_else(|| {
                    StoreError::Corrupt(format!("the hash of key {} is not 64 hex digits", info.id))
                })?;
                Ok(StoredKey { info, hash })
            })
            .collect()
    }

    pub(crate) async fn import_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        // The tenant as read (named, else the organisation's, else the default): it reads back
        // the same.
        let tenant = Some(key.info.tenant.0.as_str());
        self.insert_key(&key.info, &key.hash, tenant, true).await
    }

    pub(crate) async fn revoke_key(&self, id_or_prefix: &str) -> Result<KeyInfo, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE starts_with(id, $1)"
        ))
        .bind(id_or_prefix)
        .fetch_all(self.pool())
        .await?;
        let candidates = rows.iter().map(key_from_row).collect::<Result<_, _>>()?;
        let mut info = pick_key(id_or_prefix, candidates)?;
        // A revocation racing this one keeps its time: the first one wins. Announced (again,
        // when it was revoked already: harmless) as the transaction commits.
        let mut tx = self.pool().begin().await?;
        let (at, hash): (Option<i64>, String) = sqlx::query_as(
            "UPDATE keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2
             RETURNING revoked_at, hash",
        )
        .bind(now_ms())
        .bind(&info.id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(super::notify::KEY_CHANNEL)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        info.revoked_at = at;
        Ok(info)
    }

    pub(crate) async fn budgets(&self) -> Result<Vec<BudgetRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, metric, period, model, amount, soft_amount, parent, updated_at
             FROM budgets ORDER BY scope, metric, period, model",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(budget_from_row).collect()
    }

    /// Puts the row and announces its scope on [`super::notify::BUDGET_CHANNEL`] in one
    /// transaction: every replica hears of it as it commits.
    pub(crate) async fn put_budget(&self, mut row: BudgetRow) -> Result<BudgetRow, StoreError> {
        row.updated_at = now_ms();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO budgets (scope, metric, period, model, amount, soft_amount, parent, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (scope, metric, period, model) DO UPDATE SET
                amount = excluded.amount, soft_amount = excluded.soft_amount,
                parent = excluded.parent, updated_at = excluded.updated_at",
        )
        .bind(&row.scope)
        .bind(&row.metric)
        .bind(&row.period)
        .bind(&row.model)
        .bind(to_i64(row.amount))
        .bind(row.soft_amount.map(to_i64))
        .bind(&row.parent)
        .bind(row.updated_at)
        .execute(&mut *tx)
        .await?;
        announce_budget_change(&mut tx, &row.scope).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub(crate) async fn import_budget(&self, row: &BudgetRow) -> Result<bool, StoreError> {
        let written = sqlx::query(
            "INSERT INTO budgets (scope, metric, period, model, amount, soft_amount, parent, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (scope, metric, period, model) DO UPDATE SET
                amount = excluded.amount, soft_amount = excluded.soft_amount,
                parent = excluded.parent, updated_at = excluded.updated_at
             WHERE budgets.updated_at < excluded.updated_at",
        )
        .bind(&row.scope)
        .bind(&row.metric)
        .bind(&row.period)
        .bind(&row.model)
        .bind(to_i64(row.amount))
        .bind(row.soft_amount.map(to_i64))
        .bind(&row.parent)
        .bind(row.updated_at)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(written == 1)
    }

    /// Deletes the rows and, when any went, announces their scope as
    /// [`PgStore::put_budget`] does.
    pub(crate) async fn delete_budgets(
        &self,
        scope: &str,
        metric_and_period: Option<(&str, &str)>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        let result = match metric_and_period {
            None => {
                sqlx::query("DELETE FROM budgets WHERE scope = $1")
                    .bind(scope)
                    .execute(&mut *tx)
                    .await?
            }
            Some((metric, period)) => {
                sqlx::query("DELETE FROM budgets WHERE scope = $1 AND metric = $2 AND period = $3")
                    .bind(scope)
                    .bind(metric)
                    .bind(period)
                    .execute(&mut *tx)
                    .await?
            }
        };
        if result.rows_affected() > 0 {
            announce_budget_change(&mut tx, scope).await?;
        }
        tx.commit().await?;
        Ok(result.rows_affected())
    }
}

/// The most of a scope a budget announcement carries, in bytes: a payload must stay under
/// Postgres's 8000, and a follower rereads every row whatever the scope.
const MAX_ANNOUNCED_SCOPE: usize = 1024;

/// `pg_notify` of a change to `scope`'s rows, delivered when `tx` commits (and never if it
/// does not).
async fn announce_budget_change(
    tx: &mut sqlx::PgTransaction<'_>,
    scope: &str,
) -> Result<(), StoreError> {
    let payload = scope
        .get(..scope.floor_char_boundary(MAX_ANNOUNCED_SCOPE))
        .unwrap_or_default();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(super::notify::BUDGET_CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn key_from_row(row: &PgRow) -> Result<KeyInfo, StoreError> {
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
        user: row.try_get("end_user")?,
        roles: row.try_get("roles")?,
        aliases: row.try_get("aliases")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        log_bodies: row.try_get("log_bodies")?,
    })
}

fn budget_from_row(row: &PgRow) -> Result<BudgetRow, StoreError> {
    let amount: i64 = row.try_get("amount")?;
    let soft: Option<i64> = row.try_get("soft_amount")?;
    let unsigned = |value: i64| {
        u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative budget {value}")))
    };
    Ok(BudgetRow {
        scope: row.try_get("scope")?,
        metric: row.try_get("metric")?,
        period: row.try_get("period")?,
        model: row.try_get("model")?,
        amount: unsigned(amount)?,
        soft_amount: soft.map(unsigned).transpose()?,
        parent: row.try_get("parent")?,
        updated_at: row.try_get("updated_at")?,
    })
}
