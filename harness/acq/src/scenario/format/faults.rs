//! The fault timeline: when a fault fires, on which card and channel, and what it is
//! (docs/faults.md).

use super::*;

/// One fault on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Which card (for card faults; for `{"bytes": N}`, whose stream is meant).
    #[serde(default)]
    pub card: usize,
    /// Which capture disk, for the `disk_*` faults.
    #[serde(default)]
    pub disk: usize,
    /// When: `{"time_ms": N}` after the first step starts, `{"bytes": N}` when the card's
    /// stream reaches that offset (for a playback fault: when the card received that many
    /// bytes), or `{"step": N}` just before step N (counted from 0) starts.
    pub at: FaultAt,
    /// What (docs/faults.md says what the driver does about each).
    pub inject: Fault,
    /// The card channel it hits: `capture` (default) or `playback` (dma_error,
    /// corrupt_data, drop_irq and stall only).
    #[serde(default, skip_serializing_if = "Channel::is_capture")]
    pub channel: Channel,
}

/// A card's DMA channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Card -> host.
    #[default]
    Capture,
    /// Host -> card.
    Playback,
}

impl Channel {
    /// True for the default channel (not written out).
    pub fn is_capture(&self) -> bool {
        *self == Channel::Capture
    }
}

/// When a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum At {
    /// Milliseconds after the steps start.
    TimeMs(u64),
    /// When the card has produced this many bytes of its stream.
    Bytes(Size),
}

/// When a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAt {
    /// Milliseconds after the steps start.
    TimeMs(u64),
    /// When the card has produced this many bytes of its stream.
    Bytes(Size),
    /// Just before step N (counted from 0) starts, after every step before it ended (and
    /// before the driver is loaded again by an `exec`, say): a fault at probe or remove.
    Step(usize),
}

/// How a completion lies (the `bad_completion` fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompletionLie {
    /// `length` 0 without ERROR.
    ZeroLength,
    /// `length` half the block.
    Short,
    /// `length` twice the block.
    Long,
    /// An `id` no descriptor carried.
    UnknownId,
    /// The previous completion's `id` again.
    DuplicateId,
    /// The previous lap's phase bit: the record looks unwritten while the card goes on.
    StalePhase,
    /// OVERFLOW with `lost_bytes` = 2^64 - 1 though nothing was lost.
    AbsurdLost,
}

impl CompletionLie {
    /// The control-protocol name.
    pub fn name(self) -> &'static str {
        match self {
            CompletionLie::ZeroLength => "zero_length",
            CompletionLie::Short => "short",
            CompletionLie::Long => "long",
            CompletionLie::UnknownId => "unknown_id",
            CompletionLie::DuplicateId => "duplicate_id",
            CompletionLie::StalePhase => "stale_phase",
            CompletionLie::AbsurdLost => "absurd_lost",
        }
    }
}

/// Where a `stray_dma` block goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StrayTargetKind {
    /// The descriptor ring.
    DescRing,
    /// The event page.
    EventPage,
    /// An address no DMA map covers (behind an IOMMU: memory the driver never mapped).
    Unmapped,
}

impl StrayTargetKind {
    /// The control-protocol name.
    pub fn name(self) -> &'static str {
        match self {
            StrayTargetKind::DescRing => "desc_ring",
            StrayTargetKind::EventPage => "event_page",
            StrayTargetKind::Unmapped => "unmapped",
        }
    }
}

/// What a `config_change` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConfigChangeKind {
    /// Vendor and device ID become their bitwise complements.
    Ids,
    /// The class code becomes 0x020000 (an Ethernet controller).
    Class,
    /// The PCI Express capability's next pointer points at itself (a loop).
    CapList,
    /// BAR2 sizes twice as large.
    BarSize,
}

impl ConfigChangeKind {
    /// The control-protocol name.
    pub fn name(self) -> &'static str {
        match self {
            ConfigChangeKind::Ids => "ids",
            ConfigChangeKind::Class => "class",
            ConfigChangeKind::CapList => "cap_list",
            ConfigChangeKind::BarSize => "bar_size",
        }
    }
}

