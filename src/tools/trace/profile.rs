//! `tracekit profile`: CPU profiling by sampling. A perf_event program on every CPU's software
//! cpu-clock counts samples per (process, kernel stack, user stack) in the kernel; at the end
//! the stacks are symbolized with blazesym (kernel via kallsyms, user code from the ELF files
//! the process had mapped) and printed as counted stacks or folded for flame graphs.

use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::time::Instant;

use clap::Args;

use crate::error::Error;
use crate::runtime::attach::tracing;
use crate::runtime::output::Sink;
use crate::runtime::stackcount::{self, Mappings, Stack, StackKey, Style};
use crate::runtime::{CommonArgs, Runtime, TaskLoaded, Transport, TransportLoaded, lost};

crate::tool_skel!("profile", OpenProfileSkel, ProfileSkel, tk_stack_key);
const _: () = assert!(size_of::<skel::types::tk_stack_key>() == size_of::<StackKey>());
use skel::{ProfileSkel, ProfileSkelBuilder};

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit profile -d 10                       # every CPU for 10 s, counted stacks\n    \
    tracekit profile -F 199 -p 1234 --folded > out.folded   # for flamegraph.pl\n    \
    tracekit profile --folded -- ./my-program    # only my-program and its children")]
pub struct ProfileArgs {
    /// Samples per second per CPU
    #[arg(short = 'F', long = "frequency", default_value_t = 49, value_name = "HZ", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,

    /// Brendan Gregg's folded format (one line per stack: frames;…;frames count)
    #[arg(short = 'f', long, conflicts_with = "json")]
    pub folded: bool,

    /// Count the idle task too
    #[arg(long)]
    pub idle: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

fn online_cpus() -> Result<Vec<i32>, Error> {
    let text = fs::read_to_string("/sys/devices/system/cpu/online")
        .map_err(|e| Error::io("reading /sys/devices/system/cpu/online", e))?;
    let mut cpus = Vec::new();
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (i32, i32) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

pub fn run(args: ProfileArgs) -> Result<i32, Error> {
    let started = Instant::now();
    let mut rt = Runtime::new(args.common.clone())?;
    rt.stack = true;
    rt.counts_in_kernel("profile", "samples")?;
    let cpus = rt.plan(|| {
        let cpus = online_cpus()?;
        rt.say(format_args!("plan: cpu-clock at {} Hz on {} CPUs", args.frequency, cpus.len()));
        Ok(cpus)
    })?;
    // Samples are counted in maps, not streamed: the event channel only needs to exist.
    let transport = Transport::RingBuf { bytes: 4096 };
    let mut storage = MaybeUninit::uninit();
    let skel: ProfileSkel<'_> =
        rt.open_load("profile", ProfileSkelBuilder::default(), &mut storage, transport, |open| {
            open.maps
                .tk_stacks
                .set_max_entries(16384)
                .map_err(|e| Error::runtime(format!("sizing the stack map: {e}"), None))?;
            open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load").tk_profile_idle =
                args.idle as u32;
            Ok(())
        })?;
    let (mut child, _follow) = rt.start_child(&skel)?;
    let links = rt.step("attach", || -> Result<Vec<libbpf_rs::Link>, Error> {
        cpus.iter().map(|&cpu| tracing::cpu_clock(&skel.progs.profile__sample, cpu, args.frequency)).collect()
    })?;
    rt.attached();
    if let Some(c) = child.as_mut() {
        c.release()?;
    }
    // User addresses of processes that exit before the end are resolved through a copy of their
    // mappings taken while they ran (the child of -- CMD, the --pid processes).
    let mut mappings = Mappings::watching(rt.filter.pids.iter().copied().chain(child.as_ref().map(|c| c.pid())));
    rt.wait(child.as_mut(), || mappings.refresh(&skel.maps.counts));
    drop(links);
    let code = child.map_or(0, |c| c.finish());
    let stacks = stackcount::collect(&skel.maps.counts, Some(skel.stacks_map()), &mut mappings, false);
    let dropped = lost::read_drops(skel.drops_map());
    print(&args, &rt, &stacks, dropped, started)?;
    Ok(code)
}

fn print(args: &ProfileArgs, rt: &Runtime, stacks: &[Stack], dropped: u64, started: Instant) -> Result<(), Error> {
    let samples: u64 = stacks.iter().map(|s| s.count).sum();
    let mut sink = Sink::new(rt.out.json, false, 0);
    let style = Style::of(args.folded, rt.out.json);
    let r = stackcount::print(stacks, style, &mut sink).and_then(|()| {
        if rt.out.json {
            let extra = [("samples", samples), ("stacks", stacks.len() as u64)];
            stackcount::summary(&mut sink, samples, dropped, started, &extra)?;
        }
        sink.flush()
    });
    if dropped > 0 {
        eprintln!("tracekit: lost {dropped} samples: the stack-count table was full");
    }
    rt.say(format_args!("{samples} samples in {} stacks", stacks.len()));
    match r {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
        _ => Ok(()),
    }
}
