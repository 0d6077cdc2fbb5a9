//! The Trial status sink: live observations on the owning Katib `Trial`, while it trains.
//!
//! A merge patch (`application/merge-patch+json`) on the `trials/status` subresource (`kubeflow.org/v1beta1`)
//! sets `status.observation.metrics[]` to `{name, latest, min, max}`, every field a string and `"unavailable"`
//! where there is no value (Katib's shape: `Observation` and `Metric` in
//! `pkg/apis/controller/common/v1beta1/common_types.go`; the CRD declares no schema, so
//! [`observation_patch`] is the only thing that keeps the shape right). The metrics written are the ones the Trial
//! asks for (`spec.objective.objectiveMetricName`, `additionalMetricNames`, then any other name in
//! `metricStrategies` – Katib's controller keys its own observation on the strategies), or every metric observed
//! when the Trial could not be read. A merge patch replaces a list whole, so each patch carries the complete list.
//! The objective's strategy (`min`, `max` or `latest`; by default the objective type's) picks the value said in
//! the final log line, the one Katib will compare trials by.
//!
//! Invariants: it reads the published [`Snapshot`] on its own timer (`--status-interval`) and patches only when
//! the snapshot's generation changed, so an idle sidecar makes no requests and a fast log costs at most one
//! patch per interval; it never slows the reader. When the source ends ([`Phase::Ended`]) it writes the final
//! state at once and returns. Errors: 409 re-reads the Trial and retries; 403/404 log one line naming the RBAC
//! verb and resource and stop this sink only; 429, 5xx and transport errors back off exponentially (bounded),
//! always retrying with the newest snapshot. The caller bounds the final flush with its grace period.
//!
//! It does not find the Trial (see [`crate::k8s`]), write conditions, or touch `spec`.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::aggregate::MetricStats;
use crate::backoff::Backoff;
use crate::katib::UNAVAILABLE;
use crate::sink::stats::SinkStats;
use crate::snapshot::{Phase, Snapshot, SnapshotRx};

/// The default `--status-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The pause after a retryable failure: 500 ms doubling to 30 s.
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// The sink name in the self-metrics (`trialtail_sink_errors_total{sink="trial_status"}`).
pub const SINK: &str = "trial_status";

/// How long one request may take before it counts as a timeout (retried with back-off).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Conflicts retried in a row before the patch waits for the next interval.
const MAX_CONFLICTS: u32 = 5;

/// The Trial resource, `kubeflow.org/v1beta1` `trials`.
pub fn trial_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubeflow.org", "v1beta1", "Trial"), "trials")
}

/// Why the sink stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "cannot {verb} {resource} {name:?} in namespace {namespace:?} (HTTP {code}): the service account needs \
         verb {verb:?} on kubeflow.org {resource}; the Trial status sink stops, everything else goes on"
    )]
    Denied { verb: &'static str, resource: &'static str, name: String, namespace: String, code: u16 },
}

/// What the sink needs to know.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The Trial's name.
    pub trial: String,
    /// Its namespace.
    pub namespace: String,
    /// Time between two patches (`--status-interval`).
    pub interval: Duration,
}

/// The metric names a Trial asks for: the objective metric, the additional ones, then the other names in
/// `metricStrategies`, without duplicates. `None` when the Trial names none (then every observed metric is written).
pub fn requested_metrics(trial: &Value) -> Option<Vec<String>> {
    let objective = trial.pointer("/spec/objective")?;
    let mut names: Vec<String> = Vec::new();
    let first = objective.get("objectiveMetricName").and_then(Value::as_str);
    let more = objective.get("additionalMetricNames").and_then(Value::as_array).into_iter().flatten();
    let strategies = objective.get("metricStrategies").and_then(Value::as_array).into_iter().flatten();
    let more = more.filter_map(Value::as_str).chain(strategies.filter_map(|s| s.get("name")?.as_str()));
    for name in first.into_iter().chain(more) {
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    (!names.is_empty()).then_some(names)
}

/// Which of a metric's values Katib compares trials by (`metricStrategies[].value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Min,
    Max,
    Latest,
}

