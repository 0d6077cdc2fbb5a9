//! The webhook's own counters and their exposition on `/metrics`: requests, reviews by outcome, mutations,
//! errors by kind, certificate reloads and a review-latency histogram.
//!
//! Written by hand in the Prometheus text format 0.0.4, like the run's `/metrics`: the Prometheus project's Rust
//! client (`prometheus-client`) encodes OpenMetrics only, which `promtool check metrics` and scrapers asking for
//! `text/plain` do not read (see [`crate::sink::prometheus`] for the measured comparison).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::mutate::Outcome;

/// The review latency histogram's upper bounds, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// The error kinds counted in `trialtail_webhook_errors_total{kind}`.
const ERROR_KINDS: [&str; 16] = [
    "bad_request",
    "too_large",
    "method_not_allowed",
    "not_found",
    "read_body",
    "body_timeout",
    "busy",
    "body_evicted",
    "tls_handshake",
    "cert_reload",
    "accept",
    "connection_limit",
    "connection_evicted",
    "write_timeout",
    "cert_secret",
    "ca_bundle",
];
const OUTCOMES: [Outcome; 6] = [
    Outcome::Injected,
    Outcome::NotSelected,
    Outcome::AlreadyInjected,
    Outcome::Invalid,
    Outcome::OtherCollector,
    Outcome::Removed,
];

/// The webhook's own counters, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    outcomes: [AtomicU64; OUTCOMES.len()],
    errors: [AtomicU64; ERROR_KINDS.len()],
    cert_reloads: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
}

impl Metrics {
    /// Counts a failure of `kind` (one of the known kinds; others are ignored).
    pub(super) fn error(&self, kind: &'static str) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a review's outcome and its latency.
    pub(super) fn outcome(&self, outcome: Outcome, took: Duration) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.outcomes[i].fetch_add(1, Ordering::Relaxed);
        }
        self.observe(took);
    }

    /// Counts a request received on the HTTPS port.
    pub(super) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a certificate reload.
    pub(super) fn cert_reloaded(&self) {
        self.cert_reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a review's latency.
    pub(super) fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, series: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in series {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        counter(
            "trialtail_webhook_requests_total",
            "HTTP requests received on the webhook's HTTPS port.",
            &[(String::new(), get(&self.requests))],
        );
        let outcomes: Vec<_> = OUTCOMES
            .iter()
            .zip(&self.outcomes)
            .map(|(o, n)| (format!("{{outcome=\"{}\"}}", o.kind()), get(n)))
            .collect();
        counter("trialtail_webhook_reviews_total", "Pod admission reviews answered, by outcome.", &outcomes);
        counter(
            "trialtail_webhook_mutations_total",
            "Pods the sidecar was added to.",
            &[(String::new(), get(&self.outcomes[0]))],
        );
        let errors: Vec<_> =
            ERROR_KINDS.iter().zip(&self.errors).map(|(k, n)| (format!("{{kind=\"{k}\"}}"), get(n))).collect();
        counter("trialtail_webhook_errors_total", "Requests and events that failed, by kind.", &errors);
        counter(
            "trialtail_webhook_cert_reloads_total",
            "Times a changed certificate and key were loaded.",
            &[(String::new(), get(&self.cert_reloads))],
        );
        let name = "trialtail_webhook_review_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time to answer an admission review, body read to response.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.latency_sum_nanos) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_metrics_render_counters_and_a_latency_histogram() {
        let m = Metrics::default();
        m.requests.fetch_add(3, Ordering::Relaxed);
        m.outcome(Outcome::Injected, Duration::from_millis(2));
        m.outcome(Outcome::OtherCollector, Duration::from_millis(2));
        m.outcome(Outcome::Removed, Duration::from_millis(2));
        m.error("bad_request");
        let text = m.render();
        for line in [
            "trialtail_webhook_requests_total 3\n",
            "trialtail_webhook_mutations_total 1\n",
            "trialtail_webhook_reviews_total{outcome=\"injected\"} 1\n",
            "trialtail_webhook_reviews_total{outcome=\"other_collector\"} 1\n",
            "trialtail_webhook_reviews_total{outcome=\"removed\"} 1\n",
            "trialtail_webhook_errors_total{kind=\"bad_request\"} 1\n",
            "trialtail_webhook_review_duration_seconds_bucket{le=\"0.001\"} 0\n",
            "trialtail_webhook_review_duration_seconds_bucket{le=\"0.0025\"} 3\n",
            "trialtail_webhook_review_duration_seconds_count 3\n",
        ] {
            assert!(text.contains(line), "{line}in:\n{text}");
        }
    }
}
