//! The native sidecar with Katib's real DB manager (`tests/katib/rig.sh`: katib-db-manager of Katib v0.19.0 on
//! PostgreSQL) and the project's fake API server, one trial pod per collector kind. What lands in Katib's DB is
//! read back with Katib's own client (`GetObservationLog`); every status patch body is kept by the fake.
//!
//! What rests on the fake API server: the pod, its watch and log streams, the Trial and its status patches
//! (`support::kube_fake`). What does not: the DB manager, its database, and the gRPC between them and trialtail.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sidecar::{Sidecar, job, metric, metrics, running_pod, scraped_latest, set_state, trial, wait_for};
use crate::support::PATIENCE;
use crate::support::katib::{Rig, Row};
use crate::support::kube_fake::KubeFake;
use crate::support::proxy::Proxy;

/// pytorch-mnist's test line (`examples/v1beta1/trial-images/pytorch-mnist/mnist.py`).
fn mnist(accuracy: &str, loss: &str) -> String {
    format!("{{metricName: accuracy, metricValue: {accuracy}}};{{metricName: loss, metricValue: {loss}}}")
}

/// The Experiment's filter for those lines (`examples/v1beta1/metrics-collector/file-metrics-collector.yaml`).
const MNIST_FORMAT: &str = r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}";

/// A Trial named `name` with collector `collector` and pytorch-mnist's metricsFormat.
fn katib_trial(name: &str, collector: Value) -> Value {
    let mut t = trial();
    t["metadata"]["name"] = json!(name);
    t["spec"]["metricsCollector"] =
        json!({"collector": collector, "source": {"filter": {"metricsFormat": [MNIST_FORMAT]}}});
    t
}

/// The rows Katib's DB holds for `trial`, as sorted (name, value) pairs.
fn stored(rig: &Rig, trial: &str) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = rig.rows(trial, "").into_iter().map(|r: Row| (r.name, r.value)).collect();
    rows.sort();
    rows
}

fn pairs(lines: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = lines
        .iter()
        .flat_map(|(a, l)| [("accuracy".to_string(), a.to_string()), ("loss".to_string(), l.to_string())])
        .collect();
    rows.sort();
    rows
}

