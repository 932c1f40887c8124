//! The built-in detectors as rules: a candidate pattern each (some detectors have several), and
//! a check that sees the candidate with up to [`LOOKAROUND_CHARS`] characters on either side.
//!
//! Patterns use ASCII classes (`[0-9]`, never `\d`, which is Unicode here) and `\b` at their
//! edges so a search starts at the first character of a token, not inside a longer one; the
//! scanner compiles those `\b` as ASCII boundaries.

use std::ops::Range;
use std::str::FromStr;

use crate::checks;
use crate::detector::Detector;

/// How many characters before a candidate and after it a check may look at. The streaming
/// hold-back (`stream`) keeps this much context and holds candidates this close to the end.
pub(crate) const LOOKAROUND_CHARS: usize = 2;

/// A check of a candidate at `range` in `text`.
pub(crate) type Validator = fn(text: &str, range: Range<usize>) -> bool;

/// The candidate patterns of a built-in detector and their checks. [`Detector::Secret`] has
/// none here: it is the combined pattern of [`crate::secrets`].
pub(crate) fn builtin(detector: Detector) -> &'static [(&'static str, Validator)] {
    match detector {
        Detector::Email => &[(
            r"\b[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}\b",
            email,
        )],
        Detector::Phone => &[
            (
                r"\+[1-9][0-9]{0,2}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}",
                phone_international,
            ),
            (
                r"(?:\([2-9][0-9]{2}\) ?|\b(?:1[-. ])?[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4}\b",
                phone_north_american,
            ),
            (
                r"(?:\(0[1-9][0-9]{0,4}\) ?|\b0[1-9][0-9]{0,4}[ ./-])[0-9]{2,8}(?:[ .-][0-9]{2,8}){0,3}\b",
                phone_national_trunk,
            ),
        ],
        Detector::PaymentCard => &[(
            r"\b(?:[0-9]{13,19}|[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{4}(?:[ -][0-9]{3})?|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5})\b",
            payment_card,
        )],
        Detector::Iban => &[(
            r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
            iban,
        )],
        Detector::UsSsn => &[(r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b", us_ssn)],
        Detector::UkNino => &[(
            r"\b[A-Z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b",
            uk_nino,
        )],
        Detector::EsDni => &[(r"\b(?:[XYZ]-?[0-9]{7}|[0-9]{8})-?[A-Z]\b", es_dni)],
        Detector::ItCodiceFiscale => &[(
            r"\b[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]\b",
            it_codice_fiscale,
        )],
        Detector::IpAddress => &[
            (r"\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b", ipv4),
            (
                r"(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}",
                ipv6,
            ),
        ],
        Detector::Secret => &[],
    }
}

/// The characters around a candidate, nearest first.
struct Around {
    before: [Option<char>; LOOKAROUND_CHARS],
    after: [Option<char>; LOOKAROUND_CHARS],
}

impl Around {
    fn of(text: &str, range: &Range<usize>) -> Around {
        let mut before = text.get(..range.start).unwrap_or_default().chars().rev();
        let mut after = text.get(range.end..).unwrap_or_default().chars();
        Around {
            before: [before.next(), before.next()],
            after: [after.next(), after.next()],
        }
    }

    /// `.5` after or `3.` before: the candidate is part of a decimal or dotted number.
    fn in_dotted_number(&self) -> bool {
        dot_then_digit(self.before) || dot_then_digit(self.after)
    }

    /// The candidate continues, on either side, with one of `separators` and a digit.
    fn continues_with(&self, separators: &str) -> bool {
        let continues = |[first, second]: [Option<char>; 2]| {
            first.is_some_and(|c| separators.contains(c))
                && second.is_some_and(|c| c.is_ascii_digit())
        };
        continues(self.before) || continues(self.after)
    }
}

fn dot_then_digit([first, second]: [Option<char>; 2]) -> bool {
    first == Some('.') && second.is_some_and(|c| c.is_ascii_digit())
}

/// A word character as the regex's Unicode `\w` has it.
fn is_word(c: char) -> bool {
    regex_syntax::is_word_character(c)
}

fn ascii_digits(candidate: &str) -> Vec<u8> {
    candidate
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The distinct separators a number is written with (anything but digits and parentheses).
fn separators(candidate: &str) -> Vec<char> {
    let mut found: Vec<char> = candidate
        .chars()
        .filter(|c| !c.is_ascii_digit() && !matches!(c, '(' | ')'))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

fn slice<'t>(text: &'t str, range: &Range<usize>) -> &'t str {
    text.get(range.clone()).unwrap_or_default()
}

/// Top-level domains that are really file extensions: `icon@2x.png` is a file name.
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "js", "ts", "css", "map", "json",
    "txt", "pdf", "zip", "gz", "md",
];

fn email(text: &str, range: Range<usize>) -> bool {
    let address = slice(text, &range);
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let tld = domain
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let around = Around::of(text, &range);
    !local.contains("..")
        && !local.ends_with('.')
        && !FILE_EXTENSIONS.contains(&tld.as_str())
        && !around.before[0].is_some_and(|c| ".-+%@".contains(c))
        && !around.after[0].is_some_and(|c| "@-".contains(c))
}

fn phone_international(text: &str, range: Range<usize>) -> bool {
    let number = slice(text, &range);
    let digits = ascii_digits(&number.replace("(0)", "")).len();
    let around = Around::of(text, &range);
    (8..=15).contains(&digits)
        && !around.before[0].is_some_and(|c| is_word(c) || "+-./".contains(c))
        && !around.after[0].is_some_and(is_word)
        && !around.continues_with("-./")
}

fn phone_north_american(text: &str, range: Range<usize>) -> bool {
    let number = slice(text, &range);
    let around = Around::of(text, &range);
    let consistent = number.starts_with('(') || separators(number).len() == 1;
    consistent
        && !around.before[0].is_some_and(|c| is_word(c) || "+-./".contains(c))
        && !around.continues_with("-./ ")
}

fn phone_national_trunk(text: &str, range: Range<usize>) -> bool {
    let number = slice(text, &range);
    let around = Around::of(text, &range);
    let after_area = number.find(')').map_or(number, |close| {
        number.get(close + 1..).unwrap_or_default().trim_start()
    });
    (10..=11).contains(&ascii_digits(number).len())
        && separators(after_area).len() <= 1
        && !around.before[0].is_some_and(|c| is_word(c) || "+-./_".contains(c))
        && !around.continues_with("-./ ")
}

fn payment_card(text: &str, range: Range<usize>) -> bool {
    let number = slice(text, &range);
    let digits = ascii_digits(number);
    let used = separators(number);
    let around = Around::of(text, &range);
    used.len() <= 1
        && (13..=19).contains(&digits.len())
        && checks::luhn(&digits)
        && checks::card_issuer_known(&digits)
        && !around.in_dotted_number()
        && !used
            .iter()
            .any(|&separator| around.continues_with(&separator.to_string()))
}

fn iban(text: &str, range: Range<usize>) -> bool {
    let written = slice(text, &range);
    let compact: String = written.chars().filter(|c| *c != ' ').collect();
    // Either no spaces at all, or one before every group of four.
    let grouped = compact
        .as_bytes()
        .chunks(4)
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ");
    let country = compact.get(..2).unwrap_or_default();
    (written == compact || written == grouped)
        && checks::iban_length(country) == Some(compact.len())
        && checks::iban_mod97(compact.as_bytes())
}

fn us_ssn(text: &str, range: Range<usize>) -> bool {
    let number = slice(text, &range);
    let mut parts = number.split('-').map(|part| u32::from_str(part).ok());
    let (Some(Some(area)), Some(Some(group)), Some(Some(serial))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let around = Around::of(text, &range);
    checks::us_ssn_issuable(area, group, serial)
        && !around.before[0].is_some_and(|c| "-/.".contains(c))
        && !around.after[0].is_some_and(|c| "-/".contains(c))
        && !around.in_dotted_number()
}

fn uk_nino(text: &str, range: Range<usize>) -> bool {
    let number = slice(text, &range).as_bytes();
    let spaces = number.iter().filter(|b| **b == b' ').count();
    match number {
        [first, second, ..] => {
            (spaces == 0 || spaces == 4) && checks::uk_nino_prefix_allocated(*first, *second)
        }
        _ => false,
    }
}

fn es_dni(text: &str, range: Range<usize>) -> bool {
    let id = slice(text, &range).as_bytes();
    let compact: Vec<u8> = id.iter().copied().filter(|b| *b != b'-').collect();
    let [body @ .., letter] = compact.as_slice() else {
        return false;
    };
    let number = body.iter().try_fold(0u32, |acc, &byte| match byte {
        b'0'..=b'9' => Some(acc * 10 + u32::from(byte - b'0')),
        // NIE: X, Y and Z stand for a leading 0, 1 and 2.
        b'X' | b'Y' | b'Z' => Some(acc * 10 + u32::from(byte - b'X')),
        _ => None,
    });
    let around = Around::of(text, &range);
    number.is_some_and(|number| checks::es_dni_letter(number) == *letter)
        && around.before[0] != Some('-')
        && around.after[0] != Some('-')
}

fn it_codice_fiscale(text: &str, range: Range<usize>) -> bool {
    checks::it_codice_fiscale_valid(slice(text, &range).as_bytes())
}

fn ipv4(text: &str, range: Range<usize>) -> bool {
    let address = slice(text, &range);
    let octets_valid = address
        .split('.')
        .all(|octet| (octet == "0" || !octet.starts_with('0')) && u8::from_str(octet).is_ok());
    octets_valid && !Around::of(text, &range).in_dotted_number()
}

fn ipv6(text: &str, range: Range<usize>) -> bool {
    let address = slice(text, &range);
    let around = Around::of(text, &range);
    // `a::b` in code is a path; an address has more hex digits, or is the loopback `::1`.
    let hex_digits = address.chars().filter(char::is_ascii_hexdigit).count();
    (hex_digits >= 4 || address == "::1")
        && std::net::Ipv6Addr::from_str(address).is_ok()
        && !around.before[0].is_some_and(|c| is_word(c) || ":.".contains(c))
        && !around.after[0].is_some_and(|c| is_word(c) || c == ':')
}
