//! [`Scanner`]: the enabled detectors compiled once, then [`Scanner::find`] over whole texts.
//!
//! One [`RegexSet`] pass says which rules match anywhere; only those run their own search, whose
//! candidates are checked (`rules`) and merged by the tie rule. Word lists run one aho-corasick
//! automaton each. Built-in patterns use ASCII word boundaries so the fast DFAs run on any text
//! (see [`ascii_word_boundaries`]). Holding back the tail of a stream is in `stream`.

use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};
use regex::{Regex, RegexSet};
use regex_syntax::hir::Hir;

use crate::DlpError;
use crate::detector::{Custom, Detector, DetectorId, Finding};
use crate::rules::{self, Validator};
use crate::secrets::{self, SecretKind};
use crate::stream::Liveness;

/// The enabled detectors, compiled. Cheap to share (`Arc<Scanner>`); every method takes `&self`
/// and may run on many threads at once.
#[derive(Debug)]
pub struct Scanner {
    rules: Vec<Rule>,
    /// One pattern per rule, same order: which rules need a search at all.
    set: RegexSet,
    word_lists: Vec<WordList>,
    /// Whether a tail could still become a match; `None` when no detector is enabled.
    pub(crate) liveness: Option<Liveness>,
}

#[derive(Debug)]
struct Rule {
    detector: DetectorId,
    /// Tie-break rank of the detector: lower wins.
    rank: usize,
    regex: Regex,
    check: Check,
}

#[derive(Debug)]
enum Check {
    /// Custom patterns: every match is a finding.
    None,
    Validator(Validator),
    /// The combined secrets pattern (ASCII boundaries): a match whose Unicode edges hold (see
    /// [`unicode_edges_hold`]) is a finding, its kind from the captures.
    SecretKind,
}

#[derive(Debug)]
struct WordList {
    detector: DetectorId,
    rank: usize,
    automaton: AhoCorasick,
    /// Per word: whether it starts, and ends, with a word character (so needs a boundary there).
    edges: Vec<(bool, bool)>,
}

/// What one pass over a text yields: every candidate the searches produced, valid or not (the
/// streaming hold-back needs them), and the findings.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) candidates: Vec<Range<usize>>,
    pub(crate) findings: Vec<Finding>,
}

/// A word character as the regex's Unicode `\w` has it.
fn is_word(c: char) -> bool {
    regex_syntax::is_word_character(c)
}

impl Scanner {
    /// Compiles the built-in `detectors` (order and repeats do not matter) and the `custom`
    /// ones (their order is their tie-break order, after every built-in).
    ///
    /// # Errors
    ///
    /// A custom detector with an empty or duplicate name (built-in names are taken), a pattern
    /// that does not compile or can match the empty string, or a word list without words or
    /// with an empty word.
    pub fn new(detectors: &[Detector], custom: Vec<Custom>) -> Result<Scanner, DlpError> {
        let mut rules = Vec::new();
        let mut word_lists = Vec::new();
        let mut open_shapes: Vec<Hir> = Vec::new();

        for (rank, detector) in Detector::ALL.into_iter().enumerate() {
            if !detectors.contains(&detector) {
                continue;
            }
            if detector == Detector::Secret {
                let regex =
                    compile_builtin(detector, &ascii_word_boundaries(secrets::DETECTOR.as_str()))?;
                open_shapes.push(parse_builtin(regex.as_str())?);
                rules.push(Rule {
                    detector: DetectorId::Builtin(detector),
                    rank,
                    regex,
                    check: Check::SecretKind,
                });
                continue;
            }
            for (pattern, validator) in rules::builtin(detector) {
                let regex = compile_builtin(detector, &ascii_word_boundaries(pattern))?;
                open_shapes.push(parse_builtin(regex.as_str())?);
                rules.push(Rule {
                    detector: DetectorId::Builtin(detector),
                    rank,
                    regex,
                    check: Check::Validator(*validator),
                });
            }
        }

        let mut names: Vec<&str> = Detector::ALL.iter().map(|d| d.as_str()).collect();
        for (index, definition) in custom.iter().enumerate() {
            let name = definition.name();
            if name.is_empty() || names.contains(&name) {
                return Err(DlpError::DuplicateName {
                    name: name.to_owned(),
                });
            }
            names.push(name);
            let detector = DetectorId::Custom(Arc::from(name));
            let rank = Detector::ALL.len() + index;
            match definition {
                Custom::Pattern { pattern, .. } => {
                    let regex = Regex::new(pattern).map_err(|source| DlpError::InvalidPattern {
                        name: name.to_owned(),
                        source: Box::new(source),
                    })?;
                    let hir = regex_syntax::parse(pattern).map_err(|source| {
                        DlpError::UnsupportedPattern {
                            name: name.to_owned(),
                            source: Box::new(source),
                        }
                    })?;
                    if hir.properties().minimum_len() == Some(0) {
                        return Err(DlpError::PatternMatchesEmpty {
                            name: name.to_owned(),
                        });
                    }
                    open_shapes.push(hir);
                    rules.push(Rule {
                        detector,
                        rank,
                        regex,
                        check: Check::None,
                    });
                }
                Custom::Words { words, .. } => {
                    if words.is_empty() || words.iter().any(|word| word.is_empty()) {
                        return Err(DlpError::EmptyWord {
                            name: name.to_owned(),
                        });
                    }
                    let automaton = AhoCorasickBuilder::new()
                        .ascii_case_insensitive(true)
                        .match_kind(MatchKind::Standard)
                        .build(words)
                        .map_err(|source| DlpError::WordList {
                            name: name.to_owned(),
                            source,
                        })?;
                    let edges = words
                        .iter()
                        .map(|word| {
                            (
                                word.chars().next().is_some_and(is_word),
                                word.chars().next_back().is_some_and(is_word),
                            )
                        })
                        .collect();
                    open_shapes.push(crate::stream::word_list_shape(words));
                    word_lists.push(WordList {
                        detector,
                        rank,
                        automaton,
                        edges,
                    });
                }
            }
        }

        let set =
            RegexSet::new(rules.iter().map(|rule| rule.regex.as_str())).map_err(|source| {
                DlpError::PatternSet {
                    source: Box::new(source),
                }
            })?;
        let liveness = if open_shapes.is_empty() {
            None
        } else {
            Some(Liveness::new(&open_shapes)?)
        };
        Ok(Scanner {
            rules,
            set,
            word_lists,
            liveness,
        })
    }

