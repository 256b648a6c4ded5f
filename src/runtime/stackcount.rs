//! Counts kept in the kernel per (process, kernel stack, user stack) — `profile`'s samples and
//! `count --by stack`'s events — read at the end, symbolized in batches and printed as counted
//! stacks, folded lines for flame graphs, or JSON.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use libbpf_rs::{MapCore, MapFlags, MapMut};

use super::output::{JSON_SCHEMA, Sink, c_str};
use super::symbolize::{Stacks, stack_addrs};

/// `struct tk_stack_key` of common.h (each skeleton generates its own copy of the type).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct StackKey {
    pub pid: u32,
    pub kstack: i32,
    pub ustack: i32,
    pub comm: [u8; 16],
}

// SAFETY: integers and a byte array; every bit pattern is a valid value.
unsafe impl plain::Plain for StackKey {}

/// A file mapping of a process: where user addresses come from.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: PathBuf,
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

/// The mappings of processes seen, and for the watched ones (the child of `-- CMD`, `--pid`)
/// their mapped files held open through /proc/PID/map_files: user addresses of a process that
/// exits before the end still resolve, to the exact file it ran even if the path was replaced.
#[derive(Default)]
pub struct Mappings {
    watched: Vec<u32>,
    cache: HashMap<u32, Vec<Mapping>>,
    held: HashMap<(u32, PathBuf), fs::File>,
    /// tracekit's own executable: a watched process running it has not exec'd CMD yet.
    own_image: Option<PathBuf>,
}

impl Mappings {
    pub fn watching(pids: impl IntoIterator<Item = u32>) -> Self {
        let own_image = fs::read_link("/proc/self/exe").ok();
        Mappings { watched: pids.into_iter().collect(), own_image, ..Default::default() }
    }

    /// Called while tracing: fresh mappings of the watched processes, and those of processes
    /// counted so far, taken once each.
    pub fn refresh(&mut self, counts: &MapMut<'_>) {
        self.refresh_watched();
        self.note_counted(counts);
    }

    fn refresh_watched(&mut self) {
        for &pid in &self.watched {
            // The child of `-- CMD` is tracekit's exec gate until CMD starts: its mappings then
            // are tracekit's own image, which would hide CMD's if CMD exits before the next look.
            if self.own_image.is_some() && fs::read_link(format!("/proc/{pid}/exe")).ok() == self.own_image {
                continue;
            }
            let Some(maps) = read_mappings(pid) else { continue };
            for m in &maps {
                let key = (pid, m.path.clone());
                if self.held.contains_key(&key) {
                    continue;
                }
                if let Ok(f) = fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)) {
                    self.held.insert(key, f);
                }
            }
            self.cache.insert(pid, maps);
        }
    }

    /// The mappings of processes counted so far, taken once each, so that the user frames of
    /// one that exits before the end still get names.
    fn note_counted(&mut self, counts: &MapMut<'_>) {
        let mut key = StackKey::default();
        for k in counts.keys() {
            if plain::copy_from_bytes(&mut key, &k).is_err() || key.pid == 0 || key.ustack < 0 {
                continue;
            }
            if !self.cache.contains_key(&key.pid)
                && let Some(maps) = read_mappings(key.pid)
            {
                self.cache.insert(key.pid, maps);
            }
        }
    }

    fn of(&mut self, pid: u32) -> Option<&Vec<Mapping>> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.cache.entry(pid) {
            e.insert(read_mappings(pid)?);
        }
        self.cache.get(&pid)
    }

    /// The file to read for a mapped path: the one held open; else inside the process's mount
    /// namespace while it lives (containers); else as named.
    fn file(&self, pid: u32, path: &Path) -> PathBuf {
        let in_root = PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
        match self.held.get(&(pid, path.to_path_buf())) {
            Some(f) => PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(f))),
            None if in_root.exists() => in_root,
            None => path.to_path_buf(),
        }
    }
}

/// One counted stack pair, symbolized: frames leaf first, an inline chain one frame per function.
pub struct Stack {
    pub pid: u32,
    pub comm: String,
    pub count: u64,
    pub kernel: Vec<String>,
    pub user: Vec<String>,
}

const EFAULT: i32 = 14;

/// A stack's frames; a stack the kernel could not keep (table full, collision) says so.
fn stack_names(id: i32, addrs: &[u64], frames: impl Fn(u64) -> Vec<String>) -> Vec<String> {
    if id < 0 && id != -EFAULT {
        return vec!["[lost stack]".into()];
    }
    addrs.iter().flat_map(|&a| frames(a)).collect()
}

