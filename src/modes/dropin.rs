//! The Katib drop-in mode: trialtail run as Katib's file metrics collector (`metrics-logger-and-collector`), or
//! as its TensorFlowEvent collector.
//!
//! For the TensorFlowEvent collector (`-path` a directory, [`CollectorKind::TensorFlowEvent`]) the source is the
//! event files below `-path` ([`EventDir`], followed as they are written, nothing echoed), read with Katib's
//! semantics ([`KatibEvents`]): matching values feed `/metrics` and the stop rules as they are written, and the
//! report – built at the end, in Katib's order of files and tags – is what Katib's collector would send. The
//! rest (waiting, early stopping, reporting, exit codes) is the same as below; a directory that never appears is
//! not an error there (Katib's walk finds nothing and reports `unavailable`).
//!
//! Started with Katib's arguments ([`crate::katib::args`]), it plays Katib's two roles at once. As the *logger* it
//! follows `-path` from its start (the file may not exist yet) and echoes every byte to stdout as it arrives. As
//! the *collector* it parses the same bytes with Katib's semantics into Katib's report, serves `/metrics` while
//! training runs, and waits for the training ([`crate::wait::procfs`], checked every `-p`; the file is polled with
//! a back-off from 10 ms to 250 ms, never in a busy loop). Then:
//! - training completed: read what is left, report ([`Outputs`] sends it through [`crate::sink::katib_db`]), exit 0
//!   once Katib accepted it;
//! - training failed (no `completed` marker) or `-timeout` passed: report nothing, exit 255, as Katib does;
//! - every `-stop-rule` fired ([`crate::katib::early_stop`]): mark `early-stopped`, SIGTERM the training shell's child,
//!   report, wait (bounded) for the shell to exit, call `EarlyStopping/SetTrialStatus`.
//!
//! SIGTERM/SIGINT keep their default action (the pod is going away; Katib's collector dies the same way).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::aggregate::DEFAULT_MAX_METRICS;
use crate::backoff::Backoff;
use crate::katib::args::{CollectorKind, KatibArgs};
use crate::katib::early_stop::{EarlyStop, StopRule, StopRuleError, parse_rule};
use crate::katib::report::KatibReport;
use crate::katib::tfevent::{KatibEvents, katib_time};
use crate::lines::KATIB_MAX_LINE_BYTES;
use crate::outputs::{ExportConfig, KatibDbConfig, Outputs};
use crate::parser::Parser;
use crate::rules::{RuleError, RuleSpec, Rules, Semantics};
use crate::sink::katib_db::{self, KatibDbError};
use crate::sink::prometheus::Labels;
use crate::snapshot::Phase;
use crate::source::follow::Followed;
use crate::source::tail::{Step, Tailer};
use crate::source::tfevents::dir::{EventDir, Naming, Order};
use crate::source::tfevents::record::DEFAULT_MAX_RECORD;
use crate::source::{LiveSink, SourceError};
use crate::wait::procfs::{self, EARLY_STOPPED, Status, WaitError, Waiter};

/// Exit code: the report was not accepted before `-report-deadline`.
pub const EXIT_REPORT_FAILED: u8 = 3;
/// Exit code: `SetTrialStatus` was not accepted after an early stop.
pub const EXIT_SET_TRIAL_STATUS_FAILED: u8 = 4;
/// Exit code: the training failed, `-timeout` passed, or another fatal error (Katib's `klog.Fatal`).
pub const EXIT_FATAL: u8 = 255;

/// Bytes read per step before the processes and rules are looked at again.
const STEP_BUDGET: u64 = 4 << 20;
/// The file is polled 10 ms after data, backing off to 250 ms while it is quiet.
const IDLE: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(250));

