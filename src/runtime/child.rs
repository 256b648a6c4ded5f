//! `-- CMD`: start CMD held at a gate, so that tracing is attached and its pid is followed
//! before it runs a single instruction of its own.
//!
//! The child is tracekit itself in a hidden `__exec-gate` mode: it waits for one byte on an
//! inherited pipe and then execs CMD (same pid). If tracekit dies before releasing it, the
//! pipe closes and the gate exits without running CMD.

use std::ffi::OsString;
use std::io::{self, PipeWriter, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::error::Error;

/// Exit status of the gate when tracekit went away before releasing it.
const GATE_ABANDONED: i32 = 125;
/// How long CMD has to exit after SIGTERM before it and its descendants get SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(1500);
/// After CMD died of SIGINT, SIGTERM or SIGHUP, how long tracekit waits for its own copy of the signal.
const SIGNAL_SIBLING_WAIT: Duration = Duration::from_millis(250);

pub struct GatedChild {
    child: Child,
    gate: Option<PipeWriter>,
    status: Option<ExitStatus>,
    /// Tracing ended before CMD did (Ctrl-C, --duration, --count, closed stdout, -p exits).
    tracing_ended: bool,
}

impl GatedChild {
    pub fn spawn(cmd: &[OsString]) -> Result<Self, Error> {
        Self::spawn_with(cmd, false)
    }

    /// [`GatedChild::spawn`]; with `die_with_tracekit`, CMD gets SIGKILL when tracekit dies
    /// (PR_SET_PDEATHSIG, kept across exec): for a CMD that must not outlive what confines it.
    pub fn spawn_with(cmd: &[OsString], die_with_tracekit: bool) -> Result<Self, Error> {
        let (reader, writer) = io::pipe().map_err(|e| Error::io("creating the `-- CMD` gate pipe", e))?;
        let fd = reader.as_raw_fd();
        let exe = std::env::current_exe().map_err(|e| Error::io("finding tracekit's own executable", e))?;
        let mut c = Command::new(exe);
        c.arg("__exec-gate").arg(fd.to_string()).arg("--").args(cmd);
        // SAFETY: only fcntl and prctl run between fork and exec; both are async-signal-safe
        // and touch nothing but the child's own state.
        unsafe {
            c.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if die_with_tracekit && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().map_err(|e| Error::io("starting `-- CMD`", e))?;
        drop(reader);
        Ok(GatedChild { child, gate: Some(writer), status: None, tracing_ended: false })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets CMD run.
    pub fn release(&mut self) -> Result<(), Error> {
        if let Some(mut w) = self.gate.take() {
            w.write_all(b"g").map_err(|e| Error::io("releasing `-- CMD`", e))?;
        }
        Ok(())
    }

    /// The exit status once CMD has exited (never blocks).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Tracing stopped for its own reason: CMD's status is no longer what tracekit passes on.
    pub fn tracing_ended(&mut self) {
        self.tracing_ended = true;
    }

    /// Returns the exit code tracekit passes on: CMD's own (its code, or 128 + signal) when CMD
    /// ended first; 0 when tracing stopped first (even if CMD has exited since) (Ctrl-C, --duration, --count, a closed stdout)
    /// and tracekit ends CMD itself: SIGTERM to CMD and every descendant, then after a grace
    /// period (cut short by a second Ctrl-C) SIGKILL, so that an ignored SIGTERM cannot hold
    /// tracekit (and its programs in the kernel) forever.
    pub fn finish(mut self) -> i32 {
        self.gate.take();
        if let Some(s) = self.exited() {
            // CMD died of the signal a terminal sends the whole process group: tracekit's own
            // copy may still be on its way to the counter (the handler runs on its own
            // thread), and then the run was ended by Ctrl-C, not by CMD.
            if !self.tracing_ended && matches!(s.signal(), Some(libc::SIGINT | libc::SIGTERM | libc::SIGHUP)) {
                let deadline = Instant::now() + SIGNAL_SIBLING_WAIT;
                while super::stop_requests() == 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.tracing_ended = super::stop_requests() > 0;
            }
            return if self.tracing_ended { 0 } else { s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)) };
        }
        let pid = self.child.id();
        // The whole tree, as systemd or timeout(1) would end a service or a process group: a
        // shell's children would otherwise outlive it (and hold tracekit's stdout open).
        signal_tree(pid, libc::SIGTERM);
        let deadline = Instant::now() + TERM_GRACE;
        // A second Ctrl-C (or SIGTERM), before or during the grace, ends it.
        while self.exited().is_none() && Instant::now() < deadline && super::stop_requests() < 2 {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.exited().is_none() {
            signal_tree(pid, libc::SIGKILL);
            let _ = self.child.wait();
        }
        0
    }
}

/// Sends `sig` to `root` (our unreaped child) and every process below it, descendants first,
/// found while they are still below it.
fn signal_tree(root: u32, sig: libc::c_int) {
    for p in descendants(root).into_iter().chain([root]) {
        // SAFETY: kill() has no memory preconditions; root is unreaped, so its pid is still
        // its own, and its descendants were just found alive below it.
        unsafe { libc::kill(p as libc::pid_t, sig) };
    }
}

/// Every process below `root` in the process tree (from /proc/PID/stat's ppid field).
fn descendants(root: u32) -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split after the last `)`.
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let procs: Vec<(u32, u32)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(procs.iter().filter(|&&(_, pp)| pp == parent).map(|&(p, _)| p));
        i += 1;
    }
    found.remove(0);
    found
}

/// The gate is tracekit's own child: its parent runs the same executable and FD is the
/// inherited pipe. A user who types `tracekit __exec-gate …` gets neither.
fn started_by_tracekit(fd: RawFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let same_file = |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    let exe = |p: &str| std::fs::metadata(p).ok();
    let parent_is_tracekit = match (exe("/proc/self/exe"), exe(&format!("/proc/{ppid}/exe"))) {
        (Some(me), Some(parent)) => same_file(&me, &parent),
        _ => false,
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat only writes st, and st is read only when it succeeded.
    let is_pipe = unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0
        // SAFETY: fstat returned 0, so st is filled.
        && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFIFO;
    parent_is_tracekit && is_pipe
}

/// The `__exec-gate FD -- CMD…` mode: wait for the release byte, then become CMD.
pub fn exec_gate(fd: RawFd, cmd: &[OsString]) -> i32 {
    if !started_by_tracekit(fd) {
        eprintln!("error: `tracekit __exec-gate` is internal: tracekit runs it to start the command after `--`");
        eprintln!("hint: run the command under a tool instead, e.g. `tracekit tcpstate -- CMD`");
        return 2;
    }
    // SAFETY: fd was inherited from the parent for exactly this use and nothing else owns it.
    let mut gate = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut byte = [0u8; 1];
    match gate.read(&mut byte) {
        Ok(1) => {}
        _ => return GATE_ABANDONED,
    }
    drop(gate);
    let Some((prog, args)) = cmd.split_first() else {
        return GATE_ABANDONED;
    };
    let err = Command::new(prog).args(args).exec();
    eprintln!("error: cannot run `{}`: {err}", prog.to_string_lossy());
    eprintln!("hint: check the command after `--` (a path, or a name found on PATH)");
    if err.kind() == io::ErrorKind::NotFound { 127 } else { 126 }
}
