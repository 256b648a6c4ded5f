//! `tracekit sockops` end to end, as root: real TCP connections between two namespaces of a veth
//! pair this file creates (and loopback in a namespace), made by a `-- CMD` in its transient
//! cgroup or by the test itself outside it. Checked: the connect and accept events name the
//! process that called connect() or listen(); the state changes come in TCP's order; RTT
//! samples and the per-connection summary agree and are plausible; retransmissions forced by
//! `tracekit xdp --drop-every` on the receiver are reported with their sequence numbers;
//! nothing is reported for connections outside the cgroup; every way of ending leaves nothing
//! loaded. The bad-input cases are in tests/cases/sockops.tk.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::net::{Netns, VethPair};
use common::{Exit, Finished, Tracer, assert_released, require_root};
use serde_json::Value;

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

/// Connects to HOST PORT, sends N bytes, half-closes, reads the reply and reports its pid and
/// local port as JSON to REPORT. (tracekit appends `-v` after CMD's arguments: ignored.)
const CLIENT: &str = r#"
import json, os, socket, sys
host, port, n, report = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
c = socket.create_connection((host, port))
lport = c.getsockname()[1]
c.sendall(b"x" * n)
c.shutdown(socket.SHUT_WR)
reply = c.recv(64)
c.close()
with open(report, "w") as f:
    json.dump({"pid": os.getpid(), "lport": lport, "reply": reply.decode()}, f)
"#;

/// Listens on HOST (any port), writes the port to PORTFILE, serves one connection (reads it
/// to the end, replies with the byte count) and reports its pid to REPORT.
const SERVER: &str = r#"
import json, os, socket, sys
host, portfile, report = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket()
s.bind((host, 0))
s.listen()
with open(portfile + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
c, _ = s.accept()
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
c.sendall(str(n).encode())
c.close()
s.close()
with open(report, "w") as f:
    json.dump({"pid": os.getpid()}, f)
"#;

/// A listener in `ns` that serves `n` connections one after the other: reads each to the end
/// and replies with the byte count. Returns the port and the counts.
fn serve(ns: &Netns, ip: IpAddr, n: usize) -> (u16, JoinHandle<Vec<usize>>) {
    let l = ns.run_in(|| TcpListener::bind((ip, 0))).expect("listen");
    let port = l.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        (0..n)
            .map(|_| {
                let (mut s, _) = l.accept().expect("accept");
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).expect("read");
                s.write_all(got.len().to_string().as_bytes()).expect("reply");
                got.len()
            })
            .collect()
    });
    (port, h)
}

/// A client from `ns` (outside every cgroup tracekit made): sends `n` bytes, returns its local
/// port and the reply.
fn send_from(ns: &Netns, to: SocketAddr, n: usize) -> (u16, String) {
    ns.run_in(move || {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let lport = c.local_addr().unwrap().port();
        c.write_all(&vec![b'y'; n]).expect("send");
        c.shutdown(Shutdown::Write).expect("shutdown");
        let mut reply = String::new();
        c.read_to_string(&mut reply).expect("reply");
        (lport, reply)
    })
}

/// `tracekit sockops -v ARGS` (`-v` first: `Tracer::start` appends its own after CMD).
fn sockops(args: &[&str]) -> Tracer {
    Tracer::start(&[&["sockops", "-v"], args].concat())
}

/// `tracekit sockops OPTS -- ip netns exec A python3 CLIENT` sending `n` bytes to B:`port`,
/// CLIENT's report going to `report`.
fn client_run(pair: &VethPair, port: u16, n: usize, report: &Path, opts: &[&str]) -> Tracer {
    let (b, a, port, n) = (pair.ip4_b.to_string(), pair.a.name().to_owned(), port.to_string(), n.to_string());
    let cmd = ["--", "ip", "netns", "exec", &a, python(), "-c", CLIENT, &b, &port, &n, report.to_str().unwrap()];
    sockops(&[opts, &cmd[..]].concat())
}

fn num(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no number `{field}` in {v}"))
}

/// The events of one connection (by its local port on the side tracekit reports), in order.
fn flow(events: &[Value], lport: u16) -> Vec<Value> {
    events.iter().filter(|e| e["lport"] == u64::from(lport)).cloned().collect()
}

fn counts(out: &Finished) -> Value {
    let json = out.json();
    json.iter().rev().find(|v| v["type"] == "sockops_counts").cloned().unwrap_or_else(|| panic!("no counts: {json:?}"))
}

fn read_json(path: &Path, out: &Finished) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), out.stderr));
    serde_json::from_str(&text).expect("JSON report")
}

