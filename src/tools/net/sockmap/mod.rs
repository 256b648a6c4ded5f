//! `tracekit sockmap`: TCP served in the kernel through a sockhash and an sk_skb verdict program
//! (src/bpf/net/sockmap.bpf.c). `echo` sends every byte back from softirq; `proxy` sends each
//! client's bytes to a connection of its own to the upstream and back; user space only accepts,
//! connects and closes. `bypass` (bypass.rs, its own object) lets a cgroup's local connections skip
//! the loopback stack with an sk_msg program.

mod bypass;
mod proxy;
mod server;

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};

use clap::{Args, Subcommand};
use libbpf_rs::{ProgramType, libbpf_sys};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, getsockname, listen, setsockopt, socket, sockopt,
};

use crate::error::Error;
use crate::runtime::attach::cgroup::{cgroup2_root, own_cgroup};
use crate::runtime::attach::{attach_cgroup, attach_sockmap};
use crate::runtime::cli::output::OutputArgs;
use crate::runtime::fastfmt::{self, Endpoint};
use crate::runtime::output::{EventHeader, HookHeader, Sink, sock_addr};
use crate::runtime::{Printer, Runtime};

crate::packet_skel!("sockmap", OpenSockmapSkel, SockmapSkel);
// SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
unsafe impl plain::Plain for skel::types::tk_sm_event {}
use skel::{SockmapSkel, SockmapSkelBuilder, types};

/// The layout is shared with sockmap.h: a drift must fail the build, not decode garbage.
const _: () = assert!(size_of::<types::tk_sm_event>() == 80);

const OPEN: u8 = 0;
const CLOSED: u8 = 1;

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit sockmap echo 127.0.0.1:7000     # an echo server whose bytes stay in the kernel\n    \
    tracekit sockmap echo '[::1]:0' --json   # any free port (printed), events as NDJSON\n    \
    tracekit sockmap proxy 127.0.0.1:8080 127.0.0.1:80   # a TCP proxy spliced in the kernel\n    \
    tracekit sockmap bypass -- ./app         # app's local TCP skips the loopback stack")]
pub struct SockmapArgs {
    #[command(subcommand)]
    pub command: SockmapCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SockmapCommand {
    /// An echo server in the kernel: each byte received is sent back by an sk_skb program
    Echo(EchoArgs),
    /// A TCP proxy in the kernel: each client's connection is spliced with one of its own to UPSTREAM
    Proxy(proxy::ProxyArgs),
    /// Local TCP connections of a cgroup skip the loopback stack: sendmsg() data goes straight to the peer
    Bypass(bypass::BypassArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Where to listen: ADDR:PORT (port 0: any free port; IPv6 as [ADDR]:PORT)
    #[arg(value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub out: OutputArgs,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("`{s}` is not ADDR:PORT (e.g. 127.0.0.1:7000, [::1]:7000)"))
}

pub fn run(args: SockmapArgs) -> Result<i32, Error> {
    match args.command {
        SockmapCommand::Echo(a) => echo(a),
        SockmapCommand::Proxy(a) => proxy(a),
        SockmapCommand::Bypass(a) => bypass::run(a),
    }
}

/// A bound socket, not yet listening: its port is known (for the sockops filter) before any
/// client can connect, and it listens only once every program is attached.
fn bind_only(addr: SocketAddr) -> Result<(OwnedFd, SocketAddr), Error> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::io("creating the listening socket", e.into()))?;
    let _ = setsockopt(&fd, sockopt::ReuseAddr, &true);
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr)).map_err(|e| {
        let hint = match e {
            nix::errno::Errno::EADDRINUSE => "another socket listens there: pick another port, or 0 for any",
            nix::errno::Errno::EADDRNOTAVAIL => "no interface has this address here",
            _ => "give an address of this machine, e.g. 127.0.0.1:7000",
        };
        Error::usage(format!("cannot listen on {addr}: {e}"), Some(hint.to_owned()))
    })?;
    let bound: SockaddrStorage = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .map_err(|e| Error::io("reading the listening address", e.into()))?;
    let bound = bound
        .as_sockaddr_in()
        .map(|a| SocketAddr::from((a.ip(), a.port())))
        .or_else(|| bound.as_sockaddr_in6().map(|a| SocketAddr::from((a.ip(), a.port()))))
        .unwrap_or(addr);
    Ok((fd, bound))
}