fn write(fake: &KubeFake, lines: &[(&str, &str)]) {
    let text: Vec<String> = lines.iter().map(|(a, l)| mnist(a, l)).collect();
    fake.write_log(&text.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn push_kind_rows_reach_katibs_db_once_with_the_db_down_first_and_a_reply_lost() {
    let Some(rig) = Rig::start() else { return };
    let proxy = Proxy::start_down(&rig.addr);
    let fake = KubeFake::start(running_pod(json!({})), job(), katib_trial("push-t", json!({"kind": "Push"})));
    let args = ["--katib-db", &proxy.addr(), "--report-interval", "300ms", "--status-interval", "300ms"];
    let args = [&args[..], &["--report-deadline", "20s", "--shutdown-grace", "5s", "--log-level", "info"]].concat();
    let sidecar = Sidecar::start(&fake, &args, Some("push-t"));

    // First half: Katib's DB manager is down; the rows wait, the Trial's status still gets the live values.
    let first = [("0.52", "1.9"), ("0.71", "0.9"), ("0.64", "0.8")];
    fake.write_log(&["Train Epoch: 1 [0/60000 (0%)]\tloss=2.301"]);
    write(&fake, &first);
    wait_for("the live objective", || metric(&metrics(&fake), "accuracy").is_some_and(|m| m["max"] == "0.71"));
    std::thread::sleep(Duration::from_millis(1500)); // several report intervals
    assert_eq!(stored(&rig, "push-t"), Vec::<(String, String)>::new(), "nothing got through");

    // Second half: it comes up; the rows arrive while training runs.
    proxy.up();
    let start = Instant::now();
    while stored(&rig, "push-t").len() < 6 {
        assert!(start.elapsed() < PATIENCE, "the incremental report never arrived");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(stored(&rig, "push-t"), pairs(&first), "each row once");

    // A reply is lost after the DB stored the rows: the count settles it, nothing is sent twice.
    proxy.lose_next_reply();
    let second = [("0.88", "0.4"), ("0.91", "0.3")];
    write(&fake, &second);
    let start = Instant::now();
    while proxy.reply_still_to_lose() || stored(&rig, "push-t").len() < 10 {
        assert!(start.elapsed() < PATIENCE, "the second report never arrived");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Training ends: the rest goes at the end.
    let last = [("0.9", "0.35")];
    write(&fake, &last);
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    let (status, _, err) = sidecar.wait();
    assert!(status.success(), "{status:?}\n{err}");
    let all: Vec<(&str, &str)> = first.iter().chain(&second).chain(&last).copied().collect();
    assert_eq!(stored(&rig, "push-t"), pairs(&all), "every row exactly once\n{err}");
    assert!(err.contains("the call whose answer was lost had been carried out"), "{err}");
    let rows = rig.rows("push-t", "accuracy");
    assert!(rows.iter().all(|r| r.time_stamp.starts_with("20")), "the kubelet's time of each line: {rows:?}");

    // The status: live patches carry the objective's max (a value reached); the last one all final values.
    let patches = fake.patches();
    assert!(patches.len() >= 2, "{patches:#?}");
    for p in &patches {
        let acc = metric(&p["status"]["observation"]["metrics"], "accuracy").expect("accuracy in every patch");
        assert!(["unavailable", "0.52", "0.71", "0.88", "0.91"].contains(&acc["max"].as_str().unwrap()), "{p}");
    }
    assert_eq!(
        patches.last().unwrap()["status"]["observation"]["metrics"],
        json!([{"name": "accuracy", "latest": "0.9", "min": "0.52", "max": "0.91"},
               {"name": "loss", "latest": "0.35", "min": "0.3", "max": "1.9"}])
    );
    assert_eq!(fake.misshapen_patches(), Vec::<String>::new());
}

#[test]
fn each_collector_kind_reports_once_or_leaves_it_to_katib() {
    let Some(rig) = Rig::start() else { return };

    // Custom with trialtail's image: trialtail is the collector, as with Push; rows only at the end here, and a
    // `latest` objective that is never written while training runs.
    let mut custom = katib_trial(
        "custom-t",
        json!({"kind": "Custom", "customCollector": {"name": "trialtail", "image": "ghcr.io/trialtail/trialtail:0.5"}}),
    );
    custom["spec"]["objective"]["metricStrategies"] =
        json!([{"name": "accuracy", "value": "latest"}, {"name": "loss", "value": "min"}]);
    let fake = KubeFake::start(running_pod(json!({})), job(), custom);
    let args = ["--katib-db", &rig.addr, "--report-interval", "0", "--status-interval", "200ms"];
    let sidecar = Sidecar::start(&fake, &args, Some("custom-t"));
    write(&fake, &[("0.95", "0.2"), ("0.93", "0.25")]);
    wait_for("a live patch", || metric(&metrics(&fake), "loss").is_some_and(|m| m["min"] == "0.2"));
    assert_eq!(stored(&rig, "custom-t"), Vec::<(String, String)>::new(), "--report-interval 0: at the end only");
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    let (status, _, err) = sidecar.wait();
    assert!(status.success(), "{status:?}\n{err}");
    assert_eq!(stored(&rig, "custom-t"), pairs(&[("0.95", "0.2"), ("0.93", "0.25")]), "{err}");
    let patches = fake.patches();
    let (live, end) = patches.split_at(patches.len() - 1);
    let hidden = json!({"name": "accuracy", "latest": "unavailable", "min": "unavailable", "max": "unavailable"});
    assert!(!live.is_empty() && live.iter().all(|p| p["status"]["observation"]["metrics"][0] == hidden), "{live:#?}");
    assert_eq!(end[0]["status"]["observation"]["metrics"][0]["latest"], "0.93", "the final value after success");

    // StdOut with Katib's collector in the pod: Katib reports; trialtail reads Katib's logger for Prometheus only.
    let mut p = running_pod(json!({}));
    p["spec"]["containers"] = json!([{"name": "train", "image": "train"},
        {"name": "metrics-logger-and-collector", "image": "ghcr.io/kubeflow/katib/file-metrics-collector:v0.19.0"}]);
    let fake = KubeFake::start(p, job(), katib_trial("stdout-t", json!({"kind": "StdOut"})));
    let addr = crate::support::free_addr();
    let listen = addr.to_string();
    let args = ["--katib-db", &rig.addr, "--report-interval", "200ms", "--status-interval", "200ms"];
    let args = [&args[..], &["--listen", &listen, "--linger", "0", "--shutdown-grace", "1s"]].concat();
    let sidecar = Sidecar::start(&fake, &args, Some("stdout-t"));
    // Katib's logger re-prints the training output with klog's prefix.
    let line = format!("I1201 14:00:00.000000      12 main.go:396] {}", mnist("0.97", "0.1"));
    fake.write_log_of("metrics-logger-and-collector", &[&line]);
    scraped_latest(addr, "accuracy", "0.97");
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    let (status, _, err) = sidecar.wait();
    assert!(status.success(), "{status:?}\n{err}");
    assert_eq!(stored(&rig, "stdout-t"), Vec::<(String, String)>::new(), "Katib's collector reports, not trialtail");
    assert!(fake.patches().is_empty(), "no status write: {:#?}", fake.patches());
    assert_eq!(err.matches("Katib's own collector reports this trial").count(), 1, "said once: {err}");

    // No Trial at all (a plain Job opted in by label): Prometheus only.
    let fake = KubeFake::start(
        running_pod(json!({})),
        json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "t1", "namespace": "ns"}}),
        katib_trial("t1", json!({"kind": "Push"})),
    );
    let args = ["--katib-db", &rig.addr, "--report-interval", "200ms"];
    let sidecar = Sidecar::start(&fake, &args, None);
    write(&fake, &[("0.5", "1.0")]);
    std::thread::sleep(Duration::from_millis(600));
    set_state(&fake, json!({"terminated": {"exitCode": 0}}));
    let (status, _, err) = sidecar.wait();
    assert!(status.success(), "{status:?}\n{err}");
    assert_eq!(stored(&rig, "t1"), Vec::<(String, String)>::new(), "{err}");
    assert!(fake.patches().is_empty());
    assert_eq!(err.matches("no Katib Trial found").count(), 1, "{err}");
}
