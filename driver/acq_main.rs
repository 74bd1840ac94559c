// SPDX-License-Identifier: GPL-2.0

//! pcie-acq: driver for the virtual PCIe data-acquisition card (docs/device.md).
//!
//! One `/dev/acqN` per card with read(), poll() and ioctl() over the card's capture DMA
//! ring. The design (docs/driver.md):
//!
//! * [`Card`] is the per-card state shared by the PCI binding, the interrupt handlers, the
//!   watchdog and open files. It lives in an [`Arc`], so an open file keeps it alive after
//!   the card is unbound. Everything the hardware touches ([`Hw`]: rings, event page, the
//!   buffer pool) sits in [`Inner::hw`] under the card's mutex and is freed at unbind,
//!   under that mutex, after the engine was stopped. No path holds that mutex while it
//!   touches user memory: read() and write() copy with it dropped, holding a reference
//!   on the page ([`PageRef`]), which outlives an unbind that happens meanwhile.
//! * The completion ring itself is the queue of captured blocks: read() consumes
//!   completions in order, copies from the buffer pages and reposts them.
//! * Interrupts only wake (without losing a wake-up: [`Sleepers`]): vector 0
//!   (completions) wakes the readers; vector 1 (errors)
//!   wakes its IRQ thread, which reads the status registers. With MSI (one vector) the
//!   thread reads registers only when the event page's `events` counter moved.
//! * A delayed work item is the watchdog: a running engine that has buffers but makes no
//!   progress is reset and restarted.
//! * BAR2 streaming mode ([`bar2`], `ACQ_CFG_BAR2`): the same sessions without DMA. The
//!   card keeps event page, completions and data in its BAR2; the driver reads them
//!   there and copies each block into the ring slot's pool page, after which the page
//!   takes the DMA path's way through read(), splice() and mmap().

//!
//! Where things are (one concern a file; the data path in the order a block takes it):
//!
//! | file | concern |
//! |---|---|
//! | `acq_main.rs` | the shared types ([`Card`], [`Inner`], [`Hw`]), probe and the module |
//! | `pool.rs` | DMA memory: pool pages with streaming mappings, coherent regions |
//! | `completions.rs` | reading a completion record, for every ring (host memory, BAR2) |
//! | `posting.rs` | writing a descriptor and publishing the producer index (doorbell only when asked), for every ring |
//! | `pageref.rs` | a page reference held across a copy to or from user memory |
//! | `bar0.rs` | BAR0 registers and the PCI function |
//! | `card.rs` | register, completion and event-page access; liveness and recovery |
//! | `ring.rs` | sessions: start, stop, reposting consumed buffers, a block to the CPU |
//! | `interrupts.rs` | the handlers that wake consumers; vector-1 causes in the IRQ thread |
//! | `capture.rs` | read()/readv()/io_uring (`->read_iter`) and poll(): the errno contract |
//! | `splice.rs` | splice(): pool pages lent to pipes, their buffer operations |
//! | `mmap.rs` | mmap() and `ACQ_IOC_MMAP_SYNC` |
//! | `dmabuf.rs` | `ACQ_IOC_EXPBUF`: the ring's pages as a dma-buf for another device |
//! | `watchdog.rs` | reset and restart of a card that stopped making progress |
//! | `ratelimit.rs` | a rate limit for the log messages a lying card causes per block |
//! | `control.rs` | ioctl(), configuration checks, statistics, unbind |
//! | `chardev.rs` | `/dev/acqN` and `/dev/acqN-out`: `file_operations` trampolines, generic over the node where both have the operation |
//! | `playback.rs` | the playback channel (`/dev/acqN-out`) |
//! | `bar2.rs` | BAR2 streaming mode |
//! | `shim.c` | the few kernel helpers without a Rust abstraction in 7.3 |
//! | `shim_dmabuf.c` | dma-buf: the exporter's callbacks, the importer's attach and map |

use core::pin::Pin;
use core::ptr;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};

