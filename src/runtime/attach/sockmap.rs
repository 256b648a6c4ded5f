//! sk_msg and sk_skb programs (verdict and parser) on a SOCKMAP or SOCKHASH: a sockmap link
//! where the kernel has one (Linux 6.10), else the legacy `bpf_prog_attach(prog, map)` behind a
//! guard that detaches it when dropped.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use libbpf_rs::libbpf_sys;

use super::Attachment;
use super::cgroup::attach_type_name;
use super::netdev::prog_name_of;
use crate::error::Error;
use crate::runtime::probe::{Feature, Probes};

fn probes() -> &'static Probes {
    static PROBES: OnceLock<Probes> = OnceLock::new();
    PROBES.get_or_init(Probes::default)
}

/// Attaches `prog` to the sockmap `map` at `attach_type` (`BPF_SK_MSG_VERDICT`,
/// `BPF_SK_SKB_STREAM_VERDICT`, `BPF_SK_SKB_STREAM_PARSER`, `BPF_SK_SKB_VERDICT`): through a
/// sockmap link where the kernel has them (`Feature::SockmapLink`, Linux 6.10), else as
/// [`attach_sockmap_legacy`] does.
pub fn attach_sockmap(
    prog: BorrowedFd<'_>,
    prog_name: &str,
    map: BorrowedFd<'_>,
    attach_type: libbpf_sys::bpf_attach_type,
) -> Result<Attachment, Error> {
    if !probes().get(Feature::SockmapLink).is_supported() {
        return attach_sockmap_legacy(prog, prog_name, map, attach_type);
    }
    // SAFETY: prog and map are open program and map fds; NULL opts are allowed.
    let fd = unsafe { libbpf_sys::bpf_link_create(prog.as_raw_fd(), map.as_raw_fd(), attach_type, std::ptr::null()) };
    if fd < 0 {
        return Err(sockmap_error(-fd, prog_name, map, attach_type));
    }
    // SAFETY: fd is a new link fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let what = format!("sockmap link on {} ({})", map_label(map), attach_type_name(attach_type));
    Ok(Attachment::link(fd, |id| match id {
        Some(id) => format!("{what}, link id {id}"),
        None => what,
    }))
}

/// The legacy form (any kernel with sockmaps): `bpf_prog_attach(prog, map, attach_type, 0)`,
/// which the returned attachment's guard undoes with `bpf_prog_detach2` when dropped.
///
/// No fd owns this attachment: it lives as long as the map. The guard holds a copy of the map
/// fd, so the map lives at least until the guard drops. After SIGKILL the program stays attached
/// only while the map lives; tracekit's maps are not pinned, so when tracekit's fds were the
/// map's last references the map goes, and the attachment with it. A pinned or shared map keeps
/// it.
///
/// The kernel replaces a legacy program already attached at `attach_type` without a word; this
/// refuses instead (where the kernel can list them, Linux 5.19+).
pub fn attach_sockmap_legacy(
    prog: BorrowedFd<'_>,
    prog_name: &str,
    map: BorrowedFd<'_>,
    attach_type: libbpf_sys::bpf_attach_type,
) -> Result<Attachment, Error> {
    if let Ok(ids) = query(map, attach_type)
        && let Some(&id) = ids.first()
    {
        return Err(conflict(prog_name, map, attach_type, id));
    }
    let dup = |fd: BorrowedFd<'_>, what: &str| {
        fd.try_clone_to_owned().map_err(|e| Error::io(format!("duplicating the {what} fd"), e))
    };
    let (prog_fd, map_fd) = (dup(prog, "program")?, dup(map, "map")?);
    // SAFETY: both are open fds (program, map); flags 0 is the only mode sockmaps take.
    let rc = unsafe { libbpf_sys::bpf_prog_attach(prog_fd.as_raw_fd(), map_fd.as_raw_fd(), attach_type, 0) };
    if rc < 0 {
        return Err(sockmap_error(-rc, prog_name, map, attach_type));
    }
    let describe = format!(
        "sockmap program on {} ({}, legacy bpf_prog_attach, detached at exit or with the map)",
        map_label(map),
        attach_type_name(attach_type)
    );
    let guard = SockmapGuard { prog: prog_fd, map: map_fd, attach_type, removed: false };
    Ok(Attachment::sockmap(guard, describe))
}

