//! `tracekit xdp` against real packets: a veth pair between two namespaces the test creates,
//! TCP and UDP over IPv4 and IPv6, asserting the decoded fields of the packets the test sent.

mod common;

use std::time::Duration;

use common::net::{self, VethPair};
use common::{Tracer, run};
use serde_json::Value;

fn xdp(pair: &VethPair, extra: &[&str]) -> Tracer {
    let mut args = vec!["xdp", pair.if_b, "--netns", pair.b.name(), "--json"];
    args.extend_from_slice(extra);
    Tracer::start(&args)
}

fn tcp_syns(events: &[Value], dport: u64) -> Vec<&Value> {
    events.iter().filter(|e| e["proto"] == "tcp" && e["dport"] == dport && e["tcp_flags"] == "S").collect()
}

#[test]
fn tcp_and_udp_over_ipv4_and_ipv6() {
    if !common::require_root("xdp::tcp_and_udp_over_ipv4_and_ipv6") {
        return;
    }
    let pair = VethPair::new("xdp1");
    let _srv4 = net::tcp_listen(&pair.b, pair.ip4_b, 8080);
    let _srv6 = net::tcp_listen(&pair.b, pair.ip6_b, 8080);
    let t = xdp(&pair, &["--port", "8080,5353"]);
    net::tcp_connect(&pair.a, pair.ip4_b, 8080, Duration::from_secs(5)).expect("connect over IPv4");
    net::tcp_connect(&pair.a, pair.ip6_b, 8080, Duration::from_secs(5)).expect("connect over IPv6");
    net::udp_send(&pair.a, pair.ip4_a, pair.ip4_b, 5353, 3).expect("udp");
    net::udp_send(&pair.a, pair.ip6_a, pair.ip6_b, 5353, 2).expect("udp");
    std::thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();

    let syn4 = tcp_syns(&events, 8080).into_iter().find(|e| e["family"] == "ipv4").expect("the IPv4 SYN");
    assert_eq!(syn4["saddr"], pair.ip4_a.to_string());
    assert_eq!(syn4["daddr"], pair.ip4_b.to_string());
    assert!(syn4["sport"].as_u64().unwrap() >= 1024, "{syn4}");
    assert_eq!(syn4["iface"], pair.if_b);
    assert_eq!(syn4["dir"], "ingress");
    assert_eq!(syn4["hook"], "xdp");
    assert_eq!(syn4["verdict"], "pass");
    assert_eq!(syn4["ttl"], 64);
    assert!(syn4["len"].as_u64().unwrap() >= 14 + 20 + 20, "{syn4}");
    let syn6 = tcp_syns(&events, 8080).into_iter().find(|e| e["family"] == "ipv6").expect("the IPv6 SYN");
    assert_eq!(syn6["saddr"], pair.ip6_a.to_string());
    assert_eq!(syn6["daddr"], pair.ip6_b.to_string());
    assert_eq!(syn6["ttl"], 64, "hop limit");

    let udp =
        |fam: &str| events.iter().filter(|e| e["proto"] == "udp" && e["family"] == fam && e["dport"] == 5353).count();
    assert_eq!(udp("ipv4"), 3, "{events:?}");
    assert_eq!(udp("ipv6"), 2, "{events:?}");
    // Every event matched the port filter: the kernel dropped the rest before sending anything.
    assert!(events.iter().all(|e| e["sport"] == 8080 || e["dport"] == 8080 || e["dport"] == 5353), "{events:?}");

    let counters = out.json().into_iter().find(|v| v["type"] == "counters").expect("a counters object");
    assert_eq!(counters["matched"].as_u64().unwrap(), events.len() as u64, "{counters}");
    assert_eq!(counters["pass"], counters["matched"]);
    assert_eq!(counters["drop"], 0);
    assert!(counters["seen"].as_u64().unwrap() >= counters["matched"].as_u64().unwrap());
}

