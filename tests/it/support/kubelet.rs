//! A stand-in for the kubelet, for the tests on the real API server ([`super::k8s_rig`]): no kubelet can run
//! here (no container runtime, no cgroups), so this plays the only two parts of one that trialtail meets.
//!
//! - **The log endpoint.** A Node whose `status.addresses` has `InternalIP 127.0.0.1` and whose
//!   `status.daemonEndpoints.kubeletEndpoint.Port` is this server's port: the API server proxies `pods/log` to
//!   `https://127.0.0.1:PORT/containerLogs/NS/POD/CONTAINER?follow=…&timestamps=…&sinceTime=…`
//!   (`pkg/registry/core/pod/strategy.go`, `LogLocation`; `pkg/kubelet/client/kubelet_client.go`,
//!   `GetConnectionInfo`), presenting its `--kubelet-client-certificate`, which this server requires and checks
//!   against the rig's CA as a kubelet does with `--client-ca-file`; the API server in turn verifies this server's
//!   certificate (`--kubelet-certificate-authority`). What is served follows the kubelet: the container instance
//!   is chosen from the status the kubelet last published (`pkg/kubelet/kubelet_pods.go`,
//!   `validateContainerLogStatus`: running → the current instance, terminated → the terminated one, waiting →
//!   400 "is waiting to start"); `timestamps=true` prefixes each line with its time in the fixed-width RFC 3339
//!   nanosecond format, lines before `sinceTime` are skipped (`k8s.io/cri-client/pkg/logs/logs.go`,
//!   `timeFormatOut = RFC3339NanoFixed`, `logWriter.write`), and a followed stream ends once its instance stopped
//!   and its lines were sent (`ReadLogs`/`waitLogs`: no new data and the container not running). A
//!   kubelet would also authorize the API server's identity with a SubjectAccessReview; this one does not.
//! - **The status writer.** Pod status goes to `pods/status` as a strategic merge patch with the pod's UID as
//!   precondition, as the kubelet's status manager sends it (`pkg/kubelet/status/status_manager.go`, `syncPod` →
//!   `pkg/util/pod/pod.go`, `PatchPodStatus`), written as cluster-admin (the rig runs RBAC only, not the Node
//!   authorizer). Each container status is what `convertToAPIContainerStatuses` (`pkg/kubelet/kubelet_pods.go`)
//!   makes of the runtime's containers: waiting `PodInitializing`/`ContainerCreating` before the first start;
//!   `running` with the instance's `containerID` and `startedAt`; after an exit `terminated` (exit code,
//!   `Completed`/`Error`, same `containerID`) with the same `restartCount` – published before any restart; a
//!   restart is a new instance, `running` with `restartCount + 1` and the previous instance as
//!   `lastState.terminated` (the newest runtime container is the state, the one before it the last state).
//!   The phase follows `getPhase` (`pkg/kubelet/kubelet_pods.go`) for the cases the tests use.
//!
//! The tests drive it: [`Kubelet::admit`] a pod the API server stored, [`Kubelet::run`] a container (a new
//! instance), [`Kubelet::log`] lines into its log, [`Kubelet::exit`] it. Every request the API server made is
//! recorded ([`Kubelet::requests`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::k8s_rig::K8sRig;
use super::kube_fake::{Body, stream_lines};

/// A request handler for [`serve_tls`].
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

/// The node the stand-in is.
pub const NODE: &str = "trialtail-node";

/// A plain-text response.
pub fn text(code: u16, body: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.into())).boxed())
        .unwrap()
}

