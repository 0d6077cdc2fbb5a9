//! The series history the live page draws: per metric a bounded, downsampled list of points, and the JSON of
//! `/api/series` that hands a page only what is new since its cursor.
//!
//! Two halves. [`HistorySink`] sits in the read loop (an [`ObservationSink`] that [`crate::outputs`] feeds):
//! per observation it counts, decides by one remainder whether the point is kept, and appends a kept point to a
//! local buffer whose capacity is reused – no lock, no allocation per line once warm. Only when the run publishes
//! ([`HistorySink::publish`], called by the outputs beside the snapshot publisher) does it hand its new points
//! over to the shared [`History`], under one lock: waiting for it only before the read loop waits anyway, and
//! trying once (keeping the points for the next publish) while reading. The server reads the [`History`] and
//! the published [`Snapshot`] together ([`History::answer`]), as `/metrics` reads the snapshot alone.
//!
//! Downsampling is the plot's ([`crate::plot::Recorder`]): a metric keeps the observations whose index (its
//! own count, 0-based) is a multiple of its stride; when it reaches [`POINTS_PER_METRIC`] the stride doubles
//! and every other point goes. A metric's history is the whole run at a resolution that halves as it grows:
//! at most `POINTS_PER_METRIC` points (40 bytes each) per metric, metrics bounded by `--max-metrics`.
//!
//! Cursors: every observation of the run has a sequence number (1, 2, …: the parser's observation count when
//! it was made). A cursor names the run (a random number per process, so a page that outlived a restart starts
//! over), the observations the page has (`seq`) and the version of the rest of the state it has seen (`meta`:
//! the phase and the parameters). An answer holds the points whose sequence number is in `(seq, cut]` – so
//! never one twice – and the aggregates of the metrics observed in that range, from the snapshot. `cut` never
//! passes the published snapshot (the aggregates cover every point sent), and an answer holds at most
//! [`MAX_ANSWER_POINTS`] points (`more` says to ask again at once).
//!
//! Parameters (hyper-parameters a log prints once) are shown apart from metrics when a source recognises them
//! ([`History::set_parameters`]); the JSON always has the list, empty until then.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use tokio::sync::watch;

use crate::aggregate::MetricStats;
use crate::parser::{Observation, ObservationSink};
use crate::sink::prometheus::Labels;
use crate::snapshot::{Phase, Snapshot};
use crate::value::rfc3339_seconds;

/// Points a metric keeps before its stride doubles (it then keeps every other one).
pub const POINTS_PER_METRIC: usize = 1024;
/// Points in one answer of `/api/series`, at most: a page asks again at once when `more` is true.
pub const MAX_ANSWER_POINTS: usize = 10_000;
/// Kept points the read loop buffers before it hands them over even without a publish.
const PENDING_MAX: usize = 8192;
/// A step that was not captured.
const NO_STEP: u64 = u64::MAX;

/// One kept observation. 40 bytes: no step is `u64::MAX`, no time NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    seq: u64,
    index: u64,
    step: u64,
    time: f64,
    value: f64,
}

/// A parameter a log printed once (a learning rate, a batch size), shown on the page apart from the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parameter {
    /// Its name as printed.
    pub name: String,
    /// Its value as printed.
    pub value: String,
}

/// One metric's kept points.
#[derive(Debug, Clone, Default)]
struct Series {
    points: Vec<Point>,
    stride: u64,
    /// The sequence number of its latest observation (kept or not).
    last_seq: u64,
}

#[derive(Debug)]
struct Inner {
    series: Vec<Series>,
    /// Observations handed over (the latest sequence number).
    total: u64,
    phase: Phase,
    /// Bumped when the phase or the parameters change.
    meta: u64,
    parameters: Vec<Parameter>,
}

