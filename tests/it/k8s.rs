//! trialtail against a real Kubernetes control plane: kube-apiserver, etcd and kube-controller-manager built
//! from their published Go modules (`tests/k8s/`, `support::k8s_rig`), one cluster per test, with a stand-in for
//! the kubelet (`support::kubelet`). What each test proves that the fake API server (`support::kube_fake`) cannot
//! is listed in `tests/k8s/README.md`; in short, everything asserted here is what the API server stored or
//! served: the install validated against the real schemas, the webhook called through a real
//! MutatingWebhookConfiguration and its patch stored next to the API server's own admission (ServiceAccount,
//! Pod Security), the sidecar acting with a real service-account token under the install's RBAC and reading its
//! log through the API server's proxy to a kubelet.
//!
//! The fixtures are built here: namespaces labelled as the install asks (`trialtail.io/injection: enabled`,
//! Pod Security `restricted` enforced), pods that meet `restricted` themselves (so the sidecar is what is being
//! checked), a Katib Trial, its Job and their pod linked by ownerReferences with real UIDs, and, for Katib trial
//! pods, the shapes Katib's own pod webhook leaves (`pkg/webhook/v1beta1/pod/inject_webhook.go`: the label
//! `katib.kubeflow.org/trial`, and per collector kind its collector container).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::BodyExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

use crate::root;
use crate::support::k8s_rig::K8sRig;
use crate::support::kubelet::{Handler, Kubelet, NODE, serve_tls, text};
use crate::support::{PATIENCE, free_addr, get};

/// The image the webhook injects (its default, and what the manifests say).
const IMAGE: &str = "ghcr.io/trialtail/trialtail:0.1.0";
/// The training namespace of every test.
const NS: &str = "team-a";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A CA and a serving certificate it signed for 127.0.0.1, written to `dir` as `tls.crt`, `tls.key`; returns
/// the CA (PEM), the caBundle of a webhook configuration.
fn loopback_pki(dir: &Path) -> String {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "trialtail test webhook CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = server.signed_by(&key, &Issuer::new(ca, ca_key)).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca_cert.pem()
}

/// `trialtail webhook` on loopback with a certificate for 127.0.0.1 (the process of the `webhook` tests), and the
/// CA that signed it.
struct Webhook {
    process: crate::webhook::Webhook,
    ca: String,
}

impl Webhook {
    fn start(dir: &Path) -> Webhook {
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        let ca = loopback_pki(&dir.join("tls"));
        Webhook { process: crate::webhook::Webhook::start(dir, &[]), ca }
    }

    fn output(&self) -> String {
        self.process.output()
    }

    /// A counter of the webhook's `/metrics` (0 when the series is not there yet).
    fn counter(&self, series: &str) -> u64 {
        let text = get(self.process.plain, "/metrics", None).expect("the webhook's /metrics").body;
        let line = text.lines().find(|l| l.split(' ').next() == Some(series));
        line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
    }

    /// SIGTERM, and the exit.
    fn stop(&mut self) {
        self.process.terminate();
        let status = self.process.wait();
        assert!(status.success(), "{status}\n{}", self.output());
    }
}

/// The shipped MutatingWebhookConfiguration (`manifests/base/mutatingwebhook.yaml`) with only its client config
/// changed: the URL of a webhook on loopback and the CA that signed it, instead of the Service and cert-manager's
/// CA injection. With `reinvocation`, every webhook of it gets that `reinvocationPolicy`.
fn webhook_configuration(url: &str, ca: &str, reinvocation: Option<&str>) -> Value {
    let text = std::fs::read_to_string(root().join("manifests/base/mutatingwebhook.yaml")).unwrap();
    let mut config: Value = serde_saphyr::from_str(&text).unwrap();
    config["metadata"].as_object_mut().unwrap().remove("annotations");
    for w in config["webhooks"].as_array_mut().unwrap() {
        w["clientConfig"] = json!({"url": url, "caBundle": b64(ca.as_bytes())});
        if let Some(policy) = reinvocation {
            w["reinvocationPolicy"] = json!(policy);
        }
    }
    config
}

/// Registers `webhook` through the shipped configuration and waits until the API server calls it (a
/// server-side dry run of an opted-in pod comes back with the sidecar).
fn register(rig: &K8sRig, webhook: &Webhook, reinvocation: Option<&str>) {
    let url = format!("https://{}/mutate", webhook.process.tls);
    rig.apply(&webhook_configuration(&url, &webhook.ca, reinvocation).to_string());
    let probe = pod("probe", json!({"trialtail.io/inject": "true"}), json!({}));
    rig.wait_for("the API server to call the webhook", || {
        let out = rig.kubectl(&["create", "--dry-run=server", "-o", "json", "-f", "-"], Some(&probe.to_string()));
        let pod: Value = serde_json::from_slice(&out.stdout).ok()?;
        sidecar_of(&pod).map(drop)
    });
}

/// A pod in [`NS`] that meets Pod Security `restricted` by itself, with one container `train`.
fn pod(name: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels, "annotations": annotations},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [restricted_container("train", &["python3", "train.py"])],
        },
    })
}

fn restricted_container(name: &str, command: &[&str]) -> Value {
    json!({"name": name, "image": "python:3.12-slim", "command": command,
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}})
}

/// The `trialtail` container of a pod (init or regular), if any.
fn sidecar_of(pod: &Value) -> Option<&Value> {
    let spec = &pod["spec"];
    let all = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().into_iter().flatten());
    let mut found = all.filter(|c| c["name"] == "trialtail");
    let first = found.next();
    assert!(found.next().is_none(), "two trialtail containers: {pod:#}");
    first
}

/// Creates `pod` through the API server; returns the stored pod and kubectl's stderr (the warnings).
fn create(rig: &K8sRig, pod: &Value) -> (Value, String) {
    let (stdout, stderr) = rig.kubectl_ok(&["create", "-o", "json", "-f", "-"], Some(&pod.to_string()));
    (serde_json::from_str(&stdout).unwrap(), stderr)
}

