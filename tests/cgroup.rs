//! `tracekit cgroup` end to end, as root, with real sockets and devices: every hook's event for a
//! process moved into a cgroup this file creates (and none for the same workload outside it),
//! every `--deny` form failing the call with EPERM and counted per rule, `--rewrite` for connect
//! and for a UDP request/reply, `-- CMD` in a transient cgroup, nothing left in the kernel after
//! any exit, two instances on one cgroup, and a cgroup removed under a running tracekit.
//!
//! Workloads are `python3 -c` scripts (exact socket calls, errno printed as JSON) held on their
//! stdin until they have been moved into the test's cgroup. Only loopback addresses are used
//! (127.0.0.0/8 and ::1). Every test has its own cgroup (`tk-test-*-PID-N` below the cgroup2
//! mount, removed on drop, also on panic) and only ephemeral ports, so tests run in parallel.
//! The bad-input cases without a fixture are in tests/cases/cgroup.tk.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::cgroup::{TestCgroup, cgroup2_root};
use common::{BpfIds, Exit, Finished, Tracer, assert_released};
use libbpf_rs::libbpf_sys as sys;
use serde_json::{Value, json};
use std::os::fd::AsRawFd;

const EPERM: i64 = libc::EPERM as i64;

const ALL_HOOKS: [&str; 15] = [
    "ingress",
    "egress",
    "sock_create",
    "sock_release",
    "bind4",
    "bind6",
    "post_bind4",
    "post_bind6",
    "connect4",
    "connect6",
    "sendmsg4",
    "sendmsg6",
    "recvmsg4",
    "recvmsg6",
    "dev",
];

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The attach types of the hooks tracekit cgroup uses.
const ATTACH_TYPES: [sys::bpf_attach_type; 15] = [
    sys::BPF_CGROUP_INET_INGRESS,
    sys::BPF_CGROUP_INET_EGRESS,
    sys::BPF_CGROUP_INET_SOCK_CREATE,
    sys::BPF_CGROUP_INET_SOCK_RELEASE,
    sys::BPF_CGROUP_INET4_BIND,
    sys::BPF_CGROUP_INET6_BIND,
    sys::BPF_CGROUP_INET4_POST_BIND,
    sys::BPF_CGROUP_INET6_POST_BIND,
    sys::BPF_CGROUP_INET4_CONNECT,
    sys::BPF_CGROUP_INET6_CONNECT,
    sys::BPF_CGROUP_UDP4_SENDMSG,
    sys::BPF_CGROUP_UDP6_SENDMSG,
    sys::BPF_CGROUP_UDP4_RECVMSG,
    sys::BPF_CGROUP_UDP6_RECVMSG,
    sys::BPF_CGROUP_DEVICE,
];

/// The ids attached directly to the open cgroup `dir` at `ty` (BPF_PROG_QUERY), or the errno.
fn query(dir: &std::fs::File, ty: sys::bpf_attach_type) -> Result<Vec<u64>, i32> {
    let mut ids = [0u32; 64];
    let mut cnt = ids.len() as u32;
    let mut flags = 0u32;
    // SAFETY: dir is an open cgroup directory; flags, ids and cnt are valid for writes and ids
    // has room for cnt entries.
    let rc = unsafe { sys::bpf_prog_query(dir.as_raw_fd(), ty, 0, &mut flags, ids.as_mut_ptr(), &mut cnt) };
    if rc != 0 {
        return Err(rc);
    }
    Ok(ids[..cnt as usize].iter().map(|&id| u64::from(id)).collect())
}

/// (prog id, attach type) of the programs attached directly to the cgroup at `path`, as
/// `bpftool cgroup show` lists them, asked of the kernel itself: Debian 12's bpftool lists
/// nothing and exits 255 on a 5.10 kernel once a program is attached.
fn bpftool_cgroup(path: &Path) -> Vec<(u64, String)> {
    let dir = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut out = Vec::new();
    for ty in ATTACH_TYPES {
        let ids =
            query(&dir, ty).unwrap_or_else(|rc| panic!("BPF_PROG_QUERY {} on {}: {rc}", type_name(ty), path.display()));
        out.extend(ids.into_iter().map(|id| (id, type_name(ty))));
    }
    out
}

/// libbpf's (and bpftool's) name of an attach type: `cgroup_inet4_connect`.
fn type_name(ty: sys::bpf_attach_type) -> String {
    // SAFETY: a lookup returning NULL or a static NUL-terminated string.
    let p = unsafe { sys::libbpf_bpf_attach_type_str(ty) };
    assert!(!p.is_null(), "attach type {ty} has a name");
    // SAFETY: p is a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Program ids attached anywhere in the cgroup2 hierarchy (what `bpftool cgroup tree` lists).
/// A cgroup another test removes meanwhile is simply gone.
fn bpftool_tree_progs() -> Vec<u64> {
    let mut out = Vec::new();
    let mut dirs = vec![cgroup2_root()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        dirs.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        let Ok(f) = std::fs::File::open(&dir) else { continue };
        out.extend(ATTACH_TYPES.into_iter().filter_map(|ty| query(&f, ty).ok()).flatten());
    }
    out
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Nothing of tracekit stays: its programs, links and maps are gone, nothing is attached to
/// `dir` (when it still exists) and no program of it appears in `bpftool cgroup tree`.
#[track_caller]
fn assert_nothing_left(ids: &BpfIds, dir: &Path, how: &str) {
    assert_released(ids, how);
    if dir.exists() {
        assert!(eventually(5, || bpftool_cgroup(dir).is_empty()), "{how}: still attached: {:?}", bpftool_cgroup(dir));
    }
    let tree = bpftool_tree_progs();
    assert!(!ids.progs.iter().any(|id| tree.contains(&u64::from(*id))), "{how}: in `bpftool cgroup tree`: {tree:?}");
}

/// `tracekit cgroup --json --cgroup DIR EXTRA... -v`, returned once attached.
fn attach(cg: &TestCgroup, extra: &[&str]) -> Tracer {
    let path = cg.path().to_str().expect("UTF-8 path").to_owned();
    let mut args = vec!["cgroup", "--json", "--cgroup", &path];
    args.extend_from_slice(extra);
    Tracer::start(&args)
}

/// Stops with SIGINT, expects status 0 and nothing left behind.
#[track_caller]
fn stop(cg: &TestCgroup, t: Tracer) -> Finished {
    let ids = t.ids.clone();
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "tracekit after SIGINT: {}", out.stderr);
    assert_nothing_left(&ids, cg.path(), "SIGINT");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out
}

/// /usr/bin/python3 itself (a pyenv shim on PATH costs 100 ms a start).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

/// Every workload starts with this: `A` is the JSON argument, `out(...)` prints one JSON line,
/// `errno_of(f, ...)` is 0 or the OSError's errno. It waits for one line on stdin (the test
/// moves it into the cgroup meanwhile), then reports its pid and cgroup v2 path.
const PRELUDE: &str = r#"
import json, os, socket, sys, time
A = json.loads(sys.argv[1])
def out(**kw):
    print(json.dumps(kw), flush=True)
def errno_of(f, *args):
    try:
        f(*args)
        return 0
    except OSError as e:
        return e.errno
sys.stdin.readline()
out(pid=os.getpid(), cgroup=[l[3:] for l in open('/proc/self/cgroup').read().splitlines() if l.startswith('0::')][0])
"#;

/// A python3 workload (PRELUDE + body), inside a cgroup or not.
struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<Value>,
    pid: u32,
}

/// What a finished workload printed.
struct Done {
    pid: u32,
    lines: Vec<Value>,
}

impl Done {
    /// The last value printed under `key`.
    #[track_caller]
    fn get(&self, key: &str) -> &Value {
        self.lines
            .iter()
            .rev()
            .find_map(|l| l.get(key))
            .unwrap_or_else(|| panic!("the workload printed no {key:?}: {:?}", self.lines))
    }

    #[track_caller]
    fn port(&self, key: &str) -> u64 {
        self.get(key).as_u64().unwrap_or_else(|| panic!("{key} is not a number: {:?}", self.lines))
    }
}

