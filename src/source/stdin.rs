//! Standard input, followed feed until EOF (`… | trialtail run -`).
//!
//! A plain thread does the blocking reads and hands chunks over a small bounded channel, so the reader stays
//! free to see signals and to publish as it goes; the bound keeps memory flat when the input is faster than
//! parsing. On the first signal, the chunks already read are processed and the stream ends (the thread is left
//! blocked in its read; the process exits under it). A read error ends the stream after what came before it.

use std::io::{self, ErrorKind, Read};
use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::SourceError;
use super::file::STDIN;
use super::{End, Feed, LiveSink};
use crate::lines::LineBuffer;
use crate::signal::Signals;
use crate::snapshot::Phase;

/// Bytes per chunk handed over.
const CHUNK: usize = 256 * 1024;

type Chunk = io::Result<Vec<u8>>;

fn reader(tx: mpsc::Sender<Chunk>) {
    let mut stdin = io::stdin().lock();
    loop {
        let mut buf = vec![0u8; CHUNK];
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(buf)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// Reads standard input until EOF or a signal. No grace period is needed: on a signal only the few chunks
/// already read are processed.
pub async fn follow<S: LiveSink>(
    feed: &mut Feed<'_, S>,
    signals: &mut Signals,
    max_line_bytes: usize,
) -> Result<End, SourceError> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(4);
    std::thread::Builder::new().name("stdin".into()).spawn(move || reader(tx)).map_err(SourceError::Runtime)?;
    // Ready (`/readyz`) once the first read is done: until then the phase stays `Starting`.
    feed.stats.opens = 1;
    let mut lines = LineBuffer::new(max_line_bytes);
    let mut failed = None;
    let end = loop {
        let chunk = match rx.try_recv() {
            Ok(chunk) => Some(chunk),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => {
                feed.before_wait();
                tokio::select! {
                    biased;
                    sig = signals.recv() => {
                        while let Ok(Ok(chunk)) = rx.try_recv() {
                            lines.feed_into(&chunk, &mut feed.parser.lines(feed.sink));
                        }
                        break End::Signalled(sig);
                    }
                    chunk = rx.recv() => chunk,
                }
            }
        };
        match chunk {
            None => break End::Eof,
            Some(Ok(chunk)) => {
                feed.phase = Phase::Reading;
                lines.feed_into(&chunk, &mut feed.parser.lines(feed.sink));
                feed.set_lines(lines.stats());
                feed.after_read();
            }
            Some(Err(e)) => {
                feed.stats.read_errors += 1;
                failed = Some(e);
                break End::Eof;
            }
        }
    };
    lines.finish_into(&mut feed.parser.lines(feed.sink));
    feed.set_lines(lines.stats());
    feed.end();
    match failed {
        Some(source) => {
            let bytes = lines.stats().bytes;
            Err(SourceError::Read { path: PathBuf::from(STDIN), bytes, source })
        }
        None => Ok(end),
    }
}
