//! The pod-log source (`trialtail run --source pod-log`): a container's log, followed through the Kubernetes API.
//!
//! The log is read with `follow=true&timestamps=true`; the kubelet's timestamp is cut off each line before the
//! rules see it and becomes the observation's time when the line has none of its own
//! ([`Collector::feed_line_at`](crate::collect::Collector::feed_line_at)). A watch on the own pod says what the
//! container is doing: while it is still starting the source waits (no polling); when the stream ends while it
//! still runs – the API server or kubelet closed it – the log is reopened with `sinceTime` set to the last line's
//! time, and the lines the seam delivers twice are dropped ([`Seam`]). A restarted container is a new instance
//! whose lines all come after the last one read, so the same `sinceTime` reads it from its start, and nothing is
//! lost or counted twice. When the container has terminated and its stream ended, the source ends (training is
//! over); on SIGINT/SIGTERM it reads what arrives within the grace period and ends.
//!
//! What it does not do: pick the container's pod or Trial ([`crate::k8s`]), or write anything to the API.

use std::time::Duration;

use futures::{AsyncBufReadExt, AsyncReadExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, LogParams, WatchEvent, WatchParams};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{End, Feed, LiveSink};
use crate::signal::Signals;
use crate::snapshot::Phase;

/// The longest wait between two attempts to open the log or the watch.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Lines longer than this are cut (the collector's own limit applies after); bounds memory per line.
pub const MAX_LINE: usize = 4 << 20;

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
    /// Time allowed to drain after a signal, or after the container terminated while its stream stays open.
    pub grace: Duration,
}

/// A container's state, as far as reading its log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Not started yet (pulling, creating), or not in the status yet.
    Waiting,
    /// Running; the number is its restart count.
    Running(i32),
    /// Terminated (or the pod is gone): training is over once the log is read.
    Terminated(i32),
}

fn status_of<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let all = status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten());
    all.into_iter().find(|s| s.name == container)
}

/// The state of `container` in `pod`.
pub fn container_state(pod: &Pod, container: &str) -> ContainerState {
    let Some(s) = status_of(pod, container) else { return ContainerState::Waiting };
    match s.state.as_ref() {
        Some(st) if st.running.is_some() => ContainerState::Running(s.restart_count),
        Some(st) if st.terminated.is_some() => ContainerState::Terminated(s.restart_count),
        _ => ContainerState::Waiting,
    }
}

/// The container to read when `--container` is not given: the Trial's `primaryContainerName` when known, else
/// the pod's first regular container that is not trialtail itself (Katib's collector name included).
pub fn default_container(pod: &Pod, primary: Option<&str>) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(p) = primary.filter(|p| spec.containers.iter().any(|c| c.name == *p)) {
        return Some(p.to_string());
    }
    let own = ["trialtail", "metrics-logger-and-collector"];
    spec.containers.iter().find(|c| !own.contains(&c.name.as_str())).map(|c| c.name.clone())
}

/// Splits a `timestamps=true` log line into the kubelet's timestamp (parsed and as text) and the line.
pub fn split_timestamp(line: &[u8]) -> Option<(Timestamp, &[u8], &[u8])> {
    let space = memchr::memchr(b' ', line)?;
    let text = &line[..space];
    let ts: Timestamp = std::str::from_utf8(text).ok()?.parse().ok()?;
    Some((ts, text, &line[space + 1..]))
}

/// The seam between two log streams: which lines a reopened stream delivers again.
///
/// A reopened stream starts at `sinceTime` (the API server may round it down to the second), so it repeats
/// lines older than the last one read, and lines with the same timestamp. Older ones are dropped; of those with
/// the last timestamp exactly as many as were read are dropped (two identical lines in the same nanosecond stay
/// two lines). Within one stream every line is new.
#[derive(Debug, Default, Clone)]
pub struct Seam {
    last: Option<Timestamp>,
    at_last: Vec<Vec<u8>>,
    repeat: Vec<Vec<u8>>,
    reopened: bool,
}

impl Seam {
    /// The `sinceTime` to reopen with.
    pub fn since(&self) -> Option<Timestamp> {
        self.last
    }

    /// A new stream starts: its first lines may repeat.
    pub fn reopen(&mut self) {
        self.repeat = self.at_last.clone();
        self.reopened = self.last.is_some();
    }

    /// Whether the line (its time and text) is new; records it when it is.
    pub fn admit(&mut self, ts: Timestamp, line: &[u8]) -> bool {
        match self.last {
            Some(last) if self.reopened && ts < last => false,
            Some(last) if ts == last => {
                if let Some(i) = self.repeat.iter().position(|l| l == line) {
                    self.repeat.swap_remove(i);
                    return false;
                }
                self.at_last.push(line.to_vec());
                true
            }
            _ => {
                self.last = Some(ts);
                self.at_last.clear();
                self.at_last.push(line.to_vec());
                self.repeat.clear();
                self.reopened = false;
                true
            }
        }
    }
}

