//! tracekit as a library: the runtime and the tools behind the `tracekit` binary, so that the
//! integration tests and the benchmark use the same code instead of copies of it.

pub mod error;
pub mod runtime;
pub mod tools;
