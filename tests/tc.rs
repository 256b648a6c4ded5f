//! `tracekit tc` against real packets across a veth pair: both directions, IP fields, the
//! socket of each packet, and both backends (tcx links, clsact + cls_bpf).

mod common;

use std::time::Duration;

use common::net::{self, VethPair};
use common::{Tracer, run};
use serde_json::Value;

fn tc(pair: &VethPair, extra: &[&str]) -> Tracer {
    let mut args = vec!["tc", pair.if_b, "--netns", pair.b.name(), "--json"];
    args.extend_from_slice(extra);
    Tracer::start(&args)
}

fn find<'a>(ev: &'a [Value], dir: &str, flags: &str, fam: &str) -> Option<&'a Value> {
    ev.iter().find(|e| e["dir"] == dir && e["tcp_flags"] == flags && e["family"] == fam)
}

fn both_directions(backend: &str, tag: &str) {
    let pair = VethPair::new(tag);
    let _s4 = net::tcp_listen(&pair.b, pair.ip4_b, 9090);
    let _s6 = net::tcp_listen(&pair.b, pair.ip6_b, 9090);
    let t = tc(&pair, &["--backend", backend, "--port", "9090"]);
    net::tcp_connect(&pair.a, pair.ip4_b, 9090, Duration::from_secs(5)).expect("IPv4");
    net::tcp_connect(&pair.a, pair.ip6_b, 9090, Duration::from_secs(5)).expect("IPv6");
    std::thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let ev = out.events();
    for (fam, a, b) in [
        ("ipv4", pair.ip4_a.to_string(), pair.ip4_b.to_string()),
        ("ipv6", pair.ip6_a.to_string(), pair.ip6_b.to_string()),
    ] {
        let syn = find(&ev, "ingress", "S", fam).unwrap_or_else(|| panic!("{backend}: the {fam} SYN arriving: {ev:?}"));
        assert_eq!((syn["saddr"].as_str(), syn["daddr"].as_str()), (Some(a.as_str()), Some(b.as_str())));
        assert_eq!(syn["dport"], 9090);
        assert_eq!(syn["hook"], "tc");
        assert_eq!(syn["ttl"], 64);
        assert_eq!(syn["dscp"], 0);
        assert_eq!(syn["mark"], 0);
        let synack =
            find(&ev, "egress", "S.", fam).unwrap_or_else(|| panic!("{backend}: the {fam} SYN-ACK leaving: {ev:?}"));
        assert_eq!((synack["saddr"].as_str(), synack["daddr"].as_str()), (Some(b.as_str()), Some(a.as_str())));
        assert_eq!(synack["sport"], 9090);
        assert_eq!(synack["dport"], syn["sport"]);
    }
    let counters = out.json().into_iter().find(|v| v["type"] == "counters").expect("counters");
    assert_eq!(counters["matched"].as_u64(), Some(ev.len() as u64), "{counters}");
    net::assert_clean(&pair.b);
}

#[test]
fn both_directions_tcx_or_auto() {
    if common::require_root("tc::both_directions_tcx_or_auto") {
        both_directions("auto", "tc1");
    }
}

#[test]
fn both_directions_clsact() {
    if common::require_root("tc::both_directions_clsact") {
        both_directions("clsact", "tc2");
    }
}

#[test]
fn one_direction_and_udp() {
    if !common::require_root("tc::one_direction_and_udp") {
        return;
    }
    let pair = VethPair::new("tc3");
    let t = tc(&pair, &["--egress", "--proto", "udp"]);
    // Sent from b: leaves through tkv1 (egress); sent from a: arrives (ingress, not asked for).
    net::udp_send(&pair.b, pair.ip6_b, pair.ip6_a, 6000, 3).expect("udp");
    net::udp_send(&pair.a, pair.ip6_a, pair.ip6_b, 6001, 3).expect("udp");
    std::thread::sleep(Duration::from_millis(200));
    let ev = t.stop().events();
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert!(ev.iter().all(|e| e["dir"] == "egress" && e["dport"] == 6000 && e["proto"] == "udp"));
}

#[test]
fn sock_names_the_socket() {
    if !common::require_root("tc::sock_names_the_socket") {
        return;
    }
    let pair = VethPair::new("tc4");
    let _srv = net::tcp_listen(&pair.b, pair.ip4_b, 9091);
    let t = tc(&pair, &["--sock", "--proto", "tcp", "-4"]);
    net::tcp_connect(&pair.a, pair.ip4_b, 9091, Duration::from_secs(5)).expect("connect");
    let _ = net::tcp_connect(&pair.a, pair.ip4_b, 9092, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(200));
    let ev = t.stop().events();
    let syn = ev.iter().find(|e| e["dir"] == "ingress" && e["dport"] == 9091 && e["tcp_flags"] == "S").expect("SYN");
    assert_eq!(syn["sock"]["state"], "LISTEN", "{syn}");
    let closed = ev.iter().find(|e| e["dir"] == "ingress" && e["dport"] == 9092 && e["tcp_flags"] == "S").expect("SYN");
    assert!(closed["sock"].is_null(), "{closed}");
    let synack =
        ev.iter().find(|e| e["dir"] == "egress" && e["sport"] == 9091 && e["tcp_flags"] == "S.").expect("SYN-ACK");
    assert!(!synack["sock"].is_null(), "the answering socket: {synack}");
}

#[test]
fn bad_input_is_explained() {
    if !common::require_root("tc::bad_input_is_explained") {
        return;
    }
    let r = run(&["tc", "nosuchif0"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("nosuchif0") && r.stderr.contains("hint:"), "{}", r.stderr);
    let r = run(&["tc", "lo", "--ingress", "--egress"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    let r = run(&["tc", "lo", "--port", "1,2,3,4,5,6,7,8,9"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("at most 8"), "{}", r.stderr);
}
