//! Admission and settlement: a request runs only if its worst case fits every budget and rate
//! limit of its caller, and what it actually used is counted when it ends.
//!
//! ```text
//! admit   limits of the caller's chain (org, team, project, key, end user) and of the alias
//!         -> worst case (prompt estimate + max output at the dearest candidate's price)
//!         -> one atomic reservation against every limit (sluice-policy's Counters)
//!         -> over a soft limit: the route's cheaper alias, planned and reserved instead
//! settle  Exchange::submit prices every attempt (cost, energy, carbon) into the record and
//!         settles the hold to what was used, on every path: finished, failed, cut, dropped
//! ```
//!
//! Budget rows live in the store; [`Gateway::reload_budgets`] rereads them (the CLI runs it on
//! a timer and when the store announces a change, the admin API after each change). Counting is `sluice-policy`'s; rendering
//! refusals and quota headers is `sluice-server`'s.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sluice_policy::budget::Level;
use sluice_policy::{
    Consumption, Counters, EnergyModel, HoldGuard, Limit, Metric, OnCounterError, PolicyError,
    PriceTable, Quota, Scope, UnixMs,
};
use sluice_routing::RoutePlan;
use sluice_store::BudgetRow;
use sluice_types::record::{AttemptOutcome, RequestRecord};
use sluice_types::{Money, Usage};
use tokio_util::task::TaskTracker;

use crate::operation::Operation;
use crate::{Caller, Exchange, Gateway, PipelineError};

/// A route's access and limit rules, from its configuration.
#[derive(Debug, Clone, Default)]
pub struct RouteRules {
    /// Only keys holding one of these roles may call the alias; empty: any key.
    pub roles: Vec<String>,
    /// Serves callers over a soft limit instead.
    pub over_soft_limit: Option<String>,
    /// The alias's own rate limits.
    pub limits: Vec<Limit>,
    /// The route's request-path hooks, in order.
    pub hooks: crate::hooks::Hooks,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Everything admission and settlement need, built once at start.
pub struct PolicyEngine {
    counters: Arc<dyn Counters>,
    on_counter_error: OnCounterError,
    /// Said in every refusal: how to ask for more.
    help: String,
    prices: PriceTable,
    energy: EnergyModel,
    regions: HashMap<String, String>,
    /// Deployment name -> (model, region), to price and estimate each attempt.
    /// Looked up several times per request (prices of every attempt; the route's rules at
    /// plan, admission and hooks): foldhash, not SipHash. The keys are the configuration's.
    deployments: FastMap<String, (String, Option<String>)>,
    routes: FastMap<String, RouteRules>,
    /// The budget rows read from the store: shared with the engines of later configurations,
    /// which read the same store.
    book: Arc<RwLock<Arc<Book>>>,
    /// Settlements and releases in flight, so shutdown can wait for them (shared likewise:
    /// one drain waits for every configuration's).
    tasks: TaskTracker,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("on_counter_error", &self.on_counter_error)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// What the CLI hands over to build the engine.
pub struct PolicyParts {
    pub counters: Arc<dyn Counters>,
    pub on_counter_error: OnCounterError,
    pub help: String,
    pub prices: PriceTable,
    pub energy: EnergyModel,
    /// Deployment name -> its region, for the carbon estimate (models come from the router).
    pub regions: HashMap<String, String>,
    /// Alias -> its rules.
    pub routes: HashMap<String, RouteRules>,
}

impl PolicyEngine {
    pub fn new(parts: PolicyParts) -> PolicyEngine {
        PolicyEngine {
            counters: parts.counters,
            on_counter_error: parts.on_counter_error,
            help: parts.help,
            prices: parts.prices,
            energy: parts.energy,
            regions: parts.regions,
            deployments: FastMap::default(),
            routes: parts.routes.into_iter().collect(),
            book: Arc::new(RwLock::new(Arc::new(Book::default()))),
            tasks: TaskTracker::new(),
        }
    }

