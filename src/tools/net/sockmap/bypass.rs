//! `tracekit sockmap bypass`: the data of a cgroup's local TCP connections skips the loopback
//! stack (src/bpf/net/sockbypass.bpf.c). A sockops program puts each established connection end
//! into a sockhash keyed by its 4-tuple; the sockhash's sk_msg program hands every sendmsg()
//! straight to the peer socket's receive queue when the peer is in the sockhash too.

use std::ffi::OsString;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::PathBuf;

use clap::Args;
use libbpf_rs::{MapCore, MapFlags, MapMut, ProgramType, libbpf_sys};

use crate::error::Error;
use crate::runtime::attach::cgroup::{cgroup_dir, cgroup2_root, scope_description};
use crate::runtime::attach::{attach_cgroup, attach_sockmap};
use crate::runtime::cli::net::port_list;
use crate::runtime::cli::output::OutputArgs;
use crate::runtime::fastfmt::{self, Endpoint};
use crate::runtime::output::{EventHeader, HookHeader, Sink, c_str, sock_addr};
use crate::runtime::{Printer, Runtime};

crate::packet_skel!("sockbypass", OpenSockbypassSkel, SockbypassSkel);
// SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
unsafe impl plain::Plain for skel::types::tk_bp_event {}
use skel::{SockbypassSkelBuilder, types};

/// The layout is shared with sockbypass.h: a drift must fail the build, not decode garbage.
const _: () = assert!(size_of::<types::tk_bp_event>() == 120);

/// TK_BP_MAX_PORTS in sockbypass.h.
const MAX_PORTS: usize = 8;
/// enum tk_bp_kind.
const PAIR: u8 = 0;
const CLOSED: u8 = 1;
/// enum tk_bp_count, as the summary names them.
const COUNTS: [&str; 7] = ["sockets", "pairs", "closed", "bytes", "msgs", "passed", "full"];

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit sockmap bypass -- ./client-and-server   # CMD's local connections skip loopback\n    \
    tracekit sockmap bypass --cgroup system.slice/app.service --port 6379 --json\n\n\
A sockops program on the cgroup (the whole system without --cgroup or -- CMD) puts every TCP\n\
connection end that completes its handshake after tracekit starts into a sockhash; an sk_msg\n\
program on it moves each sendmsg() of such a socket straight into its peer's receive queue\n\
when both ends are in the sockhash (both local and in the cgroup), skipping TCP/IP and the\n\
loopback device. Other connections keep TCP's normal path.\n\n\
When tracekit ends (Ctrl-C, SIGTERM, --duration, --count, the end of CMD), connections\n\
bypassed until then send their new data through TCP again. Data already handed to a peer and\n\
not yet read waits in the peer's psock, which the kernel would drop with the socket's place in\n\
the sockhash: so tracekit never takes sockets out, and the kernel keeps the programs and the\n\
sockhash (each socket's psock holds them) until the last such connection closes. After SIGKILL\n\
the same holds, except that those connections stay bypassed until they close.")]
pub struct BypassArgs {
    /// The cgroup v2 directory whose connections to bypass (default: the root: all)
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Only connections with one of these ports at either end (comma-separated, at most 8)
    #[arg(short = 'P', long = "port", value_delimiter = ',', value_name = "PORT")]
    pub ports: Vec<String>,

    #[command(flatten)]
    pub out: OutputArgs,

    /// Run CMD in a new child cgroup and bypass its connections only; exit with its status
    #[arg(last = true, value_name = "CMD", conflicts_with = "cgroup")]
    pub command: Vec<OsString>,
}

pub fn run(args: BypassArgs) -> Result<i32, Error> {
    // A bare `--` would silently mean "every connection of the system".
    if args.command.is_empty() && std::env::args_os().last().is_some_and(|a| a == "--") {
        return Err(Error::usage(
            "`--` must be followed by the command to run",
            Some("write `-- CMD [ARGS...]`, or drop `--` to bypass every local connection of the system".to_owned()),
        ));
    }
    let ports = port_list("--port", &args.ports, MAX_PORTS, "bypass without the port filter")?;
    let mut rt = Runtime::for_packets(args.out.clone())?;
    let root = cgroup2_root()?;
    let given = args.cgroup.as_deref().map(cgroup_dir).transpose()?.map(|(dir, _)| dir);
    let transport = rt.step("transport", || rt.transport())?;
    let ops = |id| ProgramType::SockOps.is_helper_supported(id).unwrap_or(false);
    let with_task = ops(libbpf_sys::BPF_FUNC_get_current_task) && ops(libbpf_sys::BPF_FUNC_probe_read_kernel);
    // Both programs build the key: the namespace is part of it only where both can read it.
    let with_netns = ops(libbpf_sys::BPF_FUNC_get_netns_cookie)
        && ProgramType::SkMsg.is_helper_supported(libbpf_sys::BPF_FUNC_get_netns_cookie).unwrap_or(false);
    rt.say(format_args!(
        "plan: sockops on {}; task at connect/listen: {}; network namespace in the key: {}; transport {transport:?}",
        scope_description(given.as_deref(), !args.command.is_empty(), &root),
        if with_task { "yes" } else { "no (the kernel gives sock_ops no task helper)" },
        if with_netns { "yes" } else { "no (bpf_get_netns_cookie: sock_ops and sk_msg, 5.15)" },
    ));

    let mut storage = MaybeUninit::uninit();
    let mut open = rt.open("sockbypass", SockbypassSkelBuilder::default(), &mut storage)?;
    rt.configure_transport(&mut open, transport)?;
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
    let c = &mut ro.tk_bp_config;
    c.ports[..ports.len()].copy_from_slice(&ports);
    c.nports = ports.len() as u32;
    c.with_task = u32::from(with_task);
    c.with_netns = u32::from(with_netns);
    let mut skel = rt.load("sockbypass", open)?;
    let transient = match (&given, args.command.is_empty()) {
        (None, false) => Some(rt.command_in_cgroup(&root, &args.command)?),
        _ => None,
    };
    let dir = given.or_else(|| transient.as_ref().map(|t| t.path().to_path_buf())).unwrap_or(root);
    let held = std::cell::RefCell::new(None);
    let code = rt.stream(&skel, transport, BypassPrinter { counts: &skel.maps.tk_bp_counts }, |skel| {
        // The sk_msg program first, then the program that fills the sockhash: no socket is in
        // it before its sendmsg() can be redirected.
        let redirect = attach_sockmap(
            skel.progs.sockbypass__redirect.as_fd(),
            "sockbypass__redirect",
            skel.maps.tk_bp_socks.as_fd(),
            libbpf_sys::BPF_SK_MSG_VERDICT,
        )?;
        let insert = attach_cgroup(
            skel.progs.sockbypass__insert.as_fd(),
            "sockbypass__insert",
            &dir,
            libbpf_sys::BPF_CGROUP_SOCK_OPS,
        )?;
        for a in [&redirect, &insert] {
            eprintln!("tracekit: attached {}", a.describe());
        }
        *held.borrow_mut() = Some((insert, redirect));
        Ok(())
    });
    // No new socket goes in, and every message of those still in the sockhash takes TCP's
    // path from now on (after what was redirected before it, which the peer reads first). They
    // keep the programs and the sockhash until they close: taking them out would drop what
    // their peers have not read yet.
    let (insert, redirect) = held.into_inner().unzip();
    drop(insert);
    if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
        bss.tk_bp_draining = 1;
    }
    let c = BypassPrinter { counts: &skel.maps.tk_bp_counts }.read();
    let open_left = c[0].saturating_sub(c[2]);
    if open_left > 0 {
        eprintln!(
            "tracekit: {open_left} bypassed sockets are still open: their new data takes TCP's path; the \
             programs stay loaded until they close"
        );
    }
    drop(redirect);
    if let Some(t) = transient {
        t.finish(());
    }
    code
}

