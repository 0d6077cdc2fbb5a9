//! `trialtail webhook` end to end: the real binary serving HTTPS on loopback with certificates made here by a
//! throwaway CA (rcgen), called by a hyper client over tokio-rustls that trusts only that CA.
//!
//! The certificate directory is laid out as the kubelet lays out a secret volume (`tls.crt -> ..data/tls.crt`,
//! `..data -> ..<timestamp>`), and rotated as the kubelet rotates it (a new timestamped directory, a new
//! `..data_tmp` symlink renamed over `..data`), so the test sees what a cert-manager rotation looks like to
//! the webhook; one rotation pairs a certificate with a key that is not its own, as a half-finished rotation
//! would. The reviews are the fixtures in `tests/fixtures/admission/`.
//!
//! The order of trialtail's and Katib's pod webhooks is played through [`admit`], a model of the API server's
//! mutating admission (configurations sorted by name, objectSelectors on the pod as mutated so far, the second
//! round for `reinvocationPolicy: IfNeeded`), with trialtail's webhooks as `manifests/base/mutatingwebhook.yaml`
//! declares them calling the real server, and Katib's webhook as the patch between a trial pod before and after
//! it (fixtures `katib-job-pod` and `katib-*`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustix::process::{Pid, Signal, kill_process};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::manifests::selects;
use crate::support::{self, PATIENCE, free_addr, get, wait_for};
use crate::{root, stderr, trialtail};

