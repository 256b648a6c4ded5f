//! `tracekit forward`'s packet rate and latency next to the kernel's own forwarding, on three
//! namespaces of our own in a line (the layout of the kernel's `prog_tests/tc_redirect.c`):
//!
//! ```text
//!   src ns                  fwd ns (the router)                  dst ns
//!   src0 10.201.1.1 <veth> fwd0 10.201.1.2 | fwd1 10.201.2.2 <veth> dst0 10.201.2.1
//! ```
//!
//! src and dst route the other subnet via fwd; every neighbour is static (`nud permanent`); IPv6
//! is off; fwd forwards (`net.ipv4.conf.all.forwarding=1`: `bpf_fib_lookup` answers
//! FWD_DISABLED otherwise, as the kernel would not forward).
//!
//! Cases, side by side in each round (the order rotated from round to round): the sender alone
//! (*floor*: a counting XDP_DROP program on fwd0), (a) the kernel forwarding (no program in fwd),
//! (b) `tracekit forward fwd0 fwd1 --mode native` (XDP: bpf_fib_lookup, bpf_redirect_map through
//! a devmap), (c) `tracekit forward --tc fwd0 fwd1` (TC ingress, bpf_redirect).
//!
//! Sender: BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (5.18+) of an XDP program in src on a
//! prepared 60-byte UDP frame (src0 → fwd0's MAC, 10.201.1.1 → 10.201.2.1), unpaced, from one
//! thread pinned to one CPU; where live frames are not available, one pinned sendmmsg thread.
//! The program writes the Ethernet and IPv4 headers again before its `XDP_TX`: live frames
//! recycle their pages without copying the frame in again, and the forwarders rewrite MACs and
//! TTL in place.
//! A frame sent into a veth by XDP reaches the peer only if the peer has NAPI (NET.md §3):
//! - fwd0 has GRO on (for the cases without an XDP program there);
//! - dst0 has a small XDP program that counts our UDP frames and drops them (the receiver is
//!   not the bottleneck and nothing answers) and passes everything else (the TCP test);
//! - src0 has an XDP_PASS program: the TCP replies that (b) redirects out of fwd0 need it;
//! - transmit checksum offload is off on src0 and dst0: a TCP segment XDP-redirected between
//!   veths keeps a partial checksum (CHECKSUM_PARTIAL is lost with the skb) and dst drops it.
//!
//! Where the CPU goes: the live-frames call sends a batch of 64 with bottom halves off, then
//! re-enables them, which runs fwd0's NAPI (and the forwarding, and then dst0's NAPI) right
//! there, on the sender's CPU; what does not fit runs in that CPU's ksoftirqd. So the whole path
//! runs on one pinned core, and its cost per packet is the sender thread's CPU time
//! (CLOCK_THREAD_CPUTIME_ID: without IRQ_TIME_ACCOUNTING the softirqs it runs are charged to it)
//! plus that ksoftirqd's (schedstat), over the packets that reached dst. That stays right when
//! other work shares the machine, where the packets per second of the wall clock do not.
//!
//! Latency: 2100 request/response round trips per case (64 bytes each way, TCP_NODELAY; 700 over
//! one new TCP connection src → dst after the flood of each round, nothing else on the path),
//! client and server on the pinned CPU (see `tcp_rtts`).
//! tracekit's `forwarded` counts (from its `fwd_counts` at exit) include those TCP packets; the
//! kernel's ForwDatagrams is read right after the flood.
//!
//! Cleanup: the namespaces are deleted on drop and by a panic hook (release builds abort on
//! panic, so no destructor runs then); tracekit dies with the bench (PR_SET_PDEATHSIG); the
//! namespaces of a bench that was killed are deleted at the next start.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use libbpf_rs::libbpf_sys as sys;

use crate::median;
use crate::net::{Pair, insn, ip, load_xdp, run_live_frames};

const SRC0: &str = "src0";
const FWD0: &str = "fwd0";
const FWD1: &str = "fwd1";
const DST0: &str = "dst0";
const IP_SRC: [u8; 4] = [10, 201, 1, 1];
const IP_FWD0: [u8; 4] = [10, 201, 1, 2];
const IP_FWD1: [u8; 4] = [10, 201, 2, 2];
const IP_DST: [u8; 4] = [10, 201, 2, 1];
const MAC_SRC0: [u8; 6] = [0x02, 0, 0x0a, 0xc9, 1, 1];
const MAC_FWD0: [u8; 6] = [0x02, 0, 0x0a, 0xc9, 1, 2];
const MAC_FWD1: [u8; 6] = [0x02, 0, 0x0a, 0xc9, 2, 2];
const MAC_DST0: [u8; 6] = [0x02, 0, 0x0a, 0xc9, 2, 1];
/// The flood's UDP destination port (the only frames dst0's program drops and counts).
const UDP_PORT: u16 = 9402;
const TCP_PORT: u16 = 9403;
/// Request and response size of the TCP round trips.
const RR_BYTES: usize = 64;