#[test]
fn cmd_connections_give_connect_states_and_rtt() {
    if !require_root("sockops::cmd_connections_give_connect_states_and_rtt") {
        return;
    }
    let pair = VethPair::new("so1");
    let (port, server) = serve(&pair.b, pair.ip4_b.into(), 2);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    const N: usize = 1 << 20;
    let t = client_run(&pair, port, N, &report, &["--json", "--samples", "--rtt"]);
    let ids = t.ids.clone();
    // The same namespace and server, outside CMD's cgroup: not reported.
    let (outside_port, outside_reply) = send_from(&pair.a, SocketAddr::new(pair.ip4_b.into(), port), 1000);
    let out = t.wait(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "CMD's status: {}", out.stderr);
    assert_eq!(outside_reply, "1000");
    let cmd = read_json(&report, &out);
    assert_eq!(cmd["reply"], N.to_string(), "{cmd}");
    let mut got = server.join().unwrap();
    got.sort_unstable();
    assert_eq!(got, [1000, N]);

    let events = out.events();
    assert!(flow(&events, outside_port).is_empty(), "a connection outside the cgroup: {events:?}");
    let lport = u16::try_from(num(&cmd, "lport")).unwrap();
    let ev = flow(&events, lport);
    assert_eq!(ev.len(), events.len(), "only CMD's connection: {events:?}");
    let first = &ev[0];
    assert_eq!(first["event"], "connect", "{first}");
    assert_eq!(first["pid"], cmd["pid"], "the pid that called connect(): {first}");
    assert_eq!(first["comm"], "python3", "{first}");
    assert_eq!(first["laddr"], pair.ip4_a.to_string());
    assert_eq!(first["raddr"], pair.ip4_b.to_string());
    assert_eq!(first["rport"], u64::from(port));
    assert_eq!(first["state"], "ESTABLISHED");
    assert!(ev.iter().all(|e| e["pid"] == cmd["pid"] && e["cookie"] == first["cookie"]), "{ev:?}");

    // The active closer's path, in order.
    let states: Vec<(String, String)> = ev
        .iter()
        .filter(|e| e["event"] == "state")
        .map(|e| (e["oldstate"].as_str().unwrap().to_owned(), e["newstate"].as_str().unwrap().to_owned()))
        .collect();
    let path: Vec<&str> = states.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(path.first(), Some(&"FIN_WAIT1"), "{states:?}");
    assert_eq!(path.last(), Some(&"CLOSE"), "{states:?}");
    assert!(states.windows(2).all(|w| w[0].1 == w[1].0), "each change starts where the last ended: {states:?}");

    // RTT: every sample plausible; the summary at close is made of exactly these samples.
    let rtts: Vec<&Value> = ev.iter().filter(|e| e["event"] == "rtt").collect();
    assert!(!rtts.is_empty(), "RTT samples of a 1 MiB transfer: {ev:?}");
    for r in &rtts {
        let srtt = num(r, "srtt_us");
        assert!(srtt > 0 && srtt < 1_000_000, "srtt between 0 and 1 s on a veth: {r}");
    }
    let closed = ev.iter().find(|e| e["event"] == "closed").unwrap_or_else(|| panic!("no summary: {ev:?}"));
    assert_eq!(num(closed, "rtt_samples"), rtts.len() as u64, "{closed}");
    let (min, avg, max) = (num(closed, "srtt_min_us"), num(closed, "srtt_avg_us"), num(closed, "srtt_max_us"));
    assert!(min <= avg && avg <= max, "{closed}");
    let srtts: Vec<u64> = rtts.iter().map(|r| num(r, "srtt_us")).collect();
    assert_eq!((min, max), (*srtts.iter().min().unwrap(), *srtts.iter().max().unwrap()), "{closed}");
    assert!(num(closed, "bytes_acked") > N as u64, "the payload and the FIN acked: {closed}");
    let c = counts(&out);
    assert_eq!((num(&c, "connect"), num(&c, "accept")), (1, 0), "{c}");
    assert_eq!(num(&c, "rtt"), rtts.len() as u64, "{c}");
    assert_eq!(num(&c, "state"), states.len() as u64, "{c}");
    assert_released(&ids, "CMD's end");
}

