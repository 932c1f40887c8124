//! [`MockUpstream`]: a scripted LLM provider on loopback speaking the OpenAI
//! and Anthropic wire formats.
//!
//! It records every request, answers with scripted [`Reply`]s or a realistic
//! default, injects [`Fault`]s (delays, cut connections, malformed bodies,
//! error statuses), and with [`Chaos`] fails or stalls exact shares of chat
//! requests (what `sluice mock --fail-ratio ... --stall-ratio ...` serves to
//! the fault benchmark). Payloads are built here with `serde_json`, never
//! with Sluice's own wire types, so a test through the gateway checks the
//! gateway's translation against an independent implementation.
//!
//! # Routes
//!
//! | builder | routes |
//! | --- | --- |
//! | [`MockUpstream::openai`] | `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models` |
//! | [`MockUpstream::anthropic`] | `POST /v1/messages`, `POST /v1/messages/count_tokens`, `GET /v1/models` |
//! | [`MockUpstream::both`] | all of the above; `GET /v1/models` answers in the Anthropic shape when the client sends `x-api-key` or `anthropic-version` |
//!
//! [`MockUpstream::base_url`] is `http://127.0.0.1:PORT` *without* `/v1`:
//! configure it as a deployment's base URL and let the provider append
//! `/v1/...`. Any other path answers 404 in the dialect's error shape.
//! Requests are checked like the real APIs do it where it matters to a
//! gateway: a body that is not a JSON object, a missing `model` or
//! `messages`, an empty `messages`, or (Anthropic) a missing `max_tokens`
//! gets a 400 in the dialect's error shape.
//!
//! # Choosing a reply
//!
//! Each chat request (`/v1/chat/completions`, `/v1/messages`) takes the first
//! of:
//!
//! 1. the next queued reply ([`MockBuilder::reply`], [`MockUpstream::push_reply`]);
//! 2. `#mock` directives in the last user message (below);
//! 3. [`MockBuilder::chaos`]: a request in the failing share answers the
//!    error status in the dialect's error body; one in the stalling share
//!    takes its reply from 4 or 5 but waits `stall_ms` more before the
//!    headers (a request in both shares waits, then fails);
//! 4. the [`MockBuilder::always`] reply;
//! 5. the default behaviour (below).
//!
//! Directives that only set timing (`delay_ms`...) combine with 4 or 5, and
//! so does the fault of an `always` reply with 3. Chaos numbers only the
//! requests that reach step 3: queued replies and requests with a `#mock`
//! line neither count toward its shares nor get failed or stalled.
//! `/v1/embeddings` also takes queued and `always` replies, but only their
//! `Status`, `Malformed` and fault parts apply; otherwise it returns vectors.
//! A 401 from [`MockBuilder::require_key`] consumes nothing.
//!
//! # Default behaviour
//!
//! * A forced tool (OpenAI `tool_choice: {"type": "function", ...}` or
//!   `"required"`, Anthropic `tool_choice: {"type": "tool" | "any"}`) is
//!   called with arguments generated from its schema; in Anthropic this is
//!   the structured-output path: a `tool_use` block, `stop_reason: tool_use`.
//! * Structured output (OpenAI `response_format.json_schema`, Anthropic
//!   `output_format` / `output_config.format` of type `json_schema`): the
//!   text is a JSON value that validates against the schema. OpenAI
//!   `json_object` mode answers `{"reply": "<echo>"}`.
//! * Tools with `tool_choice` auto, and the last message is the user's (not
//!   a tool result): the first tool is called.
//! * The last message carries tool results: `Tool result received: <text>`.
//! * Otherwise: `Hello from the Sluice mock. You said: <last user text>`,
//!   echoed text cut at 200 characters.
//!
//! Text longer than `max_tokens` is cut there, with `finish_reason: length` /
//! `stop_reason: max_tokens`.
//!
//! Usage is `ceil(chars / 4)` (at least 1) of all input text (system prompt,
//! messages, tool calls and results) and of the output, reported in the
//! dialect's real fields. The `model` field is the requested model with
//! `-mock-2026-01-01` appended unless it already ends in a date version.
//!
//! # Directives
//!
//! For tests that go through real SDKs: the last user message may contain a
//! line with `#mock` followed by space-separated words, up to the end of
//! that line (several such lines merge):
//!
//! ```text
//! #mock status=429 retry_after=2     error status (dialect error body), optional Retry-After seconds
//! #mock malformed                    200 whose body (or second SSE event) is not JSON
//! #mock text=hi there                answer this text; takes the rest of the line, so put it last
//! #mock tool=get_weather             call this tool, arguments generated from its schema
//! #mock delay_ms=100                 wait before sending headers
//! #mock first_token_ms=50            stream: wait before the first content event
//! #mock chunk_delay_ms=10            stream: wait between events
//! #mock cut_after=3                  abort the connection after 3 events (non-stream: mid-body)
//! #mock no_usage                     stream: omit usage, like some OpenAI-compatible servers
//! #mock linger_ms=200                stream: wait after the last event before closing
//! #mock ignore_n                     answer one choice whatever `n` asked for
//! ```
//!
//! Precedence among reply words is `status`, `malformed`, `text`, `tool`.
//! Unknown words and unparsable values are ignored.
//!
//! # Faults and streams
//!
//! See [`Fault`]. Streams are produced lazily frame by frame (never
//! buffered), so timing is observable by the client. A stream whose client
//! disconnects before its last event is counted by
//! [`MockUpstream::cancelled`].