impl Workload {
    /// Starts the script, moves it into `cg` (when given) while it waits on stdin, lets it go.
    fn start(cg: Option<&TestCgroup>, body: &str, arg: Value) -> Workload {
        let script = format!("{PRELUDE}\n{body}\n");
        let mut child = Command::new(python())
            .arg("-c")
            .arg(&script)
            .arg(arg.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let pid = child.id();
        if let Some(cg) = cg
            && let Err(e) = cg.add_pid(pid)
        {
            let _ = child.kill();
            panic!("moving the workload into {}: {e}", cg.path().display());
        }
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(b"go\n").expect("release the workload");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Workload { child, stdin: Some(stdin), lines: rx, seen: Vec::new(), pid };
        let hello = w.next();
        assert_eq!(hello["pid"], json!(pid), "{hello}");
        let own = hello["cgroup"].as_str().expect("a cgroup path").to_owned();
        if let Some(cg) = cg {
            let want = format!("/{}", cg.path().strip_prefix(cgroup2_root()).expect("below the mount").display());
            assert_eq!(own, want, "the workload runs in the test cgroup");
        } else {
            assert!(!own.contains("tk-test-"), "the outside workload is outside: {own}");
        }
        w
    }

    /// The next JSON line the script prints (it is killed if none comes within 10 s).
    #[track_caller]
    fn next(&mut self) -> Value {
        match self.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
                self.seen.push(v.clone());
                v
            }
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("the workload printed nothing more after {:?}; stderr:\n{err}", self.seen);
            }
        }
    }

    /// Sends one line to the script's stdin.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(format!("{line}\n").as_bytes()).expect("write to the workload");
    }

    /// Waits for the script to exit 0 (within 15 s) and returns all it printed.
    #[track_caller]
    fn finish(mut self) -> Done {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waitpid") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the workload did not finish within 15 s: {:?}", self.seen);
            }
            thread::sleep(Duration::from_millis(5));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}")));
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "the workload failed ({status}): {err}\nprinted: {:?}", self.seen);
        Done { pid: self.pid, lines: std::mem::take(&mut self.seen) }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `body` to the end, in `cg` or (None) outside any test cgroup.
#[track_caller]
fn run_py(cg: Option<&TestCgroup>, body: &str, arg: Value) -> Done {
    Workload::start(cg, body, arg).finish()
}

// ---------------------------------------------------------------------------------------------
// Output

/// Whether every key of `want` (an object) has that value in `ev`.
fn fits(ev: &Value, want: &Value) -> bool {
    want.as_object().expect("an object").iter().all(|(k, v)| &ev[k] == v)
}

fn matching<'a>(evs: &'a [Value], want: &Value) -> Vec<&'a Value> {
    evs.iter().filter(|e| fits(e, want)).collect()
}

/// The first event that fits `want`; panics with the events of that hook.
#[track_caller]
fn expect(evs: &[Value], want: Value) -> &Value {
    if let Some(e) = evs.iter().find(|e| fits(e, &want)) {
        return e;
    }
    let hook = &want["hook"];
    let same: Vec<&Value> = evs.iter().filter(|e| hook.is_null() || &e["hook"] == hook).collect();
    panic!("no event fits {want}; events of that hook:\n{}", lines(&same));
}

