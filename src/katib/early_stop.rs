//! Katib's early-stopping rules (CONTRACT §6), pure: observations in, "stop now" out.
//!
//! A rule is `name;value;comparison;startStep` with comparison `equal`, `less` or `greater`. For the objective the
//! compared value is the best so far (max when maximizing, min when minimizing; the latest when `-o-type` is
//! unknown). A metric with a rule whose startStep is not 0 is checked only on exactly its startStep-th value (one
//! counter per metric, shared by its rules, as in Katib); with startStep 0 on every value. A rule that fires is
//! removed; the trial is stopped when every rule has fired. A value that does not parse as a number is skipped
//! with a warning (Katib's collector kills itself there). The actions taken on a stop live in [`crate::modes::dropin`].

use std::collections::HashMap;

use crate::katib::args::ObjectiveType;
use crate::parser::{Observation, ObservationSink};

/// How a rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// The value equals the rule's.
    Equal,
    /// The value is less than the rule's.
    Less,
    /// The value is greater than the rule's.
    Greater,
}

/// One parsed `-stop-rule`.
#[derive(Debug, Clone, PartialEq)]
pub struct StopRule {
    /// The metric.
    pub name: String,
    /// The threshold.
    pub value: f64,
    /// The comparison.
    pub comparison: Comparison,
    /// Check only the startStep-th value (0: every value).
    pub start_step: u64,
}

/// Why a `-stop-rule` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("-stop-rule {rule:?}: {reason}")]
pub struct StopRuleError {
    /// The rule as given.
    pub rule: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses `name;value;comparison;startStep`.
pub fn parse_rule(s: &str) -> Result<StopRule, StopRuleError> {
    let err = |reason| StopRuleError { rule: s.to_string(), reason };
    let parts: Vec<&str> = s.split(';').collect();
    let [name, value, comparison, start] = parts[..] else {
        return Err(err("expected name;value;comparison;startStep"));
    };
    let value = value.trim().parse::<f64>().map_err(|_| err("the value is not a number"))?;
    let comparison = match comparison.trim() {
        "equal" => Comparison::Equal,
        "less" => Comparison::Less,
        "greater" => Comparison::Greater,
        _ => return Err(err("the comparison is not equal, less or greater")),
    };
    let start_step = start.trim().parse::<u64>().map_err(|_| err("startStep is not a non-negative integer"))?;
    Ok(StopRule { name: name.to_string(), value, comparison, start_step })
}

/// The rules' state over a run.
#[derive(Debug, Clone)]
pub struct EarlyStop {
    pending: Vec<StopRule>,
    objective: String,
    objective_type: Option<ObjectiveType>,
    best: Option<f64>,
    /// Values still to see before the one that is checked, per metric with a non-zero startStep.
    countdown: HashMap<String, i64>,
    fired: bool,
    skipped: u64,
}

impl EarlyStop {
    /// The state for `rules` on a run whose objective is `objective`.
    pub fn new(rules: Vec<StopRule>, objective: impl Into<String>, objective_type: Option<ObjectiveType>) -> Self {
        let mut countdown = HashMap::new();
        for r in &rules {
            if r.start_step != 0 {
                countdown.insert(r.name.clone(), r.start_step as i64);
            }
        }
        EarlyStop {
            pending: rules,
            objective: objective.into(),
            objective_type,
            best: None,
            countdown,
            fired: false,
            skipped: 0,
        }
    }

    /// Whether every rule has fired.
    pub fn fired(&self) -> bool {
        self.fired
    }

