//! `tracekit tc IFACE`: every packet an interface receives and sends, seen by a TC program
//! (clsact ingress and egress): addresses, ports, TTL, DSCP/ECN, mark, and with `--sock` the
//! socket the packet belongs to. Headers are read with `bpf_skb_load_bytes`, so non-linear
//! skbs decode too.
//!
//! Overhead: the parse and filter run per packet; events go out only for matched packets.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::packet::{Columns, PacketFilter, PacketPrinter};
use crate::error::Error;
use crate::runtime::attach::netdev::{self, Iface, TcBackend, TcDir};
use crate::runtime::attach::netns::Netns;
use crate::runtime::cli::net::NetArgs;
use crate::runtime::cli::task::parse_duration;
use crate::runtime::{OutputArgs, Runtime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// tcx links where the kernel has them (6.6+), else clsact + cls_bpf
    Auto,
    /// tcx links: owned by tracekit's file descriptors, gone even after SIGKILL
    Tcx,
    /// clsact qdisc + cls_bpf filter (any kernel): removed at exit, swept at the next start
    Clsact,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit tc eth0                           # both directions\n    \
    tracekit tc eth0 --egress --proto udp      # what leaves, UDP only\n    \
    tracekit tc eth0 --sock --port 5432        # with the socket of each packet\n    \
    tracekit tc veth0 --netns blue -j -n 100   # 100 packets as NDJSON, in namespace `blue`\n    \
    tracekit tc eth0 udp port 53 and not host 10.0.0.1  # tcpdump's filter language")]
pub struct TcArgs {
    /// Interface to attach to
    #[arg(value_name = "IFACE")]
    pub iface: String,

    /// Only packets the interface receives (default: both directions)
    #[arg(long, conflicts_with = "egress")]
    pub ingress: bool,

    /// Only packets the interface sends
    #[arg(long)]
    pub egress: bool,

    /// For TCP packets, look up the local socket of the flow (state, cookie, uid)
    #[arg(long)]
    pub sock: bool,

    /// Which kind of TC attachment
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// Also print the packet counters every SECS seconds
    #[arg(short = 'i', long, value_name = "SECS", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    #[command(flatten)]
    pub net: NetArgs,

    #[command(flatten)]
    pub out: OutputArgs,
}

pub fn run(args: TcArgs) -> Result<i32, Error> {
    let filter = PacketFilter::from_args(&args.net, args.out.json, false, args.sock)?;
    let mut rt = Runtime::for_packets(args.out.clone())?;
    let netns = rt.step("netns", || Netns::resolve(args.net.netns.as_deref()))?;
    let iface = rt.step("interface", || Iface::resolve(&args.iface, &netns))?;
    filter.check_link(&iface, &netns)?;
    let dirs: &[TcDir] = match (args.ingress, args.egress) {
        (true, _) => &[TcDir::Ingress],
        (_, true) => &[TcDir::Egress],
        _ => &[TcDir::Ingress, TcDir::Egress],
    };
    let backend = match args.backend {
        Backend::Auto => TcBackend::Auto,
        Backend::Tcx => TcBackend::Tcx,
        Backend::Clsact => TcBackend::Clsact,
    };
    let transport = rt.step("transport", || rt.transport())?;
    rt.say(format_args!(
        "plan: tc {dirs:?} on {} (ifindex {}, netns {}), backend {:?}, {}; transport {transport:?}",
        iface.name,
        iface.index,
        netns.label(),
        args.backend,
        filter.describe(),
    ));

    let mut storage = MaybeUninit::uninit();
    let skel = super::open_load(&rt, Columns::Tc, &filter, netns.inode, transport, &mut storage, |_| {})?;
    let label = format!("tc on {}", iface.name);
    let printer = PacketPrinter::new(Columns::Tc, &netns, &skel.maps.tk_pkt_counts, label, args.sock, args.interval)
        .with_capture(filter.open_capture()?, filter.print);
    let verbose = rt.out.verbose > 0;
    rt.stream(&skel, transport, printer, |skel| {
        let mut held = Vec::new();
        for &dir in dirs {
            let (prog, name) = match dir {
                TcDir::Ingress => (&skel.progs.tc__ingress, "tc__ingress"),
                TcDir::Egress => (&skel.progs.tc__egress, "tc__egress"),
            };
            let att = netdev::attach_tc(prog.as_fd(), name, &iface, &netns, dir, backend)?;
            for note in att.notes() {
                eprintln!("tracekit: {note}");
            }
            if verbose {
                eprintln!("tracekit: {}", att.describe());
            }
            held.push(att);
        }
        Ok(held)
    })
}
