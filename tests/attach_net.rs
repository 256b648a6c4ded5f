//! The attach layer for packet programs (`runtime::attach`), exercised as a library inside
//! network namespaces this file creates: XDP links in each mode and their conflicts, tcx links,
//! the legacy clsact filter with its guard and sweep, packet sockets, and `--netns` resolution.

mod common;

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use libbpf_rs::libbpf_sys;
use serde_json::Value;
use tracekit::error::Error;
use tracekit::runtime::attach::{
    Iface, Netns, TcBackend, TcDir, XdpMode, attach_packet_socket, attach_tc, attach_xdp, iface_name,
};

// ---------------------------------------------------------------------------------------------
// Fixtures: namespaces and a veth pair, removed on drop (also on panic).

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run a command");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn must(args: &[&str]) -> String {
    let (ok, text) = sh(args);
    assert!(ok, "`{}` failed: {text}", args.join(" "));
    text
}

/// A network namespace `tkat-<pid>-<n>` with `lo` up.
struct Ns {
    name: String,
}

impl Ns {
    fn new() -> Ns {
        let name = format!("tkat-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        must(&["ip", "netns", "add", &name]);
        let ns = Ns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; panics when it fails.
    fn run(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        must(&full)
    }

    fn netns(&self) -> Netns {
        Netns::resolve(Some(&self.name)).expect("resolve the test namespace")
    }

    /// `bpftool -j net show dev DEV` inside the namespace.
    fn bpf_net(&self, dev: &str) -> Value {
        let out = self.run(&["bpftool", "-j", "net", "show", "dev", dev]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bpftool json: {e}: {out}"));
        v[0].clone()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "delete", &self.name]);
    }
}

/// Two namespaces joined by a veth pair: `tkv-a` in `a`, `tkv-b` in `b`, both up.
struct Pair {
    a: Ns,
    b: Ns,
}

impl Pair {
    fn new() -> Pair {
        let p = Pair { a: Ns::new(), b: Ns::new() };
        must(&[
            "ip", "link", "add", "tkv-a", "netns", &p.a.name, "type", "veth", "peer", "name", "tkv-b", "netns",
            &p.b.name,
        ]);
        p.a.run(&["ip", "link", "set", "tkv-a", "up"]);
        p.b.run(&["ip", "link", "set", "tkv-b", "up"]);
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Programs from raw instructions: `r0 = RET; exit`.

fn load(prog_type: libbpf_sys::bpf_prog_type, ret: i32, name: &CStr) -> OwnedFd {
    let mov = libbpf_sys::bpf_insn {
        code: (libbpf_sys::BPF_ALU64 | libbpf_sys::BPF_MOV | libbpf_sys::BPF_K) as u8,
        imm: ret,
        ..Default::default()
    };
    let exit = libbpf_sys::bpf_insn { code: (libbpf_sys::BPF_JMP | libbpf_sys::BPF_EXIT) as u8, ..Default::default() };
    let insns = [mov, exit];
    // SAFETY: insns outlive the call; name and license are NUL-terminated; NULL opts are allowed.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(prog_type, name.as_ptr(), c"GPL".as_ptr(), insns.as_ptr(), 2, std::ptr::null_mut())
    };
    assert!(fd >= 0, "loading {name:?}: {}", std::io::Error::from_raw_os_error(-fd));
    // SAFETY: fd is a new program fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn xdp_prog(name: &CStr) -> OwnedFd {
    load(libbpf_sys::BPF_PROG_TYPE_XDP, 2, name) // XDP_PASS
}

fn tc_prog(name: &CStr) -> OwnedFd {
    load(libbpf_sys::BPF_PROG_TYPE_SCHED_CLS, -1, name) // TC_ACT_UNSPEC / TCX_NEXT
}

fn prog_id(fd: &OwnedFd) -> u32 {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info and len are valid for writes of len bytes.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    assert_eq!(rc, 0);
    info.id
}

/// Waits up to a second for `cond`. A child that another test thread forks holds copies of our
/// fds until it execs, so a link or socket may outlive its drop by that long.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..50 {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

/// Whether any process holds an fd of program `id` (/proc/*/fdinfo).
fn held(id: u32) -> bool {
    let want = format!("prog_id:\t{id}\n");
    std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        std::fs::read_dir(p.path().join("fdinfo"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_to_string(fd.path()).is_ok_and(|t| t.contains(&want)))
    })
}

/// The error as the user sees it (message and hint), checked for the basics of STYLE §3.7.
fn msg_and_hint(e: &Error) -> String {
    let text = format!("{e}\nhint: {}", e.hint().unwrap_or_default());
    assert!(e.hint().is_some(), "every error has a hint: {text}");
    assert!(!text.contains("  ") && !e.to_string().ends_with('.'), "{text}");
    text
}

fn xdp_entries(ns: &Ns, dev: &str) -> Vec<Value> {
    ns.bpf_net(dev)["xdp"].as_array().cloned().unwrap_or_default()
}

fn tc_entries(ns: &Ns, dev: &str) -> Vec<Value> {
    ns.bpf_net(dev)["tc"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// XDP

#[test]
fn xdp_skb_native_and_auto_modes_in_a_namespace() {
    if !common::require_root("xdp_skb_native_and_auto_modes_in_a_namespace") {
        return;
    }
    let p = Pair::new();
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).expect("tkv-a in a");
    let prog = xdp_prog(c"tk_xdp_modes");
    let id = prog_id(&prog);

    for (asked, bpftool_mode, want) in [
        (XdpMode::Skb, "generic", XdpMode::Skb),
        (XdpMode::Native, "driver", XdpMode::Native),
        (XdpMode::Auto, "driver", XdpMode::Native),
    ] {
        let (att, mode) = attach_xdp(prog.as_fd(), "tk_xdp_modes", &iface, &ns, asked).expect("attach xdp");
        assert_eq!(mode, want, "{asked:?}");
        let link = att.link_id().expect("an xdp link has an id");
        assert_eq!(
            att.describe(),
            format!("xdp link on tkv-a in netns {} ({} mode), link id {link}", p.a.name, want.as_str())
        );
        let xdp = xdp_entries(&p.a, "tkv-a");
        assert_eq!(xdp.len(), 1, "{xdp:?}");
        assert_eq!(xdp[0]["mode"], bpftool_mode, "{xdp:?}");
        assert_eq!(xdp[0]["id"], id, "{xdp:?}");
        let link_show = p.a.run(&["ip", "-d", "link", "show", "tkv-a"]);
        assert!(link_show.contains(&format!("id {id}")), "{link_show}");
        drop(att);
        assert!(eventually(|| xdp_entries(&p.a, "tkv-a").is_empty()), "left after drop ({asked:?})");
    }
    // The peer, in the other namespace, never had anything.
    assert!(xdp_entries(&p.b, "tkv-b").is_empty());
}

#[test]
fn xdp_native_on_lo_is_a_clear_usage_error() {
    if !common::require_root("xdp_native_on_lo_is_a_clear_usage_error") {
        return;
    }
    let n = Ns::new();
    let ns = n.netns();
    let lo = Iface::resolve("lo", &ns).unwrap();
    let prog = xdp_prog(c"tk_xdp_lo");
    let err = attach_xdp(prog.as_fd(), "tk_xdp_lo", &lo, &ns, XdpMode::Native).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err:?}");
    let text = msg_and_hint(&err);
    assert!(text.contains("`lo` has no native XDP"), "{text}");
    assert!(text.contains("--mode skb"), "{text}");
    // skb and auto work on lo.
    let (att, mode) = attach_xdp(prog.as_fd(), "tk_xdp_lo", &lo, &ns, XdpMode::Auto).unwrap();
    assert_eq!(mode, XdpMode::Skb);
    drop(att);
    assert!(eventually(|| xdp_entries(&n, "lo").is_empty()));
}

#[test]
fn xdp_second_attach_names_the_first_link() {
    if !common::require_root("xdp_second_attach_names_the_first_link") {
        return;
    }
    let p = Pair::new();
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).unwrap();
    let first = xdp_prog(c"tk_xdp_first");
    let second = xdp_prog(c"tk_xdp_second");
    let (att, _) = attach_xdp(first.as_fd(), "tk_xdp_first", &iface, &ns, XdpMode::Native).unwrap();
    let link = att.link_id().unwrap();
    for mode in [XdpMode::Native, XdpMode::Auto, XdpMode::Skb] {
        let err = attach_xdp(second.as_fd(), "tk_xdp_second", &iface, &ns, mode).unwrap_err();
        let text = msg_and_hint(&err);
        assert!(text.contains(&format!("XDP program id {}", prog_id(&first))), "{mode:?}: {text}");
        assert!(text.contains("`tk_xdp_first`"), "{text}");
        assert!(text.contains("in native mode"), "{text}");
        assert!(text.contains(&format!("through link {link}")), "{text}");
        assert!(text.contains(&format!("held by pid {}", std::process::id())), "{text}");
        assert!(text.contains(&format!("ip netns exec {} bpftool net show dev tkv-a", p.a.name)), "{text}");
    }
    drop(att);
    assert!(eventually(|| xdp_entries(&p.a, "tkv-a").is_empty()));
}

