//! `tracekit sockops`: a cgroup's TCP connections seen by a sockops program instead of kprobes
//! (src/bpf/net/sockops.bpf.c): establishment, state changes, RTT samples, retransmissions,
//! and with `--rtt` an in-kernel RTT summary per connection at close.

use std::ffi::OsString;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapMut, ProgramType};

use crate::error::Error;
use crate::runtime::attach::attach_cgroup;
use crate::runtime::attach::cgroup::{cgroup_dir, cgroup2_root, scope_description};
use crate::runtime::cli::net::port_list;
use crate::runtime::cli::output::OutputArgs;
use crate::runtime::cli::task::parse_duration;
use crate::runtime::fastfmt::{self, Endpoint};
use crate::runtime::output::{AF_INET, AF_INET6, EventHeader, HookHeader, Sink, c_str, sock_addr};
use crate::runtime::watch::Every;
use crate::runtime::{Printer, Runtime};
use crate::tools::trace::tcpstate::state_name;

crate::packet_skel!("sockops", OpenSockopsSkel, SockopsSkel);
// SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
unsafe impl plain::Plain for skel::types::tk_so_event {}
use skel::{SockopsSkelBuilder, types};

/// The layout is shared with sockops.h: a drift must fail the build, not decode garbage.
const _: () = assert!(size_of::<types::tk_so_event>() == 152);

/// TK_SOCKOPS_MAX_PORTS in sockops.h.
const MAX_PORTS: usize = 8;

/// The event kinds (enum tk_so_kind), as JSON names them.
const KINDS: [&str; 6] = ["connect", "accept", "state", "rtt", "retrans", "closed"];
/// TCP_INFINITE_SSTHRESH: no loss yet.
const INFINITE_SSTHRESH: u32 = 0x7fff_ffff;
const STATE: u8 = 2;
const RTT: u8 = 3;
const RETRANS: u8 = 4;
const SUMMARY: u8 = 5;

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit sockops                          # every new TCP connection of the system\n    \
    tracekit sockops --rtt -- curl -s http://127.0.0.1:8080/   # curl's, RTT at close\n    \
    tracekit sockops --cgroup system.slice/nginx.service -L 443\n    \
    tracekit sockops --retrans -i 10          # retransmissions, counters every 10 s\n    \
    tracekit sockops --samples --json -D 5432 # every RTT sample as NDJSON\n\n\
A sockops program on the cgroup (the whole system without --cgroup or -- CMD) sees the\n\
connections its processes open after tracekit starts: the kernel calls it at connect(),\n\
listen() and the end of each handshake, where it asks for state, RTT and retransmission\n\
callbacks of the connections the filters keep. No kprobe is used. PID and COMM are the\n\
process that called connect() or listen(), where known.")]
pub struct SockopsArgs {
    /// The cgroup v2 directory whose connections to report (default: the root: all)
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// IPv4 only
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 only
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Only these local ports (comma-separated, at most 8)
    #[arg(short = 'L', long = "local-port", visible_alias = "sport", value_delimiter = ',', value_name = "PORT")]
    pub local_ports: Vec<String>,

    /// Only these remote ports (comma-separated, at most 8)
    #[arg(short = 'D', long = "remote-port", visible_alias = "dport", value_delimiter = ',', value_name = "PORT")]
    pub remote_ports: Vec<String>,

    /// One event per RTT sample (every ack that measures one: many)
    #[arg(long)]
    pub samples: bool,

    /// At each connection's close, its smoothed RTT's minimum, average and maximum, kept in
    /// the kernel per connection
    #[arg(long)]
    pub rtt: bool,

    /// Only retransmissions (the other events are still counted)
    #[arg(long, conflicts_with_all = ["samples", "rtt"])]
    pub retrans: bool,

    /// Also print the event counters every SECS seconds
    #[arg(short = 'i', long, value_name = "SECS", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    #[command(flatten)]
    pub out: OutputArgs,

    /// Run CMD in a new child cgroup and report its connections only; exit with its status
    #[arg(last = true, value_name = "CMD", conflicts_with = "cgroup")]
    pub command: Vec<OsString>,
}

fn ports(flag: &str, given: &[String]) -> Result<Vec<u16>, Error> {
    port_list(flag, given, MAX_PORTS, "report without the port filter")
}

