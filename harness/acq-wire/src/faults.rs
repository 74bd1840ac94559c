//! The fault catalogue, defined once: every fault a scenario can inject into a card or a
//! capture disk, with its name, parameters, defaults and limits.
//!
//! The scenario format (harness) deserializes these types as they are; the card's control
//! socket (acq-device) and the capture disk's (acq-sink) parse their `inject` requests into
//! them ([`CardFault::from_control`], [`DiskFault::from_control`]), and the harness writes
//! those requests from them ([`CardFault::control`], [`DiskFault::control`]). A fault the
//! catalogue refuses is refused the same way by `acq check` and by the model.
//! docs/faults.md says what each fault does and what a driver must do about it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::Size;

/// The most spurious interrupts one request sends. They are sent before the request is
/// answered, so the bound keeps every request short (a million is about a second).
pub const SPURIOUS_IRQ_MAX: u64 = 1 << 20;
/// The fastest interrupt storm (messages per second), and its longest duration.
pub const STORM_RATE_MAX: u64 = 200_000;
pub const STORM_MS_MAX: u64 = 60_000;
/// The slowest `slow_stop` (the spec allows 10 ms; this is a thousand times that).
pub const SLOW_STOP_MS_MAX: u64 = 10_000;
/// The longest `stall` (an hour; a card that never resumes is `hang`).
pub const STALL_MS_MAX: u64 = 3_600_000;

/// A card's DMA channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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

    /// The control-protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Capture => "capture",
            Channel::Playback => "playback",
        }
    }

    /// The channel named `name`.
    pub fn parse(name: &str) -> Result<Channel, String> {
        named(
            &[Channel::Capture, Channel::Playback],
            Channel::name,
            "channel",
            name,
        )
    }
}

/// Defines a fieldless kind enum with its control-protocol names and `ALL`, `name()` and
/// `parse()`: the names are written once, here, for serde, the control socket and errors.
macro_rules! kinds {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v,)+
        }

        impl $name {
            /// Every kind, in catalogue order.
            pub const ALL: &'static [$name] = &[$($name::$v,)+];

            /// The control-protocol (and scenario) name.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }

            /// The kind named `name`, or an error that lists the ones there are.
            pub fn parse(name: &str) -> Result<$name, String> {
                named($name::ALL, $name::name, $what, name)
            }
        }
    };
}

kinds! {
    /// How a completion lies about a block the card did move (the `bad_completion` fault;
    /// docs/faults.md says what the driver must do about each).
    CompletionLie, "completion lie" {
        /// `length` 0 on a completion without ERROR.
        ZeroLength = "zero_length",
        /// `length` half the block (the stream offsets stay the card's).
        Short = "short",
        /// `length` twice the block: more than the buffer holds.
        Long = "long",
        /// An `id` no descriptor carried.
        UnknownId = "unknown_id",
        /// The `id` of the previous completion again.
        DuplicateId = "duplicate_id",
        /// The phase bit of the previous lap: the record looks unwritten, while the card
        /// goes on with the next ones (and the event page's `cons` says so).
        StalePhase = "stale_phase",
        /// OVERFLOW (UNDERRUN on playback) with `lost_bytes` = 2^64 - 1, though nothing
        /// was lost.
        AbsurdLost = "absurd_lost",
    }
}

kinds! {
    /// Where a `stray_dma` block goes.
    StrayTarget, "stray_dma target" {
        /// The descriptor ring (the driver's, writable by the card as coherent memory is).
        DescRing = "desc_ring",
        /// The event page.
        EventPage = "event_page",
        /// An address no DMA map covers: the first page after the highest one (behind an
        /// IOMMU, memory the driver never mapped; without one, beyond the guest's RAM).
        Unmapped = "unmapped",
    }
}

kinds! {
    /// How config space changes under the driver (the `config_change` fault). The change
    /// is the card's new power-on state too: a function reset keeps it, as firmware that
    /// rewrote its own configuration would.
    ConfigChange, "config change" {
        /// Vendor and device ID become their bitwise complements.
        Ids = "ids",
        /// The class code becomes 0x020000 (an Ethernet controller).
        Class = "class",
        /// The PCI Express capability's next pointer points at itself: a loop.
        CapList = "cap_list",
        /// BAR2 sizes twice as large.
        BarSize = "bar_size",
    }
}

