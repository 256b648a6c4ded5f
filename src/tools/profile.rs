//! `tracekit profile`: CPU profiling by sampling. A perf_event program on every CPU's software
//! cpu-clock counts samples per (process, kernel stack, user stack) in the kernel; at the end
//! the stacks are symbolized with blazesym (kernel via kallsyms, user code from the ELF files
//! the process had mapped) and printed as counted stacks or folded for flame graphs.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;

use blazesym::symbolize::{Input, Symbolizer, source};
use clap::Args;
use libbpf_rs::{MapCore, MapFlags};

use crate::error::Error;
use crate::runtime::output::{Sink, c_chars};
use crate::runtime::symbolize::{addrs_of, frame_name};
use crate::runtime::{CommonArgs, CommonLoaded, Runtime, Transport, lost};

crate::tool_skel!("profile", OpenProfileSkel, ProfileSkel, tk_profile_key);
use skel::{OpenProfileSkel, ProfileSkel, ProfileSkelBuilder, types};

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

/// From linux/perf_event.h.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// A software cpu-clock event on `cpu` sampling `hz` times a second (no hardware PMU needed).
fn cpu_clock(cpu: i32, hz: u64) -> io::Result<OwnedFd> {
    let mut attr = libbpf_rs::libbpf_sys::perf_event_attr {
        type_: libbpf_rs::libbpf_sys::PERF_TYPE_SOFTWARE,
        size: size_of::<libbpf_rs::libbpf_sys::perf_event_attr>() as u32,
        config: u64::from(libbpf_rs::libbpf_sys::PERF_COUNT_SW_CPU_CLOCK),
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_freq = hz;
    attr.set_freq(1);
    // SAFETY: perf_event_open with a valid attr for the call; pid -1 + cpu = that CPU, all tasks.
    let fd = unsafe {
        libc::syscall(libc::SYS_perf_event_open, &attr as *const _, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A file mapping of a process: where user addresses come from.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: PathBuf,
}

/// The mapped files of a watched process, held open through /proc/PID/map_files: the exact
/// file it ran stays readable after it exits, even if the path was replaced meanwhile.
type HeldFiles = HashMap<(u32, PathBuf), fs::File>;

fn hold_files(pid: u32, maps: &[Mapping], held: &mut HeldFiles) {
    for m in maps {
        let key = (pid, m.path.clone());
        if held.contains_key(&key) {
            continue;
        }
        if let Ok(f) = fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)) {
            held.insert(key, f);
        }
    }
}

fn read_mappings(pid: u32) -> Option<Vec<Mapping>> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let maps: Vec<Mapping> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, _perms, off, _dev, _inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let path = f.next().filter(|p| p.starts_with('/'))?;
            let (a, b) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                offset: u64::from_str_radix(off, 16).ok()?,
                path: PathBuf::from(path),
            })
        })
        .collect();
    (!maps.is_empty()).then_some(maps)
}

pub fn run(args: ProfileArgs) -> Result<i32, Error> {
    let rt = Runtime::new(args.common.clone())?;
    if rt.args.count.is_some() {
        return Err(Error::usage("profile counts samples in the kernel: --count does not apply", Some("use --duration".into())));
    }
    let cpus = online_cpus()?;
    rt.say(format_args!("plan: cpu-clock at {} Hz on {} CPUs", args.frequency, cpus.len()));
    // Samples are counted in maps, not streamed: the event channel only needs to exist.
    let transport = Transport::RingBuf { bytes: 4096 };
    let mut storage = MaybeUninit::uninit();
    let mut open: OpenProfileSkel<'_> = rt.open("profile", ProfileSkelBuilder::default(), &mut storage)?;
    rt.configure(&mut open, transport)?;
    open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load").tk_profile_idle = args.idle as u32;
    let skel: ProfileSkel<'_> = rt.load("profile", open)?;
    let (mut child, _follow) = rt.start_child(&skel)?;
    let links = rt.step("attach", || -> Result<Vec<libbpf_rs::Link>, Error> {
        cpus.iter()
            .map(|&cpu| {
                let fd = cpu_clock(cpu, args.frequency).map_err(|e| {
                    Error::io_hint(format!("opening the cpu-clock event on CPU {cpu}"), e, "see `tracekit probe` (perf_event)")
                })?;
                // The link owns the perf event fd from here on (libbpf closes it on detach).
                skel.progs.profile__sample.attach_perf_event(fd.into_raw_fd()).map_err(|source| Error::Attach {
                    what: format!("perf_event on CPU {cpu}"),
                    hint: None,
                    source,
                })
            })
            .collect()
    })?;
    rt.attached();
    if let Some(c) = child.as_mut() {
        c.release()?;
    }
    // User addresses of processes that exit before the end are resolved through a copy of their
    // mappings taken while they ran (the child of -- CMD, the --pid processes).
    let mut watched: Vec<u32> = rt.filter.pids.clone();
    watched.extend(child.as_ref().map(|c| c.pid()));
    let mut cache: HashMap<u32, Vec<Mapping>> = HashMap::new();
    let mut held: HeldFiles = HashMap::new();
    rt.wait(child.as_mut(), || {
        for &pid in &watched {
            if let Some(m) = read_mappings(pid) {
                hold_files(pid, &m, &mut held);
                cache.insert(pid, m);
            }
        }
    });
    drop(links);
    let code = child.map_or(0, |c| c.finish());
    let stacks = collect(&skel, &mut cache, &held);
    let dropped = lost::read_drops(skel.drops_map());
    print(&args, &rt, &stacks, dropped)?;
    Ok(code)
}

