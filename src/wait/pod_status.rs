//! The training container's state, from a watch on the own pod (the native sidecar's waiter).
//!
//! [`watch`] keeps a `tokio::sync::watch` channel up to date with the container's [`ContainerState`]: it watches
//! the pod by name from a known `resourceVersion` (so nothing between the first read and the watch is missed),
//! re-reads the pod after a `410 Gone`, and reconnects with a back-off. A deleted pod counts as terminated.
//! [`container_state`] is the pure part, tested from pod JSON.
//!
//! What it does not do: read logs ([`crate::source::pod_log`]) or decide what a state means for reading.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, WatchEvent, WatchParams};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::k8s::REQUEST_TIMEOUT;

/// How long the API server keeps one watch open before it ends it (the client reopens it).
pub const WATCH_SECONDS: u32 = 60;

/// The first and the longest wait between two attempts to open the watch.
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// A container's state, as far as reading its log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Not started yet (pulling, creating), not in the status yet, or terminated with a restart to come.
    Waiting,
    /// Running; the number is its restart count.
    Running(i32),
    /// Terminated for good (or the pod is gone: `exit` is `None`): training is over once the log is read.
    Terminated {
        /// The restart count of the instance that ended.
        restarts: i32,
        /// Its exit code.
        exit: Option<i32>,
    },
}

impl ContainerState {
    /// The state of a deleted pod's container.
    pub const GONE: ContainerState = ContainerState::Terminated { restarts: i32::MAX, exit: None };

    /// Whether training ended for good.
    pub fn is_terminated(self) -> bool {
        matches!(self, ContainerState::Terminated { .. })
    }

    /// Whether training ended for good and successfully (exit code 0).
    pub fn succeeded(self) -> bool {
        matches!(self, ContainerState::Terminated { exit: Some(0), .. })
    }
}

fn status_of<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let all = status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten());
    all.into_iter().find(|s| s.name == container)
}

/// The state of `container` in `pod`. A terminated container whose restart is still to come – the pod's
/// `restartPolicy` is `Always`, or `OnFailure` and it failed, and the pod has not ended – is `Waiting`: the
/// kubelet publishes the crashed instance as terminated before it starts the next one
/// (`convertToAPIContainerStatuses` and `ShouldContainerBeRestarted`, `pkg/kubelet/kubelet_pods.go`,
/// `pkg/kubelet/container/helpers.go`). A native sidecar's own policy does not apply to the training container.
pub fn container_state(pod: &Pod, container: &str) -> ContainerState {
    let Some(s) = status_of(pod, container) else { return ContainerState::Waiting };
    let Some(state) = s.state.as_ref() else { return ContainerState::Waiting };
    if state.running.is_some() {
        return ContainerState::Running(s.restart_count);
    }
    let Some(t) = state.terminated.as_ref() else { return ContainerState::Waiting };
    let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let pod_ended = matches!(phase, Some("Succeeded" | "Failed"));
    let restarts = match policy {
        "Never" => false,
        "OnFailure" => t.exit_code != 0,
        _ => true,
    };
    if restarts && !pod_ended {
        return ContainerState::Waiting;
    }
    ContainerState::Terminated { restarts: s.restart_count, exit: Some(t.exit_code) }
}

/// Keeps `tx` up to date with `container`'s state in pod `pod` from a watch starting at `version`; reconnects
/// with back-off. Returns when the pod is deleted or nobody listens any more.
pub async fn watch(
    api: Api<Pod>,
    pod: String,
    container: String,
    mut version: String,
    tx: watch::Sender<ContainerState>,
) {
    // The API server ends each watch after WATCH_SECONDS; a stream silent for longer than that (plus a request's
    // time) is dead and is reopened, as is an open that is not answered in time.
    let params = WatchParams::default().fields(&format!("metadata.name={pod}")).timeout(WATCH_SECONDS);
    let idle = Duration::from_secs(u64::from(WATCH_SECONDS)) + REQUEST_TIMEOUT;
    let mut backoff = BACKOFF;
    loop {
        let opened = tokio::time::timeout(REQUEST_TIMEOUT, api.watch(&params, &version)).await;
        let stream = match opened.unwrap_or_else(|_| Err(kube::Error::Service("no answer from the API server".into())))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %pod, "watching the pod failed (needs verb watch on pods); retrying");
                tokio::time::sleep(backoff.pause()).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(event)) = tokio::time::timeout(idle, stream.next()).await {
            match event {
                Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => {
                    backoff.reset();
                    version = p.metadata.resource_version.clone().unwrap_or_default();
                    tx.send_replace(container_state(&p, &container));
                }
                Ok(WatchEvent::Deleted(_)) => {
                    tx.send_replace(ContainerState::GONE);
                    return;
                }
                Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                Ok(WatchEvent::Error(e)) => {
                    // 410 Gone: the version is too old; re-read the pod.
                    tracing::debug!(code = e.code, "pod watch error");
                    match tokio::time::timeout(REQUEST_TIMEOUT, api.get(&pod)).await {
                        Ok(Ok(p)) => {
                            version = p.metadata.resource_version.clone().unwrap_or_default();
                            tx.send_replace(container_state(&p, &container));
                        }
                        _ => version = "0".into(),
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff.pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_states_from_the_pod_status() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "trialtail"}, {"name": "train"}]},
                "status": status,
            }))
            .unwrap()
        };
        let cs = |state: serde_json::Value, restarts: i32| {
            serde_json::json!({"containerStatuses": [{"name": "train", "image": "i", "imageID": "", "ready": true,
                "restartCount": restarts, "state": state}]})
        };
        assert_eq!(container_state(&pod(serde_json::json!({})), "train"), ContainerState::Waiting);
        let waiting = pod(cs(serde_json::json!({"waiting": {"reason": "ContainerCreating"}}), 0));
        assert_eq!(container_state(&waiting, "train"), ContainerState::Waiting);
        let running = pod(cs(serde_json::json!({"running": {}}), 2));
        assert_eq!(container_state(&running, "train"), ContainerState::Running(2));
        let done = pod(cs(serde_json::json!({"terminated": {"exitCode": 0}}), 0));
        assert_eq!(container_state(&done, "train"), ContainerState::Terminated { restarts: 0, exit: Some(0) });
    }

    #[test]
    fn a_crash_with_a_restart_to_come_is_not_the_end() {
        let pod = |policy: &str, exit: i32, phase: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"restartPolicy": policy, "containers": [{"name": "train"}]},
                "status": {"phase": phase, "containerStatuses": [{"name": "train", "image": "i", "imageID": "",
                    "ready": false, "restartCount": 1, "state": {"terminated": {"exitCode": exit}}}]},
            }))
            .unwrap()
        };
        let state = |policy, exit, phase| container_state(&pod(policy, exit, phase), "train");
        assert_eq!(state("OnFailure", 1, "Running"), ContainerState::Waiting, "the kubelet restarts it");
        assert_eq!(state("OnFailure", 0, "Running"), ContainerState::Terminated { restarts: 1, exit: Some(0) });
        assert_eq!(state("Never", 137, "Running"), ContainerState::Terminated { restarts: 1, exit: Some(137) });
        assert_eq!(state("OnFailure", 1, "Failed"), ContainerState::Terminated { restarts: 1, exit: Some(1) });
        assert_eq!(state("Always", 0, "Running"), ContainerState::Waiting);
        assert!(!ContainerState::GONE.succeeded() && ContainerState::GONE.is_terminated());
    }
}
