//! `tracekit uprobe BINARY:SYMBOL[+OFFSET]…`: user-space function calls, entry and return
//! paired per thread, arguments and return value decoded by signature.
//!
//! One generic BPF program pair, attached once per target with a cookie naming the probe;
//! rodata tells it which values to read as strings. Overhead: a uprobe trap per call (two with
//! the return), a map update and one record.

pub mod signature;

use std::io::{self, Write};
use std::mem::MaybeUninit;

use clap::Args;

use crate::error::Error;
use crate::runtime::attach::tracing::{self, UprobeTarget};
use crate::runtime::output::{EventHeader, Sink, TaskHeader};
use crate::runtime::probe::Feature;
use crate::runtime::resolve::{self, Symbol};
use crate::runtime::value::{CALL_COLUMNS, call_row_start, json_call_tail};
use crate::runtime::{CommonArgs, Printer, Runtime};
use signature::{Call, Kind, Signature};

crate::tool_skel!("uprobe", OpenUprobeSkel, UprobeSkel, tk_uprobe_event);
use skel::{UprobeSkel, UprobeSkelBuilder, types};

/// Must match uprobe.h.
pub const MAX_PROBES: usize = 64;
const F_ENTRY: u32 = 1;
const F_RETURN: u32 = 2;

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit uprobe /bin/bash:readline          # every line typed into any bash\n    \
    tracekit uprobe bash:readline -p 1234       # one bash process only\n    \
    tracekit uprobe libc:malloc -- ls           # ls's allocations, with sizes and latency\n    \
    tracekit uprobe 'libc:str*' --entry-only    # every libc function starting with str\n    \
    tracekit uprobe ./app:parse --sig 'int parse(const char *s, int len)'\n    \
    tracekit uretprobe /bin/bash:readline       # return values only\n\n\
BINARY is a path, a program on PATH, or a library name (libc, libssl). With -p PID, paths are\n\
looked up in that process's mount namespace. `tracekit list BINARY [GLOB]` shows the symbols.")]
pub struct UprobeArgs {
    /// BINARY:SYMBOL[+OFFSET] (SYMBOL may be a glob: `libc:mem*`)
    #[arg(required = true, value_name = "BINARY:SYMBOL")]
    pub specs: Vec<String>,

    /// C prototype for decoding: `char *readline(const char *prompt)` (repeatable; matched by name)
    #[arg(long = "sig", value_name = "PROTOTYPE")]
    pub sigs: Vec<String>,

    /// Trace entry only: arguments, no return value or latency
    #[arg(long, conflicts_with = "return_only")]
    pub entry_only: bool,

    /// Trace return only: return value, no arguments or latency
    #[arg(long)]
    pub return_only: bool,