use kernel::{
    bindings, device,
    device::{Bound, Core},
    dma::{Coherent, Device as _, DmaMask},
    error::to_result,
    fs::{file, File},
    io::Io,
    iov::{IovIterDest, IovIterSource},
    irq::{self, IrqReturn, ThreadedIrqReturn},
    mm::virt::VmaNew,
    new_mutex, new_poll_condvar, new_spinlock,
    page::{Page, PAGE_SIZE},
    pci,
    prelude::*,
    str::CString,
    sync::{
        aref::ARef,
        atomic::{Acquire, Atomic, Relaxed, Release},
        barrier::{dma_mb, mb, smp_mb, Full, Read, Write},
        poll::{PollCondVar, PollTable},
        Arc, CondVar, CondVarTimeoutResult, Mutex, MutexGuard, SpinLock,
    },
    time::{msecs_to_jiffies, Instant, Jiffies, Monotonic},
    types::{ForeignOwnable, Opaque},
    uaccess::{UserPtr, UserSlice},
    workqueue::{self, impl_has_delayed_work, new_delayed_work, DelayedWork, WorkItem},
};

/// The shared hardware contract (register map, structures, patterns), included by path:
/// the device model and the driver compile the same file.
#[path = "../device-model/acq-hw/src/regs.rs"]
#[allow(dead_code, unreachable_pub, missing_docs, clippy::all)]
mod regs;

/// The user API, shared with the guest tools.
#[path = "uapi.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

use uapi::{AcqConfig, AcqInfo, AcqStats};

/// BAR2 streaming mode (no DMA): the card's on-card memory instead of host memory.
mod bar2;
/// The playback channel (host -> card): `/dev/acqN-out`.
mod playback;

mod bar0;
mod capture;
mod card;
mod chardev;
mod completions;
mod control;
mod dmabuf;
mod interrupts;
mod mmap;
mod pageref;
mod pool;
mod posting;
mod ratelimit;
mod ring;
mod splice;
mod watchdog;

use bar0::*;
use capture::*;
use control::*;
use interrupts::*;
use pageref::PageRef;
use ratelimit::LogLimit;
use splice::*;
use watchdog::*;

/// Bytes of BAR0 the driver maps: the register window (the MSI-X table and PBA above it
/// belong to the PCI core).
const BAR0_LEN: usize = regs::bar::REG_WINDOW_SIZE as usize;

/// Largest ring (and buffer pool) the driver allocates per card: 1024 pages = 4 MiB.
const MAX_RING_LOG2: u32 = 10;
const MAX_ENTRIES: usize = 1 << MAX_RING_LOG2;
/// Pages in the buffer pool: the largest ring plus as many spares, so that pages lent to
/// pipes (splice) can be replaced in the ring while the pipe holds them.
const POOL_PAGES: usize = 2 * MAX_ENTRIES;
/// `Hw::slot_page` entry of a ring slot without a page.
const NO_PAGE: u16 = u16::MAX;
/// ->confirm of a lent page waits at most this long for the DMA into it.
const CONFIRM_TIMEOUT_MS: u32 = 2000;
/// `splice()` flag (include/linux/splice.h).
const SPLICE_F_NONBLOCK: c_uint = 0x02;
/// `kiocb::ki_flags` bit of a call that must not block (include/linux/fs.h: `IOCB_NOWAIT`
/// is `RWF_NOWAIT`, 0x8; a cast macro, so not in the bindings). io_uring sets it on its
/// first, inline attempt at a file that poll() reports ready.
const IOCB_NOWAIT: c_int = 0x08;
/// `file::f_mode` bit of a file whose reads and writes honour `IOCB_NOWAIT`
/// (include/linux/fs.h, a cast macro too): without it `preadv2(RWF_NOWAIT)` fails with
/// EOPNOTSUPP, and io_uring skips the inline attempt.
const FMODE_NOWAIT: c_uint = 1 << 27;
/// Most cards the driver names (`/dev/acq0` .. `/dev/acq31`).
const MAX_CARDS: u32 = 32;
/// Watchdog period.
const WATCHDOG_MS: u32 = 500;
/// A running engine with buffers that completes nothing for this long (plus four block
/// times at the configured rate) is considered stuck.
const STALL_MS: u64 = 2000;
/// Readers re-check the ring at least this often while they sleep.
const READ_RECHECK_MS: u32 = 200;
/// How long a session start waits for a function reset the watchdog does (one watchdog
/// period to begin it, and the PCI core's FLR with its wait for the card).
const RESET_WAIT_MS: u32 = 10_000;
/// The slowest rate a configuration may set: a full ring moves within this many seconds
/// (so the watchdog's stall budget and playback's drain at close stay bounded).
const MAX_RING_SECONDS: u64 = 60;