mod anthropic;
mod chaos;
mod chat;
mod directives;
mod openai;
mod routes;
mod schema;
mod sse;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use routes::{Routes, Shared, lock};

pub use chaos::Chaos;

/// The two wire formats the mock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MockDialect {
    OpenAi,
    Anthropic,
}

/// One scripted answer to a chat request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A normal assistant answer with this text.
    Text(String),
    /// The model calls these tools: `(name, arguments)`.
    ToolCalls(Vec<(String, Value)>),
    /// An error response. `body: None` sends the dialect's real error shape
    /// for `status` (OpenAI `{"error": {...}}`, Anthropic `{"type": "error",
    /// "error": {"type": "rate_limit_error" | "overloaded_error" | ...}}`);
    /// `retry_after` sets `Retry-After` in seconds. Errors are JSON even on
    /// streaming requests, as the real APIs send them before a stream starts.
    Status {
        status: u16,
        body: Option<String>,
        retry_after: Option<u64>,
    },
    /// A 200 whose body is not valid JSON, or (streaming) a stream whose
    /// second event's data is not JSON.
    Malformed,
    /// The inner reply with a fault applied; the outermost fault wins when
    /// these nest.
    WithFault(Box<Reply>, Fault),
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Reply::Text(text.into())
    }

    /// An error status with the dialect's default body and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Reply::Status {
            status,
            body: None,
            retry_after: None,
        }
    }

    /// One tool call.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Reply::ToolCalls(vec![(name.into(), arguments)])
    }

    /// This reply with `fault` applied.
    pub fn with_fault(self, fault: Fault) -> Self {
        Reply::WithFault(Box::new(self), fault)
    }
}

/// Misbehaviour applied to one reply.
///
/// Timing uses `tokio::time`, so a paused test clock controls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Wait before sending the response headers.
    pub delay_ms: u64,
    /// Stream: wait after the headers before the first content event (in
    /// place of `chunk_delay_ms` for that event). Ignored without streaming.
    pub first_token_ms: u64,
    /// Stream: wait between events.
    pub chunk_delay_ms: u64,
    /// Stream: abort the connection after this many events (all kinds
    /// count, `message_start` and `ping` included), with no terminal event;
    /// the client sees an incomplete chunked body. Non-stream: send half the
    /// JSON body, then abort.
    pub cut_after_events: Option<usize>,
    /// Default `true`. `false` omits usage from streams (OpenAI: no usage
    /// chunk even with `include_usage`; Anthropic: no `usage` in
    /// `message_start` / `message_delta`), mimicking servers that omit it.
    pub usage_in_stream: bool,
    /// Stream: wait this long after the last event before closing the body, as a server that
    /// lingers after `[DONE]` / `message_stop` does.
    pub linger_ms: u64,
    /// OpenAI, whole answers: answer one choice whatever `n` asked for, as many compatible
    /// servers do (by default the mock answers `n` choices, as OpenAI does).
    pub ignore_n: bool,
}

