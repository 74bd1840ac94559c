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

/// The channel a fault applies to (`"channel"` in the control protocol).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Channel {
    /// The capture channel (card -> host), the default.
    #[default]
    Capture,
    /// The playback channel (host -> card), v1.1.
    Playback,
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
    Lie(Lie),
    /// The flag is not published (left 0) though the device acts on it.
    Conceal,
    /// The index published is off by this much (wrapping): outside any ring.
    Skew(u32),
    /// The block goes to the wrong address; its completion says all is well.
    Stray(StrayTarget),
}

/// Where a stray block goes (the `stray_dma` fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StrayTarget {
    /// The descriptor ring (the driver's, writable by the card as coherent memory is).
    DescRing,
    /// The event page.
    EventPage,
    /// An address no DMA map covers: the first page after the highest one (behind an
    /// IOMMU, memory the driver never mapped; without one, beyond the guest's RAM).
    Unmapped,
}

impl StrayTarget {
    /// Every target.
    pub const ALL: [StrayTarget; 3] = [
        StrayTarget::DescRing,
        StrayTarget::EventPage,
        StrayTarget::Unmapped,
    ];

    /// The control-protocol name.
    pub fn name(self) -> &'static str {
        match self {
            StrayTarget::DescRing => "desc_ring",
            StrayTarget::EventPage => "event_page",
            StrayTarget::Unmapped => "unmapped",
        }
    }
}

/// How a completion lies about a block the card did write (the `bad_completion` fault;
/// docs/faults.md says what the driver must do about each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lie {
    /// `length` 0 on a completion without ERROR.
    ZeroLength,
    /// `length` half the block (the stream offsets stay the card's).
    Short,
    /// `length` twice the block: more than the buffer holds.
    Long,
    /// An `id` no descriptor carried.
    UnknownId,
    /// The `id` of the previous completion again.
    DuplicateId,
    /// The phase bit of the previous lap: the record looks unwritten, while the card
    /// goes on with the next ones (and the event page's `cons` says so).
    StalePhase,
    /// OVERFLOW with `lost_bytes` = 2^64 - 1, though nothing was lost.
    AbsurdLost,
}

impl Lie {
    /// Every kind, in the order docs/faults.md lists them.
    pub const ALL: [Lie; 7] = [
        Lie::ZeroLength,
        Lie::Short,
        Lie::Long,
        Lie::UnknownId,
        Lie::DuplicateId,
        Lie::StalePhase,
        Lie::AbsurdLost,
    ];

    /// Completion `c` of a block of `block` bytes, as this lie reports it; `last_id` is
    /// the id of the channel's previous completion, `lost_flag` the flag that goes with
    /// `lost_bytes` on the channel (OVERFLOW for capture, UNDERRUN for playback).
    pub fn apply(
        self,
        mut c: crate::regs::Completion,
        block: u32,
        last_id: u16,
        lost_flag: u16,
    ) -> crate::regs::Completion {
        match self {
            Lie::ZeroLength => c.length = 0,
            Lie::Short => c.length = (block / 2) & !7,
            Lie::Long => c.length = block.saturating_mul(2),
            Lie::UnknownId => c.id ^= 0x8000,
            Lie::DuplicateId => c.id = last_id,
            Lie::StalePhase => c.flags ^= crate::regs::comp::F_PHASE,
            Lie::AbsurdLost => {
                c.flags |= lost_flag;
                c.lost_bytes = u64::MAX;
            }
        }
        c
    }

    /// The control-protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Lie::ZeroLength => "zero_length",
            Lie::Short => "short",
            Lie::Long => "long",
            Lie::UnknownId => "unknown_id",
            Lie::DuplicateId => "duplicate_id",
            Lie::StalePhase => "stale_phase",
            Lie::AbsurdLost => "absurd_lost",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Result<Lie, String> {
        named(&Lie::ALL, Lie::name, "completion lie", name)
    }
}

