//! Smoke tests of the built `sluice` binary: configuration checks, key management, and a
//! served request recorded and shown by `sluice logs`.

#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

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

/// Starts `sluice demo` on a free port, sends one request with raw HTTP, stops the gateway with
/// SIGTERM, and finds the request in `sluice logs --json`.
#[test]
fn demo_serves_a_request_and_logs_show_it_after_a_graceful_stop() {
    let dir = temp_dir("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(&dir)
        .args(["demo", "--listen", "127.0.0.1:0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = info["base_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let key = info["api_key"].as_str().unwrap();

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
    let request_id = response
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap()
        .trim()
        .to_owned();

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
}
