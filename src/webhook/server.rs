//! The webhook's servers: HTTPS for `POST /mutate` (AdmissionReview v1), plain HTTP for `/healthz`, `/readyz`
//! and `/metrics`.
//!
//! The handler is thin: [`review`] decodes the AdmissionReview, calls the pure [`mutate`](fn@super::mutate) and
//! encodes the answer; it is a plain function of the body bytes, so it is tested (and fuzzed) without a socket.
//! It never panics and answers 200 (an AdmissionReview, always `allowed: true`) or 400 (not an AdmissionReview).
//!
//! The certificate is served through a resolver holding the current pair: the directories of `--tls-cert` and
//! `--tls-key` are watched (a Kubernetes secret volume swaps a `..data` symlink, so events name the directory's
//! entries, not the files), and the files are compared every [`RECHECK`] besides. A changed pair that loads
//! replaces the old one for new handshakes; one that does not (half written, key not matching) is logged and
//! counted, and the old pair stays. Connections are bounded ([`MAX_CONNECTIONS`]), handshakes and request
//! headers time out, bodies are bounded (413). On a signal both servers stop accepting, requests in flight get
//! the grace period, and the process exits 0.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::mutate::{Outcome, Settings, mutate};
use super::{WebhookConfig, WebhookError};
use crate::server::{accept_until, serve_http1};
use crate::signal::Signals;

/// At most this many open connections per server; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The certificate files are compared this often even without a file system event.
pub const RECHECK: Duration = Duration::from_secs(30);
/// After an event, wait this long for the rest of a rotation's writes.
const SETTLE: Duration = Duration::from_millis(100);
/// The review latency histogram's upper bounds, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// The error kinds counted in `trialtail_webhook_errors_total{kind}`.
const ERROR_KINDS: [&str; 9] = [
    "bad_request",
    "too_large",
    "method_not_allowed",
    "not_found",
    "read_body",
    "tls_handshake",
    "cert_reload",
    "accept",
    "connection_limit",
];
const OUTCOMES: [Outcome; 4] = [Outcome::Injected, Outcome::NotSelected, Outcome::AlreadyInjected, Outcome::Invalid];

fn crypto() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and key as loaded, with the file contents they came from (to tell a later change).
#[derive(Debug, Clone)]
pub struct Loaded {
    key: Arc<CertifiedKey>,
    files: (Vec<u8>, Vec<u8>),
}

/// Reads and checks the certificate chain and key: both parse, and the key is the certificate's.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Loaded, WebhookError> {
    let files = read_pair(cert, key)?;
    Ok(Loaded { key: parse_pair(cert, &files.0, key, &files.1)?, files })
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), WebhookError> {
    let read = |flag, path: &Path| {
        std::fs::read(path).map_err(|source| WebhookError::Read { flag, path: path.to_path_buf(), source })
    };
    Ok((read("tls-cert", cert)?, read("tls-key", key)?))
}

fn parse_pair(cert: &Path, cert_pem: &[u8], key: &Path, key_pem: &[u8]) -> Result<Arc<CertifiedKey>, WebhookError> {
    let pem = |flag, path: &Path, reason: String| WebhookError::Pem { flag, path: path.to_path_buf(), reason };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("tls-cert", cert, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(pem("tls-cert", cert, "no CERTIFICATE block in it".to_string()));
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem("tls-key", key, format!("not a PEM private key ({e})")))?;
    let provider = crypto();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| pem("tls-key", key, format!("unusable private key ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(_) => Err(WebhookError::KeyMismatch { path: key.to_path_buf() }),
    }
}

/// Hands the current certificate to every handshake.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl Resolver {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn replace(&self, new: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = new;
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The webhook's own counters, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    outcomes: [AtomicU64; OUTCOMES.len()],
    errors: [AtomicU64; ERROR_KINDS.len()],
    cert_reloads: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
}

