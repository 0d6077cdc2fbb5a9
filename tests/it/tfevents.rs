//! TensorBoard event files against Katib's own TensorFlowEvent collector: `tests/tfevents/katib_expected.jsonl`
//! holds what Katib v0.19.0's `tfevent_loader.py` reports for 42 cases over the fixtures written by the real
//! writers (produced by `tests/tfevents/katib_oracle.py`, which imports Katib's code; TZ=UTC, the `unavailable`
//! clock at epoch 0). The drop-in's reader must report the same rows, file by file, with the one deliberate
//! exception of non-scalar tensors (`docs/katib.md`).

use std::collections::BTreeMap;
use std::path::Path;

use trialtail::katib::tfevent::KatibEvents;
use trialtail::parser::Parser;
use trialtail::rules::{LineFormat, Rules, Semantics};
use trialtail::source::tfevents::dir::{EventDir, Naming, Order};
use trialtail::source::tfevents::record::DEFAULT_MAX_RECORD;

const FIXTURES: &str = "tests/tfevents/fixtures";

#[derive(Debug, serde::Deserialize)]
struct Case {
    path: String,
    metrics: String,
    logs: Vec<OracleLog>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
struct OracleLog {
    name: String,
    value: String,
    time_stamp: String,
    file: Option<String>,
}

/// A row as the oracle prints it: name, value, time stamp, and the event file it came from.
pub type Log = (String, String, String, Option<String>);

/// Every case: `-path`, `-m`, Katib's rows.
pub fn cases() -> Vec<(String, String, Vec<Log>)> {
    let text = std::fs::read_to_string(crate::root().join("tests/tfevents/katib_expected.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let c: Case = serde_json::from_str(l).unwrap();
            let logs = c.logs.into_iter().map(|l| (l.name, l.value, l.time_stamp, l.file)).collect();
            (c.path, c.metrics, logs)
        })
        .collect()
}

/// A value Katib reports for a tensor that is not a scalar: numpy's printout of an array or of bytes.
pub fn non_scalar(value: &str) -> bool {
    value != "unavailable" && value.parse::<f64>().is_err() && !["nan", "inf", "-inf"].contains(&value)
}

/// Katib's rows per file (and the sentinel's) as trialtail reports them: without the non-scalar tensors' rows,
/// `unavailable` when that leaves nothing for the objective.
pub fn as_trialtail_reports(metrics: &str, logs: &[Log]) -> BTreeMap<Option<String>, Vec<(String, String, String)>> {
    let objective = metrics.split(';').next().unwrap_or("");
    let kept: Vec<_> = logs.iter().filter(|l| !non_scalar(&l.1)).collect();
    let mut by_file: BTreeMap<Option<String>, Vec<(String, String, String)>> = BTreeMap::new();
    if !kept.iter().any(|l| l.0 == objective) {
        by_file.insert(None, vec![(objective.to_string(), "unavailable".into(), "1970-01-01T00:00:00+00:00".into())]);
        return by_file;
    }
    for l in kept {
        by_file.entry(l.3.clone()).or_default().push((l.0.clone(), l.1.clone(), l.2.clone()));
    }
    by_file
}

/// trialtail's report for a case, per file (paths relative to the fixtures, as the oracle names them).
fn trialtail_report(path: &str, metrics: &str) -> BTreeMap<Option<String>, Vec<(String, String, String)>> {
    let root = Path::new(FIXTURES).join(path);
    let names: Vec<String> = metrics.split(';').map(String::from).collect();
    let events = KatibEvents::new(names.clone(), jiff::tz::TimeZone::UTC);
    let mut dir = EventDir::new(&root, Order::Katib, Naming::Never, events, DEFAULT_MAX_RECORD);
    let rules = Rules::new(&[], &[], Semantics::Native, LineFormat::Text).unwrap();
    let mut parser = Parser::new(rules, 1000);
    dir.read_all(&mut parser, &mut ()).unwrap();
    let files: Vec<_> = dir.files().cloned().collect();
    let whole = dir.handler().report(&files, "1970-01-01T00:00:00+00:00");
    let rows = whole.rows();
    let mut by_file = BTreeMap::new();
    if rows.len() == 1 && rows[0].value == "unavailable" && rows[0].line.is_none() {
        by_file.insert(None, vec![(rows[0].name.into(), rows[0].value.into(), rows[0].time.into())]);
        return by_file;
    }
    for f in &files {
        let report = dir.handler().report(std::slice::from_ref(f), "");
        let rows: Vec<(String, String, String)> =
            report.collected().iter().map(|r| (r.name.to_string(), r.value.to_string(), r.time.to_string())).collect();
        if !rows.is_empty() {
            let rel = f.path.strip_prefix(FIXTURES).unwrap().to_string_lossy().into_owned();
            by_file.insert(Some(rel), rows);
        }
    }
    by_file
}

#[test]
fn katib_events_report_the_rows_katibs_own_collector_reports() {
    let mut differences = Vec::new();
    let (mut compared, mut rows) = (0, 0);
    for (path, metrics, logs) in cases() {
        let want = as_trialtail_reports(&metrics, &logs);
        let got = trialtail_report(&path, &metrics);
        if got != want {
            let mut diff = String::new();
            for file in want.keys().chain(got.keys()).collect::<std::collections::BTreeSet<_>>() {
                let (w, g) = (want.get(file).cloned().unwrap_or_default(), got.get(file).cloned().unwrap_or_default());
                if w != g {
                    let at = w.iter().zip(&g).position(|(a, b)| a != b).unwrap_or(w.len().min(g.len()));
                    diff += &format!(
                        "\n  {file:?}: Katib {} rows, trialtail {}; first difference at {at}: {:?} vs {:?}",
                        w.len(),
                        g.len(),
                        w.get(at),
                        g.get(at)
                    );
                }
            }
            differences.push(format!("{path} -m {metrics:?}:{diff}"));
        }
        compared += 1;
        rows += want.values().map(Vec::len).sum::<usize>();
    }
    assert!(differences.is_empty(), "{} of {compared} differ:\n{}", differences.len(), differences.join("\n"));
    assert!(compared == 42 && rows > 400, "{compared} cases, {rows} rows");
}

/// Copies the fixture `path` (a directory below the fixtures) into `into`, keeping its relative path (Katib
/// matches directory names as strings).
fn copy_fixture(path: &str, into: &Path) -> std::path::PathBuf {
    let from = crate::root().join(FIXTURES).join(path.trim_end_matches('/'));
    let to = into.join(path.trim_end_matches('/'));
    let status = std::process::Command::new("cp").arg("-r").arg(&from).arg(to.parent().unwrap()).status().unwrap();
    assert!(status.success());
    to
}

/// A pid that cannot exist: the training already ended, its marker says `completed`.
const ENDED: &str = "999999999";

#[test]
fn the_tensorflowevent_drop_in_stores_in_katibs_own_db_manager_the_rows_katib_reports() {
    use crate::support::katib::{Rig, Row};
    let Some(rig) = Rig::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (mut compared, mut sentinels) = (0, 0);
    let mut differences = Vec::new();
    for (i, (path, metrics, logs)) in cases().into_iter().enumerate() {
        let case = tmp.path().join(format!("case{i}"));
        std::fs::create_dir_all(case.join(Path::new(path.trim_end_matches('/')).parent().unwrap())).unwrap();
        let dir = if path == "does_not_exist" { case.join(&path) } else { copy_fixture(&path, &case) };
        let mut arg_path = dir.to_string_lossy().into_owned();
        if path.ends_with('/') {
            arg_path.push('/');
        }
        if dir.exists() {
            std::fs::write(dir.join(format!("{ENDED}.pid")), "completed").unwrap();
        } else {
            // Katib's -path always exists (a mounted directory); the marker is there too.
            std::fs::create_dir_all(&case).unwrap();
            arg_path.push('/');
        }
        let (ours, theirs) = (format!("tt-tf-{i}"), format!("katib-tf-{i}"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_trialtail"));
        cmd.args(["-t", &ours, "-m", &metrics, "-o-type", "maximize", "-s-db", &rig.addr, "-path", &arg_path])
            .args(["-main-pid", ENDED, "-listen", "off", "-p", "1", "-report-deadline", "30s"])
            .env("TZ", "UTC");
        if !dir.exists() {
            cmd.arg("-proc-root").arg("/proc");
        }
        let out = cmd.output().unwrap();
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !dir.exists() {
            // No directory, no marker: the training's completion cannot be seen (Katib's collector raises too).
            assert_ne!(code, Some(0), "{path}: {stderr}");
            continue;
        }
        assert_eq!(code, Some(0), "{path} -m {metrics}: {stderr}");
        let want: Vec<Row> = as_trialtail_reports(&metrics, &logs)
            .into_values()
            .flatten()
            .map(|(n, v, t)| Row::new(&n, &v, &t))
            .collect();
        rig.report_as_katib(&theirs, &want, 0).unwrap();
        let strip = |rows: Vec<Row>| {
            let mut rows: Vec<Row> = rows
                .into_iter()
                .map(|r| if r.value == "unavailable" { Row::new(&r.name, &r.value, "") } else { r })
                .collect();
            rows.sort();
            rows
        };
        let (stored, expected) = (strip(rig.rows(&ours, "")), strip(rig.rows(&theirs, "")));
        if stored != expected {
            differences
                .push(format!("{path} -m {metrics:?}: Katib stored {expected:?}\n    trialtail stored {stored:?}"));
        }
        sentinels += usize::from(expected.iter().any(|r| r.value == "unavailable"));
        compared += 1;
    }
    assert!(differences.is_empty(), "{} differences:\n{}", differences.len(), differences.join("\n"));
    assert!(compared >= 40 && sentinels >= 3, "{compared} compared, {sentinels} sentinels");
}

/// The bytes of a fixture's event file.
fn fixture_file(dir: &str) -> Vec<u8> {
    let dir = crate::root().join(FIXTURES).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tfevents"))
        .map(|e| e.path())
        .collect();
    files.sort();
    std::fs::read(&files[0]).unwrap()
}

/// Appends `bytes` to `path` in `pieces` writes (cut anywhere, mid-record included), pausing between them.
fn append_in_pieces(path: &Path, bytes: &[u8], pieces: usize, pause: std::time::Duration) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let step = bytes.len().div_ceil(pieces);
    for chunk in bytes.chunks(step) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(pause);
    }
}

#[test]
fn following_a_directory_reads_records_in_pieces_new_runs_and_a_restarted_writer() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("logs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(["run", "--follow", "--until-idle", "2s", "--output", "json"])
        .arg(format!("{}/", root.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pause = std::time::Duration::from_millis(40);
    // The directory appears after the follower started; one run's records arrive in 7 pieces, cut mid-record.
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::create_dir_all(root.join("train")).unwrap();
    let first = fixture_file("tf1_simple_value");
    append_in_pieces(&root.join("train/events.out.tfevents.1700000000.host.1"), &first, 7, pause);
    // A second run directory appears mid-way.
    std::fs::create_dir_all(root.join("validation")).unwrap();
    let second = fixture_file("restart");
    append_in_pieces(&root.join("validation/events.out.tfevents.1700000001.host.1"), &second, 3, pause);
    // The first run's writer restarts: a new file in its directory.
    let restarted = std::fs::read(
        std::fs::read_dir(crate::root().join(FIXTURES).join("restart"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".run1"))
            .unwrap(),
    )
    .unwrap();
    append_in_pieces(&root.join("train/events.out.tfevents.1700000100.host.2"), &restarted, 2, pause);
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        *names.entry(v["metric"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("damaged"), "a record waiting for its end is not damage: {stderr}");
    // tf1_simple_value: 40 scalars (accuracy, accuracy_top5, loss, loss/train); restart: 10 + 10 accuracy values.
    let total: usize = names.values().sum();
    assert_eq!(total, 40 + 10 + 10, "{names:?}");
    assert_eq!(names.get("validation/accuracy"), Some(&10), "{names:?}");
    assert!(names.keys().all(|n| n.starts_with("train/") || n.starts_with("validation/")), "{names:?}");
    assert_eq!(names.get("train/accuracy"), Some(&30), "the restarted writer's file is read too: {names:?}");
}
