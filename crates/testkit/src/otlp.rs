//! OTLP collectors for tests of trace export: a real OTLP/HTTP endpoint (`POST /v1/traces`,
//! protobuf) and a real OTLP/gRPC `TraceService`, both on `127.0.0.1:0`, handing what they
//! decode to the test; and [`Silent`], a collector that takes the request and never answers.
//!
//! They depend on no Sluice crate, so a test checks the gateway's spans against the protocol's
//! own generated types rather than against the exporter that produced them. Behind the `otlp`
//! feature: only tests need them, not `sluice mock` or `sluice demo`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as HttpStatus, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
pub use opentelemetry_proto::tonic::trace::v1::Span;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// OTLP span flags: the span says whether its parent is remote ...
pub const HAS_IS_REMOTE: u32 = 0x100;
/// ... and that it is.
pub const IS_REMOTE: u32 = 0x200;

/// How long [`Receiver::next`] and [`Silent::request_arrived`] wait: only a safety net against
/// a hung test, far longer than any export here takes.
const PATIENCE: Duration = Duration::from_secs(30);

/// Plenty for any test; a receiver never holds more than a test sends.
const EXPORTS: usize = 1024;

/// One export call as the receiver saw it.
#[derive(Debug)]
pub struct Export {
    /// Lowercase header (or gRPC metadata) name -> value.
    pub headers: HashMap<String, String>,
    pub request: ExportTraceServiceRequest,
}

/// One received span with what its resource and scope said.
#[derive(Debug, Clone)]
pub struct Received {
    pub resource: HashMap<String, Value>,
    pub scope: String,
    pub span: Span,
}

impl Received {
    pub fn attr(&self, key: &str) -> Option<Value> {
        attributes(&self.span.attributes).remove(key)
    }

    pub fn attrs(&self) -> HashMap<String, Value> {
        attributes(&self.span.attributes)
    }

    /// The span's trace id as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span's id as 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent's span id as hex; empty for a root span.
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

/// Lowercase hex, as trace context headers write ids.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute value, as far as the tests need to tell them apart.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Other,
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

pub fn attributes(kvs: &[KeyValue]) -> HashMap<String, Value> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => Value::Str(s.clone()),
                Some(any_value::Value::IntValue(i)) => Value::Int(*i),
                Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
                _ => Value::Other,
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// What the HTTP receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// 400: the OTLP/HTTP spec's "do not retry", so the exporter fails at once.
    Refuse,
}

/// A running receiver: where to send, and what arrived. Dropping it stops the server.
pub struct Receiver {
    pub endpoint: String,
    exports: mpsc::Receiver<Export>,
    server: JoinHandle<()>,
}

