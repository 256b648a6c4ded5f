//! User-space targets: finding a binary or library the way a shell or the dynamic loader would,
//! and the functions an ELF file defines (with the file offsets uprobes attach at).

use std::fs;
use std::path::{Path, PathBuf};

use object::read::elf::{Dyn, ElfFile64};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::error::Error;

pub mod code;

/// One function defined in an ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    /// Where the function's code is in the file: what a uprobe attaches at.
    pub file_offset: u64,
    /// An STT_GNU_IFUNC: this code is the resolver that picks the real implementation.
    pub ifunc: bool,
}

#[derive(Debug)]
pub struct ElfInfo {
    pub path: PathBuf,
    /// Defined functions from `.symtab` and `.dynsym`, sorted by name, without duplicates.
    pub functions: Vec<Function>,
    /// Names the file imports from shared libraries.
    pub imports: Vec<String>,
    /// DT_NEEDED libraries.
    pub needed: Vec<String>,
    /// Has no `.symtab` (only exported symbols are known).
    pub stripped: bool,
}

impl ElfInfo {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let data = Mapped::open(path)?;
        let not_elf = |why: String| {
            Error::runtime(
                format!("`{}` is not an ELF file we can trace: {why}", path.display()),
                Some("give an executable or shared library (check with `file`)".to_owned()),
            )
        };
        if !data.starts_with(b"\x7fELF") {
            return Err(not_elf("no ELF header".into()));
        }
        let file = object::File::parse(&*data).map_err(|e| not_elf(e.to_string()))?;
        let segments: Vec<(u64, u64, u64)> = file
            .segments()
            .filter_map(|s| {
                let (off, fsize) = s.file_range();
                (fsize > 0).then_some((s.address(), fsize, off))
            })
            .collect();
        let to_offset = |addr: u64| {
            segments.iter().find(|(a, len, _)| addr >= *a && addr < a + len).map(|(a, _, off)| addr - a + off)
        };
        let mut functions = Vec::new();
        let mut imports = Vec::new();
        for sym in file.symbols().chain(file.dynamic_symbols()) {
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            if sym.is_undefined() {
                if sym.kind() == SymbolKind::Text || sym.kind() == SymbolKind::Unknown {
                    imports.push(strip_version(name).to_owned());
                }
                continue;
            }
            if sym.kind() != SymbolKind::Text || sym.address() == 0 {
                continue;
            }
            let Some(file_offset) = to_offset(sym.address()) else { continue };
            functions.push(Function {
                name: strip_version(name).to_owned(),
                addr: sym.address(),
                size: sym.size(),
                file_offset,
                ifunc: matches!(sym.flags(), object::SymbolFlags::Elf { st_info, .. }
                    if st_info & 0xf == object::elf::STT_GNU_IFUNC),
            });
        }
        functions.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
        functions.dedup_by(|a, b| a.name == b.name && a.addr == b.addr);
        imports.sort();
        imports.dedup();
        let stripped = file.section_by_name(".symtab").is_none();
        let needed = needed_libraries(&data).unwrap_or_default();
        Ok(ElfInfo { path: path.to_path_buf(), functions, imports, needed, stripped })
    }

    pub fn find(&self, name: &str) -> Option<&Function> {
        let i = self.functions.partition_point(|f| f.name.as_str() < name);
        self.functions.get(i).filter(|f| f.name == name)
    }

    pub fn imports(&self, name: &str) -> bool {
        self.imports.binary_search_by(|i| i.as_str().cmp(name)).is_ok()
    }

    /// Up to three defined names close to `name`, for "did you mean".
    pub fn similar(&self, name: &str) -> Vec<&str> {
        super::resolve::similar(self.functions.iter().map(|f| f.name.as_str()), name, 0.85, 3)
    }
}

/// Smallest file with an ELF header (Elf64_Ehdr).
const ELF_HEADER_LEN: u64 = 64;

