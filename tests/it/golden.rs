//! Golden tests over every log in `examples/logs/`.
//!
//! Each log was printed by a real framework; beside it, `NAME.expected.json` holds what the training process
//! recorded in memory at each print (never parsed from the log), and `NAME.golden.jsonl` / `NAME.katib.jsonl`
//! hold trialtail's own JSON output for the flags in [`CASES`]. The golden files are checked byte for byte
//! (`UPDATE_GOLDEN=1` rewrites them); the expected files are checked value for value.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{example, stderr, stdout, trialtail};

struct Case {
    log: &'static str,
    /// Flags for the native run.
    args: &'static [&'static str],
    /// Expected metric name → trialtail's metric name (the frameworks' names as printed).
    rename: &'static [(&'static str, &'static str)],
    /// Metrics whose steps the rules capture and which must equal the recorded steps.
    steps: &'static [&'static str],
    /// Flags for a Katib-semantics run, when the log is in one of Katib's formats.
    katib: Option<&'static [&'static str]>,
}

const CASES: &[Case] = &[
    Case {
        log: "tf_accuracy_at_step.log",
        args: &["--metrics", "Accuracy"],
        rename: &[("accuracy", "Accuracy")],
        steps: &["accuracy"],
        katib: Some(&["--metrics", "Accuracy", "--filter", r"(Accuracy) at step \d+: ([+-]?\d*(\.\d+)?)"]),
    },
    Case { log: "keras_fit_verbose2.log", args: &["--preset", "keras"], rename: &[], steps: &[], katib: None },
    Case {
        log: "xgboost_native.log",
        args: &["--preset", "xgboost"],
        rename: &[],
        steps: &["train-rmse", "train-mae", "eval-rmse", "eval-mae"],
        katib: Some(&["--metrics", "eval-rmse;train-rmse", "--filter", r"([\w-]+):((-?\d+)(\.\d+)?)"]),
    },
    Case {
        log: "torch_katib.log",
        args: &[
            "--metric",
            r"train_loss=Train Epoch: \d+ \[\d+/\d+ \(\d+%\)\]\tloss=(?P<value>\S+)",
            "--filter",
            r"\{metricName: (?P<name>[\w|-]+), metricValue: (?P<value>[^}]+)\}",
        ],
        rename: &[],
        steps: &[],
        katib: Some(&["-m", "accuracy;loss", "--filter", r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"]),
    },
    Case {
        log: "sklearn_mlp_classifier.log",
        args: &["--preset", "sklearn"],
        rename: &[("validation_score", "Validation score")],
        steps: &["loss"],
        katib: None,
    },
    Case {
        log: "katib_multiline.log",
        args: &["--metrics", "loss,accuracy,Validation-accuracy"],
        rename: &[],
        steps: &[],
        katib: Some(&["-m", "Validation-accuracy;accuracy;loss"]),
    },
    Case {
        log: "katib_json.log",
        args: &["--format", "json", "--metrics", "loss,acc,val_acc"],
        rename: &[],
        steps: &["loss", "acc", "val_acc"],
        katib: Some(&["--format", "json", "-m", "val_acc;acc;loss"]),
    },
];

fn run_json(log: &str, args: &[&str]) -> String {
    let path = example(log);
    let mut all = vec!["run", "--output", "json"];
    all.extend_from_slice(args);
    all.push(path.to_str().unwrap());
    let out = trialtail(&all, None);
    assert!(out.status.success(), "{log} {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn check_golden(name: &str, got: &str) {
    let path = example(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e} (UPDATE_GOLDEN=1 writes it)"));
    assert_eq!(got, want, "{name} differs from the recorded output (UPDATE_GOLDEN=1 rewrites it after review)");
}

fn by_metric(json_lines: &str) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in json_lines.lines() {
        let v: Value = serde_json::from_str(line).expect("every output line is JSON");
        m.entry(v["metric"].as_str().unwrap().to_string()).or_default().push(v);
    }
    m
}

#[test]
fn every_example_log_has_a_case() {
    let mut logs: Vec<String> = std::fs::read_dir(example(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    let mut cased: Vec<&str> = CASES.iter().map(|c| c.log).collect();
    cased.sort();
    assert_eq!(logs, cased);
}

#[test]
fn native_output_matches_the_golden_files() {
    for case in CASES {
        let got = run_json(case.log, case.args);
        check_golden(&case.log.replace(".log", ".golden.jsonl"), &got);
    }
}

#[test]
fn katib_semantics_output_matches_the_golden_files() {
    for case in CASES {
        if let Some(args) = case.katib {
            let mut all = vec!["--katib-semantics"];
            all.extend_from_slice(args);
            let got = run_json(case.log, &all);
            check_golden(&case.log.replace(".log", ".katib.jsonl"), &got);
        }
    }
}

#[test]
fn native_observations_equal_what_the_training_process_recorded() {
    for case in CASES {
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(example(&case.log.replace(".log", ".expected.json"))).unwrap(),
        )
        .unwrap();
        let got = by_metric(&run_json(case.log, case.args));
        let mut total = 0;
        for m in expected["metrics"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let ours = case.rename.iter().find(|(e, _)| *e == name).map_or(name, |(_, o)| *o);
            let obs = got.get(ours).unwrap_or_else(|| panic!("{}: no observations of {ours}", case.log));
            let raws: Vec<&str> = obs.iter().map(|o| o["raw"].as_str().unwrap()).collect();
            let want: Vec<&str> = m["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(raws, want, "{}: {ours} values", case.log);
            for (o, truth) in obs.iter().zip(m["true_values"].as_array().unwrap()) {
                let (v, t) = (o["value"].as_f64().unwrap(), truth.as_f64().unwrap());
                assert!((v - t).abs() <= 1e-4 * t.abs().max(1.0), "{}: {ours} {v} vs true {t}", case.log);
            }
            if case.steps.contains(&name) {
                let steps: Vec<Value> = obs.iter().map(|o| o["step"].clone()).collect();
                assert_eq!(&steps, m["steps"].as_array().unwrap(), "{}: {ours} steps", case.log);
            }
            total += obs.len();
        }
        assert_eq!(total as u64, expected["total_observations"].as_u64().unwrap(), "{}: total", case.log);
    }
}

#[test]
fn default_flags_recognise_the_classic_tensorflow_log() {
    let path = example("tf_accuracy_at_step.log");
    let out = trialtail(&["run", path.to_str().unwrap()], None);
    assert!(out.status.success());
    let text = stdout(&out);
    let row = text.lines().find(|l| l.starts_with("Accuracy ")).expect("an Accuracy row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, ["Accuracy", "30", "0.97333336", "0.11111111", "0.9777778", "290"]);
}

/// The explicit flag sets whose output on every example log is kept in `tests/data/explicit/`: each preset alone,
/// all of them, `--metrics` alone, a filter, a fixed-name metric, Katib's semantics with its default filter and
/// with one of its own.
const EXPLICIT: &[&[&str]] = &[
    &["--preset", "katib"],
    &["--preset", "tf-step"],
    &["--preset", "keras"],
    &["--preset", "hf-trainer"],
    &["--preset", "xgboost"],
    &["--preset", "lightgbm"],
    &["--preset", "sklearn"],
    &["--preset", "tqdm"],
    &["--preset", "katib,tf-step,keras,hf-trainer,xgboost,lightgbm,sklearn,tqdm"],
    &["--metrics", "loss,accuracy"],
    &["--filter", r"(?P<name>[\w.-]+): (?P<value>[\d.]+)"],
    &["--metric", r"acc=accuracy[=:] ?(?P<value>[\d.]+)"],
    &["--katib-semantics", "--metrics", "loss,accuracy"],
    &["--katib-semantics", "--metrics", "loss", "--filter", r"([\w-]+)\s*:\s*([\d.]+)"],
];

/// Explicit flags read exactly what they say: on every example log (framework logs included) each flag set of
/// [`EXPLICIT`] prints, byte for byte, the JSON lines it printed before the recognition existed (recorded then,
/// in `tests/data/explicit/NAME.txt`, one `## FLAGS` section per set).
#[test]
fn explicit_flags_print_what_they_printed_before_the_recognition() {
    let mut logs: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["examples/logs", "examples/logs/frameworks"] {
        let mut found: Vec<_> = std::fs::read_dir(crate::root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        found.sort();
        logs.extend(found);
    }
    for log in logs {
        let mut got = String::new();
        for flags in EXPLICIT {
            got.push_str(&format!("## {}\n", flags.join(" ")));
            let mut args = vec!["run", "--output", "json"];
            args.extend_from_slice(flags);
            args.push(log.to_str().unwrap());
            got.push_str(&stdout(&trialtail(&args, None)));
        }
        let stem = log.file_stem().unwrap().to_str().unwrap();
        let path = crate::root().join("tests/data/explicit").join(format!("{stem}.txt"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(got == want, "{stem}: explicit flags print something else than before (see {})", path.display());
    }
}
