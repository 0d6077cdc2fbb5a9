//! What a terminal shows: the live table ([`live`]), the progress bar ([`progress`]), the sparklines
//! ([`sparkline`]) and what a run says about itself under the table ([`explain`]: the parameters, `--explain`,
//! the "no metrics found" help). Callers decide whether a terminal is there; these only draw.

pub mod explain;
pub mod live;
pub mod progress;
pub mod sparkline;
