//! trialtail: a metrics collector for hyper-parameter tuning.
//!
//! The core is sans-I/O and synchronous: [`lines`] (bytes → lines), [`rules`] (lines → matches), [`aggregate`]
//! (per-metric state) and [`collect`] (the three wired together). [`source`]s push bytes in; [`sink`]s take
//! observations and aggregates out. [`cli`] and [`config`] turn flags into a validated configuration, [`run`]
//! wires a configuration to its source and sinks.

pub mod aggregate;
pub mod cli;
pub mod collect;
pub mod config;
pub mod lines;
pub mod report;
pub mod rules;
pub mod run;
pub mod sink;
pub mod source;
pub mod state;
pub mod stop;
pub mod value;
