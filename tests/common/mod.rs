//! Helpers for the root integration tests: run the real tracekit binary, wait until it is
//! attached, collect its output, and check that nothing of it stays in the kernel.
#![allow(dead_code)]

pub mod cgroup;
pub mod fwd;
pub mod net;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tracekit");

/// Prints `SKIP test: reason` to the real stderr (the harness swallows `eprintln!` of a passing
/// test). Only for a feature the running kernel truly does not have.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {reason}");
}

/// Root tests need root. Outside CI a non-root run says so and skips; in CI (CI=true) it fails,
/// since CI is where they must run.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root, and CI must run it as root");
    }
    // Written to the real stderr: the test harness would swallow eprintln! of a passing test.
    let _ = writeln!(std::io::stderr(), "SKIP {test}: needs root (run `cargo test` as root or with sudo)");
    false
}

/// Program, link and map ids a process holds, from /proc/PID/fdinfo.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfIds {
    pub progs: BTreeSet<u32>,
    pub links: BTreeSet<u32>,
    pub maps: BTreeSet<u32>,
}

impl BpfIds {
    pub fn of(pid: u32) -> Self {
        let mut ids = BpfIds::default();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return ids };
        for entry in dir.flatten() {
            let Ok(info) = std::fs::read_to_string(entry.path()) else { continue };
            for line in info.lines() {
                let mut it = line.split(':');
                let (Some(k), Some(v)) = (it.next(), it.next()) else { continue };
                let Ok(v) = v.trim().parse::<u32>() else { continue };
                match k {
                    "prog_id" => ids.progs.insert(v),
                    "link_id" => ids.links.insert(v),
                    "map_id" => ids.maps.insert(v),
                    _ => false,
                };
            }
        }
        ids
    }

    /// Those ids the kernel still knows.
    pub fn still_loaded(&self) -> BpfIds {
        use libbpf_rs::libbpf_sys as sys;
        let alive = |get: unsafe extern "C" fn(u32) -> i32, id: u32| {
            // SAFETY: the *_get_fd_by_id calls take a plain id and return a new fd or an error.
            let fd = unsafe { get(id) };
            if fd >= 0 {
                // SAFETY: fd was just returned to us and is closed once.
                unsafe { libc::close(fd) };
                true
            } else {
                false
            }
        };
        BpfIds {
            progs: self.progs.iter().copied().filter(|&i| alive(sys::bpf_prog_get_fd_by_id, i)).collect(),
            links: self.links.iter().copied().filter(|&i| alive(sys::bpf_link_get_fd_by_id, i)).collect(),
            maps: self.maps.iter().copied().filter(|&i| alive(sys::bpf_map_get_fd_by_id, i)).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.progs.is_empty() && self.links.is_empty() && self.maps.is_empty()
    }
}

/// Programs and maps are freed asynchronously (10-50 ms after the last fd), so poll.
#[track_caller]
pub fn assert_released(ids: &BpfIds, how: &str) {
    assert!(!ids.progs.is_empty(), "{how}: no BPF program ids were seen while tracing");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = ids.still_loaded();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("{how}: still in the kernel after exit: {left:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub struct Tracer {
    pub child: Child,
    stdout_lines: Option<Receiver<String>>,
    pub stdout_raw: Option<ChildStdout>,
    stderr: Receiver<String>,
    stderr_seen: Vec<String>,
    pub ids: BpfIds,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Finished {
    pub fn json(&self) -> Vec<Value> {
        self.stdout.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
    }

    pub fn events(&self) -> Vec<Value> {
        self.json().into_iter().filter(|v| v["type"] == "event").collect()
    }

    pub fn summary(&self) -> Value {
        self.json().into_iter().find(|v| v["type"] == "summary").expect("a summary object")
    }
}

fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Tracer {
    /// Starts `tracekit ARGS -v` and returns once it is attached.
    pub fn start(args: &[&str]) -> Tracer {
        Self::start_opts(args, true)
    }

    /// `read_stdout: false` leaves stdout unread (in `stdout_raw`), to make the tracer block.
    pub fn start_opts(args: &[&str], read_stdout: bool) -> Tracer {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tracekit starts");
        let stderr = lines_of(child.stderr.take().expect("piped stderr"));
        let out = child.stdout.take().expect("piped stdout");
        let (stdout_lines, stdout_raw) = if read_stdout { (Some(lines_of(out)), None) } else { (None, Some(out)) };
        let mut t = Tracer { child, stdout_lines, stdout_raw, stderr, stderr_seen: Vec::new(), ids: BpfIds::default() };
        t.wait_stderr("attached after", Duration::from_secs(30));
        t.ids = BpfIds::of(t.child.id());
        t
    }

    /// Waits for a stderr line containing `needle` (lines already read count: `start` reads up to
    /// "attached after"); panics with all stderr on timeout or exit.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) {
        if self.stderr_seen.iter().any(|l| l.contains(needle)) {
            return;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.stderr.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.stderr_seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => panic!(
                    "tracekit never printed {needle:?}; status {:?}; stderr:\n{}",
                    self.child.try_wait(),
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill() on the pid of a child we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Stops with SIGINT (like Ctrl-C) and collects everything.
    pub fn stop(self) -> Finished {
        self.signal(libc::SIGINT);
        self.wait(Duration::from_secs(20))
    }

    /// Waits for the tracer to exit by itself (or kills it after `timeout`, failing).
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waitpid") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(2)) {
                    self.stderr_seen.push(l);
                }
                panic!("tracekit did not exit within {timeout:?}; stderr:\n{}", self.stderr_seen.join("\n"));
            }
            thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = Vec::new();
        if let Some(rx) = self.stdout_lines.take() {
            while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
                stdout.push(l);
            }
        }
        if let Some(mut raw) = self.stdout_raw.take() {
            let mut s = String::new();
            raw.read_to_string(&mut s).expect("read stdout");
            stdout.extend(s.lines().map(str::to_owned));
        }
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            self.stderr_seen.push(l);
        }
        Finished { status, stdout, stderr: self.stderr_seen.join("\n") }
    }
}

