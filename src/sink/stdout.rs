//! The local sink: a summary table, or one JSON object per observation.
//!
//! JSON lines are `{"metric","value","raw","step","timestamp","line"}`: `value` is the parsed number or `null`
//! (JSON has no NaN or infinity: look at `raw`), `raw` the text as printed, `step` and `timestamp` `null` when the
//! line had none. A write error (a closed pipe) stops the output and is reported once at the end; collecting goes on.

use std::io::{self, Write};

use serde::Serialize;

use crate::aggregate::{Aggregator, MetricStats};
use crate::collect::{Observation, ObservationSink};
use crate::katib::report::Row;

#[derive(Serialize)]
struct JsonObservation<'a> {
    metric: &'a str,
    value: Option<f64>,
    raw: &'a str,
    step: Option<u64>,
    timestamp: Option<&'a str>,
    line: Option<u64>,
}

fn write_json(out: &mut impl Write, o: &JsonObservation<'_>) -> io::Result<()> {
    serde_json::to_writer(&mut *out, o)?;
    out.write_all(b"\n")
}

/// Writes every observation as a JSON line.
pub struct JsonLines<W: Write> {
    out: W,
    error: Option<io::Error>,
}

impl<W: Write> JsonLines<W> {
    /// JSON lines to `out` (buffer it).
    pub fn new(out: W) -> Self {
        JsonLines { out, error: None }
    }

    /// Flushes what is buffered (live modes call this before they wait); an error is kept for [`Self::finish`].
    pub fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(e);
        }
    }

    /// Flushes and returns the first write error, if any.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> ObservationSink for JsonLines<W> {
    fn observe(&mut self, o: &Observation<'_>) {
        if self.error.is_some() {
            return;
        }
        let name = String::from_utf8_lossy(o.name);
        let raw = String::from_utf8_lossy(o.raw);
        let time = o.time.map(String::from_utf8_lossy);
        let row = JsonObservation {
            metric: &name,
            value: o.value,
            raw: &raw,
            step: o.step,
            timestamp: time.as_deref(),
            line: Some(o.line),
        };
        if let Err(e) = write_json(&mut self.out, &row) {
            self.error = Some(e);
        }
    }
}

/// Writes Katib report rows as JSON lines (`value` parsed where it parses, `raw` as reported).
pub fn write_report_json(out: &mut impl Write, rows: &[Row<'_>]) -> io::Result<()> {
    for r in rows {
        let value = crate::value::parse_value(r.value.as_bytes());
        write_json(
            out,
            &JsonObservation { metric: r.name, value, raw: r.value, step: None, timestamp: Some(r.time), line: r.line },
        )?;
    }
    out.flush()
}

/// Writes the summary table: metric, count, latest, min, max, last step.
pub fn write_table(out: &mut impl Write, agg: &Aggregator) -> io::Result<()> {
    write_table_with(out, agg.metrics(), None)
}

/// An extra, left-aligned last column of the summary table: its header and each metric's cell by index.
pub type Column<'a> = (&'a str, &'a dyn Fn(usize) -> String);

/// Writes the summary table of `metrics`, with an optional extra last column (the sparklines).
pub fn write_table_with(out: &mut impl Write, metrics: &[MetricStats], extra: Option<Column<'_>>) -> io::Result<()> {
    let mut header = vec!["metric", "count", "latest", "min", "max", "step"];
    header.extend(extra.map(|(h, _)| h));
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut row = vec![
                m.name.clone(),
                m.count.to_string(),
                m.latest_raw.clone(),
                m.min.as_ref().map_or_else(dash, |(_, s)| s.clone()),
                m.max.as_ref().map_or_else(dash, |(_, s)| s.clone()),
                m.step.map_or_else(dash, |s| s.to_string()),
            ];
            row.extend(extra.map(|(_, cell)| cell(i)));
            row
        })
        .collect();
    if rows.is_empty() {
        writeln!(out, "no metrics found")?;
        return out.flush();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let last = if extra.is_some() { header.len() - 1 } else { usize::MAX };
    let line = |out: &mut dyn Write, cells: &[&str]| -> io::Result<()> {
        let mut s = String::new();
        for (i, (cell, &w)) in cells.iter().zip(&widths).enumerate() {
            // The name (and the extra column) left-aligned, numbers right-aligned.
            if i == 0 {
                s.push_str(&format!("{cell:<w$}"));
            } else if i == last {
                s.push_str(&format!("  {cell:<w$}"));
            } else {
                s.push_str(&format!("  {cell:>w$}"));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &header)?;
    for r in &rows {
        line(out, &r.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregator;

    #[test]
    fn table_aligns_columns_and_shows_dashes_for_missing_values() {
        let mut a = Aggregator::new(10);
        let id = a.intern(b"val_loss").unwrap();
        a.record(id, b"0.5", Some(0.5), Some(3), 1);
        let id = a.intern(b"g").unwrap();
        a.record(id, b"Genotype", None, None, 2);
        let mut out = Vec::new();
        write_table(&mut out, &a).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "metric    count    latest  min  max  step\n\
             val_loss      1       0.5  0.5  0.5     3\n\
             g             1  Genotype    -    -     -\n"
        );
    }

    #[test]
    fn json_lines_write_null_for_non_finite_values() {
        let mut sink = JsonLines::new(Vec::new());
        let obs = Observation {
            metric: crate::aggregate::MetricId(0),
            name: b"loss",
            raw: b"nan",
            value: Some(f64::NAN),
            step: Some(2),
            time: None,
            line: 7,
        };
        sink.observe(&obs);
        let out = String::from_utf8(sink.finish().unwrap()).unwrap();
        assert_eq!(
            out,
            "{\"metric\":\"loss\",\"value\":null,\"raw\":\"nan\",\"step\":2,\"timestamp\":null,\"line\":7}\n"
        );
    }
}
