//! The manifests under `manifests/`, read as Kubernetes reads them.
//!
//! Every YAML document parses into its typed object – k8s-openapi for built-in kinds, the strict structs below
//! for cert-manager, the Prometheus Operator, Katib and kustomize – and serializes back to the same tree, so a
//! misspelt or misplaced field fails here instead of on a cluster; a kind this file does not know fails too.
//! kustomize itself renders the base, the default install, every overlay and every component on the base (a
//! `kustomize` on PATH or in `KUSTOMIZE`, else `kubectl kustomize`; `.ci/run` builds kustomize v5.5.0 with Go
//! where kubectl is missing):
//! what it renders is typed again, and the install's objects must agree with each other in each rendering
//! (names, selectors, ports, the certificate's Secret, DNS names and RBAC), and every trialtail `args` list in
//! them must be accepted by the built binary with `--check-config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, ResourceRequirements, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::root;

/// Where the webhook Deployment mounts its serving certificate's Secret.
const TLS_MOUNT: &str = "/etc/trialtail/tls";
/// The namespace the kustomization installs into.
const NAMESPACE: &str = "trialtail-system";
/// The name the webhook gives the injected sidecar's Prometheus port.
const SIDECAR_PORT: &str = "trialtail-prom";
/// The label the webhook puts on the pods it injected.
const INJECTED_LABEL: &str = "trialtail.io/injected";
/// trialtail's image, any tag.
const IMAGE: &str = "ghcr.io/trialtail/trialtail:";
/// The plain Prometheus rules file, relative to `manifests/`.
const RULES_FILE: &str = "components/monitoring/trialtail-rules.yaml";
/// The Grafana dashboard, relative to `manifests/`.
const DASHBOARD_FILE: &str = "components/monitoring/trialtail-dashboard.json";

/// A custom resource: the usual envelope around a spec.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Custom<S> {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: S,
}

/// cert-manager `Certificate` (the fields used here).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CertificateSpec {
    secret_name: String,
    dns_names: Vec<String>,
    issuer_ref: IssuerRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<PrivateKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renew_before: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssuerRef {
    kind: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrivateKey {
    algorithm: String,
    size: u32,
    rotation_policy: String,
}

/// cert-manager `Issuer`: self-signed only.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssuerSpec {
    self_signed: SelfSigned,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SelfSigned {}

/// Prometheus Operator `PodMonitor`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodMonitorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace_selector: Option<NamespaceSelector>,
    selector: LabelSelector,
    pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NamespaceSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    any: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    match_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodMetricsEndpoint {
    port: String,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    honor_labels: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    relabelings: Vec<RelabelConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    metric_relabelings: Vec<RelabelConfig>,
}

/// Prometheus Operator `RelabelConfig`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RelabelConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    source_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
}

