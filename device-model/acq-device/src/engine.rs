//! The capture engine (docs/device.md sections 7-9): one thread per card that runs
//! sessions. Per block it polls the event page for the producer index (only when it has
//! used up the buffers it knows of), fetches the descriptor, generates the block straight
//! into the host buffer, writes the completion (tail dword with PHASE last) and `cons`, and
//! moderates vector-0 interrupts. With no buffer it runs the doorbell protocol and sleeps.
//!
//! The engine knows nothing about sockets: it reaches host memory through [`DmaSpace`]
//! views (or BAR2), interrupts through [`Shared::raise`], and every failure site through
//! the fault plan.
//!
//! [`DmaSpace`]: crate::dma::DmaSpace

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::dma::{DmaFault, MemView};
use crate::faults::{Action, Site, StrayTarget};
use crate::pattern::Generator;
use crate::regs::{self, bar2, comp, desc, err, event, irq, ring, status, Completion, Descriptor};
use crate::shared::Shared;
use crate::source::Source;

/// A session's configuration, latched and validated at ENABLE 0->1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// BAR2 streaming mode (CTRL.MODE_BAR2).
    pub bar2_mode: bool,
    /// Descriptor ring bus address (DMA mode).
    pub desc_base: u64,
    /// Completion ring bus address (DMA mode).
    pub comp_base: u64,
    /// Event page bus address (DMA mode).
    pub event_base: u64,
    /// log2 of the ring size.
    pub ring_log2: u32,
    /// BLOCK_SIZE.
    pub block: u32,
    /// RATE in bytes/s (0 = unlimited).
    pub rate: u64,
    /// PATTERN register value.
    pub pattern: u32,
    /// SEED.
    pub seed: u64,
    /// LOOPBACK.ENABLE at enable (v1.1): blocks come from the playback channel.
    pub loopback: bool,
}

/// A fatal error: the engine halts with this code and detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Halt {
    code: u8,
    detail: u16,
}

/// While RATE > 0, the engine wakes at least this often (keeps CNT_BYTES and CNT_LOST
/// current while it waits).
const MAX_SLEEP_RATED: Duration = Duration::from_millis(10);
/// With nothing to wait for, the engine still wakes this often (for newly armed faults).
const MAX_SLEEP_IDLE: Duration = Duration::from_millis(100);
/// A loopback session waiting for looped data polls this often (the playback engine does
/// not signal the capture engine: one more wake-up path is not worth it at this rate).
pub(crate) const LOOP_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
pub(crate) struct CtlState {
    start: Option<SessionConfig>,
    started: bool,
    busy: bool,
    stop: bool,
    doorbell: bool,
    exit: bool,
}

/// Start/stop/doorbell hand-over between the register file and an engine thread (shared
/// by the capture and the playback engine).
#[derive(Debug, Default)]
pub(crate) struct Ctl {
    state: Mutex<CtlState>,
    cv: Condvar,
    /// Mirror of `state.stop`, polled once per block without the lock.
    stop: AtomicBool,
}

