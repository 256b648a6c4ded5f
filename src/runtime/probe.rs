//! Kernel feature probes with three outcomes (supported / unsupported / unknown), as in
//! cilium/ebpf. Each probe runs at most once per run; tools' plans and `tracekit probe` share them.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapType, ProgramType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Supported,
    /// Absent, with the reason and, where known, the kernel that brought it.
    Unsupported {
        reason: String,
        since: Option<&'static str>,
    },
    /// The probe could not decide.
    Unknown(String),
}

impl Status {
    pub fn is_supported(&self) -> bool {
        matches!(self, Status::Supported)
    }

    pub fn label(&self) -> &'static str {
        match self {
            Status::Supported => "supported",
            Status::Unsupported { .. } => "unsupported",
            Status::Unknown(_) => "unknown",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Status::Supported => String::new(),
            Status::Unsupported { reason, since: Some(v) } => format!("{reason} (needs Linux >= {v})"),
            Status::Unsupported { reason, since: None } => reason.clone(),
            Status::Unknown(e) => e.clone(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Supported => f.write_str("supported"),
            other => write!(f, "{}: {}", other.label(), other.detail()),
        }
    }
}

macro_rules! features {
    ($($variant:ident => $name:literal, $since:expr, $probe:path;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Feature { $($variant),* }

        impl Feature {
            pub const ALL: &'static [Feature] = &[$(Feature::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $(Feature::$variant => $name),* }
            }

            /// The first kernel with the feature, for "needs Linux >= X".
            pub fn since(self) -> Option<&'static str> {
                match self { $(Feature::$variant => $since),* }
            }

            fn run_probe(self) -> Status {
                match self { $(Feature::$variant => $probe(self)),* }
            }
        }
    };
}

features! {
    Btf => "btf", Some("5.4"), probe_btf;
    RingBuf => "ringbuf", Some("5.8"), probe_ringbuf;
    PerfBuf => "perfbuf", Some("4.4"), probe_perfbuf;
    Kprobe => "kprobe", Some("4.1"), probe_kprobe;
    Kretprobe => "kretprobe", Some("4.1"), probe_kretprobe;
    Fentry => "fentry", Some("5.5"), probe_fentry;
    Fexit => "fexit", Some("5.5"), probe_fexit;
    Tracepoint => "tracepoint", Some("4.7"), probe_tracepoint;
    RawTp => "raw_tp", Some("4.17"), probe_raw_tp;
    TpBtf => "tp_btf", Some("5.5"), probe_tp_btf;
    Uprobe => "uprobe", Some("4.1"), probe_uprobe;
    Uretprobe => "uretprobe", Some("4.1"), probe_uretprobe;
    PerfEvent => "perf_event", Some("4.9"), probe_prog_type;
    Xdp => "xdp", Some("4.8"), probe_prog_type;
    Tc => "tc", Some("4.1"), probe_prog_type;
    CgroupSkb => "cgroup_skb", Some("4.10"), probe_prog_type;
    CgroupSock => "cgroup_sock", Some("4.10"), probe_prog_type;
    CgroupSockAddr => "cgroup_sock_addr", Some("4.17"), probe_prog_type;
    CgroupSockopt => "cgroup_sockopt", Some("5.3"), probe_prog_type;
    CgroupDevice => "cgroup_device", Some("4.15"), probe_prog_type;
    SocketFilter => "socket_filter", Some("3.19"), probe_prog_type;
    Sockops => "sockops", Some("4.13"), probe_prog_type;
    SkMsg => "sk_msg", Some("4.17"), probe_prog_type;
    SkSkb => "sk_skb", Some("4.14"), probe_prog_type;
    SkLookup => "sk_lookup", Some("5.9"), probe_prog_type;
    XdpLink => "xdp_link", Some("5.9"), probe_xdp_link;
    Tcx => "tcx", Some("6.6"), probe_tcx;
    CgroupLink => "cgroup_link", Some("5.7"), probe_cgroup_link;
    NetnsLink => "netns_link", Some("5.9"), probe_netns_link;
    SockmapLink => "sockmap_link", Some("6.10"), probe_sockmap_link;
    StructOps => "struct_ops", Some("5.6"), probe_struct_ops;
    StructOpsLink => "struct_ops_link", Some("6.4"), probe_struct_ops_link;
    Lsm => "lsm", Some("5.7"), probe_lsm;
    Tracefs => "tracefs", None, probe_tracefs;
    Cgroup2 => "cgroup_v2", Some("4.5"), probe_cgroup2;
    AttachCookie => "attach_cookie", Some("5.15"), probe_attach_cookie;
}

