//! The socket tools' rows (issue #15): `tracekit sockmap echo` next to a user-space echo server
//! and socat; `tracekit sklookup`'s cost to a listener's connection rate; and, once those
//! commands exist, `tracekit sockmap proxy` next to a user-space proxy and socat, and
//! `tracekit sockmap bypass` next to plain loopback TCP.
//!
//! Everything runs on loopback in a network namespace of our own (`tkb-sm-PID`, deleted on drop
//! and, when a bench was killed, at the next start). Every server and proxy is a process of its
//! own started inside it: tracekit, this binary in a hidden mode (`__sm echo|proxy`, one thread
//! per connection, 64 KiB buffers, read/write) or `socat`. The client is the same code for all
//! of them, threads of the bench inside the namespace:
//! - *stream*: one connection, a writer thread sending a fixed total in 64 KiB or 1 MiB writes
//!   and a reader thread reading the echo with a buffer of the same size (a sample of its reads
//!   is checked byte for byte); MB/s = bytes sent ÷ time to the last byte echoed (10⁶ B);
//! - *ping-pong*: one connection (TCP_NODELAY), 64-byte messages, each written and read back
//!   (compared) before the next, timed one by one after a warm-up: p50 and p99;
//! - *CPU per GB*: the machine's busy time during the two streams (/proc/stat user + system +
//!   irq + softirq: sockmap's work runs in softirq and kworkers and is charged to no process of
//!   ours, so no per-process figure would see it; `nice` is left out, so niced builds of other
//!   users do not count, but their system time does) ÷ GB sent (each byte also comes back).
//!
//! Servers alternate within a round and the order rotates from round to round (A/B/C, B/C/A,
//! ...); rows give medians over the rounds. tracekit runs in a child cgroup of its own
//! (`TransientCgroup`), so that its sockops program sees only its own sockets and not the
//! client's or the other servers'.
//!
//! sk_lookup: a listener of the bench on 127.0.0.1:8000 in the namespace, an accept thread, a
//! client thread making N connections one after another, each aborted (SO_LINGER 0: no
//! TIME_WAIT pile-up; the same packets for every connection), connections per second; with no
//! program, with `tracekit sklookup` steering port 8000 itself to that listener (`--force`:
//! the fair comparison, the same port and socket, the program's lookup replacing the
//! kernel's), steering 8001 to it (clients connect to 8001: the usual use), and steering 8001
//! while clients connect to 8000 (the program runs and lets the lookup go on: its cost to a
//! namespace's other ports). tracekit's counters must show one hit per connection steered.
//! A run during which a SYN was dropped at a full accept queue is run again, as in cgroup.rs.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tracekit::runtime::attach::TransientCgroup;
use tracekit::runtime::kernel::cgroup2_mount;

use crate::median;

const NS_PREFIX: &str = "tkb-sm-";
const CG_HINT: &str = "tkbsm";
/// Read and write timeout of every client socket: a server that stops answering ends the
/// measurement with an error instead of hanging the bench.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Buffer of the user-space echo server and proxy.
const SERVER_BUF: usize = 64 << 10;
const MSG: usize = 64;

// ---------------------------------------------------------------- the namespace

/// A network namespace with only `lo` up; deleted on drop.
pub(crate) struct Ns {
    name: String,
}

fn del_ns(ns: &str) {
    let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
}

impl Ns {
    fn new() -> Ns {
        // namespaces of a bench that was killed: no destructor ran
        for e in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(NS_PREFIX)
                && pid.parse::<u32>().is_ok()
                && !Path::new("/proc").join(pid).exists()
            {
                eprintln!("bench: sockmap: deleting namespace {name}, left by an earlier run");
                del_ns(&name);
            }
        }
        let ns = Ns { name: format!("{NS_PREFIX}{}", std::process::id()) };
        del_ns(&ns.name);
        crate::net::ip(&["netns", "add", &ns.name]);
        crate::net::ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread inside the namespace and waits for it.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        crate::net::Pair::in_ns(&self.name, f).join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        del_ns(&self.name);
    }
}

