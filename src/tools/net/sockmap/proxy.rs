//! `tracekit sockmap proxy LISTEN UPSTREAM`: a TCP proxy whose bytes stay in the kernel. For
//! each connection accepted on LISTEN (the client's, A) tracekit connects a new one to UPSTREAM
//! (B); the stream verdict program redirects A's bytes out of B and B's out of A. User space
//! only accepts, connects and closes.
//!
//! No byte may be lost or reordered, also those sent before the pair exists (the client's
//! request right after its handshake, an upstream's banner right after its own). So neither
//! connection gets the verdict program before both exist: until then their bytes wait in their
//! TCP receive queues. Then, in this order:
//! 1. both go into `tk_sm_peers`, the program-less sockhash the verdict redirects into:
//!    entering it creates each socket's psock (what a redirect target needs) without changing
//!    how it receives (sock_map_link installs no reader without programs);
//! 2. both go into `tk_sm_socks`, whose parser and verdict sock_map_link installs on the
//!    existing psock (it refuses only a psock that already has programs, 5.10 to 6.18): from
//!    now on a byte arriving on either is redirected to the other, which is already a target.
//!    Inserting A and B straight into one map with the programs would leave a window in which
//!    A's bytes are redirected to a B not in the map yet: bpf_sk_redirect_hash says SK_DROP and
//!    the bytes are gone;
//! 3. both are kicked (SO_RCVLOWAT, see [`server::kick`]): the psock reads what waited in the
//!    receive queue, in order, before anything that comes later.
//!
//! The kernel takes a TCP socket into a sockhash from user space only while it is ESTABLISHED
//! (sock_map_sk_state_allowed): a client that sent its request and its FIN before the upstream
//! connection was up is in CLOSE_WAIT and refused. All its bytes are then already in its receive
//! queue; they go to the upstream through a pipe with splice(2) (in the kernel too, not copied
//! to user space). The other direction goes through a pipe as well: a connection that cannot
//! enter `tk_sm_peers` is no redirect target. The same holds the other way round for an
//! upstream that sends and closes at once. A direction is spliced by the verdict program only
//! when its source entered `tk_sm_socks` and its destination `tk_sm_peers`.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, connect, socket};

use super::server::{self, Pair, Relay, Service, Side};
use crate::runtime::Printer;
use crate::runtime::cli::output::OutputArgs;
use crate::runtime::fastfmt::{self, Endpoint};
use crate::runtime::output::{EventHeader, HookHeader, Sink, sock_addr};

const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Where to listen: ADDR:PORT (port 0: any free port; IPv6 as [ADDR]:PORT)
    #[arg(value_name = "LISTEN", value_parser = super::parse_listen)]
    pub listen: SocketAddr,

    /// Where each client's connection goes: ADDR:PORT
    #[arg(value_name = "UPSTREAM", value_parser = parse_upstream)]
    pub upstream: SocketAddr,

    /// Give up connecting to UPSTREAM after SECS (the client gets a reset)
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub out: OutputArgs,
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s.parse().map_err(|_| format!("`{s}` is not ADDR:PORT (e.g. 127.0.0.1:8080, [::1]:8080)"))?;
    if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
        return Err(format!("`{s}` is not an address to connect to: give a host address and a port other than 0"));
    }
    Ok(a)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("`{s}` is not a number of seconds between 0 and 3600")),
    }
}

pub const OPEN: u8 = 0;
pub const CLOSED: u8 = 1;
pub const UPSTREAM_FAILED: u8 = 2;
/// `flags` bits: which direction went through a pipe instead of the verdict program; a reset.
const PIPE_UP: u8 = 1;
const PIPE_DOWN: u8 = 2;
const RESET: u8 = 4;

/// A proxy event, made in user space (only it sees a pair form, fail or end); printed by the
/// runtime like the kernel's events ([`Printer::user_event`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyEvent {
    ts_ns: u64,
    /// Client to upstream, upstream to client (closed).
    up: u64,
    down: u64,
    duration_ns: u64,
    /// The client connection's socket cookie.
    cookie: u64,
    cpu: u32,
    errno: i32,
    family: u16,
    lport: u16,
    rport: u16,
    ufamily: u16,
    ulport: u16,
    kind: u8,
    flags: u8,
    _pad: [u8; 4],
    laddr: [u8; 16],
    raddr: [u8; 16],
    uladdr: [u8; 16],
}
// SAFETY: integers and arrays of them, no implicit padding: every byte pattern is a value.
unsafe impl plain::Plain for ProxyEvent {}
const _: () = assert!(size_of::<ProxyEvent>() == 112);

