//! In-kernel histograms (src/bpf/include/hist.bpf.h), read and printed the way bpftrace's
//! `hist()`/`lhist()` print them: per key, every `--interval` and at the end, or as JSON
//! `hist` objects.
//!
//! The kernel's table is never cleared: each print shows what was added since the previous one
//! (the difference of two reads, like BCC's `-i`), or, with `--cumulative`, everything since
//! the start. Reading without deleting keeps every count exact: no add can fall between a
//! read and a delete.

use std::collections::HashMap;
use std::io::{self, Write};

use libbpf_rs::{MapCore, MapFlags, MapMut};

use std::time::{Duration, Instant};

use super::Runtime;
use super::child::GatedChild;
use super::output::{Sink, c_str};

/// Must match hist.h.
pub const SLOTS: usize = 66;
pub const KIND_LOG2: u32 = 0;
pub const KIND_LINEAR: u32 = 1;
/// Keys read per batch lookup.
const BATCH: u32 = 256;
/// bpftrace's bar width: label (16) + count (8) + ` |` + bar + `|` stays under 80 columns.
const BAR: usize = 52;
const AT: &[u8; BAR] = &[b'@'; BAR];
const SPACE: &[u8; BAR] = &[b' '; BAR];

/// `struct tk_hist_key` of hist.h.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistKey {
    /// The function (probe index) or 0.
    pub idx: u32,
    /// 0 unless split by process.
    pub pid: u32,
    /// Empty unless split by comm or process.
    pub comm: [u8; 16],
}

/// `struct tk_hist` of hist.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistValue {
    pub slots: [u64; SLOTS],
    pub sum: u64,
    pub count: u64,
}

impl Default for HistValue {
    fn default() -> Self {
        HistValue { slots: [0; SLOTS], sum: 0, count: 0 }
    }
}

// SAFETY: integers and arrays of them, no padding; every bit pattern is a valid value.
unsafe impl plain::Plain for HistKey {}
// SAFETY: as above.
unsafe impl plain::Plain for HistValue {}

impl HistValue {
    /// What `self` has that `before` had not (counts only grow in the kernel).
    fn since(&self, before: &HistValue) -> HistValue {
        let mut d = *self;
        for (s, b) in d.slots.iter_mut().zip(&before.slots) {
            *s = s.wrapping_sub(*b);
        }
        d.sum = d.sum.wrapping_sub(before.sum);
        d.count = d.count.wrapping_sub(before.count);
        d
    }
}

/// How values map to slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Slot 0: negative; 1: `[0]`; 2 + n: `[2^n, 2^(n+1))`.
    Log2,
    /// Slot 0: negative; 1 + i: `[i*step, (i+1)*step)`; the last: `[64*step, ...)`.
    Linear { step: u64 },
}

impl Scale {
    /// (kind, step) for `struct tk_hist_config`.
    pub fn config(self) -> (u32, u64) {
        match self {
            Scale::Log2 => (KIND_LOG2, 0),
            Scale::Linear { step } => (KIND_LINEAR, step),
        }
    }

    /// The slot of `v`, as hist.bpf.h computes it (`signed`: the top bit means negative).
    pub fn slot(self, v: u64, signed: bool) -> usize {
        if signed && (v as i64) < 0 {
            return 0;
        }
        match self {
            Scale::Log2 if v == 0 => 1,
            Scale::Log2 => 2 + v.ilog2() as usize,
            Scale::Linear { step } => {
                let i = v.checked_div(step).unwrap_or(0);
                if i > (SLOTS - 2) as u64 { SLOTS - 1 } else { i as usize + 1 }
            }
        }
    }

    /// The values of a slot: `[lo, hi)`, None where unbounded.
    pub fn bounds(self, slot: usize) -> (Option<u128>, Option<u128>) {
        match (self, slot) {
            (_, 0) => (None, Some(0)),
            (Scale::Log2, 1) => (Some(0), Some(1)),
            (Scale::Log2, s) => (Some(1 << (s - 2)), Some(1 << (s - 1))),
            (Scale::Linear { step }, s) if s == SLOTS - 1 => (Some(u128::from(step) * (SLOTS as u128 - 2)), None),
            (Scale::Linear { step }, s) => {
                (Some(u128::from(step) * (s as u128 - 1)), Some(u128::from(step) * s as u128))
            }
        }
    }
}

