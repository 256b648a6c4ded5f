//! `tracekit cgroup`: every socket and device operation of a group of processes, seen and
//! decided in the kernel by the cgroup hooks (cgroup_skb, cgroup_sock, sock_addr, device),
//! attached through cgroup links to a cgroup v2 directory, or to a transient child cgroup that
//! `-- CMD` runs in.
//!
//! Rules (`--deny`, `--rewrite`, see [`rules`]) go into rodata; each hook walks them in order,
//! counts every call and every rule's decisions per CPU, and sends an event only for the
//! hooks observed (`--hooks`, none with `-q`).

pub mod rules;

use std::cell::RefCell;
use std::ffi::OsString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use libbpf_rs::libbpf_sys as sys;
use libbpf_rs::skel::{OpenSkel, Skel};
use libbpf_rs::{MapCore, MapFlags, MapMut, ProgramType};

use super::packet::proto_name;
use super::skels::cgroup::skel::{CgroupSkel, CgroupSkelBuilder, OpenCgroupSkel, types};
use crate::error::Error;
use crate::runtime::attach::cgroup::{cgroup_dir, cgroup2_root};
use crate::runtime::attach::{Attachment, attach_cgroup};
use crate::runtime::cli::task::parse_duration;
use crate::runtime::fastfmt::{self, Endpoint};
use crate::runtime::output::{EventHeader, HookHeader, Sink, c_chars};
use crate::runtime::watch::Every;
use crate::runtime::{OutputArgs, Printer, Runtime};
use rules::{Kind, Rule, ip_bytes, ip_of, mask_words, words};

pub type CgroupEvent = types::tk_cg_event;

/// TK_CG_MAX_RULES of cgroup.h (checked against the rodata array when it is written).
const MAX_RULES: usize = 256;

/// The hooks, in `enum tk_cg_hook` order: the user's name, the program, the attach type.
pub const HOOKS: [(&str, &str, sys::bpf_attach_type); 15] = [
    ("ingress", "cg__ingress", sys::BPF_CGROUP_INET_INGRESS),
    ("egress", "cg__egress", sys::BPF_CGROUP_INET_EGRESS),
    ("sock_create", "cg__sock_create", sys::BPF_CGROUP_INET_SOCK_CREATE),
    ("sock_release", "cg__sock_release", sys::BPF_CGROUP_INET_SOCK_RELEASE),
    ("bind4", "cg__bind4", sys::BPF_CGROUP_INET4_BIND),
    ("bind6", "cg__bind6", sys::BPF_CGROUP_INET6_BIND),
    ("post_bind4", "cg__post_bind4", sys::BPF_CGROUP_INET4_POST_BIND),
    ("post_bind6", "cg__post_bind6", sys::BPF_CGROUP_INET6_POST_BIND),
    ("connect4", "cg__connect4", sys::BPF_CGROUP_INET4_CONNECT),
    ("connect6", "cg__connect6", sys::BPF_CGROUP_INET6_CONNECT),
    ("sendmsg4", "cg__sendmsg4", sys::BPF_CGROUP_UDP4_SENDMSG),
    ("sendmsg6", "cg__sendmsg6", sys::BPF_CGROUP_UDP6_SENDMSG),
    ("recvmsg4", "cg__recvmsg4", sys::BPF_CGROUP_UDP4_RECVMSG),
    ("recvmsg6", "cg__recvmsg6", sys::BPF_CGROUP_UDP6_RECVMSG),
    ("dev", "cg__dev", sys::BPF_CGROUP_DEVICE),
];
const ALL_HOOKS: u32 = (1 << HOOKS.len()) - 1;

/// Groups of hooks by the name users reach for first.
const GROUPS: [(&str, &[&str]); 8] = [
    ("skb", &["ingress", "egress"]),
    ("sock", &["sock_create", "sock_release"]),
    ("bind", &["bind4", "bind6"]),
    ("post_bind", &["post_bind4", "post_bind6"]),
    ("connect", &["connect4", "connect6"]),
    ("sendmsg", &["sendmsg4", "sendmsg6"]),
    ("recvmsg", &["recvmsg4", "recvmsg6"]),
    ("all", &[]),
];

