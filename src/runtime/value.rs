//! One decoded value of a traced call (an argument, a field, a return value) and how it
//! prints in a table row and in JSON: shared by the function tracers (kprobe, uprobe).

use std::borrow::Cow;
use std::io::{self, Write};

use super::fastfmt;
use super::output::Sink;

pub enum Shown<'a> {
    Signed(i64),
    Unsigned(u64),
    Hex(u64),
    Octal(u64),
    Bool(bool),
    Enum(&'a str),
    /// Text and whether it was cut at the buffer's end.
    Str(Cow<'a, str>, bool),
    Null,
}

impl Shown<'_> {
    pub fn is_truncated(&self) -> bool {
        matches!(self, Shown::Str(_, true))
    }

    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            Shown::Signed(i) => fastfmt::int(w, *i),
            Shown::Unsigned(u) => fastfmt::int(w, *u),
            Shown::Hex(h) => fastfmt::hex(w, *h),
            Shown::Octal(0) => w.write_all(b"0"),
            Shown::Octal(o) => write!(w, "0{o:o}"),
            Shown::Bool(b) => write!(w, "{b}"),
            Shown::Enum(n) => w.write_all(n.as_bytes()),
            Shown::Str(s, trunc) => {
                fastfmt::quoted(w, s)?;
                if *trunc { w.write_all(b"...") } else { Ok(()) }
            }
            Shown::Null => w.write_all(b"NULL"),
        }
    }

    pub fn json(&self, out: &mut Sink, key: &str) -> io::Result<()> {
        match self {
            Shown::Signed(i) => out.field_i128(key, (*i).into()),
            Shown::Unsigned(u) | Shown::Octal(u) => out.field_u64(key, *u),
            Shown::Hex(h) => out.field_display(key, format_args!("{h:#x}")),
            Shown::Bool(b) => out.field_raw(key, if *b { "true" } else { "false" }),
            Shown::Enum(n) => out.field_str(key, n),
            Shown::Str(s, _) => out.field_str(key, s),
            Shown::Null => out.field_raw(key, "null"),
        }
    }
}

/// The low `bytes` of a register, sign-extended.
pub fn sign_extend(raw: u64, bytes: u8) -> i64 {
    let shift = 64 - 8 * u32::from(bytes.clamp(1, 8));
    ((raw << shift) as i64) >> shift
}

/// The low `bytes` of a register.
pub fn mask(raw: u64, bytes: u8) -> u64 {
    if bytes >= 8 { raw } else { raw & ((1u64 << (8 * bytes)) - 1) }
}

/// Text of string slot `slot` of an event's fixed slots (`str_len` bytes read including the
/// NUL; <= 0: none), and whether it filled its slot (truncated).
pub fn slot_str<'e>(str_len: &[i16], chars: &'e [std::ffi::c_char], slot: usize) -> Option<(Cow<'e, str>, bool)> {
    let len = *str_len.get(slot)?;
    let slot_len = chars.len() / str_len.len();
    let bytes = chars.get(slot * slot_len..(slot + 1) * slot_len)?;
    (len > 0).then(|| (super::output::c_chars(bytes), len as usize >= slot_len))
}

/// The header line of traced calls' rows (see `call_row_start`).
pub const CALL_COLUMNS: &str = "PID     COMM               LAT(ms) CALL";

/// The columns every traced call's row starts with: PID, COMM and the latency in ms, or `-`
/// when only one end of the call was seen.
pub fn call_row_start(w: &mut impl Write, h: &super::output::TaskHeader, latency_ns: Option<u64>) -> io::Result<()> {
    fastfmt::int_col(w, h.pid, 7)?;
    fastfmt::col(w, super::output::c_str(&h.comm).as_bytes(), 15)?;
    match latency_ns {
        Some(ns) => {
            fastfmt::ms_col(w, ns, 10)?;
            w.write_all(b" ")
        }
        None => w.write_all(b"         - "),
    }
}

/// The JSON fields every traced call ends with.
pub fn json_call_tail(out: &mut Sink, latency_ns: Option<u64>, truncated: bool) -> io::Result<()> {
    if let Some(l) = latency_ns {
        out.field_u64("latency_ns", l)?;
    }
    if truncated {
        out.field_raw("truncated", "true")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Shown<'_>) -> String {
        let mut b = Vec::new();
        v.write(&mut b).unwrap();
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn prints() {
        assert_eq!(text(Shown::Signed(sign_extend(0xffff_ff9c, 4))), "-100");
        assert_eq!(text(Shown::Unsigned(mask(0x1_0000_0005, 4))), "5");
        assert_eq!(text(Shown::Octal(0o644)), "0644");
        assert_eq!(text(Shown::Octal(0)), "0");
        assert_eq!(text(Shown::Hex(255)), "0xff");
        assert_eq!(text(Shown::Str("a\"b".into(), true)), "\"a\\\"b\"...");
        assert_eq!(text(Shown::Null), "NULL");
    }
}
