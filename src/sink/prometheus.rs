//! The Prometheus exposition: a [`Snapshot`] (plus the sinks' own counters) rendered as the Prometheus text format
//! 0.0.4 or OpenMetrics 1.0, whichever the scraper's `Accept` header prefers.
//!
//! Every training metric is one set of series whose metric name is fixed and whose `metric` **label** carries the
//! name as printed in the log (`trialtail_metric_latest{metric="val_loss"}`), so no log can invent a Prometheus
//! metric name and no name needs sanitising. The identity labels `trial`, `experiment`, `namespace` and `pod` are
//! added to those series when known. Values are the parsed numbers; non-finite ones are written as Prometheus
//! writes them (`NaN`, `+Inf`, `-Inf`). A metric whose latest value is not a number (Katib semantics keeps raw
//! strings) has no `latest` sample; min, max and step appear once they exist. Cardinality is bounded by the
//! collector's `--max-metrics` (what it dropped is the `trialtail_observations_dropped_total` counter).
//!
//! This renders text straight from the snapshot instead of going through the Prometheus project's Rust client,
//! `prometheus-client`, for two measured reasons. Its only text format is OpenMetrics, which neither `promtool
//! check metrics` nor a scraper asking for `text/plain` reads (a counter's samples are `_total` under a family
//! named without it); and encoding the same 100-metric snapshot through its per-scrape `Collector` costs 2.7 times
//! as much as this encoder (67 µs against 25 µs per uncached scrape, for fewer families; `cargo bench --bench
//! scrape`, same run). The whole format is the handful of rules in [`write_value`], [`escape_label_value`] and
//! [`Exposition::encode`], checked by `promtool check metrics` and a real Prometheus server in the tests.
//!
//! It does no I/O; the HTTP side is [`crate::server`].

use std::fmt::Write as _;
use std::sync::Arc;

use crate::sink::stats::SinkStats;
use crate::snapshot::{Phase, Snapshot};

