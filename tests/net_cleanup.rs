//! One conformance test per attach kind of the packet tools: attach in a namespace, make
//! traffic, end tracekit each of the six ways, and check that nothing of it is left: no
//! program, link or map in the kernel, no XDP/TC attachment in the namespace.

mod common;

use std::time::Duration;

use common::net::{self, VethPair};
use common::{Exit, Tracer, assert_released};

const EXITS: [Exit; 6] = [Exit::Interrupt, Exit::Terminate, Exit::Duration, Exit::Count, Exit::ClosedPipe, Exit::Kill];

fn traffic(pair: &VethPair) {
    net::udp_send(&pair.a, pair.ip4_a, pair.ip4_b, 7200, 3).expect("udp");
}

/// Runs `tool` in the pair's second namespace and ends it the way `exit` says.
fn run_and_end(pair: &VethPair, tool: &[&str], exit: Exit) -> Tracer {
    let mut args: Vec<&str> = tool.to_vec();
    args.extend(["--netns", pair.b.name(), "--json"]);
    match exit {
        Exit::Duration => args.extend(["-d", "0.5"]),
        Exit::Count => args.extend(["-n", "1"]),
        _ => {}
    }
    let mut t = Tracer::start_opts(&args, !matches!(exit, Exit::ClosedPipe));
    match exit {
        Exit::Interrupt => {
            traffic(pair);
            t.signal(libc::SIGINT);
        }
        Exit::Terminate => {
            traffic(pair);
            t.signal(libc::SIGTERM);
        }
        Exit::Duration | Exit::Count => traffic(pair),
        Exit::ClosedPipe => {
            drop(t.stdout_raw.take());
            traffic(pair);
        }
        Exit::Kill => {
            traffic(pair);
            t.signal(libc::SIGKILL);
        }
    }
    t
}

fn conformance(tag: &str, tool: &[&str]) {
    let pair = VethPair::new(tag);
    for exit in EXITS {
        let t = run_and_end(&pair, tool, exit);
        let ids = t.ids.clone();
        let out = t.wait(Duration::from_secs(10));
        exit.assert_status(&out, &format!("{tool:?}"));
        let legacy_tc = tool.contains(&"clsact");
        if matches!(exit, Exit::Kill) && legacy_tc {
            // A clsact filter is not owned by a descriptor: it outlives a SIGKILL, and the
            // next start removes it.
            assert!(!net::leftovers(&pair.b).is_empty(), "the killed tracekit's filter is still there");
            let again = Tracer::start(&[tool, &["--netns", pair.b.name(), "--json"]].concat());
            let again_ids = again.ids.clone();
            let out = again.stop();
            assert!(out.stderr.contains("removed a stale tc filter"), "the sweep says so: {}", out.stderr);
            assert_released(&again_ids, "the run after the sweep");
        }
        assert_released(&ids, &format!("{tool:?} after {exit:?}"));
        net::assert_clean(&pair.b);
    }
}

#[test]
fn xdp_leaves_nothing() {
    if common::require_root("net_cleanup::xdp_leaves_nothing") {
        conformance("cxdp", &["xdp", "tkv1"]);
    }
}

#[test]
fn tc_tcx_leaves_nothing() {
    if common::require_root("net_cleanup::tc_tcx_leaves_nothing") {
        if !net::kernel_has_tcx() {
            // Expected: tcx links came in 6.6; the clsact test covers these kernels.
            common::skip(
                "net_cleanup::tc_tcx_leaves_nothing",
                &format!("kernel {} has no tcx links (6.6+)", net::kernel_release()),
            );
            return;
        }
        conformance("ctcx", &["tc", "tkv1", "--backend", "tcx"]);
    }
}

#[test]
fn tc_clsact_leaves_nothing() {
    if common::require_root("net_cleanup::tc_clsact_leaves_nothing") {
        conformance("ccls", &["tc", "tkv1", "--backend", "clsact"]);
    }
}

#[test]
fn sockfilter_leaves_nothing() {
    if common::require_root("net_cleanup::sockfilter_leaves_nothing") {
        conformance("csock", &["sockfilter", "tkv1"]);
    }
}
