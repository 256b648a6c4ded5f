//! Classic BPF (what libpcap compiles a tcpdump expression to) translated to eBPF instructions
//! that replace the body of the packet programs' filter function `tk_pcap_filter(ctx, data,
//! data_end, len)` (src/bpf/include/pkt.bpf.h). The result is a subprogram: it returns the
//! classic program's return value (non-zero: the packet matches).
//!
//! Registers: R6 holds the packet's start (XDP) or the `__sk_buff` (tc, socket), R7 the packet's
//! end (XDP), R8 is classic BPF's A and R9 its X (callee-saved, so helper calls keep them); the
//! 16 scratch words M[] and a load buffer live on the stack. Every packet load is checked: a
//! load past the packet's end rejects the packet, as it does in classic BPF.

use super::ClassicInsn;

/// How the generated code reads packet bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketAccess {
    /// XDP: direct loads between `data` and `data_end` (arguments 2 and 3).
    Direct,
    /// tc: `bpf_skb_load_bytes` (offset 0 is the MAC header), so a non-linear skb reads whole.
    SkbLoadBytes,
    /// Socket filters: `bpf_skb_load_bytes_relative` from the MAC header.
    SkbLoadBytesFromMac,
}

/// A classic BPF construct the translation does not take, named for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

// Classic BPF fields (linux/filter.h; the eBPF encodings share the class, size, mode, ALU and
// jump opcode values).
const CLASS_LD: u16 = 0x00;
const CLASS_LDX: u16 = 0x01;
const CLASS_ST: u16 = 0x02;
const CLASS_STX: u16 = 0x03;
const CLASS_ALU: u16 = 0x04;
const CLASS_JMP: u16 = 0x05;
const CLASS_RET: u16 = 0x06;
const CLASS_MISC: u16 = 0x07;
const MODE_IMM: u16 = 0x00;
const MODE_ABS: u16 = 0x20;
const MODE_IND: u16 = 0x40;
const MODE_MEM: u16 = 0x60;
const MODE_LEN: u16 = 0x80;
const MODE_MSH: u16 = 0xa0;
const SRC_X: u16 = 0x08;
const ALU_DIV: u16 = 0x30;
const ALU_LSH: u16 = 0x60;
const ALU_RSH: u16 = 0x70;
const ALU_NEG: u16 = 0x80;
const ALU_MOD: u16 = 0x90;
const JMP_JA: u16 = 0x00;
const RET_K: u16 = 0x00;
const RET_X: u16 = 0x08;
const RET_A: u16 = 0x10;
const MISC_TAX: u16 = 0x00;
const MISC_TXA: u16 = 0x80;
/// Loads at or above this offset read the kernel's ancillary data (SKF_AD_OFF), not the packet.
const ANCILLARY_BASE: u32 = 0xffff_f000;
/// Classic BPF's scratch memory: M[0..16].
const SCRATCH_WORDS: u32 = 16;

// eBPF encodings (linux/bpf.h).
const EBPF_LD: u8 = 0x00;
const EBPF_LDX: u8 = 0x01;
const EBPF_STX: u8 = 0x03;
const EBPF_ST: u8 = 0x02;
const EBPF_ALU: u8 = 0x04;
const EBPF_JMP: u8 = 0x05;
const EBPF_JMP32: u8 = 0x06;
const EBPF_ALU64: u8 = 0x07;
const EBPF_W: u8 = 0x00;
const EBPF_H: u8 = 0x08;
const EBPF_B: u8 = 0x10;
const EBPF_DW: u8 = 0x18;
const EBPF_MEM: u8 = 0x60;
const EBPF_X: u8 = 0x08;
const EBPF_ADD: u8 = 0x00;
const EBPF_AND: u8 = 0x50;
const EBPF_LSH: u8 = 0x60;
const EBPF_MOV: u8 = 0xb0;
const EBPF_END: u8 = 0xd0;
const EBPF_TO_BE: u8 = 0x08;
const EBPF_JA: u8 = 0x00;
const EBPF_JEQ: u8 = 0x10;
const EBPF_JGT: u8 = 0x20;
const EBPF_JNE: u8 = 0x50;
const EBPF_CALL: u8 = 0x80;
const EBPF_EXIT: u8 = 0x90;
const HELPER_SKB_LOAD_BYTES: i32 = 26;
const HELPER_SKB_LOAD_BYTES_RELATIVE: i32 = 68;
/// BPF_HDR_START_MAC
const FROM_MAC_HEADER: i32 = 0;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const A: u8 = 8;
const X: u8 = 9;
const FP: u8 = 10;