#[test]
fn xdp_conflict_with_a_netlink_attachment_names_it() {
    if !common::require_root("xdp_conflict_with_a_netlink_attachment_names_it") {
        return;
    }
    let p = Pair::new();
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).unwrap();
    let other = xdp_prog(c"tk_xdp_netlink");
    {
        let _in = ns.enter().unwrap();
        // SAFETY: the prog fd is open; NULL opts are allowed.
        let rc = unsafe {
            libbpf_sys::bpf_xdp_attach(
                iface.index as i32,
                other.as_raw_fd(),
                libbpf_sys::XDP_FLAGS_SKB_MODE,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "bpf_xdp_attach");
    }
    let ours = xdp_prog(c"tk_xdp_ours");
    for mode in [XdpMode::Auto, XdpMode::Skb, XdpMode::Native] {
        let err = attach_xdp(ours.as_fd(), "tk_xdp_ours", &iface, &ns, mode).unwrap_err();
        let text = msg_and_hint(&err);
        assert!(text.contains(&format!("XDP program id {} `tk_xdp_netlink` in skb mode", prog_id(&other))), "{text}");
        assert!(text.contains("through netlink"), "{text}");
        assert!(text.contains(&format!("`ip netns exec {} ip link set dev tkv-a xdpgeneric off`", p.a.name)), "{text}");
    }
    // Removed as the hint says, the next attach works.
    p.a.run(&["ip", "link", "set", "dev", "tkv-a", "xdpgeneric", "off"]);
    let (att, _) = attach_xdp(ours.as_fd(), "tk_xdp_ours", &iface, &ns, XdpMode::Auto).unwrap();
    drop(att);
    assert!(eventually(|| xdp_entries(&p.a, "tkv-a").is_empty()));
}

