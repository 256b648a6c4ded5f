//! `tracekit sklookup` end to end, as root, each test in a network namespace of its own: TCP
//! connections and UDP datagrams to ports 7, 77 and 777 reach one socket (tracekit's echo
//! service, a listener of this test taken with `--to`, and one held by a child process given
//! with `--pid`); UDP replies come from the address and port the datagram was sent to; other
//! ports are refused as before; commands on stdin change the port and prefix sets while it
//! runs; events and counters match the traffic; every way tracekit ends leaves no link,
//! program or map. Traffic only ever goes to 127.0.0.1 and ::1 of namespaces this file makes.
//! The bad-input cases are in tests/cases/sklookup.tk.

mod common;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::net::{self, Netns};
use common::{BpfIds, Exit, Tracer, assert_released, require_root};
use serde_json::Value;

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const PORTS: [u16; 3] = [7, 77, 777];
const TIMEOUT: Duration = Duration::from_secs(3);

/// `tracekit sklookup ARGS --netns NS -v`, returned once attached.
fn start(ns: &Netns, args: &[&str]) -> Tracer {
    Tracer::start(&[&["sklookup", "--netns", ns.name()], args].concat())
}

fn refused(r: io::Result<()>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
}

/// From inside `ns`: one datagram to `to` from a fresh socket on the same loopback; returns
/// the sender's address and the reply (its source and payload), or None after `TIMEOUT`.
fn udp_ask(ns: &Netns, to: SocketAddr, payload: &[u8]) -> (SocketAddr, Option<(SocketAddr, Vec<u8>)>) {
    let from = if to.is_ipv4() { LO4 } else { LO6 };
    let s = net::udp_bind(ns, from, 0).expect("bind a UDP client");
    s.send_to(payload, to).expect("send a datagram");
    let local = s.local_addr().expect("local addr");
    (local, net::udp_recv(&s, 1, TIMEOUT).into_iter().next())
}

fn counts(out: &common::Finished) -> Value {
    out.json()
        .into_iter()
        .find(|v| v["type"] == "sklookup_counts")
        .unwrap_or_else(|| panic!("no counts: {:?}", out.stdout))
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("`{k}` of {v}"))
}

#[test]
fn echo_serves_every_port_tcp_and_udp() {
    if !require_root("sklookup::echo_serves_every_port_tcp_and_udp") {
        return;
    }
    let ns = Netns::new("skl-echo");
    let t = start(&ns, &["--ports", "7,77,777", "--echo", "--json"]);
    let mut clients = Vec::new();
    for port in PORTS {
        net::tcp_connect(&ns, LO4, port, TIMEOUT).unwrap_or_else(|e| panic!("TCP to 127.0.0.1:{port}: {e}"));
        let to = SocketAddr::new(LO4, port);
        let payload = format!("tracekit sklookup {port}");
        let (client, reply) = udp_ask(&ns, to, payload.as_bytes());
        let (from, data) = reply.unwrap_or_else(|| panic!("no UDP reply from {to}"));
        assert_eq!(from, to, "the reply comes from the address and port the datagram went to");
        assert_eq!(data, payload.as_bytes());
        clients.push((client, port));
    }
    // IPv6: the ::1 sockets.
    net::tcp_connect(&ns, LO6, 77, TIMEOUT).expect("TCP to [::1]:77");
    let to6 = SocketAddr::new(LO6, 777);
    let (_, reply) = udp_ask(&ns, to6, b"v6");
    assert_eq!(reply, Some((to6, b"v6".to_vec())), "UDP [::1]:777");
    // Other ports: as before.
    assert!(refused(net::tcp_connect(&ns, LO4, 778, TIMEOUT)), "port 778 is not steered");
    assert!(udp_ask(&ns, SocketAddr::new(LO4, 778), b"x").1.is_none(), "no reply on 778");

    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let ev = out.events();
    let steered = |proto: &str, family: &str| {
        ev.iter().filter(|e| e["proto"] == proto && e["family"] == family && e["verdict"] == "steered").count()
    };
    assert_eq!(
        (steered("tcp", "ipv4"), steered("udp", "ipv4"), steered("tcp", "ipv6"), steered("udp", "ipv6")),
        (3, 3, 1, 1),
        "{ev:#?}"
    );
    assert_eq!(ev.len(), 8, "one event per steered lookup, none for port 778: {ev:#?}");
    for (client, port) in clients {
        let e = ev
            .iter()
            .find(|e| e["proto"] == "udp" && e["rport"] == client.port())
            .unwrap_or_else(|| panic!("no event for the datagram from {client}: {ev:#?}"));
        assert_eq!((e["laddr"].as_str(), num(e, "lport")), (Some("127.0.0.1"), u64::from(port)), "{e}");
        assert_eq!(e["raddr"], "127.0.0.1", "{e}");
        assert!(num(e, "cookie") > 0, "{e}");
        assert!(e["time_ns"].as_u64().is_some() && e["cpu"].as_u64().is_some(), "{e}");
    }
    // One socket per protocol and family: one cookie each.
    for proto in ["tcp", "udp"] {
        let cookies: std::collections::BTreeSet<u64> =
            ev.iter().filter(|e| e["proto"] == proto && e["family"] == "ipv4").map(|e| num(e, "cookie")).collect();
        assert_eq!(cookies.len(), 1, "{proto}: {cookies:?}");
    }
    let c = counts(&out);
    assert_eq!((num(&c, "hits"), num(&c, "misses")), (8, 0), "{c}");
    assert!(num(&c, "lookups") >= 8 + 2, "the lookups of port 778 count too: {c}");
    assert!(out.stderr.contains("echoed 4 connections and 4 datagrams"), "{}", out.stderr);
    net::assert_clean(&ns);
}

