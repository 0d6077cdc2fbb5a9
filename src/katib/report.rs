//! The Katib report: the rows Katib's collector would send to its DB manager, in the order it would send them.
//!
//! Rows are compact, so memory grows with the observations kept, never with the log: a row's fixed part is 32
//! bytes (where its value and time are in one byte arena, its line, its interned name), plus its value's text,
//! plus its time's text only when it has one that differs from the row before it (the rows of one line share it;
//! a row without a time keeps no copy of Katib's zero time). Rows that were delivered can be forgotten
//! ([`KatibReport::forget_before`]): the native sidecar's incremental reporting keeps only what is not in Katib's
//! DB yet. Rows keep their index (the report's count) across forgetting. [`KatibReport::rows`] applies Katib's final rule: when no row is for the objective (the first
//! metric name), the whole report is replaced by one `unavailable` row at Katib's zero time
//! (`pkg/metricscollector/v1beta1/file-metricscollector/file-metricscollector.go`, `newObservationLog`).

use std::collections::HashMap;

use super::UNAVAILABLE;
use crate::parser::{Observation, ObservationSink};
use crate::value::ZERO_TIME;

/// One row of the report, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    /// The metric name.
    pub name: &'a str,
    /// The value as printed.
    pub value: &'a str,
    /// RFC 3339 time: the line's own, or Katib's zero time.
    pub time: &'a str,
    /// The source line, `None` for the sentinel row.
    pub line: Option<u64>,
}

/// A row as kept: 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Stored {
    /// The value's offset in the arena (counted from the report's start, forgotten bytes included).
    value_at: u64,
    /// The time's offset (shared with the row before when equal).
    time_at: u64,
    line: u64,
    name: u32,
    value_len: u16,
    /// 0: no time of its own (Katib's zero time).
    time_len: u16,
}

/// Rows collected for a Katib report.
#[derive(Debug, Clone)]
pub struct KatibReport {
    objective: String,
    /// The `unavailable` row's time: Katib's zero time (the file collector), or the clock (TensorFlowEvent).
    sentinel_time: String,
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32>,
    arena: String,
    /// Arena bytes forgotten before `arena[0]`.
    arena_base: u64,
    rows: Vec<Stored>,
    /// Rows forgotten before `rows[0]`.
    first: usize,
    has_objective: bool,
}

impl KatibReport {
    /// An empty report whose objective is `objective`.
    pub fn new(objective: impl Into<String>) -> Self {
        KatibReport {
            objective: objective.into(),
            sentinel_time: ZERO_TIME.to_string(),
            names: Vec::new(),
            ids: HashMap::new(),
            arena: String::new(),
            arena_base: 0,
            rows: Vec::new(),
            first: 0,
            has_objective: false,
        }
    }

    /// The same report whose `unavailable` row has the time `time` (Katib's TensorFlowEvent collector stamps it
    /// with its clock, `rfc3339(datetime.now())`).
    pub fn with_sentinel_time(mut self, time: &str) -> Self {
        self.sentinel_time = time.to_string();
        self
    }

    fn name_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    fn text(&self, at: u64, len: u16) -> &str {
        let from = (at - self.arena_base) as usize;
        &self.arena[from..from + usize::from(len)]
    }

    /// Adds one row. Names and values are at most [`crate::parser::MAX_NAME_BYTES`] and
    /// [`crate::parser::MAX_VALUE_BYTES`] long; longer texts (and times over 64 KiB) are cut at a character.
    pub fn push(&mut self, name: &str, value: &str, time: Option<&str>, line: u64) {
        self.has_objective |= name == self.objective;
        let name = self.name_id(name);
        let value = cut(value, crate::parser::MAX_VALUE_BYTES);
        let value_at = self.arena_base + self.arena.len() as u64;
        self.arena.push_str(value);
        let (time_at, time_len) = match time.map(|t| cut(t, u16::MAX as usize)) {
            None | Some("") => (value_at, 0),
            Some(t) => match self.rows.last() {
                Some(prev) if prev.time_len > 0 && self.text(prev.time_at, prev.time_len) == t => {
                    (prev.time_at, prev.time_len)
                }
                _ => {
                    let at = self.arena_base + self.arena.len() as u64;
                    self.arena.push_str(t);
                    (at, t.len() as u16)
                }
            },
        };
        self.rows.push(Stored { value_at, time_at, line, name, value_len: value.len() as u16, time_len });
    }

    /// Rows collected (before the sentinel rule), forgotten ones included.
    pub fn len(&self) -> usize {
        self.first + self.rows.len()
    }

    /// Whether no row was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows held in memory (not forgotten).
    pub fn kept(&self) -> usize {
        self.rows.len()
    }

    /// The index of the first row held: the rows before it were forgotten (delivered, or of a content a
    /// restart replaced).
    pub fn first_kept(&self) -> usize {
        self.first
    }

    /// Whether a row is for the objective: until then Katib would send nothing but the sentinel.
    pub fn has_objective(&self) -> bool {
        self.has_objective
    }

    /// The objective's name.
    pub fn objective(&self) -> &str {
        &self.objective
    }

