//! The user-space half of a spliced server (echo and proxy): accepts connections, holds them,
//! and closes them once their peers are gone and everything redirected is acknowledged. It
//! never reads from a spliced connection: the bytes stay in the kernel.
//!
//! A [`Pair`] is what is held: echo holds one connection (its bytes go back out of itself), the
//! proxy two (the client's and the one to the upstream; each one's bytes go out of the other).
//! Each connection's incoming direction ends on its own: when to pass its FIN on is decided
//! from the kernel's own counts, not from timing: the FIN has come (POLLRDHUP), the verdict
//! program has redirected every byte TCP received before it (`tk_sm_conns.bytes` =
//! `tcpi_bytes_received` − 1 for the FIN), and the connection they went out of has had every one
//! of them acknowledged (`tcpi_bytes_acked`). A redirected message can wait in the psock's
//! backlog (a workqueue) for a while on a busy machine: a quiet period would close too early
//! there. Only then is that connection shut for writing (its FIN goes after the last byte);
//! once every direction of a pair has ended, the pair is closed.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::Error;

/// A connection whose peer left with bytes still unacknowledged is closed after this anyway.
const LINGER: Duration = Duration::from_secs(10);
/// SO_COOKIE (asm-generic/socket.h): the socket's cookie, the key of `tk_sm_conns`.
const SO_COOKIE: libc::c_int = 57;

/// What a server does beside holding its pairs (echo: nothing; proxy: connecting upstream).
pub trait Service: Send + 'static {
    /// A connection was accepted: the pair to hold now, if it is ready.
    fn accepted(&mut self, conn: TcpStream) -> Option<Pair>;
    /// The descriptors the service waits on (connects under way), added to the poll set.
    fn poll_fds(&self, fds: &mut Vec<libc::pollfd>) {
        let _ = fds;
    }
    /// After a poll, with the revents of the descriptors `poll_fds` added: pairs now ready.
    fn progress(&mut self, revents: &[libc::pollfd], now: Instant, ready: &mut Vec<Pair>) {
        let _ = (revents, now, ready);
    }
    /// Whether the service has work that needs a short poll timeout (a deadline to check).
    fn busy(&self) -> bool {
        false
    }
    /// A pair was closed (`reset`: because one of its connections failed).
    fn closed(&mut self, pair: &Pair, map: &OwnedFd, reset: bool) {
        let _ = (pair, map, reset);
    }
}

