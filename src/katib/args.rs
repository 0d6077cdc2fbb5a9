//! Katib's collector command line, Go `flag` style, translated into a [`KatibArgs`].
//!
//! Katib's pod webhook sets only the container's `args` (`pkg/webhook/v1beta1/pod/inject_webhook.go`,
//! `getMetricsCollectorArgs`): `-t <trial> -m <objective>[;<more>]
//! -o-type <minimize|maximize> -s-db <host:port> [-path <file>] [-f <filter>[;<filter>]] [-format TEXT|JSON]
//! [-w true|false] [-stop-rule <rule>]... [-s-earlystop <host:port>]`, plus `-p` and `-timeout` which exist but
//! are never passed. Go's `flag` package accepts `-x v`, `-x=v`, `--x v` and `--x=v`, stops at the first
//! non-flag argument or at `--`, and answers an unknown flag with its usage and exit code 2; so does this module.
//!
//! Deliberate differences from Katib: a missing or empty `-format` means TEXT (with a warning) instead of a failed
//! collection; an unknown `-format` or a bad duration fails at start-up (exit 2) instead of at the end.
//!
//! Katib's TensorFlowEvent collector (`cmd/metricscollector/v1beta1/tfevent-metricscollector/main.py`, Python
//! `argparse`) gets the same flags from the webhook but never `-format`, and its `-path` is a directory
//! (`/var/log/katib/tfevent/` by default, `DefaultTensorflowEventDirPath`). A command line without `-format` whose
//! `-path` is a directory (or ends with `/`) is that collector's ([`CollectorKind::TensorFlowEvent`]); there
//! `-p` and `-timeout` are whole seconds (`type=int`; Go durations are accepted too), `-w` is true only for
//! `true` in any case (`.lower() == "true"`), `-f` is ignored as Katib ignores it, and argparse's long names
//! (`--trial_name`, `--metric_names`, `--metrics_file_dir`, …) are accepted. Its early-stopping flags, which
//! Katib's own collector does not define (it exits 2), are applied as for the file collector.
//!
//! trialtail adds a few flags of its own, each also read from an environment variable (flag wins):
//! `-report-deadline`, `-listen`, `-proc-root`, `-main-pid`, `-early-stop-wait`. This module only parses; it
//! does no I/O beyond reading those variables through the function it is given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{parse_go_duration, parse_listen};
use crate::outputs::DEFAULT_PORT;
use crate::rules::LineFormat;

/// Katib's own flags (names without dashes). A command line whose first argument is one of these is Katib's.
pub const KATIB_FLAGS: &[&str] =
    &["t", "m", "o-type", "s-db", "path", "f", "format", "w", "p", "timeout", "stop-rule", "s-earlystop"];

/// trialtail's additional drop-in flags, with the environment variable each falls back to.
pub const EXTRA_FLAGS: &[(&str, &str)] = &[
    ("report-deadline", "TRIALTAIL_REPORT_DEADLINE"),
    ("listen", "TRIALTAIL_LISTEN"),
    ("proc-root", "TRIALTAIL_PROC_ROOT"),
    ("main-pid", "TRIALTAIL_MAIN_PID"),
    ("early-stop-wait", "TRIALTAIL_EARLY_STOP_WAIT"),
];

/// The default time allowed for the report to be accepted, retries included.
pub const DEFAULT_REPORT_DEADLINE: Duration = Duration::from_secs(300);
/// The default bounded wait for the training to exit after an early stop.
pub const DEFAULT_EARLY_STOP_WAIT: Duration = Duration::from_secs(60);

/// argparse's long names of Katib's TensorFlowEvent collector, and the flag each is.
pub const PYTHON_NAMES: &[(&str, &str)] = &[
    ("trial_name", "t"),
    ("metric_names", "m"),
    ("objective_type", "o-type"),
    ("db_manager_server_addr", "s-db"),
    ("metrics_file_dir", "path"),
    ("metric_filters", "f"),
    ("poll_interval", "p"),
    ("wait_all_processes", "w"),
];

/// Which of Katib's collectors the command line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectorKind {
    /// The file metrics collector (kinds `StdOut` and `File`): `-path` is a log file.
    File,
    /// The TensorFlowEvent collector: `-path` is a directory of TensorBoard event files.
    TensorFlowEvent,
}

