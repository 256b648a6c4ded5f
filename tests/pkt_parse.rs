//! The packet parser of pkt.bpf.h, run with BPF_PROG_RUN (nothing attached) through the xdp,
//! tc and socket filter programs: crafted frames in, events out of the ring buffer. The same
//! bytes must decode to the same `tk_pkt` in all three; filters, counters and verdicts are
//! checked on the side. Root: loading programs needs CAP_BPF.

mod common;

use std::cell::RefCell;
use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapMut, OpenObject, PerfBufferBuilder, ProgramMut, RingBufferBuilder};
use tracekit::runtime::skel::{Transport, TransportOpen};
use tracekit::tools::net::skels::{self, PacketEvent, prog_run};

// ---------------------------------------------------------------- frames

const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const V4_SRC: [u8; 4] = [10, 0, 0, 1];
const V4_DST: [u8; 4] = [10, 0, 0, 2];
const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

const ETH_IP: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_8021Q: u16 = 0x8100;
const ETH_8021AD: u16 = 0x88a8;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;
const HOPOPTS: u8 = 0;
const DSTOPTS: u8 = 60;
const FRAG6: u8 = 44;
const SYN: u8 = 0x02;

// pkt.h flags
const TRUNCATED: u8 = 1;
const FRAGMENT: u8 = 2;
const IP_OPTIONS: u8 = 4;
const EXT_HEADERS: u8 = 8;
const LATER_FRAG: u8 = 16;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn eth(ethertype: u16) -> Vec<u8> {
    cat(&[&MAC_DST, &MAC_SRC, &ethertype.to_be_bytes()])
}

fn vlan(id: u16, next: u16) -> Vec<u8> {
    cat(&[&(0x2000 | id).to_be_bytes(), &next.to_be_bytes()])
}

/// An IPv4 header (with `opts`, a multiple of 4 bytes) and its payload. Checksums are not
/// computed: BPF_PROG_RUN does not check them.
fn ipv4(proto: u8, opts: &[u8], frag_off: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_between(V4_SRC, V4_DST, proto, opts, frag_off, payload)
}

fn ipv4_between(src: [u8; 4], dst: [u8; 4], proto: u8, opts: &[u8], frag_off: u16, payload: &[u8]) -> Vec<u8> {
    let ihl = (20 + opts.len()) / 4;
    let total = (20 + opts.len() + payload.len()) as u16;
    let mut h = vec![0x40 | ihl as u8, 0x10];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&0x1234u16.to_be_bytes());
    h.extend_from_slice(&frag_off.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    cat(&[&h, opts, payload])
}

/// An IPv6 header (traffic class 0x20) and its payload (`payload_len` as given).
fn ipv6_len(next: u8, payload_len: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = 0x6200_0000u32.to_be_bytes().to_vec();
    h.extend_from_slice(&payload_len.to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&V6_SRC);
    h.extend_from_slice(&V6_DST);
    cat(&[&h, payload])
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    ipv6_len(next, payload.len() as u16, payload)
}

/// A hop-by-hop, routing or destination options header: `body` after the two leading bytes,
/// padded with PadN to a multiple of 8.
fn ext6(next: u8, body: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(body);
    let pad = (8 - h.len() % 8) % 8;
    match pad {
        0 => {}
        1 => h.push(0), // Pad1
        n => {
            h.extend_from_slice(&[1, (n - 2) as u8]);
            h.extend(std::iter::repeat_n(0, n - 2));
        }
    }
    h[1] = (h.len() / 8 - 1) as u8;
    h
}

fn frag6(next: u8, offset_units: u16, more: bool) -> Vec<u8> {
    let fo = (offset_units << 3) | more as u16;
    cat(&[&[next, 0], &fo.to_be_bytes(), &0xabcd_0001u32.to_be_bytes()])
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = cat(&[&sport.to_be_bytes(), &dport.to_be_bytes(), &[0; 8]]);
    h.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    cat(&[&sport.to_be_bytes(), &dport.to_be_bytes(), &len.to_be_bytes(), &[0, 0], payload])
}

fn icmp(ty: u8, code: u8) -> Vec<u8> {
    vec![ty, code, 0, 0, 0x12, 0x34, 0, 1]
}

fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    cat(&[&sport.to_be_bytes(), &dport.to_be_bytes(), &[0; 8]])
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&a);
    out
}

// ---------------------------------------------------------------- decoded packets

/// `struct tk_pkt`, comparable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Pkt {
    saddr: [u8; 16],
    daddr: [u8; 16],
    ethertype: u16,
    vlan: u16,
    vlan_inner: u16,
    sport: u16,
    dport: u16,
    ip_len: u16,
    family: u8,
    proto: u8,
    tcp_flags: u8,
    ttl: u8,
    tos: u8,
    icmp_type: u8,
    icmp_code: u8,
    flags: u8,
}

