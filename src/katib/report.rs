//! The Katib report: the rows Katib's collector would send to its DB manager, in the order it would send them.
//!
//! Rows are kept in one byte arena (name, value, time ranges), so memory grows with the observations kept, never
//! with the log. [`KatibReport::rows`] applies Katib's final rule: when no row is for the objective (the first
//! metric name), the whole report is replaced by one `unavailable` row at Katib's zero time
//! (`pkg/metricscollector/v1beta1/file-metricscollector/file-metricscollector.go`, `newObservationLog`).

use std::ops::Range;

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

#[derive(Debug, Clone)]
struct Stored {
    name: Range<usize>,
    value: Range<usize>,
    time: Range<usize>,
    line: u64,
}

/// Rows collected for a Katib report.
#[derive(Debug, Clone)]
pub struct KatibReport {
    objective: String,
    /// The `unavailable` row's time: Katib's zero time (the file collector), or the clock (TensorFlowEvent).
    sentinel_time: String,
    arena: String,
    rows: Vec<Stored>,
    has_objective: bool,
}

impl KatibReport {
    /// An empty report whose objective is `objective`.
    pub fn new(objective: impl Into<String>) -> Self {
        KatibReport {
            objective: objective.into(),
            sentinel_time: ZERO_TIME.to_string(),
            arena: String::new(),
            rows: Vec::new(),
            has_objective: false,
        }
    }

    /// The same report whose `unavailable` row has the time `time` (Katib's TensorFlowEvent collector stamps it
    /// with its clock, `rfc3339(datetime.now())`).
    pub fn with_sentinel_time(mut self, time: &str) -> Self {
        self.sentinel_time = time.to_string();
        self
    }

    fn push_str(&mut self, s: &str) -> Range<usize> {
        let start = self.arena.len();
        self.arena.push_str(s);
        start..self.arena.len()
    }

    /// Adds one row.
    pub fn push(&mut self, name: &str, value: &str, time: Option<&str>, line: u64) {
        self.has_objective |= name == self.objective;
        let name = self.push_str(name);
        let value = self.push_str(value);
        let time = self.push_str(time.unwrap_or(ZERO_TIME));
        self.rows.push(Stored { name, value, time, line });
    }

    /// Rows collected (before the sentinel rule).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row was collected.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether a row is for the objective: until then Katib would send nothing but the sentinel.
    pub fn has_objective(&self) -> bool {
        self.has_objective
    }

    /// The objective's name.
    pub fn objective(&self) -> &str {
        &self.objective
    }

    /// Row `i` (before the sentinel rule).
    pub fn row(&self, i: usize) -> Option<Row<'_>> {
        let r = self.rows.get(i)?;
        Some(Row {
            name: &self.arena[r.name.clone()],
            value: &self.arena[r.value.clone()],
            time: &self.arena[r.time.clone()],
            line: Some(r.line),
        })
    }

    /// The single row Katib sends for a report without its objective.
    pub fn sentinel(&self) -> Row<'_> {
        Row { name: &self.objective, value: UNAVAILABLE, time: &self.sentinel_time, line: None }
    }

    /// Every row collected, before Katib's final rule.
    pub fn collected(&self) -> Vec<Row<'_>> {
        (0..self.rows.len()).filter_map(|i| self.row(i)).collect()
    }

    /// The report as Katib sends it: every row, or the single `unavailable` row when the objective is missing.
    pub fn rows(&self) -> Vec<Row<'_>> {
        if !self.has_objective {
            return vec![self.sentinel()];
        }
        self.collected()
    }
}

impl ObservationSink for KatibReport {
    /// Katib reads the metrics file once, when training ended: rows of a content that was truncated away or
    /// replaced are not in its report (`CollectObservationLog` reads the path whole).
    fn restarted(&mut self) {
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
}
