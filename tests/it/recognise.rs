//! Recognition without flags, over every recorded framework log: `trialtail run LOG` must report the values the
//! training process itself recorded, in order, under the names the framework printed, and no other metric; what
//! the script printed once (hyper-parameters, config echoes, reprs) comes out apart, as parameters.
//!
//! The logs and their truth files are in `examples/logs/frameworks/` (recorded by `examples/record/`, see its
//! README); the older example logs in `examples/logs/` with their `NAME.expected.json` are run here with no flags
//! too. Beside each framework log, `NAME.auto.txt` holds the table trialtail prints for it, checked byte for byte
//! (`UPDATE_GOLDEN=1` rewrites them).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{root, stderr, stdout, trialtail};

/// How a truth file's metric names meet the names the log prints.
struct Case {
    log: &'static str,
    /// Truth metric → the name the framework printed it under (and trialtail reports).
    rename: &'static [(&'static str, &'static str)],
    /// Truth metrics not recognised, and why.
    not_recognised: &'static [(&'static str, &'static str)],
    /// Metrics trialtail reports that the process did not record (printed only), with the literal that precedes
    /// each value in the log: their values are checked against the log's own text.
    printed_only: &'static [(&'static str, &'static str)],
    /// Truth metrics whose integer steps are not printed (trialtail has no step for them).
    unprinted_steps: &'static [&'static str],
}

const NONE: &[(&str, &str)] = &[];

/// Hugging Face's `log_metrics` blocks, recorded in the truth files under the block's name.
const HF_BLOCKS: &[(&str, &str)] = &[
    ("log_metrics train train_runtime", "train_runtime"),
    ("log_metrics train train_samples_per_second", "train_samples_per_second"),
    ("log_metrics train train_steps_per_second", "train_steps_per_second"),
    ("log_metrics train train_loss", "train_loss"),
    ("log_metrics eval eval_loss", "eval_loss"),
    ("log_metrics eval eval_accuracy", "eval_accuracy"),
    ("log_metrics eval eval_runtime", "eval_runtime"),
    ("log_metrics eval eval_samples_per_second", "eval_samples_per_second"),
    ("log_metrics eval eval_steps_per_second", "eval_steps_per_second"),
];

/// Keras' `evaluate`, recorded in the truth files under its name.
const KERAS_EVALUATE: &[(&str, &str)] = &[("evaluate accuracy", "accuracy"), ("evaluate loss", "loss")];

/// What the Keras recording script prints itself, unrecognised.
const KERAS_SCRIPT_TEST: &[(&str, &str)] = &[
    (
        "test accuracy",
        "the script's own `test loss 0.5541, test accuracy 0.8944`: no `:` or `=` between name and value",
    ),
    ("test loss", "the same line"),
];

/// Lightning's results tables, recorded in the truth files under the table's name.
const LIGHTNING_TABLES: &[(&str, &str)] = &[
    ("validate table val_loss", "val_loss"),
    ("validate table val_acc", "val_acc"),
    ("test table test_loss", "test_loss"),
    ("test table test_acc", "test_acc"),
];

