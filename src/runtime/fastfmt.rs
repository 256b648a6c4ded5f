//! Writing the hot columns without `core::fmt`: integers through `itoa`, padding by hand, and
//! strings copied as they are when they need no escaping. Profiles of a million events showed
//! the formatting machinery as the tracer's largest cost.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;

pub fn int(w: &mut impl Write, v: impl itoa::Integer) -> io::Result<()> {
    let mut buf = itoa::Buffer::new();
    w.write_all(buf.format(v).as_bytes())
}

/// Hex with the `0x` prefix.
pub fn hex(w: &mut impl Write, v: u64) -> io::Result<()> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 18];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    i -= 2;
    buf[i] = b'0';
    buf[i + 1] = b'x';
    w.write_all(&buf[i..])
}

const SPACES: &[u8; 64] = &[b' '; 64];

/// `bytes` left-aligned in `width` columns (never cut), then one space.
pub fn col(w: &mut impl Write, bytes: &[u8], width: usize) -> io::Result<()> {
    w.write_all(bytes)?;
    let pad = width.saturating_sub(bytes.len()).min(SPACES.len());
    w.write_all(&SPACES[..pad])?;
    w.write_all(b" ")
}

/// An integer left-aligned in `width` columns, then one space.
pub fn int_col(w: &mut impl Write, v: impl itoa::Integer, width: usize) -> io::Result<()> {
    let mut buf = itoa::Buffer::new();
    col(w, buf.format(v).as_bytes(), width)
}

/// Nanoseconds as milliseconds with 3 decimals, right-aligned in `width`.
pub fn ms_col(w: &mut impl Write, ns: u64, width: usize) -> io::Result<()> {
    let mut ibuf = itoa::Buffer::new();
    let whole = ibuf.format(ns / 1_000_000);
    let frac = (ns / 1_000) % 1_000;
    let len = whole.len() + 4;
    let pad = width.saturating_sub(len).min(SPACES.len());
    w.write_all(&SPACES[..pad])?;
    w.write_all(whole.as_bytes())?;
    w.write_all(&[b'.', b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8])
}

/// `"text"` with Rust's `{:?}` escaping, taking the fast path when nothing needs escaping.
pub fn quoted(w: &mut impl Write, s: &str) -> io::Result<()> {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        w.write_all(b"\"")?;
        w.write_all(s.as_bytes())?;
        w.write_all(b"\"")
    } else {
        write!(w, "{s:?}")
    }
}

/// `addr:port` into a stack buffer, so it can be padded without allocating.
pub struct Endpoint {
    buf: [u8; 56],
    len: usize,
}

impl Endpoint {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        let mut e = Endpoint { buf: [0; 56], len: 0 };
        let _ = match ip {
            IpAddr::V4(a) => write!(e, "{a}:{port}"),
            IpAddr::V6(a) => write!(e, "[{a}]:{port}"),
        };
        e
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("formatted as UTF-8")
    }
}

impl std::fmt::Write for Endpoint {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut v = Vec::new();
        f(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn matches_core_fmt() {
        for v in [0u64, 1, 15, 16, 0xdead_beef, u64::MAX] {
            assert_eq!(out(|w| hex(w, v)), format!("{v:#x}"));
        }
        assert_eq!(out(|w| int(w, -100i64)), "-100");
        assert_eq!(out(|w| int_col(w, 42u32, 7)), "42      ");
        assert_eq!(out(|w| col(w, b"a-long-name", 4)), "a-long-name ");
        assert_eq!(out(|w| ms_col(w, 1_500_000, 10)), "     1.500");
        assert_eq!(out(|w| ms_col(w, 12_345, 10)), "     0.012");
        assert_eq!(out(|w| ms_col(w, 123_456_789_000, 4)), "123456.789");
        for s in ["plain /etc/hostname", "quo\"te", "back\\slash", "tab\there", "héllo ✓", "nul\0"] {
            assert_eq!(out(|w| quoted(w, s)), format!("{s:?}"), "{s}");
        }
    }
}
