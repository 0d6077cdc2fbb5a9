//! One place assembles a run's outputs: every mode (local, follow, wrap, stdin, pod-log, drop-in) builds them
//! here and ends them with one [`Outputs::finish`].
//!
//! [`Outputs`] owns:
//! - the observation-level outputs the read loop feeds: what is printed ([`StdoutSink`]) and the rows of a
//!   Katib report for the DB manager ([`KatibReport`]);
//! - the run's single [`Publisher`] of snapshots, and the one [`SinkStats`] registry every sink counts its
//!   deliveries and failures in (`trialtail_sink_observations_total`, `trialtail_sink_errors_total`);
//! - the sinks that read snapshots off the hot path: the HTTP endpoint ([`crate::server`]: `/metrics` and the
//!   live page), the Pushgateway pusher (periodic and final), the Trial-status task, and the Katib DB report
//!   (incremental and final);
//! - with an endpoint, the series history the live page draws ([`HistorySink`]): fed every observation, it
//!   hands its new points over when the run publishes, just before the snapshot is published.
//!
//! It is a [`LiveSink`]: sources hand it every observation, flush it before they wait, and publish through it.
//! A synchronous driver (the local mode) gets a one-worker runtime of its own for the endpoint and the pusher
//! ([`Outputs::start_background`]); without `--listen` or `--pushgateway` nothing runs beside the read loop.
//!
//! [`Outputs::finish`] ends them in this order, each bounded: (1) the caller has published the final snapshot
//! ([`Phase::Ended`]); the periodic push stops; (2) the Trial status gets its final write (within the grace
//! period); (3) the incremental Katib delivery stops and the rest of the report is sent to the DB manager
//! (within its deadline); (4) the final values are pushed to the Pushgateway; (5) what is printed at the end
//! is written (the table, the report); (6) the endpoint serves until one scrape has returned the final values
//! or `--linger` passed, then shuts down.
//! Katib and the Trial come before Prometheus because a trial's result must not wait for a scraper.
//!
//! Signals while the outputs end: a first SIGINT/SIGTERM of the run lets steps (2) to (5) finish (each is
//! bounded) and ends the linger at once – a run stopped by a signal lingers within the grace period only; the
//! second signal of the run ends everything at once ([`Finished::interrupted`]: the process exits 128+N).
//!
//! Adding a sink touches its own file in [`crate::sink`] and this module (plus its flags in `cli`/`config`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::katib::report::KatibReport;
use crate::parser::{Observation, ObservationSink, Parser};
use crate::server::{self, ServerError, ServerHandle};
use crate::signal::Signals;
use crate::sink::history::{self, History, HistorySink};
use crate::sink::katib_db::{self, KatibDbError, Reporter};
use crate::sink::prometheus::{Exposition, Labels};
use crate::sink::pushgateway::{PushTarget, Pusher};
use crate::sink::stats::SinkStats;
use crate::sink::stdout::{StdoutError, StdoutSink};
use crate::sink::trial_status::{StatusError, TrialStatus};
use crate::snapshot::{PUBLISH_INTERVAL, Phase, Publisher, SnapshotRx, SourceStats};
use crate::source::LiveSink;

/// trialtail's conventional port (`--listen :9478`).
pub const DEFAULT_PORT: u16 = 9478;

/// Time responses in flight get to finish when the server shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What to export and where: the validated `--listen`, `--linger`, `--pushgateway`, `--push-interval` and
/// identity-label flags.
#[derive(Debug, Clone, Default)]
pub struct ExportConfig {
    /// Serve the live page, `/metrics`, `/healthz`, `/readyz` here.
    pub listen: Option<SocketAddr>,
    /// After the source ended, serve until the final values were scraped or this long.
    pub linger: Duration,
    /// Push to this Pushgateway at the end.
    pub pushgateway: Option<PushTarget>,
    /// Also push this often while reading.
    pub push_interval: Option<Duration>,
    /// The identity labels.
    pub labels: Labels,
}

impl ExportConfig {
    /// Whether anything is exported at all (otherwise no runtime: the local mode's fast path).
    pub fn is_enabled(&self) -> bool {
        self.listen.is_some() || self.pushgateway.is_some()
    }
}

/// Where and for which trial the Katib report goes (`-s-db`, `-t`, `-report-deadline`; `--katib-db`,
/// `--report-interval`, `--report-deadline`).
#[derive(Debug, Clone)]
pub struct KatibDbConfig {
    /// The DB manager, `host:port`.
    pub address: String,
    /// The trial the rows belong to.
    pub trial: String,
    /// The time the final report may take, retries included.
    pub deadline: Duration,
    /// Report new rows this often while reading (`None`: only at the end).
    pub interval: Option<Duration>,
}

