//! The native sidecar (`trialtail run --source pod-log`): Kubernetes discovery, the pod-log source, the Trial
//! status sink and the Prometheus exporter, wired together for one run.
//!
//! Order: client → own pod → Trial (and its `primaryContainerName`) → labels → outputs (endpoint, pusher, Trial
//! status sink) → follow the container's log → on its end, the final snapshot is published and the outputs end
//! in [`Outputs::finish`]'s order (the Trial status's final write within the grace period first). A missing
//! Trial is said once and the run goes on for Prometheus; a Trial status sink that is denied stops alone. Only
//! set-up failures (no client, no pod, no container) end the run with an error.

use std::path::Path;
use std::time::Instant;

use crate::config::{RunConfig, Source};
use crate::k8s::{self, KubeError};
use crate::outputs::{Outputs, OutputsError};
use crate::parser::Parser;
use crate::signal::Signals;
use crate::sink::stdout::{StdoutError, StdoutSink};
use crate::sink::trial_status::{self, StatusConfig, TrialStatus};
use crate::source::pod_log::{self, PodLogConfig, PodLogError};
use crate::source::{End, Feed};

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
    Outputs(#[from] OutputsError),
    #[error("cannot set up the runtime or signal handlers")]
    Runtime(#[source] std::io::Error),
}

impl SidecarError {
    /// The process exit code: 2 for what the pod spec can fix (no pod name, no namespace, a bad output file or
    /// address), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SidecarError::NoPod
            | SidecarError::Kube(KubeError::NoNamespace)
            | SidecarError::Outputs(OutputsError::Server(_) | OutputsError::Stdout(StdoutError::Create { .. })) => 2,
            _ => 1,
        }
    }
}

/// Runs the sidecar until the container terminated and its log was read, or a signal; exits 0 then.
pub fn run(cfg: RunConfig) -> Result<u8, SidecarError> {
    let started = Instant::now();
    let Source::PodLog { container, trial_status } = cfg.source.clone() else { return Ok(0) };
    let stdout = StdoutSink::open(&cfg.stdout()).map_err(OutputsError::from)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SidecarError::Runtime)?;
    let mut parser = Parser::new(cfg.rules, cfg.max_metrics);
    let grace = cfg.shutdown_grace;
    let (end, finished, source) = rt.block_on(async {
        let mut signals = Signals::new().map_err(SidecarError::Runtime)?;
        let mut export = cfg.export.clone();
        let client = k8s::client().await?;
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
            Some(c) if trial_status || container.is_none() => trial_status::read_trial(&client, c).await,
            _ => None,
        };
        let primary = trial_object.as_ref().and_then(|t| t.pointer("/spec/primaryContainerName")?.as_str());
        let container = match &container {
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
        let mut outputs = Outputs::start(&export)?.with_stdout(stdout);
        if let Some(c) = status_cfg.filter(|_| trial_status) {
            outputs.start_trial_status(TrialStatus::new(client.clone(), c).with_trial(trial_object.as_ref()));
        }
        tracing::info!(pod = %pod_name, %namespace, %container, "following the container's log");
        let log_cfg = PodLogConfig { pod: pod_name, namespace, container, grace, max_line_bytes: cfg.max_line_bytes };
        let mut feed = Feed::new(&mut parser, &mut outputs);
        let end = pod_log::follow(client, pod, &log_cfg, &mut feed, &mut signals).await;
        // The final snapshot (published by the source's end, or now after a failure) is what the sinks flush.
        feed.end();
        let source = feed.stats;
        let finished = outputs.finish(&parser, grace).await;
        Ok::<_, SidecarError>((end, finished, source))
    })?;
    super::run::wrap_up(&parser, finished, cfg.stats.then_some((source, started))).map_err(OutputsError::from)?;
    match end? {
        End::Exited(code) => Ok(code),
        End::Eof | End::Idle | End::Signalled(_) => Ok(0),
    }
}
