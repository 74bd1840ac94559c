// SPDX-License-Identifier: GPL-2.0

//! ioctl() of `/dev/acqN`, configuration checks, statistics and unbind.

use super::*;

// Byte-level views of the uapi structures for `UserSlice::read`/`write`.
#[repr(transparent)]
pub(crate) struct UapiConfig(pub(crate) AcqConfig);
#[repr(transparent)]
pub(crate) struct UapiStats(pub(crate) AcqStats);
#[repr(transparent)]
pub(crate) struct UapiInfo(pub(crate) AcqInfo);
#[repr(transparent)]
pub(crate) struct UapiMmapSync(pub(crate) uapi::AcqMmapSync);
#[repr(transparent)]
pub(crate) struct UapiExpBuf(pub(crate) uapi::AcqExpBuf);

// SAFETY: `AcqConfig` is `repr(C)` with only integer fields and no padding (its size is
// asserted in uapi.rs), so every bit pattern is valid and every byte is initialised.
unsafe impl kernel::transmute::FromBytes for UapiConfig {}
// SAFETY: as above.
unsafe impl kernel::transmute::AsBytes for UapiConfig {}
// SAFETY: `AcqStats` is `repr(C)`, integer fields only, no padding.
unsafe impl kernel::transmute::AsBytes for UapiStats {}
// SAFETY: `AcqInfo` is `repr(C)`, integer fields only, no padding.
unsafe impl kernel::transmute::AsBytes for UapiInfo {}
// SAFETY: `AcqMmapSync` is `repr(C)`, integer fields only, no padding (size asserted).
unsafe impl kernel::transmute::FromBytes for UapiMmapSync {}
// SAFETY: as above.
unsafe impl kernel::transmute::AsBytes for UapiMmapSync {}
// SAFETY: `AcqExpBuf` is `repr(C)`, integer fields only, no padding (size asserted).
unsafe impl kernel::transmute::FromBytes for UapiExpBuf {}
// SAFETY: as above.
unsafe impl kernel::transmute::AsBytes for UapiExpBuf {}

impl UapiConfig {
    /// The `AcqConfig` a `*_SET_CONFIG` call passes at `user`.
    pub(crate) fn read_from(user: UserPtr) -> Result<AcqConfig> {
        let UapiConfig(cfg) = UserSlice::new(user, size_of::<AcqConfig>())
            .reader()
            .read::<UapiConfig>()?;
        Ok(cfg)
    }

    /// Writes `cfg` to `user` for a `*_GET_CONFIG` call.
    pub(crate) fn write_to(user: UserPtr, cfg: AcqConfig) -> Result {
        UserSlice::new(user, size_of::<AcqConfig>())
            .writer()
            .write(&UapiConfig(cfg))
    }
}

// ---------------------------------------------------------------------------
// Interrupts
// ---------------------------------------------------------------------------

