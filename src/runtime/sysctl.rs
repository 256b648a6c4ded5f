//! A sysctl set for the length of a run: restored when the guard drops (every normal exit),
//! and, after SIGKILL, by the next tracekit that sets the same sysctl (a state file under
//! /run/tracekit records the value to go back to and who set it).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

const STATE_DIR: &str = "/run/tracekit";

pub struct SysctlGuard {
    path: PathBuf,
    state: PathBuf,
    previous: String,
    ours: String,
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

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl SysctlGuard {
    /// Restores `key` if a killed tracekit left it set: returns a note saying so. A value
    /// changed since (by anyone) is left alone.
    pub fn sweep_stale(key: &str) -> Option<String> {
        let state = state_file(key);
        let text = fs::read_to_string(&state).ok()?;
        let mut lines = text.lines();
        let (pid, previous, ours) = (lines.next()?.parse::<u32>().ok()?, lines.next()?, lines.next()?);
        if alive(pid) {
            return None;
        }
        let _ = fs::remove_file(&state);
        let path = proc_path(key);
        if read(&path).ok()? != ours {
            return None;
        }
        fs::write(&path, previous).ok()?;
        Some(format!("restored {key} = {previous} (a tracekit that was killed had set it to {ours})"))
    }

    /// Sets `key` to `value`, remembering the value before.
    pub fn set(key: &str, value: &str) -> Result<SysctlGuard, Error> {
        let path = proc_path(key);
        let state = state_file(key);
        let previous = read(&path).map_err(|e| Error::io(format!("reading {key}"), e))?;
        if let Ok(text) = fs::read_to_string(&state)
            && let Some(pid) = text.lines().next().and_then(|l| l.parse::<u32>().ok())
            && alive(pid)
        {
            return Err(Error::runtime(
                format!("{key} is set by another tracekit (pid {pid}) already"),
                Some("stop that tracekit first: it restores the value when it ends".to_owned()),
            ));
        }
        fs::create_dir_all(STATE_DIR).map_err(|e| Error::io(format!("creating {STATE_DIR}"), e))?;
        fs::write(&state, format!("{}\n{previous}\n{value}\n", std::process::id()))
            .map_err(|e| Error::io(format!("writing {}", state.display()), e))?;
        if let Err(e) = fs::write(&path, value) {
            let _ = fs::remove_file(&state);
            return Err(Error::io_hint(
                format!("setting {key} = {value}"),
                e,
                format!("try it by hand: `sysctl -w {key}={value}`"),
            ));
        }
        Ok(SysctlGuard { path, state, previous, ours: value.to_owned() })
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
        let _ = fs::remove_file(&self.state);
    }
}
