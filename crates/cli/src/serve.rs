//! `sluice serve`, `sluice demo` and `sluice mock`: wire configuration into the running gateway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use sluice_config::{ProviderType, Settings};
use sluice_pipeline::Gateway;
use sluice_providers::{Deployment, ProviderKind, Timeouts, Upstream};
use sluice_routing::{DeploymentHealth, RouteSpec, Router};
use sluice_server::AppState;
use sluice_store::{NewKey, RecordQueue, Store};
use sluice_testkit::MockUpstream;

/// The file used when `--config` is not given.
const DEFAULT_CONFIG: &str = "sluice.toml";

/// Loads the configuration: the given file, else `./sluice.toml` if present, else defaults.
pub(crate) fn load_settings(config: Option<&Path>) -> anyhow::Result<Settings> {
    let path = match config {
        Some(path) => Some(path.to_owned()),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
    };
    Ok(match path {
        Some(path) => Settings::load(&path)?,
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

pub(crate) async fn serve(config: Option<PathBuf>, listen: Option<String>) -> anyhow::Result<()> {
    init_logging();
    let mut settings = load_settings(config.as_deref())?;
    if let Some(listen) = listen {
        settings.server.listen = listen
            .parse()
            .with_context(|| format!("--listen `{listen}` is not an address:port"))?;
    }
    let store = Store::open(&settings.store.path)
        .await
        .with_context(|| format!("opening the store at {}", settings.store.path.display()))?;
    run(settings, store, |addr| {
        println!("sluice listening on http://{addr}")
    })
    .await
}

/// Runs the gateway until Ctrl-C or SIGTERM, then drains in-flight requests and the record
/// queue. `on_ready` is called once the socket is bound.
async fn run(
    settings: Settings,
    store: Store,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let gateway_parts = build(&settings)?;
    let queue = RecordQueue::start(store.clone(), settings.store.record_queue);
    let retention = sluice_store::RecordRetention::start(store.clone(), settings.store.retention);
    let gateway = Gateway::new(
        gateway_parts.0,
        gateway_parts.1,
        store.clone(),
        queue.sender(),
    );
    let drills = gateway.clone();
    let app = sluice_server::app(AppState {
        gateway,
        max_body_bytes: settings.server.max_body_bytes,
    });
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| format!("binding {}", settings.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, deployments = settings.deployments.len(), aliases = settings.aliases.len(), "ready");
    on_ready(addr);
    sluice_server::serve(listener, app, shutdown_signal()).await?;
    drills.drain_drills().await;
    let written = queue.shutdown().await;
    retention.shutdown().await;
    tracing::info!(records_written = written, "stopped");
    store.close().await;
    Ok(())
}

/// Turns settings into the router (with every deployment's live health) and the upstream
/// client.
pub(crate) fn build(settings: &Settings) -> anyhow::Result<(Router, Upstream)> {
    let deployments: Vec<Arc<DeploymentHealth>> = settings
        .deployments
        .iter()
        .map(|d| {
            let deployment = Arc::new(Deployment {
                name: d.name.clone(),
                provider: d.provider.clone(),
                kind: match d.provider_type {
                    ProviderType::Openai => ProviderKind::OpenAi,
                    ProviderType::OpenaiCompatible => ProviderKind::OpenAiCompatible,
                    ProviderType::Anthropic => ProviderKind::Anthropic,
                },
                base_url: d.base_url.clone(),
                model: d.model.clone(),
                api_key: d.api_key.clone(),
                default_max_tokens: d.default_max_tokens,
            });
            Arc::new(DeploymentHealth::new(deployment, d.breaker, d.capacity))
        })
        .collect();
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
    let up = &settings.upstream;
    let upstream = Upstream::new(Timeouts {
        connect: up.connect_timeout,
        first_token: up.first_token_timeout,
        idle: up.idle_timeout,
        total: up.total_timeout,
    })
    .context("building the upstream HTTP client")?;
    Ok((router, upstream))
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

/// The demo configuration: one OpenAI-dialect and one Anthropic-dialect deployment, both on
/// the built-in mock, so either SDK can reach either dialect.
fn demo_settings(mock_base: &str, listen: &str, store_path: &Path) -> anyhow::Result<Settings> {
    let text = format!(
        r#"
        [server]
        listen = "{listen}"

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
    let store_path = load_settings(config.as_deref())?.store.path;
    let mock = MockUpstream::both().start().await;
    let settings = demo_settings(&mock.base_url(), &listen, &store_path)?;
    let store = Store::open(&store_path)
        .await
        .with_context(|| format!("opening the store at {}", store_path.display()))?;
    let key = store
        .create_key(NewKey {
            name: "demo".into(),
            team: Some("demo".into()),
            ..NewKey::default()
        })
        .await?;
    let aliases: Vec<String> = settings.aliases.keys().cloned().collect();
    run(settings, store, move |addr| {
        if json {
            let line = serde_json::json!({ "base_url": format!("http://{addr}"), "api_key": key.secret, "models": aliases });
            println!("{line}");
            return;
        }
        println!(
            "Sluice demo: the gateway in front of a built-in mock provider (no provider key needed).\n\n  \
             OpenAI SDK     base_url=http://{addr}/v1\n  \
             Anthropic SDK  base_url=http://{addr}\n  \
             API key        {key}\n  \
             models         gpt-4o-mini (mock, OpenAI dialect), claude-sonnet-4-5 (mock, Anthropic dialect)\n\n\
             Either SDK may call either model; Sluice translates.\n\n  \
             curl http://{addr}/v1/chat/completions -H 'Authorization: Bearer {key}' \\\n    \
             -H 'content-type: application/json' \\\n    \
             -d '{{\"model\":\"claude-sonnet-4-5\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n\n\
             Then `sluice logs` shows the request records. Ctrl-C stops.",
            key = key.secret,
        );
    })
    .await
}

pub(crate) async fn mock(listen: String) -> anyhow::Result<()> {
    init_logging();
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen `{listen}` is not an address:port"))?;
    // Bind first, then announce the bound address: with port 0 the requested one says nothing.
    let mock = MockUpstream::both()
        .start_on(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!(
        "mock provider listening on {} (OpenAI and Anthropic dialects under /v1)",
        mock.base_url()
    );
    shutdown_signal().await;
    mock.shutdown();
    Ok(())
}
