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
//!   under that mutex, after the engine was stopped: nobody can be copying from a buffer
//!   at that moment.
//! * The completion ring itself is the queue of captured blocks: read() consumes
//!   completions in order, copies from the buffer pages and reposts them.
//! * Interrupts only wake: vector 0 (completions) wakes the readers; vector 1 (errors)
//!   wakes its IRQ thread, which reads the status registers. With MSI (one vector) the
//!   thread reads registers only when the event page's `events` counter moved.
//! * A delayed work item is the watchdog: a running engine that has buffers but makes no
//!   progress is reset and restarted.
//! * BAR2 streaming mode ([`bar2`], `ACQ_CFG_BAR2`): the same sessions without DMA. The
//!   card keeps event page, completions and data in its BAR2; the driver reads them
//!   there and copies each block into the ring slot's pool page, after which the page
//!   takes the DMA path's way through read(), splice() and mmap().

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
    irq::{self, IrqReturn, ThreadedIrqReturn},
    mm::virt::VmaNew,
    new_mutex, new_poll_condvar,
    page::{Page, PAGE_SIZE},
    pci,
    prelude::*,
    str::CString,
    sync::{
        aref::ARef,
        atomic::{Acquire, Atomic, Relaxed, Release},
        barrier::{dma_mb, mb, Full, Read, Write},
        poll::{PollCondVar, PollTable},
        Arc, CondVarTimeoutResult, Mutex, MutexGuard,
    },
    time::msecs_to_jiffies,
    types::{ForeignOwnable, Opaque},
    iov::IovIterDest,
    uaccess::{UserPtr, UserSlice},
    workqueue::{self, impl_has_delayed_work, new_delayed_work, DelayedWork, WorkItem},
};

/// The shared hardware contract (register map, structures, patterns), included by path:
/// the device model and the driver compile the same file.
#[path = "../device-model/src/regs.rs"]
#[allow(dead_code, unreachable_pub, missing_docs, clippy::all)]
mod regs;

/// The user API, shared with the guest tools.
#[path = "uapi.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

use uapi::{AcqConfig, AcqInfo, AcqStats};

/// The playback channel (host -> card): `/dev/acqN-out`.
mod playback;
/// BAR2 streaming mode (no DMA): the card's on-card memory instead of host memory.
mod bar2;

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
/// Most cards the driver names (`/dev/acq0` .. `/dev/acq31`).
const MAX_CARDS: u32 = 32;
/// Watchdog period.
const WATCHDOG_MS: u32 = 500;
/// A running engine with buffers that completes nothing for this long (plus four block
/// times at the configured rate) is considered stuck.
const STALL_MS: u64 = 2000;
/// Readers re-check the ring at least this often while they sleep.
const READ_RECHECK_MS: u32 = 200;
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

/// Between two blocks of one read, splice or write call: other tasks get the CPU, and a
/// pending signal ends the call with the `done` bytes it moved (a fatal one thus ends any
/// call within a block time, even one that only finds empty or bad blocks).
/// `None`: go on with the next block.
fn yield_between_blocks(done: usize) -> Option<Result<usize>> {
    // SAFETY: called from process context (a file operation), where sleeping is allowed.
    unsafe { acq_shim_cond_resched() };
    if !kernel::current!().signal_pending() {
        None
    } else if done > 0 {
        Some(Ok(done))
    } else {
        // Nothing moved (say, a card completing empty blocks): the call is restarted
        // after the handler, or fails with EINTR.
        Some(Err(ERESTARTSYS))
    }
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

/// The card's PCI function, for the two PCI-core calls 7.3 has no Rust wrapper for.
struct PciFunction(ARef<pci::Device>);

impl PciFunction {
    fn raw(&self) -> *mut bindings::pci_dev {
        // `pci::Device` is a transparent wrapper of `struct pci_dev`.
        ptr::from_ref::<pci::Device>(&self.0)
            .cast::<bindings::pci_dev>()
            .cast_mut()
    }

    /// Function-level reset, unless the device lock is taken (then `-EAGAIN`): the `try`
    /// variant cannot deadlock against an unbind that holds it. The PCI core saves and
    /// restores config space and MSI-X state around the reset.
    fn try_reset(&self) -> c_int {
        // SAFETY: `raw()` is a valid `struct pci_dev`, kept alive by the `ARef`.
        unsafe { bindings::pci_try_reset_function(self.raw()) }
    }

    /// False once the function is gone (its config space reads all-ones: unplugged, or
    /// the slot is powered off).
    fn present(&self) -> bool {
        // SAFETY: `raw()` is a valid `struct pci_dev`, kept alive by the `ARef`.
        unsafe { bindings::pci_device_is_present(self.raw()) }
    }

    /// Clears Bus Master Enable: the function can no longer write to memory.
    fn clear_master(&self) {
        // SAFETY: `raw()` is a valid `struct pci_dev`, kept alive by the `ARef`.
        unsafe { bindings::pci_clear_master(self.raw()) }
    }
}

impl StreamingPage {
    /// A new page with a mapping; `index` (its place in the pool) is stored in the page's
    /// `private` field, where the pipe buffer operations find it.
    fn new(dev: &device::Device<Bound>, index: usize) -> Result<Self> {
        let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        // SAFETY: the page was just allocated by us; nobody else uses its `private` field.
        unsafe { acq_shim_page_set_index(page.as_ptr().cast(), index as c_ulong) };
        let mut addr: bindings::dma_addr_t = 0;
        // SAFETY: `dev` is a valid, bound device and `page` a valid page we own; the shim
        // writes `addr` only on success.
        let ret = unsafe {
            acq_shim_dma_map_page(raw_dev(dev), page.as_ptr().cast(), PAGE_SIZE, &mut addr)
        };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: the mapping was just created.
        Ok(Self {
            page,
            addr,
            dev: dev.into(),
        })
    }

    /// True while somebody besides the pool holds the page: a pipe buffer it was lent to
    /// (and its tee() copies), a socket or a page cache that took its own reference.
    /// Such a page must not be given to the device.
    fn lent(&self) -> bool {
        // SAFETY: `page` is a valid page (we hold a reference).
        unsafe { acq_shim_page_count(self.page.as_ptr().cast()) != 1 }
    }

    /// Bus address of the page.
    fn bus_addr(&self) -> u64 {
        self.addr
    }

    /// Hands the first `len` bytes back to the CPU after the device wrote them.
    fn sync_for_cpu(&self, len: usize) {
        // SAFETY: `addr` is a live mapping of `dev` (type invariant) at least `len` long.
        unsafe { acq_shim_dma_sync_for_cpu(raw_dev(&self.dev), self.addr, len.min(PAGE_SIZE)) };
    }

    /// Hands the page back to the device before it is posted again.
    fn sync_for_device(&self) {
        // SAFETY: `addr` is a live mapping of `dev` (type invariant).
        unsafe { acq_shim_dma_sync_for_device(raw_dev(&self.dev), self.addr, PAGE_SIZE) };
    }

    /// Runs `f` on bytes `off .. off + len` of the page (clamped to the page).
    ///
    /// The caller must own the buffer (not posted to the device) for the data to be
    /// meaningful; memory safety does not depend on it (the device only writes bytes).
    fn with_bytes<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let off = off.min(PAGE_SIZE);
        let len = len.min(PAGE_SIZE - off);
        // SAFETY: `page` is a valid page; the local mapping is released below, after the
        // last use of the slice.
        let base = unsafe { bindings::kmap_local_page(self.page.as_ptr()) }.cast::<u8>();
        // SAFETY: `base` maps the whole page and `off + len <= PAGE_SIZE`. The device may
        // write the page only while the buffer is posted; `u8` has no invalid values.
        let bytes = unsafe { core::slice::from_raw_parts(base.add(off), len) };
        let r = f(bytes);
        // SAFETY: `base` came from `kmap_local_page` above, mappings are released in
        // reverse order, and `bytes` is no longer used.
        unsafe { bindings::kunmap_local(base.cast::<c_void>()) };
        r
    }
}

impl Drop for StreamingPage {
    fn drop(&mut self) {
        // SAFETY: the mapping is live (type invariant) and is removed exactly once, here.
        unsafe { acq_shim_dma_unmap_page(raw_dev(&self.dev), self.addr, PAGE_SIZE) };
        // A pipe may still hold the page (it keeps its own reference and frees the page
        // when done); its index means nothing after this.
        // SAFETY: `page` is a valid page.
        unsafe { acq_shim_page_set_index(self.page.as_ptr().cast(), 0) };
    }
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

impl DmaRegion {
    fn new(dev: &device::Device<Bound>, bytes: usize) -> Result<Self> {
        let words = bytes.div_ceil(4);
        Ok(Self {
            mem: Coherent::<u32>::zeroed_slice(dev, words, GFP_KERNEL)?,
        })
    }

    fn bus_addr(&self) -> u64 {
        self.mem.dma_address()
    }

    fn word_ptr(&self, off: usize) -> Option<*mut u32> {
        let idx = off / 4;
        if off % 4 != 0 || idx >= self.mem.len() {
            return None;
        }
        // SAFETY: `idx` is within the allocation, so the result stays in bounds.
        Some(unsafe { self.mem.as_mut_ptr().cast::<u32>().add(idx) })
    }

    fn read32(&self, off: usize) -> u32 {
        match self.word_ptr(off) {
            // SAFETY: `p` is an aligned pointer into live coherent memory (checked above).
            Some(p) => u32::from_le(unsafe { ptr::read_volatile(p) }),
            None => 0,
        }
    }

    fn write32(&self, off: usize, v: u32) {
        if let Some(p) = self.word_ptr(off) {
            // SAFETY: `p` is an aligned pointer into live coherent memory (checked above).
            unsafe { ptr::write_volatile(p, v.to_le()) };
        }
    }

    fn read64(&self, off: usize) -> u64 {
        regs::join64(self.read32(off), self.read32(off + 4))
    }

    fn write64(&self, off: usize, v: u64) {
        self.write32(off, regs::lo32(v));
        self.write32(off + 4, regs::hi32(v));
    }

