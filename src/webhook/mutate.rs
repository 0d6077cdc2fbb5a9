//! The pure half of the webhook: given a pod and the webhook's [`Settings`], the JSON patch that adds trialtail
//! to it, the one that takes an injected trialtail out again, or nothing.
//!
//! Invariants:
//! - **Pure**: no I/O, no clock; the same pod and settings give the same patch.
//! - **Idempotent**: a pod that already has a container or init container named `trialtail` gets an empty
//!   patch (unless it must come out again, below), and so does a pod it was taken out of; so applying the patch
//!   and mutating again changes nothing.
//! - **Never beside another metrics collector**: a pod that carries one is admitted unchanged (outcome
//!   [`Outcome::OtherCollector`]). Another collector is Katib's – a regular container named
//!   `metrics-logger-and-collector` or `metrics-collector` ([`KATIB_COLLECTOR_CONTAINERS`]) – or trialtail itself
//!   under another name: any container or init container whose image has the repository of
//!   [`Settings::image`] (tag and digest ignored; Katib's collector kind `Custom` with trialtail as the custom
//!   collector). Katib's collector owns the DB rows and the Trial's observation for its kinds, and it shares the
//!   pod's PID namespace (`Mutate` in Katib's `pkg/webhook/v1beta1/pod/inject_webhook.go` sets
//!   `shareProcessNamespace: true`) to wait for every other container's main process
//!   (`WaitMainProcesses`/`GetMainProcesses` in `pkg/metricscollector/v1beta1/common/pns.go`, `-w` defaulting to
//!   true), while the kubelet stops a native sidecar only after every regular container – Katib's collector
//!   included – has ended: the pod would never finish.
//! - **Either webhook order**: the API server calls mutating webhook configurations sorted by name
//!   (`getMutatingWebhookConfigurations` in k8s.io/apiserver `pkg/admission/configuration/mutating_webhook_manager.go`).
//!   When trialtail's runs before Katib's, Katib's adds its collector after the sidecar was injected, and the API
//!   server calls this webhook once more (`reinvocationPolicy: IfNeeded`; `Dispatch` in
//!   `pkg/admission/plugin/webhook/mutating/dispatcher.go`). Such a pod – a `trialtail` container, the label
//!   `trialtail.io/injected: "true"` this webhook sets, and another collector – gets the patch that takes out
//!   what the injection added ([`Outcome::Removed`]): the sidecar (by index), the label, and the annotations the
//!   injection recorded in [`ADDED_ANNOTATIONS`] (the scrape annotations it added; never one the pod had before).
//!   The result equals Katib's mutation alone. A `trialtail` container without that label is the user's own and
//!   is left alone.
//! - **Fail-open**: an annotation that does not make valid `trialtail run` arguments never denies the pod; it is
//!   admitted unchanged with a warning naming the annotation and the reason. Arguments are checked with the
//!   binary's own parser ([`parse_run_args`]) and the same validation `run` does ([`RunConfig`]), with no
//!   environment, so what is injected is
//!   what the sidecar accepts.
//! - **Patch paths are valid for any pod shape**: a missing `initContainers`, `labels` or `annotations` is added
//!   whole, and removed whole when nothing else is left in it; keys are escaped (`/` as `~1`, `~` as `~0`);
//!   values the user set are never overwritten or removed.
//!
//! Which pods: the label `trialtail.io/inject: "true"`, or a Katib trial pod (label
//! `katib.kubeflow.org/trial`), in an enabled namespace ([`Settings::namespaces`], empty = all); never a pod
//! with the label or annotation `trialtail.io/inject: "false"`. A Katib trial pod of collector kind `Push` (Katib
//! adds the label and `KATIB_TRIAL_NAME`, no container) is injected.
//!
//! What the pod's annotations say (each at most [`MAX_ANNOTATION_BYTES`]):
//! - `trialtail.io/metrics`: metric names, comma- or semicolon-separated (`--metrics`);
//! - `trialtail.io/preset`: preset names, comma-separated (`--preset`);
//! - `trialtail.io/filters`: Katib-style filter regexes, **one per line** (so a regex may hold commas); each
//!   line is trimmed (write a significant edge space as `\x20`) and blank lines are skipped (`--filter`, once
//!   per line); at most [`MAX_FILTERS`] lines, each compiling to at most [`FILTER_SIZE_LIMIT`], so that no pod
//!   can make a review cost the shared webhook more than a few MB and milliseconds;
//! - `trialtail.io/container`: the container whose log is read; it must be one of the pod's containers.
//!   Without it a Katib trial pod gets no `--container` (the sidecar reads the Trial's `primaryContainerName`)
//!   and any other pod gets its first container.
//!
//! What it does not do: talk to the API server (a Trial's primary container and collector kind are found by
//! the sidecar at run time; a `Custom` collector of another image is not told apart from the pod's own
//! containers), or change the pod's own containers.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Pod, PodSpec,
    Probe, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::cli::{
    DEFAULT_CPU_LIMIT, DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_LIMIT, DEFAULT_MEMORY_REQUEST, parse_run_args,
};
use crate::config::RunConfig;
use crate::k8s::{KATIB_COLLECTOR_CONTAINERS, TRIAL_LABEL};
use crate::outputs::DEFAULT_PORT;
use crate::rules::filter_too_big;

/// The injected container's name; a pod with a container or init container of this name is left alone.
pub const CONTAINER_NAME: &str = "trialtail";
/// Opt-in (`"true"`, label) and opt-out (`"false"`, label or annotation).
pub const INJECT: &str = "trialtail.io/inject";
/// Set on every pod that got the sidecar (a PodMonitor selects on it).
pub const INJECTED: &str = "trialtail.io/injected";
/// Set on every pod that got the sidecar: the annotation keys the injection added, comma-separated (those of
/// [`SCRAPE_ANNOTATIONS`] the pod did not have), so that taking the sidecar out removes these and no other.
pub const ADDED_ANNOTATIONS: &str = "trialtail.io/added-annotations";
/// The Prometheus scrape annotations added where the pod has none (`scrape`, `port`, `path`).
pub const SCRAPE_ANNOTATIONS: [&str; 3] = ["prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"];
/// Metric names to keep, comma-separated.
pub const METRICS_ANNOTATION: &str = "trialtail.io/metrics";
/// Filter regexes, one per line.
pub const FILTERS_ANNOTATION: &str = "trialtail.io/filters";
/// The longest value of each `trialtail.io/` annotation the webhook reads (the API server validates a pod's
/// annotations, at most 256 KiB together, only after mutating admission): 1000 metric names of 30 bytes.
pub const MAX_ANNOTATION_BYTES: usize = 32 << 10;
/// The most filter lines one pod's [`FILTERS_ANNOTATION`] may hold.
pub const MAX_FILTERS: usize = 8;
/// The compiled size one filter of [`FILTERS_ANNOTATION`] may reach (the regex crate's `size_limit`): a
/// Unicode `\w` alone is some 50 KB, Katib's default filter 68 KB, `\w{450}` 22 MB.
pub const FILTER_SIZE_LIMIT: usize = 512 << 10;
/// Preset names, comma-separated.
pub const PRESET_ANNOTATION: &str = "trialtail.io/preset";
/// The container whose log is read.
pub const CONTAINER_ANNOTATION: &str = "trialtail.io/container";
/// The sidecar's Prometheus port.
pub const PROMETHEUS_PORT: i32 = DEFAULT_PORT as i32;
/// The sidecar's Prometheus port's name.
pub const PORT_NAME: &str = "trialtail-prom";
/// The non-root user the sidecar runs as (distroless `nonroot`).
pub const RUN_AS_USER: i64 = 65532;

