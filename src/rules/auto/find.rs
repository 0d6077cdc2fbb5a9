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
///
/// # Performance
/// Separators come in clusters (a timestamp's colons, a tqdm postfix): after a rejected one, the next eight bytes
/// are looked at as one word ([`separator_in_word`]) before a new vectorised search is started.
fn next_pair(s: &[u8], from: usize) -> usize {
    let Some(i) = memchr::memchr3(b':', b'=', b'\t', &s[from..]) else { return NO_HIT };
    let mut hit = from + i;
    loop {
        if pair_at(s, hit) {
            return hit;
        }
        // A run of `=` (a Keras bar's `[=====>....]`) holds no pair: stepped over at once.
        let mut at = hit + 1;
        if s[hit] == b'=' {
            while s.get(at) == Some(&b'=') {
                at += 1;
            }
        }
        hit = match separator_in_word(s, at) {
            Ok(next) => next,
            Err(from) => match memchr::memchr3(b':', b'=', b'\t', &s[from..]) {
                Some(i) => from + i,
                None => return NO_HIT,
            },
        };
    }
}

/// The first `:`, `=` or tab among the eight bytes at `s[at..]`, found in one 64-bit word: `Ok(position)`, or
/// `Err(where to search on)` – after the eight bytes, or at `at` when fewer are left.
fn separator_in_word(s: &[u8], at: usize) -> Result<usize, usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let Some(bytes) = s.get(at..at + 8) else { return Err(at) };
    let word = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
    // The high bit of each zero byte of `x` (and maybe of bytes above the first zero byte: the lowest set bit is
    // exact, which is all that is read).
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let found = zeros(word ^ (ONES * u64::from(b':')))
        | zeros(word ^ (ONES * u64::from(b'=')))
        | zeros(word ^ (ONES * u64::from(b'\t')));
    if found == 0 { Err(at + 8) } else { Ok(at + found.trailing_zeros() as usize / 8) }
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
    fn the_word_search_finds_the_first_separator_of_eight_bytes_as_memchr3_does() {
        let s = b"ab:c=d\tefgh=12345678:x=======>...:9";
        for at in 0..s.len() {
            let want = memchr::memchr3(b':', b'=', b'\t', &s[at..]).map(|i| at + i);
            match separator_in_word(s, at) {
                Ok(i) => assert_eq!(Some(i), want, "at {at}"),
                Err(from) if from == at => assert!(s.len() - at < 8, "at {at}"),
                Err(from) => {
                    assert_eq!(from, at + 8);
                    assert!(want.is_none_or(|i| i >= at + 8), "at {at}");
                }
            }
        }
        // Bytes that differ from a separator in one bit, before and after a match, are not taken for one.
        assert_eq!(separator_in_word(b";:<=\x08\t\n\x0b", 0), Ok(1));
        assert_eq!(separator_in_word(b";;<<\x08\x0b\n9", 0), Err(8));
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
