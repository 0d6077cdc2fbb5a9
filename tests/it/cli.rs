//! The command line as a user meets it: exit codes, error messages that name the flag, stdin, JSON output.

use std::process::Output;

use crate::{example, stderr, stdout, trialtail};

#[test]
fn stdin_is_read_with_a_dash() {
    let input = b"lr=0.5\nAccuracy at step 3: 0.9\n";
    let out = trialtail(&["run", "--output", "json", "-"], Some(input));
    assert!(out.status.success());
    // A value printed once before training is a parameter, listed after the observations.
    assert_eq!(
        stdout(&out),
        "{\"metric\":\"Accuracy\",\"value\":0.9,\"raw\":\"0.9\",\"step\":3,\"timestamp\":null,\"line\":2}\n\
         {\"kind\":\"param\",\"name\":\"lr\",\"value\":0.5,\"raw\":\"0.5\",\"line\":1}\n"
    );
    let out = trialtail(&["run", "--output", "json", "--preset", "katib,tf-step", "-"], Some(input));
    assert_eq!(
        stdout(&out),
        "{\"metric\":\"lr\",\"value\":0.5,\"raw\":\"0.5\",\"step\":null,\"timestamp\":null,\"line\":1}\n\
         {\"metric\":\"Accuracy\",\"value\":0.9,\"raw\":\"0.9\",\"step\":3,\"timestamp\":null,\"line\":2}\n"
    );
}

