//! The tailer: one path followed as one endless stream of bytes, across rotation, recreation and truncation.
//!
//! [`Tailer::step`] is synchronous and does no waiting: it opens the path if needed, reads what is readable
//! (up to a budget) into its [`LineBuffer`] and hands the complete lines to a [`Parser`], and at end of file decides what happened with the pure function
//! [`classify`]. The async driver in [`super::follow`] calls it whenever inotify (or the polling fallback) says the
//! path may have changed; tests call it directly, step by step.
//!
//! Invariants:
//! - A complete line is never read twice: after a truncation the file is read again from offset 0, which only
//!   holds bytes written after the truncation.
//! - On rotation (the path names another file) or deletion, the old file is read to its end before anything
//!   else, and kept open while the path is missing, so a writer that still holds it loses nothing. Its last
//!   unterminated line is then processed as a line: the writer has moved on.
//! - After a truncation the partial line held from before is dropped (its end was destroyed).
//!
//! Blind spots, which every tailer has:
//! - **copytruncate's race**: bytes written after the tailer's last read and before the truncate are copied to
//!   the rotated file but never read here; nothing else is lost, nothing is read twice.
//! - **truncate and regrow between two checks**: if the file is truncated and grows back past the old offset
//!   before the tailer looks, its size alone says nothing happened. The tailer keeps the first
//!   [`HEAD_BYTES`] bytes it read as a fingerprint and compares them before reading on and at every end of
//!   file; a file whose new start is byte-for-byte the old start (a log that always begins with the same
//!   banner) still escapes, and then the bytes between the old start and the old offset are skipped.
//! - A file deleted while a writer keeps writing to it is only re-read on the slow safety timer (no directory
//!   event names it any more).
//!
//! An optional echo ([`Tailer::with_echo`]) receives every byte read, as read, before it is parsed (Katib's UI
//! shows the metrics file through the collector's stdout); a failed echo write is logged once and echoing stops.
//!
//! What it deliberately does not do: follow several files, remember offsets across restarts, or decode lines.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::lines::LineBuffer;
use crate::parser::{ObservationSink, Parser};
use crate::snapshot::SourceStats;

/// Length of the fingerprint: the first bytes of the file as first read.
pub const HEAD_BYTES: usize = 64;

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> Self {
        FileId { dev: m.dev(), ino: m.ino() }
    }
}

/// The first bytes of a file (up to [`HEAD_BYTES`]), compared to detect a truncation the size cannot show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    len: u8,
    bytes: [u8; HEAD_BYTES],
}

impl Default for Head {
    fn default() -> Self {
        Head { len: 0, bytes: [0; HEAD_BYTES] }
    }
}

impl Head {
    /// A fingerprint of `bytes` (only the first [`HEAD_BYTES`] count).
    pub fn new(bytes: &[u8]) -> Self {
        let mut h = Head::default();
        h.extend(bytes);
        h
    }

    /// How many bytes it holds.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes read from the file until it is full.
    pub fn extend(&mut self, more: &[u8]) {
        let at = self.len();
        let n = more.len().min(HEAD_BYTES - at);
        self.bytes[at..at + n].copy_from_slice(&more[..n]);
        self.len += n as u8;
    }

    fn read(file: &File, len: usize) -> io::Result<Self> {
        let mut h = Head::default();
        let mut got = 0;
        while got < len {
            match file.read_at(&mut h.bytes[got..len], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        h.len = got as u8;
        Ok(h)
    }
}

/// What the tailer knew about its open file after its last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The open file.
    pub id: FileId,
    /// Bytes read from it (the read offset).
    pub offset: u64,
    /// Its first bytes, as read.
    pub head: Head,
}

/// What a check at end of file finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The file the path names now, `None` when there is none.
    pub path: Option<FileId>,
    /// The open file's size now.
    pub size: u64,
    /// The open file's first `previous.head.len()` bytes now.
    pub head: Head,
}

/// What happened to the followed file since the last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing: wait for more.
    Nothing,
    /// The open file shrank, or its first bytes changed: read it again from its start.
    Truncated,
    /// The path names no file: keep the open one, wait for the path to come back.
    Gone,
    /// The path names another file: finish the open one, then open the new one.
    Rotated,
}

/// The decision at end of file: a pure function of what was known and what is seen now.
///
/// The open file's own change comes first (so a truncated file is re-read from its start even when the path
/// has moved on too), then the path.
pub fn classify(previous: &Seen, now: &Now) -> Change {
    if now.size < previous.offset || now.head != previous.head {
        Change::Truncated
    } else {
        match now.path {
            None => Change::Gone,
            Some(id) if id != previous.id => Change::Rotated,
            Some(_) => Change::Nothing,
        }
    }
}

