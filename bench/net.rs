//! The packet tools' rows: per-packet cost in the kernel (BPF_PROG_RUN, nothing attached) and
//! live capacity on a veth pair between two namespaces of our own, side by side with tcpdump.
//!
//! Traffic only ever flows inside the two namespaces created here (10.201.0.1 ↔ 10.201.0.2,
//! static neighbours, IPv6 off), and they are deleted on drop, also on panic.

use std::fs::{self, File};
use std::mem::MaybeUninit;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use libbpf_rs::libbpf_sys as sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, OpenObject, RingBufferBuilder};
use tracekit::runtime::skel::{Transport, TransportOpen};
use tracekit::tools::net::skels::{self, prog_run};

use crate::median;

// ---------------------------------------------------------------- frames

fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut h = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    h.extend_from_slice(&ethertype.to_be_bytes());
    h
}

/// Ethernet + IPv4 + TCP SYN 10.0.0.1:40000 → 10.0.0.2:443 (checksums are not checked).
fn syn4() -> Vec<u8> {
    let l4 = tcp_syn(40000, 443);
    let mut f = eth(0x0800);
    f.extend_from_slice(&[0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&l4);
    f
}

/// Ethernet + IPv6 + TCP SYN 2001:db8::1 → 2001:db8::2, same ports.
fn syn6() -> Vec<u8> {
    let l4 = tcp_syn(40000, 443);
    let mut f = eth(0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    for last in [1u8, 2] {
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        f.extend_from_slice(&[0; 11]);
        f.push(last);
    }
    f.extend_from_slice(&l4);
    f
}

// ---------------------------------------------------------------- per-packet cost

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "XDP",
            Hook::Tc => "TC",
        }
    }
}

/// The tool's default channel: a 2 MiB ring buffer (512 pages), as `tracekit xdp` opens it.
const RINGBUF_BYTES: u32 = 512 * 4096;

/// One BPF_PROG_RUN of tracekit's program: ns per run, events consumed, events lost.
struct Observed {
    ns: u32,
    consumed: u64,
    lost: u64,
}

/// Loads the packet object with `reject` (a `--port` the frame does not carry) or no filter,
/// runs the hook's program `repeat` times on `frame`, a thread consuming the ring buffer.
fn run_pkt(hook: Hook, frame: &[u8], repeat: u32, reject: bool) -> Observed {
    use skels::pkt::skel::{PktSkelBuilder, types};
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let mut open = PktSkelBuilder::default().open(&mut storage).expect("open the packet skeleton");
    open.configure_transport(Transport::RingBuf { bytes: RINGBUF_BYTES }).expect("configure transport");
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata");
    let mut f = types::tk_pkt_filter::default();
    if reject {
        f.ports[0] = 9;
        f.nports = 1;
    }
    ro.tk_pkt_filter = f;
    let skel = open.load().expect("load the packet object (verifier)");
    let events = MapHandle::try_from(&skel.maps.tk_events).expect("ring buffer fd");
    let stop = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel();
    let consumer = {
        let (stop, consumed) = (stop.clone(), consumed.clone());
        thread::spawn(move || {
            let mut b = RingBufferBuilder::new();
            b.add(&events, |_: &[u8]| {
                consumed.fetch_add(1, Ordering::Relaxed);
                0
            })
            .expect("ring buffer callback");
            let rb = b.build().expect("ring buffer");
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let _ = rb.poll(Duration::from_millis(20));
            }
            let _ = rb.consume();
        })
    };
    ready_rx.recv().unwrap();
    let prog = match hook {
        Hook::Xdp => &skel.progs.xdp__observe,
        Hook::Tc => &skel.progs.tc__ingress,
    };
    let (_, ns) = prog_run(prog, frame, repeat).expect("BPF_PROG_RUN");
    thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    consumer.join().unwrap();
    let key = 0u32.to_ne_bytes();
    let lost = skel
        .maps
        .tk_drops
        .lookup_percpu(&key, MapFlags::ANY)
        .ok()
        .flatten()
        .map_or(0, |v| v.iter().map(|b| u64::from_ne_bytes(b[..8].try_into().unwrap())).sum());
    Observed { ns, consumed: consumed.load(Ordering::Relaxed), lost }
}

