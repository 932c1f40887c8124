//! The file format, as serde reads it, and its validation into [`Settings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use sluice_routing::{
    BreakerPolicy, BudgetPolicy, CapacityPolicy, Condition, Conditions, HedgePolicy, RetryPolicy,
    RoutePolicy, RouteTimeouts, Strategy,
};

use crate::dlp::{DlpSection, RouteDlpSection};
use crate::policy::{
    AdminSection, AliasLimitsSection, BudgetsSection, CarbonSection, EnergySection, PriceSection,
    energy_model, price_table,
};
use crate::tools::{StopSequencesSection, ToolPolicySection};
use crate::{
    AliasSettings, DeploymentSettings, FieldProblem, JournalSettings, OtlpProtocol, PolicySettings,
    ServerSettings, Settings, StoreLocation, StoreSettings, TelemetrySettings, UpstreamSettings,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    upstream: UpstreamSection,
    #[serde(default)]
    breaker: BreakerSection,
    #[serde(default)]
    providers: BTreeMap<String, ProviderSection>,
    #[serde(default)]
    deployments: BTreeMap<String, DeploymentSection>,
    #[serde(default)]
    aliases: BTreeMap<String, AliasSection>,
    #[serde(default)]
    telemetry: TelemetrySection,
    #[serde(default)]
    budgets: BudgetsSection,
    #[serde(default)]
    admin: AdminSection,
    #[serde(default)]
    prices: BTreeMap<String, PriceSection>,
    #[serde(default)]
    energy: BTreeMap<String, EnergySection>,
    #[serde(default)]
    carbon: CarbonSection,
    #[serde(default)]
    dlp: DlpSection,
    /// Tools keys may use, and destructive-call rules; each alias may replace it.
    tool_policy: Option<ToolPolicySection>,
    /// The stop-sequence guard; each alias may replace it.
    #[serde(default)]
    stop_sequences: StopSequencesSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    listen: String,
    max_body_bytes: usize,
    header_read_timeout_ms: u64,
    body_read_timeout_ms: u64,
    idle_timeout_ms: u64,
    /// Default: from the open-file limit ([`default_max_connections`]).
    max_connections: Option<usize>,
    /// Default: 1,000, or `max_connections` when that is lower.
    max_connections_per_client: Option<usize>,
    shutdown_grace_ms: u64,
    listen_backlog: u32,
    metrics_listen: Option<String>,
    /// Threads serving client connections; default: one per core this process may run on.
    workers: Option<usize>,
    watch_config: bool,
    /// Let other processes listen on the same address (`SO_REUSEPORT`).
    reuse_port: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:4000".into(),
            max_body_bytes: 4 * 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: None,
            max_connections_per_client: None,
            shutdown_grace_ms: 30_000,
            listen_backlog: 4096,
            metrics_listen: None,
            workers: None,
            watch_config: true,
            reuse_port: false,
        }
    }
}

/// Worker threads at most (`server.workers`).
const MAX_WORKERS: usize = 256;

/// Client connections at most when `server.max_connections` is not set: half the process's
/// open-file limit (each client connection may hold an upstream connection too) less 256 for
/// the store, logs and listeners, between 64 and 100,000; 10,000 where the limit cannot be read.
/// So a flood of connections is refused before descriptors run out and `/health` stops
/// answering.
pub(crate) fn default_max_connections() -> usize {
    let soft_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|soft| soft.parse::<usize>().ok());
    match soft_limit {
        Some(limit) => (limit.saturating_sub(256) / 2).clamp(64, 100_000),
        None => 10_000,
    }
}

/// The longest any `[server]` timeout may be set to: an hour. Longer ones would let a client
/// hold a connection for as long as it likes, which these fields exist to prevent.
const MAX_SERVER_TIMEOUT_MS: u64 = 3_600_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StoreSection {
    /// The embedded SQLite store's file (the default, `sluice-data/sluice.db`).
    path: Option<String>,
    /// A Postgres store shared by several replicas, instead of the file.
    url: Option<String>,
    /// The environment variable that holds `url` (which may carry a password).
    url_env: Option<String>,
    record_queue: usize,
    retention_days: u32,
    /// The local record journal's folder (default: `journal` beside the SQLite file, or
    /// `sluice-data/journal` with Postgres).
    journal: Option<String>,
    /// The most the journal may hold on disk; 0 turns it off.
    journal_max_mb: u64,
    /// How long a key the store confirmed is honoured while the store cannot be reached.
    offline_keys_ms: u64,
}

/// The embedded store's file when `[store]` names none, relative to the config file.
const DEFAULT_STORE_PATH: &str = "sluice-data/sluice.db";

/// The journal's folder with a Postgres store when `[store]` names none, relative to the
/// config file.
const DEFAULT_JOURNAL_PATH: &str = "sluice-data/journal";

/// The largest journal accepted: a tebibyte.
const MAX_JOURNAL_MB: u64 = 1 << 20;

/// The longest a key may be honoured offline: a week.
const MAX_OFFLINE_KEYS_MS: u64 = 7 * 86_400_000;