/// Stack layout below the frame pointer: M[i] at -4(i+1), then the packet length, then the
/// 8-byte load buffer of the helper forms.
const LEN_SLOT: i16 = -(SCRATCH_WORDS as i16 * 4) - 8;
const LOAD_BUFFER: i16 = LEN_SLOT - 8;
/// Largest packet offset the verifier lets a program add to a packet pointer (MAX_PACKET_OFF).
const MAX_PACKET_OFF: u32 = 0xffff;

/// One eBPF instruction, laid out as `struct bpf_insn` (registers in one byte: dst in the low
/// nibble, src in the high one, as the little-endian bitfield).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == 8);

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn { code, regs: (src << 4) | dst, off, imm }
    }
    pub fn dst(&self) -> u8 {
        self.regs & 0x0f
    }
    pub fn src(&self) -> u8 {
        self.regs >> 4
    }
}

fn mov64(dst: u8, src: u8) -> Insn {
    Insn::new(EBPF_ALU64 | EBPF_MOV | EBPF_X, dst, src, 0, 0)
}
fn mov32_imm(dst: u8, imm: u32) -> Insn {
    Insn::new(EBPF_ALU | EBPF_MOV, dst, 0, 0, imm as i32)
}
fn mov32(dst: u8, src: u8) -> Insn {
    Insn::new(EBPF_ALU | EBPF_MOV | EBPF_X, dst, src, 0, 0)
}
fn add64_imm(dst: u8, imm: i32) -> Insn {
    Insn::new(EBPF_ALU64 | EBPF_ADD, dst, 0, 0, imm)
}
fn add64(dst: u8, src: u8) -> Insn {
    Insn::new(EBPF_ALU64 | EBPF_ADD | EBPF_X, dst, src, 0, 0)
}
fn alu32_imm(op: u8, dst: u8, imm: u32) -> Insn {
    Insn::new(EBPF_ALU | op, dst, 0, 0, imm as i32)
}
fn alu32(op: u8, dst: u8, src: u8) -> Insn {
    Insn::new(EBPF_ALU | op | EBPF_X, dst, src, 0, 0)
}
fn load(size: u8, dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(EBPF_LDX | EBPF_MEM | size, dst, src, off, 0)
}
fn store(size: u8, dst: u8, off: i16, src: u8) -> Insn {
    Insn::new(EBPF_STX | EBPF_MEM | size, dst, src, off, 0)
}
fn store_imm(size: u8, dst: u8, off: i16, imm: i32) -> Insn {
    Insn::new(EBPF_ST | EBPF_MEM | size, dst, 0, off, imm)
}
fn call(helper: i32) -> Insn {
    Insn::new(EBPF_JMP | EBPF_CALL, 0, 0, 0, helper)
}
fn exit() -> Insn {
    Insn::new(EBPF_JMP | EBPF_EXIT, 0, 0, 0, 0)
}

/// Where a jump goes, resolved once every instruction's position is known.
#[derive(Debug, Clone, Copy)]
enum Target {
    Classic(usize),
    Reject,
}

struct Emitter {
    out: Vec<Insn>,
    /// (index in `out`, target) of every jump whose offset is still to be set.
    fixups: Vec<(usize, Target)>,
}

impl Emitter {
    fn push(&mut self, i: Insn) {
        self.out.push(i);
    }
    fn jump(&mut self, i: Insn, to: Target) {
        self.fixups.push((self.out.len(), to));
        self.out.push(i);
    }
}