/// A bound as bpftrace prints it: a multiple of 1024^k with its suffix (`1K`, `64M`).
pub fn bound_label(n: u128, w: &mut impl Write) -> io::Result<()> {
    const SUFFIX: [(u32, &str); 6] = [(60, "E"), (50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")];
    for (shift, s) in SUFFIX {
        if n != 0 && n.trailing_zeros() >= shift {
            return write!(w, "{}{s}", n >> shift);
        }
    }
    write!(w, "{n}")
}

/// The label of a slot: `(..., 0)`, `[0]`, `[1]`, `[64, 128)`, `[1K, 2K)`, `[640, ...)`.
pub fn slot_label(scale: Scale, slot: usize, w: &mut impl Write) -> io::Result<()> {
    match scale.bounds(slot) {
        (None, Some(hi)) => {
            w.write_all(b"(..., ")?;
            bound_label(hi, w)?;
            w.write_all(b")")
        }
        (Some(lo), Some(hi)) if scale == Scale::Log2 && hi == lo + 1 => {
            w.write_all(b"[")?;
            bound_label(lo, w)?;
            w.write_all(b"]")
        }
        (Some(lo), hi) => {
            w.write_all(b"[")?;
            bound_label(lo, w)?;
            w.write_all(b", ")?;
            match hi {
                Some(hi) => bound_label(hi, w)?,
                None => w.write_all(b"...")?,
            }
            w.write_all(b")")
        }
        (None, None) => Ok(()),
    }
}

/// The slots that print: first to last non-empty one (bpftrace trims both ends).
fn shown(h: &HistValue) -> std::ops::Range<usize> {
    let first = h.slots.iter().position(|&c| c > 0);
    let last = h.slots.iter().rposition(|&c| c > 0);
    match (first, last) {
        (Some(a), Some(b)) => a..b + 1,
        _ => 0..0,
    }
}

/// One histogram as bpftrace prints it: a title line (with the unit unless empty), one line per slot from
/// the first to the last non-empty one, then the count, average and sum.
pub fn write_table(w: &mut impl Write, title: &str, unit: &str, scale: Scale, h: &HistValue) -> io::Result<()> {
    if unit.is_empty() {
        writeln!(w, "{title}:")?;
    } else {
        writeln!(w, "{title} ({unit}):")?;
    }
    let max = h.slots.iter().copied().max().unwrap_or(0).max(1);
    let mut label = Vec::with_capacity(32);
    for slot in shown(h) {
        let n = h.slots[slot];
        label.clear();
        slot_label(scale, slot, &mut label)?;
        // label 16 wide (left), count 8 wide (right), then the bar
        w.write_all(&label)?;
        w.write_all(&SPACE[..16usize.saturating_sub(label.len())])?;
        write!(w, "{n:>8} |")?;
        let bar = ((n as u128 * BAR as u128) / max as u128) as usize;
        w.write_all(&AT[..bar])?;
        w.write_all(&SPACE[..BAR - bar])?;
        w.write_all(b"|\n")?;
    }
    let avg = if h.count > 0 { h.sum as f64 / h.count as f64 } else { 0.0 };
    let sp = if unit.is_empty() { "" } else { " " };
    writeln!(w, "count {}, average {avg:.1}{sp}{unit}, total {}{sp}{unit}\n", h.count, h.sum)
}

/// One histogram as a JSON `hist` object: `key` (the tool's fields), `unit`, the `buckets`
/// shown in the table (`lo` inclusive, `hi` exclusive, null where unbounded), `sum`, `count`.
pub fn write_json(
    sink: &mut Sink,
    key: impl FnOnce(&mut Sink) -> io::Result<()>,
    unit: &str,
    scale: Scale,
    h: &HistValue,
) -> io::Result<()> {
    sink.obj_start("hist")?;
    sink.object_start("key")?;
    key(sink)?;
    sink.object_end()?;
    sink.field_str("unit", unit)?;
    sink.field_raw("scale", if scale == Scale::Log2 { "\"log2\"" } else { "\"linear\"" })?;
    let mut buckets = Vec::with_capacity(64 * 40);
    buckets.push(b'[');
    for (i, slot) in shown(h).enumerate() {
        if i > 0 {
            buckets.push(b',');
        }
        let (lo, hi) = scale.bounds(slot);
        let num = |v: Option<u128>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
        write!(buckets, "{{\"lo\":{},\"hi\":{},\"count\":{}}}", num(lo), num(hi), h.slots[slot])?;
    }
    buckets.push(b']');
    sink.field_raw("buckets", std::str::from_utf8(&buckets).unwrap_or("[]"))?;
    sink.field_u64("sum", h.sum)?;
    sink.field_u64("count", h.count)?;
    sink.obj_end()
}

/// Every histogram of the table: batch lookups (Linux 5.6+ for hash maps), else key by key.
pub fn read_all(map: &MapMut<'_>) -> Vec<(HistKey, HistValue)> {
    let decode = |k: &[u8], v: &[u8]| {
        let (mut key, mut val) = (HistKey::default(), HistValue::default());
        (plain::copy_from_bytes(&mut key, k).is_ok() && plain::copy_from_bytes(&mut val, v).is_ok())
            .then_some((key, val))
    };
    let mut out: Vec<(HistKey, HistValue)> = match map.lookup_batch(BATCH, MapFlags::ANY, MapFlags::ANY) {
        Ok(batch) => batch.filter_map(|(k, v)| decode(&k, &v)).collect(),
        Err(_) => Vec::new(),
    };
    // libbpf-rs ends a batch read quietly on any error: an empty answer may be an old kernel
    // (no batch ops), so look again key by key (an empty table costs one syscall).
    if out.is_empty() {
        out = map
            .keys()
            .filter_map(|k| {
                let v = map.lookup(&k, MapFlags::ANY).ok()??;
                decode(&k, &v)
            })
            .collect();
    }
    out
}

/// The histograms to print now: what each key gained since the last call (or everything since
/// the start when `cumulative`), keys that gained nothing left out, in key order.
#[derive(Default)]
pub struct Reader {
    last: HashMap<HistKey, HistValue>,
    pub cumulative: bool,
}

impl Reader {
    pub fn new(cumulative: bool) -> Self {
        Reader { last: HashMap::new(), cumulative }
    }

    pub fn take(&mut self, map: &MapMut<'_>) -> Vec<(HistKey, HistValue)> {
        let mut now = read_all(map);
        now.sort_by_key(|(k, _)| (k.idx, k.pid, k.comm));
        let mut out = Vec::with_capacity(now.len());
        for (k, v) in now {
            let d = match (self.cumulative, self.last.get(&k)) {
                (false, Some(before)) => v.since(before),
                _ => v,
            };
            self.last.insert(k, v);
            if d.count > 0 {
                out.push((k, d));
            }
        }
        out
    }
}

/// Waits like [`Runtime::wait`] (Ctrl-C, --duration, `-- CMD`, `-p`, a closed stdout), calling
/// `show` every `interval`; returns the first write error (the run ends at it: nobody reads).
pub fn print_every(
    rt: &Runtime,
    child: Option<&mut GatedChild>,
    interval: Option<Duration>,
    mut show: impl FnMut() -> io::Result<()>,
) -> Option<io::Error> {
    let mut next = interval.map(|i| Instant::now() + i);
    let mut error = None;
    rt.wait(child, || {
        if let (Some(t), Some(i)) = (next.as_mut(), interval)
            && Instant::now() >= *t
            && error.is_none()
        {
            *t += i;
            error = show().err();
        }
    });
    error
}

/// The comm of a key, as text.
pub fn key_comm(k: &HistKey) -> std::borrow::Cow<'_, str> {
    c_str(&k.comm)
}

/// `-u`/`-m` style units: the divisor of nanoseconds and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeUnit {
    #[value(name = "ns")]
    Nsecs,
    #[value(name = "us")]
    Usecs,
    #[value(name = "ms")]
    Msecs,
}

