//! Katib's own code for the tests: the oracle (Katib's `CollectObservationLog`), and Katib's real DB manager on a
//! throwaway PostgreSQL, built and started by `tests/katib/rig.sh` from Katib's published Go module.
//!
//! Without Go (or PostgreSQL) the tests that need them fail when `CI` is set and skip with a message otherwise.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The rig's binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    pub oracle: PathBuf,
    pub dbclient: PathBuf,
}

fn rig_script() -> PathBuf {
    crate::root().join("tests/katib/rig.sh")
}

fn unavailable(what: &str, detail: &str) -> Option<Bins> {
    if std::env::var_os("CI").is_some() {
        panic!("{what} and CI is set: Katib's own code must judge in CI\n{detail}");
    }
    eprintln!("SKIPPED: {what} (tests/katib/rig.sh; with CI set this fails)\n{detail}");
    None
}

/// Builds the rig's binaries once per test process (cached by version on disk: later runs take milliseconds).
pub fn bins() -> Option<Bins> {
    static BINS: OnceLock<Option<Bins>> = OnceLock::new();
    BINS.get_or_init(|| {
        let out = match Command::new("bash").arg(rig_script()).arg("build").stdin(Stdio::null()).output() {
            Ok(out) => out,
            Err(e) => return unavailable("bash cannot run tests/katib/rig.sh", &e.to_string()),
        };
        if !out.status.success() {
            return unavailable(
                "Katib's oracle could not be built (is Go installed?)",
                &String::from_utf8_lossy(&out.stderr),
            );
        }
        let env = super::env_lines(&String::from_utf8_lossy(&out.stdout));
        Some(Bins { oracle: env["ORACLE"].clone().into(), dbclient: env["DBCLIENT"].clone().into() })
    })
    .clone()
}

/// Katib's DB manager on PostgreSQL, stopped (by PID) when dropped.
pub struct Rig {
    pub addr: String,
    dir: PathBuf,
    pub bins: Bins,
}

impl Rig {
    /// Starts PostgreSQL and `katib-db-manager` on loopback (about 10 s).
    pub fn start() -> Option<Rig> {
        let bins = bins()?;
        let out = Command::new("bash").arg(rig_script()).arg("start").stdin(Stdio::null()).output().ok()?;
        if !out.status.success() {
            let detail = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            unavailable("Katib's DB manager rig did not start (PostgreSQL installed?)", &detail)?;
            return None;
        }
        let env = super::env_lines(&String::from_utf8_lossy(&out.stdout));
        Some(Rig { addr: env["KATIB_DB_MANAGER_ADDR"].clone(), dir: env["KATIB_RIG_DIR"].clone().into(), bins })
    }

    /// Reports `rows` for `trial` with Katib's own client, in chunks of `chunk` rows; `Err` with the DB manager's
    /// refusal.
    pub fn report_as_katib(&self, trial: &str, rows: &[Row], chunk: usize) -> Result<(), String> {
        let lines: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        let mut child = Command::new(&self.bins.dbclient)
            .args(["-addr", &self.addr, "report", "-trial", trial, "-chunk", &chunk.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dbclient");
        child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }

    /// Every row stored for `trial` and `metric`, with Katib's own client (`GetObservationLog`).
    pub fn rows(&self, trial: &str, metric: &str) -> Vec<Row> {
        let out = Command::new(&self.bins.dbclient)
            .args(["-addr", &self.addr, "get", "-trial", trial, "-metric", metric])
            .output()
            .expect("run dbclient get");
        assert!(out.status.success(), "dbclient get: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a row")).collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(rig_script()).arg("stop").arg(&self.dir).output();
    }
}

/// One case for the oracle's batch mode (`tests/katib/README.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub metrics: Vec<String>,
    #[serde(default)]
    pub filters: Vec<String>,
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_b64: Option<String>,
}

impl Case {
    /// The case's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.content, &self.content_b64) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).expect("content_b64"),
            (None, None) => Vec::new(),
        }
    }

    /// The same case with other content.
    pub fn with_bytes(&self, id: String, bytes: &[u8]) -> Case {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        Case { id, content: None, content_b64: Some(b64), ..self.clone() }
    }
}

/// A row as Katib reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub value: String,
    pub time_stamp: String,
    /// The exact bytes when the name is not UTF-8 (the oracle writes U+FFFD per bad byte in `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_b64: Option<String>,
    /// The exact bytes when the value is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
}

impl Row {
    pub fn new(name: &str, value: &str, time_stamp: &str) -> Row {
        Row { name: name.into(), value: value.into(), time_stamp: time_stamp.into(), name_b64: None, value_b64: None }
    }
}

/// The oracle's answer to one case.
#[derive(Debug, Clone, Deserialize)]
pub struct Answer {
    pub id: serde_json::Value,
    #[serde(default)]
    pub rows: Vec<Row>,
    /// Katib returned an error (`kind` "error") or panicked (`kind` "panic"): it reports nothing.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    /// `proto.Marshal` refused the rows (a string that is not UTF-8): Katib's report fails, nothing is stored.
    #[serde(default)]
    pub wire_error: Option<String>,
}

/// Katib's answers to `cases`, from one oracle process.
pub fn oracle(oracle: &Path, cases: &[Case]) -> Vec<Answer> {
    let mut child = Command::new(oracle)
        .arg("-batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the oracle");
    let mut stdin = child.stdin.take().unwrap();
    let input: Vec<u8> = cases.iter().flat_map(|c| serde_json::to_vec(c).unwrap().into_iter().chain([b'\n'])).collect();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let answers: Vec<Answer> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.expect("read the oracle")).expect("an answer"))
        .collect();
    writer.join().unwrap().expect("feed the oracle");
    assert!(child.wait().unwrap().success(), "the oracle failed");
    assert_eq!(answers.len(), cases.len(), "one answer per case");
    for (case, answer) in cases.iter().zip(&answers) {
        assert_eq!(answer.id.as_str(), Some(case.id.as_str()), "answers in the order of the cases");
    }
    answers
}

/// Whether Katib's DB manager refuses this time: a year outside 0001–9999 (its `time.Parse` of RFC 3339 wants
/// four digits, and PostgreSQL no year 0).
pub fn year_out_of_range(time: &str) -> bool {
    let year = time.split('-').next().unwrap_or("");
    year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) || year == "0000"
}

/// The hand-written hard cases (`tests/katib/cases/hard.jsonl`).
pub fn hard_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(crate::root().join("tests/katib/cases/hard.jsonl")).expect("hard.jsonl");
    text.lines().map(|l| serde_json::from_str(l).expect("a case")).collect()
}

/// `count` cases from the seeded generator (`tests/katib/gen.py`).
pub fn generated_cases(seed: u64, count: usize) -> Vec<Case> {
    let out = Command::new("python3")
        .arg(crate::root().join("tests/katib/gen.py"))
        .args(["--seed", &seed.to_string(), "--count", &count.to_string()])
        .output()
        .expect("python3 runs tests/katib/gen.py");
    assert!(out.status.success(), "gen.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a case")).collect()
}
