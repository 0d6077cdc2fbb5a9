//! The HTTP endpoint: `/metrics` (Prometheus text or OpenMetrics), `/healthz` (alive) and `/readyz` (the source
//! was opened and read once), served from a [`SnapshotRx`].
//!
//! The server only ever reads the latest published [`Snapshot`](crate::snapshot::Snapshot), so a scrape never
//! blocks the reader and the reader never waits for a scrape; it knows nothing of where the log comes from, so
//! every mode (file, stdin, follow, wrapped command, pod log) wires it the same way: publish snapshots, call
//! [`spawn`], and when the source ended publish [`Phase::Ended`], then [`ServerHandle::linger`] and
//! [`ServerHandle::shutdown`]. The rendered text is cached per snapshot generation and format, so Prometheus
//! and a load generator alike cost one copy of a reference-counted buffer per scrape while nothing changes.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections (more are closed at once and counted as
//! `trialtail_sink_errors_total{sink="prometheus",kind="connection_limit"}`), request headers must arrive
//! within [`HEADER_TIMEOUT`]. Plain HTTP/1.1 only (no TLS: the endpoint is scraped inside the cluster).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::sink::prometheus::{Exposition, ExpositionFormat};
use crate::snapshot::{Phase, SnapshotRx};

/// Connections served at once; further ones are closed right after accept.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The sink name the server reports deliveries under (`trialtail_sink_observations_total{sink="prometheus"}`).
pub const SINK: &str = "prometheus";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("--listen {addr}: cannot listen")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    final_scraped: watch::Receiver<bool>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Cached {
    generation: u64,
    sinks_version: u64,
    body: Bytes,
}

#[derive(Debug)]
struct Shared {
    rx: SnapshotRx,
    exposition: Arc<Exposition>,
    /// One cached body per format: `[Text, OpenMetrics]`.
    cache: Mutex<[Option<Cached>; 2]>,
    final_scraped: watch::Sender<bool>,
}

/// Binds `listen` and serves `/metrics`, `/healthz` and `/readyz` from `rx` on the current tokio runtime.
///
/// Must be called from inside a tokio runtime (it spawns the accept loop there). Binding happens before it
/// returns, so a taken port is an error here, not later.
pub fn spawn(listen: SocketAddr, rx: SnapshotRx, exposition: Arc<Exposition>) -> Result<ServerHandle, ServerError> {
    let bind = |source| ServerError::Bind { addr: listen, source };
    let std_listener = std::net::TcpListener::bind(listen).map_err(bind)?;
    std_listener.set_nonblocking(true).map_err(bind)?;
    let listener = TcpListener::from_std(std_listener).map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;
    exposition.sinks().register(SINK);
    let (final_tx, final_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared { rx, exposition, cache: Mutex::new([None, None]), final_scraped: final_tx });
    let task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
    tracing::info!(%local_addr, "serving /metrics, /healthz, /readyz");
    Ok(ServerHandle { local_addr, final_scraped: final_rx, shutdown: shutdown_tx, task })
}

impl ServerHandle {
    /// The address the server listens on (the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether a `/metrics` response has carried the final values (a snapshot in [`Phase::Ended`]).
    pub fn final_scraped(&self) -> bool {
        *self.final_scraped.borrow()
    }

    /// Waits until one `/metrics` response has carried the final values, or `timeout` passed; returns whether
    /// the final values were scraped. Call after publishing [`Phase::Ended`].
    pub async fn linger(&self, timeout: Duration) -> bool {
        let mut rx = self.final_scraped.clone();
        matches!(tokio::time::timeout(timeout, rx.wait_for(|scraped| *scraped)).await, Ok(Ok(_)))
    }

    /// Stops accepting, lets responses in flight finish (at most `grace`), then closes every connection.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let on_error = {
        let shared = shared.clone();
        move |kind: &'static str| shared.exposition.sinks().error(SINK, kind)
    };
    accept_until(listener, MAX_CONNECTIONS, shutdown, on_error, move |stream, stop| {
        let shared = shared.clone();
        serve_http1(stream, move |req| std::future::ready(handle(&req, &shared)), stop)
    })
    .await;
}