/// A CA and a server certificate for `localhost` it signed.
pub struct Pki {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

pub fn pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, format!("{name} webhook"));
    let cert = server.signed_by(&key, &Issuer::new(ca, ca_key)).unwrap();
    Pki { ca: ca_cert.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

/// Writes `pki`'s pair as the kubelet updates a secret volume: files in a new directory, then `..data` swapped.
pub fn publish(dir: &Path, generation: &str, pki: &Pki) {
    let data = dir.join(format!("..{generation}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), &pki.cert).unwrap();
    std::fs::write(data.join("tls.key"), &pki.key).unwrap();
    std::os::unix::fs::symlink(format!("..{generation}"), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        if !dir.join(name).exists() {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
}

/// A directory whose `tls/` holds one pair for `name`, published as the kubelet does.
pub fn certified(name: &str) -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    let pki = pki(name);
    publish(&dir.path().join("tls"), "2026_01_01_00_00_00.1", &pki);
    (dir, pki)
}

/// The webhook process, killed when dropped.
pub struct Webhook {
    child: Child,
    pub tls: SocketAddr,
    pub plain: SocketAddr,
    log: PathBuf,
}

impl Webhook {
    /// The webhook serving the certificate in `dir/tls/`.
    pub fn start(dir: &Path, extra: &[&str]) -> Webhook {
        Webhook::start_with_env(dir, extra, &[])
    }

    fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Webhook {
        let files = [dir.join("tls/tls.crt"), dir.join("tls/tls.key")].map(|p| p.display().to_string());
        let certificate = ["--tls-cert", &files[0], "--tls-key", &files[1]];
        Webhook::launch(dir, &[&certificate[..], extra].concat(), env)
    }

    /// The webhook with `args` after its addresses, its log in `dir/webhook-N.log`, ready.
    pub fn launch(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Webhook {
        let (tls, plain) = (free_addr(), free_addr());
        let log = (0..).map(|n| dir.join(format!("webhook-{n}.log"))).find(|p| !p.exists()).unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_trialtail"))
            .args(["webhook", "--listen", &tls.to_string(), "--metrics-listen", &plain.to_string()])
            .args(["--image", "ghcr.io/trialtail/trialtail:0.1.0", "--log-level", "info"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn trialtail webhook");
        let mut w = Webhook { child, tls, plain, log };
        wait_for("the webhook to answer /readyz", || {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!("the webhook exited with {status}:\n{}", w.output());
            }
            get(w.plain, "/readyz", None).ok().filter(|r| r.status == 200)
        });
        w
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The webhook's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn terminate(&mut self) {
        kill_process(Pid::from_child(&self.child), Signal::TERM).expect("SIGTERM");
    }

    pub(crate) fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the webhook did not exit after SIGTERM:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS answer and the certificate the server presented.
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub presented: CertificateDer<'static>,
}

/// A TLS connection to `addr` trusting only `ca`, for `localhost`.
pub async fn connect(addr: SocketAddr, ca: &str) -> Result<TlsStream<TcpStream>, String> {
    connect_as(addr, ca, "localhost").await
}

/// A TLS connection to `addr` as the server `name`, trusting only `ca` (PEM; several certificates allowed).
async fn connect_as(addr: SocketAddr, ca: &str, name: &str) -> Result<TlsStream<TcpStream>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    connector.connect(server_name, tcp).await.map_err(|e| format!("TLS: {e}"))
}

/// One request over a new TLS connection trusting only `ca`.
pub async fn call(addr: SocketAddr, ca: &str, method: &str, path: &str, body: Vec<u8>) -> Result<Answer, String> {
    call_as(addr, ca, "localhost", method, path, body).await
}

/// One request over a new TLS connection to the server `name`, trusting only `ca`.
pub async fn call_as(
    addr: SocketAddr,
    ca: &str,
    name: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Answer, String> {
    let tls = connect_as(addr, ca, name).await?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes().to_vec();
    Ok(Answer { status, body, presented })
}

/// Writes `request` as is over a new TLS connection and returns what the server answered until it closed.
async fn raw(addr: SocketAddr, ca: &str, request: &[u8]) -> String {
    let mut tls = connect(addr, ca).await.unwrap();
    // The server may answer and close before reading all of it: a failed write is not the test's business.
    let _ = tls.write_all(request).await;
    let _ = tls.flush().await;
    read_answer(&mut tls).await
}

/// Reads until the server closes; the server may close without a TLS close_notify after answering, so what was
/// read is what counts.
async fn read_answer(tls: &mut TlsStream<TcpStream>) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor closed: {}", String::from_utf8_lossy(&answer));
    String::from_utf8_lossy(&answer).into_owned()
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/admission").join(format!("{name}.json"))).unwrap()
}

fn json(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&answer.body)))
}

pub fn metric(text: &str, series: &str) -> u64 {
    let line = text.lines().find(|l| l.split(' ').next() == Some(series));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn webhook_serves_reviews_over_tls_reloads_a_rotated_certificate_refuses_a_mismatched_one_and_drains_in_flight_requests_on_sigterm()
 {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    let (first, second) = (pki("first"), pki("second"));
    publish(&dir.path().join("tls"), "2026_01_01_00_00_00.1", &first);
    let mut webhook = Webhook::start(dir.path(), &["--max-body-bytes", "64KiB"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let post = |ca: &str, path: &str, body: Vec<u8>| rt.block_on(call(webhook.tls, ca, "POST", path, body));

    let trial = post(&first.ca, "/mutate", fixture("katib-trial")).unwrap();
    assert_eq!(trial.status, StatusCode::OK);
    let r = &json(&trial)["response"];
    assert_eq!((r["uid"].as_str(), r["allowed"].as_bool()), (Some("7d3e9f1a-5b2c-4d6e-8f0a-1b2c3d4e5f60"), Some(true)));
    assert_eq!(r["patchType"], "JSONPatch");
    let patch = base64_decode(r["patch"].as_str().unwrap());
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = serde_json::from_slice::<Value>(&fixture("katib-trial")).unwrap()["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
    let init = pod.spec.unwrap().init_containers.unwrap();
    assert_eq!((init[1].name.as_str(), init[1].restart_policy.as_deref()), ("trialtail", Some("Always")));

    let bad = post(&first.ca, "/mutate", fixture("bad-annotation")).unwrap();
    let r = &json(&bad)["response"];
    assert_eq!((bad.status, r["allowed"].as_bool(), r.get("patch")), (StatusCode::OK, Some(true), None));
    assert!(r["warnings"][0].as_str().unwrap().contains("trialtail.io/preset"), "{r}");

    let garbage = post(&first.ca, "/mutate", b"{\"kind\": \"AdmissionReview\", ".to_vec()).unwrap();
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&garbage.body).contains("malformed AdmissionReview"));
    // Over --max-body-bytes: refused from the declared length alone, or once a chunked body passes it.
    let declared = "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 102400\r\n\r\n";
    let declared = rt.block_on(raw(webhook.tls, &first.ca, declared.as_bytes()));
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    let mut chunked = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..100 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let chunked = rt.block_on(raw(webhook.tls, &first.ca, &chunked));
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert_eq!(post(&first.ca, "/elsewhere", Vec::new()).unwrap().status, StatusCode::NOT_FOUND);
    let wrong_method = rt.block_on(call(webhook.tls, &first.ca, "GET", "/mutate", Vec::new())).unwrap();
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    let first_der = trial.presented.clone();

    // A rotation whose key is not the certificate's is refused; the previous pair stays.
    let mismatched = Pki { ca: second.ca.clone(), cert: second.cert.clone(), key: first.key.clone() };
    publish(&dir.path().join("tls"), "2026_01_15_00_00_00.2", &mismatched);
    wait_for("the mismatched pair to be refused", || {
        let text = get(webhook.plain, "/metrics", None).ok()?.body;
        (metric(&text, "trialtail_webhook_errors_total{kind=\"cert_reload\"}") == 1).then_some(())
    });
    let kept = post(&first.ca, "/mutate", fixture("opt-out")).unwrap();
    assert_eq!((kept.status, &kept.presented), (StatusCode::OK, &first_der));

    publish(&dir.path().join("tls"), "2026_02_01_00_00_00.3", &second);
    let rotated =
        wait_for("the rotated certificate to be served", || post(&second.ca, "/mutate", fixture("opt-out")).ok());
    assert_eq!(rotated.status, StatusCode::OK);
    assert_ne!(rotated.presented, first_der, "a new certificate, without a restart");
    assert!(post(&first.ca, "/mutate", fixture("opt-out")).is_err(), "the old CA no longer verifies the server");

    let metrics = get(webhook.plain, "/metrics", None).unwrap();
    assert_eq!(metrics.status, 200);
    let text = &metrics.body;
    assert_eq!(metric(text, "trialtail_webhook_requests_total"), 9, "{}", webhook.output());
    assert_eq!(metric(text, "trialtail_webhook_mutations_total"), 1);
    assert_eq!(metric(text, "trialtail_webhook_reviews_total{outcome=\"invalid\"}"), 1);
    assert_eq!(metric(text, "trialtail_webhook_reviews_total{outcome=\"not_selected\"}"), 2);
    assert_eq!(metric(text, "trialtail_webhook_errors_total{kind=\"bad_request\"}"), 1);
    assert_eq!(metric(text, "trialtail_webhook_errors_total{kind=\"too_large\"}"), 2);
    assert_eq!(metric(text, "trialtail_webhook_cert_reloads_total"), 1);
    assert_eq!(metric(text, "trialtail_webhook_errors_total{kind=\"cert_reload\"}"), 1);
    assert_eq!(metric(text, "trialtail_webhook_review_duration_seconds_count"), 4);
    if let Some(promtool) = support::tool("promtool") {
        support::promtool_check(&promtool, text);
    }

    // A request whose headers arrived before SIGTERM is still answered; new connections are refused.
    let body = fixture("katib-trial");
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut in_flight = rt.block_on(async {
        let mut tls = connect(webhook.tls, &second.ca).await.unwrap();
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&body[..100]).await.unwrap();
        tls.flush().await.unwrap();
        tls
    });
    wait_for("the request in flight to reach the handler", || {
        let text = get(webhook.plain, "/metrics", None).ok()?.body;
        (metric(&text, "trialtail_webhook_requests_total") == 10).then_some(())
    });
    webhook.terminate();
    wait_for("the servers to stop accepting", || get(webhook.plain, "/healthz", None).is_err().then_some(()));
    let answer = rt.block_on(async {
        in_flight.write_all(&body[100..]).await.unwrap();
        in_flight.flush().await.unwrap();
        read_answer(&mut in_flight).await
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"patchType\":\"JSONPatch\""), "{answer}");
    let status = webhook.wait();
    assert!(status.success(), "exit {status}:\n{}", webhook.output());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn the_webhooks_annotation_check_reads_no_environment() {
    let (dir, pki) = certified("env");
    // `trialtail run` variables that would make every sidecar command line invalid, and the run's own
    // --listen variable, which means nothing to the webhook.
    let env = [("TRIALTAIL_MAX_LINE_BYTES", "1"), ("TRIALTAIL_KATIB_SEMANTICS", "true"), ("TRIALTAIL_LISTEN", "bad")];
    let webhook = Webhook::start_with_env(dir.path(), &[], &env);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = rt.block_on(call(webhook.tls, &pki.ca, "POST", "/mutate", fixture("katib-trial"))).unwrap();
    let r = &json(&answer)["response"];
    assert_eq!(r["allowed"].as_bool(), Some(true));
    assert!(r.get("warnings").is_none(), "{r}");
    assert!(r["patch"].is_string(), "the pod is mutated whatever the webhook's environment says: {r}");
}

#[test]
fn webhook_check_config_validates_every_flag_and_names_the_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pki("a"), pki("b"));
    for (name, text) in [("a.crt", &a.cert), ("a.key", &a.key), ("b.key", &b.key)] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (cert, key, other_key) = (path("a.crt"), path("a.key"), path("b.key"));
    let run = |extra: &[&str], cert: &str, key: &str| {
        let mut args = vec!["webhook", "--check-config", "--tls-cert", cert, "--tls-key", key];
        args.extend_from_slice(extra);
        trialtail(&args, None)
    };
    let ok = run(&["--listen", "127.0.0.1:1", "--namespace", "kubeflow,team-a"], &cert, &key);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let cases: [(&[&str], &str, &str, &str); 8] = [
        (&[], &cert, &other_key, "--tls-key"),
        (&[], &path("missing.crt"), &key, "--tls-cert"),
        (&[], &key, &key, "--tls-cert"),
        (&["--listen", "8443"], &cert, &key, "--listen \"8443\""),
        (&["--metrics-listen", "host:1"], &cert, &key, "--metrics-listen"),
        (&["--image", " "], &cert, &key, "--image"),
        (&["--memory-limit", "100MB"], &cert, &key, "--memory-limit \"100MB\""),
        (&["--max-body-bytes", "1"], &cert, &key, "--max-body-bytes"),
    ];
    for (extra, cert, key, names) in cases {
        let out = run(extra, cert, key);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{extra:?}: one line: {err}");
        assert!(err.starts_with("trialtail: ") && err.contains(names), "{extra:?}: {err}");
    }
}

/// One mutating webhook as the API server sees it: its uid (`configuration/name`), objectSelector,
/// reinvocationPolicy, and what calling it returns.
struct Hook<'a> {
    uid: String,
    selector: Option<LabelSelector>,
    reinvoke: bool,
    call: Box<dyn Fn(&Value) -> json_patch::Patch + 'a>,
}

/// A mutating webhook configuration: its name and its webhooks in their listed order.
type Configuration<'a> = (String, Vec<Hook<'a>>);