impl TimeUnit {
    pub fn ns(self) -> u64 {
        match self {
            TimeUnit::Nsecs => 1,
            TimeUnit::Usecs => 1_000,
            TimeUnit::Msecs => 1_000_000,
        }
    }

    /// BCC's names for the units (`nsecs`, `usecs`, `msecs`).
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Nsecs => "nsecs",
            TimeUnit::Usecs => "usecs",
            TimeUnit::Msecs => "msecs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn label(scale: Scale, slot: usize) -> String {
        let mut v = Vec::new();
        slot_label(scale, slot, &mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn labels_as_bpftrace_prints_them() {
        let l = Scale::Log2;
        assert_eq!(label(l, 0), "(..., 0)");
        assert_eq!(label(l, 1), "[0]");
        assert_eq!(label(l, 2), "[1]");
        assert_eq!(label(l, 3), "[2, 4)");
        assert_eq!(label(l, 2 + 6), "[64, 128)");
        assert_eq!(label(l, 2 + 9), "[512, 1K)");
        assert_eq!(label(l, 2 + 12), "[4K, 8K)");
        assert_eq!(label(l, 2 + 20), "[1M, 2M)");
        assert_eq!(label(l, 2 + 63), "[8E, 16E)");
        let lin = Scale::Linear { step: 10 };
        assert_eq!(label(lin, 1), "[0, 10)");
        assert_eq!(label(lin, 3), "[20, 30)");
        assert_eq!(label(lin, SLOTS - 1), "[640, ...)");
        assert_eq!(label(Scale::Linear { step: 1024 }, 2), "[1K, 2K)");
    }

    #[test]
    fn table_is_trimmed_and_80_columns() {
        let mut h = HistValue::default();
        h.slots[Scale::Log2.slot(100, false)] = 3;
        h.slots[Scale::Log2.slot(5000, false)] = 6;
        h.count = 9;
        h.sum = 3 * 100 + 6 * 5000;
        let mut out = Vec::new();
        write_table(&mut out, "read", "bytes", Scale::Log2, &h).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "read (bytes):");
        // label 16 wide, count 8, a bar of 52 for the largest count
        assert_eq!(lines[1], format!("{:<16}{:>8} |{:<52}|", "[64, 128)", 3, "@".repeat(26)), "{text}");
        assert_eq!(lines[2], format!("{:<16}{:>8} |{:<52}|", "[128, 256)", 0, ""), "{text}");
        assert_eq!(lines[7], format!("{:<16}{:>8} |{}|", "[4K, 8K)", 6, "@".repeat(52)), "{text}");
        assert_eq!(lines.len(), 10, "{text}");
        assert!(lines[1..8].iter().all(|l| l.len() == 79), "{text}");
        assert_eq!(lines[8], "count 9, average 3366.7 bytes, total 30300 bytes");
    }