    /// The engine of a new configuration: its prices, energy, regions and routes from
    /// `parts`; the budget rows and the settlements in flight this one's. `parts.counters`
    /// should be [`PolicyEngine::counters`]: counters keep running totals a reload must not
    /// reset.
    pub(crate) fn reconfigured(&self, parts: PolicyParts) -> PolicyEngine {
        PolicyEngine {
            book: self.book.clone(),
            tasks: self.tasks.clone(),
            ..PolicyEngine::new(parts)
        }
    }

    /// The budget counters (in process or Redis).
    pub fn counters(&self) -> &Arc<dyn Counters> {
        &self.counters
    }

    /// Learns each deployment's model (and region), to price its attempts.
    pub(crate) fn know_deployments<'a>(
        &mut self,
        deployments: impl Iterator<Item = &'a sluice_providers::Deployment>,
    ) {
        for d in deployments {
            let region = self.regions.get(&d.name).cloned();
            self.deployments
                .insert(d.name.clone(), (d.model.clone(), region));
        }
    }

    pub(crate) fn rules(&self, alias: &str) -> Option<&RouteRules> {
        self.routes.get(alias)
    }

    /// What `limit`'s current window holds now, reservations in flight included.
    pub async fn usage(&self, limit: &Limit) -> Result<u64, PolicyError> {
        self.counters.usage(limit, now()).await
    }