// poll() event bits (include/uapi/asm-generic/poll.h).
const POLLIN: c_uint = 0x0001;
const POLLERR: c_uint = 0x0008;
const POLLHUP: c_uint = 0x0010;
const POLLRDNORM: c_uint = 0x0040;

// ---------------------------------------------------------------------------
// Single-page streaming DMA mappings (C shim)
// ---------------------------------------------------------------------------

extern "C" {
    fn acq_shim_dma_map_page(
        dev: *mut c_void,
        page: *mut c_void,
        size: usize,
        addr: *mut bindings::dma_addr_t,
    ) -> c_int;
    fn acq_shim_dma_unmap_page(dev: *mut c_void, addr: bindings::dma_addr_t, size: usize);
    fn acq_shim_dma_sync_for_cpu(dev: *mut c_void, addr: bindings::dma_addr_t, size: usize);
    fn acq_shim_dma_sync_for_device(dev: *mut c_void, addr: bindings::dma_addr_t, size: usize);
    fn acq_shim_lend_page(
        pipe: *mut bindings::pipe_inode_info,
        page: *mut c_void,
        offset: c_uint,
        len: c_uint,
        owner: c_ulong,
    ) -> isize;
    fn acq_shim_page_count(page: *mut c_void) -> c_int;
    fn acq_shim_cond_resched();
    fn acq_shim_page_set_index(page: *mut c_void, index: c_ulong);
}

/// One page of the buffer pool with a streaming (device-to-memory) DMA mapping.
///
/// The page is a normal `struct page`, so the next issue can lend it to a pipe (splice) or
/// map it into a process (mmap) instead of copying from it.
///
/// # Invariants
///
/// `addr` is a live `DMA_FROM_DEVICE` mapping of the whole of `page` for `dev`, created by
/// [`StreamingPage::new`] and removed only by `drop`.
struct StreamingPage {
    page: Page,
    addr: bindings::dma_addr_t,
    dev: ARef<device::Device>,
}

/// The C `struct device` behind a Rust device reference.
fn raw_dev<Ctx: device::DeviceContext>(dev: &device::Device<Ctx>) -> *mut c_void {
    // `device::Device` is a transparent wrapper of `struct device` (`Opaque`), so this is a
    // plain pointer conversion; the C side takes it mutably as usual.
    ptr::from_ref(dev).cast::<c_void>().cast_mut()
}

// ---------------------------------------------------------------------------
// Coherent DMA memory shared with the card (rings, event page)
// ---------------------------------------------------------------------------

/// A block of coherent DMA memory accessed as little-endian 32-bit words at byte offsets.
/// The card reads and writes it concurrently, so every access is volatile; out-of-range
/// offsets read 0 and drop writes (they would be driver bugs, not memory corruption).
struct DmaRegion {
    mem: Coherent<[u32]>,
}

/// Everything the card reaches by DMA. Dropped (unmapped and freed) at unbind, after the
/// engine was stopped.
struct Hw {
    desc: DmaRegion,
    comp: DmaRegion,
    event: DmaRegion,
    /// The buffer pool (`POOL_PAGES` pages).
    pool: KVec<StreamingPage>,
    /// The pool page each ring slot carries (`NO_PAGE`: none yet).
    slot_page: KVec<u16>,
    /// Pool pages assigned to a ring slot.
    in_ring: KVec<bool>,
    /// Where the search for a free pool page continues.
    cursor: usize,
    /// mmap mode: the control page (page 0 of the mapping).
    ctl: Page,
}

