//! Kernel BTF, read for decoding: function prototypes, how each value prints, and field paths
//! (`how->flags`, `sk->__sk_common.skc_num`) turned into offsets a generic BPF program follows.

use std::path::Path;

use libbpf_rs::btf::types::{Composite, Enum, Enum64, Func, FuncProto, Int, IntEncoding, MemberAttr};
use libbpf_rs::btf::{Btf, BtfKind, BtfType, HasSize, ReferencesType, TypeId};

use crate::error::Error;

pub struct KernelBtf {
    btf: Btf<'static>,
}

/// How one value prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    Int {
        bytes: u8,
        signed: bool,
    },
    Bool,
    Enum {
        bytes: u8,
        signed: bool,
        variants: Vec<(i64, String)>,
    },
    /// `char *`: read as a string (user or kernel memory, decided by the address).
    Str,
    /// Other pointers, printed as hex; `pointee` names what it points to.
    Ptr {
        pointee: String,
    },
    /// A struct or union passed by value: only its fields can be printed (`-a`).
    Composite(String),
    Void,
    /// Floats and the like: printed as raw hex.
    Other(String),
}

/// One function's parameters and return type.
#[derive(Debug, Clone)]
pub struct Prototype {
    pub name: String,
    pub params: Vec<(String, ValueKind, TypeId)>,
    pub ret: ValueKind,
    /// As C, for `list` and messages.
    pub c_decl: String,
}

/// How to get one value: start at argument `arg`, follow `offsets` (read 8 bytes at each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub label: String,
    pub arg: u8,
    pub offsets: Vec<u32>,
    /// Added after the reads: an embedded `char[]` is read as a string at its address.
    pub tail: u32,
    pub kind: ValueKind,
}

pub const MAX_DEREFS: usize = 4;

fn name_of(t: &BtfType<'_>) -> String {
    t.name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Checks the file of `--btf` before anything is loaded with it: libbpf's own answers for a
/// directory, an empty file or garbage are EIO, "Unknown error 4001" and a verifier hint.
pub fn check_file(path: &Path) -> Result<(), Error> {
    let hint = || {
        Some(
            "give a kernel BTF file (raw BTF or an ELF with a .BTF section), e.g. from BTFHub for this kernel"
                .to_owned(),
        )
    };
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::usage(format!("--btf file `{shown}` not found"), hint()));
        }
        Err(e) => return Err(Error::usage(format!("--btf file `{shown}`: {e}"), hint())),
    };
    if meta.is_dir() {
        return Err(Error::usage(format!("--btf `{shown}` is a directory, not a BTF file"), hint()));
    }
    if !meta.is_file() {
        return Err(Error::usage(format!("--btf `{shown}` is not a regular file"), hint()));
    }
    if meta.len() == 0 {
        return Err(Error::usage(format!("--btf file `{shown}` is empty, not BTF"), hint()));
    }
    // libbpf reads raw BTF and ELF files with a .BTF section; anything else is not BTF.
    Btf::from_path(path)
        .map(drop)
        .map_err(|e| Error::usage(format!("--btf file `{shown}` is not BTF (libbpf: {e})"), hint()))
}

impl KernelBtf {
    /// The running kernel's BTF, or the file given with --btf.
    pub fn load(custom: Option<&Path>) -> Result<Self, Error> {
        let btf = match custom {
            Some(p) => Btf::from_path(p),
            None => Btf::from_vmlinux(),
        };
        btf.map(|btf| KernelBtf { btf }).map_err(|e| match custom {
            Some(p) => Error::usage(format!("--btf file `{}` is not BTF: {e}", p.display()), None),
            None => Error::runtime(
                format!("cannot read kernel BTF: {e}"),
                Some("the kernel needs CONFIG_DEBUG_INFO_BTF (/sys/kernel/btf/vmlinux), or pass --btf FILE".into()),
            ),
        })
    }

    fn func(&self, name: &str) -> Option<Func<'_>> {
        // libbpf-rs panics on a name with a NUL (it makes a C string of it); no BTF name has one.
        if name.contains('\0') {
            return None;
        }
        self.btf
            .type_by_name::<Func<'_>>(name)
            .or_else(|| self.btf.type_by_kind::<Func<'_>>().find(|f| f.name().is_some_and(|n| n == name)))
    }

