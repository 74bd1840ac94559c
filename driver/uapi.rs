//! User API of the pcie-acq driver (`/dev/acqN`): ioctl numbers and argument structures.
//!
//! This file is the single definition of the ABI. It is dependency-free and `no_std`
//! compatible, and is included by path both into the kernel module
//! (`driver/acq_main.rs`) and into the guest tools (`harness/acq-guest`). docs/driver.md
//! describes the semantics.
//!
//! All structures are `#[repr(C)]`, have no implicit padding and are native-endian
//! (the guest is x86_64). Reserved fields must be written as 0; the driver refuses
//! non-zero values with `EINVAL` so that they can be given a meaning later.

/// ioctl "type" byte of the driver (Linux `_IOC_TYPE`).
pub const ACQ_IOC_MAGIC: u32 = 0xAC;

/// Version of this ABI, reported in [`AcqInfo::abi_version`].
pub const ACQ_ABI_VERSION: u32 = 1;
/// Minor version (additive changes): 1 = pool fields in [`AcqStats`], splice, mmap;
/// 2 = playback (`/dev/acqN-out`, `ACQ_IOC_PB_*`, [`AcqPbStats`]), [`ACQ_CFG_LOOPBACK`]
/// and [`ACQ_CFG_BAR2`] (BAR2 streaming mode) in [`AcqConfig::flags`]; 3 =
/// `lost_wakeups` in [`AcqStats`] and [`AcqPbStats`] (their `reserved` fields before); 4 =
/// `ACQ_IOC_PB_RELEASE` ([`AcqPbRelease`]: when spliced or vmspliced memory may be reused);
/// 5 = dma-buf: `ACQ_IOC_EXPBUF` ([`AcqExpBuf`]), `ACQ_IOC_PB_IMPORT` ([`AcqPbImport`]) and
/// `ACQ_IOC_PB_QUEUE` ([`AcqPbQueue`]).
pub const ACQ_ABI_MINOR: u32 = 5;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux `_IOC(dir, type, nr, size)` for x86 and the asm-generic layout.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((ty & 0xFF) << IOC_TYPESHIFT)
        | ((nr & 0xFF) << IOC_NRSHIFT)
        | (((size as u32) & 0x3FFF) << IOC_SIZESHIFT)
}

/// Start a capture session with the current configuration (a new session: the stream
/// offset restarts at 0). `EBUSY` if one is running. No argument.
pub const ACQ_IOC_START: u32 = ioc(IOC_NONE, ACQ_IOC_MAGIC, 1, 0);
/// Stop the capture session. Data captured but not yet read is discarded. Stopping a
/// stopped card is not an error. No argument.
pub const ACQ_IOC_STOP: u32 = ioc(IOC_NONE, ACQ_IOC_MAGIC, 2, 0);
/// Reset the card (soft reset), discard all data, clear the error state and the
/// statistics. The card is stopped afterwards. No argument.
pub const ACQ_IOC_RESET: u32 = ioc(IOC_NONE, ACQ_IOC_MAGIC, 3, 0);
/// Read the configuration into an [`AcqConfig`].
pub const ACQ_IOC_GET_CONFIG: u32 = ioc(
    IOC_READ,
    ACQ_IOC_MAGIC,
    4,
    core::mem::size_of::<AcqConfig>(),
);
/// Set the configuration from an [`AcqConfig`]. Only while stopped (`EBUSY` otherwise);
/// every field is validated (`EINVAL`), an unreadable argument gives `EFAULT`.
pub const ACQ_IOC_SET_CONFIG: u32 = ioc(
    IOC_WRITE,
    ACQ_IOC_MAGIC,
    5,
    core::mem::size_of::<AcqConfig>(),
);
/// Read the statistics into an [`AcqStats`] (96 bytes).
pub const ACQ_IOC_GET_STATS: u32 =
    ioc(IOC_READ, ACQ_IOC_MAGIC, 6, core::mem::size_of::<AcqStats>());