/// What `mutate` promises for `submitted`: its patch applied to the pod as submitted.
fn promised(submitted: &Value) -> (trialtail::webhook::Outcome, Value) {
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(submitted.clone()).unwrap();
    let m = trialtail::webhook::mutate(&typed, &trialtail::webhook::Settings::new(IMAGE));
    let mut expected = submitted.clone();
    json_patch::patch(&mut expected, &m.patch).unwrap();
    (m.outcome, expected)
}

/// The service-account token mount the ServiceAccount admission plugin adds to every container.
const TOKEN_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A stored container without what the API server adds to every container (defaults: termination message, image
/// pull policy, empty resources, a downward-API field's `apiVersion`, the probe's timings and scheme; and the
/// token mount, which is checked here): what is left must be exactly what was submitted or patched in.
fn without_server_additions(container: &Value) -> Value {
    let mut c = container.clone();
    let obj = c.as_object_mut().unwrap();
    for key in ["terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy"] {
        obj.remove(key);
    }
    if obj.get("resources") == Some(&json!({})) {
        obj.remove("resources");
    }
    let mounts = obj.remove("volumeMounts").unwrap_or(json!([]));
    let token: Vec<&Value> = mounts.as_array().unwrap().iter().filter(|m| m["mountPath"] == TOKEN_MOUNT).collect();
    assert_eq!(token.len(), 1, "one token mount in {container:#}");
    assert_eq!(token[0]["readOnly"], true);
    assert_eq!(mounts.as_array().unwrap().len(), 1, "only the token mount in {container:#}");
    for var in obj.get_mut("env").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(field) = var.pointer_mut("/valueFrom/fieldRef").and_then(Value::as_object_mut) {
            assert_eq!(field.remove("apiVersion"), Some(json!("v1")), "the fieldRef's defaulted apiVersion");
        }
    }
    if let Some(probe) = obj.get_mut("readinessProbe").and_then(Value::as_object_mut) {
        for key in ["timeoutSeconds", "successThreshold", "failureThreshold"] {
            probe.remove(key);
        }
        if let Some(http) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
            http.remove("scheme");
        }
    }
    c
}

/// Checks that the stored pod is what `mutate` promised for the submitted one: the sidecar exactly as patched
/// in (plus the API server's defaults and the service-account token mount, which the ServiceAccount plugin adds
/// when it runs again after a webhook changed the pod), the pod's own containers as submitted, labels and
/// annotations as patched.
fn assert_stored_as_promised(stored: &Value, expected: &Value) {
    let (Some(got), Some(want)) = (sidecar_of(stored), sidecar_of(expected)) else {
        panic!("no sidecar stored:\n{stored:#}\nexpected:\n{expected:#}")
    };
    assert_eq!(without_server_additions(got), *want, "the sidecar as stored");
    for (stored_c, want_c) in
        stored["spec"]["containers"].as_array().unwrap().iter().zip(expected["spec"]["containers"].as_array().unwrap())
    {
        assert_eq!(without_server_additions(stored_c), *want_c, "the pod's own container as stored");
    }
    assert_eq!(
        stored["spec"]["containers"].as_array().unwrap().len(),
        expected["spec"]["containers"].as_array().unwrap().len()
    );
    assert_eq!(stored["metadata"]["labels"], expected["metadata"]["labels"]);
    assert_eq!(stored["metadata"]["annotations"], expected["metadata"]["annotations"]);
}

// ------------------------------------------------------------------------------------------------ the install

/// The kustomizations a user applies, each as a directory: the install (`manifests/`: base + the self-managed
/// certificate), the cert-manager overlay, and the install with every optional component (written into a temporary
/// directory beside a link to `manifests/`, as a user's own kustomization would name it: kustomize takes no
/// absolute paths). The temporary directory lives as long as the list.
fn installs() -> (tempfile::TempDir, Vec<(&'static str, std::path::PathBuf)>) {
    let manifests = root().join("manifests");
    let composed = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&manifests, composed.path().join("m")).unwrap();
    std::fs::write(
        composed.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - m\ncomponents:\n  \
         - m/components/prometheus-operator\n  - m/components/monitoring\n",
    )
    .unwrap();
    let dirs = vec![
        ("manifests/", manifests.clone()),
        ("manifests/overlays/cert-manager", manifests.join("overlays/cert-manager")),
        ("manifests/ + components prometheus-operator, monitoring", composed.path().to_path_buf()),
    ];
    (composed, dirs)
}

/// Every object of a kustomization as kustomize renders it.
fn rendered(rig: &K8sRig, dir: &Path) -> Vec<Value> {
    let (yaml, _) = rig.kubectl_ok(&["kustomize", &dir.to_string_lossy()], None);
    serde_saphyr::from_multiple(&yaml).unwrap()
}

/// Whether `stored` holds everything in `wanted` (objects: every key, recursively; lists: the same length, item
/// by item; scalars: equal). Returns where it does not.
fn holds(stored: &Value, wanted: &Value, at: &str) -> Result<(), String> {
    match (stored, wanted) {
        (Value::Object(s), Value::Object(w)) => w.iter().try_for_each(|(k, v)| {
            let inner = format!("{at}.{k}");
            s.get(k).map_or_else(|| Err(format!("{inner} missing")), |got| holds(got, v, &inner))
        }),
        (Value::Array(s), Value::Array(w)) if s.len() == w.len() => {
            s.iter().zip(w).enumerate().try_for_each(|(i, (got, v))| holds(got, v, &format!("{at}[{i}]")))
        }
        (got, want) if got == want => Ok(()),
        (got, want) => Err(format!("{at}: stored {got}, applied {want}")),
    }
}