    /// Every function name in BTF (for globs and "did you mean").
    pub fn func_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.btf.type_by_kind::<Func<'_>>().map(|f| name_of(&f)).collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn prototype(&self, name: &str) -> Option<Prototype> {
        self.prototype_of(self.func(name)?, name)
    }

    /// Every function whose name `keep` accepts, with its prototype (its name alone when BTF
    /// has none), sorted by name: one pass over BTF, since a lookup by name is itself a pass.
    pub fn functions(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Option<Prototype>)> {
        let mut v: Vec<(String, Option<Prototype>)> = self
            .btf
            .type_by_kind::<Func<'_>>()
            .filter_map(|f| {
                let name = name_of(&f);
                keep(&name).then(|| {
                    let p = self.prototype_of(f, &name);
                    (name, p)
                })
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        v
    }

    fn prototype_of(&self, func: Func<'_>, name: &str) -> Option<Prototype> {
        let proto = FuncProto::try_from(func.referenced_type()).ok()?;
        let ret_ty = proto.referenced_type();
        let mut params = Vec::new();
        let mut c_params = Vec::new();
        for (i, p) in proto.iter().enumerate() {
            let pname = p.name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("arg{i}"));
            let ty = self.btf.type_by_id::<BtfType<'_>>(p.ty)?;
            c_params.push(c_decl(&c_type(&ty), &pname));
            params.push((pname, self.kind(&ty), p.ty));
        }
        let c_decl = format!("{}({})", c_decl(&c_type(&ret_ty), name), c_params.join(", "));
        Some(Prototype { name: name.to_owned(), params, ret: self.kind(&ret_ty), c_decl })
    }

    /// A raw tracepoint's arguments, named from the kernel's `__bpf_trace_NAME` wrapper (its
    /// first parameter, the tracepoint's private data, is not an argument).
    pub fn tracepoint_prototype(&self, name: &str) -> Option<Prototype> {
        let Some(mut p) = self.prototype(&format!("__bpf_trace_{name}")) else {
            return self.tracepoint_typedef(name);
        };
        if !p.params.is_empty() {
            p.params.remove(0);
        }
        let args: Vec<String> =
            p.c_decl.split_once('(')?.1.trim_end_matches(')').split(", ").skip(1).map(str::to_owned).collect();
        p.c_decl = format!("{name}({})", args.join(", "));
        p.name = name.to_owned();
        p.ret = ValueKind::Void;
        Some(p)
    }

    /// Older kernels' BTF (Debian's 5.10) has no `__bpf_trace_` wrappers, only the
    /// `btf_trace_NAME` typedef, whose parameters are unnamed: they become `arg0`, `arg1`, ….
    fn tracepoint_typedef(&self, name: &str) -> Option<Prototype> {
        if name.contains('\0') {
            return None;
        }
        let td = self.btf.type_by_name::<BtfType<'_>>(&format!("btf_trace_{name}"))?;
        let proto = FuncProto::try_from(td.skip_mods_and_typedefs().next_type()?).ok()?;
        let mut params = Vec::new();
        let mut c_params = Vec::new();
        for (i, p) in proto.iter().skip(1).enumerate() {
            let pname = format!("arg{i}");
            let ty = self.btf.type_by_id::<BtfType<'_>>(p.ty)?;
            c_params.push(c_decl(&c_type(&ty), &pname));
            params.push((pname, self.kind(&ty), p.ty));
        }
        Some(Prototype {
            name: name.to_owned(),
            params,
            ret: ValueKind::Void,
            c_decl: format!("{name}({})", c_params.join(", ")),
        })
    }

    /// Every raw tracepoint that BTF names (for globs and "did you mean").
    pub fn tracepoint_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .btf
            .type_by_kind::<libbpf_rs::btf::types::Typedef<'_>>()
            .filter_map(|t| {
                t.name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("btf_trace_")).map(str::to_owned)
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn kind(&self, ty: &BtfType<'_>) -> ValueKind {
        let t = ty.skip_mods_and_typedefs();
        match t.kind() {
            BtfKind::Void => ValueKind::Void,
            BtfKind::Int => {
                let int = Int::try_from(t).expect("kind is Int");
                let bytes = (int.bits / 8).max(1);
                match int.encoding {
                    IntEncoding::Bool => ValueKind::Bool,
                    IntEncoding::Signed => ValueKind::Int { bytes, signed: true },
                    IntEncoding::Char => ValueKind::Int { bytes, signed: true },
                    IntEncoding::None => ValueKind::Int { bytes, signed: false },
                }
            }
            BtfKind::Enum => {
                let e = Enum::try_from(t).expect("kind is Enum");
                let variants = e
                    .iter()
                    .map(|m| (m.value, m.name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()))
                    .collect();
                ValueKind::Enum { bytes: e.size() as u8, signed: e.is_signed(), variants }
            }
            BtfKind::Enum64 => {
                let e = Enum64::try_from(t).expect("kind is Enum64");
                let variants = e
                    .iter()
                    .map(|m| (m.value as i64, m.name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()))
                    .collect();
                ValueKind::Enum { bytes: e.size() as u8, signed: e.is_signed(), variants }
            }
            BtfKind::Ptr => {
                let target = t.next_type().map(|n| n.skip_mods_and_typedefs());
                match target {
                    Some(p) if p.kind() == BtfKind::Int && Int::try_from(p).is_ok_and(|i| i.bits == 8) => {
                        ValueKind::Str
                    }
                    Some(p) => ValueKind::Ptr { pointee: c_type(&p) },
                    None => ValueKind::Ptr { pointee: "void".into() },
                }
            }
            BtfKind::Struct | BtfKind::Union => ValueKind::Composite(c_type(&t)),
            _ => ValueKind::Other(c_type(&t)),
        }
    }

    /// `how->flags`, `sk->__sk_common.skc_num`, `file->f_path.dentry->d_name.name`: a path from
    /// a parameter through pointers (`->`) and embedded structs (`.`) to a value.
    pub fn resolve_path(&self, proto: &Prototype, expr: &str) -> Result<Fetch, String> {
        let expr = expr.trim();
        let (first, mut rest) = split_ident(expr);
        let (arg, (_, _, ty_id)) =
            proto.params.iter().enumerate().find(|(_, (n, _, _))| n == first).ok_or_else(|| {
                let names: Vec<&str> = proto.params.iter().map(|(n, _, _)| n.as_str()).collect();
                format!("`{first}` is not a parameter of `{}` (parameters: {})", proto.name, names.join(", "))
            })?;
        if arg >= 6 {
            return Err(format!("`{first}` is parameter {} : only the first six can be read", arg + 1));
        }
        let mut ty = self.btf.type_by_id::<BtfType<'_>>(*ty_id).ok_or("bad BTF type id")?;
        // Where the value is: in a register (no pending read) or at `pending` bytes from the
        // last pointer read.
        let mut offsets: Vec<u32> = Vec::new();
        let mut pending: Option<u32> = None;
        let mut walked = first.to_owned();
        while !rest.is_empty() {
            let (deref, after) = if let Some(r) = rest.strip_prefix("->") {
                (true, r)
            } else if let Some(r) = rest.strip_prefix('.') {
                (false, r)
            } else {
                return Err(format!("expected `->` or `.` after `{walked}`, found `{rest}`"));
            };
            let (field, r) = split_ident(after);
            if field.is_empty() {
                return Err(format!("a field name must follow `{walked}{}`", if deref { "->" } else { "." }));
            }
            let mut t = ty.skip_mods_and_typedefs();
            if deref {
                if t.kind() != BtfKind::Ptr {
                    return Err(format!(
                        "`{walked}` is not a pointer ({}): use `.` for an embedded struct",
                        c_type(&t)
                    ));
                }
                if let Some(off) = pending.take() {
                    offsets.push(off); // read the pointer itself first
                }
                t = t.next_type().ok_or("pointer to nothing")?.skip_mods_and_typedefs();
                pending = Some(0);
            } else if pending.is_none() {
                return Err(format!("`{walked}` is a pointer or a value in a register: use `->`"));
            }
            let comp = Composite::try_from(t)
                .map_err(|t| format!("`{walked}` is a `{}`, not a struct or union", c_type(&t)))?;
            let (off, fty) = find_member(&self.btf, &comp, field).ok_or_else(|| {
                let names: Vec<String> =
                    comp.iter().filter_map(|m| m.name.map(|n| n.to_string_lossy().into_owned())).collect();
                let close: Vec<&String> =
                    names.iter().filter(|n| strsim::jaro_winkler(n, field) > 0.8).take(3).collect();
                format!(
                    "`{}` has no field `{field}`{}",
                    c_type(&t),
                    if close.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (did you mean {}?)",
                            close.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                        )
                    }
                )
            })?;
            pending = Some(pending.unwrap_or(0) + off);
            ty = fty;
            walked.push_str(if deref { "->" } else { "." });
            walked.push_str(field);
            rest = r;
        }
        // An embedded char array (`p->comm`): the string is at its address, nothing to read.
        let char_array = ty.skip_mods_and_typedefs().kind() == BtfKind::Array
            && libbpf_rs::btf::types::Array::try_from(ty.skip_mods_and_typedefs())
                .is_ok_and(|a| Int::try_from(a.contained_type().skip_mods_and_typedefs()).is_ok_and(|i| i.bits == 8));
        let mut tail = 0;
        match pending {
            Some(off) if char_array => tail = off,
            Some(off) => offsets.push(off),
            None => {}
        }
        if offsets.len() > MAX_DEREFS {
            return Err(format!("`{expr}` follows {} pointers; at most {MAX_DEREFS}", offsets.len()));
        }
        let kind = if char_array { ValueKind::Str } else { self.kind(&ty) };
        if let ValueKind::Composite(name) = &kind {
            return Err(format!("`{expr}` is a whole `{name}`: name one of its fields"));
        }
        Ok(Fetch { label: expr.to_owned(), arg: arg as u8, offsets, tail, kind })
    }
}