impl From<&PacketEvent> for Pkt {
    fn from(e: &PacketEvent) -> Self {
        let p = &e.pkt;
        Pkt {
            saddr: p.saddr,
            daddr: p.daddr,
            ethertype: p.ethertype,
            vlan: p.vlan,
            vlan_inner: p.vlan_inner,
            sport: p.sport,
            dport: p.dport,
            ip_len: p.ip_len,
            family: p.family,
            proto: p.proto,
            tcp_flags: p.tcp_flags,
            ttl: p.ttl,
            tos: p.tos,
            icmp_type: p.icmp_type,
            icmp_code: p.icmp_code,
            flags: p.flags,
        }
    }
}

fn ip4_pkt(proto: u8, ip_len: u16) -> Pkt {
    Pkt {
        saddr: v4(V4_SRC),
        daddr: v4(V4_DST),
        ethertype: ETH_IP,
        ip_len,
        family: 4,
        proto,
        ttl: 64,
        tos: 0x10,
        ..Default::default()
    }
}

fn ip6_pkt(proto: u8, ip_len: u16) -> Pkt {
    Pkt {
        saddr: V6_SRC,
        daddr: V6_DST,
        ethertype: ETH_IPV6,
        ip_len,
        family: 6,
        proto,
        ttl: 64,
        tos: 0x20,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- programs

/// The packet filter written into rodata before load (pkt.h `struct tk_pkt_filter`).
#[derive(Debug, Default, Clone)]
struct Filter {
    host: [u8; 16],
    ports: Vec<u16>,
    family: u8,
    proto: u8,
    host_family: u8,
    host_prefix: u8,
    host_side: u8,
    drop: bool,
    sock: bool,
    netns: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
    Socket,
}

const HOOKS: [Hook; 3] = [Hook::Xdp, Hook::Tc, Hook::Socket];

/// One loaded packet program and the maps the test reads.
struct Prog<'a> {
    hook: Hook,
    prog: &'a ProgramMut<'a>,
    events: &'a MapMut<'a>,
    counts: &'a MapMut<'a>,
    /// tk_events is a perf event array (else a ring buffer).
    perf: bool,
}

impl Prog<'_> {
    /// Runs one frame: the return value and the events it sent.
    fn run(&self, frame: &[u8]) -> libbpf_rs::Result<(i32, Vec<PacketEvent>)> {
        let got = RefCell::new(Vec::new());
        let push = |data: &[u8]| {
            let mut e = PacketEvent::default();
            plain::copy_from_bytes(&mut e, data).expect("a whole tk_pkt_event");
            got.borrow_mut().push(e);
        };
        if self.perf {
            let pb = PerfBufferBuilder::new(self.events)
                .pages(8)
                .sample_cb(|_cpu, data: &[u8]| push(data))
                .build()
                .expect("perf buffer");
            let (ret, _) = prog_run(self.prog, frame, 1)?;
            pb.consume().expect("consume perf buffer");
            drop(pb);
            return Ok((ret, got.into_inner()));
        }
        let mut rb = RingBufferBuilder::new();
        rb.add(self.events, |data: &[u8]| {
            push(data);
            0
        })
        .expect("ring buffer callback");
        let rb = rb.build().expect("ring buffer");
        let (ret, _) = prog_run(self.prog, frame, 1)?;
        rb.consume().expect("consume ring buffer");
        drop(rb);
        Ok((ret, got.into_inner()))
    }

    /// Runs one frame that must produce exactly one event.
    fn decode(&self, frame: &[u8]) -> (i32, PacketEvent) {
        let (ret, evs) = self.run(frame).unwrap_or_else(|e| panic!("{:?}: BPF_PROG_RUN: {e}", self.hook));
        assert_eq!(evs.len(), 1, "{:?}: one event per matched frame", self.hook);
        (ret, evs[0])
    }

    /// tk_pkt_counts summed over CPUs: seen, matched, pass, drop (read as the tools read it).
    fn counts(&self) -> [u64; 4] {
        tracekit::tools::net::packet::Counters::new(self.counts).read()
    }
}

