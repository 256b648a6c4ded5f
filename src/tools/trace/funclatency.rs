//! `tracekit funclatency BINARY:SYMBOL…`: how long user functions take, from entry to return,
//! as in-kernel histograms (runtime/hist.rs) per function, and per process or comm if asked:
//! BCC's funclatency for uprobes, with the glob resolution and attach code of `uprobe`.
//!
//! Overhead: two uprobe traps per call (entry and return), a hash lookup on each and three
//! atomic adds on the return; nothing is streamed.
//!
//! Nesting: each thread keeps a stack of entry times per function (16 deep), so a recursive or
//! re-entered function times every level, innermost first; deeper levels are counted, not
//! timed. Calls that never return (a longjmp past them, a thread ending inside) stay on their
//! thread's stack in an LRU map that evicts the oldest threads first; those still pending at the
//! end are reported, as are returns whose entry was not seen.

use std::io;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::error::Error;
use crate::runtime::attach::tracing::{self, UprobeTarget};
use crate::runtime::hist::{self, Scale, TimeUnit};
use crate::runtime::output::Sink;
use crate::runtime::probe::Feature;
use crate::runtime::resolve::{self, Symbol};
use crate::runtime::{CommonArgs, Runtime, Transport, TransportLoaded, kernel, lost, stackcount};
use libbpf_rs::MapCore;

crate::tool_skel!("funclatency", OpenFunclatencySkel, FunclatencySkel, tk_fl_stack);
const _: () = assert!(size_of::<skel::types::tk_hist_key>() == size_of::<hist::HistKey>());
const _: () = assert!(size_of::<skel::types::tk_hist>() == size_of::<hist::HistValue>());
use skel::{FunclatencySkel, FunclatencySkelBuilder};

/// Must match funclatency.h.
const MAX_PROBES: usize = 64;
const NO_ENTRY: u32 = 0;
const TOO_DEEP: u32 = 1;
const DEPTH: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// One histogram per function
    Func,
    /// Per function and process (pid and comm)
    Pid,
    /// Per function and comm
    Comm,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit funclatency libc:malloc -- ls          # malloc's latency in ls, in ns\n    \
    tracekit funclatency /bin/bash:readline -m      # in milliseconds\n    \
    tracekit funclatency 'libssl:SSL_*' --usecs -p 1234 -i 5   # a table every 5 s\n    \
    tracekit funclatency ./app:handle --by pid --json\n\n\
BINARY is a path, a program on PATH, or a library name (libc, libssl), as for `tracekit uprobe`.\n\
Each --interval prints what the interval added (--cumulative: everything since the start).\n\
A recursive function has every level timed (16 deep per thread).")]
pub struct FunclatencyArgs {
    /// BINARY:SYMBOL (SYMBOL may be a glob: `libc:mem*`; at most 64 functions)
    #[arg(required = true, value_name = "BINARY:SYMBOL")]
    pub specs: Vec<String>,

    /// Unit of the latencies (BCC's default: nanoseconds)
    #[arg(long, value_enum, default_value_t = TimeUnit::Nsecs, value_name = "UNIT")]
    pub unit: TimeUnit,

    /// Microseconds (--unit us; `-u` is --uid here)
    #[arg(long, conflicts_with_all = ["unit", "msecs"])]
    pub usecs: bool,

    /// Milliseconds (--unit ms)
    #[arg(short = 'm', long, conflicts_with = "unit")]
    pub msecs: bool,

    /// Histograms per function, or per function and process or comm
    #[arg(long, value_enum, default_value_t = By::Func)]
    pub by: By,

    /// Linear buckets STEP units wide (64 of them, then one open-ended) instead of log2
    #[arg(long, value_name = "STEP", value_parser = clap::value_parser!(u64).range(1..))]
    pub linear: Option<u64>,

    /// Print the histograms every SECS as well as at the end
    #[arg(short = 'i', long, value_name = "SECS", value_parser = crate::runtime::cli::task::parse_duration)]
    pub interval: Option<Duration>,

