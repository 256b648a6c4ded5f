//! One module per subcommand.

pub mod count;
pub mod kprobe;
pub mod list;
pub mod net;
pub mod probe;
pub mod profile;
pub mod tcpstate;
pub mod tracepoint;
pub mod uprobe;
