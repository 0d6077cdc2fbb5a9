//! The Pushgateway sink: the exposition of the latest snapshot, pushed with HTTP `PUT` to
//! `<url>/metrics/job/trialtail[/trial/<trial>][/namespace/<namespace>]` – at the end of training, and optionally
//! every `--push-interval` while it runs – for batch jobs that end between two scrapes.
//!
//! `PUT` replaces the whole group, so the gateway always holds exactly one run's latest state per trial and
//! namespace. A grouping label value that is not plain URL-safe text is sent in the gateway's `@base64` form.
//! Plain HTTP/1.1 over one short-lived connection (no TLS, no proxy: a gateway inside the cluster or on
//! loopback). A failed push is retried a few times with back-off inside [`PUSH_TIMEOUT`], counted in
//! `trialtail_sink_errors_total{sink="pushgateway",kind}`, logged, and never fatal. Of the gateway's answer only
//! the status is read, and of an error's body its first [`ERROR_BODY_BYTES`]: whatever the peer sends, a push
//! costs the same memory.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::sink::prometheus::{Exposition, ExpositionFormat, Labels};
use crate::snapshot::SnapshotRx;

/// The sink name in the self-metrics.
pub const SINK: &str = "pushgateway";
/// The Pushgateway job.
pub const JOB: &str = "trialtail";
/// The time one push may take, retries included.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 3;
/// The most of an answer's body read: the start of an error's message. A successful answer's body is not read.
const ERROR_BODY_BYTES: usize = 512;
/// The pause between two attempts: 200 ms, then 400 ms.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_millis(800));

/// Why a Pushgateway URL or a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("--pushgateway {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot connect to the pushgateway at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("building the push request failed")]
    Request(#[source] hyper::http::Error),
    #[error("the push to the pushgateway failed")]
    Http(#[source] hyper::Error),
    #[error("the pushgateway answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the push did not finish within {0:?}")]
    Timeout(Duration),
}

impl PushError {
    /// A bounded name for the `kind` label of `trialtail_sink_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            PushError::Url { .. } => "url",
            PushError::Connect { .. } => "connect",
            PushError::Request(_) => "request",
            PushError::Http(_) => "http",
            PushError::Status { .. } => "status",
            PushError::Timeout(_) => "timeout",
        }
    }
}

/// A parsed `http://host[:port][/prefix]` Pushgateway URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// `host:port`, for connecting and for the `Host` header.
    pub authority: String,
    /// The path prefix without a trailing `/` (empty for the root).
    pub prefix: String,
}

impl PushTarget {
    /// Parses `http://host[:port][/prefix]`; the port defaults to 9091, the Pushgateway's.
    pub fn parse(url: &str) -> Result<Self, PushError> {
        let bad = |reason| PushError::Url { url: url.to_string(), reason };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(bad("https is not supported; use http:// (a gateway inside the cluster)"));
            }
            Some(_) => return Err(bad("only http:// URLs are supported")),
            None => return Err(bad("expected http://host:port")),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
            return Err(bad("expected http://host:port[/path]"));
        }
        let has_port = authority.rsplit_once(':').is_some_and(|(h, p)| !h.ends_with(':') && !p.contains(']'));
        let authority = if has_port { authority.to_string() } else { format!("{authority}:9091") };
        Ok(PushTarget { authority, prefix: path.trim_end_matches('/').to_string() })
    }

    /// The group's path: `<prefix>/metrics/job/trialtail` plus `trial` and `namespace` when known.
    pub fn path(&self, labels: &Labels) -> String {
        let mut path = format!("{}/metrics/job/{JOB}", self.prefix);
        for (name, value) in labels.pairs().filter(|(k, _)| matches!(*k, "trial" | "namespace")) {
            path_segment(&mut path, name, value);
        }
        path
    }
}

/// Appends `/name/value`, or `/name@base64/<base64url>` when the value is not plain URL-safe text.
fn path_segment(path: &mut String, name: &str, value: &str) {
    let plain = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if plain {
        path.push_str(&format!("/{name}/{value}"));
    } else {
        path.push_str(&format!("/{name}@base64/{}", base64url(value.as_bytes())));
    }
}

/// Base64 with the URL alphabet and padding (the Pushgateway accepts both).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    if out.is_empty() { "=".to_string() } else { out }
}

/// Pushes the latest snapshot of a run.
#[derive(Debug)]
pub struct Pusher {
    target: PushTarget,
    path: String,
    exposition: Arc<Exposition>,
    rx: SnapshotRx,
}

impl Pusher {
    /// A pusher of `rx`'s snapshots to `target`, grouped by `labels`' trial and namespace.
    pub fn new(target: PushTarget, labels: &Labels, exposition: Arc<Exposition>, rx: SnapshotRx) -> Self {
        exposition.sinks().register(SINK);
        let path = target.path(labels);
        Pusher { target, path, exposition, rx }
    }

