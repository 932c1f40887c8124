//! OpenTelemetry traces of finished requests, exported over OTLP.
//!
//! A [`Tracer`] owns a bounded queue and one background task. The request path hands it each
//! finished [`RequestRecord`] ([`Tracer::export`], which never waits and never fails); the task
//! turns records into spans (`spans.rs`) and sends them in batches through the exporter built
//! in `export.rs`. A full queue sheds the record's spans and counts them ([`Tracer::shed`]);
//! [`Tracer::shutdown`] sends what is queued, within a bounded time.
//!
//! Spans are built after the fact, from the record, rather than live around the request: the
//! record already holds every id and timing (the pipeline draws the ids and sends the
//! attempts' `traceparent` upstream), so the request path does no tracing work beyond one
//! queue push. There is no global tracer provider: each gateway has its own tracer, so several
//! gateways in one process (as in tests) keep their traces apart.
//!
//! It leaves to others: drawing ids and parsing the client's `traceparent` (the pipeline),
//! choosing settings (the configuration's `[telemetry]`), and the OTLP encoding and retries
//! (`opentelemetry-otlp`). `docs/tracing.md` describes the spans for operators.

mod export;
mod spans;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::trace::{RandomIdGenerator, SpanData, SpanExporter as _};
use parking_lot::Mutex;
use secrecy::SecretString;
use sluice_types::record::RequestRecord;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TelemetryError;
use spans::Traced;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies: `POST {endpoint}/v1/traces` (the collector's port 4318).
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC: `TraceService/Export` at the endpoint (the collector's port 4317).
    Grpc,
}

impl OtlpProtocol {
    /// The name the configuration and `OTEL_EXPORTER_OTLP_PROTOCOL` use.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }

    /// `http/protobuf` or `grpc`.
    pub fn parse(name: &str) -> Option<OtlpProtocol> {
        match name {
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            "grpc" => Some(OtlpProtocol::Grpc),
            _ => None,
        }
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`Tracer`] sends where. Plain values: the CLI fills them from the configuration's
/// `[telemetry]` section.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// The collector's base URL (`http://collector:4318` for HTTP, `http://collector:4317`
    /// for gRPC). `None` turns tracing off.
    pub endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Sent with every export (e.g. an API key header); values are kept secret.
    pub headers: Vec<(String, SecretString)>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Finished requests waiting to be exported at most; past it their spans are shed.
    pub queue: usize,
    /// One export call, retries included.
    pub export_timeout: Duration,
    /// How long [`Tracer::shutdown`] may spend sending what is queued.
    pub shutdown_timeout: Duration,
}

impl Default for TraceSettings {
    fn default() -> TraceSettings {
        TraceSettings {
            endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            headers: Vec::new(),
            service_name: "sluice".into(),
            queue: 8_192,
            export_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// Requests exported in one OTLP call at most: with a few attempts each, about 2,000 spans,
/// well under the 64 MiB OTLP body limit.
const BATCH: usize = 512;

/// How long a started batch may wait for more requests: the delay before a trace shows up in
/// the collector, traded against one export call per request at low traffic.
const LINGER: Duration = Duration::from_millis(500);

/// One gateway's tracer. Cheap to clone: clones share the queue and the counters.
#[derive(Clone, Debug)]
pub struct Tracer {
    /// `None` when tracing is off: [`Tracer::export`] then does nothing at all.
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<Traced>,
    counts: Arc<Counts>,
    close: CancellationToken,
    worker: Mutex<Option<JoinHandle<()>>>,
    shutdown_timeout: Duration,
}

impl fmt::Debug for Inner {
    // The exporter (with its headers) lives in the task, so nothing secret can show here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .field("shed", &self.counts.shed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What became of finished requests' spans since the tracer started, in requests (each
/// request's spans travel together). Read separately, so at most a batch out of step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceCounts {
    /// Dropped before an export: queue full or closed, or left when shutdown timed out.
    pub shed: u64,
    /// Sent, but the collector did not accept them (after the exporter's retries).
    pub failed: u64,
    /// Accepted by the collector.
    pub exported: u64,
}

#[derive(Debug, Default)]
struct Counts {
    /// Requests whose spans were dropped before an export: queue full or closed, or still
    /// queued when shutdown ran out of time.
    shed: AtomicU64,
    /// Requests whose export the collector did not accept (after the exporter's retries).
    failed: AtomicU64,
    /// Requests whose spans the collector accepted.
    exported: AtomicU64,
    /// Requests taken off the queue whose export has not finished.
    in_flight: AtomicU64,
}

impl Tracer {
    /// A tracer that exports nothing and costs nothing per request.
    pub fn disabled() -> Tracer {
        Tracer { inner: None }
    }

    /// Starts the export task when `settings.endpoint` is set, else returns a disabled tracer.
    /// Must be called inside a Tokio runtime, which runs the task.
    ///
    /// Errors: an endpoint that is not an `http://` or `https://` URL, a header the protocol
    /// cannot carry, or an exporter or HTTP client that cannot be built. Nothing is sent
    /// until the first request ends, so an unreachable collector is not an error here.
    pub fn start(settings: TraceSettings) -> Result<Tracer, TelemetryError> {
        let Some(endpoint) = settings.endpoint.as_deref() else {
            return Ok(Tracer::disabled());
        };
        let endpoint = endpoint.trim();
        let scheme_ok = ["http://", "https://"].iter().any(|s| {
            endpoint
                .strip_prefix(s)
                .is_some_and(|rest| !rest.is_empty())
        });
        if !scheme_ok || endpoint.parse::<http::Uri>().is_err() {
            return Err(TelemetryError::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
            });
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
        let exporter = {
            // The gRPC channel is set up (lazily) on this runtime.
            let _entered = runtime.enter();
            export::exporter(&settings, endpoint)?
        };
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let counts = Arc::new(Counts::default());
        let close = CancellationToken::new();
        let worker = runtime.spawn(run(rx, exporter, close.clone(), counts.clone()));
        Ok(Tracer {
            inner: Some(Arc::new(Inner {
                tx,
                counts,
                close,
                worker: Mutex::new(Some(worker)),
                shutdown_timeout: settings.shutdown_timeout,
            })),
        })
    }

    /// Whether spans are exported at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues one finished request's spans for export, without waiting. A full queue, or one
    /// closed by [`Tracer::shutdown`], sheds them and counts one in [`Tracer::shed`]. Copies
    /// only what the spans show (never the bodies), and only when there is room.
    pub fn export(&self, record: &RequestRecord) {
        let Some(inner) = &self.inner else {
            return;
        };
        match inner.tx.try_reserve() {
            Ok(permit) => permit.send(Traced::of(record)),
            Err(err) => {
                let total = inner.counts.shed.fetch_add(1, Ordering::Relaxed) + 1;
                let reason = match err {
                    mpsc::error::TrySendError::Full(()) => "queue full",
                    mpsc::error::TrySendError::Closed(()) => "queue closed",
                };
                tracing::debug!(reason, shed_total = total, request_id = %record.id, "trace shed");
            }
        }
    }

    /// Requests whose spans were shed since start: the queue was full or closed, or they were
    /// still waiting when [`Tracer::shutdown`] ran out of time.
    pub fn shed(&self) -> u64 {
        self.count(|c| &c.shed)
    }

    /// Requests whose spans the collector did not accept (refused, unreachable or too slow,
    /// after the exporter's retries). Each failed export is also logged.
    pub fn failed(&self) -> u64 {
        self.count(|c| &c.failed)
    }

    /// Requests whose spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.count(|c| &c.exported)
    }

    /// [`Tracer::shed`], [`Tracer::failed`] and [`Tracer::exported`] at once, as `/metrics`
    /// shows them; all zero when tracing is off.
    pub fn counts(&self) -> TraceCounts {
        TraceCounts {
            shed: self.shed(),
            failed: self.failed(),
            exported: self.exported(),
        }
    }

    fn count(&self, which: impl Fn(&Counts) -> &AtomicU64) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |inner| which(&inner.counts).load(Ordering::Relaxed))
    }

    /// Stops intake and exports everything queued, giving up after the configured shutdown
    /// timeout; what is left then is counted as shed. Later calls, and calls on clones, return
    /// at once. Requests exported after this are shed.
    pub async fn shutdown(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner.close.cancel();
        let worker = inner.worker.lock().take();
        let Some(mut worker) = worker else {
            return;
        };
        if tokio::time::timeout(inner.shutdown_timeout, &mut worker)
            .await
            .is_err()
        {
            let queued = (inner.tx.max_capacity() - inner.tx.capacity()) as u64;
            let left = queued + inner.counts.in_flight.swap(0, Ordering::Relaxed);
            worker.abort();
            inner.counts.shed.fetch_add(left, Ordering::Relaxed);
            tracing::warn!(
                shed = left,
                "traces not exported: the collector did not take them before shutdown's timeout"
            );
        }
    }
}

/// The export task: batches of queued requests, as spans, one export call at a time (the
/// exporter allows no more). Ends when every sender is gone or on `close`, after draining.
async fn run(
    mut rx: mpsc::Receiver<Traced>,
    exporter: opentelemetry_otlp::SpanExporter,
    close: CancellationToken,
    counts: Arc<Counts>,
) {
    let scope = InstrumentationScope::builder("sluice")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let ids = RandomIdGenerator::default();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            () = close.cancelled() => {
                // Stop intake; whatever is queued is still received below.
                rx.close();
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    send(&exporter, &mut batch, &scope, &ids, &counts).await;
                }
                break;
            }
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                linger(&mut rx, &mut batch, &close).await;
            }
        }
        send(&exporter, &mut batch, &scope, &ids, &counts).await;
    }
}