#[test]
fn the_install_applies_for_real_and_the_api_server_stores_every_object_and_the_rbac_as_written() {
    let Some(rig) = K8sRig::start() else { return };
    // The CRDs the install and its components need, from their projects' published modules (tests/k8s/rig.sh,
    // CRD_SOURCES).
    rig.install_crds(&[
        "cert-manager.io_issuers.yaml",
        "cert-manager.io_certificates.yaml",
        "monitoring.coreos.com_podmonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
        "trial.yaml",
        "experiment.yaml",
    ]);
    let dir = root().join("manifests");
    let (_composed, installs) = installs();
    let mut kinds = std::collections::BTreeSet::new();
    for (name, install) in &installs {
        let (applied, warnings) =
            rig.kubectl_ok(&["apply", "--validate=strict", "-k", &install.to_string_lossy()], None);
        // Not one warning: strict field validation found no unknown or duplicate field in any object (CRD schemas
        // included), and the Deployment's pod template meets Pod Security `restricted`, which its namespace
        // enforces (the API server warns about workload templates that would violate it).
        assert_eq!(warnings.trim(), "", "kubectl apply -k {name}:\n{applied}");
        for object in &rendered(&rig, install) {
            let kind = object["kind"].as_str().unwrap();
            let name = object["metadata"]["name"].as_str().unwrap();
            kinds.insert(kind.to_string());
            let mut args = vec![kind, name];
            if let Some(ns) = object["metadata"]["namespace"].as_str() {
                args.extend(["-n", ns]);
            }
            let stored = rig.get(&args);
            if let Err(e) = holds(&stored, object, kind) {
                panic!("{kind} {name} is not stored as applied: {e}\n{stored:#}");
            }
        }
    }
    for kind in [
        "Certificate",
        "ConfigMap",
        "Deployment",
        "MutatingWebhookConfiguration",
        "NetworkPolicy",
        "PodMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(kind), "{kind} applied: {kinds:?}");
    }
    // The webhook's configuration as the API server keeps it: Ignore on failure, 5 s, no side effects.
    let config = rig.get(&["mutatingwebhookconfiguration", "trialtail"]);
    for w in config["webhooks"].as_array().unwrap() {
        assert_eq!(
            (&w["failurePolicy"], &w["timeoutSeconds"], &w["sideEffects"]),
            (&json!("Ignore"), &json!(5), &json!("None"))
        );
        assert_eq!(w["reinvocationPolicy"], "IfNeeded", "as the manifest says: the order of webhooks must not matter");
    }

    // The per-namespace RBAC, applied as the README says, grants exactly the sidecar's verbs.
    rig.namespace(NS, &[("trialtail.io/injection", "enabled")]);
    let rbac = std::fs::read_to_string(dir.join("rbac.yaml")).unwrap().replace("kubeflow-user", NS);
    assert_eq!(rig.apply(&rbac).trim(), "");
    // Asked as the API server's authorizer is asked (a SubjectAccessReview for the service account's token
    // identity), with group, resource and subresource spelt out: CRDs that are not installed count too.
    let can = |ns: &str, verb: &str, resource: &str, sub: Option<&str>| {
        let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
        let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": format!("system:serviceaccount:{NS}:trialtail"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{NS}"), "system:authenticated"],
            "resourceAttributes": {"namespace": ns, "verb": verb, "group": group, "resource": resource,
                "subresource": sub.unwrap_or("")}}});
        let (answer, _) = rig.kubectl_ok(&["create", "-o", "json", "-f", "-"], Some(&review.to_string()));
        let answer: Value = serde_json::from_str(&answer).unwrap();
        answer["status"]["allowed"] == true
    };
    let granted = [
        ("get", "pods", None),
        ("watch", "pods", None),
        ("get", "pods", Some("log")),
        ("get", "jobs.batch", None),
        ("get", "trials.kubeflow.org", None),
        ("patch", "trials.kubeflow.org", Some("status")),
        ("get", "tfjobs.kubeflow.org", None),
        ("get", "pytorchjobs.kubeflow.org", None),
    ];
    for (verb, resource, sub) in granted {
        assert!(can(NS, verb, resource, sub), "{verb} {resource} {sub:?} should be granted in {NS}");
        assert!(!can("default", verb, resource, sub), "{verb} {resource} {sub:?} granted outside {NS}");
    }
    let refused = [
        ("list", "pods", None),
        ("create", "pods", None),
        ("get", "secrets", None),
        ("patch", "trials.kubeflow.org", None),
        ("update", "trials.kubeflow.org", Some("status")),
        ("list", "trials.kubeflow.org", None),
        ("get", "experiments.kubeflow.org", None),
    ];
    for (verb, resource, sub) in refused {
        assert!(!can(NS, verb, resource, sub), "{verb} {resource} {sub:?} should not be granted");
    }

    // The native-sidecar example, with the RBAC copy it needs, in its own namespace.
    rig.namespace("kubeflow-user", &[]);
    let rbac = std::fs::read_to_string(dir.join("rbac.yaml")).unwrap();
    rig.apply(&rbac);
    let example = std::fs::read_to_string(dir.join("examples/native-sidecar-job.yaml")).unwrap();
    assert_eq!(rig.apply(&example).trim(), "");
    let job = rig.get(&["-n", "kubeflow-user", "job", "mnist-lr-0-01"]);
    let init = &job["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!((&init["name"], &init["restartPolicy"]), (&json!("trialtail"), &json!("Always")), "{job:#}");
    let experiment = rig.get(&["-n", "kubeflow-user", "experiment", "mnist-lr"]);
    assert_eq!(experiment["spec"]["metricsCollectorSpec"]["collector"]["kind"], "Custom");
}

// ------------------------------------------------------------------------------------------------ the webhook

/// A Katib trial pod as Katib's pod webhook leaves it for collector kind Push: its labels and `KATIB_TRIAL_NAME`
/// on the primary container, no collector container.
fn katib_push_pod(name: &str, trial: &str) -> Value {
    let mut p =
        pod(name, json!({"katib.kubeflow.org/trial": trial, "katib.kubeflow.org/experiment": "exp"}), json!({}));
    p["spec"]["containers"][0]["env"] = json!([{"name": "KATIB_TRIAL_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['katib.kubeflow.org/trial']"}}}]);
    p
}

