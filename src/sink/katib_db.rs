//! The Katib sink: the rows of a Katib report to Katib's DB manager, and the early-stopping call, over
//! plaintext gRPC (`pkg/apis/manager/v1beta1/api.proto`: `DBManager.ReportObservationLog`,
//! `DBManager.GetObservationLog`, `EarlyStopping.SetTrialStatus`).
//!
//! [`Reporter`] sends the rows of a [`KatibReport`] with `ReportObservationLog`, incrementally (what is new since
//! the last call, while training runs) or finally (the rest, and Katib's `unavailable` row for a report without
//! its objective), in chunks of at most [`CHUNK_ROWS`] rows and [`CHUNK_BYTES`] bytes (the DB manager inserts one
//! multi-row statement per call: `RegisterObservationLog`, `pkg/db/v1beta1/postgres/postgres.go`; SQL caps a
//! statement at 65 535 placeholders, 4 per row). While the objective has not been seen nothing is sent: Katib's
//! collector would drop every row of such a report (`newObservationLog`,
//! `pkg/metricscollector/v1beta1/file-metricscollector/file-metricscollector.go`).
//!
//! **No row is reported twice.** The DB appends and never de-duplicates (no unique key), so a call is only
//! repeated when it certainly did not arrive: the connection could not be made. Any other failure (a timeout, a
//! reset, an error status) leaves the call's outcome unknown, and the DB's row count for the trial
//! (`GetObservationLog`) decides before anything is sent again: the chunk's rows are there (the count is the
//! rows known plus the chunk's), or not (the rows known), or someone else writes this trial's rows and
//! reporting stops, said once. The same count, taken before the first call, finds the rows an earlier instance of this sidecar
//! reported: when they are the first rows of this report (same names and values), they are not sent again.
//! Every attempt has its own timeout ([`ATTEMPT_TIMEOUT`]) inside the caller's deadline; what could not be
//! delivered by the final deadline is counted and said. Delivered rows are forgotten by the report
//! ([`KatibReport::forget_before`]), so a sidecar that reports every `--report-interval` holds only the rows not
//! in the DB yet, however long the trial runs.
//!
//! [`set_trial_status`] sends `EarlyStopping/SetTrialStatus` with the same retry policy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;
use crate::katib::api::db_manager_client::DbManagerClient;
use crate::katib::api::early_stopping_client::EarlyStoppingClient;
use crate::katib::api::{
    GetObservationLogRequest, Metric, MetricLog, ObservationLog, ReportObservationLogRequest, SetTrialStatusRequest,
};
use crate::katib::report::{KatibReport, Row};
use crate::sink::stats::SinkStats;
use crate::value::ZERO_TIME;

/// The most rows sent in one call.
pub const CHUNK_ROWS: usize = 4000;
/// The most bytes of names, values and times sent in one call (a single larger row goes alone): far below
/// gRPC's default 4 MiB message limit of any proxy on the way.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The longest one call may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `GetObservationLog` reply read when counting rows.
const MAX_REPLY_BYTES: usize = 64 << 20;
/// The pause between two attempts: 100 ms doubling to 5 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// The sink name in the self-metrics (`trialtail_sink_errors_total{sink="katib_db"}`).
pub const SINK: &str = "katib_db";

/// Why Katib did not accept a call.
#[derive(Debug, thiserror::Error)]
pub enum KatibDbError {
    #[error("{address:?} is not a valid gRPC address")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{call} to {address} not accepted within {deadline:?} ({attempts} attempts; last error: {last})")]
    Deadline { call: &'static str, address: String, deadline: Duration, attempts: u32, last: String },
    #[error(
        "Katib's DB holds {found} rows for trial {trial:?} where trialtail reported {expected}: something else          reports this trial's metrics (Katib's collector, or report_metrics in the training); trialtail stops          reporting so that no row is there twice"
    )]
    Foreign { trial: String, found: usize, expected: usize },
}

/// The longest metric name Katib's DB stores: `metric_name VARCHAR(255)` (`pkg/db/v1beta1/mysql/init.go`,
/// `pkg/db/v1beta1/postgres/init.go`); a longer one makes the DB refuse the whole call.
pub const MAX_NAME_CHARS: usize = 255;

