//! Peak memory of one child process: the test binary runs itself again as a measuring parent
//! ([`measured_child`], an ignored test) that starts the command, waits for it and reads `RUSAGE_CHILDREN` –
//! the peak RSS of that one child, since the measuring parent has no other.

use std::path::Path;
use std::process::{Command, Stdio};

const ARGV: &str = "TRIALTAIL_TEST_RSS_ARGV";
const OUT: &str = "TRIALTAIL_TEST_RSS_OUT";

/// What a measured run gave: its exit code, stdout, stderr and peak RSS in KiB.
#[derive(Debug)]
pub struct Measured {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub peak_kib: i64,
}

/// Runs trialtail with `args` (stdin empty, the environment as this process's) and measures its peak RSS.
pub fn peak_rss(args: &[&str]) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "support::rss::measured_child", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(ARGV, serde_json::to_string(args).expect("args as JSON"))
        .env(OUT, dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run the measuring parent");
    let said = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> Option<i64> {
        said.lines().find_map(|l| l.split_once(key)).and_then(|(_, v)| v.trim().parse().ok())
    };
    let peak_kib = field("measured peak KiB: ")
        .unwrap_or_else(|| panic!("no measurement in:\n{said}\n{}", String::from_utf8_lossy(&out.stderr)));
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    Measured {
        code: field("measured exit: ").map(|c| c as i32),
        stdout: read("stdout"),
        stderr: read("stderr"),
        peak_kib,
    }
}

/// The measuring parent: run by [`peak_rss`] in a process of its own.
#[test]
#[ignore = "the measuring parent of support::rss::peak_rss, run in a process of its own"]
fn measured_child() {
    let Ok(argv) = std::env::var(ARGV) else { return };
    let args: Vec<String> = serde_json::from_str(&argv).expect("args");
    let dir = std::env::var(OUT).expect("output dir");
    let file = |name: &str| std::fs::File::create(Path::new(&dir).join(name)).expect("output file");
    let status = Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(&args)
        .env_remove("TRIALTAIL_LOG")
        .stdin(Stdio::null())
        .stdout(file("stdout"))
        .stderr(file("stderr"))
        .status()
        .expect("spawn trialtail");
    let peak = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).expect("rusage").max_rss();
    println!("measured exit: {}", status.code().unwrap_or(-1));
    println!("measured peak KiB: {peak}");
}
