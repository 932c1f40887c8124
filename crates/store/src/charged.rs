//! What requests were charged, summed per request chain (its tenant included: end users'
//! counters are per tenant) and span of time: what budget counters
//! are rebuilt from after they were lost (a restart with in-process counters, a Redis that
//! restarted empty). Grouping happens in the database, so a month of records comes back as a few
//! rows per key, user and slot rather than one per request.

/// The requests of one chain (organisation … end user, alias) that started within one span
/// of `granularity_ms`, as admission charged them: requests that reached a deployment (at
/// least one attempt that was not skipped), drills left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargedUsage {
    /// The tenant of the key: end users' counters are per tenant.
    pub tenant: Option<String>,
    pub organisation: Option<String>,
    pub team: Option<String>,
    pub project: Option<String>,
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub alias: Option<String>,
    /// The span's start, Unix ms (a multiple of the granularity).
    pub slot_start: i64,
    pub requests: u64,
    /// Input plus output tokens.
    pub tokens: u64,
    /// Micro-USD.
    pub cost_micros: u64,
}
