//! placeholder until the kprobe tool lands
