//! What is Katib's own: its collector's command line ([`args`]), the rows it reports and its final rule
//! ([`report`]), its early-stopping rules ([`early_stop`]), its TensorFlowEvent collector's reading of event files
//! ([`tfevent`]), the Trial as the sidecar reads it ([`trial`]) and its gRPC API ([`api`], generated). Pure where it
//! can be: nothing here does I/O but the generated client.

pub mod api;
pub mod args;
pub mod early_stop;
pub mod report;
pub mod tfevent;
pub mod trial;

/// Katib's value for a metric that has none: the sentinel row of a report without its objective, and a Trial
/// status field without a value.
pub const UNAVAILABLE: &str = "unavailable";
