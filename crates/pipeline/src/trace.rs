//! W3C trace context (`traceparent`): the client's trace continues through the gateway's
//! request span into each attempt's span, which is what the provider is told is its parent.
//! The ids land in the request record; spans are built from it after the fact
//! (`sluice-telemetry`).

use rand::Rng;

/// The trace a request belongs to: the client's (from `traceparent`) or a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The client's span this request continues (16 hex), when it sent one.
    pub parent_span_id: Option<String>,
}

impl TraceContext {
    /// Reads a `traceparent` header (`00-<trace id>-<parent id>-<flags>`); a missing or
    /// malformed one starts a new trace, as the W3C recommendation says.
    pub fn from_traceparent(header: Option<&str>) -> TraceContext {
        header.and_then(parse).unwrap_or_else(|| TraceContext {
            trace_id: random_hex::<16>(),
            parent_span_id: None,
        })
    }
}

fn parse(header: &str) -> Option<TraceContext> {
    let mut parts = header.trim().split('-');
    let (version, trace_id, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    // Version ff is invalid; later versions may append fields, which are ignored.
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace_id, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(TraceContext {
        trace_id: trace_id.to_owned(),
        parent_span_id: Some(parent.to_owned()),
    })
}

/// A new span id (16 hex digits, never all zero).
pub fn new_span_id() -> String {
    random_hex::<8>()
}

/// The `traceparent` sent upstream: this trace, the attempt's span as the parent, sampled.
pub fn traceparent(trace_id: &str, span_id: &str) -> String {
    // Built by hand: `format!` costs several times as much, once per attempt.
    let mut header = String::with_capacity(trace_id.len() + span_id.len() + 7);
    header.push_str("00-");
    header.push_str(trace_id);
    header.push('-');
    header.push_str(span_id);
    header.push_str("-01");
    header
}

fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    let mut rng = rand::rng();
    loop {
        rng.fill(&mut bytes[..]);
        if bytes.iter().any(|b| *b != 0) {
            return lower_hex(&bytes);
        }
    }
}

/// `bytes` as lowercase hex. Two or three ids per request: `hex::encode` collects `char`s one
/// at a time into a growing `String`, which costs several times as much.
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_the_clients_trace() {
        let ctx = TraceContext::from_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    }

    #[test]
    fn a_missing_or_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            None,
            Some("garbage"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
        ] {
            let ctx = TraceContext::from_traceparent(bad);
            assert_eq!(ctx.parent_span_id, None, "{bad:?}");
            assert_eq!(ctx.trace_id.len(), 32);
            assert_ne!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
        // A later version may carry more fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(
            TraceContext::from_traceparent(Some(future))
                .parent_span_id
                .is_some()
        );
    }

    #[test]
    fn ids_are_lowercase_hex() {
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(lower_hex(&[]), "");
        let trace = TraceContext::from_traceparent(None).trace_id;
        assert!(
            trace
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn span_ids_and_the_upstream_header() {
        let span = new_span_id();
        assert_eq!(span.len(), 16);
        assert_ne!(span, new_span_id());
        assert_eq!(
            traceparent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }
}
