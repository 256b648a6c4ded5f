//! `tracekit tcpcc watch` (in progress).

use clap::Args;

use crate::error::Error;

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {}

pub fn run(_args: WatchArgs) -> Result<i32, Error> {
    Err(Error::runtime("not yet", None))
}