    /// Settlements still running (shutdown waits for them).
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn book(&self) -> Arc<Book> {
        self.book.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The budget rows, parsed and indexed by scope.
#[derive(Debug, Default)]
struct Book {
    /// level -> id -> limits; the id `*` is every key or end user. Keyed in two steps so a
    /// scope's rows are found by its borrowed id.
    limits: HashMap<Level, HashMap<String, Vec<BookLimit>>>,
}

#[derive(Debug, Clone)]
struct BookLimit {
    metric: Metric,
    period: sluice_policy::Period,
    model: Option<String>,
    amount: u64,
    soft: Option<u64>,
}

/// A budget row that could not be read, with why.
#[derive(Debug, thiserror::Error)]
#[error("budget `{scope}` {metric} {period}: {problem}")]
pub struct BadBudgetRow {
    pub scope: String,
    pub metric: String,
    pub period: String,
    pub problem: String,
}

/// A row as a limit (the scope as written: `*` stays `*`) and its soft amount.
pub fn parse_budget_row(row: &BudgetRow) -> Result<(Limit, Option<u64>), BadBudgetRow> {
    let bad = |problem: String| BadBudgetRow {
        scope: row.scope.clone(),
        metric: row.metric.clone(),
        period: row.period.clone(),
        problem,
    };
    let scope: Scope = row.scope.parse().map_err(|e| bad(format!("{e}")))?;
    let metric: Metric = row.metric.parse().map_err(|e| bad(format!("{e}")))?;
    let period: sluice_policy::Period = row.period.parse().map_err(|e| bad(format!("{e}")))?;
    let mut limit =
        Limit::new(scope, metric, row.amount, period).map_err(|e| bad(e.to_string()))?;
    if !row.model.is_empty() {
        limit = limit.for_model(row.model.clone());
    }
    if row.soft_amount.is_some_and(|soft| soft > row.amount) {
        return Err(bad("the soft limit is above the hard limit".into()));
    }
    Ok((limit, row.soft_amount))
}

impl Book {
    fn from_rows(rows: &[BudgetRow]) -> (Book, Vec<BadBudgetRow>) {
        let mut book = Book::default();
        let mut bad = Vec::new();
        for row in rows {
            match parse_budget_row(row) {
                Ok((limit, soft)) => book
                    .limits
                    .entry(limit.scope.level())
                    .or_default()
                    .entry(limit.scope.id().to_owned())
                    .or_default()
                    .push(BookLimit {
                        metric: limit.metric,
                        period: limit.period,
                        model: limit.model,
                        amount: limit.amount,
                        soft,
                    }),
                Err(e) => bad.push(e),
            }
        }
        (book, bad)
    }

    /// How many limits the book holds.
    fn rows(&self) -> usize {
        self.limits
            .values()
            .flat_map(HashMap::values)
            .map(Vec::len)
            .sum()
    }

    /// The limits of one scope: the rows of each of its [`Scope::row_ids`], most specific
    /// first (its own; for a tenant's end user, the same user id in every tenant; the `*` row
    /// of keys and end users), a row overriding a later one of the same metric, period and
    /// model; each bound to the scope.
    fn limits_of(&self, scope: &Scope, out: &mut Vec<(Limit, Option<u64>)>) {
        let Some(by_id) = self.limits.get(&scope.level()) else {
            return;
        };
        let first = out.len();
        for id in scope.row_ids() {
            let found = out.len();
            let rows = by_id.get(id);
            for entry in rows.into_iter().flatten() {
                let overridden = out[first..found].iter().any(|(o, _)| {
                    o.metric == entry.metric && o.period == entry.period && o.model == entry.model
                });
                if overridden {
                    continue;
                }
                out.push((
                    Limit {
                        scope: scope.clone(),
                        metric: entry.metric,
                        amount: entry.amount,
                        period: entry.period,
                        model: entry.model.clone(),
                    },
                    entry.soft,
                ));
            }
        }
    }
}

/// What admission decided, kept by the exchange: the hold to settle, and the quota state the
/// response headers report.
#[derive(Debug, Default)]
pub struct QuotaState {
    /// Each limit after this request's reservation, in chain order.
    pub quotas: Vec<Quota>,
    /// Set when the caller is over a soft limit: which one.
    pub over_soft_limit: Option<Limit>,
    /// The alias that served instead of the requested one (soft limit).
    pub degraded_to: Option<String>,
}

/// A request's place in the hierarchy, in the order its limits are charged.
fn chain(caller: &Caller, end_user: Option<&str>, alias: &str) -> Vec<Scope> {
    let key = &caller.key;
    let mut scopes = Vec::with_capacity(6);
    if let Some(org) = &key.organisation {
        scopes.push(Scope::Organisation(org.clone()));
    }
    if let Some(team) = &key.team {
        scopes.push(Scope::Team(team.clone()));
    }
    if let Some(project) = &key.project {
        scopes.push(Scope::Project(project.clone()));
    }
    scopes.push(Scope::Key(key.id.clone()));
    // End-user ids are chosen by clients: they are the key's tenant's, counted apart from
    // every other tenant's user of the same id.
    if let Some(user) = end_user.or(key.user.as_deref()) {
        scopes.push(Scope::end_user(key.tenant.as_str(), user));
    }
    scopes.push(Scope::Alias(alias.to_owned()));
    scopes
}

/// What admission decided: the route that serves (another one past a soft limit), the quota
/// state after the reservation, and the output bound it set, if any.
pub(crate) struct Held {
    pub plan: RoutePlan,
    pub quota: Arc<QuotaState>,
    pub max_tokens: Option<u32>,
}

/// A request's demand, estimated only once a limit needs it: the prompt estimate tokenizes the
/// request, which a route without limits never pays for.
pub(crate) struct LazyDemand<'a, Op> {
    request: &'a Op,
    demand: Option<Demand>,
}

impl<Op: Operation> LazyDemand<'_, Op> {
    fn get(&mut self) -> &mut Demand {
        self.demand.get_or_insert_with(|| self.request.demand())
    }

    /// The output bound, once estimated (`None`: no limit looked at it).
    fn bound(&self) -> Option<u32> {
        self.demand.and_then(|d| d.max_tokens)
    }
}

/// What a request may use, as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Demand {
    /// The prompt, counted before sending.
    pub input_tokens: u32,
    /// The output bound the client set; admission sets one when it must bound the request.
    pub max_tokens: Option<u32>,
    /// `false` for embeddings: no output tokens.
    pub generates: bool,
}

