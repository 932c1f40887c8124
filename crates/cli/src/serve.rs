//! `sluice serve`, `sluice demo` and `sluice mock`: wire configuration into the running gateway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use sluice_config::{ProviderKeys, ProviderType, Settings};
use sluice_pipeline::{ConfigSource, Gateway};
use sluice_providers::{Deployment, ProviderKind, Timeouts, Upstream};
use sluice_routing::{DeploymentHealth, RouteSpec, Router};
use sluice_server::AppState;
use sluice_store::{NewKey, RecordQueue, Stores};
use sluice_telemetry::{OtlpProtocol, TraceSettings, Tracer};
use sluice_testkit::{Chaos, MockUpstream};

use crate::reload::ConfigFile;

/// A line on stdout from a long-running command. A reader that went away (`| head -1`, a
/// parent that read only the address) must not stop the gateway, so a failed write is
/// ignored where `println!` would panic.
macro_rules! announce {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The file used when `--config` is not given.
const DEFAULT_CONFIG: &str = "sluice.toml";

/// Loads the configuration: the given file, else `./sluice.toml` if present, else defaults.
pub(crate) fn load_settings(config: Option<&Path>) -> anyhow::Result<Settings> {
    load_settings_with(config, ProviderKeys::Required)
}

/// The settings for a command that only reads the store or asks a running gateway (`logs`,
/// `usage`, `keys`, `budgets`, `status`): it never calls a provider, so it does not need
/// their API keys in its environment.
pub(crate) fn load_settings_read_only(config: Option<&Path>) -> anyhow::Result<Settings> {
    load_settings_with(config, ProviderKeys::NotNeeded)
}

/// The configuration file: the given one, else `./sluice.toml` if present.
fn config_path(config: Option<&Path>) -> Option<PathBuf> {
    match config {
        Some(path) => Some(path.to_owned()),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
    }
}

fn load_settings_with(config: Option<&Path>, keys: ProviderKeys) -> anyhow::Result<Settings> {
    Ok(match config_path(config) {
        Some(path) => Settings::load_with(&path, keys)?,
        None => Settings::defaults()?,
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) async fn serve(
    config: Option<PathBuf>,
    listen: Option<String>,
    journal: Option<PathBuf>,
) -> anyhow::Result<()> {
    init_logging();
    let listen: Option<SocketAddr> = listen
        .map(|listen| {
            listen
                .parse()
                .with_context(|| format!("--listen `{listen}` is not an address:port"))
        })
        .transpose()?;
    let overrides = crate::reload::Overrides { listen, journal };
    // The file is read once: its hash is of the bytes validated.
    let file = config_path(config.as_deref()).map(|path| ConfigFile::new(path, overrides.clone()));
    let (settings, source) = match &file {
        Some(file) => file.load()?,
        None => {
            let mut settings = Settings::defaults()?;
            overrides.apply(&mut settings);
            (settings, ConfigSource::without_file())
        }
    };
    let store = crate::admin::open_configured_store(&settings).await?;
    run(settings, (source, file), store, |bound| {
        announce!("sluice listening on http://{}", bound.addr);
        if let Some(metrics) = bound.metrics {
            announce!("metrics and health detail on http://{metrics}");
        }
    })
    .await
}

/// Where the gateway listens once bound: the client-facing address and, when configured, the
/// operators' metrics listener.
#[derive(Debug, Clone, Copy)]
struct Bound {
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
}

/// Runs the gateway until Ctrl-C or SIGTERM, then drains in-flight requests (for at most
/// `server.shutdown_grace_ms`) and the record queue. `on_ready` is called once the sockets are
/// bound. `config` is where `settings` came from, and the file to reload them from (none:
/// SIGHUP reloads nothing).
async fn run(
    settings: Settings,
    config: (ConfigSource, Option<ConfigFile>),
    store: Stores,
    on_ready: impl FnOnce(Bound),
) -> anyhow::Result<()> {
    let gateway_parts = build(&settings)?;
    // The tokenizer tables the aliases' estimates use, loaded off the runtime's threads while
    // the gateway starts (readiness does not wait for them).
    let aliases: Vec<String> = settings.aliases.keys().cloned().collect();
    drop(tokio::task::spawn_blocking(move || {
        sluice_pipeline::tokens::load_tokenizers(aliases.iter().map(String::as_str));
    }));
    let journal = match &settings.store.journal {
        Some(journal) => {
            tracing::info!(dir = %journal.dir.display(), max_bytes = journal.max_bytes, "record journal");
            Some(sluice_store::Journal::open(
                &journal.dir,
                journal.max_bytes,
            )?)
        }
        None => {
            tracing::warn!(
                "the record journal is off: records still queued when the process dies, or while the store cannot be reached, are lost"
            );
            None
        }
    };
    let queue = RecordQueue::start_journaled(
        store.records.clone(),
        settings.store.record_queue,
        journal,
        store.health.clone(),
    );
    let retention =
        sluice_store::RecordRetention::start(store.pruning.clone(), settings.store.retention);
    let tracer = start_tracer(&settings)?;
    let (policy, counter_errors, counter_entries, counters) =
        crate::policy::engine(&settings).await?;
    // Before the first request: budgets do not start over because the counters did.
    let rebuild = crate::policy::CounterRebuild::new(&settings, store.clone(), counters);
    rebuild.run_and_log().await;
    let (source, file) = config;
    let gateway = Gateway::new(
        gateway_parts.0,
        gateway_parts.1,
        store.clone(),
        queue.sender(),
        tracer.clone(),
        policy,
    )
    .configured_from(source);
    gateway.honour_keys_offline_for(settings.store.offline_keys);
    let stop_config_reload = tokio_util::sync::CancellationToken::new();
    let config_reload = crate::reload::Reloader {
        gateway: gateway.clone(),
        file,
        started: settings.clone(),
        rebuild: rebuild.clone(),
    }
    .start(stop_config_reload.clone())?;
    let stop_reload = tokio_util::sync::CancellationToken::new();
    let key_watch = crate::admin::follow_key_changes(&store, &gateway, stop_reload.clone()).await?;
    // Listening before the first read: a change made between the two is not missed.
    let budget_changes = store
        .budgets
        .budget_changes()
        .await
        .context("listening for budget changes")?;
    let reload = crate::policy::keep_budgets_loaded(
        gateway.clone(),
        settings.policy.budgets.reload,
        budget_changes,
        rebuild,
        stop_reload.clone(),
    )
    .await?;
    let drills = gateway.clone();
    let admin_token = settings
        .policy
        .admin_token
        .as_ref()
        .map(sluice_server::AdminToken::new);
    if admin_token.is_some() {
        tracing::info!("admin API on at /admin/v1");
    }
    let connections = Arc::new(sluice_server::ConnectionStats::default());
    let state = AppState {
        gateway,
        max_body_bytes: settings.server.max_body_bytes,
        body_read_timeout: settings.server.body_read_timeout,
        connections: connections.clone(),
        counter_errors,
        counter_entries,
        admin_token,
    };
    let server = &settings.server;
    let limits = sluice_server::ConnectionLimits {
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        max_connections: server.max_connections,
        max_connections_per_client: server.max_connections_per_client,
        shutdown_grace: server.shutdown_grace,
    };
    let listener =
        sluice_server::bind_with(server.listen, server.listen_backlog, server.reuse_port)
            .with_context(|| format!("binding {}", server.listen))?;
    let addr = listener.local_addr()?;
    // The operators' listener: `/metrics` and the detailed `/health` without a token.
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    let metrics_listener = match server.metrics_listen {
        Some(metrics_addr) => {
            let listener = sluice_server::bind(metrics_addr, 128)
                .with_context(|| format!("binding server.metrics_listen {metrics_addr}"))?;
            let bound = listener.local_addr()?;
            tracing::info!(addr = %bound, "metrics and health detail listening");
            let app = sluice_server::metrics_app(state.clone());
            let stats = Arc::new(sluice_server::ConnectionStats::default());
            let stop = stop_metrics.clone();
            let metrics_limits = sluice_server::ConnectionLimits {
                shutdown_grace: std::time::Duration::from_secs(1),
                ..limits
            };
            #[expect(
                clippy::disallowed_methods,
                reason = "owned: shutdown cancels `stop_metrics` and awaits the JoinHandle"
            )]
            let task = tokio::spawn(async move {
                sluice_server::serve(listener, app, metrics_limits, stats, stop.cancelled_owned())
                    .await
            });
            Some((bound, task))
        }
        None => None,
    };
    let app = sluice_server::app(state);
    let workers = sluice_server::Workers::start(server.workers).context("starting the workers")?;
    tracing::info!(%addr, workers = workers.count(), deployments = settings.deployments.len(), aliases = settings.aliases.len(), "ready");
    on_ready(Bound {
        addr,
        metrics: metrics_listener.as_ref().map(|(bound, _)| *bound),
    });
    sluice_server::serve_on(
        &workers,
        listener,
        app,
        limits,
        connections,
        shutdown_signal(),
    )
    .await?;
    stop_metrics.cancel();
    if let Some((_, task)) = metrics_listener {
        let _ = task.await;
    }
    drills.drain_drills().await;
    stop_reload.cancel();
    let _ = reload.await;
    stop_config_reload.cancel();
    let _ = config_reload.await;
    if let Some(key_watch) = key_watch {
        let _ = key_watch.await;
    }
    // Settlements of the last requests, before their records are flushed.
    drills.policy().drain().await;
    // Flushed while the workers still run: a pooled Postgres connection opened on a worker (a
    // key read on the request path) is driven by that worker's reactor, and fails once the
    // worker has stopped.
    let written = queue.shutdown().await;
    // Drills and settlements ran on the workers too: they are done, so the threads can go.
    drop(tokio::task::spawn_blocking(move || workers.shutdown()).await);
    tracer.shutdown().await;
    retention.shutdown().await;
    tracing::info!(records_written = written, "stopped");
    store.close().await;
    Ok(())
}

/// The OTLP trace exporter of `[telemetry]` (disabled without an endpoint).
fn start_tracer(settings: &Settings) -> anyhow::Result<Tracer> {
    let t = &settings.telemetry;
    let protocol = match t.otlp_protocol {
        sluice_config::OtlpProtocol::HttpProtobuf => OtlpProtocol::HttpProtobuf,
        sluice_config::OtlpProtocol::Grpc => OtlpProtocol::Grpc,
    };
    let tracer = Tracer::start(TraceSettings {
        endpoint: t.otlp_endpoint.clone(),
        protocol,
        headers: t.otlp_headers.clone(),
        service_name: t.service_name.clone(),
        queue: t.trace_queue,
        export_timeout: t.otlp_timeout,
        ..TraceSettings::default()
    })
    .context("starting the OTLP trace exporter")?;
    if let Some(endpoint) = &t.otlp_endpoint {
        tracing::info!(%endpoint, protocol = protocol.as_str(), "exporting traces");
    }
    Ok(tracer)
}

/// Turns settings into the router (with every deployment's live health) and the upstream
/// client.
pub(crate) fn build(settings: &Settings) -> anyhow::Result<(Router, Upstream)> {
    let router = router(settings, None)?;
    let upstream = Upstream::new(upstream_timeouts(settings))
        .context("building the upstream HTTP client")?
        .with_streams_per_connection(settings.upstream.http2_streams_per_connection);
    Ok((router, upstream))
}

/// `[upstream]`'s timeouts.
pub(crate) fn upstream_timeouts(settings: &Settings) -> Timeouts {
    let up = &settings.upstream;
    Timeouts {
        connect: up.connect_timeout,
        first_token: up.first_token_timeout,
        idle: up.idle_timeout,
        total: up.total_timeout,
    }
}

/// The router of `settings`. On a reload, `previous` lends the health of each deployment that
/// did not change ([`Router::keep_unchanged`]) and its routes' retry budgets
/// ([`Router::keep_retry_budgets`]).
pub(crate) fn router(settings: &Settings, previous: Option<&Router>) -> anyhow::Result<Router> {
    let deployments: Vec<Arc<DeploymentHealth>> = settings
        .deployments
        .iter()
        .map(|d| {
            let base_url = d
                .base_url
                .parse()
                .map_err(|e| anyhow::anyhow!("deployment `{}`: base_url {e}", d.name))?;
            let deployment = Arc::new(Deployment {
                name: d.name.clone(),
                provider: d.provider.clone(),
                kind: match d.provider_type {
                    ProviderType::Openai => ProviderKind::OpenAi,
                    ProviderType::OpenaiCompatible => ProviderKind::OpenAiCompatible,
                    ProviderType::Anthropic => ProviderKind::Anthropic,
                },
                base_url,
                model: d.model.clone(),
                api_key: d.api_key.clone(),
                default_max_tokens: d.default_max_tokens,
                structured_output: d.structured_output,
                http_version: d.http_version,
            });
            Ok(Arc::new(DeploymentHealth::new(
                deployment, d.breaker, d.capacity,
            )))
        })
        .collect::<anyhow::Result<_>>()?;
    let deployments = match previous {
        Some(previous) => previous.keep_unchanged(deployments),
        None => deployments,
    };
    let routes = settings.aliases.iter().map(|(alias, route)| RouteSpec {
        alias: alias.clone(),
        pool: route
            .pool
            .iter()
            .map(|&(i, weight)| (deployments[i].clone(), weight))
            .collect(),
        fallbacks: route
            .fallbacks
            .iter()
            .map(|&i| deployments[i].clone())
            .collect(),
        policy: route.policy.clone(),
    });
    let router = Router::new(routes, deployments.clone());
    Ok(match previous {
        Some(previous) => router.keep_retry_budgets(previous),
        None => router,
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
}

/// The demo team's quota on `smart`: 1,000 requests a rolling minute, soft at 20. Past 20,
/// `smart` degrades to `gpt-4o-mini` and the answer says so; the other aliases are unlimited.
fn demo_quota() -> sluice_store::BudgetRow {
    sluice_store::BudgetRow {
        model: "smart".into(),
        soft_amount: Some(20),
        ..sluice_store::BudgetRow::new("team:demo", "requests", "minute", 1_000)
    }
}

/// The demo configuration: one OpenAI-dialect and one Anthropic-dialect deployment, both on
/// the built-in mock, so either SDK can reach either dialect.
fn demo_settings(
    mock_base: &str,
    flaky_base: &str,
    listen: &str,
    store_path: &Path,
) -> anyhow::Result<Settings> {
    let text = format!(
        r#"
        [server]
        listen = "{listen}"
        # `/metrics` and the detailed `/health` (what `sluice status` reads), on a port of their own.
        metrics_listen = "127.0.0.1:0"

        [store]
        path = "{store}"

        [providers.mock-openai]
        type = "openai"
        base_url = "{mock_base}/v1"
        api_key_env = "SLUICE_DEMO_MOCK_KEY"

        [providers.mock-anthropic]
        type = "anthropic"
        base_url = "{mock_base}/v1"
        api_key_env = "SLUICE_DEMO_MOCK_KEY"

        # The demo's failures are asked for per request (`#mock status=500`...): they say
        # nothing about the deployment's health, so they neither open its circuit nor hold
        # a Retry-After against the next request.
        [breaker]
        enabled = false

        [deployments.mock-gpt]
        provider = "mock-openai"
        model = "gpt-4o-mini"

        [deployments.mock-claude]
        provider = "mock-anthropic"
        model = "claude-sonnet-4-5"

        [aliases.gpt-4o-mini]
        deployments = ["mock-gpt"]
        retry = {{ retry_after_max_ms = 0 }}

        [aliases.claude-sonnet-4-5]
        deployments = ["mock-claude"]
        retry = {{ retry_after_max_ms = 0 }}

        # A route whose primary fails every second request (500): the fallback answers them,
        # and after 20 requests the primary's circuit opens (`sluice status` shows it).
        [providers.mock-flaky]
        type = "openai"
        base_url = "{flaky_base}/v1"
        api_key_env = "SLUICE_DEMO_MOCK_KEY"

        [deployments.mock-flaky]
        provider = "mock-flaky"
        model = "gpt-4o-mini"
        breaker = {{ enabled = true }}

        [aliases.resilient]
        deployments = ["mock-flaky"]
        fallbacks = ["mock-claude"]

        # A route for callers within their quota; past the demo team's soft limit (see
        # DEMO_QUOTA) it is served by the cheaper alias, and the answer says so.
        [aliases.smart]
        deployments = ["mock-claude"]
        over_soft_limit = "gpt-4o-mini"
        "#,
        store = store_path.display().to_string().replace('\\', "/"),
    );
    // The mock does not check keys; the value only satisfies the provider types.
    Ok(Settings::from_toml(
        &text,
        Path::new("demo.toml"),
        |name| (name == "SLUICE_DEMO_MOCK_KEY").then(|| "mock".to_owned()),
    )?)
}

pub(crate) async fn demo(
    config: Option<PathBuf>,
    listen: String,
    json: bool,
) -> anyhow::Result<()> {
    init_logging();
    // The demo keeps its records where `sluice logs` looks by default.
    let store_path = match load_settings(config.as_deref())?.store.location {
        sluice_config::StoreLocation::Sqlite(path) => path,
        sluice_config::StoreLocation::Postgres(_) => {
            anyhow::bail!(
                "`sluice demo` keeps its records in a SQLite file: set [store] path, not url"
            )
        }
    };
    let mock = MockUpstream::both().start().await;
    let flaky = MockUpstream::openai()
        .chaos(Chaos {
            fail_ratio: 0.5,
            fail_status: 500,
            stall_ratio: 0.0,
            stall_ms: 0,
        })
        .start()
        .await;
    let settings = demo_settings(&mock.base_url(), &flaky.base_url(), &listen, &store_path)?;
    let store = Stores::open(&sluice_store::StoreLocation::Sqlite(store_path.clone()))
        .await
        .with_context(|| format!("opening the store at {}", store_path.display()))?;
    let key = store
        .keys
        .create_key(NewKey {
            name: "demo".into(),
            team: Some("demo".into()),
            ..NewKey::default()
        })
        .await?;
    sluice_pipeline::budgets::set_budget(&*store.budgets, demo_quota())
        .await
        .context("setting the demo team's quota")?;
    let aliases: Vec<String> = settings.aliases.keys().cloned().collect();
    run(settings, (ConfigSource::without_file(), None), store, move |bound| {
        let addr = bound.addr;
        let metrics_url = bound
            .metrics
            .map_or_else(String::new, |metrics| format!("http://{metrics}"));
        if json {
            let line = serde_json::json!({ "base_url": format!("http://{addr}"), "metrics_url": metrics_url, "api_key": key.secret, "models": aliases });
            announce!("{line}");
            return;
        }
        announce!(
            "Sluice demo: the gateway in front of a built-in mock provider (no provider key needed).\n\n  \
             OpenAI SDK     base_url=http://{addr}/v1\n  \
             Anthropic SDK  base_url=http://{addr}\n  \
             API key        {key}\n  \
             models         gpt-4o-mini (mock, OpenAI dialect), claude-sonnet-4-5 (mock, Anthropic dialect),\n                 \
             resilient (a primary failing every second request, with a fallback),\n                 \
             smart (served by gpt-4o-mini past the demo team's soft limit of 20 requests a minute on it)\n\n\
             Either SDK may call either model; Sluice translates.\n\n  \
             curl http://{addr}/v1/chat/completions -H 'Authorization: Bearer {key}' \\\n    \
             -H 'content-type: application/json' \\\n    \
             -d '{{\"model\":\"claude-sonnet-4-5\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n\n\
             Then `sluice logs` shows the request records and `sluice status --url {metrics_url}` the\n\
             deployments (metrics: {metrics_url}/metrics). Ctrl-C stops.",
            key = key.secret,
        );
    })
    .await
}

#[derive(clap::Args)]
pub(crate) struct MockArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9900")]
    listen: String,
    /// Share of chat requests answered with --fail-status (0 to 1).
    #[arg(long, value_name = "RATIO", default_value_t = 0.0, value_parser = ratio, allow_negative_numbers = true)]
    fail_ratio: f64,
    /// The error status of failed requests (400 to 599), in the dialect's error body.
    #[arg(long, value_name = "STATUS", default_value_t = 500, value_parser = clap::value_parser!(u16).range(400..=599))]
    fail_status: u16,
    /// Share of chat requests whose response headers wait --stall-ms (0 to 1).
    #[arg(long, value_name = "RATIO", default_value_t = 0.0, value_parser = ratio, allow_negative_numbers = true)]
    stall_ratio: f64,
    /// How long a stalled request waits before its headers, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    stall_ms: u64,
    /// Streams one HTTP/2 connection may carry at once (the mock also speaks HTTP/2 by prior
    /// knowledge, h2c, on the same port).
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_streams: u32,
}

/// Parses a share between 0 and 1 inclusive.
fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        Ok(_) => Err("must be between 0 and 1".to_owned()),
        Err(_) => Err("must be a number between 0 and 1, e.g. 0.25".to_owned()),
    }
}

