//! A stream settles its record exactly once — at its end, at a failure, at the route's
//! deadline, or when the client drops it — on a paused clock.

use std::time::Duration;

use futures_util::StreamExt;
use sluice_providers::{CompletionStream, ProviderError, StreamChunk};
use sluice_types::record::{AttemptOutcome, AttemptRecord, ErrorCode};
use sluice_types::{ErrorKind, StreamEvent, Usage};
use tokio::time::Instant;

use super::*;
use crate::test_support::{exchange, health};
use crate::tokens::estimate_text;

fn text(t: &str) -> StreamChunk {
    StreamChunk {
        raw: bytes::Bytes::from(format!("data: {t}\n\n")),
        events: vec![StreamEvent::TextDelta {
            choice: 0,
            text: t.into(),
        }],
    }
}

fn usage(input: u32, output: u32) -> StreamChunk {
    StreamChunk {
        raw: bytes::Bytes::new(),
        events: vec![StreamEvent::Usage(Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        })],
    }
}

fn prompt() -> sluice_types::ChatRequest {
    sluice_wire::openai::decode_chat_request(
        br#"{"model":"m","messages":[{"role":"user","content":"Count to five, please."}]}"#,
    )
    .unwrap()
}

/// A guarded stream over `rest`, every `gap` one chunk, with a deadline `total` from now.
async fn guarded(
    rest: Vec<Result<StreamChunk, ProviderError>>,
    gap: Duration,
    total: Duration,
) -> (GuardedStream, crate::test_support::Records) {
    let (mut exchange, records) = exchange().await;
    // The attempt that served the stream's first event.
    exchange.attempt(AttemptRecord {
        deployment: "a".into(),
        provider: "p".into(),
        outcome: AttemptOutcome::Ok,
        ..AttemptRecord::default()
    });
    tokio::time::pause();
    let health = health("a");
    let slot = health.acquire().await.unwrap();
    let paced = futures_util::stream::iter(rest).then(move |chunk| async move {
        tokio::time::sleep(gap).await;
        chunk
    });
    let stream = GuardedStream::new(
        vec![text("first")],
        CompletionStream::new(paced),
        exchange,
        slot,
        Instant::now() + total,
        prompt(),
        crate::hooks::Watchers::default(),
    );
    (stream, records)
}

#[tokio::test]
async fn a_stream_that_ends_settles_once_with_the_reported_usage() {
    let rest = vec![Ok(text(" second")), Ok(usage(5, 2))];
    let (mut stream, records) =
        guarded(rest, Duration::from_millis(10), Duration::from_secs(5)).await;
    let mut seen = Vec::new();
    while let Some(chunk) = stream.next().await {
        seen.extend(chunk.events);
    }
    // Polling past the end changes nothing.
    assert!(stream.next().await.is_none());
    drop(stream);
    tokio::time::resume();
    let records = records.read().await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!((r.status, r.error_code), (200, None));
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Ok);
    assert_eq!((r.input_tokens, r.output_tokens), (Some(5), Some(2)));
    assert!(!r.usage_estimated);
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn a_stream_past_the_route_deadline_ends_with_a_timeout_event_and_record() {
    // Chunks every second; the route allows 2.5 s.
    let rest = (0..10).map(|_| Ok(text(" more"))).collect();
    let (mut stream, records) =
        guarded(rest, Duration::from_secs(1), Duration::from_millis(2500)).await;
    let started = Instant::now();
    let mut last = None;
    while let Some(chunk) = stream.next().await {
        last = Some(chunk);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let last = last.unwrap();
    assert!(last.raw.is_empty());
    assert!(matches!(
        last.events.as_slice(),
        [StreamEvent::Error(e)] if e.kind == ErrorKind::UpstreamTimeout
    ));
    drop(stream);
    tokio::time::resume();
    let records = records.read().await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.status, 200);
    assert_eq!(
        r.error_code,
        Some(ErrorCode::Kind(ErrorKind::UpstreamTimeout))
    );
    // No usage came: the estimate, flagged: the prompt's, and "first" + two " more" out.
    assert!(r.usage_estimated);
    assert_eq!(
        r.input_tokens,
        Some(crate::tokens::estimate_input(&prompt()))
    );
    assert_eq!(
        r.output_tokens,
        Some(estimate_text("first") + 2 * estimate_text(" more"))
    );
}

#[tokio::test]
async fn a_stream_the_client_drops_settles_once_as_client_disconnected() {
    let rest = (0..10).map(|_| Ok(text(" more"))).collect();
    let (mut stream, records) =
        guarded(rest, Duration::from_secs(1), Duration::from_secs(60)).await;
    assert!(stream.next().await.is_some());
    assert!(stream.next().await.is_some());
    drop(stream);
    tokio::time::resume();
    let records = records.read().await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.status, 499);
    assert_eq!(r.error_code, Some(ErrorCode::ClientDisconnected));
    assert_eq!(
        r.output_tokens,
        Some(estimate_text("first") + estimate_text(" more"))
    );
}

#[tokio::test]
async fn an_upstream_failure_mid_stream_ends_it_with_an_error_event_and_settles_once() {
    let rest = vec![
        Ok(text(" second")),
        Err(ProviderError::Truncated {
            provider: "p".into(),
        }),
        Ok(text(" never")),
    ];
    let (mut stream, records) =
        guarded(rest, Duration::from_millis(10), Duration::from_secs(5)).await;
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk);
    }
    assert_eq!(
        chunks.len(),
        3,
        "first, second, then the error; nothing after"
    );
    assert!(matches!(
        chunks[2].events.as_slice(),
        [StreamEvent::Error(e)] if e.kind == ErrorKind::UpstreamUnavailable
    ));
    drop(stream);
    tokio::time::resume();
    let records = records.read().await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].error_code,
        Some(ErrorCode::Kind(ErrorKind::UpstreamUnavailable))
    );
    // The record does not say `ok` and an error at once: the attempt failed too.
    assert_eq!(
        records[0].attempts[0].outcome,
        AttemptOutcome::Failed(ErrorKind::UpstreamUnavailable)
    );
}

#[tokio::test]
async fn a_stream_without_usage_ends_with_the_estimate_flagged() {
    let rest = vec![Ok(text(" second"))];
    let (mut stream, records) =
        guarded(rest, Duration::from_millis(10), Duration::from_secs(5)).await;
    let mut events = Vec::new();
    while let Some(chunk) = stream.next().await {
        events.extend(chunk.events);
    }
    let Some(StreamEvent::Usage(sent)) = events.last().cloned() else {
        panic!("no usage at the end: {events:?}");
    };
    assert!(sent.estimated);
    assert_eq!(
        sent.output_tokens,
        estimate_text("first") + estimate_text(" second")
    );
    drop(stream);
    tokio::time::resume();
    let records = records.read().await;
    // What the client was told is what the record holds.
    assert_eq!(
        (records[0].input_tokens, records[0].output_tokens),
        (Some(sent.input_tokens), Some(sent.output_tokens))
    );
    assert!(records[0].usage_estimated);
}
