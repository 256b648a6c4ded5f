//! The kernel-matrix runner: boots stock Debian kernels under QEMU with the host's root file
//! system shared read-only over 9p (writes go to a tmpfs overlay), runs one command inside,
//! and returns its exit status and output. See shared VM facts in the README ("Kernel matrix").
//!
//! Kernels come from Debian's archive (`apt-get download`, unpacked with `dpkg-deb -x`) and are
//! cached in `$TRACEKIT_VM_CACHE` (default `~/.cache/tracekit-vm`), outside the source tree.
//! Debian builds virtio and 9p as modules, so a tiny busybox initramfs loads them first.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian kernels of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// bullseye's 5.10: no fentry on some configs, no attach cookies: exercises fallbacks.
    Bullseye510,
    /// bookworm's 6.1 LTS.
    Bookworm61,
    /// bookworm-backports' 6.12 LTS (in bookworm's own index).
    Bookworm612,
}

const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "9pnet",
    "9pnet_virtio",
    "netfs",
    "fscache",
    "9p",
    "overlay",
    // The packet tools' suites: veth pairs, clsact (sch_ingress), tc's `bpf` and `u32` filters,
    // a tun device (an interface without Ethernet headers).
    "veth",
    "sch_ingress",
    "cls_bpf",
    "cls_u32",
    "tun",
    // tcpcc: loss and delay on a veth (netem), and the kernel's vegas to compare tk_vegas with.
    "sch_netem",
    "tcp_vegas",
];

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRACEKIT_VM_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    base.join("tracekit-vm")
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::piped()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host tools the runner needs, or a panic naming the package that brings them.
pub fn check_host_tools() {
    for (tool, pkg) in
        [("qemu-system-x86_64", "qemu-system-x86"), ("cpio", "cpio"), ("dpkg-deb", "dpkg"), ("apt-get", "apt")]
    {
        let found =
            Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
        assert!(found, "VM matrix: `{tool}` not found; install it: apt-get install -y --no-install-recommends {pkg}");
    }
    assert!(
        is_static_elf(Path::new("/bin/busybox")),
        "VM matrix: /bin/busybox is missing or not static; install it: apt-get install -y busybox-static"
    );
}

/// An ELF executable without a program interpreter (runs in the initramfs without a libc).
fn is_static_elf(path: &Path) -> bool {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let Ok(data) = fs::read(path) else { return false };
    let Ok(elf) = ElfFile64::<object::Endianness>::parse(&*data) else { return false };
    let endian = elf.endian();
    !elf.elf_program_headers().iter().any(|ph| ph.p_type(endian) == object::elf::PT_INTERP)
}

impl Kernel {
    pub const ALL: [Kernel; 3] = [Kernel::Bullseye510, Kernel::Bookworm61, Kernel::Bookworm612];