    /// Row `i` (before the sentinel rule); `None` past the end or when it was forgotten.
    pub fn row(&self, i: usize) -> Option<Row<'_>> {
        let r = self.rows.get(i.checked_sub(self.first)?)?;
        let time = if r.time_len == 0 { ZERO_TIME } else { self.text(r.time_at, r.time_len) };
        Some(Row {
            name: &self.names[r.name as usize],
            value: self.text(r.value_at, r.value_len),
            time,
            line: Some(r.line),
        })
    }

    /// Forgets the rows before index `n` (they were delivered), once they are at least half of what is held, so
    /// the cost of moving the rest is paid once per doubling.
    pub fn forget_before(&mut self, n: usize) {
        let drop = n.saturating_sub(self.first).min(self.rows.len());
        if drop == 0 || drop * 2 < self.rows.len() {
            return;
        }
        self.rows.drain(..drop);
        self.first += drop;
        let keep_from = self.rows.first().map_or(self.arena_base + self.arena.len() as u64, |r| {
            if r.time_len > 0 { r.value_at.min(r.time_at) } else { r.value_at }
        });
        let cut = (keep_from - self.arena_base) as usize;
        self.arena.drain(..cut);
        self.arena_base = keep_from;
        self.rows.shrink_to(self.rows.len() * 2);
        self.arena.shrink_to(self.arena.len() * 2);
    }

    /// The single row Katib sends for a report without its objective.
    pub fn sentinel(&self) -> Row<'_> {
        Row { name: &self.objective, value: UNAVAILABLE, time: &self.sentinel_time, line: None }
    }

    /// Every row collected, before Katib's final rule.
    pub fn collected(&self) -> Vec<Row<'_>> {
        (self.first..self.len()).filter_map(|i| self.row(i)).collect()
    }

    /// The report as Katib sends it: every row held, or the single `unavailable` row when the objective is
    /// missing.
    pub fn rows(&self) -> Vec<Row<'_>> {
        if !self.has_objective {
            return vec![self.sentinel()];
        }
        self.collected()
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl ObservationSink for KatibReport {
    /// Katib reads the metrics file once, when training ended: rows of a content that was truncated away or
    /// replaced are not in its report (`CollectObservationLog` reads the path whole). The count goes on, so a
    /// reporter that delivered rows of the old content goes on with the new one.
    fn restarted(&mut self) {
        self.first += self.rows.len();
        self.arena_base += self.arena.len() as u64;
        self.arena.clear();
        self.rows.clear();
        self.has_objective = false;
    }

    fn observe(&mut self, o: &Observation<'_>) {
        let name = String::from_utf8_lossy(o.name);
        let value = String::from_utf8_lossy(o.raw);
        let time = o.time.map(String::from_utf8_lossy);
        self.push(&name, &value, time.as_deref(), o.line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_objective_becomes_the_unavailable_sentinel() {
        let mut r = KatibReport::new("accuracy");
        r.push("loss", "0.5", None, 1);
        assert_eq!(r.rows(), [Row { name: "accuracy", value: "unavailable", time: ZERO_TIME, line: None }]);
        r.push("accuracy", "0.9", Some("2024-05-01T12:00:00Z"), 2);
        let rows = r.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], Row { name: "loss", value: "0.5", time: ZERO_TIME, line: Some(1) });
        assert_eq!(rows[1].time, "2024-05-01T12:00:00Z");
    }

    #[test]
    fn a_row_is_32_bytes_and_rows_of_one_line_share_its_time() {
        assert_eq!(std::mem::size_of::<Stored>(), 32);
        let mut r = KatibReport::new("loss");
        let t = "2024-05-01T12:00:00.123456789Z";
        r.push("loss", "0.5", Some(t), 1);
        r.push("acc", "0.9", Some(t), 1);
        r.push("loss", "0.4", None, 2);
        r.push("loss", "0.3", Some(t), 3);
        assert_eq!(r.arena.len(), 3 + t.len() + 3 + 3 + 3 + t.len(), "no zero time, one time per run of rows");
        let rows: Vec<_> = r.rows().iter().map(|r| (r.name, r.value, r.time)).collect();
        assert_eq!(rows, [("loss", "0.5", t), ("acc", "0.9", t), ("loss", "0.4", ZERO_TIME), ("loss", "0.3", t)]);
    }

    #[test]
    fn delivered_rows_are_forgotten_and_the_rest_keep_their_index() {
        let mut r = KatibReport::new("loss");
        let t = "2024-05-01T12:00:00Z";
        for i in 0..10u64 {
            r.push("loss", &format!("0.{i}"), (i % 3 != 0).then_some(t), i);
        }
        r.forget_before(2);
        assert_eq!(r.kept(), 10, "a few rows are not worth moving the rest");
        r.forget_before(7);
        assert_eq!((r.len(), r.kept()), (10, 3));
        assert_eq!(r.row(6), None);
        let rest: Vec<_> = (7..10).filter_map(|i| r.row(i)).map(|r| (r.value, r.time, r.line)).collect();
        assert_eq!(rest, [("0.7", t, Some(7)), ("0.8", t, Some(8)), ("0.9", ZERO_TIME, Some(9))]);
        r.push("loss", "1", Some(t), 10);
        assert_eq!(r.row(10).map(|r| (r.value, r.time)), Some(("1", t)));
        r.forget_before(11);
        assert_eq!((r.len(), r.kept(), r.arena.len()), (11, 0, 0));
    }
}
