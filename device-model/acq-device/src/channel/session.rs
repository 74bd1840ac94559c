//! One session of a channel: the ring protocol's state ([`Core`]) beside the channel's data
//! side (a [`Direction`]), and the protocol's steps in the order docs/device.md gives them.

use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{bump, Ctl, Direction, Halt, Idle, Regs, SessionConfig};
use crate::dma::{DmaFault, MemView};
use crate::faults::Action;
use crate::regs::{self, bar2, comp, desc, err, event, irq, ring, status, Completion, Descriptor};
use crate::shared::Shared;

/// While RATE > 0, the engine wakes at least this often (keeps the counters current and
/// the output draining on time while it waits).
const MAX_SLEEP_RATED: Duration = Duration::from_millis(10);
/// With nothing to wait for, the engine still wakes this often (for newly armed faults).
const MAX_SLEEP_IDLE: Duration = Duration::from_millis(100);
/// At most this many blocks, or this many bytes, are moved under one hold of the DMA maps.
const BATCH_BLOCKS: u32 = 16;
const BATCH_BYTES: u64 = 256 << 10;

const EVENT_PAGE: Halt = Halt {
    code: err::EVENT_PAGE,
    detail: 0,
};

/// Runs one session of channel `D` on the engine thread: the prologue, then the loop until
/// a stop, a halt or a hang. `ctl.started()` is called once the session runs or failed
/// to start.
pub(super) fn run<D: Direction>(shared: Arc<Shared>, cfg: SessionConfig, ctl: &Ctl) {
    let dir = D::new(&shared, &cfg);
    let mut s = Session {
        core: Core::new(shared, cfg),
        dir,
    };
    let ok = s.prologue();
    ctl.started();
    if ok {
        s.run(ctl);
    }
}

/// The memory a session works in: the DMA maps (held for one batch) or BAR2.
enum View<'a> {
    Dma(std::sync::RwLockReadGuard<'a, MemView>),
    Bar2(&'a MemView),
}

impl std::ops::Deref for View<'_> {
    type Target = MemView;
    fn deref(&self) -> &MemView {
        match self {
            View::Dma(g) => g,
            View::Bar2(v) => v,
        }
    }
}

fn view(shared: &Shared, bar2_mode: bool) -> View<'_> {
    if bar2_mode {
        View::Bar2(&shared.bar2_view)
    } else {
        View::Dma(shared.dma.view())
    }
}

/// The ring protocol's state of one session of channel `D`.
pub(crate) struct Core<D> {
    pub shared: Arc<Shared>,
    pub cfg: SessionConfig,
    /// Ring entries.
    pub n: u32,
    /// Where the descriptor ring, the completion ring and the event area are (bus
    /// addresses, or BAR2 offsets in BAR2 mode).
    pub desc_base: u64,
    comp_base: u64,
    pub event_base: u64,
    /// BAR2 mode: where the data area starts in BAR2.
    data_base: u64,
    /// Completions written (= next descriptor index).
    pub k: u32,
    /// Last producer index read from the event area.
    prod: u32,
    /// The id of the last completion written (the `duplicate_id` lie repeats it);
    /// 0xFFFF before the session's first.
    last_id: u16,
    /// Completions since the last moderation decision fired.
    pending: u32,
    /// Device time of the first of them.
    t_first: u64,
    /// Causes raised in this session (the event area's `events`).
    events: u32,
    /// Sleeping until DOORBELL.
    waiting: bool,
    /// STATUS value last written to the event area.
    mirrored: u32,
    /// Device time 0.
    t0: Instant,
    /// The `stall` fault: no progress until then.
    stall_until: Option<Instant>,
    channel: PhantomData<fn() -> D>,
}

struct Session<D: Direction> {
    core: Core<D>,
    dir: D,
}

impl<D: Direction> Core<D> {
    fn new(shared: Arc<Shared>, cfg: SessionConfig) -> Core<D> {
        let (desc_base, comp_base, event_base, data_base) = if cfg.bar2_mode {
            (
                0,
                bar2::COMP_OFFSET,
                bar2::EVENT_OFFSET,
                bar2::data_offset(cfg.ring_log2),
            )
        } else {
            (cfg.desc_base, cfg.comp_base, cfg.event_base, 0)
        };
        Core {
            n: ring::entries(cfg.ring_log2),
            desc_base,
            comp_base,
            event_base,
            data_base,
            k: 0,
            prod: 0,
            last_id: u16::MAX,
            pending: 0,
            t_first: 0,
            events: 0,
            waiting: false,
            mirrored: 0,
            t0: Instant::now(),
            stall_until: None,
            channel: PhantomData,
            shared,
            cfg,
        }
    }