impl Card {
    pub(crate) fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserPtr::from_addr(arg);
        match cmd {
            uapi::ACQ_IOC_START => {
                let mut g = self.inner.lock();
                self.start_waiting(&mut g)?;
            }
            uapi::ACQ_IOC_STOP => {
                let mut g = self.inner.lock();
                if g.removed {
                    return Err(ENODEV);
                }
                self.stop_locked(&mut g);
            }
            uapi::ACQ_IOC_RESET => {
                let mut g = self.inner.lock();
                if g.removed {
                    return Err(ENODEV);
                }
                self.stop_locked(&mut g);
                self.with_regs(|r| r.soft_reset()).ok_or(ENODEV)?;
                g.err = false;
                g.stats = AcqStats::default();
                self.irqs.store(0, Relaxed);
            }
            uapi::ACQ_IOC_GET_CONFIG => {
                let cfg = self.inner.lock().cfg;
                UapiConfig::write_to(user, cfg)?;
            }
            uapi::ACQ_IOC_SET_CONFIG => {
                let cfg = UapiConfig::read_from(user)?;
                self.validate(&cfg)?;
                let mut g = self.inner.lock();
                if g.removed {
                    return Err(ENODEV);
                }
                if g.running || g.mapped {
                    return Err(EBUSY);
                }
                g.cfg = cfg;
            }
            uapi::ACQ_IOC_GET_STATS => {
                let stats = self.stats();
                UserSlice::new(user, size_of::<AcqStats>())
                    .writer()
                    .write(&UapiStats(stats))?;
            }
            uapi::ACQ_IOC_GET_STATS_V1 => {
                let stats = UapiStats(self.stats());
                let bytes = kernel::transmute::AsBytes::as_bytes(&stats);
                let v1 = bytes.get(..uapi::ACQ_STATS_V1_SIZE).ok_or(EINVAL)?;
                UserSlice::new(user, v1.len()).writer().write_slice(v1)?;
            }
            uapi::ACQ_IOC_MMAP_SYNC => {
                let (mut r, mut w) =
                    UserSlice::new(user, size_of::<uapi::AcqMmapSync>()).reader_writer();
                let UapiMmapSync(mut req) = r.read::<UapiMmapSync>()?;
                self.mmap_sync(&mut req)?;
                w.write(&UapiMmapSync(req))?;
            }
            uapi::ACQ_IOC_EXPBUF => {
                let (mut r, mut w) =
                    UserSlice::new(user, size_of::<uapi::AcqExpBuf>()).reader_writer();
                let UapiExpBuf(mut req) = r.read::<UapiExpBuf>()?;
                let exp = self.expbuf(&mut req)?;
                // The descriptor goes into the process's table only once the answer
                // arrived (dropping `exp` on EFAULT undoes the export).
                w.write(&UapiExpBuf(req))?;
                self.expbuf_commit(exp)?;
            }
            uapi::ACQ_IOC_GET_INFO => return self.ioctl_info(cmd, arg),
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    /// `ACQ_IOC_GET_INFO`, served by both nodes (`ENOTTY` for anything else).
    pub(crate) fn ioctl_info(&self, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserPtr::from_addr(arg);
        match cmd {
            uapi::ACQ_IOC_GET_INFO => {
                let info = AcqInfo {
                    abi_version: uapi::ACQ_ABI_VERSION,
                    index: self.index,
                    hw_version: self.hw_version,
                    caps: self.caps,
                    fifo_depth: self.fifo_depth,
                    irq_mode: self.irq_mode,
                    max_ring_log2: MAX_RING_LOG2,
                    max_block_size: PAGE_SIZE as u32,
                };
                UserSlice::new(user, size_of::<AcqInfo>())
                    .writer()
                    .write(&UapiInfo(info))?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    pub(crate) fn stats(&self) -> AcqStats {
        let g = self.inner.lock();
        let mut s = g.stats;
        s.state = Self::state(&g);
        s.interrupts = self.irqs.load(Relaxed);
        s.lost_wakeups = self.sleepers.lost();
        if let Some(hw) = g.hw.as_ref() {
            s.pool_pages = hw.pool.len() as u32;
            s.pool_free = hw.free_pages() as u32;
        }
        s
    }

    pub(crate) fn validate(&self, c: &AcqConfig) -> Result {
        let block_ok = regs::limits::block_size_valid(c.block_size, self.fifo_depth)
            && c.block_size as usize <= PAGE_SIZE;
        let ring_ok = c.ring_log2 >= regs::limits::RING_LOG2_MIN && c.ring_log2 <= MAX_RING_LOG2;
        let pat_cap = match regs::pattern::id(c.pattern) {
            regs::pattern::COUNTER => regs::caps::PAT_COUNTER,
            regs::pattern::PRBS => regs::caps::PAT_PRBS,
            regs::pattern::SINE => regs::caps::PAT_SINE,
            _ => 0,
        };
        let pattern_ok = c.pattern & !regs::pattern::REG_MASK == 0
            && regs::pattern::valid(c.pattern)
            && self.caps & pat_cap != 0;
        let irq_ok = c.irq_mod_count <= 0xFFFF && c.irq_mod_time_us <= 1_000_000;
        // A rate bounds how long a full ring takes to move, and so every wait built on it
        // (the watchdog's patience, playback's drain at close): at most MAX_RING_SECONDS.
        let ring_bytes = u64::from(regs::ring::entries(c.ring_log2.min(MAX_RING_LOG2)))
            * u64::from(c.block_size);
        let rate_ok = c.rate == 0 || c.rate.saturating_mul(MAX_RING_SECONDS) >= ring_bytes;
        let loopback_ok =
            c.flags & uapi::ACQ_CFG_LOOPBACK == 0 || self.caps & regs::caps::LOOPBACK != 0;
        // Loopback with BAR2 streaming has never been run: refused rather than guessed at.
        let both = uapi::ACQ_CFG_LOOPBACK | uapi::ACQ_CFG_BAR2;
        let flags_ok = c.flags & !uapi::ACQ_CFG_FLAGS == 0 && loopback_ok && c.flags & both != both;
        if !(block_ok && ring_ok && pattern_ok && irq_ok && flags_ok && rate_ok) {
            return Err(EINVAL);
        }
        if c.flags & uapi::ACQ_CFG_BAR2 != 0 {
            bar2::check_config(self.index, self.bar2.as_ref(), c)?;
        }
        Ok(())
    }

    /// Unbind: stop the card, free its DMA memory (under the lock, so no reader is using
    /// a buffer), wake everybody with ENODEV and stop the watchdog.
    pub(crate) fn shutdown(self: &Arc<Self>) {
        let hw = {
            let mut g = self.inner.lock();
            g.removed = true;
            g.running = false;
            let _ = self.with_regs(|r| {
                r.stop();
                self.set_irq_mask(r, |_| regs::irq::ALL);
                r.soft_reset();
            });
            // A card that ignores the reset (hung) must still not write into memory we
            // free: take its bus mastering away first.
            self.pdev.clear_master();
            // Nothing is under DMA any more: pages still lent to pipes confirm at once.
            for b in self.busy.iter() {
                b.store(0, Release);
            }
            g.hw.take()
        };
        // Wake first: freeing the DMA memory takes a while (bounce buffers, an IOMMU),
        // and the readers only need `removed`.
        self.sleepers.wake(&self.wait);
        drop(hw);
        // The soft reset above stopped the playback channel too.
        self.pb_shutdown();
        self.cancel_watchdog();
    }

    pub(crate) fn cancel_watchdog(self: &Arc<Self>) {
        let dwork = ptr::from_ref(&self.watchdog)
            .cast_mut()
            .cast::<bindings::delayed_work>();
        // SAFETY: `DelayedWork` is a transparent wrapper of a `struct delayed_work` that
        // was initialised by `new_delayed_work!` and lives as long as `self`.
        let was_pending = unsafe { bindings::cancel_delayed_work_sync(dwork) };
        if was_pending {
            // SAFETY: a queued work item owns one reference, leaked by `Arc::into_raw` in
            // `enqueue_delayed`; its `run` will never execute now, so we release it.
            drop(unsafe { Arc::from_raw(Arc::as_ptr(self)) });
        }
    }
}