impl Ctl {
    pub(crate) fn lock(&self) -> MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait<'a>(&self, g: MutexGuard<'a, CtlState>) -> MutexGuard<'a, CtlState> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// True once a stop was requested (polled without the lock).
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Takes a latched DOORBELL (true if one was written since the last take).
    pub(crate) fn take_doorbell(&self) -> bool {
        std::mem::take(&mut self.lock().doorbell)
    }

    /// Forgets a latched DOORBELL.
    pub(crate) fn clear_doorbell(&self) {
        self.lock().doorbell = false;
    }

    /// Waits until a stop is requested (a hung engine).
    pub(crate) fn wait_for_stop(&self) {
        let mut g = self.lock();
        while !g.stop {
            g = self.wait(g);
        }
    }

    /// Sleeps until `deadline`, a stop request, or (if `doorbell`) a latched DOORBELL.
    pub(crate) fn sleep(&self, deadline: Instant, doorbell: bool) {
        let mut g = self.lock();
        loop {
            if g.stop || (doorbell && g.doorbell) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Handle of a card's engine thread.
#[derive(Debug)]
pub struct Engine {
    ctl: Arc<Ctl>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the engine thread of the card whose state is `shared`.
    pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Engine> {
        Engine::spawn_with("acq-engine", move |cfg, ctl| {
            // A bug in a session must not take the card down with it: it ends the session
            // as a halt.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut s = Session::new(Arc::clone(&shared), cfg);
                let ok = s.prologue();
                ctl.started();
                if ok {
                    s.run(ctl);
                }
            }));
            if r.is_err() {
                tracing::error!("capture engine panicked; session ended as halted");
                shared.loop_fifo().active = false;
                shared
                    .status
                    .fetch_and(!(status::RUNNING | status::NEED_DOORBELL), Ordering::SeqCst);
                shared
                    .status
                    .fetch_or(status::HALTED | status::ERROR, Ordering::SeqCst);
            }
        })
    }

    /// Starts an engine thread named `name` that runs `session(cfg, ctl)` for every
    /// session; `session` calls `ctl.started()` once the session is running (or failed to
    /// start). A panic in a session ends it (the register file must not wait forever).
    pub(crate) fn spawn_with<F>(name: &str, session: F) -> std::io::Result<Engine>
    where
        F: Fn(SessionConfig, &Ctl) + Send + 'static,
    {
        let ctl = Arc::new(Ctl::default());
        let c = Arc::clone(&ctl);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || engine_main(&c, &session))?;
        Ok(Engine {
            ctl,
            thread: Some(thread),
        })
    }

    /// Starts a session; returns once STATUS.RUNNING is set (or the engine halted at once,
    /// on an event page it cannot write).
    pub fn start(&self, cfg: SessionConfig) {
        let mut g = self.ctl.lock();
        g.start = Some(cfg);
        g.started = false;
        self.ctl.cv.notify_all();
        while !g.started && !g.exit {
            g = self.ctl.wait(g);
        }
    }

    /// Stops the session, if any; returns once the engine does no more DMA
    /// (STATUS.RUNNING reads 0).
    pub fn stop(&self) {
        let mut g = self.ctl.lock();
        if !g.busy {
            return;
        }
        g.stop = true;
        self.ctl.stop.store(true, Ordering::SeqCst);
        self.ctl.cv.notify_all();
        while g.busy {
            g = self.ctl.wait(g);
        }
    }

    /// A DOORBELL write: wakes the engine if it waits for one.
    pub fn doorbell(&self) {
        let mut g = self.ctl.lock();
        g.doorbell = true;
        self.ctl.cv.notify_all();
    }

    /// True while a session is active (the engine may do DMA).
    pub fn busy(&self) -> bool {
        self.ctl.lock().busy
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
        {
            let mut g = self.ctl.lock();
            g.exit = true;
            self.ctl.cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Ctl {
    /// The session is running (or failed to start): `Engine::start` may return.
    pub(crate) fn started(&self) {
        let mut g = self.lock();
        g.started = true;
        self.cv.notify_all();
    }
}

fn engine_main(ctl: &Ctl, session: &dyn Fn(SessionConfig, &Ctl)) {
    loop {
        let cfg = {
            let mut g = ctl.lock();
            loop {
                if g.exit {
                    return;
                }
                if let Some(cfg) = g.start.take() {
                    g.busy = true;
                    g.stop = false;
                    g.doorbell = false;
                    ctl.stop.store(false, Ordering::SeqCst);
                    break cfg;
                }
                g = ctl.wait(g);
            }
        };
        // A bug in a session must not take the card down with it (the register file would
        // wait for the engine forever): it ends the session as a halt.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session(cfg, ctl)));
        if r.is_err() {
            tracing::error!("engine panicked; session ended");
        }
        let mut g = ctl.lock();
        g.started = true;
        g.busy = false;
        g.stop = false;
        g.doorbell = false;
        ctl.stop.store(false, Ordering::SeqCst);
        ctl.cv.notify_all();
    }
}

/// The memory a session works in: the DMA maps (held for one block) or BAR2.
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

/// One session's engine state.
struct Session {
    shared: Arc<Shared>,
    cfg: SessionConfig,
    n: u32,
    desc_base: u64,
    comp_base: u64,
    event_base: u64,
    data_base: u64,
    /// Completions written (= next descriptor index).
    k: u32,
    /// Last producer index read from the event page.
    prod: u32,
    source: Source,
    gen: Generator,
    /// End of the previous data completion's block (stream offset).
    prev_end: u64,
    /// The id of the last completion written (the `duplicate_id` lie repeats it);
    /// 0xFFFF before the session's first.
    last_id: u16,
    /// Completions since the last vector-0 evaluation fired.
    pending: u32,
    /// Device time of the first of them.
    t_first: u64,
    /// Vector-1 causes raised in this session.
    events: u32,
    /// Sleeping until DOORBELL.
    waiting: bool,
    /// STATUS value last written to the event page.
    mirrored: u32,
    /// Blocks still to drop at the source (overflow fault).
    force_drop: u64,
    t0: Instant,
    stall_until: Option<Instant>,
    /// Loopback: stream offset of the next looped block, and its bytes.
    loop_offset: u64,
    loop_buf: Vec<u8>,
}

/// What the engine waits for when it has nothing to do.
#[derive(Clone, Copy, Debug)]
struct Idle {
    /// Wake up at this time (besides the moderation timer and the next overflow).
    until: Option<Instant>,
    /// Wake up on DOORBELL.
    doorbell: bool,
}

/// At most this many blocks, or this many bytes, are moved under one hold of the DMA maps.
const BATCH_BLOCKS: u32 = 16;
const BATCH_BYTES: u64 = 256 << 10;

/// Adds `n` to a counter that only the engine thread writes (no locked instruction on the
/// hot path; readers see whole values).
#[inline]
fn bump(c: &std::sync::atomic::AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

#[inline]
fn bump32(c: &std::sync::atomic::AtomicU32, n: u32) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

const EVENT_PAGE: Halt = Halt {
    code: err::EVENT_PAGE,
    detail: 0,
};

impl Session {
    fn new(shared: Arc<Shared>, cfg: SessionConfig) -> Session {
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
        let source = Source::new(cfg.block, cfg.rate, shared.model.fifo_depth);
        Session {
            n: ring::entries(cfg.ring_log2),
            desc_base,
            comp_base,
            event_base,
            data_base,
            k: 0,
            prod: 0,
            source,
            gen: Generator::new(cfg.pattern, cfg.seed),
            prev_end: 0,
            last_id: u16::MAX,
            pending: 0,
            t_first: 0,
            events: 0,
            waiting: false,
            mirrored: 0,
            force_drop: 0,
            t0: Instant::now(),
            stall_until: None,
            loop_offset: 0,
            loop_buf: Vec::new(),
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

    /// Session start, steps 3-4: reset state, write the device half of the event page, set
    /// RUNNING. Returns false if the engine halted instead.
    fn prologue(&mut self) -> bool {
        let sh = Arc::clone(&self.shared);
        sh.dev_prod.store(0, Ordering::SeqCst);
        sh.dev_cons.store(0, Ordering::SeqCst);
        if self.cfg.bar2_mode {
            sh.bar2_data_off
                .store(self.data_base as u32, Ordering::SeqCst);
            sh.bar2_wr_ptr
                .store(self.data_base as u32, Ordering::SeqCst);
        }
        sh.status
            .fetch_and(!(status::NEED_DOORBELL | status::HALTED), Ordering::SeqCst);
        let st = sh.status.load(Ordering::SeqCst) | status::RUNNING;
        let v = view(&sh, self.cfg.bar2_mode);
        let r = self
            .event_store(&v, event::OFF_CONS, 0, Ordering::Relaxed)
            .and_then(|_| self.event_store(&v, event::OFF_NEED_DOORBELL, 0, Ordering::Relaxed))
            .and_then(|_| self.event_store(&v, event::OFF_STATUS, st, Ordering::Relaxed))
            .and_then(|_| self.event_store(&v, event::OFF_EVENTS, 0, Ordering::Release));
        drop(v);
        self.t0 = Instant::now();
        if let Err(h) = r {
            self.halt(h);
            return false;
        }
        if self.cfg.loopback {
            // From now on the playback channel feeds this session (section 19.7).
            let mut l = sh.loop_fifo();
            l.active = true;
            l.capacity = sh.model.fifo_depth as usize;
            l.data.clear();
        }
        self.mirrored = st;
        sh.status.fetch_or(status::RUNNING, Ordering::SeqCst);
        sh.stats.sessions.fetch_add(1, Ordering::Relaxed);
        info!(
            mode = if self.cfg.bar2_mode { "bar2" } else { "dma" },
            loopback = self.cfg.loopback,
            ring = self.n,
            block = self.cfg.block,
            rate = self.cfg.rate,
            pattern = self.cfg.pattern,
            "session started"
        );
        true
    }

    fn run(&mut self, ctl: &Ctl) {
        loop {
            if ctl.stop.load(Ordering::Acquire) {
                self.stop_sequence();
                return;
            }
            match self.shared.faults.hook(Site::Progress) {
                Action::Hang => {
                    warn!("hang fault: the engine stops responding until reset");
                    self.release_loop();
                    ctl.wait_for_stop();
                    return;
                }
                Action::Stall(d) => {
                    info!(?d, "stall fault");
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

    /// Runs the engine under one hold of the memory view, for up to a batch of blocks.
    /// Returns what to wait for if there is nothing to do.
    fn work(&mut self, ctl: &Ctl) -> Result<Option<Idle>, Halt> {
        let sh = Arc::clone(&self.shared);
        let v = view(&sh, self.cfg.bar2_mode);
        let mut bytes = 0u64;
        // One clock read per batch: reading it costs as much as generating 1 KiB.
        let now = self.now_ns();
        for _ in 0..BATCH_BLOCKS {
            if bytes >= BATCH_BYTES || ctl.stop.load(Ordering::Acquire) {
                break;
            }
            self.advance_source(&v, now)?;
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
            if self.cfg.loopback {
                if !self.take_looped() {
                    return Ok(Some(Idle {
                        until: Some(Instant::now() + LOOP_POLL),
                        doorbell: false,
                    }));
                }
            } else if self.source.is_empty() {
                let until = self.source.next_due_ns().map(|t| self.instant_of(t));
                return Ok(Some(Idle {
                    until,
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
            self.transfer_block(&v, now)?;
            bytes += u64::from(self.cfg.block);
        }
        Ok(None)
    }

    /// Sleeps (holding no lock) until `idle` says, the moderation timer, the next overflow,
    /// or a stop request, at most `MAX_SLEEP_*`.
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
        if let Some(t) = self.source.next_overflow_ns() {
            deadline = deadline.min(self.instant_of(t));
        }
        ctl.sleep(deadline, idle.doorbell);
    }

    fn event_store(&self, v: &MemView, off: usize, val: u32, order: Ordering) -> Result<(), Halt> {
        v.store_u32(self.event_base + off as u64, val, order)
            .map_err(|_| EVENT_PAGE)
    }

    fn event_load(&self, v: &MemView, off: usize, order: Ordering) -> Result<u32, Halt> {
        v.load_u32(self.event_base + off as u64, order)
            .map_err(|_| EVENT_PAGE)
    }

    /// Writes STATUS to the event page if it changed (best effort).
    fn mirror_status(&mut self, v: &MemView) {
        let st = self.shared.status.load(Ordering::SeqCst);
        if st != self.mirrored {
            self.mirrored = st;
            let _ = self.event_store(v, event::OFF_STATUS, st, Ordering::Release);
        }
    }

    /// Raises a vector-1 cause and counts it in the event page `events`.
    fn raise_event(&mut self, v: &MemView, cause: u32) -> Result<(), Halt> {
        self.events = self.events.wrapping_add(1);
        self.mirror_status(v);
        let r = self.event_store(v, event::OFF_EVENTS, self.events, Ordering::Release);
        self.shared.raise(cause);
        r
    }

    /// Loopback: makes sure `loop_buf` holds the next block (copied out of the loopback
    /// FIFO, which keeps it until the block is delivered). False if no whole block is there.
    fn take_looped(&mut self) -> bool {
        let b = self.cfg.block as usize;
        if self.loop_buf.len() == b {
            return true;
        }
        let l = self.shared.loop_fifo();
        if l.data.len() < b {
            return false;
        }
        self.loop_buf.clear();
        self.loop_buf.extend(l.data.iter().take(b));
        true
    }

    /// Loopback: the block in `loop_buf` was delivered; drop it from the FIFO.
    fn pop_looped(&mut self) {
        let b = self.loop_buf.len();
        let mut l = self.shared.loop_fifo();
        let n = b.min(l.data.len());
        l.data.drain(..n);
        drop(l);
        self.loop_buf.clear();
        self.loop_offset += b as u64;
        bump(&self.shared.cnt.bytes, b as u64);
        bump(&self.shared.stats.bytes_produced, b as u64);
    }

    /// Loopback: the playback channel stops feeding this session.
    fn release_loop(&self) {
        if self.cfg.loopback {
            let mut l = self.shared.loop_fifo();
            l.active = false;
            l.data.clear();
        }
    }

    fn advance_source(&mut self, v: &MemView, now: u64) -> Result<(), Halt> {
        if self.cfg.loopback {
            // The source is idle: the data comes from the playback channel.
            return Ok(());
        }
        if let Action::DropBlocks(n) = self.shared.faults.hook(Site::Source) {
            self.force_drop += n;
        }
        let a = self.source.advance(now, &mut self.force_drop);
        if a.produced == 0 {
            return Ok(());
        }
        let b = u64::from(self.cfg.block);
        bump(&self.shared.cnt.bytes, a.produced * b);
        bump(&self.shared.stats.bytes_produced, a.produced * b);
        if a.dropped > 0 {
            bump(&self.shared.cnt.lost, a.dropped * b);
            bump(&self.shared.stats.lost_bytes, a.dropped * b);
            self.shared
                .status
                .fetch_or(status::OVERFLOW, Ordering::SeqCst);
        }
        for _ in 0..a.episodes {
            debug!(dropped = a.dropped, "FIFO overflow");
            bump(&self.shared.stats.overflows, 1);
            self.raise_event(v, irq::OVERFLOW)?;
        }
        Ok(())
    }

    fn mod_deadline_ns(&self) -> Option<u64> {
        let us = self.shared.mod_time_us.load(Ordering::Relaxed);
        (self.pending > 0 && us > 0).then(|| self.t_first.saturating_add(u64::from(us) * 1000))
    }

    fn check_mod_timer(&mut self, v: &MemView, now: u64) -> Result<(), Halt> {
        match self.mod_deadline_ns() {
            Some(t) if now >= t => self.fire(v),
            _ => Ok(()),
        }
    }

    /// The vector-0 condition fired (section 9.2): FULL, read `irq_armed`, raise CAPTURE
    /// if armed; `pending = 0` either way.
    fn fire(&mut self, v: &MemView) -> Result<(), Halt> {
        if self.pending == 0 {
            return Ok(());
        }
        fence(Ordering::SeqCst);
        let armed = self.event_load(v, event::OFF_IRQ_ARMED, Ordering::SeqCst)?;
        self.pending = 0;
        if armed & event::ARMED_CAPTURE != 0 {
            self.shared.raise(irq::CAPTURE);
        }
        Ok(())
    }

    /// Reads `prod` from the event page (ACQUIRE) and checks it against the ring size.
    fn read_prod(&mut self, v: &MemView) -> Result<(), Halt> {
        let prod = self.event_load(v, event::OFF_PROD, Ordering::Acquire)?;
        self.shared.dev_prod.store(prod, Ordering::Relaxed);
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
        if on {
            self.shared
                .status
                .fetch_or(status::NEED_DOORBELL, Ordering::SeqCst);
        } else {
            self.shared
                .status
                .fetch_and(!status::NEED_DOORBELL, Ordering::SeqCst);
        }
        self.event_store(v, event::OFF_NEED_DOORBELL, u32::from(on), Ordering::SeqCst)?;
        self.mirror_status(v);
        Ok(())
    }

    /// No buffer: the device side of the doorbell protocol (section 8).
    fn enter_waiting(&mut self, v: &MemView, ctl: &Ctl) -> Result<(), Halt> {
        // A DOORBELL written before this point is not the wake-up (it had no effect).
        ctl.lock().doorbell = false;
        // The `doorbell_lie` fault: the flag stays 0 while the engine sleeps for a
        // DOORBELL all the same.
        let publish = self.shared.faults.hook(Site::NeedDoorbell) != Action::Conceal;
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
        let rung = std::mem::take(&mut ctl.lock().doorbell);
        if !rung {
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

    /// Moves the block at the head of the FIFO into buffer `k` and completes it; `now` is
    /// the device time of this engine pass.
    fn transfer_block(&mut self, v: &MemView, now: u64) -> Result<(), Halt> {
        let b = self.cfg.block;
        let block = if self.cfg.loopback {
            if self.loop_buf.len() != b as usize {
                return Ok(());
            }
            crate::source::Block {
                index: self.loop_offset / u64::from(b),
                timestamp_ns: now,
            }
        } else {
            let Some(block) = self.source.front() else {
                return Ok(());
            };
            block
        };
        let slot = self.slot(self.k);
        let offset = block.index * u64::from(b);

        let (addr, len, id) = if self.cfg.bar2_mode {
            (
                self.data_base + u64::from(slot) * u64::from(b),
                b,
                slot as u16,
            )
        } else {
            let mut raw = [0u8; desc::SIZE];
            let at = self.desc_base + u64::from(slot) * desc::SIZE as u64;
            let r = match self.shared.faults.hook(Site::DescFetch) {
                Action::Proceed => v.read(at, &mut raw),
                _ => Err(DmaFault),
            };
            r.map_err(|_| Halt {
                code: err::DESC_READ,
                detail: slot as u16,
            })?;
            let d = Descriptor::from_le_bytes(&raw);
            (d.addr, d.len, d.id)
        };

        let error = if !self.cfg.bar2_mode && (addr == 0 || addr % regs::limits::BUFFER_ALIGN != 0)
        {
            Some(err::DESC_ADDR)
        } else if len < b {
            Some(err::DESC_LEN)
        } else {
            let action = self.shared.faults.hook(Site::DataWrite);
            let failed = match action {
                Action::Fail => true,
                Action::Stray(target) => {
                    // The `stray_dma` fault: the block goes elsewhere and its completion
                    // says all is well. Where nothing is mapped the write is lost, as a
                    // posted write an IOMMU blocks: the card is not told.
                    let at = match target {
                        StrayTarget::DescRing => self.desc_base,
                        StrayTarget::EventPage => self.event_base,
                        StrayTarget::Unmapped => v.beyond_writable(),
                    };
                    let landed = self.write_block(v, at, b, offset).is_ok();
                    debug!(?target, at, landed, "block written astray");
                    let c = &self.shared.stats;
                    bump(
                        if landed {
                            &c.stray_landed
                        } else {
                            &c.stray_blocked
                        },
                        1,
                    );
                    false
                }
                _ => self.write_block(v, addr, b, offset).is_err(),
            };
            if failed {
                Some(err::DMA_WRITE)
            } else {
                if action == Action::Corrupt {
                    let _ = v.flip_bit(addr + u64::from(b / 2));
                }
                None
            }
        };

        let phase = ring::phase(self.k, self.cfg.ring_log2);
        let c = match error {
            None => {
                let lost = offset - self.prev_end;
                Completion {
                    stream_offset: offset,
                    lost_bytes: lost,
                    timestamp_ns: block.timestamp_ns,
                    length: b,
                    id,
                    flags: phase | if lost > 0 { comp::F_OVERFLOW } else { 0 },
                }
            }
            Some(code) => Completion {
                stream_offset: offset,
                lost_bytes: 0,
                timestamp_ns: now,
                length: 0,
                id,
                flags: comp::error_flags(phase, code),
            },
        };
        let c = if error.is_none() {
            self.maybe_lie(c, b)
        } else {
            c
        };
        self.last_id = id;
        self.write_completion(v, slot, &c)?;
        if error.is_none() {
            if self.cfg.loopback {
                self.pop_looped();
            } else {
                self.source.pop();
            }
            self.prev_end = offset + u64::from(b);
            bump32(&self.shared.cnt.blocks, 1);
            bump(&self.shared.stats.blocks, 1);
            bump(&self.shared.stats.bytes, u64::from(b));
        } else {
            bump(&self.shared.stats.error_completions, 1);
        }
        self.k = self.k.wrapping_add(1);
        // The `cons_lie` fault: an index far outside the ring; the completion is true.
        let cons = match self.shared.faults.hook(Site::EventCons) {
            Action::Skew(d) => self.k.wrapping_add(d),
            _ => self.k,
        };
        self.event_store(v, event::OFF_CONS, cons, Ordering::Release)?;
        self.shared.dev_cons.store(self.k, Ordering::Relaxed);
        if self.cfg.bar2_mode {
            let next = self.data_base + u64::from(self.slot(self.k)) * u64::from(b);
            self.shared
                .bar2_wr_ptr
                .store(next as u32, Ordering::Relaxed);
        }
        if let Some(code) = error {
            debug!(code, slot, "error completion");
            self.shared.record_error(code, slot as u16);
            self.raise_event(v, irq::ERROR)?;
        }
        // Interrupt moderation (section 9.2).
        self.pending += 1;
        if self.pending == 1 {
            self.t_first = now;
        }
        let c = irq::effective_count(
            self.shared.mod_count.load(Ordering::Relaxed),
            self.cfg.ring_log2,
        );
        if self.pending >= c {
            self.fire(v)?;
        }
        Ok(())
    }

    /// Writes the block (the source's bytes at stream `offset`, or the looped-back one)
    /// at `addr`.
    fn write_block(&self, v: &MemView, addr: u64, b: u32, offset: u64) -> Result<(), DmaFault> {
        if self.cfg.loopback {
            v.write(addr, &self.loop_buf)
        } else {
            v.fill(addr, b as usize, &self.gen, offset)
        }
    }

    /// The `bad_completion` fault: completion `c` of a block of `b` bytes, as the fault
    /// says the card reports it (the block itself was written correctly).
    fn maybe_lie(&self, c: Completion, b: u32) -> Completion {
        let Action::Lie(lie) = self.shared.faults.hook(Site::CompletionBody) else {
            return c;
        };
        debug!(?lie, id = c.id, "completion lies");
        lie.apply(c, b, self.last_id, comp::F_OVERFLOW)
    }

    /// Writes completion `c` into ring slot `slot`: body, RELEASE, tail dword.
    fn write_completion(&self, v: &MemView, slot: u32, c: &Completion) -> Result<(), Halt> {
        let fail = Halt {
            code: err::COMP_WRITE,
            detail: slot as u16,
        };
        if self.shared.faults.hook(Site::CompletionWrite) != Action::Proceed {
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

    /// ENABLE 1->0 (section 7.5).
    fn stop_sequence(&mut self) {
        let sh = Arc::clone(&self.shared);
        let v = view(&sh, self.cfg.bar2_mode);
        let _ = self.fire(&v);
        let st = sh.status.load(Ordering::SeqCst)
            & !(status::NEED_DOORBELL | status::HALTED | status::RUNNING);
        let _ = self.event_store(&v, event::OFF_NEED_DOORBELL, 0, Ordering::Relaxed);
        let _ = self.event_store(&v, event::OFF_STATUS, st, Ordering::Release);
        drop(v);
        sh.status
            .fetch_and(!(status::NEED_DOORBELL | status::HALTED), Ordering::SeqCst);
        self.release_loop();
        sh.status.fetch_and(!status::RUNNING, Ordering::SeqCst);
        info!(completions = self.k, "session stopped");
    }

    /// Fatal error (section 11): no further DMA, STATUS = HALTED | ERROR.
    fn halt(&mut self, h: Halt) {
        let sh = Arc::clone(&self.shared);
        let v = view(&sh, self.cfg.bar2_mode);
        if h.code != err::EVENT_PAGE {
            let _ = self.fire(&v);
        }
        warn!(code = h.code, detail = h.detail, "engine halted");
        self.release_loop();
        sh.record_error(h.code, h.detail);
        sh.stats.halts.fetch_add(1, Ordering::Relaxed);
        self.events = self.events.wrapping_add(2);
        let st = (sh.status.load(Ordering::SeqCst) & !(status::RUNNING | status::NEED_DOORBELL))
            | status::HALTED
            | status::ERROR;
        if h.code != err::EVENT_PAGE {
            let _ = self.event_store(&v, event::OFF_EVENTS, self.events, Ordering::Relaxed);
            let _ = self.event_store(&v, event::OFF_NEED_DOORBELL, 0, Ordering::Relaxed);
            let _ = self.event_store(&v, event::OFF_STATUS, st, Ordering::Release);
        }
        drop(v);
        sh.status
            .fetch_or(status::HALTED | status::ERROR, Ordering::SeqCst);
        sh.status
            .fetch_and(!(status::RUNNING | status::NEED_DOORBELL), Ordering::SeqCst);
        sh.raise(irq::ERROR);
        sh.raise(irq::HALTED);
    }
}