/// The fault catalogue (docs/faults.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// The next `count` completions carry an error.
    DmaError {
        /// How many.
        #[serde(default = "one")]
        count: u64,
    },
    /// Bit flips in the next `count` blocks: verification must catch them.
    CorruptData {
        /// How many blocks.
        #[serde(default = "one")]
        count: u64,
    },
    /// `count` interrupts are lost.
    DropIrq {
        /// How many.
        #[serde(default = "one")]
        count: u64,
    },
    /// `count` interrupts with nothing completed.
    SpuriousIrq {
        /// How many.
        #[serde(default = "one")]
        count: u64,
    },
    /// No progress for `ms` milliseconds.
    Stall {
        /// How long.
        ms: u64,
    },
    /// The next `count` stops of the capture engine take `ms` milliseconds: STATUS.RUNNING
    /// stays 1 that long (the spec allows 10 ms; at most 10,000).
    SlowStop {
        /// How long each stop takes.
        ms: u64,
        /// How many stops.
        #[serde(default = "one")]
        count: u64,
    },
    /// `count` blocks dropped as if the FIFO overflowed.
    Overflow {
        /// How many blocks.
        #[serde(default = "one")]
        count: u64,
    },
    /// The next `count` times the capture engine runs out of buffers it sleeps until a
    /// DOORBELL but leaves `need_doorbell` at 0 (firmware that forgot the flag).
    DoorbellLie {
        /// How many doorbell waits.
        #[serde(default = "one")]
        count: u64,
    },
    /// The next `count` times the capture engine publishes the event page's `cons`, the
    /// value is 2^31 beyond the real one (outside any ring); the completions are true.
    ConsLie {
        /// How many publications.
        #[serde(default = "one")]
        count: u64,
    },
    /// The device stops responding until it is reset.
    Hang,
    /// The card is hot-unplugged (QMP device_del) while streaming.
    SurpriseRemoval,
    /// The device is reset while streaming.
    Reset,
    /// The next `count` BAR0 reads return all-ones, as from a card fallen off the bus.
    BadRegisterReads {
        /// How many reads.
        #[serde(default = "one")]
        count: u64,
    },
    /// An interrupt storm: `rate` messages a second on `vector` for `ms` milliseconds,
    /// paced so that the VMM delivers them one by one (at most 200,000 a second, 60 s).
    IrqStorm {
        /// MSI-X vector (0 capture, 1 events, 2 playback).
        #[serde(default)]
        vector: u16,
        /// Messages per second.
        rate: u64,
        /// How long.
        ms: u64,
    },
    /// The next `count` data completions lie about the block the card wrote (a hostile
    /// or broken card; docs/faults.md says what the driver must do about each kind).
    BadCompletion {
        /// How they lie.
        kind: CompletionLie,
        /// How many completions.
        #[serde(default = "one")]
        count: u64,
    },
    /// Config space changes under the driver at once, and stays changed across resets
    /// (docs/faults.md, "Config space that changes").
    ConfigChange {
        /// What changes.
        kind: ConfigChangeKind,
    },
    /// The next `count` blocks go to `target` instead of their buffer; their completions
    /// say all is well (docs/faults.md, "DMA outside the posted buffer").
    StrayDma {
        /// Where they go.
        target: StrayTargetKind,
        /// How many blocks.
        #[serde(default = "one")]
        count: u64,
    },
    /// Capture disk: the next `count` write requests fail (EIO in the guest).
    DiskWriteError {
        /// How many requests.
        #[serde(default = "one")]
        count: u64,
    },
    /// Capture disk: full at `at` bytes: writes beyond it fail.
    DiskFull {
        /// Disk offset where it is full.
        at: Size,
    },
    /// Capture disk: at most this many bytes per second (0 removes the cap).
    DiskBandwidth {
        /// The cap.
        bytes_per_s: Size,
    },
    /// Capture disk: every request takes this much longer.
    DiskLatency {
        /// Added latency in microseconds.
        us: u64,
    },
    /// Capture disk: no request completes for `ms` milliseconds.
    DiskStall {
        /// How long.
        ms: u64,
    },
    /// Capture disk: the next `count` flushes fail.
    DiskFlushError {
        /// How many flushes.
        #[serde(default = "one")]
        count: u64,
    },
}