fn one() -> u64 {
    1
}

/// A fault of the card (docs/faults.md, "Card faults").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CardFault {
    /// The next `count` block transfers fail: ERROR completions (DMA_WRITE on capture,
    /// DMA_READ on playback).
    DmaError {
        /// How many blocks.
        #[serde(default = "one")]
        count: u64,
    },
    /// One bit is flipped in each of the next `count` blocks; the completions look normal
    /// (on playback the card's verifier counts them as mismatches).
    CorruptData {
        /// How many blocks.
        #[serde(default = "one")]
        count: u64,
    },
    /// The next `count` interrupt messages of the channel are lost.
    DropIrq {
        /// How many.
        #[serde(default = "one")]
        count: u64,
    },
    /// `count` interrupt messages with nothing completed, sent at once on `vector`.
    SpuriousIrq {
        /// How many (at most 2^20).
        #[serde(default = "one")]
        count: u64,
        /// MSI-X vector (0 capture, 1 events, 2 playback).
        #[serde(default)]
        vector: u16,
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
    /// The channel's engine makes no progress for `ms` milliseconds (the source keeps
    /// sampling; on playback the output keeps playing and may underrun). At most an hour.
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
    /// The next `count` blocks the source produces are dropped, as if the FIFO overflowed.
    Overflow {
        /// How many blocks.
        #[serde(default = "one")]
        count: u64,
    },
    /// The next `count` times the engine runs out of buffers it sleeps until a DOORBELL
    /// but leaves `need_doorbell` at 0 (firmware that forgot the flag): only a doorbell
    /// the driver writes anyway wakes it.
    DoorbellLie {
        /// How many doorbell waits.
        #[serde(default = "one")]
        count: u64,
    },
    /// The next `count` times the engine publishes the event area's `cons`, the value is
    /// 2^31 beyond the real one (outside any ring); the completions are true.
    ConsLie {
        /// How many publications.
        #[serde(default = "one")]
        count: u64,
    },
    /// The device stops responding until it is reset.
    Hang,
    /// The next `count` BAR0 reads return all-ones, as from a card fallen off the bus.
    BadRegisterReads {
        /// How many reads.
        #[serde(default = "one")]
        count: u64,
    },
    /// The next `count` data completions lie about the block the card moved (a hostile or
    /// broken card; docs/faults.md says what the driver must do about each kind).
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
        kind: ConfigChange,
    },
    /// The next `count` blocks go to `target` instead of their buffer; their completions
    /// say all is well (docs/faults.md, "DMA outside the posted buffer").
    StrayDma {
        /// Where they go.
        target: StrayTarget,
        /// How many blocks.
        #[serde(default = "one")]
        count: u64,
    },
}