/// The ABI-1.0 form of `ACQ_IOC_GET_STATS`: the first 80 bytes of [`AcqStats`] (up to and
/// including `lost_wakeups`). Still served, so binaries built before the pool fields work.
pub const ACQ_IOC_GET_STATS_V1: u32 = ioc(IOC_READ, ACQ_IOC_MAGIC, 6, ACQ_STATS_V1_SIZE);
/// Size of the ABI-1.0 [`AcqStats`].
pub const ACQ_STATS_V1_SIZE: usize = 80;
/// Read the card and driver limits into an [`AcqInfo`].
pub const ACQ_IOC_GET_INFO: u32 = ioc(IOC_READ, ACQ_IOC_MAGIC, 7, core::mem::size_of::<AcqInfo>());

/// mmap mode: hand consumed blocks back and learn which are ready ([`AcqMmapSync`]).
pub const ACQ_IOC_MMAP_SYNC: u32 = ioc(
    IOC_READ | IOC_WRITE,
    ACQ_IOC_MAGIC,
    8,
    core::mem::size_of::<AcqMmapSync>(),
);

/// Playback (`/dev/acqN-out` only): read the playback configuration into an
/// [`AcqConfig`] (same structure as capture; `flags` must be 0).
pub const ACQ_IOC_PB_GET_CONFIG: u32 = ioc(
    IOC_READ,
    ACQ_IOC_MAGIC,
    9,
    core::mem::size_of::<AcqConfig>(),
);
/// Playback: set the configuration (block size, ring, rate, the pattern and seed the
/// card verifies against, moderation). Only while no playback session runs (`EBUSY`).
pub const ACQ_IOC_PB_SET_CONFIG: u32 = ioc(
    IOC_WRITE,
    ACQ_IOC_MAGIC,
    10,
    core::mem::size_of::<AcqConfig>(),
);
/// Playback: read the statistics, including the card's verification counters, into an
/// [`AcqPbStats`].
pub const ACQ_IOC_PB_GET_STATS: u32 = ioc(
    IOC_READ,
    ACQ_IOC_MAGIC,
    11,
    core::mem::size_of::<AcqPbStats>(),
);
/// Playback: wait until every block written so far was received by the card (or
/// `EIO`/`ENODEV`/`EINTR`; at most 10 s, then `ETIMEDOUT`). A trailing partial block
/// is not written (it waits for more data). No argument.
pub const ACQ_IOC_PB_DRAIN: u32 = ioc(IOC_NONE, ACQ_IOC_MAGIC, 12, 0);
/// Playback: how far the driver has let go of the writer's memory, and optionally wait
/// until it let go of a given stream offset ([`AcqPbRelease`]; docs/driver.md "Reusing
/// spliced memory"). Pages spliced or vmspliced whole are read by the card after
/// splice() returned: their memory may be changed only once released. `EINVAL` for an
/// offset beyond what the session was written, a session that never was, a timeout over
/// 60 s or `reserved` != 0; `ETIMEDOUT` (answer written) when the wait ran out; `EINTR`
/// on a signal (no answer); `EFAULT`; `ENODEV`.
pub const ACQ_IOC_PB_RELEASE: u32 = ioc(
    IOC_READ | IOC_WRITE,
    ACQ_IOC_MAGIC,
    13,
    core::mem::size_of::<AcqPbRelease>(),
);