/// Per-run cache of probe results.
pub struct Probes {
    cache: [OnceLock<Status>; Feature::ALL.len()],
}

// By hand: `Default` is derived for arrays of at most 32 elements.
impl Default for Probes {
    fn default() -> Self {
        Probes { cache: std::array::from_fn(|_| OnceLock::new()) }
    }
}

impl Probes {
    pub fn get(&self, f: Feature) -> &Status {
        self.cache[f as usize].get_or_init(|| f.run_probe())
    }
}

fn unsupported(f: Feature, reason: impl Into<String>) -> Status {
    Status::Unsupported { reason: reason.into(), since: f.since() }
}

fn from_bool(f: Feature, r: libbpf_rs::Result<bool>, reason: &str) -> Status {
    match r {
        Ok(true) => Status::Supported,
        Ok(false) => unsupported(f, reason),
        Err(e) => Status::Unknown(e.to_string()),
    }
}

fn prog_type_of(f: Feature) -> (ProgramType, &'static str) {
    match f {
        Feature::PerfEvent => (ProgramType::PerfEvent, "BPF_PROG_TYPE_PERF_EVENT missing"),
        Feature::Xdp => (ProgramType::Xdp, "BPF_PROG_TYPE_XDP missing"),
        Feature::Tc => (ProgramType::SchedCls, "BPF_PROG_TYPE_SCHED_CLS missing (CONFIG_NET_CLS_BPF)"),
        Feature::CgroupSkb => (ProgramType::CgroupSkb, "CONFIG_CGROUP_BPF not set"),
        Feature::CgroupSock => (ProgramType::CgroupSock, "CONFIG_CGROUP_BPF not set"),
        Feature::CgroupSockAddr => (ProgramType::CgroupSockAddr, "CONFIG_CGROUP_BPF not set"),
        Feature::CgroupSockopt => (ProgramType::CgroupSockopt, "CONFIG_CGROUP_BPF not set"),
        Feature::CgroupDevice => (ProgramType::CgroupDevice, "CONFIG_CGROUP_BPF not set"),
        Feature::SocketFilter => (ProgramType::SocketFilter, "BPF_PROG_TYPE_SOCKET_FILTER missing"),
        Feature::Sockops => (ProgramType::SockOps, "BPF_PROG_TYPE_SOCK_OPS missing"),
        Feature::SkMsg => (ProgramType::SkMsg, "CONFIG_NET_SOCK_MSG not set"),
        Feature::SkSkb => (ProgramType::SkSkb, "CONFIG_BPF_STREAM_PARSER not set"),
        Feature::SkLookup => (ProgramType::SkLookup, "BPF_PROG_TYPE_SK_LOOKUP missing"),
        other => unreachable!("{other:?} has its own probe"),
    }
}

fn probe_prog_type(f: Feature) -> Status {
    let (ty, reason) = prog_type_of(f);
    from_bool(f, ty.is_supported(), reason)
}

fn probe_btf(f: Feature) -> Status {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Status::Supported
    } else {
        unsupported(f, "no /sys/kernel/btf/vmlinux: kernel built without CONFIG_DEBUG_INFO_BTF; pass --btf FILE")
    }
}

fn probe_ringbuf(f: Feature) -> Status {
    from_bool(f, MapType::RingBuf.is_supported(), "BPF_MAP_TYPE_RINGBUF missing")
}

fn probe_perfbuf(f: Feature) -> Status {
    from_bool(f, MapType::PerfEventArray.is_supported(), "BPF_MAP_TYPE_PERF_EVENT_ARRAY missing")
}

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";
const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";

/// A kprobe program type alone proves nothing: attaching needs the kprobe PMU or kprobe_events.
fn probe_kprobe(f: Feature) -> Status {
    let events = super::kernel::tracefs_dir().is_some_and(|d| d.join("kprobe_events").exists());
    if !Path::new(KPROBE_PMU).join("type").exists() && !events {
        return unsupported(f, "no kprobe PMU and no kprobe_events: kernel built without CONFIG_KPROBES");
    }
    from_bool(f, ProgramType::Kprobe.is_supported(), "BPF_PROG_TYPE_KPROBE missing")
}

