//! libbpf's own messages: kept (the verifier log is among them) and shown with -v, or as the
//! last lines of a failed load. Without -v libbpf's generic hints would only mislead
//! (e.g. "try raising ulimit -l" for a kernel that refuses fentry).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use libbpf_rs::PrintLevel;

const KEEP_LINES: usize = 400;

static LINES: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static ECHO: AtomicBool = AtomicBool::new(false);

fn on_message(level: PrintLevel, msg: String) {
    if ECHO.load(Ordering::Relaxed) {
        eprint!("{msg}");
    }
    if level == PrintLevel::Debug {
        return;
    }
    let mut lines = LINES.lock().unwrap_or_else(|p| p.into_inner());
    for line in msg.lines() {
        if lines.len() == KEEP_LINES {
            lines.pop_front();
        }
        lines.push_back(line.trim_end().to_owned());
    }
}

/// verbose 0: keep warnings; 1: also echo them; 2+: echo debug messages too.
pub fn install(verbose: u8) {
    ECHO.store(verbose > 0, Ordering::Relaxed);
    let level = if verbose >= 2 { PrintLevel::Debug } else { PrintLevel::Warn };
    libbpf_rs::set_print(Some((level, on_message)));
}

/// The last `n` kept lines (all with `n == usize::MAX`), emptying the store.
pub fn take_tail(n: usize) -> Vec<String> {
    let mut lines = LINES.lock().unwrap_or_else(|p| p.into_inner());
    let skip = lines.len().saturating_sub(n);
    lines.drain(..).skip(skip).collect()
}
