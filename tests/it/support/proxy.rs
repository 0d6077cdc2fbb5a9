//! A TCP proxy on 127.0.0.1 in front of a real server, for breaking the network between trialtail and a peer
//! in the ways a cluster does: the peer is down (every connection is closed at once), or a reply is lost after
//! the request was carried out (the connection's next request is forwarded, its answers are dropped and the
//! connection is cut half a second later). Plain threads; every connection ends when either side closes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

const UP: u8 = 0;
const DOWN: u8 = 1;

/// The proxy; it stops accepting when dropped.
pub struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    lose_next: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to `target`, down (refusing service) until [`Proxy::up`].
    pub fn start_down(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let target: SocketAddr = target.parse().expect("a socket address");
        let mode = Arc::new(AtomicU8::new(DOWN));
        let lose_next = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, l, s) = (mode.clone(), lose_next.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if m.load(Ordering::SeqCst) == DOWN {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else { continue };
                connect(client, server, l.clone());
            }
        });
        Proxy { addr, mode, lose_next, stop }
    }

    /// The address to give the client.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// From now on connections are forwarded.
    pub fn up(&self) {
        self.mode.store(UP, Ordering::SeqCst);
    }

    /// The next request on any connection is carried out but its answer never arrives.
    pub fn lose_next_reply(&self) {
        self.lose_next.store(true, Ordering::SeqCst);
    }

    /// Whether a reply is still to be lost.
    pub fn reply_still_to_lose(&self) -> bool {
        self.lose_next.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn connect(client: TcpStream, server: TcpStream, lose_next: Arc<AtomicBool>) {
    let doomed = Arc::new(AtomicBool::new(false));
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (d, sockets) = (doomed.clone(), (client.try_clone().unwrap(), server.try_clone().unwrap()));
    // Client to server: the request that meets `lose_next` dooms the connection.
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match c_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // HTTP/2's connection preface and settings go first; a request carries more than them.
            if n > 100 && lose_next.swap(false, Ordering::SeqCst) {
                d.store(true, Ordering::SeqCst);
                let _ = s_out.write_all(&buf[..n]);
                std::thread::sleep(Duration::from_millis(500));
                break;
            }
            if s_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = sockets.0.shutdown(Shutdown::Both);
        let _ = sockets.1.shutdown(Shutdown::Both);
    });
    // Server to client: nothing gets through once the connection is doomed.
    let (mut s_in, mut c_out) = (server, client);
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match s_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if doomed.load(Ordering::SeqCst) {
                continue;
            }
            if c_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c_out.shutdown(Shutdown::Both);
        let _ = s_in.shutdown(Shutdown::Both);
    });
}
