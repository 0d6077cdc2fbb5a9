//! The Katib drop-in mode: Katib's argument forms, the `/proc` waiter on fake trees, and the report
//! received by a real tonic `DBManager`/`EarlyStopping` server on loopback – through the library and through the
//! binary started with the exact arguments Katib's webhook builds. The fake `/proc` trees exist because a real
//! pod's shared PID namespace cannot be had in a test without root; `-main-pid` stands in for the scan when the
//! binary runs outside one (a pid that does not exist means "already finished", its marker decides).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use trialtail::katib::api::db_manager_server::{DbManager, DbManagerServer};
use trialtail::katib::api::early_stopping_server::{EarlyStopping, EarlyStoppingServer};
use trialtail::katib::api::{
    GetObservationLogReply, GetObservationLogRequest, ReportObservationLogReply, ReportObservationLogRequest,
    SetTrialStatusReply, SetTrialStatusRequest,
};
use trialtail::katib::args::{ObjectiveType, is_katib_command_line, parse};
use trialtail::katib::report::Row;
use trialtail::rules::LineFormat;
use trialtail::sink::katib_db::{self, CHUNK_ROWS};
use trialtail::sink::stats::SinkStats;
use trialtail::wait::procfs::{Status as WaitStatus, Waiter, scan};

use crate::support::free_addr;

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------- arguments

/// What Katib's webhook passes for a StdOut collector with a TEXT filter (CONTRACT §1).
const WEBHOOK: &[&str] = &[
    "-t",
    "mnist-x7k2",
    "-m",
    "accuracy;loss",
    "-o-type",
    "maximize",
    "-s-db",
    "katib-db-manager.kubeflow:6789",
    "-path",
    "/var/log/katib/metrics.log",
    "-format",
    "TEXT",
];

#[test]
fn webhook_args_translate_to_the_drop_in_configuration() {
    assert!(is_katib_command_line(&strings(WEBHOOK)));
    let a = parse(&strings(WEBHOOK), |_| None).unwrap();
    assert_eq!(a.trial, "mnist-x7k2");
    assert_eq!(a.metrics, ["accuracy", "loss"]);
    assert_eq!(a.objective_type, Some(ObjectiveType::Maximize));
    assert_eq!(a.db_manager, "katib-db-manager.kubeflow:6789");
    assert_eq!(a.path, PathBuf::from("/var/log/katib/metrics.log"));
    assert_eq!(a.format, LineFormat::Text);
    assert!(a.wait_all && a.filters.is_empty() && a.stop_rules.is_empty() && a.early_stop.is_none());
    assert_eq!((a.poll, a.timeout), (Duration::from_secs(1), None));
    assert!(a.warnings.is_empty());
}

#[test]
fn single_double_dash_and_equals_forms_are_the_same() {
    let base = parse(&strings(WEBHOOK), |_| None).unwrap();
    let equals: Vec<String> = WEBHOOK.chunks(2).map(|p| format!("{}={}", p[0], p[1])).collect();
    let double: Vec<String> =
        WEBHOOK.iter().map(|a| if a.starts_with('-') { format!("-{a}") } else { a.to_string() }).collect();
    let double_equals: Vec<String> = equals.iter().map(|a| format!("-{a}")).collect();
    for form in [equals, double, double_equals] {
        assert_eq!(parse(&form, |_| None).unwrap(), base, "{form:?}");
    }
}

