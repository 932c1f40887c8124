//! OTLP receivers for the tests: a real OTLP/HTTP endpoint (`POST /v1/traces`, protobuf) and a
//! real OTLP/gRPC `TraceService`, both on `127.0.0.1:0`, handing what they receive to the test;
//! and a collector that takes the request and never answers.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

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

/// A running receiver: where to send, and what arrived.
pub struct Receiver {
    pub endpoint: String,
    exports: mpsc::Receiver<Export>,
}

/// What the HTTP receiver answers.
#[derive(Clone, Copy)]
pub enum Answer {
    Accept,
    /// 400: the OTLP/HTTP spec's "do not retry".
    Refuse,
}

/// Plenty for any test here; the receiver never holds more than a test sends.
const EXPORTS: usize = 1024;

impl Receiver {
    /// OTLP/HTTP with protobuf bodies.
    pub async fn http(answer: Answer) -> Receiver {
        let (tx, exports) = mpsc::channel(EXPORTS);
        let app = Router::new()
            .route("/v1/traces", post(http_export))
            .with_state((tx, answer));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            endpoint: format!("http://{addr}"),
            exports,
        }
    }

    /// OTLP/gRPC.
    pub async fn grpc() -> Receiver {
        let (tx, exports) = mpsc::channel(EXPORTS);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Sink(tx)))
                .serve_with_incoming(incoming)
                .await
                .unwrap()
        });
        Receiver {
            endpoint: format!("http://{addr}"),
            exports,
        }
    }

    /// Every export received so far (call after the tracer's `shutdown`, which waits for them).
    pub fn drain(&mut self) -> Vec<Export> {
        let mut all = Vec::new();
        while let Ok(export) = self.exports.try_recv() {
            all.push(export);
        }
        all
    }

    /// Waits for the next export; the timeout is only a safety net against a hung test.
    pub async fn next(&mut self) -> Export {
        tokio::time::timeout(Duration::from_secs(30), self.exports.recv())
            .await
            .expect("no export arrived")
            .expect("receiver stopped")
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

type HttpState = (mpsc::Sender<Export>, Answer);

async fn http_export(
    State((tx, answer)): State<HttpState>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> impl IntoResponse {
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/x-protobuf"
    );
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    tx.send(Export { headers, request }).await.unwrap();
    let status = match answer {
        Answer::Accept => StatusCode::OK,
        Answer::Refuse => StatusCode::BAD_REQUEST,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
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
        self.0
            .send(Export {
                headers,
                request: request.into_inner(),
            })
            .await
            .unwrap();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A collector that reads the first request and never answers, so the tracer's one export
/// hangs until its timeout.
pub struct Silent {
    pub endpoint: String,
    arrived: mpsc::Receiver<()>,
}

impl Silent {
    pub async fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, arrived) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                if socket.read(&mut buf).await.unwrap_or(0) > 0 {
                    let _ = tx.send(()).await;
                }
                // Kept open and unanswered.
                held.push(socket);
            }
        });
        Silent {
            endpoint: format!("http://{addr}"),
            arrived,
        }
    }

    /// Returns once an export request has reached the collector.
    pub async fn request_arrived(&mut self) {
        tokio::time::timeout(Duration::from_secs(30), self.arrived.recv())
            .await
            .expect("no export arrived")
            .unwrap();
    }
}
