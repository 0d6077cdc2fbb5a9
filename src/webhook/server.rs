//! The webhook's servers: HTTPS for `POST /mutate` (AdmissionReview v1), plain HTTP for `/healthz`, `/readyz`
//! and `/metrics`.
//!
//! The handler is thin: [`review`](super::review::review) is a plain function of the body bytes; the
//! certificate comes from [`super::tls`], the counters live in [`super::metrics`]. On a signal both servers stop
//! accepting, requests in flight get the grace period, and the process exits 0.
//!
//! Bounded, whatever clients do (`tests/it/hostile_http.rs`): at most [`MAX_CONNECTIONS`] per server, and at the
//! limit a new connection takes the place of the oldest one not being answered (fair accept,
//! [`crate::server::conns`]), so connections held open – dribbling a body, pipelining requests and never
//! reading – keep neither a review nor the liveness probe out. Handshakes and request headers time out, a body
//! must arrive within [`BODY_TIMEOUT`] (408), writes without progress fail after
//! [`WRITE_TIMEOUT`](crate::server::conns::WRITE_TIMEOUT). Bodies are bounded one by one (`--max-body-bytes`,
//! 413) and together: the bodies in flight hold at most [`BODIES_IN_FLIGHT`] times `--max-body-bytes` of memory;
//! a body that does not fit makes the oldest bodies still arriving give way, and waits for room at most
//! [`BODY_TIMEOUT`] (503).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::certs::{CertError, Keeper};
use super::metrics::Metrics;
use super::mutate::Settings;
use super::review::review;
use super::tls::{Loaded, Resolver, crypto, reload_loop};
use super::{CertSource, WebhookConfig, WebhookError};
use crate::k8s::SA_NAMESPACE_FILE;
use crate::server::conns::{Conn, Slots};
use crate::server::{accept_until, serve_http1};
use crate::signal::Signals;

/// At most this many open connections per server (at the limit a new one evicts the oldest not answered).
pub const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must arrive within this once its headers did; also the longest a body waits for room.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The memory of the bodies in flight together, in `--max-body-bytes`: with the default 4 MiB, 16 MiB.
pub const BODIES_IN_FLIGHT: usize = 4;

/// Shared by every connection.
struct Ctx {
    settings: Settings,
    max_body_bytes: usize,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// The memory bodies in flight may hold, in KiB.
    bodies: Arc<Semaphore>,
    /// The HTTPS server's connections, whose oldest bodies give way when `bodies` runs out.
    slots: Arc<Slots>,
}

/// What reading a request's body came to.
enum BodyError {
    TooLarge,
    Timeout,
    Busy,
    Read(hyper::Error),
}

