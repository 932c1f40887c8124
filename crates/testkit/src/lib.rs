//! Test and demo support for Sluice.
//!
//! The centrepiece is [`MockUpstream`], a real HTTP server on loopback that
//! speaks the OpenAI Chat Completions / Embeddings and Anthropic Messages wire
//! formats. It builds every payload itself with `serde_json` and depends on no
//! other Sluice crate, so tests that route through the gateway check the
//! gateway's translation against an independent implementation.
//!
//! It is a normal library (not dev-only) because `sluice demo` and
//! `sluice mock --listen ADDR` run it too (through [`MockBuilder::start_on`]).
//!
//! Start with [`mock`] for routes, reply scripting, `#mock` directives,
//! faults and chaos (exact shares of failing and stalling requests).
//!
//! [`TcpRelay`] stands between a process and a server it needs (Postgres, Redis) and can be
//! cut, to test what happens when the server cannot be reached.
//!
//! With the `otlp` feature, [`otlp`] adds OTLP collectors (HTTP and gRPC) that decode the
//! spans a tracer exports, for tests of tracing from the tracer up to the whole gateway.

#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "test support: the mock and the receiver own their tasks and fail loudly on misuse"
)]

pub mod mock;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod relay;

pub use mock::{Chaos, Fault, MockBuilder, MockDialect, MockUpstream, Recorded, Reply};
pub use relay::TcpRelay;