/// The shared history: written by a [`HistorySink`] when the run publishes, read by the server.
#[derive(Debug)]
pub struct History {
    run: u64,
    labels: Labels,
    linger: Duration,
    inner: Mutex<Inner>,
    /// Bumped after every change: a waiting request wakes on it as on a snapshot (the snapshot may have been
    /// published before the points it covers were handed over).
    changed: watch::Sender<u64>,
}

/// The read loop's half: see the module documentation.
#[derive(Debug)]
pub struct HistorySink {
    shared: Arc<History>,
    metrics: Vec<Local>,
    pending: Vec<(u32, Point)>,
    /// Metrics observed since the last hand-over.
    dirty: Vec<u32>,
    seq: u64,
    handed: u64,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
struct Local {
    seen: u64,
    /// The stride is `1 << shift`: a power of two, so keeping a point costs a mask, not a division.
    shift: u32,
    last_seq: u64,
}

impl Local {
    fn stride(self) -> u64 {
        1 << self.shift
    }
}

/// A new history for a run with these identity labels (shown in the page's header) and `--linger` (said on the
/// page when the run ended): the read loop's sink and the shared half the server reads.
pub fn channel(labels: Labels, linger: Duration) -> (HistorySink, Arc<History>) {
    let inner = Inner { series: Vec::new(), total: 0, phase: Phase::Starting, meta: 0, parameters: Vec::new() };
    let changed = watch::Sender::new(0);
    let shared = Arc::new(History { run: run_id(), labels, linger, inner: Mutex::new(inner), changed });
    let sink = HistorySink {
        shared: shared.clone(),
        metrics: Vec::new(),
        pending: Vec::with_capacity(256),
        dirty: Vec::new(),
        seq: 0,
        handed: 0,
        phase: Phase::Starting,
    };
    (sink, shared)
}

/// A number that differs between two processes (and two histories of one): the cursor's run.
fn run_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    // Short enough to read in a URL.
    h.finish() & 0xffff_ffff_ffff
}

impl ObservationSink for HistorySink {
    /// # Performance
    /// A count, a mask and, for a kept point, a push into a buffer whose capacity is reused (and a timestamp
    /// parse when the line has one). Past [`POINTS_PER_METRIC`] observations of a metric, most are not kept.
    /// About 8 ns per observation: `trialtail run --listen` reads a 100 MB log of 30 % metric lines 1–3 %
    /// slower than before the history (`cargo bench --bench throughput`, both binaries in one session).
    fn observe(&mut self, o: &Observation<'_>) {
        self.seq += 1;
        let id = o.metric.0 as usize;
        if id >= self.metrics.len() {
            self.metrics.resize(id + 1, Local { seen: 0, shift: 0, last_seq: 0 });
        }
        let m = &mut self.metrics[id];
        if m.last_seq <= self.handed {
            self.dirty.push(o.metric.0);
        }
        m.last_seq = self.seq;
        let index = m.seen;
        m.seen += 1;
        if index & (m.stride() - 1) != 0 {
            return;
        }
        if (index >> m.shift) + 1 >= POINTS_PER_METRIC as u64 {
            m.shift += 1;
        }
        let time = o.time.and_then(rfc3339_seconds).unwrap_or(f64::NAN);
        let point =
            Point { seq: self.seq, index, step: o.step.unwrap_or(NO_STEP), time, value: o.value.unwrap_or(f64::NAN) };
        self.pending.push((o.metric.0, point));
        if self.pending.len() >= PENDING_MAX {
            self.hand_over(self.phase, true);
        }
    }
}

impl HistorySink {
    /// The run publishes (`now`: before it waits, or its end): hands the new points and the phase over. When not
    /// `now` and the server is reading the history, keeps them for the next publish instead of waiting.
    pub fn publish(&mut self, phase: Phase, now: bool) {
        if self.pending.is_empty() && self.dirty.is_empty() && phase == self.phase {
            return;
        }
        self.hand_over(phase, now);
    }

    /// The shared half.
    pub fn history(&self) -> &Arc<History> {
        &self.shared
    }

