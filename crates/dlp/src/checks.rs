//! Checksums and range rules that turn a candidate of the right shape into a finding: Luhn and
//! issuer prefixes for cards, ISO 13616 mod 97 for IBANs, the SSA's never-issued SSN ranges,
//! HMRC's NINO prefixes, the Spanish DNI/NIE control letter and the Italian codice fiscale
//! control character. Pure functions over ASCII; `rules` calls them with a candidate's text.

/// Luhn (mod 10) over decimal digits, rightmost digit being the check digit.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, &digit)| {
            let value = u32::from(digit);
            if index % 2 == 1 {
                let doubled = value * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                value
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Whether a card number of this length starts with an issuer prefix (IIN) of a network that
/// issues numbers of that length: Visa, Mastercard, American Express, Discover, JCB, Diners
/// Club, UnionPay, Maestro.
pub(crate) fn card_issuer_known(digits: &[u8]) -> bool {
    let length = digits.len();
    let prefix = |count: usize| -> u32 {
        digits
            .iter()
            .take(count)
            .fold(0, |acc, &digit| acc * 10 + u32::from(digit))
    };
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    let visa = p1 == 4 && matches!(length, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && length == 16;
    let amex = matches!(p2, 34 | 37) && length == 15;
    let discover =
        (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
            && (16..=19).contains(&length);
    let jcb = (3528..=3589).contains(&p4) && (16..=19).contains(&length);
    let diners = ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39) || p4 == 3095)
        && (14..=19).contains(&length);
    let unionpay = p2 == 62 && (16..=19).contains(&length);
    let maestro = (matches!(p2, 50 | 56 | 57 | 58) || p1 == 6) && (13..=19).contains(&length);
    visa || mastercard || amex || discover || jcb || diners || unionpay || maestro
}

/// The IBAN length of a country (ISO 13616 registry), `None` for a country without IBANs.
pub(crate) fn iban_length(country: &str) -> Option<usize> {
    let length = match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FO" | "GL" | "NL" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" | "XK" => 20,
        "CH" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "CR" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" | "VA" => 22,
        "AE" | "GI" | "IL" | "IQ" | "TL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" | "ST" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "BY" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" | "SV" => 28,
        "BR" | "EG" | "PS" | "QA" | "UA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" | "SC" => 31,
        "LC" => 32,
        _ => return None,
    };
    Some(length)
}

