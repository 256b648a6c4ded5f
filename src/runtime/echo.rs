//! A user-space echo service inside a network namespace: TCP listeners and UDP sockets on
//! ephemeral ports of 127.0.0.1 and ::1, each connection and datagram sent back. Made for
//! sockets that receive traffic addressed elsewhere (an sk_lookup program assigns them), so a
//! UDP reply goes out from the datagram's original destination (IP_ORIGDSTADDR /
//! IPV6_ORIGDSTADDR, and a reply socket bound to that address and port, as the kernel's
//! test_sk_lookup and echo_dispatch do): the client sees the answer from where it sent to.

use std::io::{self, IoSliceMut, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrStorage, bind, recvmsg, setsockopt,
    socket, sockopt,
};

use super::attach::Netns;
use super::sockets::{SockProto, to_std};
use crate::error::Error;

/// IPV6_FREEBIND (linux/in6.h, Linux 4.15): bind to an address not (yet) on an interface.
const IPV6_FREEBIND: libc::c_int = 78;

/// What the echo service did, for the summary at exit.
#[derive(Debug, Default)]
pub struct EchoCounts {
    pub connections: AtomicU64,
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
    /// Datagrams not answered: no original destination, or no reply socket for it.
    pub unanswered: AtomicU64,
}

/// One echo socket: its protocol, family and address, and the socket itself.
pub enum EchoSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl EchoSocket {
    pub fn proto(&self) -> SockProto {
        match self {
            EchoSocket::Tcp(_) => SockProto::Tcp,
            EchoSocket::Udp(_) => SockProto::Udp,
        }
    }

    pub fn local(&self) -> io::Result<SocketAddr> {
        match self {
            EchoSocket::Tcp(s) => s.local_addr(),
            EchoSocket::Udp(s) => s.local_addr(),
        }
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            EchoSocket::Tcp(s) => s.as_fd(),
            EchoSocket::Udp(s) => s.as_fd(),
        }
    }
}

/// Opens the echo sockets of `protos` in `netns`: on 127.0.0.1 and, when the namespace has
/// IPv6, on ::1 (IPV6_V6ONLY: IPv4 goes to the IPv4 socket). Nothing is served until
/// [`serve`].
pub fn open(netns: &Netns, protos: &[SockProto]) -> Result<Vec<EchoSocket>, Error> {
    thread::scope(|s| {
        s.spawn(|| -> Result<Vec<EchoSocket>, Error> {
            let _in = netns.enter()?;
            let mut out = Vec::new();
            for &proto in protos {
                for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
                    match open_one(proto, ip) {
                        Ok(s) => out.push(s),
                        // A namespace without IPv6 (or without ::1 on lo): IPv4 only.
                        Err(e) if ip.is_ipv6() && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                        Err(e) if ip.is_ipv6() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
                        Err(e) => {
                            return Err(Error::io(
                                format!("opening the {} echo socket on {ip}{}", proto.name(), netns.suffix()),
                                e,
                            ));
                        }
                    }
                }
            }
            Ok(out)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn open_one(proto: SockProto, ip: IpAddr) -> io::Result<EchoSocket> {
    let family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let ty = if proto == SockProto::Tcp { SockType::Stream } else { SockType::Datagram };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None)?;
    if ip.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    let at = SockaddrStorage::from(SocketAddr::new(ip, 0));
    bind(fd.as_raw_fd(), &at)?;
    Ok(match proto {
        SockProto::Tcp => {
            nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::MAXCONN)?;
            EchoSocket::Tcp(TcpListener::from(fd))
        }
        SockProto::Udp => {
            if ip.is_ipv4() {
                setsockopt(&fd, sockopt::Ipv4OrigDstAddr, &true)?;
            } else {
                setsockopt(&fd, sockopt::Ipv6OrigDstAddr, &true)?;
            }
            EchoSocket::Udp(UdpSocket::from(fd))
        }
    })
}

/// Serves every socket on threads of its own until the process ends. UDP threads stay in
/// `netns`: their reply sockets are made there.
pub fn serve(sockets: Vec<EchoSocket>, netns: &Netns, counts: &Arc<EchoCounts>) -> Result<(), Error> {
    for s in sockets {
        let counts = counts.clone();
        let netns = netns.clone();
        let spawned = match s {
            EchoSocket::Tcp(l) => {
                thread::Builder::new().name("tk-echo-tcp".into()).spawn(move || accept_loop(l, counts))
            }
            EchoSocket::Udp(u) => thread::Builder::new().name("tk-echo-udp".into()).spawn(move || {
                // A thread that cannot enter still answers from the echo socket's own address.
                let _in = netns.enter().ok();
                udp_loop(u, counts)
            }),
        };
        spawned.map_err(|e| Error::io("starting the echo threads", e))?;
    }
    Ok(())
}

fn accept_loop(l: TcpListener, counts: Arc<EchoCounts>) {
    for conn in l.incoming() {
        let Ok(conn) = conn else { continue };
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let counts = counts.clone();
        // One thread per connection: an echo's connections are few and short.
        let _ = thread::Builder::new().name("tk-echo-conn".into()).spawn(move || echo_stream(conn, &counts));
    }
}

fn echo_stream(mut s: TcpStream, counts: &EchoCounts) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
                counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

fn udp_loop(u: UdpSocket, counts: Arc<EchoCounts>) {
    let mut buf = vec![0u8; 65536];
    let mut cmsg = nix::cmsg_space!(libc::sockaddr_in6);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<SockaddrStorage>(u.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()) else {
            continue;
        };
        let n = msg.bytes;
        let from = msg.address.as_ref().and_then(to_std);
        let orig = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
            ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                Some(SocketAddr::from((Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))))
            }
            ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                Some(SocketAddr::from((Ipv6Addr::from(a.sin6_addr.s6_addr), u16::from_be(a.sin6_port))))
            }
            _ => None,
        });
        counts.datagrams.fetch_add(1, Ordering::Relaxed);
        let (Some(from), Some(orig)) = (from, orig) else {
            counts.unanswered.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // A reply socket per datagram, closed at once: one left bound at the original
        // destination would take that port's datagrams once they are no longer steered.
        match reply_socket(orig).and_then(|r| r.send_to(&buf[..n], from)) {
            Ok(_) => {
                counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                counts.unanswered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A socket bound to `orig` for sending replies from it. SO_REUSEADDR: a reply to another
/// datagram may still hold the address; FREEBIND: the address may be one only routed to this
/// host (`ip route add local PREFIX dev lo`), not configured on an interface.
fn reply_socket(orig: SocketAddr) -> io::Result<UdpSocket> {
    let family = if orig.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if orig.is_ipv4() {
        setsockopt(&fd, sockopt::IpFreebind, &true)?;
    } else {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        let on: libc::c_int = 1;
        // SAFETY: the kernel reads 4 bytes of `on`, which outlives the call. Best effort: an
        // address on an interface needs no FREEBIND.
        unsafe {
            libc::setsockopt(fd.as_raw_fd(), libc::IPPROTO_IPV6, IPV6_FREEBIND, (&raw const on).cast(), 4);
        }
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(orig))?;
    Ok(UdpSocket::from(fd))
}
