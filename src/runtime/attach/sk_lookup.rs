//! sk_lookup programs: a netns link (Linux 5.9) runs the program on every socket lookup of one
//! network namespace. There is no legacy form; the link goes when its fd closes or the
//! namespace is removed. Several sk_lookup links in one namespace run in attach order.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use libbpf_rs::libbpf_sys;

use super::Attachment;
use super::netns::Netns;
use crate::error::Error;
use crate::runtime::probe::{Feature, Probes, Status};

/// The kernel's internal "not supported" errno, which leaks to user space.
const ENOTSUPP: i32 = 524;

/// Attaches `prog` (a `BPF_PROG_TYPE_SK_LOOKUP` program) to `netns` through a netns link.
pub fn attach_sk_lookup(prog: BorrowedFd<'_>, prog_name: &str, netns: &Netns) -> Result<Attachment, Error> {
    // SAFETY: prog is an open program fd, netns.fd() an open namespace file; NULL opts are
    // allowed.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            netns.fd().as_raw_fd(),
            libbpf_sys::BPF_SK_LOOKUP,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        return Err(sk_lookup_error(-fd, prog_name, netns));
    }
    // SAFETY: fd is a new link fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let what = format!("sk_lookup link in netns {}", netns.label());
    Ok(Attachment::link(fd, |id| match id {
        Some(id) => format!("{what}, link id {id}"),
        None => what,
    }))
}

fn probes() -> &'static Probes {
    static PROBES: OnceLock<Probes> = OnceLock::new();
    PROBES.get_or_init(Probes::default)
}

fn sk_lookup_error(errno: i32, prog_name: &str, netns: &Netns) -> Error {
    let what = format!("sk_lookup program `{prog_name}` in netns {}", netns.label());
    let show = "`bpftool link show`";
    match errno {
        libc::EINVAL | ENOTSUPP if matches!(probes().get(Feature::NetnsLink), Status::Unsupported { .. }) => {
            Error::Unsupported {
                feature: "netns_link",
                reason: "this kernel has no sk_lookup (netns links, Linux 5.9+)".into(),
                hint: Some("run it on Linux 5.9 or later".into()),
            }
        }
        libc::EINVAL => Error::Attach {
            what,
            hint: Some(
                "only a `BPF_PROG_TYPE_SK_LOOKUP` program (SEC(\"sk_lookup\")) attaches to a \
                 namespace's socket lookup"
                    .into(),
            ),
            source: libbpf_rs::Error::from_raw_os_error(errno),
        },
        libc::E2BIG => Error::runtime(
            format!("cannot attach `{prog_name}`: netns {} has the maximum of 64 sk_lookup programs", netns.label()),
            Some(format!("see {show}")),
        ),
        _ => Error::Attach {
            what,
            hint: Some(format!("attaching needs root (CAP_NET_ADMIN and CAP_BPF); see {show}")),
            source: libbpf_rs::Error::from_raw_os_error(errno),
        },
    }
}