/// Whether Katib's DB can store `row` at all (its name fits the column).
pub fn storable(row: &Row<'_>) -> bool {
    row.name.chars().count() <= MAX_NAME_CHARS
}

/// The rows as Katib's messages; an empty time becomes Katib's zero time (the DB would skip the row), and a NUL
/// character, which PostgreSQL's text cannot hold ("invalid byte sequence for encoding UTF8: 0x00", the whole
/// call refused), becomes U+FFFD.
pub fn metric_logs(rows: &[Row<'_>]) -> Vec<MetricLog> {
    let text = |s: &str| if s.contains('\0') { s.replace('\0', "\u{FFFD}") } else { s.to_string() };
    rows.iter()
        .map(|r| MetricLog {
            time_stamp: if r.time.is_empty() { ZERO_TIME.to_string() } else { r.time.to_string() },
            metric: Some(Metric { name: text(r.name), value: text(r.value) }),
        })
        .collect()
}

fn endpoint(address: &str) -> Result<Endpoint, KatibDbError> {
    let url = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    Endpoint::from_shared(url)
        .map(|e| e.connect_timeout(Duration::from_secs(5)))
        .map_err(|source| KatibDbError::Address { address: address.to_string(), source })
}

/// Attempts and back-off within one deadline; every failed attempt is counted in the sinks' statistics.
struct Retry<'s> {
    call: &'static str,
    /// Failed attempts are said at debug level only (an incremental delivery: the final one says it all).
    quiet: bool,
    address: String,
    deadline: Duration,
    end: Instant,
    backoff: Backoff,
    attempts: u32,
    sinks: &'s SinkStats,
}

impl<'s> Retry<'s> {
    fn new(call: &'static str, address: &str, end: Instant, sinks: &'s SinkStats) -> Self {
        let deadline = end.saturating_duration_since(Instant::now());
        Retry { call, quiet: false, address: address.to_string(), deadline, end, backoff: BACKOFF, attempts: 0, sinks }
    }

    /// The time the next attempt may take: [`ATTEMPT_TIMEOUT`] or what is left of the deadline.
    fn left(&mut self) -> Duration {
        self.attempts += 1;
        self.end.saturating_duration_since(Instant::now()).min(ATTEMPT_TIMEOUT)
    }

    /// After a failed attempt (`kind`: `connect`, `status` or `timeout`): waits before the next one, or gives up
    /// when it would start past the deadline.
    async fn failed(&mut self, kind: &'static str, last: String) -> Result<(), KatibDbError> {
        self.sinks.error(SINK, kind);
        if Instant::now() + self.backoff.peek() >= self.end {
            return Err(KatibDbError::Deadline {
                call: self.call,
                address: self.address.clone(),
                deadline: self.deadline,
                attempts: self.attempts,
                last,
            });
        }
        let (call, address, attempt, pause) = (self.call, &self.address, self.attempts, self.backoff.pause());
        if self.quiet {
            tracing::debug!(call, %address, attempt, error = %last, retry_in = ?pause, "call failed; retrying");
        } else {
            tracing::warn!(call, %address, attempt, error = %last, retry_in = ?pause, "call failed; retrying");
        }
        sleep(pause).await;
        Ok(())
    }
}

fn status(s: &tonic::Status) -> String {
    format!("{}: {}", s.code(), s.message())
}

