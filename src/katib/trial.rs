//! A Katib `Trial` as the native sidecar reads it, once at start: which metrics it asks for and how Katib
//! compares them, how Katib collects them (the collector kind), what Katib would parse lines with, and which
//! pod and container train.
//!
//! Field names are Katib's (`TrialSpec` in `pkg/apis/controller/trials/v1beta1/trial_types.go`, the objective and
//! collector types in `pkg/apis/controller/common/v1beta1/common_types.go`). An Experiment can stand in for its
//! Trials ([`Trial::from_experiment`]): Katib copies the defaulted Experiment's objective, collector spec and
//! primary container into every Trial it creates (`generateTrial`,
//! `pkg/controller.v1beta1/experiment/experiment_controller_util.go`), with the defaults of
//! `pkg/apis/controller/experiments/v1beta1/experiment_defaults.go` applied here too (not the Kubeflow-job
//! `primaryPodLabels` defaults, which depend on the trial template's kind).
//!
//! [`Trial::role`] is the decision the sidecar lives by: report to Katib (DB rows, Trial status) only where no
//! Katib collector does, i.e. collector kind `Push` or a `Custom` collector that is trialtail itself, and only in
//! the primary pod; everywhere else observe for Prometheus only. Pure: no I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::aggregate::MetricStats;

/// Katib's collector kinds (`CollectorKind` in `common_types.go`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorKind {
    /// Katib's default: the training output is redirected into a file its collector tails.
    StdOut,
    /// Katib's collector tails a file the training writes.
    File,
    /// Katib's collector reads TensorFlow event files.
    TensorFlowEvent,
    /// Katib scrapes a Prometheus endpoint.
    PrometheusMetric,
    /// A collector container the Experiment names.
    Custom,
    /// Nothing is injected: the training (or trialtail) reports to the DB manager itself.
    Push,
    /// A kind this version does not know.
    Other(String),
}

impl CollectorKind {
    /// The kind named `s`; an empty or missing kind is Katib's default, `StdOut`
    /// (`setDefaultMetricsCollector` in `experiment_defaults.go`).
    pub fn parse(s: &str) -> Self {
        match s {
            "" | "StdOut" => CollectorKind::StdOut,
            "File" => CollectorKind::File,
            "TensorFlowEvent" => CollectorKind::TensorFlowEvent,
            "PrometheusMetric" => CollectorKind::PrometheusMetric,
            "Custom" => CollectorKind::Custom,
            "Push" => CollectorKind::Push,
            other => CollectorKind::Other(other.to_string()),
        }
    }

    /// The kind as Katib spells it.
    pub fn name(&self) -> &str {
        match self {
            CollectorKind::StdOut => "StdOut",
            CollectorKind::File => "File",
            CollectorKind::TensorFlowEvent => "TensorFlowEvent",
            CollectorKind::PrometheusMetric => "PrometheusMetric",
            CollectorKind::Custom => "Custom",
            CollectorKind::Push => "Push",
            CollectorKind::Other(s) => s,
        }
    }
}

/// The container Katib's webhook adds for kinds `StdOut` and `File` (the first of
/// [`crate::k8s::KATIB_COLLECTOR_CONTAINERS`]); it re-prints the training output, which kind `StdOut` redirected
/// into a file (`printMetricsFile`, `cmd/metricscollector/v1beta1/file-metricscollector/main.go`).
pub const KATIB_LOGGER_CONTAINER: &str = crate::k8s::KATIB_COLLECTOR_CONTAINERS[0];

/// Which of a metric's values Katib compares trials by (`metricStrategies[].value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Min,
    Max,
    Latest,
}

