//! Sinks: where observations and aggregates go. Each sink is one file; none reaches into another.

pub mod history;
pub mod katib_db;
pub mod prometheus;
pub mod pushgateway;
pub mod stats;
pub mod stdout;
pub mod trial_status;

/// An error and its sources, `: `-separated, for one log line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
