//! `tracekit tcpcc load`: registers congestion control algorithms written in BPF
//! (src/bpf/net/tcpcc.bpf.c) for as long as tracekit runs, selected per socket, system-wide
//! (`--default`) or for one cgroup (`-- CMD`, `--cgroup`), with their decisions as events.

use std::ffi::OsString;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use libbpf_rs::{MapCore, MapFlags, MapMut};

use crate::error::Error;
use crate::runtime::attach::cgroup::{cgroup_dir, cgroup2_root};
use crate::runtime::attach::{Attachment, attach_cgroup, struct_ops};
use crate::runtime::cli::output::{OutputArgs, TransportChoice};
use crate::runtime::cli::task::parse_duration;
use crate::runtime::fastfmt::Endpoint;
use crate::runtime::output::{EventHeader, HookHeader, Sink, sock_addr};
use crate::runtime::sysctl::SysctlGuard;
use crate::runtime::watch::Every;
use crate::runtime::{Printer, Runtime, Transport};

crate::packet_skel!("tcpcc", OpenTcpccSkel, TcpccSkel);
// SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
unsafe impl plain::Plain for skel::types::tk_cc_event {}
use skel::{TcpccSkel, TcpccSkelBuilder, types};

/// The layout is shared with tcpcc.h: a drift must fail the build, not decode garbage.
const _: () = assert!(size_of::<types::tk_cc_event>() == 96);

const DEFAULT_SYSCTL: &str = "net.ipv4.tcp_congestion_control";
const INFINITE_SSTHRESH: u32 = 0x7fff_ffff;
/// tk_vegas's "no RTT sample" (TK_VEGAS_NO_RTT in tcpcc.bpf.c).
const NO_RTT: u32 = 0x7fff_ffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algo {
    /// Slow start and AIMD (RFC 5681): halves cwnd at a loss, one segment more per round trip
    #[value(name = "tk_reno")]
    Reno,
    /// Delay-based (TCP Vegas): keeps 2 to 4 segments queued in the path, reno at losses
    #[value(name = "tk_vegas")]
    Vegas,
}

impl Algo {
    const ALL: [Algo; 2] = [Algo::Reno, Algo::Vegas];

