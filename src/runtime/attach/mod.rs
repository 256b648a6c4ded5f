//! The attach layer: every way tracekit attaches a program returns an [`Attachment`] that
//! detaches when dropped. Link-based forms first (owned by a file descriptor, so even SIGKILL
//! leaves nothing behind); a legacy form only behind a guard that removes it on every normal
//! exit, plus a sweep of stale tracekit attachments at the next start.
pub mod tracing;