/// Whether the objective is minimized or maximized (`-o-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectiveType {
    /// `minimize`: the best value so far is the smallest.
    Minimize,
    /// `maximize`: the best value so far is the largest.
    Maximize,
}

/// The drop-in mode's validated command line.
#[derive(Debug, Clone, PartialEq)]
pub struct KatibArgs {
    /// Which collector this replaces.
    pub kind: CollectorKind,
    /// `-t`: the trial name.
    pub trial: String,
    /// `-m`, split on `;`: the first is the objective.
    pub metrics: Vec<String>,
    /// `-o-type`; `None` when missing or unknown (early stopping then keeps the objective's first value as its
    /// best, as Katib does).
    pub objective_type: Option<ObjectiveType>,
    /// `-s-db`: the DB manager, `host:port`.
    pub db_manager: String,
    /// `-path`: the metrics file, or the event files' directory.
    pub path: PathBuf,
    /// `-f`, split on `;`: the filters (empty: Katib's default).
    pub filters: Vec<String>,
    /// `-format`.
    pub format: LineFormat,
    /// `-w`: also wait for every other process of the pod.
    pub wait_all: bool,
    /// `-p`: how often the processes are checked.
    pub poll: Duration,
    /// `-timeout`: give up waiting after this long (`None`: never).
    pub timeout: Option<Duration>,
    /// `-stop-rule`, each `name;value;comparison;startStep`.
    pub stop_rules: Vec<String>,
    /// `-s-earlystop`: the early-stopping service, `host:port`.
    pub early_stop: Option<String>,
    /// `-report-deadline`: the time the report may take, retries included.
    pub report_deadline: Duration,
    /// `-listen`: where `/metrics` is served (`None`: not served).
    pub listen: Option<SocketAddr>,
    /// `-proc-root`: the proc filesystem to scan (tests use fake trees).
    pub proc_root: PathBuf,
    /// `-main-pid`: the training shell's pid, skipping the scan (tests outside a PID namespace).
    pub main_pid: Option<u32>,
    /// `-early-stop-wait`: how long the training gets to exit after an early stop.
    pub early_stop_wait: Duration,
    /// Notes for the log (a missing `-format`, ignored arguments), emitted once tracing is set up.
    pub warnings: Vec<String>,
}

/// Why Katib's command line was refused. Go's `flag` prints the message and the usage and exits 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("flag provided but not defined: -{flag}")]
    Unknown { flag: String },
    #[error("flag needs an argument: -{flag}")]
    MissingValue { flag: String },
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    Invalid { flag: &'static str, value: String, reason: &'static str },
    #[error("flag -{flag} is required")]
    Required { flag: &'static str },
    /// `-h`/`-help`: usage, exit 0.
    #[error("help requested")]
    Help,
}

impl ArgsError {
    /// The exit code, as Go's `flag` uses it: 0 for help, 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        if matches!(self, ArgsError::Help) { 0 } else { 2 }
    }
}

/// The flag name of a Go-style argument (`-x`, `--x`, `-x=v`), or `None` when it is not a flag.
fn flag_name(arg: &str) -> Option<&str> {
    if arg == "-" || arg == "--" || !arg.starts_with('-') {
        return None;
    }
    let s = arg.strip_prefix("--").unwrap_or(&arg[1..]);
    Some(s.split_once('=').map_or(s, |(n, _)| n))
}

/// A flag's own name: argparse's long names mapped to Katib's short ones.
fn canonical(name: &str) -> &str {
    PYTHON_NAMES.iter().find(|(long, _)| *long == name).map_or(name, |(_, short)| short)
}

