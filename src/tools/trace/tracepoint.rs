//! `tracekit tracepoint CAT:NAME…`: classic tracepoints with every field decoded by name and
//! type from the event's `format` file; one generic program copies the record (and the
//! strings its fields point to) as rodata says per event id.

use std::io::{self, Write};
use std::mem::MaybeUninit;

use clap::Args;

use crate::error::Error;
use crate::runtime::attach::tracing;
use crate::runtime::fastfmt;
use crate::runtime::output::{EventHeader, Sink, TaskHeader, c_str};
use crate::runtime::probe::Feature;
use crate::runtime::resolve;
use crate::runtime::tracefs::{FieldKind, Format};
use crate::runtime::value::{Shown, json_call_tail};
use crate::runtime::{CommonArgs, Printer, Runtime, kernel};

crate::tool_skel!("tracepoint", OpenTracepointSkel, TracepointSkel, tk_tp_event);
use skel::{TracepointSkel, TracepointSkelBuilder, types};

/// Must match tracepoint.h.
pub const MAX_TPS: usize = 16;
const DATA: usize = 256;
const STRS: usize = 2;
const STR_LEN: usize = 256;
const STR_PTR: u8 = 1;
const STR_LOC: u8 = 2;

#[derive(Debug, Clone, Args)]
#[command(after_help = "EXAMPLES:\n    \
    tracekit tracepoint syscalls:sys_enter_openat        # every openat, with the path\n    \
    tracekit tracepoint 'syscalls:sys_enter_open*' -f filename\n    \
    tracekit tracepoint sched:sched_process_exec --json\n    \
    tracekit list tracepoint 'sched:*'                    # what exists")]
pub struct TracepointArgs {
    /// CATEGORY:NAME (globs allowed, at most 16 events)
    #[arg(required = true, value_name = "CAT:NAME")]
    pub events: Vec<String>,

    /// Only these fields (repeatable or comma-separated)
    #[arg(short = 'f', long = "field", value_name = "FIELD", value_delimiter = ',')]
    pub fields: Vec<String>,

    /// Also record and print each event's kernel and user stack (symbolized)
    #[arg(long)]
    pub stack: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: TracepointArgs) -> Result<i32, Error> {
    let mut rt = Runtime::new(args.common.clone())?;
    rt.stack = args.stack;
    let (formats, cookies, strs, transport) = rt.plan(|| {
        let tracefs = kernel::ensure_tracefs()?;
        let formats = resolve::tracepoints(&tracefs, &args.events, MAX_TPS)?;
        for f in &args.fields {
            if !formats.iter().any(|fmt| fmt.fields.iter().any(|x| &x.name == f)) {
                let names: Vec<&str> =
                    formats.iter().flat_map(|fmt| fmt.fields.iter().map(|x| x.name.as_str())).collect();
                return Err(Error::usage(
                    format!("no traced event has a field `{f}`"),
                    Some(format!("fields: {}", names.join(", "))),
                ));
            }
        }
        for f in &formats {
            rt.say(format_args!("plan: tracepoint {} (id {}, {} bytes)", f.name, f.id, f.size));
        }
        let cookies = rt.probes.get(Feature::AttachCookie).is_supported();
        if formats.len() > 1 && !cookies {
            return Err(Error::Unsupported {
                feature: "attach_cookie",
                reason: "telling several tracepoints apart needs bpf_get_attach_cookie (Linux 5.15+)".into(),
                hint: Some("trace one tracepoint per tracekit process".into()),
            });
        }
        let strs: Vec<Vec<(usize, u8)>> = formats.iter().map(string_fields).collect();
        Ok((formats, cookies, strs, rt.plan_transport()?))
    })?;
    let mut storage = MaybeUninit::uninit();
    let skel: TracepointSkel<'_> =
        rt.open_load("tracepoint", TracepointSkelBuilder::default(), &mut storage, transport, |open| {
            let ro = open.maps.rodata_data.as_deref_mut().expect("rodata is mmapped before load");
            let c = &mut ro.tk_tp;
            c.ntps = formats.len() as u32;
            c.have_cookie = cookies as u32;
            for ((spec, f), strs) in c.tps.iter_mut().zip(&formats).zip(&strs) {
                spec.id = f.id;
                spec.size = f.size.min(DATA) as u16;
                spec.nstr = strs.len() as u16;
                for (dst, (off, kind)) in spec.str.iter_mut().zip(strs) {
                    dst.offset = *off as u16;
                    dst.kind = *kind;
                }
            }
            Ok(())
        })?;
    let slots = strs.iter().map(|s| s.iter().map(|(off, _)| *off).collect()).collect();
    let printer = TracepointPrinter { formats: formats.clone(), slots, only: args.fields.clone() };
    rt.stream(&skel, transport, printer, |skel| {
        let hint = Some("see `tracekit probe` (tracepoint, tracefs)");
        formats
            .iter()
            .enumerate()
            .map(|(i, f)| tracing::tracepoint(&skel.progs.tp__generic, &f.name, cookies.then_some(i as u64), hint))
            .collect::<Result<Vec<_>, _>>()
    })
}