    /// The name the kernel knows it by (the struct_ops map's `.name`).
    pub fn name(self) -> &'static str {
        match self {
            Algo::Reno => "tk_reno",
            Algo::Vegas => "tk_vegas",
        }
    }

    fn index(self) -> usize {
        match self {
            Algo::Reno => types::tk_cc_algo::TK_CC_RENO.0 as usize,
            Algo::Vegas => types::tk_cc_algo::TK_CC_VEGAS.0 as usize,
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit tcpcc load tk_reno                     # usable by name while tracekit runs\n    \
    tracekit tcpcc load tk_reno tk_vegas -i 5       # both, with their counters every 5 s\n    \
    tracekit tcpcc load tk_vegas --default          # the system's default until tracekit ends\n    \
    tracekit tcpcc load tk_reno --events -- iperf3 -c 10.0.0.2   # iperf3's sockets only\n\n\
Select a registered algorithm per socket with setsockopt(TCP_CONGESTION, \"tk_reno\"),\n\
e.g. `iperf3 -C tk_reno`, or for the whole system with --default. When tracekit ends\n\
the algorithms are unregistered; sockets using one keep it until they close.")]
pub struct LoadArgs {
    /// The algorithms to register
    #[arg(required = true, value_enum)]
    pub algos: Vec<Algo>,

    /// Make it the default for new sockets (net.ipv4.tcp_congestion_control of tracekit's
    /// network namespace) until tracekit ends, then restore the previous one
    #[arg(long, conflicts_with = "cgroup")]
    pub default: bool,

    /// Put the sockets of this cgroup v2 directory on the algorithm (a sockops program)
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Print one event per decision: cwnd growth, losses, undos, delay reactions
    #[arg(short = 'e', long)]
    pub events: bool,

    /// Also print the decision counters every SECS seconds
    #[arg(short = 'i', long, value_name = "SECS", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    #[command(flatten)]
    pub out: OutputArgs,

    /// Run CMD in a new child cgroup whose TCP sockets use the algorithm; exit with its status
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// What the run holds, dropped in this order when it ends: the default restored before the
/// algorithm it names goes, the selection before the algorithms.
struct Held {
    _default: Option<SysctlGuard>,
    _select: Option<Attachment>,
    _algos: Vec<Attachment>,
}

fn check(args: &LoadArgs) -> Result<(), Error> {
    let selects = args.default || args.cgroup.is_some() || !args.command.is_empty();
    if selects && args.algos.len() > 1 {
        return Err(Error::usage(
            "--default, --cgroup and -- CMD select one algorithm: more than one was given",
            Some("give one algorithm, e.g. `tracekit tcpcc load tk_reno --default`".to_owned()),
        ));
    }
    if args.cgroup.is_some() && !args.command.is_empty() {
        return Err(Error::usage(
            "--cgroup and -- CMD both name the processes: give one",
            Some("drop --cgroup to run CMD in a new cgroup, or drop -- CMD to select for the cgroup".to_owned()),
        ));
    }
    if args.default && !args.command.is_empty() {
        return Err(Error::usage("--default selects for the whole system, -- CMD for CMD's sockets: give one", None));
    }
    if let Some(dup) = args.algos.iter().enumerate().find(|(i, a)| args.algos[..*i].contains(a)) {
        return Err(Error::usage(
            format!("`{}` is given twice", dup.1.name()),
            Some("name each algorithm once".to_owned()),
        ));
    }
    if args.out.count.is_some() && !args.events {
        return Err(Error::usage(
            "-n counts events: it needs --events",
            Some("add --events, or end the run with --duration or Ctrl-C".to_owned()),
        ));
    }
    Ok(())
}

pub fn run(args: LoadArgs) -> Result<i32, Error> {
    check(&args)?;
    let mut rt = Runtime::for_packets(args.out.clone())?;
    struct_ops::check_supported(&rt.probes, "tcp_congestion_ops")?;
    let transport = rt.step("transport", || rt.transport())?;
    if args.events && matches!(transport, Transport::PerfBuf { .. }) {
        let why = "congestion control programs cannot write to a perf buffer";
        return Err(match rt.out.transport {
            TransportChoice::Perfbuf => Error::usage(
                format!("--events needs the ring buffer: {why}"),
                Some("drop --transport perfbuf".to_owned()),
            ),
            _ => Error::Unsupported {
                feature: "ringbuf",
                reason: format!("--events needs the ring buffer (Linux 5.8): {why}"),
                hint: Some("run without --events (the counters at exit still count every decision)".into()),
            },
        });
    }
    let link = struct_ops::has_link(&rt.probes);
    let root = if args.cgroup.is_some() || !args.command.is_empty() { Some(cgroup2_root()?) } else { None };
    let given = args.cgroup.as_deref().map(cgroup_dir).transpose()?.map(|(dir, _)| dir);
    rt.say(format_args!(
        "plan: {}, {}; transport {transport:?}",
        args.algos.iter().map(|a| a.name()).collect::<Vec<_>>().join(" "),
        if link { "struct_ops links" } else { "struct_ops maps (no links before Linux 6.4)" }
    ));
    // The default a killed tracekit set goes back first: it names the algorithm swept next.
    // On every run, not only with --default: a default left on an algorithm that is then
    // unregistered keeps giving new sockets an algorithm nobody runs.
    if let Some(note) = SysctlGuard::sweep_stale(DEFAULT_SYSCTL) {
        eprintln!("tracekit: {note}");
    }
    for note in struct_ops::sweep_stale(&Algo::ALL.map(Algo::name)) {
        eprintln!("tracekit: {note}");
    }

    let selects = given.is_some() || !args.command.is_empty();
    let mut storage = MaybeUninit::uninit();
    let mut open = rt.open("tcpcc", TcpccSkelBuilder::default(), &mut storage)?;
    rt.configure_transport(&mut open, transport)?;
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
    ro.tk_cc_config.events = u32::from(args.events);
    ro.tk_cc_config.select = args.algos[0].index() as u32;
    for algo in Algo::ALL {
        let map = match algo {
            Algo::Reno => &mut open.maps.tk_reno,
            Algo::Vegas => &mut open.maps.tk_vegas,
        };
        let wanted = args.algos.contains(&algo);
        map.set_autocreate(wanted)
            .map_err(|e| Error::runtime(format!("configuring struct_ops `{}`: {e}", algo.name()), None))?;
        if wanted {
            struct_ops::prepare(map, link)?;
        }
    }
    open.progs.tcpcc__select.set_autoload(selects);
    let skel = rt.load("tcpcc", open)?;

    let transient = match &given {
        None if !args.command.is_empty() => {
            Some(rt.command_in_cgroup(root.as_deref().expect("resolved"), &args.command)?)
        }
        _ => None,
    };
    let dir = given.or_else(|| transient.as_ref().map(|t| t.path().to_path_buf()));
    let printer = CcPrinter::new(&skel.maps.tk_cc_counts, &args.algos, args.events, args.interval);
    // Registered inside the run, once the event buffer is open: no init event is missed.
    let held = std::cell::RefCell::new(None);
    let code = rt.stream(&skel, transport, printer, |skel| {
        let mut algos = Vec::new();
        for algo in &args.algos {
            let att = register(skel, *algo)?;
            eprintln!("tracekit: registered {}", att.describe());
            algos.push(att);
        }
        let default = if args.default {
            let g = SysctlGuard::set(DEFAULT_SYSCTL, args.algos[0].name())?;
            eprintln!("tracekit: {DEFAULT_SYSCTL} = {} (was {}, restored at exit)", args.algos[0].name(), g.previous());
            Some(g)
        } else {
            None
        };
        let select = match &dir {
            Some(dir) => {
                let prog = &skel.progs.tcpcc__select;
                let att = attach_cgroup(prog.as_fd(), "tcpcc__select", dir, libbpf_rs::libbpf_sys::BPF_CGROUP_SOCK_OPS)?;
                eprintln!("tracekit: TCP sockets of {} use {}", dir.display(), args.algos[0].name());
                Some(att)
            }
            None => None,
        };
        if !selects && !args.default {
            eprintln!(
                "tracekit: select per socket with setsockopt(TCP_CONGESTION, \"{}\") (e.g. `iperf3 -C {0}`); Ctrl-C ends",
                args.algos[0].name()
            );
        }
        *held.borrow_mut() = Some(Held { _default: default, _select: select, _algos: algos });
        Ok(())
    });
    match transient {
        Some(t) => t.finish(held),
        None => drop(held),
    }
    code
}

/// Registers one algorithm of the loaded object.
fn register(skel: &TcpccSkel<'_>, algo: Algo) -> Result<Attachment, Error> {
    let map = match algo {
        Algo::Reno => &skel.maps.tk_reno,
        Algo::Vegas => &skel.maps.tk_vegas,
    };
    struct_ops::attach_struct_ops(map, algo.name())
}

const REASONS: [&str; 8] = ["init", "release", "slow_start", "avoidance", "loss", "undo", "delay_down", "delay_hold"];

fn reason_name(r: u8) -> &'static str {
    REASONS.get(usize::from(r)).copied().unwrap_or("unknown")
}

struct CcPrinter<'a> {
    counts: &'a MapMut<'a>,
    algos: Vec<Algo>,
    events: bool,
    interval: Every,
}

