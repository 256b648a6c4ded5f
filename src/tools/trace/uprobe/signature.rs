//! How a user-space function's arguments and return value print: from a built-in table of
//! well-known functions or a C prototype given with `--sig`.

use std::borrow::Cow;
use std::io::{self, Write};

use crate::runtime::output::Sink;
use crate::runtime::value::{Shown, mask, sign_extend};

/// How one value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int {
        bits: u8,
        signed: bool,
    },
    /// `char *` / `const char *`: read as a NUL-terminated user string.
    Str,
    /// Any other pointer: hex.
    Ptr,
    Void,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub ret: Kind,
    pub params: Vec<Param>,
}

/// Prototypes tracekit knows without `--sig`.
const BUILTIN: &[&str] = &[
    "char *readline(const char *prompt)",
    "void *malloc(size_t size)",
    "void free(void *ptr)",
    "void *calloc(size_t nmemb, size_t size)",
    "void *realloc(void *ptr, size_t size)",
    "int open(const char *pathname, int flags, mode_t mode)",
    "int open64(const char *pathname, int flags, mode_t mode)",
    "int openat(int dirfd, const char *pathname, int flags, mode_t mode)",
    "ssize_t read(int fd, void *buf, size_t count)",
    "ssize_t write(int fd, const void *buf, size_t count)",
    "int close(int fd)",
    "int connect(int sockfd, const void *addr, socklen_t addrlen)",
    "int getaddrinfo(const char *node, const char *service, const void *hints, void *res)",
    "int SSL_read(void *ssl, void *buf, int num)",
    "int SSL_write(void *ssl, const void *buf, int num)",
    "char *getenv(const char *name)",
    "int system(const char *command)",
    "int execve(const char *pathname, void *argv, void *envp)",
    "int puts(const char *s)",
    "size_t strlen(const char *s)",
];

/// The built-in signature of a function, by name.
pub fn builtin(func: &str) -> Option<Signature> {
    BUILTIN.iter().find_map(|p| match parse(p) {
        Ok((name, sig)) if name == func => Some(sig),
        _ => None,
    })
}

/// Parses `RET NAME(TYPE NAME, …)`; returns the function's name and its signature.
pub fn parse(proto: &str) -> Result<(String, Signature), String> {
    let proto = proto.trim().trim_end_matches(';');
    let (head, rest) =
        proto.split_once('(').ok_or("expected `RET NAME(ARGS)`, e.g. `int open(const char *path, int flags)`")?;
    let inner = rest.strip_suffix(')').ok_or("missing the closing `)`")?;
    let (ret_ty, name) = split_decl(head).ok_or_else(|| format!("cannot find the return type and name in `{head}`"))?;
    if name.is_empty() {
        return Err(format!("no function name in `{head}`"));
    }
    let ret = kind_of(&ret_ty)?;
    let mut params = Vec::new();
    let inner = inner.trim();
    if !inner.is_empty() && inner != "void" {
        for (i, p) in inner.split(',').enumerate() {
            let p = p.trim();
            if p == "..." {
                break;
            }
            let (ty, pname) = match split_decl(p) {
                Some((ty, n)) if !n.is_empty() && kind_of(&ty).is_ok() && !is_type_word(&n) => (ty, n),
                _ => (p.to_owned(), format!("arg{i}")),
            };
            let kind = kind_of(&ty)?;
            if kind == Kind::Void {
                return Err(format!("parameter `{p}` cannot be void"));
            }
            params.push(Param { name: pname, kind });
        }
    }
    if params.len() > 6 {
        return Err(format!("{} parameters: only the first six (passed in registers) can be read", params.len()));
    }
    Ok((name, Signature { ret, params }))
}

/// `const char *prompt` → (`const char *`, `prompt`); `int` alone → (`int`, ``).
fn split_decl(decl: &str) -> Option<(String, String)> {
    let decl = decl.trim();
    // Past the last character that cannot be in a name (which may be several bytes long).
    let name_start =
        decl.char_indices().rfind(|&(_, c)| !(c.is_alphanumeric() || c == '_')).map_or(0, |(i, c)| i + c.len_utf8());
    let (ty, name) = decl.split_at(name_start);
    if ty.trim().is_empty() {
        // a lone word: a type without a name
        return Some((name.to_owned(), String::new()));
    }
    Some((ty.trim().to_owned(), name.to_owned()))
}

fn is_type_word(w: &str) -> bool {
    matches!(w, "int" | "long" | "short" | "char" | "unsigned" | "signed" | "void" | "const" | "size_t" | "ssize_t")
}