/// Katib `Experiment` v1beta1 (the fields used here).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExperimentSpec {
    objective: Objective,
    algorithm: Algorithm,
    parallel_trial_count: u32,
    max_trial_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_failed_trial_count: Option<u32>,
    metrics_collector_spec: MetricsCollectorSpec,
    parameters: Vec<Parameter>,
    trial_template: TrialTemplate,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Objective {
    #[serde(rename = "type")]
    kind: String,
    goal: f64,
    objective_metric_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    additional_metric_names: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Algorithm {
    algorithm_name: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricsCollectorSpec {
    collector: Collector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<MetricsSource>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricsSource {
    filter: MetricsFilter,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricsFilter {
    metrics_format: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Collector {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_collector: Option<Container>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Parameter {
    name: String,
    parameter_type: String,
    feasible_space: FeasibleSpace,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FeasibleSpace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    list: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TrialTemplate {
    primary_container_name: String,
    trial_parameters: Vec<TrialParameter>,
    trial_spec: Job,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TrialParameter {
    name: String,
    reference: String,
}

/// The fragment of Katib's `katib-config.yaml` that `manifests/katib/` holds (no apiVersion or kind: it is
/// merged into the ConfigMap's document, not applied).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KatibConfigFragment {
    runtime: KatibRuntime,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KatibRuntime {
    metrics_collectors: Vec<KatibCollector>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KatibCollector {
    kind: String,
    image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resources: Option<ResourceRequirements>,
}

/// `kustomization.yaml`: a Kustomization or a Component (the fields used here).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Kustomization {
    api_version: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    labels: Vec<KustomizeLabels>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    components: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    patches: Vec<KustomizePatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    config_map_generator: Vec<ConfigMapGenerator>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KustomizePatch {
    target: PatchTarget,
    patch: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    version: String,
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigMapGenerator {
    name: String,
    namespace: String,
    files: Vec<String>,
    options: GeneratorOptions,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GeneratorOptions {
    disable_name_suffix_hash: bool,
    labels: BTreeMap<String, String>,
}

/// A Prometheus rules file (`groups:`), and the spec of a Prometheus Operator `PrometheusRule`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RuleGroups {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KustomizeLabels {
    pairs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    include_selectors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    include_templates: Option<bool>,
}

/// One YAML document, typed.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Object {
    Deployment(Deployment),
    Service(Service),
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
    MutatingWebhookConfiguration(MutatingWebhookConfiguration),
    Job(Job),
    ConfigMap(ConfigMap),
    Certificate(Custom<CertificateSpec>),
    Issuer(Custom<IssuerSpec>),
    PodMonitor(Custom<PodMonitorSpec>),
    PrometheusRule(Custom<RuleGroups>),
    Experiment(Custom<ExperimentSpec>),
    Kustomization(Kustomization),
    KatibConfig(KatibConfigFragment),
    Rules(RuleGroups),
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::Deployment(_) => "Deployment",
            Object::Service(_) => "Service",
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::Role(_) => "Role",
            Object::RoleBinding(_) => "RoleBinding",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::MutatingWebhookConfiguration(_) => "MutatingWebhookConfiguration",
            Object::Job(_) => "Job",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Certificate(_) => "Certificate",
            Object::Issuer(_) => "Issuer",
            Object::PodMonitor(_) => "PodMonitor",
            Object::PrometheusRule(_) => "PrometheusRule",
            Object::Experiment(_) => "Experiment",
            Object::Kustomization(_) => "Kustomization",
            Object::KatibConfig(_) => "KatibConfig",
            Object::Rules(_) => "Rules",
        }
    }
}

/// A document and the file it came from (relative to `manifests/`).
#[derive(Debug)]
struct Doc {
    file: String,
    object: Object,
}

fn manifests_dir() -> PathBuf {
    root().join("manifests")
}

/// Every `*.yaml` / `*.yml` below `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The first place where `typed` (the document after a round trip through its type) differs from `raw`. An empty
/// object the type always writes (a `metadata: {}`) counts as absent.
fn difference(raw: &Value, typed: &Value, at: &str) -> Option<String> {
    match (raw, typed) {
        (Value::Object(r), Value::Object(t)) => {
            for (k, v) in r {
                match t.get(k) {
                    None => return Some(format!("{at}.{k}: unknown to the type (misspelt or misplaced?)")),
                    Some(tv) => {
                        if let Some(d) = difference(v, tv, &format!("{at}.{k}")) {
                            return Some(d);
                        }
                    }
                }
            }
            let added = t.iter().find(|(k, v)| !r.contains_key(*k) && **v != Value::Object(Default::default()));
            added.map(|(k, v)| format!("{at}.{k}: added by the type as {v}"))
        }
        (Value::Array(r), Value::Array(t)) if r.len() == t.len() => {
            r.iter().zip(t).enumerate().find_map(|(i, (r, t))| difference(r, t, &format!("{at}[{i}]")))
        }
        _ if raw == typed => None,
        _ => Some(format!("{at}: {raw} reads back as {typed}")),
    }
}

/// `value` as a `T`, which must read every field of it.
fn strict<T: DeserializeOwned + Serialize>(file: &str, value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    if let Some(d) = difference(value, &back, "") {
        panic!("{file}: {d}");
    }
    typed
}

/// The document as the object its apiVersion and kind name; the katib-config fragment has neither.
fn typed(file: &str, value: &Value) -> Object {
    let field = |k: &str| value.get(k).and_then(Value::as_str);
    match (field("apiVersion"), field("kind")) {
        (Some("apps/v1"), Some("Deployment")) => Object::Deployment(strict(file, value)),
        (Some("v1"), Some("Service")) => Object::Service(strict(file, value)),
        (Some("v1"), Some("Namespace")) => Object::Namespace(strict(file, value)),
        (Some("v1"), Some("ServiceAccount")) => Object::ServiceAccount(strict(file, value)),
        (Some("v1"), Some("ConfigMap")) => Object::ConfigMap(strict(file, value)),
        (Some("rbac.authorization.k8s.io/v1"), Some("Role")) => Object::Role(strict(file, value)),
        (Some("rbac.authorization.k8s.io/v1"), Some("RoleBinding")) => Object::RoleBinding(strict(file, value)),
        (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => Object::ClusterRole(strict(file, value)),
        (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
            Object::ClusterRoleBinding(strict(file, value))
        }
        (Some("policy/v1"), Some("PodDisruptionBudget")) => Object::PodDisruptionBudget(strict(file, value)),
        (Some("networking.k8s.io/v1"), Some("NetworkPolicy")) => Object::NetworkPolicy(strict(file, value)),
        (Some("admissionregistration.k8s.io/v1"), Some("MutatingWebhookConfiguration")) => {
            Object::MutatingWebhookConfiguration(strict(file, value))
        }
        (Some("batch/v1"), Some("Job")) => Object::Job(strict(file, value)),
        (Some("cert-manager.io/v1"), Some("Certificate")) => Object::Certificate(strict(file, value)),
        (Some("cert-manager.io/v1"), Some("Issuer")) => Object::Issuer(strict(file, value)),
        (Some("monitoring.coreos.com/v1"), Some("PodMonitor")) => Object::PodMonitor(strict(file, value)),
        (Some("monitoring.coreos.com/v1"), Some("PrometheusRule")) => Object::PrometheusRule(strict(file, value)),
        (Some("kubeflow.org/v1beta1"), Some("Experiment")) => Object::Experiment(strict(file, value)),
        (Some("kustomize.config.k8s.io/v1beta1"), Some("Kustomization"))
        | (Some("kustomize.config.k8s.io/v1alpha1"), Some("Component")) => Object::Kustomization(strict(file, value)),
        (None, None) if file == "katib/katib-config-patch.yaml" => Object::KatibConfig(strict(file, value)),
        (None, None) if file == RULES_FILE => Object::Rules(strict(file, value)),
        other => panic!("{file}: a document of unknown kind {other:?}"),
    }
}

/// Every document under `manifests/`, typed.
fn documents() -> Vec<Doc> {
    let dir = manifests_dir();
    let mut docs = Vec::new();
    for path in yaml_files(&dir) {
        let file = path.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let values: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!values.is_empty(), "{file}: no YAML document");
        docs.extend(values.iter().map(|v| Doc { file: file.clone(), object: typed(&file, v) }));
    }
    docs
}

/// Whether a file (relative to `manifests/`) is one of the base's.
fn in_base(file: &str) -> bool {
    file.starts_with("base/")
}

/// The one object of a kind in the files `$in` accepts (default: the base's).
macro_rules! one {
    ($docs:expr, $kind:ident) => {
        one!($docs, $kind, in_base)
    };
    ($docs:expr, $kind:ident, $in:expr) => {{
        let found: Vec<_> = $docs
            .iter()
            .filter(|d| ($in)(d.file.as_str()))
            .filter_map(|d| match &d.object {
                Object::$kind(o) => Some(o),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "one {}", stringify!($kind));
        found[0]
    }};
}

/// Any file: for rendered documents.
fn anywhere(_: &str) -> bool {
    true
}

/// How to run kustomize: `$KUSTOMIZE`, else `kustomize` on PATH (both `… build DIR`), else `kubectl kustomize
/// DIR`; `None` (after saying so) when there is none outside CI.
///
/// # Panics
/// When there is none and `CI` is set.
fn kustomize() -> Option<Vec<String>> {
    if let Some(k) = std::env::var_os("KUSTOMIZE") {
        return Some(vec![k.to_string_lossy().into_owned(), "build".into()]);
    }
    if let Some(k) = crate::support::on_path("kustomize") {
        return Some(vec![k.display().to_string(), "build".into()]);
    }
    if let Some(k) = crate::support::on_path("kubectl") {
        return Some(vec![k.display().to_string(), "kustomize".into()]);
    }
    let hint = "go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0, or set KUSTOMIZE";
    assert!(std::env::var_os("CI").is_none(), "no kustomize and CI is set: these tests must run in CI ({hint})");
    eprintln!("SKIPPED: no kustomize or kubectl ({hint})");
    None
}

/// What kustomize renders from `dir`, every document typed.
fn render_dir(kustomize: &[String], dir: &Path, name: &str) -> Vec<Doc> {
    let out = Command::new(&kustomize[0]).args(&kustomize[1..]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{kustomize:?} {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let values: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    values.iter().map(|v| Doc { file: format!("render of {name}"), object: typed(name, v) }).collect()
}

/// Renders a kustomization of `resources` and `components` (paths below `manifests/`), written into a temporary
/// directory beside a link to `manifests/`: kustomize takes no absolute paths.
fn render_composed(kustomize: &[String], resources: &[&str], components: &[&str]) -> Vec<Doc> {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(manifests_dir(), dir.path().join("m")).unwrap();
    let list = |items: &[&str]| items.iter().map(|i| format!("  - m/{i}\n")).collect::<String>();
    let text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{}components:\n{}",
        list(resources),
        list(components)
    );
    std::fs::write(dir.path().join("kustomization.yaml"), text).unwrap();
    render_dir(kustomize, dir.path(), &format!("{resources:?} + {components:?}"))
}

/// The components under `manifests/components/`.
fn component_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(manifests_dir().join("components"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// An object's kind, namespace, name and labels, whatever its type.
fn identity(o: &Object) -> (&'static str, Option<String>, Option<String>, BTreeMap<String, String>) {
    let meta: &ObjectMeta = match o {
        Object::Deployment(x) => &x.metadata,
        Object::Service(x) => &x.metadata,
        Object::Namespace(x) => &x.metadata,
        Object::ServiceAccount(x) => &x.metadata,
        Object::Role(x) => &x.metadata,
        Object::RoleBinding(x) => &x.metadata,
        Object::ClusterRole(x) => &x.metadata,
        Object::ClusterRoleBinding(x) => &x.metadata,
        Object::PodDisruptionBudget(x) => &x.metadata,
        Object::NetworkPolicy(x) => &x.metadata,
        Object::MutatingWebhookConfiguration(x) => &x.metadata,
        Object::Job(x) => &x.metadata,
        Object::ConfigMap(x) => &x.metadata,
        Object::Certificate(x) => &x.metadata,
        Object::Issuer(x) => &x.metadata,
        Object::PodMonitor(x) => &x.metadata,
        Object::PrometheusRule(x) => &x.metadata,
        Object::Experiment(x) => &x.metadata,
        Object::Kustomization(_) | Object::KatibConfig(_) | Object::Rules(_) => panic!("{o:?} is not an object"),
    };
    (o.kind(), meta.namespace.clone(), meta.name.clone(), meta.labels.clone().unwrap_or_default())
}

/// Whether an object of `kind` lives in a namespace.
fn namespaced(kind: &str) -> bool {
    !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "MutatingWebhookConfiguration")
}

/// Whether `rules` allow `verb` on `resource` of `group` (named `name` when given).
fn grants(rules: &[PolicyRule], group: &str, resource: &str, name: Option<&str>, verb: &str) -> bool {
    rules.iter().any(|r| {
        let has = |list: &Option<Vec<String>>, x: &str| list.iter().flatten().any(|v| v == x);
        let names = r.resource_names.as_deref().unwrap_or_default();
        has(&r.api_groups, group)
            && has(&r.resources, resource)
            && r.verbs.iter().any(|v| v == verb)
            && (names.is_empty() || name.is_some_and(|n| names.iter().any(|x| x == n)))
    })
}

/// No wildcard anywhere in `rules`.
fn no_wildcards(rules: &[PolicyRule]) -> bool {
    rules.iter().all(|r| {
        let lists = [&r.api_groups, &r.resources, &r.resource_names];
        !r.verbs.iter().any(|v| v == "*") && lists.iter().all(|l| l.iter().flatten().all(|v| v != "*"))
    })
}

/// Whether `selector` selects an object with `labels` (matchLabels and the four operators).
pub(crate) fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let exact = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown operator {other}"),
        }
    });
    exact && expressions
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().unwrap()
}

fn pod_labels(d: &Deployment) -> &BTreeMap<String, String> {
    d.spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap()
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} in {args:?}"));
    &args[at + 1]
}

/// The container port a probe or a Service names, by number or by name.
fn resolve_port(c: &Container, port: &IntOrString) -> i32 {
    let ports = c.ports.as_deref().unwrap_or_default();
    let found = match port {
        IntOrString::Int(n) => ports.iter().find(|p| p.container_port == *n),
        IntOrString::String(name) => ports.iter().find(|p| p.name.as_deref() == Some(name.as_str())),
    };
    found.unwrap_or_else(|| panic!("container {} has no port {port:?}", c.name)).container_port
}

/// The port of a `:PORT` listen argument.
fn listen_port(addr: &str) -> i32 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn every_manifest_document_parses_into_its_kind() {
    let docs = documents();
    let files: std::collections::BTreeSet<&str> = docs.iter().map(|d| d.file.as_str()).collect();
    for expected in [
        "kustomization.yaml",
        "base/kustomization.yaml",
        "rbac.yaml",
        RULES_FILE,
        "examples/native-sidecar-job.yaml",
        "examples/katib-push-experiment.yaml",
        "katib/katib-config-patch.yaml",
    ] {
        assert!(files.contains(expected), "{expected} was read: {files:?}");
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &docs {
        *kinds.entry(d.object.kind()).or_default() += 1;
    }
    let expected = [
        ("Certificate", 1),
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 1),
        ("Deployment", 1),
        ("Experiment", 2),
        ("Issuer", 1),
        ("Job", 1),
        ("KatibConfig", 1),
        // manifests/, base, 4 components, 1 overlay.
        ("Kustomization", 7),
        ("MutatingWebhookConfiguration", 1),
        ("Namespace", 1),
        // The webhook's (base) and the sidecars' (an example).
        ("NetworkPolicy", 2),
        ("PodDisruptionBudget", 1),
        ("PodMonitor", 2),
        ("PrometheusRule", 1),
        ("Role", 1),
        ("RoleBinding", 3),
        ("Rules", 1),
        ("Service", 1),
        ("ServiceAccount", 3),
    ];
    assert_eq!(kinds, BTreeMap::from(expected), "the manifests' kinds");
}

#[test]
fn a_misspelt_field_or_an_unknown_kind_is_caught() {
    let misspelt: Value = serde_saphyr::from_str(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\nautomountServiceAcountToken: false\n",
    )
    .unwrap();
    let caught = std::panic::catch_unwind(|| typed("test.yaml", &misspelt)).unwrap_err();
    assert!(caught.downcast_ref::<String>().unwrap().contains(".automountServiceAcountToken: unknown"));
    let misplaced: Value =
        serde_saphyr::from_str("apiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata: {name: a}\nspec: {ca: {}}\n")
            .unwrap();
    assert!(std::panic::catch_unwind(|| typed("test.yaml", &misplaced)).is_err());
    let unknown: Value = serde_saphyr::from_str("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n").unwrap();
    assert!(std::panic::catch_unwind(|| typed("test.yaml", &unknown)).is_err());
}

#[test]
fn every_manifest_file_belongs_to_exactly_one_kustomization_and_each_lists_only_files_that_exist() {
    let dir = manifests_dir();
    let mut listed: BTreeMap<String, usize> = BTreeMap::new();
    for doc in documents() {
        let Object::Kustomization(k) = &doc.object else { continue };
        let here = dir.join(&doc.file).parent().unwrap().to_path_buf();
        let generated = k.config_map_generator.iter().flat_map(|g| &g.files);
        for entry in k.resources.iter().chain(&k.components).chain(generated) {
            let target = here.join(entry);
            assert!(target.exists(), "{}: {entry} does not exist", doc.file);
            if target.is_file() {
                let file = target.canonicalize().unwrap().strip_prefix(dir.canonicalize().unwrap()).unwrap().to_owned();
                *listed.entry(file.to_string_lossy().into_owned()).or_default() += 1;
            } else {
                assert!(target.join("kustomization.yaml").is_file(), "{}: {entry} is no kustomization", doc.file);
            }
        }
        if k.kind == "Component" {
            assert_eq!(k.api_version, "kustomize.config.k8s.io/v1alpha1", "{}", doc.file);
        }
    }
    let mut files: Vec<String> = yaml_files(&dir)
        .iter()
        .chain(&[dir.join(DASHBOARD_FILE)])
        .map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
        // rbac.yaml goes into a training namespace, katib/ into Katib's ConfigMap, examples/ are examples, and
        // the plain rules file is for a Prometheus without the Operator.
        .filter(|f| {
            !f.ends_with("kustomization.yaml")
                && f != "rbac.yaml"
                && f != RULES_FILE
                && !f.starts_with("katib/")
                && !f.starts_with("examples/")
        })
        .collect();
    files.sort();
    let once: Vec<String> = listed.iter().filter(|(_, n)| **n == 1).map(|(f, _)| f.clone()).collect();
    assert_eq!(once, files, "files listed once by some kustomization, against the files there are: {listed:?}");
}

/// The renders every test below checks: the base, the install (`manifests/`), every overlay, and the base with
/// each component; `None` when there is no kustomize outside CI.
fn renders() -> Option<Vec<(String, Vec<Doc>)>> {
    let k = kustomize()?;
    let dir = manifests_dir();
    let mut all = vec![
        ("base".to_string(), render_dir(&k, &dir.join("base"), "base")),
        ("the install".to_string(), render_dir(&k, &dir, "manifests/")),
        ("overlays/cert-manager".to_string(), render_dir(&k, &dir.join("overlays/cert-manager"), "cert-manager")),
    ];
    for c in component_names() {
        let component = format!("components/{c}");
        all.push((format!("base + {component}"), render_composed(&k, &["base"], &[component.as_str()])));
    }
    let everything = ["components/self-managed-cert", "components/prometheus-operator", "components/monitoring"];
    all.push(("base + every optional component".to_string(), render_composed(&k, &["base"], &everything)));
    Some(all)
}

#[test]
fn kustomize_renders_the_base_the_install_every_overlay_and_every_component() {
    let Some(renders) = renders() else { return };
    let base_docs = documents();
    let base: Vec<_> = renders[0].1.iter().map(|d| identity(&d.object)).collect();
    for (name, docs) in &renders {
        let mut seen = std::collections::BTreeSet::new();
        for d in docs {
            let (kind, namespace, object, labels) = identity(&d.object);
            assert!(seen.insert((kind, namespace.clone(), object.clone())), "{name}: {kind} {object:?} twice");
            assert_eq!(labels.get("app.kubernetes.io/name").map(String::as_str), Some("trialtail"), "{name}: {kind}");
            let expected = namespaced(kind).then_some(NAMESPACE);
            assert_eq!(namespace.as_deref(), expected, "{name}: {kind} {object:?}");
        }
        // Every rendering holds the whole base, selectors as written (a common label must not change them).
        for b in &base {
            assert!(docs.iter().any(|d| identity(&d.object).0 == b.0 && identity(&d.object).2 == b.2), "{name}: {b:?}");
        }
        let deployment = one!(docs, Deployment, anywhere);
        assert_eq!(deployment.spec.selector, one!(base_docs, Deployment).spec.selector, "{name}: selectors");
        assert_eq!(pod_labels(deployment), pod_labels(one!(base_docs, Deployment)), "{name}: pod labels");
    }
    // Only the optional components bring CRDs: the install and its base need nothing but Kubernetes.
    let crds = |docs: &[Doc]| {
        docs.iter()
            .filter(|d| {
                matches!(
                    d.object,
                    Object::Certificate(_) | Object::Issuer(_) | Object::PodMonitor(_) | Object::PrometheusRule(_)
                )
            })
            .count()
    };
    assert_eq!(crds(&renders[0].1), 0, "the base");
    assert_eq!(crds(&renders[1].1), 0, "the install");
}

/// The serving certificate a rendering uses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cert {
    /// components/self-managed-cert.
    SelfManaged,
    /// components/cert-manager.
    CertManager,
}

/// The webhook's objects in `docs` agree with each other, with the certificate from `cert`.
fn check_webhook_objects(name: &str, docs: &[Doc], cert: Cert) {
    let deployment = one!(docs, Deployment, anywhere);
    let service = one!(docs, Service, anywhere);
    let pdb = one!(docs, PodDisruptionBudget, anywhere);
    let config = one!(docs, MutatingWebhookConfiguration, anywhere);
    let account = one!(docs, ServiceAccount, anywhere);

    let spec = &deployment.spec;
    let pods = pod_labels(deployment);
    assert!(selects(&spec.selector, pods), "{name}: the Deployment selects its own pods");
    let pdb_spec = pdb.spec.as_ref().unwrap();
    assert!(selects(pdb_spec.selector.as_ref().unwrap(), pods), "{name}: the PDB selects the webhook pods");
    assert_eq!(pdb_spec.min_available, Some(IntOrString::Int(1)));
    let service_spec = service.spec.as_ref().unwrap();
    let service_selector = service_spec.selector.as_ref().unwrap();
    assert!(service_selector.iter().all(|(k, v)| pods.get(k) == Some(v)), "{name}: the Service selects the pods");

    let pod = pod_spec(deployment);
    let container = &pod.containers[0];
    let args = container.args.as_deref().unwrap();
    assert_eq!(flag_value(args, "--log-format"), "json", "{name}: cluster logs are JSON lines");
    let https = &service_spec.ports.as_ref().unwrap()[0];
    assert_eq!(https.port, 443);
    let target = resolve_port(container, https.target_port.as_ref().unwrap());
    assert_eq!(target, listen_port(flag_value(args, "--listen")), "{name}: the Service reaches --listen");

    let service_name = service.metadata.name.as_deref().unwrap();
    let service_ns = service.metadata.namespace.as_deref().unwrap();
    for hook in &config.webhooks.clone().unwrap() {
        let to = hook.client_config.service.as_ref().unwrap();
        assert_eq!((to.name.as_str(), to.namespace.as_str()), (service_name, service_ns), "{}", hook.name);
        assert_eq!(to.port.unwrap_or(443), https.port, "{}", hook.name);
        assert_eq!(to.path.as_deref(), Some("/mutate"), "{}", hook.name);
        assert!(hook.client_config.ca_bundle.is_none(), "{name}: the caBundle is filled in on the cluster");
    }
    let dns = format!("{service_name}.{service_ns}.svc");

    // The probes ask the --metrics-listen port, which the container declares.
    let metrics = listen_port(flag_value(args, "--metrics-listen"));
    for (probe, path) in [(&container.liveness_probe, "/healthz"), (&container.readiness_probe, "/readyz")] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(resolve_port(container, &get.port), metrics, "{path}");
    }
    assert_eq!(flag_value(args, "--image"), container.image.as_deref().unwrap(), "the webhook injects its own image");
    assert_eq!(pod.service_account_name.as_deref(), account.metadata.name.as_deref());
    let account_name = account.metadata.name.as_deref().unwrap();
    let annotations = config.metadata.annotations.clone().unwrap_or_default();

    match cert {
        Cert::CertManager => {
            let certificate = one!(docs, Certificate, anywhere);
            let issuer = one!(docs, Issuer, anywhere);
            assert!(certificate.spec.dns_names.contains(&dns), "the certificate is valid for {dns}");
            let cert_ns = certificate.metadata.namespace.as_deref().unwrap();
            let cert_name = certificate.metadata.name.as_deref().unwrap();
            assert_eq!(annotations["cert-manager.io/inject-ca-from"], format!("{cert_ns}/{cert_name}"));
            assert_eq!(certificate.spec.issuer_ref.kind, "Issuer");
            assert_eq!(Some(certificate.spec.issuer_ref.name.as_str()), issuer.metadata.name.as_deref());
            // The Deployment mounts the certificate's Secret where --tls-cert and --tls-key point.
            let secret = &certificate.spec.secret_name;
            let volume = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_ref()) == Some(secret))
                .expect("a volume of the certificate's Secret");
            let mount = container.volume_mounts.iter().flatten().find(|m| m.name == volume.name).expect("mounted");
            assert_eq!(mount.mount_path, TLS_MOUNT);
            for flag in ["--tls-cert", "--tls-key"] {
                assert!(flag_value(args, flag).starts_with(&format!("{}/", mount.mount_path)), "{flag} in the Secret");
            }
            assert!(!args.iter().any(|a| a == "--cert-secret"));
            assert_eq!(account.automount_service_account_token, Some(false), "the webhook needs no API token");
            assert_eq!(pod.automount_service_account_token, Some(false));
            assert!(docs.iter().all(|d| !matches!(
                d.object,
                Object::Role(_) | Object::RoleBinding(_) | Object::ClusterRoleBinding(_)
            )));
        }
        Cert::SelfManaged => {
            assert!(docs.iter().all(|d| !matches!(d.object, Object::Certificate(_) | Object::Issuer(_))));
            assert!(annotations.is_empty(), "{name}: no CA injector annotation: {annotations:?}");
            assert!(!args.iter().any(|a| a.starts_with("--tls-")), "{name}: {args:?}");
            let secret = flag_value(args, "--cert-secret");
            // The defaults of --service and --webhook-configuration name the Service and the configuration.
            assert!(!args.iter().any(|a| a == "--service" || a == "--webhook-configuration"), "{args:?}");
            assert_eq!(service_name, "trialtail-webhook");
            assert_eq!(config.metadata.name.as_deref(), Some("trialtail"));
            assert_eq!(pod.automount_service_account_token, Some(true), "{name}: the webhook talks to the API");
            let env = container.env.as_deref().unwrap_or_default();
            let from_field = |var: &str| {
                env.iter()
                    .find(|e| e.name == var)
                    .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
                    .map(|f| f.field_path.clone())
            };
            assert_eq!(from_field("POD_NAMESPACE").as_deref(), Some("metadata.namespace"));
            // Exactly the RBAC it needs, bound to its service account.
            let role = one!(docs, Role, anywhere);
            let binding = one!(docs, RoleBinding, anywhere);
            let role_rules = role.rules.as_deref().unwrap();
            assert!(grants(role_rules, "", "secrets", Some(secret), "get"));
            assert!(grants(role_rules, "", "secrets", Some(secret), "update"));
            assert!(grants(role_rules, "", "secrets", None, "create"), "create cannot be limited to a name");
            assert!(!grants(role_rules, "", "secrets", Some("another"), "get"), "no other Secret");
            assert!(!grants(role_rules, "", "secrets", Some(secret), "list") && no_wildcards(role_rules));
            assert_eq!(
                (binding.role_ref.kind.as_str(), Some(&binding.role_ref.name)),
                ("Role", role.metadata.name.as_ref())
            );
            let subject = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
                subjects
                    .iter()
                    .flatten()
                    .map(|s| (s.kind.clone(), s.name.clone(), s.namespace.clone()))
                    .collect::<Vec<_>>()
            };
            let ours = vec![("ServiceAccount".to_string(), account_name.to_string(), Some(NAMESPACE.to_string()))];
            assert_eq!(subject(&binding.subjects), ours);
            let bundle_binding = one!(docs, ClusterRoleBinding, anywhere);
            let bundle_role = docs
                .iter()
                .find_map(|d| match &d.object {
                    Object::ClusterRole(r) if r.metadata.name.as_ref() == Some(&bundle_binding.role_ref.name) => {
                        Some(r)
                    }
                    _ => None,
                })
                .expect("the ClusterRole the ClusterRoleBinding names");
            let rules = bundle_role.rules.as_deref().unwrap();
            let mwc = config.metadata.name.as_deref();
            let group = "admissionregistration.k8s.io";
            assert!(grants(rules, group, "mutatingwebhookconfigurations", mwc, "get"));
            assert!(grants(rules, group, "mutatingwebhookconfigurations", mwc, "patch"));
            assert!(!grants(rules, group, "mutatingwebhookconfigurations", Some("another"), "patch"));
            assert!(no_wildcards(rules) && rules.len() == 1, "{rules:?}");
            assert_eq!(subject(&bundle_binding.subjects), ours);
        }
    }
}