    fn zero(&self, bytes: usize) {
        let mut off = 0;
        while off < bytes {
            self.write32(off, 0);
            off += 4;
        }
    }
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

impl Hw {
    fn new(dev: &device::Device<Bound>) -> Result<Self> {
        let mut pool = KVec::with_capacity(POOL_PAGES, GFP_KERNEL)?;
        let mut in_ring = KVec::with_capacity(POOL_PAGES, GFP_KERNEL)?;
        for i in 0..POOL_PAGES {
            pool.push(StreamingPage::new(dev, i)?, GFP_KERNEL)?;
            in_ring.push(false, GFP_KERNEL)?;
        }
        let mut slot_page = KVec::with_capacity(MAX_ENTRIES, GFP_KERNEL)?;
        for _ in 0..MAX_ENTRIES {
            slot_page.push(NO_PAGE, GFP_KERNEL)?;
        }
        Ok(Self {
            desc: DmaRegion::new(dev, MAX_ENTRIES * regs::desc::SIZE)?,
            comp: DmaRegion::new(dev, MAX_ENTRIES * regs::comp::SIZE)?,
            event: DmaRegion::new(dev, PAGE_SIZE)?,
            pool,
            slot_page,
            in_ring,
            cursor: 0,
            ctl: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
        })
    }

    /// Forgets every slot's page (session start: the engine is stopped).
    fn clear_slots(&mut self) {
        self.slot_page.iter_mut().for_each(|p| *p = NO_PAGE);
        self.in_ring.iter_mut().for_each(|r| *r = false);
    }

    /// The pool page ring slot `slot` is to carry when it is posted: its current page,
    /// unless that one was lent and is still held elsewhere, then a free one. `None` when
    /// every pool page is in the ring or lent (the slot stays unposted; the card runs dry
    /// and counts an overflow, which the reader sees as EPIPE).
    ///
    /// With `keep` (the ring is mapped into a process, whose mapping holds references to
    /// the slots' pages) a slot keeps its page.
    fn page_for_slot(&mut self, slot: usize, keep: bool) -> Option<usize> {
        let cur = usize::from(*self.slot_page.get(slot)?);
        if let (Some(true), Some(page)) = (self.in_ring.get(cur).copied(), self.pool.get(cur)) {
            if keep || !page.lent() {
                return Some(cur);
            }
        }
        if let Some(r) = self.in_ring.get_mut(cur) {
            *r = false;
        }
        let n = self.pool.len();
        for _ in 0..n {
            let i = self.cursor;
            self.cursor = if i + 1 >= n { 0 } else { i + 1 };
            let free =
                self.in_ring.get(i) == Some(&false) && self.pool.get(i).is_some_and(|p| !p.lent());
            if free {
                if let (Some(r), Some(sp)) = (self.in_ring.get_mut(i), self.slot_page.get_mut(slot))
                {
                    *r = true;
                    *sp = i as u16;
                    return Some(i);
                }
            }
        }
        if let Some(sp) = self.slot_page.get_mut(slot) {
            *sp = NO_PAGE;
        }
        None
    }

    /// The pool page (index and page) ring slot `slot` carries.
    fn slot_buf(&self, slot: usize) -> Option<(usize, &StreamingPage)> {
        let i = usize::from(*self.slot_page.get(slot)?);
        Some((i, self.pool.get(i)?))
    }

    /// Writes the control page's words (`uapi::ctl` offsets).
    fn write_ctl(&self, words: &[(usize, u64)]) {
        // SAFETY: `ctl` is a valid page; the local mapping is released below.
        let base = unsafe { bindings::kmap_local_page(self.ctl.as_ptr()) }.cast::<u64>();
        for &(off, v) in words {
            if off % 8 == 0 && off + 8 <= PAGE_SIZE {
                // SAFETY: `off` is an aligned offset inside the mapped page. A process may
                // read the page concurrently (it is mapped read-only into it), hence the
                // volatile store of whole words.
                unsafe { ptr::write_volatile(base.add(off / 8), v.to_le()) };
            }
        }
        // SAFETY: `base` came from `kmap_local_page` above and is no longer used.
        unsafe { bindings::kunmap_local(base.cast::<c_void>()) };
    }

    /// Pool pages nobody else holds.
    fn free_pages(&self) -> usize {
        self.pool.iter().filter(|p| !p.lent()).count()
    }

    /// The completion with index `k`, if the card wrote it (its PHASE matches).
    fn completion(&self, k: u32, log2: u32) -> Option<regs::Completion> {
        let base = regs::ring::slot(k, log2) as usize * regs::comp::SIZE;
        let tail = self.comp.read32(base + regs::comp::OFF_TAIL_DWORD);
        if regs::comp::tail_phase(tail) != regs::ring::phase(k, log2) {
            return None;
        }
        // ACQUIRE: the tail dword is read before the rest of the record and the buffer.
        dma_mb(Read);
        Some(regs::Completion {
            stream_offset: self.comp.read64(base + regs::comp::OFF_STREAM_OFFSET),
            lost_bytes: self.comp.read64(base + regs::comp::OFF_LOST_BYTES),
            timestamp_ns: self.comp.read64(base + regs::comp::OFF_TIMESTAMP_NS),
            length: self.comp.read32(base + regs::comp::OFF_LENGTH),
            id: tail as u16,
            flags: (tail >> 16) as u16,
        })
    }

    /// Hands pool page `page` to the card's side: marked busy in `busy` until its
    /// completion is consumed (what a lent page's ->confirm waits for). In BAR2 mode this is
    /// all "posting" does: the slot gets its page now, the data is copied into it later.
    fn arm_page(&self, page: usize, busy: &[Atomic<u32>]) -> Option<&StreamingPage> {
        let buf = self.pool.get(page)?;
        if let Some(b) = busy.get(page) {
            b.store(1, Relaxed);
        }
        buf.sync_for_device();
        Some(buf)
    }

    /// Writes descriptor `k` (id: its ring slot) for pool page `page` (see `arm_page`).
    fn write_desc(&self, k: u32, log2: u32, page: usize, busy: &[Atomic<u32>]) {
        let Some(buf) = self.arm_page(page, busy) else {
            return;
        };
        let id = regs::ring::slot(k, log2) as usize;
        let base = id * regs::desc::SIZE;
        self.desc
            .write64(base + regs::desc::OFF_ADDR, buf.bus_addr());
        self.desc
            .write32(base + regs::desc::OFF_LEN, PAGE_SIZE as u32);
        // id (bits 15:0) and flags (bits 31:16, reserved 0) share one word.
        self.desc
            .write32(base + regs::desc::OFF_ID, id as u32 & 0xFFFF);
    }
}

// ---------------------------------------------------------------------------
// Register access
// ---------------------------------------------------------------------------

/// BAR0 registers, addressed by the offsets of the shared register map. (The kernel's
/// `register!` macro would need a second copy of the map; regs.rs stays the single source
/// of truth, so offsets are checked at run time and a failed access reads as all-ones,
/// like a removed card.)
struct Regs<'a, 'b>(&'a pci::Bar<'b, BAR0_LEN>);

impl Regs<'_, '_> {
    fn rd(&self, off: usize) -> u32 {
        self.0.try_read32(off).unwrap_or(u32::MAX)
    }

    fn wr(&self, off: usize, v: u32) {
        let _ = self.0.try_write32(v, off);
    }

    fn wr64(&self, lo: usize, hi: usize, v: u64) {
        self.wr(lo, regs::lo32(v));
        self.wr(hi, regs::hi32(v));
    }

    /// Stops the engine: ENABLE = 0, then wait for RUNNING = 0 (the model clears it before
    /// it answers the next access; a card that does not gets a soft reset).
    fn stop(&self) {
        self.wr(regs::reg::CTRL, 0);
        for _ in 0..8 {
            if self.rd(regs::reg::STATUS) & regs::status::RUNNING == 0 {
                return;
            }
        }
        self.soft_reset();
    }

    fn soft_reset(&self) {
        self.wr(regs::reg::CTRL, regs::ctrl::SOFT_RESET);
        // The read flushes the write and confirms the reset.
        let _ = self.rd(regs::reg::ID);
    }
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
    /// The card was unbound (removed).
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

/// Default configuration: 4 KiB blocks, 256 buffers, unlimited rate, COUNTER pattern,
/// one interrupt per 16 completions or 1 ms.
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
    /// Readers and pollers sleep here; interrupts, stop, errors and removal wake them.
    #[pin]
    wait: PollCondVar,
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
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self> for Card { self.watchdog }
}

/// The queue the watchdog runs on. A tick may reset the card (FLR waits 100 ms and more),
/// so it goes on the queue for long work items; `system()` (`system_wq`) is deprecated in
/// 7.3 and says so in the kernel log.
fn watchdog_queue() -> &'static workqueue::Queue {
    workqueue::system_long()
}

impl WorkItem for Card {
    type Pointer = Arc<Card>;

    fn run(this: Arc<Card>) {
        if this.watchdog_tick() {
            let _ = watchdog_queue().enqueue_delayed(this, msecs_to_jiffies(WATCHDOG_MS));
        }
    }
}

impl Card {
    /// Runs `f` with the registers, if the card is still bound. `f` must not sleep (the
    /// BAR is protected by RCU).
    fn with_regs<R>(&self, f: impl FnOnce(&Regs<'_, '_>) -> R) -> Option<R> {
        let bar = self.bar.try_access()?;
        Some(f(&Regs(&bar)))
    }

    /// Completion `k` of the running session: from coherent memory, or from BAR2.
    fn completion(&self, g: &Inner, k: u32) -> Option<regs::Completion> {
        let hw = g.hw.as_ref()?;
        let log2 = g.cfg.ring_log2;
        if g.bar2 {
            self.bar2.as_ref()?.completion(k, log2)
        } else {
            hw.completion(k, log2)
        }
    }

    /// A word of the session's event page (in coherent memory, or in BAR2).
    fn event_read(&self, bar2: bool, hw: &Hw, off: usize) -> u32 {
        match (bar2, self.bar2.as_ref()) {
            (true, Some(b)) => b.event_read(off),
            (true, None) => 0,
            (false, _) => hw.event.read32(off),
        }
    }