    pub fn label(self) -> &'static str {
        match self {
            Kernel::Bullseye510 => "5.10 (bullseye)",
            Kernel::Bookworm61 => "6.1 (bookworm)",
            Kernel::Bookworm612 => "6.12 (bookworm-backports)",
        }
    }

    /// The kernel version as (major, minor), for "expected exactly when >= X" checks.
    pub fn version(self) -> (u32, u32) {
        match self {
            Kernel::Bullseye510 => (5, 10),
            Kernel::Bookworm61 => (6, 1),
            Kernel::Bookworm612 => (6, 12),
        }
    }

    /// apt options for this kernel's index: the machine's own for bookworm, a private
    /// configuration for bullseye (so the machine's apt setup stays untouched).
    fn apt_opts(self) -> Vec<String> {
        let mut o = vec!["-q".to_owned(), "-o".to_owned(), "APT::Sandbox::User=root".to_owned()];
        if self == Kernel::Bullseye510 {
            let d = cache_dir().join("apt-bullseye");
            for (k, v) in [
                ("Dir::Etc::sourcelist", d.join("sources.list")),
                ("Dir::Etc::sourceparts", PathBuf::from("-")),
                ("Dir::State::Lists", d.join("lists")),
                ("Dir::Cache", d.join("cache")),
            ] {
                o.push("-o".into());
                o.push(format!("{k}={}", v.display()));
            }
        }
        o
    }

    fn prepare_bullseye_index() {
        let d = cache_dir().join("apt-bullseye");
        fs::create_dir_all(d.join("lists/partial")).unwrap();
        fs::create_dir_all(d.join("cache/archives/partial")).unwrap();
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        fs::write(
            d.join("sources.list"),
            format!(
                "deb [signed-by={keyring}] http://deb.debian.org/debian bullseye main\n\
                 deb [signed-by={keyring}] http://deb.debian.org/debian-security bullseye-security main\n"
            ),
        )
        .unwrap();
        let stamp = d.join("lists/.updated");
        if !stamp.exists() {
            sh(Command::new("apt-get").args(Kernel::Bullseye510.apt_opts()).arg("update"));
            fs::write(stamp, "").unwrap();
        }
    }

    /// The newest generic (not cloud: no 9p there) unsigned image package in the index.
    fn package(self) -> String {
        if self == Kernel::Bullseye510 {
            Kernel::prepare_bullseye_index();
        }
        let pattern = match self {
            Kernel::Bullseye510 => r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$",
            Kernel::Bookworm61 => r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
            Kernel::Bookworm612 => r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$",
        };
        let out = sh(Command::new("apt-cache").args(self.apt_opts()).args(["search", "--names-only", pattern]));
        let mut names: Vec<String> =
            out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
        names.sort_by_key(|n| version_key(n));
        names.pop().unwrap_or_else(|| {
            panic!("VM matrix: no package matches {pattern}; run `apt-get update` (a stale index lists no kernels)")
        })
    }

    /// Fetches and unpacks the kernel once; later calls reuse the cache.
    pub fn fetch(self) -> PathBuf {
        let kernels = cache_dir().join("kernels");
        let label = format!("{self:?}");
        let pinned = kernels.join(format!("{label}.pkg"));
        if let Ok(pkg) = fs::read_to_string(&pinned) {
            let root = kernels.join(pkg.trim());
            if root.join(".complete").exists() {
                return root;
            }
        }
        let pkg = self.package();
        let root = kernels.join(&pkg);
        if !root.join(".complete").exists() {
            let debs = cache_dir().join("debs");
            fs::create_dir_all(&debs).unwrap();
            let have = |d: &Path| {
                fs::read_dir(d)
                    .unwrap()
                    .flatten()
                    .find(|e| e.file_name().to_string_lossy().starts_with(&format!("{pkg}_")))
            };
            if have(&debs).is_none() {
                sh(Command::new("apt-get").current_dir(&debs).args(self.apt_opts()).args(["download", &pkg]));
            }
            let deb = have(&debs).expect("downloaded .deb").path();
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
            fs::write(root.join(".complete"), "").unwrap();
        }
        fs::write(pinned, &pkg).unwrap();
        root
    }
}

/// `linux-image-6.12.117+deb12-...` sorts by its numbers.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or(0)).collect()
}

/// Module file contents, decompressed.
fn read_module(path: &Path) -> Vec<u8> {
    let name = path.to_string_lossy();
    let tool = [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")].into_iter().find(|(ext, _)| name.ends_with(ext));
    match tool {
        Some((_, tool)) => {
            let out = Command::new(tool).arg("-dc").arg(path).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
            assert!(out.status.success(), "{tool} -dc {name} failed");
            out.stdout
        }
        None => fs::read(path).unwrap(),
    }
}

/// Modules to load, dependencies first, with their decompressed contents.
fn modules(moddir: &Path) -> Vec<(String, Vec<u8>)> {
    let builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let is_builtin =
        |m: &str| builtin.lines().any(|l| l.rsplit('/').next().is_some_and(|f| f.split('.').next() == Some(m)));
    let mut files = BTreeMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(f) = p.file_name().and_then(|f| f.to_str())
                && let Some((stem, _)) = f.split_once(".ko")
            {
                files.insert(stem.replace('-', "_"), p.clone());
            }
        }
    }
    let mut order: Vec<(String, Vec<u8>)> = Vec::new();
    fn visit(
        m: &str,
        files: &BTreeMap<String, PathBuf>,
        is_builtin: &dyn Fn(&str) -> bool,
        order: &mut Vec<(String, Vec<u8>)>,
    ) {
        if order.iter().any(|(n, _)| n == m) || is_builtin(m) {
            return;
        }
        let Some(path) = files.get(m) else { return };
        let data = read_module(path);
        let deps = data
            .windows(8)
            .position(|w| w == b"depends=")
            .map(|i| {
                let rest = &data[i + 8..];
                let end = rest.iter().position(|&b| b == 0).unwrap_or(0);
                String::from_utf8_lossy(&rest[..end]).into_owned()
            })
            .unwrap_or_default();
        for d in deps.split(',').filter(|d| !d.is_empty()) {
            visit(&d.replace('-', "_"), files, is_builtin, order);
        }
        order.push((m.to_owned(), data));
    }
    for m in MODULES {
        visit(m, &files, &is_builtin, &mut order);
    }
    order
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /lower /upper /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m.ko 2>/dev/null || echo "tkvm: insmod $m failed"; done
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro,cache=loose rootfs /lower; then
	echo "tkvm: cannot mount the host root over 9p"; echo o > /proc/sysrq-trigger; sleep 10