/// Capture (`/dev/acqN`): export the ring's pages as one dma-buf ([`AcqExpBuf`];
/// docs/driver.md "Sharing the ring with another device"). Page `i` of the dma-buf is ring
/// slot `i`: block `k` of the session is in page `k % entries`, handed out and back with
/// `ACQ_IOC_MMAP_SYNC` as in mmap mode (the file is in mmap mode from then on, as after an
/// mmap()). The dma-buf is read-only and lives until its last holder lets go, even after
/// the card is closed or gone. `EBUSY` while a read() or splice() session runs; `ENOMEM`
/// when the pool has too few free pages; `EINVAL` for unknown flags or `reserved` != 0;
/// `EMFILE`; `EFAULT` (no descriptor is installed then); `ENODEV`.
pub const ACQ_IOC_EXPBUF: u32 = ioc(
    IOC_READ | IOC_WRITE,
    ACQ_IOC_MAGIC,
    14,
    core::mem::size_of::<AcqExpBuf>(),
);
/// Playback (`/dev/acqN-out`): take a dma-buf as the playback source ([`AcqPbImport`]):
/// the card reads its pages by DMA through its own mapping. A new import replaces the old
/// one; `fd` -1 drops it. `EBADF` (not a descriptor), `EINVAL` (not a dma-buf, a size that
/// is 0, not a multiple of 4096 or over 4 MiB, `reserved` != 0), `EBUSY` while blocks of
/// the current import are in flight, `EPERM` from an exporter that refuses to be read by
/// a device, `ENODEV`; any errno of the exporter's attach or map.
pub const ACQ_IOC_PB_IMPORT: u32 = ioc(
    IOC_READ | IOC_WRITE,
    ACQ_IOC_MAGIC,
    15,
    core::mem::size_of::<AcqPbImport>(),
);
/// Playback: post blocks from the imported dma-buf ([`AcqPbQueue`]), no copy. The first
/// `block_size` bytes of each page are played. Errors as write()'s (`EPIPE` and `EIO` once
/// each, `EAGAIN` with [`ACQ_PB_QUEUE_NONBLOCK`], `EINTR`), reported only when no block was
/// posted (`done` then says how many were); `EINVAL` with no import, `first` beyond it,
/// unknown flags or a partial block pending from write(). A posted block's page must not
/// change until `ACQ_IOC_PB_RELEASE` says it was released.
pub const ACQ_IOC_PB_QUEUE: u32 = ioc(
    IOC_READ | IOC_WRITE,
    ACQ_IOC_MAGIC,
    16,
    core::mem::size_of::<AcqPbQueue>(),
);

/// [`AcqExpBuf::flags`]: the descriptor gets `O_CLOEXEC`.
pub const ACQ_EXPBUF_CLOEXEC: u32 = 1;
/// [`AcqPbQueue::flags`]: do not wait for ring space (`EAGAIN` if none, or fewer blocks).
pub const ACQ_PB_QUEUE_NONBLOCK: u32 = 1;

/// [`AcqConfig::flags`] of the capture configuration: a loopback session (the card
/// delivers what its playback channel receives; needs `ACQ_CAP_LOOPBACK` in the card's
/// CAPS, else `EINVAL`).
pub const ACQ_CFG_LOOPBACK: u32 = 1;

/// Playback statistics (`ACQ_IOC_PB_GET_STATS`). Driver counters run from module load
/// or `ACQ_IOC_RESET`; the `card_*` fields are the card's registers (docs/device.md
/// section 19.2), read at the call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcqPbStats {
    /// Bytes accepted by write() and splice() (posted, or waiting in a partial block).
    pub bytes: u64,
    /// Blocks the card completed with data.
    pub blocks: u64,
    /// Bytes spliced without a copy (pipe pages DMA-mapped and handed to the card).
    pub zero_copy_bytes: u64,
    /// Bytes copied into the driver's bounce pages (write(), unaligned splice).
    pub copied_bytes: u64,
    /// Underrun episodes seen in completions (each one reported as `EPIPE` once).
    pub underruns: u64,
    /// Silence the card played, in bytes (sum of the completions' `lost_bytes`).
    pub underrun_bytes: u64,
    /// Blocks the card flagged as not matching the pattern.
    pub mismatch_blocks: u64,
    /// Errors: error completions, halts (each reported as `EIO` once).
    pub errors: u64,
    /// Playback sessions started.
    pub session: u64,
    /// Blocks posted to the card and not completed yet.
    pub in_flight: u32,
    /// `ACQ_STATE_*` of the playback channel.
    pub state: u32,
    /// The card's PB_CNT_VERIFIED: bytes received that matched the pattern.
    pub card_verified: u64,
    /// The card's PB_CNT_BYTES: bytes received.
    pub card_bytes: u64,
    /// The card's PB_FIRST_BAD: stream offset of the first mismatching byte of the
    /// current or last session, `u64::MAX` if none.
    pub card_first_bad: u64,
    /// The card's PB_CNT_MISMATCH: mismatching blocks.
    pub card_mismatch: u32,
    /// The card's PB_CNT_UNDERRUNS: silent block times.
    pub card_underruns: u32,
    /// Pipe pages the driver holds (referenced and DMA-mapped) for blocks the card has
    /// not completed yet: zero-copy pages are released on completion, not on submission.
    pub held_pages: u32,
    /// Lost wake-ups: a writer's periodic re-check found completions an interrupt had
    /// announced, or a change of state, that nobody woke it for. Always 0 for a correct
    /// driver (docs/driver.md, "Lost wake-ups"); each one is also logged. (ABI 1.3; was
    /// `reserved`, 0.)
    pub lost_wakeups: u32,
}

