//! `tracekit tcpcc watch`: each TCP connection's congestion state over time, from
//! `tcp:tcp_probe` (tp_btf): cwnd, ssthresh, srtt, windows, segments in flight, the algorithm
//! and its state. A table of the flows every `--interval`, NDJSON per sample, a chart with
//! `--plot`.
//!
//! Overhead: per received segment of an established socket (every ACK on a sender), the filters
//! and three reads; a sample (a ring-buffer record) only when the state changed or `--every`
//! passed. Filters run in the kernel. The probe runs in softirq context, where the current task
//! is not the socket's owner: there are no task filters.

mod flows;
mod plot;

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::error::Error;
use crate::runtime::attach::tracing;
use crate::runtime::cli::net::{parse_host, port_list};
use crate::runtime::cli::task::parse_duration;
use crate::runtime::fastfmt::Endpoint;
use crate::runtime::output::{AF_INET, AF_INET6, EventHeader, HookHeader, Sink, c_chars, sock_addr};
use crate::runtime::probe::Feature;
use crate::runtime::watch::Every;
use crate::runtime::{OutputArgs, Printer, Runtime};
use flows::{Flows, ca_state_name, inflight};
use plot::PlotFile;

crate::packet_skel!("tcpwatch", OpenTcpwatchSkel, TcpwatchSkel);
// SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
unsafe impl plain::Plain for skel::types::tk_tcpwatch_event {}
use skel::{TcpwatchSkelBuilder, types};

/// The layout is shared with tcpwatch.h: a drift must fail the build, not decode garbage.
const _: () = assert!(size_of::<types::tk_tcpwatch_event>() == 144);
/// TK_TCPWATCH_MAX_PORTS of tcpwatch.h.
const MAX_PORTS: usize = 8;
/// TCP_INFINITE_SSTHRESH: no loss yet.
const NO_SSTHRESH: u32 = 0x7fff_ffff;

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit tcpcc watch --port 5201                 # every flow to or from port 5201, each second\n    \
    tracekit tcpcc watch -D 443 --plot cwnd.svg -d 30   # 30 s of HTTPS uploads, charted\n    \
    tracekit tcpcc watch --host 10.0.0.0/8 --json    # NDJSON, a sample per change or 10 ms\n    \
    tracekit tcpcc watch --port 5201 --all --json    # every ACK's view, unthinned\n\n\
A sample is taken when a flow's congestion state changes (ca_state or ssthresh changes, or cwnd\n\
falls) and otherwise every --every milliseconds while the flow receives segments. tcp:tcp_probe\n\
fires in softirq context when a segment arrives, where the running task is not the socket's\n\
owner: there are no --pid/--comm filters; select connections by port and address.")]
pub struct WatchArgs {
    /// Only connections with this port on either side (comma-separated, at most 8)
    #[arg(long = "port", value_name = "PORT", value_delimiter = ',')]
    pub ports: Vec<String>,

    /// Only connections with this local port (comma-separated, at most 8)
    #[arg(short = 'L', long = "local-port", value_name = "PORT", value_delimiter = ',')]
    pub local_ports: Vec<String>,

    /// Only connections with this remote port (comma-separated, at most 8)
    #[arg(short = 'D', long = "remote-port", value_name = "PORT", value_delimiter = ',')]
    pub remote_ports: Vec<String>,

    /// Only connections from or to this address or prefix
    #[arg(long, value_name = "ADDR[/LEN]")]
    pub host: Option<String>,

    /// IPv4 connections only (v4-mapped IPv6 sockets count as IPv4)
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 connections only
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Print the table of flows every SECS seconds
    #[arg(short = 'i', long, value_name = "SECS", value_parser = parse_duration, default_value = "1")]
    pub interval: Duration,

    /// A flow's sample at least this often (ms) while it has traffic, besides those on changes
    #[arg(long, value_name = "MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub every: u64,

    /// A sample at every probe (every received segment): large output
    #[arg(long, conflicts_with = "every")]
    pub all: bool,

    /// At exit, write cwnd and srtt of each flow over time to FILE as an SVG chart
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    #[command(flatten)]
    pub out: OutputArgs,
}