fn lines(evs: &[&Value]) -> String {
    evs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

/// The `{"type":"rule"}` object of the rule spelled `rule`.
#[track_caller]
fn rule_hits(out: &Finished, rule: &str) -> u64 {
    let json = out.json();
    let r = json
        .iter()
        .find(|v| v["type"] == "rule" && v["rule"] == rule)
        .unwrap_or_else(|| panic!("no rule object for `{rule}` in:\n{}", out.stdout.join("\n")));
    r["hits"].as_u64().expect("hits")
}

/// The `{"type":"hook_counts"}` object of `hook`.
#[track_caller]
fn hook_counts(out: &Finished, hook: &str) -> Value {
    out.json()
        .into_iter()
        .find(|v| v["type"] == "hook_counts" && v["hook"] == hook)
        .unwrap_or_else(|| panic!("no hook_counts for {hook} in:\n{}", out.stdout.join("\n")))
}

/// No event carries the outside workload's pid, and no packet event its ports (those the
/// inside workload did not happen to use as well).
#[track_caller]
fn assert_not_seen(evs: &[Value], outside: &Done, outside_ports: &[u64], inside_ports: &[u64]) {
    let by_pid: Vec<&Value> = evs.iter().filter(|e| e["pid"] == json!(outside.pid)).collect();
    assert!(by_pid.is_empty(), "events of the process outside the cgroup:\n{}", lines(&by_pid));
    let ports: Vec<u64> = outside_ports.iter().copied().filter(|p| !inside_ports.contains(p)).collect();
    let skb: Vec<&Value> = evs
        .iter()
        .filter(|e| e["pid"].is_null() && (ports.iter().any(|p| e["lport"] == *p || e["rport"] == *p)))
        .collect();
    assert!(skb.is_empty(), "packet events of the workload outside the cgroup (ports {ports:?}):\n{}", lines(&skb));
}

/// An event of the workload `pid` (comm python3) at `hook`, with the fields of `more`.
fn of(pid: u32, hook: &str, more: Value) -> Value {
    merge(json!({"type": "event", "hook": hook, "pid": pid, "comm": "python3"}), &more)
}

/// `a` with the keys of `b` added (both objects).
fn merge(mut a: Value, b: &Value) -> Value {
    let m = a.as_object_mut().expect("an object");
    for (k, v) in b.as_object().expect("an object") {
        m.insert(k.clone(), v.clone());
    }
    a
}

fn local(addr: &str) -> SocketAddr {
    addr.parse().expect("a socket address")
}

// ---------------------------------------------------------------------------------------------
// 1. Every hook, inside and outside

const TCP_BODY: &str = r#"
res = {}
for name, fam, host in (('v4', socket.AF_INET, '127.0.0.1'), ('v6', socket.AF_INET6, '::1')):
    l = socket.socket(fam, socket.SOCK_STREAM)
    l.bind((host, 0))
    l.listen()
    port = l.getsockname()[1]
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect((host, port))
    a, _ = l.accept()
    c.sendall(b'tracekit')
    a.recv(64)
    res[name + '_port'] = port
    res[name + '_client'] = c.getsockname()[1]
    for s in (c, a, l):
        s.close()
out(**res)
"#;

#[test]
fn tcp_connect_bind_and_packets_v4_v6() {
    if !common::require_root("cgroup::tcp_connect_bind_and_packets_v4_v6") {
        return;
    }
    let cg = TestCgroup::new("tcp");
    let t = attach(&cg, &[]);
    let inside = run_py(Some(&cg), TCP_BODY, json!({}));
    let outside = run_py(None, TCP_BODY, json!({}));
    let out = stop(&cg, t);
    let evs = out.events();
    let pid = inside.pid;

    let mut inside_ports = Vec::new();
    for (v, fam, host, n, hdr) in [("v4", "ipv4", "127.0.0.1", "4", 40u64), ("v6", "ipv6", "::1", "6", 60)] {
        let port = inside.port(&format!("{v}_port"));
        let client = inside.port(&format!("{v}_client"));
        inside_ports.extend([port, client]);
        let tcp = json!({"family": fam, "proto": "tcp", "sock_type": "stream", "verdict": "allow"});
        let with_tcp = |hook: &str, more: Value| of(pid, hook, merge(tcp.clone(), &more));

        // bind with port 0 asks for 0; post_bind shows the port getsockname() reported.
        let bind = expect(&evs, with_tcp(&format!("bind{n}"), json!({"laddr": host, "lport": 0})));
        assert!(bind.get("raddr").is_none() && bind.get("rule").is_none(), "{bind}");
        let post = expect(&evs, with_tcp(&format!("post_bind{n}"), json!({"laddr": host, "lport": port})));
        assert!(post.get("raddr").is_none(), "{post}");

        let conn = expect(&evs, with_tcp(&format!("connect{n}"), json!({"raddr": host, "rport": port})));
        assert!(conn.get("rule").is_none() && conn.get("new_raddr").is_none(), "{conn}");
        assert!(conn["time_ns"].as_u64().is_some() && conn["cpu"].as_u64().is_some(), "{conn}");

        let creates = matching(&evs, &with_tcp("sock_create", json!({})));
        assert!(creates.len() >= 2, "listener and client sockets created: {}", lines(&creates));
        assert!(creates.iter().all(|e| e.get("laddr").is_none() && e.get("raddr").is_none()), "{}", lines(&creates));
        let releases = matching(&evs, &with_tcp("sock_release", json!({})));
        assert!(releases.len() >= 2, "listener and client sockets released: {}", lines(&releases));

        // Packets: no task context (softirq), egress by destination, ingress by source.
        let flow = json!({"type": "event", "family": fam, "proto": "tcp", "verdict": "allow"});
        let to_server = merge(
            flow.clone(),
            &json!({"hook": "egress", "laddr": host, "lport": client, "raddr": host, "rport": port}),
        );
        let egress = matching(&evs, &to_server);
        assert!(!egress.is_empty(), "egress client -> server: {}", lines(&matching(&evs, &json!({"hook": "egress"}))));
        assert!(egress.iter().all(|e| e.get("pid").is_none() && e.get("comm").is_none()), "{}", lines(&egress));
        let lens: Vec<u64> = egress.iter().map(|e| e["len"].as_u64().expect("len")).collect();
        assert!(lens.iter().all(|&l| l >= hdr), "every segment has IP and TCP headers: {lens:?}");
        assert!(lens.iter().any(|&l| l >= hdr + 8), "one segment carries the 8-byte payload: {lens:?}");
        let at_server = merge(
            flow.clone(),
            &json!({"hook": "ingress", "laddr": host, "lport": port, "raddr": host, "rport": client}),
        );
        let ingress = matching(&evs, &at_server);
        assert!(!ingress.is_empty(), "ingress at the server: {}", lines(&matching(&evs, &json!({"hook": "ingress"}))));
        assert!(
            ingress.iter().all(|e| e.get("pid").is_none() && e["len"].as_u64() >= Some(hdr)),
            "{}",
            lines(&ingress)
        );
    }

    let outside_ports: Vec<u64> =
        ["v4_port", "v4_client", "v6_port", "v6_client"].iter().map(|k| outside.port(k)).collect();
    assert_not_seen(&evs, &outside, &outside_ports, &inside_ports);

    // One hook_counts per attached hook (all of them), calls at least the events seen.
    for hook in ALL_HOOKS {
        let c = hook_counts(&out, hook);
        let seen = matching(&evs, &json!({"hook": hook})).len() as u64;
        assert!(c["calls"].as_u64().expect("calls") >= seen, "{c} vs {seen} events");
        assert_eq!((c["denied"].as_u64(), c["rewritten"].as_u64()), (Some(0), Some(0)), "{c}");
    }
    let summary = out.summary();
    assert_eq!(summary["events"].as_u64(), Some(evs.len() as u64), "{summary}");
    assert_eq!(summary["lost"].as_u64(), Some(0), "{summary}");
}

const UDP_BODY: &str = r#"
res = {}
for name, fam, host in (('v4', socket.AF_INET, '127.0.0.1'), ('v6', socket.AF_INET6, '::1')):
    r = socket.socket(fam, socket.SOCK_DGRAM)
    r.bind((host, 0))
    u = socket.socket(fam, socket.SOCK_DGRAM)
    r.settimeout(5)
    u.settimeout(5)
    u.sendto(b'ping', (host, r.getsockname()[1]))
    data, src = r.recvfrom(64)
    r.sendto(b'pong!', src)
    data2, src2 = u.recvfrom(64)
    assert (data, data2) == (b'ping', b'pong!'), (data, data2)
    res[name + '_server'] = r.getsockname()[1]
    res[name + '_client'] = u.getsockname()[1]
    u.close()
    r.close()
out(**res)
"#;

#[test]
fn udp_sendmsg_recvmsg_and_packet_lengths() {
    if !common::require_root("cgroup::udp_sendmsg_recvmsg_and_packet_lengths") {
        return;
    }
    let cg = TestCgroup::new("udp");
    let t = attach(&cg, &[]);
    let inside = run_py(Some(&cg), UDP_BODY, json!({}));
    let outside = run_py(None, UDP_BODY, json!({}));
    let out = stop(&cg, t);
    let evs = out.events();
    let pid = inside.pid;

    let mut inside_ports = Vec::new();
    for (v, fam, host, n, hdr) in [("v4", "ipv4", "127.0.0.1", "4", 28u64), ("v6", "ipv6", "::1", "6", 48)] {
        let server = inside.port(&format!("{v}_server"));
        let client = inside.port(&format!("{v}_client"));
        inside_ports.extend([server, client]);
        let udp = json!({"family": fam, "proto": "udp", "sock_type": "dgram", "verdict": "allow"});
        let ev = |hook: &str, more: Value| of(pid, hook, merge(udp.clone(), &more));

        // sendmsg on unconnected sockets: the request, then the reply to the client's port.
        let sendmsg = format!("sendmsg{n}");
        let req = expect(&evs, ev(&sendmsg, json!({"raddr": host, "rport": server})));
        assert!(req.get("rule").is_none() && req.get("new_raddr").is_none(), "{req}");
        expect(&evs, ev(&sendmsg, json!({"raddr": host, "rport": client})));
        // recvmsg: the source recvfrom() reports, on both sides.
        let recvmsg = format!("recvmsg{n}");
        expect(&evs, ev(&recvmsg, json!({"raddr": host, "rport": client})));
        expect(&evs, ev(&recvmsg, json!({"raddr": host, "rport": server})));
        expect(&evs, ev(&format!("post_bind{n}"), json!({"laddr": host, "lport": server})));

        // Packet lengths: IP + UDP headers + 4 bytes `ping`, then 5 bytes `pong!`.
        let pkt = |hook: &str, lport: u64, rport: u64, len: u64| {
            json!({"type": "event", "hook": hook, "family": fam, "proto": "udp", "laddr": host, "lport": lport,
                   "raddr": host, "rport": rport, "len": len})
        };
        for want in [
            pkt("egress", client, server, hdr + 4),
            pkt("ingress", server, client, hdr + 4),
            pkt("egress", server, client, hdr + 5),
            pkt("ingress", client, server, hdr + 5),
        ] {
            let e = expect(&evs, want);
            assert!(e.get("pid").is_none() && e.get("sock_type").is_none(), "{e}");
        }
    }

    let outside_ports: Vec<u64> =
        ["v4_server", "v4_client", "v6_server", "v6_client"].iter().map(|k| outside.port(k)).collect();
    assert_not_seen(&evs, &outside, &outside_ports, &inside_ports);
}

const RAW_DEV_BODY: &str = r#"
x = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
x.close()
open('/dev/null', 'w').close()
open('/dev/zero', 'rb').close()
out(done=True)
"#;

#[test]
fn raw_socket_and_device_opens() {
    if !common::require_root("cgroup::raw_socket_and_device_opens") {
        return;
    }
    let cg = TestCgroup::new("rawdev");
    let t = attach(&cg, &[]);
    let inside = run_py(Some(&cg), RAW_DEV_BODY, json!({}));
    let outside = run_py(None, RAW_DEV_BODY, json!({}));
    let out = stop(&cg, t);
    let evs = out.events();
    let pid = inside.pid;

    let raw = json!({"family": "ipv4", "proto": "icmp", "sock_type": "raw", "verdict": "allow"});
    for hook in ["sock_create", "sock_release"] {
        let e = expect(&evs, of(pid, hook, raw.clone()));
        assert!(e.get("laddr").is_none() && e.get("raddr").is_none() && e.get("rule").is_none(), "{e}");
    }
    for (minor, access) in [(3, "w"), (5, "r")] {
        let want = of(pid, "dev", json!({"verdict": "allow", "dev_type": "char", "major": 1, "minor": minor}));
        let devs = matching(&evs, &want);
        assert!(!devs.is_empty(), "no dev event for 1:{minor}: {}", lines(&matching(&evs, &json!({"hook": "dev"}))));
        assert!(devs.iter().all(|e| e["access"] == access), "1:{minor} opened for {access} only: {}", lines(&devs));
        assert!(devs.iter().all(|e| e.get("family").is_none() && e.get("raddr").is_none()), "{}", lines(&devs));
    }
    assert_not_seen(&evs, &outside, &[], &[]);
}

// ---------------------------------------------------------------------------------------------
// 2. --deny

/// Attaches with `rules`, runs `body` inside, stops; returns what the workload printed and the
/// tracer's output.
fn deny_run(tag: &str, rules: &[&str], body: &str, arg: Value) -> (Done, Finished) {
    let cg = TestCgroup::new(tag);
    let t = attach(&cg, rules);
    let done = run_py(Some(&cg), body, arg);
    (done, stop(&cg, t))
}

const CONNECT_BODY: &str = r#"
def tcp(fam, host, port):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        return errno_of(s.connect, (host, port))
    finally:
        s.close()
def udp(fam, host, port):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        return errno_of(s.connect, (host, port))
    finally:
        s.close()
res = {}
for key, kind, fam, host, port in A['calls']:
    res[key] = (tcp if kind == 'tcp' else udp)(socket.AF_INET6 if fam == 6 else socket.AF_INET, host, port)
out(**res)
"#;

/// Whether `l` has a connection waiting (it never accepts otherwise).
fn accepts(l: &TcpListener) -> bool {
    l.set_nonblocking(true).expect("nonblocking");
    l.accept().is_ok()
}

#[test]
fn deny_connect_v4_prefix_and_port() {
    if !common::require_root("cgroup::deny_connect_v4_prefix_and_port") {
        return;
    }
    let denied = TcpListener::bind(local("127.0.0.1:0")).unwrap();
    let allowed = TcpListener::bind(local("127.0.0.1:0")).unwrap();
    let (a, b) = (denied.local_addr().unwrap().port(), allowed.local_addr().unwrap().port());
    let rule = format!("deny connect:127.0.0.0/8:{a}");
    let calls = json!({"calls": [
        ["tcp_a1", "tcp", 4, "127.0.0.1", a],
        ["tcp_a5", "tcp", 4, "127.0.0.5", a],
        ["udp_a1", "udp", 4, "127.0.0.1", a],
        ["tcp_b1", "tcp", 4, "127.0.0.1", b],
        ["mapped", "tcp", 6, "::ffff:127.0.0.1", a],
    ]});
    let (done, out) = deny_run("dconn4", &["--deny", &rule[5..]], CONNECT_BODY, calls);
    // A dual-stack IPv6 socket to the v4-mapped peer is judged by the IPv4 rule too.
    for key in ["tcp_a1", "tcp_a5", "udp_a1", "mapped"] {
        assert_eq!(done.get(key).as_i64(), Some(EPERM), "{key}: {:?}", done.lines);
    }
    assert_eq!(done.get("tcp_b1").as_i64(), Some(0), "another port passes: {:?}", done.lines);
    assert!(!accepts(&denied), "a denied connect never reached the listener");
    assert!(accepts(&allowed), "the allowed connect reached its listener");

    assert_eq!(rule_hits(&out, &rule), 4);
    let c = hook_counts(&out, "connect4");
    assert_eq!((c["calls"].as_u64(), c["denied"].as_u64()), (Some(4), Some(3)), "{c}");
    let c = hook_counts(&out, "connect6");
    assert_eq!((c["calls"].as_u64(), c["denied"].as_u64()), (Some(1), Some(1)), "{c}");
    let evs = out.events();
    for (addr, proto) in [("127.0.0.1", "tcp"), ("127.0.0.5", "tcp"), ("127.0.0.1", "udp")] {
        expect(
            &evs,
            of(
                done.pid,
                "connect4",
                json!({"verdict": "deny", "rule": rule, "proto": proto, "raddr": addr, "rport": a}),
            ),
        );
    }
    expect(
        &evs,
        of(done.pid, "connect6", json!({"verdict": "deny", "rule": rule, "raddr": "::ffff:127.0.0.1", "rport": a})),
    );
    let ok = expect(&evs, of(done.pid, "connect4", json!({"verdict": "allow", "rport": b})));
    assert!(ok.get("rule").is_none(), "{ok}");
}

#[test]
fn deny_connect6_any_port() {
    if !common::require_root("cgroup::deny_connect6_any_port") {
        return;
    }
    let l6 = TcpListener::bind(local("[::1]:0")).unwrap();
    let l4 = TcpListener::bind(local("127.0.0.1:0")).unwrap();
    let (p6, p4) = (l6.local_addr().unwrap().port(), l4.local_addr().unwrap().port());
    let calls = json!({"calls": [
        ["tcp6", "tcp", 6, "::1", p6],
        ["udp6", "udp", 6, "::1", 9],
        ["tcp4", "tcp", 4, "127.0.0.1", p4],
    ]});
    let (done, out) = deny_run("dconn6", &["--deny", "connect6:[::1]:*"], CONNECT_BODY, calls);
    assert_eq!(done.get("tcp6").as_i64(), Some(EPERM), "{:?}", done.lines);
    assert_eq!(done.get("udp6").as_i64(), Some(EPERM), "{:?}", done.lines);
    assert_eq!(done.get("tcp4").as_i64(), Some(0), "IPv4 is not the rule's family: {:?}", done.lines);
    assert!(!accepts(&l6) && accepts(&l4));
    assert_eq!(rule_hits(&out, "deny connect6:[::1]:*"), 2);
    let evs = out.events();
    expect(&evs, of(done.pid, "connect6", json!({"verdict": "deny", "rule": "deny connect6:[::1]:*", "rport": p6})));
    expect(&evs, of(done.pid, "connect6", json!({"verdict": "deny", "proto": "udp", "rport": 9})));
    expect(&evs, of(done.pid, "connect4", json!({"verdict": "allow", "rport": p4})));
}

/// A port below 1024 free on 127.0.0.1 (TCP and UDP) and ::1 (TCP).
fn free_low_port() -> u16 {
    (900..1024)
        .rev()
        .find(|&p| {
            TcpListener::bind(("127.0.0.1", p)).is_ok()
                && UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && TcpListener::bind(("::1", p)).is_ok()
        })
        .expect("a free port below 1024 on loopback")
}

const BIND_BODY: &str = r#"
low = A['low']
def bind(fam, typ, host, port):
    s = socket.socket(fam, typ)
    try:
        e = errno_of(s.bind, (host, port))
        return e, (s.getsockname()[1] if e == 0 else None)
    finally:
        s.close()
t4, _ = bind(socket.AF_INET, socket.SOCK_STREAM, '127.0.0.1', low)
u4, _ = bind(socket.AF_INET, socket.SOCK_DGRAM, '127.0.0.1', low)
t6, _ = bind(socket.AF_INET6, socket.SOCK_STREAM, '::1', low)
eph, port = bind(socket.AF_INET, socket.SOCK_STREAM, '127.0.0.1', 0)
out(t4=t4, u4=u4, t6=t6, eph=eph, eph_port=port)
"#;

#[test]
fn deny_bind_low_ports_judged_at_bind() {
    if !common::require_root("cgroup::deny_bind_low_ports_judged_at_bind") {
        return;
    }
    let low = free_low_port();
    let (done, out) = deny_run("dbind", &["--deny", "bind:0-1023"], BIND_BODY, json!({"low": low}));
    for key in ["t4", "u4", "t6"] {
        assert_eq!(done.get(key).as_i64(), Some(EPERM), "{key}: bind to {low}: {:?}", done.lines);
    }
    assert_eq!(done.get("eph").as_i64(), Some(0), "an ephemeral bind passes: {:?}", done.lines);
    let eph = done.port("eph_port");
    assert!(eph >= 1024, "{eph}");
    assert_eq!(rule_hits(&out, "deny bind:0-1023"), 3);
    let evs = out.events();
    // A named port is judged at bind (before 5.17 a port denied at post_bind stayed hashed).
    for (hook, host, proto) in [("bind4", "127.0.0.1", "tcp"), ("bind4", "127.0.0.1", "udp"), ("bind6", "::1", "tcp")] {
        expect(
            &evs,
            of(
                done.pid,
                hook,
                json!({"verdict": "deny", "rule": "deny bind:0-1023", "proto": proto, "laddr": host, "lport": low}),
            ),
        );
    }
    // Port 0 passes bind and is judged (and allowed) at post_bind, on the port it got.
    expect(&evs, of(done.pid, "bind4", json!({"verdict": "allow", "lport": 0})));
    expect(&evs, of(done.pid, "post_bind4", json!({"verdict": "allow", "lport": eph})));
    assert!(matching(&evs, &json!({"hook": "post_bind4", "verdict": "deny"})).is_empty());
    let c = hook_counts(&out, "bind4");
    assert_eq!((c["calls"].as_u64(), c["denied"].as_u64()), (Some(3), Some(2)), "{c}");
}

#[test]
fn deny_bind_of_the_port_the_kernel_picks_at_post_bind() {
    if !common::require_root("cgroup::deny_bind_of_the_port_the_kernel_picks_at_post_bind") {
        return;
    }
    // Every port the kernel picks for port 0 is denied: the call fails at post_bind.
    let body = "out(eph=errno_of(socket.socket().bind, ('127.0.0.1', 0)))";
    let (done, out) = deny_run("dpost", &["--deny", "bind:1024-65535"], body, json!({}));
    assert_eq!(done.get("eph").as_i64(), Some(EPERM), "{:?}", done.lines);
    assert_eq!(rule_hits(&out, "deny bind:1024-65535"), 1);
    let evs = out.events();
    expect(&evs, of(done.pid, "bind4", json!({"verdict": "allow", "lport": 0})));
    let e = expect(&evs, of(done.pid, "post_bind4", json!({"verdict": "deny", "rule": "deny bind:1024-65535"})));
    assert!(e["lport"].as_u64().is_some_and(|p| p >= 1024), "{e}");
}

const SENDTO_BODY: &str = r#"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
res = {}
for key, port in A['sends']:
    res[key] = errno_of(s.sendto, key.encode(), ('127.0.0.1', port))
out(**res)
"#;

/// A UDP receiver on 127.0.0.1 with a short read timeout, and its port.
fn udp_receiver() -> (UdpSocket, u16) {
    let s = UdpSocket::bind(local("127.0.0.1:0")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// The payloads `s` has queued (the senders have finished by now).
fn received(s: &UdpSocket) -> Vec<(String, u16)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok((n, from)) = s.recv_from(&mut buf) {
        got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from.port()));
    }
    got
}