    /// Writes a driver word of the session's event page.
    fn event_write(&self, bar2: bool, hw: &Hw, off: usize, v: u32) {
        match (bar2, self.bar2.as_ref()) {
            (true, Some(b)) => b.event_write(off, v),
            (true, None) => {}
            (false, _) => hw.event.write32(off, v),
        }
    }

    /// True if the card answers register reads (its ID register reads the magic).
    fn alive(&self) -> bool {
        self.with_regs(|r| r.rd(regs::reg::ID) == regs::id::MAGIC)
            .unwrap_or(false)
    }

    /// Resets a card: a soft reset, and if the card still does not answer (a hung card
    /// ignores register writes), a function-level reset through the PCI core. Returns
    /// whether the card answers afterwards. Counted in `watchdog_resets`.
    fn revive_locked(&self, g: &mut MutexGuard<'_, Inner>) -> bool {
        g.stats.watchdog_resets += 1;
        g.stats.errors += 1;
        let _ = self.with_regs(|r| r.soft_reset());
        if self.alive() {
            return true;
        }
        if !self.pdev.present() {
            // Unplugged (the unbind follows): a function reset would wait for a card that
            // cannot come back.
            return false;
        }
        let ret = self.pdev.try_reset();
        let alive = self.alive();
        pr_warn!(
            "acq{}: card did not answer after a soft reset; function reset: {}, card {}\n",
            self.index,
            ret,
            if alive { "back" } else { "still dead" }
        );
        alive
    }

    fn state(g: &Inner) -> u32 {
        if g.removed {
            uapi::ACQ_STATE_REMOVED
        } else if g.halted {
            uapi::ACQ_STATE_ERROR
        } else if g.running {
            uapi::ACQ_STATE_RUNNING
        } else {
            uapi::ACQ_STATE_STOPPED
        }
    }

    /// Starts a new session with the current configuration.
    fn start_locked(&self, g: &mut MutexGuard<'_, Inner>) -> Result {
        if g.removed {
            return Err(ENODEV);
        }
        if g.running {
            return Err(EBUSY);
        }
        let cfg = g.cfg;
        let log2 = cfg.ring_log2;
        let n = regs::ring::entries(log2);
        if g.hw.is_none() {
            return Err(ENODEV);
        }
        // The mode of this session (ACQ_IOC_SET_CONFIG checked that BAR2 can hold it).
        let bar2 = cfg.flags & uapi::ACQ_CFG_BAR2 != 0;
        let bar2_map = match (bar2, self.bar2.as_ref()) {
            (true, Some(b)) => Some(b),
            (true, None) => return Err(EINVAL),
            (false, _) => None,
        };
        if !self.alive() && !self.revive_locked(g) {
            g.err = true;
            return Err(EIO);
        }
        let keep = g.mapped;
        let Some(hw) = g.hw.as_mut() else {
            return Err(ENODEV);
        };
        self.with_regs(|r| r.stop()).ok_or(ENODEV)?;
        // Zero the completion ring (stale PHASE bits would look new) and the event page,
        // then post a buffer in every slot (pages still lent to pipes are skipped: fewer
        // may be posted when pipes hold most of the pool). In BAR2 mode both live in BAR2
        // and posting only gives the slot a pool page for the copy of its data.
        match bar2_map {
            Some(b) => b.prepare(bar2::Layout::of(&cfg))?,
            None => {
                hw.comp.zero(n as usize * regs::comp::SIZE);
                hw.event.zero(regs::event::SIZE);
            }
        }
        if !keep {
            hw.clear_slots();
        }
        let mut posted = 0;
        while posted < n {
            let Some(page) = hw.page_for_slot(posted as usize, keep) else {
                break;
            };
            if bar2 {
                hw.arm_page(page, &self.busy);
            } else {
                hw.write_desc(posted, log2, page, &self.busy);
            }
            posted += 1;
        }
        // RELEASE: descriptors before the producer index.
        dma_mb(Write);
        self.event_write(bar2, hw, regs::event::OFF_PROD, posted);
        // Completion interrupts stay armed for the whole session (moderation bounds them).
        self.event_write(
            bar2,
            hw,
            regs::event::OFF_IRQ_ARMED,
            regs::event::ARMED_CAPTURE,
        );
        mb(Full);
        let ctrl = if bar2 {
            regs::ctrl::ENABLE | regs::ctrl::MODE_BAR2
        } else {
            regs::ctrl::ENABLE
        };
        let (desc, comp, event) = (hw.desc.bus_addr(), hw.comp.bus_addr(), hw.event.bus_addr());
        let status = self
            .with_regs(|r| {
                r.wr64(regs::reg::DESC_BASE_LO, regs::reg::DESC_BASE_HI, desc);
                r.wr64(regs::reg::COMP_BASE_LO, regs::reg::COMP_BASE_HI, comp);
                r.wr64(regs::reg::EVENT_BASE_LO, regs::reg::EVENT_BASE_HI, event);
                r.wr(regs::reg::RING_LOG2, log2);
                r.wr(regs::reg::BLOCK_SIZE, cfg.block_size);
                r.wr64(regs::reg::RATE_LO, regs::reg::RATE_HI, cfg.rate);
                r.wr(regs::reg::PATTERN, cfg.pattern);
                r.wr64(regs::reg::SEED_LO, regs::reg::SEED_HI, cfg.seed);
                r.wr(regs::reg::IRQ_MOD_COUNT, cfg.irq_mod_count);
                r.wr(regs::reg::IRQ_MOD_TIME_US, cfg.irq_mod_time_us);
                r.wr(regs::reg::STATUS, regs::status::W1C_MASK);
                r.wr(regs::reg::IRQ_STATUS, regs::irq::ALL);
                r.wr(regs::reg::IRQ_MASK, 0);
                if self.caps & regs::caps::LOOPBACK != 0 {
                    let lb = cfg.flags & uapi::ACQ_CFG_LOOPBACK != 0;
                    r.wr(regs::reg::LOOPBACK, u32::from(lb) * regs::loopback::ENABLE);
                }
                r.wr(regs::reg::CTRL, ctrl);
                let status = r.rd(regs::reg::STATUS);
                if status & regs::status::HALTED != 0 {
                    let code = r.rd(regs::reg::ERROR_CODE);
                    r.stop();
                    (status, code)
                } else {
                    (status, 0)
                }
            })
            .ok_or(ENODEV)?;
        if status.0 == u32::MAX {
            return Err(EIO);
        }
        if status.0 & regs::status::HALTED != 0 {
            pr_err!(
                "acq{}: the card refused the configuration (ERROR_CODE {:#x})\n",
                self.index,
                status.1
            );
            return Err(EIO);
        }
        g.head = 0;
        g.prod = posted;
        g.block_pos = 0;
        g.xrun = false;
        g.halted = false;
        g.running = true;
        g.last_events = 0;
        g.wd_cons = 0;
        g.wd_still_ms = 0;
        g.mmap_held = 0;
        g.bar2 = bar2;
        g.stats.read_offset = 0;
        g.stats.session += 1;
        Ok(())
    }

    /// Stops the session; captured data not yet read is discarded.
    fn stop_locked(&self, g: &mut MutexGuard<'_, Inner>) {
        if g.running || g.halted {
            let _ = self.with_regs(|r| r.stop());
        }
        g.running = false;
        g.halted = false;
        g.block_pos = 0;
        g.xrun = false;
        self.wait.notify_all();
    }

    /// Gives every consumed buffer back to the card (section 8 of the spec), in one batch:
    /// one producer-index update and at most one DOORBELL for all of them.
    ///
    /// Descriptor `d` always carries pool buffer `d mod N`: the session posts buffers
    /// 0..N-1 as descriptors 0..N-1, and completions (hence reposts) come in order.
    fn flush_reposts(&self, g: &mut MutexGuard<'_, Inner>) {
        if !g.running {
            return;
        }
        let n = g.entries();
        let log2 = g.cfg.ring_log2;
        let target = g.head.wrapping_add(n);
        let prod = g.prod;
        if prod == target {
            return;
        }
        let keep = g.mapped;
        let bar2 = g.bar2;
        let Some(hw) = g.hw.as_mut() else {
            return;
        };
        let mut d = prod;
        while d != target {
            // A slot whose page is still lent gets a free pool page; with none free the
            // rest waits for pages to come back.
            let Some(page) = hw.page_for_slot(regs::ring::slot(d, log2) as usize, keep) else {
                break;
            };
            if bar2 {
                hw.arm_page(page, &self.busy);
            } else {
                hw.write_desc(d, log2, page, &self.busy);
            }
            d = d.wrapping_add(1);
        }
        if d == prod {
            return;
        }
        // RELEASE: descriptors before the producer index. In BAR2 mode a full barrier:
        // the copies out of the slots (MMIO reads) are done before the slots go back.
        if bar2 {
            mb(Full);
        } else {
            dma_mb(Write);
        }
        self.event_write(bar2, hw, regs::event::OFF_PROD, d);
        // FULL: store prod before loading need_doorbell.
        mb(Full);
        let ring = self.event_read(bar2, hw, regs::event::OFF_NEED_DOORBELL) != 0;
        g.prod = d;
        if ring {
            let _ = self.with_regs(|r| r.wr(regs::reg::DOORBELL, 1));
        }
    }

    /// Completion `head` is consumed; its buffer goes back to the card with the next
    /// batch (a quarter of the ring), or earlier when the reader sleeps or returns.
    fn consumed(&self, g: &mut MutexGuard<'_, Inner>) {
        g.head = g.head.wrapping_add(1);
        g.block_pos = 0;
        let n = g.entries();
        let free = g.head.wrapping_add(n).wrapping_sub(g.prod);
        if free >= (n / 4).max(1) {
            self.flush_reposts(g);
        }
    }

    /// True if a read() would not block.
    fn readable(&self, g: &Inner) -> bool {
        if g.removed || g.xrun || g.err || !g.running || g.hw.is_none() {
            return true;
        }
        self.completion(g, g.head).is_some()
    }

