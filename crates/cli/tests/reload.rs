//! Hot reload of the configuration, against the built `sluice serve` and two mock providers:
//! SIGHUP and the file watch put a changed file in force, an invalid one is refused while the
//! running configuration keeps serving, and requests under way — a stream among them — finish
//! on the configuration they started with.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_store::{NewKey, StoreLocation, Stores};
use sluice_testkit::MockUpstream;

const ADMIN_TOKEN: &str = "reload-test-admin-token-0123456789";

/// A `sluice serve` in a folder of its own, killed when the test ends unless stopped before.
struct Gateway {
    child: Option<Child>,
    url: String,
    dir: PathBuf,
    key: String,
    client: reqwest::Client,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The configuration: deployment `a` on `mock_a` (gpt-4o-mini), `b` on `mock_b` (gpt-4o),
/// alias `m` on `target`; `extra` appended (TOML).
fn config(mock_a: &MockUpstream, mock_b: &MockUpstream, target: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
token_env = "SLUICE_TEST_ADMIN_TOKEN"

[providers.mock-a]
type = "openai_compatible"
base_url = "{}/v1"

[providers.mock-b]
type = "openai_compatible"
base_url = "{}/v1"

[deployments.a]
provider = "mock-a"
model = "gpt-4o-mini"

[deployments.b]
provider = "mock-b"
model = "gpt-4o"

[aliases.m]
deployments = ["{target}"]
{extra}
"#,
        mock_a.base_url(),
        mock_b.base_url()
    )
}

/// `[server] watch_config = false`, to put the file in force only on SIGHUP.
const UNWATCHED: &str = "[server]\nwatch_config = false\n";

impl Gateway {
    /// Writes `config` as `sluice.toml` in a fresh folder with a key, and starts the gateway.
    async fn start(name: &str, config: &str) -> Gateway {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("sluice-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sluice.toml"), config).unwrap();
        let store = Stores::open(&StoreLocation::Sqlite(dir.join("sluice-data/sluice.db")))
            .await
            .unwrap();
        let key = store
            .keys
            .create_key(NewKey {
                name: "reload-test".into(),
                team: Some("qa".into()),
                ..NewKey::default()
            })
            .await
            .unwrap();
        store.close().await;
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let (child, line) = common::first_line_logging_to(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .current_dir(&dir)
                .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
                .args(["serve", "--listen", "127.0.0.1:0"]),
            Stdio::from(log),
        );
        Gateway {
            child: Some(child),
            url: common::announced_url(&line),
            dir,
            key: key.secret,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("sluice.toml")
    }

    /// Replaces the file the way an editor or a deploy tool should: write beside, rename over.
    fn write_config(&self, text: &str) -> String {
        let beside = self.dir.join("sluice.toml.new");
        std::fs::write(&beside, text).unwrap();
        std::fs::rename(&beside, self.config_path()).unwrap();
        sha256(text)
    }