/// The Katib report being collected, and its delivery.
#[derive(Debug)]
struct KatibOut {
    report: Arc<Mutex<KatibReport>>,
    cfg: KatibDbConfig,
    /// The incremental delivery and the signal that ends it.
    periodic: Option<(JoinHandle<Reporter>, watch::Sender<bool>)>,
    /// The report is made of the observations (the file collector), not handed over at the end.
    observes: bool,
}

/// Why the outputs could not start or end.
#[derive(Debug, thiserror::Error)]
pub enum OutputsError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot start the runtime for the metrics endpoint")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Stdout(#[from] StdoutError),
}

/// How the outputs ended.
#[derive(Debug, Default)]
pub struct Finished {
    /// The Trial status task's patches when it wrote its final state in time.
    pub status_patches: Option<u64>,
    /// The Katib report's outcome, when there was one to send.
    pub katib: Option<Result<(), KatibDbError>>,
    /// Writing what is printed at the end failed.
    pub stdout: Option<StdoutError>,
    /// The second signal of the run (this number) came before the outputs ended: exit 128+N now.
    pub interrupted: Option<i32>,
}

/// Every output of one run. See the module documentation.
#[derive(Debug)]
pub struct Outputs {
    stdout: Option<StdoutSink>,
    katib: Option<KatibOut>,
    history: Option<HistorySink>,
    publisher: Publisher,
    snapshots: SnapshotRx,
    sinks: Arc<SinkStats>,
    labels: Labels,
    server: Option<ServerHandle>,
    pusher: Option<Arc<Pusher>>,
    periodic: Option<JoinHandle<()>>,
    trial_status: Option<JoinHandle<Result<u64, StatusError>>>,
    linger: Duration,
    runtime: Option<Runtime>,
    /// Something reads the snapshots (endpoint, pusher, Trial status): otherwise publishing is skipped.
    publishing: bool,
}

impl Outputs {
    /// Starts what `cfg` asks for on the current tokio runtime (the live modes call this inside theirs).
    pub fn start(cfg: &ExportConfig) -> Result<Self, OutputsError> {
        let (publisher, snapshots) = Publisher::new(PUBLISH_INTERVAL);
        let sinks = Arc::new(SinkStats::default());
        let exposition = Arc::new(Exposition::new(&cfg.labels, sinks.clone()));
        let (history, server) = match cfg.listen {
            Some(addr) => {
                let (sink, shared) = history::channel(cfg.labels.clone(), cfg.linger);
                (Some(sink), Some(server::spawn(addr, snapshots.clone(), exposition.clone(), shared)?))
            }
            None => (None, None),
        };
        let pusher = cfg
            .pushgateway
            .clone()
            .map(|target| Arc::new(Pusher::new(target, &cfg.labels, exposition.clone(), snapshots.clone())));
        let periodic = match (&pusher, cfg.push_interval) {
            (Some(p), Some(every)) if !every.is_zero() => Some(p.clone().spawn_periodic(every)),
            _ => None,
        };
        Ok(Outputs {
            stdout: None,
            katib: None,
            history,
            publisher,
            snapshots,
            sinks,
            labels: cfg.labels.clone(),
            server,
            pusher,
            periodic,
            trial_status: None,
            linger: cfg.linger,
            runtime: None,
            publishing: cfg.is_enabled(),
        })
    }

