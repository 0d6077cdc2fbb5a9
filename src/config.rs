//! From parsed flags to a validated configuration: everything that can be wrong with the flags fails here, at
//! start-up, with a message naming the flag and the value.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{ExportArgs, OutputKind, RuleArgs, RunArgs, SourceKind, TrialStatusMode};
use crate::katib::trial::{Role, Trial};
use crate::lines::{DEFAULT_MAX_LINE_BYTES, KATIB_MAX_LINE_BYTES};
use crate::outputs::ExportConfig;
use crate::rules::{LineFormat, RuleError, RuleSpec, Rules, Semantics};
use crate::sink::prometheus::Labels;
use crate::sink::pushgateway::{PushError, PushTarget};
use crate::sink::stdout::StdoutConfig;
use crate::sink::trial_status;

/// Why the flags do not make a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("--max-line-bytes {value:?}: {reason}")]
    MaxLineBytes { value: String, reason: &'static str },
    #[error("--max-metrics {value}: must be between 1 and 1000000")]
    MaxMetrics { value: usize },
    #[error("--listen {value:?}: expected HOST:PORT, [IPV6]:PORT or :PORT")]
    Listen { value: String },
    #[error("--{flag} {value:?}: expected a duration such as 30s, 500ms, 1m30s (at most a day)")]
    Duration { flag: &'static str, value: String },
    #[error(transparent)]
    Pushgateway(#[from] PushError),
    #[error("give a LOG (or `-` for standard input) or a command after `--`")]
    NoSource,
    #[error("give either a LOG or a command after `--`, not both")]
    TwoSources,
    #[error("--follow needs a LOG file, not standard input or a command")]
    FollowWhat,
    #[error("--source pod-log reads the container's log through the Kubernetes API: give no LOG, command or --follow")]
    PodLogWhat,
    #[error("--katib-db {value:?}: expected HOST:PORT, e.g. katib-db-manager.kubeflow:6789")]
    KatibDb { value: String },
    #[error("--assume-trial {path:?}: {reason}")]
    AssumeTrial { path: PathBuf, reason: String },
    #[error("--assume-trial describes what the native sidecar would do: give --source pod-log")]
    AssumeTrialWhat,
    #[error(
        "--from-end skips what a text log holds; TensorBoard event files ({path}) are always read from their start"
    )]
    FromEndEvents { path: PathBuf },
}

/// Where the log comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file read to its end.
    File(PathBuf),
    /// Standard input, read until EOF.
    Stdin,
    /// A file followed as it grows.
    Follow {
        /// The path (it may not exist yet).
        path: PathBuf,
        /// Skip what the file holds at start.
        from_end: bool,
    },
    /// TensorBoard event files: a directory (every `*tfevents*` file below it) or one event file.
    EventFiles {
        /// The directory or file.
        path: PathBuf,
        /// Keep following: new files, appended records.
        follow: bool,
    },
    /// A command to run; its stdout and stderr are the log.
    Command(Vec<OsString>),
    /// A container's log through the Kubernetes API (native sidecar).
    PodLog {
        /// `--container`, when given.
        container: Option<String>,
        /// Write observations to the Trial's status.
        trial_status: bool,
    },
}

/// A validated `trialtail run`.
#[derive(Debug)]
pub struct RunConfig {
    /// Where the log comes from.
    pub source: Source,
    /// End a follow after this long without data.
    pub until_idle: Option<Duration>,
    /// Time allowed to drain and flush after the first signal.
    pub shutdown_grace: Duration,
    /// Time between two Trial status writes (pod-log source).
    pub status_interval: Duration,
    /// Katib's DB manager, `host:port` (pod-log source, when trialtail is the Trial's collector).
    pub katib_db: String,
    /// Time between two incremental reports to Katib's DB (`None`: only at the end).
    pub report_interval: Option<Duration>,
    /// Time the final report may take.
    pub report_deadline: Duration,
    /// The Trial `--check-config` assumes.
    pub assume_trial: Option<Trial>,
    /// Write the output here instead of stdout (stderr when wrapping a command).
    pub output_file: Option<PathBuf>,
    /// What to print.
    pub output: OutputKind,
    /// Print counters at the end.
    pub stats: bool,
    /// Say how each metric was found (`--explain`).
    pub explain: bool,
    /// Show a progress bar on stderr when it is a terminal.
    pub progress: bool,
    /// Redraw the summary while following (ready for follow mode).
    pub live: bool,
    /// The compiled rules.
    pub rules: Rules,
    /// The rules as given (empty: recognition, or with `--metrics` the presets `katib` and `tf-step`).
    pub specs: Vec<RuleSpec>,
    /// Katib's objective (the first metric name) in Katib semantics.
    pub objective: Option<String>,
    /// Line length limit.
    pub max_line_bytes: usize,
    /// Metric name limit.
    pub max_metrics: usize,
    /// The rule flags as given, for rules rebuilt from a Trial.
    pub rule_flags: RuleFlags,
    /// Where the rules and the metric names came from.
    pub origin: RuleOrigin,
    /// The Prometheus endpoint and Pushgateway.
    pub export: ExportConfig,
}