/// The longest retention accepted: a century, far beyond any real need, and far from
/// overflowing a millisecond count.
const MAX_RETENTION_DAYS: u32 = 36_500;

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            path: None,
            url: None,
            url_env: None,
            record_queue: 16_384,
            retention_days: 30,
            journal: None,
            journal_max_mb: 1024,
            offline_keys_ms: 300_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct UpstreamSection {
    connect_timeout_ms: u64,
    #[serde(alias = "first_byte_timeout_ms")]
    first_token_timeout_ms: u64,
    idle_timeout_ms: u64,
    total_timeout_ms: u64,
    /// Requests in flight on one HTTP/2 connection to an upstream before another is opened.
    http2_streams_per_connection: u64,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            connect_timeout_ms: 5_000,
            first_token_timeout_ms: 120_000,
            idle_timeout_ms: 60_000,
            total_timeout_ms: 600_000,
            http2_streams_per_connection: sluice_providers::DEFAULT_STREAMS_PER_CONNECTION as u64,
        }
    }
}

/// The kinds of upstream Sluice can talk to. Matches the `type` field of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderType {
    Openai,
    Anthropic,
    /// vLLM, Ollama, llama.cpp, Groq, Together, Mistral, DeepSeek, OpenRouter, ...
    OpenaiCompatible,
}

impl ProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Openai => "openai",
            ProviderType::Anthropic => "anthropic",
            ProviderType::OpenaiCompatible => "openai_compatible",
        }
    }

    /// The provider kind this type configures.
    pub fn kind(self) -> sluice_providers::ProviderKind {
        match self {
            ProviderType::Openai => sluice_providers::ProviderKind::OpenAi,
            ProviderType::OpenaiCompatible => sluice_providers::ProviderKind::OpenAiCompatible,
            ProviderType::Anthropic => sluice_providers::ProviderKind::Anthropic,
        }
    }

    /// The most stop sequences the provider's API accepts (OpenAI's documented limit is 4;
    /// compatible servers are assumed to share it unless a deployment says otherwise).
    fn default_max_stop_sequences(self) -> Option<u32> {
        match self {
            ProviderType::Openai | ProviderType::OpenaiCompatible => Some(4),
            ProviderType::Anthropic => None,
        }
    }

    fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderType::Openai => Some("https://api.openai.com/v1"),
            ProviderType::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderType::OpenaiCompatible => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderSection {
    #[serde(rename = "type")]
    provider_type: ProviderType,
    base_url: Option<String>,
    api_key_env: Option<String>,
    /// What the provider supports of structured output: `json_schema` (default; Anthropic: a
    /// forced tool), `json_object`, or `none` (an instruction, and the gateway's validation).
    structured_output: Option<String>,
    /// `auto` (default), `http1` or `http2` (prior knowledge over plain `http://`).
    http_version: Option<String>,
}

/// Circuit breaker settings: the `[breaker]` defaults, each field overridable per deployment.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BreakerSection {
    enabled: bool,
    consecutive_failures: u32,
    failure_ratio: f64,
    min_requests: u32,
    window_ms: u64,
    open_ms: u64,
    half_open_probes: u32,
    min_callers: u32,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            enabled: true,
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window_ms: 10_000,
            open_ms: 10_000,
            half_open_probes: 1,
            min_callers: 2,
        }
    }
}

/// A deployment's `breaker` table: only the fields it sets replace the `[breaker]` defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerOverride {
    enabled: Option<bool>,
    consecutive_failures: Option<u32>,
    failure_ratio: Option<f64>,
    min_requests: Option<u32>,
    window_ms: Option<u64>,
    open_ms: Option<u64>,
    half_open_probes: Option<u32>,
    min_callers: Option<u32>,
}