    /// With --interval: totals since the start instead of each interval's
    #[arg(long)]
    pub cumulative: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: FunclatencyArgs) -> Result<i32, Error> {
    let started = Instant::now();
    let unit = match (args.usecs, args.msecs) {
        (true, _) => TimeUnit::Usecs,
        (_, true) => TimeUnit::Msecs,
        _ => args.unit,
    };
    let scale = args.linear.map_or(Scale::Log2, |step| Scale::Linear { step });
    let specs = args.specs.iter().map(|s| resolve::parse_spec(s)).collect::<Result<Vec<_>, _>>()?;
    if let Some((s, _)) = args.specs.iter().zip(&specs).find(|(_, sp)| sp.offset != 0) {
        return Err(Error::usage(
            format!("`{s}`: funclatency times whole functions, from their first instruction"),
            Some("drop the +OFFSET (`tracekit uprobe` traces an offset inside a function)".into()),
        ));
    }
    let mut rt = Runtime::new(args.common.clone())?;
    rt.counts_in_kernel("funclatency", "latencies")?;
    let pid = match rt.filter.pids.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let (syms, cookies) = rt.plan(|| {
        let syms = resolve::symbols(&rt, &specs, pid, MAX_PROBES)?;
        let cookies = rt.probes.get(Feature::AttachCookie).is_supported();
        if syms.len() > 1 && !cookies {
            return Err(Error::Unsupported {
                feature: "attach_cookie",
                reason: "telling several functions apart needs bpf_get_attach_cookie (Linux 5.15+)".into(),
                hint: Some("time one function per tracekit process".into()),
            });
        }
        for s in &syms {
            rt.say(format_args!("plan: uprobe+uretprobe {} at {}+{:#x}", s.label, s.path.display(), s.file_offset));
        }
        Ok((syms, cookies))
    })?;
    // Aggregated in maps, not streamed: the event channel only needs to exist.
    let transport = Transport::RingBuf { bytes: 4096 };
    let mut storage = MaybeUninit::uninit();
    let skel: FunclatencySkel<'_> =
        rt.open_load("funclatency", FunclatencySkelBuilder::default(), &mut storage, transport, |open| {
            let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
            ro.tk_fl.unit_ns = unit.ns();
            ro.tk_fl.have_cookie = cookies as u32;
            ro.tk_fl.self_tgid = std::process::id();
            ro.tk_fl.by_pid = (args.by == By::Pid) as u32;
            ro.tk_fl.by_comm = (args.by == By::Comm) as u32;
            (ro.tk_hist_cfg.kind, ro.tk_hist_cfg.step) = scale.config();
            Ok(())
        })?;
    let (mut child, _follow) = rt.start_child(&skel)?;
    let (entries, returns) = rt.step("attach", || {
        let (mut entries, mut returns) = (Vec::new(), Vec::new());
        for (id, s) in syms.iter().enumerate() {
            let target = UprobeTarget { label: &s.label, path: &s.path, file_offset: s.file_offset };
            returns.push(tracing::uprobe(&skel.progs.uretprobe__funclat, &target, pid, true, id as u64)?);
            entries.push(tracing::uprobe(&skel.progs.uprobe__funclat, &target, pid, false, id as u64)?);
        }
        Ok::<_, Error>((entries, returns))
    })?;
    set_on(&skel, true)?;
    rt.attached();
    if let Some(c) = child.as_mut() {
        c.release()?;
    }
    let mut sink = Sink::new(rt.out.json, rt.out.timestamp, kernel::monotonic_to_realtime_ns());
    let mut reader = hist::Reader::new(args.cumulative);
    let mut timed = 0u64;
    let mut show = |sink: &mut Sink, timed: &mut u64| {
        print(&skel.maps.tk_hists, &mut reader, sink, &syms, args.by, unit, scale, timed)
    };
    let write_error = hist::print_every(&rt, child.as_mut(), args.interval, || show(&mut sink, &mut timed));
    // Stopped before detaching: the calls in flight now stay pending, none is half-seen.
    let stopped = set_on(&skel, false);
    drop(entries);
    drop(returns);
    stopped?;
    let code = child.map_or(0, |c| c.finish());
    let untimed = [
        lost::read_percpu_u64(&skel.maps.tk_fl_counters, NO_ENTRY),
        lost::read_percpu_u64(&skel.maps.tk_fl_counters, TOO_DEEP),
        pending(&skel.maps.tk_fl_entries),
    ];
    let dropped = lost::read_drops(skel.drops_map());
    let r = match write_error {
        Some(e) => Err(e),
        None => show(&mut sink, &mut timed)
            .and_then(|()| {
                if !sink.json {
                    return Ok(());
                }
                let extra = [("no_entry", untimed[0]), ("too_deep", untimed[1]), ("pending", untimed[2])];
                stackcount::summary(&mut sink, timed, dropped, started, &extra)
            })
            .and_then(|()| sink.flush()),
    };
    if !rt.out.json {
        let [no_entry, too_deep, pending] = untimed;
        if no_entry > 0 {
            eprintln!("tracekit: {no_entry} returns without their entry (called before tracing started) not timed");
        }
        if too_deep > 0 {
            eprintln!("tracekit: {too_deep} calls nested more than {DEPTH} deep not timed");
        }
        if pending > 0 {
            eprintln!("tracekit: {pending} calls had not returned at the end");
        }
    }
    if dropped > 0 {
        eprintln!("tracekit: {dropped} latencies not counted: the histogram table was full");
    }
    match r {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
        _ => Ok(code),
    }
}