#[test]
fn filters_run_in_the_kernel() {
    if !common::require_root("xdp::filters_run_in_the_kernel") {
        return;
    }
    let pair = VethPair::new("xdp2");
    let t6 = xdp(&pair, &["-6", "--proto", "udp"]);
    let out = {
        net::udp_send(&pair.a, pair.ip4_a, pair.ip4_b, 7000, 2).expect("udp");
        net::udp_send(&pair.a, pair.ip6_a, pair.ip6_b, 7000, 2).expect("udp");
        net::tcp_connect(&pair.a, pair.ip6_b, 7001, Duration::from_secs(2)).ok();
        std::thread::sleep(Duration::from_millis(200));
        t6.stop()
    };
    let ev = out.events();
    assert_eq!(ev.len(), 2, "only the two UDP/IPv6 datagrams: {ev:?}");
    assert!(ev.iter().all(|e| e["family"] == "ipv6" && e["proto"] == "udp"));

    let src = pair.ip4_a.to_string();
    let t = xdp(&pair, &["--src", &src, "--proto", "udp"]);
    net::udp_send(&pair.a, pair.ip4_a, pair.ip4_b, 7002, 3).expect("udp");
    net::udp_send(&pair.a, pair.ip6_a, pair.ip6_b, 7002, 3).expect("udp");
    std::thread::sleep(Duration::from_millis(200));
    let ev = t.stop().events();
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert!(ev.iter().all(|e| e["saddr"] == src.as_str()));

    let t = xdp(&pair, &["--host", "fd00:200::/64", "--proto", "udp"]);
    net::udp_send(&pair.a, pair.ip4_a, pair.ip4_b, 7003, 2).expect("udp");
    net::udp_send(&pair.a, pair.ip6_a, pair.ip6_b, 7003, 4).expect("udp");
    std::thread::sleep(Duration::from_millis(200));
    let ev = t.stop().events();
    assert_eq!(ev.len(), 4, "a prefix matches either side: {ev:?}");
}

#[test]
fn drop_really_drops() {
    if !common::require_root("xdp::drop_really_drops") {
        return;
    }
    let pair = VethPair::new("xdp3");
    let _srv = net::tcp_listen(&pair.b, pair.ip4_b, 8081);
    net::tcp_connect(&pair.a, pair.ip4_b, 8081, Duration::from_secs(5)).expect("reachable before");
    let t = xdp(&pair, &["--drop", "--proto", "tcp", "--port", "8081"]);
    let r = net::tcp_connect(&pair.a, pair.ip4_b, 8081, Duration::from_millis(1500));
    assert!(r.is_err(), "connect must fail while its SYNs are dropped");
    assert!(net::ping(&pair.a, pair.ip4_b, 1), "unmatched packets still pass");
    let out = t.stop();
    let ev = out.events();
    let dropped = ev.iter().filter(|e| e["verdict"] == "drop").count() as u64;
    assert!(dropped >= 1, "{ev:?}");
    assert!(ev.iter().all(|e| e["verdict"] == "drop" && e["dport"] == 8081), "{ev:?}");
    let counters = out.json().into_iter().find(|v| v["type"] == "counters").expect("counters");
    assert_eq!(counters["drop"].as_u64(), Some(dropped), "{counters}");
    net::tcp_connect(&pair.a, pair.ip4_b, 8081, Duration::from_secs(5)).expect("reachable after exit");
}

