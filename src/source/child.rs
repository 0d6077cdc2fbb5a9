//! The wrapped command: `trialtail run -- python train.py`.
//!
//! The command is spawned directly (no shell) with stdin inherited and stdout and stderr piped. Every chunk is
//! written through to trialtail's own stdout or stderr at once (same bytes, same stream, flushed, no line
//! buffering) and then parsed. SIGINT and SIGTERM are forwarded to the child; trialtail waits for it and exits
//! with its code (128+N when it died of signal N).
//!
//! The two streams share one [`Collector`] (one set of rules, one aggregate) but are split into lines
//! separately by [`Interleave`], so a line from stdout is never glued to a partial line from stderr: the
//! collector only ever receives whole lines.
//!
//! What it deliberately does not do: allocate a pseudo-terminal (so a child that buffers its output when it is
//! not on a terminal, such as Python without `-u` or `PYTHONUNBUFFERED=1`, still does), or kill the child: a
//! wrapped command decides itself how to end. If the child exits while a grandchild keeps its pipes open,
//! reading goes on for at most the grace period.

use std::ffi::OsString;
use std::io::{self, ErrorKind, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::{Instant, sleep_until};

use super::file::SourceError;
use super::{End, Feed, LiveSink};
use crate::collect::{Collector, ObservationSink};
use crate::signal::{SIGINT, Signals};
use crate::snapshot::Phase;

/// One of the child's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Out = 0,
    /// stderr.
    Err = 1,
}

/// Splits two streams into lines separately and feeds only whole lines to one collector.
///
/// Each stream keeps its own unterminated tail (at most `max_line_bytes + 1` bytes: a longer line is passed on
/// cut, with a `\n`, and the rest of it up to its newline is skipped), so the collector's own buffer always
/// ends on a line boundary and lines of the two streams cannot mix.
#[derive(Debug)]
pub struct Interleave {
    pending: [Vec<u8>; 2],
    skipping: [bool; 2],
    max_line: usize,
}

impl Interleave {
    /// Streams cut at `max_line_bytes`, as the collector does.
    pub fn new(max_line_bytes: usize) -> Self {
        Interleave { pending: [Vec::new(), Vec::new()], skipping: [false; 2], max_line: max_line_bytes.max(1) }
    }

    /// A chunk of `stream`: its complete lines go to `c`, its tail waits.
    pub fn feed(&mut self, stream: Stream, mut chunk: &[u8], c: &mut Collector, sink: &mut impl ObservationSink) {
        let s = stream as usize;
        while !chunk.is_empty() {
            if self.skipping[s] {
                match memchr::memchr(b'\n', chunk) {
                    Some(i) => {
                        self.skipping[s] = false;
                        chunk = &chunk[i + 1..];
                    }
                    None => return,
                }
                continue;
            }
            let pending = &mut self.pending[s];
            match memchr::memrchr(b'\n', chunk) {
                Some(i) => {
                    if pending.is_empty() {
                        c.feed(&chunk[..=i], sink);
                    } else {
                        pending.extend_from_slice(&chunk[..=i]);
                        c.feed(pending, sink);
                        pending.clear();
                    }
                    chunk = &chunk[i + 1..];
                }
                None => {
                    let room = self.max_line + 1 - pending.len();
                    if chunk.len() < room {
                        pending.extend_from_slice(chunk);
                        return;
                    }
                    // Longer than the limit: pass the cut line on (the collector counts it) and skip the rest.
                    pending.extend_from_slice(&chunk[..room]);
                    pending.push(b'\n');
                    c.feed(pending, sink);
                    pending.clear();
                    self.skipping[s] = true;
                    chunk = &chunk[room..];
                }
            }
        }
    }

    /// `stream` ended: its last unterminated line is a line.
    pub fn finish(&mut self, stream: Stream, c: &mut Collector, sink: &mut impl ObservationSink) {
        let s = stream as usize;
        self.skipping[s] = false;
        let pending = &mut self.pending[s];
        if !pending.is_empty() {
            pending.push(b'\n');
            c.feed(pending, sink);
            pending.clear();
        }
    }
}

/// The exit code a shell would give: the child's code, or 128+N for signal N.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => 1,
    }
}

/// The exit code for a command that could not be started (as a shell: 127 not found, 126 otherwise).
pub fn spawn_exit_code(e: &io::Error) -> u8 {
    if e.kind() == ErrorKind::NotFound { 127 } else { 126 }
}

fn forward(pid: Option<u32>, sig: i32) {
    let Some(pid) = pid.and_then(|p| Pid::from_raw(p as i32)) else { return };
    let signal = if sig == SIGINT { Signal::INT } else { Signal::TERM };
    if let Err(e) = kill_process(pid, signal) {
        tracing::warn!(error = %e, signal = sig, "could not forward the signal to the command");
    }
}

/// Passes a chunk through to our own stream; after a write error (our reader went away) passing through stops
/// but parsing goes on, so the child is never blocked.
fn pass_through(stream: Stream, chunk: &[u8], broken: &mut bool) {
    if *broken {
        return;
    }
    let r = match stream {
        Stream::Out => {
            let mut out = io::stdout().lock();
            out.write_all(chunk).and_then(|()| out.flush())
        }
        Stream::Err => {
            let mut err = io::stderr().lock();
            err.write_all(chunk).and_then(|()| err.flush())
        }
    };
    if let Err(e) = r {
        *broken = true;
        tracing::warn!(stream = ?stream, error = %e, "passing the command's output through failed; still parsing it");
    }
}