/// The sidecar's resource requests and limits, as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_request: DEFAULT_CPU_REQUEST.to_string(),
            memory_request: DEFAULT_MEMORY_REQUEST.to_string(),
            cpu_limit: DEFAULT_CPU_LIMIT.to_string(),
            memory_limit: DEFAULT_MEMORY_LIMIT.to_string(),
        }
    }
}

/// What the webhook injects, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The sidecar's image.
    pub image: String,
    /// As a native sidecar (`initContainers` with `restartPolicy: Always`, Kubernetes ≥ 1.29), else a container.
    pub native_sidecar: bool,
    /// Namespaces whose pods are mutated; empty: every namespace.
    pub namespaces: Vec<String>,
    /// The sidecar's resources.
    pub resources: Resources,
}

impl Settings {
    /// `image` as a native sidecar with the default resources, in every namespace.
    pub fn new(image: impl Into<String>) -> Self {
        Settings { image: image.into(), native_sidecar: true, namespaces: Vec::new(), resources: Resources::default() }
    }
}

/// What [`mutate`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// The JSON patch; empty when the pod is left alone.
    pub patch: Patch,
    /// Why the pod was left alone although selected (for the AdmissionReview's `warnings`).
    pub warnings: Vec<String>,
    /// What happened, for logs and metrics.
    pub outcome: Outcome,
    /// The other metrics collector's container, when one decided the outcome (for the log).
    pub collector: Option<String>,
}

/// What happened to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar is added.
    Injected,
    /// Not selected (no opt-in label, not a trial pod, namespace not enabled, or opted out).
    NotSelected,
    /// It already has a `trialtail` container.
    AlreadyInjected,
    /// Selected, but an annotation is invalid: admitted unchanged with a warning.
    Invalid,
    /// It carries another metrics collector (Katib's, or trialtail as Katib's `Custom` collector): admitted
    /// unchanged.
    OtherCollector,
    /// It has the sidecar this webhook injected and another collector that was added after it (the
    /// reinvocation after Katib's webhook): the sidecar is taken out again.
    Removed,
}

impl Outcome {
    /// A label value for metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::NotSelected => "not_selected",
            Outcome::AlreadyInjected => "already_injected",
            Outcome::Invalid => "invalid",
            Outcome::OtherCollector => "other_collector",
            Outcome::Removed => "removed",
        }
    }
}

/// An annotation that does not make valid arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {reason} (pod admitted without the trialtail sidecar)")]
pub struct AnnotationError {
    /// The annotation's key.
    pub annotation: &'static str,
    /// Why, in one line.
    pub reason: String,
}

/// The patch that adds trialtail to `pod`, takes it out again, or an empty one. See the module documentation.
pub fn mutate(pod: &Pod, settings: &Settings) -> Mutation {
    let unchanged = |outcome, warnings| Mutation { patch: Patch(Vec::new()), warnings, outcome, collector: None };
    if !selected(pod, settings) {
        return unchanged(Outcome::NotSelected, Vec::new());
    }
    let Some(spec) = pod.spec.as_ref() else { return unchanged(Outcome::NotSelected, Vec::new()) };
    let collector = other_collector(spec, settings).map(|c| c.name.clone());
    if let Some(slot) = sidecar_slot(spec) {
        let injected_here = pod.metadata.labels.as_ref().and_then(|l| l.get(INJECTED)).is_some_and(|v| v == "true");
        return match collector {
            Some(collector) if injected_here => Mutation {
                patch: withdraw(pod, spec, slot),
                warnings: Vec::new(),
                outcome: Outcome::Removed,
                collector: Some(collector),
            },
            _ => unchanged(Outcome::AlreadyInjected, Vec::new()),
        };
    }
    if collector.is_some() {
        return Mutation { collector, ..unchanged(Outcome::OtherCollector, Vec::new()) };
    }
    let args = match sidecar_args(pod) {
        Ok(args) => args,
        Err(e) => return unchanged(Outcome::Invalid, vec![e.to_string()]),
    };
    let container = match serde_json::to_value(sidecar(settings, args)) {
        Ok(c) => c,
        Err(e) => return unchanged(Outcome::Invalid, vec![format!("trialtail: cannot encode the sidecar: {e}")]),
    };
    let mut ops = Vec::new();
    match (settings.native_sidecar, &spec.init_containers) {
        (true, Some(_)) => ops.push(add(&["spec", "initContainers", "-"], container)),
        (true, None) => ops.push(add(&["spec", "initContainers"], Value::Array(vec![container]))),
        (false, _) => ops.push(add(&["spec", "containers", "-"], container)),
    }
    let labels = [(INJECTED, "true".to_string())];
    set(&mut ops, "labels", pod.metadata.labels.as_ref(), &labels);
    let existing = pod.metadata.annotations.as_ref();
    let scrape = ["true".to_string(), PROMETHEUS_PORT.to_string(), "/metrics".to_string()];
    let mut annotations: Vec<(&str, String)> = SCRAPE_ANNOTATIONS
        .into_iter()
        .zip(scrape)
        .filter(|(k, _)| existing.is_none_or(|a| !a.contains_key(*k)))
        .collect();
    let record = annotations.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(",");
    annotations.push((ADDED_ANNOTATIONS, record));
    set(&mut ops, "annotations", existing, &annotations);
    Mutation { patch: Patch(ops), warnings: Vec::new(), outcome: Outcome::Injected, collector: None }
}

/// Where the `trialtail` container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Init(usize),
    Regular(usize),
}

fn sidecar_slot(spec: &PodSpec) -> Option<Slot> {
    let init = spec.init_containers.iter().flatten().position(|c| c.name == CONTAINER_NAME).map(Slot::Init);
    init.or_else(|| spec.containers.iter().position(|c| c.name == CONTAINER_NAME).map(Slot::Regular))
}

/// Another metrics collector in the pod: one of Katib's ([`KATIB_COLLECTOR_CONTAINERS`], regular containers
/// only, where Katib appends them), or a container of trialtail's image under another name than `trialtail`.
fn other_collector<'a>(spec: &'a PodSpec, settings: &Settings) -> Option<&'a Container> {
    let katib = spec.containers.iter().find(|c| KATIB_COLLECTOR_CONTAINERS.contains(&c.name.as_str()));
    let ours = repository(&settings.image);
    let mut all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    katib.or_else(|| {
        all.find(|c| c.name != CONTAINER_NAME && c.image.as_deref().is_some_and(|image| repository(image) == ours))
    })
}

