//! The mock's HTTP side: one axum fallback handler that records every
//! request, checks the key, picks the reply and renders it in the dialect of
//! the route that was called.
//!
//! Wire shapes live in `openai.rs` and `anthropic.rs`; the default answer in
//! `chat.rs`; body timing in `sse.rs`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

use super::chaos::{ChaosState, Verdict};
use super::chat::{self, Answer, Base, ChatView};
use super::sse::{self, Frame, OnAbandon};
use super::{Fault, MockDialect, Recorded, Reply, anthropic, directives, openai};

/// Request bodies above this are refused; generous for tests with long prompts.
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Which dialects' routes a mock serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Routes {
    pub openai: bool,
    pub anthropic: bool,
}

/// State shared between the handle ([`super::MockUpstream`]) and the server.
pub(super) struct Shared {
    pub routes: Routes,
    pub key: Option<String>,
    pub always: Option<Reply>,
    pub chaos: Option<ChaosState>,
    pub queue: Mutex<VecDeque<Reply>>,
    pub requests: Mutex<Vec<Recorded>>,
    pub hits: watch::Sender<usize>,
    pub cancelled: watch::Sender<usize>,
}

/// Locks ignoring poison: a panicking test thread must not wedge the mock.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn record(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
        version: Version,
        connection: u64,
    ) {
        let recorded = Recorded {
            http_version: format!("{version:?}"),
            connection,
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            raw: body.clone(),
        };
        lock(&self.requests).push(recorded);
    }

    fn hit(&self) {
        self.hits.send_modify(|n| *n += 1);
    }

    fn authorized(&self, dialect: Option<MockDialect>, headers: &HeaderMap) -> bool {
        let Some(key) = &self.key else {
            return true;
        };
        let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = text(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
        let x_api_key = text(HeaderName::from_static("x-api-key"));
        let matches = |given: Option<&str>| given == Some(key.as_str());
        match dialect {
            Some(MockDialect::OpenAi) => matches(bearer),
            Some(MockDialect::Anthropic) => matches(x_api_key),
            None => matches(bearer) || matches(x_api_key),
        }
    }

    /// The scripted reply for this request, if any: the queue first, then `always`.
    fn scripted(&self) -> Option<(Base, Fault)> {
        let queued = lock(&self.queue).pop_front();
        queued
            .or_else(|| self.always.clone())
            .map(|r| chat::flatten(&r))
    }

    /// Queue, then `#mock` directives, then chaos, then `always`, then the
    /// default answer. Only requests without directives count toward chaos.
    fn choose(&self, view: &ChatView) -> (Base, Fault) {
        if let Some(queued) = lock(&self.queue).pop_front() {
            return chat::flatten(&queued);
        }
        let directives = directives::parse(&view.last_user_text);
        let verdict = match (&directives, &self.chaos) {
            (None, Some(chaos)) => chaos.next(),
            _ => Verdict::default(),
        };
        let directives = directives.unwrap_or_default();
        let always = self.always.as_ref().map(chat::flatten);
        let base = match verdict.fail {
            Some(status) => Base::Status {
                status,
                body: None,
                retry_after: None,
            },
            None => directives
                .base(view)
                .or_else(|| always.as_ref().map(|(base, _)| base.clone()))
                .unwrap_or_else(|| Base::Answer(chat::default_answer(view))),
        };
        let mut fault = directives
            .fault()
            .or_else(|| always.map(|(_, fault)| fault))
            .unwrap_or_default();
        fault.delay_ms = fault.delay_ms.saturating_add(verdict.stall_ms);
        (base, fault)
    }
}

/// The connection a request came on, numbered from 1 in the order the mock accepted them.
#[derive(Debug, Clone, Copy)]
struct ConnectionNumber(u64);