#[test]
fn metric_names_with_spaces_and_filters_with_bars_split_on_semicolons() {
    let a = parse(
        &strings(&[
            "-m",
            "valid_1 auc;loss",
            "-f",
            r"(\w+\s\w+)\s:\s((-?\d+)(\.\d+)?);{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}",
            "-format",
            "JSON",
            "-w",
            "false",
            "-p",
            "500ms",
            "-timeout",
            "1m30s",
            "-stop-rule",
            "loss;2;greater;0",
            "-stop-rule=valid_1 auc;0.5;less;3",
            "-s-earlystop",
            "exp-medianstop.ns:6788",
        ]),
        |_| None,
    )
    .unwrap();
    assert_eq!(a.metrics, ["valid_1 auc", "loss"]);
    assert_eq!(
        a.filters,
        [r"(\w+\s\w+)\s:\s((-?\d+)(\.\d+)?)", r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"]
    );
    assert_eq!(a.format, LineFormat::Json);
    assert!(!a.wait_all);
    assert_eq!((a.poll, a.timeout), (Duration::from_millis(500), Some(Duration::from_secs(90))));
    assert_eq!(a.stop_rules, ["loss;2;greater;0", "valid_1 auc;0.5;less;3"]);
    assert_eq!(a.early_stop.as_deref(), Some("exp-medianstop.ns:6788"));
}

#[test]
fn a_missing_format_means_text_with_a_warning() {
    let a = parse(&strings(&["-t", "t", "-m", "loss"]), |_| None).unwrap();
    assert_eq!(a.format, LineFormat::Text);
    assert!(a.warnings.iter().any(|w| w.contains("-format")), "{:?}", a.warnings);
}

#[test]
fn extra_flags_fall_back_to_the_environment() {
    let env = |k: &str| (k == "TRIALTAIL_REPORT_DEADLINE").then(|| "10s".to_string());
    assert_eq!(parse(&strings(&["-m", "loss"]), env).unwrap().report_deadline, Duration::from_secs(10));
    let a = parse(&strings(&["-m", "loss", "-report-deadline", "2s", "-listen", "off"]), env).unwrap();
    assert_eq!((a.report_deadline, a.listen), (Duration::from_secs(2), None));
}

#[test]
fn an_unknown_flag_prints_go_usage_and_exits_2() {
    let out = crate::trialtail(&["-t", "x", "-m", "loss", "-bogus", "1"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = crate::stderr(&out);
    assert!(err.contains("flag provided but not defined: -bogus"), "{err}");
    assert!(err.contains("-s-db"), "usage follows: {err}");
    let out = crate::trialtail(&["-t", "x", "-m"], None);
    assert_eq!(out.status.code(), Some(2), "a flag without its value");
    let out = crate::trialtail(&["katib", "-t", "x", "-p", "soon"], None);
    assert_eq!(out.status.code(), Some(2), "a bad duration, through the `katib` subcommand form");
}

// ------------------------------------------------------------------------------------------ the /proc waiter

/// A fake proc tree: `(pid, ppid, argv)`.
fn fake_proc(root: &Path, procs: &[(u32, u32, &[&str])]) {
    for (pid, ppid, argv) in procs {
        let d = root.join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        let name = argv.first().copied().unwrap_or("?");
        fs::write(d.join("stat"), format!("{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560")).unwrap();
        let mut cmdline = argv.join("\0");
        cmdline.push('\0');
        fs::write(d.join("cmdline"), cmdline).unwrap();
    }
}

const KATIB_SHELL: &[&str] =
    &["sh", "-c", "python train.py 1>/var/log/katib/metrics.log 2>&1 && echo completed > /var/log/katib/$$.pid"];

fn pod(root: &Path) {
    fake_proc(
        root,
        &[
            (1, 0, &["/pause"]),
            (7, 0, &["/usr/local/bin/pilot-agent", "proxy", "sidecar"]),
            (12, 0, KATIB_SHELL),
            (20, 12, &["python", "train.py"]),
            (30, 0, &["trialtail", "-t", "x"]),
        ],
    );
}

#[test]
fn the_main_pid_is_found_by_its_completed_marker_command() {
    let t = tempfile::tempdir().unwrap();
    pod(t.path());
    let s = scan(t.path(), Path::new("/var/log/katib"), 30).unwrap();
    assert_eq!((s.main, s.others), (12, vec![7]), "pid 1, trialtail itself and children are not candidates");
}

#[test]
fn without_a_matching_command_the_first_candidate_is_main() {
    let t = tempfile::tempdir().unwrap();
    fake_proc(t.path(), &[(1, 0, &["/pause"]), (9, 0, &["python", "train.py"]), (11, 0, &["envoy"])]);
    assert_eq!(scan(t.path(), Path::new("/var/log/katib"), 99).unwrap().main, 9);
}

#[test]
fn vanished_processes_are_skipped_and_an_empty_pod_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    pod(t.path());
    fs::create_dir_all(t.path().join("40")).unwrap(); // gone before its stat was read
    fs::remove_file(t.path().join("7/cmdline")).unwrap(); // gone between stat and cmdline
    fs::create_dir_all(t.path().join("self")).unwrap();
    let s = scan(t.path(), Path::new("/var/log/katib"), 30).unwrap();
    assert_eq!((s.main, s.others), (12, vec![]));
    let empty = tempfile::tempdir().unwrap();
    fake_proc(empty.path(), &[(1, 0, &["/pause"])]);
    assert!(scan(empty.path(), Path::new("/x"), 5).is_err());
}

#[test]
fn markers_decide_completed_early_stopped_and_failed() {
    let t = tempfile::tempdir().unwrap();
    let (root, dir) = (t.path().join("proc"), t.path().join("katib"));
    fs::create_dir_all(&dir).unwrap();
    pod(&root);
    let mut w = Waiter::new(&root, &dir, 12, vec![]);
    assert_eq!(w.poll(), WaitStatus::Running, "the shell is alive");
    fs::remove_dir_all(root.join("12")).unwrap();
    assert_eq!(w.poll(), WaitStatus::Failed { marker: None }, "gone without a marker: failed");
    fs::write(dir.join("12.pid"), "early-stopped\n").unwrap();
    assert_eq!(w.poll(), WaitStatus::Running, "early-stopped: keep waiting");
    fs::write(dir.join("12.pid"), "oops").unwrap();
    assert_eq!(w.poll(), WaitStatus::Failed { marker: Some("oops".into()) });
    fs::write(dir.join("12.pid"), "completed\n").unwrap();
    assert_eq!(w.poll(), WaitStatus::Completed);
}

#[test]
fn w_false_ignores_an_istio_proxy_and_w_true_waits_for_it() {
    let t = tempfile::tempdir().unwrap();
    let (root, dir) = (t.path().join("proc"), t.path().join("katib"));
    fs::create_dir_all(&dir).unwrap();
    pod(&root);
    let s = scan(&root, Path::new("/var/log/katib"), 30).unwrap();
    fs::remove_dir_all(root.join("12")).unwrap();
    fs::write(dir.join("12.pid"), "completed").unwrap();
    assert_eq!(Waiter::new(&root, &dir, s.main, vec![]).poll(), WaitStatus::Completed, "-w false");
    let mut all = Waiter::new(&root, &dir, s.main, s.others.clone());
    assert_eq!(all.poll(), WaitStatus::Running, "-w true: the proxy is still there");
    fs::remove_dir_all(root.join("7")).unwrap();
    assert_eq!(all.poll(), WaitStatus::Completed);
}

// ------------------------------------------------------------------------------------- the fake Katib server

#[derive(Debug, Default)]
struct State {
    reports: Mutex<Vec<ReportObservationLogRequest>>,
    statuses: Mutex<Vec<String>>,
    /// Calls to fail with UNAVAILABLE before accepting.
    fail_first: AtomicU32,
}

#[derive(Debug, Clone, Default)]
struct Katib(Arc<State>);

#[tonic::async_trait]
impl DbManager for Katib {
    async fn report_observation_log(
        &self,
        req: Request<ReportObservationLogRequest>,
    ) -> Result<Response<ReportObservationLogReply>, Status> {
        if self.0.fail_first.load(Ordering::SeqCst) > 0 {
            self.0.fail_first.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::unavailable("db not ready"));
        }
        self.0.reports.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ReportObservationLogReply {}))
    }

    async fn get_observation_log(
        &self,
        _: Request<GetObservationLogRequest>,
    ) -> Result<Response<GetObservationLogReply>, Status> {
        Err(Status::unimplemented("not used by collectors"))
    }
}

