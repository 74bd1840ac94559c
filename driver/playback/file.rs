// SPDX-License-Identifier: GPL-2.0

//! The playback file's calls outside the data path: open, release (with its bounded
//! drain), poll(), the playback ioctls and statistics, and unbind. The data path (write(),
//! splice_write(), the ring and its completions) is the parent module.

use super::*;

/// Unbind waits at most this long for a dma-buf import being mapped (`pb_shutdown`).
const IMPORT_WAIT_MS: i64 = 30_000;

impl Card {
    /// Waits until the card received everything posted (close, `ACQ_IOC_PB_DRAIN`). A
    /// signal ends the wait with `EINTR` (close then gives up on the rest).
    fn pb_drain_locked(&self, g: &mut MutexGuard<'_, PbInner>) -> Result {
        self.pb_publish(g);
        let rate = g.cfg.rate;
        let ring_ms = match rate {
            0 => 0,
            r => u64::from(g.entries()) * u64::from(g.cfg.block_size) * 1000 / r,
        };
        // The budget is in jiffies and only what was really slept counts: a writer is
        // woken by every completion interrupt, long before a re-check period is over.
        let total_ms = PB_DRAIN_MS.saturating_add(ring_ms).min(u64::from(u32::MAX));
        self.pb_wait_until(g, msecs_to_jiffies(total_ms as u32), |g| {
            if !g.running {
                Some(News::State)
            } else if g.head == g.prod {
                Some(News::Completions)
            } else {
                None
            }
        })
    }

