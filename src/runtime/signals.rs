//! SIGINT, SIGTERM and SIGHUP, from the start of `main` to the end.
//!
//! Two phases. During setup (parsing, resolving targets, reading ELF files and BTF, planning)
//! nothing exists in the kernel that tracekit would have to undo, so a signal ends the process
//! at once, whatever the main thread is doing (a slow BTF walk, a hung read): exit status
//! [`INTERRUPTED`]. From [`setup_done`] on (called just before the first skeleton is loaded),
//! a signal only sets the stop flag: the run loop sees it, detaches everything and exits 0.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use crate::error::Error;

/// The exit status of a run that a signal ended during setup, before anything was loaded:
/// 128 + SIGINT, as a shell reports a command that Ctrl-C interrupted.
pub const INTERRUPTED: u8 = 130;

/// True until [`setup_done`]. A mutex, not an atomic: the handler holds it while it exits, so
/// the main thread cannot leave setup (and start loading) between the handler's check and the
/// process's end.
static IN_SETUP: Mutex<bool> = Mutex::new(true);

/// Set by a signal once setup is done; the run loop polls it.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

fn on_signal() {
    let in_setup = IN_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if *in_setup {
        // Nothing is loaded or attached yet: there is nothing to undo, and the main thread may be
        // stuck in a step that never checks a flag. The guard stays held until the process ends.
        std::process::exit(i32::from(INTERRUPTED));
    }
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
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

/// The flag a signal sets once setup is done.
pub fn stop_flag() -> Arc<AtomicBool> {
    STOP.clone()
}