impl Strategy {
    /// The value `m` has under this strategy, as written to the status.
    pub fn pick(self, m: &MetricStats) -> Option<&str> {
        match self {
            Strategy::Min => m.min.as_ref().map(|(_, s)| s.as_str()),
            Strategy::Max => m.max.as_ref().map(|(_, s)| s.as_str()),
            Strategy::Latest => (m.count > 0).then_some(m.latest_raw.as_str()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Strategy::Min => "min",
            Strategy::Max => "max",
            Strategy::Latest => "latest",
        }
    }
}

/// The objective metric and its strategy: the one in `metricStrategies`, else `max` for `maximize` and `min`
/// for `minimize` (Katib's default), else `latest`.
pub fn objective_strategy(trial: &Value) -> Option<(String, Strategy)> {
    let objective = trial.pointer("/spec/objective")?;
    let name = objective.get("objectiveMetricName")?.as_str().filter(|n| !n.is_empty())?;
    let listed = objective.get("metricStrategies").and_then(Value::as_array).into_iter().flatten();
    let listed = listed.filter(|s| s.get("name").and_then(Value::as_str) == Some(name)).find_map(|s| s.get("value"));
    let strategy = match (listed.and_then(Value::as_str), objective.get("type").and_then(Value::as_str)) {
        (Some("min"), _) | (None, Some("minimize")) => Strategy::Min,
        (Some("max"), _) | (None, Some("maximize")) => Strategy::Max,
        (Some("latest"), _) | (None, _) => Strategy::Latest,
        (Some(other), _) => {
            tracing::warn!(metric = name, strategy = other, "unknown metric strategy (min, max, latest); using latest");
            Strategy::Latest
        }
    };
    Some((name.to_string(), strategy))
}

fn entry(name: &str, m: Option<&MetricStats>) -> Value {
    let text = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or(UNAVAILABLE).to_string();
    let m = m.filter(|m| m.count > 0);
    json!({
        "name": name,
        "latest": text(m.map(|m| m.latest_raw.as_str())),
        "min": text(m.and_then(|m| m.min.as_ref()).map(|(_, s)| s.as_str())),
        "max": text(m.and_then(|m| m.max.as_ref()).map(|(_, s)| s.as_str())),
    })
}

/// The merge patch body for `metrics`: the requested names in their order (those never seen are
/// `"unavailable"`), or every observed metric when `requested` is `None`.
pub fn observation_patch(requested: Option<&[String]>, metrics: &[MetricStats]) -> Value {
    let list: Vec<Value> = match requested {
        Some(names) => names.iter().map(|n| entry(n, metrics.iter().find(|m| &m.name == n))).collect(),
        None => metrics.iter().map(|m| entry(&m.name, Some(m))).collect(),
    };
    json!({ "status": { "observation": { "metrics": list } } })
}

/// Checks a patch body against Katib's status shape: `status.observation.metrics` is a list of objects with
/// exactly the string fields `name`, `latest`, `min`, `max`, names unique. Returns what is wrong.
pub fn check_katib_shape(body: &Value) -> Result<(), String> {
    let list = body
        .pointer("/status/observation/metrics")
        .and_then(Value::as_array)
        .ok_or("status.observation.metrics is not a list")?;
    let mut seen = Vec::new();
    for item in list {
        let obj = item.as_object().ok_or_else(|| format!("{item} is not an object"))?;
        for key in ["name", "latest", "min", "max"] {
            if !obj.get(key).is_some_and(Value::is_string) {
                return Err(format!("{item}: {key} is not a string"));
            }
        }
        if obj.len() != 4 {
            return Err(format!("{item}: fields other than name, latest, min, max"));
        }
        let name = &obj["name"];
        if seen.contains(&name) {
            return Err(format!("metric {name} listed twice"));
        }
        seen.push(name);
    }
    Ok(())
}

enum Outcome {
    Retry,
    Conflict,
    Denied(u16),
    Skip,
}

impl Outcome {
    /// A bounded name for the `kind` label of `trialtail_sink_errors_total`.
    fn kind(&self) -> &'static str {
        match self {
            Outcome::Retry => "unavailable",
            Outcome::Conflict => "conflict",
            Outcome::Denied(_) => "denied",
            Outcome::Skip => "rejected",
        }
    }
}

