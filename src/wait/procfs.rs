//! Waiting for the training in a pod with a shared PID namespace, as Katib's collector does
//! (`pkg/metricscollector/v1beta1/common/pns.go`, `GetMainProcesses` and `WaitMainProcesses`).
//!
//! Once, at start, [`Scan`] lists the proc filesystem (an injectable root, so tests use fake trees): the
//! candidates are the processes whose parent is pid 0 (each container's first process), except pid 1 (the pause
//! container) and trialtail itself; a process that vanishes during the scan is skipped. The main pid is the
//! candidate whose command line contains `echo completed > <dir>`, else the first candidate.
//!
//! Then [`Waiter::poll`] is called every `-p` (it never sleeps or loops itself: no busy waiting, unlike Katib's
//! wait for the metrics file): when the main pid's `<root>/<pid>` is gone, `<dir>/<pid>.pid` decides – `completed`
//! means done, `early-stopped` means the training was stopped early, anything else (or no file) means the
//! training failed. With `-w true` every other candidate (an `istio-proxy`, say) must be gone too.
//!
//! Katib's `WaitPIDs` keeps waiting on `early-stopped` (its early stop runs beside the wait, in the same process):
//! a collector restarted after its earlier instance stopped the training would wait for a process that is gone,
//! until `-timeout` or forever. trialtail's own early stop never polls after it wrote the marker, so a marker
//! found here is always an earlier instance's: it ends the wait as [`Status::EarlyStopped`].

use std::fs;
use std::path::{Path, PathBuf};

/// The marker the training shell writes on success.
pub const COMPLETED: &str = "completed";
/// The marker written when trialtail stopped the training early.
pub const EARLY_STOPPED: &str = "early-stopped";

/// A process found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: u32,
    /// Its command line, NULs turned into spaces.
    pub cmdline: String,
}

/// The parent pid from the text of `/proc/<pid>/stat` (the field after the `)` that ends the command name).
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Every process under `root` as `(pid, ppid)`; processes that vanish while being read are skipped.
pub fn processes(root: &Path) -> std::io::Result<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some(ppid) = parse_ppid(&stat) {
            out.push((pid, ppid));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The children of `parent` under `root`.
pub fn children(root: &Path, parent: u32) -> Vec<u32> {
    processes(root).unwrap_or_default().into_iter().filter(|&(_, pp)| pp == parent).map(|(p, _)| p).collect()
}

/// The result of the start-up scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The training shell.
    pub main: u32,
    /// The other candidates (other containers' first processes).
    pub others: Vec<u32>,
}

/// Why the scan found nothing to wait for.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("cannot list {root}")]
    List {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no training process found in {root} (is shareProcessNamespace on?)")]
    NoCandidate { root: PathBuf },
}

/// Scans `root` once: candidates are ppid-0 processes except pid 1 and `self_pid`; the main one is chosen by
/// `echo completed > <dir>` in its command line, else it is the first.
pub fn scan(root: &Path, dir: &Path, self_pid: u32) -> Result<Scan, WaitError> {
    let procs = processes(root).map_err(|source| WaitError::List { root: root.to_owned(), source })?;
    let needle = format!("echo {COMPLETED} > {}", dir.display());
    let mut candidates = Vec::new();
    for (pid, ppid) in procs {
        if ppid != 0 || pid == 1 || pid == self_pid {
            continue;
        }
        // A process gone between the listing and this read is skipped.
        let Ok(raw) = fs::read(root.join(pid.to_string()).join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        candidates.push(Proc { pid, cmdline });
    }
    let main = candidates
        .iter()
        .find(|p| p.cmdline.contains(&needle))
        .or_else(|| candidates.first())
        .map(|p| p.pid)
        .ok_or_else(|| WaitError::NoCandidate { root: root.to_owned() })?;
    let others = candidates.iter().map(|p| p.pid).filter(|&p| p != main).collect();
    Ok(Scan { main, others })
}

/// Where the waiting stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Keep polling.
    Running,
    /// The training completed (and, with `-w true`, every other candidate is gone).
    Completed,
    /// The training is gone without a `completed` marker: the marker's content, `None` when there was none.
    Failed { marker: Option<String> },
    /// The training is gone and its marker says an earlier collector stopped it early.
    EarlyStopped,
}

/// The waiting state machine, stepped by [`Waiter::poll`].
#[derive(Debug, Clone)]
pub struct Waiter {
    root: PathBuf,
    dir: PathBuf,
    main: u32,
    others: Vec<u32>,
    main_done: bool,
}

impl Waiter {
    /// Waits for `main` (and `others` when non-empty: pass them only with `-w true`); markers are in `dir`.
    pub fn new(root: impl Into<PathBuf>, dir: impl Into<PathBuf>, main: u32, others: Vec<u32>) -> Self {
        Waiter { root: root.into(), dir: dir.into(), main, others, main_done: false }
    }

    /// The main pid.
    pub fn main(&self) -> u32 {
        self.main
    }

    /// The marker file of the main pid.
    pub fn marker(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.main))
    }

    fn alive(&self, pid: u32) -> bool {
        self.root.join(pid.to_string()).exists()
    }

    /// One check; never waits.
    pub fn poll(&mut self) -> Status {
        if !self.main_done {
            if self.alive(self.main) {
                return Status::Running;
            }
            let content = fs::read_to_string(self.marker()).ok();
            match content.as_deref().map(str::trim) {
                Some(COMPLETED) => self.main_done = true,
                Some(EARLY_STOPPED) => return Status::EarlyStopped,
                _ => return Status::Failed { marker: content },
            }
        }
        let root = self.root.clone();
        self.others.retain(|p| root.join(p.to_string()).exists());
        if self.others.is_empty() { Status::Completed } else { Status::Running }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_the_command_name() {
        assert_eq!(parse_ppid("42 (sh) S 0 42 42 0 -1"), Some(0));
        assert_eq!(parse_ppid("43 (weird ) 7 name) R 42 1 1"), Some(42));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn a_gone_training_with_the_early_stopped_marker_ends_the_wait() {
        let t = tempfile::tempdir().unwrap();
        let mut w = Waiter::new(t.path(), t.path(), 42, Vec::new());
        fs::create_dir(t.path().join("42")).unwrap();
        assert_eq!(w.poll(), Status::Running);
        fs::remove_dir(t.path().join("42")).unwrap();
        fs::write(t.path().join("42.pid"), "early-stopped\n").unwrap();
        assert_eq!(w.poll(), Status::EarlyStopped);
        fs::write(t.path().join("42.pid"), "completed").unwrap();
        assert_eq!(w.poll(), Status::Completed);
    }
}
