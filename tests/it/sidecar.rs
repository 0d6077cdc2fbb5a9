//! The native sidecar end to end: `trialtail run --source pod-log` as a real process against the fake API
//! server (`support::kube_fake`) over HTTP, with a kubeconfig in a temp file.
//!
//! The fixtures are a Katib-shaped pod (the training container `train`, trialtail as a native sidecar in
//! `initContainers`), its Job and its Trial (collector kind `Push`: trialtail is its collector) linked by
//! controller ownerReferences only – no label, no `KATIB_TRIAL_NAME` – so the owner walk is what finds the
//! Trial. No Katib DB manager runs here (`sidecar_katib.rs` has one): the rows are said undelivered. The tests
//! write log lines, cut the log stream, fail a patch, restart the container, flip the container to terminated,
//! and check the Trial's stored status while it trains and at the end, and how many requests it all cost.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::kube_fake::KubeFake;
use crate::support::{PATIENCE, free_addr, get};

pub(crate) fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "t1-abc", "namespace": "ns", "resourceVersion": "1",
            "labels": {"katib.kubeflow.org/experiment": "exp"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "t1", "uid": "u1", "controller": true}]},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [{"name": "trialtail", "image": "trialtail", "restartPolicy": "Always"}],
            "containers": [{"name": "train", "image": "train"}],
        },
        "status": {"containerStatuses": [{"name": "train", "image": "train", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]},
    })
}

pub(crate) fn job() -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "t1", "namespace": "ns",
            "ownerReferences": [{"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial", "name": "t1", "uid": "u2",
                                 "controller": true}]}})
}

pub(crate) fn trial() -> Value {
    json!({"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
        "metadata": {"name": "t1", "namespace": "ns", "resourceVersion": "1"},
        "spec": {"primaryContainerName": "train",
                 "objective": {"type": "maximize", "objectiveMetricName": "accuracy", "additionalMetricNames": ["loss"]},
                 "metricsCollector": {"collector": {"kind": "Push"}}},
        "status": {"conditions": [{"type": "Running", "status": "True"}]}})
}

pub(crate) fn set_state(fake: &KubeFake, state: Value) {
    fake.set_pod(|p| p["status"]["containerStatuses"][0]["state"] = state);
}

pub(crate) fn metrics(fake: &KubeFake) -> Value {
    fake.trial().pointer("/status/observation/metrics").cloned().unwrap_or(Value::Null)
}

pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn metric<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|m| m["name"] == name)
}

/// trialtail as a real process against `fake`, pod `t1-abc` in `ns`; stdout and stderr are collected.
pub(crate) struct Sidecar {
    child: Child,
    stdout: std::thread::JoinHandle<Vec<String>>,
    stderr: std::thread::JoinHandle<String>,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    pub(crate) fn start(fake: &KubeFake, args: &[&str], trial_env: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, fake.kubeconfig("ns")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trialtail"));
        cmd.args(["run", "--source", "pod-log"]).args(args);
        // No Katib DB manager in these tests: a port nobody listens on, and a short deadline for the final report.
        if !args.contains(&"--katib-db") {
            cmd.args(["--katib-db", &free_addr().to_string(), "--report-deadline", "500ms", "--report-interval", "0"]);
        }
        cmd.env("KUBECONFIG", &kubeconfig).env("POD_NAME", "t1-abc").env("POD_NAMESPACE", "ns");
        match trial_env {
            Some(t) => cmd.env("KATIB_TRIAL_NAME", t),
            None => cmd.env_remove("KATIB_TRIAL_NAME"),
        };
        for var in ["KUBERNETES_SERVICE_HOST", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"] {
            cmd.env_remove(var);
        }
        let mut child =
            cmd.env("RUST_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn trialtail");
        let out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect::<Vec<_>>());
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut err, &mut s).ok();
            s
        });
        Sidecar { child, stdout, stderr, _dir: dir }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the exit; returns it with stdout's lines and stderr.
    pub(crate) fn wait(mut self) -> (ExitStatus, Vec<String>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < PATIENCE, "trialtail did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, self.stdout.join().unwrap(), self.stderr.join().unwrap())
    }
}

