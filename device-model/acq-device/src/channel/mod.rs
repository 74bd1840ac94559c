//! The ring protocol both DMA channels speak (docs/device.md sections 7-9 and 19), once.
//!
//! One engine thread per channel runs sessions. Per block it polls the channel's event
//! area for the producer index (only when it has used up the buffers it knows of), fetches
//! the descriptor, lets the channel move the block, writes the completion (tail dword with
//! PHASE last) and `cons`, and moderates the channel's completion interrupt. With no buffer
//! it runs the doorbell protocol and sleeps. Stops, halts and the fault hooks on the
//! protocol live here too.
//!
//! What a channel adds is its data transfer, a [`Direction`]: the capture channel
//! (`crate::capture`) generates blocks into host buffers from its source; the playback
//! channel (`crate::playback`) reads them, checks them against its pattern and drains them
//! at its output rate. A third channel would be a third `Direction`, not a third engine.
//!
//! - [`thread`]: the engine thread, and its start/stop/doorbell hand-over with the
//!   register file;
//! - [`session`]: one session: the protocol state and its steps.

mod session;
mod thread;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dma::MemView;
use crate::faults::Site;
use crate::regs::{event, pb_event, pb_status, status, Completion};
use crate::shared::Shared;

pub(crate) use session::Core;
pub(crate) use thread::Ctl;
pub use thread::Engine;

/// A session's configuration, latched and validated at ENABLE 0->1 (either channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// BAR2 streaming mode (CTRL.MODE_BAR2; capture only).
    pub bar2_mode: bool,
    /// Descriptor ring bus address (DMA mode).
    pub desc_base: u64,
    /// Completion ring bus address (DMA mode).
    pub comp_base: u64,
    /// Event area bus address (DMA mode).
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
    /// LOOPBACK.ENABLE at enable (v1.1): capture blocks come from the playback channel.
    pub loopback: bool,
}

/// A fatal error: the engine halts with this code and detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Halt {
    pub code: u8,
    pub detail: u16,
}

/// What the engine waits for when it has nothing to do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Idle {
    /// Wake up at this time (besides the moderation timer and the channel's own deadline).
    pub until: Option<Instant>,
    /// Wake up on DOORBELL.
    pub doorbell: bool,
}

impl Idle {
    /// Wait until `until` (or for the channel's own deadline, if `None`), not for a doorbell.
    pub fn until(until: Option<Instant>) -> Idle {
        Idle {
            until,
            doorbell: false,
        }
    }
}

/// A loopback session polls this often: the capture channel for looped data, the playback
/// channel for room in the loopback FIFO (neither engine signals the other: one more
/// wake-up path is not worth it at this rate).
pub(crate) const LOOP_POLL: Duration = Duration::from_millis(1);

/// Adds `n` to a counter that only the engine thread writes (no locked instruction on the
/// hot path; readers see whole values).
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// [`bump`] for a 32-bit register counter.
#[inline]
pub(crate) fn bump32(c: &AtomicU32, n: u32) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

// The two channels' event areas and STATUS registers share one layout (docs/device.md
// section 19.2), which is what lets one engine serve both: the engine addresses either
// with `event::OFF_*` and `status::*`.
const _: () = {
    assert!(event::OFF_PROD == pb_event::OFF_PROD);
    assert!(event::OFF_IRQ_ARMED == pb_event::OFF_IRQ_ARMED);
    assert!(event::OFF_CONS == pb_event::OFF_CONS);
    assert!(event::OFF_NEED_DOORBELL == pb_event::OFF_NEED_DOORBELL);
    assert!(event::OFF_STATUS == pb_event::OFF_STATUS);
    assert!(event::OFF_EVENTS == pb_event::OFF_EVENTS);
    assert!(status::RUNNING == pb_status::RUNNING);
    assert!(status::NEED_DOORBELL == pb_status::NEED_DOORBELL);
    assert!(status::ERROR == pb_status::ERROR);
    assert!(status::HALTED == pb_status::HALTED);
};

/// A channel's registers and statistics in the card's shared state.
pub(crate) struct Regs<'a> {
    /// STATUS / PB_STATUS.
    pub status: &'a AtomicU32,
    /// IRQ_MOD_COUNT / PB_IRQ_MOD_COUNT.
    pub mod_count: &'a AtomicU32,
    /// IRQ_MOD_TIME_US / PB_IRQ_MOD_TIME_US.
    pub mod_time_us: &'a AtomicU32,
    /// DEV_PROD / PB_DEV_PROD.
    pub dev_prod: &'a AtomicU32,
    /// DEV_CONS / PB_DEV_CONS.
    pub dev_cons: &'a AtomicU32,
    /// Sessions started, halts, error completions (control-socket statistics).
    pub sessions: &'a AtomicU64,
    pub halts: &'a AtomicU64,
    pub error_completions: &'a AtomicU64,
}

