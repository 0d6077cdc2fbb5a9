//! What each sink delivered and how it failed, for the self-metrics `trialtail_sink_observations_total` and
//! `trialtail_sink_errors_total`.
//!
//! Sinks share one [`SinkStats`] (behind an `Arc`) and report into it off the hot path: a sink says how many
//! observations it has delivered so far (a running total, so reporting the same total twice is harmless) and
//! counts each failure under a bounded `kind` (a `&'static str` from the error's `kind()`, never a message).
//! Every change bumps a version, so an exposition cache knows when its text is stale.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One sink's counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SinkCounts {
    /// Observations delivered (the collector's observation total as of the last delivery).
    pub observations: u64,
    /// Failures by kind.
    pub errors: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    sinks: BTreeMap<&'static str, SinkCounts>,
    version: u64,
}

/// Counters of every sink, shared by the sinks and the exposition.
#[derive(Debug, Default)]
pub struct SinkStats {
    inner: Mutex<Inner>,
}

impl SinkStats {
    /// Makes `sink` known, so its series exist (at zero) before the first delivery.
    pub fn register(&self, sink: &'static str) {
        self.with(|i| {
            if !i.sinks.contains_key(sink) {
                i.sinks.insert(sink, SinkCounts::default());
                i.version += 1;
            }
        });
    }

    /// Records that `sink` has delivered everything up to the collector's `observations` total.
    pub fn delivered(&self, sink: &'static str, observations: u64) {
        self.with(|i| {
            let s = i.sinks.entry(sink).or_default();
            if observations > s.observations {
                s.observations = observations;
                i.version += 1;
            }
        });
    }

    /// Counts one failure of `sink`.
    pub fn error(&self, sink: &'static str, kind: &'static str) {
        self.with(|i| {
            *i.sinks.entry(sink).or_default().errors.entry(kind).or_default() += 1;
            i.version += 1;
        });
    }

    /// Changes with every change of the counters.
    pub fn version(&self) -> u64 {
        self.with(|i| i.version)
    }

    /// A copy of every sink's counters, by sink name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, SinkCounts> {
        self.with(|i| i.sinks.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding the lock cannot leave the counters inconsistent: keep using them.
        let mut guard = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_is_a_running_total_and_errors_count_by_kind() {
        let s = SinkStats::default();
        s.register("prometheus");
        let v0 = s.version();
        s.delivered("prometheus", 5);
        s.delivered("prometheus", 5);
        s.delivered("prometheus", 3);
        let v1 = s.version();
        assert_eq!(v1, v0 + 1, "only an increase is a change");
        s.error("pushgateway", "connect");
        s.error("pushgateway", "connect");
        let snap = s.snapshot();
        assert_eq!(snap["prometheus"].observations, 5);
        assert_eq!(snap["pushgateway"].errors["connect"], 2);
        assert!(s.version() > v1);
    }
}
