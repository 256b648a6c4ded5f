//! A sysctl set for the length of a run: restored when the guard drops (every normal exit),
//! and, after SIGKILL, by the next tracekit that sweeps it (a state file under /run/tracekit
//! records the value to go back to and which process set it).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

const STATE_DIR: &str = "/run/tracekit";

pub struct SysctlGuard {
    path: PathBuf,
    state: PathBuf,
    previous: String,
    ours: String,
    owner: Owner,
}

/// Who set a sysctl: a pid and its start time (field 22 of /proc/PID/stat), so that a reused
/// pid is not taken for the tracekit that was killed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    pid: u32,
    start: u64,
}

impl Owner {
    fn me() -> Owner {
        let pid = std::process::id();
        Owner { pid, start: start_time(pid).unwrap_or(0) }
    }

    fn parse(line: &str) -> Option<Owner> {
        let (pid, start) = line.split_once(' ')?;
        Some(Owner { pid: pid.parse().ok()?, start: start.parse().ok()? })
    }

    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm (field 2) may hold spaces and parentheses: count from the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// `net.ipv4.tcp_congestion_control` → /proc/sys/net/ipv4/tcp_congestion_control.
fn proc_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn read(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

/// The state file of `key` in this network namespace (the net.* sysctls are per namespace).
fn state_file(key: &str) -> PathBuf {
    let netns = fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0);
    Path::new(STATE_DIR).join(format!("sysctl-{netns}-{key}"))
}

/// (owner, value before, value set) of a state file.
fn parse_state(text: &str) -> Option<(Owner, &str, &str)> {
    let mut lines = text.lines();
    Some((Owner::parse(lines.next()?)?, lines.next()?, lines.next()?))
}

impl SysctlGuard {
    /// Restores `key` if a tracekit that was killed left it set: returns a note saying so. A
    /// value changed since (by anyone) is left alone. The sysctl is written before the state
    /// file goes: a signal in between leaves the file for the next sweep, not a lost value.
    pub fn sweep_stale(key: &str) -> Option<String> {
        let state = state_file(key);
        let text = fs::read_to_string(&state).ok()?;
        let (owner, previous, ours) = parse_state(&text)?;
        if owner.alive() {
            return None;
        }
        let path = proc_path(key);
        let restored = read(&path).ok()? == ours && fs::write(&path, previous).is_ok();
        let _ = fs::remove_file(&state);
        restored.then(|| format!("restored {key} = {previous} (a tracekit that was killed had set it to {ours})"))
    }

    /// Sets `key` to `value`, remembering the value before. One tracekit at a time per sysctl
    /// and namespace: the state file is created exclusively.
    pub fn set(key: &str, value: &str) -> Result<SysctlGuard, Error> {
        let path = proc_path(key);
        let state = state_file(key);
        let previous = read(&path).map_err(|e| Error::io(format!("reading {key}"), e))?;
        fs::create_dir_all(STATE_DIR).map_err(|e| Error::io(format!("creating {STATE_DIR}"), e))?;
        let owner = Owner::me();
        let mut file = match fs::File::options().write(true).create_new(true).open(&state) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let holder = fs::read_to_string(&state).ok().and_then(|t| parse_state(&t).map(|s| s.0.pid));
                return Err(Error::runtime(
                    format!(
                        "{key} is set by another tracekit{} already",
                        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
                    ),
                    Some(format!(
                        "stop that tracekit first: it restores the value when it ends (its record: {})",
                        state.display()
                    )),
                ));
            }
            Err(e) => return Err(Error::io(format!("creating {}", state.display()), e)),
        };
        let record = format!("{} {}\n{previous}\n{value}\n", owner.pid, owner.start);
        if let Err(e) = file.write_all(record.as_bytes()) {
            let _ = fs::remove_file(&state);
            return Err(Error::io(format!("writing {}", state.display()), e));
        }
        if let Err(e) = fs::write(&path, value) {
            let _ = fs::remove_file(&state);
            return Err(Error::io_hint(
                format!("setting {key} = {value}"),
                e,
                format!("try it by hand: `sysctl -w {key}={value}`"),
            ));
        }
        Ok(SysctlGuard { path, state, previous, ours: value.to_owned(), owner })
    }

    pub fn previous(&self) -> &str {
        &self.previous
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        // Only what is still ours goes back: someone may have changed it meanwhile.
        if read(&self.path).is_ok_and(|now| now == self.ours)
            && let Err(e) = fs::write(&self.path, &self.previous)
        {
            eprintln!("tracekit: warning: restoring {} to {}: {e}", self.path.display(), self.previous);
        }
        // The record goes only while it is ours.
        if fs::read_to_string(&self.state).ok().and_then(|t| parse_state(&t).map(|s| s.0)) == Some(self.owner.clone()) {
            let _ = fs::remove_file(&self.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_record_round_trips() {
        let (owner, before, set) = parse_state("123 456\nbbr\ntk_reno\n").expect("parses");
        assert_eq!((owner, before, set), (Owner { pid: 123, start: 456 }, "bbr", "tk_reno"));
        assert!(parse_state("123\nbbr\ntk_reno\n").is_none(), "no start time: not ours");
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = Owner::me();
        assert!(me.start > 0 && me.alive());
        assert!(!Owner { start: me.start + 1, ..me }.alive());
    }
}