/// What one [`Tailer::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read this many bytes and stopped at the budget: call again soon.
    More(u64),
    /// Read this many bytes (maybe 0) and reached the end of the file: wait for a change.
    Eof(u64),
    /// The path names no file (yet): wait for it.
    Missing,
}

impl Step {
    /// Bytes read.
    pub fn bytes(self) -> u64 {
        match self {
            Step::More(n) | Step::Eof(n) => n,
            Step::Missing => 0,
        }
    }
}

/// Why following failed for good.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("log {path} is a directory")]
    Directory { path: PathBuf },
    /// A named pipe: it has no size, offset or rotation to follow, and opening it waits for a writer. The
    /// caller reads it as a pipe ([`super::follow`]) or refuses it.
    #[error("log {path} is a named pipe (FIFO), which is read with `trialtail run --follow` only")]
    Fifo { path: PathBuf },
}

#[derive(Debug)]
struct Open {
    file: File,
    seen: Seen,
    /// The path no longer names this file.
    gone: bool,
}

/// Follows one path. See the module documentation.
#[derive(Debug)]
pub struct Tailer {
    path: PathBuf,
    open: Option<Open>,
    /// Skip the content of the first file found (only the first).
    skip_first: bool,
    stats: SourceStats,
    warned_open: bool,
    echo: Option<Echo>,
    lines: LineBuffer,
}

/// Where read bytes are copied to, as read.
struct Echo(Box<dyn Write + Send>);

impl std::fmt::Debug for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Echo")
    }
}

impl Tailer {
    /// A tailer of `path` cutting lines at `max_line_bytes`; `from_end` skips what the file first found
    /// already holds.
    pub fn new(path: impl Into<PathBuf>, from_end: bool, max_line_bytes: usize) -> Self {
        Tailer {
            path: path.into(),
            open: None,
            skip_first: from_end,
            stats: SourceStats::default(),
            warned_open: false,
            echo: None,
            lines: LineBuffer::new(max_line_bytes),
        }
    }

    /// Copies every byte read to `out` (flushed after each read), before it is parsed.
    pub fn with_echo(mut self, out: impl Write + Send + 'static) -> Self {
        self.echo = Some(Echo(Box::new(out)));
        self
    }

