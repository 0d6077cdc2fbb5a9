//! The alerts and the dashboard of `manifests/components/monitoring/`, against the real Prometheus tools.
//!
//! The rules pass `promtool check rules`, and `promtool test rules` runs `tests/monitoring/rules-test.yaml`,
//! which must make every alert fire (with its labels and annotations) and also hold it silent at some time.
//! Every query of the Grafana dashboard – its panels and its variables – runs against a real Prometheus server
//! that scraped a following `trialtail run` (as `components/prometheus-operator/podmonitor.yaml` has it scraped:
//! whose series they are from the pod's metadata, whatever the sidecar says of itself, a Pushgateway that is down so
//! the sink errors exist, a metric that went infinite) and a `trialtail webhook` that answered reviews and a
//! bad request; each query must return data.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::root;
use crate::support::{self, Daemon, free_addr, get, query, tool, wait_for};
use crate::webhook::{Webhook, call, fixture, pki, publish};

/// The rules file, relative to the project.
const RULES: &str = "manifests/components/monitoring/trialtail-rules.yaml";
/// The dashboard, relative to the project.
const DASHBOARD: &str = "manifests/components/monitoring/trialtail-dashboard.json";
/// The unit tests of the rules.
const RULES_TEST: &str = "tests/monitoring/rules-test.yaml";

