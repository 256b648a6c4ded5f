//! `tracekit tp_btf NAME…` and `tracekit raw_tp NAME…`: raw tracepoints, their arguments named
//! and typed from the kernel's BTF, decoded through kprobe's decode plans and generic programs.

use clap::Args;

use super::kprobe::{Hook, MAX_FUNCS, did_you_mean, plan_values, run_traced, too_many};
use crate::error::Error;
use crate::runtime::btf::KernelBtf;
use crate::runtime::probe::Feature;
use crate::runtime::{CommonArgs, Runtime};

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit tp_btf inet_sock_set_state -a 'sk->__sk_common.skc_num'\n    \
    tracekit raw_tp sched_process_exec -a 'p->comm' --json\n    \
    tracekit tp_btf 'sched_process_*'\n\n\
Arguments are named and typed from the kernel's BTF (its `__bpf_trace_NAME` wrapper).")]
pub struct RawTpArgs {
    /// Raw tracepoints (comma-separated or repeated; globs allowed, at most 16)
    #[arg(required = true, value_name = "NAME", value_delimiter = ',')]
    pub names: Vec<String>,

    /// Also print this field path from an argument (repeatable): `sk->__sk_common.skc_num`
    #[arg(short = 'a', long = "arg", value_name = "EXPR")]
    pub fields: Vec<String>,

    /// Also record and print each event's kernel and user stack (symbolized)
    #[arg(long)]
    pub stack: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// `tracekit tp_btf` (BTF-typed, 5.5+) and `tracekit raw_tp` (4.17+): the raw arguments of a
/// tracepoint, decoded by type, through the same decode plans as kprobe.
pub fn run(args: RawTpArgs, btf_typed: bool) -> Result<i32, Error> {
    let mut rt = Runtime::new(args.common.clone())?;
    rt.stack = args.stack;
    let (feature, hook) = if btf_typed { (Feature::TpBtf, Hook::TpBtf) } else { (Feature::RawTp, Hook::RawTp) };
    let status = rt.probes.get(feature);
    if !status.is_supported() {
        return Err(Error::Unsupported { feature: feature.name(), reason: status.detail(), hint: Some("see `tracekit probe`".into()) });
    }
    let btf = rt.step("btf", || KernelBtf::load(rt.out.btf.as_deref()))?;
    let all = btf.tracepoint_names();
    let mut protos = Vec::new();
    for w in &args.names {
        let names: Vec<String> = if w.contains(['*', '?', '[']) {
            let pat = glob::Pattern::new(w).map_err(|e| Error::usage(format!("bad glob `{w}`: {e}"), None))?;
            all.iter().filter(|n| pat.matches(n)).cloned().collect()
        } else {
            vec![w.clone()]
        };
        if names.len() > MAX_FUNCS {
            return Err(too_many(names.len()));
        }
        for n in names {
            let p = btf.tracepoint_prototype(&n).ok_or_else(|| {
                Error::usage(
                    format!("raw tracepoint `{n}` not found in kernel BTF"),
                    Some(did_you_mean(&all, &n).unwrap_or_else(|| "see `tracekit list tracepoint` (the part after `:`)".into())),
                )
            })?;
            protos.push((n, p));
        }
    }
    if protos.is_empty() {
        return Err(Error::usage("no raw tracepoint matches", Some("see `tracekit list tracepoint`".into())));
    }
    if protos.len() > MAX_FUNCS {
        return Err(too_many(protos.len()));
    }
    let traced = plan_values(&btf, protos, &args.fields)?;
    drop(btf);
    run_traced(&mut rt, traced, hook, false)
}
