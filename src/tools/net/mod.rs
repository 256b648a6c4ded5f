//! The packet tools: XDP, TC and socket-filter observers on one shared BPF object.

pub mod capture;
pub mod cgroup;
pub mod forward;
pub mod packet;
pub mod skels;
pub mod sklookup;
pub mod sockfilter;
pub mod sockmap;
pub mod sockops;
pub mod tc;
pub mod tcpcc;
pub mod xdp;

use std::mem::MaybeUninit;

use libbpf_rs::OpenObject;
use packet::{Columns, OpenPktSkel, PacketFilter, PktSkel, PktSkelBuilder, types};

use libbpf_rs::skel::OpenSkel;

use crate::error::Error;
use crate::runtime::pcap::inject;
use crate::runtime::pcap::translate::{PacketAccess, translate};
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
    // The expression's translation is checked before anything is opened: what it cannot
    // take is a usage error naming the construct.
    if let Some((text, classic)) = &filter.pcap {
        let access = match hook {
            Columns::Xdp => PacketAccess::Direct,
            Columns::Tc => PacketAccess::SkbLoadBytes,
            Columns::Socket => PacketAccess::SkbLoadBytesFromMac,
        };
        translate(classic, access).map_err(|u| {
            Error::usage(
                format!("the filter expression `{text}` cannot run in the kernel: libpcap compiled it to {}", u.0),
                Some("write the test another way, or use --port/--host/--proto".to_owned()),
            )
        })?;
        inject::register()?;
    }
    let mut open = rt.open(tool, PktSkelBuilder::default(), storage)?;
    rt.configure_transport(&mut open, transport)?;
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
    filter.write(&mut ro.tk_pkt_filter, netns_inode);
    tune(&mut ro.tk_pkt_filter);
    load_only(&mut open, hook);
    if let Some((_, classic)) = &filter.pcap {
        inject::arm(open.open_object(), classic.clone())?;
    }
    let loaded = rt.load(tool, open);
    let why = inject::disarm();
    match (loaded, why) {
        (Err(_), Some(why)) => {
            Err(Error::runtime(format!("putting the filter expression into the program: {why}"), None))
        }
        (loaded, _) => loaded,
    }
}

/// Loads only the programs of one hook: the object has one per hook, a tool uses one.
pub fn load_only(open: &mut OpenPktSkel<'_>, hook: Columns) {
    let p = &mut open.progs;
    p.xdp__observe.set_autoload(hook == Columns::Xdp);
    p.tc__ingress.set_autoload(hook == Columns::Tc);
    p.tc__egress.set_autoload(hook == Columns::Tc);
    p.sock__observe.set_autoload(hook == Columns::Socket);
}
