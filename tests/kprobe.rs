//! kprobe end to end. On a kernel without kprobes and fentry (these machines) the command must
//! fail with the reason and a hint and leave nothing loaded; the success paths need a kernel
//! that has them, which the VM matrix (tests/vm_matrix.rs) provides, running this file there.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use common::{Tracer, assert_released, require_root, run};
use serde_json::Value;

fn feature(name: &str) -> String {
    let out = run(&["probe", "--json"]);
    out.json()
        .into_iter()
        .find(|v| v["name"] == name)
        .map(|v| v["status"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("`tracekit probe` lists {name}"))
}

fn in_vm() -> bool {
    std::env::var_os("TRACEKIT_IN_VM").is_some()
}

/// Names of every BPF program loaded in the kernel now.
fn loaded_programs() -> Vec<String> {
    libbpf_rs::query::ProgInfoIter::default().map(|p| p.name.to_string_lossy().into_owned()).collect()
}

/// Whether `backend` works here; when it does not, it checks the error path instead and
/// says so. Inside the VM the stock kernels must have kprobes.
fn backend_available(backend: &str) -> bool {
    let status = feature(backend);
    if status == "supported" {
        return true;
    }
    assert!(!(in_vm() && backend == "kprobe"), "stock kernels have kprobes, but `tracekit probe` says {status}");
    let out = run(&["kprobe", "do_sys_openat2", "--backend", backend]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("kernel feature `{backend}` is unavailable")), "{}", out.stderr);
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "NOTE {backend} unsupported on this kernel: checked its error instead");
    false
}

#[test]
fn without_kprobes_and_fentry_the_error_names_the_reason() {
    if !require_root("without_kprobes_and_fentry_the_error_names_the_reason") {
        return;
    }
    if feature("kprobe") == "supported" || feature("fentry") == "supported" {
        return; // the success tests below cover this kernel
    }
    let before = loaded_programs().iter().filter(|n| n.starts_with("tk_")).count();
    let out = run(&["kprobe", "do_sys_openat2"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("error: kernel feature `kprobe` is unavailable: kprobes: "), "{}", out.stderr);
    assert!(out.stderr.contains("CONFIG_KPROBES"), "{}", out.stderr);
    assert!(out.stderr.contains("fentry: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("hint: trace the syscall tracepoints instead (syscalls:sys_enter_openat2"),
        "{}",
        out.stderr
    );
    let after = loaded_programs().iter().filter(|n| n.starts_with("tk_")).count();
    assert!(after <= before, "nothing of tracekit's left loaded");
}

#[test]
fn unknown_functions_and_bad_fields() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["kprobe", "do_sys_opnat2"], "kernel function `do_sys_opnat2` not found", "did you mean `do_sys_openat2`"),
        (&["kprobe", "zz_no_such_*"], "no kernel function matches", "tracekit list kernel"),
        (&["kprobe", "*"], "at most 16", "narrow the glob"),
        (&["kprobe", "do_sys_openat2", "-a", "how->flagz"], "has no field `flagz`", "did you mean `flags`"),
        (&["kprobe", "do_sys_openat2", "-a", "nope->x"], "names no parameter", "hint:"),
        (&["kprobe", "do_sys_openat2", "-a", "dfd->x"], "is not a pointer", ""),
    ];
    if !require_root("unknown_functions_and_bad_fields") {
        return;
    }
    for (args, msg, hint) in cases {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(msg), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(hint), "{args:?}: {}", out.stderr);
    }
}

fn marker() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tk-kprobe-marker-{}", std::process::id()));
    std::fs::write(&p, b"x").unwrap();
    p
}

fn opens_of<'a>(events: &'a [Value], path: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["args"]["filename"] == path).collect()
}

