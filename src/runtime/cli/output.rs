//! The options every tool takes, task or packet: output, limits, transport, verbosity.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::task::parse_duration;

/// The largest ring buffer the kernel accepts, in pages: its size is a power-of-two byte count
/// in the map's u32 `max_entries`, so 2^31 bytes.
pub const MAX_RINGBUF_PAGES: u32 = 1 << 19;
/// The largest perf buffer per CPU, in pages: the kernel keeps a page-pointer array per buffer
/// in one allocation of at most 4 MiB (order 10; rb_alloc), 2^18 pointers with its header.
pub const MAX_PERFBUF_PAGES: u32 = 1 << 18;

fn parse_buffer_pages(s: &str) -> Result<u32, String> {
    let n: u64 = s.parse().map_err(|_| format!("`{s}` is not a number of pages"))?;
    match n {
        0 => Err("must be at least 1 page".into()),
        n if n > u64::from(MAX_RINGBUF_PAGES) => Err(format!(
            "{n} pages is more than the kernel accepts: at most {MAX_RINGBUF_PAGES} (2 GiB) for the ring buffer, \
             {MAX_PERFBUF_PAGES} per CPU for the perf buffer"
        )),
        n => Ok(n as u32),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportChoice {
    /// Ring buffer when the kernel has one (5.8+), else perf buffer
    Auto,
    /// BPF ring buffer: one buffer shared by all CPUs, ordered events
    Ringbuf,
    /// Perf event array: one buffer per CPU (kernels before 5.8)
    Perfbuf,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Output options")]
pub struct OutputArgs {
    /// Stop after this many seconds (fractions allowed)
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after N events
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// One JSON object per line (NDJSON; see the README for the schema)
    #[arg(short = 'j', long)]
    pub json: bool,

    /// Add a wall-clock time column
    #[arg(short = 'T', long)]
    pub timestamp: bool,

    /// Event channel from kernel to tracekit
    #[arg(long, value_enum, default_value_t = TransportChoice::Auto, value_name = "KIND")]
    pub transport: TransportChoice,

    /// Channel size in 4 KiB pages, rounded up to a power of two: total for the ring buffer (at
    /// most 524288), per CPU for the perf buffer (at most 262144) [default: 512 ring buffer, 64
    /// perf buffer]
    #[arg(long, value_name = "N", value_parser = parse_buffer_pages)]
    pub buffer_pages: Option<u32>,

    /// Exit with status 1 if any event was lost
    #[arg(long)]
    pub fail_on_loss: bool,

    /// Kernel BTF file for kernels built without /sys/kernel/btf/vmlinux (e.g. from BTFHub)
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// Print the plan and each lifecycle step with its duration; libbpf debug logs (-vv)
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
