//! The policy sections of the file: `[budgets]` (where counters live, what to do when they
//! cannot be reached), `[admin]` (the admin API's token), `[prices]`, `[energy]` and `[carbon]`
//! (overrides of the built-in tables), and each alias's `limits`, `roles` and
//! `over_soft_limit`.
//!
//! Budgets themselves are data, not configuration: `sluice budgets` and the admin API write
//! them to the store, and a running gateway rereads them every `budgets.reload_ms` (and at once
//! when a Postgres store announces a change).

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use sluice_policy::energy::EnergyCoefficients;
use sluice_policy::{EnergyModel, Limit, ModelPrice, OnCounterError, PriceTable, Scope};

use crate::FieldProblem;
use crate::file::{check, push};

/// `[budgets]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BudgetsSection {
    /// `memory` (one replica) or `redis` (replicas sharing one Redis).
    counters: String,
    redis_url: Option<String>,
    /// The variable holding the Redis URL, when it carries a password.
    redis_url_env: Option<String>,
    redis_prefix: String,
    redis_timeout_ms: u64,
    /// `closed` (refuse with 503) or `open` (admit unmetered) when the counters fail.
    on_counter_error: String,
    reload_ms: u64,
    /// In-process counters: the most entries kept for one tenant's end users.
    max_counters_per_tenant: usize,
    /// Said in every refusal after the numbers: how to ask for more.
    help: String,
}

impl Default for BudgetsSection {
    fn default() -> Self {
        BudgetsSection {
            counters: "memory".into(),
            redis_url: None,
            redis_url_env: None,
            redis_prefix: "{sluice}:".into(),
            redis_timeout_ms: 250,
            on_counter_error: "closed".into(),
            reload_ms: 5_000,
            max_counters_per_tenant: sluice_policy::counters::DEFAULT_MAX_COUNTERS_PER_TENANT,
            help: "To ask for more, contact the team that runs this gateway.".into(),
        }
    }
}

/// Where budget and rate-limit counters live.
#[derive(Debug, Clone)]
pub enum CounterBackend {
    /// In this process: exact for one replica.
    Memory,
    /// In one Redis shared by every replica.
    Redis {
        url: SecretString,
        prefix: String,
        timeout: Duration,
    },
}

/// `[budgets]`, validated.
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    pub counters: CounterBackend,
    pub on_counter_error: OnCounterError,
    /// How often a gateway rereads budgets from the store: all it has with SQLite, and the
    /// fallback for a missed announcement with Postgres.
    pub reload: Duration,
    /// In-process counters: the most entries kept for one tenant's end users (client-chosen
    /// ids); a new end user past it is refused until older windows end.
    pub max_counters_per_tenant: usize,
    pub help: String,
}

impl BudgetsSection {
    pub(crate) fn settings(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<FieldProblem>,
    ) -> BudgetSettings {
        let counters = match self.counters.as_str() {
            "memory" => CounterBackend::Memory,
            "redis" => {
                let url = match (&self.redis_url, &self.redis_url_env) {
                    (Some(url), None) => Some(url.clone()),
                    (None, Some(var)) => {
                        let value = env(var).filter(|v| !v.is_empty());
                        if value.is_none() {
                            push(
                                problems,
                                "budgets.redis_url_env".into(),
                                format!("environment variable `{var}` is not set"),
                            );
                        }
                        value
                    }
                    (Some(_), Some(_)) => {
                        push(
                            problems,
                            "budgets.redis_url".into(),
                            "set redis_url or redis_url_env, not both".into(),
                        );
                        None
                    }
                    (None, None) => {
                        push(
                            problems,
                            "budgets.redis_url".into(),
                            "required when counters = \"redis\" (or redis_url_env)".into(),
                        );
                        None
                    }
                };
                if let Some(url) = &url {
                    check(
                        problems,
                        url.starts_with("redis://") || url.starts_with("rediss://"),
                        "budgets.redis_url".into(),
                        "must start with redis:// or rediss://",
                    );
                }
                check(
                    problems,
                    self.redis_timeout_ms > 0,
                    "budgets.redis_timeout_ms".into(),
                    "must be greater than 0",
                );
                CounterBackend::Redis {
                    url: SecretString::from(url.unwrap_or_default()),
                    prefix: self.redis_prefix.clone(),
                    timeout: Duration::from_millis(self.redis_timeout_ms),
                }
            }
            other => {
                push(
                    problems,
                    "budgets.counters".into(),
                    format!("`{other}` is not a counter backend (memory, redis)"),
                );
                CounterBackend::Memory
            }
        };
        let on_counter_error = match self.on_counter_error.as_str() {
            "closed" => OnCounterError::Closed,
            "open" => OnCounterError::Open,
            other => {
                push(
                    problems,
                    "budgets.on_counter_error".into(),
                    format!("`{other}` is not a choice (closed, open)"),
                );
                OnCounterError::Closed
            }
        };
        check(
            problems,
            self.reload_ms > 0,
            "budgets.reload_ms".into(),
            "must be greater than 0",
        );
        check(
            problems,
            self.max_counters_per_tenant > 0,
            "budgets.max_counters_per_tenant".into(),
            "must be greater than 0",
        );
        BudgetSettings {
            counters,
            on_counter_error,
            reload: Duration::from_millis(self.reload_ms.max(1)),
            max_counters_per_tenant: self.max_counters_per_tenant,
            help: self.help.trim().to_owned(),
        }
    }
}

/// `[admin]`: the admin API answers only a bearer token read from `token_env`; without one it
/// is off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminSection {
    token_env: Option<String>,
}

/// Shortest admin token accepted: guessing must be out of reach.
const MIN_ADMIN_TOKEN_CHARS: usize = 24;