fn classify(e: &kube::Error) -> Outcome {
    match e {
        kube::Error::Api(s) => match s.code {
            409 => Outcome::Conflict,
            403 | 404 | 401 => Outcome::Denied(s.code),
            429 | 500..=599 => Outcome::Retry,
            // 400/422: the body is wrong; sending it again will not help, the next snapshot may.
            _ => Outcome::Skip,
        },
        _ => Outcome::Retry,
    }
}

/// The running sink.
pub struct TrialStatus {
    api: Api<DynamicObject>,
    cfg: StatusConfig,
    /// The Trial was read (or reading it was tried) before the start.
    read: bool,
    requested: Option<Vec<String>>,
    objective: Option<(String, Strategy)>,
    written: Option<u64>,
    patches: u64,
    sinks: Arc<SinkStats>,
}

impl TrialStatus {
    /// A sink patching `cfg.trial` through `client`.
    pub fn new(client: kube::Client, cfg: StatusConfig) -> Self {
        let api = Api::namespaced_with(client, &cfg.namespace, &trial_resource());
        let sinks = Arc::new(SinkStats::default());
        TrialStatus { api, cfg, read: false, requested: None, objective: None, written: None, patches: 0, sinks }
    }

    /// Counts deliveries and failures in `sinks` (the run's statistics) instead of a private set.
    pub fn with_stats(mut self, sinks: Arc<SinkStats>) -> Self {
        sinks.register(SINK);
        self.sinks = sinks;
        self
    }

    /// Uses the Trial the caller already read (`None`: it could not be read) instead of reading it at the start.
    pub fn with_trial(mut self, trial: Option<&Value>) -> Self {
        self.read = true;
        if let Some(trial) = trial {
            self.learn(trial);
        }
        self
    }

    fn learn(&mut self, trial: &Value) {
        self.requested = requested_metrics(trial);
        self.objective = objective_strategy(trial);
    }

    /// Starts the sink on the current runtime; the handle ends after the final flush (or when the sink stopped).
    pub fn spawn(self, rx: SnapshotRx) -> JoinHandle<Result<u64, StatusError>> {
        tokio::spawn(self.run(rx))
    }

    /// Reads the Trial for the metrics it asks for. A Trial that cannot be read leaves every observed metric
    /// to be written (a missing `get` permission is said once, as a warning: the patch may still be allowed).
    async fn refresh_trial(&mut self) {
        if let Some(trial) = get_trial(&self.api, &self.cfg).await {
            self.learn(&trial);
        }
    }