/// Translates `prog` for a packet program reading packets through `access`.
pub fn translate(prog: &[ClassicInsn], access: PacketAccess) -> Result<Vec<Insn>, Unsupported> {
    if prog.is_empty() {
        return Err(Unsupported("an empty program".into()));
    }
    if prog.last().is_some_and(|last| last.code & 0x07 != CLASS_RET) {
        return Err(Unsupported("a program that does not end in a return".into()));
    }
    let mut e = Emitter { out: Vec::with_capacity(prog.len() * 6 + 16), fixups: Vec::new() };
    // Prologue: arguments into callee-saved registers, A = X = 0, the length and every scratch
    // word the program reads written (the verifier refuses reads of unwritten stack).
    match access {
        PacketAccess::Direct => {
            e.push(mov64(R6, R2));
            e.push(mov64(R7, R3));
        }
        PacketAccess::SkbLoadBytes | PacketAccess::SkbLoadBytesFromMac => e.push(mov64(R6, R1)),
    }
    e.push(store(EBPF_W, FP, LEN_SLOT, R4));
    e.push(mov32_imm(A, 0));
    e.push(mov32_imm(X, 0));
    let mut scratch_used = [false; SCRATCH_WORDS as usize];
    for (i, c) in prog.iter().enumerate() {
        let class = c.code & 0x07;
        let mode = c.code & 0xe0;
        if matches!(class, CLASS_ST | CLASS_STX) || (matches!(class, CLASS_LD | CLASS_LDX) && mode == MODE_MEM) {
            if c.k >= SCRATCH_WORDS {
                return Err(Unsupported(format!("instruction {i}: scratch memory M[{}] (there are 16)", c.k)));
            }
            scratch_used[c.k as usize] = true;
        }
    }
    for (i, _) in scratch_used.iter().enumerate().filter(|(_, used)| **used) {
        e.push(store_imm(EBPF_W, FP, scratch(i as u32), 0));
    }

    let mut starts = Vec::with_capacity(prog.len());
    for (i, c) in prog.iter().enumerate() {
        starts.push(e.out.len());
        translate_one(&mut e, i, c, prog.len(), access)?;
    }
    // The verifier refuses unreachable instructions: the shared reject block only if used.
    let reject = e.out.len();
    if e.fixups.iter().any(|(_, to)| matches!(to, Target::Reject)) {
        e.push(mov32_imm(R0, 0));
        e.push(exit());
    }

    for (at, to) in std::mem::take(&mut e.fixups) {
        let target = match to {
            Target::Classic(j) => starts[j],
            Target::Reject => reject,
        };
        let off = target as i64 - at as i64 - 1;
        e.out[at].off =
            i16::try_from(off).map_err(|_| Unsupported("a program too long for eBPF's 16-bit jumps".into()))?;
    }
    Ok(e.out)
}

fn scratch(k: u32) -> i16 {
    -4 * (k as i16 + 1)
}

fn ebpf_size(code: u16) -> Option<(u8, u32)> {
    match code & 0x18 {
        0x00 => Some((EBPF_W, 4)),
        0x08 => Some((EBPF_H, 2)),
        0x10 => Some((EBPF_B, 1)),
        _ => None,
    }
}

