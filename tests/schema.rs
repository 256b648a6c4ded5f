//! Every tool's `--json` against the schema of README.md ("JSON schema (version 1)" and each
//! tool's section): each tool runs briefly while the test makes a real event, every line must
//! parse, have a `type` the tool may print, and carry that type's fields with their JSON types.
//! The table below is written once and mirrors the README's.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::net::{self, VethPair};
use common::{Finished, Tracer, require_root, run, skip, target_program};
use serde_json::Value;

/// The JSON type a field must have.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    /// A non-negative integer.
    UInt,
    /// Any number (integer or fraction).
    Num,
    Obj,
    /// An array of strings.
    StrArr,
    /// A value of any type, even null: only its presence is checked.
    Any,
    /// A histogram's buckets: `[{"lo": uint|null, "hi": uint|null, "count": uint}, ...]`, in
    /// order, each starting where the one before ends.
    Buckets,
}

use Ty::*;

fn has_type(v: &Value, ty: Ty) -> bool {
    match ty {
        Str => v.is_string(),
        UInt => v.is_u64(),
        Num => v.is_number(),
        Obj => v.is_object(),
        StrArr => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Any => true,
        Buckets => v.as_array().is_some_and(|a| {
            let bound = |b: &Value| b.is_null() || b.is_u64();
            a.iter().all(|b| {
                b.as_object().is_some_and(|o| o.len() == 3)
                    && bound(&b["lo"])
                    && bound(&b["hi"])
                    && b["count"].is_u64()
                    && !(b["lo"].is_null() && b["hi"].is_null())
            }) && a.windows(2).all(|w| w[0]["hi"] == w[1]["lo"])
        }),
    }
}

type Fields = &'static [(&'static str, Ty)];

// The README's schema table, one constant per row (and per variant of a row).
const TASK_EVENT: Fields =
    &[("time_ns", UInt), ("pid", UInt), ("tid", UInt), ("uid", UInt), ("cpu", UInt), ("comm", Str)];
/// What every packet event leads with (the packet tools' and forward's).
const PACKET_HEADER: Fields = &[
    ("time_ns", UInt),
    ("iface", Str),
    ("ifindex", UInt),
    ("netns", UInt),
    ("cpu", UInt),
    ("dir", Str),
    ("len", UInt),
];
const PACKET_EVENT: Fields = &[("hook", Str), ("ethertype", UInt), ("verdict", Str)];
const COUNTERS: Fields = &[("seen", UInt), ("matched", UInt), ("pass", UInt), ("drop", UInt)];
const LOST: Fields = &[("count", UInt), ("total", UInt)];
const SUMMARY: Fields = &[("schema", UInt), ("events", UInt), ("lost", UInt), ("duration_s", Num)];
const PROFILE_SUMMARY: Fields = &[("samples", UInt), ("stacks", UInt)];
const COUNT: Fields = &[("comm", Str), ("count", UInt)];
/// An in-kernel histogram (count --hist, funclatency): `key` holds the tool's key fields.
const HIST: Fields =
    &[("key", Obj), ("unit", Str), ("scale", Str), ("buckets", Buckets), ("sum", UInt), ("count", UInt)];
const FUNCLATENCY_SUMMARY: Fields = &[("no_entry", UInt), ("too_deep", UInt), ("pending", UInt)];
const STACK: Fields = &[("pid", UInt), ("comm", Str), ("count", UInt), ("kernel", StrArr), ("user", StrArr)];
const KERNEL: Fields = &[("name", Str), ("release", Str), ("arch", Str), ("status", Str), ("detail", Str)];
const FEATURE: Fields = &[("name", Str), ("status", Str), ("detail", Str)];
const FUNCTION_IN_FILE: Fields =
    &[("name", Str), ("binary", Str), ("addr", UInt), ("size", UInt), ("file_offset", UInt)];
const FUNCTION_IN_KERNEL: Fields = &[("name", Str), ("kind", Str), ("prototype", Str)];
const TRACEPOINT: Fields = &[("name", Str)];