/// A member by name, looking through anonymous structs and unions; (byte offset, type).
fn find_member<'b>(btf: &'b Btf<'static>, comp: &Composite<'b>, name: &str) -> Option<(u32, BtfType<'b>)> {
    for m in comp.iter() {
        let bits = match m.attr {
            MemberAttr::Normal { offset } => offset,
            MemberAttr::BitField { .. } => {
                if m.name.is_some_and(|n| n == name) {
                    return None; // bitfields cannot be read with byte offsets
                }
                continue;
            }
        };
        let ty = btf.type_by_id::<BtfType<'_>>(m.ty)?;
        match m.name {
            Some(n) if n == name => return Some((bits / 8, ty)),
            None => {
                if let Ok(inner) = Composite::try_from(ty.skip_mods_and_typedefs())
                    && let Some((off, t)) = find_member(btf, &inner, name)
                {
                    return Some((bits / 8 + off, t));
                }
            }
            _ => {}
        }
    }
    None
}

fn split_ident(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    s.split_at(end)
}

/// `char *` + `name` → `char *name`; `int` + `name` → `int name`.
fn c_decl(ty: &str, name: &str) -> String {
    if ty.ends_with('*') { format!("{ty}{name}") } else { format!("{ty} {name}") }
}

/// A type as C spells it (`const char *`, `struct open_how *`, `unsigned int`).
pub fn c_type(ty: &BtfType<'_>) -> String {
    match ty.kind() {
        BtfKind::Void => "void".into(),
        BtfKind::Ptr => match ty.next_type() {
            Some(n) if n.kind() == BtfKind::FuncProto => "void (*)()".into(),
            Some(n) => format!("{} *", c_type(&n)),
            None => "void *".into(),
        },
        BtfKind::Const => format!("const {}", ty.next_type().map_or("void".into(), |n| c_type(&n))),
        BtfKind::Volatile => format!("volatile {}", ty.next_type().map_or("void".into(), |n| c_type(&n))),
        BtfKind::Restrict | BtfKind::TypeTag | BtfKind::DeclTag => ty.next_type().map_or("void".into(), |n| c_type(&n)),
        BtfKind::Struct => format!("struct {}", name_of(ty)),
        BtfKind::Union => format!("union {}", name_of(ty)),
        BtfKind::Enum | BtfKind::Enum64 => format!("enum {}", name_of(ty)),
        BtfKind::Array => "array".into(),
        _ => name_of(ty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btf() -> KernelBtf {
        KernelBtf::load(None).expect("/sys/kernel/btf/vmlinux is readable without root")
    }

    #[test]
    fn do_sys_openat2_prototype() {
        let b = btf();
        let p = b.prototype("do_sys_openat2").expect("do_sys_openat2 in BTF");
        let names: Vec<&str> = p.params.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["dfd", "filename", "how"]);
        assert_eq!(p.params[0].1, ValueKind::Int { bytes: 4, signed: true });
        assert_eq!(p.params[1].1, ValueKind::Str);
        assert_eq!(p.params[2].1, ValueKind::Ptr { pointee: "struct open_how".into() });
        // `long` up to 6.x, `int` in newer kernels: signed either way
        assert!(matches!(p.ret, ValueKind::Int { signed: true, .. }), "{:?}", p.ret);
        assert!(
            p.c_decl.ends_with(" do_sys_openat2(int dfd, const char *filename, struct open_how *how)"),
            "{}",
            p.c_decl
        );
        let flags = b.resolve_path(&p, "how->flags").unwrap();
        assert_eq!((flags.arg, flags.offsets.as_slice()), (2, &[0u32][..]));
        assert_eq!(flags.kind, ValueKind::Int { bytes: 8, signed: false });
        let mode = b.resolve_path(&p, "how->mode").unwrap();
        assert_eq!(mode.offsets, [8]);
    }

    #[test]
    fn tcp_v4_connect_and_nested_paths() {
        let b = btf();
        let p = b.prototype("tcp_v4_connect").expect("tcp_v4_connect");
        assert_eq!(p.params.len(), 3);
        assert!(matches!(p.params[0].1, ValueKind::Ptr { ref pointee } if pointee == "struct sock"));
        let num = b.resolve_path(&p, "sk->__sk_common.skc_num").unwrap();
        assert_eq!(num.offsets.len(), 1, "embedded struct: one read");
        assert_eq!(num.kind, ValueKind::Int { bytes: 2, signed: false });
        // skc_dport is inside an anonymous union of struct sock_common
        let dport = b.resolve_path(&p, "sk->__sk_common.skc_dport").unwrap();
        assert!(matches!(dport.kind, ValueKind::Int { bytes: 2, .. }), "{:?}", dport.kind);
        // two pointer hops: sk->sk_prot is a pointer, ->name is an array (not a pointer)
        let two = b.resolve_path(&p, "sk->sk_socket->file").unwrap();
        assert_eq!(two.offsets.len(), 2);
    }

    #[test]
    fn vfs_read_prototype() {
        let b = btf();
        let p = b.prototype("vfs_read").expect("vfs_read");
        let names: Vec<&str> = p.params.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["file", "buf", "count", "pos"]);
        assert_eq!(p.params[2].1, ValueKind::Int { bytes: 8, signed: false });
        let name = b.resolve_path(&p, "file->f_path.dentry->d_name.name").unwrap();
        // read f_path.dentry from *file, then d_name.name from *dentry: the string pointer
        assert_eq!(name.offsets.len(), 2);
        assert_eq!(name.kind, ValueKind::Str);
    }

    #[test]
    fn raw_tracepoint_arguments_are_named() {
        let b = btf();
        let p = b.tracepoint_prototype("inet_sock_set_state").expect("__bpf_trace_inet_sock_set_state");
        let names: Vec<&str> = p.params.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["sk", "oldstate", "newstate"]);
        let num = b.resolve_path(&p, "sk->__sk_common.skc_num").unwrap();
        assert_eq!(num.arg, 0);
        assert!(b.tracepoint_names().iter().any(|n| n == "sched_switch"));
        let exec = b.tracepoint_prototype("sched_process_exec").unwrap();
        let comm = b.resolve_path(&exec, "p->comm").unwrap();
        assert_eq!((comm.offsets.len(), comm.kind.clone()), (0, ValueKind::Str), "an embedded char array");
        assert!(comm.tail > 0);
    }

    #[test]
    fn bad_paths_say_why() {
        let b = btf();
        let p = b.prototype("do_sys_openat2").unwrap();
        assert!(b.resolve_path(&p, "nope->flags").unwrap_err().contains("not a parameter"));
        assert!(b.resolve_path(&p, "how->flagz").unwrap_err().contains("did you mean `flags`"));
        assert!(b.resolve_path(&p, "dfd->x").unwrap_err().contains("not a pointer"));
        assert!(b.resolve_path(&p, "how.flags").unwrap_err().contains("use `->`"));
        assert!(b.resolve_path(&p, "how->").unwrap_err().contains("field name"));
        assert!(b.prototype("no_such_function_xyz").is_none());
    }
}