struct BypassPrinter<'a> {
    counts: &'a MapMut<'a>,
}

impl BypassPrinter<'_> {
    /// The counters, summed over CPUs.
    fn read(&self) -> [u64; COUNTS.len()] {
        let mut out = [0u64; COUNTS.len()];
        for (i, n) in out.iter_mut().enumerate() {
            let key = (i as u32).to_ne_bytes();
            if let Ok(Some(per_cpu)) = self.counts.lookup_percpu(&key, MapFlags::ANY) {
                *n = per_cpu.iter().filter_map(|v| v.get(..8)).map(|b| u64::from_ne_bytes(b.try_into().unwrap())).sum();
            }
        }
        out
    }
}

fn kind_name(k: u8) -> &'static str {
    match k {
        PAIR => "bypassed",
        CLOSED => "closed",
        _ => "full",
    }
}

/// The comm fields as bytes (the generated type has C `char`s), on the stack.
fn bytes16(c: &[std::ffi::c_char; 16]) -> [u8; 16] {
    c.map(|c| c as u8)
}

impl Printer for BypassPrinter<'_> {
    type Event = types::tk_bp_event;
    const COLUMNS: &'static str = "PID     COMM       LADDR:LPORT           RADDR:RPORT           EVENT";

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        EventHeader::Hook(HookHeader { ts_ns: ev.ts_ns, cpu: ev.cpu, pid: ev.pid, comm: bytes16(&ev.comm) })
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let local = Endpoint::new(sock_addr(ev.family, &ev.saddr), ev.sport);
        let remote = Endpoint::new(sock_addr(ev.family, &ev.daddr), ev.dport);
        let comm = bytes16(&ev.comm);
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
            PAIR => {
                let peer = bytes16(&ev.peer_comm);
                write!(w, "bypassed, peer {} {}", ev.peer_pid, c_str(&peer))
            }
            CLOSED => {
                write!(w, "closed {} B ", ev.bytes)?;
                fastfmt::ms_col(w, ev.duration_ns, 0)?;
                w.write_all(b" ms")
            }
            _ => w.write_all(b"sockhash full: not bypassed"),
        }
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        out.field_str("event", kind_name(ev.kind))?;
        out.field_sock_ends(ev.family, (&ev.saddr, ev.sport), (&ev.daddr, ev.dport))?;
        match ev.kind {
            PAIR => {
                let peer = bytes16(&ev.peer_comm);
                out.field_u64("peer_pid", ev.peer_pid.into())?;
                out.field_str("peer_comm", &c_str(&peer))
            }
            CLOSED => {
                out.field_u64("bytes", ev.bytes)?;
                out.field_u64("msgs", ev.msgs)?;
                out.field_f64("ms", ev.duration_ns as f64 / 1e6, 3)
            }
            _ => Ok(()),
        }
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        let c = self.read();
        if out.json {
            out.obj_start("sockbypass_counts")?;
            out.fields_u64(&COUNTS, c)?;
            return out.obj_end();
        }
        writeln!(
            out.w(),
            "sockets {}, pairs {}, closed {}; {} bytes in {} messages redirected, {} messages left to TCP",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5]
        )
    }
}