/// How one call ended.
enum Attempt<T> {
    Done(T),
    /// The call never reached the server: no connection.
    NotSent(String),
    /// It may or may not have been carried out.
    Unknown(&'static str, String),
}

/// A report's delivery to one DB manager: what is known to be in the DB, what is uncertain.
#[derive(Debug)]
pub struct Reporter {
    address: String,
    trial: String,
    endpoint: Endpoint,
    client: Option<DbManagerClient<Channel>>,
    sinks: Arc<SinkStats>,
    /// The trial's rows the DB held before this reporter's first call (`None`: not asked yet).
    base: Option<Vec<(String, String)>>,
    /// Rows of the report up to here are delivered (or skipped as unstorable).
    next: usize,
    /// Rows this reporter got into the DB.
    delivered: usize,
    /// The sentinel row was delivered.
    sentinel: bool,
    /// A call whose outcome is unknown: the report index after its rows, and how many rows it carried.
    uncertain: Option<(usize, usize, bool)>,
    /// Rows not sent because their name is longer than the DB stores.
    unstorable: usize,
    /// Reporting stopped for good.
    stopped: bool,
}

/// What to send in one call: the report index after its rows, the messages, whether it is the sentinel.
struct Chunk {
    end: usize,
    logs: Vec<MetricLog>,
    sentinel: bool,
}

impl Reporter {
    /// A reporter for `trial` to the DB manager at `address` (`host:port`), counting in `sinks`.
    pub fn new(address: &str, trial: &str, sinks: Arc<SinkStats>) -> Result<Self, KatibDbError> {
        sinks.register(SINK);
        Ok(Reporter {
            address: address.to_string(),
            trial: trial.to_string(),
            endpoint: endpoint(address)?,
            client: None,
            sinks,
            base: None,
            next: 0,
            delivered: 0,
            sentinel: false,
            uncertain: None,
            unstorable: 0,
            stopped: false,
        })
    }

    /// Rows this reporter got into the DB.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    async fn client(&mut self) -> Result<&mut DbManagerClient<Channel>, String> {
        if self.client.is_none() {
            let channel = self.endpoint.connect().await.map_err(|e| super::error_chain(&e))?;
            self.client = Some(DbManagerClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES));
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    /// The trial's rows in the DB, as (name, value).
    async fn rows_in_db(&mut self, left: Duration) -> Attempt<Vec<(String, String)>> {
        let request = GetObservationLogRequest { trial_name: self.trial.clone(), ..Default::default() };
        let call = async {
            let client = self.client().await.map_err(Attempt::NotSent)?;
            client.get_observation_log(request).await.map_err(|s| Attempt::Unknown("status", status(&s)))
        };
        match tokio::time::timeout(left, call).await {
            Ok(Ok(reply)) => {
                let logs = reply.into_inner().observation_log.map(|l| l.metric_logs).unwrap_or_default();
                let pairs = logs.into_iter().filter_map(|l| l.metric).map(|m| (m.name, m.value)).collect();
                Attempt::Done(pairs)
            }
            Ok(Err(a)) => {
                self.client = None;
                a
            }
            Err(_) => {
                self.client = None;
                Attempt::Unknown("timeout", "no answer within the attempt's time".into())
            }
        }
    }

    async fn send(&mut self, logs: Vec<MetricLog>, left: Duration) -> Attempt<()> {
        let request = ReportObservationLogRequest {
            trial_name: self.trial.clone(),
            observation_log: Some(ObservationLog { metric_logs: logs }),
        };
        let call = async {
            let client = self.client().await.map_err(Attempt::NotSent)?;
            client.report_observation_log(request).await.map_err(|s| Attempt::Unknown("status", status(&s)))
        };
        match tokio::time::timeout(left, call).await {
            Ok(Ok(_)) => Attempt::Done(()),
            Ok(Err(a)) => {
                self.client = None;
                a
            }
            Err(_) => {
                self.client = None;
                Attempt::Unknown("timeout", "no answer within the attempt's time".into())
            }
        }
    }

    /// The next chunk of `report` from row `self.next` (the sentinel when `last` and no row is for the
    /// objective), or `None` when nothing is to be sent.
    fn chunk(&mut self, report: &KatibReport, last: bool) -> Option<Chunk> {
        if !report.has_objective() {
            let send = last && !self.sentinel && self.delivered == 0;
            return send.then(|| Chunk { end: self.next, logs: metric_logs(&[report.sentinel()]), sentinel: true });
        }
        // Rows before the report's first kept one are gone: delivered, or of a content Katib does not read.
        let (mut logs, mut bytes, mut i) = (Vec::new(), 0usize, self.next.max(report.first_kept()));
        while let Some(row) = report.row(i) {
            let size = row.name.len() + row.value.len() + row.time.len() + 16;
            if logs.len() == CHUNK_ROWS || (!logs.is_empty() && bytes + size > CHUNK_BYTES) {
                break;
            }
            i += 1;
            if !storable(&row) {
                self.unstorable += 1;
                continue;
            }
            bytes += size;
            logs.extend(metric_logs(&[row]));
        }
        if logs.is_empty() {
            self.next = i;
            return None;
        }
        Some(Chunk { end: i, logs, sentinel: false })
    }