#[test]
fn deny_sendmsg_to_one_port() {
    if !common::require_root("cgroup::deny_sendmsg_to_one_port") {
        return;
    }
    let ((rp, p), (rq, q)) = (udp_receiver(), udp_receiver());
    let rule = format!("deny sendmsg:127.0.0.1:{p}");
    let (done, out) =
        deny_run("dsend", &["--deny", &rule[5..]], SENDTO_BODY, json!({"sends": [["denied", p], ["allowed", q]]}));
    assert_eq!(done.get("denied").as_i64(), Some(EPERM), "{:?}", done.lines);
    assert_eq!(done.get("allowed").as_i64(), Some(0), "{:?}", done.lines);
    assert!(received(&rp).is_empty(), "nothing was sent to the denied port");
    assert_eq!(received(&rq).iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(), ["allowed"]);
    assert_eq!(rule_hits(&out, &rule), 1);
    let evs = out.events();
    expect(&evs, of(done.pid, "sendmsg4", json!({"verdict": "deny", "rule": rule, "raddr": "127.0.0.1", "rport": p})));
    expect(&evs, of(done.pid, "sendmsg4", json!({"verdict": "allow", "rport": q})));
    // A denied sendmsg sends nothing: the only egress packet is the allowed one.
    let egress = matching(&evs, &json!({"hook": "egress"}));
    assert!(egress.iter().all(|e| e["rport"] != p), "{}", lines(&egress));
}

