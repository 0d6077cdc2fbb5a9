//! Reading TensorBoard event files: `trialtail run DIR` against the `tensorboard` package's own
//! `EventAccumulator` (what Katib's TensorFlowEvent collector reads with), measured in the same run.
//!
//! `cargo bench --bench tfevents` generates the large event directory once (`tests/tfevents/make_fixtures.py
//! large`: 1,000,000 scalar events in 8 files across 4 runs, written by the `tensorboard` package's
//! `EventFileWriter`; `simple_value`, `float_val` and `tensor_content` scalars; cached in
//! `target/bench-data/tfevents-large/`), then, interleaved and `BENCH_ROUNDS` times each (default 3):
//! - `trialtail run --stats DIR` (the table, every scalar an observation), checked to observe every event;
//! - `tests/tfevents/bench_accumulator.py DIR`: one `EventAccumulator(file, size_guidance=0).Reload()` per file,
//!   as Katib's `tfevent_loader.py` makes them (TensorBoard's pure-Python record reader: the light venv has no
//!   TensorFlow; `BENCH_TF=real` uses TensorFlow's C++ reader where TensorFlow is installed).
//!
//! It prints best-of-N records/s and MB/s per CPU second (user + system time of each process, which a busy
//! machine disturbs less than wall time; trialtail's includes its start-up, the accumulator's process its imports and
//! a counting pass, so its wall time around the loading alone is printed too), the ratios, and peak RSS
//! (trialtail's `--stats`, the accumulator's `ru_maxrss`). `BENCH_PYTHON` names a Python with the packages of
//! `tests/tfevents/requirements-ci.txt` (default `python3`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> String {
    std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The large set, generated once.
fn data() -> PathBuf {
    let dir = root().join("target/bench-data/tfevents-large");
    let done = dir.join(".complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("generating {} (about 30 s) …", dir.display());
        let status = Command::new(python())
            .arg(root().join("tests/tfevents/make_fixtures.py"))
            .args(["large"])
            .arg(&dir)
            .args(["--no-expected", "--jobs", "2"])
            .status()
            .expect("BENCH_PYTHON runs tests/tfevents/make_fixtures.py");
        assert!(
            status.success(),
            "make_fixtures.py large failed (BENCH_PYTHON needs tests/tfevents/requirements-ci.txt)"
        );
        std::fs::write(&done, b"").unwrap();
    }
    dir
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.split_whitespace().find_map(|f| f.strip_prefix(key)).unwrap_or("?")
}

/// CPU time (user + system) of all reaped children so far.
fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

/// One `trialtail run --stats` over the directory: CPU time, peak RSS, observations.
fn trialtail(dir: &Path) -> (Duration, f64, u64) {
    let before = children_cpu();
    let out = Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(["run", "--stats", "--no-progress"])
        .arg(dir)
        .output()
        .expect("run trialtail");
    let took = children_cpu() - before;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats = String::from_utf8_lossy(&out.stderr);
    let rss: f64 = field(&stats, "peak_rss_bytes=").parse().unwrap_or(f64::NAN);
    let observations: u64 = field(&stats, "observations=").parse().unwrap_or(0);
    (took, rss / (1 << 20) as f64, observations)
}

/// One accumulator run: its own JSON report, and its process's CPU time.
fn accumulator(dir: &Path) -> (serde_json::Value, Duration) {
    let before = children_cpu();
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/tfevents/bench_accumulator.py")).arg(dir);
    if std::env::var("BENCH_TF").is_ok_and(|v| v == "real") {
        cmd.args(["--tf", "real"]);
    }
    let out = cmd.output().expect("BENCH_PYTHON runs bench_accumulator.py");
    let cpu = children_cpu() - before;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).expect("bench_accumulator.py prints JSON"), cpu)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("tfevents: benchmark");
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let dir = data();
    let (mut best_tt, mut rss_tt) = (Duration::MAX, 0f64);
    let (mut best_acc, mut best_acc_wall, mut last_acc) = (f64::MAX, f64::MAX, serde_json::Value::Null);
    for _ in 0..rounds {
        let (took, rss, observations) = trialtail(&dir);
        assert_eq!(observations, 1_000_000, "every scalar event observed");
        if took < best_tt {
            (best_tt, rss_tt) = (took, rss);
        }
        let (acc, cpu) = accumulator(&dir);
        assert_eq!(acc["values_kept"].as_u64(), Some(1_000_000), "the accumulator keeps every scalar too");
        best_acc_wall = best_acc_wall.min(acc["seconds"].as_f64().unwrap());
        if cpu.as_secs_f64() < best_acc {
            best_acc = cpu.as_secs_f64();
            last_acc = acc;
        }
    }
    let records = last_acc["records"].as_f64().unwrap();
    let bytes = last_acc["bytes"].as_f64().unwrap();
    let tt = best_tt.as_secs_f64();
    println!("\n{} event files, {:.1} MB, {} records; best of {rounds}", last_acc["files"], bytes / 1e6, records);
    println!("{:<52} {:>8} {:>12} {:>8} {:>10}", "per CPU second", "seconds", "records/s", "MB/s", "peak RSS");
    println!(
        "{:<52} {:>8.3} {:>12.0} {:>8.1} {:>6.1} MiB",
        "trialtail run DIR",
        tt,
        records / tt,
        bytes / 1e6 / tt,
        rss_tt
    );
    let name = format!("EventAccumulator.Reload ({})", last_acc["reader"].as_str().unwrap_or("?"));
    println!(
        "{:<52} {:>8.3} {:>12.0} {:>8.1} {:>6.1} MiB",
        name,
        best_acc,
        records / best_acc,
        bytes / 1e6 / best_acc,
        last_acc["peak_rss_MiB"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "{:<52} {:>8.3} {:>12.0} {:>8.1}   (wall time around Reload alone)",
        "EventAccumulator.Reload, its own timer",
        best_acc_wall,
        records / best_acc_wall,
        bytes / 1e6 / best_acc_wall
    );
    println!(
        "trialtail is {:.0}x the accumulator's speed per CPU second ({:.0}x against its own timer)",
        best_acc / tt,
        best_acc_wall / tt
    );
}
