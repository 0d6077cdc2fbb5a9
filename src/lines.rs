//! The line buffer: byte chunks in, complete lines out.
//!
//! A source either reads straight into [`LineBuffer::space`] and calls [`LineBuffer::commit`], or hands over
//! chunks it already has with [`LineBuffer::feed`]. [`LineBuffer::drain`] then yields every complete line as a
//! `&[u8]` borrowed from the one reused buffer (without its `\n`), and [`LineBuffer::finish`] yields the last,
//! unterminated line at end of input.
//!
//! Invariants:
//! - The buffer never grows: it holds at most `max_line_bytes + 1` bytes of a pending line plus one read chunk.
//! - A line longer than `max_line_bytes` is cut: its first `max_line_bytes` bytes are yielded once, marked
//!   [`Line::truncated`], and the rest up to the next `\n` is skipped and counted.
//! - The same input yields the same lines however it is split into chunks.
//!
//! What it deliberately does not do: it does not decode UTF-8, strip `\r` or look at the content of a line in
//! any way; that is the rules' business (Katib keeps `\r`, the native rules split on it).

/// How many bytes a source should be able to read at once.
pub const READ_CHUNK: usize = 256 * 1024;

/// The default for `--max-line-bytes`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// The line limit in Katib semantics (`--katib-semantics`, the drop-in): Katib reads the whole file
/// (`io.ReadAll`) and so any line; trialtail reads lines up to this and drops a longer one whole, counted.
pub const KATIB_MAX_LINE_BYTES: usize = 4 << 20;

/// One complete line, borrowed from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line's bytes without the terminating `\n`.
    pub bytes: &'a [u8],
    /// 1-based line number in the stream.
    pub number: u64,
    /// The line was longer than the limit and this is its cut prefix.
    pub truncated: bool,
}

/// Counters kept by the line buffer, read by the self-metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LineStats {
    /// Bytes committed.
    pub bytes: u64,
    /// Lines yielded (cut lines included).
    pub lines: u64,
    /// Lines that were longer than the limit and were cut.
    pub too_long: u64,
    /// Bytes skipped past the limit of cut lines.
    pub skipped_bytes: u64,
}

impl std::ops::Add for LineStats {
    type Output = LineStats;

    /// The counters of two streams together.
    fn add(self, o: LineStats) -> LineStats {
        LineStats {
            bytes: self.bytes + o.bytes,
            lines: self.lines + o.lines,
            too_long: self.too_long + o.too_long,
            skipped_bytes: self.skipped_bytes + o.skipped_bytes,
        }
    }
}

/// A fixed-capacity buffer that turns a byte stream into lines.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Start of the bytes not yet yielded.
    start: usize,
    /// How far `buf[start..]` is known to hold no `\n`.
    scanned: usize,
    /// End of the filled bytes.
    end: usize,
    max_line: usize,
    read_chunk: usize,
    /// Inside an over-long line whose prefix was already yielded: skip to the next `\n`.
    skipping: bool,
    stats: LineStats,
}

impl LineBuffer {
    /// A buffer that cuts lines longer than `max_line_bytes` (at least 1).
    pub fn new(max_line_bytes: usize) -> Self {
        Self::with_read_chunk(max_line_bytes, READ_CHUNK)
    }

    /// Like [`LineBuffer::new`] with a chosen read size (tests use tiny ones).
    pub fn with_read_chunk(max_line_bytes: usize, read_chunk: usize) -> Self {
        let max_line = max_line_bytes.max(1);
        let read_chunk = read_chunk.max(1);
        LineBuffer {
            buf: vec![0; max_line + 1 + read_chunk],
            start: 0,
            scanned: 0,
            end: 0,
            max_line,
            read_chunk,
            skipping: false,
            stats: LineStats::default(),
        }
    }

