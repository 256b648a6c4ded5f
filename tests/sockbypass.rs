//! `tracekit sockmap bypass` end to end, as root, in network namespaces this file creates: two
//! processes (a Python listener and the child it forks) move 16 MiB over 127.0.0.1 and ::1 in
//! the namespace; with tracekit the bytes arrive identical while the namespace's `lo` carries
//! only the handshake, FIN and ACK packets, without it `lo` carries more than the payload.
//! The events name both ends and the bytes. Connections made before tracekit started keep
//! working, and connections keep working after every way tracekit ends, with nothing of it
//! left loaded once they close; a transfer whose tracekit ends in the middle (Ctrl-C, SIGKILL)
//! loses nothing. The bad-input cases are in
//! tests/cases/sockbypass.tk.

mod common;

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::cgroup::TestCgroup;
use common::net::Netns;
use common::{Exit, Finished, Tracer, assert_released, require_root};
use serde_json::Value;

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

/// HOST N PAUSE REPORT [GATE]: listens on HOST (port $PAIR_PORT, else any), forks a child that connects and sends N bytes
/// of a fixed pattern (with GATE: half, then waits until the file GATE exists, then the rest),
/// reads them (sleeping PAUSE seconds after each read of up to 64 KiB; REPORT.mid appears
/// after the first MiB) and writes what it received and both SHA-256 sums to REPORT.
/// (tracekit appends `-v` after CMD's arguments: ignored.)
const PAIR: &str = r#"
import hashlib, json, os, socket, sys, time
host, n, pause, report = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
gate = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-v" else None
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
l = socket.socket(fam)
l.bind((host, int(os.environ.get("PAIR_PORT", "0"))))
l.listen()
port = l.getsockname()[1]
pid = os.fork()
if pid == 0:
    c = socket.create_connection((host, port))
    lport = c.getsockname()[1]
    h = hashlib.sha256()
    sent, i = 0, 0
    while sent < n:
        if gate and sent >= n // 2:
            open(report + ".half", "w").close()
            while not os.path.exists(gate):
                time.sleep(0.01)
            gate = None
        chunk = (bytes([(i * 7 + j) & 255 for j in range(256)]) * 256)[:min(n - sent, 65536)]
        c.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
        i += 1
    c.close()
    with open(report + ".w", "w") as f:
        json.dump({"pid": os.getpid(), "lport": lport, "sha": h.hexdigest()}, f)
    os._exit(0)
s, peer = l.accept()
h = hashlib.sha256()
got = 0
while True:
    d = s.recv(65536)
    if not d:
        break
    h.update(d)
    got += len(d)
    if got >= (1 << 20) and not os.path.exists(report + ".mid"):
        open(report + ".mid", "w").close()
    if pause:
        time.sleep(pause)
os.waitpid(pid, 0)
with open(report + ".w") as f:
    w = json.load(f)
with open(report, "w") as f:
    json.dump({"received": got, "sha_sent": w["sha"], "sha_received": h.hexdigest(), "server_pid": os.getpid(),
               "client_pid": w["pid"], "client_port": w["lport"], "port": port}, f)
"#;

/// The argument list of one PAIR run in `ns`.
fn pair_args(ns: &Netns, host: &str, n: usize, pause: f64, report: &Path, gate: Option<&Path>) -> Vec<String> {
    let mut a = vec!["ip", "netns", "exec", ns.name(), python(), "-c", PAIR, host]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    a.extend([n.to_string(), pause.to_string(), report.to_str().unwrap().to_owned()]);
    if let Some(g) = gate {
        a.push(g.to_str().unwrap().to_owned());
    }
    a
}

/// A PAIR run started by the test itself, in the cgroup `cgroup` (None: where the test runs).
fn spawn_pair(args: &[String], cgroup: Option<&Path>) -> Child {
    spawn_pair_on(args, cgroup, 0)
}

