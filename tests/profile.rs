//! profile end to end: a program spinning in a known function, a program living in syscalls.

mod common;

use common::{require_root, run, target_program};

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

#[test]
fn bad_frequencies() {
    for f in ["0", "100000", "fast"] {
        let out = run(&["profile", "-F", f]);
        assert_eq!(out.status.code(), Some(2), "-F {f}: {}", out.stderr);
        assert!(out.stderr.contains("error:"), "{}", out.stderr);
    }
}