    fn hand_over(&mut self, phase: Phase, wait: bool) {
        let shared = self.shared.clone();
        let mut inner = if wait {
            shared.lock()
        } else {
            match shared.inner.try_lock() {
                Ok(inner) => inner,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            }
        };
        if inner.series.len() < self.metrics.len() {
            inner.series.resize(self.metrics.len(), Series { points: Vec::new(), stride: 1, last_seq: 0 });
        }
        for &(id, p) in &self.pending {
            let s = &mut inner.series[id as usize];
            // Points the stride passed since they were kept are left out here, so a series never outgrows it.
            if p.index.is_multiple_of(self.metrics[id as usize].stride()) {
                s.points.push(p);
            }
        }
        for &id in &self.dirty {
            let m = self.metrics[id as usize];
            let s = &mut inner.series[id as usize];
            s.last_seq = m.last_seq;
            let stride = m.stride();
            if s.stride != stride {
                s.stride = stride;
                s.points.retain(|p| p.index.is_multiple_of(stride));
            }
        }
        inner.total = self.seq;
        if inner.phase != phase {
            inner.phase = phase;
            inner.meta += 1;
        }
        drop(inner);
        self.shared.changed.send_modify(|n| *n += 1);
        self.pending.clear();
        self.dirty.clear();
        self.handed = self.seq;
        self.phase = phase;
    }
}

/// Why a cursor was refused (the endpoint answers 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("after={0:?}: not a cursor (give the `cursor` of an earlier answer, or none)")]
    Malformed(String),
    #[error("after={0:?}: the cursor is from another run of trialtail (start over without one)")]
    OtherRun(String),
    #[error("after={0:?}: the cursor is ahead of this run (start over without one)")]
    Ahead(String),
}

/// What a page has: see the module documentation. Written as `RUN.SEQ.META` (`RUN` in hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    run: u64,
    seq: u64,
    meta: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{}.{}", self.run, self.seq, self.meta)
    }
}