/// SO_NETNS_COOKIE (Linux 5.14): the cookie of the socket's network namespace.
fn netns_cookie(sock: &OwnedFd) -> Option<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into cookie; the fd is open.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cookie)
}

fn echo(args: EchoArgs) -> Result<i32, Error> {
    serve(args.listen, args.out, EchoPrinter::default(), true, |_, bound| {
        Ok((server::Echo, format!("echo on {bound}: every byte received is sent back by the kernel; Ctrl-C ends")))
    })
}

fn proxy(args: proxy::ProxyArgs) -> Result<i32, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let upstream = args.upstream;
    let timeout = args.connect_timeout;
    serve(args.listen, args.out, proxy::ProxyPrinter::new(rx), false, move |skel, bound| {
        if bound == upstream || (bound.port() == upstream.port() && bound.ip().is_unspecified()) {
            return Err(Error::usage(
                format!("UPSTREAM {upstream} is the proxy's own listener"),
                Some("give the address of the server to forward to".to_owned()),
            ));
        }
        let dup = |m: &libbpf_rs::MapMut<'_>| {
            m.as_fd().try_clone_to_owned().map_err(|e| Error::io("duplicating a map fd", e))
        };
        let maps = (dup(&skel.maps.tk_sm_socks)?, dup(&skel.maps.tk_sm_peers)?, dup(&skel.maps.tk_sm_conns)?);
        let service = proxy::Proxy::new(upstream, timeout, maps, tx);
        Ok((
            service,
            format!("proxy on {bound} to {upstream}: the bytes of each pair are spliced by the kernel; Ctrl-C ends"),
        ))
    })
}

