//! The tracing tools: events of tasks (pid, comm, uid, stacks).

pub mod count;
pub mod funclatency;
pub mod kprobe;
pub mod profile;
pub mod rawtp;
pub mod tcpstate;
pub mod tracepoint;
pub mod uprobe;
