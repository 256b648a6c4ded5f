//! The shared runtime every tool runs on: parse → plan → open → configure → load → attach →
//! stream → decode → print → detach. A tool contributes its skeleton, its plan and a [`Printer`].

pub mod attach;
pub mod btf;
pub mod callplan;
pub mod child;
pub mod cli;
pub mod commands;
pub mod echo;
pub mod fastfmt;
pub mod filter;
pub mod hist;
pub mod kernel;
pub mod libbpf_log;
mod lifecycle;
pub mod lost;
pub mod output;
pub mod pcap;
pub mod probe;
pub mod resolve;
pub mod signals;
pub mod skel;
pub mod sockets;
pub mod stackcount;
pub mod symbolize;
pub mod sysctl;
pub mod target;
pub mod tracefs;
pub mod value;
pub mod watch;

use std::cell::{Cell, RefCell};
use std::io::{self, Write};

use std::time::{Duration, Instant};

use std::mem::MaybeUninit;

use libbpf_rs::OpenObject;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, PerfBufferBuilder, RingBufferBuilder};

use crate::error::Error;
use child::GatedChild;
pub use cli::{CommonArgs, OutputArgs, TaskArgs, TransportChoice};
use filter::Filter;
use output::{EventHeader, Sink};
use probe::{Feature, Probes};
pub use skel::{CommonConfig, CommonOpen, TaskLoaded, Transport, TransportLoaded, TransportOpen};

const PAGE: u32 = 4096;
const DEFAULT_RINGBUF_PAGES: u32 = 512;
const DEFAULT_PERFBUF_PAGES: u32 = 64;
/// Longest sleep between checks of Ctrl-C, --duration, the child and a closed stdout.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LOST_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// libbpf's ring-buffer poll keeps reading while the producer keeps writing: under a flood it
/// would never return, and Ctrl-C, --duration and the end of CMD would never be seen. The
/// handler ends a poll after this many events (the event is kept; only the poll returns),
/// so the run loop checks them at least this often.
const PAUSE_EVERY: u32 = 4096;

pub use signals::stop_requests;

/// How one tool turns its event into a table row or JSON fields.
pub trait Printer {
    type Event: plain::Plain + Default + Copy;
    /// Events are sent with their used length only, at least this long (the rest reads as zeros).
    const MIN_LEN: usize = size_of::<Self::Event>();
    /// Table column titles (the time column is added by the runtime).
    const COLUMNS: &'static str;
    /// The titles of this run (tools whose columns depend on their options).
    fn columns(&self) -> &str {
        Self::COLUMNS
    }
    fn header(&self, ev: &Self::Event) -> EventHeader<'_>;
    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()>;
    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()>;
    /// (pid, kernel stack id, user stack id) of an event, for tools that record them.
    fn stack_ids(_ev: &Self::Event) -> Option<(u32, i32, i32)> {
        None
    }
    /// Sees every event, printed or not (before it is): for tools that keep state from their
    /// events, such as a table printed every `--interval` instead of rows.
    fn observe(&mut self, _ev: &Self::Event) {}
    /// Whether events are printed (as rows or JSON); a capture to stdout (`-w -`) prints none.
    fn prints_events(&self) -> bool {
        true
    }
    /// The bytes an event record carries after the event itself (a packet's frame with `-w`).
    fn trailer(&mut self, _ev: &Self::Event, _bytes: &[u8]) -> io::Result<()> {
        Ok(())
    }
    /// Called after every poll (at most every 100 ms), for tools that print counters with
    /// `--interval`.
    fn tick(&mut self, _out: &mut Sink) -> io::Result<()> {
        Ok(())
    }
    /// Called once at the end, before the summary: a tool's closing counters.
    fn finish(&mut self, _out: &mut Sink) -> io::Result<()> {
        Ok(())
    }
    /// The next event the tool made in user space (the sockmap proxy's connections: only user
    /// space sees them pair up or fail), if any: handled like the kernel's events (printed,
    /// counted for `--count`) after each poll, so at most 100 ms late.
    fn user_event(&mut self) -> Option<Self::Event> {
        None
    }
}