/// Like `spawn_pair`, listening on `port` (0: any).
fn spawn_pair_on(args: &[String], cgroup: Option<&Path>, port: u16) -> Child {
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]).stdin(Stdio::null()).env("PAIR_PORT", port.to_string());
    if let Some(cg) = cgroup {
        let procs = CString::new(cg.join("cgroup.procs").to_str().unwrap()).unwrap();
        // SAFETY: between fork and exec only async-signal-safe calls: open, write, close on a
        // path allocated before the fork. Writing "0" moves the writing process.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
    }
    cmd.spawn().expect("start python3")
}

/// Waits for a PAIR run and returns its report.
fn finish_pair(mut child: Child, report: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "the transfer script failed: {s}");
            break;
        }
        assert!(Instant::now() < deadline, "the transfer did not end within 120 s");
        thread::sleep(Duration::from_millis(20));
    }
    read_report(report)
}

fn read_report(report: &Path) -> Value {
    let text = std::fs::read_to_string(report).unwrap_or_else(|e| panic!("{}: {e}", report.display()));
    serde_json::from_str(&text).expect("JSON report")
}

#[track_caller]
fn assert_identical(r: &Value, n: usize, what: &str) {
    assert_eq!(r["received"].as_u64(), Some(n as u64), "{what}: bytes received: {r}");
    assert_eq!(r["sha_received"], r["sha_sent"], "{what}: the bytes differ: {r}");
}

/// Bytes `lo` of `ns` sent and received so far (its own sysfs: `ip netns exec` mounts it).
fn lo_bytes(ns: &Netns) -> u64 {
    ["tx_bytes", "rx_bytes"]
        .iter()
        .map(|f| ns.exec_ok(&["cat", &format!("/sys/class/net/lo/statistics/{f}")]).trim().parse::<u64>().unwrap())
        .sum()
}

