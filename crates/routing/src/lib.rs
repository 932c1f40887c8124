//! Routing: which deployments may serve an alias, in which order, and what the gateway knows
//! about each of them right now.
//!
//! - [`Router`] is built from configuration, again on each reload ([`Router::keep_unchanged`]
//!   carries the health of unchanged deployments into the new one); [`Router::plan`] turns the model a client
//!   asked for into a [`RoutePlan`]: the route's pool ordered by its [`Strategy`], then its
//!   fallbacks, leaving out deployments whose circuit is open or that asked to be left alone
//!   (`Retry-After`), which the plan lists as skipped.
//! - [`health`]: per deployment, the breaker, latency estimates and concurrency limit.
//! - [`budget`]: per route and deployment, the retry budget.
//! - [`policy`]: what a route promises (conditions, retries, timeouts, hedging, drills).
//!
//! The attempt loop itself — sending, waiting, hedging, retrying — is the pipeline's; this
//! crate answers its questions (what next, may I retry, how long to wait) and keeps the state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sluice_types::{Classify, ErrorKind, Origin};
use tokio::time::Instant;

pub mod breaker;
pub mod budget;
pub mod health;
pub mod policy;
mod select;
mod window;

pub use breaker::{Admission, BreakerPolicy, BreakerState, CallerTag, Outcome};
pub use budget::{BudgetStatus, RetryBudget};
pub use health::{
    CapacityPolicy, DeploymentHealth, DeploymentStatus, RateLimitEvidence, RecentStats, Slot,
    Unavailable,
};
pub use policy::{
    BudgetPolicy, Condition, Conditions, HedgePolicy, RetryPolicy, RoutePolicy, RouteTimeouts,
    Strategy, TimeoutOverrides,
};

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("the model `{0}` does not exist or is not served by this gateway")]
    UnknownAlias(String),
    /// Every deployment of the route is refusing requests for now. When each of them is
    /// only waiting out a provider's `Retry-After`, that is a rate limit (429), not an outage.
    #[error("no deployment of `{alias}` can take requests now ({reasons}); retry in {}s", .retry_in.as_secs_f64().ceil().max(1.0))]
    Unavailable {
        alias: String,
        reasons: String,
        retry_in: Duration,
        rate_limited: bool,
    },
}

impl Classify for RoutingError {
    fn kind(&self) -> ErrorKind {
        match self {
            RoutingError::UnknownAlias(_) => ErrorKind::NotFound,
            RoutingError::Unavailable {
                rate_limited: true, ..
            } => ErrorKind::RateLimited,
            RoutingError::Unavailable { .. } => ErrorKind::RouteUnavailable,
        }
    }
    fn origin(&self) -> Origin {
        match self {
            RoutingError::UnknownAlias(_) => Origin::Client,
            RoutingError::Unavailable { .. } => Origin::Gateway,
        }
    }
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            RoutingError::Unavailable { retry_in, .. } => {
                Some(retry_in.as_secs_f64().ceil().max(1.0) as u64)
            }
            RoutingError::UnknownAlias(_) => None,
        }
    }
}

/// Whether a deployment is part of the pool or one of the fallbacks.
pub use sluice_types::record::Role;

/// A route as configured: its pool (with weights), its fallbacks, its policy.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub alias: String,
    pub pool: Vec<(Arc<DeploymentHealth>, u32)>,
    pub fallbacks: Vec<Arc<DeploymentHealth>>,
    pub policy: RoutePolicy,
}

/// A live route: its spec plus the retry budget of each of its deployments.
#[derive(Debug)]
pub struct Route {
    pub alias: Arc<str>,
    pool: Vec<Member>,
    fallbacks: Vec<Arc<DeploymentHealth>>,
    pub policy: RoutePolicy,
    budgets: HashMap<String, Mutex<RetryBudget>>,
}

