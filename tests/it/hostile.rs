//! Hostile inputs and broken peers: each test pins one way a log, a signal or a peer could exhaust memory or
//! hang trialtail, at the smallest size that shows it. Memory is the peak RSS of the child process
//! (`support::rss`), measured against the same binary's footprint on a one-line input; hangs are bounded by a
//! timeout in the test.

use std::fs;
use std::time::{Duration, Instant};

use crate::support::rss::{Measured, peak_rss};

/// The footprint of `trialtail run` on a one-line log, in KiB: the debug binary's own pages.
fn footprint(extra: &[&str]) -> i64 {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("one.log");
    fs::write(&path, "loss=0.5\n").unwrap();
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    let m = peak_rss(&args);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    m.peak_kib
}

fn said(m: &Measured) -> String {
    format!("exit {:?}, peak {} KiB\n{}", m.code, m.peak_kib, m.stderr)
}

#[test]
fn names_and_values_over_the_limit_are_dropped_counted_and_cost_no_memory() {
    // 1000 lines, each a new 30 KiB name with a 30 KiB number: every one would be a metric of its own.
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("long.log");
    let value = format!("1{}", "0".repeat(30 * 1024 - 1));
    let log: String = (0..1000).map(|i| format!("m{i:04}{}={value}\n", "a".repeat(30 * 1024))).collect();
    fs::write(&path, format!("{log}loss=0.5\nloss=0.25\n")).unwrap();
    let base = footprint(&["--stats"]);
    let started = Instant::now();
    let m = peak_rss(&["run", "--stats", path.to_str().unwrap()]);
    eprintln!(
        "1000 lines of 60 KiB names and numbers: peak {} KiB (footprint {base} KiB), {:?}",
        m.peak_kib,
        started.elapsed()
    );
    assert_eq!(m.code, Some(0), "{}", said(&m));
    assert!(m.peak_kib - base <= 10 * 1024, "{}", said(&m));
    assert!(m.stderr.contains("oversized=1000 "), "each dropped observation counted: {}", said(&m));
    assert!(m.stderr.contains("metrics=1 "), "only loss is a metric: {}", said(&m));
    assert!(m.stderr.contains("longer than 1024 bytes"), "said once: {}", said(&m));
    assert!(m.stdout.contains("loss"), "{}", m.stdout);
}

