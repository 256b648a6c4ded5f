//! `tracekit tp_btf NAME…` and `tracekit raw_tp NAME…`: raw tracepoints, their arguments named
//! and typed from the kernel's BTF, decoded through kprobe's decode plans and generic programs.

use clap::Args;

use super::kprobe::{MAX_FUNCS, run_traced};
use crate::error::Error;
use crate::runtime::attach::tracing::CallHook;
use crate::runtime::btf::KernelBtf;
use crate::runtime::callplan::plan_values;
use crate::runtime::probe::Feature;
use crate::runtime::resolve;
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
    let (feature, hook) = if btf_typed { (Feature::TpBtf, CallHook::TpBtf) } else { (Feature::RawTp, CallHook::RawTp) };
    let traced = rt.plan(|| {
        let status = rt.probes.get(feature);
        if !status.is_supported() {
            let hint = Some("see `tracekit probe`".into());
            return Err(Error::Unsupported { feature: feature.name(), reason: status.detail(), hint });
        }
        rt.say(format_args!("plan: {}", feature.name()));
        let btf = rt.step("btf", || KernelBtf::load(rt.out.btf.as_deref()))?;
        let protos = resolve::raw_tracepoints(&btf, &args.names, MAX_FUNCS)?;
        plan_values(&btf, protos, &args.fields)
    })?;
    run_traced(&mut rt, traced, hook, false)
}
