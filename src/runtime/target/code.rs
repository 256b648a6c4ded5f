//! Where inside a function of an ELF file a uprobe may go. The kernel writes a breakpoint at the
//! probed address: in the middle of an instruction it corrupts that instruction, and the traced
//! program crashes (or worse, runs something else), so an offset must start an instruction. An
//! IFUNC symbol is the resolver the dynamic loader calls once to pick an implementation for this
//! CPU: the program calls the implementation, never the symbol's own code.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::Function;
use crate::error::Error;

/// The longest x86 instruction, in bytes.
const MAX_INSN: u64 = 15;

/// Refuses `offset` into `f` (in the file at `path`) unless an instruction starts there.
pub fn check_offset(path: &Path, f: &Function, offset: u64) -> Result<(), Error> {
    if offset == 0 {
        return Ok(());
    }
    if f.size != 0 && offset >= f.size {
        return Err(Error::usage(
            format!("offset {offset:#x} is past the end of `{}` ({} bytes)", f.name, f.size),
            Some(format!("give an offset below {:#x} (see `objdump -d --disassemble={}`)", f.size, f.name)),
        ));
    }
    // The bytes up to the offset and the whole instruction that covers it, within the function.
    let want = if f.size != 0 { f.size.min(offset + MAX_INSN) } else { offset + MAX_INSN };
    let mut code = vec![0u8; want as usize];
    let read = File::open(path).and_then(|file| read_at_most(&file, &mut code, f.file_offset));
    let code = match read {
        Ok(n) => &code[..n],
        Err(e) => return Err(Error::io(format!("reading the code of `{}` in `{}`", f.name, path.display()), e)),
    };
    match boundary(code, offset) {
        Boundary::Start => Ok(()),
        Boundary::Inside { start, next } => Err(Error::usage(
            format!("offset {offset:#x} is inside an instruction of `{}`: a uprobe there would corrupt it", f.name),
            Some(format!(
                "the nearest instruction boundaries are {name}+{start:#x} and {name}+{next:#x}",
                name = f.name
            )),
        )),
        Boundary::Undecodable { at } => Err(Error::usage(
            format!("cannot decode the instructions of `{}` at offset {at:#x}, before {offset:#x}", f.name),
            Some("give an offset that `objdump -d` shows as the start of an instruction".into()),
        )),
    }
}

/// Reads up to `buf.len()` bytes at `pos`, fewer at the end of the file.
fn read_at_most(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], pos + n as u64)? {
            0 => break,
            got => n += got,
        }
    }
    Ok(n)
}

#[derive(Debug, PartialEq, Eq)]
enum Boundary {
    Start,
    /// The instruction at `start` covers the offset; the next one starts at `next`.
    Inside {
        start: u64,
        next: u64,
    },
    Undecodable {
        at: u64,
    },
}

/// Decodes `code` (a function's first bytes) from its start up to `offset`.
#[cfg(target_arch = "x86_64")]
fn boundary(code: &[u8], offset: u64) -> Boundary {
    use iced_x86::{Decoder, DecoderOptions};
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut start = 0;
    while start < offset {
        let insn = decoder.decode();
        if insn.is_invalid() {
            return Boundary::Undecodable { at: start };
        }
        let next = decoder.ip();
        if next > offset {
            return Boundary::Inside { start, next };
        }
        start = next;
    }
    Boundary::Start
}

/// Fixed-size instructions (aarch64, riscv without C): a boundary every 4 bytes.
#[cfg(not(target_arch = "x86_64"))]
fn boundary(_code: &[u8], offset: u64) -> Boundary {
    match offset % 4 {
        0 => Boundary::Start,
        r => Boundary::Inside { start: offset - r, next: offset - r + 4 },
    }
}

/// The ELF machine this build of tracekit runs on.
const HOST_MACHINE: u16 = if cfg!(target_arch = "aarch64") { object::elf::EM_AARCH64 } else { object::elf::EM_X86_64 };

fn machine_name(m: u16) -> String {
    use object::elf::*;
    match m {
        EM_X86_64 => "x86-64".into(),
        EM_386 => "i386 (32-bit x86)".into(),
        EM_AARCH64 => "aarch64".into(),
        EM_ARM => "arm (32-bit)".into(),
        EM_RISCV => "riscv".into(),
        EM_PPC64 => "ppc64".into(),
        EM_S390 => "s390".into(),
        other => format!("machine {other}"),
    }
}