/// Keeps `tx` up to date with the container's state from a watch on the pod; reconnects with back-off.
async fn watch_pod(api: Api<Pod>, cfg: PodLogConfig, mut version: String, tx: watch::Sender<ContainerState>) {
    let params = WatchParams::default().fields(&format!("metadata.name={}", cfg.pod));
    let mut backoff = Duration::from_millis(200);
    loop {
        let stream = match api.watch(&params, &version).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, pod = %cfg.pod, "watching the pod failed (needs verb watch on pods); retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                    backoff = Duration::from_millis(200);
                    version = pod.metadata.resource_version.clone().unwrap_or_default();
                    tx.send_replace(container_state(&pod, &cfg.container));
                }
                Ok(WatchEvent::Deleted(_)) => {
                    tx.send_replace(ContainerState::Terminated(i32::MAX));
                    return;
                }
                Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                Ok(WatchEvent::Error(e)) => {
                    // 410 Gone: the version is too old; re-read the pod.
                    tracing::debug!(code = e.code, "pod watch error");
                    match api.get(&cfg.pod).await {
                        Ok(pod) => {
                            version = pod.metadata.resource_version.clone().unwrap_or_default();
                            tx.send_replace(container_state(&pod, &cfg.container));
                        }
                        Err(_) => version = "0".into(),
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
    }
}

type LineResult = Result<Vec<u8>, String>;

/// Reads one stream's lines into `tx` until it ends.
async fn read_stream(reader: impl futures::AsyncBufRead + Send, tx: mpsc::Sender<LineResult>) {
    let mut reader = std::pin::pin!(reader);
    loop {
        let mut line = Vec::new();
        match (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string())).await;
                return;
            }
        }
    }
}

/// What ended one stream.
enum StreamEnd {
    /// The stream ended by itself.
    Closed,
    /// A signal, after draining within the grace period.
    Signalled(i32),
    /// The container terminated and its stream stayed open past the grace period.
    Stuck,
}

/// Follows the container's log until the container terminated (exit 0 from the caller) or a signal. `pod` is
/// the own pod as just read: the watch starts from its `resourceVersion`, so nothing between is missed.
pub async fn follow<S: LiveSink>(
    client: kube::Client,
    pod: Pod,
    cfg: &PodLogConfig,
    live: &mut Feed<'_, S>,
    signals: &mut Signals,
) -> Result<End, PodLogError> {
    let pods: Api<Pod> = Api::namespaced(client, &cfg.namespace);
    let known = |p: &Pod| {
        let spec = p.spec.as_ref();
        let regular = spec.is_some_and(|s| s.containers.iter().any(|c| c.name == cfg.container));
        let init =
            spec.and_then(|s| s.init_containers.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.name == cfg.container));
        regular || init
    };
    if !known(&pod) {
        return Err(PodLogError::NoContainer { pod: cfg.pod.clone(), container: cfg.container.clone() });
    }
    let (state_tx, mut state) = watch::channel(container_state(&pod, &cfg.container));
    let version = pod.metadata.resource_version.clone().unwrap_or_default();
    let watcher = tokio::spawn(watch_pod(pods.clone(), cfg.clone(), version, state_tx));
    let result = follow_streams(&pods, cfg, live, signals, &mut state).await;
    watcher.abort();
    live.end();
    Ok(result)
}

