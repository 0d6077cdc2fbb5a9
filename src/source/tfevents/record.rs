//! TFRecord framing, sans-I/O: byte chunks in, records out.
//!
//! An event file is a sequence of records, each `length: u64 LE`, `masked CRC32C of the length: u32 LE`,
//! `data[length]`, `masked CRC32C of the data: u32 LE` (TensorFlow's `tsl/lib/io/record_writer.cc`; the mask is
//! `((crc >> 15) | (crc << 17)) + 0xa282ead8`). [`RecordBuffer`] is fed by its owner reading straight into
//! [`RecordBuffer::space`] and hands every complete record to a callback with [`RecordBuffer::drain`]; a partial
//! record at the end waits for more bytes (a writer mid-record), and only [`RecordBuffer::finish`] says it is cut.
//!
//! Damage is an error for that record only, reported once as a [`Frame::Damaged`] and never read as data:
//! - a data CRC mismatch: the length was checked, so the next record starts after it; the caller decides
//!   whether to go on (the native reader) or to stop at the damage, as TensorBoard does (Katib's semantics);
//! - a length CRC mismatch: where the next record starts is unknown; nothing after it is read from this stream;
//! - a length above the limit (checked by its CRC, so not a corrupt number): the record is skipped without being
//!   held, so memory stays bounded whatever a file holds;
//! - a cut record at [`RecordBuffer::finish`].
//!
//! The buffer starts at [`INITIAL_CAPACITY`] and grows only to hold one record larger than that (at most the
//! limit plus the framing), then shrinks back once it is empty.

/// The buffer's first (and usual) size: records of a scalar are ~50 bytes, an image summary some kilobytes.
pub const INITIAL_CAPACITY: usize = 256 << 10;
/// The default largest record read: larger ones are skipped and counted.
pub const DEFAULT_MAX_RECORD: usize = 64 << 20;
/// The framing around a record's data: length, its CRC, the data's CRC.
pub const FRAMING: usize = 16;

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The length's CRC does not match: the rest of the stream cannot be framed.
    LengthCrc,
    /// The data's CRC does not match: this record is skipped.
    DataCrc,
    /// The record is longer than the limit: skipped unread.
    TooLarge {
        /// Its length.
        len: u64,
    },
    /// The stream ended inside a record.
    Truncated,
}

impl Damage {
    /// A short name, for counters and messages.
    pub fn kind(self) -> &'static str {
        match self {
            Damage::LengthCrc => "length_crc",
            Damage::DataCrc => "data_crc",
            Damage::TooLarge { .. } => "too_large",
            Damage::Truncated => "truncated",
        }
    }
}

/// One framed thing of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A record whose CRCs match, and its offset in the stream.
    Record {
        /// The record's data.
        data: &'a [u8],
        /// Where its framing starts.
        offset: u64,
    },
    /// A damaged record, and its offset in the stream.
    Damaged {
        /// What is wrong.
        damage: Damage,
        /// Where its framing starts.
        offset: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Framing records.
    Framing,
    /// Skipping the rest of a record too large to hold.
    Skipping(u64),
    /// After a length CRC mismatch: nothing more is framed.
    Broken,
}

/// TFRecord framing over chunks. See the module documentation.
#[derive(Debug)]
pub struct RecordBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The stream offset of `buf[start]`.
    offset: u64,
    state: State,
    max_record: usize,
}

impl Default for RecordBuffer {
    fn default() -> Self {
        RecordBuffer::new(DEFAULT_MAX_RECORD)
    }
}

impl RecordBuffer {
    /// A buffer that holds records up to `max_record` bytes of data.
    pub fn new(max_record: usize) -> Self {
        RecordBuffer { buf: vec![0; INITIAL_CAPACITY], start: 0, end: 0, offset: 0, state: State::Framing, max_record }
    }

