//! Network fixtures for the packet-tool tests: namespaces that are removed on drop (also when the
//! test panics), a veth pair between two of them with fixed addresses and static neighbours,
//! bounded traffic helpers (TCP echo, UDP, ICMP echo) that only ever address these namespaces,
//! and `leftovers` / `assert_clean` to check that nothing BPF stays attached.
//!
//! Everything here runs as root (call `common::require_root` first). Names are unique per process
//! and per call, and nothing is shared between fixtures, so tests run in parallel.
//!
//! System requirements: `ip` and `tc` (iproute2, on every Debian) and `bpftool` (installed by the
//! project's setup). `ping` is not needed: ICMP echo is done here on a raw socket.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Runs `ip ARGS` (or any program) and returns its output; panics only if it cannot start.
fn cmd(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{prog}`: {e} (is it installed and on PATH?)"))
}

#[track_caller]
fn cmd_ok(prog: &str, args: &[&str]) -> String {
    let out = cmd(prog, args);
    assert!(
        out.status.success(),
        "`{prog} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes `tk-...-PID-N` namespaces whose process is gone (a test run killed by a timeout or
/// SIGKILL could not run its `Drop`). Namespaces of live processes are never touched.
fn reap_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(dir) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.rsplitn(3, '-');
            let (Some(n), Some(pid), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if !rest.starts_with("tk-") || n.parse::<u32>().is_err() {
                continue;
            }
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = cmd("ip", &["netns", "del", &name]);
            }
        }
    });
}

/// Moves the calling thread into the network namespace `ns` (an fd of /run/netns/NAME).
fn enter(ns: &File, name: &str) {
    // SAFETY: setns only reads the fd; CLONE_NEWNET changes this thread's namespace alone.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert!(rc == 0, "setns into netns `{name}`: {}", io::Error::last_os_error());
}

