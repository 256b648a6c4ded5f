//! The kernel matrix: the root test suites of the tracing tools (tcpstate, uprobe, kprobe,
//! tracepoint, profile, rawtp, count) and of the packet tools (xdp, tc, sockfilter, net_cleanup,
//! attach_net, netfixtures, pkt_parse, pcap_filter, cgroup, forward), tcpcc_watch, and tcpcc_load
//! (one test at a time: the algorithm names it registers are global to the kernel) run inside
//! QEMU on Debian's stock 5.10, 6.1 and 6.12 kernels (the host kernel runs them natively as the
//! other test targets). One test per kernel;
//! they take turns, since each VM wants both cores.

mod vm;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use vm::Kernel;

/// Suites run in every guest: the test targets of the same names, built by this `cargo test`, with
/// their test threads. The tracing suites share the root namespace's probes and run one test at a
/// time; the packet suites own their namespaces and run two at a time (the guest has two vCPUs,
/// which halves their time under TCG). Not here: `cases` (the bad-input table checks arguments and
/// messages, which do not change with the kernel; it runs on the host only).
const SUITES: &[(&str, u32)] = &[
    ("tcpstate", 1),
    ("uprobe", 1),
    ("kprobe", 1),
    ("tracepoint", 1),
    ("profile", 1),
    ("rawtp", 1),
    ("count", 1),
    ("xdp", 2),
    ("tc", 2),
    ("sockfilter", 2),
    ("net_cleanup", 2),
    ("attach_net", 2),
    ("netfixtures", 2),
    ("pkt_parse", 2),
    ("pcap_filter", 2),
    ("cgroup", 2),
    ("forward", 2),
    ("tcpcc_watch", 2),
    ("tcpcc_load", 1),
    ("sockops", 2),
    ("sklookup", 2),
    ("sockmap", 2),
    ("sockmap_proxy", 2),
    ("sockbypass", 2),
];
/// A hang guard, not an expected time: with every suite a TCG guest took 997 s (5.10, one test
/// at a time) before the forward suite added about 250 s there.
const GUEST_TIMEOUT: Duration = Duration::from_secs(2400);

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The newest sibling test executable named `NAME-<hash>` (what this `cargo test` just built).
fn test_binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let deps = me.parent().unwrap();
    let prefix = format!("{name}-");
    std::fs::read_dir(deps)
        .unwrap()
        .flatten()
        .filter(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            f.strip_prefix(&prefix).is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .unwrap_or_else(|| panic!("test executable `{name}` not found beside {}", me.display()))
}

/// (passed, failed) summed over every "test result:" line.
fn counts(output: &str) -> (u64, u64) {
    let mut sum = (0, 0);
    for line in output.lines().filter(|l| l.starts_with("test result:")) {
        let num = |word: &str| -> u64 {
            line.split(';')
                .find_map(|part| {
                    part.trim()
                        .trim_start_matches("test result: ok.")
                        .trim_start_matches("test result: FAILED.")
                        .trim()
                        .strip_suffix(word)
                })
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        sum.0 += num("passed");
        sum.1 += num("failed");
    }
    sum
}

fn matrix_row(kernel: Kernel) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var_os("CI").is_some() {
            panic!("the VM matrix needs root, and CI must run it as root");
        }
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIP vm {}: needs root", kernel.label());
        return;
    }
    let _turn = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut script = String::from("tracekit=$TRACEKIT_BIN\necho '== tracekit probe'\n$tracekit probe\nrc=0\n");
    for (suite, threads) in SUITES {
        // 5.10 runs the packet suites one test at a time: there a native XDP attach or detach
        // rewrites the XDP dispatcher's code (6.2 moved it to static calls), and one test's
        // attach while another's flood runs XDP on the other vCPU left that vCPU looping in
        // bpf_dispatcher_xdp_func (soft lockup, RCU stall; reproduced in the 5.10 guest with
        // tests/xdp.rs at two threads on the first run). One thread never overlaps an attach with
        // another test's traffic.
        let threads = if matches!(kernel, Kernel::Bullseye510) { 1 } else { *threads };
        script.push_str(&format!(
            "echo '== {suite}'\ns=$(date +%s)\n'{}' --test-threads={threads} 2>&1 || rc=1\necho \"== {suite} took $(( $(date +%s) - s )) s\"\n",
            test_binary(suite).display()
        ));
    }
    script.push_str("exit $rc\n");
    let env = [("TRACEKIT_BIN", env!("CARGO_BIN_EXE_tracekit").to_owned()), ("RUST_BACKTRACE", "1".to_owned())];
    let mut run = vm::run(kernel, &script, &env, GUEST_TIMEOUT);
    if run.emulator_int3() {
        // Not a test's failure and not tracekit's: said on stderr, and the row runs once more
        // (a second one fails the row as any panic does).
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "vm kernel {}: the guest kernel died of an int3 trap at a patch site of its own text after {:.1} s \
             (a jump label half-patched under QEMU's multi-threaded TCG; vm/mod.rs emulator_int3): running the row again",
            kernel.label(),
            run.elapsed.as_secs_f64()
        );
        run = vm::run(kernel, &script, &env, GUEST_TIMEOUT);
    }
    let (passed, failed) = counts(&run.stdout);
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "vm kernel {:<26} {passed:>3} passed, {failed} failed, {:.1} s",
        kernel.label(),
        run.elapsed.as_secs_f64()
    );
    if let Some(why) = run.failure() {
        panic!("vm {}: {why}\nstdout:\n{}\nstderr:\n{}", kernel.label(), run.stdout, run.stderr);
    }
    assert!(
        run.status == Some(0) && failed == 0 && passed > 0,
        "vm {}: exit {:?}, {passed} passed, {failed} failed\n{}\n{}",
        kernel.label(),
        run.status,
        run.stdout,
        run.stderr
    );
    // In a stock kernel, kprobes work: `tracekit probe` must say so.
    let kprobe = run.stdout.lines().find(|l| l.starts_with("kprobe ")).unwrap_or_default();
    assert!(kprobe.contains("supported") && !kprobe.contains("unsupported"), "vm {}: {kprobe}", kernel.label());
}