// The tools' own event fields (each tool's README section).
const TCPSTATE: Fields = &[
    ("family", Str),
    ("laddr", Str),
    ("lport", UInt),
    ("raddr", Str),
    ("rport", UInt),
    ("oldstate", Str),
    ("newstate", Str),
    ("ms", Num),
    ("skaddr", Str),
];
const TRACEPOINT_EVENT: Fields = &[("tracepoint", Str), ("fields", Obj)];
const CALL: Fields = &[("func", Str), ("args", Obj)];
const UPROBE: Fields = &[("probe", Str), ("func", Str), ("args", Obj)];
const URETPROBE: Fields = &[("probe", Str), ("func", Str), ("ret", Any)];

/// A line type a tool may print: its `type`, its fields, and whether at least one must come.
struct Kind {
    name: &'static str,
    fields: Vec<Fields>,
    required: bool,
}

fn kind(name: &'static str, fields: &[Fields], required: bool) -> Kind {
    Kind { name, fields: fields.to_vec(), required }
}

/// A streaming tracing tool: its events, lost notices, the summary last.
fn streaming(tool_fields: Fields) -> Vec<Kind> {
    vec![
        kind("event", &[TASK_EVENT, tool_fields], true),
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ]
}

fn packets() -> Vec<Kind> {
    vec![
        kind("event", &[PACKET_HEADER, PACKET_EVENT], true),
        kind("counters", &[COUNTERS], true),
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ]
}

/// Checks every line of `out` against `kinds`; a tool with a summary ends with it.
#[track_caller]
fn check(tool: &str, out: &Finished, kinds: &[Kind]) {
    assert!(out.status.success(), "{tool}: exit {:?}: {}", out.status, out.stderr);
    assert!(!out.stdout.is_empty(), "{tool}: no output: {}", out.stderr);
    let mut seen = vec![0usize; kinds.len()];
    for line in &out.stdout {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{tool}: not JSON ({e}): {line}"));
        let ty = v["type"].as_str().unwrap_or_else(|| panic!("{tool}: no string `type`: {line}"));
        let i = kinds
            .iter()
            .position(|k| k.name == ty)
            .unwrap_or_else(|| panic!("{tool}: type {ty:?} is not in the schema for this tool: {line}"));
        seen[i] += 1;
        for &(field, want) in kinds[i].fields.iter().flat_map(|f| f.iter()) {
            let got = v.get(field).unwrap_or_else(|| panic!("{tool}: {ty} without `{field}`: {line}"));
            assert!(has_type(got, want), "{tool}: {ty}.{field} should be {want:?}: {line}");
        }
    }
    for (k, n) in kinds.iter().zip(&seen) {
        assert!(!k.required || *n > 0, "{tool}: no {:?} line in {:#?}", k.name, out.stdout);
    }
    if let Some(i) = kinds.iter().position(|k| k.name == "summary") {
        let last: Value = serde_json::from_str(out.stdout.last().unwrap()).unwrap();
        assert_eq!(last["type"], "summary", "{tool}: the summary is the last line");
        assert_eq!(seen[i], 1, "{tool}: one summary");
        assert_eq!(last["schema"], 1);
    }
}

/// A command for `-- CMD` that opens a file and prints nothing (CMD shares stdout).
const OPENS: &[&str] = &["sh", "-c", "cat /etc/hostname >/dev/null; cat /etc/hostname >/dev/null"];

fn with_cmd<'a>(args: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.push("--");
    v.extend_from_slice(cmd);
    v
}

#[test]
fn probe_and_list() {
    if !require_root("schema::probe_and_list") {
        return;
    }
    check("probe", &run(&["probe", "--json"]), &[kind("kernel", &[KERNEL], true), kind("feature", &[FEATURE], true)]);
    let prog = target_program();
    check(
        "list FILE",
        &run(&["list", prog.to_str().unwrap(), "--json"]),
        &[kind("function", &[FUNCTION_IN_FILE], true)],
    );
    check(
        "list kernel",
        &run(&["list", "kernel", "tcp_v4_conn*", "--json"]),
        &[kind("function", &[FUNCTION_IN_KERNEL], true)],
    );
    check(
        "list tracepoint",
        &run(&["list", "tracepoint", "syscalls:sys_enter_open*", "--json"]),
        &[kind("tracepoint", &[TRACEPOINT], true)],
    );
}

