//! tracekit-bench: tracekit side by side with bpftrace and libbpf-tools, in one run.
//!
//! Each scenario drives a workload (this binary in a hidden mode, comm `tkb-work`) under each
//! tracer and measures startup (spawn → first event of a repeated trigger printed), peak RSS,
//! workload speed traced ÷ untraced, events delivered vs generated, the losses the tracer
//! reports, and tracer CPU per million events. Compare ratios from one run: these machines
//! are noisy. `--smoke` is one small repetition, for CI. The packet tools' rows (per-packet cost
//! with BPF_PROG_RUN, live capacity on a veth pair next to tcpdump) are in net.rs; `tracekit
//! cgroup`'s cost to the connect, bind and TCP throughput of a cgroup's processes in cgroup.rs;
//! `tracekit forward`'s packet rate and latency next to the kernel's forwarding in forward.rs;
//! `tracekit tcpcc load`'s congestion control algorithms next to the kernel's, over netem, in
//! tcpcc.rs; `tracekit sockmap` and `tracekit sklookup` next to user-space servers and socat,
//! on loopback, in sockmap.rs. `--out FILE` writes the raw results as JSON; `--json` prints them on stdout instead
//! of the table (which then goes to stderr).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

mod cgroup;
mod forward;
mod net;
mod sockmap;
mod tcpcc;

const WORK_COMM: &str = "tkb-work";
const MARK: &str = "tkbmark";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Open,
    Tcp,
    Readline,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Open => "open",
            Scenario::Tcp => "tcp",
            Scenario::Readline => "readline",
        }
    }

    /// Events one workload operation produces for the tracers of this scenario.
    fn events_per_op(self) -> u64 {
        match self {
            Scenario::Open => 1,
            // CLOSE→SYN_SENT→ESTABLISHED→CLOSE on each end: the client aborts (SO_LINGER 0), so
            // no TIME_WAIT piles up and every connection makes the same transitions.
            Scenario::Tcp => 6,
            Scenario::Readline => 1,
        }
    }
}

struct Tracer {
    name: &'static str,
    argv: Vec<String>,
    /// Only a floor: an attached program that prints nothing.
    floor: bool,
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn tracekit() -> PathBuf {
    std::env::current_exe().unwrap().with_file_name("tracekit")
}

fn tracers(s: Scenario) -> Vec<(Tracer, Option<String>)> {
    let tk = tracekit().display().to_string();
    let mut v = Vec::new();
    let mut add = |name: &'static str, cmd: &str, args: &[&str], floor: bool| {
        let missing = which(cmd).is_none() && !cmd.starts_with('/');
        let mut argv = vec![cmd.to_owned()];
        argv.extend(args.iter().map(|a| a.to_string()));
        v.push((Tracer { name, argv, floor }, missing.then(|| format!("`{cmd}` not installed"))));
    };
    let comm_filter = format!("/comm == \"{WORK_COMM}\"/");
    match s {
        Scenario::Open => {
            add("tracekit tracepoint", &tk, &["tracepoint", "syscalls:sys_enter_openat", "-c", WORK_COMM], false);
            add("libbpf-tools opensnoop", "opensnoop", &["-n", WORK_COMM], false);
            let prog = format!(
                "tracepoint:syscalls:sys_enter_openat {comm_filter} {{ printf(\"%d %s\\n\", pid, str(args->filename)); }}"
            );
            add("bpftrace", "bpftrace", &["-e", &prog], false);
            let floor = "tracepoint:syscalls:sys_enter_openat /comm == \"no-such-comm\"/ { @ = count(); }";
            add("empty BPF program (floor)", "bpftrace", &["-e", floor], true);
        }
        Scenario::Tcp => {
            add("tracekit tcpstate", &tk, &["tcpstate"], false);
            add("libbpf-tools tcpstates", "tcpstates", &[], false);
            let prog = "tracepoint:sock:inet_sock_set_state { printf(\"%d %d %d %d %d\\n\", pid, args->sport, args->dport, args->oldstate, args->newstate); }";
            add("bpftrace", "bpftrace", &["-e", prog], false);
        }
        Scenario::Readline => {
            add("tracekit uprobe", &tk, &["uprobe", "/bin/bash:readline", "--return-only"], false);
            add("libbpf-tools bashreadline", "bashreadline", &[], false);
            let prog = "uretprobe:/bin/bash:readline { printf(\"%d %s\\n\", pid, str(retval)); }";
            add("bpftrace", "bpftrace", &["-e", prog], false);
        }
    }
    v
}