/// trialtail as a child whose stderr is read line by line (so a test can wait for what it says).
struct Watched {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn start(args: &[&str]) -> Self {
        Watched::start_with(args, &[])
    }

    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_trialtail"));
        for var in ["KUBERNETES_SERVICE_HOST", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .env_remove("TRIALTAIL_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Watched { child, lines, seen: Vec::new() }
    }

    /// Waits (at most [`crate::support::PATIENCE`]) until stderr says `what`.
    fn wait_said(&mut self, what: &str) {
        let end = Instant::now() + crate::support::PATIENCE;
        while !self.seen.iter().any(|l| l.contains(what)) {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("trialtail never said {what:?}:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// The exit status within `limit`, or `None` (the child is killed then).
    fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

const LINGERING: &str = "waiting for a scrape of the final values";

#[test]
fn sigterm_while_lingering_after_a_local_read_ends_the_linger_with_the_summary_written() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out.jsonl");
    let addr = crate::support::free_addr().to_string();
    let log = crate::example("tf_accuracy_at_step.log");
    let mut tt = Watched::start(&[
        "run",
        "--listen",
        &addr,
        "--linger",
        "60s",
        "--log-level",
        "info",
        "--output",
        "json",
        "--output-file",
        out.to_str().unwrap(),
        "-m",
        "Accuracy",
        log.to_str().unwrap(),
    ]);
    tt.wait_said(LINGERING);
    // The summary is written before the linger starts.
    assert_eq!(fs::read_to_string(&out).unwrap().lines().count(), 30, "written before lingering");
    let sent = Instant::now();
    tt.signal(rustix::process::Signal::TERM);
    let status = tt.exit_within(Duration::from_secs(10));
    eprintln!("SIGTERM while lingering (local mode): exit {status:?} after {:?}", sent.elapsed());
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", tt.stderr());
    assert!(sent.elapsed() < Duration::from_secs(5));
}

#[test]
fn sigterm_while_lingering_after_a_follow_ends_it_at_once_and_a_second_signal_exits_128_plus_n() {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("train.log");
    fs::write(&log, "loss=0.5\n").unwrap();
    // Ended by --until-idle: the linger starts; one SIGTERM ends it at once.
    let addr = crate::support::free_addr().to_string();
    let follow = ["run", "--follow", "--listen", &addr, "--linger", "60s", "--log-level", "info"];
    let mut tt = Watched::start(&[&follow[..], &["--until-idle", "200ms", log.to_str().unwrap()]].concat());
    tt.wait_said(LINGERING);
    let sent = Instant::now();
    tt.signal(rustix::process::Signal::TERM);
    let status = tt.exit_within(Duration::from_secs(10));
    eprintln!("SIGTERM while lingering (follow): exit {status:?} after {:?}", sent.elapsed());
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", tt.stderr());
    assert!(sent.elapsed() < Duration::from_secs(5));

    // Ended by a signal, it lingers within the grace period only: the signal asked it to stop.
    let addr = crate::support::free_addr().to_string();
    let follow = ["run", "--follow", "--listen", &addr, "--linger", "60s", "--shutdown-grace", "1s"];
    let mut tt = Watched::start(&[&follow[..], &[log.to_str().unwrap()]].concat());
    let ready = addr.parse().unwrap();
    crate::support::wait_for("/readyz", || {
        crate::support::get(ready, "/readyz", None).ok().filter(|r| r.status == 200)
    });
    let sent = Instant::now();
    tt.signal(rustix::process::Signal::INT);
    let status = tt.exit_within(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", tt.stderr());
    assert!(sent.elapsed() < Duration::from_secs(5), "{:?}", sent.elapsed());

    // Stopped by a first signal and lingering within a long grace period, a second signal exits 128+N at once.
    let addr = crate::support::free_addr().to_string();
    let follow = ["run", "--follow", "--listen", &addr, "--linger", "60s", "--shutdown-grace", "60s"];
    let mut tt = Watched::start(&[&follow[..], &["--log-level", "info", log.to_str().unwrap()]].concat());
    let ready = addr.parse().unwrap();
    crate::support::wait_for("/readyz", || {
        crate::support::get(ready, "/readyz", None).ok().filter(|r| r.status == 200)
    });
    tt.signal(rustix::process::Signal::INT);
    tt.wait_said(LINGERING);
    let sent = Instant::now();
    tt.signal(rustix::process::Signal::TERM);
    let status = tt.exit_within(Duration::from_secs(10));
    eprintln!("second signal while lingering (follow): exit {status:?} after {:?}", sent.elapsed());
    assert_eq!(status.and_then(|s| s.code()), Some(143), "{}", tt.stderr());
    assert!(sent.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_second_signal_while_the_sidecar_reports_to_katib_exits_128_plus_n_at_once() {
    use crate::sidecar::{Sidecar, job, pod, set_state, trial, wait_for};
    use crate::support::kube_fake::KubeFake;
    use serde_json::json;
    let fake = KubeFake::start(pod(), job(), trial());
    // No DB manager listens: the final report retries until its deadline, a minute.
    let db = crate::support::free_addr().to_string();
    let args = ["--katib-db", &db, "--report-deadline", "60s", "--report-interval", "0", "--trial-status", "off"];
    let sidecar = Sidecar::start(&fake, &args, None);
    set_state(&fake, json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}));
    fake.write_log(&["accuracy=0.5"]);
    wait_for("the log stream", || fake.count("GET", "/log", "") > 0);
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    sidecar.signal(rustix::process::Signal::TERM);
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    sidecar.signal(rustix::process::Signal::TERM);
    let (status, _, err) = sidecar.wait();
    eprintln!("second SIGTERM while reporting: exit {status:?} after {:?}", sent.elapsed());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.code(), Some(143), "{status:?} {:?}\n{err}", status.signal());
    assert!(sent.elapsed() < Duration::from_secs(5), "{:?}", sent.elapsed());
}

#[test]
fn plot_keeps_only_the_points_it_draws() {
    // 1000 metrics × 2000 points; a picture draws 24 panels.
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("wide.log");
    let mut log = String::new();
    for step in 0..2000 {
        for m in 0..1000 {
            log.push_str(&format!("m{m}={}.{step} ", m % 7));
        }
        log.push('\n');
    }
    fs::write(&path, log).unwrap();
    let small = t.path().join("small.log");
    fs::write(&small, "m0=1\nm0=2\n").unwrap();
    let svg = t.path().join("p.svg");
    let base = peak_rss(&["plot", small.to_str().unwrap(), "-o", svg.to_str().unwrap()]);
    assert_eq!(base.code, Some(0), "{}", said(&base));
    let started = Instant::now();
    let m = peak_rss(&["plot", "--max-metrics", "1000", path.to_str().unwrap(), "-o", svg.to_str().unwrap()]);
    eprintln!(
        "plot of 1000 metrics x 2000 points: peak {} KiB (footprint {} KiB), {:?}",
        m.peak_kib,
        base.peak_kib,
        started.elapsed()
    );
    assert_eq!(m.code, Some(0), "{}", said(&m));
    assert!(m.stderr.contains("too many metrics for one picture"), "{}", said(&m));
    assert!(m.peak_kib - base.peak_kib <= 16 * 1024, "{}", said(&m));
    let picture = fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("m23") && !picture.contains("m24<"), "the first 24 metrics are drawn");
}

/// The peak RSS so far of a running process, in KiB.
fn vm_hwm_kib(pid: u32) -> i64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// The value of `family{metric="name",…}` in a scrape of `addr`.
fn sample(addr: std::net::SocketAddr, family: &str, name: &str) -> Option<f64> {
    let body = crate::support::get(addr, "/metrics", None).ok()?.body;
    let prefix = format!("{family}{{metric=\"{name}\"");
    body.lines().find(|l| l.starts_with(&prefix))?.rsplit(' ').next()?.parse().ok()
}

#[test]
fn a_million_pod_log_lines_with_one_timestamp_keep_the_seam_small_and_none_is_read_twice() {
    use crate::sidecar::{Sidecar, job, pod, set_state, trial, wait_for};
    use crate::support::kube_fake::KubeFake;
    use serde_json::json;
    // Katib's own collector reports this Trial: trialtail only observes (no report rows to confound memory).
    let mut t = trial();
    t["spec"]["metricsCollector"]["collector"]["kind"] = json!("StdOut");
    let fake = KubeFake::start(pod(), job(), t);
    let addr = crate::support::free_addr();
    let sidecar = Sidecar::start(&fake, &["--listen", &addr.to_string(), "--linger", "0"], None);
    set_state(&fake, json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}));
    fake.write_log(&["accuracy=0.5"]);
    let latest = |v: f64| move || sample(addr, "trialtail_metric_latest", "accuracy") == Some(v);
    wait_for("the first observation", latest(0.5));
    let before = vm_hwm_kib(sidecar.pid());
    let started = Instant::now();
    fake.write_log_burst(1_000_000);
    fake.write_log(&["accuracy=0.7"]);
    wait_for("the line after the burst", latest(0.7));
    let after = vm_hwm_kib(sidecar.pid());
    eprintln!(
        "1 000 000 lines with one timestamp: peak {after} KiB, {before} KiB before, read in {:?}",
        started.elapsed()
    );
    // A cut: the reopened stream repeats the burst's second, and none of it is new.
    fake.cut_log_streams();
    wait_for("the reconnect", || fake.count("GET", "/log", "sinceTime") > 0);
    fake.write_log(&["accuracy=0.9"]);
    wait_for("the line after the reconnect", latest(0.9));
    let burst = sample(addr, "trialtail_metric_observations_total", "loss");
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    let (status, _, err) = sidecar.wait();
    assert!(status.success(), "{err}");
    assert_eq!(burst, Some(1e6), "every line of the burst once");
    assert!(after - before <= 8 * 1024, "the burst cost {} KiB", after - before);
}

#[test]
fn a_pod_log_line_over_the_limit_is_handled_as_a_local_file_handles_it() {
    use crate::sidecar::{Sidecar, job, metric, metrics, pod, set_state, trial, wait_for};
    use crate::support::kube_fake::KubeFake;
    use serde_json::{Value, json};
    let long = format!("accuracy=0.1 {} accuracy=0.2", "x".repeat(5 << 20));
    let lines = [long.as_str(), "loss=0.3", "accuracy=0.4"];
    // The same bytes in a local file, with the Katib semantics the Trial asks for.
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("train.log");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let local = crate::trialtail(
        &["run", "--katib-semantics", "-m", "accuracy;loss", "--output", "json", path.to_str().unwrap()],
        None,
    );
    let rows = |out: &[String]| -> Vec<(String, String)> {
        out.iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|o| (o["metric"].as_str().unwrap().to_string(), o["raw"].as_str().unwrap().to_string()))
            .collect()
    };
    let want = rows(&crate::stdout(&local).lines().map(str::to_string).collect::<Vec<_>>());
    assert_eq!(want, [("loss".to_string(), "0.3".to_string()), ("accuracy".to_string(), "0.4".to_string())]);

