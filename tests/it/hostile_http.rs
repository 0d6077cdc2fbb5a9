//! Hostile inputs and broken peers: what one pod, one client or one peer can do to trialtail's servers and
//! clients, each attack at the smallest size that shows it, on loopback, every loop bounded.
//!
//! Memory is the peak RSS of the process under attack (`VmHWM`, [`peak_rss_kib`]) above its own footprint
//! measured just before the attack; hangs are bounded by a deadline in the test. The figures are printed
//! (`--nocapture`) so a change can be compared with what the fix measured.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::root;
use crate::support::{free_addr, get, peak_rss_kib, wait_for};
use crate::webhook::{Webhook, call, certified, connect, fixture};

/// The API server's timeout for one call of the webhook: `timeoutSeconds` in the shipped configuration.
fn webhook_timeout() -> Duration {
    let text = std::fs::read_to_string(root().join("manifests/base/mutatingwebhook.yaml")).unwrap();
    let seconds = text.lines().find_map(|l| l.trim().strip_prefix("timeoutSeconds:")?.trim().parse().ok());
    Duration::from_secs(seconds.expect("timeoutSeconds in mutatingwebhook.yaml"))
}

/// The fixture `job-inject-label` (a Job's pod opting in by label) with `annotations` added to its pod.
fn review_with(annotations: &[(&str, &str)]) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&fixture("job-inject-label")).unwrap();
    let map = review["request"]["object"]["metadata"]["annotations"].as_object_mut().unwrap();
    for (k, v) in annotations {
        map.insert((*k).to_string(), Value::String((*v).to_string()));
    }
    serde_json::to_vec(&review).unwrap()
}

/// The `response` of a review answered 200.
fn response(status: StatusCode, body: &[u8]) -> Value {
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(body));
    serde_json::from_slice::<Value>(body).unwrap()["response"].clone()
}