    /// Sends what `report` holds beyond what was delivered, until `end`. Incremental calls (`last` false)
    /// send nothing while the objective is missing; the last call sends the sentinel then. Returns when all is
    /// delivered, or the deadline passed (the error says why; the rows stay for a later call).
    pub async fn deliver(&mut self, report: &Mutex<KatibReport>, last: bool, end: Instant) -> Result<(), KatibDbError> {
        if self.stopped {
            return Ok(());
        }
        let sinks = self.sinks.clone();
        let mut retry = Retry::new("ReportObservationLog", &self.address, end, &sinks);
        retry.quiet = !last;
        loop {
            // An unknown outcome is settled by the DB's row count before anything else is sent.
            if self.base.is_none() || self.uncertain.is_some() {
                let left = retry.left();
                let found = match self.rows_in_db(left).await {
                    Attempt::Done(rows) => rows,
                    Attempt::NotSent(last) => {
                        retry.failed("connect", last).await?;
                        continue;
                    }
                    Attempt::Unknown(kind, last) => {
                        retry.failed(kind, last).await?;
                        continue;
                    }
                };
                let Some(base) = &self.base else {
                    if !found.is_empty() {
                        tracing::info!(rows = found.len(), trial = %self.trial, "Katib's DB already holds rows of this trial");
                    }
                    self.base = Some(found);
                    continue;
                };
                let known = base.len() + self.delivered;
                let (after, rows, sentinel) = self.uncertain.take().expect("an uncertain call");
                if found.len() == known + rows {
                    tracing::info!(rows, "the call whose answer was lost had been carried out");
                    self.accept(after, rows, sentinel);
                    report.lock().expect("report lock").forget_before(self.next);
                } else if found.len() != known {
                    return Err(self.stop(found.len(), known));
                }
                continue;
            }
            // Rows an earlier instance reported are skipped once this report holds as many.
            let base_len = self.base.as_ref().map_or(0, Vec::len);
            if base_len > 0 && self.next == 0 && self.delivered == 0 {
                let report = report.lock().expect("report lock");
                if report.len() < base_len || !report.has_objective() {
                    if !last {
                        return Ok(());
                    }
                    drop(report);
                    let expected = self.delivered;
                    return Err(self.stop(base_len, expected));
                }
                let ours: Vec<(String, String)> = (0..base_len)
                    .filter_map(|i| report.row(i))
                    .map(|r| (r.name.to_string(), r.value.to_string()))
                    .collect();
                drop(report);
                if !same_rows(ours, self.base.clone().unwrap_or_default()) {
                    return Err(self.stop(base_len, 0));
                }
                tracing::info!(rows = base_len, "an earlier instance reported these rows already: not sent again");
                self.next = base_len;
                self.base = Some(Vec::new());
                self.delivered = base_len;
                continue;
            }
            let Some(chunk) = self.chunk(&report.lock().expect("report lock"), last) else {
                return Ok(());
            };
            let rows = chunk.logs.len();
            let left = retry.left();
            // Uncertain until answered: a caller that gives up on this future mid-call (a deadline, the end of
            // the training) leaves the count to settle it.
            self.uncertain = Some((chunk.end, rows, chunk.sentinel));
            match self.send(chunk.logs, left).await {
                Attempt::Done(()) => {
                    self.uncertain = None;
                    self.accept(chunk.end, rows, chunk.sentinel);
                    // Delivered rows are in Katib's DB: the report forgets them.
                    report.lock().expect("report lock").forget_before(self.next);
                }
                Attempt::NotSent(last) => {
                    self.uncertain = None;
                    retry.failed("connect", last).await?;
                }
                Attempt::Unknown(kind, last) => retry.failed(kind, last).await?,
            }
        }
    }

    fn accept(&mut self, after: usize, rows: usize, sentinel: bool) {
        self.next = after;
        self.delivered += rows;
        self.sentinel |= sentinel;
        self.sinks.delivered(SINK, self.delivered as u64);
        tracing::debug!(rows, delivered = self.delivered, "report chunk accepted");
    }

