//! Self-test of tests/common/net.rs: namespaces, the veth pair, the traffic helpers, `leftovers`.

mod common;

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::net::*;

const T: Duration = Duration::from_secs(3);

#[test]
fn run_in_enters_the_namespace() {
    if !common::require_root("run_in_enters_the_namespace") {
        return;
    }
    let ns = Netns::new("runin");
    let here = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    let inside = ns.run_in(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino());
    assert_eq!(inside, std::fs::metadata(ns.path()).unwrap().ino());
    assert_ne!(inside, here);
    // The caller stays where it was, and only `lo` (up) is there.
    assert_eq!(std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino(), here);
    assert_eq!(ns.interfaces(), vec!["lo".to_owned()]);
    assert!(ns.exec_ok(&["ip", "link", "show", "lo"]).contains("UP"));
    // A panic inside is re-raised in the caller, and the namespace still works.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ns.run_in(|| panic!("inside"))));
    assert!(r.is_err());
    assert!(ping(&ns, IpAddr::from([127, 0, 0, 1]), 1));
}

#[test]
fn netns_is_removed_on_panic() {
    if !common::require_root("netns_is_removed_on_panic") {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::panic::catch_unwind(move || {
        let ns = Netns::new("panic");
        let pair = VethPair::new("panicpair");
        tx.send(vec![ns.path(), pair.a.path(), pair.b.path()]).unwrap();
        assert!(ns.path().exists());
        panic!("test panics with namespaces alive");
    });
    assert!(r.is_err());
    let paths = rx.recv().unwrap();
    let listed =
        String::from_utf8_lossy(&std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout)
            .into_owned();
    for p in paths {
        assert!(!p.exists(), "{} survived the panic", p.display());
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!listed.lines().any(|l| l.split_whitespace().next() == Some(&name)), "{name} still listed");
    }
}

#[test]
fn names_are_unique() {
    if !common::require_root("names_are_unique") {
        return;
    }
    let (x, y) = (Netns::new("uniq"), Netns::new("uniq"));
    assert_ne!(x.name(), y.name());
    assert!(x.name().starts_with(&format!("tk-uniq-{}-", std::process::id())));
    assert_eq!(x.path(), Path::new("/run/netns").join(x.name()));
}

#[test]
fn veth_pair_pings_both_ways() {
    if !common::require_root("veth_pair_pings_both_ways") {
        return;
    }
    let p = VethPair::new("ping");
    assert_eq!(p.a.interfaces(), vec!["lo".to_owned(), p.if_a.to_owned()]);
    assert_eq!(p.b.interfaces(), vec!["lo".to_owned(), p.if_b.to_owned()]);
    assert!(ping(&p.a, p.ip4_b, 3), "IPv4 a -> b");
    assert!(ping(&p.b, p.ip4_a, 3), "IPv4 b -> a");
    assert!(ping(&p.a, p.ip6_b, 3), "IPv6 a -> b");
    assert!(ping(&p.b, p.ip6_a, 3), "IPv6 b -> a");
    // Nobody has 10.200.0.3: no false positives.
    assert_eq!(ping_replies(&p.a, IpAddr::from([10, 200, 0, 3]), 1).unwrap(), 0);
}

#[test]
fn veth_pair_is_quiet() {
    if !common::require_root("veth_pair_is_quiet") {
        return;
    }
    let p = VethPair::new("quiet");
    let packets = |ns: &Netns, dev: &str| {
        let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-s", "-j", "link", "show", "dev", dev])).unwrap();
        (v[0]["stats64"]["rx"]["packets"].as_u64().unwrap(), v[0]["stats64"]["tx"]["packets"].as_u64().unwrap())
    };
    let before = (packets(&p.a, p.if_a), packets(&p.b, p.if_b));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!((packets(&p.a, p.if_a), packets(&p.b, p.if_b)), before, "background traffic on an idle pair");
    // Static neighbours, both families, both ways; MACs as announced.
    let neigh = p.a.ip(&["neigh", "show", "dev", p.if_a]);
    assert!(neigh.contains(&format!("{} lladdr {} PERMANENT", p.ip4_b, mac_str(&p.mac_b))), "{neigh}");
    assert!(neigh.contains(&format!("{} lladdr {} PERMANENT", p.ip6_b, mac_str(&p.mac_b))), "{neigh}");
    assert!(p.b.ip(&["link", "show", p.if_b]).contains(&mac_str(&p.mac_b)));
    assert_eq!(p.ifindex_a, p.a.ifindex(p.if_a));
}