    /// The line limit (`--max-line-bytes`).
    pub fn max_line_bytes(&self) -> usize {
        self.lines.max_line_bytes()
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The counters so far, the line buffer's included.
    pub fn stats(&self) -> SourceStats {
        SourceStats { lines: self.lines.stats(), ..self.stats }
    }

    /// Opens the path if needed, reads up to about `budget` bytes, and at end of file checks for rotation and
    /// truncation (acting on them at once). Never waits.
    pub fn step(&mut self, c: &mut Parser, sink: &mut impl ObservationSink, budget: u64) -> Result<Step, TailError> {
        let mut total = 0u64;
        loop {
            let Some(open) = self.open.as_mut() else {
                if !self.try_open()? {
                    return Ok(Step::Missing);
                }
                continue;
            };
            // Before reading on from the offset: a truncation (even one regrown past the offset) makes those
            // bytes the middle of something else.
            if open.seen.offset > 0 {
                match look(&self.path, open) {
                    Ok(now) if classify(&open.seen, &now) == Change::Truncated => {
                        sink.restarted();
                        if !self.restart() {
                            continue;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.stats.read_errors += 1;
                        tracing::warn!(path = %self.path.display(), error = %e, "checking the log failed");
                        return Ok(Step::Eof(total));
                    }
                }
            }
            let Some(open) = self.open.as_mut() else { continue };
            // Read to the end of the file, or to the budget.
            loop {
                if total >= budget {
                    return Ok(Step::More(total));
                }
                match open.file.read(self.lines.space()) {
                    Ok(0) => break,
                    Ok(n) => {
                        let read = self.lines.commit(n);
                        if open.seen.head.len() < HEAD_BYTES {
                            open.seen.head.extend(read);
                        }
                        open.seen.offset += n as u64;
                        total += n as u64;
                        if let Some(Echo(out)) = &mut self.echo
                            && let Err(e) = out.write_all(read).and_then(|()| out.flush())
                        {
                            tracing::warn!(error = %e, "echoing the log failed; echo stopped");
                            self.echo = None;
                        }
                        self.lines.drain_into(&mut c.lines(sink));
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.stats.read_errors += 1;
                        let path = self.path.display();
                        tracing::warn!(%path, error = %e, "read failed; retrying on the next change");
                        return Ok(Step::Eof(total));
                    }
                }
            }
            let now = match look(&self.path, open) {
                Ok(now) => now,
                Err(e) => {
                    self.stats.read_errors += 1;
                    tracing::warn!(path = %self.path.display(), error = %e, "checking the log failed");
                    return Ok(Step::Eof(total));
                }
            };
            match classify(&open.seen, &now) {
                Change::Nothing if now.size > open.seen.offset => {} // written since the read: read again
                Change::Nothing => {
                    open.gone = false;
                    return Ok(Step::Eof(total));
                }
                Change::Truncated => {
                    sink.restarted();
                    self.restart();
                }
                Change::Gone => {
                    if !open.gone {
                        tracing::info!(path = %self.path.display(), "log gone; waiting for it to come back");
                        open.gone = true;
                    }
                    return Ok(Step::Missing);
                }
                Change::Rotated => {
                    // The old file was just read to its end; a writer that still appends to it lost the race.
                    self.stats.rotations += 1;
                    tracing::info!(path = %self.path.display(), "log rotated; opening the new file");
                    self.lines.finish_into(&mut c.lines(sink));
                    sink.restarted();
                    self.open = None;
                }
            }
        }
    }

    /// Ends the stream: a last unterminated line is processed.
    pub fn finish(&mut self, c: &mut Parser, sink: &mut impl ObservationSink) {
        self.lines.finish_into(&mut c.lines(sink));
    }
}

/// What the path and the open file look like now.
fn look(path: &Path, open: &Open) -> io::Result<Now> {
    let path = match std::fs::metadata(path) {
        Ok(m) => Some(FileId::of(&m)),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let size = open.file.metadata()?.len();
    let head = Head::read(&open.file, open.seen.head.len())?;
    Ok(Now { path, size, head })
}

impl Tailer {
    /// The open file was truncated: drop the partial line and read it again from its start. `false` when the
    /// file had to be closed instead (it is reopened on the next step).
    fn restart(&mut self) -> bool {
        let Some(open) = self.open.as_mut() else { return false };
        self.stats.truncations += 1;
        tracing::info!(path = %self.path.display(), "log truncated; reading it from its start");
        self.lines.discard();
        if let Err(e) = open.file.seek(SeekFrom::Start(0)) {
            self.stats.read_errors += 1;
            tracing::warn!(path = %self.path.display(), error = %e, "seek failed; reopening");
            self.open = None;
            return false;
        }
        open.seen.offset = 0;
        open.seen.head = Head::default();
        true
    }

    /// Opens the path; `false` when it names no file yet.
    fn try_open(&mut self) -> Result<bool, TailError> {
        // Opening a FIFO would wait for a writer, uninterruptibly: it is never opened here.
        if std::fs::metadata(&self.path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type())) {
            return Err(TailError::Fifo { path: self.path.clone() });
        }
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                if e.kind() != ErrorKind::NotFound && !self.warned_open {
                    self.warned_open = true;
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot open log; waiting");
                }
                return Ok(false);
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(_) => return Ok(false),
        };
        if meta.is_dir() {
            return Err(TailError::Directory { path: self.path.clone() });
        }
        self.stats.opens += 1;
        let mut seen = Seen { id: FileId::of(&meta), offset: 0, head: Head::default() };
        let mut file = file;
        if std::mem::take(&mut self.skip_first) {
            let size = meta.len();
            if let (Ok(head), Ok(at)) = (Head::read(&file, HEAD_BYTES), file.seek(SeekFrom::Start(size))) {
                seen.offset = at;
                seen.head = head;
            }
        }
        self.warned_open = false;
        self.open = Some(Open { file, seen, gone: false });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::Observation;
    use crate::rules::Rules;
    use std::io::Write;

    /// The raw values observed, in order.
    #[derive(Default)]
    struct Values(Vec<String>);

    impl ObservationSink for Values {
        fn observe(&mut self, o: &Observation<'_>) {
            self.0.push(String::from_utf8_lossy(o.raw).into_owned());
        }
    }

    fn parser() -> Parser {
        Parser::new(Rules::classic(), 100_000)
    }

    fn append(path: &Path, bytes: &[u8]) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
    }

    /// A temp dir, the log path in it (not created), and a tailer of it with its parser and values.
    fn tailing(from_end: bool, max_line: usize) -> (tempfile::TempDir, PathBuf, Tailer, Parser, Values) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.log");
        let t = Tailer::new(&path, from_end, max_line);
        (dir, path, t, parser(), Values::default())
    }

