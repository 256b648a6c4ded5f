//! Unit tests of tcpstate: state names, endpoints, the event layout.

use std::net::{IpAddr, Ipv6Addr};

use super::*;

fn event(family: u16) -> types::tk_tcpstate_event {
    types::tk_tcpstate_event {
        family,
        sport: 8080,
        dport: 443,
        oldstate: 2,
        newstate: 1,
        delta_ns: 1_500_000,
        ..Default::default()
    }
}

#[test]
fn state_names_match_the_kernel() {
    assert_eq!(state_name(1), "ESTABLISHED");
    assert_eq!(state_name(7), "CLOSE");
    assert_eq!(state_name(10), "LISTEN");
    assert_eq!(state_name(12), "NEW_SYN_RECV");
    assert_eq!(state_name(13), "UNKNOWN");
    assert_eq!(state_name(-1), "UNKNOWN");
}

#[test]
fn endpoints_format_both_families() {
    let mut ev = event(AF_INET);
    ev.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    assert_eq!(Endpoint::new(sock_addr(ev.family, &ev.saddr), ev.sport).as_str(), "127.0.0.1:8080");
    let mut ev6 = event(AF_INET6);
    ev6.saddr[15] = 1;
    assert_eq!(Endpoint::new(sock_addr(ev6.family, &ev6.saddr), 443).as_str(), "[::1]:443");
    let full = Ipv6Addr::new(0xfe80, 1, 2, 3, 4, 5, 6, 7);
    assert_eq!(Endpoint::new(IpAddr::V6(full), 65535).as_str(), "[fe80:1:2:3:4:5:6:7]:65535");
}

#[test]
fn decodes_a_sample_and_rejects_a_short_one() {
    let ev = event(AF_INET);
    // SAFETY: reading the bytes of a plain-old-data value.
    let bytes = unsafe { plain::as_bytes(&ev) };
    let mut back = types::tk_tcpstate_event::default();
    plain::copy_from_bytes(&mut back, bytes).expect("full sample decodes");
    assert_eq!((back.sport, back.dport, back.oldstate), (8080, 443, 2));
    // A perf sample may carry trailing padding: longer is fine, shorter is refused.
    let mut padded = bytes.to_vec();
    padded.extend_from_slice(&[0; 4]);
    assert!(plain::copy_from_bytes(&mut back, &padded).is_ok());
    assert!(plain::copy_from_bytes(&mut back, &bytes[..50]).is_err());
}