fn bit(name: &str) -> u32 {
    HOOKS.iter().position(|(n, ..)| *n == name).map_or(0, |i| 1 << i)
}

/// One `--hooks` item: a hook, a group (`connect` = connect4 + connect6), `all` or `none`.
pub fn parse_hooks(s: &str) -> Result<u32, String> {
    match s {
        "all" => return Ok(ALL_HOOKS),
        "none" => return Ok(0),
        _ => {}
    }
    if let Some((_, members)) = GROUPS.iter().find(|(g, _)| *g == s) {
        return Ok(members.iter().map(|m| bit(m)).fold(0, |a, b| a | b));
    }
    match bit(s) {
        0 => Err(format!(
            "unknown hook `{s}`: one of {}, or a group: {}, none",
            HOOKS.iter().map(|h| h.0).collect::<Vec<_>>().join(", "),
            GROUPS.iter().map(|g| g.0).collect::<Vec<_>>().join(", ")
        )),
        b => Ok(b),
    }
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit cgroup -- curl -s http://127.0.0.1:8080/  # all of curl's calls\n    \
    tracekit cgroup --cgroup system.slice/nginx.service --hooks connect,bind\n    \
    tracekit cgroup --deny 'connect:*:*' --deny 'egress:*' -- ./job # no network\n    \
    tracekit cgroup -q --deny bind:0-1023 --deny sock:raw --cgroup ci\n    \
    tracekit cgroup --deny dev:c:1:3:w -- sh -c 'echo > /dev/null'   # EPERM\n    \
    tracekit cgroup --rewrite connect:127.0.0.7:80=127.0.0.1:8 -- curl 127.0.0.7\n\n\
RULES (first match wins; a denied call fails with EPERM, a packet is dropped):\n    \
    connect[4|6]:ADDR[/LEN][:PORTS]  sendmsg[4|6]:...  bind:...  egress:...\n    \
    ingress:...   (ADDR: IPv4, [IPv6] or *; PORTS: N, N-M or *; bind:0-1023)\n    \
    sock:inet|inet6|stream|dgram|raw|tcp|udp|icmp|icmpv6 (joined with +)\n    \
    dev:c|b|*:MAJOR|*:MINOR|*[:rwm]\n    \
    --rewrite connect:A:P=B[:Q]    --rewrite sendmsg:A:P=B[:Q]\n\n\
HOOKS: ingress egress sock_create sock_release bind4 bind6 post_bind4\n    \
    post_bind6 connect4 connect6 sendmsg4 sendmsg6 recvmsg4 recvmsg6 dev;\n    \
    groups: skb sock bind post_bind connect sendmsg recvmsg all none")]
pub struct CgroupArgs {
    /// The cgroup v2 directory to attach to: absolute, or relative to the cgroup2 mount
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Print an event for each call of these hooks (comma-separated names or groups) [default: all]
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_hooks)]
    pub hooks: Vec<u32>,

    /// Fail matching calls with EPERM (drop matching packets); repeatable, first match wins
    #[arg(long, value_name = "RULE", value_parser = rules::parse_deny)]
    pub deny: Vec<Rule>,

    /// Redirect connect() or UDP sendmsg() from A:P to B:Q in the kernel (repeatable)
    #[arg(long, value_name = "KIND:A:P=B:Q", value_parser = rules::parse_rewrite)]
    pub rewrite: Vec<Rule>,

    /// Print no events: enforce the rules and print the counters at exit
    #[arg(short = 'q', long, conflicts_with = "hooks")]
    pub quiet: bool,

    /// Also print the counters every SECS seconds
    #[arg(short = 'i', long, value_name = "SECS", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    #[command(flatten)]
    pub out: OutputArgs,

    /// Run CMD in a new child cgroup (removed when it exits) and exit with its status
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Which hooks a rule needs attached (bits of [`HOOKS`]). An IPv4 rule needs the *6 hook too:
/// a dual-stack socket reaches IPv4 peers as `::ffff:a.b.c.d` through it.
fn hooks_of(rule: &Rule) -> u32 {
    let pair = |four: &str, six: &str| match rule.family {
        6 => bit(six),
        _ => bit(four) | bit(six),
    };
    // sendmsg rules judge a UDP connect too (it fixes where the sends go); a UDP connect's
    // rewrite is undone for its replies at recvmsg; bind rules judge a named port at bind and
    // port 0 at post_bind.
    match rule.kind {
        Kind::Connect => pair("connect4", "connect6"),
        Kind::Sendmsg => pair("sendmsg4", "sendmsg6") | pair("connect4", "connect6"),
        Kind::RewriteConnect => pair("connect4", "connect6") | pair("recvmsg4", "recvmsg6"),
        Kind::RewriteSendmsg => {
            pair("sendmsg4", "sendmsg6") | pair("recvmsg4", "recvmsg6") | pair("connect4", "connect6")
        }
        Kind::Bind => pair("bind4", "bind6") | pair("post_bind4", "post_bind6"),
        Kind::Egress => bit("egress"),
        Kind::Ingress => bit("ingress"),
        Kind::Sock => bit("sock_create"),
        Kind::Dev => bit("dev"),
    }
}

