//! The manifests under `manifests/`, read as Kubernetes reads them.
//!
//! Every YAML document parses into its typed object – k8s-openapi for built-in kinds, the strict structs below
//! for cert-manager, the Prometheus Operator, Katib and kustomize – and serializes back to the same tree, so a
//! misspelt or misplaced field fails here instead of on a cluster; a kind this file does not know fails too.
//! The install's objects must agree with each other (names, selectors, ports, the certificate's Secret and DNS
//! names), and every trialtail `args` list in them must be accepted by the built binary with `--check-config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, ResourceRequirements, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
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
    namespace_selector: NamespaceSelector,
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
}

/// Katib `Experiment` v1beta1 (the fields used here).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExperimentSpec {
    objective: Objective,
    algorithm: Algorithm,
    parallel_trial_count: u32,
    max_trial_count: u32,
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

/// `kustomization.yaml`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: String,
    labels: Vec<KustomizeLabels>,
    resources: Vec<String>,
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
    PodDisruptionBudget(PodDisruptionBudget),
    MutatingWebhookConfiguration(MutatingWebhookConfiguration),
    Job(Job),
    ConfigMap(ConfigMap),
    Certificate(Custom<CertificateSpec>),
    Issuer(Custom<IssuerSpec>),
    PodMonitor(Custom<PodMonitorSpec>),
    Experiment(Custom<ExperimentSpec>),
    Kustomization(Kustomization),
    KatibConfig(KatibConfigFragment),
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
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Object::MutatingWebhookConfiguration(_) => "MutatingWebhookConfiguration",
            Object::Job(_) => "Job",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Certificate(_) => "Certificate",
            Object::Issuer(_) => "Issuer",
            Object::PodMonitor(_) => "PodMonitor",
            Object::Experiment(_) => "Experiment",
            Object::Kustomization(_) => "Kustomization",
            Object::KatibConfig(_) => "KatibConfig",
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
        (Some("policy/v1"), Some("PodDisruptionBudget")) => Object::PodDisruptionBudget(strict(file, value)),
        (Some("admissionregistration.k8s.io/v1"), Some("MutatingWebhookConfiguration")) => {
            Object::MutatingWebhookConfiguration(strict(file, value))
        }
        (Some("batch/v1"), Some("Job")) => Object::Job(strict(file, value)),
        (Some("cert-manager.io/v1"), Some("Certificate")) => Object::Certificate(strict(file, value)),
        (Some("cert-manager.io/v1"), Some("Issuer")) => Object::Issuer(strict(file, value)),
        (Some("monitoring.coreos.com/v1"), Some("PodMonitor")) => Object::PodMonitor(strict(file, value)),
        (Some("kubeflow.org/v1beta1"), Some("Experiment")) => Object::Experiment(strict(file, value)),
        (Some("kustomize.config.k8s.io/v1beta1"), Some("Kustomization")) => Object::Kustomization(strict(file, value)),
        (None, None) if file == "katib/katib-config-patch.yaml" => Object::KatibConfig(strict(file, value)),
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

/// Whether a file (relative to `manifests/`) is one of the install's, beside kustomization.yaml.
fn in_install(file: &str) -> bool {
    !file.contains('/') && file != "rbac.yaml"
}

