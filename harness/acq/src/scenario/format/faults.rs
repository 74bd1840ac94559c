//! The fault timeline: when a fault fires, on which card and channel, and what it is
//! (docs/faults.md).

use super::*;

pub use acq_wire::faults::{
    CardFault, Channel, CompletionLie, ConfigChange, DiskFault, StrayTarget,
};

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
    /// corrupt_data, drop_irq, stall, doorbell_lie, cons_lie and bad_completion).
    #[serde(default, skip_serializing_if = "Channel::is_capture")]
    pub channel: Channel,
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

/// What a scenario injects: a card fault, a capture disk fault (both from the one catalogue,
/// `acq_wire::faults`) or what the host does to a card (QMP).
///
/// In a file it is the fault's name as the only key (`{"dma_error": {"count": 2}}`), or the
/// bare name of a fault without parameters (`"hang"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Fault {
    /// A fault of the card (docs/faults.md, "Card faults").
    Card(CardFault),
    /// A fault of a capture disk (docs/sink.md).
    Disk(DiskFault),
    /// What the host does to the card.
    Host(HostFault),
}

/// What the host does to a card while the scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostFault {
    /// The card is hot-unplugged (QMP device_del) while streaming.
    SurpriseRemoval,
    /// The device is reset while streaming.
    Reset,
}

impl HostFault {
    /// Every name.
    pub const NAMES: &'static [&'static str] = &["surprise_removal", "reset"];
}

impl<'de> Deserialize<'de> for Fault {
    /// Dispatches on the fault's name, so that an error names the fault and what is wrong
    /// with it (an untagged enum would only say that nothing matched).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let name = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(m) if m.len() == 1 => {
                m.keys().next().cloned().unwrap_or_default()
            }
            _ => return Err(de::Error::custom(
                "a fault is its name with its parameters, {\"NAME\": {...}}, or a bare \"NAME\"",
            )),
        };
        let r = if CardFault::NAMES.contains(&name.as_str()) {
            CardFault::deserialize(v).map(Fault::Card)
        } else if DiskFault::NAMES.contains(&name.as_str()) {
            DiskFault::deserialize(v).map(Fault::Disk)
        } else if HostFault::NAMES.contains(&name.as_str()) {
            HostFault::deserialize(v).map(Fault::Host)
        } else {
            return Err(de::Error::custom(format!(
                "unknown fault `{name}` (card: {}; disk: {}; host: {})",
                CardFault::NAMES.join(", "),
                DiskFault::NAMES.join(", "),
                HostFault::NAMES.join(", ")
            )));
        };
        r.map_err(|e| de::Error::custom(format!("`{name}`: {e}")))
    }
}

impl Fault {
    /// The request to the card model's control socket that injects this fault on
    /// `channel`. `None` for the faults that are not the card's: the capture disk's, and
    /// surprise removal (QMP).
    pub fn card_request(&self, channel: Channel) -> Option<serde_json::Value> {
        match self {
            Fault::Card(f) => {
                let mut v = serde_json::to_value(f.control(channel)).ok()?;
                v.as_object_mut()?
                    .insert("cmd".into(), serde_json::Value::from("inject"));
                Some(v)
            }
            Fault::Host(HostFault::Reset) => Some(serde_json::json!({"cmd": "reset"})),
            Fault::Host(HostFault::SurpriseRemoval) | Fault::Disk(_) => None,
        }
    }

    /// The catalogue name (as in docs/faults.md).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Card(f) => f.name(),
            Fault::Disk(f) => f.name(),
            Fault::Host(HostFault::SurpriseRemoval) => "surprise_removal",
            Fault::Host(HostFault::Reset) => "reset",
        }
    }

    /// True for faults of a capture disk rather than a card.
    pub fn is_disk(&self) -> bool {
        matches!(self, Fault::Disk(_))
    }
}
