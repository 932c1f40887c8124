//! Upstream adapters. [`Upstream`] owns the HTTP clients (rustls, timeouts, a set per worker)
//! and sends canonical requests to a [`Deployment`]; each provider module knows its URL paths,
//! credentials, encoding and error shapes:
//!
//! - [`openai`]: OpenAI and any OpenAI-compatible server (vLLM, Ollama, Groq, ...).
//! - [`anthropic`]: the Anthropic Messages API.
//!
//! Responses come back both decoded (canonical, for records and translation) and raw (the
//! exact upstream bytes, so a client of the same dialect gets them unchanged). Providers never
//! see the store or HTTP types of the ingress side.

use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use secrecy::SecretString;
use sluice_types::{ChatRequest, ChatResponse, Dialect, EmbeddingsRequest, StreamEvent, Usage};

pub mod anthropic;
mod clients;
mod error;
mod http_call;
pub mod openai;
pub mod structured;

pub use clients::{HttpVersion, use_worker_pool};
pub use error::{ProviderError, RejectCause, TimeoutPhase};
pub use structured::StructuredSupport;

use clients::{Clients, Lease};

/// The kinds of upstream. Names match the config `type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    /// A server speaking the OpenAI dialect with its own quirks.
    OpenAiCompatible,
    Anthropic,
}

impl ProviderKind {
    pub fn dialect(self) -> Dialect {
        match self {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => Dialect::OpenAi,
            ProviderKind::Anthropic => Dialect::Anthropic,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::OpenAiCompatible => "openai_compatible",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

/// A provider + exact model + credentials.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub name: String,
    /// The provider's name in the configuration.
    pub provider: String,
    pub kind: ProviderKind,
    /// Base URL including the version prefix (`https://api.openai.com/v1`).
    pub base_url: BaseUrl,
    pub model: String,
    pub api_key: Option<SecretString>,
    /// `max_tokens` for providers that require one when the client sent none.
    pub default_max_tokens: u32,
    /// What the provider supports of structured output (`[providers.X] structured_output`).
    pub structured_output: StructuredSupport,
    /// How its connections speak HTTP (`[providers.X] http_version`).
    pub http_version: HttpVersion,
}

/// A provider's base URL, parsed once. Each endpoint's URL is joined to it once too, on its
/// first call, and copied from then on: appending path segments percent-encodes them (~1,700
/// instructions), which every request would otherwise pay.
#[derive(Debug, Clone)]
pub struct BaseUrl {
    url: reqwest::Url,
    /// `scheme://host:port`: what requests that may share a connection are counted by.
    origin: Arc<str>,
    /// The endpoints joined so far (a deployment calls one or two), shared by clones.
    joined: Arc<RwLock<Vec<(&'static str, reqwest::Url)>>>,
}

impl Deployment {
    /// Whether `other` calls the same upstream the same way: same name, provider, dialect,
    /// base URL, model, key and request defaults. A configuration reload keeps what the
    /// gateway learned about a deployment (its health) only when this holds.
    pub fn same_upstream(&self, other: &Deployment) -> bool {
        use secrecy::ExposeSecret;
        let same_key = match (&self.api_key, &other.api_key) {
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            (None, None) => true,
            _ => false,
        };
        self.name == other.name
            && self.provider == other.provider
            && self.kind == other.kind
            && self.base_url.url == other.base_url.url
            && self.model == other.model
            && self.default_max_tokens == other.default_max_tokens
            && self.structured_output == other.structured_output
            && self.http_version == other.http_version
            && same_key
    }
}

impl BaseUrl {
    /// The URL of an endpoint under the base: `/v1` + `/chat/completions`.
    pub(crate) fn join(&self, path: &'static str) -> reqwest::Url {
        let known = self
            .joined
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(joined, _)| *joined == path)
            .map(|(_, url)| url.clone());
        if let Some(url) = known {
            return url;
        }
        let mut url = self.url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(path.split('/').filter(|s| !s.is_empty()));
        }
        let mut joined = self.joined.write().unwrap_or_else(PoisonError::into_inner);
        if !joined.iter().any(|(joined, _)| *joined == path) {
            joined.push((path, url.clone()));
        }
        url
    }
}

impl std::str::FromStr for BaseUrl {
    type Err = String;

