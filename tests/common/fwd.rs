//! A forwarding fixture for `tracekit forward`: three namespaces in a line, like the kernel's
//! `tools/testing/selftests/bpf/prog_tests/tc_redirect.c`.
//!
//! ```text
//!   src ns                    fwd ns (the router)                  dst ns
//!   src0 10.201.1.2  <veth>  fwd0 10.201.1.1 | fwd1 10.201.2.1  <veth>  dst0 10.201.2.2
//!        fd00:201:1::2            fd00:201:1::1 | fd00:201:2::1              fd00:201:2::2
//! ```
//!
//! The router is `.1` (`::1`) on both subnets and the hosts are `.2` (`::2`); the MAC of every
//! interface is `02:00:0a:c9:` followed by the last two octets of its IPv4 address
//! (`src0` 02:00:0a:c9:01:02, `fwd0` …:01:01, `fwd1` …:02:01, `dst0` …:02:02).
//!
//! - `src` routes 10.201.2.0/24 and fd00:201:2::/64 via fwd0's address; `dst` routes the src
//!   subnet via fwd1's address. Nothing else is routed: no default route anywhere.
//! - Every neighbour entry is static (`nud permanent`), so no ARP or ND is needed; `del_dst_neigh`
//!   and `add_dst_neigh` remove and restore the router's entry for dst0 (IPv4 then resolves by
//!   ARP; IPv6 cannot resolve here, since no interface has a link-local address to solicit from).
//! - No IPv6 link-local addresses, no DAD, no router advertisements (as `net::VethPair`).
//! - The fwd namespace forwards (`net.ipv4.conf.all.forwarding=1`, `net.ipv6.conf.all.forwarding=1`):
//!   `bpf_fib_lookup` answers `BPF_FIB_LKUP_RET_FWD_DISABLED` when the ingress device does not
//!   forward. Whether the kernel or an XDP/TC program forwarded a packet is told by
//!   `kernel_forwarded` (the kernel's own forwarding counters of the fwd namespace).
//! - An `XDP_PASS` program sits on src0 and dst0 (opt out with `Fwd::with_napi(tag, false)` or
//!   `set_napi`): a frame that XDP redirects out of a veth reaches the peer only if the peer
//!   has NAPI, which an XDP program on the peer turns on (`ethtool -K gro on` would too, but not on
//!   5.10, and ethtool is not installed everywhere).
//!
//! - Transmit checksum offload is off on src0 and dst0 (`ethtool -K DEV tx off`; `set_tx_checksum`
//!   turns it back on). With it on, the veth default, TCP and UDP leave the end hosts with a
//!   partial checksum (CHECKSUM_PARTIAL) that a later device was to fill in. An XDP redirect in
//!   native mode turns the packet into a bare frame and that state is lost: dst receives a wrong
//!   checksum and drops the segment (`snmp(dst, "Tcp", "InCsumErrors")` moves). Packets from a
//!   NIC carry complete checksums; so do the end hosts here. Kernel forwarding, TC and XDP in
//!   skb mode keep the skb and are not affected.
//!
//! Each fixture owns its namespaces (removed on drop, also on panic), so tests run in parallel.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Tracer;
use super::net::{self, Netns, mac_str};

/// IPv4 or IPv6, for the helpers that do the same thing over either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
}

impl Fam {
    pub const BOTH: [Fam; 2] = [Fam::V4, Fam::V6];

    /// `ipv4` / `ipv6`, as tracekit's JSON names the family.
    pub fn json(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4",
            Fam::V6 => "ipv6",
        }
    }
}

/// Packet counters of one interface (`ip -s -j link show`, stats64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
}

/// What came back for one echo request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    /// The echo reply, with the TTL (IPv4) or hop limit (IPv6) it arrived with.
    Reply { ttl: u8 },
    /// ICMP time exceeded (v4 type 11, v6 type 3) from the router.
    TimeExceeded { from: IpAddr },
    /// ICMP destination unreachable (v4 type 3, v6 type 1) with its code.
    Unreachable { from: IpAddr, code: u8 },
    /// Nothing within the wait.
    Lost,
}

