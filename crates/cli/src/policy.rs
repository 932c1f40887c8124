//! The policy engine from settings: counters (in process or Redis), prices, energy, each
//! route's rules ([`policy_parts`], again on each configuration reload); and the task that
//! keeps a running gateway's budgets in step with the store (on a timer, and at once when the
//! store announces a change).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sluice_config::{CounterBackend, Settings};
use sluice_pipeline::hooks::RequestSize;
use sluice_pipeline::hooks::dlp::{Actions, Dlp, DlpAction, Overrides};
use sluice_pipeline::hooks::stops::StopGuard;
use sluice_pipeline::hooks::tools::ToolGuard;
use sluice_pipeline::{Gateway, Hook, Hooks, PolicyEngine, PolicyParts, RouteRules};
use sluice_policy::Counters;
use sluice_policy::counters::{RedisCounters, RedisSettings};
use sluice_store::{BudgetChange, BudgetChanges};
use tokio_util::sync::CancellationToken;

/// The policy engine, the count of its counters' failures and entries (for `/metrics`), and
/// the counters themselves (to rebuild them from the records).
pub(crate) async fn engine(
    settings: &Settings,
) -> anyhow::Result<(
    PolicyEngine,
    sluice_policy::counters::CounterErrors,
    sluice_policy::counters::CounterEntries,
    Arc<dyn Counters>,
)> {
    let budgets = &settings.policy.budgets;
    // Redis counters' keys expire with their windows; only in-process ones count entries.
    let mut entries = sluice_policy::counters::CounterEntries::default();
    let counters: Arc<dyn Counters> = match &budgets.counters {
        CounterBackend::Memory => {
            let counters =
                sluice_policy::MemoryCounters::with_max_per_tenant(budgets.max_counters_per_tenant);
            entries = counters.entries();
            Arc::new(counters)
        }
        CounterBackend::Redis {
            url,
            prefix,
            timeout,
        } => {
            let mut redis = RedisSettings::new(url.expose_secret());
            redis.key_prefix = prefix.clone();
            redis.response_timeout = *timeout;
            let counters = RedisCounters::connect(&redis)
                .await
                .context("connecting to the budget counters' Redis (budgets.redis_url)")?;
            tracing::info!(prefix = %prefix, "budget counters in Redis");
            Arc::new(counters)
        }
    };
    // Failures are counted and logged at a bounded rate, whichever the backend.
    let observed = sluice_policy::counters::ObservedCounters::new(counters);
    let counter_errors = observed.errors();
    let counters: Arc<dyn Counters> = Arc::new(observed);
    let engine = PolicyEngine::new(policy_parts(settings, counters.clone()));
    Ok((engine, counter_errors, entries, counters))
}

/// What the policy engine takes from the configuration, with `counters` (built at start and
/// kept by every reload). Warns about each deployment whose model has no price.
pub(crate) fn policy_parts(settings: &Settings, counters: Arc<dyn Counters>) -> PolicyParts {
    let budgets = &settings.policy.budgets;
    for d in &settings.deployments {
        if settings.policy.prices.lookup(&d.model).is_none() {
            tracing::warn!(deployment = %d.name, model = %d.model, "no price for this model: its cost is not recorded and spend budgets do not count it (add it under [prices])");
        }
    }
    let scanner = settings.policy.dlp.scanner.as_ref();
    PolicyParts {
        counters,
        on_counter_error: budgets.on_counter_error,
        help: budgets.help.clone(),
        prices: settings.policy.prices.clone(),
        energy: settings.policy.energy.clone(),
        regions: settings
            .deployments
            .iter()
            .filter_map(|d| Some((d.name.clone(), d.region.clone()?)))
            .collect(),
        routes: settings
            .aliases
            .iter()
            .map(|(alias, route)| {
                let rules = RouteRules {
                    roles: route.roles.clone(),
                    over_soft_limit: route.over_soft_limit.clone(),
                    limits: route.limits.clone(),
                    hooks: route_hooks(route, &settings.deployments, scanner),
                };
                (alias.clone(), rules)
            })
            .collect::<HashMap<_, _>>(),
    }
}

