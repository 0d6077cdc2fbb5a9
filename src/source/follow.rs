//! The followed file (`--follow`): a log file read as it grows, across rotation and truncation – or a directory
//! of TensorBoard event files, new files and appended records.
//!
//! [`follow`] drives a [`Followed`] source – a [`Tailer`], or an [`EventDir`] – from inotify events (the file's
//! directory; the whole tree of an event directory)
//! (through the `notify` crate; the callback only wakes the reader) plus a slow safety timer; when inotify is
//! unavailable or exhausted it polls instead, backing off from 1 ms to 250 ms while the file is quiet. Between
//! events nothing runs: idle costs nothing. Reading a large backlog is done in bounded steps so a signal is
//! seen between them.
//!
//! A named pipe (FIFO) has no size, offset or rotation: it is read as a pipe ([`follow_fifo`]), opened
//! without blocking and read only when readable, so a signal is seen whether a writer is there or not, and
//! opened for writing too so that it never reports end of file: like `tail -F`, it reads every writer, one
//! after another, until a signal or `--until-idle`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, sleep_until};

use super::tail::{Step, TailError, Tailer};
use super::tfevents::RecordSink;
use super::tfevents::dir::EventDir;
use super::{End, Feed, LiveSink, SourceError, StopOptions};
use crate::backoff::Backoff;
use crate::parser::{ObservationSink, Parser};
use crate::signal::Signals;
use crate::snapshot::Phase;
use crate::snapshot::SourceStats;

/// Bytes read per step before looking at signals again (a few milliseconds of work).
const STEP_BUDGET: u64 = 4 << 20;
/// With inotify: a check this often anyway, for what no event names (a deleted file still written to).
const SAFETY_CHECK: Duration = Duration::from_secs(1);
/// Without inotify: the poll interval, 1 ms after data doubling to 250 ms while the file is quiet.
const POLL: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(250));

/// Watches `path`'s directory and wakes `wake` on every event that names `path`. `None` when inotify is
/// unavailable (no directory yet, limits exhausted): the caller polls.
fn watch(path: &Path, wake: Arc<Notify>) -> Option<RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name()?.to_owned();
    let handler = move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            // Our own opens and the metadata changes of reads are not news.
            Ok(ev)
                if matches!(
                    ev.kind,
                    EventKind::Access(_) | EventKind::Modify(notify::event::ModifyKind::Metadata(_))
                ) =>
            {
                ev.need_rescan()
            }
            Ok(ev) => ev.need_rescan() || ev.paths.iter().any(|p| p.file_name() == Some(name.as_os_str())),
            Err(_) => true,
        };
        if relevant {
            wake.notify_one();
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; polling the log (at most every 250 ms)");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        let dir = dir.display();
        tracing::warn!(%dir, error = %e, "cannot watch the log's directory; polling (at most every 250 ms)");
        return None;
    }
    Some(watcher)
}

/// What [`follow`] drives: a source stepped synchronously (never waiting), watched for changes.
pub trait Followed {
    /// Reads what is readable, up to about `budget` bytes.
    fn step<S: ObservationSink>(&mut self, parser: &mut Parser, sink: &mut S, budget: u64)
    -> Result<Step, SourceError>;
    /// Ends the stream (a last partial line or record is processed).
    fn finish<S: ObservationSink>(&mut self, parser: &mut Parser, sink: &mut S);
    /// The counters so far.
    fn stats(&self) -> SourceStats;
    /// A watch that wakes `wake` when the source may have changed, `None` to poll.
    fn watch(&self, wake: Arc<Notify>) -> Option<RecommendedWatcher>;
    /// Whether a failed watch is worth trying again (a directory that does not exist yet).
    fn retry_watch(&self) -> bool {
        false
    }
    /// The poll or safety timer fired: look for what no event named.
    fn tick(&self) {}
    /// The path and line bound when the followed path is a named pipe, read as a pipe instead.
    fn fifo(&self) -> Option<(std::path::PathBuf, usize)> {
        None
    }
}

