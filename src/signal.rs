//! Stopping: SIGINT and SIGTERM as one stream of signal numbers.
//!
//! Live modes install the handlers when they start (so the default action, dying at once, no longer applies);
//! the local mode, a plain synchronous read, keeps the default action while it reads and installs them when its
//! outputs end. The policy – drain what is readable within the grace period on the first signal, exit at once on
//! the second, or forward to a wrapped command – belongs to each source and to [`crate::outputs`]; this module
//! delivers the signals and counts them, so that "the second signal" means the second of the whole run.

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
    received: u32,
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime).
    pub fn new() -> io::Result<Self> {
        Ok(Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())?, received: 0 })
    }

    /// The next signal's number. Cancel-safe.
    pub async fn recv(&mut self) -> i32 {
        let sig = tokio::select! {
            _ = self.int.recv() => SIGINT,
            _ = self.term.recv() => SIGTERM,
        };
        self.received += 1;
        sig
    }

    /// How many signals were received so far.
    pub fn received(&self) -> u32 {
        self.received
    }
}
