//! profile end to end: a program spinning in a known function, a program living in syscalls.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{require_root, run, target_program};

/// A function the compiler must inline (`tk_inner`) into a caller it must not (`tk_outer`),
/// built with -O2 -g so that blazesym finds the inline chain in the DWARF. `spin SECS` burns
/// CPU in tk_inner; `syscall SECS` makes getppid() calls from it (about one per 10 ms).
const INLINE_PROG: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <time.h>
static volatile unsigned long sink;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static inline __attribute__((always_inline)) void tk_inner(int syscalls) {
    for (unsigned long i = 0; i < 10000000; i++) {
        if (syscalls && i == 12345) {
            /* getppid by a syscall instruction of tk_inner's own, so that the user IP of the
               syscall event is in the inlined code (libc's wrapper keeps no frame pointer) */
            long ret;
            __asm__ volatile("syscall" : "=a"(ret) : "a"(110L) : "rcx", "r11", "memory");
            sink += ret;
        }
        sink += i;
    }
}
__attribute__((noinline)) void tk_outer(int syscalls, double secs) {
    double end = now() + secs;
    while (now() < end)
        tk_inner(syscalls);
}
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    tk_outer(strcmp(argv[1], "syscall") == 0, atof(argv[2]));
    return 0;
}
"#;

/// The tests that count samples of a spinning program take turns: run side by side on a small
/// machine they would share the CPUs and each get too few samples.
fn cpu_turn() -> std::sync::MutexGuard<'static, ()> {
    static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn inline_program() -> PathBuf {
    static PROG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROG.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let src = dir.join(format!("tk_inline.{}.c", std::process::id()));
        std::fs::write(&src, INLINE_PROG).expect("write the test program");
        let out = dir.join(format!("tk_inline.{}", std::process::id()));
        let status = Command::new("cc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("cc runs (gcc is part of the build requirements)");
        assert!(status.success(), "compiling {}", src.display());
        out
    })
    .clone()
}