const CASES: &[Case] = &[
    Case {
        log: "hf_trainer_v4.log",
        rename: HF_BLOCKS,
        not_recognised: NONE,
        printed_only: NONE,
        unprinted_steps: &["*"],
    },
    Case {
        log: "hf_trainer_v5.log",
        rename: HF_BLOCKS,
        not_recognised: NONE,
        printed_only: NONE,
        unprinted_steps: &["*"],
    },
    Case { log: "katib_kv_line.log", rename: NONE, not_recognised: NONE, printed_only: NONE, unprinted_steps: &[] },
    Case {
        log: "keras_fit_verbose1.log",
        rename: KERAS_EVALUATE,
        not_recognised: KERAS_SCRIPT_TEST,
        printed_only: NONE,
        unprinted_steps: &["*"],
    },
    Case {
        log: "keras_fit_verbose2_val.log",
        rename: KERAS_EVALUATE,
        not_recognised: KERAS_SCRIPT_TEST,
        printed_only: NONE,
        unprinted_steps: &["*"],
    },
    Case { log: "lightgbm_train.log", rename: NONE, not_recognised: NONE, printed_only: NONE, unprinted_steps: &[] },
    Case {
        log: "lightning_rich.log",
        rename: LIGHTNING_TABLES,
        not_recognised: NONE,
        printed_only: NONE,
        unprinted_steps: &["*"],
    },
    Case {
        log: "lightning_rich_tty.log",
        rename: LIGHTNING_TABLES,
        not_recognised: NONE,
        printed_only: NONE,
        unprinted_steps: &["*"],
    },
    Case {
        log: "lightning_tqdm.log",
        rename: LIGHTNING_TABLES,
        not_recognised: NONE,
        printed_only: NONE,
        unprinted_steps: &["*"],
    },
    Case {
        log: "sklearn_sgd_classifier.log",
        rename: NONE,
        not_recognised: NONE,
        printed_only: &[("Avg. loss", "Avg. loss: "), ("Objective", "Objective: ")],
        unprinted_steps: &[],
    },
    Case {
        log: "torch_cifar_tutorial.log",
        rename: NONE,
        not_recognised: &[
            ("accuracy", "prose: `Accuracy of the network on the 360 test images: 94 %` (a unit after the value)"),
            ("accuracy_class_0", "prose: `Accuracy for class: 0     is 100.0 %`"),
            ("accuracy_class_1", "prose"),
            ("accuracy_class_2", "prose"),
            ("accuracy_class_3", "prose"),
            ("accuracy_class_4", "prose"),
            ("accuracy_class_5", "prose"),
            ("accuracy_class_6", "prose"),
            ("accuracy_class_7", "prose"),
            ("accuracy_class_8", "prose"),
            ("accuracy_class_9", "prose"),
        ],
        printed_only: NONE,
        unprinted_steps: &["*"],
    },
    Case { log: "torch_epoch_colon.log", rename: NONE, not_recognised: NONE, printed_only: NONE, unprinted_steps: &[] },
    Case {
        log: "torch_katib_mnist.log",
        rename: &[("train_loss", "loss")],
        not_recognised: NONE,
        printed_only: NONE,
        unprinted_steps: &["*"],
    },
    Case {
        log: "xgboost_sklearn_classifier.log",
        rename: NONE,
        not_recognised: NONE,
        printed_only: NONE,
        unprinted_steps: &[],
    },
    Case {
        log: "xgboost_train_early_stop.log",
        rename: NONE,
        not_recognised: NONE,
        printed_only: NONE,
        unprinted_steps: &[],
    },
];

/// One expected observation: its offset in the log, the printed text, the recorded value (when the process
/// recorded exactly what was printed), the recorded step.
type Expected = (usize, String, Option<f64>, Value);

fn frameworks(name: &str) -> std::path::PathBuf {
    root().join("examples/logs/frameworks").join(name)
}

/// trialtail's JSON output with no flags: observations per metric, in output order, and the parameters.
struct Output {
    metrics: BTreeMap<String, Vec<Value>>,
    params: Vec<Value>,
}

fn run(path: &std::path::Path) -> Output {
    let out = trialtail(&["run", "--output", "json", path.to_str().unwrap()], None);
    assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    let mut metrics: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut params = Vec::new();
    for line in stdout(&out).lines() {
        let v: Value = serde_json::from_str(line).expect("every output line is JSON");
        match v["kind"].as_str() {
            None => metrics.entry(v["metric"].as_str().unwrap().to_string()).or_default().push(v),
            Some("param") => params.push(v),
            Some(other) => panic!("unexpected record kind {other}"),
        }
    }
    Output { metrics, params }
}

/// The offsets of `texts` in `log`, each as `template` with `{}` replaced, searched one after the other and not
/// followed by a digit (as `examples/record/check_truth.py` does).
fn offsets(log: &str, template: &str, texts: &[String]) -> Vec<usize> {
    let mut pos = 0;
    let mut out = Vec::new();
    for text in texts {
        let needle = python_format(template, text);
        let mut i = log[pos..].find(&needle).map(|i| i + pos);
        while let Some(at) = i
            && log[at + needle.len()..].starts_with(|c: char| c.is_ascii_digit())
        {
            i = log[at + 1..].find(&needle).map(|j| j + at + 1);
        }
        let at = i.unwrap_or_else(|| panic!("{needle:?} not in the log after {pos}"));
        out.push(at);
        pos = at + 1;
    }
    out
}

