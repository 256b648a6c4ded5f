//! `tracekit kprobe FUNC…`: kernel function calls with arguments decoded from BTF, the return
//! value and the latency. fentry/fexit when the kernel allows tracing programs, else
//! kprobe/kretprobe; no compiler at run time: user space turns each prototype (and `-a` field
//! paths) into a decode plan in rodata that one generic program per backend executes.

use std::io;
use std::mem::MaybeUninit;

use clap::{Args, ValueEnum};
use libbpf_rs::skel::OpenSkel;

use crate::error::Error;
use crate::runtime::attach::tracing::{self, CallHook};
use crate::runtime::btf::KernelBtf;
use crate::runtime::callplan::{Traced, plan_values};
use crate::runtime::output::{EventHeader, Sink, TaskHeader};
use crate::runtime::resolve;
use crate::runtime::value::{CALL_COLUMNS, call_row_start, json_call_tail, slot_str};
use crate::runtime::{CommonArgs, Printer, Runtime};

crate::tool_skel!("kprobe", OpenKprobeSkel, KprobeSkel, tk_kprobe_event);
use skel::{KprobeSkel, KprobeSkelBuilder, types};

/// Must match kprobe.h.
pub const MAX_FUNCS: usize = 16;
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

fn prog_name(hook: CallHook, ret: bool, slot: usize) -> String {
    match (hook, ret) {
        (CallHook::Fentry, false) => format!("tk_fentry_{slot}"),
        (CallHook::Fentry, true) => format!("tk_fexit_{slot}"),
        (CallHook::Kprobe, false) => format!("tk_kprobe_{slot}"),
        (CallHook::Kprobe, true) => format!("tk_kretprobe_{slot}"),
        (CallHook::TpBtf, _) => format!("tk_tp_btf_{slot}"),
        (CallHook::RawTp, _) => format!("tk_raw_tp_{slot}"),
    }
}

pub fn run(args: KprobeArgs) -> Result<i32, Error> {
    let mut rt = Runtime::new(args.common.clone())?;
    rt.stack = args.stack;
    let want_return = !args.entry_only;
    let (traced, hook) = rt.plan(|| {
        let btf = rt.step("btf", || KernelBtf::load(rt.out.btf.as_deref()))?;
        let funcs = resolve::kernel_functions(&btf, &args.funcs, MAX_FUNCS)?;
        let traced = plan_values(&btf, funcs, &args.fields)?;
        let want = match args.backend {
            Backend::Auto => None,
            Backend::Fentry => Some(CallHook::Fentry),
            Backend::Kprobe => Some(CallHook::Kprobe),
        };
        let hook = tracing::plan_kernel_function(&rt, want, &traced[0].name, want_return)?;
        Ok((traced, hook))
    })?;
    run_traced(&mut rt, traced, hook, want_return)
}

/// Loads the generic programs of `hook` for each traced target, attaches them and streams.
pub(super) fn run_traced(
    rt: &mut Runtime,
    traced: Vec<Traced>,
    hook: CallHook,
    want_return: bool,
) -> Result<i32, Error> {
    for t in &traced {
        rt.say(format_args!("{}: {}", t.name, t.proto.c_decl));
    }
    let transport = rt.plan_transport()?;
    // (program name, traced slot, return probe) of every program to load.
    let wanted: Vec<(String, usize, bool)> = (0..traced.len())
        .flat_map(|slot| [(prog_name(hook, false, slot), slot, false), (prog_name(hook, true, slot), slot, true)])
        .filter(|(_, _, ret)| !ret || want_return)
        .collect();
    let names: Vec<String> = traced.iter().map(|t| t.name.clone()).collect();
    let target_of =
        |prog: &str| wanted.iter().find(|(n, ..)| n == prog).map(|&(_, slot, ret)| (names[slot].as_str(), ret));
    let mut storage = MaybeUninit::uninit();
    let skel: KprobeSkel<'_> =
        rt.open_load("kprobe", KprobeSkelBuilder::default(), &mut storage, transport, |open| {
            let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
            let c = &mut ro.tk_kprobe;
            c.want_return = want_return as u32;
            for (f, t) in c.funcs.iter_mut().zip(&traced) {
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
            tracing::select_programs(open.open_object_mut(), hook, target_of)
        })?;
    let printer = KprobePrinter { traced, want_return };
    rt.stream(&skel, transport, printer, |skel| {
        use libbpf_rs::skel::Skel;
        tracing::attach_programs(skel.object(), hook, target_of)
    })
}

struct KprobePrinter {
    traced: Vec<Traced>,
    want_return: bool,
}

impl Printer for KprobePrinter {
    type Event = types::tk_kprobe_event;
    const MIN_LEN: usize = std::mem::offset_of!(types::tk_kprobe_event, str);
    const COLUMNS: &'static str = CALL_COLUMNS;

    fn stack_ids(ev: &Self::Event) -> Option<(u32, i32, i32)> {
        Some((ev.hdr.pid, ev.kstack, ev.ustack))
    }

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        TaskHeader::from(&ev.hdr).into()
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let Some(t) = self.traced.get(ev.slot as usize) else { return Ok(()) };
        let ret = (ev.flags & F_RETURN != 0).then_some(ev.ret);
        call_row_start(out.w(), &TaskHeader::from(&ev.hdr), ret.map(|_| ev.latency_ns))?;
        t.write_row(out.w(), &ev.vals, &|s| slot_str(&ev.str_len, &ev.str, s), ret)
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let Some(t) = self.traced.get(ev.slot as usize) else { return Ok(()) };
        let ret = (ev.flags & F_RETURN != 0).then_some(ev.ret);
        let truncated = t.write_json(out, &ev.vals, &|s| slot_str(&ev.str_len, &ev.str, s), ret)?;
        json_call_tail(out, self.want_return.then_some(ev.latency_ns), truncated)
    }
}
