//! `trialtail run`: wires a validated configuration to its source and sinks.
//!
//! The local mode (a file read to its end) is a plain synchronous loop: it is the fast path and stays free of
//! any runtime. The live modes (`--follow`, standard input, a wrapped command) run on a current-thread tokio
//! runtime with SIGINT/SIGTERM handling. Either way the shared state that sinks read ([`Publisher`] /
//! [`SnapshotRx`]) is created in one place, [`run`], the Prometheus endpoint and the Pushgateway
//! ([`crate::export`]) read it, and the output (table, JSON lines or the Katib report) is written by one
//! [`Output`] value.

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use crate::cli::OutputKind;
use crate::collect::{Collector, Observation, ObservationSink};
use crate::config::{RunConfig, Source};
use crate::export::{Background, ExportConfig, ExportError, Exporter};
use crate::k8s::KubeError;
use crate::katib::report::KatibReport;
use crate::modes::sidecar::{self, SidecarConfig, SidecarError};
use crate::signal::Signals;
use crate::sink::stdout::{JsonLines, write_report_json, write_table};
use crate::snapshot::{PUBLISH_INTERVAL, Phase, Publisher, SnapshotRx, SourceStats};
use crate::source::child::{self, spawn_exit_code};
use crate::source::file::{self as file_source, SourceError};
use crate::source::tail::Tailer;
use crate::source::{self, End, Feed, LiveSink, StopOptions};
use crate::term::live::{LiveTable, write_table_sparklines};
use crate::term::progress;
use crate::term::sparkline::Sparklines;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("writing the output failed")]
    Output(#[source] io::Error),
    #[error("--output-file {path}: cannot create it")]
    OutputFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
}

impl RunError {
    /// The process exit code: 2 for what the user can fix in the command line (a missing file), 127/126 for a
    /// command that cannot be run, 128+N after a second signal N, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Source(SourceError::Open { .. } | SourceError::Directory { .. })
            | RunError::OutputFile { .. }
            | RunError::Export(ExportError::Server(_)) => 2,
            RunError::Export(_) => 1,
            RunError::Sidecar(SidecarError::NoPod | SidecarError::Kube(KubeError::NoNamespace)) => 2,
            RunError::Sidecar(_) => 1,
            RunError::Source(SourceError::Spawn { source, .. }) => spawn_exit_code(source),
            RunError::Source(SourceError::Interrupted { signal }) => 128u8.wrapping_add(*signal as u8),
            RunError::Source(SourceError::Read { .. } | SourceError::Runtime(_)) | RunError::Output(_) => 1,
        }
    }
}

fn output_error(e: io::Error) -> Result<(), RunError> {
    // A reader that went away (`| head`) is not an error of ours.
    if e.kind() == ErrorKind::BrokenPipe { Ok(()) } else { Err(RunError::Output(e)) }
}

type Dest = BufWriter<Box<dyn Write>>;

/// What `trialtail run` prints, and where.
enum Output {
    /// One JSON object per observation, as found.
    Json(JsonLines<Dest>),
    /// The Katib report, at the end.
    Report(KatibReport, OutputKind, Dest),
    /// The summary table, at the end; with a sparkline column on a terminal, redrawn while following (`--live`).
    Table { out: Dest, sparks: Sparklines, terminal: bool, live: Option<LiveTable> },
}

impl ObservationSink for Output {
    fn observe(&mut self, obs: &Observation<'_>) {
        match self {
            Output::Json(sink) => sink.observe(obs),
            Output::Report(report, ..) => report.observe(obs),
            Output::Table { sparks, .. } => sparks.observe(obs),
        }
    }
}

impl LiveSink for Output {
    fn flush(&mut self, collector: &Collector) {
        match self {
            Output::Json(sink) => sink.flush(),
            Output::Table { out, sparks, live, .. } => {
                // A frame at most every few hundred milliseconds; a failed write stops the redraws, not the run.
                if let Some(table) = live
                    && table.maybe_draw(out, collector.aggregate().metrics(), sparks).is_err()
                {
                    *live = None;
                }
            }
            _ => {}
        }
    }
}