/// The run both servers share: load, attach the sockhash's parser and verdict (and for echo the
/// sockops program that fills it), listen, serve until the end.
fn serve<P: Printer, S: server::Service>(
    addr: SocketAddr,
    out: OutputArgs,
    printer: P,
    sockops: bool,
    service: impl FnOnce(&SockmapSkel<'_>, SocketAddr) -> Result<(S, String), Error>,
) -> Result<i32, Error> {
    let mut rt = Runtime::for_packets(out)?;
    // Only echo's sockops program needs a cgroup (the proxy inserts from user space).
    let cgroup = if sockops {
        let root = cgroup2_root()?;
        Some(own_cgroup(&root).unwrap_or(root))
    } else {
        None
    };
    let (sock, bound) = bind_only(addr)?;
    let transport = rt.step("transport", || rt.transport())?;
    match &cgroup {
        Some(c) => rt.say(format_args!("plan: listen on {bound}; sockops on {}; transport {transport:?}", c.display())),
        None => rt.say(format_args!("plan: listen on {bound}; transport {transport:?}")),
    }

    let mut storage = MaybeUninit::uninit();
    let mut open = rt.open("sockmap", SockmapSkelBuilder::default(), &mut storage)?;
    rt.configure_transport(&mut open, transport)?;
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
    ro.tk_sm_config.port = bound.port();
    // Other processes of the cgroup may listen on the same port in other namespaces: the
    // namespace is checked too where the kernel can (SO_NETNS_COOKIE and the sock_ops helper).
    let helper = ProgramType::SockOps.is_helper_supported(libbpf_sys::BPF_FUNC_get_netns_cookie).unwrap_or(false);
    ro.tk_sm_config.netns_cookie = if helper { netns_cookie(&sock).unwrap_or(0) } else { 0 };
    if sockops {
        rt.say(format_args!(
            "the network namespace is {}checked (cookie {})",
            if ro.tk_sm_config.netns_cookie == 0 { "not " } else { "" },
            ro.tk_sm_config.netns_cookie
        ));
    }
    let skel = rt.load("sockmap", open)?;

    let code = rt.stream(&skel, transport, printer, |skel| {
        let (service, ready) = service(skel, bound)?;
        // The sockhash's programs first, then the program that fills it, then the listener:
        // no connection can arrive before it is spliced.
        let map = skel.maps.tk_sm_socks.as_fd();
        let parser = attach_sockmap(
            skel.progs.sockmap__parser.as_fd(),
            "sockmap__parser",
            map,
            libbpf_sys::BPF_SK_SKB_STREAM_PARSER,
        )?;
        let verdict = attach_sockmap(
            skel.progs.sockmap__verdict.as_fd(),
            "sockmap__verdict",
            map,
            libbpf_sys::BPF_SK_SKB_STREAM_VERDICT,
        )?;
        let insert = match &cgroup {
            Some(c) => Some(attach_cgroup(
                skel.progs.sockmap__insert.as_fd(),
                "sockmap__insert",
                c,
                libbpf_sys::BPF_CGROUP_SOCK_OPS,
            )?),
            None => None,
        };
        for a in [Some(&parser), Some(&verdict), insert.as_ref()].into_iter().flatten() {
            eprintln!("tracekit: attached {}", a.describe());
        }
        let fd = sock.try_clone().map_err(|e| Error::io("duplicating the listening socket", e))?;
        listen(&fd, Backlog::new(4096).unwrap_or(Backlog::MAXCONN))
            .map_err(|e| Error::io(format!("listening on {bound}"), e.into()))?;
        let conns =
            skel.maps.tk_sm_conns.as_fd().try_clone_to_owned().map_err(|e| Error::io("duplicating a map fd", e))?;
        let srv = server::Server::start(TcpListener::from(fd), conns, service)?;
        eprintln!("tracekit: {ready}");
        // Dropped by the runtime before it takes the last events: the server first (its thread
        // ends after its last turn, whose events are then still printed), then the links.
        Ok((srv, insert, verdict, parser))
    });
    drop(sock);
    code
}

#[derive(Default)]
struct EchoPrinter {
    connections: u64,
    bytes: u64,
}

impl Printer for EchoPrinter {
    type Event = types::tk_sm_event;
    const COLUMNS: &'static str = "PEER                                       EVENT          BYTES       MS";

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        EventHeader::Hook(HookHeader { ts_ns: ev.ts_ns, cpu: ev.cpu, pid: 0, comm: [0; 16] })
    }

    fn observe(&mut self, ev: &Self::Event) {
        if ev.kind == CLOSED {
            self.connections += 1;
            self.bytes += ev.bytes;
        }
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let peer = Endpoint::new(sock_addr(ev.family, &ev.daddr), ev.dport);
        let w = out.w();
        fastfmt::col(w, peer.as_str().as_bytes(), 42)?;
        fastfmt::col(w, kind_name(ev.kind).as_bytes(), 8)?;
        if ev.kind == CLOSED {
            write!(w, "{:>12} ", ev.bytes)?;
            fastfmt::ms_col(w, ev.duration_ns, 8)?;
        }
        Ok(())
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        out.field_str("event", kind_name(ev.kind))?;
        out.field_sock_ends(ev.family, (&ev.saddr, ev.sport), (&ev.daddr, ev.dport))?;
        out.field_u64("cookie", ev.cookie)?;
        if ev.kind == CLOSED {
            out.field_u64("bytes", ev.bytes)?;
            out.field_f64("ms", ev.duration_ns as f64 / 1e6, 3)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        if out.json {
            out.obj_start("sockmap_counts")?;
            out.field_u64("connections", self.connections)?;
            out.field_u64("bytes", self.bytes)?;
            return out.obj_end();
        }
        writeln!(out.w(), "{} connections closed, {} bytes echoed in the kernel", self.connections, self.bytes)
    }
}

fn kind_name(k: u8) -> &'static str {
    match k {
        OPEN => "open",
        CLOSED => "closed",
        _ => "full",
    }
}
