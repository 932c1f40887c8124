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