/// The API server's mutating admission of one pod CREATE, as k8s.io/apiserver v0.33.0 runs it, and the uids of
/// the webhooks it called with their round. Configurations are called sorted by name
/// (`getMutatingWebhookConfigurations` in `pkg/admission/configuration/mutating_webhook_manager.go`), webhooks in
/// their listed order, each when its objectSelector selects the pod as mutated so far (`Dispatch` in
/// `pkg/admission/plugin/webhook/mutating/dispatcher.go`). When a webhook changed the pod, the webhooks called
/// before it with `reinvocationPolicy: IfNeeded` are due again (`reinvocationcontext.go`), and a second round
/// runs (`reinvoker.Admit` in `pkg/admission/reinvocation.go`) in which only those are called – a webhook skipped
/// in the first round is never called in the second. (The built-in admission plugins, which the second round
/// runs too, change nothing in these pods and are left out; so are namespace selectors: both webhooks are
/// enabled in the namespace.)
fn admit(mut configurations: Vec<Configuration<'_>>, mut pod: Value) -> (Value, Vec<String>) {
    configurations.sort_by(|a, b| a.0.cmp(&b.0));
    let hooks: Vec<&Hook> = configurations.iter().flat_map(|(_, hooks)| hooks).collect();
    let (mut invoked, mut due, mut again) = (Vec::<&str>::new(), Vec::<&str>::new(), false);
    let mut calls = Vec::new();
    for round in 0..2 {
        if round == 1 && !again {
            break;
        }
        for hook in &hooks {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap_or_default();
            if !hook.selector.as_ref().is_none_or(|s| selects(s, &labels)) {
                continue;
            }
            if round == 1 && !due.contains(&hook.uid.as_str()) {
                continue;
            }
            calls.push(format!("{} round {round}", hook.uid));
            let before = pod.clone();
            let patch = (hook.call)(&pod);
            json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| panic!("{}: {e}: {patch}", hook.uid));
            if pod != before {
                due.append(&mut invoked);
                again = true;
            }
            if hook.reinvoke {
                invoked.push(&hook.uid);
            }
        }
    }
    (pod, calls)
}