impl History {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the run's parameters (shown on the page apart from the metrics); pages see them on their next poll.
    pub fn set_parameters(&self, parameters: Vec<Parameter>) {
        let mut inner = self.lock();
        if inner.parameters != parameters {
            inner.parameters = parameters;
            inner.meta += 1;
            drop(inner);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Changes whenever the history does (points handed over, the phase, the parameters).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Reads a cursor of this run.
    pub fn cursor(&self, text: &str) -> Result<Cursor, CursorError> {
        let malformed = || CursorError::Malformed(text.chars().take(64).collect());
        let mut parts = text.split('.');
        let mut next = |radix| parts.next().and_then(|p| u64::from_str_radix(p, radix).ok()).ok_or_else(malformed);
        let cursor = Cursor { run: next(16)?, seq: next(10)?, meta: next(10)? };
        if parts.next().is_some() {
            return Err(malformed());
        }
        if cursor.run != self.run {
            return Err(CursorError::OtherRun(text.to_string()));
        }
        let inner = self.lock();
        if cursor.seq > inner.total || cursor.meta > inner.meta {
            return Err(CursorError::Ahead(text.to_string()));
        }
        Ok(cursor)
    }

    /// Whether an answer as of `snap` would hold anything new for a page that has `after` (a waiting request
    /// keeps waiting while not).
    pub fn is_new(&self, snap: &Snapshot, after: Option<Cursor>) -> bool {
        let Some(c) = after else { return true };
        let inner = self.lock();
        snap.counters.observations.min(inner.total) > c.seq || c.meta != inner.meta
    }

    /// The JSON answer to a page that has `after` (nothing: the whole history), as of `snap`.
    ///
    /// The lock is held while the points are copied out, not while the JSON is written.
    pub fn answer(&self, snap: &Snapshot, after: Option<Cursor>) -> Vec<u8> {
        let from = after.map_or(0, |c| c.seq);
        let inner = self.lock();
        let mut cut = snap.counters.observations.min(inner.total).max(from);
        if count_in(&inner.series, from, cut) > MAX_ANSWER_POINTS {
            // The largest cut that keeps the answer within bounds (sequence numbers are distinct).
            let (mut lo, mut hi) = (from, cut);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if count_in(&inner.series, from, mid) <= MAX_ANSWER_POINTS { lo = mid } else { hi = mid - 1 }
            }
            cut = lo;
        }
        let more = cut < inner.total;
        let ended = inner.phase == Phase::Ended && !more;
        let phase = match inner.phase {
            Phase::Starting => "starting",
            Phase::Reading => "reading",
            Phase::Ended if ended => "ended",
            Phase::Ended => "reading",
        };
        let metrics: Vec<Entry<'_>> = inner
            .series
            .iter()
            .enumerate()
            .filter(|(id, s)| s.last_seq > from && *id < snap.metrics.len())
            .map(|(id, s)| {
                let lo = s.points.partition_point(|p| p.seq <= from);
                let hi = s.points.partition_point(|p| p.seq <= cut);
                let stats = &snap.metrics[id];
                Entry {
                    id,
                    stats,
                    panel: crate::plot::stem(&stats.name),
                    stride: s.stride,
                    points: Points(s.points[lo..hi].to_vec()),
                }
            })
            .collect();
        let answer = Answer {
            cursor: Cursor { run: self.run, seq: cut, meta: inner.meta }.to_string(),
            more,
            phase,
            observations: cut,
            linger_seconds: self.linger.as_secs_f64(),
            labels: LabelMap(&self.labels),
            parameters: inner.parameters.clone(),
            points_per_metric: POINTS_PER_METRIC,
            metrics,
        };
        drop(inner);
        // Writing to a Vec fails only for a non-string map key, and there is none.
        serde_json::to_vec(&answer).unwrap_or_default()
    }
}

/// Points with a sequence number in `(from, to]`.
fn count_in(series: &[Series], from: u64, to: u64) -> usize {
    series.iter().map(|s| s.points.partition_point(|p| p.seq <= to) - s.points.partition_point(|p| p.seq <= from)).sum()
}

/// The body of `/api/series` (see docs/live.md for the fields).
#[derive(Serialize)]
struct Answer<'a> {
    cursor: String,
    more: bool,
    phase: &'static str,
    observations: u64,
    linger_seconds: f64,
    labels: LabelMap<'a>,
    parameters: Vec<Parameter>,
    points_per_metric: usize,
    metrics: Vec<Entry<'a>>,
}

struct LabelMap<'a>(&'a Labels);

impl Serialize for LabelMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.0.pairs() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

struct Entry<'a> {
    id: usize,
    stats: &'a MetricStats,
    panel: &'a str,
    stride: u64,
    points: Points,
}

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.stats;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("name", &m.name)?;
        map.serialize_entry("panel", self.panel)?;
        map.serialize_entry("count", &m.count)?;
        map.serialize_entry("latest", &m.latest.map(Num))?;
        map.serialize_entry("latest_raw", &m.latest_raw)?;
        map.serialize_entry("min", &m.min.as_ref().map(|(v, _)| Num(*v)))?;
        map.serialize_entry("min_raw", &m.min.as_ref().map(|(_, raw)| raw))?;
        map.serialize_entry("max", &m.max.as_ref().map(|(v, _)| Num(*v)))?;
        map.serialize_entry("max_raw", &m.max.as_ref().map(|(_, raw)| raw))?;
        map.serialize_entry("step", &m.step)?;
        map.serialize_entry("stride", &self.stride)?;
        map.serialize_entry("points", &self.points)?;
        map.end()
    }
}

/// A value: a JSON number, or `"NaN"`, `"+Inf"`, `"-Inf"` (JSON has no such numbers; Prometheus's spelling).
#[derive(Clone, Copy)]
struct Num(f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v > 0.0 => s.serialize_str("+Inf"),
            _ => s.serialize_str("-Inf"),
        }
    }
}

