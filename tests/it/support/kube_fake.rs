//! A fake Kubernetes API server over real HTTP on 127.0.0.1, for running trialtail's sidecar as a real process.
//!
//! No kube-apiserver can be installed here, so this serves the few endpoints the sidecar uses the way the API
//! server does: GET of a pod, a Job and a Trial; a pod watch (`watch=true`, one JSON event per line) that the
//! test drives by replacing the pod; the pod log with `follow=true&timestamps=true` (RFC 3339 nanosecond
//! prefixes, `sinceTime` rounded down to the second as the API server does) that the test writes lines into
//! and can cut to force a reconnect; and merge patches on `trials/<name>/status`, applied to the stored Trial
//! with a new `resourceVersion` each time, with error codes the test queues. Every request is counted, and every
//! status patch body is checked against Katib's status shape (Katib's `Observation` type, `pkg/apis/controller/common/v1beta1/common_types.go`: `status.observation.metrics`
//! a list of `{name, latest, min, max}`, all strings, names unique): a body that breaks it is answered 422, as
//! a validating API server would, and kept for the test to see.
//!
//! For the webhook's self-managed certificate it also keeps plain objects by path – Secrets (GET, POST to the
//! collection, PUT with the API server's optimistic concurrency: a stale `resourceVersion` is 409 Conflict, a
//! second create 409 AlreadyExists) and MutatingWebhookConfigurations (GET, JSON patch with `test` operations,
//! 422 when one fails) – and answers 403 Forbidden for the requests a test denies, as an API server does for a
//! verb the RBAC does not grant.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// A response body that may stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// One request, as counted.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
}

#[derive(Debug, Default)]
struct State {
    pod: Value,
    job: Value,
    trial: Value,
    version: u64,
    /// Per container: (timestamp, line) in order.
    logs: HashMap<String, Vec<(jiff::Timestamp, String)>>,
    /// Bumped to end every open log stream.
    cuts: u64,
    /// Status codes the next status patches answer with.
    patch_errors: VecDeque<u16>,
    /// The Trial's status after each successful patch.
    statuses: Vec<Value>,
    /// Every status patch body accepted, in order.
    patches: Vec<Value>,
    /// Status patch bodies that broke Katib's shape, with what was wrong.
    misshapen: Vec<String>,
    requests: Vec<Seen>,
    /// Plain objects (Secrets, MutatingWebhookConfigurations) by path.
    objects: std::collections::BTreeMap<String, Value>,
    /// (method, path fragment) pairs answered 403.
    denied: Vec<(String, String)>,
}

/// The fake API server; dropping it stops it.
pub struct KubeFake {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for KubeFake {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": reason, "code": code})
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.replace("%3A", ":").replace("%3D", "=").replace("%2B", "+"))
    })
}

/// What is wrong with a status patch body, checked against Katib's shape (`observation: null` removes it).
fn katib_shape_error(patch: &Value) -> Option<String> {
    if patch.pointer("/status/observation").is_some_and(Value::is_null) {
        return None;
    }
    let Some(list) = patch.pointer("/status/observation/metrics").and_then(Value::as_array) else {
        return Some(format!("no status.observation.metrics list in {patch}"));
    };
    let mut names = Vec::new();
    for m in list {
        let fields = m.as_object().map(|o| o.keys().map(String::as_str).collect::<Vec<_>>()).unwrap_or_default();
        let mut sorted = fields.clone();
        sorted.sort_unstable();
        if sorted != ["latest", "max", "min", "name"] || fields.iter().any(|k| !m[*k].is_string()) {
            return Some(format!("{m} is not {{name, latest, min, max}} of strings"));
        }
        if names.contains(&&m["name"]) {
            return Some(format!("{} listed twice", m["name"]));
        }
        names.push(&m["name"]);
    }
    None
}

fn container_terminated(pod: &Value, container: &str) -> bool {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| s["name"] == container && s.pointer("/state/terminated").is_some())
}

