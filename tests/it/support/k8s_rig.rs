//! A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager built from
//! their published Go modules and started on loopback by `tests/k8s/rig.sh` (see `tests/k8s/README.md`), and
//! `kubectl` of the same version to talk to it as cluster-admin.
//!
//! Each [`K8sRig`] is its own cluster: tests that register webhooks or kill the API server cannot disturb each
//! other. It is stopped by PID when dropped, and – should the test process die without unwinding – by the rig's
//! watchdog once this process is gone (`K8S_RIG_OWNER`). Without Go (or the module proxy) the tests fail when `CI`
//! is set and skip with a message otherwise.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

fn rig_script() -> PathBuf {
    crate::root().join("tests/k8s/rig.sh")
}

/// Says why the rig is missing: a failure when `CI` is set, a skip otherwise.
fn unavailable(what: &str, detail: &str) -> Option<K8sRig> {
    if std::env::var_os("CI").is_some() {
        panic!("{what} and CI is set: the real API server tests must run in CI\n{detail}");
    }
    eprintln!("SKIPPED: {what} (tests/k8s/rig.sh; with CI set this fails)\n{detail}");
    None
}

/// `kubectl --kubeconfig=KUBECONFIG ARGS` with `stdin` fed in.
pub fn kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(kubectl);
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display())).args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kubectl");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("feed kubectl");
    }
    child.wait_with_output().expect("wait for kubectl")
}

/// One real cluster (etcd, kube-apiserver, kube-controller-manager), stopped by PID when dropped.
pub struct K8sRig {
    /// The rig's directory: certificates, data, logs, the env file.
    pub dir: PathBuf,
    env: HashMap<String, String>,
}

impl K8sRig {
    /// Builds (or reuses) the binaries and starts a cluster: about 10–20 s with cached binaries.
    pub fn start() -> Option<K8sRig> {
        let out = match Command::new("bash")
            .arg(rig_script())
            .arg("start")
            .env("K8S_RIG_OWNER", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => out,
            Err(e) => return unavailable("bash cannot run tests/k8s/rig.sh", &e.to_string()),
        };
        if !out.status.success() {
            let detail = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            return unavailable(
                "the Kubernetes rig did not start (is Go installed, the module proxy reachable?)",
                &detail,
            );
        }
        let env = super::env_lines(&String::from_utf8_lossy(&out.stdout));
        Some(K8sRig { dir: env["K8S_RIG_DIR"].clone().into(), env })
    }

    /// A value of the rig's env file (`tests/k8s/rig.sh`, "start prints").
    pub fn env(&self, key: &str) -> &str {
        self.env.get(key).map(String::as_str).unwrap_or_else(|| panic!("the rig printed no {key}"))
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn api(&self) -> &str {
        self.env("K8S_API")
    }

    /// A path the rig printed.
    pub fn path(&self, key: &str) -> &Path {
        Path::new(self.env(key))
    }

    /// `kubectl ARGS` as cluster-admin, with `stdin` fed in.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl(self.path("KUBECTL"), self.path("KUBECONFIG"), args, stdin)
    }

    /// `kubectl ARGS`, which must succeed; its stdout and stderr (kubectl prints the API server's warnings there).
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> (String, String) {
        let out = self.kubectl(args, stdin);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "kubectl {}: {}\n{stdout}{stderr}\n{}",
            args.join(" "),
            out.status,
            self.tail_logs()
        );
        (stdout.into_owned(), stderr.into_owned())
    }

    /// `kubectl apply -f -` of `yaml`, server-side field validation strict; returns kubectl's stderr (warnings).
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl(&["apply", "--validate=strict", "-f", "-"], Some(yaml));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kubectl apply: {stderr}\n{yaml}");
        stderr
    }

    /// The object `kubectl get ARGS -o json` returns, as the API server stores it.
    pub fn get(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let (stdout, _) = self.kubectl_ok(&all, None);
        serde_json::from_str(&stdout).expect("kubectl get prints JSON")
    }

    /// Installs the CRDs in the rig's `CRD_DIR` whose file names are given, and waits until they are served.
    pub fn install_crds(&self, files: &[&str]) {
        for file in files {
            let path = self.path("CRD_DIR").join(file);
            self.kubectl_ok(&["apply", "--server-side", "-f", &path.to_string_lossy()], None);
        }
        self.kubectl_ok(&["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"], None);
    }

    /// Creates a namespace with `labels`.
    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, Value> =
            labels.iter().map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string()))).collect();
        let ns =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
        self.apply(&ns.to_string());
        // The service-account controller gives every namespace its `default` account; pods need it.
        crate::support::wait_for(&format!("the default service account in {name}"), || {
            self.kubectl(&["-n", name, "get", "serviceaccount/default"], None).status.success().then_some(())
        });
    }

    /// A token for service account `account` in `namespace`, bound to pod `pod` as the kubelet asks for it
    /// (TokenRequest with a bound object: it dies with the pod).
    pub fn token(&self, namespace: &str, account: &str, pod: &str, pod_uid: &str) -> String {
        let args = [
            "-n",
            namespace,
            "create",
            "token",
            account,
            "--bound-object-kind=Pod",
            "--bound-object-name",
            pod,
            "--bound-object-uid",
            pod_uid,
            "--duration=1h",
        ];
        self.kubectl_ok(&args, None).0.trim().to_string()
    }

    /// A kubeconfig that authenticates with `token` and trusts only the cluster's CA, namespace `namespace`.
    pub fn token_kubeconfig(&self, token: &str, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: rig\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: rig\n  \
             context:\n    cluster: rig\n    user: sa\n    namespace: {namespace}\ncurrent-context: rig\n",
            self.api(),
            self.env("K8S_CA")
        )
    }

    /// Kills the API server with SIGKILL (etcd and the controllers stay).
    pub fn kill_apiserver(&self) {
        self.script(&["kill-apiserver"]);
    }

    /// Starts the API server again with the same flags and port; returns once `/readyz` answers 200.
    pub fn start_apiserver(&self) {
        self.script(&["start-apiserver"]);
    }

    fn script(&self, args: &[&str]) {
        let out = Command::new("bash").arg(rig_script()).args(args).arg(&self.dir).output().expect("run rig.sh");
        assert!(out.status.success(), "rig.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The last lines of the control plane's logs, for failure messages.
    pub fn tail_logs(&self) -> String {
        let mut text = String::new();
        for log in ["kube-apiserver.log", "kube-controller-manager.log"] {
            let all = std::fs::read_to_string(self.dir.join(log)).unwrap_or_default();
            let lines: Vec<&str> = all.lines().collect();
            text.push_str(&format!(
                "--- {log} (last 20 lines)\n{}\n",
                lines[lines.len().saturating_sub(20)..].join("\n")
            ));
        }
        text
    }

    /// Polls `f` every 100 ms until it returns `Some`, or fails after [`crate::support::PATIENCE`] with the logs.
    pub fn wait_for<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + crate::support::PATIENCE;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}\n{}", self.tail_logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for K8sRig {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(rig_script()).arg("stop").arg(&self.dir).output();
    }
}
