//! What every tool's skeleton has in common (the parts from `common.bpf.h`), reached through
//! two traits so the runtime can configure, load and stream any tool. `common_skel!` implements
//! them for a generated skeleton; the field-by-field copy lives only in that macro.

use libbpf_rs::{Link, MapMut, MapType, OpenMapMut};

use super::filter::Filter;

/// The BPF side's event channel, decided before load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    RingBuf { bytes: u32 },
    PerfBuf { pages_per_cpu: u32 },
}

impl Transport {
    /// Wake the reader once a quarter of the ring buffer is pending...
    pub fn wakeup_bytes(self) -> u64 {
        match self {
            Transport::RingBuf { bytes } => u64::from(bytes / 4),
            Transport::PerfBuf { .. } => 0,
        }
    }

    /// ...or when the last wakeup is older than this, so a lone event is never held back.
    pub const WAKEUP_NS: u64 = 5_000_000;
}

/// Everything `common_skel!` writes before load.
pub struct CommonConfig<'a> {
    pub filter: &'a Filter,
    pub transport: Transport,
    /// --stack: record stack ids (the stack map exists only then).
    pub stack: bool,
}

/// Switches the shared `tk_events` map to the chosen transport (the libbpf-tools compat trick).
pub fn configure_events_map(map: &mut OpenMapMut<'_>, t: Transport) -> libbpf_rs::Result<()> {
    match t {
        Transport::RingBuf { bytes } => map.set_max_entries(bytes),
        Transport::PerfBuf { .. } => {
            map.set_type(MapType::PerfEventArray)?;
            map.set_key_size(4)?;
            map.set_value_size(4)?;
            // 0 lets libbpf size it to the number of possible CPUs.
            map.set_max_entries(0)
        }
    }
}

/// The transport part of every skeleton (transport.bpf.h): configured before load.
pub trait TransportOpen {
    fn configure_transport(&mut self, t: Transport) -> libbpf_rs::Result<()>;
}

/// The task part of a task tool's skeleton (task.bpf.h, stacks.bpf.h): configured before load.
pub trait CommonOpen: TransportOpen {
    fn configure_common(&mut self, cfg: &CommonConfig<'_>) -> libbpf_rs::Result<()>;
}

/// Value in `tk_follow` for `-- CMD` until it execs (task.bpf.h TK_FOLLOW_ARMED).
pub const FOLLOW_ARMED: u8 = 2;

/// What the runtime streams from: every loaded skeleton has the event channel and drop counts.
pub trait TransportLoaded {
    fn events_map(&self) -> &MapMut<'_>;
    fn drops_map(&self) -> &MapMut<'_>;
    /// The task parts, for task tools (stacks, `-- CMD`); None for packet tools.
    fn task(&self) -> Option<&dyn TaskLoaded>;
}

/// The task parts of a loaded task tool.
pub trait TaskLoaded {
    fn stacks_map(&self) -> &MapMut<'_>;
    fn follow_map(&self) -> &MapMut<'_>;
    /// Attaches the `-- CMD` descendant tracking (loaded only in that mode).
    fn attach_follow(&self) -> libbpf_rs::Result<Vec<Link>>;
}

/// The transport impls of one generated skeleton; `$task` says what `task()` returns.
#[macro_export]
macro_rules! transport_skel {
    ($skel:ident, $open:ident, $loaded:ident, |$s:ident| $task:expr) => {
        impl $crate::runtime::skel::TransportOpen for $skel::$open<'_> {
            fn configure_transport(&mut self, t: $crate::runtime::skel::Transport) -> libbpf_rs::Result<()> {
                use $skel::types as ty;
                let ro = self.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
                let tr: &mut ty::tk_transport = &mut ro.tk_transport;
                tr.use_perfbuf = matches!(t, $crate::runtime::skel::Transport::PerfBuf { .. }) as u32;
                tr.wakeup_bytes = t.wakeup_bytes();
                tr.wakeup_ns = $crate::runtime::skel::Transport::WAKEUP_NS;
                $crate::runtime::skel::configure_events_map(&mut self.maps.tk_events, t)
            }
        }

        impl $crate::runtime::skel::TransportLoaded for $skel::$loaded<'_> {
            fn events_map(&self) -> &libbpf_rs::MapMut<'_> {
                &self.maps.tk_events
            }
            fn drops_map(&self) -> &libbpf_rs::MapMut<'_> {
                &self.maps.tk_drops
            }
            fn task(&self) -> Option<&dyn $crate::runtime::skel::TaskLoaded> {
                let $s = self;
                $task
            }
        }
    };
}

