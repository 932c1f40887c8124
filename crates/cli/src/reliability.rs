//! `sluice status` (the live state of a running gateway: its configuration's hash and load
//! time; its deployments' circuits, load, latency, retry budgets) and `sluice drill ROUTE` (a set of requests replayed through every
//! deployment of a route, with a readiness table).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::Value;
use sluice_pipeline::drill::{Probe, probe};
use sluice_routing::{BreakerPolicy, CapacityPolicy, DeploymentHealth, health};
use sluice_types::ChatRequest;
use sluice_types::record::SchemaCheck;

use crate::serve::{build, load_settings, load_settings_read_only};

/// `sluice status`: reads the detailed `/health` of the gateway at `url` (default: the
/// configured `server.metrics_listen`, else `server.listen`) and prints one row per
/// deployment, then each route's retry budgets. The client-facing listener shows the detail
/// only with the admin token, sent when `[admin] token_env` is configured.
pub(crate) async fn status(
    config: Option<PathBuf>,
    url: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let settings = load_settings_read_only(config.as_deref())?;
    let url = match url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => match settings.server.metrics_listen {
            Some(metrics) => base_url(metrics),
            None => gateway_url(&settings),
        },
    };
    let client = admin_client()?;
    let mut request = client.get(format!("{url}/health"));
    if let Some(token) = &settings.policy.admin_token {
        request = request.bearer_auth(secrecy::ExposeSecret::expose_secret(token));
    }
    let health: Value = request
        .send()
        .await
        .with_context(|| format!("no gateway answering at {url} (is `sluice serve` running?)"))?
        .error_for_status()?
        .json()
        .await
        .context("reading /health")?;
    if health.get("deployments").is_none() {
        anyhow::bail!(
            "the gateway at {url} answered its liveness only ({}): point --url at its \
             `server.metrics_listen`, or configure `[admin] token_env` to read the detail here",
            health["status"]
        );
    }
    if json {
        println!("{health}");
        return Ok(());
    }
    print!("{}", status_table(&health));
    Ok(())
}

/// The base URL of the gateway the configuration describes (`server.listen`; an unspecified
/// address is reached on loopback).
pub(crate) fn gateway_url(settings: &sluice_config::Settings) -> String {
    base_url(settings.server.listen)
}

/// `http://host:port` for a listen address (an unspecified address is reached on loopback).
fn base_url(listen: std::net::SocketAddr) -> String {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        listen.ip().to_string()
    };
    format!("http://{host}:{}", listen.port())
}

/// The HTTP client of the commands that ask a running gateway (`status`, `budgets show`).
pub(crate) fn admin_client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")
}