/// The counts with their stacks named, largest first (kernel addresses in one batch, user ones
/// per mapped file); `reset` empties the count table for the next interval. Without a stack
/// map (counts per comm or process) the stacks are empty.
pub fn collect(counts: &MapMut<'_>, stacks: Option<&MapMut<'_>>, mappings: &mut Mappings, reset: bool) -> Vec<Stack> {
    let mut raw: Vec<(StackKey, u64, Vec<u64>, Vec<u64>)> = Vec::new();
    for k in counts.keys() {
        let mut key = StackKey::default();
        if plain::copy_from_bytes(&mut key, &k).is_err() {
            continue;
        }
        if let Ok(Some(v)) = counts.lookup(&k, MapFlags::ANY) {
            let count = u64::from_ne_bytes(v[..8].try_into().expect("u64 count"));
            let addrs = |id| stacks.map_or_else(Vec::new, |m| stack_addrs(m, id));
            raw.push((key, count, addrs(key.kstack), addrs(key.ustack)));
        }
        if reset {
            let _ = counts.delete(&k);
        }
    }
    let symbolizer = Stacks::new();
    let mut kaddrs: Vec<u64> = raw.iter().flat_map(|r| r.2.iter().copied()).collect();
    kaddrs.sort_unstable();
    kaddrs.dedup();
    // (pid or 0 for kernel, addr) → frames
    let mut names: HashMap<(u32, u64), Vec<String>> =
        kaddrs.iter().zip(symbolizer.kernel_per_addr(&kaddrs)).map(|(a, n)| ((0, *a), n)).collect();
    // user: (pid, addr) → (file, offset), symbolized per file
    let mut per_file: HashMap<(u32, PathBuf), Vec<(u64, u64)>> = HashMap::new();
    for (key, _, _, uaddrs) in &raw {
        let Some(maps) = mappings.of(key.pid) else { continue };
        for &a in uaddrs {
            if let Some(m) = maps.iter().find(|m| a >= m.start && a < m.end) {
                per_file.entry((key.pid, m.path.clone())).or_default().push((a, a - m.start + m.offset));
            }
        }
    }
    for ((pid, path), entries) in per_file {
        let (addrs, offsets): (Vec<u64>, Vec<u64>) = entries.into_iter().unzip();
        let file = mappings.file(pid, &path);
        for (addr, n) in addrs.iter().zip(symbolizer.file_per_addr(&file, &offsets, &addrs)) {
            names.insert((pid, *addr), n);
        }
    }
    let name = |pid: u32, a: u64| names.get(&(pid, a)).cloned().unwrap_or_else(|| vec![format!("{a:#x}")]);
    // Different addresses in one function give different stack ids but the same names.
    let mut merged: HashMap<(u32, String, Vec<String>, Vec<String>), u64> = HashMap::new();
    for (key, count, k, u) in raw {
        let (kernel, user) = match stacks {
            Some(_) => (stack_names(key.kstack, &k, |a| name(0, a)), stack_names(key.ustack, &u, |a| name(key.pid, a))),
            None => (Vec::new(), Vec::new()),
        };
        *merged.entry((key.pid, c_str(&key.comm).into_owned(), kernel, user)).or_default() += count;
    }
    let mut out: Vec<Stack> =
        merged.into_iter().map(|((pid, comm, kernel, user), count)| Stack { pid, comm, count, kernel, user }).collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)).then(a.user.cmp(&b.user)));
    out
}

/// Output styles of counted stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Frames leaf first, then comm (pid) and the count: bpftrace's `@[kstack, ustack]` look.
    Table,
    /// Brendan Gregg's folded format: `comm;root;…;leaf count` (an inlined function after its
    /// caller), kernel frames marked `_[k]`.
    Folded,
    /// One `{"type":"stack",…}` object per stack.
    Json,
}

impl Style {
    /// From the `--folded` and `--json` flags (folded wins).
    pub fn of(folded: bool, json: bool) -> Self {
        match (folded, json) {
            (true, _) => Style::Folded,
            (false, true) => Style::Json,
            (false, false) => Style::Table,
        }
    }
}

pub fn print(stacks: &[Stack], style: Style, sink: &mut Sink) -> io::Result<()> {
    for s in stacks {
        match style {
            Style::Folded => {
                let w = sink.w();
                w.write_all(s.comm.as_bytes())?;
                for f in s.user.iter().rev() {
                    write!(w, ";{f}")?;
                }
                for f in s.kernel.iter().rev() {
                    write!(w, ";{f}_[k]")?;
                }
                writeln!(w, " {}", s.count)?;
            }
            Style::Json => {
                sink.obj_start("stack")?;
                sink.field_u64("pid", s.pid.into())?;
                sink.field_str("comm", &s.comm)?;
                sink.field_u64("count", s.count)?;
                let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
                sink.field_raw("kernel", &list(&s.kernel))?;
                sink.field_raw("user", &list(&s.user))?;
                sink.obj_end()?;
            }
            Style::Table => {
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
    }
    Ok(())
}

/// The last JSON line of a tool that counts in the kernel, in the shape every tool's summary
/// has (`schema`, `events`, `lost`, `duration_s`): `events` counted since `started`, `lost`
/// those that found the count table full; `extra` adds the tool's own numbers.
pub fn summary(sink: &mut Sink, events: u64, lost: u64, started: Instant, extra: &[(&str, u64)]) -> io::Result<()> {
    sink.obj_start("summary")?;
    sink.field_u64("schema", JSON_SCHEMA.into())?;
    sink.field_u64("events", events)?;
    for (key, v) in extra {
        sink.field_u64(key, *v)?;
    }
    sink.field_u64("lost", lost)?;
    sink.field_f64("duration_s", started.elapsed().as_secs_f64(), 3)?;
    sink.obj_end()
}
