use std::collections::{BTreeMap, HashMap};

use sluice_types::record::{AttemptOutcome, AttemptRecord, Endpoint, ErrorCode, RequestRecord};
use sluice_types::{Dialect, ErrorKind};

use super::*;

/// One sample's full label set and its value.
type Sample = (BTreeMap<String, String>, f64);

/// One scrape, parsed line by line: samples keyed by name.
struct Scrape {
    samples: HashMap<String, Vec<Sample>>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn of(metrics: &Metrics) -> Scrape {
        Scrape::parse(&metrics.render(&[], QueueCounts::default()))
    }

    fn parse(text: &str) -> Scrape {
        let mut samples: HashMap<_, Vec<_>> = HashMap::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{name} typed twice"
                );
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
                None => (series, BTreeMap::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            samples
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Scrape { samples, types }
    }

    /// The value of the sample with exactly these labels (an empty value may be left out).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<f64> = self
            .samples
            .get(name)?
            .iter()
            .filter(|(have, _)| {
                let have: BTreeMap<_, _> = have
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                have == want
            })
            .map(|(_, v)| *v)
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} appears {} times",
            found.len()
        );
        found.first().copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "no sample {name}{labels:?}; have {:?}",
                self.samples.get(name)
            )
        })
    }

    fn series(&self, name: &str) -> usize {
        self.samples.get(name).map_or(0, Vec::len)
    }

    /// Every value a label takes across a family's samples.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(labels, _)| labels.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap();
        let end = after.find('"').unwrap();
        labels.insert(key.to_owned(), after[..end].to_owned());
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

/// An attempt built from JSON, so that fields added to `AttemptRecord` later (optional or
/// defaulted, as stored rows require) don't break these tests.
fn attempt(
    deployment: &str,
    provider: &str,
    outcome: AttemptOutcome,
    status: u16,
    latency_us: u64,
) -> AttemptRecord {
    serde_json::from_value(serde_json::json!({
        "deployment": deployment,
        "provider": provider,
        "outcome": outcome,
        "status": status,
        "latency_us": latency_us,
    }))
    .unwrap()
}

/// A non-streamed chat completion answered by `primary` on the first try.
fn success() -> RequestRecord {
    RequestRecord {
        id: "req-1".into(),
        endpoint: Endpoint::ChatCompletions,
        dialect: Dialect::OpenAi,
        key_id: Some("key-1".into()),
        user: Some("alice".into()),
        alias: Some("fast".into()),
        served_model: Some("gpt-4o-mini-2024-07-18".into()),
        provider: Some("openai".into()),
        deployment: Some("primary".into()),
        status: 200,
        input_tokens: Some(12),
        output_tokens: Some(30),
        cached_tokens: Some(4),
        latency_us: 850_000,
        attempts: vec![attempt(
            "primary",
            "openai",
            AttemptOutcome::Ok,
            200,
            800_000,
        )],
        ..Default::default()
    }
}

/// A success with its cost, energy and carbon.
fn priced() -> RequestRecord {
    RequestRecord {
        cost_micros: Some(1_250),
        energy_uwh: Some(500_000),
        carbon_ug: Some(200_000),
        ..success()
    }
}

/// Both deployments failed: a 503 from `primary`, then a timeout on `backup`.
fn upstream_failure() -> RequestRecord {
    RequestRecord {
        id: "req-2".into(),
        endpoint: Endpoint::Messages,
        dialect: Dialect::Anthropic,
        alias: Some("fast".into()),
        status: 504,
        error_code: Some(ErrorCode::Kind(ErrorKind::UpstreamTimeout)),
        latency_us: 3_500_000,
        attempts: vec![
            attempt(
                "primary",
                "openai",
                AttemptOutcome::Failed(ErrorKind::UpstreamUnavailable),
                503,
                500_000,
            ),
            attempt(
                "backup",
                "anthropic",
                AttemptOutcome::Failed(ErrorKind::UpstreamTimeout),
                0,
                3_000_000,
            ),
        ],
        ..Default::default()
    }
}

