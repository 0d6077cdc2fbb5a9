//! The native sidecar (`trialtail run --source pod-log`): Kubernetes discovery, the Trial, the pod-log source,
//! and the outputs the Trial's collector kind allows, wired together for one run.
//!
//! Order: client → own pod → Trial (read once) → its [`Role`] and rules → outputs → follow the training
//! container's log → on its end, the final snapshot (carrying how training ended) is published and the outputs
//! end in [`Outputs::finish`]'s order: the Trial status's final write, then the rest of the rows to Katib's DB,
//! then Prometheus.
//!
//! The role decides what is reported (see [`crate::katib::trial`]): as the Trial's collector (kind `Push`, or
//! `Custom` with trialtail's image, in the primary pod) the rows go to Katib's DB manager incrementally and at
//! the end, and live observations to the Trial's status; otherwise – Katib's own collector reports, not the
//! primary pod, no Trial, a Trial that cannot be read – Prometheus only, said once with the reason. Only set-up
//! failures (no client, no pod, no container, an API server that does not answer within
//! [`k8s::REQUEST_TIMEOUT`]) end the run with an error; a signal during the start-up ends it at once (exit 0).

use std::path::Path;
use std::time::Instant;

use crate::config::{RunConfig, Source};
use crate::k8s::{self, KubeError};
use crate::katib::trial::{Role, Trial, Why};
use crate::outputs::{KatibDbConfig, Outputs, OutputsError};
use crate::parser::Parser;
use crate::signal::Signals;
use crate::sink::stdout::{StdoutError, StdoutSink};
use crate::sink::trial_status::{self, Policy, StatusConfig, TrialStatus};
use crate::source::Feed;
use crate::source::pod_log::{self, PodLogConfig, PodLogError};

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
    #[error("the rules: {0}")]
    Rules(String),
    #[error("stopped at once by a second signal {signal}")]
    Interrupted { signal: i32 },
}

impl SidecarError {
    /// The process exit code: 2 for what the pod spec can fix (no pod name, no namespace, a bad output file or
    /// address), 128+N after a second signal N, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SidecarError::NoPod
            | SidecarError::Kube(KubeError::NoNamespace)
            | SidecarError::Rules(_)
            | SidecarError::Outputs(OutputsError::Server(_) | OutputsError::Stdout(StdoutError::Create { .. })) => 2,
            SidecarError::Interrupted { signal } => 128u8.wrapping_add(*signal as u8),
            _ => 1,
        }
    }
}