// ---------------------------------------------------------------------------------------------
// TC

#[test]
fn tcx_ingress_and_egress() {
    if !common::require_root("tcx_ingress_and_egress") {
        return;
    }
    let p = Pair::new();
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).unwrap();
    let prog = tc_prog(c"tk_tcx");
    if !common::net::kernel_has_tcx() {
        // Expected before 6.6: asking for tcx is refused with the reason and the fallback.
        let err = attach_tc(prog.as_fd(), "tk_tcx", &iface, &ns, TcDir::Ingress, TcBackend::Tcx)
            .expect_err("tcx refused on a kernel without tcx");
        assert!(matches!(&err, Error::Unsupported { feature, .. } if *feature == "tcx"), "{err:?}");
        let why = format!("kernel {} has no tcx links (6.6+); checked the refusal only", common::net::kernel_release());
        common::skip("attach_net::tcx_ingress_and_egress", &why);
        return;
    }
    let ingress = attach_tc(prog.as_fd(), "tk_tcx", &iface, &ns, TcDir::Ingress, TcBackend::Tcx).unwrap();
    let egress = attach_tc(prog.as_fd(), "tk_tcx", &iface, &ns, TcDir::Egress, TcBackend::Auto).unwrap();
    assert!(ingress.describe().starts_with("tcx link on tkv-a ingress in netns"), "{}", ingress.describe());
    assert!(egress.describe().starts_with("tcx link on tkv-a egress"), "{}", egress.describe());
    assert!(ingress.link_id().is_some() && egress.link_id().is_some());
    // bpftool 7.1 does not list tcx links yet: ask the kernel about each link.
    let pid = prog_id(&prog);
    for (att, want) in [(&ingress, libbpf_sys::BPF_TCX_INGRESS), (&egress, libbpf_sys::BPF_TCX_EGRESS)] {
        let info = link_info(att.link_id().unwrap()).expect("the link exists");
        assert_eq!(info.type_, libbpf_sys::BPF_LINK_TYPE_TCX);
        assert_eq!(info.prog_id, pid);
        // SAFETY: the tcx member is the one the kernel fills for BPF_LINK_TYPE_TCX.
        let tcx = unsafe { info.__bindgen_anon_1.tcx };
        assert_eq!((tcx.ifindex, tcx.attach_type), (iface.index, want));
    }
    let ids = [ingress.link_id().unwrap(), egress.link_id().unwrap()];
    drop(ingress);
    drop(egress);
    for id in ids {
        assert!(eventually(|| link_info(id).is_none()), "link {id} left after drop");
    }
    assert!(tc_entries(&p.a, "tkv-a").is_empty());
}

