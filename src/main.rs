//! tracekit: one small binary for eBPF tracing. This file parses the command line and
//! dispatches; every tool lives in `tools/`, the shared machinery in `runtime/`.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use tracekit::error::Error;
use tracekit::{runtime, tools};

#[derive(Debug, Parser)]
#[command(
    name = "tracekit",
    version,
    about = "eBPF tracing toolkit: typed events, counted losses, nothing left behind",
    after_help = "EXAMPLES:\n    \
        tracekit probe                      # what this kernel supports\n    \
        tracekit tcpstate                   # TCP state transitions\n    \
        tracekit tcpstate --json -- curl -s http://127.0.0.1/\n    \
        tracekit uprobe /bin/bash:readline  # every line typed into bash\n    \
        tracekit list libc 'mem*'           # functions that can be traced\n    \
        tracekit xdp eth0 --port 443        # packets eth0 receives, seen by XDP\n    \
        tracekit tc eth0 --sock             # both directions, with their sockets\n\n\
        Every tool takes the common options (--pid, --comm, --json, --duration, ...):\n\
        see `tracekit <tool> --help`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Which kernel features tracekit can use here
    Probe(tools::meta::probe::ProbeArgs),
    /// TCP state transitions (like libbpf-tools tcpstates)
    Tcpstate(tools::trace::tcpstate::TcpstateArgs),
    /// Kernel function calls: BTF-decoded arguments, return value, latency
    Kprobe(tools::trace::kprobe::KprobeArgs),
    /// Raw tracepoints with BTF-typed arguments (tp_btf), decoded like kprobe's
    #[command(name = "tp_btf")]
    TpBtf(tools::trace::rawtp::RawTpArgs),
    /// Raw tracepoints (raw_tp), arguments decoded from BTF
    #[command(name = "raw_tp")]
    RawTp(tools::trace::rawtp::RawTpArgs),
    /// Count a tracepoint's events per comm or process, or a field's distribution, in the kernel
    Count(tools::trace::count::CountArgs),
    /// How long user functions take, entry to return: in-kernel histograms (like BCC's)
    Funclatency(tools::trace::funclatency::FunclatencyArgs),
    /// CPU profile: sampled kernel and user stacks, counted, symbolized
    Profile(tools::trace::profile::ProfileArgs),
    /// Classic tracepoints, every field decoded by name from its format
    Tracepoint(tools::trace::tracepoint::TracepointArgs),
    /// User-space function calls: arguments, return value, latency
    Uprobe(tools::trace::uprobe::UprobeArgs),
    /// User-space function returns (uprobe --return-only)
    Uretprobe(tools::trace::uprobe::UprobeArgs),
    /// Every packet an interface receives, seen by XDP (with counters, --drop, --sock)
    Xdp(tools::net::xdp::XdpArgs),
    /// Every packet an interface receives and sends, seen by TC (tcx or clsact)
    Tc(tools::net::tc::TcArgs),
    /// Every packet of one or all interfaces, seen by a socket filter (occupies no hook)
    Sockfilter(tools::net::sockfilter::SockfilterArgs),
    /// See and decide every socket and device call of a cgroup's processes (cgroup hooks)
    Cgroup(tools::net::cgroup::CgroupArgs),
    /// Forward packets between interfaces in XDP or TC, on the kernel's routes and neighbours
    Forward(tools::net::forward::ForwardArgs),
    /// TCP congestion control: watch each flow's cwnd and srtt, or load an algorithm in BPF
    Tcpcc(tools::net::tcpcc::TcpccArgs),
    /// Steer connections and datagrams for many ports and addresses to one socket (sk_lookup)
    Sklookup(tools::net::sklookup::SklookupArgs),
    /// A cgroup's TCP connections from a sockops program: states, RTT, retransmits, no kprobes
    Sockops(tools::net::sockops::SockopsArgs),
    /// TCP served in the kernel through a sockmap: an echo server whose bytes stay there
    Sockmap(tools::net::sockmap::SockmapArgs),
    /// What can be traced: kernel functions, tracepoints, functions of a binary
    List(tools::meta::list::ListArgs),
    /// Shell completions (bash, zsh, fish, …), generated from these options
    Completions(tools::meta::docs::CompletionsArgs),
    /// The man page (tracekit(1), or tracekit-TOOL(1)), in roff
    Man(tools::meta::docs::ManArgs),
    /// Internal: the held start of `-- CMD` (see runtime/child.rs)
    #[command(name = "__exec-gate", hide = true)]
    ExecGate {
        fd: i32,
        #[arg(last = true)]
        cmd: Vec<OsString>,
    },
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    Ok(match cli.command {
        Command::Probe(a) => tools::meta::probe::run(&a)?,
        Command::Tcpstate(a) => tools::trace::tcpstate::run(a)?,
        Command::Kprobe(a) => tools::trace::kprobe::run(a)?,
        Command::Profile(a) => tools::trace::profile::run(a)?,
        Command::Count(a) => tools::trace::count::run(a)?,
        Command::Funclatency(a) => tools::trace::funclatency::run(a)?,
        Command::TpBtf(a) => tools::trace::rawtp::run(a, true)?,
        Command::RawTp(a) => tools::trace::rawtp::run(a, false)?,
        Command::Tracepoint(a) => tools::trace::tracepoint::run(a)?,
        Command::Uprobe(a) => tools::trace::uprobe::run(a, false)?,
        Command::Uretprobe(a) => tools::trace::uprobe::run(a, true)?,
        Command::Xdp(a) => tools::net::xdp::run(a)?,
        Command::Tc(a) => tools::net::tc::run(a)?,
        Command::Sockfilter(a) => tools::net::sockfilter::run(a)?,
        Command::Cgroup(a) => tools::net::cgroup::run(a)?,
        Command::Forward(a) => tools::net::forward::run(a)?,
        Command::Tcpcc(a) => tools::net::tcpcc::run(a)?,
        Command::Sklookup(a) => tools::net::sklookup::run(a)?,
        Command::Sockops(a) => tools::net::sockops::run(a)?,
        Command::Sockmap(a) => tools::net::sockmap::run(a)?,
        Command::List(a) => tools::meta::list::run(&a)?,
        Command::Completions(a) => tools::meta::docs::completions(&a, Cli::command())?,
        Command::Man(a) => tools::meta::docs::man(&a, Cli::command())?,
        Command::ExecGate { fd, cmd } => runtime::child::exec_gate(fd, &cmd),
    })
}

