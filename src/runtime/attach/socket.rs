//! Socket filters: an `AF_PACKET` socket in the target namespace sees every frame of one
//! interface (or all of them), and the program runs on each. The program returns 0 (keep no
//! bytes), so nothing is ever queued; the filter goes away with the socket.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::Attachment;
use super::netdev::Iface;
use super::netns::Netns;
use crate::error::Error;

/// Creates the socket inside `netns`, attaches `prog` (SO_ATTACH_BPF), then binds it to
/// `iface` (None: every interface of the namespace).
pub fn attach_packet_socket(prog: BorrowedFd<'_>, iface: Option<&Iface>, netns: &Netns) -> Result<Attachment, Error> {
    let on = match iface {
        Some(i) => format!("`{}`", i.name),
        None => "all interfaces".to_owned(),
    };
    let fail = |step: &str, e: io::Error| {
        Error::io_hint(
            format!("packet socket on {on}{}: {step}", netns.suffix()),
            e,
            "packet sockets need CAP_NET_RAW: rerun as root",
        )
    };
    let fd = {
        let _in_ns = netns.enter()?;
        // Protocol 0: the socket receives nothing until bind names ETH_P_ALL, so no frame is
        // queued before the filter is in place.
        // SAFETY: plain socket(2) call; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(fail("socket", io::Error::last_os_error()));
        }
        // SAFETY: raw is a new socket nothing else owns.
        unsafe { OwnedFd::from_raw_fd(raw) }
    };
    // The smallest receive buffer the kernel allows: the filter keeps nothing anyway.
    setsockopt_int(&fd, libc::SO_RCVBUF, 1).map_err(|e| fail("SO_RCVBUF", e))?;
    setsockopt_int(&fd, libc::SO_ATTACH_BPF, prog.as_raw_fd()).map_err(|e| fail("SO_ATTACH_BPF", e))?;

    // SAFETY: sockaddr_ll is plain data; all zero is a valid starting value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = iface.map_or(0, |i| i.index as i32);
    // SAFETY: sll is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(fail("bind", io::Error::last_os_error()));
    }
    Ok(Attachment::socket(fd, format!("packet socket on {on}{}", netns.suffix())))
}

fn setsockopt_int(fd: &OwnedFd, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: val lives across the call and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw const val).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
