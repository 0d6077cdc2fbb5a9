//! The Trial status sink: live observations on the owning Katib `Trial`, while it trains, under rules that keep
//! every Katib decision what it would be with Katib's own collector.
//!
//! A merge patch (`application/merge-patch+json`) on the `trials/status` subresource (`kubeflow.org/v1beta1`)
//! sets `status.observation.metrics[]` to `{name, latest, min, max}`, every field a string and `"unavailable"`
//! where there is no value (Katib's shape: `Observation` and `Metric` in
//! `pkg/apis/controller/common/v1beta1/common_types.go`; the CRD declares no schema, so
//! [`observation_patch`] is the only thing that keeps the shape right). The metrics written are the ones the Trial
//! asks for ([`Trial::requested`]). A merge patch replaces a list whole, so each patch carries the complete list.
//!
//! The rules. Katib's experiment controller reads every Trial's observation, running or failed, for its goal
//! check and `currentOptimalTrial` (`updateTrialsSummary`, `pkg/controller.v1beta1/experiment/util/status_util.go`),
//! while Katib itself sets an observation only when a trial ended. So:
//! - while training runs, the objective is written only when its strategy is `min` or `max` – a value the trial
//!   really reached, which the final one can only equal or better; under `latest` it stays `"unavailable"`
//!   (an interim latest can cross the goal and come back);
//! - when the training container succeeded ([`Training::Succeeded`]), the final values are written whole; Katib's
//!   trial controller then replaces the observation with the one it computes from the DB rows
//!   (`UpdateTrialStatusObservation`, `pkg/controller.v1beta1/trial/trial_controller_util.go`), and uses ours only
//!   if the DB holds no row;
//! - when it failed (or was killed, or its pod went away), the final patch sets `status.observation` to `null`,
//!   leaving the Trial as Katib would: Katib never reads an observation for a failed trial.
//!
//! Invariants: it reads the published [`Snapshot`] on its own timer (`--status-interval`) and patches only when
//! the snapshot's generation changed, so an idle sidecar makes no requests and a fast log costs at most one
//! patch per interval; it never slows the reader. When the source ends ([`Phase::Ended`]) it writes the final
//! state at once and returns. Errors: 409 retries; 403/404 log one line naming the RBAC verb and resource and
//! stop this sink only; 429, 5xx and transport errors back off exponentially (bounded), always retrying with the
//! newest snapshot. The caller bounds the final flush with its grace period.
//!
//! It does not find or read the Trial (see [`crate::k8s`], [`crate::katib::trial`]), write conditions, or touch
//! `spec`.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::aggregate::MetricStats;
use crate::backoff::Backoff;
use crate::katib::UNAVAILABLE;
use crate::katib::trial::{Strategy, Trial};
use crate::sink::stats::SinkStats;
use crate::snapshot::{Phase, Snapshot, SnapshotRx, Training};

/// The default `--status-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The pause after a retryable failure: 500 ms doubling to 30 s.
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// The sink name in the self-metrics (`trialtail_sink_errors_total{sink="trial_status"}`).
pub const SINK: &str = "trial_status";

/// How long one request may take before it counts as a timeout (retried with back-off).
pub use crate::k8s::REQUEST_TIMEOUT;

/// How long a refusal (401, 403, 404) that follows accepted writes is retried before the live writes stop: a
/// restarted API server answers 403 until its RBAC informers have synced (`pkg/registry/rbac` and the RBAC
/// authorizer in kube-apiserver serve from caches; requests before `readyz` see an empty policy).
pub const DENIED_PATIENCE: Duration = Duration::from_secs(60);

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
         verb {verb:?} on kubeflow.org {resource}; live status writes stop (the final values are still tried at the \
         end), everything else goes on"
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

/// What is written for a Trial: which metrics, and the objective under its strategy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The metrics written, in order.
    pub requested: Vec<String>,
    /// The objective and its strategy.
    pub objective: Option<(String, Strategy)>,
}

impl Policy {
    /// The Trial's metrics and objective strategy.
    pub fn for_trial(trial: &Trial) -> Self {
        Policy { requested: trial.requested(), objective: trial.objective_strategy() }
    }

    /// The metric that must not be written while training runs: the objective under `latest`.
    fn hidden_while_training(&self) -> Option<&str> {
        self.objective.as_ref().filter(|(_, s)| *s == Strategy::Latest).map(|(n, _)| n.as_str())
    }
}

