//! `tracekit forward IFACE…`: forwards packets between interfaces in XDP (or TC with `--tc`)
//! on the kernel's own routing and neighbour tables (`bpf_fib_lookup`): what the lookup gives a
//! next hop for is rewritten and sent on; everything else goes up to the stack as it came.
//! Prints per-interface counters at exit and every `--interval`; `--trace` adds an event per
//! decision.
//!
//! Overhead: one header parse and one FIB lookup per packet; events only with `--trace`.

use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use clap::Args;
use libbpf_rs::{MapCore, MapFlags};

use super::packet::{IfaceNames, proto_name};
use super::skels::forward::skel::{ForwardSkel, ForwardSkelBuilder, OpenForwardSkel, types};
use super::tc::Backend;
use super::xdp::Mode;
use crate::error::Error;
use crate::runtime::attach::netdev::{self, Iface, TcBackend, TcDir, XdpMode};
use crate::runtime::attach::netns::Netns;
use crate::runtime::attach::tracing;
use crate::runtime::cli::task::parse_duration;
use crate::runtime::output::{EventHeader, PacketHeader, Sink, c_str};
use crate::runtime::watch::Every;
use crate::runtime::{OutputArgs, Printer, Runtime};

/// TK_FWD_MAX_IFACES of forward.h (a macro: not in BTF; a test checks it against the config).
const MAX_IFACES: usize = 32;
const OUTCOMES: usize = types::tk_fwd_outcome::TK_FWD_NOUTCOMES.0 as usize;

/// Outcome names, by value (`enum tk_fwd_outcome`): 1 to 9 are the BPF_FIB_LKUP_RET_* codes.
const OUTCOME_NAMES: [&str; OUTCOMES] = [
    "redirect",
    "blackhole",
    "unreachable",
    "prohibit",
    "not_fwded",
    "fwd_disabled",
    "unsupp_lwt",
    "no_neigh",
    "frag_needed",
    "no_src_addr",
    "not_ip",
    "ttl",
    "not_ours",
    "error",
    "neigh",
    "peer",
    "ingress",
    "aborted",
    "xmit_drop",
    "slow_path",
];
const FORWARDED: [usize; 4] = [0, 14, 15, 16];
/// Outcomes that went up to the stack: the lookup's misses (1 to 9), not_ip, ttl, not_ours, error,
/// slow_path.
const PASSED: [usize; 14] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 19];
const ABORTED: usize = 17;
const XMIT_DROP: usize = 18;
const FWD_DISABLED: usize = 5;

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit forward eth0 eth1                 # route between them in XDP, on the kernel's tables\n    \
    tracekit forward eth0 eth1 -i 1            # with the counters every second\n    \
    tracekit forward --tc eth0 eth1            # at TC (neighbours resolved with bpf_redirect_neigh)\n    \
    tracekit forward --tc --peer veth1 veth2   # into the veth peers' namespaces (bpf_redirect_peer)\n    \
    tracekit forward eth0 eth1 --trace -n 20   # why the next 20 packets went where they went\n\n\
Forwarding must be on for the interfaces (sysctl net.ipv4.conf.IFACE.forwarding=1): the lookup\n\
forwards only what the kernel would. A frame redirected out of a veth reaches its peer only if\n\
the peer has NAPI (an XDP program on it, or `ethtool -K PEER gro on`); tracekit counts and\n\
reports such drops.")]
pub struct ForwardArgs {
    /// Interfaces to forward between (received on any, sent out of the route's one)
    #[arg(value_name = "IFACE", required = true)]
    pub ifaces: Vec<String>,

    /// Forward at TC ingress instead of XDP (needed for --peer and --ingress-to)
    #[arg(long)]
    pub tc: bool,

    /// XDP mode
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,

    /// Which kind of TC attachment (--tc)
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// Look up the main table directly, skipping policy rules (BPF_FIB_LOOKUP_DIRECT)
    #[arg(long)]
    pub direct: bool,

    /// Send into the veth peer's namespace with bpf_redirect_peer (--tc, veth interfaces)
    #[arg(long, conflicts_with = "ingress_to")]
    pub peer: bool,