    fn sighup(&self) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// `GET /admin/v1/config`.
    async fn active_config(&self) -> Value {
        let response = self
            .client
            .get(format!("{}/admin/v1/config", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Polls `/admin/v1/config` until its hash is `sha256` (at most 10 s).
    async fn wait_for_hash(&self, sha256: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let config = self.active_config().await;
            if config["sha256"] == sha256 {
                return config;
            }
            assert!(
                Instant::now() < deadline,
                "the configuration {sha256} was not put in force: {config}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of `sluice_config_reloads_total{result=..}`.
    async fn reloads_metric(&self, result: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = format!("sluice_config_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
            .trim()
            .parse()
            .unwrap()
    }

    fn chat_request(&self, content: &str, stream: bool) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(&self.key)
            .json(&json!({"model": "m", "stream": stream, "max_tokens": 64,
                          "messages": [{"role": "user", "content": content}]}))
    }

    /// One chat request: its status and the deployment that served it.
    async fn chat(&self) -> (u16, String) {
        let response = self.chat_request("hello", false).send().await.unwrap();
        let deployment = response
            .headers()
            .get("x-sluice-deployment")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (response.status().as_u16(), deployment)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// SIGTERM, wait, and read every request record.
    async fn stop_and_read_records(mut self) -> Vec<sluice_store::RequestRecord> {
        common::stop(self.child.take().unwrap());
        let store = Stores::open(&StoreLocation::Sqlite(
            self.dir.join("sluice-data/sluice.db"),
        ))
        .await
        .unwrap();
        let records = store.queries.latest_records(10_000).await.unwrap();
        store.close().await;
        records
    }
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn loaded_at(config: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        config["loaded_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_an_alias_to_its_new_deployment() {
    let (mock_a, mock_b) = (
        MockUpstream::openai().start().await,
        MockUpstream::openai().start().await,
    );
    let first = config(&mock_a, &mock_b, "a", UNWATCHED);
    let gw = Gateway::start("sighup", &first).await;
    assert_eq!(gw.chat().await, (200, "a".to_owned()));

    let before = gw.active_config().await;
    assert_eq!(before["sha256"], sha256(&first));
    assert_eq!(
        before["path"],
        gw.config_path().display().to_string().replace("\\", "/")
    );
    assert_eq!(
        (
            before["reloads"].as_u64(),
            before["reloads_refused"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // Like the other admin routes, only with the admin token.
    let anonymous = gw
        .client
        .get(format!("{}/admin/v1/config", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // The route moves; the body cap, fixed at start, is reported instead.
    let restart_only = format!("{UNWATCHED}max_body_bytes = 1000\n");
    let second = gw.write_config(&config(&mock_a, &mock_b, "b", &restart_only));
    gw.sighup();
    let after = gw.wait_for_hash(&second).await;
    assert!(
        loaded_at(&after) > loaded_at(&before),
        "{before} then {after}"
    );
    assert_eq!(after["reloads"], 1);

    assert_eq!(gw.chat().await, (200, "b".to_owned()));
    assert_eq!((mock_a.hits(), mock_b.hits()), (1, 1));
    assert_eq!(
        mock_b.last_request().unwrap().body["model"],
        "gpt-4o",
        "the new deployment's model is asked for"
    );
    assert_eq!(gw.reloads_metric("ok").await, 1.0);

    // `sluice status` shows the configuration in force.
    let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(&gw.dir)
        .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["status", "--url", &gw.url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{out}");
    assert!(out.contains(&format!("sha256 {second}")), "{out}");
    assert!(
        out.contains(&format!("loaded {}", after["loaded_at"].as_str().unwrap())),
        "{out}"
    );
    let log = gw.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    let restart = log
        .lines()
        .find(|l| l.contains("need a restart"))
        .unwrap_or_else(|| panic!("no restart warning\n{log}"));
    let restart: Value = serde_json::from_str(restart).unwrap();
    assert_eq!(
        (&restart["level"], &restart["fields"]["fields"]),
        (&json!("WARN"), &json!("server.max_body_bytes"))
    );
    // Still the cap the gateway started with (4 MiB): a 2 kB body is accepted.
    let long = gw
        .chat_request(&"x".repeat(2_000), false)
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_picks_up_a_changed_file() {
    let (mock_a, mock_b) = (
        MockUpstream::openai().start().await,
        MockUpstream::openai().start().await,
    );
    let gw = Gateway::start("watch", &config(&mock_a, &mock_b, "a", "")).await;
    assert_eq!(gw.chat().await, (200, "a".to_owned()));

    let second = gw.write_config(&config(&mock_a, &mock_b, "b", ""));
    gw.wait_for_hash(&second).await;
    assert_eq!(gw.chat().await, (200, "b".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_watch_off_only_sighup_reloads() {
    let (mock_a, mock_b) = (
        MockUpstream::openai().start().await,
        MockUpstream::openai().start().await,
    );
    let first = config(&mock_a, &mock_b, "a", UNWATCHED);
    let gw = Gateway::start("unwatched", &first).await;
    let second = gw.write_config(&config(&mock_a, &mock_b, "b", UNWATCHED));
    // A watch reads the file every second: two and a half of them would have seen it.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(gw.active_config().await["sha256"], sha256(&first));
    assert_eq!(gw.chat().await, (200, "a".to_owned()));

    gw.sighup();
    gw.wait_for_hash(&second).await;
    assert_eq!(gw.chat().await, (200, "b".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_and_the_running_one_keeps_serving() {
    let (mock_a, mock_b) = (
        MockUpstream::openai().start().await,
        MockUpstream::openai().start().await,
    );
    let first = config(&mock_a, &mock_b, "a", "");
    let gw = Gateway::start("invalid", &first).await;

    gw.write_config(&config(&mock_a, &mock_b, "absent", ""));
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.reloads_metric("invalid").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no refusal counted\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let active = gw.active_config().await;
    assert_eq!(active["sha256"], sha256(&first));
    assert_eq!(
        (
            active["reloads"].as_u64(),
            active["reloads_refused"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(gw.chat().await, (200, "a".to_owned()));
    assert_eq!(gw.reloads_metric("ok").await, 0.0);

    // One error line, naming the field as `sluice check-config` does.
    let log = gw.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("configuration reload refused"))
        .collect();
    assert_eq!(
        refusals.len(),
        1,
        "the same invalid file is reported once\n{log}"
    );
    let refusal: Value = serde_json::from_str(refusals[0]).unwrap();
    assert_eq!(refusal["level"], "ERROR");
    let error = refusal["fields"]["error"].as_str().unwrap();
    assert!(
        error.contains("aliases.m.deployments[0]: no deployment named `absent`"),
        "{error}"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(&gw.dir)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&check.stderr).contains(error),
        "check-config says the same"
    );

    // Fixed, it goes in.
    let fixed = gw.write_config(&config(&mock_a, &mock_b, "b", ""));
    gw.wait_for_hash(&fixed).await;
    assert_eq!(gw.chat().await, (200, "b".to_owned()));
}

/// `[prices]` for both models at `usd_per_mtok` for input and output.
fn prices(usd_per_mtok: f64) -> String {
    format!(
        "[prices.\"gpt-4o-mini\"]\ninput_per_mtok = {usd_per_mtok}\noutput_per_mtok = {usd_per_mtok}\n\
         [prices.\"gpt-4o\"]\ninput_per_mtok = {usd_per_mtok}\noutput_per_mtok = {usd_per_mtok}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_open_across_a_reload_ends_on_the_configuration_it_started_with() {
    let (mock_a, mock_b) = (
        MockUpstream::openai().start().await,
        MockUpstream::openai().start().await,
    );
    let unwatched_at = |usd: f64| format!("{UNWATCHED}{}", prices(usd));
    let gw = Gateway::start("stream", &config(&mock_a, &mock_b, "a", &unwatched_at(1.0))).await;

    let words = "one two three four five six seven eight nine ten eleven twelve";
    let response = gw
        .chat_request(&format!("#mock chunk_delay_ms=150 text={words}"), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut streamed = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();

    // While it streams: `m` moves to `b`, and every token costs a thousand times more.
    let second = gw.write_config(&config(&mock_a, &mock_b, "b", &unwatched_at(1_000.0)));
    gw.sighup();
    gw.wait_for_hash(&second).await;
    assert_eq!(gw.chat().await, (200, "b".to_owned()));

    while let Some(chunk) = body.next().await {
        streamed.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(streamed.trim_end().ends_with("data: [DONE]"), "{streamed}");
    let text: String = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|event| {
            event["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, words, "the whole answer, uncut");

    let records = gw.stop_and_read_records().await;
    let stream = records.iter().find(|r| r.stream).unwrap();
    let after = records.iter().find(|r| !r.stream).unwrap();
    assert_eq!(stream.deployment.as_deref(), Some("a"));
    assert_eq!(after.deployment.as_deref(), Some("b"));
    // $1 per million tokens is one micro-dollar a token: the stream is priced as it began.
    let tokens = |r: &sluice_store::RequestRecord| {
        i64::from(r.input_tokens.unwrap() + r.output_tokens.unwrap())
    };
    assert_eq!(stream.cost_micros, Some(tokens(stream)));
    assert_eq!(after.cost_micros, Some(1_000 * tokens(after)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_during_reloads_all_succeed() {
    let (mock_a, mock_b) = (
        MockUpstream::openai().start().await,
        MockUpstream::openai().start().await,
    );
    let gw = Arc::new(Gateway::start("steady", &config(&mock_a, &mock_b, "a", UNWATCHED)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    // Four clients one request after another: load that the reloads interleave with, bounded.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (gw, stop, sent) = (gw.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, deployment) = gw.chat().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        failures.push((status, deployment));
                    }
                }
                failures
            })
        })
        .collect();

    for round in 0..6 {
        let target = if round % 2 == 0 { "b" } else { "a" };
        let hash = gw.write_config(&config(&mock_a, &mock_b, target, UNWATCHED));
        gw.sighup();
        gw.wait_for_hash(&hash).await;
        let sent_before = sent.load(Ordering::Relaxed);
        // Some traffic on each configuration before the next swap.
        while sent.load(Ordering::Relaxed) < sent_before + 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert_eq!(failures, [], "no request failed");
    assert!(sent.load(Ordering::Relaxed) >= 48);
    assert!(mock_a.hits() > 0 && mock_b.hits() > 0);
    assert_eq!(gw.active_config().await["reloads"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_keep_their_rows_and_running_totals_across_a_reload() {
    let (mock_a, mock_b) = (
        MockUpstream::openai().start().await,
        MockUpstream::openai().start().await,
    );
    // Budget rows are reread hourly here: only the reload could lose them within the test.
    let settings = format!("{UNWATCHED}[budgets]\nreload_ms = 3600000\n");
    let gw = Gateway::start("budgets", &config(&mock_a, &mock_b, "a", &settings)).await;
    let put = gw
        .client
        .put(format!("{}/admin/v1/budgets", gw.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"scope": "team:qa", "metric": "requests", "period": "day", "amount": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(gw.chat().await, (200, "a".to_owned()));
    assert_eq!(gw.chat().await, (200, "a".to_owned()));

    let second = gw.write_config(&config(&mock_a, &mock_b, "b", &settings));
    gw.sighup();
    gw.wait_for_hash(&second).await;
    assert_eq!(gw.chat().await, (200, "b".to_owned()));
    assert_eq!(
        gw.chat().await.0,
        429,
        "the team's fourth request of the day"
    );
}
