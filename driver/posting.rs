// SPDX-License-Identifier: GPL-2.0

//! Descriptors and the producer index, written the one way every ring posts them:
//! capture and playback, in host memory or (capture) with the event page in BAR2
//! (docs/device.md sections 6.1, 6.3 and 8). The other half of a ring is `completions.rs`.

use super::*;

/// Writes descriptor `slot` of the descriptor ring in `desc`: `len` bytes at bus address
/// `addr`, its id the slot (the completion names it).
pub(crate) fn write_desc(desc: &DmaRegion, slot: usize, addr: u64, len: u32) {
    let base = slot * regs::desc::SIZE;
    desc.write64(base + regs::desc::OFF_ADDR, addr);
    desc.write32(base + regs::desc::OFF_LEN, len);
    // id (bits 15:0) and flags (bits 31:16, reserved 0) share one word.
    desc.write32(base + regs::desc::OFF_ID, slot as u32 & 0xFFFF);
}

/// Memory an event area lives in.
pub(crate) trait EventMemory {
    /// The driver's or the card's 32-bit word at offset `off` of the area.
    fn event_read(&self, off: usize) -> u32;
    /// Writes a driver word of the area.
    fn event_write(&self, off: usize, v: u32);
    /// Orders everything the card reads for the new descriptors (the descriptors, the
    /// buffers' contents, in BAR2 mode the copies out of the slots going back) before
    /// the producer index.
    fn release(&self);
}

impl EventMemory for DmaRegion {
    fn event_read(&self, off: usize) -> u32 {
        self.read32(off)
    }

    fn event_write(&self, off: usize, v: u32) {
        self.write32(off, v);
    }

    fn release(&self) {
        dma_mb(Write);
    }
}

impl EventMemory for bar2::Bar2 {
    fn event_read(&self, off: usize) -> u32 {
        bar2::Bar2::event_read(self, off)
    }

    fn event_write(&self, off: usize, v: u32) {
        bar2::Bar2::event_write(self, off, v);
    }

    fn release(&self) {
        // The slots given back were copied out with MMIO reads: a full barrier.
        mb(Full);
    }
}

/// The offsets of one channel's producer-side words in its event area.
#[derive(Clone, Copy)]
pub(crate) struct EventWords {
    /// The driver's producer index.
    pub(crate) prod: usize,
    /// The card's "ring the doorbell" flag.
    pub(crate) need_doorbell: usize,
}

/// The capture channel's (docs/device.md 6.3).
pub(crate) const CAPTURE: EventWords = EventWords {
    prod: regs::event::OFF_PROD,
    need_doorbell: regs::event::OFF_NEED_DOORBELL,
};

/// The playback channel's (docs/device.md 19.3).
pub(crate) const PLAYBACK: EventWords = EventWords {
    prod: regs::pb_event::OFF_PROD,
    need_doorbell: regs::pb_event::OFF_NEED_DOORBELL,
};

/// Publishes producer index `prod` (the section 8 protocol): release barrier, store
/// `prod`, full barrier (the store before the load), load `need_doorbell`. Returns
/// whether the card went idle and wants its doorbell register written.
pub(crate) fn publish(mem: &impl EventMemory, words: EventWords, prod: u32) -> bool {
    mem.release();
    mem.event_write(words.prod, prod);
    mb(Full);
    mem.event_read(words.need_doorbell) != 0
}
