//! The playback engine (docs/device.md section 19): the host -> card channel. One thread
//! per card, beside the capture engine. Per block it polls the playback event area for the
//! producer index, fetches the descriptor, reads the block from the host buffer, checks it
//! against the session's pattern (verified bytes, mismatching blocks, first bad offset),
//! puts it into the output FIFO, writes the completion (tail dword with PHASE last) and
//! `cons`, and moderates vector-2 interrupts. The output (the "DAC") drains one block per
//! block time at PB_RATE; when it finds the FIFO empty it plays a block of silence and
//! counts an underrun. With loopback, every accepted block is also copied to the capture
//! channel's loopback FIFO.
//!
//! The protocols (doorbell suppression, moderation, re-arm, halts) are the capture
//! channel's, on the playback registers and event area; see engine.rs for the capture side.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::dma::{DmaFault, MemView};
use crate::engine::{Ctl, Engine, SessionConfig, LOOP_POLL};
use crate::faults::{Action, Site};
use crate::pattern::Generator;
use crate::regs::{
    comp, desc, err, irq, pb_comp, pb_event, pb_status, ring, Completion, Descriptor,
};
use crate::shared::Shared;

/// While PB_RATE > 0 the engine wakes at least this often (the output drains on time).
const MAX_SLEEP_RATED: Duration = Duration::from_millis(10);
/// With nothing to wait for, the engine still wakes this often (for newly armed faults).
const MAX_SLEEP_IDLE: Duration = Duration::from_millis(100);
/// At most this many blocks are moved under one hold of the DMA maps (as for capture).
const BATCH_BLOCKS: u32 = 16;

const NS_PER_S: u128 = 1_000_000_000;

/// Starts the playback engine thread of the card whose state is `shared`.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Engine> {
    Engine::spawn_with("acq-playback", move |cfg, ctl| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut s = PbSession::new(Arc::clone(&shared), cfg);
            let ok = s.prologue();
            ctl.started();
            if ok {
                s.run(ctl);
            }
        }));
        if r.is_err() {
            tracing::error!("playback engine panicked; session ended as halted");
            let st = &shared.pb.status;
            st.fetch_and(
                !(pb_status::RUNNING | pb_status::NEED_DOORBELL),
                Ordering::SeqCst,
            );
            st.fetch_or(pb_status::HALTED | pb_status::ERROR, Ordering::SeqCst);
        }
    })
}

/// A fatal playback error: the engine halts with this code and detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Halt {
    code: u8,
    detail: u16,
}

const EVENT_PAGE: Halt = Halt {
    code: err::EVENT_PAGE,
    detail: 0,
};

/// What the engine waits for when it has nothing to do.
#[derive(Clone, Copy, Debug)]
struct Idle {
    until: Option<Instant>,
    doorbell: bool,
}