    /// Free space to read into (at least a few kilobytes); follow with [`RecordBuffer::commit`].
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > INITIAL_CAPACITY {
                self.buf.truncate(INITIAL_CAPACITY);
                self.buf.shrink_to_fit();
            }
        } else if self.buf.len() - self.end < 4096 || self.start > self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written into [`RecordBuffer::space`].
    pub fn commit(&mut self, n: usize) {
        self.end += n;
    }

    /// Feeds `chunk` (a copy into the buffer) and drains: for tests and small inputs.
    pub fn feed(&mut self, mut chunk: &[u8], each: &mut impl FnMut(Frame<'_>)) {
        while !chunk.is_empty() {
            let space = self.space();
            let n = space.len().min(chunk.len());
            space[..n].copy_from_slice(&chunk[..n]);
            self.commit(n);
            chunk = &chunk[n..];
            self.drain(each);
        }
    }

    /// Bytes held that are not a complete record yet.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Hands every complete record (or damage) to `each`; a partial record stays for more bytes.
    ///
    /// # Performance
    /// One CRC32C pass over each record (slicing by 8, about 2 GB/s) and no copy: `data` borrows the buffer.
    pub fn drain(&mut self, each: &mut impl FnMut(Frame<'_>)) {
        loop {
            let avail = self.end - self.start;
            match self.state {
                State::Broken => {
                    self.skip(avail);
                    return;
                }
                State::Skipping(rest) => {
                    let n = rest.min(avail as u64) as usize;
                    self.skip(n);
                    if rest > n as u64 {
                        self.state = State::Skipping(rest - n as u64);
                        return;
                    }
                    self.state = State::Framing;
                }
                State::Framing => {
                    if avail < 12 {
                        return;
                    }
                    let head = &self.buf[self.start..self.start + 12];
                    let len = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
                    let len_crc = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
                    let offset = self.offset;
                    if masked_crc32c(&head[..8]) != len_crc {
                        self.state = State::Broken;
                        each(Frame::Damaged { damage: Damage::LengthCrc, offset });
                        continue;
                    }
                    if len > self.max_record as u64 {
                        self.skip(12);
                        self.state = State::Skipping(len + 4);
                        each(Frame::Damaged { damage: Damage::TooLarge { len }, offset });
                        continue;
                    }
                    let total = 12 + len as usize + 4;
                    if avail < total {
                        if self.buf.len() < total {
                            // A record larger than the buffer: make room for exactly this one.
                            self.buf.copy_within(self.start..self.end, 0);
                            self.end = avail;
                            self.start = 0;
                            self.buf.resize(total.max(INITIAL_CAPACITY), 0);
                        }
                        return;
                    }
                    let data = &self.buf[self.start + 12..self.start + 12 + len as usize];
                    let at = self.start + 12 + len as usize;
                    let data_crc = u32::from_le_bytes(self.buf[at..at + 4].try_into().unwrap_or_default());
                    if masked_crc32c(data) == data_crc {
                        each(Frame::Record { data, offset });
                    } else {
                        each(Frame::Damaged { damage: Damage::DataCrc, offset });
                    }
                    self.skip(total);
                }
            }
        }
    }

    /// The stream ended: a partial record held is cut ([`Damage::Truncated`]); the buffer is then empty.
    pub fn finish(&mut self, each: &mut impl FnMut(Frame<'_>)) {
        self.drain(each);
        let cut = self.state == State::Framing && self.end > self.start;
        if cut || matches!(self.state, State::Skipping(_)) {
            each(Frame::Damaged { damage: Damage::Truncated, offset: self.offset });
        }
        self.reset();
    }

    /// Forgets everything held, for a stream that starts over (a file truncated and rewritten).
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.offset = 0;
        self.state = State::Framing;
    }

    fn skip(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
    }
}

/// Writes one record's framing around `data` into `out` (for tests and benchmarks; the reader never writes).
pub fn frame(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// TFRecord's masked CRC32C (Castagnoli) of `data`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// The slicing-by-8 tables of CRC32C (reflected polynomial 0x82f63b78).
const TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82f6_3b78 } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
};

