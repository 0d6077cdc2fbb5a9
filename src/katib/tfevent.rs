//! Katib's TensorFlowEvent collector, as its code reads event files: which values it reports, how it prints them,
//! in which order, and what TensorBoard's `EventAccumulator` (which it reads with) drops.
//!
//! Katib v0.19.0's `pkg/metricscollector/v1beta1/tfevent-metricscollector/tfevent_loader.py`
//! (`MetricsCollector.parse_file`, `TFEventFileParser.parse_summary`, `_should_consider`), restated:
//! - every event file below `-path` in `os.walk` order is read by its own `EventAccumulator` (tensorboard 2.16,
//!   `event_accumulator.py`), all events kept; no merging across files;
//! - a tag is reported under a metric name `m` when it starts with `m`'s last path element and the file's
//!   directory (as walked) ends, as a string, with `m`'s directory part – or always, when `m` has none
//!   ([`considers`]);
//! - per file: first the tensor tags (in order of first appearance), then the `simple_value` tags; per tag each
//!   metric name in `-m` order; per match every event of the tag in file order;
//! - a `simple_value` is printed as Python prints the float32 widened to a double (`str(scalar.value)`:
//!   `0.10000000149011612`), a tensor as numpy prints `tf.make_ndarray` of it (`0.1` for a float32)
//!   ([`crate::source::tfevents::text`]);
//! - the time is `rfc3339(datetime.fromtimestamp(wall_time))`: local time, whole seconds after rounding to the
//!   microsecond (half even), `+HH:MM`;
//! - TensorBoard's purge (`_MaybePurgeOrphanedData`): in a file whose `file_version` is `brain.Event:2` or later, a
//!   `SessionLog.START` at step s drops the scalars read so far with step ≥ s; without one, an event with a summary
//!   whose step is below the most recent step drops, for its tags, the scalars with step ≥ its own (tensors are
//!   never purged);
//! - damage (a CRC mismatch, a cut record) ends a file, keeping what came before (`DataLossError`, swallowed by
//!   `RawEventFileLoader.Load`); a record that is not an `Event` – or a tensor `make_ndarray` refuses, or a time
//!   Python cannot represent – makes Katib drop that file's rows whole (`parse_file` logs the exception);
//! - when no row is named like the objective, the report is one `unavailable` row at the collector's clock.
//!
//! # Performance
//! Each record is also decoded whole with the generated types, only to refuse what Katib's `Event.FromString`
//! refuses (that allocates per record; the native reader does not): the drop-in reads a trial's files once, at
//! training speed, where exactness matters more.
//!
//! Deliberately different (`docs/katib.md`): a tensor that is not a scalar (vectors, histograms, text, images,
//! audio: numpy's printout of the whole array, which Katib's controller cannot read as a number) is not reported
//! but counted; a record over the size limit is skipped (Katib reads it whole).

use std::ops::Range;

use prost::Message;

use crate::katib::report::KatibReport;
use crate::parser::{ObservationSink, Parser, Record};
use crate::snapshot::EventStats;
use crate::source::tfevents::event::{Event, Kind, SESSION_START, What};
use crate::source::tfevents::record::Damage;
use crate::source::tfevents::{FileInfo, RecordSink, proto, text};

/// Whether Katib reports tag `tag` of an event file in directory `dir` (as walked) under the metric name `m`
/// (`_should_consider`).
pub fn considers(tag: &[u8], m: &[u8], dir: &[u8]) -> bool {
    let last = m.rsplit(|&b| b == b'/').next().unwrap_or(m);
    if !tag.starts_with(last) {
        return false;
    }
    // `os.path.dirname(m) if len(m.split("/")) >= 2 else dirname(file)`: any `/` in `m` gives it a directory.
    if m.contains(&b'/') { dir.ends_with(py_dirname(m)) } else { true }
}

/// Python's `os.path.dirname`: the head before the last `/`, trailing slashes removed unless it is all slashes.
pub fn py_dirname(path: &[u8]) -> &[u8] {
    let i = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let head = &path[..i];
    if head.iter().all(|&b| b == b'/') {
        return head;
    }
    let end = head.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &head[..end]
}