impl Receiver {
    /// OTLP/HTTP with protobuf bodies.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound; in a test that is fatal anyway.
    pub async fn http(answer: Answer) -> Receiver {
        let (tx, exports) = mpsc::channel(EXPORTS);
        let app = Router::new()
            .route("/v1/traces", post(http_export))
            .with_state((tx, answer));
        let (listener, addr) = bind().await;
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(error = %err, "OTLP/HTTP receiver stopped");
            }
        });
        Receiver {
            endpoint: format!("http://{addr}"),
            exports,
            server,
        }
    }

    /// OTLP/gRPC.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn grpc() -> Receiver {
        let (tx, exports) = mpsc::channel(EXPORTS);
        let (listener, addr) = bind().await;
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Sink(tx)))
                .serve_with_incoming(incoming)
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "OTLP/gRPC receiver stopped");
            }
        });
        Receiver {
            endpoint: format!("http://{addr}"),
            exports,
            server,
        }
    }

    /// Every export received so far, without waiting (after the tracer's `shutdown`, which
    /// waits for its exports, that is all of them).
    pub fn drain(&mut self) -> Vec<Export> {
        let mut all = Vec::new();
        while let Ok(export) = self.exports.try_recv() {
            all.push(export);
        }
        all
    }

    /// The next export; `None` if none arrives within 30 s.
    pub async fn next(&mut self) -> Option<Export> {
        tokio::time::timeout(PATIENCE, self.exports.recv())
            .await
            .ok()
            .flatten()
    }

    /// Collects spans as exports arrive until `done` says they are enough or `within` has
    /// passed, and returns them all (with those of earlier exports not yet taken). Waits on
    /// the exports themselves, so it returns as soon as the last span needed arrives.
    pub async fn spans_until(
        &mut self,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        let mut received = Vec::new();
        while !done(&received) {
            match tokio::time::timeout_at(deadline, self.exports.recv()).await {
                Ok(Some(export)) => received.extend(spans(std::slice::from_ref(&export))),
                Ok(None) | Err(_) => break,
            }
        }
        received
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Every span of `exports`, flattened, with its resource and scope.
pub fn spans(exports: &[Export]) -> Vec<Received> {
    let mut out = Vec::new();
    for export in exports {
        for resource_spans in &export.request.resource_spans {
            let resource = resource_spans
                .resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for scope_spans in &resource_spans.scope_spans {
                let scope = scope_spans
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for span in &scope_spans.spans {
                    out.push(Received {
                        resource: resource.clone(),
                        scope: scope.clone(),
                        span: span.clone(),
                    });
                }
            }
        }
    }
    out
}

async fn bind() -> (TcpListener, SocketAddr) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let bound = match TcpListener::bind(addr).await {
        Ok(listener) => listener.local_addr().map(|addr| (listener, addr)),
        Err(err) => Err(err),
    };
    match bound {
        Ok(bound) => bound,
        Err(err) => panic!("OTLP receiver cannot bind {addr}: {err}"),
    }
}

type HttpState = (mpsc::Sender<Export>, Answer);

async fn http_export(
    State((tx, answer)): State<HttpState>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    // A body the spec does not allow is refused rather than recorded, so a test waiting for
    // spans sees none and fails on what it expected.
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/x-protobuf");
    if !protobuf {
        tracing::warn!(content_type = ?headers.get(header::CONTENT_TYPE), "OTLP export refused");
        return HttpStatus::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(err) => {
            tracing::warn!(error = %err, "OTLP export is not an ExportTraceServiceRequest");
            return HttpStatus::BAD_REQUEST.into_response();
        }
    };
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    // Fails only once the test has dropped the receiver: nobody is left to tell.
    let _ = tx.send(Export { headers, request }).await;
    let status = match answer {
        Answer::Accept => HttpStatus::OK,
        Answer::Refuse => HttpStatus::BAD_REQUEST,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

struct Sink(mpsc::Sender<Export>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let export = Export {
            headers,
            request: request.into_inner(),
        };
        // As over HTTP: only a dropped receiver makes this fail.
        let _ = self.0.send(export).await;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A collector that reads each request and never answers, so the tracer's one export hangs
/// until its timeout. Dropping it closes the connections.
pub struct Silent {
    pub endpoint: String,
    arrived: mpsc::Receiver<()>,
    server: JoinHandle<()>,
}

impl Silent {
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start() -> Silent {
        let (listener, addr) = bind().await;
        let (tx, arrived) = mpsc::channel(16);
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                if socket.read(&mut buf).await.unwrap_or(0) > 0 {
                    // Full only when the test stopped looking; accepting must go on.
                    let _ = tx.try_send(());
                }
                // Kept open and unanswered.
                held.push(socket);
            }
        });
        Silent {
            endpoint: format!("http://{addr}"),
            arrived,
            server,
        }
    }

    /// Whether an export request reached the collector within 30 s.
    pub async fn request_arrived(&mut self) -> bool {
        matches!(
            tokio::time::timeout(PATIENCE, self.arrived.recv()).await,
            Ok(Some(()))
        )
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.server.abort();
    }
}