/// A stream: first token after 250 ms, 101 output tokens by 2.25 s.
fn stream() -> RequestRecord {
    RequestRecord {
        id: "req-3".into(),
        stream: true,
        ttft_us: Some(250_000),
        output_tokens: Some(101),
        latency_us: 2_250_000,
        attempts: vec![attempt(
            "primary",
            "openai",
            AttemptOutcome::Ok,
            200,
            2_200_000,
        )],
        ..success()
    }
}

/// A provider that reported no usage: the gateway counted the tokens itself.
fn estimated() -> RequestRecord {
    RequestRecord {
        id: "req-4".into(),
        usage_estimated: true,
        input_tokens: Some(100),
        output_tokens: Some(50),
        cached_tokens: None,
        ..success()
    }
}

const CHAT_FAST_PRIMARY: [(&str, &str); 4] = [
    ("gen_ai_operation_name", "chat"),
    ("gen_ai_provider_name", "openai"),
    ("gen_ai_request_model", "fast"),
    ("gen_ai_response_model", "gpt-4o-mini-2024-07-18"),
];

fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(extra).copied().collect()
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

#[test]
fn success_counts_request_attempt_tokens_and_duration() {
    let metrics = Metrics::new();
    metrics.observe(&success());
    let s = Scrape::of(&metrics);

    let request = [
        ("endpoint", "chat.completions"),
        ("alias", "fast"),
        ("deployment", "primary"),
        ("provider", "openai"),
        ("status", "200"),
        ("error", ""),
    ];
    assert_eq!(s.value("sluice_requests_total", &request), 1.0);
    assert_eq!(s.series("sluice_requests_total"), 1);

    let at = [("deployment", "primary"), ("provider", "openai")];
    assert_eq!(
        s.value(
            "sluice_upstream_attempts_total",
            &with(&at, &[("outcome", "ok")])
        ),
        1.0
    );
    assert_eq!(
        s.value("sluice_upstream_attempt_duration_seconds_count", &at),
        1.0
    );
    assert_close(
        s.value("sluice_upstream_attempt_duration_seconds_sum", &at),
        0.8,
    );
    // 0.8 s lands in the 1.28 s bucket, not the 0.64 s one.
    let bucket = |le| with(&at, &[("le", le)]);
    assert_eq!(
        s.value(
            "sluice_upstream_attempt_duration_seconds_bucket",
            &bucket("0.64")
        ),
        0.0
    );
    assert_eq!(
        s.value(
            "sluice_upstream_attempt_duration_seconds_bucket",
            &bucket("1.28")
        ),
        1.0
    );
    assert_eq!(
        s.value(
            "sluice_upstream_attempt_duration_seconds_bucket",
            &bucket("+Inf")
        ),
        1.0
    );

    let tokens = |kind| [("alias", "fast"), ("deployment", "primary"), ("type", kind)];
    assert_eq!(s.value("sluice_tokens_total", &tokens("input")), 12.0);
    assert_eq!(s.value("sluice_tokens_total", &tokens("output")), 30.0);
    assert_eq!(s.value("sluice_tokens_total", &tokens("cached")), 4.0);

    let duration = with(&CHAT_FAST_PRIMARY, &[("error_type", "")]);
    assert_eq!(
        s.value("gen_ai_client_operation_duration_seconds_count", &duration),
        1.0
    );
    assert_close(
        s.value("gen_ai_client_operation_duration_seconds_sum", &duration),
        0.85,
    );
    let usage = |kind| with(&CHAT_FAST_PRIMARY, &[("gen_ai_token_type", kind)]);
    assert_eq!(
        s.value("gen_ai_client_token_usage_count", &usage("input")),
        1.0
    );
    assert_eq!(
        s.value("gen_ai_client_token_usage_sum", &usage("input")),
        12.0
    );
    assert_eq!(
        s.value("gen_ai_client_token_usage_sum", &usage("output")),
        30.0
    );
    // 12 tokens: above the 4 bucket, within the 16 one.
    let usage_bucket = |le| with(&usage("input"), &[("le", le)]);
    assert_eq!(
        s.value("gen_ai_client_token_usage_bucket", &usage_bucket("4")),
        0.0
    );
    assert_eq!(
        s.value("gen_ai_client_token_usage_bucket", &usage_bucket("16")),
        1.0
    );

    // Not a stream: no time to first token, and nothing estimated.
    assert_eq!(
        s.series("gen_ai_server_time_to_first_token_seconds_count"),
        0
    );
    assert_eq!(s.series("sluice_usage_estimated_total"), 0);
}

