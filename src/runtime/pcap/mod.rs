//! tcpdump's filter language (pcap-filter(7)) for the packet tools, run in the kernel.
//!
//! The expression is compiled by the system's libpcap, as tcpdump compiles it (`pcap_compile`
//! on a dead handle of the interface's link type), to classic BPF; `translate` turns that into
//! eBPF and `inject` puts it into the packet programs as the body of their filter function
//! before load (the way pwru and Retis do it). libpcap is opened at run time and only when an
//! expression is given: the binary stays free of shared libraries but libc (README "Install"),
//! and runs without libpcap for everything else.

pub mod inject;
pub mod translate;

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};

use crate::error::Error;

/// One classic BPF instruction (`struct bpf_insn` of libpcap and linux/filter.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassicInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// libpcap's `struct bpf_program`.
#[repr(C)]
struct ClassicProgram {
    len: c_uint,
    insns: *mut ClassicInsn,
}

/// DLT_EN10MB: Ethernet (and loopback, whose frames carry a zeroed Ethernet header).
pub const LINKTYPE_ETHERNET: c_int = 1;
/// tcpdump's default snapshot length: `ret #262144` in its programs.
const SNAPLEN: c_int = 262_144;
/// PCAP_NETMASK_UNKNOWN: `ip broadcast` then fails with libpcap's own message, as in tcpdump -r.
const NETMASK_UNKNOWN: u32 = 0xffff_ffff;
/// The names libpcap's runtime library has on Debian (0.8 is its historical soname) and elsewhere.
const LIBRARY_NAMES: &[&str] = &["libpcap.so.0.8", "libpcap.so.1", "libpcap.so"];

type OpenDead = unsafe extern "C" fn(c_int, c_int) -> *mut c_void;
type Compile = unsafe extern "C" fn(*mut c_void, *mut ClassicProgram, *const c_char, c_int, u32) -> c_int;
type GetErr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type FreeCode = unsafe extern "C" fn(*mut ClassicProgram);
type Close = unsafe extern "C" fn(*mut c_void);

/// Compiles `expression` for frames of `linktype` as tcpdump would (optimized). A bad
/// expression is a usage error with libpcap's own message.
pub fn compile(expression: &str, linktype: c_int) -> Result<Vec<ClassicInsn>, Error> {
    let text = CString::new(expression)
        .map_err(|_| Error::usage("the filter expression contains a NUL byte", None::<String>))?;
    let lib = open_library()?;
    let symbol_error = |e: libloading::Error| {
        Error::runtime(format!("libpcap lacks a function tracekit needs: {e}"), Some("install libpcap 1.x".to_owned()))
    };
    // SAFETY: the signatures are libpcap's (pcap/pcap.h, stable since libpcap 0.8); the
    // symbols are used only while `lib` is alive (this function).
    let (open_dead, compile, geterr, freecode, close) = unsafe {
        (
            *lib.get::<OpenDead>(b"pcap_open_dead\0").map_err(symbol_error)?,
            *lib.get::<Compile>(b"pcap_compile\0").map_err(symbol_error)?,
            *lib.get::<GetErr>(b"pcap_geterr\0").map_err(symbol_error)?,
            *lib.get::<FreeCode>(b"pcap_freecode\0").map_err(symbol_error)?,
            *lib.get::<Close>(b"pcap_close\0").map_err(symbol_error)?,
        )
    };
    // SAFETY: pcap_open_dead has no preconditions; it returns NULL on allocation failure.
    let handle = unsafe { open_dead(linktype, SNAPLEN) };
    if handle.is_null() {
        return Err(Error::runtime("libpcap could not open a handle (out of memory?)", None));
    }
    let mut prog = ClassicProgram { len: 0, insns: std::ptr::null_mut() };
    // SAFETY: `handle` is a live pcap_t, `prog` a bpf_program to fill, `text` NUL-terminated.
    // pcap_compile is not thread-safe before libpcap 1.8: tracekit compiles on one thread.
    let rc = unsafe { compile(handle, &mut prog, text.as_ptr(), 1, NETMASK_UNKNOWN) };
    let result = if rc != 0 {
        // SAFETY: pcap_geterr returns the handle's NUL-terminated error buffer.
        let msg = unsafe { CStr::from_ptr(geterr(handle)) }.to_string_lossy().into_owned();
        Err(Error::usage(
            format!("bad filter expression `{expression}`: {msg}"),
            Some("the syntax is tcpdump's (man 7 pcap-filter), e.g. `tcp port 80 and host 10.0.0.1`".to_owned()),
        ))
    } else {
        // SAFETY: on success libpcap filled `prog` with `len` instructions at `insns`.
        let insns = unsafe { std::slice::from_raw_parts(prog.insns, prog.len as usize) }.to_vec();
        // SAFETY: `prog` was filled by pcap_compile and is freed once.
        unsafe { freecode(&mut prog) };
        Ok(insns)
    };
    // SAFETY: `handle` came from pcap_open_dead and is closed once.
    unsafe { close(handle) };
    result
}

fn open_library() -> Result<libloading::Library, Error> {
    let mut last = None;
    for name in LIBRARY_NAMES {
        // SAFETY: loading libpcap runs its initialisers, which only set up its own state.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::runtime(
        format!(
            "a filter expression needs libpcap, tcpdump's library, which is not installed ({})",
            last.map(|e| e.to_string()).unwrap_or_default()
        ),
        Some("install it (Debian/Ubuntu: apt-get install libpcap0.8; Fedora: dnf install libpcap), or filter with --port/--host/--proto".to_owned()),
    ))
}

/// Words that begin a tcpdump expression (pcap-filter(7)'s primitives, qualifiers and
/// operators), for a tool whose interface is optional (`tracekit sockfilter tcp port 80`).
const FIRST_WORDS: &[&str] = &[
    "not",
    "!",
    "(",
    "ip",
    "ip6",
    "arp",
    "rarp",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "sctp",
    "igmp",
    "pim",
    "vrrp",
    "ah",
    "esp",
    "host",
    "net",
    "port",
    "portrange",
    "src",
    "dst",
    "ether",
    "vlan",
    "mpls",
    "len",
    "greater",
    "less",
    "proto",
    "gateway",
    "broadcast",
    "multicast",
    "inbound",
    "outbound",
    "pppoed",
    "pppoes",
    "geneve",
    "stp",
    "llc",
];

/// Whether `word`, given where an interface may stand, begins a tcpdump expression instead.
pub fn starts_expression(word: &str) -> bool {
    let head = word.split(['[', ' ']).next().unwrap_or_default();
    FIRST_WORDS.contains(&head) || word.starts_with('(') || word.starts_with('!')
}

/// The words of a tcpdump expression given as several arguments (`tcp port 80`), joined as
/// tcpdump joins them; None when there are none.
pub fn expression(words: &[String]) -> Option<String> {
    let joined = words.join(" ");
    (!joined.trim().is_empty()).then_some(joined)
}