    /// Steps until the tailer waits.
    fn settle(t: &mut Tailer, c: &mut Parser, v: &mut Values) -> Step {
        loop {
            match t.step(c, v, 1 << 20).unwrap() {
                Step::More(_) => {}
                other => return other,
            }
        }
    }

    #[test]
    fn a_truncate_that_regrows_past_the_offset_is_caught_by_the_head() {
        let (_dir, path, mut t, mut c, mut v) = tailing(false, 1024);
        append(&path, b"loss=1\nloss=2\n");
        settle(&mut t, &mut c, &mut v);
        // Truncated and regrown past the old offset (14 bytes) before the tailer looks again.
        std::fs::write(&path, b"loss=30\nloss=40\nloss=50\n").unwrap();
        settle(&mut t, &mut c, &mut v);
        assert_eq!(v.0, ["1", "2", "30", "40", "50"]);
        assert_eq!(t.stats().truncations, 1);
    }

    #[test]
    fn crlf_nul_invalid_utf8_long_and_partial_lines_are_read_once() {
        let (_dir, path, mut t, mut c, mut v) = tailing(false, 32);
        assert_eq!(settle(&mut t, &mut c, &mut v), Step::Missing, "not created yet");
        append(&path, b"loss=1\r\n\x00\xff\xfe garbage\nloss=");
        assert_eq!(settle(&mut t, &mut c, &mut v), Step::Eof(25));
        append(&path, b"2\n");
        append(&path, &[b'x'; 100]);
        append(&path, b" loss=9\n\xc3\x28 loss=3\n");
        settle(&mut t, &mut c, &mut v);
        assert_eq!(v.0, ["1", "2", "3"]);
        assert_eq!((t.stats().lines.lines, t.stats().lines.too_long), (5, 1));
        assert_eq!(t.stats().opens, 1);
    }

    #[test]
    fn from_end_skips_what_the_file_holds() {
        let (_dir, path, mut t, mut c, mut v) = tailing(true, 1024);
        append(&path, b"loss=1\n");
        settle(&mut t, &mut c, &mut v);
        append(&path, b"loss=2\n");
        settle(&mut t, &mut c, &mut v);
        assert_eq!(v.0, ["2"]);
    }

    /// One step of the property test's script.
    #[derive(Debug, Clone)]
    enum Action {
        /// Append this many complete lines.
        Write(u8),
        /// Append one line in two writes, with a tailer step between them.
        Split,
        /// Let the tailer read.
        Step,
        /// Rename the file away and create a new one.
        Rotate,
        /// Copy the file away and truncate it (copytruncate).
        Truncate,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fate {
        Pending,
        Read,
        AtRisk,
    }

