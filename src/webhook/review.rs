//! The admission handler as a plain function of the body bytes: [`review`] decodes the AdmissionReview, calls the
//! pure [`mutate`](fn@super::mutate) and encodes the answer. It never panics and answers 200 (an AdmissionReview,
//! always `allowed: true`) or 400 (not an AdmissionReview), so it is tested (and fuzzed) without a socket.
//!
//! Its memory is the body's and little more, whatever the pod holds: the review is decoded with the object
//! left as raw JSON, and of a pod only what the webhook reads is decoded ([`PodView`]: names, labels,
//! annotations, each container's name and image) – its environment, volumes and managed fields are skipped
//! unread. (Decoded whole, as a `serde_json::Value` and then a `Pod`, a 4 MiB pod of many small fields took
//! some 190 MB.)

use std::collections::BTreeMap;

use base64::Engine as _;
use hyper::StatusCode;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::mutate::{Outcome, Settings, mutate};

/// What [`review`] answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// 200 with an AdmissionReview, or 400 with a message.
    pub status: StatusCode,
    /// JSON (200) or text (400).
    pub body: Vec<u8>,
    /// For a pod review, what happened to it.
    pub outcome: Option<Outcome>,
}

fn bad_request(message: String) -> Reply {
    Reply { status: StatusCode::BAD_REQUEST, body: format!("{message}\n").into_bytes(), outcome: None }
}

/// An `AdmissionReview` (k8s.io/api `admission/v1`), its object left as raw JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

/// An `AdmissionRequest`: what the handler reads of it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    uid: String,
    kind: GroupVersionKind,
    operation: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    kind: String,
}

