//! `tracekit tcpcc load` end to end, as root: the BPF algorithms carry real bulk transfers over a
//! veth pair this file creates (losses made by `tracekit xdp --drop-every` on the receiver's
//! side), and their `--events` are checked against the rules each algorithm implements: reno
//! halves at a loss and grows by one per window in avoidance, vegas measures a base and a
//! per-round RTT. Selection by `--default` (the sysctl of one test namespace, restored at exit and
//! after SIGKILL) and by `-- CMD` (a transient cgroup); nothing registered after any way tracekit
//! ends; a socket on the algorithm outliving tracekit; a second registration refused.
//!
//! Algorithm names are global to the kernel, not per namespace: every test here holds one lock
//! for its whole run, an `flock` on /run/lock/tracekit-tcpcc.lock, which also serializes it with
//! any other test binary that registers `tk_*`. Traffic only ever goes between namespaces this
//! file creates. The bad-input cases are in tests/cases/tcpcc.tk.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::net::{self, Netns, VethPair};
use common::{BpfIds, Exit, Finished, Tracer, assert_released, require_root};
use libbpf_rs::libbpf_sys as sys;
use serde_json::Value;

const ALGOS: [&str; 2] = ["tk_reno", "tk_vegas"];
const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";
const AVAILABLE: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";
/// What the bulk tests send: long enough for slow start, many losses and hundreds of rounds.
const BULK: usize = 16 << 20;
/// Every Nth data segment the receiver's veth drops: 1 segment in 200, about 58 in BULK.
const DROP_EVERY: &str = "200";
const IO_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The lock, and what the kernel has registered

/// A test's hold on the `tk_*` names: an exclusive `flock` for its whole run (released when the
/// file closes, also when the test panics, and by the kernel when the process dies), and the
/// struct_ops maps named `tk_*` that were there before it.
struct Serial {
    _lock: File,
    /// Maps an earlier registration left that something outside this file still holds (a socket
    /// or a namespace default on the algorithm, e.g. of a namespace being torn down): not this
    /// test's doing, so not counted against it, and said on stderr.
    foreign: Vec<(u32, String)>,
}

/// Every test starts here: None (said on stderr) without root, else the lock.
#[must_use]
fn begin(test: &str) -> Option<Serial> {
    require_root(test).then(|| serial(test))
}

fn serial(test: &str) -> Serial {
    let f = common::lock_tcpcc_names();
    // A name registered by a program that does not take the lock makes every registration here
    // fail. (A map-form registration a killed tracekit left is not in the way: tracekit removes
    // it at its start, which the SIGKILL tests check.)
    if struct_ops_links() && !eventually(10, || available().is_empty()) {
        let held: Vec<String> = tk_struct_ops_maps()
            .iter()
            .map(|(id, name)| format!("`{name}` (map {id}) held by {:?}", holders(*id)))
            .collect();
        panic!("{test}: {:?} registered by a program outside this test: {held:?}", available());
    }
    let foreign = tk_struct_ops_maps();
    if !foreign.is_empty() {
        let _ =
            writeln!(io::stderr(), "note {test}: struct_ops maps left by an earlier program, not counted: {foreign:?}");
    }
    Serial { _lock: f, foreign }
}

impl Serial {
    /// The struct_ops maps named `tk_*`, but for those that were there before the test.
    fn maps(&self) -> Vec<(u32, String)> {
        tk_struct_ops_maps().into_iter().filter(|m| !self.foreign.contains(m)).collect()
    }

    /// Every `algos` name is registered, each by one struct_ops map.
    #[track_caller]
    fn assert_registered(&self, algos: &[&str], how: &str) {
        let names = available();
        let maps = self.maps();
        for a in algos {
            assert!(names.iter().any(|n| n == a), "{how}: `{a}` not in {AVAILABLE}: {names:?}");
            assert_eq!(maps.iter().filter(|(_, n)| n == a).count(), 1, "{how}: struct_ops maps of `{a}`: {maps:?}");
        }
    }

    /// Nothing of tracekit is left: its programs, links and maps are gone, no `tk_*` name is
    /// registered and no struct_ops map named `tk_*` exists (both are freed asynchronously).
    #[track_caller]
    fn assert_nothing_left(&self, ids: &BpfIds, how: &str) {
        assert_released(ids, how);
        assert!(
            eventually(10, || available().is_empty() && self.maps().is_empty()),
            "{how}: still registered: {:?}, struct_ops maps {:?}",
            available(),
            self.maps()
        );
    }
}

/// "PID COMM" of the processes with an fd of BPF map `id`.
fn holders(id: u32) -> Vec<String> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() || !BpfIds::of(pid.parse().unwrap()).maps.contains(&id) {
            continue;
        }
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        out.push(format!("{pid} {}", comm.trim()));
    }
    out
}

/// The `tk_*` names in tcp_available_congestion_control (the list is global).
fn available() -> Vec<String> {
    let text = std::fs::read_to_string(AVAILABLE).unwrap_or_else(|e| panic!("read {AVAILABLE}: {e}"));
    text.split_whitespace().filter(|n| n.starts_with("tk_")).map(str::to_owned).collect()
}

