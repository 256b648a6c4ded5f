//! `tracekit tcpcc load` (in progress).

use clap::Args;

use crate::error::Error;

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {}

pub fn run(_args: LoadArgs) -> Result<i32, Error> {
    Err(Error::runtime("not yet", None))
}
