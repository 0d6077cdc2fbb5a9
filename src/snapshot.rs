//! The shared state sinks read off the hot path: a published [`Snapshot`] of the aggregate and counters.
//!
//! The reader owns the [`Parser`]; after reading it calls [`Publisher::maybe_publish`] (rate-limited, so a
//! fast reader never spends its time copying) and [`Publisher::publish`] whenever it is about to wait or stop, so
//! what sinks see is never older than the last wait. Sinks hold a [`SnapshotRx`] and read the latest snapshot
//! whenever they like (a scrape, a status patch): reading never blocks the reader and the reader never waits
//! for a sink.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::aggregate::MetricStats;
use crate::lines::LineStats;
use crate::parser::{Counters, Parser};

/// Counters kept by a source (file opens, rotations, …), published with the aggregate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceStats {
    /// Times the log was opened (the first open included).
    pub opens: u64,
    /// Rotations seen (the path now names another file).
    pub rotations: u64,
    /// Truncations seen (the file shrank, or its start changed).
    pub truncations: u64,
    /// Read errors (each counted, the source goes on).
    pub read_errors: u64,
    /// The source's line buffers' counters, summed over its streams.
    pub lines: LineStats,
    /// What an event-file source read (TensorBoard records); zero for text sources.
    pub events: EventStats,
    /// How the training ended, when the source can tell (the pod-log source reads the container's exit).
    pub training: Training,
}

/// How the training whose output a source reads ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Training {
    /// Not known (still running, or a source that cannot tell).
    #[default]
    Unknown,
    /// The training container exited 0 for good.
    Succeeded,
    /// It failed for good, was killed, or its pod went away.
    Failed,
}

/// Counters of an event-file source ([`crate::source::tfevents`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventStats {
    /// Event files found.
    pub files: u64,
    /// Records read whose CRCs matched.
    pub records: u64,
    /// Summary values that are not a scalar (images, histograms, text, other plugins, non-scalar tensors),
    /// skipped.
    pub skipped_values: u64,
    /// Damaged records: a CRC mismatch, a cut record, a record over the size limit.
    pub damaged: u64,
    /// Records whose CRCs matched but that are not an `Event`.
    pub undecodable: u64,
}

/// Where the source is in its life, for readiness and for sinks that flush at the end.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not opened yet (a file that does not exist yet, a container still starting).
    #[default]
    Starting,
    /// Opened and the first read done: ready.
    Reading,
    /// The source ended (EOF of a file read to its end, the child exited, training ended): final values.
    Ended,
}

/// Everything a sink may want, as of one moment.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Per-metric statistics, in order of first appearance.
    pub metrics: Vec<MetricStats>,
    /// The parser's counters.
    pub counters: Counters,
    /// The source's counters.
    pub source: SourceStats,
    /// The source's phase.
    pub phase: Phase,
    /// Increases with every publish.
    pub generation: u64,
}

/// Receives snapshots.
pub type SnapshotRx = watch::Receiver<Arc<Snapshot>>;

/// Publishes snapshots of a parser and its source.
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Arc<Snapshot>>,
    last: Option<Instant>,
    last_observations: u64,
    min_interval: Duration,
    generation: u64,
}

/// The default minimum time between two rate-limited publishes.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(1);

impl Publisher {
    /// A publisher and the receiver sinks clone.
    pub fn new(min_interval: Duration) -> (Self, SnapshotRx) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        (Publisher { tx, last: None, last_observations: 0, min_interval, generation: 0 }, rx)
    }

    /// Publishes unless the last publish was less than the minimum interval ago.
    pub fn maybe_publish(&mut self, c: &Parser, source: SourceStats, phase: Phase) {
        if self.last.is_some_and(|t| t.elapsed() < self.min_interval) {
            return;
        }
        self.publish(c, source, phase);
    }

    /// Publishes now (call before waiting, and at the end with [`Phase::Ended`]).
    pub fn publish(&mut self, c: &Parser, source: SourceStats, phase: Phase) {
        let counters = c.counters();
        let current = self.tx.borrow().clone();
        // Nothing new: keep the old snapshot (and its generation), so idle costs nothing downstream.
        if counters.observations == self.last_observations
            && current.phase == phase
            && current.source == source
            && self.last.is_some()
        {
            return;
        }
        self.generation += 1;
        self.last = Some(Instant::now());
        self.last_observations = counters.observations;
        let snapshot = Snapshot {
            metrics: c.aggregate().metrics().to_vec(),
            counters,
            source,
            phase,
            generation: self.generation,
        };
        self.tx.send_replace(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::LineBuffer;
    use crate::rules::Rules;

    #[test]
    fn publishes_only_what_changed_and_rate_limits() {
        let rules = Rules::classic();
        let mut c = Parser::new(rules, 10);
        let mut buf = LineBuffer::new(1024);
        let (mut p, rx) = Publisher::new(Duration::from_secs(3600));
        buf.feed_into(b"loss=1\n", &mut c.lines(&mut ()));
        p.publish(&c, SourceStats::default(), Phase::Reading);
        assert_eq!(rx.borrow().generation, 1);
        assert_eq!(rx.borrow().metrics[0].latest_raw, "1");
        p.publish(&c, SourceStats::default(), Phase::Reading);
        assert_eq!(rx.borrow().generation, 1, "nothing changed");
        buf.feed_into(b"loss=2\n", &mut c.lines(&mut ()));
        p.maybe_publish(&c, SourceStats::default(), Phase::Reading);
        assert_eq!(rx.borrow().generation, 1, "rate-limited");
        p.publish(&c, SourceStats::default(), Phase::Ended);
        assert_eq!((rx.borrow().generation, rx.borrow().phase), (2, Phase::Ended));
    }
}
