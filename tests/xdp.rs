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
