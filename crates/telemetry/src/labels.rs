//! Label values with a bounded number of distinct values per label.
//!
//! Every label value a series carries comes from a [`LabelValues`] table: the first `cap`
//! distinct values are kept as they are, and every value past that is folded into
//! [`OVERFLOW`]. That keeps the number of series bounded whatever clients and providers send,
//! at the price of lumping late newcomers together. Values are interned as `Arc<str>`, so a
//! label set costs reference-count bumps, not string copies.
//!
//! The label set types of every family live here too, so the names of labels are in one place.
//! Which record field feeds which label is decided in `series.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;

/// The value that stands for every value past a label's cap.
pub const OVERFLOW: &str = "other";

/// How many distinct values each label may take before new ones become [`OVERFLOW`].
///
/// Aliases, deployments and providers come from the configuration, so their caps are only a
/// guard against a misconfigured fleet; `served_models` comes from what providers report, and
/// `error_codes` from the gateway's closed set of error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub endpoints: usize,
    pub aliases: usize,
    pub deployments: usize,
    pub providers: usize,
    pub served_models: usize,
    pub error_codes: usize,
    /// Policy rules (detectors, tool rules, custom patterns): from the configuration.
    pub policy_rules: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            endpoints: 32,
            aliases: 256,
            deployments: 256,
            providers: 64,
            // A provider reports a dated version per model (`gpt-4o-2024-08-06`): a few per
            // alias in practice, so 128 leaves room without letting a provider that puts
            // request ids in the model name grow the series without bound.
            served_models: 128,
            error_codes: 64,
            policy_rules: 256,
        }
    }
}

/// One label's distinct values, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct LabelValues {
    cap: usize,
    /// foldhash, seeded per table: looked up several times per request, and bounded by `cap`.
    values: RwLock<HashMap<Box<str>, Arc<str>, foldhash::fast::RandomState>>,
    overflow: Arc<str>,
}

impl LabelValues {
    pub(crate) fn new(cap: usize) -> LabelValues {
        LabelValues {
            cap,
            values: RwLock::new(HashMap::default()),
            overflow: Arc::from(OVERFLOW),
        }
    }

    /// The interned `value`, admitting it if the table has room, else [`OVERFLOW`].
    pub(crate) fn get(&self, value: &str) -> Arc<str> {
        if let Some(known) = self.known(value) {
            return known;
        }
        let mut values = self.values.write();
        // Another request may have admitted it between the two locks.
        if let Some(known) = values.get(value) {
            return known.clone();
        }
        if values.len() >= self.cap {
            return self.overflow.clone();
        }
        let interned: Arc<str> = Arc::from(value);
        values.insert(Box::from(value), interned.clone());
        interned
    }

    /// The interned `value` if it was admitted before, else [`OVERFLOW`]; never admits it.
    pub(crate) fn get_known(&self, value: &str) -> Arc<str> {
        self.known(value).unwrap_or_else(|| self.overflow.clone())
    }

    fn known(&self, value: &str) -> Option<Arc<str>> {
        self.values.read().get(value).cloned()
    }
}

/// One interned table per label, with the shared empty value for absent fields.
#[derive(Debug)]
pub(crate) struct Labels {
    pub(crate) endpoints: LabelValues,
    pub(crate) aliases: LabelValues,
    pub(crate) deployments: LabelValues,
    pub(crate) providers: LabelValues,
    pub(crate) served_models: LabelValues,
    pub(crate) error_codes: LabelValues,
    pub(crate) policy_rules: LabelValues,
    /// An empty label value: Prometheus reads it as the label being absent.
    pub(crate) none: Arc<str>,
}

impl Labels {
    pub(crate) fn new(limits: Limits) -> Labels {
        Labels {
            endpoints: LabelValues::new(limits.endpoints),
            aliases: LabelValues::new(limits.aliases),
            deployments: LabelValues::new(limits.deployments),
            providers: LabelValues::new(limits.providers),
            served_models: LabelValues::new(limits.served_models),
            error_codes: LabelValues::new(limits.error_codes),
            policy_rules: LabelValues::new(limits.policy_rules),
            none: Arc::from(""),
        }
    }