#[test]
fn tracing_tools() {
    if !require_root("schema::tracing_tools") {
        return;
    }
    let tp = with_cmd(&["tracepoint", "syscalls:sys_enter_openat", "--json", "--stack"], OPENS);
    check("tracepoint", &run(&tp), &streaming(TRACEPOINT_EVENT));
    let execs = ["sh", "-c", "/bin/true; /bin/true"];
    check("tp_btf", &run(&with_cmd(&["tp_btf", "sched_process_exec", "--json"], &execs)), &streaming(CALL));
    check("raw_tp", &run(&with_cmd(&["raw_tp", "sched_process_exec", "--json"], &execs)), &streaming(CALL));

    let p = target_program().display().to_string();
    let probe = format!("{p}:tk_add");
    let sig = "int tk_add(int a, int b)";
    let up = ["uprobe", probe.as_str(), "--sig", sig, "--json", "--", &p, "calls", "1"];
    check("uprobe", &run(&up), &streaming(UPROBE));
    let uret = ["uretprobe", probe.as_str(), "--sig", sig, "--json", "--", &p, "calls", "1"];
    check("uretprobe", &run(&uret), &streaming(URETPROBE));

    // A connection made by CMD itself (bash's /dev/tcp) to a listener the test holds.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{}", listener.local_addr().unwrap().port());
    check("tcpstate", &run(&["tcpstate", "--json", "--", "bash", "-c", &connect]), &streaming(TCPSTATE));

    let features = run(&["probe", "--json"]).json();
    let kprobe = features.iter().find(|v| v["name"] == "kprobe").expect("probe lists kprobe");
    if kprobe["status"] == "supported" {
        check("kprobe", &run(&with_cmd(&["kprobe", "do_sys_openat2", "--json"], OPENS)), &streaming(CALL));
    } else {
        skip("schema::tracing_tools kprobe", &format!("kprobe is {} here: {}", kprobe["status"], kprobe["detail"]));
    }
}

#[test]
fn counting_tools() {
    if !require_root("schema::counting_tools") {
        return;
    }
    let summary = kind("summary", &[SUMMARY], true);
    let out = run(&with_cmd(&["count", "syscalls:sys_enter_openat", "--json"], OPENS));
    check("count", &out, &[kind("count", &[COUNT], true), kind("summary", &[SUMMARY], true)]);
    let counted: u64 = out.json().iter().filter(|v| v["type"] == "count").map(|v| v["count"].as_u64().unwrap()).sum();
    assert_eq!(out.summary()["events"], counted, "count's summary counts its rows");
    let by_pid = run(&with_cmd(&["count", "syscalls:sys_enter_openat", "--json", "--by", "pid"], OPENS));
    check(
        "count --by pid",
        &by_pid,
        &[kind("count", &[COUNT, &[("pid", UInt)]], true), kind("summary", &[SUMMARY], true)],
    );
    let by_stack = run(&with_cmd(&["count", "syscalls:sys_enter_openat", "--json", "--by", "stack"], OPENS));
    check("count --by stack", &by_stack, &[kind("stack", &[STACK], true), summary]);

    let prog = target_program();
    let target = prog.to_str().unwrap();
    let out = run(&["count", "syscalls:sys_exit_read", "--hist", "ret", "--json", "--", target, "read", "2"]);
    check("count --hist", &out, &[kind("hist", &[HIST], true), kind("summary", &[SUMMARY], true)]);
    let counted: u64 = out.json().iter().filter(|v| v["type"] == "hist").map(|v| v["count"].as_u64().unwrap()).sum();
    assert_eq!(out.summary()["events"], counted, "count --hist's summary counts the values");
    let out = run(&[
        "count",
        "syscalls:sys_exit_read",
        "--hist",
        "ret",
        "--linear",
        "1000",
        "--by",
        "pid",
        "--json",
        "--",
        target,
        "read",
        "2",
    ]);
    check("count --hist --linear", &out, &[kind("hist", &[HIST], true), kind("summary", &[SUMMARY], true)]);
    let sym = format!("{target}:tk_sleep_ms");
    let out = run(&["funclatency", &sym, "--json", "--by", "pid", "--", target, "sleeps", "1"]);
    check("funclatency", &out, &[kind("hist", &[HIST], true), kind("summary", &[SUMMARY, FUNCLATENCY_SUMMARY], true)]);
    let h = out.json().into_iter().find(|v| v["type"] == "hist").unwrap();
    assert_eq!((&h["key"]["func"], &h["unit"], &h["scale"]), (&"tk_sleep_ms".into(), &"nsecs".into(), &"log2".into()));
    assert!(h["key"]["pid"].is_u64() && h["key"]["comm"] == "uprobe_target", "{h}");

    let out = run(&["profile", "-F", "99", "--json", "--", target, "spin", "1"]);
    check("profile", &out, &[kind("stack", &[STACK], true), kind("summary", &[SUMMARY, PROFILE_SUMMARY], true)]);
    let s = out.summary();
    assert_eq!(s["events"], s["samples"], "profile's events are its samples: {s}");
}