fi
mount -t tmpfs -o size=75% tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot
N=/newroot
mount -t proc proc $N/proc
mount -t sysfs sysfs $N/sys
mount -t devtmpfs devtmpfs $N/dev
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts devpts $N/dev/pts
mount -t tmpfs tmpfs $N/dev/shm
mount -t tmpfs tmpfs $N/run
# /tmp stays the host's (through the overlay): the checkout and its target/ may live there.
mount -t bpf bpf $N/sys/fs/bpf
mount -t tracefs tracefs $N/sys/kernel/tracing
mount -t debugfs debugfs $N/sys/kernel/debug
mount -t tmpfs tmpfs $N/sys/fs/cgroup && mkdir -p $N/sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 $N/sys/fs/cgroup/unified
ln -sf /proc/self/fd $N/dev/fd; ln -sf /proc/self/fd/0 $N/dev/stdin; ln -sf /proc/self/fd/1 $N/dev/stdout; ln -sf /proc/self/fd/2 $N/dev/stderr
mkdir -p $N/run/tkvm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none tkvmio $N/run/tkvm
ip link set lo up
hostname tkvm
ulimit -l unlimited
chroot $N /bin/bash /run/tkvm/cmd.sh > $N/run/tkvm/stdout 2> $N/run/tkvm/stderr < /dev/null
echo $? > $N/run/tkvm/rc
sync
echo o > /proc/sysrq-trigger
sleep 10
"#;

/// What a guest run produced.
#[derive(Debug)]
pub struct GuestRun {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub console: String,
    pub elapsed: Duration,
    /// KVM (not TCG emulation).
    pub accelerated: bool,
}

impl GuestRun {
    /// A one-line reason when the guest itself failed (as opposed to the command), with the
    /// kernel's first report (its stack says where it went wrong; the tail only repeats it).
    pub fn failure(&self) -> Option<String> {
        let why = if self.console.contains("Kernel panic") {
            "kernel panic in the guest"
        } else if self.status.is_none() {
            "the guest produced no exit status (hung and killed, or failed to boot)"
        } else {
            return None;
        };
        let lines: Vec<&str> = self.console.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        match first_kernel_report(&lines) {
            Some(first) => Some(format!("{why}; first kernel report:\n{first}\n[…]\nconsole tail:\n{tail}")),
            None => Some(format!("{why}; console tail:\n{tail}")),
        }
    }

    /// Whether the guest kernel died of an `int3` trap at a patch site in its own text, the first
    /// report on its console: a static key or jump label whose text_poke_bp() another vCPU ran
    /// half-done. The kernel's int3 handler covers that window on hardware and under KVM; under
    /// QEMU's multi-threaded TCG a vCPU can still run a stale translation holding the int3 after
    /// the patch is complete, and the handler then finds no patch and oopses (seen in the 6.12
    /// guest at boot, before any test ran, and in __schedule while a suite enabled a tracepoint).
    pub fn emulator_int3(&self) -> bool {
        let lines: Vec<&str> = self.console.lines().collect();
        self.console.contains("Kernel panic")
            && !self.accelerated
            && first_kernel_report(&lines).is_some_and(|r| r.lines().next().is_some_and(|l| l.contains("Oops: int3")))
    }
}

