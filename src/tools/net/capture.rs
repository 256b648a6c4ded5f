//! `-w FILE`: the packet tools' captures, in pcapng (what tcpdump -r, tshark and Wireshark
//! read). Each matched packet is an Enhanced Packet Block with the frame's first `--snaplen`
//! bytes, its length on the wire and its capture time in nanoseconds; each interface gets an
//! Interface Description Block when its first packet comes. What tcpdump cannot know goes into
//! the packet's options: the direction as the standard `epb_flags`, and the hook, verdict and
//! (with `--sock`) the owning socket's state as a comment (`tracekit: hook=xdp verdict=pass`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::Block;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};

use super::packet::PacketEvent;
use crate::error::Error;

/// tcpdump's default snapshot length.
pub const DEFAULT_SNAPLEN: u32 = 262_144;
/// epb_flags direction bits (pcapng §4.3.1): 01 inbound, 10 outbound.
const INBOUND: u32 = 1;
const OUTBOUND: u32 = 2;
/// if_tsresol: timestamps in nanoseconds (what tracekit's clock gives).
const NANOSECONDS: u8 = 9;

pub struct Capture {
    writer: PcapNgWriter<BufWriter<Box<dyn Write>>>,
    /// ifindex → interface id in the file.
    interfaces: HashMap<u32, u32>,
    snaplen: u32,
    /// Reused for every packet's comment and options: no allocation per packet.
    comment: String,
    options: Vec<EnhancedPacketOption<'static>>,
}

impl Capture {
    /// Opens `path` (`-` for stdout) and writes the section header.
    pub fn create(path: &Path, snaplen: u32) -> Result<Capture, Error> {
        let out: Box<dyn Write> = if path == Path::new("-") {
            Box::new(io::stdout())
        } else {
            Box::new(File::create(path).map_err(|e| Error::io(format!("creating `{}`", path.display()), e))?)
        };
        let section = SectionHeaderBlock {
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "tracekit {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let writer = PcapNgWriter::with_section_header(BufWriter::with_capacity(256 * 1024, out), section)
            .map_err(|e| Error::runtime(format!("writing the capture header to `{}`: {e}", path.display()), None))?;
        Ok(Capture {
            writer,
            interfaces: HashMap::new(),
            snaplen,
            comment: String::with_capacity(64),
            options: Vec::with_capacity(2),
        })
    }

    /// Writes one packet: `frame` is what the kernel copied (at most the snaplen), `name` the
    /// interface's name for its description block, `sock` the owning socket's state (--sock).
    pub fn write(
        &mut self,
        ev: &PacketEvent,
        frame: &[u8],
        realtime_ns: i128,
        name: &str,
        hook: &str,
        sock: Option<&str>,
    ) -> io::Result<()> {
        let interface_id = match self.interfaces.get(&ev.hdr.ifindex) {
            Some(&id) => id,
            None => self.describe_interface(ev.hdr.ifindex, name)?,
        };
        use std::fmt::Write as _;
        self.comment.clear();
        let _ = write!(self.comment, "tracekit: hook={hook} verdict={}", super::packet::verdict_name(ev.verdict));
        if let Some(state) = sock {
            let _ = write!(self.comment, " sock={state}");
        }
        let flags = if ev.hdr.dir == 1 { OUTBOUND } else { INBOUND };
        // The block borrows the frame and the comment for the write only; its option vector is
        // the same allocation every time (no allocation per packet).
        // SAFETY: both references are dropped before this function returns: the block is
        // consumed below and its options are cleared before the vector is kept for the next
        // packet, so nothing outlives `frame` or a change of `self.comment`.
        let (frame, comment): (&'static [u8], &'static str) =
            unsafe { (&*(frame as *const [u8]), &*(self.comment.as_str() as *const str)) };
        let mut options = std::mem::take(&mut self.options);
        options.push(EnhancedPacketOption::Flags(flags));
        options.push(EnhancedPacketOption::Comment(Cow::Borrowed(comment)));
        let block = Block::EnhancedPacket(EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(u64::try_from(realtime_ns).unwrap_or(0)),
            original_len: ev.hdr.len,
            data: Cow::Borrowed(frame),
            options,
        });
        let written = self.writer.write_block(&block).map(|_| ()).map_err(to_io);
        if let Block::EnhancedPacket(epb) = block {
            self.options = epb.options;
            self.options.clear();
        }
        written
    }

    fn describe_interface(&mut self, ifindex: u32, name: &str) -> io::Result<u32> {
        let id = self.interfaces.len() as u32;
        let block = Block::InterfaceDescription(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: self.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed(name)),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(format!("ifindex {ifindex}"))),
                InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
            ],
        });
        self.writer.write_block(&block).map_err(to_io)?;
        self.interfaces.insert(ifindex, id);
        Ok(id)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.get_mut().flush()
    }
}

fn to_io(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}
