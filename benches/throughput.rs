//! Throughput and memory of `trialtail run` on generated training logs, against `grep -cE` in the same run.
//!
//! `cargo bench --bench throughput` generates two 100 MB logs with `benches/gen_log.py` (1 % and 30 % metric
//! lines in six formats; cached in `target/bench-data/`), then runs, interleaved and several times each:
//! - `grep -cE` over the six metric formats (the baseline; its output goes to a pipe, never /dev/null);
//! - `trialtail run` with no flags (every format recognised), whose result is checked against the generator's
//!   truth for it (count, last, min, max per metric, and no other metric);
//! - the same with `--listen` (an endpoint nobody asks: what publishing snapshots and feeding the live page's
//!   history cost the read loop);
//! - `trialtail run` with the four presets of formats F1–F4 and the target metric names, checked against the
//!   generator's truth for them;
//! - `trialtail run --katib-semantics` with Katib's default filter and the target names.
//!
//! It prints best-of-N MB/s and lines/s per CPU second (user + system time of the process, which a busy machine
//! disturbs less than wall time) and the ratio to grep, then the peak RSS of `trialtail run` reading a
//! 1 GB stream (the 30 % log ten times through stdin). Environment: `BENCH_SIZE` (default `100M`), `BENCH_ROUNDS`
//! (default 5), `BENCH_BINS` (`NAME=PATH,NAME=PATH`: measure these trialtail binaries instead of this build's,
//! interleaved in the same run – e.g. the static release binary before and after a change).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const GREP_FORMATS: &str = r"Accuracy at step [0-9]+: |^[0-9T:.-]+Z epoch [0-9]+: loss=|^\{'(loss|eval_loss)': |^\[[0-9]+\]	validation_0-logloss:| - ETA: [0-9]+s - loss: |it/s, v_num=[0-9]+, train_loss=";
const TARGETS: &str =
    "Accuracy,loss,accuracy,learning_rate,epoch,eval_loss,eval_accuracy,validation_0-logloss,validation_1-logloss";

fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    dir
}

fn generate(size: &str, frac: &str) -> (PathBuf, PathBuf) {
    let dir = data_dir();
    // The cache is keyed by the generator's text too: a changed generator makes new logs.
    let generator =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/gen_log.py")).expect("gen_log.py");
    let version =
        generator.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let log = dir.join(format!("gen-{size}-{frac}-{version:016x}.log"));
    let truth = dir.join(format!("gen-{size}-{frac}-{version:016x}.truth.json"));
    if !log.exists() || !truth.exists() {
        eprintln!("generating {} …", log.display());
        let status = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/gen_log.py"))
            .args(["--size", size, "--metric-frac", frac, "--seed", "42", "--out"])
            .arg(&log)
            .arg("--truth")
            .arg(&truth)
            .status()
            .expect("python3 runs benches/gen_log.py");
        assert!(status.success(), "gen_log.py failed");
    }
    (log, truth)
}

/// CPU time (user + system) of all reaped children so far.
fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

/// Runs a command, its stdout to a pipe; returns its CPU time (user + system: steadier than wall time on a busy
/// machine), stdout and stderr.
fn timed(cmd: &mut Command) -> (Duration, String, String) {
    let before = children_cpu();
    let out = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("spawn");
    let elapsed = children_cpu() - before;
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (elapsed, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The trialtail binaries measured: `BENCH_BINS`, else this build's.
fn binaries() -> Vec<(String, PathBuf)> {
    match std::env::var("BENCH_BINS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|item| {
                let (name, path) = item.split_once('=').expect("BENCH_BINS: NAME=PATH,NAME=PATH");
                assert!(Path::new(path).is_file(), "BENCH_BINS: no file {path}");
                (name.trim().to_string(), PathBuf::from(path.trim()))
            })
            .collect(),
        _ => vec![(String::new(), PathBuf::from(env!("CARGO_BIN_EXE_trialtail")))],
    }
}

struct Contender {
    name: String,
    make: Box<dyn Fn(&Path) -> Command>,
    /// Its result is checked against this part of the truth file.
    checked: Option<&'static str>,
}