#[test]
fn sidecar_writes_live_observations_to_the_trial_and_exits_when_training_ends() {
    let fake = KubeFake::start(pod(), job(), trial());
    // The classic presets: each value reaches the Trial as soon as it is read.
    let args = ["--preset", "katib", "--status-interval", "1s", "--output", "json", "--shutdown-grace", "5s"];
    let sidecar = Sidecar::start(&fake, &args, None);

    // While the container is starting nothing is read; then it runs and prints.
    wait_for("the pod watch", || fake.count("GET", "/pods", "watch=true") > 0);
    assert_eq!(fake.count("GET", "/log", ""), 0, "no log request while the container is starting");
    set_state(&fake, json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}));
    fake.write_log(&["epoch 1", "accuracy=0.5", "loss=0.9"]);
    wait_for("the first observations on the Trial", || {
        metric(&metrics(&fake), "accuracy").is_some_and(|m| m["latest"] == "0.5")
    });
    let live = metrics(&fake);
    assert_eq!(metric(&live, "loss").unwrap(), &json!({"name": "loss", "latest": "0.9", "min": "0.9", "max": "0.9"}));

    // A cut stream is reopened with sinceTime; the seam's lines are not counted twice. A 503 is retried.
    fake.cut_log_streams();
    fake.fail_patches(&[503]);
    wait_for("the reconnect", || fake.count("GET", "/log", "sinceTime") > 0);
    fake.write_log(&["accuracy=0.7", "loss=0.4"]);
    // Many lines within one interval cost one patch.
    let many: Vec<String> = (0..200).map(|i| format!("loss={}", 0.5 + f64::from(i) / 1000.0)).collect();
    fake.write_log(&many.iter().map(String::as_str).collect::<Vec<_>>());
    fake.write_log(&["loss=0.3"]);
    wait_for("the newer observations", || metric(&metrics(&fake), "loss").is_some_and(|m| m["latest"] == "0.3"));

    // The container restarts: its stream ends, the new instance is read from its start.
    fake.set_pod(|p| {
        p["status"]["containerStatuses"][0]["restartCount"] = json!(1);
        p["status"]["containerStatuses"][0]["state"] = json!({"running": {"startedAt": "2026-01-01T00:01:00Z"}});
    });
    fake.cut_log_streams();
    wait_for("the restart's stream", || fake.count("GET", "/log", "") >= 3);

    // Training ends: the container terminates, trialtail drains, flushes and exits 0.
    fake.write_log(&["accuracy=0.65"]);
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    let (status, out, err) = sidecar.wait();
    assert!(status.success(), "exit {status:?}\nstderr:\n{err}");
    let end = metrics(&fake);
    assert_eq!(
        end,
        json!([
            {"name": "accuracy", "latest": "0.65", "min": "0.5", "max": "0.7"},
            {"name": "loss", "latest": "0.3", "min": "0.3", "max": "0.9"},
        ]),
        "stderr:\n{err}"
    );
    // Katib's own status fields are left alone, at every step; the objective only ever shows observed values.
    let statuses = fake.statuses();
    assert!(statuses.iter().all(|s| s["conditions"][0]["type"] == "Running"), "{statuses:#?}");
    let seen: Vec<&Value> = statuses.iter().filter_map(|s| metric(&s["observation"]["metrics"], "accuracy")).collect();
    assert!(seen.iter().all(|m| ["0.5", "0.7", "0.65"].contains(&m["latest"].as_str().unwrap())), "{seen:#?}");
    // Every line observed exactly once (none lost or doubled at the seam), each with the kubelet's time.
    let observations: Vec<Value> = out.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(observations.len(), 2 + 2 + 200 + 1 + 1, "stdout:\n{}", out.join("\n"));
    assert!(observations.iter().all(|o| o["timestamp"].as_str().is_some_and(|t| t.ends_with('Z'))));

    assert_eq!(fake.misshapen_patches(), Vec::<String>::new(), "every patch in Katib's shape");
    assert_eq!(err.matches("rows not delivered to Katib's DB").count(), 1, "said once: {err}");
    let patches = fake.count("PATCH", "/status", "");
    let logs = fake.count("GET", "/log", "");
    let watches = fake.count("GET", "/pods", "watch=true");
    let total = fake.requests().len();
    for r in fake.requests() {
        eprintln!("request: {} {}?{}", r.method, r.path, r.query);
    }
    eprintln!(
        "requests: {total} in all; {patches} status patches (one failed), {logs} log streams, {watches} pod watches, \
         (206 observations from 207 lines, about 2 s of training)"
    );
    assert!((2..=12).contains(&patches), "patches: {patches}\n{:#?}", fake.requests());
    assert!(
        (3..=4).contains(&logs),
        "one stream, one reconnect, one restart (and at most one more at the end): {logs}"
    );
    assert!(total <= patches + logs + watches + 6, "{:#?}", fake.requests());
}