#[test]
fn vm_kernel_5_10() {
    matrix_row(Kernel::Bullseye510);
}

#[test]
fn vm_kernel_6_1() {
    matrix_row(Kernel::Bookworm61);
}

#[test]
fn vm_kernel_6_12() {
    matrix_row(Kernel::Bookworm612);
}

#[test]
fn counts_sum_every_result_line() {
    let out = "test result: ok. 6 passed; 0 failed; 0 ignored;\nx\ntest result: FAILED. 3 passed; 2 failed; 1 ignored;";
    assert_eq!(counts(out), (9, 2));
}

#[test]
fn only_an_emulated_guests_int3_oops_runs_the_row_again() {
    let run = |console: &str, accelerated| vm::GuestRun {
        status: None,
        stdout: String::new(),
        stderr: String::new(),
        console: console.to_owned(),
        elapsed: Duration::ZERO,
        accelerated,
    };
    let int3 = "[ 37.45] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[ 37.46] RIP: 0010:__schedule+0x407/0xbf0\n\
                [ 37.47] Kernel panic - not syncing: Fatal exception in interrupt";
    assert!(run(int3, false).emulator_int3());
    assert!(!run(int3, true).emulator_int3(), "under KVM an int3 oops is the kernel's own");
    let bug = "[ 9.1] BUG: kernel NULL pointer dereference\n[ 9.2] Oops: int3\n[ 9.3] Kernel panic - not syncing";
    assert!(!run(bug, false).emulator_int3(), "only when the int3 is the first report");
    assert!(!run("[ 1.0] Oops: int3: 0000 [#1]", false).emulator_int3(), "no panic, no rerun");
}

/// For developers: `TRACEKIT_VM_KERNEL=6.1 TRACEKIT_VM_SCRIPT='tracekit probe' cargo test --test
/// vm_matrix vm_script -- --ignored --nocapture` runs a script in one guest and prints its output.
#[test]
#[ignore = "developer tool: runs $TRACEKIT_VM_SCRIPT in a guest"]
fn vm_script() {
    let script = std::env::var("TRACEKIT_VM_SCRIPT").expect("set TRACEKIT_VM_SCRIPT");
    let kernel = match std::env::var("TRACEKIT_VM_KERNEL").as_deref() {
        Ok("5.10") => Kernel::Bullseye510,
        Ok("6.12") => Kernel::Bookworm612,
        _ => Kernel::Bookworm61,
    };
    let script = format!("tracekit() {{ \"$TRACEKIT_BIN\" \"$@\"; }}\n{script}");
    let env = [("TRACEKIT_BIN", env!("CARGO_BIN_EXE_tracekit").to_owned())];
    let run = vm::run(kernel, &script, &env, GUEST_TIMEOUT);
    println!(
        "{}\n--- stderr\n{}\n--- status {:?}, {:.1} s",
        run.stdout,
        run.stderr,
        run.status,
        run.elapsed.as_secs_f64()
    );
    if let Some(why) = run.failure() {
        panic!("{why}");
    }
}