#[test]
fn deny_egress_fails_a_udp_send() {
    if !common::require_root("cgroup::deny_egress_fails_a_udp_send") {
        return;
    }
    let ((rp, p), (rq, q)) = (udp_receiver(), udp_receiver());
    let rule = format!("deny egress:127.0.0.1:{p}");
    let (done, out) =
        deny_run("degress", &["--deny", &rule[5..]], SENDTO_BODY, json!({"sends": [["denied", p], ["allowed", q]]}));
    assert_eq!(done.get("denied").as_i64(), Some(EPERM), "a dropped UDP send fails: {:?}", done.lines);
    assert_eq!(done.get("allowed").as_i64(), Some(0), "{:?}", done.lines);
    assert!(received(&rp).is_empty(), "the dropped datagram never arrives");
    assert_eq!(received(&rq).iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(), ["allowed"]);
    assert_eq!(rule_hits(&out, &rule), 1);
    let evs = out.events();
    // sendmsg let it through; the packet was dropped on the way out.
    expect(&evs, of(done.pid, "sendmsg4", json!({"verdict": "allow", "rport": p})));
    let e = expect(
        &evs,
        json!({"hook": "egress", "verdict": "deny", "rule": rule, "proto": "udp", "rport": p, "len": 28 + 6}),
    );
    assert!(e.get("pid").is_none(), "{e}");
    expect(&evs, json!({"hook": "egress", "verdict": "allow", "rport": q, "len": 28 + 7}));
    let c = hook_counts(&out, "egress");
    assert_eq!(c["denied"].as_u64(), Some(1), "{c}");
}

const RECV_BODY: &str = r#"
rs = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
for r in rs:
    r.bind(('127.0.0.1', 0))
    r.settimeout(0.3)
out(ports=[r.getsockname()[1] for r in rs])
sys.stdin.readline()
got = []
for r in rs:
    while True:
        try:
            data, src = r.recvfrom(64)
        except socket.timeout:
            break
        got.append([data.decode(), r.getsockname()[1]])
out(got=got)
"#;

#[test]
fn deny_ingress_to_one_local_port() {
    if !common::require_root("cgroup::deny_ingress_to_one_local_port") {
        return;
    }
    let sender = UdpSocket::bind(local("127.0.0.1:0")).unwrap();
    let from = sender.local_addr().unwrap().port();
    let cg = TestCgroup::new("dingress");
    let mut w = Workload::start(Some(&cg), RECV_BODY, json!({}));
    let ports = w.next()["ports"].clone();
    let (denied, allowed) = (ports[0].as_u64().unwrap() as u16, ports[1].as_u64().unwrap() as u16);
    // The peer's address and the destination port: here the receiver's own port.
    let rule = format!("deny ingress:127.0.0.1:{denied}");
    let t = attach(&cg, &["--deny", &rule[5..]]);
    // From outside the cgroup to the two receivers inside.
    sender.send_to(b"denied", ("127.0.0.1", denied)).expect("send to the denied port");
    sender.send_to(b"allowed", ("127.0.0.1", allowed)).expect("send to the other port");
    w.send("sent");
    let done = w.finish();
    let out = stop(&cg, t);
    assert_eq!(done.get("got"), &json!([["allowed", allowed]]), "only the other port's datagram arrives");
    assert_eq!(rule_hits(&out, &rule), 1);
    let evs = out.events();
    let e = expect(
        &evs,
        json!({"hook": "ingress", "verdict": "deny", "rule": rule, "raddr": "127.0.0.1", "rport": from,
               "laddr": "127.0.0.1", "lport": denied, "len": 28 + 6}),
    );
    assert!(e.get("pid").is_none(), "{e}");
    expect(&evs, json!({"hook": "ingress", "verdict": "allow", "rport": from, "lport": allowed}));
}

const DEV_BODY: &str = r#"
def opened(path, mode):
    return errno_of(lambda: open(path, mode).close())
out(null_w=opened('/dev/null', 'w'), null_r=opened('/dev/null', 'r'), zero_w=opened('/dev/zero', 'w'))
"#;

#[test]
fn deny_dev_write_of_dev_null() {
    if !common::require_root("cgroup::deny_dev_write_of_dev_null") {
        return;
    }
    let (done, out) = deny_run("ddev", &["--deny", "dev:c:1:3:w"], DEV_BODY, json!({}));
    assert_eq!(done.get("null_w").as_i64(), Some(EPERM), "{:?}", done.lines);
    assert_eq!(done.get("null_r").as_i64(), Some(0), "reading is allowed: {:?}", done.lines);
    assert_eq!(done.get("zero_w").as_i64(), Some(0), "another minor is allowed: {:?}", done.lines);
    assert_eq!(rule_hits(&out, "deny dev:c:1:3:w"), 1);
    let evs = out.events();
    let dev = json!({"dev_type": "char", "major": 1});
    let d = |more: Value| of(done.pid, "dev", merge(dev.clone(), &more));
    expect(&evs, d(json!({"minor": 3, "access": "w", "verdict": "deny", "rule": "deny dev:c:1:3:w"})));
    expect(&evs, d(json!({"minor": 3, "access": "r", "verdict": "allow"})));
    expect(&evs, d(json!({"minor": 5, "access": "w", "verdict": "allow"})));
}

const SOCKETS_BODY: &str = r#"
res = {}
for key, fam, typ, proto in A['sockets']:
    res[key] = errno_of(lambda: socket.socket(getattr(socket, fam), getattr(socket, typ), proto).close())
out(**res)
"#;

#[test]
fn deny_sock_raw() {
    if !common::require_root("cgroup::deny_sock_raw") {
        return;
    }
    let socks = json!({"sockets": [
        ["raw4", "AF_INET", "SOCK_RAW", libc::IPPROTO_ICMP],
        ["raw6", "AF_INET6", "SOCK_RAW", libc::IPPROTO_ICMPV6],
        ["udp4", "AF_INET", "SOCK_DGRAM", 0],
    ]});
    let (done, out) = deny_run("draw", &["--deny", "sock:raw"], SOCKETS_BODY, socks);
    assert_eq!(done.get("raw4").as_i64(), Some(EPERM), "{:?}", done.lines);
    assert_eq!(done.get("raw6").as_i64(), Some(EPERM), "{:?}", done.lines);
    assert_eq!(done.get("udp4").as_i64(), Some(0), "{:?}", done.lines);
    assert_eq!(rule_hits(&out, "deny sock:raw"), 2);
    let evs = out.events();
    let deny = json!({"verdict": "deny", "rule": "deny sock:raw", "sock_type": "raw"});
    let d = |more: Value| of(done.pid, "sock_create", merge(deny.clone(), &more));
    expect(&evs, d(json!({"family": "ipv4", "proto": "icmp"})));
    expect(&evs, d(json!({"family": "ipv6", "proto": "icmpv6"})));
    expect(&evs, of(done.pid, "sock_create", json!({"verdict": "allow", "family": "ipv4", "proto": "udp"})));
    let c = hook_counts(&out, "sock_create");
    assert_eq!((c["calls"].as_u64(), c["denied"].as_u64()), (Some(3), Some(2)), "{c}");
}

