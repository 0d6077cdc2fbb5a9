//! The pod-log source (`trialtail run --source pod-log`): a container's log, followed through the Kubernetes API.
//!
//! The log is read with `follow=true&timestamps=true` straight into one [`LineBuffer`], like every other
//! source's bytes (lines are cut at `--max-line-bytes` plus the timestamp, exactly as a file's). The kubelet's
//! timestamp is cut off each complete line before the rules see it and becomes the observation's time when the
//! line has none of its own ([`Parser::line_at`]). A watch on the own pod says what the container is doing
//! ([`crate::wait::pod_status`]): while it is still starting the source waits (no polling); when the stream ends
//! while it still runs – the API server or kubelet closed it – the log is reopened with `sinceTime` set to the
//! last line's time, and the lines the seam delivers twice are dropped ([`Seam`]). A restarted container is a
//! new instance whose lines all come after the last one read, so the same `sinceTime` reads it from its start,
//! and nothing is lost or counted twice; a crash the kubelet will restart (the pod's `restartPolicy`) is not the
//! end. When the container has terminated for good and its stream ended, the source ends (training is over) and
//! its final snapshot says whether training succeeded (exit code 0); on SIGINT/SIGTERM it reads what arrives
//! within the grace period and waits as long for the container's end to show, then ends.
//!
//! What it does not do: pick the container's pod or Trial ([`crate::k8s`]), or write anything to the API.

use std::time::Duration;

use futures::{AsyncReadExt, FutureExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{End, Feed, LiveSink};
use crate::lines::{Line, LineBuffer, LineSink};
use crate::parser::{ObservationSink, Parser};
use crate::signal::Signals;
use crate::snapshot::{Phase, Training};
use crate::wait::pod_status::{self, ContainerState, container_state};

/// Room for the kubelet's timestamp and its space in front of each line (RFC 3339 with nanoseconds is 30 bytes).
pub const TIMESTAMP_ROOM: usize = 40;

/// Why the pod-log source could not start.
#[derive(Debug, thiserror::Error)]
pub enum PodLogError {
    #[error("pod {pod:?} has no container {container:?}")]
    NoContainer { pod: String, container: String },
}

/// What the source reads.
#[derive(Debug, Clone)]
pub struct PodLogConfig {
    /// The pod.
    pub pod: String,
    /// Its namespace.
    pub namespace: String,
    /// The container whose log is read.
    pub container: String,
    /// The container whose end ends the run: the training container (usually the one read; with Katib's
    /// collector kind `StdOut`, the log is Katib's logger's while the end is the training container's).
    pub training: String,
    /// Time allowed to drain after a signal, or after the container terminated while its stream stays open.
    pub grace: Duration,
    /// `--max-line-bytes`: a line's text (after its timestamp) is cut there, as a file's.
    pub max_line_bytes: usize,
}

/// The container to read when `--container` is not given: the Trial's `primaryContainerName` when known, else
/// the pod's first regular container that is neither trialtail nor Katib's collector.
pub fn default_container(pod: &Pod, primary: Option<&str>) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(p) = primary.filter(|p| spec.containers.iter().any(|c| c.name == *p)) {
        return Some(p.to_string());
    }
    let collector = |name: &str| name == "trialtail" || crate::k8s::KATIB_COLLECTOR_CONTAINERS.contains(&name);
    spec.containers.iter().find(|c| !collector(&c.name)).map(|c| c.name.clone())
}

/// Splits a `timestamps=true` log line into the kubelet's timestamp (parsed and as text) and the line.
pub fn split_timestamp(line: &[u8]) -> Option<(Timestamp, &[u8], &[u8])> {
    let space = memchr::memchr(b' ', line)?;
    let text = &line[..space];
    let ts: Timestamp = std::str::from_utf8(text).ok()?.parse().ok()?;
    Some((ts, text, &line[space + 1..]))
}