// ---------------------------------------------------------------------------
// Per-card state
// ---------------------------------------------------------------------------

/// Mutable card state, under [`Card::inner`].
struct Inner {
    /// DMA memory; `None` once the card was unbound.
    hw: Option<Hw>,
    cfg: AcqConfig,
    stats: AcqStats,
    /// A file is open (one opener at a time).
    open: bool,
    /// A session is running.
    running: bool,
    /// The engine halted on a fatal error (cleared by the next start).
    halted: bool,
    /// The card is gone: unbound, or dead for good (config space answers all-ones, or
    /// the card stays silent after a function reset). Every call gets ENODEV. Only the
    /// unbind frees its memory.
    removed: bool,
    /// Next completion index to consume, and descriptors posted, in this session.
    head: u32,
    prod: u32,
    /// Bytes of completion `head` already returned by read().
    block_pos: u32,
    /// read() owes an `EPIPE` (overflow) / an `EIO` (error) before more data.
    xrun: bool,
    err: bool,
    /// Event page `events` counter last seen (MSI: were there vector-1 causes?).
    last_events: u32,
    /// Watchdog: completion count at the last tick and how long it has not moved.
    wd_cons: u32,
    wd_still_ms: u64,
    /// The ring is mapped into the open file's process (mmap mode until close()).
    mapped: bool,
    /// mmap mode: blocks from `head` reported ready by the last sync (the consumer holds
    /// them; at most this many can be released).
    mmap_held: u32,
    /// The session runs in BAR2 streaming mode (latched from the configuration at start).
    bar2: bool,
    /// Sessions ended by STOP, RESET or close() so far: a read() or splice() that sees
    /// this move while it runs was stopped, and must not start the card again.
    stops: u64,
    /// Sessions started so far (never reset): a read() that copied a block without the
    /// lock finds out whether that block's session still owns the ring.
    starts: u64,
    /// `stops` as of the last poll() that found a session running: a poll() that finds
    /// it moved since was woken by the STOP or RESET that ended the session it watched,
    /// and must not start the card again (see `Card::poll`).
    poll_stops: Option<u64>,
    /// The card did not answer a soft reset: a function-level reset is due. The watchdog
    /// does it with the mutex dropped (an FLR takes 100 ms and more); a session start
    /// waits for it (`Card::wait_for_reset`).
    flr_due: bool,
    /// That reset is in progress (the mutex is not held meanwhile).
    resetting: bool,
    /// A read() or splice() owns the stream position for its whole call (`inner` is
    /// dropped for each copy to user memory, pageref.rs, and the call's bytes must be
    /// contiguous): others wait for it interruptibly (`Card::claim_reader`).
    reader_busy: bool,
    /// The "completion passed but never written" message (a lying card could cause one
    /// per block).
    lost_log: LogLimit,
}

impl Inner {
    fn entries(&self) -> u32 {
        regs::ring::entries(self.cfg.ring_log2)
    }

    /// The BAR2 slot layout of the session, in BAR2 mode.
    fn bar2_layout(&self) -> Option<bar2::Layout> {
        self.bar2.then(|| bar2::Layout::of(&self.cfg))
    }
}

/// Default configuration of both channels: 4 KiB blocks, 256 buffers, unlimited rate
/// (capture: as fast as the card; playback: as fast as the host supplies data), COUNTER
/// pattern seed 0, one interrupt per 16 completions or 1 ms.
const DEFAULT_CONFIG: AcqConfig = AcqConfig {
    block_size: 4096,
    ring_log2: 8,
    rate: 0,
    seed: 0,
    pattern: regs::pattern::COUNTER,
    irq_mod_count: 16,
    irq_mod_time_us: 1000,
    flags: 0,
};