fn probe_kretprobe(f: Feature) -> Status {
    match probe_kprobe(f) {
        Status::Supported if !Path::new(KPROBE_PMU).join("format/retprobe").exists() => {
            // Legacy kprobe_events handles returns too.
            Status::Supported
        }
        other => other,
    }
}

fn probe_uprobe(f: Feature) -> Status {
    let events = super::kernel::tracefs_dir().is_some_and(|d| d.join("uprobe_events").exists());
    if !Path::new(UPROBE_PMU).join("type").exists() && !events {
        return unsupported(f, "no uprobe PMU and no uprobe_events: kernel built without CONFIG_UPROBE_EVENTS");
    }
    from_bool(f, ProgramType::Kprobe.is_supported(), "BPF_PROG_TYPE_KPROBE missing")
}

fn probe_uretprobe(f: Feature) -> Status {
    probe_uprobe(f)
}

fn probe_tracepoint(f: Feature) -> Status {
    from_bool(f, ProgramType::Tracepoint.is_supported(), "BPF_PROG_TYPE_TRACEPOINT missing")
}

fn probe_raw_tp(f: Feature) -> Status {
    from_bool(f, ProgramType::RawTracepoint.is_supported(), "BPF_PROG_TYPE_RAW_TRACEPOINT missing")
}

fn probe_tracefs(f: Feature) -> Status {
    match super::kernel::tracefs_dir() {
        Some(_) => Status::Supported,
        None if Path::new("/sys/kernel/tracing").is_dir() => Status::Unsupported {
            reason: "not mounted; tracekit mounts it on /sys/kernel/tracing when a tool needs it".into(),
            since: None,
        },
        None => unsupported(f, "no /sys/kernel/tracing: kernel built without CONFIG_TRACING"),
    }
}

fn probe_cgroup2(f: Feature) -> Status {
    match super::kernel::cgroup2_mount() {
        Some(_) => Status::Supported,
        None => unsupported(f, "no cgroup2 mount in /proc/mounts (--cgroup needs one)"),
    }
}

fn probe_lsm(f: Feature) -> Status {
    let active = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    if !active.split(',').any(|l| l.trim() == "bpf") {
        return unsupported(f, "`bpf` is not in the active LSM list (CONFIG_BPF_LSM, lsm=...,bpf)");
    }
    from_bool(f, ProgramType::Lsm.is_supported(), "BPF_PROG_TYPE_LSM missing")
}

/// fentry, fexit and tp_btf are all BPF_PROG_TYPE_TRACING; libbpf's type probe tries only
/// fentry, which some kernels refuse while tp_btf works. So each is probed by loading a
/// two-instruction program against a real BTF target.
fn probe_tracing(f: Feature, attach_type: u32, targets: &[&std::ffi::CStr]) -> Status {
    let Some(btf_id) = targets.iter().find_map(|name| {
        // SAFETY: name is a valid NUL-terminated string; the call only reads it.
        let id = unsafe { libbpf_sys::libbpf_find_vmlinux_btf_id(name.as_ptr(), attach_type) };
        (id > 0).then_some(id as u32)
    }) else {
        return Status::Unknown("no probe target found in kernel BTF".into());
    };
    match load_tracing_prog(attach_type, btf_id) {
        Ok(_fd) => Status::Supported,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            unsupported(f, "the kernel refuses tracing programs (EPERM): no ftrace direct calls, or lockdown")
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(ENOTSUPP) => {
            unsupported(f, format!("the kernel rejects this program kind ({e})"))
        }
        Err(e) => Status::Unknown(e.to_string()),
    }
}

fn load_tracing_prog(attach_type: u32, btf_id: u32) -> io::Result<OwnedFd> {
    load_trivial_prog(libbpf_sys::BPF_PROG_TYPE_TRACING, attach_type, btf_id)
}

/// Loads `r0 = 0; exit` as a program of type `prog_type`.
fn load_trivial_prog(prog_type: libbpf_sys::bpf_prog_type, attach_type: u32, btf_id: u32) -> io::Result<OwnedFd> {
    // r0 = 0; exit
    let mov = libbpf_sys::bpf_insn {
        code: (libbpf_sys::BPF_ALU64 | libbpf_sys::BPF_MOV | libbpf_sys::BPF_K) as u8,
        ..Default::default()
    };
    let exit = libbpf_sys::bpf_insn { code: (libbpf_sys::BPF_JMP | libbpf_sys::BPF_EXIT) as u8, ..Default::default() };
    let insns = [mov, exit];
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: attach_type,
        attach_btf_id: btf_id,
        ..Default::default()
    };
    // SAFETY: insns and opts are valid for the call; the names are NUL-terminated literals.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            prog_type,
            c"tk_probe".as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: fd is a new file descriptor returned by the kernel that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// XDP links (commit aa8d3a716b59, Linux 5.9). No link attempt tells "no XDP links" from "no