fn to_kernel(rule: &Rule) -> types::tk_cg_rule {
    let mut r = types::tk_cg_rule {
        kind: rule.kind as u8,
        family: rule.family,
        port_lo: rule.target.ports.0,
        port_hi: rule.target.ports.1,
        sock_family: rule.sock.0,
        sock_type: rule.sock.1,
        sock_proto: rule.sock.2,
        dev_type: rule.dev.0,
        dev_major: rule.dev.1.unwrap_or(u32::MAX),
        dev_minor: rule.dev.2.unwrap_or(u32::MAX),
        dev_access: rule.dev.3,
        ..Default::default()
    };
    if let Some(net) = rule.target.net {
        r.addr = words(&net.masked_bytes());
        r.mask = mask_words(net.prefix);
    }
    if let Some((to, port)) = rule.to {
        r.to_addr = words(&ip_bytes(to));
        r.to_port = port.unwrap_or(0);
    }
    r
}

/// Marks in its kind's prefilter the ports and first address bytes `rule` covers, so that a
/// call outside all of them skips the walk of that kind's rules (struct tk_cg_prefilter).
fn prefilter(f: &mut types::tk_cg_prefilter, rule: &Rule) {
    let shift = 6; // TK_CG_PORT_BUCKET_SHIFT
    let (lo, hi) = rule.target.ports;
    for bucket in usize::from(lo >> shift)..=usize::from(hi >> shift) {
        f.ports[bucket / 8] |= 1 << (bucket % 8);
    }
    let mut mark = |family: usize, first: u8, prefix: u8| {
        let mask = if prefix >= 8 { 0xff } else { !(0xffu8.checked_shr(u32::from(prefix)).unwrap_or(0)) };
        for byte in 0..=255u8 {
            if byte & mask == first & mask {
                f.first_byte[family][usize::from(byte / 8)] |= 1 << (byte % 8);
            }
        }
    };
    match rule.target.net {
        None => {
            mark(0, 0, 0);
            mark(1, 0, 0);
        }
        Some(net) => mark(usize::from(!net.is_ipv4()), net.masked_bytes()[0], net.prefix),
    }
}

/// How programs of `ty` learn their task on this kernel (`enum tk_cg_task_mode`).
fn task_mode(ty: ProgramType) -> u8 {
    let has = |f| ty.is_helper_supported(f).unwrap_or(false);
    if has(sys::BPF_FUNC_get_current_pid_tgid) && has(sys::BPF_FUNC_get_current_comm) {
        types::tk_cg_task_mode::TK_TASK_HELPERS.0 as u8
    } else if has(sys::BPF_FUNC_get_current_task) && has(sys::BPF_FUNC_probe_read_kernel) {
        types::tk_cg_task_mode::TK_TASK_CURRENT.0 as u8
    } else {
        types::tk_cg_task_mode::TK_TASK_NONE.0 as u8
    }
}