    /// `value` through `table`, or the empty value when the field is absent.
    pub(crate) fn of(&self, table: &LabelValues, value: Option<&str>) -> Arc<str> {
        match value {
            Some(v) if !v.is_empty() => table.get(v),
            _ => self.none.clone(),
        }
    }
}

/// `sluice_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) endpoint: Arc<str>,
    pub(crate) alias: Arc<str>,
    pub(crate) deployment: Arc<str>,
    pub(crate) provider: Arc<str>,
    pub(crate) status: u16,
    pub(crate) error: Arc<str>,
}

/// The OpenTelemetry GenAI attributes shared by the `gen_ai_*` families, dots as underscores.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GenAiLabels {
    pub(crate) gen_ai_operation_name: &'static str,
    pub(crate) gen_ai_provider_name: Arc<str>,
    pub(crate) gen_ai_request_model: Arc<str>,
    pub(crate) gen_ai_response_model: Arc<str>,
}

/// `gen_ai_client_operation_duration_seconds`: the shared attributes plus `error.type`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GenAiOutcomeLabels {
    #[prometheus(flatten)]
    pub(crate) gen_ai: GenAiLabels,
    pub(crate) error_type: Arc<str>,
}

/// `gen_ai_client_token_usage`: the shared attributes plus `gen_ai.token.type`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GenAiTokenLabels {
    #[prometheus(flatten)]
    pub(crate) gen_ai: GenAiLabels,
    pub(crate) gen_ai_token_type: &'static str,
}

/// Series per deployment: attempts, and every render-time deployment gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeploymentLabels {
    pub(crate) deployment: Arc<str>,
    pub(crate) provider: Arc<str>,
}

/// `sluice_upstream_attempts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AttemptLabels {
    pub(crate) deployment: Arc<str>,
    pub(crate) provider: Arc<str>,
    pub(crate) outcome: Arc<str>,
}

/// `sluice_tokens_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub(crate) alias: Arc<str>,
    pub(crate) deployment: Arc<str>,
    pub(crate) r#type: &'static str,
}

/// `sluice_cost_usd_total`, `sluice_energy_joules_total`, `sluice_carbon_grams_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpendLabels {
    pub(crate) alias: Arc<str>,
    pub(crate) deployment: Arc<str>,
}

/// `sluice_policy_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PolicyLabels {
    pub(crate) alias: Arc<str>,
    pub(crate) policy: Arc<str>,
    pub(crate) rule: Arc<str>,
    pub(crate) action: &'static str,
    pub(crate) place: &'static str,
}

/// `sluice_schema_checks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SchemaLabels {
    pub(crate) provider: Arc<str>,
    pub(crate) deployment: Arc<str>,
    pub(crate) result: &'static str,
}

/// `sluice_usage_estimated_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EstimatedLabels {
    pub(crate) deployment: Arc<str>,
}

/// `sluice_connections_shed_total` (`reason`) and `sluice_connections_timed_out_total`
/// (`phase`): closed sets of values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) reason: &'static str,
}

/// `sluice_config_reloads_total` (`result`: `ok` or `invalid`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_become_other() {
        let table = LabelValues::new(2);
        assert_eq!(&*table.get("a"), "a");
        assert_eq!(&*table.get("b"), "b");
        assert_eq!(&*table.get("c"), OVERFLOW);
        // Admitted values stay themselves after the table is full.
        assert_eq!(&*table.get("a"), "a");
    }

    #[test]
    fn known_lookup_never_admits() {
        let table = LabelValues::new(8);
        assert_eq!(&*table.get_known("a"), OVERFLOW);
        assert_eq!(&*table.get("a"), "a");
        assert_eq!(&*table.get_known("a"), "a");
    }
}