#[test]
fn sigterm_before_the_pod_shows_the_end_waits_for_it_and_writes_the_final_status() {
    // Katib's controller keys its observation on metricStrategies: a name only listed there is written too.
    let mut t = trial();
    t["spec"]["objective"]["metricStrategies"] = json!([{"name": "accuracy", "value": "max"},
        {"name": "loss", "value": "min"}, {"name": "val_loss", "value": "min"}]);
    let fake = KubeFake::start(running_pod(json!({})), job(), t);
    let sidecar = Sidecar::start(
        &fake,
        &["--container", "train", "--status-interval", "1h", "--shutdown-grace", "5s"],
        Some("t1"),
    );
    fake.write_log(&["accuracy=0.25", "accuracy=0.5"]);
    wait_for("the log stream", || fake.count("GET", "/log", "") > 0);
    // Give the lines time to arrive: with a one-hour interval, only the final flush writes them.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.count("PATCH", "/status", ""), 0, "nothing before the end with a one-hour interval");
    // The kubelet stops a native sidecar after the training container; the pod watch may show it later.
    sidecar.signal(rustix::process::Signal::TERM);
    std::thread::sleep(Duration::from_millis(300));
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    let (status, _, err) = sidecar.wait();
    assert!(status.success(), "{status:?}\n{err}");
    assert_eq!(
        metrics(&fake),
        json!([
            {"name": "accuracy", "latest": "0.5", "min": "0.25", "max": "0.5"},
            {"name": "loss", "latest": "unavailable", "min": "unavailable", "max": "unavailable"},
            {"name": "val_loss", "latest": "unavailable", "min": "unavailable", "max": "unavailable"},
        ])
    );
    assert_eq!(fake.count("PATCH", "/status", ""), 1, "one final patch");
    assert_eq!(fake.misshapen_patches(), Vec::<String>::new());
    assert_eq!(fake.count("GET", "/trials/t1", ""), 1, "the Trial is read once");
    assert_eq!(fake.count("GET", "/pods/t1-abc", ""), 1, "the pod is read once");
    assert_eq!(fake.count("GET", "/jobs/", ""), 0, "KATIB_TRIAL_NAME: no owner walk");
}

#[test]
fn failed_training_clears_the_observation_written_while_it_ran() {
    let fake = KubeFake::start(running_pod(json!({"katib.kubeflow.org/trial": "t1"})), job(), trial());
    let sidecar = Sidecar::start(&fake, &["--status-interval", "200ms"], None);
    fake.write_log(&["accuracy=0.5", "loss=0.9"]);
    wait_for("the live observation", || metric(&metrics(&fake), "accuracy").is_some_and(|m| m["max"] == "0.5"));
    set_state(&fake, json!({"terminated": {"exitCode": 1}}));
    let (status, _, err) = sidecar.wait();
    assert!(status.success(), "{status:?}\n{err}");
    let patches = fake.patches();
    assert_eq!(patches.last(), Some(&json!({"status": {"observation": null}})), "{patches:#?}");
    assert!(patches[..patches.len() - 1].iter().all(|p| p.pointer("/status/observation/metrics").is_some()));
    assert!(fake.trial().pointer("/status/observation").is_none(), "the Trial as Katib leaves a failed one");
    assert_eq!(fake.trial()["status"]["conditions"][0]["type"], "Running", "Katib's own fields untouched");
}

#[test]
fn a_crash_the_kubelet_restarts_is_not_the_end_of_training() {
    // restartPolicy OnFailure: the kubelet publishes running → terminated (exit 1) → running (restartCount 1).
    let mut p = running_pod(json!({"katib.kubeflow.org/trial": "t1"}));
    p["spec"]["restartPolicy"] = json!("OnFailure");
    let fake = KubeFake::start(p, job(), trial());
    let sidecar = Sidecar::start(&fake, &["--status-interval", "200ms", "--output", "json"], None);
    fake.write_log(&["accuracy=0.5"]);
    wait_for("the first instance's line", || metric(&metrics(&fake), "accuracy").is_some());
    set_state(&fake, json!({"terminated": {"exitCode": 1}}));
    std::thread::sleep(Duration::from_millis(700));
    fake.set_pod(|p| {
        p["status"]["containerStatuses"][0]["restartCount"] = json!(1);
        p["status"]["containerStatuses"][0]["state"] = json!({"running": {"startedAt": "2026-01-01T00:01:00Z"}});
    });
    fake.write_log(&["accuracy=0.75"]);
    wait_for("the second instance's line", || metric(&metrics(&fake), "accuracy").is_some_and(|m| m["max"] == "0.75"));
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    let (status, out, err) = sidecar.wait();
    assert!(status.success(), "{status:?}\n{err}");
    assert_eq!(out.iter().filter(|l| l.contains("\"accuracy\"")).count(), 2, "both instances read: {out:?}");
    let last = fake.patches().last().cloned().unwrap();
    assert_eq!(metric(&last["status"]["observation"]["metrics"], "accuracy").unwrap()["latest"], "0.75");
}