    /// The completion of ring slot `slot` (pool page `index`) was consumed: its bytes go
    /// to the CPU, and the page is no longer under DMA (what a lent page's ->confirm waits
    /// for). In BAR2 mode (`bar2`: the session's layout) the block is first copied from
    /// the slot in BAR2 into the page; an error means the page holds no valid data.
    fn take_for_cpu(
        &self,
        bar2: Option<bar2::Layout>,
        slot: usize,
        index: usize,
        page: &StreamingPage,
        len: usize,
    ) -> Result {
        page.sync_for_cpu(len);
        let r = match (bar2, self.bar2.as_ref()) {
            (Some(l), Some(b)) => b.copy_slot(l, slot, page, len),
            (Some(_), None) => Err(ENODEV),
            (None, _) => Ok(()),
        };
        if let Some(b) = self.busy.get(index) {
            b.store(0, Release);
        }
        r
    }

    /// splice_read(): like read(), but the blocks' pages go into the pipe without a copy.
    /// Returns as soon as something was spliced and no further block is ready (a splicer
    /// sleeping here holds the pipe's lock), or when the pipe or `len` is full.
    ///
    /// The VFS calls it once per splice() (and per sendfile() into a pipe). sendfile()
    /// into a file or a socket, whose loop would drop an errno after earlier bytes, never
    /// reaches it: the kernel refuses a direct splice from a stream (`EINVAL`).
    fn splice_read(self: &Arc<Self>, nonblock: bool, pipe: &Pipe<'_>, len: usize) -> Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        let mut g = self.inner.lock();
        let r = self.splice_locked(&mut g, nonblock, pipe, len);
        self.flush_reposts(&mut g);
        r
    }

    fn splice_locked(
        self: &Arc<Self>,
        g: &mut MutexGuard<'_, Inner>,
        nonblock: bool,
        pipe: &Pipe<'_>,
        len: usize,
    ) -> Result<usize> {
        let mut done = 0usize;
        let mut first_block = true;
        if g.mapped {
            return Err(EBUSY);
        }
        loop {
            if g.removed {
                return if done > 0 { Ok(done) } else { Err(ENODEV) };
            }
            if g.xrun || g.err {
                // Latched until a call can return it with no bytes before it.
                if done > 0 {
                    return Ok(done);
                }
                return Err(Self::report_owed(g));
            }
            if done >= len {
                return Ok(done);
            }
            if !first_block {
                if let Some(r) = yield_between_blocks(done) {
                    return r;
                }
            }
            first_block = false;
            if !g.running {
                if done > 0 {
                    return Ok(done);
                }
                self.start_locked(g)?;
            }
            let log2 = g.cfg.ring_log2;
            let head = g.head;
            let comp = self.completion(g, head);
            let Some(c) = comp else {
                if done > 0 {
                    return Ok(done);
                }
                if nonblock {
                    return Err(EAGAIN);
                }
                self.flush_reposts(g);
                match self
                    .wait
                    .wait_interruptible_timeout(g, msecs_to_jiffies(READ_RECHECK_MS))
                {
                    CondVarTimeoutResult::Signal { .. } => return Err(ERESTARTSYS),
                    _ => continue,
                }
            };
            let id = c.id as usize;
            let blen = c.length as usize;
            if c.is_error() || c.id as u32 != regs::ring::slot(head, log2) || blen > PAGE_SIZE {
                g.stats.errors += 1;
                g.err = true;
                self.consumed(g);
                continue;
            }
            if g.block_pos == 0 && c.stream_offset != g.stats.read_offset {
                g.stats.overflows += 1;
                g.stats.lost_bytes = g.stats.lost_bytes.saturating_add(c.lost_bytes);
                g.stats.read_offset = c.stream_offset;
                g.xrun = true;
                continue;
            }
            let pos = g.block_pos as usize;
            let n = (blen - pos.min(blen)).min(len - done);
            if n == 0 {
                // An empty block: nothing to lend.
                g.stats.blocks += 1;
                self.consumed(g);
                continue;
            }
            let b2 = g.bar2_layout();
            let res = match g.hw.as_ref().and_then(|hw| hw.slot_buf(id)) {
                Some((index, page)) => {
                    let taken = if pos == 0 {
                        self.take_for_cpu(b2, id, index, page, blen)
                    } else {
                        Ok(())
                    };
                    taken.and_then(|()| pipe.lend(page, pos, n, self))
                }
                None => Err(ENODEV),
            };
            match res {
                Ok(k) if k == n => {}
                // Pipe full (EAGAIN), no readers (EPIPE, with SIGPIPE), or removed: the block
                // stays; what was spliced so far is returned.
                Ok(_) | Err(_) if done > 0 => return Ok(done),
                Ok(_) => return Err(EAGAIN),
                Err(e) => return Err(e),
            }
            done += n;
            g.stats.spliced_bytes = g.stats.spliced_bytes.wrapping_add(n as u64);
            g.stats.read_offset = g.stats.read_offset.wrapping_add(n as u64);
            if pos + n >= blen {
                g.stats.blocks += 1;
                self.consumed(g);
            } else {
                g.block_pos = (pos + n) as u32;
            }
        }
    }

    /// ->confirm of a lent pool page: waits (interruptibly, at most `CONFIRM_TIMEOUT_MS`)
    /// until the page is no longer under DMA. Pages are lent only after their completion
    /// was consumed, so this returns at once unless the pool's bookkeeping is wrong; the
    /// timeout turns such a bug into EIO for the pipe reader instead of torn data.
    fn confirm(&self, index: usize) -> Result {
        let Some(busy) = self.busy.get(index) else {
            return Err(EIO);
        };
        if busy.load(Acquire) == 0 {
            return Ok(());
        }
        let mut g = self.inner.lock();
        let mut waited = 0;
        while busy.load(Acquire) != 0 {
            if g.removed || waited >= CONFIRM_TIMEOUT_MS {
                return Err(EIO);
            }
            if let CondVarTimeoutResult::Signal { .. } = self
                .wait
                .wait_interruptible_timeout(&mut g, msecs_to_jiffies(READ_RECHECK_MS))
            {
                return Err(EINTR);
            }
            waited += READ_RECHECK_MS;
        }
        Ok(())
    }

    /// mmap(): the control page and the ring's buffer pages, read-only (docs/driver.md).
    fn mmap(&self, vma: &VmaNew) -> Result {
        if vma.writable() {
            return Err(EACCES);
        }
        vma.try_clear_maywrite()?;
        vma.try_clear_mayexec()?;
        vma.set_dontcopy();
        vma.set_dontexpand();
        // SAFETY: the VMA is valid for the duration of the mmap call (`VmaNew`).
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        // mmap runs under the process's mmap_lock, and read() copies to user memory (which
        // may fault and take mmap_lock) under the card's mutex: taking the mutex here would
        // invert that order (a lockdep report, and a real deadlock with a reader faulting
        // on this very mapping). A try-lock creates no dependency; contention is brief.
        let mut tries = 0;
        let mut g = loop {
            if let Some(g) = self.inner.try_lock() {
                break g;
            }
            tries += 1;
            if tries > 2000 {
                return Err(EAGAIN);
            }
            kernel::time::delay::fsleep(kernel::time::Delta::from_micros(100));
        };
        if g.removed {
            return Err(ENODEV);
        }
        if g.running && !g.mapped {
            // The slots' pages are posted with lending rules; map while stopped.
            return Err(EBUSY);
        }
        let n = g.entries() as usize;
        let len = vma.end().saturating_sub(vma.start());
        if pgoff != 0 || len != (n + 1) * PAGE_SIZE {
            return Err(EINVAL);
        }
        let keep = g.mapped;
        let hw = g.hw.as_mut().ok_or(ENODEV)?;
        if !keep {
            hw.clear_slots();
        }
        for slot in 0..n {
            hw.page_for_slot(slot, keep).ok_or(ENOMEM)?;
        }
        let mixed = vma.set_mixedmap();
        mixed.vm_insert_page(vma.start(), &hw.ctl)?;
        for slot in 0..n {
            let (_, page) = hw.slot_buf(slot).ok_or(ENOMEM)?;
            mixed.vm_insert_page(vma.start() + (slot + 1) * PAGE_SIZE, &page.page)?;
        }
        g.mapped = true;
        self.update_ctl(&g, 0);
        Ok(())
    }

    /// Mirrors the mmap state into the control page.
    fn update_ctl(&self, g: &Inner, ready: u32) {
        if let Some(hw) = g.hw.as_ref() {
            hw.write_ctl(&[
                (uapi::ctl::MAGIC, uapi::ACQ_CTL_MAGIC),
                (uapi::ctl::ENTRIES, u64::from(g.entries())),
                (uapi::ctl::BLOCK_SIZE, u64::from(g.cfg.block_size)),
                (uapi::ctl::CONSUMER, u64::from(g.head)),
                (uapi::ctl::PRODUCER, u64::from(g.head.wrapping_add(ready))),
                (uapi::ctl::STREAM_OFFSET, g.stats.read_offset),
                (uapi::ctl::SESSION, g.stats.session),
                (
                    uapi::ctl::FLAGS,
                    u64::from(if g.running { uapi::ACQ_MMAP_RUNNING } else { 0 }),
                ),
            ]);
        }
    }

    /// ACQ_IOC_MMAP_SYNC: releases consumed blocks and reports the ready ones.
    fn mmap_sync(&self, req: &mut uapi::AcqMmapSync) -> Result {
        if req.reserved != 0 || req.timeout_ms > 60_000 {
            return Err(EINVAL);
        }
        let mut g = self.inner.lock();
        if g.removed {
            return Err(ENODEV);
        }
        if !g.mapped {
            return Err(EINVAL);
        }
        if req.release > g.mmap_held {
            return Err(EINVAL);
        }
        let bs = g.cfg.block_size;
        for _ in 0..req.release {
            g.stats.blocks += 1;
            g.stats.bytes = g.stats.bytes.wrapping_add(u64::from(bs));
            g.stats.read_offset = g.stats.read_offset.wrapping_add(u64::from(bs));
            self.consumed(&mut g);
        }
        g.mmap_held -= req.release;
        let r = self.mmap_wait(&mut g, req);
        self.flush_reposts(&mut g);
        let ready = if r.is_ok() { req.count } else { 0 };
        self.update_ctl(&g, ready);
        r
    }

