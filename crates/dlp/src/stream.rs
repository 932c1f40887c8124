//! Scanning text that arrives in chunks: [`Scanner::stable_len`] says how much of what has
//! arrived can be released, and [`StreamScanner`] does the bookkeeping (context, offsets).
//!
//! A tail is held back when some detector could still match there. That is decided by one lazy
//! DFA over every enabled pattern, with look-around assertions removed (a superset of the real
//! patterns, so it never holds too little) and every pattern allowed to match ([`MatchKind::All`]):
//! a start position is *open* when the anchored DFA run from it to the end of the text is not
//! dead. Candidates too close to the end for their checks' look-ahead are held as well, and a
//! cut never falls inside a candidate.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use regex_automata::hybrid::LazyStateID;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use regex_syntax::hir::{Class, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Repetition};

use crate::DlpError;
use crate::detector::Finding;
use crate::rules::LOOKAROUND_CHARS;
use crate::scanner::Scanner;

/// The most a stream holds back, in bytes. A match longer than this (in practice only a private
/// key block, whose `BEGIN` line opens a match that runs to its `END`) is released in part once
/// it has grown past the cap: the released part is reported as a finding ending at the cut, and
/// the rest of the block is scanned as ordinary text. 16 KiB holds an RSA-8192 PEM block.
pub const MAX_HOLD: usize = 16 * 1024;

/// Context kept before the unreleased text so checks and `\b` see the characters before a
/// candidate: enough bytes for [`LOOKAROUND_CHARS`] characters of up to four bytes.
const CONTEXT_BYTES: usize = 4 * LOOKAROUND_CHARS;

/// Whether a suffix of a text could still be the start of a match.
#[derive(Debug)]
pub(crate) struct Liveness {
    dfa: DFA,
    /// Lazy DFA caches, one per concurrent caller; a caller without one builds one.
    caches: Mutex<Vec<Cache>>,
}

impl Liveness {
    pub(crate) fn new(shapes: &[Hir]) -> Result<Liveness, DlpError> {
        let shapes: Vec<Hir> = shapes.iter().map(without_lookaround).collect();
        let nfa = thompson::Compiler::new()
            .configure(thompson::Config::new().which_captures(thompson::WhichCaptures::None))
            .build_many_from_hir(&shapes)
            .map_err(|source| DlpError::StreamAutomaton {
                source: Box::new(source),
            })?;
        let dfa = DFA::builder()
            .configure(DFA::config().match_kind(MatchKind::All))
            .build_from_nfa(nfa)
            .map_err(|source| DlpError::StreamDfa {
                source: Box::new(source),
            })?;
        Ok(Liveness {
            dfa,
            caches: Mutex::new(Vec::new()),
        })
    }

    /// The first char boundary `p >= window_start` whose anchored run to the end of `text` is
    /// not dead, or `text.len()` if there is none.
    pub(crate) fn first_open_start(&self, text: &str, window_start: usize) -> usize {
        let mut cache = self
            .caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| self.dfa.create_cache());
        let open = self.first_open(&mut cache, text, window_start);
        self.caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(cache);
        open
    }

    fn first_open(&self, cache: &mut Cache, text: &str, window_start: usize) -> usize {
        let bytes = text.as_bytes();
        let end = bytes.len();
        let anchored = start::Config::new().anchored(Anchored::Yes);
        let Ok(mut start) = self.dfa.start_state(cache, &anchored) else {
            return window_start;
        };
        // The state an earlier run had on reaching each position. Every earlier run died, and
        // a DFA's future depends only on state and position, so meeting one of these states
        // there means this run dies too: runs from successive starts cost about one pass.
        let mut seen: Vec<Option<LazyStateID>> = vec![None; end.saturating_sub(window_start) + 1];
        let mut clears = cache.clear_count();
        for first in window_start..end {
            if !text.is_char_boundary(first) {
                continue;
            }
            let mut state = start;
            let mut at = first;
            let open = loop {
                let Some(&byte) = bytes.get(at) else {
                    break true;
                };
                state = match self.dfa.next_state(cache, state, byte) {
                    Ok(next) => next,
                    // The cache gave up: assume the worst, hold from here.
                    Err(_) => break true,
                };
                at += 1;
                if state.is_dead() {
                    break false;
                }
                if state.is_quit() || at == end {
                    break true;
                }
                if cache.clear_count() != clears {
                    // A cleared cache renumbers its states: forget the old ones.
                    clears = cache.clear_count();
                    seen.fill(None);
                    match self.dfa.start_state(cache, &anchored) {
                        Ok(renumbered) => start = renumbered,
                        Err(_) => break true,
                    }
                }
                let Some(slot) = seen.get_mut(at - window_start) else {
                    break true;
                };
                if *slot == Some(state) {
                    break false;
                }
                *slot = Some(state);
            };
            if open {
                return first;
            }
        }
        end
    }
}