/// (map id, name) of every struct_ops map named `tk_*` the kernel holds, from the map ids
/// themselves (as `bpftool struct_ops list` walks them).
fn tk_struct_ops_maps() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut id = 0u32;
    // SAFETY: writes the next map id into `id`; fails at the end of the list.
    while unsafe { sys::bpf_map_get_next_id(id, &mut id) } == 0 {
        // SAFETY: a plain syscall wrapper; a map freed meanwhile just fails.
        let fd = unsafe { sys::bpf_map_get_fd_by_id(id) };
        if fd < 0 {
            continue;
        }
        // SAFETY: fd was just returned to us; OwnedFd closes it once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: bpf_map_info is plain data; all zeroes is valid.
        let mut info: sys::bpf_map_info = unsafe { std::mem::zeroed() };
        let mut len = size_of::<sys::bpf_map_info>() as u32;
        // SAFETY: info is valid for writes of len bytes; fd is an open map.
        if unsafe { sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) } != 0 {
            continue;
        }
        let name: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        let name = String::from_utf8_lossy(&name).into_owned();
        if info.type_ == sys::BPF_MAP_TYPE_STRUCT_OPS && name.starts_with("tk_") {
            out.push((id, name));
        }
    }
    out
}

/// Whether this kernel registers struct_ops through links (6.4+), as `tracekit probe` says.
fn struct_ops_links() -> bool {
    static LINKS: OnceLock<bool> = OnceLock::new();
    *LINKS.get_or_init(|| {
        let out = common::run(&["probe"]);
        let line = out.stdout.iter().find(|l| l.split_whitespace().next() == Some("struct_ops_link"));
        let line =
            line.unwrap_or_else(|| panic!("`tracekit probe` has no struct_ops_link line:\n{}", out.stdout.join("\n")));
        match line.split_whitespace().nth(1) {
            Some("supported") => true,
            Some("unsupported") => false,
            other => panic!("`tracekit probe`: struct_ops_link is {other:?}: {line}"),
        }
    })
}

fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// `tracekit tcpcc load ARGS` (with `-v`), returned once registered.
fn load(args: &[&str]) -> Tracer {
    Tracer::start(&[&["tcpcc", "load"], args].concat())
}

/// `load` with `tracekit` itself in `ns` (spawned from a thread inside it, which is what `ip
/// netns exec` does for the network namespace).
fn load_in(ns: &Netns, args: &[&str]) -> Tracer {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    ns.run_in(move || load(&args.iter().map(String::as_str).collect::<Vec<_>>()))
}

/// Stops with SIGINT and expects a clean exit.
#[track_caller]
fn stop(t: Tracer) -> Finished {
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "tracekit after SIGINT: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out
}

/// The `tcpcc_counts` object of `algo` (the last, printed at exit).
#[track_caller]
fn counts(out: &Finished, algo: &str) -> Value {
    let json = out.json();
    let c = json.iter().rev().find(|v| v["type"] == "tcpcc_counts" && v["algo"] == algo);
    c.cloned().unwrap_or_else(|| panic!("no tcpcc_counts of {algo} in {:?}", out.stdout.last()))
}

fn num(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("`{field}` is not a number: {v}"))
}

/// An event's `ssthresh`: null is "infinite" (no loss yet).
fn ssthresh(v: &Value) -> Option<u64> {
    if v["ssthresh"].is_null() { None } else { Some(num(v, "ssthresh")) }
}

// ---------------------------------------------------------------------------------------------
// Sockets

/// A TCP socket of the calling thread's namespace on congestion control `cc` (before connect,
/// so that the algorithm sees the connection from its first segment).
fn socket_with_cc(cc: Option<&str>) -> OwnedFd {
    // SAFETY: socket(2) with constant arguments; checked, then owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Some(cc) = cc {
        net::set_congestion(&fd, cc).unwrap_or_else(|e| panic!("TCP_CONGESTION `{cc}`: {e}"));
    }
    fd
}

/// TCP_INFO of a socket.
fn tcp_info(fd: &impl AsRawFd) -> libc::tcp_info {
    // SAFETY: tcp_info is plain data; all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info is valid for writes of len bytes.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len)
    };
    assert_eq!(rc, 0, "getsockopt TCP_INFO: {}", io::Error::last_os_error());
    info
}

/// Connects `fd` to `to` (blocking), and returns it as a stream with I/O timeouts.
fn connect(fd: OwnedFd, to: SocketAddrV4) -> io::Result<TcpStream> {
    // SAFETY: sockaddr_in is plain data; all zeroes is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = to.port().to_be();
    sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(to.ip().octets()) };
    // SAFETY: sin is a valid sockaddr_in of the length given.
    let rc = unsafe {
        libc::connect(fd.as_raw_fd(), (&raw const sin).cast(), size_of::<libc::sockaddr_in>() as libc::socklen_t)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// The bytes every bulk transfer sends (xorshift64: no pattern a lost segment could hide in).
fn payload() -> &'static [u8] {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut v = Vec::with_capacity(BULK);
        while v.len() < BULK {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    })
}

