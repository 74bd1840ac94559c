// SPDX-License-Identifier: GPL-2.0

//! The watchdog: a delayed work item that resets and restarts a card whose engine
//! makes no progress with buffers posted.

use super::*;

impl_has_delayed_work! {
    impl HasDelayedWork<Self> for Card { self.watchdog }
}

/// The queue the watchdog runs on. A tick may reset the card (FLR waits 100 ms and more),
/// so it goes on the queue for long work items; `system()` (`system_wq`) is deprecated in
/// 7.3 and says so in the kernel log.
pub(crate) fn watchdog_queue() -> &'static workqueue::Queue {
    workqueue::system_long()
}

impl WorkItem for Card {
    type Pointer = Arc<Card>;

    fn run(this: Arc<Card>) {
        if this.watchdog_tick() {
            let _ = watchdog_queue().enqueue_delayed(this, msecs_to_jiffies(WATCHDOG_MS));
        }
    }
}

impl Card {
    /// One watchdog period, for both channels. Returns false when the watchdog must not
    /// run again.
    pub(crate) fn watchdog_tick(&self) -> bool {
        let again = self.capture_watchdog_tick();
        if again {
            self.pb_watchdog_tick();
        }
        again
    }

    /// The capture half of a watchdog period. Returns false once the card is removed.
    fn capture_watchdog_tick(&self) -> bool {
        let mut g = self.inner.lock();
        if g.removed {
            return false;
        }
        if g.flr_due && !g.running {
            // A session start found the card silent: reset it (unlocked), and the
            // waiting start goes on.
            let (g, _) = self.flr_unlocked(g);
            return !g.removed;
        }
        if !g.running || g.cfg.flags & uapi::ACQ_CFG_LOOPBACK != 0 {
            // A loopback session waits for the playback side: no data is not a stall.
            g.wd_still_ms = 0;
            return true;
        }
        let Some(hw) = g.hw.as_ref() else {
            return false;
        };
        let cons = self.event_read(g.bar2, hw, regs::event::OFF_CONS);
        let outstanding = regs::ring::outstanding(g.prod, cons);
        if cons != g.wd_cons || outstanding == 0 {
            // Progress, or the card waits for us (a slow reader is not a stall). Progress
            // is news for a poller too: poll() has no re-check of its own, and on a card
            // whose interrupts never come this is its wake-up.
            let progressed = cons != g.wd_cons;
            g.wd_cons = cons;
            g.wd_still_ms = 0;
            drop(g);
            if progressed {
                self.sleepers.wake(&self.wait);
            }
            return true;
        }
        g.wd_still_ms += u64::from(WATCHDOG_MS);
        if g.wd_still_ms == u64::from(WATCHDOG_MS) {
            // The first period with buffers posted and no progress: the card may be asleep
            // for a DOORBELL it did not ask for (a `need_doorbell` it never published, or
            // one we read too early). The spec makes an extra DOORBELL harmless (section
            // 8), so ring once before counting towards a reset.
            let _ = self.with_regs(|r| r.wr(regs::reg::DOORBELL, 1));
        }
        let block_ms = match g.cfg.rate {
            0 => 0,
            rate => u64::from(g.cfg.block_size).saturating_mul(1000) / rate,
        };
        if g.wd_still_ms < STALL_MS.saturating_add(block_ms.saturating_mul(4)) {
            return true;
        }
        pr_warn!(
            "acq{}: no progress for {} ms with {} buffers posted: resetting the card\n",
            self.index,
            g.wd_still_ms,
            outstanding
        );
        g.running = false;
        let stops = g.stops;
        let mut revived = self.revive_locked(&mut g);
        if !revived && g.flr_due {
            let (g2, alive) = self.flr_unlocked(g);
            g = g2;
            revived = alive;
            if g.stops != stops || !g.open {
                // A STOP, RESET or close() came while the mutex was dropped: it ended the
                // session for good. Neither an EIO nor a new session for it.
                drop(g);
                self.sleepers.wake(&self.wait);
                return true;
            }
        }
        // The EIO is latched only now, after the reset and with the next session about to
        // start in the same critical section: a consumer that looks at the session after
        // its EIO (docs/driver.md) sees the new one. (Readers that came meanwhile found
        // no session and waited for the reset.)
        g.err = true;
        if g.mapped {
            // mmap mode: the consumer may be reading blocks it holds, and a new session
            // would post every slot again, so the card would write over them. The card
            // stays stopped: ACQ_IOC_MMAP_SYNC reports EIO once (after the consumer's
            // release, if it releases), and the sync after that starts a new session.
            g.halted = !revived;
        } else if !revived || self.start_locked(&mut g).is_err() {
            g.halted = true;
        }
        drop(g);
        self.sleepers.wake(&self.wait);
        true
    }
}
