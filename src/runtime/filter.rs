//! The in-kernel filter of every tool, from the common options (written to rodata by
//! `common_skel!`, tested by `tk_filter_allows()` in `common.bpf.h`).

use super::cli::TaskArgs;
use super::kernel::{self, CgroupTarget};
use crate::error::Error;

/// Must match TK_MAX_IDS in common.h.
pub const MAX_IDS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub tids: Vec<u32>,
    pub uid: Option<u32>,
    /// NUL-padded exact comm; all zero = off.
    pub comm: [u8; 16],
    pub cgroup: Option<CgroupTarget>,
    /// Only `-- CMD` and its descendants.
    pub follow: bool,
}

impl Filter {
    pub fn from_args(args: &TaskArgs) -> Result<Self, Error> {
        for (flag, ids) in [("--pid", &args.pids), ("--tid", &args.tids)] {
            if ids.len() > MAX_IDS {
                return Err(Error::usage(
                    format!("{flag} takes at most {MAX_IDS} values, got {}", ids.len()),
                    Some("filter by --comm, --uid or --cgroup instead".to_owned()),
                ));
            }
        }
        let mut comm = [0u8; 16];
        if let Some(c) = &args.comm {
            comm[..c.len()].copy_from_slice(c.as_bytes());
        }
        let cgroup = args.cgroup.as_deref().map(kernel::resolve_cgroup).transpose()?;
        let mut pids = args.pids.clone();
        pids.dedup();
        let mut tids = args.tids.clone();
        tids.dedup();
        Ok(Filter { pids, tids, uid: args.uid, comm, cgroup, follow: !args.command.is_empty() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        common: crate::runtime::CommonArgs,
    }

    fn filter(argv: &[&str]) -> Result<Filter, Error> {
        let t = T::try_parse_from(std::iter::once("t").chain(argv.iter().copied())).expect("parses");
        Filter::from_args(&t.common.task)
    }

    #[test]
    fn builds_from_options() {
        let f = filter(&["-p", "1,2", "--tid", "3", "-u", "0", "-c", "bash"]).unwrap();
        assert_eq!(f.pids, [1, 2]);
        assert_eq!(f.tids, [3]);
        assert_eq!(f.uid, Some(0));
        assert_eq!(&f.comm[..5], b"bash\0");
        assert!(!f.follow);
        assert!(filter(&["--", "true"]).unwrap().follow);
    }

    #[test]
    fn too_many_pids_is_a_usage_error() {
        let e = filter(&["-p", "1,2,3,4,5,6,7,8,9"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