async fn follow_streams<S: LiveSink>(
    pods: &Api<Pod>,
    cfg: &PodLogConfig,
    live: &mut Feed<'_, S>,
    signals: &mut Signals,
    state: &mut watch::Receiver<ContainerState>,
) -> End {
    let mut seam = Seam::default();
    let mut backoff = Duration::from_millis(200);
    loop {
        // Wait while the container is starting.
        loop {
            if *state.borrow_and_update() != ContainerState::Waiting {
                break;
            }
            live.before_wait();
            tokio::select! {
                sig = signals.recv() => return End::Signalled(sig),
                changed = state.changed() => if changed.is_err() { return End::Eof },
            }
        }
        let opened_as = *state.borrow();
        seam.reopen();
        let params = LogParams {
            container: Some(cfg.container.clone()),
            follow: true,
            timestamps: true,
            since_time: seam.since(),
            ..LogParams::default()
        };
        let stream = match pods.log_stream(&cfg.pod, &params).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, container = %cfg.container, "opening the log failed (needs verb get on pods/log); retrying");
                tokio::select! {
                    sig = signals.recv() => return End::Signalled(sig),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        live.stats.opens += 1;
        live.phase = Phase::Reading;
        let (tx, rx) = mpsc::channel(1024);
        let reader = tokio::spawn(read_stream(stream, tx));
        let (end, lines) = read_lines(rx, &mut seam, cfg, live, signals, state).await;
        reader.abort();
        if lines > 0 {
            backoff = Duration::from_millis(200);
        }
        match end {
            StreamEnd::Signalled(sig) => return End::Signalled(sig),
            StreamEnd::Stuck => return End::Eof,
            StreamEnd::Closed => {}
        }
        let now = *state.borrow();
        match (opened_as, now) {
            // The instance that was read ended, and its log was read to the end: training is over.
            (_, ContainerState::Terminated(_)) => return End::Eof,
            (ContainerState::Running(a), ContainerState::Running(b)) if a != b => {
                live.stats.rotations += 1;
                tracing::info!(container = %cfg.container, restarts = b, "the container restarted; reading the new instance");
            }
            _ => {
                tracing::debug!(container = %cfg.container, "the log stream ended while the container runs; reopening")
            }
        }
        live.before_wait();
        tokio::select! {
            sig = signals.recv() => return End::Signalled(sig),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn feed<S: LiveSink>(line: LineResult, seam: &mut Seam, live: &mut Feed<'_, S>) -> u64 {
    let line = match line {
        Ok(line) => line,
        Err(e) => {
            live.stats.read_errors += 1;
            tracing::warn!(error = %e, "reading the log stream failed");
            return 0;
        }
    };
    match split_timestamp(&line) {
        Some((ts, text, rest)) => {
            if !seam.admit(ts, rest) {
                return 0;
            }
            live.collector.feed_line_at(rest, text, live.sink);
        }
        None => {
            live.collector.feed(&line, live.sink);
            live.collector.feed(b"\n", live.sink);
        }
    }
    1
}

async fn read_lines<S: LiveSink>(
    mut rx: mpsc::Receiver<LineResult>,
    seam: &mut Seam,
    cfg: &PodLogConfig,
    live: &mut Feed<'_, S>,
    signals: &mut Signals,
    state: &mut watch::Receiver<ContainerState>,
) -> (StreamEnd, u64) {
    let mut lines = 0u64;
    let mut deadline: Option<Instant> = None;
    loop {
        let line = match rx.try_recv() {
            Ok(line) => Some(line),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                live.before_wait();
                let stuck = async move {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    sig = signals.recv() => {
                        // Drain what arrives within the grace period.
                        let until = Instant::now() + cfg.grace;
                        while let Ok(Some(line)) = tokio::time::timeout_at(until, rx.recv()).await {
                            lines += feed(line, seam, live);
                        }
                        return (StreamEnd::Signalled(sig), lines);
                    }
                    changed = state.changed(), if deadline.is_none() => {
                        if changed.is_err() || matches!(*state.borrow(), ContainerState::Terminated(_)) {
                            deadline = Some(Instant::now() + cfg.grace);
                        }
                        continue;
                    }
                    _ = stuck => return (StreamEnd::Stuck, lines),
                    line = rx.recv() => line,
                }
            }
        };
        match line {
            None => return (StreamEnd::Closed, lines),
            Some(line) => {
                lines += feed(line, seam, live);
                live.after_read();
            }
        }
    }
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
    fn container_states_from_the_pod_status() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "trialtail"}, {"name": "train"}]},
                "status": status,
            }))
            .unwrap()
        };
        let cs = |state: serde_json::Value, restarts: i32| {
            serde_json::json!({"containerStatuses": [{"name": "train", "image": "i", "imageID": "", "ready": true,
                "restartCount": restarts, "state": state}]})
        };
        assert_eq!(container_state(&pod(serde_json::json!({})), "train"), ContainerState::Waiting);
        let waiting = pod(cs(serde_json::json!({"waiting": {"reason": "ContainerCreating"}}), 0));
        assert_eq!(container_state(&waiting, "train"), ContainerState::Waiting);
        let running = pod(cs(serde_json::json!({"running": {}}), 2));
        assert_eq!(container_state(&running, "train"), ContainerState::Running(2));
        let done = pod(cs(serde_json::json!({"terminated": {"exitCode": 0}}), 0));
        assert_eq!(container_state(&done, "train"), ContainerState::Terminated(0));
        assert_eq!(default_container(&done, None).as_deref(), Some("train"));
        assert_eq!(default_container(&done, Some("trialtail")).as_deref(), Some("trialtail"));
        assert_eq!(default_container(&done, Some("missing")).as_deref(), Some("train"));
    }
}