/// ISO 7064 mod 97-10 over an IBAN without spaces: the first four characters moved to the end,
/// letters read as 10..=35, the whole number mod 97 must be 1.
pub(crate) fn iban_mod97(compact: &[u8]) -> bool {
    if compact.len() < 5 {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for &byte in tail.iter().chain(head) {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            b'A'..=b'Z' => u32::from(byte - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// The SSA never issues area 000, 666 or 900-999, group 00, or serial 0000.
pub(crate) fn us_ssn_issuable(area: u32, group: u32, serial: u32) -> bool {
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// HMRC: neither prefix letter is D, F, I, Q, U or V; the second is not O; and BG, GB, KN,
/// NK, NT, TN and ZZ are never allocated.
pub(crate) fn uk_nino_prefix_allocated(first: u8, second: u8) -> bool {
    const NEVER: &[u8] = b"DFIQUV";
    if NEVER.contains(&first) || NEVER.contains(&second) || second == b'O' {
        return false;
    }
    !matches!(
        [first, second],
        [b'B', b'G']
            | [b'G', b'B']
            | [b'K', b'N']
            | [b'N', b'K']
            | [b'N', b'T']
            | [b'T', b'N']
            | [b'Z', b'Z']
    )
}

/// The control letter of a Spanish DNI number (and of a NIE, its X/Y/Z read as 0/1/2).
pub(crate) fn es_dni_letter(number: u32) -> u8 {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    LETTERS[(number % 23) as usize]
}

/// Omocodia: digits of a codice fiscale may be replaced by these letters (0..=9) when two
/// people would otherwise share a code.
const OMOCODIA: &[u8; 10] = b"LMNPQRSTUV";

/// The value of a digit position of a codice fiscale, read through omocodia.
fn codice_fiscale_digit(byte: u8) -> Option<u32> {
    match byte {
        b'0'..=b'9' => Some(u32::from(byte - b'0')),
        _ => OMOCODIA
            .iter()
            .position(|&letter| letter == byte)
            .and_then(|digit| u32::try_from(digit).ok()),
    }
}

/// A 16-character codice fiscale (upper case): a real birth day (1-31, +40 for women) and the
/// control character computed from the first fifteen (odd positions through the Ministry's
/// table, even positions by value, sum mod 26).
pub(crate) fn it_codice_fiscale_valid(code: &[u8]) -> bool {
    // Values of characters in odd (1st, 3rd, ...) positions, for 0-9 / A-Z alike.
    const ODD: [u32; 26] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
        23,
    ];
    let [body @ .., control] = code else {
        return false;
    };
    if body.len() != 15 {
        return false;
    }
    let day = match (
        body.get(9).copied().and_then(codice_fiscale_digit),
        body.get(10).copied().and_then(codice_fiscale_digit),
    ) {
        (Some(tens), Some(units)) => tens * 10 + units,
        _ => return false,
    };
    if !((1..=31).contains(&day) || (41..=71).contains(&day)) {
        return false;
    }
    let mut sum = 0;
    for (index, &byte) in body.iter().enumerate() {
        let ordinal = match byte {
            b'0'..=b'9' => usize::from(byte - b'0'),
            b'A'..=b'Z' => usize::from(byte - b'A'),
            _ => return false,
        };
        sum += if index % 2 == 0 {
            ODD.get(ordinal).copied().unwrap_or(0)
        } else {
            u32::try_from(ordinal).unwrap_or(0)
        };
    }
    u32::from(*control) == u32::from(b'A') + sum % 26
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(text: &str) -> Vec<u8> {
        text.bytes().map(|b| b - b'0').collect()
    }

    #[test]
    fn luhn_accepts_test_cards_and_rejects_a_changed_digit() {
        assert!(luhn(&digits("4111111111111111")));
        assert!(luhn(&digits("378282246310005")));
        assert!(!luhn(&digits("4111111111111112")));
        assert!(!luhn(&[]));
    }

    #[test]
    fn issuer_prefixes_need_the_right_length() {
        assert!(card_issuer_known(&digits("4111111111111111")));
        assert!(card_issuer_known(&digits("378282246310005")));
        assert!(!card_issuer_known(&digits("37828224631000")));
        assert!(!card_issuer_known(&digits("1111111111111117")));
    }

    #[test]
    fn iban_mod97_matches_the_standard_examples() {
        assert!(iban_mod97(b"GB82WEST12345698765432"));
        assert!(iban_mod97(b"DE89370400440532013000"));
        assert!(!iban_mod97(b"GB83WEST12345698765432"));
        assert_eq!(iban_length("GB"), Some(22));
    }

    #[test]
    fn ssn_ranges_and_nino_prefixes() {
        assert!(us_ssn_issuable(123, 45, 6789));
        assert!(!us_ssn_issuable(666, 45, 6789));
        assert!(!us_ssn_issuable(901, 45, 6789));
        assert!(!us_ssn_issuable(123, 0, 6789));
        assert!(uk_nino_prefix_allocated(b'A', b'B'));
        assert!(!uk_nino_prefix_allocated(b'Q', b'Q'));
        assert!(!uk_nino_prefix_allocated(b'G', b'B'));
        assert!(!uk_nino_prefix_allocated(b'A', b'O'));
    }

    #[test]
    fn spanish_and_italian_control_characters() {
        assert_eq!(es_dni_letter(12_345_678), b'Z');
        assert!(it_codice_fiscale_valid(b"RSSMRA85T10A562S"));
        assert!(!it_codice_fiscale_valid(b"RSSMRA85T10A562T"));
        assert!(!it_codice_fiscale_valid(b"RSSMRA85T99A562S"));
    }
}