/// The filter under test in `net-filter`: the tool's own short options (`--proto udp --port 9`,
/// hand-written C in pkt.bpf.h) or the same test as a tcpdump expression (`udp port 9`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FilterKind {
    Options,
    Expression,
}

/// BPF_PROG_RUN of the XDP program with one of the two filters, on a frame it rejects: ns.
fn run_filter(kind: FilterKind, frame: &[u8], repeat: u32) -> u32 {
    use skels::pkt::skel::{PktSkelBuilder, types};
    use tracekit::runtime::pcap;
    let classic = (kind == FilterKind::Expression)
        .then(|| pcap::compile("udp port 9", pcap::LINKTYPE_ETHERNET).expect("libpcap compiles `udp port 9`"));
    if classic.is_some() {
        pcap::inject::register().expect("register the filter injection");
    }
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let mut open = PktSkelBuilder::default().open(&mut storage).expect("open the packet skeleton");
    open.configure_transport(Transport::RingBuf { bytes: RINGBUF_BYTES }).expect("configure transport");
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata");
    let mut f = types::tk_pkt_filter::default();
    match kind {
        FilterKind::Options => {
            f.proto = 17;
            f.ports[0] = 9;
            f.nports = 1;
        }
        FilterKind::Expression => f.pcap = 1,
    }
    ro.tk_pkt_filter = f;
    tracekit::tools::net::load_only(&mut open, tracekit::tools::net::packet::Columns::Xdp);
    if let Some(classic) = classic {
        pcap::inject::arm(open.open_object(), classic).expect("arm the filter");
    }
    let skel = open.load().expect("load the packet object (verifier)");
    assert!(pcap::inject::disarm().is_none(), "the filter went in");
    prog_run(&skel.progs.xdp__observe, frame, repeat).expect("BPF_PROG_RUN").1
}

/// The filter-cost table: the same test written as options and as an expression.
pub fn filter_cost(smoke: bool, results: &mut Vec<serde_json::Value>) -> String {
    let repeat: u32 = if smoke { 10_000 } else { 1_000_000 };
    let reps = if smoke { 1 } else { 5 };
    eprintln!("bench: net-filter (BPF_PROG_RUN on XDP, repeat {repeat}, {reps} repetitions, median)");
    let mut t = format!(
        "\n| filter cost (XDP, BPF_PROG_RUN × {repeat}, frame rejected) | frame | floor (empty program) | `--proto udp --port 9` (C) | `udp port 9` (tcpdump expression) | expression / options |\n|---|---|---|---|---|---|\n"
    );
    for (fname, frame) in [("TCP SYN / IPv4", syn4()), ("UDP port 53 / IPv4", udp53())] {
        let (mut fl, mut op, mut ex) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            fl.push(f64::from(run_floor(Hook::Xdp, &frame, repeat)));
            op.push(f64::from(run_filter(FilterKind::Options, &frame, repeat)));
            ex.push(f64::from(run_filter(FilterKind::Expression, &frame, repeat)));
        }
        let (f, o, e) = (median(fl), median(op), median(ex));
        results.push(serde_json::json!({
            "scenario": "net-filter", "frame": fname, "repeat": repeat, "floor_ns": f, "options_ns": o, "expression_ns": e,
        }));
        t.push_str(&format!("| XDP | {fname} | {f:.0} ns | {o:.0} ns | {e:.0} ns | {:.2} |\n", e / o.max(1.0)));
        eprintln!("bench: net-filter / {fname}: floor {f} ns, options {o} ns, expression {e} ns");
    }
    t
}

/// Ethernet, IPv4, UDP 40000 → 53: rejected by `udp port 9` after the port test.
fn udp53() -> Vec<u8> {
    let mut f = syn4();
    f[14 + 9] = 17;
    f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&53u16.to_be_bytes());
    f
}

fn run_floor(hook: Hook, frame: &[u8], repeat: u32) -> u32 {
    use skels::floor::skel::FloorSkelBuilder;
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let skel = FloorSkelBuilder::default().open(&mut storage).expect("open floor").load().expect("load floor");
    let prog = match hook {
        Hook::Xdp => &skel.progs.xdp__floor,
        Hook::Tc => &skel.progs.tc__floor,
    };
    prog_run(prog, frame, repeat).expect("BPF_PROG_RUN").1
}