#[test]
fn to_steers_to_the_listener_of_this_process() {
    if !require_root("sklookup::to_steers_to_the_listener_of_this_process") {
        return;
    }
    let ns = Netns::new("skl-to");
    let server = net::tcp_listen(&ns, LO4, 0);
    let udp = net::udp_bind(&ns, LO4, server.port()).expect("UDP on the listener's port");
    let to = server.addr().to_string();
    let t = start(&ns, &["--ports", "7,77,777", "--to", &to, "--json"]);
    for port in PORTS {
        net::tcp_connect(&ns, LO4, port, TIMEOUT).unwrap_or_else(|e| panic!("TCP to :{port}: {e}"));
    }
    assert_eq!(server.accepted(), 3, "the three connections reached the one listener");
    assert!(refused(net::tcp_connect(&ns, LO4, 778, TIMEOUT)));
    let sent = net::udp_send(&ns, LO4, LO4, 77, 2).expect("datagrams to :77");
    let got = net::udp_recv(&udp, 2, TIMEOUT);
    assert_eq!(got.len(), 2, "both datagrams reached the UDP socket at {to}");
    assert!(got.iter().all(|(from, _)| *from == sent));
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let me = std::process::id();
    assert!(out.stderr.contains(&format!("tcp lookups for 7,77,777 go to {to} (pid {me}")), "{}", out.stderr);
    let ev = out.events();
    assert_eq!(ev.iter().filter(|e| e["proto"] == "tcp" && e["verdict"] == "steered").count(), 3, "{ev:#?}");
    assert_eq!(ev.iter().filter(|e| e["proto"] == "udp" && e["verdict"] == "steered").count(), 2, "{ev:#?}");
    // IPv6 lookups find no socket: an IPv4 listener cannot take them (left to the usual lookup).
    let c = counts(&out);
    assert_eq!((num(&c, "hits"), num(&c, "misses")), (5, 0), "{c}");
    drop(server);
    net::assert_clean(&ns);
}

/// A TCP listener on 127.0.0.1 of `ns` (any port) held by this process, and its address.
fn listener_in(ns: &Netns) -> (TcpListener, String) {
    let l = ns.run_in(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).expect("listen");
    let to = l.local_addr().expect("addr").to_string();
    (l, to)
}

/// A child process that holds `listener` as its fd 3 (and nothing else of ours) until killed.
fn child_holding(listener: &TcpListener) -> Child {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sleep");
    cmd.arg("60").stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; they only change the child's descriptor
    // table. dup2 onto itself would keep close-on-exec, so fd 3 itself has the flag cleared.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) == 0 } else { libc::dup2(fd, 3) == 3 };
            if ok { Ok(()) } else { Err(io::Error::last_os_error()) }
        });
    }
    cmd.spawn().expect("spawn sleep")
}

#[test]
fn pid_takes_the_socket_of_a_child_process() {
    if !require_root("sklookup::pid_takes_the_socket_of_a_child_process") {
        return;
    }
    let ns = Netns::new("skl-pid");
    let (listener, to) = listener_in(&ns);
    let mut holder = child_holding(&listener);
    let mut other = Command::new("sleep").arg("60").spawn().expect("spawn sleep");

    // A process without the socket: refused before anything is loaded.
    let out =
        common::run(&["sklookup", "--netns", ns.name(), "--ports", "7", "--to", &to, "--pid", &other.id().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("error: pid {} holds no TCP listener or UDP socket at {to}", other.id())),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: it is held by pid"), "{}", out.stderr);

    let t = start(&ns, &["--ports", "7,77,777", "--to", &to, "--pid", &holder.id().to_string(), "--proto", "tcp"]);
    listener.set_nonblocking(false).expect("blocking");
    for port in PORTS {
        let c = ns.run_in(|| TcpStream::connect_timeout(&SocketAddr::new(LO4, port), TIMEOUT));
        let mut c = c.unwrap_or_else(|e| panic!("connect :{port}: {e}"));
        let (mut s, peer) = listener.accept().expect("the connection arrives at the child's listener");
        assert_eq!(peer, c.local_addr().expect("addr"));
        c.write_all(b"x").expect("send");
        let mut b = [0u8; 1];
        io::Read::read_exact(&mut s, &mut b).expect("receive");
    }
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("(pid {} (sleep) fd 3", holder.id())), "{}", out.stderr);
    // UDP was not asked for.
    assert!(!out.stderr.contains("udp lookups"), "{}", out.stderr);
    let _ = holder.kill();
    let _ = other.kill();
    let _ = (holder.wait(), other.wait());
    net::assert_clean(&ns);
}

