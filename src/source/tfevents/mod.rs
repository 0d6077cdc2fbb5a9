//! TensorBoard event files as a source: the scalars that TensorFlow, Keras, PyTorch's `SummaryWriter`,
//! tensorboardX, Lightning's `TensorBoardLogger` or Hugging Face's Trainer write, read natively.
//!
//! The sans-I/O core, fed bytes, never reading a file itself:
//! - [`record`]: TFRecord framing (length, masked CRC32C of the length, data, masked CRC32C of the data) over
//!   chunks, damage reported per record, memory bounded by a record-size limit;
//! - [`event`]: an `Event` record scanned in place (`wall_time`, `step`, `file_version`, `session_log`, the
//!   summary's values), checked against the generated [`proto`] types;
//! - [`text`]: a scalar's text as numpy prints it (and Python's `repr`, for Katib);
//! - [`Scalars`]: the native reader's [`RecordSink`]: each scalar value of a summary (TF1 `simple_value`, or a
//!   one-element numeric `tensor`: `float_val`, `double_val`, `half_val`, `int_val`, `int64_val`, …, or
//!   `tensor_content` in its dtype) becomes a [`Record`] for [`Parser::record`]; values of other plugins (images,
//!   histograms, text, audio, PR curves, non-scalar tensors) are skipped and counted.
//!
//! The I/O is [`dir`]: finding the event files below a directory, naming their runs, reading them to their end
//! or following them (new files, appended records).
//!
//! What it deliberately does not do: TensorBoard's purge of "orphaned" steps after a restart (every record is an
//! observation; Katib's semantics do purge, see [`crate::katib::tfevent`]), or sampling (every scalar counts).

pub mod dir;
pub mod event;
pub mod proto;
pub mod record;
pub mod text;

use std::fmt::Write as _;

use self::event::{Event, Kind, What};
use self::record::Damage;
use crate::parser::{ObservationSink, Parser, Record};
use crate::snapshot::EventStats;

/// Whether `name` (a file's base name) is an event file, as TensorBoard decides (`io_wrapper.py`,
/// `IsSummaryEventsFile`: the name holds `tfevents`; `event_accumulator.py` skips `*.profile-empty`, the profiler's
/// marker).
pub fn is_event_file(name: &[u8]) -> bool {
    memchr::memmem::find(name, b"tfevents").is_some() && !name.ends_with(b".profile-empty")
}

/// One event file as the records' consumer sees it.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Its index among the files found, in the order they were found.
    pub index: usize,
    /// The path as walked (the directory given joined with the names found).
    pub path: std::path::PathBuf,
    /// Its run: the directory relative to the one given (`train`, `runs/exp1`), empty for the top.
    pub run: String,
    /// The prefix of its metric names: `run/`, or empty when runs are not named.
    pub prefix: String,
}

/// What the records of event files go to.
pub trait RecordSink {
    /// One record of `file` (its CRCs matched), in file order; `parser` and `sink` take the observations.
    fn record<S: ObservationSink>(&mut self, file: &FileInfo, data: &[u8], parser: &mut Parser, sink: &mut S);

    /// A damaged record of `file`. `true` goes on with the file's next record (when the framing allows it),
    /// `false` stops reading the file.
    fn damaged(&mut self, file: &FileInfo, damage: Damage, offset: u64) -> bool;

    /// `file` was truncated or replaced: it is read again from its start.
    fn restarted(&mut self, _file: &FileInfo) {}

    /// The counters so far.
    fn stats(&self) -> EventStats;
}

/// The native reader's record sink: every scalar value is an observation named `prefix + tag`, its text as numpy
/// prints its stored type, its step when not negative, its time `wall_time` in RFC 3339 (UTC, microseconds).
#[derive(Debug, Default)]
pub struct Scalars {
    stats: EventStats,
    name: Vec<u8>,
    raw: String,
    time: String,
    said: Said,
}

/// What was already said once.
#[derive(Debug, Default)]
struct Said {
    undecodable: bool,
    damage: bool,
}

impl RecordSink for Scalars {
    fn record<S: ObservationSink>(&mut self, file: &FileInfo, data: &[u8], parser: &mut Parser, sink: &mut S) {
        self.stats.records += 1;
        let event = match Event::parse(data) {
            Ok(e) => e,
            Err(e) => return self.undecodable(file, e),
        };
        let What::Summary(summary) = event.what else { return };
        let mut timed = false;
        for value in summary.values() {
            let value = match value {
                Ok(v) => v,
                Err(e) => return self.undecodable(file, e),
            };
            let Some(scalar) = value.scalar() else {
                if !matches!(value.kind, Kind::Empty) {
                    self.stats.skipped_values += 1;
                }
                continue;
            };
            if !timed {
                timed = true;
                format_time(event.wall_time, &mut self.time);
            }
            self.name.clear();
            self.name.extend_from_slice(file.prefix.as_bytes());
            self.name.extend_from_slice(value.name());
            self.raw.clear();
            text::numpy_str(scalar, &mut self.raw);
            let record = Record {
                name: &self.name,
                raw: self.raw.as_bytes(),
                value: Some(scalar.to_f64()),
                step: u64::try_from(event.step).ok(),
                time: (!self.time.is_empty()).then_some(self.time.as_bytes()),
                line: self.stats.records,
            };
            parser.record(record, sink);
        }
    }

    fn damaged(&mut self, file: &FileInfo, damage: Damage, offset: u64) -> bool {
        self.stats.damaged += 1;
        if !std::mem::replace(&mut self.said.damage, true) {
            tracing::warn!(
                file = %file.path.display(),
                offset,
                damage = damage.kind(),
                "damaged record skipped (later ones are only counted)"
            );
        }
        true
    }

    fn stats(&self) -> EventStats {
        self.stats
    }
}

impl Scalars {
    fn undecodable(&mut self, file: &FileInfo, e: event::DecodeError) {
        self.stats.undecodable += 1;
        if !std::mem::replace(&mut self.said.undecodable, true) {
            tracing::warn!(file = %file.path.display(), error = %e, "record skipped (later ones are only counted)");
        }
    }
}

/// `wall_time` (seconds since the epoch) as RFC 3339 in UTC, rounded to the microsecond (`2023-11-14T22:13:20.75Z`);
/// empty when out of range.
pub fn format_time(wall_time: f64, out: &mut String) {
    out.clear();
    let micros = (wall_time * 1e6).round_ties_even();
    if !micros.is_finite() || micros.abs() > 2.5e17 {
        return;
    }
    let Ok(ts) = jiff::Timestamp::from_microsecond(micros as i64) else { return };
    let _ = write!(out, "{ts}");
}

#[cfg(test)]
mod tests;