/// The parameters of an `inject` request to the card's control socket, as the wire carries
/// them (absent ones are `None`): what [`CardFault::control`] writes and
/// [`CardFault::from_control`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlArgs {
    /// The fault's name.
    pub fault: String,
    /// The channel (`None`: capture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// `count` (for `irq_storm`: messages per second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// `vector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<u64>,
    /// `kind` (`bad_completion`, `config_change`, `stray_dma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl CardFault {
    /// Every name, in catalogue order.
    pub const NAMES: &'static [&'static str] = &[
        "dma_error",
        "corrupt_data",
        "drop_irq",
        "spurious_irq",
        "irq_storm",
        "stall",
        "slow_stop",
        "overflow",
        "doorbell_lie",
        "cons_lie",
        "hang",
        "bad_register_reads",
        "bad_completion",
        "config_change",
        "stray_dma",
    ];

    /// The faults that also have a playback form (`"channel": "playback"`).
    pub const PLAYBACK: &'static [&'static str] = &[
        "dma_error",
        "corrupt_data",
        "drop_irq",
        "stall",
        "doorbell_lie",
        "cons_lie",
        "bad_completion",
    ];

    /// The catalogue name.
    pub fn name(&self) -> &'static str {
        match self {
            CardFault::DmaError { .. } => "dma_error",
            CardFault::CorruptData { .. } => "corrupt_data",
            CardFault::DropIrq { .. } => "drop_irq",
            CardFault::SpuriousIrq { .. } => "spurious_irq",
            CardFault::IrqStorm { .. } => "irq_storm",
            CardFault::Stall { .. } => "stall",
            CardFault::SlowStop { .. } => "slow_stop",
            CardFault::Overflow { .. } => "overflow",
            CardFault::DoorbellLie { .. } => "doorbell_lie",
            CardFault::ConsLie { .. } => "cons_lie",
            CardFault::Hang => "hang",
            CardFault::BadRegisterReads { .. } => "bad_register_reads",
            CardFault::BadCompletion { .. } => "bad_completion",
            CardFault::ConfigChange { .. } => "config_change",
            CardFault::StrayDma { .. } => "stray_dma",
        }
    }

    /// Checks that the fault named `name` exists on `channel` (only some faults have a
    /// playback form).
    pub fn check_channel(name: &str, channel: Channel) -> Result<(), String> {
        if channel == Channel::Playback && !CardFault::PLAYBACK.contains(&name) {
            return Err(format!(
                "fault `{name}` has no playback form (playback: {})",
                CardFault::PLAYBACK.join(", ")
            ));
        }
        Ok(())
    }

    /// Checks the fault against `channel` ([`CardFault::check_channel`]) and its limits.
    /// The error says what is wrong and what would be right.
    pub fn check(&self, channel: Channel) -> Result<(), String> {
        CardFault::check_channel(self.name(), channel)?;
        self.check_limits()
    }

    /// Checks the fault's parameters against their limits.
    pub fn check_limits(&self) -> Result<(), String> {
        match *self {
            CardFault::SpuriousIrq { count, .. } if count > SPURIOUS_IRQ_MAX => Err(format!(
                "`count` {count} is above {SPURIOUS_IRQ_MAX}: spurious interrupts are sent \
                 while the request waits for its answer"
            )),
            CardFault::IrqStorm { rate, .. } if rate == 0 || rate > STORM_RATE_MAX => Err(format!(
                "`rate` {rate} is not in 1..={STORM_RATE_MAX} messages per second (in a \
                 control request, `count`)"
            )),
            CardFault::IrqStorm { ms, .. } if ms > STORM_MS_MAX => {
                Err(format!("`ms` {ms} is above {STORM_MS_MAX}"))
            }
            CardFault::SlowStop { ms, .. } if ms > SLOW_STOP_MS_MAX => {
                Err(format!("`ms` {ms} is above {SLOW_STOP_MS_MAX}"))
            }
            CardFault::Stall { ms } if ms > STALL_MS_MAX => Err(format!(
                "`ms` {ms} is above {STALL_MS_MAX} (an hour; a card that never resumes is \
                 `hang`)"
            )),
            _ => Ok(()),
        }
    }

    /// The `inject` request that arms this fault on `channel` (without `"cmd"`).
    pub fn control(&self, channel: Channel) -> ControlArgs {
        let mut a = ControlArgs {
            fault: self.name().into(),
            channel: (channel != Channel::Capture).then_some(channel),
            ..ControlArgs::default()
        };
        match *self {
            CardFault::DmaError { count }
            | CardFault::CorruptData { count }
            | CardFault::DropIrq { count }
            | CardFault::Overflow { count }
            | CardFault::DoorbellLie { count }
            | CardFault::ConsLie { count }
            | CardFault::BadRegisterReads { count } => a.count = Some(count),
            CardFault::SpuriousIrq { count, vector } => {
                a.count = Some(count);
                a.vector = Some(vector.into());
            }
            CardFault::IrqStorm { vector, rate, ms } => {
                a.vector = Some(vector.into());
                a.count = Some(rate);
                a.ms = Some(ms);
            }
            CardFault::Stall { ms } => a.ms = Some(ms),
            CardFault::SlowStop { ms, count } => {
                a.ms = Some(ms);
                a.count = Some(count);
            }
            CardFault::Hang => {}
            CardFault::BadCompletion { kind, count } => {
                a.kind = Some(kind.name().into());
                a.count = Some(count);
            }
            CardFault::ConfigChange { kind } => a.kind = Some(kind.name().into()),
            CardFault::StrayDma { target, count } => {
                a.kind = Some(target.name().into());
                a.count = Some(count);
            }
        }
        a
    }

    /// Parses an `inject` request of the card's control socket: the fault, its channel
    /// (capture when absent), checked against its limits ([`CardFault::check`]).
    pub fn from_control(a: &ControlArgs) -> Result<(Channel, CardFault), String> {
        let channel = a.channel.unwrap_or_default();
        if CardFault::NAMES.contains(&a.fault.as_str()) {
            // Before the parameters: a fault without a playback form is that, whatever
            // its parameters say.
            CardFault::check_channel(&a.fault, channel)?;
        }
        let count = a.count.unwrap_or(1);
        let need = |what: Option<u64>, param: &str, meaning: &str| {
            what.ok_or_else(|| format!("`{}` needs `{param}` ({meaning})", a.fault))
        };
        let kind = |all: &[&str]| {
            a.kind
                .as_deref()
                .ok_or_else(|| format!("`{}` needs a string `kind` ({})", a.fault, all.join(", ")))
        };
        let f = match a.fault.as_str() {
            "dma_error" => CardFault::DmaError { count },
            "corrupt_data" => CardFault::CorruptData { count },
            "drop_irq" => CardFault::DropIrq { count },
            "spurious_irq" => CardFault::SpuriousIrq {
                count,
                vector: vector(a.vector)?,
            },
            "irq_storm" => CardFault::IrqStorm {
                vector: vector(a.vector)?,
                rate: need(a.count, "count", "messages per second")?,
                ms: need(a.ms, "ms", "its duration")?,
            },
            "stall" => CardFault::Stall {
                ms: need(a.ms, "ms", "milliseconds")?,
            },
            "slow_stop" => CardFault::SlowStop {
                ms: need(a.ms, "ms", "milliseconds")?,
                count,
            },
            "overflow" => CardFault::Overflow { count },
            "doorbell_lie" => CardFault::DoorbellLie { count },
            "cons_lie" => CardFault::ConsLie { count },
            "hang" => CardFault::Hang,
            "bad_register_reads" => CardFault::BadRegisterReads { count },
            "bad_completion" => CardFault::BadCompletion {
                kind: CompletionLie::parse(kind(&names(CompletionLie::ALL, CompletionLie::name))?)?,
                count,
            },
            "config_change" => CardFault::ConfigChange {
                kind: ConfigChange::parse(kind(&names(ConfigChange::ALL, ConfigChange::name))?)?,
            },
            "stray_dma" => CardFault::StrayDma {
                target: StrayTarget::parse(kind(&names(StrayTarget::ALL, StrayTarget::name))?)?,
                count,
            },
            other => {
                return Err(format!(
                    "unknown fault `{other}` (known: {})",
                    CardFault::NAMES.join(", ")
                ))
            }
        };
        f.check(channel)?;
        Ok((channel, f))
    }
}