/// Whether a `run` LOG names TensorBoard event files: a directory (or a path that does not exist yet and ends
/// with `/`), or a file whose name holds `tfevents` as TensorBoard's own test says
/// ([`crate::source::tfevents::is_event_file`]).
pub fn is_event_path(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    path.is_dir()
        || (bytes.ends_with(b"/") && !path.exists())
        || path.file_name().is_some_and(|n| crate::source::tfevents::is_event_file(n.as_bytes()))
}

/// Parses a size such as `65536`, `64K`, `64KiB`, `1M`, `1MiB` (powers of 1024).
pub fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

/// Splits metric-name lists on `,` and `;` (Katib's separator), trimming spaces around each name but keeping
/// spaces inside (`valid_1 auc`).
pub fn split_names(values: &[String]) -> Vec<String> {
    values.iter().flat_map(|v| v.split([',', ';'])).map(|n| n.trim().to_string()).collect()
}

/// The validated rule and limit flags, shared by `run` and `plot`.
#[derive(Debug)]
pub struct RuleConfig {
    /// The compiled rules.
    pub rules: Rules,
    /// The rules as given (empty: recognition, or with `--metrics` the presets `katib` and `tf-step`; Katib's
    /// default filter in Katib semantics).
    pub specs: Vec<RuleSpec>,
    /// Katib's objective (the first metric name) in Katib semantics.
    pub objective: Option<String>,
    /// Line length limit.
    pub max_line_bytes: usize,
    /// Metric name limit.
    pub max_metrics: usize,
    /// The flags as given.
    pub flags: RuleFlags,
    /// Where the rules and the names came from.
    pub origin: RuleOrigin,
}

/// The rule flags as given (`--filter`, `--metric`, `--preset`, `--metrics`, `--katib-semantics`, `--format`,
/// `--max-line-bytes`, `--max-metrics`), validated, kept so the sidecar can rebuild its rules from the Trial.
#[derive(Debug, Clone)]
pub struct RuleFlags {
    /// `--filter`, `--metric` and `--preset`, in that order.
    pub specs: Vec<RuleSpec>,
    /// `--metrics`.
    pub names: Vec<String>,
    /// `--katib-semantics`.
    pub katib: bool,
    /// `--format`.
    pub format: LineFormat,
    /// `--max-line-bytes`, when given.
    pub max_line_bytes: Option<usize>,
    /// `--max-metrics`.
    pub max_metrics: usize,
}

/// Where the rules and the metric names came from, as `--check-config` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOrigin {
    /// The rules' source.
    pub rules: Origin,
    /// The metric names' source.
    pub names: Origin,
}

/// One source of configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// trialtail's defaults.
    Default,
    /// Flags (or the environment variables and `trialtail.io/*` annotations that become flags).
    Flags,
    /// The Katib Trial.
    Trial,
}

impl RuleFlags {
    /// Compiles the flags as they are.
    pub fn build(&self) -> Result<RuleConfig, ConfigError> {
        let semantics = if self.katib { Semantics::Katib } else { Semantics::Native };
        let rules = Rules::new(&self.specs, &self.names, semantics, self.format)?;
        let objective = (semantics == Semantics::Katib).then(|| self.names[0].clone());
        let max_line_bytes =
            self.max_line_bytes.unwrap_or(if self.katib { KATIB_MAX_LINE_BYTES } else { DEFAULT_MAX_LINE_BYTES });
        let given = |empty: bool| if empty { Origin::Default } else { Origin::Flags };
        let origin = RuleOrigin { rules: given(self.specs.is_empty()), names: given(self.names.is_empty()) };
        let specs = self.specs.clone();
        Ok(RuleConfig {
            rules,
            specs,
            objective,
            max_line_bytes,
            max_metrics: self.max_metrics,
            flags: self.clone(),
            origin,
        })
    }

