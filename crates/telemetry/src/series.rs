//! The families fed by finished requests: their names, help texts, buckets, and which field
//! of a [`RequestRecord`] goes where.
//!
//! Names follow Prometheus conventions (base unit in the name, `_total` on counters, added by
//! the encoder) and, for `gen_ai_*`, the OpenTelemetry GenAI semantic conventions translated the
//! way the OpenTelemetry Prometheus exporter does: dots become underscores, the unit `s`
//! becomes `_seconds`, and an annotation unit such as `{token}` is dropped. `docs/metrics.md`
//! lists every series; keep it in step with this file.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;

/// A counter of fractional amounts (dollars, joules, grams).
type FloatCounter = Counter<f64, std::sync::atomic::AtomicU64>;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sluice_types::record::RequestRecord;

use crate::labels::{
    AttemptLabels, DeploymentLabels, EstimatedLabels, GenAiLabels, GenAiOutcomeLabels,
    GenAiTokenLabels, Labels, PolicyLabels, RequestLabels, SchemaLabels, SpendLabels, TokenLabels,
};

/// `gen_ai.client.operation.duration` boundaries from the semantic conventions, plus three more
/// doublings up to 655.36 s, so that a request running into the default 600 s total upstream
/// timeout still lands in a finite bucket. Also used for attempts, so the two compare bucket
/// for bucket.
const DURATION_BUCKETS: [f64; 17] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84,
    327.68, 655.36,
];

/// `gen_ai.server.time_to_first_token` boundaries from the semantic conventions, plus 20, 40
/// and 80 s: reasoning models often think for longer than the conventions' last 10 s bucket.
const TTFT_BUCKETS: [f64; 19] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
];

/// `gen_ai.server.time_per_output_token` boundaries from the semantic conventions, with 1, 2.5
/// and 5 ms below them: hosted models stream a token every few milliseconds.
const TPOT_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// `gen_ai.client.token.usage` boundaries from the semantic conventions: powers of 4 from 1 to
/// 64 Mi tokens.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Label sets whose series handles are kept, per table of [`Handles`]: far more than a
/// configuration's aliases x deployments x statuses x error codes in practice.
const HANDLES_CAP: usize = 4096;

/// Builds a histogram with fixed boundaries; a named type because `Family` needs one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

type HistogramFamily<L> = Family<L, Histogram, Buckets>;

fn histograms<L: Clone + std::hash::Hash + Eq>(buckets: &'static [f64]) -> HistogramFamily<L> {
    Family::new_with_constructor(Buckets(buckets))
}

/// Every family fed by [`RequestRecord`]s. Cloning a family clones a handle to the same series.
#[derive(Debug)]
pub(crate) struct Series {
    requests: Family<RequestLabels, Counter>,
    operation_duration: HistogramFamily<GenAiOutcomeLabels>,
    token_usage: HistogramFamily<GenAiTokenLabels>,
    time_to_first_token: HistogramFamily<GenAiLabels>,
    time_per_output_token: HistogramFamily<GenAiLabels>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_duration: HistogramFamily<DeploymentLabels>,
    tokens: Family<TokenLabels, Counter>,
    usage_estimated: Family<EstimatedLabels, Counter>,
    policy_decisions: Family<PolicyLabels, Counter>,
    schema_checks: Family<SchemaLabels, Counter>,
    /// Cost (USD), energy (J), carbon (gCO2e): floats, as Prometheus wants base units.
    spend: [Family<SpendLabels, FloatCounter>; 3],
    by_request: Handles<RequestKey, RequestSeries>,
    by_attempt: Handles<AttemptLabels, AttemptSeries>,
}

