//! The attach layer's other kinds (`runtime::attach`), exercised as a library: cgroup links on
//! child cgroups this file creates (listed, effective, gone after drop, refused next to an
//! exclusive legacy program), `TransientCgroup`, sk_lookup netns links in namespaces this file
//! creates, and sk_skb programs on a sockmap (link and legacy forms).

mod common;

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cgroup::cgroup2_root;
use common::net::{Netns as TestNs, load_trivial_prog};
use libbpf_rs::libbpf_sys as sys;
use serde_json::Value;
use tracekit::error::Error;
use tracekit::runtime::attach::{
    Netns, TransientCgroup, attach_cgroup, attach_sk_lookup, attach_sockmap, attach_sockmap_legacy,
};

fn prog_id(fd: BorrowedFd<'_>) -> u32 {
    let mut info = sys::bpf_prog_info::default();
    let mut len = size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: fd is an open program fd; info and len are valid for writes of len bytes.
    let rc = unsafe { sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    assert_eq!(rc, 0, "bpf_prog_get_info_by_fd");
    info.id
}

/// Program ids directly attached at `attach_type` on `target` (a cgroup, netns or map fd).
fn query(target: BorrowedFd<'_>, attach_type: sys::bpf_attach_type) -> Vec<u32> {
    let mut ids = [0u32; 64];
    let mut cnt = ids.len() as u32;
    let mut flags = 0u32;
    // SAFETY: target is an open fd; flags, ids and cnt are valid for writes, ids has room for
    // cnt entries.
    let rc = unsafe { sys::bpf_prog_query(target.as_raw_fd(), attach_type, 0, &mut flags, ids.as_mut_ptr(), &mut cnt) };
    assert_eq!(rc, 0, "bpf_prog_query: {}", io::Error::from_raw_os_error(-rc));
    ids[..cnt as usize].to_vec()
}

/// Waits up to 2 s for `cond` (links go away asynchronously after their last fd closes, and a
/// child another test thread forks holds copies of our fds until it execs).
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The error as the user sees it (message and hint), checked for the basics of STYLE §3.7.
fn msg_and_hint(e: &Error) -> String {
    let text = format!("{e}\nhint: {}", e.hint().unwrap_or_default());
    assert!(e.hint().is_some(), "every error has a hint: {text}");
    assert!(!e.to_string().ends_with('.'), "{text}");
    text
}

/// `bpftool -j cgroup show PATH`: (prog id, attach type) pairs.
fn bpftool_cgroup(path: &Path) -> Vec<(u64, String)> {
    let out = Command::new("bpftool").args(["-j", "cgroup", "show"]).arg(path).output().expect("run bpftool");
    assert!(out.status.success(), "bpftool cgroup show: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()));
    v.as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["id"].as_u64().unwrap_or(0), e["attach_type"].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn open(path: &Path) -> std::fs::File {
    std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn cgroup_skb(attach_type: sys::bpf_attach_type, ret: i32) -> OwnedFd {
    load_trivial_prog(sys::BPF_PROG_TYPE_CGROUP_SKB, attach_type, ret)
}

// ---------------------------------------------------------------------------------------------
// cgroup links

#[test]
fn cgroup_links_listed_then_gone() {
    if !common::require_root("cgroup_links_listed_then_gone") {
        return;
    }
    let cg = TransientCgroup::create(&cgroup2_root(), "links").unwrap();
    assert!(cg.path().starts_with(cgroup2_root()) && cg.path().is_dir());
    let ing = cgroup_skb(sys::BPF_CGROUP_INET_INGRESS, 1);
    let egr = cgroup_skb(sys::BPF_CGROUP_INET_EGRESS, 1);
    let (ing_id, egr_id) = (prog_id(ing.as_fd()), prog_id(egr.as_fd()));
    let a = attach_cgroup(ing.as_fd(), "tk_ing", cg.path(), sys::BPF_CGROUP_INET_INGRESS).unwrap();
    // Relative to the cgroup2 mount works too.
    let rel = cg.path().strip_prefix(cgroup2_root()).unwrap().to_path_buf();
    let b = attach_cgroup(egr.as_fd(), "tk_egr", &rel, sys::BPF_CGROUP_INET_EGRESS).unwrap();
    assert!(a.link_id().is_some() && b.link_id().is_some());
    assert!(
        a.describe().starts_with(&format!("cgroup link on {} (cgroup_inet_ingress), link id ", cg.path().display())),
        "{}",
        a.describe()
    );
    let shown = bpftool_cgroup(cg.path());
    assert!(
        shown.contains(&(u64::from(ing_id), "cgroup_inet_ingress".into()))
            || shown.contains(&(u64::from(ing_id), "ingress".into())),
        "{shown:?}"
    );
    assert!(shown.iter().any(|(id, _)| *id == u64::from(egr_id)), "{shown:?}");
    let link = a.link_id().unwrap();
    drop(a);
    drop(b);
    assert!(eventually(|| bpftool_cgroup(cg.path()).is_empty()), "still attached: {:?}", bpftool_cgroup(cg.path()));
    // SAFETY: plain syscall wrapper; a negative result means the link is gone.
    let fd = unsafe { sys::bpf_link_get_fd_by_id(link) };
    if fd >= 0 {
        // SAFETY: fd was just returned to us and is closed once.
        unsafe { libc::close(fd) };
    }
    assert!(fd < 0, "link {link} still exists after drop");
    cg.remove().unwrap();
}

/// Sends one datagram to 127.0.0.1:`port` in `ns` from a shell moved into `cg` (with
/// `add_pid`) before it makes its socket. Returns whether the send succeeded.
fn send_from_cgroup(cg: &TransientCgroup, ns: &TestNs, port: u16) -> bool {
    let script = format!(
        "read _go; exec ip netns exec {} bash -c 'echo tracekit >/dev/udp/127.0.0.1/{port}' 2>/dev/null",
        ns.name()
    );
    let mut child =
        Command::new("sh").args(["-c", &script]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn sh");
    cg.add_pid(child.id()).unwrap();
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    let rel = cg.path().strip_prefix(cgroup2_root()).unwrap();
    assert!(own.lines().any(|l| l == format!("0::/{}", rel.display())), "{own}");
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    child.wait().expect("wait for sh").success()
}

fn received(sock: &UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    matches!(sock.recv(&mut buf), Ok(n) if &buf[..n] == b"tracekit\n")
}

#[test]
fn cgroup_skb_egress_drop_stops_a_send_until_detached() {
    if !common::require_root("cgroup_skb_egress_drop_stops_a_send_until_detached") {
        return;
    }
    let ns = TestNs::new("cgdrop");
    let sock = ns.run_in(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let cg = TransientCgroup::create(&cgroup2_root(), "drop").unwrap();

    assert!(send_from_cgroup(&cg, &ns, port), "send without a program");
    assert!(received(&sock), "the datagram arrives without a program");

    let drop_all = cgroup_skb(sys::BPF_CGROUP_INET_EGRESS, 0);
    let att = attach_cgroup(drop_all.as_fd(), "tk_drop", cg.path(), sys::BPF_CGROUP_INET_EGRESS).unwrap();
    // An egress drop fails the send with EPERM.
    assert!(!send_from_cgroup(&cg, &ns, port), "send with the drop program");
    assert!(!received(&sock), "the datagram is dropped");

    att.detach().unwrap();
    assert!(eventually(|| bpftool_cgroup(cg.path()).is_empty()), "still attached");
    assert!(send_from_cgroup(&cg, &ns, port), "send after detach");
    assert!(received(&sock), "the datagram arrives after detach");
}

#[test]
fn cgroup_bad_paths() {
    if !common::require_root("cgroup_bad_paths") {
        return;
    }
    let root = cgroup2_root();
    let prog = cgroup_skb(sys::BPF_CGROUP_INET_EGRESS, 1);
    let t = sys::BPF_CGROUP_INET_EGRESS;

    let e = attach_cgroup(prog.as_fd(), "tk", Path::new("/tmp"), t).unwrap_err();
    let text = msg_and_hint(&e);
    assert!(matches!(e, Error::Usage { .. }), "{text}");
    assert!(text.contains("`/tmp` is not a cgroup v2 directory"), "{text}");
    assert!(text.contains(&format!("cgroup2 is mounted at `{}`", root.display())), "{text}");

    // A cgroup v1 hierarchy, where this host has one.
    if let Some(v1) = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory"]
        .into_iter()
        .find(|p| Path::new(p).is_dir() && !Path::new(p).starts_with(&root))
    {
        let e = attach_cgroup(prog.as_fd(), "tk", Path::new(v1), t).unwrap_err();
        let text = msg_and_hint(&e);
        assert!(text.contains("(a cgroup v1 directory)"), "{text}");
    }

    let e = attach_cgroup(prog.as_fd(), "tk", Path::new("no-such-tk-cgroup"), t).unwrap_err();
    let text = msg_and_hint(&e);
    assert!(text.contains(&format!("cgroup `{}` not found", root.join("no-such-tk-cgroup").display())), "{text}");

    // A program of the wrong type.
    let xdp = load_trivial_prog(sys::BPF_PROG_TYPE_XDP, sys::BPF_XDP, 2);
    let cg = TransientCgroup::create(&root, "badtype").unwrap();
    let e = attach_cgroup(xdp.as_fd(), "tk_xdp", cg.path(), t).unwrap_err();
    let text = msg_and_hint(&e);
    assert!(text.contains("does not fit `cgroup_inet_egress`"), "{text}");
}

#[test]
fn cgroup_link_refused_next_to_an_exclusive_program() {
    if !common::require_root("cgroup_link_refused_next_to_an_exclusive_program") {
        return;
    }
    let t = sys::BPF_CGROUP_INET_INGRESS;
    let cg = TransientCgroup::create(&cgroup2_root(), "excl").unwrap();
    let child = TransientCgroup::create(cg.path(), "below").unwrap();
    let legacy = cgroup_skb(t, 1);
    let legacy_id = prog_id(legacy.as_fd());
    let dir = open(cg.path());
    // SAFETY: both fds are open; flags 0 = exclusive (no other program on this cgroup or below).
    let rc = unsafe { sys::bpf_prog_attach(legacy.as_raw_fd(), dir.as_raw_fd(), t, 0) };
    assert_eq!(rc, 0, "bpf_prog_attach: {}", io::Error::from_raw_os_error(-rc));

    let ours = cgroup_skb(t, 1);
    let e = attach_cgroup(ours.as_fd(), "tk_ours", cg.path(), t).unwrap_err();
    let text = msg_and_hint(&e);
    assert!(
        text.contains(&format!(
            "this cgroup has an exclusive legacy program id {legacy_id} `tk_fixture`, which allows no other program there"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("`bpftool cgroup detach {} ingress id {legacy_id}`", cg.path().display())),
        "{text}"
    );

    let e = attach_cgroup(ours.as_fd(), "tk_ours", child.path(), t).unwrap_err();
    let text = msg_and_hint(&e);
    assert!(
        text.contains(&format!(
            "its ancestor `{}` has an exclusive legacy program id {legacy_id}",
            cg.path().display()
        )),
        "{text}"
    );

    // SAFETY: both fds are open; detaches the program attached above.
    let rc = unsafe { sys::bpf_prog_detach2(legacy.as_raw_fd(), dir.as_raw_fd(), t) };
    assert_eq!(rc, 0);
    let att = attach_cgroup(ours.as_fd(), "tk_ours", child.path(), t).unwrap();
    assert!(att.link_id().is_some());
    drop(att);
    let below = child.path().to_path_buf();
    drop(child);
    assert!(!below.exists(), "{} still exists", below.display());
}

#[test]
fn transient_cgroup_removed_with_a_task_inside() {
    if !common::require_root("transient_cgroup_removed_with_a_task_inside") {
        return;
    }
    let root = cgroup2_root();
    let cg = TransientCgroup::create(&root, "sleep 30/x").unwrap();
    let name = cg.path().file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("tracekit-sleep_30_x-{}-", std::process::id())), "{name}");
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let pid = sleeper.id();
    cg.add_pid(pid).unwrap();
    let procs = std::fs::read_to_string(cg.path().join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    // A cgroup the command made below ours goes too.
    std::fs::create_dir(cg.path().join("made-by-cmd")).unwrap();

    let e = cg.add_pid(u32::MAX / 2).unwrap_err();
    assert!(msg_and_hint(&e).contains("no process with pid"), "{e}");

    let path = cg.path().to_path_buf();
    drop(cg);
    assert!(!path.exists(), "{} still exists", path.display());
    let now = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(!now.contains(&name), "{now}");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    let e = TransientCgroup::create(Path::new("/tmp"), "x").unwrap_err();
    assert!(msg_and_hint(&e).contains("not a cgroup v2 directory"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// sk_lookup

fn link_exists(id: u32) -> bool {
    // SAFETY: plain syscall wrapper; the fd is closed right away.
    let fd = unsafe { sys::bpf_link_get_fd_by_id(id) };
    if fd >= 0 {
        // SAFETY: fd was just returned to us and is closed once.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

fn link_type(id: u32) -> u32 {
    // SAFETY: plain syscall wrapper; the fd is owned below.
    let fd = unsafe { sys::bpf_link_get_fd_by_id(id) };
    assert!(fd >= 0, "link {id}");
    // SAFETY: fd is a new link fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: bpf_link_info is plain data; all zero is valid.
    let mut info: sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<sys::bpf_link_info>() as u32;
    // SAFETY: fd is an open link fd; info and len are valid for writes of len bytes.
    let rc = unsafe { sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    assert_eq!(rc, 0);
    info.type_
}

#[test]
fn sk_lookup_link_in_a_netns() {
    if !common::require_root("sk_lookup_link_in_a_netns") {
        return;
    }
    let ns = TestNs::new("sklk");
    let netns = Netns::resolve(Some(ns.name())).unwrap();
    let listener = ns.run_in(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
    let addr: SocketAddr = listener.local_addr().unwrap();
    let connect = || ns.run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
    assert!(connect(), "connect without a program");

    // SK_DROP (0): every lookup in the namespace finds no socket.
    let prog = load_trivial_prog(sys::BPF_PROG_TYPE_SK_LOOKUP, sys::BPF_SK_LOOKUP, 0);
    let id = prog_id(prog.as_fd());
    let att = attach_sk_lookup(prog.as_fd(), "tk_sklk", &netns).unwrap();
    let link = att.link_id().expect("a link id");
    assert_eq!(link_type(link), sys::BPF_LINK_TYPE_NETNS);
    assert!(
        att.describe().starts_with(&format!("sk_lookup link in netns {}, link id", ns.name())),
        "{}",
        att.describe()
    );
    let nsfd = ns.open();
    assert_eq!(query(nsfd.as_fd(), sys::BPF_SK_LOOKUP), vec![id]);
    assert!(!connect(), "connect with an SK_DROP sk_lookup program");

    drop(att);
    assert!(eventually(|| !link_exists(link)), "link {link} after drop");
    assert!(query(nsfd.as_fd(), sys::BPF_SK_LOOKUP).is_empty());
    assert!(connect(), "connect after detach");

    // Not an sk_lookup program.
    let xdp = load_trivial_prog(sys::BPF_PROG_TYPE_XDP, sys::BPF_XDP, 2);
    let e = attach_sk_lookup(xdp.as_fd(), "tk_xdp", &netns).unwrap_err();
    let text = msg_and_hint(&e);
    assert!(text.contains("`BPF_PROG_TYPE_SK_LOOKUP`"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// sockmap

fn sockmap() -> OwnedFd {
    // SAFETY: the name is NUL-terminated; NULL opts are allowed.
    let fd = unsafe {
        sys::bpf_map_create(sys::BPF_MAP_TYPE_SOCKMAP, c"tk_test_sockmap".as_ptr(), 4, 4, 2, std::ptr::null())
    };
    assert!(fd >= 0, "bpf_map_create: {}", io::Error::from_raw_os_error(-fd));
    // SAFETY: fd is a new map fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn verdict_prog() -> OwnedFd {
    // SK_PASS = 1.
    load_trivial_prog(sys::BPF_PROG_TYPE_SK_SKB, sys::BPF_SK_SKB_STREAM_VERDICT, 1)
}

#[test]
fn sockmap_link_form() {
    if !common::require_root("sockmap_link_form") {
        return;
    }
    let t = sys::BPF_SK_SKB_STREAM_VERDICT;
    let map = sockmap();
    let prog = verdict_prog();
    let id = prog_id(prog.as_fd());
    let att = attach_sockmap(prog.as_fd(), "tk_verdict", map.as_fd(), t).unwrap();
    let link = att.link_id().expect("this kernel (6.10+) has sockmap links");
    assert_eq!(link_type(link), sys::BPF_LINK_TYPE_SOCKMAP);
    assert!(att.describe().contains("`tk_test_sockmap` (sk_skb_stream_verdict), link id"), "{}", att.describe());
    assert_eq!(query(map.as_fd(), t), vec![id]);

    // A second program at the same attach type is refused, naming the first.
    let other = verdict_prog();
    let e = attach_sockmap(other.as_fd(), "tk_other", map.as_fd(), t).unwrap_err();
    let text = msg_and_hint(&e);
    assert!(text.contains(&format!("has program id {id} `tk_fixture`")), "{text}");
    let e = attach_sockmap_legacy(other.as_fd(), "tk_other", map.as_fd(), t).unwrap_err();
    assert!(msg_and_hint(&e).contains(&format!("program id {id}")), "{e}");

    drop(att);
    assert!(eventually(|| query(map.as_fd(), t).is_empty()), "attached after drop");
    assert!(eventually(|| !link_exists(link)));
}

#[test]
fn sockmap_legacy_form() {
    if !common::require_root("sockmap_legacy_form") {
        return;
    }
    let t = sys::BPF_SK_SKB_STREAM_VERDICT;
    let map = sockmap();
    let prog = verdict_prog();
    let id = prog_id(prog.as_fd());
    let att = attach_sockmap_legacy(prog.as_fd(), "tk_verdict", map.as_fd(), t).unwrap();
    assert_eq!(att.link_id(), None);
    assert!(att.describe().contains("legacy bpf_prog_attach"), "{}", att.describe());
    assert_eq!(query(map.as_fd(), t), vec![id]);

    // The kernel would replace it silently; the attach layer refuses.
    let other = verdict_prog();
    let e = attach_sockmap_legacy(other.as_fd(), "tk_other", map.as_fd(), t).unwrap_err();
    let text = msg_and_hint(&e);
    assert!(
        text.contains("cannot attach `tk_other`: map id") && text.contains(&format!("has program id {id}")),
        "{text}"
    );
    assert_eq!(query(map.as_fd(), t), vec![id]);

    // Dropping detaches at once (no fd to wait for).
    drop(att);
    assert!(query(map.as_fd(), t).is_empty(), "attached after drop");

    // detach() reports; attaching again works.
    let att = attach_sockmap_legacy(prog.as_fd(), "tk_verdict", map.as_fd(), t).unwrap();
    att.detach().unwrap();
    assert!(query(map.as_fd(), t).is_empty());
}
