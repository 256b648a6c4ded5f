//! The packet tools: XDP, TC and socket-filter observers on one shared BPF object.

pub mod packet;
pub mod skels;
pub mod sockfilter;
pub mod tc;
pub mod xdp;

use std::mem::MaybeUninit;

use libbpf_rs::OpenObject;
use packet::{Columns, OpenPktSkel, PacketFilter, PktSkel, PktSkelBuilder, types};

use crate::error::Error;
use crate::runtime::{Runtime, Transport};

/// Opens the packet object, writes the transport and the packet filter (`tune` may adjust it),
/// keeps only `hook`'s programs and loads: the same steps, timed with -v, for every packet tool.
pub fn open_load<'o>(
    rt: &Runtime,
    hook: Columns,
    filter: &PacketFilter,
    netns_inode: u64,
    transport: Transport,
    storage: &'o mut MaybeUninit<OpenObject>,
    tune: impl FnOnce(&mut types::tk_pkt_filter),
) -> Result<PktSkel<'o>, Error> {
    let tool = match hook {
        Columns::Xdp => "xdp",
        Columns::Tc => "tc",
        Columns::Socket => "sockfilter",
    };
    let mut open = rt.open(tool, PktSkelBuilder::default(), storage)?;
    rt.configure_transport(&mut open, transport)?;
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
    filter.write(&mut ro.tk_pkt_filter, netns_inode);
    tune(&mut ro.tk_pkt_filter);
    load_only(&mut open, hook);
    rt.load(tool, open)
}

/// Loads only the programs of one hook: the object has one per hook, a tool uses one.
pub fn load_only(open: &mut OpenPktSkel<'_>, hook: Columns) {
    let p = &mut open.progs;
    p.xdp__observe.set_autoload(hook == Columns::Xdp);
    p.tc__ingress.set_autoload(hook == Columns::Tc);
    p.tc__egress.set_autoload(hook == Columns::Tc);
    p.sock__observe.set_autoload(hook == Columns::Socket);
}