/// `error: …`, the typed error's details and hint; exit 2 for usage errors, else 1.
fn report(e: &anyhow::Error) -> u8 {
    let Some(e) = e.downcast_ref::<Error>() else {
        eprintln!("error: {e:#}");
        return 1;
    };
    eprintln!("error: {e}");
    for line in e.details() {
        eprintln!("  {line}");
    }
    if let Some(hint) = e.hint() {
        eprintln!("hint: {hint}");
    }
    e.exit_code() as u8
}

fn main() -> ExitCode {
    if let Err(e) = runtime::cli::check_utf8(&std::env::args_os().collect::<Vec<_>>()) {
        return ExitCode::from(report(&anyhow::Error::new(e)));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    // Ctrl-C and SIGTERM end the run from here on, whatever setup step is under way (see
    // runtime/signals.rs). Not in the exec gate: CMD gets the default dispositions.
    if !matches!(cli.command, Command::ExecGate { .. })
        && let Err(e) = runtime::signals::install()
    {
        return ExitCode::from(report(&anyhow::Error::new(e)));
    }
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => ExitCode::from(report(&e)),
    }
}

/// What `Cli::parse` does, except that a failed write of the help or version (`--help >
/// /dev/full`) is an error (exit 1), not a silent success.
fn clap_exit(e: &clap::Error) -> ExitCode {
    let printed = e.print().and_then(|()| std::io::stdout().flush()).and_then(|()| std::io::stderr().flush());
    // A reader that took what it wanted (`tracekit --help | head`) is not an error, as for events.
    if let Err(w) = printed
        && w.kind() != std::io::ErrorKind::BrokenPipe
    {
        let _ =
            writeln!(std::io::stderr(), "error: writing the {}: {w}", if e.use_stderr() { "message" } else { "help" });
        return ExitCode::from(1);
    }
    ExitCode::from(e.exit_code().clamp(0, 255) as u8)
}