    /// Deliver every IP packet into IFACE's receive path instead (--tc; no lookup, no hop)
    #[arg(long, value_name = "IFACE")]
    pub ingress_to: Option<String>,

    /// An event per forwarding decision (for debugging a route)
    #[arg(long)]
    pub trace: bool,

    /// Also print the counters every SECS seconds
    #[arg(short = 'i', long, value_name = "SECS", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Network namespace of the interfaces: a name (`ip netns`), a path or a pid
    #[arg(long, value_name = "NAME|PATH|PID")]
    pub netns: Option<String>,

    #[command(flatten)]
    pub out: OutputArgs,
}

/// What the checks decided before anything is loaded.
struct Plan {
    netns: Netns,
    /// The interfaces forwarded between, then --ingress-to's: the programs' slots.
    slots: Vec<Iface>,
    /// Each slot's MAC: XDP forwards only frames addressed to the interface they came in on.
    macs: Vec<[u8; 6]>,
    attached: usize,
    ingress_to: Option<(Iface, [u8; 6])>,
    /// --peer: the slots that are veths (bit i for slot i).
    peer_slots: u32,
}

pub fn run(args: ForwardArgs) -> Result<i32, Error> {
    let only_tc = [(args.peer, "--peer"), (args.ingress_to.is_some(), "--ingress-to")];
    if let Some((_, flag)) = only_tc.iter().find(|(on, _)| *on && !args.tc) {
        return Err(Error::usage(
            format!("{flag} is a TC redirect: XDP has no such helper"),
            Some(format!("add --tc: `tracekit forward --tc {flag} …`")),
        ));
    }
    let xdp_only = args.mode != Mode::Auto && args.tc;
    let tc_only = args.backend != Backend::Auto && !args.tc;
    if xdp_only || tc_only {
        let (what, hint) = match xdp_only {
            true => ("--mode is an XDP mode, and --tc forwards at TC", "drop --mode, or drop --tc to forward at XDP"),
            false => ("--backend is a TC attachment, and this run forwards at XDP", "add --tc, or drop --backend"),
        };
        return Err(Error::usage(what, Some(hint.to_owned())));
    }
    if args.out.count.is_some() && !args.trace {
        return Err(Error::usage("-n counts --trace's events", Some("add --trace, or stop with -d SECS".to_owned())));
    }
    let mut rt = Runtime::for_packets(args.out.clone())?;
    let plan = rt.step("interfaces", || check(&args))?;
    let transport = rt.step("transport", || rt.transport())?;
    let names: Vec<&str> = plan.slots[..plan.attached].iter().map(|i| i.name.as_str()).collect();
    let how = match (&plan.ingress_to, args.peer) {
        (Some((to, _)), _) => format!("every IP packet delivered into {to}'s receive path"),
        (None, true) => "bpf_fib_lookup, bpf_redirect_peer (bpf_redirect_neigh without a neighbour)".to_owned(),
        (None, false) if args.tc => "bpf_fib_lookup, bpf_redirect (bpf_redirect_neigh without a neighbour)".to_owned(),
        (None, false) => "bpf_fib_lookup, bpf_redirect_map through a devmap".to_owned(),
    };
    rt.say(format_args!(
        "plan: forward {} between {} (netns {}): {how}{}{}; transport {transport:?}",
        if args.tc { "at tc ingress" } else { "at xdp" },
        names.join(", "),
        plan.netns.label(),
        if args.direct { ", main table only" } else { "" },
        if args.trace { ", an event per decision" } else { "" },
    ));

    let mut storage = MaybeUninit::uninit();
    let skel = open_load(&rt, &args, &plan, transport, &mut storage)?;
    let printer = ForwardPrinter::new(&skel, &plan, args.interval, args.trace);
    let verbose = rt.out.verbose > 0;
    let mode = match args.mode {
        Mode::Auto => XdpMode::Auto,
        Mode::Skb => XdpMode::Skb,
        Mode::Native => XdpMode::Native,
    };
    let backend = match args.backend {
        Backend::Auto => TcBackend::Auto,
        Backend::Tcx => TcBackend::Tcx,
        Backend::Clsact => TcBackend::Clsact,
    };
    rt.stream(&skel, transport, printer, |skel| {
        let mut held = Vec::new();
        for iface in &plan.slots[..plan.attached] {
            let att = if args.tc {
                let prog = &skel.progs.tc__forward;
                netdev::attach_tc(prog.as_fd(), "tc__forward", iface, &plan.netns, TcDir::Ingress, backend)?
            } else {
                netdev::attach_xdp(skel.progs.xdp__forward.as_fd(), "xdp__forward", iface, &plan.netns, mode)?.0
            };
            for note in att.notes() {
                eprintln!("tracekit: {note}");
            }
            if verbose {
                eprintln!("tracekit: {}", att.describe());
            }
            held.push(att);
        }
        // Redirects that fail after the program (the egress refuses or drops the frame) are
        // counted where they happen, at two tracepoints.
        let mut watch = Vec::new();
        if !args.tc {
            // A classic tracepoint: tracefs must be there (a fresh machine may not mount it).
            let err = crate::runtime::kernel::ensure_tracefs()
                .and_then(|_| tracing::tracepoint(&skel.progs.tk_fwd_redirect_err, "xdp:xdp_redirect_err", None, None));
            let xmit = tracing::raw_tp(&skel.progs.tk_fwd_xmit, "xdp_devmap_xmit");
            for link in [err, xmit] {
                match link {
                    Ok(link) => watch.push(link),
                    Err(e) => eprintln!("tracekit: note: failed redirects are not counted: {e}"),
                }
            }
        }
        Ok((held, watch))
    })
}