pub fn run(args: CgroupArgs) -> Result<i32, Error> {
    let target_given = args.cgroup.is_some() as u8 + !args.command.is_empty() as u8;
    if target_given != 1 {
        let (msg, hint) = if target_given == 0 {
            ("give the processes to watch: --cgroup PATH or -- CMD", "e.g. `tracekit cgroup -- curl http://127.0.0.1/`")
        } else {
            (
                "--cgroup and -- CMD both name the processes: give one",
                "drop --cgroup to run CMD in a new cgroup, or drop -- CMD to watch the cgroup",
            )
        };
        return Err(Error::usage(msg, Some(hint.to_owned())));
    }
    let mut rules: Vec<Rule> = args.deny.iter().chain(&args.rewrite).cloned().collect();
    for (i, r) in rules.iter_mut().enumerate() {
        r.number = i + 1;
    }
    // The kernel's order: by kind, each kind's in the order given (a hook walks only its kinds).
    rules.sort_by_key(|r| r.kind as u8);
    if rules.len() > MAX_RULES {
        return Err(Error::usage(
            format!("at most {MAX_RULES} rules (--deny and --rewrite together), got {}", rules.len()),
            Some("join addresses into prefixes (10.0.0.0/8) and ports into ranges (1-1023)".to_owned()),
        ));
    }
    // A reply is undone by its source alone: two rewrites to one address and port could not
    // tell whose reply it is.
    for (i, a) in args.rewrite.iter().enumerate() {
        if let Some(b) = args.rewrite[..i].iter().find(|b| b.to == a.to) {
            return Err(Error::usage(
                format!(
                    "`{}` and `{}` rewrite to the same address: replies from it could not be told apart",
                    b.text, a.text
                ),
                Some("give each rewrite its own new address or port".to_owned()),
            ));
        }
    }
    let observe = if args.quiet {
        0
    } else if args.hooks.is_empty() {
        ALL_HOOKS
    } else {
        args.hooks.iter().fold(0, |a, b| a | b)
    };
    let needed = rules.iter().map(hooks_of).fold(observe, |a, b| a | b);
    if needed == 0 {
        return Err(Error::usage(
            "nothing to do: no hook to observe and no rule",
            Some("drop -q/--hooks none to see events, or give --deny/--rewrite rules".to_owned()),
        ));
    }

    let mut rt = Runtime::for_packets(args.out.clone())?;
    let root = cgroup2_root()?;
    // --cgroup is checked before anything is loaded; the transient cgroup of -- CMD is made
    // after the load, once a signal no longer ends the process where it stands (which would
    // leave the directory behind).
    let given = args.cgroup.as_deref().map(cgroup_dir).transpose()?.map(|(dir, _)| dir);
    let transport = rt.step("transport", || rt.transport())?;
    rt.say(format_args!(
        "plan: cgroup {}, hooks {}, events from {}, {} rules; transport {transport:?}",
        given.as_ref().map_or("(transient, for -- CMD)".to_owned(), |d| d.display().to_string()),
        hook_names(needed),
        if observe == 0 { "none".to_owned() } else { hook_names(observe) },
        rules.len()
    ));

    let mut storage = MaybeUninit::uninit();
    let skel = open_load(&rt, &rules, observe, needed, transport, &mut storage)?;
    let transient = match &given {
        Some(_) => None,
        // The rules confine CMD only while tracekit runs: it dies with tracekit.
        None => Some(rt.command_in_cgroup(&root, &args.command)?),
    };
    let dir = match (&given, &transient) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("one target is given"),
    };
    let printer = CgroupPrinter::new(&skel, &dir, &rules, needed, observe != 0, args.interval)
        .ending_with(args.cgroup.is_some().then(|| dir.clone()));
    let verbose = rt.out.verbose > 0;
    // The links are held here, not by the run: the rules must hold until the last process of a
    // transient cgroup is gone, which is after the run (CMD's grace period after Ctrl-C, the
    // processes CMD left behind).
    let links = RefCell::new(Vec::new());
    let code = rt.stream(&skel, transport, printer, |skel| {
        *links.borrow_mut() = attach(skel, needed, &dir, verbose)?;
        Ok(())
    });
    if let Some(t) = transient {
        t.finish(links);
    }
    code
}

fn hook_names(bits: u32) -> String {
    let names: Vec<&str> = HOOKS.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, h)| h.0).collect();
    if bits == ALL_HOOKS { "all".to_owned() } else { names.join(",") }
}