#[test]
fn accepted_connections_carry_the_listeners_task() {
    if !require_root("sockops::accepted_connections_carry_the_listeners_task") {
        return;
    }
    let pair = VethPair::new("so2");
    let dir = tempfile::tempdir().unwrap();
    let (portfile, report) = (dir.path().join("port"), dir.path().join("report"));
    let (b_ip, b) = (pair.ip4_b.to_string(), pair.b.name().to_owned());
    let t = sockops(&[
        "--json",
        "--",
        "ip",
        "netns",
        "exec",
        &b,
        python(),
        "-c",
        SERVER,
        &b_ip,
        portfile.to_str().unwrap(),
        report.to_str().unwrap(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&portfile) {
            break p.trim().parse::<u16>().unwrap();
        }
        assert!(Instant::now() < deadline, "the server never listened");
        thread::sleep(Duration::from_millis(10));
    };
    let (client_port, reply) = send_from(&pair.a, SocketAddr::new(pair.ip4_b.into(), port), 100_000);
    assert_eq!(reply, "100000");
    let out = t.wait(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let server = read_json(&report, &out);
    let events = out.events();
    let ev = flow(&events, port);
    let accept = ev.first().unwrap_or_else(|| panic!("no event of the server's connection: {events:?}"));
    assert_eq!(accept["event"], "accept", "{accept}");
    assert_eq!(accept["pid"], server["pid"], "the pid that called listen(), inherited by the connection: {accept}");
    assert_eq!(accept["comm"], "python3");
    assert_eq!(accept["raddr"], pair.ip4_a.to_string());
    assert_eq!(accept["rport"], u64::from(client_port));
    let path: Vec<&str> =
        ev.iter().filter(|e| e["event"] == "state").map(|e| e["newstate"].as_str().unwrap()).collect();
    // The passive closer's path (the client half-closed first).
    let close_wait = path.iter().position(|s| *s == "CLOSE_WAIT").unwrap_or_else(|| panic!("{path:?}"));
    assert_eq!(&path[close_wait..], ["CLOSE_WAIT", "LAST_ACK", "CLOSE"], "{path:?}");
    assert!(num(ev.last().unwrap(), "bytes_received") >= 100_000, "{:?}", ev.last());
}

#[test]
fn retransmits_are_reported_with_their_sequence() {
    if !require_root("sockops::retransmits_are_reported_with_their_sequence") {
        return;
    }
    let pair = VethPair::new("so3");
    let (port, server) = serve(&pair.b, pair.ip4_b.into(), 1);
    // Every 50th data segment B receives is dropped: the sender must send it again.
    let dropper = Tracer::start(&[
        "xdp",
        pair.if_b,
        "--netns",
        pair.b.name(),
        "--json",
        "--drop-every",
        "50",
        "tcp",
        "and",
        "greater",
        "100",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    const N: usize = 4 << 20;
    let t = client_run(&pair, port, N, &report, &["--json", "--retrans"]);
    let out = t.wait(Duration::from_secs(90));
    let dropped = dropper.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(server.join().unwrap(), [N]);
    let cmd = read_json(&report, &out);
    let events = out.events();
    assert!(events.iter().all(|e| e["event"] == "retrans"), "--retrans prints only retransmissions: {events:?}");
    assert!(!events.is_empty(), "no retransmission reported; the dropper: {}", dropped.stderr);
    let lport = u16::try_from(num(&cmd, "lport")).unwrap();
    assert_eq!(flow(&events, lport).len(), events.len(), "only CMD's connection: {events:?}");
    for e in &events {
        assert!(num(e, "segs") >= 1, "{e}");
        assert_eq!(e["pid"], cmd["pid"], "{e}");
    }
    // total_retrans counts this one too (the kernel adds it after the callback, or before).
    let last = events.last().unwrap();
    assert!(num(last, "total_retrans") + 1 >= events.len() as u64, "{last}");
    let c = counts(&out);
    assert_eq!(num(&c, "retrans"), events.len() as u64, "every retransmission counted and printed: {c}");
    assert_eq!(num(&c, "connect"), 1, "the other events are counted, not printed: {c}");
}

#[test]
fn every_exit_leaves_nothing_attached() {
    if !require_root("sockops::every_exit_leaves_nothing_attached") {
        return;
    }
    let ns = Netns::new("so4");
    ns.ip(&["link", "set", "lo", "up"]);
    // Five exits connect once (all but --duration), then one check after them.
    let (port, server) = serve(&ns, [127, 0, 0, 1].into(), 6);
    let to = SocketAddr::new([127, 0, 0, 1].into(), port);
    let port_s = port.to_string();
    for exit in [Exit::Interrupt, Exit::Terminate, Exit::Duration, Exit::Count, Exit::ClosedPipe, Exit::Kill] {
        let how = format!("{exit:?}");
        let mut args = vec!["sockops", "--json", "-D", &port_s];
        match exit {
            Exit::Duration => args.extend(["-d", "0.5"]),
            Exit::Count => args.extend(["-n", "1"]),
            _ => {}
        }
        let mut t = Tracer::start_opts(&args, !matches!(exit, Exit::ClosedPipe));
        let ids = t.ids.clone();
        assert!(!ids.links.is_empty(), "{how}: a cgroup link: {ids:?}");
        if matches!(exit, Exit::ClosedPipe) {
            drop(t.stdout_raw.take());
        }
        if !matches!(exit, Exit::Duration) {
            assert_eq!(send_from(&ns, to, 10).1, "10");
        }
        let out = exit.end(t, Duration::from_secs(10), &how);
        if let Some(ev) = exit.the_counted_event(&out, "connect", &how) {
            assert_eq!(ev["rport"], u64::from(port), "{how}: {ev}");
        }
        assert_released(&ids, &how);
    }
    // Nothing of tracekit is in the way of a connection afterwards.
    assert_eq!(send_from(&ns, to, 10).1, "10");
    assert_eq!(server.join().unwrap().len(), 6);
}
