//! Tools about tracing rather than tracing: what this kernel supports, what can be traced.

pub mod list;
pub mod probe;
