//! The block-wide finders of the recognition: which lines of a block can hold a recognised format at all.
//!
//! A line is a candidate when it holds one of:
//! - a pair's separator before a value: `=` directly before a value (`loss=0.5`, `=nan`), `= ` or `: ` before one
//!   (`loss = 0.41`, `loss: 0.3`), a quoted key's colon (`'loss': `, `"loss": `, `"loss":0.3`), or the tab after
//!   a boosting round (`[3]\t`) – found with one `memchr3` for `:`, `=` and tab, each hit checked in place;
//! - a terminal escape or backspace (what a terminal shows may hold a pair the raw bytes do not) – one `memchr2`;
//! - a header of a multi-line format (`-- Epoch `, `***** `, `Validate metric`, `Test metric`) – one small
//!   Aho–Corasick search.
//!
//! Each finder keeps its next hit and is advanced only when the scan passed it, so a block is read about once by
//! each; a line no finder hits is not looked at. The same tests decide for a line on its own
//! ([`Finders::is_candidate`]), so block and line-by-line scanning see the same candidates.
//!
//! # Performance
//! One Aho–Corasick (Teddy) search over the 63 three-byte anchors these tests stand for cost a third of the
//! recognition's time on the generated logs of `benches/throughput.rs`; the `memchr3` with its checks costs half
//! of that, the rare headers' search a tenth (`docs/performance.md`).

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// No further hit.
pub(super) const NO_HIT: usize = usize::MAX;

/// The headers of the multi-line formats (scikit-learn's SGD epochs, Hugging Face's metrics blocks, Lightning's
/// results tables), whose lines hold no pair.
const HEADERS: [&str; 4] = ["-- Epoch ", "***** ", "Validate metric", "Test metric"];

/// A value starts at `s[at..]`: a digit, `.`, a sign, or `nan`/`NaN`/`inf`/`Inf`.
fn value_start(s: &[u8], at: usize) -> bool {
    match s.get(at) {
        Some(b'0'..=b'9' | b'.' | b'-' | b'+') => true,
        Some(b'n' | b'N' | b'i' | b'I') => {
            matches!(s.get(at..at + 3), Some(b"nan" | b"NaN" | b"inf" | b"Inf"))
        }
        _ => false,
    }
}

/// Whether the `:`, `=` or tab at `s[i]` may separate a pair from its value.
fn pair_at(s: &[u8], i: usize) -> bool {
    let next = s.get(i + 1).copied();
    match s[i] {
        b'=' => {
            matches!(next, Some(b'0'..=b'9' | b'.' | b'-' | b'+' | b'n' | b'N' | b'i' | b'I'))
                || (next == Some(b' ') && value_start(s, i + 2))
        }
        b':' => match next {
            Some(b' ') => (i > 0 && matches!(s[i - 1], b'\'' | b'"')) || value_start(s, i + 2),
            Some(b'0'..=b'9' | b'.' | b'-' | b'"') => i > 0 && s[i - 1] == b'"',
            _ => false,
        },
        // `[3]\t`: the tab after a boosting round.
        _ => i >= 2 && s[i - 1] == b']' && s[i - 2].is_ascii_digit(),
    }
}

/// The next pair separator at or after `from` (see [`pair_at`]).
fn next_pair(s: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(i) = memchr::memchr3(b':', b'=', b'\t', &s[at..]) {
        let hit = at + i;
        if pair_at(s, hit) {
            return hit;
        }
        // A run of `=` (a Keras bar's `[=====>....]`) holds no pair: stepped over at once.
        at = hit + 1;
        if s[hit] == b'=' {
            while s.get(at) == Some(&b'=') {
                at += 1;
            }
        }
    }
    NO_HIT
}

/// The next escape or backspace at or after `from`.
fn next_escape(s: &[u8], from: usize) -> usize {
    memchr::memchr2(0x1b, 0x08, &s[from..]).map_or(NO_HIT, |i| from + i)
}

/// The finders built once per run.
pub(super) struct Finders {
    headers: AhoCorasick,
}