/// The status as text: a header line, a row per deployment, the retry budgets per route.
fn status_table(health: &Value) -> String {
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let ms = |v: &Value| v.as_f64().map_or("-".to_owned(), |ms| format!("{ms:.1}"));
    let mut out = format!(
        "gateway {} · records shed {} · drills shed {}\n",
        text(&health["status"]),
        text(&health["records_shed"]),
        text(&health["drills_shed"]),
    );
    let ready = &health["ready"];
    if ready.is_object() {
        let degraded: Vec<String> = ready["degraded"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|part| match part["for_ms"].as_u64() {
                Some(ms) => format!("{} for {:.1}s", text(&part["part"]), ms as f64 / 1000.0),
                None => text(&part["part"]),
            })
            .collect();
        let mode = match (degraded.is_empty(), health["store_outage"].as_str()) {
            (true, _) => "normal".to_owned(),
            (false, Some(reason)) => format!("degraded: {} ({reason})", degraded.join(", ")),
            (false, None) => format!("degraded: {}", degraded.join(", ")),
        };
        out.push_str(&format!(
            "mode {mode} · journal {} bytes · records replayed {}\n",
            text(&health["journal_bytes"]),
            text(&health["records_replayed"]),
        ));
    }
    let config = &health["config"];
    if config.is_object() {
        out.push_str(&format!(
            "config {} · sha256 {} · loaded {} · {} reloads, {} refused\n",
            text(&config["path"]),
            text(&config["sha256"]),
            text(&config["loaded_at"]),
            text(&config["reloads"]),
            text(&config["reloads_refused"]),
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "{:<24} {:<14} {:<18} {:>10} {:>9} {:>7} {:>9} {:>10} {:>10} {:>10}\n",
        "DEPLOYMENT",
        "PROVIDER",
        "BREAKER",
        "FAILED/REQ",
        "IN FLIGHT",
        "QUEUED",
        "ATTEMPTS",
        "TTFT ms",
        "p99 ms",
        "TOTAL ms"
    ));
    for d in health["deployments"].as_array().into_iter().flatten() {
        let mut breaker = text(&d["breaker"]);
        if let Some(ms) = d["breaker_retry_in_ms"].as_u64() {
            breaker.push_str(&format!(" ({}s)", ms.div_ceil(1000)));
        }
        if let Some(ms) = d["cooling_down_ms"].as_u64() {
            breaker.push_str(&format!(" cool {}s", ms.div_ceil(1000)));
        }
        out.push_str(&format!(
            "{:<24} {:<14} {:<18} {:>10} {:>9} {:>7} {:>9} {:>10} {:>10} {:>10}\n",
            text(&d["deployment"]),
            text(&d["provider"]),
            breaker,
            format!(
                "{}/{}",
                text(&d["window_failures"]),
                text(&d["window_requests"])
            ),
            text(&d["in_flight"]),
            text(&d["queued"]),
            text(&d["attempts"]),
            ms(&d["ttft_ewma_ms"]),
            ms(&d["ttft_p99_ms"]),
            ms(&d["latency_ewma_ms"]),
        ));
    }
    out.push_str(&format!(
        "\nlast {} min{:<13} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}  ERRORS BY KIND\n",
        health::RECENT_WINDOW.as_secs() / 60,
        "",
        "ATTEMPTS",
        "ERR %",
        "MALFORMED",
        "p50 ms",
        "p99 ms",
        "TTFT p50",
        "TTFT p99",
    ));
    for d in health["deployments"].as_array().into_iter().flatten() {
        let r = &d["recent"];
        let pct = |v: &Value| {
            v.as_f64()
                .map_or("-".to_owned(), |x| format!("{:.1}", x * 100.0))
        };
        let errors: Vec<String> = r["errors_by_kind"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        out.push_str(&format!(
            "{:<24} {:>9} {:>7} {:>9}% {:>9} {:>9} {:>9} {:>9}  {}\n",
            text(&d["deployment"]),
            text(&r["attempts"]),
            pct(&r["error_rate"]),
            pct(&r["malformed_rate"]),
            ms(&r["latency_p50_ms"]),
            ms(&r["latency_p99_ms"]),
            ms(&r["ttft_p50_ms"]),
            ms(&r["ttft_p99_ms"]),
            if errors.is_empty() {
                "-".to_owned()
            } else {
                errors.join(", ")
            },
        ));
    }
    for (alias, route) in health["routes"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "\nroute {alias} ({}): retry budget\n",
            text(&route["strategy"])
        ));
        for b in route["retry_budget"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<24} {:<9} {} available · {} requests, {} retries, {} refused in the window\n",
                text(&b["deployment"]),
                text(&b["role"]),
                text(&b["available"]),
                text(&b["requests"]),
                text(&b["retries"]),
                text(&b["refused"]),
            ));
        }
    }
    out
}

/// Options of `sluice drill`.
pub(crate) struct DrillOptions {
    pub route: String,
    pub requests: Option<PathBuf>,
    pub repeat: u32,
    pub concurrency: usize,
    pub min_success: f64,
    pub json: bool,
}

