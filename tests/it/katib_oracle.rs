//! Katib's own code as the judge of the Katib semantics: the same bytes go to Katib's `CollectObservationLog`
//! (the oracle, `tests/katib/oracle/`, importing `github.com/kubeflow/katib v0.19.0`) and to trialtail, and the
//! rows must be equal – over the hand-written hard cases (`tests/katib/cases/hard.jsonl`) and over cases from the
//! seeded generator (`tests/katib/gen.py`).
//!
//! The one kind of deliberate difference is where Katib reports nothing at all: its collector exits on an error
//! (a JSON line `encoding/json` refuses, an invalid filter, a `-format` other than TEXT/JSON), gRPC refuses a row
//! that is not UTF-8, or its DB manager refuses a year outside 0001–9999. There trialtail keeps the rows it can,
//! and the test checks exactly that: the rows of the lines Katib could read, values made valid UTF-8, the zero
//! time for a year the DB refuses. docs/katib.md's exactness section lists these exceptions.

use std::collections::BTreeMap;

use trialtail::katib::report::KatibReport;
use trialtail::lines::{KATIB_MAX_LINE_BYTES, LineBuffer};
use trialtail::parser::Parser;
use trialtail::rules::{LineFormat, RuleSpec, Rules, Semantics};

use crate::support::katib::{self, Answer, Case, Row, year_out_of_range};

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// What trialtail reports for `case` in the drop-in's semantics (names and filters as Katib splits them), or why
/// it refuses the case (an invalid filter: exit 2).
fn trialtail_rows(case: &Case) -> Result<Vec<Row>, String> {
    let format = match case.format.as_str() {
        "TEXT" => LineFormat::Text,
        "JSON" => LineFormat::Json,
        other => return Err(format!("-format {other:?} is refused at start-up")),
    };
    let specs: Vec<RuleSpec> = case.filters.iter().cloned().map(RuleSpec::Filter).collect();
    let rules = Rules::new(&specs, &case.metrics, Semantics::Katib, format).map_err(|e| e.to_string())?;
    let mut parser = Parser::new(rules, 100_000);
    let mut lines = LineBuffer::new(KATIB_MAX_LINE_BYTES);
    let mut report = KatibReport::new(case.metrics[0].clone());
    lines.feed_into(&case.bytes(), &mut parser.lines(&mut report));
    lines.finish_into(&mut parser.lines(&mut report));
    Ok(report.rows().iter().map(|r| Row::new(r.name, r.value, r.time)).collect())
}

/// Why Katib reports nothing for a case, when it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Nothing {
    /// A JSON line `encoding/json` refuses: `CollectObservationLog` returns an error, the collector exits.
    JsonLine,
    /// `-format` is neither TEXT nor JSON.
    Format,
    /// An invalid filter: Katib keeps a nil regexp and panics at the first metric line.
    Panic,
    /// Any other error of `CollectObservationLog`.
    Error,
    /// A name or value that is not UTF-8: `proto.Marshal` refuses the report.
    Wire,
    /// A year outside 0001–9999 (a JSON epoch beyond ±1e15): the DB manager refuses the report.
    Year,
}

/// Why Katib reports nothing for `answer`, if it does not.
fn nothing(answer: &Answer) -> Option<Nothing> {
    match (&answer.kind, &answer.error) {
        (Some(kind), _) if kind == "panic" => Some(Nothing::Panic),
        (_, Some(e)) if e.starts_with("failed to parse the json object") => Some(Nothing::JsonLine),
        (_, Some(e)) if e.contains("format must be set") => Some(Nothing::Format),
        (_, Some(_)) => Some(Nothing::Error),
        _ if answer.wire_error.is_some() => Some(Nothing::Wire),
        _ if answer.rows.iter().any(|r| year_out_of_range(&r.time_stamp)) => Some(Nothing::Year),
        _ => None,
    }
}

/// Katib's rows as trialtail reports them: values made valid UTF-8 (where gRPC would refuse Katib's), the zero
/// time for a year Katib's DB manager would refuse.
fn as_trialtail_reports(answer: &Answer) -> Vec<Row> {
    answer
        .rows
        .iter()
        .map(|r| {
            let r = lossy(r);
            let time = if year_out_of_range(&r.time_stamp) { ZERO_TIME } else { &r.time_stamp };
            Row::new(&r.name, &r.value, time)
        })
        .collect()
}