impl Strategy {
    /// The value `m` has under this strategy, as written to the status.
    pub fn pick(self, m: &MetricStats) -> Option<Cow<'_, str>> {
        match self {
            Strategy::Min => m.min.as_ref().map(|(_, s)| Cow::Borrowed(s.as_str())),
            Strategy::Max => m.max.as_ref().map(|(_, s)| Cow::Borrowed(s.as_str())),
            Strategy::Latest => (m.count > 0).then(|| m.latest_raw.as_str()),
        }
    }

    /// The strategy as Katib spells it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Min => "min",
            Strategy::Max => "max",
            Strategy::Latest => "latest",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "min" => Some(Strategy::Min),
            "max" => Some(Strategy::Max),
            "latest" => Some(Strategy::Latest),
            _ => None,
        }
    }

    /// Katib's default for every metric of an objective of type `objective_type`: `min` for `minimize`, `max`
    /// for `maximize` (additional metrics included, `setDefaultObjective`), else `latest`.
    fn default_for(objective_type: Option<&str>) -> Self {
        match objective_type {
            Some("minimize") => Strategy::Min,
            Some("maximize") => Strategy::Max,
            _ => Strategy::Latest,
        }
    }
}

/// What the sidecar does in a pod of this Trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// trialtail is the Trial's collector: rows to Katib's DB manager, observations to the Trial's status.
    Report,
    /// Someone else reports (or nothing is to be reported from this pod): Prometheus only, for this reason.
    Observe(Why),
}

/// Why a sidecar only observes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The pod does not carry the Trial's `primaryPodLabels`.
    NotPrimary,
    /// Katib injects its own collector for this kind.
    KatibCollector(String),
    /// The Experiment names another custom collector.
    OtherCustom(String),
    /// The Trial names no objective metric.
    NoObjective,
    /// Katib's parsing for the Trial cannot be built (its `metricsFormat`).
    Rules(String),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NotPrimary => write!(
                f,
                "this pod does not carry the Trial's primaryPodLabels: Katib reads the primary pod's metrics only"
            ),
            Why::KatibCollector(kind) => write!(
                f,
                "the Trial's metrics collector kind is {kind}: Katib's own collector reports this trial to its DB \
                 and status (use kind Push to have trialtail report)"
            ),
            Why::OtherCustom(image) => {
                write!(f, "the Trial's custom metrics collector is {image}, not trialtail: it reports this trial")
            }
            Why::NoObjective => write!(f, "the Trial names no objective metric"),
            Why::Rules(e) => write!(f, "the Trial's metricsFormat cannot be used ({e}); parsing with the flags' rules"),
        }
    }
}

/// The parts of a Trial the sidecar uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trial {
    /// `metadata.name`.
    pub name: String,
    /// `spec.objective.objectiveMetricName`.
    pub objective: Option<String>,
    /// `spec.objective.additionalMetricNames`.
    pub additional: Vec<String>,
    /// `spec.objective.type`: `minimize` or `maximize`.
    pub objective_type: Option<String>,
    /// `spec.objective.metricStrategies`, as listed (unknown values are said once and read as `latest`).
    pub strategies: Vec<(String, Strategy)>,
    /// `spec.metricsCollector.collector.kind` (`None`: not given).
    pub collector: Option<CollectorKind>,
    /// `spec.metricsCollector.collector.customCollector.image`.
    pub custom_image: Option<String>,
    /// `spec.metricsCollector.source.filter.metricsFormat`.
    pub metrics_format: Vec<String>,
    /// `spec.primaryContainerName`.
    pub primary_container: Option<String>,
    /// `spec.primaryPodLabels`.
    pub primary_pod_labels: BTreeMap<String, String>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn strings(v: &Value, pointer: &str) -> Vec<String> {
    let list = v.pointer(pointer).and_then(Value::as_array).into_iter().flatten();
    list.filter_map(Value::as_str).map(str::to_string).collect()
}

/// Whether `image` is trialtail's: its repository's last path segment, without tag or digest, is `trialtail`.
pub fn is_trialtail_image(image: &str) -> bool {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    last.split(':').next() == Some("trialtail")
}