#[test]
fn the_webhook_through_a_real_api_server_stores_what_mutate_promised_passes_pod_security_restricted_and_fails_open() {
    let Some(rig) = K8sRig::start() else { return };
    rig.namespace(NS, &[("trialtail.io/injection", "enabled"), ("pod-security.kubernetes.io/enforce", "restricted")]);
    rig.namespace("not-enabled", &[("pod-security.kubernetes.io/enforce", "restricted")]);
    let dir = tempfile::tempdir().unwrap();
    let mut webhook = Webhook::start(dir.path());
    register(&rig, &webhook, None);
    let reviews = |w: &Webhook| w.counter("trialtail_webhook_requests_total");
    let before = reviews(&webhook);

    // Pod Security restricted is enforced: a pod that does not meet it is refused.
    let mut loose = pod("loose", json!({}), json!({}));
    loose["spec"].as_object_mut().unwrap().remove("securityContext");
    let out = rig.kubectl(&["create", "-f", "-"], Some(&loose.to_string()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("violates PodSecurity \"restricted"), "{err}");

    // An opted-in pod with annotations, and a Katib trial pod (collector kind Push): each stored with the sidecar
    // exactly as mutate promised, admitted under `restricted`, with the service-account token mounted into it.
    let opted_in = pod(
        "opted-in",
        json!({"trialtail.io/inject": "true", "app": "mnist"}),
        json!({"trialtail.io/metrics": "loss,accuracy", "trialtail.io/preset": "keras",
            "trialtail.io/container": "train"}),
    );
    let mut trial_pod = katib_push_pod("trial-pod", "exp-abc123");
    trial_pod["spec"]["containers"].as_array_mut().unwrap().push(restricted_container("tensorboard", &["tensorboard"]));
    for submitted in [&opted_in, &trial_pod] {
        let (outcome, expected) = promised(submitted);
        assert_eq!(outcome, trialtail::webhook::Outcome::Injected);
        let (stored, warnings) = create(&rig, submitted);
        assert_eq!(warnings.trim(), "", "no warning for {}", submitted["metadata"]["name"]);
        assert_stored_as_promised(&stored, &expected);
        let sidecar = sidecar_of(&stored).unwrap();
        assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
        assert!(stored["spec"]["initContainers"].as_array().unwrap().len() == 1);
    }
    let stored = rig.get(&["-n", NS, "pod", "trial-pod"]);
    assert_eq!(
        sidecar_of(&stored).unwrap()["args"],
        json!(["run", "--source", "pod-log", "--listen", ":9478", "--log-format", "json"])
    );
    assert_eq!(webhook.counter("trialtail_webhook_reviews_total{outcome=\"injected\"}"), 2 + 1, "2 pods + the probe");

    // A bad annotation: admitted unchanged, and kubectl shows the webhook's warning naming the annotation.
    let bad = pod("bad", json!({"trialtail.io/inject": "true"}), json!({"trialtail.io/preset": "no-such-preset"}));
    let (stored, warnings) = create(&rig, &bad);
    assert!(sidecar_of(&stored).is_none(), "{stored:#}");
    assert!(!stored["metadata"]["labels"].as_object().unwrap().contains_key("trialtail.io/injected"));
    let warning: Vec<&str> = warnings.lines().filter(|l| l.starts_with("Warning: ")).collect();
    assert_eq!(warning.len(), 1, "{warnings}");
    assert!(
        warning[0].contains("annotation trialtail.io/preset") && warning[0].contains("no-such-preset"),
        "{warnings}"
    );

    // Any pod of an enabled namespace without the trialtail.io/inject label is sent (a trial pod may get Katib's
    // label only after this webhook ran: manifests/base/mutatingwebhook.yaml); the webhook leaves a plain one alone.
    let calls = reviews(&webhook);
    let (stored, _) = create(&rig, &pod("plain", json!({}), json!({})));
    assert!(sidecar_of(&stored).is_none());
    assert_eq!(reviews(&webhook), calls + 1, "the plain pod was reviewed and left alone");
    // Pods the configuration's selectors keep from the webhook: no call at all.
    let calls = reviews(&webhook);
    let opted_out =
        pod("opted-out", json!({"katib.kubeflow.org/trial": "t", "trialtail.io/inject": "false"}), json!({}));
    assert!(sidecar_of(&create(&rig, &opted_out).0).is_none());
    let mut elsewhere = pod("elsewhere", json!({"trialtail.io/inject": "true"}), json!({}));
    elsewhere["metadata"]["namespace"] = json!("not-enabled");
    assert!(sidecar_of(&create(&rig, &elsewhere).0).is_none());
    assert_eq!(reviews(&webhook), calls, "the objectSelector and namespaceSelector sent nothing");
    // With reinvocationPolicy IfNeeded an injected pod is reviewed twice when the API server's ServiceAccount
    // plugin changes it afterwards (the second review finds the sidecar and changes nothing).
    assert!(calls - before >= 4, "the two injected pods, the bad one and the plain one: {}", calls - before);

    // The webhook down: pods are admitted unchanged (failurePolicy Ignore), within the configuration's timeout.
    webhook.stop();
    let started = Instant::now();
    let (stored, _) = create(&rig, &pod("while-down", json!({"trialtail.io/inject": "true"}), json!({})));
    assert!(sidecar_of(&stored).is_none(), "{stored:#}");
    assert!(started.elapsed() < Duration::from_secs(5 + 10), "admitted after {:?}", started.elapsed());
}

/// A mutating webhook that adds one annotation to every pod it is sent (once), and counts the reviews.
fn touching_webhook(rt: &tokio::runtime::Runtime, dir: &Path) -> (SocketAddr, String, Arc<AtomicUsize>) {
    let ca = loopback_pki(dir);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let handler: Handler = Arc::new(move |req| {
        let counted = counted.clone();
        Box::pin(async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let review: Value = serde_json::from_slice(&body).unwrap_or_default();
            let request = &review["request"];
            let annotations = &request["object"]["metadata"]["annotations"];
            let patch = match annotations.as_object() {
                Some(a) if a.contains_key("test.trialtail.io/touched") => json!([]),
                Some(_) => {
                    json!([{"op": "add", "path": "/metadata/annotations/test.trialtail.io~1touched", "value": "yes"}])
                }
                None => {
                    json!([{"op": "add", "path": "/metadata/annotations",
                        "value": {"test.trialtail.io/touched": "yes"}}])
                }
            };
            let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
                "uid": request["uid"], "allowed": true, "patchType": "JSONPatch",
                "patch": b64(patch.to_string().as_bytes())}});
            let mut response = text(200, answer.to_string());
            response.headers_mut().insert("content-type", "application/json".parse().unwrap());
            response
        })
    });
    let addr = serve_tls(rt, &dir.join("tls.crt"), &dir.join("tls.key"), None, handler);
    (addr, ca, calls)
}

