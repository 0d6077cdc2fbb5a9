//! Event files on disk: found below a directory, named by their run, read to their end or followed.
//!
//! [`EventDir`] owns every event file found below its root (or the one file it was given) and steps them like
//! the text tailer steps its file ([`EventDir::step`]: synchronous, never waits, a read budget per step): it
//! walks the tree when told something may have appeared, opens new files, reads what each file has beyond its
//! offset into its own [`RecordBuffer`] and hands the records to a [`RecordSink`]. A partial record at a file's
//! end waits there, without error, until its writer completes it; only [`EventDir::finish`] calls it cut. A file
//! that shrank is read again from its start; a file that was deleted is read to its end through the handle
//! already open. The async driver is [`crate::source::follow`] (inotify on the whole tree, polling fallback).
//!
//! The walk is TensorBoard's and Katib's (`os.walk`, top-down: a directory's files, then each subdirectory,
//! depth-first; symbolic links to directories are not entered; files are event files by [`is_event_file`]). In
//! [`Order::Sorted`] (the native reader) names are visited sorted, so output does not depend on the file
//! system; in [`Order::Katib`] they are visited in directory order, as Katib's collector visits them.
//!
//! Names ([`Naming`]): a metric is its tag, prefixed by its run – the file's directory relative to the root –
//! when runs are named: always with `--follow` (a run may still appear), and when the first walk found event
//! files in more than one directory otherwise (`train/loss`, `validation/loss`; a single run keeps bare tags).

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use super::record::{Damage, Frame, RecordBuffer};
use super::{FileInfo, RecordSink, is_event_file};
use crate::parser::{ObservationSink, Parser};
use crate::snapshot::SourceStats;
use crate::source::SourceError;
use crate::source::tail::Step;

/// The order directory entries are visited in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Sorted by name (bytewise): the same on every file system.
    Sorted,
    /// The directory's own order, as `os.walk` (Katib's collector) visits it.
    Katib,
}

/// How metric names are prefixed by their run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Runs are named when the first walk finds event files in more than one directory.
    Several,
    /// A run below the root is always named.
    Always,
    /// Never: bare tags (Katib's semantics name metrics themselves).
    Never,
}

/// Every event file below `root` as `(path as walked, run)`, in walk order; a missing or unreadable root gives
/// nothing, an unreadable subdirectory is skipped.
pub fn walk(root: &Path, order: Order) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    if std::fs::metadata(root).is_ok_and(|m| m.is_file()) {
        if root.file_name().is_some_and(|n| is_event_file(n.as_bytes())) {
            out.push((root.to_path_buf(), String::new()));
        }
        return out;
    }
    walk_into(root, "", order, &mut out, 0);
    out
}

fn walk_into(dir: &Path, run: &str, order: Order, out: &mut Vec<(PathBuf, String)>, depth: u32) {
    if depth > 64 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        // `os.walk` asks `is_dir()`, which follows symbolic links; it then does not enter linked directories.
        let is_dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
        if is_dir {
            let link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if !link {
                dirs.push(name);
            }
        } else {
            files.push(name);
        }
    }
    if order == Order::Sorted {
        dirs.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        files.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    }
    for f in files {
        if is_event_file(f.as_bytes()) {
            out.push((dir.join(&f), run.to_string()));
        }
    }
    for d in dirs {
        let sub =
            if run.is_empty() { d.to_string_lossy().into_owned() } else { format!("{run}/{}", d.to_string_lossy()) };
        walk_into(&dir.join(&d), &sub, order, out, depth + 1);
    }
}

/// One event file being read.
#[derive(Debug)]
struct EventFile {
    info: FileInfo,
    file: Option<File>,
    records: RecordBuffer,
    /// Bytes read from the file.
    offset: u64,
    /// Reading stopped at damage that cannot be read past (or the consumer stopped it).
    stopped: bool,
    /// The file is gone (not found when opened): nothing to read.
    gone: bool,
}

