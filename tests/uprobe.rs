//! uprobe end to end: an interactive bash on a pseudo-terminal, a test program with functions
//! of known arguments (built here), libc's malloc under `-- CMD`, and every bad input.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use common::{Tracer, assert_released, require_root, run, target_program};
use serde_json::Value;

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// A private copy of bash: uprobes are keyed by inode, so other tracers of /bin/bash on the
/// machine cannot interfere with the test's probes.
fn private_bash() -> PathBuf {
    static BASH: OnceLock<PathBuf> = OnceLock::new();
    BASH.get_or_init(|| {
        let dst = tmp().join("tk-bash");
        let staging = tmp().join(format!("tk-bash.{}", std::process::id()));
        std::fs::copy("/bin/bash", &staging).expect("copy bash");
        std::fs::rename(&staging, &dst).expect("install bash copy");
        dst
    })
    .clone()
}

/// `bash --norc -i` on a pseudo-terminal, fed `lines`, then `exit`. Returns bash's pid.
fn interactive_bash(lines: &[&str]) -> u32 {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds; the optional name/termios/winsize pointers are NULL.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both fds were just created by openpty and are owned here.
    let (mut master, slave) = unsafe { (File::from_raw_fd(master), File::from_raw_fd(slave)) };
    let mut child: Child = Command::new(private_bash())
        .args(["--norc", "--noprofile", "-i"])
        .env_clear()
        .env("PS1", "tk$ ")
        .env("TERM", "dumb")
        .env("LANG", "C.UTF-8")
        .env("INPUTRC", "/dev/null")
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("bash starts");
    let mut reader = master.try_clone().unwrap();
    let drain = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    for line in lines {
        master.write_all(line.as_bytes()).unwrap();
        master.write_all(b"\n").unwrap();
        thread::sleep(Duration::from_millis(50));
    }
    master.write_all(b"exit\n").unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(status.success(), "bash: {status:?}");
    drop(master);
    let _ = drain.join();
    pid
}

/// The running kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = rel.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok());
    (it.next().unwrap(), it.next().unwrap())
}