#[test]
fn called_again_after_a_later_webhook_changed_the_pod_the_webhook_changes_nothing() {
    let Some(rig) = K8sRig::start() else { return };
    rig.namespace(NS, &[("trialtail.io/injection", "enabled"), ("pod-security.kubernetes.io/enforce", "restricted")]);
    let dir = tempfile::tempdir().unwrap();
    let webhook = Webhook::start(dir.path());
    // The shipped configuration with reinvocationPolicy IfNeeded, and a second configuration sorted after it
    // (configurations are called in name order) whose webhook changes every pod: the API server then calls ours a
    // second time with the pod as it stands, sidecar included (k8s.io/apiserver, admission/plugin/webhook/
    // mutating/dispatcher.go and admission/reinvocation.go).
    register(&rig, &webhook, Some("IfNeeded"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let touch_dir = tempfile::tempdir().unwrap();
    let (touch, touch_ca, touched) = touching_webhook(&rt, touch_dir.path());
    let mut touch_config = webhook_configuration(&format!("https://{touch}/touch"), &touch_ca, None);
    touch_config["metadata"]["name"] = json!("zz-touch");
    for (i, w) in touch_config["webhooks"].as_array_mut().unwrap().iter_mut().enumerate() {
        w["name"] = json!(format!("touch-{i}.test.trialtail.io"));
        // Called once: only ours is asked again.
        w["reinvocationPolicy"] = json!("Never");
    }
    rig.apply(&touch_config.to_string());
    let probe = pod("probe-touch", json!({"trialtail.io/inject": "true"}), json!({}));
    rig.wait_for("the second webhook to be called", || {
        let out = rig.kubectl(&["create", "--dry-run=server", "-o", "json", "-f", "-"], Some(&probe.to_string()));
        let p: Value = serde_json::from_slice(&out.stdout).ok()?;
        (p["metadata"]["annotations"]["test.trialtail.io/touched"] == "yes").then_some(())
    });
    let injected = webhook.counter("trialtail_webhook_reviews_total{outcome=\"injected\"}");
    let again = webhook.counter("trialtail_webhook_reviews_total{outcome=\"already_injected\"}");
    let touches = touched.load(Ordering::SeqCst);

    let submitted = pod("twice", json!({"trialtail.io/inject": "true"}), json!({"trialtail.io/metrics": "loss"}));
    let (_, mut expected) = promised(&submitted);
    expected["metadata"]["annotations"]["test.trialtail.io/touched"] = json!("yes");
    let (stored, warnings) = create(&rig, &submitted);
    assert_eq!(warnings.trim(), "");
    assert_stored_as_promised(&stored, &expected);
    assert_eq!(webhook.counter("trialtail_webhook_reviews_total{outcome=\"injected\"}"), injected + 1);
    assert_eq!(
        webhook.counter("trialtail_webhook_reviews_total{outcome=\"already_injected\"}"),
        again + 1,
        "called a second time, it saw its own sidecar and patched nothing:\n{}",
        webhook.output()
    );
    assert_eq!(touched.load(Ordering::SeqCst), touches + 1, "the later webhook ran once");
}

/// Katib trial pods as Katib's pod webhook leaves them per collector kind: StdOut and File add
/// `metrics-logger-and-collector`, TensorFlowEvent `metrics-collector` (Katib's own collector runs there), Custom
/// the user's container, Push nothing (`pkg/webhook/v1beta1/pod/inject_webhook.go`, `Mutate`;
/// `utils.go`, `getSidecarContainerName`).
#[test]
fn katib_trial_pods_get_the_sidecar_only_where_katibs_own_collector_does_not_run() {
    let Some(rig) = K8sRig::start() else { return };
    rig.namespace(NS, &[("trialtail.io/injection", "enabled")]);
    let dir = tempfile::tempdir().unwrap();
    let webhook = Webhook::start(dir.path());
    register(&rig, &webhook, None);
    let kinds = [
        ("stdout", Some("metrics-logger-and-collector"), false),
        ("file", Some("metrics-logger-and-collector"), false),
        ("tfevent", Some("metrics-collector"), false),
        ("custom", Some("my-collector"), true),
        ("push", None, true),
    ];
    for (kind, collector, injected) in kinds {
        let mut p = katib_push_pod(&format!("trial-{kind}"), &format!("exp-{kind}"));
        if let Some(name) = collector {
            p["spec"]["containers"].as_array_mut().unwrap().push(restricted_container(name, &["collect"]));
            p["spec"]["shareProcessNamespace"] = json!(true);
        }
        let (stored, _) = create(&rig, &p);
        assert_eq!(sidecar_of(&stored).is_some(), injected, "collector kind {kind}:\n{stored:#}\n{}", webhook.output());
    }
}

/// A bad annotation whose value carries terminal control characters.
#[test]
fn a_warning_about_an_annotation_with_control_characters_reaches_kubectl() {
    let Some(rig) = K8sRig::start() else { return };
    rig.namespace(NS, &[("trialtail.io/injection", "enabled")]);
    let dir = tempfile::tempdir().unwrap();
    let webhook = Webhook::start(dir.path());
    register(&rig, &webhook, None);
    let bad = pod("bad", json!({"trialtail.io/inject": "true"}), json!({"trialtail.io/preset": "keras\u{1b}[2J\tx"}));
    let (stored, warnings) = create(&rig, &bad);
    assert!(sidecar_of(&stored).is_none());
    let warning: Vec<&str> = warnings.lines().filter(|l| l.starts_with("Warning: ")).collect();
    assert_eq!(warning.len(), 1, "the API server passed the warning on: {warnings:?}\n{}", webhook.output());
    assert!(warning[0].contains("trialtail.io/preset"), "{warnings:?}");
    assert!(!warning[0].chars().any(|c| c.is_control()), "{warnings:?}");
}

/// The pod templates of `manifests/examples/`: each Job's, and each Experiment's trial pod – with kind Custom as
/// Katib's pod webhook makes it (`Mutate` in Katib's `pkg/webhook/v1beta1/pod/inject_webhook.go`: the custom
/// collector appended to `containers` as given, `shareProcessNamespace` set) – as pods in [`NS`].
fn example_pods() -> Vec<(String, Value)> {
    let mut pods = Vec::new();
    let dir = root().join("manifests/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            let (what, template) = match doc["kind"].as_str() {
                Some("Job") => (format!("{file}: Job {}", doc["metadata"]["name"]), doc["spec"]["template"].clone()),
                Some("Experiment") => {
                    let mut template = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"].clone();
                    let collector = &doc["spec"]["metricsCollectorSpec"]["collector"];
                    if collector["kind"] == "Custom" {
                        let spec = template["spec"].as_object_mut().unwrap();
                        spec["containers"].as_array_mut().unwrap().push(collector["customCollector"].clone());
                        spec.insert("shareProcessNamespace".to_string(), json!(true));
                    }
                    (format!("{file}: Experiment {}'s trial pod", doc["metadata"]["name"]), template)
                }
                _ => continue,
            };
            let mut metadata = template["metadata"].clone();
            metadata["generateName"] = json!("example-");
            metadata["namespace"] = json!(NS);
            pods.push((
                what,
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}),
            ));
        }
    }
    pods
}