impl AdminSection {
    pub(crate) fn token(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<FieldProblem>,
    ) -> Option<SecretString> {
        let var = self.token_env.as_ref()?;
        match env(var) {
            Some(token) if token.chars().count() >= MIN_ADMIN_TOKEN_CHARS => {
                Some(SecretString::from(token))
            }
            Some(_) => {
                push(
                    problems,
                    "admin.token_env".into(),
                    format!(
                        "environment variable `{var}` holds fewer than {MIN_ADMIN_TOKEN_CHARS} characters"
                    ),
                );
                None
            }
            None => {
                push(
                    problems,
                    "admin.token_env".into(),
                    format!("environment variable `{var}` is not set"),
                );
                None
            }
        }
    }
}

/// `[prices."model"]`: USD per million tokens. Cached input and cache writes default to the
/// input rate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceSection {
    input_per_mtok: f64,
    output_per_mtok: f64,
    cached_input_per_mtok: Option<f64>,
    cache_write_per_mtok: Option<f64>,
    #[serde(default = "default_batch_discount")]
    batch_discount_percent: u8,
}

fn default_batch_discount() -> u8 {
    50
}

/// An amount as written in the file (USD, Wh) in millionths (micro-USD, micro-Wh); `None` if
/// negative, not a number, or too large to count exactly.
fn to_millionths(amount: f64) -> Option<i64> {
    (0.0..1e12)
        .contains(&amount)
        .then(|| (amount * 1e6).round() as i64)
}

pub(crate) fn price_table(
    sections: &BTreeMap<String, PriceSection>,
    problems: &mut Vec<FieldProblem>,
) -> PriceTable {
    let mut overrides = Vec::new();
    for (model, section) in sections {
        let at = |field: &str| format!("prices.{model}.{field}");
        let mut rate = |field: &str, value: f64| {
            to_millionths(value).unwrap_or_else(|| {
                push(
                    problems,
                    at(field),
                    "must be a number of USD, 0 or more".into(),
                );
                0
            })
        };
        let input = rate("input_per_mtok", section.input_per_mtok);
        let output = rate("output_per_mtok", section.output_per_mtok);
        let cached = section
            .cached_input_per_mtok
            .map_or(input, |v| rate("cached_input_per_mtok", v));
        let write = section
            .cache_write_per_mtok
            .map_or(input, |v| rate("cache_write_per_mtok", v));
        let mut price = ModelPrice::with_cache_rates(input, write, cached, output);
        price.batch_discount_percent = section.batch_discount_percent;
        check(
            problems,
            section.batch_discount_percent <= 100,
            at("batch_discount_percent"),
            "must be at most 100",
        );
        overrides.push((model.clone(), price));
    }
    PriceTable::with_overrides(overrides).unwrap_or_else(|e| {
        push(problems, "prices".into(), e.to_string());
        PriceTable::builtin()
    })
}

/// `[energy."model"]`: Wh per 1,000 tokens at the servers, before PUE.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnergySection {
    input_wh_per_1k: f64,
    output_wh_per_1k: f64,
}

/// `[carbon]`: grid intensities (gCO2e/kWh) by region, the intensity of unknown regions, and
/// the data centres' PUE.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CarbonSection {
    #[serde(default)]
    regions: BTreeMap<String, u32>,
    default_intensity: Option<u32>,
    pue: Option<f64>,
}

pub(crate) fn energy_model(
    energy: &BTreeMap<String, EnergySection>,
    carbon: &CarbonSection,
    problems: &mut Vec<FieldProblem>,
) -> EnergyModel {
    let mut models = Vec::new();
    for (model, section) in energy {
        let mut uwh = |field: &str, wh: f64| {
            to_millionths(wh).map_or_else(
                || {
                    push(
                        problems,
                        format!("energy.{model}.{field}"),
                        "must be a number of Wh, 0 or more".into(),
                    );
                    0
                },
                |micro| u64::try_from(micro).unwrap_or(0),
            )
        };
        models.push((
            model.clone(),
            EnergyCoefficients {
                input_uwh_per_1k: uwh("input_wh_per_1k", section.input_wh_per_1k),
                output_uwh_per_1k: uwh("output_wh_per_1k", section.output_wh_per_1k),
            },
        ));
    }
    let mut model = EnergyModel::builtin()
        .with_model_overrides(models)
        .with_region_overrides(carbon.regions.clone());
    if let Some(intensity) = carbon.default_intensity {
        model = model.with_default_intensity(intensity);
    }
    if let Some(pue) = carbon.pue {
        check(
            problems,
            (1.0..=3.0).contains(&pue),
            "carbon.pue".into(),
            "must be between 1.0 and 3.0",
        );
        model = model.with_pue_milli((pue * 1000.0).round() as u32);
    }
    model
}

/// An alias's `limits`: its own rate limits, whoever calls it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AliasLimitsSection {
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
}

impl AliasLimitsSection {
    pub(crate) fn limits(&self, alias: &str, problems: &mut Vec<FieldProblem>) -> Vec<Limit> {
        let scope = || Scope::Alias(alias.to_owned());
        let mut limits = Vec::new();
        let mut add = |field: &str, limit: Result<Limit, sluice_policy::PolicyError>| match limit {
            Ok(limit) => limits.push(limit),
            Err(e) => push(
                problems,
                format!("aliases.{alias}.limits.{field}"),
                e.to_string(),
            ),
        };
        if let Some(rpm) = self.requests_per_minute {
            add(
                "requests_per_minute",
                Limit::requests_per_minute(scope(), rpm),
            );
        }
        if let Some(tpm) = self.tokens_per_minute {
            add("tokens_per_minute", Limit::tokens_per_minute(scope(), tpm));
        }
        limits
    }
}
