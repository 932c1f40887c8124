//! `#mock` directives: per-request scripting from inside the prompt, for tests
//! that go through real SDKs and cannot reach the mock's Rust API.
//!
//! The grammar is documented on the `mock` module. Parsing is forgiving: an
//! unknown word or a value that does not parse is skipped (and logged at
//! debug level), so a typo degrades to the default behaviour rather than an
//! error the SDK would misreport.

use super::Fault;
use super::chat::{Answer, Base, ChatView, call_tool};

/// The marker that starts a directive list; the list runs to the end of the line.
const MARKER: &str = "#mock";

/// Directives found in one user message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Directives {
    pub status: Option<u16>,
    pub retry_after: Option<u64>,
    pub malformed: bool,
    pub text: Option<String>,
    pub tool: Option<String>,
    pub delay_ms: Option<u64>,
    pub first_token_ms: Option<u64>,
    pub chunk_delay_ms: Option<u64>,
    pub cut_after: Option<usize>,
    pub no_usage: bool,
    pub linger_ms: Option<u64>,
    pub ignore_n: bool,
}

/// Parses every `#mock` line in `text`; `None` when there is none.
pub(super) fn parse(text: &str) -> Option<Directives> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = after_marker(line) else {
            continue;
        };
        let directives = found.get_or_insert_with(Directives::default);
        directives.apply_line(rest);
    }
    found
}

/// The text after `#mock` when the marker stands alone as a word.
fn after_marker(line: &str) -> Option<&str> {
    let mut search = line;
    while let Some(at) = search.find(MARKER) {
        let rest = &search[at + MARKER.len()..];
        if rest.is_empty() || rest.starts_with(char::is_whitespace) {
            return Some(rest);
        }
        search = rest;
    }
    None
}

impl Directives {
    fn apply_line(&mut self, mut rest: &str) {
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                return;
            }
            // `text=` swallows the rest of the line, spaces included.
            if let Some(text) = rest.strip_prefix("text=") {
                self.text = Some(text.trim_end().to_owned());
                return;
            }
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            self.apply_word(&rest[..end]);
            rest = &rest[end..];
        }
    }

    fn apply_word(&mut self, word: &str) {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let applied = match key {
            "malformed" => {
                self.malformed = true;
                true
            }
            "no_usage" => {
                self.no_usage = true;
                true
            }
            "ignore_n" => {
                self.ignore_n = true;
                true
            }
            "tool" if !value.is_empty() => {
                self.tool = Some(value.to_owned());
                true
            }
            "status" => set(&mut self.status, value),
            "retry_after" => set(&mut self.retry_after, value),
            "delay_ms" => set(&mut self.delay_ms, value),
            "first_token_ms" => set(&mut self.first_token_ms, value),
            "chunk_delay_ms" => set(&mut self.chunk_delay_ms, value),
            "cut_after" => set(&mut self.cut_after, value),
            "linger_ms" => set(&mut self.linger_ms, value),
            _ => false,
        };
        if !applied {
            tracing::debug!(
                directive = word,
                "mock upstream ignored an unknown #mock directive"
            );
        }
    }

    /// The fault these directives ask for, when they ask for any.
    pub fn fault(&self) -> Option<Fault> {
        let any = self.delay_ms.is_some()
            || self.first_token_ms.is_some()
            || self.chunk_delay_ms.is_some()
            || self.cut_after.is_some()
            || self.linger_ms.is_some()
            || self.ignore_n
            || self.no_usage;
        any.then(|| Fault {
            delay_ms: self.delay_ms.unwrap_or(0),
            first_token_ms: self.first_token_ms.unwrap_or(0),
            chunk_delay_ms: self.chunk_delay_ms.unwrap_or(0),
            cut_after_events: self.cut_after,
            usage_in_stream: !self.no_usage,
            linger_ms: self.linger_ms.unwrap_or(0),
            ignore_n: self.ignore_n,
        })
    }

    /// The reply these directives ask for, when they pick one; precedence is
    /// `status`, then `malformed`, then `text`, then `tool`.
    pub fn base(&self, view: &ChatView) -> Option<Base> {
        if let Some(status) = self.status {
            return Some(Base::Status {
                status,
                body: None,
                retry_after: self.retry_after,
            });
        }
        if self.malformed {
            return Some(Base::Malformed);
        }
        if let Some(text) = &self.text {
            return Some(Base::Answer(Answer::text(text.clone())));
        }
        self.tool
            .as_deref()
            .map(|name| Base::Answer(call_tool(view, name)))
    }
}

fn set<T: std::str::FromStr>(slot: &mut Option<T>, value: &str) -> bool {
    match value.parse() {
        Ok(parsed) => {
            *slot = Some(parsed);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_timing() {
        let d = parse("please fail #mock status=429 retry_after=2 delay_ms=100").unwrap();
        assert_eq!(d.status, Some(429));
        assert_eq!(d.retry_after, Some(2));
        assert_eq!(d.fault().unwrap().delay_ms, 100);
        assert!(d.fault().unwrap().usage_in_stream);
    }

    #[test]
    fn text_takes_rest_of_line() {
        let d = parse("#mock cut_after=3 text=hi there  \nnext line").unwrap();
        assert_eq!(d.text.as_deref(), Some("hi there"));
        assert_eq!(d.cut_after, Some(3));
    }

    #[test]
    fn flags_and_unknown_words() {
        let d = parse("#mock malformed no_usage bogus status=abc").unwrap();
        assert!(d.malformed);
        assert!(!d.fault().unwrap().usage_in_stream);
        assert_eq!(d.status, None);
    }

    #[test]
    fn marker_must_be_a_word() {
        assert_eq!(parse("no directives here"), None);
        assert_eq!(parse("#mockery status=500"), None);
        assert_eq!(parse("#mock"), Some(Directives::default()));
        assert_eq!(parse("#mock").unwrap().fault(), None);
    }
}
