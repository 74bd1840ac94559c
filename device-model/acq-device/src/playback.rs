//! The playback channel's data side (docs/device.md section 19): the host -> card
//! direction of the ring protocol in `crate::channel`. Each block is read from the host
//! buffer, checked against the session's pattern (verified bytes, mismatching blocks, first
//! bad offset) and put into the output FIFO. The output (the "DAC") drains one block per
//! block time at PB_RATE; when it finds the FIFO empty it plays a block of silence and
//! counts an underrun. With loopback, every accepted block is also copied to the capture
//! channel's loopback FIFO.
//!
//! The protocol itself (doorbell suppression, moderation, re-arm, halts) is the capture
//! channel's, on the playback registers and event area: one engine serves both.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use crate::channel::{
    self, bump, bump32, BlockAt, Core, Direction, Engine, Halt, Idle, Regs, SessionConfig, Sites,
    LOOP_POLL,
};
use crate::dma::MemView;
use crate::faults::{Action, Site};
use crate::pattern::Generator;
use crate::regs::{err, irq, pb_comp, pb_event, pb_status, Completion};
use crate::shared::Shared;

const NS_PER_S: u128 = 1_000_000_000;

/// Starts the playback engine thread of the card whose state is `shared`.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Engine> {
    channel::spawn::<Playback>(shared)
}

/// One playback session's data side.
pub(crate) struct Playback {
    gen: Generator,
    block: u32,
    rate: u64,
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
    /// The block being received, and the pattern it should be.
    data: Vec<u8>,
    expect: Vec<u8>,
}

impl Playback {
    /// Device time at which block time `i` of the output ends (RATE > 0, output started).
    fn drain_time(&self, t0: u64, i: u64) -> u64 {
        let t =
            (u128::from(i) + 1) * u128::from(self.block) * NS_PER_S / u128::from(self.rate.max(1));
        t0.saturating_add(u64::try_from(t).unwrap_or(u64::MAX))
    }

    /// Checks `data` against the pattern at stream offset `offset`; counts the result.
    /// Returns true on a mismatch.
    fn verify(&mut self, shared: &Shared, offset: u64) -> bool {
        let pb = &shared.pb;
        let b = self.data.len() as u64;
        match self
            .gen
            .compare(offset, &self.data, &mut self.expect)
            .map(|m| m.first)
        {
            None => {
                bump(&pb.verified, b);
                bump(&shared.stats.pb_verified_bytes, b);
                false
            }
            Some(i) => {
                bump32(&pb.mismatch, 1);
                bump(&shared.stats.pb_mismatch_blocks, 1);
                let at = offset + i as u64;
                if pb.first_bad.load(Ordering::Relaxed) == u64::MAX {
                    info!(offset = at, "playback: first mismatching byte");
                    pb.first_bad.store(at, Ordering::Relaxed);
                }
                true
            }
        }
    }
}

impl Direction for Playback {
    const NAME: &'static str = "playback";
    const THREAD: &'static str = "acq-playback";
    const SITES: Sites = Sites {
        progress: Site::PbProgress,
        desc_fetch: Site::PbDescFetch,
        completion_write: Site::PbCompletionWrite,
        completion_body: Site::PbCompletionBody,
        event_cons: Site::PbEventCons,
        need_doorbell: Site::PbNeedDoorbell,
    };
    const CAUSE_COMPLETION: u32 = irq::PLAYBACK;
    const ARMED: u32 = pb_event::ARMED;
    const CAUSE_ERROR: u32 = irq::PB_EVENT;
    const CAUSES_HALT: &'static [u32] = &[irq::PB_EVENT];
    const LIE_GAP_FLAG: u16 = pb_comp::F_UNDERRUN;