/// Compares trialtail with Katib on `cases`; returns the number of cases per verdict, or panics with every
/// disagreement.
fn judge(cases: &[Case], answers: &[Answer], oracle: &std::path::Path) -> BTreeMap<String, usize> {
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let mut differences = Vec::new();
    let mut json_aborts = Vec::new();
    let mut refused = Vec::new();
    for (case, answer) in cases.iter().zip(answers) {
        let ours = trialtail_rows(case);
        let why = nothing(answer);
        let verdict = match (why, &ours) {
            (Some(Nothing::JsonLine), _) => {
                json_aborts.push(case.clone());
                "Katib reports nothing: a JSON line it refuses".to_string()
            }
            // trialtail reads a log Katib cannot (a filter RE2 refuses but Rust's regex takes, a format the
            // drop-in refuses at start-up): nothing of Katib's to compare with.
            (Some(n @ (Nothing::Panic | Nothing::Format | Nothing::Error)), _) => {
                format!("Katib reports nothing: {n:?}")
            }
            // An invalid filter: trialtail refuses it at start-up (exit 2); Katib must crash on it too.
            (_, Err(e)) if e.contains("--filter") => {
                refused.push(case.clone());
                "both refuse the filter".to_string()
            }
            (why, _) => {
                let expected = as_trialtail_reports(answer);
                if ours.as_ref() != Ok(&expected) {
                    differences.push(format!("{}: Katib {expected:?}\n    trialtail {ours:?}", case.id));
                }
                match why {
                    None => "equal".to_string(),
                    Some(n) => format!("Katib reports nothing, trialtail its rows: {n:?}"),
                }
            }
        };
        *verdicts.entry(verdict).or_default() += 1;
    }
    differences.extend(json_lines_katib_can_read(&json_aborts, oracle));
    differences.extend(filters_katib_crashes_on(&refused, oracle));
    assert!(differences.is_empty(), "{} disagreements with Katib:\n{}", differences.len(), differences.join("\n"));
    verdicts
}

fn lossy(r: &Row) -> Row {
    use base64::Engine as _;
    let text = |plain: &str, b64: &Option<String>| match b64 {
        Some(b) => String::from_utf8_lossy(&base64::engine::general_purpose::STANDARD.decode(b).unwrap()).into_owned(),
        None => plain.to_string(),
    };
    Row::new(&text(&r.name, &r.name_b64), &text(&r.value, &r.value_b64), &r.time_stamp)
}

/// Where one JSON line makes Katib report nothing, trialtail keeps the other lines: on the log without the lines
/// Katib refuses (each line asked of Katib alone), trialtail must report what Katib reports.
fn json_lines_katib_can_read(aborts: &[Case], oracle: &std::path::Path) -> Vec<String> {
    let mut singles = Vec::new();
    for (i, case) in aborts.iter().enumerate() {
        for (j, line) in case.bytes().split(|&b| b == b'\n').enumerate() {
            singles.push(case.with_bytes(format!("{i}/{j}"), line));
        }
    }
    let answers = katib::oracle(oracle, &singles);
    let refused: std::collections::BTreeSet<&str> =
        singles.iter().zip(&answers).filter(|(_, a)| a.error.is_some()).map(|(c, _)| c.id.as_str()).collect();
    let kept: Vec<Case> = aborts
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let bytes = case.bytes();
            let lines: Vec<&[u8]> = bytes
                .split(|&b| b == b'\n')
                .enumerate()
                .filter(|(j, _)| !refused.contains(format!("{i}/{j}").as_str()))
                .map(|(_, l)| l)
                .collect();
            case.with_bytes(case.id.clone(), &lines.join(&b'\n'))
        })
        .collect();
    let answers = katib::oracle(oracle, &kept);
    kept.iter()
        .zip(&answers)
        .filter_map(|(case, answer)| {
            let (ours, expected) = (trialtail_rows(case), as_trialtail_reports(answer));
            (ours.as_ref() != Ok(&expected)).then(|| {
                format!("{} (without the lines Katib refuses): Katib {expected:?}\n    trialtail {ours:?}", case.id)
            })
        })
        .collect()
}