/// An image reference's repository without tag and digest, with the registry Docker assumes spelt out: a name
/// without a registry is on `docker.io`, a one-part name there is under `library/`, and `index.docker.io` is
/// `docker.io` (`splitDockerDomain` in github.com/distribution/reference `normalize.go`).
fn repository(image: &str) -> String {
    let name = image.trim();
    let name = name.split_once('@').map_or(name, |(name, _digest)| name);
    let name = match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    };
    let (domain, path) = match name.split_once('/') {
        Some((domain, path))
            if domain == "localhost" || domain.contains(['.', ':']) || domain.to_lowercase() != domain =>
        {
            (domain, path)
        }
        _ => ("docker.io", name),
    };
    match (domain, path.contains('/')) {
        ("docker.io" | "index.docker.io", false) => format!("docker.io/library/{path}"),
        ("docker.io" | "index.docker.io", true) => format!("docker.io/{path}"),
        _ => format!("{domain}/{path}"),
    }
}

/// The patch that takes out what an injection added: the sidecar at `slot`, the label [`INJECTED`] and the
/// annotations recorded in [`ADDED_ANNOTATIONS`] (only scrape annotations; a record naming others is not
/// trusted for them).
fn withdraw(pod: &Pod, spec: &PodSpec, slot: Slot) -> Patch {
    let mut ops = Vec::new();
    match slot {
        Slot::Init(_) if spec.init_containers.as_ref().is_some_and(|c| c.len() == 1) => {
            ops.push(remove(&["spec", "initContainers"]));
        }
        Slot::Init(i) => ops.push(remove(&["spec", "initContainers", &i.to_string()])),
        Slot::Regular(i) => ops.push(remove(&["spec", "containers", &i.to_string()])),
    }
    let meta = &pod.metadata;
    unset(&mut ops, "labels", meta.labels.as_ref(), &[INJECTED]);
    let record = meta.annotations.as_ref().and_then(|a| a.get(ADDED_ANNOTATIONS)).map_or("", String::as_str);
    let mut keys: Vec<&str> = record.split(',').map(str::trim).filter(|k| SCRAPE_ANNOTATIONS.contains(k)).collect();
    keys.push(ADDED_ANNOTATIONS);
    unset(&mut ops, "annotations", meta.annotations.as_ref(), &keys);
    Patch(ops)
}

fn selected(pod: &Pod, settings: &Settings) -> bool {
    let meta = &pod.metadata;
    let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).map(String::as_str);
    let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str);
    if label(INJECT) == Some("false") || annotation(INJECT) == Some("false") {
        return false;
    }
    let namespace_enabled = settings.namespaces.is_empty()
        || meta.namespace.as_ref().is_some_and(|ns| settings.namespaces.iter().any(|n| n == ns));
    namespace_enabled && (label(INJECT) == Some("true") || label(TRIAL_LABEL).is_some())
}

/// An `add` operation at the path made of `tokens` (escaped as JSON pointer tokens).
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(tokens.iter().copied()), value })
}

/// A `remove` operation at the path made of `tokens`.
fn remove(tokens: &[&str]) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation { path: PointerBuf::from_tokens(tokens.iter().copied()) })
}

/// Sets the `entries` in the pod's `metadata.<field>` map that do not have their value yet: the whole map when
/// there is none.
fn set(
    ops: &mut Vec<PatchOperation>,
    field: &str,
    existing: Option<&BTreeMap<String, String>>,
    entries: &[(&str, String)],
) {
    let Some(existing) = existing else {
        let map = entries.iter().map(|(k, v)| ((*k).to_string(), Value::String(v.clone()))).collect();
        ops.push(add(&["metadata", field], Value::Object(map)));
        return;
    };
    for (k, v) in entries {
        if existing.get(*k) != Some(v) {
            ops.push(add(&["metadata", field, k], Value::String(v.clone())));
        }
    }
}

/// Removes the `keys` present in the pod's `metadata.<field>` map: the whole map when nothing else is in it (an
/// empty map and none are the same object to the API server, which omits empty maps).
fn unset(ops: &mut Vec<PatchOperation>, field: &str, existing: Option<&BTreeMap<String, String>>, keys: &[&str]) {
    let Some(existing) = existing else { return };
    let present: BTreeSet<&str> = keys.iter().copied().filter(|k| existing.contains_key(*k)).collect();
    if present.is_empty() {
        return;
    }
    if existing.len() == present.len() {
        ops.push(remove(&["metadata", field]));
    } else {
        ops.extend(present.into_iter().map(|k| remove(&["metadata", field, k])));
    }
}