fn wait_file(path: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

fn num(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no number `{field}` in {v}"))
}

fn counts(out: &Finished) -> Value {
    out.json().into_iter().find(|v| v["type"] == "sockbypass_counts").unwrap_or_else(|| panic!("{:?}", out.stdout))
}

const N: usize = 16 << 20;

#[test]
fn transfers_skip_loopback_over_ipv4_and_ipv6() {
    if !require_root("sockbypass::transfers_skip_loopback_over_ipv4_and_ipv6") {
        return;
    }
    let ns = Netns::new("bp1");
    let dir = tempfile::tempdir().unwrap();
    for (i, host) in ["127.0.0.1", "::1"].into_iter().enumerate() {
        // Without tracekit: every byte crosses lo.
        let report = dir.path().join(format!("plain{i}"));
        let before = lo_bytes(&ns);
        let r = finish_pair(spawn_pair(&pair_args(&ns, host, N, 0.0, &report, None), None), &report);
        assert_identical(&r, N, host);
        let plain = lo_bytes(&ns) - before;
        assert!(plain > N as u64, "{host}: lo carried {plain} bytes of a {N} B transfer without tracekit");

        // With tracekit, in CMD's cgroup.
        let report = dir.path().join(format!("bypass{i}"));
        let before = lo_bytes(&ns);
        // `-v` before CMD: `Tracer::start` appends its own after CMD.
        let mut args = vec!["sockmap".to_owned(), "bypass".into(), "-v".into(), "--json".into(), "--".into()];
        args.extend(pair_args(&ns, host, N, 0.0, &report, None));
        let t = Tracer::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let ids = t.ids.clone();
        let out = t.wait(Duration::from_secs(120));
        assert_eq!(out.status.code(), Some(0), "{host}: {}", out.stderr);
        let r = read_report(&report);
        assert_identical(&r, N, host);
        let bypassed = lo_bytes(&ns) - before;
        assert!(
            bypassed < N as u64 / 100,
            "{host}: lo carried {bypassed} bytes of a {N} B transfer (without tracekit: {plain})"
        );

        let events = out.events();
        let pair: Vec<&Value> = events.iter().filter(|e| e["event"] == "bypassed").collect();
        assert_eq!(pair.len(), 1, "{host}: one connection, one pair: {events:?}");
        let p = pair[0];
        let (server, client) = (num(&r, "server_pid"), num(&r, "client_pid"));
        let (port, cport) = (num(&r, "port"), num(&r, "client_port"));
        // The second end in names both: which end completes its handshake last is the kernel's.
        let ends = [(num(p, "pid"), num(p, "lport")), (num(p, "peer_pid"), num(p, "rport"))];
        assert!(
            ends == [(server, port), (client, cport)] || ends == [(client, cport), (server, port)],
            "{host}: server {server}:{port}, client {client}:{cport}: {p}"
        );
        assert_eq!(p["laddr"], host, "{p}");
        assert_eq!(p["raddr"], host, "{p}");
        assert_eq!(p["comm"], "python3", "{p}");
        assert_eq!(p["peer_comm"], "python3", "{p}");
        let closed: Vec<&Value> = events.iter().filter(|e| e["event"] == "closed").collect();
        assert_eq!(closed.len(), 2, "{host}: both ends close: {events:?}");
        let sent = closed.iter().find(|e| num(e, "lport") == cport).unwrap_or_else(|| panic!("{closed:?}"));
        assert_eq!(num(sent, "bytes"), N as u64, "{host}: the client's bytes: {sent}");
        assert_eq!(num(sent, "pid"), client, "{sent}");
        let recv = closed.iter().find(|e| num(e, "lport") == port).unwrap_or_else(|| panic!("{closed:?}"));
        assert_eq!(num(recv, "bytes"), 0, "{host}: the server sent nothing: {recv}");
        let c = counts(&out);
        assert_eq!((num(&c, "sockets"), num(&c, "pairs"), num(&c, "closed")), (2, 1, 2), "{c}");
        assert_eq!(num(&c, "bytes"), N as u64, "{c}");
        assert_released(&ids, host);
    }
}

#[test]
fn connections_work_before_during_and_after_every_exit() {
    if !require_root("sockbypass::connections_work_before_during_and_after_every_exit") {
        return;
    }
    let ns = Netns::new("bp2");
    let cg = TestCgroup::new("bp2");
    let dir = tempfile::tempdir().unwrap();
    let cgroup = cg.path().to_str().unwrap().to_owned();
    const M: usize = 2 << 20;
    for exit in [Exit::Interrupt, Exit::Terminate, Exit::Duration, Exit::Count, Exit::ClosedPipe, Exit::Kill] {
        let how = format!("{exit:?}");
        // A connection of the cgroup made before tracekit starts, half sent.
        let (early, gate) = (dir.path().join(format!("early-{how}")), dir.path().join(format!("gate-{how}")));
        let early_run = spawn_pair(&pair_args(&ns, "127.0.0.1", M, 0.0, &early, Some(&gate)), Some(cg.path()));
        wait_file(&PathBuf::from(format!("{}.half", early.display())), 30);

        let mut args = vec!["sockmap", "bypass", "--json", "--cgroup", &cgroup];
        match exit {
            Exit::Duration => args.extend(["-d", "1"]),
            Exit::Count => args.extend(["-n", "1"]),
            _ => {}
        }
        let mut t = Tracer::start_opts(&args, !matches!(exit, Exit::ClosedPipe));
        let ids = t.ids.clone();
        assert!(ids.progs.len() >= 2, "{how}: {ids:?}");
        if matches!(exit, Exit::ClosedPipe) {
            drop(t.stdout_raw.take());
        }
        std::fs::write(&gate, "").unwrap();
        assert_identical(&finish_pair(early_run, &early), M, &format!("{how}: a connection from before"));
        if !matches!(exit, Exit::Duration) {
            // One bypassed connection (its `bypassed` event ends the --count and closed-pipe runs).
            let during = dir.path().join(format!("during-{how}"));
            let r =
                finish_pair(spawn_pair(&pair_args(&ns, "127.0.0.1", M, 0.0, &during, None), Some(cg.path())), &during);
            assert_identical(&r, M, &format!("{how}: during"));
            // The same transfer outside the cgroup, meanwhile: TCP's path, across lo.
            let outside = dir.path().join(format!("outside-{how}"));
            let before = lo_bytes(&ns);
            let r = finish_pair(spawn_pair(&pair_args(&ns, "127.0.0.1", M, 0.0, &outside, None), None), &outside);
            assert_identical(&r, M, &format!("{how}: outside the cgroup"));
            assert!(lo_bytes(&ns) - before > M as u64, "{how}: a connection outside the cgroup was bypassed");
        }
        let out = exit.end(t, Duration::from_secs(20), &how);
        exit.the_counted_event(&out, "bypassed", &how);
        assert_released(&ids, &how);
        let after = dir.path().join(format!("after-{how}"));
        let before = lo_bytes(&ns);
        let r = finish_pair(spawn_pair(&pair_args(&ns, "127.0.0.1", M, 0.0, &after, None), Some(cg.path())), &after);
        assert_identical(&r, M, &format!("{how}: after"));
        assert!(lo_bytes(&ns) - before > M as u64, "{how}: nothing bypasses loopback any more");
    }
}

/// A writer far ahead of a slow reader: half the data waits in the reader's psock when tracekit
/// ends. The kernel keeps the programs and the sockhash (each psock holds them) until the
/// connection closes, so nothing is lost; after Ctrl-C the second half takes TCP's path, after
/// SIGKILL it is still bypassed. Once the connection is closed nothing of tracekit is left.
fn ended_mid_transfer(exit: Exit, tag: &str) {
    let ns = Netns::new(tag);
    let cg = TestCgroup::new(tag);
    let dir = tempfile::tempdir().unwrap();
    let cgroup = cg.path().to_str().unwrap().to_owned();
    const M: usize = 8 << 20;
    let t = Tracer::start(&["sockmap", "bypass", "--json", "--cgroup", &cgroup]);
    let ids = t.ids.clone();
    let (report, gate) = (dir.path().join("slow"), dir.path().join("gate"));
    let run = spawn_pair(&pair_args(&ns, "127.0.0.1", M, 0.02, &report, Some(&gate)), Some(cg.path()));
    wait_file(&PathBuf::from(format!("{}.half", report.display())), 60);
    wait_file(&PathBuf::from(format!("{}.mid", report.display())), 60);
    exit.signal(&t);
    let out = t.wait(Duration::from_secs(20));
    exit.assert_status(&out, &format!("{exit:?}"));
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    // The reader has not read everything yet: the connection holds the programs.
    assert!(!ids.still_loaded().progs.is_empty(), "{exit:?}: the programs went with unread data");
    let before = lo_bytes(&ns);
    std::fs::write(&gate, "").unwrap();
    let r = finish_pair(run, &report);
    assert_identical(&r, M, &format!("{exit:?} in the middle"));
    let lo = lo_bytes(&ns) - before;
    if matches!(exit, Exit::Kill) {
        assert!(lo < M as u64 / 100, "after SIGKILL the connection stays bypassed: lo carried {lo} B");
    } else {
        assert!(lo > M as u64 / 2, "after Ctrl-C the second half takes TCP's path: lo carried {lo} B");
        let c = counts(&out);
        assert_eq!(num(&c, "bytes"), M as u64 / 2, "the first half was redirected: {c}");
        assert!(out.stderr.contains("still open"), "{}", out.stderr);
    }
    assert_released(&ids, &format!("{exit:?}, once the connection closed"));
}

#[test]
fn interrupted_mid_transfer_loses_nothing() {
    if !require_root("sockbypass::interrupted_mid_transfer_loses_nothing") {
        return;
    }
    ended_mid_transfer(Exit::Interrupt, "bp3");
}

#[test]
fn killed_mid_transfer_loses_nothing() {
    if !require_root("sockbypass::killed_mid_transfer_loses_nothing") {
        return;
    }
    ended_mid_transfer(Exit::Kill, "bp4");
}

#[test]
fn only_the_given_ports_are_bypassed() {
    if !require_root("sockbypass::only_the_given_ports_are_bypassed") {
        return;
    }
    let ns = Netns::new("bp5");
    let cg = TestCgroup::new("bp5");
    let dir = tempfile::tempdir().unwrap();
    let cgroup = cg.path().to_str().unwrap().to_owned();
    const M: usize = 2 << 20;
    const PORT: u16 = 7777;
    let t = Tracer::start(&["sockmap", "bypass", "--json", "--cgroup", &cgroup, "--port", "80,7777"]);
    let (kept, other) = (dir.path().join("kept"), dir.path().join("other"));
    let before = lo_bytes(&ns);
    let r = finish_pair(spawn_pair_on(&pair_args(&ns, "127.0.0.1", M, 0.0, &kept, None), Some(cg.path()), PORT), &kept);
    assert_identical(&r, M, "port 7777");
    let lo = lo_bytes(&ns) - before;
    assert!(lo < M as u64 / 100, "port 7777 is bypassed: lo carried {lo} B");
    let before = lo_bytes(&ns);
    let r = finish_pair(spawn_pair_on(&pair_args(&ns, "127.0.0.1", M, 0.0, &other, None), Some(cg.path()), 0), &other);
    assert_identical(&r, M, "another port");
    let lo = lo_bytes(&ns) - before;
    assert!(lo > M as u64, "another port keeps TCP's path: lo carried {lo} B");
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let c = counts(&out);
    assert_eq!((num(&c, "sockets"), num(&c, "pairs"), num(&c, "bytes")), (2, 1, M as u64), "{c}");
    let events = out.events();
    assert!(events.iter().all(|e| e["lport"] == u64::from(PORT) || e["rport"] == u64::from(PORT)), "{events:?}");
}

/// One end in the cgroup, the other outside: the sk_msg program runs for the inside end, finds
/// no peer and returns SK_PASS without a target, which is TCP's path (skmsg.c,
/// sk_psock_map_verd). Every byte arrives, across lo.
#[test]
fn a_peer_outside_the_cgroup_keeps_tcps_path() {
    if !require_root("sockbypass::a_peer_outside_the_cgroup_keeps_tcps_path") {
        return;
    }
    let ns = Netns::new("bp6");
    let cg = TestCgroup::new("bp6");
    let cgroup = cg.path().to_str().unwrap().to_owned();
    const CLIENT: &str = "import socket, sys\nc = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
        c.sendall(bytes(range(256)) * 4096)\nc.close()\n";
    let listener = ns.run_in(|| std::net::TcpListener::bind("127.0.0.1:0")).expect("listen");
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    let t = Tracer::start(&["sockmap", "bypass", "--json", "--cgroup", &cgroup]);
    let before = lo_bytes(&ns);
    let args: Vec<String> = ["ip", "netns", "exec", ns.name(), python(), "-c", CLIENT, &port.to_string()]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let status = spawn_pair(&args, Some(cg.path())).wait().unwrap();
    assert!(status.success(), "the client: {status}");
    let got = server.join().unwrap();
    let want: Vec<u8> = (0..4096).flat_map(|_| 0..=255u8).collect();
    assert!(got == want, "{} of {} bytes, or different ones", got.len(), want.len());
    assert!(lo_bytes(&ns) - before > want.len() as u64, "TCP's path: across lo");
    let out = t.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let c = counts(&out);
    assert_eq!((num(&c, "sockets"), num(&c, "pairs"), num(&c, "bytes")), (1, 0, 0), "{c}");
    assert!(num(&c, "passed") > 0, "the sk_msg program ran and passed: {c}");
}