    /// Every finding in `text`, sorted by start, none overlapping another.
    ///
    /// Tie rule, when candidates of different detectors overlap: the one that starts first
    /// wins; at the same start the longer; at the same range the detector first in
    /// [`Detector::ALL`], custom detectors after every built-in in the order given to
    /// [`Scanner::new`]. A candidate that loses is dropped whole, not trimmed.
    ///
    /// Linear in `text`: one pass of the combined set, then one search per detector that
    /// matched somewhere, each checking candidates in constant time.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        self.scan(text, 0).findings
    }

    /// Candidates and findings of `text[from..]`, with `text[..from]` as context (word
    /// boundaries, a check's look-behind): what [`Scanner::find`] of the whole text would
    /// report from `from` on, provided no candidate of it straddles `from`.
    pub(crate) fn scan(&self, text: &str, from: usize) -> Scan {
        let mut scan = Scan::default();
        let mut ranked: Vec<(usize, Finding)> = Vec::new();
        if !self.rules.is_empty() && from <= text.len() {
            for index in self.set.matches_at(text, from).iter() {
                let Some(rule) = self.rules.get(index) else {
                    continue;
                };
                rule.search(text, from, &mut scan.candidates, &mut ranked);
            }
        }
        for list in &self.word_lists {
            list.search(text, from, &mut scan.candidates, &mut ranked);
        }
        ranked.sort_by(|(rank_a, a), (rank_b, b)| {
            a.range
                .start
                .cmp(&b.range.start)
                .then(b.range.end.cmp(&a.range.end))
                .then(rank_a.cmp(rank_b))
        });
        let mut covered_until = 0;
        for (_, finding) in ranked {
            if finding.range.start >= covered_until {
                covered_until = finding.range.end;
                scan.findings.push(finding);
            }
        }
        scan
    }
}