/// The `trialtail run` arguments the pod's annotations ask for, checked with the binary's own parser.
pub fn sidecar_args(pod: &Pod) -> Result<Vec<String>, AnnotationError> {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    for annotation in [CONTAINER_ANNOTATION, METRICS_ANNOTATION, PRESET_ANNOTATION, FILTERS_ANNOTATION] {
        if let Some(len) = annotations.get(annotation).map(String::len).filter(|&n| n > MAX_ANNOTATION_BYTES) {
            let reason = format!("{len} bytes, more than the {} KiB the webhook reads", MAX_ANNOTATION_BYTES >> 10);
            return Err(AnnotationError { annotation, reason });
        }
    }
    let get = |k: &str| annotations.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut args: Vec<String> =
        ["run", "--source", "pod-log", "--listen", &format!(":{PROMETHEUS_PORT}"), "--log-format", "json"]
            .map(String::from)
            .to_vec();
    let containers: Vec<&str> = pod.spec.iter().flat_map(|s| &s.containers).map(|c| c.name.as_str()).collect();
    let container = match get(CONTAINER_ANNOTATION) {
        Some(c) if containers.contains(&c) => Some(c.to_string()),
        Some(c) => {
            let reason = format!("no container {c:?} in the pod (it has {})", containers.join(", "));
            return Err(AnnotationError { annotation: CONTAINER_ANNOTATION, reason });
        }
        None if pod.metadata.labels.as_ref().is_some_and(|l| l.contains_key(TRIAL_LABEL)) => None,
        None => crate::source::pod_log::default_container(pod, None),
    };
    let mut own: Vec<(&'static str, Vec<String>)> = Vec::new();
    if let Some(c) = container {
        own.push((CONTAINER_ANNOTATION, vec![format!("--container={c}")]));
    }
    if let Some(m) = get(METRICS_ANNOTATION) {
        own.push((METRICS_ANNOTATION, vec![format!("--metrics={m}")]));
    }
    if let Some(p) = get(PRESET_ANNOTATION) {
        own.push((PRESET_ANNOTATION, vec![format!("--preset={p}")]));
    }
    if let Some(f) = get(FILTERS_ANNOTATION) {
        let lines: Vec<&str> = f.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        filters_within_limits(&lines)?;
        own.push((FILTERS_ANNOTATION, lines.iter().map(|l| format!("--filter={l}")).collect()));
    }
    // Each annotation alone first, so an error names the one at fault; then all of them together.
    for (annotation, extra) in &own {
        check(annotation, &[args.as_slice(), extra].concat())?;
    }
    let last = own.last().map_or(METRICS_ANNOTATION, |(a, _)| *a);
    args.extend(own.into_iter().flat_map(|(_, extra)| extra));
    check(last, &args)?;
    Ok(args)
}

/// What one pod's filters may cost: at most [`MAX_FILTERS`], each compiling to at most [`FILTER_SIZE_LIMIT`]
/// (the regex crate's size limit, so the check itself is as bounded). Checked before anything is compiled in
/// full, so a review costs the webhook a few MB and milliseconds whatever the annotation says.
fn filters_within_limits(lines: &[&str]) -> Result<(), AnnotationError> {
    let fail = |reason| AnnotationError { annotation: FILTERS_ANNOTATION, reason };
    if lines.len() > MAX_FILTERS {
        return Err(fail(format!("{} filters, more than the {MAX_FILTERS} the webhook allows", lines.len())));
    }
    match lines.iter().find(|l| filter_too_big(l, FILTER_SIZE_LIMIT)) {
        Some(line) => Err(fail(format!(
            "a filter exceeds the size limit of {} KiB of compiled regex ((?-u) makes \\w, \\d and \\s ASCII and \
             small): --filter {line:?}",
            FILTER_SIZE_LIMIT >> 10
        ))),
        None => Ok(()),
    }
}

/// Parses `args` as `trialtail ARGS` and validates them as `run` does, with no environment at all: neither
/// the webhook's own variables nor its process's Kubernetes identity can change the verdict.
fn check(annotation: &'static str, args: &[String]) -> Result<(), AnnotationError> {
    let fail = |reason: String| AnnotationError { annotation, reason };
    let argv = std::iter::once(CONTAINER_NAME.to_string()).chain(args.iter().cloned());
    let run = parse_run_args(argv).map_err(|e| fail(first_line(&e.to_string())))?;
    RunConfig::from_args(run, |_| None).map(drop).map_err(|e| fail(first_line(&e.to_string())))
}

fn first_line(message: &str) -> String {
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid");
    line.trim().trim_start_matches("error: ").to_string()
}

/// The sidecar container.
fn sidecar(settings: &Settings, args: Vec<String>) -> Container {
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector { field_path: path.to_string(), ..Default::default() }),
        ..Default::default()
    };
    let env =
        |name: &str, path: &str| EnvVar { name: name.to_string(), value_from: Some(field(path)), ..Default::default() };
    let r = &settings.resources;
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(settings.image.clone()),
        args: Some(args),
        env: Some(vec![env("POD_NAME", "metadata.name"), env("POD_NAMESPACE", "metadata.namespace")]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_string()),
            container_port: PROMETHEUS_PORT,
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".to_string()),
                port: IntOrString::String(PORT_NAME.to_string()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&r.cpu_request, &r.memory_request)),
            limits: Some(quantities(&r.cpu_limit, &r.memory_limit)),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), ..Default::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_string(), ..Default::default() }),
            ..Default::default()
        }),
        restart_policy: settings.native_sidecar.then(|| "Always".to_string()),
        ..Default::default()
    }
}

/// The AdmissionReviews of `tests/fixtures/admission/` (the tests' module docs say what each holds).
#[cfg(test)]
pub(crate) const FIXTURES: [&str; 9] = [
    "job-inject-label",
    "katib-trial",
    "existing-sidecar",
    "opt-out",
    "bad-annotation",
    "katib-job-pod",
    "katib-push",
    "katib-stdout",
    "katib-custom-trialtail",
];

#[cfg(test)]
mod tests {
    //! The fixtures in `tests/fixtures/admission/` are AdmissionReviews as the API server sends them for pods a
    //! Job controller creates: a Job's pod opting in by label, a Katib trial pod, one that already has the
    //! sidecar, one that opts out, one with a bad annotation. Four more are one Katib trial pod before and after
    //! Katib's pod webhook (v0.19.0, `Mutate` in `pkg/webhook/v1beta1/pod/inject_webhook.go`): `katib-job-pod`
    //! as the Job controller creates it, `katib-push` (kind Push: the trial labels and `KATIB_TRIAL_NAME`),
    //! `katib-stdout` (kind StdOut: also the collector `metrics-logger-and-collector`, `shareProcessNamespace`,
    //! the `metrics-volume` and the wrapped `sh -c` command) and `katib-custom-trialtail` (kind Custom with
    //! trialtail as the custom collector). Katib's webhook answers with the JSON patch between the pod it got
    //! and the pod it made (`admission.PatchResponseFromRaw` in `Handle`), so [`katib`] derives Katib's patch
    //! from a before/after pair. Each patch is applied to the pod it was made for (json-patch, as kube does)
    //! and the result read back as a `Pod`.

    use k8s_openapi::api::core::v1::Container;
    use proptest::prelude::*;

    use super::*;

    fn settings() -> Settings {
        Settings::new("ghcr.io/trialtail/trialtail:0.1.0")
    }

