//! Stopping: SIGINT and SIGTERM as one stream of signal numbers.
//!
//! Live modes install the handlers when they start (so the default action, dying at once, no longer applies);
//! the local mode, a plain synchronous read, keeps the default action. The policy – drain what is readable
//! within the grace period on the first signal, exit at once on the second, or forward to a wrapped command –
//! belongs to each source; this module only delivers the signals.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT's number.
pub const SIGINT: i32 = 2;
/// SIGTERM's number.
pub const SIGTERM: i32 = 15;

/// SIGINT and SIGTERM, received.
#[derive(Debug)]
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime).
    pub fn new() -> io::Result<Self> {
        Ok(Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    /// The next signal's number. Cancel-safe.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => SIGINT,
            _ = self.term.recv() => SIGTERM,
        }
    }
}
