//! JSON shapes of the dialects Sluice speaks and pure translation to and from the canonical
//! types of `sluice-types`. No I/O, no clock: callers pass bytes in and get bytes out.
//!
//! - [`openai`]: Chat Completions (requests, responses, streaming chunks, errors) and
//!   embeddings pass-through.
//! - [`anthropic`]: Messages (requests, responses, the streaming event sequence, errors) and
//!   count_tokens.
//! - [`sse`]: an incremental Server-Sent-Events parser for upstream streams.
//!
//! A translation is always `dialect A -> canonical -> dialect B`. The rules every module follows:
//!
//! - **Decoding validates.** A client body that is not UTF-8 or JSON, has a wrong type, misses a
//!   required field or uses an unknown enum value is refused with a [`WireError`] naming the
//!   field path (`messages[2].content[0].type`). Input the canonical form cannot carry (audio,
//!   files, server tools, thinking blocks) is refused as [`WireError::UnsupportedInput`].
//! - **Encoding refuses rather than drops.** A parameter the target dialect cannot honour is a
//!   [`WireError::Unsupported`] naming the parameter and the target, raised before any I/O.
//!   Only hints that do not change the output are dropped (cache markers where the target has
//!   none, image `detail`, participant `name`, OpenAI `metadata`); each module's docs list them.
//! - **Extras** (top-level fields the canonical form does not model) are forwarded verbatim to
//!   the dialect they came from and refused by the other.
//! - **Upstream bodies are decoded tolerantly** (missing optional fields default), and a body that
//!   still does not fit is [`WireError::UpstreamMalformed`].
//!
//! Who calls what: `sluice-server` decodes client bodies and encodes responses and errors;
//! `sluice-providers` encodes upstream requests and decodes upstream bodies and streams.

mod error;
mod json;

pub mod anthropic;
pub mod openai;
pub mod sse;

pub use error::{UpstreamError, WireError};