/// Resolves and checks every interface: a usage error names the wrong one.
fn check(args: &ForwardArgs) -> Result<Plan, Error> {
    let netns = Netns::resolve(args.netns.as_deref())?;
    let mut slots: Vec<Iface> = Vec::new();
    let mut macs = Vec::new();
    for name in &args.ifaces {
        let iface = Iface::resolve(name, &netns)?;
        if slots.contains(&iface) {
            return Err(Error::usage(
                format!("interface `{name}` is given twice"),
                Some("name each interface once".to_owned()),
            ));
        }
        let Some(mac) = iface.mac(&netns)? else {
            return Err(Error::usage(
                format!("`{name}` is not an Ethernet interface: forwarding rewrites Ethernet addresses"),
                Some("give Ethernet-like interfaces (Ethernet, veth, bonds, bridges)".to_owned()),
            ));
        };
        slots.push(iface);
        macs.push(mac);
    }
    let most = MAX_IFACES - usize::from(args.ingress_to.is_some());
    if slots.len() > most {
        return Err(Error::usage(
            format!("at most {most} interfaces (with --ingress-to's target, {MAX_IFACES}), got {}", slots.len()),
            Some("run one tracekit forward per group of interfaces".to_owned()),
        ));
    }
    let attached = slots.len();
    // --peer sends into the peer's namespace where the egress has a peer (a veth), and with a
    // plain redirect elsewhere (a NIC towards the pods, say): at least one must have one.
    let mut peer_slots = 0u32;
    for (i, iface) in slots.iter().enumerate() {
        if args.peer && iface.driver(&netns)?.as_deref() == Some("veth") {
            peer_slots |= 1 << i;
        }
    }
    if args.peer && peer_slots == 0 {
        return Err(Error::usage(
            "--peer needs a veth among the interfaces, and none is one",
            Some("bpf_redirect_peer hands a packet to the other end of a veth pair; drop --peer".to_owned()),
        ));
    }
    let ingress_to = match &args.ingress_to {
        None => None,
        Some(name) => {
            let to = Iface::resolve(name, &netns)?;
            if slots.contains(&to) {
                return Err(Error::usage(
                    format!("--ingress-to `{name}` is also forwarded on: its packets would come back forever"),
                    Some("name an interface tracekit does not attach to".to_owned()),
                ));
            }
            let Some(mac) = to.mac(&netns)? else {
                return Err(Error::usage(
                    format!("--ingress-to `{name}` is not an Ethernet interface"),
                    Some("the frame is addressed to the target's MAC: give an Ethernet-like interface".to_owned()),
                ));
            };
            eprintln!(
                "tracekit: note: every IP packet {} receives goes to {name}'s receive path, this host's own \
                 traffic on it included",
                slots.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            );
            slots.push(to.clone());
            macs.push(mac);
            Some((to, mac))
        }
    };
    if ingress_to.is_none() {
        for iface in &slots[..attached] {
            warn_forwarding_off(iface, &netns)?;
        }
    }
    if !args.tc && args.mode != Mode::Skb {
        for iface in &slots[..attached] {
            if iface.driver(&netns)?.as_deref() == Some("veth") {
                eprintln!(
                    "tracekit: note: {iface} is a veth: packets a local socket sends through its peer may carry a \
                     partial checksum (offload), which an XDP redirect passes on unfinished; if TCP stalls, turn \
                     checksum offload off where they are sent (`ethtool -K PEER tx off`) or forward with --tc"
                );
                break;
            }
        }
    }
    Ok(Plan { netns, slots, macs, attached, ingress_to, peer_slots })
}

