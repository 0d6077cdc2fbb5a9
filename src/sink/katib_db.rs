//! The Katib sink: the final report to Katib's DB manager and the early-stopping call, over plaintext gRPC
//! (CONTRACT §5–6).
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

use crate::katib::api::db_manager_client::DbManagerClient;
use crate::katib::api::early_stopping_client::EarlyStoppingClient;
use crate::katib::api::{Metric, MetricLog, ObservationLog, ReportObservationLogRequest, SetTrialStatusRequest};
use crate::katib::report::Row;
use crate::value::ZERO_TIME;

/// The most rows sent in one call.
pub const CHUNK_ROWS: usize = 4000;
/// The first and the longest pause between two attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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

/// The rows as Katib's messages; an empty time becomes Katib's zero time (the DB would skip the row).
pub fn metric_logs(rows: &[Row<'_>]) -> Vec<MetricLog> {
    rows.iter()
        .map(|r| MetricLog {
            time_stamp: if r.time.is_empty() { ZERO_TIME.to_string() } else { r.time.to_string() },
            metric: Some(Metric { name: r.name.to_string(), value: r.value.to_string() }),
        })
        .collect()
}

fn endpoint(address: &str) -> Result<Endpoint, KatibDbError> {
    let url = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    Endpoint::from_shared(url)
        .map(|e| e.connect_timeout(Duration::from_secs(5)))
        .map_err(|source| KatibDbError::Address { address: address.to_string(), source })
}

/// Attempts and back-off within one deadline.
struct Retry {
    call: &'static str,
    address: String,
    deadline: Duration,
    end: Instant,
    backoff: Duration,
    attempts: u32,
}

impl Retry {
    fn new(call: &'static str, address: &str, deadline: Duration) -> Self {
        Retry {
            call,
            address: address.to_string(),
            deadline,
            end: Instant::now() + deadline,
            backoff: BACKOFF_MIN,
            attempts: 0,
        }
    }

    /// The time left for the next attempt.
    fn left(&mut self) -> Duration {
        self.attempts += 1;
        self.end.saturating_duration_since(Instant::now())
    }

    /// After a failed attempt: waits before the next one, or gives up when it would start past the deadline.
    async fn failed(&mut self, last: String) -> Result<(), KatibDbError> {
        if Instant::now() + self.backoff >= self.end {
            return Err(KatibDbError::Deadline {
                call: self.call,
                address: self.address.clone(),
                deadline: self.deadline,
                attempts: self.attempts,
                last,
            });
        }
        let (call, address, attempt) = (self.call, &self.address, self.attempts);
        tracing::warn!(call, %address, attempt, error = %last, retry_in = ?self.backoff, "call failed; retrying");
        sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        Ok(())
    }
}

fn status(s: &tonic::Status) -> String {
    format!("{}: {}", s.code(), s.message())
}

/// Reports `rows` for `trial` to the DB manager at `address` (`host:port`), within `deadline` overall.
pub async fn report(address: &str, trial: &str, rows: &[Row<'_>], deadline: Duration) -> Result<(), KatibDbError> {
    let endpoint = endpoint(address)?;
    let chunks = rows.len().div_ceil(CHUNK_ROWS).max(1);
    let mut retry = Retry::new("ReportObservationLog", address, deadline);
    let mut client: Option<DbManagerClient<tonic::transport::Channel>> = None;
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
                    None => client
                        .insert(DbManagerClient::new(endpoint.connect().await.map_err(|e| super::error_chain(&e))?)),
                };
                c.report_observation_log(request).await.map(drop).map_err(|s| status(&s))
            };
            let last = match tokio::time::timeout(left, attempt).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e,
                Err(_) => "the deadline passed during the call".to_string(),
            };
            client = None;
            retry.failed(last).await?;
        }
        tracing::debug!(chunk = i + 1, chunks, rows = chunk.len(), "report chunk accepted");
    }
    tracing::info!(rows = rows.len(), chunks, %address, "observations reported to the Katib DB manager");
    Ok(())
}

/// Tells Katib's early-stopping service at `address` that `trial` was stopped early, within `deadline`.
pub async fn set_trial_status(address: &str, trial: &str, deadline: Duration) -> Result<(), KatibDbError> {
    let endpoint = endpoint(address)?;
    let mut retry = Retry::new("SetTrialStatus", address, deadline);
    loop {
        let left = retry.left();
        let attempt = async {
            let channel = endpoint.connect().await.map_err(|e| super::error_chain(&e))?;
            let request = SetTrialStatusRequest { trial_name: trial.to_string() };
            EarlyStoppingClient::new(channel).set_trial_status(request).await.map(drop).map_err(|s| status(&s))
        };
        let last = match tokio::time::timeout(left, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "the deadline passed during the call".to_string(),
        };
        retry.failed(last).await?;
    }
}