impl BreakerOverride {
    fn over(&self, base: BreakerSection) -> BreakerSection {
        BreakerSection {
            enabled: self.enabled.unwrap_or(base.enabled),
            consecutive_failures: self
                .consecutive_failures
                .unwrap_or(base.consecutive_failures),
            failure_ratio: self.failure_ratio.unwrap_or(base.failure_ratio),
            min_requests: self.min_requests.unwrap_or(base.min_requests),
            window_ms: self.window_ms.unwrap_or(base.window_ms),
            open_ms: self.open_ms.unwrap_or(base.open_ms),
            half_open_probes: self.half_open_probes.unwrap_or(base.half_open_probes),
            min_callers: self.min_callers.unwrap_or(base.min_callers),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentSection {
    provider: String,
    model: String,
    /// Overrides the provider's `api_key_env`.
    api_key_env: Option<String>,
    #[serde(default = "default_max_tokens")]
    default_max_tokens: u32,
    /// Requests in flight at most; unlimited when absent.
    max_concurrency: Option<u32>,
    /// Requests waiting for a slot at most (default: as many as `max_concurrency`).
    max_queue: Option<u32>,
    #[serde(default = "default_queue_timeout_ms")]
    queue_timeout_ms: u64,
    #[serde(default)]
    breaker: BreakerOverride,
    /// Where the provider runs (`us-east`, `eu-north`...), for the carbon estimate.
    region: Option<String>,
    /// The most stop sequences the provider accepts in one request (default: 4 for `openai`
    /// and `openai_compatible`, no limit for `anthropic`); the gateway enforces the rest.
    max_stop_sequences: Option<u32>,
}

fn default_max_tokens() -> u32 {
    4096
}

fn default_queue_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasSection {
    /// The pool: the strategy picks among these per request.
    deployments: Vec<String>,
    #[serde(default = "default_strategy")]
    strategy: String,
    /// `weighted` only: one weight per pool deployment.
    weights: Option<Vec<u32>>,
    /// Tried in order after the pool.
    #[serde(default)]
    fallbacks: Vec<String>,
    /// The failures that move a request on to its next attempt.
    fallback_on: Option<Vec<String>>,
    #[serde(default)]
    retry: RetrySection,
    #[serde(default)]
    timeouts: TimeoutsSection,
    hedge: Option<HedgeSection>,
    #[serde(default)]
    drill: DrillSection,
    /// Keep request and response bodies (redacted) of this route's requests.
    #[serde(default)]
    log_bodies: bool,
    #[serde(default = "default_body_max_bytes")]
    body_max_bytes: usize,
    /// Only keys holding one of these roles may call the alias; empty: any key.
    #[serde(default)]
    roles: Vec<String>,
    /// The alias that serves callers over a soft limit instead of this one.
    over_soft_limit: Option<String>,
    /// The alias's own rate limits, whoever calls it.
    #[serde(default)]
    limits: AliasLimitsSection,
    /// Refuse prompts estimated above this many tokens, before anything is reserved or sent.
    max_input_tokens: Option<u32>,
    /// The route's DLP actions, over `[dlp]`'s.
    dlp: Option<RouteDlpSection>,
    /// Replaces `[tool_policy]` for this alias.
    tool_policy: Option<ToolPolicySection>,
    /// Replaces `[stop_sequences]` for this alias.
    stop_sequences: Option<StopSequencesSection>,
}

fn default_body_max_bytes() -> usize {
    64 * 1024
}

fn default_strategy() -> String {
    "ordered".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetrySection {
    max_attempts: Option<u32>,
    backoff_initial_ms: u64,
    backoff_max_ms: u64,
    retry_after_max_ms: u64,
    budget_ratio: f64,
    budget_window_ms: u64,
    budget_min_retries: u32,
}

impl Default for RetrySection {
    fn default() -> Self {
        let d = RetryPolicy::default();
        RetrySection {
            max_attempts: d.max_attempts,
            backoff_initial_ms: d.backoff_initial.as_millis() as u64,
            backoff_max_ms: d.backoff_max.as_millis() as u64,
            retry_after_max_ms: d.retry_after_max.as_millis() as u64,
            budget_ratio: d.budget.ratio,
            budget_window_ms: d.budget.window.as_millis() as u64,
            budget_min_retries: d.budget.min_retries,
        }
    }
}

/// A route's timeouts; each defaults to the `[upstream]` one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsSection {
    connect_ms: Option<u64>,
    first_token_ms: Option<u64>,
    idle_ms: Option<u64>,
    total_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HedgeSection {
    after_ms: u64,
    percentile: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrillSection {
    #[serde(default)]
    share: f64,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP. No `otlp_endpoint`, no tracing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TelemetrySection {
    /// The collector's base URL; `/v1/traces` is added for `http/protobuf`.
    otlp_endpoint: Option<String>,
    otlp_protocol: String,
    /// Header name -> value, for headers that are not secret.
    otlp_headers: BTreeMap<String, String>,
    /// Header name -> the environment variable holding its value (API keys).
    otlp_headers_env: BTreeMap<String, String>,
    service_name: String,
    trace_queue: usize,
    otlp_timeout_ms: u64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            otlp_protocol: "http/protobuf".into(),
            otlp_headers: BTreeMap::new(),
            otlp_headers_env: BTreeMap::new(),
            service_name: "sluice".into(),
            trace_queue: 8_192,
            otlp_timeout_ms: 10_000,
        }
    }
}

/// An HTTP field name: one or more `tchar`s (RFC 9110, section 5.6.2).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value that both HTTP/1.1 and gRPC metadata can carry: visible ASCII, spaces, tabs.
fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

impl TelemetrySection {
    fn settings(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<FieldProblem>,
    ) -> TelemetrySettings {
        let otlp_endpoint = self.otlp_endpoint.as_deref().map(str::trim);
        if let Some(url) = otlp_endpoint {
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            check(
                problems,
                host.is_some_and(|h| !h.is_empty() && !h.starts_with('/'))
                    && !url.contains(char::is_whitespace),
                "telemetry.otlp_endpoint".into(),
                "must be an http:// or https:// URL (leave it out to turn tracing off)",
            );
        }
        let otlp_protocol = match self.otlp_protocol.as_str() {
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            "grpc" => OtlpProtocol::Grpc,
            other => {
                push(
                    problems,
                    "telemetry.otlp_protocol".into(),
                    format!("`{other}` is not an OTLP protocol (http/protobuf, grpc)"),
                );
                OtlpProtocol::HttpProtobuf
            }
        };
        let mut otlp_headers = Vec::new();
        for (name, value) in &self.otlp_headers {
            let field = format!("telemetry.otlp_headers.{name}");
            if !is_header_name(name) {
                push(problems, field, format!("`{name}` is not a header name"));
            } else if !is_header_value(value) {
                push(
                    problems,
                    field,
                    "may hold only visible ASCII characters, spaces and tabs".into(),
                );
            } else {
                otlp_headers.push((name.clone(), SecretString::from(value.clone())));
            }
        }
        for (name, var) in &self.otlp_headers_env {
            let field = format!("telemetry.otlp_headers_env.{name}");
            if !is_header_name(name) {
                push(problems, field, format!("`{name}` is not a header name"));
                continue;
            }
            if self
                .otlp_headers
                .keys()
                .any(|plain| plain.eq_ignore_ascii_case(name))
            {
                push(
                    problems,
                    field,
                    format!("`{name}` is also set in telemetry.otlp_headers"),
                );
                continue;
            }
            match env(var) {
                // The value is a secret: the message names the variable, never the value.
                Some(value) if !value.is_empty() && is_header_value(&value) => {
                    otlp_headers.push((name.clone(), SecretString::from(value)));
                }
                Some(value) if !value.is_empty() => push(
                    problems,
                    field,
                    format!("environment variable `{var}` holds characters a header cannot carry"),
                ),
                _ => push(
                    problems,
                    field,
                    format!("environment variable `{var}` is not set"),
                ),
            }
        }
        check(
            problems,
            !self.service_name.trim().is_empty(),
            "telemetry.service_name".into(),
            "must not be empty",
        );
        check(
            problems,
            self.trace_queue > 0,
            "telemetry.trace_queue".into(),
            "must be greater than 0",
        );
        check(
            problems,
            self.otlp_timeout_ms > 0,
            "telemetry.otlp_timeout_ms".into(),
            "must be greater than 0",
        );
        TelemetrySettings {
            otlp_endpoint: otlp_endpoint.map(str::to_owned),
            otlp_protocol,
            otlp_headers,
            service_name: self.service_name.trim().to_owned(),
            trace_queue: self.trace_queue,
            otlp_timeout: Duration::from_millis(self.otlp_timeout_ms),
        }
    }
}

pub(crate) fn push(problems: &mut Vec<FieldProblem>, field: String, message: String) {
    problems.push(FieldProblem { field, message });
}

/// Reports a problem unless `ok`.
pub(crate) fn check(problems: &mut Vec<FieldProblem>, ok: bool, field: String, message: &str) {
    if !ok {
        problems.push(FieldProblem {
            field,
            message: message.to_owned(),
        });
    }
}

fn breaker_policy(
    section: BreakerSection,
    field: &str,
    problems: &mut Vec<FieldProblem>,
) -> BreakerPolicy {
    check(
        problems,
        (0.0..=1.0).contains(&section.failure_ratio) && section.failure_ratio > 0.0,
        format!("{field}.failure_ratio"),
        "must be in (0, 1]",
    );
    check(
        problems,
        section.window_ms > 0,
        format!("{field}.window_ms"),
        "must be greater than 0",
    );
    check(
        problems,
        section.open_ms > 0,
        format!("{field}.open_ms"),
        "must be greater than 0",
    );
    check(
        problems,
        section.half_open_probes > 0,
        format!("{field}.half_open_probes"),
        "must be greater than 0",
    );
    BreakerPolicy {
        enabled: section.enabled,
        consecutive_failures: section.consecutive_failures,
        failure_ratio: section.failure_ratio,
        min_requests: section.min_requests,
        window: Duration::from_millis(section.window_ms),
        open_for: Duration::from_millis(section.open_ms),
        half_open_probes: section.half_open_probes,
        min_callers: section.min_callers,
    }
}

impl AliasSection {
    /// The route's policy; problems are reported under `aliases.<alias>`.
    fn policy(
        &self,
        alias: &str,
        upstream: &UpstreamSection,
        problems: &mut Vec<FieldProblem>,
    ) -> RoutePolicy {
        let at = |field: &str| format!("aliases.{alias}.{field}");
        let strategy = Strategy::parse(&self.strategy).unwrap_or_else(|| {
            problems.push(FieldProblem {
                field: at("strategy"),
                message: format!(
                    "`{}` is not a strategy (ordered, weighted, least_latency, power_of_two)",
                    self.strategy
                ),
            });
            Strategy::Ordered
        });
        match (&self.weights, strategy) {
            (Some(weights), Strategy::Weighted) => {
                check(
                    problems,
                    weights.len() == self.deployments.len(),
                    at("weights"),
                    "needs one weight per deployment of the pool",
                );
                check(
                    problems,
                    weights.iter().any(|w| *w > 0),
                    at("weights"),
                    "at least one weight must be greater than 0",
                );
            }
            (Some(_), _) => problems.push(FieldProblem {
                field: at("weights"),
                message: "only used with strategy = \"weighted\"".into(),
            }),
            (None, _) => {}
        }
        let fallback_on = match &self.fallback_on {
            None => Conditions::default(),
            Some(names) => Conditions::new(names.iter().enumerate().filter_map(|(i, name)| {
                let condition = Condition::parse(name);
                if condition.is_none() {
                    let known: Vec<&str> = Condition::ALL.iter().map(|c| c.as_str()).collect();
                    problems.push(FieldProblem {
                        field: at(&format!("fallback_on[{i}]")),
                        message: format!("`{name}` is not a condition ({})", known.join(", ")),
                    });
                }
                condition
            })),
        };
        let r = &self.retry;
        check(
            problems,
            r.max_attempts != Some(0),
            at("retry.max_attempts"),
            "must be at least 1",
        );
        check(
            problems,
            (0.0..=10.0).contains(&r.budget_ratio),
            at("retry.budget_ratio"),
            "must be between 0 and 10 (retries per request)",
        );
        check(
            problems,
            r.budget_window_ms > 0,
            at("retry.budget_window_ms"),
            "must be greater than 0",
        );
        check(
            problems,
            r.backoff_initial_ms <= r.backoff_max_ms,
            at("retry.backoff_initial_ms"),
            "must not exceed retry.backoff_max_ms",
        );
        let t = &self.timeouts;
        for (field, value) in [
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.first_token_ms", t.first_token_ms),
            ("timeouts.idle_ms", t.idle_ms),
            ("timeouts.total_ms", t.total_ms),
        ] {
            check(
                problems,
                value != Some(0),
                at(field),
                "must be greater than 0",
            );
        }
        let hedge = self.hedge.as_ref().map(|h| {
            check(
                problems,
                h.after_ms > 0,
                at("hedge.after_ms"),
                "must be greater than 0",
            );
            if let Some(p) = h.percentile {
                check(
                    problems,
                    p > 0.0 && p < 100.0,
                    at("hedge.percentile"),
                    "must be between 0 and 100 (e.g. 95)",
                );
            }
            HedgePolicy {
                after: Duration::from_millis(h.after_ms),
                percentile: h.percentile,
            }
        });
        check(
            problems,
            (0.0..=1.0).contains(&self.drill.share),
            at("drill.share"),
            "must be between 0 and 1",
        );
        check(
            problems,
            self.body_max_bytes > 0,
            at("body_max_bytes"),
            "must be greater than 0",
        );
        let ms = Duration::from_millis;
        RoutePolicy {
            strategy,
            fallback_on,
            retry: RetryPolicy {
                max_attempts: r.max_attempts,
                backoff_initial: ms(r.backoff_initial_ms),
                backoff_max: ms(r.backoff_max_ms),
                retry_after_max: ms(r.retry_after_max_ms),
                budget: BudgetPolicy {
                    ratio: r.budget_ratio,
                    window: ms(r.budget_window_ms),
                    min_retries: r.budget_min_retries,
                },
            },
            timeouts: RouteTimeouts {
                connect: ms(t.connect_ms.unwrap_or(upstream.connect_timeout_ms)),
                first_token: ms(t.first_token_ms.unwrap_or(upstream.first_token_timeout_ms)),
                idle: ms(t.idle_ms.unwrap_or(upstream.idle_timeout_ms)),
                total: ms(t.total_ms.unwrap_or(upstream.total_timeout_ms)),
            },
            hedge,
            drill_share: self.drill.share,
            log_bodies: self.log_bodies.then_some(self.body_max_bytes),
        }
    }
}

impl ConfigFile {
    pub(crate) fn validate(
        self,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        keys: crate::ProviderKeys,
    ) -> Result<Settings, Vec<FieldProblem>> {
        let mut problems = Vec::new();

        let listen = self
            .server
            .listen
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| {
                push(
                    &mut problems,
                    "server.listen".into(),
                    format!("`{}` is not an address:port ({e})", self.server.listen),
                );
                SocketAddr::from(([127, 0, 0, 1], 4000))
            });
        if self.server.max_body_bytes == 0 {
            push(
                &mut problems,
                "server.max_body_bytes".into(),
                "must be greater than 0".into(),
            );
        }
        for (field, value) in [
            ("header_read_timeout_ms", self.server.header_read_timeout_ms),
            ("body_read_timeout_ms", self.server.body_read_timeout_ms),
            ("idle_timeout_ms", self.server.idle_timeout_ms),
            ("shutdown_grace_ms", self.server.shutdown_grace_ms),
        ] {
            if value == 0 || value > MAX_SERVER_TIMEOUT_MS {
                push(
                    &mut problems,
                    format!("server.{field}"),
                    format!("must be between 1 and {MAX_SERVER_TIMEOUT_MS} (an hour)"),
                );
            }
        }
        let max_connections = self
            .server
            .max_connections
            .unwrap_or_else(default_max_connections);
        if max_connections == 0 {
            push(
                &mut problems,
                "server.max_connections".into(),
                "must be greater than 0".into(),
            );
        }
        let max_connections_per_client = self
            .server
            .max_connections_per_client
            .unwrap_or(1_000.min(max_connections));
        if max_connections_per_client == 0 || max_connections_per_client > max_connections {
            push(
                &mut problems,
                "server.max_connections_per_client".into(),
                format!("must be between 1 and server.max_connections ({max_connections})"),
            );
        }
        if self.server.listen_backlog == 0 {
            push(
                &mut problems,
                "server.listen_backlog".into(),
                "must be greater than 0".into(),
            );
        }
        let workers = self.server.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if !(1..=MAX_WORKERS).contains(&workers) {
            push(
                &mut problems,
                "server.workers".into(),
                format!("must be between 1 and {MAX_WORKERS}"),
            );
        }
        let metrics_listen =
            self.server.metrics_listen.as_deref().and_then(|text| {
                match text.parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(e) => {
                        push(
                            &mut problems,
                            "server.metrics_listen".into(),
                            format!("`{text}` is not an address:port ({e})"),
                        );
                        None
                    }
                }
            });
        let store_url = match (&self.store.url, &self.store.url_env) {
            (Some(_), Some(_)) => {
                push(
                    &mut problems,
                    "store.url".into(),
                    "set url or url_env, not both".into(),
                );
                None
            }
            (url, None) => url.clone(),
            (None, Some(var)) => {
                let value = env(var).filter(|v| !v.is_empty());
                if value.is_none() {
                    push(
                        &mut problems,
                        "store.url_env".into(),
                        format!("environment variable `{var}` is not set"),
                    );
                }
                value
            }
        };
        match (&self.store.path, &store_url) {
            (Some(_), Some(_)) => push(
                &mut problems,
                "store.url".into(),
                "cannot be set together with store.path: `path` is the embedded SQLite store, \
                 `url` a Postgres one; keep one"
                    .into(),
            ),
            (_, Some(url))
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") =>
            {
                push(
                    &mut problems,
                    "store.url".into(),
                    "must be a Postgres URL: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
                        .into(),
                )
            }
            _ => {}
        }
        if self.store.record_queue == 0 {
            push(
                &mut problems,
                "store.record_queue".into(),
                "must be greater than 0".into(),
            );
        }
        if self.store.retention_days > MAX_RETENTION_DAYS {
            push(
                &mut problems,
                "store.retention_days".into(),
                format!("must be at most {MAX_RETENTION_DAYS} (0 keeps records forever)"),
            );
        }
        if self.store.journal_max_mb > MAX_JOURNAL_MB {
            push(
                &mut problems,
                "store.journal_max_mb".into(),
                format!("must be at most {MAX_JOURNAL_MB} (0 turns the journal off)"),
            );
        }
        if self.store.offline_keys_ms > MAX_OFFLINE_KEYS_MS {
            push(
                &mut problems,
                "store.offline_keys_ms".into(),
                format!(
                    "must be at most {MAX_OFFLINE_KEYS_MS} (a week; 0 refuses every key while the store cannot be reached)"
                ),
            );
        }
        if self.store.journal.as_deref().is_some_and(str::is_empty) {
            push(
                &mut problems,
                "store.journal".into(),
                "must be a folder; set journal_max_mb = 0 to turn the journal off".into(),
            );
        }
        let up = &self.upstream;
        for (field, value) in [
            ("upstream.connect_timeout_ms", up.connect_timeout_ms),
            ("upstream.first_token_timeout_ms", up.first_token_timeout_ms),
            ("upstream.idle_timeout_ms", up.idle_timeout_ms),
            ("upstream.total_timeout_ms", up.total_timeout_ms),
            (
                "upstream.http2_streams_per_connection",
                up.http2_streams_per_connection,
            ),
        ] {
            if value == 0 {
                push(&mut problems, field.into(), "must be greater than 0".into());
            }
        }

        for (name, provider) in &self.providers {
            if let Some(url) = &provider.base_url
                && let Err(why) = url.parse::<sluice_providers::BaseUrl>()
            {
                push(&mut problems, format!("providers.{name}.base_url"), why);
            }
            if let Some(value) = &provider.structured_output {
                let kind = provider.provider_type.kind();
                match sluice_providers::StructuredSupport::parse(value) {
                    Some(support) if support.available_for(kind) => {}
                    Some(_) => push(
                        &mut problems,
                        format!("providers.{name}.structured_output"),
                        format!(
                            "`{value}` is not available for type `{}` (json_schema, none)",
                            provider.provider_type.as_str()
                        ),
                    ),
                    None => push(
                        &mut problems,
                        format!("providers.{name}.structured_output"),
                        format!("`{value}` is not one of json_schema, json_object, none"),
                    ),
                }
            }
            if let Some(value) = &provider.http_version
                && sluice_providers::HttpVersion::parse(value).is_none()
            {
                push(
                    &mut problems,
                    format!("providers.{name}.http_version"),
                    format!("`{value}` is not one of auto, http1, http2"),
                );
            }
            if provider.base_url.is_none() && provider.provider_type.default_base_url().is_none() {
                push(
                    &mut problems,
                    format!("providers.{name}.base_url"),
                    format!("required for type `{}`", provider.provider_type.as_str()),
                );
            }
        }

        let mut deployments = Vec::with_capacity(self.deployments.len());
        for (name, deployment) in &self.deployments {
            let Some(provider) = self.providers.get(&deployment.provider) else {
                push(
                    &mut problems,
                    format!("deployments.{name}.provider"),
                    format!("no provider named `{}` in [providers]", deployment.provider),
                );
                continue;
            };
            if deployment.model.trim().is_empty() {
                push(
                    &mut problems,
                    format!("deployments.{name}.model"),
                    "must not be empty".into(),
                );
            }
            let (key_field, key_env) = match (&deployment.api_key_env, &provider.api_key_env) {
                (Some(var), _) => (format!("deployments.{name}.api_key_env"), Some(var)),
                (None, Some(var)) => (
                    format!("providers.{}.api_key_env", deployment.provider),
                    Some(var),
                ),
                (None, None) => (String::new(), None),
            };
            let api_key = match key_env {
                Some(var) => match env(var) {
                    Some(value) if !value.is_empty() => Some(SecretString::from(value)),
                    _ if keys == crate::ProviderKeys::NotNeeded => None,
                    _ => {
                        push(
                            &mut problems,
                            key_field,
                            format!(
                                "environment variable `{var}` is not set (needed by deployment `{name}`)"
                            ),
                        );
                        None
                    }
                },
                None if provider.provider_type == ProviderType::OpenaiCompatible => None,
                None => {
                    push(
                        &mut problems,
                        format!("providers.{}.api_key_env", deployment.provider),
                        format!("required for type `{}`", provider.provider_type.as_str()),
                    );
                    None
                }
            };
            let base_url = provider
                .base_url
                .as_deref()
                .or(provider.provider_type.default_base_url())
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned();
            check(
                &mut problems,
                deployment.max_concurrency != Some(0),
                format!("deployments.{name}.max_concurrency"),
                "must be greater than 0 (leave it out for no limit)",
            );
            let breaker = breaker_policy(
                deployment.breaker.over(self.breaker),
                &format!("deployments.{name}.breaker"),
                &mut problems,
            );
            deployments.push(DeploymentSettings {
                name: name.clone(),
                provider: deployment.provider.clone(),
                provider_type: provider.provider_type,
                base_url,
                model: deployment.model.clone(),
                api_key,
                default_max_tokens: deployment.default_max_tokens,
                structured_output: provider
                    .structured_output
                    .as_deref()
                    .and_then(sluice_providers::StructuredSupport::parse)
                    .unwrap_or_default(),
                http_version: provider
                    .http_version
                    .as_deref()
                    .and_then(sluice_providers::HttpVersion::parse)
                    .unwrap_or_default(),
                capacity: CapacityPolicy {
                    max_concurrency: deployment.max_concurrency,
                    max_queue: deployment
                        .max_queue
                        .or(deployment.max_concurrency)
                        .unwrap_or(0),
                    queue_timeout: Duration::from_millis(deployment.queue_timeout_ms),
                },
                breaker,
                region: deployment.region.clone(),
                max_stop_sequences: deployment
                    .max_stop_sequences
                    .or(provider.provider_type.default_max_stop_sequences())
                    .map(|n| n as usize),
            });
        }

        // The global breaker is checked once, as the base of every deployment's.
        breaker_policy(self.breaker, "breaker", &mut problems);

        let mut dlp = self.dlp.settings(&mut problems);
        let tool_policy = self
            .tool_policy
            .as_ref()
            .map(|section| std::sync::Arc::new(section.policy("tool_policy", &mut problems)));
        let mut aliases = BTreeMap::new();
        for (alias, section) in &self.aliases {
            if let Some(route) = &section.dlp {
                self.dlp
                    .add_route_detectors(route, alias, &mut dlp, &mut problems);
            }
            if section.deployments.is_empty() {
                problems.push(FieldProblem {
                    field: format!("aliases.{alias}.deployments"),
                    message: "must name at least one deployment".into(),
                });
            }
            let mut resolve = |list: &[String], field: &str| -> Vec<usize> {
                let mut targets = Vec::new();
                for (i, target) in list.iter().enumerate() {
                    match deployments.iter().position(|d| &d.name == target) {
                        Some(index) if targets.contains(&index) => problems.push(FieldProblem {
                            field: format!("aliases.{alias}.{field}[{i}]"),
                            message: format!("`{target}` is listed twice"),
                        }),
                        Some(index) => targets.push(index),
                        None if self.deployments.contains_key(target) => {} // reported above
                        None => problems.push(FieldProblem {
                            field: format!("aliases.{alias}.{field}[{i}]"),
                            message: format!("no deployment named `{target}` in [deployments]"),
                        }),
                    }
                }
                targets
            };
            let pool = resolve(&section.deployments, "deployments");
            let fallbacks = resolve(&section.fallbacks, "fallbacks");
            for (i, index) in fallbacks.iter().enumerate() {
                if pool.contains(index) {
                    problems.push(FieldProblem {
                        field: format!("aliases.{alias}.fallbacks[{i}]"),
                        message: format!(
                            "`{}` is already in the pool (deployments)",
                            deployments[*index].name
                        ),
                    });
                }
            }
            let policy = section.policy(alias, &self.upstream, &mut problems);
            let weights = section.weights.clone().unwrap_or_default();
            if let Some(cheaper) = &section.over_soft_limit {
                let field = format!("aliases.{alias}.over_soft_limit");
                if cheaper == alias {
                    push(&mut problems, field, "must name another alias".into());
                } else if !self.aliases.contains_key(cheaper) {
                    push(
                        &mut problems,
                        field,
                        format!("no alias named `{cheaper}` in [aliases]"),
                    );
                }
            }
            for (i, role) in section.roles.iter().enumerate() {
                check(
                    &mut problems,
                    !role.trim().is_empty(),
                    format!("aliases.{alias}.roles[{i}]"),
                    "must not be empty",
                );
            }
            let limits = section.limits.limits(alias, &mut problems);
            check(
                &mut problems,
                section.max_input_tokens != Some(0),
                format!("aliases.{alias}.max_input_tokens"),
                "must be at least 1",
            );
            let route_tool_policy = match &section.tool_policy {
                Some(own) => Some(std::sync::Arc::new(
                    own.policy(&format!("aliases.{alias}.tool_policy"), &mut problems),
                )),
                None => tool_policy.clone(),
            };
            let stop_sequences = section
                .stop_sequences
                .as_ref()
                .unwrap_or(&self.stop_sequences)
                .on_collision();
            aliases.insert(
                alias.clone(),
                AliasSettings {
                    pool: pool
                        .iter()
                        .enumerate()
                        .map(|(i, &d)| (d, weights.get(i).copied().unwrap_or(1)))
                        .collect(),
                    fallbacks,
                    policy,
                    roles: section.roles.clone(),
                    over_soft_limit: section.over_soft_limit.clone(),
                    limits,
                    max_input_tokens: section.max_input_tokens,
                    dlp: self.dlp.route(section.dlp.as_ref()),
                    tool_policy: route_tool_policy,
                    stop_sequences,
                },
            );
        }

        dlp.build(&mut problems);
        let telemetry = self.telemetry.settings(env, &mut problems);
        let policy = PolicySettings {
            budgets: self.budgets.settings(env, &mut problems),
            admin_token: self.admin.token(env, &mut problems),
            prices: price_table(&self.prices, &mut problems),
            energy: energy_model(&self.energy, &self.carbon, &mut problems),
            dlp,
        };

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Settings {
            server: ServerSettings {
                listen,
                max_body_bytes: self.server.max_body_bytes,
                header_read_timeout: Duration::from_millis(self.server.header_read_timeout_ms),
                body_read_timeout: Duration::from_millis(self.server.body_read_timeout_ms),
                idle_timeout: Duration::from_millis(self.server.idle_timeout_ms),
                max_connections,
                max_connections_per_client,
                shutdown_grace: Duration::from_millis(self.server.shutdown_grace_ms),
                listen_backlog: self.server.listen_backlog,
                metrics_listen,
                workers,
                watch_config: self.server.watch_config,
                reuse_port: self.server.reuse_port,
            },
            store: StoreSettings {
                location: match (&store_url, &self.store.path) {
                    (Some(url), _) => StoreLocation::Postgres(SecretString::from(url.clone())),
                    (None, path) => StoreLocation::Sqlite(
                        base_dir.join(path.as_deref().unwrap_or(DEFAULT_STORE_PATH)),
                    ),
                },
                journal: (self.store.journal_max_mb > 0).then(|| JournalSettings {
                    dir: match (&self.store.journal, &store_url, &self.store.path) {
                        (Some(dir), _, _) => base_dir.join(dir),
                        (None, Some(_), _) => base_dir.join(DEFAULT_JOURNAL_PATH),
                        (None, None, path) => base_dir
                            .join(path.as_deref().unwrap_or(DEFAULT_STORE_PATH))
                            .parent()
                            .map_or_else(|| base_dir.join("journal"), |dir| dir.join("journal")),
                    },
                    max_bytes: self.store.journal_max_mb << 20,
                }),
                offline_keys: Duration::from_millis(self.store.offline_keys_ms),
                record_queue: self.store.record_queue,
                retention: (self.store.retention_days > 0)
                    .then(|| Duration::from_secs(u64::from(self.store.retention_days) * 86_400)),
            },
            upstream: UpstreamSettings {
                connect_timeout: Duration::from_millis(up.connect_timeout_ms),
                first_token_timeout: Duration::from_millis(up.first_token_timeout_ms),
                idle_timeout: Duration::from_millis(up.idle_timeout_ms),
                total_timeout: Duration::from_millis(up.total_timeout_ms),
                http2_streams_per_connection: usize::try_from(up.http2_streams_per_connection)
                    .unwrap_or(usize::MAX),
            },
            deployments,
            aliases,
            telemetry,
            policy,
        })
    }
}
