//! The connections a watch has seen: each one's latest sample (the table) and, with `--plot`,
//! its cwnd and srtt over time. Memory stays bounded however long the run: at most
//! [`MAX_FLOWS`] flows, series for at most [`MAX_SERIES`] of them, [`SERIES_CAP`] points each.
//! A sample costs a hash lookup and a copy; only a new flow allocates.

use std::collections::HashMap;
use std::net::IpAddr;

use super::skel::types::tk_tcpwatch_event as Event;
use crate::runtime::output::{c_chars, sock_addr};

/// Past this many flows, the one quiet the longest is forgotten for a new one.
const MAX_FLOWS: usize = 4096;
/// Flows whose series are kept for the plot (the chart shows the busiest of them).
const MAX_SERIES: usize = 64;
/// Points of one series; a full series is halved and keeps one point in two from then on.
pub const SERIES_CAP: usize = 2048;
/// A flow without a sample for this long gives its series up to a new flow when all are taken.
const IDLE_NS: u64 = 1_000_000_000;
/// tcp_ca_state: the states in which the sender is reacting to loss.
const CA_RECOVERY: u8 = 3;

pub const CA_STATES: [&str; 5] = ["Open", "Disorder", "CWR", "Recovery", "Loss"];

pub fn ca_state_name(s: u8) -> &'static str {
    CA_STATES.get(usize::from(s)).copied().unwrap_or("?")
}

/// Segments in flight as the kernel counts them (tcp_packets_in_flight).
pub fn inflight(ev: &Event) -> u32 {
    let left = i64::from(ev.packets_out) - i64::from(ev.sacked_out) - i64::from(ev.lost_out);
    (left + i64::from(ev.retrans_out)).max(0) as u32
}

/// A socket and its 4-tuple: a new connection that reuses either is another flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    skaddr: u64,
    family: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
}

