//! Network interfaces and the hooks on them: XDP links, tcx links, and the legacy TC form
//! (clsact qdisc + cls_bpf filter) for kernels without tcx (< 6.6).
//!
//! Every netlink request and every ifindex lookup runs inside the target namespace (the
//! calling thread enters it for the call; see [`Netns::enter`]).

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

use libbpf_rs::libbpf_sys;
use libbpf_rs::{TcHook, TcHookBuilder};

use super::Attachment;
use super::netns::{self, Netns, NetnsSpec};
use crate::error::Error;
use crate::runtime::probe::{Feature, Probes};

/// An interface of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Iface {
    /// Looks `name` up inside `netns`. Unknown: a usage error listing the interfaces there, and
    /// saying where an interface of that name does exist (current namespace, /run/netns/*).
    pub fn resolve(name: &str, netns: &Netns) -> Result<Iface, Error> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\t', '\n']) {
            return Err(Error::usage(
                format!("`{name}` is not a valid interface name"),
                Some(format!("interface names have 1 to {} bytes and no `/` or spaces", libc::IFNAMSIZ - 1)),
            ));
        }
        let found = {
            let _in_ns = netns.enter()?;
            name_to_index(name)
        };
        if let Some(index) = found {
            return Ok(Iface { name: name.to_owned(), index });
        }
        let here = {
            let _in_ns = netns.enter()?;
            interface_names()
        };
        let list = if here.is_empty() {
            "none".to_owned()
        } else {
            here.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        };
        let elsewhere = namespaces_with(name, netns);
        let names: Vec<&str> = elsewhere
            .iter()
            .filter_map(|s| match s {
                NetnsSpec::Name(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        let hint = match (elsewhere.first(), names.as_slice()) {
            (Some(NetnsSpec::Current), _) => format!(
                "`{name}` exists in tracekit's own namespace: leave out `--netns` (interfaces in netns {}: {list})",
                netns.label()
            ),
            (_, [n]) => {
                format!("`{name}` exists in netns `{n}`: pass `--netns {n}` (interfaces here: {list})")
            }
            (_, [_, ..]) => format!(
                "`{name}` exists in netns {}: pass `--netns NAME` (interfaces here: {list})",
                names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ),
            _ => format!("interfaces{}: {list}", where_(netns)),
        };
        Err(Error::usage(format!("no interface `{name}`{}", netns.suffix()), Some(hint)))
    }
}

fn where_(netns: &Netns) -> String {
    match netns.spec {
        NetnsSpec::Current => String::new(),
        _ => format!(" in netns {}", netns.label()),
    }
}

/// The name of interface `index` in `netns`, for output.
pub fn iface_name(index: u32, netns: &Netns) -> Option<String> {
    let _in_ns = netns.enter().ok()?;
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

impl Iface {
    /// Whether frames of this interface start with an Ethernet header (Ethernet, veth, loopback),
    /// what tcpdump expressions and captures assume; None when the kernel does not say.
    pub fn is_ethernet(&self, netns: &Netns) -> Result<Option<bool>, Error> {
        Ok(self.hwaddr(netns)?.map(|(family, _)| matches!(family, libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK)))
    }

    /// The interface's MAC address (Ethernet-like interfaces), None when the kernel does not say.
    pub fn mac(&self, netns: &Netns) -> Result<Option<[u8; 6]>, Error> {
        Ok(self.hwaddr(netns)?.filter(|(family, _)| *family == libc::ARPHRD_ETHER).map(|(_, mac)| mac))
    }

    /// The hardware address type (ARPHRD_*) and its first six bytes.
    fn hwaddr(&self, netns: &Netns) -> Result<Option<(u16, [u8; 6])>, Error> {
        let _in_ns = netns.enter()?;
        let Some((fd, mut req)) = self.ifreq() else { return Ok(None) };
        // SAFETY: SIOCGIFHWADDR fills req.ifr_ifru with the hardware address and its type.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
        if rc < 0 {
            return Ok(None);
        }
        // SAFETY: after SIOCGIFHWADDR the union holds a sockaddr.
        let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(sa.sa_data.iter()) {
            *dst = *src as u8;
        }
        Ok(Some((sa.sa_family, mac)))
    }

    /// The interface's driver as ethtool names it (`veth`, `mlx5_core`, …); None when it has no
    /// ethtool driver information.
    pub fn driver(&self, netns: &Netns) -> Result<Option<String>, Error> {
        let _in_ns = netns.enter()?;
        let Some((fd, mut req)) = self.ifreq() else { return Ok(None) };
        let mut info = EthtoolDrvinfo { cmd: ETHTOOL_GDRVINFO, ..EthtoolDrvinfo::default() };
        req.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
        // SAFETY: SIOCETHTOOL with ETHTOOL_GDRVINFO fills `info`, which outlives the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
        if rc < 0 {
            return Ok(None);
        }
        let name = CStr::from_bytes_until_nul(&info.driver).map(|n| n.to_string_lossy().into_owned());
        Ok(name.ok())
    }

    /// Whether the kernel forwards packets received on this interface, per family
    /// (`net.ipv4.conf.IFACE.forwarding`, `net.ipv6.conf.IFACE.forwarding`); None where the
    /// family is off on the interface or the sysctl cannot be read.
    pub fn forwarding(&self, netns: &Netns) -> Result<[Option<bool>; 2], Error> {
        let _in_ns = netns.enter()?;
        // /proc/sys/net shows the namespace of the thread that opens it: this one, entered above.
        Ok(["ipv4", "ipv6"].map(|family| {
            let path = format!("/proc/sys/net/{family}/conf/{}/forwarding", self.name);
            std::fs::read_to_string(path).ok().map(|v| v.trim() != "0")
        }))
    }

    /// A datagram socket for interface ioctls and a request naming this interface.
    fn ifreq(&self) -> Option<(OwnedFd, libc::ifreq)> {
        // SAFETY: a socket only for the ioctl, closed by OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a new descriptor owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain data; zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(self.name.bytes().take(libc::IFNAMSIZ - 1)) {
            *dst = src as libc::c_char;
        }
        Some((fd, req))
    }
}

/// `ETHTOOL_GDRVINFO` of linux/ethtool.h (not in the libc crate).
const ETHTOOL_GDRVINFO: u32 = 0x3;

/// `struct ethtool_drvinfo` of linux/ethtool.h (not in the libc crate).
#[repr(C)]
#[derive(Default)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

fn name_to_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Interface names of the calling thread's namespace, sorted by index.
fn interface_names() -> Vec<String> {
    // SAFETY: no arguments; the result is freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut p = list;
    // SAFETY: the array ends with an entry whose index is 0; each name is NUL-terminated.
    unsafe {
        while (*p).if_index != 0 {
            out.push(CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// Other namespaces (tracekit's own first, then /run/netns/*) that have an interface `name`.
fn namespaces_with(name: &str, not: &Netns) -> Vec<NetnsSpec> {
    let mut out = Vec::new();
    let mut candidates = vec![None];
    candidates.extend(netns::named_namespaces().into_iter().map(Some));
    for c in candidates {
        let Ok(ns) = Netns::resolve(c.as_deref()) else {
            continue;
        };
        if ns.inode == not.inode {
            continue;
        }
        let Ok(_in_ns) = ns.enter() else { continue };
        if name_to_index(name).is_some() {
            out.push(ns.spec.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// XDP

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native where the driver has it, else skb (the kernel decides).
    Auto,
    /// Generic XDP: works on every interface, after the skb is built.
    Skb,
    /// In the driver, before any skb exists.
    Native,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Skb => "skb",
            XdpMode::Native => "native",
        }
    }

    fn flags(self) -> u32 {
        match self {
            XdpMode::Auto => 0,
            XdpMode::Skb => libbpf_sys::XDP_FLAGS_SKB_MODE,
            XdpMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes `iface` a target of XDP redirects through `devmap` (a DEVMAP or DEVMAP_HASH keyed and
/// valued by ifindex). The kernel resolves the ifindex in the namespace of the thread that
/// updates the map, so the update runs inside `netns`.
pub fn devmap_add(devmap: &libbpf_rs::MapMut<'_>, iface: &Iface, netns: &Netns) -> Result<(), Error> {
    use libbpf_rs::MapCore as _;
    let _in_ns = netns.enter()?;
    let key = iface.index.to_ne_bytes();
    devmap.update(&key, &key, libbpf_rs::MapFlags::ANY).map_err(|e| {
        Error::runtime(
            format!("adding {iface}{} to the XDP redirect map: {e}", netns.suffix()),
            Some(format!("the kernel looks {iface}'s index up when the map is filled: is it still there?")),
        )
    })
}

/// Attaches `prog` to `iface` with an XDP link (closing it detaches, even after SIGKILL) and
/// returns the mode in effect (never `Auto`).
pub fn attach_xdp(
    prog: BorrowedFd<'_>,
    prog_name: &str,
    iface: &Iface,
    netns: &Netns,
    mode: XdpMode,
) -> Result<(Attachment, XdpMode), Error> {
    let _in_ns = netns.enter()?;
    // SAFETY: bpf_link_create_opts is plain data (integers, pointers, unions); all zero is valid.
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    opts.flags = mode.flags();
    // SAFETY: prog is an open program fd; opts is initialised and outlives the call.
    let fd = unsafe { libbpf_sys::bpf_link_create(prog.as_raw_fd(), iface.index as i32, libbpf_sys::BPF_XDP, &opts) };
    if fd < 0 {
        return Err(xdp_error(-fd, prog_name, iface, netns, mode));
    }
    // SAFETY: fd is a new link fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The mode our program runs in: its id in the driver or the generic slot (a program
    // offloaded to hardware may sit next to it, so attach_mode alone is not enough).
    let ours = prog_id_of(prog);
    let effective = match xdp_query(iface.index) {
        Ok(q) if ours.is_some_and(|id| id == q.drv_prog_id) => XdpMode::Native,
        Ok(q) if ours.is_some_and(|id| id == q.skb_prog_id) => XdpMode::Skb,
        Ok(q) if u32::from(q.attach_mode) == libbpf_sys::XDP_ATTACHED_DRV => XdpMode::Native,
        Ok(q) if u32::from(q.attach_mode) == libbpf_sys::XDP_ATTACHED_SKB => XdpMode::Skb,
        _ if mode == XdpMode::Auto => XdpMode::Skb,
        _ => mode,
    };
    let what = format!("xdp link on {iface}{} ({effective} mode)", netns.suffix());
    let att = Attachment::link(fd, |id| match id {
        Some(id) => format!("{what}, link id {id}"),
        None => what,
    });
    Ok((att, effective))
}

fn xdp_query(ifindex: u32) -> io::Result<libbpf_sys::bpf_xdp_query_opts> {
    // SAFETY: bpf_xdp_query_opts is plain data; all zero is valid.
    let mut q: libbpf_sys::bpf_xdp_query_opts = unsafe { std::mem::zeroed() };
    q.sz = size_of::<libbpf_sys::bpf_xdp_query_opts>() as _;
    // SAFETY: q is initialised with its size and valid for writes.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut q) };
    if rc < 0 { Err(io::Error::from_raw_os_error(-rc)) } else { Ok(q) }
}

/// The kernel's internal "not supported" errno, which leaks to user space.
const ENOTSUPP: i32 = 524;

fn xdp_error(errno: i32, prog_name: &str, iface: &Iface, netns: &Netns, mode: XdpMode) -> Error {
    let what = format!("xdp program `{prog_name}` on `{iface}`{}", netns.suffix());
    let pre = netns.exec_prefix();
    match errno {
        libc::EOPNOTSUPP | ENOTSUPP if mode == XdpMode::Native => Error::usage(
            format!("`{iface}` has no native XDP: its driver does not implement it"),
            Some("use `--mode skb` (generic XDP works on every interface), or leave `--mode` out".into()),
        ),
        libc::EBUSY | libc::EEXIST => xdp_conflict(errno, prog_name, iface, netns),
        libc::EINVAL if !xdp_link_supported() => Error::Unsupported {
            feature: "xdp_link",
            reason: "this kernel has no XDP links (Linux 5.9+)".into(),
            hint: Some(
                "tracekit attaches XDP only through links, which detach when tracekit exits; \
                 run it on Linux 5.9 or later"
                    .into(),
            ),
        },
        _ => Error::Attach {
            what,
            hint: Some(format!("check what is attached with `{pre}bpftool net show dev {iface}`")),
            source: libbpf_rs::Error::from_raw_os_error(errno),
        },
    }
}

fn probes() -> &'static Probes {
    static PROBES: OnceLock<Probes> = OnceLock::new();
    PROBES.get_or_init(Probes::default)
}

fn xdp_link_supported() -> bool {
    !matches!(probes().get(Feature::XdpLink), crate::runtime::probe::Status::Unsupported { .. })
}

/// The error for an interface that has an XDP program already: which one, how it is attached,
/// and what to do about it.
fn xdp_conflict(errno: i32, prog_name: &str, iface: &Iface, netns: &Netns) -> Error {
    let pre = netns.exec_prefix();
    let show = format!("`{pre}bpftool net show dev {iface}`");
    let q = match xdp_query(iface.index) {
        Ok(q) => q,
        Err(e) => {
            return Error::runtime(
                format!("`{iface}`{} already has an XDP program (querying it failed: {e})", netns.suffix()),
                Some(format!("see {show}")),
            );
        }
    };
    let (id, mode) = [(q.drv_prog_id, "native"), (q.skb_prog_id, "skb"), (q.hw_prog_id, "offload")]
        .into_iter()
        .find(|(id, _)| *id != 0)
        .unwrap_or((q.prog_id, "unknown"));
    let name = prog_name_of(id).map(|n| format!(" `{n}`")).unwrap_or_default();
    let (how, hint) = match xdp_link_of(id, iface.index) {
        Some(link) => {
            let owner = match fd_holders("link_id", link).first() {
                Some((pid, comm)) => format!(" (held by pid {pid} `{comm}`)"),
                None => String::new(),
            };
            (
                format!("through link {link}{owner}"),
                format!(
                    "a link cannot be replaced: stop the program that owns link {link}{owner}, \
                     then retry; see {show}"
                ),
            )
        }
        None => {
            let kw = if mode == "skb" { "xdpgeneric" } else { "xdp" };
            (
                "through netlink (it stays until removed)".to_owned(),
                format!("if nothing needs it, remove it with `{pre}ip link set dev {iface} {kw} off`; see {show}"),
            )
        }
    };
    let both = if errno == libc::EEXIST { "; native and skb mode cannot be active at once" } else { "" };
    Error::runtime(
        format!(
            "cannot attach `{prog_name}`: `{iface}`{} already has XDP program id {id}{name} in {mode} mode, \
             attached {how}{both}",
            netns.suffix()
        ),
        Some(hint),
    )
}

fn prog_info(fd: BorrowedFd<'_>) -> Option<libbpf_sys::bpf_prog_info> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: fd is an open program fd; info and len are valid for writes of len bytes.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (rc == 0).then_some(info)
}

/// The kernel's id of the program behind `fd`.
pub(crate) fn prog_id_of(fd: BorrowedFd<'_>) -> Option<u32> {
    prog_info(fd).map(|i| i.id)
}

/// The name the kernel holds for program `id` (16 bytes at most).
pub(crate) fn prog_name_of(id: u32) -> Option<String> {
    // SAFETY: plain syscall wrapper; the fd is owned below.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a new program fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let info = prog_info(fd.as_fd())?;
    let bytes: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The id of the XDP link that attaches program `prog_id` on `ifindex`, if one does.
fn xdp_link_of(prog_id: u32, ifindex: u32) -> Option<u32> {
    let mut id = 0u32;
    loop {
        // SAFETY: id is valid for writes.
        if unsafe { libbpf_sys::bpf_link_get_next_id(id, &mut id) } != 0 {
            return None;
        }
        // SAFETY: plain syscall wrapper; the fd is owned below.
        let fd = unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) };
        if fd < 0 {
            continue;
        }
        // SAFETY: fd is a new link fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: bpf_link_info is plain data; all zero is valid.
        let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libbpf_sys::bpf_link_info>() as u32;
        // SAFETY: info and len are valid for writes of len bytes.
        if unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) } != 0 {
            continue;
        }
        // SAFETY: the xdp member is the one the kernel fills for BPF_LINK_TYPE_XDP.
        let link_ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        if info.type_ == libbpf_sys::BPF_LINK_TYPE_XDP && info.prog_id == prog_id && link_ifindex == ifindex {
            return Some(info.id);
        }
    }
}

/// Processes holding a BPF fd whose fdinfo says `key: id` (`prog_id`, `link_id`), as
/// (pid, comm), from /proc/*/fdinfo.
pub(crate) fn fd_holders(key: &str, id: u32) -> Vec<(u32, String)> {
    let want = id.to_string();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_to_string(fd.path()).is_ok_and(|info| {
                info.lines()
                    .any(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')).is_some_and(|v| v.trim() == want))
            })
        });
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_owned()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// TC

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcDir {
    Ingress,
    Egress,
}

impl TcDir {
    pub fn other(self) -> TcDir {
        match self {
            TcDir::Ingress => TcDir::Egress,
            TcDir::Egress => TcDir::Ingress,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TcDir::Ingress => "ingress",
            TcDir::Egress => "egress",
        }
    }

    fn tcx_attach_type(self) -> libbpf_sys::bpf_attach_type {
        match self {
            TcDir::Ingress => libbpf_sys::BPF_TCX_INGRESS,
            TcDir::Egress => libbpf_sys::BPF_TCX_EGRESS,
        }
    }

    fn tc_attach_point(self) -> libbpf_sys::bpf_tc_attach_point {
        match self {
            TcDir::Ingress => libbpf_sys::BPF_TC_INGRESS,
            TcDir::Egress => libbpf_sys::BPF_TC_EGRESS,
        }
    }

    /// The clsact parent of this direction's filters: `ffff:fff2` / `ffff:fff3`.
    fn clsact_parent(self) -> u32 {
        let min = match self {
            TcDir::Ingress => libbpf_rs::TC_H_MIN_INGRESS,
            TcDir::Egress => libbpf_rs::TC_H_MIN_EGRESS,
        };
        (libbpf_rs::TC_H_CLSACT & 0xffff_0000) | min
    }
}

impl fmt::Display for TcDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcBackend {
    /// tcx where the kernel has it (6.6+), else clsact.
    Auto,
    /// A tcx link: owned by an fd, gone with the process.
    Tcx,
    /// A clsact qdisc and a cls_bpf filter (netlink): removed by the guard, swept at the next
    /// start after a SIGKILL.
    Clsact,
}

/// The cls_bpf filter handle of tracekit's legacy TC filters (`0x746b` is "tk"). Together with
/// [`TC_PRIORITY`] it is how the sweep recognises a filter a killed tracekit left behind, and
/// what `tc filter show dev X ingress` prints (`pref 29803 bpf chain 0 handle 0x746b`).
pub const TC_HANDLE: u32 = 0x746b;
/// The priority (`pref`) of tracekit's legacy TC filters: 29803, i.e. after filters with a lower
/// number (libbpf's default 1, Cilium's 1) and before those `tc` numbers itself (49152 down).
pub const TC_PRIORITY: u32 = 0x746b;

/// Attaches a SCHED_CLS program on one direction of `iface`. The program returns -1
/// (TC_ACT_UNSPEC / TCX_NEXT) so the packet goes on to the next program unchanged. The legacy
/// backend may first remove a stale tracekit filter: see [`Attachment::notes`].
pub fn attach_tc(
    prog: BorrowedFd<'_>,
    prog_name: &str,
    iface: &Iface,
    netns: &Netns,
    dir: TcDir,
    backend: TcBackend,
) -> Result<Attachment, Error> {
    let backend = match backend {
        TcBackend::Auto if probes().get(Feature::Tcx).is_supported() => TcBackend::Tcx,
        TcBackend::Auto => TcBackend::Clsact,
        b => b,
    };
    match backend {
        TcBackend::Clsact => attach_clsact(prog, prog_name, iface, netns, dir),
        _ => attach_tcx(prog, prog_name, iface, netns, dir),
    }
}

fn attach_tcx(
    prog: BorrowedFd<'_>,
    prog_name: &str,
    iface: &Iface,
    netns: &Netns,
    dir: TcDir,
) -> Result<Attachment, Error> {
    let _in_ns = netns.enter()?;
    // SAFETY: prog is an open program fd; NULL opts means none (append after other programs).
    let fd = unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), iface.index as i32, dir.tcx_attach_type(), std::ptr::null())
    };
    if fd < 0 {
        let errno = -fd;
        if errno == libc::EINVAL && !probes().get(Feature::Tcx).is_supported() {
            return Err(Error::Unsupported {
                feature: "tcx",
                reason: "this kernel has no tcx links (Linux 6.6+)".into(),
                hint: Some(
                    "leave the TC backend on auto: tracekit then uses a clsact qdisc and a cls_bpf filter".into(),
                ),
            });
        }
        return Err(Error::Attach {
            what: format!("tcx program `{prog_name}` on `{iface}` {dir}{}", netns.suffix()),
            hint: Some(format!("check what is attached with `{}bpftool net show dev {iface}`", netns.exec_prefix())),
            source: libbpf_rs::Error::from_raw_os_error(errno),
        });
    }
    // SAFETY: fd is a new link fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let what = format!("tcx link on {iface} {dir}{}", netns.suffix());
    Ok(Attachment::link(fd, |id| match id {
        Some(id) => format!("{what}, link id {id}"),
        None => what,
    }))
}

/// Removes tracekit's legacy filter (and the clsact qdisc if tracekit made it and nothing else
/// uses it) when dropped; the calling thread enters the namespace for that, wherever it is.
pub(crate) struct TcGuard {
    netns: Netns,
    iface: Iface,
    dir: TcDir,
    prog_id: u32,
    removed: bool,
}

/// The clsact qdiscs this process created, as (netns inode, ifindex): shared by the guards of
/// both directions, so whichever guard drops last removes the qdisc.
static OUR_QDISCS: Mutex<Vec<(u64, u32)>> = Mutex::new(Vec::new());

fn our_qdiscs() -> std::sync::MutexGuard<'static, Vec<(u64, u32)>> {
    OUR_QDISCS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the clsact qdisc of `ifindex` if this process created it and no filter is left on
/// it. The caller is inside the namespace.
fn release_qdisc(netns: &Netns, ifindex: u32) -> io::Result<()> {
    let mut ours = our_qdiscs();
    let Some(at) = ours.iter().position(|&k| k == (netns.inode, ifindex)) else {
        return Ok(());
    };
    if !clsact_is_empty(ifindex) {
        return Ok(());
    }
    ours.swap_remove(at);
    match destroy_clsact(ifindex) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        other => other,
    }
}

impl TcGuard {
    pub(crate) fn remove(mut self) -> Result<(), Error> {
        self.removed = true;
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        let _in_ns = self.netns.enter()?;
        let ctx = || format!("removing tc filter on `{}` {}{}", self.iface, self.dir, self.netns.suffix());
        match tc_query(self.iface.index, self.dir) {
            // Still ours: remove it. Someone else's by now, or gone: leave it.
            Ok(Some(id)) if id == self.prog_id => {
                tc_detach(self.iface.index, self.dir).map_err(|e| Error::io(ctx(), e))?
            }
            Ok(_) => {}
            // The interface (or its namespace) is gone, and the filter with it.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(e) => return Err(Error::io(ctx(), e)),
        }
        release_qdisc(&self.netns, self.iface.index).map_err(|e| {
            Error::io(format!("removing the clsact qdisc of `{}`{}", self.iface, self.netns.suffix()), e)
        })?;
        Ok(())
    }
}

impl Drop for TcGuard {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = self.cleanup()
        {
            eprintln!("tracekit: warning: {e}");
        }
    }
}

fn stale_note(on: &str, id: u32, name: &str) -> String {
    format!(
        "removed a stale tc filter on {on} (program id {id}{name}, handle {TC_HANDLE:#x} pref \
         {TC_PRIORITY}) left by a killed tracekit"
    )
}

fn attach_clsact(
    prog: BorrowedFd<'_>,
    prog_name: &str,
    iface: &Iface,
    netns: &Netns,
    dir: TcDir,
) -> Result<Attachment, Error> {
    let _in_ns = netns.enter()?;
    let on = format!("`{iface}` {dir}{}", netns.suffix());
    let pre = netns.exec_prefix();
    let created = create_clsact(iface.index).map_err(|e| Error::Attach {
        what: format!("clsact qdisc on `{iface}`{}", netns.suffix()),
        hint: Some(format!("check the qdiscs with `{pre}tc qdisc show dev {iface}`")),
        source: libbpf_rs::Error::from(e),
    })?;
    let key = (netns.inode, iface.index);
    if created {
        our_qdiscs().push(key);
    }
    let mut ours = our_qdiscs().contains(&key);
    // Undo our qdisc on every error below.
    let undo = || {
        let _ = release_qdisc(netns, iface.index);
    };

    // The sweep: a filter with tracekit's handle and priority whose program no process holds
    // was left by a tracekit that could not clean up (SIGKILL, a crash).
    let mut notes = Vec::new();
    let stale = tc_query(iface.index, dir).map_err(|e| Error::io(format!("querying tc filters on {on}"), e));
    match stale {
        Err(e) => {
            undo();
            return Err(e);
        }
        Ok(None) => {}
        Ok(Some(id)) => {
            if let Some((pid, comm)) = fd_holders("prog_id", id).into_iter().next() {
                undo();
                let filter =
                    format!("handle {TC_HANDLE:#x} pref {TC_PRIORITY} in `{pre}tc filter show dev {iface} {dir}`");
                if pid == std::process::id() {
                    return Err(Error::runtime(
                        format!("tracekit has a tc filter on {on} already (program id {id})"),
                        Some(format!(
                            "the clsact backend holds one tracekit filter per interface and direction ({filter}); the tcx backend (Linux 6.6+) holds any number"
                        )),
                    ));
                }
                return Err(Error::runtime(
                    format!("another tracekit is attached to {on} (pid {pid} `{comm}`, program id {id})"),
                    Some(format!(
                        "stop that tracekit first, or attach to another interface or direction (its filter: {filter})"
                    )),
                ));
            }
            let name = prog_name_of(id).map(|n| format!(" `{n}`")).unwrap_or_default();
            if let Err(e) = tc_detach(iface.index, dir) {
                undo();
                return Err(Error::io_hint(
                    format!("removing a stale tracekit tc filter on {on}"),
                    e,
                    format!("remove it by hand: `{pre}tc filter del dev {iface} {dir} pref {TC_PRIORITY}`"),
                ));
            }
            notes.push(stale_note(&on, id, &name));
        }
    }
    // The other direction's stale filter goes too: a killed tracekit usually held both, and
    // only with both gone can its clsact qdisc be told apart (and removed at exit). A filter
    // there that a live process holds is left alone: it is not in this attach's way.
    let other = dir.other();
    if let Ok(Some(id)) = tc_query(iface.index, other)
        && fd_holders("prog_id", id).is_empty()
        && tc_detach(iface.index, other).is_ok()
    {
        let name = prog_name_of(id).map(|n| format!(" `{n}`")).unwrap_or_default();
        notes.push(stale_note(&format!("`{iface}` {other}{}", netns.suffix()), id, &name));
    }
    // A clsact qdisc whose only filters were stale ones is taken to be the killed tracekit's:
    // ours to remove at exit.
    if !notes.is_empty() && !ours && clsact_is_empty(iface.index) {
        our_qdiscs().push(key);
        ours = true;
    }

    let mut hook = tc_hook(prog, iface, dir);
    if let Err(source) = hook.attach() {
        undo();
        return Err(Error::Attach {
            what: format!("tc program `{prog_name}` on {on}"),
            hint: Some(format!("see the filters with `{pre}tc filter show dev {iface} {dir}`")),
            source,
        });
    }
    let prog_id = prog_id_of(prog).unwrap_or(0);
    let describe = format!(
        "tc filter on {iface} {dir}{} (clsact{}, cls_bpf direct-action, handle {TC_HANDLE:#x} pref {TC_PRIORITY})",
        netns.suffix(),
        if ours { " created by tracekit" } else { "" }
    );
    let guard = TcGuard { netns: netns.clone(), iface: iface.clone(), dir, prog_id, removed: false };
    Ok(Attachment::tc(guard, describe, notes))
}

fn tc_hook(prog: BorrowedFd<'_>, iface: &Iface, dir: TcDir) -> TcHook {
    TcHookBuilder::new(prog)
        .ifindex(iface.index as i32)
        .handle(TC_HANDLE)
        .priority(TC_PRIORITY)
        .hook(dir.tc_attach_point())
}

fn raw_hook(ifindex: u32, attach_point: libbpf_sys::bpf_tc_attach_point) -> libbpf_sys::bpf_tc_hook {
    libbpf_sys::bpf_tc_hook {
        sz: size_of::<libbpf_sys::bpf_tc_hook>() as _,
        ifindex: ifindex as i32,
        attach_point,
        ..Default::default()
    }
}

/// Removes tracekit's filter (handle and priority) from one direction.
fn tc_detach(ifindex: u32, dir: TcDir) -> io::Result<()> {
    let hook = raw_hook(ifindex, dir.tc_attach_point());
    let opts = libbpf_sys::bpf_tc_opts {
        sz: size_of::<libbpf_sys::bpf_tc_opts>() as _,
        handle: TC_HANDLE,
        priority: TC_PRIORITY,
        ..Default::default()
    };
    // SAFETY: hook and opts are initialised with their sizes and valid for the call.
    let rc = unsafe { libbpf_sys::bpf_tc_detach(&hook, &opts) };
    if rc < 0 { Err(io::Error::from_raw_os_error(-rc)) } else { Ok(()) }
}

/// Deletes the clsact qdisc (and with it every filter left on it).
fn destroy_clsact(ifindex: u32) -> io::Result<()> {
    let mut hook = raw_hook(ifindex, libbpf_sys::BPF_TC_INGRESS | libbpf_sys::BPF_TC_EGRESS);
    // SAFETY: hook is initialised with its size and valid for the call.
    let rc = unsafe { libbpf_sys::bpf_tc_hook_destroy(&mut hook) };
    if rc < 0 { Err(io::Error::from_raw_os_error(-rc)) } else { Ok(()) }
}

/// Creates the clsact qdisc; Ok(false) when one exists already (not ours to remove).
fn create_clsact(ifindex: u32) -> io::Result<bool> {
    let mut hook = libbpf_sys::bpf_tc_hook {
        sz: size_of::<libbpf_sys::bpf_tc_hook>() as _,
        ifindex: ifindex as i32,
        attach_point: libbpf_sys::BPF_TC_INGRESS,
        ..Default::default()
    };
    // SAFETY: hook is initialised with its size; libbpf creates the qdisc exclusively
    // (NLM_F_EXCL), so EEXIST means it was there before.
    let rc = unsafe { libbpf_sys::bpf_tc_hook_create(&mut hook) };
    match rc {
        0 => Ok(true),
        e if -e == libc::EEXIST => Ok(false),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

/// The program id of tracekit's filter (handle/priority) on this direction, if one is there.
fn tc_query(ifindex: u32, dir: TcDir) -> io::Result<Option<u32>> {
    let hook = libbpf_sys::bpf_tc_hook {
        sz: size_of::<libbpf_sys::bpf_tc_hook>() as _,
        ifindex: ifindex as i32,
        attach_point: dir.tc_attach_point(),
        ..Default::default()
    };
    let mut opts = libbpf_sys::bpf_tc_opts {
        sz: size_of::<libbpf_sys::bpf_tc_opts>() as _,
        handle: TC_HANDLE,
        priority: TC_PRIORITY,
        ..Default::default()
    };
    // SAFETY: hook and opts are initialised with their sizes and valid for the call.
    let rc = unsafe { libbpf_sys::bpf_tc_query(&hook, &mut opts) };
    match rc {
        0 => Ok(Some(opts.prog_id)),
        // No filter, or no clsact qdisc at all.
        e if -e == libc::ENOENT || -e == libc::EINVAL => Ok(None),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

/// Whether the clsact qdisc of `ifindex` has no filter in either direction (false when the
/// filters cannot be listed: then the qdisc stays).
fn clsact_is_empty(ifindex: u32) -> bool {
    [TcDir::Ingress, TcDir::Egress].into_iter().all(|d| count_filters(ifindex, d.clsact_parent()).is_ok_and(|n| n == 0))
}

#[repr(C)]
struct TcMsg {
    family: u8,
    pad1: u8,
    pad2: u16,
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

#[repr(C)]
struct FilterDumpReq {
    nh: libc::nlmsghdr,
    tc: TcMsg,
}

/// Number of filters (RTM_NEWTFILTER entries) under `parent` of `ifindex`: one RTM_GETTFILTER
/// dump on a NETLINK_ROUTE socket of the calling thread's namespace.
fn count_filters(ifindex: u32, parent: u32) -> io::Result<usize> {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a new socket nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let req = FilterDumpReq {
        nh: libc::nlmsghdr {
            nlmsg_len: size_of::<FilterDumpReq>() as u32,
            nlmsg_type: libc::RTM_GETTFILTER,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        tc: TcMsg {
            family: libc::AF_UNSPEC as u8,
            pad1: 0,
            pad2: 0,
            ifindex: ifindex as i32,
            handle: 0,
            parent,
            info: 0,
        },
    };
    // SAFETY: req is a plain repr(C) value and the length passed is its size.
    let n = unsafe { libc::send(sock.as_raw_fd(), (&raw const req).cast(), size_of::<FilterDumpReq>(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut count = 0;
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let data = &buf[..n as usize];
        let mut off = 0;
        while off + size_of::<libc::nlmsghdr>() <= data.len() {
            // SAFETY: at least a header's worth of bytes remain; read_unaligned needs no alignment.
            let nh: libc::nlmsghdr = unsafe { std::ptr::read_unaligned(data[off..].as_ptr().cast()) };
            let len = nh.nlmsg_len as usize;
            if len < size_of::<libc::nlmsghdr>() || off + len > data.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
            }
            match i32::from(nh.nlmsg_type) {
                libc::NLMSG_DONE => return Ok(count),
                libc::NLMSG_ERROR => {
                    let at = off + size_of::<libc::nlmsghdr>();
                    let code = data.get(at..at + 4).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    return Ok(count);
                }
                t if t == i32::from(libc::RTM_NEWTFILTER) => count += 1,
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}
