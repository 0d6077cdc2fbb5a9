//! Connection slots shared by trialtail's HTTP servers (`/metrics`, and the webhook's HTTPS and plain ports):
//! at most a fixed number of connections, which one gives way when a new one arrives at the limit, and the
//! write timeout.
//!
//! **Fair accept.** A connection is *working* while one of its requests is handled: its request read, its
//! answer not yet returned (a few milliseconds at most). Any other connection – waiting for a request,
//! receiving one, or writing an answer its client does not read – can be *evicted*. When every slot is taken,
//! a new connection takes the place of the oldest connection that is not working; only when all of them are
//! working is the new one closed. So clients that hold connections without finishing their requests or reading
//! the answers (pipelining, dribbling a body) cannot keep a scrape, a probe or an admission review out: each
//! new connection outlives at least `max - 1` newer ones.
//!
//! **Write timeout.** [`WriteTimeout`] fails a write (or flush) that made no progress for [`WRITE_TIMEOUT`],
//! which closes the connection: an answer nobody reads does not hold a slot, nor its buffers, for long.
//!
//! What it does not do: read or parse anything, or decide what a request may cost (the servers do; the webhook
//! also evicts the oldest connection still sending its body when bodies in flight reach their memory cap,
//! through [`Slots::evict_holder`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

/// A write or flush that makes no progress for this long fails, and its connection is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections of one server, oldest first.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    conns: Mutex<Vec<Arc<Conn>>>,
}

/// One connection's state, as the slots and the server's handlers see it.
#[derive(Debug, Default)]
pub struct Conn {
    /// Requests being handled now (their request read, their answer not yet returned).
    working: AtomicUsize,
    /// Bytes of a request body this connection holds (reserved by the webhook while the body arrives).
    holding: AtomicUsize,
    /// Fired once, to close the connection.
    evict: Notify,
    /// A write of this connection timed out.
    write_timed_out: AtomicBool,
}

/// How a new connection got its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// A slot was free.
    Free,
    /// The oldest connection that was not working was evicted for it.
    Evicted,
}

impl Slots {
    /// At most `max` connections.
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots { max: max.max(1), conns: Mutex::new(Vec::with_capacity(max)) })
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for a new connection, evicting the oldest connection that is not working when every slot is
    /// taken; `None` when all of them are working.
    pub fn admit(self: &Arc<Self>) -> Option<(Slot, Admitted)> {
        let mut conns = self.conns();
        let mut how = Admitted::Free;
        if conns.len() >= self.max {
            let oldest = conns.iter().position(|c| !c.is_working())?;
            conns.remove(oldest).evict.notify_one();
            how = Admitted::Evicted;
        }
        let conn = Arc::new(Conn::default());
        conns.push(conn.clone());
        Some((Slot { slots: self.clone(), conn }, how))
    }

    /// Evicts the oldest connection other than `me` that holds request-body bytes and is not working; the
    /// bytes it held, or `None` when there is none.
    pub fn evict_holder(&self, me: &Conn) -> Option<usize> {
        let mut conns = self.conns();
        let oldest = conns
            .iter()
            .position(|c| !std::ptr::eq(&**c, me) && !c.is_working() && c.holding.load(Ordering::Relaxed) > 0)?;
        let conn = conns.remove(oldest);
        conn.evict.notify_one();
        Some(conn.holding.load(Ordering::Relaxed))
    }

    /// The connections open now.
    pub fn len(&self) -> usize {
        self.conns().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    conn: Arc<Conn>,
}

impl Slot {
    /// The connection's state.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.conns().retain(|c| !Arc::ptr_eq(c, &self.conn));
    }
}

impl Conn {
    fn is_working(&self) -> bool {
        self.working.load(Ordering::Relaxed) > 0
    }

    /// Marks the connection as working until the guard is dropped: it cannot be evicted meanwhile.
    pub fn work(&self) -> Working<'_> {
        self.working.fetch_add(1, Ordering::Relaxed);
        Working(self)
    }

    /// Records that the connection holds `bytes` of a request body until the guard is dropped.
    pub fn hold(&self, bytes: usize) -> Holding<'_> {
        self.holding.store(bytes, Ordering::Relaxed);
        Holding(self)
    }

    /// Resolves when the connection was evicted.
    pub fn evicted(&self) -> impl Future<Output = ()> + '_ {
        self.evict.notified()
    }

    /// Whether a write of this connection timed out.
    pub fn write_timed_out(&self) -> bool {
        self.write_timed_out.load(Ordering::Relaxed)
    }
}

