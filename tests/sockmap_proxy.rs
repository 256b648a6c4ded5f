//! `tracekit sockmap proxy` end to end, as root, in a network namespace this file creates, with
//! upstreams this file runs (threads): an echo, a sink that answers with the length and hash of
//! what it got, a server-first one that sends a banner on accept. Random payloads of 1 B to
//! 16 MiB go through byte-identical; the banner comes first and whole; bytes the client sends
//! right after connecting arrive; 16 connections at once; tracekit's own reads stay far below
//! what it proxied; each pair's close reports the bytes of each direction; a refused upstream
//! gives `upstream_failed` and a reset, and the proxy keeps serving; every way of ending leaves
//! nothing loaded. The bad-input cases are in tests/cases/sockmap.tk.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::net::{Netns, payload, rchar, send_and_read_back};
use common::{Exit, Tracer, assert_released, require_root};

const PORT: u16 = 8080;
const UP: u16 = 9000;

fn proxy_in(ns: &Netns, upstream: u16, extra: &[&str]) -> Tracer {
    let up = format!("127.0.0.1:{upstream}");
    let args: Vec<String> = ["sockmap", "proxy", "127.0.0.1:8080", up.as_str(), "--json"]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect();
    ns.run_in(move || Tracer::start(&args.iter().map(String::as_str).collect::<Vec<_>>()))
}

#[derive(Clone, Copy)]
enum Upstream {
    /// Sends back what it reads; half-closes after the client's FIN.
    Echo,
    /// Reads to the end, then answers with the length and the FNV-1a hash (16 bytes) and closes.
    Sink,
    /// Sends `BANNER` at once, then echoes.
    Banner,
}

const BANNER: &[u8] = b"220 upstream ready, server speaks first\r\n";

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Runs an upstream on 127.0.0.1:`port` of `ns` (one thread per connection) for the test's life.
fn upstream(ns: &Netns, port: u16, kind: Upstream) {
    let l = ns.run_in(move || TcpListener::bind(("127.0.0.1", port))).expect("upstream listens");
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            thread::spawn(move || {
                if matches!(kind, Upstream::Banner) && c.write_all(BANNER).is_err() {
                    return;
                }
                let mut buf = vec![0u8; 1 << 16];
                let (mut len, mut h) = (0u64, 0xcbf2_9ce4_8422_2325u64);
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => match kind {
                            Upstream::Sink => {
                                len += n as u64;
                                h = buf[..n].iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
                            }
                            _ => {
                                if c.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        },
                        Err(_) => return,
                    }
                }
                if matches!(kind, Upstream::Sink) {
                    let mut answer = len.to_le_bytes().to_vec();
                    answer.extend(h.to_le_bytes());
                    let _ = c.write_all(&answer);
                }
                let _ = c.shutdown(Shutdown::Write);
            });
        }
    });
}

fn connect(ns: &Netns) -> TcpStream {
    let to = SocketAddr::from(([127, 0, 0, 1], PORT));
    let c = ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(10))).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c
}

/// Sends `data` right after connecting while reading the answer, half-closes, reads to the end.
fn round_trip(ns: &Netns, data: Vec<u8>) -> Vec<u8> {
    send_and_read_back(connect(ns), &data, "reading through the proxy")
}

const SIZES: [usize; 5] = [1, 1000, 64 << 10, 1 << 20, 16 << 20];