fn now() -> UnixMs {
    UnixMs(sluice_store::now_ms())
}

impl Gateway {
    /// Rereads the budget rows from the store; rows that cannot be read are skipped and
    /// returned. Returns how many limits are in force.
    pub async fn reload_budgets(&self) -> Result<(usize, Vec<BadBudgetRow>), PipelineError> {
        let rows = self.inner.store.budgets.budgets().await?;
        let (book, bad) = Book::from_rows(&rows);
        let count = book.rows();
        let engine = &self.config.policy;
        *engine.book.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(book);
        Ok((count, bad))
    }

    /// The policy engine: prices, energy, budgets.
    pub fn policy(&self) -> &PolicyEngine {
        &self.config.policy
    }

    /// Reserves the request's worst case against every limit of its caller and alias, and
    /// binds the hold to the exchange (it is settled with the record, on every path). Over a
    /// soft limit, the route's cheaper alias is planned (and reserved) instead, and returned.
    /// Without max tokens, a request under a spend or token limit gets its worst case as
    /// `max_tokens`, so the reservation bounds what it can use.
    pub(crate) async fn hold<Op: Operation>(
        &self,
        exchange: &mut Exchange,
        caller: &Caller,
        request: &Op,
        plan: RoutePlan,
    ) -> Result<Held, PipelineError> {
        let stream = request.stream();
        let end_user = exchange.end_user().map(str::to_owned);
        let end_user = end_user.as_deref();
        let mut demand = LazyDemand {
            request,
            demand: None,
        };
        let Some((hold, over_soft)) = self.reserve(caller, end_user, &mut demand, &plan).await?
        else {
            return Ok(Held {
                plan,
                quota: Arc::default(),
                max_tokens: demand.bound(),
            });
        };
        let cheaper = self
            .config
            .policy
            .rules(plan.alias())
            .and_then(|rules| rules.over_soft_limit.clone());
        let (Some(soft), Some(cheaper)) = (&over_soft, cheaper) else {
            let quota = QuotaState {
                quotas: hold.quotas().to_vec(),
                over_soft_limit: over_soft,
                degraded_to: None,
            };
            let quota = exchange.admitted(Some(hold), quota, None);
            return Ok(Held {
                plan,
                quota,
                max_tokens: demand.bound(),
            });
        };
        if let Err(e) = hold.release().await {
            tracing::warn!(error = %e, "releasing a hold moved to a cheaper alias failed");
        }
        let requested = plan.alias().to_string();
        let plan = self.config.router.plan(&cheaper, stream)?;
        let hold = self
            .reserve(caller, end_user, &mut demand, &plan)
            .await?
            .map(|(hold, _)| hold);
        let quota = QuotaState {
            quotas: hold.as_ref().map_or_else(Vec::new, |h| h.quotas().to_vec()),
            over_soft_limit: Some(soft.clone()),
            degraded_to: Some(cheaper),
        };
        // The record names the alias that served; `degraded_from` the one asked for.
        exchange.set_alias(plan.alias(), stream);
        let quota = exchange.admitted(hold, quota, Some(requested));
        Ok(Held {
            plan,
            quota,
            max_tokens: demand.bound(),
        })
    }

