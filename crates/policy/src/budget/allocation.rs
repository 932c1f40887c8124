//! Allocation validation: a child's allocation comes out of its parent's, so the allocations a
//! parent hands to its direct children may not add up to more than the parent's own limit.
//!
//! Runs when settings are loaded (by `sluice-config`), not per request. Limits are compared
//! when they count the same thing: same metric, same period and same model filter. A child
//! limit with no comparable parent limit is allowed (the parent is unlimited in that respect).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::{Limit, Metric, Period, Scope};
use crate::error::PolicyError;

/// One scope of the hierarchy, its parent and its limits, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetNode {
    pub scope: Scope,
    /// `None` for a root (usually an organisation).
    pub parent: Option<Scope>,
    pub limits: Vec<Limit>,
}

/// One thing wrong with a set of allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocationProblem {
    /// The children's limits add up to more than the parent's.
    OverAllocated {
        parent: Scope,
        metric: Metric,
        period: Period,
        model: Option<String>,
        /// The parent's limit.
        limit: u64,
        /// The sum of the children's limits.
        allocated: u64,
        /// Each child and its limit, in configuration order.
        children: Vec<(Scope, u64)>,
    },
    /// A parent that is not above its child in the hierarchy (a team under a project).
    ParentNotAbove { child: Scope, parent: Scope },
    /// A parent that is not among the nodes.
    UnknownParent { child: Scope, parent: Scope },
    /// The same scope configured twice.
    DuplicateScope { scope: Scope },
    /// Two limits of one scope that count the same thing.
    DuplicateLimit {
        scope: Scope,
        metric: Metric,
        period: Period,
        model: Option<String>,
    },
}

impl fmt::Display for AllocationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocationProblem::OverAllocated {
                parent,
                metric,
                period,
                model,
                limit,
                allocated,
                children,
            } => {
                let shares = children
                    .iter()
                    .map(|(child, amount)| format!("{child} {}", metric.format_amount(*amount)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let model = model
                    .as_deref()
                    .map(|model| format!(" for `{model}`"))
                    .unwrap_or_default();
                write!(
                    f,
                    "{parent} has a {} limit{model} of {} but allocates {} to its children ({shares})",
                    period.adjective(),
                    metric.format_amount(*limit),
                    metric.format_amount(*allocated),
                )
            }
            AllocationProblem::ParentNotAbove { child, parent } => {
                write!(f, "{child} cannot sit under {parent}")
            }
            AllocationProblem::UnknownParent { child, parent } => {
                write!(
                    f,
                    "{child} names {parent} as its parent, which is not configured"
                )
            }
            AllocationProblem::DuplicateScope { scope } => {
                write!(f, "{scope} is configured twice")
            }
            AllocationProblem::DuplicateLimit { scope, period, .. } => {
                write!(
                    f,
                    "{scope} has two {} limits of the same kind",
                    period.adjective()
                )
            }
        }
    }
}

/// What two limits must share to be compared or to collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LimitKind {
    metric: Metric,
    period: Period,
    model: Option<String>,
}

impl LimitKind {
    fn of(limit: &Limit) -> LimitKind {
        LimitKind {
            metric: limit.metric,
            period: limit.period,
            model: limit.model.clone(),
        }
    }
}

/// Checks the hierarchy and every parent's allocations; reports every problem found, in
/// configuration order, not just the first.
pub fn validate_allocations(nodes: &[BudgetNode]) -> Result<(), PolicyError> {
    let mut problems = Vec::new();
    let mut seen_scopes = HashSet::new();
    for node in nodes {
        if !seen_scopes.insert(&node.scope) {
            problems.push(AllocationProblem::DuplicateScope {
                scope: node.scope.clone(),
            });
        }
        let mut kinds = HashSet::new();
        for limit in &node.limits {
            let kind = LimitKind::of(limit);
            if !kinds.insert(kind.clone()) {
                problems.push(AllocationProblem::DuplicateLimit {
                    scope: node.scope.clone(),
                    metric: kind.metric,
                    period: kind.period,
                    model: kind.model,
                });
            }
        }
        if let Some(parent) = &node.parent
            && (parent.level() >= node.scope.level()
                || !parent.level().in_hierarchy()
                || !node.scope.level().in_hierarchy())
        {
            problems.push(AllocationProblem::ParentNotAbove {
                child: node.scope.clone(),
                parent: parent.clone(),
            });
        }
    }

    // First node of each scope wins; duplicates were reported above.
    let mut by_scope: HashMap<&Scope, &BudgetNode> = HashMap::new();
    for node in nodes {
        by_scope.entry(&node.scope).or_insert(node);
    }
    // Children of each parent, in configuration order; parents ordered as first configured.
    let mut children_of: BTreeMap<usize, (&Scope, Vec<&BudgetNode>)> = BTreeMap::new();
    for node in nodes {
        let Some(parent) = &node.parent else { continue };
        let Some(parent_position) = nodes.iter().position(|other| other.scope == *parent) else {
            problems.push(AllocationProblem::UnknownParent {
                child: node.scope.clone(),
                parent: parent.clone(),
            });
            continue;
        };
        children_of
            .entry(parent_position)
            .or_insert_with(|| (parent, Vec::new()))
            .1
            .push(node);
    }

    for (parent, children) in children_of.values() {
        let Some(parent_node) = by_scope.get(parent) else {
            continue;
        };
        for parent_limit in &parent_node.limits {
            let kind = LimitKind::of(parent_limit);
            let shares: Vec<(Scope, u64)> = children
                .iter()
                .filter_map(|child| {
                    child
                        .limits
                        .iter()
                        .find(|limit| LimitKind::of(limit) == kind)
                        .map(|limit| (child.scope.clone(), limit.amount))
                })
                .collect();
            let allocated = shares
                .iter()
                .fold(0_u64, |sum, (_, amount)| sum.saturating_add(*amount));
            if allocated > parent_limit.amount {
                problems.push(AllocationProblem::OverAllocated {
                    parent: (*parent).clone(),
                    metric: kind.metric,
                    period: kind.period,
                    model: kind.model,
                    limit: parent_limit.amount,
                    allocated,
                    children: shares,
                });
            }
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(PolicyError::InvalidAllocations(problems))
    }
}