/// Lines sharing the last timestamp whose hashes the seam keeps (512 KiB); past that it counts them.
pub const SEAM_LINES: usize = 65_536;

/// The seam between two log streams: which lines a reopened stream delivers again.
///
/// A reopened stream starts at `sinceTime` (the API server may round it down to the second), so it repeats
/// lines older than the last one read, and lines with the same timestamp. Older ones are dropped; of those with
/// the last timestamp exactly as many as were read are dropped (two identical lines in the same nanosecond stay
/// two lines). Within one stream every line is new.
///
/// Bounded: the lines read at the last timestamp are kept as 64-bit hashes (keyed per process), at most
/// [`SEAM_LINES`] of them; further lines at that timestamp are only counted, and as many lines at that
/// timestamp beyond the hashed ones are dropped from a reopened stream (which repeats them in their order).
#[derive(Debug, Default, Clone)]
pub struct Seam {
    last: Option<Timestamp>,
    keys: std::collections::hash_map::RandomState,
    /// Hashes of the lines read at `last`, in order, at most [`SEAM_LINES`].
    at_last: Vec<u64>,
    /// Lines read at `last` beyond those.
    at_last_more: u64,
    /// The hashes a reopened stream may repeat, with how many times each.
    repeat: std::collections::HashMap<u64, u32>,
    /// Lines a reopened stream repeats beyond the hashed ones.
    repeat_more: u64,
    reopened: bool,
}

impl Seam {
    /// The `sinceTime` to reopen with.
    pub fn since(&self) -> Option<Timestamp> {
        self.last
    }

    /// A new stream starts: its first lines may repeat.
    pub fn reopen(&mut self) {
        self.repeat.clear();
        for &h in &self.at_last {
            *self.repeat.entry(h).or_default() += 1;
        }
        self.repeat_more = self.at_last_more;
        self.reopened = self.last.is_some();
    }

    fn hash(&self, line: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.keys, line)
    }

    fn record(&mut self, h: u64) {
        if self.at_last.len() < SEAM_LINES {
            self.at_last.push(h);
        } else {
            self.at_last_more += 1;
        }
    }

    /// Whether the line (its time and text) is new; records it when it is.
    pub fn admit(&mut self, ts: Timestamp, line: &[u8]) -> bool {
        match self.last {
            Some(last) if self.reopened && ts < last => false,
            Some(last) if ts == last => {
                let h = self.hash(line);
                if let Some(n) = self.repeat.get_mut(&h) {
                    *n -= 1;
                    if *n == 0 {
                        self.repeat.remove(&h);
                    }
                    return false;
                }
                if self.repeat.is_empty() && self.repeat_more > 0 {
                    self.repeat_more -= 1;
                    return false;
                }
                self.record(h);
                true
            }
            _ => {
                let h = self.hash(line);
                self.last = Some(ts);
                self.at_last.clear();
                self.at_last_more = 0;
                self.record(h);
                self.repeat.clear();
                self.repeat_more = 0;
                self.reopened = false;
                true
            }
        }
    }

    /// Bytes the seam holds (its hashes), for the tests of its bound.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        (self.at_last.capacity() + self.repeat.capacity() * 2) * std::mem::size_of::<u64>()
    }
}

/// One stream's complete lines, cut from their timestamps, passed through the seam into the parser.
///
/// A line over `--max-line-bytes` is handled as a file's: its text (after the timestamp) cut at the limit and
/// marked cut, so the rules see what they see in a file (Katib semantics drops it whole); it passes the seam by
/// its cut text, so a reopened stream that repeats it drops it as any other line.
struct PodLines<'a, S> {
    seam: &'a mut Seam,
    parser: &'a mut Parser,
    sink: &'a mut S,
    max_line: usize,
}