fn closed_bytes(out: &common::Finished) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = out
        .events()
        .into_iter()
        .filter(|e| e["event"] == "closed")
        .map(|e| {
            assert_eq!(e["reset"], false, "{e}");
            (e["bytes_up"].as_u64().unwrap(), e["bytes_down"].as_u64().unwrap())
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn payloads_go_through_byte_identical_without_entering_user_space() {
    if !require_root("sockmap_proxy::payloads_go_through_byte_identical_without_entering_user_space") {
        return;
    }
    let ns = Netns::new("smp1");
    upstream(&ns, UP, Upstream::Echo);
    let t = proxy_in(&ns, UP, &[]);
    let ids = t.ids.clone();
    let pid = t.child.id();
    let before = rchar(pid);
    let mut total = 0u64;
    for (i, &n) in SIZES.iter().enumerate() {
        let data = payload(n, i as u64 + 1);
        let back = round_trip(&ns, data.clone());
        assert_eq!(back.len(), n, "{n} B sent");
        assert!(back == data, "{n} B: what came back differs");
        total += 2 * n as u64;
    }
    let read = rchar(pid) - before;
    assert!(read < total / 64, "tracekit read {read} bytes while proxying {total}: the data went through user space");
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let want: Vec<(u64, u64)> = SIZES.iter().map(|&n| (n as u64, n as u64)).collect();
    assert_eq!(closed_bytes(&out), want, "bytes each way per pair: {:?}", out.stdout);
    let opens: Vec<_> = out.events().into_iter().filter(|e| e["event"] == "open").collect();
    assert_eq!(opens.len(), SIZES.len());
    for e in &opens {
        assert_eq!(e["raddr"], "127.0.0.1", "{e}");
        assert_eq!(e["lport"], PORT, "{e}");
        assert_eq!(e["upstream_laddr"], "127.0.0.1", "{e}");
        assert!(e["upstream_lport"].as_u64().unwrap() > 0, "{e}");
    }
    let counts = out.json().into_iter().find(|v| v["type"] == "sockmap_counts").expect("counts");
    assert_eq!(counts["bytes"].as_u64(), Some(total), "{counts}");
    assert_eq!(counts["connections"].as_u64(), Some(SIZES.len() as u64), "{counts}");
    assert_released(&ids, "SIGINT");
}

#[test]
fn a_sink_upstream_gets_everything_then_answers_after_the_half_close() {
    if !require_root("sockmap_proxy::a_sink_upstream_gets_everything_then_answers_after_the_half_close") {
        return;
    }
    let ns = Netns::new("smp2");
    upstream(&ns, UP, Upstream::Sink);
    let t = proxy_in(&ns, UP, &[]);
    for (i, &n) in SIZES.iter().enumerate() {
        let data = payload(n, 100 + i as u64);
        let answer = round_trip(&ns, data.clone());
        assert_eq!(answer.len(), 16, "{n} B: answer {answer:?}");
        assert_eq!(u64::from_le_bytes(answer[..8].try_into().unwrap()), n as u64, "{n} B: length the sink got");
        assert_eq!(u64::from_le_bytes(answer[8..].try_into().unwrap()), fnv(&data), "{n} B: hash differs");
    }
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let want: Vec<(u64, u64)> = SIZES.iter().map(|&n| (n as u64, 16)).collect();
    assert_eq!(closed_bytes(&out), want, "{:?}", out.stdout);
}

#[test]
fn a_banner_comes_first_and_early_client_bytes_arrive() {
    if !require_root("sockmap_proxy::a_banner_comes_first_and_early_client_bytes_arrive") {
        return;
    }
    let ns = Netns::new("smp3");
    upstream(&ns, UP, Upstream::Banner);
    let t = proxy_in(&ns, UP, &[]);
    for i in 0..20u64 {
        // Written at once after connect: before tracekit accepted, let alone connected upstream.
        // The client keeps its side open, so both connections enter the sockhash: the ordering
        // is the kernel's.
        let data = payload(1000 + i as usize * 37, 7 + i);
        let mut c = connect(&ns);
        c.write_all(&data).expect("send");
        let mut got = vec![0u8; BANNER.len() + data.len()];
        c.read_exact(&mut got).unwrap_or_else(|e| panic!("round {i}: {e}"));
        assert!(&got[..BANNER.len()] == BANNER, "round {i}: the banner is not first: {:?}", &got[..BANNER.len()]);
        assert!(got[BANNER.len()..] == data[..], "round {i}: the client's bytes differ");
    }
    // The server speaks first and the client only reads: the banner alone, then the client's
    // bytes after it.
    let mut c = connect(&ns);
    let mut banner = vec![0u8; BANNER.len()];
    c.read_exact(&mut banner).expect("banner");
    assert_eq!(banner, BANNER);
    c.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    c.read_exact(&mut back).expect("echo after the banner");
    assert_eq!(&back, b"hello");
    drop(c);
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let opens: Vec<_> = out.events().into_iter().filter(|e| e["event"] == "open").collect();
    assert_eq!(opens.len(), 21, "{:?}", out.stdout);
    for e in &opens {
        assert!(e["pipe_up"] == false && e["pipe_down"] == false, "spliced by the verdict program: {e}");
    }
}

/// A client that sends its request and its FIN before the upstream connection is up: the
/// kernel refuses a socket in CLOSE_WAIT into a sockhash from user space, so that direction goes
/// through a splice(2) pipe, and the other too (the client's connection cannot be a redirect
/// target without entering `tk_sm_peers`): still in the kernel, only slower. The upstream's
/// accept queue is held full (backlog 0 and one connection waiting), so tracekit's SYN is
/// dropped and retried a second later; the client is done long before.
#[test]
fn a_client_done_before_the_upstream_answers_goes_through_a_pipe() {
    if !require_root("sockmap_proxy::a_client_done_before_the_upstream_answers_goes_through_a_pipe") {
        return;
    }
    use std::os::fd::AsRawFd;
    let ns = Netns::new("smp7");
    let l = ns.run_in(|| TcpListener::bind(("127.0.0.1", UP))).expect("upstream listens");
    // SAFETY: listen() again on a listening socket only changes its backlog.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let to = SocketAddr::from(([127, 0, 0, 1], UP));
    let filler = ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(5))).expect("fill the queue");
    let t = proxy_in(&ns, UP, &[]);
    let data = payload(64 << 10, 77);
    let mut c = connect(&ns);
    c.write_all(&data).expect("send");
    c.shutdown(Shutdown::Write).expect("half-close");
    // The client's bytes and FIN are in: tracekit's SYN is still waiting. Now the upstream
    // serves (the filler first, then tracekit's connection).
    let (first, _) = l.accept().expect("accept the filler");
    drop((first, filler));
    let sink = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept the proxy");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to the end");
        let mut answer = (got.len() as u64).to_le_bytes().to_vec();
        answer.extend(fnv(&got).to_le_bytes());
        s.write_all(&answer).expect("answer");
    });
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).expect("the answer through the proxy");
    sink.join().unwrap();
    assert_eq!(answer.len(), 16, "{answer:?}");
    assert_eq!(u64::from_le_bytes(answer[..8].try_into().unwrap()), data.len() as u64);
    assert_eq!(u64::from_le_bytes(answer[8..].try_into().unwrap()), fnv(&data));
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let closed: Vec<_> = out.events().into_iter().filter(|e| e["event"] == "closed").collect();
    assert_eq!(closed.len(), 1, "{:?}", out.stdout);
    assert_eq!(closed[0]["pipe_up"], true, "{}", closed[0]);
    assert_eq!(closed[0]["pipe_down"], true, "{}", closed[0]);
    assert_eq!(closed[0]["bytes_up"], data.len() as u64, "{}", closed[0]);
    assert_eq!(closed[0]["bytes_down"], 16, "{}", closed[0]);
}