fn link_info(id: u32) -> Option<libbpf_sys::bpf_link_info> {
    // SAFETY: plain syscall wrapper; the fd is owned below.
    let fd = unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a new link fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: bpf_link_info is plain data; all zero is valid.
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: info and len are valid for writes of len bytes.
    let rc = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (rc == 0).then_some(info)
}

fn filters(ns: &Ns, dir: &str) -> String {
    ns.run(&["tc", "filter", "show", "dev", "tkv-a", dir])
}

fn has_clsact(ns: &Ns) -> bool {
    ns.run(&["tc", "qdisc", "show", "dev", "tkv-a"]).contains("clsact")
}

#[test]
fn clsact_filter_is_removed_with_the_qdisc_tracekit_created() {
    if !common::require_root("clsact_filter_is_removed_with_the_qdisc_tracekit_created") {
        return;
    }
    let p = Pair::new();
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).unwrap();
    let prog = tc_prog(c"tk_cls");
    let ingress = attach_tc(prog.as_fd(), "tk_cls", &iface, &ns, TcDir::Ingress, TcBackend::Clsact).unwrap();
    let egress = attach_tc(prog.as_fd(), "tk_cls", &iface, &ns, TcDir::Egress, TcBackend::Clsact).unwrap();
    assert!(ingress.describe().contains("clsact created by tracekit"), "{}", ingress.describe());
    assert!(ingress.link_id().is_none() && ingress.notes().is_empty());
    for dir in ["ingress", "egress"] {
        let f = filters(&p.a, dir);
        assert!(f.contains("handle 0x746b") && f.contains("pref 29803") && f.contains("direct-action"), "{f}");
    }
    assert!(has_clsact(&p.a));
    // The first guard finds the egress filter still there: the qdisc stays.
    drop(ingress);
    assert!(!filters(&p.a, "ingress").contains("0x746b"));
    assert!(has_clsact(&p.a));
    egress.detach().expect("explicit detach");
    assert!(!filters(&p.a, "egress").contains("0x746b"));
    assert!(!has_clsact(&p.a), "the qdisc tracekit created stays");
    assert!(tc_entries(&p.a, "tkv-a").is_empty());
}

