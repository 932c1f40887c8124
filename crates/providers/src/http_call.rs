//! The HTTP exchange every provider shares: send with timeouts, classify error statuses, read
//! bounded bodies, and turn an SSE body into a [`CompletionStream`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use futures_util::StreamExt;
use sluice_types::StreamEvent;
use sluice_wire::WireError;
use sluice_wire::sse::{SseEvent, SseParser};

use crate::clients::StreamSlot;
use crate::error::{RejectCause, kind_for_status, quota_exhausted, retry_after};
use crate::{CompletionStream, Deployment, ProviderError, StreamChunk, TimeoutPhase, Upstream};

/// Largest non-streamed upstream body accepted (a 64 MiB answer is far beyond any model's
/// output; it guards the gateway's memory against a broken upstream).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Reads the message out of a provider's error body.
pub(crate) type ErrorDecoder = fn(&[u8]) -> Option<sluice_wire::UpstreamError>;

/// Sends a request and waits for the response headers. Error statuses become
/// [`ProviderError::Status`] with the provider's message.
pub(crate) async fn send(
    upstream: &Upstream,
    deployment: &Deployment,
    request: reqwest::RequestBuilder,
    decode_error: ErrorDecoder,
) -> Result<reqwest::Response, ProviderError> {
    let provider = || deployment.provider.clone();
    let request = match &upstream.traceparent {
        Some(traceparent) => request.header("traceparent", traceparent.clone()),
        None => request,
    };
    let response = tokio::time::timeout(upstream.timeouts.first_token, request.send())
        .await
        .map_err(|_| ProviderError::Timeout {
            provider: provider(),
            phase: TimeoutPhase::FirstToken,
        })?
        .map_err(|source| {
            if source.is_timeout() {
                ProviderError::Timeout {
                    provider: provider(),
                    phase: TimeoutPhase::FirstToken,
                }
            } else {
                ProviderError::Connect {
                    provider: provider(),
                    source,
                }
            }
        })?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let quota_exhausted = quota_exhausted(status, response.headers());
    // The error body is read only to find its message; a broken one still yields the status.
    let body = read_body(upstream, deployment, response)
        .await
        .unwrap_or_default();
    let decoded = decode_error(&body);
    let cause = decoded.as_ref().and_then(RejectCause::of);
    // What the provider echoed back may hold a key, a URL with credentials, a database URL:
    // scrubbed here, before the message reaches a client, a record or a log line.
    let message = decoded
        .map(|e| sluice_dlp::secrets::redact(&e.message).into_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("the provider rejected the request with status {status}"));
    Err(ProviderError::Status {
        provider: provider(),
        status,
        kind: kind_for_status(status),
        message,
        retry_after,
        cause,
        quota_exhausted,
    })
}

/// An upstream error event inside a stream: its message is scrubbed of secrets, and so are its
/// raw bytes, which a client of the same dialect receives as they are (the detectors never
/// match across a JSON string's quotes or escapes, so the event stays valid JSON). Other
/// events pass untouched.
fn scrub_errors(events: &mut [StreamEvent], raw: Bytes) -> Bytes {
    let mut had_error = false;
    for event in events.iter_mut() {
        if let StreamEvent::Error(error) = event {
            had_error = true;
            if let std::borrow::Cow::Owned(clean) = sluice_dlp::secrets::redact(&error.message) {
                error.message = clean;
            }
        }
    }
    if !had_error {
        return raw;
    }
    match std::str::from_utf8(&raw) {
        Ok(text) => match sluice_dlp::secrets::redact(text) {
            std::borrow::Cow::Borrowed(_) => raw,
            std::borrow::Cow::Owned(clean) => Bytes::from(clean),
        },
        // Not text: the encoder re-renders the scrubbed event instead.
        Err(_) => Bytes::new(),
    }
}

