//! The wrapped command: `trialtail run -- python train.py`.
//!
//! The command is spawned directly (no shell) with stdin inherited and stdout and stderr piped. Every chunk is
//! written through to trialtail's own stdout or stderr at once (same bytes, same stream, flushed, no line
//! buffering) and then parsed. SIGINT and SIGTERM are forwarded to the child; trialtail waits for it and exits
//! with its code (128+N when it died of signal N).
//!
//! The two streams share the run's [`Parser`](crate::parser::Parser) (one set of rules, one aggregate) but each
//! has its own [`LineBuffer`], read into directly, so a line from stdout is never glued to a partial line from
//! stderr: the parser only ever receives whole lines.
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

use super::{End, Feed, LiveSink, SourceError};
use crate::lines::{LineBuffer, LineStats};
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

/// One read of `stream` into its line buffer done: passes the bytes through and parses them, or ends the stream
/// at EOF or on an error. Returns whether the stream is still open.
fn on_read<S: LiveSink>(
    stream: Stream,
    read: Option<io::Result<usize>>,
    buf: &mut LineBuffer,
    totals: &mut [LineStats; 2],
    feed: &mut Feed<'_, S>,
    broken: &mut bool,
) -> bool {
    let open = match read {
        Some(Ok(n)) if n > 0 => {
            pass_through(stream, buf.commit(n), broken);
            buf.drain_into(&mut feed.parser.lines(feed.sink));
            true
        }
        other => {
            if let Some(Err(e)) = other {
                feed.stats.read_errors += 1;
                tracing::warn!(stream = ?stream, error = %e, "reading the command's output failed");
            }
            buf.finish_into(&mut feed.parser.lines(feed.sink));
            false
        }
    };
    totals[stream as usize] = buf.stats();
    feed.set_lines(totals[0] + totals[1]);
    if open {
        feed.after_read();
    }
    open
}

/// One read of a child's stream straight into its line buffer; `None` when the stream is closed.
async fn read(
    stream: Option<&mut (impl tokio::io::AsyncRead + Unpin)>,
    buf: &mut LineBuffer,
) -> Option<io::Result<usize>> {
    Some(stream?.read(buf.space()).await)
}

/// Runs `command` to its end. See the module documentation.
pub async fn wrap<S: LiveSink>(
    command: &[OsString],
    feed: &mut Feed<'_, S>,
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
    feed.stats.opens = 1;
    feed.phase = Phase::Reading;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (mut out_lines, mut err_lines) = (LineBuffer::new(max_line_bytes), LineBuffer::new(max_line_bytes));
    let mut totals = [LineStats::default(); 2];
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
        feed.before_wait();
        tokio::select! {
            biased;
            sig = signals.recv() => forward(pid, sig),
            r = read(out.as_mut(), &mut out_lines), if out.is_some() => {
                if !on_read(Stream::Out, r, &mut out_lines, &mut totals, feed, &mut broken[0]) {
                    out = None;
                }
            }
            r = read(err.as_mut(), &mut err_lines), if err.is_some() => {
                if !on_read(Stream::Err, r, &mut err_lines, &mut totals, feed, &mut broken[1]) {
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
    for buf in [&mut out_lines, &mut err_lines] {
        buf.finish_into(&mut feed.parser.lines(feed.sink));
    }
    feed.set_lines(out_lines.stats() + err_lines.stats());
    feed.end();
    Ok(End::Exited(status.map_or(1, exit_code)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::Parser;
    use crate::rules::Rules;

    fn parser() -> Parser {
        Parser::new(Rules::classic(), 100)
    }

    /// Feeds `chunk` to one stream's buffer, as [`on_read`] does.
    fn feed(buf: &mut LineBuffer, c: &mut Parser, chunk: &[u8]) {
        buf.feed_into(chunk, &mut c.lines(&mut ()));
    }

    #[test]
    fn interleaved_partial_lines_of_two_streams_are_never_glued() {
        let mut c = parser();
        let (mut out, mut err) = (LineBuffer::new(64), LineBuffer::new(64));
        feed(&mut out, &mut c, b"lo");
        feed(&mut err, &mut c, b"acc");
        feed(&mut out, &mut c, b"ss=0.5\nlos");
        feed(&mut err, &mut c, b"uracy=0.9\n");
        feed(&mut out, &mut c, b"s=0.25");
        out.finish_into(&mut c.lines(&mut ()));
        err.finish_into(&mut c.lines(&mut ()));
        let m: Vec<_> = c.aggregate().metrics().iter().map(|m| (m.name.clone(), m.latest_raw.to_string())).collect();
        assert_eq!(m, [("loss".to_string(), "0.25".to_string()), ("accuracy".to_string(), "0.9".to_string())]);
        assert_eq!((out.stats() + err.stats()).lines, 3);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_cut_once_and_counted() {
        let mut c = parser();
        let (mut out, mut err) = (LineBuffer::new(16), LineBuffer::new(16));
        for _ in 0..10 {
            feed(&mut out, &mut c, b"loss=1 xxxxxxxx");
        }
        feed(&mut err, &mut c, b"acc=1\n");
        feed(&mut out, &mut c, b"yyy\nloss=2\n");
        let s = out.stats() + err.stats();
        assert_eq!((s.lines, s.too_long), (3, 1));
        let loss = &c.aggregate().metrics()[0];
        assert_eq!((loss.count, &*loss.latest_raw.as_str()), (2, "2"));
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(spawn_exit_code(&io::Error::from(ErrorKind::NotFound)), 127);
    }
}
