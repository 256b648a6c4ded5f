//! `tracekit tcpcc load`'s congestion control algorithms (tk_reno, tk_vegas) next to the
//! kernel's own reno, cubic and vegas: goodput of one and of four parallel TCP flows over a
//! lossy, delayed path, and how evenly four flows share it (issue #19).
//!
//! ```text
//!   sender ns (iperf3 -c)                               receiver ns (iperf3 -s)
//!   tkcc0 10.202.0.1  -- netem delay 10ms loss 0.1% -->  tkcc1 10.202.0.2
//!                     <-- netem delay 10ms loss 0.1% --
//! ```
//!
//! Two namespaces of our own joined by a veth pair; netem on the egress of both ends, 10 ms each
//! way (a 20 ms round trip) and 0.1 % loss each way (the data direction's loss is what counts:
//! an ack lost now and then is covered by the next one). Both ends take one segment per packet
//! (`gso_max_segs 1`), so that netem drops single segments, not whole GSO packets of many
//! (turning GSO off does not do it: TCP always builds GSO packets and the stack splits them
//! after the qdisc, where netem has already decided). The metrics cache is off
//! (`tcp_no_metrics_save`): a connection would otherwise start from the ssthresh the previous
//! one left. `tracekit tcpcc load tk_reno tk_vegas` registers the BPF algorithms for the whole
//! run; iperf3 picks one per test with `-C ALGO` (setsockopt TCP_CONGESTION), and its JSON says
//! which one the sender really used (checked).
//!
//! Each round runs every algorithm (the order rotated from round to round) with one flow and
//! with four (`-P 4`), for `--tcpcc-secs` seconds each (30; `--smoke`: 3), over
//! `--tcpcc-rounds` rounds (5; `--smoke`: 1): about 28 minutes in a TCG guest. Goodput is what
//! the receiver got (iperf3's `sum_received`); Jain's fairness index is over the four streams'
//! received bytes: 1 when they are equal, 1/4 when one flow has everything. A flow sees about
//! two losses a second, so one 30 s test of one flow varies by ±10–15 %: the targets table gives
//! the ratios of the means with twice their standard error. A flow's ceiling by Mathis et al.
//! is MSS / RTT · √(3/2) / √p, about 22 Mbit/s here. Before the netem runs, cubic and tk_reno
//! run for 10 s each without netem: the most this machine moves over the veth (in a TCG guest,
//! the CPU's limit), to show that the delay and the loss, not the CPU, limit the netem figures.
//! The sender's TcpExt counters (timeouts, loss probes, SACK recoveries) are kept per test.
//!
//! netem is a module (`sch_netem`) that some kernels lack: without it `--scenario tcpcc` stops
//! with the command that runs it in the VM kernel matrix's 6.12 guest, which has it; a full run
//! (no `--scenario`) skips it with a note.
//!
//! Cleanup: the namespaces are deleted on drop; tracekit and iperf3 die with the bench
//! (PR_SET_PDEATHSIG); the namespaces of a bench that was killed are deleted at the next start.

use std::fs;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::net::ip;

const DEV_A: &str = "tkcc0";
const DEV_B: &str = "tkcc1";
const IP_A: &str = "10.202.0.1";
const IP_B: &str = "10.202.0.2";
const MAC_A: &str = "02:00:0a:ca:00:01";
const MAC_B: &str = "02:00:0a:ca:00:02";
const PORT: u16 = 9404;
/// netem on each end's egress: half the round trip each way, the loss on both.
const NETEM: [&str; 4] = ["delay", "10ms", "loss", "0.1%"];
const RTT_S: f64 = 0.020;
const LOSS: f64 = 0.001;
/// Payload bytes per segment (1500 MTU − IPv4 − TCP with timestamps).
const MSS: f64 = 1448.0;
/// Streams of the parallel test.
const PARALLEL: usize = 4;