/// A route's request-path hooks from its configuration, in the order they run: the cheap
/// refusal first; DLP next, so that the hooks after it see the answer with the client's own
/// values restored; the stop-sequence guard before tool policy, so that tool calls a stop
/// sequence would have prevented are never judged.
fn route_hooks(
    route: &sluice_config::AliasSettings,
    deployments: &[sluice_config::DeploymentSettings],
    scanner: Option<&Arc<sluice_dlp::Scanner>>,
) -> Hooks {
    let mut hooks: Vec<Arc<dyn Hook>> = Vec::new();
    if let Some(max_input_tokens) = route.max_input_tokens {
        hooks.push(Arc::new(RequestSize { max_input_tokens }));
    }
    if let (Some(dlp), Some(scanner)) = (&route.dlp, scanner) {
        hooks.push(Arc::new(dlp_hook(dlp, scanner.clone())));
    }
    // Any deployment of the route may serve a request: send only what all of them accept.
    let max_upstream = route
        .deployments()
        .filter_map(|d| deployments.get(d)?.max_stop_sequences)
        .min();
    hooks.push(Arc::new(StopGuard {
        on_collision: route.stop_sequences,
        max_upstream,
    }));
    if let Some(policy) = &route.tool_policy {
        hooks.push(Arc::new(ToolGuard {
            policy: policy.clone(),
        }));
    }
    Hooks::new(hooks)
}

fn dlp_hook(route: &sluice_config::RouteDlp, scanner: Arc<sluice_dlp::Scanner>) -> Dlp {
    use sluice_config::DlpAction as Configured;
    // `off`: the detector is not acted on.
    let action = |configured: &Configured| match configured {
        Configured::Redact => Some(DlpAction::Redact),
        Configured::Pseudonymise => Some(DlpAction::Pseudonymise),
        Configured::Block => Some(DlpAction::Block),
        Configured::Log => Some(DlpAction::Log),
        Configured::Off => None,
    };
    let actions: Actions = route
        .actions
        .iter()
        .filter_map(|(name, configured)| Some((name.clone(), action(configured)?)))
        .collect();
    let roles = route
        .roles
        .iter()
        .map(|(role, overrides)| {
            let overrides: Overrides = overrides
                .iter()
                .map(|(name, configured)| (name.clone(), action(configured)))
                .collect();
            (role.clone(), overrides)
        })
        .collect();
    Dlp::new(scanner, actions, roles, route.answers)
}

/// Every alias's own limits.
fn alias_limits(settings: &Settings) -> Vec<sluice_policy::Limit> {
    settings
        .aliases
        .values()
        .flat_map(|route| route.limits.iter().cloned())
        .collect()
}

/// Rebuilds budget counters that lost the deployment's state from the request records: at
/// start (in-process counters start empty; a Redis may have restarted empty while the gateway
/// was down) and whenever Redis is found to have lost its data.
#[derive(Clone)]
pub(crate) struct CounterRebuild {
    store: sluice_store::Stores,
    counters: Arc<dyn Counters>,
    /// Each alias's own limits, from the configuration in force (a reload replaces them).
    alias_limits: Arc<std::sync::RwLock<Vec<sluice_policy::Limit>>>,
}

impl CounterRebuild {
    pub(crate) fn new(
        settings: &Settings,
        store: sluice_store::Stores,
        counters: Arc<dyn Counters>,
    ) -> CounterRebuild {
        CounterRebuild {
            store,
            counters,
            alias_limits: Arc::new(std::sync::RwLock::new(alias_limits(settings))),
        }
    }

    /// Takes the alias limits of a reloaded configuration.
    pub(crate) fn set_alias_limits(&self, settings: &Settings) {
        *self
            .alias_limits
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = alias_limits(settings);
    }

