//! The live summary (`--live`): the summary table with sparklines, redrawn in place on a terminal.
//!
//! [`LiveTable`] renders a frame from per-metric statistics (the collector's [`crate::aggregate::Aggregator`], or a
//! published [`crate::snapshot::Snapshot`]'s `metrics`) and the [`Sparklines`] history, and redraws it over the
//! previous frame with ANSI codes: cursor up over the lines last drawn, clear to the end of the screen, the new
//! table. [`LiveTable::maybe_draw`] is rate-limited (at most every [`INTERVAL`]), so calling it after every read
//! chunk costs a clock read; the frame is built and written only when due.
//!
//! It is written for the follow mode's read loop (call `maybe_draw` after each chunk and `draw` once at the end)
//! and does not decide by itself whether stdout is a terminal: without one, `--live` should not be used and
//! the plain table printed at the end instead. Lines wider than the terminal would wrap and break the redraw;
//! the table is as wide as its longest metric name plus about 60 columns.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::aggregate::MetricStats;
use crate::sink::stdout::write_table_with;
use crate::term::sparkline::Sparklines;

/// The shortest time between two frames.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// The header of the sparkline column.
pub const TREND: &str = "trend";

/// Writes the summary table with a sparkline column (the table `trialtail run` prints on a terminal).
pub fn write_table_sparklines(out: &mut impl Write, metrics: &[MetricStats], sparks: &Sparklines) -> io::Result<()> {
    let cell = |i: usize| sparks.line(i);
    write_table_with(out, metrics, Some((TREND, &cell)))
}

/// A summary that redraws itself in place.
#[derive(Debug, Default)]
pub struct LiveTable {
    lines: usize,
    last: Option<Instant>,
}

impl LiveTable {
    /// Nothing drawn yet.
    pub fn new() -> Self {
        LiveTable::default()
    }

    /// Draws a frame if the last one is at least [`INTERVAL`] old; returns whether it drew.
    pub fn maybe_draw(
        &mut self,
        out: &mut impl Write,
        metrics: &[MetricStats],
        sparks: &Sparklines,
    ) -> io::Result<bool> {
        if self.last.is_some_and(|t| t.elapsed() < INTERVAL) {
            return Ok(false);
        }
        self.draw(out, metrics, sparks)?;
        Ok(true)
    }

    /// Draws a frame now, over the previous one (call once more at the end: the last frame stays).
    pub fn draw(&mut self, out: &mut impl Write, metrics: &[MetricStats], sparks: &Sparklines) -> io::Result<()> {
        let mut table = Vec::new();
        write_table_sparklines(&mut table, metrics, sparks)?;
        out.write_all(&self.frame(&table))?;
        out.flush()?;
        self.last = Some(Instant::now());
        Ok(())
    }

    /// The bytes that replace the previous frame with `table` (which ends in a newline).
    pub fn frame(&mut self, table: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(table.len() + 16);
        if self.lines > 0 {
            // Up `lines` lines to column 1, then clear to the end of the screen.
            frame.extend_from_slice(format!("\x1b[{}F\x1b[J", self.lines).as_bytes());
        }
        frame.extend_from_slice(table);
        self.lines = memchr::memchr_iter(b'\n', table).count();
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregator;
    use crate::parser::{Observation, ObservationSink};

    fn record(agg: &mut Aggregator, sparks: &mut Sparklines, name: &[u8], v: f64) {
        let id = agg.intern(name).unwrap();
        let raw = v.to_string();
        agg.record(id, raw.as_bytes(), Some(v), None, 1);
        let o = Observation { metric: id, name, raw: raw.as_bytes(), value: Some(v), step: None, time: None, line: 1 };
        sparks.observe(&o);
    }

    #[test]
    fn frames_redraw_over_the_previous_one() {
        let (mut agg, mut sparks, mut live) = (Aggregator::new(10), Sparklines::new(), LiveTable::new());
        record(&mut agg, &mut sparks, b"loss", 2.0);
        let mut out = Vec::new();
        live.draw(&mut out, agg.metrics(), &sparks).unwrap();
        let first = String::from_utf8(out).unwrap();
        assert!(!first.contains('\x1b'), "the first frame just prints: {first:?}");
        assert!(first.starts_with("metric  count  latest  min  max  step  trend\nloss"), "{first:?}");
        record(&mut agg, &mut sparks, b"loss", 1.0);
        record(&mut agg, &mut sparks, b"acc", 0.5);
        let mut out = Vec::new();
        live.draw(&mut out, agg.metrics(), &sparks).unwrap();
        let second = String::from_utf8(out).unwrap();
        assert!(second.starts_with("\x1b[2F\x1b[J"), "up over the 2 lines drawn: {second:?}");
        assert!(second.contains("█▁"), "loss fell: {second:?}");
        assert_eq!(live.lines, 3);
        assert!(!live.maybe_draw(&mut Vec::new(), agg.metrics(), &sparks).unwrap(), "rate-limited");
    }
}