#[test]
fn upstream_failure_counts_both_attempts_and_the_error() {
    let metrics = Metrics::new();
    metrics.observe(&upstream_failure());
    let s = Scrape::of(&metrics);

    // Nothing answered, so the request is put on the last deployment tried.
    let request = [
        ("endpoint", "messages"),
        ("alias", "fast"),
        ("deployment", "backup"),
        ("provider", "anthropic"),
        ("status", "504"),
        ("error", "upstream_timeout"),
    ];
    assert_eq!(s.value("sluice_requests_total", &request), 1.0);

    let primary = [("deployment", "primary"), ("provider", "openai")];
    let backup = [("deployment", "backup"), ("provider", "anthropic")];
    assert_eq!(
        s.value(
            "sluice_upstream_attempts_total",
            &with(&primary, &[("outcome", "upstream_unavailable")])
        ),
        1.0
    );
    assert_eq!(
        s.value(
            "sluice_upstream_attempts_total",
            &with(&backup, &[("outcome", "upstream_timeout")])
        ),
        1.0
    );
    assert_eq!(s.series("sluice_upstream_attempts_total"), 2);
    assert_close(
        s.value("sluice_upstream_attempt_duration_seconds_sum", &primary),
        0.5,
    );
    assert_close(
        s.value("sluice_upstream_attempt_duration_seconds_sum", &backup),
        3.0,
    );

    let duration = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "anthropic"),
        ("gen_ai_request_model", "fast"),
        ("gen_ai_response_model", ""),
        ("error_type", "upstream_timeout"),
    ];
    assert_eq!(
        s.value("gen_ai_client_operation_duration_seconds_count", &duration),
        1.0
    );
    assert_close(
        s.value("gen_ai_client_operation_duration_seconds_sum", &duration),
        3.5,
    );
    // No usage was reported, so no token series.
    assert_eq!(s.series("gen_ai_client_token_usage_count"), 0);
    assert_eq!(s.series("sluice_tokens_total"), 0);
}

#[test]
fn stream_records_time_to_first_token_and_per_output_token() {
    let metrics = Metrics::new();
    metrics.observe(&stream());
    let s = Scrape::of(&metrics);

    assert_eq!(
        s.value(
            "gen_ai_server_time_to_first_token_seconds_count",
            &CHAT_FAST_PRIMARY
        ),
        1.0
    );
    assert_close(
        s.value(
            "gen_ai_server_time_to_first_token_seconds_sum",
            &CHAT_FAST_PRIMARY,
        ),
        0.25,
    );
    let bucket = |le| with(&CHAT_FAST_PRIMARY, &[("le", le)]);
    assert_eq!(
        s.value(
            "gen_ai_server_time_to_first_token_seconds_bucket",
            &bucket("0.1")
        ),
        0.0
    );
    assert_eq!(
        s.value(
            "gen_ai_server_time_to_first_token_seconds_bucket",
            &bucket("0.25")
        ),
        1.0
    );
    // (2.25 s - 0.25 s) over the 100 tokens after the first.
    assert_close(
        s.value(
            "gen_ai_server_time_per_output_token_seconds_sum",
            &CHAT_FAST_PRIMARY,
        ),
        0.02,
    );
    assert_eq!(
        s.value(
            "gen_ai_server_time_per_output_token_seconds_count",
            &CHAT_FAST_PRIMARY
        ),
        1.0
    );
}