impl Finders {
    pub fn new() -> Self {
        let headers = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .match_kind(MatchKind::LeftmostFirst)
            .build(HEADERS)
            .expect("the headers are valid literals");
        Finders { headers }
    }

    /// The next header at or after `from`.
    fn next_header(&self, s: &[u8], from: usize) -> usize {
        self.headers.find(&s[from..]).map_or(NO_HIT, |m| from + m.start())
    }

    /// Whether one line (without its `\n`) is a candidate.
    pub fn is_candidate(&self, line: &[u8]) -> bool {
        next_pair(line, 0) != NO_HIT || next_escape(line, 0) != NO_HIT || self.headers.is_match(line)
    }

    /// Whether one line holds a header (for the parsers of headers: cheaper than asking each).
    pub fn has_header(&self, line: &[u8]) -> bool {
        self.headers.is_match(line)
    }
}

/// A block's next hits, each finder advanced only when the scan passed its hit.
pub(super) struct Hits {
    pair: usize,
    escape: usize,
    header: usize,
}

impl Hits {
    pub fn new() -> Self {
        Hits { pair: 0, escape: 0, header: 0 }
    }

    /// The next hit of any finder at or after `pos` (every finder's next hit is at or after `pos` afterwards, or
    /// none is left).
    pub fn next(&mut self, finders: &Finders, block: &[u8], pos: usize, fresh: bool) -> usize {
        if fresh || self.pair < pos {
            self.pair = next_pair(block, pos);
        }
        if fresh || self.escape < pos {
            self.escape = next_escape(block, pos);
        }
        if fresh || self.header < pos {
            self.header = finders.next_header(block, pos);
        }
        self.pair.min(self.escape).min(self.header)
    }

    /// Whether the line ending at `end` (the one the last [`Hits::next`] found) holds a header.
    pub fn header_before(&self, end: usize) -> bool {
        self.header < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_need_a_value_after_their_separator() {
        let f = Finders::new();
        let yes: [&[u8]; 12] = [
            b"loss=0.5",
            b"x=-1",
            b"x=nan",
            b"loss = 0.41",
            b"loss: 0.3",
            b"loss: inf",
            b"{'loss': '0.69'}",
            b"{\"loss\": \"0.5\"}",
            b"{\"loss\":0.5}",
            b"{\"loss\":\"0.5\"}",
            b"[3]\tvalidation_0-logloss:0.61",
            b"lr=.5",
        ];
        for s in yes {
            assert!(f.is_candidate(s), "{}", String::from_utf8_lossy(s));
        }
        let no: [&[u8]; 9] = [
            b"12:00:00.123",
            b"x == y",
            b"a=b",
            b"Assets written to: /tmp",
            b"x: nope",
            b"x = n",
            b"\tindented",
            b"[a]\tx",
            b"status: OUT_OF_RANGE",
        ];
        for s in no {
            assert!(!f.is_candidate(s), "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn a_line_is_a_candidate_by_any_finder_and_blocks_find_the_same_lines() {
        let f = Finders::new();
        let lines: [&[u8]; 7] = [
            b"nothing here",
            b"-- Epoch 3",
            b"step=3",
            b"bar \x1b[1m",
            b"  Validate metric   DataLoader 0",
            b"12:00:01 INFO start",
            b"***** train metrics *****",
        ];
        let want: Vec<bool> = lines.iter().map(|l| f.is_candidate(l)).collect();
        assert_eq!(want, [false, true, true, true, true, false, true]);
        let block = lines.join(&b'\n');
        let mut hits = Hits::new();
        let mut got = vec![false; lines.len()];
        let (mut pos, mut fresh) = (0, true);
        loop {
            let next = hits.next(&f, &block, pos, fresh);
            fresh = false;
            if next == NO_HIT {
                break;
            }
            let line = block[..next].iter().filter(|&&b| b == b'\n').count();
            got[line] = true;
            pos = next + memchr::memchr(b'\n', &block[next..]).map_or(block.len() - next, |i| i + 1);
        }
        assert_eq!(got, want);
    }
}