    fn mmap_wait(&self, g: &mut MutexGuard<'_, Inner>, req: &mut uapi::AcqMmapSync) -> Result {
        let mut waited = 0u32;
        loop {
            if g.removed {
                return Err(ENODEV);
            }
            if g.err && g.mmap_held == 0 {
                g.err = false;
                return Err(EIO);
            }
            if !g.running {
                // A halt or a stop: held blocks are gone; a new session starts.
                g.mmap_held = 0;
                if g.err {
                    g.err = false;
                    return Err(EIO);
                }
                self.start_locked(g)?;
            }
            let log2 = g.cfg.ring_log2;
            let n = g.entries();
            let head = g.head;
            let bs = g.cfg.block_size;
            let mut count = 0u32;
            let mut expect = g.stats.read_offset;
            while count < n {
                let k = head.wrapping_add(count);
                let Some(c) = self.completion(g, k) else {
                    break;
                };
                let bad =
                    c.is_error() || c.id as u32 != regs::ring::slot(k, log2) || c.length != bs;
                if bad || c.stream_offset != expect {
                    if count > 0 {
                        break;
                    }
                    if bad {
                        g.stats.errors += 1;
                        self.consumed(g);
                        return Err(EIO);
                    }
                    g.stats.overflows += 1;
                    g.stats.lost_bytes = g.stats.lost_bytes.saturating_add(c.lost_bytes);
                    g.stats.read_offset = c.stream_offset;
                    return Err(EPIPE);
                }
                if count >= g.mmap_held {
                    // Newly reported: the CPU may look at it now.
                    let b2 = g.bar2_layout();
                    if let Some((index, page)) =
                        g.hw.as_ref().and_then(|hw| hw.slot_buf(c.id as usize))
                    {
                        if self
                            .take_for_cpu(b2, c.id as usize, index, page, bs as usize)
                            .is_err()
                        {
                            // BAR2 mode: the copy failed (the card is going away).
                            return Err(EIO);
                        }
                    }
                }
                expect = expect.wrapping_add(u64::from(bs));
                count += 1;
            }
            if count > 0 || waited >= req.timeout_ms {
                g.mmap_held = count;
                req.head = u64::from(head);
                req.count = count;
                req.block_size = bs;
                req.stream_offset = g.stats.read_offset;
                req.flags = if g.running { uapi::ACQ_MMAP_RUNNING } else { 0 };
                return Ok(());
            }
            self.flush_reposts(g);
            let step = READ_RECHECK_MS.min(req.timeout_ms - waited).max(1);
            if let CondVarTimeoutResult::Signal { .. } = self
                .wait
                .wait_interruptible_timeout(g, msecs_to_jiffies(step))
            {
                return Err(EINTR);
            }
            waited += step;
        }
    }

    /// read()/readv()/io_uring reads (`->read_iter`): see docs/driver.md for the
    /// semantics. One call serves the whole iov_iter, so a gap or an error found after
    /// some bytes stays latched for the next call instead of being dropped by a VFS loop.
    fn read(&self, nonblock: bool, out: &mut IovIterDest<'_>) -> Result<usize> {
        let count = out.len().min(isize::MAX as usize & !(PAGE_SIZE - 1));
        if count == 0 {
            return Ok(0);
        }
        let mut g = self.inner.lock();
        let r = self.read_locked(&mut g, nonblock, out, count);
        // Whatever happened, the buffers consumed so far go back to the card now.
        self.flush_reposts(&mut g);
        r
    }

    fn read_locked(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        nonblock: bool,
        out: &mut IovIterDest<'_>,
        count: usize,
    ) -> Result<usize> {
        let mut copied = 0usize;
        let mut first_block = true;
        if g.mapped {
            // mmap mode: the consumer takes blocks through ACQ_IOC_MMAP_SYNC.
            return Err(EBUSY);
        }
        loop {
            if g.removed {
                return if copied > 0 { Ok(copied) } else { Err(ENODEV) };
            }
            if g.xrun || g.err {
                // Latched until a call can return it with no bytes before it.
                if copied > 0 {
                    return Ok(copied);
                }
                return Err(Self::report_owed(g));
            }
            if copied == count {
                return Ok(copied);
            }
            if !first_block {
                // One block at a time: a pending signal ends the call with what it has
                // (a fatal one within a block time), and others get the CPU in between.
                if let Some(r) = yield_between_blocks(copied) {
                    return r;
                }
            }
            first_block = false;
            if !g.running {
                // The session ended under us (stopped, halted): return what we have.
                if copied > 0 {
                    return Ok(copied);
                }
                // A stopped card (never started, stopped, or recovered) starts on read().
                self.start_locked(g)?;
            }
            let log2 = g.cfg.ring_log2;
            let head = g.head;
            let comp = self.completion(g, head);
            let Some(c) = comp else {
                if nonblock {
                    return if copied > 0 { Ok(copied) } else { Err(EAGAIN) };
                }
                // A blocking read fills its request (docs/driver.md). Give the card every
                // free buffer before sleeping.
                self.flush_reposts(g);
                match self
                    .wait
                    .wait_interruptible_timeout(g, msecs_to_jiffies(READ_RECHECK_MS))
                {
                    CondVarTimeoutResult::Signal { .. } => {
                        return if copied > 0 { Ok(copied) } else { Err(ERESTARTSYS) };
                    }
                    _ => continue,
                }
            };
            let id = c.id as usize;
            let len = c.length as usize;
            if c.is_error() || c.id as u32 != regs::ring::slot(head, log2) || len > PAGE_SIZE {
                // The buffer holds nothing (or the card returned a buffer it was not
                // given): report EIO once, repost and carry on (the block stays in the
                // card's FIFO and goes to the next buffer).
                g.stats.errors += 1;
                g.err = true;
                self.consumed(g);
                continue;
            }
            if g.block_pos == 0 && c.stream_offset != g.stats.read_offset {
                // Bytes were dropped before this block: one EPIPE, then the stream
                // continues at the block's offset.
                g.stats.overflows += 1;
                // Device-provided: saturate rather than trust it not to overflow.
                g.stats.lost_bytes = g.stats.lost_bytes.saturating_add(c.lost_bytes);
                g.stats.read_offset = c.stream_offset;
                g.xrun = true;
                continue;
            }
            let pos = g.block_pos as usize;
            let n = (len - pos.min(len)).min(count - copied);
            let b2 = g.bar2_layout();
            let res = match g.hw.as_ref().and_then(|hw| hw.slot_buf(id)) {
                Some((index, page)) => {
                    let taken = if pos == 0 {
                        self.take_for_cpu(b2, id, index, page, len)
                    } else {
                        Ok(())
                    };
                    taken.map(|()| page.with_bytes(pos, n, |bytes| out.copy_to_iter(bytes)))
                }
                None => Err(ENODEV),
            };
            // A short copy is a fault in the user's buffer: the bytes that did arrive
            // count, the rest of the block stays for the next call.
            let k = match res {
                Ok(k) => k,
                Err(e) => return if copied > 0 { Ok(copied) } else { Err(e) },
            };
            copied += k;
            g.stats.bytes = g.stats.bytes.wrapping_add(k as u64);
            g.stats.read_offset = g.stats.read_offset.wrapping_add(k as u64);
            if pos + k >= len {
                g.stats.blocks += 1;
                self.consumed(g);
            } else {
                g.block_pos = (pos + k) as u32;
            }
            if k < n {
                return if copied > 0 { Ok(copied) } else { Err(EFAULT) };
            }
        }
    }

    /// Takes the gap (`EPIPE`) or error (`EIO`) a consumer is owed. The caller checked
    /// that one is (`xrun || err`) and has delivered no bytes in this call, so the errno
    /// reaches userspace: until such a call, the mark stays latched.
    fn report_owed(g: &mut Inner) -> Error {
        if g.xrun {
            g.xrun = false;
            EPIPE
        } else {
            g.err = false;
            EIO
        }
    }

    fn poll(&self, file: &File, table: &PollTable<'_>) -> c_uint {
        table.register_wait(file, &self.wait);
        let mut g = self.inner.lock();
        if g.removed {
            return POLLERR | POLLHUP;
        }
        if !g.running && !g.err && !g.xrun {
            // Like read(), poll() starts a stopped card, so that poll-driven readers work
            // without an explicit start.
            if self.start_locked(&mut g).is_err() {
                return POLLERR;
            }
        }
        self.flush_reposts(&mut g);
        let mut mask = 0;
        if g.err || g.halted {
            mask |= POLLERR;
        }
        if self.readable(&g) {
            mask |= POLLIN | POLLRDNORM;
        }
        mask
    }

    /// Vector-1 work (IRQ thread): read and clear the error/overflow/halt causes.
    fn handle_events(&self, msi: bool) {
        let mut g = self.inner.lock();
        let Some(hw) = g.hw.as_ref() else {
            return;
        };
        let events = self.event_read(g.bar2, hw, regs::event::OFF_EVENTS);
        if msi && events == g.last_events {
            // Only completions: the hard handler already woke the readers.
            return;
        }
        g.last_events = events;
        let Some((status, code)) = self.with_regs(|r| {
            let causes = r.rd(regs::reg::IRQ_STATUS);
            r.wr(regs::reg::IRQ_STATUS, causes);
            let status = r.rd(regs::reg::STATUS);
            let code = r.rd(regs::reg::ERROR_CODE);
            r.wr(regs::reg::STATUS, status & regs::status::W1C_MASK);
            (status, code)
        }) else {
            return;
        };
        if status == u32::MAX {
            return;
        }
        if status & regs::status::HALTED != 0 && g.running {
            // Fatal: the engine stopped. Readers get EIO once (POLLERR until then); the
            // next read() or poll() starts a new session.
            pr_err!("acq{}: engine halted, ERROR_CODE {:#x}\n", self.index, code);
            let _ = self.with_regs(|r| r.stop());
            g.running = false;
            g.halted = true;
            g.err = true;
            g.stats.errors += 1;
        }
        drop(g);
        self.wait.notify_all();
    }

