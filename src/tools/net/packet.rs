//! What the packet tools (xdp, tc, sockfilter) share besides their BPF object (skels.rs): the
//! in-kernel filter built from the net options, the per-verdict counters, and the printer of
//! packet events.

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, MapMut};

use crate::error::Error;
use crate::runtime::Printer;
use crate::runtime::attach::netdev::{Iface, iface_name};
use crate::runtime::attach::netns::Netns;
use crate::runtime::cli::net::{HostPrefix, NetArgs, Proto};
use crate::runtime::fastfmt;
use crate::runtime::output::{EventHeader, PacketHeader, Sink};
use crate::runtime::pcap::{self, ClassicInsn};
use crate::runtime::watch::Every;

use super::capture::{Capture, DEFAULT_SNAPLEN};

/// Most bytes of one packet a capture keeps (TK_CAPTURE_MAX in pkt.h: the frame part of the
/// capture record).
pub const TK_CAPTURE_MAX: u32 = (size_of::<types::tk_capture>() - size_of::<PacketEvent>()) as u32;

/// `write!` into a [`Text`] through fmt::Write (the io::Write in scope is for the sink).
macro_rules! twrite {
    ($t:expr, $($arg:tt)*) => {
        std::fmt::Write::write_fmt(&mut $t, format_args!($($arg)*))
    };
}

pub use super::skels::PacketEvent;
pub use super::skels::pkt::skel::{OpenPktSkel, PktSkel, PktSkelBuilder, types};

/// What the user asked to see, decided before load and written into rodata.
#[derive(Debug, Clone, Default)]
pub struct PacketFilter {
    family: u8,
    proto: Option<Proto>,
    ports: Vec<u16>,
    host: Option<(HostPrefix, types::tk_host_side)>,
    pub drop: bool,
    /// `--drop-every N` (xdp): drop the Nth, 2Nth, ... matched packet; 0 for off.
    pub drop_every: u32,
    pub sock: bool,
    /// The tcpdump expression and what libpcap compiled it to.
    pub pcap: Option<(String, Vec<ClassicInsn>)>,
    /// `-w FILE`, its snapshot length and `--print`.
    pub write: Option<std::path::PathBuf>,
    pub snaplen: u32,
    pub print: bool,
}