/// The three namespaces; see the module documentation for the layout.
pub struct Fwd {
    pub src: Netns,
    pub fwd: Netns,
    pub dst: Netns,
    pub ifindex_src0: u32,
    pub ifindex_fwd0: u32,
    pub ifindex_fwd1: u32,
    pub ifindex_dst0: u32,
    /// src0's addresses (the sender).
    pub ip4_src: Ipv4Addr,
    pub ip6_src: Ipv6Addr,
    /// fwd0's addresses (src's gateway).
    pub ip4_fwd0: Ipv4Addr,
    pub ip6_fwd0: Ipv6Addr,
    /// fwd1's addresses (dst's gateway).
    pub ip4_fwd1: Ipv4Addr,
    pub ip6_fwd1: Ipv6Addr,
    /// dst0's addresses (the receiver).
    pub ip4_dst: Ipv4Addr,
    pub ip6_dst: Ipv6Addr,
    pub mac_src0: [u8; 6],
    pub mac_fwd0: [u8; 6],
    pub mac_fwd1: [u8; 6],
    pub mac_dst0: [u8; 6],
    /// The XDP_PASS links that give src0 / dst0 NAPI, by interface name.
    napi: Vec<(&'static str, OwnedFd)>,
}

pub const SRC0: &str = "src0";
pub const FWD0: &str = "fwd0";
pub const FWD1: &str = "fwd1";
pub const DST0: &str = "dst0";

impl Fwd {
    /// The fixture with XDP_PASS (NAPI) on src0 and dst0.
    #[track_caller]
    pub fn new(tag: &str) -> Fwd {
        Self::with_napi(tag, true)
    }