    /// One watchdog period. Returns false when the watchdog must not run again.
    fn watchdog_tick(&self) -> bool {
        let mut g = self.inner.lock();
        if g.removed {
            return false;
        }
        if !g.running || g.cfg.flags & uapi::ACQ_CFG_LOOPBACK != 0 {
            // A loopback session waits for the playback side: no data is not a stall.
            g.wd_still_ms = 0;
            return true;
        }
        let Some(hw) = g.hw.as_ref() else {
            return false;
        };
        let cons = self.event_read(g.bar2, hw, regs::event::OFF_CONS);
        let outstanding = regs::ring::outstanding(g.prod, cons);
        if cons != g.wd_cons || outstanding == 0 {
            // Progress, or the card waits for us (a slow reader is not a stall).
            g.wd_cons = cons;
            g.wd_still_ms = 0;
            return true;
        }
        g.wd_still_ms += u64::from(WATCHDOG_MS);
        let block_ms = match g.cfg.rate {
            0 => 0,
            rate => u64::from(g.cfg.block_size).saturating_mul(1000) / rate,
        };
        if g.wd_still_ms < STALL_MS.saturating_add(block_ms.saturating_mul(4)) {
            return true;
        }
        pr_warn!(
            "acq{}: no progress for {} ms with {} buffers posted: resetting the card\n",
            self.index,
            g.wd_still_ms,
            outstanding
        );
        g.err = true;
        g.running = false;
        if !self.revive_locked(&mut g) || self.start_locked(&mut g).is_err() {
            g.halted = true;
        }
        drop(g);
        self.wait.notify_all();
        true
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserPtr::from_addr(arg);
        match cmd {
            uapi::ACQ_IOC_START => {
                let mut g = self.inner.lock();
                self.start_locked(&mut g)?;
            }
            uapi::ACQ_IOC_STOP => {
                let mut g = self.inner.lock();
                if g.removed {
                    return Err(ENODEV);
                }
                self.stop_locked(&mut g);
            }
            uapi::ACQ_IOC_RESET => {
                let mut g = self.inner.lock();
                if g.removed {
                    return Err(ENODEV);
                }
                self.stop_locked(&mut g);
                self.with_regs(|r| r.soft_reset()).ok_or(ENODEV)?;
                g.err = false;
                g.stats = AcqStats::default();
                self.irqs.store(0, Relaxed);
            }
            uapi::ACQ_IOC_GET_CONFIG => {
                let cfg = self.inner.lock().cfg;
                UserSlice::new(user, size_of::<AcqConfig>())
                    .writer()
                    .write(&UapiConfig(cfg))?;
            }
            uapi::ACQ_IOC_SET_CONFIG => {
                let UapiConfig(cfg) = UserSlice::new(user, size_of::<AcqConfig>())
                    .reader()
                    .read::<UapiConfig>()?;
                self.validate(&cfg)?;
                let mut g = self.inner.lock();
                if g.removed {
                    return Err(ENODEV);
                }
                if g.running || g.mapped {
                    return Err(EBUSY);
                }
                g.cfg = cfg;
            }
            uapi::ACQ_IOC_GET_STATS => {
                let stats = self.stats();
                UserSlice::new(user, size_of::<AcqStats>())
                    .writer()
                    .write(&UapiStats(stats))?;
            }
            uapi::ACQ_IOC_GET_STATS_V1 => {
                let stats = UapiStats(self.stats());
                let bytes = kernel::transmute::AsBytes::as_bytes(&stats);
                let v1 = bytes.get(..uapi::ACQ_STATS_V1_SIZE).ok_or(EINVAL)?;
                UserSlice::new(user, v1.len()).writer().write_slice(v1)?;
            }
            uapi::ACQ_IOC_MMAP_SYNC => {
                let (mut r, mut w) =
                    UserSlice::new(user, size_of::<uapi::AcqMmapSync>()).reader_writer();
                let UapiMmapSync(mut req) = r.read::<UapiMmapSync>()?;
                self.mmap_sync(&mut req)?;
                w.write(&UapiMmapSync(req))?;
            }
            uapi::ACQ_IOC_GET_INFO => return self.ioctl_info(cmd, arg),
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    /// `ACQ_IOC_GET_INFO`, served by both nodes (`ENOTTY` for anything else).
    fn ioctl_info(&self, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserPtr::from_addr(arg);
        match cmd {
            uapi::ACQ_IOC_GET_INFO => {
                let info = AcqInfo {
                    abi_version: uapi::ACQ_ABI_VERSION,
                    index: self.index,
                    hw_version: self.hw_version,
                    caps: self.caps,
                    fifo_depth: self.fifo_depth,
                    irq_mode: self.irq_mode,
                    max_ring_log2: MAX_RING_LOG2,
                    max_block_size: PAGE_SIZE as u32,
                };
                UserSlice::new(user, size_of::<AcqInfo>())
                    .writer()
                    .write(&UapiInfo(info))?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    fn stats(&self) -> AcqStats {
        let g = self.inner.lock();
        let mut s = g.stats;
        s.state = Self::state(&g);
        s.interrupts = self.irqs.load(Relaxed);
        if let Some(hw) = g.hw.as_ref() {
            s.pool_pages = hw.pool.len() as u32;
            s.pool_free = hw.free_pages() as u32;
        }
        s
    }

    fn validate(&self, c: &AcqConfig) -> Result {
        let block_ok = regs::limits::block_size_valid(c.block_size, self.fifo_depth)
            && c.block_size as usize <= PAGE_SIZE;
        let ring_ok = c.ring_log2 >= regs::limits::RING_LOG2_MIN && c.ring_log2 <= MAX_RING_LOG2;
        let pat_cap = match regs::pattern::id(c.pattern) {
            regs::pattern::COUNTER => regs::caps::PAT_COUNTER,
            regs::pattern::PRBS => regs::caps::PAT_PRBS,
            regs::pattern::SINE => regs::caps::PAT_SINE,
            _ => 0,
        };
        let pattern_ok = c.pattern & !regs::pattern::REG_MASK == 0
            && regs::pattern::valid(c.pattern)
            && self.caps & pat_cap != 0;
        let irq_ok = c.irq_mod_count <= 0xFFFF && c.irq_mod_time_us <= 1_000_000;
        // A rate bounds how long a full ring takes to move, and so every wait built on it
        // (the watchdog's patience, playback's drain at close): at most MAX_RING_SECONDS.
        let ring_bytes = u64::from(regs::ring::entries(c.ring_log2.min(MAX_RING_LOG2)))
            * u64::from(c.block_size);
        let rate_ok = c.rate == 0 || c.rate.saturating_mul(MAX_RING_SECONDS) >= ring_bytes;
        let loopback_ok =
            c.flags & uapi::ACQ_CFG_LOOPBACK == 0 || self.caps & regs::caps::LOOPBACK != 0;
        // Loopback with BAR2 streaming has never been run: refused rather than guessed at.
        let both = uapi::ACQ_CFG_LOOPBACK | uapi::ACQ_CFG_BAR2;
        let flags_ok =
            c.flags & !uapi::ACQ_CFG_FLAGS == 0 && loopback_ok && c.flags & both != both;
        if !(block_ok && ring_ok && pattern_ok && irq_ok && flags_ok && rate_ok) {
            return Err(EINVAL);
        }
        if c.flags & uapi::ACQ_CFG_BAR2 != 0 {
            bar2::check_config(self.index, self.bar2.as_ref(), c)?;
        }
        Ok(())
    }

    /// Unbind: stop the card, free its DMA memory (under the lock, so no reader is using
    /// a buffer), wake everybody with ENODEV and stop the watchdog.
    fn shutdown(self: &Arc<Self>) {
        let hw = {
            let mut g = self.inner.lock();
            g.removed = true;
            g.running = false;
            let _ = self.with_regs(|r| {
                r.stop();
                r.wr(regs::reg::IRQ_MASK, regs::irq::ALL);
                r.soft_reset();
            });
            // A card that ignores the reset (hung) must still not write into memory we
            // free: take its bus mastering away first.
            self.pdev.clear_master();
            // Nothing is under DMA any more: pages still lent to pipes confirm at once.
            for b in self.busy.iter() {
                b.store(0, Release);
            }
            g.hw.take()
        };
        drop(hw);
        self.wait.notify_all();
        // The soft reset above stopped the playback channel too.
        self.pb_shutdown();
        self.cancel_watchdog();
    }

    fn cancel_watchdog(self: &Arc<Self>) {
        let dwork = ptr::from_ref(&self.watchdog)
            .cast_mut()
            .cast::<bindings::delayed_work>();
        // SAFETY: `DelayedWork` is a transparent wrapper of a `struct delayed_work` that
        // was initialised by `new_delayed_work!` and lives as long as `self`.
        let was_pending = unsafe { bindings::cancel_delayed_work_sync(dwork) };
        if was_pending {
            // SAFETY: a queued work item owns one reference, leaked by `Arc::into_raw` in
            // `enqueue_delayed`; its `run` will never execute now, so we release it.
            drop(unsafe { Arc::from_raw(Arc::as_ptr(self)) });
        }
    }
}

// Byte-level views of the uapi structures for `UserSlice::read`/`write`.
#[repr(transparent)]
struct UapiConfig(AcqConfig);
#[repr(transparent)]
struct UapiStats(AcqStats);
#[repr(transparent)]
struct UapiInfo(AcqInfo);
#[repr(transparent)]
struct UapiMmapSync(uapi::AcqMmapSync);

// SAFETY: `AcqConfig` is `repr(C)` with only integer fields and no padding (its size is
// asserted in uapi.rs), so every bit pattern is valid and every byte is initialised.
unsafe impl kernel::transmute::FromBytes for UapiConfig {}
// SAFETY: as above.
unsafe impl kernel::transmute::AsBytes for UapiConfig {}
// SAFETY: `AcqStats` is `repr(C)`, integer fields only, no padding.
unsafe impl kernel::transmute::AsBytes for UapiStats {}
// SAFETY: `AcqInfo` is `repr(C)`, integer fields only, no padding.
unsafe impl kernel::transmute::AsBytes for UapiInfo {}
// SAFETY: `AcqMmapSync` is `repr(C)`, integer fields only, no padding (size asserted).
unsafe impl kernel::transmute::FromBytes for UapiMmapSync {}
// SAFETY: as above.
unsafe impl kernel::transmute::AsBytes for UapiMmapSync {}

// ---------------------------------------------------------------------------
// Interrupts
// ---------------------------------------------------------------------------

/// MSI-X vector 0 (completions): count and wake the readers, nothing else.
struct CaptureIrq {
    card: Arc<Card>,
}

/// MSI-X vector 2 (playback completions and events): count and wake the writers.
struct PlaybackIrq {
    card: Arc<Card>,
}

impl irq::Handler for PlaybackIrq {
    fn handle(&self) -> IrqReturn {
        self.card.irqs.fetch_add(1, Relaxed);
        self.card.pb_wait.notify_all();
        IrqReturn::Handled
    }
}

impl irq::Handler for CaptureIrq {
    fn handle(&self) -> IrqReturn {
        self.card.irqs.fetch_add(1, Relaxed);
        self.card.wait.notify_all();
        IrqReturn::Handled
    }
}

/// MSI-X vector 1 (errors), or the single MSI vector: wake the readers and the thread.
struct EventIrq {
    card: Arc<Card>,
    msi: bool,
}

impl irq::ThreadedHandler for EventIrq {
    fn handle(&self) -> ThreadedIrqReturn {
        self.card.irqs.fetch_add(1, Relaxed);
        if self.msi {
            self.card.wait.notify_all();
            // One message for every cause: playback completions too.
            self.card.pb_wait.notify_all();
        }
        ThreadedIrqReturn::WakeThread
    }

    fn handle_threaded(&self) -> IrqReturn {
        self.card.handle_events(self.msi);
        IrqReturn::Handled
    }
}

/// The interrupt vectors of a card and the handlers on them.
///
/// Fields drop in order: the handlers are freed before the vectors they borrow.
struct Irqs<'b> {
    playback: Option<Pin<KBox<irq::Registration<'b, PlaybackIrq>>>>,
    capture: Option<Pin<KBox<irq::Registration<'b, CaptureIrq>>>>,
    events: Option<Pin<KBox<irq::ThreadedRegistration<'b, EventIrq>>>>,
    _vectors: KBox<pci::IrqVectorRegistration<'b>>,
}

impl<'b> Irqs<'b> {
    /// MSI-X with vectors 0 and 1 if possible, else one MSI vector.
    fn alloc(pdev: &'b pci::Device<Bound>) -> Result<(KBox<pci::IrqVectorRegistration<'b>>, u32)> {
        let msix = pci::IrqTypes::default().with(pci::IrqType::MsiX);
        let msi = pci::IrqTypes::default().with(pci::IrqType::Msi);
        if module_parameters::force_msi.value() {
            let v = pdev.alloc_irq_vectors(1, 1, msi)?;
            return Ok((KBox::new(v, GFP_KERNEL)?, uapi::ACQ_IRQ_MSI));
        }
        match pdev.alloc_irq_vectors(2, u32::from(regs::msix::VECTORS), msix) {
            Ok(v) => Ok((KBox::new(v, GFP_KERNEL)?, uapi::ACQ_IRQ_MSIX)),
            Err(_) => {
                let v = pdev.alloc_irq_vectors(1, 1, msi)?;
                Ok((KBox::new(v, GFP_KERNEL)?, uapi::ACQ_IRQ_MSI))
            }
        }
    }

    fn request(
        vectors: KBox<pci::IrqVectorRegistration<'b>>,
        mode: u32,
        card: &Arc<Card>,
    ) -> Result<Self> {
        // SAFETY: the registration lives in its own heap allocation, which `Self` owns and
        // never moves out of or mutates; `Self` drops the handlers (which borrow it) before
        // it (field order), so the reference stays valid for as long as it is used.
        let vref: &'b pci::IrqVectorRegistration<'b> =
            unsafe { &*ptr::from_ref::<pci::IrqVectorRegistration<'b>>(&*vectors) };
        let mut this = Self {
            playback: None,
            capture: None,
            events: None,
            _vectors: vectors,
        };
        let msi = mode == uapi::ACQ_IRQ_MSI;
        let ev_index = if msi {
            0
        } else {
            usize::from(regs::msix::VEC_ERROR)
        };
        let ev = EventIrq {
            card: card.clone(),
            msi,
        };
        // SAFETY: the registration is kept in `Self` and dropped normally, never leaked.
        let reg = unsafe {
            irq::ThreadedRegistration::new(
                vref.index(ev_index)?.into(),
                irq::Flags::TRIGGER_NONE,
                c"acq-events",
                Ok::<_, Error>(ev),
            )
        };
        this.events = Some(KBox::pin_init(reg, GFP_KERNEL)?);
        if !msi {
            let cap = CaptureIrq { card: card.clone() };
            // SAFETY: as above.
            let reg = unsafe {
                irq::Registration::new(
                    vref.index(usize::from(regs::msix::VEC_CAPTURE))?.into(),
                    irq::Flags::TRIGGER_NONE,
                    c"acq-capture",
                    Ok::<_, Error>(cap),
                )
            };
            this.capture = Some(KBox::pin_init(reg, GFP_KERNEL)?);
            // Vector 2, if the PCI core gave us that many: without it, writers find
            // completions by their periodic re-check.
            if card.caps & regs::caps::PLAYBACK_DMA != 0 {
                if let Ok(v) = vref.index(usize::from(regs::msix::VEC_PLAYBACK)) {
                    let pb = PlaybackIrq { card: card.clone() };
                    // SAFETY: as above.
                    let reg = unsafe {
                        irq::Registration::new(
                            v.into(),
                            irq::Flags::TRIGGER_NONE,
                            c"acq-playback",
                            Ok::<_, Error>(pb),
                        )
                    };
                    this.playback = Some(KBox::pin_init(reg, GFP_KERNEL)?);
                }
            }
        }
        Ok(this)
    }
}

// ---------------------------------------------------------------------------
// Pipes: pool pages lent by splice_read (C shim: there are no pipe types in the bindings)
// ---------------------------------------------------------------------------

/// A pipe that splice_read() fills, locked by the VFS for the lifetime `'a`.
struct Pipe<'a> {
    raw: *mut bindings::pipe_inode_info,
    _locked: core::marker::PhantomData<&'a mut bindings::pipe_inode_info>,
}

impl Pipe<'_> {
    /// # Safety
    ///
    /// `raw` must be a valid pipe, locked by the caller while the `Pipe` lives.
    unsafe fn from_raw(raw: *mut bindings::pipe_inode_info) -> Self {
        Self {
            raw,
            _locked: core::marker::PhantomData,
        }
    }

    /// Lends bytes `offset .. offset + len` of `page` to the pipe, without a copy. The
    /// pipe buffer holds a page reference, a module reference and a `card` reference
    /// until its ->release (`acq_rust_buf_release`). Returns `len`, or `EAGAIN` (the pipe
    /// is full) / `EPIPE` (no readers; SIGPIPE was sent), having dropped them again.
    fn lend(
        &self,
        page: &StreamingPage,
        offset: usize,
        len: usize,
        card: &Arc<Card>,
    ) -> Result<usize> {
        if offset >= PAGE_SIZE || len > PAGE_SIZE - offset {
            return Err(EINVAL);
        }
        let owner = card.clone().into_foreign() as c_ulong;
        // SAFETY: `raw` is a valid locked pipe (type invariant); the page is valid (the
        // pool holds it) and the shim takes its own reference; `offset + len` is within the
        // page. Ownership of `owner` passes to the pipe buffer (or is released by the shim
        // through `acq_rust_buf_release` when the pipe refuses the buffer).
        let r = unsafe {
            acq_shim_lend_page(
                self.raw,
                page.page.as_ptr().cast(),
                offset as c_uint,
                len as c_uint,
                owner,
            )
        };
        if r < 0 {
            Err(Error::from_errno(r as c_int))
        } else {
            Ok(r as usize)
        }
    }
}

/// ->confirm of a lent page (shim): is the DMA into the page complete?
///
/// # Safety
///
/// `owner` must be the `Arc<Card>` reference a live pipe buffer holds (from `Pipe::lend`).
#[no_mangle]
unsafe extern "C" fn acq_rust_buf_confirm(owner: c_ulong, index: c_ulong) -> c_int {
    // SAFETY: the pipe buffer holds this reference for as long as it exists (caller's
    // guarantee); we only borrow it.
    let card = unsafe { <Arc<Card> as ForeignOwnable>::borrow(owner as *mut c_void) };
    match card.confirm(index as usize) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// ->release of a lent page (shim): drops the buffer's `Arc<Card>`. The shim drops the
/// page reference (the pool reuses the page once nobody else holds it) and the module
/// reference.
///
/// # Safety
///
/// `owner` must be the `Arc<Card>` reference of a pipe buffer being released; it is not
/// used again.
#[no_mangle]
unsafe extern "C" fn acq_rust_buf_release(owner: c_ulong) {
    // SAFETY: the reference was passed to the buffer with `into_foreign` by `Pipe::lend`
    // or `acq_rust_buf_get` and is reclaimed exactly once, here.
    drop(unsafe { <Arc<Card> as ForeignOwnable>::from_foreign(owner as *mut c_void) });
}

/// ->get of a lent page (shim, tee()): the new pipe buffer gets its own `Arc<Card>`
/// (the shim takes the page and module references).
///
/// # Safety
///
/// `owner` must be the `Arc<Card>` reference a live pipe buffer holds.
#[no_mangle]
unsafe extern "C" fn acq_rust_buf_get(owner: c_ulong) {
    // SAFETY: the pipe buffer holds this reference (caller's guarantee); we only borrow it.
    let card = unsafe { <Arc<Card> as ForeignOwnable>::borrow(owner as *mut c_void) };
    let copy: Arc<Card> = card.into();
    // The copy belongs to the new pipe buffer and is reclaimed by its ->release.
    let _ = copy.into_foreign();
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

impl CharDev {
    /// `/dev/acqN` (capture, `out` false) or `/dev/acqN-out` (playback).
    fn new(card: Arc<Card>, out: bool) -> Result<impl PinInit<Self, Error>> {
        let name = if out {
            CString::try_from_fmt(fmt!("acq{}-out", card.index))?
        } else {
            CString::try_from_fmt(fmt!("acq{}", card.index))?
        };
        let fops: &'static bindings::file_operations = if out {
            &playback::PB_FOPS.0
        } else {
            &ACQ_FOPS.0
        };
        let name_ptr = name.as_char_ptr();
        Ok(try_pin_init!(Self {
            card,
            name,
            misc <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                // SAFETY: `slot` is valid for writes; an all-zero miscdevice is valid.
                unsafe {
                    slot.write(pin_init::zeroed());
                    (*slot).minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                    (*slot).name = name_ptr;
                    (*slot).fops = fops;
                    (*slot).mode = 0o600;
                }
                // SAFETY: the miscdevice is initialised; it is pinned and deregistered in
                // `drop` before its memory goes away. `name` (a heap string owned by
                // `Self`) outlives the registration.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
        }? Error))
    }
}

// SAFETY: the miscdevice is only touched by the misc core (under its own lock) and by
// `drop`; `CharDev` has no `&self` methods that access it.
unsafe impl Send for CharDev {}
// SAFETY: as above.
unsafe impl Sync for CharDev {}

#[pinned_drop]
impl PinnedDrop for CharDev {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered (type invariant); deregistered exactly once.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}

/// Our `file_operations`; an immutable table of function pointers.
struct Fops(bindings::file_operations);
// SAFETY: the table is never modified; the kernel only reads it.
unsafe impl Sync for Fops {}

static ACQ_FOPS: Fops = Fops(bindings::file_operations {
    owner: kernel::module::this_module::<crate::LocalModule>().as_ptr(),
    open: Some(fop_open),
    release: Some(fop_release),
    read_iter: Some(fop_read_iter),
    splice_read: Some(fop_splice_read),
    mmap: Some(fop_mmap),
    poll: Some(fop_poll),
    unlocked_ioctl: Some(fop_ioctl),
    llseek: Some(bindings::noop_llseek),
    ..pin_init::zeroed()
});

/// The card of an open file.
///
/// # Safety
///
/// `file` must be a file of ours between a successful `fop_open` and `fop_release`.
unsafe fn file_card<'a>(file: *mut bindings::file) -> <Arc<Card> as ForeignOwnable>::Borrowed<'a> {
    // SAFETY: `fop_open` stored an `Arc<Card>` with `into_foreign`; `fop_release` has not
    // reclaimed it yet (caller's guarantee).
    unsafe { <Arc<Card> as ForeignOwnable>::borrow((*file).private_data) }
}

/// The card of a `CharDev` being opened.
///
/// # Safety
///
/// `file` must be a file being opened through one of our misc devices (its
/// `private_data` is the `struct miscdevice`), called from the device's `open`.
unsafe fn chardev_card(file: *mut bindings::file) -> Arc<Card> {
    // SAFETY: `misc_open` set `private_data` to our `struct miscdevice` and holds the misc
    // lock during this call, so the `CharDev` containing it cannot be deregistered and freed.
    let chardev = unsafe {
        let misc = (*file).private_data.cast::<Opaque<bindings::miscdevice>>();
        &*misc
            .cast::<u8>()
            .sub(core::mem::offset_of!(CharDev, misc))
            .cast::<CharDev>()
    };
    chardev.card.clone()
}

unsafe extern "C" fn fop_open(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: called by the misc core for our device during open.
    let card = unsafe { chardev_card(file) };
    {
        let mut g = card.inner.lock();
        if g.removed {
            return ENODEV.to_errno();
        }
        if g.open {
            return EBUSY.to_errno();
        }
        g.open = true;
    }
    // SAFETY: we own `file` during open; from now on `private_data` is our `Arc<Card>`,
    // reclaimed in `fop_release`.
    unsafe { (*file).private_data = card.into_foreign() };
    // SAFETY: `file` is being opened by us (valid for the call).
    unsafe { mark_stream(file) };
    0
}

/// Makes an opening file a stream (`stream_open`, the kernel's convention for a file
/// without positions, like a pipe or an evdev node): pread()/pwrite(), lseek() and
/// sendfile()/splice() with an explicit offset fail with `ESPIPE`, and sendfile() from
/// the capture file into a file or socket with `EINVAL` (no direct splice from a stream:
/// it would drop what the destination does not take). `f_pos` moves only with splice()
/// and sendfile() without an offset, which playback's `pb_fop_splice_write` relies on.
///
/// # Safety
///
/// `file` must be a file being opened (valid, not yet visible to other calls).
pub(crate) unsafe fn mark_stream(file: *mut bindings::file) {
    // SAFETY: the caller passes a valid file during open; `stream_open` only changes its
    // mode bits and never fails.
    unsafe { bindings::stream_open(ptr::null_mut(), file) };
}

unsafe extern "C" fn fop_release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: `private_data` holds the `Arc<Card>` stored by `fop_open`; release is the
    // last call for this file, so ownership is taken back exactly once.
    let card = unsafe { <Arc<Card> as ForeignOwnable>::from_foreign((*file).private_data) };
    let mut g = card.inner.lock();
    // Closing the device ends the capture session.
    if !g.removed {
        card.stop_locked(&mut g);
    }
    g.err = false;
    g.open = false;
    // Pages still mapped in a process keep their own references (the pool skips them).
    g.mapped = false;
    g.mmap_held = 0;
    0
}

unsafe extern "C" fn fop_read_iter(
    iocb: *mut bindings::kiocb,
    to: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: the VFS passes a valid kiocb for an open file of ours.
    let file = unsafe { (*iocb).ki_filp };
    // SAFETY: called by the VFS for an open file of ours.
    let card = unsafe { file_card(file) };
    // SAFETY: `file` is valid for the duration of the call.
    let flags = unsafe { File::from_raw_file(file) }.flags();
    // The file never sets FMODE_NOWAIT, so the kernel asks no IOCB_NOWAIT call of us
    // (io_uring hands a blocking call to its workers instead).
    let nonblock = flags & file::flags::O_NONBLOCK != 0;
    // SAFETY: a read_iter destination is a valid `ITER_DEST` iov_iter, used only by this
    // call, that may be written with the standard iov_iter methods during the call.
    let to = unsafe { IovIterDest::from_raw(to) };
    match card.read(nonblock, to) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

unsafe extern "C" fn fop_splice_read(
    file: *mut bindings::file,
    _ppos: *mut bindings::loff_t,
    pipe: *mut bindings::pipe_inode_info,
    len: usize,
    flags: c_uint,
) -> isize {
    // SAFETY: called by the VFS for an open file of ours.
    let card: Arc<Card> = unsafe { file_card(file) }.into();
    // SAFETY: `file` is valid for the duration of the call.
    let fflags = unsafe { File::from_raw_file(file) }.flags();
    let nonblock = fflags & file::flags::O_NONBLOCK != 0 || flags & SPLICE_F_NONBLOCK != 0;
    // SAFETY: the VFS passes a valid pipe, locked by the caller for the whole call.
    let pipe = unsafe { Pipe::from_raw(pipe) };
    let len = len.min(isize::MAX as usize & !(PAGE_SIZE - 1));
    match card.splice_read(nonblock, &pipe, len) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

unsafe extern "C" fn fop_mmap(
    file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: called by the VFS for an open file of ours.
    let card = unsafe { file_card(file) };
    // SAFETY: the VFS passes a new VMA being set up by this mmap call, valid for the call.
    let vma = unsafe { VmaNew::from_raw(vma) };
    match card.mmap(vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn fop_poll(
    file: *mut bindings::file,
    table: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: called by the VFS for an open file of ours.
    let card = unsafe { file_card(file) };
    // SAFETY: `table` is null or a valid poll table for the duration of the call.
    let table = unsafe { PollTable::from_raw(table) };
    // SAFETY: `file` is valid for the duration of the call.
    let f = unsafe { File::from_raw_file(file) };
    card.poll(f, &table)
}

unsafe extern "C" fn fop_ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: called by the VFS for an open file of ours.
    let card = unsafe { file_card(file) };
    match card.ioctl(cmd, arg as usize) {
        Ok(v) => v as c_long,
        Err(e) => e.to_errno() as c_long,
    }
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
    pdev.set_master();
    // SAFETY: probe is the only user of the device's DMA API at this point.
    unsafe { pdev.dma_set_mask_and_coherent(DmaMask::new::<64>())? };

    let bar = pdev.iomap_region_sized::<BAR0_LEN>(regs::bar::BAR0_INDEX, c"acq")?;
    let (hw_version, caps, fifo_depth) = {
        let r = Regs(&bar);
        let id = r.rd(regs::reg::ID);
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
    // BAR2 (on-card memory) for BAR2 streaming mode; DMA mode does not need it.
    let bar2 = if caps & regs::caps::BAR2_STREAM != 0 {
        match bar2::Bar2::map(pdev, Regs(&bar).rd(regs::reg::BAR2_SIZE)) {
            Ok(b) => Some(b),
            Err(e) => {
                dev_warn!(pdev, "BAR2 not mapped ({:?}): BAR2 streaming mode unavailable\n", e);
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
            }),
            wait <- new_poll_condvar!("acq::wait"),
            watchdog <- new_delayed_work!("acq::watchdog"),
            irqs: Atomic::new(0),
            busy,
            pb <- new_mutex!(playback::PbInner::new(pb_hw)),
            pb_wait <- new_poll_condvar!("acq::pb_wait"),
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
    },
}