/// Gives a started batch up to [`LINGER`] to fill, unless shutdown begins.
async fn linger(
    rx: &mut mpsc::Receiver<Traced>,
    batch: &mut Vec<Traced>,
    close: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + LINGER;
    while batch.len() < BATCH {
        let room = BATCH - batch.len();
        tokio::select! {
            () = close.cancelled() => return,
            got = tokio::time::timeout_at(deadline, rx.recv_many(batch, room)) => match got {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// Exports one batch and empties it.
async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<Traced>,
    scope: &InstrumentationScope,
    ids: &RandomIdGenerator,
    counts: &Counts,
) {
    if batch.is_empty() {
        return;
    }
    let requests = batch.len() as u64;
    counts.in_flight.store(requests, Ordering::Relaxed);
    let spans: Vec<SpanData> = batch
        .drain(..)
        .flat_map(|request| spans::spans(&request, scope, ids))
        .collect();
    let span_count = spans.len();
    let result = exporter.export(spans).await;
    counts.in_flight.store(0, Ordering::Relaxed);
    match result {
        Ok(()) => {
            counts.exported.fetch_add(requests, Ordering::Relaxed);
        }
        Err(err) => {
            let total = counts.failed.fetch_add(requests, Ordering::Relaxed) + requests;
            // Logged, not retried again: the exporter has retried, and holding on would only
            // grow the queue behind it.
            tracing::warn!(
                error = %err,
                requests,
                spans = span_count,
                failed_total = total,
                "traces could not be exported"
            );
        }
    }
}