    let fake = KubeFake::start(pod(), job(), trial());
    let sidecar = Sidecar::start(&fake, &["--output", "json", "--status-interval", "200ms"], None);
    set_state(&fake, json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}));
    fake.write_log(&lines);
    wait_for("the line after the long one", || {
        metric(&metrics(&fake), "accuracy").is_some_and(|m| m["latest"] == "0.4")
    });
    // A cut right after: the reopened stream repeats the long line too, and it is not read again.
    fake.cut_log_streams();
    wait_for("the reconnect", || fake.count("GET", "/log", "sinceTime") > 0);
    fake.write_log(&["loss=0.5"]);
    wait_for("the line after the reconnect", || metric(&metrics(&fake), "loss").is_some_and(|m| m["latest"] == "0.5"));
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    let (status, out, err) = sidecar.wait();
    assert!(status.success(), "{err}");
    let mut expected = want.clone();
    expected.push(("loss".to_string(), "0.5".to_string()));
    assert_eq!(rows(&out), expected, "{err}");
}

/// An API server that accepts connections and never answers; the connections are held until it is dropped.
struct SilentServer {
    addr: std::net::SocketAddr,
    _held: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl SilentServer {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = held.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                h.lock().unwrap().push(s);
            }
        });
        SilentServer { addr, _held: held }
    }

    /// A sidecar (`run --source pod-log`) against this server.
    fn sidecar(&self, dir: &std::path::Path) -> Watched {
        let kubeconfig = dir.join("kubeconfig");
        fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: http://{}\nusers:\n- name: u\n  \
                 user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: s\n    user: u\n    namespace: ns\n\
                 current-context: c\n",
                self.addr
            ),
        )
        .unwrap();
        Watched::start_with(
            &["run", "--source", "pod-log", "--log-level", "info"],
            &[("KUBECONFIG", kubeconfig.to_str().unwrap()), ("POD_NAME", "p"), ("POD_NAMESPACE", "ns")],
        )
    }
}

