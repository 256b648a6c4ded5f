//! `tracekit sklookup`: one socket for many ports and addresses. An sk_lookup program
//! (src/bpf/net/sklookup.bpf.c) on a netns link hands every TCP connection and UDP datagram
//! whose destination port is in a set (and whose destination address is in a prefix set) to one
//! socket: a server's listener taken from its process with `pidfd_getfd` (`--to`), or
//! tracekit's own echo service (`--echo`). The sets live in maps that commands on stdin change
//! while it runs.
//!
//! Overhead: the program runs on every TCP SYN and UDP datagram lookup of the namespace: two
//! map lookups and, for the port set, an event.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, ValueEnum};
use libbpf_rs::{MapCore, MapFlags, MapMut};

use crate::error::Error;
use crate::runtime::attach::{Netns, attach_sk_lookup};
use crate::runtime::cli::net::{HostPrefix, parse_host, parse_port};
use crate::runtime::cli::output::OutputArgs;
use crate::runtime::cli::task::parse_duration;
use crate::runtime::commands::StdinCommands;
use crate::runtime::echo::{self, EchoCounts};
use crate::runtime::fastfmt::Endpoint;
use crate::runtime::output::{EventHeader, HookHeader, Sink, sock_addr};
use crate::runtime::probe::{Feature, Status};
use crate::runtime::sockets::{self, Bound, SockProto};
use crate::runtime::watch::Every;
use crate::runtime::{Printer, Runtime};

crate::packet_skel!("sklookup", OpenSklookupSkel, SklookupSkel);
// SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
unsafe impl plain::Plain for skel::types::tk_skl_event {}
use skel::{SklookupSkel, SklookupSkelBuilder, types};

/// The layout is shared with sklookup.h: a drift must fail the build, not decode garbage.
const _: () = assert!(size_of::<types::tk_skl_event>() == 64);
/// TK_SKL_MAX_PORTS and TK_SKL_MAX_ADDRS of sklookup.h.
const MAX_PORTS: usize = 1024;
const MAX_ADDRS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtoChoice {
    Tcp,
    Udp,
    Both,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit sklookup --ports 7,77,777 --echo              # an echo service on three ports\n    \
    tracekit sklookup --ports 8000-8099 --to 127.0.0.1:8080   # 100 ports, one server\n    \
    tracekit sklookup --ports 53 --addr 192.0.2.0/24 --to 127.0.0.1:5353 --proto udp\n    \
    tracekit sklookup --ports 7 --echo --netns blue --json   # in namespace `blue`, NDJSON\n\n\
COMMANDS (one per line on stdin, unless stdin is /dev/null; each is applied at once and\n\
answered on stderr):\n    \
    add PORTS           steer these ports too (a list such as 80,443,8000-8099)\n    \
    del PORTS           stop steering them\n    \
    add-addr ADDR[/LEN] steer these destination addresses too (replaces the default `any`\n                        \
    of that family once given)\n    \
    del-addr ADDR[/LEN] stop steering them\n    \
    show                the ports, prefixes, sockets and counters\n    \
    help                this list\n\n\
The program runs before the namespace's usual socket lookup. A lookup whose port is not in the\n\
set, or whose address is outside the prefixes, goes on as if tracekit were not there. Ports on\n\
which another socket of the namespace listens are refused unless --force. With --to the socket\n\
stays its owner's: when it closes, steering stops (verdict no_socket).")]
pub struct SklookupArgs {
    /// Destination ports to steer: ports and ranges, comma-separated (7,77,8000-8099; at most
    /// 1024 ports)
    #[arg(long, value_name = "PORTS", required = true, value_delimiter = ',')]
    pub ports: Vec<String>,

    /// Only destinations in this prefix (repeatable; at most 64) [default: any address]
    #[arg(long = "addr", value_name = "ADDR[/LEN]")]
    pub addrs: Vec<String>,

    /// Steer to the TCP listener and/or UDP socket bound at ADDR:PORT in the namespace, taken
    /// from the process that holds it (pidfd_getfd, Linux 5.6)
    #[arg(long, value_name = "ADDR:PORT", required_unless_present = "echo", conflicts_with = "echo")]
    pub to: Option<String>,

    /// With --to: the socket is this process's
    #[arg(long, value_name = "PID", requires = "to")]
    pub pid: Option<u32>,

    /// Steer to tracekit's own echo service (TCP and UDP; UDP replies come from the address
    /// and port the datagram was sent to)
    #[arg(long)]
    pub echo: bool,

    /// The network namespace: a name (`ip netns`), a path (/proc/PID/ns/net) or a pid
    #[arg(long, value_name = "NAME|PATH|PID")]
    pub netns: Option<String>,

    /// Which lookups to steer
    #[arg(long, value_enum, default_value_t = ProtoChoice::Both, value_name = "PROTO")]
    pub proto: ProtoChoice,

    /// Steer ports on which another socket of the namespace listens (its traffic goes to the
    /// target instead)
    #[arg(long)]
    pub force: bool,

    /// Also print the counters every SECS seconds
    #[arg(short = 'i', long, value_name = "SECS", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    #[command(flatten)]
    pub out: OutputArgs,
}

// ---------------------------------------------------------------------------------------------
// Arguments

/// A port list: `7,77,8000-8099` (given as clap split it at commas).
fn port_set(items: &[String]) -> Result<BTreeSet<u16>, String> {
    let mut set = BTreeSet::new();
    for item in items.iter().map(|s| s.trim()) {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_port(a)?, parse_port(b)?);
                if a > b {
                    return Err(format!("the range `{item}` ends before it starts"));
                }
                set.extend(a..=b);
            }
            None => {
                set.insert(parse_port(item)?);
            }
        }
        if set.len() > MAX_PORTS {
            return Err(format!("more than {MAX_PORTS} ports: the port map holds at most {MAX_PORTS}"));
        }
    }
    Ok(set)
}

