//! The live sources as a user meets them, with real files and real processes: `--follow` across rotation,
//! copytruncate, deletion and late creation; signals; a wrapped command's exit code and output.
//!
//! Fixtures are written into a fresh temp dir per test. Nothing sleeps for a fixed time: every wait polls a
//! condition every 2 ms with a generous timeout, so a loaded machine only makes a test slower, never red.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How long any condition may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `cond` every 2 ms until it holds; panics with `what` after [`PATIENCE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A running `trialtail` whose stdout lines are collected as they come.
struct Running {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    err: Arc<Mutex<String>>,
    err_reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trialtail"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("TRIALTAIL_LOG")
            .spawn()
            .expect("spawn trialtail");
        let out = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        let mut err_pipe = child.stderr.take().expect("stderr");
        let err = Arc::new(Mutex::new(String::new()));
        let err_sink = err.clone();
        let err_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                err_sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running { child, stdin, lines, reader: Some(reader), err, err_reader: Some(err_reader) }
    }

    /// Follows `log` with JSON output and the classic presets (`katib`, `tf-step`: every `name=value` is read
    /// at once, which these tests of following need; the recognition while following is pinned by
    /// `follow_recognises_a_format_that_first_appears_late`); `extra` flags come first.
    fn follow(log: &Path, extra: &[&str]) -> Running {
        let mut args = vec!["run", "--follow", "--output", "json", "--preset", "katib,tf-step"];
        args.extend_from_slice(extra);
        args.push(log.to_str().unwrap());
        Running::start(&args)
    }

    /// The `raw` values of the JSON lines so far.
    fn values(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().map(|l| raw_value(l)).collect()
    }

    /// Waits until `n` observations were printed and returns them.
    fn wait_values(&self, n: usize) -> Vec<String> {
        wait_until(&format!("{n} observations"), || self.lines.lock().unwrap().len() >= n);
        self.values()
    }

    fn signal(&self, sig: Signal) {
        kill_process(Pid::from_child(&self.child), sig).expect("kill");
    }

    /// Waits for the exit; returns the status, every stdout line and stderr.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let status = self.child.wait().expect("wait");
        for r in [self.reader.take(), self.err_reader.take()].into_iter().flatten() {
            r.join().expect("reader");
        }
        let err = self.err.lock().unwrap().clone();
        let lines = self.lines.lock().unwrap().clone();
        (status, lines, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test must not leave a follower behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raw_value(json_line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json_line).expect("a JSON line");
    v["raw"].as_str().expect("raw").to_string()
}

fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
}

/// `--stats`' counter `name` in stderr.
fn stat(stderr: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    let field = stderr.split_whitespace().find_map(|w| w.strip_prefix(&key)).unwrap_or_else(|| panic!("{stderr}"));
    field.parse().unwrap()
}

/// Ends a follow with SIGTERM and checks it exited 0; returns the values and stderr.
fn stop(t: Running) -> (Vec<String>, String) {
    t.signal(Signal::TERM);
    let (status, lines, err) = t.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    (lines.iter().map(|l| raw_value(l)).collect(), err)
}

/// A temp dir with `train.log` holding `history`, followed with `--stats` until `seen` observations were made.
fn following(history: &[u8], seen: usize) -> (tempfile::TempDir, std::path::PathBuf, Running) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train.log");
    append(&log, history);
    let t = Running::follow(&log, &["--stats"]);
    t.wait_values(seen);
    (dir, log, t)
}

/// Waits for exactly the values `want`, stops with SIGTERM, checks nothing more came; returns stderr.
fn expect_then_stop(t: Running, want: &[&str]) -> String {
    assert_eq!(t.wait_values(want.len()), want);
    let (values, err) = stop(t);
    assert_eq!(values, want, "nothing more after the stop");
    err
}

#[test]
fn follow_waits_for_a_file_created_late_and_completes_a_partial_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train.log");
    let t = Running::follow(&log, &["--stats"]);
    append(&log, b"loss=1\nloss=0.");
    assert_eq!(t.wait_values(1), ["1"]);
    append(&log, b"25\r\n");
    // CRLF is stripped by the rules, the partial line completed.
    let err = expect_then_stop(t, &["1", "0.25"]);
    assert_eq!(stat(&err, "opens"), 1);
}