    /// The rules for a sidecar of `trial`: with no rule flag, Katib's parsing for the Trial (its `metricsFormat`
    /// filters, else Katib's default filter, in Katib semantics); the metric names the Trial asks for unless
    /// `--metrics` names others. Flags win where given. A Trial without metric names changes nothing.
    pub fn for_trial(&self, trial: &Trial) -> Result<RuleConfig, ConfigError> {
        let names = trial.names();
        if names.is_empty() {
            return self.build();
        }
        let from_trial = self.specs.is_empty();
        let mut flags = self.clone();
        if from_trial {
            flags.specs = trial.metrics_format.iter().cloned().map(RuleSpec::Filter).collect();
            flags.katib = true;
        }
        if self.names.is_empty() {
            flags.names = names;
        }
        let mut config = flags.build()?;
        config.flags = self.clone();
        let pick = |trial: bool| if trial { Origin::Trial } else { Origin::Flags };
        config.origin = RuleOrigin { rules: pick(from_trial), names: pick(self.names.is_empty()) };
        Ok(config)
    }
}

impl RunConfig {
    /// Validates the `run` flags; `env` looks up the Kubernetes fallbacks (`KATIB_TRIAL_NAME`, `POD_NAMESPACE`,
    /// `POD_NAME`) for labels not given as flags – the process environment in `main`, nothing in the webhook.
    pub fn from_args(a: RunArgs, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        if a.assume_trial.is_some() && a.source_kind != SourceKind::PodLog {
            return Err(ConfigError::AssumeTrialWhat);
        }
        let assume_trial = match &a.assume_trial {
            None => None,
            Some(path) => {
                let fail = |reason: String| ConfigError::AssumeTrial { path: path.clone(), reason };
                let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
                Some(Trial::parse_document(&text).map_err(fail)?)
            }
        };
        let katib_db = a.katib_db.trim().to_string();
        let valid_db = katib_db.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid_db {
            return Err(ConfigError::KatibDb { value: a.katib_db });
        }
        let report_interval = Some(duration("report-interval", &a.report_interval)?).filter(|d| !d.is_zero());
        let report_deadline = duration("report-deadline", &a.report_deadline)?;
        let mut r = RuleConfig::try_from(a.rules)?;
        // What the sidecar prints at the end stays the flags' choice (a table); only its rules follow the Trial.
        let objective = r.objective.clone();
        if let Some(trial) = &assume_trial {
            r = r.flags.for_trial(trial)?;
        }
        let status_interval = match a.status_interval {
            None => trial_status::DEFAULT_INTERVAL,
            Some(value) => match duration("status-interval", &value)? {
                d if d < Duration::from_millis(100) => {
                    return Err(ConfigError::Duration { flag: "status-interval", value });
                }
                d => d,
            },
        };
        let pod_log_misused = a.follow || a.log.is_some() || !a.command.is_empty();
        let source = match (a.log, a.command.is_empty()) {
            _ if a.source_kind == SourceKind::PodLog && pod_log_misused => {
                return Err(ConfigError::PodLogWhat);
            }
            _ if a.source_kind == SourceKind::PodLog => {
                let trial_status = a.trial_status == TrialStatusMode::Live;
                Source::PodLog { container: a.container.filter(|c| !c.is_empty()), trial_status }
            }
            (Some(_), false) => return Err(ConfigError::TwoSources),
            (None, true) => return Err(ConfigError::NoSource),
            (None, false) if a.follow => return Err(ConfigError::FollowWhat),
            (None, false) => Source::Command(a.command),
            (Some(p), true) if p.as_os_str() == crate::source::file::STDIN => {
                if a.follow {
                    return Err(ConfigError::FollowWhat);
                }
                Source::Stdin
            }
            (Some(path), true) if is_event_path(&path) => {
                if a.from_end {
                    return Err(ConfigError::FromEndEvents { path });
                }
                Source::EventFiles { path, follow: a.follow }
            }
            (Some(path), true) if a.follow => Source::Follow { path, from_end: a.from_end },
            (Some(path), true) => Source::File(path),
        };
        let until_idle = a.until_idle.as_deref().map(|v| duration("until-idle", v)).transpose()?;
        let shutdown_grace = duration("shutdown-grace", &a.shutdown_grace)?;
        Ok(RunConfig {
            source,
            until_idle,
            shutdown_grace,
            status_interval,
            katib_db,
            report_interval,
            report_deadline,
            assume_trial,
            output_file: a.output_file,
            output: a.output,
            stats: a.stats,
            explain: a.explain,
            progress: !a.no_progress && !a.quiet,
            live: a.live,
            rules: r.rules,
            specs: r.specs,
            objective,
            max_line_bytes: r.max_line_bytes,
            max_metrics: r.max_metrics,
            rule_flags: r.flags,
            origin: r.origin,
            export: ExportConfig::from_args(a.export, env)?,
        })
    }
}