/// The one object of a kind in the files `$in` accepts (default: the install's).
macro_rules! one {
    ($docs:expr, $kind:ident) => {
        one!($docs, $kind, in_install)
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

/// Whether `selector` selects an object with `labels` (matchLabels and the four operators).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
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
    for expected in
        ["kustomization.yaml", "rbac.yaml", "examples/native-sidecar-job.yaml", "katib/katib-config-patch.yaml"]
    {
        assert!(files.contains(expected), "{expected} was read: {files:?}");
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &docs {
        *kinds.entry(d.object.kind()).or_default() += 1;
    }
    let expected = [
        ("Certificate", 1),
        ("Deployment", 1),
        ("Experiment", 1),
        ("Issuer", 1),
        ("Job", 1),
        ("KatibConfig", 1),
        ("Kustomization", 1),
        ("MutatingWebhookConfiguration", 1),
        ("Namespace", 1),
        ("PodDisruptionBudget", 1),
        ("PodMonitor", 1),
        ("Role", 1),
        ("RoleBinding", 1),
        ("Service", 1),
        ("ServiceAccount", 2),
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
fn the_kustomization_lists_exactly_the_install_files() {
    let docs = documents();
    let k = one!(docs, Kustomization);
    assert_eq!(k.namespace, NAMESPACE);
    assert!(k.labels.iter().any(|l| l.pairs.get("app.kubernetes.io/name").map(String::as_str) == Some("trialtail")));
    // Selectors are set in the files themselves: a common label must not change them after install.
    assert!(k.labels.iter().all(|l| l.include_selectors != Some(true)));

    let mut listed = k.resources.clone();
    listed.sort();
    let mut present: Vec<String> = yaml_files(&manifests_dir())
        .iter()
        .map(|p| p.strip_prefix(manifests_dir()).unwrap().to_string_lossy().into_owned())
        // rbac.yaml goes into each training namespace, katib/ into Katib's, examples/ are examples.
        .filter(|f| in_install(f) && f != "kustomization.yaml")
        .collect();
    present.sort();
    assert_eq!(listed, present, "resources of kustomization.yaml versus the files beside it");

    let ns = one!(docs, Namespace);
    assert_eq!(ns.metadata.name.as_deref(), Some(NAMESPACE));
    for doc in docs.iter().filter(|d| k.resources.contains(&d.file)) {
        let namespace = match &doc.object {
            Object::Deployment(o) => &o.metadata.namespace,
            Object::Service(o) => &o.metadata.namespace,
            Object::ServiceAccount(o) => &o.metadata.namespace,
            Object::PodDisruptionBudget(o) => &o.metadata.namespace,
            Object::Certificate(o) => &o.metadata.namespace,
            Object::Issuer(o) => &o.metadata.namespace,
            Object::PodMonitor(o) => &o.metadata.namespace,
            Object::ConfigMap(o) => &o.metadata.namespace,
            Object::Namespace(_) | Object::MutatingWebhookConfiguration(_) => continue,
            other => panic!("{}: {other:?} does not belong in the install", doc.file),
        };
        assert_eq!(namespace.as_deref(), Some(NAMESPACE), "{}", doc.file);
    }
}

#[test]
fn kustomize_renders_the_install_with_the_common_labels_and_the_selectors_unchanged() {
    // kustomize itself, through kubectl, when it is installed (CI does not install it).
    let rendered = match Command::new("kubectl").arg("kustomize").arg(manifests_dir()).output() {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap(),
        Ok(out) => panic!("kubectl kustomize manifests/: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            eprintln!("skipped: no kubectl ({e})");
            return;
        }
    };
    let values: Vec<Value> = serde_saphyr::from_multiple(&rendered).unwrap();
    let rendered: Vec<Doc> = values
        .iter()
        .map(|v| Doc { file: "kubectl-kustomize.yaml".into(), object: typed("kubectl kustomize", v) })
        .collect();
    let docs = documents();
    let installed = docs.iter().filter(|d| in_install(&d.file) && d.file != "kustomization.yaml").count();
    assert_eq!(rendered.len(), installed, "every object of the install, once");
    let anywhere = |_: &str| true;
    let deployment = one!(rendered, Deployment, anywhere);
    assert_eq!(deployment.spec.selector, one!(docs, Deployment).spec.selector, "selectors as written");
    assert_eq!(pod_labels(deployment), pod_labels(one!(docs, Deployment)), "pod labels as written");
    let monitor = one!(rendered, PodMonitor, anywhere);
    assert_eq!(monitor.spec.selector, one!(docs, PodMonitor).spec.selector);
    for meta in [&deployment.metadata, &monitor.metadata, &one!(rendered, Namespace, anywhere).metadata] {
        assert_eq!(meta.labels.as_ref().unwrap()["app.kubernetes.io/name"], "trialtail", "{:?}", meta.name);
    }
}

#[test]
fn the_webhook_objects_refer_to_each_other() {
    let docs = documents();
    let deployment = one!(docs, Deployment);
    let service = one!(docs, Service);
    let pdb = one!(docs, PodDisruptionBudget);
    let config = one!(docs, MutatingWebhookConfiguration);
    let certificate = one!(docs, Certificate);
    let issuer = one!(docs, Issuer);
    let account = one!(docs, ServiceAccount);

    let spec = &deployment.spec;
    let pods = pod_labels(deployment);
    assert!(selects(&spec.selector, pods), "the Deployment selects its own pods");
    let pdb_spec = pdb.spec.as_ref().unwrap();
    assert!(selects(pdb_spec.selector.as_ref().unwrap(), pods), "the PDB selects the webhook pods");
    assert_eq!(pdb_spec.min_available, Some(IntOrString::Int(1)));
    let service_spec = service.spec.as_ref().unwrap();
    let service_selector = service_spec.selector.as_ref().unwrap();
    assert!(service_selector.iter().all(|(k, v)| pods.get(k) == Some(v)), "the Service selects the webhook pods");

    let pod = pod_spec(deployment);
    let container = &pod.containers[0];
    let args = container.args.as_deref().unwrap();
    let https = &service_spec.ports.as_ref().unwrap()[0];
    assert_eq!(https.port, 443);
    let target = resolve_port(container, https.target_port.as_ref().unwrap());
    assert_eq!(target, listen_port(flag_value(args, "--listen")), "the Service reaches the webhook's --listen");

    let service_name = service.metadata.name.as_deref().unwrap();
    let service_ns = service.metadata.namespace.as_deref().unwrap();
    for hook in &config.webhooks.clone().unwrap() {
        let to = hook.client_config.service.as_ref().unwrap();
        assert_eq!((to.name.as_str(), to.namespace.as_str()), (service_name, service_ns), "{}", hook.name);
        assert_eq!(to.port.unwrap_or(443), https.port, "{}", hook.name);
        assert_eq!(to.path.as_deref(), Some("/mutate"), "{}", hook.name);
    }
    let dns = format!("{service_name}.{service_ns}.svc");
    assert!(certificate.spec.dns_names.contains(&dns), "the certificate is valid for {dns}");

    let cert_ns = certificate.metadata.namespace.as_deref().unwrap();
    let cert_name = certificate.metadata.name.as_deref().unwrap();
    let annotations = config.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["cert-manager.io/inject-ca-from"], format!("{cert_ns}/{cert_name}"));
    assert_eq!(certificate.spec.issuer_ref.kind, "Issuer");
    assert_eq!(Some(certificate.spec.issuer_ref.name.as_str()), issuer.metadata.name.as_deref());

    // The Deployment mounts the certificate's Secret where --tls-cert and --tls-key point.
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(&certificate.spec.secret_name))
        .expect("a volume of the certificate's Secret");
    let mount = container.volume_mounts.iter().flatten().find(|m| m.name == volume.name).expect("mounted");
    assert_eq!(mount.mount_path, TLS_MOUNT);
    for flag in ["--tls-cert", "--tls-key"] {
        assert!(flag_value(args, flag).starts_with(&format!("{}/", mount.mount_path)), "{flag} in the Secret");
    }

    // The probes ask the --metrics-listen port, which the container declares.
    let metrics = listen_port(flag_value(args, "--metrics-listen"));
    for (probe, path) in [(&container.liveness_probe, "/healthz"), (&container.readiness_probe, "/readyz")] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(resolve_port(container, &get.port), metrics, "{path}");
    }
    assert_eq!(flag_value(args, "--image"), container.image.as_deref().unwrap(), "the webhook injects its own image");

    assert_eq!(pod.service_account_name.as_deref(), account.metadata.name.as_deref());
    assert_eq!(account.automount_service_account_token, Some(false), "the webhook needs no API token");
    assert_eq!(pod.automount_service_account_token, Some(false));
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

/// The webhook entries `labels` in namespace `namespace` is sent to.
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
fn the_mutating_webhook_sees_opted_in_and_katib_trial_pods_once_and_never_its_own() {
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
    let trial_opted_in = labels(&[("katib.kubeflow.org/trial", "t1"), ("trialtail.io/inject", "true")]);
    let trial_opted_out = labels(&[("katib.kubeflow.org/trial", "t1"), ("trialtail.io/inject", "false")]);
    let other = labels(&[("app", "web"), ("trialtail.io/inject", "yes")]);
    assert_eq!(hooks_for(&hooks, "kubeflow", true, &opted_in), ["inject.trialtail.io"]);
    assert_eq!(hooks_for(&hooks, "kubeflow", true, &trial), ["katib-trials.trialtail.io"]);
    assert_eq!(hooks_for(&hooks, "kubeflow", true, &trial_opted_in), ["inject.trialtail.io"], "sent once");
    assert!(hooks_for(&hooks, "kubeflow", true, &trial_opted_out).is_empty());
    assert!(hooks_for(&hooks, "kubeflow", true, &other).is_empty());
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
    let experiment = one!(docs, Experiment, |file: &str| file.starts_with("examples/"));
    assert!(experiment.spec.metrics_collector_spec.collector.custom_collector.is_some());
    let template = &experiment.spec.trial_template.trial_spec.spec.as_ref().unwrap().template;
    let mut pod = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    // Katib labels every trial pod with its trial.
    pod.insert("katib.kubeflow.org/trial".into(), "mnist-lr-abc".into());
    assert!(hooks_for(&hooks, "kubeflow-user", true, &pod).is_empty(), "{pod:?}");
}

#[test]
fn the_podmonitor_scrapes_injected_pods_in_every_namespace_on_the_sidecar_port() {
    let docs = documents();
    let monitor = &one!(docs, PodMonitor).spec;
    assert_eq!(monitor.namespace_selector.any, Some(true));
    assert!(selects(&monitor.selector, &labels(&[(INJECTED_LABEL, "true")])));
    assert!(!selects(&monitor.selector, &labels(&[("trialtail.io/inject", "true")])), "injected, not asked for");
    let endpoint = &monitor.pod_metrics_endpoints[..];
    assert_eq!(endpoint.len(), 1);
    assert_eq!((endpoint[0].port.as_str(), endpoint[0].path.as_str()), (SIDECAR_PORT, "/metrics"));
}

#[test]
fn the_examples_run_under_the_service_account_rbac_yaml_binds() {
    let docs = documents();
    let rbac = |file: &str| file == "rbac.yaml";
    let binding = one!(docs, RoleBinding, rbac);
    let role = one!(docs, Role, rbac);
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let bound: Vec<(&str, Option<&str>)> =
        binding.subjects.iter().flatten().map(|s| (s.name.as_str(), s.namespace.as_deref())).collect();
    let mut specs = Vec::new();
    for d in &docs {
        match &d.object {
            Object::Job(job) => specs.push((job.metadata.namespace.as_deref(), job.spec.as_ref().unwrap())),
            Object::Experiment(e) => {
                specs.push((e.metadata.namespace.as_deref(), e.spec.trial_template.trial_spec.spec.as_ref().unwrap()))
            }
            _ => {}
        }
    }
    assert_eq!(specs.len(), 2);
    for (namespace, job) in specs {
        let account = job.template.spec.as_ref().unwrap().service_account_name.as_deref().unwrap();
        assert!(bound.contains(&(account, namespace)), "{account} in {namespace:?} is bound: {bound:?}");
    }
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

/// The Dockerfile's stages by name (`FROM … AS name`; the last one, the default build, is "default"): their
/// `USER` and `ENTRYPOINT` lines.
fn dockerfile_stages() -> Vec<(String, Option<String>, Option<String>)> {
    let text = std::fs::read_to_string(crate::root().join("Dockerfile")).unwrap();
    let mut stages: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(from) = line.strip_prefix("FROM ") {
            let name = from.split_once(" AS ").map_or("default", |(_, n)| n).trim().to_string();
            stages.push((name, None, None));
        } else if let (Some(user), Some(last)) = (line.strip_prefix("USER "), stages.last_mut()) {
            last.1 = Some(user.to_string());
        } else if let (Some(entry), Some(last)) = (line.strip_prefix("ENTRYPOINT "), stages.last_mut()) {
            last.2 = Some(entry.to_string());
        }
    }
    stages
}

#[test]
fn the_image_runs_as_65532_and_its_dropin_target_as_root_both_with_the_binary_as_entrypoint() {
    let stages = dockerfile_stages();
    let (last, dropin) = (stages.last().unwrap(), stages.iter().find(|s| s.0 == "dropin").expect("a dropin target"));
    assert_eq!((last.0.as_str(), last.1.as_deref()), ("default", Some("65532:65532")), "{stages:?}");
    assert_eq!(dropin.1.as_deref(), Some("0:0"), "{stages:?}");
    for (name, _, entry) in [last, dropin] {
        assert_eq!(entry.as_deref(), Some(r#"["/trialtail"]"#), "{name}: Katib passes only args");
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

/// Every container running trialtail's image with its entrypoint (no `command`), in every manifest.
fn invocations() -> Vec<Invocation> {
    let docs = documents();
    let mut containers: Vec<(String, &Container)> = Vec::new();
    for d in &docs {
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
        invocations().into_iter().filter(|i| i.args.first().is_none_or(|a| a != "webhook")).collect();
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
fn the_webhook_deployment_args_pass_check_config() {
    let mut found: Vec<Invocation> =
        invocations().into_iter().filter(|i| i.args.first().is_some_and(|a| a == "webhook")).collect();
    assert_eq!(found.len(), 1, "the Deployment's container");
    // The certificate the args name is where the Deployment mounts cert-manager's Secret; `--check-config`
    // loads it, so a certificate and its key stand in at that place.
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
    for arg in &mut found[0].args {
        if let Some(file) = arg.strip_prefix(&mounted) {
            *arg = dir.path().join(file).display().to_string();
            moved += 1;
        }
    }
    assert_eq!(moved, 2, "--tls-cert and --tls-key under {TLS_MOUNT}: {:?}", found[0].args);
    let failures = check_configs(&found);
    assert!(failures.is_empty(), "{failures:#?}");
}
