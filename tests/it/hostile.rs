//! Hostile inputs and broken peers: what one pod, one client or one peer can do to trialtail's servers and
//! clients, each attack at the smallest size that shows it, on loopback, every loop bounded.
//!
//! Memory is the peak RSS of the process under attack (`VmHWM`, [`peak_rss_kib`]) above its own footprint
//! measured just before the attack; hangs are bounded by a deadline in the test. The figures are printed
//! (`--nocapture`) so a change can be compared with what the fix measured.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::Value;

use crate::root;
use crate::support::peak_rss_kib;
use crate::webhook::{Webhook, call, certified, fixture};

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