/// trialtail refuses a filter at start-up; Katib keeps it and crashes at the first line holding a metric name.
fn filters_katib_crashes_on(refused: &[Case], oracle: &std::path::Path) -> Vec<String> {
    let probes: Vec<Case> =
        refused.iter().map(|c| c.with_bytes(c.id.clone(), format!("{}\n", c.metrics[0]).as_bytes())).collect();
    let answers = katib::oracle(oracle, &probes);
    probes
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.kind.as_deref() != Some("panic"))
        .map(|(c, a)| format!("{}: trialtail refuses {:?}, Katib runs it: {a:?}", c.id, c.filters))
        .collect()
}

#[test]
fn katib_semantics_equal_katibs_own_parser_on_the_hard_cases() {
    let Some(bins) = katib::bins() else { return };
    let cases = katib::hard_cases();
    let answers = katib::oracle(&bins.oracle, &cases);
    let verdicts = judge(&cases, &answers, &bins.oracle);
    eprintln!("hard cases: {verdicts:?}");
    assert!(verdicts["equal"] >= cases.len() * 3 / 4, "most hard cases are plain agreements: {verdicts:?}");
}

#[test]
fn katib_semantics_equal_katibs_own_parser_on_generated_cases() {
    let Some(bins) = katib::bins() else { return };
    for seed in [1, 2] {
        let cases = katib::generated_cases(seed, 3000);
        let answers = katib::oracle(&bins.oracle, &cases);
        let verdicts = judge(&cases, &answers, &bins.oracle);
        eprintln!("generated cases, seed {seed}: {verdicts:?}");
    }
}

/// The same hard cases through the command line, `trialtail run --katib-semantics --output json`, where
/// `--metrics` can carry the case's names (no `,` or `;`, no spaces around, none empty).
#[test]
fn run_katib_semantics_prints_the_rows_katibs_own_parser_finds() {
    let Some(bins) = katib::bins() else { return };
    let cases: Vec<Case> = katib::hard_cases()
        .into_iter()
        .filter(|c| ["TEXT", "JSON"].contains(&c.format.as_str()))
        .filter(|c| c.metrics.iter().all(|m| !m.is_empty() && !m.contains([',', ';']) && m.trim() == m))
        .collect();
    let answers = katib::oracle(&bins.oracle, &cases);
    let dir = tempfile::tempdir().unwrap();
    let (mut compared, mut differences) = (0, Vec::new());
    for (case, answer) in cases.iter().zip(&answers) {
        if !matches!(nothing(answer), None | Some(Nothing::Wire | Nothing::Year)) {
            continue; // Katib reports nothing; the in-process test covers what trialtail keeps
        }
        let log = dir.path().join(format!("{compared}.log"));
        std::fs::write(&log, case.bytes()).unwrap();
        let metrics = format!("--metrics={}", case.metrics.join(","));
        let filters: Vec<String> = case.filters.iter().map(|f| format!("--filter={f}")).collect();
        let mut args = vec!["run", "--katib-semantics", "--output", "json", &metrics];
        args.extend(filters.iter().map(String::as_str));
        if case.format == "JSON" {
            args.extend(["--format", "json"]);
        }
        args.push(log.to_str().unwrap());
        let out = crate::trialtail(&args, None);
        if out.status.code() == Some(2) && crate::stderr(&out).contains("--filter") {
            continue; // refused at start-up, as the in-process test pins
        }
        assert!(out.status.success(), "{}: {}", case.id, crate::stderr(&out));
        let printed: Vec<Row> = crate::stdout(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                Row::new(v["metric"].as_str().unwrap(), v["raw"].as_str().unwrap(), v["timestamp"].as_str().unwrap())
            })
            .collect();
        let expected = as_trialtail_reports(answer);
        if printed != expected {
            differences.push(format!("{}: Katib {expected:?}\n    trialtail {printed:?}", case.id));
        }
        compared += 1;
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert!(compared >= 150, "{compared} cases compared through the command line");
}