pub fn run(args: SockopsArgs) -> Result<i32, Error> {
    let (lports, rports) = (ports("--local-port", &args.local_ports)?, ports("--remote-port", &args.remote_ports)?);
    let mut rt = Runtime::for_packets(args.out.clone())?;
    let root = cgroup2_root()?;
    let given = args.cgroup.as_deref().map(cgroup_dir).transpose()?.map(|(dir, _)| dir);
    let transport = rt.step("transport", || rt.transport())?;
    // Reading the task at connect() and the RTT deviation need helpers sock_ops programs
    // were given later than sockops itself: asked of the kernel, the program skips what it
    // lacks (a dead branch the verifier never checks).
    let helper = |id| ProgramType::SockOps.is_helper_supported(id).unwrap_or(false);
    let with_task = helper(libbpf_sys::BPF_FUNC_get_current_task) && helper(libbpf_sys::BPF_FUNC_probe_read_kernel);
    let with_mdev = helper(libbpf_sys::BPF_FUNC_skc_to_tcp_sock);
    rt.say(format_args!(
        "plan: sockops on {}; task at connect/listen: {}; RTT deviation: {}; transport {transport:?}",
        scope_description(given.as_deref(), !args.command.is_empty(), &root),
        if with_task { "yes" } else { "no (the kernel gives sock_ops no task helper)" },
        if with_mdev { "yes" } else { "no (no bpf_skc_to_tcp_sock for sock_ops)" },
    ));

    let mut storage = MaybeUninit::uninit();
    let mut open = rt.open("sockops", SockopsSkelBuilder::default(), &mut storage)?;
    rt.configure_transport(&mut open, transport)?;
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
    let c = &mut ro.tk_so_config;
    c.lports[..lports.len()].copy_from_slice(&lports);
    c.nlports = lports.len() as u32;
    c.rports[..rports.len()].copy_from_slice(&rports);
    c.nrports = rports.len() as u32;
    c.family = match (args.ipv4, args.ipv6) {
        (true, _) => AF_INET.into(),
        (_, true) => AF_INET6.into(),
        _ => 0,
    };
    c.samples = u32::from(args.samples);
    c.summary = u32::from(args.rtt);
    c.retrans_only = u32::from(args.retrans);
    c.with_task = u32::from(with_task);
    c.with_mdev = u32::from(with_mdev);
    let skel = rt.load("sockops", open)?;

    let transient = match (&given, args.command.is_empty()) {
        (None, false) => Some(rt.command_in_cgroup(&root, &args.command)?),
        _ => None,
    };
    let dir = given.or_else(|| transient.as_ref().map(|t| t.path().to_path_buf())).unwrap_or(root);
    let printer =
        SockopsPrinter { counts: &skel.maps.tk_so_counts, interval: Every::new(args.interval), mdev: with_mdev };
    let held = std::cell::RefCell::new(None);
    let code = rt.stream(&skel, transport, printer, |skel| {
        let prog = &skel.progs.sockops__observe;
        let att = attach_cgroup(prog.as_fd(), "sockops__observe", &dir, libbpf_sys::BPF_CGROUP_SOCK_OPS)?;
        eprintln!("tracekit: attached {}", att.describe());
        *held.borrow_mut() = Some(att);
        Ok(())
    });
    match transient {
        Some(t) => t.finish(held),
        None => drop(held),
    }
    code
}

/// ss(8)'s short names: the table's EVENT column fits 80 columns with them.
fn short_state(s: u8) -> &'static str {
    const SHORT: [&str; 13] = [
        "UNKNOWN",
        "ESTAB",
        "SYN-SENT",
        "SYN-RECV",
        "FIN-WAIT-1",
        "FIN-WAIT-2",
        "TIME-WAIT",
        "CLOSE",
        "CLOSE-WAIT",
        "LAST-ACK",
        "LISTEN",
        "CLOSING",
        "NEW-SYN-RECV",
    ];
    SHORT.get(usize::from(s)).copied().unwrap_or("UNKNOWN")
}

/// The event's comm as bytes (the generated type has C `char`s), on the stack: no allocation
/// per event.
fn comm_bytes(ev: &types::tk_so_event) -> [u8; 16] {
    ev.comm.map(|c| c as u8)
}

fn kind_name(k: u8) -> &'static str {
    KINDS.get(usize::from(k)).copied().unwrap_or("unknown")
}

struct SockopsPrinter<'a> {
    counts: &'a MapMut<'a>,
    interval: Every,
    /// The kernel gave the RTT's mean deviation (see `with_mdev`).
    mdev: bool,
}

impl SockopsPrinter<'_> {
    /// Events per kind, summed over CPUs, printed or not.
    fn read(&self) -> [u64; KINDS.len()] {
        let mut out = [0u64; KINDS.len()];
        for (kind, n) in out.iter_mut().enumerate() {
            let key = (kind as u32).to_ne_bytes();
            if let Ok(Some(per_cpu)) = self.counts.lookup_percpu(&key, MapFlags::ANY) {
                *n = per_cpu.iter().filter_map(|v| v.get(..8)).map(|b| u64::from_ne_bytes(b.try_into().unwrap())).sum();
            }
        }
        out
    }

    fn write_counts(&self, out: &mut Sink) -> io::Result<()> {
        let c = self.read();
        if out.json {
            out.obj_start("sockops_counts")?;
            out.fields_u64(&KINDS, c)?;
            return out.obj_end();
        }
        writeln!(
            out.w(),
            "connect {}  accept {}  state {}  rtt {}  retrans {}  closed {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5]
        )
    }
}

