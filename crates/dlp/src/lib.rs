//! Detectors of sensitive data in text, shared by every place that must not pass it on.
//!
//! - [`secrets`]: provider and cloud keys, tokens, credentials in URLs, database URLs and
//!   private keys: [`secrets::find`] says where, [`secrets::redact`] replaces them.
//!
//! Today the providers use it to scrub what an upstream echoed back in its error messages
//! before a client or a log line sees it. The egress DLP policy (PRODUCT §11: actions per
//! detector and route, applied to requests and streams) is meant to build on these detectors;
//! it leaves to them only *what* matches, and decides itself what to do about it.

pub mod secrets;