/// tracekit with its stdin a pipe this test writes commands into.
struct Driven {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Driven {
    fn start(ns: &Netns, args: &[&str]) -> Driven {
        let mut child = Command::new(common::BIN)
            .args(["sklookup", "--netns", ns.name(), "-v"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tracekit starts");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut d = Driven { child, stdin, stderr: rx, seen: Vec::new() };
        d.wait_for("attached after");
        d
    }

    /// Waits for a stderr line containing `needle` that was not matched before.
    #[track_caller]
    fn wait_for(&mut self, needle: &str) {
        if let Some(i) = self.seen.iter().position(|l| l.contains(needle)) {
            self.seen[i].clear();
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(50)) {
                if l.contains(needle) {
                    return;
                }
                self.seen.push(l);
            }
        }
        panic!("no {needle:?} on stderr:\n{}", self.seen.join("\n"));
    }

    /// Sends one command line and waits for its answer.
    #[track_caller]
    fn say(&mut self, line: &str, answer: &str) {
        let w = self.stdin.as_mut().expect("stdin open");
        writeln!(w, "{line}").expect("write a command");
        w.flush().expect("flush");
        self.wait_for(answer);
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn stdin_commands_change_the_sets_while_running() {
    if !require_root("sklookup::stdin_commands_change_the_sets_while_running") {
        return;
    }
    let ns = Netns::new("skl-cmd");
    let mut d = Driven::start(&ns, &["--ports", "7,77", "--echo", "--json"]);
    d.wait_for("reading commands on stdin");
    net::tcp_connect(&ns, LO4, 7, TIMEOUT).expect("7 before");
    assert!(refused(net::tcp_connect(&ns, LO4, 8080, TIMEOUT)), "8080 before");

    d.say("add 8080,9000-9001", "added ports 8080,9000-9001; steering 7,77,8080,9000-9001");
    net::tcp_connect(&ns, LO4, 8080, TIMEOUT).expect("8080 once added");
    net::tcp_connect(&ns, LO4, 9001, TIMEOUT).expect("9001 once added");
    d.say("del 7", "removed port 7; steering 77,8080,9000-9001");
    assert!(refused(net::tcp_connect(&ns, LO4, 7, TIMEOUT)), "7 once removed");

    // The prefix set: without 0.0.0.0/0 IPv4 is no longer steered (verdict passed), ::1 still is.
    d.say("del-addr 0.0.0.0/0", "removed 0.0.0.0/0; steering destinations in ::/0");
    assert!(refused(net::tcp_connect(&ns, LO4, 77, TIMEOUT)), "77 over IPv4 outside the prefixes");
    net::tcp_connect(&ns, LO6, 77, TIMEOUT).expect("77 over IPv6");
    d.say("add-addr 127.0.0.0/8", "added 127.0.0.0/8; steering destinations in ::/0 127.0.0.0/8");
    net::tcp_connect(&ns, LO4, 77, TIMEOUT).expect("77 over IPv4 in 127.0.0.0/8");

    d.say("add 0", "error: `add 0`: port 0 is out of range (1-65535)");
    d.say("frobnicate", "error: `frobnicate`: unknown command `frobnicate`");
    d.say("show", "ports 77,8080,9000-9001; addresses ::/0 127.0.0.0/8");
    // End of input: the run goes on.
    drop(d.stdin.take());
    thread::sleep(Duration::from_millis(300));
    net::tcp_connect(&ns, LO4, 8080, TIMEOUT).expect("8080 after stdin closed");

    // SAFETY: kill() on the pid of a child not yet reaped.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGINT) };
    let mut stdout = String::new();
    io::Read::read_to_string(&mut d.child.stdout.take().expect("stdout"), &mut stdout).expect("read stdout");
    let status = d.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    let ev: Vec<&Value> = lines.iter().filter(|v| v["type"] == "event").collect();
    let verdicts: Vec<(u64, &str, &str)> = ev
        .iter()
        .map(|e| (num(e, "lport"), e["family"].as_str().unwrap_or("?"), e["verdict"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        verdicts,
        [
            (7, "ipv4", "steered"),
            (8080, "ipv4", "steered"),
            (9001, "ipv4", "steered"),
            (77, "ipv4", "passed"),
            (77, "ipv6", "steered"),
            (77, "ipv4", "steered"),
            (8080, "ipv4", "steered"),
        ],
        "{stdout}"
    );
    let c = lines.iter().find(|v| v["type"] == "sklookup_counts").expect("counts");
    assert_eq!((num(c, "hits"), num(c, "misses")), (6, 1), "{c}");
}

#[test]
fn a_port_in_use_is_refused_unless_forced() {
    if !require_root("sklookup::a_port_in_use_is_refused_unless_forced") {
        return;
    }
    let ns = Netns::new("skl-busy");
    let busy = net::tcp_listen(&ns, LO4, 0);
    let port = busy.port().to_string();
    let out = common::run(&["sklookup", "--netns", ns.name(), "--ports", &format!("7,{port}"), "--echo"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("error: port {port} is in use by pid {}", std::process::id())),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    // Forced: the port's connections go to the echo service, not to the listener.
    let t = start(&ns, &["--ports", &port, "--echo", "--force", "--proto", "tcp"]);
    net::tcp_connect(&ns, LO4, busy.port(), TIMEOUT).expect("echoed");
    assert_eq!(busy.accepted(), 0, "the listener lost the connection to the echo service");
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("echoed 1 connections"), "{}", out.stderr);
}

#[test]
fn a_closed_target_stops_steering() {
    if !require_root("sklookup::a_closed_target_stops_steering") {
        return;
    }
    let ns = Netns::new("skl-gone");
    let (listener, to) = listener_in(&ns);
    let t = start(&ns, &["--ports", "7", "--to", &to, "--json"]);
    drop(listener);
    // The socket left the map with its last descriptor: tracekit kept no copy.
    assert!(refused(net::tcp_connect(&ns, LO4, 7, TIMEOUT)), "no listener any more");
    let out = t.stop();
    let ev = out.events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["verdict"], "no_socket", "{}", ev[0]);
    assert_eq!(num(&ev[0], "cookie"), 0, "{}", ev[0]);
}

#[test]
fn every_exit_leaves_nothing_behind() {
    if !require_root("sklookup::every_exit_leaves_nothing_behind") {
        return;
    }
    let ns = Netns::new("skl-exit");
    for exit in [Exit::Interrupt, Exit::Terminate, Exit::Duration, Exit::Count, Exit::ClosedPipe, Exit::Kill] {
        let how = format!("{exit:?}");
        let mut args = vec!["--ports", "7,77", "--echo", "--json"];
        match exit {
            Exit::Duration => args.extend(["-d", "1"]),
            Exit::Count => args.extend(["-n", "2"]),
            _ => {}
        }
        let mut t = Tracer::start_opts(
            &[&["sklookup", "--netns", ns.name()], args.as_slice()].concat(),
            !matches!(exit, Exit::ClosedPipe),
        );
        let ids: BpfIds = t.ids.clone();
        assert!(!ids.links.is_empty(), "{how}: the netns link: {ids:?}");
        // (Not with -d: in a slow guest the query can take longer than the run.)
        if !matches!(exit, Exit::Duration) {
            assert!(!net::leftovers(&ns).is_empty(), "{how}: the sk_lookup program is attached");
        }
        if matches!(exit, Exit::ClosedPipe) {
            drop(t.stdout_raw.take());
        }
        match exit {
            // The run may end before the second echo: only the events count.
            Exit::Count => {
                let _ = net::tcp_connect(&ns, LO4, 7, TIMEOUT);
                let _ = net::tcp_connect(&ns, LO4, 77, TIMEOUT);
            }
            // It ends as soon as it sees the reader gone, with or without traffic.
            Exit::Duration | Exit::ClosedPipe => {}
            _ => {
                net::tcp_connect(&ns, LO4, 7, TIMEOUT).unwrap_or_else(|e| panic!("{how}: :7 {e}"));
                net::tcp_connect(&ns, LO4, 77, TIMEOUT).unwrap_or_else(|e| panic!("{how}: :77 {e}"));
            }
        }
        let out = exit.end(t, Duration::from_secs(10), &how);
        if matches!(exit, Exit::Count) {
            assert_eq!(out.events().len(), 2, "{how}: {:?}", out.stdout);
        }
        if matches!(exit, Exit::Interrupt | Exit::Terminate) {
            let c = counts(&out);
            assert_eq!(num(&c, "hits"), 2, "{how}: {c}");
        }
        assert_released(&ids, &how);
        net::assert_clean(&ns);
        assert!(refused(net::tcp_connect(&ns, LO4, 7, TIMEOUT)), "{how}: port 7 is no longer steered");
    }
}
