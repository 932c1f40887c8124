//! Shared vocabulary of Sluice. No I/O lives here.
//!
//! - [`chat`]: the canonical chat request, response and stream events every dialect translates
//!   to and from (`sluice-wire` owns the JSON shapes and the translation).
//! - [`error`]: the closed set of failure kinds and the [`Classify`] trait every crate error
//!   implements, so routing and rendering never guess.
//! - [`ids`]: request and tenant ids.
//! - [`record`]: the typed request record, filled by the pipeline and written by the store.
//! - [`throttle`]: one log line per interval for warnings that can repeat per request.

pub mod chat;
pub mod clock;
pub mod error;
pub mod ids;
pub mod money;
pub mod record;
pub mod throttle;

pub use chat::*;
pub use error::{Classify, Condition, ErrorKind, Origin};
pub use ids::{IdPlace, IdTooLong, MAX_CLIENT_ID_BYTES, RequestId, TenantId, check_client_id};
pub use money::Money;
pub use throttle::LogThrottle;

/// The two wire formats Sluice speaks, at ingress and towards providers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    #[default]
    #[serde(rename = "openai")]
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
