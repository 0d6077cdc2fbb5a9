//! Sources: where log bytes come from. Each pushes chunks into a [`Collector`]; none parses anything itself.

use std::io::{self, ErrorKind, Read};

use crate::collect::{Collector, ObservationSink};

pub mod file;

/// Reads `reader` to its end into `collector`, reading straight into the collector's buffer.
///
/// Returns the bytes read. An interrupted read is retried; any other error ends the read and is returned,
/// after everything read before it was processed (the caller decides whether that is fatal).
pub fn read_to_end(
    reader: &mut impl Read,
    collector: &mut Collector,
    sink: &mut impl ObservationSink,
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        match reader.read(collector.space()) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                collector.commit(n, sink);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                collector.finish(sink);
                return Err(e);
            }
        }
    }
    collector.finish(sink);
    Ok(total)
}
