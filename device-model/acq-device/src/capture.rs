//! The capture channel's data side (docs/device.md sections 7-9): the card -> host
//! direction of the ring protocol in `crate::channel`. Blocks come from the [`Source`] (the
//! sampling clock and its FIFO: what the host does not take in time is dropped there and
//! reported as an overflow) or, with loopback, from the playback channel; each is
//! generated straight into the host buffer (or BAR2) as the session's [`pattern`].
//!
//! The engine knows nothing about sockets: it reaches host memory through `MemView`s (the
//! DMA maps or BAR2), interrupts through `Shared::raise`, and every failure site through
//! the fault plan.
//!
//! [`pattern`]: crate::pattern

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use crate::channel::{
    self, bump, bump32, BlockAt, Core, Direction, Engine, Halt, Idle, Regs, SessionConfig, Sites,
    LOOP_POLL,
};
use crate::dma::{DmaFault, MemView};
use crate::faults::{Action, Site, StrayTarget};
use crate::pattern::Generator;
use crate::regs::{comp, irq, status, Completion};
use crate::shared::Shared;
use crate::source::Source;

/// Starts the capture engine thread of the card whose state is `shared`.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Engine> {
    channel::spawn::<Capture>(shared)
}

/// One capture session's data side.
pub(crate) struct Capture {
    source: Source,
    gen: Generator,
    /// End of the previous data completion's block (stream offset).
    prev_end: u64,
    /// Blocks still to drop at the source (the `overflow` fault).
    force_drop: u64,
    /// Loopback: stream offset of the next looped block, and its bytes.
    loop_offset: u64,
    loop_buf: Vec<u8>,
}

impl Capture {
    /// Loopback: makes sure `loop_buf` holds the next block (copied out of the loopback
    /// FIFO, which keeps it until the block is delivered). False if no whole block is there.
    fn take_looped(&mut self, shared: &Shared, b: usize) -> bool {
        if self.loop_buf.len() == b {
            return true;
        }
        let l = shared.loop_fifo();
        if l.data.len() < b {
            return false;
        }
        self.loop_buf.clear();
        self.loop_buf.extend(l.data.iter().take(b));
        true
    }

    /// Loopback: the block in `loop_buf` was delivered; drop it from the FIFO.
    fn pop_looped(&mut self, shared: &Shared) {
        let b = self.loop_buf.len();
        let mut l = shared.loop_fifo();
        let n = b.min(l.data.len());
        l.data.drain(..n);
        drop(l);
        self.loop_buf.clear();
        self.loop_offset += b as u64;
        bump(&shared.cnt.bytes, b as u64);
        bump(&shared.stats.bytes_produced, b as u64);
    }

    /// Writes the block (the source's bytes at stream `offset`, or the looped-back one)
    /// at `addr`.
    fn write_block(
        &self,
        core: &Core<Self>,
        v: &MemView,
        addr: u64,
        offset: u64,
    ) -> Result<(), DmaFault> {
        if core.cfg.loopback {
            v.write(addr, &self.loop_buf)
        } else {
            v.fill(addr, core.cfg.block as usize, &self.gen, offset)
        }
    }
}

impl Direction for Capture {
    const NAME: &'static str = "capture";
    const THREAD: &'static str = "acq-engine";
    const SITES: Sites = Sites {
        progress: Site::Progress,
        desc_fetch: Site::DescFetch,
        completion_write: Site::CompletionWrite,
        completion_body: Site::CompletionBody,
        event_cons: Site::EventCons,
        need_doorbell: Site::NeedDoorbell,
    };
    const CAUSE_COMPLETION: u32 = irq::CAPTURE;
    const ARMED: u32 = crate::regs::event::ARMED_CAPTURE;
    const CAUSE_ERROR: u32 = irq::ERROR;
    const CAUSES_HALT: &'static [u32] = &[irq::ERROR, irq::HALTED];
    const LIE_GAP_FLAG: u16 = comp::F_OVERFLOW;