fn dotted(a: [u8; 4]) -> String {
    Ipv4Addr::from(a).to_string()
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

// ---------------------------------------------------------------- the three namespaces

/// Namespaces to delete if the bench panics (the hook runs before the abort).
static LIVE_NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn del_netns(ns: &str) {
    let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).output();
}

fn install_panic_cleanup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            prev(info);
            if let Ok(names) = LIVE_NAMESPACES.try_lock() {
                for ns in names.iter() {
                    del_netns(ns);
                }
            }
        }));
    });
}

/// Namespaces `tkb-{src,fwd,dst}-PID` of benches that are gone (killed: no destructor ran).
fn sweep() {
    let Ok(entries) = fs::read_dir("/run/netns") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = ["tkb-src-", "tkb-fwd-", "tkb-dst-"].iter().find_map(|p| name.strip_prefix(p)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            eprintln!("bench: forward: deleting namespace {name}, left by an earlier run");
            del_netns(&name);
        }
    }
}

/// `sysctl -w KEY=VALUE` in `ns`; a failure panics unless `optional` (IPv6 may be absent).
fn sysctl(ns: &str, kv: &str, optional: bool) {
    let out = Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", kv]).output().expect("run sysctl");
    assert!(optional || out.status.success(), "sysctl {kv} in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
}

/// `ethtool -K DEV FEATURE on|off` in `ns`; whether it worked.
fn ethtool_k(ns: &str, dev: &str, feature: &str, value: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", dev, feature, value])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Line {
    src: String,
    fwd: String,
    dst: String,
    /// GRO on fwd0: frames XDP_TX'ed out of src0 reach it (no XDP program on fwd0).
    fwd0_gro: bool,
    /// The programs' links (closing them detaches), kept for the whole run.
    _napi_src0: Option<OwnedFd>,
    _count_dst0: Option<OwnedFd>,
    /// dst0's program and its counter, and the same program for fwd0 (the floor).
    counter: Counter,
    notes: Vec<String>,
}

impl Line {
    fn new() -> Line {
        install_panic_cleanup();
        sweep();
        let pid = std::process::id();
        let (src, fwd, dst) = (format!("tkb-src-{pid}"), format!("tkb-fwd-{pid}"), format!("tkb-dst-{pid}"));
        for ns in [&src, &fwd, &dst] {
            del_netns(ns);
            LIVE_NAMESPACES.lock().unwrap().push(ns.clone());
            ip(&["netns", "add", ns]);
        }
        // both veths created in fwd, their peers moved straight into src and dst
        for (dev, mac, peer, peer_mac, peer_ns) in
            [(FWD0, MAC_FWD0, SRC0, MAC_SRC0, &src), (FWD1, MAC_FWD1, DST0, MAC_DST0, &dst)]
        {
            ip(&[
                "-n",
                &fwd,
                "link",
                "add",
                dev,
                "address",
                &mac_str(mac),
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "address",
                &mac_str(peer_mac),
                "netns",
                peer_ns,
            ]);
        }
        for ns in [&src, &fwd, &dst] {
            for key in ["all", "default"] {
                sysctl(ns, &format!("net.ipv6.conf.{key}.disable_ipv6=1"), true);
            }
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // after the devices exist: `all` sets every existing device
        sysctl(&fwd, "net.ipv4.conf.all.forwarding=1", false);
        sysctl(&fwd, "net.ipv6.conf.all.forwarding=1", true); // IPv6 is off: only so that tracekit does not warn
        for (ns, dev, me) in [(&src, SRC0, IP_SRC), (&fwd, FWD0, IP_FWD0), (&fwd, FWD1, IP_FWD1), (&dst, DST0, IP_DST)]
        {
            ip(&["-n", ns, "addr", "add", &format!("{}/24", dotted(me)), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        for (ns, dev, peer, mac) in [
            (&src, SRC0, IP_FWD0, MAC_FWD0),
            (&fwd, FWD0, IP_SRC, MAC_SRC0),
            (&fwd, FWD1, IP_DST, MAC_DST0),
            (&dst, DST0, IP_FWD1, MAC_FWD1),
        ] {
            ip(&["-n", ns, "neigh", "replace", &dotted(peer), "lladdr", &mac_str(mac), "dev", dev, "nud", "permanent"]);
        }
        ip(&["-n", &src, "route", "add", "10.201.2.0/24", "via", &dotted(IP_FWD0), "dev", SRC0]);
        ip(&["-n", &dst, "route", "add", "10.201.1.0/24", "via", &dotted(IP_FWD1), "dev", DST0]);
        let mut notes = Vec::new();
        let fwd0_gro = ethtool_k(&fwd, FWD0, "gro", "on");
        if !fwd0_gro {
            notes.push("GRO could not be turned on at fwd0 (ethtool missing, or Linux < 5.13)".to_owned());
        }
        for (ns, dev) in [(&src, SRC0), (&dst, DST0)] {
            if !ethtool_k(ns, dev, "tx", "off") {
                notes.push(format!("tx checksum offload still on at {dev}: TCP through (b) may stall"));
            }
        }
        let counter = Counter::new().expect("load dst0's counting program");
        let napi_src0 = xdp_attach(&src, SRC0, xdp_pass().expect("load XDP_PASS"));
        let count_dst0 = xdp_attach(&dst, DST0, counter.prog.try_clone().unwrap());
        for (what, r) in [("XDP_PASS on src0", &napi_src0), ("the counter on dst0", &count_dst0)] {
            if let Err(e) = r {
                notes.push(format!("{what} not attached: {e}"));
            }
        }
        thread::sleep(Duration::from_millis(200));
        Line { src, fwd, dst, fwd0_gro, _napi_src0: napi_src0.ok(), _count_dst0: count_dst0.ok(), counter, notes }
    }

    /// Packets an interface received (`ip -s -j link`; on a veth, what its NAPI took in).
    fn rx_packets(ns: &str, dev: &str) -> u64 {
        let out = Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", dev]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0)
    }

    /// The kernel's own forwarding counter in fwd (Ip ForwDatagrams).
    fn kernel_forwarded(&self) -> u64 {
        let out = Command::new("ip").args(["netns", "exec", &self.fwd, "cat", "/proc/net/snmp"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut ip_lines = text.lines().filter(|l| l.starts_with("Ip:"));
        let (Some(names), Some(values)) = (ip_lines.next(), ip_lines.next()) else { return 0 };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "ForwDatagrams")
            .map_or(0, |(_, v)| v.parse().unwrap_or(0))
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let mut live = LIVE_NAMESPACES.lock().unwrap();
        for ns in [&self.src, &self.fwd, &self.dst] {
            del_netns(ns);
            live.retain(|n| n != ns);
        }
    }
}

// ---------------------------------------------------------------- small XDP programs

/// `return XDP_PASS`: gives a veth NAPI, so that frames XDP redirects into its peer arrive.
fn xdp_pass() -> std::io::Result<OwnedFd> {
    load_xdp(c"tkb_xdp_pass", &[insn(0xb7, 0, 0, 0, 2), insn(0x95, 0, 0, 0, 0)])
}

/// An XDP program that counts IPv4 UDP frames to UDP_PORT in a per-CPU array and drops them;
/// everything else passes.
struct Counter {
    map: OwnedFd,
    prog: OwnedFd,
}

impl Counter {
    fn new() -> std::io::Result<Counter> {
        // SAFETY: a NUL-terminated name; no options.
        let map = unsafe {
            sys::bpf_map_create(sys::BPF_MAP_TYPE_PERCPU_ARRAY, c"tkb_fwd_count".as_ptr(), 4, 8, 1, std::ptr::null())
        };
        if map < 0 {
            return Err(std::io::Error::from_raw_os_error(-map));
        }
        // SAFETY: a fresh map fd that nothing else owns.
        let map = unsafe { OwnedFd::from_raw_fd(map) };
        let port_be = i32::from(UDP_PORT.swap_bytes()); // a 16-bit load of the port, as read on x86
        let mut p = vec![
            insn(0x61, 2, 1, 0, 0),               // r2 = ctx->data
            insn(0x61, 3, 1, 4, 0),               // r3 = ctx->data_end
            insn(0xbf, 4, 2, 0, 0),               // r4 = r2
            insn(0x07, 4, 0, 0, 38),              // r4 += 38 (Ethernet + IPv4 without options + UDP ports)
            insn(0x2d, 4, 3, 0, 0),               // if r4 > r3 goto pass          [4]
            insn(0x69, 4, 2, 12, 0),              // r4 = ethertype
            insn(0x55, 4, 0, 0, 8),               // if r4 != htons(0x0800) goto pass  [6]
            insn(0x71, 4, 2, 14, 0),              // r4 = version/IHL
            insn(0x55, 4, 0, 0, 0x45),            // if r4 != 0x45 goto pass       [8]
            insn(0x71, 4, 2, 23, 0),              // r4 = protocol
            insn(0x55, 4, 0, 0, 17),              // if r4 != UDP goto pass          [10]
            insn(0x69, 4, 2, 36, 0),              // r4 = destination port
            insn(0x55, 4, 0, 0, port_be),         // if r4 != port goto pass   [12]
            insn(0x62, 10, 0, -4, 0),             // *(u32 *)(r10 - 4) = 0
            insn(0xbf, 2, 10, 0, 0),              // r2 = r10
            insn(0x07, 2, 0, 0, -4),              // r2 += -4
            insn(0x18, 1, 1, 0, map.as_raw_fd()), // r1 = map (BPF_PSEUDO_MAP_FD)
            0,
            insn(0x85, 0, 0, 0, 1), // call bpf_map_lookup_elem
            insn(0x15, 0, 0, 3, 0), // if r0 == 0 goto +3
            insn(0x79, 1, 0, 0, 0), // r1 = *(u64 *)r0
            insn(0x07, 1, 0, 0, 1), // r1 += 1
            insn(0x7b, 0, 1, 0, 0), // *(u64 *)r0 = r1
            insn(0xb7, 0, 0, 0, 1), // r0 = XDP_DROP
            insn(0x95, 0, 0, 0, 0), // exit
        ];
        let pass = p.len();
        p.push(insn(0xb7, 0, 0, 0, 2)); // pass: r0 = XDP_PASS
        p.push(insn(0x95, 0, 0, 0, 0));
        for at in [4usize, 6, 8, 10, 12] {
            p[at] |= u64::from((pass - at - 1) as u16) << 16;
        }
        let prog = load_xdp(c"tkb_fwd_count", &p)?;
        Ok(Counter { map, prog })
    }

    /// Frames counted so far, all CPUs.
    fn read(&self) -> u64 {
        // SAFETY: no preconditions.
        let ncpus = unsafe { sys::libbpf_num_possible_cpus() }.max(1) as usize;
        let mut values = vec![0u64; ncpus];
        let key = 0u32;
        // SAFETY: a per-CPU array of 8-byte values: the buffer holds one per possible CPU.
        let rc = unsafe {
            sys::bpf_map_lookup_elem(self.map.as_raw_fd(), (&key as *const u32).cast(), values.as_mut_ptr().cast())
        };
        if rc < 0 { 0 } else { values.iter().sum() }
    }
}

/// Attaches `prog` to `dev` in `ns` in driver mode as an XDP link (gone with the fd).
fn xdp_attach(ns: &str, dev: &str, prog: OwnedFd) -> std::io::Result<OwnedFd> {
    let dev = std::ffi::CString::new(dev).unwrap();
    Pair::in_ns(ns, move || {
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: bpf_link_create_opts is plain data; zeroed plus its size is the default.
        let mut opts: sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
        opts.sz = size_of::<sys::bpf_link_create_opts>() as _;
        opts.flags = sys::XDP_FLAGS_DRV_MODE;
        // SAFETY: valid fds and options that outlive the call.
        let fd = unsafe { sys::bpf_link_create(prog.as_raw_fd(), ifindex as i32, sys::BPF_XDP, &opts) };
        if fd < 0 {
            return Err(std::io::Error::from_raw_os_error(-fd));
        }
        // SAFETY: a fresh link fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .join()
    .unwrap()
}

// ---------------------------------------------------------------- the sender

/// 60 bytes: src0 → fwd0's MAC, IPv4 10.201.1.1 → 10.201.2.1, TTL 64, UDP 40000 → UDP_PORT,
/// 18 bytes of payload, a valid IPv4 header checksum and no UDP checksum.
fn udp_frame() -> Vec<u8> {
    crate::net::udp_frame_v4(MAC_FWD0, MAC_SRC0, IP_SRC, IP_DST, UDP_PORT)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sender {
    Live,
    Sendmmsg,
}

impl Sender {
    fn describe(self) -> &'static str {
        match self {
            Sender::Live => "XDP live frames (BPF_PROG_RUN, XDP_TX out of src0), one thread",
            Sender::Sendmmsg => "one sendmmsg thread (UDP socket in src)",
        }
    }
}

/// What one unpaced send cost the pinned core.
#[derive(Default, Clone, Copy)]
struct Sent {
    frames: u64,
    secs: f64,
    /// The sender thread's CPU time (with the softirqs it ran).
    thread_cpu_s: f64,
}

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; affinity of this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Sends for `secs` as fast as it can from one thread in `ns` pinned to `cpu`.
fn send(sender: Sender, ns: &str, cpu: usize, secs: f64) -> std::io::Result<Sent> {
    Pair::in_ns(ns, move || {
        pin_to(cpu);
        match sender {
            Sender::Live => send_live(secs),
            Sender::Sendmmsg => send_mmsg(secs),
        }
    })
    .join()
    .unwrap()
}

/// The sender's XDP program: writes the frame's Ethernet header and the IPv4 header up to its
/// checksum, then `XDP_TX`. Live frames recycle their pages without copying `data_in` again,
/// and every forwarder rewrites the MACs and the TTL in place: without the rewrite, a page's
/// second frame would carry dst0's MAC (the kernel drops it as not for this host) and one hop
/// less of TTL each time round (XDP forwards it until the TTL runs out).
fn load_sender(frame: &[u8]) -> std::io::Result<OwnedFd> {
    const N: usize = 26;
    let mut p = vec![
        insn(0x61, 2, 1, 0, 0),        // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),        // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),        // r4 = r2
        insn(0x07, 4, 0, 0, N as i32), // r4 += 26
        insn(0x2d, 4, 3, 0, 0),        // if r4 > r3 goto abort    [4]
    ];
    for at in (0..24).step_by(4) {
        let v = u32::from_le_bytes(frame[at..at + 4].try_into().unwrap());
        p.push(insn(0x62, 2, 0, at as i16, v as i32)); // *(u32 *)(r2 + at) = v
    }
    let v = u16::from_le_bytes(frame[24..N].try_into().unwrap());
    p.push(insn(0x6a, 2, 0, 24, i32::from(v))); // *(u16 *)(r2 + 24) = v
    p.push(insn(0xb7, 0, 0, 0, 3)); // r0 = XDP_TX
    p.push(insn(0x95, 0, 0, 0, 0));
    let abort = p.len();
    p.push(insn(0xb7, 0, 0, 0, 0)); // abort: r0 = XDP_ABORTED
    p.push(insn(0x95, 0, 0, 0, 0));
    p[4] |= u64::from((abort - 5) as u16) << 16;
    load_xdp(c"tkb_fwd_sender", &p)
}

/// BPF_PROG_RUN live frames: XDP_TX becomes a redirect out of src0, into fwd0. Each call costs
/// some ms of setup and teardown (idle: an RCU grace period), so calls are sized to about 250 ms of
/// frames.
fn send_live(secs: f64) -> std::io::Result<Sent> {
    let ifindex = crate::net::ifindex(SRC0);
    let frame = udp_frame();
    let prog = load_sender(&frame)?;
    let mut chunk: u64 = 16_384;
    let cpu0 = thread_cpu_s();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        run_live_frames(&prog, &frame, ifindex, chunk)?;
        sent += chunk;
        let rate = chunk as f64 / t.elapsed().as_secs_f64().max(1e-6);
        let left = (secs - start.elapsed().as_secs_f64()).max(0.0);
        chunk = ((rate * left.min(0.25)) as u64).clamp(4096, 1 << 23);
    }
    Ok(Sent { frames: sent, secs: start.elapsed().as_secs_f64(), thread_cpu_s: thread_cpu_s() - cpu0 })
}

fn send_mmsg(secs: f64) -> std::io::Result<Sent> {
    let sock = UdpSocket::bind((Ipv4Addr::from(IP_SRC), 0))?;
    sock.connect((Ipv4Addr::from(IP_DST), UDP_PORT))?;
    const BATCH: usize = 64;
    let payload = [0x5au8; 18];
    let mut iov = [libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() }];
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for m in &mut msgs {
        m.msg_hdr.msg_iov = iov.as_mut_ptr();
        m.msg_hdr.msg_iovlen = 1;
    }
    let cpu0 = thread_cpu_s();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        // SAFETY: msgs point at iov and payload, which outlive the call.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    Ok(Sent { frames: sent, secs: start.elapsed().as_secs_f64(), thread_cpu_s: thread_cpu_s() - cpu0 })
}

/// Picks the sender: live frames when the kernel has them and fwd0 can receive them.
fn pick_sender(line: &Line, cpu: usize) -> (Sender, Option<String>) {
    if !line.fwd0_gro {
        return (Sender::Sendmmsg, Some("live frames need NAPI on fwd0 (GRO): sending with sendmmsg".into()));
    }
    match send(Sender::Live, &line.src, cpu, 1e-4) {
        Ok(_) => (Sender::Live, None),
        Err(e) => (Sender::Sendmmsg, Some(format!("XDP live frames unavailable ({e}): sending with sendmmsg"))),
    }
}

// ---------------------------------------------------------------- CPU accounting

/// ksoftirqd/CPU's pid.
fn ksoftirqd(cpu: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{cpu}");
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        (fs::read_to_string(e.path().join("comm")).ok()?.trim() == want).then_some(pid)
    })
}

/// A task's CPU time in seconds (schedstat: sum_exec_runtime in ns; else utime + stime).
fn task_cpu_s(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(|| crate::proc_cpu_secs(pid), |ns| ns * 1e-9)
}

/// One CPU's /proc/stat line: (busy, system, softirq) in seconds.
fn cpu_stat(cpu: usize) -> (f64, f64, f64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let tag = format!("cpu{cpu}");
    let Some(line) = stat.lines().find(|l| l.split_whitespace().next() == Some(&tag)) else { return (0.0, 0.0, 0.0) };
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let g = |i: usize| f.get(i).copied().unwrap_or(0.0) / hz;
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait
    let busy = (0..f.len().min(8)).filter(|i| *i != 3 && *i != 4).map(g).sum();
    (busy, g(2), g(6))
}

// ---------------------------------------------------------------- tracekit forward

struct Forwarder {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Forwarder {
    /// Starts `tracekit forward [--tc] fwd0 fwd1 --netns FWD -j -v` and waits until attached.
    fn start(tc: bool, fwd_ns: &str) -> Result<Forwarder, String> {
        let mut c = Command::new(crate::tracekit());
        c.arg("forward");
        if tc {
            c.arg("--tc");
        } else {
            c.args(["--mode", "native"]);
        }
        c.args([FWD0, FWD1, "--netns", fwd_ns, "-j", "-v"]);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.process_group(0);
        crate::cgroup::die_with_parent(&mut c, libc::SIGTERM);
        let mut child = c.spawn().map_err(|e| format!("spawn tracekit: {e}"))?;
        let stderr = crate::lines_of(child.stderr.take().unwrap());
        let mut f = Forwarder { child, stderr, seen: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match f.stderr.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => {
                    let ready = l.contains("attached after");
                    f.seen.push(l);
                    if ready {
                        thread::sleep(Duration::from_millis(100));
                        return Ok(f);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let said = f.seen.join(" / ");
        crate::stop_child(&mut f.child);
        Err(format!("tracekit did not attach: {said}"))
    }

    /// Stops it: its `fwd_counts` objects and what it said on stderr.
    fn finish(mut self) -> (Vec<serde_json::Value>, Vec<String>) {
        crate::stop_child(&mut self.child);
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        self.seen.extend(self.stderr.try_iter());
        let counts = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "fwd_counts")
            .collect();
        (counts, self.seen)
    }
}

// ---------------------------------------------------------------- TCP round trips

/// `n` request/response round trips over one TCP connection src → dst: µs each. Client and
/// server run on `cpu`, the sender's: across CPUs, each round trip would wait twice for an idle
/// vCPU to wake up (tens of µs in a VM, more than the whole path), and measure that.
fn tcp_rtts(src: &str, dst: &str, cpu: usize, n: usize) -> Result<Vec<f64>, String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = Pair::in_ns(dst, move || -> Result<(), String> {
        pin_to(cpu);
        let l = TcpListener::bind((Ipv4Addr::from(IP_DST), TCP_PORT)).map_err(|e| format!("listen in dst: {e}"))?;
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(format!("no connection reached dst: {e}")),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; RR_BYTES];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
        Ok(())
    });
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        return Err(server.join().unwrap().err().unwrap_or_else(|| "the server did not start".into()));
    }
    let client = Pair::in_ns(src, move || -> Result<Vec<f64>, String> {
        pin_to(cpu);
        let to = SocketAddr::from((IP_DST, TCP_PORT));
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let req = [0x5au8; RR_BYTES];
        let mut resp = [0u8; RR_BYTES];
        let mut rtts = Vec::with_capacity(n);
        for i in 0..n + 20 {
            let t = Instant::now();
            s.write_all(&req).and_then(|_| s.read_exact(&mut resp)).map_err(|e| format!("round trip {i}: {e}"))?;
            if i >= 20 {
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(rtts)
    });
    let rtts = client.join().unwrap();
    let served = server.join().unwrap();
    let rtts = rtts?;
    served?;
    Ok(rtts)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[((v.len() - 1) as f64 * p).round() as usize] }
}

// ---------------------------------------------------------------- the cases

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Floor,
    Kernel,
    Xdp,
    Tc,
}

const CASES: [Case; 4] = [Case::Floor, Case::Kernel, Case::Xdp, Case::Tc];

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Floor => "floor",
            Case::Kernel => "(a)",
            Case::Xdp => "(b)",
            Case::Tc => "(c)",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Case::Floor => "sender only: frames counted and dropped by XDP on fwd0",
            Case::Kernel => "the kernel's forwarding (no program in fwd)",
            Case::Xdp => "`tracekit forward fwd0 fwd1 --mode native` (XDP)",
            Case::Tc => "`tracekit forward --tc fwd0 fwd1` (TC ingress)",
        }
    }
}

/// One case in one round.
#[derive(Default)]
struct Run {
    sent: Sent,
    /// Frames that reached fwd0 (its rx counter) and dst0's program (or fwd0's, for the floor).
    at_fwd0: u64,
    arrived: u64,
    /// The pinned core's CPU time: the sender thread + its ksoftirqd.
    core_cpu_s: f64,
    ksoftirqd_s: f64,
    /// /proc/stat of the pinned CPU over the send: busy, system, softirq.
    stat: (f64, f64, f64),
    kernel_forwarded: u64,
    tracekit_forwarded: Option<u64>,
    rtts: Vec<f64>,
    rtt_error: Option<String>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.arrived as f64 / self.sent.secs
    }
    fn cpu_per_packet_ns(&self) -> f64 {
        self.core_cpu_s / self.arrived.max(1) as f64 * 1e9
    }
}