#[tonic::async_trait]
impl EarlyStopping for Katib {
    async fn set_trial_status(
        &self,
        req: Request<SetTrialStatusRequest>,
    ) -> Result<Response<SetTrialStatusReply>, Status> {
        self.0.statuses.lock().unwrap().push(req.into_inner().trial_name);
        Ok(Response::new(SetTrialStatusReply {}))
    }
}

impl Katib {
    /// Every row received, as `(time, name, value)`, in order.
    fn rows(&self) -> Vec<(String, String, String)> {
        let reports = self.0.reports.lock().unwrap();
        reports
            .iter()
            .flat_map(|r| r.observation_log.as_ref().map(|l| l.metric_logs.clone()).unwrap_or_default())
            .map(|l| {
                let m = l.metric.unwrap_or_default();
                (l.time_stamp, m.name, m.value)
            })
            .collect()
    }

    fn calls(&self) -> usize {
        self.0.reports.lock().unwrap().len()
    }
}

/// Serves `katib` on `addr` (after `delay`) from its own runtime thread, for as long as the test runs.
fn serve(katib: Katib, addr: SocketAddr, delay: Duration) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.spawn(async move {
        tokio::time::sleep(delay).await;
        tonic::transport::Server::builder()
            .add_service(DbManagerServer::new(katib.clone()))
            .add_service(EarlyStoppingServer::new(katib))
            .serve(addr)
            .await
            .unwrap();
    });
    rt
}