impl Series {
    /// New, empty families, registered in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> Series {
        let series = Series {
            requests: Family::default(),
            operation_duration: histograms(&DURATION_BUCKETS),
            token_usage: histograms(&TOKEN_BUCKETS),
            time_to_first_token: histograms(&TTFT_BUCKETS),
            time_per_output_token: histograms(&TPOT_BUCKETS),
            attempts: Family::default(),
            attempt_duration: histograms(&DURATION_BUCKETS),
            tokens: Family::default(),
            usage_estimated: Family::default(),
            policy_decisions: Family::default(),
            schema_checks: Family::default(),
            spend: Default::default(),
            by_request: Handles::new(HANDLES_CAP),
            by_attempt: Handles::new(HANDLES_CAP),
        };
        registry.register(
            "sluice_requests",
            "Requests that ended, by endpoint, alias, the deployment that answered (or was tried \
             last), HTTP status and error code",
            series.requests.clone(),
        );
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "GenAI operation duration: the whole request, as the gateway measured it",
            Unit::Seconds,
            series.operation_duration.clone(),
        );
        registry.register(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used per request",
            series.token_usage.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time to the first token of a successful stream, from the request's arrival",
            Unit::Seconds,
            series.time_to_first_token.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first one, for successful streams",
            Unit::Seconds,
            series.time_per_output_token.clone(),
        );
        registry.register(
            "sluice_upstream_attempts",
            "Upstream attempts, by deployment and outcome (ok, or the error code)",
            series.attempts.clone(),
        );
        registry.register_with_unit(
            "sluice_upstream_attempt_duration",
            "Duration of one upstream attempt",
            Unit::Seconds,
            series.attempt_duration.clone(),
        );
        registry.register(
            "sluice_tokens",
            "Tokens by alias, deployment and type (input, output, cached; cached is part of input)",
            series.tokens.clone(),
        );
        let [cost, energy, carbon] = &series.spend;
        registry.register(
            "sluice_cost_usd",
            "Cost of requests at list price, every attempt included (lost hedges' prompts too)",
            cost.clone(),
        );
        registry.register(
            "sluice_energy_joules",
            "Estimated energy of requests, data-centre overhead (PUE) included",
            energy.clone(),
        );
        registry.register(
            "sluice_carbon_grams",
            "Estimated location-based emissions of requests, in grams of CO2e",
            carbon.clone(),
        );
        registry.register(
            "sluice_usage_estimated",
            "Requests whose token counts the gateway estimated because the provider reported none",
            series.usage_estimated.clone(),
        );
        registry.register(
            "sluice_policy_decisions",
            "Findings of the routes' policies (DLP, tool policy, stop sequences, structured \
             output), by alias, policy, rule, action and where: counts, never values",
            series.policy_decisions.clone(),
        );
        registry.register(
            "sluice_schema_checks",
            "Answers to structured requests checked against their schema, by provider, \
             deployment and result (valid, repaired, invalid): dialect drift per deployment",
            series.schema_checks.clone(),
        );
        series
    }

    /// Counts one finished request. A few interned label lookups, then one lookup for the
    /// request's series and one per attempt (see [`Handles`]); nothing here allocates once a
    /// label set has been seen.
    pub(crate) fn observe(&self, labels: &Labels, record: &RequestRecord) {
        let last_attempt = record.attempts.last();
        let routed = record.deployment.is_some() || last_attempt.is_some();
        // The deployment that answered; for a request that failed upstream, the last one tried.
        let deployment = record
            .deployment
            .as_deref()
            .or(last_attempt.map(|a| a.deployment.as_str()));
        let provider = record
            .provider
            .as_deref()
            .or(last_attempt.map(|a| a.provider.as_str()));

        let deployment = labels.of(&labels.deployments, deployment);
        let provider = labels.of(&labels.providers, provider);
        // An alias is whatever the client asked for; only one that routed somewhere (so one the
        // configuration knows) may add a value, or a client could mint series at will.
        let alias = match record.alias.as_deref() {
            Some(a) if !a.is_empty() && !routed => labels.aliases.get_known(a),
            other => labels.of(&labels.aliases, other),
        };
        let error = labels.of(&labels.error_codes, record.error_code.map(|c| c.as_str()));
        let endpoint = labels.of(&labels.endpoints, Some(record.endpoint.as_str()));

        for attempt in &record.attempts {
            let key = AttemptLabels {
                deployment: labels.deployments.get(&attempt.deployment),
                provider: labels.providers.get(&attempt.provider),
                outcome: labels.error_codes.get(attempt.outcome.as_str()),
            };
            let series = self.by_attempt.get(&key);
            series
                .duration
                .get_or_init(|| {
                    self.attempt_duration
                        .get_or_create_owned(&DeploymentLabels {
                            deployment: key.deployment.clone(),
                            provider: key.provider.clone(),
                        })
                })
                .observe(seconds(attempt.latency_us));
            series
                .count
                .get_or_init(|| self.attempts.get_or_create_owned(&key))
                .inc();
            if let Some(check) = attempt.schema {
                // Rare next to attempts: looked up per check.
                self.schema_checks
                    .get_or_create(&SchemaLabels {
                        provider: key.provider.clone(),
                        deployment: key.deployment.clone(),
                        result: check.as_str(),
                    })
                    .inc();
            }
        }

        // GenAI series describe calls to a model: nothing to say about a request that never
        // reached a provider (rejected at admission) or isn't an inference call.
        let gen_ai = record
            .endpoint
            .gen_ai_operation()
            .filter(|_| routed)
            .map(|operation| GenAiLabels {
                gen_ai_operation_name: operation,
                gen_ai_provider_name: provider.clone(),
                gen_ai_request_model: alias.clone(),
                gen_ai_response_model: labels
                    .of(&labels.served_models, record.served_model.as_deref()),
            });
        let key = RequestKey {
            request: RequestLabels {
                endpoint,
                alias,
                deployment,
                provider,
                status: record.status,
                error,
            },
            gen_ai,
        };
        let series = self.by_request.get(&key);
        series
            .requests
            .get_or_init(|| self.requests.get_or_create_owned(&key.request))
            .inc();
        self.observe_tokens(&key.request, &series, record);
        self.observe_spend(&key.request, &series, record);
        if let Some(gen_ai) = &key.gen_ai {
            self.observe_gen_ai(gen_ai, &key.request.error, &series, record);
        }
        self.observe_policy(labels, &key.request.alias, record);
    }

    /// Policy decisions: rare next to requests, so looked up per decision.
    fn observe_policy(&self, labels: &Labels, alias: &Arc<str>, record: &RequestRecord) {
        for decision in record.policy.decisions() {
            self.policy_decisions
                .get_or_create(&PolicyLabels {
                    alias: alias.clone(),
                    policy: labels.policy_rules.get(&decision.policy),
                    rule: labels.policy_rules.get(&decision.rule),
                    action: decision.action.as_str(),
                    place: decision.place.as_str(),
                })
                .inc_by(u64::from(decision.count));
        }
    }

    fn observe_tokens(
        &self,
        request: &RequestLabels,
        series: &RequestSeries,
        record: &RequestRecord,
    ) {
        let counts = [
            ("input", record.input_tokens),
            ("output", record.output_tokens),
            ("cached", record.cached_tokens),
        ];
        for ((kind, count), counter) in counts.into_iter().zip(&series.tokens) {
            if let Some(count) = count {
                counter
                    .get_or_init(|| {
                        self.tokens.get_or_create_owned(&TokenLabels {
                            alias: request.alias.clone(),
                            deployment: request.deployment.clone(),
                            r#type: kind,
                        })
                    })
                    .inc_by(u64::from(count));
            }
        }
        if record.usage_estimated {
            series
                .usage_estimated
                .get_or_init(|| {
                    self.usage_estimated.get_or_create_owned(&EstimatedLabels {
                        deployment: request.deployment.clone(),
                    })
                })
                .inc();
        }
    }

    /// Cost, energy and carbon, from the record's micro-units to base units.
    fn observe_spend(
        &self,
        request: &RequestLabels,
        series: &RequestSeries,
        record: &RequestRecord,
    ) {
        let amounts = [
            record.cost_micros.map(|micros| micros as f64 / 1e6),
            // 1 Wh is 3,600 J.
            record.energy_uwh.map(|uwh| uwh as f64 * 3_600.0 / 1e6),
            record.carbon_ug.map(|ug| ug as f64 / 1e6),
        ];
        for ((amount, counter), family) in amounts.into_iter().zip(&series.spend).zip(&self.spend) {
            if let Some(amount) = amount.filter(|a| *a > 0.0) {
                counter
                    .get_or_init(|| {
                        family.get_or_create_owned(&SpendLabels {
                            alias: request.alias.clone(),
                            deployment: request.deployment.clone(),
                        })
                    })
                    .inc_by(amount);
            }
        }
    }

    fn observe_gen_ai(
        &self,
        gen_ai: &GenAiLabels,
        error: &Arc<str>,
        series: &RequestSeries,
        record: &RequestRecord,
    ) {
        let succeeded = record.error_code.is_none();
        if succeeded && let Some(ttft_us) = record.ttft_us {
            series
                .time_to_first_token
                .get_or_init(|| self.time_to_first_token.get_or_create_owned(gen_ai))
                .observe(seconds(ttft_us));
            // Decode speed: the time after the first token, spread over the tokens after it.
            if let Some(output) = record.output_tokens
                && output > 1
                && record.latency_us > ttft_us
            {
                let per_token = seconds(record.latency_us - ttft_us) / f64::from(output - 1);
                series
                    .time_per_output_token
                    .get_or_init(|| self.time_per_output_token.get_or_create_owned(gen_ai))
                    .observe(per_token);
            }
        }
        let tokens = [
            ("input", record.input_tokens),
            ("output", record.output_tokens),
        ];
        for ((kind, count), histogram) in tokens.into_iter().zip(&series.token_usage) {
            if let Some(count) = count {
                histogram
                    .get_or_init(|| {
                        self.token_usage.get_or_create_owned(&GenAiTokenLabels {
                            gen_ai: gen_ai.clone(),
                            gen_ai_token_type: kind,
                        })
                    })
                    .observe(f64::from(count));
            }
        }
        series
            .operation_duration
            .get_or_init(|| {
                self.operation_duration
                    .get_or_create_owned(&GenAiOutcomeLabels {
                        gen_ai: gen_ai.clone(),
                        error_type: error.clone(),
                    })
            })
            .observe(seconds(record.latency_us));
    }
}

