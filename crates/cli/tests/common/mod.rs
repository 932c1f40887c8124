//! What the CLI test binaries share: starting the built `sluice` and reading what it announces.
#![allow(
    dead_code,
    reason = "every test binary compiles this module and uses a part of it"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Starts `command` (the built `sluice`, arguments set) with its stdout piped and returns it
/// with the first line it prints: the address it listens on, or its JSON announcement.
pub fn first_line(command: &mut Command) -> (Child, String) {
    first_line_logging_to(command, Stdio::null())
}

/// [`first_line`], with the process's log (its stderr) going to `log`.
pub fn first_line_logging_to(command: &mut Command, log: Stdio) -> (Child, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// `sluice serve` on a free port, killed when the test ends (passed or failed) unless stopped
/// before.
pub struct Served {
    child: Option<Child>,
    pub url: String,
}

impl Served {
    /// `sluice serve --listen 127.0.0.1:0` in `dir`, with `env` set.
    pub fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Served {
        let (child, line) = first_line(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .current_dir(dir)
                .envs(env.iter().copied())
                .args(["serve", "--listen", "127.0.0.1:0"]),
        );
        Served {
            child: Some(child),
            url: announced_url(&line),
        }
    }

    /// SIGKILL: nothing is drained.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, and wait for a graceful stop: every queued record is written first.
    pub fn stop(mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM, then wait: the process drains its records and settlements before exiting.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The URL a process announced in its first line (`sluice mock`, `sluice serve`).
pub fn announced_url(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in the first line: {line:?}"))
        .to_owned()
}

/// A schema of its own in the test database, dropped when the test ends (a failed one too).
pub struct PostgresSchema {
    admin_url: String,
    name: String,
}

impl PostgresSchema {
    pub fn create(admin_url: &str) -> PostgresSchema {
        static CREATED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let nth = CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("sluice_cli_{}_{nth}_{nanos}", std::process::id());
        run_sql(admin_url, &format!("CREATE SCHEMA {name}")).unwrap();
        PostgresSchema {
            admin_url: admin_url.to_owned(),
            name,
        }
    }

    /// The URL whose connections use this schema.
    pub fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.admin_url, self.name
        )
    }
}

impl Drop for PostgresSchema {
    /// Never panics: it may run while a failed test unwinds.
    fn drop(&mut self) {
        let dropped = run_sql(
            &self.admin_url,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
        if let Err(e) = dropped {
            eprintln!("schema {} left behind: {e}", self.name);
        }
    }
}

/// Runs `sql` on a connection of its own, on a thread of its own: callable from sync tests and
/// from within a Tokio runtime alike.
fn run_sql(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    let ran = std::thread::spawn(move || {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
            .map_err(|e| e.to_string())
    })
    .join();
    ran.map_err(|_| "the SQL thread panicked".to_owned())?
}