#[test]
fn failed_stream_has_no_time_to_first_token() {
    let metrics = Metrics::new();
    metrics.observe(&RequestRecord {
        error_code: Some(ErrorCode::Kind(ErrorKind::UpstreamUnavailable)),
        ..stream()
    });
    let s = Scrape::of(&metrics);
    assert_eq!(
        s.series("gen_ai_server_time_to_first_token_seconds_count"),
        0
    );
    let duration = with(
        &CHAT_FAST_PRIMARY,
        &[("error_type", "upstream_unavailable")],
    );
    assert_eq!(
        s.value("gen_ai_client_operation_duration_seconds_count", &duration),
        1.0
    );
}

#[test]
fn cost_energy_and_carbon_add_up_in_base_units() {
    let metrics = Metrics::new();
    metrics.observe(&priced());
    metrics.observe(&priced());
    metrics.observe(&success());
    let s = Scrape::of(&metrics);
    let labels = [("alias", "fast"), ("deployment", "primary")];
    assert_close(s.value("sluice_cost_usd_total", &labels), 0.0025);
    // 2 × 0.5 Wh = 3,600 J.
    assert_close(s.value("sluice_energy_joules_total", &labels), 3_600.0);
    assert_close(s.value("sluice_carbon_grams_total", &labels), 0.4);
}

#[test]
fn policy_decisions_are_counted_by_alias_policy_rule_action_and_place() {
    let metrics = Metrics::new();
    let mut record = success();
    record.policy.note(
        "dlp",
        "payment_card",
        sluice_types::record::PolicyAction::Redact,
        sluice_types::record::PolicyPlace::Request,
        2,
    );
    metrics.observe(&record);
    metrics.observe(&record);
    metrics.observe(&success());
    let s = Scrape::of(&metrics);
    let labels = [
        ("alias", "fast"),
        ("policy", "dlp"),
        ("rule", "payment_card"),
        ("action", "redact"),
        ("place", "request"),
    ];
    assert_eq!(s.value("sluice_policy_decisions_total", &labels), 4.0);
    assert_eq!(s.series("sluice_policy_decisions_total"), 1);
}

#[test]
fn schema_checks_are_counted_per_attempt_by_provider_deployment_and_result() {
    use sluice_types::record::SchemaCheck;
    let metrics = Metrics::new();
    let mut record = success();
    let mut failed = record.attempts[0].clone();
    failed.schema = Some(SchemaCheck::Invalid);
    record.attempts[0].schema = Some(SchemaCheck::Repaired);
    record.attempts.insert(0, failed);
    metrics.observe(&record);
    metrics.observe(&success());
    let s = Scrape::of(&metrics);
    let deployment = record.attempts[0].deployment.as_str();
    let provider = record.attempts[0].provider.as_str();
    for result in ["invalid", "repaired"] {
        let labels = [
            ("provider", provider),
            ("deployment", deployment),
            ("result", result),
        ];
        assert_eq!(
            s.value("sluice_schema_checks_total", &labels),
            1.0,
            "{result}"
        );
    }
    assert_eq!(s.series("sluice_schema_checks_total"), 2);
}

#[test]
fn estimated_usage_is_counted_by_deployment() {
    let metrics = Metrics::new();
    metrics.observe(&estimated());
    metrics.observe(&success());
    let s = Scrape::of(&metrics);

    assert_eq!(
        s.value("sluice_usage_estimated_total", &[("deployment", "primary")]),
        1.0
    );
    // Estimated counts still add up with reported ones.
    let tokens = |kind| [("alias", "fast"), ("deployment", "primary"), ("type", kind)];
    assert_eq!(s.value("sluice_tokens_total", &tokens("input")), 112.0);
    assert_eq!(s.value("sluice_tokens_total", &tokens("output")), 80.0);
    assert_eq!(s.value("sluice_tokens_total", &tokens("cached")), 4.0);
    let request = [
        ("endpoint", "chat.completions"),
        ("alias", "fast"),
        ("deployment", "primary"),
        ("provider", "openai"),
        ("status", "200"),
    ];
    assert_eq!(s.value("sluice_requests_total", &request), 2.0);
}