    use proptest::prelude::*;

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            4 => (1u8..5).prop_map(Action::Write),
            1 => Just(Action::Split),
            4 => Just(Action::Step),
            1 => Just(Action::Rotate),
            1 => Just(Action::Truncate),
        ]
    }

    /// Runs a script of actions against real files and the model; see the property below.
    fn run_script(actions: &[Action]) -> Result<(), TestCaseError> {
        let (dir, path, mut t, mut c, mut v) = tailing(false, 1024);
        // Model: every line's id, the generation of the file it went to, its fate.
        let mut lines: Vec<(u64, u32, Fate)> = Vec::new();
        let (mut cur, mut open): (u32, Option<u32>) = (0, None);
        let mut next = 0u64;
        let mut step = |t: &mut Tailer, c: &mut Parser, v: &mut Values, lines: &mut Vec<_>, cur: u32| {
            settle(t, c, v);
            for l in lines.iter_mut().filter(|l: &&mut (u64, u32, Fate)| l.2 == Fate::Pending) {
                // The open file is drained, the path's file read; a file in between was never opened.
                l.2 = if l.1 == cur || Some(l.1) == open { Fate::Read } else { Fate::AtRisk };
            }
            if path.exists() {
                open = Some(cur);
            }
        };
        for a in actions {
            match a {
                Action::Write(n) => {
                    let mut buf = Vec::new();
                    for _ in 0..*n {
                        buf.extend_from_slice(format!("loss={next}\n").as_bytes());
                        lines.push((next, cur, Fate::Pending));
                        next += 1;
                    }
                    append(&path, &buf);
                }
                Action::Split => {
                    append(&path, b"loss=");
                    step(&mut t, &mut c, &mut v, &mut lines, cur);
                    append(&path, format!("{next}\n").as_bytes());
                    lines.push((next, cur, Fate::Pending));
                    next += 1;
                }
                Action::Step => step(&mut t, &mut c, &mut v, &mut lines, cur),
                Action::Rotate => {
                    if path.exists() {
                        std::fs::rename(&path, dir.path().join(format!("train.log.{cur}"))).unwrap();
                    }
                    cur += 1;
                    append(&path, b"");
                }
                Action::Truncate => {
                    if path.exists() {
                        std::fs::copy(&path, dir.path().join(format!("train.log.{cur}.copy"))).unwrap();
                        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
                    }
                    for l in lines.iter_mut().filter(|l| l.2 == Fate::Pending && l.1 == cur) {
                        l.2 = Fate::AtRisk;
                    }
                }
            }
        }
        step(&mut t, &mut c, &mut v, &mut lines, cur);
        let read: Vec<u64> = v.0.iter().map(|s| s.parse().unwrap()).collect();
        prop_assert!(read.windows(2).all(|w| w[0] < w[1]), "in order, none twice: {read:?}");
        prop_assert!(read.iter().all(|id| *id < next), "only what was written: {read:?}");
        let must = lines.iter().filter(|l| l.2 == Fate::Read).map(|l| l.0);
        let missing: Vec<u64> = must.filter(|id| !read.contains(id)).collect();
        prop_assert!(missing.is_empty(), "lost {missing:?}; read {read:?}");
        let truncated = actions.iter().any(|a| matches!(a, Action::Truncate));
        if !truncated && lines.iter().all(|l| l.2 != Fate::AtRisk) {
            prop_assert_eq!(read.len() as u64, next, "nothing lost without truncation");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random write/rotate/truncate scripts against a model: no line is read twice, lines come in order,
        /// every line the model says must survive is read, and nothing is read that was not written.
        #[test]
        fn random_writes_rotations_and_truncations_match_the_model(
            actions in proptest::collection::vec(action(), 1..40)
        ) {
            run_script(&actions)?;
        }
    }

    fn id(ino: u64) -> FileId {
        FileId { dev: 1, ino }
    }

    #[test]
    fn classify_decides_from_a_table() {
        let abc = Head::new(b"abc");
        let seen = Seen { id: id(7), offset: 10, head: abc };
        let now = |path: Option<FileId>, size: u64, head: &[u8]| Now { path, size, head: Head::new(head) };
        let table: &[(&str, Now, Change)] = &[
            ("unchanged at eof", now(Some(id(7)), 10, b"abc"), Change::Nothing),
            ("grew since the read", now(Some(id(7)), 15, b"abc"), Change::Nothing),
            ("shrank", now(Some(id(7)), 3, b"abc"), Change::Truncated),
            ("emptied", now(Some(id(7)), 0, b""), Change::Truncated),
            ("regrew past the offset with a new start", now(Some(id(7)), 40, b"xyz"), Change::Truncated),
            ("regrew with the same start (blind spot)", now(Some(id(7)), 40, b"abc"), Change::Nothing),
            ("deleted", now(None, 10, b"abc"), Change::Gone),
            ("renamed away, nothing new yet", now(None, 12, b"abc"), Change::Gone),
            ("rotated", now(Some(id(8)), 10, b"abc"), Change::Rotated),
            ("same inode on another device", now(Some(FileId { dev: 2, ino: 7 }), 10, b"abc"), Change::Rotated),
            ("rotated and the old one truncated", now(Some(id(8)), 0, b""), Change::Truncated),
            ("deleted and truncated", now(None, 0, b""), Change::Truncated),
        ];
        for (name, now, want) in table {
            assert_eq!(classify(&seen, now), *want, "{name}");
        }
        let fresh = Seen { id: id(7), offset: 0, head: Head::default() };
        assert_eq!(classify(&fresh, &now(Some(id(7)), 0, b"")), Change::Nothing, "empty file, nothing read");
    }

    #[test]
    fn head_keeps_only_the_first_bytes() {
        let mut h = Head::new(b"ab");
        h.extend(&[b'x'; 100]);
        assert_eq!(h.len(), HEAD_BYTES);
        let mut full = vec![b'a', b'b'];
        full.extend([b'x'; HEAD_BYTES - 2]);
        assert_eq!(h, Head::new(&full));
    }
}