impl Rule {
    /// Leftmost-first matches from `from`, each search resuming where the previous candidate
    /// ended, whether or not it passed its check.
    fn search(
        &self,
        text: &str,
        from: usize,
        candidates: &mut Vec<Range<usize>>,
        found: &mut Vec<(usize, Finding)>,
    ) {
        let mut at = from;
        while at <= text.len() {
            let (range, secret_kind, valid) = match &self.check {
                Check::SecretKind => {
                    let Some(captures) = self.regex.captures_at(text, at) else {
                        break;
                    };
                    let Some(whole) = captures.get(0) else {
                        break;
                    };
                    let kind = secrets::kind_of(&captures);
                    let range = whole.range();
                    if !kind.is_some_and(|kind| unicode_edges_hold(text, &range, kind)) {
                        // `secrets::find` has no match starting here, but may have one starting
                        // inside this candidate: search again from the next character.
                        candidates.push(range.clone());
                        at = next_char_boundary(text, range.start);
                        continue;
                    }
                    (range, kind, true)
                }
                Check::Validator(validator) => {
                    let Some(found) = self.regex.find_at(text, at) else {
                        break;
                    };
                    (found.range(), None, validator(text, found.range()))
                }
                Check::None => {
                    let Some(found) = self.regex.find_at(text, at) else {
                        break;
                    };
                    (found.range(), None, true)
                }
            };
            // Patterns never match empty (checked at build), but never loop on one regardless.
            at = if range.is_empty() {
                next_char_boundary(text, range.end)
            } else {
                range.end
            };
            candidates.push(range.clone());
            if valid && !range.is_empty() {
                found.push((
                    self.rank,
                    Finding {
                        detector: self.detector.clone(),
                        range,
                        secret_kind,
                    },
                ));
            }
        }
    }
}

impl WordList {
    /// Every occurrence, overlapping ones included, that stands as a whole word.
    fn search(
        &self,
        text: &str,
        from: usize,
        candidates: &mut Vec<Range<usize>>,
        found: &mut Vec<(usize, Finding)>,
    ) {
        let input = Input::new(text).span(from.min(text.len())..text.len());
        for occurrence in self.automaton.find_overlapping_iter(input) {
            let range = occurrence.range();
            candidates.push(range.clone());
            let (starts_word, ends_word) = self
                .edges
                .get(occurrence.pattern().as_usize())
                .copied()
                .unwrap_or((true, true));
            let before = text
                .get(..range.start)
                .and_then(|head| head.chars().next_back());
            let after = text.get(range.end..).and_then(|tail| tail.chars().next());
            let joined_before = starts_word && before.is_some_and(is_word);
            let joined_after = ends_word && after.is_some_and(is_word);
            let whole_word = !joined_before && !joined_after;
            // A case-insensitive byte match could start inside a multi-byte character only if
            // a word did; words are whole strings, so ranges fall on char boundaries.
            if whole_word && text.is_char_boundary(range.start) && text.is_char_boundary(range.end)
            {
                found.push((
                    self.rank,
                    Finding {
                        detector: self.detector.clone(),
                        range,
                        secret_kind: None,
                    },
                ));
            }
        }
    }
}

/// `pattern` with Unicode word boundaries (`\b`) made ASCII ones. The regex engines' DFAs run
/// ASCII boundaries on any text but give up on Unicode ones at the first non-ASCII byte, and
/// fall back to a much slower engine. Built-in patterns only: their `\b`s all sit next to an
/// ASCII word character, where an ASCII boundary holds whenever a Unicode one does.
fn ascii_word_boundaries(pattern: &str) -> String {
    pattern.replace(r"\b", r"(?-u:\b)")
}

/// The Unicode boundaries of [`secrets::DETECTOR`] that [`ascii_word_boundaries`] relaxed: every
/// kind but a private key starts at one, an AWS key id also ends at one. With them, a match of
/// the relaxed pattern is exactly a match of `secrets::find`.
fn unicode_edges_hold(text: &str, range: &Range<usize>, kind: SecretKind) -> bool {
    let before = text
        .get(..range.start)
        .and_then(|head| head.chars().next_back());
    let after = text.get(range.end..).and_then(|tail| tail.chars().next());
    let starts = kind == SecretKind::PrivateKey || !before.is_some_and(is_word);
    let ends = kind != SecretKind::AwsAccessKey || !after.is_some_and(is_word);
    starts && ends
}

fn compile_builtin(detector: Detector, pattern: &str) -> Result<Regex, DlpError> {
    Regex::new(pattern).map_err(|source| DlpError::InvalidPattern {
        name: detector.as_str().to_owned(),
        source: Box::new(source),
    })
}

fn next_char_boundary(text: &str, at: usize) -> usize {
    (at + 1..=text.len())
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(text.len() + 1)
}

fn parse_builtin(pattern: &str) -> Result<Hir, DlpError> {
    regex_syntax::parse(pattern).map_err(|source| DlpError::UnsupportedPattern {
        name: pattern.to_owned(),
        source: Box::new(source),
    })
}