    /// Values skipped because they were not numbers.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// One reported value; returns whether the trial must stop now (true once, when the last rule fires).
    pub fn observe(&mut self, name: &str, raw: &str) -> bool {
        // No rules (or none left on this metric, objective aside): nothing to decide.
        if self.fired
            || self.pending.is_empty()
            || !self.pending.iter().any(|r| r.name == name) && name != self.objective
        {
            return false;
        }
        let Ok(value) = raw.trim().parse::<f64>() else {
            if self.skipped == 0 {
                tracing::warn!(metric = name, value = raw, "early stopping: value is not a number; skipped");
            }
            self.skipped += 1;
            return false;
        };
        let mut current = value;
        if name == self.objective {
            let best = match (self.best, self.objective_type) {
                (Some(b), Some(ObjectiveType::Maximize)) => b.max(value),
                (Some(b), Some(ObjectiveType::Minimize)) => b.min(value),
                _ => value,
            };
            self.best = Some(best);
            current = best;
        }
        if let Some(left) = self.countdown.get_mut(name) {
            *left -= 1;
            if *left != 0 {
                return false;
            }
        }
        self.pending.retain(|r| {
            if r.name != name {
                return true;
            }
            let hit = match r.comparison {
                Comparison::Equal => current == r.value,
                Comparison::Less => current < r.value,
                Comparison::Greater => current > r.value,
            };
            !hit
        });
        if self.pending.is_empty() {
            self.fired = true;
        }
        self.fired
    }
}

/// Rules read no snapshots: nothing to flush or publish.
impl crate::source::LiveSink for EarlyStop {}

impl ObservationSink for EarlyStop {
    fn observe(&mut self, o: &Observation<'_>) {
        let name = String::from_utf8_lossy(o.name);
        let raw = String::from_utf8_lossy(o.raw);
        EarlyStop::observe(self, &name, &raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(specs: &[&str]) -> Vec<StopRule> {
        specs.iter().map(|s| parse_rule(s).unwrap()).collect()
    }

    #[test]
    fn rules_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_rule("accuracy;0.4;less;2").unwrap(),
            StopRule { name: "accuracy".into(), value: 0.4, comparison: Comparison::Less, start_step: 2 }
        );
        for bad in ["accuracy;0.4;less", "a;x;less;0", "a;1;lt;0", "a;1;less;-1"] {
            assert!(parse_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn objective_uses_the_best_so_far_when_maximizing() {
        let mut es = EarlyStop::new(rules(&["accuracy;0.5;less;0"]), "accuracy", Some(ObjectiveType::Maximize));
        assert!(!es.observe("accuracy", "0.6"));
        // The latest (0.3) is below 0.5, but the best so far (0.6) is not.
        assert!(!es.observe("accuracy", "0.3"));
        let mut es = EarlyStop::new(rules(&["accuracy;0.5;less;0"]), "accuracy", Some(ObjectiveType::Maximize));
        assert!(es.observe("accuracy", "0.3"));
        assert!(es.fired());
    }

    #[test]
    fn objective_uses_the_min_so_far_when_minimizing() {
        let mut es = EarlyStop::new(rules(&["loss;1.0;greater;0"]), "loss", Some(ObjectiveType::Minimize));
        assert!(!es.observe("loss", "0.9"));
        assert!(!es.observe("loss", "2.0"), "best so far is 0.9");
    }

    #[test]
    fn other_metrics_use_their_latest_value() {
        let mut es = EarlyStop::new(rules(&["loss;1.0;greater;0"]), "accuracy", Some(ObjectiveType::Maximize));
        assert!(!es.observe("loss", "0.9"));
        assert!(es.observe("loss", "2.0"));
    }

    #[test]
    fn start_step_checks_exactly_that_value() {
        let mut es = EarlyStop::new(rules(&["loss;1.0;greater;3"]), "accuracy", None);
        assert!(!es.observe("loss", "5"), "1st value is not checked");
        assert!(!es.observe("loss", "5"), "2nd neither");
        assert!(!es.observe("loss", "0.5"), "3rd is checked and does not fire");
        assert!(!es.observe("loss", "5"), "4th and later are never checked");
        let mut es = EarlyStop::new(rules(&["loss;1.0;greater;2"]), "accuracy", None);
        assert!(!es.observe("loss", "5"));
        assert!(es.observe("loss", "5"));
    }

    #[test]
    fn all_rules_must_fire_and_a_fired_rule_stays_fired() {
        let mut es = EarlyStop::new(
            rules(&["loss;1.0;greater;0", "accuracy;0.2;less;0"]),
            "accuracy",
            Some(ObjectiveType::Maximize),
        );
        assert!(!es.observe("loss", "2"));
        assert!(!es.observe("loss", "0.1"), "the loss rule already fired and was removed");
        assert!(es.observe("accuracy", "0.1"));
        assert!(!es.observe("accuracy", "0.1"), "true only once");
    }

    #[test]
    fn without_rules_nothing_ever_fires() {
        let mut es = EarlyStop::new(Vec::new(), "loss", Some(ObjectiveType::Minimize));
        assert!(!es.observe("loss", "0.5"));
        assert!(!es.fired());
    }

    #[test]
    fn a_value_that_is_not_a_number_is_skipped() {
        let mut es = EarlyStop::new(rules(&["loss;1.0;equal;0"]), "loss", None);
        assert!(!es.observe("loss", ""));
        assert!(!es.observe("loss", "Genotype(x)"));
        assert_eq!(es.skipped(), 2);
        assert!(es.observe("loss", "1.0"));
    }
}
