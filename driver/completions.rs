// SPDX-License-Identifier: GPL-2.0

//! Completion records, read the one way every ring reads them: capture and playback in
//! coherent host memory, capture in BAR2 (docs/device.md 6.2).

use super::*;

/// Memory a completion ring lives in.
pub(crate) trait RingMemory {
    /// The 32-bit word at byte offset `off` (0 where the memory cannot be read).
    fn read32(&self, off: usize) -> u32;
    /// Orders the read of a record's tail dword before the reads of the rest of it and of
    /// the block it describes.
    fn acquire(&self);
}

impl RingMemory for DmaRegion {
    fn read32(&self, off: usize) -> u32 {
        DmaRegion::read32(self, off)
    }

    fn acquire(&self) {
        dma_mb(Read);
    }
}

impl RingMemory for bar2::Bar2 {
    fn read32(&self, off: usize) -> u32 {
        bar2::Bar2::read32(self, off)
    }

    fn acquire(&self) {
        // readl orders against later MMIO reads already; memcpy_fromio (the block's
        // copy) makes no such promise on every architecture, so the barrier is explicit.
        mb(Read);
    }
}

/// Completion `k` of a ring of `2^log2` records starting at byte `base` of `mem`, if the
/// card wrote it: its PHASE matches `k`'s lap. The tail dword (PHASE, id, flags) is read
/// first, then the barrier, then the rest of the record.
pub(crate) fn read(
    mem: &impl RingMemory,
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