fn ends(a: SocketAddr) -> (u16, [u8; 16], u16) {
    let mut raw = [0u8; 16];
    match a {
        SocketAddr::V4(v) => {
            raw[..4].copy_from_slice(&v.ip().octets());
            (AF_INET, raw, v.port())
        }
        SocketAddr::V6(v) => (AF_INET6, v.ip().octets(), v.port()),
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns, which the output converts.
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn cpu() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::sched_getcpu() }.max(0) as u32
}

/// A connection to UPSTREAM under way for an accepted client.
struct Pending {
    client: TcpStream,
    up: TcpStream,
    since: Instant,
}

/// The proxy's side of the server: connects each client to UPSTREAM and splices the pair.
pub struct Proxy {
    upstream: SocketAddr,
    timeout: Duration,
    socks: OwnedFd,
    peers: OwnedFd,
    conns: OwnedFd,
    events: Sender<ProxyEvent>,
    pending: Vec<Pending>,
}

impl Proxy {
    pub fn new(
        upstream: SocketAddr,
        timeout: Duration,
        (socks, peers, conns): (OwnedFd, OwnedFd, OwnedFd),
        events: Sender<ProxyEvent>,
    ) -> Proxy {
        Proxy { upstream, timeout, socks, peers, conns, events, pending: Vec::new() }
    }

    /// A non-blocking connect to UPSTREAM (its large send buffer set first).
    fn connect(&self) -> io::Result<(TcpStream, bool)> {
        let family = if self.upstream.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
        server::large_send_buffer(&fd);
        let done = match connect(fd.as_raw_fd(), &SockaddrStorage::from(self.upstream)) {
            Ok(()) => true,
            Err(nix::errno::Errno::EINPROGRESS) => false,
            Err(e) => return Err(e.into()),
        };
        Ok((TcpStream::from(fd), done))
    }

    fn failed(&self, client: TcpStream, errno: i32) {
        let mut ev = self.event(UPSTREAM_FAILED, &client, None);
        ev.errno = errno;
        server::reset(&client);
        let _ = self.events.send(ev);
    }

    fn event(&self, kind: u8, client: &TcpStream, up: Option<&TcpStream>) -> ProxyEvent {
        let mut ev = ProxyEvent { ts_ns: now_ns(), cpu: cpu(), kind, ..Default::default() };
        ev.cookie = server::cookie(client).unwrap_or(0);
        if let Ok(a) = client.local_addr() {
            (ev.family, ev.laddr, ev.lport) = ends(a);
        }
        if let Ok(a) = client.peer_addr() {
            (_, ev.raddr, ev.rport) = ends(a);
        }
        if let Some(Ok(a)) = up.map(TcpStream::local_addr) {
            (ev.ufamily, ev.uladdr, ev.ulport) = ends(a);
        }
        ev
    }

    fn update(map: &OwnedFd, cookie: u64, fd: &impl AsRawFd, value: Option<&[u64; 3]>) -> bool {
        let raw = fd.as_raw_fd() as u64;
        let v: *const libc::c_void = match value {
            Some(c) => c.as_ptr().cast(),
            None => (&raw const raw).cast(),
        };
        // SAFETY: the key is a u64; the value is a struct tk_sm_conn (three u64s) for
        // tk_sm_conns, a u64 socket fd for the sockhashes (value_size 8).
        unsafe {
            libbpf_rs::libbpf_sys::bpf_map_update_elem(
                map.as_raw_fd(),
                (&raw const cookie).cast(),
                v,
                libbpf_rs::libbpf_sys::BPF_ANY.into(),
            ) == 0
        }
    }

    fn delete(map: &OwnedFd, cookie: u64) {
        // SAFETY: the key is a u64.
        unsafe { libbpf_rs::libbpf_sys::bpf_map_delete_elem(map.as_raw_fd(), (&raw const cookie).cast()) };
    }