/// The per-packet cost table (markdown) and raw rows.
pub fn cost(smoke: bool, results: &mut Vec<serde_json::Value>) -> String {
    let repeat: u32 = if smoke { 10_000 } else { 1_000_000 };
    let reps = if smoke { 1 } else { 5 };
    eprintln!("bench: net-cost (BPF_PROG_RUN, repeat {repeat}, {reps} repetitions, median)");
    let mut t = format!(
        "\n| per-packet cost (BPF_PROG_RUN × {repeat}) | frame | floor (empty program) | tracekit, filter rejects | tracekit, observed | rejected / floor | observed / floor | events consumed / lost |\n|---|---|---|---|---|---|---|---|\n"
    );
    for hook in [Hook::Xdp, Hook::Tc] {
        for (fname, frame) in [("TCP SYN / IPv4", syn4()), ("TCP SYN / IPv6", syn6())] {
            let (mut fl, mut rj, mut ob) = (Vec::new(), Vec::new(), Vec::new());
            let (mut consumed, mut lost) = (0, 0);
            for _ in 0..reps {
                // side by side: the three programs one after another in each repetition
                fl.push(f64::from(run_floor(hook, &frame, repeat)));
                rj.push(f64::from(run_pkt(hook, &frame, repeat, true).ns));
                let o = run_pkt(hook, &frame, repeat, false);
                ob.push(f64::from(o.ns));
                consumed += o.consumed;
                lost += o.lost;
            }
            let (f, r, o) = (median(fl), median(rj), median(ob));
            results.push(serde_json::json!({
                "scenario": "net-cost", "hook": hook.name(), "frame": fname, "repeat": repeat,
                "floor_ns": f, "rejected_ns": r, "observed_ns": o, "consumed": consumed, "lost": lost,
            }));
            t.push_str(&format!(
                "| {} | {fname} | {f:.0} ns | {r:.0} ns | {o:.0} ns | {:.2} | {:.2} | {consumed} / {lost} |\n",
                hook.name(),
                r / f.max(1.0),
                o / f.max(1.0),
            ));
            eprintln!(
                "bench: net-cost / {} / {fname}: floor {f} ns, rejected {r} ns, observed {o} ns (lost {lost})",
                hook.name()
            );
        }
    }
    t
}

// ---------------------------------------------------------------- namespaces and veth

const IF_A: &str = "tkb0";
const IF_B: &str = "tkb1";
const IP_A: &str = "10.201.0.1";
const IP_B: &str = "10.201.0.2";
const PORT: u16 = 9401;

pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run `ip` (iproute2)");
    assert!(out.status.success(), "`ip {}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

/// Two namespaces `tkb-{a,b}-PID` joined by `tkb0` ↔ `tkb1`; deleted on drop.
pub(crate) struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new() -> Pair {
        let pid = std::process::id();
        let (a, b) = (format!("tkb-a-{pid}"), format!("tkb-b-{pid}"));
        for ns in [&a, &b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        ip(&["netns", "add", &a]);
        let pair = Pair { a, b };
        ip(&["netns", "add", &pair.b]);
        let (ma, mb) = ("02:00:0a:c9:00:01", "02:00:0a:c9:00:02");
        ip(&[
            "-n", &pair.a, "link", "add", IF_A, "address", ma, "type", "veth", "peer", "name", IF_B, "address", mb,
            "netns", &pair.b,
        ]);
        for (ns, dev, me, peer, peer_mac) in [(&pair.a, IF_A, IP_A, IP_B, mb), (&pair.b, IF_B, IP_B, IP_A, ma)] {
            for key in ["all", "default", dev] {
                let _ = Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw", &format!("net.ipv6.conf.{key}.disable_ipv6=1")])
                    .output();
            }
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{me}/24"), "dev", dev]);
            ip(&["-n", ns, "neigh", "add", peer, "lladdr", peer_mac, "dev", dev, "nud", "permanent"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // frames sent with XDP_TX into a veth need NAPI on the receiving end (NET.md)
        let _ = Command::new("ip").args(["netns", "exec", &pair.b, "ethtool", "-K", IF_B, "gro", "on"]).output();
        thread::sleep(Duration::from_millis(200));
        pair
    }

    /// Runs `f` on a thread inside namespace `ns`.
    pub(crate) fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
        let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
        thread::spawn(move || {
            // SAFETY: setns reads the fd only; CLONE_NEWNET moves this thread alone.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            drop(file);
            f()
        })
    }

    /// rx packets of `tkb1` (namespace b).
    fn rx_b(&self) -> u64 {
        let out = Command::new("ip").args(["-n", &self.b, "-s", "-j", "link", "show", IF_B]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Sends UDP datagrams a → b at `rate` per second for `secs` from one thread, in sendmmsg
/// batches of 32, paced per batch. Returns (datagrams sent, seconds taken).
fn send_udp(ns: &str, rate: f64, secs: f64) -> (u64, f64) {
    Pair::in_ns(ns, move || {
        let sock = UdpSocket::bind((IP_A, 0)).expect("bind in netns a");
        sock.connect((IP_B, PORT)).expect("connect");
        const BATCH: usize = 32;
        let payload = [0x5au8; 18];
        let mut iov = [libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() }];
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for m in &mut msgs {
            m.msg_hdr.msg_iov = iov.as_mut_ptr();
            m.msg_hdr.msg_iovlen = 1;
        }
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            // SAFETY: msgs point at iov and payload, which outlive the call.
            let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
            }
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
        (sent, start.elapsed().as_secs_f64())
    })
    .join()
    .unwrap()
}

/// IPv4 header checksum (RFC 1071).
pub(crate) fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// 60 bytes: Ethernet `src_mac` → `dst_mac`, IPv4 `src` → `dst` with TTL 64, UDP 40000 →
/// `dport` with 18 bytes of payload, a valid IPv4 header checksum (the stack checks it) and no
/// UDP checksum.
pub(crate) fn udp_frame_v4(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut iph = vec![0x45, 0, 0, 46, 0, 1, 0x40, 0, 64, 17, 0, 0];
    iph.extend_from_slice(&src);
    iph.extend_from_slice(&dst);
    let c = ip_checksum(&iph).to_be_bytes();
    iph[10..12].copy_from_slice(&c);
    f.extend_from_slice(&iph);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&26u16.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x5a; 18]);
    f
}

/// The datagram the live-frames sender transmits: a (02:00:0a:c9:00:01, 10.201.0.1) → b
/// (02:00:0a:c9:00:02, 10.201.0.2), UDP to PORT.
fn udp_frame() -> Vec<u8> {
    udp_frame_v4(
        [0x02, 0x00, 0x0a, 0xc9, 0x00, 0x02],
        [0x02, 0x00, 0x0a, 0xc9, 0x00, 0x01],
        [10, 201, 0, 1],
        [10, 201, 0, 2],
        PORT,
    )
}

/// One eBPF instruction (`struct bpf_insn`, little-endian).
pub(crate) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code) | u64::from(dst | (src << 4)) << 8 | u64::from(off as u16) << 16 | u64::from(imm as u32) << 32
}

