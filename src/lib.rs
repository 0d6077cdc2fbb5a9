//! trialtail: a metrics collector for hyper-parameter tuning.
//!
//! The core is sans-I/O and synchronous: [`lines`] (bytes → lines), [`rules`] (lines → matches), [`aggregate`]
//! (per-metric state) and [`collect`] (the three wired together). [`source`]s push bytes in; [`sink`]s take
//! observations and aggregates out. [`cli`] and [`config`] turn flags into a validated configuration, [`run`]
//! wires a configuration to its source and sinks. [`server`] serves `/metrics` from published [`state`]
//! snapshots; [`export`] starts it (and the Pushgateway sink) for a run and ends it. [`plot`] draws a log's
//! curves; [`progress`] and [`live`] show a run's progress on a terminal. [`dropin`] is the Katib drop-in mode
//! ([`katib_args`], [`wait`], [`early_stop`], [`sink::katib_db`]). [`webhook`] is the admission webhook that
//! injects the native sidecar ([`sidecar`]) into training pods.

pub mod aggregate;
pub mod cli;
pub mod collect;
pub mod config;
pub mod dropin;
pub mod early_stop;
pub mod export;
pub mod k8s;
pub mod katib_api;
pub mod katib_args;
pub mod lines;
pub mod live;
pub mod plot;
pub mod progress;
pub mod report;
pub mod rules;
pub mod run;
pub mod server;
pub mod sidecar;
pub mod sink;
pub mod source;
pub mod state;
pub mod stop;
pub mod value;
pub mod wait;
pub mod webhook;