impl Printer for SockopsPrinter<'_> {
    type Event = types::tk_so_event;
    const COLUMNS: &'static str = "PID     COMM       LADDR:LPORT           RADDR:RPORT           EVENT";

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        EventHeader::Hook(HookHeader { ts_ns: ev.ts_ns, cpu: ev.cpu, pid: ev.pid, comm: comm_bytes(ev) })
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let local = Endpoint::new(sock_addr(ev.family, &ev.saddr), ev.sport);
        let remote = Endpoint::new(sock_addr(ev.family, &ev.daddr), ev.dport);
        let comm = comm_bytes(ev);
        let w = out.w();
        if ev.pid == 0 {
            w.write_all(b"-       ")?;
        } else {
            fastfmt::int_col(w, ev.pid, 7)?;
        }
        fastfmt::col(w, c_str(&comm).as_bytes(), 10)?;
        fastfmt::col(w, local.as_str().as_bytes(), 21)?;
        fastfmt::col(w, remote.as_str().as_bytes(), 21)?;
        match ev.kind {
            STATE => write!(w, "{}>{}", short_state(ev.oldstate), short_state(ev.newstate)),
            RTT => {
                write!(w, "srtt {}us", ev.srtt_us)?;
                if self.mdev {
                    write!(w, " ±{}", ev.mdev_us)?;
                }
                if ev.mrtt_us > 0 {
                    write!(w, " sample {}us", ev.mrtt_us)?;
                }
                Ok(())
            }
            RETRANS => write!(w, "retrans {}x seq {}", ev.retrans_segs, ev.retrans_seq),
            SUMMARY if ev.samples == 0 => w.write_all(b"closed, no RTT sample"),
            SUMMARY => write!(w, "closed rtt {}/{}/{}us", ev.mdev_us, ev.srtt_us, ev.rtt_max_us),
            k => write!(w, "{} cwnd {}", kind_name(k), ev.cwnd),
        }
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        out.field_str("event", kind_name(ev.kind))?;
        out.field_sock_ends(ev.family, (&ev.saddr, ev.sport), (&ev.daddr, ev.dport))?;
        out.field_u64("cookie", ev.cookie)?;
        match ev.kind {
            STATE => {
                out.field_str("oldstate", state_name(ev.oldstate.into()))?;
                out.field_str("newstate", state_name(ev.newstate.into()))?;
            }
            _ => out.field_str("state", state_name(ev.newstate.into()))?,
        }
        match ev.kind {
            RETRANS => {
                out.field_u64("seq", ev.retrans_seq.into())?;
                out.field_u64("segs", ev.retrans_segs.into())?;
                out.field_display("err", ev.retrans_err)?;
            }
            SUMMARY => {
                out.field_u64("rtt_samples", ev.samples.into())?;
                if ev.samples > 0 {
                    out.field_u64("srtt_min_us", ev.mdev_us.into())?;
                    out.field_u64("srtt_avg_us", ev.srtt_us.into())?;
                    out.field_u64("srtt_max_us", ev.rtt_max_us.into())?;
                }
                if ev.duration_ns > 0 {
                    out.field_f64("duration_ms", ev.duration_ns as f64 / 1e6, 3)?;
                }
            }
            _ => {}
        }
        if ev.kind != SUMMARY {
            out.field_u64("srtt_us", ev.srtt_us.into())?;
        }
        if ev.kind == RTT {
            if ev.mrtt_us > 0 {
                out.field_u64("rtt_us", ev.mrtt_us.into())?;
            }
            if self.mdev {
                out.field_u64("mdev_us", ev.mdev_us.into())?;
            }
        }
        out.field_u64("cwnd", ev.cwnd.into())?;
        if ev.ssthresh >= INFINITE_SSTHRESH {
            out.field_raw("ssthresh", "null")?;
        } else {
            out.field_u64("ssthresh", ev.ssthresh.into())?;
        }
        out.field_u64("total_retrans", ev.total_retrans.into())?;
        out.field_u64("bytes_acked", ev.bytes_acked)?;
        out.field_u64("bytes_received", ev.bytes_received)
    }

    fn tick(&mut self, out: &mut Sink) -> io::Result<()> {
        if self.interval.due() { self.write_counts(out) } else { Ok(()) }
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        self.write_counts(out)
    }
}
