// SPDX-License-Identifier: GPL-2.0

//! mmap() of `/dev/acqN`: the control page and the ring's pages in the consumer's address
//! space, and `ACQ_IOC_MMAP_SYNC`.

use super::*;

impl Card {
    /// mmap(): the control page and the ring's buffer pages, read-only (docs/driver.md).
    pub(crate) fn mmap(&self, vma: &VmaNew) -> Result {
        if vma.writable() {
            return Err(EACCES);
        }
        vma.try_clear_maywrite()?;
        vma.try_clear_mayexec()?;
        vma.set_dontcopy();
        vma.set_dontexpand();
        // SAFETY: the VMA is valid for the duration of the mmap call (`VmaNew`).
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        // mmap runs under the process's mmap_lock. Taking the card's mutex here is safe
        // because no path holds that mutex while it touches user memory (read() copies
        // with it dropped, pageref.rs), so a reader faulting on this very mapping cannot
        // invert the order.
        let mut g = self.inner.lock();
        if g.removed {
            return Err(ENODEV);
        }
        if g.running && !g.mapped {
            // The slots' pages are posted with lending rules; map while stopped.
            return Err(EBUSY);
        }
        let n = g.entries() as usize;
        let len = vma.end().saturating_sub(vma.start());
        if pgoff != 0 || len != (n + 1) * PAGE_SIZE {
            return Err(EINVAL);
        }
        self.pin_slots(&mut g)?;
        let hw = g.hw.as_ref().ok_or(ENODEV)?;
        let mixed = vma.set_mixedmap();
        mixed.vm_insert_page(vma.start(), &hw.ctl)?;
        for slot in 0..n {
            let (_, page) = hw.slot_buf(slot).ok_or(ENOMEM)?;
            mixed.vm_insert_page(vma.start() + (slot + 1) * PAGE_SIZE, &page.page)?;
        }
        g.mapped = true;
        self.update_ctl(&g, 0);
        Ok(())
    }

    /// Gives every ring slot a page it keeps from now on (mmap mode: a process's mapping or
    /// a dma-buf holds the pages). Refused (`EBUSY`) while a read() or splice() session
    /// runs: its slots' pages were posted under lending rules. In mmap mode already, the
    /// slots keep the pages they have.
    pub(crate) fn pin_slots(&self, g: &mut MutexGuard<'_, Inner>) -> Result {
        if g.removed {
            return Err(ENODEV);
        }
        if g.running && !g.mapped {
            return Err(EBUSY);
        }
        let n = g.entries() as usize;
        let keep = g.mapped;
        let hw = g.hw.as_mut().ok_or(ENODEV)?;
        if !keep {
            hw.clear_slots();
        }
        for slot in 0..n {
            hw.page_for_slot(slot, keep).ok_or(ENOMEM)?;
        }
        Ok(())
    }

    /// Mirrors the mmap state into the control page.
    pub(crate) fn update_ctl(&self, g: &Inner, ready: u32) {
        if let Some(hw) = g.hw.as_ref() {
            hw.write_ctl(&[
                (uapi::ctl::MAGIC, uapi::ACQ_CTL_MAGIC),
                (uapi::ctl::ENTRIES, u64::from(g.entries())),
                (uapi::ctl::BLOCK_SIZE, u64::from(g.cfg.block_size)),
                (uapi::ctl::CONSUMER, u64::from(g.head)),
                (uapi::ctl::PRODUCER, u64::from(g.head.wrapping_add(ready))),
                (uapi::ctl::STREAM_OFFSET, g.stats.read_offset),
                (uapi::ctl::SESSION, g.stats.session),
                (
                    uapi::ctl::FLAGS,
                    u64::from(if g.running { uapi::ACQ_MMAP_RUNNING } else { 0 }),
                ),
            ]);
        }
    }