    /// `napi: false` leaves src0 and dst0 without an XDP program: frames that XDP redirects
    /// out of fwd0 / fwd1 are then dropped by the veth driver.
    #[track_caller]
    pub fn with_napi(tag: &str, napi: bool) -> Fwd {
        let src = Netns::new(&format!("{tag}-s"));
        let fwd = Netns::new(&format!("{tag}-f"));
        let dst = Netns::new(&format!("{tag}-d"));
        let mac = |a: u8, b: u8| [0x02, 0x00, 0x0a, 0xc9, a, b];
        let mut f = Fwd {
            ifindex_src0: 0,
            ifindex_fwd0: 0,
            ifindex_fwd1: 0,
            ifindex_dst0: 0,
            ip4_src: Ipv4Addr::new(10, 201, 1, 2),
            ip6_src: "fd00:201:1::2".parse().unwrap(),
            ip4_fwd0: Ipv4Addr::new(10, 201, 1, 1),
            ip6_fwd0: "fd00:201:1::1".parse().unwrap(),
            ip4_fwd1: Ipv4Addr::new(10, 201, 2, 1),
            ip6_fwd1: "fd00:201:2::1".parse().unwrap(),
            ip4_dst: Ipv4Addr::new(10, 201, 2, 2),
            ip6_dst: "fd00:201:2::2".parse().unwrap(),
            mac_src0: mac(1, 2),
            mac_fwd0: mac(1, 1),
            mac_fwd1: mac(2, 1),
            mac_dst0: mac(2, 2),
            napi: Vec::new(),
            src,
            fwd,
            dst,
        };
        // Both veths are created inside fwd with the peer directly in src / dst: the root
        // namespace never sees them.
        for (dev, devmac, peer, peermac, peerns) in
            [(FWD0, f.mac_fwd0, SRC0, f.mac_src0, &f.src), (FWD1, f.mac_fwd1, DST0, f.mac_dst0, &f.dst)]
        {
            f.fwd.ip(&[
                "link",
                "add",
                dev,
                "address",
                &mac_str(&devmac),
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "address",
                &mac_str(&peermac),
                "netns",
                peerns.name(),
            ]);
        }
        // After the devices exist: writing `all` sets every existing device (and `default`).
        f.fwd.sysctl("ipv4/conf/all/forwarding", "1");
        f.fwd.sysctl("ipv6/conf/all/forwarding", "1");
        let (ip4_src, ip6_src, ip4_fwd0, ip6_fwd0) = (f.ip4_src, f.ip6_src, f.ip4_fwd0, f.ip6_fwd0);
        let (ip4_fwd1, ip6_fwd1, ip4_dst, ip6_dst) = (f.ip4_fwd1, f.ip6_fwd1, f.ip4_dst, f.ip6_dst);
        for (ns, dev, ip4, ip6) in [
            (&f.src, SRC0, ip4_src, ip6_src),
            (&f.fwd, FWD0, ip4_fwd0, ip6_fwd0),
            (&f.fwd, FWD1, ip4_fwd1, ip6_fwd1),
            (&f.dst, DST0, ip4_dst, ip6_dst),
        ] {
            ns.ip(&["link", "set", dev, "addrgenmode", "none"]);
            ns.sysctl(&format!("ipv6/conf/{dev}/accept_ra"), "0");
            ns.sysctl(&format!("ipv6/conf/{dev}/mldv2_unsolicited_report_interval"), "1");
            ns.sysctl(&format!("ipv6/conf/{dev}/mldv1_unsolicited_report_interval"), "1");
            ns.ip(&["addr", "add", &format!("{ip4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", dev, "nodad"]);
        }
        let perm = |ns: &Netns, ip: IpAddr, m: &[u8; 6], dev: &str| {
            ns.ip(&["neigh", "add", &ip.to_string(), "lladdr", &mac_str(m), "dev", dev, "nud", "permanent"]);
        };
        perm(&f.src, ip4_fwd0.into(), &f.mac_fwd0, SRC0);
        perm(&f.src, ip6_fwd0.into(), &f.mac_fwd0, SRC0);
        perm(&f.fwd, ip4_src.into(), &f.mac_src0, FWD0);
        perm(&f.fwd, ip6_src.into(), &f.mac_src0, FWD0);
        perm(&f.fwd, ip4_dst.into(), &f.mac_dst0, FWD1);
        perm(&f.fwd, ip6_dst.into(), &f.mac_dst0, FWD1);
        perm(&f.dst, ip4_fwd1.into(), &f.mac_fwd1, DST0);
        perm(&f.dst, ip6_fwd1.into(), &f.mac_fwd1, DST0);
        for (ns, dev) in [(&f.src, SRC0), (&f.fwd, FWD0), (&f.fwd, FWD1), (&f.dst, DST0)] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        f.src.ip(&["route", "add", "10.201.2.0/24", "via", &ip4_fwd0.to_string(), "dev", SRC0]);
        f.src.ip(&["-6", "route", "add", "fd00:201:2::/64", "via", &ip6_fwd0.to_string(), "dev", SRC0]);
        f.dst.ip(&["route", "add", "10.201.1.0/24", "via", &ip4_fwd1.to_string(), "dev", DST0]);
        f.dst.ip(&["-6", "route", "add", "fd00:201:1::/64", "via", &ip6_fwd1.to_string(), "dev", DST0]);
        f.ifindex_src0 = f.src.ifindex(SRC0);
        f.ifindex_fwd0 = f.fwd.ifindex(FWD0);
        f.ifindex_fwd1 = f.fwd.ifindex(FWD1);
        f.ifindex_dst0 = f.dst.ifindex(DST0);
        // Complete checksums from the end hosts, as a NIC would deliver them (see the module
        // documentation: an XDP redirect loses a partial checksum).
        f.set_tx_checksum(SRC0, false);
        f.set_tx_checksum(DST0, false);
        if napi {
            f.set_napi(SRC0, true);
            f.set_napi(DST0, true);
        }
        f.wait_ready();
        f
    }

    /// The namespace that holds `dev` (one of src0, fwd0, fwd1, dst0).
    #[track_caller]
    pub fn ns_of(&self, dev: &str) -> &Netns {
        match dev {
            SRC0 => &self.src,
            FWD0 | FWD1 => &self.fwd,
            DST0 => &self.dst,
            _ => panic!("the forwarding fixture has no interface `{dev}`"),
        }
    }

    /// src's address of the family (the sender).
    pub fn src_addr(&self, fam: Fam) -> IpAddr {
        match fam {
            Fam::V4 => self.ip4_src.into(),
            Fam::V6 => self.ip6_src.into(),
        }
    }

    /// dst's address of the family (the receiver).
    pub fn dst_addr(&self, fam: Fam) -> IpAddr {
        match fam {
            Fam::V4 => self.ip4_dst.into(),
            Fam::V6 => self.ip6_dst.into(),
        }
    }

    /// fwd0's address of the family (the router as src sees it: where ICMP errors come from).
    pub fn fwd0_addr(&self, fam: Fam) -> IpAddr {
        match fam {
            Fam::V4 => self.ip4_fwd0.into(),
            Fam::V6 => self.ip6_fwd0.into(),
        }
    }

    /// Attaches (`on`) or detaches the XDP_PASS program that gives `dev` (src0 or dst0) NAPI.
    #[track_caller]
    pub fn set_napi(&mut self, dev: &'static str, on: bool) {
        assert!(dev == SRC0 || dev == DST0, "NAPI is set on the end hosts' interfaces, not `{dev}`");
        let has = self.napi.iter().any(|(d, _)| *d == dev);
        if on && !has {
            let fd = net::attach_dummy_xdp(self.ns_of(dev), dev);
            self.napi.push((dev, fd));
        } else if !on {
            self.napi.retain(|(d, _)| *d != dev);
        }
    }

    /// Carrier on all four interfaces, IPv6 addresses not tentative, and then no packet sent by any
    /// of them for 200 ms (the link-up MLD reports are over).
    #[track_caller]
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let ready = |dev: &str| {
            let ns = self.ns_of(dev);
            let json: Value = serde_json::from_str(&ns.ip(&["-j", "addr", "show", "dev", dev])).expect("JSON");
            let link = &json[0];
            let v6: Vec<&Value> =
                link["addr_info"].as_array().into_iter().flatten().filter(|a| a["family"] == "inet6").collect();
            link["operstate"] == "UP"
                && !v6.is_empty()
                && v6.iter().all(|a| a["tentative"] != true && a["dadfailed"] != true)
        };
        while ![SRC0, FWD0, FWD1, DST0].iter().all(|d| ready(d)) {
            assert!(Instant::now() < deadline, "forwarding fixture not up after 5 s: {}", self.fwd.name());
            thread::sleep(Duration::from_millis(10));
        }
        let tx = || [SRC0, FWD0, FWD1, DST0].map(|d| self.stats(d).tx_packets);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = tx();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(200) {
            assert!(Instant::now() < deadline, "forwarding fixture still sending after 5 s: {}", self.fwd.name());
            thread::sleep(Duration::from_millis(20));
            let now = tx();
            if now != last {
                (last, quiet_since) = (now, Instant::now());
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Kernel state
    // -----------------------------------------------------------------------------------------

    /// Datagrams the fwd namespace's kernel forwarded: (`Ip: ForwDatagrams` of /proc/net/snmp,
    /// `Ip6OutForwDatagrams` of /proc/net/snmp6). Packets an XDP or TC program redirects never
    /// reach the kernel's forwarding path and are not counted.
    pub fn kernel_forwarded(&self) -> (u64, u64) {
        let (snmp, snmp6) = self.fwd.run_in(|| {
            // thread-self: /proc/self/net would show the namespace of the process's main thread.
            (
                std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read /proc/thread-self/net/snmp"),
                std::fs::read_to_string("/proc/thread-self/net/snmp6").expect("read /proc/thread-self/net/snmp6"),
            )
        });
        let mut ip = snmp.lines().filter(|l| l.starts_with("Ip: "));
        let (names, values) = (ip.next().expect("Ip: header"), ip.next().expect("Ip: values"));
        let v4 = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "ForwDatagrams")
            .and_then(|(_, v)| v.parse().ok())
            .expect("Ip: ForwDatagrams in /proc/net/snmp");
        let v6 = snmp6
            .lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .find(|(n, _)| *n == "Ip6OutForwDatagrams")
            .and_then(|(_, v)| v.trim().parse().ok())
            .expect("Ip6OutForwDatagrams in /proc/net/snmp6");
        (v4, v6)
    }

    /// One counter of /proc/net/snmp in `ns` (`proto` like `Ip`, `Tcp`, `Udp`, `Icmp`; `field`
    /// like `InCsumErrors`).
    #[track_caller]
    pub fn snmp(&self, ns: &Netns, proto: &str, field: &str) -> u64 {
        let snmp = ns
            .run_in(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
            .unwrap_or_else(|e| panic!("read /proc/thread-self/net/snmp in `{}`: {e}", ns.name()));
        let prefix = format!("{proto}: ");
        let mut rows = snmp.lines().filter(|l| l.starts_with(&prefix));
        let (names, values) = (rows.next().unwrap_or(""), rows.next().unwrap_or(""));
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == field)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{proto}: {field}` in /proc/net/snmp of `{}`", ns.name()))
    }

    /// The counters of `dev` (src0, fwd0, fwd1 or dst0), in its namespace.
    #[track_caller]
    pub fn stats(&self, dev: &str) -> LinkStats {
        let v: Value = serde_json::from_str(&self.ns_of(dev).ip(&["-s", "-j", "link", "show", "dev", dev]))
            .expect("`ip -s -j link` is JSON");
        let s = &v[0]["stats64"];
        let n = |dir: &str, k: &str| s[dir][k].as_u64().unwrap_or(0);
        LinkStats {
            rx_packets: n("rx", "packets"),
            rx_bytes: n("rx", "bytes"),
            rx_dropped: n("rx", "dropped"),
            tx_packets: n("tx", "packets"),
            tx_bytes: n("tx", "bytes"),
            tx_dropped: n("tx", "dropped"),
        }
    }

    /// Turns transmit checksum offload of `dev` on or off (`ethtool -K DEV tx on|off`, done with
    /// the SIOCETHTOOL ioctl since ethtool may not be installed). With it on (the veth default),
    /// TCP and UDP sent from the namespace leave with a partial checksum (CHECKSUM_PARTIAL) that a
    /// later device was to complete: see `Fwd::with_opts`.
    #[track_caller]
    pub fn set_tx_checksum(&self, dev: &str, on: bool) {
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        const ETHTOOL_GTXCSUM: u32 = 0x16;
        const ETHTOOL_STXCSUM: u32 = 0x17;
        let name = dev.to_owned();
        let got = self.ns_of(dev).run_in(move || -> io::Result<u32> {
            // SAFETY: a datagram socket only for the ioctl; checked, then owned.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is fresh and owned only here.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut out = 0;
            for cmd in [ETHTOOL_STXCSUM, ETHTOOL_GTXCSUM] {
                let mut v = EthtoolValue { cmd, data: u32::from(on) };
                // SAFETY: ifreq is plain data; all zeroes is a valid value.
                let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
                for (d, b) in req.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
                    *d = b as libc::c_char;
                }
                req.ifr_ifru.ifru_data = (&mut v as *mut EthtoolValue).cast();
                // SAFETY: SIOCETHTOOL reads/writes `v`, which outlives the call.
                if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                out = v.data;
            }
            Ok(out)
        });
        let got = got.unwrap_or_else(|e| panic!("setting tx checksumming of {dev}: {e}"));
        assert_eq!(got != 0, on, "tx checksumming of {dev} did not change");
    }

    /// Deletes the router's neighbour entry for dst0 (`fam`'s address).
    #[track_caller]
    pub fn del_dst_neigh(&self, fam: Fam) {
        self.fwd.ip(&["neigh", "del", &self.dst_addr(fam).to_string(), "dev", FWD1]);
    }

    /// Restores the router's static (`permanent`) neighbour entry for dst0 (replacing whatever
    /// the kernel resolved meanwhile).
    #[track_caller]
    pub fn add_dst_neigh(&self, fam: Fam) {
        let (ip, mac) = (self.dst_addr(fam).to_string(), mac_str(&self.mac_dst0));
        self.fwd.ip(&["neigh", "replace", &ip, "lladdr", &mac, "dev", FWD1, "nud", "permanent"]);
    }

    /// The state of the router's neighbour entry for dst0 (`PERMANENT`, `REACHABLE`, `STALE`,
    /// `INCOMPLETE`, `FAILED`, …), or None without one.
    pub fn dst_neigh_state(&self, fam: Fam) -> Option<String> {
        let out = self.fwd.ip(&["-j", "neigh", "show", &self.dst_addr(fam).to_string(), "dev", FWD1]);
        let v: Value = serde_json::from_str(&out).ok()?;
        let e = v.as_array()?.first()?;
        e["state"].as_array()?.first()?.as_str().map(str::to_owned)
    }

    /// Routes dst's address (a /32 or /128, more specific than the connected subnet) in the router
    /// as `kind` (`unreachable`, `blackhole`, `prohibit`, `throw`, …); `None` removes that route,
    /// and dst is reached through fwd1 again.
    #[track_caller]
    pub fn route_dst(&self, fam: Fam, kind: Option<&str>) {
        let (flag, prefix) = match fam {
            Fam::V4 => ("-4", format!("{}/32", self.ip4_dst)),
            Fam::V6 => ("-6", format!("{}/128", self.ip6_dst)),
        };
        match kind {
            Some(k) => {
                self.fwd.ip(&[flag, "route", "replace", k, &prefix]);
            }
            None => {
                let out = self.fwd.exec(&["ip", flag, "route", "del", &prefix]);
                // Deleting a route that is not there is fine: restore is idempotent.
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success() || err.contains("No such process"),
                    "ip {flag} route del {prefix} in `{}`: {err}",
                    self.fwd.name()
                );
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Traffic (src → dst through the router)
    // -----------------------------------------------------------------------------------------

    /// `count` echo requests from src to dst, each waiting up to 1 s; how many replies came.
    pub fn ping(&self, fam: Fam, count: u32) -> u32 {
        self.ping_opts(fam, count, None, Duration::from_secs(1))
            .iter()
            .filter(|e| matches!(e, Echo::Reply { .. }))
            .count() as u32
    }

    /// Echo requests from src to dst with an optional TTL / hop limit, each waiting up to `wait`
    /// for its answer: what came back for each. Panics if the raw socket cannot be used.
    pub fn ping_opts(&self, fam: Fam, count: u32, ttl: Option<u8>, wait: Duration) -> Vec<Echo> {
        let to = self.dst_addr(fam);
        self.src
            .run_in(move || icmp_echo(to, count, ttl, wait))
            .unwrap_or_else(|e| panic!("ping {to} from netns `{}`: {e}", self.src.name()))
    }

    /// Sends `bytes` bytes (a fixed pseudo-random pattern) over one TCP connection from src to a
    /// listener on dst, and checks that dst received exactly those bytes. Every step is bounded by
    /// `timeout`. Err says what went wrong (connect refused / timed out, short read, a mismatch).
    pub fn tcp_transfer(&self, fam: Fam, bytes: usize, timeout: Duration) -> Result<(), String> {
        let bind = SocketAddr::new(self.dst_addr(fam), 0);
        let listener =
            self.dst.run_in(|| TcpListener::bind(bind)).map_err(|e| format!("listen on {bind} in dst: {e}"))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let server = self.dst.spawn_in(move || -> io::Result<Vec<u8>> {
            let deadline = Instant::now() + timeout;
            let mut s = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "no connection arrived"));
                    }
                    Err(e) => return Err(e),
                }
            };
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(timeout))?;
            let mut got = Vec::with_capacity(bytes);
            s.read_to_end(&mut got)?;
            // Closing tells the client that everything was read.
            s.shutdown(Shutdown::Both)?;
            Ok(got)
        });
        let data = pattern(bytes);
        let sent = data.clone();
        let client = self.src.run_in(move || -> io::Result<()> {
            let mut s = TcpStream::connect_timeout(&to, timeout)?;
            s.set_write_timeout(Some(timeout))?;
            s.set_read_timeout(Some(timeout))?;
            s.write_all(&sent)?;
            s.shutdown(Shutdown::Write)?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)?;
            Ok(())
        });
        let got = server.join().map_err(|_| "the TCP server thread panicked".to_owned())?;
        client.map_err(|e| format!("client to {to}: {e}"))?;
        let got = got.map_err(|e| format!("server on {to}: {e}"))?;
        if got.len() != data.len() {
            return Err(format!("dst received {} of {} bytes", got.len(), data.len()));
        }
        if let Some(at) = got.iter().zip(&data).position(|(a, b)| a != b) {
            return Err(format!("dst received different bytes from offset {at}"));
        }
        Ok(())
    }

    /// Sends `count` datagrams from src to a socket on dst; how many of them (each distinct and
    /// intact) dst received within `timeout`.
    ///
    /// All `count` are sent before the first is read, so the receiving socket's buffer is sized
    /// to hold them all. Its default (`net.core.rmem_default`, 212992) is not enough on every
    /// kernel: with the XDP_PASS program on dst0, veth's XDP receive path in the 5.10 and 6.1
    /// kernels of the VM matrix puts each frame into a page of its own, and every datagram is
    /// charged a truesize of 4352 bytes (4096 + the sk_buff) however small it is, forwarded by
    /// XDP or by the kernel alike. 212992 holds 49 of those: the 50th was dropped at the socket
    /// (`Udp: RcvbufErrors`). 6.18 charges about 1 KiB a datagram.
    pub fn udp(&self, fam: Fam, count: usize, timeout: Duration) -> usize {
        let bind = SocketAddr::new(self.dst_addr(fam), 0);
        let rx = self.dst.run_in(|| UdpSocket::bind(bind)).unwrap_or_else(|e| panic!("bind {bind} in dst: {e}"));
        // Up to a page and an sk_buff per datagram, twice over (the kernel doubles the value for
        // its own overhead anyway); FORCE: above net.core.rmem_max, which root may.
        let rcvbuf = i32::try_from((count + 16) * 8192).expect("a receive buffer below 2 GiB");
        setsockopt_int(&rx, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcvbuf)
            .unwrap_or_else(|e| panic!("SO_RCVBUFFORCE {rcvbuf} on the UDP socket in dst: {e}"));
        let to = rx.local_addr().expect("local_addr");
        let from = SocketAddr::new(self.src_addr(fam), 0);
        self.src
            .run_in(move || -> io::Result<()> {
                let s = UdpSocket::bind(from)?;
                for i in 0..count {
                    s.send_to(format!("tracekit forward {i}").as_bytes(), to)?;
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("udp from src to {to}: {e}"));
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while seen.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || rx.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match rx.recv(&mut buf) {
                Ok(n) => {
                    if let Some(i) = std::str::from_utf8(&buf[..n])
                        .ok()
                        .and_then(|s| s.strip_prefix("tracekit forward "))
                        .and_then(|i| i.parse::<usize>().ok())
                    {
                        seen.insert(i);
                    }
                }
                Err(_) => break,
            }
        }
        seen.len()
    }

    // -----------------------------------------------------------------------------------------
    // tracekit
    // -----------------------------------------------------------------------------------------

    /// Starts `tracekit forward fwd0 fwd1 --netns <fwd> --json EXTRA… -v` and returns once it is
    /// attached.
    pub fn tracekit_forward(&self, extra: &[&str]) -> Tracer {
        Tracer::start(&self.forward_args(extra))
    }

    /// The arguments `tracekit_forward` runs with (for `Tracer::start_opts` or `common::run`).
    pub fn forward_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["forward", FWD0, FWD1, "--netns", self.fwd.name(), "--json"];
        args.extend_from_slice(extra);
        args
    }
}

/// `len` bytes of a fixed xorshift sequence (not compressible, not periodic in a segment).
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn setsockopt_int(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value is a live c_int for the duration of the call, its size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Reads the source address out of a raw IPv4 packet (the IPv4 raw socket delivers the header).
fn v4_src(pkt: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]))
}

/// Echo requests on a raw ICMP socket of the calling thread's namespace, with an optional TTL,
/// classifying what comes back for each (matched by identifier and sequence, also inside the
/// packet an ICMP error quotes, so concurrent pings do not see each other's answers).
fn icmp_echo(addr: IpAddr, count: u32, ttl: Option<u8>, wait: Duration) -> io::Result<Vec<Echo>> {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let v4 = addr.is_ipv4();
    let request = net::echo_types(v4).0;
    let fd = net::icmp_socket(v4)?;
    if !v4 {
        setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
    }
    if let Some(ttl) = ttl {
        if v4 {
            setsockopt_int(&fd, libc::IPPROTO_IP, libc::IP_TTL, i32::from(ttl))?;
        } else {
            setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, i32::from(ttl))?;
        }
    }
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let ident = (std::process::id() as u16).wrapping_mul(37) ^ (unique as u16).wrapping_mul(0x9e37);
    // 48 bytes counting up; a reply carries them back.
    let mut payload = [0u8; 48];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let seq = seq as u16;
        net::send_echo(&fd, addr, ident, seq, &payload)?;
        let ours =
            |icmp: &[u8]| icmp.len() >= 8 && icmp[4..6] == ident.to_be_bytes() && icmp[6..8] == seq.to_be_bytes();
        let deadline = Instant::now() + wait;
        let mut got = Echo::Lost;
        while net::wait_readable(&fd, deadline)? {
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut control = [0u64; 16];
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            // SAFETY: msghdr is plain old data; all zeroes is a valid value.
            let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
            mh.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
            mh.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            mh.msg_control = control.as_mut_ptr().cast();
            mh.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: mh points to buffers (name, iov, control) valid for the lengths it gives.
            let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut mh, libc::MSG_DONTWAIT) };
            if n < 0 {
                continue;
            }
            // IPv6: the hop limit the packet arrived with, from its IPV6_HOPLIMIT control message.
            let mut hoplimit = 0u8;
            // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled in, within
            // msg_controllen; the data of an IPV6_HOPLIMIT message is one c_int.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&mh);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                        hoplimit = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) as u8;
                    }
                    c = libc::CMSG_NXTHDR(&mh, c);
                }
            }
            let msg = &buf[..n as usize];
            if v4 {
                // Raw IPv4 sockets deliver the IP header too.
                let ihl = usize::from(msg.first().map_or(0, |b| b & 0x0f)) * 4;
                let (Some(ip_ttl), Some(icmp)) = (msg.get(8), msg.get(ihl..)) else { continue };
                if icmp.len() < 8 {
                    continue;
                }
                match icmp[0] {
                    0 if ours(icmp) && icmp[8..] == payload[..] => {
                        got = Echo::Reply { ttl: *ip_ttl };
                        break;
                    }
                    3 | 11 => {
                        // The quoted packet: its IPv4 header, then at least 8 bytes of ours.
                        let inner = &icmp[8..];
                        let ihl = usize::from(inner.first().map_or(0, |b| b & 0x0f)) * 4;
                        if inner.len() >= 20
                            && inner[9] == 1
                            && inner.get(ihl..).is_some_and(|q| q.first() == Some(&request) && ours(q))
                        {
                            got = if icmp[0] == 11 {
                                Echo::TimeExceeded { from: v4_src(msg) }
                            } else {
                                Echo::Unreachable { from: v4_src(msg), code: icmp[1] }
                            };
                            break;
                        }
                    }
                    _ => {}
                }
            } else {
                // Raw IPv6 sockets deliver the ICMPv6 message only; the sender is in `from`.
                // SAFETY: an AF_INET6 socket fills a sockaddr_in6.
                let sin6 = unsafe { &*(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let src = IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr));
                if msg.len() < 8 {
                    continue;
                }
                match msg[0] {
                    129 if ours(msg) && msg[8..] == payload[..] => {
                        got = Echo::Reply { ttl: hoplimit };
                        break;
                    }
                    1 | 3 => {
                        // The quoted packet: a 40-byte IPv6 header (next header 58), then ours.
                        let inner = &msg[8..];
                        if inner.len() >= 48 && inner[6] == 58 && inner[40] == request && ours(&inner[40..]) {
                            got = if msg[0] == 3 {
                                Echo::TimeExceeded { from: src }
                            } else {
                                Echo::Unreachable { from: src, code: msg[1] }
                            };
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        out.push(got);
    }
    Ok(out)
}

/// tracekit's `fwd_counts` object for `iface` in its JSON output (the last one, i.e. the final
/// counts when `-i` printed earlier ones); panics listing what was printed if there is none.
#[track_caller]
pub fn fwd_counts<'a>(json: &'a [Value], iface: &str) -> &'a Value {
    json.iter()
        .rev()
        .find(|v| v["type"] == "fwd_counts" && v["iface"] == iface)
        .unwrap_or_else(|| panic!("no fwd_counts for {iface} in tracekit's output: {json:?}"))
}

/// A counter of a `fwd_counts` object (`forwarded`, `passed`, …), or `reasons.NAME` / `how.NAME`
/// (absent in `reasons`/`how` means 0; absent at the top level panics).
#[track_caller]
pub fn count(c: &Value, key: &str) -> u64 {
    match key.split_once('.') {
        Some((obj, name)) => c[obj][name].as_u64().unwrap_or(0),
        None => c[key].as_u64().unwrap_or_else(|| panic!("fwd_counts has no number `{key}`: {c}")),
    }
}
