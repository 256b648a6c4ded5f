//! `--netns NAME|PATH|PID`: which network namespace a packet tool attaches in, and entering it
//! for the calling thread while an attachment is made or removed.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;

/// Where `ip netns add NAME` bind-mounts its namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `ioctl(fd, NS_GET_NSTYPE)` from linux/nsfs.h: `_IO(0xb7, 0x3)` (Linux 4.11).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// How the namespace was named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsSpec {
    /// No `--netns`: the namespace tracekit runs in.
    Current,
    Name(String),
    Path(PathBuf),
    Pid(u32),
}

/// An open network namespace. Holding it keeps the namespace alive. Cheap to clone (the file is
/// shared), so guards that must re-enter it on drop keep a copy.
#[derive(Debug, Clone)]
pub struct Netns {
    file: Arc<File>,
    pub spec: NetnsSpec,
    /// st_ino of the namespace file: the `netns` of every packet event.
    pub inode: u64,
    dev: u64,
}

impl Netns {
    /// None = the current namespace; `NAME` = `/run/netns/NAME`; something with a `/` = a path
    /// taken as given; digits = `/proc/PID/ns/net` (a name made of digits wins only when no
    /// such process exists).
    pub fn resolve(spec: Option<&str>) -> Result<Netns, Error> {
        let spec = match spec {
            None => NetnsSpec::Current,
            Some("") => return Err(Error::usage("`--netns` needs a value", hint_forms())),
            Some(s) if s.contains('/') => NetnsSpec::Path(PathBuf::from(s)),
            Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => match s.parse::<u32>() {
                Ok(pid) if Path::new(&format!("/proc/{pid}")).exists() => NetnsSpec::Pid(pid),
                _ if Path::new(NETNS_RUN_DIR).join(s).exists() => NetnsSpec::Name(s.to_owned()),
                _ => {
                    return Err(Error::usage(format!("no process with pid {s} (for `--netns {s}`)"), hint_forms()));
                }
            },
            Some(s) => NetnsSpec::Name(s.to_owned()),
        };
        let path = match &spec {
            NetnsSpec::Current => PathBuf::from("/proc/self/ns/net"),
            NetnsSpec::Name(n) => Path::new(NETNS_RUN_DIR).join(n),
            NetnsSpec::Path(p) => p.clone(),
            NetnsSpec::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        };
        let file = File::open(&path).map_err(|e| open_error(&spec, &path, e))?;
        check_is_netns(&file, &spec, &path)?;
        let meta = file.metadata().map_err(|e| Error::io(format!("reading `{}`", path.display()), e))?;
        Ok(Netns { file: Arc::new(file), spec, inode: meta.ino(), dev: meta.dev() })
    }

    /// For messages: `current`, `tkat-1`, `pid 123`, `/proc/123/ns/net`.
    pub fn label(&self) -> String {
        match &self.spec {
            NetnsSpec::Current => "current".into(),
            NetnsSpec::Name(n) => n.clone(),
            NetnsSpec::Path(p) => p.display().to_string(),
            NetnsSpec::Pid(pid) => format!("pid {pid}"),
        }
    }

    /// ` in netns X` for descriptions, empty for the current namespace.
    pub fn suffix(&self) -> String {
        match self.spec {
            NetnsSpec::Current => String::new(),
            _ => format!(" in netns {}", self.label()),
        }
    }

    /// What to put before a command for it to run in this namespace (in hints):
    /// `ip netns exec NAME `, `nsenter --net=PATH `, or nothing.
    pub fn exec_prefix(&self) -> String {
        match &self.spec {
            NetnsSpec::Current => String::new(),
            NetnsSpec::Name(n) => format!("ip netns exec {n} "),
            NetnsSpec::Path(p) => format!("nsenter --net={} ", p.display()),
            NetnsSpec::Pid(pid) => format!("nsenter -t {pid} -n "),
        }
    }

    /// The namespace file, e.g. for a netns link or `setns`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Whether the calling thread is in this namespace now.
    pub fn is_current_thread(&self) -> bool {
        thread_netns().is_ok_and(|(dev, ino, _)| dev == self.dev && ino == self.inode)
    }