/// `sluice mock`: the mock provider alone, failing and stalling the shares asked for.
pub(crate) async fn mock(args: MockArgs) -> anyhow::Result<()> {
    init_logging();
    let MockArgs {
        listen,
        fail_ratio,
        fail_status,
        stall_ratio,
        stall_ms,
        http2_max_streams,
    } = args;
    let chaos = Chaos {
        fail_ratio,
        fail_status,
        stall_ratio,
        stall_ms,
    };
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen `{listen}` is not an address:port"))?;
    // Bind first, then announce the bound address: with port 0 the requested one says nothing.
    // Chaos with zero shares changes nothing, so it is always set.
    let mock = MockUpstream::both()
        .chaos(chaos)
        .http2_max_streams(http2_max_streams)
        .start_on(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    announce!(
        "mock provider listening on {} (OpenAI and Anthropic dialects under /v1; HTTP/1.1 and h2c)",
        mock.base_url()
    );
    if chaos.fail_ratio > 0.0 || chaos.stall_ratio > 0.0 {
        announce!(
            "chaos: {} of chat requests fail with {}, {} stall {} ms before the headers",
            chaos.fail_ratio,
            chaos.fail_status,
            chaos.stall_ratio,
            chaos.stall_ms
        );
    }
    shutdown_signal().await;
    mock.shutdown();
    Ok(())
}