/// such interface" (both EINVAL), so this is decided from the version, as tp_btf is.
fn probe_xdp_link(f: Feature) -> Status {
    match kernel_version() {
        Some(v) if v >= (5, 9) => Status::Supported,
        Some(_) => unsupported(f, "kernel too old"),
        None => Status::Unknown("cannot read the kernel version".into()),
    }
}

/// tcx links (commit e420bed02507, Linux 6.6), probed as cilium/ebpf does: a tcx link to an
/// interface that does not exist fails with ENODEV where tcx exists, EINVAL where the attach
/// type is unknown.
fn probe_tcx(f: Feature) -> Status {
    let fd = match load_trivial_prog(libbpf_sys::BPF_PROG_TYPE_SCHED_CLS, 0, 0) {
        Ok(fd) => fd,
        Err(e) => return Status::Unknown(format!("loading a probe program: {e}")),
    };
    // SAFETY: fd is an open program fd; NULL opts are allowed; ifindex u32::MAX never exists.
    let rc = unsafe { libbpf_sys::bpf_link_create(fd.as_raw_fd(), -1, libbpf_sys::BPF_TCX_INGRESS, std::ptr::null()) };
    if rc >= 0 {
        // SAFETY: rc is a new link fd nothing else owns; dropping it detaches.
        drop(unsafe { OwnedFd::from_raw_fd(rc) });
        return Status::Supported;
    }
    match -rc {
        libc::ENODEV => Status::Supported,
        libc::EINVAL => unsupported(f, "the kernel does not know the tcx attach types"),
        e => Status::Unknown(io::Error::from_raw_os_error(e).to_string()),
    }
}

/// A feature decided from the kernel version alone.
fn since_version(f: Feature, v: (u32, u32)) -> Status {
    match kernel_version() {
        Some(k) if k >= v => Status::Supported,
        Some(_) => unsupported(f, "kernel too old"),
        None => Status::Unknown("cannot read the kernel version".into()),
    }
}

/// cgroup links (commit af6eea57437a, Linux 5.7): decided from the version, since a probe link
/// needs a cgroup to attach to.
fn probe_cgroup_link(f: Feature) -> Status {
    since_version(f, (5, 7))
}

/// netns links for flow dissector (5.8) and sk_lookup (commit e9ddbb7707ff, Linux 5.9): from
/// the version, as the sk_lookup program type came with them.
fn probe_netns_link(f: Feature) -> Status {
    since_version(f, (5, 9))
}

/// sockmap links (commit 699c23f02c65, Linux 6.10): a test link of a trivial sk_skb verdict
/// program on a throwaway SOCKMAP. Kernels without them reject the link with EINVAL.
fn probe_sockmap_link(f: Feature) -> Status {
    // SAFETY: NULL name and opts are allowed; the result is checked and owned below.
    let map = unsafe {
        libbpf_sys::bpf_map_create(libbpf_sys::BPF_MAP_TYPE_SOCKMAP, std::ptr::null(), 4, 4, 1, std::ptr::null())
    };
    if map < 0 {
        let e = io::Error::from_raw_os_error(-map);
        return match -map {
            libc::EINVAL => unsupported(f, format!("no SOCKMAP maps ({e})")),
            _ => Status::Unknown(format!("creating a probe sockmap: {e}")),
        };
    }
    // SAFETY: map is a new map fd nothing else owns.
    let map = unsafe { OwnedFd::from_raw_fd(map) };
    let prog = match load_trivial_prog(libbpf_sys::BPF_PROG_TYPE_SK_SKB, libbpf_sys::BPF_SK_SKB_STREAM_VERDICT, 0) {
        Ok(fd) => fd,
        Err(e) => return Status::Unknown(format!("loading a probe program: {e}")),
    };
    // SAFETY: prog and map are open fds; NULL opts are allowed.
    let rc = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            map.as_raw_fd(),
            libbpf_sys::BPF_SK_SKB_STREAM_VERDICT,
            std::ptr::null(),
        )
    };
    if rc >= 0 {
        // SAFETY: rc is a new link fd nothing else owns; dropping it detaches.
        drop(unsafe { OwnedFd::from_raw_fd(rc) });
        return Status::Supported;
    }
    match -rc {
        libc::EINVAL => unsupported(f, "the kernel has no sockmap links"),
        e => Status::Unknown(io::Error::from_raw_os_error(e).to_string()),
    }
}

