//! The Prometheus endpoint against the real thing: a Prometheus server scraping `trialtail run --listen`,
//! `promtool check metrics` on the exposition, a Pushgateway receiving `--pushgateway`, and the linger that keeps
//! the final values available until a scrape took them.
//!
//! The log fixture below is written by each test so the expected values sit beside it: `loss` (latest 0.7, min
//! 0.5, max 0.9), `Accuracy` with steps (latest 0.5 at step 30), and `grad_norm` ending at `inf`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, Daemon, PATIENCE, free_addr, get, wait_for};

const LOG: &str = "\
epoch 1 loss=0.9
epoch 2 loss=0.5
Accuracy at step 10: 0.25
Accuracy at step 20: 0.75
grad_norm=1.5
epoch 3 loss=0.7
Accuracy at step 30: 0.5
grad_norm=inf
";

const IDENTITY: [&str; 8] = ["--trial", "trial-1", "--experiment", "exp-1", "--namespace", "ns-1", "--pod", "pod-1"];

/// A running trialtail, killed when dropped.
struct Trialtail(Child);

impl Trialtail {
    fn spawn(args: &[&str], stdin: bool) -> Trialtail {
        Trialtail::spawn_with(args, stdin, "info")
    }

    /// With a `--log-level` filter.
    fn spawn_with(args: &[&str], stdin: bool, log: &str) -> Trialtail {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trialtail"));
        cmd.arg("run").args(args).env("TRIALTAIL_LOG", log);
        for k in ["KATIB_TRIAL_NAME", "POD_NAME", "POD_NAMESPACE"] {
            cmd.env_remove(k);
        }
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        Trialtail(cmd.spawn().expect("spawn trialtail"))
    }

    /// Waits for the exit; returns the status and stderr.
    fn wait(mut self, within: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "trialtail did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (status, err)
    }
}

impl Drop for Trialtail {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_file() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp log");
    f.write_all(LOG.as_bytes()).expect("write log");
    f
}

/// The one sample of `promql`, waiting until Prometheus has it.
fn sample(prom: &Daemon, promql: &str) -> serde_json::Value {
    wait_for(&format!("Prometheus to answer {promql}"), || support::query(prom, promql).into_iter().next())
}

fn value(prom: &Daemon, promql: &str) -> String {
    sample(prom, promql)["value"][1].as_str().unwrap_or_default().to_string()
}

