//! The user-space half of a spliced server: accepts the connections the kernel already spliced
//! (the sockops program put them in the sockhash at the end of the handshake), holds them, and
//! closes each once its peer is gone and everything redirected to it is acknowledged. It never
//! reads from a connection: the bytes stay in the kernel.
//!
//! When to close is decided from the kernel's own counts, not from timing: the peer's FIN has
//! come (POLLRDHUP), the verdict program has redirected every byte TCP received before it
//! (`tk_sm_conns.bytes` = `tcpi_bytes_received` − 1 for the FIN), and TCP has had every one of
//! them acknowledged (`tcpi_bytes_acked`). A redirected message can wait in the psock's backlog
//! (a workqueue) for a while on a busy machine: a quiet period would close too early there.

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::Error;

/// A connection whose peer left with bytes still unacknowledged is closed after this anyway.
const LINGER: Duration = Duration::from_secs(10);
/// SO_COOKIE (asm-generic/socket.h): the socket's cookie, the key of `tk_sm_conns`.
const SO_COOKIE: libc::c_int = 57;

/// The accepting thread; stops (closing every connection) when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts accepting on `listener` (already listening).
    pub fn start(listener: TcpListener, conns: OwnedFd) -> Result<Server, Error> {
        listener.set_nonblocking(true).map_err(|e| Error::io("making the listener non-blocking", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("tk-accept".into())
            .spawn(move || serve(&listener, &conns, &flag))
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

struct Conn {
    stream: TcpStream,
    cookie: u64,
    /// The peer closed its side (POLLRDHUP) at this time.
    closing: Option<Instant>,
    shut: bool,
}

fn serve(listener: &TcpListener, map: &OwnedFd, stop: &AtomicBool) {
    let mut conns: Vec<Conn> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut fds = Vec::with_capacity(conns.len() + 1);
        fds.push(libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        for c in &conns {
            let events = if c.closing.is_some() { 0 } else { libc::POLLRDHUP };
            fds.push(libc::pollfd { fd: c.stream.as_raw_fd(), events, revents: 0 });
        }
        let timeout = if conns.iter().any(|c| c.closing.is_some()) { 5 } else { 100 };
        // SAFETY: fds is a valid array of fds.len() pollfd structs for the call's duration.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        while let Ok((stream, _)) = listener.accept() {
            kick(&stream);
            let cookie = cookie(&stream).unwrap_or(0);
            conns.push(Conn { stream, cookie, closing: None, shut: false });
        }
        let now = Instant::now();
        for (c, p) in conns.iter_mut().zip(&fds[1..]) {
            if c.closing.is_none() && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                c.closing = Some(now);
            }
        }
        conns.retain_mut(|c| keep(c, map, now));
    }
}

/// Whether to keep holding `c`: a closing connection is shut (FIN) once everything it
/// received was redirected and acknowledged, and dropped after that.
fn keep(c: &mut Conn, map: &OwnedFd, now: Instant) -> bool {
    let Some(since) = c.closing else { return true };
    if c.shut || now.duration_since(since) > LINGER {
        return false;
    }
    let (Some(redirected), Some((received, acked))) = (redirected(map, c.cookie), counts(&c.stream)) else {
        // Not (or no longer) in the map: nothing of it is spliced any more.
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        c.shut = true;
        return true;
    };
    // received counts the FIN's sequence number too.
    if redirected + 1 < received || acked < redirected {
        return true;
    }
    let _ = c.stream.shutdown(std::net::Shutdown::Write);
    c.shut = true;
    true
}

/// The bytes the verdict program redirected for the connection with this cookie.
fn redirected(map: &OwnedFd, cookie: u64) -> Option<u64> {
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

/// Has the psock read what arrived before accept(). The sockops program spliced the
/// connection at the end of the handshake, but the psock's reader (strparser, or the verdict's
/// read_skb) needs the socket's `struct socket`, which accept() attaches: bytes that came
/// earlier wait in the receive queue for a data-ready call that no new byte may bring.
/// Setting SO_RCVLOWAT makes TCP call it when data is queued (tcp_set_rcvlowat ->
/// tcp_data_ready), now with the socket attached.
fn kick(s: &TcpStream) {
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

fn cookie(s: &TcpStream) -> Option<u64> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into cookie; the fd is open.
    let rc =
        unsafe { libc::getsockopt(s.as_raw_fd(), libc::SOL_SOCKET, SO_COOKIE, (&raw mut cookie).cast(), &mut len) };
    (rc == 0).then_some(cookie)
}
