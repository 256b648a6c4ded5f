//! Puts a translated pcap filter into the packet programs as they load.
//!
//! The packet programs call `tk_pcap_filter(ctx, data, data_end, len)` (pkt.bpf.h), a
//! `__noinline` subprogram whose body is a placeholder. libbpf appends subprograms to each
//! program while it relocates; only then are the final instructions known, so the body is
//! replaced in libbpf's last step before the kernel sees the program, a prepare-load callback
//! (libbpf_register_prog_handler for the packet programs' sections). The placeholder's
//! instructions are cut out and the filter is appended at the end, as the last subprogram: the
//! calls to it and the BTF function and line records are moved to match, so the verifier
//! checks the filter like any other function.

use std::ffi::{CString, c_int, c_long};
use std::sync::{Mutex, OnceLock};

use libbpf_rs::AsRawLibbpf;
use libbpf_rs::libbpf_sys as sys;

use super::ClassicInsn;
use super::translate::{Insn, PacketAccess, is_function_address, is_subprogram_call, translate};
use crate::error::Error;

/// The packet programs' filter function (pkt.bpf.h).
pub const FILTER_FUNCTION: &str = "tk_pcap_filter";

/// The sections of the packet programs: (section, program type, expected attach type) as
/// libbpf's own definitions, which the handler takes over.
const SECTIONS: [(&str, sys::bpf_prog_type, sys::bpf_attach_type); 3] = [
    ("xdp", sys::BPF_PROG_TYPE_XDP, sys::BPF_XDP),
    ("tc", sys::BPF_PROG_TYPE_SCHED_CLS, 0),
    ("socket", sys::BPF_PROG_TYPE_SOCKET_FILTER, 0),
];

struct Armed {
    classic: Vec<ClassicInsn>,
    /// BTF id of the filter function in the object being loaded.
    function_type_id: u32,
    /// The function and line records handed to libbpf for the loads in progress: it reads
    /// them during bpf_prog_load, after the callback returns.
    records: Vec<Vec<u8>>,
    /// Why a rewrite failed (the callback can only return an errno).
    error: Option<String>,
}

static ARMED: Mutex<Option<Armed>> = Mutex::new(None);
static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();

/// Takes over libbpf's handling of the packet sections (once per process, before the object
/// is opened: libbpf picks a program's handler at open).
pub fn register() -> Result<(), Error> {
    REGISTERED
        .get_or_init(|| {
            for (section, prog_type, attach_type) in SECTIONS {
                let name = CString::new(section).expect("no NUL");
                let opts = sys::libbpf_prog_handler_opts {
                    sz: std::mem::size_of::<sys::libbpf_prog_handler_opts>() as _,
                    prog_prepare_load_fn: Some(prepare_load),
                    ..Default::default()
                };
                // SAFETY: `name` and `opts` are valid for the call; libbpf copies the name.
                let id = unsafe { sys::libbpf_register_prog_handler(name.as_ptr(), prog_type, attach_type, &opts) };
                if id < 0 {
                    return Err(format!("registering the filter for `{section}` programs: error {id}"));
                }
            }
            Ok(())
        })
        .clone()
        .map_err(|e| Error::runtime(e, None))
}

/// Arms the filter for the next load of `object` (opened after [`register`]).
pub fn arm(object: &libbpf_rs::OpenObject, classic: Vec<ClassicInsn>) -> Result<(), Error> {
    let obj = object.as_libbpf_object();
    let name = CString::new(FILTER_FUNCTION).expect("no NUL");
    // SAFETY: `obj` is a live, opened object; its BTF (if any) lives as long as it does.
    let id = unsafe {
        let btf = sys::bpf_object__btf(obj.as_ptr());
        if btf.is_null() { -1 } else { sys::btf__find_by_name_kind(btf, name.as_ptr(), sys::BTF_KIND_FUNC) }
    };
    if id <= 0 {
        return Err(Error::runtime(format!("the packet object has no `{FILTER_FUNCTION}` in its BTF"), None));
    }
    *lock() = Some(Armed { classic, function_type_id: id as u32, records: Vec::new(), error: None });
    Ok(())
}

/// After the load: why the filter could not be put in, if it could not.
pub fn disarm() -> Option<String> {
    lock().take().and_then(|a| a.error)
}

fn lock() -> std::sync::MutexGuard<'static, Option<Armed>> {
    ARMED.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C" fn prepare_load(prog: *mut sys::bpf_program, opts: *mut sys::bpf_prog_load_opts, _: c_long) -> c_int {
    let mut guard = lock();
    let Some(armed) = guard.as_mut() else {
        return 0;
    };
    // SAFETY: libbpf passes its program and the load attributes it is about to use.
    match unsafe { rewrite(prog, &mut *opts, armed) } {
        Ok(()) => 0,
        Err(why) => {
            armed.error = Some(why);
            -libc::EINVAL
        }
    }
}

/// One BTF record (function or line): its first word is the instruction offset.
fn records(ptr: *const std::ffi::c_void, count: u32, size: u32) -> Vec<Vec<u8>> {
    if ptr.is_null() || count == 0 || size < 4 {
        return Vec::new();
    }
    // SAFETY: libbpf's arrays of `count` records of `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), count as usize * size as usize) };
    bytes.chunks(size as usize).map(<[u8]>::to_vec).collect()
}