/// A listener on `addr` (any port) in `ns` that takes one connection and returns everything it
/// received once the peer has shut down its side; then closes.
fn receiver(ns: &Netns, addr: Ipv4Addr) -> (SocketAddrV4, JoinHandle<Vec<u8>>) {
    let listener = ns.run_in(|| TcpListener::bind((addr, 0))).expect("listen in the receiver's namespace");
    let SocketAddr::V4(at) = listener.local_addr().expect("local addr") else { unreachable!("bound to IPv4") };
    let h = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        let mut got = Vec::with_capacity(BULK);
        s.read_to_end(&mut got).expect("receive");
        got
    });
    (at, h)
}

/// What a bulk transfer saw from its sending side.
struct Sent {
    lport: u16,
    rport: u16,
    /// getsockopt(TCP_CONGESTION) of the sender once connected, and after the last byte.
    cc_connected: String,
    cc_end: String,
    /// Segments the sender retransmitted (TCP_INFO), at the end.
    retrans: u32,
}

/// One bulk transfer of `payload()` from `pair.a` to `pair.b`, the sender on `cc`. `midway`
/// runs when half of it has been written. Asserts the receiver got every byte, in order; the
/// sending socket is closed (the algorithm's `release`) before this returns.
#[track_caller]
fn bulk(pair: &VethPair, cc: &str, midway: impl FnOnce(&TcpStream)) -> Sent {
    let (to, rx) = receiver(&pair.b, pair.ip4_b);
    let cc_owned = cc.to_owned();
    let mut s = pair
        .a
        .run_in(move || connect(socket_with_cc(Some(&cc_owned)), to))
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    let lport = s.local_addr().expect("local addr").port();
    let cc_connected = net::congestion(&s);
    let (first, second) = payload().split_at(BULK / 2);
    s.write_all(first).expect("send the first half");
    midway(&s);
    s.write_all(second).expect("send the second half");
    s.shutdown(Shutdown::Write).expect("shutdown");
    // The receiver closes once it has read everything: every segment was acked by then.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("wait for the receiver's close");
    let cc_end = net::congestion(&s);
    let retrans = tcp_info(&s).tcpi_total_retrans;
    drop(s);
    let got = rx.join().expect("the receiver");
    assert_eq!(got.len(), BULK, "{cc}: bytes received");
    if let Some(i) = got.iter().zip(payload()).position(|(a, b)| a != b) {
        panic!("{cc}: the received data differs from byte {i} on");
    }
    Sent { lport, rport: to.port(), cc_connected, cc_end, retrans }
}

/// `tracekit xdp --drop-every DROP_EVERY` on the receiver's veth: TCP data segments only (ACKs
/// are 66 bytes), so losses are on the sender's path. A native XDP program on a veth also turns
/// off TSO on its peer: the sender sends MSS-sized segments, acked every other one.
fn dropper(pair: &VethPair) -> Tracer {
    let args = ["xdp", pair.if_b, "--netns", pair.b.name(), "--json", "--drop-every", DROP_EVERY];
    Tracer::start(&[&args[..], &["tcp", "and", "greater", "100"]].concat())
}

/// The dropper's own count (`... N dropped`), for failure messages.
fn drop_count(dropper: &Finished) -> &str {
    dropper.stderr.lines().find(|l| l.contains(" dropped")).unwrap_or("(the dropper printed no count)")
}

/// The events of the sender's flow of `sent`, in order.
fn flow(out: &Finished, pair: &VethPair, sent: &Sent) -> Vec<Value> {
    let (la, ra) = (pair.ip4_a.to_string(), pair.ip4_b.to_string());
    out.events()
        .into_iter()
        .filter(|e| {
            e["laddr"] == la.as_str()
                && e["raddr"] == ra.as_str()
                && e["lport"] == u64::from(sent.lport)
                && e["rport"] == u64::from(sent.rport)
        })
        .collect()
}