/// Whether `args` (without the program name) are Katib's: the first one is one of [`KATIB_FLAGS`] (or one of
/// argparse's long names).
pub fn is_katib_command_line(args: &[String]) -> bool {
    args.first().and_then(|a| flag_name(a)).is_some_and(|n| KATIB_FLAGS.contains(&canonical(n)))
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses Katib's command line (without the program name). `env` reads environment variables for the extra flags.
pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<KatibArgs, ArgsError> {
    parse_with(args, env, |p| p.is_dir())
}

/// [`parse`], with `is_dir` telling whether a path is a directory (the one look outside the arguments).
pub fn parse_with(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
    is_dir: impl Fn(&std::path::Path) -> bool,
) -> Result<KatibArgs, ArgsError> {
    let mut values: Vec<(String, String)> = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        let Some(name) = flag_name(arg).map(canonical) else { break };
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(ArgsError::Unknown { flag: name.to_string() });
        }
        if name == "h" || name == "help" {
            return Err(ArgsError::Help);
        }
        if !KATIB_FLAGS.contains(&name) && !EXTRA_FLAGS.iter().any(|(f, _)| *f == name) {
            return Err(ArgsError::Unknown { flag: name.to_string() });
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        let value = match body.split_once('=') {
            Some((_, v)) => v.to_string(),
            None => {
                i += 1;
                args.get(i).cloned().ok_or_else(|| ArgsError::MissingValue { flag: name.to_string() })?
            }
        };
        values.push((name.to_string(), value));
        i += 1;
    }
    if i < args.len() {
        warnings.push(format!("ignoring arguments after the flags: {:?}", &args[i..]));
    }
    // The last occurrence wins, as in Go; -stop-rule accumulates.
    let last = |flag: &str| values.iter().rev().find(|(n, _)| n == flag).map(|(_, v)| v.clone());
    let extra =
        |flag: &str| last(flag).or_else(|| EXTRA_FLAGS.iter().find(|(f, _)| *f == flag).and_then(|(_, var)| env(var)));
    // `-m` and `-f` are split exactly as Katib's collector splits them (`cmd/metricscollector/v1beta1/
    // file-metricscollector/main.go`: `strings.Split(…, ";")` when the flag is not empty): names and filters as
    // written, spaces and empty ones included (` loss` never equals a matched, trimmed name; an empty name makes
    // every line a metric line; two empty filters match nothing).
    let split = |v: Option<String>| -> Vec<String> {
        v.filter(|v| !v.is_empty()).map(|v| v.split(';').map(String::from).collect()).unwrap_or_default()
    };
    let duration = |flag: &'static str, v: String| {
        parse_go_duration(&v).ok_or(ArgsError::Invalid {
            flag,
            value: v,
            reason: "not a Go duration such as 1s or 2m30s",
        })
    };

    let trial = last("t").unwrap_or_default();
    let path = PathBuf::from(last("path").unwrap_or_else(|| "/var/log/katib/metrics.log".to_string()));
    let tfevent = last("format").is_none() && (path.as_os_str().as_encoded_bytes().ends_with(b"/") || is_dir(&path));
    // The TensorFlowEvent collector splits `-m` as Python does (`"".split(";")` is `[""]`, a name every tag
    // starts with).
    let metrics =
        if tfevent { last("m").unwrap_or_default().split(';').map(String::from).collect() } else { split(last("m")) };
    if metrics.is_empty() {
        return Err(ArgsError::Required { flag: "m" });
    }
    let objective_type = match last("o-type").as_deref() {
        Some("minimize") => Some(ObjectiveType::Minimize),
        Some("maximize") => Some(ObjectiveType::Maximize),
        other => {
            warnings.push(format!(
                "-o-type {other:?} is neither minimize nor maximize; stop rules compare the objective's first value"
            ));
            None
        }
    };
    let db_manager = last("s-db").unwrap_or_else(|| "katib-db-manager.kubeflow:6789".to_string());
    let filters = if tfevent { Vec::new() } else { split(last("f")) };
    if tfevent && last("f").is_some_and(|f| !f.is_empty()) {
        warnings
            .push("-f is ignored for TensorBoard event files, as Katib's TensorFlowEvent collector ignores it".into());
    }
    let format = match last("format").as_deref().map(str::trim) {
        None if tfevent => LineFormat::Text,
        None | Some("") => {
            warnings.push("-format is missing: reading the log as TEXT (Katib would fail the collection)".into());
            LineFormat::Text
        }
        Some(f) if f.eq_ignore_ascii_case("TEXT") => LineFormat::Text,
        Some(f) if f.eq_ignore_ascii_case("JSON") => LineFormat::Json,
        Some(f) => return Err(ArgsError::Invalid { flag: "format", value: f.into(), reason: "must be TEXT or JSON" }),
    };
    // Katib's -w is a string flag read with strconv.ParseBool: anything that is not a Go bool means false; the
    // TensorFlowEvent collector's Python compares `.lower() == "true"`.
    let wait_all = match last("w") {
        None => true,
        Some(v) if tfevent => v.to_lowercase() == "true",
        Some(v) => go_bool(&v).unwrap_or(false),
    };
    // The TensorFlowEvent collector's -p and -timeout are whole seconds (argparse `type=int`).
    let interval = |flag: &'static str, v: String| match v.trim().parse::<u64>() {
        Ok(secs) if tfevent => Ok(Duration::from_secs(secs)),
        _ => duration(flag, v),
    };
    let poll = interval("p", last("p").unwrap_or_else(|| "1s".into()))?;
    if poll.is_zero() {
        return Err(ArgsError::Invalid { flag: "p", value: "0".into(), reason: "must be positive" });
    }
    let timeout = Some(interval("timeout", last("timeout").unwrap_or_else(|| "0".into()))?).filter(|d| !d.is_zero());
    let stop_rules = values.iter().filter(|(n, _)| n == "stop-rule").map(|(_, v)| v.clone()).collect();
    let early_stop = last("s-earlystop").filter(|s| !s.is_empty());
    let report_deadline = match extra("report-deadline") {
        Some(v) => duration("report-deadline", v)?,
        None => DEFAULT_REPORT_DEADLINE,
    };
    let early_stop_wait = match extra("early-stop-wait") {
        Some(v) => duration("early-stop-wait", v)?,
        None => DEFAULT_EARLY_STOP_WAIT,
    };
    let listen = match extra("listen") {
        None => Some(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
        Some(v) if v.is_empty() || v == "off" => None,
        Some(v) => Some(parse_listen(&v).ok_or(ArgsError::Invalid {
            flag: "listen",
            value: v,
            reason: "not HOST:PORT, :PORT or off",
        })?),
    };
    let proc_root = PathBuf::from(extra("proc-root").unwrap_or_else(|| "/proc".into()));
    let main_pid = match extra("main-pid") {
        None => None,
        Some(v) => Some(v.trim().parse::<u32>().ok().filter(|p| *p > 0).ok_or(ArgsError::Invalid {
            flag: "main-pid",
            value: v,
            reason: "not a process id",
        })?),
    };
    Ok(KatibArgs {
        kind: if tfevent { CollectorKind::TensorFlowEvent } else { CollectorKind::File },
        trial,
        metrics,
        objective_type,
        db_manager,
        path,
        filters,
        format,
        wait_all,
        poll,
        timeout,
        stop_rules,
        early_stop,
        report_deadline,
        listen,
        proc_root,
        main_pid,
        early_stop_wait,
        warnings,
    })
}