/// Opens, configures (ring buffer, `f`) and loads one skeleton, then calls `body` with it.
macro_rules! with_skel {
    ($m:ident, $builder:ident, $hook:expr, $prog:ident, $f:expr, $body:expr) => {
        with_skel!($m, $builder, $hook, $prog, $f, Transport::RingBuf { bytes: 1 << 20 }, $body)
    };
    ($m:ident, $builder:ident, $hook:expr, $prog:ident, $f:expr, $transport:expr, $body:expr) => {{
        use skels::$m::skel::{types, $builder};
        let f: &Filter = $f;
        let mut storage = MaybeUninit::<OpenObject>::uninit();
        let mut open = $builder::default().open(&mut storage).expect("open skeleton");
        let transport: Transport = $transport;
        open.configure_transport(transport).expect("configure transport");
        let ro = open.maps.rodata_data.as_deref_mut().expect("rodata");
        let mut k = types::tk_pkt_filter::default();
        k.host = f.host;
        k.ports[..f.ports.len()].copy_from_slice(&f.ports);
        k.nports = f.ports.len() as u32;
        k.netns = f.netns;
        k.family = f.family;
        k.proto = f.proto;
        k.host_family = f.host_family;
        k.host_prefix = f.host_prefix;
        k.host_side = f.host_side;
        k.drop = f.drop as u8;
        k.sock = f.sock as u8;
        ro.tk_pkt_filter = k;
        let skel = open.load().expect("load (verifier)");
        let p = Prog {
            hook: $hook,
            prog: &skel.progs.$prog,
            events: &skel.maps.tk_events,
            counts: &skel.maps.tk_pkt_counts,
            perf: matches!(transport, Transport::PerfBuf { .. }),
        };
        ($body)(&p)
    }};
}

