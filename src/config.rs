//! From parsed flags to a validated configuration: everything that can be wrong with the flags fails here, at
//! start-up, with a message naming the flag and the value.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Output, RunArgs};
use crate::rules::{RuleError, RuleSpec, Rules, Semantics};

/// Why the flags do not make a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("--max-line-bytes {value:?}: {reason}")]
    MaxLineBytes { value: String, reason: &'static str },
    #[error("--max-metrics {value}: must be between 1 and 1000000")]
    MaxMetrics { value: usize },
    #[error("--{flag} {value:?}: not a duration (examples: 500ms, 5s, 2m, 1h)")]
    Duration { flag: &'static str, value: String },
    #[error("give a LOG (or `-` for standard input) or a command after `--`")]
    NoSource,
    #[error("give either a LOG or a command after `--`, not both")]
    TwoSources,
    #[error("--follow needs a LOG file, not standard input or a command")]
    FollowWhat,
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
    /// A command to run; its stdout and stderr are the log.
    Command(Vec<OsString>),
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
    /// Write the output here instead of stdout (stderr when wrapping a command).
    pub output_file: Option<PathBuf>,
    /// What to print.
    pub output: Output,
    /// Print counters at the end.
    pub stats: bool,
    /// The compiled rules.
    pub rules: Rules,
    /// Katib's objective (the first metric name) in Katib semantics.
    pub objective: Option<String>,
    /// Line length limit.
    pub max_line_bytes: usize,
    /// Metric name limit.
    pub max_metrics: usize,
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

/// Parses a duration such as `500ms`, `5s`, `2m`, `1h` or `1.5s` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let secs_per_unit = match unit.trim() {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    Duration::try_from_secs_f64(n * secs_per_unit).ok()
}

fn duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).ok_or_else(|| ConfigError::Duration { flag, value: value.to_string() })
}

/// Splits metric-name lists on `,` and `;` (Katib's separator), trimming spaces around each name but keeping
/// spaces inside (`valid_1 auc`).
pub fn split_names(values: &[String]) -> Vec<String> {
    values.iter().flat_map(|v| v.split([',', ';'])).map(|n| n.trim().to_string()).collect()
}

impl TryFrom<RunArgs> for RunConfig {
    type Error = ConfigError;

    fn try_from(a: RunArgs) -> Result<Self, ConfigError> {
        let max_line_bytes = match parse_size(&a.max_line_bytes) {
            None => return Err(ConfigError::MaxLineBytes { value: a.max_line_bytes, reason: "not a size" }),
            Some(n) if !(16..=64 << 20).contains(&n) => {
                return Err(ConfigError::MaxLineBytes {
                    value: a.max_line_bytes,
                    reason: "must be 16 bytes to 64 MiB",
                });
            }
            Some(n) => n,
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
        let names = split_names(&a.metrics);
        let semantics = if a.katib_semantics { Semantics::Katib } else { Semantics::Native };
        let rules = Rules::new(&specs, &names, semantics, a.format)?;
        let objective = (semantics == Semantics::Katib).then(|| names[0].clone());
        let source = match (a.log, a.command.is_empty()) {
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
            (Some(path), true) if a.follow => Source::Follow { path, from_end: a.from_end },
            (Some(path), true) => Source::File(path),
        };
        let until_idle = a.until_idle.as_deref().map(|v| duration("until-idle", v)).transpose()?;
        let shutdown_grace = duration("shutdown-grace", &a.shutdown_grace)?;
        Ok(RunConfig {
            source,
            until_idle,
            shutdown_grace,
            output_file: a.output_file,
            output: a.output,
            stats: a.stats,
            rules,
            objective,
            max_line_bytes,
            max_metrics: a.max_metrics,
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
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn names_split_on_commas_and_semicolons_keeping_inner_spaces() {
        assert_eq!(split_names(&["valid_1 auc;loss".into(), "a, b".into()]), ["valid_1 auc", "loss", "a", "b"]);
    }
}