fn readline_lines(events: &[Value], pid: u32) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["pid"] == pid && e["func"] == "readline")
        .filter_map(|e| e["ret"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn readline_lines_of_an_interactive_bash() {
    if !require_root("readline_lines_of_an_interactive_bash") {
        return;
    }
    let bash = private_bash();
    let spec = format!("{}:readline", bash.display());
    let long = format!("echo {}", "x".repeat(300));
    let lines = ["echo one", "echo 'héllo wörld ✓ 日本'", long.as_str(), "true"];
    let json = Tracer::start(&["uprobe", &spec, "--json"]);
    let table = Tracer::start(&["uprobe", &spec]);
    let pid = interactive_bash(&lines);
    thread::sleep(Duration::from_millis(300));
    let (json, table) = (json.stop(), table.stop());
    assert!(json.status.success(), "{}", json.stderr);

    let events = json.events();
    let got = readline_lines(&events, pid);
    assert_eq!(got[0], "echo one");
    assert_eq!(got[1], "echo 'héllo wörld ✓ 日本'");
    assert_eq!(got[2].len(), 255, "long line cut at the 256-byte buffer");
    assert!(long.starts_with(&got[2]));
    assert_eq!(got[3], "true");
    assert_eq!(got[4], "exit");
    let long_ev = events.iter().find(|e| e["ret"].as_str() == Some(got[2].as_str())).unwrap();
    assert_eq!(long_ev["truncated"], true);
    let first = events.iter().find(|e| e["pid"] == pid).unwrap();
    assert_eq!(first["args"]["prompt"], "tk$ ");
    assert_eq!(first["comm"], "tk-bash");
    assert!(first["latency_ns"].as_u64().unwrap() > 0);

    let rows: Vec<&String> = table.stdout.iter().filter(|l| l.starts_with(&pid.to_string())).collect();
    assert!(rows.iter().any(|r| r.ends_with("readline(prompt=\"tk$ \") = \"echo one\"")), "{rows:#?}");
    assert!(rows.iter().any(|r| r.contains("= \"echo 'héllo wörld ✓ 日本'\"")), "{rows:#?}");
    assert!(rows.iter().any(|r| r.ends_with("xxx\"...")), "truncation marked: {rows:#?}");
}

#[test]
fn pid_filter_on_another_process_sees_nothing() {
    if !require_root("pid_filter_on_another_process_sees_nothing") {
        return;
    }
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let spec = format!("{}:readline", private_bash().display());
    let t = Tracer::start(&["uprobe", &spec, "--json", "--pid", &sleeper.id().to_string()]);
    let pid = interactive_bash(&["echo invisible"]);
    thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(readline_lines(&out.events(), pid).is_empty(), "{:?}", out.stdout);
}

#[test]
fn signatures_and_two_threads_pair_entry_with_return() {
    if !require_root("signatures_and_two_threads_pair_entry_with_return") {
        return;
    }
    let prog = target_program();
    let p = prog.display().to_string();
    let out = run(&[
        "uprobe",
        &format!("{p}:tk_add"),
        &format!("{p}:tk_greet"),
        &format!("{p}:tk_slow"),
        "--sig",
        "int tk_add(int a, int b)",
        "--sig",
        "long tk_greet(const char *name, int times)",
        "--sig",
        "int tk_slow(int thread, int round, int ms)",
        "--json",
        "--",
        &p,
        "calls",
        "5",
    ]);
    // Several probes at once need bpf_get_attach_cookie: present exactly from 5.15 on.
    if kernel_version() < (5, 15) {
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert!(out.stderr.contains("bpf_get_attach_cookie (Linux 5.15+)"), "{}", out.stderr);
        assert!(out.stderr.contains("hint: trace one function per tracekit process"), "{}", out.stderr);
        return;
    }
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();
    let of = |f: &str| events.iter().filter(|e| e["func"] == f).collect::<Vec<_>>();
    let (adds, greets, slows) = (of("tk_add"), of("tk_greet"), of("tk_slow"));
    assert_eq!((adds.len(), greets.len(), slows.len()), (10, 10, 10), "{:#?}", out.stdout);
    for e in &adds {
        let (a, b) = (e["args"]["a"].as_i64().unwrap(), e["args"]["b"].as_i64().unwrap());
        assert!(b < 0, "negative ints decode as negative: {e}");
        assert_eq!(e["ret"].as_i64().unwrap(), a + b, "{e}");
    }
    for e in &greets {
        let name = e["args"]["name"].as_str().unwrap();
        assert!(name == "zero" || name == "threadone", "{e}");
        let times = e["args"]["times"].as_i64().unwrap();
        assert_eq!(e["ret"].as_i64().unwrap(), name.len() as i64 * times);
    }
    let tids: std::collections::BTreeSet<_> = slows.iter().map(|e| e["tid"].as_u64().unwrap()).collect();
    assert_eq!(tids.len(), 2, "two threads");
    for e in &slows {
        let (t, r, ms) = (
            e["args"]["thread"].as_i64().unwrap(),
            e["args"]["round"].as_i64().unwrap(),
            e["args"]["ms"].as_i64().unwrap(),
        );
        assert_eq!(e["ret"].as_i64().unwrap(), t * 1000 + r, "entry paired with its own return: {e}");
        assert!(e["latency_ns"].as_u64().unwrap() >= ms as u64 * 1_000_000, "latency >= sleep: {e}");
    }
}

#[test]
fn raw_arguments_without_a_signature() {
    if !require_root("raw_arguments_without_a_signature") {
        return;
    }
    let p = target_program().display().to_string();
    let out = run(&["uprobe", &format!("{p}:tk_add"), "--json", "--entry-only", "--", &p, "calls", "1"]);
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();
    assert_eq!(events.len(), 2, "{:#?}", out.stdout);
    let e = events.iter().find(|e| e["args"]["arg0"] == "0x1").expect("thread 1's call");
    assert_eq!(e["args"]["arg1"], "0xfffffff9", "-7 (round 0) as a raw 32-bit register value");
    assert!(e.get("ret").is_none() && e.get("latency_ns").is_none());
}

#[test]
fn libc_malloc_of_the_child_only() {
    if !require_root("libc_malloc_of_the_child_only") {
        return;
    }
    let p = target_program().display().to_string();
    let out = run(&["uprobe", "libc:malloc", "--json", "--", &p, "malloc"]);
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();
    let sizes: Vec<i64> = events.iter().filter_map(|e| e["args"]["size"].as_i64()).collect();
    assert!(sizes.contains(&12345) && sizes.contains(&54321), "{sizes:?}");
    let pids: std::collections::BTreeSet<_> = events.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 1, "only the child: {pids:?}");
    let big = events.iter().find(|e| e["args"]["size"] == 12345).unwrap();
    assert_eq!(big["comm"], "uprobe_target");
    assert!(big["ret"].as_str().unwrap().starts_with("0x"), "a pointer prints as hex: {big}");
}

#[test]
fn uretprobe_alias_returns_only() {
    if !require_root("uretprobe_alias_returns_only") {
        return;
    }
    let p = target_program().display().to_string();
    let out = run(&[
        "uretprobe",
        &format!("{p}:tk_add"),
        "--sig",
        "int tk_add(int a, int b)",
        "--json",
        "--",
        &p,
        "calls",
        "1",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let events = out.events();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.get("args").is_none() && e["ret"].is_i64()));
}

#[test]
fn uretprobe_reads_the_returned_string() {
    if !require_root("uretprobe_reads_the_returned_string") {
        return;
    }
    let t = Tracer::start(&["uretprobe", &format!("{}:readline", private_bash().display()), "--json"]);
    let pid = interactive_bash(&["echo returned"]);
    thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    let lines = readline_lines(&out.events(), pid);
    assert_eq!(lines.first().map(String::as_str), Some("echo returned"), "{:?}", out.stdout);
}

#[test]
fn stack_of_each_call() {
    if !require_root("uprobe stack_of_each_call") {
        return;
    }
    let t = Tracer::start(&[
        "uprobe",
        &format!("{}:readline", private_bash().display()),
        "--stack",
        "--json",
        "--entry-only",
    ]);
    // bash sleeps before its last prompt: user frames are symbolized while the process lives.
    let pid = interactive_bash(&["echo stacked", "sleep 2"]);
    thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    let events = out.events();
    let e = events.iter().find(|e| e["pid"] == pid).unwrap_or_else(|| panic!("{:#?}", out.stdout));
    assert_eq!(e["ustack"][0], "readline", "the probed function is the first user frame: {e}");
}

#[test]
fn cleanup_after_sigint() {
    if !require_root("uprobe cleanup_after_sigint") {
        return;
    }
    let t = Tracer::start(&["uprobe", &format!("{}:readline", private_bash().display())]);
    let ids = t.ids.clone();
    let out = t.stop();
    assert!(out.status.success());
    assert_released(&ids, "uprobe SIGINT");
}

#[test]
fn bad_input_is_explained() {
    if !require_root("uprobe bad_input_is_explained") {
        return;
    }
    let cases: &[(&[&str], i32, &str, &str)] = &[
        (&["uprobe", "/no/such/bin:main"], 2, "binary `/no/such/bin` not found", "hint:"),
        (&["uprobe", "/etc/passwd:main"], 1, "is not an ELF file", "hint:"),
        (&["uprobe", "/bin/bash:readlin"], 2, "symbol `readlin` not found", "did you mean `readline`"),
        (&["uprobe", "bash:zz_no_such_*"], 2, "no function in", "tracekit list"),
        (&["uprobe", "libc:*"], 2, "at most 64", "narrow the glob"),
        (&["uprobe", "readline"], 2, "bad probe `readline`", "BINARY:SYMBOL"),
        (&["uprobe", "bash:readline", "--sig", "frob readline(int)"], 2, "bad --sig", "unknown type"),
        (&["uprobe", "no-such-lib-xyz:f"], 2, "not found", "library name"),
    ];
    for (args, code, msg, hint) in cases {
        let out = run(args);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(msg), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(hint), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"));
    }
}

#[test]
fn list_shows_functions() {
    let out = run(&["list", "/bin/bash", "readline*"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.iter().any(|l| l.ends_with(" readline")), "{:?}", out.stdout);
    let out = run(&["list", "libc", "malloc", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout[0]).unwrap();
    assert_eq!(v["name"], "malloc");
    assert!(v["size"].as_u64().unwrap() > 0);
}

/// The lengths of tk_add's first two instructions, from the test program's ELF.
fn first_instructions_of_tk_add() -> (u64, u64) {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let data = std::fs::read(target_program()).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok("tk_add")).expect("tk_add in .symtab");
    let seg = file
        .segments()
        .find(|s| (s.address()..s.address() + s.size()).contains(&sym.address()))
        .expect("tk_add in a segment");
    let offset = sym.address() - seg.address() + seg.file_range().0;
    let code = &data[offset as usize..(offset + sym.size()) as usize];
    let mut decoder = iced_x86::Decoder::new(64, code, iced_x86::DecoderOptions::NONE);
    let first = decoder.decode().len() as u64;
    (first, decoder.decode().len() as u64)
}

/// Issue #12 item 1: an offset on an instruction boundary still attaches and fires (with the
/// arguments still in their registers); one inside an instruction is refused.
#[test]
fn offset_on_an_instruction_boundary_attaches() {
    if !require_root("offset_on_an_instruction_boundary_attaches") {
        return;
    }
    let p = target_program().display().to_string();
    let (first, second) = first_instructions_of_tk_add();
    let spec = format!("{p}:tk_add+{first:#x}");
    let out = run(&["uprobe", &spec, "--json", "--entry-only", "--", &p, "calls", "2"]);
    assert!(out.status.success(), "{spec}: {}", out.stderr);
    let events = out.events();
    assert_eq!(events.len(), 4, "two threads, two rounds: {:#?}", out.stdout);
    assert!(events.iter().all(|e| e["func"] == "tk_add"));
    assert!(events.iter().any(|e| e["args"]["arg0"] == "0x1" && e["args"]["arg1"] == "0xfffffff9"), "{events:#?}");

    // Inside the first instruction longer than a byte (`lea` here, at -O1).
    let (start, len) = if first > 1 { (0, first) } else { (first, second) };
    assert!(len > 1, "tk_add starts with two one-byte instructions");
    let out = run(&["uprobe", &format!("{p}:tk_add+{:#x}", start + 1), "-d", "0.3"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("is inside an instruction of `tk_add`"), "{}", out.stderr);
    let boundaries = format!("tk_add+{start:#x} and tk_add+{:#x}", start + len);
    assert!(out.stderr.contains(&boundaries), "{boundaries}: {}", out.stderr);
}

/// Issue #12 item 2: glibc's strlen is an IFUNC; the probe goes to the implementation this CPU
/// uses, so it sees tk_greet's real calls with their real argument (the resolver would see
/// none of them).
#[test]
fn ifunc_strlen_traces_the_implementation() {
    if !require_root("ifunc_strlen_traces_the_implementation") {
        return;
    }
    let p = target_program().display().to_string();
    let out = run(&["uprobe", "libc:strlen", "--entry-only", "--json", "--", &p, "calls", "3"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("strlen is an IFUNC: traced at the implementation this CPU uses"), "{}", out.stderr);
    let events = out.events();
    let calls_with = |s: &str| events.iter().filter(|e| e["func"] == "strlen" && e["args"]["s"] == s).count();
    assert_eq!((calls_with("zero"), calls_with("threadone")), (3, 3), "{:#?}", out.stdout);
}
