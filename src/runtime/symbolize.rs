//! Stack frames to names with blazesym: kernel addresses through kallsyms, user addresses
//! through the process's own mappings (it must still run) or an ELF file. A frame without a
//! name prints as hex; none is dropped.

use std::path::Path;

use blazesym::symbolize::{Input, Symbolized, Symbolizer, source};
use libbpf_rs::{MapCore, MapFlags, MapMut};

/// The frames at one address in stack order (leaf first): where debug info has them, the
/// functions inlined there, innermost first, then the function the code belongs to. blazesym
/// reports the inline chain outermost first, so it is reversed here; each is a frame of its own.
pub fn frames(s: &Symbolized<'_>, addr: u64) -> Vec<String> {
    match s {
        Symbolized::Sym(sym) => {
            sym.inlined.iter().rev().map(|f| f.name.as_ref()).chain([sym.name.as_ref()]).map(str::to_owned).collect()
        }
        Symbolized::Unknown(_) => vec![format!("{addr:#x}")],
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

    /// The frames of each address (`keys` are what blazesym looks up, as `input` says: the
    /// addresses themselves, or their file offsets). An address it cannot name is one frame in
    /// hex; a lookup that fails as a whole is retried address by address, so that one bad
    /// address does not leave the whole stack in hex.
    fn per_addr(
        &self,
        src: &source::Source<'_>,
        input: fn(&[u64]) -> Input<&[u64]>,
        keys: &[u64],
        addrs: &[u64],
    ) -> Vec<Vec<String>> {
        match self.symbolizer.symbolize(src, input(keys)) {
            Ok(syms) => addrs.iter().zip(syms).map(|(a, s)| frames(&s, *a)).collect(),
            Err(_) if keys.len() > 1 => keys
                .iter()
                .zip(addrs)
                .flat_map(|(k, a)| self.per_addr(src, input, std::slice::from_ref(k), std::slice::from_ref(a)))
                .collect(),
            Err(_) => addrs.iter().map(|a| vec![format!("{a:#x}")]).collect(),
        }
    }

    /// The frames of each kernel address.
    pub fn kernel_per_addr(&self, addrs: &[u64]) -> Vec<Vec<String>> {
        if addrs.is_empty() {
            return Vec::new();
        }
        self.per_addr(&source::Source::Kernel(source::Kernel::default()), |k| Input::AbsAddr(k), addrs, addrs)
    }

    /// A kernel stack's frames, leaf first.
    pub fn kernel(&self, addrs: &[u64]) -> Vec<String> {
        self.kernel_per_addr(addrs).concat()
    }

    /// A user stack's frames, leaf first, through the running process's own mappings.
    pub fn user(&self, pid: u32, addrs: &[u64]) -> Vec<String> {
        if addrs.is_empty() {
            return Vec::new();
        }
        self.per_addr(&source::Source::Process(source::Process::new(pid.into())), |k| Input::AbsAddr(k), addrs, addrs)
            .concat()
    }

    /// The frames of each address through an ELF file: `offsets[i]` is where `addrs[i]` lies
    /// in `file`.
    pub fn file_per_addr(&self, file: &Path, offsets: &[u64], addrs: &[u64]) -> Vec<Vec<String>> {
        if addrs.is_empty() {
            return Vec::new();
        }
        self.per_addr(&source::Source::Elf(source::Elf::new(file)), |k| Input::FileOffset(k), offsets, addrs)
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