#[test]
fn tcp_both_ways() {
    if !common::require_root("tcp_both_ways") {
        return;
    }
    let p = VethPair::new("tcp");
    let srv_b = tcp_listen(&p.b, p.ip4_b, 0);
    tcp_connect(&p.a, p.ip4_b, srv_b.port(), T).expect("IPv4 a -> b");
    tcp_connect(&p.a, p.ip4_b, srv_b.port(), T).expect("IPv4 a -> b again");
    assert_eq!(srv_b.accepted(), 2);
    let srv_a = tcp_listen(&p.a, p.ip6_a, 7777);
    assert_eq!(srv_a.port(), 7777);
    tcp_connect(&p.b, p.ip6_a, 7777, T).expect("IPv6 b -> a");
    assert_eq!(srv_a.accepted(), 1);
    // Refused (RST from b), not a timeout.
    let e = tcp_connect(&p.a, p.ip4_b, srv_b.port().wrapping_add(1).max(1), T).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    drop(srv_b);
    let e = tcp_connect(&p.a, p.ip4_b, 7777, T).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

#[test]
fn udp_datagrams_arrive() {
    if !common::require_root("udp_datagrams_arrive") {
        return;
    }
    let p = VethPair::new("udp");
    let rx4 = udp_bind(&p.b, p.ip4_b, 0).unwrap();
    let from = udp_send(&p.a, p.ip4_a, p.ip4_b, rx4.local_addr().unwrap().port(), 5).unwrap();
    let got = udp_recv(&rx4, 5, T);
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|(src, _)| *src == from));
    assert_eq!(got[0].1, b"tracekit udp 0");
    let rx6 = udp_bind(&p.a, p.ip6_a, 0).unwrap();
    udp_send(&p.b, p.ip6_b, p.ip6_a, rx6.local_addr().unwrap().port(), 3).unwrap();
    assert_eq!(udp_recv(&rx6, 3, T).len(), 3);
    // A bounded receive with nothing to receive.
    assert!(udp_recv(&rx6, 1, Duration::from_millis(100)).is_empty());
}

#[test]
fn leftovers_tc_qdisc_and_filters() {
    if !common::require_root("leftovers_tc_qdisc_and_filters") {
        return;
    }
    let p = VethPair::new("lefttc");
    assert_eq!(leftovers(&p.a), Vec::<String>::new());
    assert_eq!(leftovers(&p.b), Vec::<String>::new());
    p.a.exec_ok(&["tc", "qdisc", "add", "dev", p.if_a, "clsact"]);
    assert_eq!(leftovers(&p.a), vec![format!("{}: qdisc clsact", p.if_a)]);
    // No matchall on this kernel: u32, and a classic-BPF cls_bpf filter (no object file needed).
    p.a.exec_ok(&["tc", "filter", "add", "dev", p.if_a, "ingress", "pref", "10", "u32", "match", "u32", "0", "0"]);
    p.a.exec_ok(&[
        "tc",
        "filter",
        "add",
        "dev",
        p.if_a,
        "egress",
        "pref",
        "20",
        "bpf",
        "bytecode",
        "1,6 0 0 4294967295,",
    ]);
    let left = leftovers(&p.a);
    let has = |s: &str| left.iter().any(|l| l.contains(s));
    assert!(has("qdisc clsact"), "{left:#?}");
    assert!(has(&format!("{} ingress: tc filter u32 pref 10", p.if_a)), "{left:#?}");
    assert!(has(&format!("{} egress: tc filter bpf pref 20", p.if_a)), "{left:#?}");
    assert!(has("tc: ") && has("clsact/egress"), "bpftool sees the cls_bpf filter: {left:#?}");
    assert!(leftovers(&p.b).is_empty(), "the other namespace is not affected");
    // Traffic still flows through the filters.
    assert!(ping(&p.a, p.ip4_b, 1));
    p.a.exec_ok(&["tc", "qdisc", "del", "dev", p.if_a, "clsact"]);
    p.assert_clean();
}

#[test]
fn leftovers_xdp_and_tcx_links() {
    if !common::require_root("leftovers_xdp_and_tcx_links") {
        return;
    }
    let p = VethPair::new("leftlink");
    let xdp = attach_dummy_xdp(&p.a, p.if_a);
    let left = leftovers(&p.a);
    assert!(left.iter().any(|l| l.starts_with("xdp: ") && l.contains(p.if_a)), "{left:#?}");
    assert!(ping(&p.b, p.ip4_a, 1), "XDP_PASS lets traffic through");
    drop(xdp);
    assert_clean(&p.a);
    if !kernel_has_tcx() {
        // Expected before 6.6; leftovers_tc_qdisc_and_filters covers clsact there.
        let why = format!("kernel {} has no tcx links (6.6+)", kernel_release());
        common::skip("netfixtures::leftovers_xdp_and_tcx_links (tcx half)", &why);
        return;
    }
    let tcx = attach_dummy_tcx(&p.b, p.if_b, true);
    let tcx_eg = attach_dummy_tcx(&p.b, p.if_b, false);
    let left = leftovers(&p.b);
    assert!(left.iter().any(|l| l.starts_with(&format!("{}: tcx ingress prog ids", p.if_b))), "{left:#?}");
    assert!(left.iter().any(|l| l.starts_with(&format!("{}: tcx egress prog ids", p.if_b))), "{left:#?}");
    assert!(ping(&p.a, p.ip6_b, 1), "TCX_NEXT lets traffic through");
    drop((tcx, tcx_eg));
    p.assert_clean();
}

#[test]
fn parallel_pairs_do_not_interfere() {
    if !common::require_root("parallel_pairs_do_not_interfere") {
        return;
    }
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let p = VethPair::new(&format!("par{i}"));
                let srv = tcp_listen(&p.b, p.ip4_b, 9000);
                for _ in 0..3 {
                    tcp_connect(&p.a, p.ip4_b, 9000, T).unwrap();
                }
                assert!(ping(&p.a, p.ip6_b, 2));
                assert_eq!(srv.accepted(), 3);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