impl Ctx {
    /// Room for a body of `bytes` among the bodies in flight: at once when there is some, else after the
    /// oldest bodies still arriving (not `conn`'s) were evicted to make it; `None` when none came within
    /// [`BODY_TIMEOUT`].
    async fn room(&self, bytes: usize, conn: &Conn) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        if let Ok(permit) = self.bodies.clone().try_acquire_many_owned(kib) {
            return Some(permit);
        }
        let mut short = (kib as usize).saturating_sub(self.bodies.available_permits());
        while short > 0 {
            let Some(held) = self.slots.evict_holder(conn) else { break };
            self.metrics.error("body_evicted");
            short = short.saturating_sub(held.div_ceil(1024));
        }
        let permit = tokio::time::timeout(BODY_TIMEOUT, self.bodies.clone().acquire_many_owned(kib)).await;
        permit.ok()?.ok()
    }

    /// Reads a body of at most `--max-body-bytes` (`declared` by its Content-Length, when it was) within
    /// [`BODY_TIMEOUT`], holding room for it among the bodies in flight.
    async fn body(
        &self,
        mut body: Incoming,
        declared: Option<usize>,
        conn: &Conn,
    ) -> Result<(Vec<u8>, OwnedSemaphorePermit), BodyError> {
        let expected = declared.unwrap_or(self.max_body_bytes);
        let read = async {
            let room = self.room(expected, conn).await.ok_or(BodyError::Busy)?;
            let _holding = conn.hold(expected);
            let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(BodyError::Read)?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > self.max_body_bytes {
                        return Err(BodyError::TooLarge);
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok((bytes, room))
        };
        tokio::time::timeout(BODY_TIMEOUT, read).await.unwrap_or(Err(BodyError::Timeout))
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The HTTPS side: `POST /mutate` only.
async fn admission(req: Request<Incoming>, ctx: &Ctx, conn: &Conn) -> Response<Full<Bytes>> {
    ctx.metrics.request();
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
    let declared = declared.map(|n| n as usize);
    let (body, _room) = match ctx.body(req.into_body(), declared, conn).await {
        Ok(read) => read,
        Err(BodyError::TooLarge) => {
            ctx.metrics.error("too_large");
            return too_large();
        }
        Err(BodyError::Timeout) => {
            ctx.metrics.error("body_timeout");
            let message = format!("the body did not arrive within {BODY_TIMEOUT:?}\n");
            return text(StatusCode::REQUEST_TIMEOUT, message);
        }
        Err(BodyError::Busy) => {
            ctx.metrics.error("busy");
            let message = "too many request bodies in flight; try again\n".to_string();
            return text(StatusCode::SERVICE_UNAVAILABLE, message);
        }
        Err(BodyError::Read(e)) => {
            ctx.metrics.error("read_body");
            return text(StatusCode::BAD_REQUEST, format!("reading the body failed: {e}\n"));
        }
    };
    let _working = conn.work();
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

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    slots: Arc<Slots>,
    ctx: Arc<Ctx>,
    stop: watch::Receiver<bool>,
) {
    let counted = ctx.clone();
    let on_error = move |kind: &'static str| counted.metrics.error(kind);
    accept_until(listener, slots, stop, on_error, move |stream, conn, stop| {
        let (ctx, tls) = (ctx.clone(), tls.clone());
        async move {
            let Some(acceptor) = tls else {
                let working = conn.clone();
                let handler = move |req: Request<Incoming>| {
                    let _working = working.work();
                    std::future::ready(operations(&req, &ctx))
                };
                return serve_http1(stream, handler, stop, conn).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let reviewing = conn.clone();
                    let handler = move |req| {
                        let (ctx, conn) = (ctx.clone(), reviewing.clone());
                        async move { admission(req, &ctx, &conn).await }
                    };
                    serve_http1(stream, handler, stop, conn).await;
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

/// Serves until SIGTERM/SIGINT, then drains within the grace period. `loaded` is the certificate of
/// `--tls-cert`/`--tls-key`; with `--cert-secret` it is `None` and the Secret is read (or made) first.
pub async fn serve(cfg: WebhookConfig, loaded: Option<Loaded>) -> Result<(), WebhookError> {
    let bind = |flag: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| WebhookError::Bind { flag, addr, source })
    };
    let tls_listener = bind("listen", cfg.listen).await?;
    let plain_listener = bind("metrics-listen", cfg.metrics_listen).await?;
    let mut signals = Signals::new().map_err(WebhookError::Runtime)?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let resolver = match (&cfg.certificate, loaded) {
        (CertSource::Files { cert, key }, Some(loaded)) => {
            let resolver = Arc::new(Resolver::new(loaded.key));
            let (cert, key) = (cert.clone(), key.clone());
            let (r, m) = (resolver.clone(), metrics.clone());
            tasks.spawn(reload_loop(cert, key, loaded.files, r, m, stop_rx.clone()));
            resolver
        }
        (CertSource::Secret(settings), _) => {
            let namespace = crate::k8s::pod_identity(|k| std::env::var(k).ok(), SA_NAMESPACE_FILE.as_ref())
                .map_err(|_| CertError::NoNamespace)?
                .namespace;
            let mut keeper = Keeper::connect(settings.clone(), namespace).await?;
            let key = keeper.refresh_secret().await?.ok_or(CertError::Made("no certificate".to_string()))?;
            if let Err(e) = keeper.ensure_ca_bundle().await {
                metrics.error(e.kind());
                tracing::error!(error = %crate::sink::error_chain(&e), "cannot set the caBundle; retrying every --cert-recheck");
            }
            let resolver = Arc::new(Resolver::new(key));
            tasks.spawn(keep(keeper, resolver.clone(), metrics.clone(), stop_rx.clone()));
            resolver
        }
        (CertSource::Files { .. }, None) => return Err(WebhookError::NoCertificate),
    };
    let mut tls_config = ServerConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(WebhookError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls_config));
    let tls_slots = Slots::new(MAX_CONNECTIONS);
    let bodies_kib = (cfg.max_body_bytes * BODIES_IN_FLIGHT).div_ceil(1024);
    let ctx = Arc::new(Ctx {
        settings: cfg.settings.clone(),
        max_body_bytes: cfg.max_body_bytes,
        metrics,
        ready: AtomicBool::new(true),
        bodies: Arc::new(Semaphore::new(bodies_kib)),
        slots: tls_slots.clone(),
    });
    let local = |l: &TcpListener| l.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string());
    let (listen, metrics_listen) = (local(&tls_listener), local(&plain_listener));
    tracing::info!(%listen, %metrics_listen, "serving the admission webhook");
    tasks.spawn(accept_loop(tls_listener, Some(acceptor), tls_slots, ctx.clone(), stop_rx.clone()));
    tasks.spawn(accept_loop(plain_listener, None, Slots::new(MAX_CONNECTIONS), ctx.clone(), stop_rx));
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

/// `--cert-secret`: every `--cert-recheck`, loads a Secret that changed (or renews it) and puts the caBundle
/// back where it differs, until `stop` fires. Failures are logged and counted, and tried again next time.
async fn keep(mut keeper: Keeper, resolver: Arc<Resolver>, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(keeper.recheck()) => {}
        }
        match keeper.refresh_secret().await {
            Ok(Some(key)) => {
                resolver.replace(key);
                metrics.cert_reloaded();
                tracing::info!("loaded the Secret's new certificate");
            }
            Ok(None) => {}
            Err(e) => {
                metrics.error(e.kind());
                tracing::error!(error = %crate::sink::error_chain(&e), "cannot keep the certificate's Secret");
            }
        }
        if let Err(e) = keeper.ensure_ca_bundle().await {
            metrics.error(e.kind());
            tracing::error!(error = %crate::sink::error_chain(&e), "cannot keep the caBundle");
        }
    }
}