#[test]
fn the_webhook_objects_refer_to_each_other_with_either_certificate() {
    let Some(renders) = renders() else { return };
    let find = |name: &str| &renders.iter().find(|(n, _)| n == name).unwrap().1;
    check_webhook_objects("the install", find("the install"), Cert::SelfManaged);
    check_webhook_objects("overlays/cert-manager", find("overlays/cert-manager"), Cert::CertManager);
    check_webhook_objects("base + components/cert-manager", find("base + components/cert-manager"), Cert::CertManager);
    check_webhook_objects("every optional component", find("base + every optional component"), Cert::SelfManaged);
}

#[test]
fn the_monitoring_component_ships_the_rules_file_as_a_prometheusrule_and_the_dashboard_as_a_configmap() {
    let docs = documents();
    let rule = one!(docs, PrometheusRule, |f: &str| f.starts_with("components/monitoring/"));
    let plain = one!(docs, Rules, |f: &str| f == RULES_FILE);
    assert_eq!(rule.spec, *plain, "prometheusrule.yaml and {RULES_FILE} hold the same groups");
    let Some(renders) = renders() else { return };
    let monitoring = &renders.iter().find(|(n, _)| n == "base + components/monitoring").unwrap().1;
    let map = one!(monitoring, ConfigMap, anywhere);
    assert_eq!(map.metadata.name.as_deref(), Some("trialtail-dashboard"), "no hash suffix: a stable name");
    assert_eq!(map.metadata.labels.as_ref().unwrap()["grafana_dashboard"], "1", "Grafana's sidecar loads it");
    let json = std::fs::read_to_string(manifests_dir().join(DASHBOARD_FILE)).unwrap();
    assert_eq!(map.data.as_ref().unwrap()["trialtail-dashboard.json"], json);
}