/// Loads `insns` as an XDP program (GPL) called `name`.
pub(crate) fn load_xdp(name: &std::ffi::CStr, insns: &[u64]) -> std::io::Result<OwnedFd> {
    // SAFETY: bpf_prog_load_opts is plain data; zeroed is its documented initial state.
    let mut opts: sys::bpf_prog_load_opts = unsafe { std::mem::zeroed() };
    opts.sz = size_of::<sys::bpf_prog_load_opts>() as _;
    opts.expected_attach_type = sys::BPF_XDP;
    // SAFETY: insns holds encoded 8-byte bpf_insn; name and license are NUL-terminated.
    let fd = unsafe {
        sys::bpf_prog_load(
            sys::BPF_PROG_TYPE_XDP,
            name.as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr().cast(),
            insns.len() as _,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a fresh program fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `r0 = XDP_TX; exit`, as an XDP program: every live frame goes out of `tkb0` to `tkb1`.
fn load_xdp_tx() -> std::io::Result<OwnedFd> {
    // BPF_ALU64|BPF_MOV|BPF_K (0xb7) r0 = 3 (XDP_TX); BPF_JMP|BPF_EXIT (0x95)
    load_xdp(c"tkb_xdp_tx", &[insn(0xb7, 0, 0, 0, 3), insn(0x95, 0, 0, 0, 0)])
}

/// The index of interface `name` in the calling thread's namespace, 0 if there is none.
pub(crate) fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Runs the XDP program `prog` `repeat` times on `frame` with BPF_PROG_RUN live frames (5.18+),
/// as if received on `ifindex`, in batches of 64: what it does with each frame (XDP_TX,
/// XDP_REDIRECT) really happens. One call, unpaced; the error is the call's errno.
pub(crate) fn run_live_frames(prog: &impl AsRawFd, frame: &[u8], ifindex: u32, repeat: u64) -> std::io::Result<()> {
    let ctx = sys::xdp_md { data: 0, data_end: frame.len() as u32, ingress_ifindex: ifindex, ..Default::default() };
    let mut opts = sys::bpf_test_run_opts {
        sz: size_of::<sys::bpf_test_run_opts>() as _,
        data_in: frame.as_ptr().cast(),
        data_size_in: frame.len() as u32,
        ctx_in: (&ctx as *const sys::xdp_md).cast(),
        ctx_size_in: size_of::<sys::xdp_md>() as u32,
        repeat: repeat as i32,
        flags: sys::BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: 64,
        ..Default::default()
    };
    // SAFETY: opts points at frame and ctx, which outlive the call; no output buffers.
    let rc = unsafe { sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    if rc < 0 { Err(std::io::Error::from_raw_os_error(-rc)) } else { Ok(()) }
}

/// Sends the UDP frame out of `tkb0` with BPF_PROG_RUN live frames (5.18+) at `rate` per
/// second for `secs`. Each call costs ~30 ms of setup and teardown (an RCU grace period), so
/// two threads each send 100 ms of frames per call (a burst at the kernel's speed; the veth
/// applies backpressure, so b's ring does not overflow), paced per call.
/// Returns (frames sent, seconds taken), or the error of the first call.
fn send_live(ns: &str, rate: f64, secs: f64) -> std::io::Result<(u64, f64)> {
    const THREADS: usize = 2;
    let start = Instant::now();
    let hs: Vec<_> = (0..THREADS).map(|_| send_live_thread(ns, rate / THREADS as f64, secs)).collect();
    let mut sent = 0;
    for h in hs {
        sent += h.join().unwrap()?.0;
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

fn send_live_thread(ns: &str, rate: f64, secs: f64) -> thread::JoinHandle<std::io::Result<(u64, f64)>> {
    Pair::in_ns(ns, move || {
        let prog = load_xdp_tx()?;
        let ifindex = ifindex(IF_A);
        let frame = udp_frame();
        let chunk = ((rate / 10.0) as u64).clamp(256, 1 << 20);
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            run_live_frames(&prog, &frame, ifindex, chunk)?;
            sent += chunk;
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
        Ok((sent, start.elapsed().as_secs_f64()))
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// BPF_PROG_RUN live frames out of tkb0 (XDP_TX), `--live-frames`: faster, but its bursts
    /// overflow b's 256-frame veth ring on a loaded 2-CPU machine (frames lost before any hook).
    Live,
    /// sendmmsg from one user-space thread in namespace a (the default).
    Sendmmsg,
}

impl Sender {
    fn describe(self) -> &'static str {
        match self {
            Sender::Live => "XDP live frames (BPF_PROG_RUN, XDP_TX out of a's veth)",
            Sender::Sendmmsg => "one sendmmsg thread",
        }
    }

    fn send(self, pair: &Pair, rate: f64, secs: f64) -> (u64, f64) {
        match self {
            Sender::Live => send_live(&pair.a, rate, secs).expect("BPF_PROG_RUN live frames"),
            Sender::Sendmmsg => send_udp(&pair.a, rate, secs),
        }
    }
}

// ---------------------------------------------------------------- live capacity

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Xdp,
    Tc,
    Sockfilter,
    Tcpdump,
    /// `tracekit xdp -w FILE 'udp port PORT'`
    XdpCapture,
    /// `tracekit tc --ingress -w FILE 'udp port PORT'`
    TcCapture,
    /// `tcpdump -w FILE 'udp port PORT'`
    TcpdumpFiltered,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Xdp => "tracekit xdp",
            Tool::Tc => "tracekit tc",
            Tool::Sockfilter => "tracekit sockfilter",
            Tool::Tcpdump => "tcpdump -w",
            Tool::XdpCapture => "tracekit xdp -w 'udp port P'",
            Tool::TcCapture => "tracekit tc -w 'udp port P'",
            Tool::TcpdumpFiltered => "tcpdump -w 'udp port P'",
        }
    }

    fn is_tcpdump(self) -> bool {
        matches!(self, Tool::Tcpdump | Tool::TcpdumpFiltered)
    }
}

struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

/// Starts the tool on `tkb1` in namespace b, output to `file`; waits until it is attached.
fn start(tool: Tool, ns_b: &str, file: &Path) -> Option<Running> {
    let tk = crate::tracekit().display().to_string();
    let f = file.display().to_string();
    let filter = format!("udp port {PORT}");
    let mut c = match tool {
        Tool::Tcpdump | Tool::TcpdumpFiltered => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns_b, "tcpdump", "-n", "-i", IF_B, "-Z", "root", "-w", &f]);
            if tool == Tool::TcpdumpFiltered {
                c.arg(&filter);
            }
            c.stdout(Stdio::null());
            c
        }
        Tool::XdpCapture | Tool::TcCapture => {
            // the capture in FILE.pcapng, the JSON summary (lost) in FILE
            let mut c = Command::new(&tk);
            let hook: &[&str] = if tool == Tool::XdpCapture { &["xdp"] } else { &["tc", "--ingress"] };
            c.args(hook);
            c.args([IF_B, "--netns", ns_b, "--json", "-v", "-w", &format!("{f}.pcapng"), &filter]);
            c.stdout(File::create(file).unwrap());
            c
        }
        _ => {
            let sub = match tool {
                Tool::Xdp => "xdp",
                Tool::Tc => "tc",
                _ => "sockfilter",
            };
            let mut c = Command::new(&tk);
            c.args([sub, IF_B, "--netns", ns_b, "--json", "-v"]);
            c.stdout(File::create(file).unwrap());
            c
        }
    };
    c.stderr(Stdio::piped()).stdin(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut child = c.spawn().ok()?;
    let rx = crate::lines_of(child.stderr.take().unwrap());
    let ready = if tool.is_tcpdump() { "listening on" } else { "attached after" };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) if l.contains(ready) => {
                seen.push(l);
                thread::sleep(Duration::from_millis(100));
                let (stx, srx) = mpsc::channel();
                for l in seen {
                    let _ = stx.send(l);
                }
                thread::spawn(move || {
                    while let Ok(l) = rx.recv() {
                        if stx.send(l).is_err() {
                            break;
                        }
                    }
                });
                return Some(Running { child, stderr: srx });
            }
            Ok(l) => seen.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    eprintln!("bench: {} did not attach: {}", tool.name(), seen.join(" / "));
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// SIGINT, wait, and the stderr lines.
fn finish(mut r: Running) -> Vec<String> {
    // SAFETY: kill() on a child we have not reaped.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = r.child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = r.child.wait();
    thread::sleep(Duration::from_millis(50));
    r.stderr.try_iter().collect()
}

/// Whether a captured frame is one of ours: Ethernet, IPv4, UDP to PORT.
fn ours(rec: &[u8]) -> bool {
    if rec.len() < 14 + 20 + 4 || rec[12..14] != [0x08, 0x00] || rec[23] != 17 {
        return false;
    }
    let ihl = usize::from(rec[14] & 0xf) * 4;
    rec.len() >= 14 + ihl + 4 && u16::from_be_bytes([rec[14 + ihl + 2], rec[14 + ihl + 3]]) == PORT
}

/// Our frames in a pcap file (tcpdump -w).
fn pcap_delivered(file: &Path) -> u64 {
    let Ok(f) = File::open(file) else { return 0 };
    let Ok(mut r) = pcap_file::pcap::PcapReader::new(f) else { return 0 };
    let mut n = 0;
    while let Some(Ok(p)) = r.next_packet() {
        n += u64::from(ours(&p.data));
    }
    n
}

/// Our frames in a pcapng file (tracekit -w).
fn pcapng_delivered(file: &Path) -> u64 {
    let Ok(f) = File::open(file) else { return 0 };
    let Ok(mut r) = pcap_file::pcapng::PcapNgReader::new(f) else { return 0 };
    let mut n = 0;
    while let Some(Ok(b)) = r.next_block() {
        if let pcap_file::pcapng::Block::EnhancedPacket(p) = b {
            n += u64::from(ours(&p.data));
        }
    }
    n
}

/// Events (our port) and the summary's `lost` in tracekit's NDJSON output.
fn tracekit_delivered(file: &Path) -> (u64, Option<u64>) {
    let text = fs::read_to_string(file).unwrap_or_default();
    let (mut n, mut lost) = (0, None);
    for line in text.lines() {
        if line.starts_with("{\"type\":\"event\"") {
            if line.contains(&format!("\"dport\":{PORT}")) {
                n += 1;
            }
        } else if line.starts_with("{\"type\":\"summary\"") {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            lost = v["lost"].as_u64();
        }
    }
    (n, lost)
}

fn tcpdump_dropped(stderr: &[String]) -> Option<u64> {
    stderr.iter().find_map(|l| l.strip_suffix(" packets dropped by kernel").and_then(|n| n.trim().parse().ok()))
}

struct Step {
    rate: f64,
    achieved: f64,
    generated: u64,
    arrived: u64,
    delivered: u64,
    reported_lost: Option<u64>,
    /// Busy CPU time of the whole machine during the step (sender, softirq, tool).
    cpu_s: f64,
}

/// Busy seconds of all CPUs so far (/proc/stat: everything but idle and iowait).
fn busy_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let busy: u64 = f.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    // SAFETY: sysconf has no preconditions.
    busy as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

impl Step {
    fn lossless(&self) -> bool {
        self.delivered == self.generated && self.reported_lost.unwrap_or(0) == 0
    }
}

fn ladder(tool: Tool, pair: &Pair, sender: Sender, dir: &Path, smoke: bool) -> Option<Vec<Step>> {
    let secs = if smoke { 0.2 } else { 2.0 };
    let mut rate = if smoke { 20_000.0 } else { 50_000.0 };
    let mut steps = Vec::new();
    loop {
        let file = dir.join(format!("net-{}.out", tool.name().replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
        let _ = fs::remove_file(&file);
        let running = start(tool, &pair.b, &file)?;
        let rx0 = pair.rx_b();
        let busy0 = busy_seconds();
        let (sent, took) = sender.send(pair, rate, secs);
        // tcpdump hands a TPACKET_V3 block over when it is full or after its 1 s timeout
        thread::sleep(Duration::from_millis(1500));
        let arrived = pair.rx_b() - rx0;
        let stderr = finish(running);
        let cpu_s = busy_seconds() - busy0;
        let (delivered, reported_lost) = match tool {
            Tool::Tcpdump | Tool::TcpdumpFiltered => (pcap_delivered(&file), tcpdump_dropped(&stderr)),
            Tool::XdpCapture | Tool::TcCapture => {
                (pcapng_delivered(&file.with_extension("out.pcapng")), tracekit_delivered(&file).1)
            }
            _ => tracekit_delivered(&file),
        };
        let st = Step { rate, achieved: sent as f64 / took, generated: sent, arrived, delivered, reported_lost, cpu_s };
        eprintln!(
            "bench: net-capacity / {}: offered {rate:.0}/s, sent {:.0}/s, {delivered} delivered of {sent} sent ({arrived} reached {IF_B}), lost reported {reported_lost:?}",
            tool.name(),
            st.achieved
        );
        // the sender could not go faster, or b's veth dropped frames before any hook ran
        let machine_limit = st.achieved < 0.8 * rate || st.arrived < st.generated;
        let lossy = !st.lossless();
        steps.push(st);
        if smoke || machine_limit || lossy {
            return Some(steps);
        }
        rate *= 2.0;
    }
}

/// The live capacity table (markdown) and raw rows.
pub fn capacity(smoke: bool, live_frames: bool, dir: &Path, results: &mut Vec<serde_json::Value>) -> String {
    let pair = Pair::new();
    let sender = if !live_frames {
        Sender::Sendmmsg
    } else {
        match send_live(&pair.a, 2560.0, 1e-4) {
            Ok(_) => Sender::Live,
            Err(e) => {
                eprintln!("bench: XDP live frames unavailable ({e}): sending with sendmmsg");
                Sender::Sendmmsg
            }
        }
    };
    eprintln!("bench: net-capacity (UDP a → b over a veth pair, {}, doubling rates)", sender.describe());
    // A bound socket in b that nobody reads: no ICMP port unreachable comes back, and the
    // kernel drops the datagrams at the socket, after every hook the tools use.
    let _sink = Pair::in_ns(&pair.b, || UdpSocket::bind((IP_B, PORT)).expect("bind in netns b")).join().unwrap();
    let mut t = String::from(
        "\n| capacity (UDP over veth, sender: SENDER) | highest rate with zero loss | above it: sent | delivered / sent (reached the interface) | lost reported (real loss) | machine CPU per M packets (at the best lossless rate) |\n|---|---|---|---|---|---|\n",
    );
    t = t.replace("SENDER", sender.describe());
    for tool in
        [Tool::Xdp, Tool::Tc, Tool::Sockfilter, Tool::Tcpdump, Tool::XdpCapture, Tool::TcCapture, Tool::TcpdumpFiltered]
    {
        if tool.is_tcpdump() && crate::which("tcpdump").is_none() {
            t.push_str(&format!("| {} | `tcpdump` not installed | | | | |\n", tool.name()));
            continue;
        }
        let Some(steps) = ladder(tool, &pair, sender, dir, smoke) else {
            t.push_str(&format!("| {} | did not start | | | | |\n", tool.name()));
            continue;
        };
        let cpu = steps
            .iter()
            .filter(|s| s.lossless() && s.generated > 0)
            .max_by(|a, b| a.achieved.total_cmp(&b.achieved))
            .map_or("–".to_owned(), |s| format!("{:.2} s", s.cpu_s / s.generated as f64 * 1e6));
        for st in &steps {
            results.push(serde_json::json!({
                "scenario": "net-capacity", "tool": tool.name(), "offered_rate": st.rate, "achieved_rate": st.achieved,
                "generated": st.generated, "arrived": st.arrived, "delivered": st.delivered, "reported_lost": st.reported_lost,
                "machine_cpu_s": st.cpu_s,
            }));
        }
        let best = steps.iter().filter(|s| s.lossless()).map(|s| s.achieved).fold(f64::NAN, f64::max);
        let best_s = if best.is_finite() { format!("{:.0} k/s", best / 1e3) } else { "none".into() };
        match steps.iter().find(|s| !s.lossless()) {
            Some(st) => {
                let real = st.generated - st.delivered.min(st.generated);
                let rep = st.reported_lost.unwrap_or(0);
                t.push_str(&format!(
                    "| {} | {best_s} | {:.0} k/s | {} / {} ({}) | {} ({real}{}) | {cpu} |\n",
                    tool.name(),
                    st.achieved / 1e3,
                    st.delivered,
                    st.generated,
                    st.arrived,
                    st.reported_lost.map_or("none".into(), |n| n.to_string()),
                    if rep == real { ", exact" } else { "" },
                ));
            }
            None => {
                let last = steps.last().unwrap();
                let limit = if smoke { "smoke: one step" } else { "no loss up to the sender's limit" };
                t.push_str(&format!(
                    "| {} | {best_s} ({limit}) | – | {} / {} ({}) | {} (0, exact) | {cpu} |\n",
                    tool.name(),
                    last.delivered,
                    last.generated,
                    last.arrived,
                    last.reported_lost.unwrap_or(0),
                ));
            }
        }
    }
    t
}