/// CRC32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][c[4] as usize]
            ^ TABLES[2][c[5] as usize]
            ^ TABLES[1][c[6] as usize]
            ^ TABLES[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        // TensorFlow's own test vector of the mask (tsl/lib/hash/crc32c_test.cc: Mask(crc) != crc, Unmask works).
        let long: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let bytewise = long.iter().fold(!0u32, |c, &b| (c >> 8) ^ TABLES[0][((c ^ u32::from(b)) & 0xff) as usize]);
        assert_eq!(crc32c(&long), !bytewise, "slicing by 8 equals the bytewise loop");
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Record(Vec<u8>, u64),
        Damaged(Damage, u64),
    }

    fn collect(buf: &mut RecordBuffer, input: &[u8], cuts: &[usize], finish: bool) -> Vec<Got> {
        let mut out = Vec::new();
        let mut each = |f: Frame<'_>| match f {
            Frame::Record { data, offset } => out.push(Got::Record(data.to_vec(), offset)),
            Frame::Damaged { damage, offset } => out.push(Got::Damaged(damage, offset)),
        };
        let mut at = 0;
        for &cut in cuts {
            buf.feed(&input[at..cut], &mut each);
            at = cut;
        }
        buf.feed(&input[at..], &mut each);
        if finish {
            buf.finish(&mut each);
        }
        out
    }

    fn records(datas: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in datas {
            frame(d, &mut out);
        }
        out
    }

    #[test]
    fn every_split_of_the_input_gives_the_same_records() {
        let big = vec![7u8; 3000];
        let datas: [&[u8]; 4] = [b"", b"a", b"hello records", &big];
        let input = records(&datas);
        let want: Vec<Got> = {
            let mut off = 0;
            datas
                .iter()
                .map(|d| {
                    let g = Got::Record(d.to_vec(), off);
                    off += (d.len() + FRAMING) as u64;
                    g
                })
                .collect()
        };
        for cut in 0..=input.len() {
            assert_eq!(collect(&mut RecordBuffer::default(), &input, &[cut], true), want, "cut at {cut}");
        }
        for a in (0..input.len()).step_by(7) {
            for b in (a..input.len()).step_by(13) {
                assert_eq!(collect(&mut RecordBuffer::default(), &input, &[a, b], true), want, "cuts {a} {b}");
            }
        }
    }

    #[test]
    fn a_partial_record_waits_and_is_cut_only_at_the_end() {
        let input = records(&[b"one", b"two"]);
        let mut buf = RecordBuffer::default();
        let got = collect(&mut buf, &input[..input.len() - 3], &[], false);
        assert_eq!(got, [Got::Record(b"one".to_vec(), 0)]);
        assert_eq!(buf.pending(), 16 + 3 - 3);
        let mut rest = Vec::new();
        buf.finish(&mut |f| rest.push(format!("{f:?}")));
        assert_eq!(rest, ["Damaged { damage: Truncated, offset: 19 }"]);
    }

    #[test]
    fn a_bad_data_crc_skips_that_record_only() {
        let mut input = records(&[b"one", b"two", b"three"]);
        input[19 + 12] ^= 1; // the first byte of "two"
        let got = collect(&mut RecordBuffer::default(), &input, &[], true);
        assert_eq!(
            got,
            [Got::Record(b"one".to_vec(), 0), Got::Damaged(Damage::DataCrc, 19), Got::Record(b"three".to_vec(), 38)]
        );
    }

    #[test]
    fn a_bad_length_crc_ends_the_stream_without_reading_on() {
        let mut input = records(&[b"one", b"two", b"three"]);
        input[19] ^= 0x40; // the length of "two"
        for cut in [0, 20, input.len()] {
            let got = collect(&mut RecordBuffer::default(), &input, &[cut], true);
            assert_eq!(got, [Got::Record(b"one".to_vec(), 0), Got::Damaged(Damage::LengthCrc, 19)], "cut {cut}");
        }
    }

    #[test]
    fn a_record_over_the_limit_is_skipped_unheld_and_a_huge_length_is_never_allocated() {
        let big = vec![1u8; 100];
        let input = records(&[b"a", &big, b"b"]);
        for cut in [0, 25, 60, input.len()] {
            let mut buf = RecordBuffer::new(50);
            let got = collect(&mut buf, &input, &[cut], true);
            assert_eq!(
                got,
                [
                    Got::Record(b"a".to_vec(), 0),
                    Got::Damaged(Damage::TooLarge { len: 100 }, 17),
                    Got::Record(b"b".to_vec(), 133)
                ],
                "cut {cut}"
            );
            assert_eq!(buf.buf.len(), INITIAL_CAPACITY);
        }
        // A length of 2^60 with a valid CRC: skipped, nothing allocated, the stream is then cut.
        let mut huge = Vec::new();
        let len = (1u64 << 60).to_le_bytes();
        huge.extend_from_slice(&len);
        huge.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        huge.extend_from_slice(&[0; 100]);
        let mut buf = RecordBuffer::default();
        let got = collect(&mut buf, &huge, &[], true);
        assert_eq!(got, [Got::Damaged(Damage::TooLarge { len: 1 << 60 }, 0), Got::Damaged(Damage::Truncated, 112)]);
        assert_eq!(buf.buf.len(), INITIAL_CAPACITY);
    }

    #[test]
    fn a_record_larger_than_the_buffer_grows_it_once_and_it_shrinks_back() {
        let big = vec![3u8; INITIAL_CAPACITY * 2];
        let input = records(&[&big, b"x"]);
        let mut buf = RecordBuffer::default();
        let got = collect(&mut buf, &input, &[1000], false);
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], Got::Record(d, 0) if d.len() == big.len()));
        let _ = buf.space();
        assert_eq!(buf.buf.len(), INITIAL_CAPACITY, "back to its usual size once empty");
    }
}
