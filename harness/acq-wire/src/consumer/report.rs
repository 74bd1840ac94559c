//! What a consumer answers: the fields of its one JSON result line that the harness reads
//! (its expectations, the disk accounts, the control verdict). A tool writes these from
//! the types below and adds what only it knows (its settings, the driver's counters) as
//! further fields; the harness reads the line back into these types and ignores the
//! rest. Every field of [`ConsumerReport`] itself has a default, so a line that lacks one
//! (a tool that failed before it streamed, the signal helper's line of a consumer that
//! was killed, a playback's) still reads; the parts inside it (the sink account, the card
//! configuration, an errno event) are read whole or not at all, and a line they do not
//! read from is an error the harness reports, not a default.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// An errno a consumer met, and where in the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrnoEvent {
    /// Its name (`EPIPE`).
    pub errno: String,
    /// The stream offset of the next byte the consumer expected.
    pub offset: u64,
    /// What the consumer had received by then.
    #[serde(default)]
    pub bytes: u64,
    /// Milliseconds since the consumer started.
    #[serde(default)]
    pub ms: u64,
    /// Where the stream went on (EPIPE, EIO): the driver's `read_offset`, 0 in a new
    /// session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<u64>,
}

/// One control action and the answer it got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResult {
    /// The action's name (`reset`).
    pub action: String,
    /// When it was done: ms after the helper started ...
    #[serde(default)]
    pub at_ms: u64,
    /// ... and the consumer's byte count then.
    pub at_bytes: u64,
    /// How long the ioctl took.
    #[serde(default)]
    pub took_ms: u64,
    /// The answer: `ok`, an errno name, or `opened` (a second open that succeeded).
    pub result: String,
}

/// What the second process of `--control` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReport {
    /// The actions done, in order.
    #[serde(default)]
    pub actions: Vec<ControlResult>,
    /// How many were planned.
    #[serde(default)]
    pub planned: u64,
    /// Why there is no report (the helper died or gave none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A file or disk sink's account, to the byte (docs/sink.md, "Consumer behaviour").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkIoReport {
    /// The policy (`stop`, `retry`, `skip`).
    pub policy: String,
    /// Tries after the first (policy retry).
    pub retries_max: u32,
    /// Written by position (a block device: disk offset = stream offset - base).
    pub positional: bool,
    /// The stream offset of disk offset 0 (positional sinks).
    pub base: Option<u64>,
    /// fsync after every write.
    pub sync_each: bool,
    /// Bytes handed to the sink.
    pub bytes_to_sink: u64,
    /// Bytes the sink holds, each counted once.
    pub written_bytes_unique: u64,
    /// The highest position written.
    pub highest_written: u64,
    /// Bytes never written below it.
    pub hole_bytes: u64,
    /// Ranges given up (at most 1000 listed), `[position, length]`.
    pub lost: Vec<[u64; 2]>,
    /// Their bytes.
    pub lost_bytes: u64,
    /// Stretches the card lost (EPIPE), `[position, length]`.
    pub gaps: Vec<[u64; 2]>,
    /// Their bytes.
    pub gap_bytes: u64,
    /// Writes that failed.
    pub failed_attempts: u64,
    /// Their bytes.
    pub failed_bytes: u64,
    /// Writes tried again.
    pub retries: u64,
    /// Write errors by name.
    pub errno: BTreeMap<String, u64>,
    /// The policy ended the stream.
    pub stopped: bool,
    /// The final fsync: `ok`, an error, or none done.
    pub sync: Option<String>,
    /// fsync errors met on the way.
    pub sync_errors: u64,
    /// Written with O_DIRECT.
    #[serde(default)]
    pub direct: bool,
}

/// The fields of a consumer's result line that the harness reads. A capture
/// (`acq-stream`), a playback (`acq-stream --direction out`), a share (`acq-share`) and
/// the signal helper of a killed consumer each write the ones that apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumerReport {
    /// The consumer's CPU time, user and system (captures; the bench's CPU per GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_user_s: Option<f64>,
    /// System CPU time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_sys_s: Option<f64>,
    /// Everything the consumer was asked to do happened and checked out.
    #[serde(default)]
    pub ok: bool,
    /// Bytes moved.
    #[serde(default)]
    pub bytes: u64,
    /// How long it took.
    #[serde(default)]
    pub seconds: f64,
    /// Its rate.
    #[serde(default)]
    pub mb_per_s: f64,
    /// Bytes verified against the card's pattern (by the consumer, or by the card for
    /// playback).
    #[serde(default)]
    pub verified_bytes: u64,
    /// Pieces that failed verification.
    #[serde(default)]
    pub errors: u64,
    /// Errnos met, by name.
    #[serde(default)]
    pub errno: BTreeMap<String, u64>,
    /// Each errno where it happened (captures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_events: Option<Vec<ErrnoEvent>>,
    /// The error that ended the stream early.
    #[serde(default)]
    pub fatal: Option<String>,
    /// The consumer could not run at all (its arguments, the device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stream did not finish within `--timeout`.
    #[serde(default)]
    pub timed_out: bool,
    /// Bytes the card lost to overflows (the driver's count; captures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_bytes: Option<u64>,
    /// Session ends the consumer met (a read() of 0; captures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ends: Option<u64>,
    /// Calls whose data the driver placed somewhere else than the consumer expected
    /// (captures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misplaced: Option<u64>,
    /// The second process's report (`--control`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlReport>,
    /// A file or disk sink's account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_io: Option<SinkIoReport>,
    /// Where a file's blocks landed, `[file offset, disk offset, length]` (a file system
    /// on a capture disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extents: Option<Vec<[u64; 3]>>,
    /// Which stream offset each file position holds, `[file position, stream offset]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_map: Option<Vec<[u64; 2]>>,
    /// The card's configuration the stream ran with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<CardConfig>,
    /// The signal helper's line (the consumer died of its signal): the signal's name ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// ... and how long after it the consumer was gone (none: it outlived the watch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_ms: Option<u64>,
}

impl ConsumerReport {
    /// A report of `bytes` moved in `seconds`, with its rate; every other field at its
    /// default.
    pub fn moved(bytes: u64, seconds: f64) -> ConsumerReport {
        ConsumerReport {
            bytes,
            seconds,
            mb_per_s: if seconds > 0.0 {
                bytes as f64 / seconds / 1e6
            } else {
                0.0
            },
            ..ConsumerReport::default()
        }
    }
}

/// The card's configuration as the consumer set it (`config` in a result line: what the
/// stream was verified against).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardConfig {
    /// Bytes per block.
    pub block_size: u32,
    /// log2 of the ring's entries.
    pub ring_log2: u32,
    /// Bytes per second, 0 unlimited.
    pub rate: u64,
    /// The pattern's seed.
    pub seed: u64,
    /// The PATTERN register value.
    pub pattern: u32,
    /// Completions per interrupt.
    pub irq_mod_count: u32,
    /// Interrupt moderation time.
    pub irq_mod_time_us: u32,
    /// ACQ_CFG_* flags.
    pub flags: u32,
    /// `dma` or `bar2`.
    pub transfer: String,
}