/// How config space changes under the driver (the `config_change` fault). The change
/// is the card's new power-on state too: a function reset keeps it, as firmware that
/// rewrote its own configuration would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigChange {
    /// Vendor and device ID become their bitwise complements.
    Ids,
    /// The class code becomes 0x020000 (an Ethernet controller).
    Class,
    /// The PCI Express capability's next pointer points at itself: a loop.
    CapList,
    /// BAR2 sizes as twice as large.
    BarSize,
}

impl ConfigChange {
    /// Every kind.
    pub const ALL: [ConfigChange; 4] = [
        ConfigChange::Ids,
        ConfigChange::Class,
        ConfigChange::CapList,
        ConfigChange::BarSize,
    ];

    /// The control-protocol name.
    pub fn name(self) -> &'static str {
        match self {
            ConfigChange::Ids => "ids",
            ConfigChange::Class => "class",
            ConfigChange::CapList => "cap_list",
            ConfigChange::BarSize => "bar_size",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Result<ConfigChange, String> {
        named(
            &ConfigChange::ALL,
            ConfigChange::name,
            "config change",
            name,
        )
    }
}

/// A fault to arm, as named in the control protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next `count` data writes fail: ERROR completions with code DMA_WRITE.
    DmaError(u64),
    /// One bit is flipped in each of the next `count` blocks (completions look normal).
    CorruptData(u64),
    /// The next `count` interrupt messages are lost.
    DropIrq(u64),
    /// `count` interrupt messages without a cause, sent at once on `vector`.
    SpuriousIrq {
        /// Number of messages.
        count: u64,
        /// Vector they are sent on.
        vector: u16,
    },
    /// An interrupt storm: messages on `vector` at `rate` per second for `ms`
    /// milliseconds, paced (a burst would reach the guest as a handful: the VMM reads an
    /// eventfd once for all the writes before it).
    IrqStorm {
        /// Vector they are sent on.
        vector: u16,
        /// Messages per second.
        rate: u64,
        /// How long.
        ms: u64,
    },
    /// The engine makes no progress for this many milliseconds (the source keeps running).
    Stall(u64),
    /// The next `count` blocks the source produces are dropped (counted as overflow).
    Overflow(u64),
    /// The device stops responding until a reset (FLR, vfio-user reset, control `reset`).
    Hang,
    /// The next `count` BAR0 reads return all-ones.
    BadRegisterReads(u64),
    /// Playback: the next `count` block reads fail: ERROR completions with code DMA_READ.
    PbDmaError(u64),
    /// Playback: one bit is flipped in each of the next `count` blocks the card receives
    /// (the card's verifier counts them as mismatches).
    PbCorruptData(u64),
    /// Playback: the next `count` vector-2 messages are lost.
    PbDropIrq(u64),
    /// Playback: the playback engine makes no progress for this many milliseconds (the
    /// output keeps playing, so it may underrun).
    PbStall(u64),
    /// Playback: the next `count` times the engine runs out of buffers it sleeps until
    /// a PB_DOORBELL but leaves `need_doorbell` (playback event area and PB_STATUS) at 0.
    PbDoorbellLie(u64),
    /// Playback: the next `count` publications of the playback `cons` are 2^31 off.
    PbConsLie(u64),
    /// Playback: the next `count` completions lie (`kind`).
    PbBadCompletion {
        /// How.
        kind: Lie,
        /// How many completions.
        count: u64,
    },
    /// The next `count` stops of the capture engine leave STATUS.RUNNING at 1 for `ms`
    /// milliseconds after the engine stopped (the spec allows up to 10 ms).
    SlowStop {
        /// How long RUNNING stays set.
        ms: u64,
        /// How many stops.
        count: u64,
    },
    /// The next `count` times the capture engine runs out of buffers, it sleeps until a
    /// DOORBELL but leaves `need_doorbell` (event page and STATUS) at 0: firmware that
    /// forgot to publish the flag. Only a DOORBELL the driver writes anyway wakes it.
    DoorbellLie(u64),
    /// The next `count` times the capture engine publishes the event page's `cons`, it
    /// writes a value 2^31 beyond the real one (far outside the ring); the completions
    /// themselves are true.
    ConsLie(u64),
    /// The next `count` data completions lie (`kind`).
    BadCompletion {
        /// How.
        kind: Lie,
        /// How many completions.
        count: u64,
    },
    /// Config space changes at once (`kind`); not a pending fault.
    ConfigChange(ConfigChange),
    /// The next `count` blocks are written to `target` instead of their buffer, and
    /// their completions say all is well.
    StrayDma {
        /// Where they go.
        target: StrayTarget,
        /// How many blocks.
        count: u64,
    },
}

