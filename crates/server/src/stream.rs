//! Streaming answers as Server-Sent Events, one upstream event at a time, never buffered.
//!
//! When the pipeline allows it (the provider speaks the client's dialect and no hook of the
//! route reads the answer) events pass through byte for byte (`raw`); otherwise each canonical
//! event is re-encoded. A chunk without raw bytes (one a hook changed) is always re-encoded. A failure after the first byte ends
//! the stream with the dialect's error event and no terminal success event.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use sluice_pipeline::{GuardedStream, Provenance};
use sluice_types::{Dialect, StreamEvent};

use crate::provenance;

/// Re-encodes canonical events into the client's dialect.
enum Encoder {
    OpenAi(sluice_wire::openai::StreamEncoder),
    Anthropic(sluice_wire::anthropic::StreamEncoder),
}

impl Encoder {
    fn new(dialect: Dialect, include_usage: bool) -> Self {
        match dialect {
            Dialect::OpenAi => {
                Encoder::OpenAi(sluice_wire::openai::StreamEncoder::new(include_usage))
            }
            Dialect::Anthropic => Encoder::Anthropic(sluice_wire::anthropic::StreamEncoder::new()),
        }
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAi(e) => out.extend_from_slice(&e.encode(event)),
            Encoder::Anthropic(e) => out.extend_from_slice(&e.encode(event)),
        }
    }

    fn finish(&mut self) -> Vec<u8> {
        match self {
            Encoder::OpenAi(e) => e.finish(),
            Encoder::Anthropic(e) => e.finish(),
        }
    }
}

struct Translation {
    stream: Box<GuardedStream>,
    encoder: Encoder,
    /// Pass upstream bytes through instead of re-encoding.
    passthrough: bool,
    /// The client did not ask for usage; the gateway asked the upstream anyway, so a chunk that
    /// carries nothing but usage is held back from it.
    hide_usage_chunks: bool,
    /// A passed-through stream's terminal event (OpenAI `data: [DONE]`, Anthropic
    /// `message_stop`), held back until the upstream stream has ended and the record is
    /// settled: a client that hangs up as soon as it reads it (the OpenAI SDK does) then leaves
    /// a success, not a disconnect. For OpenAI, usage the gateway estimated (the upstream sent
    /// none) also goes before it.
    held_end: Option<Bytes>,
    failed: bool,
    finished: bool,
}

/// Whether a passed-through event ends its stream: OpenAI `data: [DONE]`, Anthropic
/// `message_stop`.
fn is_terminal(raw: &[u8]) -> bool {
    raw.trim_ascii() == b"data: [DONE]" || raw.starts_with(b"event: message_stop")
}

pub(crate) fn respond(
    stream: Box<GuardedStream>,
    provenance: &Provenance,
    dialect: Dialect,
    include_usage: bool,
) -> Response {
    let passthrough = provenance.passthrough;
    let state = Translation {
        stream,
        encoder: Encoder::new(dialect, include_usage),
        passthrough,
        hide_usage_chunks: passthrough && dialect == Dialect::OpenAi && !include_usage,
        held_end: None,
        failed: false,
        finished: false,
    };
    let body = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.finished {
                return None;
            }
            let Some(chunk) = st.stream.next().await else {
                st.finished = true;
                // A translated stream gets its dialect's closing events; a passed-through one
                // carried them, but for its terminal event, held back until now (`held_end`).
                if st.failed {
                    return None;
                }
                if st.passthrough {
                    let end = match (&mut st.encoder, st.held_end.take()) {
                        (_, None) => return None,
                        (Encoder::OpenAi(encoder), Some(_)) => Bytes::from(encoder.finish()),
                        (Encoder::Anthropic(_), Some(raw)) => raw,
                    };
                    return Some((Ok(end), st));
                }
                let tail = st.encoder.finish();
                return (!tail.is_empty())
                    .then(|| (Ok::<Bytes, std::convert::Infallible>(Bytes::from(tail)), st));
            };
            let is_error = chunk
                .events
                .iter()
                .any(|e| matches!(e, StreamEvent::Error(_)));
            st.failed |= is_error;
            let bytes = if st.passthrough && !chunk.raw.is_empty() {
                let usage_only = matches!(chunk.events.as_slice(), [StreamEvent::Usage(_)]);
                if st.hide_usage_chunks && usage_only {
                    continue;
                }
                if is_terminal(&chunk.raw) {
                    st.held_end = Some(chunk.raw);
                    continue;
                }
                if let Encoder::OpenAi(encoder) = &mut st.encoder {
                    // The encoder learns the stream's id and model, for a usage chunk of its own.
                    for event in &chunk.events {
                        if matches!(event, StreamEvent::Start { .. }) {
                            encoder.encode(event);
                        }
                    }
                }
                chunk.raw
            } else {
                let mut out = Vec::new();
                for event in &chunk.events {
                    st.encoder.encode(event, &mut out);
                }
                Bytes::from(out)
            };
            if bytes.is_empty() {
                continue;
            }
            return Some((Ok(bytes), st));
        }
    });
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells reverse proxies in front of the gateway not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    provenance::insert_all(headers, provenance);
    response
}