#[derive(Debug)]
struct Member {
    health: Arc<DeploymentHealth>,
    weight: u32,
}

impl select::Ranked for Member {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn health(&self) -> &DeploymentHealth {
        &self.health
    }
}

/// The state of a route's retry budget for one deployment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteBudget {
    pub deployment: String,
    pub role: Role,
    #[serde(flatten)]
    pub budget: BudgetStatus,
}

impl Route {
    fn new(spec: RouteSpec) -> Route {
        let now = Instant::now();
        let budgets = spec
            .pool
            .iter()
            .map(|(h, _)| h)
            .chain(&spec.fallbacks)
            .map(|h| {
                let budget = RetryBudget::new(spec.policy.retry.budget, now);
                (h.name().to_owned(), Mutex::new(budget))
            })
            .collect();
        Route {
            alias: Arc::from(spec.alias.as_str()),
            pool: spec
                .pool
                .into_iter()
                .map(|(health, weight)| Member { health, weight })
                .collect(),
            fallbacks: spec.fallbacks,
            policy: spec.policy,
            budgets,
        }
    }

    fn with_budget<T>(&self, deployment: &str, f: impl FnOnce(&mut RetryBudget) -> T) -> Option<T> {
        let budget = self.budgets.get(deployment)?;
        let mut budget = budget.lock().unwrap_or_else(PoisonError::into_inner);
        Some(f(&mut budget))
    }

    /// A request reached `deployment` as its first attempt.
    pub fn count_request(&self, deployment: &str) {
        self.with_budget(deployment, |b| b.request(Instant::now()));
    }

    /// Spends one retry (or hedge) from the budget of the deployment whose failure (or
    /// slowness) causes it. `false`: over budget, do not retry.
    pub fn spend_retry(&self, caused_by: &str) -> bool {
        self.with_budget(caused_by, |b| b.try_spend(Instant::now()))
            .unwrap_or(false)
    }

    /// Every deployment of the route with its role, pool first.
    pub fn members(&self) -> impl Iterator<Item = (&Arc<DeploymentHealth>, Role)> {
        self.pool
            .iter()
            .map(|m| (&m.health, Role::Pool))
            .chain(self.fallbacks.iter().map(|h| (h, Role::Fallback)))
    }

    pub fn fallbacks(&self) -> &[Arc<DeploymentHealth>] {
        &self.fallbacks
    }

    pub fn budgets(&self) -> Vec<RouteBudget> {
        let now = Instant::now();
        self.members()
            .filter_map(|(health, role)| {
                self.with_budget(health.name(), |b| RouteBudget {
                    deployment: health.name().to_owned(),
                    role,
                    budget: b.status(now),
                })
            })
            .collect()
    }
}

/// A deployment the plan will try, and in which role.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub health: Arc<DeploymentHealth>,
    pub role: Role,
}

/// One request's route: the deployments to try, in order, and the ones left out.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub route: Arc<Route>,
    pub candidates: Vec<Candidate>,
    /// Deployments of the route not tried, and why.
    pub skipped: Vec<(Arc<DeploymentHealth>, Unavailable)>,
}

impl RoutePlan {
    pub fn alias(&self) -> &Arc<str> {
        &self.route.alias
    }

    pub fn policy(&self) -> &RoutePolicy {
        &self.route.policy
    }

