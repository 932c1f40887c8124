//! A replica on Postgres that loses it keeps serving and loses no record; one killed with
//! SIGKILL under load loses no record of an answer it finished; replicas that lose Redis apply
//! their `on_counter_error` policy.
//!
//! Needs a real Postgres and Redis: `SLUICE_TEST_POSTGRES_URL`, `SLUICE_TEST_REDIS_URL`
//! (scripts/test and .ci/run set them). Every test uses a schema or key prefix of its own. A
//! server is made unreachable by cutting a TCP relay between the replica and it, so other
//! tests sharing the server are not disturbed.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_store::{NewKey, StoreLocation, Stores};
use sluice_testkit::{MockUpstream, TcpRelay};

const ADMIN_TOKEN: &str = "degraded-test-admin-token";

/// A schema of its own on the test database (dropped at the end), and the server's address.
struct Schema {
    schema: common::PostgresSchema,
    server: SocketAddr,
}

impl Schema {
    fn create() -> Option<Schema> {
        let Ok(url) = std::env::var("SLUICE_TEST_POSTGRES_URL") else {
            eprintln!(
                "skipped: set SLUICE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test to run it"
            );
            return None;
        };
        let host = url.split_once('@').unwrap().1.split_once('/').unwrap().0;
        Some(Schema {
            server: host.parse().unwrap(),
            schema: common::PostgresSchema::create(&url),
        })
    }

    fn url(&self) -> String {
        self.schema.url()
    }

    /// The schema's URL through `addr` (a relay to the server).
    fn url_via(&self, addr: SocketAddr) -> String {
        self.url()
            .replacen(&self.server.to_string(), &addr.to_string(), 1)
    }

    async fn stores(&self) -> Stores {
        Stores::open(&StoreLocation::Postgres(self.url()))
            .await
            .unwrap()
    }
}