fn translate_one(
    e: &mut Emitter,
    i: usize,
    c: &ClassicInsn,
    len: usize,
    access: PacketAccess,
) -> Result<(), Unsupported> {
    let class = c.code & 0x07;
    let mode = c.code & 0xe0;
    let bad = |what: &str| Unsupported(format!("instruction {i} (code {:#06x}): {what}", c.code));
    let jump_to = |offset: u32| -> Result<Target, Unsupported> {
        let j = i as u64 + 1 + u64::from(offset);
        if j >= len as u64 {
            return Err(bad("a jump past the program's end"));
        }
        Ok(Target::Classic(j as usize))
    };
    match class {
        CLASS_LD | CLASS_LDX => {
            let dst = if class == CLASS_LD { A } else { X };
            match mode {
                MODE_IMM => e.push(mov32_imm(dst, c.k)),
                MODE_MEM => e.push(load(EBPF_W, dst, FP, scratch(c.k))),
                MODE_LEN => e.push(load(EBPF_W, dst, FP, LEN_SLOT)),
                MODE_ABS | MODE_IND if class == CLASS_LD => {
                    let (size, bytes) = ebpf_size(c.code).ok_or_else(|| bad("a load of unknown size"))?;
                    packet_load(e, c.k, mode == MODE_IND, size, bytes, A, access).map_err(|w| bad(&w))?;
                }
                MODE_MSH if class == CLASS_LDX => {
                    packet_load(e, c.k, false, EBPF_B, 1, X, access).map_err(|w| bad(&w))?;
                    e.push(alu32_imm(EBPF_AND, X, 0x0f));
                    e.push(alu32_imm(EBPF_LSH, X, 2));
                }
                _ => return Err(bad("an unknown load mode")),
            }
        }
        CLASS_ST => e.push(store(EBPF_W, FP, scratch(c.k), A)),
        CLASS_STX => e.push(store(EBPF_W, FP, scratch(c.k), X)),
        CLASS_ALU => {
            let op = (c.code & 0xf0) as u8;
            let by_x = c.code & SRC_X != 0;
            match c.code & 0xf0 {
                ALU_NEG => e.push(Insn::new(EBPF_ALU | ALU_NEG as u8, A, 0, 0, 0)),
                0x00..=0x70 | ALU_MOD | 0xa0 if by_x => {
                    if matches!(c.code & 0xf0, ALU_DIV | ALU_MOD) {
                        // Classic BPF rejects the packet on a division by zero; eBPF would go on.
                        e.jump(Insn::new(EBPF_JMP32 | EBPF_JEQ, X, 0, 0, 0), Target::Reject);
                    }
                    e.push(alu32(op, A, X));
                }
                0x00..=0x70 | ALU_MOD | 0xa0 => {
                    if matches!(c.code & 0xf0, ALU_DIV | ALU_MOD) && c.k == 0 {
                        return Err(bad("a division by the constant 0"));
                    }
                    if matches!(c.code & 0xf0, ALU_LSH | ALU_RSH) && c.k >= 32 {
                        return Err(bad("a shift by 32 or more"));
                    }
                    e.push(alu32_imm(op, A, c.k));
                }
                _ => return Err(bad("an unknown ALU operation")),
            }
        }
        CLASS_JMP => {
            let op = (c.code & 0xf0) as u8;
            if c.code & 0xf0 == JMP_JA {
                e.jump(Insn::new(EBPF_JMP | EBPF_JA, 0, 0, 0, 0), jump_to(c.k)?);
                return Ok(());
            }
            if !matches!(c.code & 0xf0, 0x10..=0x40) {
                return Err(bad("an unknown jump"));
            }
            let (t, f) = (jump_to(u32::from(c.jt))?, jump_to(u32::from(c.jf))?);
            let test = if c.code & SRC_X != 0 {
                Insn::new(EBPF_JMP32 | op | EBPF_X, A, X, 0, 0)
            } else {
                Insn::new(EBPF_JMP32 | op, A, 0, 0, c.k as i32)
            };
            e.jump(test, t);
            if c.jf != 0 {
                e.jump(Insn::new(EBPF_JMP | EBPF_JA, 0, 0, 0, 0), f);
            }
        }
        CLASS_RET => {
            match c.code & 0x18 {
                RET_K => e.push(mov32_imm(R0, c.k)),
                RET_A => e.push(mov32(R0, A)),
                RET_X => e.push(mov32(R0, X)),
                _ => return Err(bad("an unknown return")),
            }
            e.push(exit());
        }
        CLASS_MISC => match c.code & 0xf8 {
            MISC_TAX => e.push(mov32(X, A)),
            MISC_TXA => e.push(mov32(A, X)),
            _ => return Err(bad("an unknown miscellaneous operation")),
        },
        _ => unreachable!("the class is 3 bits"),
    }
    Ok(())
}

