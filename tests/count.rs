//! count: in-kernel counts per comm of events the test triggers a known number of times.

mod common;

use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{Tracer, require_root, run};

/// Runs tracekit with `args` while a thread named `thread_name` sends `n` signals, and stops it.
/// SIGCONT to a running process is generated (and traced) without side effects.
fn traced_signals(args: &[&str], thread_name: &str, n: usize) -> common::Finished {
    let t = Tracer::start(args);
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            for _ in 0..n {
                // SAFETY: kill() on our own child.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        })
        .unwrap()
        .join()
        .unwrap();
    thread::sleep(Duration::from_millis(200));
    let out = t.stop();
    let _ = child.kill();
    let _ = child.wait();
    out
}

#[test]
fn counts_per_comm_are_exact() {
    if !require_root("counts_per_comm_are_exact") {
        return;
    }
    let out = traced_signals(&["count", "signal:signal_generate", "--json"], "tk-count-sig", 37);
    assert!(out.status.success(), "{}", out.stderr);
    let counts = out.json();
    let ours = counts.iter().find(|v| v["comm"] == "tk-count-sig").unwrap_or_else(|| panic!("{:#?}", out.stdout));
    assert_eq!(ours["count"], 37);
    assert_eq!(ours["type"], "count");
}

#[test]
fn table_by_pid_of_a_command() {
    if !require_root("table_by_pid_of_a_command") {
        return;
    }
    let out = run(&[
        "count",
        "syscalls:sys_enter_kill",
        "--by",
        "pid",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do kill -0 $$; done",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout[0].split_whitespace().collect::<Vec<_>>(), ["COUNT", "PID", "COMM"]);
    let row: Vec<&str> = out.stdout[1].split_whitespace().collect();
    assert_eq!((row[0], row[2]), ("6", "sh"), "{:?}", out.stdout);
}

#[test]
fn bad_targets() {
    if !require_root("count bad_targets") {
        return;
    }
    let out = run(&["count", "syscalls:sys_enter_opnat"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("did you mean"), "{}", out.stderr);
    let out = run(&["count", "syscalls:sys_enter_open*"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let out = run(&["count", "syscalls:sys_enter_kill", "--folded"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--by stack"), "{}", out.stderr);
}

#[test]
fn counts_per_stack_name_the_frames() {
    if !require_root("counts_per_stack_name_the_frames") {
        return;
    }
    let out = traced_signals(&["count", "signal:signal_generate", "--by", "stack", "--folded"], "tk-count-stk", 23);
    assert!(out.status.success(), "{}", out.stderr);
    // folded: comm;user root…;user leaf;kernel root_[k];…;kernel leaf_[k] count
    let ours: Vec<&String> = out.stdout.iter().filter(|l| l.starts_with("tk-count-stk;")).collect();
    let total: u64 = ours.iter().map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap()).sum();
    assert_eq!(total, 23, "{:#?}", out.stdout);
    for line in ours {
        let frames: Vec<&str> = line.rsplit_once(' ').unwrap().0.split(';').skip(1).collect();
        let (user, kernel): (Vec<&str>, Vec<&str>) = frames.iter().partition(|f| !f.ends_with("_[k]"));
        assert!(kernel.iter().any(|f| f.contains("kill")), "kernel frames of kill(2) name it: {line}");
        let leaf = user.last().unwrap_or_else(|| panic!("no user frames: {line}"));
        assert!(leaf.contains("kill"), "the user leaf is libc's kill(): {line}");
    }
}

/// The test program's `read N`: read() of exactly 100, 1000 and 5000 bytes N times each, as
/// thread "tk-reader" (the loader's reads before it are under the program's name).
fn reads(extra: &[&str]) -> common::Finished {
    let prog = common::target_program();
    let mut args = vec!["count", "syscalls:sys_exit_read", "--hist", "ret"];
    args.extend_from_slice(extra);
    args.extend(["--", prog.to_str().unwrap(), "read", "7"]);
    run(&args)
}

fn bucket(h: &serde_json::Value, lo: u64) -> u64 {
    h["buckets"].as_array().unwrap().iter().find(|b| b["lo"] == lo).map_or(0, |b| b["count"].as_u64().unwrap())
}

#[test]
fn hist_of_read_sizes_is_exact() {
    if !require_root("count::hist_of_read_sizes_is_exact") {
        return;
    }
    let out = reads(&["--json"]);
    assert!(out.status.success(), "{}", out.stderr);
    let json = out.json();
    let h = json.iter().find(|v| v["type"] == "hist" && v["key"]["comm"] == "tk-reader").expect("tk-reader's hist");
    assert_eq!((&h["key"]["tracepoint"], &h["key"]["field"]), (&"syscalls:sys_exit_read".into(), &"ret".into()));
    assert_eq!((bucket(h, 64), bucket(h, 512), bucket(h, 4096)), (7, 7, 7), "{h}");
    assert_eq!(h["count"], 21);
    assert_eq!(h["sum"], 7 * (100 + 1000 + 5000));
    let buckets = h["buckets"].as_array().unwrap();
    assert_eq!((&buckets[0]["lo"], &buckets[0]["hi"]), (&64.into(), &128.into()), "trimmed below: {h}");
    assert_eq!(buckets.last().unwrap()["hi"], 8192, "trimmed above: {h}");

    let out = reads(&["--linear", "1000", "--by", "pid", "--json"]);
    assert!(out.status.success(), "{}", out.stderr);
    let json = out.json();
    let h = json.iter().find(|v| v["type"] == "hist" && v["key"]["comm"] == "tk-reader").expect("tk-reader's hist");
    assert!(h["key"]["pid"].as_u64().unwrap() > 0);
    assert_eq!(h["scale"], "linear");
    // 100 in [0, 1000); 1000 in [1000, 2000); 5000 in [5000, 6000)
    assert_eq!((bucket(h, 0), bucket(h, 1000), bucket(h, 5000)), (7, 7, 7), "{h}");
}

#[test]
fn hist_table_as_bpftrace_prints_it() {
    if !require_root("count::hist_table_as_bpftrace_prints_it") {
        return;
    }
    let out = reads(&[]);
    assert!(out.status.success(), "{}", out.stderr);
    let start = out.stdout.iter().position(|l| l == "syscalls:sys_exit_read ret of tk-reader:").expect("title");
    let rows = &out.stdout[start + 1..];
    assert!(rows[0].starts_with("[64, 128)              7 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|"));
    let find = |label: &str| rows.iter().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{rows:#?}"));
    assert!(find("[512, 1K) ").contains("       7 |@@@@"));
    assert!(find("[4K, 8K) ").contains("       7 |@@@@"));
    assert!(find("[128, 256) ").contains("       0 |      "));
    assert!(rows.iter().take_while(|l| l.starts_with('[')).all(|l| l.len() == 79), "{rows:#?}");
    assert!(rows.iter().any(|l| l == "count 21, average 2033.3, total 42700"), "{rows:#?}");
}
