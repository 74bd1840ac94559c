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
        if g.flr_due || g.resetting {
            // The watchdog resets the card (without the mutex); `wait_for_reset` waits.
            return Err(EAGAIN);
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
            if g.flr_due {
                // A function reset is due: the watchdog does it; `wait_for_reset` waits.
                return Err(EAGAIN);
            }
            // Reported by this errno to whoever asked for the start (read, splice, sync,
            // START); poll() turns it into POLLERR. Not latched: it would be reported
            // twice. A card found gone for good is ENODEV at once, not an EIO first.
            return Err(if g.removed { ENODEV } else { EIO });
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
        let ctrl = regs::Ctrl(if bar2 {
            regs::ctrl::ENABLE | regs::ctrl::MODE_BAR2
        } else {
            regs::ctrl::ENABLE
        });
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
                r.write(regs::Status(regs::status::W1C_MASK));
                r.write(regs::IrqStatus(regs::irq::ALL));
                // Every cause unmasked (playback's too, which it unmasks itself anyway).
                self.set_irq_mask(r, |_| 0);
                if self.caps & regs::caps::LOOPBACK != 0 {
                    let lb = cfg.flags & uapi::ACQ_CFG_LOOPBACK != 0;
                    r.wr(regs::reg::LOOPBACK, u32::from(lb) * regs::loopback::ENABLE);
                }
                r.write(ctrl);
                let status: regs::Status = r.read();
                if status.halted() {
                    let code = r.rd(regs::reg::ERROR_CODE);
                    r.stop();
                    (status, code)
                } else {
                    (status, 0)
                }
            })
            .ok_or(ENODEV)?;
        if status.0.is_all_ones() {
            return Err(EIO);
        }
        if status.0.halted() {
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
        g.starts = g.starts.wrapping_add(1);
        Ok(())
    }

    /// Waits while a function reset the watchdog does is due or in progress, interruptibly
    /// and at most `RESET_WAIT_MS` (`EAGAIN` at once with `nonblock`). The caller looks at
    /// the card's state again afterwards: the reset latches an `EIO`, and the watchdog may
    /// have started the next session.
    pub(crate) fn wait_for_reset(&self, g: &mut MutexGuard<'_, Inner>, nonblock: bool) -> Result {
        // Every interrupt and STOP wakes this queue.
        let period = msecs_to_jiffies(READ_RECHECK_MS);
        wait_out_reset(&self.wait, g, nonblock, period, |g| {
            g.flr_due || g.resetting
        })
    }

    /// `start_locked` for a caller that may sleep (ACQ_IOC_START, MMAP_SYNC): a function
    /// reset is waited for first, and a session the watchdog started after it serves.
    pub(crate) fn start_waiting(&self, g: &mut MutexGuard<'_, Inner>) -> Result {
        loop {
            let pending = g.flr_due || g.resetting;
            self.wait_for_reset(g, false)?;
            if pending && g.running {
                return Ok(());
            }
            match self.start_locked(g) {
                Err(e) if e == EAGAIN && g.flr_due => continue,
                r => return r,
            }
        }
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
        self.sleepers.wake(&self.wait);
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
        let ring = match (bar2, self.bar2.as_ref()) {
            (true, Some(b)) => posting::publish(b, posting::CAPTURE, d),
            // BAR2 mode without BAR2 (cannot happen: the mode needs it): nothing to tell.
            (true, None) => false,
            (false, _) => posting::publish(&hw.event, posting::CAPTURE, d),
        };
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

    /// True if the card says it completed ring index `g.head` (the event page's `cons`
    /// is past it) while the record there still carries the previous lap's phase: a
    /// completion the card lied about or lost. Waiting for it would wait for ever (the
    /// card goes on with the next ones), so read() and splice() take it as an error.
    pub(crate) fn head_lost(&self, g: &Inner) -> bool {
        let (Some(hw), Some((mem, base))) = (g.hw.as_ref(), self.comp_ring(g)) else {
            return false;
        };
        if !g.running {
            return false;
        }
        let cons = self.event_read(g.bar2, hw, regs::event::OFF_CONS);
        let log2 = g.cfg.ring_log2;
        completions::passed_unwritten(&mem, base, g.head, log2, cons, g.entries())
    }

    /// Takes the completion at `g.head` that [`Card::head_lost`] found lost: one error
    /// counted, its record re-phased, its buffer back to the card, and the stream goes
    /// on with the next completion (whose offset then shows the block as a gap). The
    /// caller reports the error (read and splice latch it, MMAP_SYNC returns it).
    pub(crate) fn skip_lost(&self, g: &mut MutexGuard<'_, Inner>) {
        if let Some(more) = g.lost_log.admit() {
            pr_warn!(
                "acq{}: completion {} was passed by the card but never written: skipped{}\n",
                self.index,
                g.head,
                more
            );
        }
        g.stats.errors += 1;
        let head = g.head;
        self.unmark(g, head);
        self.consumed(g);
    }

    /// Marks the record of ring index `k` unwritten for the next lap
    /// ([`completions::unmark`]).
    fn unmark(&self, g: &Inner, k: u32) {
        if let Some((mem, base)) = self.comp_ring(g) {
            completions::unmark(&mem, base, k, g.cfg.ring_log2);
        }
    }

    /// True if a read() would not block.
    pub(crate) fn readable(&self, g: &Inner) -> bool {
        self.news(g).any()
    }

    /// What a waiting reader would find: a change of state, a completion, or nothing.
    pub(crate) fn news(&self, g: &Inner) -> News {
        if g.removed || g.xrun || g.err || !g.running || g.hw.is_none() {
            return News::State;
        }
        // In mmap mode the consumer holds `mmap_held` blocks from `head` already: only a
        // block after them is news (else an epoll consumer would be woken for ever).
        let next = if g.mapped {
            g.head.wrapping_add(g.mmap_held)
        } else {
            g.head
        };
        // A completion the card passed but never wrote is news too: read() reports it.
        if self.completion(g, next).is_some() || (g.mmap_held == 0 && self.head_lost(g)) {
            News::Completions
        } else {
            News::Nothing
        }
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
        // A data completion carries 1..=BLOCK_SIZE bytes (docs/device.md 6.2). A longer
        // one would hand the consumer stale page contents beyond the block; an empty one
        // is a card that lies: either is an error, not data.
        let bad_len = len == 0 || len > (g.cfg.block_size as usize).min(PAGE_SIZE);
        if c.is_error() || u32::from(c.id) != expected_slot || bad_len {
            // The buffer holds nothing, the card returned a buffer it was not given, or it
            // lies about the length.
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

/// Sleeps on `cv` while `pending(g)` says a function reset is due or under way (capture's
/// and playback's waits for the watchdog's reset): interruptibly, re-checking every
/// `period`, `EAGAIN` at once with `nonblock`, `EIO` after `RESET_WAIT_MS`. The budget is
/// in jiffies and only what was really slept counts (wake-ups that are not the reset's
/// end do not stretch it).
pub(crate) fn wait_out_reset<T: Unpin>(
    cv: &CondVar,
    g: &mut MutexGuard<'_, T>,
    nonblock: bool,
    period: Jiffies,
    pending: impl Fn(&mut MutexGuard<'_, T>) -> bool,
) -> Result {
    let mut left = msecs_to_jiffies(RESET_WAIT_MS);
    while pending(g) {
        if nonblock {
            return Err(EAGAIN);
        }
        if left == 0 {
            return Err(EIO);
        }
        let step = left.min(period);
        match cv.wait_interruptible_timeout(g, step) {
            CondVarTimeoutResult::Signal { .. } => return Err(ERESTARTSYS),
            CondVarTimeoutResult::Timeout => left -= step,
            CondVarTimeoutResult::Woken { jiffies } => {
                left -= (step - jiffies.min(step)).max(1).min(left);
            }
        }
    }
    Ok(())
}