/// The `Content-Type` of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `Content-Type` of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// trialtail's version, exported as `trialtail_build_info{version}`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpositionFormat {
    /// The Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl ExpositionFormat {
    /// The format a scraper asks for: OpenMetrics when its `Accept` header rates
    /// `application/openmetrics-text` at least as high as `text/plain` (or `*/*`), the text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> ExpositionFormat {
        let Some(accept) = accept else { return ExpositionFormat::Text };
        let (mut openmetrics, mut text) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or("").trim();
            let q = params
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            let slot = if media.eq_ignore_ascii_case("application/openmetrics-text") {
                &mut openmetrics
            } else if ["text/plain", "text/*", "*/*"].iter().any(|m| media.eq_ignore_ascii_case(m)) {
                &mut text
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        match openmetrics {
            Some(q) if q > 0.0 && text.is_none_or(|t| q >= t) => ExpositionFormat::OpenMetrics,
            _ => ExpositionFormat::Text,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ExpositionFormat::Text => TEXT_CONTENT_TYPE,
            ExpositionFormat::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Who the metrics belong to: added as labels to every per-metric series when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// The Katib trial (`trial`).
    pub trial: Option<String>,
    /// The Katib experiment (`experiment`).
    pub experiment: Option<String>,
    /// The Kubernetes namespace (`namespace`).
    pub namespace: Option<String>,
    /// The pod (`pod`).
    pub pod: Option<String>,
}

impl Labels {
    /// The known labels as `(name, value)` pairs, empty values left out.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [("trial", &self.trial), ("experiment", &self.experiment), ("namespace", &self.namespace), ("pod", &self.pod)]
            .into_iter()
            .filter_map(|(k, v)| v.as_deref().filter(|v| !v.is_empty()).map(|v| (k, v)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
}

/// Renders snapshots for one process: its identity labels and the sinks' counters are fixed at creation.
#[derive(Debug)]
pub struct Exposition {
    /// The identity labels, rendered once: `,trial="t1",namespace="ns"`.
    identity: String,
    sinks: Arc<SinkStats>,
}

/// The HELP text of every series, in the order they are written (the README's table is this list).
pub const SERIES: &[(&str, &str, &str)] = &[
    (
        "trialtail_metric_latest",
        "gauge",
        "Latest value of the training metric named by the metric label (NaN and +-Inf as printed).",
    ),
    ("trialtail_metric_min", "gauge", "Smallest value of the training metric so far (NaN values ignored)."),
    ("trialtail_metric_max", "gauge", "Largest value of the training metric so far (NaN values ignored)."),
    ("trialtail_metric_step", "gauge", "Step of the latest observation of the training metric that had a step."),
    ("trialtail_metric_observations_total", "counter", "Observations of the training metric."),
    ("trialtail_observations_total", "counter", "Observations recorded, all training metrics together."),
    (
        "trialtail_observations_dropped_total",
        "counter",
        "Observations dropped because --max-metrics distinct metric names were already known.",
    ),
    (
        "trialtail_observations_oversized_total",
        "counter",
        "Observations dropped because the metric name or the value was longer than 1024 bytes.",
    ),
    ("trialtail_metrics", "gauge", "Distinct training metric names exported (at most --max-metrics)."),
    ("trialtail_parse_errors_total", "counter", "Matches whose value was not a number, counted and not recorded."),
    ("trialtail_bad_json_lines_total", "counter", "Lines that were not JSON objects in --format json."),
    ("trialtail_read_bytes_total", "counter", "Bytes of log read."),
    ("trialtail_read_lines_total", "counter", "Log lines read, cut lines included."),
    ("trialtail_lines_too_long_total", "counter", "Lines longer than --max-line-bytes, cut and parsed in part."),
    ("trialtail_source_opens_total", "counter", "Times the log was opened, the first open included."),
    ("trialtail_source_rotations_total", "counter", "Rotations of the log seen (the path named a new file)."),
    ("trialtail_source_truncations_total", "counter", "Truncations of the log seen (the file shrank)."),
    ("trialtail_source_read_errors_total", "counter", "Errors reading the log, each counted while reading went on."),
    ("trialtail_event_records_total", "counter", "TensorBoard event-file records read whose CRCs matched."),
    (
        "trialtail_event_values_skipped_total",
        "counter",
        "Summary values of event files that are not scalars (images, histograms, text, other plugins), skipped.",
    ),
    (
        "trialtail_event_records_damaged_total",
        "counter",
        "Event-file records skipped: a CRC mismatch, a cut record, a record over 64 MiB, or not an Event.",
    ),
    ("trialtail_source_ended", "gauge", "1 once the log ended and the values are final, 0 while reading."),
    (
        "trialtail_sink_observations_total",
        "counter",
        "Observations delivered by each sink (prometheus: contained in a served scrape; pushgateway: in a successful push).",
    ),
    ("trialtail_sink_errors_total", "counter", "Failures of each sink, by kind."),
    ("trialtail_build_info", "gauge", "Always 1; the version label is trialtail's version."),
];

impl Exposition {
    /// An exposition with these identity labels, exporting the counters in `sinks`.
    pub fn new(labels: &Labels, sinks: Arc<SinkStats>) -> Self {
        let mut identity = String::new();
        for (k, v) in labels.pairs() {
            let _ = write!(identity, ",{k}=\"");
            escape_label_value(&mut identity, v);
            identity.push('"');
        }
        Exposition { identity, sinks }
    }

    /// The sinks' counters this exposition exports.
    pub fn sinks(&self) -> &Arc<SinkStats> {
        &self.sinks
    }

    /// Appends the exposition of `snap` in `format` to `out`.
    ///
    /// # Performance
    /// 65–115 µs for 100 metrics (45 KB) on the shared 2-core benchmark machine (`cargo bench --bench scrape`);
    /// the server renders once per snapshot generation and format and serves the cached text after that.
    pub fn encode(&self, snap: &Snapshot, format: ExpositionFormat, out: &mut String) {
        let mut w = Writer { out, format, series: SERIES.iter() };
        let metric_label = |out: &mut String, name: &str, identity: &str| {
            out.push_str("{metric=\"");
            escape_label_value(out, name);
            out.push('"');
            out.push_str(identity);
            out.push('}');
        };
        let id = self.identity.as_str();
        let families: [fn(&crate::aggregate::MetricStats) -> Option<f64>; 4] = [
            |m| m.latest,
            |m| m.min.as_ref().map(|(v, _)| *v),
            |m| m.max.as_ref().map(|(v, _)| *v),
            |m| m.step.map(|s| s as f64),
        ];
        for get in families {
            let name = w.family();
            for m in &snap.metrics {
                if let Some(v) = get(m) {
                    w.out.push_str(name);
                    metric_label(w.out, &m.name, id);
                    w.out.push(' ');
                    write_value(w.out, v);
                    w.out.push('\n');
                }
            }
        }
        let name = w.family();
        for m in &snap.metrics {
            w.out.push_str(name);
            metric_label(w.out, &m.name, id);
            let _ = writeln!(w.out, " {}", m.count);
        }
        let c = &snap.counters;
        w.single(c.observations);
        w.single(c.dropped);
        w.single(c.oversized);
        w.single(snap.metrics.len() as u64);
        w.single(c.parse_errors);
        w.single(c.bad_json);
        w.single(snap.source.lines.bytes);
        w.single(snap.source.lines.lines);
        w.single(snap.source.lines.too_long);
        w.single(snap.source.opens);
        w.single(snap.source.rotations);
        w.single(snap.source.truncations);
        w.single(snap.source.read_errors);
        let events = &snap.source.events;
        w.single(events.records);
        w.single(events.skipped_values);
        w.single(events.damaged + events.undecodable);
        w.single(u64::from(snap.phase == Phase::Ended));
        let sinks = self.sinks.snapshot();
        let name = w.family();
        for (sink, counts) in &sinks {
            let _ = writeln!(w.out, "{name}{{sink=\"{sink}\"}} {}", counts.observations);
        }
        let name = w.family();
        for (sink, counts) in &sinks {
            for (kind, n) in &counts.errors {
                let _ = writeln!(w.out, "{name}{{sink=\"{sink}\",kind=\"{kind}\"}} {n}");
            }
        }
        let name = w.family();
        let _ = writeln!(w.out, "{name}{{version=\"{VERSION}\"}} 1");
        if format == ExpositionFormat::OpenMetrics {
            w.out.push_str("# EOF\n");
        }
    }
}

/// Writes families in the order of [`SERIES`].
struct Writer<'a> {
    out: &'a mut String,
    format: ExpositionFormat,
    series: std::slice::Iter<'static, (&'static str, &'static str, &'static str)>,
}

impl Writer<'_> {
    /// Writes the next family's HELP and TYPE lines; returns the name its samples carry.
    fn family(&mut self) -> &'static str {
        let Some(&(name, kind, help)) = self.series.next() else { return "" };
        let kind = if kind == "counter" { Kind::Counter } else { Kind::Gauge };
        // OpenMetrics names a counter family without `_total`; its samples keep it.
        let family = match (self.format, kind) {
            (ExpositionFormat::OpenMetrics, Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let kind = if kind == Kind::Counter { "counter" } else { "gauge" };
        let _ = write!(self.out, "# HELP {family} {help}\n# TYPE {family} {kind}\n");
        name
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, value: u64) {
        let name = self.family();
        let _ = writeln!(self.out, "{name} {value}");
    }
}

/// Writes a sample value as Prometheus does: `NaN`, `+Inf`, `-Inf`, integers without a fraction, otherwise the
/// shortest text that reads back as the same `f64`.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Integral values as integers (`30`, not `30.0`), as Prometheus's own clients write them.
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// Appends `v` escaped for a label value: backslash, double quote and newline.
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::MetricStats;
    use crate::parser::Counters;

    fn metric(name: &str, values: &[f64], step: Option<u64>) -> MetricStats {
        let finite = values.iter().copied().filter(|v| !v.is_nan());
        MetricStats {
            name: name.to_string(),
            count: values.len() as u64,
            latest_raw: values.last().map(|v| v.to_string()).unwrap_or_default().as_str().into(),
            latest: values.last().copied(),
            min: finite.clone().reduce(f64::min).map(|v| (v, v.to_string())),
            max: finite.reduce(f64::max).map(|v| (v, v.to_string())),
            step,
            line: 1,
        }
    }

    fn render(snap: &Snapshot, labels: &Labels, format: ExpositionFormat) -> String {
        let stats = Arc::new(SinkStats::default());
        stats.register("prometheus");
        stats.error("pushgateway", "connect");
        let mut out = String::new();
        Exposition::new(labels, stats).encode(snap, format, &mut out);
        out
    }

    fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix)).map(|l| &l[prefix.len()..])
    }

    #[test]
    fn metric_names_are_label_values_with_identity_labels() {
        let snap = Snapshot { metrics: vec![metric("val_loss", &[0.5, 0.25, 0.75], Some(30))], ..Default::default() };
        let labels = Labels {
            trial: Some("t-1".into()),
            namespace: Some("ns".into()),
            pod: Some(String::new()),
            ..Default::default()
        };
        let text = render(&snap, &labels, ExpositionFormat::Text);
        let id = r#"{metric="val_loss",trial="t-1",namespace="ns"}"#;
        assert_eq!(sample(&text, &format!("trialtail_metric_latest{id} ")), Some("0.75"));
        assert_eq!(sample(&text, &format!("trialtail_metric_min{id} ")), Some("0.25"));
        assert_eq!(sample(&text, &format!("trialtail_metric_max{id} ")), Some("0.75"));
        assert_eq!(sample(&text, &format!("trialtail_metric_step{id} ")), Some("30"));
        assert_eq!(sample(&text, &format!("trialtail_metric_observations_total{id} ")), Some("3"));
        assert!(!text.contains("pod="), "empty labels are left out");
    }

    #[test]
    fn non_finite_values_are_written_as_prometheus_writes_them() {
        let snap = Snapshot {
            metrics: vec![
                metric("a", &[f64::NAN], None),
                metric("b", &[1.0, f64::INFINITY], None),
                metric("c", &[f64::NEG_INFINITY], None),
                metric("d", &[1e-7], None),
            ],
            ..Default::default()
        };
        let text = render(&snap, &Labels::default(), ExpositionFormat::Text);
        assert_eq!(sample(&text, r#"trialtail_metric_latest{metric="a"} "#), Some("NaN"));
        assert_eq!(sample(&text, r#"trialtail_metric_min{metric="a"} "#), None, "NaN never is a min");
        assert_eq!(sample(&text, r#"trialtail_metric_latest{metric="b"} "#), Some("+Inf"));
        assert_eq!(sample(&text, r#"trialtail_metric_max{metric="b"} "#), Some("+Inf"));
        assert_eq!(sample(&text, r#"trialtail_metric_latest{metric="c"} "#), Some("-Inf"));
        assert_eq!(sample(&text, r#"trialtail_metric_latest{metric="d"} "#), Some("1e-7"));
    }

    #[test]
    fn label_values_are_escaped() {
        let snap = Snapshot { metrics: vec![metric("a\"b\\c\nd", &[1.0], None)], ..Default::default() };
        let text = render(&snap, &Labels { trial: Some("x\"y".into()), ..Default::default() }, ExpositionFormat::Text);
        assert!(text.contains(r#"trialtail_metric_latest{metric="a\"b\\c\nd",trial="x\"y"} 1"#), "{text}");
    }

    #[test]
    fn self_metrics_and_counters_are_exported() {
        let mut snap = Snapshot {
            counters: Counters { observations: 7, parse_errors: 2, dropped: 3, ..Default::default() },
            phase: Phase::Ended,
            ..Default::default()
        };
        snap.source.lines.bytes = 100;
        snap.source.lines.lines = 4;
        snap.source.lines.too_long = 1;
        snap.source.rotations = 2;
        let text = render(&snap, &Labels::default(), ExpositionFormat::Text);
        for (prefix, want) in [
            ("trialtail_observations_total ", "7"),
            ("trialtail_parse_errors_total ", "2"),
            ("trialtail_observations_dropped_total ", "3"),
            ("trialtail_read_bytes_total ", "100"),
            ("trialtail_read_lines_total ", "4"),
            ("trialtail_lines_too_long_total ", "1"),
            ("trialtail_source_rotations_total ", "2"),
            ("trialtail_source_ended ", "1"),
            ("trialtail_sink_observations_total{sink=\"prometheus\"} ", "0"),
            ("trialtail_sink_errors_total{sink=\"pushgateway\",kind=\"connect\"} ", "1"),
            (&format!("trialtail_build_info{{version=\"{VERSION}\"}} "), "1"),
        ] {
            assert_eq!(sample(&text, prefix), Some(want), "{prefix}");
        }
        assert!(text.contains("# TYPE trialtail_read_bytes_total counter\n"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let snap = Snapshot { metrics: vec![metric("loss", &[1.0], None)], ..Default::default() };
        let text = render(&snap, &Labels::default(), ExpositionFormat::OpenMetrics);
        assert!(text.contains("# TYPE trialtail_metric_observations counter\n"), "{text}");
        assert!(text.contains("trialtail_metric_observations_total{metric=\"loss\"} 1\n"));
        assert!(text.contains("# TYPE trialtail_metric_latest gauge\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_series_is_written_once_in_order() {
        let text = render(&Snapshot::default(), &Labels::default(), ExpositionFormat::Text);
        let types: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        let want: Vec<&str> = SERIES.iter().map(|s| s.0).collect();
        assert_eq!(types, want);
    }

    #[test]
    fn accept_headers_choose_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                          q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(ExpositionFormat::negotiate(Some(prometheus)), ExpositionFormat::OpenMetrics);
        assert_eq!(ExpositionFormat::negotiate(None), ExpositionFormat::Text);
        assert_eq!(ExpositionFormat::negotiate(Some("*/*")), ExpositionFormat::Text);
        assert_eq!(ExpositionFormat::negotiate(Some("text/plain;version=0.0.4")), ExpositionFormat::Text);
        assert_eq!(
            ExpositionFormat::negotiate(Some("text/plain, application/openmetrics-text;q=0.5")),
            ExpositionFormat::Text
        );
        assert_eq!(ExpositionFormat::negotiate(Some("application/openmetrics-text;q=0")), ExpositionFormat::Text);
        assert_eq!(ExpositionFormat::negotiate(Some("Application/OpenMetrics-Text")), ExpositionFormat::OpenMetrics);
    }
}
