//! The options of tools whose events come from a task: which tasks (`--pid`, `--comm`, ...)
//! or `-- CMD`. Packet tools do not take them (in softirq context no task is meaningful).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Task options")]
pub struct TaskArgs {
    /// Only these processes (thread-group ids; repeatable or comma-separated)
    #[arg(short = 'p', long = "pid", value_name = "PID", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Only these threads (repeatable or comma-separated)
    #[arg(long = "tid", value_name = "TID", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub tids: Vec<u32>,

    /// Only tasks whose command name (comm, at most 15 bytes) is exactly NAME
    #[arg(short = 'c', long, value_name = "NAME", value_parser = parse_comm)]
    pub comm: Option<String>,

    /// Only tasks of this user id
    #[arg(short = 'u', long, value_name = "UID")]
    pub uid: Option<u32>,

    /// Only tasks in this cgroup v2 (path, absolute or below the cgroup2 mount) or its children
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Run CMD, trace only it and its descendants, stop when it exits (exit with its status)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// The options of every task tool: output options and task options.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub out: super::OutputArgs,
    #[command(flatten)]
    pub task: TaskArgs,
}

fn parse_comm(s: &str) -> Result<String, String> {
    match s.len() {
        0 => Err("must not be empty".into()),
        1..=15 => Ok(s.to_owned()),
        n => Err(format!(
            "is {n} bytes long, but the kernel keeps at most 15 bytes of a command name; use `{}`",
            truncate_utf8(s, 15)
        )),
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 =
        s.trim_end_matches('s').parse().map_err(|_| format!("`{s}` is not a number of seconds (e.g. 5 or 0.5)"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("`{s}` must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("inf").is_err());
    }

    #[test]
    fn comm_length() {
        assert_eq!(parse_comm("bash").unwrap(), "bash");
        assert!(parse_comm("").is_err());
        let e = parse_comm("a_very_long_command_name").unwrap_err();
        assert!(e.contains("a_very_long_com"), "{e}");
        assert_eq!(truncate_utf8("ééééééééé", 15), "ééééééé");
    }
}