/// A fault of a capture disk (docs/sink.md, "Faults"). Scenario files name them with a
/// `disk_` prefix; the disk's control socket by [`DiskFault::control_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub enum DiskFault {
    /// The next `count` write requests fail (EIO in the guest).
    #[serde(rename = "disk_write_error")]
    WriteError {
        /// How many requests.
        #[serde(default = "one")]
        count: u64,
    },
    /// Full at `at` bytes: writes beyond it fail.
    #[serde(rename = "disk_full")]
    Full {
        /// Disk offset where it is full.
        at: Size,
    },
    /// At most this many bytes per second (0 removes the cap).
    #[serde(rename = "disk_bandwidth")]
    Bandwidth {
        /// The cap.
        bytes_per_s: Size,
    },
    /// Every request takes this much longer.
    #[serde(rename = "disk_latency")]
    Latency {
        /// Added latency in microseconds.
        us: u64,
    },
    /// No request completes for `ms` milliseconds.
    #[serde(rename = "disk_stall")]
    Stall {
        /// How long.
        ms: u64,
    },
    /// The next `count` flushes fail.
    #[serde(rename = "disk_flush_error")]
    FlushError {
        /// How many flushes.
        #[serde(default = "one")]
        count: u64,
    },
}

impl DiskFault {
    /// The scenario names, in catalogue order.
    pub const NAMES: &'static [&'static str] = &[
        "disk_write_error",
        "disk_full",
        "disk_bandwidth",
        "disk_latency",
        "disk_stall",
        "disk_flush_error",
    ];

    /// The control-socket names, in catalogue order, with the one parameter each takes.
    pub const CONTROL: &'static [(&'static str, &'static str)] = &[
        ("write_error", "count"),
        ("disk_full", "at"),
        ("bandwidth", "bytes_per_s"),
        ("latency", "us"),
        ("stall", "ms"),
        ("flush_error", "count"),
    ];

    /// The scenario name (`disk_*`).
    pub fn name(&self) -> &'static str {
        match self {
            DiskFault::WriteError { .. } => "disk_write_error",
            DiskFault::Full { .. } => "disk_full",
            DiskFault::Bandwidth { .. } => "disk_bandwidth",
            DiskFault::Latency { .. } => "disk_latency",
            DiskFault::Stall { .. } => "disk_stall",
            DiskFault::FlushError { .. } => "disk_flush_error",
        }
    }

    /// The `inject` request that arms this fault: its control-socket name, and its one
    /// parameter's name and value.
    pub fn control(&self) -> (&'static str, &'static str, u64) {
        let (i, v) = match *self {
            DiskFault::WriteError { count } => (0, count),
            DiskFault::Full { at } => (1, at.0),
            DiskFault::Bandwidth { bytes_per_s } => (2, bytes_per_s.0),
            DiskFault::Latency { us } => (3, us),
            DiskFault::Stall { ms } => (4, ms),
            DiskFault::FlushError { count } => (5, count),
        };
        let (name, param) = DiskFault::CONTROL[i];
        (name, param, v)
    }

    /// The parameter fault `name` of the disk's control socket takes, or an error that
    /// lists the faults there are.
    pub fn control_param(name: &str) -> Result<&'static str, String> {
        DiskFault::CONTROL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                let known: Vec<&str> = DiskFault::CONTROL.iter().map(|(n, _)| *n).collect();
                format!("unknown fault `{name}` (known: {})", known.join(", "))
            })
    }

    /// The fault of an `inject` request of the disk's control socket: fault `name` with its
    /// one parameter's `value` (see [`DiskFault::control_param`]).
    pub fn from_control(name: &str, value: u64) -> Result<DiskFault, String> {
        Ok(match name {
            "write_error" => DiskFault::WriteError { count: value },
            "disk_full" => DiskFault::Full { at: Size(value) },
            "bandwidth" => DiskFault::Bandwidth {
                bytes_per_s: Size(value),
            },
            "latency" => DiskFault::Latency { us: value },
            "stall" => DiskFault::Stall { ms: value },
            "flush_error" => DiskFault::FlushError { count: value },
            _ => {
                return Err(DiskFault::control_param(name).err().unwrap_or_else(|| {
                    format!("fault `{name}` is in the catalogue but has no parser here")
                }))
            }
        })
    }
}