/// `7,77,8000-8099`: the set, ranges folded.
fn show_ports(set: &BTreeSet<u16>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end.wrapping_add(1))) && end < u16::MAX {
            end = it.next().unwrap_or(end);
        }
        out.push(if end == start { start.to_string() } else { format!("{start}-{end}") });
    }
    if out.is_empty() { "none".into() } else { out.join(",") }
}

fn show_prefix(p: &HostPrefix) -> String {
    format!("{}/{}", p.addr, p.prefix)
}

/// Whether `ip` is inside `p`.
fn contains(p: &HostPrefix, ip: IpAddr) -> bool {
    if p.addr.is_ipv4() != ip.is_ipv4() {
        return false;
    }
    HostPrefix { addr: ip, prefix: p.prefix }.masked_bytes() == p.masked_bytes()
}

/// The prefixes a socket bound at `ip` could take traffic from (a wildcard: all).
fn overlaps(prefixes: &[HostPrefix], ip: IpAddr) -> bool {
    ip.is_unspecified() || prefixes.iter().any(|p| contains(p, ip))
}

fn parse_to(s: &str) -> Result<SocketAddr, Error> {
    s.parse::<SocketAddr>().map_err(|_| {
        Error::usage(
            format!("--to: `{s}` is not ADDR:PORT"),
            Some("e.g. --to 127.0.0.1:8080 or --to [::1]:8080".to_owned()),
        )
    })
}

/// Everything checked before anything is loaded.
struct Plan {
    ports: BTreeSet<u16>,
    prefixes: Vec<HostPrefix>,
    protos: Vec<SockProto>,
    to: Option<SocketAddr>,
}