    /// Also record and print each event's kernel and user stack (symbolized)
    #[arg(long)]
    pub stack: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// One attach point, resolved, and how its values decode.
#[derive(Debug, Clone)]
struct Probe {
    sym: Symbol,
    sig: Option<Signature>,
}

pub fn run(mut args: UprobeArgs, return_only: bool) -> Result<i32, Error> {
    if return_only && args.entry_only {
        return Err(Error::usage(
            "uretprobe traces returns only: --entry-only contradicts it",
            Some("for arguments without return values, use `tracekit uprobe BINARY:SYMBOL --entry-only`".into()),
        ));
    }
    args.return_only |= return_only;
    let specs = args.specs.iter().map(|s| resolve::parse_spec(s)).collect::<Result<Vec<_>, _>>()?;
    let sigs = args
        .sigs
        .iter()
        .map(|s| signature::parse(s).map_err(|e| Error::usage(format!("bad --sig `{s}`: {e}"), None)))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (name, _)) in sigs.iter().enumerate() {
        if let Some(j) = sigs[..i].iter().position(|(n, _)| n == name) {
            return Err(Error::usage(
                format!("two --sig for `{name}`: `{}` and `{}`", args.sigs[j], args.sigs[i]),
                Some("give one --sig per function".into()),
            ));
        }
    }
    let mut rt = Runtime::new(args.common.clone())?;
    rt.stack = args.stack;
    let pid = match rt.filter.pids.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let (want_entry, want_return) = (!args.return_only, !args.entry_only);
    let (probes, cookies, transport) = rt.plan(|| {
        let sig_for =
            |f: &str| sigs.iter().find(|(n, _)| n == f).map(|(_, s)| s.clone()).or_else(|| signature::builtin(f));
        let syms = resolve::symbols(&rt, &specs, pid, MAX_PROBES)?;
        if let Some((i, (name, _))) = sigs.iter().enumerate().find(|(_, (n, _))| !syms.iter().any(|s| &s.func == n)) {
            let mut traced: Vec<&str> = syms.iter().map(|s| s.func.as_str()).take(5).collect();
            if syms.len() > 5 {
                traced.push("…");
            }
            return Err(Error::usage(
                format!(
                    "--sig `{}` is for `{name}`, which is not traced (traced: {})",
                    args.sigs[i],
                    traced.join(", ")
                ),
                Some("a --sig applies to the traced function of the same name".into()),
            ));
        }
        let probes: Vec<Probe> = syms.into_iter().map(|sym| Probe { sig: sig_for(&sym.func), sym }).collect();
        let cookies = rt.probes.get(Feature::AttachCookie).is_supported();
        if probes.len() > 1 && !cookies {
            return Err(Error::Unsupported {
                feature: "attach_cookie",
                reason: "telling several probes apart needs bpf_get_attach_cookie (Linux 5.15+)".into(),
                hint: Some("trace one function per tracekit process".into()),
            });
        }
        for Probe { sym: s, .. } in &probes {
            rt.say(format_args!("plan: uprobe {} at {}+{:#x}", s.label, s.path.display(), s.file_offset));
        }
        Ok((probes, cookies, rt.plan_transport()?))
    })?;
    let mut storage = MaybeUninit::uninit();
    let skel: UprobeSkel<'_> =
        rt.open_load("uprobe", UprobeSkelBuilder::default(), &mut storage, transport, |open| {
            let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
            let c = &mut ro.tk_uprobe;
            c.want_entry = want_entry as u32;
            c.want_return = want_return as u32;
            c.have_cookie = cookies as u32;
            c.self_tgid = std::process::id();
            for (spec, sig) in c.probes.iter_mut().zip(&probes).filter_map(|(c, p)| Some((c, p.sig.as_ref()?))) {
                for (slot, param) in spec.str_arg.iter_mut().zip(&sig.params) {
                    *slot = (param.kind == Kind::Str) as u8;
                }
                spec.str_ret = (sig.ret == Kind::Str) as u8;
            }
            open.progs.uprobe__generic.set_autoload(want_entry);
            open.progs.uretprobe__generic.set_autoload(want_return);
            Ok(())
        })?;
    let printer = UprobePrinter { probes: probes.clone(), want_entry, want_return };
    rt.stream(&skel, transport, printer, |skel| {
        let mut links = Vec::new();
        for (id, p) in probes.iter().enumerate() {
            let progs =
                [(want_entry, &skel.progs.uprobe__generic, false), (want_return, &skel.progs.uretprobe__generic, true)];
            for (wanted, prog, retprobe) in progs {
                if !wanted {
                    continue;
                }
                let target = UprobeTarget { label: &p.sym.label, path: &p.sym.path, file_offset: p.sym.file_offset };
                let link = tracing::uprobe(prog, &target, pid, retprobe, id as u64)?;
                links.push(link);
            }
        }
        Ok(links)
    })
}

struct UprobePrinter {
    probes: Vec<Probe>,
    want_entry: bool,
    want_return: bool,
}

/// A string slot: the text read and whether it filled the buffer (truncated).
fn slot_str(ev: &types::tk_uprobe_event, slot: usize) -> Option<(std::borrow::Cow<'_, str>, bool)> {
    crate::runtime::value::slot_str(&ev.str_len, &ev.str, slot)
}

impl UprobePrinter {
    fn probe(&self, ev: &types::tk_uprobe_event) -> &Probe {
        self.probes.get(ev.probe_id as usize).unwrap_or(&self.probes[0])
    }
}

impl Printer for UprobePrinter {
    type Event = types::tk_uprobe_event;
    const MIN_LEN: usize = std::mem::offset_of!(types::tk_uprobe_event, str);

    fn stack_ids(ev: &Self::Event) -> Option<(u32, i32, i32)> {
        Some((ev.hdr.pid, ev.kstack, ev.ustack))
    }
    const COLUMNS: &'static str = CALL_COLUMNS;

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        TaskHeader::from(&ev.hdr).into()
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let p = self.probe(ev);
        let paired = ev.flags & (F_ENTRY | F_RETURN) == F_ENTRY | F_RETURN;
        call_row_start(out.w(), &TaskHeader::from(&ev.hdr), paired.then_some(ev.latency_ns))?;
        out.w().write_all(p.sym.func.as_bytes())?;
        call(ev, &|s| slot_str(ev, s)).write_row(out.w(), p.sig.as_ref())
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let p = self.probe(ev);
        out.field_str("probe", &p.sym.label)?;
        out.field_str("func", &p.sym.func)?;
        let truncated = call(ev, &|s| slot_str(ev, s)).write_json(out, p.sig.as_ref())?;
        json_call_tail(out, (self.want_entry && self.want_return).then_some(ev.latency_ns), truncated)
    }
}

/// The values of an event, as its flags say which end of the call it saw.
fn call<'e>(ev: &'e types::tk_uprobe_event, strs: signature::StrOf<'e>) -> Call<'e> {
    Call {
        args: (ev.flags & F_ENTRY != 0).then_some(&ev.args),
        ret: (ev.flags & F_RETURN != 0).then_some(ev.ret),
        strs,
    }
}

#[cfg(test)]
mod tests;
