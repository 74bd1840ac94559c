//! The counters the card's and the capture disk's control sockets report (`{"cmd":
//! "counters"}`), and the driver's statistics as the guest tools print them, as types: the
//! servers and the tools write them from these, the harness reads them back, and a scenario's `expect.counters` may name only what is here
//! ([`CardCounters::NUMBERS`], [`DiskCounters::NUMBERS`]: `acq check` refuses a typo
//! before any VM boots).

use serde::{Deserialize, Serialize};

/// Calls `$m!` with the card's statistics, each with its documentation: the one list the
/// model's atomic counters and [`CardStats`] are both made from.
#[macro_export]
macro_rules! card_stats {
    ($m:ident) => {
        $m! {
            /// Data completions written (blocks delivered).
            blocks,
            /// Bytes delivered into host buffers (or BAR2 slots).
            bytes,
            /// Bytes produced by the source (delivered, lost, or discarded at stop).
            bytes_produced,
            /// Bytes dropped by FIFO overflow.
            lost_bytes,
            /// Overflow episodes (each raised cause OVERFLOW once).
            overflows,
            /// ERROR completions written.
            error_completions,
            /// Errors recorded in ERROR_CODE (fatal and non-fatal).
            errors,
            /// Engine halts on fatal errors.
            halts,
            /// Interrupt messages sent, all vectors.
            irqs,
            /// Vector-0 (capture) interrupt messages sent.
            irqs_capture,
            /// Vector-1 (error/status) interrupt messages sent.
            irqs_error,
            /// Interrupt messages lost to the drop_irq fault.
            irqs_dropped,
            /// Spurious interrupt messages sent (spurious_irq fault).
            irqs_spurious,
            /// Causes raised while masked or with no interrupt connected (no message).
            irqs_suppressed,
            /// DOORBELL writes.
            doorbells,
            /// Trapped BAR0 reads.
            reg_reads,
            /// Trapped BAR0 writes.
            reg_writes,
            /// Bad BAR0 accesses (width, alignment, writes refused while running).
            reg_errors,
            /// Config-space reads.
            config_reads,
            /// Config-space writes.
            config_writes,
            /// Sessions started (ENABLE 0->1 with a valid configuration).
            sessions,
            /// Device resets (soft reset, FLR, vfio-user reset, control reset, disconnect).
            resets,
            /// DMA maps added.
            dma_maps,
            /// DMA unmap requests served.
            dma_unmaps,
            /// vfio-user clients served (counted at their first device request).
            connections,
            /// Faults that took effect.
            faults_fired,
            /// Blocks the `stray_dma` fault wrote where they went (memory the card could reach).
            stray_landed,
            /// Blocks the `stray_dma` fault sent where no DMA map reached: lost, as a posted
            /// write an IOMMU blocks (the card is not told).
            stray_blocked,
            /// Playback: data completions written (blocks received).
            pb_blocks,
            /// Playback: bytes received from host buffers.
            pb_bytes,
            /// Playback: received bytes in blocks that matched the pattern.
            pb_verified_bytes,
            /// Playback: received blocks with at least one mismatching byte.
            pb_mismatch_blocks,
            /// Playback: underrun block times (the output had nothing to play).
            pb_underruns,
            /// Playback: underrun episodes (each raised cause PB_EVENT once).
            pb_underrun_episodes,
            /// Playback: ERROR completions written.
            pb_error_completions,
            /// Playback: errors recorded in PB_ERROR_CODE.
            pb_errors,
            /// Playback: engine halts.
            pb_halts,
            /// Playback: sessions started.
            pb_sessions,
            /// Playback: PB_DOORBELL writes.
            pb_doorbells,
            /// Vector-2 (playback) interrupt messages sent.
            irqs_playback,
            /// Bytes moved from the playback channel to the capture channel (loopback).
            loopback_bytes,
        }
    };
}

macro_rules! card_stats_snapshot {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The card's statistics: 64-bit, counted since the model started, never reset
        /// (take differences).
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct CardStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl CardStats {
            /// The statistics' names.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];
        }
    };
}

card_stats!(card_stats_snapshot);