/// The parameters of an `inject` request (absent ones are `None`).
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultArgs<'a> {
    /// `count` (for `irq_storm`: messages per second).
    pub count: Option<u64>,
    /// `ms`.
    pub ms: Option<u64>,
    /// `vector`.
    pub vector: Option<u64>,
    /// `kind` (`bad_completion`).
    pub kind: Option<&'a str>,
}

impl Fault {
    /// Builds a capture fault from its control-protocol name and parameters.
    pub fn parse(
        name: &str,
        count: Option<u64>,
        ms: Option<u64>,
        vector: Option<u64>,
    ) -> Result<Fault, String> {
        let args = FaultArgs {
            count,
            ms,
            vector,
            kind: None,
        };
        Fault::parse_on(Channel::Capture, name, &args)
    }

    /// Builds a fault for `channel` from its control-protocol name and parameters.
    pub fn parse_on(channel: Channel, name: &str, a: &FaultArgs<'_>) -> Result<Fault, String> {
        let (ms, vector) = (a.ms, a.vector);
        let count = || a.count.unwrap_or(1);
        if channel == Channel::Playback {
            return Ok(match name {
                "dma_error" => Fault::PbDmaError(count()),
                "corrupt_data" => Fault::PbCorruptData(count()),
                "drop_irq" => Fault::PbDropIrq(count()),
                "stall" => Fault::PbStall(stall_ms(ms)?),
                "doorbell_lie" => Fault::PbDoorbellLie(count()),
                "cons_lie" => Fault::PbConsLie(count()),
                "bad_completion" => Fault::PbBadCompletion {
                    kind: lie_kind(a.kind)?,
                    count: count(),
                },
                other => {
                    return Err(format!(
                        "fault `{other}` has no playback form (playback: dma_error, \
                         corrupt_data, drop_irq, stall, doorbell_lie, cons_lie, bad_completion)"
                    ))
                }
            });
        }
        Ok(match name {
            "dma_error" => Fault::DmaError(count()),
            "corrupt_data" => Fault::CorruptData(count()),
            "drop_irq" => Fault::DropIrq(count()),
            "spurious_irq" => Fault::SpuriousIrq {
                count: match count() {
                    n if n <= SPURIOUS_IRQ_MAX => n,
                    n => {
                        return Err(format!(
                            "`count` {n} is above {SPURIOUS_IRQ_MAX}: spurious interrupts \
                             are sent while the request waits for its answer"
                        ))
                    }
                },
                vector: u16::try_from(vector.unwrap_or(0))
                    .map_err(|_| "`vector` is out of range".to_string())?,
            },
            "irq_storm" => {
                let rate = a
                    .count
                    .ok_or("`irq_storm` needs `count` (messages per second)")?;
                let ms = ms.ok_or("`irq_storm` needs `ms` (its duration)")?;
                if rate == 0 || rate > STORM_RATE_MAX {
                    return Err(format!(
                        "`count` {rate} is not in 1..={STORM_RATE_MAX} per second"
                    ));
                }
                if ms > STORM_MS_MAX {
                    return Err(format!("`ms` {ms} is above {STORM_MS_MAX}"));
                }
                Fault::IrqStorm {
                    vector: u16::try_from(vector.unwrap_or(0))
                        .map_err(|_| "`vector` is out of range".to_string())?,
                    rate,
                    ms,
                }
            }
            "stall" => Fault::Stall(stall_ms(ms)?),
            "bad_completion" => Fault::BadCompletion {
                kind: lie_kind(a.kind)?,
                count: count(),
            },
            "slow_stop" => Fault::SlowStop {
                ms: match ms {
                    None => return Err("`slow_stop` needs `ms` (milliseconds)".into()),
                    Some(ms) if ms > SLOW_STOP_MS_MAX => {
                        return Err(format!("`ms` {ms} is above {SLOW_STOP_MS_MAX}"))
                    }
                    Some(ms) => ms,
                },
                count: count(),
            },
            "overflow" => Fault::Overflow(count()),
            "doorbell_lie" => Fault::DoorbellLie(count()),
            "cons_lie" => Fault::ConsLie(count()),
            "config_change" => Fault::ConfigChange(ConfigChange::parse(need_kind(
                "config_change",
                a.kind,
                &ConfigChange::ALL,
                ConfigChange::name,
            )?)?),
            "stray_dma" => {
                let name = need_kind("stray_dma", a.kind, &StrayTarget::ALL, StrayTarget::name)?;
                Fault::StrayDma {
                    target: named(
                        &StrayTarget::ALL,
                        StrayTarget::name,
                        "stray_dma target",
                        name,
                    )?,
                    count: count(),
                }
            }
            "hang" => Fault::Hang,
            "bad_register_reads" => Fault::BadRegisterReads(count()),
            other => {
                return Err(format!(
                "unknown fault `{other}` (known: dma_error, corrupt_data, drop_irq, spurious_irq, \
                     irq_storm, stall, slow_stop, overflow, doorbell_lie, cons_lie, hang, \
                     bad_register_reads, bad_completion, config_change, stray_dma)"
            ))
            }
        })
    }
}

