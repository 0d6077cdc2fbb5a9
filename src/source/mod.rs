//! Sources: where log bytes come from. Each pushes chunks into a [`Collector`]; none parses anything itself.
//!
//! [`read_to_end`] is the local mode's plain synchronous loop (a file read to its end: the fast path). The live
//! sources – [`file::follow`] (a growing file), [`stdin::follow`] and [`child::wrap`] (a command's stdout and
//! stderr) – run on a current-thread tokio runtime, publish snapshots as they read ([`Live`]) and stop on
//! SIGINT/SIGTERM ([`crate::stop`]).

use std::io::{self, ErrorKind, Read};
use std::time::Duration;

use crate::collect::{Collector, ObservationSink};
use crate::snapshot::{Phase, Publisher, SourceStats};

pub mod child;
pub mod file;
pub mod pod_log;
pub mod stdin;
pub mod tail;

/// Reads `reader` to its end into `collector`, reading straight into the collector's buffer.
///
/// Returns the bytes read. An interrupted read is retried; any other error ends the read and is returned,
/// after everything read before it was processed (the caller decides whether that is fatal).
pub fn read_to_end(
    reader: &mut impl Read,
    collector: &mut Collector,
    sink: &mut impl ObservationSink,
) -> io::Result<u64> {
    read_to_end_with(reader, collector, sink, |_, _| {})
}

/// [`read_to_end`], calling `after_read(collector, short)` after each read; `short` says the read did not fill
/// the space offered (the next read may wait), so a caller can publish at once.
pub fn read_to_end_with(
    reader: &mut impl Read,
    collector: &mut Collector,
    sink: &mut impl ObservationSink,
    mut after_read: impl FnMut(&Collector, bool),
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let space = collector.space();
        let offered = space.len();
        match reader.read(space) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                collector.commit(n, sink);
                after_read(collector, n < offered);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                collector.finish(sink);
                return Err(e);
            }
        }
    }
    collector.finish(sink);
    Ok(total)
}

/// An observation sink that live sources flush before they wait, so what was found is out at once.
pub trait LiveSink: ObservationSink {
    /// Pushes buffered output out (errors are the sink's to keep and report at its end); `collector` holds
    /// the aggregate so far, for sinks that show it (the live table).
    fn flush(&mut self, _collector: &Collector) {}
}

impl LiveSink for () {}

/// How a live source ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// End of input: standard input closed.
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

/// What a live source drives: the collector, the observation sink and the publisher of snapshots.
pub struct Feed<'a, S> {
    /// The core.
    pub collector: &'a mut Collector,
    /// Where each observation goes as it is made.
    pub sink: &'a mut S,
    /// The shared state sinks read.
    pub publisher: &'a mut Publisher,
    /// The source's counters.
    pub stats: SourceStats,
    /// The source's phase.
    pub phase: Phase,
}

impl<S: LiveSink> Feed<'_, S> {
    /// After a read: publish if the last publish is old enough.
    pub fn after_read(&mut self) {
        self.publisher.maybe_publish(self.collector, self.stats, self.phase);
    }

    /// Before waiting: flush the sink and publish now.
    pub fn before_wait(&mut self) {
        self.sink.flush(self.collector);
        self.publisher.publish(self.collector, self.stats, self.phase);
    }

    /// At the end: flush and publish the final state.
    pub fn end(&mut self) {
        self.phase = Phase::Ended;
        self.before_wait();
    }
}