pub(crate) fn running_pod(labels: Value) -> Value {
    let mut p = pod();
    p["metadata"]["ownerReferences"] = json!([]);
    p["metadata"]["labels"] = labels;
    p["status"]["containerStatuses"][0]["state"] = json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
    p
}

/// The exported `trialtail_metric_latest` line of `metric`, once it shows `value`.
pub(crate) fn scraped_latest(addr: std::net::SocketAddr, metric: &str, value: &str) -> String {
    crate::support::wait_for(&format!("{metric} {value} on /metrics"), || {
        let body = get(addr, "/metrics", None).ok()?.body;
        let needle = format!("metric=\"{metric}\"");
        body.lines()
            .find(|l| {
                l.starts_with("trialtail_metric_latest{") && l.contains(&needle) && l.ends_with(&format!(" {value}"))
            })
            .map(str::to_string)
    })
}

#[test]
fn a_denied_status_patch_is_said_once_and_everything_else_goes_on() {
    let fake = KubeFake::start(running_pod(json!({"katib.kubeflow.org/trial": "t1"})), job(), trial());
    fake.fail_patches(&[403]);
    let addr = free_addr();
    let listen = addr.to_string();
    let args = ["--preset", "katib", "--status-interval", "1s", "--output", "json", "--listen", &listen];
    let sidecar = Sidecar::start(&fake, &args, None);
    fake.write_log(&["accuracy=0.5"]);
    wait_for("the denied patch", || fake.count("PATCH", "/status", "") == 1);
    // Prometheus and stdout go on after the sink stopped.
    fake.write_log(&["accuracy=0.75"]);
    let line = scraped_latest(addr, "accuracy", "0.75");
    assert!(line.contains("trial=\"t1\"") && line.contains("pod=\"t1-abc\""), "{line}");
    std::thread::sleep(Duration::from_millis(1500)); // more than one interval: no retry of a denied patch
    fake.set_pod(|p| p["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 0}}));
    let (status, out, err) = sidecar.wait();
    assert!(status.success(), "{status:?}\n{err}");
    assert_eq!(out.iter().filter(|l| l.contains("\"accuracy\"")).count(), 2, "{out:?}");
    assert_eq!(fake.count("PATCH", "/status", ""), 2, "no live retry once denied; the final write is tried");
    let denied: Vec<&str> = err.lines().filter(|l| l.contains("trials/status")).collect();
    assert_eq!(denied.len(), 1, "{err}");
    assert!(denied[0].contains("verb \"patch\"") && denied[0].contains("403"), "{}", denied[0]);
    let end = metrics(&fake);
    assert_eq!(metric(&end, "accuracy").map(|m| &m["latest"]), Some(&json!("0.75")), "the final values: {end}");
}

#[test]
fn without_a_trial_the_sidecar_reports_to_prometheus_only_and_says_so_once() {
    let fake = KubeFake::start(running_pod(json!({})), job(), trial());
    let addr = free_addr();
    let listen = addr.to_string();
    let sidecar = Sidecar::start(&fake, &["--status-interval", "1s", "--listen", &listen], None);
    fake.write_log(&["loss=0.9", "loss=0.4"]);
    let line = scraped_latest(addr, "loss", "0.4");
    assert!(line.contains("namespace=\"ns\"") && line.contains("pod=\"t1-abc\""), "{line}");
    assert!(!line.contains("trial="), "no Trial, no trial label: {line}");
    fake.set_pod(|p| p["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 0}}));
    let (status, out, err) = sidecar.wait();
    assert!(status.success(), "{status:?}\n{err}");
    assert!(out.iter().any(|l| l.starts_with("loss")), "the summary table: {out:?}");
    assert_eq!(err.matches("no Katib Trial found").count(), 1, "{err}");
    assert_eq!(fake.count("GET", "/trials/t1", ""), 0);
    assert_eq!(fake.count("PATCH", "/status", ""), 0);
}