fn entry(name: &str, m: Option<&MetricStats>) -> Value {
    let text = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or(UNAVAILABLE).to_string();
    let m = m.filter(|m| m.count > 0);
    json!({
        "name": name,
        "latest": text(m.map(|m| m.latest_raw.as_str()).as_deref()),
        "min": text(m.and_then(|m| m.min.as_ref()).map(|(_, s)| s.as_str())),
        "max": text(m.and_then(|m| m.max.as_ref()).map(|(_, s)| s.as_str())),
    })
}

/// The merge patch body for `metrics`: the requested names in their order, those never seen – and `hidden`,
/// when given – `"unavailable"`.
pub fn observation_patch(requested: &[String], metrics: &[MetricStats], hidden: Option<&str>) -> Value {
    let list: Vec<Value> = requested
        .iter()
        .map(|n| entry(n, metrics.iter().find(|m| &m.name == n).filter(|_| Some(n.as_str()) != hidden)))
        .collect();
    json!({ "status": { "observation": { "metrics": list } } })
}

/// The final patch after failed training: no observation, as Katib leaves a failed trial.
pub fn clear_patch() -> Value {
    json!({ "status": { "observation": null } })
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
    policy: Policy,
    written: Option<u64>,
    /// Patches the API server accepted.
    accepted: u64,
    patches: u64,
    sinks: Arc<SinkStats>,
    /// Refused since then, after accepted writes (retried within [`DENIED_PATIENCE`]).
    denied_since: Option<tokio::time::Instant>,
}

/// What one patch is.
enum Body {
    /// Observations, with the objective hidden or not.
    Observation(Value),
    /// `status.observation: null`.
    Clear,
}

impl TrialStatus {
    /// A sink patching `cfg.trial` through `client` with what `policy` says.
    pub fn new(client: kube::Client, cfg: StatusConfig, policy: Policy) -> Self {
        let api = Api::namespaced_with(client, &cfg.namespace, &trial_resource());
        let sinks = Arc::new(SinkStats::default());
        TrialStatus { api, cfg, policy, written: None, accepted: 0, patches: 0, sinks, denied_since: None }
    }

    /// Counts deliveries and failures in `sinks` (the run's statistics) instead of a private set.
    pub fn with_stats(mut self, sinks: Arc<SinkStats>) -> Self {
        sinks.register(SINK);
        self.sinks = sinks;
        self
    }

    /// Starts the sink on the current runtime; the handle ends after the final flush (or when the sink stopped).
    pub fn spawn(self, rx: SnapshotRx) -> JoinHandle<Result<u64, StatusError>> {
        tokio::spawn(self.run(rx))
    }

