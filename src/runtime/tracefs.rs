//! Tracepoint `format` files in tracefs: the fields of an event's record and how each one prints.

use std::fs;
use std::path::Path;

use super::output::c_str;
use super::value::{Shown, mask, sign_extend};

/// How one field of the record is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// An integer: `bytes` of the C type (an `int` syscall argument sits in an 8-byte slot).
    Int { signed: bool, bytes: u8 },
    /// `char name[N]`: text inline in the record.
    CharArray,
    /// Any other array: bytes in hex.
    Bytes,
    /// `const char *`: a string the BPF side reads (user or kernel memory).
    StrPtr,
    /// `__data_loc char[]`: a string stored after the fixed record.
    StrLoc,
    /// Other pointers: hex.
    Ptr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub c_type: String,
    pub offset: usize,
    pub size: usize,
    pub kind: FieldKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// `category:name`
    pub name: String,
    pub id: u32,
    /// The event's own fields (without `common_*`).
    pub fields: Vec<Field>,
    /// Bytes of the fixed part of the record.
    pub size: usize,
}

impl Field {
    /// This field of a record (`data`), as it prints; `string` gives the text the BPF side
    /// copied for a string field.
    pub fn shown<'d>(&self, data: &'d [u8], string: impl FnOnce() -> Option<Shown<'d>>) -> Shown<'d> {
        let raw = read_uint(data, self.offset, self.size);
        match self.kind {
            FieldKind::Int { bytes, .. } if self.name.ends_with("flags") => Shown::Hex(mask(raw, bytes)),
            FieldKind::Int { bytes, .. } if self.name.ends_with("mode") => Shown::Octal(mask(raw, bytes)),
            FieldKind::Int { signed: true, bytes } => Shown::Signed(sign_extend(raw, bytes)),
            FieldKind::Int { signed: false, bytes } => Shown::Unsigned(mask(raw, bytes)),
            FieldKind::StrPtr if raw == 0 => Shown::Null,
            FieldKind::StrPtr | FieldKind::StrLoc => string().unwrap_or(Shown::Hex(raw)),
            FieldKind::CharArray => {
                let bytes = data.get(self.offset..self.offset.saturating_add(self.size)).unwrap_or(&[]);
                Shown::Str(c_str(bytes), false)
            }
            FieldKind::Ptr | FieldKind::Bytes => Shown::Hex(raw),
        }
    }
}

fn read_uint(data: &[u8], off: usize, size: usize) -> u64 {
    let mut b = [0u8; 8];
    let n = size.min(8);
    if let Some(src) = data.get(off..off.saturating_add(n)) {
        b[..n].copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

const SIGNED_TYPES: &[&str] = &[
    "int", "long", "short", "char", "s8", "s16", "s32", "s64", "pid_t", "int8_t", "int16_t", "int32_t", "int64_t",
    "ssize_t", "loff_t", "off_t", "__s8", "__s16", "__s32", "__s64", "ktime_t", "time64_t",
];

/// Width of a C integer type by name; None for typedefs (the slot's size is used).
fn c_int_bytes(words: &[&str]) -> Option<u8> {
    let base: Vec<&str> = words.iter().copied().filter(|w| !matches!(*w, "unsigned" | "signed")).collect();
    match base.as_slice() {
        ["char"] | ["s8"] | ["u8"] | ["__s8"] | ["__u8"] | ["bool"] => Some(1),
        ["short"] | ["short", "int"] | ["s16"] | ["u16"] | ["__s16"] | ["__u16"] => Some(2),
        [] | ["int"] | ["s32"] | ["u32"] | ["__s32"] | ["__u32"] | ["pid_t"] => Some(4),
        ["long"] | ["long", "long"] | ["long", "int"] | ["s64"] | ["u64"] | ["__s64"] | ["__u64"] => Some(8),
        _ => None,
    }
}

fn kind_of(c_type: &str, signed_flag: bool, size: usize) -> FieldKind {
    let t = c_type.trim();
    if t.starts_with("__data_loc") {
        return if t.contains("char") { FieldKind::StrLoc } else { FieldKind::Bytes };
    }
    let words: Vec<&str> =
        t.split(|c: char| c.is_whitespace() || c == '*').filter(|w| !w.is_empty() && *w != "const").collect();
    if t.contains('*') {
        return if words == ["char"] && t.matches('*').count() == 1 { FieldKind::StrPtr } else { FieldKind::Ptr };
    }
    let unsigned = words.contains(&"unsigned");
    let signed = signed_flag || (!unsigned && words.last().is_some_and(|w| SIGNED_TYPES.contains(w)));
    let bytes = c_int_bytes(&words).map_or(size, |b| usize::from(b).min(size)) as u8;
    FieldKind::Int { signed, bytes }
}

/// One `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;` line.
fn parse_field(line: &str) -> Option<Field> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.trim().split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once(':')?;
        match k.trim() {
            "field" => decl = Some(v.trim().to_owned()),
            "offset" => offset = v.trim().parse().ok(),
            "size" => size = v.trim().parse().ok(),
            "signed" => signed = v.trim() == "1",
            _ => {}
        }
    }
    let decl = decl?;
    // `char comm[16]`, `__data_loc char[] filename`, `const char * filename`, `int dfd`
    // The type keeps its `*`; the separator may be any whitespace, several bytes long.
    let (sep_at, sep) = decl.char_indices().rfind(|&(_, c)| c.is_whitespace() || c == '*')?;
    let (ty, name) = decl.split_at(sep_at + sep.len_utf8());
    let (ty, name) = (ty.trim().to_owned(), name.trim().to_owned());
    let (name, array) = match name.split_once('[') {
        Some((n, _)) => (n.to_owned(), true),
        None => (name, false),
    };
    let size: usize = size?;
    let mut kind = kind_of(&ty, signed, size);
    if array && !matches!(kind, FieldKind::StrLoc) {
        kind = if ty.split_whitespace().last() == Some("char") { FieldKind::CharArray } else { FieldKind::Bytes };
    }
    Some(Field { name, c_type: ty, offset: offset?, size, kind })
}

