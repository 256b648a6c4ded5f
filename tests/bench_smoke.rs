//! The benchmark's smoke mode (one repetition, small N), so that it cannot rot. The real
//! figures come from `cargo run --release --bin tracekit-bench` (README, "Performance").

mod common;

use std::process::Command;

#[test]
fn benchmark_smoke_run() {
    if !common::require_root("benchmark_smoke_run") {
        return;
    }
    let json = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke.json");
    let out =
        Command::new(env!("CARGO_BIN_EXE_tracekit-bench")).args(["--smoke", "--out"]).arg(&json).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for (scenario, tracer) in
        [("open", "tracekit tracepoint"), ("tcp", "tracekit tcpstate"), ("readline", "tracekit uprobe")]
    {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {scenario} | {tracer} |")))
            .unwrap_or_else(|| panic!("no {scenario}/{tracer} row in\n{table}\n{err}"));
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        let (delivered, generated) = cols[6].split_once(" / ").expect("delivered / generated");
        assert_eq!(delivered, generated, "{row}");
        assert_eq!(cols[7], "0 (exact)", "{row}");
    }
    for peer in ["libbpf-tools opensnoop", "bpftrace"] {
        assert!(
            table.contains(&format!("| open | {peer} |")),
            "a row for {peer}, measured or 'not installed':\n{table}"
        );
    }
    // capacity: one small step per tracer in smoke mode; tracekit's losses, if any, are exact
    let cap = table
        .lines()
        .find(|l| l.starts_with("| tracekit tracepoint |"))
        .unwrap_or_else(|| panic!("no capacity row for tracekit in\n{table}\n{err}"));
    assert!(!cap.contains("wrong") && !cap.contains("| none"), "{cap}");
    // packet tools: BPF_PROG_RUN cost rows (every event consumed, none lost) and one live step each
    for hook in ["XDP", "TC"] {
        for frame in ["TCP SYN / IPv4", "TCP SYN / IPv6"] {
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("| {hook} | {frame} |")))
                .unwrap_or_else(|| panic!("no net-cost row {hook}/{frame} in\n{table}\n{err}"));
            assert!(row.ends_with("| 10000 / 0 |"), "{row}");
        }
    }
    for tool in ["tracekit xdp", "tracekit tc", "tracekit sockfilter", "tracekit xdp -w 'udp port P'"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {tool} |")))
            .unwrap_or_else(|| panic!("no net-capacity row for {tool} in\n{table}\n{err}"));
        assert!(row.contains("| 0 (0, exact) |"), "{row}");
        assert!(row.ends_with(" s |"), "machine CPU per million packets: {row}");
    }
    // the filter cost: the same test as options and as a tcpdump expression
    for frame in ["TCP SYN / IPv4", "UDP port 53 / IPv4"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| XDP | {frame} |")) && l.matches('|').count() == 7)
            .unwrap_or_else(|| panic!("no net-filter row for {frame} in\n{table}\n{err}"));
        assert!(row.contains(" ns |"), "{row}");
    }
    assert!(table.contains("| tcpdump -w |"), "a row for tcpdump, measured or 'not installed':\n{table}");
    // cgroup hooks: each workload with no program, tracekit observing and tracekit -q with rules;
    // tracekit's own counters saw every call of the workload, no rule matched, events were printed
    for workload in ["connect()+close()", "bind()+close()", "TCP stream"] {
        let rows: Vec<Vec<&str>> = table
            .lines()
            .filter(|l| l.starts_with(&format!("| {workload} | ")))
            .map(|l| l.split('|').map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), 3, "three cgroup rows for {workload} in\n{table}\n{err}");
        assert_eq!(rows[0][2], "no program", "{rows:?}");
        for cols in &rows {
            let (rate, unit) = cols[3].split_once(' ').unwrap_or_else(|| panic!("a rate: {cols:?}\n{err}"));
            assert!(rate.parse::<f64>().is_ok_and(|r| r > 0.0) && ["k/s", "Gbit/s"].contains(&unit), "{cols:?}");
            if cols[2] == "no program" {
                continue;
            }
            assert!(cols[4].ends_with(" %"), "cost vs. no program: {cols:?}");
            let counted: u64 = cols[6].split(' ').next().unwrap().parse().unwrap_or(0);
            assert!(counted > 0, "tracekit counted the workload's calls: {cols:?}");
            if let Some((_, made)) = cols[6].split_once(" / ") {
                let made: u64 = made.split(' ').next().unwrap().parse().unwrap();
                assert_eq!(counted, made, "every call counted: {cols:?}");
            }
            if cols[2].contains("-q") {
                assert!(cols[6].ends_with("(0 denied)"), "no rule matches: {cols:?}");
            } else {
                let n: Vec<u64> = cols[7].split(" / ").map(|x| x.parse().unwrap()).collect();
                let [printed, calls, lost] = n[..] else { panic!("events printed / calls / lost: {cols:?}") };
                assert!(printed > 0 && calls >= counted, "events for the calls: {cols:?}");
                // an event per call of an observed hook, printed or counted as lost; a few apart at
                // most (a late TCP timer's packet between tracekit's last read of the ring and of
                // its counters), which the full run's table shows
                assert!((printed + lost).abs_diff(calls) <= 2, "{cols:?}");
            }
        }
        let connect_targets = rows.iter().filter(|c| c[4].contains('%') && c[5].starts_with('≤')).count();
        assert_eq!(connect_targets, if workload == "connect()+close()" { 2 } else { 0 }, "{rows:?}");
    }
    // sockmap echo: the three servers measured (socat: or said missing), the same client; every
    // byte tracekit's kernel side echoed is accounted for and it read almost none of them
    let cols_of = |prefix: &str| -> Vec<String> {
        let row = table
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no row `{prefix}` in\n{table}\n{err}"));
        row.split('|').map(|c| c.trim().to_owned()).collect()
    };
    for server in ["tracekit sockmap echo", "user-space echo (thread per connection)", "socat EXEC:cat"] {
        let cols = cols_of(&format!("| sockmap echo | {server} |"));
        if server == "socat EXEC:cat" && cols[3].contains("not installed") {
            continue;
        }
        for c in &cols[3..5] {
            let mbs: f64 = c.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("MB/s: {cols:?}\n{err}"));
            assert!(mbs > 0.0, "{cols:?}");
        }
        assert!(cols[5].ends_with(" µs") && cols[6].ends_with(" µs"), "RTT p50, p99: {cols:?}");
        assert!(cols[7].contains(" s / ") && cols[7].ends_with(" s"), "CPU per GB: {cols:?}");
        if server == "tracekit sockmap echo" {
            // "kernel moved X of Y B; tracekit read Z B"
            let w: Vec<&str> = cols[8].split(' ').collect();
            assert_eq!(w[2], w[4], "every byte sent came back through the kernel: {cols:?}");
            let (moved, read): (u64, u64) = (w[2].parse().unwrap(), w[8].parse().unwrap());
            assert!(moved > 0 && read < moved / 64, "the bytes stayed in the kernel: {cols:?}");
        }
    }
    // proxy and bypass: measured, or skipped with the reason when this build lacks the command
    for what in ["sockmap proxy", "sockmap bypass"] {
        assert!(table.contains(&format!("| {what}")), "a {what} row, measured or skipped:\n{table}");
        assert!(!table.contains("failed"), "{table}\n{err}");
    }
    // sk_lookup: every connection steered was counted as a hit and printed once; none when the
    // clients use another port than the steered one
    let skl: Vec<Vec<String>> = table
        .lines()
        .filter(|l| l.starts_with("| sk_lookup | "))
        .map(|l| l.split('|').map(|c| c.trim().to_owned()).collect())
        .collect();
    assert_eq!(skl.len(), 4, "four sk_lookup rows in\n{table}\n{err}");
    for cols in &skl {
        let rate: f64 = cols[3].strip_suffix(" k/s").and_then(|r| r.parse().ok()).unwrap_or(0.0);
        assert!(rate > 0.0, "{cols:?}\n{err}");
        assert!(cols[6].ends_with(" µs") || cols[6].contains(" µs ("), "client CPU per connection: {cols:?}");
        if cols[2] == "no program" {
            continue;
        }
        assert!(cols[7].ends_with(" µs"), "tracekit CPU per connection: {cols:?}");
        // "lookups / hits / misses / events (connections made: N)"
        let n: Vec<u64> = cols[8].replace(['(', ')', ':'], " ").split(' ').filter_map(|x| x.parse().ok()).collect();
        let [lookups, hits, misses, events, made] = n[..] else { panic!("{cols:?}") };
        assert!(lookups >= made, "a lookup per connection at least: {cols:?}");
        assert_eq!(misses, 0, "{cols:?}");
        if cols[2].contains("no hit") {
            assert_eq!((hits, events), (0, 0), "{cols:?}");
        } else {
            assert_eq!((hits, events), (made, made), "{cols:?}");
        }
    }
    let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(raw.as_array().unwrap().len() >= 10);
}