    /// Runs until the source ended and the final state was written; returns the number of patches sent. When
    /// a refusal stops the live writes, it waits for the end and tries the final state once more.
    pub async fn run(mut self, mut rx: SnapshotRx) -> Result<u64, StatusError> {
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
            if let Err(e) = self.write(&snapshot, &mut rx).await {
                if last {
                    return Err(e);
                }
                tracing::error!("{e}");
                // Only the final state is tried again, once the source ended.
                let _ = rx.wait_for(|s| s.phase == Phase::Ended).await;
                let end = rx.borrow_and_update().clone();
                self.denied_since = None;
                self.write(&end, &mut rx).await?;
                self.say_objective(&end);
                tracing::info!(trial = %self.cfg.trial, "the final values were written after all");
                return Ok(self.patches);
            }
            if last {
                self.say_objective(&snapshot);
                return Ok(self.patches);
            }
        }
    }

    /// Says the objective's value under its strategy, the one Katib will compare this trial by.
    fn say_objective(&self, snapshot: &Snapshot) {
        let Some((name, strategy)) = &self.policy.objective else { return };
        let value = snapshot.metrics.iter().find(|m| &m.name == name).and_then(|m| strategy.pick(m));
        tracing::info!(
            metric = %name,
            strategy = strategy.name(),
            value = value.as_deref().unwrap_or(UNAVAILABLE),
            trial = %self.cfg.trial,
            training = ?snapshot.source.training,
            "objective"
        );
    }

    /// The patch for `snapshot`, or nothing to write: while training, the observations with a `latest`
    /// objective hidden; at a successful end all of them; at any other end, the clearing patch if something was
    /// written.
    fn body(&self, snapshot: &Snapshot) -> Option<Body> {
        let requested = &self.policy.requested;
        if snapshot.phase != Phase::Ended {
            let hidden = self.policy.hidden_while_training();
            return (!snapshot.metrics.is_empty())
                .then(|| Body::Observation(observation_patch(requested, &snapshot.metrics, hidden)));
        }
        match snapshot.source.training {
            Training::Succeeded => Some(Body::Observation(observation_patch(requested, &snapshot.metrics, None))),
            Training::Failed | Training::Unknown => (self.accepted > 0).then_some(Body::Clear),
        }
    }

    /// Writes `snapshot` (or a newer one, when retries take long) unless its generation is already written.
    async fn write(&mut self, snapshot: &Arc<Snapshot>, rx: &mut SnapshotRx) -> Result<(), StatusError> {
        let mut snapshot = snapshot.clone();
        let mut backoff = BACKOFF;
        let mut conflicts = 0;
        loop {
            if self.written == Some(snapshot.generation) {
                return Ok(());
            }
            let Some(body) = self.body(&snapshot) else { return Ok(()) };
            let value = match &body {
                Body::Observation(v) => v.clone(),
                Body::Clear => clear_patch(),
            };
            let (params, patch) = (PatchParams::default(), Patch::Merge(&value));
            let result =
                tokio::time::timeout(REQUEST_TIMEOUT, self.api.patch_status(&self.cfg.trial, &params, &patch)).await;
            self.patches += 1;
            let outcome = match result {
                Ok(Ok(_)) => {
                    self.written = Some(snapshot.generation);
                    self.accepted += 1;
                    if self.denied_since.take().is_some() {
                        tracing::info!(trial = %self.cfg.trial, "the Trial status is written again");
                    }
                    if let Body::Observation(_) = body {
                        self.sinks.delivered(SINK, snapshot.counters.observations);
                    } else {
                        tracing::info!(trial = %self.cfg.trial, "training did not succeed: cleared the observation written while it ran");
                    }
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
                Outcome::Conflict if conflicts < MAX_CONFLICTS => conflicts += 1,
                Outcome::Conflict | Outcome::Skip => return Ok(()),
                // After accepted writes a refusal is most likely an API server that is still starting: retried.
                Outcome::Denied(code) if self.accepted > 0 => {
                    let since = *self.denied_since.get_or_insert_with(|| {
                        tracing::warn!(
                            code,
                            trial = %self.cfg.trial,
                            patience = ?DENIED_PATIENCE,
                            "the Trial status write was refused after accepted ones (an API server still starting \
                             refuses until its RBAC is loaded): retrying"
                        );
                        tokio::time::Instant::now()
                    });
                    if since.elapsed() >= DENIED_PATIENCE {
                        tracing::warn!(code, patience = ?DENIED_PATIENCE, "still refused: giving up on live writes");
                        return Err(denied(&self.cfg, "patch", "trials/status", code));
                    }
                    tokio::time::sleep(backoff.pause()).await;
                }
                Outcome::Denied(code) => return Err(denied(&self.cfg, "patch", "trials/status", code)),
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

/// Reads the Trial (`None` when it cannot be read: said once, as a warning naming what is missing).
pub async fn read_trial(client: &kube::Client, name: &str, namespace: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &trial_resource());
    let cfg = StatusConfig { trial: name.to_string(), namespace: namespace.to_string(), interval: DEFAULT_INTERVAL };
    match tokio::time::timeout(REQUEST_TIMEOUT, api.get(name)).await {
        Ok(Ok(trial)) => Some(serde_json::to_value(&trial).unwrap_or_default()),
        Ok(Err(e)) => {
            if let Outcome::Denied(code) = classify(&e) {
                tracing::warn!("{}", denied(&cfg, "get", "trials", code));
            } else {
                tracing::warn!(error = %e, trial = %cfg.trial, "cannot read the Trial");
            }
            None
        }
        Err(_) => {
            tracing::warn!(trial = %cfg.trial, "reading the Trial timed out");
            None
        }
    }
}

fn denied(cfg: &StatusConfig, verb: &'static str, resource: &'static str, code: u16) -> StatusError {
    StatusError::Denied { verb, resource, name: cfg.trial.clone(), namespace: cfg.namespace.clone(), code }
}

#[cfg(test)]
mod tests;