fn run_case(line: &Line, case: Case, sender: Sender, cpu: usize, secs: f64, n_rtt: usize) -> Result<Run, String> {
    let floor_link = match case {
        Case::Floor => Some(
            xdp_attach(&line.fwd, FWD0, line.counter.prog.try_clone().unwrap())
                .map_err(|e| format!("counter on fwd0: {e}"))?,
        ),
        _ => None,
    };
    let fwd = match case {
        Case::Xdp => Some(Forwarder::start(false, &line.fwd)?),
        Case::Tc => Some(Forwarder::start(true, &line.fwd)?),
        _ => None,
    };
    let ksoft = ksoftirqd(cpu);
    let (c0, k0, s0, f0) = (line.counter.read(), task_cpu_s(ksoft), cpu_stat(cpu), line.kernel_forwarded());
    let fwd0_rx0 = Line::rx_packets(&line.fwd, FWD0);
    let sent = send(sender, &line.src, cpu, secs).map_err(|e| format!("send: {e}"));
    thread::sleep(Duration::from_millis(50)); // the last frames in the rings
    let (c1, k1, s1, f1) = (line.counter.read(), task_cpu_s(ksoft), cpu_stat(cpu), line.kernel_forwarded());
    let fwd0_rx1 = Line::rx_packets(&line.fwd, FWD0);
    drop(floor_link);
    let mut run = Run {
        at_fwd0: fwd0_rx1.saturating_sub(fwd0_rx0),
        arrived: c1 - c0,
        ksoftirqd_s: k1 - k0,
        stat: (s1.0 - s0.0, s1.1 - s0.1, s1.2 - s0.2),
        kernel_forwarded: f1 - f0,
        ..Run::default()
    };
    match sent {
        Ok(s) => run.sent = s,
        Err(e) => {
            if let Some(f) = fwd {
                f.finish();
            }
            return Err(e);
        }
    }
    run.core_cpu_s = run.sent.thread_cpu_s + run.ksoftirqd_s;
    if case != Case::Floor {
        thread::sleep(Duration::from_millis(50));
        match tcp_rtts(&line.src, &line.dst, cpu, n_rtt) {
            Ok(r) => run.rtts = r,
            Err(e) => run.rtt_error = Some(e),
        }
    }
    if let Some(f) = fwd {
        let (counts, said) = f.finish();
        let forwarded: u64 = counts.iter().filter_map(|c| c["forwarded"].as_u64()).sum();
        run.tracekit_forwarded = Some(forwarded);
        for l in said.iter().filter(|l| l.contains("warning") || l.contains("dropped") || l.contains("error")) {
            eprintln!("bench: forward / {}: tracekit said: {l}", case.label());
        }
    }
    Ok(run)
}