/// The client's first bytes certainly wait in its connection's receive queue before the pair is
/// spliced: the upstream's accept queue is held full, so tracekit's connection to it is up only
/// a second later (its SYN is retried). The client keeps its side open: both connections then
/// enter the sockhash, and the bytes that waited go first, the later ones after them.
#[test]
fn bytes_sent_long_before_the_upstream_is_up_go_first() {
    if !require_root("sockmap_proxy::bytes_sent_long_before_the_upstream_is_up_go_first") {
        return;
    }
    use std::os::fd::AsRawFd;
    let ns = Netns::new("smp8");
    let l = ns.run_in(|| TcpListener::bind(("127.0.0.1", UP))).expect("upstream listens");
    // SAFETY: listen() again on a listening socket only changes its backlog.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let to = SocketAddr::from(([127, 0, 0, 1], UP));
    let filler = ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(5))).expect("fill the queue");
    let t = proxy_in(&ns, UP, &[]);
    let early = payload(32 << 10, 5);
    let late = payload(1 << 20, 6);
    let mut c = connect(&ns);
    c.write_all(&early).expect("send the early bytes");
    let (first, _) = l.accept().expect("accept the filler");
    drop((first, filler));
    let up = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept the proxy");
        s.write_all(BANNER).expect("banner");
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => s.write_all(&buf[..n]).expect("echo"),
            }
        }
    });
    let mut reader = c.try_clone().unwrap();
    let want = BANNER.len() + early.len() + late.len();
    let got = thread::spawn(move || {
        let mut got = vec![0u8; want];
        reader.read_exact(&mut got).map(|()| got)
    });
    c.write_all(&late).expect("send the rest");
    let got = got.join().unwrap().expect("everything back through the proxy");
    // The end, passed on both ways: the client's FIN to the upstream, the upstream's back.
    c.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("the end through the proxy");
    assert!(rest.is_empty(), "{} bytes too many", rest.len());
    up.join().unwrap();
    assert!(&got[..BANNER.len()] == BANNER, "the banner is not first");
    assert!(got[BANNER.len()..BANNER.len() + early.len()] == early[..], "the early bytes differ");
    assert!(got[BANNER.len() + early.len()..] == late[..], "the later bytes differ");
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let closed: Vec<_> = out.events().into_iter().filter(|e| e["event"] == "closed").collect();
    assert_eq!(closed.len(), 1, "{:?}", out.stdout);
    let e = &closed[0];
    assert!(e["pipe_up"] == false && e["pipe_down"] == false, "spliced by the verdict program: {e}");
    assert_eq!(e["bytes_up"], (early.len() + late.len()) as u64, "{e}");
    assert_eq!(e["bytes_down"], want as u64, "{e}");
    assert!(e["ms"].as_f64().unwrap() > 0.0, "{e}");
}