/// Exit code 2, one line on stderr holding `message`, nothing on stdout.
fn assert_usage_error(args: &[&str], out: &Output, message: &str) {
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = stderr(out);
    assert!(err.contains(message), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {err}");
    assert!(stdout(out).is_empty(), "{args:?}");
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_flag_or_path() {
    let log = example("tf_accuracy_at_step.log");
    let log = log.to_str().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();
    let no_events =
        format!("no TensorBoard event files (names holding `tfevents`, such as events.out.tfevents.*) in {empty}");
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--filter", "(", log], "--filter \"(\": invalid regex"),
        (&["run", "--filter", "(a)", log], "--filter \"(a)\": needs"),
        (&["run", "--katib-semantics", "-m", "loss", "--filter", r"(a)\8(b)", log], "invalid escape \\8"),
        (&["run", "--metric", "=x", log], "--metric \"=x\""),
        (&["run", "--max-line-bytes", "12x", log], "--max-line-bytes \"12x\""),
        (&["run", "--max-metrics", "0", log], "--max-metrics 0"),
        (&["run", "/nonexistent/train.log"], "cannot open log /nonexistent/train.log: No such file"),
        (&["run", empty], &no_events),
        (&["plot", empty, "-o", "x.svg"], &no_events),
        (&["run", "--follow", "--from-end", empty], "--from-end skips what a text log holds"),
        (&["run", "--follow", "-"], "--follow needs a LOG file"),
        (&["run", log, "--", "true"], "either a LOG or a command"),
        (&["run", "--follow", "--until-idle", "5 parsecs", log], "--until-idle \"5 parsecs\": expected a duration"),
        (&["run", "--shutdown-grace", "x", log], "--shutdown-grace \"x\""),
    ];
    for (args, message) in cases {
        assert_usage_error(args, &trialtail(args, None), message);
    }
}

#[test]
fn an_unknown_preset_is_a_usage_error() {
    let out = trialtail(&["run", "--preset", "pytorch", "-"], Some(b""));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid value 'pytorch' for '--preset <NAME>'"));
}

#[test]
fn binary_garbage_and_a_huge_line_are_survived_and_counted() {
    let mut input = Vec::new();
    input.extend_from_slice(b"\x00\xff\xfeloss=\x00 garbage\n");
    input.extend(std::iter::repeat_n(b'x', 50 << 20));
    input.extend_from_slice(b"\nloss=0.25\n\xc3\x28 loss=0.5\n");
    let out = trialtail(&["run", "--stats", "-"], Some(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["loss", "2", "0.5", "0.25", "0.5", "-"]);
    let stats = stderr(&out);
    assert!(stats.contains("too_long_lines=1"), "{stats}");
    assert!(stats.contains("lines=4"), "{stats}");
}

#[test]
fn metric_names_restrict_the_output() {
    let out = trialtail(&["run", "--metrics", "loss", "--output", "json", "-"], Some(b"v_num=1 loss=2 acc=3\n"));
    let names: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["metric"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["loss"]);
}

#[test]
fn without_names_every_pair_is_a_metric_up_to_the_limit() {
    let out =
        trialtail(&["run", "--preset", "katib", "--max-metrics", "2", "--stats", "-"], Some(b"a=1 b=2 c=3\nc=4 a=5\n"));
    assert!(out.status.success());
    let table = stdout(&out);
    assert_eq!(table.lines().count(), 3, "{table}");
    let err = stderr(&out);
    assert!(err.contains("metric limit reached"), "{err}");
    assert!(err.contains("dropped=2"), "{err}");
}

#[test]
fn katib_semantics_prints_the_report_with_the_sentinel() {
    let out =
        trialtail(&["run", "--katib-semantics", "-m", "accuracy;loss", "--output", "json", "-"], Some(b"loss=0.5\n"));
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "{\"metric\":\"accuracy\",\"value\":null,\"raw\":\"unavailable\",\"step\":null,\
         \"timestamp\":\"0001-01-01T00:00:00Z\",\"line\":null}\n"
    );
}

#[test]
fn help_teaches_the_rules_and_the_defaults() {
    let out = trialtail(&["run", "--help"], None);
    let help = stdout(&out);
    for needle in [
        "--preset",
        "tf-step",
        "--metrics",
        "--katib-semantics",
        "64KiB",
        "TRIALTAIL_MAX_METRICS",
        "Examples:",
        "--check-config",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn check_config_prints_the_configuration_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output_file = dir.path().join("metrics.json");
    let output_file = output_file.to_str().unwrap();
    let args = [
        "run",
        "--metrics",
        "loss,accuracy",
        "--listen",
        ":9478",
        "--pushgateway",
        "http://pushgateway:9091",
        "--output",
        "json",
        "--output-file",
        output_file,
        "--trial",
        "t1",
        "--check-config",
        "/nonexistent/train.log",
    ];
    let out = trialtail(&args, None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = stdout(&out);
    for line in [
        "source:      file /nonexistent/train.log\n",
        "rules:       presets katib, tf-step (default)\n",
        "metrics:     loss, accuracy (at most 1000)\n",
        "listen:      0.0.0.0:9478, / (live page) /metrics /healthz /readyz, linger 30s\n",
        "pushgateway: http://pushgateway:9091, at the end\n",
        "labels:      trial=t1",
    ] {
        assert!(summary.contains(line), "{line:?} in\n{summary}");
    }
    assert!(summary.contains(&format!("output:      json to {output_file}\n")), "{summary}");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(!std::path::Path::new(output_file).exists(), "the output file is not created");

    // A wrapped command is not started.
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = trialtail(&["run", "--check-config", "--", "sh", "-c", &touch], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("source:      command sh -c touch "), "{}", stdout(&out));
    assert!(!marker.exists(), "the command did not run");
}

#[test]
fn check_config_rejects_what_a_run_rejects_with_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--check-config", "--filter", "(", "x.log"], "--filter \"(\": invalid regex"),
        (&["run", "--check-config", "--listen", "9478", "x.log"], "--listen \"9478\""),
        (&["run", "--check-config", "--linger", "forever", "x.log"], "--linger \"forever\""),
        (&["run", "--check-config", "--pushgateway", "https://pg", "x.log"], "https is not supported"),
        (&["run", "--check-config", "--katib-semantics", "x.log"], "--katib-semantics needs --metrics"),
        (&["run", "--check-config"], "give a LOG"),
    ];
    for (args, message) in cases {
        assert_usage_error(args, &trialtail(args, None), message);
    }
}

#[test]
fn check_config_validates_pod_log_mode_without_a_cluster() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_trialtail"))
            .args(args)
            .env_clear()
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env("POD_NAME", "t1-abc")
            .env("POD_NAMESPACE", "kubeflow-user")
            .output()
            .unwrap()
    };
    let out = run(&["run", "--source", "pod-log", "--container", "training", "--listen", ":9478", "--check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = stdout(&out);
    assert!(summary.starts_with("source:      pod-log, container training\n"), "{summary}");
    assert!(summary.contains("labels:      namespace=kubeflow-user pod=t1-abc\n"), "{summary}");
    let katib = "katib:       when trialtail is the Trial's collector: rows to katib-db-manager.kubeflow:6789 every \
                 10s and at the end (deadline 20s), Trial status live every 5s\n";
    assert!(summary.ends_with(katib), "{summary}");

    let bad: &[(&[&str], &str)] = &[
        (&["run", "--source", "pod-log", "--check-config", "x.log"], "--source pod-log reads the container's log"),
        (&["run", "--source", "pod-log", "--status-interval", "10ms", "--check-config"], "--status-interval \"10ms\""),
        (
            &["run", "--source", "pod-log", "--katib-db", "db", "--check-config"],
            "--katib-db \"db\": expected HOST:PORT",
        ),
        (&["run", "--source", "pod-log", "--report-interval", "soon", "--check-config"], "--report-interval \"soon\""),
        (
            &["run", "--source", "pod-log", "--check-config", "--assume-trial", "/nonexistent/trial.yaml"],
            "--assume-trial \"/nonexistent/trial.yaml\"",
        ),
    ];
    for (args, message) in bad {
        assert_usage_error(args, &run(args), message);
    }
}

#[test]
fn log_format_json_writes_each_diagnostic_as_one_json_object() {
    // --live without --follow logs one warning.
    let out = trialtail(&["run", "--live", "--log-format", "json", "-"], Some(b"loss=1\nloss=0.5\n"));
    assert!(out.status.success());
    let err = stderr(&out);
    let events: Vec<serde_json::Value> =
        err.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect();
    assert_eq!(events.len(), 1, "{err}");
    assert_eq!(events[0]["level"], "WARN");
    assert!(events[0]["fields"]["message"].as_str().unwrap().contains("--live"), "{err}");
    assert!(events[0]["timestamp"].is_string(), "{err}");
    assert!(stdout(&out).starts_with("metric"), "the table is not a diagnostic");
    let bad = trialtail(&["run", "--log-format", "xml", "-"], Some(b""));
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("invalid value 'xml' for '--log-format <FORMAT>'"), "{}", stderr(&bad));
    // The error a run ends with is an event too.
    let missing = trialtail(&["--log-format", "json", "run", "/nonexistent/train.log"], None);
    assert!(!missing.status.success());
    let err = stderr(&missing);
    let event: serde_json::Value = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {err:?}"));
    assert_eq!(event["level"], "ERROR", "{err}");
    assert!(event["fields"]["message"].as_str().unwrap().contains("/nonexistent/train.log"), "{err}");
}