    fn stop(&mut self, found: usize, expected: usize) -> KatibDbError {
        self.stopped = true;
        self.sinks.error(SINK, "foreign_rows");
        let e = KatibDbError::Foreign { trial: self.trial.clone(), found, expected };
        tracing::error!("{e}");
        e
    }

    /// The final delivery: everything left (or the sentinel) until `end`, then says how it went.
    pub async fn finish(&mut self, report: &Mutex<KatibReport>, end: Instant) -> Result<(), KatibDbError> {
        let outcome = self.deliver(report, true, end).await;
        self.summarize(&report.lock().expect("report lock"), &outcome);
        outcome
    }

    /// Says how the delivery ended: rows delivered, rows not delivered (and why), rows that cannot be stored.
    fn summarize(&self, report: &KatibReport, outcome: &Result<(), KatibDbError>) {
        if self.unstorable > 0 {
            tracing::warn!(
                rows = self.unstorable,
                "rows whose metric name is longer than Katib's DB stores (255 characters): not sent"
            );
            self.sinks.error(SINK, "name_too_long");
        }
        let next = self.next.max(report.first_kept());
        let pending = if report.has_objective() { report.len().saturating_sub(next) } else { 0 };
        match outcome {
            Ok(()) => tracing::info!(
                rows = self.delivered,
                address = %self.address,
                "observations reported to the Katib DB manager"
            ),
            Err(e) => {
                self.sinks.error(SINK, "undelivered");
                tracing::error!(delivered = self.delivered, undelivered = pending, error = %e, "rows not delivered to Katib's DB");
            }
        }
    }
}

/// Whether two row lists hold the same (name, value) pairs, in any order (the DB returns rows by time only).
fn same_rows(mut a: Vec<(String, String)>, mut b: Vec<(String, String)>) -> bool {
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// Reports everything `report` holds for `trial` to the DB manager at `address` within `deadline`, and says how
/// it went (a single report at the end).
pub async fn report(
    address: &str,
    trial: &str,
    report: &Mutex<KatibReport>,
    deadline: Duration,
    sinks: Arc<SinkStats>,
) -> Result<(), KatibDbError> {
    let mut reporter = Reporter::new(address, trial, sinks)?;
    reporter.finish(report, Instant::now() + deadline).await
}

/// Reports the new rows of `report` every `every` until `stop` changes; returns the reporter for the final
/// delivery. A delivery cut short by `stop` leaves its outcome to the final one to settle.
pub async fn report_periodically(
    mut reporter: Reporter,
    report: Arc<Mutex<KatibReport>>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Reporter {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = sleep(every) => {}
            _ = stop.changed() => return reporter,
        }
        tokio::select! {
            outcome = reporter.deliver(&report, false, Instant::now() + every) => match outcome {
                // Said when it starts failing and when it recovers, not every interval.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "Katib's DB is not reachable: the rows wait and are sent when it is");
                }
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(delivered = reporter.delivered(), "Katib's DB is reachable again");
                }
                _ => {}
            },
            _ = stop.changed() => return reporter,
        }
    }
}

/// Tells Katib's early-stopping service at `address` that `trial` was stopped early, within `deadline`; failed
/// attempts are counted in `sinks` (as the `katib_db` sink: the same Katib services).
pub async fn set_trial_status(
    address: &str,
    trial: &str,
    deadline: Duration,
    sinks: &SinkStats,
) -> Result<(), KatibDbError> {
    let endpoint = endpoint(address)?;
    let mut retry = Retry::new("SetTrialStatus", address, Instant::now() + deadline, sinks);
    loop {
        let left = retry.left();
        let attempt = async {
            let channel = endpoint.connect().await.map_err(|e| ("connect", super::error_chain(&e)))?;
            let request = SetTrialStatusRequest { trial_name: trial.to_string() };
            EarlyStoppingClient::new(channel)
                .set_trial_status(request)
                .await
                .map(drop)
                .map_err(|s| ("status", status(&s)))
        };
        let (kind, last) = match tokio::time::timeout(left, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => ("timeout", "the deadline passed during the call".to_string()),
        };
        retry.failed(kind, last).await?;
    }
}