impl<'a> CcPrinter<'a> {
    fn new(counts: &'a MapMut<'a>, algos: &[Algo], events: bool, interval: Option<Duration>) -> Self {
        CcPrinter { counts, algos: algos.to_vec(), events, interval: Every::new(interval) }
    }

    /// Decisions per reason of `algo`, summed over CPUs.
    fn read(&self, algo: Algo) -> [u64; REASONS.len()] {
        let mut out = [0u64; REASONS.len()];
        for (reason, n) in out.iter_mut().enumerate() {
            let key = ((algo.index() * REASONS.len() + reason) as u32).to_ne_bytes();
            if let Ok(Some(per_cpu)) = self.counts.lookup_percpu(&key, MapFlags::ANY) {
                *n = per_cpu.iter().filter_map(|v| v.get(..8)).map(|b| u64::from_ne_bytes(b.try_into().unwrap())).sum();
            }
        }
        out
    }

    fn write_counts(&mut self, out: &mut Sink) -> io::Result<()> {
        if !out.json {
            out.w().write_all(b"ALGO       SOCKETS   CLOSED   SLOWSTART   AVOIDANCE     LOSS   UNDO  DELAY\n")?;
        }
        for algo in self.algos.clone() {
            let c = self.read(algo);
            if out.json {
                out.obj_start("tcpcc_counts")?;
                out.field_str("algo", algo.name())?;
                out.fields_u64(&REASONS, c)?;
                out.obj_end()?;
                continue;
            }
            writeln!(
                out.w(),
                "{:<9} {:>8} {:>8} {:>11} {:>11} {:>8} {:>6} {:>6}",
                algo.name(),
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                c[6] + c[7]
            )?;
        }
        Ok(())
    }
}