/// bpf_fib_lookup refuses to forward what arrives on an interface whose forwarding sysctl is
/// off (BPF_FIB_LKUP_RET_FWD_DISABLED): such packets go up as `fwd_disabled`. Said once, here.
fn warn_forwarding_off(iface: &Iface, netns: &Netns) -> Result<(), Error> {
    for (on, family) in iface.forwarding(netns)?.into_iter().zip(["ipv4", "ipv6"]) {
        if on == Some(false) {
            eprintln!(
                "tracekit: warning: {family} forwarding is off on {iface}{}: those packets go up as fwd_disabled \
                 (turn it on: {}sysctl -w net.{family}.conf.{}.forwarding=1)",
                netns.suffix(),
                netns.exec_prefix(),
                sysctl_name(&iface.name)
            );
        }
    }
    Ok(())
}

fn open_load<'o>(
    rt: &Runtime,
    args: &ForwardArgs,
    plan: &Plan,
    transport: crate::runtime::Transport,
    storage: &'o mut MaybeUninit<libbpf_rs::OpenObject>,
) -> Result<ForwardSkel<'o>, Error> {
    let mut open: OpenForwardSkel<'o> = rt.open("forward", ForwardSkelBuilder::default(), storage)?;
    rt.configure_transport(&mut open, transport)?;
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
    let cfg = &mut ro.tk_fwd_config;
    for (dst, iface) in cfg.ifindex.iter_mut().zip(&plan.slots) {
        *dst = iface.index;
    }
    cfg.nifaces = plan.slots.len() as u32;
    for (dst, mac) in cfg.mac.iter_mut().zip(&plan.macs) {
        *dst = *mac;
    }
    cfg.peer_slots = plan.peer_slots;
    cfg.fib_flags = if args.direct { libbpf_rs::libbpf_sys::BPF_FIB_LOOKUP_DIRECT } else { 0 };
    cfg.netns = plan.netns.inode;
    cfg.trace = u8::from(args.trace);
    cfg.via = match (&plan.ingress_to, args.peer) {
        (Some((to, mac)), _) => {
            cfg.ingress_to = to.index;
            cfg.ingress_to_mac = *mac;
            types::tk_fwd_via::TK_FWD_VIA_INGRESS.0
        }
        (None, true) => types::tk_fwd_via::TK_FWD_VIA_PEER.0,
        (None, false) => types::tk_fwd_via::TK_FWD_VIA_REDIRECT.0,
    };
    open.progs.xdp__forward.set_autoload(!args.tc);
    open.progs.tk_fwd_xmit.set_autoload(!args.tc);
    open.progs.tk_fwd_redirect_err.set_autoload(!args.tc);
    open.progs.tc__forward.set_autoload(args.tc);
    let mut skel = rt.load("forward", open)?;
    if !args.tc {
        let id = netdev::prog_id_of(skel.progs.xdp__forward.as_fd()).unwrap_or_else(|| {
            eprintln!("tracekit: note: the program's id is unknown: failed redirects are not counted");
            0
        });
        skel.maps.bss_data.as_deref_mut().expect(".bss is mmapped").tk_fwd_prog_id = id;
        // XDP sends out through the devmap: every interface forwarded on is an egress.
        for iface in &plan.slots[..plan.attached] {
            netdev::devmap_add(&skel.maps.tk_fwd_ports, iface, &plan.netns)?;
        }
    }
    Ok(skel)
}