    /// Starts what `cfg` asks for beside a synchronous read loop: with an endpoint or a Pushgateway, a
    /// one-worker runtime runs them in the background; without, nothing runs and publishing is all there is.
    pub fn start_background(cfg: &ExportConfig) -> Result<Self, OutputsError> {
        if !cfg.is_enabled() {
            return Outputs::start(cfg);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trialtail-export")
            .enable_all()
            .build()
            .map_err(OutputsError::Runtime)?;
        let mut outputs = {
            let _in_runtime = rt.enter();
            Outputs::start(cfg)?
        };
        outputs.runtime = Some(rt);
        Ok(outputs)
    }

    /// Prints through `stdout` (the table, JSON lines or the Katib report).
    pub fn with_stdout(mut self, stdout: StdoutSink) -> Self {
        self.stdout = Some(stdout);
        self
    }

    /// Collects Katib's report rows (for the objective `objective`) and sends them to the DB manager: every
    /// `cfg.interval` from a task on the current runtime (when given), and the rest at the end.
    pub fn with_katib_db(mut self, objective: &str, cfg: KatibDbConfig) -> Self {
        self.sinks.register(katib_db::SINK);
        let report = Arc::new(Mutex::new(KatibReport::new(objective)));
        let periodic = match (cfg.interval, Reporter::new(&cfg.address, &cfg.trial, self.sinks.clone())) {
            (Some(every), Ok(reporter)) => {
                let (stop, stopped) = watch::channel(false);
                let task = katib_db::report_periodically(reporter, report.clone(), every, stopped);
                Some((tokio::spawn(task), stop))
            }
            _ => None,
        };
        self.katib = Some(KatibOut { report, cfg, periodic, observes: true });
        self
    }

    /// Sends a Katib report made elsewhere to the DB manager at the end ([`Outputs::set_katib_report`]; until
    /// then, the `unavailable` row for `objective`): the TensorFlowEvent collector's, whose rows are ordered by
    /// file and tag, not by observation.
    pub fn with_katib_db_report(mut self, objective: &str, cfg: KatibDbConfig) -> Self {
        self.sinks.register(katib_db::SINK);
        let report = Arc::new(Mutex::new(KatibReport::new(objective)));
        self.katib = Some(KatibOut { report, cfg, periodic: None, observes: false });
        self
    }

    /// The report [`Outputs::with_katib_db_report`] sends.
    pub fn set_katib_report(&mut self, report: KatibReport) {
        if let Some(katib) = &self.katib {
            *katib.report.lock().expect("report lock") = report;
        }
    }

    /// Starts the Trial status sink on the current runtime, reading this run's snapshots and counting in its
    /// statistics.
    pub fn start_trial_status(&mut self, status: TrialStatus) {
        let status = status.with_stats(self.sinks.clone());
        self.trial_status = Some(status.spawn(self.snapshots.clone()));
        self.publishing = true;
    }

    /// The snapshots, for sinks started elsewhere.
    pub fn snapshots(&self) -> SnapshotRx {
        self.snapshots.clone()
    }

    /// The sinks' statistics of this run.
    pub fn sinks(&self) -> &Arc<SinkStats> {
        &self.sinks
    }

    /// The identity labels the series carry.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The series history the live page reads, when the endpoint runs (for sources that find parameters).
    pub fn history(&self) -> Option<&Arc<History>> {
        self.history.as_ref().map(HistorySink::history)
    }

    /// The address `/metrics` is served on, when it is.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(ServerHandle::local_addr)
    }

    /// Publishes the final state ([`Phase::Ended`]) of a source that did not publish it itself.
    pub fn publish_end(&mut self, parser: &Parser, source: SourceStats) {
        if let Some(history) = &mut self.history {
            history.publish(Phase::Ended, true);
            show_parameters(history, parser);
        }
        self.publisher.publish(parser, source, Phase::Ended);
    }

    /// Ends every output in the documented order (see the module documentation); the final snapshot must be
    /// published. `grace` bounds the Trial status's final write, and the linger of a run a signal stopped. With
    /// `signals`, a first signal ends the linger and the second ends everything at once
    /// ([`Finished::interrupted`]).
    pub async fn finish(mut self, parser: &Parser, grace: Duration, mut signals: Option<&mut Signals>) -> Finished {
        let mut done = Finished::default();
        if let Some(periodic) = self.periodic.take() {
            periodic.abort();
        }
        if let Some(handle) = self.trial_status.take() {
            let written = match unless_second_signal(&mut signals, tokio::time::timeout(grace, handle)).await {
                Ok(written) => written,
                Err(sig) => return Finished { interrupted: Some(sig), ..done },
            };
            done.status_patches = match written {
                Ok(Ok(Ok(n))) => Some(n),
                Ok(Ok(Err(_))) | Ok(Err(_)) => None,
                Err(_) => {
                    tracing::warn!(?grace, "the final Trial status was not written within the grace period");
                    self.sinks.error(crate::sink::trial_status::SINK, "timeout");
                    None
                }
            };
            if let Some(patches) = done.status_patches {
                tracing::info!(patches, "wrote the final observations to the Trial status");
            }
        }
        if let Some(katib) = self.katib.take() {
            match unless_second_signal(&mut signals, self.report_to_katib(katib)).await {
                Ok(outcome) => done.katib = Some(outcome),
                Err(sig) => return Finished { interrupted: Some(sig), ..done },
            }
        }
        if let Some(pusher) = self.pusher.clone() {
            match unless_second_signal(&mut signals, pusher.push()).await {
                Ok(Ok(())) => tracing::info!("pushed the final values to the pushgateway"),
                Ok(Err(e)) => tracing::warn!(error = %crate::sink::error_chain(&e), "pushing the final values failed"),
                Err(sig) => return Finished { interrupted: Some(sig), ..done },
            }
        }
        if let Some(stdout) = self.stdout.take() {
            done.stdout = stdout.finish(parser).err();
        }
        if let Some(server) = self.server.take() {
            // A run a signal stopped lingers within the grace period only.
            let stopping = signals.as_ref().is_some_and(|s| s.received() > 0);
            let linger = if stopping { self.linger.min(grace) } else { self.linger };
            if !server.final_scraped() && !linger.is_zero() {
                tracing::info!(?linger, "waiting for a scrape of the final values (--linger)");
                let lingered = server.linger(linger);
                let signal = async {
                    match signals.as_deref_mut() {
                        Some(s) => (s.recv().await, s.received()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    scraped = lingered => if !scraped {
                        tracing::warn!(?linger, "the final values were not scraped before --linger ran out");
                    },
                    (sig, received) = signal => {
                        if received >= 2 {
                            return Finished { interrupted: Some(sig), ..done };
                        }
                        tracing::info!(signal = sig, "stopping: the linger ends");
                    }
                }
            }
            server.shutdown(SHUTDOWN_GRACE).await;
        }
        done
    }

    /// The Katib report's final delivery: the incremental one stops, then the rest goes within the deadline.
    async fn report_to_katib(&self, katib: KatibOut) -> Result<(), KatibDbError> {
        let end = tokio::time::Instant::now() + katib.cfg.deadline;
        let reporter = match katib.periodic {
            Some((task, stop)) => {
                let _ = stop.send(true);
                task.await.ok()
            }
            None => None,
        };
        let mut reporter = match reporter {
            Some(r) => r,
            None => Reporter::new(&katib.cfg.address, &katib.cfg.trial, self.sinks.clone())?,
        };
        reporter.finish(&katib.report, end).await
    }

    /// [`Outputs::finish`] for a synchronous driver: runs it on the outputs' own runtime (or a small one when
    /// there is work and none runs), then stops that runtime.
    pub fn finish_blocking(mut self, parser: &Parser, grace: Duration) -> Finished {
        let busy = self.katib.is_some() || self.server.is_some() || self.pusher.is_some();
        let rt = match self.runtime.take() {
            Some(rt) => rt,
            None if !busy => {
                let stdout = self.stdout.take().and_then(|s| s.finish(parser).err());
                return Finished { stdout, ..Finished::default() };
            }
            None => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a runtime to end the outputs");
                    let stdout = self.stdout.take().and_then(|s| s.finish(parser).err());
                    return Finished { stdout, ..Finished::default() };
                }
            },
        };
        // The local mode kept the default action of signals while it read; now a signal ends the linger.
        let done = rt.block_on(async {
            let mut signals = Signals::new().ok();
            self.finish(parser, grace, signals.as_mut()).await
        });
        rt.shutdown_timeout(SHUTDOWN_GRACE);
        done
    }
}