/// Starts or stops the timing (`tk_fl_on`).
fn set_on(skel: &FunclatencySkel<'_>, on: bool) -> Result<(), Error> {
    skel.maps
        .tk_fl_on
        .update(&0u32.to_ne_bytes(), &u32::from(on).to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .map_err(|e| Error::runtime(format!("switching the timing on or off: {e}"), None))
}

/// Calls entered and not returned, over every thread's stack of pending entries.
fn pending(entries: &libbpf_rs::MapMut<'_>) -> u64 {
    let depth_at = std::mem::offset_of!(skel::types::tk_fl_stack, depth);
    entries
        .keys()
        .filter_map(|k| entries.lookup(&k, libbpf_rs::MapFlags::ANY).ok()?)
        .filter_map(|v| Some(u64::from(u32::from_ne_bytes(v.get(depth_at..depth_at + 4)?.try_into().ok()?))))
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn print(
    map: &libbpf_rs::MapMut<'_>,
    reader: &mut hist::Reader,
    sink: &mut Sink,
    syms: &[Symbol],
    by: By,
    unit: TimeUnit,
    scale: Scale,
    timed: &mut u64,
) -> io::Result<()> {
    for (key, h) in reader.take(map) {
        *timed += h.count;
        let sym = syms.get(key.idx as usize).unwrap_or(&syms[0]);
        let comm = hist::key_comm(&key);
        if sink.json {
            hist::write_json(
                sink,
                |s| {
                    s.field_str("probe", &sym.label)?;
                    s.field_str("func", &sym.func)?;
                    if by == By::Pid {
                        s.field_u64("pid", key.pid.into())?;
                    }
                    if by != By::Func {
                        s.field_str("comm", &comm)?;
                    }
                    Ok(())
                },
                unit.name(),
                scale,
                &h,
            )?;
        } else {
            let title = match by {
                By::Func => sym.label.clone(),
                By::Comm => format!("{} of {comm}", sym.label),
                By::Pid => format!("{} of {comm} ({})", sym.label, key.pid),
            };
            hist::write_table(sink.w(), &title, unit.name(), scale, &h)?;
        }
    }
    sink.flush()
}
