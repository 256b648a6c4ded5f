//! `tracekit count CAT:NAME`: how often a tracepoint fires, per comm, process or stack, counted
//! in the kernel (a hash map read at the end or every --interval) instead of streaming events.
//! With `--hist FIELD`: the distribution of one of its integer fields, as in-kernel histograms
//! (runtime/hist.rs) per comm or process.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::runtime::attach::tracing;
use crate::runtime::hist::{self, Scale};
use crate::runtime::output::Sink;
use crate::runtime::resolve;
use crate::runtime::stackcount::{self, Mappings, Stack, StackKey, Style};
use crate::runtime::tracefs::{FieldKind, Format};
use crate::runtime::{CommonArgs, Runtime, TaskLoaded, Transport, TransportLoaded, kernel, lost};
use clap::{Args, ValueEnum};

crate::tool_skel!("count", OpenCountSkel, CountSkel, tk_stack_key);
const _: () = assert!(size_of::<skel::types::tk_stack_key>() == size_of::<StackKey>());
const _: () = assert!(size_of::<skel::types::tk_hist_key>() == size_of::<hist::HistKey>());
const _: () = assert!(size_of::<skel::types::tk_hist>() == size_of::<hist::HistValue>());
use skel::{CountSkel, CountSkelBuilder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// Task command name
    Comm,
    /// Process (pid and comm)
    Pid,
    /// Kernel and user stack (and process), symbolized
    Stack,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit count syscalls:sys_enter_openat            # opens per comm until Ctrl-C\n    \
    tracekit count sched:sched_switch --by pid -d 5\n    \
    tracekit count syscalls:sys_enter_write --interval 1   # a table every second\n    \
    tracekit count block:block_rq_issue --by stack --folded > io.folded   # flame graph\n    \
    tracekit count syscalls:sys_exit_read --hist ret     # bytes per read(), log2 histogram\n    \
    tracekit count syscalls:sys_enter_write --hist count --linear 100 --by pid")]
pub struct CountArgs {
    /// The tracepoint to count (CATEGORY:NAME)
    #[arg(value_name = "CAT:NAME")]
    pub target: String,

    /// What to count by
    #[arg(long, value_enum, default_value_t = By::Comm)]
    pub by: By,

    /// Print (and reset) the counts every SECS as well as at the end
    #[arg(short = 'i', long, value_name = "SECS", value_parser = crate::runtime::cli::task::parse_duration)]
    pub interval: Option<Duration>,

    /// The distribution of this integer field (log2 histograms per --by key) instead of counts
    #[arg(long, value_name = "FIELD")]
    pub hist: Option<String>,

    /// With --hist: linear buckets STEP wide (64 of them, then one open-ended) instead of log2
    #[arg(long, value_name = "STEP", requires = "hist")]
    pub linear: Option<u64>,

    /// With --hist and --interval: print totals since the start instead of each interval's
    #[arg(long, requires = "hist")]
    pub cumulative: bool,

    /// With --by stack: Brendan Gregg's folded format (frames;…;frames count)
    #[arg(short = 'f', long, conflicts_with = "json")]
    pub folded: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: CountArgs) -> Result<i32, Error> {
    let started = Instant::now();
    let mut rt = Runtime::new(args.common.clone())?;
    rt.counts_in_kernel("count", "events")?;
    if args.folded && args.by != By::Stack {
        return Err(Error::usage("--folded prints stacks", Some("add --by stack".into())));
    }
    if args.hist.is_some() && args.by == By::Stack {
        return Err(Error::usage(
            "--hist keeps histograms per comm or process, not per stack",
            Some("use --by comm or --by pid with --hist".into()),
        ));
    }
    if args.linear == Some(0) {
        return Err(Error::usage(
            "--linear 0: a bucket must be at least 1 wide",
            Some("give --linear STEP > 0".into()),
        ));
    }
    let scale = args.linear.map_or(Scale::Log2, |step| Scale::Linear { step });
    rt.stack = args.by == By::Stack;
    let (format, field) = rt.plan(|| {
        let tracefs = kernel::ensure_tracefs()?;
        let mut found = resolve::tracepoints(&tracefs, std::slice::from_ref(&args.target), super::tracepoint::MAX_TPS)?;
        let format = found.pop().expect("one tracepoint");
        if format.name != args.target {
            return Err(Error::usage("count takes one tracepoint, not a glob", None));
        }
        rt.say(format_args!("plan: tracepoint {} (id {}), counted by {:?}", format.name, format.id, args.by));
        let field = args.hist.as_deref().map(|f| hist_field(&format, f)).transpose()?;
        Ok((format, field))
    })?;
    // Counted in maps, not streamed: the event channel only needs to exist.
    let transport = Transport::RingBuf { bytes: 4096 };
    let mut storage = MaybeUninit::uninit();
    let skel: CountSkel<'_> = rt.open_load("count", CountSkelBuilder::default(), &mut storage, transport, |open| {
        let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
        ro.tk_count_by_pid = (args.by != By::Comm) as u32;
        if let Some(f) = &field {
            ro.tk_count_hist_off = f.offset;
            ro.tk_count_hist_size = f.bytes;
            ro.tk_count_hist_signed = f.signed as u32;
            (ro.tk_hist_cfg.kind, ro.tk_hist_cfg.step) = scale.config();
        }
        Ok(())
    })?;
    let (mut child, _follow) = rt.start_child(&skel)?;
    let link = rt.step("attach", || tracing::tracepoint(&skel.progs.count__tp, &format.name, None, None))?;
    rt.attached();
    if let Some(c) = child.as_mut() {
        c.release()?;
    }
    let mut sink = Sink::new(rt.out.json, rt.out.timestamp, kernel::monotonic_to_realtime_ns());
    let mut write_error = None;
    let mut counted = 0;
    let mut next = args.interval.map(|i| Instant::now() + i);
    let mut mappings = Mappings::watching(rt.filter.pids.iter().copied().chain(child.as_ref().map(|c| c.pid())));
    if let Some(f) = &field {
        let mut reader = hist::Reader::new(args.cumulative);
        let mut show = |sink: &mut Sink, counted: &mut u64| {
            print_hists(&skel.maps.tk_hists, &mut reader, sink, &format.name, f, args.by, scale, counted)
        };
        let mut write_error = hist::print_every(&rt, child.as_mut(), args.interval, || show(&mut sink, &mut counted));
        drop(link);
        let code = child.map_or(0, |c| c.finish());
        let dropped = lost::read_drops(skel.drops_map());
        let r = match write_error.take() {
            Some(e) => Err(e),
            None => show(&mut sink, &mut counted)
                .and_then(|()| {
                    if sink.json { stackcount::summary(&mut sink, counted, dropped, started, &[]) } else { Ok(()) }
                })
                .and_then(|()| sink.flush()),
        };
        if dropped > 0 {
            eprintln!("tracekit: {dropped} values not counted: the histogram table was full");
        }
        return match r {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
            _ => Ok(code),
        };
    }
    rt.wait(child.as_mut(), || {
        if args.by == By::Stack {
            mappings.refresh(&skel.maps.counts);
        }
        if let (Some(t), Some(i)) = (next.as_mut(), args.interval)
            && Instant::now() >= *t
        {
            *t += i;
            if let Err(e) = print(&skel, &mut sink, &args, &mut mappings, true, &mut counted) {
                write_error.get_or_insert(e);
            }
        }
    });
    drop(link);
    let code = child.map_or(0, |c| c.finish());
    let dropped = lost::read_drops(skel.drops_map());
    let r = print(&skel, &mut sink, &args, &mut mappings, false, &mut counted)
        .and_then(|()| if sink.json { stackcount::summary(&mut sink, counted, dropped, started, &[]) } else { Ok(()) })
        .and_then(|()| sink.flush());
    if dropped > 0 {
        eprintln!("tracekit: {dropped} events not counted: the table was full");
    }
    match write_error.map_or(r, Err) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
        _ => Ok(code),
    }
}