/// Serves `handler` over HTTPS (HTTP/1.1) on a free loopback port, with `cert`/`key` (PEM files); with
/// `client_ca`, only clients presenting a certificate that CA signed get through the handshake.
pub fn serve_tls(
    rt: &tokio::runtime::Runtime,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    handler: Handler,
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).expect("read the certificate").map(|c| c.expect("a certificate")).collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("read the key");
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).expect("read the client CA") {
                roots.add(c.expect("a CA certificate")).expect("add the client CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).expect("a server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

/// One run of a container: its own ID and log.
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    started: Timestamp,
    /// `(time, line)` in order.
    lines: Vec<(Timestamp, String)>,
    /// `(finishedAt, exit code)` once it exited.
    exit: Option<(Timestamp, i32)>,
}

#[derive(Debug, Clone)]
struct Container {
    name: String,
    image: String,
    init: bool,
    instances: Vec<Instance>,
}

#[derive(Debug, Clone)]
struct PodState {
    uid: String,
    restart_policy: String,
    started: Timestamp,
    containers: Vec<Container>,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<(String, String), PodState>,
    requests: Vec<String>,
    /// Instance IDs handed out so far.
    next_id: u64,
}

/// The kubelet stand-in; dropping it stops its server (the Node object stays).
pub struct Kubelet {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    /// Its log endpoint, `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn fixed(ts: Timestamp) -> String {
    // RFC3339NanoFixed in UTC, as the kubelet prints a CRI log line's time.
    ts.strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn seconds(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Container {
    /// This container's status as `convertToAPIContainerStatuses` writes it.
    fn status(&self, waiting_reason: &str) -> Value {
        let image_id =
            format!("{}@sha256:{:064x}", self.image.split(':').next().unwrap_or(&self.image), self.name.len());
        let terminated = |i: &Instance| {
            let (finished, code) = i.exit.expect("an exited instance");
            json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": seconds(i.started), "finishedAt": seconds(finished), "containerID": i.id}})
        };
        let Some(current) = self.instances.last() else {
            return json!({"name": self.name, "image": self.image, "imageID": "", "ready": false, "restartCount": 0,
                "started": false, "state": {"waiting": {"reason": waiting_reason}}});
        };
        let restarts = self.instances.len() - 1;
        let last_state = match self.instances.len() {
            n if n >= 2 => terminated(&self.instances[n - 2]),
            _ => json!({}),
        };
        let (state, running) = match current.exit {
            None => (json!({"running": {"startedAt": seconds(current.started)}}), true),
            Some(_) => (terminated(current), false),
        };
        json!({"name": self.name, "image": self.image, "imageID": image_id, "containerID": current.id,
            "ready": running, "started": running, "restartCount": restarts, "state": state, "lastState": last_state})
    }

    fn running(&self) -> bool {
        self.instances.last().is_some_and(|i| i.exit.is_none())
    }
}

impl PodState {
    /// The pod's status: phase (`getPhase`, for these cases), conditions, addresses and container statuses.
    fn status(&self) -> Value {
        let has_init = self.containers.iter().any(|c| c.init);
        let reason = if has_init { "PodInitializing" } else { "ContainerCreating" };
        let regular: Vec<&Container> = self.containers.iter().filter(|c| !c.init).collect();
        let exits: Vec<Option<i32>> =
            regular.iter().map(|c| c.instances.last().and_then(|i| i.exit.map(|(_, code)| code))).collect();
        let phase = if regular.iter().any(|c| c.instances.is_empty()) {
            "Pending"
        } else if regular.iter().any(|c| c.running()) || self.restart_policy == "Always" {
            "Running"
        } else if exits.iter().all(|e| *e == Some(0)) {
            "Succeeded"
        } else if self.restart_policy == "OnFailure" {
            "Running"
        } else {
            "Failed"
        };
        let ready = regular.iter().all(|c| c.running());
        let initialized = self.containers.iter().filter(|c| c.init).all(|c| !c.instances.is_empty());
        let condition = |kind: &str, ok: bool| json!({"type": kind, "status": if ok { "True" } else { "False" }});
        let statuses = |init: bool| -> Vec<Value> {
            self.containers.iter().filter(|c| c.init == init).map(|c| c.status(reason)).collect()
        };
        json!({
            "phase": phase,
            "conditions": [condition("PodReadyToStartContainers", true), condition("Initialized", initialized),
                condition("Ready", ready), condition("ContainersReady", ready), condition("PodScheduled", true)],
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": seconds(self.started),
            "initContainerStatuses": statuses(true),
            "containerStatuses": statuses(false),
        })
    }
}

impl Kubelet {
    /// Starts the log endpoint with the rig's kubelet serving certificate, requiring the API server's client
    /// certificate, and registers the Node [`NODE`] pointing at it.
    pub fn start(rig: &K8sRig) -> Kubelet {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        let handler: Handler = Arc::new(move |req| Box::pin(container_logs(req, s.clone(), c.clone())));
        let addr = serve_tls(
            &rt,
            rig.path("KUBELET_SERVING_CERT"),
            rig.path("KUBELET_SERVING_KEY"),
            Some(rig.path("KUBELET_CLIENT_CA")),
            handler,
        );
        let kubelet = Kubelet {
            state,
            changed,
            addr,
            kubectl: rig.path("KUBECTL").to_path_buf(),
            kubeconfig: rig.path("KUBECONFIG").to_path_buf(),
            rt: Some(rt),
        };
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE,
            "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}});
        kubelet.kubectl(&["create", "-f", "-"], Some(&node.to_string()));
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": addr.port()}},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status (a test stand-in)"}],
        }});
        kubelet
            .kubectl(&["patch", "node", NODE, "--subresource=status", "--type=merge", "-p", &status.to_string()], None);
        kubelet
    }

    /// `kubectl ARGS` as cluster-admin, which must succeed; its stdout.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = super::k8s_rig::kubectl(&self.kubectl, &self.kubeconfig, args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Takes pod `namespace/name` as the API server stores it (it must be bound to [`NODE`]) and publishes its
    /// first status: every container waiting.
    pub fn admit(&self, namespace: &str, name: &str) {
        let pod: Value =
            serde_json::from_str(&self.kubectl(&["-n", namespace, "get", "pod", name, "-o", "json"], None)).unwrap();
        assert_eq!(pod["spec"]["nodeName"], NODE, "the pod is not bound to the stand-in's node");
        let containers = |key: &str, init: bool| -> Vec<Container> {
            pod["spec"][key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Container {
                    name: c["name"].as_str().unwrap().to_string(),
                    image: c["image"].as_str().unwrap_or("").to_string(),
                    init,
                    instances: Vec::new(),
                })
                .collect()
        };
        let mut all = containers("initContainers", true);
        all.extend(containers("containers", false));
        let state = PodState {
            uid: pod["metadata"]["uid"].as_str().unwrap().to_string(),
            restart_policy: pod["spec"]["restartPolicy"].as_str().unwrap_or("Always").to_string(),
            started: Timestamp::now(),
            containers: all,
        };
        self.state.lock().unwrap().pods.insert((namespace.to_string(), name.to_string()), state);
        self.publish(namespace, name);
    }

    fn with_container<T>(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        f: impl FnOnce(&mut Container, &mut u64) -> T,
    ) -> T {
        let mut s = self.state.lock().unwrap();
        let State { pods, next_id, .. } = &mut *s;
        let p = pods.get_mut(&(namespace.to_string(), pod.to_string())).expect("an admitted pod");
        let c = p.containers.iter_mut().find(|c| c.name == container).expect("a container of the pod");
        let out = f(c, next_id);
        drop(s);
        self.changed.notify_waiters();
        out
    }

    /// Starts `container` (its first run, or a restart after it exited) and publishes the status.
    pub fn run(&self, namespace: &str, pod: &str, container: &str) {
        self.with_container(namespace, pod, container, |c, next_id| {
            assert!(!c.running(), "{} is running already", c.name);
            *next_id += 1;
            let id = format!("containerd://{:064x}", *next_id);
            c.instances.push(Instance { id, started: Timestamp::now(), lines: Vec::new(), exit: None });
        });
        self.publish(namespace, pod);
    }

    /// Appends lines to `container`'s running instance's log, each stamped now (strictly increasing).
    pub fn log(&self, namespace: &str, pod: &str, container: &str, lines: &[&str]) {
        self.with_container(namespace, pod, container, |c, _| {
            let i = c.instances.last_mut().filter(|i| i.exit.is_none()).expect("a running instance");
            for line in lines {
                let mut ts = Timestamp::now();
                if let Some((last, _)) = i.lines.last()
                    && ts <= *last
                {
                    ts = *last + jiff::SignedDuration::from_nanos(1);
                }
                i.lines.push((ts, line.to_string()));
            }
        });
    }

    /// The running instance of `container` exits with `code`; the `terminated` status is published.
    pub fn exit(&self, namespace: &str, pod: &str, container: &str, code: i32) {
        self.with_container(namespace, pod, container, |c, _| {
            let i = c.instances.last_mut().filter(|i| i.exit.is_none()).expect("a running instance");
            i.exit = Some((Timestamp::now(), code));
        });
        self.publish(namespace, pod);
    }

    /// Writes the pod's status to `pods/status` as the kubelet's status manager does.
    fn publish(&self, namespace: &str, pod: &str) {
        let (uid, status) = {
            let s = self.state.lock().unwrap();
            let p = &s.pods[&(namespace.to_string(), pod.to_string())];
            (p.uid.clone(), p.status())
        };
        let patch = json!({"metadata": {"uid": uid}, "status": status});
        self.kubectl(
            &[
                "-n",
                namespace,
                "patch",
                "pod",
                pod,
                "--subresource=status",
                "--type=strategic",
                "-p",
                &patch.to_string(),
            ],
            None,
        );
    }

    /// The requests the API server made, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// A query parameter, percent-decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'%' if i + 2 < b.len() => {
                        out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
                        i += 3;
                    }
                    b'+' => {
                        out.push(b' ');
                        i += 1;
                    }
                    c => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(out).unwrap()
        })
    })
}

