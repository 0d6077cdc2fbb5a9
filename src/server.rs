//! The HTTP endpoint: `/metrics` (Prometheus text or OpenMetrics), `/healthz` (alive) and `/readyz` (the source
//! was opened and read once), served from a [`SnapshotRx`]; and the live page: `/` (one self-contained HTML
//! page, `assets/live/index.html`, built into the binary) and `/api/series` (the JSON it polls, from the
//! [`History`] beside the snapshots; see [`crate::sink::history`] and docs/live.md).
//!
//! `/api/series?after=CURSOR&wait=SECONDS` long-polls: it answers as soon as something is new for the cursor
//! (woken by the next published snapshot or hand-over of points), or after `wait` seconds (at most [`MAX_WAIT`]), or when the server
//! shuts down; without `wait` it answers at once. A bad cursor or `wait` is a 400 naming it.
//!
//! The server only ever reads the latest published [`Snapshot`](crate::snapshot::Snapshot), so a scrape never
//! blocks the reader and the reader never waits for a scrape; it knows nothing of where the log comes from, so
//! every mode (file, stdin, follow, wrapped command, pod log) wires it the same way: publish snapshots, call
//! [`spawn`], and when the source ended publish [`Phase::Ended`], then [`ServerHandle::linger`] and
//! [`ServerHandle::shutdown`]. The rendered text is cached per snapshot generation and format, so Prometheus
//! and a load generator alike cost one copy of a reference-counted buffer per scrape while nothing changes.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections; at the limit a new one takes the place of the oldest one
//! not being answered ([`conns`]: fair accept, counted as
//! `trialtail_sink_errors_total{sink="prometheus",kind="connection_evicted"}`), so clients that pipeline
//! requests and never read cannot keep a scrape out. Request headers must arrive within [`HEADER_TIMEOUT`] and
//! fit in [`MAX_HEADER_BYTES`], a write that makes no progress fails after [`conns::WRITE_TIMEOUT`]
//! (`kind="write_timeout"`), and a connection serves at most [`MAX_REQUESTS_PER_CONNECTION`] requests. Plain
//! HTTP/1.1 only (no TLS: the endpoint is scraped inside the cluster).

pub mod conns;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, Either, FutureExt, Ready, ready};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use self::conns::{Admitted, Conn, Slots, WriteTimeout};
use crate::sink::history::{Cursor, History};
use crate::sink::prometheus::{Exposition, ExpositionFormat};
use crate::snapshot::{Phase, SnapshotRx};

/// Connections served at once; further ones are closed right after accept.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a connection buffers of what it reads and writes (hyper's `max_buf_size`, whose default is 408 KiB):
/// bounds the memory of connections that send a request slowly.
pub const CONNECTION_BUFFER: usize = 64 << 10;
/// The longest request headers (hyper's `max_header_size`); longer ones get 431.
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// Requests served on one connection; the answer to the last one says `Connection: close`. Bounds the answers
/// one pipelining client can have queued (a scraper reconnects: every 25 minutes at a 15 s interval).
pub const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// The sink name the server reports deliveries under (`trialtail_sink_observations_total{sink="prometheus"}`).
pub const SINK: &str = "prometheus";
/// The longest `/api/series?wait=` a page may ask for, in seconds.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The live page: HTML, CSS and script in one file, nothing fetched from elsewhere.
pub const PAGE: &str = include_str!("../assets/live/index.html");
/// The page may run its own inline script and style and talk to this server only.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                        connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

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
    history: Arc<History>,
    /// Fires when the server shuts down: waiting requests answer at once.
    stop: watch::Receiver<bool>,
}

/// A response, now or after a wait.
type Responding = Either<Ready<Response<Full<Bytes>>>, BoxFuture<'static, Response<Full<Bytes>>>>;

