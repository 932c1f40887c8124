//! The policy engine from settings: counters (in process or Redis), prices, energy, each
//! route's rules; and the task that keeps a running gateway's budgets in step with the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sluice_config::{CounterBackend, Settings};
use sluice_pipeline::{Gateway, PolicyEngine, PolicyParts, RouteRules};
use sluice_policy::Counters;
use sluice_policy::counters::{RedisCounters, RedisSettings};
use tokio_util::sync::CancellationToken;

/// The policy engine, and the count of its counters' failures (for `/metrics`).
pub(crate) async fn engine(
    settings: &Settings,
) -> anyhow::Result<(PolicyEngine, sluice_policy::counters::CounterErrors)> {
    let budgets = &settings.policy.budgets;
    let counters: Arc<dyn Counters> = match &budgets.counters {
        CounterBackend::Memory => Arc::new(sluice_policy::MemoryCounters::new()),
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
    for d in &settings.deployments {
        if settings.policy.prices.lookup(&d.model).is_none() {
            tracing::warn!(deployment = %d.name, model = %d.model, "no price for this model: its cost is not recorded and spend budgets do not count it (add it under [prices])");
        }
    }
    let engine = PolicyEngine::new(PolicyParts {
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
                };
                (alias.clone(), rules)
            })
            .collect::<HashMap<_, _>>(),
    });
    Ok((engine, counter_errors))
}

/// Loads the budgets once, then rereads them every `every` until `stop`.
pub(crate) async fn keep_budgets_loaded(
    gateway: Gateway,
    every: Duration,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (count, bad) = gateway.reload_budgets().await.context("loading budgets")?;
    for row in &bad {
        tracing::warn!(problem = %row, "budget row ignored");
    }
    tracing::info!(limits = count, "budgets loaded");
    Ok(tokio::spawn(async move {
        let mut last_bad = bad.len();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
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
    }))
}
