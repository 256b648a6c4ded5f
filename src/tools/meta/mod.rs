//! Tools about tracing rather than tracing: what this kernel supports, what can be traced, and
//! tracekit's own completions and man pages.

pub mod docs;
pub mod list;
pub mod probe;