/// An ELF file mapped read-only: the kernel pages in what the parser touches, so a 1 GB
/// binary costs no 1 GB read, and no `fs::read` can run away on something that never ends.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// Maps `path` if it is a regular file big enough for an ELF header. Opened non-blocking
    /// and checked with fstat on the open file: a FIFO (whose open would wait for a writer
    /// forever), a device (/dev/zero never ends) or a directory is refused before any read.
    fn open(path: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let file =
            fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(
                |e| {
                    Error::io_hint(format!("cannot read `{}`", path.display()), e, "check the path and its permissions")
                },
            )?;
        let meta = file.metadata().map_err(|e| Error::io(format!("cannot stat `{}`", path.display()), e))?;
        let ft = meta.file_type();
        if !ft.is_file() {
            let what = if ft.is_dir() {
                "a directory"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_char_device() || ft.is_block_device() {
                "a device"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "a special file"
            };
            return Err(Error::usage(
                format!("`{}` is not a regular file (it is {what}): only ELF files can be traced", path.display()),
                Some("give an executable or shared library".to_owned()),
            ));
        }
        if meta.len() < ELF_HEADER_LEN {
            return Err(Error::runtime(
                format!(
                    "`{}` is not an ELF file we can trace: {} bytes, too small for an ELF header",
                    path.display(),
                    meta.len()
                ),
                Some("give an executable or shared library (check with `file`)".to_owned()),
            ));
        }
        let len = usize::try_from(meta.len()).map_err(|_| {
            Error::usage(format!("`{}` is too large to map ({} bytes)", path.display(), meta.len()), None)
        })?;
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh private read-only mapping of `len` (> 0) bytes of an open regular file;
        // the kernel picks the address. Nothing writes through it, and the file may be closed
        // afterwards (the mapping keeps its own reference). A file truncated by someone else
        // while mapped would fault on access, as for every mmap reader (perf, gdb, blazesym).
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(Error::io(format!("cannot map `{}`", path.display()), std::io::Error::last_os_error()));
        }
        Ok(Mapped { ptr, len })
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live PROT_READ mapping owned by self (unmapped only in
        // drop), and u8 has no alignment or validity requirements.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `open`, unmapped once; no slice of it outlives
        // self (Deref borrows from self).
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// `malloc@@GLIBC_2.2.5` → `malloc`.
fn strip_version(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

fn needed_libraries(data: &[u8]) -> Option<Vec<String>> {
    let elf = ElfFile64::<object::Endianness>::parse(data).ok()?;
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let (dyns, strtab_index) = sections.dynamic(endian, data).ok()??;
    let strings = sections.strings(endian, data, strtab_index).ok()?;
    Some(
        dyns.iter()
            .filter(|d| d.tag32(endian) == Some(object::elf::DT_NEEDED))
            .filter_map(|d| d.string(endian, strings).ok())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Where a path is seen from: the host, or inside a process's mount namespace.
fn in_root(pid: Option<u32>, path: &Path) -> PathBuf {
    match pid {
        Some(p) => Path::new(&format!("/proc/{p}/root")).join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

/// BINARY of a `BINARY:SYMBOL` spec: a path, a program on PATH, or a library name resolved as
/// the dynamic loader would (`libc` → `libc.so.6`). With `pid`, inside that process's root.
pub fn resolve_binary(name: &str, pid: Option<u32>) -> Result<PathBuf, Error> {
    if name.trim().is_empty() {
        return Err(Error::usage(
            "the binary or library name is empty",
            Some("give a path (/usr/bin/foo), a program on PATH, or a library name (libc, libssl)".to_owned()),
        ));
    }
    // Checked first: every lookup below goes through /proc/PID, and a missing process (or a
    // kernel thread) would otherwise read as a missing binary.
    if let Some(pid) = pid {
        user_process(pid)?;
    }
    if name.contains('/') {
        let p = in_root(pid, Path::new(name));
        return match fs::metadata(&p) {
            Ok(_) => Ok(p),
            Err(e) => Err(unreachable_path(name, pid, e)),
        };
    }
    if let Some(pid) = pid {
        let mapped = library_in_process(name, pid).map_err(|e| unreachable_path(name, Some(pid), e))?;
        if let Some(p) = mapped {
            return Ok(p);
        }
    }
    if let Some(p) = on_path(name, pid) {
        return Ok(p);
    }
    if let Some(p) = library_on_disk(name, pid) {
        if let Some(pid) = pid {
            eprintln!(
                "tracekit: note: process {pid} does not map `{name}` now: tracing `{}` for when it loads it",
                p.display()
            );
        }
        return Ok(p);
    }
    Err(Error::usage(
        format!("binary or library `{name}` not found"),
        Some(match pid {
            Some(pid) => format!(
                "process {pid} does not map a library named `{name}` (see /proc/{pid}/maps), and none is on PATH or in the library directories of its root"
            ),
            None => "give a path (/usr/bin/foo), a program on PATH, or a library name (libc, libssl)".to_owned(),
        }),
    ))
}

/// Why BINARY (looked up in `pid`'s root when given) cannot be reached: a missing file, a
/// symlink loop, or a process whose root or maps tracekit may not read.
fn unreachable_path(name: &str, pid: Option<u32>, e: std::io::Error) -> Error {
    let inside = |pid| format!("the path is looked up inside process {pid}'s root (/proc/{pid}/root)");
    match (e.kind(), e.raw_os_error(), pid) {
        (_, Some(libc::ELOOP), _) => Error::usage(
            format!("binary `{name}` is a symlink loop (too many levels of symbolic links)"),
            Some(format!("see where it points: `namei {name}`")),
        ),
        (std::io::ErrorKind::PermissionDenied, _, Some(pid)) => Error::usage(
            format!("permission denied looking into process {pid} (its /proc/{pid}/root and maps) for `{name}`"),
            Some(format!(
                "process {pid} is outside tracekit's reach (another user namespace, or ptrace rules): give the binary's path as tracekit sees it, without -p"
            )),
        ),
        (std::io::ErrorKind::PermissionDenied, _, None) => {
            Error::usage(format!("permission denied reading `{name}`"), Some("check its permissions".to_owned()))
        }
        (std::io::ErrorKind::NotFound, _, _) => Error::usage(
            format!("binary `{name}` not found"),
            Some(pid.map_or_else(|| "check the path".to_owned(), inside)),
        ),
        _ => Error::io(format!("cannot reach `{name}`"), e),
    }
}

/// Refuses a pid that is not a running user process: one that does not exist, or a kernel
/// thread (no user space: a uprobe filtered on it never fires).
pub fn user_process(pid: u32) -> Result<(), Error> {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::usage(
                format!("process {pid} does not exist"),
                Some("give the pid of a running process (see `ps -e`)".to_owned()),
            ));
        }
        Err(e) => return Err(Error::io(format!("reading /proc/{pid}/stat"), e)),
    };
    // `pid (comm) state ppid pgrp session tty tpgid flags …`; comm may hold spaces and `)`.
    const PF_KTHREAD: u64 = 0x0020_0000;
    let (comm, rest) = stat.rsplit_once(')').map_or(("", ""), |(head, rest)| (head, rest));
    let comm = comm.split_once('(').map_or("", |(_, c)| c);
    let flags: u64 = rest.split_whitespace().nth(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        return Err(Error::usage(
            format!("process {pid} ({comm}) is a kernel thread: it has no user space to probe"),
            Some("give the pid of a user process (see `ps -e`)".to_owned()),
        ));
    }
    Ok(())
}

fn on_path(name: &str, pid: Option<u32>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| in_root(pid, &d.join(name))).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Does a file name stand for library `name` (`libc` matches `libc.so.6` and `libc-2.31.so`)?
fn library_matches(file: &str, name: &str) -> bool {
    let stem = name.strip_suffix(".so").unwrap_or(name);
    file == name
        || file
            .strip_prefix(stem)
            .is_some_and(|rest| rest.starts_with(".so") || rest.starts_with('-') && rest.ends_with(".so"))
}

/// The library a running process has mapped (what it really uses).
fn library_in_process(name: &str, pid: u32) -> std::io::Result<Option<PathBuf>> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().and_then(|f| f.to_str()).is_some_and(|f| library_matches(f, name)))
        .map(|p| in_root(Some(pid), Path::new(p))))
}

const ARCH_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// The loader's search order, simplified: LD_LIBRARY_PATH, /etc/ld.so.conf(.d), default dirs.
fn library_dirs(pid: Option<u32>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("LD_LIBRARY_PATH").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    let mut confs = vec![in_root(pid, Path::new("/etc/ld.so.conf"))];
    if let Ok(d) = fs::read_dir(in_root(pid, Path::new("/etc/ld.so.conf.d"))) {
        let mut more: Vec<PathBuf> =
            d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "conf")).collect();
        more.sort();
        confs.extend(more);
    }
    for conf in confs {
        for line in fs::read_to_string(conf).unwrap_or_default().lines() {
            let line = line.trim();
            if line.starts_with('/') {
                dirs.push(PathBuf::from(line));
            }
        }
    }
    dirs.extend(ARCH_LIB_DIRS.iter().map(PathBuf::from));
    dirs
}

