// SPDX-License-Identifier: GPL-2.0

//! The playback channel (host -> card, docs/device.md section 19) on `/dev/acqN-out`:
//! write(), splice_write(), poll() and the playback ioctls (docs/driver.md, "Playback").
//!
//! * The playback ring has one slot per descriptor. A slot carries either the slot's own
//!   **bounce page** (write(), and splice of pipe buffers that are not one whole block) or
//!   a **pipe page** (splice of a whole, 8-byte aligned block: zero-copy). A pipe page is
//!   DMA-mapped with a page reference of our own; the pipe buffer is consumed at once, and
//!   the reference and the mapping are dropped only when the card's completion for that
//!   slot arrives (release on completion: the card reads the page until then).
//! * Completions are consumed in process context (write, splice, poll, drain) under the
//!   playback mutex; vector 2 only wakes the writers. Underruns and error completions
//!   surface once each as `EPIPE` and `EIO`, like overflow and errors on the capture side.
//! * The playback rings and event area are the channel's own coherent memory (the spec's
//!   "playback half of the event page" is only the recommended place): the capture side
//!   re-zeroes its event page at every session start, and the two channels start and stop
//!   independently, under different locks.

use super::*;

/// A blocked writer re-checks the ring (and the card's halt state) at least this often.
const PB_RECHECK_MS: u32 = 200;
/// Close waits at most this long (plus the ring's worth of output at the set rate) for
/// the card to receive what was written.
const PB_DRAIN_MS: u64 = 10_000;

// poll() event bits (include/uapi/asm-generic/poll.h).
const POLLOUT: c_uint = 0x0004;
const POLLWRNORM: c_uint = 0x0100;

mod dma;
pub(super) use dma::PbHw;
use dma::*;
mod file;
mod import;
use import::Import;

/// What a posted slot's descriptor points at (`Card::pb_post`).
enum Source {
    /// The slot's own bounce page, filled by a copy.
    Bounce,
    /// A spliced pipe page, held until the completion.
    Pipe(PipePage),
    /// A page of the imported dma-buf at `addr` (already synced for the card).
    Import { addr: u64, stream_off: u64 },
}

/// Playback state, under [`Card::pb`].
pub(super) struct PbInner {
    pub(super) hw: Option<PbHw>,
    cfg: AcqConfig,
    stats: uapi::AcqPbStats,
    open: bool,
    running: bool,
    halted: bool,
    removed: bool,
    /// Next completion to consume; descriptors written; `prod` last given to the card.
    head: u32,
    prod: u32,
    published: u32,
    /// Bytes already in the bounce page of slot `prod` (a partial block).
    fill: u32,
    /// Bytes this session took (its stream offset; `ACQ_IOC_PB_RELEASE`).
    written: u64,
    /// `EPIPE`s (underruns) / `EIO`s (error completions) owed to the writer: counts,
    /// because one reap can consume several such completions, and each is reported once.
    xrun: u32,
    err: u32,
    /// Sessions started so far (never reset): a write() that filled a bounce page without
    /// the lock finds out whether its session still owns the ring.
    starts: u64,
    /// A write() or a splice_write() step owns the stream's write position (`pb` is
    /// dropped for write()'s copies): others wait for it interruptibly (`WriterClaim`).
    writer_busy: bool,
    /// The task and the `*ppos` the last splice_write() left (`pb_fop_splice_write`: is a
    /// splice_write a later step of the same sendfile()?).
    pub(super) splice_task: usize,
    pub(super) splice_pos: i64,
    /// `head` at the watchdog's last period (`pb_watchdog_tick`).
    wd_head: u32,
    /// The "completion passed but never written" message (one per block at most).
    lost_log: LogLimit,
    /// The dma-buf `ACQ_IOC_PB_QUEUE` plays from (`ACQ_IOC_PB_IMPORT`). Dropped only with
    /// no slot holding one of its pages, and while the card is bound.
    import: Option<Import>,
    /// `ACQ_IOC_PB_IMPORT` is attaching and mapping a dma-buf with the lock dropped:
    /// unbind waits for it to end (`pb_shutdown`).
    importing: bool,
}

