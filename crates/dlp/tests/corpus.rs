//! Precision and recall of every built-in detector over `tests/corpus/<detector>.txt`.
//!
//! Each file holds `+` lines with values marked `⟦like this⟧` and `-` lines of near misses.
//! Every line of every file is scanned with all built-in detectors enabled, so a detector's
//! false positives on another detector's lines count too. A finding is a true positive only if
//! its range is exactly a marked value of its own detector. Run with `--nocapture` for the table.

#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers may unwrap and panic"
)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use sluice_dlp::{Detector, DetectorId, Scanner};

const PRECISION_FLOOR: f64 = 0.95;
const RECALL_FLOOR: f64 = 0.9;
const MIN_LINES: usize = 20;

struct Line {
    file: Detector,
    positive: bool,
    text: String,
    marked: Vec<Range<usize>>,
}

/// `text` without its `⟦` `⟧` marks, and the marked ranges.
fn unmark(marked_text: &str) -> (String, Vec<Range<usize>>) {
    let mut text = String::new();
    let mut ranges = Vec::new();
    let mut rest = marked_text;
    while let Some(open) = rest.find("⟦") {
        text.push_str(&rest[..open]);
        let after = &rest[open + "⟦".len()..];
        let close = after.find("⟧").expect("unclosed mark");
        let start = text.len();
        text.push_str(&after[..close]);
        ranges.push(start..text.len());
        rest = &after[close + "⟧".len()..];
    }
    text.push_str(rest);
    (text, ranges)
}

fn load() -> Vec<Line> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut lines = Vec::new();
    for detector in Detector::ALL {
        let path = dir.join(format!("{}.txt", detector.as_str()));
        let content = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for raw in content
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (sign, body) = raw.split_at(2);
            let positive = match sign {
                "+ " => true,
                "- " => false,
                _ => panic!("{path:?}: line must start with `+ ` or `- `: {raw}"),
            };
            let (text, marked) = unmark(body);
            assert_eq!(positive, !marked.is_empty(), "{path:?}: {raw}");
            lines.push(Line {
                file: detector,
                positive,
                text,
                marked,
            });
        }
    }
    lines
}

#[derive(Default, Debug)]
struct Score {
    true_positives: usize,
    false_positives: usize,
    false_negatives: usize,
    positives: usize,
    negatives: usize,
}

impl Score {
    fn precision(&self) -> f64 {
        let found = self.true_positives + self.false_positives;
        if found == 0 {
            0.0
        } else {
            self.true_positives as f64 / found as f64
        }
    }
    fn recall(&self) -> f64 {
        let expected = self.true_positives + self.false_negatives;
        if expected == 0 {
            0.0
        } else {
            self.true_positives as f64 / expected as f64
        }
    }
}

#[test]
fn every_detector_meets_its_precision_and_recall_floors() {
    let scanner = Scanner::new(&Detector::ALL, Vec::new()).unwrap();
    let lines = load();
    let mut scores: BTreeMap<&str, Score> = BTreeMap::new();
    let mut misses = Vec::new();
    for line in &lines {
        let score = scores.entry(line.file.as_str()).or_default();
        if line.positive {
            score.positives += 1
        } else {
            score.negatives += 1
        }
        let findings = scanner.find(&line.text);
        for marked in &line.marked {
            let found = findings
                .iter()
                .any(|f| f.detector == DetectorId::Builtin(line.file) && f.range == *marked);
            let score = scores.entry(line.file.as_str()).or_default();
            if found {
                score.true_positives += 1;
            } else {
                score.false_negatives += 1;
                misses.push(format!(
                    "missed {}: {:?} in {:?}",
                    line.file,
                    &line.text[marked.clone()],
                    line.text
                ));
            }
        }
        for finding in &findings {
            let DetectorId::Builtin(detector) = finding.detector else {
                unreachable!()
            };
            let expected = detector == line.file && line.marked.contains(&finding.range);
            if !expected {
                scores.entry(detector.as_str()).or_default().false_positives += 1;
                misses.push(format!(
                    "false {detector}: {:?} in {:?}",
                    &line.text[finding.range.clone()],
                    line.text
                ));
            }
        }
    }

    println!(
        "{:<18} {:>4} {:>4} {:>4} {:>4} {:>4} {:>9} {:>7}",
        "detector", "+", "-", "tp", "fp", "fn", "precision", "recall"
    );
    for (name, s) in &scores {
        println!(
            "{name:<18} {:>4} {:>4} {:>4} {:>4} {:>4} {:>9.3} {:>7.3}",
            s.positives,
            s.negatives,
            s.true_positives,
            s.false_positives,
            s.false_negatives,
            s.precision(),
            s.recall()
        );
    }
    for miss in &misses {
        println!("{miss}");
    }
    for detector in Detector::ALL {
        let s = &scores[detector.as_str()];
        assert!(
            s.positives >= MIN_LINES && s.negatives >= MIN_LINES,
            "{detector}: corpus too small: {s:?}"
        );
        assert!(
            s.precision() >= PRECISION_FLOOR,
            "{detector}: precision {:.3} below {PRECISION_FLOOR}",
            s.precision()
        );
        assert!(
            s.recall() >= RECALL_FLOOR,
            "{detector}: recall {:.3} below {RECALL_FLOOR}",
            s.recall()
        );
    }
}
