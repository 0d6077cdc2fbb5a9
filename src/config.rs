//! From parsed flags to a validated configuration: everything that can be wrong with the flags fails here, at
//! start-up, with a message naming the flag and the value.

use std::path::PathBuf;

use crate::cli::{Output, RuleArgs, RunArgs};
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
}

/// A validated `trialtail run`.
#[derive(Debug)]
pub struct RunConfig {
    /// The log path, `-` for stdin.
    pub log: PathBuf,
    /// What to print.
    pub output: Output,
    /// Print counters at the end.
    pub stats: bool,
    /// Show a progress bar on stderr when it is a terminal.
    pub progress: bool,
    /// Redraw the summary while following (ready for follow mode).
    pub live: bool,
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
    /// Katib's objective (the first metric name) in Katib semantics.
    pub objective: Option<String>,
    /// Line length limit.
    pub max_line_bytes: usize,
    /// Metric name limit.
    pub max_metrics: usize,
}

impl TryFrom<RunArgs> for RunConfig {
    type Error = ConfigError;

    fn try_from(a: RunArgs) -> Result<Self, ConfigError> {
        let r = RuleConfig::try_from(a.rules)?;
        Ok(RunConfig {
            log: a.log,
            output: a.output,
            stats: a.stats,
            progress: !a.no_progress && !a.quiet,
            live: a.live,
            rules: r.rules,
            objective: r.objective,
            max_line_bytes: r.max_line_bytes,
            max_metrics: r.max_metrics,
        })
    }
}

impl TryFrom<RuleArgs> for RuleConfig {
    type Error = ConfigError;

    fn try_from(a: RuleArgs) -> Result<Self, ConfigError> {
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
        Ok(RuleConfig { rules, objective, max_line_bytes, max_metrics: a.max_metrics })
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
    fn names_split_on_commas_and_semicolons_keeping_inner_spaces() {
        assert_eq!(split_names(&["valid_1 auc;loss".into(), "a, b".into()]), ["valid_1 auc", "loss", "a", "b"]);
    }
}
