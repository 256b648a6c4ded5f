//! `tracekit tcpcc watch` end to end: bulk TCP transfers the test makes over a veth pair between
//! two namespaces it creates, with the congestion control set on the sending socket, losses made
//! with `tracekit xdp --drop-every` on the receiver, and the `--plot` chart parsed back.
//!
//! tcp_probe is global (every namespace), and every VethPair has the same addresses: each test
//! listens on a port of its own, below the ephemeral range, and filters on it.

mod common;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::net::{self, VethPair};
use common::{Finished, Tracer, require_root};
use serde_json::Value;

const BULK: usize = 8 << 20;

/// What the sender paces itself to (SO_MAX_PACING_RATE, bytes/s): a bare veth moves 8 MiB in a
/// few milliseconds, too fast to be sampled more than once or twice; paced, a transfer lasts a
/// few hundred milliseconds on every kernel.
const PACING: u32 = 50_000_000;

/// A 200 Mbit/s bottleneck with a 20 ms queue on the sender's side (tbf on its veth), below the
/// pacing rate: cwnd grows into the queue and srtt shows it, as on a real path. Kernels without
/// sch_tbf (the VM matrix's guests load no modules) keep the pacing alone.
fn bottleneck(pair: &VethPair) {
    let tbf =
        ["tc", "qdisc", "add", "dev", pair.if_a, "root", "tbf", "rate", "200mbit", "burst", "32kb", "latency", "20ms"];
    let out = pair.a.exec(&tbf);
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let _ = writeln!(io::stderr(), "note: no tbf bottleneck ({}): the sender's pacing only", why.trim());
    }
}

/// `tracekit xdp --drop-every N` on the receiver's veth: every Nth TCP data segment to `port`
/// is dropped before the receiver's stack sees it (the dropped ones are printed as NDJSON).
fn drop_every(pair: &VethPair, port: u16, n: u32) -> Tracer {
    let (p, n) = (port.to_string(), n.to_string());
    let args = ["xdp", pair.if_b, "--netns", pair.b.name(), "--json", "--drop-every", &n];
    let filter = ["tcp", "dst", "port", &p, "and", "greater", "100"];
    Tracer::start(&[&args[..], &filter[..]].concat())
}

/// Root, then a veth pair of its own (with the bottleneck) for the test `name`.
fn fixture(name: &str, tag: &str) -> Option<VethPair> {
    if !require_root(&format!("tcpcc_watch::{name}")) {
        return None;
    }
    let pair = VethPair::new(tag);
    bottleneck(&pair);
    Some(pair)
}

fn watch(extra: &[&str]) -> Tracer {
    let mut args = vec!["tcpcc", "watch"];
    args.extend_from_slice(extra);
    Tracer::start(&args)
}

/// Stops a tracer (SIGINT) after the last ACKs had time to be delivered.
fn stop(t: Tracer) -> Finished {
    thread::sleep(Duration::from_millis(300));
    let out = t.stop();
    assert!(out.status.success(), "tracekit failed: {}", out.stderr);
    out
}

/// Samples per flow (`laddr:lport>raddr:rport`), each in the order received.
fn flows(events: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut by: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in events {
        let key = format!("{}:{}>{}:{}", e["laddr"], e["lport"], e["raddr"], e["rport"]).replace('"', "");
        by.entry(key).or_default().push(e);
    }
    by
}

fn sender_key(pair: &VethPair, lport: u16, port: u16) -> String {
    format!("{}:{lport}>{}:{port}", pair.ip4_a, pair.ip4_b)
}

fn u(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("`{field}` is not a number in {v}"))
}