/// A network namespace `tk-<tag>-<pid>-<n>` with `lo` up, deleted on drop (also on panic).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    #[track_caller]
    pub fn new(tag: &str) -> Netns {
        reap_stale();
        let name = format!("tk-{tag}-{}-{}", std::process::id(), next_id());
        cmd_ok("ip", &["netns", "add", &name]);
        // From here on Drop removes it, whatever fails next.
        let ns = Netns { name };
        cmd_ok("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// An fd of the namespace (for setns, `attach_netns`, prog queries).
    #[track_caller]
    pub fn open(&self) -> File {
        File::open(self.path()).unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()))
    }

    /// `ip netns exec NAME ARGS...`; never panics on a failing command (check `status`).
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        cmd("ip", &all)
    }

    /// Like `exec`, but panics with stderr unless it succeeds; returns stdout.
    #[track_caller]
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "`{}` in netns `{}` failed ({}): {}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n NAME ARGS...`, panicking on failure; returns stdout.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        cmd_ok("ip", &all)
    }

    /// Runs `f` on a fresh thread that has entered the namespace, and returns its result (a panic
    /// in `f` is re-raised here). Sockets created in `f` stay in the namespace after it returns.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.open();
        let name = self.name.as_str();
        thread::scope(|s| {
            let h = s.spawn(move || {
                enter(&ns, name);
                drop(ns);
                f()
            });
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Like `run_in`, in the background. The thread keeps the namespace alive until it ends,
    /// but the name is still removed when this `Netns` drops.
    pub fn spawn_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let ns = self.open();
        let name = self.name.clone();
        thread::spawn(move || {
            enter(&ns, &name);
            drop(ns);
            f()
        })
    }

    /// Interface names in the namespace (`lo` included).
    pub fn interfaces(&self) -> Vec<String> {
        let json: Value = serde_json::from_str(&self.ip(&["-j", "link", "show"])).expect("`ip -j link` is JSON");
        json.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(str::to_owned)).collect()
    }

    /// ifindex of `ifname` inside the namespace.
    #[track_caller]
    pub fn ifindex(&self, ifname: &str) -> u32 {
        let c = std::ffi::CString::new(ifname).expect("no NUL in an interface name");
        // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
        let idx = self.run_in(|| unsafe { libc::if_nametoindex(c.as_ptr()) });
        assert!(idx != 0, "no interface `{ifname}` in netns `{}`", self.name);
        idx
    }

    /// Writes a per-namespace sysctl under /proc/sys/net (`key` like `ipv6/conf/tkv0/forwarding`).
    #[track_caller]
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/net/{key}");
        self.run_in(|| std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("write {path} in netns `{}`: {e}", self.name));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = cmd("ip", &["netns", "del", &self.name]);
        if !out.status.success() {
            let _ = writeln!(
                io::stderr(),
                "warning: `ip netns del {}` failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Two namespaces joined by a veth pair: `tkv0` in `a`, `tkv1` in `b`, 10.200.0.1/24 and
/// fd00:200::1/64 on `a`, .2 and ::2 on `b`, fixed MACs, static neighbour entries both ways.
/// No IPv6 link-local addresses (so no DAD, router solicitations or neighbour discovery); the
/// one-off MLD reports of link-up are over before `new` returns, so the link is quiet until the
/// test sends something.
#[derive(Debug)]
pub struct VethPair {
    pub a: Netns,
    pub b: Netns,
    pub if_a: &'static str,
    pub if_b: &'static str,
    pub ifindex_a: u32,
    pub ifindex_b: u32,
    pub ip4_a: Ipv4Addr,
    pub ip4_b: Ipv4Addr,
    pub ip6_a: Ipv6Addr,
    pub ip6_b: Ipv6Addr,
    pub mac_a: [u8; 6],
    pub mac_b: [u8; 6],
}

impl VethPair {
    #[track_caller]
    pub fn new(tag: &str) -> VethPair {
        let a = Netns::new(&format!("{tag}-a"));
        let b = Netns::new(&format!("{tag}-b"));
        let (if_a, if_b) = ("tkv0", "tkv1");
        let (mac_a, mac_b) = ([0x02, 0x00, 0x0a, 0xc8, 0x00, 0x01], [0x02, 0x00, 0x0a, 0xc8, 0x00, 0x02]);
        let (ip4_a, ip4_b) = (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2));
        let (ip6_a, ip6_b): (Ipv6Addr, Ipv6Addr) = ("fd00:200::1".parse().unwrap(), "fd00:200::2".parse().unwrap());
        let (ma, mb) = (mac_str(&mac_a), mac_str(&mac_b));
        // Created inside `a` with its peer directly in `b`: the root namespace never sees it.
        a.ip(&[
            "link",
            "add",
            if_a,
            "address",
            &ma,
            "type",
            "veth",
            "peer",
            "name",
            if_b,
            "address",
            &mb,
            "netns",
            b.name(),
        ]);
        for (ns, dev, ip4, ip6, peer4, peer6, peer_mac) in
            [(&a, if_a, ip4_a, ip6_a, ip4_b, ip6_b, &mb), (&b, if_b, ip4_b, ip6_b, ip4_a, ip6_a, &ma)]
        {
            ns.ip(&["link", "set", dev, "addrgenmode", "none"]);
            ns.sysctl(&format!("ipv6/conf/{dev}/accept_ra"), "0");
            // Link-up MLD reports: sent within milliseconds instead of over a second.
            ns.sysctl(&format!("ipv6/conf/{dev}/mldv2_unsolicited_report_interval"), "1");
            ns.sysctl(&format!("ipv6/conf/{dev}/mldv1_unsolicited_report_interval"), "1");
            ns.ip(&["addr", "add", &format!("{ip4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", dev, "nodad"]);
            for peer in [peer4.to_string(), peer6.to_string()] {
                ns.ip(&["neigh", "add", &peer, "lladdr", peer_mac, "dev", dev, "nud", "permanent"]);
            }
        }
        a.ip(&["link", "set", if_a, "up"]);
        b.ip(&["link", "set", if_b, "up"]);
        let ifindex_a = a.ifindex(if_a);
        let ifindex_b = b.ifindex(if_b);
        let pair = VethPair { a, b, if_a, if_b, ifindex_a, ifindex_b, ip4_a, ip4_b, ip6_a, ip6_b, mac_a, mac_b };
        pair.wait_ready();
        pair
    }

    /// Waits for carrier on both ends and for the IPv6 addresses to leave `tentative`.
    #[track_caller]
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let ready = |ns: &Netns, dev: &str| {
            let json: Value = serde_json::from_str(&ns.ip(&["-j", "addr", "show", "dev", dev])).expect("JSON");
            let link = &json[0];
            let up = link["operstate"] == "UP";
            let v6: Vec<&Value> =
                link["addr_info"].as_array().into_iter().flatten().filter(|a| a["family"] == "inet6").collect();
            up && !v6.is_empty() && v6.iter().all(|a| a["tentative"] != true && a["dadfailed"] != true)
        };
        while !(ready(&self.a, self.if_a) && ready(&self.b, self.if_b)) {
            assert!(Instant::now() < deadline, "veth pair {} / {} not ready after 5 s", self.a.name(), self.b.name());
            thread::sleep(Duration::from_millis(10));
        }
        // The MLD reports for the solicited-node groups go out right after link-up (1 ms interval),
        // later on a loaded machine or in a slow guest: wait until nothing was sent for 200 ms.
        let tx = |ns: &Netns, dev: &str| {
            let v: Value = serde_json::from_str(&ns.ip(&["-s", "-j", "link", "show", "dev", dev])).expect("JSON");
            v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = (tx(&self.a, self.if_a), tx(&self.b, self.if_b));
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(200) {
            assert!(
                Instant::now() < deadline,
                "veth pair {} / {} still sending after 5 s",
                self.a.name(),
                self.b.name()
            );
            thread::sleep(Duration::from_millis(20));
            let now = (tx(&self.a, self.if_a), tx(&self.b, self.if_b));
            if now != last {
                (last, quiet_since) = (now, Instant::now());
            }
        }
    }

    /// `assert_clean` on both namespaces.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert_clean(&self.a);
        assert_clean(&self.b);
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------

/// The payload `tcp_connect` sends and expects back.
pub const TCP_PAYLOAD: &[u8] = b"tracekit tcp echo\n";

/// A TCP echo server in a namespace; stops (and closes all connections) on drop.
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo(mut s: TcpStream, stop: Arc<AtomicBool>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}

/// Listens on `addr:port` (port 0: any) inside `ns` and echoes every connection.
#[track_caller]
pub fn tcp_listen(ns: &Netns, addr: impl Into<IpAddr>, port: u16) -> TcpServer {
    let want = SocketAddr::new(addr.into(), port);
    let listener = ns
        .run_in(|| TcpListener::bind(want))
        .unwrap_or_else(|e| panic!("listen on {want} in netns `{}`: {e}", ns.name()));
    listener.set_nonblocking(true).expect("nonblocking listener");
    let addr = listener.local_addr().expect("local_addr");
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (stop2, accepted2) = (stop.clone(), accepted.clone());
    let thread = ns.spawn_in(move || {
        let mut conns = Vec::new();
        while !stop2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((s, _)) => {
                    accepted2.fetch_add(1, Ordering::SeqCst);
                    let stop3 = stop2.clone();
                    conns.push(thread::spawn(move || echo(s, stop3)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        for c in conns {
            let _ = c.join();
        }
    });
    TcpServer { addr, stop, accepted, thread: Some(thread) }
}

/// From inside `ns`: connects to `addr:port`, sends `TCP_PAYLOAD`, reads the echo, closes.
/// Every step is bounded by `timeout`.
pub fn tcp_connect(ns: &Netns, addr: impl Into<IpAddr>, port: u16, timeout: Duration) -> io::Result<()> {
    let to = SocketAddr::new(addr.into(), port);
    ns.run_in(move || {
        let mut s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(TCP_PAYLOAD)?;
        let mut back = vec![0u8; TCP_PAYLOAD.len()];
        s.read_exact(&mut back)?;
        if back != TCP_PAYLOAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("echo from {to} differs: {back:?}")));
        }
        s.shutdown(Shutdown::Both)
    })
}

/// From inside `ns`: sends `count` datagrams `tracekit udp <i>` from `from` (any port) to
/// `to_addr:to_port`. Returns the source address used.
pub fn udp_send(
    ns: &Netns,
    from: impl Into<IpAddr>,
    to_addr: impl Into<IpAddr>,
    to_port: u16,
    count: usize,
) -> io::Result<SocketAddr> {
    let (from, to) = (SocketAddr::new(from.into(), 0), SocketAddr::new(to_addr.into(), to_port));
    ns.run_in(move || {
        let s = UdpSocket::bind(from)?;
        for i in 0..count {
            s.send_to(format!("tracekit udp {i}").as_bytes(), to)?;
        }
        s.local_addr()
    })
}

/// A UDP socket bound inside `ns` (port 0: any; see `local_addr`).
pub fn udp_bind(ns: &Netns, addr: impl Into<IpAddr>, port: u16) -> io::Result<UdpSocket> {
    let at = SocketAddr::new(addr.into(), port);
    ns.run_in(move || UdpSocket::bind(at))
}

/// Receives up to `count` datagrams within `timeout` in total.
pub fn udp_recv(sock: &UdpSocket, count: usize, timeout: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => got.push((from, buf[..n].to_vec())),
            Err(_) => break,
        }
    }
    got
}

/// ICMP echo from inside `ns` to `addr`: `count` requests, each waiting up to 1 s for its reply
/// (`ping -c COUNT -W 1`). True when every request got its reply; panics if the raw ICMP
/// socket cannot be opened or used (that is a broken fixture, not a lost packet).
pub fn ping(ns: &Netns, addr: impl Into<IpAddr>, count: u32) -> bool {
    let addr = addr.into();
    match ping_replies(ns, addr, count) {
        Ok(n) => n == count,
        Err(e) => panic!("ping {addr} from netns `{}`: {e}", ns.name()),
    }
}

/// Like `ping`, returning how many replies arrived.
pub fn ping_replies(ns: &Netns, addr: impl Into<IpAddr>, count: u32) -> io::Result<u32> {
    let addr = addr.into();
    ns.run_in(move || icmp_echo(addr, count))
}

fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sockaddr_of(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid (unspecified) value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.octets()) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.octets() };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// The ICMP types of an echo request and its reply: (8, 0) for IPv4, (128, 129) for ICMPv6.
pub fn echo_types(v4: bool) -> (u8, u8) {
    if v4 { (8, 0) } else { (128, 129) }
}