impl PbInner {
    pub(super) fn new(hw: Option<PbHw>) -> Self {
        Self {
            hw,
            cfg: DEFAULT_CONFIG,
            stats: uapi::AcqPbStats::default(),
            open: false,
            running: false,
            halted: false,
            removed: false,
            head: 0,
            prod: 0,
            published: 0,
            fill: 0,
            written: 0,
            xrun: 0,
            err: 0,
            starts: 0,
            writer_busy: false,
            splice_task: 0,
            splice_pos: 0,
            wd_head: 0,
            lost_log: LogLimit::new(),
            import: None,
            importing: false,
        }
    }

    fn entries(&self) -> u32 {
        regs::ring::entries(self.cfg.ring_log2)
    }

    /// An underrun (`EPIPE`) or an error (`EIO`) is owed to the writer.
    fn owes(&self) -> bool {
        self.err > 0 || self.xrun > 0
    }

    fn has_space(&self) -> bool {
        regs::ring::outstanding(self.prod, self.head) < self.entries()
    }
}

/// Ownership of the playback stream's write position for one write() or one
/// splice_write() step (the bounce slot being filled must stay the owner's while `pb` is
/// dropped for a copy from user memory). Released on drop, which takes `pb`: declare it
/// before the guard of `pb` it was claimed under, so that it drops after it.
pub(super) struct WriterClaim<'a>(&'a Card);

impl Drop for WriterClaim<'_> {
    fn drop(&mut self) {
        self.0.pb.lock().writer_busy = false;
        self.0.pb_wait.notify_all();
    }
}

