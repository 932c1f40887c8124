//! Response bodies played back frame by frame with the timing and cuts of a
//! [`Fault`], without buffering: each frame is produced only when hyper asks
//! for it, so the client sees it as soon as it is "generated".
//!
//! A cut ends the body with an error, which makes hyper abort the connection
//! instead of writing the final chunk, so the client sees an incomplete
//! response. A body dropped before its last frame (the client went away)
//! runs the `on_abandon` callback.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;

use super::Fault;

/// One piece of a response body.
#[derive(Debug, Clone)]
pub(super) struct Frame {
    pub bytes: Bytes,
    /// Content frames carry generated output; `first_token_ms` is waited
    /// before the first of them.
    pub content: bool,
}

impl Frame {
    /// A Server-Sent Event: `event: NAME` (when given), then `data: DATA`.
    pub fn event(name: Option<&str>, data: &str, content: bool) -> Self {
        let text = match name {
            Some(name) => format!("event: {name}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        };
        Frame {
            bytes: Bytes::from(text),
            content,
        }
    }

    pub fn raw(bytes: impl Into<Bytes>) -> Self {
        Frame {
            bytes: bytes.into(),
            content: false,
        }
    }
}

/// Called once when a client abandons a body before its last frame.
pub(super) type OnAbandon = Box<dyn FnOnce() + Send>;

struct Guard(Option<OnAbandon>);

impl Guard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(on_abandon) = self.0.take() {
            on_abandon();
        }
    }
}

struct Playback {
    frames: VecDeque<Frame>,
    fault: Fault,
    sent: usize,
    seen_content: bool,
    done: bool,
    guard: Guard,
}

/// Plays `frames` back honouring `fault.first_token_ms`, `chunk_delay_ms` and
/// `cut_after_events` (`delay_ms` is the caller's, before the headers).
pub(super) fn body(frames: Vec<Frame>, fault: Fault, on_abandon: Option<OnAbandon>) -> Body {
    let playback = Playback {
        frames: frames.into(),
        fault,
        sent: 0,
        seen_content: false,
        done: false,
        guard: Guard(on_abandon),
    };
    let stream = futures_util::stream::unfold(playback, |mut p| async move {
        if p.done {
            return None;
        }
        if p.fault.cut_after_events.is_some_and(|n| p.sent >= n) {
            // hyper flushes only when the body is pending; without this the
            // frames before the cut (and the headers) die in its write buffer.
            tokio::task::yield_now().await;
            p.guard.disarm();
            p.done = true;
            let cut = io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock upstream cut the body",
            );
            return Some((Err(cut), p));
        }
        let Some(frame) = p.frames.pop_front() else {
            p.guard.disarm();
            if p.fault.linger_ms > 0 {
                tokio::time::sleep(Duration::from_millis(p.fault.linger_ms)).await;
            }
            return None;
        };
        // `first_token_ms` replaces the chunk delay before the first content frame.
        let wait = if frame.content && !p.seen_content {
            p.seen_content = true;
            p.fault.first_token_ms
        } else if p.sent > 0 {
            p.fault.chunk_delay_ms
        } else {
            0
        };
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        p.sent += 1;
        let cut_pending = p.fault.cut_after_events.is_some_and(|n| p.sent >= n);
        if p.frames.is_empty() && !cut_pending {
            // The client has everything once this frame is out.
            p.guard.disarm();
        }
        Some((Ok::<_, io::Error>(frame.bytes), p))
    });
    Body::from_stream(stream)
}