/// Runs the sidecar until the training container terminated for good and its log was read, or a signal;
/// exits 0 then.
pub fn run(cfg: RunConfig) -> Result<u8, SidecarError> {
    let started = Instant::now();
    let Source::PodLog { container, trial_status } = cfg.source.clone() else { return Ok(0) };
    let stdout = StdoutSink::open(&cfg.stdout()).map_err(OutputsError::from)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SidecarError::Runtime)?;
    let grace = cfg.shutdown_grace;
    let ran = rt.block_on(async {
        let mut signals = Signals::new().map_err(SidecarError::Runtime)?;
        let mut export = cfg.export.clone();
        let pod_name = export.labels.pod.clone().ok_or(SidecarError::NoPod)?;
        let namespace = match export.labels.namespace.clone() {
            Some(ns) => ns,
            None => k8s::pod_identity(|_: &str| None, Path::new(k8s::SA_NAMESPACE_FILE))?.namespace,
        };
        // Every request of the start-up has its own timeout, and a signal ends the start-up at once.
        let discovery = async {
            let client = k8s::client().await?;
            let pod = k8s::get_pod(&client, &pod_name, &namespace).await?;
            let found = k8s::find_trial(&client, export.labels.trial.as_deref(), None, Some(&pod), &namespace).await;
            // The Trial is read once: what it asks for, how Katib collects it, which container trains.
            let trial = match &found {
                Some(f) => {
                    tracing::info!(trial = %f.name, via = f.via, "found the Katib Trial");
                    trial_status::read_trial(&client, &f.name, &namespace).await.map(|t| Trial::from_json(&t))
                }
                None => None,
            };
            Ok::<_, SidecarError>((client, pod, found, trial))
        };
        let (client, pod, found, trial) = tokio::select! {
            found = discovery => found?,
            sig = signals.recv() => {
                tracing::warn!(signal = sig, "stopped by a signal before reading the log");
                return Ok(None);
            }
        };
        let mut role = match (&found, &trial) {
            (None, _) => Err("no Katib Trial found (--trial, KATIB_TRIAL_NAME, pod label katib.kubeflow.org/trial, \
                              controller owners)"
                .to_string()),
            (Some(_), None) => Err("the Trial cannot be read (the service account needs verb get on kubeflow.org \
                                    trials)"
                .to_string()),
            (Some(_), Some(t)) => Ok(t.role(Some(&pod))),
        };
        let rules = match &trial {
            Some(t) => cfg.rule_flags.for_trial(t).or_else(|e| {
                role = Ok(Role::Observe(Why::Rules(e.to_string())));
                cfg.rule_flags.build()
            }),
            None => cfg.rule_flags.build(),
        };
        let rules = rules.map_err(|e| SidecarError::Rules(e.to_string()))?;
        let reporting = match &role {
            Ok(Role::Report) => {
                let t = trial.as_ref().expect("a Trial reports");
                tracing::info!(
                    kind = t.collector_kind().name(),
                    katib_db = %cfg.katib_db,
                    "trialtail is the Trial's metrics collector: reporting to Katib's DB and the Trial's status"
                );
                true
            }
            Ok(Role::Observe(why)) => {
                tracing::warn!("reporting to Prometheus only: {why}");
                false
            }
            Err(why) => {
                tracing::warn!("reporting to Prometheus only: {why}");
                false
            }
        };
        let primary = trial.as_ref().and_then(|t| t.primary_container.as_deref());
        let training = match &container {
            Some(c) => c.clone(),
            None => pod_log::default_container(&pod, primary)
                .ok_or_else(|| SidecarError::NoContainer { pod: pod_name.clone() })?,
        };
        let log_container = match (&container, trial.as_ref().and_then(|t| t.log_container(&pod))) {
            (None, Some(logger)) => {
                tracing::info!(
                    container = logger,
                    "Katib redirected the training output (kind StdOut): reading its logger's log"
                );
                logger.to_string()
            }
            _ => training.clone(),
        };
        let labels = &mut export.labels;
        labels.trial = found.as_ref().map(|t| t.name.clone());
        labels.namespace = Some(namespace.clone());
        labels.pod = Some(pod_name.clone());
        if labels.experiment.is_none() {
            labels.experiment = k8s::pod_label(&pod, k8s::EXPERIMENT_LABEL).map(str::to_string);
        }
        let mut outputs = Outputs::start(&export)?.with_stdout(stdout);
        if let (true, Some(t)) = (reporting, &trial) {
            let objective = t.objective.clone().unwrap_or_default();
            let db = KatibDbConfig {
                address: cfg.katib_db.clone(),
                trial: t.name.clone(),
                deadline: cfg.report_deadline,
                interval: cfg.report_interval,
            };
            outputs = outputs.with_katib_db(&objective, db);
            if trial_status {
                let status =
                    StatusConfig { trial: t.name.clone(), namespace: namespace.clone(), interval: cfg.status_interval };
                outputs.start_trial_status(TrialStatus::new(client.clone(), status, Policy::for_trial(t)));
            }
        }
        tracing::info!(pod = %pod_name, %namespace, container = %log_container, "following the container's log");
        let log_cfg = PodLogConfig {
            pod: pod_name,
            namespace,
            container: log_container,
            training,
            grace,
            max_line_bytes: rules.max_line_bytes,
        };
        let mut parser = Parser::new(rules.rules, rules.max_metrics);
        let mut feed = Feed::new(&mut parser, &mut outputs);
        let end = pod_log::follow(client, pod, &log_cfg, &mut feed, &mut signals).await;
        // The final snapshot (published by the source's end, or now after a failure) is what the sinks flush.
        if end.is_err() {
            feed.end();
        }
        let source = feed.stats;
        let finished = outputs.finish(&parser, grace, Some(&mut signals)).await;
        if let Some(signal) = finished.interrupted {
            return Err(SidecarError::Interrupted { signal });
        }
        Ok::<_, SidecarError>(Some((end, finished, source, parser)))
    })?;
    let Some((end, finished, source, parser)) = ran else { return Ok(0) };
    super::run::wrap_up(&parser, finished, cfg.stats.then_some((source, started))).map_err(OutputsError::from)?;
    end?;
    Ok(0)
}