    /// Pushes the latest snapshot, retrying inside [`PUSH_TIMEOUT`]; counts deliveries and failures.
    pub async fn push(&self) -> Result<(), PushError> {
        let snap = self.rx.borrow().clone();
        let mut body = String::new();
        self.exposition.encode(&snap, ExpositionFormat::Text, &mut body);
        let body = Bytes::from(body);
        let attempts = async {
            let mut backoff = BACKOFF;
            let mut attempt = 1;
            loop {
                match self.put(body.clone()).await {
                    Ok(()) => return Ok(()),
                    Err(e) if attempt < ATTEMPTS && !matches!(e, PushError::Status { status: 400..500, .. }) => {
                        self.exposition.sinks().error(SINK, e.kind());
                        tracing::debug!(error = %e, attempt, "push failed, retrying");
                        tokio::time::sleep(backoff.pause()).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let result =
            tokio::time::timeout(PUSH_TIMEOUT, attempts).await.unwrap_or(Err(PushError::Timeout(PUSH_TIMEOUT)));
        match &result {
            Ok(()) => self.exposition.sinks().delivered(SINK, snap.counters.observations),
            Err(e) => self.exposition.sinks().error(SINK, e.kind()),
        }
        result
    }

    /// Pushes every `interval` while the snapshot changes, until the task is aborted; failures are logged.
    pub fn spawn_periodic(self: Arc<Self>, interval: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut pushed = None;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let generation = self.rx.borrow().generation;
                if pushed == Some(generation) {
                    continue;
                }
                match self.push().await {
                    Ok(()) => pushed = Some(generation),
                    Err(e) => tracing::warn!(error = %crate::sink::error_chain(&e), "periodic push failed"),
                }
            }
        })
    }

    async fn put(&self, body: Bytes) -> Result<(), PushError> {
        let addr = &self.target.authority;
        let stream = TcpStream::connect(addr.as_str())
            .await
            .map_err(|source| PushError::Connect { addr: addr.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(PushError::Http)?;
        let conn = tokio::spawn(conn);
        let req = Request::put(self.path.as_str())
            .header(HOST, addr.as_str())
            .header(CONTENT_TYPE, ExpositionFormat::Text.content_type())
            .body(Full::new(body))
            .map_err(PushError::Request)?;
        let resp = sender.send_request(req).await.map_err(PushError::Http)?;
        let status = resp.status();
        if status.is_success() {
            conn.abort();
            return Ok(());
        }
        // The first bytes of an error's body say why; the rest is never read (a peer may send without end).
        let mut body = resp.into_body();
        let mut text = Vec::new();
        while text.len() < ERROR_BODY_BYTES {
            let Some(Ok(frame)) = body.frame().await else { break };
            if let Ok(data) = frame.into_data() {
                text.extend_from_slice(&data[..data.len().min(ERROR_BODY_BYTES - text.len())]);
            }
        }
        conn.abort();
        let body = String::from_utf8_lossy(&text).trim().to_string();
        Err(PushError::Status { status: status.as_u16(), body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_the_default_port_and_a_prefix() {
        let t = PushTarget::parse("http://127.0.0.1:9091").unwrap();
        assert_eq!((t.authority.as_str(), t.prefix.as_str()), ("127.0.0.1:9091", ""));
        let t = PushTarget::parse("http://pushgateway.monitoring/base/").unwrap();
        assert_eq!((t.authority.as_str(), t.prefix.as_str()), ("pushgateway.monitoring:9091", "/base"));
        let t = PushTarget::parse("http://[::1]:9").unwrap();
        assert_eq!(t.authority, "[::1]:9");
        let t = PushTarget::parse("http://[::1]").unwrap();
        assert_eq!(t.authority, "[::1]:9091");
        for bad in ["https://x", "ftp://x", "x:9091", "http://", "http://x/?a=b"] {
            assert!(PushTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grouping_labels_are_trial_and_namespace_base64_when_not_plain() {
        let t = PushTarget::parse("http://gw:1/p").unwrap();
        let labels = Labels {
            trial: Some("t-1".into()),
            namespace: Some("a/b".into()),
            pod: Some("pod".into()),
            experiment: None,
        };
        assert_eq!(t.path(&labels), "/p/metrics/job/trialtail/trial/t-1/namespace@base64/YS9i");
        assert_eq!(t.path(&Labels::default()), "/p/metrics/job/trialtail");
    }

    fn pusher(addr: std::net::SocketAddr) -> (Pusher, Arc<crate::sink::stats::SinkStats>) {
        let stats = Arc::new(crate::sink::stats::SinkStats::default());
        let exposition = Arc::new(Exposition::new(&Labels::default(), stats.clone()));
        let (_publisher, rx) = crate::snapshot::Publisher::new(Duration::ZERO);
        let target = PushTarget::parse(&format!("http://{addr}")).unwrap();
        (Pusher::new(target, &Labels::default(), exposition, rx), stats)
    }

    #[tokio::test]
    async fn a_refused_push_is_retried_and_every_failure_counted_as_connect() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (p, stats) = pusher(addr);
        let err = p.push().await.unwrap_err();
        assert_eq!(err.kind(), "connect");
        assert_eq!(stats.snapshot()[SINK].errors["connect"], u64::from(ATTEMPTS));
        assert_eq!(stats.snapshot()[SINK].observations, 0);
    }

    #[tokio::test]
    async fn a_rejected_push_is_not_retried_and_says_what_the_gateway_said() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (p, stats) = pusher(listener.local_addr().unwrap());
        let gateway = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 65536];
            let _ = s.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf).into_owned();
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\n\r\ninconsistent").await.unwrap();
            request
        });
        let err = p.push().await.unwrap_err();
        assert!(matches!(&err, PushError::Status { status: 400, body } if body == "inconsistent"), "{err:?}");
        assert_eq!(stats.snapshot()[SINK].errors["status"], 1);
        let request = gateway.await.unwrap();
        assert!(request.starts_with("PUT /metrics/job/trialtail HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{request}");
    }

    #[test]
    fn base64url_pads_and_uses_the_url_alphabet() {
        assert_eq!(base64url(b"a"), "YQ==");
        assert_eq!(base64url(b"ab"), "YWI=");
        assert_eq!(base64url(b"abc"), "YWJj");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8=");
        assert_eq!(base64url(b""), "=");
    }
}
