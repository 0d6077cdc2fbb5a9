//! The soak test: `trialtail run --follow` on a log that is written, rotated (rename + create), copied and
//! truncated, and truncated, at random, while `/metrics` is scraped and attacked with garbage, cut and slow
//! requests. Every line is `seq=N` with a unique N, so what was read is checked line by line against what was
//! written: no line read twice, and no line lost except those a truncation may take before they were read (the
//! documented copytruncate race; the writer records which lines were in the file at each truncation). Memory
//! must stay flat: the peak RSS after the first third may grow by at most 4 MiB.
//!
//! `TRIALTAIL_SOAK_SECONDS` sets its length: 8 s in the suite, a few minutes on demand
//! (`TRIALTAIL_SOAK_SECONDS=180 cargo test --test it soak:: -- --nocapture`); the seed is printed and
//! `TRIALTAIL_SOAK_SEED` replays the writer's choices.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{free_addr, get, wait_for};

/// A small deterministic generator (xorshift64*), so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn rss_kib(pid: u32, field: &str) -> i64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What the writer did: the last N written, and the Ns a truncation may have taken unread.
struct Written {
    last: u64,
    at_risk: HashSet<u64>,
    rotations: u32,
    copytruncates: u32,
    truncates: u32,
}

/// Whether trialtail at `addr` has read line `n` (its latest `seq` is `n`), waiting at most 2 s.
fn caught_up(addr: SocketAddr, n: u64) -> bool {
    let want = format!("trialtail_metric_latest{{metric=\"seq\"}} {n}\n");
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if get(addr, "/metrics", None).is_ok_and(|r| r.body.contains(&want)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Writes `seq=N` lines to `log` until `stop`, with random rotations and truncations; returns what it did.
/// Before most truncations it waits until trialtail has read everything (then no line is at risk); before the
/// others, the lines in the file are at risk.
fn write(log: &Path, addr: SocketAddr, seed: u64, stop: Arc<AtomicBool>) -> Written {
    let mut rng = Rng(seed | 1);
    let mut w = Written { last: 0, at_risk: HashSet::new(), rotations: 0, copytruncates: 0, truncates: 0 };
    let mut in_file: Vec<u64> = Vec::new();
    let mut file = OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match rng.below(100) {
            // Mostly: a batch of lines, some written in two pieces.
            0..=91 => {
                let mut batch = String::new();
                for _ in 0..=rng.below(60) {
                    n += 1;
                    batch.push_str(&format!("step {} seq={n}\n", rng.below(1000)));
                    in_file.push(n);
                }
                let bytes = batch.as_bytes();
                let cut = rng.below(bytes.len() as u64) as usize;
                file.write_all(&bytes[..cut]).unwrap();
                if rng.below(4) == 0 {
                    std::thread::sleep(Duration::from_millis(rng.below(5)));
                }
                file.write_all(&bytes[cut..]).unwrap();
            }
            // Rotation by rename: the old file keeps what it has, the writer goes on in a new one.
            92..=94 => {
                let _ = fs::rename(log, log.with_extension("log.1"));
                file = OpenOptions::new().create(true).append(true).open(log).unwrap();
                in_file.clear();
                w.rotations += 1;
            }
            // copytruncate, as logrotate does it: a copy, then the truncation (lines not read yet may be lost).
            95..=97 => {
                let read = rng.below(4) > 0 && caught_up(addr, n);
                let _ = fs::copy(log, log.with_extension("log.copy"));
                file.set_len(0).unwrap();
                w.at_risk.extend(in_file.drain(..).filter(|_| !read));
                w.copytruncates += 1;
            }
            // A training that starts its log over.
            _ => {
                let read = rng.below(4) > 0 && caught_up(addr, n);
                file.set_len(0).unwrap();
                w.at_risk.extend(in_file.drain(..).filter(|_| !read));
                w.truncates += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(8000)));
    }
    w.last = n;
    w
}

/// Scrapes `/metrics` until `stop`; returns (good scrapes, failed ones).
fn scrape(addr: SocketAddr, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (mut good, mut bad) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        match get(addr, "/metrics", None) {
            Ok(r) if r.status == 200 && r.body.contains("trialtail_read_lines_total") => good += 1,
            _ => bad += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (good, bad)
}

/// Attacks `/metrics` until `stop` with bounded, self-ending connections: garbage, a request cut in the middle,
/// an oversized header, a slow request that gives up. Returns how many it made.
fn attack(addr: SocketAddr, seed: u64, stop: Arc<AtomicBool>, made: Arc<AtomicU64>) {
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = match rng.below(4) {
            0 => s.write_all(&(0..rng.below(2048)).map(|_| rng.next() as u8).collect::<Vec<_>>()),
            1 => s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAcc"),
            2 => s.write_all(format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 << 10)).as_bytes()),
            _ => {
                let _ = s.write_all(b"GET /met");
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                s.write_all(b"rics HTTP/1.0\r\n\r\n")
            }
        };
        let mut sink = [0u8; 4096];
        let _ = s.read(&mut sink);
        made.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn following_a_log_written_rotated_and_truncated_at_random_while_metrics_is_attacked() {
    let seconds = std::env::var("TRIALTAIL_SOAK_SECONDS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(8);
    let seed = std::env::var("TRIALTAIL_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
    });
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("train.log");
    let out = t.path().join("out.jsonl");
    let addr = free_addr();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(["run", "--follow", "--listen", &addr.to_string(), "--linger", "0", "--output", "json"])
        .args(["-m", "seq", "--output-file", out.to_str().unwrap(), log.to_str().unwrap()])
        .env_remove("TRIALTAIL_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(File::create(t.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("/healthz", || get(addr, "/healthz", None).ok().filter(|r| r.status == 200));

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || write(&log, addr, seed, stop))
    };
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || scrape(addr, stop))
    };
    let attacks = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, made) = (stop.clone(), attacks.clone());
            std::thread::spawn(move || attack(addr, seed.wrapping_add(i), stop, made))
        })
        .collect();
    let started = Instant::now();
    let run = Duration::from_secs(seconds);
    std::thread::sleep(run / 3);
    let early_peak = rss_kib(pid, "VmHWM:");
    let mut rss = Vec::new();
    while started.elapsed() < run {
        rss.push(rss_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    let (good, bad) = scraper.join().unwrap();
    for a in attackers {
        a.join().unwrap();
    }
    // What was written last is read before the end: the last line shows in a scrape.
    let last = format!("trialtail_metric_latest{{metric=\"seq\"}} {}\n", written.last);
    let caught_up = Instant::now();
    while !get(addr, "/metrics", None).is_ok_and(|r| r.body.contains(&last))
        && caught_up.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let late_peak = rss_kib(pid, "VmHWM:");
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), rustix::process::Signal::TERM)
        .unwrap();
    let status = child.wait().unwrap();
    let stderr = fs::read_to_string(t.path().join("stderr")).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{stderr}");

    let mut seen = HashSet::new();
    let mut twice = Vec::new();
    for line in fs::read_to_string(&out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let n: u64 = v["raw"].as_str().unwrap().parse().unwrap();
        if !seen.insert(n) {
            twice.push(n);
        }
    }
    let lost: Vec<u64> = (1..=written.last).filter(|n| !seen.contains(n) && !written.at_risk.contains(n)).collect();
    let lost_at_risk = written.at_risk.iter().filter(|n| !seen.contains(n)).count();
    eprintln!(
        "soak {seconds} s (seed {seed}): {} lines written, {} rotations, {} copytruncates, {} truncates; {} read, {} \
         lost to truncation races (of {} at risk); scrapes {good} good / {bad} failed, {} attack connections; RSS \
         peak {early_peak} KiB after a third, {late_peak} KiB at the end, {}..{} KiB sampled",
        written.last,
        written.rotations,
        written.copytruncates,
        written.truncates,
        seen.len(),
        lost_at_risk,
        written.at_risk.len(),
        attacks.load(Ordering::Relaxed),
        rss.iter().min().unwrap_or(&0),
        rss.iter().max().unwrap_or(&0),
    );
    assert!(twice.is_empty(), "read twice: {:?}", &twice[..twice.len().min(20)]);
    assert!(lost.is_empty(), "lost outside a truncation: {:?} (seed {seed})", &lost[..lost.len().min(20)]);
    assert!(good > 0 && bad <= good / 10, "scrapes: {good} good, {bad} failed");
    assert!(late_peak - early_peak <= 4 * 1024, "memory grew: {early_peak} KiB → {late_peak} KiB");
}
