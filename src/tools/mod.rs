//! One module per subcommand, by family: `trace/` (tasks), `meta/` (what the kernel offers).

pub mod meta;
pub mod net;
pub mod trace;