#[inline]
fn bump(c: &std::sync::atomic::AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

#[inline]
fn bump32(c: &std::sync::atomic::AtomicU32, n: u32) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// One playback session's state.
struct PbSession {
    shared: Arc<Shared>,
    cfg: SessionConfig,
    n: u32,
    /// Completions written (= next descriptor index).
    k: u32,
    /// The id of the last completion written (the `duplicate_id` lie repeats it).
    last_id: u16,
    /// Last producer index read from the event area.
    prod: u32,
    gen: Generator,
    /// Stream offset of the next block received (bytes received so far).
    stream_off: u64,
    /// Blocks in the output FIFO, and its capacity.
    fifo: u64,
    fifo_cap: u64,
    /// The output started (first block received) at this device time; block times drained
    /// since (played or silent).
    dac_t0: Option<u64>,
    drained: u64,
    /// In an underrun episode, and silence played since the previous data completion.
    in_underrun: bool,
    silence: u64,
    /// In a mismatch episode (the previous block mismatched too).
    in_mismatch: bool,
    pending: u32,
    t_first: u64,
    events: u32,
    waiting: bool,
    mirrored: u32,
    t0: Instant,
    stall_until: Option<Instant>,
    /// The block being received, and the pattern it should be.
    data: Vec<u8>,
    expect: Vec<u8>,
}

impl PbSession {
    fn new(shared: Arc<Shared>, cfg: SessionConfig) -> PbSession {
        let b = cfg.block.max(1) as usize;
        PbSession {
            n: ring::entries(cfg.ring_log2),
            k: 0,
            last_id: u16::MAX,
            prod: 0,
            gen: Generator::new(cfg.pattern, cfg.seed),
            stream_off: 0,
            fifo: 0,
            fifo_cap: u64::from(crate::regs::limits::fifo_blocks(
                shared.model.fifo_depth,
                cfg.block,
            ))
            .max(1),
            dac_t0: None,
            drained: 0,
            in_underrun: false,
            silence: 0,
            in_mismatch: false,
            pending: 0,
            t_first: 0,
            events: 0,
            waiting: false,
            mirrored: 0,
            t0: Instant::now(),
            stall_until: None,
            data: vec![0; b],
            expect: vec![0; b],
            shared,
            cfg,
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant_of(&self, ns: u64) -> Instant {
        self.t0 + Duration::from_nanos(ns)
    }

    fn slot(&self, index: u32) -> u32 {
        index & (self.n - 1)
    }

    fn ev_store(&self, v: &MemView, off: usize, val: u32, order: Ordering) -> Result<(), Halt> {
        v.store_u32(self.cfg.event_base + off as u64, val, order)
            .map_err(|_| EVENT_PAGE)
    }

    fn ev_load(&self, v: &MemView, off: usize, order: Ordering) -> Result<u32, Halt> {
        v.load_u32(self.cfg.event_base + off as u64, order)
            .map_err(|_| EVENT_PAGE)
    }

    /// Session start: reset state, write the device half of the event area, set RUNNING.
    fn prologue(&mut self) -> bool {
        let sh = Arc::clone(&self.shared);
        sh.pb.dev_prod.store(0, Ordering::SeqCst);
        sh.pb.dev_cons.store(0, Ordering::SeqCst);
        sh.pb.first_bad.store(u64::MAX, Ordering::SeqCst);
        sh.pb.status.fetch_and(
            !(pb_status::NEED_DOORBELL | pb_status::HALTED),
            Ordering::SeqCst,
        );
        let st = sh.pb.status.load(Ordering::SeqCst) | pb_status::RUNNING;
        let v = sh.dma.view();
        let r = self
            .ev_store(&v, pb_event::OFF_CONS, 0, Ordering::Relaxed)
            .and_then(|_| self.ev_store(&v, pb_event::OFF_NEED_DOORBELL, 0, Ordering::Relaxed))
            .and_then(|_| self.ev_store(&v, pb_event::OFF_STATUS, st, Ordering::Relaxed))
            .and_then(|_| self.ev_store(&v, pb_event::OFF_EVENTS, 0, Ordering::Release));
        drop(v);
        self.t0 = Instant::now();
        if let Err(h) = r {
            self.halt(h);
            return false;
        }
        self.mirrored = st;
        sh.pb.status.fetch_or(pb_status::RUNNING, Ordering::SeqCst);
        sh.stats.pb_sessions.fetch_add(1, Ordering::Relaxed);
        info!(
            ring = self.n,
            block = self.cfg.block,
            rate = self.cfg.rate,
            pattern = self.cfg.pattern,
            "playback session started"
        );
        true
    }

    fn run(&mut self, ctl: &Ctl) {
        loop {
            if ctl.stopping() {
                self.stop_sequence();
                return;
            }
            match self.shared.faults.hook(Site::PbProgress) {
                Action::Hang => {
                    warn!("hang fault: the playback engine stops responding until reset");
                    ctl.wait_for_stop();
                    return;
                }
                Action::Stall(d) => {
                    info!(?d, "playback stall fault");
                    self.stall_until = Some(Instant::now() + d);
                }
                _ => {}
            }
            match self.work(ctl) {
                Ok(None) => {}
                Ok(Some(idle)) => self.sleep(ctl, idle),
                Err(h) => {
                    self.halt(h);
                    return;
                }
            }
        }
    }

    /// One pass under one hold of the DMA maps: drain the output, then receive up to a
    /// batch of blocks. Returns what to wait for if there is nothing to do.
    fn work(&mut self, ctl: &Ctl) -> Result<Option<Idle>, Halt> {
        let sh = Arc::clone(&self.shared);
        let v = sh.dma.view();
        let now = self.now_ns();
        for _ in 0..BATCH_BLOCKS {
            if ctl.stopping() {
                break;
            }
            self.drain(&v, now)?;
            self.check_mod_timer(&v, now)?;
            self.mirror_status(&v);
            if let Some(until) = self.stall_until {
                if Instant::now() < until {
                    return Ok(Some(Idle {
                        until: Some(until),
                        doorbell: false,
                    }));
                }
                self.stall_until = None;
            }
            if self.waiting {
                return self.wait_for_doorbell(&v, ctl);
            }
            if self.cfg.rate > 0 && self.fifo >= self.fifo_cap {
                // Output FIFO full: the next block time makes room.
                return Ok(Some(Idle {
                    until: self.next_drain_ns().map(|t| self.instant_of(t)),
                    doorbell: false,
                }));
            }
            if !self.loop_has_room() {
                return Ok(Some(Idle {
                    until: Some(Instant::now() + LOOP_POLL),
                    doorbell: false,
                }));
            }
            if self.k == self.prod {
                self.read_prod(&v)?;
                if self.prod == self.k {
                    self.enter_waiting(&v, ctl)?;
                    return Ok(None);
                }
            }
            self.receive_block(&v, now)?;
        }
        Ok(None)
    }

    fn sleep(&self, ctl: &Ctl, idle: Idle) {
        let cap = if self.cfg.rate > 0 {
            MAX_SLEEP_RATED
        } else {
            MAX_SLEEP_IDLE
        };
        let mut deadline = Instant::now() + cap;
        if let Some(u) = idle.until {
            deadline = deadline.min(u);
        }
        if let Some(t) = self.mod_deadline_ns() {
            deadline = deadline.min(self.instant_of(t));
        }
        if let Some(t) = self.next_drain_ns() {
            deadline = deadline.min(self.instant_of(t));
        }
        ctl.sleep(deadline, idle.doorbell);
    }

    /// Device time at which block time `i` of the output ends (RATE > 0, output started).
    fn drain_time(&self, t0: u64, i: u64) -> u64 {
        let t = (u128::from(i) + 1) * u128::from(self.cfg.block) * NS_PER_S
            / u128::from(self.cfg.rate.max(1));
        t0.saturating_add(u64::try_from(t).unwrap_or(u64::MAX))
    }

    fn next_drain_ns(&self) -> Option<u64> {
        let t0 = self.dac_t0?;
        (self.cfg.rate > 0).then(|| self.drain_time(t0, self.drained))
    }

    /// The output plays every block time that ended by `now`: a block from the FIFO, or
    /// silence (an underrun) if the FIFO is empty. With RATE = 0 the output takes every
    /// block at once and never underruns.
    fn drain(&mut self, v: &MemView, now: u64) -> Result<(), Halt> {
        if self.cfg.rate == 0 {
            self.fifo = 0;
            return Ok(());
        }
        let Some(t0) = self.dac_t0 else {
            return Ok(());
        };
        let b = u64::from(self.cfg.block);
        while self.drain_time(t0, self.drained) <= now {
            self.drained += 1;
            if self.fifo > 0 {
                self.fifo -= 1;
                self.in_underrun = false;
                continue;
            }
            // Underrun: the host did not supply this block in time.
            self.silence += b;
            bump32(&self.shared.pb.underruns, 1);
            bump(&self.shared.stats.pb_underruns, 1);
            if !self.in_underrun {
                self.in_underrun = true;
                debug!(offset = self.stream_off, "playback underrun");
                bump(&self.shared.stats.pb_underrun_episodes, 1);
                self.shared
                    .pb
                    .status
                    .fetch_or(pb_status::UNDERRUN, Ordering::SeqCst);
                self.raise_event(v)?;
            }
        }
        Ok(())
    }

    /// Loopback: room in the capture channel's loopback FIFO for the next block (always
    /// true without a loopback capture session).
    fn loop_has_room(&self) -> bool {
        let l = self.shared.loop_fifo();
        !l.active || l.has_room(self.cfg.block as usize)
    }

    fn mirror_status(&mut self, v: &MemView) {
        let st = self.shared.pb.status.load(Ordering::SeqCst);
        if st != self.mirrored {
            self.mirrored = st;
            let _ = self.ev_store(v, pb_event::OFF_STATUS, st, Ordering::Release);
        }
    }

    /// Raises cause PB_EVENT (vector 2, not moderated) and counts it in `events`.
    fn raise_event(&mut self, v: &MemView) -> Result<(), Halt> {
        self.events = self.events.wrapping_add(1);
        self.mirror_status(v);
        let r = self.ev_store(v, pb_event::OFF_EVENTS, self.events, Ordering::Release);
        self.shared.raise(irq::PB_EVENT);
        r
    }

    fn mod_deadline_ns(&self) -> Option<u64> {
        let us = self.shared.pb.mod_time_us.load(Ordering::Relaxed);
        (self.pending > 0 && us > 0).then(|| self.t_first.saturating_add(u64::from(us) * 1000))
    }

    fn check_mod_timer(&mut self, v: &MemView, now: u64) -> Result<(), Halt> {
        match self.mod_deadline_ns() {
            Some(t) if now >= t => self.fire(v),
            _ => Ok(()),
        }
    }

    /// The vector-2 completion condition fired: FULL, read `irq_armed`, raise PLAYBACK if
    /// armed; `pending = 0` either way.
    fn fire(&mut self, v: &MemView) -> Result<(), Halt> {
        if self.pending == 0 {
            return Ok(());
        }
        fence(Ordering::SeqCst);
        let armed = self.ev_load(v, pb_event::OFF_IRQ_ARMED, Ordering::SeqCst)?;
        self.pending = 0;
        if armed & pb_event::ARMED != 0 {
            self.shared.raise(irq::PLAYBACK);
        }
        Ok(())
    }

    fn read_prod(&mut self, v: &MemView) -> Result<(), Halt> {
        let prod = self.ev_load(v, pb_event::OFF_PROD, Ordering::Acquire)?;
        self.shared.pb.dev_prod.store(prod, Ordering::Relaxed);
        if ring::outstanding(prod, self.k) > self.n {
            return Err(Halt {
                code: err::PROD_INDEX,
                detail: self.slot(self.k) as u16,
            });
        }
        self.prod = prod;
        Ok(())
    }

    fn set_need_doorbell(&mut self, v: &MemView, on: bool) -> Result<(), Halt> {
        // The `doorbell_lie` fault: the flag stays 0 while the engine sleeps for a
        // PB_DOORBELL all the same.
        let on = on && self.shared.faults.hook(Site::PbNeedDoorbell) != Action::Conceal;
        if on {
            self.shared
                .pb
                .status
                .fetch_or(pb_status::NEED_DOORBELL, Ordering::SeqCst);
        } else {
            self.shared
                .pb
                .status
                .fetch_and(!pb_status::NEED_DOORBELL, Ordering::SeqCst);
        }
        self.ev_store(
            v,
            pb_event::OFF_NEED_DOORBELL,
            u32::from(on),
            Ordering::SeqCst,
        )?;
        self.mirror_status(v);
        Ok(())
    }

    /// No buffer: the device side of the doorbell protocol (section 8), on PB_DOORBELL.
    fn enter_waiting(&mut self, v: &MemView, ctl: &Ctl) -> Result<(), Halt> {
        ctl.clear_doorbell();
        self.set_need_doorbell(v, true)?;
        fence(Ordering::SeqCst);
        self.read_prod(v)?;
        if self.prod != self.k {
            return self.set_need_doorbell(v, false);
        }
        self.fire(v)?;
        self.waiting = true;
        Ok(())
    }

    fn wait_for_doorbell(&mut self, v: &MemView, ctl: &Ctl) -> Result<Option<Idle>, Halt> {
        if !ctl.take_doorbell() {
            return Ok(Some(Idle {
                until: None,
                doorbell: true,
            }));
        }
        self.set_need_doorbell(v, false)?;
        fence(Ordering::SeqCst);
        self.read_prod(v)?;
        self.waiting = false;
        if self.prod == self.k {
            self.enter_waiting(v, ctl)?;
        }
        Ok(None)
    }

    /// Reads the block of descriptor `k`, verifies it and completes it.
    fn receive_block(&mut self, v: &MemView, now: u64) -> Result<(), Halt> {
        let b = self.cfg.block;
        let slot = self.slot(self.k);
        let mut raw = [0u8; desc::SIZE];
        let at = self.cfg.desc_base + u64::from(slot) * desc::SIZE as u64;
        let r = match self.shared.faults.hook(Site::PbDescFetch) {
            Action::Proceed => v.read(at, &mut raw),
            _ => Err(DmaFault),
        };
        r.map_err(|_| Halt {
            code: err::DESC_READ,
            detail: slot as u16,
        })?;
        let d = Descriptor::from_le_bytes(&raw);

        let offset = self.stream_off;
        let error = if d.addr == 0 || !d.addr.is_multiple_of(crate::regs::limits::BUFFER_ALIGN) {
            Some(err::DESC_ADDR)
        } else if d.len < b {
            Some(err::DESC_LEN)
        } else {
            let action = self.shared.faults.hook(Site::PbDataRead);
            if action == Action::Fail || v.read(d.addr, &mut self.data).is_err() {
                Some(err::DMA_READ)
            } else {
                if action == Action::Corrupt {
                    // The card received a damaged byte: its verifier must notice.
                    if let Some(x) = self.data.get_mut(b as usize / 2) {
                        *x ^= 1;
                    }
                }
                None
            }
        };

        let phase = ring::phase(self.k, self.cfg.ring_log2);
        let c = match error {
            None => {
                let bad = self.verify(offset);
                let mut flags = phase;
                if self.silence > 0 {
                    flags |= pb_comp::F_UNDERRUN;
                }
                if bad {
                    flags |= pb_comp::F_MISMATCH;
                }
                Completion {
                    stream_offset: offset,
                    lost_bytes: self.silence,
                    timestamp_ns: now,
                    length: b,
                    id: d.id,
                    flags,
                }
            }
            Some(code) => Completion {
                stream_offset: offset,
                lost_bytes: 0,
                timestamp_ns: now,
                length: 0,
                id: d.id,
                flags: comp::error_flags(phase, code),
            },
        };
        // The `bad_completion` fault: the block was received and checked as it was; only
        // what the completion tells the host lies.
        // (Asked for data completions only, as on the capture channel: an error
        // completion does not use up a lie.)
        let lie = match error {
            None => self.shared.faults.hook(Site::PbCompletionBody),
            Some(_) => Action::Proceed,
        };
        let c = match lie {
            Action::Lie(lie) => {
                debug!(?lie, id = c.id, "playback completion lies");
                lie.apply(c, b, self.last_id, pb_comp::F_UNDERRUN)
            }
            _ => c,
        };
        self.last_id = d.id;
        self.write_completion(v, slot, &c)?;
        if error.is_none() {
            self.accept(c.flags & pb_comp::F_MISMATCH != 0, now);
        } else {
            // The host's block is lost, not late: the stream moves past it, so the blocks
            // after it are still checked at their own offsets (section 19.4).
            self.stream_off += u64::from(b);
            bump(&self.shared.stats.pb_error_completions, 1);
        }
        self.k = self.k.wrapping_add(1);
        // The `cons_lie` fault: an index far outside the ring; the completion is true.
        let cons = match self.shared.faults.hook(Site::PbEventCons) {
            Action::Skew(d) => self.k.wrapping_add(d),
            _ => self.k,
        };
        self.ev_store(v, pb_event::OFF_CONS, cons, Ordering::Release)?;
        self.shared.pb.dev_cons.store(self.k, Ordering::Relaxed);
        if let Some(code) = error {
            debug!(code, slot, "playback error completion");
            self.shared.record_pb_error(code, slot as u16);
            self.raise_event(v)?;
        } else if c.flags & pb_comp::F_MISMATCH != 0 && !self.in_mismatch {
            // First bad block of an episode: one PB_EVENT, like an overflow episode.
            self.in_mismatch = true;
            self.shared
                .pb
                .status
                .fetch_or(pb_status::MISMATCH, Ordering::SeqCst);
            self.raise_event(v)?;
        }
        if error.is_none() && c.flags & pb_comp::F_MISMATCH == 0 {
            self.in_mismatch = false;
        }
        // Interrupt moderation (section 9.2, on vector 2).
        self.pending += 1;
        if self.pending == 1 {
            self.t_first = now;
        }
        let count = irq::effective_count(
            self.shared.pb.mod_count.load(Ordering::Relaxed),
            self.cfg.ring_log2,
        );
        if self.pending >= count {
            self.fire(v)?;
        }
        Ok(())
    }

    /// Checks `data` against the pattern at stream offset `offset`; counts the result.
    /// Returns true on a mismatch.
    fn verify(&mut self, offset: u64) -> bool {
        let pb = &self.shared.pb;
        let b = self.data.len() as u64;
        match self
            .gen
            .compare(offset, &self.data, &mut self.expect)
            .map(|m| m.first)
        {
            None => {
                bump(&pb.verified, b);
                bump(&self.shared.stats.pb_verified_bytes, b);
                false
            }
            Some(i) => {
                bump32(&pb.mismatch, 1);
                bump(&self.shared.stats.pb_mismatch_blocks, 1);
                let at = offset + i as u64;
                if pb.first_bad.load(Ordering::Relaxed) == u64::MAX {
                    info!(offset = at, "playback: first mismatching byte");
                    pb.first_bad.store(at, Ordering::Relaxed);
                }
                true
            }
        }
    }

    /// A data block was received: into the output FIFO (and the loopback path).
    fn accept(&mut self, _mismatch: bool, now: u64) {
        let b = u64::from(self.cfg.block);
        self.stream_off += b;
        self.silence = 0;
        if self.cfg.rate > 0 {
            self.fifo += 1;
            if self.dac_t0.is_none() {
                // The output starts with the first block (no underrun before it).
                self.dac_t0 = Some(now);
            }
        }
        let pb = &self.shared.pb;
        bump32(&pb.blocks, 1);
        bump(&pb.bytes, b);
        bump(&self.shared.stats.pb_blocks, 1);
        bump(&self.shared.stats.pb_bytes, b);
        let mut l = self.shared.loop_fifo();
        if l.active {
            l.data.extend(self.data.iter());
            drop(l);
            bump(&self.shared.stats.loopback_bytes, b);
        }
    }

    fn write_completion(&self, v: &MemView, slot: u32, c: &Completion) -> Result<(), Halt> {
        let fail = Halt {
            code: err::COMP_WRITE,
            detail: slot as u16,
        };
        if self.shared.faults.hook(Site::PbCompletionWrite) != Action::Proceed {
            return Err(fail);
        }
        let at = self.cfg.comp_base + u64::from(slot) * comp::SIZE as u64;
        let bytes = c.to_le_bytes();
        v.write(at, &bytes[..comp::OFF_TAIL_DWORD])
            .map_err(|_| fail)?;
        fence(Ordering::Release);
        v.store_u32(
            at + comp::OFF_TAIL_DWORD as u64,
            c.tail_dword(),
            Ordering::Release,
        )
        .map_err(|_| fail)
    }

    /// PB_CTRL.ENABLE 1->0: flush a pending interrupt, discard the output FIFO, clear
    /// RUNNING last.
    fn stop_sequence(&mut self) {
        let sh = Arc::clone(&self.shared);
        let v = sh.dma.view();
        let _ = self.fire(&v);
        let st = sh.pb.status.load(Ordering::SeqCst)
            & !(pb_status::NEED_DOORBELL | pb_status::HALTED | pb_status::RUNNING);
        let _ = self.ev_store(&v, pb_event::OFF_NEED_DOORBELL, 0, Ordering::Relaxed);
        let _ = self.ev_store(&v, pb_event::OFF_STATUS, st, Ordering::Release);
        drop(v);
        sh.pb.status.fetch_and(
            !(pb_status::NEED_DOORBELL | pb_status::HALTED),
            Ordering::SeqCst,
        );
        sh.pb
            .status
            .fetch_and(!pb_status::RUNNING, Ordering::SeqCst);
        info!(
            completions = self.k,
            bytes = self.stream_off,
            "playback session stopped"
        );
    }

    /// Fatal error: no further DMA, PB_STATUS = HALTED | ERROR, cause PB_EVENT.
    fn halt(&mut self, h: Halt) {
        let sh = Arc::clone(&self.shared);
        let v = sh.dma.view();
        if h.code != err::EVENT_PAGE {
            let _ = self.fire(&v);
        }
        warn!(code = h.code, detail = h.detail, "playback engine halted");
        sh.record_pb_error(h.code, h.detail);
        sh.stats.pb_halts.fetch_add(1, Ordering::Relaxed);
        self.events = self.events.wrapping_add(1);
        let st = (sh.pb.status.load(Ordering::SeqCst)
            & !(pb_status::RUNNING | pb_status::NEED_DOORBELL))
            | pb_status::HALTED
            | pb_status::ERROR;
        if h.code != err::EVENT_PAGE {
            let _ = self.ev_store(&v, pb_event::OFF_EVENTS, self.events, Ordering::Relaxed);
            let _ = self.ev_store(&v, pb_event::OFF_NEED_DOORBELL, 0, Ordering::Relaxed);
            let _ = self.ev_store(&v, pb_event::OFF_STATUS, st, Ordering::Release);
        }
        drop(v);
        sh.pb
            .status
            .fetch_or(pb_status::HALTED | pb_status::ERROR, Ordering::SeqCst);
        sh.pb.status.fetch_and(
            !(pb_status::RUNNING | pb_status::NEED_DOORBELL),
            Ordering::SeqCst,
        );
        sh.raise(irq::PB_EVENT);
    }
}
