//! What a terminal shows: the live table ([`live`]), the progress bar ([`progress`]) and the sparklines
//! ([`sparkline`]). Callers decide whether a terminal is there; these only draw.

pub mod live;
pub mod progress;
pub mod sparkline;