/// What decides every series a request feeds: its `sluice_requests_total` labels, plus the
/// GenAI attributes when it called a model.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RequestKey {
    request: RequestLabels,
    gen_ai: Option<GenAiLabels>,
}

/// The series of one [`RequestKey`], each taken from its family the first time a request
/// counts something in it (so a series still appears only once something was counted).
#[derive(Debug, Default)]
struct RequestSeries {
    requests: OnceLock<Counter>,
    /// Input, output, cached.
    tokens: [OnceLock<Counter>; 3],
    usage_estimated: OnceLock<Counter>,
    /// Cost, energy, carbon.
    spend: [OnceLock<FloatCounter>; 3],
    time_to_first_token: OnceLock<Histogram>,
    time_per_output_token: OnceLock<Histogram>,
    /// Input, output.
    token_usage: [OnceLock<Histogram>; 2],
    operation_duration: OnceLock<Histogram>,
}

/// The series of one attempt's labels.
#[derive(Debug, Default)]
struct AttemptSeries {
    duration: OnceLock<Histogram>,
    count: OnceLock<Counter>,
}

/// Series handles by label set. A family lookup hashes and compares the whole label set, and a
/// request feeds up to a dozen families: this finds all of a request's series with one lookup.
/// Counters and histograms are shared handles, so a handle kept here counts in its family.
///
/// Bounded by `cap` label sets (the label caps already bound them; this bounds the product):
/// past it, a new label set gets handles that are not kept, i.e. one family lookup each, as
/// without this table.
#[derive(Debug)]
struct Handles<K, V> {
    cap: usize,
    /// foldhash, seeded per table: one lookup per request, bounded by `cap`.
    map: RwLock<HashMap<K, Arc<V>, foldhash::fast::RandomState>>,
}