/// IPv6 clients, an IPv4 upstream: the families of the two connections of a pair differ.
#[test]
fn an_ipv6_listener_proxies_to_an_ipv4_upstream() {
    if !require_root("sockmap_proxy::an_ipv6_listener_proxies_to_an_ipv4_upstream") {
        return;
    }
    let ns = Netns::new("smp9");
    upstream(&ns, UP, Upstream::Echo);
    let args = ["sockmap", "proxy", "[::1]:8080", "127.0.0.1:9000", "--json"];
    let t = ns.run_in(|| Tracer::start(&args));
    let to: SocketAddr = "[::1]:8080".parse().unwrap();
    for (i, n) in [10usize, 300_000].into_iter().enumerate() {
        let data = payload(n, 40 + i as u64);
        let c = ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(10))).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut reader = c.try_clone().unwrap();
        let got = thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).map(|_| got)
        });
        let mut w = c;
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
        assert!(got.join().unwrap().expect("read back") == data, "{n} B over IPv6");
    }
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let closed: Vec<_> = out.events().into_iter().filter(|e| e["event"] == "closed").collect();
    assert_eq!(closed.len(), 2, "{:?}", out.stdout);
    for e in &closed {
        assert_eq!(e["family"], "ipv6", "{e}");
        assert_eq!(e["raddr"], "::1", "{e}");
        assert_eq!(e["upstream_laddr"], "127.0.0.1", "{e}");
        assert_eq!(e["bytes_up"], e["bytes_down"], "{e}");
    }
}

