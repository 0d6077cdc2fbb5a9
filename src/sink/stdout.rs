//! The local sink: a summary table, one JSON object per observation, or the Katib report – on stdout, on stderr
//! when wrapping a command (whose stdout it is), or in `--output-file`.
//!
//! [`StdoutSink`] is what `trialtail run` prints: it sees every observation as it is made (JSON lines are
//! written at once, the sparklines and the Katib report collect), is flushed before the run waits (and redraws
//! the `--live` table then), and writes what is written at the end in [`StdoutSink::finish`]. JSON lines are `{"metric","value","raw","step","timestamp","line"}`: `value` is the parsed number or `null`
//! (JSON has no NaN or infinity: look at `raw`), `raw` the text as printed, `step` and `timestamp` `null` when the
//! line had none. A write error (a closed pipe) stops the output and is reported once at the end; collecting goes on.

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, IsTerminal, Write};
use std::path::PathBuf;

use serde::Serialize;

use crate::aggregate::{Aggregator, MetricStats};
use crate::katib::report::{KatibReport, Row};
use crate::parser::{Observation, ObservationSink, Parser};
use crate::source::LiveSink;
use crate::term::explain;
use crate::term::live::{LiveTable, write_table_sparklines};
use crate::term::sparkline::Sparklines;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A summary table at the end.
    Table,
    /// One JSON object per observation, as it is found (in Katib semantics: the report, at the end).
    Json,
}

impl OutputKind {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Table => "table",
            OutputKind::Json => "json",
        }
    }
}

/// What the run prints and where, as validated from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdoutConfig {
    /// `--output`.
    pub kind: OutputKind,
    /// Katib's objective: print the Katib report (`--katib-semantics`).
    pub objective: Option<String>,
    /// `--output-file`.
    pub file: Option<PathBuf>,
    /// The run wraps a command: its stdout is the command's, so the output goes to stderr.
    pub wrapping: bool,
    /// `--live` while following a file: redraw the table in place (on a terminal).
    pub live: bool,
    /// `--explain`: say how each metric was found, and list every parameter.
    pub explain: bool,
}

impl StdoutConfig {
    /// Where the output goes, in words.
    pub fn destination(&self) -> String {
        match (&self.file, self.wrapping) {
            (Some(path), _) => path.display().to_string(),
            (None, true) => "stderr".to_string(),
            (None, false) => "stdout".to_string(),
        }
    }
}

type Dest = BufWriter<Box<dyn Write + Send>>;

/// Why the output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StdoutError {
    #[error("--output-file {path}: cannot create it")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the output failed")]
    Write(#[source] io::Error),
}

/// What `trialtail run` prints, and where.
pub enum StdoutSink {
    /// One JSON object per observation, as found; the parameters (and with `--explain` the explanations) at the
    /// end.
    Json(JsonLines<Dest>, bool),
    /// The Katib report, at the end.
    Report(KatibReport, OutputKind, Dest),
    /// The summary table, at the end; with a sparkline column on a terminal, redrawn while following (`--live`);
    /// the parameters under it, and with `--explain` how each metric was found.
    Table { out: Dest, sparks: Sparklines, terminal: bool, live: Option<LiveTable>, explain: bool },
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StdoutSink::Json(..) => "StdoutSink::Json",
            StdoutSink::Report(..) => "StdoutSink::Report",
            StdoutSink::Table { .. } => "StdoutSink::Table",
        })
    }
}

impl StdoutSink {
    /// Opens the destination (`--output-file` is created now, before anything is read).
    pub fn open(cfg: &StdoutConfig) -> Result<Self, StdoutError> {
        let w: Box<dyn Write + Send> = match (&cfg.file, cfg.wrapping) {
            (Some(path), _) => {
                Box::new(File::create(path).map_err(|source| StdoutError::Create { path: path.clone(), source })?)
            }
            (None, true) => Box::new(io::stderr()),
            (None, false) => Box::new(io::stdout()),
        };
        let dest = BufWriter::new(w);
        Ok(match (&cfg.objective, cfg.kind) {
            (Some(objective), kind) => StdoutSink::Report(KatibReport::new(objective.clone()), kind, dest),
            (None, OutputKind::Json) => StdoutSink::Json(JsonLines::new(dest), cfg.explain),
            (None, OutputKind::Table) => {
                // Sparklines and redraws only where a person looks: stdout on a terminal, no --output-file.
                let terminal = cfg.file.is_none() && !cfg.wrapping && io::stdout().is_terminal();
                let live = (cfg.live && terminal && crate::term::redraws_here(true)).then(LiveTable::new);
                StdoutSink::Table { out: dest, sparks: Sparklines::new(), terminal, live, explain: cfg.explain }
            }
        })
    }