/// Defect: a `trialtail.io/filters` annotation of a few large counted repetitions (`\w{450}`, each some 45 MB
/// of compiled regex) cost the shared webhook seconds and hundreds of MB per review, and two such reviews at
/// once held up every other. Now each filter's compiled size is bounded (the regex crate's size limit): the
/// pod is admitted without the sidecar and a warning saying why, within the API server's timeout, in a few
/// MB, and an ordinary review sent at the same time is answered as fast.
#[test]
fn a_costly_filters_annotation_is_refused_with_a_warning_in_bounded_time_and_memory() {
    let (dir, pki) = certified("hostile-filters");
    let webhook = Webhook::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let post = |body: Vec<u8>| {
        let (addr, ca) = (webhook.tls, pki.ca.clone());
        async move {
            let started = Instant::now();
            let answer = call(addr, &ca, "POST", "/mutate", body).await.unwrap();
            (response(answer.status, &answer.body), started.elapsed())
        }
    };
    let (warm, _) = rt.block_on(post(fixture("job-inject-label")));
    assert_eq!(warm["patchType"], "JSONPatch", "{warm}");
    let footprint = peak_rss_kib(webhook.pid());

    let costly = review_with(&[("trialtail.io/filters", "(\\w{450})=(\\w{450})\n(\\w{450}): (\\w{450})")]);
    let (first, second, ordinary) = rt.block_on(async {
        let first = tokio::spawn(post(costly.clone()));
        let second = tokio::spawn(post(costly.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ordinary = post(fixture("job-inject-label")).await;
        (first.await.unwrap(), second.await.unwrap(), ordinary)
    });
    let grown = peak_rss_kib(webhook.pid()).saturating_sub(footprint);
    eprintln!(
        "two costly reviews: {:?} and {:?}, an ordinary one beside them {:?}; peak RSS {grown} KiB above the \
         footprint of {footprint} KiB",
        first.1, second.1, ordinary.1
    );
    for (r, _) in [&first, &second] {
        let warning = r["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains("trialtail.io/filters") && warning.contains("size limit"), "{:?}", r["warnings"]);
        assert_eq!((r["allowed"].as_bool(), r.get("patch")), (Some(true), None), "admitted unchanged");
    }
    assert_eq!(ordinary.0["patchType"], "JSONPatch", "{}", ordinary.0);
    let timeout = webhook_timeout();
    for (what, took) in [("first", first.1), ("second", second.1), ("ordinary", ordinary.1)] {
        assert!(took < timeout, "the {what} review took {took:?}, over the API server's {timeout:?}");
    }
    assert!(grown <= 16 * 1024, "the costly reviews took {grown} KiB");

    // The most a pod can make a review cost: as many filters as allowed, each just under the size limit.
    let largest = ["(\\w{5})=(\\w{5})"; 8].join("\n");
    let (r, took) = rt.block_on(post(review_with(&[("trialtail.io/filters", &largest)])));
    let grown = peak_rss_kib(webhook.pid()).saturating_sub(footprint);
    eprintln!("the largest filters admitted: {took:?}, peak RSS {grown} KiB above the footprint");
    assert_eq!(r["patchType"], "JSONPatch", "{r}");
    assert!(took < timeout, "the largest filters admitted took {took:?}");
    assert!(grown <= 32 * 1024, "the largest filters admitted took {grown} KiB");
}

/// Whatever the annotations of a pod say – a metric name of 32 KB (seconds of building the names' prefilter,
/// before), a hundred names of 320 bytes, a metric list, a preset list, a container name or filter lines of
/// 1 MB (the API server validates annotations only after mutating admission, so the webhook sees what a
/// request body can carry) – the review is answered within the API server's timeout, in bounded memory.
#[test]
fn any_annotation_a_pod_carries_is_reviewed_within_the_timeout_in_bounded_memory() {
    let (dir, pki) = certified("hostile-annotations");
    let webhook = Webhook::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let timeout = webhook_timeout();
    let post = |body: Vec<u8>| {
        rt.block_on(async {
            let started = Instant::now();
            let call = call(webhook.tls, &pki.ca, "POST", "/mutate", body);
            let answer = tokio::time::timeout(crate::support::PATIENCE, call).await;
            let answer = answer.unwrap_or_else(|_| panic!("no answer within {:?}", crate::support::PATIENCE));
            let answer = answer.unwrap();
            (response(answer.status, &answer.body), started.elapsed())
        })
    };
    post(fixture("job-inject-label"));
    let footprint = peak_rss_kib(webhook.pid());
    let megabyte = "x".repeat(1 << 20);
    let long_name = "x".repeat(32_000);
    let hundred_names = (0..100).map(|i| format!("{i:0>320}")).collect::<Vec<_>>().join(",");
    let many_lines = "a(b)(c)\n".repeat(1 << 17);
    let cases = [
        ("one metric name of 32 KB", "trialtail.io/metrics", long_name.as_str()),
        ("100 metric names of 320 bytes", "trialtail.io/metrics", hundred_names.as_str()),
        ("one metric name of 1 MB", "trialtail.io/metrics", megabyte.as_str()),
        ("a preset list of 1 MB", "trialtail.io/preset", megabyte.as_str()),
        ("a container name of 1 MB", "trialtail.io/container", megabyte.as_str()),
        ("1 MB of filter lines", "trialtail.io/filters", many_lines.as_str()),
    ];
    for (what, key, value) in cases {
        let (r, took) = post(review_with(&[(key, value)]));
        let grown = peak_rss_kib(webhook.pid()).saturating_sub(footprint);
        eprintln!("{what}: answered in {took:?}, peak RSS {grown} KiB above the footprint of {footprint} KiB");
        assert_eq!(r["allowed"], true, "{what}");
        if value.len() > 64 << 10 {
            let warning = r["warnings"][0].as_str().unwrap_or_default();
            assert!(warning.contains(key) && r.get("patch").is_none(), "{what}: {warning:.300}");
        }
        assert!(took < timeout, "{what}: answered in {took:?}, over the API server's {timeout:?}");
        assert!(grown <= 48 * 1024, "{what}: {grown} KiB");
    }
}

/// `trialtail run --follow ARGS LOG` on a one-line log in `dir`, running until killed.
fn follow(dir: &std::path::Path, args: &[&str]) -> Child {
    let log = dir.join("train.log");
    std::fs::write(&log, "loss=0.5\n").unwrap();
    Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(["run", "--follow", "--output", "json"])
        .args(args)
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// [`follow`] serving `/metrics` on a free address; ready.
fn endpoint(dir: &std::path::Path) -> (Child, SocketAddr) {
    let addr = free_addr();
    let child = follow(dir, &["--listen", &addr.to_string()]);
    wait_for("/readyz", || get(addr, "/readyz", None).ok().filter(|r| r.status == 200));
    (child, addr)
}

/// A client that pipelines `requests` copies of `request` on a new connection and never reads a byte of the
/// answers; the write gives up after 5 s (the server may stop reading), the connection stays open.
async fn pipeliner(addr: SocketAddr, request: &'static str, requests: usize) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let burst = request.repeat(requests);
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(burst.as_bytes())).await;
    Some(s)
}

/// `scrapes` GETs of `path`, one after the other, while new pipelining clients keep arriving (one every
/// 20 ms, at most 200): how many were answered 200 within 5 s each, and the slowest.
fn while_pipeliners_arrive(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    request: &'static str,
    path: &str,
    scrapes: usize,
) -> (usize, Duration) {
    let arriving = rt.spawn(async move {
        let mut held = Vec::new();
        for _ in 0..200 {
            held.extend(pipeliner(addr, request, 2000).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        held
    });
    let (mut answered, mut slowest) = (0, Duration::ZERO);
    for _ in 0..scrapes {
        let started = Instant::now();
        if get_within(addr, path, Duration::from_secs(5)).is_some_and(|status| status == 200) {
            answered += 1;
        }
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    arriving.abort();
    (answered, slowest)
}

/// `GET path` over HTTP/1.0 that must be answered within `within`: the status, or `None`.
fn get_within(addr: SocketAddr, path: &str, within: Duration) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, within).ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    s.set_write_timeout(Some(within)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Defect: some 64 clients that pipeline requests and never read the answers held every connection of
/// `/metrics` for as long as they stayed, so every scrape failed. Now a connection whose answers are not read
/// is closed after the write timeout, and when every slot is taken a new connection takes the place of the
/// oldest one not being answered: a scrape always gets through, also while such clients keep arriving.
#[test]
fn clients_that_pipeline_and_never_read_do_not_silence_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = endpoint(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let held: Vec<_> = rt.block_on(async {
        let clients = (0..64).map(|_| pipeliner(addr, request, 2000));
        futures::future::join_all(clients).await.into_iter().flatten().collect()
    });
    let (answered, slowest) = while_pipeliners_arrive(&rt, addr, request, "/metrics", 10);
    let peak = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "{} pipelining clients held: {answered} of 10 scrapes answered, the slowest in {slowest:?}; peak RSS {peak} KiB",
        held.len()
    );
    assert_eq!(answered, 10, "scrapes answered while clients pipeline and never read");
}

/// Defect: the webhook's liveness probe (`/healthz` on the plain port) failed while 256 such clients stayed
/// connected, so the kubelet would restart a healthy webhook. The same fair accept keeps it answering.
#[test]
fn clients_that_pipeline_and_never_read_do_not_silence_the_webhooks_healthz() {
    let (dir, _pki) = certified("hostile-healthz");
    let webhook = Webhook::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let held: Vec<_> = rt.block_on(async {
        let clients = (0..256).map(|_| pipeliner(webhook.plain, request, 2000));
        futures::future::join_all(clients).await.into_iter().flatten().collect()
    });
    let (answered, slowest) = while_pipeliners_arrive(&rt, webhook.plain, request, "/healthz", 10);
    eprintln!("{} pipelining clients held: {answered} of 10 probes answered, the slowest in {slowest:?}", held.len());
    assert_eq!(answered, 10, "probes answered while clients pipeline and never read");
}

/// A TLS connection to the webhook that sent the headers of a review of `length` bytes and `sent` bytes of its
/// body, then nothing more; `None` when the webhook closed it or stopped reading within 10 s.
async fn held_body(addr: SocketAddr, ca: String, length: usize, sent: usize) -> Option<TlsStream<TcpStream>> {
    let mut tls = connect(addr, &ca).await.ok()?;
    let head = format!("POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.resize(bytes.len() + sent, b' ');
    tokio::time::timeout(Duration::from_secs(10), tls.write_all(&bytes)).await.ok()?.ok()?;
    tls.flush().await.ok()?;
    Some(tls)
}

/// Valid reviews answered (of `reviews`, one after the other, each within the API server's timeout) and the
/// slowest of them.
async fn valid_reviews(webhook: &Webhook, ca: &str, reviews: usize) -> (usize, Duration) {
    let (mut answered, mut slowest) = (0, Duration::ZERO);
    for _ in 0..reviews {
        let started = Instant::now();
        let review =
            tokio::time::timeout(webhook_timeout(), call(webhook.tls, ca, "POST", "/mutate", fixture("katib-trial")));
        if let Ok(Ok(answer)) = review.await {
            answered += usize::from(answer.status == StatusCode::OK);
        }
        slowest = slowest.max(started.elapsed());
    }
    (answered, slowest)
}

/// Defect: 256 clients sending a body byte by byte held every connection of the webhook, and valid reviews
/// were refused for as long as they kept at it. Now a body must arrive within the body timeout, and when
/// every slot is taken a new connection takes the place of the oldest one still sending its request: valid
/// reviews are answered while the dribblers stay and new ones keep arriving.
#[test]
fn clients_dribbling_a_body_do_not_keep_valid_reviews_out() {
    let (dir, pki) = certified("hostile-dribble");
    let webhook = Webhook::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (answered, slowest) = rt.block_on(async {
        let dribblers = (0..256).map(|_| {
            let (addr, ca) = (webhook.tls, pki.ca.clone());
            async move {
                let mut tls = held_body(addr, ca, 100_000, 1).await?;
                // One byte every 100 ms, for at most 20 s.
                for _ in 0..200 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if tls.write_all(b" ").await.and(tls.flush().await).is_err() {
                        break;
                    }
                }
                Some(())
            }
        });
        let dribbling = tokio::spawn(futures::future::join_all(dribblers));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let arriving = tokio::spawn({
            let (tls, ca) = (webhook.tls, pki.ca.clone());
            async move {
                let mut held = Vec::new();
                for _ in 0..100 {
                    if let Ok(mut s) = connect(tls, &ca).await {
                        let _ =
                            s.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9\r\n\r\n").await;
                        held.push(s);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                held.len()
            }
        });
        let answered = valid_reviews(&webhook, &pki.ca, 10).await;
        dribbling.abort();
        arriving.abort();
        answered
    });
    eprintln!("256 dribbling clients: {answered} of 10 valid reviews answered, the slowest in {slowest:?}");
    assert_eq!(answered, 10, "valid reviews answered while clients dribble bodies");
}

/// A valid review of about `size` bytes: the fixture `katib-trial`, its training container given environment
/// variables until it is that large (many small JSON values: the most memory per byte parsed).
fn large_review(size: usize) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&fixture("katib-trial")).unwrap();
    let base = serde_json::to_vec(&review).unwrap().len();
    let one = serde_json::json!({"name": "V_000000", "value": "x"});
    let count = (size - base) / (one.to_string().len() + 1);
    let env: Vec<Value> = (0..count).map(|i| serde_json::json!({"name": format!("V_{i:06}"), "value": "x"})).collect();
    review["request"]["object"]["spec"]["containers"][0]["env"] = Value::Array(env);
    serde_json::to_vec(&review).unwrap()
}

/// The memory limit of the webhook's Deployment, in KiB.
fn deployment_memory_limit_kib() -> u64 {
    let text = std::fs::read_to_string(root().join("manifests/base/deployment.yaml")).unwrap();
    let limits = text.split("limits:").nth(1).expect("limits in deployment.yaml");
    let memory = limits.lines().find_map(|l| l.trim().strip_prefix("memory:")).expect("a memory limit");
    let mebibytes: u64 = memory.trim().strip_suffix("Mi").expect("a limit in Mi").parse().unwrap();
    mebibytes * 1024
}

/// Defect: bodies held unfinished cost their full size each (200 of 4 MiB: 842 MB), and a single valid review
/// of 4 MiB peaked at 124 MB against the Deployment's 64Mi limit. Now bodies in flight are capped by memory
/// (the oldest one still arriving makes room for a new one), a review decodes only what it reads of the pod,
/// and the worst the webhook admits – every connection holding a request unfinished (headers up to the
/// connection's buffer, bodies up to the cap) while valid 4 MiB reviews are answered – stays under the
/// Deployment's memory limit.
#[test]
fn held_bodies_and_large_reviews_stay_within_the_deployments_memory_limit() {
    let (dir, pki) = certified("hostile-bodies");
    let webhook = Webhook::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let footprint = peak_rss_kib(webhook.pid());
    let review = large_review(4 << 20);
    assert!(review.len() < 4 << 20 && review.len() > 4_000_000, "{}", review.len());
    let single = rt.block_on(call(webhook.tls, &pki.ca, "POST", "/mutate", review.clone())).unwrap();
    assert_eq!(response(single.status, &single.body)["patchType"], "JSONPatch");
    let after_one = peak_rss_kib(webhook.pid());
    let (held, answered) = rt.block_on(async {
        // Headers sent up to the connection's buffer and never finished, on most connections ...
        let headers = (0..192).map(|_| async {
            let mut tls = connect(webhook.tls, &pki.ca).await.ok()?;
            let head = format!("POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}", "a".repeat(15_000));
            tokio::time::timeout(Duration::from_secs(10), tls.write_all(head.as_bytes())).await.ok()?.ok()?;
            Some(tls)
        });
        let _headers: Vec<_> = futures::future::join_all(headers).await;
        // ... bodies of 4 MiB held one byte short on the others ...
        let holders = (0..48).map(|_| held_body(webhook.tls, pki.ca.clone(), 4 << 20, (4 << 20) - 1));
        let held = futures::future::join_all(holders).await.into_iter().flatten().count();
        // ... and valid reviews of 4 MiB at once.
        let reviews = (0..4).map(|_| call(webhook.tls, &pki.ca, "POST", "/mutate", review.clone()));
        let answers = futures::future::join_all(reviews).await;
        (held, answers.into_iter().filter(|a| a.as_ref().is_ok_and(|a| a.status == StatusCode::OK)).count())
    });
    let peak = peak_rss_kib(webhook.pid());
    let limit = deployment_memory_limit_kib();
    eprintln!(
        "footprint {footprint} KiB; one valid review of {} bytes: peak {after_one} KiB; {held} bodies of 4 MiB \
         held, 4 valid reviews of 4 MiB at once ({answered} answered): peak {peak} KiB; the Deployment's limit \
         {limit} KiB",
        review.len()
    );
    assert_eq!(answered, 4, "valid reviews answered beside the held bodies");
    assert!(peak <= limit, "peak RSS {peak} KiB over the Deployment's limit of {limit} KiB");
}

/// A Pushgateway stand-in on loopback answering every request with `status` and a chunked body that does not
/// end: 64 KiB chunks up to `limit` bytes per answer, then it closes. Serves at most 20 connections; the second
/// value counts the answers it finished (the client closed, or the limit was reached).
fn endless_peer(status: &'static str, limit: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let counted = answered.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut s) = stream else { continue };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut request = [0u8; 65536];
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = s.read(&mut request);
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                let mut sent = 0;
                let _ =
                    write!(s, "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n");
                while sent < limit && s.write_all(chunk.as_bytes()).is_ok() {
                    sent += 0x10000;
                }
                counted.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    (addr, answered)
}

/// Defect: a Pushgateway (or anything at its address) answering with a body that never ends grew trialtail by
/// the whole body within the push timeout – gigabytes. Now an answer's body is read only for an error's message,
/// at most its first 512 bytes: a push costs the same whatever the peer sends.
#[test]
fn an_endless_answer_from_the_pushgateway_costs_no_memory() {
    for status in ["200 OK", "500 Internal Server Error"] {
        let (addr, answered) = endless_peer(status, 256 << 20);
        let dir = tempfile::tempdir().unwrap();
        let mut child = follow(dir.path(), &["--pushgateway", &format!("http://{addr}"), "--push-interval", "1s"]);
        let started = Instant::now();
        wait_for("an answer read or refused", || (answered.load(Ordering::Relaxed) >= 1).then_some(()));
        let peak = peak_rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("{status}, endless: an answer in {:?}, peak RSS {peak} KiB", started.elapsed());
        assert!(peak <= 48 * 1024, "{status}: peak RSS {peak} KiB");
    }
}