impl<S: ObservationSink> LineSink for PodLines<'_, S> {
    fn line(&mut self, line: Line<'_>) {
        match split_timestamp(line.bytes) {
            Some((ts, text, rest)) => {
                let truncated = line.truncated || rest.len() > self.max_line;
                let rest = &rest[..rest.len().min(self.max_line)];
                if self.seam.admit(ts, rest) {
                    self.parser.line_at(Line { bytes: rest, number: line.number, truncated }, text, self.sink);
                }
            }
            None => self.parser.lines(self.sink).line(line),
        }
    }

    fn end(&mut self) {
        self.parser.lines(self.sink).end();
    }
}

/// What ended one stream.
enum StreamEnd {
    /// The stream ended by itself.
    Closed,
    /// A signal (received at the instant), after draining within the grace period.
    Signalled(i32, Instant),
    /// The container terminated and its stream stayed open past the grace period.
    Stuck,
}

/// Follows the container's log until the training container terminated for good or a signal; returns how
/// reading ended and the training container's last known state. `pod` is the own pod as just read: the watch
/// starts from its `resourceVersion`, so nothing between is missed.
pub async fn follow<S: LiveSink>(
    client: kube::Client,
    pod: Pod,
    cfg: &PodLogConfig,
    feed: &mut Feed<'_, S>,
    signals: &mut Signals,
) -> Result<(End, ContainerState), PodLogError> {
    let pods: Api<Pod> = Api::namespaced(client, &cfg.namespace);
    let known = |name: &str| {
        let spec = pod.spec.as_ref();
        let regular = spec.is_some_and(|s| s.containers.iter().any(|c| c.name == name));
        let init = spec.and_then(|s| s.init_containers.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.name == name));
        regular || init
    };
    for name in [&cfg.container, &cfg.training] {
        if !known(name) {
            return Err(PodLogError::NoContainer { pod: cfg.pod.clone(), container: name.clone() });
        }
    }
    let (state_tx, mut state) = watch::channel(container_state(&pod, &cfg.training));
    let version = pod.metadata.resource_version.clone().unwrap_or_default();
    let watcher =
        tokio::spawn(pod_status::watch(pods.clone(), cfg.pod.clone(), cfg.training.clone(), version, state_tx));
    let (result, signalled) = follow_streams(&pods, cfg, feed, signals, &mut state).await;
    // A native sidecar gets SIGTERM only after the training container stopped (the kubelet's termination
    // order, `pkg/kubelet/kuberuntime/kuberuntime_termination_order.go`), possibly before the pod watch shows
    // it: how training ended is waited for, within what is left of the grace period.
    if let Some(at) = signalled
        && !state.borrow().is_terminated()
    {
        let _ = tokio::time::timeout_at(at + cfg.grace, state.wait_for(|s| s.is_terminated())).await;
    }
    watcher.abort();
    let last = *state.borrow();
    feed.stats.training = if last.succeeded() { Training::Succeeded } else { Training::Failed };
    feed.end();
    Ok((result, last))
}