/// The counts, largest first; `reset` empties the table for the next interval. `counted` adds
/// up the events of every table printed, for the summary.
fn print(
    skel: &CountSkel<'_>,
    sink: &mut Sink,
    args: &CountArgs,
    mappings: &mut Mappings,
    reset: bool,
    counted: &mut u64,
) -> io::Result<()> {
    let rows: Vec<Stack> =
        stackcount::collect(&skel.maps.counts, (args.by == By::Stack).then(|| skel.stacks_map()), mappings, reset);
    *counted += rows.iter().map(|r| r.count).sum::<u64>();
    if args.by == By::Stack {
        let style = Style::of(args.folded, sink.json);
        stackcount::print(&rows, style, sink)?;
    } else if sink.json {
        for row in &rows {
            sink.obj_start("count")?;
            if args.by == By::Pid {
                sink.field_u64("pid", row.pid.into())?;
            }
            sink.field_str("comm", &row.comm)?;
            sink.field_u64("count", row.count)?;
            sink.obj_end()?;
        }
    } else {
        let w = sink.w();
        if args.by == By::Pid {
            writeln!(w, "{:>12} {:<7} COMM", "COUNT", "PID")?;
        } else {
            writeln!(w, "{:>12} COMM", "COUNT")?;
        }
        for row in &rows {
            if args.by == By::Pid {
                writeln!(w, "{:>12} {:<7} {}", row.count, row.pid, row.comm)?;
            } else {
                writeln!(w, "{:>12} {}", row.count, row.comm)?;
            }
        }
        writeln!(w)?;
    }
    sink.flush()
}