/// Accepts connections until `stop` fires, at most `max` at a time (more are closed at once and reported to
/// `on_error` as `connection_limit`; a failed accept as `accept`), hands each to `serve` with its own view of
/// `stop`, then waits for the connections to end.
pub async fn accept_until<F, Fut>(
    listener: TcpListener,
    max: usize,
    mut stop: watch::Receiver<bool>,
    on_error: impl Fn(&'static str),
    serve: F,
) where
    F: Fn(TcpStream, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        on_error("accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::debug!("too many connections, closing one");
                    on_error("connection_limit");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn = serve(stream, stop.clone());
                conns.spawn(async move {
                    let _permit = permit;
                    conn.await;
                });
            }
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Serves HTTP/1.1 on one connection with `handler` until the client closes it, or `stop` fires (then the
/// request in flight is finished). Request headers must arrive within [`HEADER_TIMEOUT`].
pub async fn serve_http1<IO, H, Fut>(io: IO, handler: H, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let response = handler(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn handle(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        resp.headers_mut().insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = ExpositionFormat::negotiate(accept);
            tracing::debug!(?format, "scrape");
            let (body, ended) = shared.render(format);
            let mut resp = Response::new(Full::new(body));
            resp.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(format.content_type()));
            if ended && req.method() == Method::GET {
                shared.final_scraped.send_if_modified(|scraped| !std::mem::replace(scraped, true));
            }
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match shared.rx.borrow().phase {
            Phase::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "starting: the log was not read yet\n"),
            Phase::Reading | Phase::Ended => text(StatusCode::OK, "ready\n"),
        },
        "/" => text(StatusCode::OK, "trialtail: /metrics /healthz /readyz\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n"),
    }
}

impl Shared {
    /// The exposition of the latest snapshot in `format` (cached per generation), and whether it is final.
    fn render(&self, format: ExpositionFormat) -> (Bytes, bool) {
        let snap = self.rx.borrow().clone();
        let sinks = self.exposition.sinks();
        // This response delivers the snapshot's observations: count them before rendering, so it says so.
        sinks.delivered(SINK, snap.counters.observations);
        let sinks_version = sinks.version();
        let slot = usize::from(format == ExpositionFormat::OpenMetrics);
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) =
            cache[slot].as_ref().filter(|c| (c.generation, c.sinks_version) == (snap.generation, sinks_version))
        {
            return (c.body.clone(), snap.phase == Phase::Ended);
        }
        let mut out = String::with_capacity(cache[slot].as_ref().map_or(4096, |c| c.body.len() + 256));
        self.exposition.encode(&snap, format, &mut out);
        let body = Bytes::from(out);
        cache[slot] = Some(Cached { generation: snap.generation, sinks_version, body: body.clone() });
        (body, snap.phase == Phase::Ended)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::lines::LineBuffer;
    use crate::parser::Parser;
    use crate::rules::Rules;
    use crate::sink::prometheus::Labels;
    use crate::sink::stats::SinkStats;
    use crate::snapshot::{Publisher, SourceStats};

    async fn request(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn ready_after_the_first_read_and_the_linger_ends_with_the_final_scrape() {
        let (mut publisher, rx) = Publisher::new(Duration::ZERO);
        let exposition = Arc::new(Exposition::new(&Labels::default(), Arc::new(SinkStats::default())));
        let server = spawn("127.0.0.1:0".parse().unwrap(), rx, exposition).unwrap();
        let addr = server.local_addr();
        assert!(request(addr, "GET", "/healthz").await.starts_with("HTTP/1.0 200"));
        assert!(request(addr, "GET", "/readyz").await.starts_with("HTTP/1.0 503"));
        assert!(request(addr, "GET", "/nope").await.starts_with("HTTP/1.0 404"));
        let post = request(addr, "POST", "/metrics").await;
        assert!(post.starts_with("HTTP/1.0 405") && post.to_ascii_lowercase().contains("allow: get, head"), "{post}");

        let rules = Rules::classic();
        let mut c = Parser::new(rules, 10);
        let mut lines = LineBuffer::new(1024);
        lines.feed_into(b"loss=1\n", &mut c.lines(&mut ()));
        publisher.publish(&c, SourceStats::default(), Phase::Reading);
        assert!(request(addr, "GET", "/readyz").await.starts_with("HTTP/1.0 200"));
        assert!(request(addr, "GET", "/metrics").await.contains("trialtail_metric_latest{metric=\"loss\"} 1\n"));
        assert!(!server.linger(Duration::from_millis(50)).await, "a scrape while reading is not final");

        lines.feed_into(b"loss=2\n", &mut c.lines(&mut ()));
        publisher.publish(&c, SourceStats::default(), Phase::Ended);
        assert!(request(addr, "HEAD", "/metrics").await.starts_with("HTTP/1.0 200"));
        assert!(!server.final_scraped(), "HEAD returns no values");
        let last = request(addr, "GET", "/metrics").await;
        assert!(last.contains("trialtail_metric_latest{metric=\"loss\"} 2\n"), "{last}");
        assert!(last.contains("trialtail_sink_observations_total{sink=\"prometheus\"} 2\n"), "{last}");
        assert!(server.linger(Duration::from_secs(60)).await);
        server.shutdown(Duration::from_secs(5)).await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "closed after shutdown");
    }
}