impl<K: Hash + Eq + Clone, V: Default> Handles<K, V> {
    fn new(cap: usize) -> Handles<K, V> {
        Handles {
            cap,
            map: RwLock::new(HashMap::default()),
        }
    }

    fn get(&self, key: &K) -> Arc<V> {
        if let Some(found) = self.map.read().get(key) {
            return found.clone();
        }
        let mut map = self.map.write();
        // Another request may have added it between the two locks.
        if let Some(found) = map.get(key) {
            return found.clone();
        }
        let series = Arc::new(V::default());
        if map.len() < self.cap {
            map.insert(key.clone(), series.clone());
        }
        series
    }
}

/// Microseconds as the seconds Prometheus expects; the `as` is exact below 2^53 µs (285 years).
fn seconds(us: u64) -> f64 {
    us as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_past_the_cap_are_handed_out_but_not_kept() {
        let handles: Handles<u32, OnceLock<u32>> = Handles::new(1);
        handles.get(&1).get_or_init(|| 10);
        assert_eq!(handles.get(&1).get(), Some(&10));
        handles.get(&2).get_or_init(|| 20);
        assert_eq!(
            handles.get(&2).get(),
            None,
            "past the cap: a fresh one each time"
        );
        assert_eq!(handles.get(&1).get(), Some(&10));
    }
}