pub struct Runtime {
    pub out: OutputArgs,
    /// Task options (empty for packet tools).
    pub task: TaskArgs,
    /// --stack (for the tools that offer it): record and print each event's stacks.
    pub stack: bool,
    pub probes: Probes,
    pub filter: Filter,
    started: Instant,
    /// The `-p` processes: the run ends once all of them have exited.
    pids: watch::PidWatch,
    /// A `-- CMD` a tool started and placed itself (the cgroup tool's transient cgroup), held
    /// at its gate until [`Runtime::stream`] has attached.
    placed_child: Option<GatedChild>,
}

impl Runtime {
    /// A task tool's runtime: validates the options and installs the Ctrl-C / SIGTERM handler.
    pub fn new(args: CommonArgs) -> Result<Self, Error> {
        check_command_given(&args.task)?;
        Self::with(args.out, args.task)
    }

    /// A packet tool's runtime: no task filter, no `-- CMD`.
    pub fn for_packets(out: OutputArgs) -> Result<Self, Error> {
        Self::with(out, TaskArgs::default())
    }

    fn with(out: OutputArgs, task: TaskArgs) -> Result<Self, Error> {
        let started = Instant::now();
        watch::check_stdout_open()?;
        libbpf_log::install(out.verbose);
        kernel::check_privileges()?;
        kernel::raise_memlock();
        if let Some(btf) = &out.btf {
            btf::check_file(btf)?;
        }
        let filter = Filter::from_args(&task)?;
        let pids = watch::PidWatch::open(&task)?;
        // main installs it first thing; this covers the library's other users (tests, benches).
        signals::install()?;
        Ok(Runtime { out, task, stack: false, probes: Probes::default(), filter, started, pids, placed_child: None })
    }

    /// Tools that count in kernel maps and print tables at the end or per interval (count,
    /// profile) have no event stream: the options about events are refused, not ignored.
    pub fn counts_in_kernel(&self, tool: &str, what: &str) -> Result<(), Error> {
        let given = [
            (self.out.count.is_some(), "--count", "use --duration"),
            (self.out.timestamp, "-T/--timestamp", "counts have no per-event time to print; drop -T"),
            (self.out.transport != TransportChoice::Auto, "--transport", "the counts are read from maps, not streamed"),
            (self.out.buffer_pages.is_some(), "--buffer-pages", "the counts are read from maps, not streamed"),
        ];
        match given.into_iter().find(|(on, ..)| *on) {
            Some((_, flag, hint)) => Err(Error::usage(
                format!("{tool} counts {what} in the kernel and prints no events: {flag} does not apply"),
                Some(hint.to_owned()),
            )),
            None => Ok(()),
        }
    }

    /// Prints a lifecycle line with -v.
    pub fn say(&self, msg: impl std::fmt::Display) {
        if self.out.verbose > 0 {
            // One write: `-- CMD` shares stderr, and a line written in pieces can be split by
            // CMD's own output.
            let line = format!("tracekit: {msg}\n");
            let _ = io::stderr().write_all(line.as_bytes());
        }
    }

    /// The -v line that says tracing is in place (tests and benchmarks wait for it).
    pub fn attached(&self) {
        self.say(format_args!("attached after {:.2} ms", self.started.elapsed().as_secs_f64() * 1e3));
    }