    /// Splices the pair (module comment: the order matters) and announces it.
    fn splice(&self, client: TcpStream, up: TcpStream) -> Pair {
        server::large_send_buffer(&client);
        // Relayed directions splice(2) with the sockets' own blocking mode: never block here.
        let _ = client.set_nonblocking(true);
        let mut ev = self.event(OPEN, &client, Some(&up));
        let opened_ns = ev.ts_ns;
        // Before any byte can be redirected: the upstream connection's count of acknowledged
        // bytes starts at 1 (its SYN).
        let (mut a, mut b) = (Side::new(client, None), Side::new(up, None));
        // Without its tk_sm_conns entry the verdict would pass a connection's bytes to its own
        // psock instead of redirecting them (a full map): such a pair is relayed.
        let tracked = Self::update(&self.conns, a.cookie, &a.stream, Some(&[b.cookie, 0, opened_ns]))
            & Self::update(&self.conns, b.cookie, &b.stream, Some(&[a.cookie, 0, opened_ns]));
        let a_target = tracked && Self::update(&self.peers, a.cookie, &a.stream, None);
        let b_target = tracked && Self::update(&self.peers, b.cookie, &b.stream, None);
        let a_spliced = b_target && Self::update(&self.socks, a.cookie, &a.stream, None);
        let b_spliced = a_target && Self::update(&self.socks, b.cookie, &b.stream, None);
        for (side, spliced, bit) in [(&mut a, a_spliced, PIPE_UP), (&mut b, b_spliced, PIPE_DOWN)] {
            if spliced {
                server::kick(&side.stream);
                continue;
            }
            ev.flags |= bit;
            match Relay::new() {
                Ok(r) => side.relay = Some(r),
                // No pipe (out of descriptors): nothing would carry these bytes.
                Err(_) => side.fail(),
            }
        }
        let _ = self.events.send(ev);
        Pair { sides: vec![a, b], opened_ns, tag: Box::new(ev) }
    }
}

impl Service for Proxy {
    fn accepted(&mut self, client: TcpStream) -> Option<Pair> {
        match self.connect() {
            Ok((up, true)) => Some(self.splice(client, up)),
            Ok((up, false)) => {
                self.pending.push(Pending { client, up, since: Instant::now() });
                None
            }
            Err(e) => {
                self.failed(client, e.raw_os_error().unwrap_or(0));
                None
            }
        }
    }

    fn poll_fds(&self, fds: &mut Vec<libc::pollfd>) {
        for p in &self.pending {
            fds.push(libc::pollfd { fd: p.up.as_raw_fd(), events: libc::POLLOUT, revents: 0 });
        }
    }

    fn progress(&mut self, revents: &[libc::pollfd], now: Instant, ready: &mut Vec<Pair>) {
        let pending = std::mem::take(&mut self.pending);
        for (i, p) in pending.into_iter().enumerate() {
            let r = revents.get(i).map_or(0, |f| f.revents);
            if r == 0 {
                if now.duration_since(p.since) > self.timeout {
                    self.failed(p.client, libc::ETIMEDOUT);
                } else {
                    self.pending.push(p);
                }
                continue;
            }
            match p.up.take_error() {
                Ok(None) if r & (libc::POLLERR | libc::POLLHUP) == 0 => ready.push(self.splice(p.client, p.up)),
                Ok(Some(e)) | Err(e) => self.failed(p.client, e.raw_os_error().unwrap_or(0)),
                Ok(None) => self.failed(p.client, libc::ECONNRESET),
            }
        }
    }

    fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    fn closed(&mut self, pair: &Pair, map: &OwnedFd, reset: bool) {
        let Some(open) = pair.tag.downcast_ref::<ProxyEvent>() else { return };
        let mut ev = *open;
        ev.kind = CLOSED;
        ev.ts_ns = now_ns();
        ev.cpu = cpu();
        ev.duration_ns = ev.ts_ns.saturating_sub(pair.opened_ns);
        ev.up = pair.moved(0, map);
        ev.down = pair.moved(1, map);
        if reset {
            ev.flags |= RESET;
        }
        for s in &pair.sides {
            Self::delete(&self.conns, s.cookie);
        }
        let _ = self.events.send(ev);
    }
}

/// Prints the proxy's events: one `open` and one `closed` per pair, `upstream_failed`.
pub struct ProxyPrinter {
    events: Receiver<ProxyEvent>,
    connections: u64,
    up: u64,
    down: u64,
    failed: u64,
}