#[test]
fn deployment_gauges_and_queue_counters_render() {
    let metrics = Metrics::new();
    let queues = QueueCounts {
        records_shed: 42,
        traces: TraceCounts {
            shed: 3,
            failed: 512,
            exported: 9_000,
        },
        connections: crate::ConnectionCounts {
            open: 12,
            shed_per_client: 5,
            shed_total: 1,
            header_timeouts: 4,
            body_timeouts: 2,
            write_timeouts: 3,
            cut_at_shutdown: 0,
        },
        counter_errors: 6,
        counter_entries: 40,
        counter_entries_refused: 2,
        config_reloads: crate::ReloadCounts { ok: 4, invalid: 1 },
        store: crate::StoreCounts {
            down: true,
            degraded_ms: 12_500,
            journal_bytes: 4096,
            records_replayed: 77,
        },
    };
    let gauges = [
        DeploymentGauge {
            deployment: "primary".into(),
            provider: "openai".into(),
            breaker: BreakerGauge::Open,
            in_flight: 3,
            queued: 7,
            retry_budget_available: 2.5,
        },
        DeploymentGauge {
            deployment: "backup".into(),
            provider: "anthropic".into(),
            breaker: BreakerGauge::HalfOpen,
            ..Default::default()
        },
        DeploymentGauge {
            deployment: "local".into(),
            provider: "vllm".into(),
            ..Default::default()
        },
    ];
    let s = Scrape::parse(&metrics.render(&gauges, queues));

    let primary = [("deployment", "primary"), ("provider", "openai")];
    let backup = [("deployment", "backup"), ("provider", "anthropic")];
    let local = [("deployment", "local"), ("provider", "vllm")];
    assert_eq!(s.value("sluice_deployment_breaker_state", &primary), 2.0);
    assert_eq!(s.value("sluice_deployment_breaker_state", &backup), 1.0);
    assert_eq!(s.value("sluice_deployment_breaker_state", &local), 0.0);
    assert_eq!(s.value("sluice_deployment_in_flight", &primary), 3.0);
    assert_eq!(s.value("sluice_deployment_in_flight", &backup), 0.0);
    assert_eq!(s.value("sluice_deployment_queue_depth", &primary), 7.0);
    assert_eq!(s.value("sluice_retry_budget_available", &primary), 2.5);
    assert_eq!(s.value("sluice_records_shed_total", &[]), 42.0);
    assert_eq!(s.value("sluice_store_degraded", &[]), 1.0);
    assert_eq!(s.value("sluice_store_degraded_seconds_total", &[]), 12.5);
    assert_eq!(s.value("sluice_journal_bytes", &[]), 4096.0);
    assert_eq!(s.value("sluice_records_replayed_total", &[]), 77.0);
    assert_eq!(s.value("sluice_traces_shed_total", &[]), 3.0);
    assert_eq!(s.value("sluice_traces_export_failed_total", &[]), 512.0);
    assert_eq!(s.value("sluice_traces_exported_total", &[]), 9_000.0);
    assert_eq!(s.value("sluice_connections_open", &[]), 12.0);
    let shed = |reason| [("reason", reason)];
    assert_eq!(
        s.value("sluice_connections_shed_total", &shed("per_client")),
        5.0
    );
    assert_eq!(
        s.value("sluice_connections_shed_total", &shed("total")),
        1.0
    );
    assert_eq!(
        s.value("sluice_connections_timed_out_total", &shed("header")),
        4.0
    );
    assert_eq!(
        s.value("sluice_connections_timed_out_total", &shed("body")),
        2.0
    );
    assert_eq!(
        s.value("sluice_connections_timed_out_total", &shed("write")),
        3.0
    );
    assert_eq!(
        s.value("sluice_connections_timed_out_total", &shed("shutdown")),
        0.0
    );
    assert_eq!(s.value("sluice_counter_errors_total", &[]), 6.0);
    assert_eq!(s.value("sluice_counter_entries", &[]), 40.0);
    assert_eq!(s.value("sluice_counter_entries_refused_total", &[]), 2.0);
    let result = |result| [("result", result)];
    assert_eq!(s.value("sluice_config_reloads_total", &result("ok")), 4.0);
    assert_eq!(
        s.value("sluice_config_reloads_total", &result("invalid")),
        1.0
    );

    // The next scrape shows only the deployments it is given.
    let s = Scrape::parse(&metrics.render(&gauges[..1], queues));
    assert_eq!(s.series("sluice_deployment_breaker_state"), 1);
}