    fn regs(sh: &Shared) -> Regs<'_> {
        Regs {
            status: &sh.status,
            mod_count: &sh.mod_count,
            mod_time_us: &sh.mod_time_us,
            dev_prod: &sh.dev_prod,
            dev_cons: &sh.dev_cons,
            sessions: &sh.stats.sessions,
            halts: &sh.stats.halts,
            error_completions: &sh.stats.error_completions,
        }
    }

    fn record_error(shared: &Shared, code: u8, detail: u16) {
        shared.record_error(code, detail);
    }

    fn abandon(shared: &Shared) {
        shared.loop_fifo().active = false;
    }

    fn new(shared: &Arc<Shared>, cfg: &SessionConfig) -> Capture {
        Capture {
            source: Source::new(cfg.block, cfg.rate, shared.model.fifo_depth),
            gen: Generator::new(cfg.pattern, cfg.seed),
            prev_end: 0,
            force_drop: 0,
            loop_offset: 0,
            loop_buf: Vec::new(),
        }
    }

    fn started(&mut self, core: &Core<Self>) {
        if core.cfg.loopback {
            // From now on the playback channel feeds this session (section 19.7).
            let sh = &core.shared;
            let mut l = sh.loop_fifo();
            l.active = true;
            l.capacity = sh.model.fifo_depth as usize;
            l.data.clear();
        }
    }

    /// Loopback: the playback channel stops feeding this session.
    fn end(&mut self, core: &Core<Self>) {
        if core.cfg.loopback {
            let mut l = core.shared.loop_fifo();
            l.active = false;
            l.data.clear();
        }
    }

    /// The source produces what the sampling clock made by `now`; what its FIFO cannot
    /// hold is lost, one OVERFLOW event per episode.
    fn tick(&mut self, core: &mut Core<Self>, v: &MemView, now: u64) -> Result<(), Halt> {
        if core.cfg.loopback {
            // The source is idle: the data comes from the playback channel.
            return Ok(());
        }
        // Once per block: no reference count taken here, only borrows of the card's state
        // (released before an event needs the session mutably).
        let a = {
            let sh = &core.shared;
            if let Action::DropBlocks(n) = sh.faults.hook(Site::Source) {
                self.force_drop += n;
            }
            let a = self.source.advance(now, &mut self.force_drop);
            if a.produced == 0 {
                return Ok(());
            }
            let b = u64::from(core.cfg.block);
            bump(&sh.cnt.bytes, a.produced * b);
            bump(&sh.stats.bytes_produced, a.produced * b);
            if a.dropped > 0 {
                bump(&sh.cnt.lost, a.dropped * b);
                bump(&sh.stats.lost_bytes, a.dropped * b);
                sh.status.fetch_or(status::OVERFLOW, Ordering::SeqCst);
            }
            a
        };
        for _ in 0..a.episodes {
            debug!(dropped = a.dropped, "FIFO overflow");
            bump(&core.shared.stats.overflows, 1);
            core.raise_event(v, irq::OVERFLOW)?;
        }
        Ok(())
    }

    fn ready(&mut self, core: &Core<Self>) -> Option<Idle> {
        if core.cfg.loopback {
            let b = core.cfg.block as usize;
            return (!self.take_looped(&core.shared, b))
                .then(|| Idle::until(Some(Instant::now() + LOOP_POLL)));
        }
        self.source
            .is_empty()
            .then(|| Idle::until(self.source.next_due_ns().map(|t| core.instant_of(t))))
    }

    fn deadline_ns(&self, _core: &Core<Self>) -> Option<u64> {
        self.source.next_overflow_ns()
    }

    fn next_block(&mut self, core: &Core<Self>, now: u64) -> Option<BlockAt> {
        let b = u64::from(core.cfg.block);
        if core.cfg.loopback {
            (self.loop_buf.len() as u64 == b).then_some(BlockAt {
                offset: self.loop_offset,
                timestamp_ns: now,
            })
        } else {
            self.source.front().map(|block| BlockAt {
                offset: block.index * b,
                timestamp_ns: block.timestamp_ns,
            })
        }
    }

    fn transfer(
        &mut self,
        core: &Core<Self>,
        v: &MemView,
        addr: u64,
        at: BlockAt,
    ) -> Result<(), u8> {
        let sh = &core.shared;
        let action = sh.faults.hook(Site::DataWrite);
        let failed = match action {
            Action::Fail => true,
            Action::Stray(target) => {
                // The `stray_dma` fault: the block goes elsewhere and its completion says
                // all is well. Where nothing is mapped the write is lost, as a posted write
                // an IOMMU blocks: the card is not told.
                let to = match target {
                    StrayTarget::DescRing => core.desc_base,
                    StrayTarget::EventPage => core.event_base,
                    StrayTarget::Unmapped => v.beyond_writable(),
                };
                let landed = self.write_block(core, v, to, at.offset).is_ok();
                debug!(?target, at = to, landed, "block written astray");
                let c = &sh.stats;
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
            _ => self.write_block(core, v, addr, at.offset).is_err(),
        };
        if failed {
            return Err(crate::regs::err::DMA_WRITE);
        }
        if action == Action::Corrupt {
            let _ = v.flip_bit(addr + u64::from(core.cfg.block / 2));
        }
        Ok(())
    }

    fn completion(&mut self, core: &Core<Self>, at: BlockAt, phase: u16, id: u16) -> Completion {
        let lost = at.offset - self.prev_end;
        Completion {
            stream_offset: at.offset,
            lost_bytes: lost,
            timestamp_ns: at.timestamp_ns,
            length: core.cfg.block,
            id,
            flags: phase | if lost > 0 { comp::F_OVERFLOW } else { 0 },
        }
    }

    fn completed(&mut self, core: &Core<Self>, at: BlockAt, _c: &Completion, _now: u64) {
        let sh = &core.shared;
        if core.cfg.loopback {
            self.pop_looped(sh);
        } else {
            self.source.pop();
        }
        let b = core.cfg.block;
        // The block's true end, whatever a lying completion said.
        self.prev_end = at.offset + u64::from(b);
        bump32(&sh.cnt.blocks, 1);
        bump(&sh.stats.blocks, 1);
        bump(&sh.stats.bytes, u64::from(b));
    }
}