#[test]
fn packet_tools() {
    if !require_root("schema::packet_tools") {
        return;
    }
    let pair = VethPair::new("schema");
    let _srv = net::tcp_listen(&pair.b, pair.ip4_b, 8080);
    for tool in ["xdp", "tc", "sockfilter"] {
        let t = Tracer::start(&[tool, pair.if_b, "--netns", pair.b.name(), "--json", "--port", "8080"]);
        net::tcp_connect(&pair.a, pair.ip4_b, 8080, Duration::from_secs(5)).expect("connect");
        std::thread::sleep(Duration::from_millis(300));
        check(tool, &t.stop(), &packets());
    }
}

// `tracekit cgroup` (README "cgroup events in JSON"): events lead with cpu (and pid/comm where
// the hook has a task), then the hook's fields; counters per hook and per rule at exit.
const HOOK_EVENT: Fields = &[("time_ns", UInt), ("cpu", UInt), ("hook", Str), ("verdict", Str)];
const HOOK_TASK: Fields = &[("pid", UInt), ("comm", Str)];
const HOOK_INET: Fields =
    &[("family", Str), ("proto", Str), ("sock_type", Str), ("raddr", Str), ("rport", UInt), ("rule", Str)];
const HOOK_DEV: Fields = &[("dev_type", Str), ("major", UInt), ("minor", UInt), ("access", Str)];
const HOOK_COUNTS: Fields = &[("hook", Str), ("calls", UInt), ("denied", UInt), ("rewritten", UInt)];
const RULE: Fields = &[("index", UInt), ("rule", Str), ("hits", UInt)];

#[test]
fn cgroup_tool() {
    if !require_root("schema::cgroup_tool") {
        return;
    }
    let hooks = |only: &'static [Fields]| {
        let mut fields = vec![HOOK_EVENT];
        fields.extend_from_slice(only);
        vec![
            Kind { name: "event", fields, required: true },
            kind("hook_counts", &[HOOK_COUNTS], true),
            kind("rule", &[RULE], true),
            kind("lost", &[LOST], false),
            kind("summary", &[SUMMARY], true),
        ]
    };
    // A denied connect (TCP, to loopback): every inet field, the rule included.
    let connect_cmd = ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9 2>/dev/null; true"];
    let out =
        run(&with_cmd(&["cgroup", "--json", "--hooks", "connect4", "--deny", "connect:127.0.0.1:9"], &connect_cmd));
    check("cgroup connect", &out, &hooks(&[HOOK_TASK, HOOK_INET]));
    // An opened device: the dev fields.
    let out = run(&with_cmd(&["cgroup", "--json", "--hooks", "dev", "--deny", "dev:c:1:5:w"], &["cat", "/dev/null"]));
    check("cgroup dev", &out, &hooks(&[HOOK_TASK, HOOK_DEV]));
}

// `tracekit forward` (README "Counters" and "Forward events in JSON"): a decision per packet with
// --trace, led by the packet header; counters per interface at exit.
const FORWARD_EVENT: Fields =
    &[("ethertype", UInt), ("hook", Str), ("outcome", Str), ("action", Str), ("smac", Str), ("dmac", Str)];
