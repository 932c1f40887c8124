//! Two `sluice serve` processes sharing one Redis and one store never overshoot a budget:
//! 200 concurrent requests, spread over both, against a budget that fits 50.
//!
//! Needs a real Redis: `SLUICE_TEST_REDIS_URL` (scripts/test and .ci/run set it). Every run
//! uses a key prefix of its own.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::path::Path;
use std::process::{Child, Command};

use serde_json::json;
use sluice_store::{BudgetRow, NewKey, StoreLocation, Stores};
use sluice_testkit::{MockUpstream, Reply};

fn redis_url() -> Option<String> {
    let url = std::env::var("SLUICE_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("skipped: set SLUICE_TEST_REDIS_URL=redis://127.0.0.1:6379 to run it");
    }
    url
}

/// A replica: `sluice serve` on a free port, with a record journal of its own; returns the
/// process and its base URL.
fn replica(dir: &Path, journal: &str) -> (Child, String) {
    let (child, line) = common::first_line(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--journal", journal]),
    );
    (child, common::announced_url(&line))
}

struct Fleet {
    replicas: Vec<(Child, String)>,
    secret: String,
    store_path: std::path::PathBuf,
}

/// A failed assertion leaves no replica running.
impl Drop for Fleet {
    fn drop(&mut self) {
        for (child, _) in &mut self.replicas {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A config on `mock` with counters in Redis, a key of team `qa`, `budget` in the store, and
/// two replicas started.
async fn fleet(name: &str, mock: &MockUpstream, redis: &str, budget: BudgetRow) -> Fleet {
    let dir = std::env::temp_dir().join(format!("sluice-replicas-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("{{sluice-test-{name}-{}}}:", uuid_like());
    std::fs::write(
        dir.join("sluice.toml"),
        format!(
            r#"
[providers.mock]
type = "openai_compatible"
base_url = "{}/v1"

[deployments.mini]
provider = "mock"
model = "gpt-4o-mini"

[aliases.m]
deployments = ["mini"]

[budgets]
counters = "redis"
redis_url = "{redis}"
redis_prefix = "{prefix}"
# A loaded test machine can take longer than the default 250 ms; this test is about budgets.
redis_timeout_ms = 2000
"#,
            mock.base_url()
        ),
    )
    .unwrap();
    let store_path = dir.join("sluice-data/sluice.db");
    let store = Stores::open(&StoreLocation::Sqlite(store_path.clone()))
        .await
        .unwrap();
    let key = store
        .keys
        .create_key(NewKey {
            name: "replica-test".into(),
            team: Some("qa".into()),
            ..NewKey::default()
        })
        .await
        .unwrap();
    store.budgets.put_budget(budget).await.unwrap();
    store.close().await;
    let replicas = vec![replica(&dir, "journal-a"), replica(&dir, "journal-b")];
    Fleet {
        replicas,
        secret: key.secret,
        store_path,
    }
}

/// Unique enough for a key prefix: the clock in nanoseconds.
fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn row(metric: &str, period: &str, amount: u64) -> BudgetRow {
    BudgetRow::new("team:qa", metric, period, amount)
}

/// 200 requests at once, alternating replicas; the statuses.
async fn burst(fleet: &Fleet, max_tokens: u32) -> Vec<u16> {
    // The build's TLS backend is chosen at run time; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().build().unwrap();
    let sends = (0..200).map(|i| {
        let url = format!("{}/v1/chat/completions", fleet.replicas[i % 2].1);
        client
            .post(url)
            .bearer_auth(&fleet.secret)
            .json(&json!({"model": "m", "max_tokens": max_tokens,
                          "messages": [{"role": "user", "content": format!("request {i}")}]}))
            .send()
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect()
}

async fn records(mut fleet: Fleet) -> Vec<sluice_store::RequestRecord> {
    for (child, _) in std::mem::take(&mut fleet.replicas) {
        common::stop(child);
    }
    let store = Stores::open(&StoreLocation::Sqlite(fleet.store_path.clone()))
        .await
        .unwrap();
    let records = store.queries.latest_records(10_000).await.unwrap();
    store.close().await;
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_admit_exactly_the_requests_that_fit() {
    let Some(redis) = redis_url() else { return };
    let mock = MockUpstream::openai().start().await;
    let fleet = fleet("requests", &mock, &redis, row("requests", "day", 50)).await;

    let statuses = burst(&fleet, 20).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 50);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 150);
    assert_eq!(mock.hits(), 50);

    let records = records(fleet).await;
    assert_eq!(records.len(), 200, "every request has a record");
    assert_eq!(records.iter().filter(|r| r.status == 200).count(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_spend_past_a_dollar_budget() {
    let Some(redis) = redis_url() else { return };
    // Every answer runs to max_tokens, so what a request costs is about its worst case: an
    // admission that let too many through would show as spend past the cap.
    let mock = MockUpstream::openai()
        .always(Reply::text("word ".repeat(4_000)))
        .start()
        .await;
    // gpt-4o-mini at $0.60 per million output tokens: 2,000 tokens are 1,200 micro-USD; the cap
    // fits 25 of them.
    let cap = 30_000;
    let fleet = fleet("usd", &mock, &redis, row("usd", "month", cap)).await;

    let statuses = burst(&fleet, 2_000).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!((20..=25).contains(&admitted), "{admitted} admitted");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );

    let records = records(fleet).await;
    let spent: i64 = records.iter().filter_map(|r| r.cost_micros).sum();
    eprintln!("two replicas, 200 requests: {admitted} admitted, spent {spent} of {cap} micro-USD");
    assert!(spent > 0 && spent <= cap as i64, "spent {spent} of {cap}");
    assert_eq!(records.iter().filter(|r| r.status == 200).count(), admitted);
}