/// The `kind` of a `bad_completion`.
fn lie_kind(kind: Option<&str>) -> Result<Lie, String> {
    Lie::parse(need_kind("bad_completion", kind, &Lie::ALL, Lie::name)?)
}

/// The string `kind` a fault needs, or an error that lists the ones there are.
fn need_kind<'a, T: Copy>(
    fault: &str,
    kind: Option<&'a str>,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<&'a str, String> {
    kind.ok_or_else(|| format!("`{fault}` needs a string `kind` ({})", known(all, name)))
}

/// The one of `all` whose control-protocol name is `wanted`.
fn named<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
    wanted: &str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|t| name(*t) == wanted)
        .ok_or_else(|| format!("unknown {what} `{wanted}` (known: {})", known(all, name)))
}

/// The control-protocol names of `all`, for an error message.
fn known<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> String {
    all.iter().map(|t| name(*t)).collect::<Vec<_>>().join(", ")
}

/// How far beyond the real index a `cons_lie` publishes `cons`: half the index space,
/// beyond every ring (at most 2^15 entries).
pub const CONS_LIE_SKEW: u32 = 1 << 31;

/// The most spurious interrupts one request sends. They are sent before the request is
/// answered, so the bound keeps every request short (a million is about a second).
pub const SPURIOUS_IRQ_MAX: u64 = 1 << 20;

/// The fastest interrupt storm (messages per second).
pub const STORM_RATE_MAX: u64 = 200_000;
/// The longest interrupt storm, in milliseconds.
pub const STORM_MS_MAX: u64 = 60_000;

/// The longest slow stop (ten seconds: a thousand times what the spec allows).
pub const SLOW_STOP_MS_MAX: u64 = 10_000;

/// The longest stall one fault makes (an hour; longer ones are a `hang`).
pub const STALL_MS_MAX: u64 = 3_600_000;

