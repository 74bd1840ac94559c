// SPDX-License-Identifier: GPL-2.0

//! Completion records, read the one way every ring reads them: capture and playback in
//! coherent host memory, capture in BAR2 (docs/device.md 6.2); and the two things a
//! driver does to a record besides reading it: find one the card passed without writing,
//! and mark a slot unwritten before its buffer goes back to the card.

use super::*;

/// Memory a completion ring lives in.
pub(crate) trait RingMemory {
    /// The 32-bit word at byte offset `off` (0 where the memory cannot be read).
    fn read32(&self, off: usize) -> u32;
    /// Writes the 32-bit word at byte offset `off` (dropped where it cannot be written).
    fn write32(&self, off: usize, v: u32);
    /// Orders the read of a record's tail dword before the reads of the rest of it and of
    /// the block it describes.
    fn acquire(&self);
}

impl RingMemory for DmaRegion {
    fn read32(&self, off: usize) -> u32 {
        DmaRegion::read32(self, off)
    }

    fn write32(&self, off: usize, v: u32) {
        DmaRegion::write32(self, off, v);
    }

    fn acquire(&self) {
        dma_mb(Read);
    }
}

impl RingMemory for bar2::Bar2 {
    fn read32(&self, off: usize) -> u32 {
        bar2::Bar2::read32(self, off)
    }

    fn write32(&self, off: usize, v: u32) {
        bar2::Bar2::write32(self, off, v);
    }

    fn acquire(&self) {
        // readl orders against later MMIO reads already; memcpy_fromio (the block's
        // copy) makes no such promise on every architecture, so the barrier is explicit.
        mb(Read);
    }
}

/// A session's completion ring: coherent host memory, or BAR2. An enum rather than a
/// `&dyn RingMemory`: the capture path reads a record per block, and a match on two
/// variants is a predicted branch where a trait object is an indirect call (a retpoline
/// where the kernel mitigates Spectre v2).
#[derive(Clone, Copy)]
pub(crate) enum Ring<'a> {
    /// The ring in coherent DMA memory.
    Coherent(&'a DmaRegion),
    /// The ring in the card's BAR2.
    Bar2(&'a bar2::Bar2),
}

impl RingMemory for Ring<'_> {
    fn read32(&self, off: usize) -> u32 {
        match self {
            Ring::Coherent(m) => m.read32(off),
            Ring::Bar2(b) => b.read32(off),
        }
    }

    fn write32(&self, off: usize, v: u32) {
        match self {
            Ring::Coherent(m) => m.write32(off, v),
            Ring::Bar2(b) => b.write32(off, v),
        }
    }

    fn acquire(&self) {
        match self {
            Ring::Coherent(m) => RingMemory::acquire(*m),
            Ring::Bar2(b) => RingMemory::acquire(*b),
        }
    }
}

/// Completion `k` of a ring of `2^log2` records starting at byte `base` of `mem`, if the
/// card wrote it: its PHASE matches `k`'s lap. The tail dword (PHASE, id, flags) is read
/// first, then the barrier, then the rest of the record.
pub(crate) fn read(
    mem: &(impl RingMemory + ?Sized),
    base: usize,
    k: u32,
    log2: u32,
) -> Option<regs::Completion> {
    let rec = base + regs::ring::slot(k, log2) as usize * regs::comp::SIZE;
    let tail = mem.read32(rec + regs::comp::OFF_TAIL_DWORD);
    if regs::comp::tail_phase(tail) != regs::ring::phase(k, log2) {
        return None;
    }
    mem.acquire();
    let rd64 = |off: usize| regs::join64(mem.read32(rec + off), mem.read32(rec + off + 4));
    Some(regs::Completion {
        stream_offset: rd64(regs::comp::OFF_STREAM_OFFSET),
        lost_bytes: rd64(regs::comp::OFF_LOST_BYTES),
        timestamp_ns: rd64(regs::comp::OFF_TIMESTAMP_NS),
        length: mem.read32(rec + regs::comp::OFF_LENGTH),
        id: tail as u16,
        flags: (tail >> 16) as u16,
    })
}

/// True if the card says it completed ring index `k` (its published `cons` is past it, by
/// at most `max_ahead`: a `cons` further on is a lie of its own and proves nothing) while
/// the record there still carries the previous lap's phase: a completion the card lied
/// about or lost. Waiting for it would wait for ever (the card goes on with the next
/// ones), so the caller takes it as an error.
pub(crate) fn passed_unwritten(
    mem: &(impl RingMemory + ?Sized),
    base: usize,
    k: u32,
    log2: u32,
    cons: u32,
    max_ahead: u32,
) -> bool {
    let ahead = cons.wrapping_sub(k);
    if ahead == 0 || ahead > max_ahead {
        return false;
    }
    // ACQUIRE: the card writes a record before it publishes `cons` past it, so the record
    // read after `cons` is the one the card wrote.
    mem.acquire();
    read(mem, base, k, log2).is_none()
}

/// Makes the record of ring index `k` read as unwritten for the next lap: its tail dword
/// gets `k`'s own phase. A record the card left with the previous lap's phase carries the
/// *next* lap's, and would pass for index `k + N` before the card writes that one (stale
/// data, the stream going backwards). Done before the slot's buffer goes back to the card,
/// so the card's next record lands after this write.
pub(crate) fn unmark(mem: &(impl RingMemory + ?Sized), base: usize, k: u32, log2: u32) {
    let off =
        base + regs::ring::slot(k, log2) as usize * regs::comp::SIZE + regs::comp::OFF_TAIL_DWORD;
    mem.write32(off, u32::from(regs::ring::phase(k, log2)) << 16);
}
