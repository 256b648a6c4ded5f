//! Lost-event accounting. The BPF side counts every event it could not hand over (ring-buffer
//! reserve failed, perf output failed) in the per-CPU `tk_drops`; the perf buffer's lost
//! callback is kept as a cross-check, since the kernel reports those only on a later write.

use libbpf_rs::{MapCore, MapFlags, MapMut};

/// Sum over CPUs of `tk_drops[0]`.
pub fn read_drops(map: &MapMut<'_>) -> u64 {
    read_percpu_u64(map, 0)
}

/// Slot `index` of a per-CPU array of __u64 counters (counts.bpf.h's tk_count_at), summed.
pub fn read_percpu_u64(map: &MapMut<'_>, index: u32) -> u64 {
    let key = index.to_ne_bytes();
    match map.lookup_percpu(&key, MapFlags::ANY) {
        Ok(Some(per_cpu)) => {
            per_cpu.iter().filter_map(|v| v.get(..8).map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))).sum()
        }
        _ => 0,
    }
}

/// The hint that goes with a loss: a buffer twice as large (or four times, for bigger losses).
pub fn bigger_buffer_hint(pages: u32, lost: u64, delivered: u64) -> String {
    let factor = if lost > delivered { 4 } else { 2 };
    format!(
        "try --buffer-pages {} (now {pages}), or filter in the kernel (--pid, --comm, ...)",
        pages.saturating_mul(factor).min(1 << 20)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_grows_with_the_loss() {
        assert!(bigger_buffer_hint(64, 1, 100).contains("--buffer-pages 128"));
        assert!(bigger_buffer_hint(64, 1000, 100).contains("--buffer-pages 256"));
    }
}
