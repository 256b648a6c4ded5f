//! Packet tools (xdp, tc, sockfilter) and what they share: the skeletons and their event type.

pub mod skels;