    /// The line limit it cuts at.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line
    }

    /// The counters so far.
    pub fn stats(&self) -> LineStats {
        self.stats
    }

    /// Free space to read into: at least one read chunk after [`LineBuffer::drain`].
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 && self.buf.len() - self.end < self.read_chunk {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`LineBuffer::space`] as filled and returns them (to echo or fingerprint before they
    /// are parsed).
    pub fn commit(&mut self, n: usize) -> &[u8] {
        assert!(self.end + n <= self.buf.len(), "commit past the space handed out");
        self.end += n;
        self.stats.bytes += n as u64;
        &self.buf[self.end - n..self.end]
    }

    /// Copies `chunk` in and yields every line it completes.
    pub fn feed(&mut self, chunk: &[u8], f: impl FnMut(Line<'_>)) {
        self.feed_into(chunk, &mut EachLine(f));
    }

    /// Copies `chunk` in and hands every line it completes to `sink`.
    pub fn feed_into(&mut self, mut chunk: &[u8], sink: &mut impl LineSink) {
        while !chunk.is_empty() {
            let space = self.space();
            let n = space.len().min(chunk.len());
            space[..n].copy_from_slice(&chunk[..n]);
            self.commit(n);
            chunk = &chunk[n..];
            self.drain_into(sink);
        }
    }

    /// Yields every complete line held, and cuts a pending line that has grown past the limit.
    pub fn drain(&mut self, f: impl FnMut(Line<'_>)) {
        self.drain_into(&mut EachLine(f));
    }

    /// Hands every complete line held to `sink` – as one block when no line in it is over the limit – and cuts a
    /// pending line that has grown past the limit.
    pub fn drain_into(&mut self, sink: &mut impl LineSink) {
        if !self.skipping {
            let from = self.start.max(self.scanned);
            if let Some(i) = memchr::memrchr(b'\n', &self.buf[from..self.end]) {
                let block_end = from + i + 1;
                let block = &self.buf[self.start..block_end];
                if lines_shorter_than(block, self.max_line) {
                    let lines = sink.block(block, self.stats.lines + 1);
                    self.stats.lines += lines;
                    self.start = block_end;
                    self.scanned = block_end;
                }
            }
        }
        self.drain_lines(sink);
    }

    /// The line-by-line path: over-long lines, a line being skipped, a pending partial line.
    fn drain_lines(&mut self, sink: &mut impl LineSink) {
        loop {
            let from = self.start.max(self.scanned);
            match memchr::memchr(b'\n', &self.buf[from..self.end]) {
                Some(i) => {
                    let nl = from + i;
                    if self.skipping {
                        self.stats.skipped_bytes += (nl - self.start) as u64;
                        self.skipping = false;
                    } else if nl - self.start > self.max_line {
                        self.emit_cut(sink);
                        self.stats.skipped_bytes += (nl - self.start - self.max_line) as u64;
                    } else {
                        self.stats.lines += 1;
                        sink.line(Line {
                            bytes: &self.buf[self.start..nl],
                            number: self.stats.lines,
                            truncated: false,
                        });
                    }
                    self.start = nl + 1;
                    self.scanned = self.start;
                }
                None => {
                    self.scanned = self.end;
                    if self.skipping {
                        self.stats.skipped_bytes += (self.end - self.start) as u64;
                        self.start = self.end;
                    } else if self.end - self.start > self.max_line {
                        self.emit_cut(sink);
                        self.skipping = true;
                        self.stats.skipped_bytes += (self.end - self.start - self.max_line) as u64;
                        self.start = self.end;
                    }
                    return;
                }
            }
        }
    }

    /// End of input: yields the last line if it has no `\n`, and resets for a new stream.
    pub fn finish(&mut self, f: impl FnMut(Line<'_>)) {
        self.finish_into(&mut EachLine(f));
    }

    /// End of input: hands the last line to `sink` even without its `\n`, tells it the stream ended, and resets
    /// for a new stream.
    pub fn finish_into(&mut self, sink: &mut impl LineSink) {
        self.drain_into(sink);
        if self.end > self.start && !self.skipping {
            self.stats.lines += 1;
            sink.line(Line { bytes: &self.buf[self.start..self.end], number: self.stats.lines, truncated: false });
        }
        sink.end();
        self.discard();
    }

    /// Drops whatever partial line is held (a source that lost its stream), keeping the counters.
    pub fn discard(&mut self) {
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
        self.skipping = false;
    }

    fn emit_cut(&mut self, sink: &mut impl LineSink) {
        self.stats.lines += 1;
        self.stats.too_long += 1;
        let cut = &self.buf[self.start..self.start + self.max_line];
        sink.line(Line { bytes: cut, number: self.stats.lines, truncated: true });
    }
}

/// Receives lines from a [`LineBuffer`], one by one or a block at a time.
pub trait LineSink {
    /// One line.
    fn line(&mut self, line: Line<'_>);

    /// A run of complete lines, each ending in `\n` and none longer than the limit; the first is line `first`.
    /// Returns how many lines the block held. The default splits it and calls [`LineSink::line`] for each.
    fn block(&mut self, block: &[u8], first: u64) -> u64 {
        let mut number = first;
        for bytes in block[..block.len() - 1].split(|&b| b == b'\n') {
            self.line(Line { bytes, number, truncated: false });
            number += 1;
        }
        number - first
    }

    /// The stream ended (after its last line). The default does nothing.
    fn end(&mut self) {}
}

/// A closure as a line sink.
struct EachLine<F>(F);

impl<F: FnMut(Line<'_>)> LineSink for EachLine<F> {
    fn line(&mut self, line: Line<'_>) {
        (self.0)(line)
    }
}

/// Whether every line of `block` (which ends in `\n`) is at most `max` bytes long, checked cheaply: every aligned
/// window of `max / 2` bytes must hold a `\n` (a longer line would cover a whole window). It may say no for lines
/// of `max / 2` to `max` bytes; the caller then takes the line-by-line path, which is exact.
fn lines_shorter_than(block: &[u8], max: usize) -> bool {
    let window = (max / 2).max(1);
    block.len() <= window || block.chunks(window).all(|w| memchr::memchr(b'\n', w).is_some())
}

/// Counts `\n` bytes.
///
/// # Performance
/// `memchr`'s vectorised count (AVX2 where the CPU has it): tens of GB/s, a small part of a run's time.
pub fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(buf: &mut LineBuffer, chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        for c in chunks {
            buf.feed(c, |l| out.push((l.bytes.to_vec(), l.truncated)));
        }
        buf.finish(|l| out.push((l.bytes.to_vec(), l.truncated)));
        out
    }

    /// The reference: split on `\n`, cut at `max`, last line without `\n` kept when not empty.
    fn model(input: &[u8], max: usize) -> Vec<(Vec<u8>, bool)> {
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if parts.last().is_some_and(|p| p.is_empty()) {
            parts.pop();
        }
        parts.into_iter().map(|p| if p.len() > max { (p[..max].to_vec(), true) } else { (p.to_vec(), false) }).collect()
    }

    const INPUT: &[u8] = b"alpha=1\n\nbeta=2\r\na very long line that will be cut\nx\nlast";

    #[test]
    fn every_split_and_capacity_yields_the_same_lines() {
        for max in [1, 2, 3, 7, DEFAULT_MAX_LINE_BYTES] {
            for chunk in [1, 2, 3, 7, READ_CHUNK] {
                let expected = model(INPUT, max);
                for split in 0..=INPUT.len() {
                    let mut buf = LineBuffer::with_read_chunk(max, chunk);
                    let got = collect(&mut buf, &[&INPUT[..split], &INPUT[split..]]);
                    assert_eq!(got, expected, "max {max} chunk {chunk} split {split}");
                }
            }
        }
    }

    #[test]
    fn byte_by_byte_feeding_yields_the_same_lines() {
        for max in [1, 2, 3, 7, DEFAULT_MAX_LINE_BYTES] {
            let mut buf = LineBuffer::with_read_chunk(max, 3);
            let chunks: Vec<&[u8]> = INPUT.chunks(1).collect();
            assert_eq!(collect(&mut buf, &chunks), model(INPUT, max), "max {max}");
        }
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_not_cut() {
        let mut buf = LineBuffer::with_read_chunk(4, 1);
        assert_eq!(
            collect(&mut buf, &[b"abcd", b"\nabcde\n"]),
            vec![(b"abcd".to_vec(), false), (b"abcd".to_vec(), true)]
        );
        assert_eq!(buf.stats().too_long, 1);
        assert_eq!(buf.stats().skipped_bytes, 1);
    }

    #[test]
    fn a_fifty_megabyte_line_is_cut_once_and_the_next_line_survives() {
        let mut buf = LineBuffer::new(DEFAULT_MAX_LINE_BYTES);
        let big = vec![b'x'; 50 << 20];
        let mut lines = Vec::new();
        buf.feed(&big, |l| lines.push((l.bytes.len(), l.truncated)));
        buf.feed(b"\nloss=1\n", |l| lines.push((l.bytes.len(), l.truncated)));
        assert_eq!(lines, vec![(DEFAULT_MAX_LINE_BYTES, true), (6, false)]);
        assert_eq!(buf.stats().lines, 2);
        assert_eq!(buf.stats().skipped_bytes, (50 << 20) - DEFAULT_MAX_LINE_BYTES as u64);
    }

    #[test]
    fn count_newlines_counts_across_lane_blocks() {
        let mut bytes = vec![b'a'; 32 * 255 * 2 + 77];
        for i in (0..bytes.len()).step_by(7) {
            bytes[i] = b'\n';
        }
        assert_eq!(count_newlines(&bytes), bytes.iter().filter(|&&b| b == b'\n').count() as u64);
        assert_eq!(count_newlines(b""), 0);
    }

    #[test]
    fn line_numbers_count_every_line() {
        let mut buf = LineBuffer::new(16);
        let mut numbers = Vec::new();
        buf.feed(b"a\n\nb\nc", |l| numbers.push(l.number));
        buf.finish(|l| numbers.push(l.number));
        assert_eq!(numbers, vec![1, 2, 3, 4]);
    }

    #[test]
    fn reading_into_space_works_like_feeding() {
        let mut buf = LineBuffer::with_read_chunk(8, 4);
        let mut out = Vec::new();
        for piece in INPUT.chunks(5) {
            let mut rest = piece;
            while !rest.is_empty() {
                let space = buf.space();
                let n = space.len().min(rest.len());
                space[..n].copy_from_slice(&rest[..n]);
                buf.commit(n);
                rest = &rest[n..];
                buf.drain(|l| out.push((l.bytes.to_vec(), l.truncated)));
            }
        }
        buf.finish(|l| out.push((l.bytes.to_vec(), l.truncated)));
        assert_eq!(out, model(INPUT, 8));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn random_chunking_matches_the_model(
                input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'\r'), any::<u8>()], 0..300),
                cuts in proptest::collection::vec(0usize..300, 0..8),
                max in 1usize..40,
                chunk in 1usize..20,
            ) {
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
                cuts.sort_unstable();
                let mut pieces = Vec::new();
                let mut at = 0;
                for c in cuts { pieces.push(&input[at..c]); at = c; }
                pieces.push(&input[at..]);
                let mut buf = LineBuffer::with_read_chunk(max, chunk);
                prop_assert_eq!(collect(&mut buf, &pieces), model(&input, max));
            }
        }
    }
}
