//! tcpdump expressions in the packet tools (issue #13): the same frames go over a veth pair to
//! `tracekit xdp|tc|sockfilter IFACE EXPRESSION` and, written to a capture file, through
//! `tcpdump -r FILE EXPRESSION`; tracekit's matched set must be tcpdump's, expression by
//! expression. Every frame has a length of its own, which names it in both outputs.
//!
//! The frames go to a MAC address that is not the receiver's, so the receiving stack drops
//! them after the hooks and answers none of them: the hooks see exactly the frames sent.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::Tracer;
use common::net::{self, Netns, VethPair};

const OTHER_HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const SENDER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Frame i is padded to BASE_LEN + 2i bytes.
const BASE_LEN: usize = 160;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn eth(dst: [u8; 6], ethertype: u16) -> Vec<u8> {
    cat(&[&dst, &SENDER, &ethertype.to_be_bytes()])
}

fn vlan(id: u16, next: u16) -> Vec<u8> {
    cat(&[&id.to_be_bytes(), &next.to_be_bytes()])
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, opts: &[u8], frag: u16, payload: &[u8]) -> Vec<u8> {
    let ihl = (20 + opts.len()) / 4;
    let total = (20 + opts.len() + payload.len()) as u16;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    cat(&[&h, opts, payload])
}

fn ipv6(src: &str, dst: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    let (s, d): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut h = 0x6000_0000u32.to_be_bytes().to_vec();
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    cat(&[&h, payload])
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    cat(&[&sport.to_be_bytes(), &dport.to_be_bytes(), &[0; 8], &[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]])
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    cat(&[&sport.to_be_bytes(), &dport.to_be_bytes(), &8u16.to_be_bytes(), &[0, 0]])
}

fn icmp(ty: u8, code: u8) -> Vec<u8> {
    vec![ty, code, 0, 0, 0, 1, 0, 1]
}

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

