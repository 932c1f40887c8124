//! Money as an integer count of micro-USD (1 USD = 1,000,000 micro-USD).
//!
//! Every price, cost, budget and spend figure in Sluice is a [`Money`], so sums in reports are
//! exact and never drift. There is no floating point anywhere in the type. Conversion from
//! per-token prices (and their rounding) belongs to `sluice-policy`'s pricing; this module only
//! owns the unit, arithmetic that cannot overflow silently, display and parsing.

use std::fmt;
use std::str::FromStr;

/// An amount of US dollars, in whole micro-USD. Negative amounts are allowed (refunds, deltas).
///
/// Serialises as a bare integer of micro-USD (`1234567` is `$1.234567`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// Micro-USD in one US dollar.
    pub const MICROS_PER_USD: i64 = 1_000_000;
    pub const ZERO: Money = Money(0);
    pub const MAX: Money = Money(i64::MAX);

    pub const fn from_micros(micros: i64) -> Self {
        Money(micros)
    }

    /// Whole dollars; `None` if the amount does not fit.
    pub const fn from_usd(dollars: i64) -> Option<Self> {
        match dollars.checked_mul(Self::MICROS_PER_USD) {
            Some(micros) => Some(Money(micros)),
            None => None,
        }
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub const fn checked_add(self, other: Money) -> Option<Money> {
        match self.0.checked_add(other.0) {
            Some(micros) => Some(Money(micros)),
            None => None,
        }
    }

    pub const fn checked_sub(self, other: Money) -> Option<Money> {
        match self.0.checked_sub(other.0) {
            Some(micros) => Some(Money(micros)),
            None => None,
        }
    }

    pub const fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    pub const fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }
}

/// `$1.234567`, `-$0.000001`: always six decimals, so every micro-USD is visible.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        let per_usd = Self::MICROS_PER_USD.unsigned_abs();
        write!(
            f,
            "{sign}${}.{:06}",
            magnitude / per_usd,
            magnitude % per_usd
        )
    }
}

/// Why a string is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseMoneyError {
    /// Empty, or not `[-][$]digits[.digits]`.
    Malformed,
    /// More than six decimals: finer than a micro-USD.
    TooPrecise,
    /// Does not fit in an `i64` of micro-USD.
    OutOfRange,
}

impl fmt::Display for ParseMoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseMoneyError::Malformed => "expected an amount such as 5, 5.00 or $0.000001",
            ParseMoneyError::TooPrecise => "at most six decimals (one micro-USD)",
            ParseMoneyError::OutOfRange => "amount out of range",
        })
    }
}

impl std::error::Error for ParseMoneyError {}

/// Parses a decimal amount of dollars: `5`, `5.5`, `$0.000001`, `-$2.50`. Exact: no rounding.
impl FromStr for Money {
    type Err = ParseMoneyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let rest = rest.strip_prefix('$').unwrap_or(rest);
        let (whole, fraction) = match rest.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (rest, ""),
        };
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(ParseMoneyError::Malformed);
        }
        if fraction.len() > 6 {
            return Err(ParseMoneyError::TooPrecise);
        }
        let whole: i64 = whole.parse().map_err(|_| ParseMoneyError::OutOfRange)?;
        let mut fraction_micros: i64 = 0;
        for (position, digit) in fraction.bytes().enumerate() {
            // Position 0 is tenths: 10^5 micro-USD.
            let scale = 10_i64.pow(5 - position as u32);
            fraction_micros += i64::from(digit - b'0') * scale;
        }
        let micros = whole
            .checked_mul(Self::MICROS_PER_USD)
            .and_then(|micros| micros.checked_add(fraction_micros))
            .ok_or(ParseMoneyError::OutOfRange)?;
        Ok(Money(if negative { -micros } else { micros }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_six_decimals_with_dollar_sign() {
        assert_eq!(Money::from_micros(1_234_567).to_string(), "$1.234567");
        assert_eq!(Money::from_micros(5_000_000).to_string(), "$5.000000");
        assert_eq!(Money::from_micros(1).to_string(), "$0.000001");
        assert_eq!(Money::ZERO.to_string(), "$0.000000");
        assert_eq!(Money::from_micros(-1).to_string(), "-$0.000001");
        assert_eq!(
            Money::from_micros(i64::MIN).to_string(),
            "-$9223372036854.775808"
        );
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        let one = Money::from_micros(1);
        assert_eq!(Money::MAX.checked_add(one), None);
        assert_eq!(Money::from_micros(i64::MIN).checked_sub(one), None);
        assert_eq!(one.checked_add(one), Some(Money::from_micros(2)));
        assert_eq!(
            one.checked_sub(Money::from_micros(3)),
            Some(Money::from_micros(-2))
        );
    }

    #[test]
    fn saturating_arithmetic_clamps_at_the_bounds() {
        let one = Money::from_micros(1);
        assert_eq!(Money::MAX.saturating_add(one), Money::MAX);
        assert_eq!(
            Money::from_micros(i64::MIN).saturating_sub(one),
            Money::from_micros(i64::MIN)
        );
        assert_eq!(
            Money::from_micros(7).saturating_sub(one),
            Money::from_micros(6)
        );
    }

    #[test]
    fn whole_dollars_convert_exactly() {
        assert_eq!(Money::from_usd(5), Some(Money::from_micros(5_000_000)));
        assert_eq!(Money::from_usd(i64::MAX), None);
    }

    #[test]
    fn serialises_as_integer_micros() {
        let json = serde_json::to_string(&Money::from_micros(4_980_000)).unwrap();
        assert_eq!(json, "4980000");
        let back: Money = serde_json::from_str("4980000").unwrap();
        assert_eq!(back, Money::from_micros(4_980_000));
        assert!(serde_json::from_str::<Money>("4.98").is_err());
    }

    #[test]
    fn parses_decimal_dollars_exactly() {
        assert_eq!("5".parse(), Ok(Money::from_micros(5_000_000)));
        assert_eq!("$4.98".parse(), Ok(Money::from_micros(4_980_000)));
        assert_eq!("0.000001".parse(), Ok(Money::from_micros(1)));
        assert_eq!("-$2.5".parse(), Ok(Money::from_micros(-2_500_000)));
        assert_eq!(" 1.234567 ".parse(), Ok(Money::from_micros(1_234_567)));
    }

    #[test]
    fn rejects_malformed_and_over_precise_amounts() {
        assert_eq!("".parse::<Money>(), Err(ParseMoneyError::Malformed));
        assert_eq!("$".parse::<Money>(), Err(ParseMoneyError::Malformed));
        assert_eq!(".5".parse::<Money>(), Err(ParseMoneyError::Malformed));
        assert_eq!("1e3".parse::<Money>(), Err(ParseMoneyError::Malformed));
        assert_eq!("1.2.3".parse::<Money>(), Err(ParseMoneyError::Malformed));
        assert_eq!(
            "0.0000001".parse::<Money>(),
            Err(ParseMoneyError::TooPrecise)
        );
        assert_eq!(
            "9223372036855".parse::<Money>(),
            Err(ParseMoneyError::OutOfRange)
        );
    }
}
