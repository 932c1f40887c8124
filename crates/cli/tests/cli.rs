//! Smoke tests of the built `sluice` binary: configuration checks, key management, a served
//! request recorded and shown by `sluice logs`, budgets and usage reports.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sluice_types::record::{Endpoint, Role};

fn sluice(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_config_names_every_bad_field_and_fails() {
    let dir = temp_dir("check");
    std::fs::write(
        dir.join("sluice.toml"),
        "[providers.a]\ntype = \"anthropic\"\napi_key_env = \"SLUICE_TEST_UNSET_VAR\"\n\n\
         [deployments.d]\nprovider = \"a\"\nmodel = \"claude\"\n\n[aliases.x]\ndeployments = [\"d\", \"ghost\"]\n",
    )
    .unwrap();
    let out = sluice(&dir, &["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "providers.a.api_key_env: environment variable `SLUICE_TEST_UNSET_VAR` is not set"
        ),
        "{err}"
    );
    assert!(
        err.contains("aliases.x.deployments[1]: no deployment named `ghost`"),
        "{err}"
    );

    std::fs::write(
        dir.join("typo.toml"),
        "[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n",
    )
    .unwrap();
    let out = sluice(&dir, &["check-config", "--config", "typo.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("port"));
}

#[test]
fn keys_are_created_listed_and_revoked() {
    let dir = temp_dir("keys");
    let out = sluice(
        &dir,
        &[
            "keys", "create", "--name", "web", "--team", "search", "--alias", "fast", "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("sk-sluice-"));
    let id = created["id"].as_str().unwrap();

    let list = String::from_utf8(sluice(&dir, &["keys", "list"]).stdout).unwrap();
    assert!(
        list.contains(id) && list.contains("active (fast)"),
        "{list}"
    );
    assert!(!list.contains(secret), "secrets are never listed");

    let out = sluice(&dir, &["keys", "revoke", id]);
    assert!(out.status.success());
    let list = String::from_utf8(sluice(&dir, &["keys", "list"]).stdout).unwrap();
    assert!(list.contains("revoked"), "{list}");
    let out = sluice(&dir, &["keys", "revoke", "key_nothing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key matches"));
}

/// `sluice demo --json` on a free port in `dir`: the process, its address, its key and the
/// URL of its operators' listener (metrics, detailed health).
fn start_demo(dir: &Path) -> (std::process::Child, String, String, String) {
    let (child, line) = common::first_line(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(dir)
            .args(["demo", "--listen", "127.0.0.1:0", "--json"]),
    );
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = info["base_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let metrics_url = info["metrics_url"].as_str().unwrap().to_owned();
    (
        child,
        addr,
        info["api_key"].as_str().unwrap().to_owned(),
        metrics_url,
    )
}

/// Starts `sluice demo` on a free port, sends one request with raw HTTP, stops the gateway with
/// SIGTERM, and finds the request in `sluice logs --json`.
#[test]
fn demo_serves_a_request_and_logs_show_it_after_a_graceful_stop() {
    let dir = temp_dir("demo");
    let (mut child, addr, key, metrics_url) = start_demo(&dir);

    let body =
        r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hello cli"}]}"#;
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("You said: hello cli"));
    // The demo team's quota is on `smart` only: nothing to report here.
    assert!(
        !response.contains("x-ratelimit-limit-requests"),
        "{response}"
    );
    let request_id = response
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap()
        .trim()
        .to_owned();

    // The client-facing listener tells anyone only that it is alive...
    let status = sluice(&dir, &["status", "--url", &format!("http://{addr}")]);
    assert!(!status.status.success());
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("answered its liveness only"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // ...the operators' listener the detail.
    let status = sluice(&dir, &["status", "--url", &metrics_url]);
    let table = String::from_utf8(status.stdout).unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(table.starts_with("gateway ok"), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("mode normal · journal ")
                && l.ends_with(" bytes · records replayed 0")),
        "{table}"
    );
    let claude = table
        .lines()
        .find(|l| l.starts_with("mock-claude"))
        .unwrap();
    assert!(claude.contains("closed"), "{table}");
    assert!(
        table.contains("route claude-sonnet-4-5 (ordered): retry budget"),
        "{table}"
    );
    // The one request is in the recent view of the deployment that served it.
    let recent = table
        .lines()
        .skip_while(|l| !l.starts_with("last 5 min"))
        .find(|l| l.starts_with("mock-claude"))
        .unwrap();
    assert_eq!(recent.split_whitespace().nth(1), Some("1"), "{table}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "graceful stop exits 0");

    let logs = String::from_utf8(sluice(&dir, &["logs", "--json"]).stdout).unwrap();
    let record: serde_json::Value = logs
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["id"] == request_id.as_str())
        .unwrap();
    assert_eq!(record["status"], 200);
    assert_eq!(record["alias"], "claude-sonnet-4-5");
    assert_eq!(record["served_model"], "claude-sonnet-4-5-mock-2026-01-01");
    assert_eq!(record["provider"], "mock-anthropic");
    assert!(record["cost_micros"].as_i64().unwrap() > 0, "{record}");
    assert!(record["carbon_ug"].as_u64().unwrap() > 0, "{record}");
}

/// One request over raw HTTP/1.1; the whole response, headers included.
fn post_chat(addr: &str, key: &str, body: &str) -> String {
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
    response
}

/// The demo's `smart` alias: past the demo team's soft limit (20 requests a minute on it) it is
/// served by the cheaper `gpt-4o-mini`, and the answer says so.
#[test]
fn demo_degrades_a_caller_over_its_soft_limit_to_the_cheaper_alias() {
    let dir = temp_dir("soft");
    let (child, addr, key, _) = start_demo(&dir);
    let body = r#"{"model":"smart","messages":[{"role":"user","content":"hi"}]}"#;
    let responses: Vec<String> = (0..21).map(|_| post_chat(&addr, &key, body)).collect();
    common::stop(child);

    for response in &responses[..20] {
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("x-sluice-alias: smart\r\n"), "{response}");
        assert!(!response.contains("x-sluice-degraded-to"), "{response}");
    }
    let last = &responses[20];
    assert!(last.starts_with("HTTP/1.1 200"), "{last}");
    assert!(
        last.contains("x-sluice-degraded-to: gpt-4o-mini\r\n"),
        "{last}"
    );
    assert!(
        last.contains("x-sluice-soft-limit: team:demo requests 1m model=smart\r\n"),
        "{last}"
    );
    assert!(
        last.contains("x-sluice-served-model: gpt-4o-mini"),
        "{last}"
    );
    // Its quota is counted on `smart`: the 20 before it are reported on each of them.
    assert!(
        responses[19].contains("x-ratelimit-remaining-requests: 980\r\n"),
        "{}",
        responses[19]
    );
}

/// `sluice drill` against a route whose primary is unreachable and whose fallback is the mock:
/// a readiness row per deployment, exit status 1 because the primary is not ready.
#[test]
fn drill_prints_the_readiness_of_every_deployment_of_a_route() {
    let dir = temp_dir("drill");
    let (mut mock, line) = common::first_line(Command::new(env!("CARGO_BIN_EXE_sluice")).args([
        "mock",
        "--listen",
        "127.0.0.1:0",
    ]));
    let mock_url = common::announced_url(&line);
    // A port nothing listens on.
    let closed_port = closed_port();
    std::fs::write(
        dir.join("sluice.toml"),
        format!(
            "[providers.mock]\ntype = \"openai_compatible\"\nbase_url = \"{mock_url}/v1\"\n\n\
             [providers.down]\ntype = \"openai_compatible\"\nbase_url = \"http://127.0.0.1:{closed_port}/v1\"\n\n\
             [deployments.primary]\nprovider = \"down\"\nmodel = \"m\"\n\n\
             [deployments.backup]\nprovider = \"mock\"\nmodel = \"m\"\n\n\
             [aliases.chat]\ndeployments = [\"primary\"]\nfallbacks = [\"backup\"]\n"
        ),
    )
    .unwrap();
    // Live traffic the backup served: one structured answer of three broke its schema.
    let checked = |id: &str, check: &str| sluice_store::RequestRecord {
        attempts: vec![sluice_store::AttemptRecord {
            deployment: "backup".into(),
            provider: "mock".into(),
            schema: Some(check.parse().unwrap()),
            ..Default::default()
        }],
        ..logged(id, 200, None)
    };
    write_records(
        &dir,
        &[
            checked("req_s1", "valid"),
            checked("req_s2", "repaired"),
            checked("req_s3", "invalid"),
        ],
    );
    let out = sluice(&dir, &["drill", "chat", "--repeat", "2", "--json"]);
    let _ = mock.kill();
    let _ = mock.wait();
    assert!(
        !out.status.success(),
        "the unreachable primary is not ready"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready (success below 95%): primary")
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["deployment"].as_str(), rows[0]["role"].as_str()),
        (Some("primary"), Some("pool"))
    );
    assert_eq!(rows[0]["requests"], 6, "three built-in requests, twice");
    assert_eq!(rows[0]["succeeded"], 0);
    assert_eq!(rows[0]["errors"]["upstream_unavailable"], 6);
    assert_eq!(
        (rows[1]["deployment"].as_str(), rows[1]["role"].as_str()),
        (Some("backup"), Some("fallback"))
    );
    assert_eq!(rows[1]["success_rate"], 1.0);
    assert_eq!(
        (
            rows[1]["schema_checked"].as_u64(),
            rows[1]["schema_valid"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(
        (
            rows[1]["recent_schema_checked"].as_u64(),
            rows[1]["recent_schema_violations"].as_u64()
        ),
        (Some(3), Some(1))
    );
    assert_eq!(rows[0]["recent_schema_checked"], 0);
    assert!(rows[1]["p99_ms"].as_f64().unwrap() > 0.0);
}

/// Writes records straight into the store `sluice` reads in `dir` (the default path), the way
/// the gateway's writer does.
fn write_records(dir: &Path, records: &[sluice_store::RequestRecord]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = sluice_store::Stores::open(&sluice_store::StoreLocation::Sqlite(
            dir.join("sluice-data").join("sluice.db"),
        ))
        .await
        .unwrap();
        store.records.insert_records(records).await.unwrap();
        store.close().await;
    });
}

fn logged(id: &str, status: u16, error_code: Option<&str>) -> sluice_store::RequestRecord {
    sluice_store::RequestRecord {
        id: id.into(),
        started_at: sluice_store::now_ms(),
        endpoint: Endpoint::ChatCompletions,
        dialect: sluice_types::Dialect::OpenAi,
        alias: Some("fast".into()),
        status,
        error_code: error_code.map(|code| code.parse().unwrap()),
        latency_us: 1_500,
        ..Default::default()
    }
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn logs_filter_by_status_class_and_print_whole_records_as_json() {
    let dir = temp_dir("logs-status");
    let failed = sluice_store::RequestRecord {
        attempts: vec![sluice_store::AttemptRecord {
            deployment: "primary".into(),
            provider: "openai".into(),
            outcome: "upstream_unavailable".parse().unwrap(),
            status: Some(502),
            next: Some("no_more_deployments".parse().unwrap()),
            ..Default::default()
        }],
        ..logged("req_a502", 502, Some("upstream_unavailable"))
    };
    write_records(
        &dir,
        &[
            logged("req_a200", 200, None),
            failed,
            logged("req_a429", 429, Some("rate_limit_exceeded")),
            logged("req_a503", 503, Some("route_unavailable")),
        ],
    );

    let out = sluice(&dir, &["logs", "--status", "5xx", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = json_lines(&out);
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["req_a503", "req_a502"], "5xx only, newest first");
    assert_eq!(records[1]["attempts"][0]["next"], "no_more_deployments");
    assert_eq!(records[1]["alias"], "fast");

    let out = sluice(&dir, &["logs", "--status", "error", "-n", "1", "--json"]);
    assert_eq!(json_lines(&out)[0]["id"], "req_a503");
    let out = sluice(&dir, &["logs", "--status", "ok", "--since", "1h", "--json"]);
    assert_eq!(json_lines(&out).len(), 1);
    let out = sluice(&dir, &["logs", "--until", "1h", "--json"]);
    assert!(
        json_lines(&out).is_empty(),
        "every record started within the hour"
    );

    let out = sluice(&dir, &["logs", "--status", "6xx"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`6xx` is not a status"));
}

#[test]
fn logs_show_explains_a_record_found_by_a_unique_prefix() {
    let dir = temp_dir("logs-show");
    let record = sluice_store::RequestRecord {
        key_id: Some("key_0a1b2c".into()),
        team: Some("search".into()),
        served_model: Some("gpt-4o-2024-08-06".into()),
        provider: Some("openai".into()),
        deployment: Some("backup".into()),
        input_tokens: Some(12),
        output_tokens: Some(40),
        usage_estimated: true,
        attempts: vec![
            sluice_store::AttemptRecord {
                deployment: "primary".into(),
                provider: "openai".into(),
                outcome: "upstream_unavailable".parse().unwrap(),
                status: Some(503),
                role: Some(Role::Pool),
                next: Some("fallback".parse().unwrap()),
                ..Default::default()
            },
            sluice_store::AttemptRecord {
                deployment: "backup".into(),
                provider: "openai".into(),
                outcome: "ok".parse().unwrap(),
                status: Some(200),
                role: Some(Role::Fallback),
                ..Default::default()
            },
        ],
        ..logged("req_0199aa01", 200, None)
    };
    write_records(&dir, &[record, logged("req_0199aa02", 200, None)]);

    let out = sluice(&dir, &["logs", "show", "req_0199aa01"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "request      req_0199aa01",
        "  key        key_0a1b2c",
        "  team       search",
        "  model      gpt-4o-2024-08-06",
        "  deployment backup",
        "estimated by the gateway",
        "  1. primary (openai, pool)",
        "     outcome  upstream_unavailable, upstream HTTP 503",
        "     next     fallback: moved on to another deployment",
        "  2. backup (openai, fallback)",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from:\n{text}"
        );
    }
    assert!(text.find("1. primary") < text.find("2. backup"));

    let out = sluice(&dir, &["logs", "show", "req_0199aa02", "--json"]);
    assert_eq!(json_lines(&out)[0]["id"], "req_0199aa02");

    let out = sluice(&dir, &["logs", "show", "req_0199aa"]);
    assert!(!out.status.success(), "an ambiguous prefix is an error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("matches more than one request record (req_0199aa01, req_0199aa02)"),
        "{err}"
    );

    let out = sluice(&dir, &["logs", "show", "req_ffff"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no request record matches `req_ffff`"));
}

/// `sluice logs --follow` prints the latest matching record, then each new one as it is
/// written; it runs until stopped.
#[test]
fn logs_follow_prints_records_as_they_are_written() {
    let dir = temp_dir("logs-follow");
    write_records(
        &dir,
        &[logged("req_before", 502, Some("upstream_unavailable"))],
    );
    let mut follower = Stopped(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(&dir)
            .args(["logs", "--follow", "--status", "error", "-n", "1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(follower.0.stdout.take().unwrap()).lines();
    let mut next_record =
        || -> serde_json::Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    // Once the earlier record is printed, the follower's position is taken: everything
    // written from now on is new to it.
    assert_eq!(next_record()["id"], "req_before");

    write_records(
        &dir,
        &[
            logged("req_fine", 200, None),
            logged("req_after", 500, Some("internal_error")),
        ],
    );
    let next = next_record();
    assert_eq!(
        next["id"], "req_after",
        "the filter applies to new records too"
    );
}

/// A child process killed when the test ends, passed or failed.
/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mock_refuses_chaos_values_out_of_range() {
    let dir = temp_dir("mock-args");
    for (args, expected) in [
        (["--fail-ratio", "1.5"], "must be between 0 and 1"),
        (["--stall-ratio", "-0.1"], "must be between 0 and 1"),
        (
            ["--stall-ratio", "half"],
            "must be a number between 0 and 1",
        ),
        (["--fail-status", "200"], "400..=599"),
    ] {
        let out = sluice(&dir, &["mock", "--listen", "127.0.0.1:0", args[0], args[1]]);
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[0]) && err.contains(expected), "{err}");
    }
}

/// `sluice mock --fail-ratio 0.5`: of four chat requests, the second and the fourth fail.
#[test]
fn mock_fails_every_second_request_at_ratio_one_half() {
    let dir = temp_dir("mock-chaos");
    let (mut child, line) = common::first_line(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(&dir)
            .args(["mock", "--listen", "127.0.0.1:0", "--fail-ratio", "0.5"])
            .args(["--fail-status", "503"]),
    );
    let addr = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .unwrap()
        .to_owned();

    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        statuses.push(response.split_whitespace().nth(1).unwrap().to_owned());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(statuses, ["200", "503", "200", "503"]);
}

/// `sluice` in `dir` with extra environment variables.
fn sluice_with(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The whitespace-separated cells of the line of `table` that starts with `first`.
fn cells<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no line starting with {first} in\n{table}"))
}

#[test]
fn budgets_are_set_allocated_shown_and_deleted_in_the_store() {
    let dir = temp_dir("budgets");
    let set = stdout(&sluice(
        &dir,
        &[
            "budgets", "set", "org:acme", "--usd", "1000", "--period", "month",
        ],
    ));
    assert_eq!(
        cells(&set, "org:acme"),
        ["org:acme", "usd", "month", "-", "$1,000.00", "-", "-"]
    );
    let allocated = stdout(&sluice(
        &dir,
        &[
            "budgets",
            "allocate",
            "org:acme",
            "team:payments",
            "--usd",
            "600.50",
            "--period",
            "month",
            "--soft",
            "500",
        ],
    ));
    assert_eq!(
        cells(&allocated, "team:payments"),
        [
            "team:payments",
            "usd",
            "month",
            "-",
            "$600.50",
            "$500.00",
            "org:acme"
        ]
    );
    stdout(&sluice(&dir, &["budgets", "set", "key:*", "--rpm", "60"]));
    stdout(&sluice(
        &dir,
        &[
            "budgets", "set", "user:*", "--tokens", "1000000", "--period", "day",
        ],
    ));

    // Refusals say why and exit 1.
    let over = sluice(
        &dir,
        &[
            "budgets",
            "allocate",
            "org:acme",
            "team:search",
            "--usd",
            "500",
            "--period",
            "month",
        ],
    );
    assert_eq!(over.status.code(), Some(1));
    let err = String::from_utf8_lossy(&over.stderr);
    assert!(err.contains("allocates"), "{err}");
    let bad_scope = sluice(
        &dir,
        &[
            "budgets",
            "set",
            "galaxy:far",
            "--tokens",
            "5",
            "--period",
            "day",
        ],
    );
    assert_eq!(bad_scope.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("galaxy"));
    let negative = sluice(
        &dir,
        &["budgets", "set", "team:x", "--usd=-5", "--period", "day"],
    );
    assert!(!negative.status.success());
    assert!(String::from_utf8_lossy(&negative.stderr).contains("cannot be negative"));
    let no_period = sluice(&dir, &["budgets", "set", "team:x", "--requests", "5"]);
    assert_eq!(no_period.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_period.stderr).contains("--period is required"));

    // No admin API configured: the limits, without usage, and why on stderr.
    let show = sluice(&dir, &["budgets", "show"]);
    let table = stdout(&show);
    let why = String::from_utf8_lossy(&show.stderr);
    assert_eq!(
        why.lines().collect::<Vec<_>>(),
        [
            "usage not shown: the admin API is not configured (set `[admin] token_env` to read it from the running gateway)"
        ]
    );
    assert_eq!(
        cells(&table, "SCOPE"),
        [
            "SCOPE",
            "METRIC",
            "PERIOD",
            "MODEL",
            "LIMIT",
            "SOFT",
            "USED",
            "REMAINING",
            "PARENT"
        ]
    );
    assert_eq!(
        cells(&table, "team:payments"),
        [
            "team:payments",
            "usd",
            "month",
            "-",
            "$600.50",
            "$500.00",
            "-",
            "-",
            "org:acme"
        ]
    );
    assert_eq!(
        cells(&table, "key:*"),
        ["key:*", "requests", "1m", "-", "60", "-", "-", "-", "-"]
    );
    assert_eq!(
        cells(&table, "user:*"),
        [
            "user:*",
            "tokens",
            "day",
            "-",
            "1,000,000",
            "-",
            "-",
            "-",
            "-"
        ]
    );
    let json = json_lines(&sluice(
        &dir,
        &["budgets", "show", "team:payments", "--json"],
    ));
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["amount"], 600_500_000);
    assert_eq!(json[0]["soft_amount"], 500_000_000);
    assert_eq!(json[0]["used"], serde_json::Value::Null);

    let deleted = stdout(&sluice(
        &dir,
        &[
            "budgets", "delete", "key:*", "--metric", "requests", "--period", "minute",
        ],
    ));
    assert_eq!(deleted.trim(), "deleted 1 limit of key:*");
    stdout(&sluice(&dir, &["budgets", "delete", "team:payments"]));
    let again = sluice(&dir, &["budgets", "delete", "team:payments"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no budget matches `team:payments`"));
    let table = stdout(&sluice(&dir, &["budgets", "show"]));
    assert_eq!(table.lines().count(), 3, "{table}");
}

/// A gateway (`sluice serve` in front of `sluice mock`) with the admin API on: requests
/// through it show as used in `sluice budgets show`, and, once it stopped, in `sluice usage`.
#[test]
fn budgets_show_reads_usage_from_the_running_gateway_and_usage_reports_the_requests() {
    let dir = temp_dir("usage");
    let token_env = [("SLUICE_TEST_ADMIN_TOKEN", "an-admin-token-long-enough-0123")];
    let (mock, line) = common::first_line(Command::new(env!("CARGO_BIN_EXE_sluice")).args([
        "mock",
        "--listen",
        "127.0.0.1:0",
    ]));
    let mock = Stopped(mock);
    let mock_url = common::announced_url(&line);
    // Nothing listens on the configured address: `budgets show` without --url says so.
    let closed_port = closed_port();
    std::fs::write(
        dir.join("sluice.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{closed_port}\"\n\n[admin]\ntoken_env = \"SLUICE_TEST_ADMIN_TOKEN\"\n\n\
             [providers.mock]\ntype = \"openai_compatible\"\nbase_url = \"{mock_url}/v1\"\n\n\
             [deployments.mini]\nprovider = \"mock\"\nmodel = \"gpt-4o-mini\"\n\n\
             [aliases.fast]\ndeployments = [\"mini\"]\n"
        ),
    )
    .unwrap();
    let created = stdout(&sluice_with(
        &dir,
        &token_env,
        &[
            "keys", "create", "--name", "web", "--team", "payments", "--json",
        ],
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let key = created["secret"].as_str().unwrap().to_owned();
    stdout(&sluice_with(
        &dir,
        &token_env,
        &[
            "budgets",
            "set",
            "team:payments",
            "--requests",
            "100",
            "--period",
            "day",
        ],
    ));

    let (gateway, line) = common::first_line(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(&dir)
            .envs(token_env)
            .args(["serve", "--listen", "127.0.0.1:0"]),
    );
    let url = common::announced_url(&line);
    let gateway = Stopped(gateway);
    let addr = url.trim_start_matches("http://").to_owned();
    for feature in ["checkout", "checkout", "refunds"] {
        let body =
            r#"{"model":"fast","max_tokens":20,"messages":[{"role":"user","content":"hello"}]}"#;
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
             x-sluice-feature: {feature}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    let show = sluice_with(&dir, &token_env, &["budgets", "show", "--url", &url]);
    let table = stdout(&show);
    assert!(
        show.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert_eq!(
        cells(&table, "team:payments"),
        [
            "team:payments",
            "requests",
            "day",
            "-",
            "100",
            "-",
            "3",
            "97",
            "-"
        ]
    );
    let json = json_lines(&sluice_with(
        &dir,
        &token_env,
        &["budgets", "show", "--url", &url, "--json"],
    ));
    assert_eq!(
        (&json[0]["used"], &json[0]["remaining"]),
        (&3.into(), &97.into())
    );
    // The configured address, where nothing answers.
    let unreachable = sluice_with(&dir, &token_env, &["budgets", "show"]);
    assert!(cells(&stdout(&unreachable), "team:payments").contains(&"-"));
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).starts_with(&format!(
            "usage not shown: no gateway answering at http://127.0.0.1:{closed_port}"
        )),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
    // A wrong token is refused by the gateway, and said so.
    let wrong = sluice_with(
        &dir,
        &[("SLUICE_TEST_ADMIN_TOKEN", "not-the-token-of-this-gateway")],
        &["budgets", "show", "--url", &url],
    );
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("401 Unauthorized: invalid admin token"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    // A graceful stop writes every record; then the report.
    let mut gateway = gateway;
    let stopped = Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(gateway.0.wait().unwrap().success());
    drop(mock);

    let report = stdout(&sluice_with(
        &dir,
        &token_env,
        &["usage", "--by", "team", "--by", "feature"],
    ));
    assert_eq!(
        cells(&report, "TEAM")[..4],
        ["TEAM", "FEATURE", "REQUESTS", "ERRORS"]
    );
    let row = |feature: &str| {
        report
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|c| c.get(1) == Some(&feature))
            .unwrap_or_else(|| panic!("no {feature} row in\n{report}"))
    };
    assert_eq!(row("checkout")[..4], ["payments", "checkout", "2", "0"]);
    assert_eq!(row("refunds")[..4], ["payments", "refunds", "1", "0"]);
    let total = cells(&report, "TOTAL");
    assert_eq!(total[1], "3");
    assert!(total[5].starts_with('$') && total[5] != "$0.00", "{report}");

    let rows = json_lines(&sluice_with(
        &dir,
        &token_env,
        &["usage", "--by", "feature", "--json"],
    ));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["feature"], "checkout", "the largest spend first");
    assert_eq!(rows[0]["requests"], 2);
    assert!(rows[0]["cost_micros"].as_i64().unwrap() > 0);
    assert!(rows[0]["input_tokens"].as_u64().unwrap() > 0);
    assert!(rows[0]["kwh"].as_f64().unwrap() > 0.0);
    let none = stdout(&sluice_with(
        &dir,
        &token_env,
        &["usage", "--until", "2000-01-01T00:00:00Z"],
    ));
    assert_eq!(cells(&none, "TOTAL")[1], "0");
}

/// Read-only commands run without provider secrets, and `--config` works in any position.
#[test]
fn read_only_commands_need_no_provider_keys_and_take_config_anywhere() {
    let dir = temp_dir("read-only");
    // A configuration serving traffic would need both keys; neither variable is set.
    std::fs::write(
        dir.join("gateway.toml"),
        "[store]\npath = \"records/sluice.db\"\n\n\
         [providers.openai]\ntype = \"openai\"\napi_key_env = \"SLUICE_TEST_UNSET_OPENAI\"\n\n\
         [providers.anthropic]\ntype = \"anthropic\"\napi_key_env = \"SLUICE_TEST_UNSET_ANTHROPIC\"\n\n\
         [deployments.gpt]\nprovider = \"openai\"\nmodel = \"gpt-4o\"\n\n\
         [deployments.claude]\nprovider = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\n\n\
         [aliases.fast]\ndeployments = [\"gpt\", \"claude\"]\n",
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = sluice_store::Stores::open(&sluice_store::StoreLocation::Sqlite(
            dir.join("records").join("sluice.db"),
        ))
        .await
        .unwrap();
        store
            .records
            .insert_records(&[logged("req_readonly01", 200, None)])
            .await
            .unwrap();
        store.close().await;
    });

    // Serving still refuses, naming the missing variable.
    let out = sluice(&dir, &["--config", "gateway.toml", "check-config"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLUICE_TEST_UNSET_OPENAI"));

    for args in [
        &["--config", "gateway.toml", "logs", "--json"][..],
        &["logs", "--config", "gateway.toml", "--json"],
        &["logs", "--json", "--config", "gateway.toml"],
    ] {
        let records = json_lines(&sluice_ok(&dir, args));
        assert_eq!(records.len(), 1, "{args:?}");
        assert_eq!(records[0]["id"], "req_readonly01", "{args:?}");
    }
    for args in [
        &["--config", "gateway.toml", "logs", "show", "req_readonly01"][..],
        &["logs", "--config", "gateway.toml", "show", "req_readonly01"],
        &["logs", "show", "--config", "gateway.toml", "req_readonly01"],
        &["logs", "show", "req_readonly01", "--config", "gateway.toml"],
    ] {
        let shown = String::from_utf8(sluice_ok(&dir, args).stdout).unwrap();
        assert!(shown.contains("req_readonly01"), "{args:?}: {shown}");
    }
    let out = sluice(
        &dir,
        &[
            "logs",
            "--team",
            "search",
            "show",
            "req_readonly01",
            "--config",
            "gateway.toml",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not apply"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        &["keys", "--config", "gateway.toml", "list"][..],
        &["usage", "--config", "gateway.toml", "--json"],
        &["budgets", "--config", "gateway.toml", "show"],
    ] {
        sluice_ok(&dir, args);
    }
    // Nothing was created next to the configuration's store by mistake.
    assert!(!dir.join("sluice-data").exists());
}

fn sluice_ok(dir: &Path, args: &[&str]) -> Output {
    let out = sluice(dir, args);
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn migrate_applies_each_migration_once_and_says_which() {
    let dir = temp_dir("migrate");
    let first = stdout(&sluice_ok(&dir, &["migrate"]));
    let applied: Vec<&str> = first
        .lines()
        .filter_map(|l| l.strip_prefix("applied "))
        .collect();
    assert_eq!(applied.len(), 7, "{first}");
    assert_eq!(applied[0], "0001_keys_and_requests");
    assert_eq!(applied[6], "0007_policy_decisions");
    assert!(
        first.contains("at schema version 7 (7 applied now)"),
        "{first}"
    );
    assert!(dir.join("sluice-data").join("sluice.db").exists());
    let again = stdout(&sluice_ok(&dir, &["migrate"]));
    assert!(!again.contains("applied 0"), "{again}");
    assert!(again.contains("(0 applied now)"), "{again}");
}

#[test]
fn serve_keys_logs_and_usage_share_one_postgres_store_and_a_revocation_applies_at_once() {
    let Ok(admin_url) = std::env::var("SLUICE_TEST_POSTGRES_URL") else {
        eprintln!("SLUICE_TEST_POSTGRES_URL is not set: the Postgres store is not tested");
        return;
    };
    let schema = common::PostgresSchema::create(&admin_url);
    let dir = temp_dir("postgres");
    let (mock, line) = common::first_line(Command::new(env!("CARGO_BIN_EXE_sluice")).args([
        "mock",
        "--listen",
        "127.0.0.1:0",
    ]));
    let mock = Stopped(mock);
    let mock_url = common::announced_url(&line);
    std::fs::write(
        dir.join("sluice.toml"),
        format!(
            "[store]\nurl = \"{}\"\n\n\
             [providers.mock]\ntype = \"openai_compatible\"\nbase_url = \"{mock_url}/v1\"\n\n\
             [deployments.mini]\nprovider = \"mock\"\nmodel = \"gpt-4o-mini\"\n\n\
             [aliases.fast]\ndeployments = [\"mini\"]\n",
            schema.url()
        ),
    )
    .unwrap();

    let migrated = stdout(&sluice_ok(&dir, &["migrate"]));
    assert!(migrated.contains("applied 0001_initial"), "{migrated}");
    assert!(migrated.contains("(1 applied now)"), "{migrated}");
    let again = stdout(&sluice_ok(&dir, &["migrate"]));
    assert!(again.contains("(0 applied now)"), "{again}");
    assert!(!dir.join("sluice-data").exists(), "no SQLite file is made");

    let created = stdout(&sluice_ok(
        &dir,
        &[
            "keys", "create", "--name", "pg", "--team", "payments", "--json",
        ],
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let key = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();

    let (gateway, line) = common::first_line(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(&dir)
            .args(["serve", "--listen", "127.0.0.1:0"]),
    );
    let mut gateway = Stopped(gateway);
    let addr = common::announced_url(&line)
        .trim_start_matches("http://")
        .to_owned();
    let body = r#"{"model":"fast","max_tokens":20,"messages":[{"role":"user","content":"hello"}]}"#;
    for _ in 0..3 {
        let answer = post_chat(&addr, &key, body);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Revoked through the CLI (another process): the serving gateway, which has the key
    // cached for 5 s, refuses it within a second, told by the store.
    let revoked = stdout(&sluice_ok(&dir, &["keys", "revoke", &key_id]));
    assert!(
        revoked.starts_with(&format!("revoked {key_id}")),
        "{revoked}"
    );
    let since = std::time::Instant::now();
    loop {
        let answer = post_chat(&addr, &key, body);
        if answer.starts_with("HTTP/1.1 401") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            since.elapsed() < std::time::Duration::from_secs(1),
            "the revoked key still works after {:?}",
            since.elapsed()
        );
    }
    // A graceful stop writes every queued record.
    let stopped = Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(gateway.0.wait().unwrap().success());
    drop(mock);

    let records = json_lines(&sluice_ok(&dir, &["logs", "--json", "--key", &key_id]));
    let served = records.iter().filter(|r| r["status"] == 200).count();
    assert!(served >= 3, "{records:?}");
    assert!(records.iter().all(|r| r["team"] == "payments"));
    let refused = json_lines(&sluice_ok(&dir, &["logs", "--json", "--status", "401"]));
    assert!(!refused.is_empty(), "the refused request is recorded");
    let shown = stdout(&sluice_ok(
        &dir,
        &["logs", "show", records[0]["id"].as_str().unwrap(), "--json"],
    ));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["id"], records[0]["id"]);
    let usage = json_lines(&sluice_ok(&dir, &["usage", "--by", "key", "--json"]));
    let of_key = usage
        .iter()
        .find(|row| row["key"] == key_id.as_str())
        .unwrap();
    assert_eq!(of_key["requests"], served);

    let listed = json_lines(&sluice_ok(&dir, &["keys", "list", "--json"]));
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["revoked_at"].is_i64());
}

#[test]
fn a_second_gateway_on_the_same_journal_is_refused_with_what_to_do() {
    let dir = temp_dir("journal-lock");
    let (first, line) = common::first_line(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(&dir)
            .args(["serve", "--listen", "127.0.0.1:0"]),
    );
    assert!(line.starts_with("sluice listening on"), "{line}");
    let second = sluice(&dir, &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("is in use by another sluice process: give each replica a journal of its own ([store] journal, or `sluice serve --journal`)"),
        "{err}"
    );
    // With a journal of its own it starts, beside the first.
    let (third, line) = common::first_line(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(&dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--journal", "journal-b"]),
    );
    assert!(line.starts_with("sluice listening on"), "{line}");
    assert!(dir.join("journal-b/lock").exists());
    assert!(dir.join("sluice-data/journal/lock").exists());
    common::stop(first);
    common::stop(third);
}

#[test]
fn a_gateway_whose_postgres_cannot_be_reached_at_start_refuses_to_start_and_says_why() {
    let dir = temp_dir("postgres-down");
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("sluice.toml"),
        format!("[store]\nurl = \"postgres://sluice:s3cret@127.0.0.1:{port}/sluice\"\n"),
    )
    .unwrap();
    let out = sluice(&dir, &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it never announced a listener");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "opening the store at postgres://sluice:***@127.0.0.1:{port}/sluice"
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// `http_version = "http2"`: the gateway reaches a plain-HTTP upstream over HTTP/2 by prior
/// knowledge, streams included; a provider left at `auto` stays on HTTP/1.1.
#[test]
fn a_provider_set_to_http2_is_reached_over_http2_by_prior_knowledge() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(sluice_testkit::MockUpstream::openai().start());
    let base = mock.base_url();
    let dir = temp_dir("http2");
    std::fs::write(
        dir.join("sluice.toml"),
        format!(
            "[providers.mesh]\ntype = \"openai_compatible\"\nbase_url = \"{base}/v1\"\n\
             http_version = \"http2\"\n\n\
             [providers.plain]\ntype = \"openai_compatible\"\nbase_url = \"{base}/v1\"\n\n\
             [deployments.over-h2]\nprovider = \"mesh\"\nmodel = \"m\"\n\n\
             [deployments.over-h1]\nprovider = \"plain\"\nmodel = \"m\"\n\n\
             [aliases.h2]\ndeployments = [\"over-h2\"]\n\n\
             [aliases.h1]\ndeployments = [\"over-h1\"]\n"
        ),
    )
    .unwrap();
    let checked = stdout(&sluice_ok(&dir, &["check-config"]));
    assert!(
        checked.contains(&format!(
            "over-h2 -> openai_compatible m at {base}/v1 (no key, http2)"
        )) && checked.contains(&format!(
            "over-h1 -> openai_compatible m at {base}/v1 (no key)"
        )),
        "{checked}"
    );
    let created = stdout(&sluice_ok(
        &dir,
        &["keys", "create", "--name", "web", "--json"],
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let key = created["secret"].as_str().unwrap().to_owned();
    let (gateway, line) = common::first_line(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(&dir)
            .args(["serve", "--listen", "127.0.0.1:0"]),
    );
    let _gateway = Stopped(gateway);
    let addr = common::announced_url(&line)
        .trim_start_matches("http://")
        .to_owned();
    for alias in ["h2", "h1"] {
        let body = format!(
            r#"{{"model":"{alias}","stream":true,"messages":[{{"role":"user","content":"say hi"}}]}}"#
        );
        let response = post_chat(&addr, &key, &body);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("data: [DONE]"), "{response}");
    }
    let versions: Vec<String> = mock
        .requests()
        .into_iter()
        .map(|r| r.http_version)
        .collect();
    assert_eq!(versions, ["HTTP/2.0", "HTTP/1.1"]);
}
