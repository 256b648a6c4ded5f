//! funclatency: latency histograms of the test program's functions, which sleep known times
//! (tests/progs/uprobe_target.c `sleeps N`: tk_sleep_ms(1), (10), (50) N times each, then
//! tk_recurse(3, 20) N times, whose innermost level calls tk_sleep_ms(20)).
//!
//! Slots are log2 of the latency in the unit asked for; a sleep overshoots by a little (a
//! loaded machine: a few ms), so each sleep is placed where its slot has room above it:
//! 1 ms in [1, 2) ms (or up to [4, 8) when late), 10 in [8, 16), 20 in [16, 32), 50 in [32, 64).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Exit, Tracer, assert_released, require_root, run, target_program};
use serde_json::Value;

/// A copy of the test program of this test's own: uprobes are per file, so the other tests'
/// runs of the shared one are not timed.
fn target_copy(name: &str) -> String {
    let dst = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fl_{name}.{}", std::process::id()));
    std::fs::copy(target_program(), &dst).expect("copy the test program");
    dst.to_str().unwrap().to_owned()
}

/// The `hist` objects of a run, by function name.
fn hists<'a>(json: &'a [Value], func: &str) -> Vec<&'a Value> {
    json.iter().filter(|v| v["type"] == "hist" && v["key"]["func"] == func).collect()
}

/// count of the bucket starting at `lo`, 0 if not shown.
fn at(h: &Value, lo: u64) -> u64 {
    h["buckets"].as_array().unwrap().iter().find(|b| b["lo"] == lo).map_or(0, |b| b["count"].as_u64().unwrap())
}

#[test]
fn sleeps_land_in_their_slots() {
    if !require_root("funclatency::sleeps_land_in_their_slots") {
        return;
    }
    let t = target_copy("sleeps_land");
    let (sleep, recurse) = (format!("{t}:tk_sleep_ms"), format!("{t}:tk_recurse"));
    let out = run(&["funclatency", &sleep, &recurse, "-m", "--json", "--", &t, "sleeps", "4"]);
    assert!(out.status.success(), "{}", out.stderr);
    let json = out.json();
    let s = hists(&json, "tk_sleep_ms");
    assert_eq!(s.len(), 1, "one histogram per function: {json:#?}");
    let s = s[0];
    assert_eq!(s["unit"], "msecs");
    // 4 each of 1, 10, 50 ms, and the 4 innermost levels of tk_recurse (20 ms)
    assert_eq!(s["count"], 16, "{s}");
    assert_eq!(at(s, 1) + at(s, 2) + at(s, 4), 4, "1 ms: {s}");
    assert_eq!(at(s, 8), 4, "10 ms: {s}");
    assert_eq!(at(s, 16), 4, "20 ms: {s}");
    assert_eq!(at(s, 32), 4, "50 ms: {s}");
    let sum = s["sum"].as_u64().unwrap();
    assert!((4 * 81..4 * 81 + 16 * 8).contains(&sum), "sum of whole ms: {sum}");
    // every level of the recursion is timed, each about 20 ms (the innermost sleeps)
    let r = hists(&json, "tk_recurse");
    assert_eq!(r.len(), 1, "{json:#?}");
    assert_eq!((r[0]["count"].as_u64(), at(r[0], 16)), (Some(12), 12), "{}", r[0]);
    let summary = out.summary();
    assert_eq!(summary["events"], 28, "{summary}");
    assert_eq!((&summary["no_entry"], &summary["too_deep"], &summary["pending"]), (&0.into(), &0.into(), &0.into()));
}

