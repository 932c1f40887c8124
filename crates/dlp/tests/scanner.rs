//! Building a scanner from config values, the tie rule, custom detectors.

use std::sync::Arc;

use sluice_dlp::secrets::SecretKind;
use sluice_dlp::{Custom, Detector, DetectorId, DlpError, Finding, Scanner};

fn pattern(name: &str, pattern: &str) -> Custom {
    Custom::Pattern {
        name: name.into(),
        pattern: pattern.into(),
    }
}

fn words(name: &str, words: &[&str]) -> Custom {
    Custom::Words {
        name: name.into(),
        words: words.iter().map(|w| w.to_string()).collect(),
    }
}

fn found(scanner: &Scanner, text: &str) -> Vec<(String, String)> {
    scanner
        .find(text)
        .into_iter()
        .map(|f| (f.detector.to_string(), text[f.range].to_owned()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(d, t)| (d.to_string(), t.to_string()))
        .collect()
}

#[test]
fn detector_names_are_stable_and_parse_back() {
    let names: Vec<&str> = Detector::ALL.iter().map(|d| d.as_str()).collect();
    assert_eq!(
        names,
        [
            "email",
            "phone",
            "payment_card",
            "iban",
            "us_ssn",
            "uk_nino",
            "es_dni",
            "it_codice_fiscale",
            "ip_address",
            "secret"
        ]
    );
    for detector in Detector::ALL {
        assert_eq!(detector.as_str().parse::<Detector>().unwrap(), detector);
    }
    assert!(
        matches!("credit_card".parse::<Detector>(), Err(DlpError::UnknownDetector { name }) if name == "credit_card")
    );
}

#[test]
fn rejects_bad_custom_detectors_naming_them() {
    let error = Scanner::new(&[], vec![pattern("ticket", "TICKET-(")]).unwrap_err();
    assert!(
        matches!(&error, DlpError::InvalidPattern { name, .. } if name == "ticket"),
        "{error:?}"
    );
    assert!(error.to_string().contains("ticket"));
    let error = Scanner::new(&[], vec![pattern("maybe", "a*")]).unwrap_err();
    assert!(
        matches!(&error, DlpError::PatternMatchesEmpty { name } if name == "maybe"),
        "{error:?}"
    );
    let error = Scanner::new(&[], vec![words("email", &["x"])]).unwrap_err();
    assert!(
        matches!(&error, DlpError::DuplicateName { name } if name == "email"),
        "{error:?}"
    );
    let error = Scanner::new(&[], vec![words("a", &["x"]), pattern("a", "y")]).unwrap_err();
    assert!(
        matches!(&error, DlpError::DuplicateName { name } if name == "a"),
        "{error:?}"
    );
    let error = Scanner::new(&[], vec![words("empty", &[])]).unwrap_err();
    assert!(
        matches!(&error, DlpError::EmptyWord { name } if name == "empty"),
        "{error:?}"
    );
    let error = Scanner::new(&[], vec![words("blank", &["ok", ""])]).unwrap_err();
    assert!(
        matches!(&error, DlpError::EmptyWord { name } if name == "blank"),
        "{error:?}"
    );
}

#[test]
fn only_enabled_detectors_report() {
    let scanner = Scanner::new(&[Detector::Email], Vec::new()).unwrap();
    let text = "jane@example.com paid with 4111 1111 1111 1111 from 192.0.2.1";
    assert_eq!(
        found(&scanner, text),
        pairs(&[("email", "jane@example.com")])
    );
    let none = Scanner::new(&[], Vec::new()).unwrap();
    assert!(none.find(text).is_empty());
    assert_eq!(none.stable_len(text), text.len());
}

#[test]
fn findings_are_sorted_and_never_overlap() {
    let scanner = Scanner::new(&Detector::ALL, vec![words("codename", &["falcon"])]).unwrap();
    let text = "Falcon: mail jane@example.com, card 5555-5555-5555-4444, IBAN DE89 3704 0044 0532 0130 00, \
                ip 2001:db8::1, key AKIAIOSFODNN7EXAMPLE, NIE X1234567L, falcons are not falcon.";
    assert_eq!(
        found(&scanner, text),
        pairs(&[
            ("codename", "Falcon"),
            ("email", "jane@example.com"),
            ("payment_card", "5555-5555-5555-4444"),
            ("iban", "DE89 3704 0044 0532 0130 00"),
            ("ip_address", "2001:db8::1"),
            ("secret", "AKIAIOSFODNN7EXAMPLE"),
            ("es_dni", "X1234567L"),
            ("codename", "falcon"),
        ])
    );
    let findings = scanner.find(text);
    assert!(
        findings
            .windows(2)
            .all(|w| w[0].range.end <= w[1].range.start)
    );
}

#[test]
fn a_secret_finding_carries_its_kind() {
    let scanner = Scanner::new(&[Detector::Secret], Vec::new()).unwrap();
    let text = "db postgres://app:s3cret@db.internal:5432/prod and ghp_0123456789abcdefghijABCDEFGHIJ012345";
    let kinds: Vec<Option<SecretKind>> = scanner
        .find(text)
        .into_iter()
        .map(|f| f.secret_kind)
        .collect();
    assert_eq!(
        kinds,
        [Some(SecretKind::DatabaseUrl), Some(SecretKind::GithubToken)]
    );
}

#[test]
fn tie_rule_earliest_then_longest_then_detector_order() {
    // Same start: the longer wins (the card over a custom four-digit group).
    let scanner = Scanner::new(
        &[Detector::PaymentCard],
        vec![pattern("group", r"\b[0-9]{4} [0-9]{4}\b")],
    )
    .unwrap();
    assert_eq!(
        found(&scanner, "4111 1111 1111 1111"),
        pairs(&[("payment_card", "4111 1111 1111 1111")])
    );
    // Earlier start wins even if shorter; the overlapped card is dropped whole.
    let scanner = Scanner::new(
        &[Detector::PaymentCard],
        vec![pattern("label", r"no\. 4111")],
    )
    .unwrap();
    assert_eq!(
        found(&scanner, "no. 4111 1111 1111 1111"),
        pairs(&[("label", "no. 4111")])
    );
    // Same range: built-ins before custom detectors, built-ins in `Detector::ALL` order.
    let scanner = Scanner::new(
        &[Detector::UsSsn],
        vec![pattern("ssn_like", r"[0-9]{3}-[0-9]{2}-[0-9]{4}")],
    )
    .unwrap();
    assert_eq!(
        found(&scanner, "id 219-09-9998"),
        pairs(&[("us_ssn", "219-09-9998")])
    );
    // Custom detectors among themselves: in the order configured.
    let scanner = Scanner::new(
        &[],
        vec![words("first", &["falcon"]), words("second", &["FALCON"])],
    )
    .unwrap();
    assert_eq!(found(&scanner, "falcon"), pairs(&[("first", "falcon")]));
}

#[test]
fn word_lists_match_whole_words_in_any_ascii_case() {
    let scanner = Scanner::new(
        &[],
        vec![words("terms", &["project x", "x", "C++", "naïve"])],
    )
    .unwrap();
    assert_eq!(
        found(
            &scanner,
            "PROJECT X, projects x, C++ and C++x, naïve, naïveté, xylophone, x."
        ),
        pairs(&[
            ("terms", "PROJECT X"),
            ("terms", "x"),
            ("terms", "C++"),
            // `C++` ends in a non-word character, so `C++x` is `C++` then the word `x`.
            ("terms", "C++"),
            ("terms", "x"),
            ("terms", "naïve"),
            ("terms", "x"),
        ])
    );
}

#[test]
fn custom_patterns_report_every_match() {
    let scanner = Scanner::new(&[], vec![pattern("ticket", r"\bTICKET-[0-9]+\b")]).unwrap();
    let findings = scanner.find("TICKET-1 and TICKET-22, not XTICKET-3");
    assert_eq!(
        findings,
        [
            Finding {
                detector: DetectorId::Custom(Arc::from("ticket")),
                range: 0..8,
                secret_kind: None
            },
            Finding {
                detector: DetectorId::Custom(Arc::from("ticket")),
                range: 13..22,
                secret_kind: None
            },
        ]
    );
}

#[test]
fn the_secret_detector_finds_what_secrets_find_finds() {
    let scanner = Scanner::new(&[Detector::Secret], Vec::new()).unwrap();
    let secrets = [
        "sk-proj-abcDEF1234567890xyzXYZ_-abc",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "Bearer abcdefghijklmnopqrstuvwxyz012345",
        "postgres://app:s3cret@db.internal:5432/prod",
        "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----",
    ];
    // Neighbours where Unicode and ASCII word boundaries differ, and nested candidates.
    let neighbours = ["", " ", "é", "—", "_", "x", "ü ", "²", "\u{301}"];
    for secret in secrets {
        for before in neighbours {
            for after in neighbours {
                for text in [
                    format!("{before}{secret}{after}"),
                    format!("é{secret}-{secret}{after}"),
                ] {
                    let expected: Vec<_> = sluice_dlp::secrets::find(&text)
                        .into_iter()
                        .map(|f| (f.range, Some(f.kind)))
                        .collect();
                    let got: Vec<_> = scanner
                        .find(&text)
                        .into_iter()
                        .map(|f| (f.range, f.secret_kind))
                        .collect();
                    assert_eq!(got, expected, "{text:?}");
                }
            }
        }
    }
}