    /// One reservation for `plan`: `None` when no limit applies (or the counters failed open).
    async fn reserve<Op: Operation>(
        &self,
        caller: &Caller,
        end_user: Option<&str>,
        demand: &mut LazyDemand<'_, Op>,
        plan: &RoutePlan,
    ) -> Result<Option<(HoldGuard, Option<Limit>)>, PipelineError> {
        let engine = &self.config.policy;
        let book = engine.book();
        let mut limits: Vec<(Limit, Option<u64>)> = Vec::new();
        // Without budget rows no scope has limits: the chain is not built.
        if !book.limits.is_empty() {
            for scope in chain(caller, end_user, plan.alias()) {
                book.limits_of(&scope, &mut limits);
            }
        }
        if let Some(rules) = engine.rules(plan.alias()) {
            limits.extend(rules.limits.iter().map(|limit| (limit.clone(), None)));
        }
        if limits.is_empty() {
            return Ok(None);
        }
        let demand = demand.get();
        let bounded_output = limits
            .iter()
            .any(|(limit, _)| limit.metric != Metric::Requests);
        let deployments = plan.candidates.iter().map(|c| &c.health.deployment);
        let max_output = match (demand.generates, demand.max_tokens) {
            (false, _) => 0,
            (true, Some(max)) => max,
            (true, None) => deployments
                .clone()
                .map(|d| d.default_max_tokens)
                .max()
                .unwrap_or(0),
        };
        if bounded_output && demand.generates && demand.max_tokens.is_none() {
            demand.max_tokens = Some(max_output);
        }
        let input = demand.input_tokens;
        // A hedged route may also pay for the losing attempt's prompt.
        let hedged_input = if plan.policy().hedge.is_some() {
            input
        } else {
            0
        };
        let cost = deployments
            .filter_map(|d| engine.prices.lookup(&d.model))
            .map(|price| {
                price
                    .worst_case(input, max_output)
                    .saturating_add(price.worst_case(hedged_input, 0))
            })
            .max()
            .unwrap_or(Money::ZERO);
        let demand = Consumption {
            cost,
            tokens: u64::from(input) + u64::from(max_output) + u64::from(hedged_input),
        };
        let charges = sluice_policy::budget::plan_charges(
            limits.iter().map(|(limit, _)| limit),
            plan.alias(),
            &demand,
            now(),
        )
        .map_err(PipelineError::Policy)?;
        let hold = match engine.counters.reserve(&charges).await {
            Ok(hold) => hold,
            Err(PolicyError::Refused(refusal)) => {
                return Err(PipelineError::Refused {
                    refusal,
                    help: engine.help.clone(),
                });
            }
            // An answer about the tenant's own ids, not a counter failure: never admitted open.
            Err(e @ PolicyError::TooManyCounters { .. }) => {
                return Err(PipelineError::CounterCapacity(e));
            }
            Err(e) => match engine.on_counter_error {
                OnCounterError::Closed => {
                    tracing::debug!(error = %e, "budget counters failed; refused (on_counter_error = closed)");
                    return Err(PipelineError::CountersUnavailable(e));
                }
                OnCounterError::Open => {
                    tracing::debug!(error = %e, "budget counters failed; admitted unmetered (on_counter_error = open)");
                    return Ok(None);
                }
            },
        };
        let over_soft = hold.quotas().iter().find_map(|quota| {
            let soft = limits
                .iter()
                .find(|(limit, _)| *limit == quota.limit)
                .and_then(|(_, soft)| *soft)?;
            (quota.used > soft).then(|| quota.limit.clone())
        });
        let guard = HoldGuard::new(engine.counters.clone(), hold, engine.tasks.clone());
        Ok(Some((guard, over_soft)))
    }
}

/// Cost (when the model has a price), energy and carbon, and tokens, summed over attempts.
#[derive(Debug, Default, Clone, Copy)]
struct Priced {
    cost: Option<Money>,
    /// Micro-Wh and micro-g CO2e.
    energy: Option<(u64, u64)>,
    tokens: u64,
}

impl Priced {
    fn add(&mut self, other: Priced) {
        if let Some(cost) = other.cost {
            self.cost = Some(self.cost.unwrap_or(Money::ZERO).saturating_add(cost));
        }
        if let Some((uwh, ug)) = other.energy {
            let (total_uwh, total_ug) = self.energy.unwrap_or((0, 0));
            self.energy = Some((total_uwh.saturating_add(uwh), total_ug.saturating_add(ug)));
        }
        self.tokens = self.tokens.saturating_add(other.tokens);
    }
}

