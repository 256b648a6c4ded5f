//! `tracekit sockfilter [IFACE]`: every packet of one interface (or all), seen by an eBPF
//! socket filter on tracekit's own `AF_PACKET` socket. It occupies no hook, so it never gets
//! in another program's way, and nothing outlives tracekit: the filter dies with the socket.
//!
//! Overhead: the kernel clones each packet to the packet socket (as for tcpdump), the filter
//! parses it and keeps none of it; events go out only for matched packets.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;

use clap::Args;

use super::packet::{Columns, PacketFilter, PacketPrinter};
use crate::error::Error;
use crate::runtime::attach::netdev::Iface;
use crate::runtime::attach::netns::Netns;
use crate::runtime::attach::socket;
use crate::runtime::cli::net::NetArgs;
use crate::runtime::pcap;
use crate::runtime::{OutputArgs, Runtime};

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit sockfilter                        # every interface\n    \
    tracekit sockfilter lo --port 8080         # loopback, port 8080 either way\n    \
    tracekit sockfilter eth0 -6 --proto icmp6  # ICMPv6 on eth0\n    \
    tracekit sockfilter --netns blue -j        # every interface of namespace `blue`\n    \
    tracekit sockfilter tcp port 53            # tcpdump's filter language, every interface")]
pub struct SockfilterArgs {
    /// Interface to watch (default: every interface of the namespace)
    #[arg(value_name = "IFACE")]
    pub iface: Option<String>,

    #[command(flatten)]
    pub net: NetArgs,

    #[command(flatten)]
    pub out: OutputArgs,
}

pub fn run(mut args: SockfilterArgs) -> Result<i32, Error> {
    let mut rt = Runtime::for_packets(args.out.clone())?;
    let netns = rt.step("netns", || Netns::resolve(args.net.netns.as_deref()))?;
    // The interface is optional: `tracekit sockfilter tcp port 80` is an expression on every
    // interface, unless an interface has that name.
    if let Some(word) = args.iface.take_if(|w| pcap::starts_expression(w) && Iface::resolve(w, &netns).is_err()) {
        args.net.expression.insert(0, word);
    }
    let filter = PacketFilter::from_args(&args.net, args.out.json, false, false)?;
    let iface = match &args.iface {
        Some(name) => {
            let iface = rt.step("interface", || Iface::resolve(name, &netns))?;
            filter.check_link(&iface, &netns)?;
            Some(iface)
        }
        None => None,
    };
    let transport = rt.step("transport", || rt.transport())?;
    let on = iface.as_ref().map_or_else(|| "every interface".to_owned(), |i| i.name.clone());
    rt.say(format_args!(
        "plan: socket filter on {on} (netns {}), {}; transport {transport:?}",
        netns.label(),
        filter.describe(),
    ));

    let mut storage = MaybeUninit::uninit();
    let skel = super::open_load(&rt, Columns::Socket, &filter, netns.inode, transport, &mut storage, |f| {
        // On loopback every packet passes the packet socket twice, leaving and arriving:
        // keep one, as libpcap does.
        f.skip_lo_outgoing = 1;
    })?;
    let label = format!("socket filter on {on}");
    let printer = PacketPrinter::new(Columns::Socket, &netns, &skel.maps.tk_pkt_counts, label, false, None)
        .with_capture(filter.open_capture()?, filter.print);
    let verbose = rt.out.verbose > 0;
    rt.stream(&skel, transport, printer, |skel| {
        let att = socket::attach_packet_socket(skel.progs.sock__observe.as_fd(), iface.as_ref(), &netns)?;
        if verbose {
            eprintln!("tracekit: {}", att.describe());
        }
        Ok(att)
    })
}
