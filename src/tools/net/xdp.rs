//! `tracekit xdp IFACE`: every packet an interface receives, seen by an XDP program at the
//! driver (native mode) or at the start of the stack (skb mode), before anything else.
//!
//! Overhead: the parse and filter run per packet; events go out only for matched packets (with
//! `--drop-every`, only for the dropped ones). `--drop-every` adds a spin lock per matched packet.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::packet::{Columns, PacketFilter, PacketPrinter};
use crate::error::Error;
use crate::runtime::attach::netdev::{self, Iface, XdpMode};
use crate::runtime::attach::netns::Netns;
use crate::runtime::cli::net::NetArgs;
use crate::runtime::cli::task::parse_duration;
use crate::runtime::{OutputArgs, Runtime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Native where the driver supports it, else skb
    Auto,
    /// Generic XDP (after the skb is built): works on every interface
    Skb,
    /// Driver XDP (veth, most NICs): fastest
    Native,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit xdp eth0                          # every packet eth0 receives\n    \
    tracekit xdp eth0 --proto tcp --port 443   # HTTPS only, filtered in the kernel\n    \
    tracekit xdp eth0 --sock --port 8080       # which local socket gets each packet\n    \
    tracekit xdp eth0 --drop --src 10.0.0.9    # drop that host's packets (counted)\n    \
    tracekit xdp eth0 --drop-every 100 tcp and greater 100  # 1 % loss on TCP data\n    \
    tracekit xdp veth0 --netns blue -j         # inside namespace `blue`, as NDJSON\n    \
    tracekit xdp eth0 'tcp[tcpflags] & tcp-syn != 0'  # tcpdump's filter language")]
pub struct XdpArgs {
    /// Interface to attach to
    #[arg(value_name = "IFACE")]
    pub iface: String,

    /// XDP mode
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,

    /// Drop the matched packets (XDP_DROP); everything else passes
    #[arg(long)]
    pub drop: bool,

    /// Drop every Nth matched packet, N >= 2 (100: 1 % loss), exactly: one count for all CPUs.
    /// Only the dropped packets are printed; the passed ones are counted (-i, exit summary)
    #[arg(long, value_name = "N", value_parser = parse_drop_every, conflicts_with = "drop")]
    pub drop_every: Option<u32>,

    /// For TCP packets, look up the local socket that owns the flow and print its state
    #[arg(long)]
    pub sock: bool,

    /// Also print the packet counters every SECS seconds
    #[arg(short = 'i', long, value_name = "SECS", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    #[command(flatten)]
    pub net: NetArgs,

    #[command(flatten)]
    pub out: OutputArgs,
}

/// `--drop-every N`: 2 or more (1 is what --drop does; 0 would drop nothing).
fn parse_drop_every(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n @ 2..) => Ok(n),
        Ok(1) => Err("N must be at least 2: to drop every matched packet, use --drop".to_owned()),
        Ok(_) => Err("N must be at least 2 (--drop-every 100 drops 1 % of the matched packets)".to_owned()),
        Err(_) => Err(format!("`{s}` is not a whole number from 2 to {}", u32::MAX)),
    }
}

pub fn run(args: XdpArgs) -> Result<i32, Error> {
    let mut filter = PacketFilter::from_args(&args.net, args.out.json, args.drop, args.sock)?;
    filter.drop_every = args.drop_every.unwrap_or(0);
    let mut rt = Runtime::for_packets(args.out.clone())?;
    let netns = rt.step("netns", || Netns::resolve(args.net.netns.as_deref()))?;
    let iface = rt.step("interface", || Iface::resolve(&args.iface, &netns))?;
    filter.check_link(&iface, &netns)?;
    let mode = match args.mode {
        Mode::Auto => XdpMode::Auto,
        Mode::Skb => XdpMode::Skb,
        Mode::Native => XdpMode::Native,
    };
    let transport = rt.step("transport", || rt.transport())?;
    let verdict = match args.drop_every {
        Some(n) => format!(", 1 in {n} matched packets dropped (only those printed)"),
        None if args.drop => ", matched packets dropped".to_owned(),
        None => String::new(),
    };
    rt.say(format_args!(
        "plan: xdp on {} (ifindex {}, netns {}), mode {:?}, {}{verdict}; transport {transport:?}",
        iface.name,
        iface.index,
        netns.label(),
        args.mode,
        filter.describe(),
    ));

    let mut storage = MaybeUninit::uninit();
    let skel = super::open_load(&rt, Columns::Xdp, &filter, netns.inode, transport, &mut storage, |_| {})?;
    let label = format!("xdp on {}", iface.name);
    let printer = PacketPrinter::new(Columns::Xdp, &netns, &skel.maps.tk_pkt_counts, label, args.sock, args.interval)
        .with_capture(filter.open_capture()?, filter.print);
    let verbose = rt.out.verbose > 0;
    rt.stream(&skel, transport, printer, |skel| {
        let prog = &skel.progs.xdp__observe;
        let (att, _mode) = netdev::attach_xdp(prog.as_fd(), "xdp__observe", &iface, &netns, mode)?;
        if verbose {
            eprintln!("tracekit: {}", att.describe());
        }
        Ok(att)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_every_takes_two_or_more() {
        assert_eq!(parse_drop_every("2"), Ok(2));
        assert_eq!(parse_drop_every("100"), Ok(100));
        assert!(parse_drop_every("1").unwrap_err().contains("--drop"));
        assert!(parse_drop_every("0").unwrap_err().contains("at least 2"));
        assert!(parse_drop_every("-3").is_err());
        assert!(parse_drop_every("x").unwrap_err().contains("`x`"));
    }
}