const FORWARD_IP: Fields =
    &[("family", Str), ("proto", Str), ("saddr", Str), ("daddr", Str), ("ttl", UInt), ("fib", Str)];
const FWD_COUNTS: Fields = &[
    ("iface", Str),
    ("ifindex", UInt),
    ("received", UInt),
    ("forwarded", UInt),
    ("passed", UInt),
    ("dropped", UInt),
    ("how", Obj),
    ("reasons", Obj),
    ("aborted", UInt),
    ("xmit_drops", UInt),
    ("sent_packets", UInt),
    ("sent_bytes", UInt),
];

#[test]
fn forward_tool() {
    if !require_root("schema::forward_tool") {
        return;
    }
    // One veth pair: pings to b's own address are decided (`not_fwded`, up to the stack) with
    // every field a decision has.
    let pair = VethPair::new("schemafw");
    let kinds = [
        Kind { name: "event", fields: vec![PACKET_HEADER, FORWARD_EVENT, FORWARD_IP], required: true },
        kind("fwd_counts", &[FWD_COUNTS], true),
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ];
    for mode in [&[][..], &["--tc"][..]] {
        let mut args = vec!["forward", pair.if_b, "--netns", pair.b.name(), "--json", "--trace"];
        args.extend_from_slice(mode);
        let t = Tracer::start(&args);
        assert!(net::ping(&pair.a, pair.ip4_b, 2), "ping over the pair");
        std::thread::sleep(Duration::from_millis(300));
        let out = t.stop();
        let icmp = out.events().iter().filter(|e| e["proto"] == "icmp").count();
        assert!(
            icmp >= 2,
            "forward {mode:?}: {icmp} ICMP decisions for 2 pings\n{}\n{}",
            out.stdout.join("\n"),
            out.stderr
        );
        check(&format!("forward {mode:?}"), &out, &kinds);
    }
}

// `tracekit tcpcc` (README "tracekit tcpcc watch" and "tracekit tcpcc load"): a sample per change
// of a flow's congestion state; a decision per event of a BPF algorithm, counters at exit.
const FLOW: Fields = &[("family", Str), ("laddr", Str), ("lport", UInt), ("raddr", Str), ("rport", UInt)];
const TCPCC_SAMPLE: Fields = &[
    ("time_ns", UInt),
    ("cpu", UInt),
    ("skaddr", Str),
    ("algo", Str),
    ("ca_state", Str),
    ("cwnd", UInt),
    ("ssthresh", Any),
    ("srtt_us", UInt),
    ("rttvar_us", UInt),
    ("min_rtt_us", Any),
    ("snd_wnd", UInt),
    ("rcv_wnd", UInt),
    ("mss", UInt),
    ("inflight", UInt),
    ("packets_out", UInt),
    ("sacked_out", UInt),
    ("lost_out", UInt),
    ("retrans_out", UInt),
    ("total_retrans", UInt),
    ("bytes_acked", UInt),
    ("bytes_received", UInt),
];
const TCPCC_DECISION: Fields = &[
    ("time_ns", UInt),
    ("cpu", UInt),
    ("algo", Str),
    ("event", Str),
    ("sock", Str),
    ("cwnd_before", UInt),
    ("cwnd", UInt),
    ("ssthresh", Any),
    ("srtt_us", UInt),
    ("in_flight", UInt),
    ("acked", UInt),
];
const TCPCC_COUNTS: Fields = &[
    ("algo", Str),
    ("init", UInt),
    ("release", UInt),
    ("slow_start", UInt),
    ("avoidance", UInt),
    ("loss", UInt),
    ("undo", UInt),
    ("delay_down", UInt),
    ("delay_hold", UInt),
];

