//! A TCP proxy in front of a server, whose connections a test can cut as a real network fails:
//! for a moment everything the server sends is dropped (it goes on sending, unaware, and goes
//! on receiving what clients send), then every connection closes. Clients reconnect through
//! it as to the server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    port: u16,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy on a free loopback port that forwards every connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let (conns, stop, stall) = (open.clone(), stopped.clone(), stalled.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                {
                    let mut conns = conns.lock().expect("proxy connections");
                    conns.extend(client.try_clone());
                    conns.extend(server.try_clone());
                }
                let stall = stall.clone();
                thread::spawn(move || pipe(client, s2, &AtomicBool::new(false)));
                thread::spawn(move || pipe(server, c2, &stall));
            }
        });
        Self {
            port,
            open,
            stopped,
            stalled,
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's address as a NATS URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops what the server sends on every connection through the proxy for `stall`, then
    /// closes them all. Returns how many connections were cut.
    pub fn cut_after(&self, stall: Duration) -> usize {
        self.stalled.store(true, Ordering::Release);
        thread::sleep(stall);
        let cut = self.cut();
        self.stalled.store(false, Ordering::Release);
        cut
    }

    /// Closes every connection through the proxy at once, both ways; bytes on their way are
    /// dropped. Returns how many connections were cut.
    pub fn cut(&self) -> usize {
        let mut conns = self.open.lock().expect("proxy connections");
        for conn in conns.iter() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let cut = conns.len() / 2;
        conns.clear();
        cut
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        self.cut();
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` into `to` until either side closes, then closes both; while `stalled`, what
/// is read is dropped.
fn pipe(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) if stalled.load(Ordering::Acquire) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
