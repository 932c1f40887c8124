//! Shared vocabulary of Sluice. No I/O lives here.
//!
//! - [`chat`]: the canonical chat request, response and stream events every dialect translates
//!   to and from (`sluice-wire` owns the JSON shapes and the translation).
//! - [`error`]: the closed set of failure kinds and the [`Classify`] trait every crate error
//!   implements, so routing and rendering never guess.
//! - [`ids`]: request ids.
//! - [`throttle`]: one log line per interval for warnings that can repeat per request.

pub mod chat;
pub mod error;
pub mod ids;
pub mod money;
pub mod throttle;

pub use chat::*;
pub use error::{Classify, ErrorKind, Origin};
pub use ids::RequestId;
pub use money::Money;
pub use throttle::LogThrottle;

/// The two wire formats Sluice speaks, at ingress and towards providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }
}