#[test]
fn completions_and_man_pages_describe_every_command() {
    let bash = trialtail(&["completions", "bash"], None);
    assert!(bash.status.success());
    let script = stdout(&bash);
    for word in ["_trialtail()", "complete -F _trialtail", "webhook", "--cert-secret", "--log-format", "--preset"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    let zsh = stdout(&trialtail(&["completions", "zsh"], None));
    assert!(zsh.starts_with("#compdef trialtail"), "{}", &zsh[..zsh.len().min(200)]);
    assert!(stdout(&trialtail(&["completions", "fish"], None)).contains("complete -c trialtail"));
    let bad = trialtail(&["completions", "tcsh"], None);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    let man = stdout(&trialtail(&["man"], None));
    assert!(man.contains(".TH trialtail 1") && man.contains("webhook"), "{man}");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let written = trialtail(&["man", "--out-dir", out_dir.to_str().unwrap()], None);
    assert!(written.status.success(), "{}", stderr(&written));
    let mut pages: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    pages.sort();
    let expected = [
        "trialtail-completions.1",
        "trialtail-man.1",
        "trialtail-plot.1",
        "trialtail-run.1",
        "trialtail-webhook.1",
        "trialtail.1",
    ];
    assert_eq!(pages, expected);
    let run = std::fs::read_to_string(out_dir.join("trialtail-run.1")).unwrap();
    assert!(run.contains(".TH trialtail-run 1") && run.contains("follow"), "{}", &run[..run.len().min(400)]);
}