/// What the kernel filters on, checked before anything is loaded.
#[derive(Debug, Default)]
struct Filter {
    ports: Vec<u16>,
    lports: Vec<u16>,
    rports: Vec<u16>,
    /// Masked address, mask, family.
    host: Option<([u8; 16], [u8; 16], u16)>,
    family: u16,
}

fn ports(flag: &str, given: &[String]) -> Result<Vec<u16>, Error> {
    port_list(flag, given, MAX_PORTS, "watch without the port filter")
}

impl Filter {
    fn from_args(args: &WatchArgs) -> Result<Self, Error> {
        let family = match (args.ipv4, args.ipv6) {
            (true, _) => AF_INET,
            (_, true) => AF_INET6,
            _ => 0,
        };
        let host = match &args.host {
            None => None,
            Some(h) => {
                let p = parse_host(h).map_err(|e| {
                    Error::usage(
                        format!("--host: {e}"),
                        Some(
                            "--host takes one address or prefix, matched against both ends of a connection".to_owned(),
                        ),
                    )
                })?;
                let fam = if p.is_ipv4() { AF_INET } else { AF_INET6 };
                if family != 0 && family != fam {
                    let (name, flag) = if args.ipv4 { ("IPv6", "-4") } else { ("IPv4", "-6") };
                    return Err(Error::usage(
                        format!("--host {h} is {name}, and {flag} keeps only the other family: nothing would match"),
                        Some(format!("drop {flag}, or give an address of that family")),
                    ));
                }
                Some((p.masked_bytes(), p.mask_bytes(), fam))
            }
        };
        Ok(Filter {
            ports: ports("--port", &args.ports)?,
            lports: ports("--local-port", &args.local_ports)?,
            rports: ports("--remote-port", &args.remote_ports)?,
            host,
            family,
        })
    }

    fn write(&self, c: &mut types::tk_tcpwatch_config, args: &WatchArgs) {
        for (dst, src) in [(&mut c.ports, &self.ports), (&mut c.lports, &self.lports), (&mut c.rports, &self.rports)] {
            dst[..src.len()].copy_from_slice(src);
        }
        c.nports = self.ports.len() as u32;
        c.nlports = self.lports.len() as u32;
        c.nrports = self.rports.len() as u32;
        if let Some((host, mask, fam)) = self.host {
            c.host = host;
            c.host_mask = mask;
            c.host_family = fam;
        }
        c.family = self.family;
        c.every_ns = args.every * 1_000_000;
        c.all = u32::from(args.all);
    }
}

pub fn run(args: WatchArgs) -> Result<i32, Error> {
    let filter = Filter::from_args(&args)?;
    if args.out.timestamp && !args.out.json {
        return Err(Error::usage(
            "-T adds a time column to events, and the watch prints a table of flows each --interval",
            Some("drop -T, or use --json (every sample has its time_ns)".to_owned()),
        ));
    }
    let plot = args.plot.as_deref().map(PlotFile::open).transpose()?;
    let mut flows = Flows::new(plot.is_some());
    let traced = trace(&args, &filter, &mut flows);
    // Every way the run ended (Ctrl-C, SIGTERM, --duration, -n, a closed stdout) gets here.
    if let Some(p) = &plot {
        match &traced {
            Ok(_) => p.write(&mut flows)?,
            // A run that failed after samples came still leaves its chart; the failure is what
            // is reported.
            Err(_) if !flows.list.is_empty() => {
                let _ = p.write(&mut flows);
            }
            Err(_) => p.discard(),
        }
    }
    traced
}

