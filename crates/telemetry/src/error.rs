//! The crate's one error: why a [`Tracer`](crate::Tracer) could not start. Exporting never
//! fails a request; an export that fails is logged and counted (`Tracer::failed`).

use crate::OtlpProtocol;

/// Why tracing could not start. Raised at startup only, never on the request path.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the trace exporter needs a Tokio runtime to run on")]
    NoRuntime,
    #[error("OTLP endpoint `{endpoint}` is not an http:// or https:// URL")]
    InvalidEndpoint { endpoint: String },
    /// The value is never part of the message: it may be a secret.
    #[error("OTLP header `{name}`: not a valid header name, or its value cannot be sent")]
    InvalidHeader { name: String },
    #[error("cannot build the OTLP HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot build the OTLP {protocol} exporter")]
    Exporter {
        protocol: OtlpProtocol,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}
