//! tp_btf and raw_tp: the generic raw-tracepoint tools, decoded from BTF like kprobe.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::{Tracer, require_root, run};

/// Argument names come from the kernel's `__bpf_trace_NAME` wrappers where BTF has them
/// (not in Debian's 5.10): else they are `arg0`, `arg1`, ….
fn arg(name: &str, index: usize) -> String {
    let named = run(&["list", "kernel", "__bpf_trace_inet_sock_set_state"]).status.success();
    if named { name.to_owned() } else { format!("arg{index}") }
}

#[test]
fn tp_btf_agrees_with_tcpstate() {
    if !require_root("tp_btf_agrees_with_tcpstate") {
        return;
    }
    let (sk, old, new) = (arg("sk", 0), arg("oldstate", 1), arg("newstate", 2));
    let field = format!("{sk}->__sk_common.skc_num");
    let generic = Tracer::start(&["tp_btf", "inet_sock_set_state", "-a", &field, "--json"]);
    let tcpstate = Tracer::start(&["tcpstate", "--json"]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (s, _) = l.accept().unwrap();
    drop(c);
    thread::sleep(Duration::from_millis(100));
    drop(s);
    drop(l);
    thread::sleep(Duration::from_millis(300));
    let (g, t) = (generic.stop(), tcpstate.stop());
    assert!(g.status.success(), "{}", g.stderr);
    let state = |name: &str| -> i64 {
        [
            "",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
            "NEW_SYN_RECV",
        ]
        .iter()
        .position(|s| *s == name)
        .unwrap() as i64
    };
    let mut from_tcpstate: BTreeMap<(i64, i64), u32> = BTreeMap::new();
    for e in t.events().iter().filter(|e| e["lport"] == port) {
        *from_tcpstate
            .entry((state(e["oldstate"].as_str().unwrap()), state(e["newstate"].as_str().unwrap())))
            .or_default() += 1;
    }
    // The kernel zeroes skc_num when it unhashes a socket, before the move to CLOSE: that
    // transition is matched by the socket's address, seen with the port earlier.
    let generic_events = g.events();
    let sockets: BTreeSet<&str> =
        generic_events.iter().filter(|e| e["args"][&field] == port).filter_map(|e| e["args"][&sk].as_str()).collect();
    let mut from_generic: BTreeMap<(i64, i64), u32> = BTreeMap::new();
    // A freed socket's memory may come back as another test's socket: each ends at its CLOSE.
    let mut closed = BTreeSet::new();
    for e in generic_events.iter().filter(|e| e["args"][&sk].as_str().is_some_and(|a| sockets.contains(a))) {
        let address = e["args"][&sk].as_str().unwrap();
        if closed.contains(address) {
            continue;
        }
        assert_eq!(e["func"], "inet_sock_set_state");
        let transition = (e["args"][&old].as_i64().unwrap(), e["args"][&new].as_i64().unwrap());
        if transition.1 == state("CLOSE") {
            closed.insert(address);
        }
        *from_generic.entry(transition).or_default() += 1;
    }
    assert!(!from_tcpstate.is_empty(), "{:#?}", t.stdout);
    assert_eq!(from_generic, from_tcpstate, "the same transitions of the listening port's sockets");
}

#[test]
fn raw_tp_reads_an_embedded_char_array() {
    if !require_root("raw_tp_reads_an_embedded_char_array") {
        return;
    }
    let (p, old_pid, bprm) = (arg("p", 0), arg("old_pid", 1), arg("bprm", 2));
    let (comm, file) = (format!("{p}->comm"), format!("{bprm}->filename"));
    let out =
        run(&["raw_tp", "sched_process_exec", "-a", &comm, "-a", &file, "--json", "--", "sh", "-c", "/bin/true; true"]);
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();
    let e = events.iter().find(|e| e["args"][&file] == "/bin/true").unwrap_or_else(|| panic!("{:#?}", out.stdout));
    assert_eq!(e["args"][&comm], "true");
    assert!(e["args"][&old_pid].as_i64().unwrap() > 0);
}

#[test]
fn unknown_raw_tracepoint() {
    if !require_root("unknown_raw_tracepoint") {
        return;
    }
    let out = run(&["tp_btf", "inet_sock_set_stat"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("raw tracepoint `inet_sock_set_stat` not found"), "{}", out.stderr);
    assert!(out.stderr.contains("did you mean `inet_sock_set_state`"), "{}", out.stderr);
}