/// One counted stack pair, symbolized: frames leaf first.
struct Stack {
    pid: u32,
    comm: String,
    count: u64,
    kernel: Vec<String>,
    user: Vec<String>,
}

fn stack_addrs(skel: &ProfileSkel<'_>, id: i32) -> Vec<u64> {
    if id < 0 {
        return Vec::new();
    }
    match skel.maps.stacks.lookup(&id.to_ne_bytes(), MapFlags::ANY) {
        Ok(Some(bytes)) => addrs_of(&bytes),
        _ => Vec::new(),
    }
}

/// Names for addresses: kernel ones in one batch, user ones per mapped file.
fn collect(skel: &ProfileSkel<'_>, cache: &mut HashMap<u32, Vec<Mapping>>, held: &HeldFiles) -> Vec<Stack> {
    let mut raw: Vec<(types::tk_profile_key, u64, Vec<u64>, Vec<u64>)> = Vec::new();
    for k in skel.maps.counts.keys() {
        let mut key = types::tk_profile_key::default();
        if plain::copy_from_bytes(&mut key, &k).is_err() {
            continue;
        }
        let Ok(Some(v)) = skel.maps.counts.lookup(&k, MapFlags::ANY) else { continue };
        let count = u64::from_ne_bytes(v[..8].try_into().expect("u64 count"));
        raw.push((key, count, stack_addrs(skel, key.kstack), stack_addrs(skel, key.ustack)));
    }
    let symbolizer = Symbolizer::new();
    let mut kaddrs: Vec<u64> = raw.iter().flat_map(|r| r.2.iter().copied()).collect();
    kaddrs.sort_unstable();
    kaddrs.dedup();
    let mut names: HashMap<(u32, u64), String> = HashMap::new(); // (pid or 0 for kernel, addr)
    if !kaddrs.is_empty() {
        let src = source::Source::Kernel(source::Kernel::default());
        if let Ok(syms) = symbolizer.symbolize(&src, Input::AbsAddr(&kaddrs)) {
            for (a, s) in kaddrs.iter().zip(syms) {
                names.insert((0, *a), frame_name(&s, *a));
            }
        }
    }
    // user: (pid, addr) → (file, offset), symbolized per file
    let mut per_file: HashMap<(u32, PathBuf), Vec<(u32, u64, u64)>> = HashMap::new();
    for (key, _, _, uaddrs) in &raw {
        if !cache.contains_key(&key.pid) {
            if let Some(m) = read_mappings(key.pid) {
                cache.insert(key.pid, m);
            }
        }
        let Some(maps) = cache.get(&key.pid) else { continue };
        for &a in uaddrs {
            if let Some(m) = maps.iter().find(|m| a >= m.start && a < m.end) {
                per_file.entry((key.pid, m.path.clone())).or_default().push((key.pid, a, a - m.start + m.offset));
            }
        }
    }
    for ((pid, path), entries) in per_file {
        let offsets: Vec<u64> = entries.iter().map(|e| e.2).collect();
        // The file held open while it ran; else inside the process's mount namespace while it
        // lives (containers); else as named.
        let in_root = PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(&path));
        let file = match held.get(&(pid, path.clone())) {
            Some(f) => PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(f))),
            None if in_root.exists() => in_root,
            None => path,
        };
        let src = source::Source::Elf(source::Elf::new(&file));
        let Ok(syms) = symbolizer.symbolize(&src, Input::FileOffset(&offsets)) else { continue };
        for ((pid, addr, _), s) in entries.iter().zip(syms) {
            names.insert((*pid, *addr), frame_name(&s, *addr));
        }
    }
    let name = |pid: u32, a: u64| names.get(&(pid, a)).cloned().unwrap_or_else(|| format!("{a:#x}"));
    let mut stacks: Vec<Stack> = raw
        .into_iter()
        .map(|(key, count, k, u)| Stack {
            pid: key.pid,
            comm: c_chars(&key.comm).into_owned(),
            count,
            kernel: stack_names(key.kstack, &k, |a| name(0, a)),
            user: stack_names(key.ustack, &u, |a| name(key.pid, a)),
        })
        .collect();
    // Different addresses in one function give different stack ids but the same names.
    let mut merged: HashMap<(u32, String, Vec<String>, Vec<String>), u64> = HashMap::new();
    for s in stacks.drain(..) {
        *merged.entry((s.pid, s.comm, s.kernel, s.user)).or_default() += s.count;
    }
    stacks = merged.into_iter().map(|((pid, comm, kernel, user), count)| Stack { pid, comm, count, kernel, user }).collect();
    stacks.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)).then(a.user.cmp(&b.user)));
    stacks
}

