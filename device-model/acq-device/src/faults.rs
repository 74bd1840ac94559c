//! Fault injection: the one place where every failure a real card can suffer is decided.
//!
//! Each place in the model where real hardware can fail calls [`FaultPlan::hook`] with its
//! [`Site`], and does what the returned [`Action`] says. With nothing armed this is one
//! relaxed atomic load. Faults are armed through the control socket
//! (`{"cmd":"inject","fault":...}`, see docs/device.md, "Model control socket").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

pub use acq_wire::faults::{
    CardFault, Channel, CompletionLie, ConfigChange, ControlArgs, StrayTarget, SLOW_STOP_MS_MAX,
    SPURIOUS_IRQ_MAX, STALL_MS_MAX, STORM_MS_MAX, STORM_RATE_MAX,
};

/// A place where a real device can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// The engine reads a descriptor from the ring.
    DescFetch,
    /// The engine writes a block into a host buffer.
    DataWrite,
    /// The engine writes a completion record.
    CompletionWrite,
    /// The engine fills in a data completion: it may lie about it.
    CompletionBody,
    /// The device sends an interrupt message.
    Interrupt,
    /// The host reads a BAR0 register.
    RegisterRead,
    /// The host writes a BAR0 register.
    RegisterWrite,
    /// The engine is about to make progress (one pass of its loop).
    Progress,
    /// The source produces blocks.
    Source,
    /// Playback: the engine reads a descriptor.
    PbDescFetch,
    /// Playback: the engine reads a block from a host buffer.
    PbDataRead,
    /// Playback: the engine writes a completion record.
    PbCompletionWrite,
    /// Playback: the device sends a vector-2 message.
    PbInterrupt,
    /// Playback: the engine is about to make progress.
    PbProgress,
    /// The host stops the capture engine (CTRL.ENABLE 1->0).
    Stop,
    /// The capture engine found no buffer and publishes `need_doorbell` before it
    /// sleeps until a DOORBELL (section 8).
    NeedDoorbell,
    /// The capture engine publishes the event page's `cons` after a completion.
    EventCons,
    /// Playback: the engine fills in a completion: it may lie about it.
    PbCompletionBody,
    /// Playback: the engine found no buffer and publishes `need_doorbell`.
    PbNeedDoorbell,
    /// Playback: the engine publishes the playback event area's `cons`.
    PbEventCons,
}

/// What a site must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Work normally.
    Proceed,
    /// The operation fails as if the address were not DMA-mapped.
    Fail,
    /// Flip a bit in the data just written.
    Corrupt,
    /// The interrupt message is lost.
    Drop,
    /// The register read returns all-ones.
    AllOnes,
    /// The register write is lost.
    Ignore,
    /// No progress for this long.
    Stall(Duration),
    /// The device hangs: no progress, no DMA, no interrupts, until a reset.
    Hang,
    /// Drop this many blocks at the source (as if the FIFO overflowed).
    DropBlocks(u64),
    /// The completion just filled in lies this way.
    Lie(CompletionLie),
    /// The flag is not published (left 0) though the device acts on it.
    Conceal,
    /// The index published is off by this much (wrapping): outside any ring.
    Skew(u32),
    /// The block goes to the wrong address; its completion says all is well.
    Stray(StrayTarget),
}

/// The completion `c` of a block of `block` bytes as `lie` reports it; `last_id` is the id
/// of the channel's previous completion, `lost_flag` the flag that goes with `lost_bytes`
/// on the channel (OVERFLOW for capture, UNDERRUN for playback).
pub fn apply_lie(
    lie: CompletionLie,
    mut c: crate::regs::Completion,
    block: u32,
    last_id: u16,
    lost_flag: u16,
) -> crate::regs::Completion {
    match lie {
        CompletionLie::ZeroLength => c.length = 0,
        CompletionLie::Short => c.length = (block / 2) & !7,
        CompletionLie::Long => c.length = block.saturating_mul(2),
        CompletionLie::UnknownId => c.id ^= 0x8000,
        CompletionLie::DuplicateId => c.id = last_id,
        CompletionLie::StalePhase => c.flags ^= crate::regs::comp::F_PHASE,
        CompletionLie::AbsurdLost => {
            c.flags |= lost_flag;
            c.lost_bytes = u64::MAX;
        }
    }
    c
}

/// A fault to arm: a fault of the catalogue (`acq_wire::faults`, the one definition the
/// scenario format and the harness share) and the channel it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The channel (only some faults have a playback form: [`CardFault::check`]).
    pub channel: Channel,
    /// The fault and its parameters.
    pub fault: CardFault,
}