/// Serves `app` on every connection `listener` accepts, HTTP/1.1 or HTTP/2 by prior knowledge
/// (h2c), announcing `http2_max_streams` to HTTP/2 clients.
pub(super) async fn serve(listener: TcpListener, app: Router, http2_max_streams: u32) {
    let mut accepted = 0;
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                // Out of descriptors, say: wait a moment rather than spin.
                tracing::warn!(error = %err, "mock upstream could not accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Stream events are small writes: without TCP_NODELAY, Nagle's algorithm holds them
        // until the client's delayed ACK and timing faults stop meaning anything.
        let _ = tcp.set_nodelay(true);
        accepted += 1;
        let number = ConnectionNumber(accepted);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(number);
            let mut app = app.clone();
            async move { app.call(request.map(Body::new)).await }
        });
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(http2_max_streams);
            // A client that hangs up mid-answer is what some tests do; nothing to report.
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    connection: Option<Extension<ConnectionNumber>>,
    version: Version,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let connection = connection.map_or(0, |Extension(ConnectionNumber(n))| n);
    shared.record(&method, &uri, &headers, &body, version, connection);
    let routes = shared.routes;
    let path = uri.path();
    let post = method == Method::POST;
    if post && path == "/v1/chat/completions" && routes.openai {
        chat(&shared, &Ctx::new(MockDialect::OpenAi), &headers, &body).await
    } else if post && path == "/v1/messages" && routes.anthropic {
        chat(&shared, &Ctx::new(MockDialect::Anthropic), &headers, &body).await
    } else if post && path == "/v1/embeddings" && routes.openai {
        embeddings(&shared, &Ctx::new(MockDialect::OpenAi), &headers, &body).await
    } else if post && path == "/v1/messages/count_tokens" && routes.anthropic {
        count_tokens(&shared, &Ctx::new(MockDialect::Anthropic), &headers, &body)
    } else if method == Method::GET && path == "/v1/models" {
        let ctx = Ctx::new(guess_dialect(routes, &headers));
        let only = (routes.openai != routes.anthropic).then_some(ctx.dialect);
        if !shared.authorized(only, &headers) {
            return ctx.error(401, None);
        }
        match ctx.dialect {
            MockDialect::OpenAi => ctx.json(200, &openai::models()),
            MockDialect::Anthropic => ctx.json(200, &anthropic::models()),
        }
    } else {
        let ctx = Ctx::new(guess_dialect(routes, &headers));
        let message = format!("Invalid URL ({method} {path})");
        ctx.error(404, Some(&message))
    }
}

/// For routes both dialects share: Anthropic when the client sends its headers.
fn guess_dialect(routes: Routes, headers: &HeaderMap) -> MockDialect {
    let anthropic_client =
        headers.contains_key("x-api-key") || headers.contains_key("anthropic-version");
    if routes.anthropic && (!routes.openai || anthropic_client) {
        MockDialect::Anthropic
    } else {
        MockDialect::OpenAi
    }
}

async fn chat(shared: &Arc<Shared>, ctx: &Ctx, headers: &HeaderMap, body: &Bytes) -> Response {
    shared.hit();
    if !shared.authorized(Some(ctx.dialect), headers) {
        return ctx.error(401, None);
    }
    let json = match parse_object(body) {
        Ok(json) => json,
        Err(message) => return ctx.error(400, Some(message)),
    };
    let view = match ctx.dialect {
        MockDialect::OpenAi => openai::parse(&json),
        MockDialect::Anthropic => {
            anthropic::check_max_tokens(&json).and_then(|()| anthropic::parse(&json))
        }
    };
    let view = match view {
        Ok(view) => view,
        Err(message) => return ctx.error(400, Some(&message)),
    };
    let (base, fault) = shared.choose(&view);
    pause(fault.delay_ms).await;
    let answer = match base {
        Base::Status {
            status,
            body,
            retry_after,
        } => return ctx.status(status, body, retry_after),
        Base::Malformed if view.stream => {
            let frames = match ctx.dialect {
                MockDialect::OpenAi => openai::malformed_stream(&openai::Meta::new(&view.model)),
                MockDialect::Anthropic => {
                    anthropic::malformed_stream(&anthropic::Meta::new(&view.model))
                }
            };
            return ctx.stream(frames, fault, None);
        }
        Base::Malformed => return ctx.malformed(),
        Base::Answer(answer) => chat::limit(answer, view.max_tokens),
    };
    let usage = chat::usage(&view, &answer);
    if view.stream {
        let frames = match ctx.dialect {
            MockDialect::OpenAi => openai::stream(
                &openai::Meta::new(&view.model),
                &answer,
                usage,
                view.include_usage,
                fault.usage_in_stream,
            ),
            MockDialect::Anthropic => anthropic::stream(
                &anthropic::Meta::new(&view.model),
                &answer,
                usage,
                fault.usage_in_stream,
            ),
        };
        let counter = Arc::clone(shared);
        let on_abandon: OnAbandon = Box::new(move || counter.cancelled.send_modify(|n| *n += 1));
        return ctx.stream(frames, fault, Some(on_abandon));
    }
    let value = match ctx.dialect {
        MockDialect::OpenAi => {
            let mut value = openai::completion(&openai::Meta::new(&view.model), &answer, usage);
            if !fault.ignore_n {
                openai::answer_n_choices(&mut value, json.get("n"));
            }
            value
        }
        MockDialect::Anthropic => {
            anthropic::message(&anthropic::Meta::new(&view.model), &answer, usage)
        }
    };
    ctx.json_with(&value, fault)
}