const EFAULT: i32 = 14;

/// A stack's frames; a stack the kernel could not keep (table full, collision) says so.
fn stack_names(id: i32, addrs: &[u64], name: impl Fn(u64) -> String) -> Vec<String> {
    if id < 0 && id != -EFAULT {
        return vec!["[lost stack]".into()];
    }
    addrs.iter().map(|&a| name(a)).collect()
}

fn print(args: &ProfileArgs, rt: &Runtime, stacks: &[Stack], dropped: u64) -> Result<(), Error> {
    let samples: u64 = stacks.iter().map(|s| s.count).sum();
    let mut sink = Sink::new(rt.args.json, false, 0);
    let r = (|| -> io::Result<()> {
        for s in stacks {
            if args.folded {
                let w = sink.w();
                w.write_all(s.comm.as_bytes())?;
                // root first: user frames, then kernel frames marked _[k]
                for f in s.user.iter().rev() {
                    write!(w, ";{f}")?;
                }
                for f in s.kernel.iter().rev() {
                    for part in f.split(';') {
                        write!(w, ";{part}_[k]")?;
                    }
                }
                writeln!(w, " {}", s.count)?;
            } else if rt.args.json {
                sink.obj_start("stack")?;
                sink.field_u64("pid", s.pid.into())?;
                sink.field_str("comm", &s.comm)?;
                sink.field_u64("count", s.count)?;
                let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
                sink.field_raw("kernel", &list(&s.kernel))?;
                sink.field_raw("user", &list(&s.user))?;
                sink.obj_end()?;
            } else {
                let w = sink.w();
                for f in &s.kernel {
                    writeln!(w, "    {f}")?;
                }
                if !s.kernel.is_empty() && !s.user.is_empty() {
                    writeln!(w, "    --")?;
                }
                for f in &s.user {
                    writeln!(w, "    {f}")?;
                }
                writeln!(w, "    -                {} ({})\n        {}\n", s.comm, s.pid, s.count)?;
            }
        }
        if rt.args.json {
            sink.obj_start("summary")?;
            sink.field_u64("schema", crate::runtime::output::JSON_SCHEMA.into())?;
            sink.field_u64("samples", samples)?;
            sink.field_u64("stacks", stacks.len() as u64)?;
            sink.field_u64("lost", dropped)?;
            sink.obj_end()?;
        }
        sink.flush()
    })();
    if dropped > 0 {
        eprintln!("tracekit: lost {dropped} samples: the stack-count table was full");
    }
    rt.say(format_args!("{samples} samples in {} stacks", stacks.len()));
    match r {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
        _ => Ok(()),
    }
}
