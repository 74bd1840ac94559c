// SPDX-License-Identifier: GPL-2.0

//! The capture ring: starting and stopping a session, giving consumed buffers back to
//! the card in batches, and handing a completed block to the CPU.

use super::*;

impl Card {
    /// Starts a new session with the current configuration.
    pub(crate) fn start_locked(&self, g: &mut MutexGuard<'_, Inner>) -> Result {
        if g.removed {
            return Err(ENODEV);
        }
        if g.running {
            return Err(EBUSY);
        }
        let cfg = g.cfg;
        let log2 = cfg.ring_log2;
        let n = regs::ring::entries(log2);
        if g.hw.is_none() {
            return Err(ENODEV);
        }
        // The mode of this session (ACQ_IOC_SET_CONFIG checked that BAR2 can hold it).
        let bar2 = cfg.flags & uapi::ACQ_CFG_BAR2 != 0;
        let bar2_map = match (bar2, self.bar2.as_ref()) {
            (true, Some(b)) => Some(b),
            (true, None) => return Err(EINVAL),
            (false, _) => None,
        };
        if !self.alive() && !self.revive_locked(g) {
            // Reported by this EIO to whoever asked for the start (read, splice, sync,
            // START); poll() turns it into POLLERR. Not latched: it would be reported
            // twice.
            return Err(EIO);
        }
        let keep = g.mapped;
        let Some(hw) = g.hw.as_mut() else {
            return Err(ENODEV);
        };
        self.with_regs(|r| r.stop()).ok_or(ENODEV)?;
        // Zero the completion ring (stale PHASE bits would look new) and the event page,
        // then post a buffer in every slot (pages still lent to pipes are skipped: fewer
        // may be posted when pipes hold most of the pool). In BAR2 mode both live in BAR2
        // and posting only gives the slot a pool page for the copy of its data.
        match bar2_map {
            Some(b) => b.prepare(bar2::Layout::of(&cfg))?,
            None => {
                hw.comp.zero(n as usize * regs::comp::SIZE);
                hw.event.zero(regs::event::SIZE);
            }
        }
        if !keep {
            hw.clear_slots();
        }
        let mut posted = 0;
        while posted < n {
            let Some(page) = hw.page_for_slot(posted as usize, keep) else {
                break;
            };
            if bar2 {
                hw.arm_page(page, &self.busy);
            } else {
                hw.write_desc(posted, log2, page, &self.busy);
            }
            posted += 1;
        }
        // RELEASE: descriptors before the producer index.
        dma_mb(Write);
        self.event_write(bar2, hw, regs::event::OFF_PROD, posted);
        // Completion interrupts stay armed for the whole session (moderation bounds them).
        self.event_write(
            bar2,
            hw,
            regs::event::OFF_IRQ_ARMED,
            regs::event::ARMED_CAPTURE,
        );
        mb(Full);
        let ctrl = if bar2 {
            regs::ctrl::ENABLE | regs::ctrl::MODE_BAR2
        } else {
            regs::ctrl::ENABLE
        };
        let (desc, comp, event) = (hw.desc.bus_addr(), hw.comp.bus_addr(), hw.event.bus_addr());
        let status = self
            .with_regs(|r| {
                r.wr64(regs::reg::DESC_BASE_LO, regs::reg::DESC_BASE_HI, desc);
                r.wr64(regs::reg::COMP_BASE_LO, regs::reg::COMP_BASE_HI, comp);
                r.wr64(regs::reg::EVENT_BASE_LO, regs::reg::EVENT_BASE_HI, event);
                r.wr(regs::reg::RING_LOG2, log2);
                r.wr(regs::reg::BLOCK_SIZE, cfg.block_size);
                r.wr64(regs::reg::RATE_LO, regs::reg::RATE_HI, cfg.rate);
                r.wr(regs::reg::PATTERN, cfg.pattern);
                r.wr64(regs::reg::SEED_LO, regs::reg::SEED_HI, cfg.seed);
                r.wr(regs::reg::IRQ_MOD_COUNT, cfg.irq_mod_count);
                r.wr(regs::reg::IRQ_MOD_TIME_US, cfg.irq_mod_time_us);
                r.wr(regs::reg::STATUS, regs::status::W1C_MASK);
                r.wr(regs::reg::IRQ_STATUS, regs::irq::ALL);
                r.wr(regs::reg::IRQ_MASK, 0);
                if self.caps & regs::caps::LOOPBACK != 0 {
                    let lb = cfg.flags & uapi::ACQ_CFG_LOOPBACK != 0;
                    r.wr(regs::reg::LOOPBACK, u32::from(lb) * regs::loopback::ENABLE);
                }
                r.wr(regs::reg::CTRL, ctrl);
                let status = r.rd(regs::reg::STATUS);
                if status & regs::status::HALTED != 0 {
                    let code = r.rd(regs::reg::ERROR_CODE);
                    r.stop();
                    (status, code)
                } else {
                    (status, 0)
                }
            })
            .ok_or(ENODEV)?;
        if status.0 == u32::MAX {
            return Err(EIO);
        }
        if status.0 & regs::status::HALTED != 0 {
            pr_err!(
                "acq{}: the card refused the configuration (ERROR_CODE {:#x})\n",
                self.index,
                status.1
            );
            return Err(EIO);
        }
        g.head = 0;
        g.prod = posted;
        g.block_pos = 0;
        g.xrun = false;
        g.halted = false;
        g.running = true;
        g.last_events = 0;
        g.wd_cons = 0;
        g.wd_still_ms = 0;
        g.mmap_held = 0;
        g.bar2 = bar2;
        g.stats.read_offset = 0;
        g.stats.session += 1;
        Ok(())
    }