/// `ACQ_IOC_PB_RELEASE` argument. Offsets are playback stream offsets of one session (a
/// session starts at the first write after open, after a stop, or after an `EIO` that
/// halted the engine; an error completion's `EIO` leaves the session running: compare
/// `session` numbers, never guess). The card verifies each session from offset 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcqPbRelease {
    /// In: the session `offset` belongs to (the `session` of an earlier answer), 0 for the
    /// current one. A session that ended let go of everything: no wait then. A session
    /// that never was (beyond the current one) is `EINVAL`.
    /// Out: the current session (0 before the first).
    pub session: u64,
    /// In: wait until every byte before this offset is released (at most `written`).
    pub offset: u64,
    /// Out: the current session's release point: no byte before it is in writer memory the
    /// driver still holds (so the card no longer reads it). Bytes copied into the
    /// driver's own pages (write(), unaligned splice) are released when copied.
    pub released: u64,
    /// Out: bytes the current session took so far (the next byte's offset).
    pub written: u64,
    /// In: how long to wait for `offset`, 0 ..= 60000 ms. 0 never waits: an `offset` not
    /// released yet is `ETIMEDOUT` at once (answer written).
    pub timeout_ms: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

/// `ACQ_IOC_EXPBUF` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcqExpBuf {
    /// In: [`ACQ_EXPBUF_CLOEXEC`] or 0.
    pub flags: u32,
    /// Out: the dma-buf's descriptor (read-only).
    pub fd: i32,
    /// Out: its size, `entries * 4096`.
    pub size: u64,
    /// Out: ring entries (pages).
    pub entries: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

/// `ACQ_IOC_PB_IMPORT` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcqPbImport {
    /// In: a dma-buf descriptor, or -1 to drop the current import.
    pub fd: i32,
    /// Out: its pages (`size / 4096`).
    pub pages: u32,
    /// Out: its size in bytes.
    pub size: u64,
    /// Reserved, 0.
    pub reserved: u64,
}

/// `ACQ_IOC_PB_QUEUE` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcqPbQueue {
    /// In: the import page of the first block; block `i` is page `(first + i) % pages`.
    pub first: u32,
    /// In: blocks to post.
    pub count: u32,
    /// Out: blocks posted (fewer than `count` after a signal, with
    /// [`ACQ_PB_QUEUE_NONBLOCK`], or when an error is owed).
    pub done: u32,
    /// In: [`ACQ_PB_QUEUE_NONBLOCK`] or 0.
    pub flags: u32,
}

/// `ACQ_IOC_MMAP_SYNC` argument (docs/driver.md, "mmap()").
///
/// The mapping (offset 0, `PROT_READ`, `MAP_SHARED`, `(1 + entries) * 4096` bytes) is the
/// control page followed by the ring's buffers: block `i` of the session is in page
/// `1 + i % entries`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcqMmapSync {
    /// In: blocks the consumer is done with, counted from the last `head` (at most the
    /// last `count`). They go back to the card.
    pub release: u32,
    /// In: how long to wait for a ready block when none is (0: do not wait).
    pub timeout_ms: u32,
    /// Out: session block index of the first ready block.
    pub head: u64,
    /// Out: ready blocks from `head` (contiguous in the stream: no gap, no error).
    pub count: u32,
    /// Out: bytes per block.
    pub block_size: u32,
    /// Out: stream offset of block `head`.
    pub stream_offset: u64,
    /// Out: `ACQ_MMAP_*` flags.
    pub flags: u32,
    /// Reserved, 0 (in and out).
    pub reserved: u32,
}

/// [`AcqMmapSync::flags`] / control page flags: a session is running.
pub const ACQ_MMAP_RUNNING: u32 = 1;