#[test]
fn clsact_qdisc_that_was_there_stays() {
    if !common::require_root("clsact_qdisc_that_was_there_stays") {
        return;
    }
    let p = Pair::new();
    p.a.run(&["tc", "qdisc", "add", "dev", "tkv-a", "clsact"]);
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).unwrap();
    let prog = tc_prog(c"tk_cls_keep");
    let att = attach_tc(prog.as_fd(), "tk_cls_keep", &iface, &ns, TcDir::Ingress, TcBackend::Clsact).unwrap();
    assert!(!att.describe().contains("created by tracekit"), "{}", att.describe());
    assert!(filters(&p.a, "ingress").contains("0x746b"));
    // Dropped on another thread, outside the namespace: the guard enters it itself.
    std::thread::spawn(move || drop(att)).join().unwrap();
    assert!(!filters(&p.a, "ingress").contains("0x746b"));
    assert!(has_clsact(&p.a), "a qdisc tracekit did not create is not tracekit's to remove");
}

#[test]
fn clsact_sweep_removes_the_filter_of_a_killed_tracekit() {
    if !common::require_root("clsact_sweep_removes_the_filter_of_a_killed_tracekit") {
        return;
    }
    let p = Pair::new();
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).unwrap();
    let old = tc_prog(c"tk_cls_old");
    let old_id = prog_id(&old);
    let att = attach_tc(old.as_fd(), "tk_cls_old", &iface, &ns, TcDir::Ingress, TcBackend::Clsact).unwrap();
    // A SIGKILL: no guard runs, and no fd of the program survives.
    std::mem::forget(att);
    drop(old);
    assert!(eventually(|| !held(old_id)), "an fd of program {old_id} survives");
    assert!(filters(&p.a, "ingress").contains(&format!("id {old_id}")));

    let new = tc_prog(c"tk_cls_new");
    let att = attach_tc(new.as_fd(), "tk_cls_new", &iface, &ns, TcDir::Ingress, TcBackend::Clsact).unwrap();
    assert_eq!(att.notes().len(), 1, "{:?}", att.notes());
    let note = &att.notes()[0];
    assert!(note.starts_with("removed a stale tc filter on `tkv-a` ingress"), "{note}");
    assert!(
        note.contains(&format!("program id {old_id} `tk_cls_old`")) && note.ends_with("left by a killed tracekit"),
        "{note}"
    );
    let f = filters(&p.a, "ingress");
    assert!(f.contains(&format!("id {}", prog_id(&new))) && !f.contains(&format!("id {old_id} ")), "{f}");
    // The qdisc held only the stale filter: taken as the killed tracekit's, removed at exit.
    drop(att);
    assert!(!has_clsact(&p.a));
}

#[test]
fn clsact_refuses_to_sweep_a_live_tracekit() {
    if !common::require_root("clsact_refuses_to_sweep_a_live_tracekit") {
        return;
    }
    let p = Pair::new();
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).unwrap();
    let live = tc_prog(c"tk_cls_live");
    let live_id = prog_id(&live);
    let att = attach_tc(live.as_fd(), "tk_cls_live", &iface, &ns, TcDir::Ingress, TcBackend::Clsact).unwrap();
    let other = tc_prog(c"tk_cls_other");

    // This process holds the program: one tracekit filter per interface and direction.
    let err = attach_tc(other.as_fd(), "tk_cls_other", &iface, &ns, TcDir::Ingress, TcBackend::Clsact).unwrap_err();
    let text = msg_and_hint(&err);
    assert!(
        text.contains(&format!("tracekit has a tc filter on `tkv-a` ingress in netns {} already", p.a.name)),
        "{text}"
    );

    // Another process holds it (a child given the fd as its fd 200), and this one lets go.
    let raw = live.as_raw_fd();
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    // SAFETY: dup2 is async-signal-safe; it only gives the child a copy of the fd without CLOEXEC.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || if libc::dup2(raw, 200) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let mut holder = cmd.spawn().expect("spawn sleep");
    drop(live);
    assert!(eventually(|| held(live_id)));
    let err = attach_tc(other.as_fd(), "tk_cls_other", &iface, &ns, TcDir::Ingress, TcBackend::Clsact).unwrap_err();
    let text = msg_and_hint(&err);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        text.contains(&format!(
            "another tracekit is attached to `tkv-a` ingress in netns {} (pid {} `sleep`, program id {live_id})",
            p.a.name,
            holder.id()
        )),
        "{text}"
    );
    assert!(text.contains("handle 0x746b pref 29803"), "{text}");
    // The live one is untouched, and egress is free.
    assert!(filters(&p.a, "ingress").contains(&format!("id {live_id}")));
    let eg = attach_tc(other.as_fd(), "tk_cls_other", &iface, &ns, TcDir::Egress, TcBackend::Clsact).unwrap();
    drop(eg);
    drop(att);
    assert!(!filters(&p.a, "ingress").contains("0x746b"));
    assert!(!has_clsact(&p.a));
}