    /// Moves the calling thread into the namespace until the guard drops. A no-op when the
    /// thread is in it already. Only this thread moves: sockets and netlink requests it makes
    /// meanwhile (ifindex lookups, links, qdiscs) act on the namespace.
    pub fn enter(&self) -> Result<NetnsGuard, Error> {
        let (dev, ino, orig) = thread_netns().map_err(|e| Error::io("opening /proc/thread-self/ns/net", e))?;
        if dev == self.dev && ino == self.inode {
            return Ok(NetnsGuard { orig: None, _not_send: PhantomData });
        }
        setns(self.file.as_fd()).map_err(|e| {
            Error::io_hint(
                format!("entering network namespace `{}`", self.label()),
                e,
                "entering a namespace needs CAP_SYS_ADMIN: rerun as root",
            )
        })?;
        Ok(NetnsGuard { orig: Some(orig), _not_send: PhantomData })
    }
}

/// The calling thread is inside a namespace until this drops (then it is back where it was).
/// Not `Send`: it belongs to the thread that entered.
#[must_use = "the thread leaves the namespace when the guard drops"]
pub struct NetnsGuard {
    orig: Option<File>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Some(orig) = &self.orig
            && let Err(e) = setns(orig.as_fd())
        {
            // Staying in the wrong namespace would make every later lookup silently wrong.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

fn setns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fd is an open namespace file; setns only changes the calling thread's namespace.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// (st_dev, st_ino, file) of the calling thread's network namespace.
fn thread_netns() -> io::Result<(u64, u64, File)> {
    let f = File::open("/proc/thread-self/ns/net")?;
    let m = f.metadata()?;
    Ok((m.dev(), m.ino(), f))
}

fn hint_forms() -> Option<String> {
    Some(format!(
        "`--netns` takes a name from `ip netns list` ({NETNS_RUN_DIR}/NAME), a path such as \
         /proc/PID/ns/net, or the pid of a process in the namespace"
    ))
}

/// The names in /run/netns, sorted.
pub fn named_namespaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn open_error(spec: &NetnsSpec, path: &Path, e: io::Error) -> Error {
    let missing = e.kind() == io::ErrorKind::NotFound;
    match spec {
        NetnsSpec::Name(n) if missing => {
            let names = named_namespaces();
            let hint = if names.is_empty() {
                format!(
                    "there are no named namespaces ({NETNS_RUN_DIR} is empty); create one with \
                     `ip netns add {n}`, or pass a path or pid"
                )
            } else {
                let list = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
                format!("namespaces in {NETNS_RUN_DIR}: {list}")
            };
            Error::usage(format!("network namespace `{n}` not found in {NETNS_RUN_DIR}"), Some(hint))
        }
        NetnsSpec::Pid(pid) if missing => {
            Error::usage(format!("no process with pid {pid} (for `--netns {pid}`)"), hint_forms())
        }
        NetnsSpec::Path(_) if missing => {
            Error::usage(format!("network namespace file `{}` does not exist", path.display()), hint_forms())
        }
        _ => Error::io(format!("opening network namespace `{}`", path.display()), e),
    }
}

fn check_is_netns(file: &File, spec: &NetnsSpec, path: &Path) -> Result<(), Error> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open file's inode.
    let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if ty == libc::CLONE_NEWNET {
        return Ok(());
    }
    let what = if ty >= 0 {
        format!("a {} namespace", ns_kind(ty))
    } else if file.metadata().is_ok_and(|m| m.is_file() && m.len() == 0) {
        "an empty file".to_owned()
    } else {
        "not a namespace file".to_owned()
    };
    let hint = match spec {
        NetnsSpec::Name(n) if what == "an empty file" => {
            format!("the namespace's bind mount is gone (a stale entry): remove it with `ip netns delete {n}`")
        }
        _ => hint_forms().unwrap_or_default(),
    };
    Err(Error::usage(format!("`{}` is not a network namespace ({what})", path.display()), Some(hint)))
}

fn ns_kind(ty: libc::c_int) -> &'static str {
    match ty {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWCGROUP => "cgroup",
        0x80 => "time",
        _ => "different",
    }
}
