//! A child cgroup of one test, below the cgroup2 mount.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Where cgroup2 is mounted (this host: /sys/fs/cgroup/unified).
pub fn cgroup2_root() -> PathBuf {
    tracekit::runtime::kernel::cgroup2_mount().expect("a cgroup2 mount in /proc/mounts")
}

/// A cgroup of one test: `tk-test-TAG-PID-N` directly below the cgroup2 mount, removed on
/// drop (also on panic) after ending what is left in it (`cgroup.kill`, 5.14+; before that
/// moved to the root). Not `TransientCgroup`: its `tracekit-HINT-PID-N` names are what
/// `tracekit cgroup -- CMD` sweeps as stale when empty and PID is not a tracekit, and tests
/// run such commands in parallel.
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    pub fn new(tag: &str) -> TestCgroup {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = cgroup2_root().join(format!("tk-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_pid(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        // A task that has just exited keeps a cgroup busy for a moment: retry for a second.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = std::fs::write(cgroup2_root().join("cgroup.procs"), pid);
                }
            }
            match std::fs::remove_dir(&self.path) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    let _ = writeln!(std::io::stderr(), "warning: rmdir {}: {e}", self.path.display());
                    return;
                }
                _ => return,
            }
        }
    }
}