    /// Runs one lifecycle step, timing it for -v.
    pub fn step<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        self.say(format_args!("{name}: {:.2} ms", t.elapsed().as_secs_f64() * 1e3));
        r
    }

    /// The transport for this run, decided before load.
    pub fn transport(&self) -> Result<Transport, Error> {
        let ring = self.probes.get(Feature::RingBuf);
        let use_ring = match self.out.transport {
            TransportChoice::Ringbuf if !ring.is_supported() => {
                return Err(Error::Unsupported {
                    feature: "ringbuf",
                    reason: ring.detail(),
                    hint: Some("use --transport perfbuf".into()),
                });
            }
            TransportChoice::Ringbuf => true,
            TransportChoice::Perfbuf => false,
            TransportChoice::Auto => ring.is_supported(),
        };
        Ok(if use_ring {
            let pages = self.out.buffer_pages.unwrap_or(DEFAULT_RINGBUF_PAGES).next_power_of_two();
            Transport::RingBuf { bytes: pages * PAGE }
        } else {
            let pages = self.out.buffer_pages.unwrap_or(DEFAULT_PERFBUF_PAGES).next_power_of_two();
            if pages > cli::output::MAX_PERFBUF_PAGES {
                return Err(Error::usage(
                    format!(
                        "--buffer-pages {} is more than the kernel accepts for a perf buffer: at most {} pages per CPU",
                        self.out.buffer_pages.unwrap_or_default(),
                        cli::output::MAX_PERFBUF_PAGES
                    ),
                    Some(
                        "give a smaller --buffer-pages, or use the ring buffer (--transport ringbuf, 5.8+)".to_owned(),
                    ),
                ));
            }
            Transport::PerfBuf { pages_per_cpu: pages }
        })
    }

    fn pages(t: Transport) -> u32 {
        match t {
            Transport::RingBuf { bytes } => bytes / PAGE,
            Transport::PerfBuf { pages_per_cpu } => pages_per_cpu,
        }
    }

    /// Opens a tool's skeleton, with the external kernel BTF of --btf when given.
    pub fn open<'o, B: SkelBuilder<'o>>(
        &self,
        tool: &'static str,
        mut builder: B,
        storage: &'o mut MaybeUninit<OpenObject>,
    ) -> Result<B::Output, Error> {
        if let Some(btf) = &self.out.btf {
            builder
                .object_builder_mut()
                .btf_custom_path(btf)
                .map_err(|e| Error::usage(format!("--btf `{}`: {e}", btf.display()), None))?;
        }
        self.step("open", || builder.open(storage)).map_err(|source| Error::Load {
            tool,
            log_tail: libbpf_log::take_tail(10),
            verbose: self.out.verbose > 0,
            source,
        })
    }

    /// Writes a packet tool's transport configuration into an opened skeleton.
    pub fn configure_transport<O: TransportOpen>(&self, open: &mut O, transport: Transport) -> Result<(), Error> {
        open.configure_transport(transport).map_err(|e| Error::runtime(format!("configuring the BPF maps: {e}"), None))
    }

    /// Writes the common configuration (filter, transport) into an opened skeleton.
    pub fn configure<O: CommonOpen>(&self, open: &mut O, transport: Transport) -> Result<(), Error> {
        open.configure_common(&CommonConfig { filter: &self.filter, transport, stack: self.stack })
            .map_err(|e| Error::runtime(format!("configuring the BPF maps: {e}"), None))
    }

    /// Loads an opened, configured skeleton; a rejection carries the verifier log's tail.
    pub fn load<'o, O: OpenSkel<'o>>(&self, tool: &'static str, open: O) -> Result<O::Output, Error> {
        // From here on there is something to undo: a signal stops the run loop instead.
        signals::setup_done();
        let t = Instant::now();
        match open.load() {
            Ok(skel) => {
                self.say(format_args!("load: {:.2} ms", t.elapsed().as_secs_f64() * 1e3));
                libbpf_log::take_tail(0);
                Ok(skel)
            }
            Err(source) => {
                let verbose = self.out.verbose > 0;
                // With -v libbpf already echoed everything.
                let log_tail = libbpf_log::take_tail(if verbose { 0 } else { 10 });
                Err(Error::Load { tool, log_tail, verbose, source })
            }
        }
    }

    /// Streams events until Ctrl-C/SIGTERM, --duration, --count, a closed stdout or the end of
    /// `-- CMD`; prints them; reports losses. Returns the exit status.
    ///
    /// `attach` runs once the event channel is open, so no event is lost in between (a perf
    /// buffer does not exist for the kernel until it is opened).
    pub fn stream<P: Printer, S: TransportLoaded, A>(
        &mut self,
        skel: &S,
        transport: Transport,
        printer: P,
        attach: impl FnOnce(&S) -> Result<A, Error>,
    ) -> Result<i32, Error> {
        let sink = Sink::new(self.out.json, self.out.timestamp, kernel::monotonic_to_realtime_ns());
        let state = RefCell::new(StreamState {
            printer,
            sink,
            events: 0,
            limit: self.out.count,
            done: false,
            since_pause: 0,
            paused: false,
            write_error: None,
            malformed: 0,
            first_event: None,
            stacks: skel.task().filter(|_| self.stack).map(|t| (t.stacks_map(), symbolize::Stacks::new())),
        });
        let perf_lost = Cell::new(0u64);
        let source = self.step("event buffer", || EventSource::new(skel, transport, &state, &perf_lost))?;
        let links = self.step("attach", || attach(skel))?;
        let (mut child, follow_links) = self.start_child(skel)?;
        self.attached();
        {
            let mut st = state.borrow_mut();
            if !st.sink.json && st.printer.prints_events() {
                let st = &mut *st;
                let r = st.sink.table_header(st.printer.columns()).and_then(|()| st.sink.flush());
                st.note_write(r);
            }
        }
        if let Some(c) = child.as_mut() {
            c.release()?;
        }

        let until = Until::new(self.out.duration);
        let mut next_lost_check = Instant::now() + LOST_CHECK_INTERVAL;
        let mut reported_lost = 0u64;
        let mut announced_first = false;
        loop {
            if state.borrow().done {
                break;
            }
            let Some(timeout) = until.next_wait(self, child.as_mut()) else {
                // A closed stdout: the buffered tail has no reader either.
                if watch::stdout_closed() {
                    state.borrow_mut().done = true;
                }
                break;
            };
            let polled = source.poll(timeout).and_then(|()| source.consume_unwoken());
            state.borrow_mut().user_events();
            let paused = std::mem::take(&mut state.borrow_mut().paused);
            if let Err(e) = polled
                && !state.borrow().done
                && !paused
                && e.kind() != libbpf_rs::ErrorKind::Interrupted
            {
                return Err(Error::runtime(format!("reading events: {e}"), None));
            }
            {
                let mut st = state.borrow_mut();
                let st = &mut *st;
                let r = st.printer.tick(&mut st.sink).and_then(|()| st.sink.flush());
                st.note_write(r);
                if !announced_first && let Some(t) = st.first_event {
                    announced_first = true;
                    self.say(format_args!("first event after {:.2} ms", (t - self.started).as_secs_f64() * 1e3));
                }
            }
            if Instant::now() >= next_lost_check {
                next_lost_check += LOST_CHECK_INTERVAL;
                let lost = lost_total(skel, &perf_lost);
                if lost > reported_lost {
                    let delta = lost - reported_lost;
                    reported_lost = lost;
                    let mut st = state.borrow_mut();
                    if st.sink.json {
                        let r = emit_lost(&mut st.sink, delta, lost);
                        st.note_write(r);
                    } else {
                        eprintln!("tracekit: lost {delta} events ({lost} in all): the buffer was full");
                    }
                }
            }
        }
        // Detached first, so that no new event comes in; then the events already in the buffer
        // are still delivered (a child's last events, the tail before Ctrl-C), unless the
        // consumer is gone or --count was reached. Each consume stops at a pause; the buffer
        // only shrinks now, so this ends.
        drop(links);
        drop(follow_links);
        state.borrow_mut().user_events();
        while !state.borrow().done {
            let _ = source.consume();
            if !std::mem::take(&mut state.borrow_mut().paused) {
                break;
            }
        }
        drop(source);
        if state.borrow().done
            && let Some(c) = child.as_mut()
        {
            c.tracing_ended();
        }

        let lost = lost_total(skel, &perf_lost);
        let mut st = state.into_inner();
        if st.malformed > 0 {
            eprintln!("tracekit: warning: {} malformed samples skipped", st.malformed);
        }
        if lost > 0 {
            eprintln!(
                "tracekit: lost {lost} events ({} delivered): the {} was full",
                st.events,
                match transport {
                    Transport::RingBuf { .. } => "ring buffer",
                    Transport::PerfBuf { .. } => "perf buffer",
                }
            );
            eprintln!("hint: {}", lost::bigger_buffer_hint(Self::pages(transport), lost, st.events));
        }
        if st.write_error.is_none() {
            let r = st.printer.finish(&mut st.sink);
            st.note_write(r);
        }
        if st.sink.json && st.write_error.is_none() {
            let elapsed = self.started.elapsed().as_secs_f64();
            let r = emit_summary(&mut st.sink, st.events, lost, elapsed).and_then(|()| st.sink.flush());
            st.note_write(r);
        }
        if let Some(e) = st.write_error.take()
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            return Err(Error::io("writing output", e));
        }
        self.say(format_args!("{} events, {lost} lost", st.events));
        let mut code = child.map_or(0, GatedChild::finish);
        if self.out.fail_on_loss && lost > 0 && code == 0 {
            code = 1;
        }
        Ok(code)
    }
}

