//! Upstream SSE bodies: arbitrary bytes in arbitrary chunk splits through
//! `sluice_wire::sse::SseParser`, then the OpenAI and Anthropic `StreamDecoder`s, then both
//! `StreamEncoder`s.
//!
//! Input: one control byte, then the stream. The control byte picks the chunk sizes, the
//! OpenAI encoder's `include_usage`, and whether the Anthropic decoder expects a
//! structured-output tool. Checked beyond "no panic":
//! - parsing is independent of chunking (same events, same raw bytes, same leftover);
//! - each event's raw bytes are one complete event that parses back to itself on its own
//!   (unless they begin with a byte order mark, which only counts at the start of a stream);
//! - what the encoders write is well-formed SSE that the same dialect's decoder accepts.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_types::StreamEvent;
use sluice_wire::sse::{SseEvent, SseParser};
use sluice_wire::{WireError, anthropic, openai};

type Events = Vec<(SseEvent, Bytes)>;

/// Feeds `stream` in chunks of the given sizes (cycled). Returns the events, the error that
/// stopped parsing (if any) and the bytes left pending.
fn parse(stream: &[u8], sizes: &[usize]) -> (Events, Option<WireError>, usize) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let size = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        match parser.push(chunk) {
            Ok(found) => events.extend(found),
            Err(e) => return (events, Some(e), parser.pending()),
        }
    }
    (events, None, parser.pending())
}

fn chunk_sizes(control: u8) -> [usize; 3] {
    [
        1 + usize::from(control & 0x07),
        1 + 3 * usize::from((control >> 3) & 0x0f),
        1,
    ]
}

/// Parses an encoder's output: it must be complete, well-formed SSE.
fn reparse(out: &[u8], what: &str) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let events = parser
        .push(out)
        .unwrap_or_else(|e| panic!("{what} wrote malformed SSE ({e}): {:?}", lossy(out)));
    assert_eq!(
        parser.pending(),
        0,
        "{what} left a partial event: {:?}",
        lossy(out)
    );
    events.into_iter().map(|(ev, _)| ev).collect()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Re-encodes canonical events for both client dialects and decodes the result again.
fn reencode(events: &[StreamEvent], include_usage: bool) {
    let mut encoder = openai::StreamEncoder::new(include_usage);
    let mut out = Vec::new();
    for ev in events {
        out.extend(encoder.encode(ev));
    }
    out.extend(encoder.finish());
    let mut decoder = openai::StreamDecoder::new();
    for ev in reparse(&out, "openai::StreamEncoder") {
        if let Err(e) = decoder.decode(&ev) {
            panic!("OpenAI decoder refuses OpenAI encoder output ({e}): {ev:?}\nfrom {events:?}");
        }
    }

    let mut encoder = anthropic::StreamEncoder::new();
    let mut out = Vec::new();
    for ev in events {
        out.extend(encoder.encode(ev));
    }
    out.extend(encoder.finish());
    let mut decoder = anthropic::StreamDecoder::new(None);
    for ev in reparse(&out, "anthropic::StreamEncoder") {
        if let Err(e) = decoder.decode(&ev) {
            panic!(
                "Anthropic decoder refuses Anthropic encoder output ({e}): {ev:?}\nfrom {events:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };

    let (events, error, pending) = parse(stream, &chunk_sizes(control));
    let (whole_events, whole_error, whole_pending) = parse(stream, &[stream.len()]);
    assert_eq!(
        error.is_some(),
        whole_error.is_some(),
        "chunking changed the outcome: {error:?} vs {whole_error:?}"
    );
    if error.is_none() {
        assert_eq!(events, whole_events, "chunking changed the events");
        assert_eq!(pending, whole_pending, "chunking changed the leftover");
    }

    for (event, raw) in &events {
        if raw.starts_with(b"\xEF\xBB\xBF") {
            // A fresh parser would drop it as a byte order mark; mid-stream it is not one.
            continue;
        }
        let mut alone = SseParser::new();
        let again = alone
            .push(raw)
            .expect("an event's raw bytes parse on their own");
        assert_eq!(again.len(), 1, "raw bytes hold one event: {:?}", lossy(raw));
        assert_eq!(&again[0].0, event, "raw bytes parse to the same event");
        assert_eq!(&again[0].1, raw);
        assert_eq!(alone.pending(), 0);
    }

    let mut decoder = openai::StreamDecoder::new();
    let mut decoded = Vec::new();
    for (event, _) in &events {
        match decoder.decode(event) {
            Ok(found) => decoded.extend(found),
            Err(_) => break,
        }
    }
    reencode(&decoded, control & 0x80 != 0);

    let tool = (control & 0x40 != 0).then(|| "get_weather".to_owned());
    let mut decoder = anthropic::StreamDecoder::new(tool);
    let mut decoded = Vec::new();
    for (event, _) in &events {
        match decoder.decode(event) {
            Ok(found) => decoded.extend(found),
            Err(_) => break,
        }
    }
    reencode(&decoded, control & 0x80 != 0);
});