// ---------------------------------------------------------------------------------------------
// Packet sockets

#[test]
fn packet_socket_on_one_interface_and_on_all() {
    if !common::require_root("packet_socket_on_one_interface_and_on_all") {
        return;
    }
    let p = Pair::new();
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).unwrap();
    let prog = load(libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER, 0, c"tk_sockf");
    let one = attach_packet_socket(prog.as_fd(), Some(&iface), &ns).unwrap();
    let all = attach_packet_socket(prog.as_fd(), None, &ns).unwrap();
    assert_eq!(one.describe(), format!("packet socket on `tkv-a` in netns {}", p.a.name));
    assert_eq!(all.describe(), format!("packet socket on all interfaces in netns {}", p.a.name));
    // /proc/net/packet of the namespace: columns sk RefCnt Type Proto Iface R Rmem User Inode.
    let rows: Vec<Vec<String>> =
        p.a.run(&["cat", "/proc/net/packet"])
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect();
    let ifaces: Vec<&str> = rows.iter().map(|r| r[4].as_str()).collect();
    assert!(ifaces.contains(&iface.index.to_string().as_str()) && ifaces.contains(&"0"), "{rows:?}");
    assert!(rows.iter().all(|r| r[3] == "0003"), "bound to ETH_P_ALL: {rows:?}");
    drop(one);
    drop(all);
    // Closed with the fd. (A child another test thread forks at that moment holds a copy of
    // our fds until it execs, so allow a moment.)
    let mut left = String::new();
    for _ in 0..50 {
        left = p.a.run(&["cat", "/proc/net/packet"]);
        if left.lines().count() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(left.lines().count(), 1, "sockets left: {left}");
}

// ---------------------------------------------------------------------------------------------
// Namespaces and interfaces