    /// The error for a plan without candidates: every deployment is refusing requests
    /// (circuits open, or cooling down after a `Retry-After`), with the earliest time to try
    /// again.
    pub fn unavailable(&self) -> Option<RoutingError> {
        if !self.candidates.is_empty() {
            return None;
        }
        let retry_in = self
            .skipped
            .iter()
            .map(|(_, why)| why.retry_in())
            .min()
            .unwrap_or(Duration::from_secs(1));
        let reasons = self
            .skipped
            .iter()
            .map(|(h, why)| format!("{}: {}", h.name(), why.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let rate_limited = !self.skipped.is_empty()
            && self
                .skipped
                .iter()
                .all(|(_, why)| matches!(why, Unavailable::CoolingDown { .. }));
        Some(RoutingError::Unavailable {
            alias: self.route.alias.to_string(),
            reasons,
            retry_in,
            rate_limited,
        })
    }
}

/// Alias name -> route, plus every deployment's health.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: BTreeMap<String, Arc<Route>>,
    deployments: Vec<Arc<DeploymentHealth>>,
}

impl Router {
    /// `deployments` is every configured deployment (also those no route uses), for status.
    pub fn new(
        routes: impl IntoIterator<Item = RouteSpec>,
        deployments: Vec<Arc<DeploymentHealth>>,
    ) -> Router {
        let routes = routes
            .into_iter()
            .map(|spec| (spec.alias.clone(), Arc::new(Route::new(spec))))
            .collect();
        Router {
            routes,
            deployments,
        }
    }

    pub fn route(&self, model: &str) -> Result<&Arc<Route>, RoutingError> {
        self.routes
            .get(model)
            .ok_or_else(|| RoutingError::UnknownAlias(model.to_owned()))
    }

    /// The deployments to try for one request, in order, and the ones left out. When every
    /// deployment is refusing requests, there are no candidates: see
    /// [`RoutePlan::unavailable`].
    pub fn plan(&self, model: &str, stream: bool) -> Result<RoutePlan, RoutingError> {
        let route = self.route(model)?.clone();
        let order = select::order(&route.pool, route.policy.strategy, stream, &mut rand::rng());
        let now = Instant::now();
        let mut candidates = Vec::with_capacity(route.pool.len() + route.fallbacks.len());
        let mut skipped = Vec::new();
        let ordered = order
            .into_iter()
            .map(|i| (&route.pool[i].health, Role::Pool))
            .chain(route.fallbacks.iter().map(|h| (h, Role::Fallback)));
        for (health, role) in ordered {
            match health.available(now) {
                Ok(()) => candidates.push(Candidate {
                    health: health.clone(),
                    role,
                }),
                Err(why) => skipped.push((health.clone(), why)),
            }
        }
        Ok(RoutePlan {
            route,
            candidates,
            skipped,
        })
    }

    /// Every alias, sorted.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    pub fn deployments(&self) -> &[Arc<DeploymentHealth>] {
        &self.deployments
    }

    /// The deployments of a new configuration, each replaced by this router's own when it is
    /// unchanged ([`DeploymentHealth::same_settings`]): a reload keeps its breaker, latency
    /// estimates, cool-downs and concurrency slots (shared with requests still running on the
    /// old configuration). Changed and new deployments start fresh. Build the new routes from
    /// the list returned.
    pub fn keep_unchanged(
        &self,
        deployments: Vec<Arc<DeploymentHealth>>,
    ) -> Vec<Arc<DeploymentHealth>> {
        deployments
            .into_iter()
            .map(|fresh| {
                self.deployments
                    .iter()
                    .find(|old| old.name() == fresh.name() && old.same_settings(&fresh))
                    .cloned()
                    .unwrap_or(fresh)
            })
            .collect()
    }

    /// Takes over `previous`'s retry budgets: each route of this router that `previous` has
    /// too keeps, per deployment still in it, the window its budget counted (when the budget's
    /// policy is unchanged). A reload does not hand a failing deployment fresh retries.
    pub fn keep_retry_budgets(self, previous: &Router) -> Router {
        for (alias, route) in &self.routes {
            let Some(old) = previous.routes.get(alias) else {
                continue;
            };
            for (deployment, budget) in &route.budgets {
                let Some(kept) = old.with_budget(deployment, |b| b.clone()) else {
                    continue;
                };
                let mut budget = budget.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.policy() == budget.policy() {
                    *budget = kept;
                }
            }
        }
        self
    }
}

#[cfg(test)]
mod tests;