/// One interface's counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy)]
struct SlotCounts {
    outcomes: [u64; OUTCOMES],
    /// Packets and bytes sent out of the interface, exact (the per-CPU shares summed).
    sent: types::tk_fwd_sent,
    /// The shares folded in under the lock: packets, bytes, first and last time of one instant.
    folded: types::tk_fwd_sent,
}

impl SlotCounts {
    fn received(&self) -> u64 {
        self.outcomes.iter().enumerate().filter(|(i, _)| *i != XMIT_DROP).map(|(_, n)| n).sum()
    }
    fn forwarded(&self) -> u64 {
        FORWARDED.iter().map(|&i| self.outcomes[i]).sum()
    }
    fn passed(&self) -> u64 {
        PASSED.iter().map(|&i| self.outcomes[i]).sum()
    }
    fn dropped(&self) -> u64 {
        self.outcomes[ABORTED] + self.outcomes[XMIT_DROP]
    }
    /// Bits per second between the first and the last packet sent, once that is a second or
    /// more (a few packets close together make no rate).
    fn sent_bps(&self) -> Option<f64> {
        let span = self.folded.last_ns.checked_sub(self.folded.first_ns).filter(|&s| s >= 1_000_000_000)?;
        Some(self.folded.bytes as f64 * 8.0 * 1e9 / span as f64)
    }
}

struct ForwardPrinter<'a> {
    counts: &'a libbpf_rs::MapMut<'a>,
    sent: &'a libbpf_rs::MapMut<'a>,
    sent_cpu: &'a libbpf_rs::MapMut<'a>,
    /// The program's last redirect error, in the mmapped .bss (the program writes it).
    xmit_err: Option<*const i32>,
    /// Each slot's driver (`veth`, …), for the hints.
    drivers: Vec<Option<String>>,
    exec_prefix: String,
    names: IfaceNames<'a>,
    slots: Vec<Iface>,
    netns_suffix: String,
    /// The namespace's inode as packet events carry it (32 bits, like the other packet tools).
    netns_inode: u32,
    interval: Every,
    /// The counters are also read every second for the hints, which should come when it happens.
    advice: Every,
    trace: bool,
    started: Instant,
    /// Hints already given (each once a run).
    told_xmit: bool,
    told_disabled: bool,
}

impl<'a> ForwardPrinter<'a> {
    fn new(skel: &'a ForwardSkel<'a>, plan: &'a Plan, interval: Option<Duration>, trace: bool) -> Self {
        ForwardPrinter {
            counts: &skel.maps.tk_fwd_counts,
            sent: &skel.maps.tk_fwd_sent,
            sent_cpu: &skel.maps.tk_fwd_sent_cpu,
            xmit_err: skel.maps.bss_data.as_deref().map(|b| &b.tk_fwd_xmit_err as *const i32),
            drivers: plan.slots.iter().map(|i| i.driver(&plan.netns).ok().flatten()).collect(),
            exec_prefix: plan.netns.exec_prefix(),
            names: IfaceNames::new(&plan.netns),
            slots: plan.slots.clone(),
            netns_suffix: plan.netns.suffix(),
            netns_inode: plan.netns.inode as u32,
            interval: Every::new(interval),
            advice: Every::new(Some(Duration::from_secs(1))),
            trace,
            started: Instant::now(),
            told_xmit: false,
            told_disabled: false,
        }
    }

