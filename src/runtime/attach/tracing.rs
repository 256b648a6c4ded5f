//! Tracing attachments: fentry/fexit, kprobe/kretprobe (one or many, with cookies), tp_btf,
//! raw_tp, classic tracepoints, uprobe/uretprobe and perf events. Each function takes a loaded
//! program and its planned target and returns the owned [`Link`] (it detaches when dropped);
//! a failure is an [`Error::Attach`] that names the target and the usual fix.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use libbpf_rs::{
    ErrorKind, KprobeMultiOpts, KprobeOpts, Link, Object, OpenObject, OpenProgramMut, ProgramMut, TracepointCategory,
    TracepointOpts, UprobeOpts,
};

use crate::error::Error;
use crate::runtime::probe::{Feature, Status};
use crate::runtime::{Runtime, kernel};

/// The syscall tracepoints closest to a kernel function, as the hint when it cannot be traced.
pub fn alternative(func: &str) -> String {
    let sys = func.trim_start_matches("__x64_").trim_start_matches("do_").trim_start_matches("sys_");
    if func.contains("sys_") {
        format!(
            "trace the syscall tracepoints instead (syscalls:sys_enter_{sys} / sys_exit_{sys}); \
             `tracekit probe` shows what this kernel supports"
        )
    } else {
        "run on a kernel with CONFIG_KPROBES or fentry support; `tracekit probe` shows what this kernel supports".into()
    }
}

/// A kernel function (or raw tracepoint) that would not attach: why, and what to do instead.
fn kernel_error(func: &str, ret: bool, source: libbpf_rs::Error) -> Error {
    Error::Attach {
        what: format!("{} {func}", if ret { "return probe on" } else { "probe on" }),
        hint: Some(match source.kind() {
            ErrorKind::NotFound => {
                format!("`{func}` may be inlined or not traceable (notrace); see `tracekit list kernel '{func}'`")
            }
            _ => alternative(func),
        }),
        source,
    }
}

/// Before load: the kernel function (fentry/fexit) or tracepoint (tp_btf) a BTF-typed tracing
/// program is verified against and later attached to.
pub fn set_btf_target(prog: &mut OpenProgramMut<'_>, target: &str) -> Result<(), Error> {
    prog.set_attach_target(0, Some(target.to_owned()))
        .map_err(|e| Error::runtime(format!("setting the fentry target `{target}`: {e}"), None))
}

/// fentry/fexit on `func` (the target was set before load by [`set_btf_target`]).
pub fn fentry(prog: &ProgramMut<'_>, func: &str, ret: bool) -> Result<Link, Error> {
    prog.attach().map_err(|e| kernel_error(func, ret, e))
}

/// tp_btf on the raw tracepoint `name` (the target was set before load by [`set_btf_target`]).
pub fn tp_btf(prog: &ProgramMut<'_>, name: &str) -> Result<Link, Error> {
    prog.attach().map_err(|e| kernel_error(name, false, e))
}

/// raw_tp on the raw tracepoint `name`.
pub fn raw_tp(prog: &ProgramMut<'_>, name: &str) -> Result<Link, Error> {
    prog.attach_raw_tracepoint(name).map_err(|e| kernel_error(name, false, e))
}

/// kprobe (or kretprobe with `ret`) on `func`; the program reads `cookie` with
/// bpf_get_attach_cookie (5.15+; 0 attaches without one).
pub fn kprobe(prog: &ProgramMut<'_>, func: &str, ret: bool, cookie: u64) -> Result<Link, Error> {
    let r = if cookie == 0 {
        prog.attach_kprobe(ret, func)
    } else {
        prog.attach_kprobe_with_opts(ret, func, KprobeOpts { cookie, ..Default::default() })
    };
    r.map_err(|e| kernel_error(func, ret, e))
}

/// One kprobe.multi link (5.18+) on every function of `funcs`, the i-th with `cookies[i]`
/// (or none when `cookies` is empty).
pub fn kprobe_multi(prog: &ProgramMut<'_>, funcs: &[String], cookies: &[u64], ret: bool) -> Result<Link, Error> {
    let opts =
        KprobeMultiOpts { symbols: funcs.to_vec(), cookies: cookies.to_vec(), retprobe: ret, ..Default::default() };
    prog.attach_kprobe_multi_with_opts(opts).map_err(|e| kernel_error(&funcs.join(","), ret, e))
}