impl Printer for CcPrinter<'_> {
    type Event = types::tk_cc_event;
    const COLUMNS: &'static str = "FLOW                            ALGO     EVENT       CWND SSTHRESH  SRTT_MS FLIGHT";

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        EventHeader::Hook(HookHeader { ts_ns: ev.ts_ns, cpu: ev.cpu, pid: 0, comm: [0; 16] })
    }

    fn prints_events(&self) -> bool {
        self.events
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let local = Endpoint::new(sock_addr(ev.family, &ev.saddr), ev.sport);
        let remote = Endpoint::new(sock_addr(ev.family, &ev.daddr), ev.dport);
        let algo = Algo::ALL.get(usize::from(ev.algo)).map_or("?", |a| a.name());
        let w = out.w();
        let flow_len = local.as_str().len() + 1 + remote.as_str().len();
        write!(w, "{}>{}{:pad$}", local.as_str(), remote.as_str(), "", pad = 32usize.saturating_sub(flow_len))?;
        write!(w, "{algo:<9}{:<11}{:>5}", reason_name(ev.reason), ev.cwnd)?;
        if ev.ssthresh >= INFINITE_SSTHRESH {
            w.write_all(b"      inf")?;
        } else {
            write!(w, "{:>9}", ev.ssthresh)?;
        }
        write!(w, "{:>9.3}{:>7}", f64::from(ev.srtt_us) / 1e3, ev.in_flight)
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        out.field_str("algo", Algo::ALL.get(usize::from(ev.algo)).map_or("?", |a| a.name()))?;
        out.field_str("event", reason_name(ev.reason))?;
        out.field_sock_ends(ev.family, (&ev.saddr, ev.sport), (&ev.daddr, ev.dport))?;
        out.field_display("sock", format_args!("{:#x}", ev.sk))?;
        out.field_u64("cwnd_before", ev.cwnd_before.into())?;
        out.field_u64("cwnd", ev.cwnd.into())?;
        if ev.ssthresh >= INFINITE_SSTHRESH {
            out.field_raw("ssthresh", "null")?;
        } else {
            out.field_u64("ssthresh", ev.ssthresh.into())?;
        }
        out.field_u64("srtt_us", ev.srtt_us.into())?;
        out.field_u64("in_flight", ev.in_flight.into())?;
        out.field_u64("acked", ev.acked.into())?;
        if ev.algo as usize == Algo::Vegas.index() && ev.base_rtt_us != NO_RTT && ev.base_rtt_us != 0 {
            // No RTT sample yet in this round (a round just began): null, not 2^31 - 1.
            if ev.min_rtt_us == NO_RTT || ev.min_rtt_us == 0 {
                out.field_raw("min_rtt_us", "null")?;
            } else {
                out.field_u64("min_rtt_us", ev.min_rtt_us.into())?;
            }
            out.field_u64("base_rtt_us", ev.base_rtt_us.into())?;
        }
        Ok(())
    }

    fn tick(&mut self, out: &mut Sink) -> io::Result<()> {
        if self.interval.due() { self.write_counts(out) } else { Ok(()) }
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        self.write_counts(out)
    }
}