fn offset_of(record: &[u8]) -> usize {
    u32::from_ne_bytes(record[..4].try_into().expect("4 bytes")) as usize
}

fn set_offset(record: &mut [u8], off: usize) {
    record[..4].copy_from_slice(&(off as u32).to_ne_bytes());
}

/// # Safety
/// `prog` is a program libbpf is loading, with relocated instructions.
unsafe fn rewrite(
    prog: *mut sys::bpf_program,
    opts: &mut sys::bpf_prog_load_opts,
    armed: &mut Armed,
) -> Result<(), String> {
    // SAFETY: (all calls) `prog` is live for the duration of the callback.
    let access = match unsafe { sys::bpf_program__type(prog) } {
        sys::BPF_PROG_TYPE_XDP => PacketAccess::Direct,
        sys::BPF_PROG_TYPE_SCHED_CLS => PacketAccess::SkbLoadBytes,
        sys::BPF_PROG_TYPE_SOCKET_FILTER => PacketAccess::SkbLoadBytesFromMac,
        _ => return Ok(()),
    };
    // SAFETY: see above; Insn has struct bpf_insn's layout (8 bytes, checked at compile time).
    let insns: Vec<Insn> = unsafe {
        let n = sys::bpf_program__insn_cnt(prog);
        std::slice::from_raw_parts(sys::bpf_program__insns(prog).cast::<Insn>(), n as usize).to_vec()
    };
    let mut funcs = records(opts.func_info, opts.func_info_cnt, opts.func_info_rec_size);
    let mut lines = records(opts.line_info, opts.line_info_cnt, opts.line_info_rec_size);
    if funcs.is_empty() {
        return Err("the kernel took no BTF function records for the packet program".into());
    }
    let type_of = |r: &[u8]| u32::from_ne_bytes(r[4..8].try_into().expect("4 bytes"));
    let Some(which) = funcs.iter().position(|r| type_of(r) == armed.function_type_id) else {
        return Err(format!("`{FILTER_FUNCTION}` is not called by the program"));
    };
    let start = offset_of(&funcs[which]);
    let end = funcs.iter().map(|r| offset_of(r)).filter(|&o| o > start).min().unwrap_or(insns.len());
    let filter = translate(&armed.classic, access).map_err(|u| format!("the expression compiles to {}", u.0))?;

    // New layout: everything but the placeholder, then the filter.
    let removed = end - start;
    let filter_at = insns.len() - removed;
    let moved = |x: usize| -> usize {
        if x < start {
            x
        } else if x >= end {
            x - removed
        } else {
            filter_at + (x - start)
        }
    };
    let mut out = Vec::with_capacity(filter_at + filter.len());
    for (at, insn) in insns.iter().enumerate() {
        if (start..end).contains(&at) {
            continue;
        }
        let mut insn = *insn;
        if is_subprogram_call(&insn) || is_function_address(&insn) {
            let target = at as i64 + 1 + i64::from(insn.imm);
            if target < 0 || target as usize >= insns.len() || ((start + 1)..end).contains(&(target as usize)) {
                return Err(format!("a call at {at} into the middle of `{FILTER_FUNCTION}`"));
            }
            let relative = moved(target as usize) as i64 - moved(at) as i64 - 1;
            insn.imm = i32::try_from(relative).map_err(|_| "call offset overflow".to_owned())?;
        }
        out.push(insn);
    }
    out.extend_from_slice(&filter);

    for r in &mut funcs {
        let off = offset_of(r);
        set_offset(r, moved(off));
    }
    funcs.sort_by_key(|r| offset_of(r));
    // The placeholder's line records go; one stays for the filter's first instruction (the
    // verifier wants a line record at the start of every function when there are any).
    let first_line = lines.iter().find(|r| offset_of(r) == start).cloned();
    lines.retain(|r| !(start..end).contains(&offset_of(r)));
    for r in &mut lines {
        let off = offset_of(r);
        set_offset(r, moved(off));
    }
    if let Some(mut r) = first_line {
        set_offset(&mut r, filter_at);
        lines.push(r);
    }
    lines.sort_by_key(|r| offset_of(r));

    // SAFETY: `out` holds `out.len()` instructions laid out as struct bpf_insn; libbpf copies them.
    let rc = unsafe { sys::bpf_program__set_insns(prog, out.as_ptr().cast_mut().cast(), out.len() as _) };
    if rc != 0 {
        return Err(format!("replacing the program's instructions: error {rc}"));
    }
    let funcs: Vec<u8> = funcs.concat();
    let lines_count = lines.len() as u32;
    let lines: Vec<u8> = lines.concat();
    opts.func_info = funcs.as_ptr().cast();
    opts.line_info = if lines.is_empty() { std::ptr::null() } else { lines.as_ptr().cast() };
    opts.line_info_cnt = lines_count;
    // The vectors' heap buffers do not move when the vectors do.
    armed.records.push(funcs);
    armed.records.push(lines);
    Ok(())
}