/// Following uses the same recognition as reading a file: a format that first appears late is read when it
/// appears, a weak pair once its value changes, and what was printed once is a parameter at the end.
#[test]
fn follow_recognises_a_format_that_first_appears_late() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train.log");
    append(&log, b"lr=0.01 batch_size=64\nI0000 starting\n");
    let t = Running::start(&["run", "--follow", "--output", "json", log.to_str().unwrap()]);
    let mut noise = Vec::new();
    for i in 0..5000 {
        noise.extend_from_slice(format!("I0000 step {i}: nothing to see\n").as_bytes());
    }
    append(&log, &noise);
    append(&log, b"12/12 - 1s - 9ms/step - accuracy: 0.5 - loss: 0.9\n");
    assert_eq!(t.wait_values(2), ["0.5", "0.9"]);
    append(&log, b"validation val_acc=0.7 done\n");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(t.values().len(), 2, "a weak pair is held until its value changes");
    append(&log, b"validation val_acc=0.8 done\n");
    assert_eq!(t.wait_values(4), ["0.5", "0.9", "0.7", "0.8"]);
    t.signal(Signal::TERM);
    let (status, lines, err) = t.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    let params: Vec<&String> = lines.iter().filter(|l| l.contains("\"kind\":\"param\"")).collect();
    assert_eq!(params.len(), 2, "{lines:?}");
    assert!(params[0].contains("\"name\":\"lr\"") && params[1].contains("\"name\":\"batch_size\""), "{params:?}");
}

#[test]
fn follow_survives_rotation_by_rename_and_create() {
    let (dir, log, t) = following(b"loss=1\n", 1);
    let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, dir.path().join("train.log.1")).unwrap();
    // The writer has not reopened yet: this goes to the rotated file, which is drained before switching.
    writer.write_all(b"loss=2\n").unwrap();
    append(&log, b"loss=3\n");
    assert_eq!(t.wait_values(3), ["1", "2", "3"]);
    append(&log, b"loss=4\n");
    let err = expect_then_stop(t, &["1", "2", "3", "4"]);
    assert_eq!((stat(&err, "opens"), stat(&err, "rotations")), (2, 1));
}

#[test]
fn follow_survives_delete_and_recreate() {
    let (_dir, log, t) = following(b"loss=1\n", 1);
    std::fs::remove_file(&log).unwrap();
    append(&log, b"loss=2\n");
    let err = expect_then_stop(t, &["1", "2"]);
    assert_eq!(stat(&err, "opens"), 2);
}

#[test]
fn follow_copytruncate_reads_no_line_twice() {
    let (dir, log, t) = following(b"loss=1\nloss=2\n", 2);
    std::fs::copy(&log, dir.path().join("train.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, b"loss=3\n");
    let err = expect_then_stop(t, &["1", "2", "3"]);
    assert_eq!(stat(&err, "truncations"), 1);
}

#[test]
fn follow_cuts_a_long_line_and_survives_nul_and_invalid_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train.log");
    let t = Running::follow(&log, &["--stats", "--max-line-bytes", "1K"]);
    let mut bytes = b"\x00\xff\xfe loss=1\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 300_000));
    bytes.extend_from_slice(b" loss=9\n\xc3\x28 loss=2\n");
    append(&log, &bytes);
    let err = expect_then_stop(t, &["1", "2"]);
    assert_eq!(stat(&err, "too_long_lines"), 1);
}

#[test]
fn follow_from_end_skips_history() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train.log");
    append(&log, b"loss=1\n");
    let t = Running::follow(&log, &["--from-end", "--stats"]);
    wait_until("the file opened", || {
        // Appending before the open would make the line history; a few appends until one is seen.
        append(&log, b"loss=2\n");
        std::thread::sleep(Duration::from_millis(20));
        !t.values().is_empty()
    });
    let (values, _) = stop(t);
    assert!(!values.is_empty() && values.iter().all(|v| v == "2"), "{values:?}");
}

#[test]
fn until_idle_ends_a_quiet_follow_with_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train.log");
    append(&log, b"loss=1\nloss=0.5");
    let out = crate::trialtail(&["run", "--follow", "--until-idle", "200ms", log.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let table = crate::stdout(&out);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["loss", "2", "0.5", "0.5", "1", "-"], "the last unterminated line counts at the end");
}

#[test]
fn sigint_during_follow_drains_flushes_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train.log");
    append(&log, b"loss=1\n");
    let t = Running::start(&["run", "--follow", log.to_str().unwrap()]);
    // The table only comes at the end. The inotify thread starts after the signal handlers are installed: once
    // it runs, a signal is trialtail's to handle.
    let pid = t.child.id();
    wait_until("trialtail's watcher thread", || {
        std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| d.count() >= 2)
    });
    append(&log, b"loss=2\n");
    t.signal(Signal::INT);
    let (status, lines, err) = t.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["loss", "2", "2", "1", "2", "-"]);
}