    fn read(&self) -> Vec<SlotCounts> {
        let mut all = vec![SlotCounts::default(); self.slots.len()];
        for (slot, c) in all.iter_mut().enumerate() {
            for (outcome, n) in c.outcomes.iter_mut().enumerate() {
                let key = ((slot * OUTCOMES + outcome) as u32).to_ne_bytes();
                if let Ok(Some(per_cpu)) = self.counts.lookup_percpu(&key, MapFlags::ANY) {
                    *n = per_cpu
                        .iter()
                        .filter_map(|v| v.get(..8))
                        .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
                        .sum();
                }
            }
            let key = (slot as u32).to_ne_bytes();
            if let Ok(Some(per_cpu)) = self.sent_cpu.lookup_percpu(&key, MapFlags::ANY) {
                for value in &per_cpu {
                    let mut share = types::tk_fwd_sent::default();
                    let _ = plain::copy_from_bytes(&mut share, value);
                    c.sent.packets += share.packets;
                    c.sent.bytes += share.bytes;
                }
            }
            // The value is the spin lock (4 bytes, padded to 8), then the folded counts.
            if let Ok(Some(v)) = self.sent.lookup(&key, MapFlags::LOCK)
                && let Some(bytes) = v.get(8..)
            {
                let _ = plain::copy_from_bytes(&mut c.folded, bytes);
            }
        }
        all
    }

    /// One-time hints on what the counters show: dropped redirects, forwarding off.
    fn advise(&mut self, all: &[SlotCounts]) {
        for (slot, (iface, c)) in self.slots.iter().zip(all).enumerate() {
            if !self.told_xmit && c.outcomes[XMIT_DROP] > 0 {
                self.told_xmit = true;
                // SAFETY: a plain int in the mmapped .bss (alive as long as the skeleton this
                // printer borrows), written by the program: read once, volatile.
                let err = self.xmit_err.map_or(0, |e| unsafe { std::ptr::read_volatile(e) });
                let veth = self.drivers.get(slot).and_then(|d| d.as_deref()) == Some("veth");
                eprintln!(
                    "tracekit: {iface}{} could not send {} forwarded frames ({}): {}",
                    self.netns_suffix,
                    c.outcomes[XMIT_DROP],
                    redirect_error(-err),
                    match -err {
                        libc::EOPNOTSUPP | libc::ENXIO if veth => {
                            "a veth takes XDP-redirected frames only when its peer has NAPI: attach an XDP \
                             program to the peer or turn GRO on there (`ethtool -K PEER gro on`, Linux 5.13+); \
                             or forward with --mode skb or --tc"
                        }
                        libc::EOPNOTSUPP | libc::ENXIO => {
                            "its driver takes no XDP-redirected frames (no ndo_xdp_xmit): forward with --mode \
                             skb or --tc"
                        }
                        libc::ENETDOWN => "bring it up (`ip link set dev IFACE up`), and its peer if it is a veth",
                        libc::EMSGSIZE => "the frames are larger than its MTU: raise the MTU or forward with --tc",
                        _ => "--tc takes the normal transmit path",
                    }
                );
            }
            if !self.told_disabled && c.outcomes[FWD_DISABLED] > 0 {
                self.told_disabled = true;
                let name = sysctl_name(&iface.name);
                eprintln!(
                    "tracekit: {} packets on {iface} went up because forwarding is off there (turn it on: \
                     {}sysctl -w net.ipv4.conf.{name}.forwarding=1 net.ipv6.conf.{name}.forwarding=1)",
                    c.outcomes[FWD_DISABLED], self.exec_prefix
                );
            }
        }
    }