impl PacketFilter {
    /// Checks the net options against each other (usage errors, exit 2).
    pub fn from_args(a: &NetArgs, json: bool, drop: bool, sock: bool) -> Result<Self, Error> {
        let max_ports = types::tk_pkt_filter::default().ports.len();
        if a.ports.len() > max_ports {
            return Err(Error::usage(
                format!("--port takes at most {max_ports} ports, got {}", a.ports.len()),
                Some("filter on fewer ports, or on --host/--proto instead".to_owned()),
            ));
        }
        let family = if a.ipv4 {
            4
        } else if a.ipv6 {
            6
        } else {
            0
        };
        let host = match (a.host, a.src, a.dst) {
            (Some(h), _, _) => Some((h, types::tk_host_side::TK_HOST_EITHER)),
            (_, Some(h), _) => Some((h, types::tk_host_side::TK_HOST_SRC)),
            (_, _, Some(h)) => Some((h, types::tk_host_side::TK_HOST_DST)),
            _ => None,
        };
        if let Some((h, _)) = &host {
            let host_family = if h.is_ipv4() { 4 } else { 6 };
            if family != 0 && family != host_family {
                return Err(Error::usage(
                    format!("address `{}` is IPv{host_family}, but -{family} asks for IPv{family} only", h.addr),
                    Some(format!("drop -{family}, or give an IPv{family} address")),
                ));
            }
        }
        match a.proto {
            Some(Proto::Icmp) if family == 6 => {
                return Err(Error::usage(
                    "--proto icmp is IPv4's ICMP, but -6 asks for IPv6",
                    Some("use --proto icmp6".to_owned()),
                ));
            }
            Some(Proto::Icmp6) if family == 4 => {
                return Err(Error::usage(
                    "--proto icmp6 is IPv6's ICMP, but -4 asks for IPv4",
                    Some("use --proto icmp".to_owned()),
                ));
            }
            Some(p @ (Proto::Icmp | Proto::Icmp6)) if !a.ports.is_empty() => {
                return Err(Error::usage(
                    format!("--proto {} has no ports, but --port was given", proto_name(p.number())),
                    Some("drop --port, or use --proto tcp/udp".to_owned()),
                ));
            }
            _ => {}
        }
        let pcap = match pcap::expression(&a.expression) {
            Some(text) => {
                let classic = pcap::compile(&text, pcap::LINKTYPE_ETHERNET)?;
                Some((text, classic))
            }
            None => None,
        };
        if a.write.as_deref() == Some(std::path::Path::new("-")) {
            if a.print || json {
                return Err(Error::usage(
                    "-w - writes the capture to stdout: --print and --json have nowhere to go",
                    Some("write the capture to a file (-w FILE --print), or drop --print/--json".to_owned()),
                ));
            }
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(Error::usage(
                    "-w - would write a binary capture to the terminal",
                    Some("pipe it: `tracekit xdp eth0 -w - | tcpdump -n -r -`, or give a file".to_owned()),
                ));
            }
        }
        let snaplen = a.snaplen.unwrap_or(DEFAULT_SNAPLEN);
        if a.snaplen.is_some_and(|s| s > TK_CAPTURE_MAX) {
            eprintln!(
                "tracekit: note: a packet's capture keeps at most {TK_CAPTURE_MAX} bytes (-s {snaplen} asks for more)"
            );
        }
        Ok(PacketFilter {
            family,
            proto: a.proto,
            ports: a.ports.clone(),
            host,
            drop,
            drop_every: 0,
            sock,
            pcap,
            write: a.write.clone(),
            snaplen,
            print: a.print,
        })
    }

    pub fn write(&self, f: &mut types::tk_pkt_filter, netns_inode: u64) {
        f.family = self.family;
        f.proto = self.proto.map_or(0, Proto::number);
        f.ports[..self.ports.len()].copy_from_slice(&self.ports);
        f.nports = self.ports.len() as u32;
        if let Some((h, side)) = &self.host {
            f.host = h.masked_bytes();
            f.host_family = if h.is_ipv4() { 4 } else { 6 };
            f.host_prefix = h.prefix;
            f.host_side = side.0 as u8;
        }
        f.pcap = self.pcap.is_some() as u8;
        f.snaplen = if self.write.is_some() { self.snaplen.min(TK_CAPTURE_MAX) } else { 0 };
        // Nothing will read the decoded fields: no rows, no field filters, no socket lookup.
        let field_filters = self.family != 0 || self.proto.is_some() || !self.ports.is_empty() || self.host.is_some();
        f.no_decode = (self.write.is_some() && !self.print && !field_filters && !self.sock) as u8;
        f.drop = self.drop as u8;
        f.drop_every = self.drop_every;
        f.sock = self.sock as u8;
        // Namespace inodes are 32-bit in practice (proc_inum): what the header carries.
        f.netns = netns_inode as u32;
    }

    /// Expressions and captures read frames as Ethernet frames: refuse an interface whose frames
    /// start elsewhere (tun, wireguard) instead of matching and writing them wrongly.
    pub fn check_link(&self, iface: &Iface, netns: &Netns) -> Result<(), Error> {
        if (self.pcap.is_some() || self.write.is_some()) && iface.is_ethernet(netns)? == Some(false) {
            return Err(Error::usage(
                format!("`{}` has no Ethernet header: filter expressions and -w read Ethernet frames", iface.name),
                Some("use --port/--host/--proto on this interface, or capture on an Ethernet interface".to_owned()),
            ));
        }
        Ok(())
    }

    /// Opens the `-w` capture, if any.
    pub fn open_capture(&self) -> Result<Option<Capture>, Error> {
        self.write.as_deref().map(|p| Capture::create(p, self.snaplen)).transpose()
    }

    /// One line for `-v`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.family != 0 {
            parts.push(format!("ipv{}", self.family));
        }
        if let Some(p) = self.proto {
            parts.push(proto_name(p.number()).to_owned());
        }
        if !self.ports.is_empty() {
            parts.push(format!("port {:?}", self.ports));
        }
        if let Some((h, side)) = &self.host {
            let side = match *side {
                types::tk_host_side::TK_HOST_SRC => "src",
                types::tk_host_side::TK_HOST_DST => "dst",
                _ => "host",
            };
            parts.push(format!("{side} {}/{}", h.addr, h.prefix));
        }
        if let Some(path) = &self.write {
            parts.push(format!("written to {} (snaplen {})", path.display(), self.snaplen.min(TK_CAPTURE_MAX)));
        }
        if let Some((text, classic)) = &self.pcap {
            parts.push(format!("`{text}` ({} classic BPF instructions)", classic.len()));
        }
        if parts.is_empty() { "every packet".to_owned() } else { parts.join(", ") }
    }
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        132 => "sctp",
        _ => "",
    }
}