#[test]
fn concurrent_connections_go_through_independently() {
    if !require_root("sockmap_proxy::concurrent_connections_go_through_independently") {
        return;
    }
    let ns = Netns::new("smp4");
    upstream(&ns, UP, Upstream::Echo);
    let t = proxy_in(&ns, UP, &[]);
    thread::scope(|s| {
        let handles: Vec<_> = (0..16u64)
            .map(|i| {
                let ns = &ns;
                s.spawn(move || {
                    let data = payload((i as usize + 1) * 100_000, 1000 + i);
                    let back = round_trip(ns, data.clone());
                    assert!(back == data, "connection {i}: differs ({} of {} B)", back.len(), data.len());
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let want: Vec<(u64, u64)> = (1..=16u64).map(|i| (i * 100_000, i * 100_000)).collect();
    assert_eq!(closed_bytes(&out), want, "{:?}", out.stdout);
}

#[test]
fn a_refused_upstream_resets_the_client_and_the_proxy_keeps_serving() {
    if !require_root("sockmap_proxy::a_refused_upstream_resets_the_client_and_the_proxy_keeps_serving") {
        return;
    }
    let ns = Netns::new("smp5");
    let t = proxy_in(&ns, UP, &[]);
    for _ in 0..2 {
        // The reset can come before connect_timeout has read the connection's state.
        let to = SocketAddr::from(([127, 0, 0, 1], PORT));
        let r = ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(10))).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            c.read(&mut [0u8; 16])
        });
        assert!(
            matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "the client must see a reset, got {r:?}"
        );
    }
    // Now something listens there: the same proxy serves.
    upstream(&ns, UP, Upstream::Echo);
    let back = round_trip(&ns, b"still here".to_vec());
    assert_eq!(back, b"still here");
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let failed: Vec<_> = out.events().into_iter().filter(|e| e["event"] == "upstream_failed").collect();
    assert_eq!(failed.len(), 2, "{:?}", out.stdout);
    for e in &failed {
        assert_eq!(e["error"], "ECONNREFUSED", "{e}");
        assert_eq!(e["errno"], libc::ECONNREFUSED, "{e}");
    }
    let counts = out.json().into_iter().find(|v| v["type"] == "sockmap_counts").expect("counts");
    assert_eq!(counts["upstream_failed"], 2, "{counts}");
    assert_eq!(counts["connections"], 1, "{counts}");
}

#[test]
fn every_exit_leaves_nothing_attached() {
    if !require_root("sockmap_proxy::every_exit_leaves_nothing_attached") {
        return;
    }
    let ns = Netns::new("smp6");
    upstream(&ns, UP, Upstream::Echo);
    for exit in [Exit::Interrupt, Exit::Terminate, Exit::Duration, Exit::Count, Exit::ClosedPipe, Exit::Kill] {
        let how = format!("{exit:?}");
        let mut extra = vec![];
        match exit {
            Exit::Duration => extra.extend(["-d", "0.5"]),
            Exit::Count => extra.extend(["-n", "1"]),
            _ => {}
        }
        let args: Vec<String> = ["sockmap", "proxy", "127.0.0.1:8080", "127.0.0.1:9000", "--json"]
            .iter()
            .chain(&extra)
            .map(|s| (*s).to_owned())
            .collect();
        let read_stdout = !matches!(exit, Exit::ClosedPipe);
        let mut t =
            ns.run_in(move || Tracer::start_opts(&args.iter().map(String::as_str).collect::<Vec<_>>(), read_stdout));
        let ids = t.ids.clone();
        assert!(ids.links.len() >= 2 || !ids.progs.is_empty(), "{how}: {ids:?}");
        if matches!(exit, Exit::ClosedPipe) {
            drop(t.stdout_raw.take());
        }
        let mut held = None;
        match exit {
            Exit::Duration => {}
            // The first event (`open`) ends these runs: a connection is enough.
            Exit::Count | Exit::ClosedPipe => {
                let to = SocketAddr::from(([127, 0, 0, 1], PORT));
                match ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(10))) {
                    Ok(c) => {
                        let _ = (&c).write_all(b"ping");
                        held = Some(c);
                    }
                    // tracekit may have seen its stdout closed (it polls for that) and ended
                    // before the connection came: an exit of this path all the same.
                    Err(e) if matches!(exit, Exit::ClosedPipe) && e.kind() == ErrorKind::ConnectionRefused => {}
                    Err(e) => panic!("{how}: connect: {e}"),
                }
            }
            _ => {
                let back = round_trip(&ns, b"ping".to_vec());
                if back != b"ping" {
                    let out = t.stop();
                    panic!(
                        "{how}: got {:?}; tracekit:\n{}\n{:?}",
                        String::from_utf8_lossy(&back),
                        out.stderr,
                        out.stdout
                    );
                }
            }
        }
        let out = exit.end(t, Duration::from_secs(10), &how);
        exit.the_counted_event(&out, "open", &how);
        drop(held);
        assert_released(&ids, &how);
        let to = SocketAddr::from(([127, 0, 0, 1], PORT));
        let refused = ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)));
        assert!(refused.is_err(), "{how}: something still listens on port {PORT}");
    }
}
