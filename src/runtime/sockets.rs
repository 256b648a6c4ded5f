//! Sockets of other processes: which sockets a network namespace has at an address
//! (`/proc/net/{tcp,udp}{,6}` read from inside it), which processes hold them (`/proc/*/fd`),
//! and taking a copy with `pidfd_getfd` (Linux 5.6), checked with `getsockname`, `SO_TYPE` and
//! `SO_ACCEPTCONN` on the copy.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{SockaddrStorage, getsockname, getsockopt, sockopt};

use super::attach::Netns;
use crate::error::Error;

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SockProto {
    Tcp,
    Udp,
}

impl SockProto {
    pub fn name(self) -> &'static str {
        match self {
            SockProto::Tcp => "tcp",
            SockProto::Udp => "udp",
        }
    }
}

/// A socket of a namespace's table: a TCP listener or an unconnected UDP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub proto: SockProto,
    pub local: SocketAddr,
    pub inode: u64,
}

/// /proc/net/tcp's state of a listener; an unconnected UDP socket shows TCP_CLOSE.
const TCP_LISTEN: u8 = 0x0a;
const TCP_CLOSE: u8 = 0x07;

/// The TCP listeners and unconnected bound UDP sockets of `netns` (IPv4 and IPv6 tables).
pub fn bound_sockets(netns: &Netns) -> Result<Vec<Bound>, Error> {
    let tables = std::thread::scope(|s| {
        s.spawn(|| -> Result<Vec<(SockProto, bool, String)>, Error> {
            let _in = netns.enter()?;
            let mut out = Vec::new();
            for (proto, name) in [(SockProto::Tcp, "tcp"), (SockProto::Udp, "udp")] {
                for v6 in [false, true] {
                    let path = format!("/proc/thread-self/net/{name}{}", if v6 { "6" } else { "" });
                    match fs::read_to_string(&path) {
                        Ok(text) => out.push((proto, v6, text)),
                        // no IPv6 in this kernel or namespace
                        Err(e) if v6 && e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(format!("reading {path}"), e)),
                    }
                }
            }
            Ok(out)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    let mut out = Vec::new();
    for (proto, v6, text) in tables {
        let want = if proto == SockProto::Tcp { TCP_LISTEN } else { TCP_CLOSE };
        out.extend(
            text.lines()
                .skip(1)
                .filter_map(|l| parse_line(l, v6))
                .filter(|&(_, st, _)| st == want)
                .map(|(local, _, inode)| Bound { proto, local, inode }),
        );
    }
    Ok(out)
}

/// `sl local rem st ... inode` of one /proc/net line: (local, state, inode).
fn parse_line(line: &str, v6: bool) -> Option<(SocketAddr, u8, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (addr, port) = f.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
    let inode = f.get(9)?.parse().ok()?;
    // Each 32-bit word is printed as the number the kernel holds: the address bytes in host order.
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let ip = match (v6, words.as_slice()) {
        (false, [a]) => IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes())),
        (true, [a, b, c, d]) => {
            let mut o = [0u8; 16];
            for (i, w) in [a, b, c, d].into_iter().enumerate() {
                o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some((SocketAddr::new(ip, port), state, inode))
}

/// (pid, fd) of every descriptor of socket `inode`, among `pids` (every process when empty).
pub fn holders(inode: u64, pids: &[u32]) -> Vec<(u32, i32)> {
    let link = format!("socket:[{inode}]");
    let all: Vec<u32> = if pids.is_empty() {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    } else {
        pids.to_vec()
    };
    let mut out = Vec::new();
    for pid in all {
        let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for e in dir.flatten() {
            if fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == link.as_str())
                && let Some(fd) = e.file_name().to_str().and_then(|n| n.parse().ok())
            {
                out.push((pid, fd));
            }
        }
    }
    out
}

/// The command name of `pid`, for messages.
pub fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

/// A copy of descriptor `fd` of process `pid` (pidfd_open + pidfd_getfd, Linux 5.6).
pub fn take_fd(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd is a new descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number of that process and flags (0);
    // it returns a new fd (close-on-exec) or -1.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: got is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(got as i32) })
}

/// What a socket descriptor is, asked of the socket itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockInfo {
    pub proto: Option<SockProto>,
    pub listening: bool,
    pub local: Option<SocketAddr>,
    /// IPV6_V6ONLY of an IPv6 socket (false for IPv4).
    pub v6only: bool,
    pub cookie: u64,
}

pub fn sock_info(fd: impl AsFd) -> io::Result<SockInfo> {
    let fd = fd.as_fd();
    let ty = getsockopt(&fd, sockopt::SockType)?;
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    let local = getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok().and_then(|s| to_std(&s));
    let proto = match ty {
        nix::sys::socket::SockType::Stream => Some(SockProto::Tcp),
        nix::sys::socket::SockType::Datagram => Some(SockProto::Udp),
        _ => None,
    };
    let v6only = local.is_some_and(|a| a.is_ipv6()) && getsockopt(&fd, sockopt::Ipv6V6Only).unwrap_or(false);
    Ok(SockInfo { proto, listening, local, v6only, cookie: cookie(fd).unwrap_or(0) })
}

/// SO_COOKIE (Linux 5.7... and earlier kernels of the 5.x series): the id BPF programs see.
pub fn cookie(fd: impl AsFd) -> io::Result<u64> {
    let mut v = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: v is valid for writes of len bytes; the kernel updates len.
    let rc = unsafe {
        libc::getsockopt(fd.as_fd().as_raw_fd(), libc::SOL_SOCKET, libc::SO_COOKIE, (&raw mut v).cast(), &mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// A nix socket address as std's (IPv4 and IPv6 only).
pub fn to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((a.ip(), a.port())));
    }
    s.as_sockaddr_in6().map(|a| SocketAddr::from((a.ip(), a.port())))
}

/// Whether a socket bound to `bound` receives what is addressed to `to` in the usual lookup:
/// the same address, or the wildcard of its family (`::` covers IPv4 too unless v6only, which
/// /proc/net does not show: counted as covering).
pub fn covers(bound: SocketAddr, to: SocketAddr) -> bool {
    if bound.port() != to.port() {
        return false;
    }
    bound.ip() == to.ip() || bound.ip().is_unspecified() && (bound.is_ipv6() || to.is_ipv4())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines() {
        let l = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1";
        let (a, st, ino) = parse_line(l, false).unwrap();
        assert_eq!((a, st, ino), ("127.0.0.1:8080".parse().unwrap(), TCP_LISTEN, 4242));
        let l = "   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7 2";
        let (a, st, _) = parse_line(l, true).unwrap();
        assert_eq!((a, st), ("[::1]:80".parse().unwrap(), TCP_CLOSE));
        assert!(parse_line("  sl  local_address rem_address", false).is_none());
    }

    #[test]
    fn wildcards_cover() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(covers("0.0.0.0:9".parse().unwrap(), to));
        assert!(covers("[::]:9".parse().unwrap(), to));
        assert!(!covers("0.0.0.0:9".parse().unwrap(), "[::1]:9".parse().unwrap()));
        assert!(!covers("127.0.0.2:9".parse().unwrap(), to));
        assert!(!covers("127.0.0.1:10".parse().unwrap(), to));
    }
}