/// `hir` with every look-around assertion (`\b`, `^`, `$`, ...) replaced by the empty pattern:
/// it matches everything `hir` matches, and more.
fn without_lookaround(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Look(_) => Hir::empty(),
        HirKind::Capture(capture) => without_lookaround(&capture.sub),
        HirKind::Repetition(repetition) => Hir::repetition(Repetition {
            min: repetition.min,
            max: repetition.max,
            greedy: repetition.greedy,
            sub: Box::new(without_lookaround(&repetition.sub)),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(without_lookaround).collect()),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.iter().map(without_lookaround).collect())
        }
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) => hir.clone(),
    }
}

/// The words of a word list as one pattern, ASCII letters in either case (as aho-corasick
/// matches them).
pub(crate) fn word_list_shape(words: &[String]) -> Hir {
    let word = |word: &String| {
        Hir::concat(
            word.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        let (lower, upper) = (c.to_ascii_lowercase(), c.to_ascii_uppercase());
                        Hir::class(Class::Unicode(ClassUnicode::new([
                            ClassUnicodeRange::new(lower, lower),
                            ClassUnicodeRange::new(upper, upper),
                        ])))
                    } else {
                        Hir::literal(c.to_string().into_bytes())
                    }
                })
                .collect(),
        )
    };
    Hir::alternation(words.iter().map(word).collect())
}

fn ceil_char_boundary(text: &str, at: usize) -> usize {
    (at..=text.len())
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(text.len())
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(0)
}

/// Whether the checks' look-ahead past `end` is all known: enough characters follow it.
fn lookahead_known(text: &str, end: usize) -> bool {
    text.get(end..)
        .is_some_and(|rest| rest.chars().take(LOOKAROUND_CHARS).count() == LOOKAROUND_CHARS)
}

impl Scanner {
    /// How much of `text`, a stream's tail that may continue, is settled: the longest prefix
    /// `text[..s]` such that, whatever is appended, every finding of the longer text either
    /// ends by `s` (and is then one of [`Scanner::find`]`(text)`) or starts at `s` or later.
    /// The caller may act on the findings ending by `s`, release `text[..s]` and keep the rest
    /// to scan with what comes next, with a few bytes of the released text before it as
    /// context: [`StreamScanner`] does exactly that.
    ///
    /// Held back, from its first byte, is any tail that is a prefix of some match (with
    /// `\b`-style assertions ignored): a trailing word could start an email or a listed word, a
    /// trailing digit run a card. So is a candidate that ends within two characters of the end
    /// (a following digit or letter could still invalidate or extend it), and any candidate a
    /// cut would split. Ordinary prose ending in whitespace or punctuation is released whole.
    ///
    /// The one exception: at most [`MAX_HOLD`] bytes are held; see there.
    pub fn stable_len(&self, text: &str) -> usize {
        let scan = self.scan(text, 0);
        self.settled_until(text, 0, &scan.candidates)
    }

    /// [`Scanner::stable_len`] of `text[from..]` with `text[..from]` released already; never
    /// less than `from`.
    pub(crate) fn settled_until(
        &self,
        text: &str,
        from: usize,
        candidates: &[Range<usize>],
    ) -> usize {
        let end = text.len();
        let floor = ceil_char_boundary(text, from.max(end.saturating_sub(MAX_HOLD)));
        let mut settled = self
            .liveness
            .as_ref()
            .map_or(end, |liveness| liveness.first_open_start(text, floor));
        loop {
            let lowered = candidates
                .iter()
                .filter(|candidate| {
                    candidate.start < settled
                        && (candidate.end > settled || !lookahead_known(text, candidate.end))
                })
                .map(|candidate| candidate.start)
                .min();
            match lowered {
                Some(start) if start >= floor => settled = start,
                Some(_) => {
                    settled = floor;
                    break;
                }
                None => break,
            }
        }
        settled.max(floor)
    }
}

