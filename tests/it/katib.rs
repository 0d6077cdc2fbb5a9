//! Katib conformance: examples of Katib's parsing (TEXT and JSON, the sentinel) as test cases; Katib's own code
//! judges the same semantics over many more inputs in `katib_oracle.rs`.
//!
//! Every case runs the library's parser in Katib semantics and compares the report rows Katib's collector
//! would send: (name, value as printed, timestamp). The inputs are the contract's own examples.

use trialtail::katib::report::KatibReport;
use trialtail::lines::LineBuffer;
use trialtail::parser::Parser;
use trialtail::rules::{LineFormat, RuleSpec, Rules, Semantics};

const ZERO: &str = "0001-01-01T00:00:00Z";

fn report(names: &[&str], filters: &[&str], format: LineFormat, log: &str) -> Vec<(String, String, String)> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let specs: Vec<RuleSpec> = filters.iter().map(|f| RuleSpec::Filter(f.to_string())).collect();
    let rules = Rules::new(&specs, &names, Semantics::Katib, format).unwrap();
    let mut c = Parser::new(rules, 1000);
    let mut lines = LineBuffer::new(1 << 16);
    let mut r = KatibReport::new(names[0].clone());
    lines.feed_into(log.as_bytes(), &mut c.lines(&mut r));
    lines.finish_into(&mut c.lines(&mut r));
    r.rows().iter().map(|r| (r.name.to_string(), r.value.to_string(), r.time.to_string())).collect()
}

fn rows(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect()
}

fn text(names: &[&str], log: &str) -> Vec<(String, String, String)> {
    report(names, &[], LineFormat::Text, log)
}

#[test]
fn default_filter_keeps_values_as_printed() {
    let log = "loss=3.0e-02\naccuracy=.98\nScore=-7.53e-05\nScore=1E0\n888\n";
    assert_eq!(
        text(&["loss", "accuracy", "Score"], log),
        rows(&[
            ("loss", "3.0e-02", ZERO),
            ("accuracy", ".98", ZERO),
            ("Score", "-7.53e-05", ZERO),
            ("Score", "1E0", ZERO)
        ])
    );
}

#[test]
fn default_filter_reads_nan_as_an_empty_value() {
    assert_eq!(text(&["loss"], "loss=nan\n"), rows(&[("loss", "", ZERO)]));
}

#[test]
fn default_filter_names_take_pipes_and_dashes() {
    assert_eq!(text(&["a|b"], "a|b=1\n"), rows(&[("a|b", "1", ZERO)]));
    assert_eq!(text(&["x"], "x==3\n"), rows(&[("x", "", ZERO)]));
    assert_eq!(text(&["a", "x2"], "a=1x2=3\n"), rows(&[("a", "1", ZERO), ("x2", "3", ZERO)]));
}

#[test]
fn names_must_match_exactly_after_the_substring_prefilter() {
    // `train_loss` contains `loss`, so the line is looked at, but only the exact name counts.
    assert_eq!(text(&["loss"], "train_loss=0.1 loss=0.2\n"), rows(&[("loss", "0.2", ZERO)]));
}

#[test]
fn unicode_classes_are_ascii_as_in_go() {
    // Go's \w does not match `é`, so the name is `e` and not `é`… and neither is `loss`.
    assert_eq!(text(&["loss"], "lossé=1\n"), rows(&[("loss", "unavailable", ZERO)]));
    // Go's \s has no vertical tab.
    assert_eq!(text(&["loss"], "loss\x0b=1\n"), rows(&[("loss", "unavailable", ZERO)]));
    assert_eq!(text(&["loss"], "loss\t= 1\n"), rows(&[("loss", "1", ZERO)]));
}

#[test]
fn metric_names_with_spaces_work_with_the_xgboost_filter() {
    let got = report(
        &["valid_1 auc", "loss"],
        &[r"(\w+\s\w+)\s:\s((-?\d+)(\.\d+)?)"],
        LineFormat::Text,
        "[3] valid_1 auc : 0.93\nloss : 1.0\n",
    );
    assert_eq!(got, rows(&[("valid_1 auc", "0.93", ZERO)]));
}

#[test]
fn the_docs_custom_filter_matches_what_go_matches() {
    let filter = r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}";
    let line = "2024-03-04T17:55:08Z INFO     {metricName: accuracy, metricValue: 0.8078};{metricName: loss, metricValue: 0.5183}\n";
    let t = "2024-03-04T17:55:08Z";
    assert_eq!(
        report(&["accuracy", "loss"], &[filter], LineFormat::Text, line),
        rows(&[("accuracy", "0.8078", t), ("loss", "0.5183", t)])
    );
    for value in [".333", "-.333", "888."] {
        let line = format!("{{metricName: accuracy, metricValue: {value}}}\n");
        assert_eq!(
            report(&["accuracy"], &[filter], LineFormat::Text, &line),
            rows(&[("accuracy", "unavailable", ZERO)]),
            "{value}"
        );
    }
}