/// Which columns a tool's rows have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// xdp: ingress only, with the verdict.
    Xdp,
    /// tc: direction, TTL and DSCP/ECN.
    Tc,
    /// sockfilter: direction.
    Socket,
}

/// Reads the per-verdict counters (`tk_pkt_counts`, per CPU) of a loaded packet object.
pub struct Counters<'a> {
    map: &'a MapMut<'a>,
}

impl<'a> Counters<'a> {
    pub fn new(map: &'a MapMut<'a>) -> Self {
        Counters { map }
    }

    /// seen, matched, passed, dropped: summed over CPUs (one `struct tk_pkt_counters` each).
    pub fn read(&self) -> [u64; 4] {
        let mut out = [0u64; 4];
        let Ok(Some(per_cpu)) = self.map.lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY) else { return out };
        for value in &per_cpu {
            for (slot, bytes) in out.iter_mut().zip(value.chunks_exact(8)) {
                *slot += u64::from_ne_bytes(bytes.try_into().expect("8 bytes"));
            }
        }
        out
    }
}

/// Interface names by index, looked up once each (in the namespace of the interface) and kept,
/// so a row costs no lookup. An index seen for the first time is looked up then.
pub struct IfaceNames<'a> {
    netns: &'a Netns,
    names: RefCell<Vec<(u32, [u8; 16])>>,
}

impl<'a> IfaceNames<'a> {
    pub fn new(netns: &'a Netns) -> Self {
        IfaceNames { netns, names: RefCell::new(Vec::new()) }
    }

    pub fn get(&self, index: u32) -> [u8; 16] {
        if let Some((_, n)) = self.names.borrow().iter().find(|(i, _)| *i == index) {
            return *n;
        }
        let mut name = [0u8; 16];
        match iface_name(index, self.netns) {
            Some(n) => {
                let n = &n.as_bytes()[..n.len().min(15)];
                name[..n.len()].copy_from_slice(n);
            }
            None => name[0] = b'?',
        }
        self.names.borrow_mut().push((index, name));
        name
    }
}

pub struct PacketPrinter<'a> {
    columns: Columns,
    sock: bool,
    names: IfaceNames<'a>,
    counters: Counters<'a>,
    /// Also print the counters every this often (`--interval`).
    interval: Every,
    /// What the counters say at the end (`tracekit: xdp on tkv1: …`).
    label: String,
    /// `-w`: the capture file, and whether events are printed too (`--print`).
    capture: Option<Capture>,
    print: bool,
    /// CLOCK_MONOTONIC → CLOCK_REALTIME, for the capture's timestamps.
    realtime_offset_ns: i128,
}

impl<'a> PacketPrinter<'a> {
    pub fn new(
        columns: Columns,
        netns: &'a Netns,
        counts: &'a MapMut<'a>,
        label: String,
        sock: bool,
        interval: Option<Duration>,
    ) -> Self {
        PacketPrinter {
            columns,
            sock,
            names: IfaceNames::new(netns),
            counters: Counters::new(counts),
            interval: Every::new(interval),
            label,
            capture: None,
            print: true,
            realtime_offset_ns: crate::runtime::kernel::monotonic_to_realtime_ns(),
        }
    }

    /// Writes matched packets into `capture` (`-w`); with `print` false, prints no events.
    pub fn with_capture(mut self, capture: Option<Capture>, print: bool) -> Self {
        self.print = capture.is_none() || print;
        self.capture = capture;
        self
    }

