//! cgroup v2 programs (cgroup_skb, cgroup_sock, sock_addr, sockopt, sysctl, device, sockops):
//! cgroup links (Linux 5.7), which detach when the link fd closes and also when the cgroup is
//! removed. And [`TransientCgroup`], the child cgroup tracekit makes for `-- CMD`.
//!
//! A cgroup link is a multi-attach program: it mixes with other multi-attach programs and links,
//! but not with an exclusive (`bpf_prog_attach` without flags) or overridable legacy program on
//! the cgroup, nor with an exclusive one on an ancestor (which forbids every attach below it).

use std::ffi::CStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use libbpf_rs::libbpf_sys;

use super::Attachment;
use super::netdev::prog_name_of;
use crate::error::Error;
use crate::runtime::kernel::cgroup2_mount;
use crate::runtime::probe::{Feature, Probes, Status};

/// `CGROUP2_SUPER_MAGIC` and `CGROUP_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;

/// Attaches `prog` to the cgroup v2 directory `cgroup` at `attach_type` (e.g.
/// `BPF_CGROUP_INET_EGRESS`) through a cgroup link: closing it detaches, even after SIGKILL, and
/// removing the cgroup detaches too.
///
/// `cgroup` is a directory of the cgroup2 mount (found in /proc/mounts), given in full
/// (`/sys/fs/cgroup/unified/x`) or relative to the mount (`x`, `/x`).
pub fn attach_cgroup(
    prog: BorrowedFd<'_>,
    prog_name: &str,
    cgroup: &Path,
    attach_type: libbpf_sys::bpf_attach_type,
) -> Result<Attachment, Error> {
    let (dir, _root) = cgroup_dir(cgroup)?;
    let file = open_dir(&dir)?;
    let ty = attach_type_name(attach_type);
    // SAFETY: prog is an open program fd, file an open cgroup directory; NULL opts are allowed.
    let fd = unsafe { libbpf_sys::bpf_link_create(prog.as_raw_fd(), file.as_raw_fd(), attach_type, std::ptr::null()) };
    if fd < 0 {
        return Err(cgroup_error(-fd, prog_name, &dir, attach_type));
    }
    // SAFETY: fd is a new link fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let what = format!("cgroup link on {} ({ty})", dir.display());
    Ok(Attachment::link(fd, |id| match id {
        Some(id) => format!("{what}, link id {id}"),
        None => what,
    }))
}

/// The cgroup2 mount, or a usage error saying how to mount one.
pub(crate) fn cgroup2_root() -> Result<PathBuf, Error> {
    cgroup2_mount().ok_or_else(|| {
        Error::usage(
            "no cgroup2 file system is mounted (none in /proc/mounts)",
            Some("mount it, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`".to_owned()),
        )
    })
}

/// The full path of a cgroup v2 directory and the cgroup2 mount, or a usage error saying where
/// cgroup2 is mounted.
pub(crate) fn cgroup_dir(path: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let root = cgroup2_root()?;
    let below = root.join(path.strip_prefix("/").unwrap_or(path));
    // An absolute path is taken as given, unless only its reading below the mount exists
    // (`/system.slice`); a path that exists in neither reading is reported as typed.
    let full = if path.is_absolute() && (path.starts_with(&root) || path.exists() || !below.exists()) {
        path.to_path_buf()
    } else {
        below
    };
    let hint = || {
        Some(format!(
            "cgroup2 is mounted at `{}`: give a directory below it (or a path relative to it)",
            root.display()
        ))
    };
    let magic = match statfs_type(&full) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::usage(format!("cgroup `{}` not found", full.display()), hint()));
        }
        Err(e) => return Err(Error::io(format!("reading `{}`", full.display()), e)),
    };
    let kind = match magic {
        CGROUP2_SUPER_MAGIC if full.is_dir() => return Ok((full, root)),
        CGROUP2_SUPER_MAGIC => "a file of the cgroup2 file system, not a directory",
        CGROUP_SUPER_MAGIC => "a cgroup v1 directory",
        _ => "not on a cgroup file system",
    };
    Err(Error::usage(format!("`{}` is not a cgroup v2 directory ({kind})", full.display()), hint()))
}

