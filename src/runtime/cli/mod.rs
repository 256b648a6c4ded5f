//! Command-line option groups: output options for every tool, task options for tools whose
//! events come from a task, net options for packet tools.

pub mod net;
pub mod output;
pub mod task;

pub use output::{OutputArgs, TransportChoice};
pub use task::{CommonArgs, TaskArgs};

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use crate::error::Error;

/// Every argument before `--` is text (names, globs, filters, paths given as text); clap would
/// answer a non-UTF-8 one with "invalid UTF-8 was detected in one or more arguments", naming
/// none. This names it, shows its bytes, and says what to do. CMD after `--` may be any bytes.
pub fn check_utf8(args: &[OsString]) -> Result<(), Error> {
    for (i, arg) in args.iter().enumerate().skip(1) {
        if arg == "--" {
            break;
        }
        if arg.to_str().is_some() {
            continue;
        }
        let bytes = arg.as_bytes();
        let shown = escaped(bytes);
        let of = if bytes.starts_with(b"--")
            && let Some(eq) = bytes.iter().position(|&b| b == b'=')
        {
            format!("the value of `{}`", escaped(&bytes[..eq]))
        } else {
            match args[i - 1].to_str() {
                Some(prev) if i > 1 && prev.starts_with('-') && prev.len() > 1 => format!("the value of `{prev}`"),
                _ => format!("argument {i}"),
            }
        };
        return Err(Error::usage(
            format!("{of}, `{shown}`, is not valid UTF-8"),
            Some(
                "tracekit's names, globs, filters and paths are UTF-8 text; for a file whose name is not, \
                 give a symlink with a UTF-8 name"
                    .to_owned(),
            ),
        ));
    }
    Ok(())
}

/// Valid UTF-8 as is, every other byte as `\xNN`.
fn escaped(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn args(v: &[&[u8]]) -> Vec<OsString> {
        v.iter().map(|b| OsString::from_vec(b.to_vec())).collect()
    }

    #[test]
    fn names_the_non_utf8_argument() {
        let e = check_utf8(&args(&[b"tk", b"tracepoint", b"syscalls:\xff\xfe"])).unwrap_err();
        assert_eq!(e.to_string(), "argument 2, `syscalls:\\xff\\xfe`, is not valid UTF-8");
        assert_eq!(e.exit_code(), 2);
        let e = check_utf8(&args(&[b"tk", b"tcpstate", b"-c", b"\xff"])).unwrap_err();
        assert!(e.to_string().starts_with("the value of `-c`"), "{e}");
        let e = check_utf8(&args(&[b"tk", b"tcpstate", b"--comm=\xff"])).unwrap_err();
        assert!(e.to_string().starts_with("the value of `--comm`"), "{e}");
        assert!(check_utf8(&args(&[b"tk", b"tcpstate", b"--", b"/tmp/\xff"])).is_ok());
        assert!(check_utf8(&args(&[b"tk", b"list", b"kernel", "ü*".as_bytes()])).is_ok());
    }
}