/// The event files below a root, read or followed. See the module documentation.
#[derive(Debug)]
pub struct EventDir<H> {
    root: PathBuf,
    order: Order,
    naming: Naming,
    /// Whether runs are named (decided by the first walk that finds files, for [`Naming::Several`]).
    named: Option<bool>,
    files: Vec<EventFile>,
    handler: H,
    stats: SourceStats,
    max_record: usize,
    /// Set by the watcher when something may have appeared; the first step always walks.
    rescan: Arc<AtomicBool>,
    /// The root existed at the last walk.
    found_root: bool,
}

impl<H: RecordSink> EventDir<H> {
    /// The event files below `root` (a directory, or one event file), their records to `handler`; records over
    /// `max_record` bytes are skipped.
    pub fn new(root: impl Into<PathBuf>, order: Order, naming: Naming, handler: H, max_record: usize) -> Self {
        EventDir {
            root: root.into(),
            order,
            naming,
            named: None,
            files: Vec::new(),
            handler,
            stats: SourceStats::default(),
            max_record,
            rescan: Arc::new(AtomicBool::new(true)),
            found_root: false,
        }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The records' consumer.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The records' consumer, taken out.
    pub fn into_handler(self) -> H {
        self.handler
    }

    /// The files found so far, in the order found.
    pub fn files(&self) -> impl Iterator<Item = &FileInfo> {
        self.files.iter().map(|f| &f.info)
    }

    /// The counters so far.
    pub fn stats(&self) -> SourceStats {
        let mut s = self.stats;
        s.events = self.handler.stats();
        s.events.files = self.files.len() as u64;
        s
    }

    /// Walks the tree again on the next step (something may have appeared).
    pub fn rescan(&self) {
        self.rescan.store(true, Ordering::Relaxed);
    }

    /// Whether the root existed at the last walk.
    pub fn found_root(&self) -> bool {
        self.found_root
    }

    fn walk(&mut self) {
        self.found_root = self.root.exists();
        let found = walk(&self.root, self.order);
        if self.named.is_none() && !found.is_empty() {
            let first = &found[0].1;
            self.named = Some(match self.naming {
                Naming::Never => false,
                Naming::Always => true,
                Naming::Several => found.iter().any(|(_, run)| run != first),
            });
        }
        let named = self.named.unwrap_or(self.naming == Naming::Always);
        for (path, run) in found {
            if self.files.iter().any(|f| f.info.path == path) {
                continue;
            }
            let prefix = if named && !run.is_empty() { format!("{run}/") } else { String::new() };
            let info = FileInfo { index: self.files.len(), path, run, prefix };
            tracing::debug!(file = %info.path.display(), "event file found");
            self.files.push(EventFile {
                info,
                file: None,
                records: RecordBuffer::new(self.max_record),
                offset: 0,
                stopped: false,
                gone: false,
            });
        }
    }

    /// Walks if asked to, then reads up to about `budget` bytes from the files; never waits.
    pub fn step(
        &mut self,
        parser: &mut Parser,
        sink: &mut impl ObservationSink,
        budget: u64,
    ) -> Result<Step, SourceError> {
        if self.rescan.swap(false, Ordering::Relaxed) {
            self.walk();
        }
        let mut total = 0u64;
        let EventDir { files, handler, stats, .. } = self;
        for f in files.iter_mut() {
            if f.stopped || f.gone {
                continue;
            }
            if f.file.is_none() {
                match File::open(&f.info.path) {
                    Ok(file) => {
                        stats.opens += 1;
                        f.file = Some(file);
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        f.gone = true;
                        continue;
                    }
                    Err(e) => {
                        stats.read_errors += 1;
                        tracing::warn!(file = %f.info.path.display(), error = %e, "cannot open event file; skipped");
                        f.gone = true;
                        continue;
                    }
                }
            }
            loop {
                if total >= budget {
                    return Ok(Step::More(total));
                }
                let Some(file) = f.file.as_mut() else { break };
                match file.read(f.records.space()) {
                    Ok(0) => {
                        // Shrunk below what was read: the file was truncated (or replaced in place).
                        let len = file.metadata().map(|m| m.len()).unwrap_or(f.offset);
                        if len < f.offset && file.seek(SeekFrom::Start(0)).is_ok() {
                            stats.truncations += 1;
                            tracing::info!(file = %f.info.path.display(), "event file truncated; reading it again");
                            f.records.reset();
                            f.offset = 0;
                            handler.restarted(&f.info);
                            continue;
                        }
                        break;
                    }
                    Ok(n) => {
                        f.offset += n as u64;
                        total += n as u64;
                        stats.lines.bytes += n as u64;
                        f.records.commit(n);
                        drain(f, handler, parser, sink, false);
                        if f.stopped {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        stats.read_errors += 1;
                        tracing::warn!(file = %f.info.path.display(), error = %e, "read failed; retrying later");
                        break;
                    }
                }
            }
        }
        if self.files.is_empty() && !self.found_root { Ok(Step::Missing) } else { Ok(Step::Eof(total)) }
    }

    /// Ends the reading: a record cut at a file's end is damage ([`Damage::Truncated`]).
    pub fn finish(&mut self, parser: &mut Parser, sink: &mut impl ObservationSink) {
        let EventDir { files, handler, .. } = self;
        for f in files.iter_mut() {
            if !f.stopped && f.file.is_some() {
                drain(f, handler, parser, sink, true);
            }
        }
    }

    /// Reads every file to its end, then [`EventDir::finish`]: the local mode.
    pub fn read_all(&mut self, parser: &mut Parser, sink: &mut impl ObservationSink) -> Result<(), SourceError> {
        while let Step::More(_) = self.step(parser, sink, u64::MAX)? {}
        self.finish(parser, sink);
        Ok(())
    }

    /// An inotify watch of the whole tree that wakes `wake` on changes and asks for a walk when entries appear,
    /// vanish or move; `None` when the root does not exist yet or inotify is unavailable (the caller polls).
    pub fn watch(&self, wake: Arc<Notify>) -> Option<RecommendedWatcher> {
        let rescan = self.rescan.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let (relevant, structural) = match &res {
                Ok(ev) => match ev.kind {
                    EventKind::Access(_) | EventKind::Modify(notify::event::ModifyKind::Metadata(_)) => {
                        (ev.need_rescan(), ev.need_rescan())
                    }
                    EventKind::Modify(notify::event::ModifyKind::Data(_)) => (true, ev.need_rescan()),
                    _ => (true, true),
                },
                Err(_) => (true, true),
            };
            if structural {
                rescan.store(true, Ordering::Relaxed);
            }
            if relevant {
                wake.notify_one();
            }
        };
        let dir = if self.root.is_dir() { self.root.clone() } else { self.root.parent()?.to_path_buf() };
        if !dir.is_dir() {
            return None;
        }
        let mut watcher = notify::recommended_watcher(handler).ok()?;
        let mode = if self.root.is_dir() { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        if let Err(e) = watcher.watch(&dir, mode) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the event files; polling");
            return None;
        }
        // What appeared between the first walk and the watch.
        self.rescan();
        Some(watcher)
    }
}

/// Hands the complete records held for `f` to `handler` (and, at the end, says a cut one).
fn drain<H: RecordSink>(
    f: &mut EventFile,
    handler: &mut H,
    parser: &mut Parser,
    sink: &mut impl ObservationSink,
    at_end: bool,
) {
    let EventFile { info, records, stopped, .. } = f;
    let mut each = |frame: Frame<'_>| {
        if *stopped {
            return;
        }
        match frame {
            Frame::Record { data, .. } => handler.record(info, data, parser, sink),
            Frame::Damaged { damage, offset } => {
                let go_on = handler.damaged(info, damage, offset);
                if !go_on || damage == Damage::LengthCrc {
                    *stopped = true;
                }
            }
        }
    };
    if at_end { records.finish(&mut each) } else { records.drain(&mut each) }
}
