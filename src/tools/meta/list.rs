//! `tracekit list kernel|BINARY [GLOB]`: what can be traced: kernel functions (from BTF, with
//! their prototypes) or the functions of an ELF file that uprobes can attach to.

use std::io::{self, Write};

use clap::Args;

use crate::error::Error;
use crate::runtime::btf::KernelBtf;
use crate::runtime::target::{self, ElfInfo};

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit list kernel 'tcp_v4_*'     # kernel functions, with prototypes\n    \
    tracekit list tracepoint 'sched:*'  # tracepoints\n    \
    tracekit list /bin/bash 'read*'     # bash functions starting with read\n    \
    tracekit list libc 'mem*'           # libc's mem* functions\n    \
    tracekit list libssl --json")]
pub struct ListArgs {
    /// `kernel`, `tracepoint`, or a path, a program on PATH, or a library name (libc, libssl)
    #[arg(value_name = "BINARY")]
    pub what: String,

    /// Only names matching this glob
    #[arg(value_name = "GLOB")]
    pub glob: Option<String>,

    /// Only in this process's mount namespace (and its mapped libraries)
    #[arg(short = 'p', long, value_name = "PID")]
    pub pid: Option<u32>,

    /// One JSON object per line
    #[arg(short = 'j', long)]
    pub json: bool,
}

fn pattern(glob: Option<&str>) -> Result<Option<glob::Pattern>, Error> {
    glob.map(glob::Pattern::new).transpose().map_err(|e| Error::usage(format!("bad glob: {e}"), None))
}

fn finish(r: io::Result<()>) -> Result<i32, Error> {
    match r {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
        _ => Ok(0),
    }
}

/// Kernel functions from BTF with their prototypes.
fn kernel(args: &ListArgs) -> Result<i32, Error> {
    let btf = KernelBtf::load(None)?;
    let pat = pattern(args.glob.as_deref())?;
    let funcs = btf.functions(|n| pat.as_ref().is_none_or(|p| p.matches(n)));
    if funcs.is_empty() {
        return Err(Error::runtime(
            format!("no kernel function matches `{}`", args.glob.as_deref().unwrap_or("*")),
            Some("globs use * and ?, e.g. 'tcp_v4_*'".to_owned()),
        ));
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    let r = (|| -> io::Result<()> {
        for (n, proto) in funcs {
            let decl = proto.map_or_else(|| n.clone(), |p| p.c_decl);
            if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"type": "function", "kind": "kernel", "name": n, "prototype": decl})
                )?;
            } else {
                writeln!(out, "{decl}")?;
            }
        }
        out.flush()
    })();
    finish(r)
}

/// Tracepoints (`category:name`) from tracefs.
fn tracepoints(args: &ListArgs) -> Result<i32, Error> {
    let tracefs = crate::runtime::kernel::ensure_tracefs()?;
    let pat = pattern(args.glob.as_deref())?;
    let names: Vec<String> = crate::runtime::tracefs::all_events(&tracefs)
        .into_iter()
        .filter(|n| pat.as_ref().is_none_or(|p| p.matches(n)))
        .collect();
    if names.is_empty() {
        return Err(Error::runtime(
            format!("no tracepoint matches `{}`", args.glob.as_deref().unwrap_or("*")),
            Some("write CATEGORY:NAME globs, e.g. 'syscalls:sys_enter_open*'".to_owned()),
        ));
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    let r = (|| -> io::Result<()> {
        for n in &names {
            if args.json {
                writeln!(out, "{}", serde_json::json!({"type": "tracepoint", "name": n}))?;
            } else {
                writeln!(out, "{n}")?;
            }
        }
        out.flush()
    })();
    finish(r)
}

pub fn run(args: &ListArgs) -> Result<i32, Error> {
    match args.what.as_str() {
        "kernel" => return kernel(args),
        "tracepoint" | "tracepoints" => return tracepoints(args),
        _ => {}
    }
    let path = target::resolve_binary(&args.what, args.pid)?;
    let elf = ElfInfo::load(&path)?;
    let pat = pattern(args.glob.as_deref())?;
    let funcs: Vec<_> = elf.functions.iter().filter(|f| pat.as_ref().is_none_or(|p| p.matches(&f.name))).collect();
    if funcs.is_empty() {
        let what = args.glob.as_deref().map_or(String::new(), |g| format!(" matching `{g}`"));
        return Err(Error::runtime(
            format!("no traceable functions{what} in `{}`", path.display()),
            elf.stripped.then(|| "the binary is stripped: only exported symbols are listed".to_owned()),
        ));
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    let write = |out: &mut io::BufWriter<io::StdoutLock<'_>>| -> io::Result<()> {
        if !args.json {
            writeln!(
                out,
                "# {}{}",
                path.display(),
                if elf.stripped { " (stripped: exported symbols only)" } else { "" }
            )?;
            writeln!(out, "{:<18} {:>8} NAME", "ADDRESS", "SIZE")?;
        }
        for f in &funcs {
            if args.json {
                let v = serde_json::json!({"type": "function", "binary": path, "name": f.name, "addr": f.addr, "size": f.size, "file_offset": f.file_offset});
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "{:#018x} {:>8} {}", f.addr, f.size, f.name)?;
            }
        }
        out.flush()
    };
    finish(write(&mut out))
}