fn open_load<'o>(
    rt: &Runtime,
    rules: &[Rule],
    observe: u32,
    needed: u32,
    transport: crate::runtime::Transport,
    storage: &'o mut MaybeUninit<libbpf_rs::OpenObject>,
) -> Result<CgroupSkel<'o>, Error> {
    let mut open = rt.open("cgroup", CgroupSkelBuilder::default(), storage)?;
    rt.configure_transport(&mut open, transport)?;
    let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
    ro.tk_cg_config.observe = observe;
    let starts = &mut ro.tk_cg_config.kind_start;
    for (k, start) in starts.iter_mut().enumerate() {
        *start = rules.iter().filter(|r| (r.kind as usize) < k).count() as u16;
    }
    let modes = [ProgramType::CgroupSockAddr, ProgramType::CgroupSock, ProgramType::CgroupDevice].map(task_mode);
    [ro.tk_cg_config.task_sock_addr, ro.tk_cg_config.task_sock, ro.tk_cg_config.task_dev] = modes;
    let mode_name = |m: u8| match m {
        1 => "helpers",
        2 => "current task",
        _ => "none",
    };
    rt.say(format_args!(
        "task of a call (sock_addr, sock, dev): {}, {}, {}",
        mode_name(modes[0]),
        mode_name(modes[1]),
        mode_name(modes[2])
    ));
    for rule in rules {
        if let Some(f) = ro.tk_cg_prefilter.get_mut(rule.kind as usize) {
            prefilter(f, rule);
        }
    }
    assert_eq!(ro.tk_cg_rules.len(), MAX_RULES, "MAX_RULES follows TK_CG_MAX_RULES");
    for (slot, rule) in ro.tk_cg_rules.iter_mut().zip(rules) {
        *slot = to_kernel(rule);
    }
    load_only(&mut open, needed);
    rt.load("cgroup", open)
}

/// Loads only the programs of the hooks in `needed`.
fn load_only(open: &mut OpenCgroupSkel<'_>, needed: u32) {
    for mut prog in open.open_object_mut().progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        let wanted = HOOKS.iter().position(|h| h.1 == name).is_some_and(|i| needed & (1 << i) != 0);
        prog.set_autoload(wanted);
    }
}

fn attach(skel: &CgroupSkel<'_>, needed: u32, dir: &Path, verbose: bool) -> Result<Vec<Attachment>, Error> {
    let mut out = Vec::new();
    for prog in skel.object().progs() {
        let name = prog.name().to_string_lossy().into_owned();
        let Some((_, prog_name, attach_type)) =
            HOOKS.iter().enumerate().find(|(i, h)| h.1 == name && needed & (1 << i) != 0).map(|(_, h)| *h)
        else {
            continue;
        };
        let att = attach_cgroup(prog.as_fd(), prog_name, dir, attach_type)?;
        if verbose {
            eprintln!("tracekit: {}", att.describe());
        }
        out.push(att);
    }
    Ok(out)
}

/// Per-hook calls, denials and rewrites, and per-rule decisions, summed over CPUs.
struct Counts<'a> {
    hooks: &'a MapMut<'a>,
    rule_hits: &'a MapMut<'a>,
}

impl Counts<'_> {
    fn sum(map: &MapMut<'_>, key: u32, fields: usize) -> [u64; 3] {
        let mut out = [0u64; 3];
        let Ok(Some(per_cpu)) = map.lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY) else { return out };
        for value in &per_cpu {
            for (slot, bytes) in out.iter_mut().zip(value.chunks_exact(8)).take(fields) {
                *slot += u64::from_ne_bytes(bytes.try_into().expect("8 bytes"));
            }
        }
        out
    }

    fn hook(&self, hook: usize) -> [u64; 3] {
        Self::sum(self.hooks, hook as u32, 3)
    }

    fn rule(&self, index: usize) -> u64 {
        Self::sum(self.rule_hits, index as u32, 1)[0]
    }
}