/// Implements the transport and task traits for one task tool's generated skeleton and the
/// header conversion for its event types: `common_skel!(skel, OpenTcpstateSkel, TcpstateSkel)`.
#[macro_export]
macro_rules! common_skel {
    ($skel:ident, $open:ident, $loaded:ident) => {
        $crate::transport_skel!($skel, $open, $loaded, |s| Some(s));

        impl $crate::runtime::skel::CommonOpen for $skel::$open<'_> {
            fn configure_common(&mut self, cfg: &$crate::runtime::skel::CommonConfig<'_>) -> libbpf_rs::Result<()> {
                use $skel::types as t;
                $crate::runtime::skel::TransportOpen::configure_transport(self, cfg.transport)?;
                let ro = self.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
                let f = cfg.filter;
                let k: &mut t::tk_filter = &mut ro.tk_filter;
                k.cgroup_id = f.cgroup.map_or(0, |c| c.id);
                k.cgroup_level = f.cgroup.map_or(0, |c| c.level);
                k.pids[..f.pids.len()].copy_from_slice(&f.pids);
                k.npids = f.pids.len() as u32;
                k.tids[..f.tids.len()].copy_from_slice(&f.tids);
                k.ntids = f.tids.len() as u32;
                k.uid = f.uid.unwrap_or(0);
                k.has_uid = f.uid.is_some() as u32;
                k.follow = f.follow as u32;
                for (dst, src) in k.comm.iter_mut().zip(f.comm.iter()) {
                    *dst = *src as _;
                }
                ro.tk_want_stack = cfg.stack as u32;
                // Not even created without --stack: a stack map reserves per-CPU callchain
                // buffers in the kernel, and libbpf turns the then-dead references into traps.
                self.maps.tk_stacks.set_autocreate(cfg.stack)?;
                self.progs.tk_follow_fork.set_autoload(f.follow);
                self.progs.tk_follow_exit.set_autoload(f.follow);
                self.progs.tk_follow_exec.set_autoload(f.follow);
                Ok(())
            }
        }

        impl $crate::runtime::skel::TaskLoaded for $skel::$loaded<'_> {
            fn stacks_map(&self) -> &libbpf_rs::MapMut<'_> {
                &self.maps.tk_stacks
            }
            fn follow_map(&self) -> &libbpf_rs::MapMut<'_> {
                &self.maps.tk_follow
            }
            fn attach_follow(&self) -> libbpf_rs::Result<Vec<libbpf_rs::Link>> {
                Ok(vec![
                    self.progs.tk_follow_fork.attach()?,
                    self.progs.tk_follow_exit.attach()?,
                    self.progs.tk_follow_exec.attach()?,
                ])
            }
        }

        impl From<&$skel::types::tk_hdr> for $crate::runtime::output::TaskHeader {
            fn from(h: &$skel::types::tk_hdr) -> Self {
                let mut comm = [0u8; 16];
                for (dst, src) in comm.iter_mut().zip(h.comm.iter()) {
                    *dst = *src as u8;
                }
                $crate::runtime::output::TaskHeader {
                    ts_ns: h.ts_ns,
                    pid: h.pid,
                    tid: h.tid,
                    uid: h.uid,
                    cpu: h.cpu,
                    comm,
                }
            }
        }
    };
}

/// Everything a tool module needs from its skeleton, in one line:
/// `tool_skel!("kprobe", OpenKprobeSkel, KprobeSkel, tk_kprobe_event)` includes the generated
/// `$OUT_DIR/kprobe.skel.rs` as module `skel`, implements the common traits for it, and marks
/// the event type as plain data for decoding.
#[macro_export]
macro_rules! tool_skel {
    ($file:literal, $open:ident, $loaded:ident, $event:ident) => {
        $crate::include_skel!($file);
        $crate::common_skel!(skel, $open, $loaded);
        // SAFETY: generated from BTF by libbpf-cargo: integers and arrays of them only.
        unsafe impl plain::Plain for skel::types::$event {}
    };
}

/// The same for a packet tool: transport only, no task parts.
#[macro_export]
macro_rules! packet_skel {
    ($file:literal, $open:ident, $loaded:ident) => {
        $crate::include_skel!($file);
        $crate::transport_skel!(skel, $open, $loaded, |_s| None);
    };
}

/// Includes the generated `$OUT_DIR/<file>.skel.rs` as module `skel`.
#[macro_export]
macro_rules! include_skel {
    ($file:literal) => {
        pub mod skel {
            #![allow(clippy::all, non_camel_case_types, non_snake_case, dead_code, unused_imports)]
            include!(concat!(env!("OUT_DIR"), "/", $file, ".skel.rs"));
        }
    };
}