    /// An `http` or `https` URL with a host.
    fn from_str(text: &str) -> Result<BaseUrl, String> {
        let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(format!("`{text}` must be an http:// or https:// URL"));
        }
        Ok(BaseUrl {
            origin: Arc::from(url.origin().ascii_serialization()),
            url,
            joined: Arc::default(),
        })
    }
}

/// Timeouts applied to an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect; fixed per HTTP client (see [`Upstream::with_connect_timeout`]).
    pub connect: Duration,
    /// Until the response headers arrive (the first event is awaited by the caller).
    pub first_token: Duration,
    /// Longest silence between two stream events.
    pub idle: Duration,
    /// Reading a whole non-streamed body.
    pub total: Duration,
}

/// A complete upstream answer.
#[derive(Debug, Clone)]
pub struct Completion {
    pub response: ChatResponse,
    /// The upstream body, byte for byte.
    pub raw: Bytes,
}

/// One upstream SSE event: its exact bytes and what it means.
#[derive(Debug, Clone)]
pub struct StreamChunk {
    pub raw: Bytes,
    pub events: Vec<StreamEvent>,
}

/// A streamed upstream answer. Ends with `Err` when the upstream fails, goes quiet past the
/// idle timeout, or stops before its terminal event; dropping it closes the upstream connection.
pub struct CompletionStream {
    inner: Pin<Box<dyn Stream<Item = Result<StreamChunk, ProviderError>> + Send>>,
}

impl CompletionStream {
    /// A stream of chunks from anywhere (an adapter's SSE decoder; a test's script).
    pub fn new(
        inner: impl Stream<Item = Result<StreamChunk, ProviderError>> + Send + 'static,
    ) -> Self {
        CompletionStream {
            inner: Box::pin(inner),
        }
    }
}

impl Stream for CompletionStream {
    type Item = Result<StreamChunk, ProviderError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for CompletionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompletionStream")
    }
}

/// What a chat call returns: whole, or as a stream (when the request asked to stream).
#[derive(Debug)]
pub enum Reply {
    Complete(Completion),
    Stream(CompletionStream),
}

/// An embeddings answer: raw OpenAI-shaped body plus the usage read from it.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub raw: Bytes,
    pub model: Option<String>,
    pub usage: Option<Usage>,
}

/// The upstream HTTP clients. Cheap to clone: clones share their clients and connections.
///
/// Each worker thread calls through clients of its own (see [`use_worker_pool`] and the
/// `clients` module), and HTTP/2 streams to one origin are spread over as many connections as
/// [`Upstream::with_streams_per_connection`] needs.
#[derive(Clone, Debug)]
pub struct Upstream {
    clients: Arc<Clients>,
    timeouts: Timeouts,
    /// Requests in flight at most on one HTTP/2 connection before another is opened.
    streams_per_connection: usize,
    /// W3C `traceparent` sent with each request, when the caller traces.
    traceparent: Option<http::HeaderValue>,
}

/// Requests on one HTTP/2 connection at most, by default: RFC 9113 advises servers to allow at
/// least 100 concurrent streams, and many allow little more (nginx 128, Go 250).
pub const DEFAULT_STREAMS_PER_CONNECTION: usize = 100;