impl Fault {
    /// `fault` on the capture channel.
    pub fn capture(fault: CardFault) -> Fault {
        Fault {
            channel: Channel::Capture,
            fault,
        }
    }

    /// `fault` on the playback channel.
    pub fn playback(fault: CardFault) -> Fault {
        Fault {
            channel: Channel::Playback,
            fault,
        }
    }

    /// The fault of an `inject` request (checked against the catalogue's limits).
    pub fn from_control(args: &ControlArgs) -> Result<Fault, String> {
        let (channel, fault) = CardFault::from_control(args)?;
        Ok(Fault { channel, fault })
    }
}

/// How far beyond the real index a `cons_lie` publishes `cons`: half the index space,
/// beyond every ring (at most 2^15 entries).
pub const CONS_LIE_SKEW: u32 = 1 << 31;

/// Faults armed and not yet used up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Data writes still to fail.
    pub dma_error: u64,
    /// Blocks still to corrupt.
    pub corrupt_data: u64,
    /// Interrupt messages still to lose.
    pub drop_irq: u64,
    /// Stall still to start, in milliseconds.
    pub stall_ms: u64,
    /// Blocks still to drop at the source.
    pub overflow: u64,
    /// The device is hung.
    pub hang: bool,
    /// Register reads still to return all-ones.
    pub bad_register_reads: u64,
    /// Playback block reads still to fail.
    pub pb_dma_error: u64,
    /// Playback blocks still to corrupt.
    pub pb_corrupt_data: u64,
    /// Vector-2 messages still to lose.
    pub pb_drop_irq: u64,
    /// Playback stall still to start, in milliseconds.
    pub pb_stall_ms: u64,
    /// Stops still to be slow, and how slow (milliseconds).
    pub slow_stop: u64,
    pub slow_stop_ms: u64,
    /// Data completions still to lie.
    pub bad_completion: u64,
    /// How they lie.
    pub bad_completion_kind: Option<CompletionLie>,
    /// Doorbell waits still to hide.
    pub doorbell_lie: u64,
    /// `cons` publications still to skew.
    pub cons_lie: u64,
    /// Blocks still to send astray, and where.
    pub stray_dma: u64,
    pub stray_target: Option<StrayTarget>,
    /// Playback doorbell waits still to hide.
    pub pb_doorbell_lie: u64,
    /// Playback `cons` publications still to skew.
    pub pb_cons_lie: u64,
    /// Playback completions still to lie.
    pub pb_bad_completion: u64,
    /// How they lie.
    pub pb_bad_completion_kind: Option<CompletionLie>,
}

impl Pending {
    fn any(&self) -> bool {
        *self != Pending::default()
    }
}

/// The device's fault plan.
#[derive(Debug, Default)]
pub struct FaultPlan {
    armed: AtomicBool,
    pending: Mutex<Pending>,
    fired: AtomicU64,
}