/// A raw ICMP (IPv4) or ICMPv6 (IPv6) socket in the calling thread's namespace. Every raw
/// socket sees every ICMP packet of the namespace: match replies by identifier and sequence.
pub fn icmp_socket(v4: bool) -> io::Result<OwnedFd> {
    let (domain, proto) = if v4 { (libc::AF_INET, libc::IPPROTO_ICMP) } else { (libc::AF_INET6, libc::IPPROTO_ICMPV6) };
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one echo request (identifier, sequence, then `payload`) to `to` on an `icmp_socket` of
/// the same family.
pub fn send_echo(fd: &OwnedFd, to: IpAddr, ident: u16, seq: u16, payload: &[u8]) -> io::Result<()> {
    let v4 = to.is_ipv4();
    let mut pkt = vec![0u8; 8 + payload.len()];
    pkt[0] = echo_types(v4).0;
    pkt[4..6].copy_from_slice(&ident.to_be_bytes());
    pkt[6..8].copy_from_slice(&seq.to_be_bytes());
    pkt[8..].copy_from_slice(payload);
    if v4 {
        // ICMPv6 checksums are filled in by the kernel on raw ICMPv6 sockets; ICMPv4 are not.
        let c = inet_checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    let (sa, sa_len) = sockaddr_of(to);
    // SAFETY: pkt and sa are valid for the lengths given for the duration of the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_storage).cast(),
            sa_len,
        )
    };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Waits until `fd` has something to read (true) or `deadline` passes (false); an interrupted
/// wait is resumed.
pub fn wait_readable(fd: &impl AsRawFd, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}

/// Echo requests on a raw ICMP socket of the calling thread's namespace. Replies are matched by
/// identifier, sequence and an 8-byte tag unique to this call, so concurrent pings in the same
/// namespace (every raw socket sees every ICMP packet) do not count each other's replies.
fn icmp_echo(addr: IpAddr, count: u32) -> io::Result<u32> {
    let v4 = addr.is_ipv4();
    let reply = echo_types(v4).1;
    let fd = icmp_socket(v4)?;
    let unique = next_id();
    let ident = (std::process::id() as u16).wrapping_mul(31) ^ unique as u16;
    let mut tag = [0u8; 8];
    tag[..4].copy_from_slice(&std::process::id().to_be_bytes());
    tag[4..].copy_from_slice(&unique.to_be_bytes());
    // The tag, then 40 bytes counting up.
    let mut payload = [0u8; 8 + 40];
    payload[..8].copy_from_slice(&tag);
    for (i, b) in payload[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut replies = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let seq = seq as u16;
        send_echo(&fd, addr, ident, seq, &payload)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while wait_readable(&fd, deadline)? {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                continue;
            }
            let msg = &buf[..n as usize];
            // Raw IPv4 sockets deliver the IP header too; raw IPv6 sockets do not.
            let icmp = if v4 {
                let ihl = usize::from(msg.first().map_or(0, |b| b & 0x0f)) * 4;
                msg.get(ihl..).unwrap_or(&[])
            } else {
                msg
            };
            if icmp.len() >= 16
                && icmp[0] == reply
                && icmp[1] == 0
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
                && icmp[8..16] == tag
            {
                replies += 1;
                break;
            }
        }
    }
    Ok(replies)
}

