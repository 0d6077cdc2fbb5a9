//! Katib's early-stopping rules, pure: observations in, "stop now" out.
//!
//! What Katib's file collector does while the training runs (`cmd/metricscollector/v1beta1/file-metricscollector/
//! main.go`, `watchMetricsFile`, `updateStopRules`, `deleteStopRule`), reproduced step for step:
//! - a rule is `name;value;comparison;startStep` with comparison `equal`, `less` or `greater`;
//! - each value of a metric is checked against the rules on that metric, walking the rule list as Go's `range`
//!   walks a slice that a fired rule shrinks in place (the last rule moves into the fired one's place, so it is
//!   not checked again for this value; two rules on one metric may fire on one value or on two);
//! - each rule evaluation first moves the objective's best value (the first value; then a greater one when
//!   maximizing, a smaller one when minimizing – NaN, once the best, stays the best) and compares the best, not
//!   the value, for rules on the objective;
//! - a metric with a non-zero startStep (the last such rule's, per metric) counts down once per rule evaluation and
//!   is compared only when its counter reaches exactly zero;
//! - the trial is stopped when every rule has fired.
//!
//! Deliberately different: a value that is not a number is skipped with a warning, where Katib's collector exits
//! (`klog.Fatalf`, the trial fails) – also for matches of other names on a line that holds a rule's metric; and a
//! rule that does not parse is refused at start-up (exit 2). The actions taken on a stop live in
//! [`crate::modes::dropin`].

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
    /// The rules not fired yet, in Katib's slice order.
    pending: Vec<StopRule>,
    objective: String,
    objective_type: Option<ObjectiveType>,
    best: Option<f64>,
    /// Per metric with a non-zero startStep: evaluations still to come before the one that compares.
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
        if self.fired || !self.pending.iter().any(|r| r.name == name) {
            return false;
        }
        let Ok(value) = raw.trim().parse::<f64>() else {
            if self.skipped == 0 {
                tracing::warn!(metric = name, value = raw, "early stopping: value is not a number; skipped");
            }
            self.skipped += 1;
            return false;
        };
        // Go's `for idx, rule := range stopRules` over the slice as it was, while fired rules are removed from
        // it in place: the backing array keeps its length, emptied slots at its end.
        let mut slots: Vec<Option<StopRule>> = self.pending.drain(..).map(Some).collect();
        let mut len = slots.len();
        for idx in 0..slots.len() {
            let Some(rule) = slots[idx].clone().filter(|r| r.name == name) else { continue };
            if self.evaluate(&rule, value) {
                slots[idx] = slots[len - 1].clone();
                slots[len - 1] = None;
                len -= 1;
            }
        }
        self.pending = slots.into_iter().take(len).flatten().collect();
        self.fired = self.pending.is_empty();
        self.fired
    }

    /// One evaluation of `rule` with `value` (Katib's `updateStopRules`); whether the rule fires.
    fn evaluate(&mut self, rule: &StopRule, value: f64) -> bool {
        let mut current = value;
        if rule.name == self.objective {
            let best = match (self.best, self.objective_type) {
                (None, _) => value,
                (Some(b), Some(ObjectiveType::Maximize)) if value > b => value,
                (Some(b), Some(ObjectiveType::Minimize)) if value < b => value,
                (Some(b), _) => b,
            };
            self.best = Some(best);
            current = best;
        }
        if let Some(left) = self.countdown.get_mut(&rule.name) {
            *left -= 1;
            if *left != 0 {
                return false;
            }
        }
        match rule.comparison {
            Comparison::Equal => current == rule.value,
            Comparison::Less => current < rule.value,
            Comparison::Greater => current > rule.value,
        }
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
    fn two_rules_on_one_metric_are_walked_as_katibs_shrinking_slice() {
        // [A, B] on loss, both hold for 2: A fires, B moves into A's slot and is not checked again for this value,
        // the emptied slot is skipped: B fires on the next value.
        let mut es = EarlyStop::new(rules(&["loss;1;greater;0", "loss;5;less;0"]), "acc", None);
        assert!(!es.observe("loss", "2"));
        assert!(es.observe("loss", "2"));
        // [A, X, B]: A fires, B moves to slot 0 (passed), X is checked, the emptied slot skipped.
        let mut es = EarlyStop::new(rules(&["loss;1;greater;0", "x;0;less;0", "loss;5;less;0"]), "acc", None);
        assert!(!es.observe("loss", "2"));
        assert!(!es.observe("x", "-1"), "B is still pending");
        assert!(es.observe("loss", "2"));
        // [X, A, B], both hold: A fires at slot 1, B moves there, slot 2 is empty: B waits for the next value.
        let mut es = EarlyStop::new(rules(&["x;0;less;0", "loss;1;greater;0", "loss;5;less;0"]), "acc", None);
        assert!(!es.observe("loss", "2"));
        assert!(!es.observe("x", "-1"));
        assert!(es.observe("loss", "2"));
    }

    #[test]
    fn the_start_step_counter_counts_rule_evaluations() {
        // Two rules with startStep 2 on loss: the shared counter reaches 0 at the first value's second evaluation.
        let mut es = EarlyStop::new(rules(&["loss;1;greater;2", "loss;100;less;2"]), "acc", None);
        assert!(!es.observe("loss", "50"), "rule 1 counts 2 → 1; rule 2 counts 1 → 0 and fires");
        assert!(!es.observe("loss", "50"), "the counter is below zero: rule 1 is never compared again");
        assert_eq!(es.pending.len(), 1);
    }

    #[test]
    fn the_objectives_best_is_the_first_value_without_an_objective_type_and_nan_sticks() {
        let mut es = EarlyStop::new(rules(&["acc;0.5;less;0"]), "acc", None);
        assert!(!es.observe("acc", "0.9"));
        assert!(!es.observe("acc", "0.1"), "without -o-type the best stays the first value");
        let mut es = EarlyStop::new(rules(&["acc;0.5;less;0"]), "acc", Some(ObjectiveType::Maximize));
        assert!(!es.observe("acc", "nan"));
        assert!(!es.observe("acc", "0.1"), "NaN, once the best, is never replaced (no comparison holds)");
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
