//! `trialtail run`: wires a validated configuration to its source and sinks.

use std::io::{self, BufWriter, ErrorKind, IsTerminal, Read, Write};
use std::time::Instant;

use crate::cli::Output;
use crate::collect::{Collector, ObservationSink};
use crate::config::RunConfig;
use crate::export::{Background, ExportError};
use crate::live::write_table_sparklines;
use crate::progress;
use crate::report::KatibReport;
use crate::sink::sparkline::Sparklines;
use crate::sink::stdout::{JsonLines, write_report_json, write_table};
use crate::source::{self, file::SourceError};
use crate::state::{Phase, SourceStats};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("writing the output failed")]
    Output(#[source] io::Error),
    #[error(transparent)]
    Export(#[from] ExportError),
}

impl RunError {
    /// The process exit code: 2 for what the user can fix in the command line (a missing file), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Source(SourceError::Open { .. } | SourceError::Directory { .. }) => 2,
            RunError::Export(ExportError::Server(_)) => 2,
            RunError::Source(SourceError::Read { .. }) | RunError::Output(_) | RunError::Export(_) => 1,
        }
    }
}

fn output_error(e: io::Error) -> Result<(), RunError> {
    // A reader that went away (`| head`) is not an error of ours.
    if e.kind() == ErrorKind::BrokenPipe { Ok(()) } else { Err(RunError::Output(e)) }
}

/// Runs `trialtail run` to completion.
pub fn run(cfg: RunConfig) -> Result<(), RunError> {
    let started = Instant::now();
    if cfg.live {
        // The renderer is ready (crate::live); the follow mode that drives it is not in this build yet.
        tracing::warn!("--live has no effect when reading to the end: it redraws the table while following a log");
    }
    let reader = source::file::open(&cfg.log)?;
    // The bar erases itself at end of file, before the table is printed.
    let mut reader = progress::wrap(reader, &cfg.log, cfg.progress);
    let mut collector = Collector::new(cfg.rules, cfg.max_line_bytes, cfg.max_metrics);
    // `--listen`/`--pushgateway`: scrapes are served from another thread; without them, nothing changes here.
    let mut export = Background::start(&cfg.export)?;
    let stdout = io::stdout();
    let read_result = match (&cfg.objective, cfg.output) {
        (Some(objective), output) => {
            let mut report = KatibReport::new(objective.clone());
            let r = read(&mut reader, &mut collector, &mut report, export.as_mut());
            let mut out = BufWriter::new(stdout.lock());
            let written = match output {
                Output::Json => write_report_json(&mut out, &report.rows()),
                Output::Table => write_table(&mut out, collector.aggregate()),
            };
            written.or_else(output_error)?;
            r
        }
        (None, Output::Json) => {
            let mut sink = JsonLines::new(BufWriter::new(stdout.lock()));
            let r = read(&mut reader, &mut collector, &mut sink, export.as_mut());
            sink.finish().map(drop).or_else(output_error)?;
            r
        }
        (None, Output::Table) => {
            // A sparkline column on a terminal; the history is bounded and cheap, so it is always kept.
            let mut sparks = Sparklines::new();
            let r = read(&mut reader, &mut collector, &mut sparks, export.as_mut());
            let mut out = BufWriter::new(stdout.lock());
            let metrics = collector.aggregate().metrics();
            let written = if stdout.is_terminal() {
                write_table_sparklines(&mut out, metrics, &sparks)
            } else {
                write_table(&mut out, collector.aggregate())
            };
            written.or_else(output_error)?;
            r
        }
    };
    if cfg.stats {
        print_stats(&collector, started);
    }
    let c = collector.counters();
    if c.dropped > 0 {
        tracing::warn!(dropped = c.dropped, "observations dropped by the metric limit (--max-metrics)");
    }
    if let Some(export) = export {
        let read_errors = u64::from(read_result.is_err());
        export.finish(&collector, SourceStats { opens: 1, read_errors, ..SourceStats::default() });
    }
    match read_result {
        Ok(_) => Ok(()),
        Err(source) => {
            let bytes = collector.line_stats().bytes;
            Err(SourceError::Read { path: cfg.log, bytes, source }.into())
        }
    }
}

/// Reads to the end like [`source::read_to_end`], publishing snapshots for the exporter when there is one.
///
/// A short read (the pipe or file had no more for now) publishes at once, since the next read may wait; a full
/// one publishes at most every [`crate::state::PUBLISH_INTERVAL`], so a fast file is not slowed by copying.
///
/// # Performance
/// Without an exporter this is [`source::read_to_end`] itself. With one, a fast pipe (whose reads are short)
/// publishes once per read: one copy of every metric's statistics per read of up to 64 KiB.
fn read(
    reader: &mut impl Read,
    collector: &mut Collector,
    sink: &mut impl ObservationSink,
    export: Option<&mut Background>,
) -> io::Result<u64> {
    let Some(export) = export else { return source::read_to_end(reader, collector, sink) };
    let stats = SourceStats { opens: 1, ..SourceStats::default() };
    let mut total = 0u64;
    loop {
        let space = collector.space();
        let (len, read) = (space.len(), reader.read(space));
        match read {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                collector.commit(n, sink);
                if n < len {
                    export.publisher().publish(collector, stats, Phase::Reading);
                } else {
                    export.publisher().maybe_publish(collector, stats, Phase::Reading);
                }
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

/// The process's peak resident memory in bytes (Linux), for `--stats`.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn print_stats(collector: &Collector, started: Instant) {
    let l = collector.line_stats();
    let c = collector.counters();
    let secs = started.elapsed().as_secs_f64();
    let mb_s = l.bytes as f64 / 1e6 / secs.max(1e-9);
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "bytes={} lines={} too_long_lines={} observations={} parse_errors={} bad_json_lines={} dropped={} \
         metrics={} seconds={secs:.3} mb_per_s={mb_s:.1} peak_rss_bytes={}",
        l.bytes,
        l.lines,
        l.too_long,
        c.observations,
        c.parse_errors,
        c.bad_json,
        c.dropped,
        collector.aggregate().metrics().len(),
        peak_rss().map_or_else(|| "unknown".to_string(), |b| b.to_string()),
    );
}

/// Feeds `bytes` through a collector built from `cfg`'s rules (tests and benchmarks use this).
pub fn collect_bytes(cfg: RunConfig, bytes: &[u8], sink: &mut impl ObservationSink) -> Collector {
    let mut collector = Collector::new(cfg.rules, cfg.max_line_bytes, cfg.max_metrics);
    collector.feed(bytes, sink);
    collector.finish(sink);
    collector
}