    proptest! {
        #[test]
        fn log2_slot_holds_the_value(v in any::<u64>()) {
            let s = Scale::Log2.slot(v, false);
            let (lo, hi) = Scale::Log2.bounds(s);
            prop_assert!(lo.unwrap() <= u128::from(v) && u128::from(v) < hi.unwrap());
            prop_assert!(s < SLOTS);
        }

        #[test]
        fn signed_negative_goes_first(v in i64::MIN..0) {
            prop_assert_eq!(Scale::Log2.slot(v as u64, true), 0);
            prop_assert_eq!(Scale::Linear { step: 7 }.slot(v as u64, true), 0);
        }

        #[test]
        fn linear_slot_holds_the_value(v in any::<u64>(), step in 1u64..1_000_000) {
            let scale = Scale::Linear { step };
            let s = scale.slot(v, false);
            let (lo, hi) = scale.bounds(s);
            prop_assert!(lo.unwrap() <= u128::from(v));
            prop_assert!(hi.is_none_or(|hi| u128::from(v) < hi));
        }

        #[test]
        fn slots_tile_the_line(s in 2usize..SLOTS - 1) {
            // each slot starts where the one before ends
            for scale in [Scale::Log2, Scale::Linear { step: 3 }] {
                prop_assert_eq!(scale.bounds(s).0, scale.bounds(s - 1).1);
            }
        }

        #[test]
        fn labels_round_trip(n in 0u32..64) {
            let v = 1u128 << n;
            let mut out = Vec::new();
            bound_label(v, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let (num, mult) = match text.chars().last().unwrap() {
                'K' => (&text[..text.len() - 1], 1u128 << 10),
                'M' => (&text[..text.len() - 1], 1 << 20),
                'G' => (&text[..text.len() - 1], 1 << 30),
                'T' => (&text[..text.len() - 1], 1 << 40),
                'P' => (&text[..text.len() - 1], 1 << 50),
                'E' => (&text[..text.len() - 1], 1 << 60),
                _ => (text.as_str(), 1),
            };
            prop_assert_eq!(num.parse::<u128>().unwrap() * mult, v);
            prop_assert!(num.parse::<u128>().unwrap() < 1024);
        }
    }
}