/// Calls `body` with each of the three programs, loaded with filter `f`.
fn each_prog(f: &Filter, mut body: impl FnMut(&Prog<'_>)) {
    for hook in HOOKS {
        match hook {
            Hook::Xdp => with_skel!(pkt, PktSkelBuilder, hook, xdp__observe, f, &mut body),
            Hook::Tc => with_skel!(pkt, PktSkelBuilder, hook, tc__ingress, f, &mut body),
            Hook::Socket => with_skel!(pkt, PktSkelBuilder, hook, sock__observe, f, &mut body),
        }
    }
}

/// Decodes each frame through all three programs: the same packet from each, returned once per
/// frame. Each program is loaded once for all the frames (a load is most of the cost in a TCG guest).
fn decode_all(frames: &[(&str, &[u8])]) -> Vec<Pkt> {
    let mut got: Vec<(Hook, Vec<Pkt>)> = Vec::new();
    each_prog(&Filter::default(), |p| {
        got.push((p.hook, frames.iter().map(|(_, f)| Pkt::from(&p.decode(f).1)).collect()));
    });
    for (hook, pkts) in &got[1..] {
        for ((name, _), (pkt, first)) in frames.iter().zip(pkts.iter().zip(&got[0].1)) {
            assert_eq!(pkt, first, "{name}: {hook:?} decodes like {:?}", got[0].0);
        }
    }
    got.remove(0).1
}

// ---------------------------------------------------------------- decoding

#[test]
fn decodes_protocols_alike_in_all_hooks() {
    if !common::require_root("decodes_protocols_alike_in_all_hooks") {
        return;
    }
    let cases: Vec<(&str, Vec<u8>, Pkt)> = vec![
        (
            "tcp/ipv4 syn",
            cat(&[&eth(ETH_IP), &ipv4(TCP, &[], 0x4000, &tcp(40000, 443, SYN))]),
            Pkt { sport: 40000, dport: 443, tcp_flags: SYN, ..ip4_pkt(TCP, 40) },
        ),
        (
            "udp/ipv6",
            cat(&[&eth(ETH_IPV6), &ipv6(UDP, &udp(5353, 53, b"query"))]),
            Pkt { sport: 5353, dport: 53, ..ip6_pkt(UDP, 40 + 13) },
        ),
        (
            "ipv4 with options",
            // record route (7, len 11, ptr 4, two empty slots) + end of options
            cat(&[&eth(ETH_IP), &ipv4(UDP, &[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, &udp(1000, 2000, &[]))]),
            Pkt { sport: 1000, dport: 2000, flags: IP_OPTIONS, ..ip4_pkt(UDP, 32 + 8) },
        ),
        (
            "ipv6 hop-by-hop + destination options, then tcp",
            cat(&[
                &eth(ETH_IPV6),
                &ipv6(
                    HOPOPTS,
                    &cat(&[&ext6(DSTOPTS, &[]), &ext6(TCP, &[1, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), &tcp(1, 22, 0x18)]),
                ),
            ]),
            Pkt { sport: 1, dport: 22, tcp_flags: 0x18, flags: EXT_HEADERS, ..ip6_pkt(TCP, 40 + 8 + 16 + 20) },
        ),
        (
            "ipv4 first fragment",
            cat(&[&eth(ETH_IP), &ipv4(UDP, &[], 0x2000, &udp(7, 9, &[0; 16]))]),
            Pkt { sport: 7, dport: 9, flags: FRAGMENT, ..ip4_pkt(UDP, 20 + 24) },
        ),
        (
            "ipv4 later fragment",
            cat(&[&eth(ETH_IP), &ipv4(UDP, &[], 3, &udp(7, 9, &[0; 16]))]),
            Pkt { flags: FRAGMENT | LATER_FRAG, ..ip4_pkt(UDP, 20 + 24) },
        ),
        (
            "ipv6 first fragment",
            cat(&[&eth(ETH_IPV6), &ipv6(FRAG6, &cat(&[&frag6(UDP, 0, true), &udp(7, 9, &[0; 8])]))]),
            Pkt { sport: 7, dport: 9, flags: FRAGMENT | EXT_HEADERS, ..ip6_pkt(UDP, 40 + 8 + 16) },
        ),
        (
            "ipv6 later fragment",
            cat(&[&eth(ETH_IPV6), &ipv6(FRAG6, &cat(&[&frag6(UDP, 2, false), &[0; 16]]))]),
            Pkt { flags: FRAGMENT | EXT_HEADERS | LATER_FRAG, ..ip6_pkt(UDP, 40 + 8 + 16) },
        ),
        (
            "icmp echo",
            cat(&[&eth(ETH_IP), &ipv4(ICMP, &[], 0, &icmp(8, 0))]),
            Pkt { icmp_type: 8, ..ip4_pkt(ICMP, 28) },
        ),
        (
            "icmpv6 echo",
            cat(&[&eth(ETH_IPV6), &ipv6(ICMPV6, &icmp(128, 0))]),
            Pkt { icmp_type: 128, ..ip6_pkt(ICMPV6, 48) },
        ),
        (
            "icmp port unreachable (type and code)",
            cat(&[&eth(ETH_IP), &ipv4(ICMP, &[], 0, &icmp(3, 3))]),
            Pkt { icmp_type: 3, icmp_code: 3, ..ip4_pkt(ICMP, 28) },
        ),
        (
            "sctp/ipv4",
            cat(&[&eth(ETH_IP), &ipv4(SCTP, &[], 0, &sctp(36412, 38412))]),
            Pkt { sport: 36412, dport: 38412, ..ip4_pkt(SCTP, 32) },
        ),
        (
            "802.1Q vlan",
            cat(&[&eth(ETH_8021Q), &vlan(100, ETH_IP), &ipv4(TCP, &[], 0, &tcp(1234, 80, SYN | 0x10))]),
            Pkt { vlan: 100, sport: 1234, dport: 80, tcp_flags: 0x12, ..ip4_pkt(TCP, 40) },
        ),
        (
            "802.1ad QinQ",
            cat(&[&eth(ETH_8021AD), &vlan(300, ETH_8021Q), &vlan(42, ETH_IPV6), &ipv6(UDP, &udp(1, 2, &[]))]),
            Pkt { vlan: 300, vlan_inner: 42, sport: 1, dport: 2, ..ip6_pkt(UDP, 48) },
        ),
        (
            "arp (ethertype only)",
            cat(&[&eth(ETH_ARP), &[0, 1, 8, 0, 6, 4, 0, 1], &MAC_SRC, &V4_SRC, &[0; 6], &V4_DST]),
            Pkt { ethertype: ETH_ARP, ..Default::default() },
        ),
        (
            "ipv6 jumbogram (hop-by-hop jumbo payload, payload length 0)",
            cat(&[
                &eth(ETH_IPV6),
                &ipv6_len(HOPOPTS, 0, &cat(&[&[TCP, 0, 0xc2, 4], &100_000u32.to_be_bytes(), &tcp(5, 6, 0x10)])),
            ]),
            // ip_len cannot hold the jumbo length and saturates
            Pkt { sport: 5, dport: 6, tcp_flags: 0x10, flags: EXT_HEADERS, ..ip6_pkt(TCP, 0xffff) },
        ),
    ];
    let frames: Vec<(&str, &[u8])> = cases.iter().map(|(name, frame, _)| (*name, frame.as_slice())).collect();
    for ((name, _, want), got) in cases.iter().zip(decode_all(&frames)) {
        assert_eq!(&got, want, "{name}");
    }
}

/// Every prefix of a VLAN + IPv4 + TCP frame: the kernel rejects those shorter than an
/// Ethernet header (but 5.10 XDP); every one it takes decodes the headers it holds whole,
/// sets TRUNCATED when one is cut, and leaves the fields after the cut zero.
#[test]
fn truncated_at_every_length() {
    if !common::require_root("truncated_at_every_length") {
        return;
    }
    let frame = cat(&[&eth(ETH_8021Q), &vlan(7, ETH_IP), &ipv4(TCP, &[], 0, &tcp(40000, 443, SYN))]);
    assert_eq!(frame.len(), 58);
    let full = Pkt { vlan: 7, sport: 40000, dport: 443, tcp_flags: SYN, ..ip4_pkt(TCP, 40) };
    let expect = |n: usize| -> Pkt {
        match n {
            0..14 => Pkt { flags: TRUNCATED, ..Default::default() },
            14..18 => Pkt { ethertype: ETH_8021Q, flags: TRUNCATED, ..Default::default() },
            18..38 => Pkt { ethertype: ETH_IP, vlan: 7, flags: TRUNCATED, ..Default::default() },
            38..58 => Pkt { sport: 0, dport: 0, tcp_flags: 0, flags: TRUNCATED, ..full.clone() },
            _ => full.clone(),
        }
    };
    each_prog(&Filter::default(), |p| {
        // Newer kernels refuse frames shorter than an Ethernet header (5.10 runs XDP on them)
        for n in 0..14 {
            if let Ok((_, evs)) = p.run(&frame[..n]) {
                assert_eq!(evs.len(), 1, "{:?}: one event for a frame of {n} bytes", p.hook);
                assert_eq!(Pkt::from(&evs[0]), expect(n), "{:?}: frame cut at {n} bytes", p.hook);
            }
        }
        for n in 14..=frame.len() {
            let (_, e) = p.decode(&frame[..n]);
            assert_eq!(Pkt::from(&e), expect(n), "{:?}: frame cut at {n} bytes", p.hook);
        }
    });
}

/// The largest frame BPF_PROG_RUN takes for each program (found by bisection), decoded whole.
#[test]
fn largest_frame() {
    if !common::require_root("largest_frame") {
        return;
    }
    let frame_of = |n: usize| {
        let head = cat(&[&eth(ETH_IP), &ipv4(UDP, &[], 0, &udp(9, 9, &vec![0; n - 42]))]);
        assert_eq!(head.len(), n);
        head
    };
    each_prog(&Filter::default(), |p| {
        let (mut ok, mut bad) = (64usize, 1usize << 20);
        assert!(p.run(&frame_of(ok)).is_ok());
        while bad - ok > 1 {
            let mid = (ok + bad) / 2;
            if p.run(&frame_of(mid)).is_ok() { ok = mid } else { bad = mid }
        }
        let (_, e) = p.decode(&frame_of(ok));
        let want = Pkt { sport: 9, dport: 9, ..ip4_pkt(UDP, (ok - 14) as u16) };
        assert_eq!(Pkt::from(&e), want, "{:?}: frame of {ok} bytes", p.hook);
        let wire = if p.hook == Hook::Socket { ok - 14 } else { ok };
        assert_eq!(e.hdr.len as usize, wire, "{:?}: length of the frame of {ok} bytes", p.hook);
        // Written to the real stderr, for the report.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "largest BPF_PROG_RUN frame, {:?}: {ok} bytes", p.hook);
    });
}

// ---------------------------------------------------------------- filters, counters, verdicts

fn tcp4(sport: u16, dport: u16) -> Vec<u8> {
    cat(&[&eth(ETH_IP), &ipv4(TCP, &[], 0, &tcp(sport, dport, SYN))])
}

fn udp6(sport: u16, dport: u16) -> Vec<u8> {
    cat(&[&eth(ETH_IPV6), &ipv6(UDP, &udp(sport, dport, &[]))])
}

fn arp() -> Vec<u8> {
    cat(&[&eth(ETH_ARP), &[0; 28]])
}

/// A filter's name, the filter, frames it lets through and frames it rejects.
type FilterCase = (&'static str, Filter, Vec<Vec<u8>>, Vec<Vec<u8>>);

#[test]
fn filters_accept_and_reject() {
    if !common::require_root("filters_accept_and_reject") {
        return;
    }
    let host = |a: [u8; 16], family: u8, prefix: u8, side: u8| Filter {
        host: a,
        host_family: family,
        host_prefix: prefix,
        host_side: side,
        ..Default::default()
    };
    // (filter, frames it must let through, frames it must reject)
    let cases: Vec<FilterCase> = vec![
        ("none", Filter::default(), vec![tcp4(1, 2), udp6(1, 2), arp()], vec![]),
        ("-4", Filter { family: 4, ..Default::default() }, vec![tcp4(1, 2)], vec![udp6(1, 2), arp()]),
        ("-6", Filter { family: 6, ..Default::default() }, vec![udp6(1, 2)], vec![tcp4(1, 2), arp()]),
        ("--proto udp", Filter { proto: UDP, ..Default::default() }, vec![udp6(1, 2)], vec![tcp4(1, 2), arp()]),
        (
            "--port 443,53 (src or dst)",
            Filter { ports: vec![443, 53], ..Default::default() },
            vec![tcp4(443, 1), tcp4(1, 443), udp6(53, 9)],
            vec![tcp4(1, 2), udp6(5353, 54), arp()],
        ),
        ("--host 10.0.0.0/24", host(v4([10, 0, 0, 0]), 4, 24, 0), vec![tcp4(1, 2)], vec![udp6(1, 2), arp()]),
        ("--host 10.0.1.0/24", host(v4([10, 0, 1, 0]), 4, 24, 0), vec![], vec![tcp4(1, 2)]),
        ("--host 10.0.0.0/31", host(v4([10, 0, 0, 0]), 4, 31, 0), vec![tcp4(1, 2)], vec![]),
        ("--src 10.0.0.1/32", host(v4(V4_SRC), 4, 32, 1), vec![tcp4(1, 2)], vec![]),
        ("--dst 10.0.0.1/32", host(v4(V4_SRC), 4, 32, 2), vec![], vec![tcp4(1, 2)]),
        ("--dst 10.0.0.2/32", host(v4(V4_DST), 4, 32, 2), vec![tcp4(1, 2)], vec![]),
        ("--host 10.0.0.3/32", host(v4([10, 0, 0, 3]), 4, 32, 0), vec![], vec![tcp4(1, 2)]),
        ("--host 10.0.0.3/30", host(v4([10, 0, 0, 3]), 4, 30, 0), vec![tcp4(1, 2)], vec![]),
        ("--host 2001:db8::/32", host(V6_DST, 6, 32, 0), vec![udp6(1, 2)], vec![tcp4(1, 2), arp()]),
        ("--src 2001:db8::2/128", host(V6_DST, 6, 128, 1), vec![], vec![udp6(1, 2)]),
        ("--dst 2001:db8::2/128", host(V6_DST, 6, 128, 2), vec![udp6(1, 2)], vec![]),
        (
            "-4 --proto tcp --port 443 --dst 10.0.0.2",
            Filter { family: 4, proto: TCP, ports: vec![443], ..host(v4(V4_DST), 4, 32, 2) },
            vec![tcp4(9, 443)],
            vec![tcp4(9, 444), udp6(9, 443)],
        ),
    ];
    for (name, f, pass, reject) in &cases {
        each_prog(f, |p| {
            for frame in pass {
                let (_, evs) = p.run(frame).expect("BPF_PROG_RUN");
                assert_eq!(evs.len(), 1, "{:?} {name}: lets through {:?}", p.hook, &frame[12..14]);
            }
            for frame in reject {
                let (_, evs) = p.run(frame).expect("BPF_PROG_RUN");
                assert!(evs.is_empty(), "{:?} {name}: rejects {:?}", p.hook, &frame[12..14]);
            }
            let (seen, matched) = ((pass.len() + reject.len()) as u64, pass.len() as u64);
            assert_eq!(p.counts(), [seen, matched, matched, 0], "{:?} {name}: counters", p.hook);
        });
    }
}

#[test]
fn xdp_drop_verdicts_and_counters() {
    if !common::require_root("xdp_drop_verdicts_and_counters") {
        return;
    }
    const XDP_DROP: i32 = 1;
    const XDP_PASS: i32 = 2;
    let f = Filter { drop: true, proto: TCP, ..Default::default() };
    with_skel!(pkt, PktSkelBuilder, Hook::Xdp, xdp__observe, &f, |p: &Prog<'_>| {
        let (ret, e) = p.decode(&tcp4(1, 2));
        assert_eq!(ret, XDP_DROP, "a matched packet is dropped");
        assert_eq!(e.verdict, 1, "the event says so (TK_VERDICT_DROP)");
        assert_eq!(e.hdr.hook, 0);
        assert_eq!(e.hdr.dir, 0);
        let (ret, evs) = p.run(&udp6(1, 2)).unwrap();
        assert_eq!(ret, XDP_PASS, "an unmatched packet passes");
        assert!(evs.is_empty(), "and sends nothing");
        let (ret, _) = p.decode(&tcp4(3, 4));
        assert_eq!(ret, XDP_DROP);
        assert_eq!(p.counts(), [3, 2, 0, 2], "seen, matched, pass, drop");
    });
    // Without --drop the same packets pass, and tc and socket programs always go on.
    each_prog(&Filter::default(), |p| {
        let (ret, e) = p.decode(&tcp4(1, 2));
        let want = match p.hook {
            Hook::Xdp => XDP_PASS,
            Hook::Tc => -1,
            Hook::Socket => 0,
        };
        assert_eq!(ret, want, "{:?}: return value", p.hook);
        assert_eq!(e.verdict, 0, "{:?}: TK_VERDICT_PASS", p.hook);
        assert_eq!(p.counts(), [1, 1, 1, 0], "{:?}: counters", p.hook);
    });
}

#[test]
fn event_header() {
    if !common::require_root("event_header") {
        return;
    }
    let f = Filter { netns: 4026531840, ..Default::default() };
    let frame = tcp4(1, 2);
    each_prog(&f, |p| {
        let (_, e) = p.decode(&frame);
        assert_eq!(e.hdr.netns, 4026531840, "{:?}: netns from the filter", p.hook);
        assert!(e.hdr.ts_ns > 0, "{:?}: time", p.hook);
        let hook = match p.hook {
            Hook::Xdp => 0,
            Hook::Tc => 1,
            Hook::Socket => 2,
        };
        assert_eq!(e.hdr.hook, hook, "{:?}: hook", p.hook);
        assert_eq!(e.hdr.dir, 0, "{:?}: ingress", p.hook);
        // BPF_PROG_RUN runs the program on the loopback device of the caller's netns.
        assert_eq!(e.hdr.ifindex, 1, "{:?}: ifindex of lo", p.hook);
        assert_eq!((e.sk_found, e.sk_state, e.sk_cookie, e.sk_uid), (0, 0, 0, 0), "{:?}: no --sock", p.hook);
    });
}

/// The perf buffer transport (bpf_perf_event_output with the program's context) works in all
/// three hooks: socket filters are allowed that helper too.
#[test]
fn perf_buffer_transport() {
    if !common::require_root("perf_buffer_transport") {
        return;
    }
    let perf = Transport::PerfBuf { pages_per_cpu: 8 };
    let frame = tcp4(40000, 443);
    let want = Pkt { sport: 40000, dport: 443, tcp_flags: SYN, ..ip4_pkt(TCP, 40) };
    let check = |p: &Prog<'_>| {
        let (_, e) = p.decode(&frame);
        assert_eq!(Pkt::from(&e), want, "{:?} through the perf buffer", p.hook);
        assert_eq!(p.counts(), [1, 1, 1, 0], "{:?}: counters", p.hook);
    };
    let f = Filter::default();
    with_skel!(pkt, PktSkelBuilder, Hook::Xdp, xdp__observe, &f, perf, check);
    with_skel!(pkt, PktSkelBuilder, Hook::Tc, tc__ingress, &f, perf, check);
    with_skel!(pkt, PktSkelBuilder, Hook::Socket, sock__observe, &f, perf, check);
}

/// --sock: the local TCP socket of a packet's flow, looked up in the caller's netns (a fresh
/// one here, owned by this thread): a listener, found for a SYN to it (ingress) and for a
/// packet from it (tc egress: the tuple is swapped); in tc also its cookie and owner uid.
#[test]
fn sock_lookup_finds_the_local_socket() {
    if !common::require_root("sock_lookup_finds_the_local_socket") {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a new network namespace,
        // which goes away with the thread.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
        const UID: u32 = 4321;
        // SAFETY: setfsuid changes only this thread's filesystem uid; the socket created in
        // between takes it as its owner (sk_uid), and it is set back at once.
        unsafe { libc::setfsuid(UID) };
        let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen in the new netns");
        // SAFETY: as above.
        unsafe { libc::setfsuid(0) };
        let port = listener.local_addr().unwrap().port();
        let cookie = {
            use std::os::fd::AsRawFd;
            let mut c = 0u64;
            let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
            // SAFETY: SO_COOKIE writes a u64 into c, whose size len gives.
            let rc = unsafe {
                libc::getsockopt(listener.as_raw_fd(), libc::SOL_SOCKET, libc::SO_COOKIE, (&raw mut c).cast(), &mut len)
            };
            assert_eq!(rc, 0, "SO_COOKIE");
            c
        };
        let f = Filter { sock: true, ..Default::default() };
        let syn = tcp4(40000, port);
        let reply = cat(&[&eth(ETH_IP), &ipv4_between(V4_DST, V4_SRC, TCP, &[], 0, &tcp(port, 40000, SYN | 0x10))]);
        let elsewhere = tcp4(40000, port.wrapping_add(1).max(1));
        let listen = 10; // TK_SOCK_LISTEN
        with_skel!(pkt, PktSkelBuilder, Hook::Xdp, xdp__observe, &f, |p: &Prog<'_>| {
            let (_, e) = p.decode(&syn);
            assert_eq!((e.sk_found, e.sk_state), (1, listen), "xdp: the listener");
            assert_eq!((e.sk_cookie, e.sk_uid), (0, 0), "xdp: no owner lookup");
            let (_, e) = p.decode(&elsewhere);
            assert_eq!((e.sk_found, e.sk_state), (0, 0), "xdp: no socket on that port");
        });
        with_skel!(pkt, PktSkelBuilder, Hook::Tc, tc__ingress, &f, |p: &Prog<'_>| {
            let (_, e) = p.decode(&syn);
            assert_eq!((e.sk_found, e.sk_state, e.sk_cookie, e.sk_uid), (1, listen, cookie, UID), "tc ingress");
            let (_, e) = p.decode(&elsewhere);
            assert_eq!((e.sk_found, e.sk_state, e.sk_cookie, e.sk_uid), (0, 0, 0, 0), "tc ingress, no socket");
        });
        with_skel!(pkt, PktSkelBuilder, Hook::Tc, tc__egress, &f, |p: &Prog<'_>| {
            let (_, e) = p.decode(&reply);
            assert_eq!(e.hdr.dir, 1, "egress");
            assert_eq!((e.sk_found, e.sk_state, e.sk_cookie, e.sk_uid), (1, listen, cookie, UID), "tc egress");
            let (_, e) = p.decode(&syn);
            assert_eq!(e.sk_found, 0, "tc egress: a SYN to the listener is not one it sends");
        });
    })
    .join()
    .expect("sock lookup thread");
}

