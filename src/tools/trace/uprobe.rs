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
use crate::runtime::output::{EventHeader, TaskHeader, Sink};
use crate::runtime::value::{CALL_COLUMNS, Shown, call_row_start, json_call_tail, mask, sign_extend};
use crate::runtime::probe::Feature;
use crate::runtime::resolve::{self, Symbol};
use crate::runtime::{CommonArgs, Printer, Runtime};
use signature::{Kind, Signature};

crate::tool_skel!("uprobe", OpenUprobeSkel, UprobeSkel, tk_uprobe_event);
use skel::{UprobeSkel, UprobeSkelBuilder, types};

/// Must match uprobe.h.
pub const MAX_PROBES: usize = 64;
const STRS: usize = 3;
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
    args.return_only |= return_only;
    let specs = args.specs.iter().map(|s| resolve::parse_spec(s)).collect::<Result<Vec<_>, _>>()?;
    let sigs = args
        .sigs
        .iter()
        .map(|s| signature::parse(s).map_err(|e| Error::usage(format!("bad --sig `{s}`: {e}"), None)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rt = Runtime::new(args.common.clone())?;
    rt.stack = args.stack;
    let pid = match rt.filter.pids.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let (want_entry, want_return) = (!args.return_only, !args.entry_only);
    let (probes, cookies, transport) = rt.plan(|| {
        let sig_for = |f: &str| sigs.iter().find(|(n, _)| n == f).map(|(_, s)| s.clone()).or_else(|| signature::builtin(f));
        let syms = resolve::symbols(&rt, &specs, pid, MAX_PROBES)?;
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
    let skel: UprobeSkel<'_> = rt.open_load("uprobe", UprobeSkelBuilder::default(), &mut storage, transport, |open| {
        let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
        let c = &mut ro.tk_uprobe;
        c.want_entry = want_entry as u32;
        c.want_return = want_return as u32;
        c.have_cookie = cookies as u32;
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
            let progs = [(want_entry, &skel.progs.uprobe__generic, false), (want_return, &skel.progs.uretprobe__generic, true)];
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

/// Which string slot each parameter and the return value got (the BPF side's order).
fn slots(sig: &Signature) -> ([Option<usize>; 6], Option<usize>) {
    let mut args = [None; 6];
    let mut next = 0;
    for (i, p) in sig.params.iter().enumerate() {
        if p.kind == Kind::Str && next < STRS {
            args[i] = Some(next);
            next += 1;
        }
    }
    let ret = (sig.ret == Kind::Str && next < STRS).then_some(next);
    (args, ret)
}

fn value(kind: Kind, raw: u64, s: Option<(std::borrow::Cow<'_, str>, bool)>) -> Shown<'_> {
    match kind {
        Kind::Int { bits, signed: true } => Shown::Signed(sign_extend(raw, bits / 8)),
        Kind::Int { bits, signed: false } => Shown::Unsigned(mask(raw, bits / 8)),
        Kind::Str if raw == 0 => Shown::Null,
        Kind::Str => s.map_or(Shown::Hex(raw), |(t, trunc)| Shown::Str(t, trunc)),
        Kind::Ptr | Kind::Void => Shown::Hex(raw),
    }
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
        let h = TaskHeader::from(&ev.hdr);
        let p = self.probe(ev);
        let w = out.w();
        let paired = ev.flags & (F_ENTRY | F_RETURN) == F_ENTRY | F_RETURN;
        call_row_start(w, &h, paired.then_some(ev.latency_ns))?;
        w.write_all(p.sym.func.as_bytes())?;
        let (arg_slots, ret_slot) = p.sig.as_ref().map_or(([None; 6], None), slots);
        if ev.flags & F_ENTRY != 0 {
            w.write_all(b"(")?;
            match &p.sig {
                Some(sig) => {
                    for (i, param) in sig.params.iter().enumerate() {
                        if i > 0 {
                            w.write_all(b", ")?;
                        }
                        write!(w, "{}=", param.name)?;
                        let s = arg_slots[i].and_then(|s| slot_str(ev, s));
                        value(param.kind, ev.args[i], s).write(w)?;
                    }
                }
                None => {
                    for (i, a) in ev.args.iter().enumerate() {
                        write!(w, "{}{a:#x}", if i > 0 { ", " } else { "" })?;
                    }
                }
            }
            w.write_all(b")")?;
        }
        if ev.flags & F_RETURN != 0 {
            let kind = p.sig.as_ref().map_or(Kind::Ptr, |s| s.ret);
            if kind != Kind::Void {
                w.write_all(b" = ")?;
                value(kind, ev.ret, ret_slot.and_then(|s| slot_str(ev, s))).write(w)?;
            }
        }
        Ok(())
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let p = self.probe(ev);
        let sig = &p.sig;
        out.field_str("probe", &p.sym.label)?;
        out.field_str("func", &p.sym.func)?;
        let (arg_slots, ret_slot) = sig.as_ref().map_or(([None; 6], None), slots);
        let mut truncated = false;
        if ev.flags & F_ENTRY != 0 {
            out.object_start("args")?;
            match sig {
                Some(sig) => {
                    for (i, param) in sig.params.iter().enumerate() {
                        let s = arg_slots[i].and_then(|s| slot_str(ev, s));
                        let v = value(param.kind, ev.args[i], s);
                        truncated |= v.is_truncated();
                        v.json(out, &param.name)?;
                    }
                }
                None => {
                    for (i, a) in ev.args.iter().enumerate() {
                        out.field_display(["arg0", "arg1", "arg2", "arg3", "arg4", "arg5"][i], format_args!("{a:#x}"))?;
                    }
                }
            }
            out.object_end()?;
        }
        if ev.flags & F_RETURN != 0 {
            let kind = sig.as_ref().map_or(Kind::Ptr, |s| s.ret);
            if kind != Kind::Void {
                let v = value(kind, ev.ret, ret_slot.and_then(|s| slot_str(ev, s)));
                truncated |= v.is_truncated();
                v.json(out, "ret")?;
            }
        }
        json_call_tail(out, (self.want_entry && self.want_return).then_some(ev.latency_ns), truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_slots_follow_the_bpf_order() {
        let (_, sig) = signature::parse("char *f(int a, const char *b, long c, char *d)").unwrap();
        let (args, ret) = slots(&sig);
        assert_eq!(args, [None, Some(0), None, Some(1), None, None]);
        assert_eq!(ret, Some(2));
    }

    #[test]
    fn decodes_a_readline_event() {
        let mut ev = types::tk_uprobe_event::default();
        ev.flags = F_ENTRY | F_RETURN;
        ev.args[0] = 0x1000;
        ev.ret = 0x2000;
        ev.latency_ns = 1_500_000;
        for (slot, text) in [(0, &b"$ "[..]), (1, b"echo hi")] {
            for (d, s) in ev.str[slot * 256..].iter_mut().zip(text) {
                *d = *s as _;
            }
            ev.str_len[slot] = text.len() as i16 + 1;
        }
        let sig = signature::builtin("readline").unwrap();
        let (a, r) = slots(&sig);
        let Shown::Str(prompt, false) = value(Kind::Str, ev.args[0], a[0].and_then(|s| slot_str(&ev, s))) else {
            panic!("prompt")
        };
        assert_eq!(prompt, "$ ");
        let Shown::Str(line, false) = value(Kind::Str, ev.ret, r.and_then(|s| slot_str(&ev, s))) else {
            panic!("line")
        };
        assert_eq!(line, "echo hi");
        assert!(matches!(value(Kind::Str, 0, None), Shown::Null));
    }
}