    fn regs(sh: &Shared) -> Regs<'_> {
        Regs {
            status: &sh.pb.status,
            mod_count: &sh.pb.mod_count,
            mod_time_us: &sh.pb.mod_time_us,
            dev_prod: &sh.pb.dev_prod,
            dev_cons: &sh.pb.dev_cons,
            sessions: &sh.stats.pb_sessions,
            halts: &sh.stats.pb_halts,
            error_completions: &sh.stats.pb_error_completions,
        }
    }

    fn record_error(shared: &Shared, code: u8, detail: u16) {
        shared.record_pb_error(code, detail);
    }

    fn new(shared: &Arc<Shared>, cfg: &SessionConfig) -> Playback {
        let b = cfg.block.max(1) as usize;
        Playback {
            gen: Generator::new(cfg.pattern, cfg.seed),
            block: cfg.block,
            rate: cfg.rate,
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
            data: vec![0; b],
            expect: vec![0; b],
        }
    }

    fn begin(&mut self, core: &Core<Self>) {
        core.shared.pb.first_bad.store(u64::MAX, Ordering::SeqCst);
    }

    /// The output plays every block time that ended by `now`: a block from the FIFO, or
    /// silence (an underrun) if the FIFO is empty. With RATE = 0 the output takes every
    /// block at once and never underruns.
    fn tick(&mut self, core: &mut Core<Self>, v: &MemView, now: u64) -> Result<(), Halt> {
        if self.rate == 0 {
            self.fifo = 0;
            return Ok(());
        }
        let Some(t0) = self.dac_t0 else {
            return Ok(());
        };
        while self.drain_time(t0, self.drained) <= now {
            self.drained += 1;
            if self.fifo > 0 {
                self.fifo -= 1;
                self.in_underrun = false;
                continue;
            }
            // Underrun: the host did not supply this block in time.
            self.silence += u64::from(self.block);
            let sh = &core.shared;
            bump32(&sh.pb.underruns, 1);
            bump(&sh.stats.pb_underruns, 1);
            if !self.in_underrun {
                self.in_underrun = true;
                debug!(offset = self.stream_off, "playback underrun");
                bump(&sh.stats.pb_underrun_episodes, 1);
                sh.pb.status.fetch_or(pb_status::UNDERRUN, Ordering::SeqCst);
                core.raise_event(v, irq::PB_EVENT)?;
            }
        }
        Ok(())
    }

    fn ready(&mut self, core: &Core<Self>) -> Option<Idle> {
        if self.rate > 0 && self.fifo >= self.fifo_cap {
            // Output FIFO full: the next block time makes room.
            return Some(Idle::until(
                self.deadline_ns(core).map(|t| core.instant_of(t)),
            ));
        }
        // Loopback: room in the capture channel's loopback FIFO for the next block (always
        // there without a loopback capture session).
        let l = core.shared.loop_fifo();
        (l.active && !l.has_room(self.block as usize))
            .then(|| Idle::until(Some(Instant::now() + LOOP_POLL)))
    }

    /// The output's next block time.
    fn deadline_ns(&self, _core: &Core<Self>) -> Option<u64> {
        let t0 = self.dac_t0?;
        (self.rate > 0).then(|| self.drain_time(t0, self.drained))
    }

    fn next_block(&mut self, _core: &Core<Self>, now: u64) -> Option<BlockAt> {
        Some(BlockAt {
            offset: self.stream_off,
            timestamp_ns: now,
        })
    }

    fn transfer(
        &mut self,
        core: &Core<Self>,
        v: &MemView,
        addr: u64,
        _at: BlockAt,
    ) -> Result<(), u8> {
        let action = core.shared.faults.hook(Site::PbDataRead);
        if action == Action::Fail || v.read(addr, &mut self.data).is_err() {
            return Err(err::DMA_READ);
        }
        if action == Action::Corrupt {
            // The card received a damaged byte: its verifier must notice.
            if let Some(x) = self.data.get_mut(self.block as usize / 2) {
                *x ^= 1;
            }
        }
        Ok(())
    }

    fn completion(&mut self, core: &Core<Self>, at: BlockAt, phase: u16, id: u16) -> Completion {
        let bad = self.verify(&core.shared, at.offset);
        let mut flags = phase;
        if self.silence > 0 {
            flags |= pb_comp::F_UNDERRUN;
        }
        if bad {
            flags |= pb_comp::F_MISMATCH;
        }
        Completion {
            stream_offset: at.offset,
            lost_bytes: self.silence,
            timestamp_ns: at.timestamp_ns,
            length: self.block,
            id,
            flags,
        }
    }

    /// A data block was received: into the output FIFO (and the loopback path).
    fn completed(&mut self, core: &Core<Self>, _at: BlockAt, _c: &Completion, now: u64) {
        let b = u64::from(self.block);
        self.stream_off += b;
        self.silence = 0;
        if self.rate > 0 {
            self.fifo += 1;
            if self.dac_t0.is_none() {
                // The output starts with the first block (no underrun before it).
                self.dac_t0 = Some(now);
            }
        }
        let sh = &core.shared;
        bump32(&sh.pb.blocks, 1);
        bump(&sh.pb.bytes, b);
        bump(&sh.stats.pb_blocks, 1);
        bump(&sh.stats.pb_bytes, b);
        let mut l = sh.loop_fifo();
        if l.active {
            l.data.extend(self.data.iter());
            drop(l);
            bump(&sh.stats.loopback_bytes, b);
        }
    }

    /// The host's block is lost, not late: the stream moves past it, so the blocks after
    /// it are still checked at their own offsets (section 19.4).
    fn failed(&mut self, _core: &Core<Self>) {
        self.stream_off += u64::from(self.block);
    }

    /// The first bad block of an episode raises one PB_EVENT, like an overflow episode.
    fn after_completion(
        &mut self,
        core: &mut Core<Self>,
        v: &MemView,
        c: &Completion,
    ) -> Result<(), Halt> {
        let mismatch = c.flags & pb_comp::F_MISMATCH != 0;
        if mismatch && !self.in_mismatch {
            self.in_mismatch = true;
            core.shared
                .pb
                .status
                .fetch_or(pb_status::MISMATCH, Ordering::SeqCst);
            core.raise_event(v, irq::PB_EVENT)?;
        }
        if !mismatch {
            self.in_mismatch = false;
        }
        Ok(())
    }
}