    /// Waits, interruptibly (`EINTR`), until `done` says why the wait is over (`News::State`:
    /// a change of state ended it; `News::Completions`: completions did), at most `left`
    /// jiffies of sleep (`ETIMEDOUT`), reaping completions at every look; `ENODEV` once the
    /// card is removed. The drain and `ACQ_IOC_PB_RELEASE` wait this way.
    fn pb_wait_until(
        &self,
        g: &mut MutexGuard<'_, PbInner>,
        mut left: Jiffies,
        done: impl Fn(&PbInner) -> Option<News>,
    ) -> Result {
        let period = msecs_to_jiffies(PB_RECHECK_MS);
        loop {
            self.pb_reap(g);
            if g.removed {
                return Err(ENODEV);
            }
            if done(g).is_some() {
                return Ok(());
            }
            if left == 0 {
                return Err(ETIMEDOUT);
            }
            let step = left.min(period);
            let news = |g: &mut MutexGuard<'_, PbInner>| {
                self.pb_reap(g);
                if g.removed {
                    News::State
                } else {
                    done(g).unwrap_or(News::Nothing)
                }
            };
            match self.pb_sleepers.sleep(&self.pb_wait, g, step, news) {
                CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
                CondVarTimeoutResult::Timeout => {
                    left -= step;
                    self.pb_check_halt(g, true);
                }
                CondVarTimeoutResult::Woken { jiffies } => {
                    // At least one jiffy per wake-up: an interrupt storm cannot stretch
                    // the wait beyond the budget's jiffies in wake-ups.
                    left -= (step - jiffies.min(step)).max(1).min(left);
                }
            }
        }
    }

    /// The session's release point: no byte before it is in a pipe page the driver still
    /// holds (the card may read a held page until its completion). Bytes copied into the
    /// bounce pages are released when copied.
    fn pb_released(g: &PbInner) -> u64 {
        g.hw.as_ref()
            .and_then(|hw| hw.oldest_held(g.head, g.prod, g.cfg.ring_log2))
            .map_or(g.written, |o| o.min(g.written))
    }

    /// `ACQ_IOC_PB_RELEASE`: waits (at most `timeout_ms`, interruptibly) until the bytes
    /// before `offset` of session `session` are released, then reports the current
    /// session's release point. A session that ended released everything (its stop
    /// dropped every held page). `req` is answered on `ETIMEDOUT` too.
    fn pb_release_wait(&self, req: &mut uapi::AcqPbRelease) -> Result {
        if req.reserved != 0 || req.timeout_ms > 60_000 {
            return Err(EINVAL);
        }
        let mut g = self.pb.lock();
        if g.removed {
            return Err(ENODEV);
        }
        let session = if req.session == 0 {
            g.starts
        } else {
            req.session
        };
        if session > g.starts || (session == g.starts && req.offset > g.written) {
            // A session that never was, or bytes not written yet, cannot be waited for:
            // answering "released" would tell the writer to reuse memory on a guess.
            return Err(EINVAL);
        }
        // Descriptors not yet given to the card would never complete.
        self.pb_publish(&mut g);
        let offset = req.offset;
        let r = self.pb_wait_until(&mut g, msecs_to_jiffies(req.timeout_ms), |g| {
            if !g.running || session != g.starts {
                Some(News::State)
            } else if Self::pb_released(g) >= offset {
                Some(News::Completions)
            } else {
                None
            }
        });
        req.session = g.starts;
        req.released = Self::pb_released(&g);
        req.written = g.written;
        r
    }

    /// The playback half of a watchdog period. A card asleep with blocks posted and no
    /// completion for a whole period may wait for a PB_DOORBELL it never asked for (a
    /// `need_doorbell` it did not publish: a writer that trusts the flag never rings,
    /// fills the ring and waits for ever, and so does a poller). An extra doorbell is
    /// harmless (docs/device.md section 8): ring it, and wake the writers to look again.
    pub(crate) fn pb_watchdog_tick(&self) {
        let mut g = self.pb.lock();
        if g.removed || !g.running {
            return;
        }
        self.pb_reap(&mut g);
        let (head, still) = (g.head, g.head == g.wd_head);
        g.wd_head = head;
        if !still || g.published == g.head {
            // Progress, or nothing given to the card: the writer is the slow one. What
            // this reap found is news for a poller (poll() has no re-check of its own: on
            // a card whose interrupts never come this is its wake-up).
            drop(g);
            if !still {
                self.pb_sleepers.wake(&self.pb_wait);
            }
            return;
        }
        let _ = self.with_regs(|r| r.wr(regs::reg::PB_DOORBELL, 1));
        drop(g);
        self.pb_sleepers.wake(&self.pb_wait);
    }

    pub(crate) fn pb_poll(&self, file: &File, table: &PollTable<'_>) -> c_uint {
        table.register_wait(file, &self.pb_wait);
        let mut g = self.pb.lock();
        if g.removed {
            return POLLERR | POLLHUP;
        }
        self.pb_reap(&mut g);
        // A full ring is when a poller would sleep: then make sure the card still runs (one
        // register read), or a reset card would leave it waiting for POLLOUT forever.
        let full = g.running && !g.has_space();
        self.pb_check_halt(&mut g, full);
        let mut mask = 0;
        if g.err > 0 {
            mask |= POLLERR;
        }
        if !g.running || g.has_space() || g.owes() {
            mask |= POLLOUT | POLLWRNORM;
        }
        mask
    }

    pub(crate) fn pb_open(&self) -> Result {
        let mut g = self.pb.lock();
        if g.removed || g.hw.is_none() {
            return Err(ENODEV);
        }
        if g.open {
            return Err(EBUSY);
        }
        g.open = true;
        Ok(())
    }

    /// Close: the card receives what was written (bounded wait), then the session stops.
    pub(crate) fn pb_release(&self) {
        let mut g = self.pb.lock();
        if !g.removed && g.running {
            if let Err(e) = self.pb_drain_locked(&mut g) {
                let why = if e == EINTR {
                    "a signal ended the wait (a killed writer's blocks are dropped)"
                } else if e == ETIMEDOUT {
                    "the card did not take them within the drain's time"
                } else {
                    "the card failed or is gone"
                };
                pr_warn!(
                    "acq{}: playback close: {} blocks not received: {}\n",
                    self.index,
                    regs::ring::outstanding(g.prod, g.head),
                    why
                );
            }
        }
        if !g.removed {
            self.pb_stop_locked(&mut g);
        }
        // The card reads none of its pages any more (stopped, or gone): the exporter may
        // have them back. Under `pb`, so that an unbind cannot take the device meanwhile.
        g.import = None;
        g.err = 0;
        g.xrun = 0;
        g.open = false;
    }

    fn pb_stats(&self) -> uapi::AcqPbStats {
        let mut g = self.pb.lock();
        self.pb_reap(&mut g);
        let mut s = g.stats;
        s.in_flight = regs::ring::outstanding(g.prod, g.head);
        s.lost_wakeups = self.pb_sleepers.lost();
        s.held_pages = g.hw.as_ref().map_or(0, |hw| {
            hw.held.iter().filter(|h| h.is_some()).count() as u32
        });
        s.state = card::uapi_state(g.removed, g.halted, g.running);
        drop(g);
        let card = self.with_regs(|r| {
            let rd64 = |lo: usize, hi: usize| regs::join64(r.rd(lo), r.rd(hi));
            use regs::reg::*;
            (
                rd64(PB_CNT_VERIFIED_LO, PB_CNT_VERIFIED_HI),
                rd64(PB_CNT_BYTES_LO, PB_CNT_BYTES_HI),
                rd64(PB_FIRST_BAD_LO, PB_FIRST_BAD_HI),
                r.rd(PB_CNT_MISMATCH),
                r.rd(PB_CNT_UNDERRUNS),
            )
        });
        if let Some((verified, bytes, first_bad, mismatch, underruns)) = card {
            s.card_verified = verified;
            s.card_bytes = bytes;
            s.card_first_bad = first_bad;
            s.card_mismatch = mismatch;
            s.card_underruns = underruns;
        }
        s
    }

    fn pb_validate(&self, c: &AcqConfig) -> Result {
        let mut plain = *c;
        plain.flags = 0;
        self.validate(&plain)?;
        if c.flags != 0 {
            return Err(EINVAL);
        }
        Ok(())
    }

    pub(crate) fn pb_ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserPtr::from_addr(arg);
        match cmd {
            uapi::ACQ_IOC_PB_GET_CONFIG => {
                let cfg = self.pb.lock().cfg;
                UapiConfig::write_to(user, cfg)?;
            }
            uapi::ACQ_IOC_PB_SET_CONFIG => {
                let cfg = UapiConfig::read_from(user)?;
                self.pb_validate(&cfg)?;
                let mut g = self.pb.lock();
                if g.removed {
                    return Err(ENODEV);
                }
                if g.running {
                    return Err(EBUSY);
                }
                g.cfg = cfg;
            }
            uapi::ACQ_IOC_PB_GET_STATS => {
                let stats = UapiPbStats(self.pb_stats());
                UserSlice::new(user, size_of::<uapi::AcqPbStats>())
                    .writer()
                    .write(&stats)?;
            }
            uapi::ACQ_IOC_PB_DRAIN => {
                let mut g = self.pb.lock();
                self.pb_drain_locked(&mut g)?;
                if let Some(e) = Self::pb_owed(&mut g, true) {
                    return Err(e);
                }
            }
            uapi::ACQ_IOC_PB_RELEASE => {
                let (mut r, mut w) =
                    UserSlice::new(user, size_of::<uapi::AcqPbRelease>()).reader_writer();
                let UapiPbRelease(mut req) = r.read::<UapiPbRelease>()?;
                let res = self.pb_release_wait(&mut req);
                if res.is_ok() || res == Err(ETIMEDOUT) {
                    w.write(&UapiPbRelease(req))?;
                }
                res?;
            }
            uapi::ACQ_IOC_PB_IMPORT => {
                let (mut r, mut w) =
                    UserSlice::new(user, size_of::<uapi::AcqPbImport>()).reader_writer();
                let UapiPbImport(mut req) = r.read::<UapiPbImport>()?;
                self.pb_import(&mut req)?;
                w.write(&UapiPbImport(req))?;
            }
            uapi::ACQ_IOC_PB_QUEUE => {
                let (mut r, mut w) =
                    UserSlice::new(user, size_of::<uapi::AcqPbQueue>()).reader_writer();
                let UapiPbQueue(mut req) = r.read::<UapiPbQueue>()?;
                self.pb_queue(&mut req)?;
                w.write(&UapiPbQueue(req))?;
            }
            uapi::ACQ_IOC_STOP => {
                let mut g = self.pb.lock();
                if g.removed {
                    return Err(ENODEV);
                }
                self.pb_stop_locked(&mut g);
            }
            _ => return self.ioctl_info(cmd, arg),
        }
        Ok(0)
    }

    /// Unbind: the card was stopped and reset; drop the playback memory and the held
    /// pipe pages, wake the writers with `ENODEV`.
    pub(crate) fn pb_shutdown(&self) {
        let (hw, import) = {
            let mut g = self.pb.lock();
            g.removed = true;
            g.running = false;
            // An import being built keeps the device in use until it is installed or
            // undone (`pb_import`, which sees `removed`): wait for it, at most
            // `IMPORT_WAIT_MS` (an exporter's map waits only for its own fences, which
            // must signal in bounded time).
            let mut waited = 0;
            while g.importing && waited < IMPORT_WAIT_MS {
                drop(g);
                kernel::time::delay::fsleep(kernel::time::Delta::from_millis(50));
                waited += 50;
                g = self.pb.lock();
            }
            if g.importing {
                pr_err!(
                    "acq{}: unbind: a dma-buf import still being mapped after {} ms; going on\n",
                    self.index,
                    IMPORT_WAIT_MS
                );
            }
            (g.hw.take(), g.import.take())
        };
        // Wake first: the writers only need `removed`; freeing takes a while. The device
        // is still bound here (unbind runs this before devres), as the import's unmap
        // needs; no PB_IMPORT can add one now (`removed`).
        self.pb_sleepers.wake(&self.pb_wait);
        drop(import);
        drop(hw);
    }
}