fn plan(args: &SklookupArgs) -> Result<Plan, Error> {
    let ports = port_set(&args.ports).map_err(|e| {
        Error::usage(format!("--ports: {e}"), Some("e.g. --ports 7,77,777 or --ports 8000-8099".into()))
    })?;
    if ports.is_empty() {
        return Err(Error::usage("--ports: no port given", Some("e.g. --ports 7,77,777".into())));
    }
    let mut prefixes = Vec::new();
    for a in &args.addrs {
        let p = parse_host(a).map_err(|e| {
            Error::usage(format!("--addr: {e}"), Some("e.g. --addr 127.0.0.0/8 or --addr fd00::/64".into()))
        })?;
        if !prefixes.contains(&p) {
            prefixes.push(p);
        }
    }
    if prefixes.len() > MAX_ADDRS {
        return Err(Error::usage(
            format!("--addr given {} times: the prefix map holds at most {MAX_ADDRS}", prefixes.len()),
            Some("join neighbouring prefixes into shorter ones".into()),
        ));
    }
    if prefixes.is_empty() {
        prefixes = vec![parse_host("0.0.0.0/0").expect("valid"), parse_host("::/0").expect("valid")];
    }
    let protos = match args.proto {
        ProtoChoice::Tcp => vec![SockProto::Tcp],
        ProtoChoice::Udp => vec![SockProto::Udp],
        ProtoChoice::Both => vec![SockProto::Tcp, SockProto::Udp],
    };
    let to = args.to.as_deref().map(parse_to).transpose()?;
    // clap's `requires` is not enforced next to `--echo`'s conflict: checked here.
    if let (Some(p), None) = (args.pid, &to) {
        return Err(Error::usage(
            format!("--pid {p} names the process that holds the --to socket: --to is missing"),
            Some("give --to ADDR:PORT with --pid, or drop --pid with --echo".into()),
        ));
    }
    Ok(Plan { ports, prefixes, protos, to })
}

// ---------------------------------------------------------------------------------------------
// The target sockets

/// A socket the program steers to, and the slots it fills.
struct Target {
    proto: SockProto,
    fd: OwnedFd,
    local: SocketAddr,
    cookie: u64,
    slots: Vec<u32>,
    /// `pid 123 (nginx) fd 5` for --to, `tracekit` for --echo.
    owner: String,
}

fn slots_of(proto: SockProto, local: SocketAddr, v6only: bool) -> Vec<u32> {
    let base = match proto {
        SockProto::Tcp => types::tk_skl_slot::TK_SKL_TCP4.0,
        SockProto::Udp => types::tk_skl_slot::TK_SKL_UDP4.0,
    };
    match local {
        SocketAddr::V4(_) => vec![base],
        // A dual-stack socket takes IPv4 lookups too (bpf_sk_assign allows it).
        SocketAddr::V6(_) if v6only => vec![base + 1],
        SocketAddr::V6(_) => vec![base, base + 1],
    }
}