/// The record offset and kind of the (at most STRS) string fields the BPF side copies.
fn string_fields(f: &Format) -> Vec<(usize, u8)> {
    let kind = |k: &FieldKind| match k {
        FieldKind::StrPtr => Some(STR_PTR),
        FieldKind::StrLoc => Some(STR_LOC),
        _ => None,
    };
    f.fields.iter().filter_map(|x| Some((x.offset, kind(&x.kind)?))).take(STRS).collect()
}

struct TracepointPrinter {
    formats: Vec<Format>,
    /// Per format: the record offset of each string slot's field.
    slots: Vec<Vec<usize>>,
    only: Vec<String>,
}

/// The event's format, and each shown field passed to `f` as (name, value): no allocation.
fn for_each_field<'e>(
    p: &'e TracepointPrinter,
    ev: &'e types::tk_tp_event,
    mut f: impl FnMut(&'e str, Shown<'e>) -> io::Result<()>,
) -> io::Result<Option<&'e Format>> {
    let Some(i) = p.formats.iter().position(|f| f.id == ev.tp_id) else { return Ok(None) };
    let data = &ev.buf[..usize::from(ev.data_len).min(DATA)];
    for field in p.formats[i].fields.iter().filter(|x| p.only.is_empty() || p.only.contains(&x.name)) {
        // The string the BPF side copied for this field, if it has a slot.
        let string = || {
            let slot = p.slots[i].iter().position(|&o| o == field.offset)?;
            let (len, off) = (ev.str_len[slot], usize::from(ev.str_off[slot]));
            let bytes = ev.buf.get(off..(off + STR_LEN).min(ev.buf.len()))?;
            (len > 0).then(|| Shown::Str(c_str(bytes), len as usize >= STR_LEN))
        };
        f(field.name.as_str(), field.shown(data, string))?;
    }
    Ok(Some(&p.formats[i]))
}

impl Printer for TracepointPrinter {
    type Event = types::tk_tp_event;
    const MIN_LEN: usize = std::mem::offset_of!(types::tk_tp_event, buf);

    fn stack_ids(ev: &Self::Event) -> Option<(u32, i32, i32)> {
        Some((ev.hdr.pid, ev.kstack, ev.ustack))
    }
    const COLUMNS: &'static str = "PID     COMM            TRACEPOINT / FIELDS";

    fn header(&self, ev: &Self::Event) -> EventHeader<'_> {
        TaskHeader::from(&ev.hdr).into()
    }

    fn row(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let h = TaskHeader::from(&ev.hdr);
        let Some(i) = self.formats.iter().position(|f| f.id == ev.tp_id) else { return Ok(()) };
        let w = out.w();
        fastfmt::int_col(w, h.pid, 7)?;
        fastfmt::col(w, c_str(&h.comm).as_bytes(), 15)?;
        w.write_all(self.formats[i].name.as_bytes())?;
        for_each_field(self, ev, |name, v| {
            w.write_all(b" ")?;
            w.write_all(name.as_bytes())?;
            w.write_all(b"=")?;
            v.write(w)
        })?;
        Ok(())
    }

    fn json(&mut self, ev: &Self::Event, out: &mut Sink) -> io::Result<()> {
        let Some(i) = self.formats.iter().position(|f| f.id == ev.tp_id) else { return Ok(()) };
        out.field_str("tracepoint", &self.formats[i].name)?;
        out.object_start("fields")?;
        let mut truncated = false;
        for_each_field(self, ev, |name, v| {
            truncated |= v.is_truncated();
            v.json(out, name)
        })?;
        out.object_end()?;
        json_call_tail(out, None, truncated)
    }
}