/// The first warning, bug, lockup or hung-task report on the console, up to 60 lines.
fn first_kernel_report(lines: &[&str]) -> Option<String> {
    const STARTS: [&str; 5] = ["WARNING:", "BUG:", "INFO: task", "rcu: INFO:", "Oops"];
    let start = lines.iter().position(|l| STARTS.iter().any(|s| l.contains(s)))?;
    Some(lines[start..lines.len().min(start + 60)].join("\n"))
}

/// Boots `kernel` and runs `script` (bash) inside, with the host's root as its root and the
/// environment given; kills the guest after `timeout`.
pub fn run(kernel: Kernel, script: &str, env: &[(&str, String)], timeout: Duration) -> GuestRun {
    check_host_tools();
    let root = kernel.fetch();
    let vmlinuz = fs::read_dir(root.join("boot"))
        .expect("kernel package has /boot")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("vmlinuz-")))
        .expect("vmlinuz in the kernel package");
    let kver = vmlinuz.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_owned();
    let moddir = root.join("lib/modules").join(&kver);

    let work = tempfile::Builder::new().prefix("tkvm-").tempdir().expect("temp dir");
    let initdir = work.path().join("initramfs");
    let iodir = work.path().join("io");
    fs::create_dir_all(initdir.join("bin")).unwrap();
    fs::create_dir_all(initdir.join("modules")).unwrap();
    fs::create_dir_all(&iodir).unwrap();
    fs::copy("/bin/busybox", initdir.join("bin/busybox")).unwrap();
    fs::write(initdir.join("init"), INIT).unwrap();
    fs::set_permissions(initdir.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
    let mods = modules(&moddir);
    let mut order = String::new();
    for (name, data) in &mods {
        fs::write(initdir.join("modules").join(format!("{name}.ko")), data).unwrap();
        order.push_str(name);
        order.push('\n');
    }
    fs::write(initdir.join("modules/order"), order).unwrap();
    let initrd = work.path().join("initrd.gz");
    sh(Command::new("sh")
        .current_dir(&initdir)
        .arg("-c")
        .arg(format!("find . | cpio -o -H newc --quiet | gzip -1 > {}", initrd.display())));

    let mut cmd = String::from(
        "set -u\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TRACEKIT_IN_VM=1\n",
    );
    for (k, v) in env {
        cmd.push_str(&format!("export {k}='{}'\n", v.replace('\'', r"'\''")));
    }
    cmd.push_str(&format!("cd '{}'\n", std::env::current_dir().unwrap().display()));
    cmd.push_str(script);
    cmd.push('\n');
    fs::write(iodir.join("cmd.sh"), cmd).unwrap();

    let console = work.path().join("console.log");
    let accel = if fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" vmx") || c.contains(" svm"))
        && Path::new("/dev/kvm").exists()
    {
        "kvm"
    } else {
        "tcg,thread=multi"
    };
    let start = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-machine", "pc"])
        .args(["-accel", accel, "-cpu", "max", "-smp", "2", "-m", "2G"])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 oops=panic softlockup_panic=1 loglevel=5 rdinit=/init"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args(["-virtfs", "local,path=/,mount_tag=rootfs,security_model=none,readonly=on,multidevs=remap"])
        .arg("-virtfs")
        .arg(format!("local,path={},mount_tag=tkvmio,security_model=none,multidevs=remap", iodir.display()))
        .args(["-nic", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let deadline = start + timeout;
    let killed = loop {
        if qemu.try_wait().unwrap().is_some() {
            break false;
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |f: &str| fs::read_to_string(iodir.join(f)).unwrap_or_default();
    let mut console_text = fs::read_to_string(&console).unwrap_or_default();
    if killed {
        console_text.push_str(&format!("\ntkvm: guest killed after {timeout:?} (hung)\n"));
    }
    let _ = std::io::stderr().flush();
    GuestRun {
        status: if killed { None } else { read("rc").trim().parse().ok() },
        stdout: read("stdout"),
        stderr: read("stderr"),
        console: console_text,
        elapsed: start.elapsed(),
        accelerated: accel == "kvm",
    }
}
