//! A log file (or standard input, `-`) read to its end: the local mode's plain synchronous loop, the fast path.
//!
//! [`open`] opens the log; [`read_to_end`] reads it straight into the stream's [`LineBuffer`] and parses every
//! complete line as it goes. No runtime, no thread: the sink publishes for whatever serves `/metrics` meanwhile.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::path::Path;

use super::{LiveSink, SourceError};
use crate::lines::LineBuffer;
use crate::parser::Parser;
use crate::snapshot::{Phase, SourceStats};

/// The path that means standard input.
pub const STDIN: &str = "-";

/// Opens `path` for reading, or standard input for `-`.
pub fn open(path: &Path) -> Result<Box<dyn Read>, SourceError> {
    if path.as_os_str() == STDIN {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path).map_err(|source| SourceError::Open { path: path.to_owned(), source })?;
    let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
    if is_dir {
        return Err(SourceError::Directory { path: path.to_owned() });
    }
    Ok(Box::new(file))
}

/// Reads `reader` to its end through `lines` into `parser`, reading straight into the buffer, and publishes
/// through `sink` after each read: at once after a short read (the next read may wait), else rate-limited.
///
/// Returns the bytes read. An interrupted read is retried; any other error ends the read and is returned,
/// after everything read before it was processed (the caller decides whether that is fatal).
pub fn read_to_end(
    reader: &mut impl Read,
    lines: &mut LineBuffer,
    parser: &mut Parser,
    sink: &mut impl LiveSink,
) -> io::Result<u64> {
    let mut total = 0u64;
    let result = loop {
        let space = lines.space();
        let offered = space.len();
        match reader.read(space) {
            Ok(0) => break Ok(total),
            Ok(n) => {
                total += n as u64;
                lines.commit(n);
                lines.drain_into(&mut parser.lines(sink));
                let source = SourceStats { opens: 1, lines: lines.stats(), ..SourceStats::default() };
                sink.publish(parser, source, Phase::Reading, n < offered);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    lines.finish_into(&mut parser.lines(sink));
    result
}