// ---------------------------------------------------------------------------------------------
// What stays attached
// ---------------------------------------------------------------------------------------------

/// Program ids attached at `attach_type` on `target` (an ifindex or a namespace fd) in the
/// calling thread's namespace; empty when the kernel does not know the attach type.
fn query_progs(target: i32, attach_type: libbpf_rs::libbpf_sys::bpf_attach_type) -> Vec<u32> {
    use libbpf_rs::libbpf_sys as sys;
    let mut ids = [0u32; 64];
    // SAFETY: bpf_prog_query_opts is plain data; zeroed is its documented initial state.
    let mut opts: sys::bpf_prog_query_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<sys::bpf_prog_query_opts>() as _;
    opts.prog_ids = ids.as_mut_ptr();
    opts.__bindgen_anon_1.count = ids.len() as u32;
    // SAFETY: opts points to prog_ids with room for `count` ids; both outlive the call.
    let rc = unsafe { sys::bpf_prog_query_opts(target, attach_type, &mut opts) };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: the union field written by the kernel is the count.
    let n = unsafe { opts.__bindgen_anon_1.count } as usize;
    ids[..n.min(ids.len())].to_vec()
}

/// What BPF (and TC state tracekit would create) is still attached in `ns`, one line each;
/// empty when clean. Looks at: `bpftool net show` (XDP, TC cls_bpf, flow dissector), the
/// clsact/ingress qdiscs and their filters on every interface (any classifier), tcx programs
/// per interface and sk_lookup programs of the namespace (BPF_PROG_QUERY, kernel 6.6+ / 5.9+).
/// A cls_bpf filter shows twice: as a `tc: ...` line from bpftool and a `tc filter bpf` line.
pub fn leftovers(ns: &Netns) -> Vec<String> {
    let mut out = Vec::new();

    let bt = ns.exec(&["bpftool", "-j", "net", "show"]);
    if !bt.status.success() {
        out.push(format!("`bpftool net show` failed: {}", String::from_utf8_lossy(&bt.stderr).trim()));
    } else {
        match serde_json::from_slice::<Value>(&bt.stdout) {
            Ok(json) => {
                for obj in json.as_array().into_iter().flatten() {
                    for (kind, entries) in obj.as_object().into_iter().flatten() {
                        for e in entries.as_array().into_iter().flatten() {
                            out.push(format!("{kind}: {e}"));
                        }
                    }
                }
            }
            Err(e) => out.push(format!("`bpftool -j net show` printed no JSON: {e}")),
        }
    }

    let ifaces = ns.interfaces();
    let qdiscs: Value =
        serde_json::from_str(&ns.exec_ok(&["tc", "-j", "qdisc", "show"])).unwrap_or(Value::Array(Vec::new()));
    for q in qdiscs.as_array().into_iter().flatten() {
        let (Some(kind), Some(dev)) = (q["kind"].as_str(), q["dev"].as_str()) else {
            continue;
        };
        if kind != "clsact" && kind != "ingress" {
            continue;
        }
        out.push(format!("{dev}: qdisc {kind}"));
        let dirs: &[&str] = if kind == "clsact" { &["ingress", "egress"] } else { &["ingress"] };
        for dir in dirs {
            let f = ns.exec(&["tc", "-j", "filter", "show", "dev", dev, dir]);
            let filters: Value = serde_json::from_slice(&f.stdout).unwrap_or(Value::Array(Vec::new()));
            let mut seen = BTreeSet::new();
            for f in filters.as_array().into_iter().flatten() {
                let kind = f["kind"].as_str().unwrap_or("?").to_owned();
                let pref = f["pref"].as_u64().unwrap_or(0);
                let chain = f["chain"].as_u64().unwrap_or(0);
                if seen.insert((pref, chain, kind.clone())) {
                    out.push(format!("{dev} {dir}: tc filter {kind} pref {pref} chain {chain}"));
                }
            }
        }
    }

    use libbpf_rs::libbpf_sys as sys;
    let nsfd = ns.open();
    let progs = ns.run_in(|| {
        let mut lines = Vec::new();
        for dev in &ifaces {
            let c = std::ffi::CString::new(dev.as_str()).expect("no NUL in an interface name");
            // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
            let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if idx == 0 {
                continue;
            }
            for (t, what) in [(sys::BPF_TCX_INGRESS, "tcx ingress"), (sys::BPF_TCX_EGRESS, "tcx egress")] {
                let ids = query_progs(idx as i32, t);
                if !ids.is_empty() {
                    lines.push(format!("{dev}: {what} prog ids {ids:?}"));
                }
            }
        }
        let ids = query_progs(nsfd.as_raw_fd(), sys::BPF_SK_LOOKUP);
        if !ids.is_empty() {
            lines.push(format!("netns: sk_lookup prog ids {ids:?}"));
        }
        lines
    });
    out.extend(progs);
    out
}