/// How a program with BTF-typed arguments attaches to its kernel function or tracepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallHook {
    /// fentry/fexit: BPF trampolines.
    Fentry,
    /// kprobe/kretprobe.
    Kprobe,
    TpBtf,
    RawTp,
}

impl CallHook {
    /// BTF-typed programs are verified against their target: it is set before load.
    pub fn target_before_load(self) -> bool {
        matches!(self, CallHook::Fentry | CallHook::TpBtf)
    }

    /// Attaches a loaded program of this kind to `target` (`ret`: the return probe).
    pub fn attach(self, prog: &ProgramMut<'_>, target: &str, ret: bool) -> Result<Link, Error> {
        match self {
            CallHook::Fentry => fentry(prog, target, ret),
            CallHook::Kprobe => kprobe(prog, target, ret, 0),
            CallHook::TpBtf => tp_btf(prog, target),
            CallHook::RawTp => raw_tp(prog, target),
        }
    }
}

/// The hook for kernel functions: `want` (fentry or kprobe) or, without one, fentry/fexit when
/// the kernel allows trampolines, else kprobe/kretprobe. Each needs its entry kind, and its
/// return kind too with `want_return`; `first` (a traced function) names the alternative.
pub fn plan_kernel_function(
    rt: &Runtime,
    want: Option<CallHook>,
    first: &str,
    want_return: bool,
) -> Result<CallHook, Error> {
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
    let hook = match want {
        Some(CallHook::Fentry) if fentry.is_supported() => CallHook::Fentry,
        Some(CallHook::Fentry) => return Err(unsupported("fentry", &fentry)),
        Some(_) if kprobe.is_supported() => CallHook::Kprobe,
        Some(_) => return Err(unsupported("kprobe", &kprobe)),
        None if fentry.is_supported() => CallHook::Fentry,
        None if kprobe.is_supported() => CallHook::Kprobe,
        None => {
            return Err(Error::Unsupported {
                feature: "kprobe",
                reason: format!("kprobes: {}; fentry: {}", kprobe.detail(), fentry.detail()),
                hint: Some(alternative(first)),
            });
        }
    };
    match hook {
        CallHook::Fentry => rt.say("plan: fentry/fexit (BPF trampolines)"),
        _ => rt.say(format_args!("plan: kprobe/kretprobe (fentry: {fentry})")),
    }
    Ok(hook)
}

/// Before load: loads only the programs `target_of` names (and the `-- CMD` follow programs
/// as configured), setting each one's target when `hook` needs it then.
pub fn select_programs<'t>(
    obj: &mut OpenObject,
    hook: CallHook,
    target_of: impl Fn(&str) -> Option<(&'t str, bool)>,
) -> Result<(), Error> {
    for mut prog in obj.progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        match target_of(&name) {
            Some((target, _)) => {
                prog.set_autoload(true);
                if hook.target_before_load() {
                    set_btf_target(&mut prog, target)?;
                }
            }
            None if name.starts_with("tk_follow") => {}
            None => prog.set_autoload(false),
        }
    }
    Ok(())
}

/// After load: every program `target_of` names, attached to its target.
pub fn attach_programs<'t>(
    obj: &Object,
    hook: CallHook,
    target_of: impl Fn(&str) -> Option<(&'t str, bool)>,
) -> Result<Vec<Link>, Error> {
    obj.progs_mut()
        .filter_map(|prog| {
            let (target, ret) = target_of(&prog.name().to_string_lossy())?;
            Some(hook.attach(&prog, target, ret))
        })
        .collect()
}

/// How a program reads a tracepoint: BTF-typed arguments, or the classic record (tracefs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpHook {
    TpBtf,
    Tracepoint,
}

/// The hook for the tracepoint `CATEGORY:NAME`: `want`, or without one tp_btf when the kernel
/// has it, else the classic tracepoint (which needs tracefs).
pub fn plan_tracepoint(rt: &Runtime, want: Option<TpHook>, tracepoint: &str) -> Result<TpHook, Error> {
    let tp_btf = rt.probes.get(Feature::TpBtf);
    let hook = match want {
        Some(TpHook::TpBtf) if !tp_btf.is_supported() => {
            return Err(Error::Unsupported {
                feature: "tp_btf",
                reason: tp_btf.detail(),
                hint: Some("use --backend tracepoint".into()),
            });
        }
        Some(hook) => hook,
        None if tp_btf.is_supported() => TpHook::TpBtf,
        None => TpHook::Tracepoint,
    };
    let (category, name) = tracepoint.split_once(':').expect("category:name");
    match hook {
        TpHook::TpBtf => rt.say(format_args!("plan: tp_btf/{name}")),
        TpHook::Tracepoint => {
            rt.say(format_args!("plan: tracepoint/{category}/{name} (tp_btf: {tp_btf})"));
            kernel::ensure_tracefs()?;
        }
    }
    Ok(hook)
}

