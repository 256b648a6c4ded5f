//! `tracekit probe`: what this kernel supports, one line per feature the tools rely on
//! (what a user pastes into a bug report).

use std::io::{self, Write};

use clap::Args;

use crate::error::Error;
use crate::runtime::kernel;
use crate::runtime::probe::{Feature, Probes, Status};

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit probe            # table of every feature\n    \
    tracekit probe --json     # one JSON object per feature")]
pub struct ProbeArgs {
    /// One JSON object per line
    #[arg(short = 'j', long)]
    pub json: bool,
}

pub fn run(args: &ProbeArgs) -> Result<i32, Error> {
    crate::runtime::libbpf_log::install(0);
    let privileged = kernel::check_privileges().is_ok();
    if !privileged {
        eprintln!("tracekit: warning: not root: most probes need CAP_BPF and will say unknown");
    }
    let probes = Probes::default();
    let release = kernel_release();
    let mut out = io::stdout().lock();
    let write = |out: &mut io::StdoutLock<'_>| -> io::Result<()> {
        if args.json {
            // The kernel line keeps the feature lines' fields (as first published) and adds
            // the release and architecture on their own.
            let (osrelease, arch) = (osrelease(), std::env::consts::ARCH);
            let v = serde_json::json!({"type": "kernel", "name": release, "status": "", "detail": "", "release": osrelease, "arch": arch});
            writeln!(out, "{v}")?;
            for &f in Feature::ALL {
                let s = probes.get(f);
                let v =
                    serde_json::json!({"type": "feature", "name": f.name(), "status": s.label(), "detail": s.detail()});
                writeln!(out, "{v}")?;
            }
        } else {
            writeln!(out, "kernel {release}")?;
            writeln!(out, "{:<17} {:<12} DETAIL", "FEATURE", "STATUS")?;
            for &f in Feature::ALL {
                let s: &Status = probes.get(f);
                writeln!(out, "{:<17} {:<12} {}", f.name(), s.label(), s.detail())?;
            }
        }
        out.flush()
    };
    match write(&mut out) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
        _ => Ok(0),
    }
}

fn osrelease() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()
}

fn kernel_release() -> String {
    format!("{} ({})", osrelease(), std::env::consts::ARCH)
}
