//! `trialtail run`: wires a validated configuration to its source and its outputs.
//!
//! The local mode (a file read to its end) is a plain synchronous loop: it is the fast path and stays free of
//! any runtime unless `--listen` or `--pushgateway` asks for one ([`Outputs::start_background`]). The live
//! modes (`--follow`, standard input, a wrapped command) run on a current-thread tokio runtime with SIGINT/SIGTERM
//! handling; the native sidecar (`--source pod-log`) is its own mode ([`super::sidecar`]). Every mode builds its
//! outputs through [`Outputs`] and ends them with [`Outputs::finish`].

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use crate::config::{RunConfig, Source};
use crate::lines::LineBuffer;
use crate::modes::sidecar::{self, SidecarError};
use crate::outputs::{Finished, Outputs, OutputsError};
use crate::parser::Parser;
use crate::rules::LineFormat;
use crate::signal::Signals;
use crate::sink::stdout::{OutputKind, StdoutError, StdoutSink};
use crate::snapshot::SourceStats;
use crate::source::file::{self as file_source, read_to_end};
use crate::source::tail::Tailer;
use crate::source::tfevents::Scalars;
use crate::source::tfevents::dir::{EventDir, Naming, Order};
use crate::source::tfevents::record::DEFAULT_MAX_RECORD;
use crate::source::{self, End, Feed, LiveSink, SourceError, StopOptions, child};
use crate::term::progress;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Outputs(#[from] OutputsError),
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
}

impl RunError {
    /// The process exit code: 2 for what the user can fix in the command line (a missing file), 127/126 for a
    /// command that cannot be run, 128+N after a second signal N, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Source(
                SourceError::Open { .. } | SourceError::Directory { .. } | SourceError::NoEventFiles { .. },
            )
            | RunError::Outputs(OutputsError::Stdout(StdoutError::Create { .. }) | OutputsError::Server(_)) => 2,
            RunError::Outputs(_) => 1,
            RunError::Sidecar(e) => e.exit_code(),
            RunError::Source(SourceError::Spawn { source, .. }) => child::spawn_exit_code(source),
            RunError::Source(SourceError::Interrupted { signal }) => 128u8.wrapping_add(*signal as u8),
            RunError::Source(SourceError::Read { .. } | SourceError::Runtime(_)) => 1,
        }
    }
}

impl From<StdoutError> for RunError {
    fn from(e: StdoutError) -> Self {
        RunError::Outputs(OutputsError::Stdout(e))
    }
}

/// Runs `trialtail run` to completion and returns the exit code (the wrapped command's in wrap mode).
pub fn run(cfg: RunConfig) -> Result<u8, RunError> {
    if let Source::PodLog { .. } = cfg.source {
        return Ok(sidecar::run(cfg)?);
    }
    let started = Instant::now();
    // The local mode opens its file before anything is printed: a missing file prints one error, no table.
    let local = match &cfg.source {
        Source::File(path) => Some((file_source::open(path)?, path.clone())),
        _ => None,
    };
    let stdout = StdoutSink::open(&cfg.stdout())?;
    if cfg.live && !matches!(cfg.source, Source::Follow { .. } | Source::EventFiles { follow: true, .. }) {
        tracing::warn!("--live redraws the table while following a log (--follow); it has no effect here");
    }
    let mut parser = Parser::new(cfg.rules, cfg.max_metrics);
    if let Source::EventFiles { path, follow: false } = &cfg.source {
        if crate::source::tfevents::dir::walk(path, Order::Sorted).is_empty() {
            return Err(SourceError::NoEventFiles { path: path.to_owned() }.into());
        }
        let mut outputs = Outputs::start_background(&cfg.export)?.with_stdout(stdout);
        let (result, source) = read_events(path, &mut parser, &mut outputs);
        outputs.publish_end(&parser, source);
        let finished = outputs.finish_blocking(&parser, cfg.shutdown_grace);
        wrap_up(&parser, finished, cfg.stats.then_some((source, started)))?;
        return result.map(|()| 0);
    }
    let (result, finished, source) = match local {
        Some((reader, path)) => {
            let mut outputs = Outputs::start_background(&cfg.export)?.with_stdout(stdout);
            let (result, source) =
                read_local(reader, &path, cfg.progress, cfg.max_line_bytes, &mut parser, &mut outputs);
            outputs.publish_end(&parser, source);
            let finished = outputs.finish_blocking(&parser, cfg.shutdown_grace);
            if let Some(signal) = finished.interrupted {
                return Err(SourceError::Interrupted { signal }.into());
            }
            (result, finished, source)
        }
        None => {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SourceError::Runtime)?;
            let stop = StopOptions { until_idle: cfg.until_idle, grace: cfg.shutdown_grace };
            rt.block_on(async {
                let mut signals = Signals::new().map_err(SourceError::Runtime)?;
                let mut outputs = Outputs::start(&cfg.export)?.with_stdout(stdout);
                let mut feed = Feed::new(&mut parser, &mut outputs);
                let end = read_live(&cfg.source, cfg.max_line_bytes, stop, &mut feed, &mut signals).await;
                let source = feed.stats;
                // Whatever happened to the source, what was observed is written – but a second signal exits now.
                if let Err(e @ SourceError::Interrupted { .. }) = end {
                    return Err(RunError::Source(e));
                }
                let finished = outputs.finish(&parser, cfg.shutdown_grace, Some(&mut signals)).await;
                if let Some(signal) = finished.interrupted {
                    return Err(SourceError::Interrupted { signal }.into());
                }
                Ok::<_, RunError>((end, finished, source))
            })?
        }
    };
    wrap_up(&parser, finished, cfg.stats.then_some((source, started)))?;
    format_hint(&parser, cfg.output);
    match result? {
        End::Exited(code) => Ok(code),
        End::Eof | End::Idle | End::Signalled(_) => Ok(0),
    }
}