pub fn parse(name: &str, text: &str) -> Result<Format, String> {
    let id =
        text.lines().find_map(|l| l.strip_prefix("ID:")).and_then(|v| v.trim().parse().ok()).ok_or("no `ID:` line")?;
    let fields: Vec<Field> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("field:"))
        .filter_map(parse_field)
        .filter(|f| !f.name.starts_with("common_"))
        .collect();
    let size = fields.iter().map(|f| f.offset.saturating_add(f.size)).max().unwrap_or(8);
    Ok(Format { name: name.to_owned(), id, fields, size })
}

pub fn load(tracefs: &Path, category: &str, event: &str) -> Result<Format, String> {
    let path = tracefs.join("events").join(category).join(event).join("format");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&format!("{category}:{event}"), &text)
}

/// The category of ftrace's own record formats, which are not tracepoints.
pub const FTRACE_CATEGORY: &str = "ftrace";

/// Every `category:event` under tracefs that is a tracepoint, sorted.
pub fn all_events(tracefs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for cat in fs::read_dir(tracefs.join("events")).into_iter().flatten().flatten() {
        // ftrace's own record formats (ftrace:function, …) have a `format` file but are not
        // tracepoints: BPF cannot attach to them, so they are neither listed nor matched.
        if !cat.path().is_dir() || cat.file_name() == FTRACE_CATEGORY {
            continue;
        }
        let c = cat.file_name().to_string_lossy().into_owned();
        for ev in fs::read_dir(cat.path()).into_iter().flatten().flatten() {
            if ev.path().join("format").exists() {
                out.push(format!("{c}:{}", ev.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT: &str = "name: sys_enter_openat\nID: 782\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;\n\
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;\n\n\
print fmt: \"dfd: 0x%08lx\"\n";

    #[test]
    fn syscall_format() {
        let f = parse("syscalls:sys_enter_openat", OPENAT).unwrap();
        assert_eq!(f.id, 782);
        assert_eq!(f.size, 48);
        let names: Vec<&str> = f.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["__syscall_nr", "dfd", "filename", "flags", "mode"]);
        assert_eq!(f.fields[1].kind, FieldKind::Int { signed: true, bytes: 4 }, "int dfd in an 8-byte slot");
        assert_eq!(f.fields[2].kind, FieldKind::StrPtr);
        assert_eq!(f.fields[4].kind, FieldKind::Int { signed: false, bytes: 8 }, "umode_t: the slot's size");
    }

    #[test]
    fn arrays_and_data_loc() {
        let f = parse_field("field:char comm[16];\toffset:20;\tsize:16;\tsigned:0;").unwrap();
        assert_eq!((f.name.as_str(), f.kind, f.size), ("comm", FieldKind::CharArray, 16));
        let f = parse_field("field:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;").unwrap();
        assert_eq!((f.name.as_str(), f.kind), ("filename", FieldKind::StrLoc));
        let f = parse_field("field:u8 saddr[4];\toffset:8;\tsize:4;\tsigned:0;").unwrap();
        assert_eq!(f.kind, FieldKind::Bytes);
        let f = parse_field("field:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;").unwrap();
        assert_eq!(f.kind, FieldKind::Ptr);
        assert!(parse("x:y", "no id here").is_err());
    }

    #[test]
    fn non_ascii_whitespace_separates_too() {
        // U+00A0 and U+3000 are whitespace of 2 and 3 bytes: slicing one byte past them panicked.
        let f = parse_field("field:int\u{a0}dfd;\toffset:16;\tsize:8;\tsigned:1;").unwrap();
        assert_eq!((f.name.as_str(), f.c_type.as_str()), ("dfd", "int"));
        let f = parse_field("field:const char *\u{3000}name;\toffset:8;\tsize:8;\tsigned:0;").unwrap();
        assert_eq!((f.name.as_str(), f.kind), ("name", FieldKind::StrPtr));
        let huge = format!("ID: 1\n\tfield:int x;\toffset:{};\tsize:8;\tsigned:0;\n", usize::MAX);
        assert_eq!(parse("x:y", &huge).unwrap().size, usize::MAX, "no overflow");
    }
}
