//! The packet tools: XDP, TC and socket-filter observers on one shared BPF object.

pub mod packet;
pub mod skels;
pub mod sockfilter;
pub mod tc;
pub mod xdp;

use packet::{Columns, OpenPktSkel};

/// Loads only the programs of one hook: the object has one per hook, a tool uses one.
pub fn load_only(open: &mut OpenPktSkel<'_>, hook: Columns) {
    let p = &mut open.progs;
    p.xdp__observe.set_autoload(hook == Columns::Xdp);
    p.tc__ingress.set_autoload(hook == Columns::Tc);
    p.tc__egress.set_autoload(hook == Columns::Tc);
    p.sock__observe.set_autoload(hook == Columns::Socket);
}
