//! tracepoint end to end: events the test triggers itself, fields decoded from format files.

mod common;

use std::fs::File;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{Tracer, assert_released, require_root, run};

fn kernel_version() -> (u32, u32) {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = rel.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok());
    (it.next().unwrap(), it.next().unwrap())
}

#[test]
fn sys_enter_openat_shows_the_path() {
    if !require_root("sys_enter_openat_shows_the_path") {
        return;
    }
    let me = std::process::id().to_string();
    let t = Tracer::start(&["tracepoint", "syscalls:sys_enter_openat", "--json", "-p", &me]);
    let ids = t.ids.clone();
    let marker = format!("{}/tk-tp-marker-{me}", env!("CARGO_TARGET_TMPDIR"));
    assert!(File::open(&marker).is_err(), "the marker does not exist: the open fails, the event stays");
    thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();
    let e = events
        .iter()
        .find(|e| e["fields"]["filename"] == marker.as_str())
        .unwrap_or_else(|| panic!("no openat of {marker}: {:#?}", out.stdout));
    assert_eq!(e["tracepoint"], "syscalls:sys_enter_openat");
    assert_eq!(e["fields"]["dfd"], -100, "AT_FDCWD, an int in an 8-byte slot");
    assert_eq!(e["pid"].to_string(), me);
    let flags = e["fields"]["flags"].as_str().unwrap();
    assert!(flags.starts_with("0x"), "flags in hex: {flags}");
    assert_released(&ids, "tracepoint");
}

#[test]
fn signal_generate_integer_fields() {
    if !require_root("signal_generate_integer_fields") {
        return;
    }
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    let t = Tracer::start(&["tracepoint", "signal:signal_generate", "--json", "-f", "sig,pid,comm"]);
    // SAFETY: kill() on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
    let _ = child.wait();
    thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    let events = out.events();
    let e = events
        .iter()
        .find(|e| e["fields"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no signal to {pid}: {:#?}", out.stdout));
    assert_eq!(e["fields"]["sig"], 10, "SIGUSR1");
    assert_eq!(e["fields"]["comm"], "sleep");
    assert_eq!(e["fields"].as_object().unwrap().len(), 3, "-f keeps only the fields asked for");
    assert_eq!(e["pid"].to_string(), std::process::id().to_string(), "sent by the test");
}

#[test]
fn a_glob_traces_several_events() {
    if !require_root("a_glob_traces_several_events") {
        return;
    }
    let out = run(&[
        "tracepoint",
        "syscalls:sys_enter_openat",
        "syscalls:sys_exit_openat",
        "--json",
        "--",
        "sh",
        "-c",
        "cat /etc/hostname >/dev/null",
    ]);
    if kernel_version() < (5, 15) {
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert!(out.stderr.contains("bpf_get_attach_cookie (Linux 5.15+)"), "{}", out.stderr);
        return;
    }
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();
    let enter = events.iter().find(|e| e["fields"]["filename"] == "/etc/hostname").expect("enter");
    assert_eq!(enter["comm"], "cat");
    let exits: Vec<_> = events.iter().filter(|e| e["tracepoint"] == "syscalls:sys_exit_openat").collect();
    assert!(exits.iter().any(|e| e["fields"]["ret"] == 3), "{:#?}", out.stdout);
}

#[test]
fn table_output() {
    if !require_root("tracepoint table_output") {
        return;
    }
    // A child of sh execs /bin/true (CMD's own exec is the boundary where following starts).
    let out = run(&["tracepoint", "sched:sched_process_exec", "--", "sh", "-c", "/bin/true; true"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout[0].starts_with("PID     COMM"), "{:?}", out.stdout);
    assert!(
        out.stdout.iter().any(|l| l.contains("sched:sched_process_exec filename=\"/bin/true\"")),
        "__data_loc string: {:?}",
        out.stdout
    );
}

#[test]
fn bad_input() {
    if !require_root("tracepoint bad_input") {
        return;
    }
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["tracepoint", "syscalls:sys_enter_opnat"],
            "tracepoint `syscalls:sys_enter_opnat` not found",
            "did you mean `syscalls:sys_enter_openat`",
        ),
        (&["tracepoint", "sys_enter_openat"], "write CATEGORY:NAME", "tracekit list tracepoint"),
        (&["tracepoint", "zz:*"], "no tracepoint matches", "hint:"),
        (&["tracepoint", "syscalls:sys_enter_openat", "-f", "nope"], "no traced event has a field `nope`", "filename"),
        (&["tracepoint", "syscalls:*"], "at most 16", "narrow"),
    ];
    for (args, msg, hint) in cases {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(msg), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(hint), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn list_tracepoints() {
    if !require_root("list_tracepoints") {
        return;
    }
    let out = run(&["list", "tracepoint", "syscalls:sys_enter_open*"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.iter().any(|l| l == "syscalls:sys_enter_openat"), "{:?}", out.stdout);
}

#[test]
fn stack_of_each_event() {
    if !require_root("tracepoint stack_of_each_event") {
        return;
    }
    let me = std::process::id().to_string();
    let t = Tracer::start(&["tracepoint", "syscalls:sys_enter_openat", "--stack", "--json", "-p", &me]);
    let marker = format!("{}/tk-tp-stack-{me}", env!("CARGO_TARGET_TMPDIR"));
    assert!(File::open(&marker).is_err());
    thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    let events = out.events();
    let e = events
        .iter()
        .find(|e| e["fields"]["filename"] == marker.as_str())
        .unwrap_or_else(|| panic!("{:#?}", out.stdout));
    let kstack: Vec<&str> = e["kstack"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    // Syscall tracepoints run BPF with the user registers before Linux 6.x (6.12 here): no
    // kernel stack then; where there is one, its frames have names.
    assert!(kstack.is_empty() || kstack.contains(&"do_syscall_64"), "kernel frames by name: {kstack:?}");
    assert!(!e["ustack"].as_array().unwrap().is_empty(), "user frames too: {e}");
}

#[test]
fn two_string_fields_of_one_event() {
    if !require_root("two_string_fields_of_one_event") {
        return;
    }
    let me = std::process::id().to_string();
    let t = Tracer::start(&["tracepoint", "syscalls:sys_enter_renameat2", "--json", "-p", &me]);
    // The first name fills its 256-byte buffer (cut at 255 characters): the second must still
    // come out whole, right behind it.
    let dir = env!("CARGO_TARGET_TMPDIR");
    let old = format!("{dir}/tk-old-{me}-{}", "o".repeat(300));
    let new = format!("{dir}/tk-new-{me}");
    let (c_old, c_new) = (std::ffi::CString::new(old.clone()).unwrap(), std::ffi::CString::new(new.clone()).unwrap());
    // SAFETY: two NUL-terminated paths; the rename fails (no such file), the event stays.
    let rc = unsafe {
        libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, c_old.as_ptr(), libc::AT_FDCWD, c_new.as_ptr(), 0)
    };
    assert_eq!(rc, -1);
    thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();
    let e = events
        .iter()
        .find(|e| e["fields"]["newname"] == new.as_str())
        .unwrap_or_else(|| panic!("no renameat2 to {new}: {:#?}", out.stdout));
    let oldname = e["fields"]["oldname"].as_str().unwrap();
    assert!(oldname.starts_with(&old[..255]) && oldname.len() < old.len(), "cut at its buffer: {oldname}");
    assert_eq!(e["truncated"], true, "{e}");
    assert_eq!(e["fields"]["olddfd"], -100);
}
