//! Where am I, and which Trial: the Kubernetes client, the own pod, and the Katib Trial that owns it.
//!
//! The client comes from the in-cluster service account or a kubeconfig (as `kube::Client::try_default`, which
//! honours `KUBECONFIG`), with every answer's body bounded ([`bounded`]). The pod is named by `POD_NAME` / `POD_NAMESPACE` (the downward API), the namespace
//! falling back to the service-account namespace file. The Trial is, in order: `--trial`, `KATIB_TRIAL_NAME`,
//! the pod label `katib.kubeflow.org/trial`, or the end of the pod's controller ownerReferences (Pod → Job →
//! Trial, Pod → TFJob/PyTorchJob → Trial, at most [`MAX_OWNER_DEPTH`] steps). Not finding one is not an error:
//! the caller runs without the Trial status sink and says so once.
//!
//! This module only reads (GET pod, GET owners); it neither patches nor watches. Every request it makes has a
//! timeout ([`REQUEST_TIMEOUT`]): the client's own has none for a response (`kube::Config::read_timeout`), so an
//! API server that accepts and never answers would hold the caller forever.

pub mod bounded;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

/// The service-account namespace file, the namespace's fallback in a pod.
pub const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Katib's pod label naming the Trial.
pub const TRIAL_LABEL: &str = "katib.kubeflow.org/trial";

/// Katib's pod label naming the Experiment.
pub const EXPERIMENT_LABEL: &str = "katib.kubeflow.org/experiment";

/// The names Katib's pod webhook gives the metrics collector container it appends to a trial pod's
/// `containers`: `metrics-logger-and-collector` for the kinds StdOut and File, `metrics-collector` for the others
/// (TensorFlowEvent, PrometheusMetric). Katib's `getSidecarContainerName` (`pkg/webhook/v1beta1/pod/utils.go`),
/// the names from `pkg/metricscollector/v1beta1/common/const.go`. A `Custom` collector keeps the name it is given.
pub const KATIB_COLLECTOR_CONTAINERS: [&str; 2] = ["metrics-logger-and-collector", "metrics-collector"];

/// How long one request to the API server may take (the sidecar's start-up, the Trial-status writes, opening
/// the log and the pod watch).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Owner steps followed from the pod before giving up.
pub const MAX_OWNER_DEPTH: usize = 4;

/// Why Kubernetes could not be reached at all.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no Kubernetes configuration (neither in-cluster nor a kubeconfig)")]
    Config(#[source] kube::Error),
    #[error("cannot read pod {name:?} in namespace {namespace:?} (needs verb get on pods)")]
    Pod {
        name: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read pod {name:?} in namespace {namespace:?}: no answer from the API server within {timeout:?}")]
    PodTimeout { name: String, namespace: String, timeout: Duration },
    #[error("no namespace: set POD_NAMESPACE (downward API) or --namespace")]
    NoNamespace,
}

/// A client from the in-cluster configuration or the kubeconfig, its answers bounded ([`bounded`]).
pub async fn client() -> Result<kube::Client, KubeError> {
    bounded::client().await.map_err(KubeError::Config)
}

/// The own pod's name (when known) and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// `POD_NAME`.
    pub name: Option<String>,
    /// `POD_NAMESPACE`, else the service-account namespace file.
    pub namespace: String,
}

/// The own pod from `env` (the process environment in production) and the namespace file at `sa_file`.
pub fn pod_identity(env: impl Fn(&str) -> Option<String>, sa_file: &Path) -> Result<PodIdentity, KubeError> {
    let nonempty = |s: String| {
        let s = s.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let namespace = env("POD_NAMESPACE")
        .and_then(nonempty)
        .or_else(|| std::fs::read_to_string(sa_file).ok().and_then(nonempty))
        .ok_or(KubeError::NoNamespace)?;
    Ok(PodIdentity { name: env("POD_NAME").and_then(nonempty), namespace })
}

/// Reads the own pod.
pub async fn get_pod(client: &kube::Client, name: &str, namespace: &str) -> Result<Pod, KubeError> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    match tokio::time::timeout(REQUEST_TIMEOUT, api.get(name)).await {
        Ok(pod) => pod.map_err(|source| KubeError::Pod { name: name.into(), namespace: namespace.into(), source }),
        Err(_) => {
            Err(KubeError::PodTimeout { name: name.into(), namespace: namespace.into(), timeout: REQUEST_TIMEOUT })
        }
    }
}

/// The Trial and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTrial {
    /// The Trial's name.
    pub name: String,
    /// Where the name came from: `flag`, `env`, `label` or `owner`.
    pub via: &'static str,
}

/// The Trial named by the flag, `KATIB_TRIAL_NAME` or the pod's label, without any request.
pub fn trial_without_requests(flag: Option<&str>, env: Option<&str>, pod: Option<&Pod>) -> Option<FoundTrial> {
    let found = |name: &str, via| (!name.is_empty()).then(|| FoundTrial { name: name.to_string(), via });
    flag.and_then(|n| found(n, "flag"))
        .or_else(|| env.and_then(|n| found(n, "env")))
        .or_else(|| pod.and_then(|p| pod_label(p, TRIAL_LABEL)).and_then(|n| found(n, "label")))
}

/// A label of the pod.
pub fn pod_label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn controller(owners: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

fn is_trial(owner: &OwnerReference) -> bool {
    owner.kind == "Trial" && owner.api_version.starts_with("kubeflow.org/")
}

/// The resource of an owner reference (plural: the lowercased kind plus `s`, right for Job, TFJob, PyTorchJob,
/// MPIJob, XGBoostJob, PaddleJob and JAXJob).
fn owner_resource(owner: &OwnerReference) -> ApiResource {
    let (group, version) = owner.api_version.split_once('/').unwrap_or(("", &owner.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &owner.kind);
    ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", owner.kind.to_lowercase()))
}

/// Walks the controller ownerReferences from `pod` up to a Trial; `None` when the chain ends elsewhere or an
/// owner cannot be read (said at debug level: not finding a Trial is a normal outcome outside Katib).
pub async fn trial_from_owners(client: &kube::Client, pod: &Pod, namespace: &str) -> Option<String> {
    let mut owner = controller(pod.metadata.owner_references.as_ref())?.clone();
    for _ in 0..MAX_OWNER_DEPTH {
        if is_trial(&owner) {
            return Some(owner.name);
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &owner_resource(&owner));
        let object = match tokio::time::timeout(REQUEST_TIMEOUT, api.get(&owner.name)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                tracing::debug!(kind = %owner.kind, name = %owner.name, error = %e, "cannot read the pod's owner");
                return None;
            }
            Err(_) => {
                tracing::warn!(kind = %owner.kind, name = %owner.name, timeout = ?REQUEST_TIMEOUT, "the pod's owner: no answer from the API server");
                return None;
            }
        };
        owner = controller(object.metadata.owner_references.as_ref())?.clone();
    }
    None
}

/// The Trial: from the flag, the environment, the pod's label, or its owners.
pub async fn find_trial(
    client: &kube::Client,
    flag: Option<&str>,
    env: Option<&str>,
    pod: Option<&Pod>,
    namespace: &str,
) -> Option<FoundTrial> {
    if let Some(found) = trial_without_requests(flag, env, pod) {
        return Some(found);
    }
    let name = trial_from_owners(client, pod?, namespace).await?;
    Some(FoundTrial { name, via: "owner" })
}

#[cfg(test)]
mod tests;