impl Followed for Tailer {
    fn step<S: ObservationSink>(
        &mut self,
        parser: &mut Parser,
        sink: &mut S,
        budget: u64,
    ) -> Result<Step, SourceError> {
        match Tailer::step(self, parser, sink, budget) {
            Ok(step) => Ok(step),
            // The path became a named pipe after the follow started: it cannot be read as a file.
            Err(e @ TailError::Fifo { .. }) => {
                tracing::error!("{e}; start the follow once the pipe exists");
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn finish<S: ObservationSink>(&mut self, parser: &mut Parser, sink: &mut S) {
        Tailer::finish(self, parser, sink);
    }

    fn stats(&self) -> SourceStats {
        Tailer::stats(self)
    }

    fn watch(&self, wake: Arc<Notify>) -> Option<RecommendedWatcher> {
        watch(self.path(), wake)
    }

    fn fifo(&self) -> Option<(std::path::PathBuf, usize)> {
        let is_fifo =
            std::fs::metadata(self.path()).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
        is_fifo.then(|| (self.path().to_path_buf(), self.max_line_bytes()))
    }
}

impl<H: RecordSink> Followed for EventDir<H> {
    fn step<S: ObservationSink>(
        &mut self,
        parser: &mut Parser,
        sink: &mut S,
        budget: u64,
    ) -> Result<Step, SourceError> {
        EventDir::step(self, parser, sink, budget)
    }

    fn finish<S: ObservationSink>(&mut self, parser: &mut Parser, sink: &mut S) {
        EventDir::finish(self, parser, sink);
    }

    fn stats(&self) -> SourceStats {
        EventDir::stats(self)
    }

    fn watch(&self, wake: Arc<Notify>) -> Option<RecommendedWatcher> {
        EventDir::watch(self, wake)
    }

    fn retry_watch(&self) -> bool {
        !self.found_root()
    }

    fn tick(&self) {
        self.rescan();
    }
}

/// Follows `tailer` until `--until-idle` or a signal. See the module documentation.
pub async fn follow<T: Followed, S: LiveSink>(
    mut tailer: T,
    feed: &mut Feed<'_, S>,
    signals: &mut Signals,
    opts: StopOptions,
) -> Result<End, SourceError> {
    if let Some((path, max_line_bytes)) = tailer.fifo() {
        return follow_fifo(&path, max_line_bytes, feed, signals, opts).await;
    }
    let wake = Arc::new(Notify::new());
    let mut watcher = tailer.watch(wake.clone());
    let mut poll = if watcher.is_none() { POLL } else { Backoff::new(SAFETY_CHECK, SAFETY_CHECK) };
    let mut last_data = Instant::now();
    let end = loop {
        if watcher.is_none() && tailer.retry_watch() {
            watcher = tailer.watch(wake.clone());
            if watcher.is_some() {
                poll = Backoff::new(SAFETY_CHECK, SAFETY_CHECK);
            }
        }
        let step = step(&mut tailer, feed)?;
        if step.bytes() > 0 {
            last_data = Instant::now();
            poll.reset();
        }
        if let Step::More(_) = step {
            feed.after_read();
            tokio::select! {
                biased;
                sig = signals.recv() => break drain(&mut tailer, feed, signals, opts.grace, sig).await?,
                () = tokio::task::yield_now() => continue,
            }
        }
        feed.before_wait();
        let idle_at = opts.until_idle.map(|d| last_data + d);
        tokio::select! {
            biased;
            sig = signals.recv() => break drain(&mut tailer, feed, signals, opts.grace, sig).await?,
            () = wake.notified() => {}
            () = sleep(poll.peek()) => {
                poll.pause();
                tailer.tick();
            }
            () = sleep_until(idle_at.unwrap_or_else(Instant::now)), if idle_at.is_some() => break End::Idle,
        }
    };
    drop(watcher);
    tailer.finish(feed.parser, feed.sink);
    feed.stats = tailer.stats();
    feed.end();
    Ok(end)
}

fn step<T: Followed, S: LiveSink>(tailer: &mut T, feed: &mut Feed<'_, S>) -> Result<Step, SourceError> {
    let step = tailer.step(feed.parser, feed.sink, STEP_BUDGET)?;
    feed.stats = tailer.stats();
    if feed.stats.opens > 0 {
        feed.phase = Phase::Reading;
    }
    Ok(step)
}

/// After the first signal: read what is readable, within the grace period; a second signal stops at once.
async fn drain<T: Followed, S: LiveSink>(
    tailer: &mut T,
    feed: &mut Feed<'_, S>,
    signals: &mut Signals,
    grace: Duration,
    sig: i32,
) -> Result<End, SourceError> {
    tracing::info!(signal = sig, "stopping: reading what is readable");
    let deadline = Instant::now() + grace;
    loop {
        if !matches!(step(tailer, feed)?, Step::More(_)) {
            return Ok(End::Signalled(sig));
        }
        feed.after_read();
        tokio::select! {
            biased;
            signal = signals.recv() => return Err(SourceError::Interrupted { signal }),
            () = sleep_until(deadline) => {
                tracing::warn!("--shutdown-grace passed while reading; stopping with what was read");
                return Ok(End::Signalled(sig));
            }
            () = tokio::task::yield_now() => {}
        }
    }
}

/// Follows the named pipe at `path` until `--until-idle` or a signal (see the module documentation).
async fn follow_fifo<S: LiveSink>(
    path: &Path,
    max_line_bytes: usize,
    feed: &mut Feed<'_, S>,
    signals: &mut Signals,
    opts: StopOptions,
) -> Result<End, SourceError> {
    use tokio::io::AsyncReadExt;
    let open = tokio::net::unix::pipe::OpenOptions::new().read_write(true).open_receiver(path);
    let mut pipe = open.map_err(|source| SourceError::Open { path: path.to_path_buf(), source })?;
    tracing::info!(path = %path.display(), "following a named pipe: every writer, until a signal or --until-idle");
    feed.stats.opens += 1;
    feed.phase = Phase::Reading;
    let mut lines = crate::lines::LineBuffer::new(max_line_bytes);
    let mut last_data = Instant::now();
    let end = loop {
        feed.before_wait();
        let idle_at = opts.until_idle.map(|d| last_data + d);
        let read = tokio::select! {
            biased;
            sig = signals.recv() => {
                // What is in the pipe now is read; nothing is waited for.
                tracing::info!(signal = sig, "stopping: reading what is readable");
                while let Ok(n @ 1..) = pipe.try_read(lines.space()) {
                    take(&mut lines, n, feed);
                }
                break End::Signalled(sig);
            }
            read = pipe.read(lines.space()) => read,
            () = sleep_until(idle_at.unwrap_or_else(Instant::now)), if idle_at.is_some() => break End::Idle,
        };
        match read {
            Ok(0) => break End::Eof,
            Ok(n) => {
                last_data = Instant::now();
                take(&mut lines, n, feed);
                feed.after_read();
            }
            Err(e) => {
                feed.stats.read_errors += 1;
                tracing::warn!(path = %path.display(), error = %e, "reading the named pipe failed");
                break End::Eof;
            }
        }
    };
    lines.finish_into(&mut feed.parser.lines(feed.sink));
    feed.set_lines(lines.stats());
    feed.end();
    Ok(end)
}

/// `n` bytes were read into `lines`: parse its complete lines.
fn take<S: LiveSink>(lines: &mut crate::lines::LineBuffer, n: usize, feed: &mut Feed<'_, S>) {
    lines.commit(n);
    lines.drain_into(&mut feed.parser.lines(feed.sink));
    feed.set_lines(lines.stats());
}