#[test]
fn deny_sock_inet6_and_a_joined_rule_first_match_wins() {
    if !common::require_root("cgroup::deny_sock_inet6_and_a_joined_rule_first_match_wins") {
        return;
    }
    let socks = json!({"sockets": [
        ["tcp6", "AF_INET6", "SOCK_STREAM", 0],
        ["udp6", "AF_INET6", "SOCK_DGRAM", 0],
        ["udp4", "AF_INET", "SOCK_DGRAM", 0],
        ["tcp4", "AF_INET", "SOCK_STREAM", 0],
    ]});
    let (done, out) = deny_run("dinet6", &["--deny", "sock:inet6", "--deny", "sock:inet+udp"], SOCKETS_BODY, socks);
    for key in ["tcp6", "udp6", "udp4"] {
        assert_eq!(done.get(key).as_i64(), Some(EPERM), "{key}: {:?}", done.lines);
    }
    assert_eq!(done.get("tcp4").as_i64(), Some(0), "{:?}", done.lines);
    // udp6 fits both rules: the first decides.
    assert_eq!(rule_hits(&out, "deny sock:inet6"), 2);
    assert_eq!(rule_hits(&out, "deny sock:inet+udp"), 1);
    let json = out.json();
    let indexes: Vec<(u64, &str)> = json
        .iter()
        .filter(|v| v["type"] == "rule")
        .map(|v| (v["index"].as_u64().unwrap(), v["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(indexes, [(1, "deny sock:inet6"), (2, "deny sock:inet+udp")]);
    let evs = out.events();
    expect(
        &evs,
        of(
            done.pid,
            "sock_create",
            json!({"verdict": "deny", "rule": "deny sock:inet6", "family": "ipv6", "proto": "udp"}),
        ),
    );
    expect(
        &evs,
        of(done.pid, "sock_create", json!({"verdict": "deny", "rule": "deny sock:inet+udp", "family": "ipv4"})),
    );
}

#[test]
fn text_mode_prints_the_counters_to_stderr() {
    if !common::require_root("cgroup::text_mode_prints_the_counters_to_stderr") {
        return;
    }
    let denied = TcpListener::bind(local("127.0.0.1:0")).unwrap();
    let allowed = TcpListener::bind(local("127.0.0.1:0")).unwrap();
    let (a, b) = (denied.local_addr().unwrap().port(), allowed.local_addr().unwrap().port());
    let cg = TestCgroup::new("text");
    let path = cg.path().to_str().unwrap().to_owned();
    let rule = format!("connect:127.0.0.1:{a}");
    let t = Tracer::start(&["cgroup", "--cgroup", &path, "--hooks", "connect", "--deny", &rule]);
    let calls = json!({"calls": [["a", "tcp", 4, "127.0.0.1", a], ["b", "tcp", 4, "127.0.0.1", b]]});
    let done = run_py(Some(&cg), CONNECT_BODY, calls);
    assert_eq!((done.get("a").as_i64(), done.get("b").as_i64()), (Some(EPERM), Some(0)));
    let out = stop(&cg, t);
    assert!(out.stderr.contains(&format!("tracekit: cgroup {path}: 2 calls: connect4 2 (1 denied)")), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("tracekit: rule 1 `deny {rule}`: 1 call\n")), "{}", out.stderr);
    let text = out.stdout.join("\n");
    assert!(text.contains("connect4") && text.contains(&format!("127.0.0.1:{a}")) && text.contains("deny"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// 3. --rewrite

/// A port nothing listens on at `host` (bound once, then closed).
fn dead_port(host: &str) -> u16 {
    let l = TcpListener::bind((host, 0)).expect("bind");
    let u = UdpSocket::bind((host, l.local_addr().unwrap().port()));
    let port = l.local_addr().unwrap().port();
    drop((l, u));
    port
}

const REWRITE_CONNECT_BODY: &str = r#"
c = socket.socket()
c.settimeout(5)
e = errno_of(c.connect, ('127.0.0.7', A['dead']))
peer = c.getpeername() if e == 0 else None
if e == 0:
    c.sendall(b'hello')
out(errno=e, peer=peer)
c.close()
"#;

#[test]
fn rewrite_connect_reaches_the_new_address() {
    if !common::require_root("cgroup::rewrite_connect_reaches_the_new_address") {
        return;
    }
    let listener = TcpListener::bind(local("127.0.0.1:0")).unwrap();
    let lport = listener.local_addr().unwrap().port();
    let dead = dead_port("127.0.0.7");
    let rule = format!("rewrite connect:127.0.0.7:{dead}=127.0.0.1:{lport}");
    let (done, out) = deny_run("rwconn", &["--rewrite", &rule[8..]], REWRITE_CONNECT_BODY, json!({"dead": dead}));
    assert_eq!(done.get("errno").as_i64(), Some(0), "the connect to a dead address succeeds: {:?}", done.lines);
    assert_eq!(done.get("peer"), &json!(["127.0.0.1", lport]), "the peer is the new address");
    listener.set_nonblocking(true).unwrap();
    let (mut conn, _) = listener.accept().expect("the client reached the listener");
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello");

    let evs = out.events();
    expect(
        &evs,
        of(
            done.pid,
            "connect4",
            json!({"verdict": "rewrite", "rule": rule, "proto": "tcp", "raddr": "127.0.0.7", "rport": dead,
                   "new_raddr": "127.0.0.1", "new_rport": lport}),
        ),
    );
    assert_eq!(rule_hits(&out, &rule), 1);
    let c = hook_counts(&out, "connect4");
    assert_eq!((c["calls"].as_u64(), c["rewritten"].as_u64(), c["denied"].as_u64()), (Some(1), Some(1), Some(0)));
}

const REWRITE_UDP_BODY: &str = r#"
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.settimeout(5)
c.sendto(b'ping', ('127.0.0.7', A['dead']))
data, src = c.recvfrom(64)
out(reply=data.decode(), src=src, client=c.getsockname()[1])
"#;

#[test]
fn rewrite_sendmsg_and_the_reply_reads_as_from_the_old_address() {
    if !common::require_root("cgroup::rewrite_sendmsg_and_the_reply_reads_as_from_the_old_address") {
        return;
    }
    let server = UdpSocket::bind(local("127.0.0.1:0")).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = server.local_addr().unwrap().port();
    let p = dead_port("127.0.0.7");
    let rule = format!("rewrite sendmsg:127.0.0.7:{p}=127.0.0.1:{q}");
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).expect("the request arrives at the new address");
        server.send_to(b"pong", from).expect("reply");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    });
    let (done, out) = deny_run("rwudp", &["--rewrite", &rule[8..]], REWRITE_UDP_BODY, json!({"dead": p}));
    let (request, from) = echo.join().expect("server thread");
    assert_eq!(request, "ping");
    let client = done.port("client");
    assert_eq!(u64::from(from.port()), client);
    assert_eq!(done.get("reply"), "pong");
    assert_eq!(done.get("src"), &json!(["127.0.0.7", p]), "recvfrom reports the address the client sent to");

    let evs = out.events();
    let udp = json!({"verdict": "rewrite", "rule": rule, "proto": "udp"});
    let ev = |hook: &str, more: Value| of(done.pid, hook, merge(udp.clone(), &more));
    expect(&evs, ev("sendmsg4", json!({"raddr": "127.0.0.7", "rport": p, "new_raddr": "127.0.0.1", "new_rport": q})));
    expect(&evs, ev("recvmsg4", json!({"raddr": "127.0.0.1", "rport": q, "new_raddr": "127.0.0.7", "new_rport": p})));
    // The request went out to the new address.
    expect(&evs, json!({"hook": "egress", "lport": client, "raddr": "127.0.0.1", "rport": q}));
    // One rule decided both the send and the reply.
    assert_eq!(rule_hits(&out, &rule), 2);
    for hook in ["sendmsg4", "recvmsg4"] {
        assert_eq!(hook_counts(&out, hook)["rewritten"].as_u64(), Some(1), "{hook}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. -- CMD

/// The transient cgroups tracekit `tk_pid` made (`tracekit-*-PID-N` below the mount).
fn transient_of(tk_pid: u32) -> Vec<PathBuf> {
    let suffix = format!("-{tk_pid}-");
    std::fs::read_dir(cgroup2_root())
        .expect("read the cgroup2 mount")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("tracekit-") && name.contains(&suffix)
        })
        .collect()
}

/// A fresh scratch directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cgroup-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

const CMD_BODY: &str = r#"
import os, sys, time
report, go = sys.argv[1], sys.argv[2]
own = [l[3:] for l in open('/proc/self/cgroup').read().splitlines() if l.startswith('0::')][0]
with open(report + '.tmp', 'w') as f:
    f.write('%d %s\n' % (os.getpid(), own))
os.rename(report + '.tmp', report)
deadline = time.time() + 10
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.01)
"#;

#[test]
fn cmd_runs_in_a_transient_cgroup_removed_after() {
    if !common::require_root("cgroup::cmd_runs_in_a_transient_cgroup_removed_after") {
        return;
    }
    let dir = scratch("cmd");
    let (report, go) = (dir.join("report"), dir.join("go"));
    // -v before `--` for tracekit; the `-v` Tracer appends goes to CMD's argv (ignored there).
    let t = Tracer::start(&[
        "cgroup",
        "--json",
        "-v",
        "--",
        python(),
        "-c",
        CMD_BODY,
        report.to_str().unwrap(),
        go.to_str().unwrap(),
    ]);
    let tk = t.child.id();
    let ids = t.ids.clone();
    assert!(eventually(10, || report.exists()), "CMD never reported its cgroup");
    let text = std::fs::read_to_string(&report).unwrap();
    let (pid, own) = text.trim().split_once(' ').expect("PID CGROUP");
    let path = cgroup2_root().join(own.trim_start_matches('/'));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("tracekit-python3-{tk}-")), "{name}");
    assert_eq!(path.parent(), Some(cgroup2_root().as_path()), "directly below the mount: {}", path.display());
    assert!(path.is_dir(), "{} exists while CMD runs", path.display());
    let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid), "CMD {pid} is in {}: {procs}", path.display());
    let shown = bpftool_cgroup(&path);
    assert!(shown.iter().any(|(_, t)| t == "cgroup_inet4_connect"), "attached there: {shown:?}");
    std::fs::write(&go, b"").unwrap();

    let out = t.wait(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(!path.exists(), "{} is removed after CMD exits", path.display());
    assert!(transient_of(tk).is_empty(), "{:?}", transient_of(tk));
    assert_nothing_left(&ids, &path, "the end of -- CMD");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cmd_exit_status_passes_through() {
    if !common::require_root("cgroup::cmd_exit_status_passes_through") {
        return;
    }
    for (script, code) in [("exit 7", 7), ("exit 0", 0), ("kill -9 $$", 128 + 9)] {
        let out = common::run(&["cgroup", "-q", "--deny", "sock:raw", "--", "sh", "-c", script]);
        assert_eq!(out.status.code(), Some(code), "`sh -c '{script}'`: {}", out.stderr);
        // The counters name the transient cgroup, which is gone.
        let line = out.stderr.lines().find(|l| l.starts_with("tracekit: cgroup /")).expect("counters");
        let path = line["tracekit: cgroup ".len()..].split(':').next().unwrap();
        assert!(path.contains("/tracekit-sh-"), "{line}");
        assert!(!Path::new(path).exists(), "{path} removed");
        assert!(out.stderr.contains("tracekit: rule 1 `deny sock:raw`: 0 calls"), "{}", out.stderr);
    }
}

const FORK_BODY: &str = r#"
import os, socket, sys
port, report = int(sys.argv[1]), sys.argv[2]
def note(what):
    with open(report, 'a') as f:
        f.write('%s %d %d\n' % (what, os.getpid(), os.getppid()))
child = os.fork()
if child == 0:
    s = socket.socket()
    s.settimeout(5)
    s.connect(('127.0.0.1', port))
    s.close()
    note('grandchild')
    os._exit(0)
os.waitpid(child, 0)
note('child')
"#;

#[test]
fn cmd_children_are_covered() {
    if !common::require_root("cgroup::cmd_children_are_covered") {
        return;
    }
    let listener = TcpListener::bind(local("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = scratch("fork");
    let report = dir.join("report");
    // sh runs python3 (and cannot exec it: `; exit`), python3 forks: its child is CMD's grandchild.
    let t = Tracer::start(&[
        "cgroup",
        "--json",
        "--hooks",
        "connect",
        "-v",
        "--",
        "sh",
        "-c",
        "\"$@\"; exit $?",
        "sh",
        python(),
        "-c",
        FORK_BODY,
        &port,
        report.to_str().unwrap(),
    ]);
    let tk = t.child.id();
    let ids = t.ids.clone();
    let out = t.wait(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let pids = |tag: &str| -> (u64, u64) {
        let l = text.lines().find(|l| l.starts_with(tag)).unwrap_or_else(|| panic!("{tag}: {text:?} {}", out.stderr));
        let v: Vec<u64> = l.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
        (v[0], v[1])
    };
    let (child, child_parent) = pids("child ");
    let (grandchild, grandchild_parent) = pids("grandchild ");
    assert_eq!(grandchild_parent, child);
    assert_ne!(child_parent, u64::from(tk), "python3 is sh's child, not tracekit's");
    let evs = out.events();
    expect(
        &evs,
        json!({"hook": "connect4", "pid": grandchild, "comm": "python3", "verdict": "allow", "raddr": "127.0.0.1",
               "rport": port.parse::<u64>().unwrap()}),
    );
    assert!(accepts(&listener));
    assert!(transient_of(tk).is_empty(), "{:?}", transient_of(tk));
    assert_released(&ids, "the end of -- CMD");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cmd_interrupted_removes_the_cgroup_and_the_command() {
    if !common::require_root("cgroup::cmd_interrupted_removes_the_cgroup_and_the_command") {
        return;
    }
    let t = Tracer::start(&[
        "cgroup",
        "--json",
        "--hooks",
        "dev",
        "-v",
        "--",
        python(),
        "-c",
        "import time; time.sleep(30)",
    ]);
    let tk = t.child.id();
    let ids = t.ids.clone();
    let dirs = transient_of(tk);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let cmd: u32 = eventually(5, || !std::fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap().trim().is_empty())
        .then(|| {
            std::fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap().lines().next().unwrap().parse().unwrap()
        })
        .expect("CMD in the cgroup");
    let started = Instant::now();
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(!dirs[0].exists(), "{} removed", dirs[0].display());
    assert!(!Path::new(&format!("/proc/{cmd}")).exists() || !alive(cmd), "CMD {cmd} ended with tracekit");
    assert_nothing_left(&ids, &dirs[0], "SIGINT with -- CMD");
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// 5. Nothing left behind; multi-attach; a cgroup removed under tracekit

const DEVNULL_BODY: &str = "open('/dev/null', 'r').close()\nout(done=True)";

#[test]
fn every_exit_leaves_nothing_attached() {
    if !common::require_root("cgroup::every_exit_leaves_nothing_attached") {
        return;
    }
    let cg = TestCgroup::new("exits");
    let path = cg.path().to_str().unwrap().to_owned();
    for exit in [Exit::Interrupt, Exit::Terminate, Exit::Duration, Exit::Count, Exit::ClosedPipe, Exit::Kill] {
        let mut args = vec!["cgroup", "--json", "--cgroup", &path, "--deny", "sock:raw"];
        match exit {
            Exit::Duration => args.extend(["-d", "0.5"]),
            Exit::Count => args.extend(["-n", "1"]),
            _ => {}
        }
        let mut t = Tracer::start_opts(&args, !matches!(exit, Exit::ClosedPipe));
        let ids = t.ids.clone();
        assert!(!ids.links.is_empty(), "{exit:?}: tracekit holds cgroup links");
        let shown = bpftool_cgroup(cg.path());
        assert!(shown.len() >= 15, "{exit:?}: every hook attached: {shown:?}");
        if matches!(exit, Exit::ClosedPipe) {
            drop(t.stdout_raw.take());
        }
        run_py(Some(&cg), DEVNULL_BODY, json!({}));
        exit.signal(&t);
        let out = t.wait(Duration::from_secs(10));
        exit.assert_status(&out, "cgroup");
        if matches!(exit, Exit::Count) {
            assert_eq!(out.events().len(), 1, "{exit:?}: {:?}", out.stdout);
            assert_eq!(out.events()[0]["hook"], "dev");
        }
        assert_nothing_left(&ids, cg.path(), &format!("{exit:?}"));
    }
}

/// `ExitStatus::signal` under a name that does not clash with `Tracer::signal`.
trait SignalCode {
    fn signal_code(&self) -> Option<i32>;
}

impl SignalCode for std::process::ExitStatus {
    fn signal_code(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

#[test]
fn two_instances_on_one_cgroup_both_see_the_call() {
    if !common::require_root("cgroup::two_instances_on_one_cgroup_both_see_the_call") {
        return;
    }
    let listener = TcpListener::bind(local("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cg = TestCgroup::new("multi");
    let abs = cg.path().to_str().unwrap().to_owned();
    let rel = cg.path().strip_prefix(cgroup2_root()).unwrap().to_str().unwrap().to_owned();
    let first = Tracer::start(&["cgroup", "--json", "--cgroup", &abs, "--hooks", "connect"]);
    let second = Tracer::start(&["cgroup", "--json", "--cgroup", &rel, "--hooks", "connect4"]);
    let shown = bpftool_cgroup(cg.path());
    let connect4 = shown.iter().filter(|(_, t)| t == "cgroup_inet4_connect").count();
    assert_eq!(connect4, 2, "both programs attached side by side: {shown:?}");
    let calls = json!({"calls": [["c", "tcp", 4, "127.0.0.1", port]]});
    let done = run_py(Some(&cg), CONNECT_BODY, calls);
    assert_eq!(done.get("c").as_i64(), Some(0));
    let want = of(done.pid, "connect4", json!({"verdict": "allow", "raddr": "127.0.0.1", "rport": port}));
    let first_ids = first.ids.clone();
    let a = first.stop();
    assert_eq!(a.status.code(), Some(0), "{}", a.stderr);
    assert_released(&first_ids, "the first instance");
    expect(&a.events(), want.clone());
    // The second still runs after the first detached.
    let shown = bpftool_cgroup(cg.path());
    assert_eq!(shown.iter().filter(|(_, t)| t.contains("connect")).count(), 1, "{shown:?}");
    let b = stop(&cg, second);
    expect(&b.events(), want);
    let hooks: Vec<Value> =
        b.json().into_iter().filter(|v| v["type"] == "hook_counts").map(|v| v["hook"].clone()).collect();
    assert_eq!(hooks, ["connect4"], "only the attached hook is counted");
}

#[test]
fn cgroup_removed_under_a_running_tracekit() {
    if !common::require_root("cgroup::cgroup_removed_under_a_running_tracekit") {
        return;
    }
    let cg = TestCgroup::new("rmdir");
    let mut t = attach(&cg, &["--deny", "sock:raw"]);
    let ids = t.ids.clone();
    // A workload moved in, seen, and moved out again (a cgroup must be empty to go).
    let body = "open('/dev/null').close()\nout(opened=True)\nsys.stdin.readline()";
    let mut w = Workload::start(Some(&cg), body, json!({}));
    assert_eq!(w.next()["opened"], true);
    std::fs::write(cgroup2_root().join("cgroup.procs"), w.pid.to_string()).expect("move the workload out");
    assert!(std::fs::read_to_string(cg.path().join("cgroup.procs")).unwrap().trim().is_empty());
    std::fs::remove_dir(cg.path()).expect("rmdir the cgroup tracekit is attached to");
    w.send("go");
    let done = w.finish();
    // README: its links went with the cgroup; tracekit says so and exits (0) by itself.
    let by_itself = eventually(5, || matches!(t.child.try_wait(), Ok(Some(_))));
    if !by_itself {
        t.signal(libc::SIGINT);
    }
    let out = t.wait(Duration::from_secs(10));
    assert!(by_itself, "still running 5 s after its cgroup was removed (SIGINT ended it): {}", out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let msg = format!("tracekit: cgroup {} was removed: its programs went with it", cg.path().display());
    assert!(out.stderr.contains(&msg), "{}", out.stderr);
    assert_eq!(rule_hits(&out, "deny sock:raw"), 0, "the counters are still printed");
    expect(&out.events(), of(done.pid, "dev", json!({"major": 1, "minor": 3, "access": "r"})));
    assert!(out.json().iter().any(|v| v["type"] == "summary"), "{:?}", out.stdout);
    assert_nothing_left(&ids, cg.path(), "after rmdir");
}

/// SIGKILL with -- CMD: the links go with tracekit's fds; the transient cgroup stays while CMD
/// (which outlives it) runs, and the next `tracekit cgroup -- CMD` removes it once empty.
#[test]
fn cmd_killed_tracekit_leaves_no_program_and_its_cgroup_is_swept() {
    if !common::require_root("cgroup::cmd_killed_tracekit_leaves_no_program_and_its_cgroup_is_swept") {
        return;
    }
    let dir = scratch("kill");
    let (report, go) = (dir.join("report"), dir.join("go"));
    let mut t = Tracer::start(&[
        "cgroup",
        "--json",
        "-v",
        "--",
        python(),
        "-c",
        CMD_BODY,
        report.to_str().unwrap(),
        go.to_str().unwrap(),
    ]);
    let tk = t.child.id();
    let ids = t.ids.clone();
    assert!(eventually(10, || report.exists()), "CMD never reported its cgroup");
    let transient = transient_of(tk);
    assert_eq!(transient.len(), 1, "{transient:?}");
    t.signal(libc::SIGKILL);
    assert!(eventually(10, || matches!(t.child.try_wait(), Ok(Some(_)))), "SIGKILL ends tracekit");
    assert_nothing_left(&ids, &transient[0], "SIGKILL with -- CMD");
    // CMD dies with tracekit (PR_SET_PDEATHSIG): it never runs on unconfined. (A parallel
    // test's run may already have swept the emptied cgroup.)
    let out = t.wait(Duration::from_secs(10));
    assert_eq!(out.status.signal_code(), Some(libc::SIGKILL));
    assert!(
        eventually(10, || !transient[0].exists()
            || std::fs::read_to_string(transient[0].join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty())),
        "CMD ended with tracekit"
    );
    let next = common::run(&["cgroup", "-q", "--deny", "sock:raw", "--", "true"]);
    assert_eq!(next.status.code(), Some(0), "{}", next.stderr);
    // This run or one of a parallel test removed it (and said so).
    assert!(!transient[0].exists(), "{} swept: {}", transient[0].display(), next.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cmd_leftovers_end_with_it() {
    if !common::require_root("cgroup::cmd_leftovers_end_with_it") {
        return;
    }
    // A daemon CMD leaves behind would otherwise run on, moved out of the cgroup, unconfined.
    let dir = scratch("leftover");
    let pidfile = dir.join("pid");
    let script = format!("sleep 60 & echo $! > {}; exit 4", pidfile.display());
    let out = common::run(&["cgroup", "-q", "--deny", "sock:raw", "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(4), "{}", out.stderr);
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(
        eventually(5, || !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))),
        "the background sleep {pid} ended with CMD"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ways around a rule that the kernel would otherwise allow, each closed in the kernel: the
/// unspecified address (the kernel sends it to loopback after the hook), a UDP connect under a
/// sendmsg rule, a dual-stack `[::]` bind under an IPv4 bind rule, a v4-mapped connect.
#[test]
fn rules_hold_against_the_usual_ways_around() {
    if !common::require_root("cgroup::rules_hold_against_the_usual_ways_around") {
        return;
    }
    let low = free_low_port();
    let body = r#"
def tcp(fam, host, port):
    return errno_of(socket.socket(fam, socket.SOCK_STREAM).connect, (host, port))
out(
    zero4=tcp(socket.AF_INET, '0.0.0.0', 9),
    zero6=tcp(socket.AF_INET6, '::', 9),
    mapped=tcp(socket.AF_INET6, '::ffff:127.0.0.1', 9),
    udp_connect=errno_of(socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect, ('127.0.0.53', 53)),
    dual_bind=errno_of(socket.socket(socket.AF_INET6).bind, ('::', A['low'])),
)
"#;
    let rules = ["--deny", "connect:127.0.0.1:9", "--deny", "connect6:[::1]:9", "--deny", "sendmsg:127.0.0.53:53"];
    let low_rule = format!("bind4:{low}");
    let mut args = rules.to_vec();
    args.extend(["--deny", &low_rule]);
    let (done, out) = deny_run("around", &args, body, json!({"low": low}));
    for key in ["zero4", "zero6", "mapped", "udp_connect", "dual_bind"] {
        assert_eq!(done.get(key).as_i64(), Some(EPERM), "{key}: {:?}", done.lines);
    }
    assert_eq!(rule_hits(&out, "deny connect:127.0.0.1:9"), 2, "0.0.0.0 and ::ffff:127.0.0.1");
    assert_eq!(rule_hits(&out, "deny connect6:[::1]:9"), 1, "::");
    assert_eq!(rule_hits(&out, "deny sendmsg:127.0.0.53:53"), 1, "the UDP connect");
    assert_eq!(rule_hits(&out, &format!("deny {low_rule}")), 1, "the [::] bind");
    let evs = out.events();
    expect(&evs, of(done.pid, "connect4", json!({"verdict": "deny", "raddr": "0.0.0.0", "rport": 9})));
    expect(&evs, of(done.pid, "connect4", json!({"verdict": "deny", "proto": "udp", "raddr": "127.0.0.53"})));
    expect(&evs, of(done.pid, "bind6", json!({"verdict": "deny", "laddr": "::", "lport": low})));
}

/// The most rules, every hook observed: loads on every kernel of the matrix (the verifier walks
/// each rule loop as many times as there are rules).
#[test]
fn the_most_rules_load_with_every_hook() {
    if !common::require_root("cgroup::the_most_rules_load_with_every_hook") {
        return;
    }
    let rules: Vec<String> = (0..256)
        .map(|i| match i % 4 {
            0 => format!("--deny=connect:10.{}.0.0/16:443", i / 4),
            1 => format!("--deny=bind:[fd00:{i:x}::]/32:22"),
            2 => format!("--deny=egress:10.{}.0.0/16:53", i / 4),
            _ => format!("--deny=sendmsg:10.{}.0.1:53", i / 4),
        })
        .collect();
    let mut args = vec!["cgroup", "-v", "--"];
    args.splice(2..2, rules.iter().map(String::as_str));
    args.extend(["sh", "-c", "exec 3<>/dev/null"]);
    let out = common::run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("tracekit: rule 256 `deny sendmsg:10.63.0.1:53`: 0 calls"), "{}", out.stderr);
    let load = out.stderr.lines().find(|l| l.starts_with("tracekit: load: ")).expect("the load time with -v");
    eprintln!("256 rules, every hook: {load}");
    // One more is refused before anything loads.
    let mut more = rules.clone();
    more.push("--deny=sock:raw".to_owned());
    let mut args = vec!["cgroup"];
    args.extend(more.iter().map(String::as_str));
    args.extend(["--", "true"]);
    let out = common::run(&args);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("at most 256 rules"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input that cannot be made here (the rest is in tests/cases/cgroup.tk)

/// "No cgroup2 mounted", made in a private mount namespace (`unshare -m --propagation
/// private`) where the cgroup2 mount is unmounted: the host's mount is not touched.
#[test]
fn no_cgroup2_mounted() {
    if !common::require_root("cgroup::no_cgroup2_mounted") {
        return;
    }
    let root = cgroup2_root();
    let script = r#"umount "$1" || exit 99; grep -q ' cgroup2 ' /proc/mounts && exit 98; "$2" cgroup -- true; echo "rc=$?" >&2; "$2" cgroup --cgroup "$1" -q --deny sock:raw"#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&root)
        .arg(common::BIN)
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if matches!(out.status.code(), Some(99 | 98)) {
        common::skip("cgroup::no_cgroup2_mounted", &format!("cannot hide cgroup2 in a mount namespace: {stderr}"));
        return;
    }
    assert!(root.join("cgroup.procs").exists(), "the host's cgroup2 is still mounted");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rc=2\n"), "{stderr}");
    let msg = "error: no cgroup2 file system is mounted (none in /proc/mounts)\nhint: mount it, e.g. `mount -t cgroup2";
    assert_eq!(stderr.matches(msg).count(), 2, "-- CMD and --cgroup both say so: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
