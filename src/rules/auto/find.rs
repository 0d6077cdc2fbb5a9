//! The block-wide finders of the recognition: which lines of a block can hold a recognised format at all.
//!
//! A line is a candidate when it holds one of:
//! - a pair's separator before a value: `=` directly before a value (`loss=0.5`, `=nan`), `= ` or `: ` before one
//!   (`loss = 0.41`, `loss: 0.3`), a quoted key's colon (`'loss': `, `"loss": `, `"loss":0.3`), or the tab after
//!   a boosting round (`[3]\t`) – found with one `memchr3` for `:`, `=` and tab, each hit checked in place;
//! - a terminal escape or backspace (what a terminal shows may hold a pair the raw bytes do not) – one `memchr2`;
//! - at its start, a header of a multi-line format, whose lines hold no pair: `-- Epoch ` or `***** ` (after a
//!   leading timestamp, if any), `Validate metric` or `Test metric` (after blanks and a results table's frame) –
//!   [`line_header`], asked of each line the other finders pass over.
//!
//! Each block-wide finder keeps its next hit and is advanced only when the scan passed it, so a block is read about
//! once by each; a line no finder hits is not looked at. The same tests decide for a line on its own
//! ([`Finders::is_candidate`]), so block and line-by-line scanning see the same candidates.
//!
//! # Performance
//! One Aho–Corasick (Teddy) search over the 63 three-byte anchors these tests stand for cost a third of the
//! recognition's time on the generated logs of `benches/throughput.rs`; the `memchr3` with its checks costs half
//! of that. The headers were a third block-wide search (a four-literal Teddy), a tenth of the time at 30 % metric
//! lines; asked at each line's start instead, they cost the line's first byte for almost every line
//! (`docs/performance.md`).

use crate::value;

/// No further hit.
pub(super) const NO_HIT: usize = usize::MAX;

/// The headers of the multi-line formats (scikit-learn's SGD epochs, Hugging Face's metrics blocks) that start
/// their line (after a timestamp).
const LEADING_HEADERS: [&[u8]; 2] = [b"-- Epoch ", b"***** "];
/// The headers of Lightning's results tables, after blanks and the table's frame.
const TABLE_HEADERS: [&[u8]; 2] = [b"Validate metric", b"Test metric"];

/// Whether a line (without its `\n`) starts with a header of a multi-line format: `-- Epoch ` or `***** ` at its
/// start or after a leading RFC 3339 timestamp and blanks (where the formats' parsers read them), `Validate metric`
/// or `Test metric` after blanks, `|` and box-drawing characters (a results table's header row).
pub(super) fn line_header(line: &[u8]) -> bool {
    match line.first() {
        Some(b'-' | b'*' | b'V' | b'T' | b' ' | b'\t' | b'|' | 0xE2) => {}
        // After a timestamp only the leading headers count: looked for before the timestamp is parsed.
        Some(b'0'..=b'9') => {
            let Some(space) = memchr::memchr(b' ', line) else { return false };
            let rest = &line[skip_blanks(line, space)..];
            if !matches!(rest.first(), Some(b'-' | b'*')) || value::line_timestamp(line).is_none() {
                return false;
            }
            return LEADING_HEADERS.iter().any(|h| rest.starts_with(h));
        }
        _ => return false,
    }
    let mut i = skip_blanks(line, 0);
    // The first bytes compared before the rest: most lines start with none of them.
    let starts = |rest: &[u8], h: &[u8]| rest.first() == h.first() && rest.starts_with(h);
    let rest = &line[i..];
    if LEADING_HEADERS.iter().any(|h| starts(rest, h)) {
        return true;
    }
    // U+2500..U+257F (box drawing) are E2 94 80..E2 95 BF in UTF-8.
    loop {
        match line.get(i) {
            Some(b' ' | b'\t' | b'|') => i += 1,
            Some(0xE2) if matches!(line.get(i + 1), Some(0x94 | 0x95)) => i += 3,
            _ => break,
        }
    }
    let rest = &line[i.min(line.len())..];
    TABLE_HEADERS.iter().any(|h| starts(rest, h))
}

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

