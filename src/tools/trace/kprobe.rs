//! `tracekit kprobe FUNC…`: kernel function calls with arguments decoded from BTF, the return
//! value and the latency. fentry/fexit when the kernel allows tracing programs, else
//! kprobe/kretprobe; no compiler at run time: user space turns each prototype (and `-a` field
//! paths) into a decode plan in rodata that one generic program per backend executes.

use std::io::{self, Write};
use std::mem::MaybeUninit;

use clap::{Args, ValueEnum};
use libbpf_rs::skel::OpenSkel;

use crate::error::Error;
use crate::runtime::attach::tracing::{self, alternative};
use crate::runtime::btf::{Fetch, KernelBtf, Prototype, ValueKind};
use crate::runtime::output::{EventHeader, TaskHeader, Sink};
use crate::runtime::value::{CALL_COLUMNS, Shown, call_row_start, json_call_tail, mask, sign_extend};
use crate::runtime::probe::{Feature, Status};
use crate::runtime::resolve;
use crate::runtime::{CommonArgs, Printer, Runtime};

crate::tool_skel!("kprobe", OpenKprobeSkel, KprobeSkel, tk_kprobe_event);
use skel::{KprobeSkel, KprobeSkelBuilder, OpenKprobeSkel, types};

/// Must match kprobe.h.
pub const MAX_FUNCS: usize = 16;
const MAX_FETCHES: usize = 8;
const STRS: usize = 2;
const F_RETURN: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// fentry/fexit when possible, else kprobe/kretprobe
    Auto,
    /// BPF trampolines (5.5+, needs BTF and ftrace direct calls): cheapest
    Fentry,
    /// kprobe/kretprobe (needs CONFIG_KPROBES)
    Kprobe,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit kprobe do_sys_openat2                          # every open: path, flags, fd\n    \
    tracekit kprobe do_sys_openat2 -a how->flags -a how->mode\n    \
    tracekit kprobe 'tcp_v4_*' --entry-only -c curl         # curl's IPv4 TCP calls\n    \
    tracekit kprobe vfs_read -a 'file->f_path.dentry->d_name.name' -p 1234\n    \
    tracekit list kernel 'do_sys_*'                         # what can be traced\n\n\
Arguments print by their BTF type: integers, enum names, `char *` as strings, other pointers as\n\
hex; negative error returns by name (-ENOENT).")]
pub struct KprobeArgs {
    /// Kernel functions (comma-separated or repeated; globs allowed, at most 16)
    #[arg(required = true, value_name = "FUNC", value_delimiter = ',')]
    pub funcs: Vec<String>,

    /// Also print this field path from an argument (repeatable): `how->flags`, `sk->__sk_common.skc_num`
    #[arg(short = 'a', long = "arg", value_name = "EXPR")]
    pub fields: Vec<String>,

    /// Trace entry only: arguments, no return value or latency
    #[arg(long)]
    pub entry_only: bool,