/// A replica with the admin token this file's configurations name.
fn serve(dir: &Path) -> common::Served {
    common::Served::start(dir, &[("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN)])
}

/// A fresh folder with a config on `mock` and the store at `store_url`; the journal in the
/// folder.
fn folder(name: &str, mock: &MockUpstream, store_url: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-degraded-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[store]\nurl = \"{store_url}\"\njournal = \"journal\"\n\n\
         [admin]\ntoken_env = \"SLUICE_ADMIN_TOKEN\"\n\n\
         [providers.mock]\ntype = \"openai_compatible\"\nbase_url = \"{}/v1\"\n\n\
         [deployments.mini]\nprovider = \"mock\"\nmodel = \"gpt-4o-mini\"\n\n\
         [aliases.m]\ndeployments = [\"mini\"]\n",
        mock.base_url()
    );
    std::fs::write(dir.join("sluice.toml"), config).unwrap();
    dir
}

async fn key(stores: &Stores, name: &str) -> String {
    stores
        .keys
        .create_key(NewKey {
            name: name.into(),
            ..NewKey::default()
        })
        .await
        .unwrap()
        .secret
}

fn client() -> reqwest::Client {
    // The build's TLS backend is chosen at run time; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// One chat request, streamed or not, read to its end. The request id of a whole answer (a
/// stream: through `[DONE]`); otherwise the status and body.
async fn chat(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    stream: bool,
) -> Result<String, (u16, String)> {
    let sent = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "m", "max_tokens": 8, "stream": stream,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    let response = sent.map_err(|e| (0, e.to_string()))?;
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.text().await.map_err(|e| (status, e.to_string()))?;
    let whole = if stream {
        body.trim_end().ends_with("data: [DONE]")
    } else {
        serde_json::from_str::<Value>(&body).is_ok_and(|v| v["choices"][0]["message"].is_object())
    };
    match id {
        Some(id) if status == 200 && whole => Ok(id),
        _ => Err((status, body)),
    }
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client
        .get(url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The value of an unlabelled series in `/metrics`.
async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// Waits up to `within` for `/ready` to be in `mode`; its body.
async fn ready_in(client: &reqwest::Client, base: &str, mode: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let ready = get_json(client, format!("{base}/ready")).await;
        if ready["mode"] == mode {
            return ready;
        }
        assert!(Instant::now() < deadline, "never {mode}: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `within` until every id in `answered` has a record; the ids of `answered`
/// found, once per record.
async fn records_of(stores: &Stores, answered: &HashSet<String>, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let found: Vec<String> = stores
            .queries
            .latest_records(100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .filter(|id| answered.contains(id))
            .collect();
        if found.len() >= answered.len() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_postgres_keeps_serving_known_keys_and_loses_no_record() {
    let Some(schema) = Schema::create() else {
        return;
    };
    let mock = MockUpstream::openai().start().await;
    let relay = TcpRelay::start(schema.server).await.unwrap();
    let stores = schema.stores().await;
    let seen = key(&stores, "seen").await;
    let unseen = key(&stores, "unseen").await;
    let dir = folder("outage", &mock, &schema.url_via(relay.addr()));
    let replica = serve(&dir);
    let base = replica.url.clone();
    let client = client();
    let ready = get_json(&client, format!("{base}/ready")).await;
    assert_eq!(
        ready,
        json!({"status": "ready", "mode": "normal", "degraded": []})
    );

    let mut answered = HashSet::new();
    for i in 0..10 {
        answered.insert(chat(&client, &base, &seen, i % 2 == 0).await.unwrap());
    }

    relay.cut();
    // The requests go on; the first that needs the store finds it gone.
    let mut failed = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        match chat(&client, &base, &seen, answered.len() % 3 == 0).await {
            Ok(id) => {
                answered.insert(id);
            }
            Err(e) => failed.push(e),
        }
    }
    assert!(
        failed.is_empty(),
        "a known key is served while the store is away: {failed:?}"
    );
    let ready = ready_in(&client, &base, "degraded", Duration::from_secs(10)).await;
    assert_eq!(ready["degraded"][0]["part"], "store", "{ready}");
    assert!(ready["degraded"][0]["for_ms"].as_u64().is_some(), "{ready}");

    // A key it never saw cannot be checked: refused at once, in the caller's dialect.
    let asked = Instant::now();
    let (status, body) = chat(&client, &base, &unseen, false).await.unwrap_err();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "not waiting on the store"
    );
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "keys_unavailable", "{body}");
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    let anthropic: Value = client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &unseen)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "m", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anthropic["type"], "error", "{anthropic}");
    assert_eq!(
        anthropic["error"]["type"], "overloaded_error",
        "{anthropic}"
    );

    assert_eq!(metric(&client, &base, "sluice_store_degraded").await, 1.0);
    assert!(metric(&client, &base, "sluice_journal_bytes").await > 0.0);
    for i in 0..10 {
        answered.insert(chat(&client, &base, &seen, i % 2 == 1).await.unwrap());
    }

    relay.restore();
    ready_in(&client, &base, "normal", Duration::from_secs(10)).await;
    let found = records_of(&stores, &answered, Duration::from_secs(15)).await;
    let unique: HashSet<&String> = found.iter().collect();
    assert_eq!(unique.len(), answered.len(), "every answer has its record");
    assert_eq!(found.len(), answered.len(), "and only one");
    assert!(metric(&client, &base, "sluice_records_replayed_total").await > 0.0);
    assert!(metric(&client, &base, "sluice_store_degraded_seconds_total").await > 0.0);
    assert_eq!(metric(&client, &base, "sluice_store_degraded").await, 0.0);
    assert_eq!(
        metric(&client, &base, "sluice_records_shed_total").await,
        0.0
    );
    // The key unseen before works now that the store is back.
    chat(&client, &base, &unseen, false).await.unwrap();

    replica.stop();
    stores.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_record_of_an_answer_it_finished() {
    let Some(schema) = Schema::create() else {
        return;
    };
    let mock = MockUpstream::openai().start().await;
    let stores = schema.stores().await;
    let secret = key(&stores, "load").await;
    let dir = folder("killed", &mock, &schema.url());
    let replica = serve(&dir);
    let base = replica.url.clone();
    let client = client();

    // Eight clients send back to back, a third of them streams, until the kill.
    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (client, base, secret, stop) =
                (client.clone(), base.clone(), secret.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                let mut n = 0;
                while !stop.is_cancelled() {
                    if let Ok(id) = chat(&client, &base, &secret, (c + n) % 3 == 0).await {
                        answered.push(id);
                    }
                    n += 1;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    replica.kill();
    stop.cancel();
    let mut answered = HashSet::new();
    for client in clients {
        answered.extend(client.await.unwrap());
    }
    assert!(answered.len() > 50, "too little load: {}", answered.len());
    // What the store had when the process died.
    let before = records_of(&stores, &answered, Duration::ZERO).await.len();

    // Restarted on the same journal, it writes what it had not.
    let replica = serve(&dir);
    let found = records_of(&stores, &answered, Duration::from_secs(15)).await;
    eprintln!(
        "answered {}, in the store at the kill {before}, after the restart {}",
        answered.len(),
        found.len()
    );
    let unique: HashSet<&String> = found.iter().collect();
    assert_eq!(unique.len(), answered.len(), "every answer has its record");
    assert_eq!(found.len(), answered.len(), "and only one");
    // It serves again.
    chat(&client, &replica.url, &secret, false).await.unwrap();
    replica.stop();
    stores.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A folder with a config whose counters are in Redis at `redis`, on the SQLite store at
/// `store`, with `on_counter_error`.
fn redis_folder(
    name: &str,
    mock: &MockUpstream,
    store: &Path,
    redis: SocketAddr,
    policy: &str,
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-degraded-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[store]\npath = \"{}\"\njournal = \"journal\"\n\n\
         [budgets]\ncounters = \"redis\"\nredis_url = \"redis://{redis}\"\n\
         redis_prefix = \"{{sluice-degraded-{}}}:\"\non_counter_error = \"{policy}\"\n\n\
         [admin]\ntoken_env = \"SLUICE_ADMIN_TOKEN\"\n\n\
         [providers.mock]\ntype = \"openai_compatible\"\nbase_url = \"{}/v1\"\n\n\
         [deployments.mini]\nprovider = \"mock\"\nmodel = \"gpt-4o-mini\"\n\n\
         [aliases.m]\ndeployments = [\"mini\"]\n",
        store.display(),
        std::process::id(),
        mock.base_url()
    );
    std::fs::write(dir.join("sluice.toml"), config).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_lose_redis_apply_their_on_counter_error_policy() {
    let Ok(redis) = std::env::var("SLUICE_TEST_REDIS_URL") else {
        eprintln!("skipped: set SLUICE_TEST_REDIS_URL=redis://127.0.0.1:6379 to run it");
        return;
    };
    let redis: SocketAddr = redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let mock = MockUpstream::openai().start().await;
    let relay = TcpRelay::start(redis).await.unwrap();
    let shared = std::env::temp_dir().join(format!("sluice-degraded-redis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&shared);
    let store_path = shared.join("sluice.db");
    let stores = Stores::open(&StoreLocation::Sqlite(store_path.clone()))
        .await
        .unwrap();
    let secret = stores
        .keys
        .create_key(NewKey {
            name: "counted".into(),
            team: Some("qa".into()),
            ..NewKey::default()
        })
        .await
        .unwrap()
        .secret;
    stores
        .budgets
        .put_budget(sluice_store::BudgetRow::new(
            "team:qa", "requests", "day", 1000,
        ))
        .await
        .unwrap();
    stores.close().await;
    let closed_dir = redis_folder("closed", &mock, &store_path, relay.addr(), "closed");
    let open_dir = redis_folder("open", &mock, &store_path, relay.addr(), "open");
    let closed = serve(&closed_dir);
    let open = serve(&open_dir);
    let client = client();
    chat(&client, &closed.url, &secret, false).await.unwrap();
    chat(&client, &open.url, &secret, true).await.unwrap();

    relay.cut();
    // Closed: refused, with when to retry, in the caller's dialect.
    let refused = client
        .post(format!("{}/v1/chat/completions", closed.url))
        .bearer_auth(&secret)
        .json(&json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "policy_unavailable", "{body}");
    let ready = ready_in(&client, &closed.url, "degraded", Duration::from_secs(5)).await;
    assert_eq!(ready["degraded"], json!([{"part": "counters"}]), "{ready}");
    // Open: served unmetered.
    for stream in [false, true] {
        chat(&client, &open.url, &secret, stream).await.unwrap();
    }
    assert!(metric(&client, &closed.url, "sluice_counter_errors_total").await >= 1.0);

    relay.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    while chat(&client, &closed.url, &secret, false).await.is_err() {
        assert!(Instant::now() < deadline, "counters never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ready_in(&client, &closed.url, "normal", Duration::from_secs(5)).await;
    closed.stop();
    open.stop();
    for dir in [closed_dir, open_dir, shared] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