/// A channel's fault sites on the ring protocol (its data sites are its own business).
pub(crate) struct Sites {
    /// One pass of the engine loop (`hang`, `stall`).
    pub progress: Site,
    /// A descriptor read.
    pub desc_fetch: Site,
    /// A completion record write.
    pub completion_write: Site,
    /// A data completion's body (`bad_completion`).
    pub completion_body: Site,
    /// `cons` published after a completion (`cons_lie`).
    pub event_cons: Site,
    /// `need_doorbell` published before sleeping (`doorbell_lie`).
    pub need_doorbell: Site,
}

/// Where the block at the head of a channel's stream is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockAt {
    /// Its stream offset.
    pub offset: u64,
    /// The device time its completion reports.
    pub timestamp_ns: u64,
}

/// What differs between the capture and the playback channel: registers, causes, fault
/// sites, and the data transfer. The engine ([`Core`]) calls these at fixed points of the
/// protocol; each gets the session's protocol state to raise events or read the
/// configuration.
pub(crate) trait Direction: Sized + Send + 'static {
    /// The channel in log lines and its thread's name.
    const NAME: &'static str;
    const THREAD: &'static str;
    /// The protocol's fault sites on this channel.
    const SITES: Sites;
    /// The moderated completion cause, and its `irq_armed` bit in the event area.
    const CAUSE_COMPLETION: u32;
    const ARMED: u32;
    /// The cause an error completion raises (data events raise their own).
    const CAUSE_ERROR: u32;
    /// The causes a halt raises, in order (each counts once in the event area's `events`).
    const CAUSES_HALT: &'static [u32];
    /// The completion flag a `bad_completion` lie sets with a false `lost_bytes`.
    const LIE_GAP_FLAG: u16;

    /// The channel's registers.
    fn regs(shared: &Shared) -> Regs<'_>;
    /// Records error `code` in the channel's ERROR_CODE and STATUS.ERROR.
    fn record_error(shared: &Shared, code: u8, detail: u16);
    /// A session panicked: undo what the channel holds beyond its registers.
    fn abandon(_shared: &Shared) {}

    /// The data side of a new session.
    fn new(shared: &Arc<Shared>, cfg: &SessionConfig) -> Self;
    /// Session start, before the event area is written.
    fn begin(&mut self, _core: &Core<Self>) {}
    /// The session started (its event area is written; RUNNING is about to be set).
    fn started(&mut self, _core: &Core<Self>) {}
    /// The session ended (stop, halt, hang): let go of what it holds.
    fn end(&mut self, _core: &Core<Self>) {}
    /// Once per pass of the loop, before anything else: produce (capture) or drain
    /// (playback) up to device time `now`, raising data events.
    fn tick(&mut self, core: &mut Core<Self>, v: &MemView, now: u64) -> Result<(), Halt>;
    /// `None` if a block can move now, else what to wait for.
    fn ready(&mut self, core: &Core<Self>) -> Option<Idle>;
    /// The channel's next deadline in device time (the source's next overflow, the
    /// output's next block time).
    fn deadline_ns(&self, core: &Core<Self>) -> Option<u64>;
    /// The block the next descriptor is for (`None`: nothing to move after all).
    fn next_block(&mut self, core: &Core<Self>, now: u64) -> Option<BlockAt>;
    /// Moves the block between host address `addr` and the channel; `Err(code)` makes it
    /// an error completion.
    fn transfer(
        &mut self,
        core: &Core<Self>,
        v: &MemView,
        addr: u64,
        at: BlockAt,
    ) -> Result<(), u8>;
    /// The completion of good block `at`, before any lie, with the ring's `phase` flag and
    /// the descriptor's `id`.
    fn completion(&mut self, core: &Core<Self>, at: BlockAt, phase: u16, id: u16) -> Completion;
    /// Good block `at`'s completion `c` (as reported, lies included) is written.
    fn completed(&mut self, core: &Core<Self>, at: BlockAt, c: &Completion, now: u64);
    /// The block's error completion is written.
    fn failed(&mut self, _core: &Core<Self>) {}
    /// After `cons` of a good block's completion `c` is published: raise data events.
    fn after_completion(
        &mut self,
        _core: &mut Core<Self>,
        _v: &MemView,
        _c: &Completion,
    ) -> Result<(), Halt> {
        Ok(())
    }
}

/// Starts the engine thread of channel `D` of the card whose state is `shared`.
pub(crate) fn spawn<D: Direction>(shared: Arc<Shared>) -> std::io::Result<Engine> {
    Engine::spawn_with(D::THREAD, move |cfg, ctl| {
        // A bug in a session must not take the card down with it: it ends the session as
        // a halt.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session::run::<D>(Arc::clone(&shared), cfg, ctl)
        }));
        if r.is_err() {
            tracing::error!(
                channel = D::NAME,
                "engine panicked; session ended as halted"
            );
            D::abandon(&shared);
            let st = D::regs(&shared).status;
            st.fetch_and(!(status::RUNNING | status::NEED_DOORBELL), Ordering::SeqCst);
            st.fetch_or(status::HALTED | status::ERROR, Ordering::SeqCst);
        }
    })
}