/// `GET /containerLogs/NS/POD/CONTAINER`: see the module documentation.
async fn container_logs(req: Request<Incoming>, state: Arc<Mutex<State>>, changed: Arc<Notify>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    state.lock().unwrap().requests.push(format!("{path}?{query}"));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", namespace, pod, container] = parts.as_slice() else {
        return text(404, "not found");
    };
    for unsupported in ["sinceSeconds", "tailLines", "limitBytes"] {
        if param(&query, unsupported).is_some() {
            return text(400, format!("the kubelet stand-in does not implement {unsupported}"));
        }
    }
    let flag = |key: &str| param(&query, key).is_some_and(|v| v == "true");
    let (follow, timestamps, previous) = (flag("follow"), flag("timestamps"), flag("previous"));
    let since: Option<Timestamp> = match param(&query, "sinceTime").map(|s| s.parse()) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return text(400, format!("sinceTime: {e}")),
        None => None,
    };
    let key = (namespace.to_string(), pod.to_string());
    let chosen = {
        let s = state.lock().unwrap();
        let Some(p) = s.pods.get(&key) else { return text(404, format!("pod {pod:?} does not exist")) };
        let Some(c) = p.containers.iter().find(|c| c.name == *container) else {
            return text(404, format!("container {container:?} not found in pod {pod:?}"));
        };
        // validateContainerLogStatus: previous → the last terminated instance; else the current one, whether it
        // runs or has terminated; a container that never started is waiting.
        let n = c.instances.len();
        match (previous, n) {
            (true, n) if n >= 2 => n - 2,
            (true, _) => {
                return text(400, format!("previous terminated container {container:?} in pod {pod:?} not found"));
            }
            (false, 0) => {
                let reason = if p.containers.iter().any(|c| c.init) { "PodInitializing" } else { "ContainerCreating" };
                return text(400, format!("container {container:?} in pod {pod:?} is waiting to start: {reason}"));
            }
            (false, n) => n - 1,
        }
    };
    let container = container.to_string();
    let mut next = 0;
    // logForceCheckPeriod: the kubelet looks again every second even without an event.
    stream_lines(changed, Duration::from_secs(1), move || {
        let s = state.lock().unwrap();
        let c = s.pods[&key].containers.iter().find(|c| c.name == container).unwrap();
        let i = &c.instances[chosen];
        let lines: Vec<String> = i.lines[next..]
            .iter()
            .filter(|(ts, _)| since.is_none_or(|since| *ts >= since))
            .map(|(ts, l)| if timestamps { format!("{} {l}\n", fixed(*ts)) } else { format!("{l}\n") })
            .collect();
        next = i.lines.len();
        (lines, !follow || i.exit.is_some())
    })
}
