//! Sinks: where observations and aggregates go. Each sink is one file; none reaches into another.

pub mod sparkline;
pub mod stdout;