async fn embeddings(shared: &Shared, ctx: &Ctx, headers: &HeaderMap, body: &Bytes) -> Response {
    shared.hit();
    if !shared.authorized(Some(ctx.dialect), headers) {
        return ctx.error(401, None);
    }
    let json = match parse_object(body) {
        Ok(json) => json,
        Err(message) => return ctx.error(400, Some(message)),
    };
    // Text and tool-call replies mean nothing here; they still consume their
    // slot and keep their fault.
    let (base, fault) = shared
        .scripted()
        .unwrap_or((Base::Answer(Answer::text("")), Fault::default()));
    pause(fault.delay_ms).await;
    match base {
        Base::Status {
            status,
            body,
            retry_after,
        } => ctx.status(status, body, retry_after),
        Base::Malformed => ctx.malformed(),
        Base::Answer(_) => match openai::embeddings(&json) {
            Ok(value) => ctx.json_with(&value, fault),
            Err(message) => ctx.error(400, Some(&message)),
        },
    }
}

fn count_tokens(shared: &Shared, ctx: &Ctx, headers: &HeaderMap, body: &Bytes) -> Response {
    if !shared.authorized(Some(ctx.dialect), headers) {
        return ctx.error(401, None);
    }
    let view = parse_object(body)
        .map_err(str::to_owned)
        .and_then(|json| anthropic::parse(&json));
    match view {
        Ok(view) => ctx.json(200, &anthropic::count_tokens(&view)),
        Err(message) => ctx.error(400, Some(&message)),
    }
}

fn parse_object(body: &Bytes) -> Result<Value, &'static str> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        _ => Err("We could not parse the JSON body of your request."),
    }
}

async fn pause(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Per-request rendering context: the dialect and its request id.
struct Ctx {
    dialect: MockDialect,
    request_id: String,
}

impl Ctx {
    fn new(dialect: MockDialect) -> Self {
        let request_id = match dialect {
            MockDialect::OpenAi => chat::random_hex("req_", 32),
            MockDialect::Anthropic => chat::random_id("req_011C", 20),
        };
        Ctx {
            dialect,
            request_id,
        }
    }

    fn respond(&self, status: u16, content_type: &'static str, body: Body) -> Response {
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        let id_header = match self.dialect {
            MockDialect::OpenAi => "x-request-id",
            MockDialect::Anthropic => "request-id",
        };
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            headers.insert(HeaderName::from_static(id_header), value);
        }
        response
    }

    fn json(&self, status: u16, value: &Value) -> Response {
        self.respond(status, "application/json", Body::from(value.to_string()))
    }

    /// A 200 JSON body; with `cut_after_events` set, only its first half is
    /// sent before the connection is aborted.
    fn json_with(&self, value: &Value, fault: Fault) -> Response {
        let bytes = Bytes::from(value.to_string());
        if fault.cut_after_events.is_none() {
            return self.respond(200, "application/json", Body::from(bytes));
        }
        let half = bytes.slice(..bytes.len() / 2);
        let cut = Fault {
            cut_after_events: Some(1),
            ..Fault::default()
        };
        let body = sse::body(vec![Frame::raw(half)], cut, None);
        self.respond(200, "application/json", body)
    }

    fn error(&self, status: u16, message: Option<&str>) -> Response {
        let body = match self.dialect {
            MockDialect::OpenAi => openai::error_body(status, message),
            MockDialect::Anthropic => anthropic::error_body(status, message, &self.request_id),
        };
        self.json(status, &body)
    }

    /// A scripted error status: the given body verbatim, or the dialect's own.
    fn status(&self, status: u16, body: Option<String>, retry_after: Option<u64>) -> Response {
        let mut response = match body {
            Some(body) => self.respond(status, "application/json", Body::from(body)),
            None => self.error(status, None),
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    fn malformed(&self) -> Response {
        let truncated = match self.dialect {
            MockDialect::OpenAi => {
                r#"{"id": "chatcmpl-mock", "object": "chat.completion", "choices": [{"#
            }
            MockDialect::Anthropic => r#"{"id": "msg_mock", "type": "message", "content": [{"#,
        };
        self.respond(200, "application/json", Body::from(truncated))
    }

    fn stream(&self, frames: Vec<Frame>, fault: Fault, on_abandon: Option<OnAbandon>) -> Response {
        let body = sse::body(frames, fault, on_abandon);
        let mut response = self.respond(200, "text/event-stream; charset=utf-8", body);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn guesses_dialect_from_headers() {
        let both = Routes {
            openai: true,
            anthropic: true,
        };
        let mut headers = HeaderMap::new();
        assert_eq!(guess_dialect(both, &headers), MockDialect::OpenAi);
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        assert_eq!(guess_dialect(both, &headers), MockDialect::Anthropic);
        let openai_only = Routes {
            openai: true,
            anthropic: false,
        };
        assert_eq!(guess_dialect(openai_only, &headers), MockDialect::OpenAi);
    }

    #[test]
    fn status_json_is_valid() {
        let body = openai::error_body(429, None);
        assert_eq!(body["error"]["code"], json!("rate_limit_exceeded"));
    }
}
