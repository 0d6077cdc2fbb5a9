//! The modes: each wires a validated configuration to its source and its outputs.
//!
//! [`run`] is `trialtail run` (a file read to its end or followed, standard input, a wrapped command),
//! [`sidecar`] the native sidecar (`--source pod-log`), [`dropin`] Katib's collector replaced.

pub mod dropin;
pub mod run;
pub mod sidecar;
