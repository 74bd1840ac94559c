//! What must hold after the steps ran: the expectations and their ranges.

use super::*;

/// What must hold after the steps ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every stream step reaches at least this throughput (MB/s, 10^6 bytes/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_throughput_mbps: Option<f64>,
    /// At least this many bytes verified over all stream steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_bytes_min: Option<Size>,
    /// Errors consumers must see, e.g. `{"EIO": 1}`: each named errno exactly that many
    /// times over all stream steps. An errno not listed must not occur.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Errnos that may occur any number of times, zero included (where a count depends on
    /// timing, as for the faults `acq explore` draws): `["EIO", "EPIPE"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors_allowed: Vec<String>,
    /// Where in the stream each errno must come, e.g. `{"EIO": {"min": "16M", "max": "26M"}}`:
    /// every occurrence of the named errno has a stream offset (of the next byte the consumer
    /// expected when the call failed) in the range. Says *when*; `errors` says how often.
    #[serde(default)]
    pub errors_at: BTreeMap<String, ByteRange>,
    /// Verification mismatches allowed (non-zero only where data is corrupted on purpose).
    #[serde(default)]
    pub mismatches: CountRange,
    /// After the last error, each stream delivered more verified data (the stream recovered).
    #[serde(default)]
    pub recovered: bool,
    /// Ranges for the cards' and disks' counters, keyed `cardN.NAME` or `diskN.NAME` (names
    /// as in the model's or the sink's `counters` reply, e.g. `card0.irqs`,
    /// `disk0.bytes_verified`), and for a stream's numbers, `streamN.NAME`: entry N of the
    /// result's `streams` (the stream and play steps in order, background plays last),
    /// names as in its result line, e.g. `stream0.session_ends`, `stream1.short_reads`.
    #[serde(default)]
    pub counters: BTreeMap<String, CountRange>,
    /// Every card still present has all its pool pages back at the end (driver stats
    /// `pool_free == pool_pages`): nothing a pipe, a mapping or a consumer held leaked.
    #[serde(default = "yes")]
    pub pool_returned: bool,
    /// Every fault of the timeline fires and every stream step's `signal` is sent (a
    /// fault or signal whose moment never came, because the steps ended first, fails the
    /// scenario). `acq explore` turns it off: its draws may end a stream before it.
    #[serde(default = "yes")]
    pub all_faults_fire: bool,
    /// Kernel log lines that do not count as a failure (substrings), besides none.
    #[serde(default)]
    pub dmesg_allow: Vec<String>,
    /// How many kernel log lines (of the run, before the driver unloads) contain each
    /// substring, e.g. `{"never written: skipped": {"min": 1, "max": 10}}`: that the
    /// driver says what happened, and does not flood the log saying it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dmesg_lines: BTreeMap<String, CountRange>,
    /// What the consumers of disk sinks report about the disk (docs/sink.md).
    #[serde(default)]
    pub sink: SinkExpect,
}

/// Expectations on streams to capture disks. Besides these, every stream to a raw disk
/// (`{"disk": N}`) is checked against that disk's and card's counters, to the byte:
/// bytes the consumer says reached the disk = the disk's `written_bytes_unique`, its
/// holes = `hole_bytes`, its failed write bytes = `failed_write_bytes`, the stream
/// ranges the card lost = the card's `lost_bytes` (one stream per disk and per card).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkExpect {
    /// Write/sync errors the consumers' sinks must see, e.g. `{"EIO": 1}`: each exactly
    /// that many times; any other must not occur.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// The streams end early because of the sink (policy `stop`, or `retry` used up).
    #[serde(default)]
    pub stopped: bool,
    /// Stream bytes lost at the sink, over all streams (default exactly 0).
    #[serde(default)]
    pub lost_bytes: CountRange,
    /// Stream bytes the card lost before the consumer (overflow gaps), over all streams
    /// (default: any).
    #[serde(default = "any_count")]
    pub gap_bytes: CountRange,
    /// Retries made by the consumers (default: any).
    #[serde(default = "any_count")]
    pub retries: CountRange,
    /// The final fsync of every disk stream succeeded (possibly after retries).
    #[serde(default = "yes")]
    pub synced: bool,
}

impl Default for SinkExpect {
    fn default() -> Self {
        SinkExpect {
            errors: BTreeMap::new(),
            stopped: false,
            lost_bytes: CountRange::default(),
            gap_bytes: any_count(),
            retries: any_count(),
            synced: true,
        }
    }
}

fn any_count() -> CountRange {
    CountRange { min: 0, max: None }
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            min_throughput_mbps: None,
            verified_bytes_min: None,
            errors: BTreeMap::new(),
            errors_allowed: Vec::new(),
            errors_at: BTreeMap::new(),
            mismatches: CountRange {
                min: 0,
                max: Some(0),
            },
            recovered: false,
            all_faults_fire: true,
            pool_returned: true,
            counters: BTreeMap::new(),
            dmesg_allow: Vec::new(),
            dmesg_lines: BTreeMap::new(),
            sink: SinkExpect::default(),
        }
    }
}

/// An inclusive range of counts; a missing `max` means no upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountRange {
    /// Lowest allowed value.
    #[serde(default)]
    pub min: u64,
    /// Highest allowed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

impl Default for CountRange {
    fn default() -> Self {
        CountRange {
            min: 0,
            max: Some(0),
        }
    }
}

impl CountRange {
    /// True when `v` is in the range.
    pub fn contains(&self, v: u64) -> bool {
        v >= self.min && self.max.is_none_or(|m| v <= m)
    }
}

impl fmt::Display for CountRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max {
            Some(m) if m == self.min => write!(f, "{m}"),
            Some(m) => write!(f, "{}..={m}", self.min),
            None => write!(f, ">= {}", self.min),
        }
    }
}

/// An inclusive range of stream offsets; a missing `max` means no upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ByteRange {
    /// Lowest allowed offset.
    #[serde(default = "zero_size")]
    pub min: Size,
    /// Highest allowed offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Size>,
}

fn zero_size() -> Size {
    Size(0)
}

impl ByteRange {
    /// True when `v` is in the range.
    pub fn contains(&self, v: u64) -> bool {
        v >= self.min.0 && self.max.is_none_or(|m| v <= m.0)
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max {
            Some(m) => write!(f, "{}..={m}", self.min),
            None => write!(f, ">= {}", self.min),
        }
    }
}