fn one() -> u64 {
    1
}

impl Fault {
    /// The request to the card model's control socket that injects this fault (capture
    /// channel; the caller adds `"channel": "playback"`). `None` for the faults that are
    /// not the card's: the capture disk's, and surprise removal (QMP).
    pub fn card_request(&self) -> Option<serde_json::Value> {
        use serde_json::json;
        Some(match *self {
            Fault::DmaError { count }
            | Fault::CorruptData { count }
            | Fault::DropIrq { count }
            | Fault::SpuriousIrq { count }
            | Fault::Overflow { count }
            | Fault::DoorbellLie { count }
            | Fault::ConsLie { count }
            | Fault::BadRegisterReads { count } => {
                json!({"cmd": "inject", "fault": self.name(), "count": count})
            }
            Fault::Stall { ms } => json!({"cmd": "inject", "fault": "stall", "ms": ms}),
            Fault::SlowStop { ms, count } => {
                json!({"cmd": "inject", "fault": "slow_stop", "ms": ms, "count": count})
            }
            Fault::IrqStorm { vector, rate, ms } => json!({
                "cmd": "inject", "fault": "irq_storm", "vector": vector, "count": rate, "ms": ms
            }),
            Fault::BadCompletion { kind, count } => json!({
                "cmd": "inject", "fault": "bad_completion", "kind": kind.name(), "count": count
            }),
            Fault::StrayDma { target, count } => json!({
                "cmd": "inject", "fault": "stray_dma", "kind": target.name(), "count": count
            }),
            Fault::ConfigChange { kind } => json!({
                "cmd": "inject", "fault": "config_change", "kind": kind.name()
            }),
            Fault::Hang => json!({"cmd": "inject", "fault": "hang"}),
            Fault::Reset => json!({"cmd": "reset"}),
            Fault::SurpriseRemoval
            | Fault::DiskWriteError { .. }
            | Fault::DiskFull { .. }
            | Fault::DiskBandwidth { .. }
            | Fault::DiskLatency { .. }
            | Fault::DiskStall { .. }
            | Fault::DiskFlushError { .. } => return None,
        })
    }

    /// The catalogue name (as in docs/faults.md and the model's control protocol).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::DmaError { .. } => "dma_error",
            Fault::CorruptData { .. } => "corrupt_data",
            Fault::DropIrq { .. } => "drop_irq",
            Fault::SpuriousIrq { .. } => "spurious_irq",
            Fault::Stall { .. } => "stall",
            Fault::SlowStop { .. } => "slow_stop",
            Fault::Overflow { .. } => "overflow",
            Fault::DoorbellLie { .. } => "doorbell_lie",
            Fault::ConsLie { .. } => "cons_lie",
            Fault::Hang => "hang",
            Fault::SurpriseRemoval => "surprise_removal",
            Fault::Reset => "reset",
            Fault::BadRegisterReads { .. } => "bad_register_reads",
            Fault::BadCompletion { .. } => "bad_completion",
            Fault::IrqStorm { .. } => "irq_storm",
            Fault::ConfigChange { .. } => "config_change",
            Fault::StrayDma { .. } => "stray_dma",
            Fault::DiskWriteError { .. } => "disk_write_error",
            Fault::DiskFull { .. } => "disk_full",
            Fault::DiskBandwidth { .. } => "disk_bandwidth",
            Fault::DiskLatency { .. } => "disk_latency",
            Fault::DiskStall { .. } => "disk_stall",
            Fault::DiskFlushError { .. } => "disk_flush_error",
        }
    }

    /// True for faults of a capture disk rather than a card.
    pub fn is_disk(&self) -> bool {
        self.name().starts_with("disk_")
    }
}