/// Reads a whole body, bounded in size and by the total timeout.
pub(crate) async fn read_body(
    upstream: &Upstream,
    deployment: &Deployment,
    response: reqwest::Response,
) -> Result<Bytes, ProviderError> {
    let provider = || deployment.provider.clone();
    let read = async {
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            // The connection broke mid-body: the answer is incomplete, not malformed.
            let chunk = chunk.map_err(|e| {
                tracing::debug!(error = %e, "upstream body broke");
                ProviderError::Truncated {
                    provider: provider(),
                }
            })?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ProviderError::Malformed {
                    provider: provider(),
                    detail: format!("body larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    };
    tokio::time::timeout(upstream.timeouts.total, read)
        .await
        .map_err(|_| ProviderError::Timeout {
            provider: provider(),
            phase: TimeoutPhase::Total,
        })?
}

/// The idle timeout between an upstream stream's reads, as one timer for the whole stream: a
/// read pushes the deadline forward without touching the timer, which is reset only when it
/// fires early. (A timeout per read would register and remove a timer for every event.)
struct IdleTimer {
    idle: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    deadline: tokio::time::Instant,
}

impl IdleTimer {
    fn new(idle: std::time::Duration) -> IdleTimer {
        let deadline = tokio::time::Instant::now() + idle;
        IdleTimer {
            idle,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
        }
    }

    /// `read`'s output, or `None` when nothing came for the idle timeout.
    async fn within<F: Future>(&mut self, read: F) -> Option<F::Output> {
        let mut read = std::pin::pin!(read);
        let output = std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = read.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            while self.timer.as_mut().poll(cx).is_ready() {
                if tokio::time::Instant::now() >= self.deadline {
                    return Poll::Ready(None);
                }
                // Reads since the timer was set moved the deadline: wait for the rest.
                let deadline = self.deadline;
                self.timer.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await;
        if output.is_some() {
            self.deadline = tokio::time::Instant::now() + self.idle;
        }
        output
    }
}

/// A dialect's stream decoder, as the shared SSE loop drives it.
pub(crate) trait EventDecoder: Send + 'static {
    fn decode(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, WireError>;
    /// The dialect's terminal event was seen.
    fn is_done(&self) -> bool;
}

/// Turns an SSE response into canonical chunks, one per upstream event, forwarding each as it
/// arrives. Ends with an error on idle timeout, malformed events, or a stream that stops
/// before its terminal event.
pub(crate) fn sse_stream(
    upstream: &Upstream,
    deployment: &Deployment,
    response: reqwest::Response,
    slot: StreamSlot,
    decoder: impl EventDecoder,
) -> CompletionStream {
    struct State<D> {
        body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        /// Held while the body is read: the stream counts on its connection until it ends.
        _slot: StreamSlot,
        parser: SseParser,
        decoder: D,
        ready: VecDeque<StreamChunk>,
        /// Delivered after the chunks already decoded, then the stream ends.
        failure: Option<ProviderError>,
        ended: bool,
        provider: String,
        idle: IdleTimer,
    }
    let state = State {
        body: response.bytes_stream().boxed(),
        _slot: slot,
        parser: SseParser::default(),
        decoder,
        ready: VecDeque::new(),
        failure: None,
        ended: false,
        provider: deployment.provider.clone(),
        idle: IdleTimer::new(upstream.timeouts.idle),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(chunk) = st.ready.pop_front() {
                return Some((Ok(chunk), st));
            }
            if let Some(err) = st.failure.take() {
                st.ended = true;
                return Some((Err(err), st));
            }
            if st.ended {
                return None;
            }
            let provider = || st.provider.clone();
            match st.idle.within(st.body.next()).await {
                None => {
                    st.failure = Some(ProviderError::Timeout {
                        provider: provider(),
                        phase: TimeoutPhase::Idle,
                    })
                }
                Some(Some(Ok(bytes))) => match st.parser.push(&bytes) {
                    Err(e) => {
                        st.failure = Some(ProviderError::Malformed {
                            provider: provider(),
                            detail: e.to_string(),
                        })
                    }
                    Ok(events) => {
                        for (event, raw) in events {
                            match st.decoder.decode(&event) {
                                Ok(mut decoded) => {
                                    let raw = scrub_errors(&mut decoded, raw);
                                    st.ready.push_back(StreamChunk {
                                        raw,
                                        events: decoded,
                                    })
                                }
                                Err(e) => {
                                    // A decoding error may quote what the upstream sent.
                                    let detail =
                                        sluice_dlp::secrets::redact(&e.to_string()).into_owned();
                                    st.failure = Some(ProviderError::Malformed {
                                        provider: provider(),
                                        detail,
                                    });
                                    break;
                                }
                            }
                        }
                    }
                },
                // A transport error after the terminal event loses nothing.
                Some(Some(Err(_))) if st.decoder.is_done() => st.ended = true,
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, provider = %st.provider, "upstream stream broke");
                    st.failure = Some(ProviderError::Truncated {
                        provider: provider(),
                    });
                }
                Some(None) if st.decoder.is_done() && st.parser.pending() == 0 => st.ended = true,
                Some(None) => {
                    st.failure = Some(ProviderError::Truncated {
                        provider: provider(),
                    })
                }
            }
        }
    });
    CompletionStream::new(stream)
}