/// The usage text, Go `flag` style (printed on stderr with a flag error, on stdout for `-h`).
pub fn usage() -> String {
    "Usage of trialtail (Katib drop-in mode, Katib's file metrics collector arguments):\n  \
-t string\n    \tthe trial name\n  \
-m string\n    \tmetric names separated by ';', the first is the objective\n  \
-o-type string\n    \tobjective type: minimize or maximize\n  \
-s-db string\n    \tthe Katib DB manager, host:port (default \"katib-db-manager.kubeflow:6789\")\n  \
-path string\n    \tthe metrics file, read from its start and echoed to stdout (default \"/var/log/katib/metrics.log\")\n  \
-f string\n    \tfilters (regular expressions, group 1 = name, group 2 = value) separated by ';'\n  \
-format string\n    \tTEXT or JSON (missing: TEXT, with a warning)\n  \
-w string\n    \twait for every process of the pod, not only the training (default \"true\")\n  \
-p duration\n    \thow often the processes are checked (default 1s)\n  \
-timeout duration\n    \tgive up waiting for the training after this long; 0 = never (default 0)\n  \
-stop-rule value\n    \tan early-stopping rule name;value;equal|less|greater;startStep (repeatable)\n  \
-s-earlystop string\n    \tthe early-stopping service, host:port\n\
trialtail's own (each also from the environment variable named):\n  \
-report-deadline duration\n    \ttime the report may take, retries included; TRIALTAIL_REPORT_DEADLINE (default 5m0s)\n  \
-listen string\n    \tserve /metrics and the live page (/) here, or off; TRIALTAIL_LISTEN (default \":9478\")\n  \
-proc-root string\n    \tthe proc filesystem scanned for the training process; TRIALTAIL_PROC_ROOT (default \"/proc\")\n  \
-main-pid int\n    \tthe training shell's pid, skipping the scan (testing); TRIALTAIL_MAIN_PID\n  \
-early-stop-wait duration\n    \ttime the training gets to exit after an early stop; TRIALTAIL_EARLY_STOP_WAIT (default 1m0s)\n\
Katib's TensorFlowEvent collector: the same flags without -format and with -path a directory (such as \
/var/log/katib/tfevent/): every TensorBoard event file below it is read, and the rows Katib's collector would \
report are reported; -p and -timeout are then whole seconds, -f is ignored.\n\
Exit codes: 0 reported; 2 bad arguments; 3 the report was not accepted before -report-deadline; \
4 SetTrialStatus failed after an early stop; 255 the training failed (no `completed` marker) or -timeout passed, \
nothing reported.\n"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn parse_ok(a: &[&str]) -> KatibArgs {
        parse(&args(a), |_| None).unwrap()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        for bad in ["", "1", "s", "-1s", "1x", "1s2"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_bool_semantics_for_w() {
        for (v, want) in [("true", true), ("1", true), ("T", true), ("false", false), ("yes", false), ("", false)] {
            assert_eq!(parse_ok(&["-m", "loss", &format!("-w={v}")]).wait_all, want, "{v}");
        }
        assert!(parse_ok(&["-m", "loss"]).wait_all, "-w defaults to true");
    }

    #[test]
    fn the_tensorflowevent_collectors_command_line_is_told_apart() {
        let dir = |p: &std::path::Path| p == std::path::Path::new("/var/log/katib/tfevent");
        let parse_tf = |a: &[&str]| parse_with(&args(a), |_| None, dir).unwrap();
        // What Katib's webhook gives the TensorFlowEvent collector (getMetricsCollectorArgs): no -format.
        let webhook = ["-t", "t1", "-m", "accuracy;loss", "-o-type", "maximize", "-s-db", "db:6789"];
        let tf = parse_tf(&[&webhook[..], &["-path", "/var/log/katib/tfevent/"]].concat());
        assert_eq!(tf.kind, CollectorKind::TensorFlowEvent);
        assert_eq!(tf.metrics, ["accuracy", "loss"]);
        assert_eq!(
            parse_tf(&[&webhook[..], &["-path", "/var/log/katib/tfevent"]].concat()).kind,
            CollectorKind::TensorFlowEvent,
            "an existing directory"
        );
        let file = parse_tf(&[&webhook[..], &["-path", "/var/log/katib/metrics.log", "-format", "TEXT"]].concat());
        assert_eq!(file.kind, CollectorKind::File);
        // argparse's flags: whole seconds, `.lower() == "true"`, long names; -f parsed and ignored.
        let a = parse_tf(&[
            "--trial_name",
            "t",
            "--metric_names",
            "acc",
            "--metrics_file_dir",
            "/d/",
            "-p",
            "3",
            "-timeout",
            "60",
            "-w",
            "TRUE",
            "-f",
            "x",
        ]);
        assert_eq!(
            (a.kind, a.trial.as_str(), a.poll, a.timeout, a.wait_all),
            (CollectorKind::TensorFlowEvent, "t", Duration::from_secs(3), Some(Duration::from_secs(60)), true)
        );
        assert!(a.filters.is_empty() && a.warnings.iter().any(|w| w.contains("-f is ignored")));
        assert!(!parse_tf(&["-m", "acc", "-path", "/d/", "-w", "1"]).wait_all, "Python's test, not Go's ParseBool");
        assert_eq!(parse_tf(&["-m", "", "-path", "/d/"]).metrics, [""], "Python's split of an empty -m");
        assert!(parse_with(&args(&["-m", "acc", "-path", "/d/", "-p", "0"]), |_| None, dir).is_err());
        assert!(is_katib_command_line(&args(&["--metrics_file_dir", "/d/"])));
    }

    #[test]
    fn detection_needs_a_katib_flag_first() {
        assert!(is_katib_command_line(&args(&["-t", "x"])));
        assert!(is_katib_command_line(&args(&["--s-db=h:1"])));
        assert!(!is_katib_command_line(&args(&["run", "-t"])));
        assert!(!is_katib_command_line(&args(&["--help"])));
        assert!(!is_katib_command_line(&args(&["--log-level", "x"])));
        assert!(!is_katib_command_line(&[]));
    }
}