impl Metrics {
    fn error(&self, kind: &'static str) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn outcome(&self, outcome: Outcome, took: Duration) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.outcomes[i].fetch_add(1, Ordering::Relaxed);
        }
        self.observe(took);
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, series: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in series {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        counter(
            "trialtail_webhook_requests_total",
            "HTTP requests received on the webhook's HTTPS port.",
            &[(String::new(), get(&self.requests))],
        );
        let outcomes: Vec<_> = OUTCOMES
            .iter()
            .zip(&self.outcomes)
            .map(|(o, n)| (format!("{{outcome=\"{}\"}}", o.kind()), get(n)))
            .collect();
        counter("trialtail_webhook_reviews_total", "Pod admission reviews answered, by outcome.", &outcomes);
        counter(
            "trialtail_webhook_mutations_total",
            "Pods the sidecar was added to.",
            &[(String::new(), get(&self.outcomes[0]))],
        );
        let errors: Vec<_> =
            ERROR_KINDS.iter().zip(&self.errors).map(|(k, n)| (format!("{{kind=\"{k}\"}}"), get(n))).collect();
        counter("trialtail_webhook_errors_total", "Requests and events that failed, by kind.", &errors);
        counter(
            "trialtail_webhook_cert_reloads_total",
            "Times a changed certificate and key were loaded.",
            &[(String::new(), get(&self.cert_reloads))],
        );
        let name = "trialtail_webhook_review_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time to answer an admission review, body read to response.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.latency_sum_nanos) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

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

/// Answers one AdmissionReview body. Never panics; 200 or 400.
pub fn review(body: &[u8], settings: &Settings) -> Reply {
    let parsed: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("malformed AdmissionReview: {e}")),
    };
    if parsed.types.api_version != "admission.k8s.io/v1" || parsed.types.kind != "AdmissionReview" {
        let (api_version, kind) = (&parsed.types.api_version, &parsed.types.kind);
        return bad_request(format!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got {api_version:?}, {kind:?}"
        ));
    }
    let request: AdmissionRequest<DynamicObject> = match parsed.try_into() {
        Ok(r) => r,
        Err(_) => return bad_request("malformed AdmissionReview: no request".to_string()),
    };
    let mut response = AdmissionResponse::from(&request);
    let mut outcome = None;
    let is_pod_create =
        request.operation == Operation::Create && request.kind.group.is_empty() && request.kind.kind == "Pod";
    if let (true, Some(object)) = (is_pod_create, &request.object) {
        let (o, patch, warnings) = match serde_json::to_value(object).and_then(serde_json::from_value::<Pod>) {
            Err(e) => {
                let warning = format!("trialtail: pod not understood, admitted without the sidecar: {e}");
                (Outcome::Invalid, None, vec![warning])
            }
            Ok(mut pod) => {
                if pod.metadata.namespace.is_none() {
                    pod.metadata.namespace.clone_from(&request.namespace);
                }
                let m = mutate(&pod, settings);
                (m.outcome, Some(m.patch).filter(|p| !p.0.is_empty()), m.warnings)
            }
        };
        let (namespace, name) = (request.namespace.as_deref().unwrap_or(""), object.metadata.name.as_deref());
        let name = name.or(object.metadata.generate_name.as_deref()).unwrap_or("");
        match o {
            Outcome::Injected => tracing::info!(namespace, name, "adding the trialtail sidecar"),
            Outcome::Invalid => tracing::warn!(namespace, name, warnings = ?warnings, "admitted unchanged"),
            _ => tracing::debug!(namespace, name, outcome = o.kind(), "admitted unchanged"),
        }
        if let Some(patch) = patch {
            response = match response.clone().with_patch(patch) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode the patch; admitting unchanged");
                    response
                }
            };
        }
        if !warnings.is_empty() {
            response.warnings = Some(warnings);
        }
        outcome = Some(o);
    }
    // kube serializes `patch` as an array of numbers; the API documents a base64 string (Go's []byte).
    let patch = response.patch.take();
    let encoded = serde_json::to_value(response.into_review()).and_then(|mut v| {
        if let (Some(patch), Some(r)) = (patch, v.get_mut("response").and_then(Value::as_object_mut)) {
            r.insert("patch".to_string(), Value::String(base64::engine::general_purpose::STANDARD.encode(patch)));
        }
        serde_json::to_vec(&v)
    });
    match encoded {
        Ok(body) => Reply { status: StatusCode::OK, body, outcome },
        Err(e) => bad_request(format!("cannot encode the response: {e}")),
    }
}