/// The pod of an admission fixture.
fn fixture_pod(name: &str) -> Value {
    serde_json::from_slice::<Value>(&fixture(name)).unwrap()["request"]["object"].clone()
}

/// trialtail's MutatingWebhookConfiguration from `manifests/base/mutatingwebhook.yaml`, under `name`, each webhook
/// calling the real server over TLS with an AdmissionReview of the pod as mutated so far.
fn trialtail_configuration<'a>(
    name: &str,
    rt: &'a tokio::runtime::Runtime,
    webhook: &'a Webhook,
    ca: &'a str,
) -> Configuration<'a> {
    let text = std::fs::read_to_string(root().join("manifests/base/mutatingwebhook.yaml")).unwrap();
    let config: MutatingWebhookConfiguration = serde_saphyr::from_str(&text).unwrap();
    let hooks = config.webhooks.unwrap().into_iter().map(|h| {
        let call = move |pod: &Value| {
            let mut review: Value = serde_json::from_slice(&fixture("katib-job-pod")).unwrap();
            review["request"]["object"] = pod.clone();
            let answer =
                rt.block_on(call(webhook.tls, ca, "POST", "/mutate", serde_json::to_vec(&review).unwrap())).unwrap();
            let r = &json(&answer)["response"];
            assert_eq!((answer.status, r["allowed"].as_bool()), (StatusCode::OK, Some(true)), "{r}");
            assert!(r.get("warnings").is_none(), "{r}");
            r["patch"]
                .as_str()
                .map_or_else(json_patch::Patch::default, |p| serde_json::from_slice(&base64_decode(p)).unwrap())
        };
        Hook {
            uid: format!("{name}/{}", h.name),
            selector: h.object_selector,
            reinvoke: h.reinvocation_policy.as_deref() == Some("IfNeeded"),
            call: Box::new(call),
        }
    });
    (name.to_string(), hooks.collect())
}