fn statfs_type(path: &Path) -> io::Result<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs is plain data; all zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is valid for writes.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

fn open_dir(dir: &Path) -> Result<File, Error> {
    File::open(dir).map_err(|e| {
        Error::io_hint(
            format!("opening cgroup `{}`", dir.display()),
            e,
            "attaching to a cgroup needs root: rerun as root",
        )
    })
}

fn probes() -> &'static Probes {
    static PROBES: OnceLock<Probes> = OnceLock::new();
    PROBES.get_or_init(Probes::default)
}

/// `cgroup_inet_egress` (libbpf's name of the attach type).
pub(crate) fn attach_type_name(t: libbpf_sys::bpf_attach_type) -> String {
    // SAFETY: plain lookup; the result is NULL or a static NUL-terminated string.
    let p = unsafe { libbpf_sys::libbpf_bpf_attach_type_str(t) };
    if p.is_null() {
        return format!("attach type {t}");
    }
    // SAFETY: p is a static NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// bpftool's name of a cgroup attach type (`bpftool cgroup detach CG NAME id N`).
fn bpftool_type(t: libbpf_sys::bpf_attach_type) -> String {
    use libbpf_sys as s;
    let name = match t {
        s::BPF_CGROUP_INET_INGRESS => "ingress",
        s::BPF_CGROUP_INET_EGRESS => "egress",
        s::BPF_CGROUP_INET_SOCK_CREATE => "sock_create",
        s::BPF_CGROUP_INET_SOCK_RELEASE => "sock_release",
        s::BPF_CGROUP_SOCK_OPS => "sock_ops",
        s::BPF_CGROUP_DEVICE => "device",
        s::BPF_CGROUP_INET4_BIND => "bind4",
        s::BPF_CGROUP_INET6_BIND => "bind6",
        s::BPF_CGROUP_INET4_CONNECT => "connect4",
        s::BPF_CGROUP_INET6_CONNECT => "connect6",
        s::BPF_CGROUP_INET4_POST_BIND => "post_bind4",
        s::BPF_CGROUP_INET6_POST_BIND => "post_bind6",
        s::BPF_CGROUP_UDP4_SENDMSG => "sendmsg4",
        s::BPF_CGROUP_UDP6_SENDMSG => "sendmsg6",
        s::BPF_CGROUP_UDP4_RECVMSG => "recvmsg4",
        s::BPF_CGROUP_UDP6_RECVMSG => "recvmsg6",
        s::BPF_CGROUP_SYSCTL => "sysctl",
        s::BPF_CGROUP_GETSOCKOPT => "getsockopt",
        s::BPF_CGROUP_SETSOCKOPT => "setsockopt",
        _ => return attach_type_name(t),
    };
    name.to_owned()
}

/// Programs attached directly (not inherited) to a cgroup at one attach type, with the
/// attach flags (`BPF_F_ALLOW_OVERRIDE`, `BPF_F_ALLOW_MULTI`, or 0 for exclusive).
struct Attached {
    flags: u32,
    ids: Vec<u32>,
}

fn query(dir: &Path, attach_type: libbpf_sys::bpf_attach_type) -> io::Result<Attached> {
    let file = File::open(dir)?;
    let mut ids = [0u32; 64];
    let mut cnt = ids.len() as u32;
    let mut flags = 0u32;
    // SAFETY: file is an open cgroup directory; flags, ids and cnt are valid for writes, ids
    // has room for cnt entries.
    let rc =
        unsafe { libbpf_sys::bpf_prog_query(file.as_raw_fd(), attach_type, 0, &mut flags, ids.as_mut_ptr(), &mut cnt) };
    if rc < 0 && -rc != libc::ENOSPC {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(Attached { flags, ids: ids[..(cnt as usize).min(ids.len())].to_vec() })
}

/// The legacy program that keeps a link off `dir`: on `dir` itself an exclusive or overridable
/// one, on an ancestor an exclusive one (nearest first, as the kernel walks them). Returns the
/// cgroup, the program id and its flags.
fn blocker(dir: &Path, root: &Path, attach_type: libbpf_sys::bpf_attach_type) -> Option<(PathBuf, u32, u32)> {
    let own = query(dir, attach_type).ok()?;
    if let Some(&id) = own.ids.first()
        && own.flags & libbpf_sys::BPF_F_ALLOW_MULTI == 0
    {
        return Some((dir.to_path_buf(), id, own.flags));
    }
    let mut at = dir.parent();
    while let Some(p) = at.filter(|p| p.starts_with(root)) {
        let q = query(p, attach_type).ok()?;
        if q.flags & libbpf_sys::BPF_F_ALLOW_MULTI != 0 {
            return None;
        }
        if let Some(&id) = q.ids.first() {
            return (q.flags & libbpf_sys::BPF_F_ALLOW_OVERRIDE == 0).then(|| (p.to_path_buf(), id, q.flags));
        }
        at = p.parent();
    }
    None
}

/// The kernel's internal "not supported" errno, which leaks to user space.
const ENOTSUPP: i32 = 524;

fn cgroup_error(errno: i32, prog_name: &str, dir: &Path, attach_type: libbpf_sys::bpf_attach_type) -> Error {
    let ty = attach_type_name(attach_type);
    let show = format!("`bpftool cgroup show {}`", dir.display());
    let root = cgroup2_mount().unwrap_or_else(|| PathBuf::from("/"));
    match errno {
        libc::EPERM | libc::EBUSY => match blocker(dir, &root, attach_type) {
            Some((at, id, flags)) => {
                let name = prog_name_of(id).map(|n| format!(" `{n}`")).unwrap_or_default();
                let how = if flags & libbpf_sys::BPF_F_ALLOW_OVERRIDE != 0 { "an overridable" } else { "an exclusive" };
                let (place, forbids, below) = if at == dir {
                    ("this cgroup has".to_owned(), "allows no other program there", "; or attach to a child cgroup")
                } else {
                    (format!("its ancestor `{}` has", at.display()), "allows no program in the cgroups below it", "")
                };
                Error::runtime(
                    format!(
                        "cannot attach `{prog_name}` to cgroup `{}` at `{ty}`: {place} {how} legacy \
                         program id {id}{name}, which {forbids}",
                        dir.display()
                    ),
                    Some(format!(
                        "if nothing needs it, detach it with `bpftool cgroup detach {} {} id {id}`{below}; \
                         see `bpftool cgroup show {}`",
                        at.display(),
                        bpftool_type(attach_type),
                        at.display()
                    )),
                )
            }
            None => Error::Attach {
                what: format!("cgroup program `{prog_name}` on `{}` ({ty})", dir.display()),
                hint: Some(format!("attaching to a cgroup needs root (CAP_NET_ADMIN and CAP_BPF); see {show}")),
                source: libbpf_rs::Error::from_raw_os_error(errno),
            },
        },
        libc::EINVAL | ENOTSUPP if matches!(probes().get(Feature::CgroupLink), Status::Unsupported { .. }) => {
            Error::Unsupported {
                feature: "cgroup_link",
                reason: "this kernel has no cgroup links (Linux 5.7+)".into(),
                hint: Some(
                    "tracekit attaches cgroup programs only through links, which detach when \
                     tracekit exits; run it on Linux 5.7 or later"
                        .into(),
                ),
            }
        }
        libc::EINVAL => Error::Attach {
            what: format!("cgroup program `{prog_name}` on `{}` ({ty})", dir.display()),
            hint: Some(format!("the program's type (or expected attach type) does not fit `{ty}`; see {show}")),
            source: libbpf_rs::Error::from_raw_os_error(errno),
        },
        libc::E2BIG => Error::runtime(
            format!(
                "cannot attach `{prog_name}` to cgroup `{}` at `{ty}`: it has the maximum of 64 programs there",
                dir.display()
            ),
            Some(format!("see {show}")),
        ),
        _ => Error::Attach {
            what: format!("cgroup program `{prog_name}` on `{}` ({ty})", dir.display()),
            hint: Some(format!("see what is attached with {show}")),
            source: libbpf_rs::Error::from_raw_os_error(errno),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// TransientCgroup

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A child cgroup tracekit creates (for `-- CMD`): `tracekit-HINT-PID-N` below a cgroup v2
/// directory. Dropping it moves any task still inside to the parent and removes it (child
/// cgroups the command made below it go too).
#[derive(Debug)]
pub struct TransientCgroup {
    path: PathBuf,
    parent: PathBuf,
    removed: bool,
}

impl TransientCgroup {
    /// Creates the cgroup below `parent` (full, or relative to the cgroup2 mount). `name_hint`
    /// goes into its name, reduced to `[A-Za-z0-9_.-]` and 32 bytes.
    pub fn create(parent: &Path, name_hint: &str) -> Result<TransientCgroup, Error> {
        let (parent, _root) = cgroup_dir(parent)?;
        let mut hint: String = name_hint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
            .take(32)
            .collect();
        if hint.is_empty() || hint.starts_with('.') {
            hint.insert_str(0, "cmd");
        }
        let name = format!("tracekit-{hint}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = parent.join(name);
        fs::create_dir(&path).map_err(|e| {
            Error::io_hint(
                format!("creating cgroup `{}`", path.display()),
                e,
                format!("creating a cgroup needs root and a writable cgroup2 directory; check `{}`", parent.display()),
            )
        })?;
        Ok(TransientCgroup { path, parent, removed: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the transient cgroups below `parent` whose maker is gone (a tracekit killed with
    /// SIGKILL, which runs no Drop) and that no process uses any more; returns their paths.
    /// One whose command still runs stays: removing it would need to move that command.
    pub fn sweep_stale(parent: &Path) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(parent) else { return Vec::new() };
        let mut removed = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Only a cgroup whose maker is gone: a live one (tracekit or another user of
            // TransientCgroup) is still using it.
            let Some(owner) = transient_owner(&name) else { continue };
            if Path::new(&format!("/proc/{owner}")).exists() {
                continue;
            }
            if populated(&e.path()) == Some(false) && remove_tree(&e.path(), parent).is_ok() {
                removed.push(e.path());
            }
        }
        removed
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), Error> {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ESRCH) => {
                    format!("no process with pid {pid}: check the pid (it may have exited)")
                }
                _ => format!("moving a process needs root; check `cat {}`", procs.display()),
            };
            Error::io_hint(format!("adding pid {pid} to cgroup `{}`", self.path.display()), e, hint)
        })
    }

    /// Ends every process in the cgroup and below it (SIGKILL: `cgroup.kill` on 5.14+, else each
    /// task, again until none is left, since a task may fork meanwhile) and waits up to two
    /// seconds for the cgroup to empty. Returns whether it did.
    pub fn kill_all(&self) -> bool {
        if fs::write(self.path.join("cgroup.kill"), "1").is_err() {
            for _ in 0..100 {
                let pids = tasks_below(&self.path);
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    // SAFETY: kill() has no memory preconditions; a pid that exited is ESRCH.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while populated(&self.path) == Some(true) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// The end of a `-- CMD` run: ends what is left in the cgroup, then drops `held` (the
    /// programs attached to the cgroup, which must hold until its last process is gone: CMD's
    /// grace period after Ctrl-C, processes CMD left behind), then removes the cgroup. Failures
    /// are warnings: the run's result stands.
    pub fn finish<T>(self, held: T) {
        if !self.kill_all() {
            eprintln!("tracekit: warning: processes of {} did not end within 2 s of SIGKILL", self.path.display());
        }
        drop(held);
        if let Err(e) = self.remove() {
            eprintln!("tracekit: warning: {e}");
        }
    }

    /// Removes the cgroup now and reports a failure (Drop can only warn on stderr).
    pub fn remove(mut self) -> Result<(), Error> {
        self.removed = true;
        remove_tree(&self.path, &self.parent)
    }
}

impl Drop for TransientCgroup {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = remove_tree(&self.path, &self.parent)
        {
            eprintln!("tracekit: warning: {e}");
        }
    }
}

/// Whether a cgroup or one below it has a task (`populated` of cgroup.events), None if unreadable.
fn populated(dir: &Path) -> Option<bool> {
    let events = fs::read_to_string(dir.join("cgroup.events")).ok()?;
    events.lines().find_map(|l| l.strip_prefix("populated ")).map(|v| v.trim() != "0")
}

/// Every task in `dir` and the cgroups below it.
fn tasks_below(dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(tasks_below(&e.path()));
        }
    }
    out
}

/// Which cgroup a cgroup-wide tool (sockops, sockmap bypass) works on, as its plan line says:
/// the directory given, CMD's transient cgroup, or the whole system (the root).
pub fn scope_description(given: Option<&Path>, with_command: bool, root: &Path) -> String {
    match (given, with_command) {
        (Some(d), _) => d.display().to_string(),
        (None, true) => "a transient cgroup for CMD".to_owned(),
        (None, false) => format!("{} (all)", root.display()),
    }
}

/// tracekit's own cgroup v2 (the `0::` line of /proc/self/cgroup), as a directory.
pub fn own_cgroup(root: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(rel.trim().trim_start_matches('/')))
}

/// Where `-- CMD`'s transient cgroup goes: below tracekit's own cgroup, so CMD stays under
/// the limits and accounting tracekit runs under (a user slice, a service, a container), when
/// that cgroup may have children with tasks (no controller enabled for its children: the
/// "no internal processes" rule); else below the cgroup2 mount.
pub fn transient_parent(root: &Path) -> PathBuf {
    match own_cgroup(root) {
        Some(own)
            if own.is_dir()
                && fs::read_to_string(own.join("cgroup.subtree_control")).is_ok_and(|c| c.trim().is_empty()) =>
        {
            own
        }
        _ => root.to_path_buf(),
    }
}

/// The pid in a transient cgroup's name (`tracekit-HINT-PID-N`).
fn transient_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("tracekit-")?;
    let mut parts = rest.rsplitn(3, '-');
    let _n: u32 = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(pid)
}

/// Removes `dir` and every cgroup below it, moving their tasks to `parent` first. A task that
/// has just exited keeps a cgroup busy for a moment, so rmdir is retried for up to a second.
fn remove_tree(dir: &Path, parent: &Path) -> Result<(), Error> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), parent)?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let moved = move_tasks(dir, parent);
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                let why = match moved {
                    Err(m) => format!(" (moving its tasks to the parent failed: {m})"),
                    Ok(()) => String::new(),
                };
                return Err(Error::io_hint(
                    format!("removing cgroup `{}`{why}", dir.display()),
                    e,
                    format!(
                        "see what is left with `cat {}/cgroup.procs`, move it out, then `rmdir {}`",
                        dir.display(),
                        dir.display()
                    ),
                ));
            }
        }
    }
}

/// Writes every pid of `dir/cgroup.procs` to `parent/cgroup.procs` (a pid that exited
/// meanwhile is skipped).
fn move_tasks(dir: &Path, parent: &Path) -> io::Result<()> {
    let procs = match fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let target = parent.join("cgroup.procs");
    for pid in procs.split_whitespace() {
        match fs::write(&target, pid) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
