//! Commands on stdin while a tool runs (the user → kernel channel of tools whose maps can be
//! changed live): a thread reads lines and hands them over; the run loop applies them between
//! polls, so only the main thread ever touches the maps. Nothing is read when stdin is
//! /dev/null (how tests, services and `&` background jobs usually start), or closed.

use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::mpsc::{self, Receiver, TryRecvError};

/// Lines read from stdin, trimmed, without the empty ones and `#` comments.
pub struct StdinCommands {
    rx: Option<Receiver<String>>,
}

impl StdinCommands {
    /// Starts the reader, unless stdin is /dev/null or closed.
    pub fn start() -> Self {
        if !stdin_is_live() {
            return StdinCommands { rx: None };
        }
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new().name("tk-stdin".into()).spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if tx.send(line.to_owned()).is_err() {
                    break;
                }
            }
        });
        StdinCommands { rx: spawned.ok().map(|_| rx) }
    }

    /// Whether commands are read at all.
    pub fn active(&self) -> bool {
        self.rx.is_some()
    }

    /// The next line already read, if any (never blocks).
    pub fn pending(&mut self) -> Option<String> {
        let rx = self.rx.as_ref()?;
        match rx.try_recv() {
            Ok(l) => Some(l),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                // End of input: the run goes on, without commands.
                self.rx = None;
                None
            }
        }
    }
}

/// stdin is open and not /dev/null.
fn stdin_is_live() -> bool {
    let stdin = std::io::stdin();
    // SAFETY: F_GETFD only reads the descriptor table.
    if unsafe { libc::fcntl(stdin.as_raw_fd(), libc::F_GETFD) } < 0 {
        return false;
    }
    let (Ok(me), Ok(null)) = (std::fs::metadata("/proc/self/fd/0"), std::fs::metadata("/dev/null")) else {
        return true;
    };
    !(me.file_type().is_char_device() && me.rdev() == null.rdev())
}