/// The field `--hist` reads: where it is in the record, how wide, signed or not.
struct HistField {
    name: String,
    offset: u32,
    bytes: u32,
    signed: bool,
}

fn hist_field(format: &Format, name: &str) -> Result<HistField, Error> {
    let numeric: Vec<&str> =
        format.fields.iter().filter(|f| matches!(f.kind, FieldKind::Int { .. })).map(|f| f.name.as_str()).collect();
    let hint = Some(format!("integer fields of {}: {}", format.name, numeric.join(", ")));
    let Some(f) = format.fields.iter().find(|f| f.name == name) else {
        return Err(Error::usage(format!("{} has no field `{name}`", format.name), hint));
    };
    match f.kind {
        FieldKind::Int { signed, bytes } if matches!(bytes, 1 | 2 | 4 | 8) => {
            Ok(HistField { name: f.name.clone(), offset: f.offset as u32, bytes: bytes.into(), signed })
        }
        _ => Err(Error::usage(format!("field `{name}` of {} is `{}`, not an integer", format.name, f.c_type), hint)),
    }
}

/// The histograms gained since the last print (all of them with --cumulative), one per key.
#[allow(clippy::too_many_arguments)]
fn print_hists(
    map: &libbpf_rs::MapMut<'_>,
    reader: &mut hist::Reader,
    sink: &mut Sink,
    tp: &str,
    field: &HistField,
    by: By,
    scale: Scale,
    counted: &mut u64,
) -> io::Result<()> {
    for (key, h) in reader.take(map) {
        *counted += h.count;
        let comm = hist::key_comm(&key);
        if sink.json {
            hist::write_json(
                sink,
                |s| {
                    s.field_str("tracepoint", tp)?;
                    s.field_str("field", &field.name)?;
                    if by == By::Pid {
                        s.field_u64("pid", key.pid.into())?;
                    }
                    s.field_str("comm", &comm)
                },
                &field.name,
                scale,
                &h,
            )?;
        } else {
            let title = match by {
                By::Pid => format!("{tp} {} of {comm} ({})", field.name, key.pid),
                _ => format!("{tp} {} of {comm}", field.name),
            };
            hist::write_table(sink.w(), &title, "", scale, &h)?;
        }
    }
    sink.flush()
}