#[test]
fn nanoseconds_by_default_per_process_table() {
    if !require_root("funclatency::nanoseconds_by_default_per_process_table") {
        return;
    }
    let t = target_copy("nanoseconds");
    let sym = format!("{t}:tk_sleep_ms");
    let out = run(&["funclatency", &sym, "--by", "pid", "--", &t, "sleeps", "2"]);
    assert!(out.status.success(), "{}", out.stderr);
    let title = &out.stdout[0];
    let comm: String = std::path::Path::new(&t).file_name().unwrap().to_str().unwrap().chars().take(15).collect();
    assert!(title.starts_with(&format!("{sym} of {comm} (")) && title.ends_with(") (nsecs):"), "{title}");
    let row = |label: &str| {
        let line = out.stdout.iter().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{:#?}", out.stdout));
        assert_eq!(line.len(), 79, "80 columns: {line}");
        line[16..24].trim().parse::<u64>().unwrap()
    };
    // 10 ms = 10,000,000 ns in [8M, 16M); 20 in [16M, 32M); 50 in [32M, 64M)
    assert_eq!(row("[8M, 16M)"), 2);
    assert_eq!(row("[16M, 32M)"), 2);
    assert_eq!(row("[32M, 64M)"), 2);
    let footer = out.stdout.iter().find(|l| l.starts_with("count ")).unwrap();
    assert!(footer.starts_with("count 8, average "), "{footer}");
}

#[test]
fn intervals_add_up_and_cumulative_grows() {
    if !require_root("funclatency::intervals_add_up_and_cumulative_grows") {
        return;
    }
    let t = target_copy("intervals");
    let sym = format!("{t}:tk_sleep_ms");
    // 10 rounds: about 0.8 s, so several 0.2 s intervals
    for cumulative in [false, true] {
        let mut args = vec!["funclatency", &sym, "-m", "--json", "-i", "0.2"];
        if cumulative {
            args.push("--cumulative");
        }
        args.extend(["--", &t, "sleeps", "10"]);
        let out = run(&args);
        assert!(out.status.success(), "{}", out.stderr);
        let json = out.json();
        let counts: Vec<u64> = hists(&json, "tk_sleep_ms").iter().map(|h| h["count"].as_u64().unwrap()).collect();
        assert!(counts.len() >= 3, "several intervals: {counts:?}");
        if cumulative {
            assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
            assert_eq!(*counts.last().unwrap(), 40);
        } else {
            assert_eq!(counts.iter().sum::<u64>(), 40, "each interval's own calls: {counts:?}");
        }
    }
}

#[test]
fn calls_in_flight_at_the_end_are_pending() {
    if !require_root("funclatency::calls_in_flight_at_the_end_are_pending") {
        return;
    }
    let t = target_copy("in_flight");
    let mut victim = Command::new(&t).args(["sleeps", "100"]).spawn().unwrap();
    let pid = victim.id().to_string();
    let (sleep, recurse) = (format!("{t}:tk_sleep_ms"), format!("{t}:tk_recurse"));
    let out = run(&["funclatency", &sleep, &recurse, "-p", &pid, "-d", "0.5", "--json"]);
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(out.status.success(), "{}", out.stderr);
    let s = out.summary();
    // it spends all its time in a sleep: one call of tk_sleep_ms, or it and 3 of tk_recurse
    let pending = s["pending"].as_u64().unwrap();
    assert!((1..=4).contains(&pending), "{s}");
    assert!(s["events"].as_u64().unwrap() >= 1, "calls made while attached are timed: {s}");
}

#[test]
fn every_exit_leaves_nothing_attached() {
    if !require_root("funclatency::every_exit_leaves_nothing_attached") {
        return;
    }
    let t = target_copy("exits");
    let sym = format!("{t}:tk_sleep_ms");
    for exit in [Exit::Interrupt, Exit::Terminate, Exit::Duration, Exit::ClosedPipe, Exit::Kill] {
        let mut args = vec!["funclatency", sym.as_str(), "--json", "-m"];
        if matches!(exit, Exit::Duration) {
            args.extend(["-d", "1"]);
        }
        let mut tr = Tracer::start_opts(&args, !matches!(exit, Exit::ClosedPipe));
        let ids = tr.ids.clone();
        assert!(!ids.links.is_empty(), "{exit:?}: uprobe links held");
        if matches!(exit, Exit::ClosedPipe) {
            drop(tr.stdout_raw.take());
        }
        let status = Command::new(&t).args(["sleeps", "1"]).status().unwrap();
        assert!(status.success());
        exit.signal(&tr);
        let out = tr.wait(Duration::from_secs(10));
        exit.assert_status(&out, "funclatency");
        if matches!(exit, Exit::Interrupt | Exit::Terminate | Exit::Duration) {
            let json = out.json();
            let h = hists(&json, "tk_sleep_ms");
            assert_eq!(h.len(), 1, "{exit:?}: the histogram at the end: {json:#?}");
            assert_eq!(h[0]["count"], 4, "{exit:?}");
        }
        assert_released(&ids, &format!("funclatency {exit:?}"));
    }
    // the end of -- CMD
    // -v before `--` (Tracer adds one at the end too, which CMD ignores)
    let tr = Tracer::start(&["funclatency", &sym, "-m", "-v", "--", &t, "sleeps", "1"]);
    let ids = tr.ids.clone();
    let out = tr.wait(Duration::from_secs(10));
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.iter().any(|l| l.starts_with("count 4, ")), "{:#?}", out.stdout);
    assert_released(&ids, "funclatency at the end of -- CMD");
}
