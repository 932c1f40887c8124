//! Reading request records back: which records ([`RecordFilter`]), where a reader is in the
//! order they were written ([`RecordCursor`]), and what a lookup by id found ([`RecordMatch`]).
//!
//! Parsing what a person typed (`5xx`, `15m`) is the CLI's job; each backend turns a filter
//! into its own query ([`crate::RecordQueries`]).

use crate::RequestRecord;

/// Which records to read. Every field that is set must match; an empty filter matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub user: Option<String>,
    pub alias: Option<String>,
    pub provider: Option<String>,
    pub deployment: Option<String>,
    pub status: Option<StatusFilter>,
    /// Started at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Started at or before this time (Unix milliseconds).
    pub until_ms: Option<i64>,
}

/// What a record's outcome must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// This exact HTTP status sent to the client (`502`).
    Code(u16),
    /// A status class: `5` is 500-599 (`5xx`).
    Class(u8),
    /// Any record with an error code, whatever its status (a stream that failed after it
    /// started was sent 200 and carries the error code).
    Error,
    /// No error code.
    Ok,
}

/// A position in the order a store's records were written, for reading what came after it.
/// Opaque: only the store that returned it knows what it stands for (a row id, a sequence
/// number, an index), and a cursor means nothing to another store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordCursor(pub(crate) i64);

/// Records read together with the position to continue from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordPage {
    pub records: Vec<RequestRecord>,
    /// Pass to [`crate::RecordQueries::records_after`] to read what was written after this page.
    pub cursor: RecordCursor,
}

/// The outcome of looking a record up by id or id prefix.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordMatch {
    Found(Box<RequestRecord>),
    NotFound,
    /// More than one record starts with the prefix: the first few of their ids, in id order,
    /// and whether there are more.
    Ambiguous {
        ids: Vec<String>,
        more: bool,
    },
}

/// How many ids an ambiguous prefix reports.
pub(crate) const AMBIGUOUS_SHOWN: u32 = 5;

impl StatusFilter {
    /// Whether a record with this status and error code passes.
    pub fn matches(self, status: u16, has_error: bool) -> bool {
        match self {
            StatusFilter::Code(code) => status == code,
            StatusFilter::Class(class) => status / 100 == u16::from(class),
            StatusFilter::Error => has_error,
            StatusFilter::Ok => !has_error,
        }
    }
}

impl RecordFilter {
    /// Whether `record` passes every field that is set: what each backend's query selects.
    pub fn matches(&self, record: &RequestRecord) -> bool {
        let equal = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        // What served the request, or any of its attempts (a request that failed everywhere
        // has no `deployment`).
        let served_or_tried =
            |want: &Option<String>,
             have: &Option<String>,
             attempt: fn(&crate::AttemptRecord) -> &str| {
                want.as_ref().is_none_or(|w| {
                    have.as_ref() == Some(w) || record.attempts.iter().any(|a| attempt(a) == w)
                })
            };
        equal(&self.key_id, &record.key_id)
            && equal(&self.team, &record.team)
            && equal(&self.user, &record.user)
            && equal(&self.alias, &record.alias)
            && served_or_tried(&self.provider, &record.provider, |a| &a.provider)
            && served_or_tried(&self.deployment, &record.deployment, |a| &a.deployment)
            && self
                .status
                .is_none_or(|s| s.matches(record.status, record.error_code.is_some()))
            && self.since_ms.is_none_or(|since| record.started_at >= since)
            && self.until_ms.is_none_or(|until| record.started_at <= until)
    }
}