#[test]
fn prometheus_scrapes_latest_min_max_step_and_identity_labels_before_trialtail_exits() {
    let listen = free_addr();
    let Some(prom) = support::prometheus(&[listen]) else { return };
    let log = log_file();
    let path = log.path().to_str().expect("utf-8 path");
    let listen_arg = listen.to_string();
    let mut args = vec![path, "--listen", &listen_arg, "--linger", "300s"];
    args.extend(IDENTITY);
    let started = Instant::now();
    let (status, stderr) = Trialtail::spawn_with(&args, false, "info,trialtail::server=debug").wait(PATIENCE * 2);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("format=OpenMetrics"), "Prometheus negotiated OpenMetrics: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(200), "the linger ended by a scrape, not by its timeout");
    assert!(!stderr.contains("were not scraped"), "{stderr}");

    // trialtail is gone, so the series are stale now: ask for the last sample the scrape stored.
    let last = |series: &str| value(&prom, &format!("last_over_time({series}[1h])"));
    let loss = sample(&prom, r#"last_over_time(trialtail_metric_latest{metric="loss"}[1h])"#);
    assert_eq!(loss["value"][1], "0.7");
    let labels = &loss["metric"];
    for (k, v) in [
        ("metric", "loss"),
        ("trial", "trial-1"),
        ("experiment", "exp-1"),
        ("namespace", "ns-1"),
        ("pod", "pod-1"),
        ("job", "trialtail"),
        ("instance", listen_arg.as_str()),
    ] {
        assert_eq!(labels[k], v, "label {k} of {loss}");
    }
    assert_eq!(last(r#"trialtail_metric_min{metric="loss"}"#), "0.5");
    assert_eq!(last(r#"trialtail_metric_max{metric="loss"}"#), "0.9");
    assert_eq!(last(r#"trialtail_metric_observations_total{metric="loss"}"#), "3");
    assert_eq!(last(r#"trialtail_metric_latest{metric="Accuracy"}"#), "0.5");
    assert_eq!(last(r#"trialtail_metric_step{metric="Accuracy"}"#), "30");
    assert_eq!(last(r#"trialtail_metric_max{metric="Accuracy"}"#), "0.75");
    assert_eq!(last(r#"trialtail_metric_latest{metric="grad_norm"}"#), "+Inf");
    assert_eq!(last(r#"trialtail_metric_min{metric="grad_norm"}"#), "1.5");
    assert_eq!(last("trialtail_observations_total"), "8");
    assert_eq!(last("trialtail_read_lines_total"), "8");
    assert_eq!(last("trialtail_read_bytes_total"), LOG.len().to_string());
    assert_eq!(last("trialtail_source_ended"), "1");
    assert_eq!(last(r#"trialtail_sink_observations_total{sink="prometheus"}"#), "8");
    let build = sample(&prom, "last_over_time(trialtail_build_info[1h])");
    assert_eq!(build["metric"]["version"], env!("CARGO_PKG_VERSION"));
    // Prometheus asks for OpenMetrics first: the scrape above went through that encoder.
}

#[test]
fn promtool_accepts_the_exposition_and_openmetrics_is_served_on_request() {
    let Some(promtool) = support::tool("promtool") else { return };
    let listen = free_addr();
    let listen_arg = listen.to_string();
    let mut args = vec!["-", "--listen", &listen_arg, "--linger", "300s"];
    args.extend(IDENTITY);
    // Standard input kept open: the log has not ended, so these scrapes do not end the linger.
    let mut tt = Trialtail::spawn(&args, true);
    let mut stdin = tt.0.stdin.take().expect("stdin");
    stdin.write_all(LOG.as_bytes()).expect("write the log");
    let openmetrics = wait_for("trialtail to serve OpenMetrics", || {
        get(listen, "/metrics", Some("application/openmetrics-text;version=1.0.0"))
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("metric=\"grad_norm\""))
    });
    assert!(openmetrics.content_type.starts_with("application/openmetrics-text"), "{openmetrics:?}");
    assert!(openmetrics.body.ends_with("# EOF\n"));
    assert!(openmetrics.body.contains("# TYPE trialtail_metric_observations counter\n"));
    let text = get(listen, "/metrics", None).expect("GET /metrics");
    assert!(text.content_type.starts_with("text/plain; version=0.0.4"), "{text:?}");
    assert!(text.body.contains("trialtail_metric_latest{metric=\"grad_norm\",trial=\"trial-1\""));
    drop(stdin);

    support::promtool_check(&promtool, &text.body);
    wait_for("the final scrape", || get(listen, "/metrics", None).ok().filter(|r| r.body.contains("ended 1\n")));
    let (status, stderr) = tt.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
}

#[test]
fn pushgateway_receives_the_final_values_grouped_by_trial_and_namespace() {
    let Some(gw) = support::pushgateway() else { return };
    let log = log_file();
    let path = log.path().to_str().expect("utf-8 path");
    let url = format!("http://{}", gw.addr);
    let mut args = vec![path, "--pushgateway", &url];
    args.extend(IDENTITY);
    let (status, stderr) = Trialtail::spawn(&args, false).wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("pushed the final values"), "{stderr}");
    let body = get(gw.addr, "/metrics", None).expect("GET the pushgateway's /metrics").body;
    let line = |name: &str, metric: &str| {
        body.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&format!("metric=\"{metric}\""))
                    && l.contains("job=\"trialtail\"")
                    && l.contains("trial=\"trial-1\"")
                    && l.contains("namespace=\"ns-1\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no {name}{{metric={metric:?}}} in the pushgateway:\n{body}"))
            .to_string()
    };
    assert_eq!(line("trialtail_metric_latest", "loss"), "0.7");
    assert_eq!(line("trialtail_metric_min", "loss"), "0.5");
    assert_eq!(line("trialtail_metric_step", "Accuracy"), "30");
    assert_eq!(line("trialtail_metric_latest", "grad_norm"), "+Inf");
    assert!(
        body.lines().any(|l| l.starts_with("push_time_seconds{") && l.contains("trial=\"trial-1\"")),
        "the group exists:\n{body}"
    );
}

#[test]
fn push_interval_pushes_while_the_log_is_still_being_read() {
    let Some(gw) = support::pushgateway() else { return };
    let url = format!("http://{}", gw.addr);
    let args = ["-", "--preset", "katib", "--pushgateway", &url, "--push-interval", "200ms", "--trial", "t-2"];
    let mut tt = Trialtail::spawn(&args, true);
    let mut stdin = tt.0.stdin.take().expect("stdin");
    stdin.write_all(b"loss=0.25\n").expect("write");
    wait_for("the periodic push", || {
        let body = get(gw.addr, "/metrics", None).ok()?.body;
        body.lines()
            .any(|l| l.starts_with("trialtail_metric_latest{") && l.contains("trial=\"t-2\"") && l.ends_with(" 0.25"))
            .then_some(())
    });
    assert!(tt.0.try_wait().expect("try_wait").is_none(), "still reading");
    drop(stdin);
    let (status, stderr) = tt.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
}

#[test]
fn bad_export_flags_are_usage_errors_naming_the_flag() {
    let log = log_file();
    let path = log.path().to_str().expect("utf-8 path");
    for (flag, value) in
        [("--listen", "nowhere"), ("--linger", "5x"), ("--pushgateway", "https://gw:9091"), ("--push-interval", "1d")]
    {
        let (status, stderr) = Trialtail::spawn(&[path, flag, value], false).wait(PATIENCE);
        assert_eq!(status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[test]
fn linger_keeps_serving_until_a_scrape_returned_the_final_values() {
    let listen = free_addr();
    let listen_arg = listen.to_string();
    // The classic presets: every value is served as soon as it is read.
    let mut tt = Trialtail::spawn(&["-", "--preset", "katib", "--listen", &listen_arg, "--linger", "300s"], true);
    wait_for("/healthz", || get(listen, "/healthz", None).ok().filter(|r| r.status == 200));
    assert_eq!(get(listen, "/readyz", None).expect("GET /readyz").status, 503, "nothing read yet");
    let mut stdin = tt.0.stdin.take().expect("stdin");
    stdin.write_all(b"loss=1\n").expect("write");
    let running = |body: &str| body.contains("trialtail_metric_latest{metric=\"loss\"} 1\n");
    wait_for("the first value", || get(listen, "/metrics", None).ok().filter(|r| running(&r.body)));
    assert_eq!(get(listen, "/readyz", None).expect("GET /readyz").status, 200);
    assert!(get(listen, "/metrics", None).expect("scrape").body.contains("trialtail_source_ended 0\n"));

    stdin.write_all(b"loss=0.5\n").expect("write");
    drop(stdin);
    // The log ended; no scrape has seen that yet, so trialtail must still be there.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(tt.0.try_wait().expect("try_wait").is_none(), "exited before the final values were scraped");
    let last = wait_for("the final scrape", || {
        get(listen, "/metrics", None).ok().filter(|r| r.body.contains("trialtail_source_ended 1\n"))
    });
    assert!(last.body.contains("trialtail_metric_latest{metric=\"loss\"} 0.5\n"), "{}", last.body);
    let (status, stderr) = tt.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
}

#[test]
fn linger_runs_out_without_a_scrape_and_says_so() {
    let listen = free_addr().to_string();
    let log = log_file();
    let path = log.path().to_str().expect("utf-8 path");
    let started = Instant::now();
    let (status, stderr) = Trialtail::spawn(&[path, "--listen", &listen, "--linger", "1s"], false).wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(stderr.contains("were not scraped before --linger ran out"), "{stderr}");
}

#[test]
fn a_taken_listen_port_is_a_usage_error_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = taken.local_addr().expect("addr");
    let log = log_file();
    let path = log.path().to_str().expect("utf-8 path");
    let (status, stderr) = Trialtail::spawn(&[path, "--listen", &addr.to_string()], false).wait(PATIENCE);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("--listen {addr}: cannot listen")), "{stderr}");
}

#[test]
fn a_followed_file_is_served_live_and_a_signal_ends_the_linger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("train.log");
    let listen = free_addr();
    let listen_arg = listen.to_string();
    let log_arg = log.to_str().expect("utf-8 path");
    let args = ["--follow", log_arg, "--preset", "katib", "--listen", &listen_arg, "--linger", "300s"];
    let tt = Trialtail::spawn(&args, false);
    wait_for("/healthz", || get(listen, "/healthz", None).ok().filter(|r| r.status == 200));
    assert_eq!(get(listen, "/readyz", None).expect("GET /readyz").status, 503, "the file does not exist yet");
    std::fs::write(&log, "loss=0.5\n").expect("write the log");
    let has = |value: &'static str| {
        move |r: &support::Response| r.body.contains(&format!("trialtail_metric_latest{{metric=\"loss\"}} {value}\n"))
    };
    wait_for("the first value", || get(listen, "/metrics", None).ok().filter(has("0.5")));
    assert_eq!(get(listen, "/readyz", None).expect("GET /readyz").status, 200);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).expect("append");
    f.write_all(b"loss=0.25\n").expect("append a line");
    wait_for("the appended value", || get(listen, "/metrics", None).ok().filter(has("0.25")));
    // SIGTERM ends the follow; the final values are served until one scrape has them.
    let pid = tt.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    // Scrapes taken before the final snapshot do not end the linger: poll until one shows the source ended.
    let ended = |r: &support::Response| r.body.contains("trialtail_source_ended 1\n");
    wait_for("the final scrape", || get(listen, "/metrics", None).ok().filter(ended));
    let (status, stderr) = tt.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{stderr}");
}
