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

/// The first and the longest wait between two attempts to open the watch.
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// A container's state, as far as reading its log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Not started yet (pulling, creating), or not in the status yet.
    Waiting,
    /// Running; the number is its restart count.
    Running(i32),
    /// Terminated (or the pod is gone): training is over once the log is read.
    Terminated(i32),
}

fn status_of<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let all = status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten());
    all.into_iter().find(|s| s.name == container)
}

/// The state of `container` in `pod`.
pub fn container_state(pod: &Pod, container: &str) -> ContainerState {
    let Some(s) = status_of(pod, container) else { return ContainerState::Waiting };
    match s.state.as_ref() {
        Some(st) if st.running.is_some() => ContainerState::Running(s.restart_count),
        Some(st) if st.terminated.is_some() => ContainerState::Terminated(s.restart_count),
        _ => ContainerState::Waiting,
    }
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
    let params = WatchParams::default().fields(&format!("metadata.name={pod}"));
    let mut backoff = BACKOFF;
    loop {
        let stream = match api.watch(&params, &version).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %pod, "watching the pod failed (needs verb watch on pods); retrying");
                tokio::time::sleep(backoff.pause()).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => {
                    backoff.reset();
                    version = p.metadata.resource_version.clone().unwrap_or_default();
                    tx.send_replace(container_state(&p, &container));
                }
                Ok(WatchEvent::Deleted(_)) => {
                    tx.send_replace(ContainerState::Terminated(i32::MAX));
                    return;
                }
                Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                Ok(WatchEvent::Error(e)) => {
                    // 410 Gone: the version is too old; re-read the pod.
                    tracing::debug!(code = e.code, "pod watch error");
                    match api.get(&pod).await {
                        Ok(p) => {
                            version = p.metadata.resource_version.clone().unwrap_or_default();
                            tx.send_replace(container_state(&p, &container));
                        }
                        Err(_) => version = "0".into(),
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
                "spec": {"containers": [{"name": "trialtail"}, {"name": "train"}]},
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
        assert_eq!(container_state(&done, "train"), ContainerState::Terminated(0));
    }
}
