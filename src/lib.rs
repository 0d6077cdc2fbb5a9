//! trialtail: a metrics collector for hyper-parameter tuning.
//!
//! The tree is the architecture:
//! - the sans-I/O core: [`lines`] (bytes → lines), [`rules`] (lines → matches), [`value`] (number and time
//!   scanners), [`aggregate`] (per-metric state) and [`parser`] (rules and aggregate shared by every stream of a
//!   run, observations out);
//! - [`source`]s push bytes in (a file read to its end or followed, standard input, a wrapped command, a pod's
//!   log); [`wait`] decides when training ended (Katib's `/proc` markers, the pod's container status);
//! - [`sink`]s take observations and published [`snapshot`]s out (stdout, Prometheus, Pushgateway, the Trial's
//!   status, Katib's DB manager); [`outputs`] assembles and finishes every output of a run in one place, and
//!   [`server`] serves `/metrics`;
//! - [`modes`] wire a configuration to its source and outputs: `run` (local, follow, stdin, wrap), the native
//!   `sidecar` and Katib's `dropin`; [`katib`] holds what is Katib's own (its arguments, report rules,
//!   early-stopping rules, gRPC API) and [`k8s`] what the sidecar asks the Kubernetes API;
//! - the edges: [`cli`] (clap), [`config`] (flags → validated configuration), [`signal`], [`term`] (what a
//!   terminal shows: live table, progress bar, sparklines), [`plot`] (pictures), and [`webhook`] (the admission
//!   webhook that injects the sidecar).

pub mod aggregate;
pub mod backoff;
pub mod cli;
pub mod config;
#[cfg(test)]
mod fuzz;
pub mod k8s;
pub mod katib;
pub mod lines;
pub mod modes;
pub mod outputs;
pub mod parser;
pub mod plot;
pub mod rules;
pub mod server;
pub mod signal;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod term;
pub mod value;
pub mod wait;
pub mod webhook;