impl RunConfig {
    /// What the run prints and where.
    pub fn stdout(&self) -> StdoutConfig {
        StdoutConfig {
            kind: self.output,
            objective: self.objective.clone(),
            file: self.output_file.clone(),
            wrapping: matches!(self.source, Source::Command(_)),
            live: self.live && matches!(self.source, Source::Follow { .. } | Source::EventFiles { follow: true, .. }),
            explain: self.explain,
        }
    }

    /// The effective configuration in a few aligned lines, as `--check-config` prints it: what a run would read,
    /// how it would parse it and where the results would go. Looks at nothing outside the configuration.
    pub fn summary(&self) -> String {
        let source = match &self.source {
            Source::File(path) => format!("file {}", path.display()),
            Source::Stdin => "standard input".to_string(),
            Source::Follow { path, from_end } => {
                let start = if *from_end { ", from its end" } else { "" };
                let idle = self.until_idle.map(|d| format!(", until {d:?} idle")).unwrap_or_default();
                format!("file {} followed{start}{idle}", path.display())
            }
            Source::EventFiles { path, follow } => {
                let how = if *follow { " followed" } else { "" };
                let idle =
                    self.until_idle.filter(|_| *follow).map(|d| format!(", until {d:?} idle")).unwrap_or_default();
                format!("TensorBoard event files {}{how}{idle}", path.display())
            }
            Source::Command(argv) => {
                let words: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
                format!("command {}", words.join(" "))
            }
            Source::PodLog { container, .. } => {
                let primary = self.assume_trial.as_ref().and_then(|t| t.primary_container.as_deref());
                match (container, primary) {
                    (Some(c), _) => format!("pod-log, container {c}"),
                    (None, Some(p)) => format!("pod-log, container {p} (the Trial's primaryContainerName)"),
                    (None, None) => "pod-log, the Trial's primary container".to_string(),
                }
            }
        };
        let katib = self.rules.semantics() == Semantics::Katib;
        let mut rules: Vec<String> = self
            .specs
            .iter()
            .map(|spec| match spec {
                RuleSpec::Filter(f) => format!("filter {f:?}"),
                RuleSpec::Metric { name, regex } => format!("metric {name}={regex:?}"),
                RuleSpec::Preset(p) => format!("preset {}", p.name()),
            })
            .collect();
        if matches!(self.source, Source::EventFiles { .. }) {
            rules = vec!["none: every scalar of the event files is an observation".into()];
        } else if rules.is_empty() {
            rules.push(match (katib, self.rules.recognising()) {
                (true, _) => "Katib's default filter".into(),
                (false, true) => "every known format, recognised from the log (no rule flags)".into(),
                (false, false) => "presets katib, tf-step (default)".into(),
            });
        }
        if self.rules.format() == LineFormat::Json {
            rules.push("JSON lines".into());
        }
        if katib {
            rules.push("Katib semantics".into());
        }
        // Where rules come from matters only where a Trial could give them: the sidecar.
        let sidecar = matches!(self.source, Source::PodLog { .. });
        let from = |origin: Origin| match origin {
            Origin::Flags if sidecar => " (from flags)",
            Origin::Trial => " (from the Trial)",
            _ => "",
        };
        let mut rules = rules.join("; ");
        rules.push_str(from(self.origin.rules));
        let metrics = match self.rules.names() {
            Some(names) => {
                let names: Vec<_> = names.map(String::from_utf8_lossy).collect();
                format!("{} (at most {}){}", names.join(", "), self.max_metrics, from(self.origin.names))
            }
            None if self.rules.recognising() => {
                format!(
                    "every name the log treats as a metric, values printed once apart (at most {})",
                    self.max_metrics
                )
            }
            None => format!("every captured name (at most {})", self.max_metrics),
        };
        let kind = match (&self.objective, self.output) {
            (Some(objective), _) => format!("Katib report (objective {objective}) as {}", self.output.name()),
            (None, output) => output.name().to_string(),
        };
        let dest = self.stdout().destination();
        let export = &self.export;
        let listen = match export.listen {
            Some(addr) => format!("{addr}, / (live page) /metrics /healthz /readyz, linger {:?}", export.linger),
            None => "off".to_string(),
        };
        let push = match (&export.pushgateway, export.push_interval) {
            (None, _) => "off".to_string(),
            (Some(t), None) => format!("http://{}{}, at the end", t.authority, t.prefix),
            (Some(t), Some(every)) => format!("http://{}{}, every {every:?} and at the end", t.authority, t.prefix),
        };
        let labels: Vec<String> = export.labels.pairs().map(|(k, v)| format!("{k}={v}")).collect();
        let katib_row = self.katib_summary();
        let rows = [
            ("source", source),
            ("rules", rules),
            ("metrics", metrics),
            ("lines", format!("cut at {} bytes", self.max_line_bytes)),
            ("output", format!("{kind} to {dest}")),
            ("listen", listen),
            ("pushgateway", push),
            ("labels", if labels.is_empty() { "none".to_string() } else { labels.join(" ") }),
        ];
        let rows = rows.into_iter().chain(katib_row.map(|v| ("katib", v)));
        rows.map(|(k, v)| format!("{k}:{:pad$}{v}\n", "", pad = 12 - k.len())).collect()
    }

