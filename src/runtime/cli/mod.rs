//! Command-line option groups: output options for every tool, task options for tools whose
//! events come from a task, net options for packet tools.

pub mod net;
pub mod output;
pub mod task;

pub use output::{OutputArgs, TransportChoice};
pub use task::{CommonArgs, TaskArgs};