/// The patch carried by a review response, decoded (for tests and diagnostics).
pub fn response_patch(response: &serde_json::Value) -> Option<Vec<u8>> {
    let encoded = response.pointer("/response/patch")?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(encoded).ok()
}

/// Shared by every connection.
struct Ctx {
    settings: Settings,
    max_body_bytes: usize,
    metrics: Metrics,
    ready: AtomicBool,
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The HTTPS side: `POST /mutate` only.
async fn admission(req: Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    ctx.metrics.requests.fetch_add(1, Ordering::Relaxed);
    if req.uri().path() != "/mutate" {
        ctx.metrics.error("not_found");
        return text(StatusCode::NOT_FOUND, "not found: the webhook answers POST /mutate\n".into());
    }
    if req.method() != Method::POST {
        ctx.metrics.error("method_not_allowed");
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n".into());
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {} bytes\n", ctx.max_body_bytes));
    let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > ctx.max_body_bytes as u64) {
        ctx.metrics.error("too_large");
        return too_large();
    }
    let body = match Limited::new(req.into_body(), ctx.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            ctx.metrics.error("too_large");
            return too_large();
        }
        Err(e) => {
            ctx.metrics.error("read_body");
            return text(StatusCode::BAD_REQUEST, format!("reading the body failed: {e}\n"));
        }
    };
    let start = Instant::now();
    let reply = review(&body, &ctx.settings);
    match reply.outcome {
        Some(outcome) => ctx.metrics.outcome(outcome, start.elapsed()),
        None if reply.status == StatusCode::OK => ctx.metrics.observe(start.elapsed()),
        None => {
            ctx.metrics.error("bad_request");
            tracing::debug!(message = %String::from_utf8_lossy(&reply.body).trim_end(), "refused a request");
        }
    }
    let content_type = if reply.status == StatusCode::OK { "application/json" } else { "text/plain; charset=utf-8" };
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The plain side: `/healthz`, `/readyz`, `/metrics`.
fn operations(req: &Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if ctx.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not serving\n".into()),
        "/metrics" => {
            let mut resp = text(StatusCode::OK, ctx.metrics.render());
            let exposition = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
            resp.headers_mut().insert(CONTENT_TYPE, exposition);
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n".into()),
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: Arc<Ctx>, stop: watch::Receiver<bool>) {
    let counted = ctx.clone();
    let on_error = move |kind: &'static str| counted.metrics.error(kind);
    accept_until(listener, MAX_CONNECTIONS, stop, on_error, move |stream, stop| {
        let (ctx, tls) = (ctx.clone(), tls.clone());
        async move {
            let Some(acceptor) = tls else {
                let handler = move |req: Request<Incoming>| std::future::ready(operations(&req, &ctx));
                return serve_http1(stream, handler, stop).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let handler = move |req| {
                        let ctx = ctx.clone();
                        async move { admission(req, &ctx).await }
                    };
                    serve_http1(stream, handler, stop).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    ctx.metrics.error("tls_handshake");
                }
                Err(_) => ctx.metrics.error("tls_handshake"),
            }
        }
    })
    .await;
}

/// Watches the certificate's and key's directories; wakes `wake` on any event there.
fn watch_dirs(paths: &[&Path], wake: Arc<Notify>) -> Option<RecommendedWatcher> {
    let handler = move |_: notify::Result<notify::Event>| wake.notify_one();
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; checking the certificate every 30s");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf())
        .collect();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the certificate's directory");
        }
    }
    Some(watcher)
}