/// `T` from a JSON object only. serde's derived structs also read a JSON array as their fields in order, which
/// the API's types (k8s-openapi's decoders) refuse – and a patch made for an object would not apply to it.
#[derive(Default)]
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// What the webhook reads of a pod; every other field is skipped unread.
#[derive(Deserialize)]
struct PodView {
    #[serde(default)]
    metadata: Object<MetaView>,
    #[serde(default)]
    spec: Option<Object<SpecView>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MetaView {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecView {
    containers: Vec<Object<ContainerView>>,
    #[serde(default)]
    init_containers: Option<Vec<Object<ContainerView>>>,
}

#[derive(Deserialize)]
struct ContainerView {
    name: String,
    #[serde(default)]
    image: Option<String>,
}

impl From<Object<ContainerView>> for Container {
    fn from(Object(c): Object<ContainerView>) -> Self {
        Container { name: c.name, image: c.image, ..Default::default() }
    }
}

impl From<PodView> for Pod {
    /// The pod as [`mutate`] sees it: what it reads, and defaults for the rest.
    fn from(v: PodView) -> Self {
        let Object(m) = v.metadata;
        Pod {
            metadata: ObjectMeta {
                name: m.name,
                generate_name: m.generate_name,
                namespace: m.namespace,
                labels: m.labels,
                annotations: m.annotations,
                ..Default::default()
            },
            spec: v.spec.map(|Object(s)| PodSpec {
                containers: s.containers.into_iter().map(Container::from).collect(),
                init_containers: s.init_containers.map(|c| c.into_iter().map(Container::from).collect()),
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// Answers one AdmissionReview body. Never panics; 200 or 400.
pub fn review(body: &[u8], settings: &Settings) -> Reply {
    let parsed: Envelope<'_> = match std::str::from_utf8(body).map(serde_json::from_str) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return bad_request(format!("malformed AdmissionReview: {e}")),
        Err(e) => return bad_request(format!("malformed AdmissionReview: not UTF-8: {e}")),
    };
    if parsed.api_version != "admission.k8s.io/v1" || parsed.kind != "AdmissionReview" {
        let (api_version, kind) = (&parsed.api_version, &parsed.kind);
        return bad_request(format!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got {api_version:?}, {kind:?}"
        ));
    }
    let Some(request) = parsed.request else {
        return bad_request("malformed AdmissionReview: no request".to_string());
    };
    let mut response = serde_json::Map::new();
    response.insert("uid".to_string(), Value::String(request.uid.clone()));
    response.insert("allowed".to_string(), Value::Bool(true));
    let mut outcome = None;
    let is_pod_create = request.operation == "CREATE" && request.kind.group.is_empty() && request.kind.kind == "Pod";
    if let (true, Some(object)) = (is_pod_create, request.object) {
        let (o, patch, warnings, collector, (name, namespace)) =
            match serde_json::from_str::<Object<PodView>>(object.get()) {
                Err(e) => {
                    let warning = format!("trialtail: pod not understood, admitted without the sidecar: {e}");
                    (Outcome::Invalid, None, vec![warning], None, (String::new(), String::new()))
                }
                Ok(Object(view)) => {
                    let mut pod = Pod::from(view);
                    if pod.metadata.namespace.is_none() {
                        pod.metadata.namespace.clone_from(&request.namespace);
                    }
                    let m = mutate(&pod, settings);
                    let meta = &pod.metadata;
                    let name = meta.name.as_deref().or(meta.generate_name.as_deref()).unwrap_or("").to_string();
                    let namespace = meta.namespace.as_deref().unwrap_or("").to_string();
                    (m.outcome, Some(m.patch).filter(|p| !p.0.is_empty()), m.warnings, m.collector, (name, namespace))
                }
            };
        let (namespace, name) = (namespace.as_str(), name.as_str());
        let collector = collector.as_deref().unwrap_or("");
        match o {
            Outcome::Injected => tracing::info!(namespace, name, "adding the trialtail sidecar"),
            Outcome::Invalid => tracing::warn!(namespace, name, warnings = ?warnings, "admitted unchanged"),
            Outcome::OtherCollector => tracing::info!(
                namespace,
                name,
                collector,
                "admitted without the trialtail sidecar: the pod carries another metrics collector"
            ),
            Outcome::Removed => tracing::info!(
                namespace,
                name,
                collector,
                "taking the trialtail sidecar out again: another metrics collector was added after it"
            ),
            _ => tracing::debug!(namespace, name, outcome = o.kind(), "admitted unchanged"),
        }
        // The patch is a base64 string, as the API documents it (Go's []byte).
        match patch.map(|p| serde_json::to_vec(&p)).transpose() {
            Ok(Some(patch)) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
                response.insert("patchType".to_string(), Value::String("JSONPatch".to_string()));
                response.insert("patch".to_string(), Value::String(encoded));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot encode the patch; admitting unchanged"),
        }
        if !warnings.is_empty() {
            let warnings = warnings.iter().map(|w| Value::String(warning_text(w))).collect();
            response.insert("warnings".to_string(), Value::Array(warnings));
        }
        outcome = Some(o);
    }
    let answer = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    match serde_json::to_vec(&answer) {
        Ok(body) => Reply { status: StatusCode::OK, body, outcome },
        Err(e) => bad_request(format!("cannot encode the response: {e}")),
    }
}

/// The longest warning sent, in characters: the API server cuts every warning to 256 runes once a request's
/// warnings pass 4096 (`truncateItemRunes` in k8s.io/apiserver `pkg/endpoints/filters/warning.go`), which would
/// cut off the reason at the end.
pub const MAX_WARNING_CHARS: usize = 256;

/// `warning` as the API server passes it on: control characters written as escapes (`\t`, `\n`, `\u{1b}`) –
/// the API server drops a warning holding one (`NewWarningHeader` in k8s.io/apimachinery `pkg/util/net/http.go`
/// refuses Go's `unicode.IsControl`, the same set as [`char::is_control`]) – and at most [`MAX_WARNING_CHARS`],
/// the middle cut out so that the annotation's name at the start and the reason at the end both remain.
pub fn warning_text(warning: &str) -> String {
    let mut escaped = String::with_capacity(warning.len());
    for c in warning.chars() {
        match c {
            '\t' => escaped.push_str("\\t"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            c if c.is_control() => escaped.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    let count = escaped.chars().count();
    if count <= MAX_WARNING_CHARS {
        return escaped;
    }
    const CUT: &str = " … ";
    let head = (MAX_WARNING_CHARS - CUT.chars().count()) / 2;
    let tail = MAX_WARNING_CHARS - CUT.chars().count() - head;
    let start: String = escaped.chars().take(head).collect();
    let end: String = escaped.chars().skip(count - tail).collect();
    format!("{start}{CUT}{end}")
}

/// The patch carried by a review response, decoded (for tests and diagnostics).
pub fn response_patch(response: &serde_json::Value) -> Option<Vec<u8>> {
    let encoded = response.pointer("/response/patch")?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(encoded).ok()
}

#[cfg(test)]
mod tests {
    //! The handler as a function of the body: the AdmissionReview fixtures in `tests/fixtures/admission/`,
    //! requests that are not pod CREATEs, and bodies that are not AdmissionReviews at all (random bytes,
    //! truncated reviews), which must get a 400 and never a panic.

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::webhook::mutate::FIXTURES;

    fn settings() -> Settings {
        Settings::new("ghcr.io/trialtail/trialtail:0.1.0")
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/admission/{name}.json", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn answer(body: &[u8]) -> (StatusCode, Value) {
        let reply = review(body, &settings());
        (reply.status, serde_json::from_slice(&reply.body).unwrap_or(Value::Null))
    }

    #[test]
    fn webhook_review_of_a_selected_pod_carries_a_base64_json_patch() {
        let (status, resp) = answer(&fixture("katib-trial"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (resp["apiVersion"].as_str(), resp["kind"].as_str()),
            (Some("admission.k8s.io/v1"), Some("AdmissionReview"))
        );
        let r = &resp["response"];
        assert_eq!(r["uid"], "7d3e9f1a-5b2c-4d6e-8f0a-1b2c3d4e5f60");
        assert_eq!((r["allowed"].as_bool(), r["patchType"].as_str()), (Some(true), Some("JSONPatch")));
        assert!(r.get("warnings").is_none(), "{r}");
        let patch: json_patch::Patch = serde_json::from_slice(&response_patch(&resp).unwrap()).unwrap();
        let mut pod: Value =
            serde_json::from_slice::<Value>(&fixture("katib-trial")).unwrap()["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(pod["spec"]["initContainers"][1]["name"], "trialtail");
    }

    #[test]
    fn webhook_review_left_alone_or_invalid_has_no_patch_and_warns_only_when_invalid() {
        let cases = [
            ("existing-sidecar", Outcome::AlreadyInjected),
            ("opt-out", Outcome::NotSelected),
            ("katib-stdout", Outcome::OtherCollector),
            ("katib-custom-trialtail", Outcome::OtherCollector),
        ];
        for (name, outcome) in cases {
            assert_eq!(review(&fixture(name), &settings()).outcome, Some(outcome), "{name}");
            let (status, resp) = answer(&fixture(name));
            assert_eq!(status, StatusCode::OK);
            let r = &resp["response"];
            assert_eq!(r["allowed"], true);
            assert!(r.get("patch").is_none() && r.get("patchType").is_none() && r.get("warnings").is_none(), "{r}");
        }
        let (status, resp) = answer(&fixture("bad-annotation"));
        assert_eq!(status, StatusCode::OK);
        let r = &resp["response"];
        assert_eq!((r["allowed"].as_bool(), r.get("patch")), (Some(true), None));
        let warning = r["warnings"][0].as_str().unwrap();
        assert!(warning.contains("trialtail.io/preset"), "{warning}");
    }

    #[test]
    fn webhook_review_of_other_requests_allows_them_unchanged() {
        let base: Value = serde_json::from_slice(&fixture("job-inject-label")).unwrap();
        let mut update = base.clone();
        update["request"]["operation"] = "UPDATE".into();
        update["request"]["oldObject"] = update["request"]["object"].clone();
        let mut delete = base.clone();
        delete["request"]["operation"] = "DELETE".into();
        delete["request"]["object"] = Value::Null;
        let mut deployment = base.clone();
        deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        deployment["request"]["object"] = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"trialtail.io/inject": "true"}}, "spec": {"replicas": "many"}});
        for (what, other) in [("update", update), ("delete", delete), ("deployment", deployment)] {
            let reply = review(&serde_json::to_vec(&other).unwrap(), &settings());
            assert_eq!((reply.status, reply.outcome), (StatusCode::OK, None), "{what}");
            let resp: Value = serde_json::from_slice(&reply.body).unwrap();
            assert_eq!(resp["response"]["allowed"], true, "{what}");
            assert!(resp["response"].get("patch").is_none(), "{what}");
        }
    }

    #[test]
    fn webhook_review_takes_the_namespace_from_the_request_when_the_pod_has_none() {
        let mut json: Value = serde_json::from_slice(&fixture("katib-trial")).unwrap();
        json["request"]["object"]["metadata"].as_object_mut().unwrap().remove("namespace");
        let body = serde_json::to_vec(&json).unwrap();
        let mut s = settings();
        s.namespaces = vec!["kubeflow-user".to_string()];
        assert_eq!(review(&body, &s).outcome, Some(Outcome::Injected));
        s.namespaces = vec!["other".to_string()];
        assert_eq!(review(&body, &s).outcome, Some(Outcome::NotSelected));
    }

    #[test]
    fn webhook_review_refuses_what_is_not_an_admission_review_v1() {
        let mut v1beta1: Value = serde_json::from_slice(&fixture("katib-trial")).unwrap();
        v1beta1["apiVersion"] = "admission.k8s.io/v1beta1".into();
        let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
        let cases: [(&str, Vec<u8>); 5] = [
            ("empty", Vec::new()),
            ("garbage", b"\xff\x00not json".to_vec()),
            ("a pod", br#"{"apiVersion":"v1","kind":"Pod","metadata":{}}"#.to_vec()),
            ("v1beta1", serde_json::to_vec(&v1beta1).unwrap()),
            ("no request", serde_json::to_vec(&no_request).unwrap()),
        ];
        for (what, body) in cases {
            let reply = review(&body, &settings());
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}");
            let message = String::from_utf8(reply.body).unwrap();
            assert!(message.contains("AdmissionReview"), "{what}: {message}");
        }
    }

    /// What the handler reads of a pod mutates as the whole pod does: every fixture, before and after its own
    /// patch (the sidecar in place), as a native sidecar and as a container.
    #[test]
    fn webhook_the_pod_view_mutates_as_the_whole_pod_does() {
        for native_sidecar in [true, false] {
            let s = Settings { native_sidecar, ..settings() };
            for name in FIXTURES {
                let review: Value = serde_json::from_slice(&fixture(name)).unwrap();
                let mut object = review["request"]["object"].clone();
                object["metadata"]["namespace"] = review["request"]["namespace"].clone();
                let first = mutate(&serde_json::from_value(object.clone()).unwrap(), &s);
                json_patch::patch(&mut object, &first.patch).unwrap();
                for object in [review["request"]["object"].clone(), object] {
                    let whole: Pod = serde_json::from_value(object.clone()).unwrap();
                    let view: PodView = serde_json::from_str(&object.to_string()).unwrap();
                    assert_eq!(mutate(&Pod::from(view), &s), mutate(&whole, &s), "{name}, native {native_sidecar}");
                }
            }
        }
    }

    #[test]
    fn webhook_a_pod_whose_objects_are_arrays_is_not_understood() {
        for (path, value) in [("/request/object/spec", json!([[]])), ("/request/object/metadata", json!([{}]))] {
            let mut review: Value = serde_json::from_slice(&fixture("katib-trial")).unwrap();
            *review.pointer_mut(path).unwrap() = value;
            let reply = super::review(&serde_json::to_vec(&review).unwrap(), &settings());
            assert_eq!((reply.status, reply.outcome), (StatusCode::OK, Some(Outcome::Invalid)), "{path}");
        }
    }

    #[test]
    fn webhook_warnings_carry_no_control_characters_and_keep_both_ends() {
        assert_eq!(
            warning_text("annotation a: \"keras\u{1b}[2J\tx\"\n\r\u{7f}\u{85}é"),
            "annotation a: \"keras\\u{1b}[2J\\tx\"\\n\\r\\u{7f}\\u{85}é"
        );
        let long = format!(
            "annotation trialtail.io/filters: --filter \"{}\": invalid regex: unclosed group",
            "é".repeat(5000)
        );
        let short = warning_text(&long);
        assert_eq!(short.chars().count(), MAX_WARNING_CHARS, "{short}");
        assert!(
            short.starts_with("annotation trialtail.io/filters: --filter") && short.ends_with("unclosed group"),
            "{short}"
        );
        let mut json: Value = serde_json::from_slice(&fixture("job-inject-label")).unwrap();
        json["request"]["object"]["metadata"]["annotations"]["trialtail.io/preset"] = "keras\u{1b}[2J\tx".into();
        let (status, resp) = answer(&serde_json::to_vec(&json).unwrap());
        assert_eq!(status, StatusCode::OK);
        let warning = resp["response"]["warnings"][0].as_str().unwrap();
        assert!(warning.contains("trialtail.io/preset") && warning.contains("\\tx"), "{warning}");
        assert!(!warning.chars().any(char::is_control), "{warning:?}");
    }

    /// Any JSON value, a few levels deep: what a mangled review may hold anywhere – text with control
    /// characters and quotes, numbers of every kind, and words the handler looks for.
    fn any_json() -> impl Strategy<Value = Value> {
        let words = prop::sample::select(vec![
            "true",
            "false",
            "trialtail",
            "Always",
            "CREATE",
            "UPDATE",
            "Pod",
            "v1",
            "",
            "training",
            "train",
            "katib.kubeflow.org/trial",
            "trialtail.io/inject",
            "metrics-collector",
            "admission.k8s.io/v1",
            "ghcr.io/trialtail/trialtail:0.1.0",
            "(?P<name>\\w+)=(?P<value>\\S+)",
            "keras",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "\\PC{0,16}".prop_map(Value::from),
            "[\\x00-\\x1f\"\\\\\u{85}\u{2028}a]{0,6}".prop_map(Value::from),
            words.prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            let key = prop_oneof![
                "[a-zA-Z./-]{0,12}",
                prop::sample::select(vec![
                    "name",
                    "image",
                    "labels",
                    "annotations",
                    "containers",
                    "initContainers",
                    "spec",
                    "metadata",
                    "trialtail.io/inject",
                    "trialtail.io/filters",
                    "trialtail.io/metrics",
                    "restartPolicy",
                ])
                .prop_map(String::from)
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every JSON pointer in `v`.
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| pointers(v, format!("{at}/{}", escape(k)), out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
            _ => {}
        }
        out.push(at);
    }

    /// A body, shown as text when a fuzz target prints a failing input.
    #[derive(Clone)]
    struct Body(Vec<u8>);

    impl std::fmt::Debug for Body {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", String::from_utf8_lossy(&self.0))
        }
    }

    /// A review body: a fixture with JSON values replaced at random places, or with random bytes edited.
    fn mangled_review() -> impl Strategy<Value = Body> {
        let fixture_index = 0..FIXTURES.len();
        let structured =
            (fixture_index.clone(), prop::collection::vec((0.0f64..1.0, any_json()), 1..5)).prop_map(|(i, edits)| {
                let mut review: Value = serde_json::from_slice(&fixture(FIXTURES[i])).unwrap();
                for (at, value) in edits {
                    let mut all = Vec::new();
                    pointers(&review, String::new(), &mut all);
                    let path = &all[((all.len() as f64) * at) as usize % all.len()];
                    match review.pointer_mut(path) {
                        Some(slot) if !path.is_empty() => *slot = value,
                        _ => {}
                    }
                }
                serde_json::to_vec(&review).unwrap()
            });
        let bytes =
            (fixture_index, prop::collection::vec((0.0f64..1.0, 0u8..4, any::<u8>()), 1..8)).prop_map(|(i, edits)| {
                let mut body = fixture(FIXTURES[i]);
                for (at, op, byte) in edits {
                    let pos = ((body.len() as f64) * at) as usize;
                    match op {
                        0 if pos < body.len() => body[pos] ^= byte | 1,
                        1 => body.insert(pos.min(body.len()), byte),
                        2 if pos < body.len() => drop(body.remove(pos)),
                        _ => body.truncate(pos),
                    }
                }
                body
            });
        prop_oneof![3 => structured, 1 => bytes].prop_map(Body)
    }

    /// Fuzz target: the AdmissionReview handler. Whatever the body, it answers 200 or 400 without panicking and
    /// within the API server's timeout; a 200 is an AdmissionReview answering the request's uid, `allowed`,
    /// its warnings such as the API server passes on, and its patch applies to the pod as sent – and the pod
    /// patched, reviewed again, gets no patch.
    #[test]
    fn fuzz_admission_reviews_answer_200_or_400_with_patches_that_apply_once() {
        crate::fuzz::fuzz("admission review", mangled_review(), |Body(body)| {
            let started = std::time::Instant::now();
            let reply = review(&body, &settings());
            prop_assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
            if reply.status == StatusCode::BAD_REQUEST {
                prop_assert!(reply.outcome.is_none());
                return Ok(());
            }
            prop_assert_eq!(reply.status, StatusCode::OK);
            let resp: Value = serde_json::from_slice(&reply.body).unwrap();
            let sent: Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(&resp["response"]["uid"], &sent["request"]["uid"]);
            prop_assert_eq!(&resp["response"]["allowed"], &json!(true));
            for w in resp["response"]["warnings"].as_array().into_iter().flatten() {
                let w = w.as_str().unwrap();
                prop_assert!(!w.chars().any(char::is_control) && w.chars().count() <= MAX_WARNING_CHARS, "{:?}", w);
            }
            if let Some(patch) = response_patch(&resp) {
                let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
                let mut again = sent.clone();
                let object = again.pointer_mut("/request/object").unwrap();
                prop_assert!(json_patch::patch(object, &patch).is_ok(), "{}", patch);
                let second = review(&serde_json::to_vec(&again).unwrap(), &settings());
                let second: Value = serde_json::from_slice(&second.body).unwrap();
                prop_assert!(second["response"].get("patch").is_none(), "mutating again: {}", second);
            }
            Ok(())
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn webhook_review_of_random_bytes_answers_400_without_panicking(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let reply = review(&body, &settings());
            prop_assert!(reply.status == StatusCode::OK || reply.status == StatusCode::BAD_REQUEST);
        }

        #[test]
        fn webhook_review_of_a_truncated_review_answers_400_without_panicking(
            fixture_index in 0usize..5,
            cut in 0.0f64..1.0,
        ) {
            let names = ["job-inject-label", "katib-trial", "existing-sidecar", "opt-out", "bad-annotation"];
            let body = fixture(names[fixture_index]);
            let end = ((body.len() as f64) * cut) as usize;
            let reply = review(&body[..end], &settings());
            prop_assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        }

        #[test]
        fn webhook_review_of_a_mangled_pod_answers_200_or_400_without_panicking(
            path in prop::sample::select(vec!["/request/object/spec", "/request/object/metadata/labels",
                "/request/object/metadata/annotations", "/request/object/spec/containers", "/request/uid",
                "/request/object/spec/initContainers", "/request/kind", "/request/object"]),
            value in prop::sample::select(vec![json!(null), json!(1), json!("x"), json!([]), json!({}), json!([1]),
                json!({"trialtail.io/inject": "true"}), json!([{"name": "trialtail"}])]),
        ) {
            let mut review_json: Value = serde_json::from_slice(&fixture("katib-trial")).unwrap();
            if let Some(slot) = review_json.pointer_mut(path) {
                *slot = value;
            }
            let reply = review(&serde_json::to_vec(&review_json).unwrap(), &settings());
            prop_assert!(reply.status == StatusCode::OK || reply.status == StatusCode::BAD_REQUEST);
            if reply.status == StatusCode::OK {
                let resp: Value = serde_json::from_slice(&reply.body).unwrap();
                prop_assert_eq!(&resp["response"]["allowed"], &json!(true));
            }
        }
    }
}
