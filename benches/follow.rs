//! Follow-mode latency and idle cost of `trialtail run --follow`.
//!
//! `cargo bench --bench follow` runs the real binary on a fresh file in a temp dir with `--output json`, then:
//! - **latency**: appends one metric line at a time (through a held file descriptor, as a training process
//!   does) and times from just before the write to the moment its JSON line arrives on trialtail's stdout;
//!   `BENCH_SAMPLES` samples (default 1000), a few milliseconds apart, reported as p50/p90/p99/max;
//! - **idle CPU**: leaves the file quiet for `BENCH_IDLE_SECS` seconds (default 10) and reads the process's CPU
//!   time before and after: utime+stime from `/proc/<pid>/stat` (10 ms ticks) and the sum of
//!   `/proc/<pid>/task/*/schedstat` (nanoseconds, every thread).
//!
//! Then the same for a followed directory of TensorBoard event files (`trialtail run --follow --output json DIR/`):
//! one `Event` record with one scalar appended at a time to an event file in a run directory, through a held file
//! descriptor, as a `SummaryWriter` flushing each scalar does.
//!
//! Targets (both): p50 ≤ 5 ms, p99 ≤ 50 ms, idle CPU ≤ 0.01 s per 10 s.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use trialtail::source::tfevents::{proto, record};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime+stime in seconds (clock ticks of 10 ms on Linux).
fn stat_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

/// CPU time of every thread in seconds, from schedstat (nanoseconds).
fn schedstat_cpu(pid: u32) -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What is appended: a text line, or an event record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Events,
}

/// One scalar `loss` event, framed as a record.
fn record(step: i64, value: f32) -> Vec<u8> {
    let v = proto::summary::Value {
        tag: "loss".into(),
        value: Some(proto::summary::value::Value::SimpleValue(value)),
        ..Default::default()
    };
    let e = proto::Event {
        wall_time: 1.7e9 + step as f64,
        step,
        what: Some(proto::event::What::Summary(proto::Summary { value: vec![v] })),
        ..Default::default()
    };
    let mut out = Vec::new();
    record::frame(&e.encode_to_vec(), &mut out);
    out
}

fn main() {
    measure(Kind::Text);
    measure(Kind::Events);
}

fn measure(kind: Kind) {
    let samples = env_or("BENCH_SAMPLES", 1000) as usize;
    let idle_secs = env_or("BENCH_IDLE_SECS", 10);
    let dir = tempfile::tempdir().expect("temp dir");
    let (target, log) = match kind {
        Kind::Text => (dir.path().join("train.log"), dir.path().join("train.log")),
        Kind::Events => {
            std::fs::create_dir(dir.path().join("train")).expect("run dir");
            (dir.path().to_path_buf(), dir.path().join("train/events.out.tfevents.1700000000.host"))
        }
    };
    let mut writer = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("create log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(["run", "--follow", "--output", "json"])
        .arg(&target)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env_remove("TRIALTAIL_LOG")
        .spawn()
        .expect("spawn trialtail");
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();

    // Warm up: the first observation also proves the follower is running.
    match kind {
        Kind::Text => writer.write_all(b"loss=0\n").expect("write"),
        Kind::Events => writer.write_all(&record(0, 0.0)).expect("write"),
    }
    out.read_line(&mut line).expect("read");

    let mut lat = Vec::with_capacity(samples);
    for i in 1..=samples {
        line.clear();
        let bytes = match kind {
            Kind::Text => format!("epoch {i}: loss={i}.5 accuracy=0.{i}\n").into_bytes(),
            Kind::Events => record(i as i64, i as f32 + 0.5),
        };
        let t0 = Instant::now();
        writer.write_all(&bytes).expect("write");
        out.read_line(&mut line).expect("read");
        lat.push(t0.elapsed());
        assert!(line.contains(&format!("\"raw\":\"{i}.5\"")), "unexpected {line}");
        if kind == Kind::Text {
            line.clear();
            out.read_line(&mut line).expect("read accuracy");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let what = if kind == Kind::Text { "a followed file" } else { "a followed event directory" };
    println!(
        "{what}, latency over {samples} appends: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  \
         (targets: p50 <= 5, p99 <= 50)",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.90)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().expect("samples")),
    );

    let (stat0, sched0) = (stat_cpu(pid), schedstat_cpu(pid));
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (stat1, sched1) = (stat_cpu(pid), schedstat_cpu(pid));
    println!(
        "{what}, idle CPU over {idle_secs} s: utime+stime {:.3} s, schedstat {:.6} s  \
         (target <= 0.01 s per 10 s)",
        stat1 - stat0,
        sched1 - sched0,
    );
    let _ = child.kill();
    let _ = child.wait();
}