/// Runs a wrapped `sh -c script`, output JSON to a file; returns the output and the JSON values.
fn wrap(script: &str) -> (std::process::Output, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = crate::trialtail(
        &[
            "run",
            "--preset",
            "katib,tf-step",
            "--output",
            "json",
            "--output-file",
            json.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
        None,
    );
    let text = std::fs::read_to_string(&json).unwrap();
    (out, text.lines().map(raw_value).collect())
}

#[test]
fn wrapped_command_output_passes_through_byte_exact_and_is_parsed() {
    let (out, values) = wrap(r"printf 'a\r\nloss=1\000\377\n'; printf 'acc=5\n' >&2; printf 'loss=2'; printf 'err'>&2");
    assert_eq!(out.stdout, b"a\r\nloss=1\x00\xff\nloss=2");
    assert_eq!(out.stderr, b"acc=5\nerr");
    assert_eq!(out.status.code(), Some(0));
    let mut sorted = values.clone();
    sorted.sort();
    assert_eq!(sorted, ["1", "2", "5"], "both streams parsed, the last lines without newline too");
}

#[test]
fn wrapped_command_exit_code_is_passed_on() {
    let (out, values) = wrap("echo loss=1; exit 7");
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(values, ["1"]);
}

#[test]
fn wrapped_command_killed_by_a_signal_exits_128_plus_n() {
    let (out, _) = wrap("kill -KILL $$");
    assert_eq!(out.status.code(), Some(137));
}

#[test]
fn wrapped_command_that_does_not_exist_exits_127() {
    let out = crate::trialtail(&["run", "--", "/nonexistent/python"], None);
    assert_eq!(out.status.code(), Some(127));
    assert!(crate::stderr(&out).contains("cannot run \"/nonexistent/python\""), "{}", crate::stderr(&out));
}

#[test]
fn sigterm_is_forwarded_to_the_wrapped_command_and_its_code_kept() {
    let t = Running::start(&[
        "run",
        "--",
        "sh",
        "-c",
        "trap 'echo loss=3; exit 3' TERM; echo ready; while :; do sleep 0.01; done",
    ]);
    wait_until("the command ready", || t.lines.lock().unwrap().first().is_some_and(|l| l == "ready"));
    t.signal(Signal::TERM);
    let (status, lines, err) = t.finish();
    assert_eq!(status.code(), Some(3), "{err}");
    assert_eq!(lines, ["ready", "loss=3"]);
    assert!(err.contains("loss "), "the summary goes to stderr: {err}");
}

#[test]
fn follow_polls_when_the_directory_does_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("later").join("train.log");
    let t = Running::follow(&log, &[]);
    std::fs::create_dir(dir.path().join("later")).unwrap();
    append(&log, b"loss=1\n");
    expect_then_stop(t, &["1"]);
}

#[test]
fn stdin_is_followed_live_and_a_signal_ends_it_with_exit_0() {
    let mut t = Running::start(&["run", "--output", "json", "--preset", "katib", "-"]);
    let mut stdin = t.stdin.take().expect("stdin");
    stdin.write_all(b"loss=1\n").unwrap();
    stdin.flush().unwrap();
    // Published while the pipe is still open; then a signal ends it.
    expect_then_stop(t, &["1"]);
    drop(stdin);
}

#[test]
fn a_second_signal_stops_a_long_drain_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train.log");
    // A backlog that takes a while to read: the two signals land while it is being read.
    let line = [b"x".repeat(99), b"\n".to_vec()].concat();
    let mut backlog = Vec::with_capacity(128 << 20);
    while backlog.len() < 128 << 20 {
        backlog.extend_from_slice(&line);
    }
    append(&log, &backlog);
    drop(backlog);
    let log = log.to_str().unwrap();
    let t = Running::start(&["run", "--follow", "--shutdown-grace", "5m", "--log-level", "info", log]);
    let pid = t.child.id();
    wait_until("trialtail's watcher thread", || {
        std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| d.count() >= 2)
    });
    t.signal(Signal::TERM);
    // Two signals sent back to back are one to a process that has not looked yet: wait for the first's drain.
    wait_until("the drain", || t.err.lock().unwrap().contains("stopping: reading what is readable"));
    t.signal(Signal::TERM);
    let (status, lines, err) = t.finish();
    assert_eq!(status.code(), Some(128 + 15), "{err}");
    assert!(lines.is_empty(), "no summary after a second signal");
    assert!(err.contains("stopped at once by a second signal 15"), "{err}");
}
