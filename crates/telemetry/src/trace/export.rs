//! The OTLP exporter a tracer sends through: HTTP/protobuf (`POST {endpoint}/v1/traces`, on
//! its own reqwest client with rustls and the ring provider) or gRPC (tonic; rustls with the
//! system's roots for `https://` endpoints), with the configured headers and the resource
//! (`service.name`, `service.version`).
//!
//! Only building it lives here; `opentelemetry-otlp` encodes, sends and retries (three retries
//! within the export timeout), and the tracer's task (`mod.rs`) decides what to send and when.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanExporter as _;
use secrecy::ExposeSecret;

use super::{OtlpProtocol, TraceSettings};
use crate::TelemetryError;

/// Connecting to the collector gives up after this; the export timeout bounds the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter for `settings`, sending to `endpoint` (checked by the caller).
pub(super) fn exporter(
    settings: &TraceSettings,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let protocol = settings.protocol;
    let built = match protocol {
        OtlpProtocol::HttpProtobuf => {
            let mut headers = HashMap::with_capacity(settings.headers.len());
            for (name, value) in &settings.headers {
                // The exporter quietly drops headers it cannot send; say so instead.
                let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && http::HeaderValue::from_str(value.expose_secret()).is_ok();
                if !valid {
                    return Err(TelemetryError::InvalidHeader { name: name.clone() });
                }
                headers.insert(name.clone(), value.expose_secret().to_owned());
            }
            // Installing twice is harmless: the second call reports the first provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(settings.export_timeout)
                .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(TelemetryError::HttpClient)?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(traces_url(endpoint))
                .with_timeout(settings.export_timeout)
                .with_headers(headers)
                .build()
        }
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::with_capacity(settings.headers.len());
            for (name, value) in &settings.headers {
                let invalid = || TelemetryError::InvalidHeader { name: name.clone() };
                let key = tonic::metadata::AsciiMetadataKey::from_bytes(name.as_bytes())
                    .map_err(|_| invalid())?;
                let mut value =
                    tonic::metadata::AsciiMetadataValue::try_from(value.expose_secret())
                        .map_err(|_| invalid())?;
                // Kept out of tonic's and hyper's debug output.
                value.set_sensitive(true);
                metadata.insert(key, value);
            }
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(settings.export_timeout)
                .with_metadata(metadata);
            let builder = if endpoint.starts_with("https://") {
                // Without roots tonic trusts nothing; these are the system's.
                builder
                    .with_tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots())
            } else {
                builder
            };
            builder.build()
        }
    };
    let mut exporter = built.map_err(|source| TelemetryError::Exporter { protocol, source })?;
    exporter.set_resource(&resource(&settings.service_name));
    Ok(exporter)
}

/// The OTLP/HTTP traces URL of a collector's base URL. One already ending in `/v1/traces`
/// (as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` values do) is used as it is.
pub(super) fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// What every span says about its source.
fn resource(service_name: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", service_name.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build()
}