#[test]
fn every_family_has_its_prometheus_type() {
    let metrics = Metrics::new();
    metrics.observe(&stream());
    metrics.observe(&estimated());
    let mut priced = priced();
    priced.policy.note(
        "tool_policy",
        "drop_database",
        sluice_types::record::PolicyAction::Block,
        sluice_types::record::PolicyPlace::ToolCall,
        1,
    );
    if let Some(attempt) = priced.attempts.first_mut() {
        attempt.schema = Some(sluice_types::record::SchemaCheck::Valid);
    }
    metrics.observe(&priced);
    let gauge = DeploymentGauge {
        deployment: "primary".into(),
        provider: "openai".into(),
        ..Default::default()
    };
    let s = Scrape::parse(&metrics.render(&[gauge], QueueCounts::default()));
    let expected = [
        ("sluice_requests_total", "counter"),
        ("sluice_upstream_attempts_total", "counter"),
        ("sluice_upstream_attempt_duration_seconds", "histogram"),
        ("sluice_tokens_total", "counter"),
        ("sluice_usage_estimated_total", "counter"),
        ("sluice_policy_decisions_total", "counter"),
        ("sluice_schema_checks_total", "counter"),
        ("sluice_cost_usd_total", "counter"),
        ("sluice_energy_joules_total", "counter"),
        ("sluice_carbon_grams_total", "counter"),
        ("gen_ai_client_operation_duration_seconds", "histogram"),
        ("gen_ai_client_token_usage", "histogram"),
        ("gen_ai_server_time_to_first_token_seconds", "histogram"),
        ("gen_ai_server_time_per_output_token_seconds", "histogram"),
        ("sluice_deployment_breaker_state", "gauge"),
        ("sluice_deployment_in_flight", "gauge"),
        ("sluice_deployment_queue_depth", "gauge"),
        ("sluice_retry_budget_available", "gauge"),
        ("sluice_records_shed_total", "counter"),
        ("sluice_traces_shed_total", "counter"),
        ("sluice_traces_export_failed_total", "counter"),
        ("sluice_traces_exported_total", "counter"),
        ("sluice_connections_open", "gauge"),
        ("sluice_connections_shed_total", "counter"),
        ("sluice_connections_timed_out_total", "counter"),
        ("sluice_counter_errors_total", "counter"),
        ("sluice_counter_entries", "gauge"),
        ("sluice_counter_entries_refused_total", "counter"),
        ("sluice_config_reloads_total", "counter"),
        ("sluice_store_degraded", "gauge"),
        ("sluice_store_degraded_seconds_total", "counter"),
        ("sluice_journal_bytes", "gauge"),
        ("sluice_records_replayed_total", "counter"),
    ];
    for (name, kind) in expected {
        assert_eq!(s.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert_eq!(s.types.len(), expected.len());
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
}

#[test]
fn never_labels_by_key_user_or_request_id() {
    let metrics = Metrics::new();
    for record in [success(), upstream_failure(), stream(), estimated()] {
        metrics.observe(&record);
    }
    let text = metrics.render(&[], QueueCounts::default());
    for secret in ["key-1", "alice", "req-1", "req-2", "key_id", "user"] {
        assert!(!text.contains(secret), "{secret} in the exposition");
    }
}

#[test]
fn served_models_past_the_cap_are_reported_as_other() {
    let metrics = Metrics::with_limits(Limits {
        served_models: 2,
        ..Limits::default()
    });
    for model in ["m-1", "m-2", "m-3", "m-4"] {
        metrics.observe(&RequestRecord {
            served_model: Some(model.into()),
            ..success()
        });
    }
    let s = Scrape::of(&metrics);
    let name = "gen_ai_client_operation_duration_seconds_count";
    assert_eq!(
        s.label_values(name, "gen_ai_response_model"),
        ["m-1", "m-2", OVERFLOW]
    );
    let other = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "openai"),
        ("gen_ai_request_model", "fast"),
        ("gen_ai_response_model", OVERFLOW),
        ("error_type", ""),
    ];
    assert_eq!(s.value(name, &other), 2.0);
}