    fn hook(&self) -> &'static str {
        match self.columns {
            Columns::Xdp => "xdp",
            Columns::Tc => "tc",
            Columns::Socket => "socket",
        }
    }

    fn write_counters(&mut self, out: &mut Sink) -> io::Result<()> {
        let [seen, matched, pass, drop] = self.counters.read();
        if out.json {
            out.obj_start("counters")?;
            out.field_u64("seen", seen)?;
            out.field_u64("matched", matched)?;
            out.field_u64("pass", pass)?;
            out.field_u64("drop", drop)?;
            out.obj_end()
        } else {
            eprintln!(
                "tracekit: {}: {seen} packets seen, {matched} matched: {pass} passed, {drop} dropped",
                self.label
            );
            Ok(())
        }
    }
}

const COLUMNS_XDP: &str = "IFACE    PROTO SOURCE                DESTINATION           FLAGS  LEN VERDICT";
const COLUMNS_TC: &str = "IFACE   DIR PROTO SOURCE                DESTINATION           FLAGS  LEN TTL TOS";
const COLUMNS_SOCKET: &str = "IFACE    DIR PROTO SOURCE                DESTINATION           FLAGS  LEN";

impl Printer for PacketPrinter<'_> {
    type Event = PacketEvent;
    const COLUMNS: &'static str = "";

    fn columns(&self) -> &str {
        match self.columns {
            Columns::Xdp => COLUMNS_XDP,
            Columns::Tc => COLUMNS_TC,
            Columns::Socket => COLUMNS_SOCKET,
        }
    }

    fn header(&self, ev: &PacketEvent) -> EventHeader<'_> {
        let h = &ev.hdr;
        EventHeader::Packet(PacketHeader {
            ts_ns: h.ts_ns,
            ifindex: h.ifindex,
            iface: self.names.get(h.ifindex),
            netns: h.netns,
            cpu: h.cpu,
            len: h.len,
            dir: if h.dir == (types::tk_dir::TK_DIR_EGRESS.0 as u8) { "egress" } else { "ingress" },
        })
    }

    fn row(&mut self, ev: &PacketEvent, out: &mut Sink) -> io::Result<()> {
        let p = &ev.pkt;
        let mut iface = Text::default();
        let name = self.names.get(ev.hdr.ifindex);
        let _ = iface.push(&crate::runtime::output::c_str(&name));
        for vlan in [p.vlan, p.vlan_inner].into_iter().filter(|&v| v != 0) {
            let _ = twrite!(iface, ".{vlan}");
        }
        let (src, dst) = endpoints(p);
        let w = out.w();
        match self.columns {
            Columns::Tc => fastfmt::col(w, iface.bytes(), 7)?,
            _ => fastfmt::col(w, iface.bytes(), 8)?,
        }
        if self.columns != Columns::Xdp {
            let dir = if ev.hdr.dir == (types::tk_dir::TK_DIR_EGRESS.0 as u8) { "out" } else { "in" };
            fastfmt::col(w, dir.as_bytes(), 3)?;
        }
        fastfmt::col(w, proto_label(p).bytes(), 5)?;
        fastfmt::col(w, src.bytes(), 21)?;
        fastfmt::col(w, dst.bytes(), 21)?;
        fastfmt::col(w, flags_label(p).bytes(), 5)?;
        if self.columns == Columns::Socket {
            fastfmt::int(w, ev.hdr.len)?;
        } else {
            fastfmt::int_col(w, ev.hdr.len, 4)?;
        }
        match self.columns {
            Columns::Xdp => w.write_all(verdict_name(ev.verdict).as_bytes())?,
            Columns::Tc => {
                fastfmt::int_col(w, p.ttl, 3)?;
                fastfmt::hex(w, u64::from(p.tos))?;
                if ev.mark != 0 {
                    w.write_all(b" mark=")?;
                    fastfmt::hex(w, u64::from(ev.mark))?;
                }
            }
            Columns::Socket => {}
        }
        if self.sock && p.proto == 6 {
            w.write_all(b" sock=")?;
            w.write_all(sock_state_name(ev).as_bytes())?;
        }
        Ok(())
    }

    fn json(&mut self, ev: &PacketEvent, out: &mut Sink) -> io::Result<()> {
        let p = &ev.pkt;
        out.field_str("hook", self.hook())?;
        out.field_u64("ethertype", p.ethertype.into())?;
        if p.vlan != 0 {
            out.field_u64("vlan", p.vlan.into())?;
        }
        if p.vlan_inner != 0 {
            out.field_u64("vlan_inner", p.vlan_inner.into())?;
        }
        if let (Some(s), Some(d)) = (addr(p.family, &p.saddr), addr(p.family, &p.daddr)) {
            out.field_str("family", if p.family == 4 { "ipv4" } else { "ipv6" })?;
            match proto_name(p.proto) {
                "" => out.field_u64("proto", p.proto.into())?,
                name => out.field_str("proto", name)?,
            }
            out.field_display("saddr", s)?;
            out.field_u64("sport", p.sport.into())?;
            out.field_display("daddr", d)?;
            out.field_u64("dport", p.dport.into())?;
            if p.proto == 6 {
                out.field_str("tcp_flags", flags_label(p).as_str())?;
            }
            if p.proto == 1 || p.proto == 58 {
                out.field_u64("icmp_type", p.icmp_type.into())?;
                out.field_u64("icmp_code", p.icmp_code.into())?;
            }
            out.field_u64("ttl", p.ttl.into())?;
            out.field_u64("dscp", (p.tos >> 2).into())?;
            out.field_u64("ecn", (p.tos & 3).into())?;
        }
        let flag = |f: types::tk_pkt_flag| p.flags & f.0 as u8 != 0;
        if flag(types::tk_pkt_flag::TK_PKT_TRUNCATED) {
            out.field_raw("truncated", "true")?;
        }
        if flag(types::tk_pkt_flag::TK_PKT_FRAGMENT) {
            out.field_raw("fragment", "true")?;
        }
        out.field_str("verdict", verdict_name(ev.verdict))?;
        if self.columns != Columns::Xdp {
            out.field_u64("mark", ev.mark.into())?;
        }
        if self.sock && p.proto == 6 {
            if ev.sk_found != 0 {
                out.object_start("sock")?;
                out.field_str("state", sock_state_name(ev))?;
                if ev.sk_cookie != 0 {
                    out.field_u64("cookie", ev.sk_cookie)?;
                    out.field_u64("uid", ev.sk_uid.into())?;
                }
                out.object_end()?;
            } else {
                out.field_raw("sock", "null")?;
            }
        }
        Ok(())
    }

    fn prints_events(&self) -> bool {
        self.print
    }

    fn trailer(&mut self, ev: &PacketEvent, bytes: &[u8]) -> io::Result<()> {
        let hook = self.hook();
        let sock = self.sock && ev.pkt.proto == 6;
        let Some(capture) = self.capture.as_mut() else { return Ok(()) };
        // perf buffer records are padded to 8 bytes: the event says how many are the frame's
        let frame = &bytes[..(ev.hdr.caplen as usize).min(bytes.len())];
        let name = self.names.get(ev.hdr.ifindex);
        let name = std::str::from_utf8(&name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())]).unwrap_or("?");
        let sock = sock.then(|| sock_state_name(ev));
        capture.write(ev, frame, ev.hdr.ts_ns as i128 + self.realtime_offset_ns, name, hook, sock)
    }

    fn tick(&mut self, out: &mut Sink) -> io::Result<()> {
        if !self.interval.due() {
            return Ok(());
        }
        self.write_counters(out)
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        if let Some(c) = self.capture.as_mut() {
            c.flush()?;
        }
        self.write_counters(out)
    }
}