    /// What the sidecar does for Katib (pod-log source only): with `--assume-trial`, the role that Trial gives;
    /// without, what it would do once it read a Trial.
    fn katib_summary(&self) -> Option<String> {
        let Source::PodLog { trial_status, .. } = &self.source else { return None };
        let status = match trial_status {
            true => format!("Trial status live every {:?}", self.status_interval),
            false => "no Trial status".to_string(),
        };
        let every = match self.report_interval {
            Some(d) => format!("every {d:?} and at the end"),
            None => "at the end".to_string(),
        };
        let report = format!("rows to {} {every} (deadline {:?}), {status}", self.katib_db, self.report_deadline);
        Some(match &self.assume_trial {
            None => format!("when trialtail is the Trial's collector: {report}"),
            Some(trial) => match trial.role(None) {
                Role::Report => format!("collector kind {}: {report}", trial.collector_kind().name()),
                Role::Observe(why) => format!("Prometheus only: {why}"),
            },
        })
    }
}

impl TryFrom<RuleArgs> for RuleConfig {
    type Error = ConfigError;

    fn try_from(a: RuleArgs) -> Result<Self, ConfigError> {
        let max_line_bytes = match a.max_line_bytes {
            None => None,
            Some(value) => match parse_size(&value) {
                None => return Err(ConfigError::MaxLineBytes { value, reason: "not a size" }),
                Some(n) if !(16..=64 << 20).contains(&n) => {
                    return Err(ConfigError::MaxLineBytes { value, reason: "must be 16 bytes to 64 MiB" });
                }
                Some(n) => Some(n),
            },
        };
        if !(1..=1_000_000).contains(&a.max_metrics) {
            return Err(ConfigError::MaxMetrics { value: a.max_metrics });
        }
        let mut specs: Vec<RuleSpec> = a.filters.into_iter().map(RuleSpec::Filter).collect();
        for m in a.metric_rules {
            match m.split_once('=') {
                Some((name, regex)) if !name.trim().is_empty() => {
                    specs.push(RuleSpec::Metric { name: name.trim().to_string(), regex: regex.to_string() })
                }
                _ => return Err(RuleError::MetricSyntax { spec: m }.into()),
            }
        }
        specs.extend(a.presets.into_iter().map(RuleSpec::Preset));
        let flags = RuleFlags {
            specs,
            names: split_names(&a.metrics),
            katib: a.katib_semantics,
            format: a.format,
            max_line_bytes,
            max_metrics: a.max_metrics,
        };
        flags.build()
    }
}