impl ProxyPrinter {
    pub fn new(events: Receiver<ProxyEvent>) -> Self {
        ProxyPrinter { events, connections: 0, up: 0, down: 0, failed: 0 }
    }
}

fn kind_name(k: u8) -> &'static str {
    match k {
        OPEN => "open",
        CLOSED => "closed",
        _ => "upstream_failed",
    }
}

/// The errno's symbolic name (`ECONNREFUSED`), without allocating.
struct ErrnoName(i32);

impl std::fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", nix::errno::Errno::from_raw(self.0))
    }
}

impl Printer for ProxyPrinter {
    type Event = ProxyEvent;
    const COLUMNS: &'static str = "CLIENT               UPSTREAM FROM        EVENT    UP BYTES DOWN BYTES       MS";

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        EventHeader::Hook(HookHeader { ts_ns: ev.ts_ns, cpu: ev.cpu, pid: 0, comm: [0; 16] })
    }

    fn user_event(&mut self) -> Option<Self::Event> {
        self.events.try_recv().ok()
    }

    fn observe(&mut self, ev: &Self::Event) {
        match ev.kind {
            CLOSED => {
                self.connections += 1;
                self.up += ev.up;
                self.down += ev.down;
            }
            UPSTREAM_FAILED => self.failed += 1,
            _ => {}
        }
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let client = Endpoint::new(sock_addr(ev.family, &ev.raddr), ev.rport);
        let w = out.w();
        fastfmt::col(w, client.as_str().as_bytes(), 20)?;
        if ev.kind == UPSTREAM_FAILED {
            fastfmt::col(w, b"-", 20)?;
            fastfmt::col(w, kind_name(ev.kind).as_bytes(), 16)?;
            return write!(w, "{}", ErrnoName(ev.errno));
        }
        let from = Endpoint::new(sock_addr(ev.ufamily, &ev.uladdr), ev.ulport);
        fastfmt::col(w, from.as_str().as_bytes(), 20)?;
        let name: &[u8] = if ev.flags & RESET != 0 { b"reset" } else { kind_name(ev.kind).as_bytes() };
        fastfmt::col(w, name, 6)?;
        if ev.kind == CLOSED {
            write!(w, "{:>10} {:>10} ", ev.up, ev.down)?;
            fastfmt::ms_col(w, ev.duration_ns, 8)?;
        }
        if ev.flags & (PIPE_UP | PIPE_DOWN) != 0 {
            w.write_all(b" (pipe)")?;
        }
        Ok(())
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        out.field_str("event", kind_name(ev.kind))?;
        out.field_sock_ends(ev.family, (&ev.laddr, ev.lport), (&ev.raddr, ev.rport))?;
        out.field_u64("cookie", ev.cookie)?;
        if ev.kind == UPSTREAM_FAILED {
            out.field_i128("errno", ev.errno.into())?;
            return out.field_display("error", ErrnoName(ev.errno));
        }
        out.field_display("upstream_laddr", sock_addr(ev.ufamily, &ev.uladdr))?;
        out.field_u64("upstream_lport", ev.ulport.into())?;
        out.field_raw("pipe_up", if ev.flags & PIPE_UP != 0 { "true" } else { "false" })?;
        out.field_raw("pipe_down", if ev.flags & PIPE_DOWN != 0 { "true" } else { "false" })?;
        if ev.kind == CLOSED {
            out.field_u64("bytes_up", ev.up)?;
            out.field_u64("bytes_down", ev.down)?;
            out.field_f64("ms", ev.duration_ns as f64 / 1e6, 3)?;
            out.field_raw("reset", if ev.flags & RESET != 0 { "true" } else { "false" })?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        if out.json {
            out.obj_start("sockmap_counts")?;
            out.field_u64("connections", self.connections)?;
            out.field_u64("bytes", self.up + self.down)?;
            out.field_u64("bytes_up", self.up)?;
            out.field_u64("bytes_down", self.down)?;
            out.field_u64("upstream_failed", self.failed)?;
            return out.obj_end();
        }
        writeln!(
            out.w(),
            "{} connections closed, {} bytes to the upstream and {} back, spliced in the kernel; {} upstream connections failed",
            self.connections,
            self.up,
            self.down,
            self.failed
        )
    }
}