/// The benchmark's floor programs load and return at once.
#[test]
fn floor_programs() {
    if !common::require_root("floor_programs") {
        return;
    }
    use skels::floor::skel::FloorSkelBuilder;
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let skel = FloorSkelBuilder::default().open(&mut storage).expect("open").load().expect("load");
    let frame = tcp4(1, 2);
    assert_eq!(prog_run(&skel.progs.xdp__floor, &frame, 1).expect("run").0, 2, "XDP_PASS");
    assert_eq!(prog_run(&skel.progs.tc__floor, &frame, 1).expect("run").0, -1, "TC_ACT_UNSPEC");
    let (_, ns) = prog_run(&skel.progs.xdp__floor, &frame, 1000).expect("repeat");
    assert!(ns < 1_000_000, "a run of the floor takes {ns} ns");
}

// ---------------------------------------------------------------- hostile frames

/// Valid frames of every shape the parser knows, cut at a random length and with random bytes
/// overwritten (proptest, deterministic seed): every hook must take each without a fault and
/// decode it exactly as the others do. BPF_PROG_RUN itself refuses some short skb frames
/// (EINVAL: e.g. an IPv6 ethertype with less than an IPv6 header); those are compared where
/// every hook ran them.
#[test]
fn mangled_frames_decode_alike_in_all_hooks() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    if !common::require_root("mangled_frames_decode_alike_in_all_hooks") {
        return;
    }
    let bases: Vec<Vec<u8>> = vec![
        cat(&[&eth(ETH_IP), &ipv4(TCP, &[1, 1, 1, 0], 0x4000, &tcp(1, 2, SYN))]),
        cat(&[&eth(ETH_8021AD), &vlan(10, ETH_8021Q), &vlan(20, ETH_IPV6), &ipv6(UDP, &udp(3, 4, b"x"))]),
        cat(&[&eth(ETH_IPV6), &ipv6(HOPOPTS, &cat(&[&ext6(DSTOPTS, &[0; 6]), &ext6(TCP, &[0; 6]), &tcp(5, 6, SYN)]))]),
        cat(&[&eth(ETH_IPV6), &ipv6(FRAG6, &cat(&[&frag6(ICMPV6, 0, true), &icmp(128, 0)]))]),
        cat(&[&eth(ETH_IP), &ipv4(ICMP, &[], 0x2000, &icmp(8, 0))]),
        cat(&[&eth(ETH_IP), &ipv4(SCTP, &[], 0, &sctp(7, 8))]),
    ];
    let strategy = (0..bases.len(), 14usize..=120, proptest::collection::vec((0usize..120, any::<u8>()), 0..6));
    let mut runner = TestRunner::deterministic();
    let frames: Vec<Vec<u8>> = (0..300)
        .map(|_| {
            let (which, len, writes) = strategy.new_tree(&mut runner).expect("a case").current();
            let mut f = bases[which].clone();
            f.truncate(len.max(14));
            for (at, byte) in writes {
                if let Some(b) = f.get_mut(at) {
                    *b = byte;
                }
            }
            f
        })
        .collect();
    let mut per_hook: Vec<(Hook, Vec<Option<Pkt>>)> = Vec::new();
    each_prog(&Filter::default(), |p| {
        let decoded = frames
            .iter()
            .map(|f| match p.run(f) {
                Ok((_, evs)) => {
                    assert_eq!(evs.len(), 1, "{:?}: one event for {f:02x?}", p.hook);
                    Some(Pkt::from(&evs[0]))
                }
                Err(e) if e.kind() == libbpf_rs::ErrorKind::InvalidInput => None,
                Err(e) => panic!("{:?}: BPF_PROG_RUN on {f:02x?}: {e}", p.hook),
            })
            .collect();
        per_hook.push((p.hook, decoded));
    });
    let mut compared = 0;
    for (i, f) in frames.iter().enumerate() {
        if per_hook.iter().any(|(_, d)| d[i].is_none()) {
            continue;
        }
        compared += 1;
        let first = &per_hook[0].1[i];
        for (hook, decoded) in &per_hook[1..] {
            assert_eq!(&decoded[i], first, "{hook:?} decodes {f:02x?} like {:?}", per_hook[0].0);
        }
    }
    assert!(compared >= frames.len() * 3 / 4, "only {compared} of {} frames ran in every hook", frames.len());
}