fn kind_of(ty: &str) -> Result<Kind, String> {
    let stars = ty.matches('*').count();
    let words: Vec<&str> = ty
        .split(|c: char| c.is_whitespace() || c == '*')
        .filter(|w| !w.is_empty() && !matches!(*w, "const" | "volatile" | "struct" | "enum" | "restrict"))
        .collect();
    if stars == 1 && words == ["char"] {
        return Ok(Kind::Str);
    }
    if stars > 0 {
        return Ok(Kind::Ptr);
    }
    let unsigned = words.contains(&"unsigned");
    let base: Vec<&str> = words.iter().copied().filter(|w| !matches!(*w, "unsigned" | "signed")).collect();
    let int = |bits, signed| Ok(Kind::Int { bits, signed });
    match base.as_slice() {
        ["void"] => Ok(Kind::Void),
        [] | ["int"] => int(32, !unsigned),
        ["char"] | ["int8_t"] => int(8, !unsigned),
        ["uint8_t"] | ["bool"] | ["_Bool"] => int(8, false),
        ["short"] | ["short", "int"] | ["int16_t"] => int(16, !unsigned),
        ["uint16_t"] => int(16, false),
        ["int32_t"] | ["pid_t"] => int(32, true),
        ["uint32_t"] | ["socklen_t"] | ["mode_t"] | ["uid_t"] | ["gid_t"] => int(32, false),
        ["long"]
        | ["long", "int"]
        | ["long", "long"]
        | ["long", "long", "int"]
        | ["int64_t"]
        | ["ssize_t"]
        | ["off_t"]
        | ["intptr_t"]
        | ["ptrdiff_t"] => int(64, !unsigned),
        ["uint64_t"] | ["size_t"] | ["uintptr_t"] => int(64, false),
        _ if base.len() == 1 => {
            Err(format!("unknown type `{ty}`: use int, long, size_t, char *, a pointer (`void *`), or (u)int8..64_t"))
        }
        _ => Err(format!("cannot read the type `{ty}`")),
    }
}

/// Must match uprobe.h: string slots per event.
const STRS: usize = 3;

