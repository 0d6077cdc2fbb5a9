//! Helpers for the tests against real Prometheus parts: finding the Debian binaries (missing ones fail the test
//! when `CI` is set, and skip it with a message otherwise), free loopback ports, a tiny HTTP/1.0 client, polling
//! with generous deadlines, and child processes that are killed when a test ends, passing or not. The submodules:
//! `katib` Katib's own code, `kube_fake` the fake API server, `k8s_rig` a real Kubernetes control plane,
//! `kubelet` the kubelet stand-in for it and `proxy` a TCP proxy that breaks the network.

pub mod k8s_rig;
pub mod katib;
pub mod kube_fake;
pub mod kubelet;
pub mod proxy;
pub mod rss;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any condition may take before a test fails: generous, for a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The path of the Debian binary `name` (of Prometheus's packages), or `None` (after saying so) when it is
/// missing outside CI.
///
/// # Panics
/// When the binary is missing and the environment variable `CI` is set: in CI these tests must run.
pub fn tool(name: &str) -> Option<PathBuf> {
    tool_of(name, "apt-get install prometheus prometheus-pushgateway")
}

/// [`tool`] for a binary that `hint` installs.
pub fn tool_of(name: &str, hint: &str) -> Option<PathBuf> {
    let found = on_path(name);
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is missing and CI is set: these tests must run in CI ({hint})");
        }
        eprintln!("SKIPPED: {name} not found (install it: {hint}; with CI set this fails)");
    }
    found
}

/// `KEY=VALUE` lines (what the rig scripts print) as a map.
pub fn env_lines(text: &str) -> std::collections::HashMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The file `name` in a directory of PATH (or /usr/bin), if there is one.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// A loopback address with a free port.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` over HTTP/1.0 (so no chunked bodies), with an optional `Accept` header.
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    Ok(Response { status, content_type, body: body.to_string() })
}

/// The peak resident set size so far (`VmHWM` of `/proc/PID/status`) of the live process `pid`, in KiB: the
/// memory figure of one child, whatever the other tests' children did.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).expect("VmHWM in /proc/PID/status");
    line.trim().trim_end_matches("kB").trim().parse().expect("VmHWM in kB")
}

/// Polls `f` every 50 ms until it returns `Some`, or fails the test after [`PATIENCE`] naming `what`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {PATIENCE:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) when dropped; its output goes to a log file in `dir`.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `cmd` with output to `<dir>/output.log` and waits until `GET ready_path` answers 200.
    fn start(mut cmd: Command, addr: SocketAddr, dir: tempfile::TempDir, ready_path: &str) -> Daemon {
        let log = std::fs::File::create(dir.path().join("output.log")).expect("create the daemon's log");
        let err = log.try_clone().expect("clone the log file");
        let child = cmd.stdin(Stdio::null()).stdout(log).stderr(err).spawn().expect("spawn the daemon");
        let mut d = Daemon { child, addr, dir };
        let name = format!("{:?} to answer {ready_path}", cmd.get_program());
        wait_for(&name, || {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("{name}: exited with {status}:\n{}", d.output());
            }
            get(addr, ready_path, None).ok().filter(|r| r.status == 200)
        });
        d
    }

    /// What the daemon printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on `exposition`; fails the test unless it passes without a word.
pub fn promtool_check(promtool: &std::path::Path, exposition: &str) {
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    check.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("feed promtool");
    let out = check.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{exposition}");
}

/// A real Prometheus server on loopback scraping `targets` every second (job `trialtail`), or `None` when the
/// binary is missing outside CI.
pub fn prometheus(targets: &[SocketAddr]) -> Option<Daemon> {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: trialtail\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    prometheus_with_config(&config)
}

/// A real Prometheus server on loopback with `config` as its prometheus.yml, or `None` when the binary is
/// missing outside CI.
pub fn prometheus_with_config(config: &str) -> Option<Daemon> {
    let bin = tool("prometheus")?;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
    let addr = free_addr();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn");
    Some(Daemon::start(cmd, addr, dir, "/-/ready"))
}

/// A real Pushgateway on loopback, or `None` when the binary is missing outside CI.
pub fn pushgateway() -> Option<Daemon> {
    let bin = tool("prometheus-pushgateway")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--web.listen-address={addr}")).arg("--log.level=warn");
    Some(Daemon::start(cmd, addr, dir, "/-/ready"))
}

/// The result vector of an instant PromQL query (empty until the data is there).
pub fn query(prometheus: &Daemon, promql: &str) -> Vec<serde_json::Value> {
    let mut encoded = String::new();
    for b in promql.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let Ok(r) = get(prometheus.addr, &format!("/api/v1/query?query={encoded}"), None) else { return Vec::new() };
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    assert_ne!(json["status"], "error", "query {promql}: {}", r.body);
    json["data"]["result"].as_array().cloned().unwrap_or_default()
}