    /// ACQ_IOC_MMAP_SYNC: releases consumed blocks and reports the ready ones.
    pub(crate) fn mmap_sync(&self, req: &mut uapi::AcqMmapSync) -> Result {
        if req.reserved != 0 || req.timeout_ms > 60_000 {
            return Err(EINVAL);
        }
        let mut g = self.inner.lock();
        if g.removed {
            return Err(ENODEV);
        }
        if !g.mapped {
            return Err(EINVAL);
        }
        if req.release > g.mmap_held {
            return Err(EINVAL);
        }
        let bs = g.cfg.block_size;
        for _ in 0..req.release {
            g.stats.blocks += 1;
            g.stats.bytes = g.stats.bytes.wrapping_add(u64::from(bs));
            g.stats.read_offset = g.stats.read_offset.wrapping_add(u64::from(bs));
            self.consumed(&mut g);
        }
        g.mmap_held -= req.release;
        let r = match self.mmap_wait(&mut g, req) {
            // The release took effect, so the call must not fail (the same request, tried
            // again, would release blocks the consumer no longer holds: EINVAL). A signal
            // ends the wait like a timeout; a gap or an error stays latched for the next
            // sync, as read() keeps one for the next call.
            Err(e)
                if req.release > 0
                    && (e == EINTR || e == ERESTARTSYS || e == EPIPE || e == EIO) =>
            {
                if e == EPIPE {
                    g.xrun = true;
                } else if e == EIO {
                    g.err = true;
                }
                if e == EPIPE || e == EIO {
                    // Latched again: news for a sync waiting in another thread too.
                    self.sleepers.wake(&self.wait);
                }
                g.mmap_held = 0;
                req.head = u64::from(g.head);
                req.count = 0;
                req.block_size = bs;
                req.stream_offset = g.stats.read_offset;
                req.flags = if g.running { uapi::ACQ_MMAP_RUNNING } else { 0 };
                Ok(())
            }
            r => r,
        };
        self.flush_reposts(&mut g);
        let ready = if r.is_ok() { req.count } else { 0 };
        self.update_ctl(&g, ready);
        r
    }

    pub(crate) fn mmap_wait(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        req: &mut uapi::AcqMmapSync,
    ) -> Result {
        let mut waited = 0u32;
        loop {
            if g.removed {
                return Err(ENODEV);
            }
            if g.xrun && g.mmap_held == 0 {
                g.xrun = false;
                return Err(EPIPE);
            }
            if g.err && g.mmap_held == 0 {
                g.err = false;
                return Err(EIO);
            }
            if !g.running {
                // A halt or a stop: held blocks are gone; a new session starts.
                g.mmap_held = 0;
                if g.err {
                    g.err = false;
                    return Err(EIO);
                }
                if g.flr_due || g.resetting {
                    // Wait for the watchdog's reset, then look again (its EIO first).
                    self.wait_for_reset(g, false)?;
                    continue;
                }
                self.start_waiting(g)?;
            }
            let log2 = g.cfg.ring_log2;
            let n = g.entries();
            let head = g.head;
            let bs = g.cfg.block_size;
            let mut count = 0u32;
            let mut expect = g.stats.read_offset;
            while count < n {
                let k = head.wrapping_add(count);
                let Some(c) = self.completion(g, k) else {
                    if count == 0 && self.head_lost(g) {
                        // Passed by the card, never written: an error, not a wait.
                        self.skip_lost(g);
                        return Err(EIO);
                    }
                    break;
                };
                let bad =
                    c.is_error() || u32::from(c.id) != regs::ring::slot(k, log2) || c.length != bs;
                if bad || c.stream_offset != expect {
                    if count > 0 {
                        break;
                    }
                    if bad {
                        g.stats.errors += 1;
                        self.consumed(g);
                        return Err(EIO);
                    }
                    g.stats.overflows += 1;
                    g.stats.lost_bytes = g.stats.lost_bytes.saturating_add(c.lost_bytes);
                    g.stats.read_offset = c.stream_offset;
                    return Err(EPIPE);
                }
                if count >= g.mmap_held {
                    // Newly reported: the CPU may look at it now.
                    let b2 = g.bar2_layout();
                    if let Some((index, page)) =
                        g.hw.as_ref().and_then(|hw| hw.slot_buf(c.id as usize))
                    {
                        if self
                            .take_for_cpu(b2, c.id as usize, index, page, bs as usize)
                            .is_err()
                        {
                            // BAR2 mode: the copy failed (the card is going away).
                            return Err(EIO);
                        }
                    }
                }
                expect = expect.wrapping_add(u64::from(bs));
                count += 1;
            }
            if count > 0 || waited >= req.timeout_ms {
                g.mmap_held = count;
                req.head = u64::from(head);
                req.count = count;
                req.block_size = bs;
                req.stream_offset = g.stats.read_offset;
                req.flags = if g.running { uapi::ACQ_MMAP_RUNNING } else { 0 };
                return Ok(());
            }
            self.flush_reposts(g);
            let step = READ_RECHECK_MS.min(req.timeout_ms - waited).max(1);
            if let CondVarTimeoutResult::Signal { .. } =
                self.sleepers
                    .sleep(&self.wait, g, msecs_to_jiffies(step), |g| self.news(g))
            {
                return Err(EINTR);
            }
            waited += step;
        }
    }
}