/// Katib's pod webhook (`K/manifests/v1beta1/components/webhook/webhooks.yaml`: configuration
/// `katib.kubeflow.org`, no objectSelector, reinvocationPolicy left at `Never`) for the trial pod
/// `katib-job-pod`, turning it into the fixture `after`. Katib answers with the JSON patch between the pod it got
/// and the pod it made (`admission.PatchResponseFromRaw` in `Handle`, `pkg/webhook/v1beta1/pod/inject_webhook.go`)
/// and copies what it does not change, so a pod trialtail mutated first gets the same patch.
fn katib_configuration(after: &str) -> Configuration<'static> {
    let patch = json_patch::diff(&fixture_pod("katib-job-pod"), &fixture_pod(after));
    let hook = Hook {
        uid: "katib.kubeflow.org/mutator.pod.katib.kubeflow.org".to_string(),
        selector: None,
        reinvoke: false,
        call: Box::new(move |_: &Value| patch.clone()),
    };
    ("katib.kubeflow.org".to_string(), vec![hook])
}

#[test]
fn webhook_order_with_katibs_pod_webhook_does_not_matter_no_sidecar_beside_katibs_collector_and_push_trials_injected() {
    let (dir, pki) = certified("order");
    let webhook = Webhook::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // As shipped, "katib.kubeflow.org" sorts before "trialtail"; renamed, trialtail's runs first.
    let (katib_first, trialtail_first) = ("trialtail", "0-trialtail");
    let run = |ours: &str, after: &str, pod: Value| {
        admit(vec![trialtail_configuration(ours, &rt, &webhook, &pki.ca), katib_configuration(after)], pod)
    };
    let opted_in = |mut pod: Value| {
        pod["metadata"]["labels"]["trialtail.io/inject"] = "true".into();
        pod
    };
    let katib = "katib.kubeflow.org/mutator.pod.katib.kubeflow.org round 0";
    let ours = |config: &str, hook: &str, round: u8| format!("{config}/{hook}.trialtail.io round {round}");
    let sidecars = |pod: &Value| -> Vec<String> {
        let spec = &pod["spec"];
        let all = spec["initContainers"].as_array().into_iter().flatten().chain(spec["containers"].as_array().unwrap());
        all.filter(|c| c["image"].as_str().unwrap_or("").starts_with("ghcr.io/trialtail/"))
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };

    for after in ["katib-stdout", "katib-custom-trialtail"] {
        let katib_alone = fixture_pod(after);
        // Katib's first: trialtail's sees its collector and leaves the pod as Katib made it.
        let (pod, calls) = run(katib_first, after, fixture_pod("katib-job-pod"));
        assert_eq!(pod, katib_alone, "{after}");
        assert_eq!(calls, [katib.to_string(), ours(katib_first, "katib-trials", 0)], "{after}");
        // trialtail's first, the pod not opted in: not yet a trial pod, then one with Katib's collector.
        let (pod, calls) = run(trialtail_first, after, fixture_pod("katib-job-pod"));
        assert_eq!(pod, katib_alone, "{after}");
        let expected =
            [ours(trialtail_first, "katib-trials", 0), katib.to_string(), ours(trialtail_first, "katib-trials", 1)];
        assert_eq!(calls, expected, "{after}");
        // trialtail's first, the pod opted in by label: injected, Katib's collector added, taken out again.
        let (pod, calls) = run(trialtail_first, after, opted_in(fixture_pod("katib-job-pod")));
        assert_eq!(pod, opted_in(katib_alone.clone()), "{after}: the pod Katib's webhook alone makes");
        let expected = [ours(trialtail_first, "inject", 0), katib.to_string(), ours(trialtail_first, "inject", 1)];
        assert_eq!(calls, expected, "{after}");
        assert!(sidecars(&pod).iter().all(|name| name != "trialtail"), "{after}: {:?}", sidecars(&pod));
        let (pod, _) = run(katib_first, after, opted_in(fixture_pod("katib-job-pod")));
        assert_eq!(pod, opted_in(katib_alone), "{after}");
    }

    // Push: Katib adds the trial label and KATIB_TRIAL_NAME, no container; the sidecar is added in either order.
    let (pod, calls) = run(katib_first, "katib-push", fixture_pod("katib-job-pod"));
    assert_eq!(calls, [katib.to_string(), ours(katib_first, "katib-trials", 0)]);
    assert_eq!(sidecars(&pod), ["trialtail"]);
    assert_eq!(pod["spec"]["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(pod["metadata"]["labels"]["trialtail.io/injected"], "true");
    assert_eq!(pod["spec"]["containers"][0]["env"][0]["name"], "KATIB_TRIAL_NAME");
    let (reversed, calls) = run(trialtail_first, "katib-push", fixture_pod("katib-job-pod"));
    let expected =
        [ours(trialtail_first, "katib-trials", 0), katib.to_string(), ours(trialtail_first, "katib-trials", 1)];
    assert_eq!(calls, expected);
    assert_eq!(reversed, pod, "the same pod in either order");

    let text = get(webhook.plain, "/metrics", None).unwrap().body;
    let outcome = |o: &str| metric(&text, &format!("trialtail_webhook_reviews_total{{outcome=\"{o}\"}}"));
    // Per collector kind: Katib's first (other collector), trialtail's first (not selected, then other
    // collector), opted in and trialtail's first (injected, then removed), opted in and Katib's first (other
    // collector); Push: Katib's first (injected), trialtail's first (not selected, then injected).
    assert_eq!(outcome("other_collector"), 2 * 3, "{}", webhook.output());
    assert_eq!(outcome("removed"), 2);
    assert_eq!(outcome("injected"), 2 + 2);
    assert_eq!(outcome("not_selected"), 2 + 1);
    assert_eq!(outcome("already_injected"), 0);
    let log = webhook.output();
    assert!(
        log.contains("taking the trialtail sidecar out again") && log.contains("metrics-logger-and-collector"),
        "{log}"
    );
    assert!(log.contains("the pod carries another metrics collector") && log.contains("trialtail-collector"), "{log}");
}

/// The Secret and the MutatingWebhookConfiguration of the self-managed certificate, in the fake API server.
const SECRET_PATH: &str = "/api/v1/namespaces/trialtail-system/secrets/trialtail-webhook-tls";
const CONFIG_PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/trialtail";
/// The name the API server calls the webhook by.
const SERVICE_DNS: &str = "trialtail-webhook.trialtail-system.svc";

/// A MutatingWebhookConfiguration with two entries calling trialtail's Service and one calling another.
fn webhook_configuration() -> Value {
    let hook = |name: &str, service: &str| {
        serde_json::json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"name": service, "namespace": "trialtail-system", "path": "/mutate"}}})
    };
    serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "trialtail"},
        "webhooks": [hook("inject.trialtail.io", "trialtail-webhook"), hook("someone-else.example.com", "other"),
                     hook("katib-trials.trialtail.io", "trialtail-webhook")],
    })
}

