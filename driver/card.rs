// SPDX-License-Identifier: GPL-2.0

//! Card basics used by every path: register access, completions and the event page
//! (in host memory or BAR2), liveness and recovery.

use super::*;

impl Card {
    /// Runs `f` with the registers, if the card is still bound. `f` must not sleep (the
    /// BAR is protected by RCU).
    pub(crate) fn with_regs<R>(&self, f: impl FnOnce(&Regs<'_, '_>) -> R) -> Option<R> {
        let bar = self.bar.try_access()?;
        Some(f(&Regs(&bar)))
    }

    /// Changes IRQ_MASK to `f(current)` under the card's IRQ_MASK lock, through `r`.
    pub(crate) fn set_irq_mask(&self, r: &Regs<'_, '_>, f: impl FnOnce(u32) -> u32) {
        let _serialised = self.irq_mask.lock();
        let m = r.rd(regs::reg::IRQ_MASK);
        r.wr(regs::reg::IRQ_MASK, f(m));
    }

    /// Completion `k` of the running session: from coherent memory, or from BAR2.
    pub(crate) fn completion(&self, g: &Inner, k: u32) -> Option<regs::Completion> {
        let (mem, base) = self.comp_ring(g)?;
        completions::read(&mem, base, k, g.cfg.ring_log2)
    }