/// What one call to a [`StreamScanner`] releases: the next piece of the stream and the findings
/// in it, their ranges relative to `text`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    /// Byte offset of `text` in the whole stream.
    pub offset: usize,
    pub text: String,
    pub findings: Vec<Finding>,
}

/// Scans a stream chunk by chunk, releasing only what is settled ([`Scanner::stable_len`]).
///
/// Concatenating every [`Released::text`] gives the stream back, and the findings (shifted by
/// [`Released::offset`]) are exactly [`Scanner::find`] of the whole stream, however it was cut
/// into chunks, except around a match longer than [`MAX_HOLD`]. A finding may end at the end of
/// a release, never continue into the next.
#[derive(Debug)]
pub struct StreamScanner {
    scanner: Arc<Scanner>,
    /// Released context, then the held tail from `held_from` on.
    buffer: String,
    held_from: usize,
    /// Stream offset of `buffer[held_from..]`.
    offset: usize,
}

impl StreamScanner {
    pub fn new(scanner: Arc<Scanner>) -> StreamScanner {
        StreamScanner {
            scanner,
            buffer: String::new(),
            held_from: 0,
            offset: 0,
        }
    }

    /// Takes the next chunk and releases what is now settled (possibly nothing).
    pub fn push(&mut self, chunk: &str) -> Released {
        self.buffer.push_str(chunk);
        self.release(Until::Settled)
    }

    /// The stream ended: releases everything held.
    pub fn finish(&mut self) -> Released {
        self.release(Until::End)
    }

    /// What is held back, waiting for more text.
    pub fn held(&self) -> &str {
        self.buffer.get(self.held_from..).unwrap_or_default()
    }

    fn release(&mut self, until: Until) -> Released {
        let from = self.held_from;
        let scan = self.scanner.scan(&self.buffer, from);
        let cut = match until {
            Until::Settled => self
                .scanner
                .settled_until(&self.buffer, from, &scan.candidates),
            Until::End => self.buffer.len(),
        };
        let findings = scan
            .findings
            .into_iter()
            .filter(|finding| finding.range.start < cut)
            .map(|mut finding| {
                // Only a match longer than MAX_HOLD is cut short here.
                finding.range = finding.range.start - from..finding.range.end.min(cut) - from;
                finding
            })
            .collect();
        let released = Released {
            offset: self.offset,
            text: self.buffer.get(from..cut).unwrap_or_default().to_owned(),
            findings,
        };
        self.offset += cut - from;
        let context_from = floor_char_boundary(&self.buffer, cut.saturating_sub(CONTEXT_BYTES));
        self.buffer.drain(..context_from);
        self.held_from = cut - context_from;
        released
    }
}

#[derive(Clone, Copy)]
enum Until {
    Settled,
    End,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(range: Range<usize>) -> Vec<Range<usize>> {
        vec![range]
    }

    // The lazy DFA reports a match one byte late, so a run ending right after a candidate is
    // rarely dead yet; these rules must hold on their own regardless.
    #[test]
    fn holds_a_candidate_whose_lookahead_is_unknown_and_never_cuts_one() {
        let scanner = Scanner::new(&[], Vec::new()).unwrap();
        assert!(scanner.liveness.is_none());
        let text = "abc 123.";
        assert_eq!(scanner.settled_until(text, 0, &one(4..7)), 4);
        assert_eq!(scanner.settled_until("abc 123.  ", 0, &one(4..7)), 10);
        // A candidate the cut would split moves the cut to its start, and so on back.
        assert_eq!(
            scanner.settled_until("abcdefghij  ", 0, &[2..6, 5..10, 9..11]),
            2
        );
        assert_eq!(scanner.settled_until("abcdefghij  ", 3, &one(4..11)), 4);
    }

    #[test]
    fn never_holds_more_than_the_cap() {
        let scanner = Scanner::new(&[], Vec::new()).unwrap();
        let text = "x".repeat(MAX_HOLD + 10);
        assert_eq!(scanner.settled_until(&text, 0, &one(0..text.len())), 10);
    }

    #[test]
    fn lookaround_removal_keeps_every_match() {
        let shape = without_lookaround(&regex_syntax::parse(r"\bab$|^c\b").unwrap());
        assert_eq!(shape, regex_syntax::parse("ab|c").unwrap());
    }
}