fn trace(args: &WatchArgs, filter: &Filter, flows: &mut Flows) -> Result<i32, Error> {
    let mut rt = Runtime::for_packets(args.out.clone())?;
    let transport = rt.plan(|| {
        let tp_btf = rt.probes.get(Feature::TpBtf);
        if !tp_btf.is_supported() {
            return Err(Error::Unsupported {
                feature: "tp_btf",
                reason: tp_btf.detail(),
                hint: Some(
                    "tcpcc watch reads tcp:tcp_probe's socket through a BTF-typed tracepoint (Linux 5.5+ \
                     with /sys/kernel/btf/vmlinux, or --btf FILE); `tracekit probe` shows what this kernel has"
                        .to_owned(),
                ),
            });
        }
        rt.say(format_args!(
            "plan: tp_btf/tcp_probe, a sample per change or {}",
            if args.all { "per probe".to_owned() } else { format!("every {} ms", args.every) }
        ));
        rt.plan_transport()
    })?;
    let mut storage = MaybeUninit::uninit();
    let mut open = rt.open("tcpwatch", TcpwatchSkelBuilder::default(), &mut storage)?;
    rt.step("configure", || {
        rt.configure_transport(&mut open, transport)?;
        let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
        filter.write(&mut ro.tk_tcpwatch, args);
        Ok::<_, Error>(())
    })?;
    let skel = rt.load("tcpwatch", open)?;
    let printer = WatchPrinter {
        flows,
        json: args.out.json,
        interval: Every::new(Some(args.interval)),
        started: Instant::now(),
        tables: 0,
    };
    rt.stream(&skel, transport, printer, |skel| {
        let link = tracing::by_section(
            &skel.progs.tp_btf__tcp_probe,
            "tp_btf/tcp_probe",
            "the kernel has no tcp:tcp_probe raw tracepoint in its BTF; `tracekit probe` shows what it has",
        )?;
        Ok(vec![link])
    })
}

struct WatchPrinter<'a> {
    flows: &'a mut Flows,
    json: bool,
    interval: Every,
    started: Instant,
    tables: u64,
}

const COLUMNS: &str = "LPORT RADDR:RPORT       ALGO   STATE     CWND SSTHRESH SRTT_MS INFLIGHT RETRANS";

/// One table row: ≤ 80 columns while the remote end fits 17 (an IPv4 address and port).
fn write_row(w: &mut impl Write, ev: &types::tk_tcpwatch_event) -> io::Result<()> {
    let remote = Endpoint::new(sock_addr(ev.family, &ev.daddr), ev.dport);
    write!(
        w,
        "{:<5} {:<17} {:<6} {:<8} {:>5} ",
        ev.sport,
        remote.as_str(),
        c_chars(&ev.algo),
        ca_state_name(ev.ca_state),
        ev.cwnd
    )?;
    if ev.ssthresh >= NO_SSTHRESH {
        write!(w, "{:>8} ", "-")?;
    } else {
        write!(w, "{:>8} ", ev.ssthresh)?;
    }
    write!(w, "{:>7.3} {:>8} {:>7}", f64::from(ev.srtt_us) / 1e3, inflight(ev), ev.total_retrans)
}

impl WatchPrinter<'_> {
    /// The flows sampled since the last table, with their latest values.
    fn table(&mut self, out: &mut Sink) -> io::Result<()> {
        self.tables += 1;
        let fresh = self.flows.list.iter().filter(|f| f.fresh).count();
        let w = out.w();
        let secs = self.started.elapsed().as_secs_f64();
        if fresh == 0 {
            writeln!(w, "after {secs:.1} s: no samples (no traffic on the watched connections)\n")?;
            return out.flush();
        }
        writeln!(w, "after {secs:.1} s: {fresh} flow{}", if fresh == 1 { "" } else { "s" })?;
        writeln!(w, "{COLUMNS}")?;
        for f in self.flows.list.iter_mut().filter(|f| f.fresh) {
            f.fresh = false;
            write_row(w, &f.last)?;
            writeln!(w)?;
        }
        writeln!(w)?;
        out.flush()
    }
}