/// A Secret's `data[key]`, decoded.
fn secret_data(secret: &Value, key: &str) -> String {
    String::from_utf8(base64_decode(secret["data"][key].as_str().unwrap_or_else(|| panic!("{key} in {secret}"))))
        .unwrap()
}

/// The caBundles of the configuration's three entries, decoded (empty when unset).
fn bundles(config: &Value) -> Vec<String> {
    let hooks = config["webhooks"].as_array().unwrap();
    hooks
        .iter()
        .map(|h| {
            h["clientConfig"]["caBundle"]
                .as_str()
                .map(base64_decode)
                .map(|b| String::from_utf8(b).unwrap())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn webhook_with_cert_secret_makes_its_certificate_shares_it_between_replicas_keeps_the_ca_bundle_and_renews_a_foreign_one()
 {
    let fake = support::kube_fake::KubeFake::start(Value::Null, Value::Null, Value::Null);
    fake.put_object(CONFIG_PATH, webhook_configuration());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig("trialtail-system")).unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str()), ("POD_NAMESPACE", "trialtail-system")];
    let args = ["--cert-secret", "trialtail-webhook-tls", "--cert-recheck", "1s"];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let review =
        |w: &Webhook, ca: &str| rt.block_on(call_as(w.tls, ca, SERVICE_DNS, "POST", "/mutate", fixture("katib-trial")));

    // The first replica makes the Secret and puts its CA into both of trialtail's entries, not the other one.
    let first = Webhook::launch(dir.path(), &args, &env);
    let secret = fake.object(SECRET_PATH).expect("the Secret was created");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ca = secret_data(&secret, "ca.crt");
    assert!(secret_data(&secret, "ca.key").contains("PRIVATE KEY"));
    assert_eq!(bundles(&fake.object(CONFIG_PATH).unwrap()), [ca.clone(), String::new(), ca.clone()]);
    // The API server's view: the certificate verifies for the Service's name against the caBundle.
    let answer = review(&first, &ca).unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(json(&answer)["response"]["allowed"], true);
    let served = CertificateDer::from_pem_slice(secret_data(&secret, "tls.crt").as_bytes()).unwrap();
    assert_eq!(answer.presented, served);
    assert!(review(&first, &pki("other").ca).is_err(), "a client trusting another CA refuses it");

    // A second replica uses the same Secret: no second write.
    let second = Webhook::launch(dir.path(), &args, &env);
    assert_eq!(review(&second, &ca).unwrap().presented, served);
    assert_eq!(fake.count("POST", "/secrets", ""), 1, "{:?}", fake.requests());
    assert_eq!(fake.count("PUT", "/secrets/trialtail-webhook-tls", ""), 0);

    // Someone resets the caBundle (a re-created configuration): it is put back within a recheck.
    fake.put_object(CONFIG_PATH, webhook_configuration());
    wait_for("the caBundle to be put back", || {
        (bundles(&fake.object(CONFIG_PATH).unwrap()) == [ca.clone(), String::new(), ca.clone()]).then_some(())
    });

    // A Secret that is no use (a certificate for another name, a CA without its key) is replaced, and both
    // replicas load the replacement.
    let foreign = pki("foreign");
    let mut replaced = fake.object(SECRET_PATH).unwrap();
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    replaced["data"] =
        serde_json::json!({"tls.crt": b64(&foreign.cert), "tls.key": b64(&foreign.key), "ca.crt": b64(&foreign.ca)});
    fake.put_object(SECRET_PATH, replaced);
    let renewed = wait_for("a renewed Secret", || {
        let s = fake.object(SECRET_PATH)?;
        (s["data"].get("ca.key").is_some()).then_some(s)
    });
    let new_ca = secret_data(&renewed, "ca.crt");
    assert_ne!(new_ca, foreign.ca);
    let new_served = CertificateDer::from_pem_slice(secret_data(&renewed, "tls.crt").as_bytes()).unwrap();
    for w in [&first, &second] {
        wait_for("both replicas to serve the renewed certificate", || {
            review(w, &new_ca).ok().filter(|a| a.presented == new_served)
        });
        let text = get(w.plain, "/metrics", None).unwrap().body;
        assert!(metric(&text, "trialtail_webhook_cert_reloads_total") >= 1, "{text}");
    }
    wait_for("the new CA in the caBundle", || {
        (bundles(&fake.object(CONFIG_PATH).unwrap()) == [new_ca.clone(), String::new(), new_ca.clone()]).then_some(())
    });

    // Without the patch verb the caBundle cannot be kept: counted and logged, the webhook keeps serving.
    fake.deny("PATCH", "mutatingwebhookconfigurations");
    fake.put_object(CONFIG_PATH, webhook_configuration());
    wait_for("a ca_bundle error", || {
        let text = get(first.plain, "/metrics", None).ok()?.body;
        (metric(&text, "trialtail_webhook_errors_total{kind=\"ca_bundle\"}") >= 1).then_some(())
    });
    assert!(first.output().contains("needs verb patch on mutatingwebhookconfigurations"), "{}", first.output());
    assert_eq!(review(&first, &new_ca).unwrap().status, StatusCode::OK);

    // Without the get verb on the Secret the webhook cannot start: one line naming what is missing, exit 1.
    fake.deny("GET", "/secrets/");
    let out = Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(["webhook", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(args)
        .envs(env)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("trialtail: cannot get Secret trialtail-system/trialtail-webhook-tls (needs verb get on secrets)"),
        "{err}"
    );
}

#[test]
fn webhook_cert_flags_are_checked_and_one_source_is_required() {
    let cases: [(&[&str], &str); 5] = [
        (&[], "--cert-secret"),
        (&["--cert-secret", "Bad_Name"], "--cert-secret \"Bad_Name\""),
        (&["--cert-secret", "tls", "--cert-recheck", "0s"], "--cert-recheck"),
        (&["--cert-secret", "tls", "--service", "a.b"], "--service"),
        (&["--cert-secret", "tls", "--tls-cert", "a", "--tls-key", "b"], "--cert-secret"),
    ];
    for (extra, names) in cases {
        let out = trialtail(&[&["webhook", "--check-config"], extra].concat(), None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(names), "{extra:?}: {err}");
    }
    let ok = trialtail(&["webhook", "--check-config", "--cert-secret", "trialtail-webhook-tls"], None);
    assert!(ok.status.success(), "contacts nothing: {}", stderr(&ok));
}