/// The sockets at `to` in `netns` (per protocol: exact address first, else a wildcard that
/// covers it), each taken from its holder (restricted to `pid`).
fn take(
    netns: &Netns,
    bound: &[Bound],
    to: SocketAddr,
    pid: Option<u32>,
    protos: &[SockProto],
) -> Result<Vec<Target>, Error> {
    if let Some(p) = pid
        && !std::path::Path::new(&format!("/proc/{p}")).exists()
    {
        return Err(Error::usage(format!("--pid {p}: no such process"), Some("give the pid of the server".into())));
    }
    let mut out = Vec::new();
    let mut held_by_others = Vec::new();
    for &proto in protos {
        let mut cands: Vec<&Bound> = bound.iter().filter(|b| b.proto == proto && b.local == to).collect();
        cands.extend(bound.iter().filter(|b| b.proto == proto && b.local != to && sockets::covers(b.local, to)));
        'found: for b in cands {
            let holders = sockets::holders(b.inode, pid.as_slice());
            if holders.is_empty() && pid.is_some() {
                held_by_others.extend(sockets::holders(b.inode, &[]).into_iter().map(|(p, _)| p));
            }
            for (hpid, hfd) in holders {
                let fd = sockets::take_fd(hpid, hfd).map_err(|e| take_error(e, hpid))?;
                let info =
                    sockets::sock_info(&fd).map_err(|e| Error::io(format!("inspecting fd {hfd} of pid {hpid}"), e))?;
                // The descriptor may have changed since /proc was read: check the copy itself.
                let right = info.proto == Some(proto)
                    && (proto == SockProto::Udp || info.listening)
                    && info.local == Some(b.local);
                if !right {
                    continue;
                }
                out.push(Target {
                    proto,
                    slots: slots_of(proto, b.local, info.v6only),
                    local: b.local,
                    cookie: info.cookie,
                    fd,
                    owner: format!("pid {hpid} ({}) fd {hfd}", sockets::comm(hpid)),
                });
                break 'found;
            }
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    let what = match protos {
        [SockProto::Tcp] => "TCP listener",
        [SockProto::Udp] => "UDP socket",
        _ => "TCP listener or UDP socket",
    };
    let exec = netns.exec_prefix();
    Err(match pid {
        Some(p) if !held_by_others.is_empty() => {
            held_by_others.sort_unstable();
            held_by_others.dedup();
            let list: Vec<String> = held_by_others.iter().map(|o| format!("{o} ({})", sockets::comm(*o))).collect();
            Error::usage(
                format!("pid {p} holds no {what} at {to}{}", netns.suffix()),
                Some(format!("it is held by pid {}; give that pid or drop --pid", list.join(", pid "))),
            )
        }
        Some(p) => Error::usage(
            format!("pid {p} holds no {what} at {to}{}", netns.suffix()),
            Some(format!("see `{exec}ss -ltnup` for the sockets of the namespace")),
        ),
        None => Error::usage(
            format!("there is no {what} at {to}{}", netns.suffix()),
            Some(format!("start the server first (see `{exec}ss -ltnup`), or use --echo")),
        ),
    })
}

fn take_error(e: io::Error, pid: u32) -> Error {
    if e.raw_os_error() == Some(libc::ENOSYS) {
        return Error::Unsupported {
            feature: "pidfd_getfd",
            reason: "this kernel cannot copy another process's descriptor (pidfd_getfd, Linux 5.6)".into(),
            hint: Some("use --echo".into()),
        };
    }
    Error::io_hint(
        format!("taking the socket from pid {pid} (pidfd_getfd)"),
        e,
        "copying another process's descriptor needs root (CAP_SYS_PTRACE)",
    )
}

/// Other sockets listening on the set's ports at addresses the prefixes cover: steering would
/// take their traffic.
fn in_use<'a>(
    bound: &'a [Bound],
    ports: &BTreeSet<u16>,
    prefixes: &[HostPrefix],
    protos: &[SockProto],
    targets: &[u64],
) -> Vec<&'a Bound> {
    bound
        .iter()
        .filter(|b| {
            protos.contains(&b.proto)
                && ports.contains(&b.local.port())
                && !targets.contains(&b.inode)
                && overlaps(prefixes, b.local.ip())
        })
        .collect()
}

fn in_use_error(busy: &[&Bound], netns: &Netns) -> Error {
    let first = busy[0];
    let owners = sockets::holders(first.inode, &[]);
    let by = match owners.first() {
        Some((p, _)) => format!(" by pid {p} ({})", sockets::comm(*p)),
        None => String::new(),
    };
    Error::usage(
        format!(
            "port {} is in use{}: a {} socket at {}{} would lose its traffic",
            first.local.port(),
            by,
            first.proto.name(),
            first.local,
            netns.suffix()
        ),
        Some("drop the port from --ports, narrow --addr, or pass --force to steer it anyway".into()),
    )
}

// ---------------------------------------------------------------------------------------------
// Run