/// One read of `stream` done: passes the bytes through and parses them, or ends the stream at EOF or on an
/// error. Returns whether the stream is still open.
fn on_read<S: LiveSink>(
    stream: Stream,
    read: Option<io::Result<usize>>,
    buf: &[u8],
    lines: &mut Interleave,
    live: &mut Feed<'_, S>,
    broken: &mut bool,
) -> bool {
    match read {
        Some(Ok(n)) if n > 0 => {
            pass_through(stream, &buf[..n], broken);
            lines.feed(stream, &buf[..n], live.collector, live.sink);
            live.after_read();
            true
        }
        other => {
            if let Some(Err(e)) = other {
                live.stats.read_errors += 1;
                tracing::warn!(stream = ?stream, error = %e, "reading the command's output failed");
            }
            lines.finish(stream, live.collector, live.sink);
            false
        }
    }
}

/// Runs `command` to its end. See the module documentation.
pub async fn wrap<S: LiveSink>(
    command: &[OsString],
    live: &mut Feed<'_, S>,
    signals: &mut Signals,
    max_line_bytes: usize,
    grace: Duration,
) -> Result<End, SourceError> {
    let Some((program, args)) = command.split_first() else {
        return Ok(End::Exited(0));
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SourceError::Spawn { program: program.clone(), source })?;
    let pid = child.id();
    live.stats.opens = 1;
    live.phase = Phase::Reading;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let mut lines = Interleave::new(max_line_bytes);
    let (mut out_buf, mut err_buf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut broken = [false; 2];
    let mut status: Option<ExitStatus> = None;
    let mut linger_until: Option<Instant> = None;
    loop {
        if out.is_none() && err.is_none() && status.is_some() {
            break;
        }
        if status.is_some() && linger_until.is_some_and(|t| Instant::now() >= t) {
            tracing::warn!("the command exited but its output stays open (a process it started?); stopping");
            break;
        }
        live.before_wait();
        tokio::select! {
            biased;
            sig = signals.recv() => forward(pid, sig),
            r = async { Some(out.as_mut()?.read(&mut out_buf).await) }, if out.is_some() => {
                if !on_read(Stream::Out, r, &out_buf, &mut lines, live, &mut broken[0]) {
                    out = None;
                }
            }
            r = async { Some(err.as_mut()?.read(&mut err_buf).await) }, if err.is_some() => {
                if !on_read(Stream::Err, r, &err_buf, &mut lines, live, &mut broken[1]) {
                    err = None;
                }
            }
            s = child.wait(), if status.is_none() => match s {
                Ok(s) => {
                    status = Some(s);
                    linger_until = Some(Instant::now() + grace);
                }
                Err(e) => return Err(SourceError::Runtime(e)),
            },
            () = sleep_until(linger_until.unwrap_or_else(Instant::now)), if linger_until.is_some() => {}
        }
    }
    lines.finish(Stream::Out, live.collector, live.sink);
    lines.finish(Stream::Err, live.collector, live.sink);
    live.end();
    Ok(End::Exited(status.map_or(1, exit_code)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{LineFormat, Rules, Semantics};

    fn collector(max_line: usize) -> Collector {
        Collector::new(Rules::new(&[], &[], Semantics::Native, LineFormat::Text).unwrap(), max_line, 100)
    }

    #[test]
    fn interleaved_partial_lines_of_two_streams_are_never_glued() {
        let mut c = collector(64);
        let mut lines = Interleave::new(64);
        lines.feed(Stream::Out, b"lo", &mut c, &mut ());
        lines.feed(Stream::Err, b"acc", &mut c, &mut ());
        lines.feed(Stream::Out, b"ss=0.5\nlos", &mut c, &mut ());
        lines.feed(Stream::Err, b"uracy=0.9\n", &mut c, &mut ());
        lines.feed(Stream::Out, b"s=0.25", &mut c, &mut ());
        lines.finish(Stream::Out, &mut c, &mut ());
        lines.finish(Stream::Err, &mut c, &mut ());
        let m: Vec<_> = c.aggregate().metrics().iter().map(|m| (m.name.clone(), m.latest_raw.clone())).collect();
        assert_eq!(m, [("loss".to_string(), "0.25".to_string()), ("accuracy".to_string(), "0.9".to_string())]);
        assert_eq!(c.line_stats().lines, 3);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_cut_once_and_counted() {
        let mut c = collector(16);
        let mut lines = Interleave::new(16);
        for _ in 0..10 {
            lines.feed(Stream::Out, b"loss=1 xxxxxxxx", &mut c, &mut ());
        }
        lines.feed(Stream::Err, b"acc=1\n", &mut c, &mut ());
        lines.feed(Stream::Out, b"yyy\nloss=2\n", &mut c, &mut ());
        let s = c.line_stats();
        assert_eq!((s.lines, s.too_long), (3, 1));
        let loss = &c.aggregate().metrics()[0];
        assert_eq!((loss.count, loss.latest_raw.as_str()), (2, "2"));
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(spawn_exit_code(&io::Error::from(ErrorKind::NotFound)), 127);
    }
}