impl Runtime {
    /// `-- CMD`: attaches the descendant tracking, starts CMD held at its gate and follows its
    /// pid. Release it with [`GatedChild::release`] once tracing is attached.
    pub fn start_child<S: TransportLoaded + ?Sized>(
        &mut self,
        skel: &S,
    ) -> Result<(Option<GatedChild>, Vec<Link>), Error> {
        if let Some(c) = self.placed_child.take() {
            return Ok((Some(c), Vec::new()));
        }
        let Some(skel) = skel.task().filter(|_| self.filter.follow) else {
            return Ok((None, Vec::new()));
        };
        let links = skel.attach_follow().map_err(|source| Error::Attach {
            what: "raw_tp/sched_process_fork (follows -- CMD's children)".into(),
            hint: None,
            source,
        })?;
        let c = GatedChild::spawn(&self.task.command)?;
        skel.follow_map()
            .update(&c.pid().to_ne_bytes(), &[skel::FOLLOW_ARMED], MapFlags::ANY)
            .map_err(|e| Error::runtime(format!("following `-- CMD` (pid {}): {e}", c.pid()), None))?;
        Ok((Some(c), links))
    }

    /// `-- CMD` in a cgroup of its own, for tools whose programs attach to a cgroup: removes
    /// the transient cgroups killed tracekits left, creates one below `root`'s transient parent,
    /// starts CMD in it held at its gate (it dies with tracekit) and places it: the run releases
    /// it once attached. End with [`attach::TransientCgroup::finish`].
    pub fn command_in_cgroup(
        &mut self,
        root: &std::path::Path,
        command: &[std::ffi::OsString],
    ) -> Result<attach::TransientCgroup, Error> {
        let parent = attach::cgroup::transient_parent(root);
        for stale in attach::TransientCgroup::sweep_stale(&parent) {
            eprintln!("tracekit: removed cgroup `{}`, left empty by a tracekit that was killed", stale.display());
        }
        let hint = std::path::Path::new(&command[0]).file_name().map(|n| n.to_string_lossy().into_owned());
        let t = self.step("cgroup", || attach::TransientCgroup::create(&parent, hint.as_deref().unwrap_or("cmd")))?;
        self.say(format_args!("transient cgroup {}", t.path().display()));
        let child = GatedChild::spawn_with(command, true)?;
        t.add_pid(child.pid())?;
        self.place_child(child);
        Ok(t)
    }