/// The table (markdown) and raw rows.
pub fn run(smoke: bool, results: &mut Vec<serde_json::Value>) -> String {
    let (rounds, secs, n_rtt) = if smoke { (1, 0.3, 100) } else { (3, 1.0, 700) };
    let line = Line::new();
    let cpu = thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let (sender, why) = pick_sender(&line, cpu);
    let mut notes = line.notes.clone();
    notes.extend(why);
    for n in &notes {
        eprintln!("bench: forward: {n}");
    }
    eprintln!(
        "bench: forward (src → fwd → dst over veth, {}, pinned to CPU {cpu}; {rounds} rounds × {secs} s per case, \
         {n_rtt} TCP round trips per case and round)",
        sender.describe()
    );
    let mut runs: Vec<Vec<Run>> = CASES.iter().map(|_| Vec::new()).collect();
    let mut failed: Vec<Option<String>> = vec![None; CASES.len()];
    for round in 0..rounds {
        for k in 0..CASES.len() {
            let i = (k + round) % CASES.len();
            let case = CASES[i];
            if failed[i].is_some() {
                continue;
            }
            match run_case(&line, case, sender, cpu, secs, n_rtt) {
                Ok(r) => {
                    eprintln!(
                        "bench: forward / {} / {}: {:.0} k/s at dst ({} of {} sent, {} reached fwd0), {:.0} ns CPU per packet \
                         on CPU {cpu} (ksoftirqd {:.2} s; /proc/stat busy {:.2} s, softirq {:.2} s), kernel forwarded {}, \
                         tracekit {:?}{}",
                        case.label(),
                        case.name(),
                        r.rate() / 1e3,
                        r.arrived,
                        r.sent.frames,
                        r.at_fwd0,
                        r.cpu_per_packet_ns(),
                        r.ksoftirqd_s,
                        r.stat.0,
                        r.stat.2,
                        r.kernel_forwarded,
                        r.tracekit_forwarded,
                        match (&r.rtt_error, r.rtts.is_empty()) {
                            (Some(e), _) => format!(", TCP: {e}"),
                            (None, false) => format!(", TCP round trip mean {:.1} µs", mean(&r.rtts)),
                            (None, true) => String::new(),
                        },
                    );
                    results.push(serde_json::json!({
                        "scenario": "forward", "case": case.label(), "forwarder": case.name(), "round": round,
                        "sender": sender.describe(), "cpu": cpu, "secs": r.sent.secs, "sent": r.sent.frames,
                        "reached_fwd0": r.at_fwd0, "arrived": r.arrived, "rate": r.rate(),
                        "sender_thread_cpu_s": r.sent.thread_cpu_s, "ksoftirqd_cpu_s": r.ksoftirqd_s,
                        "core_cpu_s": r.core_cpu_s, "cpu_per_packet_ns": r.cpu_per_packet_ns(),
                        "proc_stat_busy_s": r.stat.0, "proc_stat_system_s": r.stat.1, "proc_stat_softirq_s": r.stat.2,
                        "kernel_forwarded": r.kernel_forwarded, "tracekit_forwarded": r.tracekit_forwarded,
                        "rtt_n": r.rtts.len(), "rtt_mean_us": mean(&r.rtts),
                        "rtt_p50_us": percentile(&r.rtts, 0.5), "rtt_p99_us": percentile(&r.rtts, 0.99), "rtt_error": r.rtt_error,
                    }));
                    runs[i].push(r);
                }
                Err(e) => {
                    eprintln!("bench: forward / {}: {e}", case.label());
                    failed[i] = Some(e);
                }
            }
        }
    }
    table(&runs, &failed, sender, cpu, rounds, secs, &notes)
}