/// The examples' pods are created in a namespace that enforces Pod Security `restricted` – the level the docs
/// recommend for training namespaces –, trialtail's sidecar in each: the Job's own, the one the webhook injects
/// into the Push trial pods, the custom collector of the Custom trial pods.
#[test]
fn every_examples_pod_passes_pod_security_restricted_with_its_sidecar() {
    let Some(rig) = K8sRig::start() else { return };
    rig.install_crds(&["trial.yaml", "experiment.yaml"]);
    rig.namespace(
        NS,
        &[
            ("trialtail.io/injection", "enabled"),
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/warn", "restricted"),
        ],
    );
    // The accounts the examples run under (rbac.yaml's, and katib-push-experiment.yaml's own).
    rig.apply(&std::fs::read_to_string(root().join("manifests/base/sidecar-clusterrole.yaml")).unwrap());
    for file in ["manifests/rbac.yaml", "manifests/examples/katib-push-experiment.yaml"] {
        rig.apply(&std::fs::read_to_string(root().join(file)).unwrap().replace("kubeflow-user", NS));
    }
    let dir = tempfile::tempdir().unwrap();
    let webhook = Webhook::start(dir.path());
    register(&rig, &webhook, None);
    let pods = example_pods();
    assert_eq!(pods.len(), 3, "{pods:#?}");
    for (what, pod) in pods {
        let out = rig.kubectl(&["create", "-o", "json", "-f", "-"], Some(&pod.to_string()));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "{what}: {said}\n{pod:#}");
        let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
        let sidecar = sidecar_of(&stored).unwrap_or_else(|| panic!("{what}: no trialtail container: {stored:#}"));
        assert_eq!(sidecar["securityContext"]["allowPrivilegeEscalation"], false, "{what}");
    }
}

// ------------------------------------------------------------------------------------------------ the sidecar

/// A training set up as an install makes it: the Trial CRD, namespace [`NS`] enabled and enforcing `restricted`,
/// the sidecar's RBAC (the ClusterRole and `rbac.yaml`), the webhook registered, the kubelet stand-in; a Trial `t1`, its Job `t1` and the Job's pod
/// `t1-abcde` (opted in by label, owned Pod → Job → Trial with real UIDs, bound to the stand-in's node) created
/// through the API server, and the pod admitted by the stand-in with its native sidecar started.
struct Training {
    kubelet: Kubelet,
    _webhook: Webhook,
    dir: tempfile::TempDir,
    pod: Value,
}

const POD: &str = "t1-abcde";

impl Training {
    fn set_up(rig: &K8sRig, restart_policy: &str) -> Training {
        rig.install_crds(&["trial.yaml", "experiment.yaml"]);
        rig.namespace(
            NS,
            &[("trialtail.io/injection", "enabled"), ("pod-security.kubernetes.io/enforce", "restricted")],
        );
        // The install's ClusterRole trialtail-sidecar, and rbac.yaml's account bound to it in the namespace.
        rig.apply(&std::fs::read_to_string(root().join("manifests/base/sidecar-clusterrole.yaml")).unwrap());
        let rbac = std::fs::read_to_string(root().join("manifests/rbac.yaml")).unwrap().replace("kubeflow-user", NS);
        rig.apply(&rbac);
        let dir = tempfile::tempdir().unwrap();
        let webhook = Webhook::start(dir.path());
        register(rig, &webhook, None);
        let kubelet = Kubelet::start(rig);

        let trial = json!({"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
            "metadata": {"name": "t1", "namespace": NS, "labels": {"katib.kubeflow.org/experiment": "exp"}},
            "spec": {"primaryContainerName": "train",
                "objective": {"type": "maximize", "objectiveMetricName": "accuracy", "additionalMetricNames": ["loss"],
                    "metricStrategies": [{"name": "accuracy", "value": "max"}, {"name": "loss", "value": "min"}]},
                "metricsCollector": {"collector": {"kind": "Push"}}}});
        rig.apply(&trial.to_string());
        // Katib's trial controller marks it running (through the status subresource, as the sidecar writes).
        let running = json!({"status": {"conditions": [{"type": "Created", "status": "True", "reason": "TrialCreated"},
            {"type": "Running", "status": "True", "reason": "TrialRunning"}]}});
        rig.kubectl_ok(
            &["-n", NS, "patch", "trial", "t1", "--subresource=status", "--type=merge", "-p", &running.to_string()],
            None,
        );
        let trial_uid = rig.get(&["-n", NS, "trial", "t1"])["metadata"]["uid"].clone();
        let mut template = pod("", json!({"trialtail.io/inject": "true"}), json!({}));
        template["spec"]["restartPolicy"] = json!(restart_policy);
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "t1", "namespace": NS, "ownerReferences": [{"apiVersion": "kubeflow.org/v1beta1",
                "kind": "Trial", "name": "t1", "uid": trial_uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"backoffLimit": 3,
                "template": {"metadata": {"labels": template["metadata"]["labels"]}, "spec": template["spec"]}}});
        assert_eq!(rig.apply(&job.to_string()).trim(), "", "the Job's template meets restricted");
        let job_uid = rig.get(&["-n", NS, "job", "t1"])["metadata"]["uid"].clone();