    /// The pod in a fixture's AdmissionReview, with the request's namespace (as the handler fills it in).
    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/admission/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let review: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut pod = review["request"]["object"].clone();
        pod["metadata"]["namespace"] = review["request"]["namespace"].clone();
        pod
    }

    fn pod(json: &Value) -> Pod {
        serde_json::from_value(json.clone()).unwrap()
    }

    /// Mutates `json`, applies the patch to it, and returns the mutation and the patched pod.
    fn apply(json: &Value, settings: &Settings) -> (Mutation, Value) {
        let m = mutate(&pod(json), settings);
        let mut patched = json.clone();
        json_patch::patch(&mut patched, &m.patch).unwrap_or_else(|e| panic!("{e}: {}", m.patch));
        (m, patched)
    }

    fn sidecar_of(pod: &Pod) -> Container {
        let spec = pod.spec.as_ref().unwrap();
        let all = spec.init_containers.iter().flatten().chain(&spec.containers);
        all.filter(|c| c.name == CONTAINER_NAME).cloned().collect::<Vec<_>>().pop().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn webhook_job_pod_with_the_inject_label_gets_a_native_sidecar_for_its_first_container() {
        let (m, patched) = apply(&fixture("job-inject-label"), &settings());
        assert_eq!((m.outcome, m.warnings.len()), (Outcome::Injected, 0));
        let p = pod(&patched);
        let spec = p.spec.as_ref().unwrap();
        let init = spec.init_containers.as_ref().expect("initContainers added whole");
        assert_eq!(init.len(), 1);
        assert_eq!(spec.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["train", "tensorboard"]);
        let c = &init[0];
        assert_eq!(c.name, "trialtail");
        assert_eq!(c.image.as_deref(), Some("ghcr.io/trialtail/trialtail:0.1.0"));
        assert_eq!(c.restart_policy.as_deref(), Some("Always"));
        let filters = [
            r"--filter=(?P<name>[a-z_]+)\s*=\s*(?P<value>[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)",
            r"--filter=epoch (?P<step>\d+), (?P<name>\w+): (?P<value>\S+)",
        ];
        let mut expected =
            strings(&["run", "--source", "pod-log", "--listen", ":9478", "--log-format", "json", "--container=train"]);
        expected.extend(strings(&["--metrics=loss, val_loss,accuracy", "--preset=keras"]));
        expected.extend(strings(&filters));
        assert_eq!(c.args.as_ref().unwrap(), &expected);
        let env: Vec<_> = c
            .env
            .iter()
            .flatten()
            .map(|e| {
                let field = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str());
                (e.name.as_str(), field)
            })
            .collect();
        assert_eq!(env, [("POD_NAME", Some("metadata.name")), ("POD_NAMESPACE", Some("metadata.namespace"))]);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_non_root, sc.run_as_user, sc.read_only_root_filesystem, sc.allow_privilege_escalation),
            (Some(true), Some(65532), Some(true), Some(false))
        );
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let res = c.resources.as_ref().unwrap();
        let q = |m: &Option<BTreeMap<String, Quantity>>, k: &str| m.as_ref().unwrap()[k].0.clone();
        assert_eq!((q(&res.requests, "cpu"), q(&res.requests, "memory")), ("50m".into(), "16Mi".into()));
        assert_eq!((q(&res.limits, "cpu"), q(&res.limits, "memory")), ("500m".into(), "100Mi".into()));
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.container_port), (Some("trialtail-prom"), 9478));
        let probe = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            (probe.path.as_deref(), &probe.port),
            (Some("/readyz"), &IntOrString::String("trialtail-prom".into()))
        );
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get(INJECTED).map(String::as_str), Some("true"));
        assert_eq!(labels.get("job-name").map(String::as_str), Some("resnet-sweep-7"), "labels kept");
        let annotations = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        assert_eq!(annotations["prometheus.io/port"], "8080", "the user's annotation is never overwritten");
        assert_eq!(annotations[ADDED_ANNOTATIONS], "prometheus.io/scrape,prometheus.io/path", "what was added");
        assert_eq!(annotations["trialtail.io/preset"], "keras");
    }

    #[test]
    fn webhook_katib_trial_pod_leaves_the_container_to_the_trial_and_keeps_its_init_containers() {
        let (m, patched) = apply(&fixture("katib-trial"), &settings());
        assert_eq!(m.outcome, Outcome::Injected);
        let p = pod(&patched);
        let init: Vec<_> = p.spec.as_ref().unwrap().init_containers.iter().flatten().map(|c| c.name.clone()).collect();
        assert_eq!(init, ["fetch-data", "trialtail"]);
        let args = sidecar_of(&p).args.unwrap();
        assert_eq!(
            args,
            strings(&["run", "--source", "pod-log", "--listen", ":9478", "--log-format", "json"]),
            "no --container"
        );
        let annotations = p.metadata.annotations.unwrap();
        assert_eq!(annotations.len(), 4, "added whole: {annotations:?}");
        assert_eq!(annotations["prometheus.io/port"], "9478");
        assert_eq!(annotations[ADDED_ANNOTATIONS], "prometheus.io/scrape,prometheus.io/port,prometheus.io/path");
        assert_eq!(p.metadata.labels.unwrap()[INJECTED], "true");
    }

    /// Katib's pod webhook's patch for the trial pod `katib-job-pod`, with the collector kind of `after`.
    fn katib(after: &str) -> json_patch::Patch {
        json_patch::diff(&fixture("katib-job-pod"), &fixture(after))
    }

    fn patch_of(json: &Value, patch: &json_patch::Patch) -> Value {
        let mut out = json.clone();
        json_patch::patch(&mut out, patch).unwrap_or_else(|e| panic!("{e}: {patch}"));
        out
    }

    #[test]
    fn webhook_katib_trial_pod_with_katibs_collector_is_admitted_unchanged() {
        let m = mutate(&pod(&fixture("katib-stdout")), &settings());
        assert_eq!((m.outcome, m.patch.len(), m.warnings.len()), (Outcome::OtherCollector, 0, 0), "{m:?}");
        assert_eq!(m.collector.as_deref(), Some("metrics-logger-and-collector"));
        // TensorFlowEvent (and PrometheusMetric) collectors are named metrics-collector; an opt-in label on the
        // trial template changes nothing.
        let mut tfevent = fixture("katib-stdout");
        tfevent["spec"]["containers"][1]["name"] = "metrics-collector".into();
        tfevent["metadata"]["labels"][INJECT] = "true".into();
        let m = mutate(&pod(&tfevent), &settings());
        assert_eq!((m.outcome, m.patch.len()), (Outcome::OtherCollector, 0));
        assert_eq!(m.collector.as_deref(), Some("metrics-collector"));
    }

    #[test]
    fn webhook_katib_custom_collector_of_trialtails_image_is_admitted_unchanged() {
        let m = mutate(&pod(&fixture("katib-custom-trialtail")), &settings());
        assert_eq!((m.outcome, m.patch.len(), m.warnings.len()), (Outcome::OtherCollector, 0, 0), "{m:?}");
        assert_eq!(m.collector.as_deref(), Some("trialtail-collector"), "the :latest tag is still trialtail");
        let digest =
            "ghcr.io/trialtail/trialtail@sha256:0f3b1c7e9a2d4f6b8c0e1a3b5d7f9e2c4a6b8d0f1e3c5a7b9d2f4e6a8c0b1d3e";
        let cases = [
            (digest, Outcome::OtherCollector),
            ("ghcr.io/trialtail/trialtail:0.2.0-rc.1@sha256:00", Outcome::OtherCollector),
            ("ghcr.io/trialtail/trialtail", Outcome::OtherCollector),
            ("ghcr.io/trialtail/trialtail-fork:0.1.0", Outcome::Injected),
            ("ghcr.io/kubeflow/katib/custom-metrics-collector:latest", Outcome::Injected),
            ("registry.example.com/trialtail/trialtail:0.1.0", Outcome::Injected),
        ];
        for (image, outcome) in cases {
            let mut json = fixture("katib-custom-trialtail");
            json["spec"]["containers"][1]["image"] = image.into();
            assert_eq!(mutate(&pod(&json), &settings()).outcome, outcome, "{image}");
        }
        // trialtail as a native sidecar the Job template brings under its own name counts as well.
        let mut init = fixture("katib-push");
        let own = serde_json::json!({"name": "metrics", "image": "ghcr.io/trialtail/trialtail:0.1.0"});
        init["spec"]["initContainers"].as_array_mut().unwrap().push(own);
        let m = mutate(&pod(&init), &settings());
        assert_eq!((m.outcome, m.collector.as_deref()), (Outcome::OtherCollector, Some("metrics")));
    }

    #[test]
    fn webhook_image_repositories_compare_without_tag_and_digest_with_dockers_defaults() {
        let same = [
            ("ghcr.io/trialtail/trialtail:0.1.0", "ghcr.io/trialtail/trialtail"),
            ("ghcr.io/trialtail/trialtail@sha256:ab", "ghcr.io/trialtail/trialtail:latest"),
            ("trialtail/trialtail:1", "docker.io/trialtail/trialtail"),
            ("index.docker.io/trialtail/trialtail", "docker.io/trialtail/trialtail:2"),
            ("busybox:1.36", "docker.io/library/busybox"),
            ("localhost:5000/trialtail:1", "localhost:5000/trialtail"),
            ("localhost/trialtail", "localhost/trialtail:x"),
        ];
        for (a, b) in same {
            assert_eq!(repository(a), repository(b), "{a} vs {b}");
        }
        let different = [
            ("localhost:5000/trialtail", "localhost:5001/trialtail"),
            ("ghcr.io/trialtail/trialtail", "ghcr.io/trialtail/trialtail-webhook"),
            ("trialtail", "trialtail/trialtail"),
            ("quay.io/trialtail/trialtail", "ghcr.io/trialtail/trialtail"),
        ];
        for (a, b) in different {
            assert_ne!(repository(a), repository(b), "{a} vs {b}");
        }
        assert_eq!(repository("localhost:5000/ml/trialtail:0.1.0@sha256:ab"), "localhost:5000/ml/trialtail");
    }

    #[test]
    fn webhook_katib_push_trial_pod_is_injected() {
        let (m, patched) = apply(&fixture("katib-push"), &settings());
        assert_eq!((m.outcome, m.warnings.len(), m.collector), (Outcome::Injected, 0, None));
        let p = pod(&patched);
        let init: Vec<_> = p.spec.as_ref().unwrap().init_containers.iter().flatten().map(|c| c.name.clone()).collect();
        assert_eq!(init, ["fetch-data", "trialtail"]);
        assert_eq!(
            sidecar_of(&p).args.unwrap(),
            strings(&["run", "--source", "pod-log", "--listen", ":9478", "--log-format", "json"])
        );
        assert_eq!(p.metadata.labels.unwrap()[INJECTED], "true");
        // The same pod before Katib's webhook has no trial label and is not selected; after it, it is.
        assert_eq!(mutate(&pod(&fixture("katib-job-pod")), &settings()).outcome, Outcome::NotSelected);
        let after_katib = patch_of(&fixture("katib-job-pod"), &katib("katib-push"));
        assert_eq!(mutate(&pod(&after_katib), &settings()).outcome, Outcome::Injected);
    }

    /// The template opting in by label, so trialtail's webhook injects before Katib's has labelled the pod.
    fn opted_in(mut json: Value) -> Value {
        json["metadata"]["labels"][INJECT] = "true".into();
        json
    }

    #[test]
    fn webhook_sidecar_injected_before_katibs_collector_is_taken_out_again_leaving_katibs_pod() {
        for after in ["katib-stdout", "katib-custom-trialtail"] {
            for native_sidecar in [true, false] {
                for init_containers in [true, false] {
                    for annotations in [None, Some(serde_json::json!({"prometheus.io/port": "8080", "team": "a"}))] {
                        let case = format!("{after}, native {native_sidecar}, init {init_containers}, {annotations:?}");
                        let s = Settings { native_sidecar, ..settings() };
                        let shape = |mut json: Value| {
                            if !init_containers {
                                json["spec"].as_object_mut().unwrap().remove("initContainers");
                            }
                            if let Some(a) = &annotations {
                                json["metadata"]["annotations"] = a.clone();
                            }
                            opted_in(json)
                        };
                        let (before, katib_alone) = (shape(fixture("katib-job-pod")), shape(fixture(after)));
                        // Round 1: trialtail's webhook, then Katib's, which keeps what it got and adds its own.
                        let (m, ours) = apply(&before, &s);
                        assert_eq!(m.outcome, Outcome::Injected, "{case}");
                        let both = patch_of(&ours, &katib(after));
                        // Round 2: trialtail's webhook again (reinvocationPolicy: IfNeeded).
                        let (m, result) = apply(&both, &s);
                        assert_eq!(m.outcome, Outcome::Removed, "{case}");
                        assert!(m.collector.is_some() && m.warnings.is_empty(), "{case}: {m:?}");
                        assert_eq!(result, katib_alone, "{case}: {}", m.patch);
                        let again = mutate(&pod(&result), &s);
                        assert_eq!((again.outcome, again.patch.len()), (Outcome::OtherCollector, 0), "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn webhook_removal_takes_the_sidecar_out_by_index_and_only_the_recorded_scrape_annotations() {
        let (_, ours) = apply(&opted_in(fixture("katib-job-pod")), &settings());
        let mut both = patch_of(&ours, &katib("katib-stdout"));
        let init = both["spec"]["initContainers"].as_array_mut().unwrap();
        init.push(serde_json::json!({"name": "after-us", "image": "busybox:1.36"}));
        // A record that names more than the webhook may have added, and a key twice.
        let a = &mut both["metadata"]["annotations"];
        a[ADDED_ANNOTATIONS] = "prometheus.io/scrape, team,prometheus.io/scrape,prometheus.io/path".into();
        a["team"] = "a".into();
        let (m, result) = apply(&both, &settings());
        assert_eq!(m.outcome, Outcome::Removed);
        let paths: Vec<String> = m.patch.iter().map(|op| op.path().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/spec/initContainers/1",
                "/metadata/labels/trialtail.io~1injected",
                "/metadata/annotations/prometheus.io~1path",
                "/metadata/annotations/prometheus.io~1scrape",
                "/metadata/annotations/trialtail.io~1added-annotations",
            ]
        );
        let names: Vec<&str> =
            result["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["fetch-data", "after-us"]);
        assert_eq!(result["metadata"]["annotations"], serde_json::json!({"prometheus.io/port": "9478", "team": "a"}));
    }

    #[test]
    fn webhook_a_trialtail_container_it_did_not_inject_is_never_taken_out() {
        let mut users = fixture("katib-stdout");
        let own = serde_json::json!({"name": "trialtail", "image": "ghcr.io/trialtail/trialtail:0.1.0"});
        users["spec"]["initContainers"].as_array_mut().unwrap().push(own);
        let m = mutate(&pod(&users), &settings());
        assert_eq!((m.outcome, m.patch.len()), (Outcome::AlreadyInjected, 0));
        // Injected here but no other collector: left alone too.
        let (_, injected) = apply(&fixture("katib-push"), &settings());
        let m = mutate(&pod(&injected), &settings());
        assert_eq!((m.outcome, m.patch.len()), (Outcome::AlreadyInjected, 0));
    }

    #[test]
    fn webhook_patch_paths_escape_slashes_in_keys() {
        let m = mutate(&pod(&fixture("job-inject-label")), &settings());
        let paths: Vec<String> = m.patch.iter().map(|op| op.path().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/spec/initContainers",
                "/metadata/labels/trialtail.io~1injected",
                "/metadata/annotations/prometheus.io~1scrape",
                "/metadata/annotations/prometheus.io~1path",
                "/metadata/annotations/trialtail.io~1added-annotations",
            ]
        );
    }

    #[test]
    fn webhook_missing_label_and_annotation_maps_are_added_whole() {
        let mut json = fixture("katib-trial");
        json["metadata"].as_object_mut().unwrap().remove("labels");
        json["metadata"]["annotations"] = serde_json::json!({});
        let mut ops = Vec::new();
        let entries = [(INJECTED, "true".to_string())];
        set(&mut ops, "labels", pod(&json).metadata.labels.as_ref(), &entries);
        set(&mut ops, "annotations", pod(&json).metadata.annotations.as_ref(), &entries);
        json_patch::patch(&mut json, &ops).unwrap();
        assert_eq!(json["metadata"]["labels"], serde_json::json!({INJECTED: "true"}));
        assert_eq!(json["metadata"]["annotations"], serde_json::json!({INJECTED: "true"}));
        let paths: Vec<String> = ops.iter().map(|op| op.path().to_string()).collect();
        assert_eq!(paths, ["/metadata/labels", "/metadata/annotations/trialtail.io~1injected"]);
    }

    #[test]
    fn webhook_pod_with_the_sidecar_already_is_left_alone() {
        let m = mutate(&pod(&fixture("existing-sidecar")), &settings());
        assert_eq!((m.outcome, m.patch.len(), m.warnings.len()), (Outcome::AlreadyInjected, 0, 0));
        let mut as_container = fixture("katib-trial");
        let c = serde_json::json!({"name": "trialtail", "image": "x"});
        as_container["spec"]["containers"].as_array_mut().unwrap().push(c);
        assert_eq!(mutate(&pod(&as_container), &settings()).outcome, Outcome::AlreadyInjected);
    }

    #[test]
    fn webhook_opted_out_and_unlabelled_pods_are_left_alone() {
        let m = mutate(&pod(&fixture("opt-out")), &settings());
        assert_eq!((m.outcome, m.patch.len()), (Outcome::NotSelected, 0));
        let mut by_label = fixture("job-inject-label");
        by_label["metadata"]["labels"][INJECT] = "false".into();
        assert_eq!(mutate(&pod(&by_label), &settings()).outcome, Outcome::NotSelected);
        let mut unlabelled = fixture("job-inject-label");
        unlabelled["metadata"]["labels"].as_object_mut().unwrap().remove(INJECT);
        assert_eq!(mutate(&pod(&unlabelled), &settings()).outcome, Outcome::NotSelected);
    }

    #[test]
    fn webhook_namespace_list_limits_the_pods_mutated() {
        let mut s = settings();
        s.namespaces = strings(&["kubeflow-user"]);
        assert_eq!(mutate(&pod(&fixture("katib-trial")), &s).outcome, Outcome::Injected);
        assert_eq!(mutate(&pod(&fixture("job-inject-label")), &s).outcome, Outcome::NotSelected);
    }

    #[test]
    fn webhook_bad_annotations_admit_the_pod_unchanged_with_a_warning_naming_them() {
        let m = mutate(&pod(&fixture("bad-annotation")), &settings());
        assert_eq!((m.outcome, m.patch.len()), (Outcome::Invalid, 0));
        assert_eq!(m.warnings.len(), 1);
        assert!(m.warnings[0].contains("trialtail.io/preset") && m.warnings[0].contains("tensorflw"), "{m:?}");
        let cases = [
            (FILTERS_ANNOTATION, "loss=(\\d+"),
            (FILTERS_ANNOTATION, "(\\w+) only one group"),
            (CONTAINER_ANNOTATION, "trainer"),
            (PRESET_ANNOTATION, "keras --linger=0"),
        ];
        for (annotation, value) in cases {
            let mut json = fixture("job-inject-label");
            json["metadata"]["annotations"][annotation] = value.into();
            let m = mutate(&pod(&json), &settings());
            assert_eq!((m.outcome, m.patch.len()), (Outcome::Invalid, 0), "{annotation}={value}");
            assert!(m.warnings[0].contains(annotation), "{annotation}={value}: {:?}", m.warnings);
        }
    }

    #[test]
    fn webhook_annotations_beyond_the_cost_limits_are_refused_with_a_warning_saying_which_limit() {
        let nine = ["(?P<name>a)=(?P<value>b)"; MAX_FILTERS + 1].join("\n");
        let eight = ["(?P<name>a)=(?P<value>b)"; MAX_FILTERS].join("\n");
        let long = "x".repeat(MAX_ANNOTATION_BYTES + 1);
        let cases = [
            (FILTERS_ANNOTATION, "(\\w{450})=(\\w{450})", Some("size limit of 512 KiB")),
            (FILTERS_ANNOTATION, "(?-u)(\\w{450})=(\\w{450})", None),
            (FILTERS_ANNOTATION, "(\\w{5})=(\\w{5})", None),
            (FILTERS_ANNOTATION, nine.as_str(), Some("9 filters, more than the 8")),
            (FILTERS_ANNOTATION, eight.as_str(), None),
            (METRICS_ANNOTATION, long.as_str(), Some("32769 bytes, more than the 32 KiB")),
            (METRICS_ANNOTATION, &long[1..], None),
            (CONTAINER_ANNOTATION, long.as_str(), Some("32769 bytes")),
        ];
        for (annotation, value, refused) in cases {
            let mut json = fixture("job-inject-label");
            json["metadata"]["annotations"][annotation] = value.into();
            let m = mutate(&pod(&json), &settings());
            let what = format!("{annotation}={value:.40}");
            match refused {
                Some(reason) => {
                    assert_eq!((m.outcome, m.patch.len()), (Outcome::Invalid, 0), "{what}");
                    assert!(m.warnings[0].contains(annotation) && m.warnings[0].contains(reason), "{:?}", m.warnings);
                }
                None => assert_eq!(m.outcome, Outcome::Injected, "{what}: {:?}", m.warnings),
            }
        }
    }

    #[test]
    fn webhook_annotation_values_cannot_smuggle_in_flags() {
        let mut json = fixture("katib-trial");
        json["metadata"]["annotations"] =
            serde_json::json!({METRICS_ANNOTATION: "--linger=0", FILTERS_ANNOTATION: r"-h (\w+)=(\S+)"});
        let (m, patched) = apply(&json, &settings());
        assert_eq!(m.outcome, Outcome::Injected, "{m:?}");
        let args = sidecar_of(&pod(&patched)).args.unwrap();
        assert_eq!(args[7..], strings(&["--metrics=--linger=0", r"--filter=-h (\w+)=(\S+)"]));
    }

    #[test]
    fn webhook_filters_annotation_takes_one_trimmed_regex_per_line() {
        let mut json = fixture("katib-trial");
        let filters = "  (\\w+)=(\\S+)\r\n\n\t at (?P<step>\\d+), (?P<name>\\w+): (?P<value>\\S+)  \n";
        json["metadata"]["annotations"] = serde_json::json!({FILTERS_ANNOTATION: filters});
        let (m, patched) = apply(&json, &settings());
        assert_eq!(m.outcome, Outcome::Injected, "{m:?}");
        let args = sidecar_of(&pod(&patched)).args.unwrap();
        assert_eq!(
            args[7..],
            strings(&[r"--filter=(\w+)=(\S+)", r"--filter=at (?P<step>\d+), (?P<name>\w+): (?P<value>\S+)"])
        );
    }

    #[test]
    fn webhook_old_cluster_gets_a_regular_container() {
        let s = Settings { native_sidecar: false, ..settings() };
        for name in ["job-inject-label", "katib-trial"] {
            let json = fixture(name);
            let (m, patched) = apply(&json, &s);
            assert_eq!(m.outcome, Outcome::Injected);
            let p = pod(&patched);
            let spec = p.spec.as_ref().unwrap();
            assert_eq!(spec.containers.last().unwrap().name, "trialtail");
            assert_eq!(spec.containers.last().unwrap().restart_policy, None);
            assert_eq!(spec.init_containers, pod(&json).spec.unwrap().init_containers, "init containers untouched");
        }
    }

    #[test]
    fn webhook_mutating_a_mutated_pod_changes_nothing() {
        for native_sidecar in [true, false] {
            let s = Settings { native_sidecar, ..settings() };
            for name in FIXTURES {
                let (_, patched) = apply(&fixture(name), &s);
                let again = mutate(&pod(&patched), &s);
                assert!(again.patch.is_empty(), "{name}: {}", again.patch);
            }
        }
    }

    /// Parses an injected args list as the sidecar will.
    fn parses(args: &[String]) -> bool {
        let argv = std::iter::once("trialtail".to_string()).chain(args.iter().cloned());
        parse_run_args(argv).is_ok_and(|run| RunConfig::from_args(run, |_| None).is_ok())
    }

    #[test]
    fn webhook_every_injected_args_list_is_accepted_by_the_binarys_own_parser() {
        for native_sidecar in [true, false] {
            let s = Settings { native_sidecar, ..settings() };
            for name in FIXTURES {
                let (m, patched) = apply(&fixture(name), &s);
                if m.outcome == Outcome::Injected {
                    let args = sidecar_of(&pod(&patched)).args.unwrap();
                    assert!(parses(&args), "{name}: {args:?}");
                }
            }
        }
    }

    /// One line of a `trialtail.io/filters` annotation: regex pieces as users write them and as an attacker
    /// would – Unicode and ASCII classes, large counted repetitions, named groups, flags, unbalanced brackets.
    fn filter_line() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "\\w",
            "\\d",
            "\\s",
            "\\S",
            ".",
            "[a-z]",
            "[\\w|-]",
            "\\p{L}",
            "(?-u)\\w",
            "[^=]",
            "loss",
            "accuracy",
            "=",
            ":",
            " ",
            "\\x20",
            "(?P<name>",
            "(?P<value>",
            "(?P<step>",
            "(",
            ")",
            "(?:",
            "{",
            "}",
            "|",
            "*",
            "+",
            "?",
            "{2}",
            "{0,450}",
            "{450}",
            "{1000}",
            "{5}",
            "(?i)",
            "(?m)",
            "^",
            "$",
            "\\",
            "é",
            "\u{1b}",
            "\t",
            "[",
            "]",
        ]);
        prop::collection::vec(atoms, 1..14).prop_map(|atoms| atoms.concat())
    }

    /// Annotations a pod may carry, valid or not, within and beyond the webhook's limits.
    fn annotations() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        let filters = prop::collection::vec(filter_line(), 0..11).prop_map(|lines| lines.join("\n"));
        let filters = prop_oneof![
            4 => filters,
            1 => Just("(?P<name>\\w+)=(?P<value>\\S+)\n".repeat(9)),
            1 => Just(format!("{}=(?P<value>x)", "a".repeat(MAX_ANNOTATION_BYTES))),
        ];
        let metrics = prop_oneof![
            4 => "[a-z_,; -]{0,40}",
            1 => (1usize..40_000).prop_map(|n| "m".repeat(n)),
            1 => prop::collection::vec("[a-z]{1,12}", 0..300).prop_map(|names| names.join(",")),
        ];
        let preset =
            prop::sample::select(vec!["", "keras", "tf-step,katib", "xgboost", "nope", "keras,", "-x", "katib\n"]);
        let container = prop::sample::select(vec!["", "train", "trainer", "--container=x", "train\t"]);
        (filters, metrics, preset, container, prop::collection::vec(any::<bool>(), 4)).prop_map(
            |(filters, metrics, preset, container, present)| {
                let all = [
                    (FILTERS_ANNOTATION, filters),
                    (METRICS_ANNOTATION, metrics),
                    (PRESET_ANNOTATION, preset.to_string()),
                    (CONTAINER_ANNOTATION, container.to_string()),
                ];
                all.into_iter().zip(present).filter(|(_, p)| *p).map(|(a, _)| a).collect()
            },
        )
    }

    /// Fuzz target: the annotation parser (`sidecar_args`, through `mutate`). Whatever the annotations say, a
    /// pod is injected with arguments the binary's parser accepts and filters within the webhook's limits, or
    /// admitted unchanged with one warning naming an annotation; never a panic, never over the API server's
    /// timeout; and mutating the result again changes nothing.
    #[test]
    fn fuzz_annotations_give_parseable_bounded_args_or_one_warning() {
        let base = fixture("job-inject-label");
        crate::fuzz::fuzz("annotations", annotations(), |annotations| {
            let mut json = base.clone();
            for (key, value) in &annotations {
                json["metadata"]["annotations"][*key] = Value::String(value.clone());
            }
            let started = std::time::Instant::now();
            let (m, patched) = apply(&json, &settings());
            prop_assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
            match m.outcome {
                Outcome::Injected => {
                    let args = sidecar_of(&pod(&patched)).args.unwrap();
                    prop_assert!(parses(&args), "{:?}", args);
                    let filters: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix("--filter=")).collect();
                    prop_assert!(filters.len() <= MAX_FILTERS);
                    prop_assert!(filters.iter().all(|f| !filter_too_big(f, FILTER_SIZE_LIMIT)), "{:?}", filters);
                }
                Outcome::Invalid => {
                    prop_assert_eq!(m.warnings.len(), 1);
                    prop_assert!(m.warnings[0].starts_with("annotation trialtail.io/"), "{:?}", m.warnings);
                    prop_assert_eq!(&patched, &json);
                }
                other => prop_assert!(false, "{:?}", other),
            }
            prop_assert!(mutate(&pod(&patched), &settings()).patch.is_empty(), "mutating again changes nothing");
            Ok(())
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever the annotations say, the pod is either injected with args the parser accepts, or left
        /// unchanged with one warning naming an annotation.
        #[test]
        fn webhook_any_annotations_give_parseable_args_or_a_warning(
            metrics in "[a-z_, ;-]{0,20}",
            preset in prop::sample::select(vec!["", "keras", "tf-step,katib", "xgboost", "nope", "keras,", "-x"]),
            filters in "[a-z()?P<>\\\\d+,=.*\\n -]{0,40}",
        ) {
            let mut json = fixture("job-inject-label");
            let a = &mut json["metadata"]["annotations"];
            a[METRICS_ANNOTATION] = metrics.into();
            a[PRESET_ANNOTATION] = preset.into();
            a[FILTERS_ANNOTATION] = filters.into();
            let (m, patched) = apply(&json, &settings());
            match m.outcome {
                Outcome::Injected => prop_assert!(parses(&sidecar_of(&pod(&patched)).args.unwrap())),
                Outcome::Invalid => {
                    prop_assert_eq!(m.warnings.len(), 1);
                    prop_assert!(m.warnings[0].starts_with("annotation trialtail.io/"));
                    prop_assert_eq!(patched, json);
                }
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