    /// Stops the session; captured data not yet read is discarded.
    pub(crate) fn stop_locked(&self, g: &mut MutexGuard<'_, Inner>) {
        if g.running || g.halted {
            let _ = self.with_regs(|r| r.stop());
        }
        g.running = false;
        g.halted = false;
        g.block_pos = 0;
        g.xrun = false;
        g.stops = g.stops.wrapping_add(1);
        self.wait.notify_all();
    }

    /// Gives every consumed buffer back to the card (section 8 of the spec), in one batch:
    /// one producer-index update and at most one DOORBELL for all of them.
    ///
    /// Descriptor `d` always carries pool buffer `d mod N`: the session posts buffers
    /// 0..N-1 as descriptors 0..N-1, and completions (hence reposts) come in order.
    pub(crate) fn flush_reposts(&self, g: &mut MutexGuard<'_, Inner>) {
        if !g.running {
            return;
        }
        let n = g.entries();
        let log2 = g.cfg.ring_log2;
        let target = g.head.wrapping_add(n);
        let prod = g.prod;
        if prod == target {
            return;
        }
        let keep = g.mapped;
        let bar2 = g.bar2;
        let Some(hw) = g.hw.as_mut() else {
            return;
        };
        let mut d = prod;
        while d != target {
            // A slot whose page is still lent gets a free pool page; with none free the
            // rest waits for pages to come back.
            let Some(page) = hw.page_for_slot(regs::ring::slot(d, log2) as usize, keep) else {
                break;
            };
            if bar2 {
                hw.arm_page(page, &self.busy);
            } else {
                hw.write_desc(d, log2, page, &self.busy);
            }
            d = d.wrapping_add(1);
        }
        if d == prod {
            return;
        }
        // RELEASE: descriptors before the producer index. In BAR2 mode a full barrier:
        // the copies out of the slots (MMIO reads) are done before the slots go back.
        if bar2 {
            mb(Full);
        } else {
            dma_mb(Write);
        }
        self.event_write(bar2, hw, regs::event::OFF_PROD, d);
        // FULL: store prod before loading need_doorbell.
        mb(Full);
        let ring = self.event_read(bar2, hw, regs::event::OFF_NEED_DOORBELL) != 0;
        g.prod = d;
        if ring {
            let _ = self.with_regs(|r| r.wr(regs::reg::DOORBELL, 1));
        }
    }

    /// Completion `head` is consumed; its buffer goes back to the card with the next
    /// batch (a quarter of the ring), or earlier when the reader sleeps or returns.
    pub(crate) fn consumed(&self, g: &mut MutexGuard<'_, Inner>) {
        g.head = g.head.wrapping_add(1);
        g.block_pos = 0;
        let n = g.entries();
        let free = g.head.wrapping_add(n).wrapping_sub(g.prod);
        if free >= (n / 4).max(1) {
            self.flush_reposts(g);
        }
    }

    /// True if a read() would not block.
    pub(crate) fn readable(&self, g: &Inner) -> bool {
        if g.removed || g.xrun || g.err || !g.running || g.hw.is_none() {
            return true;
        }
        // In mmap mode the consumer holds `mmap_held` blocks from `head` already: only a
        // block after them is news (else an epoll consumer would be woken for ever).
        let next = if g.mapped {
            g.head.wrapping_add(g.mmap_held)
        } else {
            g.head
        };
        self.completion(g, next).is_some()
    }

    /// Decodes completion `c` of ring index `g.head` for read() and splice(): `Some((slot,
    /// length))` for a block of data at the expected stream offset, or `None` after it
    /// latched what the consumer is owed instead: an error completion (`EIO`; the
    /// completion is consumed, the block stays in the card's FIFO for the next buffer)
    /// or a gap before the block (`EPIPE`; the stream continues at the block's offset).
    pub(crate) fn decode(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        c: &regs::Completion,
    ) -> Option<(usize, usize)> {
        let len = c.length as usize;
        let expected_slot = regs::ring::slot(g.head, g.cfg.ring_log2);
        if c.is_error() || u32::from(c.id) != expected_slot || len > PAGE_SIZE {
            // The buffer holds nothing, or the card returned a buffer it was not given.
            g.stats.errors += 1;
            g.err = true;
            self.consumed(g);
            return None;
        }
        if g.block_pos == 0 && c.stream_offset != g.stats.read_offset {
            g.stats.overflows += 1;
            // Device-provided: saturate rather than trust it not to overflow.
            g.stats.lost_bytes = g.stats.lost_bytes.saturating_add(c.lost_bytes);
            g.stats.read_offset = c.stream_offset;
            g.xrun = true;
            return None;
        }
        Some((usize::from(c.id), len))
    }

    /// The completion of ring slot `slot` (pool page `index`) was consumed: its bytes go
    /// to the CPU, and the page is no longer under DMA (what a lent page's ->confirm waits
    /// for). In BAR2 mode (`bar2`: the session's layout) the block is first copied from
    /// the slot in BAR2 into the page; an error means the page holds no valid data.
    pub(crate) fn take_for_cpu(
        &self,
        bar2: Option<bar2::Layout>,
        slot: usize,
        index: usize,
        page: &StreamingPage,
        len: usize,
    ) -> Result {
        page.sync_for_cpu(len);
        let r = match (bar2, self.bar2.as_ref()) {
            (Some(l), Some(b)) => b.copy_slot(l, slot, page, len),
            (Some(_), None) => Err(ENODEV),
            (None, _) => Ok(()),
        };
        if let Some(b) = self.busy.get(index) {
            b.store(0, Release);
        }
        r
    }
}