/// Parses a duration for trialtail's own flags: Go's syntax (see [`parse_go_duration`]: `30s`, `500ms`, `1m30s`,
/// `1.5h`) or plain (fractional) seconds (`30`, `1.5`); at most a day.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let t = s.trim();
    let d = match t.parse::<f64>() {
        Ok(secs) if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') => Duration::try_from_secs_f64(secs).ok()?,
        _ => parse_go_duration(t)?,
    };
    (d <= Duration::from_secs(86_400)).then_some(d)
}

/// Go's `time.ParseDuration` (what Katib's `-p` and `-timeout` take): `0`, or a sequence of decimal numbers
/// each with a unit `ns us µs ms s m h` (`1m30s`, `1.5s`, `300ms`), optionally signed. Negative durations are
/// refused here.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(n);
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let u = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    (total.is_finite() && total < 1e12).then(|| Duration::from_secs_f64(total))
}

fn duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).ok_or_else(|| ConfigError::Duration { flag, value: value.to_string() })
}

/// Parses `--listen`: `HOST:PORT` with an IP host or `localhost`, `[IPV6]:PORT`, or `:PORT` (every interface).
pub fn parse_listen(s: &str) -> Option<SocketAddr> {
    let t = s.trim();
    if let Some(port) = t.strip_prefix(':') {
        return Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port.parse().ok()?)));
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        return Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port.parse().ok()?)));
    }
    t.parse().ok()
}