pub struct CgroupPrinter<'a> {
    counts: Counts<'a>,
    dir: String,
    rules: &'a [Rule],
    attached: u32,
    prints: bool,
    interval: Every,
    /// `--cgroup PATH`: the run ends when it is removed (its links are gone with it).
    watch: Option<PathBuf>,
}

impl<'a> CgroupPrinter<'a> {
    fn new(
        skel: &'a CgroupSkel<'a>,
        dir: &Path,
        rules: &'a [Rule],
        attached: u32,
        prints: bool,
        interval: Option<Duration>,
    ) -> Self {
        CgroupPrinter {
            counts: Counts { hooks: &skel.maps.tk_cg_counts, rule_hits: &skel.maps.tk_cg_rule_hits },
            dir: dir.display().to_string(),
            rules,
            attached,
            prints,
            interval: Every::new(interval),
            watch: None,
        }
    }

    /// Ends the run when `dir` disappears.
    fn ending_with(mut self, dir: Option<PathBuf>) -> Self {
        self.watch = dir;
        self
    }

    fn write_counters(&mut self, out: &mut Sink) -> io::Result<()> {
        let mut text = Vec::new();
        let mut total = 0;
        for (i, (name, ..)) in HOOKS.iter().enumerate() {
            if self.attached & (1 << i) == 0 {
                continue;
            }
            let [calls, denied, rewritten] = self.counts.hook(i);
            if out.json {
                out.obj_start("hook_counts")?;
                out.field_str("hook", name)?;
                out.field_u64("calls", calls)?;
                out.field_u64("denied", denied)?;
                out.field_u64("rewritten", rewritten)?;
                out.obj_end()?;
            } else if calls > 0 {
                total += calls;
                let mut t = format!("{name} {calls}");
                if denied > 0 {
                    t += &format!(" ({denied} denied)");
                }
                if rewritten > 0 {
                    t += &format!(" ({rewritten} rewritten)");
                }
                text.push(t);
            }
        }
        if !out.json {
            let each = if text.is_empty() { String::new() } else { format!(": {}", text.join(", ")) };
            eprintln!("tracekit: cgroup {}: {total} {}{each}", self.dir, if total == 1 { "call" } else { "calls" });
        }
        let mut by_number: Vec<(usize, &Rule)> = self.rules.iter().enumerate().collect();
        by_number.sort_by_key(|(_, r)| r.number);
        for (i, rule) in by_number {
            let hits = self.counts.rule(i);
            if out.json {
                out.obj_start("rule")?;
                out.field_u64("index", rule.number as u64)?;
                out.field_str("rule", &rule.text)?;
                out.field_u64("hits", hits)?;
                out.obj_end()?;
            } else {
                eprintln!(
                    "tracekit: rule {} `{}`: {hits} {}",
                    rule.number,
                    rule.text,
                    if hits == 1 { "call" } else { "calls" }
                );
            }
        }
        Ok(())
    }

    fn hook_name(ev: &CgroupEvent) -> &'static str {
        HOOKS.get(ev.hook as usize).map_or("?", |h| h.0)
    }

    fn verdict(ev: &CgroupEvent) -> &'static str {
        match ev.verdict {
            1 => "deny",
            2 => "rewrite",
            _ => "allow",
        }
    }

    fn is(ev: &CgroupEvent, hooks: &[&str]) -> bool {
        hooks.contains(&Self::hook_name(ev))
    }

    /// The address a row shows: the destination of connect/sendmsg/skb/release, the source a
    /// reply came from for recvmsg, the local address of bind/post_bind.
    fn main_endpoint(ev: &CgroupEvent) -> Option<Endpoint> {
        if ev.family == 0 || Self::is(ev, &["sock_create", "sock_release"]) {
            return None;
        }
        Some(if Self::is(ev, &["bind4", "bind6", "post_bind4", "post_bind6"]) {
            Endpoint::new(ip_of(ev.family, &ev.laddr), ev.lport)
        } else {
            Endpoint::new(ip_of(ev.family, &ev.raddr), ev.rport)
        })
    }
}

fn sock_type_name(t: u16) -> &'static str {
    match t {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        5 => "seqpacket",
        _ => "",
    }
}

fn dev_type_name(t: u8) -> &'static str {
    match t {
        1 => "b",
        2 => "c",
        _ => "?",
    }
}

