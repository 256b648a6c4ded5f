//! Every parser of user input fed random and hostile text (issue #12 item 10): arbitrary
//! unicode, U+00A0 and other multi-byte whitespace, NULs, the parsers' own punctuation, very
//! long strings. Each must answer Ok or Err, never panic. Runs in the plain `cargo test`
//! without root: the BTF-backed ones read /sys/kernel/btf/vmlinux (world-readable) and are
//! skipped without it; the tracepoint resolver runs on a tracefs-shaped temporary directory.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::LazyLock;

use clap::{Args, Command, FromArgMatches};
use proptest::prelude::*;
use proptest::test_runner::Config;

use tracekit::runtime::btf::KernelBtf;
use tracekit::runtime::cli::{check_utf8, net, task};
use tracekit::runtime::{resolve, tracefs};
use tracekit::tools::net::cgroup;
use tracekit::tools::trace::uprobe::signature;

/// Few enough cases that the whole file runs in seconds in a debug build.
fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Text made to hit the parsers' edges: their separators and keywords, multi-byte whitespace
/// (U+00A0 is 2 bytes, U+3000 3), NUL, numbers past any integer type, and random characters.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => any::<char>().prop_map(String::from),
        1 => Just("\u{a0}".to_owned()),
        1 => Just("\u{3000}".to_owned()),
        1 => Just("\u{2028}".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("é".to_owned()),
        3 => prop::sample::select(vec![
            " ", "\t", "\n", "*", ":", "(", ")", ",", ";", "[", "]", "{", "}", "->", ".", "+", "-", "0x", "/",
            "?", "!", "\\", "'", "\"", "...", "field:", "offset:", "size:", "signed:", "ID:", "__data_loc",
            "char", "const", "unsigned", "int", "void", "struct", "::", "%", "=", "e", "inf", "NaN",
        ])
        .prop_map(str::to_owned),
        2 => "[a-z_]{1,10}",
        2 => "[0-9]{1,30}",
    ];
    prop_oneof![
        6 => prop::collection::vec(piece, 0..40).prop_map(|v| v.concat()),
        2 => any::<String>(),
        1 => (any::<char>(), 1000..20_000usize).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

/// A tracefs `format` file with hostile text spliced into its lines.
fn hostile_format() -> impl Strategy<Value = String> {
    (hostile(), hostile(), hostile(), hostile(), any::<u8>()).prop_map(|(ty, name, num, junk, pick)| {
        let field = match pick % 4 {
            0 => format!("\tfield:{ty} {name};\toffset:{num};\tsize:8;\tsigned:1;"),
            1 => format!("\tfield:{ty}\u{a0}{name};\toffset:8;\tsize:{num};\tsigned:{junk};"),
            2 => format!("\tfield:{ty}{name}{junk};\toffset:{num}"),
            _ => format!("{junk}\n\tfield:{ty}*{name}[{num}];\toffset:18446744073709551615;\tsize:18446744073709551615;"),
        };
        format!("name: x\nID: {num}\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n{field}\n\nprint fmt: \"{junk}\"\n")
    })
}

/// Parses `args` with a tool's clap definition (its value parsers included), as the binary
/// would; an error is rendered as clap would print it.
fn clap_parse<A: Args + FromArgMatches>(args: &[&str]) {
    match A::augment_args(Command::new("tool").no_binary_name(true)).try_get_matches_from(args) {
        Ok(m) => {
            let _ = A::from_arg_matches(&m);
        }
        Err(e) => {
            let _ = e.render().to_string();
        }
    }
}

thread_local! {
    // Not Sync (libbpf pointers): one per test thread, loaded once for all its cases.
    static BTF: Option<KernelBtf> = KernelBtf::load(None).ok();
}

/// A tracefs-shaped directory with a few events (the real one needs root).
static FAKE_TRACEFS: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    for (cat, ev) in [("syscalls", "sys_enter_openat"), ("syscalls", "sys_exit_openat"), ("sched", "sched_switch")] {
        let d = dir.path().join("events").join(cat).join(ev);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join("format"),
            "name: x\nID: 7\nformat:\n\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:1;\n\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n",
        )
        .expect("write format");
    }
    dir
});

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn sig_declarations(s in hostile()) {
        let _ = signature::parse(&s);
        let _ = signature::parse(&format!("int f({s})"));
        let _ = signature::parse(&format!("{s} f(int a, {s})"));
    }

    #[test]
    fn tracefs_formats(text in hostile_format(), raw in hostile()) {
        if let Ok(f) = tracefs::parse("x:y", &text) {
            // Decoding a record with the parsed layout stays in bounds too.
            let record = [0u8; 64];
            for field in &f.fields {
                let _ = field.shown(&record, || None);
            }
        }
        let _ = tracefs::parse("x:y", &raw);
    }

    #[test]
    fn uprobe_specs(s in hostile()) {
        let _ = resolve::parse_spec(&s);
        let _ = resolve::parse_spec(&format!("/bin/bash:{s}"));
        let _ = resolve::parse_spec(&format!("{s}:readline+{s}"));
    }

    #[test]
    fn globs_and_did_you_mean(s in hostile(), names in prop::collection::vec(hostile(), 0..8)) {
        let _ = resolve::is_glob(&s);
        let _ = resolve::pattern(&s);
        let _ = resolve::matching(&names, &s);
        let close = resolve::similar(names.iter().map(String::as_str), &s, 0.85, 3);
        let _ = resolve::did_you_mean(&close);
    }

    #[test]
    fn durations(s in hostile()) {
        let _ = task::parse_duration(&s);
    }

    #[test]
    fn net_hosts_and_ports(s in hostile()) {
        let _ = net::parse_host(&s);
        let _ = net::parse_port(&s);
        let _ = net::port_list("-L", &[s.clone(), format!("80,{s}")], 8, "x");
    }

    #[test]
    fn port_lists_keep_every_port(ports in prop::collection::vec(1u16..=u16::MAX, 0..=8)) {
        let given: Vec<String> = ports.iter().map(u16::to_string).collect();
        prop_assert_eq!(net::port_list("-L", &given, 8, "x").ok(), Some(ports));
    }

    #[test]
    fn cgroup_rules_and_hooks(s in hostile()) {
        for kind in ["", "connect:", "connect6:", "bind:", "sendmsg:", "egress:", "sock:", "dev:", "dev:c:"] {
            let _ = cgroup::rules::parse_deny(&format!("{kind}{s}"));
        }
        let _ = cgroup::rules::parse_rewrite(&format!("connect:{s}=127.0.0.1:{s}"));
        let _ = cgroup::rules::parse_rewrite(&format!("sendmsg:[{s}]:1={s}"));
        let _ = cgroup::rules::parse_target(&s);
        let _ = cgroup::parse_hooks(&s);
    }

    /// Any address, prefix and port range written the documented way parses back to itself.
    #[test]
    fn cgroup_targets_round_trip(
        v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>(), six in any::<bool>(),
        len in 0u8..=128, lo in any::<u16>(), span in any::<u16>(),
    ) {
        let hi = lo.saturating_add(span);
        let (addr, text, max) = if six {
            let a = std::net::Ipv6Addr::from(v6);
            (std::net::IpAddr::V6(a), format!("[{a}]"), 128)
        } else {
            let a = std::net::Ipv4Addr::from(v4);
            (std::net::IpAddr::V4(a), a.to_string(), 32)
        };
        let len = len.min(max);
        let rule = cgroup::rules::parse_deny(&format!("connect:{text}/{len}:{lo}-{hi}")).unwrap();
        let net = rule.target.net.unwrap();
        prop_assert_eq!((net.addr, net.prefix, rule.target.ports), (addr, len, (lo, hi)));
        prop_assert_eq!(rule.family, if six { 6 } else { 4 });
    }

    #[test]
    fn tracepoint_names_and_globs(s in hostile()) {
        let _ = resolve::tracepoints(FAKE_TRACEFS.path(), std::slice::from_ref(&s), 16);
        let _ = resolve::tracepoints(FAKE_TRACEFS.path(), &[format!("syscalls:{s}")], 16);
        let _ = resolve::tracepoints(FAKE_TRACEFS.path(), &[format!("{s}:sys_enter_openat")], 16);
        let _ = tracefs::load(FAKE_TRACEFS.path(), &s, &s);
    }
}