/// (name, who provides it): every algorithm runs in every round.
const ALGOS: [(&str, &str); 5] = [
    ("tk_reno", "tracekit (BPF)"),
    ("reno", "kernel"),
    ("cubic", "kernel"),
    ("tk_vegas", "tracekit (BPF)"),
    ("vegas", "kernel (tcp_vegas)"),
];

/// The two namespaces `tkb-cc{a,b}-PID` and the veth pair between them; deleted on drop.
struct Veth {
    a: String,
    b: String,
}

fn del_ns(ns: &str) {
    let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
}

/// `ip netns exec NS ARGS…`: Ok, or what it said.
fn exec_in(ns: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(args).output().map_err(|e| format!("{e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` in {ns}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Veth {
    fn new() -> Veth {
        // namespaces of a bench that was killed: no destructor ran
        for e in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix("tkb-cca-").or_else(|| name.strip_prefix("tkb-ccb-"));
            if pid.is_some_and(|p| p.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(p).exists()) {
                eprintln!("bench: tcpcc: deleting namespace {name}, left by an earlier run");
                del_ns(&name);
            }
        }
        let pid = std::process::id();
        let p = Veth { a: format!("tkb-cca-{pid}"), b: format!("tkb-ccb-{pid}") };
        ip(&["netns", "add", &p.a]);
        ip(&["netns", "add", &p.b]);
        // one segment per packet: TCP always builds GSO packets (the stack splits them after the
        // qdisc) unless the device says it takes one segment at a time; netem would drop whole
        // GSO packets of up to 44 segments otherwise, far fewer loss events than 0.1 % per segment
        let add = format!(
            "-n {} link add {DEV_A} address {MAC_A} gso_max_segs 1 type veth peer name {DEV_B} address {MAC_B} \
             gso_max_segs 1 netns {}",
            p.a, p.b
        );
        ip(&add.split(' ').collect::<Vec<_>>());
        for (ns, dev, me, peer, peer_mac) in [(&p.a, DEV_A, IP_A, IP_B, MAC_B), (&p.b, DEV_B, IP_B, IP_A, MAC_A)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{me}/24"), "dev", dev]);
            ip(&["-n", ns, "neigh", "replace", peer, "lladdr", peer_mac, "dev", dev, "nud", "permanent"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            exec_in(ns, &["sysctl", "-qw", "net.ipv4.tcp_no_metrics_save=1"]).expect("tcp_no_metrics_save");
            for key in ["all", "default"] {
                let _ = exec_in(ns, &["sysctl", "-qw", &format!("net.ipv6.conf.{key}.disable_ipv6=1")]);
            }
        }
        p
    }

    /// netem on both ends (or none): Err with tc's words when the kernel has no netem.
    fn netem(&self, on: bool) -> Result<(), String> {
        for (ns, dev) in [(&self.a, DEV_A), (&self.b, DEV_B)] {
            let mut args = vec!["-n", ns, "qdisc"];
            if on {
                args.extend(["replace", "dev", dev, "root", "netem"]);
                args.extend(NETEM);
            } else {
                args.extend(["del", "dev", dev, "root"]);
            }
            let out = Command::new("tc").args(&args).output().map_err(|e| format!("run `tc` (iproute2): {e}"))?;
            if !out.status.success() {
                return Err(format!("`tc {}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        Ok(())
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        del_ns(&self.a);
        del_ns(&self.b);
    }
}

/// A command that runs in namespace `ns` (setns before exec) and dies with the bench.
fn spawn_in(ns: &str, c: &mut Command) -> std::io::Result<Child> {
    crate::sockmap::spawn_in(ns, None, c)
}

// ---------------------------------------------------------------- tracekit and iperf3

/// `tracekit tcpcc load tk_reno tk_vegas --json`, once both are registered.
fn start_tracekit() -> Result<(Child, mpsc::Receiver<String>), String> {
    let mut c = Command::new(crate::tracekit());
    c.args(["tcpcc", "load", "tk_reno", "tk_vegas", "--json"]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    crate::cgroup::die_with_parent(&mut c, libc::SIGTERM);
    let mut child = c.spawn().map_err(|e| format!("spawn {}: {e}", crate::tracekit().display()))?;
    let said = crate::lines_of(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    // libbpf's load and the verifier are slow in a TCG guest
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match said.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("select per socket") => return Ok((child, said)),
            Ok(l) => seen.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    crate::stop_child(&mut child);
    Err(format!("`tracekit tcpcc load tk_reno tk_vegas` did not register them: {}", seen.join(" / ")))
}

/// The algorithms this kernel offers now (tracekit's included while it runs).
fn available() -> Vec<String> {
    fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether iperf3 listens on PORT in the namespace of `pid`.
fn listening(pid: u32) -> bool {
    crate::sockmap::listening(pid, PORT)
}

struct Server(Child);

impl Server {
    fn start(ns: &str) -> Result<Server, String> {
        let mut c = Command::new("iperf3");
        c.args(["-s", "-p", &PORT.to_string(), "-B", IP_B]).stdin(Stdio::null()).stdout(Stdio::null());
        c.stderr(Stdio::null());
        let s = Server(spawn_in(ns, &mut c).map_err(|e| format!("start iperf3 -s: {e}"))?);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listening(s.0.id()) {
            if Instant::now() > deadline {
                return Err("iperf3 -s did not listen within 30 s".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(s)
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sender namespace's TCP counters that tell how losses were recovered (TcpExt of
/// /proc/net/netstat, read inside the namespace).
const COUNTERS: [&str; 4] = ["TCPTimeouts", "TCPLossProbes", "TCPSackRecovery", "TCPSpuriousRTOs"];

fn tcp_counters(ns: &str) -> [u64; COUNTERS.len()] {
    let out = Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/netstat"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let mut ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (ext.next().unwrap_or_default(), ext.next().unwrap_or_default());
    let pairs: Vec<(&str, u64)> =
        names.split_whitespace().zip(values.split_whitespace()).map(|(n, v)| (n, v.parse().unwrap_or(0))).collect();
    COUNTERS.map(|c| pairs.iter().find(|(n, _)| *n == c).map_or(0, |(_, v)| *v))
}

/// All CPUs' (busy, total) seconds from /proc/stat.
fn cpu_times() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// One iperf3 test.
#[derive(Clone)]
struct Test {
    /// Receiver-side bits per second, all streams.
    goodput: f64,
    /// Bytes each stream's receiver got.
    streams: Vec<f64>,
    retransmits: u64,
    sent_bytes: u64,
    /// Mean of the streams' mean smoothed RTT (µs) as the sender saw it.
    rtt_us: f64,
    /// The machine's CPUs busy over the test (0..1).
    cpu_busy: f64,
    /// COUNTERS' growth in the sender's namespace over the test.
    counters: [u64; COUNTERS.len()],
}

impl Test {
    fn jain(&self) -> f64 {
        jain(&self.streams)
    }

    /// Retransmitted segments over the segments sent.
    fn retrans_ratio(&self) -> f64 {
        self.retransmits as f64 / (self.sent_bytes as f64 / MSS).max(1.0)
    }

    /// One line for the progress log.
    fn describe(&self, secs: u32) -> String {
        let streams = if self.streams.len() > 1 {
            let each: Vec<String> =
                self.streams.iter().map(|b| format!("{:.2}", b * 8.0 / 1e6 / f64::from(secs))).collect();
            format!(" (streams {}; Jain {:.3})", each.join(" "), self.jain())
        } else {
            String::new()
        };
        let counters: Vec<String> = COUNTERS.iter().zip(self.counters).map(|(c, n)| format!("{c} {n}")).collect();
        format!(
            "{:.2} Mbit/s{streams}, {} retransmits ({:.3} %), RTT {:.1} ms, CPU busy {:.0} %, {}",
            self.goodput / 1e6,
            self.retransmits,
            self.retrans_ratio() * 100.0,
            self.rtt_us / 1e3,
            self.cpu_busy * 100.0,
            counters.join(" ")
        )
    }

    /// The raw row, with `extra` (the setup) merged in.
    fn json(&self, extra: serde_json::Value) -> serde_json::Value {
        let counters: serde_json::Map<String, serde_json::Value> =
            COUNTERS.iter().zip(self.counters).map(|(c, n)| (c.to_string(), n.into())).collect();
        let mut v = serde_json::json!({
            "scenario": "tcpcc", "flows": self.streams.len(), "goodput_bps": self.goodput,
            "stream_bytes": self.streams, "jain": if self.streams.len() > 1 { self.jain() } else { f64::NAN },
            "retransmits": self.retransmits, "sent_bytes": self.sent_bytes, "retrans_ratio": self.retrans_ratio(),
            "mean_rtt_us": self.rtt_us, "cpu_busy": self.cpu_busy, "sender_tcpext": counters,
        });
        if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        v
    }
}

/// Jain's fairness index: (Σx)² / (n · Σx²).
fn jain(x: &[f64]) -> f64 {
    let (sum, sq) = x.iter().fold((0.0, 0.0), |(s, q), v| (s + v, q + v * v));
    if sq > 0.0 { sum * sum / (x.len() as f64 * sq) } else { f64::NAN }
}

fn iperf(ns: &str, algo: &str, flows: usize, secs: u32) -> Result<Test, String> {
    let mut c = Command::new("iperf3");
    c.args(["-c", IP_B, "-p", &PORT.to_string(), "-C", algo, "-t", &secs.to_string(), "-P", &flows.to_string()]);
    c.args(["-J", "--connect-timeout", "10000"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (cpu0, n0) = (cpu_times(), tcp_counters(ns));
    let mut child = spawn_in(ns, &mut c).map_err(|e| format!("start iperf3 -c: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    // a TCG guest is slow to start, to connect and to exchange the results
    let deadline = Instant::now() + Duration::from_secs(u64::from(secs) + 90);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().map_err(|e| format!("iperf3: {e}"))?;
    let (cpu1, n1) = (cpu_times(), tcp_counters(ns));
    let text = reader.join().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| format!("iperf3 exited {status} without JSON: {}", err.trim().replace('\n', " / ")))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    let end = &v["end"];
    let used = end["sender_tcp_congestion"].as_str().unwrap_or("?");
    if used != algo {
        return Err(format!("asked for `{algo}`, the sender used `{used}`"));
    }
    let streams: Vec<&serde_json::Value> = end["streams"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    if streams.len() != flows {
        return Err(format!("{} streams in iperf3's result, {flows} asked for", streams.len()));
    }
    let rtts: Vec<f64> = streams.iter().filter_map(|s| s["sender"]["mean_rtt"].as_f64()).collect();
    Ok(Test {
        goodput: end["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0),
        streams: streams.iter().map(|s| s["receiver"]["bytes"].as_f64().unwrap_or(0.0)).collect(),
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        sent_bytes: end["sum_sent"]["bytes"].as_u64().unwrap_or(0),
        rtt_us: rtts.iter().sum::<f64>() / rtts.len().max(1) as f64,
        cpu_busy: (cpu1.0 - cpu0.0) / (cpu1.1 - cpu0.1).max(1e-9),
        counters: std::array::from_fn(|i| n1[i].saturating_sub(n0[i])),
    })
}

// ---------------------------------------------------------------- statistics

/// mean, min, max, sample standard deviation.
fn stats(v: &[f64]) -> (f64, f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (mean, v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max), sd)
}

/// "21.3 (19.8–22.9)": the mean and the range over the rounds.
fn spread(v: &[f64], scale: f64, digits: usize) -> String {
    let (mean, min, max, _) = stats(v);
    match v.len() {
        0 => "–".into(),
        1 => format!("{:.digits$}", mean / scale),
        _ => format!("{:.digits$} ({:.digits$}–{:.digits$})", mean / scale, min / scale, max / scale),
    }
}

/// Per-flow ceiling by Mathis et al.: MSS / RTT · √(3/2) / √p, in bits per second.
fn mathis(rtt_s: f64) -> f64 {
    MSS * 8.0 / rtt_s * (1.5f64).sqrt() / LOSS.sqrt()
}

// ---------------------------------------------------------------- the run

/// One (algorithm, flows) cell over the rounds, or why it could not run.
#[derive(Default)]
struct Cell {
    tests: Vec<Test>,
    failed: Option<String>,
}

impl Cell {
    fn goodputs(&self) -> Vec<f64> {
        self.tests.iter().map(|t| t.goodput).collect()
    }
    fn mean(&self) -> f64 {
        stats(&self.goodputs()).0
    }
}

fn flag(args: &[String], name: &str) -> Option<u32> {
    args.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse().ok())
}

/// The table (markdown, 80 columns) and raw rows. `asked`: `--scenario tcpcc` was given, so a
/// kernel without netem is an error (exit 1) rather than a note.
pub fn run(smoke: bool, asked: bool, args: &[String], results: &mut Vec<serde_json::Value>) -> String {
    let rounds = flag(args, "--tcpcc-rounds").unwrap_or(if smoke { 1 } else { 5 }).max(1) as usize;
    let secs = flag(args, "--tcpcc-secs").unwrap_or(if smoke { 3 } else { 30 }).max(1);
    let base_secs = if smoke { 2 } else { 10 };
    if crate::which("iperf3").is_none() {
        let why = "`iperf3` not installed (apt-get install iperf3)";
        if asked {
            eprintln!("error: tcpcc: {why}");
            std::process::exit(1);
        }
        return format!("\ntcpcc: skipped: {why}\n");
    }
    let path = Veth::new();
    if let Err(e) = path.netem(true) {
        drop(path);
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "tracekit-bench".into());
        let why = format!("netem is not available in this kernel ({e})");
        let hint = format!(
            "run it in the VM kernel matrix's 6.12 guest (it loads sch_netem), as root from the checkout:\n  \
             TRACEKIT_VM_KERNEL=6.12 TRACEKIT_VM_SCRIPT='{exe} --scenario tcpcc' cargo test --test vm_matrix \
             vm_script -- --ignored --nocapture"
        );
        if asked {
            eprintln!("error: tcpcc: {why}\nhint: {hint}");
            std::process::exit(1);
        }
        return format!("\ntcpcc: skipped: {why}; {hint}\n");
    }
    path.netem(false).expect("remove netem again");
    let mut notes = Vec::new();
    let (mut tracekit, tk_said) = match start_tracekit() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bench: tcpcc: {e}");
            return format!("\ntcpcc: failed: {e}\n");
        }
    };
    let mut have = available();
    if !have.iter().any(|a| a == "vegas") {
        let _ = Command::new("modprobe").arg("tcp_vegas").stderr(Stdio::null()).status();
        have = available();
    }
    let mut server = match Server::start(&path.b) {
        Ok(s) => s,
        Err(e) => {
            crate::stop_child(&mut tracekit);
            return format!("\ntcpcc: failed: {e}\n");
        }
    };
    eprintln!(
        "bench: tcpcc ({IP_A} ↔ {IP_B} over veth; available: {}; {rounds} rounds × {secs} s per algorithm and flow \
         count: about {} min)",
        have.join(" "),
        (4 * (base_secs + 2) + rounds as u32 * ALGOS.len() as u32 * 2 * (secs + 2)).div_ceil(60)
    );

    // the machine's own limit: no netem
    let mut base: Vec<(&str, usize, Result<Test, String>)> = Vec::new();
    for algo in ["cubic", "tk_reno"] {
        for flows in [1, PARALLEL] {
            let r = iperf(&path.a, algo, flows, base_secs);
            match &r {
                Ok(t) => {
                    eprintln!("bench: tcpcc / no netem / {algo} / {flows} flow(s): {}", t.describe(base_secs));
                    results.push(t.json(serde_json::json!({"netem": false, "algo": algo, "secs": base_secs})));
                }
                Err(e) => eprintln!("bench: tcpcc / no netem / {algo} / {flows} flow(s): {e}"),
            }
            base.push((algo, flows, r));
        }
    }

    path.netem(true).expect("netem again");
    let mut cells: Vec<[Cell; 2]> = ALGOS.iter().map(|_| [Cell::default(), Cell::default()]).collect();
    for (i, (name, _)) in ALGOS.iter().enumerate() {
        if !have.iter().any(|a| a == name) {
            let why = format!("`{name}` not available in this kernel");
            cells[i] =
                [Cell { failed: Some(why.clone()), ..Cell::default() }, Cell { failed: Some(why), ..Cell::default() }];
        }
    }
    for round in 0..rounds {
        for k in 0..ALGOS.len() {
            let i = (k + round) % ALGOS.len();
            let algo = ALGOS[i].0;
            for (j, flows) in [1, PARALLEL].into_iter().enumerate() {
                if cells[i][j].failed.is_some() {
                    continue;
                }
                if !server.alive() {
                    match Server::start(&path.b) {
                        Ok(s) => server = s,
                        Err(e) => {
                            cells[i][j].failed = Some(e);
                            continue;
                        }
                    }
                }
                match iperf(&path.a, algo, flows, secs) {
                    Ok(t) => {
                        eprintln!(
                            "bench: tcpcc / round {} / {algo} / {flows} flow(s): {}",
                            round + 1,
                            t.describe(secs)
                        );
                        results.push(t.json(serde_json::json!({
                            "netem": NETEM.join(" "), "algo": algo, "provider": ALGOS[i].1, "round": round,
                            "secs": secs,
                        })));
                        cells[i][j].tests.push(t);
                    }
                    Err(e) => {
                        eprintln!("bench: tcpcc / round {} / {algo} / {flows} flow(s): {e}", round + 1);
                        cells[i][j].failed = Some(e);
                    }
                }
            }
        }
    }
    drop(server);
    crate::stop_child(&mut tracekit);
    let mut out = String::new();
    if let Some(mut o) = tracekit.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let counts: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "tcpcc_counts")
        .collect();
    for l in tk_said.try_iter().filter(|l| l.contains("warning") || l.contains("error")) {
        notes.push(format!("tracekit said: {l}"));
    }
    for c in &counts {
        results.push(serde_json::json!({"scenario": "tcpcc", "tracekit_counts": c}));
    }
    let summary = table(&cells, &base, &counts, rounds, secs, &notes);
    for (i, (name, provider)) in ALGOS.iter().enumerate() {
        for (j, flows) in [1, PARALLEL].into_iter().enumerate() {
            let c = &cells[i][j];
            let (mean, min, max, sd) = stats(&c.goodputs());
            let (jm, jmin, jmax, _) = stats(&c.tests.iter().map(Test::jain).collect::<Vec<_>>());
            results.push(serde_json::json!({
                "scenario": "tcpcc", "summary": true, "algo": name, "provider": provider, "flows": flows,
                "rounds": c.tests.len(), "secs": secs, "goodput_mean_bps": mean, "goodput_min_bps": min,
                "goodput_max_bps": max, "goodput_sd_bps": sd,
                "jain_mean": if flows > 1 { jm } else { f64::NAN }, "jain_min": if flows > 1 { jmin } else { f64::NAN },
                "jain_max": if flows > 1 { jmax } else { f64::NAN }, "failed": c.failed,
            }));
        }
    }
    summary
}

fn table(
    cells: &[[Cell; 2]],
    base: &[(&str, usize, Result<Test, String>)],
    counts: &[serde_json::Value],
    rounds: usize,
    secs: u32,
    notes: &[String],
) -> String {
    let all: Vec<&Test> = cells.iter().flatten().flat_map(|c| c.tests.iter()).collect();
    let rtt = stats(&all.iter().map(|t| t.rtt_us / 1e6).collect::<Vec<_>>()).0;
    let mut t = format!(
        "\ntcpcc: iperf3 over veth, netem `{}` on each end (RTT {:.0} ms), 1 segment\n\
         per packet; goodput at the receiver, mean (min–max) of {rounds} round(s) × {secs} s\n\n\
         | algorithm | 1 flow, Mbit/s   | 4 flows, Mbit/s  | Jain, 4 flows    | retr. |\n\
         |---|---|---|---|---|\n",
        NETEM.join(" "),
        RTT_S * 1e3
    );
    for (i, (name, _)) in ALGOS.iter().enumerate() {
        let [one, four] = &cells[i];
        if let Some(e) = one.failed.as_ref().filter(|_| one.tests.is_empty()) {
            t.push_str(&format!("| {name:<9} | {} | | | |\n", e.replace('|', "/")));
            continue;
        }
        let cell = |c: &Cell, v: Vec<f64>, scale: f64, digits: usize| match (&c.failed, v.is_empty()) {
            (Some(_), true) => "failed".to_owned(),
            (Some(_), false) => format!("{} (some failed)", spread(&v, scale, digits)),
            (None, _) => spread(&v, scale, digits),
        };
        let retr: Vec<f64> = one.tests.iter().chain(&four.tests).map(Test::retrans_ratio).collect();
        t.push_str(&format!(
            "| {name:<9} | {:<16} | {:<16} | {:<16} | {:.2}% |\n",
            cell(one, one.goodputs(), 1e6, 1),
            cell(four, four.goodputs(), 1e6, 1),
            cell(four, four.tests.iter().map(Test::jain).collect(), 1.0, 2),
            stats(&retr).0 * 100.0
        ));
    }
    // the targets: ratios of the means, ± twice their standard error (about 95 %)
    let idx = |n: &str| ALGOS.iter().position(|(a, _)| *a == n).unwrap();
    let ratio = |a: &str, b: &str, j: usize| {
        let (x, y) = (&cells[idx(a)][j], &cells[idx(b)][j]);
        let rel_se = |c: &Cell| {
            let (mean, _, _, sd) = stats(&c.goodputs());
            sd / (c.tests.len() as f64).sqrt() / mean
        };
        let r = x.mean() / y.mean();
        (r, 2.0 * r * rel_se(x).hypot(rel_se(y)))
    };
    let show = |(r, e): (f64, f64)| match (r.is_finite(), e.is_finite() && e > 0.0) {
        (false, _) => "–".to_owned(),
        (true, false) => format!("{r:.2}"),
        (true, true) => format!("{r:.2} ±{e:.2}"),
    };
    t.push_str(&format!(
        "\n| {:<28} | {:<10} | {:<10} | {:<16} |\n|---|---|---|---|\n",
        "target (± 2 standard errors)", "1 flow", "4 flows", "verdict"
    ));
    for (a, b, target) in [("tk_reno", "reno", true), ("tk_reno", "cubic", true), ("tk_vegas", "vegas", false)] {
        let (r1, r4) = (ratio(a, b, 0), ratio(a, b, 1));
        let verdict = if !(r1.0.is_finite() && r4.0.is_finite()) {
            "not measured".to_owned()
        } else if !target {
            "no target".to_owned()
        } else {
            let miss: Vec<&str> =
                [(r1.0, "1 flow"), (r4.0, "4 flows")].iter().filter(|(r, _)| *r < 0.95).map(|(_, w)| *w).collect();
            if miss.is_empty() { "met".to_owned() } else { format!("not met: {}", miss.join(", ")) }
        };
        let label = if target { format!("{a} ÷ {b} ≥ 0.95") } else { format!("{a} ÷ {b}") };
        t.push_str(&format!("| {label:<28} | {:<10} | {:<10} | {verdict:<16} |\n", show(r1), show(r4)));
    }
    for name in ["tk_reno", "tk_vegas"] {
        let c = &cells[idx(name)][1];
        let (mean, min, _, _) = stats(&c.tests.iter().map(Test::jain).collect::<Vec<_>>());
        let verdict = if !mean.is_finite() {
            "not measured".to_owned()
        } else if min >= 0.9 {
            "met (every round)".to_owned()
        } else if mean >= 0.9 {
            format!("mean met (min {min:.2})")
        } else {
            "not met".to_owned()
        };
        let mean = if mean.is_finite() { format!("{mean:.2}") } else { "–".to_owned() };
        t.push_str(&format!(
            "| {:<28} | {:<10} | {mean:<10} | {verdict:<16} |\n",
            format!("Jain, {name} 4 flows ≥ 0.9"),
            "–"
        ));
    }
    // the machine's limit without netem
    t.push_str(
        "\n| without netem (the CPU's limit)  | 1 flow, Mbit/s | 4 flows, Mbit/s | CPU   |\n|---|---|---|---|\n",
    );
    for algo in ["cubic", "tk_reno"] {
        let get = |flows: usize| base.iter().find(|(a, f, _)| *a == algo && *f == flows).map(|(_, _, r)| r);
        let show = |r: Option<&Result<Test, String>>| match r {
            Some(Ok(t)) => format!("{:.1}", t.goodput / 1e6),
            Some(Err(_)) => "failed".into(),
            None => "–".into(),
        };
        let busy: Vec<f64> =
            [get(1), get(PARALLEL)].into_iter().flatten().filter_map(|r| r.as_ref().ok()).map(|t| t.cpu_busy).collect();
        t.push_str(&format!(
            "| {algo:<32} | {:>14} | {:>15} | {:>3.0} % |\n",
            show(get(1)),
            show(get(PARALLEL)),
            stats(&busy).2 * 100.0
        ));
    }
    // notes: the ceiling, the CPU, tracekit's own counts
    let busy = stats(&all.iter().map(|t| t.cpu_busy).collect::<Vec<_>>());
    t.push_str(&format!(
        "\nMathis' ceiling per flow at the measured mean RTT {:.1} ms: {:.1} Mbit/s\n\
         (at 20 ms: {:.1}). CPU busy during the netem tests: mean {:.0} %, max {:.0} %.\n",
        rtt * 1e3,
        mathis(rtt) / 1e6,
        mathis(RTT_S) / 1e6,
        busy.0 * 100.0,
        busy.2 * 100.0
    ));
    let best_netem = cells.iter().flat_map(|c| c[1].tests.iter()).map(|t| t.goodput).fold(0.0, f64::max);
    let ceiling = base.iter().filter_map(|(_, f, r)| r.as_ref().ok().filter(|_| *f == PARALLEL)).map(|t| t.goodput);
    if let Some(c) = ceiling.fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))))
        && best_netem > 0.5 * c
    {
        t.push_str(&format!(
            "Warning: 4 flows over netem reached {:.0} Mbit/s, {:.0} % of the {:.0} Mbit/s\n\
             the machine moves without netem: the CPU may limit the netem figures too.\n",
            best_netem / 1e6,
            best_netem / c * 100.0,
            c / 1e6
        ));
    }
    let rtos: Vec<String> = ALGOS
        .iter()
        .zip(cells)
        .map(|((name, _), c)| format!("{name} {}", c.iter().flat_map(|c| &c.tests).map(|t| t.counters[0]).sum::<u64>()))
        .collect();
    t.push_str(&format!("Retransmission timeouts at the sender, all tests:\n  {}.\n", rtos.join(", ")));
    for c in counts {
        t.push_str(&format!(
            "tracekit's {} decided: {} sockets, {} losses, {} undos, {} delay moves.\n",
            c["algo"].as_str().unwrap_or("?"),
            c["init"],
            c["loss"],
            c["undo"],
            c["delay_down"].as_u64().unwrap_or(0) + c["delay_hold"].as_u64().unwrap_or(0)
        ));
    }
    for n in notes {
        t.push_str(&format!("Note: {n}\n"));
    }
    t
}