#[test]
fn samples_each_flow_with_its_algorithm() {
    let Some(pair) = fixture("samples_each_flow_with_its_algorithm", "tcw1") else { return };
    const PORT: u16 = 19301;
    let p = PORT.to_string();
    let both = watch(&["--json", "--port", &p]);
    let senders = watch(&["--json", "-D", &p, "--host", "10.200.0.0/24"]);
    let receivers = watch(&["--json", "-L", &p]);
    let none = watch(&["--json", "--port", &p, "-6"]);
    let cubic = net::bulk_transfer(&pair, PORT, "cubic", BULK, PACING);
    let reno = net::bulk_transfer(&pair, PORT, "reno", BULK, PACING);

    let out = stop(both);
    let events = out.events();
    let by = flows(&events);
    for (lport, cc) in [(cubic, "cubic"), (reno, "reno")] {
        let key = sender_key(&pair, lport, PORT);
        let s = by.get(&key).unwrap_or_else(|| panic!("no samples of {key}; flows: {:?}", by.keys()));
        assert!(s.len() >= 2, "{key}: {} samples", s.len());
        for e in s {
            assert_eq!(e["family"], "ipv4", "{e}");
            assert_eq!(e["algo"], cc, "{e}");
            assert!(u(e, "cwnd") > 0, "{e}");
            let srtt = u(e, "srtt_us");
            assert!(srtt > 0 && srtt < 1_000_000, "srtt {srtt} µs is not plausible: {e}");
            assert!(u(e, "mss") >= 500 && u(e, "mss") <= 1500, "{e}");
            assert!(["Open", "Disorder", "CWR", "Recovery", "Loss"].contains(&e["ca_state"].as_str().unwrap()), "{e}");
            assert!(e["skaddr"].as_str().is_some_and(|s| s.starts_with("0x")), "{e}");
            assert!(e["pid"].is_null(), "softirq samples name no task: {e}");
        }
        let times: Vec<u64> = s.iter().map(|e| u(e, "time_ns")).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{key}: samples out of order: {times:?}");
        let last = s.last().unwrap();
        assert!(u(last, "bytes_acked") > BULK as u64 / 2, "{key}: {last}");
    }
    // The receiving ends are flows too: their own congestion state, the bytes coming in.
    let rx = by.get(&format!("{}:{PORT}>{}:{cubic}", pair.ip4_b, pair.ip4_a)).expect("the cubic receiver's samples");
    assert!(u(rx.last().unwrap(), "bytes_received") > BULK as u64 / 2, "{:?}", rx.last());
    assert!(out.summary()["lost"] == 0, "{}", out.summary());

    // The filters, in the kernel: each tracer saw only its side.
    let senders = stop(senders).events();
    assert!(!senders.is_empty());
    assert!(senders.iter().all(|e| e["rport"] == PORT), "-D {PORT}: {senders:?}");
    let receivers = stop(receivers).events();
    assert!(!receivers.is_empty());
    assert!(receivers.iter().all(|e| e["lport"] == PORT), "-L {PORT}: {receivers:?}");
    let none = stop(none).events();
    assert!(none.is_empty(), "-6 on IPv4 flows: {none:?}");
}

/// Charts worth looking at are kept in target/tmp (the README's example is one of them).
fn kept_plot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn cwnd_falls_at_the_losses_xdp_makes() {
    if !require_root("tcpcc_watch::cwnd_falls_at_the_losses_xdp_makes") {
        return;
    }
    let pair = VethPair::new("tcw2");
    const PORT: u16 = 19302;
    let p = PORT.to_string();
    // Every 50th data segment to the receiver is dropped before its stack sees it.
    let xdp = drop_every(&pair, PORT, 50);
    let plot = kept_plot("tcpcc-watch-loss.svg");
    let _ = std::fs::remove_file(&plot);
    let t = watch(&["--json", "-D", &p, "--plot", plot.to_str().unwrap()]);
    let lport = net::bulk_transfer(&pair, PORT, "cubic", 4 * BULK, PACING);
    let out = stop(t);
    let dropped = xdp.stop();
    assert!(dropped.status.success(), "{}", dropped.stderr);
    assert!(dropped.stdout.iter().any(|l| l.contains("\"verdict\":\"drop\"")), "no drop: {:?}", dropped.stdout);

    let events = out.events();
    let by = flows(&events);
    let key = sender_key(&pair, lport, PORT);
    let s = by.get(&key).unwrap_or_else(|| panic!("no samples of {key}; flows: {:?}", by.keys()));
    let last = s.last().unwrap();
    assert!(u(last, "total_retrans") > 0, "the drops were retransmitted: {last}");
    // A fall of cwnd while the sender reacts to a loss: in Recovery or Loss, or with ssthresh
    // set by the loss.
    let falls: Vec<(u64, u64, &Value)> = s
        .windows(2)
        .filter(|w| u(w[1], "cwnd") < u(w[0], "cwnd"))
        .filter(|w| w[1]["ca_state"] == "Recovery" || w[1]["ca_state"] == "Loss" || !w[1]["ssthresh"].is_null())
        .map(|w| (u(w[0], "cwnd"), u(w[1], "cwnd"), w[1]))
        .collect();
    assert!(
        !falls.is_empty(),
        "no sample shows cwnd falling at a loss; cwnd/state: {:?}",
        s.iter().map(|e| format!("{}/{}", e["cwnd"], e["ca_state"])).collect::<Vec<_>>()
    );
    assert!(s.iter().any(|e| e["ca_state"] == "Recovery" || e["ca_state"] == "Loss"), "never in Recovery or Loss");
    let series = svg_series(&plot);
    assert_eq!(series.len(), 1, "one flow, one line per panel: {series:?}");
    pair.assert_clean();
}

