//! An incremental Server-Sent-Events parser for upstream streams, and the writer the stream
//! encoders share.
//!
//! [`SseParser`] accepts bytes in any chunking and returns each complete event together with
//! its exact raw bytes, so a same-dialect passthrough can forward upstream bytes unchanged while
//! still inspecting them (usage, errors). Framing follows the WHATWG `text/event-stream` rules
//! with these limits, chosen for LLM upstreams:
//!
//! - lines end in `\n` or `\r\n`; a lone `\r` is not treated as a line break;
//! - only `event` and `data` fields are kept (`id` and `retry` are ignored), comment lines
//!   (`:` keep-alives) are skipped, and a block without a `data` line yields no event;
//! - an event that is not UTF-8, or grows past [`MAX_EVENT_BYTES`], is
//!   [`WireError::MalformedStream`];
//! - a leading UTF-8 byte order mark is dropped.
//!
//! Decoding event payloads into canonical stream events is each dialect's `StreamDecoder`.

use bytes::{Bytes, BytesMut};

use crate::WireError;

/// Largest single event accepted: far above any real chunk (tool arguments arrive in small
/// fragments), low enough that a stream without blank lines cannot exhaust memory.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` when absent or empty.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental parser. Feed it with [`SseParser::push`]; it keeps a partial event between calls.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Unconsumed bytes, starting at the first byte of the event in progress.
    buf: BytesMut,
    /// Start of the first line in `buf` not yet known to be complete.
    line_start: usize,
    /// Where the search for the next `\n` resumes (avoids rescanning a long partial line).
    search_from: usize,
    bom_checked: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes as they arrive (any chunking; events may span chunks; `\n` or `\r\n` line
    /// endings). Returns the complete events found so far, each with the exact raw bytes of that
    /// event including its terminating blank line.
    ///
    /// Errors: an event that is not UTF-8 or exceeds [`MAX_EVENT_BYTES`]. After an error the
    /// stream should be abandoned.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<(SseEvent, Bytes)>, WireError> {
        self.buf.extend_from_slice(chunk);
        if !self.bom_checked {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(Vec::new());
            }
            self.bom_checked = true;
            if self.buf.starts_with(BOM) {
                let _ = self.buf.split_to(BOM.len());
            }
        }

        let mut out = Vec::new();
        while let Some(rel) = self.buf.get(self.search_from..).and_then(find_lf) {
            let lf = self.search_from + rel;
            let line = self.buf.get(self.line_start..lf).unwrap_or_default();
            let blank = line.is_empty() || line == b"\r";
            self.line_start = lf + 1;
            self.search_from = lf + 1;
            if blank {
                let raw = self.buf.split_to(lf + 1).freeze();
                self.line_start = 0;
                self.search_from = 0;
                if raw.len() > MAX_EVENT_BYTES {
                    return Err(too_large());
                }
                if let Some(event) = parse_event(&raw)? {
                    out.push((event, raw));
                }
            }
        }
        self.search_from = self.buf.len();
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(too_large());
        }
        Ok(out)
    }

    /// Bytes still buffered (a partial event). Non-empty at the end of a stream means the
    /// stream was truncated.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn find_lf(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

fn too_large() -> WireError {
    WireError::MalformedStream {
        reason: "event larger than 16 MiB",
    }
}