    /// Hands over a `-- CMD` the tool started (held at its gate) and placed where its programs
    /// see it: the run releases it once attached, ends with it and exits with its status.
    pub fn place_child(&mut self, child: GatedChild) {
        self.placed_child = Some(child);
    }

    /// Blocks until Ctrl-C/SIGTERM, --duration, the end of `-- CMD` or of every `-p` process, or
    /// a closed stdout, calling `tick` at most every poll interval (for tools that aggregate in
    /// the kernel instead of streaming).
    pub fn wait(&self, mut child: Option<&mut GatedChild>, mut tick: impl FnMut()) {
        let until = Until::new(self.out.duration);
        while let Some(t) = until.next_wait(self, child.as_deref_mut()) {
            std::thread::sleep(t);
            tick();
        }
    }
}

/// A bare `--` (nothing after it) would silently mean "trace everything".
fn check_command_given(task: &TaskArgs) -> Result<(), Error> {
    if task.command.is_empty() && std::env::args_os().last().is_some_and(|a| a == "--") {
        return Err(Error::usage(
            "`--` must be followed by the command to run",
            Some("write `-- CMD [ARGS...]`, or drop `--` to trace every process".to_owned()),
        ));
    }
    Ok(())
}

/// When a run ends: Ctrl-C/SIGTERM, --duration, the end of `-- CMD` or of every `-p` process,
/// or a closed stdout.
struct Until {
    deadline: Option<Instant>,
}