fn table(
    runs: &[Vec<Run>],
    failed: &[Option<String>],
    sender: Sender,
    cpu: usize,
    rounds: usize,
    secs: f64,
    notes: &[String],
) -> String {
    let med = |i: usize, f: &dyn Fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
    let k = CASES.iter().position(|&c| c == Case::Kernel).unwrap();
    let (base_rate, base_ns) = (med(k, &|r| r.rate()), med(k, &|r| r.cpu_per_packet_ns()));
    let floor_ns = med(0, &|r| r.cpu_per_packet_ns());
    let mut t = format!(
        "\n| forwarding src → fwd → dst (veth, 60-byte UDP; sender: {}; whole path on CPU {cpu}; median of {rounds} × {secs} s) \
         | forwarder | packets/s at dst | ÷ (a) | CPU per packet (the pinned core) | packets per core-second | ÷ (a) | \
         minus the floor's CPU: per packet, ÷ (a) | TCP round trip mean / median / p99 (round trips) | sent / reached fwd0 / at dst (all rounds) | \
         forwarded by the kernel / by tracekit (all rounds) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        sender.describe()
    );
    for (i, case) in CASES.into_iter().enumerate() {
        if let Some(e) = &failed[i] {
            t.push_str(&format!(
                "| {} | {} | failed: {} | | | | | | | | |\n",
                case.label(),
                case.name(),
                e.replace('|', "/")
            ));
            continue;
        }
        let rate = med(i, &|r| r.rate());
        let ns = med(i, &|r| r.cpu_per_packet_ns());
        let ratio = |x: f64, base: f64| {
            if case == Case::Floor || case == Case::Kernel { "–".to_owned() } else { format!("{:.2}", x / base) }
        };
        let net = match case {
            Case::Floor => "–".to_owned(),
            Case::Kernel => format!("{:.0} ns", ns - floor_ns),
            _ => format!("{:.0} ns, {:.2}", ns - floor_ns, (base_ns - floor_ns) / (ns - floor_ns)),
        };
        let all: Vec<f64> = runs[i].iter().flat_map(|r| r.rtts.iter().copied()).collect();
        let rtt = match (case, all.is_empty()) {
            (Case::Floor, _) => "–".to_owned(),
            (_, true) => format!(
                "failed: {}",
                runs[i].iter().find_map(|r| r.rtt_error.clone()).unwrap_or_default().replace('|', "/")
            ),
            _ => format!(
                "{:.1} / {:.1} / {:.1} µs ({}){}",
                mean(&all),
                percentile(&all, 0.5),
                percentile(&all, 0.99),
                all.len(),
                if runs[i].iter().any(|r| r.rtt_error.is_some()) { ", some failed" } else { "" }
            ),
        };
        let sum = |f: &dyn Fn(&Run) -> u64| runs[i].iter().map(f).sum::<u64>();
        let by = match case {
            Case::Floor => "–".to_owned(),
            Case::Kernel => format!("{} / –", sum(&|r| r.kernel_forwarded)),
            _ => format!("{} / {}", sum(&|r| r.kernel_forwarded), sum(&|r| r.tracekit_forwarded.unwrap_or(0))),
        };
        t.push_str(&format!(
            "| {} | {} | {:.0} k/s{} | {} | {:.0} ns | {:.2} M | {} | {net} | {rtt} | {} / {} / {} | {by} |\n",
            case.label(),
            case.name(),
            rate / 1e3,
            if case == Case::Floor { " (at fwd0)" } else { "" },
            ratio(rate, base_rate),
            ns,
            1e3 / ns,
            ratio(base_ns, ns),
            sum(&|r| r.sent.frames),
            sum(&|r| r.at_fwd0),
            sum(&|r| r.arrived),
        ));
    }
    for n in notes {
        t.push_str(&format!("\nNote: {n}\n"));
    }
    t
}