/// The whole second Python's `datetime.fromtimestamp(t)` shows: the fraction rounded to the microsecond, half
/// to even, carried into the second (`_PyTime_DoubleToDenominator`).
pub fn python_second(t: f64) -> Option<i64> {
    if !t.is_finite() {
        return None;
    }
    let int = t.trunc();
    let us = ((t - int) * 1e6).round_ties_even();
    let sec = if us >= 1e6 {
        int + 1.0
    } else if us < 0.0 {
        int - 1.0
    } else {
        int
    };
    (sec.abs() < 1e15).then_some(sec as i64)
}

/// `rfc3339.rfc3339(datetime.fromtimestamp(t))` in the local time zone `tz`: `2023-11-14T22:13:20+00:00`;
/// `None` outside Python's years 1 to 9999 (where Katib's code raises).
pub fn katib_time(t: f64, tz: &jiff::tz::TimeZone, out: &mut String) -> Option<()> {
    let ts = jiff::Timestamp::from_second(python_second(t)?).ok()?;
    let zoned = ts.to_zoned(tz.clone());
    let dt = zoned.datetime();
    if !(1..=9999).contains(&dt.year()) {
        return None;
    }
    let offset = zoned.offset().seconds();
    let sign = if offset < 0 { '-' } else { '+' };
    let (h, m) = (offset.unsigned_abs() / 3600, offset.unsigned_abs() % 3600 / 60);
    use std::fmt::Write;
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{h:02}:{m:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
    .ok()
}

/// One reported value of a tag: its step (for the purge), its text and time in the arena.
#[derive(Debug, Clone)]
struct Point {
    step: i64,
    value: Range<usize>,
    time: Range<usize>,
}

/// A tag of one file and its points.
#[derive(Debug, Clone)]
struct Tag {
    name: Vec<u8>,
    points: Vec<Point>,
}

/// What Katib's `EventAccumulator` keeps of one file.
#[derive(Debug, Clone, Default)]
struct FileState {
    tensors: Vec<Tag>,
    scalars: Vec<Tag>,
    file_version: Option<f64>,
    most_recent_step: i64,
    /// Damage ended the file: the rest is not read.
    ended: bool,
    /// Katib's code raised on this file: none of its rows are reported.
    dropped: bool,
}

/// The TensorFlowEvent collector's record sink: matching values become observations (named by the metric, for
/// `/metrics` and early stopping) and are kept, per file and tag, for the report Katib would send at the end
/// ([`KatibEvents::report`]).
#[derive(Debug)]
pub struct KatibEvents {
    metrics: Vec<String>,
    tz: jiff::tz::TimeZone,
    files: Vec<FileState>,
    arena: String,
    stats: EventStats,
    text: String,
    time: String,
    said_drop: bool,
}

impl KatibEvents {
    /// A collector of the metric names `metrics` (`-m` split on `;`, the objective first), printing times in
    /// `tz` (the process's local time zone in the drop-in).
    pub fn new(metrics: Vec<String>, tz: jiff::tz::TimeZone) -> Self {
        KatibEvents {
            metrics,
            tz,
            files: Vec::new(),
            arena: String::new(),
            stats: EventStats::default(),
            text: String::new(),
            time: String::new(),
            said_drop: false,
        }
    }

    fn file(&mut self, index: usize) -> &mut FileState {
        if self.files.len() <= index {
            self.files.resize_with(index + 1, || FileState { most_recent_step: -1, ..FileState::default() });
        }
        &mut self.files[index]
    }

    fn drop_file(&mut self, file: &FileInfo, why: &str) {
        let f = self.file(file.index);
        f.dropped = true;
        f.ended = true;
        if !std::mem::replace(&mut self.said_drop, true) {
            tracing::warn!(
                file = %file.path.display(),
                "{why}: Katib's collector drops this file's values whole, and so does this report"
            );
        }
    }

    /// The report Katib would send: the files in `order` (the walk at the end, paths as walked), each file's
    /// tensor tags then scalar tags, each tag under each metric that considers it; `now` is the `unavailable`
    /// row's time.
    pub fn report(&self, order: &[FileInfo], now: &str) -> KatibReport {
        let objective = self.metrics.first().cloned().unwrap_or_default();
        let mut report = KatibReport::new(objective).with_sentinel_time(now);
        for info in order {
            let Some(f) = self.files.get(info.index) else { continue };
            if f.dropped {
                continue;
            }
            let dir = py_dirname(info.path.as_os_str().as_encoded_bytes());
            for tag in f.tensors.iter().chain(&f.scalars) {
                for m in &self.metrics {
                    if !considers(&tag.name, m.as_bytes(), dir) {
                        continue;
                    }
                    for p in &tag.points {
                        report.push(m, &self.arena[p.value.clone()], Some(&self.arena[p.time.clone()]), 0);
                    }
                }
            }
        }
        report
    }

    fn matching(&self, tag: &[u8], dir: &[u8]) -> bool {
        self.metrics.iter().any(|m| considers(tag, m.as_bytes(), dir))
    }
}

impl RecordSink for KatibEvents {
    fn record<S: ObservationSink>(&mut self, file: &FileInfo, data: &[u8], parser: &mut Parser, sink: &mut S) {
        self.stats.records += 1;
        if self.file(file.index).ended {
            return;
        }
        // `Event.FromString` parses the whole message, or raises (and Katib drops the file).
        if proto::Event::decode(data).is_err() {
            self.stats.undecodable += 1;
            return self.drop_file(file, "a record is not an Event");
        }
        let Ok(event) = Event::parse(data) else {
            self.stats.undecodable += 1;
            return self.drop_file(file, "a record is not an Event");
        };
        let dir = py_dirname(file.path.as_os_str().as_encoded_bytes()).to_vec();
        // `_ProcessEvent`: the file version first, then the purge, then the values.
        let f = self.file(file.index);
        if let What::FileVersion(v) = event.what {
            let text = String::from_utf8_lossy(v);
            let token = text.rsplit("brain.Event:").next().unwrap_or("");
            f.file_version = Some(token.trim().parse::<f64>().unwrap_or(-1.0));
        }
        let restart_logic = f.file_version.is_some_and(|v| v != 0.0 && v >= 2.0);
        if restart_logic {
            if event.what == What::SessionLog(SESSION_START) {
                for t in &mut f.scalars {
                    t.points.retain(|p| p.step < event.step);
                }
            }
        } else if event.step < f.most_recent_step && matches!(event.what, What::Summary(_)) {
            if let What::Summary(summary) = event.what {
                for v in summary.values().flatten() {
                    if let Some(t) = f.scalars.iter_mut().find(|t| t.name == v.tag) {
                        t.points.retain(|p| p.step < event.step);
                    }
                }
            }
        } else {
            f.most_recent_step = event.step;
        }
        let What::Summary(summary) = event.what else { return };
        for value in summary.values() {
            let Ok(value) = value else {
                self.stats.undecodable += 1;
                return self.drop_file(file, "a record is not an Event");
            };
            let tag = value.name();
            let tensor = match value.kind {
                Kind::Simple(_) => false,
                Kind::Tensor(_) => true,
                _ => {
                    self.stats.skipped_values += 1;
                    continue;
                }
            };
            if !self.matching(tag, &dir) {
                continue;
            }
            self.text.clear();
            let number = match value.kind {
                Kind::Simple(v) => {
                    text::python_repr(f64::from(v), &mut self.text);
                    Some(f64::from(v))
                }
                Kind::Tensor(t) => {
                    // `make_ndarray` refuses more values than elements, and content of the wrong length.
                    if (t.content.is_empty() && t.count > t.elements.max(0) as u64 && t.elements <= 1)
                        || (t.rank0 && !t.content.is_empty() && t.scalar().is_none() && is_numeric(t.dtype))
                    {
                        return self.drop_file(file, "a tensor TensorFlow cannot make an array of");
                    }
                    match t.scalar().filter(|_| t.rank0) {
                        Some(s) => {
                            text::numpy_str(s, &mut self.text);
                            Some(s.to_f64())
                        }
                        None => {
                            self.stats.skipped_values += 1;
                            continue;
                        }
                    }
                }
                _ => None,
            };
            self.time.clear();
            if katib_time(event.wall_time, &self.tz, &mut self.time).is_none() {
                return self.drop_file(file, "a wall time Python's datetime cannot represent");
            }
            let start = self.arena.len();
            self.arena.push_str(&self.text);
            let value_range = start..self.arena.len();
            self.arena.push_str(&self.time);
            let time_range = value_range.end..self.arena.len();
            let f = &mut self.files[file.index];
            let tags = if tensor { &mut f.tensors } else { &mut f.scalars };
            let point = Point { step: event.step, value: value_range, time: time_range };
            match tags.iter_mut().find(|t| t.name == tag) {
                Some(t) => t.points.push(point),
                None => tags.push(Tag { name: tag.to_vec(), points: vec![point] }),
            }
            // Live: each metric that takes the tag sees the value (for /metrics and early stopping).
            for m in &self.metrics {
                if considers(tag, m.as_bytes(), &dir) {
                    let record = Record {
                        name: m.as_bytes(),
                        raw: self.text.as_bytes(),
                        value: number,
                        step: u64::try_from(event.step).ok(),
                        time: Some(self.time.as_bytes()),
                        line: self.stats.records,
                    };
                    parser.record(record, sink);
                }
            }
        }
    }

    fn damaged(&mut self, file: &FileInfo, damage: Damage, offset: u64) -> bool {
        self.stats.damaged += 1;
        tracing::warn!(
            file = %file.path.display(),
            offset,
            damage = damage.kind(),
            "damaged record: the rest of this file is not read (as TensorBoard's reader stops there)"
        );
        // A record over trialtail's size limit is skipped; TensorBoard would have read it.
        if let Damage::TooLarge { .. } = damage {
            return true;
        }
        self.file(file.index).ended = true;
        false
    }

    fn restarted(&mut self, file: &FileInfo) {
        let f = self.file(file.index);
        *f = FileState { most_recent_step: -1, ..FileState::default() };
    }

    fn stats(&self) -> EventStats {
        self.stats
    }
}

fn is_numeric(dtype: i32) -> bool {
    use crate::source::tfevents::event::dtype::*;
    matches!(
        dtype,
        FLOAT | DOUBLE | INT32 | UINT8 | INT16 | INT8 | INT64 | BOOL | BFLOAT16 | UINT16 | HALF | UINT32 | UINT64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_consider_tags_as_katib_does() {
        let table: &[(&str, &str, &str, bool)] = &[
            ("accuracy", "accuracy", "logs/train", true),
            ("accuracy_top5", "accuracy", "logs", true),
            ("loss/train", "loss", "x", true),
            ("acc", "accuracy", "x", false),
            ("accuracy", "train/accuracy", "multi_run/train", true),
            ("accuracy", "train/accuracy", "multi_run/pretrain", true),
            ("accuracy", "rain/accuracy", "multi_run/train", true),
            ("accuracy", "train/accuracy", "multi_run/validation", false),
            ("anything", "", "x", true),
            ("loss/train", "x/loss/train", "x/loss", false),
            ("accuracy", "tfevent/accuracy", "/var/log/katib/tfevent", true),
        ];
        for (tag, m, dir, want) in table {
            assert_eq!(considers(tag.as_bytes(), m.as_bytes(), dir.as_bytes()), *want, "{tag} {m} {dir}");
        }
        assert_eq!(py_dirname(b"a/b/c"), b"a/b");
        assert_eq!(py_dirname(b"a//c"), b"a");
        assert_eq!(py_dirname(b"/c"), b"/");
        assert_eq!(py_dirname(b"c"), b"");
    }

    #[test]
    fn times_round_to_the_microsecond_first_as_python_does() {
        let utc = jiff::tz::TimeZone::UTC;
        let t = |v: f64| {
            let mut s = String::new();
            katib_time(v, &utc, &mut s).map(|()| s)
        };
        assert_eq!(t(1700000300.9999995).as_deref(), Some("2023-11-14T22:18:21+00:00"));
        assert_eq!(t(1700000301.9999993).as_deref(), Some("2023-11-14T22:18:21+00:00"));
        assert_eq!(t(-1.5).as_deref(), Some("1969-12-31T23:59:58+00:00"));
        assert_eq!(t(1e300), None);
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let mut s = String::new();
        katib_time(1700000000.0, &berlin, &mut s).unwrap();
        assert_eq!(s, "2023-11-14T23:13:20+01:00");
    }
}
