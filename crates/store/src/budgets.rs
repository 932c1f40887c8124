//! Budget and rate-limit rows: what `sluice budgets` and the admin API write, and what a running
//! gateway reloads every few seconds, and at once when the store announces a change
//! ([`BudgetChanges`]: Postgres, whichever process made it).
//!
//! Rows are plain text and integers: the store does not know what a scope or a period means.
//! `sluice-policy` parses them (`Scope`, `Metric`, `Period`) and the pipeline decides which
//! apply to a caller.

/// One limit as stored. `(scope, metric, period, model)` identifies it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BudgetRow {
    /// `LEVEL:ID`: `org:acme`, `team:search`, `project:x`, `key:key_…`, `user:ana`, `alias:gpt-4o`;
    /// the id `*` on `key:` and `user:` gives every key or end user a limit of its own.
    pub scope: String,
    /// `usd`, `tokens` or `requests`.
    pub metric: String,
    /// `day`, `week`, `month`, or a rolling length such as `60s`.
    pub period: String,
    /// Only requests to this model count; empty: every model.
    #[serde(default)]
    pub model: String,
    /// The hard limit, in micro-USD, tokens or requests.
    pub amount: u64,
    /// Past this, callers are served by the route's cheaper alias (and told so).
    #[serde(default)]
    pub soft_amount: Option<u64>,
    /// The scope whose allocation this limit comes out of.
    #[serde(default)]
    pub parent: Option<String>,
    /// Unix milliseconds of the last change.
    #[serde(default)]
    pub updated_at: i64,
}

/// What a store announces about its budget rows, to whoever holds a copy of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetChange {
    /// Rows of this scope (its first 1,024 bytes) were put or deleted: a copy of the rows is
    /// stale.
    Changed { scope: String },
    /// Announcements may have been lost (a dropped connection): any copy may be stale.
    Missed,
}

/// A store's announcements of budget changes, made by any process that shares the store
/// ([`crate::BudgetStore::budget_changes`]).
#[derive(Debug)]
pub struct BudgetChanges {
    listener: Box<crate::postgres::BudgetListener>,
}

impl BudgetChanges {
    pub(crate) fn postgres(listener: crate::postgres::BudgetListener) -> BudgetChanges {
        BudgetChanges {
            listener: Box::new(listener),
        }
    }

    /// The next change; `None` once the store is gone. Cancel-safe: a change is not lost when
    /// the future is dropped before it completes (it is read by the next call).
    pub async fn next(&mut self) -> Option<BudgetChange> {
        Some(self.listener.next().await)
    }
}

impl BudgetRow {
    /// A hard limit on every model, with no soft amount and no parent.
    pub fn new(scope: &str, metric: &str, period: &str, amount: u64) -> BudgetRow {
        BudgetRow {
            scope: scope.to_owned(),
            metric: metric.to_owned(),
            period: period.to_owned(),
            model: String::new(),
            amount,
            soft_amount: None,
            parent: None,
            updated_at: 0,
        }
    }
}