pub fn verdict_name(v: u8) -> &'static str {
    if v == (types::tk_verdict::TK_VERDICT_DROP.0 as u8) { "drop" } else { "pass" }
}

fn sock_state_name(ev: &PacketEvent) -> &'static str {
    if ev.sk_found == 0 {
        return "none";
    }
    // the BPF_TCP_* numbering, which tcpstate names too
    crate::tools::trace::tcpstate::state_name(i32::from(ev.sk_state))
}

fn addr(family: u8, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
        _ => None,
    }
}

/// `addr:port` (`[v6]:port`), or just the address for protocols without ports; `-` for
/// frames that are not IP.
fn endpoints(p: &types::tk_pkt) -> (Text, Text) {
    let one = |raw: &[u8; 16], port: u16| {
        let mut t = Text::default();
        let has_ports = matches!(p.proto, 6 | 17 | 132);
        let _ = match addr(p.family, raw) {
            None => t.push("-"),
            Some(IpAddr::V6(a)) if has_ports => twrite!(t, "[{a}]:{port}"),
            Some(a) if has_ports => twrite!(t, "{a}:{port}"),
            Some(a) => twrite!(t, "{a}"),
        };
        t
    };
    (one(&p.saddr, p.sport), one(&p.daddr, p.dport))
}