#[test]
fn unrouted_request_adds_no_new_alias() {
    let metrics = Metrics::new();
    // Rejected before routing (an unknown model): the alias is the client's free text.
    let unknown = RequestRecord {
        endpoint: Endpoint::ChatCompletions,
        alias: Some("made-up-model-1234".into()),
        status: 404,
        error_code: Some(ErrorCode::Kind(ErrorKind::NotFound)),
        ..Default::default()
    };
    metrics.observe(&unknown);
    // Rejected before routing, but for an alias that has routed before.
    metrics.observe(&success());
    metrics.observe(&RequestRecord {
        alias: Some("fast".into()),
        status: 401,
        error_code: Some(ErrorCode::Kind(ErrorKind::Unauthenticated)),
        ..unknown.clone()
    });
    let s = Scrape::of(&metrics);

    let rejected = |alias, status, error| {
        [
            ("endpoint", "chat.completions"),
            ("alias", alias),
            ("status", status),
            ("error", error),
        ]
    };
    assert_eq!(
        s.value(
            "sluice_requests_total",
            &rejected(OVERFLOW, "404", "model_not_found")
        ),
        1.0
    );
    assert_eq!(
        s.value(
            "sluice_requests_total",
            &rejected("fast", "401", "invalid_api_key")
        ),
        1.0
    );
    // A request that reached no provider says nothing about GenAI operations.
    assert_eq!(
        s.series("gen_ai_client_operation_duration_seconds_count"),
        1
    );
}

#[test]
fn endpoints_without_a_model_call_have_no_gen_ai_series() {
    let metrics = Metrics::new();
    metrics.observe(&RequestRecord {
        endpoint: Endpoint::Models,
        status: 200,
        latency_us: 100,
        ..Default::default()
    });
    let s = Scrape::of(&metrics);
    assert_eq!(
        s.value(
            "sluice_requests_total",
            &[("endpoint", "models"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        s.series("gen_ai_client_operation_duration_seconds_count"),
        0
    );
}

#[test]
fn clones_share_series_and_gateways_do_not() {
    let one = Metrics::new();
    let same = one.clone();
    let other = Metrics::new();
    one.observe(&success());
    same.observe(&success());
    let request = [
        ("endpoint", "chat.completions"),
        ("alias", "fast"),
        ("deployment", "primary"),
        ("provider", "openai"),
        ("status", "200"),
    ];
    assert_eq!(
        Scrape::of(&one).value("sluice_requests_total", &request),
        2.0
    );
    assert_eq!(
        Scrape::of(&other).get("sluice_requests_total", &request),
        None
    );
}

/// Not a test of behaviour: prints the cost of one `observe`. Run with
/// `cargo test -p sluice-telemetry --release -- --ignored --nocapture observe_cost`.
#[test]
#[ignore = "measurement, not an assertion"]
fn observe_cost() {
    let metrics = Metrics::new();
    let records = [success(), upstream_failure(), stream(), estimated()];
    for record in &records {
        metrics.observe(record);
    }
    let rounds = 250_000;
    for record in &records {
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            metrics.observe(std::hint::black_box(record));
        }
        let ns = started.elapsed().as_nanos() / rounds;
        println!(
            "observe {} ({} attempts, stream {}): {ns} ns",
            record.id,
            record.attempts.len(),
            record.stream
        );
    }
}
