//! `tracekit sockmap echo` end to end, as root, in a network namespace this file creates:
//! random payloads from 1 B to 16 MiB, one at a time and many at once, come back byte-identical;
//! tracekit's own reads stay far below what it echoed (the bytes never reach its user space);
//! each connection's close reports the bytes echoed; every way of ending leaves nothing loaded.
//! The bad-input cases are in tests/cases/sockmap.tk.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::net::{Netns, payload, rchar, send_and_read_back};
use common::{Exit, Tracer, assert_released, require_root};

const PORT: u16 = 7;

fn echo_in(ns: &Netns, extra: &[&str]) -> Tracer {
    let args: Vec<String> =
        ["sockmap", "echo", "127.0.0.1:7", "--json"].iter().chain(extra).map(|s| (*s).to_owned()).collect();
    ns.run_in(move || Tracer::start(&args.iter().map(String::as_str).collect::<Vec<_>>()))
}

/// Sends `data` on a new connection from `ns` while reading the echo, then half-closes and
/// reads to the end: the echo server must close after sending everything back.
fn round_trip(ns: &Netns, data: Vec<u8>) -> Vec<u8> {
    let to = SocketAddr::from(([127, 0, 0, 1], PORT));
    let c = ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(10))).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    send_and_read_back(c, &data, "read the echo")
}

#[test]
fn payloads_come_back_byte_identical_without_entering_user_space() {
    if !require_root("sockmap::payloads_come_back_byte_identical_without_entering_user_space") {
        return;
    }
    let ns = Netns::new("sm1");
    let t = echo_in(&ns, &[]);
    let ids = t.ids.clone();
    let pid = t.child.id();
    let before = rchar(pid);
    let sizes = [1usize, 1000, 64 << 10, 1 << 20, 16 << 20];
    let mut total = 0u64;
    for (i, &n) in sizes.iter().enumerate() {
        let data = payload(n, i as u64 + 1);
        let back = round_trip(&ns, data.clone());
        assert_eq!(back.len(), n, "{n} B sent");
        assert!(back == data, "{n} B: the echo differs");
        total += n as u64;
    }
    let read = rchar(pid) - before;
    assert!(read < total / 64, "tracekit read {read} bytes while echoing {total}: the data went through user space");
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let closed: Vec<_> = out.events().into_iter().filter(|e| e["event"] == "closed").collect();
    assert_eq!(closed.len(), sizes.len(), "{:?}", out.stdout);
    let mut echoed: Vec<u64> = closed.iter().map(|e| e["bytes"].as_u64().unwrap()).collect();
    echoed.sort_unstable();
    let want: Vec<u64> = sizes.iter().map(|&n| n as u64).collect();
    assert_eq!(echoed, want, "bytes echoed per connection");
    let counts = out.json().into_iter().find(|v| v["type"] == "sockmap_counts").expect("counts");
    assert_eq!(counts["bytes"].as_u64(), Some(total), "{counts}");
    assert_released(&ids, "SIGINT");
}

#[test]
fn concurrent_connections_are_echoed_independently() {
    if !require_root("sockmap::concurrent_connections_are_echoed_independently") {
        return;
    }
    let ns = Netns::new("sm2");
    let t = echo_in(&ns, &[]);
    thread::scope(|s| {
        let handles: Vec<_> = (0..16u64)
            .map(|i| {
                let ns = &ns;
                s.spawn(move || {
                    let data = payload((i as usize + 1) * 100_000, 1000 + i);
                    let back = round_trip(ns, data.clone());
                    assert!(back == data, "connection {i}: the echo differs ({} of {} B)", back.len(), data.len());
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let closed = out.events().into_iter().filter(|e| e["event"] == "closed").count();
    assert_eq!(closed, 16, "{:?}", out.stdout);
}

#[test]
fn every_exit_leaves_nothing_attached() {
    if !require_root("sockmap::every_exit_leaves_nothing_attached") {
        return;
    }
    let ns = Netns::new("sm3");
    for exit in [Exit::Interrupt, Exit::Terminate, Exit::Duration, Exit::Count, Exit::ClosedPipe, Exit::Kill] {
        let how = format!("{exit:?}");
        let mut extra = vec![];
        match exit {
            Exit::Duration => extra.extend(["-d", "0.5"]),
            Exit::Count => extra.extend(["-n", "1"]),
            _ => {}
        }
        let args: Vec<String> =
            ["sockmap", "echo", "127.0.0.1:7", "--json"].iter().chain(&extra).map(|s| (*s).to_owned()).collect();
        let read_stdout = !matches!(exit, Exit::ClosedPipe);
        let mut t =
            ns.run_in(move || Tracer::start_opts(&args.iter().map(String::as_str).collect::<Vec<_>>(), read_stdout));
        let ids = t.ids.clone();
        assert!(ids.links.len() >= 3 || !ids.progs.is_empty(), "{how}: {ids:?}");
        if matches!(exit, Exit::ClosedPipe) {
            drop(t.stdout_raw.take());
        }
        match exit {
            Exit::Duration => {}
            // The first event (`open`) ends these runs, and the connection with them: a
            // connection and its first bytes are enough.
            Exit::Count | Exit::ClosedPipe => {
                let to = SocketAddr::from(([127, 0, 0, 1], PORT));
                let c = ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(10))).expect("connect");
                let _ = (&c).write_all(b"ping");
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
        assert_released(&ids, &how);
        // The port is free again: nothing of tracekit listens or splices any more.
        let to = SocketAddr::from(([127, 0, 0, 1], PORT));
        let refused = ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)));
        assert!(refused.is_err(), "{how}: something still listens on port 7");
    }
}