impl Default for Fault {
    fn default() -> Self {
        Fault {
            delay_ms: 0,
            first_token_ms: 0,
            chunk_delay_ms: 0,
            cut_after_events: None,
            usage_in_stream: true,
            linger_ms: 0,
            ignore_n: false,
        }
    }
}

/// One request as the mock received it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// The path without the query string, e.g. `/v1/chat/completions`.
    pub path: String,
    /// In arrival order; names lower-case, values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, or `Null` when it is not JSON.
    pub body: Value,
    pub raw: Bytes,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub http_version: String,
    /// Which connection it came on: connections are numbered from 1 as the mock accepts them.
    pub connection: u64,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Configures a [`MockUpstream`] before it starts.
#[derive(Clone)]
pub struct MockBuilder {
    routes: Routes,
    queue: VecDeque<Reply>,
    always: Option<Reply>,
    chaos: Option<Chaos>,
    key: Option<String>,
    http2_max_streams: u32,
}

/// Streams one HTTP/2 connection may carry at once, unless [`MockBuilder::http2_max_streams`]
/// says otherwise (hyper's default).
const HTTP2_MAX_STREAMS: u32 = 200;

impl std::fmt::Debug for MockBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockBuilder")
            .field("routes", &self.routes)
            .field("queue", &self.queue)
            .field("always", &self.always)
            .field("chaos", &self.chaos)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("http2_max_streams", &self.http2_max_streams)
            .finish()
    }
}

impl MockBuilder {
    fn new(routes: Routes) -> Self {
        MockBuilder {
            routes,
            queue: VecDeque::new(),
            always: None,
            chaos: None,
            key: None,
            http2_max_streams: HTTP2_MAX_STREAMS,
        }
    }

    /// Queues a reply; queued replies are used in order, one per chat (or
    /// embeddings) request, before anything else.
    pub fn reply(mut self, reply: Reply) -> Self {
        self.queue.push_back(reply);
        self
    }

    /// The reply used whenever the queue is empty and the request has no
    /// `#mock` reply directive, instead of the default behaviour.
    pub fn always(mut self, reply: Reply) -> Self {
        self.always = Some(reply);
        self
    }

    /// Fails and stalls fixed shares of chat requests (see [`Chaos`]); takes
    /// precedence over [`MockBuilder::always`] and the default behaviour, not
    /// over queued replies or `#mock` directives.
    pub fn chaos(mut self, chaos: Chaos) -> Self {
        self.chaos = Some(chaos);
        self
    }

    /// Answers 401 in the route's dialect unless the request carries
    /// `Authorization: Bearer <key>` (OpenAI routes) or `x-api-key: <key>`
    /// (Anthropic routes); `GET /v1/models` on [`MockUpstream::both`]
    /// accepts either.
    pub fn require_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// The `SETTINGS_MAX_CONCURRENT_STREAMS` the mock announces to HTTP/2 clients (default
    /// 200): streams past it on one connection wait for one to end.
    pub fn http2_max_streams(mut self, streams: u32) -> Self {
        self.http2_max_streams = streams;
        self
    }

    /// Starts serving on `127.0.0.1` at a free port.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound; this is test and demo support,
    /// where that is fatal anyway. Use [`MockBuilder::start_on`] to handle it.
    pub async fn start(self) -> MockUpstream {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        match self.start_on(addr).await {
            Ok(mock) => mock,
            Err(err) => panic!("MockUpstream cannot bind {addr}: {err}"),
        }
    }

