//! Decode plans for calls with BTF-typed arguments (fentry/fexit, kprobe/kretprobe, tp_btf,
//! raw_tp): which values a generic program fetches for each traced function (arguments, `-a`
//! field paths, string slots), and how each prints, by its BTF type, in a row or in JSON.

use std::borrow::Cow;
use std::io::{self, Write};

use crate::error::Error;
use crate::runtime::btf::{Fetch, KernelBtf, Prototype, ValueKind};
use crate::runtime::output::Sink;
use crate::runtime::value::{Shown, mask, sign_extend};

/// Must match kprobe.h.
const MAX_FETCHES: usize = 8;
const STRS: usize = 2;

/// A string slot's text and whether it was truncated, by slot number.
pub type StrOf<'e> = &'e dyn Fn(usize) -> Option<(Cow<'e, str>, bool)>;

/// One traced function: what its program fetches and how each value prints.
#[derive(Debug, Clone)]
pub struct Traced {
    pub name: String,
    pub proto: Prototype,
    pub fetches: Vec<Fetch>,
    /// String slot of each fetch.
    pub str_slots: Vec<Option<usize>>,
}

/// Each traced function's values: its arguments (the first six) and the `-a` field paths that
/// start at one of its parameters, each with a string slot if it is a string.
pub fn plan_values(btf: &KernelBtf, funcs: Vec<(String, Prototype)>, fields: &[String]) -> Result<Vec<Traced>, Error> {
    let mut used = vec![false; fields.len()];
    let mut traced = Vec::new();
    for (name, proto) in funcs {
        let mut fetches: Vec<Fetch> = proto
            .params
            .iter()
            .take(6)
            .enumerate()
            .map(|(i, (pname, kind, _))| Fetch {
                label: pname.clone(),
                arg: i as u8,
                offsets: vec![],
                tail: 0,
                kind: kind.clone(),
            })
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

impl Traced {
    /// `name(a=1, b="x")` and, for a return, ` = ret` (` = -ENOENT` for an error).
    pub fn write_row(&self, w: &mut impl Write, vals: &[u64], strs: StrOf<'_>, ret: Option<u64>) -> io::Result<()> {
        write!(w, "{}(", self.name)?;
        for (i, f) in self.fetches.iter().enumerate() {
            write!(w, "{}{}=", if i > 0 { ", " } else { "" }, f.label)?;
            shown(&f.label, &f.kind, vals[i], self.str_slots[i].and_then(strs)).write(w)?;
        }
        w.write_all(b")")?;
        match ret {
            Some(ret) if self.proto.ret != ValueKind::Void => match errno_of(&self.proto.ret, ret) {
                Some(e) => write!(w, " = -{e:?}"),
                None => {
                    w.write_all(b" = ")?;
                    shown("", &self.proto.ret, ret, None).write(w)
                }
            },
            _ => Ok(()),
        }
    }

    /// `"func"`, `"args"` and, for a return, `"ret"` (and `"errno"`); true if a string was cut.
    pub fn write_json(&self, out: &mut Sink, vals: &[u64], strs: StrOf<'_>, ret: Option<u64>) -> io::Result<bool> {
        out.field_str("func", &self.name)?;
        out.object_start("args")?;
        let mut truncated = false;
        for (i, f) in self.fetches.iter().enumerate() {
            let v = shown(&f.label, &f.kind, vals[i], self.str_slots[i].and_then(strs));
            truncated |= v.is_truncated();
            v.json(out, &f.label)?;
        }
        out.object_end()?;
        if let Some(ret) = ret.filter(|_| self.proto.ret != ValueKind::Void) {
            shown("", &self.proto.ret, ret, None).json(out, "ret")?;
            if let Some(e) = errno_of(&self.proto.ret, ret) {
                out.field_display("errno", format_args!("{e:?}"))?;
            }
        }
        Ok(truncated)
    }
}

pub fn shown<'a>(label: &str, kind: &'a ValueKind, raw: u64, s: Option<(Cow<'a, str>, bool)>) -> Shown<'a> {
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
pub fn errno_of(kind: &ValueKind, raw: u64) -> Option<nix::errno::Errno> {
    let v = match kind {
        ValueKind::Int { bytes, signed: true } => sign_extend(raw, *bytes),
        ValueKind::Ptr { .. } | ValueKind::Str => raw as i64, // ERR_PTR
        _ => return None,
    };
    (-4095..0).contains(&v).then(|| nix::errno::Errno::from_raw(-v as i32))
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
        let funcs = crate::runtime::resolve::kernel_functions(&btf, &["do_sys_openat2".into()], 16).unwrap();
        let t = plan_values(&btf, funcs, &["how->flags".into(), "how->mode".into()]).unwrap();
        let labels: Vec<&str> = t[0].fetches.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(labels, ["dfd", "filename", "how", "how->flags", "how->mode"]);
        assert_eq!(t[0].str_slots, [None, Some(0), None, None, None]);
        let vfs_read = crate::runtime::resolve::kernel_functions(&btf, &["vfs_read".into()], 16).unwrap();
        let e = plan_values(&btf, vfs_read, &["how->flags".into()]).unwrap_err();
        assert!(e.to_string().contains("names no parameter"));
    }
}