impl Card {
    /// Claims the write position (see [`WriterClaim`]), waiting interruptibly while another
    /// writer has it (`EAGAIN` at once with `nonblock`).
    fn pb_claim_writer(
        &self,
        g: &mut MutexGuard<'_, PbInner>,
        nonblock: bool,
    ) -> Result<WriterClaim<'_>> {
        let period = msecs_to_jiffies(PB_RECHECK_MS);
        claim_flag(&self.pb_wait, g, nonblock, period, |p: &mut PbInner| {
            &mut p.writer_busy
        })?;
        Ok(WriterClaim(self))
    }

    /// Stops the playback engine (`Regs::stop_engine`: PB_CTRL = 0, then PB_STATUS.RUNNING
    /// = 0 within the spec's 10 ms, else a soft reset of both channels).
    fn pb_stop_engine(&self) {
        let _ = self.with_regs(|r| r.stop_engine::<regs::PbCtrl, regs::PbStatus>());
    }

    /// Starts a playback session with the current configuration. A card that does not
    /// answer (hung) is reset first, by the watchdog's function reset, which this waits for
    /// (`pb_wait_for_reset`: `EAGAIN` at once with `nonblock`).
    fn pb_start_locked(&self, g: &mut MutexGuard<'_, PbInner>, nonblock: bool) -> Result {
        if g.removed || g.hw.is_none() {
            return Err(ENODEV);
        }
        if !self.alive() {
            if self.pb_gone(g) {
                return Err(ENODEV);
            }
            self.request_flr();
            self.pb_wait_for_reset(g, nonblock)?;
            if g.removed {
                return Err(ENODEV);
            }
            if !self.alive() {
                if self.pb_gone(g) {
                    return Err(ENODEV);
                }
                g.err = g.err.max(1);
                return Err(EIO);
            }
        }
        self.pb_stop_engine();
        let cfg = g.cfg;
        let log2 = cfg.ring_log2;
        let n = regs::ring::entries(log2);
        let Some(hw) = g.hw.as_mut() else {
            return Err(ENODEV);
        };
        hw.release_all();
        hw.comp.zero(n as usize * regs::comp::SIZE);
        hw.event.zero(regs::pb_event::SIZE);
        // Completion interrupts stay armed for the whole session (moderation bounds them).
        hw.event
            .write32(regs::pb_event::OFF_IRQ_ARMED, regs::pb_event::ARMED);
        mb(Full);
        let (desc, comp, event) = (hw.desc.bus_addr(), hw.comp.bus_addr(), hw.event.bus_addr());
        let (status, code) = self
            .with_regs(|r| {
                use regs::reg::*;
                r.wr64(PB_DESC_BASE_LO, PB_DESC_BASE_HI, desc);
                r.wr64(PB_COMP_BASE_LO, PB_COMP_BASE_HI, comp);
                r.wr64(PB_EVENT_BASE_LO, PB_EVENT_BASE_HI, event);
                r.wr(PB_RING_LOG2, log2);
                r.wr(PB_BLOCK_SIZE, cfg.block_size);
                r.wr64(PB_RATE_LO, PB_RATE_HI, cfg.rate);
                r.wr(PB_PATTERN, cfg.pattern);
                r.wr64(PB_SEED_LO, PB_SEED_HI, cfg.seed);
                r.wr(PB_IRQ_MOD_COUNT, cfg.irq_mod_count);
                r.wr(PB_IRQ_MOD_TIME_US, cfg.irq_mod_time_us);
                r.write(regs::PbStatus(regs::pb_status::W1C_MASK));
                // The capture side unmasks every cause at its start; playback needs its own
                // two whether or not capture ran.
                self.set_irq_mask(r, |m| m & !regs::irq::VEC_PLAYBACK_CAUSES);
                r.write(regs::PbCtrl(regs::pb_ctrl::ENABLE));
                let st: regs::PbStatus = r.read();
                (st, r.rd(PB_ERROR_CODE))
            })
            .ok_or(ENODEV)?;
        if status.is_all_ones() {
            return Err(EIO);
        }
        if status.halted() {
            pr_err!(
                "acq{}: the card refused the playback configuration (PB_ERROR_CODE {:#x})\n",
                self.index,
                code
            );
            self.pb_stop_engine();
            return Err(EIO);
        }
        g.head = 0;
        g.prod = 0;
        g.published = 0;
        g.fill = 0;
        g.written = 0;
        g.xrun = 0;
        g.halted = false;
        g.running = true;
        g.stats.session += 1;
        g.starts = g.starts.wrapping_add(1);
        Ok(())
    }

    /// Stops the playback session; blocks not yet received are dropped, and so is a
    /// partial block.
    fn pb_stop_locked(&self, g: &mut MutexGuard<'_, PbInner>) {
        if g.running || g.halted {
            self.pb_stop_engine();
        }
        // The card reads nothing any more: every held pipe page goes back.
        if let Some(hw) = g.hw.as_mut() {
            hw.release_all();
        }
        g.running = false;
        g.halted = false;
        g.fill = 0;
        g.head = g.prod;
        self.pb_sleepers.wake(&self.pb_wait);
    }

    /// Consumes every completion the card wrote: releases held pipe pages (release on
    /// completion) and records underruns, mismatches and errors.
    fn pb_reap(&self, g: &mut MutexGuard<'_, PbInner>) {
        let log2 = g.cfg.ring_log2;
        loop {
            if g.head == g.prod {
                break;
            }
            let (head, published) = (g.head, g.published);
            let Some(hw) = g.hw.as_mut() else {
                return;
            };
            let slot = regs::ring::slot(head, log2) as usize;
            let mut lost = false;
            let c = match hw.completion(head, log2) {
                Some(c) => Some(c),
                None if hw.head_lost(head, published, log2) => {
                    // Passed by the card but never written (a stale phase): waiting for
                    // it would fill the ring and keep the writer waiting for ever. Taken
                    // as an error, and re-phased so that it cannot pass for the next
                    // lap's record before the card writes that one.
                    hw.unmark(head, log2);
                    lost = true;
                    None
                }
                None => break,
            };
            // The card finished reading this slot's buffer: held writer memory goes back.
            if let Some(h) = hw.held.get_mut(slot) {
                *h = None;
            }
            g.head = head.wrapping_add(1);
            if lost {
                if let Some(more) = g.lost_log.admit() {
                    pr_warn!(
                        "acq{}-out: completion {} was passed by the card but never written: skipped{}\n",
                        self.index,
                        head,
                        more
                    );
                }
            }
            // A completion that cannot be true is an error too: another slot's id, or a
            // length other than the block the card was given (it reads whole blocks).
            let Some(c) = c.filter(|c| {
                !c.is_error() && usize::from(c.id) == slot && c.length == g.cfg.block_size
            }) else {
                g.stats.errors += 1;
                g.err = g.err.saturating_add(1);
                continue;
            };
            g.stats.blocks += 1;
            if c.flags & regs::pb_comp::F_UNDERRUN != 0 {
                g.stats.underruns += 1;
                g.stats.underrun_bytes = g.stats.underrun_bytes.saturating_add(c.lost_bytes);
                g.xrun = g.xrun.saturating_add(1);
            }
            if c.flags & regs::pb_comp::F_MISMATCH != 0 {
                g.stats.mismatch_blocks += 1;
            }
        }
    }

    /// Gives the descriptors written since the last call to the card (section 8).
    pub(super) fn pb_publish(&self, g: &mut MutexGuard<'_, PbInner>) {
        if g.published == g.prod || !g.running {
            return;
        }
        let Some(hw) = g.hw.as_ref() else {
            return;
        };
        let ring = posting::publish(&hw.event, posting::PLAYBACK, g.prod);
        g.published = g.prod;
        if ring {
            let _ = self.with_regs(|r| r.wr(regs::reg::PB_DOORBELL, 1));
        }
    }

    /// Posts the next slot with `src`: its bounce page, or writer memory held until the
    /// completion.
    fn pb_post(&self, g: &mut MutexGuard<'_, PbInner>, src: Source) {
        let log2 = g.cfg.ring_log2;
        let block = g.cfg.block_size;
        let slot = regs::ring::slot(g.prod, log2) as usize;
        let Some(hw) = g.hw.as_mut() else {
            return;
        };
        let (addr, held) = match src {
            Source::Pipe(p) => (p.addr, Some(Held::Pipe(p))),
            Source::Import { addr, stream_off } => (addr, Some(Held::Import { stream_off })),
            Source::Bounce => match hw.bounce.get(slot) {
                Some(b) => {
                    b.sync_for_device(block as usize);
                    (b.addr, None)
                }
                None => return,
            },
        };
        if let Some(h) = hw.held.get_mut(slot) {
            *h = held;
        }
        hw.write_desc(slot, addr, block);
        g.prod = g.prod.wrapping_add(1);
        g.fill = 0;
        let n = g.entries();
        if regs::ring::outstanding(g.prod, g.published) >= (n / 4).max(1) {
            self.pb_publish(g);
        }
    }

    /// Notices a halted playback engine from the event area, or with `regs` (a writer
    /// that waited in vain) from PB_STATUS, which also shows a reset nobody asked for
    /// (RUNNING gone without HALTED: the event area is not written then). The writer gets
    /// `EIO`; the next write starts a new session.
    fn pb_check_halt(&self, g: &mut MutexGuard<'_, PbInner>, regs_too: bool) {
        if !g.running {
            return;
        }
        // The event area mirrors PB_STATUS (same bits).
        let mirrored = regs::PbStatus(
            g.hw.as_ref()
                .map_or(0, |hw| hw.event.read32(regs::pb_event::OFF_STATUS)),
        );
        let mut halted = mirrored.halted();
        if regs_too && regs::ring::outstanding(g.prod, g.head) > 0 {
            if let Some(r) = self.with_regs(|r| r.read::<regs::PbStatus>()) {
                if r.is_all_ones() {
                    if self.pb_gone(g) {
                        return;
                    }
                    // Hung: only a function reset brings it back. Capture's watchdog does
                    // it for a card with no capture session too; the next start waits.
                    self.request_flr();
                }
                halted |= r.is_all_ones() || !r.running();
            }
        }
        if halted {
            let code = self
                .with_regs(|r| r.rd(regs::reg::PB_ERROR_CODE))
                .unwrap_or(u32::MAX);
            pr_err!(
                "acq{}: playback halted, PB_ERROR_CODE {:#x}\n",
                self.index,
                code
            );
            self.pb_stop_locked(g);
            g.halted = false;
            g.err = g.err.saturating_add(1);
            g.stats.errors += 1;
        }
    }

    /// For a card that reads all-ones: is it gone for good (config space all-ones too:
    /// unplugged, or what served it died)? Then the channel is removed, and every call
    /// gets ENODEV from now on, as capture's do, instead of an EIO that a writer would
    /// retry for ever.
    fn pb_gone(&self, g: &mut MutexGuard<'_, PbInner>) -> bool {
        // During a function reset (capture's watchdog) the card reads all-ones for a while
        // and its config space may too: that is not gone.
        if self.resetting.load(Relaxed) || self.pdev.present() {
            return false;
        }
        if !g.removed {
            pr_warn!("acq{}: playback: the card is gone\n", self.index);
        }
        self.pb_gone_locked(g);
        true
    }

    /// Every call `ENODEV` from now on; whoever waits on the channel (a drain, a writer,
    /// a poller) is woken.
    fn pb_gone_locked(&self, g: &mut MutexGuard<'_, PbInner>) {
        g.removed = true;
        g.running = false;
        self.pb_sleepers.wake(&self.pb_wait);
    }

    /// The card is gone for the playback channel too (capture found it so: a function
    /// that came back from a reset as another device): every call `ENODEV` from now on.
    /// Takes the playback mutex: call it with no lock held.
    pub(crate) fn pb_mark_gone(&self) {
        self.pb_gone_locked(&mut self.pb.lock());
    }

    /// Waits while a function reset is due or in progress (`Card::reset_pending`),
    /// interruptibly and at most `RESET_WAIT_MS` of sleep (`EAGAIN` at once with
    /// `nonblock`). The watchdog notifies `pb_wait` when the reset is over; the period
    /// re-check covers a notification that came between the check and the sleep.
    fn pb_wait_for_reset(&self, g: &mut MutexGuard<'_, PbInner>, nonblock: bool) -> Result {
        let period = msecs_to_jiffies(PB_RECHECK_MS);
        ring::wait_out_reset(&self.pb_wait, g, nonblock, period, |_| self.reset_pending())
    }

    /// The error the writer is owed, if any (each reported once). With `consume` false it
    /// is reported but stays latched: the caller is a later step of a VFS loop that drops
    /// an errno once bytes moved (`__splice_from_pipe`), so the mark must outlive it.
    fn pb_owed(g: &mut MutexGuard<'_, PbInner>, consume: bool) -> Option<Error> {
        if g.removed {
            return Some(ENODEV);
        }
        if g.err > 0 {
            g.err -= u32::from(consume);
            return Some(EIO);
        }
        if g.xrun > 0 {
            g.xrun -= u32::from(consume);
            return Some(EPIPE);
        }
        None
    }

    /// Waits until the ring has a free slot. Publishes pending descriptors first.
    fn pb_wait_space(&self, g: &mut MutexGuard<'_, PbInner>, nonblock: bool) -> Result {
        loop {
            self.pb_reap(g);
            if g.removed {
                return Err(ENODEV);
            }
            if g.owes() || !g.running {
                // The caller reports it (or restarts the session).
                return Ok(());
            }
            if g.has_space() {
                return Ok(());
            }
            self.pb_publish(g);
            if nonblock {
                return Err(EAGAIN);
            }
            let period = msecs_to_jiffies(PB_RECHECK_MS);
            let news = |g: &mut MutexGuard<'_, PbInner>| {
                self.pb_reap(g);
                if g.removed || !g.running {
                    News::State
                } else if g.owes() || g.has_space() {
                    // An owed EPIPE or EIO comes from a completion the card flagged.
                    News::Completions
                } else {
                    News::Nothing
                }
            };
            match self.pb_sleepers.sleep(&self.pb_wait, g, period, news) {
                CondVarTimeoutResult::Signal { .. } => return Err(ERESTARTSYS),
                CondVarTimeoutResult::Timeout => self.pb_check_halt(g, true),
                _ => {}
            }
        }
    }

    /// Makes sure a session runs and the writer may go on: `Ok(true)` to continue,
    /// `Ok(false)` if an error is owed and `done` bytes were taken already.
    fn pb_ready(
        &self,
        g: &mut MutexGuard<'_, PbInner>,
        done: usize,
        nonblock: bool,
    ) -> Result<bool> {
        if g.removed || g.owes() {
            if done > 0 {
                return Ok(false);
            }
            if let Some(e) = Self::pb_owed(g, true) {
                return Err(e);
            }
        }
        if !g.running {
            let owed = g.err;
            if let Err(e) = self.pb_start_locked(g, nonblock) {
                // With nothing taken the writer gets this errno now: the mark the failed
                // start latched would report it a second time.
                if done == 0 {
                    g.err = owed;
                }
                return Err(e);
            }
        }
        Ok(true)
    }

    /// write()/writev()/io_uring writes (`->write_iter`): copies into the bounce pages
    /// and posts every full block. One call serves the whole iov_iter, so an underrun or
    /// error found after some bytes stays latched for the next call.
    pub(super) fn pb_write(&self, nonblock: bool, src: &mut IovIterSource<'_>) -> Result<usize> {
        let count = src.len().min(isize::MAX as usize & !(PAGE_SIZE - 1));
        if count == 0 {
            return Ok(0);
        }
        // One producer at a time: `pb` is dropped for each copy from user memory
        // (pageref.rs says why), and the bounce slot being filled must stay this call's.
        // (Declared first: it drops after `g`.)
        let _writer: WriterClaim<'_>;
        let mut g = self.pb.lock();
        _writer = self.pb_claim_writer(&mut g, nonblock)?;
        let mut done = 0usize;
        let mut first_block = true;
        let r = loop {
            if done == count {
                break Ok(done);
            }
            if !first_block {
                if let Some(r) = yield_between_blocks(done) {
                    break r;
                }
            }
            first_block = false;
            match self.pb_ready(&mut g, done, nonblock) {
                Ok(true) => {}
                Ok(false) => break Ok(done),
                Err(e) => break if done > 0 { Ok(done) } else { Err(e) },
            }
            if let Err(e) = self.pb_wait_space(&mut g, nonblock) {
                break if done > 0 { Ok(done) } else { Err(e) };
            }
            if g.owes() || !g.running {
                continue;
            }
            let block = g.cfg.block_size as usize;
            let fill = g.fill as usize;
            let n = (block - fill.min(block)).min(count - done);
            let slot = regs::ring::slot(g.prod, g.cfg.ring_log2) as usize;
            let Some(bounce) = g.hw.as_ref().and_then(|hw| hw.bounce.get(slot)) else {
                break Err(ENODEV);
            };
            // The slot is not posted (we hold its index `prod`, and only a writer posts):
            // the page is ours while the lock is dropped.
            let page = PageRef::new(&bounce.page);
            let (starts, prod) = (g.starts, g.prod);
            drop(g);
            let k = page.fill_from(fill, n, src);
            drop(page);
            g = self.pb.lock();
            if g.starts != starts || !g.running || g.prod != prod || g.fill as usize != fill {
                // A STOP, RESET, error or unbind took the session while we copied: those
                // bytes went nowhere. Give them back to the iterator (it advanced by
                // exactly `k` since) and let the next pass start again or report why.
                // SAFETY: `src` advanced by `k` bytes in `fill_from` and not since.
                unsafe { src.revert(k) };
                continue;
            }
            done += k;
            self.pb_copied(&mut g, k, block);
            if k < n {
                // A fault in the user's buffer: what arrived counts.
                break if done > 0 { Ok(done) } else { Err(EFAULT) };
            }
        };
        self.pb_publish(&mut g);
        r
    }

    /// splice_write() actor: takes `len` bytes at `offset` of a pipe buffer's `page`.
    /// Zero-copy if the buffer is one whole block at an 8-byte aligned offset and no
    /// partial block is pending; a copy into the bounce page otherwise.
    ///
    /// # Safety
    ///
    /// `page` must be a valid page, kept by its (confirmed) pipe buffer during the call,
    /// with `offset + len <= PAGE_SIZE`.
    ///
    /// `spliced` is true when this splice_write() already took bytes: the VFS loop then
    /// drops any errno, so an owed error stops the loop but stays latched.
    pub(super) unsafe fn pb_actor(
        &self,
        page: *mut bindings::page,
        offset: usize,
        len: usize,
        nonblock: bool,
        spliced: bool,
    ) -> Result<usize> {
        if offset >= PAGE_SIZE || len > PAGE_SIZE - offset || len == 0 {
            return Err(EINVAL);
        }
        // The bounce slot being filled is write()'s too, which fills it with `pb` dropped.
        // (Declared first: it drops after `g`.)
        let _writer: WriterClaim<'_>;
        let mut g = self.pb.lock();
        _writer = self.pb_claim_writer(&mut g, nonblock)?;
        if spliced {
            if let Some(e) = Self::pb_owed(&mut g, false) {
                return Err(e);
            }
            // One block at a time: a pending signal ends the splice with what it moved
            // (__splice_from_pipe returns the bytes and drops this errno). Rescheduling
            // under the playback mutex is allowed, and keeps owed errors consistent.
            if let Some(r) = yield_between_blocks(0) {
                return r;
            }
        }
        // With bytes taken (`spliced`) an owed error is left latched: this errno is
        // dropped by the VFS loop.
        if !self.pb_ready(&mut g, usize::from(spliced), nonblock)? {
            return Err(EIO);
        }
        self.pb_wait_space(&mut g, nonblock)?;
        if let Some(e) = Self::pb_owed(&mut g, !spliced) {
            return Err(e);
        }
        if !g.running {
            return Err(EIO);
        }
        let block = g.cfg.block_size as usize;
        if g.fill == 0 && len == block && offset % 8 == 0 {
            let pd: &pci::Device = &self.pdev.0;
            let dev: &device::Device = pd.as_ref();
            // SAFETY: the device is bound while the card is not removed (`pb_ready`
            // checked it under the playback lock, which unbind takes before it frees
            // anything); the page is valid (caller).
            let pp = unsafe { PipePage::new(dev, page, offset, len, g.written)? };
            g.written += len as u64;
            g.stats.bytes += len as u64;
            g.stats.zero_copy_bytes += len as u64;
            self.pb_post(&mut g, Source::Pipe(pp));
            return Ok(len);
        }
        let fill = g.fill as usize;
        let n = (block - fill.min(block)).min(len);
        let slot = regs::ring::slot(g.prod, g.cfg.ring_log2) as usize;
        let Some(bounce) = g.hw.as_ref().and_then(|hw| hw.bounce.get(slot)) else {
            return Err(ENODEV);
        };
        // SAFETY: `page` is valid (caller); the local mapping is released below.
        let src = unsafe { bindings::kmap_local_page(page) }.cast::<u8>();
        // SAFETY: `src + offset .. + n` lies in the mapped page (`offset + len <=
        // PAGE_SIZE`, `n <= len`); the bounce slot is ours (not posted).
        let res = unsafe { bounce.write(fill, src.add(offset), n) };
        // SAFETY: `src` came from `kmap_local_page` above and is no longer used.
        unsafe { bindings::kunmap_local(src.cast::<c_void>()) };
        res?;
        self.pb_copied(&mut g, n, block);
        Ok(n)
    }

    /// `n` more bytes were copied into the bounce page of slot `prod` (write() or a
    /// partial pipe page): counted, and the block posted once the page holds `block`.
    fn pb_copied(&self, g: &mut MutexGuard<'_, PbInner>, n: usize, block: usize) {
        g.fill += n as u32;
        g.written += n as u64;
        g.stats.bytes += n as u64;
        g.stats.copied_bytes += n as u64;
        if g.fill as usize == block {
            self.pb_post(g, Source::Bounce);
        }
    }
}