/// The traffic: (what it is, frame). IPv4 and IPv6, TCP flags, UDP, ICMP, fragments, options,
/// ARP, VLAN and QinQ tags, broadcast and multicast, an unknown EtherType.
fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let v4 = |l4: Vec<u8>, proto: u8| cat(&[&eth(OTHER_HOST, 0x0800), &ipv4(A, B, proto, &[], 0, &l4)]);
    let mut f = vec![
        ("tcp syn 80", v4(tcp(40000, 80, SYN), 6)),
        ("tcp syn-ack from 80", cat(&[&eth(OTHER_HOST, 0x0800), &ipv4(B, A, 6, &[], 0, &tcp(80, 40000, SYN | ACK))])),
        ("tcp ack 443", v4(tcp(40001, 443, ACK), 6)),
        (
            "tcp fin 22 from 192.168.1.5",
            cat(&[&eth(OTHER_HOST, 0x0800), &ipv4([192, 168, 1, 5], B, 6, &[], 0, &tcp(50000, 22, FIN | ACK))]),
        ),
        ("udp 53", v4(udp(40002, 53), 17)),
        ("udp 9", v4(udp(40003, 9), 17)),
        ("udp 5000", v4(udp(40004, 5000), 17)),
        ("icmp echo", v4(icmp(8, 0), 1)),
        ("icmp echo reply", v4(icmp(0, 0), 1)),
        ("icmp unreachable", v4(icmp(3, 3), 1)),
        ("later fragment", cat(&[&eth(OTHER_HOST, 0x0800), &ipv4(A, B, 17, &[], 185, &[0; 16])])),
        (
            "ip options, tcp 80",
            cat(&[&eth(OTHER_HOST, 0x0800), &ipv4(A, B, 6, &[1, 1, 1, 0], 0, &tcp(40005, 80, SYN))]),
        ),
        (
            "ipv6 tcp syn 80",
            cat(&[&eth(OTHER_HOST, 0x86dd), &ipv6("2001:db8::1", "2001:db8::2", 6, &tcp(40006, 80, SYN))]),
        ),
        ("ipv6 udp 53", cat(&[&eth(OTHER_HOST, 0x86dd), &ipv6("2001:db8::1", "fd00::2", 17, &udp(40007, 53))])),
        ("ipv6 icmp6 echo", cat(&[&eth(OTHER_HOST, 0x86dd), &ipv6("fd00::1", "2001:db8::2", 58, &icmp(128, 0))])),
        (
            "ipv6 hop-by-hop, udp 53",
            cat(&[
                &eth(OTHER_HOST, 0x86dd),
                &ipv6("2001:db8::1", "2001:db8::2", 0, &cat(&[&[17, 0, 1, 4, 0, 0, 0, 0], &udp(40008, 53)])),
            ]),
        ),
        (
            "arp who-has 10.99.99.99",
            cat(&[&eth([0xff; 6], 0x0806), &[0, 1, 8, 0, 6, 4, 0, 1], &SENDER, &A, &[0; 6], &[10, 99, 99, 99]]),
        ),
        (
            "vlan 100 udp 53",
            cat(&[&eth(OTHER_HOST, 0x8100), &vlan(100, 0x0800), &ipv4(A, B, 17, &[], 0, &udp(40009, 53))]),
        ),
        (
            "vlan 200 ipv6 tcp 443",
            cat(&[
                &eth(OTHER_HOST, 0x8100),
                &vlan(200, 0x86dd),
                &ipv6("2001:db8::1", "2001:db8::2", 6, &tcp(40010, 443, ACK)),
            ]),
        ),
        (
            "qinq 300/100 tcp 80",
            cat(&[
                &eth(OTHER_HOST, 0x88a8),
                &vlan(300, 0x8100),
                &vlan(100, 0x0800),
                &ipv4(A, B, 6, &[], 0, &tcp(40011, 80, SYN)),
            ]),
        ),
        (
            "tcp 8080 from 172.16.0.9",
            cat(&[&eth(OTHER_HOST, 0x0800), &ipv4([172, 16, 0, 9], B, 6, &[], 0, &tcp(40012, 8080, SYN))]),
        ),
        ("sctp 9", v4(cat(&[&40013u16.to_be_bytes(), &9u16.to_be_bytes(), &[0; 8]]), 132)),
        ("broadcast udp 67", cat(&[&eth([0xff; 6], 0x0800), &ipv4(A, [255; 4], 17, &[], 0, &udp(68, 67))])),
        (
            "multicast udp 5353",
            cat(&[&eth([0x01, 0, 0x5e, 0, 0, 0xfb], 0x0800), &ipv4(A, [224, 0, 0, 251], 17, &[], 0, &udp(5353, 5353))]),
        ),
        ("lldp", cat(&[&eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], 0x88cc), &[0; 20]])),
    ];
    for (i, (_, frame)) in f.iter_mut().enumerate() {
        let len = BASE_LEN + 2 * i;
        assert!(frame.len() <= len, "frame {i} is longer than its slot");
        frame.resize(len, 0xee);
    }
    f
}

fn index_of_len(len: u64) -> usize {
    (len as usize - BASE_LEN) / 2
}

/// The expressions: pcap-filter(7)'s primitives, qualifiers, negations, nested parentheses,
/// IPv6, VLAN, byte tests and lengths.
const EXPRESSIONS: &[&str] = &[
    "ip",
    "ip6",
    "arp",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "sctp",
    "host 10.0.0.1",
    "src host 192.168.1.5",
    "dst host 10.0.0.2",
    "net 10.0.0.0/24",
    "net 172.16.0.0/12",
    "ip6 net 2001:db8::/32",
    "ip6 dst host fd00::2",
    "port 80",
    "src port 80",
    "dst port 443",
    "tcp port 80",
    "udp port 53",
    "portrange 4000-6000",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "tcp[tcpflags] & tcp-fin != 0",
    "icmp[icmptype] == icmp-echo",
    "icmp[icmptype] != icmp-echo and icmp[icmptype] != icmp-echoreply",
    "ip[6:2] & 0x1fff != 0",
    "ip[0] & 0xf > 5",
    "not ip",
    "not (tcp or udp)",
    "(tcp and port 80) or (udp and port 53)",
    "ip and not (host 10.0.0.1 or host 10.0.0.2)",
    "ether broadcast",
    "ether multicast",
    "ether src 02:00:00:00:00:01 and ether proto 0x88cc",
    "ip multicast",
    "len > 190",
    "greater 180 and less 200",
    "vlan",
    "vlan 100",
    "vlan and ip6",
    "vlan 300 and vlan 100 and tcp port 80",
];

