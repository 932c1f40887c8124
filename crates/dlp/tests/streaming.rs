//! Streams: scanning chunk by chunk with the hold-back of `stable_len` finds exactly what a scan
//! of the whole text finds, wherever the chunks are cut; and the hold-back is no longer than a
//! possible match.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers may unwrap and panic"
)]

use std::path::Path;
use std::sync::Arc;

use sluice_dlp::{
    Custom, Detector, DetectorId, Finding, MAX_HOLD, Released, Scanner, StreamScanner,
};

/// Number-shaped detectors alone: without `email`, whose local part spans digits, dots and
/// dashes, the hold-back of a number rests on its own rules.
fn number_scanner() -> Arc<Scanner> {
    let detectors = [
        Detector::PaymentCard,
        Detector::IpAddress,
        Detector::UsSsn,
        Detector::EsDni,
        Detector::Phone,
    ];
    Arc::new(Scanner::new(&detectors, Vec::new()).unwrap())
}

fn scanner() -> Arc<Scanner> {
    let custom = vec![
        Custom::Pattern {
            name: "order_id".into(),
            pattern: r"\bORD-[0-9]{4,}\b".into(),
        },
        Custom::Words {
            name: "codename".into(),
            words: vec![
                "falcon".into(),
                "project x".into(),
                "C++".into(),
                "Zürich".into(),
            ],
        },
    ];
    Arc::new(Scanner::new(&Detector::ALL, custom).unwrap())
}

/// Corpus lines without their marks, grouped three by three with different joints, plus texts
/// with multi-byte characters and custom detectors' matches.
fn texts() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut lines = Vec::new();
    for detector in Detector::ALL {
        let content =
            std::fs::read_to_string(dir.join(format!("{}.txt", detector.as_str()))).unwrap();
        for line in content
            .lines()
            .filter(|l| !l.starts_with('#') && l.len() > 2)
        {
            lines.push(line[2..].replace(['⟦', '⟧'], ""));
        }
    }
    let joints = [" ", "\n", "", ", ", " · "];
    let mut texts: Vec<String> = lines
        .chunks(3)
        .enumerate()
        .map(|(index, group)| group.join(joints[index % joints.len()]))
        .collect();
    texts.extend(
        [
            "Grüße aus Zürich — josé@example.com or jose@example.com, ☃ 4111 1111 1111 1111€ falcon",
            "ORD-12345 then ORD-123 then ORD-99999999 and project x, project xy, C++ and C+++",
            "my card is 4111 1111 1111 1111 and my IBAN is GB82 WEST 1234 5698 7654 32; ssn 219-09-9999.",
            "ip 192.0.2.1, 2001:db8::1 and 1.2.3.4.5, call +44 20 7946 0958 or (202) 555-0143!",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY----- after the key sk-proj-abcDEF1234567890xyzXYZ",
            // Checks that look two characters ahead: a decimal, a dotted version, a grouped run.
            "ratio 4111111111111111.5 or card 4111111111111111. End; ip 192.0.2.1.7 or 192.0.2.1. End",
            "4111 1111 1111 1111 2222 is a run; 219-09-9999-1 is a code; jane@example.com-x; 12345678Z-1",
            "41111111111111112 is too long, 4111111111111111 is a card; 12345678Z; RSSMRA85T10A562S",
        ]
        .map(String::from),
    );
    texts
}

/// Every finding of a stream cut into `chunks`, in stream coordinates, and the released text.
fn stream(scanner: &Arc<Scanner>, chunks: &[&str]) -> (String, Vec<Finding>) {
    let mut stream = StreamScanner::new(Arc::clone(scanner));
    let mut text = String::new();
    let mut findings = Vec::new();
    let mut collect = |released: Released| {
        assert_eq!(released.offset, text.len());
        text.push_str(&released.text);
        findings.extend(released.findings.into_iter().map(|mut finding| {
            finding.range =
                finding.range.start + released.offset..finding.range.end + released.offset;
            finding
        }));
    };
    for chunk in chunks {
        collect(stream.push(chunk));
    }
    collect(stream.finish());
    (text, findings)
}