    fn write_counters(&mut self, out: &mut Sink) -> io::Result<()> {
        let all = self.read();
        self.advise(&all);
        if out.json {
            for (iface, c) in self.slots.iter().zip(&all) {
                out.obj_start("fwd_counts")?;
                out.field_str("iface", &iface.name)?;
                out.field_u64("ifindex", iface.index.into())?;
                out.field_u64("received", c.received())?;
                out.field_u64("forwarded", c.forwarded())?;
                out.field_u64("passed", c.passed())?;
                out.field_u64("dropped", c.dropped())?;
                out.object_start("how")?;
                for i in FORWARDED.into_iter().filter(|&i| c.outcomes[i] > 0) {
                    out.field_u64(OUTCOME_NAMES[i], c.outcomes[i])?;
                }
                out.object_end()?;
                out.object_start("reasons")?;
                for i in PASSED.into_iter().filter(|&i| c.outcomes[i] > 0) {
                    out.field_u64(OUTCOME_NAMES[i], c.outcomes[i])?;
                }
                out.object_end()?;
                out.field_u64("aborted", c.outcomes[ABORTED])?;
                out.field_u64("xmit_drops", c.outcomes[XMIT_DROP])?;
                out.field_u64("sent_packets", c.sent.packets)?;
                out.field_u64("sent_bytes", c.sent.bytes)?;
                if let Some(bps) = c.sent_bps() {
                    out.field_f64("sent_bps", bps, 0)?;
                }
                out.obj_end()?;
            }
            return Ok(());
        }
        let w = out.w();
        writeln!(w, "forward counters after {:.1} s:", self.started.elapsed().as_secs_f64())?;
        writeln!(w, "IFACE       RECEIVED  FORWARDED   PASSED  DROPPED       SENT  SENT-RATE  PASSED UP")?;
        for (iface, c) in self.slots.iter().zip(&all) {
            write!(
                w,
                "{:<10} {:>9} {:>10} {:>8} {:>8} {:>10} {:>10}  ",
                iface.name,
                c.received(),
                c.forwarded(),
                c.passed(),
                c.dropped(),
                c.sent.packets,
                c.sent_bps().map_or_else(|| "-".to_owned(), rate)
            )?;
            let mut first = true;
            for i in PASSED.into_iter().filter(|&i| c.outcomes[i] > 0) {
                write!(w, "{}{} {}", if first { "" } else { ", " }, OUTCOME_NAMES[i], c.outcomes[i])?;
                first = false;
            }
            writeln!(w, "{}", if first { "-" } else { "" })?;
        }
        out.flush()
    }
}

/// An interface name as a sysctl key takes it: `eth0.100` is `eth0/100` (dots separate keys).
fn sysctl_name(iface: &str) -> String {
    iface.replace('.', "/")
}

/// Why a redirect failed, from the errno the kernel gave (xdp:xdp_redirect_err and
/// xdp:xdp_devmap_xmit).
fn redirect_error(errno: i32) -> String {
    match errno {
        libc::EOPNOTSUPP => "EOPNOTSUPP: the kernel refused to redirect to it".to_owned(),
        libc::ENXIO => "ENXIO: the driver refused the frames".to_owned(),
        libc::ENETDOWN => "ENETDOWN: it is down".to_owned(),
        libc::EMSGSIZE => "EMSGSIZE: larger than its MTU".to_owned(),
        0 => "no error recorded".to_owned(),
        e => format!("errno {e}: {}", io::Error::from_raw_os_error(e)),
    }
}

/// `12.3 Mb/s`, like iperf3.
fn rate(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2} Gb/s", b / 1e9),
        b if b >= 1e6 => format!("{:.1} Mb/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} Kb/s", b / 1e3),
        b => format!("{b:.0} b/s"),
    }
}

fn address(family: u8, raw: &[u32; 4]) -> Option<IpAddr> {
    let bytes: [u8; 16] = std::array::from_fn(|i| raw[i / 4].to_ne_bytes()[i % 4]);
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

fn mac(m: &[u8; 6]) -> impl std::fmt::Display + '_ {
    struct Mac<'m>(&'m [u8; 6]);
    impl std::fmt::Display for Mac<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let m = self.0;
            write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
        }
    }
    Mac(m)
}

/// What became of the packet, in one word: forwarded, passed (up) or dropped.
fn action(outcome: usize) -> &'static str {
    match outcome {
        o if FORWARDED.contains(&o) => "forward",
        o if PASSED.contains(&o) => "pass",
        _ => "drop",
    }
}