fn library_on_disk(name: &str, pid: Option<u32>) -> Option<PathBuf> {
    for dir in library_dirs(pid) {
        let Ok(entries) = fs::read_dir(in_root(pid, &dir)) else { continue };
        let mut hits: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|f| library_matches(f, name)))
            .map(|e| e.path())
            .filter(|p| is_elf(p))
            .collect();
        // `libc.so.6` (the runtime soname) over the bare `libc.so` development link.
        hits.sort_by_key(|p| std::cmp::Reverse(p.to_string_lossy().len()));
        if let Some(p) = hits.into_iter().next() {
            return Some(p);
        }
    }
    None
}

fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    // Regular files only: a FIFO in a library directory must not block the search.
    fs::metadata(p).is_ok_and(|m| m.is_file())
        && fs::File::open(p).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && &magic == b"\x7fELF"
}

/// Where SYMBOL really is: in BINARY, or in the library BINARY imports it from.
pub fn find_definition(elf: &ElfInfo, symbol: &str, pid: Option<u32>) -> Option<(PathBuf, Function)> {
    if let Some(f) = elf.find(symbol) {
        return Some((elf.path.clone(), f.clone()));
    }
    if !elf.imports(symbol) {
        return None;
    }
    elf.needed.iter().find_map(|lib| {
        let path = pid.and_then(|p| library_in_process(lib, p).ok().flatten()).or_else(|| library_on_disk(lib, pid))?;
        let info = ElfInfo::load(&path).ok()?;
        info.find(symbol).cloned().map(|f| (path, f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_match_like_the_loader() {
        assert!(library_matches("libc.so.6", "libc"));
        assert!(library_matches("libc.so", "libc"));
        assert!(library_matches("libc-2.31.so", "libc"));
        assert!(library_matches("libssl.so.3", "libssl"));
        assert!(library_matches("libssl.so.3", "libssl.so.3"));
        assert!(!library_matches("libcrypt.so.1", "libc"));
        assert!(!library_matches("libcap.so.2", "libc"));
    }

    #[test]
    fn symbol_versions_are_stripped() {
        assert_eq!(strip_version("malloc@@GLIBC_2.2.5"), "malloc");
        assert_eq!(strip_version("readline"), "readline");
    }

    #[test]
    fn finds_bash_and_its_readline() {
        let bash = resolve_binary("bash", None).expect("bash on PATH");
        let elf = ElfInfo::load(&bash).expect("bash is ELF");
        let f = elf.find("readline").expect("bash defines or exports readline");
        assert!(f.file_offset > 0 && f.size > 0);
        assert!(elf.similar("readlin").contains(&"readline"));
    }

    #[test]
    fn finds_libc_malloc() {
        let libc = resolve_binary("libc", None).expect("libc");
        assert!(libc.to_string_lossy().contains("libc.so"), "{}", libc.display());
        let elf = ElfInfo::load(&libc).unwrap();
        assert!(elf.find("malloc").is_some());
        assert!(!elf.needed.is_empty() || elf.path.to_string_lossy().contains("libc"));
    }

    #[test]
    fn bad_targets_are_clear() {
        assert_eq!(resolve_binary("/no/such/file", None).unwrap_err().exit_code(), 2);
        assert_eq!(resolve_binary("no-such-program-or-lib", None).unwrap_err().exit_code(), 2);
        let e = ElfInfo::load(Path::new("/etc/passwd")).unwrap_err();
        assert!(e.to_string().contains("not an ELF"), "{e}");
    }
}