#[test]
fn a_sidecar_whose_api_server_never_answers_gives_up_with_a_clear_error() {
    let server = SilentServer::start();
    let t = tempfile::tempdir().unwrap();
    let mut tt = server.sidecar(t.path());
    let started = Instant::now();
    let status = tt.exit_within(Duration::from_secs(40));
    eprintln!("silent API server at start-up: {status:?} after {:?}", started.elapsed());
    let err = tt.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert!(err.contains("no answer from the API server within 10s"), "{err}");
}

#[test]
fn sigterm_while_the_sidecar_waits_for_its_api_server_ends_it_at_once() {
    let server = SilentServer::start();
    let t = tempfile::tempdir().unwrap();
    let mut tt = server.sidecar(t.path());
    std::thread::sleep(Duration::from_millis(1000));
    let sent = Instant::now();
    tt.signal(rustix::process::Signal::TERM);
    let status = tt.exit_within(Duration::from_secs(5));
    eprintln!("SIGTERM during start-up: {status:?} after {:?}", sent.elapsed());
    let err = tt.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    assert!(err.contains("before reading the log"), "{err}");
}

#[test]
fn a_followed_fifo_reads_every_writer_and_a_signal_ends_it() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("train.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = t.path().join("out.jsonl");
    let mut tt = Watched::start(&[
        "run",
        "--follow",
        "--output",
        "json",
        "--output-file",
        out.to_str().unwrap(),
        fifo.to_str().unwrap(),
    ]);
    // Two writers, one after the other, as `tail -F` reads them; opening for writing waits for the reader.
    for line in ["loss=0.5\n", "loss=0.4\n"] {
        let (tx, rx) = std::sync::mpsc::channel();
        let (path, line) = (fifo.clone(), line.to_string());
        std::thread::spawn(move || {
            use std::io::Write;
            let written = fs::OpenOptions::new().write(true).open(&path).and_then(|mut f| f.write_all(line.as_bytes()));
            let _ = tx.send(written.is_ok());
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true), "the writer got in");
        std::thread::sleep(Duration::from_millis(300));
    }
    let sent = Instant::now();
    tt.signal(rustix::process::Signal::TERM);
    let status = tt.exit_within(Duration::from_secs(5));
    eprintln!("SIGTERM while following a FIFO: {status:?} after {:?}", sent.elapsed());
    let err = tt.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    let values: Vec<String> = fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["raw"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(values, ["0.5", "0.4"], "{err}");
}

#[test]
fn sigterm_while_waiting_for_a_fifo_writer_ends_the_follow() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("train.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut tt = Watched::start(&["run", "--follow", fifo.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    tt.signal(rustix::process::Signal::TERM);
    let status = tt.exit_within(Duration::from_secs(5));
    eprintln!("SIGTERM before any FIFO writer: {status:?} after {:?}", sent.elapsed());
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", tt.stderr());
}