pub fn run(args: SklookupArgs) -> Result<i32, Error> {
    let plan = plan(&args)?;
    let mut rt = Runtime::for_packets(args.out.clone())?;
    let netns = Netns::resolve(args.netns.as_deref())?;
    let support = rt.probes.get(Feature::SkLookup);
    if matches!(support, Status::Unsupported { .. }) {
        return Err(Error::Unsupported {
            feature: "sk_lookup",
            reason: support.detail(),
            hint: Some("run it on Linux 5.9 or later".into()),
        });
    }
    let bound = sockets::bound_sockets(&netns)?;
    let (targets, echo_sockets) = match plan.to {
        Some(to) => (take(&netns, &bound, to, args.pid, &plan.protos)?, Vec::new()),
        None => {
            let socks = echo::open(&netns, &plan.protos)?;
            let mut t = Vec::new();
            for s in &socks {
                let fd = s.fd().try_clone_to_owned().map_err(|e| Error::io("duplicating an echo socket", e))?;
                let local = s.local().map_err(|e| Error::io("reading an echo socket's address", e))?;
                let cookie = sockets::cookie(&fd).unwrap_or(0);
                t.push(Target {
                    proto: s.proto(),
                    slots: slots_of(s.proto(), local, true),
                    local,
                    cookie,
                    fd,
                    owner: "tracekit".into(),
                });
            }
            (t, socks)
        }
    };
    let inodes: Vec<u64> = targets.iter().filter_map(|t| inode_of(t.fd.as_fd())).collect();
    let busy = in_use(&bound, &plan.ports, &plan.prefixes, &plan.protos, &inodes);
    if !busy.is_empty() && !args.force {
        return Err(in_use_error(&busy, &netns));
    }
    // Only the protocols that have a socket are steered; the other's lookups are left alone.
    let protos: Vec<SockProto> =
        plan.protos.iter().copied().filter(|p| targets.iter().any(|t| t.proto == *p)).collect();
    for p in plan.protos.iter().filter(|p| !protos.contains(p)) {
        eprintln!("tracekit: no {} socket at the target: {} lookups are left alone", p.name(), p.name());
    }

    let transport = rt.step("transport", || rt.transport())?;
    rt.say(format_args!(
        "plan: ports {} to {}{}; transport {transport:?}",
        show_ports(&plan.ports),
        targets.iter().map(|t| format!("{} {}", t.proto.name(), t.local)).collect::<Vec<_>>().join(", "),
        netns.suffix()
    ));
    let mut storage = MaybeUninit::uninit();
    let mut open = rt.open("sklookup", SklookupSkelBuilder::default(), &mut storage)?;
    rt.configure_transport(&mut open, transport)?;
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
    for t in &targets {
        for &s in &t.slots {
            ro.tk_skl_config.cookie[s as usize] = t.cookie;
        }
    }
    ro.tk_skl_config.protos = protos.iter().map(|p| if *p == SockProto::Tcp { 1 } else { 2 }).sum();
    let skel = rt.load("sklookup", open)?;

    let mut sets = Sets { ports: BTreeSet::new(), prefixes: Vec::new() };
    for &p in &plan.ports {
        sets.add_port(&skel.maps.tk_skl_ports, p)?;
    }
    for p in &plan.prefixes {
        sets.add_prefix(&skel.maps.tk_skl_addrs, *p)?;
    }
    for t in &targets {
        for &slot in &t.slots {
            let fd = t.fd.as_raw_fd() as u64;
            skel.maps.tk_skl_socks.update(&slot.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY).map_err(|e| {
                Error::runtime(
                    format!("putting the {} socket at {} into the socket map: {e}", t.proto.name(), t.local),
                    Some("the kernel takes listening TCP and bound UDP sockets into a SOCKMAP since Linux 5.7".into()),
                )
            })?;
        }
        eprintln!(
            "tracekit: {} lookups for {} go to {} ({}, cookie {})",
            t.proto.name(),
            show_ports(&plan.ports),
            t.local,
            t.owner,
            t.cookie
        );
    }
    let slots: Vec<(u32, u64, String)> = targets
        .iter()
        .flat_map(|t| t.slots.iter().map(|&s| (s, t.cookie, format!("{} {}", t.proto.name(), t.local))))
        .collect();
    // --to: the socket stays its owner's alone; the map entry goes when the owner closes it.
    drop(targets);
    let echo_counts = Arc::new(EchoCounts::default());
    if !echo_sockets.is_empty() {
        echo::serve(echo_sockets, &netns, &echo_counts)?;
    }

    let commands = StdinCommands::start();
    if commands.active() {
        eprintln!("tracekit: reading commands on stdin (add, del, add-addr, del-addr, show, help)");
    }
    let printer = SklPrinter {
        skel: &skel,
        sets,
        commands,
        interval: Every::new(args.interval),
        bound_check: (!args.force).then(|| (netns.clone(), protos.clone())),
        slots,
    };
    let code = rt.stream(&skel, transport, printer, |skel| {
        let att = attach_sk_lookup(skel.progs.sklookup__steer.as_fd(), "sklookup__steer", &netns)?;
        print_notes(&att);
        Ok(att)
    })?;
    if args.echo {
        eprintln!(
            "tracekit: echoed {} connections and {} datagrams ({} bytes; {} datagrams unanswered)",
            echo_counts.connections.load(Ordering::Relaxed),
            echo_counts.datagrams.load(Ordering::Relaxed),
            echo_counts.bytes.load(Ordering::Relaxed),
            echo_counts.unanswered.load(Ordering::Relaxed)
        );
    }
    Ok(code)
}