#[test]
fn filters_apply_in_order_and_can_duplicate() {
    let got = report(&["loss"], &[r"(loss)=(\S+)", r"(loss)=(\d\.\d)"], LineFormat::Text, "loss=0.5 loss=0.7\n");
    assert_eq!(
        got,
        rows(&[("loss", "0.5", ZERO), ("loss", "0.7", ZERO), ("loss", "0.5", ZERO), ("loss", "0.7", ZERO)])
    );
}

#[test]
fn values_are_not_validated() {
    let got = report(
        &["genotype"],
        &[r"([\w-]+)=(Genotype.*)"],
        LineFormat::Text,
        "genotype=Genotype(normal=[('sep_conv', 0)])\n",
    );
    assert_eq!(got, rows(&[("genotype", "Genotype(normal=[('sep_conv', 0)])", ZERO)]));
}

#[test]
fn the_first_token_is_the_timestamp_when_rfc3339_verbatim() {
    let log = "2024-03-04T17:55:08Z loss=1\n\
               2024-03-04T17:55:08.123456789+01:00 loss=2\n\
               2024-03-04 17:55:08 loss=3\n\
               2024-03-04T17:55:08 loss=4\n";
    assert_eq!(
        text(&["loss"], log),
        rows(&[
            ("loss", "1", "2024-03-04T17:55:08Z"),
            ("loss", "2", "2024-03-04T17:55:08.123456789+01:00"),
            ("loss", "3", ZERO),
            ("loss", "4", ZERO),
        ])
    );
}

#[test]
fn carriage_returns_are_kept_and_lines_split_on_newline_only() {
    // `\r` is not a line break for Katib: both values sit on one line, both are found.
    assert_eq!(text(&["loss"], "loss=1\rloss=2\r\n"), rows(&[("loss", "1", ZERO), ("loss", "2", ZERO)]));
}

#[test]
fn without_the_objective_the_report_is_the_unavailable_sentinel() {
    assert_eq!(text(&["accuracy", "loss"], "loss=0.5\n"), rows(&[("accuracy", "unavailable", ZERO)]));
    assert_eq!(text(&["accuracy", "loss"], ""), rows(&[("accuracy", "unavailable", ZERO)]));
}

fn json(names: &[&str], log: &str) -> Vec<(String, String, String)> {
    report(names, &[], LineFormat::Json, log)
}

#[test]
fn json_takes_string_values_only_in_metric_order() {
    let log = r#"{"acc": 0.9, "loss": "0.22", "timestamp": "2021-12-02T05:27:27Z"}"#;
    assert_eq!(json(&["loss", "acc"], log), rows(&[("loss", "0.22", "2021-12-02T05:27:27Z")]));
    let log = r#"{"acc": "0.9", "loss": "0.22"}"#;
    assert_eq!(json(&["loss", "acc"], log), rows(&[("loss", "0.22", ZERO), ("acc", "0.9", ZERO)]));
}

#[test]
fn json_float_timestamps_keep_katibs_nanosecond_quirk() {
    let log = r#"{"loss": "0.22", "timestamp": 1638422847.28721}"#;
    assert_eq!(json(&["loss"], log), rows(&[("loss", "0.22", "2021-12-02T05:27:27.000028721Z")]));
    let log = r#"{"loss": "0.22", "timestamp": 1638422847}"#;
    assert_eq!(json(&["loss"], log), rows(&[("loss", "0.22", "2021-12-02T05:27:27Z")]));
}

#[test]
fn json_missing_or_odd_timestamps_are_the_zero_time() {
    for ts in ["", r#", "timestamp": null"#, r#", "timestamp": true"#, r#", "timestamp": "yesterday""#] {
        let log = format!(r#"{{"loss": "0.22"{ts}}}"#);
        assert_eq!(json(&["loss"], &log), rows(&[("loss", "0.22", ZERO)]), "{ts}");
    }
}

#[test]
fn json_skips_empty_lines_and_keeps_going_after_a_bad_one() {
    let log = "\n{\"loss\": \"1\"}\nnot json\n{\"loss\": \"2\"}\n";
    assert_eq!(json(&["loss"], log), rows(&[("loss", "1", ZERO), ("loss", "2", ZERO)]));
}