/// Detaches a legacy sockmap program when dropped (if it is still the one attached).
pub(crate) struct SockmapGuard {
    prog: OwnedFd,
    map: OwnedFd,
    attach_type: libbpf_sys::bpf_attach_type,
    removed: bool,
}

impl SockmapGuard {
    pub(crate) fn remove(mut self) -> Result<(), Error> {
        self.removed = true;
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        // SAFETY: both fds are open and owned by the guard.
        let rc = unsafe { libbpf_sys::bpf_prog_detach2(self.prog.as_raw_fd(), self.map.as_raw_fd(), self.attach_type) };
        match -rc {
            // Detached, or someone replaced it meanwhile: nothing of ours is left.
            0 | libc::ENOENT => Ok(()),
            e => Err(Error::io_hint(
                format!("detaching the {} program from sockmap", attach_type_name(self.attach_type)),
                io::Error::from_raw_os_error(e),
                "it goes with the map when tracekit exits",
            )),
        }
    }
}

impl Drop for SockmapGuard {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = self.cleanup()
        {
            eprintln!("tracekit: warning: {e}");
        }
    }
}

/// Program ids attached to the map at `attach_type` (Linux 5.19+).
fn query(map: BorrowedFd<'_>, attach_type: libbpf_sys::bpf_attach_type) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; 4];
    let mut cnt = ids.len() as u32;
    let mut flags = 0u32;
    // SAFETY: map is an open map fd; flags, ids and cnt are valid for writes, ids has room
    // for cnt entries.
    let rc =
        unsafe { libbpf_sys::bpf_prog_query(map.as_raw_fd(), attach_type, 0, &mut flags, ids.as_mut_ptr(), &mut cnt) };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(ids[..(cnt as usize).min(ids.len())].to_vec())
}

/// `map id 12 `name`` for messages.
fn map_label(map: BorrowedFd<'_>) -> String {
    let mut info = libbpf_sys::bpf_map_info::default();
    let mut len = size_of::<libbpf_sys::bpf_map_info>() as u32;
    // SAFETY: map is an open map fd; info and len are valid for writes of len bytes.
    let rc = unsafe { libbpf_sys::bpf_map_get_info_by_fd(map.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        return "sockmap".to_owned();
    }
    let name: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    if name.is_empty() {
        format!("map id {}", info.id)
    } else {
        format!("map id {} `{}`", info.id, String::from_utf8_lossy(&name))
    }
}

fn conflict(prog_name: &str, map: BorrowedFd<'_>, attach_type: libbpf_sys::bpf_attach_type, id: u32) -> Error {
    let name = prog_name_of(id).map(|n| format!(" `{n}`")).unwrap_or_default();
    Error::runtime(
        format!(
            "cannot attach `{prog_name}`: {} has program id {id}{name} at `{}` already",
            map_label(map),
            attach_type_name(attach_type)
        ),
        Some(
            "a sockmap holds one program per attach type: detach the other one first (see \
             `bpftool prog show id ID` and `bpftool link show`)"
                .replace("ID", &id.to_string()),
        ),
    )
}

fn sockmap_error(errno: i32, prog_name: &str, map: BorrowedFd<'_>, attach_type: libbpf_sys::bpf_attach_type) -> Error {
    let ty = attach_type_name(attach_type);
    if matches!(errno, libc::EBUSY | libc::EEXIST)
        && let Ok(ids) = query(map, attach_type)
        && let Some(&id) = ids.first()
    {
        return conflict(prog_name, map, attach_type, id);
    }
    let hint = match errno {
        libc::EINVAL => format!(
            "the map must be a SOCKMAP or SOCKHASH, and the program an sk_msg or sk_skb program \
             whose type fits `{ty}`"
        ),
        libc::EBUSY | libc::EEXIST => {
            format!("the map has a program at `{ty}` already: see `bpftool link show` and `bpftool map show`")
        }
        _ => "attaching needs root (CAP_NET_ADMIN and CAP_BPF)".to_owned(),
    };
    Error::Attach {
        what: format!("{ty} program `{prog_name}` on {}", map_label(map)),
        hint: Some(hint),
        source: libbpf_rs::Error::from_raw_os_error(errno),
    }
}