async fn follow_streams<S: LiveSink>(
    pods: &Api<Pod>,
    cfg: &PodLogConfig,
    feed: &mut Feed<'_, S>,
    signals: &mut Signals,
    state: &mut watch::Receiver<ContainerState>,
) -> (End, Option<Instant>) {
    let mut seam = Seam::default();
    let mut lines = LineBuffer::new(cfg.max_line_bytes + TIMESTAMP_ROOM);
    let mut backoff = pod_status::BACKOFF;
    loop {
        // Wait while the container is starting.
        loop {
            if *state.borrow_and_update() != ContainerState::Waiting {
                break;
            }
            feed.before_wait();
            tokio::select! {
                sig = signals.recv() => return (End::Signalled(sig), Some(Instant::now())),
                changed = state.changed() => if changed.is_err() { return (End::Eof, None) },
            }
        }
        let opened_as = *state.borrow();
        let instance = match opened_as {
            ContainerState::Running(n) => Some(n),
            _ => None,
        };
        seam.reopen();
        let params = LogParams {
            container: Some(cfg.container.clone()),
            follow: true,
            timestamps: true,
            since_time: seam.since(),
            ..LogParams::default()
        };
        let opened = tokio::select! {
            opened = tokio::time::timeout(crate::k8s::REQUEST_TIMEOUT, pods.log_stream(&cfg.pod, &params)) => opened,
            sig = signals.recv() => return (End::Signalled(sig), Some(Instant::now())),
        };
        let stream = match opened.unwrap_or_else(|_| Err(kube::Error::Service("no answer from the API server".into())))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, container = %cfg.container, "opening the log failed (needs verb get on pods/log); retrying");
                tokio::select! {
                    sig = signals.recv() => return (End::Signalled(sig), Some(Instant::now())),
                    _ = tokio::time::sleep(backoff.pause()) => {}
                }
                continue;
            }
        };
        feed.stats.opens += 1;
        feed.phase = Phase::Reading;
        let (end, bytes) = read_stream(stream, &mut lines, &mut seam, cfg, feed, signals, state).await;
        if bytes > 0 {
            backoff.reset();
        }
        match end {
            StreamEnd::Signalled(sig, at) => return (End::Signalled(sig), Some(at)),
            StreamEnd::Stuck => return (End::Eof, None),
            StreamEnd::Closed => {}
        }
        let now = *state.borrow();
        match (instance, now) {
            // The instance that was read ended, and its log was read to the end: training is over.
            (_, ContainerState::Terminated { .. }) => return (End::Eof, None),
            (Some(a), ContainerState::Running(b)) if a != b => {
                feed.stats.rotations += 1;
                tracing::info!(container = %cfg.training, restarts = b, "the container restarted; reading the new instance");
            }
            (_, ContainerState::Waiting) => {
                tracing::info!(container = %cfg.training, "the container ended and will be restarted; waiting for it")
            }
            _ => {
                tracing::debug!(container = %cfg.container, "the log stream ended while the container runs; reopening")
            }
        }
        feed.before_wait();
        tokio::select! {
            sig = signals.recv() => return (End::Signalled(sig), Some(Instant::now())),
            _ = tokio::time::sleep(backoff.pause()) => {}
        }
    }
}

/// Reads one log stream into `lines` until it ends, a signal (then what arrives within the grace period is
/// read), or the container terminated and the stream stayed open past the grace period. Returns how it ended
/// and the bytes read.
async fn read_stream<S: LiveSink>(
    stream: impl futures::AsyncBufRead + Send,
    lines: &mut LineBuffer,
    seam: &mut Seam,
    cfg: &PodLogConfig,
    feed: &mut Feed<'_, S>,
    signals: &mut Signals,
    state: &mut watch::Receiver<ContainerState>,
) -> (StreamEnd, u64) {
    let mut stream = std::pin::pin!(stream);
    let mut bytes = 0u64;
    let mut deadline: Option<Instant> = None;
    let end = loop {
        // Read without waiting while data is there; before waiting, flush and publish.
        let read = match stream.read(lines.space()).now_or_never() {
            Some(read) => read,
            None => {
                feed.before_wait();
                let stuck = async move {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    sig = signals.recv() => {
                        // Read what arrives within the grace period.
                        let at = Instant::now();
                        let until = at + cfg.grace;
                        while let Ok(Ok(n @ 1..)) = tokio::time::timeout_at(until, stream.read(lines.space())).await {
                            bytes += n as u64;
                            take(n, lines, seam, feed, cfg.max_line_bytes);
                        }
                        break StreamEnd::Signalled(sig, at);
                    }
                    changed = state.changed(), if deadline.is_none() => {
                        if changed.is_err() || state.borrow().is_terminated() {
                            deadline = Some(Instant::now() + cfg.grace);
                        }
                        continue;
                    }
                    _ = stuck => break StreamEnd::Stuck,
                    read = stream.read(lines.space()) => read,
                }
            }
        };
        match read {
            Ok(0) => break StreamEnd::Closed,
            Ok(n) => {
                bytes += n as u64;
                take(n, lines, seam, feed, cfg.max_line_bytes);
                feed.after_read();
            }
            Err(e) => {
                feed.stats.read_errors += 1;
                tracing::warn!(error = %e, "reading the log stream failed");
                break StreamEnd::Closed;
            }
        }
    };
    // A stream ends on a line boundary unless it was cut: its last partial line is a line.
    lines.finish_into(&mut PodLines { seam, parser: feed.parser, sink: feed.sink, max_line: cfg.max_line_bytes });
    feed.set_lines(lines.stats());
    (end, bytes)
}