fn proto_label(p: &types::tk_pkt) -> Text {
    let mut t = Text::default();
    let _ = match (p.family, proto_name(p.proto)) {
        (0, _) => match p.ethertype {
            0x0806 => t.push("ARP"),
            0x88cc => t.push("LLDP"),
            e => twrite!(t, "{e:#06x}"),
        },
        (_, "") => twrite!(t, "ip/{}", p.proto),
        (_, "icmpv6") => t.push("ICMP6"),
        (_, name) => t.push(&name.to_ascii_uppercase()),
    };
    t
}

/// TCP flags as tcpdump writes them (`S`, `S.`, `P.`, `F.`, `R`, `.`), ICMP as type/code,
/// then `frag`/`trunc` marks.
fn flags_label(p: &types::tk_pkt) -> Text {
    let mut t = Text::default();
    match p.proto {
        6 => {
            for (bit, c) in
                [(0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x20, "U"), (0x40, "E"), (0x80, "W"), (0x10, ".")]
            {
                if p.tcp_flags & bit != 0 {
                    let _ = t.push(c);
                }
            }
        }
        1 | 58 if p.flags & (types::tk_pkt_flag::TK_PKT_LATER_FRAG.0 as u8) == 0 => {
            let _ = twrite!(t, "{}/{}", p.icmp_type, p.icmp_code);
        }
        _ => {}
    }
    if p.flags & (types::tk_pkt_flag::TK_PKT_FRAGMENT.0 as u8) != 0 {
        let _ = t.push(if t.len == 0 { "frag" } else { ",frag" });
    }
    if p.flags & (types::tk_pkt_flag::TK_PKT_TRUNCATED.0 as u8) != 0 {
        let _ = t.push(if t.len == 0 { "trunc" } else { ",trunc" });
    }
    if t.len == 0 {
        let _ = t.push("-");
    }
    t
}

/// A short text built on the stack (rows are formatted without allocating).
struct Text {
    buf: [u8; 64],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Text { buf: [0; 64], len: 0 }
    }
}

impl Text {
    fn push(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.bytes()).unwrap_or("")
    }
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt() -> types::tk_pkt {
        types::tk_pkt::default()
    }

    #[test]
    fn tcp_flags_like_tcpdump() {
        let mut p = pkt();
        p.proto = 6;
        p.tcp_flags = 0x12;
        assert_eq!(flags_label(&p).as_str(), "S.");
        p.tcp_flags = 0x18;
        assert_eq!(flags_label(&p).as_str(), "P.");
        p.tcp_flags = 0x04;
        assert_eq!(flags_label(&p).as_str(), "R");
        p.flags = types::tk_pkt_flag::TK_PKT_TRUNCATED.0 as u8;
        assert_eq!(flags_label(&p).as_str(), "R,trunc");
    }

    #[test]
    fn endpoints_by_family_and_protocol() {
        let mut p = pkt();
        p.family = 4;
        p.proto = 17;
        p.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        p.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        p.sport = 5000;
        p.dport = 53;
        let (s, d) = endpoints(&p);
        assert_eq!((s.as_str(), d.as_str()), ("10.0.0.1:5000", "10.0.0.2:53"));
        p.family = 6;
        p.proto = 58;
        p.saddr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(endpoints(&p).0.as_str(), "::1");
        p.family = 0;
        p.ethertype = 0x0806;
        assert_eq!(endpoints(&p).0.as_str(), "-");
        assert_eq!(proto_label(&p).as_str(), "ARP");
    }
}