/// Control page (page 0 of the mapping), little-endian u64 words at these byte offsets,
/// written by the driver at every `ACQ_IOC_MMAP_SYNC` and poll(): read-only for the user.
pub mod ctl {
    /// `ACQ_CTL_MAGIC`.
    pub const MAGIC: usize = 0;
    /// Ring entries (buffer pages after the control page).
    pub const ENTRIES: usize = 8;
    /// Bytes per block.
    pub const BLOCK_SIZE: usize = 16;
    /// Consumer index: the session block index of the next block the consumer holds
    /// (everything before it went back to the card).
    pub const CONSUMER: usize = 24;
    /// Producer index: blocks up to (excluding) this index are ready for the consumer.
    pub const PRODUCER: usize = 32;
    /// Stream offset of block `CONSUMER`.
    pub const STREAM_OFFSET: usize = 40;
    /// Session counter (as `AcqStats::session`).
    pub const SESSION: usize = 48;
    /// `ACQ_MMAP_*` flags.
    pub const FLAGS: usize = 56;
}

/// Control page magic ("ACQMMAP1").
pub const ACQ_CTL_MAGIC: u64 = 0x3150_414d_4d51_4341;

/// Capture configuration (`ACQ_IOC_GET_CONFIG` / `ACQ_IOC_SET_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcqConfig {
    /// Bytes per block: a multiple of 8, from 64 up to the page size (4096) and at most
    /// the card's FIFO depth. Default 4096.
    pub block_size: u32,
    /// log2 of the number of ring entries and pool buffers, 1 ..= `AcqInfo::max_ring_log2`.
    /// Default 8 (256 buffers of one page).
    pub ring_log2: u32,
    /// Source rate in bytes per second; 0 = unlimited (the source never overflows).
    pub rate: u64,
    /// Pattern seed.
    pub seed: u64,
    /// PATTERN register value: id in bits 3:0 (0 COUNTER, 1 PRBS, 2 SINE), sine channels
    /// minus one in bits 11:8. Other bits must be 0.
    pub pattern: u32,
    /// Completions per interrupt, 0 ..= 65535 (0 and 1 both mean 1).
    pub irq_mod_count: u32,
    /// Interrupt moderation time in microseconds, 0 (off) ..= 1_000_000.
    pub irq_mod_time_us: u32,
    /// `ACQ_CFG_*` bits (ABI 1.2): capture [`ACQ_CFG_LOOPBACK`] (on a card with
    /// CAPS.LOOPBACK), [`ACQ_CFG_BAR2`]; not both. Playback: 0. Other bits reserved (`EINVAL`).
    pub flags: u32,
}

/// [`AcqConfig::flags`] (ABI 1.2): stream through the card's BAR2 (on-card memory, no DMA;
/// docs/driver.md "BAR2 streaming mode") instead of DMA into host memory. The card must
/// have the BAR2_STREAM capability and its BAR2 must hold the event page, the completion
/// ring and `2^ring_log2` slots of `block_size` bytes, else `ACQ_IOC_SET_CONFIG` fails
/// with `EINVAL` (the kernel log says why).
pub const ACQ_CFG_BAR2: u32 = 1 << 1;
/// Every [`AcqConfig::flags`] bit the driver knows.
pub const ACQ_CFG_FLAGS: u32 = ACQ_CFG_LOOPBACK | ACQ_CFG_BAR2;

/// Statistics (`ACQ_IOC_GET_STATS`). Counters run from module load or the last
/// `ACQ_IOC_RESET`, across sessions, except `read_offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcqStats {
    /// Bytes returned by read().
    pub bytes: u64,
    /// Data blocks the driver consumed from the ring.
    pub blocks: u64,
    /// Overflow episodes seen in the stream (completions flagged OVERFLOW).
    pub overflows: u64,
    /// Bytes the card dropped (sum of the completions' `lost_bytes`).
    pub lost_bytes: u64,
    /// Errors: error completions, device error events, halts and watchdog resets.
    pub errors: u64,
    /// Interrupts the driver handled (all vectors).
    pub interrupts: u64,
    /// Stream offset (within the current session) of the next byte read() returns.
    /// After read() fails with `EPIPE` (overflow) or `EIO` this is where the stream
    /// continues: a verifier resynchronises from it.
    pub read_offset: u64,
    /// Sessions started so far (explicit start, read() auto-start, recovery restarts).
    /// A change means `read_offset` restarted from 0.
    pub session: u64,
    /// Stalls the watchdog detected (each one reset and restarted the card).
    pub watchdog_resets: u64,
    /// Current state: `ACQ_STATE_*`.
    pub state: u32,
    /// Lost wake-ups: a reader's periodic re-check found completions an interrupt had
    /// announced, or a change of state, that nobody woke it for. Always 0 for a correct
    /// driver (docs/driver.md, "Lost wake-ups"); each one is also logged. (ABI 1.3; was
    /// `reserved`, 0.)
    pub lost_wakeups: u32,
    // --- appended in ABI 1.1 (zero-copy); only `ACQ_IOC_GET_STATS` (96 bytes) fills them.
    /// Pages in the card's buffer pool (ring buffers plus spare pages for lending).
    pub pool_pages: u32,
    /// Pool pages nobody else holds (not lent to a pipe, a socket or a page cache):
    /// `pool_free == pool_pages` once every lent page came back.
    pub pool_free: u32,
    /// Bytes handed to pipes by splice() (without a copy). `bytes` counts read() only.
    pub spliced_bytes: u64,
}