fn promtool(args: &[&str]) -> Option<String> {
    let bin = tool("promtool")?;
    let out = Command::new(bin).args(args).current_dir(root()).output().expect("run promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}:\n{said}");
    Some(said)
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(said) = promtool(&["check", "rules", RULES]) else { return };
    assert!(said.contains("SUCCESS"), "{said}");
    let Some(said) = promtool(&["test", "rules", RULES_TEST]) else { return };
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn every_alert_is_tested_firing_and_silent() {
    let rules: Value = serde_saphyr::from_str(&std::fs::read_to_string(root().join(RULES)).unwrap()).unwrap();
    let alerts: BTreeSet<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let tests: Value = serde_saphyr::from_str(&std::fs::read_to_string(root().join(RULES_TEST)).unwrap()).unwrap();
    let (mut fired, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for case in tests["tests"].as_array().unwrap() {
        for t in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = t["alertname"].as_str().unwrap().to_string();
            let expected = t["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected > 0 {
                fired.insert(name)
            } else {
                silent.insert(name)
            };
        }
    }
    assert_eq!(fired, alerts, "every alert is tested firing");
    assert_eq!(silent, alerts, "every alert is tested silent");
}

/// `trialtail run --follow` on a log this test writes, serving /metrics; killed when dropped.
struct Sidecar {
    child: Child,
    log: std::path::PathBuf,
    addr: SocketAddr,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    fn start(dir: &std::path::Path, addr: SocketAddr) -> Sidecar {
        let log = dir.join("train.log");
        std::fs::write(&log, "").unwrap();
        // A Pushgateway on a port where nothing listens: the pushgateway sink's errors exist.
        let gateway = format!("http://{}", free_addr());
        let child = Command::new(env!("CARGO_BIN_EXE_trialtail"))
            .args(["run", "--follow", "--output", "json", "--listen", &addr.to_string()])
            // What it says of itself is not who it is: the PodMonitor takes these from the pod.
            .args(["--trial", "spoofed", "--experiment", "spoofed", "--namespace", "team-b", "--pod", "someone-else"])
            .args(["--pushgateway", &gateway, "--push-interval", "1s"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn trialtail run");
        wait_for("the sidecar's /readyz", || get(addr, "/readyz", None).ok().filter(|r| r.status == 200));
        Sidecar { child, log, addr }
    }

    fn write(&self, lines: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.log).unwrap();
        f.write_all(lines.as_bytes()).unwrap();
    }
}

/// The sidecars' scrape job as the Prometheus Operator makes it from `components/prometheus-operator/
/// podmonitor.yaml` (`generatePodMonitorConfig` in its `pkg/prometheus/promcfg.go`: the target labels
/// `namespace`, `container`, `pod`, `job` and `endpoint` from the pod's metadata, then the PodMonitor's own
/// relabelings; its `honorLabels`; its metric relabelings), scraping `sidecar` as the pod `mnist-x1-abc` of
/// namespace `team-a`, a trial pod of Katib's labelled with trial `mnist-x1` and experiment `mnist`.
fn podmonitor_job(sidecar: SocketAddr) -> Value {
    let text =
        std::fs::read_to_string(root().join("manifests/components/prometheus-operator/podmonitor.yaml")).unwrap();
    let monitor: Value = serde_saphyr::from_str(&text).unwrap();
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    // The operator's field names in Prometheus's spelling, its actions lowercased.
    let relabel = |configs: &Value| -> Vec<Value> {
        let configs = configs.as_array().cloned().unwrap_or_default();
        configs
            .iter()
            .map(|c| {
                let mut out = serde_json::Map::new();
                for (k, v) in c.as_object().unwrap() {
                    let key = match k.as_str() {
                        "sourceLabels" => "source_labels",
                        "targetLabel" => "target_label",
                        other => other,
                    };
                    let v = if key == "action" { Value::from(v.as_str().unwrap().to_lowercase()) } else { v.clone() };
                    out.insert(key.to_string(), v);
                }
                Value::Object(out)
            })
            .collect()
    };
    let target = |source: &str, label: &str| json!({"source_labels": [source], "target_label": label});
    let name = monitor["metadata"]["name"].as_str().unwrap();
    let namespace = monitor["metadata"]["namespace"].as_str().unwrap();
    let mut relabelings = vec![
        target("__meta_kubernetes_namespace", "namespace"),
        target("__meta_kubernetes_pod_container_name", "container"),
        target("__meta_kubernetes_pod_name", "pod"),
        json!({"target_label": "job", "replacement": format!("{namespace}/{name}")}),
        json!({"target_label": "endpoint", "replacement": endpoint["port"]}),
    ];
    relabelings.extend(relabel(&endpoint["relabelings"]));
    json!({
        "job_name": format!("podMonitor/{namespace}/{name}/0"),
        "honor_labels": endpoint["honorLabels"].as_bool().unwrap_or(false),
        "metrics_path": endpoint["path"],
        "static_configs": [{"targets": [sidecar.to_string()], "labels": {
            "__meta_kubernetes_namespace": "team-a",
            "__meta_kubernetes_pod_name": "mnist-x1-abc",
            "__meta_kubernetes_pod_container_name": "trialtail",
            "__meta_kubernetes_pod_label_katib_kubeflow_org_trial": "mnist-x1",
            "__meta_kubernetes_pod_label_katib_kubeflow_org_experiment": "mnist",
        }}],
        "relabel_configs": relabelings,
        "metric_relabel_configs": relabel(&endpoint["metricRelabelings"]),
    })
}

/// A real Prometheus scraping the sidecar as the PodMonitor has it scraped ([`podmonitor_job`]) and the webhook
/// as job `trialtail-webhook`, every second.
fn prometheus(sidecar: SocketAddr, webhook: SocketAddr) -> Option<Daemon> {
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            podmonitor_job(sidecar),
            {"job_name": "trialtail-webhook", "static_configs": [{"targets": [webhook.to_string()]}]},
        ],
    });
    support::prometheus_with_config(&config.to_string())
}

/// A dashboard query with its Grafana variables as a user picks them: the trial's namespace, experiment and
/// trial, the two metrics, a one-minute rate window.
fn substitute(expr: &str) -> String {
    expr.replace("$namespace", "team-a")
        .replace("$experiment", "mnist")
        .replace("$trial", "mnist-x1")
        .replace("$metric", "loss|accuracy")
        .replace("$__rate_interval", "1m")
}

