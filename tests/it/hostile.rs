//! Hostile inputs and broken peers: each test pins one way a log, a signal or a peer could exhaust memory or
//! hang trialtail, at the smallest size that shows it. Memory is the peak RSS of the child process
//! (`support::rss`), measured against the same binary's footprint on a one-line input; hangs are bounded by a
//! timeout in the test.

use std::fs;
use std::time::Instant;

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
    fs::write(&path, format!("{log}loss=0.5\n")).unwrap();
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
