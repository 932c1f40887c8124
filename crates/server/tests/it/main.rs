//! Integration tests: the real router on an ephemeral port, real HTTP, mock providers.
//! Each test asserts on what the client got, what the upstream received, and the records.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests and their helpers may unwrap")]

mod admin;
mod anthropic_ingress;
mod budgets;
mod connections;
mod dlp;
mod errors;
mod hooks;
mod leaks;
mod openai_ingress;
mod routing;
mod stop_sequences;
mod structured;
mod support;
mod tool_policy;
mod traces;