    /// Starts serving on `addr` (port 0 picks a free one).
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub async fn start_on(self, addr: SocketAddr) -> io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let http2_max_streams = self.http2_max_streams;
        let shared = self.into_shared();
        let app = routes::router(Arc::clone(&shared));
        let server = tokio::spawn(routes::serve(listener, app, http2_max_streams));
        Ok(MockUpstream {
            addr,
            shared,
            server,
        })
    }

    fn into_shared(self) -> Arc<Shared> {
        Arc::new(Shared {
            routes: self.routes,
            key: self.key,
            always: self.always,
            chaos: self.chaos.map(chaos::ChaosState::new),
            queue: Mutex::new(self.queue),
            requests: Mutex::new(Vec::new()),
            hits: watch::Sender::new(0),
            cancelled: watch::Sender::new(0),
        })
    }
}

/// A running mock provider. Dropping it (or [`MockUpstream::shutdown`])
/// stops accepting connections; responses already in flight finish.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl MockUpstream {
    /// A mock serving the OpenAI routes.
    pub fn openai() -> MockBuilder {
        Self::builder(MockDialect::OpenAi)
    }

    /// A mock serving the Anthropic routes.
    pub fn anthropic() -> MockBuilder {
        Self::builder(MockDialect::Anthropic)
    }

    /// A mock serving both dialects' routes, as `sluice demo` uses.
    pub fn both() -> MockBuilder {
        MockBuilder::new(Routes {
            openai: true,
            anthropic: true,
        })
    }

    /// A mock serving one dialect's routes.
    pub fn builder(dialect: MockDialect) -> MockBuilder {
        MockBuilder::new(Routes {
            openai: dialect == MockDialect::OpenAi,
            anthropic: dialect == MockDialect::Anthropic,
        })
    }

    /// `http://127.0.0.1:PORT`, with no trailing slash and *no* `/v1`: the
    /// gateway's provider config appends `/v1/chat/completions`,
    /// `/v1/messages` and so on.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether this mock serves `dialect`'s routes.
    pub fn serves(&self, dialect: MockDialect) -> bool {
        match dialect {
            MockDialect::OpenAi => self.shared.routes.openai,
            MockDialect::Anthropic => self.shared.routes.anthropic,
        }
    }

    /// Chat, messages and embeddings requests received so far, including
    /// ones answered 401 or 400 (not `count_tokens` or `models`).
    pub fn hits(&self) -> usize {
        *self.shared.hits.borrow()
    }

    /// Resolves once [`MockUpstream::hits`] reaches `at_least`. Not bounded:
    /// wrap it in `tokio::time::timeout`.
    pub async fn wait_hits(&self, at_least: usize) {
        let mut rx = self.shared.hits.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|n| *n >= at_least).await;
    }

    /// Every request received on any path, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    pub fn last_request(&self) -> Option<Recorded> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Queues a reply after start; same rules as [`MockBuilder::reply`].
    pub fn push_reply(&self, reply: Reply) {
        lock(&self.shared.queue).push_back(reply);
    }

    /// Streams whose client disconnected before the last event (a
    /// [`Fault::cut_after_events`] cut is not counted). Counted when hyper
    /// notices the disconnect, usually at the next write.
    pub fn cancelled(&self) -> usize {
        *self.shared.cancelled.borrow()
    }

    /// Resolves once [`MockUpstream::cancelled`] reaches `at_least`. Not
    /// bounded: wrap it in `tokio::time::timeout`.
    pub async fn wait_cancelled(&self, at_least: usize) {
        let mut rx = self.shared.cancelled.subscribe();
        let _ = rx.wait_for(|n| *n >= at_least).await;
    }

    /// Stops accepting connections; same as dropping.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("routes", &self.shared.routes)
            .field("hits", &self.hits())
            .finish_non_exhaustive()
    }
}
