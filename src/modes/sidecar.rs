//! The native sidecar (`trialtail run --source pod-log`): Kubernetes discovery, the pod-log source, the Trial
//! status sink and the Prometheus exporter, wired together for one run.
//!
//! Order: client → own pod → Trial (and its `primaryContainerName`) → labels → exporter and Trial status sink →
//! follow the container's log → on its end, the final snapshot is published, the Trial status sink gets the
//! grace period for its final write, then the exporter ends (pushing, lingering). A missing Trial is said once
//! and the run goes on for Prometheus; a Trial status sink that is denied stops alone. Only set-up failures
//! (no client, no pod, no container) end the run with an error.

use std::path::Path;
use std::time::Duration;

use crate::export::{ExportConfig, ExportError, Exporter};
use crate::k8s::{self, KubeError};
use crate::signal::Signals;
use crate::sink::trial_status::{self, StatusConfig, TrialStatus};
use crate::snapshot::SnapshotRx;
use crate::source::pod_log::{self, PodLogConfig, PodLogError};
use crate::source::{End, Feed, LiveSink};

/// Why the sidecar could not run.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    PodLog(#[from] PodLogError),
    #[error("no pod name: set POD_NAME from the downward API (fieldRef metadata.name) or --pod")]
    NoPod,
    #[error("pod {pod:?}: no container to read; give --container")]
    NoContainer { pod: String },
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// The sidecar's own settings.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// `--container`.
    pub container: Option<String>,
    /// Write the Trial's status.
    pub trial_status: bool,
    /// `--status-interval`.
    pub status_interval: Duration,
    /// `--shutdown-grace`.
    pub grace: Duration,
}

/// Runs the sidecar until the container terminated and its log was read, or a signal.
pub async fn run<S: LiveSink>(
    cfg: &SidecarConfig,
    export: &ExportConfig,
    snapshots: SnapshotRx,
    live: &mut Feed<'_, S>,
    signals: &mut Signals,
) -> Result<End, SidecarError> {
    let client = k8s::client().await?;
    let mut export = export.clone();
    let pod_name = export.labels.pod.clone().ok_or(SidecarError::NoPod)?;
    let namespace = match export.labels.namespace.clone() {
        Some(ns) => ns,
        None => k8s::pod_identity(|_: &str| None, Path::new(k8s::SA_NAMESPACE_FILE))?.namespace,
    };
    let pod = k8s::get_pod(&client, &pod_name, &namespace).await?;
    let trial = k8s::find_trial(&client, export.labels.trial.as_deref(), None, Some(&pod), &namespace).await;
    match &trial {
        Some(t) => tracing::info!(trial = %t.name, via = t.via, "found the Katib Trial"),
        None => tracing::warn!(
            "no Katib Trial found (--trial, KATIB_TRIAL_NAME, pod label katib.kubeflow.org/trial, controller \
             owners): reporting to Prometheus only"
        ),
    }
    // The Trial is read once: its primaryContainerName and the metrics it asks for.
    let status_cfg = trial.as_ref().map(|t| StatusConfig {
        trial: t.name.clone(),
        namespace: namespace.clone(),
        interval: cfg.status_interval,
    });
    let trial_object = match &status_cfg {
        Some(c) if cfg.trial_status || cfg.container.is_none() => trial_status::read_trial(&client, c).await,
        _ => None,
    };
    let primary = trial_object.as_ref().and_then(|t| t.pointer("/spec/primaryContainerName")?.as_str());
    let container = match &cfg.container {
        Some(c) => c.clone(),
        None => pod_log::default_container(&pod, primary)
            .ok_or_else(|| SidecarError::NoContainer { pod: pod_name.clone() })?,
    };
    let labels = &mut export.labels;
    labels.trial = trial.as_ref().map(|t| t.name.clone());
    labels.namespace = Some(namespace.clone());
    labels.pod = Some(pod_name.clone());
    if labels.experiment.is_none() {
        labels.experiment = k8s::pod_label(&pod, k8s::EXPERIMENT_LABEL).map(str::to_string);
    }
    let exporter = if export.is_enabled() { Some(Exporter::start(&export, snapshots.clone())?) } else { None };
    let status = match status_cfg {
        Some(c) if cfg.trial_status => {
            Some(TrialStatus::new(client.clone(), c).with_trial(trial_object.as_ref()).spawn(snapshots.clone()))
        }
        _ => None,
    };
    tracing::info!(pod = %pod_name, %namespace, %container, "following the container's log");
    let log_cfg = PodLogConfig { pod: pod_name, namespace, container, grace: cfg.grace };
    let end = pod_log::follow(client, pod, &log_cfg, live, signals).await;
    // The final snapshot (published by the source's end, or now after a failure) is what the sinks flush.
    live.end();
    if let Some(handle) = status
        && let Some(patches) = trial_status::finish(handle, cfg.grace).await
    {
        tracing::info!(patches, "wrote the final observations to the Trial status");
    }
    if let Some(exporter) = exporter {
        exporter.finish().await;
    }
    Ok(end?)
}