#[test]
fn the_sidecar_clusterrole_holds_exactly_its_verbs_and_rbac_yaml_binds_it_for_the_examples() {
    let docs = documents();
    let role = one!(docs, ClusterRole, |f: &str| f == "base/sidecar-clusterrole.yaml");
    let rules = role.rules.as_deref().unwrap();
    let mut granted: Vec<String> = Vec::new();
    for r in rules {
        for (g, res, v) in itertools_product(r) {
            granted.push(format!("{g}/{res} {v}"));
        }
    }
    granted.sort();
    let mut expected: Vec<String> = [
        "/pods get",
        "/pods watch",
        "/pods/log get",
        "batch/jobs get",
        "kubeflow.org/trials get",
        "kubeflow.org/trials/status patch",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        ["tfjobs", "pytorchjobs", "mpijobs", "xgboostjobs", "paddlejobs", "jaxjobs"]
            .map(|k| format!("kubeflow.org/{k} get")),
    )
    .collect();
    expected.sort();
    assert_eq!(granted, expected);
    assert!(rules.iter().all(|r| r.resource_names.is_none()) && no_wildcards(rules));
    let binding = one!(docs, RoleBinding, |f: &str| f == "rbac.yaml");
    assert_eq!(
        (binding.role_ref.kind.as_str(), Some(&binding.role_ref.name)),
        ("ClusterRole", role.metadata.name.as_ref())
    );
}

