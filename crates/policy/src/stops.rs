//! The stop-sequence guard's text logic: finding a request's stop sequences in user content,
//! escaping them, and cutting an answer (whole or streamed) at the first stop sequence the
//! gateway enforces itself.
//!
//! The pipeline's hook (`sluice_pipeline::hooks::stops`) applies these to requests, answers and
//! streams and records what it did; `docs/stop-sequences.md` is the reference.

/// What the guard does with user content that contains one of the request's stop sequences
/// (`[stop_sequences] on_collision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCollision {
    /// Sent unchanged; recorded, and named in the `x-sluice-policy` header.
    #[default]
    Warn,
    /// Each occurrence is broken with a zero-width space after its first character.
    Escape,
    /// The request is refused, naming the stop sequence and where it was found.
    Refuse,
}

impl OnCollision {
    pub fn parse(text: &str) -> Option<OnCollision> {
        match text {
            "warn" => Some(OnCollision::Warn),
            "escape" => Some(OnCollision::Escape),
            "refuse" => Some(OnCollision::Refuse),
            _ => None,
        }
    }
}

/// U+200B ZERO WIDTH SPACE: invisible to a reader, but no stop sequence matches across it.
pub const ESCAPE: char = '\u{200B}';

/// How many times `sequence` occurs in `text`, overlapping occurrences included.
pub fn occurrences(text: &str, sequence: &str) -> usize {
    if sequence.is_empty() {
        return 0;
    }
    (0..text.len())
        .filter(|&i| text.is_char_boundary(i) && text[i..].starts_with(sequence))
        .count()
}

/// `text` with a zero-width space after the first character of every occurrence of
/// `sequence` (overlapping ones included), so that it no longer appears verbatim. `None` when
/// nothing needed escaping, or when `sequence` is a single character (which no insertion can
/// break).
pub fn escape(text: &str, sequence: &str) -> Option<String> {
    let mut chars = sequence.chars();
    chars.next()?;
    if chars.next().is_none() || !text.contains(sequence) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 3 * occurrences(text, sequence));
    for (i, ch) in text.char_indices() {
        out.push(ch);
        if text[i..].starts_with(sequence) {
            out.push(ESCAPE);
        }
    }
    Some(out)
}

/// The earliest occurrence of any of `sequences` in `text`: its byte offset and which one
/// (the longest, when several start there).
pub fn first_match<'a>(text: &str, sequences: &'a [String]) -> Option<(usize, &'a str)> {
    sequences
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s.as_str())))
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.len().cmp(&a.1.len())))
}

/// Cuts one streamed choice's text at the first of some stop sequences, holding back only a
/// tail that may be the start of one.
#[derive(Debug, Clone, Default)]
pub struct StopCutter {
    held: String,
    /// The sequence that ended the text, once one did.
    matched: Option<String>,
}

impl StopCutter {
    /// Takes the next text delta; returns the text that can go out now. Once a stop sequence
    /// is found, the text before it goes out and every later call returns nothing.
    pub fn push(&mut self, text: &str, sequences: &[String]) -> String {
        if self.matched.is_some() {
            return String::new();
        }
        self.held.push_str(text);
        if let Some((at, sequence)) = first_match(&self.held, sequences) {
            self.matched = Some(sequence.to_owned());
            let mut out = std::mem::take(&mut self.held);
            out.truncate(at);
            return out;
        }
        let keep = held_tail(&self.held, sequences);
        let tail = self.held.split_off(self.held.len() - keep);
        std::mem::replace(&mut self.held, tail)
    }

    /// The text ends (a tool call or the end of the choice): whatever is held goes out.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The sequence that ended the text, if one did.
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }
}

/// The length in bytes of the longest tail of `text` that is a proper start of one of
/// `sequences` (always on a character boundary).
fn held_tail(text: &str, sequences: &[String]) -> usize {
    let longest = sequences.iter().map(String::len).max().unwrap_or(0);
    let from = text.len().saturating_sub(longest.saturating_sub(1));
    (from..text.len())
        .filter(|&i| text.is_char_boundary(i))
        .find(|&i| {
            let tail = &text[i..];
            sequences
                .iter()
                .any(|s| s.len() > tail.len() && s.starts_with(tail))
        })
        .map_or(0, |i| text.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn occurrences_count_overlaps() {
        assert_eq!(occurrences("aaaa", "aa"), 3);
        assert_eq!(occurrences("say END and END", "END"), 2);
        assert_eq!(occurrences("é END", "END"), 1);
        assert_eq!(occurrences("x", ""), 0);
    }

    #[test]
    fn escaping_breaks_every_occurrence() {
        let escaped = escape("stop at END, or at END.", "END").unwrap();
        assert_eq!(escaped, "stop at E\u{200B}ND, or at E\u{200B}ND.");
        assert!(!escaped.contains("END"));
        let overlapping = escape("aaaa", "aa").unwrap();
        assert!(!overlapping.contains("aa"), "{overlapping:?}");
        assert_eq!(overlapping.replace(ESCAPE, ""), "aaaa");
        assert_eq!(escape("no match", "END"), None);
        // A single character cannot be broken up.
        assert_eq!(escape("a\nb", "\n"), None);
        let unicode = escape("ça ###é### va", "###é###").unwrap();
        assert!(!unicode.contains("###é###"));
    }

    #[test]
    fn the_first_match_wins_and_the_longest_at_one_place() {
        let s = seqs(&["STOP", "ST", "HALT"]);
        assert_eq!(first_match("go HALT then STOP", &s), Some((3, "HALT")));
        assert_eq!(first_match("go STOP", &s), Some((3, "STOP")));
        assert_eq!(first_match("nothing", &s), None);
    }

    #[test]
    fn a_stream_is_cut_at_a_stop_sequence_split_across_deltas() {
        let s = seqs(&["<END>"]);
        let mut cut = StopCutter::default();
        assert_eq!(cut.push("hello <", &s), "hello ");
        assert_eq!(cut.push("E", &s), "");
        assert_eq!(cut.push("N", &s), "");
        assert_eq!(cut.push("D> more", &s), "");
        assert_eq!(cut.matched(), Some("<END>"));
        assert_eq!(cut.push("ignored", &s), "");
        assert_eq!(cut.flush(), "");
    }

    #[test]
    fn a_false_start_is_released() {
        let s = seqs(&["<END>"]);
        let mut cut = StopCutter::default();
        assert_eq!(cut.push("a <E", &s), "a ");
        assert_eq!(cut.push("x> b", &s), "<Ex> b");
        assert_eq!(cut.push("c <", &s), "c ");
        assert_eq!(cut.flush(), "<");
        assert_eq!(cut.matched(), None);
    }

    #[test]
    fn held_tails_stay_on_character_boundaries() {
        let s = seqs(&["éé!"]);
        let mut cut = StopCutter::default();
        assert_eq!(cut.push("xé", &s), "x");
        assert_eq!(cut.push("é", &s), "");
        assert_eq!(cut.push("!", &s), "");
        assert_eq!(cut.matched(), Some("éé!"));
    }
}