fn ino(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn netns_resolves_names_paths_and_pids() {
    if !common::require_root("netns_resolves_names_paths_and_pids") {
        return;
    }
    let n = Ns::new();
    let by_name = n.netns();
    assert_eq!(by_name.inode, ino(&format!("/run/netns/{}", n.name)));
    assert_eq!(by_name.label(), n.name);
    let by_path = Netns::resolve(Some(&format!("/run/netns/{}", n.name))).unwrap();
    assert_eq!(by_path.inode, by_name.inode);
    let current = Netns::resolve(None).unwrap();
    assert_eq!(current.inode, ino("/proc/self/ns/net"));
    assert_eq!(current.label(), "current");
    let pid = std::process::id().to_string();
    let by_pid = Netns::resolve(Some(&pid)).unwrap();
    assert_eq!(by_pid.inode, current.inode);
    assert_eq!(by_pid.label(), format!("pid {pid}"));

    // enter() moves this thread only, and back on drop; entering the current one is a no-op.
    {
        let _in = by_name.enter().unwrap();
        assert_eq!(ino("/proc/thread-self/ns/net"), by_name.inode);
        assert!(by_name.is_current_thread());
        let _again = by_name.enter().unwrap();
    }
    assert_eq!(ino("/proc/thread-self/ns/net"), current.inode);
    drop(current.enter().unwrap());
    assert_eq!(ino("/proc/thread-self/ns/net"), current.inode);
}

#[test]
fn netns_errors_say_what_exists() {
    if !common::require_root("netns_errors_say_what_exists") {
        return;
    }
    let n = Ns::new();
    let err = Netns::resolve(Some("tk-no-such-ns")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let text = msg_and_hint(&err);
    assert!(text.contains("network namespace `tk-no-such-ns` not found in /run/netns"), "{text}");
    assert!(text.contains(&format!("`{}`", n.name)), "lists the names: {text}");

    let err = Netns::resolve(Some("3999999999")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(msg_and_hint(&err).contains("no process with pid 3999999999"), "{}", msg_and_hint(&err));

    let err = Netns::resolve(Some("/proc/self/ns/mnt")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("is not a network namespace (a mount namespace)"), "{err}");

    let err = Netns::resolve(Some("/etc/hostname")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("`/etc/hostname` is not a network namespace"), "{err}");

    // A name whose bind mount is gone (an `ip netns` entry after a crash) is an empty file.
    let stale = format!("tkat-{}-stale", std::process::id());
    let stale_path = format!("/run/netns/{stale}");
    std::fs::write(&stale_path, b"").unwrap();
    let err = Netns::resolve(Some(&stale)).unwrap_err();
    let _ = std::fs::remove_file(&stale_path);
    let text = msg_and_hint(&err);
    assert!(text.contains("(an empty file)") && text.contains(&format!("`ip netns delete {stale}`")), "{text}");

    let err = Netns::resolve(Some("/no/such/file")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn iface_errors_list_interfaces_and_point_to_the_namespace() {
    if !common::require_root("iface_errors_list_interfaces_and_point_to_the_namespace") {
        return;
    }
    let p = Pair::new();
    let a = p.a.netns();
    let iface = Iface::resolve("tkv-a", &a).unwrap();
    assert_eq!(iface_name(iface.index, &a).as_deref(), Some("tkv-a"));
    assert_eq!(iface_name(1, &a).as_deref(), Some("lo"));

    let err = Iface::resolve("tk-nope", &a).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let text = msg_and_hint(&err);
    assert!(text.contains(&format!("no interface `tk-nope` in netns {}", p.a.name)), "{text}");
    assert!(text.contains("`lo`, `tkv-a`"), "{text}");

    // tkv-b lives in b, not a: the hint names b.
    let err = Iface::resolve("tkv-b", &a).unwrap_err();
    let text = msg_and_hint(&err);
    // (Other tests' namespaces may have a `tkv-b` too: then all are listed.)
    let named = text.contains(&format!("pass `--netns {}`", p.b.name))
        || (text.contains(&format!("`{}`", p.b.name)) && text.contains("pass `--netns NAME`"));
    assert!(named, "{text}");

    let err = Iface::resolve("much-too-long-name", &a).unwrap_err();
    assert!(err.to_string().contains("not a valid interface name"), "{err}");
}

#[test]
fn clsact_guard_cleans_up_after_the_namespace_name_is_deleted() {
    if !common::require_root("clsact_guard_cleans_up_after_the_namespace_name_is_deleted") {
        return;
    }
    let p = Pair::new();
    let ns = p.a.netns();
    let iface = Iface::resolve("tkv-a", &ns).unwrap();
    let prog = tc_prog(c"tk_cls_gone");
    let att = attach_tc(prog.as_fd(), "tk_cls_gone", &iface, &ns, TcDir::Egress, TcBackend::Clsact).unwrap();
    // `ip netns delete` only removes the name: the namespace lives on while tracekit holds it,
    // and the guard still finds its filter and qdisc there.
    must(&["ip", "netns", "delete", &p.a.name]);
    {
        let _in = ns.enter().unwrap();
        let out = must(&["tc", "filter", "show", "dev", "tkv-a", "egress"]);
        assert!(out.contains("0x746b"), "{out}");
    }
    att.detach().expect("detach in a namespace without a name");
    let _in = ns.enter().unwrap();
    assert!(!must(&["tc", "qdisc", "show", "dev", "tkv-a"]).contains("clsact"));
}