    /// Where the session's completion ring is: coherent memory, or BAR2 (and the ring's
    /// offset there). `None` once the card was unbound.
    pub(crate) fn comp_ring<'a>(&'a self, g: &'a Inner) -> Option<(completions::Ring<'a>, usize)> {
        let hw = g.hw.as_ref()?;
        if g.bar2 {
            let b = self.bar2.as_ref()?;
            Some((completions::Ring::Bar2(b), regs::bar2::COMP_OFFSET as usize))
        } else {
            Some((completions::Ring::Coherent(&hw.comp), 0))
        }
    }

    /// A word of the session's event page (in coherent memory, or in BAR2).
    pub(crate) fn event_read(&self, bar2: bool, hw: &Hw, off: usize) -> u32 {
        match (bar2, self.bar2.as_ref()) {
            (true, Some(b)) => b.event_read(off),
            (true, None) => 0,
            (false, _) => hw.event.read32(off),
        }
    }

    /// Writes a driver word of the session's event page.
    pub(crate) fn event_write(&self, bar2: bool, hw: &Hw, off: usize, v: u32) {
        match (bar2, self.bar2.as_ref()) {
            (true, Some(b)) => b.event_write(off, v),
            (true, None) => {}
            (false, _) => hw.event.write32(off, v),
        }
    }

    /// True if the card answers register reads (its ID register reads the magic).
    pub(crate) fn alive(&self) -> bool {
        self.with_regs(|r| r.rd(regs::reg::ID) == regs::id::MAGIC)
            .unwrap_or(false)
    }

    /// Resets a card: a soft reset, and if the card still does not answer (a hung card
    /// ignores register writes) while its config space does, a function-level reset is
    /// due (`flr_due`): the watchdog does it with the mutex dropped (`flr_unlocked`).
    /// Returns whether the card answers now. Counted in `watchdog_resets`.
    pub(crate) fn revive_locked(&self, g: &mut MutexGuard<'_, Inner>) -> bool {
        g.stats.watchdog_resets += 1;
        g.stats.errors += 1;
        let _ = self.with_regs(|r| r.soft_reset());
        if self.alive() {
            return true;
        }
        if !self.pdev.present() {
            // Config space reads all-ones: the card was unplugged, or what serves it died
            // for good (a vfio-user server killed under QEMU: QEMU keeps the device and
            // answers every access with all-ones, and no unbind follows). A function
            // reset would wait for a card that cannot come back. It is gone: ENODEV from
            // now on, not an EIO for every call that a consumer would retry for ever.
            pr_warn!(
                "acq{}: the card no longer answers config space reads: gone\n",
                self.index
            );
            g.removed = true;
            return false;
        }
        g.flr_due = true;
        false
    }

    /// The function-level reset `revive_locked` found due, through the PCI core, with the
    /// card's mutex dropped: an FLR waits 100 ms and more, and under the mutex it would
    /// hold up the interrupt threads, ioctls, poll() and unbind. Meanwhile `resetting`
    /// keeps sessions from starting (`start_locked`), and a card gone for good stays so.
    /// Returns the guard, taken again, and whether the card answers afterwards; wakes
    /// whoever waits for the reset.
    pub(crate) fn flr_unlocked<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
    ) -> (MutexGuard<'a, Inner>, bool) {
        g.resetting = true;
        self.resetting.store(true, Relaxed);
        drop(g);
        // The caller ended the session: waiters see that now and go on to wait for the
        // reset's end, rather than at their re-check (a lost wake-up).
        self.sleepers.wake(&self.wait);
        self.pb_sleepers.wake(&self.pb_wait);
        let ret = self.pdev.try_reset();
        let mut alive = self.alive();
        let changed = if ret == 0 {
            self.pdev.changed_identity()
        } else {
            None
        };
        if let Some((ids, class)) = changed {
            // No DMA for a function we do not know (the reset restored our command
            // register), and no playback session either.
            self.pdev.clear_master();
            self.pb_mark_gone();
            pr_err!(
                "acq{}: after the function reset config space names another device (IDs {:#010x}, class {:#08x}): not the card probe bound, treated as gone\n",
                self.index,
                ids,
                class
            );
            alive = false;
        }
        self.resetting.store(false, Relaxed);
        pr_warn!(
            "acq{}: card did not answer after a soft reset; function reset: {}, card {}\n",
            self.index,
            ret,
            if alive { "back" } else { "still dead" }
        );
        let mut g = self.inner.lock();
        g.resetting = false;
        // `-EAGAIN`: the device lock was taken (an unbind, say): try again next tick.
        g.flr_due = ret != 0 && !alive && !g.removed;
        if !alive && ret == 0 {
            // The reset ran and the card still does not answer, or came back as another
            // device: gone for good.
            g.removed = true;
        }
        self.sleepers.wake(&self.wait);
        // A playback start may wait for the reset too (`pb_wait_for_reset`). Not under
        // the playback mutex: that one may be held while `inner` is taken.
        self.pb_sleepers.wake(&self.pb_wait);
        (g, alive)
    }

    /// Asks the watchdog for a function reset of a card that stopped answering, as the
    /// playback channel finds it (capture finds it itself, `revive_locked`). The next
    /// watchdog tick runs it, or capture's stall handling does if a capture session runs.
    ///
    /// Lock order: the playback mutex may be held; the card mutex (`inner`) never waits
    /// for the playback mutex.
    pub(crate) fn request_flr(&self) {
        let mut g = self.inner.lock();
        if !g.removed && !g.resetting && !g.flr_due {
            pr_warn!(
                "acq{}: playback: the card does not answer; a function reset is due\n",
                self.index
            );
            g.flr_due = true;
        }
    }

    /// Is a function reset due or under way?
    pub(crate) fn reset_pending(&self) -> bool {
        let g = self.inner.lock();
        g.flr_due || g.resetting
    }

    pub(crate) fn state(g: &Inner) -> u32 {
        uapi_state(g.removed, g.halted, g.running)
    }
}

/// A channel's `state` in its statistics (uapi `ACQ_STATE_*`), capture's and playback's.
pub(crate) fn uapi_state(removed: bool, halted: bool, running: bool) -> u32 {
    if removed {
        uapi::ACQ_STATE_REMOVED
    } else if halted {
        uapi::ACQ_STATE_ERROR
    } else if running {
        uapi::ACQ_STATE_RUNNING
    } else {
        uapi::ACQ_STATE_STOPPED
    }
}
