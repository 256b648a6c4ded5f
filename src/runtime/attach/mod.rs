//! The attach layer: every way tracekit attaches a program returns an [`Attachment`] that
//! detaches when dropped. Link-based forms first (owned by a file descriptor, so even SIGKILL
//! leaves nothing behind); a legacy form only behind a guard that removes it on every normal
//! exit, plus a sweep of stale tracekit attachments at the next start.
//!
//! - [`netns`]: `--netns NAME|PATH|PID` and entering a namespace for one thread.
//! - [`netdev`]: interfaces, XDP links, tcx links and the legacy clsact/cls_bpf form.
//! - [`socket`]: socket filters on an `AF_PACKET` socket.
//! - [`cgroup`]: cgroup links, and the transient cgroup of `-- CMD`.
//! - [`sk_lookup`]: sk_lookup programs through netns links.
//! - [`sockmap`]: sk_msg/sk_skb programs on a sockmap (link, or legacy behind a guard).
//! - [`struct_ops`]: struct_ops maps (TCP congestion control): link, or legacy behind a guard.
//! - [`tracing`]: the tracing kinds (fentry, kprobe, tracepoints, uprobes, perf events).

pub mod cgroup;
pub mod netdev;
pub mod netns;
pub mod sk_lookup;
pub mod socket;
pub mod sockmap;
pub mod struct_ops;
pub mod tracing;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use libbpf_rs::libbpf_sys;

use crate::error::Error;

pub use cgroup::{TransientCgroup, attach_cgroup};
pub use netdev::{Iface, TcBackend, TcDir, XdpMode, attach_tc, attach_xdp, iface_name};
pub use netns::{Netns, NetnsGuard};
pub use sk_lookup::attach_sk_lookup;
pub use socket::attach_packet_socket;
pub use sockmap::{attach_sockmap, attach_sockmap_legacy};

/// Something attached. Dropping it detaches: closing a link or socket fd, or running the
/// guard of a legacy attachment.
pub struct Attachment {
    kind: Kind,
    describe: String,
    notes: Vec<String>,
}

enum Kind {
    /// A BPF link (XDP, tcx, ...): the kernel detaches when the last fd closes. The fd is held,
    /// never read.
    Link {
        #[allow(dead_code)]
        fd: OwnedFd,
        id: Option<u32>,
    },
    /// A legacy netlink attachment, removed by the guard's Drop.
    Tc(netdev::TcGuard),
    /// A socket with a filter: the filter goes with the socket (held, never read).
    Socket(#[allow(dead_code)] OwnedFd),
    /// A legacy sockmap program (`bpf_prog_attach` on the map), detached by the guard's Drop.
    Sockmap(sockmap::SockmapGuard),
    /// A registered struct_ops map (link or legacy), unregistered by the guard's Drop.
    StructOps(struct_ops::StructOpsGuard),
}

impl Attachment {
    pub(crate) fn link(fd: OwnedFd, describe: impl FnOnce(Option<u32>) -> String) -> Attachment {
        let id = link_id_of_fd(fd.as_fd());
        Attachment { describe: describe(id), kind: Kind::Link { fd, id }, notes: Vec::new() }
    }

    pub(crate) fn tc(guard: netdev::TcGuard, describe: String, notes: Vec<String>) -> Attachment {
        Attachment { kind: Kind::Tc(guard), describe, notes }
    }

    pub(crate) fn socket(fd: OwnedFd, describe: String) -> Attachment {
        Attachment { kind: Kind::Socket(fd), describe, notes: Vec::new() }
    }

    pub(crate) fn sockmap(guard: sockmap::SockmapGuard, describe: String) -> Attachment {
        Attachment { kind: Kind::Sockmap(guard), describe, notes: Vec::new() }
    }

    pub(crate) fn struct_ops(guard: struct_ops::StructOpsGuard, describe: String) -> Attachment {
        Attachment { kind: Kind::StructOps(guard), describe, notes: Vec::new() }
    }

    /// For `-v` and errors: `xdp link on tk0 (native mode), link id 12`.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The kernel's id of the link, for link-based attachments.
    pub fn link_id(&self) -> Option<u32> {
        match &self.kind {
            Kind::Link { id, .. } => *id,
            _ => None,
        }
    }

    /// Lines the tool should print once (each without the `tracekit: ` prefix), e.g. that a
    /// stale tc filter left by a killed tracekit was removed before this attach.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Detaches now and reports a failure (Drop can only warn on stderr).
    pub fn detach(self) -> Result<(), Error> {
        match self.kind {
            Kind::Tc(guard) => guard.remove(),
            Kind::Sockmap(guard) => guard.remove(),
            Kind::StructOps(guard) => guard.remove(),
            Kind::Link { .. } | Kind::Socket(_) => Ok(()),
        }
    }
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

pub(crate) fn link_id_of_fd(fd: BorrowedFd<'_>) -> Option<u32> {
    // SAFETY: bpf_link_info is plain data (integers and a union of integers); all zero is valid.
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: fd is an open link fd; info and len are valid for writes of len bytes.
    let rc = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (rc == 0).then_some(info.id)
}
