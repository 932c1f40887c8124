//! Budget rows in SQLite.

use sqlx::Row;

use crate::sqlite::SqliteStore;
use crate::{BudgetRow, StoreError, now_ms};

impl SqliteStore {
    /// Every budget row, ordered by scope, metric, period, model.
    pub async fn budgets(&self) -> Result<Vec<BudgetRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, metric, period, model, amount, soft_amount, parent, updated_at
             FROM budgets ORDER BY scope, metric, period, model",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(budget_from_row).collect()
    }

    /// Adds a limit or replaces the one with the same scope, metric, period and model. Returns
    /// the row as stored.
    pub async fn put_budget(&self, mut row: BudgetRow) -> Result<BudgetRow, StoreError> {
        row.updated_at = now_ms();
        sqlx::query(
            "INSERT INTO budgets (scope, metric, period, model, amount, soft_amount, parent, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
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
        .execute(self.pool())
        .await?;
        Ok(row)
    }

    /// Adds a row from another store, its `updated_at` kept, or replaces one that was updated
    /// earlier. Returns whether it was written.
    pub async fn import_budget(&self, row: &BudgetRow) -> Result<bool, StoreError> {
        let written = sqlx::query(
            "INSERT INTO budgets (scope, metric, period, model, amount, soft_amount, parent, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
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

    /// Removes the limits of `scope`: every one, or those of one metric and period. Returns how
    /// many rows went.
    pub async fn delete_budgets(
        &self,
        scope: &str,
        metric_and_period: Option<(&str, &str)>,
    ) -> Result<u64, StoreError> {
        let result = match metric_and_period {
            None => {
                sqlx::query("DELETE FROM budgets WHERE scope = ?")
                    .bind(scope)
                    .execute(self.pool())
                    .await?
            }
            Some((metric, period)) => {
                sqlx::query("DELETE FROM budgets WHERE scope = ? AND metric = ? AND period = ?")
                    .bind(scope)
                    .bind(metric)
                    .bind(period)
                    .execute(self.pool())
                    .await?
            }
        };
        Ok(result.rows_affected())
    }
}

fn to_i64(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

fn budget_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<BudgetRow, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scope: &str, metric: &str, period: &str, amount: u64) -> BudgetRow {
        BudgetRow::new(scope, metric, period, amount)
    }

    #[tokio::test]
    async fn a_limit_is_replaced_by_one_of_the_same_kind_and_deleted_by_scope() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .put_budget(row("team:search", "usd", "month", 5_000_000))
            .await
            .unwrap();
        store
            .put_budget(row("team:search", "requests", "60s", 100))
            .await
            .unwrap();
        let mut raised = row("team:search", "usd", "month", 9_000_000);
        raised.soft_amount = Some(8_000_000);
        raised.parent = Some("org:acme".into());
        store.put_budget(raised).await.unwrap();
        store
            .put_budget(row("user:*", "tokens", "day", 10_000))
            .await
            .unwrap();

        let rows = store.budgets().await.unwrap();
        assert_eq!(rows.len(), 3);
        let usd = rows.iter().find(|r| r.metric == "usd").unwrap();
        assert_eq!(
            (usd.amount, usd.soft_amount, usd.parent.as_deref()),
            (9_000_000, Some(8_000_000), Some("org:acme"))
        );
        assert!(usd.updated_at > 0);

        let removed = store
            .delete_budgets("team:search", Some(("requests", "60s")))
            .await
            .unwrap();
        assert_eq!(removed, 1);
        assert_eq!(store.delete_budgets("team:search", None).await.unwrap(), 1);
        let left: Vec<String> = store
            .budgets()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.scope)
            .collect();
        assert_eq!(left, ["user:*"]);
    }
}
