//! `tracekit list BINARY [GLOB]`: the functions of an ELF file that uprobes can attach to.

use std::io::{self, Write};

use clap::Args;

use crate::error::Error;
use crate::runtime::target::{self, ElfInfo};

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit list /bin/bash 'read*'     # bash functions starting with read\n    \
    tracekit list libc 'mem*'           # libc's mem* functions\n    \
    tracekit list libssl --json")]
pub struct ListArgs {
    /// A path, a program on PATH, or a library name (libc, libssl)
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

pub fn run(args: &ListArgs) -> Result<i32, Error> {
    let path = target::resolve_binary(&args.what, args.pid)?;
    let elf = ElfInfo::load(&path)?;
    let pat = args
        .glob
        .as_deref()
        .map(glob::Pattern::new)
        .transpose()
        .map_err(|e| Error::usage(format!("bad glob: {e}"), None))?;
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
            writeln!(out, "# {}{}", path.display(), if elf.stripped { " (stripped: exported symbols only)" } else { "" })?;
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
    match write(&mut out) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
        _ => Ok(0),
    }
}