impl FaultPlan {
    /// An empty plan.
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms `fault`. Counts add up; a spurious interrupt is not armed here (the device sends
    /// it at once), so it is refused.
    pub fn inject(&self, fault: Fault) -> Result<(), String> {
        use CardFault as F;
        use Channel::{Capture, Playback};
        let mut p = self.lock();
        match (fault.channel, fault.fault) {
            (Capture, F::DmaError { count }) => p.dma_error = p.dma_error.saturating_add(count),
            (Capture, F::CorruptData { count }) => {
                p.corrupt_data = p.corrupt_data.saturating_add(count)
            }
            (Capture, F::DropIrq { count }) => p.drop_irq = p.drop_irq.saturating_add(count),
            (Capture, F::Stall { ms }) => p.stall_ms = p.stall_ms.max(ms),
            (Capture, F::Overflow { count }) => p.overflow = p.overflow.saturating_add(count),
            (Capture, F::Hang) => p.hang = true,
            (Capture, F::BadRegisterReads { count }) => {
                p.bad_register_reads = p.bad_register_reads.saturating_add(count)
            }
            (Capture, F::DoorbellLie { count }) => {
                p.doorbell_lie = p.doorbell_lie.saturating_add(count)
            }
            (Capture, F::ConsLie { count }) => p.cons_lie = p.cons_lie.saturating_add(count),
            (Capture, F::SlowStop { ms, count }) => {
                p.slow_stop = p.slow_stop.saturating_add(count);
                p.slow_stop_ms = ms;
            }
            (Capture, F::BadCompletion { kind, count }) => {
                // One kind at a time: a new kind replaces the count of the old one.
                if p.bad_completion_kind != Some(kind) {
                    p.bad_completion = 0;
                }
                p.bad_completion = p.bad_completion.saturating_add(count);
                p.bad_completion_kind = Some(kind);
            }
            (Capture, F::StrayDma { target, count }) => {
                if p.stray_target != Some(target) {
                    p.stray_dma = 0;
                }
                p.stray_dma = p.stray_dma.saturating_add(count);
                p.stray_target = Some(target);
            }
            (Playback, F::DmaError { count }) => {
                p.pb_dma_error = p.pb_dma_error.saturating_add(count)
            }
            (Playback, F::CorruptData { count }) => {
                p.pb_corrupt_data = p.pb_corrupt_data.saturating_add(count)
            }
            (Playback, F::DropIrq { count }) => p.pb_drop_irq = p.pb_drop_irq.saturating_add(count),
            (Playback, F::Stall { ms }) => p.pb_stall_ms = p.pb_stall_ms.max(ms),
            (Playback, F::DoorbellLie { count }) => {
                p.pb_doorbell_lie = p.pb_doorbell_lie.saturating_add(count)
            }
            (Playback, F::ConsLie { count }) => p.pb_cons_lie = p.pb_cons_lie.saturating_add(count),
            (Playback, F::BadCompletion { kind, count }) => {
                if p.pb_bad_completion_kind != Some(kind) {
                    p.pb_bad_completion = 0;
                }
                p.pb_bad_completion = p.pb_bad_completion.saturating_add(count);
                p.pb_bad_completion_kind = Some(kind);
            }
            (_, f @ (F::SpuriousIrq { .. } | F::IrqStorm { .. } | F::ConfigChange { .. })) => {
                return Err(format!("{} is not a pending fault", f.name()))
            }
            (Playback, f) => return Err(format!("fault `{}` has no playback form", f.name())),
        }
        self.armed.store(p.any(), Ordering::Release);
        Ok(())
    }

    /// Disarms everything (a reset does this too).
    pub fn clear(&self) {
        let mut p = self.lock();
        *p = Pending::default();
        self.armed.store(false, Ordering::Release);
    }

    /// What is still armed.
    pub fn pending(&self) -> Pending {
        self.lock().clone()
    }

    /// Number of times a fault took effect.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }

    /// True while the device is hung.
    pub fn hung(&self) -> bool {
        self.armed.load(Ordering::Acquire) && self.lock().hang
    }

    /// The hook: `site` asks what to do. Consumes one unit of a counted fault that applies.
    #[inline]
    pub fn hook(&self, site: Site) -> Action {
        if !self.armed.load(Ordering::Acquire) {
            return Action::Proceed;
        }
        self.hook_slow(site)
    }

    #[cold]
    fn hook_slow(&self, site: Site) -> Action {
        let mut p = self.lock();
        fn take(n: &mut u64) -> bool {
            if *n > 0 {
                *n -= 1;
                true
            } else {
                false
            }
        }
        let action = if p.hang {
            match site {
                Site::RegisterRead => Action::AllOnes,
                Site::RegisterWrite => Action::Ignore,
                Site::Interrupt | Site::PbInterrupt => Action::Drop,
                Site::Progress | Site::PbProgress => Action::Hang,
                Site::CompletionBody => Action::Proceed,
                Site::DescFetch
                | Site::DataWrite
                | Site::CompletionWrite
                | Site::PbDescFetch
                | Site::PbDataRead
                | Site::PbCompletionWrite => Action::Fail,
                Site::Source
                | Site::Stop
                | Site::NeedDoorbell
                | Site::EventCons
                | Site::PbCompletionBody
                | Site::PbNeedDoorbell
                | Site::PbEventCons => Action::Proceed,
            }
        } else {
            match site {
                Site::DataWrite if take(&mut p.dma_error) => Action::Fail,
                Site::DataWrite if take(&mut p.corrupt_data) => Action::Corrupt,
                Site::DataWrite if take(&mut p.stray_dma) => {
                    let target = p.stray_target.unwrap_or(StrayTarget::Unmapped);
                    if p.stray_dma == 0 {
                        p.stray_target = None;
                    }
                    Action::Stray(target)
                }
                Site::Interrupt if take(&mut p.drop_irq) => Action::Drop,
                Site::RegisterRead if take(&mut p.bad_register_reads) => Action::AllOnes,
                Site::Progress if p.stall_ms > 0 => {
                    let ms = std::mem::take(&mut p.stall_ms);
                    Action::Stall(Duration::from_millis(ms))
                }
                Site::Source if p.overflow > 0 => {
                    Action::DropBlocks(std::mem::take(&mut p.overflow))
                }
                Site::CompletionBody if take(&mut p.bad_completion) => {
                    let kind = p.bad_completion_kind.unwrap_or(CompletionLie::ZeroLength);
                    if p.bad_completion == 0 {
                        p.bad_completion_kind = None;
                    }
                    Action::Lie(kind)
                }
                Site::NeedDoorbell if take(&mut p.doorbell_lie) => Action::Conceal,
                Site::PbNeedDoorbell if take(&mut p.pb_doorbell_lie) => Action::Conceal,
                Site::PbEventCons if take(&mut p.pb_cons_lie) => Action::Skew(CONS_LIE_SKEW),
                Site::PbCompletionBody if take(&mut p.pb_bad_completion) => {
                    let kind = p
                        .pb_bad_completion_kind
                        .unwrap_or(CompletionLie::ZeroLength);
                    if p.pb_bad_completion == 0 {
                        p.pb_bad_completion_kind = None;
                    }
                    Action::Lie(kind)
                }
                Site::EventCons if take(&mut p.cons_lie) => Action::Skew(CONS_LIE_SKEW),
                Site::PbDataRead if take(&mut p.pb_dma_error) => Action::Fail,
                Site::PbDataRead if take(&mut p.pb_corrupt_data) => Action::Corrupt,
                // `drop_irq` without a channel loses messages on any vector.
                Site::PbInterrupt if take(&mut p.pb_drop_irq) || take(&mut p.drop_irq) => {
                    Action::Drop
                }
                Site::Stop if take(&mut p.slow_stop) => {
                    let ms = p.slow_stop_ms;
                    if p.slow_stop == 0 {
                        p.slow_stop_ms = 0;
                    }
                    Action::Stall(Duration::from_millis(ms))
                }
                Site::PbProgress if p.pb_stall_ms > 0 => {
                    let ms = std::mem::take(&mut p.pb_stall_ms);
                    Action::Stall(Duration::from_millis(ms))
                }
                _ => Action::Proceed,
            }
        };
        if action != Action::Proceed && !p.hang {
            self.fired.fetch_add(1, Ordering::Relaxed);
        }
        self.armed.store(p.any(), Ordering::Release);
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `inject` request on `channel` (what the control socket builds from its JSON).
    fn req(channel: Channel, fault: &str, count: Option<u64>, ms: Option<u64>) -> ControlArgs {
        ControlArgs {
            fault: fault.into(),
            channel: Some(channel),
            count,
            ms,
            ..ControlArgs::default()
        }
    }

    fn capture(fault: &str, count: Option<u64>, ms: Option<u64>) -> Result<Fault, String> {
        Fault::from_control(&req(Channel::Capture, fault, count, ms))
    }

    #[test]
    fn a_cons_lie_skews_the_next_publications_only() {
        let f = FaultPlan::new();
        f.inject(capture("cons_lie", Some(1), None).unwrap())
            .unwrap();
        assert_eq!(f.hook(Site::EventCons), Action::Skew(CONS_LIE_SKEW));
        assert_eq!(f.hook(Site::EventCons), Action::Proceed);
    }

    #[test]
    fn a_doorbell_lie_hides_the_next_doorbell_requests_only() {
        let f = FaultPlan::new();
        assert_eq!(f.hook(Site::NeedDoorbell), Action::Proceed);
        f.inject(capture("doorbell_lie", Some(2), None).unwrap())
            .unwrap();
        assert_eq!(f.hook(Site::NeedDoorbell), Action::Conceal);
        assert_eq!(f.hook(Site::DataWrite), Action::Proceed);
        assert_eq!(f.hook(Site::NeedDoorbell), Action::Conceal);
        assert_eq!(f.hook(Site::NeedDoorbell), Action::Proceed);
        assert_eq!(f.fired(), 2);
    }

    #[test]
    fn counted_faults_are_used_up() {
        let f = FaultPlan::new();
        assert_eq!(f.hook(Site::DataWrite), Action::Proceed);
        f.inject(Fault::capture(CardFault::DmaError { count: 2 }))
            .unwrap();
        assert_eq!(f.hook(Site::Interrupt), Action::Proceed);
        assert_eq!(f.hook(Site::DataWrite), Action::Fail);
        assert_eq!(f.hook(Site::DataWrite), Action::Fail);
        assert_eq!(f.hook(Site::DataWrite), Action::Proceed);
        assert_eq!(f.fired(), 2);
        f.inject(Fault::capture(CardFault::Overflow { count: 5 }))
            .unwrap();
        assert_eq!(f.hook(Site::Source), Action::DropBlocks(5));
        assert_eq!(f.hook(Site::Source), Action::Proceed);
    }

    #[test]
    fn slow_stops_are_counted_and_bounded() {
        let f = FaultPlan::new();
        let slow = capture("slow_stop", Some(2), Some(5));
        assert_eq!(
            slow,
            Ok(Fault::capture(CardFault::SlowStop { ms: 5, count: 2 }))
        );
        f.inject(slow.unwrap()).unwrap();
        assert_eq!(f.hook(Site::Stop), Action::Stall(Duration::from_millis(5)));
        assert_eq!(f.hook(Site::Stop), Action::Stall(Duration::from_millis(5)));
        assert_eq!(f.hook(Site::Stop), Action::Proceed);
        assert_eq!(f.pending(), Pending::default());
        let e = capture("slow_stop", None, None).unwrap_err();
        assert!(e.contains("needs `ms`"), "{e}");
        let e = capture("slow_stop", None, Some(SLOW_STOP_MS_MAX + 1)).unwrap_err();
        assert!(e.contains("above"), "{e}");
    }

    /// Counts from the control socket add up without overflowing (two requests of 2^64 - 1
    /// panicked a debug build of the model).
    #[test]
    fn counts_add_up_without_overflow() {
        let f = FaultPlan::new();
        for _ in 0..2 {
            f.inject(Fault::capture(CardFault::DmaError { count: u64::MAX }))
                .unwrap();
        }
        assert_eq!(f.pending().dma_error, u64::MAX);
    }

    #[test]
    fn hang_until_cleared() {
        let f = FaultPlan::new();
        f.inject(Fault::capture(CardFault::Hang)).unwrap();
        assert!(f.hung());
        assert_eq!(f.hook(Site::RegisterRead), Action::AllOnes);
        assert_eq!(f.hook(Site::RegisterRead), Action::AllOnes);
        assert_eq!(f.hook(Site::Progress), Action::Hang);
        f.clear();
        assert!(!f.hung());
        assert_eq!(f.hook(Site::RegisterRead), Action::Proceed);
    }

    /// Each channel's faults land on that channel's sites only.
    #[test]
    fn playback_faults_hit_the_playback_sites() {
        let f = FaultPlan::new();
        let pb = Fault::from_control(&req(Channel::Playback, "dma_error", Some(2), None));
        assert_eq!(pb, Ok(Fault::playback(CardFault::DmaError { count: 2 })));
        f.inject(pb.unwrap()).unwrap();
        assert_eq!(f.hook(Site::DataWrite), Action::Proceed);
        assert_eq!(f.hook(Site::PbDataRead), Action::Fail);
        let e = Fault::from_control(&req(Channel::Playback, "overflow", None, None)).unwrap_err();
        assert!(e.contains("playback"), "{e}");
        // A fault built without the catalogue's check is still refused, not armed.
        let e = f
            .inject(Fault::playback(CardFault::Overflow { count: 1 }))
            .unwrap_err();
        assert!(e.contains("no playback form"), "{e}");
    }

    #[test]
    fn counts_and_times_that_would_never_end_are_refused() {
        let e = capture("spurious_irq", Some(1_000_000_000_000), None).unwrap_err();
        assert!(e.contains("1000000000000") && e.contains("above"), "{e}");
        assert!(capture("spurious_irq", Some(SPURIOUS_IRQ_MAX), None).is_ok());
        // Instant + Duration::from_millis(u64::MAX) panics in the engine thread.
        let e = capture("stall", None, Some(u64::MAX)).unwrap_err();
        assert!(e.contains("`ms`"), "{e}");
        let e = Fault::from_control(&req(Channel::Playback, "stall", None, Some(u64::MAX)));
        assert!(e.is_err());
        let e = capture("irq_storm", Some(STORM_RATE_MAX + 1), Some(1)).unwrap_err();
        assert!(e.contains("per second"), "{e}");
        let e = capture("irq_storm", Some(1), Some(STORM_MS_MAX + 1)).unwrap_err();
        assert!(e.contains("`ms`"), "{e}");
    }
}