/// Every panel query of the dashboard (`title`, expression), rows' nested panels included.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    let nested: Vec<&Value> = panels.iter().flat_map(|p| p["panels"].as_array().into_iter().flatten()).collect();
    panels.extend(nested);
    let mut out = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}: the dashboard's data source variable", p["title"]);
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{}: no targets", p["title"]));
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            out.push((p["title"].as_str().unwrap().to_string(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

#[test]
fn every_dashboard_query_returns_data_from_a_prometheus_that_scraped_trialtail() {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(root().join(DASHBOARD)).unwrap()).unwrap();
    let panels = panel_queries(&dashboard);
    assert!(panels.len() >= 15, "{panels:?}");
    if tool("prometheus").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(dir.path(), free_addr());
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    let tls = pki("dashboard");
    publish(&dir.path().join("tls"), "2026_01_01_00_00_00.1", &tls);
    let webhook = Webhook::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for name in ["katib-trial", "job-inject-label", "opt-out", "bad-annotation"] {
        rt.block_on(call(webhook.tls, &tls.ca, "POST", "/mutate", fixture(name))).unwrap();
    }
    rt.block_on(call(webhook.tls, &tls.ca, "POST", "/mutate", b"not a review".to_vec())).unwrap();
    let Some(prom) = prometheus(sidecar.addr, webhook.plain) else { return };

    // Training: two metrics with steps over a few scrapes; accuracy ends infinite.
    for step in 0..6 {
        let loss = 1.0 / f64::from(step + 1);
        sidecar.write(&format!("loss at step {step}: {loss}\naccuracy at step {step}: 0.{}\n", step + 3));
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    sidecar.write("loss at step 6: 0.1\naccuracy at step 6: inf\n");
    // Enough scrapes of both jobs for one-minute rates, and the last lines scraped.
    wait_for("eight scrapes of each job and the last observation", || {
        let scrapes = query(&prom, "min(count_over_time(up[1m]))");
        let enough =
            scrapes.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok()).is_some_and(|n| n >= 8.0);
        let last = query(&prom, r#"trialtail_metric_latest{metric="accuracy"} == +Inf"#);
        (enough && !last.is_empty()).then_some(())
    });

    let mut empty = Vec::new();
    for (title, expr) in &panels {
        let promql = substitute(expr);
        if query(&prom, &promql).is_empty() {
            empty.push(format!("{title}: {promql}"));
        }
    }
    // The variables: label_values(QUERY, LABEL) lists LABEL's values among QUERY's series.
    for var in dashboard["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let definition = var["query"]["query"].as_str().unwrap();
        let inner = definition.strip_prefix("label_values(").and_then(|d| d.strip_suffix(')')).unwrap();
        let (series, label) = inner.rsplit_once(',').unwrap();
        let promql = format!("count by ({}) ({})", label.trim(), substitute(series.trim()));
        let values: Vec<String> =
            query(&prom, &promql).iter().filter_map(|s| s["metric"][label.trim()].as_str().map(String::from)).collect();
        if values.is_empty() {
            empty.push(format!("variable {}: {promql}", var["name"]));
        }
    }
    assert!(empty.is_empty(), "queries that returned no data:\n{}\n{}", empty.join("\n"), prom.output());

    // Whose series they are comes from the pod's metadata, never from what the sidecar says of itself.
    for claimed in [
        r#"{__name__=~"trialtail_.+", namespace="team-b"}"#,
        r#"{__name__=~"trialtail_.+", trial="spoofed"}"#,
        r#"{__name__=~"trialtail_.+", experiment="spoofed"}"#,
        r#"{__name__=~"trialtail_.+", pod="someone-else"}"#,
        r#"{__name__=~"trialtail_.+", __name__!~"trialtail_webhook_.+", namespace!="team-a"}"#,
        r#"{__name__=~"trialtail_.+", exported_namespace!="", exported_pod!=""}"#,
        r#"{__name__=~"trialtail_.+", exported_trial!=""}"#,
    ] {
        assert!(query(&prom, claimed).is_empty(), "{claimed}: {:?}", query(&prom, claimed));
    }
    let owned = query(
        &prom,
        r#"trialtail_metric_latest{namespace="team-a", pod="mnist-x1-abc", trial="mnist-x1", experiment="mnist"}"#,
    );
    assert_eq!(owned.len(), 2, "{owned:?}");

    // The curves are the training's: loss's latest value is the last one written.
    let loss = query(&prom, &substitute(r#"trialtail_metric_latest{trial=~"$trial",metric="loss"}"#));
    assert_eq!(loss[0]["value"][1], "0.1", "{loss:?}");
    let finite = query(&prom, &substitute(&panels.iter().find(|(t, _)| t == "Metrics not finite").unwrap().1));
    assert_eq!(finite[0]["value"][1], "1", "accuracy is infinite: {finite:?}");
}
