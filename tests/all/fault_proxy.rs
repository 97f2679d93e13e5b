//! A TCP proxy on loopback that can stop forwarding without closing
//! anything: what a client sees when the server is SIGSTOPped, hangs, or the
//! network silently drops its packets. Connections stay open; bytes wait in
//! the kernel's buffers until the proxy thaws.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a frozen or idle pump looks at the flags.
const POLL: Duration = Duration::from_millis(20);

pub struct FaultProxy {
    addr: SocketAddr,
    flags: Arc<Flags>,
}

struct Flags {
    frozen: AtomicBool,
    stopped: AtomicBool,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let flags = Arc::new(Flags { frozen: AtomicBool::new(false), stopped: AtomicBool::new(false) });
        let f = flags.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if f.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to, f) = (from.try_clone().unwrap(), to.try_clone().unwrap(), f.clone());
                    std::thread::spawn(move || pump(from, to, &f));
                }
            }
        });
        FaultProxy { addr, flags }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding in both directions; nothing is closed. Returns once
    /// every pump has seen it (a pump inside a read when the flag is set
    /// would still forward what that read gets).
    pub fn freeze(&self) {
        self.flags.frozen.store(true, Ordering::SeqCst);
        std::thread::sleep(POLL * 5);
    }

    /// Forwards again, including what waited meanwhile.
    pub fn thaw(&self) {
        self.flags.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.flags.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` while not frozen, until either side closes or the
/// proxy stops.
fn pump(mut from: TcpStream, mut to: TcpStream, flags: &Flags) {
    from.set_read_timeout(Some(POLL)).unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !flags.stopped.load(Ordering::SeqCst) {
        if flags.frozen.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