/// Points as `[index, step, time, value]` arrays (`null` for no step or time).
struct Points(Vec<Point>);

impl Serialize for Points {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in &self.0 {
            let step = (p.step != NO_STEP).then_some(p.step);
            let time = (!p.time.is_nan()).then_some(p.time);
            seq.serialize_element(&(p.index, step, time, Num(p.value)))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::MetricId;
    use crate::lines::LineBuffer;
    use crate::parser::Parser;
    use crate::rules::{LineFormat, Rules, Semantics};
    use crate::snapshot::{Publisher, SourceStats};
    use serde_json::Value;

    /// A run: a parser, its history and its snapshots, fed lines like a source feeds them.
    struct Run {
        parser: Parser,
        buf: LineBuffer,
        sink: HistorySink,
        history: Arc<History>,
        publisher: Publisher,
        rx: crate::snapshot::SnapshotRx,
    }

    impl Run {
        fn new() -> Run {
            let rules = Rules::new(
                &[
                    crate::rules::RuleSpec::Preset(crate::rules::Preset::Katib),
                    crate::rules::RuleSpec::Preset(crate::rules::Preset::TfStep),
                ],
                &[],
                Semantics::Native,
                LineFormat::Text,
            )
            .unwrap();
            let labels = Labels { trial: Some("t-1".into()), ..Labels::default() };
            let (sink, history) = channel(labels, Duration::from_secs(30));
            let (publisher, rx) = Publisher::new(Duration::ZERO);
            Run { parser: Parser::new(rules, 100), buf: LineBuffer::new(1024), sink, history, publisher, rx }
        }

        /// Feeds `text` and publishes as a source does before it waits.
        fn feed(&mut self, text: &str, phase: Phase) {
            self.buf.feed_into(text.as_bytes(), &mut self.parser.lines(&mut self.sink));
            self.sink.publish(phase, true);
            self.publisher.publish(&self.parser, SourceStats::default(), phase);
        }

        fn get(&self, after: Option<&str>) -> Value {
            let cursor = after.map(|c| self.history.cursor(c).unwrap());
            serde_json::from_slice(&self.history.answer(&self.rx.borrow().clone(), cursor)).unwrap()
        }
    }

    /// Every `[name, value]` an answer holds, in order.
    fn values(answer: &Value) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for m in answer["metrics"].as_array().unwrap() {
            for p in m["points"].as_array().unwrap() {
                out.push((m["name"].as_str().unwrap().to_string(), p[3].clone()));
            }
        }
        out
    }

    #[test]
    fn an_answer_holds_what_is_new_since_its_cursor_and_the_aggregates_of_what_changed() {
        let mut run = Run::new();
        run.feed("loss=0.9\nstep 1 acc=0.5\nAccuracy at step 10: 0.25\nloss=nan\n", Phase::Reading);
        let first = run.get(None);
        assert_eq!(first["phase"], "reading");
        assert_eq!(first["labels"], serde_json::json!({"trial": "t-1"}));
        assert_eq!(first["parameters"], serde_json::json!([]));
        assert_eq!(first["metrics"].as_array().unwrap().len(), 3);
        let loss = &first["metrics"][0];
        assert_eq!(
            (loss["name"].as_str(), loss["latest"].as_str(), loss["min"].as_f64()),
            (Some("loss"), Some("NaN"), Some(0.9))
        );
        assert_eq!(loss["points"], serde_json::json!([[0, null, null, 0.9], [1, null, null, "NaN"]]));
        assert_eq!(first["metrics"][2]["points"], serde_json::json!([[0, 10, null, 0.25]]));

        let cursor = first["cursor"].as_str().unwrap().to_string();
        let idle = run.get(Some(&cursor));
        assert_eq!((idle["metrics"].as_array().unwrap().len(), idle["cursor"].as_str()), (0, Some(cursor.as_str())));
        assert!(!run.history.is_new(&run.rx.borrow().clone(), Some(run.history.cursor(&cursor).unwrap())));

        run.feed("loss=inf\n", Phase::Reading);
        let next = run.get(Some(&cursor));
        assert_eq!(next["metrics"].as_array().unwrap().len(), 1, "only the metric that changed");
        assert_eq!(values(&next), [("loss".to_string(), Value::from("+Inf"))]);
        assert_eq!(next["metrics"][0]["count"], 3);
    }