/// The card's `counters` reply (besides `ok` and the faults still armed, which the model
/// adds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardCounters {
    /// The statistics.
    #[serde(flatten)]
    pub stats: CardStats,
    /// STATUS register now.
    pub status: u32,
    /// ERROR_CODE register now.
    pub error_code: u32,
    /// True while a capture session is active.
    pub running: bool,
    /// PB_STATUS register now (v1.1).
    pub pb_status: u32,
    /// PB_ERROR_CODE register now.
    pub pb_error_code: u32,
    /// True while a playback session is active.
    pub pb_running: bool,
    /// Stream offset of the first mismatching byte of the current (or last) playback
    /// session, `null` if none (PB_FIRST_BAD).
    pub pb_first_bad_offset: Option<u64>,
    /// A vfio-user client is connected (false again only after the reset that its
    /// disconnection makes, so a fault armed after that stays armed).
    pub client_connected: bool,
}

impl CardCounters {
    /// The fields an expectation can compare with a number (`card0.NAME`).
    pub const NUMBERS: [&'static [&'static str]; 2] = [
        CardStats::NAMES,
        &[
            "status",
            "error_code",
            "pb_status",
            "pb_error_code",
            "pb_first_bad_offset",
        ],
    ];

    /// Whether `name` is one of [`CardCounters::NUMBERS`].
    pub fn has_number(name: &str) -> bool {
        Self::NUMBERS.iter().any(|l| l.contains(&name))
    }
}

/// The capture disk's `counters` reply (besides `ok` and the faults still armed, which the
/// sink adds), in the three parts its server counts apart (each under its own lock) and
/// flattened into one object on the wire. Offsets are disk byte offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCounters {
    /// What the disk counts: the writes, reads and flushes it performed, their
    /// verification, and the written ranges.
    #[serde(flatten)]
    pub data: DataCounters,
    /// What the virtio request handling counts: requests, and failures by fault.
    #[serde(flatten)]
    pub requests: RequestCounters,
    /// The disk's settings.
    #[serde(flatten)]
    pub setup: DiskSetup,
    /// Milliseconds since the disk started.
    pub uptime_ms: u64,
}

/// The disk's part of [`DiskCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCounters {
    /// Write requests performed (failed ones are not counted here).
    pub writes: u64,
    /// Bytes written by performed writes (a rewrite counts again).
    pub bytes_written: u64,
    /// Written bytes equal to the card's stream.
    pub bytes_verified: u64,
    /// Written bytes different from the stream.
    pub bytes_mismatched: u64,
    /// Writes with at least one wrong byte.
    pub mismatched_writes: u64,
    /// Disk offset of the first wrong byte, in the order writes arrived.
    pub first_mismatch: Option<u64>,
    /// Lowest disk offset of a wrong byte.
    pub lowest_mismatch: Option<u64>,
    /// Read requests served.
    pub reads: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Flush requests completed successfully.
    pub flushes: u64,
    /// GET_ID requests.
    pub get_ids: u64,
    /// Bytes written at least once.
    pub written_bytes_unique: u64,
    /// Disjoint written ranges.
    pub written_extents: u64,
    /// The end of the highest write.
    pub highest_written: u64,
    /// Unwritten ranges below `highest_written` ...
    pub holes: u64,
    /// ... their bytes ...
    pub hole_bytes: u64,
    /// ... and the first, `[start, end)`.
    pub first_hole: Option<[u64; 2]>,
}

/// The requests' part of [`DiskCounters`] (counted since the process started).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounters {
    /// Requests completed (whatever their status).
    pub requests: u64,
    /// Requests answered VIRTIO_BLK_S_IOERR because the chain was malformed or pointed
    /// outside guest memory.
    pub bad_requests: u64,
    /// Reads or writes beyond the end of the disk (IOERR).
    pub out_of_range: u64,
    /// Requests of a type the disk does not support (UNSUPP).
    pub unsupported: u64,
    /// Writes failed by an injected `write_error`.
    pub write_errors: u64,
    /// Writes failed by `disk_full`.
    pub disk_full_errors: u64,
    /// Flushes failed by an injected `flush_error`.
    pub flush_errors: u64,
    /// Bytes of writes that failed (injected errors or disk full).
    pub failed_write_bytes: u64,
    /// Disk offset of the first write that failed by a fault.
    pub first_failed_write: Option<u64>,
    /// Requests held by a stall.
    pub stalled_requests: u64,
    /// Requests held by latency or the bandwidth cap (and not by a stall).
    pub delayed_requests: u64,
    /// Host I/O errors on the store file.
    pub store_errors: u64,
    /// vhost-user connections accepted.
    pub connections: u64,
}