/// Every (group, resource, verb) a rule grants.
fn itertools_product(r: &PolicyRule) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for g in r.api_groups.iter().flatten() {
        for res in r.resources.iter().flatten() {
            for v in &r.verbs {
                out.push((g.clone(), res.clone(), v.clone()));
            }
        }
    }
    out
}

#[test]
fn the_webhook_pods_run_restricted_and_spread_over_nodes() {
    let docs = documents();
    let deployment = one!(docs, Deployment);
    assert_eq!(deployment.spec.replicas, Some(2));
    let pod = pod_spec(deployment);
    let pods = pod_labels(deployment);
    let pod_sc = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(pod_sc.run_as_user, Some(65532));
    assert_eq!(pod_sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    for c in &pod.containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        assert_eq!(sc.run_as_user, Some(65532), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]), "{}", c.name);
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault", "{}", c.name);
        let resources = c.resources.as_ref().unwrap();
        assert!(resources.requests.is_some() && resources.limits.is_some(), "{}", c.name);
    }
    let spread = pod.topology_spread_constraints.as_deref().unwrap();
    assert!(
        spread
            .iter()
            .any(|t| t.topology_key == "kubernetes.io/hostname" && selects(t.label_selector.as_ref().unwrap(), pods))
    );
    let anti = pod.affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
    let preferred = anti.preferred_during_scheduling_ignored_during_execution.as_deref().unwrap();
    assert!(preferred.iter().any(|w| w.pod_affinity_term.topology_key == "kubernetes.io/hostname"
        && selects(w.pod_affinity_term.label_selector.as_ref().unwrap(), pods)));
}

/// The webhooks the API server calls for a pod with labels `pod` in `namespace`, labelled
/// `trialtail.io/injection: enabled` when `enabled`.
fn hooks_for<'a>(
    hooks: &'a [MutatingWebhook],
    namespace: &str,
    enabled: bool,
    pod: &BTreeMap<String, String>,
) -> Vec<&'a str> {
    let mut ns = labels(&[("kubernetes.io/metadata.name", namespace)]);
    if enabled {
        ns.insert("trialtail.io/injection".into(), "enabled".into());
    }
    hooks
        .iter()
        .filter(|h| h.namespace_selector.as_ref().is_none_or(|s| selects(s, &ns)))
        .filter(|h| h.object_selector.as_ref().is_none_or(|s| selects(s, pod)))
        .map(|h| h.name.as_str())
        .collect()
}