/// See [`Conn::work`].
#[derive(Debug)]
pub struct Working<'a>(&'a Conn);

impl Drop for Working<'_> {
    fn drop(&mut self) {
        self.0.working.fetch_sub(1, Ordering::Relaxed);
    }
}

/// See [`Conn::hold`].
#[derive(Debug)]
pub struct Holding<'a>(&'a Conn);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.holding.store(0, Ordering::Relaxed);
    }
}

/// `io` whose writes, flushes and shutdown fail with [`io::ErrorKind::TimedOut`] once they made no progress
/// for [`WRITE_TIMEOUT`] (recorded on the connection); reads pass through.
#[derive(Debug)]
pub struct WriteTimeout<IO> {
    io: IO,
    conn: Arc<Conn>,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> WriteTimeout<IO> {
    /// Wraps `io` of the connection `conn`.
    pub fn new(io: IO, conn: Arc<Conn>) -> Self {
        WriteTimeout { io, conn, stalled: None }
    }

    /// A write's outcome: progress resets the clock, a pending write starts it (or fails once it ran out).
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.conn.write_timed_out.store(true, Ordering::Relaxed);
            let message = format!("no write progress for {WRITE_TIMEOUT:?}");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteTimeout<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn at_the_limit_the_oldest_connection_not_working_gives_way() {
        let slots = Slots::new(3);
        let (a, _) = slots.admit().unwrap();
        let (b, _) = slots.admit().unwrap();
        let (c, how) = slots.admit().unwrap();
        assert_eq!((how, slots.len()), (Admitted::Free, 3));
        let working = a.conn().work();
        let (d, how) = slots.admit().unwrap();
        assert_eq!((how, slots.len()), (Admitted::Evicted, 3), "b, the oldest not working, made room");
        assert!(futures::FutureExt::now_or_never(b.conn().evicted()).is_some());
        assert!(futures::FutureExt::now_or_never(a.conn().evicted()).is_none());
        drop(b);
        assert_eq!(slots.len(), 3, "an evicted slot is not counted twice");
        let (c_work, d_work) = (c.conn().work(), d.conn().work());
        assert!(slots.admit().is_none(), "every connection working: the new one is refused");
        drop((working, c_work, d_work));
        drop(c);
        assert_eq!(slots.admit().unwrap().1, Admitted::Free);
    }

    #[test]
    fn only_connections_holding_a_body_give_way_to_a_body() {
        let slots = Slots::new(8);
        let (idle, _) = slots.admit().unwrap();
        let (holder, _) = slots.admit().unwrap();
        let (busy, _) = slots.admit().unwrap();
        let (me, _) = slots.admit().unwrap();
        let _h = holder.conn().hold(4096);
        let _b = busy.conn().hold(1024);
        let _w = busy.conn().work();
        let _m = me.conn().hold(10);
        assert_eq!(slots.evict_holder(me.conn()), Some(4096));
        assert!(futures::FutureExt::now_or_never(holder.conn().evicted()).is_some());
        assert_eq!(slots.evict_holder(me.conn()), None, "neither the idle, the working nor the asking one");
        assert!(futures::FutureExt::now_or_never(idle.conn().evicted()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_fails_after_the_write_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let conn = Arc::new(Conn::default());
        let mut io = WriteTimeout::new(server, conn.clone());
        io.write_all(&[0; 64]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = io.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!((err.kind(), started.elapsed()), (io::ErrorKind::TimedOut, WRITE_TIMEOUT));
        assert!(conn.write_timed_out());
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_never_timed_out() {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = tokio::io::duplex(16);
        let conn = Arc::new(Conn::default());
        let mut io = WriteTimeout::new(server, conn.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            let mut total = 0;
            while total < 1024 {
                tokio::time::sleep(WRITE_TIMEOUT / 2).await;
                total += client.read(&mut buf).await.unwrap();
            }
        });
        io.write_all(&[0; 1024]).await.unwrap();
        reader.await.unwrap();
        assert!(!conn.write_timed_out());
    }
}