fn contenders() -> Vec<Contender> {
    let mut all = vec![Contender {
        name: "grep -cE (baseline)".to_string(),
        make: Box::new(|p| {
            let mut c = Command::new("grep");
            c.arg("-cE").arg(GREP_FORMATS).arg(p).env("LC_ALL", "C");
            c
        }),
        checked: None,
    }];
    let runs: [(&str, &[&str], Option<&'static str>); 4] = [
        ("run (no flags)", &["run"], Some("auto_metrics")),
        ("run --listen (no flags)", &["run", "--listen", "127.0.0.1:0", "--linger", "0"], None),
        (
            "run (4 presets, names)",
            &["run", "--preset", "katib,tf-step,hf-trainer,xgboost", "--metrics", TARGETS],
            Some("metrics"),
        ),
        ("run --katib-semantics", &["run", "--katib-semantics", "--metrics", TARGETS], None),
    ];
    for (name, args, checked) in runs {
        for (bin, path) in binaries() {
            let label = if bin.is_empty() { format!("trialtail {name}") } else { format!("{bin}: trialtail {name}") };
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let path = path.clone();
            let make = Box::new(move |p: &Path| {
                let mut c = Command::new(&path);
                c.args(&args).arg(p);
                c
            });
            all.push(Contender { name: label, make, checked });
        }
    }
    all
}

/// Checks a run's table against the generator's truth (`key`: `metrics` for the presets, `auto_metrics` for no
/// flags): count, last, min and max per metric, and no other metric.
fn verify(table: &str, truth: &Path, key: &str) {
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(truth).unwrap()).unwrap();
    let mut rows = BTreeMap::new();
    for line in table.lines().skip(1).take_while(|l| !l.is_empty() && !l.starts_with("parameters:")) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        rows.insert(cells[0].to_string(), cells[1..].iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    let want = truth[key].as_object().unwrap();
    let names: Vec<&String> = rows.keys().collect();
    assert_eq!(names, want.keys().collect::<Vec<_>>(), "{key}: the metric names");
    for (name, t) in want {
        let row = rows.get(name).unwrap_or_else(|| panic!("no row for {name}"));
        let num = |s: &str| s.parse::<f64>().unwrap();
        assert_eq!(row[0].parse::<u64>().unwrap(), t["count"].as_u64().unwrap(), "{name} count");
        for (cell, key) in [(1, "last"), (2, "min"), (3, "max")] {
            assert_eq!(num(&row[cell]), t[key].as_f64().unwrap(), "{name} {key}");
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("throughput: benchmark");
        return;
    }
    let size = std::env::var("BENCH_SIZE").unwrap_or_else(|_| "100M".into());
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let contenders = contenders();
    for frac in ["0.01", "0.30"] {
        let (log, truth) = generate(&size, frac);
        let bytes = std::fs::metadata(&log).unwrap().len() as f64;
        let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();
        let lines = t["lines"].as_f64().unwrap();
        // Warm the page cache, check correctness once.
        for c in &contenders {
            if let Some(key) = c.checked {
                let (_, table, _) = timed(&mut (c.make)(&log));
                verify(&table, &truth, key);
            }
        }
        let mut best = vec![Duration::MAX; contenders.len()];
        for _ in 0..rounds {
            for (i, c) in contenders.iter().enumerate() {
                let (d, _, _) = timed(&mut (c.make)(&log));
                best[i] = best[i].min(d);
            }
        }
        println!(
            "\n{} MB, {} % metric lines, best of {rounds} (result verified against the truth file)",
            bytes / 1e6,
            (frac.parse::<f64>().unwrap() * 100.0).round()
        );
        // The names' column as wide as the longest (`BENCH_BINS` names lengthen them).
        let width = contenders.iter().map(|c| c.name.chars().count()).max().unwrap_or(0).max(44);
        println!("{:<width$} {:>9} {:>11} {:>9}", "", "MB/s", "Mlines/s", "vs grep");
        let base = best[0].as_secs_f64();
        for (c, d) in contenders.iter().zip(&best) {
            let s = d.as_secs_f64();
            println!("{:<width$} {:>9.0} {:>11.2} {:>8.2}x", c.name, bytes / 1e6 / s, lines / 1e6 / s, base / s);
        }
    }
    // Peak memory on a 1 GB stream: the 30 % log ten times through stdin.
    let (log, _) = generate(&size, "0.30");
    for (bin, path) in binaries() {
        let cat = format!("for i in 1 2 3 4 5 6 7 8 9 10; do cat '{}'; done", log.display());
        let mut feeder = Command::new("sh").arg("-c").arg(&cat).stdout(Stdio::piped()).spawn().expect("sh");
        let out = Command::new(path)
            .args(["run", "--stats", "-"])
            .stdin(feeder.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("trialtail");
        let _ = feeder.wait();
        let stats = String::from_utf8_lossy(&out.stderr);
        let field = |k: &str| stats.split_whitespace().find_map(|f| f.strip_prefix(k)).unwrap_or("?").to_string();
        let rss: f64 = field("peak_rss_bytes=").parse().unwrap_or(f64::NAN);
        let name = if bin.is_empty() { String::new() } else { format!("{bin}: ") };
        println!(
            "\n{name}peak RSS of `trialtail run -` over {:.1} GB ({} lines): {:.1} MiB",
            field("bytes=").parse::<f64>().unwrap_or(f64::NAN) / 1e9,
            field("lines="),
            rss / (1 << 20) as f64
        );
    }
}