/// `rwm` letters of BPF_DEVCG_ACC_* bits, into a stack buffer.
fn access_letters(bits: u8) -> ([u8; 3], usize) {
    let mut out = [0u8; 3];
    let mut n = 0;
    for (b, c) in [(2, b'r'), (4, b'w'), (1, b'm')] {
        if bits & b != 0 {
            out[n] = c;
            n += 1;
        }
    }
    (out, n)
}

const COLUMNS: &str = "HOOK             PID COMM            PROTO ADDRESS                 VERDICT DETAIL";

impl Printer for CgroupPrinter<'_> {
    type Event = CgroupEvent;
    const COLUMNS: &'static str = COLUMNS;

    fn header(&self, ev: &CgroupEvent) -> EventHeader<'_> {
        EventHeader::Hook(HookHeader { ts_ns: ev.ts_ns, cpu: ev.cpu, pid: ev.pid, comm: ev.comm.map(|c| c as u8) })
    }

    fn row(&mut self, ev: &CgroupEvent, out: &mut Sink) -> io::Result<()> {
        let w = out.w();
        fastfmt::col(w, Self::hook_name(ev).as_bytes(), 12)?;
        if ev.pid == 0 {
            fastfmt::col(w, b"      -", 7)?;
            fastfmt::col(w, b"-", 15)?;
        } else {
            write!(w, "{:>7} ", ev.pid)?;
            fastfmt::col(w, c_chars(&ev.comm).as_bytes(), 15)?;
        }
        let proto = match (ev.family, ev.hook) {
            (0, _) => "-",
            _ => match proto_name(ev.proto) {
                "" => sock_type_name(ev.sock_type),
                p => p,
            },
        };
        let mut upper = [0u8; 8];
        let n = proto.len().min(8);
        upper[..n].copy_from_slice(&proto.as_bytes()[..n]);
        upper[..n].make_ascii_uppercase();
        fastfmt::col(w, &upper[..n], 5)?;
        match Self::main_endpoint(ev) {
            Some(e) => fastfmt::col(w, e.as_str().as_bytes(), 23)?,
            None if Self::is(ev, &["dev"]) => {
                let mut buf = [0u8; 32];
                let mut c = io::Cursor::new(&mut buf[..]);
                write!(c, "{} {}:{}", dev_type_name(ev.dev_type), ev.dev_major, ev.dev_minor)?;
                let n = c.position() as usize;
                fastfmt::col(w, &buf[..n], 23)?
            }
            None => fastfmt::col(w, b"-", 23)?,
        }
        w.write_all(Self::verdict(ev).as_bytes())?;
        // DETAIL (what else the call says), after the verdict padded to its column; nothing
        // trails a row without one.
        let mut lead = Some(8 - Self::verdict(ev).len());
        let mut next = |w: &mut dyn io::Write| match lead.take() {
            Some(pad) => w.write_all(&b"        "[..pad]),
            None => w.write_all(b" "),
        };
        if Self::is(ev, &["dev"]) {
            next(w)?;
            let (a, n) = access_letters(ev.dev_access);
            w.write_all(&a[..n])?;
        } else if Self::is(ev, &["sock_create", "sock_release"]) {
            next(w)?;
            w.write_all(if ev.family == 6 { b"inet6 " } else { b"inet " })?;
            w.write_all(sock_type_name(ev.sock_type).as_bytes())?;
        } else if Self::is(ev, &["ingress", "egress"]) {
            next(w)?;
            fastfmt::int(w, ev.len)?;
            w.write_all(b" bytes")?;
        }
        if ev.verdict == 2 {
            next(w)?;
            w.write_all(if Self::is(ev, &["recvmsg4", "recvmsg6"]) { b"shown as " } else { b"to " })?;
            w.write_all(Endpoint::new(ip_of(ev.family, &ev.naddr), ev.nport).as_str().as_bytes())?;
        }
        if let Some(rule) = usize::try_from(ev.rule).ok().and_then(|i| self.rules.get(i)) {
            next(w)?;
            w.write_all(b"(")?;
            w.write_all(rule.text.as_bytes())?;
            w.write_all(b")")?;
        }
        Ok(())
    }

    fn json(&mut self, ev: &CgroupEvent, out: &mut Sink) -> io::Result<()> {
        out.field_str("hook", Self::hook_name(ev))?;
        out.field_str("verdict", Self::verdict(ev))?;
        if let Some(rule) = usize::try_from(ev.rule).ok().and_then(|i| self.rules.get(i)) {
            out.field_str("rule", &rule.text)?;
        }
        if Self::is(ev, &["dev"]) {
            out.field_str("dev_type", if ev.dev_type == 1 { "block" } else { "char" })?;
            out.field_u64("major", ev.dev_major.into())?;
            out.field_u64("minor", ev.dev_minor.into())?;
            let (a, n) = access_letters(ev.dev_access);
            out.field_str("access", std::str::from_utf8(&a[..n]).unwrap_or(""))?;
            return Ok(());
        }
        if ev.family == 0 {
            return Ok(());
        }
        out.field_str("family", if ev.family == 4 { "ipv4" } else { "ipv6" })?;
        match proto_name(ev.proto) {
            "" => out.field_u64("proto", ev.proto.into())?,
            p => out.field_str("proto", p)?,
        }
        if ev.sock_type != 0 {
            out.field_str("sock_type", sock_type_name(ev.sock_type))?;
        }
        if Self::is(ev, &["ingress", "egress"]) {
            out.field_u64("len", ev.len.into())?;
        }
        if !Self::is(ev, &["sock_create", "sock_release"]) {
            out.field_display("laddr", ip_of(ev.family, &ev.laddr))?;
            out.field_u64("lport", ev.lport.into())?;
            if !Self::is(ev, &["bind4", "bind6", "post_bind4", "post_bind6"]) {
                out.field_display("raddr", ip_of(ev.family, &ev.raddr))?;
                out.field_u64("rport", ev.rport.into())?;
            }
        }
        if ev.verdict == 2 {
            out.field_display("new_raddr", ip_of(ev.family, &ev.naddr))?;
            out.field_u64("new_rport", ev.nport.into())?;
        }
        Ok(())
    }

    fn prints_events(&self) -> bool {
        self.prints
    }

    fn tick(&mut self, out: &mut Sink) -> io::Result<()> {
        if let Some(dir) = &self.watch
            && !dir.exists()
        {
            eprintln!("tracekit: cgroup {} was removed: its programs went with it", dir.display());
            self.watch = None;
            crate::runtime::signals::request_stop();
        }
        if !self.interval.due() {
            return Ok(());
        }
        self.write_counters(out)
    }

    fn finish(&mut self, out: &mut Sink) -> io::Result<()> {
        self.write_counters(out)
    }
}