fn stall_ms(ms: Option<u64>) -> Result<u64, String> {
    match ms {
        None => Err("`stall` needs `ms` (milliseconds)".into()),
        Some(ms) if ms > STALL_MS_MAX => Err(format!(
            "`ms` {ms} is above {STALL_MS_MAX} (an hour; a card that never resumes is `hang`)"
        )),
        Some(ms) => Ok(ms),
    }
}

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
    pub bad_completion_kind: Option<Lie>,
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
    pub pb_bad_completion_kind: Option<Lie>,
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
        let mut p = self.lock();
        match fault {
            Fault::DmaError(n) => p.dma_error += n,
            Fault::CorruptData(n) => p.corrupt_data += n,
            Fault::DropIrq(n) => p.drop_irq += n,
            Fault::Stall(ms) => p.stall_ms = p.stall_ms.max(ms),
            Fault::Overflow(n) => p.overflow += n,
            Fault::Hang => p.hang = true,
            Fault::BadRegisterReads(n) => p.bad_register_reads += n,
            Fault::DoorbellLie(n) => p.doorbell_lie += n,
            Fault::ConsLie(n) => p.cons_lie += n,
            Fault::PbDmaError(n) => p.pb_dma_error += n,
            Fault::PbCorruptData(n) => p.pb_corrupt_data += n,
            Fault::PbDropIrq(n) => p.pb_drop_irq += n,
            Fault::PbStall(ms) => p.pb_stall_ms = p.pb_stall_ms.max(ms),
            Fault::PbDoorbellLie(n) => p.pb_doorbell_lie += n,
            Fault::PbConsLie(n) => p.pb_cons_lie += n,
            Fault::PbBadCompletion { kind, count } => {
                if p.pb_bad_completion_kind != Some(kind) {
                    p.pb_bad_completion = 0;
                }
                p.pb_bad_completion += count;
                p.pb_bad_completion_kind = Some(kind);
            }
            Fault::SlowStop { ms, count } => {
                p.slow_stop += count;
                p.slow_stop_ms = ms;
            }
            Fault::BadCompletion { kind, count } => {
                // One kind at a time: a new kind replaces the count of the old one.
                if p.bad_completion_kind != Some(kind) {
                    p.bad_completion = 0;
                }
                p.bad_completion += count;
                p.bad_completion_kind = Some(kind);
            }
            Fault::SpuriousIrq { .. } => return Err("spurious_irq is not a pending fault".into()),
            Fault::IrqStorm { .. } => return Err("irq_storm is not a pending fault".into()),
            Fault::ConfigChange(_) => return Err("config_change is not a pending fault".into()),
            Fault::StrayDma { target, count } => {
                if p.stray_target != Some(target) {
                    p.stray_dma = 0;
                }
                p.stray_dma += count;
                p.stray_target = Some(target);
            }
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
                    let kind = p.bad_completion_kind.unwrap_or(Lie::ZeroLength);
                    if p.bad_completion == 0 {
                        p.bad_completion_kind = None;
                    }
                    Action::Lie(kind)
                }
                Site::NeedDoorbell if take(&mut p.doorbell_lie) => Action::Conceal,
                Site::PbNeedDoorbell if take(&mut p.pb_doorbell_lie) => Action::Conceal,
                Site::PbEventCons if take(&mut p.pb_cons_lie) => Action::Skew(CONS_LIE_SKEW),
                Site::PbCompletionBody if take(&mut p.pb_bad_completion) => {
                    let kind = p.pb_bad_completion_kind.unwrap_or(Lie::ZeroLength);
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

    #[test]
    fn a_cons_lie_skews_the_next_publications_only() {
        let f = FaultPlan::new();
        f.inject(Fault::parse("cons_lie", Some(1), None, None).unwrap())
            .unwrap();
        assert_eq!(f.hook(Site::EventCons), Action::Skew(CONS_LIE_SKEW));
        assert_eq!(f.hook(Site::EventCons), Action::Proceed);
    }

    #[test]
    fn a_doorbell_lie_hides_the_next_doorbell_requests_only() {
        let f = FaultPlan::new();
        assert_eq!(f.hook(Site::NeedDoorbell), Action::Proceed);
        f.inject(Fault::parse("doorbell_lie", Some(2), None, None).unwrap())
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
        f.inject(Fault::DmaError(2)).unwrap();
        assert_eq!(f.hook(Site::Interrupt), Action::Proceed);
        assert_eq!(f.hook(Site::DataWrite), Action::Fail);
        assert_eq!(f.hook(Site::DataWrite), Action::Fail);
        assert_eq!(f.hook(Site::DataWrite), Action::Proceed);
        assert_eq!(f.fired(), 2);
        f.inject(Fault::Overflow(5)).unwrap();
        assert_eq!(f.hook(Site::Source), Action::DropBlocks(5));
        assert_eq!(f.hook(Site::Source), Action::Proceed);
    }

    #[test]
    fn slow_stops_are_counted_and_bounded() {
        let f = FaultPlan::new();
        let args = |count, ms| FaultArgs {
            count,
            ms,
            ..Default::default()
        };
        let slow = Fault::parse_on(Channel::Capture, "slow_stop", &args(Some(2), Some(5)));
        assert_eq!(slow, Ok(Fault::SlowStop { ms: 5, count: 2 }));
        f.inject(slow.unwrap()).unwrap();
        assert_eq!(f.hook(Site::Stop), Action::Stall(Duration::from_millis(5)));
        assert_eq!(f.hook(Site::Stop), Action::Stall(Duration::from_millis(5)));
        assert_eq!(f.hook(Site::Stop), Action::Proceed);
        assert_eq!(f.pending(), Pending::default());
        let e = Fault::parse_on(Channel::Capture, "slow_stop", &args(None, None)).unwrap_err();
        assert!(e.contains("needs `ms`"), "{e}");
        let e = Fault::parse_on(
            Channel::Capture,
            "slow_stop",
            &args(None, Some(SLOW_STOP_MS_MAX + 1)),
        )
        .unwrap_err();
        assert!(e.contains("above"), "{e}");
    }

    #[test]
    fn hang_until_cleared() {
        let f = FaultPlan::new();
        f.inject(Fault::Hang).unwrap();
        assert!(f.hung());
        assert_eq!(f.hook(Site::RegisterRead), Action::AllOnes);
        assert_eq!(f.hook(Site::RegisterRead), Action::AllOnes);
        assert_eq!(f.hook(Site::Progress), Action::Hang);
        f.clear();
        assert!(!f.hung());
        assert_eq!(f.hook(Site::RegisterRead), Action::Proceed);
    }

    #[test]
    fn parse_names() {
        assert_eq!(
            Fault::parse("dma_error", Some(3), None, None),
            Ok(Fault::DmaError(3))
        );
        assert_eq!(
            Fault::parse("stall", None, Some(20), None),
            Ok(Fault::Stall(20))
        );
        assert!(Fault::parse("stall", None, None, None).is_err());
        assert_eq!(
            Fault::parse_on(
                Channel::Playback,
                "dma_error",
                &FaultArgs {
                    count: Some(2),
                    ..FaultArgs::default()
                }
            ),
            Ok(Fault::PbDmaError(2))
        );
        assert!(
            Fault::parse_on(Channel::Playback, "overflow", &FaultArgs::default())
                .unwrap_err()
                .contains("playback")
        );
        assert!(Fault::parse("melt", None, None, None)
            .unwrap_err()
            .contains("melt"));
    }

    #[test]
    fn irq_storms_are_bounded() {
        assert_eq!(
            Fault::parse("irq_storm", Some(20_000), Some(3000), Some(2)),
            Ok(Fault::IrqStorm {
                vector: 2,
                rate: 20_000,
                ms: 3000
            })
        );
        for (count, ms) in [(None, Some(1)), (Some(1), None), (Some(0), Some(1))] {
            assert!(Fault::parse("irq_storm", count, ms, None).is_err());
        }
        let e = Fault::parse("irq_storm", Some(STORM_RATE_MAX + 1), Some(1), None).unwrap_err();
        assert!(e.contains("per second"), "{e}");
        let e = Fault::parse("irq_storm", Some(1), Some(STORM_MS_MAX + 1), None).unwrap_err();
        assert!(e.contains("`ms`"), "{e}");
    }

    #[test]
    fn counts_and_times_that_would_never_end_are_refused() {
        let e = Fault::parse("spurious_irq", Some(1_000_000_000_000), None, None).unwrap_err();
        assert!(e.contains("1000000000000") && e.contains("above"), "{e}");
        assert!(Fault::parse("spurious_irq", Some(SPURIOUS_IRQ_MAX), None, None).is_ok());
        // Instant + Duration::from_millis(u64::MAX) panics in the engine thread.
        let e = Fault::parse("stall", None, Some(u64::MAX), None).unwrap_err();
        assert!(e.contains("`ms`"), "{e}");
        let long = FaultArgs {
            ms: Some(u64::MAX),
            ..FaultArgs::default()
        };
        let e = Fault::parse_on(Channel::Playback, "stall", &long);
        assert!(e.is_err());
    }
}
