//! `tracekit tcpstate`: TCP state transitions, as libbpf-tools `tcpstates` shows them.
//!
//! One event per `inet_sock_set_state` of a TCP socket, filtered in the kernel (family, ports,
//! the common filters). Overhead: one map update and one ring-buffer record per transition.

use std::io::{self, Write};
use std::mem::MaybeUninit;

use clap::{Args, ValueEnum};

use crate::error::Error;
use crate::runtime::attach::tracing::{self, TpHook};
use crate::runtime::fastfmt;
use crate::runtime::fastfmt::Endpoint;
use crate::runtime::output::{AF_INET, AF_INET6, EventHeader, Sink, TaskHeader, sock_addr};
use crate::runtime::{CommonArgs, Printer, Runtime};

crate::tool_skel!("tcpstate", OpenTcpstateSkel, TcpstateSkel, tk_tcpstate_event);
use skel::{TcpstateSkel, TcpstateSkelBuilder, types};

/// The layout is shared with tcpstate.h: a drift must fail the build, not decode garbage.
const _: () = assert!(size_of::<types::tk_tcpstate_event>() == 104);

/// Must match TK_TCPSTATE_MAX_PORTS in tcpstate.h.
const MAX_PORTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// tp_btf when the kernel has it, else the classic tracepoint
    Auto,
    /// BTF-typed raw tracepoint (5.5+): no tracefs needed, cheapest
    TpBtf,
    /// Classic tracepoint sock:inet_sock_set_state (4.16+), needs tracefs
    Tracepoint,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit tcpstate                   # every TCP state change\n    \
    tracekit tcpstate -T -L 80,443      # local port 80 or 443, with times\n    \
    tracekit tcpstate -6 -D 5432        # IPv6 connections to port 5432\n    \
    tracekit tcpstate --json -n 10      # ten events as NDJSON\n    \
    tracekit tcpstate -- curl -s http://127.0.0.1:8080/   # only what curl does")]
pub struct TcpstateArgs {
    /// IPv4 only
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 only
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Only these local ports (comma-separated, at most 8)
    #[arg(short = 'L', long = "local-port", visible_alias = "sport", value_delimiter = ',', value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub local_ports: Vec<u16>,

    /// Only these remote ports (comma-separated, at most 8)
    #[arg(short = 'D', long = "remote-port", visible_alias = "dport", value_delimiter = ',', value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub remote_ports: Vec<u16>,

    /// Also show the socket address (skaddr) column
    #[arg(short = 'w', long)]
    pub wide: bool,

    /// Which kernel hook to use
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    #[command(flatten)]
    pub common: CommonArgs,
}

fn check_ports(flag: &str, ports: &[u16]) -> Result<(), Error> {
    if ports.len() > MAX_PORTS {
        return Err(Error::usage(
            format!("{flag} takes at most {MAX_PORTS} ports, got {}", ports.len()),
            Some("trace without the port filter and filter the JSON output instead".to_owned()),
        ));
    }
    Ok(())
}

pub fn run(args: TcpstateArgs) -> Result<i32, Error> {
    check_ports("--local-port", &args.local_ports)?;
    check_ports("--remote-port", &args.remote_ports)?;
    let mut rt = Runtime::new(args.common.clone())?;
    let want = match args.backend {
        Backend::Auto => None,
        Backend::TpBtf => Some(TpHook::TpBtf),
        Backend::Tracepoint => Some(TpHook::Tracepoint),
    };
    let (hook, transport) =
        rt.plan(|| Ok((tracing::plan_tracepoint(&rt, want, "sock:inet_sock_set_state")?, rt.plan_transport()?)))?;
    let mut storage = MaybeUninit::uninit();
    let skel: TcpstateSkel<'_> =
        rt.open_load("tcpstate", TcpstateSkelBuilder::default(), &mut storage, transport, |open| {
            let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
            let c = &mut ro.tk_tcpstate;
            c.lports[..args.local_ports.len()].copy_from_slice(&args.local_ports);
            c.nlports = args.local_ports.len() as u32;
            c.rports[..args.remote_ports.len()].copy_from_slice(&args.remote_ports);
            c.nrports = args.remote_ports.len() as u32;
            c.family = if args.ipv4 {
                AF_INET
            } else if args.ipv6 {
                AF_INET6
            } else {
                0
            };
            open.progs.tp_btf__inet_sock_set_state.set_autoload(hook == TpHook::TpBtf);
            open.progs.tp__inet_sock_set_state.set_autoload(hook == TpHook::Tracepoint);
            Ok(())
        })?;
    rt.stream(&skel, transport, TcpstatePrinter { wide: args.wide }, |skel| {
        let prog = match hook {
            TpHook::TpBtf => &skel.progs.tp_btf__inet_sock_set_state,
            TpHook::Tracepoint => &skel.progs.tp__inet_sock_set_state,
        };
        let link =
            tracing::by_section(prog, "inet_sock_set_state", "run `tracekit probe`, or try --backend tracepoint")?;
        Ok(vec![link])
    })
}

const STATES: [&str; 13] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

pub fn state_name(s: i32) -> &'static str {
    usize::try_from(s).ok().and_then(|i| STATES.get(i)).copied().unwrap_or("UNKNOWN")
}

struct TcpstatePrinter {
    wide: bool,
}

impl Printer for TcpstatePrinter {
    type Event = types::tk_tcpstate_event;
    const COLUMNS: &'static str =
        "PID     COMM            LADDR:LPORT           RADDR:RPORT           OLDSTATE    -> NEWSTATE         MS";

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        TaskHeader::from(&ev.hdr).into()
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let h = TaskHeader::from(&ev.hdr);
        let local = Endpoint::new(sock_addr(ev.family, &ev.saddr), ev.sport);
        let remote = Endpoint::new(sock_addr(ev.family, &ev.daddr), ev.dport);
        let comm = crate::runtime::output::c_str(&h.comm);
        let w = out.w();
        fastfmt::int_col(w, h.pid, 7)?;
        fastfmt::col(w, comm.as_bytes(), 15)?;
        fastfmt::col(w, local.as_str().as_bytes(), 21)?;
        fastfmt::col(w, remote.as_str().as_bytes(), 21)?;
        fastfmt::col(w, state_name(ev.oldstate).as_bytes(), 11)?;
        w.write_all(b"-> ")?;
        fastfmt::col(w, state_name(ev.newstate).as_bytes(), 11)?;
        fastfmt::ms_col(w, ev.delta_ns, 8)?;
        if self.wide {
            w.write_all(b" ")?;
            fastfmt::hex(w, ev.skaddr)?;
        }
        Ok(())
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        out.field_sock_ends(ev.family, (&ev.saddr, ev.sport), (&ev.daddr, ev.dport))?;
        out.field_str("oldstate", state_name(ev.oldstate))?;
        out.field_str("newstate", state_name(ev.newstate))?;
        out.field_f64("ms", ev.delta_ns as f64 / 1e6, 3)?;
        out.field_display("skaddr", format_args!("{:#x}", ev.skaddr))
    }
}

#[cfg(test)]
mod tests;