fn open_and_fail(backend: &str) {
    let me = std::process::id().to_string();
    let path = marker(); // written before tracing: only the read-only open below is seen
    let t = Tracer::start(&[
        "kprobe",
        "do_sys_openat2",
        "--backend",
        backend,
        "--json",
        "-p",
        &me,
        "-a",
        "how->flags",
        "-a",
        "how->mode",
    ]);
    let ids = t.ids.clone();
    let file = File::open(&path).unwrap();
    let fd = file.as_raw_fd();
    let missing = path.with_extension("missing");
    assert!(File::open(&missing).is_err());
    thread::sleep(Duration::from_millis(500));
    let out = t.stop();
    drop(file);
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();
    let ok = opens_of(&events, path.to_str().unwrap());
    assert_eq!(ok.len(), 1, "{backend}: {:#?}", out.stdout);
    let e = ok[0];
    assert_eq!(e["pid"].to_string(), me);
    assert_eq!(e["args"]["dfd"], -100, "AT_FDCWD");
    assert_eq!(e["ret"], fd, "the returned fd is the one the test got");
    let flags = u64::from_str_radix(e["args"]["how->flags"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0o3, 0, "O_RDONLY");
    assert_ne!(flags & 0o2000000, 0, "O_CLOEXEC, as Rust opens files");
    assert_eq!(e["args"]["how->mode"], 0);
    assert!(e["latency_ns"].as_u64().unwrap() > 0);
    let bad = opens_of(&events, missing.to_str().unwrap());
    assert_eq!(bad.len(), 1, "{:#?}", out.stdout);
    assert_eq!(bad[0]["ret"], -2);
    assert_eq!(bad[0]["errno"], "ENOENT");
    assert_released(&ids, &format!("kprobe --backend {backend}"));
}

#[test]
fn fentry_backend_decodes_open() {
    if require_root("fentry_backend_decodes_open") && backend_available("fentry") {
        open_and_fail("fentry");
    }
}

#[test]
fn kprobe_backend_decodes_open() {
    if require_root("kprobe_backend_decodes_open") && backend_available("kprobe") {
        open_and_fail("kprobe");
    }
}

#[test]
fn stack_of_each_call() {
    if !require_root("kprobe stack_of_each_call") || !backend_available("kprobe") {
        return;
    }
    let out = run(&[
        "kprobe",
        "do_sys_openat2",
        "--stack",
        "--json",
        "--entry-only",
        "-c",
        "cat",
        "--",
        "sh",
        "-c",
        "cat /etc/hostname >/dev/null",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let e =
        out.events().into_iter().find(|e| e["args"]["filename"] == "/etc/hostname").expect("the open of /etc/hostname");
    let kstack: Vec<String> = e["kstack"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect();
    assert!(kstack.iter().any(|f| f == "do_syscall_64"), "{kstack:?}");
}

#[test]
fn table_and_comm_filter() {
    if !require_root("table_and_comm_filter") || !backend_available("kprobe") {
        return;
    }
    let path = marker();
    let p = path.to_str().unwrap();
    let out = run(&[
        "kprobe",
        "do_sys_openat2",
        "-c",
        "cat",
        "--",
        "sh",
        "-c",
        &format!("cat {p} >/dev/null; cat {p}.nope 2>/dev/null; true"),
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout[0].starts_with("PID     COMM"), "{:?}", out.stdout);
    let rows: Vec<&String> = out.stdout.iter().filter(|l| l.contains(p)).collect();
    assert_eq!(rows.len(), 2, "{:#?}", out.stdout);
    assert!(rows.iter().all(|r| r.split_whitespace().nth(1) == Some("cat")), "only cat: {rows:#?}");
    assert!(
        rows[0].contains(&format!("do_sys_openat2(dfd=-100, filename=\"{p}\", how=0x")) && rows[0].ends_with(" = 3"),
        "{rows:#?}"
    );
    assert!(rows[1].ends_with(" = -ENOENT"), "{rows:#?}");
    assert!(out.stdout.iter().all(|l| !l.contains(" sh ")), "sh's own opens are filtered out by comm");
}

#[test]
fn list_kernel_functions() {
    let out = run(&["list", "kernel", "do_sys_open*"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.iter().any(|l| l.contains("do_sys_openat2(int dfd, const char *filename, struct open_how *how)")),
        "{:?}",
        out.stdout
    );
}
