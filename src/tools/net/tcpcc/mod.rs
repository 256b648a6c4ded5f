//! `tracekit tcpcc`: TCP congestion control, seen (`watch`, from `tcp:tcp_probe`) and replaced
//! (`load`, algorithms written in BPF and registered through struct_ops).

pub mod load;
pub mod watch;

use clap::{Args, Subcommand};

use crate::error::Error;

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit tcpcc watch --port 5201 --plot cwnd.svg   # cwnd and srtt of each flow, charted\n    \
    tracekit tcpcc load tk_reno                        # register tk_reno while tracekit runs\n    \
    tracekit tcpcc load tk_vegas --default             # and make it the system's default\n    \
    tracekit tcpcc load tk_reno -- iperf3 -c 10.0.0.2  # only iperf3's connections use it")]
pub struct TcpccArgs {
    #[command(subcommand)]
    pub command: TcpccCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TcpccCommand {
    /// Each connection's congestion state over time (cwnd, ssthresh, srtt, windows, in flight)
    Watch(watch::WatchArgs),
    /// Register a congestion control algorithm written in BPF while tracekit runs
    Load(load::LoadArgs),
}

pub fn run(args: TcpccArgs) -> Result<i32, Error> {
    match args.command {
        TcpccCommand::Watch(a) => watch::run(a),
        TcpccCommand::Load(a) => load::run(a),
    }
}