/// The accepting thread; stops (closing every connection) when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts accepting on `listener` (already listening).
    pub fn start(listener: TcpListener, conns: OwnedFd, service: impl Service) -> Result<Server, Error> {
        listener.set_nonblocking(true).map_err(|e| Error::io("making the listener non-blocking", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("tk-accept".into())
            .spawn(move || serve(&listener, &conns, service, &flag))
            .map_err(|e| Error::io("starting the accepting thread", e))?;
        Ok(Server { stop, thread: Some(thread) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection of a pair and the direction of bytes it receives.
pub struct Side {
    pub stream: TcpStream,
    pub cookie: u64,
    /// `tcpi_bytes_acked` when spliced: an active open's count starts at 1 (its SYN).
    pub acked_base: u64,
    /// The bytes it receives go through a pipe with splice(2) instead of the verdict program
    /// (the proxy's fallback for a connection the sockhash refused).
    pub relay: Option<Relay>,
    /// Its peer's FIN came (POLLRDHUP) at this time.
    eof: Option<Instant>,
    /// Everything it received went out, followed by a FIN.
    passed: bool,
    /// poll reported an error (a reset): the pair ends.
    failed: bool,
}

impl Side {
    pub fn new(stream: TcpStream, relay: Option<Relay>) -> Side {
        let cookie = cookie(&stream).unwrap_or(0);
        let acked_base = counts(&stream).map_or(0, |(_, a)| a);
        Side { stream, cookie, acked_base, relay, eof: None, passed: false, failed: false }
    }

    /// Ends its pair with a reset at the next turn (a relay that could not be made).
    pub fn fail(&mut self) {
        self.failed = true;
    }
}

/// Connections held together: one (echo) or two (proxy: client, upstream).
pub struct Pair {
    pub sides: Vec<Side>,
    pub opened_ns: u64,
    /// The service's own data (the proxy's open event, reused for the closed one).
    pub tag: Box<dyn std::any::Any + Send>,
}

impl Pair {
    /// The side whose connection the bytes received on side `i` go out of.
    fn dst(&self, i: usize) -> usize {
        if self.sides.len() == 1 { 0 } else { 1 - i }
    }

    /// Bytes received on side `i` and sent on: by the verdict program (its `tk_sm_conns`
    /// count) or through its relay.
    pub fn moved(&self, i: usize, map: &OwnedFd) -> u64 {
        match &self.sides[i].relay {
            Some(r) => r.moved,
            None => redirected(map, self.sides[i].cookie).unwrap_or(0),
        }
    }
}

fn serve(listener: &TcpListener, map: &OwnedFd, mut service: impl Service, stop: &AtomicBool) {
    let mut pairs: Vec<Pair> = Vec::new();
    let mut fds = Vec::new();
    let mut ready = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        fds.clear();
        fds.push(libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        let mut short = service.busy();
        for p in &pairs {
            for s in &p.sides {
                let mut events = if s.eof.is_some() { 0 } else { libc::POLLRDHUP };
                if s.relay.is_some() && !s.passed {
                    events |= libc::POLLIN;
                    short = true;
                }
                short |= s.eof.is_some() && !s.passed;
                fds.push(libc::pollfd { fd: s.stream.as_raw_fd(), events, revents: 0 });
            }
        }
        let held = fds.len();
        service.poll_fds(&mut fds);
        // SAFETY: fds is a valid array of fds.len() pollfd structs for the call's duration.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, if short { 5 } else { 100 }) };
        let now = Instant::now();
        service.progress(&fds[held..], now, &mut ready);
        for (s, p) in pairs.iter_mut().flat_map(|p| p.sides.iter_mut()).zip(&fds[1..held]) {
            s.failed |= p.revents & libc::POLLERR != 0;
            if s.eof.is_none() && p.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0 {
                s.eof = Some(now);
            }
        }
        pairs.retain_mut(|p| {
            let failed = p.sides.iter().any(|s| s.failed);
            let keep = !failed && advance(p, map, now);
            if !keep {
                if failed {
                    for s in &p.sides {
                        reset(&s.stream);
                    }
                }
                service.closed(p, map, failed);
            }
            keep
        });
        pairs.append(&mut ready);
        while let Ok((stream, _)) = listener.accept() {
            if let Some(p) = service.accepted(stream) {
                pairs.push(p);
            }
        }
    }
}

/// Moves the pair along (relays, FINs passed on); false once it is done (close it).
fn advance(p: &mut Pair, map: &OwnedFd, now: Instant) -> bool {
    for i in 0..p.sides.len() {
        let d = p.dst(i);
        if p.sides[i].passed {
            continue;
        }
        if let Some(since) = p.sides[i].eof
            && now.duration_since(since) > LINGER
        {
            return false;
        }
        let done = if p.sides[i].relay.is_some() {
            let out = p.sides[d].stream.as_raw_fd();
            let s = &mut p.sides[i];
            let Some(r) = s.relay.as_mut() else { continue };
            match r.pump(s.stream.as_raw_fd(), out) {
                Ok(eof) => eof,
                Err(_) => {
                    for s in &p.sides {
                        reset(&s.stream);
                    }
                    return false;
                }
            }
        } else if p.sides[i].eof.is_some() {
            match (redirected(map, p.sides[i].cookie), counts(&p.sides[i].stream), counts(&p.sides[d].stream)) {
                // received counts the FIN's sequence number too
                (Some(moved), Some((received, _)), Some((_, acked))) => {
                    moved + 1 >= received && acked.saturating_sub(p.sides[d].acked_base) >= moved
                }
                // Not (or no longer) in the map: nothing of it is spliced any more.
                _ => true,
            }
        } else {
            false
        };
        if done {
            let _ = p.sides[d].stream.shutdown(Shutdown::Write);
            p.sides[i].passed = true;
        }
    }
    !p.sides.iter().all(|s| s.passed)
}

/// Ends a connection with a reset (SO_LINGER 0 makes its close send RST): the other end of a
/// failed pair must not take the end for a clean one.
pub fn reset(s: &TcpStream) {
    let lg = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads one struct linger; the fd is open.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const lg).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// A pipe that bytes received on one connection go through to the other with splice(2): they
/// stay in the kernel (page references move, nothing is copied to user space).
pub struct Relay {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet sent on.
    held: usize,
    /// Bytes sent on.
    pub moved: u64,
    /// The source's end of stream was read.
    eof: bool,
}

impl Relay {
    pub fn new() -> std::io::Result<Relay> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two fds into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Relay { read, write, held: 0, moved: 0, eof: false })
    }

    /// Moves what can be moved now from `from` to `to`; Ok(true) once all of `from`'s bytes
    /// have been sent on and its end of stream was read.
    fn pump(&mut self, from: libc::c_int, to: libc::c_int) -> std::io::Result<bool> {
        const CHUNK: usize = 1 << 16;
        let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
        loop {
            let mut progress = false;
            if !self.eof {
                // SAFETY: both fds are open; null offsets: sockets and pipes have none.
                let n = unsafe {
                    libc::splice(from, std::ptr::null_mut(), self.write.as_raw_fd(), std::ptr::null_mut(), CHUNK, flags)
                };
                match n {
                    0 => self.eof = true,
                    n if n > 0 => {
                        self.held += n as usize;
                        progress = true;
                    }
                    _ => {
                        let e = std::io::Error::last_os_error();
                        if e.kind() != std::io::ErrorKind::WouldBlock {
                            return Err(e);
                        }
                    }
                }
            }
            if self.held > 0 {
                // SAFETY: as above.
                let n = unsafe {
                    libc::splice(
                        self.read.as_raw_fd(),
                        std::ptr::null_mut(),
                        to,
                        std::ptr::null_mut(),
                        self.held,
                        flags,
                    )
                };
                if n > 0 {
                    self.held -= n as usize;
                    self.moved += n as u64;
                    progress = true;
                } else {
                    let e = std::io::Error::last_os_error();
                    if n == 0 || e.kind() != std::io::ErrorKind::WouldBlock {
                        return Err(e);
                    }
                }
            }
            if !progress {
                return Ok(self.eof && self.held == 0);
            }
        }
    }
}

/// The bytes the verdict program redirected for the connection with this cookie.
pub fn redirected(map: &OwnedFd, cookie: u64) -> Option<u64> {
    let mut value = [0u64; 3];
    // SAFETY: the key is a u64 and the value buffer holds a struct tk_sm_conn (three u64s).
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_lookup_elem(
            map.as_raw_fd(),
            (&raw const cookie).cast(),
            value.as_mut_ptr().cast(),
        )
    };
    (rc == 0).then_some(value[1])
}

/// (tcpi_bytes_received, tcpi_bytes_acked) of the connection.
fn counts(s: &TcpStream) -> Option<(u64, u64)> {
    // SAFETY: tcp_info is plain data; all zero is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into info; the fd is open.
    let rc =
        unsafe { libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len) };
    (rc == 0).then_some((info.tcpi_bytes_received, info.tcpi_bytes_acked))
}

/// Has the psock read what arrived before the connection got its verdict program. Echo: the
/// sockops program spliced the connection at the end of the handshake, but the psock's reader
/// (strparser, or the verdict's read_skb) needs the socket's `struct socket`, which accept()
/// attaches; proxy: the bytes both ends sent before the pair was spliced. Either way the bytes
/// wait in the receive queue for a data-ready call that no new byte may bring. Setting
/// SO_RCVLOWAT makes TCP call it when data is queued (tcp_set_rcvlowat -> tcp_data_ready), now
/// with the socket attached.
pub fn kick(s: &TcpStream) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one int; the fd is open.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// SO_SNDBUFFORCE (asm-generic/socket.h): SO_SNDBUF past `net.core.wmem_max` (CAP_NET_ADMIN).
const SO_SNDBUFFORCE: libc::c_int = 32;
/// The send buffer of every spliced connection (the kernel doubles it): a redirected message
/// that does not fit waits in the psock's backlog and is retried from a workqueue (the fix of
/// the Cloudflare post). Set from user space: the sockops program's bpf_setsockopt(SO_SNDBUF)
/// is capped at `net.core.wmem_max`, as setsockopt(SO_SNDBUF) is.
const SNDBUF: libc::c_int = 8 << 20;

/// Gives the connection its large send buffer.
pub fn large_send_buffer(s: &impl AsRawFd) {
    let size = SNDBUF;
    // SAFETY: setsockopt reads one int; the fd is open.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_SNDBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

pub fn cookie(s: &impl AsRawFd) -> Option<u64> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into cookie; the fd is open.
    let rc =
        unsafe { libc::getsockopt(s.as_raw_fd(), libc::SOL_SOCKET, SO_COOKIE, (&raw mut cookie).cast(), &mut len) };
    (rc == 0).then_some(cookie)
}

/// Echo: each accepted connection is already spliced (by the sockops program); it only needs
/// its full send buffer and its kick.
pub struct Echo;

impl Service for Echo {
    fn accepted(&mut self, conn: TcpStream) -> Option<Pair> {
        large_send_buffer(&conn);
        kick(&conn);
        let mut side = Side::new(conn, None);
        // Whatever it sent (if anything) is the echo of what it received.
        side.acked_base = 0;
        Some(Pair { sides: vec![side], opened_ns: 0, tag: Box::new(()) })
    }
}