/// Spawns `c` inside namespace `ns` (setns before exec), in cgroup `cg` when given (it moves
/// itself there before exec, so that the sockets it makes belong to it); it dies with the bench.
pub(crate) fn spawn_in(ns: &str, cg: Option<&Path>, c: &mut Command) -> io::Result<Child> {
    let nsf = File::open(format!("/run/netns/{ns}"))?;
    let fd = nsf.as_raw_fd();
    let procs = cg.map(|p| CString::new(p.join("cgroup.procs").as_os_str().as_bytes()).expect("no NUL in a path"));
    crate::cgroup::die_with_parent(c, libc::SIGTERM);
    // SAFETY: open, write, close and setns are async-signal-safe; the path was allocated before
    // the fork and the namespace fd stays open in the parent until spawn returns.
    unsafe {
        c.pre_exec(move || {
            if let Some(p) = &procs {
                let f = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if f < 0 {
                    return Err(io::Error::last_os_error());
                }
                let w = libc::write(f, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(f);
                if w != 1 {
                    return Err(err);
                }
            }
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = c.spawn();
    drop(nsf);
    child
}

/// Whether something listens on `port` in the namespace of `pid` (its /proc/PID/net).
pub(crate) fn listening(pid: u32, port: u16) -> bool {
    let port = format!(":{port:04X} ");
    ["tcp", "tcp6"].iter().any(|f| {
        fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default().lines().any(|l| {
            l.split_whitespace().nth(1).is_some_and(|a| format!("{a} ").ends_with(&port)) && l.contains(" 0A ")
        })
    })
}

/// Busy seconds of the whole machine: user + system + irq + softirq of /proc/stat (not nice:
/// the other users of this machine build with `nice -n 19`).
fn busy_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 2, 5, 6].iter().map(|&i| f.get(i).copied().unwrap_or(0)).sum::<u64>();
    // SAFETY: sysconf has no preconditions.
    busy as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------- the client (same for all)

#[derive(Clone, Copy)]
struct Sizes {
    /// Bytes each stream sends (a multiple of 1 MiB).
    total: u64,
    warm: usize,
    pings: usize,
}

const CHUNKS: [usize; 2] = [64 << 10, 1 << 20];

fn connect(port: u16) -> Result<TcpStream, String> {
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(|e| format!("connect to {to}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    Ok(s)
}

/// The stream's byte at offset `at`: every write sends the same `chunk`-byte buffer.
fn expected(at: u64, chunk: usize) -> u8 {
    ((at % chunk as u64) % 251) as u8
}

/// One stream of `total` bytes in `chunk`-byte writes: (seconds, machine busy seconds).
fn stream(port: u16, chunk: usize, total: u64) -> Result<(f64, f64), String> {
    let c = connect(port)?;
    let mut r = c.try_clone().map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..chunk as u64).map(|i| expected(i, chunk)).collect();
    let busy0 = busy_seconds();
    let start = Instant::now();
    let reader = thread::spawn(move || -> Result<(), String> {
        let mut buf = vec![0u8; chunk];
        let (mut got, mut reads) = (0u64, 0u64);
        while got < total {
            let n = r.read(&mut buf).map_err(|e| format!("reading the echo after {got} of {total} B: {e}"))?;
            if n == 0 {
                return Err(format!("the server closed after {got} of {total} B"));
            }
            // one read in 64 checked byte for byte: the client's cost stays small and equal
            if reads % 64 == 0
                && let Some(k) = (0..n).find(|&k| buf[k] != expected(got + k as u64, chunk))
            {
                return Err(format!(
                    "byte {} came back as {:#x}, not {:#x}",
                    got + k as u64,
                    buf[k],
                    expected(got + k as u64, chunk)
                ));
            }
            got += n as u64;
            reads += 1;
        }
        Ok(())
    });
    let mut w = c;
    let mut sent = 0u64;
    let mut werr = None;
    while sent < total {
        if let Err(e) = w.write_all(&data) {
            werr = Some(format!("writing after {sent} of {total} B: {e}"));
            // the reader ends by its timeout or at the server's close
            let _ = w.shutdown(Shutdown::Both);
            break;
        }
        sent += chunk as u64;
    }
    let read = reader.join().unwrap_or_else(|_| Err("the reader panicked".into()));
    let secs = start.elapsed().as_secs_f64();
    let busy = busy_seconds() - busy0;
    if let Some(e) = werr {
        return Err(e);
    }
    read?;
    Ok((secs, busy))
}

/// 64-byte ping-pong: microseconds of each round trip after the warm-up.
fn ping_pong(port: u16, warm: usize, n: usize) -> Result<Vec<f64>, String> {
    let mut c = connect(port)?;
    let (mut msg, mut back) = ([0x5au8; MSG], [0u8; MSG]);
    let mut v = Vec::with_capacity(n);
    for i in 0..warm + n {
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let t = Instant::now();
        c.write_all(&msg).map_err(|e| format!("ping {i}: {e}"))?;
        c.read_exact(&mut back).map_err(|e| format!("pong {i}: {e}"))?;
        let dt = t.elapsed();
        if back != msg {
            return Err(format!("round trip {i}: the 64 bytes came back different"));
        }
        if i >= warm {
            v.push(dt.as_secs_f64() * 1e6);
        }
    }
    Ok(v)
}

/// One server's figures of one round.
#[derive(Clone, Copy, Default)]
struct Sample {
    /// MB/s (10⁶ B) of the 64 KiB and the 1 MiB stream.
    mbs: [f64; 2],
    /// Machine busy seconds per GB (10⁹ B) sent, for each stream.
    cpu_s_per_gb: [f64; 2],
    p50_us: f64,
    p99_us: f64,
    /// Bytes the client sent (streams and pings): what the server must have echoed.
    sent: u64,
}

impl Sample {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mbs": self.mbs, "cpu_s_per_gb": self.cpu_s_per_gb, "p50_us": self.p50_us, "p99_us": self.p99_us,
            "sent": self.sent,
        })
    }

    fn from_json(v: &serde_json::Value) -> Sample {
        let f = |k: &str, j: usize| v[k][j].as_f64().unwrap_or(f64::NAN);
        Sample {
            mbs: [f("mbs", 0), f("mbs", 1)],
            cpu_s_per_gb: [f("cpu_s_per_gb", 0), f("cpu_s_per_gb", 1)],
            p50_us: v["p50_us"].as_f64().unwrap_or(f64::NAN),
            p99_us: v["p99_us"].as_f64().unwrap_or(f64::NAN),
            sent: v["sent"].as_u64().unwrap_or(0),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

/// The two streams and the ping-pong against `port` (call it inside the namespace).
fn sample(port: u16, sz: Sizes) -> Result<Sample, String> {
    let mut s = Sample::default();
    for (k, &chunk) in CHUNKS.iter().enumerate() {
        let (secs, busy) = stream(port, chunk, sz.total)?;
        s.mbs[k] = sz.total as f64 / secs / 1e6;
        s.cpu_s_per_gb[k] = busy / (sz.total as f64 / 1e9);
        s.sent += sz.total;
    }
    let mut rtt = ping_pong(port, sz.warm, sz.pings)?;
    rtt.sort_by(f64::total_cmp);
    s.p50_us = percentile(&rtt, 0.50);
    s.p99_us = percentile(&rtt, 0.99);
    s.sent += ((sz.warm + sz.pings) * MSG) as u64;
    Ok(s)
}

// ---------------------------------------------------------------- user-space servers (`__sm`)

/// Accepts on 127.0.0.1:`port` for ever, a thread per connection running `conn(socket, arg)`.
fn serve(port: u16, conn: fn(TcpStream, u16), arg: u16) -> ! {
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
    // SAFETY: listen() again on a listening socket only changes its backlog.
    unsafe { libc::listen(l.as_raw_fd(), 1024) };
    for s in l.incoming().flatten() {
        thread::spawn(move || conn(s, arg));
    }
    std::process::exit(0)
}

/// Copies `from` to `to` until the end of `from`, then half-closes `to`.
fn copy(mut from: &TcpStream, mut to: &TcpStream) {
    let mut buf = vec![0u8; SERVER_BUF];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn echo_conn(s: TcpStream, _: u16) {
    copy(&s, &s);
}

fn proxy_conn(s: TcpStream, upstream: u16) {
    let Ok(u) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    thread::scope(|sc| {
        sc.spawn(|| copy(&s, &u));
        copy(&u, &s);
    });
}

/// `__sm echo PORT` | `__sm proxy PORT UPSTREAM` | `__sm pair OUT TOTAL WARM PINGS` (an echo
/// server and the client in this one process, the figures written to OUT as JSON: the
/// workload `tracekit sockmap bypass -- CMD` runs).
pub fn work(args: &[String]) -> ! {
    crate::set_comm(crate::WORK_COMM);
    let num = |i: usize| -> u64 { args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("__sm {args:?}")) };
    match args.first().map(String::as_str) {
        Some("echo") => serve(num(1) as u16, echo_conn, 0),
        Some("proxy") => serve(num(1) as u16, proxy_conn, num(2) as u16),
        Some("pair") => {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let port = l.local_addr().unwrap().port();
            thread::spawn(move || {
                for s in l.incoming().flatten() {
                    thread::spawn(move || echo_conn(s, 0));
                }
            });
            let sz = Sizes { total: num(2), warm: num(3) as usize, pings: num(4) as usize };
            let out = match sample(port, sz) {
                Ok(s) => s.json().to_string(),
                Err(e) => serde_json::json!({ "error": e }).to_string(),
            };
            fs::write(&args[1], out).expect("write the result");
            std::process::exit(0)
        }
        _ => panic!("unknown __sm mode {args:?}"),
    }
}

// ---------------------------------------------------------------- servers under test

/// A server process in the namespace: stdout and stderr lines, its cgroup (tracekit).
struct Server {
    child: Child,
    done: bool,
    /// stdout lines read so far (`wait_closed`).
    seen: Vec<String>,
    out: Option<mpsc::Receiver<String>>,
    err: Option<mpsc::Receiver<String>>,
    cg: Option<TransientCgroup>,
}

impl Server {
    /// Spawns `argv` in the namespace (in a fresh child cgroup with `own_cgroup`) and waits
    /// until it listens on `port`.
    fn start(ns: &Ns, argv: &[String], port: u16, own_cgroup: bool) -> Result<Server, String> {
        let cg = match own_cgroup {
            true => {
                let root = cgroup2_mount().ok_or("no cgroup2 file system mounted")?;
                Some(TransientCgroup::create(&root, CG_HINT).map_err(|e| e.to_string())?)
            }
            false => None,
        };
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.process_group(0);
        let mut child =
            spawn_in(&ns.name, cg.as_ref().map(|c| c.path()), &mut c).map_err(|e| format!("start {}: {e}", argv[0]))?;
        let out = Some(crate::lines_of(child.stdout.take().unwrap()));
        let err = Some(crate::lines_of(child.stderr.take().unwrap()));
        let mut s = Server { child, done: false, seen: Vec::new(), out, err, cg };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listening(s.child.id(), port) {
            if Instant::now() > deadline || !matches!(s.child.try_wait(), Ok(None)) {
                let (_, err) = s.stop();
                return Err(format!("`{}` did not listen on port {port}: {}", argv.join(" "), err.join(" / ")));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(s)
    }

    /// Bytes the process read through read(2)-like calls so far (/proc/PID/io `rchar`).
    fn rchar(&self) -> u64 {
        let io = fs::read_to_string(format!("/proc/{}/io", self.child.id())).unwrap_or_default();
        io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    /// Waits (at most 5 s) until tracekit has printed `n` `closed` events: it closes a
    /// connection once the kernel's counts say every byte went back, which can be just after
    /// the client's last read.
    fn wait_closed(&mut self, n: usize) {
        let Some(out) = &self.out else { return };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.seen.iter().filter(|l| l.contains("\"event\":\"closed\"")).count() < n && Instant::now() < deadline {
            if let Ok(l) = out.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(l);
            }
        }
    }

    /// SIGINT (SIGKILL after 10 s), then everything it printed: (stdout, stderr). Once.
    fn stop(&mut self) -> (Vec<String>, Vec<String>) {
        if self.done {
            return (Vec::new(), Vec::new());
        }
        self.done = true;
        crate::stop_child(&mut self.child);
        // socat's children (a fork per connection, `cat`) are in its process group
        // SAFETY: kill() of the process group this child leads (process_group(0)).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let mut out = std::mem::take(&mut self.seen);
        out.extend(self.out.take().map(|r| r.iter().collect::<Vec<_>>()).unwrap_or_default());
        let err = self.err.take().map(|r| r.iter().collect()).unwrap_or_default();
        if let Some(cg) = self.cg.take() {
            let _ = cg.remove();
        }
        (out, err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A JSON object `{"type":KIND,...}` among tracekit's output lines.
fn counts(lines: &[String], kind: &str) -> Option<serde_json::Value> {
    lines.iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|v| v["type"] == kind)
}

/// What a server is, for the flow tables (echo and proxy).
#[derive(Clone)]
struct Contender {
    name: &'static str,
    argv: Vec<String>,
    port: u16,
    tracekit: bool,
    /// How many times each byte sent passes tracekit's kernel side: 1 for the echo, 2 for the
    /// proxy (to the upstream and back).
    passes: u64,
    /// Why it is not measured (not installed, command missing).
    missing: Option<String>,
}

fn bench_exe() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn socat_missing() -> Option<String> {
    crate::which("socat").is_none().then(|| "`socat` not installed (apt-get install socat)".to_owned())
}

/// `tracekit sockmap SUB --help` fails: the command is not in this build.
fn tracekit_lacks(sub: &str) -> Option<String> {
    let ok = Command::new(crate::tracekit())
        .args(["sockmap", sub, "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| format!("`tracekit sockmap {sub}` is not in this build"))
}

fn sv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// tracekit's own account of a run: the bytes it says the kernel moved (when it said) and the
/// bytes it read itself.
type Account = (Option<u64>, u64);

/// What one contender gave over the rounds.
struct Runs {
    samples: Vec<Sample>,
    failed: Option<String>,
    /// tracekit's own account: the bytes it says the kernel moved (None once a run reported
    /// no counts) and the bytes it read itself.
    kernel_bytes: Option<u64>,
    rchar: u64,
}

impl Default for Runs {
    fn default() -> Runs {
        Runs { samples: Vec::new(), failed: None, kernel_bytes: Some(0), rchar: 0 }
    }
}

/// Runs every contender once per round (rotated order), each started for its turn and
/// stopped after it.
fn rounds(
    ns: &Ns,
    cs: &[Contender],
    n: usize,
    sz: Sizes,
    what: &str,
    results: &mut Vec<serde_json::Value>,
) -> Vec<Runs> {
    let mut runs: Vec<Runs> = cs.iter().map(|_| Runs::default()).collect();
    for round in 0..n {
        for k in 0..cs.len() {
            let i = (k + round) % cs.len();
            let c = &cs[i];
            if c.missing.is_some() || runs[i].failed.is_some() {
                continue;
            }
            let res = (|| -> Result<(Sample, Option<Account>), String> {
                let mut srv = match c.argv.is_empty() {
                    true => None,
                    false => Some(Server::start(ns, &c.argv, c.port, c.tracekit)?),
                };
                let rchar0 = srv.as_ref().map_or(0, Server::rchar);
                let port = c.port;
                let s = ns.run(move || sample(port, sz));
                let rchar = srv.as_ref().map_or(0, Server::rchar) - rchar0;
                let said = match srv.as_mut() {
                    Some(srv) if c.tracekit => {
                        // two streams and the ping-pong: three connections
                        srv.wait_closed(3);
                        let (out, _) = srv.stop();
                        Some((counts(&out, "sockmap_counts").and_then(|n| n["bytes"].as_u64()), rchar))
                    }
                    _ => None,
                };
                Ok((s?, said))
            })();
            match res {
                Ok((s, said)) => {
                    eprintln!(
                        "bench: {what} / {}: {:.0} / {:.0} MB/s, CPU {:.2} / {:.2} s per GB, RTT p50 {:.1} µs p99 {:.1} µs{}",
                        c.name,
                        s.mbs[0],
                        s.mbs[1],
                        s.cpu_s_per_gb[0],
                        s.cpu_s_per_gb[1],
                        s.p50_us,
                        s.p99_us,
                        said.map_or(String::new(), |(b, r)| format!(
                            ", kernel moved {b:?} of {} B, tracekit read {r} B",
                            s.sent
                        )),
                    );
                    results.push(serde_json::json!({
                        "scenario": what, "server": c.name, "round": round, "sample": s.json(),
                        "kernel_bytes": said.map(|x| x.0), "tracekit_rchar": said.map(|x| x.1),
                    }));
                    if let Some((b, r)) = said {
                        runs[i].kernel_bytes = b.and_then(|b| runs[i].kernel_bytes.map(|k| k + b));
                        runs[i].rchar += r;
                    }
                    runs[i].samples.push(s);
                }
                Err(e) => {
                    eprintln!("bench: {what} / {}: {e}", c.name);
                    runs[i].failed = Some(e);
                }
            }
        }
    }
    runs
}

/// The table of a flow scenario (echo, proxy, bypass).
/// `notes[i]`, when given, is row i's checks column.
fn flow_table(title: &str, cs: &[Contender], runs: &[Runs], rounds: usize, base: usize, notes: &[String]) -> String {
    let mut t = format!(
        "\n| {title} (median of {rounds}) | server | MB/s, 64 KiB writes | MB/s, 1 MiB writes | RTT p50 (64 B) | RTT p99 | CPU per GB, 64 KiB / 1 MiB | checks |\n|---|---|---|---|---|---|---|---|\n"
    );
    let med = |r: &Runs, f: &dyn Fn(&Sample) -> f64| median(r.samples.iter().map(f).collect());
    let base_mbs = [med(&runs[base], &|s| s.mbs[0]), med(&runs[base], &|s| s.mbs[1])];
    for (i, (c, r)) in cs.iter().zip(runs).enumerate() {
        let lead = format!("| {title} | {} |", c.name);
        if let Some(why) = c.missing.as_ref().or(r.failed.as_ref()) {
            t.push_str(&format!("{lead} {} | | | | | |\n", why.replace('|', "/")));
            continue;
        }
        let rel = |k: usize, v: f64| {
            if std::ptr::eq(c, &cs[base]) { String::new() } else { format!(" ({:.2}×)", v / base_mbs[k]) }
        };
        let (m0, m1) = (med(r, &|s| s.mbs[0]), med(r, &|s| s.mbs[1]));
        let sent: u64 = r.samples.iter().map(|s| s.sent).sum();
        let checks = match c.tracekit {
            _ if notes.len() > i => notes[i].clone(),
            true => match r.kernel_bytes {
                Some(b) if c.passes == 1 => format!("kernel moved {b} of {sent} B; tracekit read {} B", r.rchar),
                Some(b) => format!("kernel moved {b} of {} × {sent} B; tracekit read {} B", c.passes, r.rchar),
                None => format!("tracekit reported no byte count; it read {} B", r.rchar),
            },
            false => "–".to_owned(),
        };
        t.push_str(&format!(
            "{lead} {m0:.0}{} | {m1:.0}{} | {:.1} µs | {:.1} µs | {:.2} s / {:.2} s | {checks} |\n",
            rel(0, m0),
            rel(1, m1),
            med(r, &|s| s.p50_us),
            med(r, &|s| s.p99_us),
            med(r, &|s| s.cpu_s_per_gb[0]),
            med(r, &|s| s.cpu_s_per_gb[1]),
        ));
    }
    t
}

// ---------------------------------------------------------------- echo, proxy, bypass

const TK_ECHO_PORT: u16 = 7001;
const USER_ECHO_PORT: u16 = 7002;
const SOCAT_ECHO_PORT: u16 = 7003;
const UPSTREAM_PORT: u16 = 7100;
const TK_PROXY_PORT: u16 = 7101;
const USER_PROXY_PORT: u16 = 7102;
const SOCAT_PROXY_PORT: u16 = 7103;

fn echo_contenders() -> Vec<Contender> {
    let tk = crate::tracekit().display().to_string();
    let at = |p: u16| format!("127.0.0.1:{p}");
    vec![
        Contender {
            name: "tracekit sockmap echo",
            argv: vec![tk, "sockmap".into(), "echo".into(), at(TK_ECHO_PORT), "--json".into()],
            port: TK_ECHO_PORT,
            tracekit: true,
            passes: 1,
            missing: None,
        },
        Contender {
            name: "user-space echo (thread per connection)",
            argv: vec![bench_exe(), "__sm".into(), "echo".into(), USER_ECHO_PORT.to_string()],
            port: USER_ECHO_PORT,
            tracekit: false,
            passes: 1,
            missing: None,
        },
        Contender {
            // not `PIPE`: one socat process writing into and reading from its own pipe blocks
            // for ever in write(2) once a stream fills it (seen here with 64 KiB writes)
            name: "socat EXEC:cat",
            argv: sv(&["socat", &format!("TCP-LISTEN:{SOCAT_ECHO_PORT},bind=127.0.0.1,fork,reuseaddr"), "EXEC:cat"]),
            port: SOCAT_ECHO_PORT,
            tracekit: false,
            passes: 1,
            missing: socat_missing(),
        },
    ]
}

fn proxy_contenders() -> Vec<Contender> {
    let tk = crate::tracekit().display().to_string();
    let at = |p: u16| format!("127.0.0.1:{p}");
    vec![
        Contender {
            name: "none (client → echo directly)",
            argv: Vec::new(),
            port: UPSTREAM_PORT,
            tracekit: false,
            passes: 1,
            missing: None,
        },
        Contender {
            name: "tracekit sockmap proxy",
            argv: vec![tk, "sockmap".into(), "proxy".into(), at(TK_PROXY_PORT), at(UPSTREAM_PORT), "--json".into()],
            port: TK_PROXY_PORT,
            tracekit: true,
            passes: 2,
            missing: tracekit_lacks("proxy"),
        },
        Contender {
            name: "user-space proxy (thread pair)",
            argv: vec![
                bench_exe(),
                "__sm".into(),
                "proxy".into(),
                USER_PROXY_PORT.to_string(),
                UPSTREAM_PORT.to_string(),
            ],
            port: USER_PROXY_PORT,
            tracekit: false,
            passes: 1,
            missing: None,
        },
        Contender {
            name: "socat TCP",
            argv: sv(&[
                "socat",
                &format!("TCP-LISTEN:{SOCAT_PROXY_PORT},bind=127.0.0.1,fork,reuseaddr"),
                &format!("TCP:127.0.0.1:{UPSTREAM_PORT}"),
            ]),
            port: SOCAT_PROXY_PORT,
            tracekit: false,
            passes: 1,
            missing: socat_missing(),
        },
    ]
}

/// Bytes the namespace's `lo` received so far.
fn lo_bytes(ns: &Ns) -> u64 {
    let out = Command::new("ip").args(["-n", &ns.name, "-s", "-j", "link", "show", "lo"]).output();
    let v: serde_json::Value = out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or_default();
    v[0]["stats64"]["rx"]["bytes"].as_u64().unwrap_or(0)
}

/// The bypass rows: the same client and echo server in one process (`__sm pair`), run plainly
/// and under `tracekit sockmap bypass -- CMD`; the worker writes its figures to a file.
fn bypass(ns: &Ns, n: usize, sz: Sizes, dir: &Path, results: &mut Vec<serde_json::Value>) -> String {
    let names = ["plain loopback TCP", "tracekit sockmap bypass -- CMD"];
    let missing = [None, tracekit_lacks("bypass")];
    let mut runs: Vec<Runs> = names.iter().map(|_| Runs::default()).collect();
    // what crossed the loopback interface: bypassed bytes do not
    let mut lo = [0u64; 2];
    for round in 0..n {
        for k in 0..names.len() {
            let i = (k + round) % names.len();
            if missing[i].is_some() || runs[i].failed.is_some() {
                continue;
            }
            let file = dir.join(format!("bypass-{i}-{round}.json"));
            let mut argv: Vec<String> = Vec::new();
            if i == 1 {
                argv.extend([crate::tracekit().display().to_string(), "sockmap".into(), "bypass".into(), "--".into()]);
            }
            argv.extend([bench_exe(), "__sm".into(), "pair".into(), file.display().to_string()]);
            argv.extend([sz.total.to_string(), sz.warm.to_string(), sz.pings.to_string()]);
            let res = (|| -> Result<Sample, String> {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
                let lo0 = lo_bytes(ns);
                let child = spawn_in(&ns.name, None, &mut c).map_err(|e| format!("start {}: {e}", argv[0]))?;
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                lo[i] += lo_bytes(ns) - lo0;
                let text = fs::read_to_string(&file).map_err(|_| {
                    format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim().replace('\n', " / "))
                })?;
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if let Some(e) = v["error"].as_str() {
                    return Err(e.to_owned());
                }
                Ok(Sample::from_json(&v))
            })();
            match res {
                Ok(s) => {
                    eprintln!(
                        "bench: sockmap-bypass / {}: {:.0} / {:.0} MB/s, RTT p50 {:.1} µs",
                        names[i], s.mbs[0], s.mbs[1], s.p50_us
                    );
                    results.push(serde_json::json!({"scenario": "sockmap-bypass", "server": names[i], "round": round, "sample": s.json(), "lo_rx_bytes_total": lo[i]}));
                    runs[i].samples.push(s);
                }
                Err(e) => {
                    eprintln!("bench: sockmap-bypass / {}: {e}", names[i]);
                    runs[i].failed = Some(e);
                }
            }
        }
    }
    let cs: Vec<Contender> = names
        .iter()
        .zip(missing)
        .map(|(name, missing)| Contender { name, argv: Vec::new(), port: 0, tracekit: false, passes: 1, missing })
        .collect();
    let notes: Vec<String> = runs
        .iter()
        .zip(lo)
        .map(|(r, lo)| {
            format!("`lo` received {lo} B for 2 × {} B echoed", r.samples.iter().map(|s| s.sent).sum::<u64>())
        })
        .collect();
    flow_table("sockmap bypass (client and echo server in one process)", &cs, &runs, n, 0, &notes)
}

// ---------------------------------------------------------------- sk_lookup

const SKL_PORT: u16 = 8000;
const SKL_OTHER: u16 = 8001;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Steer {
    None,
    SamePort,
    OtherPort,
    /// The program steers SKL_OTHER; clients connect to SKL_PORT.
    Miss,
}

const STEERS: [Steer; 4] = [Steer::None, Steer::SamePort, Steer::OtherPort, Steer::Miss];

impl Steer {
    fn name(self) -> &'static str {
        match self {
            Steer::None => "no program",
            Steer::SamePort => "tracekit sklookup --ports 8000 --to 127.0.0.1:8000 --force",
            Steer::OtherPort => "tracekit sklookup --ports 8001 --to 127.0.0.1:8000 (clients → 8001)",
            Steer::Miss => "tracekit sklookup --ports 8001 … (clients → 8000: program runs, no hit)",
        }
    }

    fn client_port(self) -> u16 {
        if self == Steer::OtherPort { SKL_OTHER } else { SKL_PORT }
    }

    fn argv(self, ns: &Ns) -> Option<Vec<String>> {
        let ports = match self {
            Steer::None => return None,
            Steer::SamePort => SKL_PORT,
            _ => SKL_OTHER,
        };
        let mut a = vec![crate::tracekit().display().to_string(), "sklookup".into(), "--netns".into(), ns.name.clone()];
        a.extend(["--ports".into(), ports.to_string(), "--to".into(), format!("127.0.0.1:{SKL_PORT}")]);
        a.extend(["--pid".into(), std::process::id().to_string(), "--proto".into(), "tcp".into()]);
        a.extend(["--json".into(), "-v".into()]);
        if self == Steer::SamePort {
            a.push("--force".into());
        }
        Some(a)
    }
}

/// `tracekit sklookup …` (outside the namespace, `--netns`), once attached. Its events go to
/// `file`, as a user's would: a pipe the bench drained would put the bench's reading on the
/// CPUs the measurement shares.
fn start_sklookup(argv: &[String], file: &Path) -> Result<Server, String> {
    let mut c = Command::new(&argv[0]);
    let f = File::create(file).map_err(|e| format!("{}: {e}", file.display()))?;
    c.args(&argv[1..]).stdin(Stdio::null()).stdout(f).stderr(Stdio::piped());
    c.process_group(0);
    crate::cgroup::die_with_parent(&mut c, libc::SIGTERM);
    let mut child = c.spawn().map_err(|e| format!("start tracekit: {e}"))?;
    let out = None;
    let err = crate::lines_of(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match err.recv_timeout(Duration::from_millis(50)) {
            Ok(l) if l.contains("attached after") => {
                let (tx, rx) = mpsc::channel();
                for l in seen {
                    let _ = tx.send(l);
                }
                thread::spawn(move || {
                    for l in err.iter() {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                });
                return Ok(Server { child, done: false, seen: Vec::new(), out, err: Some(rx), cg: None });
            }
            Ok(l) => seen.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    crate::stop_child(&mut child);
    Err(format!("`tracekit sklookup` did not attach: {}", seen.join(" / ")))
}

/// TcpExt ListenOverflows of the namespace (read from a thread inside it).
fn listen_overflows(ns: &Ns) -> u64 {
    ns.run(|| crate::cgroup::listen_overflows_in("/proc/thread-self/net/netstat"))
}

/// Nanoseconds the threads of `task_dir` (/proc/PID/task or /proc/thread-self/..) ran so far:
/// the first field of each schedstat, the scheduler's own exact sum.
fn ran_ns(tasks: &[PathBuf]) -> u64 {
    tasks
        .iter()
        .filter_map(|t| fs::read_to_string(t.join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

fn threads_of(pid: u32) -> Vec<PathBuf> {
    fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

/// lookups, hits, misses (tracekit's counters), events printed.
type SklCounts = (u64, u64, u64, u64);

struct SklRun {
    rate: f64,
    /// CPU time of the client thread per connection (µs): its connect() runs the whole
    /// loopback handshake, softirq included (the SYN's lookup, where the program runs), so this
    /// is what the program costs a connection, and other users' load barely moves it.
    client_us: f64,
    /// CPU time of tracekit's threads per connection (µs): reading and printing the events.
    tracekit_us: f64,
    said: Option<SklCounts>,
}

fn skl_once(ns: &Ns, steer: Steer, n: u64, dir: &Path) -> Result<SklRun, String> {
    let file = dir.join("sklookup.out");
    let mut tk = steer.argv(ns).map(|a| start_sklookup(&a, &file)).transpose()?;
    let port = steer.client_port();
    let tk_threads = tk.as_ref().map(|t| threads_of(t.child.id())).unwrap_or_default();
    let tk0 = ran_ns(&tk_threads);
    let run = ns.run(move || -> Result<(f64, u64), String> {
        let me = [PathBuf::from("/proc/thread-self")];
        let ran0 = ran_ns(&me);
        let start = Instant::now();
        for i in 0..n {
            let c =
                TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connection {i} to port {port}: {e}"))?;
            crate::cgroup::abort_linger(c.as_raw_fd());
        }
        Ok((start.elapsed().as_secs_f64(), ran_ns(&me) - ran0))
    });
    let tk_ns = ran_ns(&tk_threads).saturating_sub(tk0);
    let said = match tk.as_mut() {
        Some(tk) => {
            let (_, err) = tk.stop();
            let out: Vec<String> = fs::read_to_string(&file).unwrap_or_default().lines().map(str::to_owned).collect();
            let c = counts(&out, "sklookup_counts")
                .ok_or_else(|| format!("no counters from tracekit: {}", err.join(" / ")))?;
            let events = out.iter().filter(|l| l.contains("\"verdict\":\"steered\"")).count() as u64;
            let g = |k: &str| c[k].as_u64().unwrap_or(0);
            Some((g("lookups"), g("hits"), g("misses"), events))
        }
        None => None,
    };
    let (secs, client_ns) = run?;
    Ok(SklRun {
        rate: n as f64 / secs,
        client_us: client_ns as f64 / n as f64 / 1e3,
        tracekit_us: tk_ns as f64 / n as f64 / 1e3,
        said,
    })
}

fn sklookup(ns: &Ns, smoke: bool, dir: &Path, results: &mut Vec<serde_json::Value>) -> String {
    let (rounds, n) = if smoke { (1, 300u64) } else { (12, 50_000u64) };
    eprintln!("bench: sklookup ({n} connections a run, {rounds} rounds, load average {})", load_average());
    ns.run(|| {
        let l = TcpListener::bind(("127.0.0.1", SKL_PORT)).expect("listen on 127.0.0.1:8000 in the namespace");
        crate::cgroup::serve_accepts(l)
    });
    let mut t = format!(
        "\n| sk_lookup (loopback in a namespace, {n} connections a run, SO_LINGER 0; median of {rounds}) | configuration | connections/s | cost vs. no program | target | client CPU per connection (cost) | tracekit CPU per connection | lookups / hits / misses / events (all runs) |\n|---|---|---|---|---|---|---|---|\n"
    );
    let mut runs: Vec<Vec<SklRun>> = STEERS.iter().map(|_| Vec::new()).collect();
    let mut failed: Vec<Option<String>> = vec![None; STEERS.len()];
    for round in 0..rounds {
        for k in 0..STEERS.len() {
            let i = (k + round) % STEERS.len();
            let s = STEERS[i];
            if failed[i].is_some() {
                continue;
            }
            let mut again = 0;
            let r = loop {
                let before = listen_overflows(ns);
                let r = skl_once(ns, s, n, dir);
                let over = listen_overflows(ns) - before;
                if r.is_err() || over == 0 || again == 2 {
                    break r;
                }
                again += 1;
                eprintln!(
                    "bench: sklookup / {}: {over} SYN(s) dropped at a full accept queue: running it again",
                    s.name()
                );
            };
            match r {
                Ok(r) => {
                    eprintln!(
                        "bench: sklookup / {}: {:.0} connections/s, client {:.2} µs, tracekit {:.2} µs per connection, counters {:?}",
                        s.name(),
                        r.rate,
                        r.client_us,
                        r.tracekit_us,
                        r.said
                    );
                    results.push(serde_json::json!({
                        "scenario": "sklookup", "config": s.name(), "round": round, "connections": n, "rate": r.rate,
                        "client_cpu_us": r.client_us, "tracekit_cpu_us": r.tracekit_us,
                        "lookups": r.said.map(|x| x.0), "hits": r.said.map(|x| x.1), "misses": r.said.map(|x| x.2),
                        "events": r.said.map(|x| x.3), "reruns_for_syn_drops": again,
                    }));
                    runs[i].push(r);
                }
                Err(e) => {
                    eprintln!("bench: sklookup / {}: {e}", s.name());
                    failed[i] = Some(e);
                }
            }
        }
    }
    let base = median(runs[0].iter().map(|r| r.rate).collect());
    let base_cpu = median(runs[0].iter().map(|r| r.client_us).collect());
    for (i, s) in STEERS.iter().enumerate() {
        if let Some(e) = &failed[i] {
            t.push_str(&format!("| sk_lookup | {} | failed: {} | | | | | |\n", s.name(), e.replace('|', "/")));
            continue;
        }
        let rate = median(runs[i].iter().map(|r| r.rate).collect());
        let cost = (1.0 - rate / base) * 100.0;
        let (cost, target) = match s {
            Steer::None => ("–".to_owned(), "–".to_owned()),
            _ => (format!("{cost:.1} %"), format!("≤ 5 %: {}", if cost <= 5.0 { "met" } else { "not met" })),
        };
        let sum = |f: &dyn Fn(&SklCounts) -> u64| runs[i].iter().filter_map(|r| r.said.as_ref()).map(f).sum::<u64>();
        let said = match s {
            Steer::None => "–".to_owned(),
            _ => format!(
                "{} / {} / {} / {} (connections made: {})",
                sum(&|x| x.0),
                sum(&|x| x.1),
                sum(&|x| x.2),
                sum(&|x| x.3),
                n * runs[i].len() as u64
            ),
        };
        let cpu = median(runs[i].iter().map(|r| r.client_us).collect());
        let cpu = match s {
            Steer::None => format!("{cpu:.2} µs"),
            _ => format!("{cpu:.2} µs ({:+.1} %)", (cpu / base_cpu - 1.0) * 100.0),
        };
        let tk_cpu = match s {
            Steer::None => "–".to_owned(),
            _ => format!("{:.2} µs", median(runs[i].iter().map(|r| r.tracekit_us).collect())),
        };
        t.push_str(&format!(
            "| sk_lookup | {} | {:.1} k/s | {cost} | {target} | {cpu} | {tk_cpu} | {said} |\n",
            s.name(),
            rate / 1e3
        ));
    }
    t
}

// ---------------------------------------------------------------- the scenario

/// The socket tools' tables (markdown) and raw rows.
pub fn run(smoke: bool, flows: bool, sklookup_rows: bool, dir: &Path, results: &mut Vec<serde_json::Value>) -> String {
    if let Some(root) = cgroup2_mount() {
        for p in TransientCgroup::sweep_stale(&root) {
            eprintln!("bench: removed a cgroup left by an earlier run: {}", p.display());
        }
    }
    let ns = Ns::new();
    let sz = if smoke {
        Sizes { total: 32 << 20, warm: 200, pings: 2_000 }
    } else {
        Sizes { total: 1 << 30, warm: 2_000, pings: 20_000 }
    };
    let n = if smoke { 1 } else { 5 };
    let mut t = String::new();
    if !flows {
        return sklookup(&ns, smoke, dir, results);
    }
    eprintln!(
        "bench: sockmap-echo ({} MiB a stream, {} pings after {}, {n} rounds, load average {})",
        sz.total >> 20,
        sz.pings,
        sz.warm,
        load_average()
    );
    let cs = echo_contenders();
    let runs = rounds(&ns, &cs, n, sz, "sockmap-echo", results);
    t.push_str(&flow_table("sockmap echo", &cs, &runs, n, 1, &[]));

    let cs = proxy_contenders();
    if let Some(why) = &cs[1].missing {
        eprintln!("bench: sockmap-proxy: skipped: {why}");
        t.push_str(&format!("\n| sockmap proxy | skipped: {why} |\n|---|---|\n"));
    } else {
        // the upstream every proxy (and the direct row) talks to, running all along
        let up = vec![bench_exe(), "__sm".into(), "echo".into(), UPSTREAM_PORT.to_string()];
        match Server::start(&ns, &up, UPSTREAM_PORT, false) {
            Ok(_upstream) => {
                let runs = rounds(&ns, &cs, n, sz, "sockmap-proxy", results);
                t.push_str(&flow_table("sockmap proxy (to a user-space echo server)", &cs, &runs, n, 2, &[]));
            }
            Err(e) => {
                t.push_str(&format!("\n| sockmap proxy | the upstream echo server did not start: {e} |\n|---|---|\n"))
            }
        }
    }
    if let Some(why) = tracekit_lacks("bypass") {
        eprintln!("bench: sockmap-bypass: skipped: {why}");
        t.push_str(&format!("\n| sockmap bypass | skipped: {why} |\n|---|---|\n"));
    } else {
        t.push_str(&bypass(&ns, n, sz, dir, results));
    }
    if sklookup_rows {
        t.push_str(&sklookup(&ns, smoke, dir, results));
    }
    t
}
