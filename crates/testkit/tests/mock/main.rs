//! Drives `MockUpstream` over real HTTP with reqwest, checking the wire
//! shapes it produces in both dialects, its faults, chaos and recording.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod anthropic;
mod chaos;
mod faults;
mod openai;

use reqwest::Response;
use serde_json::Value;

pub fn client() -> reqwest::Client {
    // Plain HTTP only, but reqwest still wants a TLS provider; a second
    // install (from another test) fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

/// POSTs `body` as JSON to `url` with extra `headers`.
pub async fn post(url: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

pub async fn json(response: Response) -> Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// One Server-Sent Event: its `event:` name (if any) and `data:` text.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

pub fn parse_sse(text: &str) -> Vec<Event> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = Event {
                name: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event.name = Some(name.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data.push_str(data);
                }
            }
            event
        })
        .collect()
}

/// Reads a whole SSE body; panics if it ends abnormally.
pub async fn sse(response: Response) -> Vec<Event> {
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    parse_sse(&text)
}

/// Reads a body until it ends or fails: the bytes received and whether it
/// ended in an error.
pub async fn read_until_error(mut response: Response) -> (String, bool) {
    let mut received = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8(received).unwrap(), false),
            Err(_) => return (String::from_utf8(received).unwrap(), true),
        }
    }
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<sluice_testkit::MockUpstream>();
    check::<sluice_testkit::MockBuilder>();
    check::<sluice_testkit::Recorded>();
}