/// Reloads the certificate when its files change, until `stop` fires.
async fn reload_loop(
    cert: PathBuf,
    key: PathBuf,
    loaded_files: (Vec<u8>, Vec<u8>),
    resolver: Arc<Resolver>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    let wake = Arc::new(Notify::new());
    let _watcher = watch_dirs(&[&cert, &key], wake.clone());
    let mut last = Some(loaded_files);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => tokio::time::sleep(SETTLE).await,
            _ = tokio::time::sleep(RECHECK) => {}
        }
        let Ok(pair) = read_pair(&cert, &key) else { continue };
        if last.as_ref() == Some(&pair) {
            continue;
        }
        match parse_pair(&cert, &pair.0, &key, &pair.1) {
            Ok(new) => {
                resolver.replace(new);
                ctx.metrics.cert_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %cert.display(), "loaded the new certificate");
            }
            Err(e) => {
                ctx.metrics.error("cert_reload");
                tracing::warn!(error = %e, "the changed certificate does not load; keeping the previous one");
            }
        }
        last = Some(pair);
    }
}

/// Serves until SIGTERM/SIGINT, then drains within the grace period.
pub async fn serve(cfg: WebhookConfig, loaded: Loaded) -> Result<(), WebhookError> {
    let bind = |flag: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| WebhookError::Bind { flag, addr, source })
    };
    let tls_listener = bind("listen", cfg.listen).await?;
    let plain_listener = bind("metrics-listen", cfg.metrics_listen).await?;
    let mut signals = Signals::new().map_err(WebhookError::Runtime)?;
    let resolver = Arc::new(Resolver(RwLock::new(loaded.key)));
    let mut tls_config = ServerConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(WebhookError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls_config));
    let ctx = Arc::new(Ctx {
        settings: cfg.settings.clone(),
        max_body_bytes: cfg.max_body_bytes,
        metrics: Metrics::default(),
        ready: AtomicBool::new(true),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let local = |l: &TcpListener| l.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string());
    let (listen, metrics_listen) = (local(&tls_listener), local(&plain_listener));
    tracing::info!(%listen, %metrics_listen, "serving the admission webhook");
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(tls_listener, Some(acceptor), ctx.clone(), stop_rx.clone()));
    tasks.spawn(accept_loop(plain_listener, None, ctx.clone(), stop_rx.clone()));
    tasks.spawn(reload_loop(cfg.tls_cert.clone(), cfg.tls_key.clone(), loaded.files, resolver, ctx.clone(), stop_rx));
    let signal = signals.recv().await;
    tracing::info!(signal, "stopping: finishing the requests in flight");
    ctx.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(cfg.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
        tasks.abort_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The handler as a function of the body: the AdmissionReview fixtures in `tests/fixtures/admission/`,
    //! requests that are not pod CREATEs, and bodies that are not AdmissionReviews at all (random bytes,
    //! truncated reviews), which must get a 400 and never a panic.

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

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
        for name in ["existing-sidecar", "opt-out"] {
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

    #[test]
    fn webhook_metrics_render_counters_and_a_latency_histogram() {
        let m = Metrics::default();
        m.requests.fetch_add(3, Ordering::Relaxed);
        m.outcome(Outcome::Injected, Duration::from_millis(2));
        m.error("bad_request");
        let text = m.render();
        for line in [
            "trialtail_webhook_requests_total 3\n",
            "trialtail_webhook_mutations_total 1\n",
            "trialtail_webhook_reviews_total{outcome=\"injected\"} 1\n",
            "trialtail_webhook_errors_total{kind=\"bad_request\"} 1\n",
            "trialtail_webhook_review_duration_seconds_bucket{le=\"0.001\"} 0\n",
            "trialtail_webhook_review_duration_seconds_bucket{le=\"0.0025\"} 1\n",
            "trialtail_webhook_review_duration_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "{line}in:\n{text}");
        }
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