/// The settings part of [`DiskCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSetup {
    /// The disk's size in bytes.
    pub size: u64,
    /// Its logical block size.
    pub block_size: u32,
    /// The PATTERN value writes are checked against ...
    pub pattern: u32,
    /// ... its seed ...
    pub seed: u64,
    /// ... and the stream offset of disk offset 0.
    pub base: u64,
    /// Writes are checked.
    pub verify: bool,
}

impl DiskCounters {
    /// The fields an expectation can compare with a number (`disk0.NAME`).
    pub const NUMBERS: &'static [&'static str] = &[
        "writes",
        "bytes_written",
        "bytes_verified",
        "bytes_mismatched",
        "mismatched_writes",
        "first_mismatch",
        "lowest_mismatch",
        "reads",
        "bytes_read",
        "flushes",
        "get_ids",
        "written_bytes_unique",
        "written_extents",
        "highest_written",
        "holes",
        "hole_bytes",
        "requests",
        "bad_requests",
        "out_of_range",
        "unsupported",
        "write_errors",
        "disk_full_errors",
        "flush_errors",
        "failed_write_bytes",
        "first_failed_write",
        "stalled_requests",
        "delayed_requests",
        "store_errors",
        "connections",
        "size",
        "block_size",
        "pattern",
        "seed",
        "base",
        "uptime_ms",
    ];
}

/// The driver's capture statistics (`ACQ_IOC_GET_STATS`, `driver/uapi.rs` `AcqStats`) as
/// the guest tools print them (`acq-ctl stats`, a capture's result line): the harness
/// reads them back into this type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStats {
    /// Bytes returned by read().
    pub bytes: u64,
    /// Data blocks the driver consumed from the ring.
    pub blocks: u64,
    /// Overflow episodes seen in the stream.
    pub overflows: u64,
    /// Bytes the card dropped.
    pub lost_bytes: u64,
    /// Error completions, device error events, halts and watchdog resets.
    pub errors: u64,
    /// Interrupts the driver handled (all vectors).
    pub interrupts: u64,
    /// Stream offset of the next byte read() returns (where a stream goes on after
    /// `EPIPE` or `EIO`).
    pub read_offset: u64,
    /// Sessions started so far.
    pub session: u64,
    /// Stalls the watchdog detected.
    pub watchdog_resets: u64,
    /// Lost wake-ups (0 for a correct driver).
    pub lost_wakeups: u32,
    /// `ACQ_STATE_*`.
    pub state: u32,
    /// Pages in the card's buffer pool.
    pub pool_pages: u32,
    /// Pool pages nobody else holds (`pool_free == pool_pages` once every lent page came
    /// back).
    pub pool_free: u32,
    /// Bytes handed to pipes by splice().
    pub spliced_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// The numeric fields of a serialised value (a present `Option` counts).
    fn numbers(v: serde_json::Value) -> Vec<alloc::string::String> {
        let mut n: Vec<_> = v
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, x)| x.is_number())
            .map(|(k, _)| k.to_string())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn the_number_lists_are_the_numeric_fields() {
        let card = CardCounters {
            pb_first_bad_offset: Some(1),
            ..CardCounters::default()
        };
        let mut listed: Vec<_> = CardCounters::NUMBERS
            .iter()
            .flat_map(|l| l.iter().map(|s| s.to_string()))
            .collect();
        listed.sort();
        assert_eq!(numbers(serde_json::to_value(card).unwrap()), listed);
        let mut disk = DiskCounters::default();
        disk.data.first_mismatch = Some(1);
        disk.data.lowest_mismatch = Some(1);
        disk.requests.first_failed_write = Some(1);
        let mut listed: Vec<_> = DiskCounters::NUMBERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        listed.sort();
        assert_eq!(numbers(serde_json::to_value(disk).unwrap()), listed);
        assert!(CardCounters::has_number("irqs") && !CardCounters::has_number("irq"));
    }

    #[test]
    fn a_reply_reads_back() {
        let mut c = CardCounters::default();
        c.stats.irqs = 3;
        c.status = 5;
        let mut v = serde_json::to_value(&c).unwrap();
        v["ok"] = true.into();
        v["faults_pending"] = serde_json::json!({"hang": false});
        assert_eq!(serde_json::from_value::<CardCounters>(v).unwrap(), c);
    }
}
