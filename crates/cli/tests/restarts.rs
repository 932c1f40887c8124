//! Budgets do not start over when their counters do: a restarted `sluice serve` (in-process
//! counters) and a Redis that restarted empty both rebuild the day's counters from the
//! request records.
//!
//! The Redis test starts a `redis-server` of its own (it restarts it), so it needs one on the
//! PATH.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_store::{BudgetRow, NewKey, StoreLocation, Stores};
use sluice_testkit::MockUpstream;

/// A process killed when the test ends, passed or failed, unless stopped before.
struct Killed(Option<Child>);

impl Killed {
    /// SIGTERM, and wait for a graceful stop.
    fn stop(mut self) {
        if let Some(child) = self.0.take() {
            common::stop(child);
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sluice serve` in `dir` on a free port; the process and its address.
fn serve(dir: &Path) -> (Killed, String) {
    let (child, line) = common::first_line(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(dir)
            .args(["serve", "--listen", "127.0.0.1:0"]),
    );
    let url = common::announced_url(&line);
    (
        Killed(Some(child)),
        url.trim_start_matches("http://").to_owned(),
    )
}

/// One chat request over raw HTTP: the status and the body.
fn chat(addr: &str, key: &str) -> (u16, Value) {
    let body =
        json!({"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A fresh folder with `config` as `sluice.toml`, a key of team `qa`, and `team:qa` limited to
/// three requests a day; the folder and the key.
async fn setup(name: &str, config: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("sluice-restarts-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sluice.toml"), config).unwrap();
    let store = Stores::open(&StoreLocation::Sqlite(dir.join("sluice-data/sluice.db")))
        .await
        .unwrap();
    let key = store
        .keys
        .create_key(NewKey {
            name: "restart-test".into(),
            team: Some("qa".into()),
            ..NewKey::default()
        })
        .await
        .unwrap();
    store
        .budgets
        .put_budget(BudgetRow::new("team:qa", "requests", "day", 3))
        .await
        .unwrap();
    store.close().await;
    (dir, key.secret)
}

fn providers(mock: &MockUpstream) -> String {
    format!(
        "[providers.mock]\ntype = \"openai_compatible\"\nbase_url = \"{}/v1\"\n\n\
         [deployments.mini]\nprovider = \"mock\"\nmodel = \"gpt-4o-mini\"\n\n\
         [aliases.m]\ndeployments = [\"mini\"]\n",
        mock.base_url()
    )
}

fn assert_refused_after(statuses: (u16, Value), used: &str) {
    let (status, body) = statuses;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "team `qa` has used {used} of its 3 daily request limit"
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_keeps_the_days_counters() {
    let mock = MockUpstream::openai().start().await;
    let (dir, key) = setup("memory", &providers(&mock)).await;

    let (gateway, addr) = serve(&dir);
    for _ in 0..2 {
        assert_eq!(chat(&addr, &key).0, 200);
    }
    gateway.stop();

    // Started again: the two served requests still count.
    let (_gateway, addr) = serve(&dir);
    assert_eq!(chat(&addr, &key).0, 200);
    assert_refused_after(chat(&addr, &key), "3");
    assert_eq!(mock.hits(), 3);
}

/// A `redis-server` of the test's own on `port`.
async fn start_redis(port: u16) -> Killed {
    let redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|child| Killed(Some(child)))
        .unwrap();
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return redis;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start on port {port}");
}

/// `DBSIZE` of the Redis on `port`, over RESP.
fn dbsize(port: u16) -> i64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"*1\r\n$6\r\nDBSIZE\r\n").unwrap();
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply[..n]);
    text.trim().trim_start_matches(':').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_restarts_empty_gets_the_days_counters_back() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no redis-server on the PATH");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = start_redis(port).await;
    let mock = MockUpstream::openai().start().await;
    let config = format!(
        "{}\n[budgets]\ncounters = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\n\
         reload_ms = 100\n",
        providers(&mock)
    );
    let (dir, key) = setup("redis", &config).await;
    let (_gateway, addr) = serve(&dir);
    for _ in 0..2 {
        assert_eq!(chat(&addr, &key).0, 200);
    }

    // Redis restarts with nothing in it.
    drop(redis);
    let _redis = start_redis(port).await;
    assert_eq!(dbsize(port), 0);
    // The gateway notices within `reload_ms` and rebuilds: the marker and the team's counter.
    let mut size = 0;
    for _ in 0..200 {
        size = dbsize(port);
        if size >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(size >= 2, "no rebuild: {size} keys");

    assert_eq!(chat(&addr, &key).0, 200);
    assert_refused_after(chat(&addr, &key), "3");
    assert_eq!(mock.hits(), 3);
}