#[test]
fn tcpcc_tool() {
    if !require_root("schema::tcpcc_tool") {
        return;
    }
    const PORT: u16 = 19480;
    const PACED: u32 = 50_000_000;
    let pair = VethPair::new("schemacc");
    let t = Tracer::start(&["tcpcc", "watch", "--json", "-D", &PORT.to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    net::bulk_transfer(&pair, PORT, "cubic", 2 << 20, PACED);
    let out = t.stop();
    let kinds = [
        Kind { name: "event", fields: vec![FLOW, TCPCC_SAMPLE], required: true },
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ];
    check("tcpcc watch", &out, &kinds);

    // The algorithm names are the kernel's: one registering test at a time, across binaries.
    let _names = common::lock_tcpcc_names();
    let t = Tracer::start(&["tcpcc", "load", "tk_reno", "--events", "--json"]);
    std::thread::sleep(Duration::from_millis(300));
    net::bulk_transfer(&pair, PORT, "tk_reno", 2 << 20, PACED);
    let out = t.stop();
    let kinds = [
        Kind { name: "event", fields: vec![FLOW, TCPCC_DECISION], required: true },
        kind("tcpcc_counts", &[TCPCC_COUNTS], true),
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ];
    check("tcpcc load", &out, &kinds);
}

// `tracekit sockops` (README "tracekit sockops"): every event has the connection's numbers; the
// kind's own fields (states, RTT, retransmission, summary) are checked by tests/sockops.rs.
const SOCKOPS_EVENT: Fields = &[
    ("time_ns", UInt),
    ("cpu", UInt),
    ("event", Str),
    ("cookie", UInt),
    ("cwnd", UInt),
    ("ssthresh", Any),
    ("total_retrans", UInt),
    ("bytes_acked", UInt),
    ("bytes_received", UInt),
];
const SOCKOPS_COUNTS: Fields =
    &[("connect", UInt), ("accept", UInt), ("state", UInt), ("rtt", UInt), ("retrans", UInt), ("closed", UInt)];

#[test]
fn sockops_tool() {
    if !require_root("schema::sockops_tool") {
        return;
    }
    const PORT: u16 = 19481;
    const PACED: u32 = 50_000_000;
    let pair = VethPair::new("schemaso");
    let t = Tracer::start(&["sockops", "--json", "--rtt", "--samples", "-D", &PORT.to_string()]);
    net::bulk_transfer(&pair, PORT, "cubic", 1 << 20, PACED);
    let out = t.stop();
    let kinds = [
        Kind { name: "event", fields: vec![FLOW, SOCKOPS_EVENT], required: true },
        kind("sockops_counts", &[SOCKOPS_COUNTS], true),
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ];
    check("sockops", &out, &kinds);
}

// `tracekit sklookup` (README "tracekit sklookup"): an event per lookup of the port set, the
// counters at exit.
const SKLOOKUP_EVENT: Fields = &[("time_ns", UInt), ("cpu", UInt), ("proto", Str), ("verdict", Str), ("cookie", UInt)];
const SKLOOKUP_COUNTS: Fields = &[("lookups", UInt), ("hits", UInt), ("misses", UInt)];

#[test]
fn sklookup_tool() {
    if !require_root("schema::sklookup_tool") {
        return;
    }
    let ns = net::Netns::new("schemaskl");
    let t = Tracer::start(&["sklookup", "--netns", ns.name(), "--ports", "7", "--echo", "--json"]);
    net::tcp_connect(&ns, std::net::Ipv4Addr::LOCALHOST, 7, Duration::from_secs(3)).expect("echo on port 7");
    let out = t.stop();
    let kinds = [
        Kind { name: "event", fields: vec![FLOW, SKLOOKUP_EVENT], required: true },
        kind("sklookup_counts", &[SKLOOKUP_COUNTS], true),
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ];
    check("sklookup", &out, &kinds);
}

// `tracekit sockmap echo` (README "tracekit sockmap"): an event when a connection is spliced
// and when it closes (with the bytes echoed), the totals at exit.
const SOCKMAP_EVENT: Fields = &[("time_ns", UInt), ("cpu", UInt), ("event", Str), ("cookie", UInt)];
const SOCKMAP_COUNTS: Fields = &[("connections", UInt), ("bytes", UInt)];

#[test]
fn sockmap_tool() {
    if !require_root("schema::sockmap_tool") {
        return;
    }
    let ns = net::Netns::new("schemasm");
    let args = ["sockmap", "echo", "127.0.0.1:7", "--json"];
    let t = ns.run_in(|| Tracer::start(&args));
    net::tcp_connect(&ns, std::net::Ipv4Addr::LOCALHOST, 7, Duration::from_secs(3)).expect("echo on port 7");
    std::thread::sleep(Duration::from_millis(200));
    let out = t.stop();
    let kinds = [
        Kind { name: "event", fields: vec![FLOW, SOCKMAP_EVENT], required: true },
        kind("sockmap_counts", &[SOCKMAP_COUNTS], true),
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ];
    check("sockmap", &out, &kinds);
}

// `tracekit sockmap proxy` (README "tracekit sockmap"): `open` and `closed` per pair (with the
// upstream connection's local end and the bytes of each direction), `upstream_failed`, the totals.
const PROXY_EVENT: Fields = &[
    ("time_ns", UInt),
    ("cpu", UInt),
    ("event", Str),
    ("cookie", UInt),
    ("upstream_laddr", Str),
    ("upstream_lport", UInt),
    ("pipe_up", Any),
    ("pipe_down", Any),
];
const PROXY_COUNTS: Fields =
    &[("connections", UInt), ("bytes", UInt), ("bytes_up", UInt), ("bytes_down", UInt), ("upstream_failed", UInt)];

#[test]
fn sockmap_proxy_tool() {
    if !require_root("schema::sockmap_proxy_tool") {
        return;
    }
    let ns = net::Netns::new("schemasp");
    let up = net::tcp_listen(&ns, std::net::Ipv4Addr::LOCALHOST, 9000);
    let args = ["sockmap", "proxy", "127.0.0.1:7", "127.0.0.1:9000", "--json"];
    let t = ns.run_in(|| Tracer::start(&args));
    net::tcp_connect(&ns, std::net::Ipv4Addr::LOCALHOST, 7, Duration::from_secs(3)).expect("proxy on port 7");
    assert_eq!(up.accepted(), 1, "the echo went through the upstream");
    std::thread::sleep(Duration::from_millis(200));
    let out = t.stop();
    drop(up);
    let kinds = [
        Kind { name: "event", fields: vec![FLOW, PROXY_EVENT], required: true },
        kind("sockmap_counts", &[PROXY_COUNTS], true),
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ];
    check("sockmap proxy", &out, &kinds);
}

const SOCKBYPASS_EVENT: Fields = &[("time_ns", UInt), ("cpu", UInt), ("pid", UInt), ("comm", Str), ("event", Str)];
const SOCKBYPASS_COUNTS: Fields = &[
    ("sockets", UInt),
    ("pairs", UInt),
    ("closed", UInt),
    ("bytes", UInt),
    ("msgs", UInt),
    ("passed", UInt),
    ("full", UInt),
];

#[test]
fn sockbypass_tool() {
    if !require_root("schema::sockbypass_tool") {
        return;
    }
    let ns = net::Netns::new("schemabp");
    // One connection to itself in CMD's cgroup, 1000 bytes across; prints nothing (CMD shares
    // stdout with the JSON).
    const PAIR: &str = "import socket\nl = socket.socket()\nl.bind(('127.0.0.1', 0))\nl.listen()\n\
        c = socket.create_connection(l.getsockname())\ns, _ = l.accept()\nc.sendall(b'x' * 1000)\n\
        n = 0\nwhile n < 1000:\n    n += len(s.recv(2000))\nc.close()\ns.close()\n";
    // `-v` before CMD: `Tracer::start` appends its own after CMD.
    let args = ["sockmap", "bypass", "-v", "--json", "--", "ip", "netns", "exec", ns.name(), "python3", "-c", PAIR];
    let out = Tracer::start(&args).wait(Duration::from_secs(30));
    let kinds = [
        Kind { name: "event", fields: vec![FLOW, SOCKBYPASS_EVENT], required: true },
        kind("sockbypass_counts", &[SOCKBYPASS_COUNTS], true),
        kind("lost", &[LOST], false),
        kind("summary", &[SUMMARY], true),
    ];
    check("sockbypass", &out, &kinds);
    let events: Vec<Value> = out.stdout.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().any(|e| e["event"] == "bypassed" && e["peer_pid"].is_u64()), "{:?}", out.stdout);
    assert!(events.iter().any(|e| e["event"] == "closed" && e["bytes"] == 1000), "{:?}", out.stdout);
}