    /// Rebuilds the counters if they do not hold the deployment's state; returns how many
    /// counters were restored (`None`: they held it).
    pub(crate) async fn run_if_lost(&self) -> anyhow::Result<Option<usize>> {
        use sluice_policy::counters::rebuild::{LimitBook, RecordedUsage, restorations};
        if !self.counters.claim_rebuild().await? {
            return Ok(None);
        }
        let rows = self
            .store
            .budgets
            .budgets()
            .await
            .context("reading the budget rows")?;
        let alias_limits = self
            .alias_limits
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let limits = rows
            .iter()
            .filter_map(|row| sluice_pipeline::admission::parse_budget_row(row).ok())
            .map(|(limit, _)| limit)
            .chain(alias_limits);
        let book = LimitBook::new(limits);
        if book.is_empty() {
            return Ok(Some(0));
        }
        let now = sluice_policy::UnixMs(sluice_store::now_ms());
        let usage = self
            .store
            .charged
            .charged_usage(book.earliest_start(now).0, book.granularity_ms())
            .await
            .context("reading the request records")?;
        let usage = usage.into_iter().map(|u| RecordedUsage {
            tenant: u.tenant,
            organisation: u.organisation,
            team: u.team,
            project: u.project,
            key: u.key_id,
            end_user: u.user,
            alias: u.alias,
            at: sluice_policy::UnixMs(u.slot_start),
            requests: u.requests,
            tokens: u.tokens,
            cost_micros: u.cost_micros,
        });
        let restores = restorations(&book, usage, now)?;
        self.counters.restore(&restores).await?;
        Ok(Some(restores.len()))
    }

    /// [`CounterRebuild::run_if_lost`], logging what it did.
    pub(crate) async fn run_and_log(&self) {
        match self.run_if_lost().await {
            Ok(Some(restored)) => {
                tracing::info!(
                    counters = restored,
                    "budget counters rebuilt from the request records"
                )
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "rebuilding budget counters failed")
            }
        }
    }
}

/// Announcements that arrive within this of the first are read with it: a script setting many
/// rows costs a reread every 100 ms, not one per row, and a single change is in force well
/// within the second the product promises.
const ANNOUNCED_BURST: Duration = Duration::from_millis(100);

/// Loads the budgets once, then rereads them every `every`, and soon after the store announces
/// a change (`changes`: Postgres, a change made through any replica or the CLI), until `stop`.
/// On each tick of `every`, rebuilds the counters if they lost their state (a Redis that
/// restarted empty or was flushed). One task does every reread, so an older read never
/// replaces a newer one.
pub(crate) async fn keep_budgets_loaded(
    gateway: Gateway,
    every: Duration,
    changes: Option<BudgetChanges>,
    rebuild: CounterRebuild,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (count, bad) = gateway.reload_budgets().await.context("loading budgets")?;
    for row in &bad {
        tracing::warn!(problem = %row, "budget row ignored");
    }
    tracing::info!(limits = count, "budgets loaded");
    #[expect(
        clippy::disallowed_methods,
        reason = "owned: serve cancels `stop` and awaits the JoinHandle at shutdown"
    )]
    let task = tokio::spawn(async move {
        let mut changes = changes;
        let mut last_bad = bad.len();
        // An interval, not a sleep per turn: announcements do not put the ticks (and the
        // counters' rebuild check) off.
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = poll.tick() => rebuild.run_and_log().await,
                change = next_change(&mut changes) => match change {
                    Some(change) => {
                        tracing::debug!(?change, "budget change announced");
                        if let Some(more) = changes.as_mut() {
                            fold_burst(more).await;
                        }
                    }
                    None => {
                        changes = None;
                        continue;
                    }
                },
            }
            match gateway.reload_budgets().await {
                Ok((_, bad)) => {
                    if bad.len() != last_bad {
                        for row in &bad {
                            tracing::warn!(problem = %row, "budget row ignored");
                        }
                        last_bad = bad.len();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rereading budgets failed; the last ones stay in force")
                }
            }
        }
    });
    Ok(task)
}

/// The next announced change; never, without announcements.
async fn next_change(changes: &mut Option<BudgetChanges>) -> Option<BudgetChange> {
    match changes {
        Some(changes) => changes.next().await,
        None => std::future::pending().await,
    }
}

/// Takes the announcements that arrive within [`ANNOUNCED_BURST`]: one reread covers them.
async fn fold_burst(changes: &mut BudgetChanges) {
    let settled = tokio::time::sleep(ANNOUNCED_BURST);
    tokio::pin!(settled);
    loop {
        tokio::select! {
            () = &mut settled => return,
            change = changes.next() => match change {
                Some(change) => tracing::debug!(?change, "budget change announced"),
                None => return,
            },
        }
    }
}