/// A test that panics before stopping its tracer must not leave it running (and attached).
impl Drop for Tracer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs tracekit to completion (for errors and self-terminating runs).
pub fn run(args: &[&str]) -> Finished {
    let out = Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("tracekit runs");
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The test program of tests/progs, compiled with the system C compiler (frame pointers kept,
/// so that user stacks can be walked).
pub fn target_program() -> std::path::PathBuf {
    static PROG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PROG.get_or_init(|| {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/progs/uprobe_target.c");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        // Built under a per-process name, then renamed: test binaries may build it at once.
        let tmp = dir.join(format!("uprobe_target.{}", std::process::id()));
        let out = dir.join("uprobe_target");
        let status = Command::new("cc")
            .args(["-O1", "-g", "-pthread", "-fno-inline", "-fno-omit-frame-pointer", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("cc runs (gcc is part of the build requirements)");
        assert!(status.success(), "compiling {}", src.display());
        std::fs::rename(&tmp, &out).expect("install the test program");
        out
    })
    .clone()
}

/// The ways tracekit ends, for the tests that check each leaves nothing behind.
#[derive(Debug, Clone, Copy)]
pub enum Exit {
    Interrupt,
    Terminate,
    Duration,
    Count,
    ClosedPipe,
    Kill,
}

impl Exit {
    /// Sends the signal this way of ending is (the others end by themselves).
    pub fn signal(self, t: &Tracer) {
        match self {
            Exit::Interrupt => t.signal(libc::SIGINT),
            Exit::Terminate => t.signal(libc::SIGTERM),
            Exit::Kill => t.signal(libc::SIGKILL),
            Exit::Duration | Exit::Count | Exit::ClosedPipe => {}
        }
    }

    /// Ends `t` this way (signals it, or waits for it to end by itself) and checks how it
    /// ended: the status, and no panic.
    pub fn end(self, t: Tracer, timeout: Duration, how: &str) -> Finished {
        self.signal(&t);
        let out = t.wait(timeout);
        self.assert_status(&out, how);
        assert!(!out.stderr.contains("panicked"), "{how}: {}", out.stderr);
        out
    }

    /// A run ended by `-n 1` printed exactly one event, an `event` one; returns it (None for
    /// the other ways of ending).
    pub fn the_counted_event(self, out: &Finished, event: &str, how: &str) -> Option<Value> {
        if !matches!(self, Exit::Count) {
            return None;
        }
        let ev = out.events();
        assert_eq!(ev.len(), 1, "{how}: {:?}", out.stdout);
        assert_eq!(ev[0]["event"], event, "{how}: {}", ev[0]);
        ev.into_iter().next()
    }

    /// The status a run ended this way must have: killed by SIGKILL, else exit 0.
    pub fn assert_status(self, out: &Finished, what: &str) {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Exit::Kill => assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{what}: killed"),
            _ => assert_eq!(out.status.code(), Some(0), "{what} {self:?}: {}", out.stderr),
        }
    }
}

/// The congestion control names `tracekit tcpcc load` registers are the kernel's, not a
/// namespace's: every test that registers them holds this lock for its whole run (an exclusive
/// `flock`, across test binaries; released when the file closes, also on a panic).
pub fn lock_tcpcc_names() -> std::fs::File {
    use std::os::fd::AsRawFd;
    const LOCK: &str = "/run/lock/tracekit-tcpcc.lock";
    // The VM guests mount an empty tmpfs on /run.
    std::fs::create_dir_all("/run/lock").expect("mkdir /run/lock");
    let f =
        std::fs::File::options().create(true).append(true).open(LOCK).unwrap_or_else(|e| panic!("open {LOCK}: {e}"));
    // SAFETY: flock on an fd we own; blocks until no other open file description holds it.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {LOCK}: {}", std::io::Error::last_os_error());
    f
}