#[repr(transparent)]
struct UapiPbRelease(uapi::AcqPbRelease);
// SAFETY: `AcqPbRelease` is `repr(C)`, integer fields only, no padding (size asserted), so
// every bit pattern is valid and every byte is initialised.
unsafe impl kernel::transmute::FromBytes for UapiPbRelease {}
// SAFETY: as above.
unsafe impl kernel::transmute::AsBytes for UapiPbRelease {}

#[repr(transparent)]
struct UapiPbImport(uapi::AcqPbImport);
// SAFETY: `AcqPbImport` is `repr(C)`, integer fields only, no padding (size asserted).
unsafe impl kernel::transmute::FromBytes for UapiPbImport {}
// SAFETY: as above.
unsafe impl kernel::transmute::AsBytes for UapiPbImport {}

#[repr(transparent)]
struct UapiPbQueue(uapi::AcqPbQueue);
// SAFETY: `AcqPbQueue` is `repr(C)`, integer fields only, no padding (size asserted).
unsafe impl kernel::transmute::FromBytes for UapiPbQueue {}
// SAFETY: as above.
unsafe impl kernel::transmute::AsBytes for UapiPbQueue {}

#[repr(transparent)]
struct UapiPbStats(uapi::AcqPbStats);
// SAFETY: `AcqPbStats` is `repr(C)`, integer fields only, no padding (size asserted).
unsafe impl kernel::transmute::AsBytes for UapiPbStats {}
