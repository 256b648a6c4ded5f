//! tcpstate end to end: real loopback connections made by the test, decoded fields asserted.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::{Tracer, require_root};
use serde_json::Value;

/// One loopback connection: the listener and the accepted socket live on "tk-server", the
/// client on "tk-client"; the client closes first, so both ends' transitions are fixed.
/// Returns (listening port, client port).
fn connection(v6: bool) -> (u16, u16) {
    let listener = TcpListener::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server = thread::Builder::new()
        .name("tk-server".into())
        .spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 64];
            while s.read(&mut buf).expect("read") > 0 {}
            drop(s);
            drop(listener);
        })
        .expect("server thread");
    let client = thread::Builder::new()
        .name("tk-client".into())
        .spawn(move || {
            let mut c = TcpStream::connect(addr).expect("connect");
            let port = c.local_addr().expect("client addr").port();
            c.write_all(b"hello").expect("write");
            port
        })
        .expect("client thread");
    let client_port = client.join().expect("client");
    server.join().expect("server");
    thread::sleep(Duration::from_millis(200));
    (addr.port(), client_port)
}

fn transitions(events: &[&Value]) -> Vec<String> {
    events.iter().map(|e| format!("{}>{}", e["oldstate"].as_str().unwrap(), e["newstate"].as_str().unwrap())).collect()
}

/// Events of this connection, per socket, in order. A socket is followed by address from its
/// first event with the port to its first move to CLOSE (its address may be reused by a later
/// socket).
///
/// Perf buffers are per CPU, so events of different CPUs may arrive out of order: sort by time.
fn sockets(events: &[Value], port: u16) -> BTreeMap<String, Vec<&Value>> {
    let mut by_sk: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    let mut closed = std::collections::BTreeSet::new();
    let mut events: Vec<&Value> = events.iter().collect();
    events.sort_by_key(|e| e["time_ns"].as_u64());
    for e in events {
        let sk = e["skaddr"].as_str().expect("skaddr").to_owned();
        if closed.contains(&sk) {
            continue;
        }
        let ours = e["lport"] == port || e["rport"] == port;
        if let Some(evs) = by_sk.get_mut(&sk) {
            evs.push(e);
        } else if ours {
            by_sk.insert(sk.clone(), vec![e]);
        } else {
            continue;
        }
        if e["newstate"] == "CLOSE" {
            closed.insert(sk);
        }
    }
    by_sk
}

fn check_connection(events: &[Value], v6: bool, port: u16, client_port: u16) {
    let me = std::process::id();
    let (family, lo) = if v6 { ("ipv6", "::1") } else { ("ipv4", "127.0.0.1") };
    let socks = sockets(events, port);
    // A slow machine may retransmit the SYN: the duplicate's request socket is dropped again.
    let dropped_request = ["LISTEN>SYN_RECV", "SYN_RECV>CLOSE"];
    let mut seen: Vec<Vec<String>> =
        socks.values().map(|evs| transitions(evs)).filter(|t| t != &dropped_request).collect();
    seen.sort();
    let want = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut expected = vec![
        want(&["CLOSE>LISTEN", "LISTEN>CLOSE"]),
        want(&[
            "CLOSE>SYN_SENT",
            "SYN_SENT>ESTABLISHED",
            "ESTABLISHED>FIN_WAIT1",
            "FIN_WAIT1>FIN_WAIT2",
            "FIN_WAIT2>CLOSE",
        ]),
        want(&[
            "LISTEN>SYN_RECV",
            "SYN_RECV>ESTABLISHED",
            "ESTABLISHED>CLOSE_WAIT",
            "CLOSE_WAIT>LAST_ACK",
            "LAST_ACK>CLOSE",
        ]),
    ];
    expected.sort();
    assert_eq!(seen, expected, "transitions per socket; events: {socks:#?}");

    // Transitions made by a system call carry the caller; the others happen in softirq context,
    // which on loopback is usually the sender but may be ksoftirqd on a slow machine.
    const BY_SYSCALL: &[&str] =
        &["CLOSE>LISTEN", "LISTEN>CLOSE", "CLOSE>SYN_SENT", "ESTABLISHED>FIN_WAIT1", "CLOSE_WAIT>LAST_ACK"];
    for evs in socks.values() {
        for e in evs {
            if BY_SYSCALL.contains(&transitions(&[e])[0].as_str()) {
                assert_eq!(e["pid"], me, "pid of {e}");
            }
            assert_eq!(e["family"], family);
            assert!(e["ms"].as_f64().unwrap() >= 0.0);
        }
    }
    let find = |t: &str| -> &Value {
        socks.values().flatten().find(|e| transitions(&[e])[0] == t).copied().unwrap_or_else(|| panic!("no {t}"))
    };
    let syn = find("CLOSE>SYN_SENT");
    assert_eq!(syn["comm"], "tk-client");
    assert_eq!(syn["raddr"], lo);
    assert_eq!(syn["rport"], port);
    let est = find("SYN_SENT>ESTABLISHED");
    assert_eq!((est["laddr"].as_str().unwrap(), est["lport"].as_u64().unwrap()), (lo, client_port as u64));
    assert!(est["ms"].as_f64().unwrap() > 0.0, "time in SYN_SENT: {est}");
    let fin = find("ESTABLISHED>FIN_WAIT1");
    assert_eq!(fin["comm"], "tk-client");
    let last_ack = find("CLOSE_WAIT>LAST_ACK");
    assert_eq!(last_ack["comm"], "tk-server");
    assert_eq!(
        (last_ack["lport"].as_u64().unwrap(), last_ack["rport"].as_u64().unwrap()),
        (port as u64, client_port as u64)
    );
    let listen = find("CLOSE>LISTEN");
    assert_eq!(listen["laddr"], lo);
    // The kernel releases the bound port before the move to CLOSE is traced: the port the
    // socket had is still reported (issue #12 item 4), as libbpf-tools tcpstates does.
    let ports = |e: &Value| (e["lport"].as_u64().unwrap(), e["rport"].as_u64().unwrap());
    assert_eq!(ports(find("LISTEN>CLOSE")), (port as u64, 0), "listener closed while listening");
    assert_eq!(ports(find("FIN_WAIT2>CLOSE")), (client_port as u64, port as u64), "client's close");
    assert_eq!(ports(find("LAST_ACK>CLOSE")), (port as u64, client_port as u64), "server's close");
}