/// A program whose section names its own target (`SEC("tp_btf/NAME")`, `SEC("tp/CAT/NAME")`).
pub fn by_section(prog: &ProgramMut<'_>, what: &str, hint: &str) -> Result<Link, Error> {
    prog.attach().map_err(|source| Error::Attach { what: what.into(), hint: Some(hint.into()), source })
}

/// The classic tracepoint `name` (`CATEGORY:NAME`), with a cookie when the program tells
/// several tracepoints apart by bpf_get_attach_cookie.
pub fn tracepoint(prog: &ProgramMut<'_>, name: &str, cookie: Option<u64>, hint: Option<&str>) -> Result<Link, Error> {
    let (c, e) = name.split_once(':').expect("category:name");
    let category = TracepointCategory::Custom(c.to_owned());
    let link = match cookie {
        Some(cookie) => prog.attach_tracepoint_with_opts(category, e, TracepointOpts { cookie, ..Default::default() }),
        None => prog.attach_tracepoint(category, e),
    };
    link.map_err(|source| Error::Attach { what: format!("tracepoint {name}"), hint: hint.map(Into::into), source })
}

/// Where a uprobe goes: a function's file offset in an ELF file, named `label` in messages.
pub struct UprobeTarget<'a> {
    pub label: &'a str,
    pub path: &'a Path,
    pub file_offset: u64,
}

/// uprobe (or uretprobe with `ret`) at `target`, in every process or only in `pid`.
pub fn uprobe(
    prog: &ProgramMut<'_>,
    target: &UprobeTarget<'_>,
    pid: Option<u32>,
    ret: bool,
    cookie: u64,
) -> Result<Link, Error> {
    let opts = UprobeOpts { cookie, retprobe: ret, ..Default::default() };
    prog.attach_uprobe_with_opts(pid.map_or(-1, |p| p as i32), target.path, target.file_offset as usize, opts)
        .map_err(|source| uprobe_error(target, source))
}

fn uprobe_error(t: &UprobeTarget<'_>, source: libbpf_rs::Error) -> Error {
    let hint = match source.kind() {
        ErrorKind::InvalidInput => format!(
            "the kernel refused the uprobe (EINVAL): another tracer may hold a uprobe on `{}` with a \
             different reference counter (see dmesg: ref_ctr_offset mismatch); trace a copy of the \
             binary, or stop the other tracer",
            t.path.display()
        ),
        ErrorKind::NotFound => "the uprobe PMU is missing: see `tracekit probe` (uprobe)".to_owned(),
        _ => "see `tracekit probe` for what this kernel supports".to_owned(),
    };
    Error::Attach { what: format!("uprobe {}", t.label), hint: Some(hint), source }
}

/// From linux/perf_event.h.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// A software cpu-clock event on `cpu` sampling `hz` times a second (no hardware PMU needed).
fn cpu_clock_event(cpu: i32, hz: u64) -> io::Result<OwnedFd> {
    let mut attr = libbpf_rs::libbpf_sys::perf_event_attr {
        type_: libbpf_rs::libbpf_sys::PERF_TYPE_SOFTWARE,
        size: size_of::<libbpf_rs::libbpf_sys::perf_event_attr>() as u32,
        config: u64::from(libbpf_rs::libbpf_sys::PERF_COUNT_SW_CPU_CLOCK),
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_freq = hz;
    attr.set_freq(1);
    // SAFETY: perf_event_open with a valid attr for the call; pid -1 + cpu = that CPU, all tasks.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, &attr as *const _, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A perf_event program on `cpu`'s software cpu-clock, sampling `hz` times a second.
pub fn cpu_clock(prog: &ProgramMut<'_>, cpu: i32, hz: u64) -> Result<Link, Error> {
    let fd = cpu_clock_event(cpu, hz).map_err(|e| {
        Error::io_hint(format!("opening the cpu-clock event on CPU {cpu}"), e, "see `tracekit probe` (perf_event)")
    })?;
    // The link owns the perf event fd from here on (libbpf closes it on detach).
    prog.attach_perf_event(fd.into_raw_fd()).map_err(|source| Error::Attach {
        what: format!("perf_event on CPU {cpu}"),
        hint: None,
        source,
    })
}
