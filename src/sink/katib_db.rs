//! The Katib sink: the final report to Katib's DB manager and the early-stopping call, over plaintext gRPC
//! (`pkg/apis/manager/v1beta1/api.proto`: `DBManager.ReportObservationLog`,
//! `EarlyStopping.SetTrialStatus`).
//!
//! [`report`] sends `DBManager/ReportObservationLog` once, at the end, in chunks of at most [`CHUNK_ROWS`] rows
//! (the DB manager inserts one multi-row statement per call, and more than ~16k rows exceed SQL placeholder
//! limits). Each chunk is retried with exponential backoff (100 ms doubling to 5 s) until it is accepted or the
//! deadline passes; a chunk that was accepted is never sent again. A reply lost after the DB accepted a chunk
//! makes that chunk be sent twice (the DB appends, it does not de-duplicate): gRPC gives no way to tell.
//! [`set_trial_status`] sends `EarlyStopping/SetTrialStatus` with the same retry policy. Rows come from
//! [`crate::katib::report::KatibReport::rows`]: the objective or the `unavailable` sentinel, never an empty time.
//! Incremental reporting while training runs is not done.

use std::time::Duration;

use tokio::time::{Instant, sleep};
use tonic::transport::Endpoint;

use crate::backoff::Backoff;
use crate::katib::api::db_manager_client::DbManagerClient;
use crate::katib::api::early_stopping_client::EarlyStoppingClient;
use crate::katib::api::{Metric, MetricLog, ObservationLog, ReportObservationLogRequest, SetTrialStatusRequest};
use crate::katib::report::Row;
use crate::sink::stats::SinkStats;
use crate::value::ZERO_TIME;

/// The most rows sent in one call.
pub const CHUNK_ROWS: usize = 4000;
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
    address: String,
    deadline: Duration,
    end: Instant,
    backoff: Backoff,
    attempts: u32,
    sinks: &'s SinkStats,
}

impl<'s> Retry<'s> {
    fn new(call: &'static str, address: &str, deadline: Duration, sinks: &'s SinkStats) -> Self {
        Retry {
            call,
            address: address.to_string(),
            deadline,
            end: Instant::now() + deadline,
            backoff: BACKOFF,
            attempts: 0,
            sinks,
        }
    }

    /// The time left for the next attempt.
    fn left(&mut self) -> Duration {
        self.attempts += 1;
        self.end.saturating_duration_since(Instant::now())
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
        tracing::warn!(call, %address, attempt, error = %last, retry_in = ?pause, "call failed; retrying");
        sleep(pause).await;
        Ok(())
    }
}

fn status(s: &tonic::Status) -> String {
    format!("{}: {}", s.code(), s.message())
}

/// Reports `rows` for `trial` to the DB manager at `address` (`host:port`), within `deadline` overall; failed
/// attempts and the rows delivered are counted in `sinks`.
pub async fn report(
    address: &str,
    trial: &str,
    rows: &[Row<'_>],
    deadline: Duration,
    sinks: &SinkStats,
) -> Result<(), KatibDbError> {
    let endpoint = endpoint(address)?;
    let kept: Vec<Row<'_>>;
    let rows = if rows.iter().all(storable) {
        rows
    } else {
        kept = rows.iter().copied().filter(storable).collect();
        let dropped = rows.len() - kept.len();
        tracing::warn!(dropped, "rows whose metric name is longer than Katib's DB stores (255 characters): not sent");
        sinks.error(SINK, "name_too_long");
        &kept
    };
    let chunks = rows.len().div_ceil(CHUNK_ROWS).max(1);
    let mut retry = Retry::new("ReportObservationLog", address, deadline, sinks);
    sinks.register(SINK);
    let mut client: Option<DbManagerClient<tonic::transport::Channel>> = None;
    let mut sent = 0u64;
    // Messages are built one chunk at a time: memory holds one chunk's messages, not the whole report's twice.
    for (i, chunk) in rows.chunks(CHUNK_ROWS).enumerate() {
        let request = ReportObservationLogRequest {
            trial_name: trial.to_string(),
            observation_log: Some(ObservationLog { metric_logs: metric_logs(chunk) }),
        };
        loop {
            let left = retry.left();
            let request = request.clone();
            let attempt = async {
                let c = match &mut client {
                    Some(c) => c,
                    None => client.insert(DbManagerClient::new(
                        endpoint.connect().await.map_err(|e| ("connect", super::error_chain(&e)))?,
                    )),
                };
                c.report_observation_log(request).await.map(drop).map_err(|s| ("status", status(&s)))
            };
            let (kind, last) = match tokio::time::timeout(left, attempt).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e,
                Err(_) => ("timeout", "the deadline passed during the call".to_string()),
            };
            client = None;
            retry.failed(kind, last).await?;
        }
        sent += chunk.len() as u64;
        sinks.delivered(SINK, sent);
        tracing::debug!(chunk = i + 1, chunks, rows = chunk.len(), "report chunk accepted");
    }
    tracing::info!(rows = rows.len(), chunks, %address, "observations reported to the Katib DB manager");
    Ok(())
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
    let mut retry = Retry::new("SetTrialStatus", address, deadline, sinks);
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
