//! The wall clock, read in one place. Everything that needs the time of day (record
//! timestamps, budget windows, key expiry) reads it through [`unix_ms`] or an injected clock
//! built on it; `clippy.toml` forbids `SystemTime::now` everywhere else. Durations and
//! deadlines use `tokio::time::Instant`, which tests pause and advance.

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
#[expect(
    clippy::disallowed_methods,
    reason = "the one place the wall clock is read"
)]
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