/// What a finished request used, priced: filled into the record, settled against the hold.
impl PolicyEngine {
    /// Prices every attempt of the record at its deployment's model (the served model when
    /// the deployment's is not in the table), and estimates its energy and carbon. Returns what
    /// the budgets are settled to: the cost and tokens of every attempt (a lost hedge's prompt
    /// included). Answers without attempts (embeddings) are priced from the record's usage.
    pub(crate) fn price(&self, record: &mut RequestRecord) -> Consumption {
        let record_usage = Usage {
            input_tokens: record.input_tokens.unwrap_or(0),
            output_tokens: record.output_tokens.unwrap_or(0),
            cached_input_tokens: record.cached_tokens.unwrap_or(0),
            ..Usage::default()
        };
        let served = record.deployment.as_deref();
        let served_model = record.served_model.as_deref();
        let mut total = Priced::default();
        let mut priced_served = false;
        for attempt in &mut record.attempts {
            if attempt.input_tokens.is_none() && attempt.output_tokens.is_none() {
                continue;
            }
            // The answering attempt is priced from the record's usage, cached tokens included
            // (a stream that failed after its first event answered too: its outcome is the
            // failure, its usage the record's).
            let usage = if !priced_served
                && attempt.outcome != AttemptOutcome::Cancelled
                && served == Some(attempt.deployment.as_str())
            {
                priced_served = true;
                record_usage
            } else {
                Usage {
                    input_tokens: attempt.input_tokens.unwrap_or(0),
                    output_tokens: attempt.output_tokens.unwrap_or(0),
                    ..Usage::default()
                }
            };
            let priced = self.price_usage(Some(&attempt.deployment), served_model, &usage);
            attempt.cost_micros = priced.cost.map(Money::micros);
            total.add(priced);
        }
        if !priced_served && (record_usage.input_tokens > 0 || record_usage.output_tokens > 0) {
            total.add(self.price_usage(served, served_model, &record_usage));
        }
        record.cost_micros = total.cost.map(Money::micros);
        record.energy_uwh = total.energy.map(|(uwh, _)| uwh);
        record.carbon_ug = total.energy.map(|(_, ug)| ug);
        Consumption {
            cost: total.cost.unwrap_or(Money::ZERO),
            tokens: total.tokens,
        }
    }

    /// One usage at a deployment's model and region.
    fn price_usage(
        &self,
        deployment: Option<&str>,
        served_model: Option<&str>,
        usage: &Usage,
    ) -> Priced {
        let known = deployment.and_then(|d| self.deployments.get(d));
        let model = known
            .map(|(model, _)| model.as_str())
            .or(served_model)
            .unwrap_or_default();
        let region = known.and_then(|(_, region)| region.as_deref());
        let price = self
            .prices
            .lookup(model)
            .or_else(|| served_model.and_then(|m| self.prices.lookup(m)));
        let estimate = self.energy.estimate(model, usage, region);
        Priced {
            cost: price.map(|p| p.cost(usage, sluice_policy::Tier::Standard)),
            energy: Some((estimate.energy_uwh, estimate.carbon_ug)),
            tokens: u64::from(usage.input_tokens) + u64::from(usage.output_tokens),
        }
    }