    /// Runs until the source ended and the final state was written; returns the number of patches sent.
    pub async fn run(mut self, mut rx: SnapshotRx) -> Result<u64, StatusError> {
        if !self.read {
            self.refresh_trial().await;
        }
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut open = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = rx.changed(), if open => {
                    // Only the end is urgent; other changes wait for the tick.
                    open = changed.is_ok();
                    if open && rx.borrow().phase != Phase::Ended {
                        continue;
                    }
                }
            }
            let snapshot = rx.borrow_and_update().clone();
            let last = snapshot.phase == Phase::Ended || !open;
            self.write(&snapshot, &mut rx).await?;
            if last {
                self.say_objective(&snapshot);
                return Ok(self.patches);
            }
        }
    }

    /// Says the objective's value under its strategy, the one Katib will compare this trial by.
    fn say_objective(&self, snapshot: &Snapshot) {
        let Some((name, strategy)) = &self.objective else { return };
        let value = snapshot.metrics.iter().find(|m| &m.name == name).and_then(|m| strategy.pick(m));
        tracing::info!(
            metric = %name,
            strategy = strategy.name(),
            value = value.unwrap_or(UNAVAILABLE),
            trial = %self.cfg.trial,
            "objective"
        );
    }

    /// Writes `snapshot` (or a newer one, when retries take long) unless its generation is already written.
    async fn write(&mut self, snapshot: &Arc<Snapshot>, rx: &mut SnapshotRx) -> Result<(), StatusError> {
        let mut snapshot = snapshot.clone();
        let mut backoff = BACKOFF;
        let mut conflicts = 0;
        loop {
            let ended = snapshot.phase == Phase::Ended;
            if self.written == Some(snapshot.generation) || (snapshot.metrics.is_empty() && !ended) {
                return Ok(());
            }
            let body = observation_patch(self.requested.as_deref(), &snapshot.metrics);
            let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
            let result =
                tokio::time::timeout(REQUEST_TIMEOUT, self.api.patch_status(&self.cfg.trial, &params, &patch)).await;
            self.patches += 1;
            let outcome = match result {
                Ok(Ok(_)) => {
                    self.written = Some(snapshot.generation);
                    self.sinks.delivered(SINK, snapshot.counters.observations);
                    return Ok(());
                }
                Ok(Err(e)) => {
                    let outcome = classify(&e);
                    if matches!(outcome, Outcome::Retry | Outcome::Skip) {
                        tracing::warn!(error = %e, trial = %self.cfg.trial, "patching the Trial status failed");
                    }
                    self.sinks.error(SINK, outcome.kind());
                    outcome
                }
                Err(_) => {
                    tracing::warn!(trial = %self.cfg.trial, "patching the Trial status timed out");
                    self.sinks.error(SINK, "timeout");
                    Outcome::Retry
                }
            };
            match outcome {
                Outcome::Conflict if conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    self.refresh_trial().await;
                }
                Outcome::Conflict | Outcome::Skip => return Ok(()),
                Outcome::Denied(code) => {
                    let e = denied(&self.cfg, "patch", "trials/status", code);
                    tracing::error!("{e}");
                    return Err(e);
                }
                Outcome::Retry => tokio::time::sleep(backoff.pause()).await,
            }
            // Retry with the newest state.
            let newer = rx.borrow_and_update().clone();
            if newer.generation >= snapshot.generation {
                snapshot = newer;
            }
        }
    }
}

/// Reads the Trial (`None` when it cannot be read: said once, as a warning naming what is missing; the sink
/// then writes every observed metric, and the patch may still be allowed).
pub async fn read_trial(client: &kube::Client, cfg: &StatusConfig) -> Option<Value> {
    get_trial(&Api::namespaced_with(client.clone(), &cfg.namespace, &trial_resource()), cfg).await
}

async fn get_trial(api: &Api<DynamicObject>, cfg: &StatusConfig) -> Option<Value> {
    match tokio::time::timeout(REQUEST_TIMEOUT, api.get(&cfg.trial)).await {
        Ok(Ok(trial)) => Some(serde_json::to_value(&trial).unwrap_or_default()),
        Ok(Err(e)) => {
            if let Outcome::Denied(code) = classify(&e) {
                tracing::warn!("{}", denied(cfg, "get", "trials", code));
            } else {
                tracing::warn!(error = %e, trial = %cfg.trial, "cannot read the Trial; writing every observed metric");
            }
            None
        }
        Err(_) => {
            tracing::warn!(trial = %cfg.trial, "reading the Trial timed out; writing every observed metric");
            None
        }
    }
}

fn denied(cfg: &StatusConfig, verb: &'static str, resource: &'static str, code: u16) -> StatusError {
    StatusError::Denied { verb, resource, name: cfg.trial.clone(), namespace: cfg.namespace.clone(), code }
}

/// Ends a spawned sink: waits at most `grace` for its final flush; returns the patches sent when it finished.
pub async fn finish(handle: JoinHandle<Result<u64, StatusError>>, grace: Duration) -> Option<u64> {
    match tokio::time::timeout(grace, handle).await {
        Ok(Ok(Ok(n))) => Some(n),
        Ok(Ok(Err(_))) | Ok(Err(_)) => None,
        Err(_) => {
            tracing::warn!(?grace, "the final Trial status was not written within the grace period");
            None
        }
    }
}

#[cfg(test)]
mod tests;