proptest! {
    // Each case builds eight tools' clap definitions twenty times: fewer cases.
    #![proptest_config(config(96))]

    #[test]
    fn command_lines(s in hostile(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        use tracekit::tools::net::{sockfilter::SockfilterArgs, tc::TcArgs, xdp::XdpArgs};
        use tracekit::tools::trace::{kprobe::KprobeArgs, tcpstate::TcpstateArgs, uprobe::UprobeArgs};
        let s = s.as_str();
        // Port lists, durations, comm, pid lists, buffer pages, count: the common options.
        for flag in ["-L", "-D", "-d", "-c", "-p", "--tid", "-n", "--buffer-pages", "--uid"] {
            clap_parse::<TcpstateArgs>(&[flag, s]);
        }
        clap_parse::<TcpstateArgs>(&["-L", &format!("80,{s},443")]);
        for flag in ["--port", "--host", "--src", "--dst", "-i", "--netns", "--proto", "--mode"] {
            clap_parse::<XdpArgs>(&["eth0", flag, s]);
        }
        clap_parse::<XdpArgs>(&[s]);
        clap_parse::<TcArgs>(&[s, "--port", s]);
        clap_parse::<SockfilterArgs>(&["--port", &format!("{s},{s}")]);
        for flag in ["-L", "-D", "--cgroup", "-i"] {
            clap_parse::<tracekit::tools::net::sockops::SockopsArgs>(&[flag, s]);
        }
        clap_parse::<tracekit::tools::net::sklookup::SklookupArgs>(&["--ports", s, "--to", s, "--addr", s, "--pid", s]);
        clap_parse::<KprobeArgs>(&[s, "-a", s]);
        clap_parse::<UprobeArgs>(&[s, "--sig", s]);
        let _ = check_utf8(&[OsString::from("tracekit"), OsString::from(s), OsString::from_vec(bytes)]);
    }
}

proptest! {
    // A name BTF lacks costs a walk over all of BTF (and "did you mean" one over every name):
    // fewer cases.
    #![proptest_config(config(8))]

    #[test]
    fn kernel_names_and_arg_paths(s in hostile()) {
        BTF.with(|btf| {
            let Some(btf) = btf else { return };
            let _ = resolve::kernel_functions(btf, std::slice::from_ref(&s), 16);
            let _ = resolve::raw_tracepoints(btf, std::slice::from_ref(&s), 16);
            // `-a` paths against real prototypes: a kernel function's and a raw tracepoint's.
            let protos = [btf.prototype("do_sys_openat2"), btf.tracepoint_prototype("sched_switch")];
            for proto in protos.iter().flatten() {
                let _ = btf.resolve_path(proto, &s);
                let _ = btf.resolve_path(proto, &format!("how->{s}"));
                let _ = btf.resolve_path(proto, &format!("prev->{s}.x"));
            }
        });
    }
}

/// The two panics the issue reported, as plain regressions next to the properties.
#[test]
fn reported_panics() {
    assert!(signature::parse("int\u{a0}f(int a)").is_ok());
    let fmt = "ID: 1\n\tfield:int\u{a0}dfd;\toffset:16;\tsize:8;\tsigned:1;\n";
    assert_eq!(tracefs::parse("x:y", fmt).unwrap().fields[0].name, "dfd");
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    /// Any classic BPF program (what libpcap hands over is trusted no further than this): the
    /// translation returns instructions or names what it cannot take; every jump it emits
    /// lands inside the result.
    #[test]
    fn any_classic_program_translates_or_is_refused(
        prog in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<u8>(), any::<u32>()), 0..40)
    ) {
        use tracekit::runtime::pcap::ClassicInsn;
        use tracekit::runtime::pcap::translate::{PacketAccess, translate};
        let prog: Vec<ClassicInsn> = prog.into_iter().map(|(code, jt, jf, k)| ClassicInsn { code, jt, jf, k }).collect();
        for access in [PacketAccess::Direct, PacketAccess::SkbLoadBytes, PacketAccess::SkbLoadBytesFromMac] {
            if let Ok(out) = translate(&prog, access) {
                for (at, i) in out.iter().enumerate() {
                    let class = i.code & 0x07;
                    let op = i.code & 0xf0;
                    if (class == 0x05 || class == 0x06) && op != 0x80 && op != 0x90 {
                        let to = at as i64 + 1 + i64::from(i.off);
                        prop_assert!((0..out.len() as i64).contains(&to), "jump at {at} to {to}");
                    }
                }
            }
        }
    }

    /// Expression words from the command line: joining and the first-word test never panic.
    #[test]
    fn expression_words_never_panic(words in proptest::collection::vec("\\PC*", 0..5)) {
        let _ = tracekit::runtime::pcap::expression(&words);
        for w in &words {
            let _ = tracekit::runtime::pcap::starts_expression(w);
        }
    }
}
