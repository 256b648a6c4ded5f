//! The errors tracekit reports to users: what failed, why, and a hint naming the fix.

use std::io;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// Bad command-line input that clap cannot check by itself (exit status 2).
    #[error("{msg}")]
    Usage { msg: String, hint: Option<String> },

    #[error("tracing requires root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)")]
    NotPrivileged,

    #[error("kernel feature `{feature}` is unavailable: {reason}")]
    Unsupported { feature: &'static str, reason: String, hint: Option<String> },

    #[error("loading BPF program `{tool}` failed: {source}")]
    Load {
        tool: &'static str,
        log_tail: Vec<String>,
        verbose: bool,
        #[source]
        source: libbpf_rs::Error,
    },

    #[error("attaching `{what}` failed: {source}")]
    Attach {
        what: String,
        hint: Option<String>,
        #[source]
        source: libbpf_rs::Error,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        hint: Option<String>,
        #[source]
        source: io::Error,
    },

    #[error("{what}")]
    Runtime { what: String, hint: Option<String> },
}

impl Error {
    pub fn usage(msg: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        Error::Usage { msg: msg.into(), hint: hint.into() }
    }

    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io { what: what.into(), hint: None, source }
    }

    pub fn io_hint(what: impl Into<String>, source: io::Error, hint: impl Into<String>) -> Self {
        Error::Io { what: what.into(), hint: Some(hint.into()), source }
    }

    pub fn runtime(what: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        Error::Runtime { what: what.into(), hint: hint.into() }
    }

    /// 2 for usage errors, 1 for everything that went wrong at run time.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } => 2,
            _ => 1,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage { hint, .. }
            | Error::Unsupported { hint, .. }
            | Error::Attach { hint, .. }
            | Error::Io { hint, .. }
            | Error::Runtime { hint, .. } => hint.clone(),
            Error::NotPrivileged => Some("rerun as root, e.g. with sudo".into()),
            Error::Load { verbose: false, log_tail, .. } if !log_tail.is_empty() => {
                Some("rerun with -v for the full verifier log".into())
            }
            Error::Load { source, .. } if permission_denied(source) => {
                Some("the kernel refused the program: check `tracekit probe` for what this kernel supports".into())
            }
            Error::Load { .. } => Some("run `tracekit probe` to see what this kernel supports".into()),
        }
    }

    /// Lines printed after the error itself (the verifier log).
    pub fn details(&self) -> &[String] {
        match self {
            Error::Load { log_tail, .. } => log_tail,
            _ => &[],
        }
    }
}

fn permission_denied(e: &libbpf_rs::Error) -> bool {
    matches!(e.kind(), libbpf_rs::ErrorKind::PermissionDenied)
}