#[test]
fn sock_tells_a_listener_from_a_closed_port() {
    if !common::require_root("xdp::sock_tells_a_listener_from_a_closed_port") {
        return;
    }
    let pair = VethPair::new("xdp4");
    let _srv = net::tcp_listen(&pair.b, pair.ip4_b, 8082);
    let t = xdp(&pair, &["--sock", "--proto", "tcp"]);
    net::tcp_connect(&pair.a, pair.ip4_b, 8082, Duration::from_secs(5)).expect("connect");
    let _ = net::tcp_connect(&pair.a, pair.ip4_b, 8083, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(200));
    let ev = t.stop().events();
    let open = tcp_syns(&ev, 8082);
    assert_eq!(open.first().map(|e| e["sock"]["state"].clone()), Some("LISTEN".into()), "{ev:?}");
    let closed = tcp_syns(&ev, 8083);
    assert!(!closed.is_empty() && closed.iter().all(|e| e["sock"].is_null()), "nobody accepts: {ev:?}");
    // The ACK that completes the handshake belongs to the new connection.
    let ack = ev.iter().find(|e| e["dport"] == 8082 && e["tcp_flags"] == ".").expect("the handshake's ACK");
    assert!(
        ["SYN_RECV", "NEW_SYN_RECV", "ESTABLISHED"].contains(&ack["sock"]["state"].as_str().unwrap_or("")),
        "{ack}"
    );
}

#[test]
fn skb_and_native_modes() {
    if !common::require_root("xdp::skb_and_native_modes") {
        return;
    }
    let pair = VethPair::new("xdp5");
    for mode in ["skb", "native", "auto"] {
        let t = xdp(&pair, &["--mode", mode, "--proto", "udp"]);
        net::udp_send(&pair.a, pair.ip4_a, pair.ip4_b, 7100, 2).expect("udp");
        std::thread::sleep(Duration::from_millis(200));
        let out = t.stop();
        // auto picks native on veth, whose driver has it
        let expect = if mode == "skb" { "(skb mode)" } else { "(native mode)" };
        assert!(out.stderr.contains(expect), "--mode {mode}: {}", out.stderr);
        let ev = out.events();
        assert_eq!(ev.len(), 2, "--mode {mode}: {ev:?}");
        net::assert_clean(&pair.b);
    }
}

