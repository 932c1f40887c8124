//! Sluice configuration: one TOML file, parsed, then validated into [`Settings`].
//!
//! Parsing rejects unknown fields and wrong types with the file position; validation checks
//! references between sections and reports every problem with its field path
//! (`deployments.gpt4o.provider: ...`). Secrets are read from environment variables named in
//! the file, never from the file itself. `docs/configuration.md` is the reference.
//!
//! This crate only produces plain values; the CLI passes them down to the crates that use them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use sluice_routing::{BreakerPolicy, CapacityPolicy, RoutePolicy};

mod dlp;
mod file;
mod policy;
mod reload;
mod tools;

pub use dlp::{DlpAction, DlpSettings, RouteDlp};
pub use file::ProviderType;
pub use policy::{BudgetSettings, CounterBackend};
pub use sluice_policy::OnCounterError;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldProblem>),
}

/// One validation problem, with the dotted path of the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Validated runtime settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub upstream: UpstreamSettings,
    /// Deployments in file order.
    pub deployments: Vec<DeploymentSettings>,
    /// Alias name -> its route.
    pub aliases: BTreeMap<String, AliasSettings>,
    pub telemetry: TelemetrySettings,
    pub policy: PolicySettings,
}

/// Budgets, the admin API and the cost, energy and carbon tables.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub budgets: BudgetSettings,
    /// The admin API's bearer token; `None` turns the admin API off.
    pub admin_token: Option<SecretString>,
    /// Built-in list prices with `[prices]` applied.
    pub prices: sluice_policy::PriceTable,
    /// Built-in energy coefficients and grid intensities with `[energy]` and `[carbon]` applied.
    pub energy: sluice_policy::EnergyModel,
    /// The detectors DLP runs (each route's actions are in its [`AliasSettings`]).
    pub dlp: DlpSettings,
}

/// `[telemetry]`: where traces go. Plain values; the CLI hands them to the tracer.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// The OTLP collector's base URL; `None` turns tracing off.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    /// Sent with every export: `otlp_headers`, then `otlp_headers_env` with the values read
    /// from the environment. Every value is kept secret.
    pub otlp_headers: Vec<(String, SecretString)>,
    /// The traces' `service.name`.
    pub service_name: String,
    /// Finished requests waiting for export at most; past it their spans are shed and counted.
    pub trace_queue: usize,
    /// One export call to the collector, retries included.
    pub otlp_timeout: Duration,
}

/// How traces travel to the collector (`telemetry.otlp_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`: `POST {otlp_endpoint}/v1/traces`.
    HttpProtobuf,
    /// `grpc`: the OTLP `TraceService` at `otlp_endpoint`.
    Grpc,
}

/// One alias's route. Deployments are indices into [`Settings::deployments`].
#[derive(Debug, Clone)]
pub struct AliasSettings {
    /// The pool, with each deployment's weight (1 unless `weights` says otherwise).
    pub pool: Vec<(usize, u32)>,
    /// Tried in order after the pool.
    pub fallbacks: Vec<usize>,
    pub policy: RoutePolicy,
    /// Only keys holding one of these roles may call the alias; empty: any key.
    pub roles: Vec<String>,
    /// The alias that serves callers over a soft limit.
    pub over_soft_limit: Option<String>,
    /// The alias's own rate limits.
    pub limits: Vec<sluice_policy::Limit>,
    /// Prompts estimated above this many tokens are refused (`policy_blocked`).
    pub max_input_tokens: Option<u32>,
    /// What DLP does on the route (`None`: nothing).
    pub dlp: Option<RouteDlp>,
    /// The alias's `tool_policy`, else `[tool_policy]`; `None`: no tool policy.
    pub tool_policy: Option<std::sync::Arc<sluice_policy::tools::ToolPolicy>>,
    /// The alias's `stop_sequences.on_collision`, else `[stop_sequences]`'s (default warn).
    pub stop_sequences: sluice_policy::stops::OnCollision,
}

