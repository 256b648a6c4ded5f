//! SIGINT, SIGTERM and SIGHUP, from the start of `main` to the end.
//!
//! Two phases. During setup (parsing, resolving targets, reading ELF files and BTF, planning)
//! nothing exists in the kernel that tracekit would have to undo, so a signal ends the process
//! at once, whatever the main thread is doing (a slow BTF walk, a hung read): exit status
//! [`INTERRUPTED`]. From [`setup_done`] on (called just before the first skeleton is loaded),
//! a signal only counts a stop request: the run loop sees the first, detaches everything and
//! exits 0; a second cuts short the grace a `-- CMD` gets to exit (runtime/child.rs).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::Error;

/// The exit status of a run that a signal ended during setup, before anything was loaded: 0, as
/// for a signal at any later moment (README "Exit status": Ctrl-C and SIGTERM are how a user
/// ends a run, not a failure).
pub const INTERRUPTED: u8 = 0;

/// True until [`setup_done`]. A mutex, not an atomic: the handler holds it while it exits, so
/// the main thread cannot leave setup (and start loading) between the handler's check and the
/// process's end.
static IN_SETUP: Mutex<bool> = Mutex::new(true);

/// Ctrl-C / SIGTERM received once setup is done: the first ends the run (cleanly, CMD given a
/// grace period), a second cuts the grace short.
static STOP_REQUESTS: AtomicU32 = AtomicU32::new(0);

static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

fn on_signal() {
    let in_setup = IN_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if *in_setup {
        // Nothing is loaded or attached yet: there is nothing to undo, and the main thread may be
        // stuck in a step that never checks a flag. The guard stays held until the process ends.
        std::process::exit(i32::from(INTERRUPTED));
    }
    STOP_REQUESTS.fetch_add(1, Ordering::SeqCst);
}

/// Installs the handler (once; later calls return the first call's result).
pub fn install() -> Result<(), Error> {
    INSTALLED
        .get_or_init(|| ctrlc::set_handler(on_signal).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::runtime(format!("installing the signal handler: {e}"), None))
}

/// Setup is over: from now on a signal asks the run loop to stop (and detach) instead of ending
/// the process. Called before the first BPF object is loaded.
pub fn setup_done() {
    *IN_SETUP.lock().unwrap_or_else(|e| e.into_inner()) = false;
}

/// How many times Ctrl-C or SIGTERM arrived after setup.
pub fn stop_requests() -> u32 {
    STOP_REQUESTS.load(Ordering::SeqCst)
}

/// A tool ends the run itself, as one Ctrl-C would (the thing it watches is gone: a removed
/// cgroup). The run loop sees it within one poll interval and detaches.
pub fn request_stop() {
    STOP_REQUESTS.fetch_add(1, Ordering::SeqCst);
}