/// Which string slot each parameter and the return value got (the BPF side's order).
pub fn slots(sig: &Signature) -> ([Option<usize>; 6], Option<usize>) {
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

pub fn value(kind: Kind, raw: u64, s: Option<(Cow<'_, str>, bool)>) -> Shown<'_> {
    match kind {
        Kind::Int { bits, signed: true } => Shown::Signed(sign_extend(raw, bits / 8)),
        Kind::Int { bits, signed: false } => Shown::Unsigned(mask(raw, bits / 8)),
        Kind::Str if raw == 0 => Shown::Null,
        Kind::Str => s.map_or(Shown::Hex(raw), |(t, trunc)| Shown::Str(t, trunc)),
        Kind::Ptr | Kind::Void => Shown::Hex(raw),
    }
}

/// A string slot's text and whether it was truncated, by slot number.
pub type StrOf<'e> = &'e dyn Fn(usize) -> Option<(Cow<'e, str>, bool)>;

/// One call as an event carries it: the arguments if the entry was seen, the return value if
/// the return was, and the strings read.
pub struct Call<'e> {
    pub args: Option<&'e [u64; 6]>,
    pub ret: Option<u64>,
    pub strs: StrOf<'e>,
}

impl Call<'_> {
    /// `(a=1, s="x") = ret` after the function's name: by the signature, or in hex without one.
    pub fn write_row(&self, w: &mut impl Write, sig: Option<&Signature>) -> io::Result<()> {
        let (arg_slots, ret_slot) = sig.map_or(([None; 6], None), slots);
        if let Some(args) = self.args {
            w.write_all(b"(")?;
            match sig {
                Some(sig) => {
                    for (i, param) in sig.params.iter().enumerate() {
                        write!(w, "{}{}=", if i > 0 { ", " } else { "" }, param.name)?;
                        value(param.kind, args[i], arg_slots[i].and_then(self.strs)).write(w)?;
                    }
                }
                None => {
                    for (i, a) in args.iter().enumerate() {
                        write!(w, "{}{a:#x}", if i > 0 { ", " } else { "" })?;
                    }
                }
            }
            w.write_all(b")")?;
        }
        match (self.ret, sig.map_or(Kind::Ptr, |s| s.ret)) {
            (Some(ret), kind) if kind != Kind::Void => {
                w.write_all(b" = ")?;
                value(kind, ret, ret_slot.and_then(self.strs)).write(w)
            }
            _ => Ok(()),
        }
    }

    /// `"args"` (`arg0`… in hex without a signature) and `"ret"`; true if a string was cut.
    pub fn write_json(&self, out: &mut Sink, sig: Option<&Signature>) -> io::Result<bool> {
        let (arg_slots, ret_slot) = sig.map_or(([None; 6], None), slots);
        let mut truncated = false;
        if let Some(args) = self.args {
            out.object_start("args")?;
            match sig {
                Some(sig) => {
                    for (i, param) in sig.params.iter().enumerate() {
                        let v = value(param.kind, args[i], arg_slots[i].and_then(self.strs));
                        truncated |= v.is_truncated();
                        v.json(out, &param.name)?;
                    }
                }
                None => {
                    for (i, a) in args.iter().enumerate() {
                        out.field_display(["arg0", "arg1", "arg2", "arg3", "arg4", "arg5"][i], format_args!("{a:#x}"))?;
                    }
                }
            }
            out.object_end()?;
        }
        match (self.ret, sig.map_or(Kind::Ptr, |s| s.ret)) {
            (Some(ret), kind) if kind != Kind::Void => {
                let v = value(kind, ret, ret_slot.and_then(self.strs));
                truncated |= v.is_truncated();
                v.json(out, "ret")?;
            }
            _ => {}
        }
        Ok(truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readline_prototype() {
        let (name, sig) = parse("char *readline(const char *prompt)").unwrap();
        assert_eq!(name, "readline");
        assert_eq!(sig.ret, Kind::Str);
        assert_eq!(sig.params, [Param { name: "prompt".into(), kind: Kind::Str }]);
    }

    #[test]
    fn integer_widths_and_signs() {
        let (_, sig) =
            parse("ssize_t f(int a, unsigned int b, size_t c, short d, unsigned char e, long long g)").unwrap();
        let kinds: Vec<Kind> = sig.params.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Int { bits: 32, signed: true },
                Kind::Int { bits: 32, signed: false },
                Kind::Int { bits: 64, signed: false },
                Kind::Int { bits: 16, signed: true },
                Kind::Int { bits: 8, signed: false },
                Kind::Int { bits: 64, signed: true },
            ]
        );
        assert_eq!(sig.ret, Kind::Int { bits: 64, signed: true });
    }

    #[test]
    fn pointers_unnamed_params_and_void() {
        let (_, sig) = parse("void free(void *)").unwrap();
        assert_eq!(sig.ret, Kind::Void);
        assert_eq!(sig.params[0].kind, Kind::Ptr);
        assert_eq!(sig.params[0].name, "arg0");
        let (_, sig) = parse("int main(int argc, char **argv)").unwrap();
        assert_eq!(sig.params[1].kind, Kind::Ptr);
        let (_, sig) = parse("int f(void)").unwrap();
        assert!(sig.params.is_empty());
        let (_, sig) = parse("int printf(const char *fmt, ...)").unwrap();
        assert_eq!(sig.params.len(), 1);
    }

    #[test]
    fn bad_prototypes_say_why() {
        assert!(parse("readline").unwrap_err().contains("expected"));
        assert!(parse("int f(int a").unwrap_err().contains(")"));
        assert!(parse("frobnicate_t f(int a)").unwrap_err().contains("unknown type"));
        assert!(parse("int f(int a, int b, int c, int d, int e, int f, int g)").unwrap_err().contains("six"));
    }

    #[test]
    fn non_ascii_separators_are_not_split_inside() {
        // U+00A0 is two bytes: slicing one byte past it panicked.
        let (name, sig) = parse("int\u{a0}f(int\u{a0}a)").unwrap();
        assert_eq!((name.as_str(), sig.params.len()), ("f", 1));
        assert_eq!(sig.params[0].name, "a");
        assert!(parse("int·f(int a)").unwrap_err().contains("unknown type"), "U+00B7 is no separator");
    }

    #[test]
    fn builtins_parse() {
        for p in BUILTIN {
            parse(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        assert_eq!(builtin("malloc").unwrap().ret, Kind::Ptr);
        assert!(builtin("no_such_function").is_none());
    }

    #[test]
    fn string_slots_follow_the_bpf_order() {
        let (_, sig) = parse("char *f(int a, const char *b, long c, char *d)").unwrap();
        let (args, ret) = slots(&sig);
        assert_eq!(args, [None, Some(0), None, Some(1), None, None]);
        assert_eq!(ret, Some(2));
    }
}