impl KubeFake {
    /// Serves `pod`, `job` and `trial` on a free loopback port.
    pub fn start(pod: Value, job: Value, trial: Value) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let state = Arc::new(Mutex::new(State { pod, job, trial, version: 1, ..State::default() }));
        let changed = Arc::new(Notify::new());
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (fake_state, fake_changed) = (state.clone(), changed.clone());
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (state, changed) = (state.clone(), changed.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (state, changed) = (state.clone(), changed.clone());
                        async move { Ok::<_, Infallible>(handle(req, state, changed).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        KubeFake { state: fake_state, changed: fake_changed, addr, rt: Some(rt) }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this server, namespace `namespace`.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: u\n  \
             user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n    namespace: {namespace}\n\
             current-context: c\n",
            self.url()
        )
    }

    /// Replaces the pod (a new resourceVersion; watchers get a MODIFIED event).
    pub fn set_pod(&self, f: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().unwrap();
        f(&mut s.pod);
        s.version += 1;
        let v = s.version.to_string();
        s.pod["metadata"]["resourceVersion"] = json!(v);
        drop(s);
        self.changed.notify_waiters();
    }

    /// Appends log lines to the training container `train`, each stamped now (nanosecond precision, strictly
    /// increasing).
    pub fn write_log(&self, lines: &[&str]) {
        self.write_log_of("train", lines);
    }

    /// Appends log lines to `container`'s log.
    pub fn write_log_of(&self, container: &str, lines: &[&str]) {
        let mut s = self.state.lock().unwrap();
        let log = s.logs.entry(container.to_string()).or_default();
        for line in lines {
            let mut ts = jiff::Timestamp::now();
            if let Some((last, _)) = log.last()
                && ts <= *last
            {
                ts = *last + jiff::SignedDuration::from_nanos(1);
            }
            log.push((ts, line.to_string()));
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// Appends `count` lines `loss=N` to the training container's log, all stamped with one instant (a burst the
    /// container runtime read at once).
    pub fn write_log_burst(&self, count: usize) {
        let mut s = self.state.lock().unwrap();
        let log = s.logs.entry("train".to_string()).or_default();
        let ts = log.last().map_or_else(jiff::Timestamp::now, |(last, _)| *last + jiff::SignedDuration::from_nanos(1));
        log.extend((0..count).map(|i| (ts, format!("loss={i}"))));
        drop(s);
        self.changed.notify_waiters();
    }

    /// Ends every open log stream (the client must reconnect).
    pub fn cut_log_streams(&self) {
        self.state.lock().unwrap().cuts += 1;
        self.changed.notify_waiters();
    }

    /// The next status patches answer with these codes, in order.
    pub fn fail_patches(&self, codes: &[u16]) {
        self.state.lock().unwrap().patch_errors.extend(codes);
    }

    /// The stored Trial.
    pub fn trial(&self) -> Value {
        self.state.lock().unwrap().trial.clone()
    }

    /// The Trial's stored status after each successful patch, in order.
    pub fn statuses(&self) -> Vec<Value> {
        self.state.lock().unwrap().statuses.clone()
    }

    /// Every status patch body the fake accepted, in order.
    pub fn patches(&self) -> Vec<Value> {
        self.state.lock().unwrap().patches.clone()
    }

    /// The status patch bodies that broke Katib's shape (each answered 422).
    pub fn misshapen_patches(&self) -> Vec<String> {
        self.state.lock().unwrap().misshapen.clone()
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Stores `object` at `path` (e.g. `/api/v1/namespaces/ns/secrets/name`) with a new resourceVersion.
    pub fn put_object(&self, path: &str, mut object: Value) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        object["metadata"]["resourceVersion"] = json!(s.version.to_string());
        s.objects.insert(path.to_string(), object);
    }

    /// The object at `path`.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Answers 403 to every `method` request whose path contains `fragment`.
    pub fn deny(&self, method: &str, fragment: &str) {
        self.state.lock().unwrap().denied.push((method.to_string(), fragment.to_string()));
    }

    /// How many requests match `method` and a path ending in `suffix` (and a query containing `query`).
    pub fn count(&self, method: &str, suffix: &str, query: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix) && r.query.contains(query))
            .count()
    }
}

async fn handle(req: Request<Incoming>, state: Arc<Mutex<State>>, changed: Arc<Notify>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    state.lock().unwrap().requests.push(Seen { method: method.to_string(), path: path.clone(), query: query.clone() });
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let denied = state.lock().unwrap().denied.iter().any(|(m, f)| *m == method.as_str() && path.contains(f.as_str()));
    if denied {
        return json_response(403, &status(403, "Forbidden"));
    }
    match (&method, parts.as_slice()) {
        (&Method::GET, ["api", "v1", "namespaces", _, "secrets", _])
        | (&Method::GET, ["apis", "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", _]) => {
            match state.lock().unwrap().objects.get(&path) {
                Some(o) => json_response(200, o),
                None => json_response(404, &status(404, "NotFound")),
            }
        }
        (&Method::POST, ["api", "v1", "namespaces", _, "secrets"]) => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let mut object: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string) else {
                return json_response(422, &status(422, "Invalid"));
            };
            let at = format!("{path}/{name}");
            let mut s = state.lock().unwrap();
            if s.objects.contains_key(&at) {
                return json_response(409, &status(409, "AlreadyExists"));
            }
            s.version += 1;
            object["metadata"]["resourceVersion"] = json!(s.version.to_string());
            s.objects.insert(at, object.clone());
            json_response(201, &object)
        }
        (&Method::PUT, ["api", "v1", "namespaces", _, "secrets", _]) => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let mut object: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut s = state.lock().unwrap();
            let Some(stored) = s.objects.get(&path) else { return json_response(404, &status(404, "NotFound")) };
            if object["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                return json_response(409, &status(409, "Conflict"));
            }
            s.version += 1;
            object["metadata"]["resourceVersion"] = json!(s.version.to_string());
            s.objects.insert(path.clone(), object.clone());
            json_response(200, &object)
        }
        (&Method::PATCH, ["apis", "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", _]) => {
            let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            if content_type != "application/json-patch+json" {
                return json_response(415, &status(415, "UnsupportedMediaType"));
            }
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let Ok(patch) = serde_json::from_slice::<json_patch::Patch>(&body) else {
                return json_response(400, &status(400, "BadRequest"));
            };
            let mut s = state.lock().unwrap();
            let Some(stored) = s.objects.get(&path) else { return json_response(404, &status(404, "NotFound")) };
            let mut object = stored.clone();
            if json_patch::patch(&mut object, &patch).is_err() {
                return json_response(422, &status(422, "Invalid"));
            }
            s.version += 1;
            object["metadata"]["resourceVersion"] = json!(s.version.to_string());
            s.objects.insert(path.clone(), object.clone());
            json_response(200, &object)
        }
        (&Method::GET, ["api", "v1", "namespaces", _, "pods"]) if query.contains("watch=true") => {
            watch_pod(state, changed)
        }
        (&Method::GET, ["api", "v1", "namespaces", _, "pods", _name]) => {
            json_response(200, &state.lock().unwrap().pod.clone())
        }
        (&Method::GET, ["api", "v1", "namespaces", _, "pods", _name, "log"]) => {
            assert!(query.contains("follow=true") && query.contains("timestamps=true"), "log query {query}");
            let container = query_param(&query, "container").unwrap_or_default();
            let since = query_param(&query, "sinceTime").map(|s| s.parse::<jiff::Timestamp>().unwrap());
            stream_log(state, changed, container, since)
        }
        (&Method::GET, ["apis", "batch", "v1", "namespaces", _, "jobs", _name]) => {
            json_response(200, &state.lock().unwrap().job.clone())
        }
        (&Method::GET, ["apis", "kubeflow.org", "v1beta1", "namespaces", _, "trials", _name]) => {
            json_response(200, &state.lock().unwrap().trial.clone())
        }
        (&Method::PATCH, ["apis", "kubeflow.org", "v1beta1", "namespaces", _, "trials", _name, "status"]) => {
            let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            if content_type != "application/merge-patch+json" {
                return json_response(415, &status(415, "UnsupportedMediaType"));
            }
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut s = state.lock().unwrap();
            if let Some(code) = s.patch_errors.pop_front() {
                return json_response(code, &status(code, "Injected"));
            }
            if let Some(wrong) = katib_shape_error(&patch) {
                s.misshapen.push(wrong);
                return json_response(422, &status(422, "Invalid"));
            }
            // Only the status subresource is patched: anything else in the body is ignored, as the API server does.
            let mut trial = s.trial.clone();
            merge(&mut trial["status"], &patch["status"]);
            s.version += 1;
            trial["metadata"]["resourceVersion"] = json!(s.version.to_string());
            s.trial = trial.clone();
            s.statuses.push(trial["status"].clone());
            s.patches.push(patch);
            json_response(200, &trial)
        }
        _ => json_response(404, &status(404, "NotFound")),
    }
}

