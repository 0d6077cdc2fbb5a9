//! trialtail's integration tests, in one test binary.
//!
//! Each module pins one area: `golden` the example logs against recorded outputs and against what the training
//! processes recorded in memory, `katib` Katib's parsing contract, `cli` the command line's behaviour as a user
//! meets it, `plot` the pictures, `terminal` what a terminal shows and a pipe does not, `prom` the Prometheus
//! endpoint and Pushgateway against real Prometheus parts (helpers in `support`), `live` following files,
//! signals and wrapped commands, `sidecar` the native sidecar against a fake API server, `sidecar_katib` the
//! same with Katib's real DB manager for each collector kind, `webhook` the admission webhook over TLS,
//! `manifests` the Kubernetes manifests (typed, rendered by kustomize, cross-checked, their args run),
//! `monitoring` the alerts (promtool) and the dashboard's queries (a real Prometheus), `k8s` the install, the
//! webhook and the sidecar against a real kube-apiserver (`tests/k8s/`), `hostile` hostile inputs and broken
//! peers: what a log, a signal, one pod, a client or a peer can do (peak memory of a child, hangs bounded by the
//! test), `fuzz` proptest fuzzing of the line path, JSON lines
//! and Katib's arguments for a fixed time (`TRIALTAIL_FUZZ_SECONDS`), `soak` a follow under random rotation and
//! truncation while `/metrics` is scraped and attacked (`TRIALTAIL_SOAK_SECONDS`).

mod cli;
mod dropin;
mod fuzz;
mod golden;
mod hostile;
mod hostile_http;
mod k8s;
mod katib;
mod katib_db;
mod katib_oracle;
mod live;
mod manifests;
mod monitoring;
mod page;
mod plot;
mod prom;
mod recognise;
mod sidecar;
mod sidecar_katib;
mod soak;
mod support;
mod terminal;
mod tfevents;
mod webhook;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The project's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// An example log's path.
pub fn example(name: &str) -> PathBuf {
    root().join("examples/logs").join(name)
}

/// Runs the real binary with `args` and optional stdin.
pub fn trialtail(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trialtail"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).env_remove("TRIALTAIL_LOG");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn trialtail");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    child.wait_with_output().expect("wait trialtail")
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