fn print_notes(att: &crate::runtime::attach::Attachment) {
    for n in att.notes() {
        eprintln!("tracekit: {n}");
    }
}

fn inode_of(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok().map(|m| m.ino())
}

// ---------------------------------------------------------------------------------------------
// The sets, and the commands that change them

/// What the maps hold, mirrored (the maps are the truth the program reads).
struct Sets {
    ports: BTreeSet<u16>,
    prefixes: Vec<HostPrefix>,
}

fn prefix_key(p: &HostPrefix) -> [u8; size_of::<types::tk_skl_prefix>()] {
    let mut k = [0u8; size_of::<types::tk_skl_prefix>()];
    k[..4].copy_from_slice(&(8 + u32::from(p.prefix)).to_ne_bytes());
    k[4] = if p.is_ipv4() { 4 } else { 6 };
    k[5..21].copy_from_slice(&p.masked_bytes());
    k
}

impl Sets {
    fn add_port(&mut self, map: &MapMut<'_>, port: u16) -> Result<(), Error> {
        map.update(&port.to_ne_bytes(), &[1], MapFlags::ANY)
            .map_err(|e| Error::runtime(format!("adding port {port} to the port map: {e}"), None))?;
        self.ports.insert(port);
        Ok(())
    }

    fn add_prefix(&mut self, map: &MapMut<'_>, p: HostPrefix) -> Result<(), Error> {
        map.update(&prefix_key(&p), &[1], MapFlags::ANY)
            .map_err(|e| Error::runtime(format!("adding {} to the prefix map: {e}", show_prefix(&p)), None))?;
        if !self
            .prefixes
            .iter()
            .any(|q| q.masked_bytes() == p.masked_bytes() && q.prefix == p.prefix && q.is_ipv4() == p.is_ipv4())
        {
            self.prefixes.push(p);
        }
        Ok(())
    }
}

struct SklPrinter<'a> {
    skel: &'a SklookupSkel<'a>,
    sets: Sets,
    commands: StdinCommands,
    interval: Every,
    /// Without --force: the namespace and protocols, to refuse `add` of a port in use.
    bound_check: Option<(Netns, Vec<SockProto>)>,
    /// (slot, cookie, `tcp 127.0.0.1:8080`) of each target.
    slots: Vec<(u32, u64, String)>,
}

const VERDICTS: [&str; 4] = ["steered", "passed", "no_socket", "failed"];

fn verdict_name(v: u8) -> &'static str {
    VERDICTS.get(usize::from(v)).copied().unwrap_or("unknown")
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "?",
    }
}