    /// How to attach
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// Also record and print each event's kernel and user stack (symbolized)
    #[arg(long)]
    pub stack: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// One traced function and how its values print.
#[derive(Debug, Clone)]
pub(super) struct Traced {
    name: String,
    proto: Prototype,
    fetches: Vec<Fetch>,
    /// String slot of each fetch.
    str_slots: Vec<Option<usize>>,
}

pub(super) fn plan_values(btf: &KernelBtf, funcs: Vec<(String, Prototype)>, fields: &[String]) -> Result<Vec<Traced>, Error> {
    let mut used = vec![false; fields.len()];
    let mut traced = Vec::new();
    for (name, proto) in funcs {
        let mut fetches: Vec<Fetch> = proto
            .params
            .iter()
            .take(6)
            .enumerate()
            .map(|(i, (pname, kind, _))| Fetch { label: pname.clone(), arg: i as u8, offsets: vec![], tail: 0, kind: kind.clone() })
            .collect();
        for (fi, expr) in fields.iter().enumerate() {
            let first = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("");
            if !proto.params.iter().any(|(n, _, _)| n == first) {
                continue;
            }
            used[fi] = true;
            let f = btf
                .resolve_path(&proto, expr)
                .map_err(|why| Error::usage(format!("-a `{expr}` on `{name}`: {why}"), None))?;
            fetches.push(f);
        }
        if fetches.len() > MAX_FETCHES {
            return Err(Error::usage(
                format!("`{name}`: {} values (arguments and -a fields), at most {MAX_FETCHES}", fetches.len()),
                Some("use fewer -a fields".into()),
            ));
        }
        let mut next = 0;
        let str_slots = fetches
            .iter()
            .map(|f| {
                (f.kind == ValueKind::Str && next < STRS).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        traced.push(Traced { name, proto, fetches, str_slots });
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(Error::usage(
            format!("-a `{}` names no parameter of the traced functions", fields[i]),
            Some("start the path with a parameter name; `tracekit list kernel FUNC` shows them".into()),
        ));
    }
    Ok(traced)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    Fentry,
    Kprobe,
    TpBtf,
    RawTp,
}

fn plan(rt: &Runtime, backend: Backend, first: &str, want_return: bool) -> Result<Hook, Error> {
    // A backend needs its entry kind, and its return kind too unless --entry-only.
    let needs = |entry: Feature, ret: Feature| match rt.probes.get(entry) {
        Status::Supported if want_return => rt.probes.get(ret).clone(),
        s => s.clone(),
    };
    let fentry = needs(Feature::Fentry, Feature::Fexit);
    let kprobe = needs(Feature::Kprobe, Feature::Kretprobe);
    let unsupported = |feature: &'static str, s: &Status| Error::Unsupported {
        feature,
        reason: s.detail(),
        hint: Some(alternative(first)),
    };
    let hook = match backend {
        Backend::Fentry if fentry.is_supported() => Hook::Fentry,
        Backend::Fentry => return Err(unsupported("fentry", &fentry)),
        Backend::Kprobe if kprobe.is_supported() => Hook::Kprobe,
        Backend::Kprobe => return Err(unsupported("kprobe", &kprobe)),
        Backend::Auto if fentry.is_supported() => Hook::Fentry,
        Backend::Auto if kprobe.is_supported() => Hook::Kprobe,
        Backend::Auto => {
            return Err(Error::Unsupported {
                feature: "kprobe",
                reason: format!("kprobes: {}; fentry: {}", kprobe.detail(), fentry.detail()),
                hint: Some(alternative(first)),
            });
        }
    };
    match hook {
        Hook::Fentry => rt.say("plan: fentry/fexit (BPF trampolines)"),
        _ => rt.say(format_args!("plan: kprobe/kretprobe (fentry: {fentry})")),
    }
    Ok(hook)
}

fn prog_name(hook: Hook, ret: bool, slot: usize) -> String {
    match (hook, ret) {
        (Hook::Fentry, false) => format!("tk_fentry_{slot}"),
        (Hook::Fentry, true) => format!("tk_fexit_{slot}"),
        (Hook::Kprobe, false) => format!("tk_kprobe_{slot}"),
        (Hook::Kprobe, true) => format!("tk_kretprobe_{slot}"),
        (Hook::TpBtf, _) => format!("tk_tp_btf_{slot}"),
        (Hook::RawTp, _) => format!("tk_raw_tp_{slot}"),
    }
}

pub fn run(args: KprobeArgs) -> Result<i32, Error> {
    let mut rt = Runtime::new(args.common.clone())?;
    rt.stack = args.stack;
    let btf = rt.step("btf", || KernelBtf::load(rt.out.btf.as_deref()))?;
    let funcs = resolve::kernel_functions(&btf, &args.funcs, MAX_FUNCS)?;
    let traced = plan_values(&btf, funcs, &args.fields)?;
    drop(btf);
    let want_return = !args.entry_only;
    let hook = plan(&rt, args.backend, &traced[0].name, want_return)?;
    run_traced(&mut rt, traced, hook, want_return)
}

/// Loads the generic programs of `hook` for each traced target, attaches them and streams.
pub(super) fn run_traced(rt: &mut Runtime, traced: Vec<Traced>, hook: Hook, want_return: bool) -> Result<i32, Error> {
    for t in &traced {
        rt.say(format_args!("{}: {}", t.name, t.proto.c_decl));
    }
    let transport = rt.transport()?;

    let mut storage = MaybeUninit::uninit();
    let mut open: OpenKprobeSkel<'_> = rt.open("kprobe", KprobeSkelBuilder::default(), &mut storage)?;
    rt.configure(&mut open, transport)?;
    {
        let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
        let c = &mut ro.tk_kprobe;
        c.want_return = want_return as u32;
        for (slot, t) in traced.iter().enumerate() {
            let f = &mut c.funcs[slot];
            f.nargs = t.proto.params.len() as u32;
            f.nfetch = t.fetches.len() as u32;
            for ((dst, src), s) in f.fetch.iter_mut().zip(&t.fetches).zip(&t.str_slots) {
                dst.arg = src.arg;
                dst.nderef = src.offsets.len() as u8;
                dst.off[..src.offsets.len()].copy_from_slice(&src.offsets);
                dst.tail = src.tail;
                dst.str_slot = s.map_or(0, |s| s as u8 + 1);
            }
        }
    }
    let wanted: Vec<(String, usize, bool)> = traced
        .iter()
        .enumerate()
        .flat_map(|(slot, _)| {
            let mut v = vec![(prog_name(hook, false, slot), slot, false)];
            if want_return {
                v.push((prog_name(hook, true, slot), slot, true));
            }
            v
        })
        .collect();
    for mut prog in open.open_object_mut().progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        match wanted.iter().find(|(n, _, _)| *n == name) {
            Some((_, slot, _)) => {
                prog.set_autoload(true);
                if matches!(hook, Hook::Fentry | Hook::TpBtf) {
                    tracing::set_btf_target(&mut prog, &traced[*slot].name)?;
                }
            }
            None if name.starts_with("tk_follow") => {}
            None => prog.set_autoload(false),
        }
    }
    let skel: KprobeSkel<'_> = rt.load("kprobe", open)?;
    let names: Vec<String> = traced.iter().map(|t| t.name.clone()).collect();
    let printer = KprobePrinter { traced, want_return };
    rt.stream(&skel, transport, printer, |skel| {
        use libbpf_rs::skel::Skel;
        let mut links = Vec::new();
        for prog in skel.object().progs_mut() {
            let pname = prog.name().to_string_lossy().into_owned();
            let Some((_, slot, ret)) = wanted.iter().find(|(n, _, _)| *n == pname) else { continue };
            let func = &names[*slot];
            links.push(match hook {
                Hook::Fentry => tracing::fentry(&prog, func, *ret)?,
                Hook::Kprobe => tracing::kprobe(&prog, func, *ret, 0)?,
                Hook::TpBtf => tracing::tp_btf(&prog, func)?,
                Hook::RawTp => tracing::raw_tp(&prog, func)?,
            });
        }
        Ok(links)
    })
}

struct KprobePrinter {
    traced: Vec<Traced>,
    want_return: bool,
}

fn shown<'a>(label: &str, kind: &'a ValueKind, raw: u64, s: Option<(std::borrow::Cow<'a, str>, bool)>) -> Shown<'a> {
    let leaf = label.rsplit(['>', '.']).next().unwrap_or(label);
    match kind {
        ValueKind::Int { bytes, signed: true } => Shown::Signed(sign_extend(raw, *bytes)),
        ValueKind::Int { bytes, signed: false } if leaf.ends_with("mode") => Shown::Octal(mask(raw, *bytes)),
        ValueKind::Int { bytes, signed: false } if leaf.ends_with("flags") => Shown::Hex(mask(raw, *bytes)),
        ValueKind::Int { bytes, signed: false } => Shown::Unsigned(mask(raw, *bytes)),
        ValueKind::Bool => Shown::Bool(raw & 0xff != 0),
        ValueKind::Enum { bytes, signed, variants } => {
            let v = if *signed { sign_extend(raw, *bytes) } else { mask(raw, *bytes) as i64 };
            match variants.iter().find(|(val, _)| *val == v) {
                Some((_, name)) => Shown::Enum(name),
                None => Shown::Signed(v),
            }
        }
        ValueKind::Str if raw == 0 => Shown::Null,
        ValueKind::Str => s.map_or(Shown::Hex(raw), |(t, trunc)| Shown::Str(t, trunc)),
        _ => Shown::Hex(raw),
    }
}

/// A negative return in the errno range, by name (-ENOENT).
fn errno_of(kind: &ValueKind, raw: u64) -> Option<nix::errno::Errno> {
    let v = match kind {
        ValueKind::Int { bytes, signed: true } => sign_extend(raw, *bytes),
        ValueKind::Ptr { .. } | ValueKind::Str => raw as i64, // ERR_PTR
        _ => return None,
    };
    (-4095..0).contains(&v).then(|| nix::errno::Errno::from_raw(-v as i32))
}

fn slot_str(ev: &types::tk_kprobe_event, slot: Option<usize>) -> Option<(std::borrow::Cow<'_, str>, bool)> {
    crate::runtime::value::slot_str(&ev.str_len, &ev.str, slot?)
}

impl Printer for KprobePrinter {
    type Event = types::tk_kprobe_event;
    const MIN_LEN: usize = std::mem::offset_of!(types::tk_kprobe_event, str);

    fn stack_ids(ev: &Self::Event) -> Option<(u32, i32, i32)> {
        Some((ev.hdr.pid, ev.kstack, ev.ustack))
    }
    const COLUMNS: &'static str = CALL_COLUMNS;

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        TaskHeader::from(&ev.hdr).into()
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let h = TaskHeader::from(&ev.hdr);
        let Some(t) = self.traced.get(ev.slot as usize) else { return Ok(()) };
        let w = out.w();
        call_row_start(w, &h, (ev.flags & F_RETURN != 0).then_some(ev.latency_ns))?;
        write!(w, "{}(", t.name)?;
        for (i, f) in t.fetches.iter().enumerate() {
            write!(w, "{}{}=", if i > 0 { ", " } else { "" }, f.label)?;
            shown(&f.label, &f.kind, ev.vals[i], slot_str(ev, t.str_slots[i])).write(w)?;
        }
        w.write_all(b")")?;
        if ev.flags & F_RETURN != 0 && t.proto.ret != ValueKind::Void {
            match errno_of(&t.proto.ret, ev.ret) {
                Some(e) => write!(w, " = -{e:?}")?,
                None => {
                    w.write_all(b" = ")?;
                    shown("", &t.proto.ret, ev.ret, None).write(w)?;
                }
            }
        }
        Ok(())
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let Some(t) = self.traced.get(ev.slot as usize) else { return Ok(()) };
        out.field_str("func", &t.name)?;
        out.object_start("args")?;
        let mut truncated = false;
        for (i, f) in t.fetches.iter().enumerate() {
            let v = shown(&f.label, &f.kind, ev.vals[i], slot_str(ev, t.str_slots[i]));
            truncated |= v.is_truncated();
            v.json(out, &f.label)?;
        }
        out.object_end()?;
        if ev.flags & F_RETURN != 0 && t.proto.ret != ValueKind::Void {
            let ret = shown("", &t.proto.ret, ev.ret, None);
            ret.json(out, "ret")?;
            if let Some(e) = errno_of(&t.proto.ret, ev.ret) {
                out.field_display("errno", format_args!("{e:?}"))?;
            }
        }
        json_call_tail(out, self.want_return.then_some(ev.latency_ns), truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_by_type() {
        let int = ValueKind::Int { bytes: 4, signed: true };
        let text = |v: Shown<'_>| {
            let mut b = Vec::new();
            v.write(&mut b).unwrap();
            String::from_utf8(b).unwrap()
        };
        assert_eq!(text(shown("dfd", &int, 0xffff_ff9c, None)), "-100");
        let u64k = ValueKind::Int { bytes: 8, signed: false };
        assert_eq!(text(shown("how->flags", &u64k, 0x8241, None)), "0x8241");
        assert_eq!(text(shown("how->mode", &u64k, 0o644, None)), "0644");
        let e = ValueKind::Enum { bytes: 4, signed: false, variants: vec![(1, "TCP_ESTABLISHED".into())] };
        assert!(matches!(shown("s", &e, 1, None), Shown::Enum("TCP_ESTABLISHED")));
    }

    #[test]
    fn errors_by_name() {
        let long = ValueKind::Int { bytes: 8, signed: true };
        assert_eq!(errno_of(&long, (-2i64) as u64), Some(nix::errno::Errno::ENOENT));
        assert_eq!(errno_of(&long, 3), None);
        let int = ValueKind::Int { bytes: 4, signed: true };
        assert_eq!(errno_of(&int, 0xffff_fff3), Some(nix::errno::Errno::EACCES));
        assert_eq!(errno_of(&ValueKind::Int { bytes: 8, signed: false }, u64::MAX), None);
        assert_eq!(format!("{:?}", nix::errno::Errno::ENOENT), "ENOENT");
    }

    #[test]
    fn plans_from_the_running_kernel() {
        let btf = KernelBtf::load(None).unwrap();
        let funcs = resolve::kernel_functions(&btf, &["do_sys_openat2".into()], MAX_FUNCS).unwrap();
        let t = plan_values(&btf, funcs, &["how->flags".into(), "how->mode".into()]).unwrap();
        let labels: Vec<&str> = t[0].fetches.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(labels, ["dfd", "filename", "how", "how->flags", "how->mode"]);
        assert_eq!(t[0].str_slots, [None, Some(0), None, None, None]);
        let vfs_read = resolve::kernel_functions(&btf, &["vfs_read".into()], MAX_FUNCS).unwrap();
        let e = plan_values(&btf, vfs_read, &["how->flags".into()]).unwrap_err();
        assert!(e.to_string().contains("names no parameter"));
    }
}
