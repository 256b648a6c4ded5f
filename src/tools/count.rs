//! `tracekit count CAT:NAME`: how often a tracepoint fires, per comm or per process, counted
//! in the kernel (a hash map read at the end or every --interval) instead of streaming events.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use libbpf_rs::{MapCore, MapFlags};

use crate::error::Error;
use crate::runtime::output::{Sink, c_chars};
use crate::runtime::{CommonArgs, CommonLoaded, Runtime, Transport, kernel, lost};

crate::tool_skel!("count", OpenCountSkel, CountSkel, tk_count_key);
use skel::{CountSkel, CountSkelBuilder, OpenCountSkel, types};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// Task command name
    Comm,
    /// Process (pid and comm)
    Pid,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit count syscalls:sys_enter_openat            # opens per comm until Ctrl-C\n    \
    tracekit count sched:sched_switch --by pid -d 5\n    \
    tracekit count syscalls:sys_enter_write --interval 1   # a table every second")]
pub struct CountArgs {
    /// The tracepoint to count (CATEGORY:NAME)
    #[arg(value_name = "CAT:NAME")]
    pub target: String,

    /// What to count by
    #[arg(long, value_enum, default_value_t = By::Comm)]
    pub by: By,

    /// Print (and reset) the counts every SECS as well as at the end
    #[arg(short = 'i', long, value_name = "SECS", value_parser = crate::runtime::args::parse_duration)]
    pub interval: Option<Duration>,

    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: CountArgs) -> Result<i32, Error> {
    let rt = Runtime::new(args.common.clone())?;
    if rt.args.count.is_some() {
        return Err(Error::usage("count aggregates in the kernel: --count does not apply", Some("use --duration".into())));
    }
    let tracefs = kernel::ensure_tracefs()?;
    let format = crate::tools::tracepoint::resolve(&tracefs, std::slice::from_ref(&args.target))?
        .pop()
        .expect("one tracepoint");
    if format.name != args.target {
        return Err(Error::usage("count takes one tracepoint, not a glob", None));
    }
    let transport = Transport::RingBuf { bytes: 4096 };
    let mut storage = MaybeUninit::uninit();
    let mut open: OpenCountSkel<'_> = rt.open("count", CountSkelBuilder::default(), &mut storage)?;
    rt.configure(&mut open, transport)?;
    open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load").tk_count_by_pid = (args.by == By::Pid) as u32;
    let skel: CountSkel<'_> = rt.load("count", open)?;
    let (mut child, _follow) = rt.start_child(&skel)?;
    let (cat, name) = format.name.split_once(':').expect("category:name");
    let link = rt
        .step("attach", || skel.progs.count__tp.attach_tracepoint(libbpf_rs::TracepointCategory::Custom(cat.to_owned()), name))
        .map_err(|source| Error::Attach { what: format!("tracepoint {}", format.name), hint: None, source })?;
    rt.attached();
    if let Some(c) = child.as_mut() {
        c.release()?;
    }
    let mut sink = Sink::new(rt.args.json, rt.args.timestamp, kernel::monotonic_to_realtime_ns());
    let mut write_error = None;
    let mut next = args.interval.map(|i| Instant::now() + i);
    rt.wait(child.as_mut(), || {
        if let (Some(t), Some(i)) = (next.as_mut(), args.interval) {
            if Instant::now() >= *t {
                *t += i;
                if let Err(e) = print(&skel, &mut sink, args.by, true) {
                    write_error.get_or_insert(e);
                }
            }
        }
    });
    drop(link);
    let code = child.map_or(0, |c| c.finish());
    let r = print(&skel, &mut sink, args.by, false).and_then(|()| sink.flush());
    let dropped = lost::read_drops(skel.drops_map());
    if dropped > 0 {
        eprintln!("tracekit: {dropped} events not counted: the table was full");
    }
    match write_error.map_or(r, Err) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
        _ => Ok(code),
    }
}

/// The counts, largest first; `reset` empties the table for the next interval.
fn print(skel: &CountSkel<'_>, sink: &mut Sink, by: By, reset: bool) -> io::Result<()> {
    let mut rows: Vec<(types::tk_count_key, u64)> = Vec::new();
    for k in skel.maps.counts.keys() {
        let mut key = types::tk_count_key::default();
        if plain::copy_from_bytes(&mut key, &k).is_err() {
            continue;
        }
        if let Ok(Some(v)) = skel.maps.counts.lookup(&k, MapFlags::ANY) {
            rows.push((key, u64::from_ne_bytes(v[..8].try_into().expect("u64 count"))));
        }
        if reset {
            let _ = skel.maps.counts.delete(&k);
        }
    }
    rows.sort_by(|a, b| b.1.cmp(&a.1));
    if sink.json {
        for (key, n) in &rows {
            sink.obj_start("count")?;
            if by == By::Pid {
                sink.field_u64("pid", key.pid.into())?;
            }
            sink.field_str("comm", &c_chars(&key.comm))?;
            sink.field_u64("count", *n)?;
            sink.obj_end()?;
        }
    } else {
        let w = sink.w();
        if by == By::Pid {
            writeln!(w, "{:>12} {:<7} COMM", "COUNT", "PID")?;
        } else {
            writeln!(w, "{:>12} COMM", "COUNT")?;
        }
        for (key, n) in &rows {
            if by == By::Pid {
                writeln!(w, "{n:>12} {:<7} {}", key.pid, c_chars(&key.comm))?;
            } else {
                writeln!(w, "{n:>12} {}", c_chars(&key.comm))?;
            }
        }
        writeln!(w)?;
    }
    sink.flush()
}
