//! Sinks: where observations and aggregates go. Each sink is one file; none reaches into another.

pub mod katib_db;
pub mod prometheus;
pub mod pushgateway;
pub mod sparkline;
pub mod stats;
pub mod stdout;
pub mod trial_status;
