//! Kernel prerequisites, handled instead of assumed: privileges, tracefs, cgroup v2, clocks.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

// Capability numbers from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities from /proc/self/status (no libcap needed).
fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Loading and attaching tracing programs needs CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN.
pub fn check_privileges() -> Result<(), Error> {
    let caps = effective_caps().unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) { Ok(()) } else { Err(Error::NotPrivileged) }
}

/// Where tracefs is mounted, if it is.
pub fn tracefs_dir() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACING].into_iter().map(PathBuf::from).find(|p| p.join("events").is_dir())
}

/// Classic tracepoints need tracefs (libbpf reads event ids from it). A fresh machine may not
/// have it mounted: mount it ourselves, as root may.
pub fn ensure_tracefs() -> Result<PathBuf, Error> {
    if let Some(dir) = tracefs_dir() {
        return Ok(dir);
    }
    // Mounted but not readable (mode 700 for root; CAP_BPF and CAP_PERFMON do not open it):
    // say so instead of trying to mount it again.
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if let Err(e) = fs::read_dir(Path::new(dir).join("events"))
            && e.kind() == io::ErrorKind::PermissionDenied
        {
            return Err(Error::io_hint(
                format!("tracefs is mounted on `{dir}` but this user cannot read it"),
                e,
                "run as root: CAP_BPF and CAP_PERFMON do not give read access to tracefs",
            ));
        }
    }
    mount_tracefs().map_err(|e| {
        Error::io_hint(
            format!("tracefs is not mounted and mounting it on `{TRACEFS}` failed"),
            e,
            format!("mount it by hand: mount -t tracefs nodev {TRACEFS}"),
        )
    })?;
    tracefs_dir().ok_or_else(|| {
        Error::runtime(
            format!("tracefs mounted on `{TRACEFS}` has no `events` directory"),
            Some("the kernel may lack CONFIG_TRACEPOINTS/CONFIG_EVENT_TRACING".to_owned()),
        )
    })
}

fn mount_tracefs() -> io::Result<()> {
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    let source = c"nodev";
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; data is NULL.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The cgroup v2 mount point, read from /proc/mounts (hybrid layouts put it under
/// /sys/fs/cgroup/unified, so it is never assumed).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    cgroup2_mount_in(&mounts)
}

fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_src, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(dir)))
    })
}

/// /proc/mounts escapes spaces and a few others as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// A cgroup v2 directory as the kernel identifies it: its id (the directory's inode number)
/// and its depth below the root, for bpf_get_current_ancestor_cgroup_id().
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupTarget {
    pub id: u64,
    pub level: u32,
}

/// `--cgroup PATH`: an absolute path as given, a relative one below the cgroup2 mount. It must
/// be a directory of the cgroup2 file system (a v1 hierarchy's directory has other ids).
pub fn resolve_cgroup(path: &Path) -> Result<CgroupTarget, Error> {
    let root = cgroup2_mount().ok_or_else(|| {
        Error::usage(
            "--cgroup needs cgroup v2, but no cgroup2 file system is mounted",
            Some("mount it: mount -t cgroup2 none /sys/fs/cgroup/unified".to_owned()),
        )
    })?;
    let below = || Some(format!("give a directory of the cgroup v2 hierarchy, mounted at `{}`", root.display()));
    let full = if path.is_absolute() { path.to_path_buf() } else { root.join(path) };
    let shown = full.display();
    let meta = fs::metadata(&full).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::usage(format!("cgroup `{shown}` not found"), below()),
        _ => Error::usage(format!("cgroup `{shown}`: {e}"), below()),
    })?;
    if !meta.is_dir() {
        return Err(Error::usage(format!("cgroup `{shown}` is not a directory, so not a cgroup"), below()));
    }
    match fs_magic(&full) {
        Ok(CGROUP2_SUPER_MAGIC) => {}
        Ok(CGROUP_SUPER_MAGIC) => {
            return Err(Error::usage(format!("cgroup `{shown}` is a cgroup v1 directory, not cgroup v2"), below()));
        }
        Ok(_) => return Err(Error::usage(format!("`{shown}` is not a cgroup v2 directory"), below())),
        Err(e) => return Err(Error::usage(format!("cgroup `{shown}`: {e}"), below())),
    }
    // The depth counts from the mount (bpf_get_current_ancestor_cgroup_id); symlinks and `..`
    // resolved first.
    let canon = fs::canonicalize(&full).map_err(|e| Error::usage(format!("cgroup `{shown}`: {e}"), below()))?;
    let rel = canon.strip_prefix(&root).map_err(|_| {
        Error::usage(format!("cgroup `{shown}` is not below the cgroup v2 mount `{}`", root.display()), below())
    })?;
    let level = rel.components().count() as u32;
    Ok(CgroupTarget { id: meta.ino(), level })
}

const CGROUP_SUPER_MAGIC: i64 = 0x27e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The file system type (statfs f_type) a path is on.
fn fs_magic(path: &Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c is a NUL-terminated path that outlives the call; st is written by statfs on
    // success and only read then.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled st.
    let f_type = unsafe { st.assume_init() }.f_type;
    // f_type is i64 on x86-64 glibc but narrower elsewhere (musl, 32-bit).
    #[allow(clippy::unnecessary_cast)]
    Ok(f_type as i64)
}

/// The time on `clock` in nanoseconds (CLOCK_MONOTONIC is bpf_ktime_get_ns's clock).
pub fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Offset from CLOCK_MONOTONIC (bpf_ktime_get_ns) to CLOCK_REALTIME, in nanoseconds.
pub fn monotonic_to_realtime_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use the memory cgroup.
/// Raise it when allowed; a refusal is not fatal (it is refused on these machines and not needed).
pub fn raise_memlock() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit struct for the duration of the call.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_mount_in(mounts), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount_in("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mount_path(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