/// The control-protocol vector parameter, absent = 0.
fn vector(v: Option<u64>) -> Result<u16, String> {
    u16::try_from(v.unwrap_or(0)).map_err(|_| "`vector` is out of range".into())
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|t| name(*t)).collect()
}

/// The one of `all` whose name is `wanted`, or an error that lists the names.
fn named<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
    wanted: &str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|t| name(*t) == wanted)
        .ok_or_else(|| {
            format!(
                "unknown {what} `{wanted}` (known: {})",
                names(all, name).join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every card fault goes to the control socket and back unchanged, on each channel
    /// it has.
    #[test]
    fn card_faults_round_trip_through_the_control_protocol() {
        let all = [
            CardFault::DmaError { count: 3 },
            CardFault::CorruptData { count: 1 },
            CardFault::DropIrq { count: 400 },
            CardFault::SpuriousIrq {
                count: 9,
                vector: 2,
            },
            CardFault::IrqStorm {
                vector: 1,
                rate: 20_000,
                ms: 1500,
            },
            CardFault::Stall { ms: 300 },
            CardFault::SlowStop { ms: 50, count: 2 },
            CardFault::Overflow { count: 5 },
            CardFault::DoorbellLie { count: 2 },
            CardFault::ConsLie { count: 1 },
            CardFault::Hang,
            CardFault::BadRegisterReads { count: 4 },
            CardFault::BadCompletion {
                kind: CompletionLie::StalePhase,
                count: 1,
            },
            CardFault::ConfigChange {
                kind: ConfigChange::CapList,
            },
            CardFault::StrayDma {
                target: StrayTarget::Unmapped,
                count: 2,
            },
        ];
        assert_eq!(all.len(), CardFault::NAMES.len());
        for f in all {
            assert!(CardFault::NAMES.contains(&f.name()));
            for ch in [Channel::Capture, Channel::Playback] {
                let back = CardFault::from_control(&f.control(ch));
                if ch == Channel::Playback && !CardFault::PLAYBACK.contains(&f.name()) {
                    let e = back.unwrap_err();
                    assert!(e.contains("no playback form"), "{e}");
                } else {
                    assert_eq!(back, Ok((ch, f)));
                }
            }
        }
    }

    #[test]
    fn card_faults_out_of_bounds_are_refused_with_the_bound() {
        for (f, want) in [
            (
                CardFault::IrqStorm {
                    vector: 0,
                    rate: STORM_RATE_MAX + 1,
                    ms: 10,
                },
                "not in 1..=200000",
            ),
            (
                CardFault::IrqStorm {
                    vector: 0,
                    rate: 10,
                    ms: STORM_MS_MAX + 1,
                },
                "above 60000",
            ),
            (
                CardFault::SlowStop {
                    ms: SLOW_STOP_MS_MAX + 1,
                    count: 1,
                },
                "above 10000",
            ),
            (
                CardFault::Stall {
                    ms: STALL_MS_MAX + 1,
                },
                "an hour",
            ),
            (
                CardFault::SpuriousIrq {
                    count: SPURIOUS_IRQ_MAX + 1,
                    vector: 0,
                },
                "above 1048576",
            ),
        ] {
            let e = f.check(Channel::Capture).unwrap_err();
            assert!(e.contains(want), "{f:?}: {e}");
            assert_eq!(
                CardFault::from_control(&f.control(Channel::Capture)),
                Err(e)
            );
        }
    }

    #[test]
    fn card_control_requests_name_what_is_missing_or_unknown() {
        let req = |fault: &str| ControlArgs {
            fault: fault.into(),
            ..ControlArgs::default()
        };
        let e = CardFault::from_control(&req("stall")).unwrap_err();
        assert!(e.contains("`stall` needs `ms`"), "{e}");
        let e = CardFault::from_control(&req("bad_completion")).unwrap_err();
        assert!(e.contains("zero_length, short"), "{e}");
        let e = CardFault::from_control(&ControlArgs {
            kind: Some("sideways".into()),
            ..req("stray_dma")
        })
        .unwrap_err();
        assert!(e.contains("unknown stray_dma target `sideways`"), "{e}");
        let e = CardFault::from_control(&req("melt")).unwrap_err();
        assert!(
            e.contains("unknown fault `melt`") && e.contains("stray_dma"),
            "{e}"
        );
        assert_eq!(
            CardFault::from_control(&req("dma_error")),
            Ok((Channel::Capture, CardFault::DmaError { count: 1 }))
        );
    }

    #[test]
    fn disk_faults_round_trip_through_the_control_protocol() {
        let all = [
            DiskFault::WriteError { count: 2 },
            DiskFault::Full { at: Size(65536) },
            DiskFault::Bandwidth {
                bytes_per_s: Size(1 << 20),
            },
            DiskFault::Latency { us: 500 },
            DiskFault::Stall { ms: 4000 },
            DiskFault::FlushError { count: 1 },
        ];
        assert_eq!(all.len(), DiskFault::CONTROL.len());
        assert_eq!(all.len(), DiskFault::NAMES.len());
        for f in all {
            assert!(DiskFault::NAMES.contains(&f.name()));
            let (name, param, value) = f.control();
            assert_eq!(DiskFault::control_param(name), Ok(param));
            assert_eq!(DiskFault::from_control(name, value), Ok(f));
            assert!(f.name().starts_with("disk_"));
        }
        let e = DiskFault::from_control("melt", 1).unwrap_err();
        assert!(
            e.contains("unknown fault `melt`") && e.contains("flush_error"),
            "{e}"
        );
    }
}
