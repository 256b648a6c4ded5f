//! Compiles every `src/bpf/{trace,net}/*.bpf.c` into a libbpf skeleton in `OUT_DIR`
//! (`<tool>.skel.rs`); shared headers live in `src/bpf/include`.
//! Clang warnings surface as cargo warnings; a missing clang is one clear line.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;
use libbpf_cargo::util::CargoWarningFormatter;
use tracing_subscriber::filter::{LevelFilter as Level, Targets};
use tracing_subscriber::prelude::*;

const BPF_DIR: &str = "src/bpf";
/// One folder per family of programs; tool names are unique across them.
const PROGRAM_DIRS: &[&str] = &["trace", "net"];

/// Kernel architecture names as used by `vmlinux/<arch>` (the libbpf-bootstrap table).
fn kernel_arch(target_arch: &str) -> &str {
    match target_arch {
        "x86_64" | "x86" => "x86",
        "aarch64" => "arm64",
        "powerpc64" => "powerpc",
        "mips64" => "mips",
        "riscv64" => "riscv",
        "loongarch64" => "loongarch",
        other => other,
    }
}

fn clang_path() -> PathBuf {
    env::var_os("CLANG").map_or_else(|| PathBuf::from("clang"), PathBuf::from)
}

fn require_clang(clang: &Path) {
    if Command::new(clang).arg("--version").output().is_err() {
        eprintln!(
            "error: `{}` not found; tracekit compiles its BPF programs with clang.\n\
             hint: apt-get install clang libelf-dev zlib1g-dev pkg-config (or set CLANG=/path/to/clang)",
            clang.display()
        );
        std::process::exit(1);
    }
}

fn main() {
    // Only the compiler's own output becomes cargo warnings, not the generator's chatter.
    let compiler_only = Targets::new()
        .with_target("compiler-stderr", Level::INFO)
        .with_target("compiler-stdout", Level::INFO)
        .with_default(Level::WARN);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().event_format(CargoWarningFormatter))
        .with(compiler_only)
        .init();

    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let arch = kernel_arch(&target_arch);
    let vmlinux = manifest.join("vmlinux").join(arch);
    // bpf_tracing.h picks the pt_regs layout (PT_REGS_PARM1, ...) from this.
    let arch_define = format!("-D__TARGET_ARCH_{arch}");
    let bpf_dir = manifest.join(BPF_DIR);
    let include_dir = bpf_dir.join("include");

    println!("cargo:rerun-if-changed={BPF_DIR}");
    println!("cargo:rerun-if-changed=vmlinux");
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = clang_path();
    require_clang(&clang);

    let mut sources: Vec<PathBuf> = PROGRAM_DIRS
        .iter()
        .flat_map(|d| std::fs::read_dir(bpf_dir.join(d)).into_iter().flatten())
        .map(|e| e.expect("readable src/bpf entry").path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".bpf.c")))
        .collect();
    sources.sort();

    for src in sources {
        // Every file of src/bpf is a dependency (headers included), watched through the dir above
        // plus each file so edits inside it are noticed too.
        println!("cargo:rerun-if-changed={}", src.display());
        let tool = src
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .expect("a .bpf.c file name");
        let skel = out.join(format!("{tool}.skel.rs"));
        SkeletonBuilder::new()
            .source(&src)
            .clang(&clang)
            .clang_args([
                "-I".as_ref(),
                vmlinux.as_os_str(),
                "-I".as_ref(),
                include_dir.as_os_str(),
                arch_define.as_ref(),
                "-Wall".as_ref(),
                "-Wno-unused-function".as_ref(),
            ])
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building BPF program `{}`: {e:#}", src.display()));
    }
    for entry in std::fs::read_dir(&include_dir).expect("src/bpf/include exists") {
        let path = entry.expect("readable src/bpf entry").path();
        if path.extension().is_some_and(|e| e == "h") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
