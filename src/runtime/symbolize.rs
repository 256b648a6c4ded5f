//! Stack frames to names with blazesym: kernel addresses through kallsyms, user addresses
//! through the process's own mappings (it must still run) or an ELF file. A frame without a
//! name prints as hex; none is dropped.

use std::path::Path;

use blazesym::symbolize::{Input, Symbolized, Symbolizer, source};
use libbpf_rs::{MapCore, MapFlags, MapMut};

/// The function and, where debug info has them, the functions inlined into it (innermost
/// first), `;`-separated.
pub fn frame_name(s: &Symbolized<'_>, addr: u64) -> String {
    match s {
        Symbolized::Sym(sym) => {
            let mut parts: Vec<&str> = sym.inlined.iter().rev().map(|f| f.name.as_ref()).collect();
            parts.push(sym.name.as_ref());
            parts.join(";")
        }
        Symbolized::Unknown(_) => format!("{addr:#x}"),
    }
}

pub struct Stacks {
    symbolizer: Symbolizer,
}

impl Default for Stacks {
    fn default() -> Self {
        Self::new()
    }
}

impl Stacks {
    pub fn new() -> Self {
        Stacks { symbolizer: Symbolizer::new() }
    }

    /// A name per address (`input` is what blazesym looks up: the addresses themselves, or
    /// their file offsets); an address it cannot name, or a failed lookup, prints as hex.
    fn names(&self, src: &source::Source<'_>, input: Input<&[u64]>, addrs: &[u64]) -> Vec<String> {
        if addrs.is_empty() {
            return Vec::new();
        }
        match self.symbolizer.symbolize(src, input) {
            Ok(syms) => addrs.iter().zip(syms).map(|(a, s)| frame_name(&s, *a)).collect(),
            Err(_) => addrs.iter().map(|a| format!("{a:#x}")).collect(),
        }
    }

    pub fn kernel(&self, addrs: &[u64]) -> Vec<String> {
        self.names(&source::Source::Kernel(source::Kernel::default()), Input::AbsAddr(addrs), addrs)
    }

    /// Through the running process's own mappings.
    pub fn user(&self, pid: u32, addrs: &[u64]) -> Vec<String> {
        self.names(&source::Source::Process(source::Process::new(pid.into())), Input::AbsAddr(addrs), addrs)
    }

    /// Through an ELF file: `offsets[i]` is where `addrs[i]` lies in `file`.
    pub fn file(&self, file: &Path, offsets: &[u64], addrs: &[u64]) -> Vec<String> {
        self.names(&source::Source::Elf(source::Elf::new(file)), Input::FileOffset(offsets), addrs)
    }
}

/// The addresses of stack `id` in a STACK_TRACE map; none for a negative id (no stack).
pub fn stack_addrs(stacks: &MapMut<'_>, id: i32) -> Vec<u64> {
    if id < 0 {
        return Vec::new();
    }
    match stacks.lookup(&id.to_ne_bytes(), MapFlags::ANY) {
        Ok(Some(bytes)) => addrs_of(&bytes),
        _ => Vec::new(),
    }
}

/// A stack map value: addresses up to the first zero.
fn addrs_of(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))).take_while(|&a| a != 0).collect()
}