impl AliasSettings {
    /// Every deployment of the route, pool first.
    pub fn deployments(&self) -> impl Iterator<Item = usize> + '_ {
        self.pool
            .iter()
            .map(|(d, _)| *d)
            .chain(self.fallbacks.iter().copied())
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// A request's head must arrive within this (also the longest a kept-alive connection
    /// stays idle between requests).
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this once its handler reads it.
    pub body_read_timeout: Duration,
    /// An answer the client reads none of for this long closes its connection.
    pub idle_timeout: Duration,
    /// Client connections open at once, in total and per client IP address.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// On shutdown, how long requests under way may still take.
    pub shutdown_grace: Duration,
    /// The listening socket's accept backlog.
    pub listen_backlog: u32,
    /// A second listener serving only `/metrics` and the detailed `/health`, without a token.
    pub metrics_listen: Option<SocketAddr>,
    /// Threads serving client connections, each a single-threaded runtime.
    pub workers: usize,
    /// Reload the configuration file when its content changes (it is also reloaded on
    /// SIGHUP, whatever this says).
    pub watch_config: bool,
    /// Other processes may listen on the same address (`SO_REUSEPORT`): the kernel spreads
    /// new connections over them.
    pub reuse_port: bool,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Where keys, budgets and records are kept.
    pub location: StoreLocation,
    /// The local journal of records not yet written (`None`: turned off).
    pub journal: Option<JournalSettings>,
    /// How long a key the store confirmed is honoured while the store cannot be reached.
    pub offline_keys: Duration,
    /// Capacity of the request-record queue; records beyond it are shed and counted.
    pub record_queue: usize,
    /// How long request records are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
}

/// `[store] journal` and `journal_max_mb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// `[store] path` or `[store] url`.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// The embedded SQLite database file (`path`, relative to the config file; the default).
    Sqlite(PathBuf),
    /// A Postgres database shared by several replicas (`url`, which may hold a password).
    Postgres(SecretString),
}

impl StoreLocation {
    /// Whether both name the same store (a changed password counts as a change).
    pub fn same_as(&self, other: &StoreLocation) -> bool {
        use secrecy::ExposeSecret;
        match (self, other) {
            (StoreLocation::Sqlite(a), StoreLocation::Sqlite(b)) => a == b,
            (StoreLocation::Postgres(a), StoreLocation::Postgres(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// Until the response headers (and, for streams, the first event) arrive.
    pub first_token_timeout: Duration,
    /// Longest silence between two stream events.
    pub idle_timeout: Duration,
    /// Whole request, non-streaming.
    pub total_timeout: Duration,
    /// Requests in flight on one HTTP/2 connection to an upstream before another is opened.
    pub http2_streams_per_connection: usize,
}

#[derive(Debug, Clone)]
pub struct DeploymentSettings {
    pub name: String,
    pub provider: String,
    pub provider_type: ProviderType,
    /// Base URL including the API version prefix, without a trailing slash
    /// (`https://api.openai.com/v1`).
    pub base_url: String,
    /// The exact model the provider is asked for.
    pub model: String,
    pub api_key: Option<SecretString>,
    /// `max_tokens` sent to providers that require one when the client gave none.
    pub default_max_tokens: u32,
    /// What the deployment's provider supports of structured output.
    pub structured_output: sluice_providers::StructuredSupport,
    /// How the provider's connections speak HTTP.
    pub http_version: sluice_providers::HttpVersion,
    pub capacity: CapacityPolicy,
    pub breaker: BreakerPolicy,
    /// Where the provider runs, for the carbon estimate.
    pub region: Option<String>,
    /// The most stop sequences the provider accepts in one request; `None`: no limit.
    pub max_stop_sequences: Option<usize>,
}

/// Whether loading a configuration requires the providers' API keys to be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKeys {
    /// Serving traffic (and `check-config`): every deployment's key variable must be set.
    Required,
    /// Read-only commands: an unset key variable leaves the deployment without a key.
    NotNeeded,
}

impl Settings {
    /// Reads and validates a file, taking secrets from the process environment.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Self::load_with(path, ProviderKeys::Required)
    }

    /// [`Settings::load`], saying whether the providers' API keys must be set: commands that
    /// only read the store or a running gateway (`logs`, `usage`, `keys`, `budgets`, `status`)
    /// load with [`ProviderKeys::NotNeeded`], so they run where provider secrets are absent.
    pub fn load_with(path: &Path, keys: ProviderKeys) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_with(&text, path, |name| std::env::var(name).ok(), keys)
    }

    /// Parses and validates TOML text. `env` looks up environment variables; `origin` names the
    /// source in errors and anchors relative paths.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        Self::from_toml_with(text, origin, env, ProviderKeys::Required)
    }

    /// [`Settings::from_toml`] with [`ProviderKeys`]: when not needed, a deployment whose key
    /// variable is unset loads with no key instead of failing validation.
    pub fn from_toml_with(
        text: &str,
        origin: &Path,
        env: impl Fn(&str) -> Option<String>,
        keys: ProviderKeys,
    ) -> Result<Settings, ConfigError> {
        let file: file::ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let base_dir = origin.parent().unwrap_or(Path::new("."));
        file.validate(base_dir, &env, keys)
            .map_err(ConfigError::Invalid)
    }

    /// Settings with every default and no providers: what `sluice serve` runs with when there
    /// is no configuration file.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Self::from_toml("", Path::new("sluice.toml"), |_| None)
    }

    pub fn deployment(&self, name: &str) -> Option<&DeploymentSettings> {
        self.deployments.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests;