/// The local mode's read: the file (behind the progress bar) to its end, publishing for the outputs as it goes.
///
/// # Performance
/// Without `--listen` or `--pushgateway` nothing reads the snapshots and publishing is a branch per read.
fn read_local(
    reader: Box<dyn Read>,
    path: &std::path::Path,
    bar: bool,
    max_line_bytes: usize,
    parser: &mut Parser,
    outputs: &mut Outputs,
) -> (Result<End, SourceError>, SourceStats) {
    // The bar (a terminal on stderr only) erases itself at end of file, before the table is printed.
    let mut reader = progress::wrap(reader, path, bar);
    let mut lines = LineBuffer::new(max_line_bytes);
    let read = read_to_end(&mut reader, &mut lines, parser, outputs);
    let source =
        SourceStats { opens: 1, read_errors: u64::from(read.is_err()), lines: lines.stats(), ..SourceStats::default() };
    let result = read.map(|_| End::Eof).map_err(|source| SourceError::Read {
        path: PathBuf::from(path),
        bytes: lines.stats().bytes,
        source,
    });
    (result, source)
}

/// The local mode for event files: every file below `path` read to its end, one after the other.
fn read_events(
    path: &std::path::Path,
    parser: &mut Parser,
    outputs: &mut Outputs,
) -> (Result<(), RunError>, SourceStats) {
    let mut dir = EventDir::new(path, Order::Sorted, Naming::Several, Scalars::default(), DEFAULT_MAX_RECORD);
    let read = dir.read_all(parser, outputs);
    (read.map_err(RunError::from), dir.stats())
}

/// The live modes' sources, until they end.
async fn read_live<S: LiveSink>(
    source: &Source,
    max_line_bytes: usize,
    stop: StopOptions,
    feed: &mut Feed<'_, S>,
    signals: &mut Signals,
) -> Result<End, SourceError> {
    match source {
        Source::Follow { path, from_end } => {
            let tailer = Tailer::new(path, *from_end, max_line_bytes);
            source::follow::follow(tailer, feed, signals, stop).await
        }
        Source::EventFiles { path, .. } => {
            let dir = EventDir::new(path, Order::Sorted, Naming::Always, Scalars::default(), DEFAULT_MAX_RECORD);
            source::follow::follow(dir, feed, signals, stop).await
        }
        Source::Stdin => source::stdin::follow(feed, signals, max_line_bytes).await,
        Source::Command(command) => child::wrap(command, feed, signals, max_line_bytes, stop.grace).await,
        Source::File(_) | Source::PodLog { .. } => Ok(End::Eof),
    }
}

/// After the outputs ended: a failed write of the output is the run's error; `--stats` and the metric limit
/// are said.
pub(crate) fn wrap_up(
    parser: &Parser,
    finished: Finished,
    stats: Option<(SourceStats, Instant)>,
) -> Result<(), StdoutError> {
    if let Some(e) = finished.stdout {
        return Err(e);
    }
    if let Some((source, started)) = stats {
        print_stats(parser, source, started);
    }
    let c = parser.counters();
    if c.dropped > 0 {
        tracing::warn!(dropped = c.dropped, "observations dropped by the metric limit (--max-metrics)");
    }
    Ok(())
}

/// `--format json` says how the log is written, `--output json` how results are printed: a log with lines that
/// are not JSON read with `--format json` but printed as a table is most likely that mix-up.
fn format_hint(parser: &Parser, output: OutputKind) {
    let c = parser.counters();
    if parser.rules().format() == LineFormat::Json && output != OutputKind::Json && c.bad_json > 0 {
        tracing::warn!(
            lines_not_json = c.bad_json,
            "--format json reads a log written as JSON lines; to print the results as JSON lines, use --output json \
             (a plain-text log needs no --format)"
        );
    }
}

/// The process's peak resident memory in bytes (Linux), for `--stats`.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn print_stats(parser: &Parser, source: SourceStats, started: Instant) {
    let l = source.lines;
    let c = parser.counters();
    let secs = started.elapsed().as_secs_f64();
    let mb_s = l.bytes as f64 / 1e6 / secs.max(1e-9);
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "bytes={} lines={} too_long_lines={} observations={} parse_errors={} bad_json_lines={} dropped={} \
         oversized={} metrics={} opens={} rotations={} truncations={} read_errors={} seconds={secs:.3} mb_per_s={mb_s:.1} \
         peak_rss_bytes={}",
        l.bytes,
        l.lines,
        l.too_long,
        c.observations,
        c.parse_errors,
        c.bad_json,
        c.dropped,
        c.oversized,
        parser.aggregate().metrics().len(),
        source.opens,
        source.rotations,
        source.truncations,
        source.read_errors,
        peak_rss().map_or_else(|| "unknown".to_string(), |b| b.to_string()),
    );
    let e = source.events;
    if e.files > 0 {
        let _ = writeln!(
            err,
            "event_files={} records={} skipped_values={} damaged={} undecodable={}",
            e.files, e.records, e.skipped_values, e.damaged, e.undecodable
        );
    }
}