fn row<'a>(name: &'a str, value: &'a str, time: &'a str) -> Row<'a> {
    Row { name, value, time, line: Some(1) }
}

fn owned(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter().map(|(t, n, v)| (t.to_string(), n.to_string(), v.to_string())).collect()
}

#[test]
fn a_report_is_retried_until_a_late_server_accepts_it() {
    let katib = Katib::default();
    katib.0.fail_first.store(2, Ordering::SeqCst);
    let addr = free_addr();
    let _server = serve(katib.clone(), addr, Duration::from_millis(700));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rows = [row("loss", "0.5", "0001-01-01T00:00:00Z"), row("loss", "0.4", "")];
    let sinks = SinkStats::default();
    rt.block_on(katib_db::report(&addr.to_string(), "t1", &rows, Duration::from_secs(60), &sinks)).unwrap();
    assert_eq!(katib.calls(), 1, "failed calls stored nothing; the accepted one once");
    let counts = &sinks.snapshot()[katib_db::SINK];
    assert_eq!(counts.errors.get("status"), Some(&2), "each refused attempt counted: {counts:?}");
    assert!(counts.errors.get("connect").is_some_and(|&n| n >= 1), "before the server listened: {counts:?}");
    assert_eq!(counts.observations, 2, "the rows delivered");
    assert_eq!(
        katib.rows(),
        owned(&[("0001-01-01T00:00:00Z", "loss", "0.5"), ("0001-01-01T00:00:00Z", "loss", "0.4")]),
        "an empty time is sent as Katib's zero time, never empty"
    );
    assert_eq!(katib.0.reports.lock().unwrap()[0].trial_name, "t1");
}