// ---------------------------------------------------------------- workloads

/// The lines of a child's output, read on a thread of their own as they come.
pub(crate) fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn set_comm(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// The capacity workload: `__work rate RATE SECS THREADS` opens a missing marker path (a cheap
/// openat that still carries the marker) from THREADS threads at RATE opens/s in total for
/// SECS, paced in batches; prints the opens made and the seconds taken.
fn work_at_rate(rate: f64, secs: f64, threads: usize) -> ! {
    let missing = std::env::temp_dir().join(format!("{MARK}-missing"));
    let start = Instant::now();
    let per_thread = rate / threads as f64;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let missing = missing.clone();
            thread::spawn(move || {
                let mut done = 0u64;
                while start.elapsed().as_secs_f64() < secs {
                    for _ in 0..64 {
                        let _ = fs::File::open(&missing);
                    }
                    done += 64;
                    let due = Duration::from_secs_f64(done as f64 / per_thread);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        thread::sleep(wait);
                    }
                }
                done
            })
        })
        .collect();
    let ops: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!("{ops} {:.6}", start.elapsed().as_secs_f64());
    std::process::exit(0)
}

/// The workload process: `__work SCENARIO N PORT` runs N operations as fast as it can and
/// prints the seconds it took; `N = 0` repeats one operation every 5 ms until killed.
fn work(args: &[String]) -> ! {
    set_comm(WORK_COMM); // before any thread starts: threads inherit it
    if args[0] == "rate" {
        work_at_rate(args[1].parse().unwrap(), args[2].parse().unwrap(), args[3].parse().unwrap());
    }
    let s = &args[0];
    let n: u64 = args[1].parse().unwrap();
    let port: u16 = args[2].parse().unwrap();
    let marker = std::env::temp_dir().join(MARK);
    let one = |i: u64| match s.as_str() {
        "open" => {
            let _ = fs::File::open(&marker);
        }
        "tcp" => {
            let _ = i;
            let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: a valid socket fd and a linger struct of the size given.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&c),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            drop(c);
        }
        _ => unreachable!(),
    };
    let start = Instant::now();
    if n == 0 {
        loop {
            one(0);
            thread::sleep(Duration::from_millis(5));
        }
    }
    for i in 0..n {
        one(i);
    }
    println!("{:.6}", start.elapsed().as_secs_f64());
    std::process::exit(0)
}

/// The server side of the tcp scenario: accepts, waits for the client's FIN, closes.
fn tcp_server() -> (u16, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut b = [0u8; 16];
            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
        }
    });
    (port, h)
}