impl SklPrinter<'_> {
    /// (lookups, hits, misses), summed over CPUs.
    fn counts(&self) -> [u64; 3] {
        let mut out = [0u64; 3];
        for (i, n) in out.iter_mut().enumerate() {
            let key = (i as u32).to_ne_bytes();
            if let Ok(Some(per_cpu)) = self.skel.maps.tk_skl_counts.lookup_percpu(&key, MapFlags::ANY) {
                *n = per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8))
                    .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
                    .sum();
            }
        }
        out
    }

    fn write_counts(&self, out: &mut Sink) -> io::Result<()> {
        let [lookups, hits, misses] = self.counts();
        if out.json {
            out.obj_start("sklookup_counts")?;
            out.field_u64("lookups", lookups)?;
            out.field_u64("hits", hits)?;
            out.field_u64("misses", misses)?;
            return out.obj_end();
        }
        writeln!(out.w(), "LOOKUPS {lookups}  HITS {hits}  MISSES {misses}")
    }

    /// One command line from stdin, applied to the maps; the answer goes to stderr.
    fn command(&mut self, line: &str) {
        let (verb, rest) = line.split_once(char::is_whitespace).map_or((line, ""), |(v, r)| (v, r.trim()));
        let items: Vec<String> = rest.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let answer = match verb {
            "add" | "del" => self.ports_command(verb == "add", &items),
            "add-addr" | "del-addr" => self.addrs_command(verb == "add-addr", &items),
            "show" => Ok(self.show()),
            "help" => Ok("commands: add PORTS, del PORTS, add-addr ADDR[/LEN], del-addr ADDR[/LEN], show, help".into()),
            _ => Err(format!("unknown command `{verb}` (add, del, add-addr, del-addr, show, help)")),
        };
        match answer {
            Ok(a) => eprintln!("tracekit: {a}"),
            Err(e) => eprintln!("tracekit: error: `{line}`: {e}"),
        }
    }

    fn ports_command(&mut self, add: bool, items: &[String]) -> Result<String, String> {
        if items.is_empty() {
            return Err("give ports, e.g. `add 8080` or `del 8000-8099`".into());
        }
        let given = port_set(items)?;
        let map = &self.skel.maps.tk_skl_ports;
        if add {
            if self.sets.ports.union(&given).count() > MAX_PORTS {
                return Err(format!("the port map holds at most {MAX_PORTS} ports"));
            }
            if let Some((netns, protos)) = &self.bound_check {
                let bound = sockets::bound_sockets(netns).map_err(|e| e.to_string())?;
                let mine: Vec<&String> = self.slots.iter().map(|s| &s.2).collect();
                let busy: Vec<&Bound> = in_use(&bound, &given, &self.sets.prefixes, protos, &[])
                    .into_iter()
                    .filter(|b| !mine.contains(&&format!("{} {}", b.proto.name(), b.local)))
                    .collect();
                if let Some(b) = busy.first() {
                    return Err(format!(
                        "port {} is in use by a {} socket at {} (restart with --force to steer ports in use)",
                        b.local.port(),
                        b.proto.name(),
                        b.local
                    ));
                }
            }
            for &p in &given {
                self.sets.add_port(map, p).map_err(|e| e.to_string())?;
            }
        } else {
            for &p in &given {
                // A port not in the set is already not steered: nothing to undo.
                let _ = map.delete(&p.to_ne_bytes());
                self.sets.ports.remove(&p);
            }
        }
        Ok(format!(
            "{} port{} {}; steering {}",
            if add { "added" } else { "removed" },
            if given.len() == 1 { "" } else { "s" },
            show_ports(&given),
            show_ports(&self.sets.ports)
        ))
    }

    fn addrs_command(&mut self, add: bool, items: &[String]) -> Result<String, String> {
        if items.is_empty() {
            return Err("give prefixes, e.g. `add-addr 10.0.0.0/8`".into());
        }
        let given: Vec<HostPrefix> = items.iter().map(|s| parse_host(s)).collect::<Result<_, _>>()?;
        let map = &self.skel.maps.tk_skl_addrs;
        for p in &given {
            if add {
                if self.sets.prefixes.len() >= MAX_ADDRS {
                    return Err(format!("the prefix map holds at most {MAX_ADDRS} prefixes"));
                }
                self.sets.add_prefix(map, *p).map_err(|e| e.to_string())?;
            } else {
                let _ = map.delete(&prefix_key(p));
                self.sets.prefixes.retain(|q| prefix_key(q) != prefix_key(p));
            }
        }
        Ok(format!(
            "{} {}; steering destinations in {}",
            if add { "added" } else { "removed" },
            given.iter().map(show_prefix).collect::<Vec<_>>().join(" "),
            self.show_prefixes()
        ))
    }

    fn show_prefixes(&self) -> String {
        if self.sets.prefixes.is_empty() {
            return "none (nothing is steered)".into();
        }
        self.sets.prefixes.iter().map(show_prefix).collect::<Vec<_>>().join(" ")
    }

    fn show(&self) -> String {
        let [lookups, hits, misses] = self.counts();
        let names = ["tcp4", "tcp6", "udp4", "udp6"];
        let socks: Vec<String> = self
            .slots
            .iter()
            .map(|(slot, cookie, what)| {
                let present =
                    self.skel.maps.tk_skl_socks.lookup(&slot.to_ne_bytes(), MapFlags::ANY).ok().flatten().is_some();
                format!(
                    "{} -> {what} (cookie {cookie}{})",
                    names.get(*slot as usize).unwrap_or(&"?"),
                    if present { "" } else { ", closed" }
                )
            })
            .collect();
        format!(
            "ports {}; addresses {}; sockets {}; lookups {lookups} hits {hits} misses {misses}",
            show_ports(&self.sets.ports),
            self.show_prefixes(),
            socks.join(", ")
        )
    }
}

