//! `sluice migrate --from-sqlite`: a gateway that served on the embedded store moves to
//! Postgres with its keys (their secrets keep working, a revoked one stays revoked), budget rows
//! and request records (bodies included), copied once while it still serves and once more after
//! it stopped; and what the command refuses before it writes anything.
//!
//! The copy needs a real Postgres: `SLUICE_TEST_POSTGRES_URL`, each test in a schema of its own.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_store::{StoreLocation, Stores};
use sluice_testkit::MockUpstream;

/// A fresh folder with a configuration on `mock`, and `store` as its `[store]` section.
fn folder(name: &str, mock: &MockUpstream, store: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-migrate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "{store}\n\n\
         [providers.mock]\ntype = \"openai_compatible\"\nbase_url = \"{}/v1\"\n\n\
         [deployments.mini]\nprovider = \"mock\"\nmodel = \"gpt-4o-mini\"\n\n\
         [aliases.m]\ndeployments = [\"mini\"]\n",
        mock.base_url()
    );
    std::fs::write(dir.join("sluice.toml"), config).unwrap();
    dir
}

fn sluice(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// `sluice ARGS` in `dir`, which must succeed; its stdout.
fn sluice_ok(dir: &Path, args: &[&str]) -> String {
    let out = sluice(dir, args);
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `sluice ARGS` in `dir`, which must fail; its stderr.
fn sluice_err(dir: &Path, args: &[&str]) -> String {
    let out = sluice(dir, args);
    assert!(!out.status.success(), "sluice {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// A key made with `sluice keys create` in `dir`: its id and secret.
fn create_key(dir: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["keys", "create", "--json"];
    all.extend_from_slice(args);
    let created: Value = serde_json::from_str(&sluice_ok(dir, &all)).unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

fn client() -> reqwest::Client {
    // The build's TLS backend is chosen at run time; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// One chat request: its status and request id.
async fn chat(client: &reqwest::Client, base: &str, key: &str, text: &str) -> (u16, String) {
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "m", "max_tokens": 8,
                      "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    response.bytes().await.unwrap();
    (status, id)
}

/// The ids of the records `sluice logs` in `dir` shows.
fn logged_ids(dir: &Path) -> Vec<String> {
    sluice_ok(dir, &["logs", "--json", "-n", "1000"])
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Waits until `sluice logs` in `dir` shows every one of `ids`.
async fn wait_for_records(dir: &Path, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logged = logged_ids(dir);
        if ids.iter().all(|id| logged.contains(id)) {
            return;
        }
        assert!(Instant::now() < deadline, "{ids:?} never all in {logged:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The line of `sluice migrate` that says what it copied.
fn copied_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with("copied "))
        .unwrap_or_else(|| panic!("no `copied` line in {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_budgets_and_records_move_to_postgres_and_a_second_run_copies_nothing_new() {
    let Ok(admin_url) = std::env::var("SLUICE_TEST_POSTGRES_URL") else {
        eprintln!(
            "skipped: set SLUICE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test to run it"
        );
        return;
    };
    let schema = common::PostgresSchema::create(&admin_url);
    let mock = MockUpstream::openai().start().await;
    let old = folder("old", &mock, "");
    let new = folder(
        "new",
        &mock,
        &format!("[store]\nurl = \"{}\"", schema.url()),
    );
    let client = client();

    // The single gateway on the embedded store, with three keys (one revoked) and two limits.
    let (kept_id, kept) = create_key(
        &old,
        &["--name", "kept", "--team", "payments", "--log-bodies"],
    );
    let (_, plain) = create_key(&old, &["--name", "plain"]);
    let (revoked_id, revoked) = create_key(&old, &["--name", "revoked"]);
    sluice_ok(&old, &["keys", "revoke", &revoked_id]);
    sluice_ok(
        &old,
        &[
            "budgets",
            "set",
            "team:payments",
            "--usd",
            "50",
            "--period",
            "month",
        ],
    );
    sluice_ok(&old, &["budgets", "set", "key:*", "--rpm", "1000"]);
    let gateway = common::Served::start(&old, &[]);
    let mut served = Vec::new();
    for i in 0..3 {
        let (status, id) = chat(&client, &gateway.url, &kept, &format!("kept {i}")).await;
        assert_eq!(status, 200);
        served.push(id);
    }
    let (status, plain_id) = chat(&client, &gateway.url, &plain, "plain").await;
    assert_eq!(status, 200);
    served.push(plain_id);
    let (status, refused_id) = chat(&client, &gateway.url, &revoked, "revoked").await;
    assert_eq!(status, 401);
    served.push(refused_id);
    wait_for_records(&old, &served).await;
    let first_count = logged_ids(&old).len();
    assert_eq!(first_count, 5, "one record per request");

    // Copied while the old gateway still serves.
    let source = old.join("sluice-data").join("sluice.db");
    let source = source.to_str().unwrap();
    let first = sluice_ok(&new, &["migrate", "--from-sqlite", source]);
    assert!(first.contains("applied 0001_initial"), "{first}");
    assert_eq!(
        copied_line(&first),
        format!("copied 3 keys, 2 budget rows, 5 records from {source}")
    );

    // It serves on, then stops; the second run copies what came meanwhile.
    for i in 0..2 {
        let (status, id) = chat(&client, &gateway.url, &plain, &format!("later {i}")).await;
        assert_eq!(status, 200);
        served.push(id);
    }
    gateway.stop();
    assert_eq!(logged_ids(&old).len(), 7);
    let second = sluice_ok(&new, &["migrate", "--from-sqlite", source]);
    assert!(second.contains("(0 applied now)"), "{second}");
    assert_eq!(
        copied_line(&second),
        format!(
            "copied 0 new keys (3 already there), 0 new budget rows (2 already there), \
             2 new records (5 already there) from {source}"
        )
    );
    let third = sluice_ok(&new, &["migrate", "--from-sqlite", source]);
    assert_eq!(
        copied_line(&third),
        format!(
            "copied 0 new keys (3 already there), 0 new budget rows (2 already there), \
             0 new records (7 already there) from {source}"
        )
    );

    // A replica on Postgres takes the old secrets; the revoked one stays refused.
    let replica = common::Served::start(&new, &[]);
    assert_eq!(chat(&client, &replica.url, &kept, "again").await.0, 200);
    assert_eq!(chat(&client, &replica.url, &plain, "again").await.0, 200);
    assert_eq!(chat(&client, &replica.url, &revoked, "again").await.0, 401);
    replica.stop();

    // Every old record is there, with its bodies, beside the replica's own.
    let logged = logged_ids(&new);
    assert_eq!(logged.len(), 7 + 3, "{logged:?}");
    for id in &served {
        assert!(logged.contains(id), "{id} in {logged:?}");
    }
    let shown: Value =
        serde_json::from_str(&sluice_ok(&new, &["logs", "show", &served[1], "--json"])).unwrap();
    assert_eq!(shown["key_id"], kept_id.as_str());
    assert_eq!(shown["team"], "payments");
    let request = shown["bodies"]["request"].as_str().unwrap();
    assert!(request.contains("kept 1"), "{shown}");
    assert!(shown["bodies"]["response"].is_string(), "{shown}");
    let plain_shown: Value =
        serde_json::from_str(&sluice_ok(&new, &["logs", "show", &served[3], "--json"])).unwrap();
    assert!(plain_shown["bodies"].is_null(), "{plain_shown}");

    // The limits and keys are as they were, every field.
    let before = Stores::open_existing_sqlite(Path::new(source))
        .await
        .unwrap();
    let after = Stores::open(&StoreLocation::Postgres(schema.url()))
        .await
        .unwrap();
    assert_eq!(
        after.budgets.budgets().await.unwrap(),
        before.budgets.budgets().await.unwrap()
    );
    assert_eq!(
        after.keys.export_keys().await.unwrap(),
        before.keys.export_keys().await.unwrap()
    );
    before.close().await;
    after.close().await;
    let _ = std::fs::remove_dir_all(&old);
    let _ = std::fs::remove_dir_all(&new);
}

/// Each refusal comes before anything is written: no SQLite file is made, and the Postgres
/// store (here a closed port) is never reached.
#[test]
fn a_copy_is_refused_from_a_missing_file_or_one_that_is_not_a_store_and_into_sqlite() {
    let dir = std::env::temp_dir().join(format!("sluice-migrate-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a database").unwrap();

    let err = sluice_err(&dir, &["migrate", "--from-sqlite", "notes.txt"]);
    assert!(
        err.contains(
            "--from-sqlite copies into a Postgres store, but the configured store is the SQLite \
             file sluice-data/sluice.db: set `[store] url` to the Postgres database"
        ),
        "{err}"
    );
    assert!(!dir.join("sluice-data").exists(), "nothing is made");

    std::fs::write(
        dir.join("sluice.toml"),
        "[store]\nurl = \"postgres://sluice@127.0.0.1:1/sluice\"\n",
    )
    .unwrap();
    let err = sluice_err(&dir, &["migrate", "--from-sqlite", "old/sluice.db"]);
    assert!(
        err.contains("opening the store to copy from: there is no file at old/sluice.db"),
        "{err}"
    );
    assert!(!dir.join("old").exists(), "no file is made");
    let err = sluice_err(&dir, &["migrate", "--from-sqlite", "notes.txt"]);
    assert!(err.contains("notes.txt is not a Sluice store"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "not a database"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