    /// Writes what is written at the end (a reader that went away, `| head`, is not an error).
    pub fn finish(self, parser: &Parser) -> Result<(), StdoutError> {
        let agg = parser.aggregate();
        let written = match self {
            StdoutSink::Json(sink, explain) => sink.finish_with(parser, explain).map(drop),
            StdoutSink::Report(report, OutputKind::Json, mut out) => write_report_json(&mut out, &report.rows()),
            StdoutSink::Report(_, OutputKind::Table, mut out) => write_table(&mut out, agg),
            StdoutSink::Table { mut out, sparks, live, terminal, explain } => {
                let table = match live {
                    _ if agg.metrics().is_empty() && parser.rules().recognising() => {
                        explain::write_nothing_found(&mut out, parser)
                    }
                    Some(mut live) => live.draw(&mut out, agg.metrics(), &sparks),
                    None if terminal => write_table_sparklines(&mut out, agg.metrics(), &sparks),
                    None => write_table(&mut out, agg),
                };
                table.and_then(|()| write_after_table(&mut out, parser, explain))
            }
        };
        match written {
            Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(StdoutError::Write(e)),
            _ => Ok(()),
        }
    }
}

/// Under the table: the parameters (all of them with `--explain`), then the explanations.
fn write_after_table(out: &mut impl Write, parser: &Parser, explain: bool) -> io::Result<()> {
    if !parser.aggregate().metrics().is_empty() {
        explain::write_params(out, &parser.params(), explain)?;
    }
    if explain {
        explain::write_explain(out, parser)?;
    }
    out.flush()
}

impl ObservationSink for StdoutSink {
    fn observe(&mut self, obs: &Observation<'_>) {
        match self {
            StdoutSink::Json(sink, _) => sink.observe(obs),
            StdoutSink::Report(report, ..) => report.observe(obs),
            // The trend column is drawn only on a terminal: elsewhere nothing is kept for it.
            StdoutSink::Table { sparks, terminal: true, .. } => sparks.observe(obs),
            StdoutSink::Table { .. } => {}
        }
    }

    fn restarted(&mut self) {
        if let StdoutSink::Report(report, ..) = self {
            report.restarted();
        }
    }
}

impl LiveSink for StdoutSink {
    fn flush(&mut self, parser: &Parser) {
        match self {
            StdoutSink::Json(sink, _) => sink.flush(),
            StdoutSink::Table { out, sparks, live, .. } => {
                // A frame at most every few hundred milliseconds; a failed write stops the redraws, not the run.
                if let Some(table) = live
                    && table.maybe_draw(out, parser.aggregate().metrics(), sparks).is_err()
                {
                    *live = None;
                }
            }
            StdoutSink::Report(..) => {}
        }
    }
}

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

    /// Writes the parameters the recognition set apart (`{"kind":"param",…}`) and, with `explain`, how each
    /// metric was found (`{"kind":"explain",…}`), then flushes; with nothing found, the help goes to stderr.
    pub fn finish_with(mut self, parser: &Parser, explain: bool) -> io::Result<W> {
        if self.error.is_none()
            && let Err(e) = write_json_records(&mut self.out, parser, explain)
        {
            self.error = Some(e);
        }
        if parser.aggregate().metrics().is_empty() && parser.rules().recognising() {
            let _ = explain::write_nothing_found(&mut io::stderr().lock(), parser);
        }
        self.finish()
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

#[derive(Serialize)]
struct JsonParam<'a> {
    kind: &'static str,
    name: &'a str,
    value: Option<f64>,
    raw: &'a str,
    line: u64,
}

#[derive(Serialize)]
struct JsonExplained<'a> {
    kind: &'static str,
    metric: &'a str,
    rule: &'a str,
    line: u64,
    sample: &'a str,
}

/// The records after the observations: parameters, then (with `explain`) one per metric.
fn write_json_records(out: &mut impl Write, parser: &Parser, explain: bool) -> io::Result<()> {
    for p in parser.params() {
        let value = crate::value::parse_value(p.raw.as_bytes()).filter(|v| v.is_finite());
        let row = JsonParam { kind: "param", name: &p.name, value, raw: &p.raw, line: p.line };
        serde_json::to_writer(&mut *out, &row)?;
        out.write_all(b"\n")?;
    }
    if explain {
        for (m, e) in parser.aggregate().metrics().iter().zip(parser.explained()) {
            let rule = parser.rules().describe(e.origin);
            let row = JsonExplained { kind: "explain", metric: &m.name, rule: &rule, line: e.line, sample: &e.sample };
            serde_json::to_writer(&mut *out, &row)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
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
                m.latest_raw.to_string(),
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