    /// Settles a hold (the record is already on its way): inline when the counters answer at
    /// once (in process), else in the background (Redis).
    pub(crate) fn settle(&self, hold: HoldGuard, used: Consumption) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime: dropping the guard logs that the reservation stays counted.
            drop(hold);
            return;
        };
        let mut settling = Box::pin(async move {
            if let Err(e) = hold.settle(used).await {
                tracing::warn!(error = %e, "settling a budget hold failed; its reservation stays counted");
            }
        });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if settling.as_mut().poll(&mut cx).is_pending() {
            // Polled again by the task, which registers its own waker.
            self.tasks.spawn_on(settling, &runtime);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scope: &str, metric: &str, period: &str, amount: u64) -> BudgetRow {
        BudgetRow::new(scope, metric, period, amount)
    }

    #[test]
    fn a_user_gets_the_default_limits_it_does_not_override() {
        let mut soft = row("user:*", "usd", "day", 1_000_000);
        soft.soft_amount = Some(800_000);
        let rows = [
            soft,
            row("user:*", "requests", "60s", 10),
            row("user:ana", "requests", "60s", 100),
            row("team:search", "tokens", "month", 1_000),
        ];
        let (book, bad) = Book::from_rows(&rows);
        assert!(bad.is_empty());
        let mut limits = Vec::new();
        book.limits_of(&Scope::EndUser("ana".into()), &mut limits);
        let mut seen: Vec<(Metric, u64, Option<u64>, String)> = limits
            .iter()
            .map(|(l, soft)| (l.metric, l.amount, *soft, l.scope.to_text()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (Metric::Usd, 1_000_000, Some(800_000), "user:ana".to_owned()),
                (Metric::Requests, 100, None, "user:ana".to_owned()),
            ]
        );
        let mut bob = Vec::new();
        book.limits_of(&Scope::EndUser("bob".into()), &mut bob);
        assert_eq!(bob.len(), 2);
        assert!(
            bob.iter()
                .all(|(l, _)| l.scope == Scope::EndUser("bob".into()))
        );
        // `*` is only for keys and end users: a team of that name is just a team.
        let mut teams = Vec::new();
        book.limits_of(&Scope::Team("other".into()), &mut teams);
        assert!(teams.is_empty());
    }

    #[test]
    fn a_tenants_end_user_gets_its_own_row_then_the_every_tenant_row_then_star() {
        let rows = [
            row("user:*", "requests", "day", 5),
            row("user:*", "tokens", "day", 1_000),
            row("user:bob", "requests", "day", 10),
            row("user:globex/bob", "requests", "day", 20),
        ];
        let (book, bad) = Book::from_rows(&rows);
        assert!(bad.is_empty());
        let seen = |tenant: &str, user: &str| {
            let scope = Scope::end_user(tenant, user);
            let mut limits = Vec::new();
            book.limits_of(&scope, &mut limits);
            assert!(limits.iter().all(|(l, _)| l.scope == scope));
            let mut seen: Vec<(Metric, u64)> =
                limits.iter().map(|(l, _)| (l.metric, l.amount)).collect();
            seen.sort();
            seen
        };
        assert_eq!(
            seen("acme", "bob"),
            [(Metric::Tokens, 1_000), (Metric::Requests, 10)]
        );
        assert_eq!(
            seen("globex", "bob"),
            [(Metric::Tokens, 1_000), (Metric::Requests, 20)]
        );
        assert_eq!(
            seen("acme", "ana"),
            [(Metric::Tokens, 1_000), (Metric::Requests, 5)]
        );
        // Each tenant's bob is a scope, and so a counter, of its own.
        assert_ne!(
            Scope::end_user("acme", "bob"),
            Scope::end_user("globex", "bob")
        );
    }

    #[test]
    fn rows_that_cannot_be_read_are_reported_not_enforced() {
        let mut soft_above = row("team:a", "usd", "day", 10);
        soft_above.soft_amount = Some(11);
        let rows = [
            row("galaxy:x", "usd", "day", 1),
            row("team:a", "euros", "day", 1),
            row("team:a", "usd", "fortnight", 1),
            soft_above,
            row("team:a", "requests", "day", 5),
        ];
        let (book, bad) = Book::from_rows(&rows);
        assert_eq!(bad.len(), 4);
        assert!(
            bad[3].to_string().contains("soft limit is above"),
            "{}",
            bad[3]
        );
        assert_eq!(book.rows(), 1);
    }
}