fn spawn_work(s: Scenario, n: u64, port: u16) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["__work", s.name(), &n.to_string(), &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs N operations; returns operations per second.
fn run_work(s: Scenario, n: u64, port: u16) -> f64 {
    if s == Scenario::Readline {
        return run_bash(n);
    }
    let out = spawn_work(s, n, port).wait_with_output().unwrap();
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(f64::NAN);
    n as f64 / secs
}

/// `bash --norc -i` reading N comment lines from a pipe (one readline() call each).
fn run_bash(n: u64) -> f64 {
    let mut input = String::with_capacity(n as usize * 10);
    for _ in 0..n {
        input.push('#');
        input.push_str(MARK);
        input.push('\n');
    }
    let start = Instant::now();
    let mut child = Command::new("/bin/bash")
        .args(["--norc", "--noprofile", "-i"])
        .env("PS1", "")
        .env("INPUTRC", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait().unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- measuring a tracer

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// utime + stime in seconds.
fn proc_cpu_secs(pid: u32) -> f64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / hz
}

fn start_tracer(t: &Tracer, stdout: Stdio) -> Child {
    let mut c = Command::new(&t.argv[0]);
    c.args(&t.argv[1..]).stdout(stdout).stderr(Stdio::piped()).stdin(Stdio::null());
    // Its own process group, so a Ctrl-C of the bench does not hit it mid-measurement.
    c.process_group(0);
    c.spawn().unwrap()
}

/// Stops a tracer (or any child): SIGINT, then waits for it to exit, SIGKILL after 10 s; reaps it.
pub(crate) fn stop_child(child: &mut Child) {
    // SAFETY: kill() on a child we have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
}

/// `stop_child`, then what it wrote to stderr.
fn stop(child: &mut Child) -> String {
    stop_child(child);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// A line the tracer printed for the workload's own events. TCP: every transition line (the
/// loopback connections are the machine's only TCP traffic; closing transitions no longer
/// carry the port), recognised by its state names or, for bpftrace, five numbers.
fn is_ours(s: Scenario, line: &str) -> bool {
    match s {
        Scenario::Open | Scenario::Readline => line.contains(MARK),
        Scenario::Tcp => {
            let w: Vec<&str> = line.split_whitespace().collect();
            line.contains(" -> ") && !line.contains("OLDSTATE")
                || (w.len() == 5 && w.iter().all(|x| x.parse::<i64>().is_ok()))
        }
    }
}

/// Spawn → the first event of a repeated trigger printed (line-buffered via stdbuf for peers).
fn startup(s: Scenario, t: &Tracer, port: u16) -> Option<f64> {
    let mut argv = vec!["stdbuf".to_owned(), "-oL".to_owned()];
    argv.extend(t.argv.iter().cloned());
    let lb = Tracer { name: t.name, argv, floor: false };
    let start = Instant::now();
    let mut child = start_tracer(&lb, Stdio::piped());
    let rx = crate::lines_of(child.stdout.take().unwrap());
    let mut trigger = match s {
        Scenario::Readline => None,
        _ => Some(spawn_work(s, 0, port)),
    };
    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bash_loop = (s == Scenario::Readline).then(|| {
        let f = stop_flag.clone();
        thread::spawn(move || {
            while !f.load(std::sync::atomic::Ordering::Relaxed) {
                run_bash(1);
            }
        })
    });
    let mut got = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if is_ours(s, &line) => {
                got = Some(start.elapsed().as_secs_f64());
                break;
            }
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    if let Some(t) = trigger.as_mut() {
        let _ = t.kill();
        let _ = t.wait();
    }
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(h) = bash_loop {
        let _ = h.join();
    }
    stop(&mut child);
    got
}

/// "lost N" as each tracer reports it (tracekit, libbpf-tools, bpftrace), summed.
fn reported_lost(text: &str) -> Option<u64> {
    let mut total = None;
    for line in text.lines() {
        let l = line.to_ascii_lowercase();
        if let Some(i) = l.find("lost ") {
            let n: String = l[i + 5..].chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(n) = n.parse::<u64>() {
                // tracekit prints the running total in its last line; sum the peers' per-CPU lines
                if l.starts_with("tracekit: lost") {
                    total = Some(n);
                } else if !l.starts_with("tracekit:") {
                    total = Some(total.unwrap_or(0) + n);
                }
            }
        }
    }
    total
}

#[derive(Default, Clone)]
struct Measure {
    startup_ms: Option<f64>,
    rss_kib: Option<u64>,
    speed_ratio: f64,
    generated: u64,
    delivered: u64,
    reported_lost: Option<u64>,
    cpu_s_per_m: f64,
}

/// One repetition. The untraced speed is measured right before the traced run, so that the
/// ratio compares neighbours on a machine whose speed drifts.
fn measure(s: Scenario, t: &Tracer, n: u64, port: u16, dir: &Path) -> Measure {
    let startup = if t.floor { None } else { startup(s, t, port) };
    let untraced = run_work(s, n, port);
    let file = dir.join(format!("{}-{}.out", s.name(), t.name.replace(' ', "_")));
    let out = fs::File::create(&file).unwrap();
    let mut child = start_tracer(t, Stdio::from(out));
    // Attached by then: three times its startup, at least 300 ms.
    thread::sleep(Duration::from_secs_f64((startup.unwrap_or(1.0) * 3.0).max(0.3)));
    let cpu0 = proc_cpu_secs(child.id());
    let ops = run_work(s, n, port);
    thread::sleep(Duration::from_millis(1500));
    let rss = proc_status_kib(child.id(), "VmHWM:");
    let cpu = proc_cpu_secs(child.id()) - cpu0;
    let stderr = stop(&mut child);
    let text = fs::read_to_string(&file).unwrap_or_default();
    let delivered = text.lines().filter(|l| is_ours(s, l)).count() as u64;
    let generated = if t.floor { 0 } else { n * s.events_per_op() };
    Measure {
        startup_ms: startup.map(|x| x * 1e3),
        rss_kib: rss,
        speed_ratio: ops / untraced,
        generated,
        delivered,
        reported_lost: reported_lost(&format!("{stderr}\n{text}")),
        cpu_s_per_m: if delivered > 0 { cpu / delivered as f64 * 1e6 } else { 0.0 },
    }
}

/// One step of the capacity ladder: the open tracer at one offered rate.
#[derive(Clone)]
struct Step {
    rate: f64,
    achieved: f64,
    generated: u64,
    delivered: u64,
    reported_lost: Option<u64>,
}

impl Step {
    fn lossless(&self) -> bool {
        self.delivered == self.generated && self.reported_lost.unwrap_or(0) == 0
    }
    fn exact(&self) -> bool {
        self.reported_lost.unwrap_or(0) == self.generated - self.delivered.min(self.generated)
    }
}

/// Offered rates climb (doubling) until the workload cannot reach the rate (the machine's
/// limit) or two steps lost events; each step writes the tracer's output to a file.
fn capacity(t: &Tracer, dir: &Path, smoke: bool) -> Vec<Step> {
    let threads = thread::available_parallelism().map_or(2, |n| n.get());
    let secs = if smoke { 0.2 } else { 2.0 };
    let mut rate = if smoke { 20_000.0 } else { 100_000.0 };
    let mut steps: Vec<Step> = Vec::new();
    loop {
        let file = dir.join(format!("capacity-{}.out", t.name.replace(' ', "_")));
        let mut child = start_tracer(t, Stdio::from(fs::File::create(&file).unwrap()));
        thread::sleep(Duration::from_millis(700));
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["__work", "rate", &rate.to_string(), &secs.to_string(), &threads.to_string()])
            .output()
            .unwrap();
        thread::sleep(Duration::from_millis(1500));
        let stderr = stop(&mut child);
        let text = fs::read_to_string(&file).unwrap_or_default();
        let words: Vec<f64> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|w| w.parse().ok()).collect();
        let (ops, took) = (words.first().copied().unwrap_or(0.0), words.get(1).copied().unwrap_or(f64::NAN));
        let step = Step {
            rate,
            achieved: ops / took,
            generated: ops as u64,
            delivered: text.lines().filter(|l| l.contains(MARK)).count() as u64,
            reported_lost: reported_lost(&format!("{stderr}\n{text}")),
        };
        eprintln!(
            "bench: capacity / {}: offered {:.0}/s, made {:.0}/s, delivered {} of {}, lost reported {:?}",
            t.name, rate, step.achieved, step.delivered, step.generated, step.reported_lost
        );
        let machine_limit = step.achieved < 0.8 * rate;
        steps.push(step);
        let losses = steps.iter().filter(|s| !s.lossless()).count();
        if smoke || machine_limit || losses >= 2 {
            return steps;
        }
        rate *= 2.0;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__work") {
        work(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("__cgwork") {
        cgroup::work(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("__sm") {
        sockmap::work(&args[1..]);
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    let out_json = args.windows(2).find(|w| w[0] == "--out").map(|w| PathBuf::from(&w[1]));
    let only: Vec<&str> = args.windows(2).filter(|w| w[0] == "--scenario").map(|w| w[1].as_str()).collect();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("error: the benchmark loads BPF programs: run it as root (cargo run runs it through sudo)");
        std::process::exit(1);
    }
    if !tracekit().exists() {
        eprintln!("error: `{}` not found: build it first (cargo build --release)", tracekit().display());
        std::process::exit(1);
    }
    let reps = if smoke { 1 } else { 3 };
    let n_of = |s: Scenario| match (s, smoke) {
        (Scenario::Open, false) => 1_000_000,
        (Scenario::Tcp, false) => 20_000,
        (Scenario::Readline, false) => 50_000,
        (Scenario::Open, true) => 2_000,
        (Scenario::Tcp, true) => 100,
        (Scenario::Readline, true) => 100,
    };
    let _ = fs::write(std::env::temp_dir().join(MARK), b"x");
    let dir = tempfile::tempdir().unwrap();
    let (port, _server) = tcp_server();
    let mut results: Vec<serde_json::Value> = Vec::new();
    let mut table = String::new();
    let header = String::from(
        "| scenario | tracer | startup | peak RSS | speed traced/untraced | delivered / generated | lost reported | CPU per 1 M events |\n|---|---|---|---|---|---|---|---|\n",
    );
    for s in [Scenario::Open, Scenario::Tcp, Scenario::Readline] {
        if !only.is_empty() && !only.contains(&s.name()) {
            continue;
        }
        if table.is_empty() {
            table.push_str(&header);
        }
        let n = n_of(s);
        eprintln!("bench: {} (N = {n}, {reps} repetitions)", s.name());
        for (t, missing) in tracers(s) {
            if let Some(why) = missing {
                table.push_str(&format!("| {} | {} | {why} | | | | | |\n", s.name(), t.name));
                results.push(serde_json::json!({"scenario": s.name(), "tracer": t.name, "missing": why}));
                continue;
            }
            let runs: Vec<Measure> = (0..reps).map(|_| measure(s, &t, n, port, dir.path())).collect();
            for m in &runs {
                results.push(serde_json::json!({
                    "scenario": s.name(), "tracer": t.name, "n": n, "startup_ms": m.startup_ms,
                    "rss_kib": m.rss_kib, "speed_ratio": m.speed_ratio, "generated": m.generated,
                    "delivered": m.delivered, "reported_lost": m.reported_lost, "cpu_s_per_m": m.cpu_s_per_m,
                }));
            }
            let med = |f: &dyn Fn(&Measure) -> f64| median(runs.iter().map(f).collect());
            let startup = med(&|m| m.startup_ms.unwrap_or(f64::NAN));
            let rss = med(&|m| m.rss_kib.map_or(f64::NAN, |k| k as f64 / 1024.0));
            let last = runs.last().unwrap();
            let exact = match (last.reported_lost, last.generated.saturating_sub(last.delivered)) {
                _ if t.floor => "–".to_owned(),
                (r, actual) if r.unwrap_or(0) == actual => format!("{} (exact)", r.unwrap_or(0)),
                (r, actual) => format!("{} (actual {actual})", r.map_or("none".into(), |r| r.to_string())),
            };
            table.push_str(&format!(
                "| {} | {} | {} | {:.1} MiB | {:.2} | {} | {} | {} |\n",
                s.name(),
                t.name,
                if startup.is_finite() { format!("{startup:.0} ms") } else { "–".into() },
                rss,
                med(&|m| m.speed_ratio),
                if t.floor { "–".into() } else { format!("{} / {}", last.delivered, last.generated) },
                exact,
                if t.floor { "–".into() } else { format!("{:.2} s", med(&|m| m.cpu_s_per_m)) },
            ));
            eprintln!("bench: {} / {}: done", s.name(), t.name);
        }
    }
    if only.is_empty() || only.contains(&"capacity") {
        table.push_str(
            "\n| capacity (open) | highest rate with zero loss | above it: made | delivered / generated | lost reported |\n|---|---|---|---|---|\n",
        );
        eprintln!("bench: capacity (openat of a missing marker path from every CPU, doubling rates)");
        for (t, missing) in tracers(Scenario::Open) {
            if t.floor {
                continue;
            }
            if let Some(why) = missing {
                table.push_str(&format!("| {} | {why} | | | |\n", t.name));
                continue;
            }
            let steps = capacity(&t, dir.path(), smoke);
            for st in &steps {
                results.push(serde_json::json!({
                    "scenario": "capacity", "tracer": t.name, "offered_rate": st.rate, "achieved_rate": st.achieved,
                    "generated": st.generated, "delivered": st.delivered, "reported_lost": st.reported_lost,
                }));
            }
            let best = steps.iter().filter(|s| s.lossless()).map(|s| s.achieved).fold(f64::NAN, f64::max);
            let best = if best.is_finite() { format!("{:.2} M/s", best / 1e6) } else { "none".into() };
            match steps.iter().find(|s| !s.lossless()) {
                Some(st) => table.push_str(&format!(
                    "| {} | {best} | {:.2} M/s | {} / {} | {} ({}) |\n",
                    t.name,
                    st.achieved / 1e6,
                    st.delivered,
                    st.generated,
                    st.reported_lost.map_or("none".into(), |n| n.to_string()),
                    if st.exact() { "exact" } else { "wrong" },
                )),
                None => table
                    .push_str(&format!("| {} | {best} (no loss up to the machine's limit) | – | – | – |\n", t.name)),
            }
        }
    }
    if only.is_empty() || only.contains(&"net-cost") {
        table.push_str(&net::cost(smoke, &mut results));
    }
    if only.is_empty() || only.contains(&"net-filter") {
        table.push_str(&net::filter_cost(smoke, &mut results));
    }
    if only.is_empty() || only.contains(&"net-capacity") {
        table.push_str(&net::capacity(smoke, args.iter().any(|a| a == "--live-frames"), dir.path(), &mut results));
    }
    if only.is_empty() || only.contains(&"cgroup") {
        table.push_str(&cgroup::run(smoke, &mut results));
    }
    if only.is_empty() || only.contains(&"forward") {
        table.push_str(&forward::run(smoke, &mut results));
    }
    // `--scenario sockmap` runs the echo, proxy and bypass rows, `--scenario sklookup` the
    // sk_lookup rows; a full run both
    let (flows, sklookup) = (only.contains(&"sockmap"), only.contains(&"sklookup"));
    if only.is_empty() || flows || sklookup {
        table.push_str(&sockmap::run(
            smoke,
            only.is_empty() || flows,
            only.is_empty() || sklookup,
            dir.path(),
            &mut results,
        ));
    }
    if only.is_empty() || only.contains(&"tcpcc") {
        table.push_str(&tcpcc::run(smoke, only.contains(&"tcpcc"), &args, &mut results));
    }
    if args.iter().any(|a| a == "--json") {
        eprintln!("{table}");
        println!("{}", serde_json::to_string_pretty(&results).unwrap());
    } else {
        println!("{table}");
    }
    if let Some(p) = out_json {
        fs::write(&p, serde_json::to_string_pretty(&results).unwrap()).unwrap();
        eprintln!("bench: raw results in {}", p.display());
    }
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &results {
        *by.entry(if r.get("missing").is_some() { "missing" } else { "measured" }).or_default() += 1;
    }
    eprintln!("bench: {by:?}");
}
