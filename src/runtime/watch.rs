//! What ends a run besides Ctrl-C, --duration, --count and `-- CMD`: the reader of stdout going
//! away, and every process given with `-p` having exited. Also the checks of `-p`/`--tid`
//! values and of a stdout that was closed before tracekit started.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::cli::TaskArgs;
use crate::error::Error;

/// Set before `main` when fd 1 was closed (`tracekit … >&-`): Rust's runtime then opens
/// /dev/null on it, so by `main` a closed stdout can no longer be told from `> /dev/null`.
static STDOUT_CLOSED_AT_START: AtomicBool = AtomicBool::new(false);

extern "C" fn note_closed_stdout() {
    // SAFETY: F_GETFD only reads the descriptor table; it is safe before `main`.
    if unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_GETFD) } < 0 {
        STDOUT_CLOSED_AT_START.store(true, Ordering::Relaxed);
    }
}

/// Runs [`note_closed_stdout`] as a constructor, before Rust's runtime sanitizes fds 0-2.
// SAFETY: `.init_array` holds pointers to `extern "C" fn()` that the C runtime calls once before
// `main`; this is one such pointer, to a function that only reads the descriptor table.
#[used]
#[unsafe(link_section = ".init_array")]
static NOTE_CLOSED_STDOUT: extern "C" fn() = note_closed_stdout;

/// A tool's output would go nowhere: refuse to run (exit 1) rather than trace in silence.
pub fn check_stdout_open() -> Result<(), Error> {
    if STDOUT_CLOSED_AT_START.load(Ordering::Relaxed) {
        return Err(Error::runtime(
            "stdout is closed: the events would be written nowhere",
            Some("redirect it instead (`> FILE`, or `> /dev/null` to only count with -v)".to_owned()),
        ));
    }
    Ok(())
}

/// A reader gone from the other end of a pipe shows as POLLERR on our end (POLLHUP for a hung
/// up terminal): every tool stops then, even one that only prints at intervals or at the end.
pub fn stdout_closed() -> bool {
    let mut p = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// The processes of `-p`, held by pidfd (a pidfd stays bound to its process, so a recycled
/// pid number is never mistaken for it).
#[derive(Debug, Default)]
pub struct PidWatch {
    pidfds: Vec<OwnedFd>,
}

impl PidWatch {
    /// Checks the `-p`/`--tid` values and opens a pidfd on every `-p` process: a pid above
    /// pid_max or of no process is a usage error, as is `-p` together with `-- CMD`.
    pub fn open(task: &TaskArgs) -> Result<Self, Error> {
        if !task.pids.is_empty() && !task.command.is_empty() {
            return Err(Error::usage(
                "-p/--pid and `-- CMD` both say which processes to trace, and together they match nothing",
                Some("use one: `-- CMD` traces CMD and its descendants, -p an already running process".to_owned()),
            ));
        }
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(1 << 22);
        for (flag, ids) in [("--pid", &task.pids), ("--tid", &task.tids)] {
            if let Some(id) = ids.iter().find(|&&id| id > pid_max) {
                return Err(Error::usage(
                    format!("{flag} {id} is above the largest pid this kernel hands out (pid_max {pid_max})"),
                    Some("check the number with `ps -e`".to_owned()),
                ));
            }
        }
        for &tid in &task.tids {
            if !std::path::Path::new(&format!("/proc/{tid}")).exists() {
                return Err(Error::usage(
                    format!("thread {tid} (--tid) does not exist"),
                    Some("list a process's threads with `ps -T -p PID`".to_owned()),
                ));
            }
        }
        let mut pidfds = Vec::new();
        for &pid in &task.pids {
            pidfds.push(pidfd_open(pid)?);
        }
        Ok(PidWatch { pidfds })
    }

    /// Every `-p` process has exited (false without `-p`).
    pub fn all_exited(&self) -> bool {
        if self.pidfds.is_empty() {
            return false;
        }
        let mut fds: Vec<libc::pollfd> = self
            .pidfds
            .iter()
            .map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: fds is a valid array of fds.len() pollfds; zero timeout.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        n == fds.len() as i32 && fds.iter().all(|p| p.revents != 0)
    }
}

fn pidfd_open(pid: u32) -> Result<OwnedFd, Error> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd >= 0 {
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ESRCH) => Error::usage(
            format!("process {pid} (--pid) does not exist"),
            Some("check it with `ps -p PID`, or start the program under tracekit: `tracekit TOOL -- CMD`".to_owned()),
        ),
        // A thread that is not its group's leader: EINVAL before Linux 6.9, ENOENT since.
        Some(libc::EINVAL | libc::ENOENT) => Error::usage(
            format!("{pid} (--pid) is a thread, not a process"),
            Some(match thread_group_of(pid) {
                Some(tgid) => format!("use --tid {pid} for this thread, or -p {tgid} for its process"),
                None => format!("use --tid {pid} for this thread, or -p with its process id"),
            }),
        ),
        _ => Error::io(format!("watching process {pid} (--pid)"), err),
    })
}

/// The process (thread group) a thread belongs to, from /proc/TID/status.
fn thread_group_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:"))?.trim().parse().ok()
}

/// `--interval SECS` of the tools that print counters while they run: due once per period,
/// never without one.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    period: Option<std::time::Duration>,
    next: std::time::Instant,
}

impl Every {
    pub fn new(period: Option<std::time::Duration>) -> Self {
        Every { period, next: std::time::Instant::now() + period.unwrap_or(std::time::Duration::MAX / 4) }
    }

    /// Whether a period has passed since the last time this said yes (or the start).
    pub fn due(&mut self) -> bool {
        match self.period {
            Some(p) if std::time::Instant::now() >= self.next => {
                self.next += p;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pids: &[u32]) -> TaskArgs {
        TaskArgs { pids: pids.to_vec(), ..TaskArgs::default() }
    }

    #[test]
    fn pids_are_checked_and_watched() {
        let me = std::process::id();
        let watch = PidWatch::open(&task(&[me])).expect("our own pid exists");
        assert!(!watch.all_exited());
        assert!(!PidWatch::default().all_exited(), "no -p: never over");
        let e = PidWatch::open(&task(&[u32::MAX])).unwrap_err().to_string();
        assert!(e.contains("pid_max"), "{e}");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let watch = PidWatch::open(&task(&[pid])).expect("the child is there until reaped");
        child.wait().unwrap();
        assert!(watch.all_exited());
        let e = PidWatch::open(&task(&[pid])).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert_eq!(thread_group_of(me), Some(me));
    }

    #[test]
    fn pid_and_command_together_are_refused() {
        let mut t = task(&[1]);
        t.command = vec!["true".into()];
        assert!(PidWatch::open(&t).unwrap_err().to_string().contains("-- CMD"));
    }
}