    #[test]
    fn a_page_that_follows_its_cursors_gets_every_kept_point_once_and_answers_stay_bounded() {
        let mut run = Run::new();
        let mut text = String::new();
        for i in 0..6000 {
            text.push_str(&format!("a={i}\nb={i}\nc={i}\n"));
        }
        run.feed(&text, Phase::Ended);
        let (mut cursor, mut seen, mut answers) = (None::<String>, Vec::new(), 0);
        loop {
            let a = run.get(cursor.as_deref());
            answers += 1;
            let got = values(&a);
            assert!(got.len() <= MAX_ANSWER_POINTS);
            seen.extend(got);
            cursor = Some(a["cursor"].as_str().unwrap().to_string());
            if !a["more"].as_bool().unwrap() {
                assert_eq!(a["phase"], "ended");
                break;
            }
            assert_eq!(a["phase"], "reading", "not ended while points are still coming");
        }
        // 6000 observations per metric, thinned to multiples of 8 (stride doubled three times at 1024).
        let per_metric = 6000usize.div_ceil(8);
        assert_eq!(seen.len(), 3 * per_metric);
        let mut dedup = seen.clone();
        dedup.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.as_f64().partial_cmp(&y.1.as_f64()).unwrap()));
        dedup.dedup();
        assert_eq!(dedup.len(), seen.len(), "no point twice");
        assert_eq!(answers, 1, "{} points fit one answer", seen.len());

        // Fed as it comes, in many publishes: the answers split where they must and still hold each point once.
        let mut run = Run::new();
        let (mut cursor, mut got) = (None::<String>, Vec::new());
        for (i, chunk) in text.as_bytes().chunks(1500).enumerate() {
            run.feed(std::str::from_utf8(chunk).unwrap(), Phase::Reading);
            if i % 3 == 0 {
                let a = run.get(cursor.as_deref());
                got.extend(values(&a));
                cursor = Some(a["cursor"].as_str().unwrap().to_string());
            }
        }
        let a = run.get(cursor.as_deref());
        got.extend(values(&a));
        let mut names_values: Vec<(String, f64)> = got.iter().map(|(n, v)| (n.clone(), v.as_f64().unwrap())).collect();
        let before = names_values.len();
        names_values.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.partial_cmp(&y.1).unwrap()));
        names_values.dedup();
        assert_eq!(names_values.len(), before, "no point twice");
        assert!(names_values.iter().any(|(n, v)| n == "c" && *v == 5992.0), "the last kept point arrived");
    }

    #[test]
    fn an_answer_over_the_bound_is_cut_and_says_more() {
        let mut run = Run::new();
        let mut text = String::new();
        for i in 0..1000 {
            for m in 0..12 {
                text.push_str(&format!("m{m}={i}\n"));
            }
        }
        run.feed(&text, Phase::Reading);
        let first = run.get(None);
        assert_eq!(values(&first).len(), MAX_ANSWER_POINTS);
        assert_eq!(first["more"], true);
        let rest = run.get(first["cursor"].as_str());
        assert_eq!(values(&rest).len(), 12_000 - MAX_ANSWER_POINTS);
        assert_eq!(rest["more"], false);
    }

    #[test]
    fn bad_cursors_are_refused_with_the_reason() {
        let mut run = Run::new();
        run.feed("loss=1\n", Phase::Reading);
        let good = run.get(None)["cursor"].as_str().unwrap().to_string();
        assert!(run.history.cursor(&good).is_ok());
        for bad in ["", "x", "1.2", "zz.1.1", "1.2.3.4", "-1.0.0"] {
            assert!(matches!(run.history.cursor(bad), Err(CursorError::Malformed(_))), "{bad}");
        }
        let (_, other) = channel(Labels::default(), Duration::ZERO);
        assert!(matches!(other.cursor(&good), Err(CursorError::OtherRun(_))));
        let (run_hex, _) = good.split_once('.').unwrap();
        for ahead in [format!("{run_hex}.2.0"), format!("{run_hex}.1.9")] {
            assert!(matches!(run.history.cursor(&ahead), Err(CursorError::Ahead(_))), "{ahead}");
        }
    }

    #[test]
    fn the_end_and_the_parameters_reach_a_waiting_page() {
        let mut run = Run::new();
        run.feed("loss=1\n", Phase::Reading);
        let cursor = run.history.cursor(run.get(None)["cursor"].as_str().unwrap()).unwrap();
        let snap = || run.rx.borrow().clone();
        assert!(!run.history.is_new(&snap(), Some(cursor)));
        run.history.set_parameters(vec![Parameter { name: "lr".into(), value: "0.01".into() }]);
        assert!(run.history.is_new(&snap(), Some(cursor)));
        let a: Value = serde_json::from_slice(&run.history.answer(&snap(), Some(cursor))).unwrap();
        assert_eq!(a["parameters"], serde_json::json!([{"name": "lr", "value": "0.01"}]));
        let cursor = run.history.cursor(a["cursor"].as_str().unwrap()).unwrap();
        run.sink.publish(Phase::Ended, true);
        run.publisher.publish(&run.parser, SourceStats::default(), Phase::Ended);
        assert!(run.history.is_new(&snap(), Some(cursor)));
        let a: Value = serde_json::from_slice(&run.history.answer(&snap(), Some(cursor))).unwrap();
        assert_eq!((a["phase"].as_str(), a["linger_seconds"].as_f64()), (Some("ended"), Some(30.0)));
    }

    #[test]
    fn points_beyond_the_published_snapshot_wait_for_it() {
        let mut run = Run::new();
        run.feed("loss=1\n", Phase::Reading);
        // Handed over, not yet published: the answer stops at what the snapshot's aggregates cover.
        run.buf.feed_into(b"loss=2\nacc=3\n", &mut run.parser.lines(&mut run.sink));
        run.sink.publish(Phase::Reading, true);
        let a = run.get(None);
        assert_eq!(values(&a), [("loss".to_string(), Value::from(1.0))]);
        assert_eq!(a["more"], true);
        run.publisher.publish(&run.parser, SourceStats::default(), Phase::Reading);
        let b = run.get(a["cursor"].as_str());
        assert_eq!(values(&b).len(), 2);
        assert_eq!(b["metrics"][0]["latest"], 2.0);
    }

    #[test]
    fn the_history_thins_like_the_plot_and_stays_bounded() {
        let (mut sink, history) = channel(Labels::default(), Duration::ZERO);
        let obs = |value: f64| Observation {
            metric: MetricId(0),
            name: b"loss",
            raw: b"",
            value: Some(value),
            step: None,
            time: Some(b"2024-05-01T12:00:00.5Z"),
            line: 1,
        };
        for i in 0..100_000u64 {
            sink.observe(&obs(i as f64));
            if i % 777 == 0 {
                sink.publish(Phase::Reading, false);
            }
        }
        sink.publish(Phase::Reading, true);
        let inner = history.lock();
        let s = &inner.series[0];
        assert!(s.points.len() < POINTS_PER_METRIC && s.points.len() >= POINTS_PER_METRIC / 2, "{}", s.points.len());
        assert!(s.points.iter().all(|p| p.index % s.stride == 0 && p.time == 1_714_564_800.5));
        assert_eq!(s.points[0].index, 0);
        assert!(s.points.windows(2).all(|w| w[1].index - w[0].index == s.stride));
        assert!(sink.pending.capacity() <= PENDING_MAX * 2);
    }
}