impl Trial {
    /// Reads a Trial object (as JSON); what it does not say stays unset.
    pub fn from_json(v: &Value) -> Trial {
        let mut strategies = Vec::new();
        for s in v.pointer("/spec/objective/metricStrategies").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = s.get("name").and_then(Value::as_str) else { continue };
            let value = s.get("value").and_then(Value::as_str).unwrap_or("");
            let strategy = Strategy::parse(value).unwrap_or_else(|| {
                tracing::warn!(metric = name, strategy = value, "unknown metric strategy (min, max, latest): latest");
                Strategy::Latest
            });
            strategies.push((name.to_string(), strategy));
        }
        let labels = v.pointer("/spec/primaryPodLabels").and_then(Value::as_object).into_iter().flatten();
        Trial {
            name: text(v, "/metadata/name").unwrap_or_default().to_string(),
            objective: text(v, "/spec/objective/objectiveMetricName").map(str::to_string),
            additional: strings(v, "/spec/objective/additionalMetricNames"),
            objective_type: text(v, "/spec/objective/type").map(str::to_string),
            strategies,
            collector: v
                .pointer("/spec/metricsCollector/collector/kind")
                .and_then(Value::as_str)
                .map(CollectorKind::parse),
            custom_image: text(v, "/spec/metricsCollector/collector/customCollector/image").map(str::to_string),
            metrics_format: strings(v, "/spec/metricsCollector/source/filter/metricsFormat"),
            primary_container: text(v, "/spec/primaryContainerName").map(str::to_string),
            primary_pod_labels: labels.filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect(),
        }
    }

    /// The Trial Katib would create for an Experiment (`spec.objective`, `spec.metricsCollectorSpec`,
    /// `spec.trialTemplate.primaryContainerName` and `primaryPodLabels`), with Katib's defaults: collector kind
    /// `StdOut`, and a strategy for every metric from the objective type.
    pub fn from_experiment(v: &Value) -> Trial {
        let spec = v.get("spec").cloned().unwrap_or(Value::Null);
        let mut trial_json = serde_json::json!({
            "metadata": {"name": format!("{}-trial", text(v, "/metadata/name").unwrap_or("experiment"))},
            "spec": {
                "objective": spec.get("objective").cloned().unwrap_or(Value::Null),
                "metricsCollector": spec.get("metricsCollectorSpec").cloned().unwrap_or(Value::Null),
                "primaryContainerName": spec.pointer("/trialTemplate/primaryContainerName").cloned(),
                "primaryPodLabels": spec.pointer("/trialTemplate/primaryPodLabels").cloned(),
            }
        });
        if trial_json.pointer("/spec/metricsCollector/collector/kind").and_then(Value::as_str).is_none() {
            trial_json["spec"]["metricsCollector"] = serde_json::json!({"collector": {"kind": "StdOut"}});
        }
        let mut trial = Trial::from_json(&trial_json);
        let default = Strategy::default_for(trial.objective_type.as_deref());
        for name in trial.objective.iter().chain(&trial.additional).cloned().collect::<Vec<_>>() {
            if !trial.strategies.iter().any(|(n, _)| *n == name) {
                trial.strategies.push((name, default));
            }
        }
        trial
    }

    /// Reads the first Trial or Experiment of YAML (one or more documents) or JSON text (`--assume-trial`).
    pub fn parse_document(text: &str) -> Result<Trial, String> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| format!("not YAML or JSON: {e}"))?;
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d.get("kind")?.as_str()).collect();
        for doc in &docs {
            match doc.get("kind").and_then(Value::as_str) {
                Some("Experiment") => return Ok(Trial::from_experiment(doc)),
                Some("Trial") => return Ok(Trial::from_json(doc)),
                _ => {}
            }
        }
        Err(format!(
            "no Katib Trial or Experiment in it (kinds: {})",
            if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") }
        ))
    }

    /// The metric names Katib's collector would be given (`-m`): the objective first, then the additional ones.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in self.objective.iter().chain(&self.additional) {
            if !name.is_empty() && !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// The metrics written to the status: the objective, the additional ones, then the other names in
    /// `metricStrategies` (Katib's controller keys its own observation on the strategies), without duplicates.
    pub fn requested(&self) -> Vec<String> {
        let mut names = self.names();
        for (name, _) in &self.strategies {
            if !name.is_empty() && !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// The objective and its strategy: the one in `metricStrategies`, else Katib's default from the type.
    pub fn objective_strategy(&self) -> Option<(String, Strategy)> {
        let name = self.objective.clone()?;
        let listed = self.strategies.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
        Some((name, listed.unwrap_or_else(|| Strategy::default_for(self.objective_type.as_deref()))))
    }

    /// The collector kind, Katib's default when the Trial gives none.
    pub fn collector_kind(&self) -> CollectorKind {
        self.collector.clone().unwrap_or(CollectorKind::StdOut)
    }

    /// Whether `pod` carries every label of `primaryPodLabels` (no labels: every pod is primary), as Katib's
    /// webhook decides (`isPrimaryPod`, `pkg/webhook/v1beta1/pod/utils.go`).
    pub fn is_primary(&self, pod: &Pod) -> bool {
        let labels = pod.metadata.labels.as_ref();
        self.primary_pod_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }

    /// What a sidecar in `pod` does (`None`: the pod is not known, as with `--check-config`).
    pub fn role(&self, pod: Option<&Pod>) -> Role {
        if pod.is_some_and(|p| !self.is_primary(p)) {
            return Role::Observe(Why::NotPrimary);
        }
        let kind = self.collector_kind();
        match kind {
            CollectorKind::Push => {}
            CollectorKind::Custom => match self.custom_image.as_deref() {
                Some(image) if is_trialtail_image(image) => {}
                other => return Role::Observe(Why::OtherCustom(other.unwrap_or("an unnamed image").to_string())),
            },
            other => return Role::Observe(Why::KatibCollector(other.name().to_string())),
        }
        if self.objective.is_none() {
            return Role::Observe(Why::NoObjective);
        }
        Role::Report
    }

    /// The container whose log holds the training output: the primary container, except with kind `StdOut`,
    /// where Katib redirected it into a file and its collector container re-prints it (when `pod` has one).
    pub fn log_container(&self, pod: &Pod) -> Option<&'static str> {
        let has = |name: &str| pod.spec.iter().flat_map(|s| &s.containers).any(|c| c.name == name);
        (self.collector_kind() == CollectorKind::StdOut && has(KATIB_LOGGER_CONTAINER))
            .then_some(KATIB_LOGGER_CONTAINER)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(labels: Value, containers: &[&str]) -> Pod {
        let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c})).collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "labels": labels}, "spec": {"containers": containers}}))
            .unwrap()
    }

    fn trial(collector: Value) -> Trial {
        Trial::from_json(&json!({"metadata": {"name": "t1"}, "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy", "additionalMetricNames": ["loss"]},
            "metricsCollector": collector, "primaryContainerName": "training"}}))
    }

    #[test]
    fn trialtail_reports_only_where_no_katib_collector_does() {
        let push = trial(json!({"collector": {"kind": "Push"}}));
        assert_eq!(push.role(None), Role::Report);
        let ours = trial(json!({"collector": {"kind": "Custom",
            "customCollector": {"name": "trialtail", "image": "ghcr.io/trialtail/trialtail:0.4@sha256:ab"}}}));
        assert_eq!(ours.role(None), Role::Report);
        let theirs =
            trial(json!({"collector": {"kind": "Custom", "customCollector": {"name": "c", "image": "me/collector"}}}));
        assert_eq!(theirs.role(None), Role::Observe(Why::OtherCustom("me/collector".into())));
        for kind in ["StdOut", "File", "TensorFlowEvent", "PrometheusMetric"] {
            let t = trial(json!({"collector": {"kind": kind}}));
            assert_eq!(t.role(None), Role::Observe(Why::KatibCollector(kind.into())), "{kind}");
        }
        let defaulted = trial(Value::Null);
        assert_eq!(defaulted.role(None), Role::Observe(Why::KatibCollector("StdOut".into())), "Katib's default");
    }

    #[test]
    fn only_the_primary_pod_reports() {
        let mut t = trial(json!({"collector": {"kind": "Push"}}));
        t.primary_pod_labels = BTreeMap::from([("training.kubeflow.org/job-role".into(), "master".into())]);
        let master = pod(json!({"training.kubeflow.org/job-role": "master"}), &["pytorch"]);
        let worker = pod(json!({"training.kubeflow.org/job-role": "worker"}), &["pytorch"]);
        assert_eq!(t.role(Some(&master)), Role::Report);
        assert_eq!(t.role(Some(&worker)), Role::Observe(Why::NotPrimary));
        assert_eq!(t.role(Some(&pod(json!({}), &["pytorch"]))), Role::Observe(Why::NotPrimary));
    }

    #[test]
    fn the_stdout_kind_reads_katibs_logger_container() {
        let stdout = trial(json!({"collector": {"kind": "StdOut"}}));
        let with_katib = pod(json!({}), &["training", KATIB_LOGGER_CONTAINER]);
        assert_eq!(stdout.log_container(&with_katib), Some(KATIB_LOGGER_CONTAINER));
        assert_eq!(stdout.log_container(&pod(json!({}), &["training"])), None);
        let push = trial(json!({"collector": {"kind": "Push"}}));
        assert_eq!(push.log_container(&with_katib), None);
    }

    #[test]
    fn names_and_strategies_follow_katib() {
        let mut t = trial(json!({"collector": {"kind": "Push"}}));
        t.strategies = vec![("loss".into(), Strategy::Min), ("val_loss".into(), Strategy::Min)];
        assert_eq!(t.names(), ["accuracy", "loss"]);
        assert_eq!(t.requested(), ["accuracy", "loss", "val_loss"]);
        assert_eq!(t.objective_strategy(), Some(("accuracy".into(), Strategy::Max)), "the type's default");
        t.strategies.push(("accuracy".into(), Strategy::Latest));
        assert_eq!(t.objective_strategy(), Some(("accuracy".into(), Strategy::Latest)));
        t.objective_type = None;
        t.strategies.clear();
        assert_eq!(t.objective_strategy(), Some(("accuracy".into(), Strategy::Latest)));
    }

    #[test]
    fn an_experiment_gives_the_trial_katib_would_create() {
        let experiment = r#"
apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata: {name: mnist}
spec:
  objective: {type: minimize, objectiveMetricName: loss, additionalMetricNames: [accuracy]}
  metricsCollectorSpec:
    collector: {kind: Push}
    source:
      filter:
        metricsFormat: ["{metricName: ([\\w|-]+), metricValue: ((-?\\d+)(\\.\\d+)?)}"]
  trialTemplate:
    primaryContainerName: training
"#;
        let t = Trial::parse_document(experiment).unwrap();
        assert_eq!(t.collector_kind(), CollectorKind::Push);
        assert_eq!(t.metrics_format, [r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"]);
        assert_eq!(t.primary_container.as_deref(), Some("training"));
        assert_eq!(t.strategies, [("loss".into(), Strategy::Min), ("accuracy".into(), Strategy::Min)]);
        let bare = Trial::parse_document("kind: Experiment\nspec: {objective: {objectiveMetricName: a}}").unwrap();
        assert_eq!(bare.collector_kind(), CollectorKind::StdOut);
        assert!(Trial::parse_document("kind: Job").unwrap_err().contains("Job"));
        let several = "kind: ServiceAccount\n---\nkind: Trial\nmetadata: {name: t9}\n";
        assert_eq!(Trial::parse_document(several).unwrap().name, "t9", "the first Trial of several documents");
        assert!(Trial::parse_document(": :").is_err());
    }

    #[test]
    fn a_strategy_picks_the_value_katib_compares_by() {
        let m = MetricStats {
            name: "acc".into(),
            count: 3,
            latest_raw: "0.7".into(),
            latest: Some(0.7),
            min: Some((0.5, "0.5".into())),
            max: Some((0.9, "0.9".into())),
            step: None,
            line: 3,
        };
        let picked: Vec<_> = [Strategy::Min, Strategy::Max, Strategy::Latest].map(|s| s.pick(&m)).into();
        assert_eq!(picked, [Some("0.5".into()), Some("0.9".into()), Some("0.7".into())]);
        let none = MetricStats { count: 0, min: None, max: None, ..m };
        assert_eq!(Strategy::Latest.pick(&none), None);
    }

    #[test]
    fn trialtail_images_are_recognised_by_repository() {
        for image in ["trialtail", "ghcr.io/trialtail/trialtail:latest", "r.io:5000/x/trialtail@sha256:00"] {
            assert!(is_trialtail_image(image), "{image}");
        }
        for image in ["ghcr.io/trialtail/other:trialtail", "trialtail-fork", "r.io:5000/trialtail/x"] {
            assert!(!is_trialtail_image(image), "{image}");
        }
    }
}