#[test]
fn the_mutating_webhook_sees_every_pod_of_an_enabled_namespace_once_and_never_its_own() {
    let docs = documents();
    let hooks = one!(docs, MutatingWebhookConfiguration).webhooks.clone().unwrap();
    let mut names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), hooks.len(), "webhook names are unique");
    for h in &hooks {
        assert_eq!(h.side_effects, "None", "{}", h.name);
        assert_eq!(h.admission_review_versions, ["v1"], "{}", h.name);
        assert_eq!(h.timeout_seconds, Some(5), "{}", h.name);
        assert_eq!(h.failure_policy.as_deref(), Some("Ignore"), "{}", h.name);
        // Called again after Katib's pod webhook changed the pod, whichever of the two runs first.
        assert_eq!(h.reinvocation_policy.as_deref(), Some("IfNeeded"), "{}", h.name);
        let rules = h.rules.as_deref().unwrap();
        assert_eq!(rules.len(), 1, "{}", h.name);
        let r = &rules[0];
        let strings = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
        assert_eq!(strings(&r.api_groups), [""]);
        assert_eq!(strings(&r.api_versions), ["v1"]);
        assert_eq!(strings(&r.operations), ["CREATE"]);
        assert_eq!(strings(&r.resources), ["pods"]);
    }
    let opted_in = labels(&[("trialtail.io/inject", "true")]);
    let trial = labels(&[("katib.kubeflow.org/trial", "t1")]);
    // A trial pod before Katib's pod webhook labelled it: only the Job controller's labels.
    let unlabelled_trial = labels(&[("batch.kubernetes.io/job-name", "t1"), ("job-name", "t1")]);
    let trial_opted_in = labels(&[("katib.kubeflow.org/trial", "t1"), ("trialtail.io/inject", "true")]);
    let trial_opted_out = labels(&[("katib.kubeflow.org/trial", "t1"), ("trialtail.io/inject", "false")]);
    let other = labels(&[("app", "web"), ("trialtail.io/inject", "yes")]);
    assert_eq!(hooks_for(&hooks, "kubeflow", true, &opted_in), ["inject.trialtail.io"]);
    assert_eq!(hooks_for(&hooks, "kubeflow", true, &trial), ["katib-trials.trialtail.io"]);
    assert_eq!(hooks_for(&hooks, "kubeflow", true, &unlabelled_trial), ["katib-trials.trialtail.io"]);
    assert_eq!(hooks_for(&hooks, "kubeflow", true, &trial_opted_in), ["inject.trialtail.io"], "sent once");
    assert!(hooks_for(&hooks, "kubeflow", true, &trial_opted_out).is_empty());
    // The webhook answers "not selected" for it (`mutate`'s own choice of pods).
    assert_eq!(hooks_for(&hooks, "kubeflow", true, &other), ["katib-trials.trialtail.io"]);
    // Only in namespaces the operator enabled, and never in its own, enabled or not.
    assert!(hooks_for(&hooks, "kubeflow", false, &opted_in).is_empty());
    assert!(hooks_for(&hooks, "kubeflow", false, &trial).is_empty());
    for own in ["kube-system", NAMESPACE] {
        assert!(hooks_for(&hooks, own, true, &opted_in).is_empty(), "{own}");
        assert!(hooks_for(&hooks, own, true, &trial).is_empty(), "{own}");
    }
}

#[test]
fn a_trial_that_already_runs_trialtail_as_katib_custom_collector_is_not_injected_again() {
    let docs = documents();
    let hooks = one!(docs, MutatingWebhookConfiguration).webhooks.clone().unwrap();
    let experiment = one!(docs, Experiment, |file: &str| file == "examples/native-sidecar-job.yaml");
    assert!(experiment.spec.metrics_collector_spec.collector.custom_collector.is_some());
    let template = &experiment.spec.trial_template.trial_spec.spec.as_ref().unwrap().template;
    let mut pod = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    // Katib labels every trial pod with its trial.
    pod.insert("katib.kubeflow.org/trial".into(), "mnist-lr-abc".into());
    assert!(hooks_for(&hooks, "kubeflow-user", true, &pod).is_empty(), "{pod:?}");
}

#[test]
fn the_webhook_podmonitor_scrapes_the_webhook_pods_metrics_port() {
    let docs = documents();
    let monitor = &one!(docs, PodMonitor, |f: &str| f.ends_with("webhook-podmonitor.yaml")).spec;
    let deployment = one!(docs, Deployment);
    assert!(selects(&monitor.selector, pod_labels(deployment)));
    assert!(!selects(&monitor.selector, &labels(&[(INJECTED_LABEL, "true")])), "not the sidecars");
    let container = &pod_spec(deployment).containers[0];
    let endpoint = &monitor.pod_metrics_endpoints[0];
    let port = resolve_port(container, &IntOrString::String(endpoint.port.clone()));
    assert_eq!(port, listen_port(flag_value(container.args.as_deref().unwrap(), "--metrics-listen")));
    assert_eq!(endpoint.path, "/metrics");
}

#[test]
fn the_podmonitor_scrapes_injected_pods_in_every_namespace_on_the_sidecar_port() {
    let docs = documents();
    let monitor = &one!(docs, PodMonitor, |f: &str| f == "components/prometheus-operator/podmonitor.yaml").spec;
    assert_eq!(monitor.namespace_selector.as_ref().unwrap().any, Some(true));
    assert!(selects(&monitor.selector, &labels(&[(INJECTED_LABEL, "true")])));
    assert!(!selects(&monitor.selector, &labels(&[("trialtail.io/inject", "true")])), "injected, not asked for");
    let endpoint = &monitor.pod_metrics_endpoints[..];
    assert_eq!(endpoint.len(), 1);
    assert_eq!((endpoint[0].port.as_str(), endpoint[0].path.as_str()), (SIDECAR_PORT, "/metrics"));
    // Any pod author can set the selected label: what a pod says of itself never wins over its metadata
    // (monitoring.rs scrapes a spoofing sidecar through this PodMonitor with a real Prometheus).
    assert_ne!(endpoint[0].honor_labels, Some(true), "honorLabels lets a pod claim another namespace");
    let from_pod: Vec<(&str, &str)> = endpoint[0]
        .relabelings
        .iter()
        .map(|r| (r.source_labels[0].as_str(), r.target_label.as_deref().unwrap()))
        .collect();
    assert_eq!(
        from_pod,
        [
            ("__meta_kubernetes_pod_label_katib_kubeflow_org_trial", "trial"),
            ("__meta_kubernetes_pod_label_katib_kubeflow_org_experiment", "experiment")
        ]
    );
}

/// The TCP ports a rule opens (a named port resolved through `names`), and whether from anywhere.
fn opened(rule: &NetworkPolicyIngressRule, names: &BTreeMap<String, i32>) -> (Vec<(i32, i32)>, bool) {
    let ports = rule.ports.iter().flatten().filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP");
    let ranges = ports
        .map(|p| {
            let first = match p.port.as_ref().unwrap() {
                IntOrString::Int(n) => *n,
                IntOrString::String(name) => names[name],
            };
            (first, p.end_port.unwrap_or(first))
        })
        .collect();
    (ranges, rule.from.is_none())
}

/// Whether `rule` admits only the namespace `monitoring`.
fn from_monitoring_only(rule: &NetworkPolicyIngressRule) -> bool {
    let from = rule.from.as_deref().unwrap_or_default();
    from.len() == 1
        && from[0].pod_selector.is_none()
        && from[0].ip_block.is_none()
        && from[0].namespace_selector.as_ref().is_some_and(|n| {
            selects(n, &labels(&[("kubernetes.io/metadata.name", "monitoring")]))
                && !selects(n, &labels(&[("kubernetes.io/metadata.name", "team-a")]))
        })
}

#[test]
fn the_webhooks_network_policy_opens_its_https_port_and_its_metrics_to_the_monitoring_namespace_only() {
    let docs = documents();
    let policy = one!(docs, NetworkPolicy).spec.as_ref().unwrap();
    let deployment = one!(docs, Deployment);
    let template = deployment.spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert!(selects(policy.pod_selector.as_ref().unwrap(), &template), "selects the webhook's pods");
    assert_eq!(policy.policy_types.as_deref(), Some(&["Ingress".to_string()][..]));
    let names: BTreeMap<String, i32> = pod_spec(deployment).containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    let rules = policy.ingress.as_deref().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(opened(&rules[0], &names), (vec![(8443, 8443)], true), "the API server's port, from any address");
    assert_eq!(opened(&rules[1], &names).0, [(9479, 9479)]);
    assert!(from_monitoring_only(&rules[1]), "{:?}", rules[1]);
    // The Service sends 443 to the port the policy opens.
    let service = one!(docs, Service);
    let target = service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].target_port.clone();
    assert_eq!(target, Some(IntOrString::String("https".into())));
}