#[test]
fn a_report_gives_up_at_its_deadline() {
    let addr = free_addr(); // nobody listens
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let started = Instant::now();
    let rows = [row("loss", "0.5", "0001-01-01T00:00:00Z")];
    let sinks = SinkStats::default();
    let err =
        rt.block_on(katib_db::report(&addr.to_string(), "t1", &rows, Duration::from_secs(1), &sinks)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(err.to_string().contains("not accepted within"), "{err}");
}

// -------------------------------------------------------------------------------------- through the binary

/// A pid that cannot exist (above any pid_max): "the training already ended", its marker decides.
const ENDED: &str = "999999999";

/// Runs the binary in drop-in mode on `log` with `marker` as the training's marker, against `katib`.
fn dropin(katib: &Katib, log: &[u8], marker: Option<&str>, args: &[&str]) -> (Output, Vec<u8>) {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("metrics.log");
    fs::write(&path, log).unwrap();
    if let Some(m) = marker {
        fs::write(t.path().join(format!("{ENDED}.pid")), m).unwrap();
    }
    let addr = free_addr();
    let _server = serve(katib.clone(), addr, Duration::ZERO);
    let mut all: Vec<String> = strings(&["-t", "trial-1", "-s-db", &addr.to_string(), "-path", path.to_str().unwrap()]);
    all.extend(strings(args));
    all.extend(strings(&["-main-pid", ENDED, "-listen", "off", "-p", "50ms"]));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = crate::trialtail(&all, None);
    (out, log.to_vec())
}

#[test]
fn text_log_rows_arrive_exactly_and_the_log_is_echoed() {
    let katib = Katib::default();
    let log =
        b"2024-03-04T17:55:08Z epoch 1 accuracy=0.61 loss=1.20\nnoise\nepoch 2 accuracy=0.72 loss=nan\nloss = 0.9\n";
    let (out, log) =
        dropin(&katib, log, Some("completed\n"), &["-m", "accuracy;loss", "-o-type", "maximize", "-format", "TEXT"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert_eq!(out.stdout, log, "stdout echoes the metrics file byte for byte");
    assert_eq!(
        katib.rows(),
        owned(&[
            ("2024-03-04T17:55:08Z", "accuracy", "0.61"),
            ("2024-03-04T17:55:08Z", "loss", "1.20"),
            ("0001-01-01T00:00:00Z", "accuracy", "0.72"),
            ("0001-01-01T00:00:00Z", "loss", ""),
            ("0001-01-01T00:00:00Z", "loss", "0.9"),
        ])
    );
}

#[test]
fn json_log_rows_arrive_exactly() {
    let katib = Katib::default();
    let log = b"{\"accuracy\": \"0.8\", \"timestamp\": \"2024-01-01T00:00:00.5Z\"}\n\n{\"accuracy\": \"0.9\", \"loss\": \"0.1\", \"timestamp\": 1638422847.28721}\n";
    let (out, _) = dropin(&katib, log, Some("completed"), &["-m", "accuracy;loss", "-format", "JSON"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert_eq!(
        katib.rows(),
        owned(&[
            ("2024-01-01T00:00:00.5Z", "accuracy", "0.8"),
            ("2021-12-02T05:27:27.000028721Z", "accuracy", "0.9"),
            ("2021-12-02T05:27:27.000028721Z", "loss", "0.1"),
        ])
    );
}

#[test]
fn a_log_without_the_objective_reports_the_unavailable_sentinel() {
    let katib = Katib::default();
    let (out, _) =
        dropin(&katib, b"loss=0.5\nloss=0.4\n", Some("completed"), &["-m", "accuracy;loss", "-format", "TEXT"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert_eq!(katib.rows(), owned(&[("0001-01-01T00:00:00Z", "accuracy", "unavailable")]));
}

#[test]
fn fifty_thousand_observations_are_sent_in_chunks_in_order() {
    let katib = Katib::default();
    let log: String = (0..50_000).map(|i| format!("loss={i}\n")).collect();
    let (out, _) = dropin(&katib, log.as_bytes(), Some("completed"), &["-m", "loss"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert!(crate::stderr(&out).contains("-format is missing"), "missing -format warns");
    let rows = katib.rows();
    assert_eq!(rows.len(), 50_000);
    assert!(rows.iter().enumerate().all(|(i, r)| r.2 == i.to_string()), "in line order");
    assert_eq!(katib.calls(), 50_000usize.div_ceil(CHUNK_ROWS));
    assert!(
        katib
            .0
            .reports
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.observation_log.as_ref().unwrap().metric_logs.len() <= CHUNK_ROWS)
    );
}

#[test]
fn failed_training_reports_nothing_and_exits_255() {
    for marker in [None, Some("failed")] {
        let katib = Katib::default();
        let (out, _) = dropin(&katib, b"loss=0.5\n", marker, &["-m", "loss", "-format", "TEXT"]);
        assert_eq!(out.status.code(), Some(255), "{marker:?}");
        assert!(crate::stderr(&out).contains("training failed"), "{}", crate::stderr(&out));
        assert_eq!(katib.calls(), 0);
    }
}

#[test]
fn an_unreachable_db_manager_exits_3_after_the_deadline() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("metrics.log");
    fs::write(&path, "loss=1\n").unwrap();
    fs::write(t.path().join(format!("{ENDED}.pid")), "completed").unwrap();
    let db = free_addr().to_string();
    let out = crate::trialtail(
        &["-t", "t", "-m", "loss", "-s-db", &db, "-path", path.to_str().unwrap(), "-format", "TEXT"]
            .into_iter()
            .chain(["-main-pid", ENDED, "-listen", "off", "-report-deadline", "1s"])
            .collect::<Vec<_>>(),
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", crate::stderr(&out));
}

// ------------------------------------------------------------------------------------ a Katib-shaped pod

/// Starts `sh -c "<training> 1>dir/metrics.log 2>&1 && echo completed > dir/$$.pid"` and reaps it in a thread
/// (so its /proc entry goes away when it exits). Returns its pid.
fn katib_shell(dir: &Path, training: &str) -> u32 {
    let log = dir.join("metrics.log");
    let script = format!("{training} 1>{} 2>&1 && echo completed > {}/$$.pid", log.display(), dir.display());
    let mut child = Command::new("sh").arg("-c").arg(script).stdin(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    std::thread::spawn(move || child.wait());
    pid
}

fn webhook_args<'a>(db: &'a str, path: &'a str, pid: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "-t",
        "e2e-trial",
        "-m",
        "accuracy;loss",
        "-o-type",
        "maximize",
        "-s-db",
        db,
        "-path",
        path,
        "-format",
        "TEXT",
    ];
    a.extend_from_slice(more);
    a.extend_from_slice(&["-main-pid", pid, "-listen", "off", "-p", "100ms"]);
    a
}

#[test]
fn end_to_end_a_katib_shaped_training_is_followed_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let katib = Katib::default();
    let addr = free_addr();
    let _server = serve(katib.clone(), addr, Duration::ZERO);
    let training = "for i in 1 2 3; do echo \"epoch $i accuracy=0.$i loss=1.$i\"; sleep 0.2; done";
    let pid = katib_shell(t.path(), training).to_string();
    let (db, path) = (addr.to_string(), t.path().join("metrics.log").display().to_string());
    let out = crate::trialtail(&webhook_args(&db, &path, &pid, &[]), None);
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    let expected = "epoch 1 accuracy=0.1 loss=1.1\nepoch 2 accuracy=0.2 loss=1.2\nepoch 3 accuracy=0.3 loss=1.3\n";
    assert_eq!(crate::stdout(&out), expected, "the log is echoed");
    let z = "0001-01-01T00:00:00Z";
    assert_eq!(
        katib.rows(),
        owned(&[
            (z, "accuracy", "0.1"),
            (z, "loss", "1.1"),
            (z, "accuracy", "0.2"),
            (z, "loss", "1.2"),
            (z, "accuracy", "0.3"),
            (z, "loss", "1.3"),
        ])
    );
}

#[test]
fn end_to_end_early_stopping_kills_the_training_reports_and_sets_the_trial_status() {
    let t = tempfile::tempdir().unwrap();
    let katib = Katib::default();
    let addr = free_addr();
    let _server = serve(katib.clone(), addr, Duration::ZERO);
    // Runs for a minute unless stopped; accuracy never beats 0.3.
    let training = "sh -c 'i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo \"accuracy=0.2 loss=$i\"; sleep 0.1; done'";
    let pid = katib_shell(t.path(), training).to_string();
    let (db, path) = (addr.to_string(), t.path().join("metrics.log").display().to_string());
    let started = Instant::now();
    let more = ["-stop-rule", "accuracy;0.3;less;3", "-s-earlystop", &db];
    let out = crate::trialtail(&webhook_args(&db, &path, &pid, &more), None);
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(40), "the training was stopped: {:?}", started.elapsed());
    assert_eq!(fs::read_to_string(t.path().join(format!("{pid}.pid"))).unwrap(), "early-stopped");
    let rows = katib.rows();
    assert!(rows.len() >= 6, "the third accuracy fired the rule: {rows:?}");
    assert_eq!(rows[..2], owned(&[("0001-01-01T00:00:00Z", "accuracy", "0.2"), ("0001-01-01T00:00:00Z", "loss", "1")]));
    assert_eq!(*katib.0.statuses.lock().unwrap(), ["e2e-trial"]);
}

#[test]
fn drop_in_mode_serves_metrics_while_training_runs() {
    let t = tempfile::tempdir().unwrap();
    let katib = Katib::default();
    let addr = free_addr();
    let _server = serve(katib.clone(), addr, Duration::ZERO);
    let training = "sh -c 'echo accuracy=0.5; sleep 30'";
    let pid = katib_shell(t.path(), training);
    let listen = free_addr();
    let (db, path) = (addr.to_string(), t.path().join("metrics.log").display().to_string());
    let mut args = webhook_args(&db, &path, "1", &[]);
    args.truncate(args.len() - 6); // the defaults of webhook_args: set -main-pid and -listen here
    let (pid_s, listen_s) = (pid.to_string(), listen.to_string());
    args.extend(["-main-pid", &pid_s, "-listen", &listen_s, "-p", "100ms"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(&args)
        .env("POD_NAMESPACE", "team-a")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + crate::support::PATIENCE;
    let body = loop {
        if let Ok(r) = crate::support::get(listen, "/metrics", None)
            && r.body.contains("accuracy")
        {
            break r.body;
        }
        assert!(Instant::now() < deadline, "no accuracy on /metrics");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = kill_shell(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("trial=\"e2e-trial\""), "{body}");
    assert!(body.contains("namespace=\"team-a\""), "{body}");
}

/// Ends the fake training shell (the test's own child) and its training.
fn kill_shell(pid: u32) -> std::io::Result<()> {
    let mut pids = trialtail::wait::procfs::children(Path::new("/proc"), pid);
    pids.push(pid);
    Command::new("kill").args(pids.iter().map(u32::to_string)).status().map(drop)
}

/// A real shared PID namespace, as in a pod with `shareProcessNamespace: true`: a holder started with
/// `unshare --pid --fork --mount-proc` plays the pause container (pid 1), the training shell and trialtail join it
/// with `nsenter`, so both see ppid 0 and trialtail finds the shell by scanning the real `/proc`. Needs root:
/// skipped (with a message) when the namespace cannot be made, failing instead when `CI` is set.
#[test]
fn in_a_real_pid_namespace_the_training_shell_is_found_and_reported() {
    let holder = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut holder) = holder else {
        assert!(std::env::var_os("CI").is_none(), "unshare is missing and CI is set");
        eprintln!("SKIPPED: unshare not found");
        return;
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // The holder's child, `sleep`, is pid 1 of the new namespace: the target to join.
    let deadline = Instant::now() + Duration::from_secs(10);
    let target = loop {
        let children = trialtail::wait::procfs::children(Path::new("/proc"), holder.id());
        if let Some(&c) = children.first() {
            break c;
        }
        if let Ok(Some(status)) = holder.try_wait() {
            assert!(std::env::var_os("CI").is_none(), "unshare failed ({status}) and CI is set");
            eprintln!("SKIPPED: cannot create a PID namespace here ({status}); needs root");
            return;
        }
        assert!(Instant::now() < deadline, "the namespace's pid 1 did not appear");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _holder = Kill(holder);
    let target = target.to_string();

    let t = tempfile::tempdir().unwrap();
    let katib = Katib::default();
    let addr = free_addr();
    let _server = serve(katib.clone(), addr, Duration::ZERO);
    let log = t.path().join("metrics.log");
    let script = format!(
        "sh -c 'sleep 1; echo \"accuracy=0.9 loss=0.1\"' 1>{} 2>&1 && echo completed > {}/$$.pid",
        log.display(),
        t.path().display()
    );
    let shell = Command::new("nsenter")
        .args(["--target", &target, "--pid", "--mount", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _shell = Kill(shell);
    std::thread::sleep(Duration::from_millis(300)); // the shell exists before trialtail scans, as in a pod
    let (db, path) = (addr.to_string(), log.display().to_string());
    let mut cmd = Command::new("nsenter");
    cmd.args(["--target", &target, "--pid", "--mount", env!("CARGO_BIN_EXE_trialtail")]);
    cmd.args(["-t", "ns-trial", "-m", "accuracy;loss", "-o-type", "maximize", "-s-db", &db, "-path", &path]);
    cmd.args(["-format", "TEXT", "-listen", "off", "-p", "100ms"]);
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert_eq!(crate::stdout(&out), "accuracy=0.9 loss=0.1\n");
    let z = "0001-01-01T00:00:00Z";
    assert_eq!(katib.rows(), owned(&[(z, "accuracy", "0.9"), (z, "loss", "0.1")]));
}

/// Runs the drop-in on `dir/metrics.log` (training already ended) against a fresh Katib DB manager; returns
/// the rows it reported.
fn report_ended_log(dir: &std::path::Path, trial: &str) -> usize {
    fs::write(dir.join(format!("{ENDED}.pid")), "completed").unwrap();
    let katib = Katib::default();
    let addr = free_addr();
    let _server = serve(katib.clone(), addr, Duration::ZERO);
    let (db, p) = (addr.to_string(), dir.join("metrics.log").display().to_string());
    let status = Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(["-t", trial, "-m", "loss", "-o-type", "minimize", "-s-db", &db, "-path", &p, "-format", "TEXT"])
        .args(["-main-pid", ENDED, "-listen", "off"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    katib.rows().len()
}

/// The children's peak RSS so far, in KiB.
fn children_peak_rss() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap().max_rss()
}

/// The drop-in's memory bound: a 1 GB metrics file holding 100 000 observations, reported at the end, costs at
/// most 24 MiB of peak RSS above the same binary's footprint on a one-line log – the observations kept for the
/// report (about 170 bytes each, as measured), never the log's text (a few seconds: it writes 1 GB to a
/// temporary directory). The footprint itself is mostly the debug binary's own pages, which grow with the
/// code, not with the log; it is measured by [`drop_in_footprint_on_a_one_line_log`] in a second test process.
///
/// The peak is read from `RUSAGE_CHILDREN`, which covers every child this test process ever reaped: it must run
/// alone, so it is ignored in the suite and `.ci/run` runs it by itself afterwards
/// (`cargo test --test it peak_rss -- --ignored --nocapture`).
#[test]
#[ignore = "run alone: RUSAGE_CHILDREN counts the other tests' children; .ci/run runs it separately"]
fn peak_rss_stays_small_on_a_one_gigabyte_log() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("metrics.log");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&path).unwrap());
        let noise = format!("{}\n", "x".repeat(99));
        for i in 0..100_000u32 {
            for _ in 0..99 {
                f.write_all(noise.as_bytes()).unwrap();
            }
            writeln!(f, "epoch {i} loss=0.{i:05} {}", "y".repeat(70)).unwrap();
        }
    }
    let started = Instant::now();
    let rows = report_ended_log(t.path(), "big");
    let rss = children_peak_rss();
    eprintln!("1 GB log, 100000 observations: peak RSS {} KiB, {:?}", rss, started.elapsed());
    assert_eq!(rows, 100_000);
    // Only now another process: the footprint's run must not count in the reading above.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "dropin::drop_in_footprint_on_a_one_line_log", "--ignored", "--nocapture"])
        .output()
        .unwrap();
    let text = format!("{}{}", crate::stdout(&out), crate::stderr(&out));
    let footprint: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("footprint: peak RSS ")?.strip_suffix(" KiB")?.parse().ok())
        .unwrap_or_else(|| panic!("no footprint in:\n{text}"));
    eprintln!("footprint on a one-line log: {footprint} KiB; the 1 GB log costs {} KiB more", rss - footprint);
    assert!(rss - footprint <= 24 * 1024, "peak RSS {rss} KiB, footprint {footprint} KiB");
}

/// The same drop-in run on a one-line log: the binary's own footprint, for
/// [`peak_rss_stays_small_on_a_one_gigabyte_log`], which runs this in a process of its own.
#[test]
#[ignore = "run by peak_rss_stays_small_on_a_one_gigabyte_log in a process of its own"]
fn drop_in_footprint_on_a_one_line_log() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("metrics.log"), "epoch 0 loss=0.5\n").unwrap();
    assert_eq!(report_ended_log(t.path(), "small"), 1);
    let rss = children_peak_rss();
    println!("footprint: peak RSS {rss} KiB");
}

#[test]
fn timeout_passing_reports_nothing_and_exits_255() {
    let t = tempfile::tempdir().unwrap();
    let katib = Katib::default();
    let addr = free_addr();
    let _server = serve(katib.clone(), addr, Duration::ZERO);
    let pid = katib_shell(t.path(), "sh -c 'echo accuracy=0.5; sleep 20'");
    let (db, path, pid_s) = (addr.to_string(), t.path().join("metrics.log").display().to_string(), pid.to_string());
    let out = crate::trialtail(&webhook_args(&db, &path, &pid_s, &["-timeout", "500ms"]), None);
    let _ = kill_shell(pid);
    assert_eq!(out.status.code(), Some(255), "{}", crate::stderr(&out));
    assert!(crate::stderr(&out).contains("-timeout"), "{}", crate::stderr(&out));
    assert_eq!(katib.calls(), 0);
}

#[test]
fn katib_help_prints_the_usage_and_exit_codes() {
    let out = crate::trialtail(&["katib", "-h"], None);
    assert_eq!(out.status.code(), Some(0));
    let text = crate::stdout(&out);
    for flag in ["-t string", "-stop-rule", "-report-deadline", "Exit codes"] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
}