impl Printer for WatchPrinter<'_> {
    type Event = types::tk_tcpwatch_event;
    const COLUMNS: &'static str = COLUMNS;

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        // Softirq context: no task to name (pid 0 leaves pid and comm out).
        EventHeader::Hook(HookHeader { ts_ns: ev.ts_ns, cpu: ev.cpu, pid: 0, comm: [0; 16] })
    }

    fn observe(&mut self, ev: &Self::Event) {
        self.flows.record(ev);
    }

    fn prints_events(&self) -> bool {
        // The table mode prints flows every --interval, not samples.
        self.json
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        write_row(out.w(), ev)
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        out.field_sock_ends(ev.family, (&ev.saddr, ev.sport), (&ev.daddr, ev.dport))?;
        out.field_display("skaddr", format_args!("{:#x}", ev.skaddr))?;
        out.field_str("algo", &c_chars(&ev.algo))?;
        out.field_str("ca_state", ca_state_name(ev.ca_state))?;
        out.field_u64("cwnd", ev.cwnd.into())?;
        match ev.ssthresh {
            s if s >= NO_SSTHRESH => out.field_raw("ssthresh", "null")?,
            s => out.field_u64("ssthresh", s.into())?,
        }
        out.field_u64("srtt_us", ev.srtt_us.into())?;
        out.field_u64("rttvar_us", ev.rttvar_us.into())?;
        match ev.min_rtt_us {
            u32::MAX => out.field_raw("min_rtt_us", "null")?,
            m => out.field_u64("min_rtt_us", m.into())?,
        }
        out.field_u64("snd_wnd", ev.snd_wnd.into())?;
        out.field_u64("rcv_wnd", ev.rcv_wnd.into())?;
        out.field_u64("mss", ev.mss.into())?;
        out.field_u64("inflight", inflight(ev).into())?;
        out.field_u64("packets_out", ev.packets_out.into())?;
        out.field_u64("sacked_out", ev.sacked_out.into())?;
        out.field_u64("lost_out", ev.lost_out.into())?;
        out.field_u64("retrans_out", ev.retrans_out.into())?;
        out.field_u64("total_retrans", ev.total_retrans.into())?;
        out.field_u64("bytes_acked", ev.bytes_acked)?;
        out.field_u64("bytes_received", ev.bytes_received)
    }

    fn tick(&mut self, out: &mut Sink) -> io::Result<()> {
        if self.interval.due() && !self.json {
            return self.table(out);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        // The last part of an interval, or the only table of a run shorter than one.
        if !self.json && (self.tables == 0 || self.flows.list.iter().any(|f| f.fresh)) {
            return self.table(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_of(daddr: [u8; 4], algo: &[u8], ssthresh: u32) -> String {
        let mut ev = types::tk_tcpwatch_event {
            family: AF_INET,
            sport: 65535,
            dport: 65535,
            cwnd: 99_999,
            ssthresh,
            srtt_us: 999_999,
            packets_out: 99_999_999,
            total_retrans: 9_999_999,
            ca_state: 3,
            ..Default::default()
        };
        ev.daddr[..4].copy_from_slice(&daddr);
        for (d, c) in ev.algo.iter_mut().zip(algo) {
            *d = *c as _;
        }
        let mut row = Vec::new();
        write_row(&mut row, &ev).unwrap();
        String::from_utf8(row).unwrap()
    }

    #[test]
    fn a_row_fits_80_columns() {
        assert!(COLUMNS.len() <= 80, "{COLUMNS}");
        // Every number at its widest, a remote end of 17 characters, a 6-letter algorithm.
        let row = row_of([10, 20, 100, 2], b"cubic", 99_999_999);
        assert!(row.len() <= 80, "{row} ({})", row.len());
        // Wider values push the rest right by their excess only (never cut).
        let row = row_of([255; 4], b"westwood", 99_999_999);
        assert_eq!(row.len(), 80 + (21 - 17) + (8 - 6) - 1, "{row}");
        assert!(row_of([10, 0, 0, 1], b"reno", NO_SSTHRESH).contains("       - "));
    }

    #[test]
    fn in_flight_is_the_kernels_count() {
        let ev = types::tk_tcpwatch_event {
            packets_out: 10,
            sacked_out: 3,
            lost_out: 2,
            retrans_out: 1,
            ..Default::default()
        };
        assert_eq!(inflight(&ev), 6);
        let ev = types::tk_tcpwatch_event { sacked_out: 3, ..Default::default() };
        assert_eq!(inflight(&ev), 0);
    }
}