/// Python's `template.format(text)` for the templates of the truth files: `{{` and `}}` are braces, `{}` the
/// value, `{:>10}` the value right-aligned in ten characters.
fn python_format(template: &str, text: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("{{") {
            out.push('{');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            out.push('}');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{:>10}") {
            out.push_str(&format!("{text:>10}"));
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{}") {
            out.push_str(text);
            rest = r;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Allowed difference between a printed value and the recorded one: half a unit of its last printed digit (a
/// whole unit for Hugging Face's `h:mm:ss.ss` runtimes, which are cut, not rounded), or 0.5 % for values printed
/// with a few significant digits.
fn close(printed: &str, value: f64, recorded: f64) -> bool {
    let decimals = printed.rsplit_once('.').map_or(0, |(_, d)| d.chars().take_while(char::is_ascii_digit).count());
    let unit = if printed.contains(['e', 'E']) { 0.0 } else { 10f64.powi(-(decimals as i32)) };
    let allowed = if printed.contains(':') { unit } else { unit / 2.0 };
    (value - recorded).abs() <= allowed.max(5e-3 * recorded.abs()) + 1e-12
}

#[test]
fn every_framework_log_has_a_case() {
    let mut logs: Vec<String> = std::fs::read_dir(frameworks(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    let cased: Vec<&str> = CASES.iter().map(|c| c.log).collect();
    assert_eq!(logs, cased);
}

#[test]
fn with_no_flags_the_metrics_are_what_the_training_recorded_and_nothing_else() {
    for case in CASES {
        let log = std::fs::read(frameworks(case.log)).unwrap();
        let log = String::from_utf8_lossy(&log);
        // Python's json writes NaN (a parameter's value); JSON has no NaN.
        let text = std::fs::read_to_string(frameworks(&case.log.replace(".log", ".truth.json"))).unwrap();
        let truth: Value = serde_json::from_str(&text.replace(": NaN", ": null")).unwrap();
        let got = run(&frameworks(case.log));
        // Expected per reported name: (offset in the log, printed text, recorded value, step).
        let mut want: BTreeMap<String, Vec<Expected>> = BTreeMap::new();
        for (name, obs) in truth["metrics"].as_object().unwrap() {
            if case.not_recognised.iter().any(|(n, _)| n == name) {
                continue;
            }
            let ours = case.rename.iter().find(|(t, _)| t == name).map_or(name.as_str(), |(_, o)| o);
            let obs = obs.as_array().unwrap();
            let texts: Vec<String> = obs.iter().map(|o| o[1].as_str().unwrap().to_string()).collect();
            let template = truth["printed_as"][name].as_str().unwrap();
            let at = offsets(&log, template, &texts);
            let recorded = truth["recorded"][name].as_array().filter(|r| r.len() == obs.len());
            for (i, (o, text)) in obs.iter().zip(texts).enumerate() {
                let value = recorded.and_then(|r| r[i][1].as_f64());
                want.entry(ours.to_string()).or_default().push((at[i], text, value, o[0].clone()));
            }
        }
        for (name, before) in case.printed_only {
            let texts: Vec<(usize, String)> = log
                .match_indices(before)
                .map(|(i, _)| {
                    let rest = &log[i + before.len()..];
                    let end = rest.find([',', ' ', '\n', '\r']).unwrap_or(rest.len());
                    (i, rest[..end].to_string())
                })
                .collect();
            assert!(!texts.is_empty(), "{}: {before:?} not in the log", case.log);
            want.insert(name.to_string(), texts.into_iter().map(|(i, t)| (i, t, None, Value::Null)).collect());
        }
        let names: Vec<&String> = got.metrics.keys().collect();
        let wanted: Vec<&String> = want.keys().collect();
        assert_eq!(names, wanted, "{}: metric names", case.log);
        for (name, mut expected) in want {
            expected.sort_by_key(|e| e.0);
            let ours = &got.metrics[&name];
            let raws: Vec<&str> = ours.iter().map(|o| o["raw"].as_str().unwrap()).collect();
            let texts: Vec<&str> = expected.iter().map(|e| e.1.as_str()).collect();
            assert_eq!(raws, texts, "{}: {name} values, in order", case.log);
            for (o, (_, text, recorded, step)) in ours.iter().zip(&expected) {
                if let Some(r) = recorded {
                    let v = o["value"].as_f64().unwrap();
                    assert!(close(text, v, *r), "{}: {name} {text} = {v}, recorded {r}", case.log);
                }
                let skip = case.unprinted_steps.iter().any(|s| *s == "*" || *s == name);
                if let (Some(want), false) = (step.as_u64(), skip) {
                    assert_eq!(o["step"].as_u64(), Some(want), "{}: {name} {text} step", case.log);
                }
            }
        }
        // Parameters: every printed one the script set is listed apart, none is a metric.
        let params: Vec<&str> = got.params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        for (name, value) in truth["params"].as_object().unwrap() {
            let printed = [format!("{name}="), format!("'{name}': "), format!("\"{name}\": ")]
                .iter()
                .any(|p| log.contains(p.as_str()));
            if printed && (value.is_f64() || value.is_u64() || value.is_i64()) {
                assert!(params.contains(&name.as_str()), "{}: parameter {name} not listed in {params:?}", case.log);
            }
        }
    }
}

#[test]
fn the_tables_printed_with_no_flags_match_the_golden_files() {
    for case in CASES {
        let out = trialtail(&["run", frameworks(case.log).to_str().unwrap()], None);
        assert!(out.status.success());
        let got = stdout(&out);
        let golden = frameworks(&case.log.replace(".log", ".auto.txt"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        assert_eq!(
            got,
            want,
            "{} differs from {} (UPDATE_GOLDEN=1 rewrites it after review)",
            case.log,
            golden.display()
        );
    }
}

/// The older example logs, recorded for explicit flags, read with none: the same values.
#[test]
fn the_older_example_logs_need_no_flags_either() {
    // Log, and the expected file's names as printed in the log (when they differ), and metrics that come out
    // merged under one printed name with the literal before each of their values.
    type Old = (&'static str, &'static [(&'static str, &'static str)], &'static [(&'static str, &'static str)]);
    let cases: &[Old] = &[
        ("tf_accuracy_at_step.log", &[("accuracy", "Accuracy")], &[]),
        ("keras_fit_verbose2.log", &[], &[]),
        ("xgboost_native.log", &[], &[]),
        ("torch_katib.log", &[("train_loss", "loss")], &[("train_loss", "\tloss="), ("loss", "metricValue: ")]),
        ("sklearn_mlp_classifier.log", &[("validation_score", "Validation score")], &[]),
        ("katib_multiline.log", &[], &[]),
        ("katib_json.log", &[], &[]),
    ];
    for (log, rename, merged) in cases {
        let path = root().join("examples/logs").join(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("examples/logs").join(log.replace(".log", ".expected.json"))).unwrap(),
        )
        .unwrap();
        let got = run(&path);
        let mut want: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
        for m in expected["metrics"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let ours = rename.iter().find(|(e, _)| *e == name).map_or(name, |(_, o)| *o);
            let values: Vec<String> =
                m["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
            let at = match merged.iter().find(|(n, _)| *n == name) {
                Some((_, before)) => offsets(&text, &format!("{before}{{}}"), &values),
                None => (0..values.len()).collect(),
            };
            want.entry(ours.to_string()).or_default().extend(at.into_iter().zip(values));
        }
        let names: Vec<&String> = got.metrics.keys().collect();
        assert_eq!(names, want.keys().collect::<Vec<_>>(), "{log}: metric names");
        for (name, mut values) in want {
            values.sort_by_key(|v| v.0);
            let raws: Vec<&str> = got.metrics[&name].iter().map(|o| o["raw"].as_str().unwrap()).collect();
            assert_eq!(raws, values.iter().map(|v| v.1.as_str()).collect::<Vec<_>>(), "{log}: {name}");
        }
    }
}