/// One card, shared by the binding, the IRQ handlers, the watchdog and open files.
#[pin_data]
struct Card {
    index: u32,
    hw_version: u32,
    caps: u32,
    fifo_depth: u32,
    irq_mode: u32,
    /// The PCI function, for a function-level reset of a card that stopped answering.
    pdev: PciFunction,
    bar: pci::DevresBar<BAR0_LEN>,
    /// BAR2 (on-card memory) for BAR2 streaming mode; `None` if the card cannot do it.
    bar2: Option<bar2::Bar2>,
    #[pin]
    inner: Mutex<Inner>,
    /// A function reset is in progress (`Inner::resetting`, readable without `inner`: the
    /// playback channel must not take the card for gone meanwhile).
    resetting: Atomic<bool>,
    /// Readers and pollers sleep here; interrupts, stop, errors and removal wake them.
    #[pin]
    wait: PollCondVar,
    /// Readers about to sleep on `wait` (interrupts.rs).
    sleepers: Sleepers,
    #[pin]
    watchdog: DelayedWork<Card>,
    irqs: Atomic<u64>,
    /// Per pool page: 1 while the page is posted to the card (DMA may write it), 0 once
    /// its completion was consumed. Read without the mutex by a lent page's ->confirm.
    busy: KVec<Atomic<u32>>,
    /// The playback channel (playback.rs), with its own lock and wait queue.
    #[pin]
    pb: Mutex<playback::PbInner>,
    #[pin]
    pb_wait: PollCondVar,

    /// Writers about to sleep on `pb_wait`.
    pb_sleepers: Sleepers,
    /// IRQ_MASK is one register for both channels, which start and stop under their own
    /// locks: every change of it is made under this one (see [`Card::set_irq_mask`]),
    /// or one channel's read-modify-write could undo the other's write.
    #[pin]
    irq_mask: SpinLock<()>,
}

// ---------------------------------------------------------------------------
// Character device (/dev/acqN): our own file_operations, because the Rust miscdevice
// abstraction has no poll() in 7.3.
// ---------------------------------------------------------------------------

/// A registered `struct miscdevice` named `acqN` for one card.
///
/// # Invariants
///
/// `misc` is registered with [`ACQ_FOPS`] from successful initialisation until drop.
#[pin_data(PinnedDrop)]
struct CharDev {
    card: Arc<Card>,
    name: CString,
    #[pin]
    misc: Opaque<bindings::miscdevice>,
}

// ---------------------------------------------------------------------------
// Card numbering
// ---------------------------------------------------------------------------

/// Allocated card indices (bit N = `/dev/acqN` in use).
static INDICES: Atomic<u32> = Atomic::new(0);

/// An allocated card index, freed on drop.
struct CardIndex(u32);