#[test]
fn the_sidecars_network_policy_opens_their_metrics_to_the_monitoring_namespace_only_and_leaves_the_rest() {
    let docs = documents();
    let policy = one!(docs, NetworkPolicy, |f: &str| f == "examples/sidecar-networkpolicy.yaml").spec.as_ref().unwrap();
    assert!(selects(policy.pod_selector.as_ref().unwrap(), &labels(&[(INJECTED_LABEL, "true")])));
    let rules = policy.ingress.as_deref().unwrap();
    let names = BTreeMap::new();
    assert_eq!(opened(&rules[0], &names).0, [(9478, 9478)]);
    assert!(from_monitoring_only(&rules[0]));
    // Every other port of every protocol stays open to anyone: the policy isolates nothing else of the pod.
    let (mut tcp, anyone) = opened(&rules[1], &names);
    tcp.sort();
    assert_eq!((tcp, anyone), (vec![(1, 9477), (9479, 65535)], true));
    for protocol in ["UDP", "SCTP"] {
        let whole = rules[1].ports.iter().flatten().any(|p| {
            p.protocol.as_deref() == Some(protocol) && p.port == Some(IntOrString::Int(1)) && p.end_port == Some(65535)
        });
        assert!(whole, "{protocol}");
    }
}

#[test]
fn the_examples_run_under_a_service_account_bound_to_the_sidecars_verbs() {
    let docs = documents();
    // native-sidecar-job.yaml uses rbac.yaml's account; katib-push-experiment.yaml brings its own. Both are bound
    // to the install's ClusterRole trialtail-sidecar in their namespace.
    for (example, rbac) in [
        ("examples/native-sidecar-job.yaml", "rbac.yaml"),
        ("examples/katib-push-experiment.yaml", "examples/katib-push-experiment.yaml"),
    ] {
        let in_rbac = |file: &str| file == rbac;
        let binding = one!(docs, RoleBinding, in_rbac);
        let account = one!(docs, ServiceAccount, in_rbac);
        assert_eq!(binding.metadata.namespace, account.metadata.namespace, "{rbac}");
        assert_eq!(
            (binding.role_ref.kind.as_str(), binding.role_ref.name.as_str()),
            ("ClusterRole", "trialtail-sidecar")
        );
        let bound: Vec<(&str, Option<&str>)> =
            binding.subjects.iter().flatten().map(|s| (s.name.as_str(), s.namespace.as_deref())).collect();
        let mut specs = Vec::new();
        for d in docs.iter().filter(|d| d.file == example) {
            match &d.object {
                Object::Job(job) => specs.push((job.metadata.namespace.as_deref(), job.spec.as_ref().unwrap())),
                Object::Experiment(e) => specs
                    .push((e.metadata.namespace.as_deref(), e.spec.trial_template.trial_spec.spec.as_ref().unwrap())),
                _ => {}
            }
        }
        assert!(!specs.is_empty(), "{example}");
        for (namespace, job) in specs {
            let account = job.template.spec.as_ref().unwrap().service_account_name.as_deref().unwrap();
            assert!(bound.contains(&(account, namespace)), "{account} in {namespace:?} is bound: {bound:?}");
        }
    }
}

/// `trialtail ARGS --check-config --assume-trial FILE`: its stdout, after checking it exited 0.
fn check_config_with_trial(args: &[String], file: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(args)
        .args(["--check-config", "--assume-trial"])
        .arg(manifests_dir().join(file))
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn the_push_experiment_runs_through_check_config_with_the_trial_katib_would_create() {
    let file = "examples/katib-push-experiment.yaml";
    let docs = documents();
    let experiment = one!(docs, Experiment, |f: &str| f == file);
    assert_eq!(experiment.spec.metrics_collector_spec.collector.kind, "Push");
    // A trial pod as Katib's own pod webhook leaves it for kind Push: its labels and the trial label, no container.
    let template = &experiment.spec.trial_template.trial_spec.spec.as_ref().unwrap().template;
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.labels.get_or_insert_default().insert("katib.kubeflow.org/trial".into(), "mnist-push-abc".into());
    metadata.namespace = experiment.metadata.namespace.clone();
    let pod = Pod { metadata, spec: template.spec.clone(), status: None };
    let mutation = trialtail::webhook::mutate::mutate(&pod, &trialtail::webhook::mutate::Settings::new(IMAGE));
    assert_eq!(mutation.outcome, trialtail::webhook::mutate::Outcome::Injected, "{:?}", mutation.warnings);
    let args = trialtail::webhook::mutate::sidecar_args(&pod).unwrap();
    let summary = check_config_with_trial(&args, file);
    for expected in [
        "container training (the Trial's primaryContainerName)",
        r#"filter "{metricName: ([\\w|-]+), metricValue: ((-?\\d+)(\\.\\d+)?)}"; Katib semantics (from the Trial)"#,
        "accuracy, loss (at most 1000) (from the Trial)",
        "katib:       collector kind Push: rows to katib-db-manager.kubeflow:6789 every 10s and at the end",
        "listen:      0.0.0.0:9478",
    ] {
        assert!(summary.contains(expected), "{expected:?} in\n{summary}");
    }
    // The Custom example: trialtail as Katib's custom collector reports the same way.
    let custom = invocations(&docs).into_iter().find(|i| i.place.contains("customCollector")).unwrap();
    let summary = check_config_with_trial(&custom.args, "examples/native-sidecar-job.yaml");
    assert!(summary.contains("katib:       collector kind Custom: rows to"), "{summary}");
}

#[test]
fn the_katib_config_patch_swaps_the_image_of_the_file_and_tensorflowevent_collector_kinds() {
    let docs = documents();
    let patch = one!(docs, KatibConfig, |file: &str| file.starts_with("katib/"));
    let kinds: Vec<&str> = patch.runtime.metrics_collectors.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["StdOut", "File", "TensorFlowEvent"]);
    assert!(patch.runtime.metrics_collectors.iter().all(|c| c.image.starts_with(IMAGE)));
    assert!(
        patch.runtime.metrics_collectors.iter().all(|c| c.image.ends_with("-dropin")),
        "Katib's collector kinds get the image that runs as root, able to stop a training of any user"
    );
}

/// One stage of the Dockerfile: its name (the last one, the default build, is "default"), what it is built
/// `FROM`, and its `USER`, `ENTRYPOINT` and `LABEL` keys.
#[derive(Debug, Clone, Default)]
struct Stage {
    name: String,
    from: String,
    user: Option<String>,
    entrypoint: Option<String>,
    labels: Vec<String>,
}

/// The Dockerfile's stages, each with what it inherits from the stage it is built `FROM` (user, entrypoint,
/// labels), continuation lines joined.
fn dockerfile_stages() -> Vec<Stage> {
    let text = std::fs::read_to_string(crate::root().join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined.lines().map(str::trim) {
        if let Some(from) = line.strip_prefix("FROM ") {
            let (from, name) = from.split_once(" AS ").map_or((from, "default"), |(f, n)| (f, n));
            let mut stage = stages.iter().find(|s| s.name == from.trim()).cloned().unwrap_or_default();
            stage.name = name.trim().to_string();
            stage.from = from.trim().to_string();
            stages.push(stage);
        } else if let Some(last) = stages.last_mut() {
            if let Some(user) = line.strip_prefix("USER ") {
                last.user = Some(user.to_string());
            } else if let Some(entry) = line.strip_prefix("ENTRYPOINT ") {
                last.entrypoint = Some(entry.to_string());
            } else if let Some(labels) = line.strip_prefix("LABEL ") {
                let keys = labels.split_whitespace().filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()));
                last.labels.extend(keys);
            }
        }
    }
    stages
}