impl FlowKey {
    fn of(ev: &Event) -> Self {
        FlowKey {
            skaddr: ev.skaddr,
            family: ev.family,
            saddr: ev.saddr,
            daddr: ev.daddr,
            sport: ev.sport,
            dport: ev.dport,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Seconds since the start of the run.
    pub t: f64,
    pub cwnd: u32,
    pub srtt_ms: f64,
    /// This sample entered Recovery or Loss: where cwnd is about to fall.
    pub loss: bool,
}

/// One flow's points, bounded: when full, every pair of points becomes the one that moved cwnd
/// more (so the falls at losses and the peaks before them survive), and later points are kept
/// one per `stride` the same way.
#[derive(Debug)]
pub struct Series {
    points: Vec<Point>,
    stride: u32,
    pending: Option<Point>,
    in_stride: u32,
}

impl Series {
    fn new() -> Self {
        // One more than the cap: the pending point joins at the end.
        Series { points: Vec::with_capacity(SERIES_CAP + 1), stride: 1, pending: None, in_stride: 0 }
    }

    /// How far `p` moves cwnd from the last point kept (a loss always counts most).
    fn weight(&self, p: &Point) -> u32 {
        if p.loss {
            return u32::MAX;
        }
        self.points.last().map_or(0, |l| l.cwnd.abs_diff(p.cwnd))
    }

    fn push(&mut self, p: Point) {
        let pick = match self.pending.take() {
            Some(q) if self.weight(&q) >= self.weight(&p) => q,
            _ => p,
        };
        self.in_stride += 1;
        if self.in_stride < self.stride {
            self.pending = Some(pick);
            return;
        }
        self.in_stride = 0;
        self.points.push(pick);
        if self.points.len() >= SERIES_CAP {
            self.halve();
        }
    }

    fn halve(&mut self) {
        let mut kept = 1;
        let mut i = 1;
        while i < self.points.len() {
            let last = self.points[kept - 1].cwnd;
            let w = |p: &Point| if p.loss { u32::MAX } else { p.cwnd.abs_diff(last) };
            let mut pick = self.points[i];
            if let Some(&other) = self.points.get(i + 1)
                && w(&other) > w(&pick)
            {
                pick = other;
            }
            self.points[kept] = pick;
            kept += 1;
            i += 2;
        }
        self.points.truncate(kept);
        self.stride *= 2;
    }

    /// The points, in time order (perf buffers deliver each CPU's events on their own).
    pub fn finished(&mut self) -> &[Point] {
        if let Some(p) = self.pending.take() {
            self.points.push(p);
        }
        self.points.sort_by(|a, b| a.t.total_cmp(&b.t));
        &self.points
    }
}

#[derive(Debug)]
pub struct Flow {
    key: FlowKey,
    /// The latest sample.
    pub last: Event,
    pub samples: u64,
    /// Sampled since the last table.
    pub fresh: bool,
    pub series: Option<Series>,
}

impl Flow {
    /// `laddr:lport → raddr:rport algo`, the chart's legend.
    pub fn label(&self) -> String {
        let k = &self.key;
        let end = |a: IpAddr, p: u16| match a {
            IpAddr::V4(a) => format!("{a}:{p}"),
            IpAddr::V6(a) => format!("[{a}]:{p}"),
        };
        format!(
            "{} → {} {}",
            end(sock_addr(k.family, &k.saddr), k.sport),
            end(sock_addr(k.family, &k.daddr), k.dport),
            c_chars(&self.last.algo)
        )
    }
}

#[derive(Debug)]
pub struct Flows {
    index: HashMap<FlowKey, usize>,
    pub list: Vec<Flow>,
    plot: bool,
    /// CLOCK_MONOTONIC at the start of the run: the chart's time 0.
    start_ns: u64,
    series: usize,
    /// Flows that got no series (all taken by busier ones), for the note at the end.
    pub unplotted: usize,
}

impl Flows {
    pub fn new(plot: bool) -> Self {
        let start_ns = crate::runtime::kernel::clock_ns(libc::CLOCK_MONOTONIC) as u64;
        Flows { index: HashMap::new(), list: Vec::new(), plot, start_ns, series: 0, unplotted: 0 }
    }

    pub fn record(&mut self, ev: &Event) {
        let key = FlowKey::of(ev);
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => self.add(key, ev),
        };
        let flow = &mut self.list[i];
        let loss = ev.ca_state >= CA_RECOVERY && (flow.samples == 0 || flow.last.ca_state < CA_RECOVERY);
        flow.last = *ev;
        flow.samples += 1;
        flow.fresh = true;
        if let Some(s) = flow.series.as_mut() {
            let t = ev.ts_ns.saturating_sub(self.start_ns) as f64 / 1e9;
            s.push(Point { t, cwnd: ev.cwnd, srtt_ms: f64::from(ev.srtt_us) / 1e3, loss });
        }
    }

    /// A new flow's slot: a free one, else the one quiet the longest.
    fn add(&mut self, key: FlowKey, ev: &Event) -> usize {
        let series = self.plot.then(|| self.take_series(ev.ts_ns)).flatten();
        let flow = Flow { key, last: *ev, samples: 0, fresh: false, series };
        let i = if self.list.len() < MAX_FLOWS {
            self.list.push(flow);
            self.list.len() - 1
        } else {
            let (i, _) = self.list.iter().enumerate().min_by_key(|(_, f)| f.last.ts_ns).expect("MAX_FLOWS > 0");
            self.index.remove(&self.list[i].key);
            if self.list[i].series.is_some() {
                self.series -= 1;
            }
            self.list[i] = flow;
            i
        };
        self.index.insert(key, i);
        i
    }

    /// A series for a new flow: a free one, else that of the idle flow with the fewest samples.
    fn take_series(&mut self, now: u64) -> Option<Series> {
        if self.series < MAX_SERIES {
            self.series += 1;
            return Some(Series::new());
        }
        let victim = self
            .list
            .iter_mut()
            .filter(|f| f.series.is_some() && now.saturating_sub(f.last.ts_ns) >= IDLE_NS)
            .min_by_key(|f| f.samples);
        match victim {
            Some(f) => {
                f.series = None;
                self.unplotted += 1;
                Some(Series::new())
            }
            None => {
                self.unplotted += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64, cwnd: u32, loss: bool) -> Point {
        Point { t, cwnd, srtt_ms: 1.0, loss }
    }

    #[test]
    fn a_full_series_keeps_its_losses_and_stays_bounded() {
        let mut s = Series::new();
        let n = SERIES_CAP * 5;
        for i in 0..n {
            // a sawtooth: cwnd grows to 100, falls to 50 at a loss every 1000 samples
            let loss = i % 1000 == 999;
            let cwnd = if loss { 50 } else { 50 + (i % 1000) as u32 / 20 };
            s.push(point(i as f64, cwnd, loss));
        }
        let pts = s.finished();
        assert!(pts.len() <= SERIES_CAP + 1, "{} points", pts.len());
        assert!(pts.len() > SERIES_CAP / 4, "{} points", pts.len());
        assert_eq!(pts.iter().filter(|p| p.loss).count(), n / 1000, "every loss survives decimation");
        assert!(pts.windows(2).all(|w| w[0].t <= w[1].t));
    }

    #[test]
    fn a_short_series_is_kept_whole() {
        let mut s = Series::new();
        for i in 0..100 {
            s.push(point(f64::from(i), i, false));
        }
        assert_eq!(s.finished().len(), 100);
    }

    #[test]
    fn states_are_named_as_the_kernel_does() {
        assert_eq!(ca_state_name(0), "Open");
        assert_eq!(ca_state_name(3), "Recovery");
        assert_eq!(ca_state_name(4), "Loss");
        assert_eq!(ca_state_name(9), "?");
    }
}