/// Interprets one raw block (lines up to and including the blank line).
fn parse_event(raw: &[u8]) -> Result<Option<SseEvent>, WireError> {
    let text = std::str::from_utf8(raw).map_err(|_| WireError::MalformedStream {
        reason: "event is not valid UTF-8",
    })?;
    let mut event = None;
    let mut data: Option<String> = None;
    let mut rest = text;
    while !rest.is_empty() {
        // `\n` and `:` are ASCII, so every split below falls on a character boundary.
        let (line, next) = match find_lf(rest.as_bytes()).and_then(|lf| rest.split_at_checked(lf)) {
            Some((line, lf_and_next)) => (line, lf_and_next.get(1..).unwrap_or_default()),
            None => (rest, ""),
        };
        rest = next;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (name, value) = match memchr::memchr(b':', line.as_bytes())
            .and_then(|colon| line.split_at_checked(colon))
        {
            Some((name, colon_and_value)) => {
                let value = colon_and_value.get(1..).unwrap_or_default();
                (name, value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match name {
            "event" => event = (!value.is_empty()).then(|| value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    Ok(data.map(|data| SseEvent { event, data }))
}

/// Appends one SSE event: `event: NAME\n` (when named), `data: DATA\n`, blank line.
/// `data` must not contain newlines (compact JSON never does).
pub(crate) fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_events(p: &mut SseParser, input: &[u8], chunk: usize) -> Vec<(SseEvent, Bytes)> {
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            out.extend(p.push(c).unwrap());
        }
        out
    }

    const STREAM: &[u8] = b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\n\
data: line1\r\ndata: line2\r\n\r\nid: 7\nretry: 10\ndata:no-space\n\n";

    #[test]
    fn parses_events_in_any_chunking() {
        for chunk in [1, 2, 3, 7, STREAM.len()] {
            let mut p = SseParser::default();
            let events = all_events(&mut p, STREAM, chunk);
            let got: Vec<_> = events.iter().map(|(e, _)| e.clone()).collect();
            assert_eq!(
                got,
                vec![
                    SseEvent {
                        event: Some("message_start".into()),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        event: None,
                        data: "line1\nline2".into()
                    },
                    SseEvent {
                        event: None,
                        data: "no-space".into()
                    },
                ],
                "chunk size {chunk}"
            );
            assert_eq!(p.pending(), 0);
        }
    }

    #[test]
    fn raw_bytes_cover_each_event_exactly() {
        let mut p = SseParser::default();
        let events = all_events(&mut p, STREAM, 1);
        assert_eq!(
            &events[0].1[..],
            b"event: message_start\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(&events[1].1[..], b"data: line1\r\ndata: line2\r\n\r\n");
        assert_eq!(&events[2].1[..], b"id: 7\nretry: 10\ndata:no-space\n\n");
    }

    #[test]
    fn partial_event_stays_pending() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"partial\"").unwrap().is_empty());
        assert_eq!(p.pending(), 16);
        let events = p.push(b"}\n\n").unwrap();
        assert_eq!(events[0].0.data, "{\"partial\"}");
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn empty_data_line_still_dispatches() {
        let mut p = SseParser::default();
        let events = p.push(b"data:\n\n").unwrap();
        assert_eq!(
            events[0].0,
            SseEvent {
                event: None,
                data: String::new()
            }
        );
    }

    #[test]
    fn bom_is_dropped_even_when_split() {
        let mut p = SseParser::default();
        assert!(p.push(b"\xEF").unwrap().is_empty());
        assert!(p.push(b"\xBB").unwrap().is_empty());
        let events = p.push(b"\xBFdata: x\n\n").unwrap();
        assert_eq!(events[0].0.data, "x");
        assert_eq!(&events[0].1[..], b"data: x\n\n");
    }

    #[test]
    fn invalid_utf8_is_malformed_stream() {
        let mut p = SseParser::default();
        let err = p.push(b"data: \xff\xfe\n\n").unwrap_err();
        assert!(matches!(err, WireError::MalformedStream { .. }));
    }

    #[test]
    fn oversized_event_is_rejected() {
        let mut p = SseParser::default();
        let big = vec![b'a'; 1024 * 1024];
        assert!(p.push(b"data: ").is_ok());
        let mut failed = false;
        for _ in 0..17 {
            if p.push(&big).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn writer_produces_parseable_events() {
        let mut out = Vec::new();
        write_event(&mut out, Some("ping"), b"{\"type\":\"ping\"}");
        write_event(&mut out, None, b"[DONE]");
        let mut p = SseParser::default();
        let events = p.push(&out).unwrap();
        assert_eq!(events[0].0.event.as_deref(), Some("ping"));
        assert_eq!(events[1].0.data, "[DONE]");
    }
}
