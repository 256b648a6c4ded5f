//! struct_ops maps: a set of BPF programs the kernel calls in place of a kernel structure of
//! function pointers (`struct tcp_congestion_ops`). Registering is the attach.
//!
//! - The link form (`.struct_ops.link`, Linux 6.4): the map is created with `BPF_F_LINK` and a
//!   `BPF_LINK_TYPE_STRUCT_OPS` link registers it; closing the link's fd unregisters, so even
//!   SIGKILL leaves nothing registered.
//! - The legacy form (5.6 to 6.3): updating the map's one element registers it, deleting it
//!   unregisters. Nothing owns the registration: it outlives the process. The returned
//!   attachment deletes the element when dropped, and [`sweep_stale`] removes what a killed
//!   tracekit left (struct_ops maps of tracekit's names that no process holds) before the next
//!   registration, which the stale one would block (the name is taken).
//!
//! One object carries both forms: the maps are declared `.struct_ops.link` and [`prepare`]
//! clears `BPF_F_LINK` before load where the kernel has no struct_ops links (it would reject
//! the flag).
//!
//! Sockets that use a registered algorithm hold a reference to it: unregistering removes the
//! name (no new socket can pick it) while those sockets keep working on it until they close.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::{AsRawLibbpf, MapCore, MapMut, OpenMapMut, libbpf_sys};

use super::Attachment;
use super::netdev::fd_holders;
use crate::error::Error;
use crate::runtime::probe::{Feature, Probes, Status};

/// `BPF_F_LINK` (uapi bpf.h): a struct_ops map registered through a link.
const BPF_F_LINK: u32 = 1 << 13;

/// Whether this kernel registers struct_ops through links (checked before load).
pub fn has_link(probes: &Probes) -> bool {
    probes.get(Feature::StructOpsLink).is_supported()
}

/// Makes an opened struct_ops map fit the kernel: without struct_ops links, the legacy form.
pub fn prepare(map: &mut OpenMapMut<'_>, link: bool) -> Result<(), Error> {
    if link {
        return Ok(());
    }
    let flags = map.map_flags() & !BPF_F_LINK;
    map.set_map_flags(flags).map_err(|e| Error::runtime(format!("preparing struct_ops map `{}`: {e}", name(map)), None))
}

/// Fails early, with what to do, where the kernel cannot run `type_name` (e.g.
/// `tcp_congestion_ops`) in BPF at all.
pub fn check_supported(probes: &Probes, type_name: &str) -> Result<(), Error> {
    match probes.get(Feature::StructOps) {
        Status::Unsupported { reason, .. } => Err(Error::Unsupported {
            feature: "struct_ops",
            reason: format!("{reason}: `{type_name}` cannot be implemented in BPF here"),
            hint: Some("run it on Linux 5.6 or later, built with CONFIG_BPF_JIT and BTF".into()),
        }),
        _ => Ok(()),
    }
}

/// Registers a loaded struct_ops map. `registered_as` is the name the kernel will know it by
/// (`tk_reno`), for messages.
pub fn attach_struct_ops(map: &MapMut<'_>, registered_as: &str) -> Result<Attachment, Error> {
    let info =
        map.info().map_err(|e| Error::runtime(format!("reading struct_ops map `{registered_as}`: {e}"), None))?;
    let (map_id, legacy) = (Some(info.info.id), info.info.map_flags & BPF_F_LINK == 0);
    // libbpf-rs's attach_struct_ops takes the map mutably, which the run (holding the whole
    // skeleton shared) cannot give; the call underneath needs nothing exclusive.
    // SAFETY: the map pointer is the loaded object's, valid while `map` is borrowed.
    let ptr = unsafe { libbpf_sys::bpf_map__attach_struct_ops(map.as_libbpf_object().as_ptr()) };
    let link = match std::ptr::NonNull::new(ptr) {
        // SAFETY: a non-NULL bpf_link libbpf just created and nothing else owns.
        Some(p) if (ptr as isize) > 0 || (ptr as isize) < -4095 => unsafe { libbpf_rs::Link::from_ptr(p) },
        _ => {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
            return Err(register_error(libbpf_rs::Error::from_raw_os_error(errno), registered_as));
        }
    };
    let link_id = if legacy { None } else { super::link_id_of_fd(link.as_fd()) };
    let describe = match (legacy, link_id, map_id) {
        (false, Some(id), _) => format!("struct_ops `{registered_as}`, link id {id}"),
        (false, None, _) => format!("struct_ops `{registered_as}` (link)"),
        (true, _, Some(id)) => format!(
            "struct_ops `{registered_as}`, map id {id} (no struct_ops links before Linux 6.4: unregistered at exit)"
        ),
        (true, _, None) => format!("struct_ops `{registered_as}` (unregistered at exit)"),
    };
    Ok(Attachment::struct_ops(StructOpsGuard { link: Some(link), legacy, name: registered_as.to_owned() }, describe))
}

fn name(map: &OpenMapMut<'_>) -> String {
    map.name().to_string_lossy().into_owned()
}