#[test]
fn bad_input_is_explained() {
    if !common::require_root("xdp::bad_input_is_explained") {
        return;
    }
    let pair = VethPair::new("xdp6");
    let r = run(&["xdp", "nosuchif0", "--netns", pair.b.name()]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("nosuchif0") && r.stderr.contains(pair.if_b), "lists what exists: {}", r.stderr);
    let r = run(&["xdp", "lo", "--netns", "tk-no-such-netns"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("tk-no-such-netns"), "{}", r.stderr);
    let r = run(&["xdp", "lo", "--host", "10.0.0.300"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    let r = run(&["xdp", "lo", "--port", "0"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    let r = run(&["xdp", "lo", "-4", "--host", "::1"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    let r = run(&["xdp", "lo", "--netns", pair.b.name(), "--mode", "native", "-d", "1"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--mode skb"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"));

    // Another program in the way: the error names it.
    let first = xdp(&pair, &[]);
    let r = run(&["xdp", pair.if_b, "--netns", pair.b.name(), "-d", "1"]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("xdp__observe") && r.stderr.contains("id "), "names the program: {}", r.stderr);
    first.stop();
}

/// Under a flood into a one-page buffer with a reader that lags, every packet is either
/// delivered or counted as lost: delivered + lost = matched, exactly.
#[test]
fn flood_losses_are_counted_exactly() {
    if !common::require_root("xdp::flood_losses_are_counted_exactly") {
        return;
    }
    let pair = VethPair::new("xdp7");
    let args = [
        "xdp",
        pair.if_b,
        "--netns",
        pair.b.name(),
        "--json",
        "--proto",
        "udp",
        "--port",
        "7500",
        "--buffer-pages",
        "1",
    ];
    let mut t = Tracer::start_opts(&args, false);
    const SENT: u64 = 20_000;
    net::udp_send(&pair.a, pair.ip4_a, pair.ip4_b, 7500, SENT as usize).expect("udp");
    let mut raw = t.stdout_raw.take().expect("unread stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut raw, &mut s).expect("read stdout");
        s
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let stdout = reader.join().expect("reader");
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("NDJSON")).collect();
    let delivered = lines.iter().filter(|v| v["type"] == "event").count() as u64;
    let summary = lines.iter().find(|v| v["type"] == "summary").expect("summary");
    let counters = lines.iter().find(|v| v["type"] == "counters").expect("counters");
    let lost = summary["lost"].as_u64().expect("lost");
    let matched = counters["matched"].as_u64().expect("matched");
    assert_eq!(matched, SENT, "every datagram reached XDP: {counters}");
    assert!(lost > 0, "a 4 KiB buffer cannot hold {SENT} events: {summary}");
    assert_eq!(delivered + lost, matched, "delivered {delivered} + lost {lost} = generated {matched}");
}

/// The counters tracekit printed last (at exit).
fn final_counters(out: &common::Finished) -> Value {
    out.json().into_iter().rev().find(|v| v["type"] == "counters").expect("a counters object")
}

/// A UDP socket in `ns` whose receive buffer holds every datagram a test sends in a burst (a
/// full buffer would drop datagrams and be taken for the program's drops).
fn udp_receiver(ns: &net::Netns, addr: impl Into<std::net::IpAddr>, port: u16) -> std::net::UdpSocket {
    use std::os::fd::AsRawFd;
    let sock = net::udp_bind(ns, addr, port).expect("bind the receiver");
    let size: libc::c_int = 32 << 20;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    sock
}

/// The `tracekit udp <i>` numbers of datagrams received (what `net::udp_recv` got).
fn datagram_numbers(got: &[(std::net::SocketAddr, Vec<u8>)]) -> Vec<usize> {
    got.iter()
        .map(|(_, p)| {
            let text = std::str::from_utf8(p).expect("UTF-8 payload");
            text.strip_prefix("tracekit udp ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{text:?}"))
        })
        .collect()
}

/// Sends datagrams `tracekit udp 0`, `1`, ... `count - 1` from `from` (any port), each to every
/// address of `to` in turn. Call it on a thread inside the sender's namespace.
fn send_numbered(from: std::net::IpAddr, to: &[std::net::SocketAddr], count: usize) -> std::io::Result<()> {
    let s = std::net::UdpSocket::bind((from, 0))?;
    for i in 0..count {
        for dst in to {
            s.send_to(format!("tracekit udp {i}").as_bytes(), dst)?;
        }
    }
    Ok(())
}

/// One counter of /proc/net/snmp in `ns` (`Tcp`, `RetransSegs`).
fn snmp(ns: &net::Netns, group: &str, name: &str) -> u64 {
    let text = ns.exec_ok(&["cat", "/proc/net/snmp"]);
    let prefix = format!("{group}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (rows.next().expect("header row"), rows.next().expect("value row"));
    let at = names.split_whitespace().position(|n| n == name).unwrap_or_else(|| panic!("no {group} {name}"));
    values.split_whitespace().nth(at).and_then(|v| v.parse().ok()).expect("a number")
}

/// The Nth, 2Nth, ... matched packet is dropped, in the order they arrive, and nothing else:
/// the receiver misses exactly those datagrams, tracekit's counters say so, and the events are
/// the drops and only them. Datagrams to another port, sent in between, all arrive.
#[test]
fn drop_every_drops_exactly_every_nth_match() {
    if !common::require_root("xdp::drop_every_drops_exactly_every_nth_match") {
        return;
    }
    let pair = VethPair::new("xdp8");
    let matched = udp_receiver(&pair.b, pair.ip4_b, 7600);
    let other = udp_receiver(&pair.b, pair.ip4_b, 7601);
    const SENT: usize = 103;
    const N: usize = 5;
    let t = xdp(&pair, &["--drop-every", &N.to_string(), "--proto", "udp", "--port", "7600"]);
    let to = [(pair.ip4_b, 7600).into(), (pair.ip4_b, 7601).into()];
    pair.a.run_in(|| send_numbered(pair.ip4_a.into(), &to, SENT)).expect("send");
    // as many as should arrive, then a short wait for any that should not
    let mut got = datagram_numbers(&net::udp_recv(&matched, SENT - SENT / N, Duration::from_secs(5)));
    got.extend(datagram_numbers(&net::udp_recv(&matched, 1, Duration::from_millis(200))));
    let got_other = net::udp_recv(&other, SENT, Duration::from_secs(5));
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);

    let expected: Vec<usize> = (0..SENT).filter(|i| (i + 1) % N != 0).collect();
    assert_eq!(got, expected, "the receiver misses datagrams 5, 10, ... (counting from 1)");
    assert_eq!(got_other.len(), SENT, "unmatched datagrams are never dropped");
    let dropped = (SENT / N) as u64;
    let c = final_counters(&out);
    assert_eq!(c["matched"], SENT as u64, "{c}");
    assert_eq!(c["drop"], dropped, "{c}");
    assert_eq!(c["pass"], (SENT - SENT / N) as u64, "{c}");
    let ev = out.events();
    assert_eq!(ev.len() as u64, dropped, "only the drops are events: {ev:?}");
    assert!(ev.iter().all(|e| e["verdict"] == "drop" && e["dport"] == 7600), "{ev:?}");
    assert_eq!(snmp(&pair.b, "Udp", "RcvbufErrors"), 0, "the receiver's buffer lost none");
}

/// Pins the calling thread to the `nth` CPU it may run on (modulo how many those are).
fn pin_to_cpu(nth: usize) {
    let size = size_of::<libc::cpu_set_t>();
    // SAFETY: a zeroed cpu_set_t is an empty set, a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the kernel writes at most `size` bytes into `set`.
    let rc = unsafe { libc::sched_getaffinity(0, size, &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity: {}", std::io::Error::last_os_error());
    // SAFETY: CPU_ISSET reads one bit of the set, at an index below CPU_SETSIZE.
    let allowed: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
    let cpu = allowed[nth % allowed.len()];
    // SAFETY: as above, a zeroed set is empty.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from the set, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: pid 0 is the calling thread; the set outlives the call.
    let rc = unsafe { libc::sched_setaffinity(0, size, &one) };
    assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}: {}", std::io::Error::last_os_error());
}

/// Two senders on two CPUs at once: one count decides for both, so exactly floor(total / N)
/// are dropped. In skb mode a veth's packets are received on the sending CPU, so the program
/// runs on both CPUs concurrently (a per-CPU count would drop 2 × floor(2006 / 7) = 572 here,
/// not floor(4012 / 7) = 573).
#[test]
fn drop_every_is_exact_across_cpus() {
    if !common::require_root("xdp::drop_every_is_exact_across_cpus") {
        return;
    }
    let pair = VethPair::new("xdp9");
    let sink = udp_receiver(&pair.b, pair.ip4_b, 7610);
    const PER_SENDER: usize = 2006;
    const TOTAL: usize = 2 * PER_SENDER;
    const N: usize = 7;
    let t = xdp(&pair, &["--mode", "skb", "--drop-every", &N.to_string(), "--proto", "udp", "--port", "7610"]);
    let reader = std::thread::spawn(move || {
        // as many as should arrive, then a short wait for any that should not
        let expected = net::udp_recv(&sink, TOTAL - TOTAL / N, Duration::from_secs(10)).len();
        expected + net::udp_recv(&sink, 1, Duration::from_millis(200)).len()
    });
    let (from, to) = (pair.ip4_a.into(), (pair.ip4_b, 7610).into());
    let senders: Vec<_> = (0..2)
        .map(|cpu| {
            pair.a.spawn_in(move || {
                pin_to_cpu(cpu);
                send_numbered(from, &[to], PER_SENDER)
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender").expect("send");
    }
    let received = reader.join().expect("reader");
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);

    let dropped = (TOTAL / N) as u64;
    let c = final_counters(&out);
    assert_eq!(c["matched"], TOTAL as u64, "{c}");
    assert_eq!(c["drop"], dropped, "{c}");
    assert_eq!(received as u64, TOTAL as u64 - dropped, "the receiver agrees with the counters");
    let ev = out.events();
    assert_eq!(ev.len() as u64, dropped, "{}", out.stderr);
    let mut cpus: Vec<u64> = ev.iter().filter_map(|e| e["cpu"].as_u64()).collect();
    cpus.sort_unstable();
    cpus.dedup();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        assert!(cpus.len() >= 2, "drops on one CPU only ({cpus:?}): the test did not run the program concurrently");
    }
    assert_eq!(snmp(&pair.b, "Udp", "RcvbufErrors"), 0, "the receiver's buffer lost none");
}

/// Loss injected into a TCP transfer, as netem's `loss` would: 1 data segment in 50 dropped,
/// TCP retransmits, and 4 MiB arrive byte for byte. Only data segments match (`greater 100`):
/// the handshake and pure ACKs pass, so the connection is set up without a SYN timeout.
#[test]
fn drop_every_tcp_transfer_recovers() {
    if !common::require_root("xdp::drop_every_tcp_transfer_recovers") {
        return;
    }
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};

    let pair = VethPair::new("xdp10");
    const SIZE: usize = 4 << 20;
    // not a repeating pattern: a segment delivered at the wrong offset would show
    let data: Vec<u8> = (0..SIZE as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let listener = pair.b.run_in(|| TcpListener::bind((pair.ip4_b, 5201))).expect("listen");
    let t = xdp(&pair, &["--drop-every", "50", "tcp", "dst", "port", "5201", "and", "greater", "100"]);
    let retrans_before = snmp(&pair.a, "Tcp", "RetransSegs");
    let started = std::time::Instant::now();
    let receiver = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut got = Vec::with_capacity(SIZE);
        s.read_to_end(&mut got)?;
        Ok(got)
    });
    let to = std::net::SocketAddr::new(pair.ip4_b.into(), 5201);
    let sent = data.clone();
    pair.a
        .run_in(move || -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
            s.set_write_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(&sent)?;
            s.shutdown(Shutdown::Write)
        })
        .expect("send 4 MiB");
    let got = receiver.join().expect("receiver").expect("receive");
    let took = started.elapsed();
    let retrans = snmp(&pair.a, "Tcp", "RetransSegs") - retrans_before;
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);

    assert_eq!(got.len(), SIZE, "every byte arrived");
    assert!(got == data, "byte for byte");
    let c = final_counters(&out);
    let (matched, dropped) = (c["matched"].as_u64().unwrap(), c["drop"].as_u64().unwrap());
    assert_eq!(dropped, matched / 50, "{c}");
    // 4 MiB is about 2900 full segments (MSS 1448): about 58 drops
    assert!(dropped >= SIZE as u64 / 1500 / 50, "{c}");
    assert!(retrans >= 1, "the sender retransmitted what was dropped: RetransSegs +{retrans}, {c}");
    let ev = out.events();
    assert_eq!(ev.len() as u64, dropped, "one event per drop");
    assert!(
        ev.iter().all(|e| e["verdict"] == "drop" && e["dport"] == 5201 && e["len"].as_u64().unwrap() > 100),
        "{ev:?}"
    );
    eprintln!("4 MiB in {took:?}: {matched} data segments, {dropped} dropped, {retrans} retransmitted");
}

/// N below 2 and --drop with --drop-every are usage errors (exit 2) that say what to do; they
/// are found before anything is loaded, so they need no root.
#[test]
fn drop_every_usage_errors() {
    for (args, says) in [
        (&["xdp", "lo", "--drop-every", "1"][..], "use --drop"),
        (&["xdp", "lo", "--drop-every", "0"][..], "at least 2"),
        (&["xdp", "lo", "--drop-every", "many"][..], "`many` is not a whole number"),
        (&["xdp", "lo", "--drop-every", "4", "--drop"][..], "cannot be used with"),
    ] {
        let r = run(args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says) && r.stderr.contains("--drop"), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}