fn by_kind(events: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e["event"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    m
}

/// The events' sequence for a failure message (kind, cwnd_before → cwnd, ssthresh).
fn summary(events: &[Value]) -> String {
    let line = |e: &Value| format!("{} {}→{} ss {}", e["event"], e["cwnd_before"], e["cwnd"], e["ssthresh"]);
    let all: Vec<String> = events.iter().map(line).collect();
    if all.len() <= 60 {
        all.join("\n")
    } else {
        format!("{}\n…\n{}", all[..30].join("\n"), all[all.len() - 30..].join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// 1. tk_reno under loss

#[test]
fn reno_halves_at_each_loss_and_grows_by_one_in_avoidance() {
    let Some(serial) = begin("tcpcc_load::reno_halves_at_each_loss_and_grows_by_one_in_avoidance") else { return };
    let pair = VethPair::new("tcl1");
    let tk = load(&["tk_reno", "--events", "--json"]);
    let ids = tk.ids.clone();
    let drops = dropper(&pair);
    let sent = bulk(&pair, "tk_reno", |_| {});
    let dropped = stop(drops);
    let out = stop(tk);
    serial.assert_nothing_left(&ids, "after SIGINT");

    assert_eq!(sent.cc_connected, "tk_reno", "getsockopt(TCP_CONGESTION) of the sender");
    assert_eq!(sent.cc_end, "tk_reno", "getsockopt(TCP_CONGESTION) after the transfer");
    let ev = flow(&out, &pair, &sent);
    let kinds = by_kind(&ev);
    let seen = format!("{kinds:?}; dropper: {}", drop_count(&dropped));
    assert_eq!(kinds.get("init"), Some(&1), "one init: {seen}");
    assert_eq!(kinds.get("release"), Some(&1), "one release: {seen}");
    for k in ["slow_start", "avoidance", "loss"] {
        assert!(kinds.get(k).is_some_and(|&n| n > 0), "no `{k}` event: {seen}");
    }
    assert_eq!(ev.first().map(|e| &e["event"]), Some(&Value::from("init")), "init comes first:\n{}", summary(&ev));
    assert_eq!(ev.last().map(|e| &e["event"]), Some(&Value::from("release")), "release comes last:\n{}", summary(&ev));
    for e in &ev {
        assert_eq!(e["algo"], "tk_reno", "{e}");
        assert_eq!(e["family"], "ipv4", "{e}");
        assert!(e["sock"].as_str().is_some_and(|s| s.starts_with("0x")), "{e}");
        assert_eq!(e["sock"], ev[0]["sock"], "one socket: {e}");
        assert!(e.get("min_rtt_us").is_none() && e.get("base_rtt_us").is_none(), "reno has no RTT state: {e}");
    }
    let init = &ev[0];
    assert!(init["ssthresh"].is_null(), "ssthresh starts infinite: {init}");
    assert!(num(init, "cwnd") >= 2, "initial window: {init}");

    // Multiplicative decrease: half of cwnd, at least 2 (the kernel stores the returned value).
    let mut applied = 0;
    let mut losses = 0;
    for (i, e) in ev.iter().enumerate().filter(|(_, e)| e["event"] == "loss") {
        losses += 1;
        let before = num(e, "cwnd_before");
        assert_eq!(ssthresh(e), Some((before / 2).max(2)), "loss: ssthresh = max(cwnd_before / 2, 2): {e}");
        // The next growth decision (before any other loss or undo) runs on that ssthresh.
        let next = ev[i + 1..].iter().find(|n| n["event"] != "release");
        if next.is_some_and(|n| ["slow_start", "avoidance"].contains(&n["event"].as_str().unwrap()))
            && ssthresh(next.unwrap()) == ssthresh(e)
        {
            applied += 1;
        }
    }
    assert!(
        applied * 2 >= losses,
        "the kernel kept the loss decision as ssthresh for {applied} of {losses} losses:\n{}",
        summary(&ev)
    );

    // Slow start: cwnd grows by every segment acked, up to ssthresh.
    for e in ev.iter().filter(|e| e["event"] == "slow_start") {
        let (before, acked, cwnd) = (num(e, "cwnd_before"), num(e, "acked"), num(e, "cwnd"));
        assert!(acked > 0, "slow start without acked segments: {e}");
        assert_eq!(cwnd, (before + acked).min(ssthresh(e).unwrap_or(u64::MAX)), "slow start: {e}");
        assert!(ssthresh(e).is_none_or(|s| before < s), "slow start below ssthresh only: {e}");
    }

    // Congestion avoidance: at or above ssthresh, one segment more per window acked.
    let avoid: Vec<&Value> = ev.iter().filter(|e| e["event"] == "avoidance").collect();
    let mut not_one = Vec::new();
    for e in &avoid {
        let (before, cwnd) = (num(e, "cwnd_before"), num(e, "cwnd"));
        let ss = ssthresh(e).unwrap_or_else(|| panic!("avoidance with an infinite ssthresh: {e}"));
        assert!(before >= ss, "avoidance below ssthresh: {e}");
        assert!(cwnd > before, "avoidance grows: {e}");
        if cwnd != before + 1 {
            not_one.push(*e);
        }
    }
    assert!(
        not_one.len() <= 3.max(avoid.len() / 50),
        "{} of {} avoidance steps are not +1: {not_one:?}",
        not_one.len(),
        avoid.len()
    );

    // The counters count the same decisions (no other socket used tk_reno: the lock).
    assert_eq!(out.summary()["lost"], 0, "events lost: {}", out.summary());
    let c = counts(&out, "tk_reno");
    for (k, n) in &kinds {
        assert_eq!(num(&c, k), *n as u64, "counter `{k}`: {c}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. tk_vegas

#[test]
fn vegas_measures_base_and_round_rtt() {
    let Some(serial) = begin("tcpcc_load::vegas_measures_base_and_round_rtt") else { return };
    let pair = VethPair::new("tcl2");
    let drops = dropper(&pair);
    // A bare veth has next to no queue and an RTT of microseconds: a round with enough RTT
    // samples for a delay decision (several acks within one round trip, no idle restart in
    // between) comes only now and then. Up to four transfers, each under a tracekit of its own,
    // until one was measured.
    let mut measured = 0;
    let mut tries = Vec::new();
    for attempt in 1..=4 {
        let tk = load(&["tk_vegas", "--events", "--json"]);
        let ids = tk.ids.clone();
        let sent = bulk(&pair, "tk_vegas", |_| {});
        let out = stop(tk);
        serial.assert_nothing_left(&ids, &format!("attempt {attempt}: after SIGINT"));
        assert_eq!((sent.cc_connected.as_str(), sent.cc_end.as_str()), ("tk_vegas", "tk_vegas"), "getsockopt");
        let ev = flow(&out, &pair, &sent);
        let kinds = by_kind(&ev);
        assert_eq!(kinds.get("init"), Some(&1), "{kinds:?}");
        assert_eq!(kinds.get("release"), Some(&1), "{kinds:?}");
        for e in &ev {
            check_vegas_event(e);
        }
        let c = counts(&out, "tk_vegas");
        assert_eq!(out.summary()["lost"], 0, "events lost: {}", out.summary());
        for (k, n) in &kinds {
            assert_eq!(num(&c, k), *n as u64, "counter `{k}`: {c}");
        }
        measured = ev.iter().filter(|e| e["min_rtt_us"].is_u64()).count();
        tries.push(format!("attempt {attempt}: {kinds:?}, {measured} with a round's RTT"));
        if measured > 0 {
            break;
        }
    }
    stop(drops);
    assert!(measured > 0, "no event carried a measured round (min_rtt_us):\n{}", tries.join("\n"));
}

/// What every tk_vegas event must satisfy, from its fields alone.
#[track_caller]
fn check_vegas_event(e: &Value) {
    assert_eq!(e["algo"], "tk_vegas", "{e}");
    let kind = e["event"].as_str().unwrap_or_else(|| panic!("no event kind: {e}"));
    let (before, cwnd) = (num(e, "cwnd_before"), num(e, "cwnd"));
    match kind {
        // No RTT seen yet at init; a loss or undo is reno's business.
        "init" | "loss" | "undo" => {
            assert!(e.get("base_rtt_us").is_none() && e.get("min_rtt_us").is_none(), "{e}");
        }
        _ => {
            let base = num(e, "base_rtt_us");
            assert!(base > 0 && base < 1_000_000, "base_rtt_us: {e}");
            // null: the round had no sample yet; else the round's lowest, never below the base.
            let min = e["min_rtt_us"].as_u64();
            assert!(min.is_some() || e["min_rtt_us"].is_null(), "min_rtt_us is a number or null: {e}");
            assert!(min.is_none_or(|m| m >= base), "min_rtt_us >= base_rtt_us: {e}");
        }
    }
    // Queued segments by the round's RTT against the base: cwnd * (rtt - base) / rtt.
    let diff = || {
        let (rtt, base) = (num(e, "min_rtt_us"), num(e, "base_rtt_us"));
        before * (rtt - base) / rtt
    };
    match kind {
        "loss" => assert_eq!(ssthresh(e), Some((before / 2).max(2)), "loss: max(cwnd_before / 2, 2): {e}"),
        "delay_down" => {
            assert!(diff() > 4, "delay_down needs more than beta (4) segments queued: {e}");
            assert_eq!(cwnd, before - 1, "delay_down: one segment less: {e}");
        }
        "delay_hold" => {
            assert!(diff() > 1, "delay_hold needs more than gamma (1) segments queued: {e}");
            let (rtt, base) = (num(e, "min_rtt_us"), num(e, "base_rtt_us"));
            assert_eq!(cwnd, (before * base / rtt + 1).min(before).max(2), "delay_hold: the path's size: {e}");
            assert_eq!(ssthresh(e), Some(if cwnd > 2 { cwnd - 1 } else { 2 }), "delay_hold leaves slow start: {e}");
        }
        "slow_start" | "avoidance" => assert!(cwnd > before, "{kind} grows: {e}"),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// 3. --default

/// net.ipv4.tcp_congestion_control of `ns`.
fn default_of(ns: &Netns) -> String {
    ns.run_in(|| std::fs::read_to_string(SYSCTL)).expect("read the namespace's sysctl").trim().to_owned()
}

/// Where tracekit keeps the value to restore for `ns` (keyed by the namespace's inode).
fn state_file(ns: &Netns) -> PathBuf {
    let ino = std::fs::metadata(ns.path()).expect("stat the namespace").ino();
    PathBuf::from(format!("/run/tracekit/sysctl-{ino}-net.ipv4.tcp_congestion_control"))
}

/// A connection over `ns`'s loopback: (client, accepted), the client on `cc` if given.
fn local_pair(ns: &Netns, cc: Option<&str>) -> (TcpStream, TcpStream) {
    let cc = cc.map(str::to_owned);
    ns.run_in(move || {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let SocketAddr::V4(to) = l.local_addr()? else { unreachable!("bound to IPv4") };
        let client = connect(socket_with_cc(cc.as_deref()), to)?;
        let (server, _) = l.accept()?;
        Ok::<_, io::Error>((client, server))
    })
    .expect("a connection over the namespace's loopback")
}

#[test]
fn default_selects_in_its_namespace_and_is_restored_at_exit() {
    let Some(serial) = begin("tcpcc_load::default_selects_in_its_namespace_and_is_restored_at_exit") else { return };
    let ns = Netns::new("tcl3");
    // A value of the namespace's own, unlike the root namespace's: what must come back.
    ns.sysctl("ipv4/tcp_congestion_control", "reno");
    let root_before = std::fs::read_to_string(SYSCTL).expect("read the root namespace's sysctl");
    let state = state_file(&ns);

    let tk = load_in(&ns, &["tk_reno", "--default"]);
    let ids = tk.ids.clone();
    assert_eq!(default_of(&ns), "tk_reno", "the namespace's default while tracekit runs");
    let text = std::fs::read_to_string(&state).unwrap_or_else(|e| panic!("{}: {e}", state.display()));
    // The owner (pid and its start time, so that a reused pid is not taken for it), then the value
    // before and the value set.
    let (owner, values) = text.split_once('\n').expect("lines");
    assert_eq!(owner.split(' ').next(), Some(tk.child.id().to_string().as_str()), "{}", state.display());
    assert_eq!(values, "reno\ntk_reno\n", "{}", state.display());
    // New sockets of the namespace are on it without asking, on both ends.
    let (client, server) = local_pair(&ns, None);
    assert_eq!((net::congestion(&client), net::congestion(&server)), ("tk_reno".into(), "tk_reno".into()));
    drop((client, server));
    // The root namespace is untouched.
    assert_eq!(std::fs::read_to_string(SYSCTL).unwrap(), root_before, "the root namespace's default");
    assert_ne!(net::congestion(&socket_with_cc(None)), "tk_reno", "a new socket of the root namespace");

    let out = stop(tk);
    assert!(
        out.stderr.contains("net.ipv4.tcp_congestion_control = tk_reno (was reno, restored at exit)"),
        "{}",
        out.stderr
    );
    assert_eq!(default_of(&ns), "reno", "restored at exit");
    assert!(!state.exists(), "{} is removed at exit", state.display());
    let (client, _server) = local_pair(&ns, None);
    assert_eq!(net::congestion(&client), "reno", "a new socket after the exit");
    serial.assert_nothing_left(&ids, "--default after SIGINT");
}

#[test]
fn default_left_by_sigkill_is_restored_by_any_next_run() {
    let Some(serial) = begin("tcpcc_load::default_left_by_sigkill_is_restored_by_any_next_run") else { return };
    let ns = Netns::new("tcl3k");
    ns.sysctl("ipv4/tcp_congestion_control", "reno");
    let state = state_file(&ns);

    let killed = load_in(&ns, &["tk_reno", "--default"]);
    let killed_ids = killed.ids.clone();
    assert_eq!(default_of(&ns), "tk_reno");
    killed.signal(libc::SIGKILL);
    let out = killed.wait(Duration::from_secs(10));
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", out.stderr);
    // Nothing ran at the kill: the namespace still names tk_reno, the state file what it was.
    assert_eq!(default_of(&ns), "tk_reno", "after SIGKILL");
    assert!(state.exists(), "{} outlives SIGKILL", state.display());
    if struct_ops_links() {
        // The name went with the link's fd (the namespace's default holds the algorithm itself).
        assert!(eventually(10, || available().is_empty()), "after SIGKILL: {:?}", available());
    }

    // Any next run sweeps it, --default or not: the default must not outlive its algorithm.
    let next = load_in(&ns, &["tk_reno"]);
    let next_ids = next.ids.clone();
    assert_eq!(default_of(&ns), "reno", "restored when the next run started");
    let out = stop(next);
    let note =
        "tracekit: restored net.ipv4.tcp_congestion_control = reno (a tracekit that was killed had set it to tk_reno)";
    assert!(out.stderr.contains(note), "the next run says it restored:\n{}", out.stderr);
    if !struct_ops_links() {
        assert!(out.stderr.contains("unregistered `tk_reno` (struct_ops map id "), "{}", out.stderr);
    }
    assert_eq!(default_of(&ns), "reno", "still after the next run's exit");
    assert!(!state.exists(), "{}", state.display());
    serial.assert_nothing_left(&killed_ids, "the killed run");
    serial.assert_nothing_left(&next_ids, "the next run");
}

// ---------------------------------------------------------------------------------------------
// 4. -- CMD

/// /usr/bin/python3 itself (a pyenv shim on PATH costs 100 ms a start).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

/// CMD of the `-- CMD` test (argv: host, port, go file, report file): waits for the go file,
/// connects, writes what its socket is on to the report (stdout is tracekit's JSON), exits 3.
const CMD_BODY: &str = r#"
import json, os, socket, sys, time
host, port, go, report = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
deadline = time.time() + 20
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.01)
s = socket.create_connection((host, port), timeout=10)
cc = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b'\0').decode()
cgroup = [l[3:] for l in open('/proc/self/cgroup').read().splitlines() if l.startswith('0::')][0]
with open(report + '.tmp', 'w') as f:
    json.dump({'cc': cc, 'lport': s.getsockname()[1], 'cgroup': cgroup}, f)
os.rename(report + '.tmp', report)
s.close()
sys.exit(3)
"#;

/// Accepts `n` connections on `l` within 20 s; returns each accepted socket's algorithm.
fn accept_n(l: TcpListener, n: usize) -> JoinHandle<Vec<String>> {
    l.set_nonblocking(true).expect("nonblocking listener");
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < n {
            match l.accept() {
                Ok((s, _)) => got.push(net::congestion(&s)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("accept ({} of {n} so far): {e}", got.len()),
            }
        }
        got
    })
}

#[test]
fn cmd_sockets_use_the_algorithm_and_no_others() {
    let Some(serial) = begin("tcpcc_load::cmd_sockets_use_the_algorithm_and_no_others") else { return };
    let pair = VethPair::new("tcl4");
    let l = pair.b.run_in(|| TcpListener::bind((pair.ip4_b, 0))).expect("listen");
    let port = l.local_addr().unwrap().port().to_string();
    let server = accept_n(l, 2);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (go, report) = (dir.path().join("go"), dir.path().join("report"));
    let (host, a) = (pair.ip4_b.to_string(), pair.a.name().to_owned());
    // tracekit stays in the root namespaces (it needs the cgroup2 mount); CMD enters ns A.
    let tk = load(&[
        "tk_reno",
        "--events",
        "--json",
        "-v",
        "--",
        "ip",
        "netns",
        "exec",
        &a,
        python(),
        "-c",
        CMD_BODY,
        &host,
        &port,
        go.to_str().unwrap(),
        report.to_str().unwrap(),
    ]);
    let ids = tk.ids.clone();
    let pid = tk.child.id();
    std::fs::write(&go, b"").expect("write the go file");
    // A socket of the same namespace, outside CMD's cgroup, connected meanwhile.
    let to = SocketAddrV4::new(pair.ip4_b, port.parse().unwrap());
    let outside = pair.a.run_in(move || connect(socket_with_cc(None), to)).expect("connect from outside the cgroup");
    let outside_cc = net::congestion(&outside);
    let out = tk.wait(Duration::from_secs(30));
    drop(outside);
    assert_eq!(out.status.code(), Some(3), "tracekit exits with CMD's status: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("CMD's report: {e}\n{}", out.stderr));
    let cmd: Value = serde_json::from_str(&text).expect("CMD's report is JSON");
    assert_eq!(cmd["cc"], "tk_reno", "CMD's connected socket: {cmd}");
    let transient = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("tracekit: transient cgroup "))
        .unwrap_or_else(|| panic!("no transient cgroup in:\n{}", out.stderr));
    let name = Path::new(transient).file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("tracekit-ip-{pid}-")), "{transient}");
    assert!(cmd["cgroup"].as_str().is_some_and(|c| c.ends_with(&format!("/{name}"))), "CMD ran in {cmd}");
    assert!(!Path::new(transient).exists(), "{transient} is removed after CMD");
    assert_ne!(outside_cc, "tk_reno", "a socket outside CMD's cgroup, in the same namespace");
    assert_eq!(outside_cc, default_of(&pair.a), "it is on the namespace's default");
    let accepted = server.join().expect("the server");
    assert!(!accepted.iter().any(|c| c == "tk_reno"), "the server side is outside the cgroup: {accepted:?}");

    // The events: CMD's connection, and nothing else.
    let lport = num(&cmd, "lport");
    let events = out.events();
    assert!(!events.is_empty(), "no events:\n{}", out.stderr);
    for e in &events {
        assert_eq!(e["lport"], lport, "only CMD's socket is on tk_reno: {e}");
        assert_eq!((e["laddr"].as_str(), e["raddr"].as_str()), (Some(&*pair.ip4_a.to_string()), Some(&*host)), "{e}");
        assert_eq!(e["rport"].to_string(), port, "{e}");
    }
    let kinds = by_kind(&events);
    assert_eq!((kinds.get("init"), kinds.get("release")), (Some(&1), Some(&1)), "{kinds:?}");
    assert!(events[0]["ssthresh"].is_null() && num(&events[0], "cwnd") >= 2, "{}", events[0]);
    serial.assert_nothing_left(&ids, "after -- CMD ended");
}

// ---------------------------------------------------------------------------------------------
// 5. Nothing left, whichever way tracekit ends

/// One connection over `ns`'s loopback with the client on tk_reno: init and release events.
fn use_reno_once(ns: &Netns) {
    let (mut client, mut server) = local_pair(ns, Some("tk_reno"));
    client.write_all(b"tracekit tcpcc load\n").expect("send");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let mut got = Vec::new();
    server.read_to_end(&mut got).expect("receive");
    assert_eq!(got, b"tracekit tcpcc load\n");
    drop((client, server));
}

#[test]
fn every_exit_leaves_nothing_registered() {
    let Some(serial) = begin("tcpcc_load::every_exit_leaves_nothing_registered") else { return };
    let ns = Netns::new("tcl5");
    let links = struct_ops_links();
    for exit in [Exit::Interrupt, Exit::Terminate, Exit::Duration, Exit::Count, Exit::ClosedPipe, Exit::Kill] {
        let how = format!("{exit:?}");
        println!("exit path {how}");
        let mut args = vec!["tcpcc", "load", "tk_reno", "tk_vegas", "--json"];
        match exit {
            Exit::Duration => args.extend(["-d", "0.5"]),
            Exit::Count => args.extend(["--events", "-n", "2"]),
            Exit::ClosedPipe => args.push("--events"),
            _ => {}
        }
        let mut t = Tracer::start_opts(&args, !matches!(exit, Exit::ClosedPipe));
        let ids = t.ids.clone();
        serial.assert_registered(&ALGOS, &how);
        let maps = serial.maps();
        assert!(maps.iter().all(|(id, _)| ids.maps.contains(id)), "{how}: tracekit holds {maps:?}: {ids:?}");
        if links {
            assert!(ids.links.len() >= 2, "{how}: a struct_ops link per algorithm: {ids:?}");
        }
        if matches!(exit, Exit::ClosedPipe) {
            drop(t.stdout_raw.take());
        }
        if !matches!(exit, Exit::Duration) {
            use_reno_once(&ns);
        }
        let out = exit.end(t, Duration::from_secs(10), &how);
        if !matches!(exit, Exit::Kill | Exit::ClosedPipe) {
            let (reno, vegas) = (counts(&out, "tk_reno"), counts(&out, "tk_vegas"));
            let used = u64::from(!matches!(exit, Exit::Duration));
            assert_eq!((num(&reno, "init"), num(&reno, "release")), (used, used), "{how}: {reno}");
            assert_eq!(num(&vegas, "init"), 0, "{how}: {vegas}");
        }
        if matches!(exit, Exit::Count) {
            let ev = out.events();
            assert_eq!(ev.len(), 2, "{how}: -n 2: {:?}", out.stdout);
            assert_eq!(ev[0]["event"], "init", "{how}: {}", ev[0]);
            assert!(ev.iter().all(|e| e["algo"] == "tk_reno" && e["laddr"] == "127.0.0.1"), "{how}: {ev:?}");
        }
        if matches!(exit, Exit::Kill) {
            // The next start cleans up what a killed one may have left (the map form).
            let stale = !links;
            if stale {
                // No link owns a map-form registration: it outlives the process.
                serial.assert_registered(&ALGOS, "after SIGKILL (struct_ops maps without links)");
                assert_eq!(serial.maps(), maps, "the same maps after SIGKILL");
            }
            let next = load(&["tk_reno", "tk_vegas"]);
            let next_ids = next.ids.clone();
            let out = stop(next);
            for (id, name) in &maps {
                let note = format!(
                    "tracekit: unregistered `{name}` (struct_ops map id {id}), left registered by a tracekit that was killed"
                );
                assert_eq!(out.stderr.contains(&note), stale, "{how}: the note {note:?}:\n{}", out.stderr);
            }
            serial.assert_nothing_left(&next_ids, "the run after SIGKILL");
        }
        serial.assert_nothing_left(&ids, &how);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. A socket outlives the registration

#[test]
fn a_socket_keeps_the_algorithm_after_tracekit_ends() {
    let Some(serial) = begin("tcpcc_load::a_socket_keeps_the_algorithm_after_tracekit_ends") else { return };
    let pair = VethPair::new("tcl6");
    let tk = load(&["tk_reno"]);
    let ids = tk.ids.clone();
    let drops = dropper(&pair);
    let mut retrans_midway = 0;
    let sent = bulk(&pair, "tk_reno", |s| {
        let out = stop(tk);
        assert!(out.stderr.contains("registered struct_ops `tk_reno`"), "{}", out.stderr);
        assert!(eventually(10, || available().is_empty()), "unregistered at exit: {:?}", available());
        // No new socket can pick it any more...
        let err =
            net::set_congestion(&socket_with_cc(None), "tk_reno").expect_err("TCP_CONGESTION tk_reno after the exit");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        // ... while this one stays on it.
        assert_eq!(net::congestion(s), "tk_reno", "midway, after tracekit ended");
        retrans_midway = tcp_info(s).tcpi_total_retrans;
    });
    let dropped = stop(drops);
    assert_eq!((sent.cc_connected.as_str(), sent.cc_end.as_str()), ("tk_reno", "tk_reno"), "getsockopt");
    // Losses after the exit were recovered from, by tk_reno's programs (the socket holds them).
    assert!(
        sent.retrans > retrans_midway,
        "retransmissions: {retrans_midway} midway, {} at the end; dropper: {}",
        sent.retrans,
        drop_count(&dropped)
    );
    assert!(available().is_empty(), "{:?}", available());
    // The socket is closed now: the last reference to the algorithm with it.
    serial.assert_nothing_left(&ids, "once the last socket on it closed");
}

// ---------------------------------------------------------------------------------------------
// 7. One registration per name

#[test]
fn a_second_registration_is_refused_naming_the_first() {
    let Some(serial) = begin("tcpcc_load::a_second_registration_is_refused_naming_the_first") else { return };
    let first = load(&["tk_reno"]);
    let ids = first.ids.clone();
    let pid = first.child.id();
    let taken = format!("error: a congestion control named `tk_reno` is registered already by pid {pid} `tracekit`");
    for args in [&["tcpcc", "load", "tk_reno"][..], &["tcpcc", "load", "tk_vegas", "tk_reno", "--events"][..]] {
        let out = common::run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(&taken), "{args:?}:\n{}", out.stderr);
        assert!(out.stderr.contains("hint: one registration per name"), "{args:?}:\n{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        // What the refused run registered before (tk_vegas) went with it; the first's stays.
        assert!(eventually(10, || available() == ["tk_reno"]), "{args:?}: registered now: {:?}", available());
        serial.assert_registered(&["tk_reno"], "the first one's");
        assert_eq!(serial.maps().len(), 1, "{:?}", serial.maps());
    }
    // The first one still serves it.
    let ns = Netns::new("tcl7");
    let (client, _server) = local_pair(&ns, Some("tk_reno"));
    assert_eq!(net::congestion(&client), "tk_reno");
    drop(client);
    stop(first);
    serial.assert_nothing_left(&ids, "the first, after SIGINT");
}