impl CardIndex {
    fn alloc() -> Result<Self> {
        let mut cur = INDICES.load(Relaxed);
        loop {
            let free = (!cur).trailing_zeros();
            if free >= MAX_CARDS {
                return Err(ENOSPC);
            }
            match INDICES.cmpxchg(cur, cur | (1 << free), Full) {
                Ok(_) => return Ok(Self(free)),
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for CardIndex {
    fn drop(&mut self) {
        let mut cur = INDICES.load(Relaxed);
        loop {
            match INDICES.cmpxchg(cur, cur & !(1 << self.0), Full) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// PCI driver
// ---------------------------------------------------------------------------

/// Per-binding data. Field order is drop order: no new opens, then no interrupts, then the
/// card reference and the index.
struct AcqData<'b> {
    _chardev: Pin<KBox<CharDev>>,
    _pb_chardev: Option<Pin<KBox<CharDev>>>,
    _irqs: Irqs<'b>,
    card: Arc<Card>,
    _index: CardIndex,
}

impl Drop for AcqData<'_> {
    fn drop(&mut self) {
        // Runs after remove() and before devres releases the BAR: stop the card and free
        // its DMA memory while the registers are still reachable.
        self.card.shutdown();
        pr_info!("acq{}: removed\n", self.card.index);
    }
}

struct AcqDriver;

// The card is matched by its class code (data acquisition, "other"): `pci::Vendor` has no
// constructor for the test vendor ID 0x1234, and the model may override vendor and device
// IDs anyway. probe() then identifies the card by its ID register (magic "ACQ1").
kernel::pci_device_table!(
    PCI_TABLE,
    <AcqDriver as pci::Driver>::IdInfo,
    [(
        pci::DeviceId::from_class(regs::pci::CLASS_CODE, pci::ClassMask::Full as u32),
        ()
    )]
);

impl pci::Driver for AcqDriver {
    type IdInfo = ();
    type Data<'bound> = AcqData<'bound>;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        probe(pdev)
    }
}

fn probe<'b>(pdev: &'b pci::Device<Core<'_>>) -> Result<AcqData<'b>> {
    pdev.enable_device_mem()?;
    // SAFETY: probe is the only user of the device's DMA API at this point.
    unsafe { pdev.dma_set_mask_and_coherent(DmaMask::new::<64>())? };

    let bar = pdev.iomap_region_sized::<BAR0_LEN>(regs::bar::BAR0_INDEX, c"acq")?;
    let (hw_version, caps, fifo_depth) = {
        let r = Regs(&bar);
        let mut id = r.rd(regs::reg::ID);
        // Not when config space is all-ones too: a function that is gone (what served it
        // died) would keep the reset waiting for it for a minute, under the device lock.
        if id == u32::MAX && PciFunction::present_at_probe(pdev) {
            // All-ones: a card that does not answer, hung since before we came (the
            // driver before us left it so, or firmware did). A function reset is what
            // revives a hung card at run time too (the watchdog's); once here, then give
            // up with ENODEV below.
            let ret = PciFunction::reset_locked(pdev);
            id = r.rd(regs::reg::ID);
            dev_warn!(
                pdev,
                "the card did not answer at probe (ID all-ones): function reset ({}), ID now {:#x}\n",
                ret,
                id
            );
        }
        let version = r.rd(regs::reg::VERSION);
        let caps = r.rd(regs::reg::CAPS);
        if id != regs::id::MAGIC
            || regs::version::major(version) != regs::version::MAJOR
            || caps & regs::caps::CAPTURE_DMA == 0
        {
            dev_err!(
                pdev,
                "not a usable pcie-acq card (ID {:#x}, VERSION {:#x}, CAPS {:#x})\n",
                id,
                version,
                caps
            );
            return Err(ENODEV);
        }
        r.soft_reset();
        (version, caps, r.rd(regs::reg::FIFO_DEPTH))
    };
    // Bus mastering only for an identified card, and taken away again if the rest of
    // probe fails: a function we did not bind must not write into memory.
    pdev.set_master();
    let bound = probe_identified(pdev, bar, hw_version, caps, fifo_depth);
    if bound.is_err() {
        PciFunction(pdev.into()).clear_master();
    }
    bound
}

/// The rest of probe, for an identified card with bus mastering on.
fn probe_identified<'b>(
    pdev: &'b pci::Device<Core<'_>>,
    bar: pci::Bar<'b, BAR0_LEN>,
    hw_version: u32,
    caps: u32,
    fifo_depth: u32,
) -> Result<AcqData<'b>> {
    // BAR2 (on-card memory) for BAR2 streaming mode; DMA mode does not need it.
    let bar2 = if caps & regs::caps::BAR2_STREAM != 0 {
        match bar2::Bar2::map(pdev, Regs(&bar).rd(regs::reg::BAR2_SIZE)) {
            Ok(b) => Some(b),
            Err(e) => {
                dev_warn!(
                    pdev,
                    "BAR2 not mapped ({:?}): BAR2 streaming mode unavailable\n",
                    e
                );
                None
            }
        }
    } else {
        None
    };

    let dev: &device::Device<Bound> = pdev.as_ref();
    let hw = Hw::new(dev)?;
    let pb_hw = if caps & regs::caps::PLAYBACK_DMA != 0 {
        Some(playback::PbHw::new(dev)?)
    } else {
        None
    };
    let mut busy = KVec::with_capacity(POOL_PAGES, GFP_KERNEL)?;
    for _ in 0..POOL_PAGES {
        busy.push(Atomic::new(0u32), GFP_KERNEL)?;
    }
    let (vectors, irq_mode) = Irqs::alloc(pdev)?;
    let index = CardIndex::alloc()?;
    let bar = bar.into_devres()?;
    let number = index.0;
    let card = Arc::pin_init(
        pin_init!(Card {
            index: index.0,
            hw_version,
            caps,
            fifo_depth,
            irq_mode,
            pdev: PciFunction(pdev.into()),
            bar,
            bar2,
            inner <- new_mutex!(Inner {
                hw: Some(hw),
                cfg: DEFAULT_CONFIG,
                stats: AcqStats::default(),
                open: false,
                running: false,
                halted: false,
                removed: false,
                head: 0,
                prod: 0,
                block_pos: 0,
                xrun: false,
                err: false,
                last_events: 0,
                wd_cons: 0,
                wd_still_ms: 0,
                mapped: false,
                mmap_held: 0,
                bar2: false,
                stops: 0,
                starts: 0,
                poll_stops: None,
                flr_due: false,
                resetting: false,
                reader_busy: false,
                lost_log: LogLimit::new(),
            }),
            resetting: Atomic::new(false),
            wait <- new_poll_condvar!("acq::wait"),
            sleepers: Sleepers::new(number, "capture"),
            watchdog <- new_delayed_work!("acq::watchdog"),
            irqs: Atomic::new(0),
            busy,
            pb <- new_mutex!(playback::PbInner::new(pb_hw)),
            pb_wait <- new_poll_condvar!("acq::pb_wait"),

            pb_sleepers: Sleepers::new(number, "playback"),
            irq_mask <- new_spinlock!((), "acq::irq_mask"),
        }),
        GFP_KERNEL,
    )?;
    let irqs = Irqs::request(vectors, irq_mode, &card)?;
    let _ = watchdog_queue().enqueue_delayed(card.clone(), msecs_to_jiffies(WATCHDOG_MS));
    let chardev =
        match CharDev::new(card.clone(), false).and_then(|i| KBox::pin_init(i, GFP_KERNEL)) {
            Ok(c) => c,
            Err(e) => {
                card.shutdown();
                return Err(e);
            }
        };
    let pb_chardev = if caps & regs::caps::PLAYBACK_DMA != 0 {
        match CharDev::new(card.clone(), true).and_then(|i| KBox::pin_init(i, GFP_KERNEL)) {
            Ok(c) => Some(c),
            Err(e) => {
                drop(chardev);
                card.shutdown();
                return Err(e);
            }
        }
    } else {
        None
    };
    let mode = if irq_mode == uapi::ACQ_IRQ_MSIX {
        "MSI-X"
    } else {
        "MSI"
    };
    dev_info!(
        pdev,
        "/dev/acq{}: version {}.{}, FIFO {} KiB, BAR2 {} KiB, {}\n",
        card.index,
        regs::version::major(hw_version),
        regs::version::minor(hw_version),
        fifo_depth / 1024,
        card.bar2.as_ref().map_or(0, |b| b.size() / 1024),
        mode
    );
    Ok(AcqData {
        _chardev: chardev,
        _pb_chardev: pb_chardev,
        _irqs: irqs,
        card,
        _index: index,
    })
}

kernel::module_pci_driver! {
    type: AcqDriver,
    name: "acq",
    authors: ["pcie-acq"],
    description: "pcie-acq data-acquisition card",
    license: "GPL v2",
    params: {
        force_msi: bool {
            default: false,
            description: "Use one MSI vector even when MSI-X is available (tests the fallback)",
        },
        debug_wake_window_ms: u32 {
            default: 0,
            description: "Test only: a waiter sleeps this long between its last check of the ring and its sleep, to show that no wake-up is lost there (tests/acq-e2e/tests/vm/driver.rs)",
        },
    },
}
