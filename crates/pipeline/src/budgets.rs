//! Budget administration, shared by `sluice budgets` and the admin API: check a limit, check
//! that allocations still fit their parents, store it; delete limits; show each limit with
//! what its current window has used; and report usage from the records.
//!
//! Rows are validated here, once, on the way in; a running gateway rereads them
//! ([`crate::Gateway::reload_budgets`]) on a timer, at once after a change made through
//! [`crate::Gateway::put_budget`] or [`crate::Gateway::delete_budgets`] (the admin API's way
//! in), and when the store announces a change made elsewhere (Postgres: another replica, the
//! CLI; `sluice_store::BudgetChanges`, followed by the CLI's `serve`). Rendering for people
//! (tables, HTTP) is the CLI's and the server's.

use std::collections::BTreeMap;

use sluice_policy::budget::{BudgetNode, validate_allocations};
use sluice_policy::{Limit, PolicyError, Scope};
use sluice_store::{BudgetRow, BudgetStore, StoreError, UsageQuery, UsageRow};
use sluice_types::{Classify, ErrorKind, Origin};

use crate::PipelineError;
use crate::admission::{BadBudgetRow, parse_budget_row};

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(transparent)]
    Invalid(#[from] BadBudgetRow),
    #[error(
        "`{0}` cannot have a parent: only org, team, project, key and user scopes form the hierarchy"
    )]
    ParentOutsideHierarchy(String),
    #[error(
        "`*` stands for every key or end user, and `user:ID` for that user id in every tenant; \
         neither can be a parent or have one (name one tenant's user: `user:TENANT/ID`)"
    )]
    WildcardInHierarchy,
    #[error(transparent)]
    Allocation(PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change is stored, but this gateway could not reread its limits (it will on its
    /// next reload).
    #[error("the change is stored, but the gateway could not reload its budgets")]
    Reload(#[source] Box<PipelineError>),
}

impl Classify for BudgetError {
    fn kind(&self) -> ErrorKind {
        match self {
            BudgetError::Invalid(_)
            | BudgetError::ParentOutsideHierarchy(_)
            | BudgetError::WildcardInHierarchy
            | BudgetError::Allocation(_) => ErrorKind::InvalidRequest,
            BudgetError::Store(_) | BudgetError::Reload(_) => ErrorKind::Internal,
        }
    }
    fn origin(&self) -> Origin {
        match self {
            BudgetError::Store(_) | BudgetError::Reload(_) => Origin::Gateway,
            _ => Origin::Client,
        }
    }
}

/// Checks `row` (its text, its soft limit, its parent) and that every parent's children still
/// fit in it once the row is in, then stores it. Returns the row as stored.
pub async fn set_budget(
    store: &dyn BudgetStore,
    mut row: BudgetRow,
) -> Result<BudgetRow, BudgetError> {
    let (limit, _) = parse_budget_row(&row)?;
    row.scope = limit.scope.to_text();
    row.metric = limit.metric.as_str().to_owned();
    row.period = limit.period.to_text();
    row.model = limit.model.clone().unwrap_or_default();
    if let Some(parent) = &row.parent {
        let parent: Scope = parent.parse().map_err(|e| BadBudgetRow {
            scope: row.scope.clone(),
            metric: row.metric.clone(),
            period: row.period.clone(),
            problem: format!("parent: {e}"),
        })?;
        if !parent.level().in_hierarchy() || !limit.scope.level().in_hierarchy() {
            return Err(BudgetError::ParentOutsideHierarchy(row.scope.clone()));
        }
        if parent.is_template() || limit.scope.is_template() {
            return Err(BudgetError::WildcardInHierarchy);
        }
        row.parent = Some(parent.to_text());
    }
    let mut rows = store.budgets().await?;
    rows.retain(|r| {
        !(r.scope == row.scope
            && r.metric == row.metric
            && r.period == row.period
            && r.model == row.model)
    });
    rows.push(row.clone());
    check_allocations(&rows)?;
    Ok(store.put_budget(row).await?)
}

/// Removes the limits of `scope` (every one, or those of one metric and period, for every
/// model). The scope, metric and period are read as `set_budget` reads them, so
/// `organisation:acme` finds the row stored as `org:acme`. Returns how many rows went.
pub async fn delete_budgets(
    store: &dyn BudgetStore,
    scope: &str,
    metric_and_period: Option<(&str, &str)>,
) -> Result<u64, BudgetError> {
    let bad = |problem: String| BadBudgetRow {
        scope: scope.to_owned(),
        metric: metric_and_period.map_or("", |(m, _)| m).to_owned(),
        period: metric_and_period.map_or("", |(_, p)| p).to_owned(),
        problem,
    };
    let canonical: Scope = scope.parse().map_err(|e| bad(format!("{e}")))?;
    let canonical = canonical.to_text();
    let removed = match metric_and_period {
        None => store.delete_budgets(&canonical, None).await?,
        Some((metric, period)) => {
            let metric: sluice_policy::Metric = metric.parse().map_err(|e| bad(format!("{e}")))?;
            let period: sluice_policy::Period = period.parse().map_err(|e| bad(format!("{e}")))?;
            store
                .delete_budgets(&canonical, Some((metric.as_str(), &period.to_text())))
                .await?
        }
    };
    Ok(removed)
}

/// Every parent's children fit in it. Rows that cannot be read are left out (they are not
/// enforced either).
fn check_allocations(rows: &[BudgetRow]) -> Result<(), BudgetError> {
    let mut nodes: BTreeMap<String, BudgetNode> = BTreeMap::new();
    for row in rows {
        let Ok((limit, _)) = parse_budget_row(row) else {
            continue;
        };
        if limit.scope.is_template() {
            continue;
        }
        let parent = row.parent.as_deref().and_then(|p| p.parse::<Scope>().ok());
        let node = nodes
            .entry(limit.scope.to_text())
            .or_insert_with(|| BudgetNode {
                scope: limit.scope.clone(),
                parent: None,
                limits: Vec::new(),
            });
        if parent.is_some() {
            node.parent = parent;
        }
        node.limits.push(limit);
    }
    // A parent named without limits of its own is unlimited: give it an empty node.
    let parents: Vec<Scope> = nodes.values().filter_map(|n| n.parent.clone()).collect();
    for parent in parents {
        nodes.entry(parent.to_text()).or_insert_with(|| BudgetNode {
            scope: parent,
            parent: None,
            limits: Vec::new(),
        });
    }
    let nodes: Vec<BudgetNode> = nodes.into_values().collect();
    validate_allocations(&nodes).map_err(BudgetError::Allocation)
}

/// One limit and what its current window holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetStatus {
    #[serde(flatten)]
    pub row: BudgetRow,
    /// Used in the current window (reservations in flight included); `None` for `*` rows,
    /// which stand for many counters.
    pub used: Option<u64>,
}

impl crate::Gateway {
    /// [`set_budget`] on this gateway's store, then its limits are reread so the row is in
    /// force for the next request.
    pub async fn put_budget(&self, row: BudgetRow) -> Result<BudgetRow, BudgetError> {
        let stored = set_budget(&*self.inner.store.budgets, row).await?;
        self.reload_after_change().await?;
        Ok(stored)
    }

    /// [`delete_budgets`] on this gateway's store, then its limits are reread.
    pub async fn delete_budgets(
        &self,
        scope: &str,
        metric_and_period: Option<(&str, &str)>,
    ) -> Result<u64, BudgetError> {
        let removed = delete_budgets(&*self.inner.store.budgets, scope, metric_and_period).await?;
        self.reload_after_change().await?;
        Ok(removed)
    }

    async fn reload_after_change(&self) -> Result<(), BudgetError> {
        let (_, bad) = self
            .reload_budgets()
            .await
            .map_err(|e| BudgetError::Reload(Box::new(e)))?;
        for row in &bad {
            tracing::warn!(problem = %row, "budget row ignored");
        }
        Ok(())
    }

    /// The usage report of this gateway's records (see [`sluice_store::UsageReports`]).
    pub async fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        self.inner.store.usage.usage_report(query).await
    }

    /// Every budget row with its current usage, read from this gateway's counters.
    pub async fn budget_status(&self) -> Result<Vec<BudgetStatus>, BudgetError> {
        let rows = self.inner.store.budgets.budgets().await?;
        let mut statuses = Vec::with_capacity(rows.len());
        for row in rows {
            let used = match parse_budget_row(&row) {
                Ok((limit, _)) if !limit.scope.is_template() => self.usage_of(&limit).await,
                _ => None,
            };
            statuses.push(BudgetStatus { row, used });
        }
        Ok(statuses)
    }

    async fn usage_of(&self, limit: &Limit) -> Option<u64> {
        match self.policy().usage(limit).await {
            Ok(used) => Some(used),
            Err(e) => {
                tracing::warn!(error = %e, "reading a budget's usage failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        scope: &str,
        metric: &str,
        period: &str,
        amount: u64,
        parent: Option<&str>,
    ) -> BudgetRow {
        BudgetRow {
            parent: parent.map(str::to_owned),
            ..BudgetRow::new(scope, metric, period, amount)
        }
    }

    #[tokio::test]
    async fn allocations_must_fit_their_parent() {
        let stores = sluice_store::Stores::memory();
        let store = &*stores.budgets;
        set_budget(store, row("org:acme", "usd", "month", 1_000, None))
            .await
            .unwrap();
        set_budget(store, row("team:a", "usd", "month", 600, Some("org:acme")))
            .await
            .unwrap();
        let over = set_budget(store, row("team:b", "usd", "month", 500, Some("org:acme")))
            .await
            .unwrap_err()
            .to_string();
        assert!(over.contains("allocates $0.0011 to its children"), "{over}");
        // Lowering a child to make room is accepted, as is the other child then.
        set_budget(store, row("team:a", "usd", "month", 500, Some("org:acme")))
            .await
            .unwrap();
        set_budget(store, row("team:b", "usd", "month", 500, Some("org:acme")))
            .await
            .unwrap();
        assert_eq!(store.budgets().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn limits_are_deleted_by_their_text_as_a_person_writes_it() {
        let stores = sluice_store::Stores::memory();
        let store = &*stores.budgets;
        set_budget(store, row("org:acme", "usd", "month", 1_000, None))
            .await
            .unwrap();
        set_budget(store, row("org:acme", "requests", "60s", 10, None))
            .await
            .unwrap();
        set_budget(store, row("team:a", "usd", "month", 5, None))
            .await
            .unwrap();
        let one = delete_budgets(store, "Organisation:acme", Some(("requests", "minute")))
            .await
            .unwrap();
        assert_eq!(one, 1, "`minute` is the row stored as `1m`");
        assert_eq!(
            delete_budgets(store, "org:acme", None).await.unwrap(),
            1,
            "the rest of the scope"
        );
        assert_eq!(delete_budgets(store, "org:acme", None).await.unwrap(), 0);
        let bad = delete_budgets(store, "team:a", Some(("usd", "fortnight"))).await;
        assert!(matches!(bad, Err(BudgetError::Invalid(_))));
        let bad = delete_budgets(store, "galaxy:a", None).await;
        assert!(matches!(bad, Err(BudgetError::Invalid(_))));
        assert_eq!(store.budgets().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn rows_are_stored_in_their_canonical_text() {
        let stores = sluice_store::Stores::memory();
        let store = &*stores.budgets;
        let stored = set_budget(store, row("Organisation:acme", "USD", "3600s", 5, None))
            .await
            .unwrap();
        assert_eq!(
            (
                stored.scope.as_str(),
                stored.metric.as_str(),
                stored.period.as_str()
            ),
            ("org:acme", "usd", "1h")
        );
        let bad = set_budget(store, row("team:a", "usd", "fortnight", 5, None)).await;
        assert!(matches!(bad, Err(BudgetError::Invalid(_))));
        let wildcard = set_budget(store, row("user:*", "usd", "day", 5, Some("team:a"))).await;
        assert!(matches!(wildcard, Err(BudgetError::WildcardInHierarchy)));
        let alias = set_budget(store, row("alias:m", "requests", "60s", 5, Some("team:a"))).await;
        assert!(matches!(alias, Err(BudgetError::ParentOutsideHierarchy(_))));
    }
}