fn boundaries(text: &str) -> Vec<usize> {
    (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect()
}

#[test]
fn two_chunks_find_what_the_whole_text_finds_at_every_split() {
    for scanner in [scanner(), number_scanner()] {
        for text in texts() {
            let whole = scanner.find(&text);
            for split in boundaries(&text) {
                let (released, found) = stream(&scanner, &[&text[..split], &text[split..]]);
                assert_eq!(released, text);
                assert_eq!(found, whole, "split at {split} of {text:?}");
            }
        }
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % bound.max(1)
    }
}

#[test]
fn many_small_chunks_find_what_the_whole_text_finds() {
    for scanner in [scanner(), number_scanner()] {
        let mut rng = Rng(0x5EED_0FD1);
        let texts = texts();
        // Long texts too: several groups one after another.
        let long: Vec<String> = texts.chunks(7).map(|group| group.join(" ")).collect();
        for text in texts.iter().chain(&long) {
            let whole = scanner.find(text);
            let cuts = boundaries(text);
            for _ in 0..20 {
                let mut chunks = Vec::new();
                let mut start = 0;
                while start < text.len() {
                    let at = cuts.partition_point(|&c| c <= start);
                    let end = cuts[(at + rng.below(12)).min(cuts.len() - 1)];
                    chunks.push(&text[start..end]);
                    start = end;
                }
                let (released, found) = stream(&scanner, &chunks);
                assert_eq!(released, *text);
                assert_eq!(found, whole, "chunks {chunks:?}");
            }
        }
    }
}

#[test]
fn holds_back_only_what_could_still_match() {
    let scanner = scanner();
    let held = |text: &str| text[scanner.stable_len(text)..].to_owned();
    assert_eq!(held("my card is 4111 1111 11"), "4111 1111 11");
    assert_eq!(held("hello world, "), "");
    assert_eq!(held("hello world"), "world");
    assert_eq!(held("The meeting is about project"), "project");
    assert_eq!(held("write to jane.doe@exam"), "jane.doe@exam");
    assert_eq!(held("call +44 20 79"), "+44 20 79");
    // A complete card is held while a following digit could still make it a longer number.
    assert_eq!(held("card 4111111111111111"), "4111111111111111");
    assert_eq!(held("card 4111111111111111 "), "4111111111111111 ");
    assert_eq!(held("card 4111111111111111. Next"), "Next");
    assert_eq!(held("card 4111111111111111."), "4111111111111111.");
    assert_eq!(held("no digits here; nothing to hold.\n"), "");
    let numbers = number_scanner();
    let held = |text: &str| text[numbers.stable_len(text)..].to_owned();
    assert_eq!(held("card 4111111111111111."), "4111111111111111.");
    assert_eq!(held("card 4111111111111111.\n"), "");
    assert_eq!(held("words end here and hold nothing"), "");
}

#[test]
fn a_card_split_across_chunks_is_found_and_a_longer_run_is_not_a_card() {
    let scanner = scanner();
    let (_, found) = stream(&scanner, &["pay with 4111 11", "11 1111 1111 today"]);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].detector,
        DetectorId::Builtin(Detector::PaymentCard)
    );
    assert_eq!(found[0].range, 9..28);
    let (_, found) = stream(&scanner, &["number 4111111111111111", "2 is not a card"]);
    assert!(found.is_empty(), "{found:?}");
}

/// Pushes an opened private key block and `lines` of body until the cap forces a release.
fn release_past_the_cap(opening: &str, line: &str) -> Released {
    let scanner = scanner();
    let mut stream = StreamScanner::new(Arc::clone(&scanner));
    let first = stream.push(&format!("here: {opening}"));
    assert_eq!(first.text, "here: ");
    for _ in 0..(2 * MAX_HOLD / line.len()) {
        let released = stream.push(line);
        assert!(stream.held().len() <= MAX_HOLD);
        if !released.text.is_empty() {
            assert!(released.text.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
            return released;
        }
    }
    panic!("nothing released past the cap");
}

#[test]
fn an_unterminated_private_key_is_released_and_reported_past_the_cap() {
    // As in a JSON string (an SSE event): the whole body so far is the finding, cut at the cap.
    let escaped = release_past_the_cap(
        "-----BEGIN RSA PRIVATE KEY-----\\n",
        &format!("{}\\n", "A".repeat(62)),
    );
    assert_eq!(escaped.findings.len(), 1);
    assert_eq!(escaped.findings[0].range, 0..escaped.text.len());
    assert_eq!(
        escaped.findings[0].secret_kind,
        Some(sluice_dlp::secrets::SecretKind::PrivateKey)
    );
    // Raw lines: the secrets pattern of a block cut short stops at whitespace, so the finding is
    // the BEGIN line, as `secrets::find` reports it in a whole text.
    let raw = release_past_the_cap(
        "-----BEGIN RSA PRIVATE KEY-----\n",
        &format!("{}\n", "A".repeat(63)),
    );
    assert_eq!(raw.findings.len(), 1);
    assert_eq!(
        raw.findings[0].range,
        0.."-----BEGIN RSA PRIVATE KEY-----".len()
    );
}