/// Asserts that `leftovers(ns)` becomes empty within 5 s (links and programs go away
/// asynchronously after their last fd closes).
#[track_caller]
pub fn assert_clean(ns: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(ns);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("netns `{}` still has BPF/TC attached after 5 s:\n  {}", ns.name(), left.join("\n  "));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Stand-in programs (for "something is already attached" tests)
// ---------------------------------------------------------------------------------------------

/// Loads `r0 = ret; exit` as a program of `prog_type`; returns its fd.
#[track_caller]
pub fn load_trivial_prog(
    prog_type: libbpf_rs::libbpf_sys::bpf_prog_type,
    expected_attach_type: libbpf_rs::libbpf_sys::bpf_attach_type,
    ret: i32,
) -> OwnedFd {
    use libbpf_rs::libbpf_sys as sys;
    // BPF_ALU64|BPF_MOV|BPF_K (0xb7) dst r0, imm ret; BPF_JMP|BPF_EXIT (0x95).
    let insns: [u64; 2] = [0xb7 | (u64::from(ret as u32) << 32), 0x95];
    // SAFETY: bpf_prog_load_opts is plain data; zeroed is its documented initial state.
    let mut opts: sys::bpf_prog_load_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<sys::bpf_prog_load_opts>() as _;
    opts.expected_attach_type = expected_attach_type;
    // SAFETY: insns is two encoded 8-byte bpf_insn; name and license are NUL-terminated.
    let fd = unsafe {
        sys::bpf_prog_load(
            prog_type,
            c"tk_fixture".as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr().cast(),
            insns.len() as _,
            &mut opts,
        )
    };
    assert!(fd >= 0, "loading a trivial BPF program: {}", io::Error::from_raw_os_error(-fd));
    // SAFETY: fd is a fresh program fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Creates a BPF link in `ns` (the ifindex is resolved there); closing the returned fd detaches.
#[track_caller]
fn link_in(ns: &Netns, prog: &OwnedFd, ifindex: u32, attach_type: libbpf_rs::libbpf_sys::bpf_attach_type) -> OwnedFd {
    let prog = prog.as_raw_fd();
    // SAFETY: prog is a valid program fd; NULL opts are allowed.
    let fd = ns.run_in(|| unsafe {
        libbpf_rs::libbpf_sys::bpf_link_create(prog, ifindex as i32, attach_type, std::ptr::null())
    });
    assert!(fd >= 0, "bpf_link_create in netns `{}`: {}", ns.name(), io::Error::from_raw_os_error(-fd));
    // SAFETY: fd is a fresh link fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Attaches an `XDP_PASS` program to `ifname` in `ns` through an XDP link (5.9+).
#[track_caller]
pub fn attach_dummy_xdp(ns: &Netns, ifname: &str) -> OwnedFd {
    use libbpf_rs::libbpf_sys as sys;
    let prog = load_trivial_prog(sys::BPF_PROG_TYPE_XDP, sys::BPF_XDP, 2);
    link_in(ns, &prog, ns.ifindex(ifname), sys::BPF_XDP)
}

/// Attaches a `TCX_NEXT` program to `ifname` in `ns` through a tcx link (6.6+).
#[track_caller]
pub fn attach_dummy_tcx(ns: &Netns, ifname: &str, ingress: bool) -> OwnedFd {
    use libbpf_rs::libbpf_sys as sys;
    let t = if ingress { sys::BPF_TCX_INGRESS } else { sys::BPF_TCX_EGRESS };
    let prog = load_trivial_prog(sys::BPF_PROG_TYPE_SCHED_CLS, t, -1);
    link_in(ns, &prog, ns.ifindex(ifname), t)
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()
}

/// tcx links came in Linux 6.6; older kernels (the matrix's 5.10 and 6.1) have only clsact.
pub fn kernel_has_tcx() -> bool {
    let r = kernel_release();
    let mut it = r.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (6, 6)
}

/// setsockopt(TCP_CONGESTION): the socket's congestion control by name.
pub fn set_congestion(fd: &impl AsRawFd, cc: &str) -> io::Result<()> {
    // SAFETY: the kernel reads cc.len() bytes of cc, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_CONGESTION, cc.as_ptr().cast(), cc.len() as _)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The socket's congestion control, as getsockopt(TCP_CONGESTION) names it.
#[track_caller]
pub fn congestion(fd: &impl AsRawFd) -> String {
    let mut name = [0u8; 16];
    let mut len = name.len() as libc::socklen_t;
    // SAFETY: name is valid for writes of len bytes; len is updated by the kernel.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_CONGESTION, name.as_mut_ptr().cast(), &mut len)
    };
    assert_eq!(rc, 0, "getsockopt TCP_CONGESTION: {}", io::Error::last_os_error());
    String::from_utf8_lossy(&name[..len as usize]).trim_end_matches('\0').to_owned()
}

/// A server in `ns` on `addr:port` that accepts `conns` connections and reads each to its end.
/// Gives up (and fails the test) after 30 s.
pub fn bulk_sink(ns: &Netns, addr: Ipv4Addr, port: u16, conns: usize) -> JoinHandle<()> {
    let listener = ns.run_in(|| TcpListener::bind((addr, port))).expect("listen in the receiver's namespace");
    listener.set_nonblocking(true).expect("nonblocking listener");
    ns.spawn_in(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut readers = Vec::new();
        while readers.len() < conns {
            match listener.accept() {
                Ok((mut s, _)) => readers.push(thread::spawn(move || {
                    s.set_nonblocking(false).expect("blocking stream");
                    s.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
                    let mut buf = vec![0u8; 1 << 16];
                    while s.read(&mut buf).is_ok_and(|n| n > 0) {}
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("accept on port {port}: {e}"),
            }
        }
        for r in readers {
            r.join().expect("reader");
        }
    })
}

/// Connects to `to` with congestion control `cc`, paced to `pacing` bytes/s (SO_MAX_PACING_RATE),
/// sends `bytes`, closes and waits for the peer to have read it all. Returns the local port.
/// Runs in the calling thread's namespace.
pub fn bulk_send(to: SocketAddr, cc: &str, bytes: usize, pacing: u32) -> u16 {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
    set_congestion(&s, cc).unwrap_or_else(|e| panic!("TCP_CONGESTION {cc}: {e}"));
    // SAFETY: setsockopt reads the 4 bytes of `pacing`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MAX_PACING_RATE, (&raw const pacing).cast(), 4)
    };
    assert_eq!(rc, 0, "SO_MAX_PACING_RATE: {}", io::Error::last_os_error());
    s.set_write_timeout(Some(Duration::from_secs(30))).expect("write timeout");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let port = s.local_addr().expect("local addr").port();
    let chunk = vec![0x5au8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).expect("send");
        left -= n;
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    // The peer closes once it has read everything: every ACK has arrived by then.
    let _ = s.read(&mut [0u8; 16]);
    port
}

/// One transfer from `a` to `b`'s `port`: the sender's local port.
pub fn bulk_transfer(pair: &VethPair, port: u16, cc: &str, bytes: usize, pacing: u32) -> u16 {
    let server = bulk_sink(&pair.b, pair.ip4_b, port, 1);
    let to = SocketAddr::from((pair.ip4_b, port));
    let cc = cc.to_owned();
    let lport = pair.a.run_in(move || bulk_send(to, &cc, bytes, pacing));
    server.join().expect("the receiver");
    lport
}

/// Random bytes (xorshift: no dependency, different per seed).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` on `c` while a thread reads what comes back, half-closes, and returns what
/// was read to the end (`<error>` after a read error, which `what` names on stderr).
pub fn send_and_read_back(c: std::net::TcpStream, data: &[u8], what: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut reader = c.try_clone().unwrap();
    let what = what.to_owned();
    let got = std::thread::spawn(move || {
        let mut got = Vec::new();
        match reader.read_to_end(&mut got) {
            Ok(_) => got,
            Err(e) => {
                eprintln!("{what}: {e} after {} bytes", got.len());
                b"<error>".to_vec()
            }
        }
    });
    let mut w = c;
    w.write_all(data).expect("send");
    w.shutdown(std::net::Shutdown::Write).expect("half-close");
    got.join().unwrap()
}

/// Bytes process `pid` read through read(2)-like calls so far (/proc/PID/io `rchar`).
pub fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|v| v.trim().parse().ok()).expect("rchar")
}
