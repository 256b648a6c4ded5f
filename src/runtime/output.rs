//! Where events go: a table or NDJSON on stdout, buffered and written once per batch
//! (after every event when stdout is a terminal). Nothing here allocates per event.

use std::io::{self, BufWriter, IsTerminal, Stdout, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::fastfmt;

/// Version of the NDJSON schema documented in the README; bumped on incompatible changes.
pub const JSON_SCHEMA: u32 = 1;

/// The fields a task event starts with (from `struct tk_hdr`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskHeader {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub cpu: u32,
    pub comm: [u8; 16],
}

/// The fields a packet event starts with (from `struct tk_pkt_hdr`), the interface named.
#[derive(Debug, Clone, Copy)]
pub struct PacketHeader<'a> {
    pub ts_ns: u64,
    pub ifindex: u32,
    /// The interface's name, NUL-padded (IFNAMSIZ)
    pub iface: [u8; 16],
    pub netns: u32,
    pub cpu: u32,
    pub len: u32,
    /// `ingress` or `egress`
    pub dir: &'a str,
}

/// The fields a cgroup hook's event starts with: the task where the hook runs in process
/// context (pid 0 where it does not, as for packets, or where the kernel offers no way to know).
#[derive(Debug, Clone, Copy)]
pub struct HookHeader {
    pub ts_ns: u64,
    pub cpu: u32,
    pub pid: u32,
    pub comm: [u8; 16],
}

/// What leads an event: a task (pid, comm, ...), a packet (interface, namespace, ...) or a
/// cgroup hook's call.
#[derive(Debug, Clone, Copy)]
pub enum EventHeader<'a> {
    Task(TaskHeader),
    Packet(PacketHeader<'a>),
    Hook(HookHeader),
}

impl EventHeader<'_> {
    pub fn ts_ns(&self) -> u64 {
        match self {
            EventHeader::Task(h) => h.ts_ns,
            EventHeader::Packet(h) => h.ts_ns,
            EventHeader::Hook(h) => h.ts_ns,
        }
    }
}

impl From<TaskHeader> for EventHeader<'_> {
    fn from(h: TaskHeader) -> Self {
        EventHeader::Task(h)
    }
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// An address as socket events carry it (tcpstate, tcpcc): 16 bytes, IPv4 in the first 4.
pub fn sock_addr(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw))
    }
}

/// Bytes up to the first NUL, as text (lossy only for invalid UTF-8, which costs an allocation).
pub fn c_str(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
}

/// A C `char` array from a generated type (i8 on x86) as text, without copying.
pub fn c_chars(chars: &[std::ffi::c_char]) -> std::borrow::Cow<'_, str> {
    // SAFETY: c_char (i8 or u8) has the size, alignment and validity of u8.
    let bytes = unsafe { std::slice::from_raw_parts(chars.as_ptr().cast::<u8>(), chars.len()) };
    c_str(bytes)
}

pub struct Sink {
    out: BufWriter<Stdout>,
    pub json: bool,
    timestamp: bool,
    flush_each: bool,
    /// CLOCK_MONOTONIC → CLOCK_REALTIME
    realtime_offset_ns: i128,
    /// Cache of the last formatted wall-clock second.
    clock: (i64, [u8; 8]),
    /// Whether the current JSON object has a field yet (comma placement).
    first_field: bool,
}

impl Sink {
    pub fn new(json: bool, timestamp: bool, realtime_offset_ns: i128) -> Self {
        let stdout = io::stdout();
        let flush_each = stdout.is_terminal();
        Sink {
            out: BufWriter::with_capacity(64 * 1024, stdout),
            json,
            timestamp,
            flush_each,
            realtime_offset_ns,
            clock: (i64::MIN, *b"00:00:00"),
            first_field: true,
        }
    }