/// Skips spaces and tabs from `at`.
fn skip_blanks(s: &[u8], mut at: usize) -> usize {
    while matches!(s.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    at
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

/// The finders of a run.
pub(super) struct Finders;

impl Finders {
    pub fn new() -> Self {
        Finders
    }

    /// Whether one line (without its `\n`) is a candidate.
    pub fn is_candidate(&self, line: &[u8]) -> bool {
        next_pair(line, 0) != NO_HIT || next_escape(line, 0) != NO_HIT || line_header(line)
    }

    /// Whether one line starts with a header (for the parsers of headers: cheaper than asking each).
    pub fn has_header(&self, line: &[u8]) -> bool {
        line_header(line)
    }
}

/// A block's next hits, each finder advanced only when the scan passed its hit.
pub(super) struct Hits {
    pair: usize,
    escape: usize,
}

impl Hits {
    pub fn new() -> Self {
        Hits { pair: 0, escape: 0 }
    }

    /// The next hit of a block-wide finder at or after `pos` (every finder's next hit is at or after `pos`
    /// afterwards, or none is left). Headers are not among them: see [`line_header`].
    pub fn next(&mut self, block: &[u8], pos: usize, fresh: bool) -> usize {
        if fresh || self.pair < pos {
            self.pair = next_pair(block, pos);
        }
        if fresh || self.escape < pos {
            self.escape = next_escape(block, pos);
        }
        self.pair.min(self.escape)
    }

    /// The next candidate line of `block` at or after `pos` (a line's start): a line a block-wide finder hits, or
    /// one before it that starts with a header. `None` when no line is left.
    pub fn next_line(&mut self, block: &[u8], pos: usize, fresh: bool) -> Option<Candidate> {
        if pos >= block.len() {
            return None;
        }
        let hit = self.next(block, pos, fresh);
        let (mut start, mut before) = (pos, 0);
        for i in memchr::memchr_iter(b'\n', &block[pos..hit.min(block.len())]) {
            let end = pos + i;
            if line_header(&block[start..end]) {
                return Some(Candidate { start, end, before, header: true });
            }
            before += 1;
            start = end + 1;
        }
        if hit == NO_HIT {
            let header = start < block.len() && line_header(&block[start..]);
            return header.then_some(Candidate { start, end: block.len(), before, header });
        }
        let end = hit + memchr::memchr(b'\n', &block[hit..]).unwrap_or(block.len() - hit);
        Some(Candidate { start, end, before, header: line_header(&block[start..end]) })
    }
}

/// A candidate line of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    /// Where it starts.
    pub start: usize,
    /// Where it ends: its `\n`, or the block's end.
    pub end: usize,
    /// The lines between the position asked from and it.
    pub before: u64,
    /// It starts with a header ([`line_header`]).
    pub header: bool,
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
        let (mut pos, mut line, mut fresh) = (0, 0, true);
        while let Some(c) = hits.next_line(&block, pos, fresh) {
            fresh = false;
            line += c.before as usize;
            assert_eq!(c.header, f.has_header(lines[line]), "{}", String::from_utf8_lossy(lines[line]));
            got[line] = true;
            line += 1;
            pos = c.end + 1;
        }
        assert_eq!(got, want);
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
        // A byte above a match that differs from a separator only in its low bit is not taken for one.
        assert_eq!(separator_in_word(b";:<=\x08\t\n\x0b", 0), Ok(1));
        assert_eq!(separator_in_word(b";;<<\x08\x0b\n9", 0), Err(8));
    }

    #[test]
    fn headers_count_at_the_start_of_a_line_after_a_timestamp_blanks_or_a_table_frame() {
        let yes: [&[u8]; 8] = [
            b"-- Epoch 3",
            b"***** train metrics *****",
            b"2024-05-01T12:00:00Z -- Epoch 3",
            b"     Validate metric           DataLoader 0",
            "┃      Validate metric      ┃       DataLoader 0        ┃".as_bytes(),
            "│        Test metric        │       DataLoader 0        │".as_bytes(),
            b"| Test metric | DataLoader 0 |",
            b"\tTest metric",
        ];
        for s in yes {
            assert!(line_header(s), "{}", String::from_utf8_lossy(s));
        }
        let no: [&[u8]; 7] = [
            b"INFO -- Epoch 3",
            b"Validation DataLoader 0:   9%|",
            b"Tests metric",
            b"2024-05-01 12:00:00 -- Epoch 3",
            b"x ***** train metrics *****",
            b"",
            "┃ val_acc ┃ 0.95 ┃".as_bytes(),
        ];
        for s in no {
            assert!(!line_header(s), "{}", String::from_utf8_lossy(s));
        }
    }
}