impl ExportConfig {
    /// Validates the export flags; `env` looks up the Kubernetes fallbacks (`KATIB_TRIAL_NAME`,
    /// `POD_NAMESPACE`, `POD_NAME`) for labels not given as flags.
    pub fn from_args(a: ExportArgs, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let listen = match a.listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(parse_listen(v).ok_or_else(|| ConfigError::Listen { value: v.to_string() })?),
        };
        let pushgateway = match a.pushgateway.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(PushTarget::parse(url)?),
        };
        let push_interval = Some(duration("push-interval", &a.push_interval)?).filter(|d| !d.is_zero());
        let label = |flag: Option<String>, fallback: &str| flag.or_else(|| env(fallback)).filter(|v| !v.is_empty());
        Ok(ExportConfig {
            listen,
            linger: duration("linger", &a.linger)?,
            pushgateway,
            push_interval,
            labels: Labels {
                trial: label(a.trial, "KATIB_TRIAL_NAME"),
                experiment: a.experiment.filter(|v| !v.is_empty()),
                namespace: label(a.namespace, "POD_NAMESPACE"),
                pod: label(a.pod, "POD_NAME"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("1x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn durations_take_units_and_reject_garbage() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)), "Go's syntax, as Katib's flags");
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "s", "-1s", "2d", "1e3", "25h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_duration_flag_takes_go_durations() {
        let argv = ["trialtail", "run", "--follow", "--until-idle", "1m30s", "--shutdown-grace", "1.5s", "x.log"];
        let run = crate::cli::parse_run_args(argv.map(String::from)).unwrap();
        let cfg = RunConfig::from_args(run, |_| None).unwrap();
        assert_eq!((cfg.until_idle, cfg.shutdown_grace), (Some(Duration::from_secs(90)), Duration::from_millis(1500)));
    }

    #[test]
    fn listen_addresses_take_a_port_shorthand() {
        assert_eq!(parse_listen(":9478"), Some("0.0.0.0:9478".parse().unwrap()));
        assert_eq!(parse_listen("127.0.0.1:1"), Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:9478"), Some("[::1]:9478".parse().unwrap()));
        assert_eq!(parse_listen("localhost:9"), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(parse_listen("9478"), None);
        assert_eq!(parse_listen("host:9478"), None);
    }

    #[test]
    fn labels_fall_back_to_the_kubernetes_environment() {
        let env = |k: &str| match k {
            "KATIB_TRIAL_NAME" => Some("t-env".to_string()),
            "POD_NAMESPACE" => Some("ns-env".to_string()),
            _ => None,
        };
        let args = ExportArgs {
            linger: "30s".into(),
            push_interval: "0".into(),
            namespace: Some("ns-flag".into()),
            ..Default::default()
        };
        let cfg = ExportConfig::from_args(args, env).unwrap();
        assert_eq!(cfg.labels.trial.as_deref(), Some("t-env"));
        assert_eq!(cfg.labels.namespace.as_deref(), Some("ns-flag"), "a flag wins over the environment");
        assert_eq!((cfg.labels.pod.as_deref(), cfg.push_interval, cfg.listen), (None, None, None));
        assert!(!cfg.is_enabled());
    }

    fn run(args: &[&str]) -> Result<RunConfig, ConfigError> {
        let argv = ["trialtail", "run"].iter().chain(args).map(|a| a.to_string());
        RunConfig::from_args(crate::cli::parse_run_args(argv).unwrap(), |_| None)
    }

    fn push_trial(metrics_format: serde_json::Value) -> Trial {
        Trial::from_json(&serde_json::json!({"metadata": {"name": "t"}, "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy", "additionalMetricNames": ["loss"]},
            "metricsCollector": {"collector": {"kind": "Push"}, "source": {"filter": {"metricsFormat": metrics_format}}}}}))
    }

    #[test]
    fn without_rule_flags_the_trial_decides_the_rules_and_names() {
        let flags = run(&["--source", "pod-log"]).unwrap().rule_flags;
        let from_trial = flags.for_trial(&push_trial(serde_json::json!([r"(\w+)=(\S+)"]))).unwrap();
        assert_eq!(from_trial.specs, [RuleSpec::Filter(r"(\w+)=(\S+)".into())]);
        assert_eq!(from_trial.rules.semantics(), Semantics::Katib);
        assert_eq!(from_trial.objective.as_deref(), Some("accuracy"));
        assert_eq!(from_trial.origin, RuleOrigin { rules: Origin::Trial, names: Origin::Trial });
        assert_eq!(from_trial.max_line_bytes, KATIB_MAX_LINE_BYTES);
        let default = flags.for_trial(&push_trial(serde_json::json!([]))).unwrap();
        assert!(default.specs.is_empty(), "no metricsFormat: Katib's default filter");
        assert_eq!(default.rules.semantics(), Semantics::Katib);
    }

    #[test]
    fn flags_win_over_the_trial_where_given() {
        let flags = run(&["--source", "pod-log", "--preset", "keras", "-m", "val_loss"]).unwrap().rule_flags;
        let c = flags.for_trial(&push_trial(serde_json::json!([r"(\w+)=(\S+)"]))).unwrap();
        assert_eq!(c.specs, [RuleSpec::Preset(crate::rules::Preset::Keras)]);
        assert_eq!(c.rules.semantics(), Semantics::Native);
        assert_eq!(c.origin, RuleOrigin { rules: Origin::Flags, names: Origin::Flags });
        let names = run(&["--source", "pod-log", "--preset", "keras"]).unwrap().rule_flags;
        let c = names.for_trial(&push_trial(serde_json::json!([]))).unwrap();
        assert_eq!(c.origin, RuleOrigin { rules: Origin::Flags, names: Origin::Trial });
        let names: Vec<_> = c.rules.names().unwrap().map(|n| n.to_vec()).collect();
        assert_eq!(names, [b"accuracy".to_vec(), b"loss".to_vec()], "the Trial's metrics only");
    }

    #[test]
    fn katib_flags_are_checked() {
        let cfg = run(&["--source", "pod-log", "--trial-status", "off", "--report-interval", "0"]).unwrap();
        assert_eq!(cfg.source, Source::PodLog { container: None, trial_status: false });
        assert_eq!((cfg.report_interval, cfg.katib_db.as_str()), (None, "katib-db-manager.kubeflow:6789"));
        for bad in ["nohost", ":6789", "host:0", "host:port", "http://h/x:1"] {
            let e = run(&["--source", "pod-log", "--katib-db", bad]).unwrap_err().to_string();
            assert!(e.starts_with("--katib-db"), "{bad}: {e}");
        }
        let e = run(&["--check-config", "--assume-trial", "/nonexistent.yaml", "x.log"]).unwrap_err();
        assert!(matches!(e, ConfigError::AssumeTrialWhat), "{e}");
        let e = run(&["--source", "pod-log", "--check-config", "--assume-trial", "/nonexistent.yaml"]).unwrap_err();
        assert!(e.to_string().starts_with("--assume-trial \"/nonexistent.yaml\""), "{e}");
    }

    #[test]
    fn names_split_on_commas_and_semicolons_keeping_inner_spaces() {
        assert_eq!(split_names(&["valid_1 auc;loss".into(), "a, b".into()]), ["valid_1 auc", "loss", "a", "b"]);
    }
}
