//! What a finding is: the built-in [`Detector`]s, custom detectors from config ([`Custom`]),
//! and the [`Finding`] a scan returns.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

use crate::DlpError;
use crate::secrets::SecretKind;

/// A built-in detector. Its [`Detector::as_str`] name is stable: config and audit records use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// `local@domain.tld` addresses.
    Email,
    /// International `+CC …` numbers and national numbers written with separators.
    Phone,
    /// Card numbers: 13-19 digits, a known issuer prefix, Luhn.
    PaymentCard,
    /// IBANs: the country's length and ISO 7064 mod 97.
    Iban,
    /// US Social Security numbers `AAA-GG-SSSS` in issuable ranges.
    UsSsn,
    /// UK National Insurance numbers with an allocated prefix.
    UkNino,
    /// Spanish DNI (8 digits + control letter) and NIE (X/Y/Z + 7 digits + control letter).
    EsDni,
    /// Italian codice fiscale (16 characters, control character).
    ItCodiceFiscale,
    /// IPv4 and IPv6 addresses.
    IpAddress,
    /// Every [`SecretKind`] of [`crate::secrets`].
    Secret,
}

impl Detector {
    /// Every built-in detector, in tie-break order (see [`crate::Scanner::find`]).
    pub const ALL: [Detector; 10] = [
        Detector::Email,
        Detector::Phone,
        Detector::PaymentCard,
        Detector::Iban,
        Detector::UsSsn,
        Detector::UkNino,
        Detector::EsDni,
        Detector::ItCodiceFiscale,
        Detector::IpAddress,
        Detector::Secret,
    ];

    /// Stable snake_case name, for config and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::PaymentCard => "payment_card",
            Detector::Iban => "iban",
            Detector::UsSsn => "us_ssn",
            Detector::UkNino => "uk_nino",
            Detector::EsDni => "es_dni",
            Detector::ItCodiceFiscale => "it_codice_fiscale",
            Detector::IpAddress => "ip_address",
            Detector::Secret => "secret",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Detector {
    type Err = DlpError;

    /// The detector of a config name; [`DlpError::UnknownDetector`] for any other name.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Detector::ALL
            .into_iter()
            .find(|detector| detector.as_str() == name)
            .ok_or_else(|| DlpError::UnknownDetector {
                name: name.to_owned(),
            })
    }
}

/// A detector defined by config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Custom {
    /// A regular expression (syntax of the `regex` crate). It must not match the empty string.
    Pattern { name: String, pattern: String },
    /// Words or phrases matched ASCII-case-insensitively, as whole words: a listed word that
    /// starts (ends) with a letter, digit or `_` must not be preceded (followed) by one.
    Words { name: String, words: Vec<String> },
}

impl Custom {
    /// The name findings and errors carry.
    pub fn name(&self) -> &str {
        match self {
            Custom::Pattern { name, .. } | Custom::Words { name, .. } => name,
        }
    }
}

/// Which detector a finding comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DetectorId {
    Builtin(Detector),
    /// A [`Custom`] detector, by its name.
    Custom(Arc<str>),
}

impl DetectorId {
    /// The name config and audit records use.
    pub fn as_str(&self) -> &str {
        match self {
            DetectorId::Builtin(detector) => detector.as_str(),
            DetectorId::Custom(name) => name,
        }
    }
}

impl fmt::Display for DetectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One match: which detector, where (a byte range of the scanned text, on char boundaries),
/// and for [`Detector::Secret`] which kind of secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub detector: DetectorId,
    pub range: Range<usize>,
    pub secret_kind: Option<SecretKind>,
}