fn traced_connection(extra: &[&str], v6: bool) {
    let mut args = vec!["tcpstate", "--json"];
    args.extend_from_slice(extra);
    let t = Tracer::start(&args);
    let (port, client_port) = connection(v6);
    let out = t.stop();
    assert!(out.status.success(), "exit {:?}: {}", out.status, out.stderr);
    check_connection(&out.events(), v6, port, client_port);
    let summary = out.summary();
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["schema"], 1);
}

#[test]
fn ipv4_connection_both_ends() {
    if require_root("ipv4_connection_both_ends") {
        traced_connection(&[], false);
    }
}

#[test]
fn ipv6_connection_both_ends() {
    if require_root("ipv6_connection_both_ends") {
        traced_connection(&["-6"], true);
    }
}

#[test]
fn perf_buffer_gives_the_same() {
    if require_root("perf_buffer_gives_the_same") {
        traced_connection(&["--transport", "perfbuf"], false);
    }
}

#[test]
fn classic_tracepoint_backend_gives_the_same() {
    if require_root("classic_tracepoint_backend_gives_the_same") {
        traced_connection(&["--backend", "tracepoint"], false);
        traced_connection(&["--backend", "tracepoint"], true);
    }
}

#[test]
fn table_output() {
    if !require_root("table_output") {
        return;
    }
    let t = Tracer::start(&["tcpstate", "-T"]);
    let (port, _) = connection(false);
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout[0].starts_with("TIME     PID     COMM"), "header: {:?}", out.stdout[0]);
    let me = std::process::id().to_string();
    let row = out
        .stdout
        .iter()
        .find(|l| l.contains("tk-client") && l.contains("CLOSE       -> SYN_SENT"))
        .unwrap_or_else(|| panic!("no SYN_SENT row in {:#?}", out.stdout));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0].len(), 8, "HH:MM:SS first: {row}");
    assert_eq!(cols[1], me);
    assert_eq!(cols[2], "tk-client");
    assert_eq!(cols[4], format!("127.0.0.1:{port}"));
}

#[test]
fn port_filters_exclude_other_connections() {
    if !require_root("port_filters_exclude_other_connections") {
        return;
    }
    // Ports are only known after binding: hold one listener, filter on it, connect twice.
    let keep = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = keep.local_addr().unwrap().port();
    let t = Tracer::start(&["tcpstate", "--json", "-D", &port.to_string()]);
    let c = TcpStream::connect(("127.0.0.1", port)).expect("connect to filtered port");
    let (other, _) = connection(false);
    drop(c);
    thread::sleep(Duration::from_millis(200));
    let out = t.stop();
    let events = out.events();
    assert!(events.iter().any(|e| e["rport"] == port && e["newstate"] == "SYN_SENT"), "{events:#?}");
    assert!(events.iter().all(|e| e["rport"] == port), "only remote port {port}: {events:#?}");
    assert!(!events.iter().any(|e| e["lport"] == other || e["rport"] == other));
}