impl Printer for SklPrinter<'_> {
    type Event = types::tk_skl_event;
    const COLUMNS: &'static str = "PROTO VERDICT   DESTINATION                SOURCE                     COOKIE";

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        EventHeader::Hook(HookHeader { ts_ns: ev.ts_ns, cpu: ev.cpu, pid: 0, comm: [0; 16] })
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let local = Endpoint::new(sock_addr(ev.family, &ev.laddr), ev.lport);
        let remote = Endpoint::new(sock_addr(ev.family, &ev.raddr), ev.rport);
        write!(
            out.w(),
            "{:<5} {:<9} {:<26} {:<26} {}",
            proto_name(ev.proto),
            verdict_name(ev.verdict),
            local.as_str(),
            remote.as_str(),
            ev.cookie
        )?;
        if ev.err != 0 {
            write!(out.w(), " ({})", io::Error::from_raw_os_error(-ev.err))?;
        }
        Ok(())
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        out.field_str("proto", proto_name(ev.proto))?;
        out.field_str("verdict", verdict_name(ev.verdict))?;
        out.field_sock_ends(ev.family, (&ev.laddr, ev.lport), (&ev.raddr, ev.rport))?;
        out.field_u64("cookie", ev.cookie)?;
        if ev.err != 0 {
            out.field_u64("errno", u64::from(ev.err.unsigned_abs()))?;
        }
        Ok(())
    }

    fn tick(&mut self, out: &mut Sink) -> io::Result<()> {
        while let Some(line) = self.commands.pending() {
            self.command(&line);
        }
        if self.interval.due() { self.write_counts(out) } else { Ok(()) }
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        self.write_counts(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(s: &str) -> Vec<String> {
        s.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn port_lists() {
        assert_eq!(port_set(&items("7,77,777")).unwrap().len(), 3);
        assert_eq!(show_ports(&port_set(&items("8000-8003,7,8004")).unwrap()), "7,8000-8004");
        assert!(port_set(&items("9-7")).unwrap_err().contains("ends before"));
        assert!(port_set(&items("0")).unwrap_err().contains("out of range"));
        assert!(port_set(&items("1-2000")).unwrap_err().contains("at most 1024"));
        assert!(port_set(&items("http")).is_err());
        assert_eq!(show_ports(&BTreeSet::from([65535])), "65535");
    }

    proptest::proptest! {
        /// Any set of ports prints as a list that parses back to the same set, and any text is
        /// a set or an error, never a panic.
        #[test]
        fn port_lists_round_trip(ports in proptest::collection::btree_set(1u16..=u16::MAX, 1..64)) {
            let shown = show_ports(&ports);
            proptest::prop_assert_eq!(port_set(&items(&shown)), Ok(ports), "{}", shown);
        }

        #[test]
        fn port_lists_never_panic(s in "[0-9, -]{0,24}|\\PC{0,12}") {
            let _ = port_set(&items(&s));
        }
    }

    #[test]
    fn prefixes() {
        let p = parse_host("10.0.0.0/8").unwrap();
        assert!(contains(&p, "10.1.2.3".parse().unwrap()));
        assert!(!contains(&p, "11.0.0.1".parse().unwrap()));
        assert!(!contains(&p, "::1".parse().unwrap()));
        let k = prefix_key(&parse_host("fd00::/64").unwrap());
        assert_eq!(u32::from_ne_bytes(k[..4].try_into().unwrap()), 72);
        assert_eq!((k[4], k[5]), (6, 0xfd));
    }
}