/// Binds `listen` and serves `/metrics`, `/healthz` and `/readyz` from `rx`, and the live page from `rx` and
/// `history`, on the current tokio runtime.
///
/// Must be called from inside a tokio runtime (it spawns the accept loop there). Binding happens before it
/// returns, so a taken port is an error here, not later.
pub fn spawn(
    listen: SocketAddr,
    rx: SnapshotRx,
    exposition: Arc<Exposition>,
    history: Arc<History>,
) -> Result<ServerHandle, ServerError> {
    let bind = |source| ServerError::Bind { addr: listen, source };
    let std_listener = std::net::TcpListener::bind(listen).map_err(bind)?;
    std_listener.set_nonblocking(true).map_err(bind)?;
    let listener = TcpListener::from_std(std_listener).map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;
    exposition.sinks().register(SINK);
    let (final_tx, final_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        rx,
        exposition,
        cache: Mutex::new([None, None]),
        final_scraped: final_tx,
        history,
        stop: shutdown_rx.clone(),
    });
    let task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
    tracing::info!(%local_addr, "serving the live page on /, and /metrics, /healthz, /readyz");
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
    accept_until(listener, Slots::new(MAX_CONNECTIONS), shutdown, on_error, move |stream, conn, stop| {
        let shared = shared.clone();
        let handler = {
            let conn = conn.clone();
            move |req: Request<Incoming>| {
                // Working while the answer is made. A long poll's wait (/api/series) is not work: that connection
                // can give way to a scrape, and the page asks again.
                let _working = conn.work();
                handle(&req, &shared)
            }
        };
        serve_http1(stream, handler, stop, conn)
    })
    .await;
}