/// Refuses an ELF file built for another machine: its code never runs here, and its offsets
/// mean nothing to this kernel's uprobes. Checked after the file was opened as ELF.
pub fn check_machine(path: &Path) -> Result<(), Error> {
    let mut head = [0u8; 20];
    let Ok(()) = File::open(path).and_then(|f| f.read_exact_at(&mut head, 0)) else { return Ok(()) };
    let (bytes, class64) = ([head[18], head[19]], head[4] == object::elf::ELFCLASS64);
    let machine =
        if head[5] == object::elf::ELFDATA2MSB { u16::from_be_bytes(bytes) } else { u16::from_le_bytes(bytes) };
    if machine == HOST_MACHINE && class64 {
        return Ok(());
    }
    Err(Error::usage(
        format!(
            "`{}` is built for the wrong architecture: {}{}, and this machine is {}",
            path.display(),
            machine_name(machine),
            if class64 { "" } else { ", 32-bit" },
            machine_name(HOST_MACHINE)
        ),
        Some(format!("give a {} binary or library (check with `file`)", machine_name(HOST_MACHINE))),
    ))
}

/// Why an IFUNC could not be resolved.
pub type Unresolved = String;

/// The file offset of the implementation IFUNC `name` of `path` resolves to on this machine.
///
/// Resolved the way the loader does it, in tracekit's own process: `dlsym` runs the resolver
/// (same CPU, same library) and the address maps back to a file offset. Only possible when
/// tracekit itself has that very file loaded (same device and inode): its own libc.
pub fn resolve_ifunc(path: &Path, name: &str) -> Result<u64, Unresolved> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    let mappings = self_mappings(meta.dev(), meta.ino());
    let Some(loaded) = mappings.first().map(|m| m.path.clone()) else {
        return Err(format!("tracekit does not have `{}` loaded, so it cannot run its resolver", path.display()));
    };
    let c_path = std::ffi::CString::new(loaded.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let c_name = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: both strings are NUL-terminated; RTLD_NOLOAD only looks up a library that is
    // already loaded (no constructor runs), and the handle is closed right after the lookup.
    let addr = unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return Err(format!("`{}` is mapped but not loaded as a library by tracekit", loaded.display()));
        }
        let addr = libc::dlsym(handle, c_name.as_ptr());
        libc::dlclose(handle);
        addr as u64
    };
    if addr == 0 {
        return Err(format!("the dynamic loader does not resolve `{name}`"));
    }
    mappings
        .iter()
        .find(|m| (m.start..m.end).contains(&addr))
        .map(|m| addr - m.start + m.offset)
        .ok_or_else(|| format!("`{name}` resolves to {addr:#x}, outside `{}`", path.display()))
}

struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: PathBuf,
}

/// tracekit's own mappings of the file with this device and inode.
fn self_mappings(dev: u64, ino: u64) -> Vec<Mapping> {
    let maps = fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, _perms, offset, _dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let path = PathBuf::from(f.next()?);
            if inode.parse::<u64>().ok()? != ino {
                return None;
            }
            let m = fs::metadata(&path).ok()?;
            if m.dev() != dev || m.ino() != ino {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                path,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn offsets_inside_an_instruction_are_found() {
        // push rbp (1) ; mov rbp,rsp (3) ; sub rsp,0x10 (4) ; ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0xc3];
        for ok in [0, 1, 4, 8] {
            assert_eq!(boundary(&code, ok), Boundary::Start, "{ok}");
        }
        assert_eq!(boundary(&code, 2), Boundary::Inside { start: 1, next: 4 });
        assert_eq!(boundary(&code, 7), Boundary::Inside { start: 4, next: 8 });
        // `push es` does not exist in 64-bit mode.
        assert_eq!(boundary(&[0x06, 0x90, 0x90, 0x90], 3), Boundary::Undecodable { at: 0 });
    }

    #[test]
    fn libc_strlen_resolves_to_an_implementation() {
        let libc = super::super::resolve_binary("libc", None).unwrap();
        let elf = super::super::ElfInfo::load(&libc).unwrap();
        let strlen = elf.find("strlen").unwrap();
        assert!(strlen.ifunc, "glibc's strlen is an IFUNC");
        let imp = resolve_ifunc(&libc, "strlen").unwrap();
        assert_ne!(imp, strlen.file_offset, "the implementation, not the resolver");
        assert!(resolve_ifunc(Path::new("/bin/bash"), "readline").is_err(), "not loaded by tracekit");
    }
}