impl Output {
    fn new(cfg: &RunConfig, dest: Dest) -> Self {
        match (&cfg.objective, cfg.output) {
            (Some(objective), kind) => Output::Report(KatibReport::new(objective.clone()), kind, dest),
            (None, OutputKind::Json) => Output::Json(JsonLines::new(dest)),
            (None, OutputKind::Table) => {
                // Sparklines and redraws only where a person looks: stdout on a terminal, no --output-file.
                let terminal = cfg.output_file.is_none()
                    && !matches!(cfg.source, Source::Command(_))
                    && io::stdout().is_terminal();
                let live = (cfg.live && terminal && matches!(cfg.source, Source::Follow { .. })).then(LiveTable::new);
                Output::Table { out: dest, sparks: Sparklines::new(), terminal, live }
            }
        }
    }

    /// Writes what is written at the end.
    fn finish(self, collector: &Collector) -> Result<(), RunError> {
        let written = match self {
            Output::Json(sink) => sink.finish().map(drop),
            Output::Report(report, OutputKind::Json, mut out) => write_report_json(&mut out, &report.rows()),
            Output::Report(_, OutputKind::Table, mut out) => write_table(&mut out, collector.aggregate()),
            Output::Table { mut out, sparks, live: Some(mut live), .. } => {
                live.draw(&mut out, collector.aggregate().metrics(), &sparks)
            }
            Output::Table { mut out, sparks, terminal: true, .. } => {
                write_table_sparklines(&mut out, collector.aggregate().metrics(), &sparks)
            }
            Output::Table { mut out, .. } => write_table(&mut out, collector.aggregate()),
        };
        written.or_else(output_error)
    }
}

/// Where the output goes: `--output-file`, else stdout – or stderr when wrapping a command (whose stdout it is).
fn destination(cfg: &RunConfig) -> Result<Dest, RunError> {
    let w: Box<dyn Write> = match (&cfg.output_file, &cfg.source) {
        (Some(path), _) => {
            Box::new(File::create(path).map_err(|source| RunError::OutputFile { path: path.clone(), source })?)
        }
        (None, Source::Command(_)) => Box::new(io::stderr()),
        (None, _) => Box::new(io::stdout()),
    };
    Ok(BufWriter::new(w))
}

/// Runs `trialtail run` to completion and returns the exit code (the wrapped command's in wrap mode).
pub fn run(cfg: RunConfig) -> Result<u8, RunError> {
    let started = Instant::now();
    // The local mode opens its file before anything is printed: a missing file prints one error, no table.
    let local = match &cfg.source {
        Source::File(path) => Some(file_source::open(path)?),
        _ => None,
    };
    let mut out = Output::new(&cfg, destination(&cfg)?);
    let stop = StopOptions { until_idle: cfg.until_idle, grace: cfg.shutdown_grace };
    let mut collector = Collector::new(cfg.rules, cfg.max_line_bytes, cfg.max_metrics);
    // The shared state: the one place where snapshots are published from, and where sinks subscribe.
    let (mut publisher, snapshots): (Publisher, SnapshotRx) = Publisher::new(PUBLISH_INTERVAL);

    if cfg.live && !matches!(cfg.source, Source::Follow { .. }) {
        tracing::warn!("--live redraws the table while following a log (--follow); it has no effect here");
    }

    let result = match local {
        Some(reader) => {
            // The bar (a terminal on stderr only) erases itself at end of file, before the table is printed.
            let log = match &cfg.source {
                Source::File(p) => p.clone(),
                _ => PathBuf::new(),
            };
            let mut reader = progress::wrap(reader, &log, cfg.progress);
            // `--listen`/`--pushgateway`: scrapes are served from another thread; without them, nothing changes.
            let mut export = Background::start(&cfg.export)?;
            let r = read(&mut reader, &mut collector, &mut out, export.as_mut());
            let stats = SourceStats { opens: 1, read_errors: u64::from(r.is_err()), ..SourceStats::default() };
            publisher.publish(&collector, stats, Phase::Ended);
            if let Some(export) = export {
                export.finish(&collector, stats);
            }
            r.map(|_| End::Eof)
                .map_err(|source| SourceError::Read { path: log, bytes: collector.line_stats().bytes, source }.into())
        }
        None => {
            let mut live = Feed {
                collector: &mut collector,
                sink: &mut out,
                publisher: &mut publisher,
                stats: SourceStats::default(),
                phase: Phase::Starting,
            };
            let sidecar = match &cfg.source {
                Source::PodLog { container, trial_status } => Some(SidecarConfig {
                    container: container.clone(),
                    trial_status: *trial_status,
                    status_interval: cfg.status_interval,
                    grace: cfg.shutdown_grace,
                }),
                _ => None,
            };
            run_live(&cfg.source, &cfg.export, cfg.max_line_bytes, stop, sidecar, snapshots.clone(), &mut live)
        }
    };
    // Whatever happened to the source, what was observed is written (a second signal aside: that exits now).
    let result = match result {
        Err(RunError::Source(e @ SourceError::Interrupted { .. })) => return Err(e.into()),
        r => r,
    };
    out.finish(&collector)?;
    if cfg.stats {
        print_stats(&collector, snapshots.borrow().source, started);
    }
    let c = collector.counters();
    if c.dropped > 0 {
        tracing::warn!(dropped = c.dropped, "observations dropped by the metric limit (--max-metrics)");
    }
    match result? {
        End::Exited(code) => Ok(code),
        End::Eof | End::Idle | End::Signalled(_) => Ok(0),
    }
}