/// At tc and socket filters the kernel has taken VLAN tags out of the frame (into the skb's
/// metadata), as a live tcpdump on Linux sees them: those hooks get the untagged traffic and
/// the expressions without `vlan` (README "Filter expressions").
fn untagged_expressions() -> Vec<&'static str> {
    EXPRESSIONS.iter().copied().filter(|e| !e.contains("vlan")).collect()
}

fn is_tagged(name: &str) -> bool {
    name.starts_with("vlan") || name.starts_with("qinq")
}

/// Writes the frames `send` keeps, each stamped with its index + 1 seconds.
fn write_capture(frames: &[(&str, Vec<u8>)], send: impl Fn(&str) -> bool) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut w = pcap_file::pcap::PcapWriter::new(file.reopen().unwrap()).unwrap();
    for (i, (_, frame)) in frames.iter().enumerate().filter(|(_, (name, _))| send(name)) {
        let packet = pcap_file::pcap::PcapPacket::new(Duration::from_secs(i as u64 + 1), frame.len() as u32, frame);
        w.write_packet(&packet).unwrap();
    }
    w.into_writer().flush().unwrap();
    file
}

/// The frames `tcpdump -r` selects with `expression` (by their timestamps, 1-based).
fn tcpdump_selects(capture: &std::path::Path, expression: &str) -> BTreeSet<usize> {
    let out = Command::new("tcpdump")
        .args(["-r"])
        .arg(capture)
        .args(["-nn", "-tt", expression])
        .output()
        .unwrap_or_else(|e| panic!("tcpdump: {e}: install it (apt-get install tcpdump)"));
    assert!(out.status.success(), "tcpdump -r … {expression:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('.').next()?.parse::<usize>().ok())
        .map(|ts| ts - 1)
        .collect()
}

/// Sends the frames `send` keeps out of `ifname` in `ns` through a packet socket.
fn send_frames(ns: &Netns, ifname: &str, frames: &[(&str, Vec<u8>)], send: impl Fn(&str) -> bool) {
    let ifindex = ns.ifindex(ifname);
    let frames: Vec<Vec<u8>> = frames.iter().filter(|(name, _)| send(name)).map(|(_, f)| f.clone()).collect();
    ns.run_in(move || {
        // SAFETY: plain socket/sendto/close calls on a socket this function owns.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            for frame in &frames {
                addr.sll_addr[..6].copy_from_slice(&frame[..6]);
                let n = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(n, frame.len() as isize, "sendto: {}", std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    });
}

/// Runs every expression through `tracekit TOOL` on b's end and compares with tcpdump.
fn agree_with_tcpdump(tag: &str, tool: &[&str], expressions: &[&str], send: impl Fn(&str) -> bool + Copy) {
    let pair = VethPair::new(tag);
    let frames = frames();
    let capture = write_capture(&frames, send);
    let mut disagreements = Vec::new();
    for expression in expressions {
        let want = tcpdump_selects(capture.path(), expression);
        let mut args = tool.to_vec();
        args.extend_from_slice(&[pair.if_b, "--netns", pair.b.name(), "--json", expression]);
        let t = Tracer::start(&args);
        send_frames(&pair.a, pair.if_a, &frames, send);
        std::thread::sleep(Duration::from_millis(150));
        let out = t.stop();
        assert!(out.status.success(), "{tool:?} {expression:?}: {}", out.stderr);
        let got: BTreeSet<usize> = out
            .events()
            .iter()
            .filter(|e| e["dir"] != "egress")
            .filter_map(|e| e["len"].as_u64())
            .filter(|&l| l as usize >= BASE_LEN && (l as usize - BASE_LEN).is_multiple_of(2))
            .map(index_of_len)
            .filter(|&i| i < frames.len())
            .collect();
        if got != want {
            let name = |s: &BTreeSet<usize>| s.iter().map(|&i| frames[i].0).collect::<Vec<_>>();
            disagreements.push(format!("{expression:?}: tracekit {:?}, tcpdump {:?}", name(&got), name(&want)));
        }
    }
    assert!(disagreements.is_empty(), "{tool:?} disagrees with tcpdump -r:\n{}", disagreements.join("\n"));
    pair.assert_clean();
}

#[test]
fn xdp_selects_what_tcpdump_selects() {
    if !common::require_root("pcap_filter::xdp_selects_what_tcpdump_selects") {
        return;
    }
    agree_with_tcpdump("pcx", &["xdp"], EXPRESSIONS, |_| true);
}

#[test]
fn tc_selects_what_tcpdump_selects() {
    if !common::require_root("pcap_filter::tc_selects_what_tcpdump_selects") {
        return;
    }
    agree_with_tcpdump("pct", &["tc", "--ingress"], &untagged_expressions(), |name| !is_tagged(name));
}

#[test]
fn sockfilter_selects_what_tcpdump_selects() {
    if !common::require_root("pcap_filter::sockfilter_selects_what_tcpdump_selects") {
        return;
    }
    agree_with_tcpdump("pcs", &["sockfilter"], &untagged_expressions(), |name| !is_tagged(name));
}

/// The expression and the short options combine by `and`.
#[test]
fn expression_and_options_combine() {
    if !common::require_root("pcap_filter::expression_and_options_combine") {
        return;
    }
    let pair = VethPair::new("pcc");
    let frames = frames();
    let t = Tracer::start(&["xdp", pair.if_b, "--netns", pair.b.name(), "--json", "--proto", "tcp", "port", "80"]);
    send_frames(&pair.a, pair.if_a, &frames, |_| true);
    std::thread::sleep(Duration::from_millis(150));
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let mut got: Vec<&str> =
        out.events().iter().filter_map(|e| e["len"].as_u64()).map(|l| frames[index_of_len(l)].0).collect();
    got.sort();
    // tcp port 80 without VLAN tags (the parser's --proto sees through tags; `port 80` does not).
    assert_eq!(got, ["ip options, tcp 80", "ipv6 tcp syn 80", "tcp syn 80", "tcp syn-ack from 80"], "{:?}", out.stdout);
    let summary = out.summary();
    assert_eq!(summary["events"], 4, "{summary}");
}

// ---------------------------------------------------------------- captures (-w)

/// One packet of a pcapng file: (interface name, bytes, original length, comment, epb_flags).
struct Captured {
    iface: String,
    data: Vec<u8>,
    original_len: u32,
    comment: String,
    flags: u32,
}

fn read_pcapng(path: &std::path::Path) -> Vec<Captured> {
    use pcap_file::pcapng::Block;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    let mut reader = pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(path).unwrap()).expect("a pcapng file");
    let (mut names, mut packets) = (Vec::new(), Vec::new());
    while let Some(block) = reader.next_block() {
        match block.expect("a valid block") {
            Block::InterfaceDescription(idb) => names.push(
                idb.options
                    .iter()
                    .find_map(|o| match o {
                        InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .unwrap_or_default(),
            ),
            Block::EnhancedPacket(epb) => packets.push(Captured {
                iface: names[epb.interface_id as usize].clone(),
                data: epb.data.to_vec(),
                original_len: epb.original_len,
                comment: epb
                    .options
                    .iter()
                    .find_map(|o| match o {
                        EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                        _ => None,
                    })
                    .unwrap_or_default(),
                flags: epb
                    .options
                    .iter()
                    .find_map(|o| match o {
                        EnhancedPacketOption::Flags(f) => Some(*f),
                        _ => None,
                    })
                    .unwrap_or_default(),
            }),
            _ => {}
        }
    }
    packets
}

/// `tcpdump -r` and `tshark -r` both read the file and count `want` packets.
fn peers_read(path: &std::path::Path, want: usize) {
    let tcpdump =
        Command::new("tcpdump").arg("-r").arg(path).arg("-nn").output().expect("tcpdump (apt-get install tcpdump)");
    assert!(tcpdump.status.success(), "tcpdump -r: {}", String::from_utf8_lossy(&tcpdump.stderr));
    let lines = String::from_utf8_lossy(&tcpdump.stdout).lines().filter(|l| !l.starts_with(' ')).count();
    assert_eq!(lines, want, "tcpdump -r:\n{}", String::from_utf8_lossy(&tcpdump.stdout));
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", "frame.len", "-e", "frame.cap_len"])
        .output()
        .expect("tshark (apt-get install tshark)");
    assert!(tshark.status.success(), "tshark -r: {}", String::from_utf8_lossy(&tshark.stderr));
    assert_eq!(String::from_utf8_lossy(&tshark.stdout).lines().count(), want, "tshark -r");
}

/// Every hook writes the frames it saw byte for byte, with their lengths and what tcpdump cannot
/// know in the options; tcpdump and tshark read every file; --snaplen cuts.
#[test]
fn captures_hold_the_frames_sent() {
    if !common::require_root("pcap_filter::captures_hold_the_frames_sent") {
        return;
    }
    let pair = VethPair::new("pcw");
    let frames: Vec<(&str, Vec<u8>)> = frames().into_iter().filter(|(name, _)| !is_tagged(name)).collect();
    let dir = tempfile::tempdir().unwrap();
    for (tool, hook, snaplen) in [
        (&["xdp"][..], "xdp", None),
        (&["tc", "--ingress"][..], "tc", None),
        (&["sockfilter"][..], "socket", None),
        (&["xdp", "--transport", "perfbuf"][..], "xdp", Some(64usize)),
        (&["tc", "--ingress"][..], "tc", Some(100)),
    ] {
        let path = dir.path().join(format!("{hook}-{snaplen:?}.pcapng"));
        let path_str = path.to_str().unwrap().to_owned();
        let mut args = tool.to_vec();
        args.extend_from_slice(&[pair.if_b, "--netns", pair.b.name(), "-w", &path_str]);
        let s = snaplen.map(|s| s.to_string());
        if let Some(s) = &s {
            args.extend_from_slice(&["-s", s]);
        }
        // Only the frames sent: their padding byte 0xee is at the end of every one.
        args.push("ether src 02:00:00:00:00:01");
        let t = Tracer::start(&args);
        send_frames(&pair.a, pair.if_a, &frames, |_| true);
        std::thread::sleep(Duration::from_millis(150));
        let out = t.stop();
        assert!(out.status.success(), "{tool:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "-w without --print prints no packets: {:?}", out.stdout);
        let got = read_pcapng(&path);
        assert_eq!(got.len(), frames.len(), "{tool:?}: one packet per frame sent");
        for (c, (name, frame)) in got.iter().zip(&frames) {
            let want = &frame[..snaplen.unwrap_or(usize::MAX).min(frame.len())];
            assert_eq!(c.data, want, "{tool:?} {name}: the bytes sent");
            assert_eq!(c.original_len as usize, frame.len(), "{tool:?} {name}: length on the wire");
            assert_eq!(c.iface, pair.if_b);
            assert_eq!(c.comment, format!("tracekit: hook={hook} verdict=pass"), "{tool:?} {name}");
            assert_eq!(c.flags & 3, 1, "{tool:?} {name}: inbound");
        }
        peers_read(&path, frames.len());
    }
    pair.assert_clean();
}

/// `-w -` into a pipe: tcpdump reads it as it comes.
#[test]
fn capture_to_stdout_feeds_tcpdump() {
    if !common::require_root("pcap_filter::capture_to_stdout_feeds_tcpdump") {
        return;
    }
    let pair = VethPair::new("pcp");
    let frames = frames();
    let dir = tempfile::tempdir().unwrap();
    let (err, text) = (dir.path().join("stderr"), dir.path().join("tcpdump.txt"));
    let script = format!(
        "'{}' xdp {} --netns {} -v -d 20 -w - -n {} 'ip or ip6' 2>'{}' | tcpdump -r - -nn >'{}' 2>/dev/null",
        env!("CARGO_BIN_EXE_tracekit"),
        pair.if_b,
        pair.b.name(),
        frames.iter().filter(|(n, _)| !n.contains("arp") && !n.contains("lldp") && !is_tagged(n)).count(),
        err.display(),
        text.display()
    );
    let mut child = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&err).unwrap_or_default().contains("attached after") {
        assert!(std::time::Instant::now() < deadline, "{}", std::fs::read_to_string(&err).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(20));
    }
    send_frames(&pair.a, pair.if_a, &frames, |_| true);
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&err).unwrap());
    let printed = std::fs::read_to_string(&text).unwrap();
    assert!(printed.contains("10.0.0.1.40000 > 10.0.0.2.80: Flags [S]"), "{printed}");
    assert!(printed.contains("2001:db8::1.40006 > 2001:db8::2.80: Flags [S]"), "{printed}");
    pair.assert_clean();
}

/// `-w FILE --print --json`: the packets both in the file and as events, the same ones.
#[test]
fn capture_and_print_together() {
    if !common::require_root("pcap_filter::capture_and_print_together") {
        return;
    }
    let pair = VethPair::new("pcb");
    let frames = frames();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("both.pcapng");
    let path_str = path.to_str().unwrap();
    let args = ["tc", "--ingress", pair.if_b, "--netns", pair.b.name(), "-w", path_str, "--print", "--json", "udp"];
    let t = Tracer::start(&args);
    send_frames(&pair.a, pair.if_a, &frames, |name| !is_tagged(name));
    std::thread::sleep(Duration::from_millis(150));
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let printed: Vec<u64> = out.events().iter().filter_map(|e| e["len"].as_u64()).collect();
    let captured: Vec<u64> = read_pcapng(&path).iter().map(|c| u64::from(c.original_len)).collect();
    assert!(!printed.is_empty(), "{:?}", out.stdout);
    assert_eq!(printed, captured, "the same packets, in the same order");
    pair.assert_clean();
}

/// Expressions and captures read Ethernet frames: an interface without an Ethernet header (a
/// tun device) is refused with exit 2, before anything is attached; its own filters still run.
#[test]
fn non_ethernet_interfaces_are_refused() {
    if !common::require_root("pcap_filter::non_ethernet_interfaces_are_refused") {
        return;
    }
    let ns = Netns::new("pcn");
    ns.ip(&["tuntap", "add", "dev", "tktun0", "mode", "tun"]);
    for args in [&["xdp", "tktun0", "tcp"][..], &["tc", "tktun0", "-w", "/dev/null"], &["sockfilter", "tktun0", "udp"]]
    {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--netns", ns.name(), "-d", "0.2"]);
        let out = common::run(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", out.stderr);
        assert!(out.stderr.contains("`tktun0` has no Ethernet header"), "{}", out.stderr);
    }
    let out = common::run(&["tc", "tktun0", "--netns", ns.name(), "--port", "80", "-d", "0.2"]);
    assert!(out.status.success(), "{}", out.stderr);
    net::assert_clean(&ns);
}