/// A parsed --plot chart: for each legend label (a flow), the number of panels that draw it.
/// A flow's line is a polyline of width 2 in its color with more than the legend's two points.
fn svg_series(path: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let labels: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .filter(|t| t.contains(" → "))
        .map(str::to_owned)
        .collect();
    let lines: Vec<(String, usize)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
        .map(|n| {
            let points = n.attribute("points").unwrap_or("").split_whitespace().count();
            (n.attribute("stroke").unwrap_or("").to_owned(), points)
        })
        .collect();
    let mut per_label = BTreeMap::new();
    for label in &labels {
        *per_label.entry(label.clone()).or_insert(0) += 1;
    }
    // Two panels: every flow is in both legends, and every color draws one line in each.
    let mut colors: BTreeMap<&str, usize> = BTreeMap::new();
    for (color, points) in &lines {
        if *points > 2 {
            *colors.entry(color).or_insert(0) += 1;
        }
    }
    assert_eq!(colors.len(), per_label.len(), "one color per flow: {colors:?} vs {per_label:?}");
    assert!(colors.values().all(|&n| n == 2), "a line per panel: {colors:?}");
    per_label
}

#[test]
fn plot_on_interrupt_has_a_line_per_flow_and_the_table_fits() {
    let Some(pair) = fixture("plot_on_interrupt_has_a_line_per_flow_and_the_table_fits", "tcw3") else { return };
    const PORT: u16 = 19303;
    let p = PORT.to_string();
    let plot = kept_plot("tcpcc-watch-two-flows.svg");
    let _ = std::fs::remove_file(&plot);
    // A data segment in 300 lost on the way: cubic and reno react differently.
    let xdp = drop_every(&pair, PORT, 300);
    let t = watch(&["-D", &p, "-i", "0.2", "--plot", plot.to_str().unwrap()]);
    let server = net::bulk_sink(&pair.b, pair.ip4_b, PORT, 2);
    let to = SocketAddr::from((pair.ip4_b, PORT));
    let senders: Vec<JoinHandle<u16>> = ["cubic", "reno"]
        .into_iter()
        .map(|cc| pair.a.spawn_in(move || net::bulk_send(to, cc, 2 * BULK, PACING)))
        .collect();
    let lports: Vec<u16> = senders.into_iter().map(|h| h.join().expect("sender")).collect();
    server.join().expect("receiver");
    thread::sleep(Duration::from_millis(500));
    let out = stop(t);

    drop(xdp);
    let series = svg_series(&plot);
    assert_eq!(series.len(), 2, "two flows, two lines per panel: {series:?}");
    for (lport, cc) in lports.iter().zip(["cubic", "reno"]) {
        let label = format!("{}:{lport} → {}:{PORT} {cc}", pair.ip4_a, pair.ip4_b);
        assert_eq!(series.get(&label), Some(&2), "{label} in both legends: {series:?}");
    }
    assert!(out.stderr.contains("plot of 2 flows written to"), "{}", out.stderr);

    // The table: a header, a row per flow with its algorithm, nothing past 80 columns.
    assert!(out.stdout.iter().any(|l| l.starts_with("LPORT RADDR:RPORT")), "{:?}", out.stdout);
    for (lport, cc) in lports.iter().zip(["cubic", "reno"]) {
        let row = out.stdout.iter().find(|l| l.starts_with(&format!("{lport} ")));
        let row = row.unwrap_or_else(|| panic!("no row for {lport}: {:?}", out.stdout));
        assert!(row.contains(&format!("{}:{PORT}", pair.ip4_b)) && row.contains(cc), "{row}");
    }
    let wide: Vec<&String> = out.stdout.iter().filter(|l| l.chars().count() > 80).collect();
    assert!(wide.is_empty(), "lines past 80 columns: {wide:?}");
}

#[test]
fn plot_at_the_end_of_duration_and_none_without_samples() {
    let Some(pair) = fixture("plot_at_the_end_of_duration_and_none_without_samples", "tcw4") else { return };
    const PORT: u16 = 19304;
    let p = PORT.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let plot = dir.path().join("one.svg");
    let t = watch(&["--json", "-D", &p, "-d", "3", "--plot", plot.to_str().unwrap()]);
    let lport = net::bulk_transfer(&pair, PORT, "reno", BULK, PACING);
    let out = t.wait(Duration::from_secs(20));
    assert!(out.status.success(), "{}", out.stderr);
    let series = svg_series(&plot);
    let label = format!("{}:{lport} → {}:{PORT} reno", pair.ip4_a, pair.ip4_b);
    assert_eq!(series.keys().collect::<Vec<_>>(), [&label], "{series:?}");

    // No traffic: no chart, and it says so; a file it did not create is not left behind.
    let empty = dir.path().join("empty.svg");
    let out = common::run(&["tcpcc", "watch", "-D", "19399", "-d", "0.5", "--plot", empty.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("no samples"), "{}", out.stderr);
    assert!(!empty.exists(), "an empty chart was left at {}", empty.display());
}