use std::io::Write as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn may_fit(f: &types::tk_cg_prefilter, v6: bool, first: u8, port: u16) -> bool {
        let bucket = usize::from(port >> 6);
        f.ports[bucket / 8] & (1 << (bucket % 8)) != 0
            && f.first_byte[usize::from(v6)][usize::from(first / 8)] & (1 << (first % 8)) != 0
    }

    #[test]
    fn prefilter_lets_every_fitting_call_through() {
        let mut f = types::tk_cg_prefilter::default();
        prefilter(&mut f, &rules::parse_deny("connect:10.0.0.0/8:443").unwrap());
        assert!(may_fit(&f, false, 10, 443));
        assert!(!may_fit(&f, false, 127, 443), "another first byte");
        assert!(!may_fit(&f, false, 10, 8080), "another port bucket");
        assert!(!may_fit(&f, true, 10, 443), "IPv6 is another family");
        prefilter(&mut f, &rules::parse_deny("connect:96.0.0.0/3:1000-1100").unwrap());
        assert!((96..128).all(|b| may_fit(&f, false, b, 1050)), "a short prefix covers its range");
        assert!(!may_fit(&f, false, 128, 1050));
        let mut any = types::tk_cg_prefilter::default();
        prefilter(&mut any, &rules::parse_deny("egress:*").unwrap());
        assert!((0..=255).all(|b| may_fit(&any, false, b, 0) && may_fit(&any, true, b, 65535)));
    }
}
