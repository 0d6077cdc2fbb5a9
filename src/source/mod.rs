//! Sources: where log bytes come from. Each owns one [`LineBuffer`] per byte stream and pushes complete lines
//! into the run's one [`Parser`]; none parses anything itself.
//!
//! [`file`] is the local mode's plain synchronous loop (a file read to its end: the fast path). The live sources
//! – [`follow`] (a growing file, through [`tail`]), [`stdin`] and [`child`] (a command's stdout and stderr, two
//! streams), [`pod_log`] (a container's log through the Kubernetes API) – run on a current-thread tokio
//! runtime, publish snapshots as they read ([`Feed`]) and stop on SIGINT/SIGTERM ([`crate::signal`]).

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::lines::LineStats;
use crate::parser::{ObservationSink, Parser};
use crate::snapshot::{Phase, Publisher, SourceStats};

pub mod child;
pub mod file;
pub mod follow;
pub mod pod_log;
pub mod stdin;
pub mod tail;
pub mod tfevents;

use tail::TailError;

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("log {path} is a directory")]
    Directory { path: PathBuf },
    #[error("no TensorBoard event files (names holding `tfevents`, such as events.out.tfevents.*) in {path}")]
    NoEventFiles { path: PathBuf },
    #[error("reading {path} failed after {bytes} bytes")]
    Read {
        path: PathBuf,
        bytes: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {program:?}")]
    Spawn {
        program: OsString,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the live runtime or signal handlers")]
    Runtime(#[source] io::Error),
    #[error("stopped at once by a second signal {signal}")]
    Interrupted { signal: i32 },
}

impl From<TailError> for SourceError {
    fn from(e: TailError) -> Self {
        match e {
            TailError::Directory { path } => SourceError::Directory { path },
            TailError::Fifo { path } => {
                let source = io::Error::other("a named pipe is read with --follow only");
                SourceError::Open { path, source }
            }
        }
    }
}

/// An observation sink that live sources also flush before they wait and publish to as they read, so what was
/// found is out at once.
pub trait LiveSink: ObservationSink {
    /// Pushes buffered output out (errors are the sink's to keep and report at its end); `parser` holds the
    /// aggregate so far, for sinks that show it (the live table).
    fn flush(&mut self, _parser: &Parser) {}

    /// Publishes the state for the sinks that read snapshots: now, or (`now` false) only when the last publish
    /// is old enough.
    fn publish(&mut self, _parser: &Parser, _source: SourceStats, _phase: Phase, _now: bool) {}
}

impl LiveSink for () {}

impl<A: LiveSink, B: LiveSink> LiveSink for (A, B) {
    fn flush(&mut self, parser: &Parser) {
        self.0.flush(parser);
        self.1.flush(parser);
    }

    fn publish(&mut self, parser: &Parser, source: SourceStats, phase: Phase, now: bool) {
        self.0.publish(parser, source, phase, now);
        self.1.publish(parser, source, phase, now);
    }
}

/// A publisher is a live sink that only publishes.
impl ObservationSink for Publisher {
    fn observe(&mut self, _: &crate::parser::Observation<'_>) {}
}

impl LiveSink for Publisher {
    fn publish(&mut self, parser: &Parser, source: SourceStats, phase: Phase, now: bool) {
        if now {
            Publisher::publish(self, parser, source, phase);
        } else {
            self.maybe_publish(parser, source, phase);
        }
    }
}

/// How a live source ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// End of input: standard input closed, a file read to its end, a container's log read after it
    /// terminated.
    Eof,
    /// `--until-idle` passed without data.
    Idle,
    /// A first SIGINT/SIGTERM (this signal number): what was readable was read.
    Signalled(i32),
    /// The wrapped command exited: trialtail's exit code (the child's, or 128+N for signal N).
    Exited(u8),
}

/// Timing of a live source's stop.
#[derive(Debug, Clone, Copy)]
pub struct StopOptions {
    /// End a follow after this long without data.
    pub until_idle: Option<Duration>,
    /// Time allowed to drain after the first signal.
    pub grace: Duration,
}

/// What a live source drives: the parser and the sink (which publishes snapshots too), plus the source's own
/// counters (its line buffers' included) and phase.
pub struct Feed<'a, S> {
    /// The run's parser.
    pub parser: &'a mut Parser,
    /// Where each observation goes as it is made, and where snapshots are published.
    pub sink: &'a mut S,
    /// The source's counters.
    pub stats: SourceStats,
    /// The source's phase.
    pub phase: Phase,
}

impl<'a, S: LiveSink> Feed<'a, S> {
    /// A feed at its start: no counters, [`Phase::Starting`].
    pub fn new(parser: &'a mut Parser, sink: &'a mut S) -> Self {
        Feed { parser, sink, stats: SourceStats::default(), phase: Phase::Starting }
    }

    /// The source's line buffers now hold these counters (summed over its streams).
    pub fn set_lines(&mut self, lines: LineStats) {
        self.stats.lines = lines;
    }

    /// After a read: publish if the last publish is old enough.
    pub fn after_read(&mut self) {
        self.sink.publish(self.parser, self.stats, self.phase, false);
    }

    /// Before waiting: flush the sink and publish now.
    pub fn before_wait(&mut self) {
        self.sink.flush(self.parser);
        self.sink.publish(self.parser, self.stats, self.phase, true);
    }

    /// At the end: flush and publish the final state.
    pub fn end(&mut self) {
        self.phase = Phase::Ended;
        self.before_wait();
    }
}