/// Why the drop-in mode did not end with an accepted report.
#[derive(Debug, thiserror::Error)]
pub enum DropInError {
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error(transparent)]
    StopRule(#[from] StopRuleError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error("cannot start the runtime")]
    Runtime(#[source] io::Error),
    #[error("following the metrics failed")]
    Source(#[from] SourceError),
    #[error("training failed: {marker} {found}; reporting nothing (as Katib does)")]
    TrainingFailed { marker: PathBuf, found: String },
    #[error(
        "the metrics file {0} never appeared: the training wrote no metrics there; reporting nothing (Katib's \
         collector fails the same way, opening the file to report it)"
    )]
    NoMetricsFile(PathBuf),
    #[error("training still running after -timeout {0:?}; reporting nothing (as Katib does)")]
    Timeout(Duration),
    #[error("cannot write the early-stopped marker {path}")]
    Marker {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the report was not accepted")]
    Report(#[source] KatibDbError),
    #[error("SetTrialStatus after the early stop was not accepted")]
    SetTrialStatus(#[source] KatibDbError),
}

impl DropInError {
    /// The process exit code (see the README's table).
    pub fn exit_code(&self) -> u8 {
        match self {
            DropInError::Rules(_) | DropInError::StopRule(_) => 2,
            DropInError::Report(_) => EXIT_REPORT_FAILED,
            DropInError::SetTrialStatus(_) => EXIT_SET_TRIAL_STATUS_FAILED,
            _ => EXIT_FATAL,
        }
    }
}

/// How the wait ended.
enum Ending {
    Completed,
    /// This collector's stop rules fired.
    EarlyStopped,
    /// The training is gone and its marker says an earlier instance of the collector stopped it early.
    StoppedBefore,
}

/// Runs the drop-in mode to its end. `Ok` means the report (and after an early stop, SetTrialStatus) was accepted.
pub fn run(a: KatibArgs) -> Result<(), DropInError> {
    for w in &a.warnings {
        tracing::warn!("{w}");
    }
    let specs: Vec<RuleSpec> = match a.kind {
        CollectorKind::File => a.filters.iter().cloned().map(RuleSpec::Filter).collect(),
        CollectorKind::TensorFlowEvent => Vec::new(),
    };
    let rules = Rules::new(&specs, &a.metrics, Semantics::Katib, a.format)?;
    let stop_rules = a.stop_rules.iter().map(|r| parse_rule(r)).collect::<Result<Vec<_>, _>>()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DropInError::Runtime)?;
    match a.kind {
        CollectorKind::File => {
            let tailer = Tailer::new(&a.path, false, KATIB_MAX_LINE_BYTES).with_echo(io::stdout());
            rt.block_on(run_async(a, rules, stop_rules, Text(tailer)))
        }
        CollectorKind::TensorFlowEvent => {
            let events = KatibEvents::new(a.metrics.clone(), jiff::tz::TimeZone::system());
            let dir = EventDir::new(&a.path, Order::Katib, Naming::Never, events, DEFAULT_MAX_RECORD);
            rt.block_on(run_async(a, rules, stop_rules, dir))
        }
    }
}

/// What the drop-in reads: Katib's metrics file, or its event files.
trait Collected: Followed {
    /// The source was found (the file opened, event files found): ready.
    fn found(&self) -> bool;
    /// At the end, before the report: the error Katib's collector would end with instead.
    fn check_end(&self, a: &KatibArgs) -> Result<(), DropInError>;
    /// The report, when the source builds it; `None` when the observations are the report.
    fn report(&mut self) -> Option<KatibReport>;
    /// Reads what is there now, to its end, before the report.
    fn settle(
        &mut self,
        parser: &mut Parser,
        sink: &mut impl crate::parser::ObservationSink,
    ) -> Result<(), DropInError> {
        while let Step::More(_) = self.step(parser, sink, STEP_BUDGET)? {}
        self.finish(parser, sink);
        Ok(())
    }
}

/// The file collector's metrics file, followed and echoed.
struct Text(Tailer);

impl Followed for Text {
    fn step<S: crate::parser::ObservationSink>(
        &mut self,
        parser: &mut Parser,
        sink: &mut S,
        budget: u64,
    ) -> Result<Step, SourceError> {
        Followed::step(&mut self.0, parser, sink, budget)
    }
    fn finish<S: crate::parser::ObservationSink>(&mut self, parser: &mut Parser, sink: &mut S) {
        self.0.finish(parser, sink);
    }
    fn stats(&self) -> crate::snapshot::SourceStats {
        self.0.stats()
    }
    fn watch(&self, wake: std::sync::Arc<tokio::sync::Notify>) -> Option<notify::RecommendedWatcher> {
        Followed::watch(&self.0, wake)
    }
}

impl Collected for Text {
    fn found(&self) -> bool {
        self.0.stats().opens > 0
    }

    fn check_end(&self, a: &KatibArgs) -> Result<(), DropInError> {
        // Katib reads `-path` to report it (`CollectObservationLog`: `os.Open`); without a file it exits 255.
        if self.0.stats().opens == 0 && !a.path.exists() {
            return Err(DropInError::NoMetricsFile(a.path.clone()));
        }
        Ok(())
    }

    fn report(&mut self) -> Option<KatibReport> {
        None
    }
}

impl Collected for EventDir<KatibEvents> {
    fn found(&self) -> bool {
        self.files().next().is_some()
    }

    fn check_end(&self, _: &KatibArgs) -> Result<(), DropInError> {
        Ok(())
    }

    fn settle(
        &mut self,
        parser: &mut Parser,
        sink: &mut impl crate::parser::ObservationSink,
    ) -> Result<(), DropInError> {
        // Katib walks `-path` once, at the end: whatever is there now is read.
        self.rescan();
        while let Step::More(_) = self.step(parser, sink, STEP_BUDGET)? {}
        self.finish(parser, sink);
        Ok(())
    }

    fn report(&mut self) -> Option<KatibReport> {
        // The files as Katib's walk finds them at the end (a file deleted meanwhile is not in its report).
        let known: Vec<_> = self.files().cloned().collect();
        let order: Vec<_> = crate::source::tfevents::dir::walk(self.root(), Order::Katib)
            .into_iter()
            .filter_map(|(path, _)| known.iter().find(|f| f.path == path).cloned())
            .collect();
        let mut now = String::new();
        let tz = jiff::tz::TimeZone::system();
        katib_time(jiff::Timestamp::now().as_second() as f64, &tz, &mut now);
        for f in &order {
            tracing::info!("{} will be parsed.", f.path.display());
        }
        Some(self.handler().report(&order, &now))
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn run_async<C: Collected>(
    a: KatibArgs,
    rules: Rules,
    stop_rules: Vec<StopRule>,
    mut source: C,
) -> Result<(), DropInError> {
    let objective = a.metrics[0].clone();
    // The completion markers are in the metrics file's directory, or in the event files' directory itself
    // (`getMarkCompletedCommand`, `pkg/webhook/v1beta1/pod/utils.go`).
    let dir = match a.kind {
        CollectorKind::File => a.path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        CollectorKind::TensorFlowEvent => a.path.clone(),
    };
    let mut waiter = match a.main_pid {
        Some(pid) => Waiter::new(&a.proc_root, &dir, pid, Vec::new()),
        None => {
            let scan = procfs::scan(&a.proc_root, &dir, std::process::id())?;
            let others = if a.wait_all { scan.others } else { Vec::new() };
            Waiter::new(&a.proc_root, &dir, scan.main, others)
        }
    };
    tracing::info!(main_pid = waiter.main(), path = %a.path.display(), "waiting for the training");

    let export = ExportConfig {
        listen: a.listen,
        labels: Labels {
            trial: Some(a.trial.clone()),
            namespace: env("POD_NAMESPACE"),
            pod: env("POD_NAME"),
            experiment: None,
        },
        ..ExportConfig::default()
    };
    let katib = KatibDbConfig {
        address: a.db_manager.clone(),
        trial: a.trial.clone(),
        deadline: a.report_deadline,
        interval: None,
    };
    // A busy port must not fail the trial: /metrics is a bonus in this mode.
    let outputs = Outputs::start(&export).or_else(|e| {
        tracing::warn!(error = %e, "cannot serve /metrics; collecting without it");
        Outputs::start(&ExportConfig { listen: None, ..export.clone() })
    });
    let outputs = outputs.map_err(|e| DropInError::Runtime(io::Error::other(e.to_string())))?;
    let outputs = match a.kind {
        CollectorKind::File => outputs.with_katib_db(&objective, katib),
        CollectorKind::TensorFlowEvent => outputs.with_katib_db_report(&objective, katib),
    };
    let mut sink = (outputs, EarlyStop::new(stop_rules, objective, a.objective_type));

    let mut parser = Parser::new(rules, DEFAULT_MAX_METRICS);
    let started = Instant::now();
    let mut next_check = Instant::now();
    let mut idle = IDLE;
    let ending = loop {
        let step = source.step(&mut parser, &mut sink, STEP_BUDGET)?;
        let phase = if source.found() { Phase::Reading } else { Phase::Starting };
        sink.publish(&parser, source.stats(), phase, false);
        if sink.1.fired() {
            break Ending::EarlyStopped;
        }
        if let Step::More(_) = step {
            tokio::task::yield_now().await;
            continue;
        }
        if step.bytes() > 0 {
            idle.reset();
        }
        source.tick();
        let now = Instant::now();
        if now >= next_check {
            match waiter.poll() {
                Status::Running => {}
                Status::Completed => break Ending::Completed,
                Status::EarlyStopped => {
                    tracing::warn!(
                        marker = %waiter.marker().display(),
                        "the training is gone and its marker says early-stopped: an earlier collector stopped it; \
                         reporting the metrics file and setting the trial early-stopped"
                    );
                    break Ending::StoppedBefore;
                }
                Status::Failed { marker } => {
                    let found = match marker {
                        None => "is missing".to_string(),
                        Some(m) => format!("holds {:?}, not \"completed\"", m.trim()),
                    };
                    let e = DropInError::TrainingFailed { marker: waiter.marker(), found };
                    tracing::error!("{e}");
                    return Err(e);
                }
            }
            if let Some(t) = a.timeout
                && started.elapsed() >= t
            {
                let e = DropInError::Timeout(t);
                tracing::error!("{e}");
                return Err(e);
            }
            next_check = now + a.poll;
        }
        sleep(idle.pause().min(next_check.saturating_duration_since(now))).await;
    };

    if let Ending::EarlyStopped = ending {
        stop_training(&a, &waiter)?;
    }
    if let Err(e) = source.check_end(&a) {
        tracing::error!("{e}");
        return Err(e);
    }
    // What the training wrote before it ended is read before the report.
    source.settle(&mut parser, &mut sink)?;
    let (mut outputs, _) = sink;
    if let Some(report) = source.report() {
        tracing::info!("In {} {} metrics will be reported.", a.trial, report.rows().len());
        outputs.set_katib_report(report);
    }
    outputs.publish_end(&parser, source.stats());
    let sinks = outputs.sinks().clone();
    let finished = outputs.finish(&parser, a.report_deadline, None).await;
    match (finished.katib, &ending) {
        (Some(Err(e)), _) => Err(DropInError::Report(e)),
        (_, Ending::Completed) => Ok(()),
        (_, Ending::EarlyStopped | Ending::StoppedBefore) => {
            wait_for_exit(&a.proc_root, waiter.main(), a.early_stop_wait).await;
            match &a.early_stop {
                Some(addr) => katib_db::set_trial_status(addr, &a.trial, a.report_deadline, &sinks)
                    .await
                    .map_err(DropInError::SetTrialStatus),
                None => {
                    tracing::warn!("no -s-earlystop: the trial's early stop is not reported to Katib");
                    Ok(())
                }
            }
        }
    }
}

/// Katib's early stop, first steps: the `early-stopped` marker, then SIGTERM to the training shell's child.
fn stop_training(a: &KatibArgs, waiter: &Waiter) -> Result<(), DropInError> {
    let marker = waiter.marker();
    tracing::info!(marker = %marker.display(), "all early-stopping rules fired: stopping the training");
    std::fs::write(&marker, EARLY_STOPPED).map_err(|source| DropInError::Marker { path: marker.clone(), source })?;
    let children = procfs::children(&a.proc_root, waiter.main());
    if children.len() != 1 {
        tracing::warn!(main_pid = waiter.main(), ?children, "expected one child of the training shell");
    }
    for child in children {
        let Some(pid) = i32::try_from(child).ok().and_then(rustix::process::Pid::from_raw) else { continue };
        match rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            Ok(()) => {}
            // Katib's collector runs as root; one that runs as another user cannot signal a root training.
            Err(rustix::io::Errno::PERM) => tracing::error!(
                "cannot stop the training process {child}: it runs as another user than trialtail (uid {}); \
                 the trial is reported early-stopped but trains to its end – run the drop-in image, which runs as \
                 root like Katib's own collector (manifests/katib/)",
                rustix::process::getuid().as_raw()
            ),
            Err(e) => tracing::error!(pid = child, error = %e, "cannot stop the training process"),
        }
    }
    Ok(())
}

/// Waits until `<root>/<pid>` is gone, at most `limit`.
async fn wait_for_exit(root: &Path, pid: u32, limit: Duration) {
    let end = Instant::now() + limit;
    while root.join(pid.to_string()).exists() {
        if Instant::now() >= end {
            tracing::warn!(pid, ?limit, "the training did not exit after the early stop");
            return;
        }
        sleep(Duration::from_millis(100)).await;
    }
}