impl Printer for ForwardPrinter<'_> {
    type Event = types::tk_fwd_event;
    const COLUMNS: &'static str = "IFACE    PROTO  SOURCE                 DESTINATION            TTL DECISION     OUT";

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        EventHeader::Packet(PacketHeader {
            ts_ns: ev.ts_ns,
            ifindex: ev.ifindex,
            iface: self.names.get(ev.ifindex),
            netns: self.netns_inode,
            cpu: ev.cpu,
            len: ev.len,
            dir: "ingress",
        })
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let iface = self.names.get(ev.ifindex);
        let outname = if ev.out_ifindex == 0 {
            [b'-', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        } else {
            self.names.get(ev.out_ifindex)
        };
        let proto = match proto_name(ev.proto) {
            "" if ev.family == 0 => "-",
            "" => "ip",
            p => p,
        };
        let w = out.w();
        write!(w, "{:<8} {proto:<6} ", c_str(&iface))?;
        match (address(ev.family, &ev.saddr), address(ev.family, &ev.daddr)) {
            (Some(s), Some(d)) => write!(w, "{:<22} {:<22} ", s.to_string(), d.to_string())?,
            _ => write!(w, "{:<22} {:<22} ", format!("ethertype {:#06x}", ev.ethertype), "-")?,
        }
        let outcome = usize::from(ev.outcome).min(OUTCOMES - 1);
        write!(w, "{:>3} {:<12} {}", ev.ttl, OUTCOME_NAMES[outcome], c_str(&outname))
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        if let (Some(s), Some(d)) = (address(ev.family, &ev.saddr), address(ev.family, &ev.daddr)) {
            out.field_str("family", if ev.family == 4 { "ipv4" } else { "ipv6" })?;
            match proto_name(ev.proto) {
                "" => out.field_u64("proto", ev.proto.into())?,
                p => out.field_str("proto", p)?,
            }
            out.field_display("saddr", s)?;
            out.field_display("daddr", d)?;
            out.field_u64("ttl", ev.ttl.into())?;
        }
        out.field_u64("ethertype", ev.ethertype.into())?;
        out.field_str("hook", if ev.hook == 0 { "xdp" } else { "tc" })?;
        let outcome = usize::from(ev.outcome).min(OUTCOMES - 1);
        // The lookup's own verdict where one ran (BPF_FIB_LKUP_RET_*).
        match ev.fib_ret {
            -1000 => {}
            0 => out.field_str("fib", "success")?,
            r if (1..=9).contains(&r) => out.field_str("fib", OUTCOME_NAMES[r as usize])?,
            r => out.field_i128("fib", r.into())?,
        }
        out.field_str("outcome", OUTCOME_NAMES[outcome])?;
        out.field_str("action", action(outcome))?;
        if ev.out_ifindex != 0 {
            out.field_str("out_iface", &c_str(&self.names.get(ev.out_ifindex)))?;
            out.field_u64("out_ifindex", ev.out_ifindex.into())?;
        }
        out.field_display("smac", mac(&ev.smac))?;
        out.field_display("dmac", mac(&ev.dmac))?;
        if ev.mtu != 0 {
            out.field_u64("mtu", ev.mtu.into())?;
        }
        Ok(())
    }

    fn prints_events(&self) -> bool {
        self.trace
    }

    fn tick(&mut self, out: &mut Sink) -> io::Result<()> {
        if self.interval.due() {
            return self.write_counters(out);
        }
        if self.advice.due() && !(self.told_xmit && self.told_disabled) {
            let all = self.read();
            self.advise(&all);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        self.write_counters(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_follow_the_kernel_codes() {
        assert_eq!(OUTCOME_NAMES[libbpf_rs::libbpf_sys::BPF_FIB_LKUP_RET_NO_NEIGH as usize], "no_neigh");
        assert_eq!(OUTCOME_NAMES[libbpf_rs::libbpf_sys::BPF_FIB_LKUP_RET_FWD_DISABLED as usize], "fwd_disabled");
        assert_eq!(OUTCOME_NAMES[types::tk_fwd_outcome::TK_FWD_XMIT_DROP.0 as usize], "xmit_drop");
        assert_eq!(OUTCOME_NAMES[types::tk_fwd_outcome::TK_FWD_ERROR.0 as usize], "error");
        assert_eq!(OUTCOME_NAMES[types::tk_fwd_outcome::TK_FWD_INGRESS.0 as usize], "ingress");
    }

    #[test]
    fn slots_match_the_programs() {
        assert_eq!(types::tk_fwd_config::default().ifindex.len(), MAX_IFACES);
    }

    #[test]
    fn rates_read_like_iperf3() {
        assert_eq!(rate(12_345_678.0), "12.3 Mb/s");
        assert_eq!(rate(2.5e9), "2.50 Gb/s");
        assert_eq!(rate(999.0), "999 b/s");
    }
}