impl Until {
    fn new(duration: Option<Duration>) -> Self {
        Until { deadline: duration.map(|d| Instant::now() + d) }
    }

    /// How long to wait before looking again, or None once the run is over.
    /// Tracing's own ends are looked at before CMD's: a Ctrl-C that also killed CMD (the
    /// terminal signals the whole process group) ended the run, not CMD.
    fn next_wait(&self, rt: &Runtime, mut child: Option<&mut GatedChild>) -> Option<Duration> {
        let now = Instant::now();
        if stop_requests() > 0
            || self.deadline.is_some_and(|d| d <= now)
            || rt.pids.all_exited()
            || watch::stdout_closed()
        {
            if let Some(c) = child.as_deref_mut() {
                c.tracing_ended();
            }
            return None;
        }
        if child.is_some_and(|c| c.exited().is_some()) {
            return None;
        }
        Some(self.deadline.map_or(POLL_INTERVAL, |d| POLL_INTERVAL.min(d - now)))
    }
}

fn lost_total<S: TransportLoaded>(skel: &S, perf_lost: &Cell<u64>) -> u64 {
    lost::read_drops(skel.drops_map()).max(perf_lost.get())
}

fn emit_lost(sink: &mut Sink, count: u64, total: u64) -> io::Result<()> {
    sink.obj_start("lost")?;
    sink.field_u64("count", count)?;
    sink.field_u64("total", total)?;
    sink.obj_end()
}

fn emit_summary(sink: &mut Sink, events: u64, lost: u64, secs: f64) -> io::Result<()> {
    sink.obj_start("summary")?;
    sink.field_u64("schema", output::JSON_SCHEMA.into())?;
    sink.field_u64("events", events)?;
    sink.field_u64("lost", lost)?;
    sink.field_f64("duration_s", secs, 3)?;
    sink.obj_end()
}

struct StreamState<'s, P: Printer> {
    printer: P,
    sink: Sink,
    events: u64,
    limit: Option<u64>,
    /// No more events wanted: --count reached or stdout closed.
    done: bool,
    /// Events handled since the last pause (see [`PAUSE_EVERY`]).
    since_pause: u32,
    /// The last poll ended at a pause, not at an error.
    paused: bool,
    write_error: Option<io::Error>,
    malformed: u64,
    first_event: Option<Instant>,
    /// --stack: the stack map and the symbolizer.
    stacks: Option<(&'s libbpf_rs::MapMut<'s>, symbolize::Stacks)>,
}