/// [`AcqStats::state`]: no session.
pub const ACQ_STATE_STOPPED: u32 = 0;
/// [`AcqStats::state`]: a session is running.
pub const ACQ_STATE_RUNNING: u32 = 1;
/// [`AcqStats::state`]: the engine halted on a fatal error; the driver restarts it.
pub const ACQ_STATE_ERROR: u32 = 2;
/// [`AcqStats::state`]: the card was removed.
pub const ACQ_STATE_REMOVED: u32 = 3;

/// Card and driver limits (`ACQ_IOC_GET_INFO`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcqInfo {
    /// [`ACQ_ABI_VERSION`].
    pub abi_version: u32,
    /// Card index N of `/dev/acqN`.
    pub index: u32,
    /// The card's VERSION register.
    pub hw_version: u32,
    /// The card's CAPS register.
    pub caps: u32,
    /// The card's FIFO depth in bytes.
    pub fifo_depth: u32,
    /// Interrupt mode: `ACQ_IRQ_MSIX` or `ACQ_IRQ_MSI`.
    pub irq_mode: u32,
    /// Largest `AcqConfig::ring_log2` the driver accepts.
    pub max_ring_log2: u32,
    /// Largest `AcqConfig::block_size` the driver accepts (one page per buffer).
    pub max_block_size: u32,
}

/// [`AcqInfo::irq_mode`]: MSI-X, vector 0 completions and vector 1 errors.
pub const ACQ_IRQ_MSIX: u32 = 1;
/// [`AcqInfo::irq_mode`]: one MSI message for every cause.
pub const ACQ_IRQ_MSI: u32 = 2;

/// Errno values of read() with a documented meaning (Linux numbering).
pub mod errno {
    /// Data was lost to an overflow just before the next byte (once per episode, like an
    /// ALSA xrun). `AcqStats::read_offset` tells where the stream continues.
    pub const EPIPE: i32 = 32;
    /// An error completion, a device error or a watchdog reset (once per event). The
    /// stream continues; after a reset in a new session (see `AcqStats::session`).
    pub const EIO: i32 = 5;
    /// The card was removed.
    pub const ENODEV: i32 = 19;
    /// O_NONBLOCK and no data is ready.
    pub const EAGAIN: i32 = 11;
    /// A signal arrived before any byte was copied.
    pub const EINTR: i32 = 4;
}

const _: () = assert!(core::mem::size_of::<AcqConfig>() == 40);
const _: () = assert!(core::mem::size_of::<AcqStats>() == 96);
const _: () = assert!(core::mem::offset_of!(AcqStats, pool_pages) == ACQ_STATS_V1_SIZE);
const _: () = assert!(core::mem::size_of::<AcqInfo>() == 32);
const _: () = assert!(core::mem::size_of::<AcqMmapSync>() == 40);
const _: () = assert!(core::mem::size_of::<AcqPbStats>() == 120);
const _: () = assert!(core::mem::size_of::<AcqPbRelease>() == 40);
const _: () = assert!(core::mem::size_of::<AcqExpBuf>() == 24);
const _: () = assert!(core::mem::size_of::<AcqPbImport>() == 24);
const _: () = assert!(core::mem::size_of::<AcqPbQueue>() == 16);
