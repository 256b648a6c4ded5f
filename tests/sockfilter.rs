//! `tracekit sockfilter` against real packets: a socket filter on tracekit's own packet
//! socket, on one interface of a veth pair or on every interface of a namespace.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::Tracer;
use common::net::{self, VethPair};

#[test]
fn one_interface_both_directions() {
    if !common::require_root("sockfilter::one_interface_both_directions") {
        return;
    }
    let pair = VethPair::new("sf1");
    let _srv = net::tcp_listen(&pair.b, pair.ip6_b, 9300);
    let t = Tracer::start(&["sockfilter", pair.if_b, "--netns", pair.b.name(), "--json", "--port", "9300,9301"]);
    net::tcp_connect(&pair.a, pair.ip6_b, 9300, Duration::from_secs(5)).expect("IPv6");
    net::udp_send(&pair.a, pair.ip4_a, pair.ip4_b, 9301, 2).expect("udp");
    std::thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    let ev = out.events();
    let syn = ev.iter().find(|e| e["tcp_flags"] == "S").expect("SYN");
    assert_eq!(syn["dir"], "ingress");
    assert_eq!(syn["hook"], "socket");
    assert_eq!(syn["family"], "ipv6");
    assert_eq!(syn["saddr"], pair.ip6_a.to_string());
    assert_eq!(syn["iface"], pair.if_b);
    let synack = ev.iter().find(|e| e["tcp_flags"] == "S.").expect("SYN-ACK");
    assert_eq!(synack["dir"], "egress");
    assert_eq!(synack["sport"], 9300);
    assert_eq!(ev.iter().filter(|e| e["proto"] == "udp" && e["dport"] == 9301).count(), 2, "{ev:?}");
}

#[test]
fn every_interface_and_loopback_once() {
    if !common::require_root("sockfilter::every_interface_and_loopback_once") {
        return;
    }
    let pair = VethPair::new("sf2");
    let t = Tracer::start(&["sockfilter", "--netns", pair.b.name(), "--json", "--proto", "udp"]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    net::udp_send(&pair.b, lo, lo, 9400, 3).expect("udp");
    net::udp_send(&pair.a, pair.ip4_a, pair.ip4_b, 9401, 2).expect("udp");
    std::thread::sleep(Duration::from_millis(300));
    let ev = t.stop().events();
    let on_lo: Vec<_> = ev.iter().filter(|e| e["iface"] == "lo").collect();
    assert_eq!(on_lo.len(), 3, "each loopback datagram once, not leaving and arriving: {ev:?}");
    assert!(on_lo.iter().all(|e| e["dport"] == 9400));
    assert_eq!(ev.iter().filter(|e| e["iface"] == pair.if_b).count(), 2, "{ev:?}");
}