/// Accepts connections until `stop` fires into `slots` (at the limit a new connection evicts the oldest one
/// not working, reported to `on_error` as `connection_evicted`; when every connection is working it is closed
/// at once, `connection_limit`; a failed accept is `accept`, a connection closed by the write timeout
/// `write_timeout`), hands each to `serve` with its state and its own view of `stop`, then waits for the
/// connections to end. An evicted connection's `serve` future is dropped.
pub async fn accept_until<F, Fut>(
    listener: TcpListener,
    slots: Arc<Slots>,
    mut stop: watch::Receiver<bool>,
    on_error: impl Fn(&'static str),
    serve: F,
) where
    F: Fn(TcpStream, Arc<Conn>, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(ended) = conns.join_next(), if !conns.is_empty() => {
                if ended.is_ok_and(|timed_out| timed_out) {
                    on_error("write_timeout");
                }
            }
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
                let Some((slot, admitted)) = slots.admit() else {
                    tracing::debug!("too many connections, all of them working: closing the new one");
                    on_error("connection_limit");
                    continue;
                };
                if admitted == Admitted::Evicted {
                    tracing::debug!("too many connections: the oldest one not working was closed");
                    on_error("connection_evicted");
                }
                let _ = stream.set_nodelay(true);
                let conn = slot.conn().clone();
                let serving = serve(stream, conn.clone(), stop.clone());
                conns.spawn(async move {
                    let _slot = slot;
                    tokio::select! {
                        _ = serving => {}
                        _ = conn.evicted() => {}
                    }
                    conn.write_timed_out()
                });
            }
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Serves HTTP/1.1 on one connection with `handler` until the client closes it, or `stop` fires (then the
/// request in flight is finished). Request headers must arrive within [`HEADER_TIMEOUT`] and fit in
/// [`MAX_HEADER_BYTES`], at most [`CONNECTION_BUFFER`] is buffered, writes fail after [`conns::WRITE_TIMEOUT`]
/// without progress, and the answer to the [`MAX_REQUESTS_PER_CONNECTION`]th request closes the connection.
pub async fn serve_http1<IO, H, Fut>(io: IO, handler: H, mut stop: watch::Receiver<bool>, conn: Arc<Conn>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let served = AtomicUsize::new(0);
    let service = service_fn(move |req| {
        let last = served.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_REQUESTS_PER_CONNECTION;
        let response = handler(req);
        async move {
            let mut response = response.await;
            if last {
                response.headers_mut().insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(CONNECTION_BUFFER)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(WriteTimeout::new(io, conn)), service);
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
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn page() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert("content-security-policy", HeaderValue::from_static(PAGE_CSP));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn handle(req: &Request<Incoming>, shared: &Arc<Shared>) -> Responding {
    if req.uri().path() == "/api/series" && req.method() == Method::GET {
        return match series_request(req.uri().query(), &shared.history) {
            Ok((after, wait)) if !wait.is_zero() => Either::Right(series(shared.clone(), after, wait).boxed()),
            Ok((after, _)) => Either::Left(ready(series_now(shared, after))),
            Err(message) => {
                let body = serde_json::json!({ "error": message });
                Either::Left(ready(json(StatusCode::BAD_REQUEST, body.to_string().into_bytes())))
            }
        };
    }
    Either::Left(ready(handle_now(req, shared)))
}

/// The `after` cursor and the `wait` of a `/api/series` query, or why they are wrong.
fn series_request(query: Option<&str>, history: &History) -> Result<(Option<Cursor>, Duration), String> {
    let (mut after, mut wait) = (None, Duration::ZERO);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "after" if !value.is_empty() => after = Some(history.cursor(value).map_err(|e| e.to_string())?),
            "after" => {}
            "wait" => {
                let secs = value.parse::<f64>().ok().filter(|s| (0.0..=MAX_WAIT.as_secs_f64()).contains(s));
                let secs =
                    secs.ok_or_else(|| format!("wait={value:?}: give seconds from 0 to {}", MAX_WAIT.as_secs()))?;
                wait = Duration::from_secs_f64(secs);
            }
            _ => {}
        }
    }
    Ok((after, wait))
}

/// The answer to `after`, as of the latest snapshot.
fn series_now(shared: &Shared, after: Option<Cursor>) -> Response<Full<Bytes>> {
    let snap = shared.rx.borrow().clone();
    json(StatusCode::OK, shared.history.answer(&snap, after))
}

/// Waits up to `wait` for something new for `after` (a published snapshot wakes it), then answers.
async fn series(shared: Arc<Shared>, after: Option<Cursor>, wait: Duration) -> Response<Full<Bytes>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut rx = shared.rx.clone();
    let mut points = shared.history.changes();
    let mut stop = shared.stop.clone();
    loop {
        // Marked seen before looking: a snapshot or points published after the look wake the wait below.
        let snap = rx.borrow_and_update().clone();
        points.borrow_and_update();
        let stopping = *stop.borrow_and_update();
        if stopping || tokio::time::Instant::now() >= deadline || shared.history.is_new(&snap, after) {
            return series_now(&shared, after);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return series_now(&shared, after) },
            changed = points.changed() => if changed.is_err() { return series_now(&shared, after) },
            _ = tokio::time::sleep_until(deadline) => {}
            stopped = stop.changed() => if stopped.is_err() { return series_now(&shared, after) },
        }
    }
}

fn handle_now(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = ExpositionFormat::negotiate(accept);
            tracing::debug!(?format, "scrape");
            let (body, ended) = shared.render(format);
            let mut resp = Response::new(Full::new(body));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
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
        "/" | "/index.html" => page(),
        // HEAD: the headers a GET would have, without waiting.
        "/api/series" => series_now(shared, None),
        _ => text(StatusCode::NOT_FOUND, "not found: try /, /metrics, /healthz or /readyz\n"),
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
    use crate::rules::{LineFormat, Rules, Semantics};
    use crate::sink::history::HistorySink;
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

    fn serve() -> (Publisher, HistorySink, ServerHandle) {
        let (publisher, rx) = Publisher::new(Duration::ZERO);
        let exposition = Arc::new(Exposition::new(&Labels::default(), Arc::new(SinkStats::default())));
        let (sink, history) = crate::sink::history::channel(Labels::default(), Duration::from_secs(30));
        (publisher, sink, spawn("127.0.0.1:0".parse().unwrap(), rx, exposition, history).unwrap())
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    fn json_of(response: &str) -> serde_json::Value {
        serde_json::from_str(body(response)).unwrap()
    }

    #[tokio::test]
    async fn a_connection_serves_a_bounded_number_of_requests_and_bounded_headers() {
        let (_publisher, _history, server) = serve();
        let mut s = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
        let pipelined = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(MAX_REQUESTS_PER_CONNECTION + 5);
        s.write_all(pipelined.as_bytes()).await.unwrap();
        let mut answers = String::new();
        s.read_to_string(&mut answers).await.unwrap();
        assert_eq!(answers.matches("HTTP/1.1 200").count(), MAX_REQUESTS_PER_CONNECTION, "then closed");
        assert_eq!(answers.to_ascii_lowercase().matches("connection: close").count(), 1);

        let mut s = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
        let huge = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(4 * MAX_HEADER_BYTES));
        let _ = s.write_all(huge.as_bytes()).await;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        server.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn ready_after_the_first_read_and_the_linger_ends_with_the_final_scrape() {
        let (mut publisher, _history, server) = serve();
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

    #[tokio::test]
    async fn the_page_is_served_whole_with_a_policy_that_fetches_nothing_elsewhere() {
        let (_publisher, _history, server) = serve();
        let page = request(server.local_addr(), "GET", "/").await;
        assert!(page.starts_with("HTTP/1.0 200"), "{page}");
        let head = page.split_once("\r\n\r\n").unwrap().0.to_ascii_lowercase();
        assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
        assert!(head.contains("content-security-policy: default-src 'none';"), "{head}");
        assert!(head.contains("connect-src 'self'"), "{head}");
        assert_eq!(body(&page), PAGE);
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"), "the page names no other site");
        server.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn the_series_endpoint_refuses_bad_cursors_and_waits_with_400() {
        let (_publisher, _history, server) = serve();
        let addr = server.local_addr();
        for (query, says) in [
            ("after=nonsense", "not a cursor"),
            ("after=1.0.0", "another run"),
            ("wait=31", "give seconds from 0 to 30"),
            ("wait=soon", "give seconds"),
            ("wait=-1", "give seconds"),
        ] {
            let resp = request(addr, "GET", &format!("/api/series?{query}")).await;
            assert!(resp.starts_with("HTTP/1.0 400"), "{query}: {resp}");
            let error = json_of(&resp);
            assert!(error["error"].as_str().unwrap().contains(says), "{query}: {error}");
        }
        server.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_waiting_poll_answers_when_a_snapshot_brings_something_new_and_when_the_server_stops() {
        let (mut publisher, mut history, server) = serve();
        let addr = server.local_addr();
        let rules = Rules::new(
            &[crate::rules::RuleSpec::Preset(crate::rules::Preset::Katib)],
            &[],
            Semantics::Native,
            LineFormat::Text,
        )
        .unwrap();
        let mut c = Parser::new(rules, 10);
        let mut lines = LineBuffer::new(1024);
        lines.feed_into(b"loss=1\n", &mut c.lines(&mut history));
        history.publish(Phase::Reading, true);
        publisher.publish(&c, SourceStats::default(), Phase::Reading);
        let first = json_of(&request(addr, "GET", "/api/series").await);
        // A poll from the cursor of `answer`, waiting up to 30 s.
        let poll = |answer: &serde_json::Value| {
            let path = format!("/api/series?after={}&wait=30", answer["cursor"].as_str().unwrap());
            tokio::spawn(async move { request(addr, "GET", &path).await })
        };

        let started = tokio::time::Instant::now();
        let waiting = poll(&first);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "nothing new: the poll waits");
        lines.feed_into(b"loss=2\n", &mut c.lines(&mut history));
        history.publish(Phase::Reading, true);
        publisher.publish(&c, SourceStats::default(), Phase::Reading);
        let next = json_of(&waiting.await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(10), "woken by the snapshot, not by its wait");
        assert_eq!(next["metrics"][0]["points"], serde_json::json!([[1, null, null, 2.0]]));

        // The snapshot published before the points it covers were handed over: the hand-over wakes the poll.
        let waiting = poll(&next);
        lines.feed_into(b"loss=3\n", &mut c.lines(&mut history));
        publisher.publish(&c, SourceStats::default(), Phase::Reading);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the snapshot alone is not answered: its points are not there yet");
        let handed = tokio::time::Instant::now();
        history.publish(Phase::Reading, true);
        let next = json_of(&waiting.await.unwrap());
        assert!(handed.elapsed() < Duration::from_secs(10), "woken by the hand-over, not by its wait");
        assert_eq!(next["metrics"][0]["points"], serde_json::json!([[2, null, null, 3.0]]));

        let waiting = poll(&next);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopping = tokio::time::Instant::now();
        server.shutdown(Duration::from_secs(10)).await;
        let last = waiting.await.unwrap();
        assert!(last.starts_with("HTTP/1.0 200"), "{last}");
        assert!(stopping.elapsed() < Duration::from_secs(5), "a waiting poll does not hold the shutdown");
    }
}
