//! The packet programs' skeletons (src/bpf/net), the one event type every packet tool decodes
//! into, and BPF_PROG_RUN for tests and the benchmark.

use std::mem::size_of;

use libbpf_rs::ProgramInput;

/// The packet tools' one object: a program per hook (xdp, tc ingress/egress, socket filter).
pub mod pkt {
    crate::packet_skel!("pkt", OpenPktSkel, PktSkel);
    // SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
    unsafe impl plain::Plain for skel::types::tk_pkt_event {}
}

/// `tracekit cgroup`: a program per cgroup hook.
pub mod cgroup {
    crate::packet_skel!("cgroup", OpenCgroupSkel, CgroupSkel);
    // SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
    unsafe impl plain::Plain for skel::types::tk_cg_event {}
}

/// `tracekit forward`: XDP and TC forwarding with bpf_fib_lookup.
pub mod forward {
    crate::packet_skel!("forward", OpenForwardSkel, ForwardSkel);
    // SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
    unsafe impl plain::Plain for skel::types::tk_fwd_event {}
    // SAFETY: as above.
    unsafe impl plain::Plain for skel::types::tk_fwd_sent {}
}

/// The benchmark's floor: programs that return at once. No transport, so no packet traits.
pub mod floor {
    crate::include_skel!("floor");
}

/// What every packet tool decodes its events into.
pub type PacketEvent = pkt::skel::types::tk_pkt_event;

/// Size of `struct tk_pkt_event` (pkt.h): a layout drift fails the build.
pub const PACKET_EVENT_SIZE: usize = 104;
const _: () = assert!(size_of::<PacketEvent>() == PACKET_EVENT_SIZE);

/// Runs `prog` on `frame` `repeat` times with BPF_PROG_RUN (nothing attached): the program's
/// return value and the kernel's average duration of one run in nanoseconds.
pub fn prog_run(prog: &libbpf_rs::ProgramMut<'_>, frame: &[u8], repeat: u32) -> libbpf_rs::Result<(i32, u32)> {
    let input = ProgramInput { data_in: Some(frame), repeat, ..Default::default() };
    let out = prog.test_run(input)?;
    Ok((out.return_value as i32, u32::try_from(out.duration.as_nanos()).unwrap_or(u32::MAX)))
}
