//! trialtail's integration tests, in one test binary.
//!
//! Each module pins one area: `golden` the example logs against recorded outputs and against what the training
//! processes recorded in memory, `katib` Katib's parsing contract, `cli` the command line's behaviour as a user
//! meets it, `plot` the pictures, `terminal` what a terminal shows and a pipe does not, `prom` the Prometheus
//! endpoint and Pushgateway against real Prometheus parts (helpers in `support`), `live` following files,
//! signals and wrapped commands, `sidecar` the native sidecar against a fake API server, `webhook` the admission
//! webhook over TLS, `manifests` the Kubernetes manifests (typed, cross-checked, their args run).

mod cli;
mod dropin;
mod golden;
mod katib;
mod katib_db;
mod katib_oracle;
mod live;
mod manifests;
mod plot;
mod prom;
mod recognise;
mod sidecar;
mod support;
mod terminal;
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