/// bpf_get_attach_cookie: one program attached many times can tell the attachments apart.
fn probe_attach_cookie(f: Feature) -> Status {
    from_bool(
        f,
        ProgramType::Kprobe.is_helper_supported(libbpf_sys::BPF_FUNC_get_attach_cookie),
        "no bpf_get_attach_cookie helper",
    )
}

fn probe_fentry(f: Feature) -> Status {
    probe_tracing(f, libbpf_sys::BPF_TRACE_FENTRY, &[c"bpf_fentry_test1", c"do_sys_openat2"])
}

fn probe_fexit(f: Feature) -> Status {
    probe_tracing(f, libbpf_sys::BPF_TRACE_FEXIT, &[c"bpf_fentry_test1", c"do_sys_openat2"])
}

/// The struct_ops types of the kernel's BTF: (`bpf_struct_ops_tcp_congestion_ops`: congestion
/// control in BPF, 5.6+; `bpf_struct_ops_link`: struct_ops links, 6.4+), None without BTF. The
/// BTF is parsed once for both (several ms and MiB), and only by the tools that register
/// struct_ops and by `tracekit probe`.
fn struct_ops_types() -> Option<(bool, bool)> {
    static TYPES: OnceLock<Option<(bool, bool)>> = OnceLock::new();
    *TYPES.get_or_init(|| {
        // SAFETY: no arguments; the result is checked and freed below.
        let btf = unsafe { libbpf_sys::btf__load_vmlinux_btf() };
        if btf.is_null() || (btf as isize) < 0 && (btf as isize) > -4096 {
            return None;
        }
        let has = |name: &std::ffi::CStr| {
            // SAFETY: btf is a valid BTF object; name is NUL-terminated.
            unsafe { libbpf_sys::btf__find_by_name_kind(btf, name.as_ptr(), libbpf_sys::BTF_KIND_STRUCT) > 0 }
        };
        let types = (has(c"bpf_struct_ops_tcp_congestion_ops"), has(c"bpf_struct_ops_link"));
        // SAFETY: btf came from btf__load_vmlinux_btf and is freed once.
        unsafe { libbpf_sys::btf__free(btf) };
        Some(types)
    })
}

/// TCP congestion control in BPF: the kernel's struct_ops wrapper of `tcp_congestion_ops`
/// exists (5.6+, with CONFIG_BPF_JIT).
fn probe_struct_ops(f: Feature) -> Status {
    match struct_ops_types().map(|t| t.0) {
        Some(true) => Status::Supported,
        Some(false) => unsupported(f, "no struct_ops for tcp_congestion_ops in the kernel's BTF"),
        None => unsupported(f, "no kernel BTF (/sys/kernel/btf/vmlinux)"),
    }
}

/// struct_ops links (6.4): the kernel has `struct bpf_struct_ops_link`.
fn probe_struct_ops_link(f: Feature) -> Status {
    match struct_ops_types().map(|t| t.1) {
        Some(true) => Status::Supported,
        Some(false) => unsupported(f, "no struct_ops links (Linux 6.4)"),
        None => unsupported(f, "no kernel BTF (/sys/kernel/btf/vmlinux)"),
    }
}

/// tp_btf needs kernel BTF and Linux 5.5, nothing else (no ftrace trampoline, unlike fentry).
/// Decided from those two facts: a probe load would parse the kernel's BTF (several ms and
/// MiB), which the tool's own load then does again.
fn probe_tp_btf(f: Feature) -> Status {
    if !probe_btf(Feature::Btf).is_supported() {
        return unsupported(f, "no kernel BTF (/sys/kernel/btf/vmlinux)");
    }
    match kernel_version() {
        Some(v) if v >= (5, 5) => Status::Supported,
        Some(_) => unsupported(f, "kernel too old"),
        None => Status::Unknown("cannot read the kernel version".into()),
    }
}

/// (major, minor) of the running kernel.
pub fn kernel_version() -> Option<(u32, u32)> {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut it = rel.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok());
    Some((it.next()?, it.next()?))
}

/// The kernel's internal "not supported" errno, which leaks to user space from BPF syscalls.
const ENOTSUPP: i32 = 524;