        // The pod as the Job controller would create it (no job controller runs here), bound to the stand-in.
        let mut p = pod(POD, json!({"trialtail.io/inject": "true", "batch.kubernetes.io/job-name": "t1"}), json!({}));
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "t1",
            "uid": job_uid, "controller": true, "blockOwnerDeletion": true}]);
        p["spec"]["restartPolicy"] = json!(restart_policy);
        p["spec"]["serviceAccountName"] = json!("trialtail");
        p["spec"]["nodeName"] = json!(NODE);
        let (stored, warnings) = create(rig, &p);
        assert_eq!(warnings.trim(), "");
        assert!(sidecar_of(&stored).is_some(), "injected by the webhook");
        kubelet.admit(NS, POD);
        // The kubelet starts restartable init containers (native sidecars) before the regular containers.
        kubelet.run(NS, POD, "trialtail");
        Training { kubelet, _webhook: webhook, dir, pod: stored }
    }

    /// Runs the sidecar as the kubelet would run the injected container: its `args` and `env` from the stored pod
    /// (the downward API resolved), with a kubeconfig holding a token for the pod's service account bound to the
    /// pod, instead of the projected token volume. Two changes: `--listen` on a free loopback port instead of
    /// `:9478`, and `TRIALTAIL_STATUS_INTERVAL=1s` (the default is 5 s) to keep the test short.
    fn sidecar(&self, rig: &K8sRig, interval: &str) -> Sidecar {
        let container = sidecar_of(&self.pod).unwrap();
        let listen = free_addr();
        let mut args: Vec<String> =
            container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        let at = args.iter().position(|a| a == "--listen").expect("--listen in the injected args");
        args[at + 1] = listen.to_string();
        let meta = &self.pod["metadata"];
        let token =
            rig.token(NS, self.pod["spec"]["serviceAccountName"].as_str().unwrap(), POD, meta["uid"].as_str().unwrap());
        let kubeconfig = self.dir.path().join("sidecar.kubeconfig");
        std::fs::write(&kubeconfig, rig.token_kubeconfig(&token, NS)).unwrap();
        let log = self.dir.path().join("sidecar.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trialtail"));
        cmd.args(&args).env_clear();
        for var in container["env"].as_array().unwrap() {
            let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => meta["name"].as_str().unwrap(),
                Some("metadata.namespace") => meta["namespace"].as_str().unwrap(),
                Some(other) => panic!("the stand-in resolves no {other}"),
                None => var["value"].as_str().unwrap(),
            };
            cmd.env(var["name"].as_str().unwrap(), value);
        }
        let katib = crate::dropin::Katib::default();
        let db = free_addr();
        let katib_server = crate::dropin::serve(katib.clone(), db, Duration::ZERO);
        cmd.env("KUBECONFIG", &kubeconfig).env("TRIALTAIL_STATUS_INTERVAL", interval).env("TRIALTAIL_LOG", "info");
        cmd.env("TRIALTAIL_KATIB_DB", db.to_string());
        let out = std::fs::File::create(&log).unwrap();
        let child =
            cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().expect("spawn the sidecar");
        // A scraper, as Prometheus would be: the sidecar serves until one scrape saw the final values.
        let stop = Arc::new(AtomicBool::new(false));
        let scraping = stop.clone();
        let scraper = std::thread::spawn(move || {
            while !scraping.load(Ordering::SeqCst) {
                let _ = get(listen, "/metrics", None);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Sidecar { child, log, listen, stop, scraper: Some(scraper), katib, _katib_server: katib_server }
    }

    fn log(&self, lines: &[&str]) {
        self.kubelet.log(NS, POD, "train", lines);
    }

    /// Training ends: the kubelet publishes the container terminated (exit 0). Waits for the sidecar to exit 0 and
    /// checks the Trial's final observation; returns the sidecar's output and how long it took to exit.
    fn finish(&self, rig: &K8sRig, sidecar: &mut Sidecar, expected: Value, what: &str) -> (String, Duration) {
        self.kubelet.exit(NS, POD, "train", 0);
        let (status, took) = sidecar.wait(PATIENCE);
        let output = sidecar.output();
        assert!(status.success(), "exit {status}:\n{output}");
        assert_eq!(observation(rig), expected, "{what}:\n{output}");
        (output, took)
    }
}

/// The sidecar process; killed when dropped.
struct Sidecar {
    child: Child,
    log: PathBuf,
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
    scraper: Option<std::thread::JoinHandle<()>>,
    /// Katib's DB manager, faked (`dropin::Katib`): the Trial's collector kind is Push, so the rows go there.
    katib: crate::dropin::Katib,
    _katib_server: tokio::runtime::Runtime,
}

impl Sidecar {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the exit (at most `limit`); returns it and how long it took.
    fn wait(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            assert!(start.elapsed() < limit, "the sidecar did not exit within {limit:?}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The latest value of `metric` on `/metrics`, once it shows `value`.
    fn scraped(&self, metric: &str, value: &str) {
        crate::support::wait_for(&format!("{metric} {value} on the sidecar's /metrics"), || {
            let body = get(self.listen, "/metrics", None).ok()?.body;
            let needle = format!("metric=\"{metric}\"");
            body.lines()
                .any(|l| {
                    l.starts_with("trialtail_metric_latest{")
                        && l.contains(&needle)
                        && l.ends_with(&format!(" {value}"))
                })
                .then_some(())
        });
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(s) = self.scraper.take() {
            let _ = s.join();
        }
    }
}

/// The Trial's `status.observation.metrics`, sorted by name.
fn observation(rig: &K8sRig) -> Value {
    let trial = rig.get(&["-n", NS, "trial", "t1"]);
    let mut list = trial["status"]["observation"]["metrics"].as_array().cloned().unwrap_or_default();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Value::Array(list)
}

fn latest(rig: &K8sRig, name: &str) -> Option<String> {
    observation(rig).as_array()?.iter().find(|m| m["name"] == name).map(|m| m["latest"].as_str().unwrap().to_string())
}

/// The sidecar's log lines at WARN or ERROR.
fn complaints(output: &str) -> Vec<&str> {
    output.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect()
}

#[test]
fn the_sidecar_reads_its_log_through_the_api_server_and_writes_the_trial_with_only_the_installed_rbac() {
    let Some(rig) = K8sRig::start() else { return };
    let training = Training::set_up(&rig, "Never");
    let node = rig.get(&["node", NODE]);
    assert_eq!(node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], training.kubelet.addr.port(), "{node:#}");
    let mut sidecar = training.sidecar(&rig, "1s");
    training.kubelet.run(NS, POD, "train");
    training.log(&["epoch 1", "accuracy=0.5", "loss=0.9"]);
    rig.wait_for("the first observations on the stored Trial", || (latest(&rig, "accuracy")? == "0.5").then_some(()));
    let many: Vec<String> = (0..200).map(|i| format!("loss={}", 0.5 + f64::from(i) / 1000.0)).collect();
    training.log(&["accuracy=0.7", "loss=0.4"]);
    training.log(&many.iter().map(String::as_str).collect::<Vec<_>>());
    training.log(&["accuracy=0.65", "loss=0.3"]);
    sidecar.scraped("loss", "0.3");

    // Training ends: the kubelet publishes the container terminated; the sidecar drains, writes, exits 0.
    let expected = json!([
        {"name": "accuracy", "latest": "0.65", "min": "0.5", "max": "0.7"},
        {"name": "loss", "latest": "0.3", "min": "0.3", "max": "0.9"},
    ]);
    let (output, took) = training.finish(&rig, &mut sidecar, expected, "the final values");
    assert!(took < Duration::from_secs(15), "exited {took:?} after the training ended:\n{output}");
    let trial = rig.get(&["-n", NS, "trial", "t1"]);
    let conditions: Vec<&Value> =
        trial["status"]["conditions"].as_array().unwrap().iter().map(|c| &c["type"]).collect();
    assert_eq!(conditions, [&json!("Created"), &json!("Running")], "Katib's own status fields are left alone");
    // Every request it made was allowed by the install's RBAC: nothing to complain about.
    assert_eq!(complaints(&output), Vec::<&str>::new(), "{output}");
    // As the Trial's collector (kind Push) it reported every row to Katib's DB manager, once.
    let rows: Vec<(String, String)> = sidecar.katib.rows().into_iter().map(|(_, n, v)| (n, v)).collect();
    assert_eq!(rows.len(), 2 + 2 + 200 + 2, "{rows:?}");
    assert_eq!(rows.last(), Some(&("loss".to_string(), "0.3".to_string())));
    // The log came through the API server's proxy from the kubelet, followed with timestamps.
    let requests = training.kubelet.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(r.starts_with(&format!("/containerLogs/{NS}/{POD}/train?")), "{r}");
        assert!(r.contains("follow=true") && r.contains("timestamps=true"), "{r}");
    }
}

/// A restarting API server answers 403 to requests that arrive before its RBAC informers have synced (seen here
/// for `pods`, `pods/log` and `trials/status` alike, from a few milliseconds on an idle machine to more under
/// load); the sidecar's retries after the outage tend to land right in that window.
#[test]
fn the_sidecar_survives_a_killed_and_restarted_api_server_and_writes_the_final_values() {
    let Some(rig) = K8sRig::start() else { return };
    let training = Training::set_up(&rig, "Never");
    let mut sidecar = training.sidecar(&rig, "1s");
    training.kubelet.run(NS, POD, "train");
    training.log(&["accuracy=0.5", "loss=0.9"]);
    rig.wait_for("the first observations on the stored Trial", || (latest(&rig, "loss")? == "0.9").then_some(()));

    // New values read but not written yet; the API server dies; training goes on meanwhile.
    training.log(&["accuracy=0.6"]);
    sidecar.scraped("accuracy", "0.6");
    rig.kill_apiserver();
    training.log(&["accuracy=0.9", "loss=0.5"]);
    std::thread::sleep(Duration::from_secs(2));
    rig.start_apiserver();
    training.log(&["loss=0.2"]);
    sidecar.scraped("loss", "0.2");
    let expected = json!([
        {"name": "accuracy", "latest": "0.9", "min": "0.5", "max": "0.9"},
        {"name": "loss", "latest": "0.2", "min": "0.2", "max": "0.9"},
    ]);
    training.finish(&rig, &mut sidecar, expected, "the final values, written after the restart");
    let reopened = training.kubelet.requests().iter().filter(|r| r.contains("sinceTime=")).count();
    assert!(reopened >= 1, "the log was reopened with sinceTime: {:?}", training.kubelet.requests());
}

#[test]
fn a_restarted_training_container_is_read_to_its_end_before_the_sidecar_exits() {
    let Some(rig) = K8sRig::start() else { return };
    let training = Training::set_up(&rig, "OnFailure");
    let mut sidecar = training.sidecar(&rig, "1s");
    training.kubelet.run(NS, POD, "train");
    training.log(&["accuracy=0.5", "loss=0.9"]);
    sidecar.scraped("accuracy", "0.5");
    // It crashes: terminated (exit 1, restartCount 0) is published, then the restart, restartCount 1.
    training.kubelet.exit(NS, POD, "train", 1);
    std::thread::sleep(Duration::from_secs(1));
    training.kubelet.run(NS, POD, "train");
    let pod = rig.get(&["-n", NS, "pod", POD]);
    let train = &pod["status"]["containerStatuses"][0];
    assert_eq!((&train["restartCount"], &train["lastState"]["terminated"]["exitCode"]), (&json!(1), &json!(1)));
    training.log(&["accuracy=0.8", "loss=0.3"]);
    let expected = json!([
        {"name": "accuracy", "latest": "0.8", "min": "0.5", "max": "0.8"},
        {"name": "loss", "latest": "0.3", "min": "0.3", "max": "0.9"},
    ]);
    training.finish(&rig, &mut sidecar, expected, "both instances read");
}