/// Hands the values the recognition set apart as parameters to the live page (they change rarely: the history
/// tells pages only when they did). Called when the run publishes now, never per line.
fn show_parameters(history: &HistorySink, parser: &Parser) {
    let parameters = parser.params().into_iter().map(|p| history::Parameter { name: p.name, value: p.raw });
    history.history().set_parameters(parameters.collect());
}

/// Runs `step` to its end unless the run's second signal comes first (then `Err` with its number); a first
/// signal lets it run on.
async fn unless_second_signal<T>(
    signals: &mut Option<&mut Signals>,
    step: impl std::future::Future<Output = T>,
) -> Result<T, i32> {
    let Some(signals) = signals.as_deref_mut() else { return Ok(step.await) };
    let mut step = std::pin::pin!(step);
    loop {
        tokio::select! {
            out = &mut step => return Ok(out),
            sig = signals.recv() => if signals.received() >= 2 {
                return Err(sig);
            } else {
                tracing::info!(signal = sig, "stopping: the outputs end within their bounds; a second signal exits at once");
            },
        }
    }
}

impl ObservationSink for Outputs {
    fn observe(&mut self, obs: &Observation<'_>) {
        if let Some(stdout) = &mut self.stdout {
            stdout.observe(obs);
        }
        if let Some(katib) = &mut self.katib
            && katib.observes
        {
            katib.report.lock().expect("report lock").observe(obs);
        }
        if let Some(history) = &mut self.history {
            history.observe(obs);
        }
    }

    fn restarted(&mut self) {
        if let Some(stdout) = &mut self.stdout {
            stdout.restarted();
        }
        if let Some(katib) = &mut self.katib
            && katib.observes
        {
            katib.report.lock().expect("report lock").restarted();
        }
    }
}

impl LiveSink for Outputs {
    fn flush(&mut self, parser: &Parser) {
        if let Some(stdout) = &mut self.stdout {
            stdout.flush(parser);
        }
    }

    fn publish(&mut self, parser: &Parser, source: SourceStats, phase: Phase, now: bool) {
        // The points first: a page woken by the snapshot finds them (it never reads past the snapshot).
        if let Some(history) = &mut self.history {
            history.publish(phase, now);
            if now {
                show_parameters(history, parser);
            }
        }
        if self.publishing {
            LiveSink::publish(&mut self.publisher, parser, source, phase, now);
        }
    }
}