/// The requests `sluice drill` sends when no file is given: plain text, a streamed answer, and
/// a structured one (so schema validity is measured).
const BUILT_IN_REQUESTS: &str = r#"{"messages":[{"role":"user","content":"Reply with the single word: ready"}],"max_tokens":16}
{"messages":[{"role":"user","content":"Count from one to five."}],"max_tokens":64,"stream":true}
{"messages":[{"role":"user","content":"Give the capital of France as JSON."}],"max_tokens":64,"response_format":{"type":"json_schema","json_schema":{"name":"capital","strict":true,"schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}}}}
"#;

/// One deployment's line of the readiness table.
#[derive(Debug, serde::Serialize)]
struct Readiness {
    deployment: String,
    role: &'static str,
    requests: usize,
    succeeded: usize,
    success_rate: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    schema_checked: usize,
    schema_valid: usize,
    /// Live traffic: the deployment's answers to structured requests checked in the recent
    /// records, and how many did not hold their schema (repaired ones did).
    recent_schema_checked: usize,
    recent_schema_violations: usize,
    errors: std::collections::BTreeMap<String, usize>,
}

/// Records read for the live schema-violation rate: the most recent ones.
const RECENT_RECORDS: u32 = 10_000;

/// Per deployment: structured answers checked in the recent live records, and violations.
async fn recent_schema_checks(
    settings: &sluice_config::Settings,
) -> std::collections::HashMap<String, (usize, usize)> {
    let mut checks = std::collections::HashMap::new();
    let records = match crate::admin::open_configured_store(settings).await {
        Ok(store) => {
            let records = store.queries.latest_records(RECENT_RECORDS).await;
            store.close().await;
            records
        }
        Err(e) => {
            eprintln!("no live schema-violation rates: {e:#}");
            return checks;
        }
    };
    let records = match records {
        Ok(records) => records,
        Err(e) => {
            eprintln!("no live schema-violation rates: reading records: {e}");
            return checks;
        }
    };
    for attempt in records
        .iter()
        .filter(|r| r.drill_of.is_none())
        .flat_map(|r| r.attempts.iter())
    {
        if let Some(check) = attempt.schema {
            let entry: &mut (usize, usize) = checks.entry(attempt.deployment.clone()).or_default();
            entry.0 += 1;
            entry.1 += usize::from(check == SchemaCheck::Invalid);
        }
    }
    checks
}

/// `sluice drill ROUTE`: every request of the set, `repeat` times, through every deployment
/// of the route (pool and fallbacks, each on its own), then the table. Exits non-zero when a
/// deployment's success rate is below `min_success`.
pub(crate) async fn drill(config: Option<PathBuf>, options: DrillOptions) -> anyhow::Result<()> {
    let settings = load_settings(config.as_deref())?;
    let (router, upstream) = build(&settings)?;
    let route = router
        .route(&options.route)
        .map_err(|_| {
            let known: Vec<&str> = router.aliases().collect();
            anyhow::anyhow!(
                "no route `{}` in the configuration (routes: {})",
                options.route,
                known.join(", ")
            )
        })?
        .clone();
    let requests = read_requests(options.requests.as_deref(), &options.route)?;
    let timeouts = route.policy.timeouts;
    let upstream = upstream
        .with_connect_timeout(timeouts.connect)
        .context("building the upstream client")?;
    let recent = recent_schema_checks(&settings).await;
    let mut table = Vec::new();
    for (live, role) in route.members() {
        // Every deployment is drilled, an unhealthy one too: a breaker of its own, off, and no
        // concurrency limit but the drill's.
        let health = &Arc::new(DeploymentHealth::new(
            live.deployment.clone(),
            BreakerPolicy::disabled(),
            CapacityPolicy {
                max_concurrency: None,
                max_queue: 0,
                queue_timeout: Duration::from_secs(1),
            },
        ));
        let work = (0..options.repeat).flat_map(|_| requests.iter());
        let probes: Vec<Probe> = futures_util::stream::iter(work)
            .map(|req| {
                let (upstream, health) = (&upstream, Arc::clone(health));
                async move { probe(upstream, &health, req, timeouts).await }
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        let mut row = readiness(health.name(), role.as_str(), &probes);
        if let Some((checked, violations)) = recent.get(health.name()) {
            row.recent_schema_checked = *checked;
            row.recent_schema_violations = *violations;
        }
        table.push(row);
    }
    if options.json {
        for row in &table {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        print!("{}", readiness_table(&options.route, &table));
    }
    let not_ready: Vec<&str> = table
        .iter()
        .filter(|r| r.success_rate < options.min_success)
        .map(|r| r.deployment.as_str())
        .collect();
    if !not_ready.is_empty() {
        bail!(
            "not ready (success below {:.0}%): {}",
            options.min_success * 100.0,
            not_ready.join(", ")
        );
    }
    Ok(())
}

/// Requests from a JSONL file of OpenAI chat request bodies (`model` may be left out: the
/// route's alias is used), or the built-in set.
fn read_requests(path: Option<&Path>, alias: &str) -> anyhow::Result<Vec<ChatRequest>> {
    let text = match path {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => BUILT_IN_REQUESTS.to_owned(),
    };
    let mut requests = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut body: serde_json::Map<String, Value> = serde_json::from_str(line)
            .with_context(|| format!("line {}: not a JSON object", line_no + 1))?;
        body.insert("model".into(), Value::String(alias.to_owned()));
        let bytes = serde_json::to_vec(&body)?;
        let req = sluice_wire::openai::decode_chat_request(&bytes)
            .map_err(|e| anyhow::anyhow!("line {}: {e}", line_no + 1))?;
        requests.push(req);
    }
    if requests.is_empty() {
        bail!("no requests to send");
    }
    Ok(requests)
}

fn readiness(deployment: &str, role: &'static str, probes: &[Probe]) -> Readiness {
    let mut latencies: Vec<f64> = Vec::new();
    let mut errors = std::collections::BTreeMap::new();
    let (mut schema_checked, mut schema_valid) = (0, 0);
    for p in probes {
        match &p.result {
            Ok(answered) => {
                latencies.push(p.latency.as_secs_f64() * 1000.0);
                if let Some(valid) = answered.schema_valid {
                    schema_checked += 1;
                    schema_valid += usize::from(valid);
                }
            }
            Err(e) => *errors.entry(e.code().to_owned()).or_insert(0) += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies.get(rank.saturating_sub(1)).copied()
    };
    Readiness {
        deployment: deployment.to_owned(),
        role,
        requests: probes.len(),
        succeeded: latencies.len(),
        success_rate: latencies.len() as f64 / probes.len().max(1) as f64,
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
        schema_checked,
        schema_valid,
        recent_schema_checked: 0,
        recent_schema_violations: 0,
        errors,
    }
}

fn readiness_table(route: &str, rows: &[Readiness]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |ms| format!("{ms:.1}"));
    let mut out = format!("drill of route {route}\n\n");
    out.push_str(&format!(
        "{:<24} {:<9} {:>9} {:>9} {:>9} {:>9} {:>16}  ERRORS\n",
        "DEPLOYMENT", "ROLE", "SUCCESS", "p50 ms", "p99 ms", "SCHEMA", "LIVE VIOLATIONS"
    ));
    for r in rows {
        let schema = if r.schema_checked == 0 {
            "-".to_owned()
        } else {
            format!("{}/{}", r.schema_valid, r.schema_checked)
        };
        let violations = if r.recent_schema_checked == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.1}% of {}",
                r.recent_schema_violations as f64 * 100.0 / r.recent_schema_checked as f64,
                r.recent_schema_checked
            )
        };
        let errors: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        out.push_str(&format!(
            "{:<24} {:<9} {:>8.1}% {:>9} {:>9} {:>9} {:>16}  {}\n",
            r.deployment,
            r.role,
            r.success_rate * 100.0,
            ms(r.p50_ms),
            ms(r.p99_ms),
            schema,
            violations,
            if errors.is_empty() {
                "-".to_owned()
            } else {
                errors.join(", ")
            },
        ));
    }
    out
}