    pub fn w(&mut self) -> &mut impl Write {
        &mut self.out
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn realtime_ns(&self, ts_ns: u64) -> i128 {
        ts_ns as i128 + self.realtime_offset_ns
    }

    /// Table header: the time column (with -T), then the tool's columns.
    pub fn table_header(&mut self, columns: &str) -> io::Result<()> {
        if self.timestamp {
            self.out.write_all(b"TIME     ")?;
        }
        self.out.write_all(columns.as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Starts a table row: the time column when asked for.
    pub fn row_start(&mut self, hdr: &EventHeader<'_>) -> io::Result<()> {
        if self.timestamp {
            let secs = (self.realtime_ns(hdr.ts_ns()) / 1_000_000_000) as i64;
            if secs != self.clock.0 {
                self.clock = (secs, local_hms(secs));
            }
            self.out.write_all(&self.clock.1)?;
            self.out.write_all(b" ")?;
        }
        Ok(())
    }

    pub fn row_end(&mut self) -> io::Result<()> {
        self.out.write_all(b"\n")?;
        if self.flush_each { self.out.flush() } else { Ok(()) }
    }

    /// Starts `{"type":KIND` ; fields follow with the `field_*` calls; `obj_end` closes it.
    pub fn obj_start(&mut self, kind: &str) -> io::Result<()> {
        self.out.write_all(b"{\"type\":\"")?;
        self.out.write_all(kind.as_bytes())?;
        self.out.write_all(b"\"")?;
        self.first_field = false;
        Ok(())
    }

    /// An event object with the header's fields (task or packet).
    pub fn event_start(&mut self, hdr: &EventHeader<'_>) -> io::Result<()> {
        self.obj_start("event")?;
        self.field_i128("time_ns", self.realtime_ns(hdr.ts_ns()))?;
        match hdr {
            EventHeader::Task(h) => {
                self.field_u64("pid", h.pid.into())?;
                self.field_u64("tid", h.tid.into())?;
                self.field_u64("uid", h.uid.into())?;
                self.field_u64("cpu", h.cpu.into())?;
                self.field_str("comm", &c_str(&h.comm))
            }
            EventHeader::Packet(h) => {
                self.field_str("iface", &c_str(&h.iface))?;
                self.field_u64("ifindex", h.ifindex.into())?;
                self.field_u64("netns", h.netns.into())?;
                self.field_u64("cpu", h.cpu.into())?;
                self.field_str("dir", h.dir)?;
                self.field_u64("len", h.len.into())
            }
            EventHeader::Hook(h) => {
                self.field_u64("cpu", h.cpu.into())?;
                if h.pid == 0 {
                    return Ok(());
                }
                self.field_u64("pid", h.pid.into())?;
                self.field_str("comm", &c_str(&h.comm))
            }
        }
    }

    pub fn obj_end(&mut self) -> io::Result<()> {
        self.out.write_all(b"}\n")?;
        self.first_field = true;
        if self.flush_each { self.out.flush() } else { Ok(()) }
    }

    fn key(&mut self, key: &str) -> io::Result<()> {
        if !self.first_field {
            self.out.write_all(b",")?;
        }
        self.first_field = false;
        self.out.write_all(b"\"")?;
        self.out.write_all(key.as_bytes())?;
        self.out.write_all(b"\":")
    }

    pub fn field_u64(&mut self, key: &str, v: u64) -> io::Result<()> {
        self.key(key)?;
        fastfmt::int(&mut self.out, v)
    }

    /// Counters as fields, one per name (a tool's counts object: the names and the values its
    /// per-CPU array holds, in the same order).
    pub fn fields_u64(&mut self, names: &[&str], values: impl IntoIterator<Item = u64>) -> io::Result<()> {
        for (name, v) in names.iter().zip(values) {
            self.field_u64(name, v)?;
        }
        Ok(())
    }

    /// A value that is already JSON (`null`, `true`).
    pub fn field_raw(&mut self, key: &str, json: &str) -> io::Result<()> {
        self.key(key)?;
        self.out.write_all(json.as_bytes())
    }

    /// Opens a nested object as the value of `key`; close it with `object_end`.
    pub fn object_start(&mut self, key: &str) -> io::Result<()> {
        self.key(key)?;
        self.out.write_all(b"{")?;
        self.first_field = true;
        Ok(())
    }

    pub fn object_end(&mut self) -> io::Result<()> {
        self.first_field = false;
        self.out.write_all(b"}")
    }

    pub fn field_i128(&mut self, key: &str, v: i128) -> io::Result<()> {
        self.key(key)?;
        fastfmt::int(&mut self.out, v)
    }

    pub fn field_f64(&mut self, key: &str, v: f64, decimals: usize) -> io::Result<()> {
        self.key(key)?;
        write!(self.out, "{v:.decimals$}")
    }

    pub fn field_str(&mut self, key: &str, v: &str) -> io::Result<()> {
        self.key(key)?;
        serde_json::to_writer(&mut self.out, v).map_err(io::Error::other)
    }

    /// A socket's two ends, as every socket event names them: `family`, `laddr`, `lport`,
    /// `raddr`, `rport` (addresses as [`sock_addr`] reads them).
    pub fn field_sock_ends(
        &mut self,
        family: u16,
        local: (&[u8; 16], u16),
        remote: (&[u8; 16], u16),
    ) -> io::Result<()> {
        self.field_str("family", if family == AF_INET { "ipv4" } else { "ipv6" })?;
        self.field_display("laddr", sock_addr(family, local.0))?;
        self.field_u64("lport", local.1.into())?;
        self.field_display("raddr", sock_addr(family, remote.0))?;
        self.field_u64("rport", remote.1.into())
    }

    /// A field whose value is formatted by Display (addresses), quoted as a JSON string.
    pub fn field_display(&mut self, key: &str, v: impl std::fmt::Display) -> io::Result<()> {
        self.key(key)?;
        write!(self.out, "\"{v}\"")
    }
}

fn local_hms(secs: i64) -> [u8; 8] {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: an all-zero tm is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::localtime_r(&t, &mut tm) };
    let mut s = *b"00:00:00";
    for (i, v) in [tm.tm_hour, tm.tm_min, tm.tm_sec].into_iter().enumerate() {
        s[i * 3] = b'0' + (v / 10) as u8;
        s[i * 3 + 1] = b'0' + (v % 10) as u8;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_str_stops_at_nul() {
        assert_eq!(c_str(b"bash\0\0\0junk"), "bash");
        assert_eq!(c_str(b"full"), "full");
        assert_eq!(c_str(b"\xffx\0"), "\u{fffd}x");
    }

    #[test]
    fn hms_is_two_digits_each() {
        let s = local_hms(0);
        assert_eq!(s[2], b':');
        assert_eq!(s[5], b':');
        assert!(s.iter().enumerate().all(|(i, c)| i == 2 || i == 5 || c.is_ascii_digit()));
    }
}