    /// The channel's registers.
    pub fn regs(&self) -> Regs<'_> {
        D::regs(&self.shared)
    }

    /// Device time: nanoseconds since the session started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant of device time `ns`.
    pub fn instant_of(&self, ns: u64) -> Instant {
        self.t0 + Duration::from_nanos(ns)
    }

    fn slot(&self, index: u32) -> u32 {
        index & (self.n - 1)
    }

    fn event_store(&self, v: &MemView, off: usize, val: u32, order: Ordering) -> Result<(), Halt> {
        v.store_u32(self.event_base + off as u64, val, order)
            .map_err(|_| EVENT_PAGE)
    }

    fn event_load(&self, v: &MemView, off: usize, order: Ordering) -> Result<u32, Halt> {
        v.load_u32(self.event_base + off as u64, order)
            .map_err(|_| EVENT_PAGE)
    }

    /// Writes STATUS to the event area if it changed (best effort).
    fn mirror_status(&mut self, v: &MemView) {
        let st = self.regs().status.load(Ordering::SeqCst);
        if st != self.mirrored {
            self.mirrored = st;
            let _ = self.event_store(v, event::OFF_STATUS, st, Ordering::Release);
        }
    }

    /// Raises a cause (an error or data event, not moderated) and counts it in the event
    /// area's `events`.
    pub fn raise_event(&mut self, v: &MemView, cause: u32) -> Result<(), Halt> {
        self.events = self.events.wrapping_add(1);
        self.mirror_status(v);
        let r = self.event_store(v, event::OFF_EVENTS, self.events, Ordering::Release);
        self.shared.raise(cause);
        r
    }

    fn mod_deadline_ns(&self) -> Option<u64> {
        let us = self.regs().mod_time_us.load(Ordering::Relaxed);
        (self.pending > 0 && us > 0).then(|| self.t_first.saturating_add(u64::from(us) * 1000))
    }

    fn check_mod_timer(&mut self, v: &MemView, now: u64) -> Result<(), Halt> {
        match self.mod_deadline_ns() {
            Some(t) if now >= t => self.fire(v),
            _ => Ok(()),
        }
    }

    /// The completion interrupt's condition fired (section 9.2): FULL, read `irq_armed`,
    /// raise the completion cause if armed; `pending = 0` either way.
    fn fire(&mut self, v: &MemView) -> Result<(), Halt> {
        if self.pending == 0 {
            return Ok(());
        }
        fence(Ordering::SeqCst);
        let armed = self.event_load(v, event::OFF_IRQ_ARMED, Ordering::SeqCst)?;
        self.pending = 0;
        if armed & D::ARMED != 0 {
            self.shared.raise(D::CAUSE_COMPLETION);
        }
        Ok(())
    }

    /// One more completion for moderation (section 9.2): fire at the count.
    fn moderate(&mut self, v: &MemView, now: u64) -> Result<(), Halt> {
        self.pending += 1;
        if self.pending == 1 {
            self.t_first = now;
        }
        let count = irq::effective_count(
            self.regs().mod_count.load(Ordering::Relaxed),
            self.cfg.ring_log2,
        );
        if self.pending >= count {
            self.fire(v)?;
        }
        Ok(())
    }

    /// Reads `prod` from the event area (ACQUIRE) and checks it against the ring size.
    fn read_prod(&mut self, v: &MemView) -> Result<(), Halt> {
        let prod = self.event_load(v, event::OFF_PROD, Ordering::Acquire)?;
        self.regs().dev_prod.store(prod, Ordering::Relaxed);
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
        let st = self.regs().status;
        if on {
            st.fetch_or(status::NEED_DOORBELL, Ordering::SeqCst);
        } else {
            st.fetch_and(!status::NEED_DOORBELL, Ordering::SeqCst);
        }
        self.event_store(v, event::OFF_NEED_DOORBELL, u32::from(on), Ordering::SeqCst)?;
        self.mirror_status(v);
        Ok(())
    }

    /// No buffer: the device side of the doorbell protocol (section 8).
    fn enter_waiting(&mut self, v: &MemView, ctl: &Ctl) -> Result<(), Halt> {
        // A DOORBELL written before this point is not the wake-up (it had no effect).
        ctl.clear_doorbell();
        // The `doorbell_lie` fault: the flag stays 0 while the engine sleeps for a
        // DOORBELL all the same.
        let publish = self.shared.faults.hook(D::SITES.need_doorbell) != Action::Conceal;
        self.set_need_doorbell(v, publish)?;
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
            // Still nothing: repeat the protocol.
            self.enter_waiting(v, ctl)?;
        }
        Ok(None)
    }

    /// The host buffer of ring slot `slot`: its descriptor's address, length and id (in
    /// BAR2 mode the slot's place in the data area, id = slot).
    fn buffer(&self, v: &MemView, slot: u32) -> Result<(u64, u32, u16), Halt> {
        if self.cfg.bar2_mode {
            let b = u64::from(self.cfg.block);
            return Ok((
                self.data_base + u64::from(slot) * b,
                self.cfg.block,
                slot as u16,
            ));
        }
        let mut raw = [0u8; desc::SIZE];
        let at = self.desc_base + u64::from(slot) * desc::SIZE as u64;
        let r = match self.shared.faults.hook(D::SITES.desc_fetch) {
            Action::Proceed => v.read(at, &mut raw),
            _ => Err(DmaFault),
        };
        r.map_err(|_| Halt {
            code: err::DESC_READ,
            detail: slot as u16,
        })?;
        let d = Descriptor::from_le_bytes(&raw);
        Ok((d.addr, d.len, d.id))
    }

    /// The `bad_completion` fault: good completion `c` as the fault says the card reports
    /// it (the block itself moved correctly).
    fn maybe_lie(&self, c: Completion) -> Completion {
        let Action::Lie(lie) = self.shared.faults.hook(D::SITES.completion_body) else {
            return c;
        };
        debug!(channel = D::NAME, ?lie, id = c.id, "completion lies");
        crate::faults::apply_lie(lie, c, self.cfg.block, self.last_id, D::LIE_GAP_FLAG)
    }

    /// Writes completion `c` into ring slot `slot`: body, RELEASE, tail dword.
    fn write_completion(&self, v: &MemView, slot: u32, c: &Completion) -> Result<(), Halt> {
        let fail = Halt {
            code: err::COMP_WRITE,
            detail: slot as u16,
        };
        if self.shared.faults.hook(D::SITES.completion_write) != Action::Proceed {
            return Err(fail);
        }
        let at = self.comp_base + u64::from(slot) * comp::SIZE as u64;
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

    /// Publishes `cons` = `k` (RELEASE), through the `cons_lie` fault: an index far outside
    /// the ring while the completion is true.
    fn publish_cons(&self, v: &MemView) -> Result<(), Halt> {
        let cons = match self.shared.faults.hook(D::SITES.event_cons) {
            Action::Skew(d) => self.k.wrapping_add(d),
            _ => self.k,
        };
        self.event_store(v, event::OFF_CONS, cons, Ordering::Release)?;
        self.regs().dev_cons.store(self.k, Ordering::Relaxed);
        if self.cfg.bar2_mode {
            let next = self.data_base + u64::from(self.slot(self.k)) * u64::from(self.cfg.block);
            self.shared
                .bar2_wr_ptr
                .store(next as u32, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl<D: Direction> Session<D> {
    /// Session start (section 7.1, steps 3-4): reset state, write the device half of the
    /// event area, set RUNNING. Returns false if the engine halted instead.
    fn prologue(&mut self) -> bool {
        let sh = Arc::clone(&self.core.shared);
        let regs = D::regs(&sh);
        regs.dev_prod.store(0, Ordering::SeqCst);
        regs.dev_cons.store(0, Ordering::SeqCst);
        if self.core.cfg.bar2_mode {
            let data = self.core.data_base as u32;
            sh.bar2_data_off.store(data, Ordering::SeqCst);
            sh.bar2_wr_ptr.store(data, Ordering::SeqCst);
        }
        self.dir.begin(&self.core);
        regs.status
            .fetch_and(!(status::NEED_DOORBELL | status::HALTED), Ordering::SeqCst);
        let st = regs.status.load(Ordering::SeqCst) | status::RUNNING;
        let v = view(&sh, self.core.cfg.bar2_mode);
        let c = &self.core;
        let r = c
            .event_store(&v, event::OFF_CONS, 0, Ordering::Relaxed)
            .and_then(|_| c.event_store(&v, event::OFF_NEED_DOORBELL, 0, Ordering::Relaxed))
            .and_then(|_| c.event_store(&v, event::OFF_STATUS, st, Ordering::Relaxed))
            .and_then(|_| c.event_store(&v, event::OFF_EVENTS, 0, Ordering::Release));
        drop(v);
        self.core.t0 = Instant::now();
        if let Err(h) = r {
            self.halt(h);
            return false;
        }
        self.dir.started(&self.core);
        self.core.mirrored = st;
        regs.status.fetch_or(status::RUNNING, Ordering::SeqCst);
        regs.sessions.fetch_add(1, Ordering::Relaxed);
        let cfg = &self.core.cfg;
        info!(
            channel = D::NAME,
            mode = if cfg.bar2_mode { "bar2" } else { "dma" },
            loopback = cfg.loopback,
            ring = self.core.n,
            block = cfg.block,
            rate = cfg.rate,
            pattern = cfg.pattern,
            "session started"
        );
        true
    }

    fn run(&mut self, ctl: &Ctl) {
        loop {
            if ctl.stopping() {
                self.stop_sequence();
                return;
            }
            match self.core.shared.faults.hook(D::SITES.progress) {
                Action::Hang => {
                    warn!(
                        channel = D::NAME,
                        "hang fault: the engine stops responding until reset"
                    );
                    self.dir.end(&self.core);
                    ctl.wait_for_stop();
                    return;
                }
                Action::Stall(d) => {
                    info!(channel = D::NAME, ?d, "stall fault");
                    self.core.stall_until = Some(Instant::now() + d);
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

    /// Runs the engine under one hold of the memory view, for up to a batch of blocks.
    /// Returns what to wait for if there is nothing to do.
    fn work(&mut self, ctl: &Ctl) -> Result<Option<Idle>, Halt> {
        let sh = Arc::clone(&self.core.shared);
        let v = view(&sh, self.core.cfg.bar2_mode);
        let mut bytes = 0u64;
        // One clock read per batch: reading it costs as much as generating 1 KiB.
        let now = self.core.now_ns();
        for _ in 0..BATCH_BLOCKS {
            if bytes >= BATCH_BYTES || ctl.stopping() {
                break;
            }
            self.dir.tick(&mut self.core, &v, now)?;
            self.core.check_mod_timer(&v, now)?;
            self.core.mirror_status(&v);
            if let Some(until) = self.core.stall_until {
                if Instant::now() < until {
                    return Ok(Some(Idle::until(Some(until))));
                }
                self.core.stall_until = None;
            }
            if self.core.waiting {
                return self.core.wait_for_doorbell(&v, ctl);
            }
            if let Some(idle) = self.dir.ready(&self.core) {
                return Ok(Some(idle));
            }
            if self.core.k == self.core.prod {
                self.core.read_prod(&v)?;
                if self.core.prod == self.core.k {
                    self.core.enter_waiting(&v, ctl)?;
                    return Ok(None);
                }
            }
            self.step(&v, now)?;
            bytes += u64::from(self.core.cfg.block);
        }
        Ok(None)
    }

    /// Sleeps (holding no lock) until `idle` says, the moderation timer, the channel's
    /// deadline, or a stop request, at most `MAX_SLEEP_*`.
    fn sleep(&self, ctl: &Ctl, idle: Idle) {
        let c = &self.core;
        let cap = if c.cfg.rate > 0 {
            MAX_SLEEP_RATED
        } else {
            MAX_SLEEP_IDLE
        };
        let mut deadline = Instant::now() + cap;
        if let Some(u) = idle.until {
            deadline = deadline.min(u);
        }
        if let Some(t) = c.mod_deadline_ns() {
            deadline = deadline.min(c.instant_of(t));
        }
        if let Some(t) = self.dir.deadline_ns(c) {
            deadline = deadline.min(c.instant_of(t));
        }
        ctl.sleep(deadline, idle.doorbell);
    }

    /// Moves the block of descriptor `k` and completes it; `now` is the device time of
    /// this engine pass.
    fn step(&mut self, v: &MemView, now: u64) -> Result<(), Halt> {
        let Some(at) = self.dir.next_block(&self.core, now) else {
            return Ok(());
        };
        let b = self.core.cfg.block;
        let slot = self.core.slot(self.core.k);
        let (addr, len, id) = self.core.buffer(v, slot)?;
        let error = if !self.core.cfg.bar2_mode
            && (addr == 0 || !addr.is_multiple_of(regs::limits::BUFFER_ALIGN))
        {
            Some(err::DESC_ADDR)
        } else if len < b {
            Some(err::DESC_LEN)
        } else {
            self.dir.transfer(&self.core, v, addr, at).err()
        };

        let phase = ring::phase(self.core.k, self.core.cfg.ring_log2);
        let c = match error {
            None => {
                let c = self.dir.completion(&self.core, at, phase, id);
                // Asked for good completions only: an error completion does not use up
                // a lie.
                self.core.maybe_lie(c)
            }
            Some(code) => Completion {
                stream_offset: at.offset,
                lost_bytes: 0,
                timestamp_ns: now,
                length: 0,
                id,
                flags: comp::error_flags(phase, code),
            },
        };
        self.core.last_id = id;
        self.core.write_completion(v, slot, &c)?;
        let regs = self.core.regs();
        if error.is_none() {
            self.dir.completed(&self.core, at, &c, now);
        } else {
            bump(regs.error_completions, 1);
            self.dir.failed(&self.core);
        }
        self.core.k = self.core.k.wrapping_add(1);
        self.core.publish_cons(v)?;
        match error {
            Some(code) => {
                debug!(channel = D::NAME, code, slot, "error completion");
                D::record_error(&self.core.shared, code, slot as u16);
                self.core.raise_event(v, D::CAUSE_ERROR)?;
            }
            None => self.dir.after_completion(&mut self.core, v, &c)?,
        }
        self.core.moderate(v, now)
    }

    /// ENABLE 1->0 (section 7.5): flush a pending interrupt, clear RUNNING last.
    fn stop_sequence(&mut self) {
        let sh = Arc::clone(&self.core.shared);
        let regs = D::regs(&sh);
        let v = view(&sh, self.core.cfg.bar2_mode);
        let _ = self.core.fire(&v);
        let st = regs.status.load(Ordering::SeqCst)
            & !(status::NEED_DOORBELL | status::HALTED | status::RUNNING);
        let _ = self
            .core
            .event_store(&v, event::OFF_NEED_DOORBELL, 0, Ordering::Relaxed);
        let _ = self
            .core
            .event_store(&v, event::OFF_STATUS, st, Ordering::Release);
        drop(v);
        regs.status
            .fetch_and(!(status::NEED_DOORBELL | status::HALTED), Ordering::SeqCst);
        self.dir.end(&self.core);
        regs.status.fetch_and(!status::RUNNING, Ordering::SeqCst);
        info!(
            channel = D::NAME,
            completions = self.core.k,
            "session stopped"
        );
    }

    /// Fatal error (section 11): no further DMA, STATUS = HALTED | ERROR, the halt causes.
    fn halt(&mut self, h: Halt) {
        let sh = Arc::clone(&self.core.shared);
        let regs = D::regs(&sh);
        let v = view(&sh, self.core.cfg.bar2_mode);
        if h.code != err::EVENT_PAGE {
            let _ = self.core.fire(&v);
        }
        warn!(
            channel = D::NAME,
            code = h.code,
            detail = h.detail,
            "engine halted"
        );
        self.dir.end(&self.core);
        D::record_error(&sh, h.code, h.detail);
        regs.halts.fetch_add(1, Ordering::Relaxed);
        let c = &mut self.core;
        c.events = c.events.wrapping_add(D::CAUSES_HALT.len() as u32);
        let st = (regs.status.load(Ordering::SeqCst) & !(status::RUNNING | status::NEED_DOORBELL))
            | status::HALTED
            | status::ERROR;
        if h.code != err::EVENT_PAGE {
            let _ = c.event_store(&v, event::OFF_EVENTS, c.events, Ordering::Relaxed);
            let _ = c.event_store(&v, event::OFF_NEED_DOORBELL, 0, Ordering::Relaxed);
            let _ = c.event_store(&v, event::OFF_STATUS, st, Ordering::Release);
        }
        drop(v);
        regs.status
            .fetch_or(status::HALTED | status::ERROR, Ordering::SeqCst);
        regs.status
            .fetch_and(!(status::RUNNING | status::NEED_DOORBELL), Ordering::SeqCst);
        for &cause in D::CAUSES_HALT {
            sh.raise(cause);
        }
    }
}