/// `n` bytes were read into `lines`: parse its complete lines (cut at `max_line` bytes after the timestamp).
fn take<S: LiveSink>(n: usize, lines: &mut LineBuffer, seam: &mut Seam, feed: &mut Feed<'_, S>, max_line: usize) {
    lines.commit(n);
    lines.drain_into(&mut PodLines { seam, parser: feed.parser, sink: feed.sink, max_line });
    feed.set_lines(lines.stats());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn splits_the_kubelet_timestamp_off() {
        let (t, text, rest) = split_timestamp(b"2026-11-28T15:00:00.123456789Z loss=0.5").unwrap();
        assert_eq!(
            (t, text, rest),
            (ts("2026-11-28T15:00:00.123456789Z"), &b"2026-11-28T15:00:00.123456789Z"[..], &b"loss=0.5"[..])
        );
        assert!(split_timestamp(b"loss=0.5").is_none());
        assert!(split_timestamp(b"no-time here").is_none());
    }

    #[test]
    fn the_seam_drops_exactly_the_repeated_lines() {
        let mut seam = Seam::default();
        let (t1, t2) = (ts("2026-11-28T15:00:00.5Z"), ts("2026-11-28T15:00:01.25Z"));
        assert!(seam.admit(t1, b"a"));
        assert!(seam.admit(t2, b"b"));
        assert!(seam.admit(t2, b"b"), "two identical lines in one stream are two lines");
        assert!(seam.admit(t2, b"c"));
        seam.reopen();
        assert_eq!(seam.since(), Some(t2));
        // The reopened stream starts at the second: it repeats a, b, b, c.
        assert!(!seam.admit(t1, b"a"));
        assert!(!seam.admit(t2, b"b"));
        assert!(!seam.admit(t2, b"c"));
        assert!(!seam.admit(t2, b"b"));
        assert!(seam.admit(t2, b"d"), "a new line at the same instant is new");
        assert!(seam.admit(ts("2026-11-28T15:00:02Z"), b"e"));
    }

    #[test]
    fn the_seam_is_bounded_and_drops_a_repeated_burst_past_its_bound_by_count() {
        let mut seam = Seam::default();
        let t = ts("2026-11-28T15:00:00.5Z");
        let burst = SEAM_LINES + 1000;
        for i in 0..burst {
            assert!(seam.admit(t, format!("loss={i}").as_bytes()));
        }
        assert!(seam.held_bytes() <= 2 * SEAM_LINES * 8, "{}", seam.held_bytes());
        seam.reopen();
        for i in 0..burst {
            assert!(!seam.admit(t, format!("loss={i}").as_bytes()), "line {i} repeated");
        }
        assert!(seam.admit(t, b"loss=new"), "a new line at the same instant after the repeats is new");
        seam.reopen();
        assert!(seam.held_bytes() <= 8 * SEAM_LINES * 8, "{}", seam.held_bytes());
    }

    #[test]
    fn the_default_container_is_the_primary_else_the_first_that_is_not_trialtail() {
        // No container is the primary one when the Trial does not say which, so any pod shape does.
        let done: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "trialtail"}, {"name": "train"}]},
        }))
        .unwrap();
        assert_eq!(default_container(&done, None).as_deref(), Some("train"));
        assert_eq!(default_container(&done, Some("trialtail")).as_deref(), Some("trialtail"));
        assert_eq!(default_container(&done, Some("missing")).as_deref(), Some("train"));
    }
}
