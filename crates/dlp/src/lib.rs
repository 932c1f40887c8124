//! Detectors of sensitive data in text, shared by every place that must not pass it on.
//!
//! This crate says *what* matches and where; the egress DLP policy (PRODUCT §11, in the
//! pipeline) decides what to do about it (redact, pseudonymise, block, log) per detector and
//! route. `docs/dlp-detectors.md` lists what each detector matches, how it validates, and its
//! known false positives and negatives.
//!
//! - [`secrets`]: provider and cloud keys, tokens, credentials in URLs, database URLs and
//!   private keys: [`secrets::find`] says where, [`secrets::redact`] replaces them. The
//!   providers scrub upstream error messages with it.
//! - [`Scanner`]: the built-in [`Detector`]s a policy enables (`email`, `phone`,
//!   `payment_card`, `iban`, `us_ssn`, `uk_nino`, `es_dni`, `it_codice_fiscale`, `ip_address`,
//!   `secret`) plus [`Custom`] ones from config (named regex patterns, named word lists),
//!   compiled once. [`Scanner::find`] returns [`Finding`]s: detector, byte range, and for a
//!   secret its [`secrets::SecretKind`].
//!
//! # Matching
//!
//! Each detector has candidate patterns anchored at token edges (a card number inside a longer
//! digit run, or an id inside a longer word, is no candidate), and a check of each candidate:
//! checksums (Luhn, IBAN mod 97, DNI mod 23, codice fiscale control character), issuable
//! ranges (SSN, NINO prefixes, IP octets), and up to two characters of context either side
//! (`1.2.3.4.5` is a version, not an address). Findings are sorted and never overlap. **Tie
//! rule:** of overlapping candidates, the one that starts first wins; at the same start the
//! longer; at the same range the detector first in [`Detector::ALL`], custom detectors after the
//! built-ins in the order configured.
//!
//! # Streams
//!
//! [`Scanner::stable_len`] is the length of the prefix of a stream's tail that no later text
//! can change: no finding of the longer text will overlap it other than one found in it
//! already. Only a tail that could still become (or change) a match is held: a trailing
//! partial word, digit run or token of a known shape, from its first byte. [`StreamScanner`]
//! wraps this: push chunks, get back released text with its findings, and the result equals
//! [`Scanner::find`] of the whole stream however it was chunked. At most [`MAX_HOLD`] bytes are
//! ever held; a longer match (an unterminated private key block) is released in part and
//! reported up to the cut.
//!
//! # Cost
//!
//! Building a [`Scanner`] compiles every pattern (tens of milliseconds): build it once per
//! config snapshot and share it (`Arc`). A scan is linear in the text, about a millisecond for
//! 50 KB of prose with every detector on, but it is CPU work: the pipeline runs large ones on a
//! blocking worker. Start reading at `scanner.rs` (whole texts), then `stream.rs` (hold-back),
//! `rules.rs` (patterns and checks) and `checks.rs` (checksums).

mod checks;
mod detector;
mod rules;
mod scanner;
pub mod secrets;
mod stream;

pub use detector::{Custom, Detector, DetectorId, Finding};
pub use scanner::Scanner;
pub use stream::{MAX_HOLD, Released, StreamScanner};

/// Why a [`Scanner`] could not be built, or a detector name not read. Every variant about a
/// custom detector names it.
#[derive(Debug, thiserror::Error)]
pub enum DlpError {
    #[error("no built-in detector is named `{name}`")]
    UnknownDetector { name: String },
    #[error("detector `{name}`: the pattern does not compile")]
    InvalidPattern {
        name: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("detector `{name}`: the pattern is not supported for streams")]
    UnsupportedPattern {
        name: String,
        #[source]
        source: Box<regex_syntax::Error>,
    },
    #[error("detector `{name}`: the pattern can match the empty string")]
    PatternMatchesEmpty { name: String },
    #[error("detector `{name}`: a word list needs words, none of them empty")]
    EmptyWord { name: String },
    #[error("detector `{name}`: the word list does not compile")]
    WordList {
        name: String,
        #[source]
        source: aho_corasick::BuildError,
    },
    #[error("detector name `{name}` is empty, built in, or used twice")]
    DuplicateName { name: String },
    #[error("the detectors' patterns do not compile together")]
    PatternSet {
        #[source]
        source: Box<regex::Error>,
    },
    #[error("the detectors' patterns are too large for the stream automaton (NFA)")]
    StreamAutomaton {
        #[source]
        source: Box<regex_automata::nfa::thompson::BuildError>,
    },
    #[error("the detectors' patterns are too large for the stream automaton (lazy DFA)")]
    StreamDfa {
        #[source]
        source: Box<regex_automata::hybrid::BuildError>,
    },
}