fn register_error(e: libbpf_rs::Error, registered_as: &str) -> Error {
    match e.kind() {
        libbpf_rs::ErrorKind::AlreadyExists => {
            let holder = struct_ops_maps()
                .into_iter()
                .find(|m| m.name == registered_as)
                .and_then(|m| fd_holders("map_id", m.id).into_iter().next());
            let by = holder.map_or(String::new(), |(pid, comm)| format!(" by pid {pid} `{comm}`"));
            Error::runtime(
                format!("a congestion control named `{registered_as}` is registered already{by}"),
                Some(
                    "one registration per name: use the running one (setsockopt TCP_CONGESTION, \
                     sysctl net.ipv4.tcp_congestion_control), or stop the tracekit that holds it"
                        .to_owned(),
                ),
            )
        }
        _ => Error::Attach {
            what: format!("struct_ops `{registered_as}`"),
            hint: Some("registering needs root (CAP_BPF and CAP_NET_ADMIN); see `bpftool struct_ops list`".to_owned()),
            source: e,
        },
    }
}

/// Undoes a registration when dropped (a link form's link fd closes; the legacy form's map
/// element is deleted).
pub(crate) struct StructOpsGuard {
    link: Option<libbpf_rs::Link>,
    legacy: bool,
    name: String,
}

impl StructOpsGuard {
    pub(crate) fn remove(mut self) -> Result<(), Error> {
        self.unregister()
    }

    fn unregister(&mut self) -> Result<(), Error> {
        let Some(mut link) = self.link.take() else {
            return Ok(());
        };
        if !self.legacy {
            // Closing the link's fd unregisters.
            drop(link);
            return Ok(());
        }
        // The legacy form's "link" is libbpf's stand-in whose fd is the map's: deleting the
        // map's element unregisters. Done here rather than by the stand-in's destructor, which
        // would swallow the error.
        let key = 0u32;
        // SAFETY: the fd is the open struct_ops map's; the key is its only one (u32 0).
        let rc = unsafe { libbpf_sys::bpf_map_delete_elem(link.as_fd().as_raw_fd(), (&raw const key).cast()) };
        let err = std::io::Error::last_os_error();
        link.disconnect();
        drop(link);
        if rc < 0 && err.raw_os_error() != Some(libc::ENOENT) {
            return Err(Error::runtime(
                format!("unregistering struct_ops `{}`: {err}", self.name),
                Some(format!("remove it by hand: `bpftool struct_ops unregister name {}`", self.name)),
            ));
        }
        Ok(())
    }
}

impl Drop for StructOpsGuard {
    fn drop(&mut self) {
        if let Err(e) = self.unregister() {
            eprintln!("tracekit: warning: {e}");
        }
    }
}

/// A struct_ops map the kernel holds.
#[derive(Debug, Clone)]
pub struct StructOpsMap {
    pub id: u32,
    pub name: String,
    pub link_form: bool,
}

/// Every struct_ops map the kernel holds (registered or not).
pub fn struct_ops_maps() -> Vec<StructOpsMap> {
    let mut out = Vec::new();
    let mut id = 0u32;
    loop {
        // SAFETY: plain syscall wrapper writing the next id into `id`.
        if unsafe { libbpf_sys::bpf_map_get_next_id(id, &mut id) } != 0 {
            return out;
        }
        let Some(fd) = map_fd_by_id(id) else { continue };
        let Some(info) = map_info(fd.as_fd()) else { continue };
        if info.type_ != libbpf_sys::BPF_MAP_TYPE_STRUCT_OPS {
            continue;
        }
        let bytes: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        out.push(StructOpsMap {
            id,
            name: String::from_utf8_lossy(&bytes).into_owned(),
            link_form: info.map_flags & BPF_F_LINK != 0,
        });
    }
}

fn map_fd_by_id(id: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall wrapper; the fd is owned below.
    let fd = unsafe { libbpf_sys::bpf_map_get_fd_by_id(id) };
    // SAFETY: fd is a new map fd nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn map_info(fd: BorrowedFd<'_>) -> Option<libbpf_sys::bpf_map_info> {
    // SAFETY: bpf_map_info is plain data; all zero is valid.
    let mut info: libbpf_sys::bpf_map_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libbpf_sys::bpf_map_info>() as u32;
    // SAFETY: fd is an open map fd; info and len are valid for writes of len bytes.
    let rc = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (rc == 0).then_some(info)
}

/// Removes registrations a killed tracekit left: legacy-form struct_ops maps named in `names`
/// that no process holds. Returns one note per removal. A map some process holds (another
/// tracekit running) is left alone.
pub fn sweep_stale(names: &[&str]) -> Vec<String> {
    let mut notes = Vec::new();
    for m in struct_ops_maps() {
        if m.link_form || !names.contains(&m.name.as_str()) || !fd_holders("map_id", m.id).is_empty() {
            continue;
        }
        let Some(fd) = map_fd_by_id(m.id) else { continue };
        let key = 0u32;
        // SAFETY: fd is an open struct_ops map fd; the key is its only one (u32 0).
        let rc = unsafe { libbpf_sys::bpf_map_delete_elem(fd.as_raw_fd(), (&raw const key).cast()) };
        if rc == 0 {
            notes.push(format!(
                "unregistered `{}` (struct_ops map id {}), left registered by a tracekit that was killed",
                m.name, m.id
            ));
        }
    }
    notes
}