/// A 200 response whose body is what arrives on `rx`, until it closes.
fn streaming(rx: tokio::sync::mpsc::Receiver<Bytes>, content_type: &str) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    Response::builder().status(200).header("content-type", content_type).body(StreamBody::new(stream).boxed()).unwrap()
}

fn watch_pod(state: Arc<Mutex<State>>, changed: Arc<Notify>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut sent = None;
        loop {
            let notified = changed.notified();
            let pod = state.lock().unwrap().pod.clone();
            let version = pod["metadata"]["resourceVersion"].clone();
            if sent.as_ref() != Some(&version) {
                let event = json!({"type": "MODIFIED", "object": pod});
                let mut line = serde_json::to_vec(&event).unwrap();
                line.push(b'\n');
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
                sent = Some(version);
            }
            tokio::select! {
                _ = notified => {}
                _ = tx.closed() => return,
            }
        }
    });
    streaming(rx, "application/json")
}

fn stream_log(
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    container: String,
    since: Option<jiff::Timestamp>,
) -> Response<Body> {
    // The API server rounds sinceTime down to the second: the client sees the seam's lines again.
    let since = since.map(|t| jiff::Timestamp::from_second(t.as_second()).unwrap());
    let (mut next, cuts) = {
        let s = state.lock().unwrap();
        let log = s.logs.get(&container).map(Vec::as_slice).unwrap_or_default();
        let start = since.map_or(0, |t| log.iter().position(|(ts, _)| *ts >= t).unwrap_or(log.len()));
        (start, s.cuts)
    };
    stream_lines(changed, Duration::from_millis(200), move || {
        let s = state.lock().unwrap();
        let log = s.logs.get(&container).map(Vec::as_slice).unwrap_or_default();
        // Sent in pieces of about 64 KiB, as a kubelet's buffered writer does.
        let mut lines: Vec<String> = Vec::new();
        for (ts, l) in &log[next..] {
            if lines.last().is_none_or(|piece| piece.len() >= 64 << 10) {
                lines.push(String::new());
            }
            let piece = lines.last_mut().expect("a piece");
            piece.push_str(&format!("{}Z {l}\n", ts.strftime("%Y-%m-%dT%H:%M:%S%.9f")));
        }
        next = log.len();
        (lines, s.cuts != cuts || container_terminated(&s.pod, &container))
    })
}

/// A streamed `text/plain` response: the lines `batch` returns, asked again whenever `changed` is notified (or
/// after `recheck`), until `batch` says the stream is done or the client went away.
pub fn stream_lines(
    changed: Arc<Notify>,
    recheck: Duration,
    mut batch: impl FnMut() -> (Vec<String>, bool) + Send + 'static,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let notified = changed.notified();
            let (lines, done) = batch();
            for line in lines {
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(recheck) => {}
                _ = tx.closed() => return,
            }
        }
    });
    streaming(rx, "text/plain")
}