impl<P: Printer> StreamState<'_, P> {
    /// The event's stacks (kernel, user), symbolized: on their own lines, or JSON arrays.
    fn write_stacks(&mut self, ev: &P::Event) -> io::Result<()> {
        let (Some((map, names)), Some((pid, k, u))) = (&self.stacks, P::stack_ids(ev)) else { return Ok(()) };
        // User frames first: the process must still be running to be symbolized.
        let user = names.user(pid, &symbolize::stack_addrs(map, u));
        let kernel = names.kernel(&symbolize::stack_addrs(map, k));
        if self.sink.json {
            let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
            self.sink.field_raw("kstack", &list(&kernel))?;
            self.sink.field_raw("ustack", &list(&user))
        } else {
            let w = self.sink.w();
            for f in kernel.iter().chain(&user) {
                w.write_all(b"\n        ")?;
                w.write_all(f.as_bytes())?;
            }
            Ok(())
        }
    }

    fn note_write(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            self.done = true;
            self.write_error.get_or_insert(e);
        }
    }

    /// One sample: decode (length-checked, alignment-safe), print. Returns false to stop.
    fn handle(&mut self, data: &[u8]) -> bool {
        if self.done {
            return false;
        }
        let mut ev = P::Event::default();
        if data.len() < P::MIN_LEN {
            self.malformed += 1;
            return true;
        }
        // SAFETY: Event is Plain (every byte pattern is a valid value), and the bytes are only
        // written through this view.
        let bytes = unsafe { plain::as_mut_bytes(&mut ev) };
        let n = data.len().min(bytes.len());
        bytes[..n].copy_from_slice(&data[..n]);
        let trailer = data.get(size_of::<P::Event>()..).unwrap_or_default();
        self.handle_event(&ev, trailer)
    }

    /// The events the tool made in user space, until --count or a pause.
    fn user_events(&mut self) {
        while !self.done
            && let Some(ev) = self.printer.user_event()
        {
            if !self.handle_event(&ev, &[]) {
                break;
            }
        }
    }

    /// One decoded event (and the bytes after it): print. Returns false to stop.
    fn handle_event(&mut self, ev: &P::Event, trailer: &[u8]) -> bool {
        let ev = *ev;
        if self.first_event.is_none() {
            self.first_event = Some(Instant::now());
        }
        self.printer.observe(&ev);
        let r = if !trailer.is_empty() { self.printer.trailer(&ev, trailer) } else { Ok(()) };
        let r = if r.is_err() || !self.printer.prints_events() {
            r
        } else if self.sink.json {
            let hdr = self.printer.header(&ev);
            self.sink
                .event_start(&hdr)
                .and_then(|()| self.printer.json(&ev, &mut self.sink))
                .and_then(|()| self.write_stacks(&ev))
                .and_then(|()| self.sink.obj_end())
        } else {
            let hdr = self.printer.header(&ev);
            self.sink
                .row_start(&hdr)
                .and_then(|()| self.printer.row(&ev, &mut self.sink))
                .and_then(|()| self.write_stacks(&ev))
                .and_then(|()| self.sink.row_end())
        };
        self.note_write(r);
        self.events += 1;
        if self.limit.is_some_and(|n| self.events >= n) {
            self.done = true;
        }
        self.since_pause += 1;
        if !self.done && self.since_pause >= PAUSE_EVERY {
            self.since_pause = 0;
            self.paused = true;
            return false;
        }
        !self.done
    }
}

enum EventSource<'a> {
    Ring(libbpf_rs::RingBuffer<'a>),
    Perf(libbpf_rs::PerfBuffer<'a>),
}

impl<'a> EventSource<'a> {
    fn new<'s: 'a, P: Printer, S: TransportLoaded>(
        skel: &'a S,
        transport: Transport,
        state: &'a RefCell<StreamState<'s, P>>,
        perf_lost: &'a Cell<u64>,
    ) -> Result<Self, Error> {
        let map = skel.events_map();
        let err = |e: libbpf_rs::Error| Error::runtime(format!("opening the event buffer: {e}"), None);
        Ok(match transport {
            Transport::RingBuf { .. } => {
                let mut b = RingBufferBuilder::new();
                b.add(map, move |data: &[u8]| if state.borrow_mut().handle(data) { 0 } else { -libc::ECANCELED })
                    .map_err(err)?;
                EventSource::Ring(b.build().map_err(err)?)
            }
            Transport::PerfBuf { pages_per_cpu } => EventSource::Perf(
                PerfBufferBuilder::new(map)
                    .pages(pages_per_cpu as usize)
                    .sample_cb(move |_cpu, data: &[u8]| {
                        state.borrow_mut().handle(data);
                    })
                    .lost_cb(move |_cpu, n| perf_lost.set(perf_lost.get() + n))
                    .build()
                    .map_err(err)?,
            ),
        })
    }

    fn poll(&self, timeout: Duration) -> libbpf_rs::Result<()> {
        match self {
            EventSource::Ring(rb) => rb.poll(timeout),
            EventSource::Perf(pb) => pb.poll(timeout),
        }
    }

    /// Records the kernel submitted without a wakeup (the batching in transport.bpf.h): the
    /// tail of a burst followed by silence would otherwise wait for the next event's wakeup,
    /// for ever if none comes. Looking after every poll bounds their delay by the poll
    /// interval. A perf buffer wakes on every record, so there is nothing to look for.
    fn consume_unwoken(&self) -> libbpf_rs::Result<()> {
        match self {
            EventSource::Ring(rb) => rb.consume(),
            EventSource::Perf(_) => Ok(()),
        }
    }

    fn consume(&self) -> libbpf_rs::Result<()> {
        match self {
            EventSource::Ring(rb) => rb.consume(),
            EventSource::Perf(pb) => pb.consume(),
        }
    }
}