/// `dst = packet[k (+ X)]` of `bytes` bytes in network order, or reject the packet.
fn packet_load(
    e: &mut Emitter,
    k: u32,
    indexed: bool,
    size: u8,
    bytes: u32,
    dst: u8,
    access: PacketAccess,
) -> Result<(), String> {
    if k >= ANCILLARY_BASE {
        return Err(
            "a test of what only a live capture knows (the kernel's ancillary data: direction for `inbound`/`outbound`, interface, VLAN metadata)"
                .into(),
        );
    }
    match access {
        PacketAccess::Direct => {
            if indexed {
                // R2 = X + k (32-bit, as classic BPF), bounded for the verifier, then added to data.
                e.push(mov32(R2, X));
                e.push(alu32_imm(EBPF_ADD, R2, k));
                e.jump(Insn::new(EBPF_JMP | EBPF_JGT, R2, 0, 0, (MAX_PACKET_OFF - bytes) as i32), Target::Reject);
                e.push(mov64(R3, R6));
                e.push(add64(R3, R2));
                e.push(mov64(R2, R3));
            } else {
                if k > MAX_PACKET_OFF - bytes {
                    return Err(format!("a load at offset {k}, beyond the {MAX_PACKET_OFF} bytes XDP can read"));
                }
                e.push(mov64(R2, R6));
                e.push(add64_imm(R2, k as i32));
            }
            e.push(mov64(R3, R2));
            e.push(add64_imm(R3, bytes as i32));
            e.jump(Insn::new(EBPF_JMP | EBPF_JGT | EBPF_X, R3, R7, 0, 0), Target::Reject);
            e.push(load(size, dst, R2, 0));
        }
        PacketAccess::SkbLoadBytes | PacketAccess::SkbLoadBytesFromMac => {
            e.push(mov64(R1, R6));
            if indexed {
                e.push(mov32(R2, X));
                e.push(alu32_imm(EBPF_ADD, R2, k));
            } else {
                e.push(mov32_imm(R2, k));
            }
            e.push(mov64(R3, FP));
            e.push(add64_imm(R3, i32::from(LOAD_BUFFER)));
            e.push(mov32_imm(R4, bytes));
            if access == PacketAccess::SkbLoadBytesFromMac {
                e.push(mov32_imm(R5, FROM_MAC_HEADER as u32));
                e.push(call(HELPER_SKB_LOAD_BYTES_RELATIVE));
            } else {
                e.push(call(HELPER_SKB_LOAD_BYTES));
            }
            e.jump(Insn::new(EBPF_JMP | EBPF_JNE, R0, 0, 0, 0), Target::Reject);
            e.push(load(size, dst, FP, LOAD_BUFFER));
        }
    }
    if bytes > 1 {
        e.push(Insn::new(EBPF_ALU | EBPF_END | EBPF_TO_BE, dst, 0, 0, (bytes * 8) as i32));
    }
    Ok(())
}

/// Opcode helpers for the tests and the injector.
pub fn is_subprogram_call(i: &Insn) -> bool {
    i.code == EBPF_JMP | EBPF_CALL && i.src() == 1
}

/// `r = imm64` with a function address (BPF_PSEUDO_FUNC): a callback's relative position.
pub fn is_function_address(i: &Insn) -> bool {
    i.code == EBPF_LD | EBPF_DW && i.src() == 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: u16, jt: u8, jf: u8, k: u32) -> ClassicInsn {
        ClassicInsn { code, jt, jf, k }
    }

    /// `tcpdump -d ip`: ldh [12]; jeq #0x800 jt 2 jf 3; ret #262144; ret #0
    fn ip_only() -> Vec<ClassicInsn> {
        vec![c(0x28, 0, 0, 12), c(0x15, 0, 1, 0x800), c(0x06, 0, 0, 262144), c(0x06, 0, 0, 0)]
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        for access in [PacketAccess::Direct, PacketAccess::SkbLoadBytes, PacketAccess::SkbLoadBytesFromMac] {
            let out = translate(&ip_only(), access).unwrap();
            for (at, i) in out.iter().enumerate() {
                let class = i.code & 0x07;
                let is_jump = matches!(class, EBPF_JMP | EBPF_JMP32) && !matches!(i.code & 0xf0, EBPF_CALL | EBPF_EXIT);
                if is_jump {
                    let to = at as i64 + 1 + i64::from(i.off);
                    assert!((0..out.len() as i64).contains(&to), "{access:?}: jump at {at} to {to}");
                }
            }
            assert_eq!(out.last().unwrap().code, EBPF_JMP | EBPF_EXIT);
        }
    }

    #[test]
    fn ancillary_loads_and_far_offsets_are_named() {
        let anc = vec![c(0x28, 0, 0, 0xffff_f000 + 44), c(0x06, 0, 0, 0)];
        assert!(translate(&anc, PacketAccess::Direct).unwrap_err().0.contains("ancillary"));
        let far = vec![c(0x30, 0, 0, 70000), c(0x06, 0, 0, 0)];
        assert!(translate(&far, PacketAccess::Direct).unwrap_err().0.contains("70000"));
        assert!(translate(&far, PacketAccess::SkbLoadBytes).is_ok());
        let past_end = vec![c(0x05, 0, 0, 5), c(0x06, 0, 0, 0)];
        assert!(translate(&past_end, PacketAccess::Direct).unwrap_err().0.contains("past the program"));
    }

    #[test]
    fn division_by_x_rejects_on_zero() {
        let prog = vec![c(0x3c, 0, 0, 0), c(0x16, 0, 0, 0)];
        let out = translate(&prog, PacketAccess::Direct).unwrap();
        assert!(out.iter().any(|i| i.code == EBPF_JMP32 | EBPF_JEQ && i.dst() == X));
    }
}
