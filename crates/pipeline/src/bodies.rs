//! Request and response bodies, kept only where a route (`log_bodies`) or a key asks for it:
//! passed through the gateway's [`Redact`] hook, cut at the route's size cap, and stored with
//! the request record (in a table of their own). Off by default.

use std::fmt::Debug;
use std::sync::Arc;

use sluice_store::Bodies;

use crate::{Caller, Exchange, Gateway};

/// The size cap of a key's kept bodies when its route sets none.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// What is removed from a body before it is kept. The gateway's DLP detectors (PRODUCT §11)
/// plug in here; until a policy is configured, bodies are kept as they were sent.
pub trait Redact: Send + Sync + Debug {
    fn redact(&self, text: &str) -> String;
}

/// Keeps bodies as they are: the hook when no redaction policy is configured.
#[derive(Debug, Default)]
pub struct KeepAsSent;

impl Redact for KeepAsSent {
    fn redact(&self, text: &str) -> String {
        text.to_owned()
    }
}

impl Gateway {
    /// Starts keeping a request's bodies when its route (`route_cap`, its size cap) or its
    /// key asks for it.
    pub(crate) fn keep_bodies(
        &self,
        exchange: &mut Exchange,
        route_cap: Option<usize>,
        caller: &Caller,
    ) {
        let key_cap = caller.key.log_bodies.then_some(DEFAULT_MAX_BYTES);
        match route_cap.or(key_cap) {
            Some(max_bytes) => exchange.capture_bodies(max_bytes, self.inner.redact.clone()),
            None => exchange.decline_bodies(),
        }
    }
}

/// The bodies of one request while it runs.
#[derive(Debug)]
pub(crate) struct Capture {
    max_bytes: usize,
    redact: Arc<dyn Redact>,
    request: Option<bytes::Bytes>,
    response: Vec<u8>,
    truncated: bool,
}

impl Capture {
    /// Keeps up to `max_bytes` of `request`, copied: the body as received shares the buffer its
    /// connection read it into, which a stream would otherwise hold to its end.
    pub fn new(
        max_bytes: usize,
        redact: Arc<dyn Redact>,
        request: Option<bytes::Bytes>,
    ) -> Capture {
        let truncated = request.as_ref().is_some_and(|body| body.len() > max_bytes);
        let request =
            request.map(|body| bytes::Bytes::copy_from_slice(&body[..body.len().min(max_bytes)]));
        Capture {
            max_bytes,
            redact,
            request,
            response: Vec::new(),
            truncated,
        }
    }

    /// Appends to the response, up to the cap.
    pub fn response(&mut self, bytes: &[u8]) {
        let room = self.max_bytes.saturating_sub(self.response.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.response
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Redacted and capped, for the record.
    pub fn finish(self) -> Bodies {
        let mut truncated = self.truncated;
        let mut keep = |bytes: &[u8]| {
            let cut = bytes.len().min(self.max_bytes);
            truncated |= cut < bytes.len();
            // A cut inside a UTF-8 sequence loses that character, never the body.
            self.redact.redact(&String::from_utf8_lossy(&bytes[..cut]))
        };
        let request = self.request.as_deref().map(&mut keep);
        let response = (!self.response.is_empty()).then(|| keep(&self.response));
        Bodies {
            request,
            response,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct HideDigits;

    impl Redact for HideDigits {
        fn redact(&self, text: &str) -> String {
            text.chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect()
        }
    }

    #[test]
    fn a_kept_request_body_lets_go_of_the_buffer_it_was_read_into() {
        let buffer = bytes::Bytes::from(vec![b'x'; 8192]);
        let capture = Capture::new(4, Arc::new(KeepAsSent), Some(buffer.slice(..16)));
        assert!(buffer.is_unique(), "the capture copied what it keeps");
        let bodies = capture.finish();
        assert_eq!(bodies.request.as_deref(), Some("xxxx"));
        assert!(bodies.truncated);
    }

    #[test]
    fn bodies_are_redacted_and_cut_at_the_cap() {
        let mut capture = Capture::new(8, Arc::new(HideDigits), Some("card 4242 4242".into()));
        capture.response(b"ok 1234");
        capture.response(b"567");
        let bodies = capture.finish();
        assert_eq!(bodies.request.as_deref(), Some("card ###"));
        assert_eq!(
            bodies.response.as_deref(),
            Some("ok #####"),
            "cut at 8 bytes"
        );
        assert!(bodies.truncated);

        let whole = Capture::new(100, Arc::new(KeepAsSent), Some("hi".into())).finish();
        assert_eq!(
            (whole.request.as_deref(), whole.response, whole.truncated),
            (Some("hi"), None, false)
        );
    }
}