#[test]
fn the_image_runs_as_65532_and_its_dropin_target_as_root_both_with_the_binary_as_entrypoint_and_oci_labels() {
    let stages = dockerfile_stages();
    let last = stages.last().unwrap();
    let dropin = stages.iter().find(|s| s.name == "dropin").expect("a dropin target");
    assert_eq!((last.name.as_str(), last.user.as_deref()), ("default", Some("65532:65532")), "{stages:?}");
    assert_eq!(dropin.user.as_deref(), Some("0:0"), "{stages:?}");
    for stage in [last, dropin] {
        assert_eq!(stage.entrypoint.as_deref(), Some(r#"["/trialtail"]"#), "{}: Katib passes only args", stage.name);
        for key in ["title", "description", "version", "revision", "created", "source", "licenses"] {
            let label = format!("org.opencontainers.image.{key}");
            assert!(stage.labels.contains(&label), "{}: {label} in {:?}", stage.name, stage.labels);
        }
    }
    // Native compiles per platform: the build stage runs on the target platform (no --platform=$BUILDPLATFORM,
    // no cross toolchain), for the target rustc reports as its host.
    let build = stages.iter().find(|s| s.name == "build").unwrap();
    assert!(!build.from.contains("--platform"), "{build:?}");
}

/// Whether `.dockerignore` (its patterns as this repository writes them: `dir/`, `dir/*`, a file, `!` to let
/// back in; the last pattern that matches decides) leaves `path` in the build context.
fn in_build_context(dockerignore: &str, path: &str) -> bool {
    let mut kept = true;
    for line in dockerignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (keep, pattern) = line.strip_prefix('!').map_or((false, line), |p| (true, p));
        let matches = match pattern.strip_suffix("/*") {
            Some(dir) => path.starts_with(&format!("{dir}/")),
            None => {
                let p = pattern.trim_end_matches('/');
                path == p || path.starts_with(&format!("{p}/"))
            }
        };
        if matches {
            kept = keep;
        }
    }
    kept
}

#[test]
fn the_image_build_runs_the_profile_guided_build_and_its_context_holds_what_the_script_trains_on() {
    let dockerfile = std::fs::read_to_string(crate::root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("scripts/pgo-build.sh --target"), "the build stage builds with scripts/pgo-build.sh");
    assert!(dockerfile.contains("rustup component add llvm-tools"), "the script needs rustc's llvm-profdata");
    let ignore = std::fs::read_to_string(crate::root().join(".dockerignore")).unwrap();
    // The matcher itself, on what it must tell apart.
    assert!(!in_build_context(&ignore, "target/release/trialtail"));
    assert!(!in_build_context(&ignore, "examples/record/keras.py"));
    assert!(!in_build_context(&ignore, "docs/performance.md"));
    let root = crate::root();
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string(), "scripts/pgo-build.sh".to_string()];
    for dir in ["examples/logs", "examples/logs/frameworks"] {
        let logs = std::fs::read_dir(root.join(dir)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap());
        let logs: Vec<String> = logs.filter(|n| n.ends_with(".log")).map(|n| format!("{dir}/{n}")).collect();
        assert!(!logs.is_empty(), "{dir}: training logs");
        needed.extend(logs);
    }
    for path in &needed {
        assert!(root.join(path).is_file(), "{path}");
        assert!(in_build_context(&ignore, path), "{path} is left out of the image's build context by .dockerignore");
    }
}

/// A trialtail container found in a manifest: where, its args and its literal environment.
struct Invocation {
    place: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// A pod's init containers and containers.
fn pod_containers<'a>(file: &str, spec: &'a PodSpec) -> Vec<(String, &'a Container)> {
    let all = spec.init_containers.iter().flatten().chain(&spec.containers);
    all.map(|c| (format!("{file}: container {}", c.name), c)).collect()
}

/// Every container running trialtail's image with its entrypoint (no `command`), in `docs`.
fn invocations(docs: &[Doc]) -> Vec<Invocation> {
    let mut containers: Vec<(String, &Container)> = Vec::new();
    for d in docs {
        match &d.object {
            Object::Deployment(o) => containers.extend(pod_containers(&d.file, pod_spec(o))),
            Object::Job(o) => {
                containers.extend(pod_containers(&d.file, o.spec.as_ref().unwrap().template.spec.as_ref().unwrap()))
            }
            Object::Experiment(o) => {
                let job = o.spec.trial_template.trial_spec.spec.as_ref().unwrap();
                containers.extend(pod_containers(&d.file, job.template.spec.as_ref().unwrap()));
                if let Some(c) = &o.spec.metrics_collector_spec.collector.custom_collector {
                    containers.push((format!("{}: customCollector {}", d.file, c.name), c));
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (place, c) in containers {
        if !c.image.as_deref().unwrap_or_default().starts_with(IMAGE) {
            continue;
        }
        assert!(c.command.is_none(), "{place}: the image's entrypoint is trialtail; give args, not a command");
        let env = c.env.iter().flatten().filter_map(|e| Some((e.name.clone(), e.value.clone()?))).collect();
        found.push(Invocation { place, args: c.args.clone().unwrap_or_default(), env });
    }
    found
}

/// Runs each invocation with `--check-config` appended, in exactly its literal environment; the failures.
fn check_configs(invocations: &[Invocation]) -> Vec<String> {
    let mut failures = Vec::new();
    for inv in invocations {
        let out = Command::new(env!("CARGO_BIN_EXE_trialtail"))
            .args(&inv.args)
            .arg("--check-config")
            .env_clear()
            .envs(inv.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            failures.push(format!("{}: {:?} --check-config: {:?}: {err}", inv.place, inv.args, out.status));
        }
    }
    failures
}

#[test]
fn every_sidecar_args_list_in_the_manifests_passes_check_config() {
    let found: Vec<Invocation> =
        invocations(&documents()).into_iter().filter(|i| i.args.first().is_none_or(|a| a != "webhook")).collect();
    let places: Vec<&str> = found.iter().map(|i| i.place.as_str()).collect();
    assert_eq!(
        places,
        [
            "examples/native-sidecar-job.yaml: container trialtail",
            "examples/native-sidecar-job.yaml: customCollector trialtail"
        ]
    );
    let failures = check_configs(&found);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_webhook_deployment_args_pass_check_config_with_either_certificate() {
    let Some(renders) = renders() else { return };
    let find = |name: &str| &renders.iter().find(|(n, _)| n == name).unwrap().1;
    let webhook = |docs: &[Doc]| {
        let mut found: Vec<Invocation> =
            invocations(docs).into_iter().filter(|i| i.args.first().is_some_and(|a| a == "webhook")).collect();
        assert_eq!(found.len(), 1, "the Deployment's container");
        found.remove(0)
    };
    // Self-managed: --check-config checks the flags and contacts nothing.
    let self_managed = webhook(find("the install"));
    assert!(self_managed.args.iter().any(|a| a == "--cert-secret"), "{:?}", self_managed.args);
    let mut failures = check_configs(&[self_managed]);

    // cert-manager: the certificate the args name is where the Deployment mounts cert-manager's Secret, and
    // `--check-config` loads it, so a certificate and its key stand in at that place.
    let mut from_files = webhook(find("overlays/cert-manager"));
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["trialtail-webhook.trialtail-system.svc".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    let mounted = format!("{TLS_MOUNT}/");
    let mut moved = 0;
    for arg in &mut from_files.args {
        if let Some(file) = arg.strip_prefix(&mounted) {
            *arg = dir.path().join(file).display().to_string();
            moved += 1;
        }
    }
    assert_eq!(moved, 2, "--tls-cert and --tls-key under {TLS_MOUNT}: {:?}", from_files.args);
    failures.extend(check_configs(&[from_files]));
    assert!(failures.is_empty(), "{failures:#?}");
}