impl Upstream {
    /// Builds the client (its first pool now, the workers' on their first call).
    pub fn new(timeouts: Timeouts) -> Result<Upstream, reqwest::Error> {
        // Installing twice is harmless: the second call reports the first provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Upstream {
            clients: Arc::new(Clients::new(timeouts.connect)?),
            timeouts,
            streams_per_connection: DEFAULT_STREAMS_PER_CONNECTION,
            traceparent: None,
        })
    }

    /// The same clients, opening another HTTP/2 connection to an origin once `streams`
    /// requests are in flight on each of the calling thread's (`[upstream]
    /// http2_streams_per_connection`; at least 1).
    pub fn with_streams_per_connection(mut self, streams: usize) -> Upstream {
        self.streams_per_connection = streams.max(1);
        self
    }

    /// The client to send a request to `deployment` with, and the request's place on it.
    pub(crate) fn lease(&self, deployment: &Deployment) -> Result<Lease, ProviderError> {
        let url = &deployment.base_url;
        self.clients
            .lease(
                deployment.http_version,
                url.url.scheme(),
                &url.origin,
                self.streams_per_connection,
            )
            .map_err(|source| ProviderError::Connect {
                provider: deployment.provider.clone(),
                source,
            })
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The same client and pool with other first-token, idle and total timeouts (cheap: the
    /// client is shared). The connect timeout stays the client's.
    pub fn with_timeouts(&self, timeouts: Timeouts) -> Upstream {
        Upstream {
            clients: self.clients.clone(),
            timeouts: Timeouts {
                connect: self.timeouts.connect,
                ..timeouts
            },
            streams_per_connection: self.streams_per_connection,
            traceparent: self.traceparent.clone(),
        }
    }

    /// The same client, sending `traceparent` (W3C trace context) with every request, so the
    /// provider's own traces hang under the gateway's attempt span. An invalid value is left
    /// out.
    pub fn with_traceparent(mut self, traceparent: &str) -> Upstream {
        self.traceparent = http::HeaderValue::from_str(traceparent).ok();
        self
    }

    /// A client of its own with another connect timeout: reqwest fixes it per client, so a
    /// route with its own connect timeout gets its own pool, built once at start.
    pub fn with_connect_timeout(&self, connect: Duration) -> Result<Upstream, reqwest::Error> {
        Ok(Upstream::new(Timeouts {
            connect,
            ..self.timeouts
        })?
        .with_streams_per_connection(self.streams_per_connection))
    }

    /// Sends a chat request to a deployment. Streams when `req.stream` is set. Structured
    /// output goes as the deployment's provider can take it ([`structured::adapt`]).
    pub async fn chat(
        &self,
        deployment: &Deployment,
        req: &ChatRequest,
    ) -> Result<Reply, ProviderError> {
        let adapted = structured::adapt(req, deployment);
        let req = adapted.as_ref();
        match deployment.kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                openai::chat(self, deployment, req).await
            }
            ProviderKind::Anthropic => anthropic::chat(self, deployment, req).await,
        }
    }

    /// Sends an embeddings request (OpenAI dialect providers only).
    pub async fn embeddings(
        &self,
        deployment: &Deployment,
        req: &EmbeddingsRequest,
    ) -> Result<Embeddings, ProviderError> {
        match deployment.kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                openai::embeddings(self, deployment, req).await
            }
            ProviderKind::Anthropic => Err(ProviderError::EndpointUnsupported {
                provider: deployment.provider.clone(),
                kind: deployment.kind.as_str(),
                endpoint: "embeddings",
            }),
        }
    }

    /// Counts the input tokens of a request with the provider's own counter, where it has one.
    /// Returns `None` when the provider offers no counting endpoint.
    pub async fn count_tokens(
        &self,
        deployment: &Deployment,
        req: &ChatRequest,
    ) -> Result<Option<u32>, ProviderError> {
        match deployment.kind {
            ProviderKind::Anthropic => anthropic::count_tokens(self, deployment, req)
                .await
                .map(Some),
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BaseUrl;

    #[test]
    fn endpoints_are_appended_to_the_base_path() {
        for base in ["http://h:8/v1", "http://h:8/v1/"] {
            let base: BaseUrl = base.parse().unwrap();
            assert_eq!(
                base.join("/chat/completions").as_str(),
                "http://h:8/v1/chat/completions"
            );
        }
        let base: BaseUrl = "http://h:8/v1".parse().unwrap();
        let copy = base.clone();
        for _ in 0..2 {
            assert_eq!(
                copy.join("/chat/completions").as_str(),
                "http://h:8/v1/chat/completions"
            );
            assert_eq!(
                base.join("/embeddings").as_str(),
                "http://h:8/v1/embeddings"
            );
        }
        let root: BaseUrl = "https://api.example.com".parse().unwrap();
        assert_eq!(
            root.join("/messages/count_tokens").as_str(),
            "https://api.example.com/messages/count_tokens"
        );
    }

    #[test]
    fn a_base_url_must_be_http() {
        for bad in ["ftp://h/v1", "mailto:a@b", "http//h", ""] {
            assert!(bad.parse::<BaseUrl>().is_err(), "{bad}");
        }
    }
}