/// The live modes, on a current-thread runtime; the Prometheus endpoint and the Pushgateway run beside them
/// and end (lingering for a last scrape, pushing the final values) after the source has ended.
fn run_live(
    source: &Source,
    export: &ExportConfig,
    max_line_bytes: usize,
    stop: StopOptions,
    sidecar: Option<SidecarConfig>,
    snapshots: SnapshotRx,
    live: &mut Feed<'_, Output>,
) -> Result<End, RunError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SourceError::Runtime)?;
    rt.block_on(async {
        let mut signals = Signals::new().map_err(SourceError::Runtime)?;
        // The sidecar starts its own exporter once it knows the Trial's labels.
        if let Some(sidecar) = &sidecar {
            return Ok(sidecar::run(sidecar, export, snapshots, live, &mut signals).await?);
        }
        let exporter = if export.is_enabled() { Some(Exporter::start(export, snapshots)?) } else { None };
        let end = match source {
            Source::Follow { path, from_end } => {
                source::file::follow(Tailer::new(path, *from_end), live, &mut signals, stop).await
            }
            Source::Stdin => source::stdin::follow(live, &mut signals).await,
            Source::Command(command) => child::wrap(command, live, &mut signals, max_line_bytes, stop.grace).await,
            Source::File(_) | Source::PodLog { .. } => Ok(End::Eof),
        };
        if let Some(exporter) = exporter {
            // The final snapshot is published by the source's end; a second signal skips the linger.
            if !matches!(end, Err(SourceError::Interrupted { .. })) {
                exporter.finish().await;
            }
        }
        Ok(end?)
    })
}

/// Reads to the end like [`source::read_to_end`], publishing snapshots for the exporter when there is one.
///
/// A short read (the pipe or file had no more for now) publishes at once, since the next read may wait; a full
/// one publishes at most every [`crate::snapshot::PUBLISH_INTERVAL`], so a fast file is not slowed by copying.
///
/// # Performance
/// Without an exporter this is [`source::read_to_end`] itself.
fn read(
    reader: &mut impl Read,
    collector: &mut Collector,
    sink: &mut impl ObservationSink,
    export: Option<&mut Background>,
) -> io::Result<u64> {
    let Some(export) = export else { return source::read_to_end(reader, collector, sink) };
    let stats = SourceStats { opens: 1, ..SourceStats::default() };
    source::read_to_end_with(reader, collector, sink, |collector, short| {
        if short {
            export.publisher().publish(collector, stats, Phase::Reading);
        } else {
            export.publisher().maybe_publish(collector, stats, Phase::Reading);
        }
    })
}

/// The process's peak resident memory in bytes (Linux), for `--stats`.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn print_stats(collector: &Collector, source: SourceStats, started: Instant) {
    let l = collector.line_stats();
    let c = collector.counters();
    let secs = started.elapsed().as_secs_f64();
    let mb_s = l.bytes as f64 / 1e6 / secs.max(1e-9);
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "bytes={} lines={} too_long_lines={} observations={} parse_errors={} bad_json_lines={} dropped={} \
         metrics={} opens={} rotations={} truncations={} read_errors={} seconds={secs:.3} mb_per_s={mb_s:.1} \
         peak_rss_bytes={}",
        l.bytes,
        l.lines,
        l.too_long,
        c.observations,
        c.parse_errors,
        c.bad_json,
        c.dropped,
        collector.aggregate().metrics().len(),
        source.opens,
        source.rotations,
        source.truncations,
        source.read_errors,
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