/// (leaf-first user frames, kernel frames, count) of each folded line of `comm`.
fn folded(lines: &[String], comm: &str) -> Vec<(Vec<String>, Vec<String>, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let (stack, count) = l.rsplit_once(' ')?;
            let mut frames = stack.split(';');
            (frames.next()? == comm).then_some(())?;
            let (k, u): (Vec<&str>, Vec<&str>) = frames.partition(|f| f.ends_with("_[k]"));
            Some((
                u.into_iter().rev().map(str::to_owned).collect(),
                k.into_iter().map(str::to_owned).collect(),
                count.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn spinning_function_is_on_top() {
    if !require_root("spinning_function_is_on_top") {
        return;
    }
    let _turn = cpu_turn();
    let prog = target_program();
    let out = run(&["profile", "-F", "199", "--folded", "--", prog.to_str().unwrap(), "spin", "2"]);
    assert!(out.status.success(), "{}", out.stderr);
    let stacks = folded(&out.stdout, "uprobe_target");
    let total: u64 = stacks.iter().map(|s| s.2).sum();
    let on_top: u64 = stacks.iter().filter(|s| s.0.first().map(String::as_str) == Some("tk_spin")).map(|s| s.2).sum();
    assert!(total >= 100, "about 2 s at 199 Hz: {total} samples\n{:#?}", out.stdout);
    assert!(on_top * 100 >= total * 80, "tk_spin on top of {on_top} of {total} samples:\n{:#?}", out.stdout);
    assert!(stacks.iter().any(|s| s.0.iter().any(|f| f == "main")), "the caller is in the stack too");
    assert!(out.stdout.iter().all(|l| l.starts_with("uprobe_target;")), "only -- CMD is profiled");
}

#[test]
fn kernel_frames_resolve_to_names() {
    if !require_root("kernel_frames_resolve_to_names") {
        return;
    }
    let _turn = cpu_turn();
    let out = run(&[
        "profile",
        "-F",
        "499",
        "--folded",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64k",
        "count=200000",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let stacks = folded(&out.stdout, "dd");
    let kernel: Vec<&String> = stacks.iter().flat_map(|s| s.1.iter()).collect();
    assert!(!kernel.is_empty(), "dd lives in read/write: {:#?}", out.stdout);
    assert!(kernel.iter().any(|f| f.contains("read") || f.contains("write")), "{kernel:?}");
    let named = kernel.iter().filter(|f| !f.starts_with("0x")).count();
    assert!(named * 10 >= kernel.len() * 9, "kernel frames have names: {kernel:?}");
}

#[test]
fn json_and_table() {
    if !require_root("profile json_and_table") {
        return;
    }
    let _turn = cpu_turn();
    let prog = target_program();
    let out = run(&["profile", "-F", "99", "--json", "--", prog.to_str().unwrap(), "spin", "1"]);
    assert!(out.status.success(), "{}", out.stderr);
    let objs = out.json();
    let top = objs.iter().find(|v| v["type"] == "stack").expect("a stack");
    assert_eq!(top["comm"], "uprobe_target");
    assert_eq!(top["user"][0], "tk_spin");
    let summary = objs.iter().find(|v| v["type"] == "summary").expect("summary");
    // 1 s at 99 Hz, sharing the CPUs with other tests (and emulated in the VM matrix)
    assert!(summary["samples"].as_u64().unwrap() >= 10, "{summary}");
    assert_eq!(summary["lost"], 0);
    let table = run(&["profile", "-F", "99", "--", prog.to_str().unwrap(), "spin", "1"]);
    assert_eq!(table.stdout.first().map(|l| l.trim()), Some("tk_spin"), "{:?}", table.stdout);
    assert!(table.stdout.iter().any(|l| l.contains("-                uprobe_target (")));
}

/// An inlined function is a frame of its own, after its caller in folded output (root first)
/// and before it in JSON arrays (leaf first): issue #12 item 3.
#[test]
fn inlined_frames_in_call_order() {
    if !require_root("inlined_frames_in_call_order") {
        return;
    }
    let _turn = cpu_turn();
    let prog = inline_program();
    let comm: String = prog.file_name().unwrap().to_str().unwrap().chars().take(15).collect();
    let out = run(&["profile", "-F", "199", "--folded", "--", prog.to_str().unwrap(), "spin", "1.5"]);
    assert!(out.status.success(), "{}", out.stderr);
    let stacks = folded(&out.stdout, &comm);
    let total: u64 = stacks.iter().map(|s| s.2).sum();
    let inner_under_outer: u64 = stacks
        .iter()
        .filter(|s| {
            s.0.first().map(String::as_str) == Some("tk_inner") && s.0.get(1).map(String::as_str) == Some("tk_outer")
        })
        .map(|s| s.2)
        .sum();
    assert!(total >= 20, "1.5 s at 199 Hz, sharing the CPUs with other tests: {total} samples\n{:#?}", out.stdout);
    assert!(
        inner_under_outer * 100 >= total * 60,
        "…;tk_outer;tk_inner in {inner_under_outer} of {total}:\n{:#?}",
        out.stdout
    );
    assert!(out.stdout.iter().all(|l| !l.contains("tk_inner;tk_outer")), "reversed chain:\n{:#?}", out.stdout);

    let out = run(&["profile", "-F", "199", "--json", "--", prog.to_str().unwrap(), "spin", "1"]);
    assert!(out.status.success(), "{}", out.stderr);
    let objs = out.json();
    let stacks: Vec<&serde_json::Value> = objs.iter().filter(|v| v["type"] == "stack").collect();
    let top = stacks.first().expect("a stack");
    assert_eq!(top["user"][0], "tk_inner", "{top}");
    assert_eq!(top["user"][1], "tk_outer", "{top}");
    for s in &stacks {
        for f in s["user"].as_array().unwrap().iter().chain(s["kernel"].as_array().unwrap()) {
            assert!(!f.as_str().unwrap().contains(';'), "one element per frame: {s}");
        }
    }
}

/// Per-event `--stack` shares the symbolizer: the inline chain is separate frames there too.
#[test]
fn inlined_frames_in_event_stacks() {
    if !require_root("inlined_frames_in_event_stacks") {
        return;
    }
    let prog = inline_program();
    // User frames are named through the running process: stop after a few events, long
    // before it ends.
    let out = run(&[
        "tracepoint",
        "syscalls:sys_enter_getppid",
        "--stack",
        "--json",
        "-n",
        "5",
        "--",
        prog.to_str().unwrap(),
        "syscall",
        "30",
    ]);
    let events = out.events();
    assert!(!events.is_empty(), "{}", out.stderr);
    let chained = events.iter().filter(|e| {
        let u: Vec<&str> = e["ustack"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        u.starts_with(&["tk_inner", "tk_outer"])
    });
    assert!(chained.count() * 2 >= events.len(), "ustack tk_inner, tk_outer, …: {events:#?}");
    for e in &events {
        for f in e["ustack"].as_array().unwrap().iter().chain(e["kstack"].as_array().unwrap()) {
            assert!(!f.as_str().unwrap().contains(';'), "one element per frame: {e}");
        }
    }
}

#[test]
fn bad_frequencies() {
    for f in ["0", "100000", "fast"] {
        let out = run(&["profile", "-F", f]);
        assert_eq!(out.status.code(), Some(2), "-F {f}: {}", out.stderr);
        assert!(out.stderr.contains("error:"), "{}", out.stderr);
    }
}
