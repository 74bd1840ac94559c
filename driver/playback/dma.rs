// SPDX-License-Identifier: GPL-2.0

//! The playback channel's DMA memory: bounce pages, pipe pages held (and mapped) until
//! the card's completion, and [`PbHw`], which owns the rings and both.

use super::*;
use crate::pool::new_mapped_page;

extern "C" {
    // Pages and files as `void *`: their bindgen types contain zero-sized arrays that are
    // not FFI-safe in a declaration.
    pub(super) fn acq_shim_dma_map_to_device(
        dev: *mut c_void,
        page: *mut c_void,
        offset: c_uint,
        size: usize,
        addr: *mut bindings::dma_addr_t,
    ) -> c_int;
    pub(super) fn acq_shim_dma_unmap_to_device(
        dev: *mut c_void,
        addr: bindings::dma_addr_t,
        size: usize,
    );
    pub(super) fn acq_shim_dma_sync_to_device(
        dev: *mut c_void,
        addr: bindings::dma_addr_t,
        size: usize,
    );
}

/// A bounce page with a streaming memory-to-device mapping.
///
/// # Invariants
///
/// `addr` is a live `DMA_TO_DEVICE` mapping of the whole of `page` for `dev`.
pub(super) struct BouncePage {
    pub(super) page: Page,
    pub(super) addr: bindings::dma_addr_t,
    pub(super) dev: ARef<device::Device>,
}

impl BouncePage {
    pub(super) fn new(dev: &device::Device<Bound>) -> Result<Self> {
        let (page, addr) = new_mapped_page(|page, addr| {
            // SAFETY: `dev` is a bound device and `page` a page we own; the shim writes
            // `addr` only on success.
            unsafe {
                acq_shim_dma_map_to_device(raw_dev(dev), page.as_ptr().cast(), 0, PAGE_SIZE, addr)
            }
        })?;
        // INVARIANT: the mapping was just created.
        Ok(Self {
            page,
            addr,
            dev: dev.into(),
        })
    }

    /// Copies `len` bytes at `src` into the page at `off`.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reading `len` bytes.
    pub(super) unsafe fn write(&self, off: usize, src: *const u8, len: usize) -> Result {
        // SAFETY: the caller guarantees `src`; the page is not posted to the card (the
        // caller owns its slot, and holds the `WriterClaim`, which every filler of a
        // bounce page holds), so nothing else reads or writes it meanwhile.
        unsafe { self.page.write_raw(src, off, len) }
    }

    /// Hands the page to the card before it is posted.
    pub(super) fn sync_for_device(&self, len: usize) {
        // SAFETY: `addr` is a live mapping of `dev` (type invariant).
        unsafe { acq_shim_dma_sync_to_device(raw_dev(&self.dev), self.addr, len.min(PAGE_SIZE)) };
    }
}

impl Drop for BouncePage {
    fn drop(&mut self) {
        // SAFETY: the mapping is live (type invariant) and removed exactly once, here.
        unsafe { acq_shim_dma_unmap_to_device(raw_dev(&self.dev), self.addr, PAGE_SIZE) };
    }
}

/// A page of a pipe buffer, held (page reference) and DMA-mapped for the card until its
/// completion arrives (zero-copy splice).
///
/// # Invariants
///
/// `addr` is a live `DMA_TO_DEVICE` mapping of `offset .. offset + len` of `page` for
/// `dev`.
pub(super) struct PipePage {
    /// The page, held until the card read it (dropped after the mapping, in `drop`).
    _page: PageRef,
    pub(super) addr: bindings::dma_addr_t,
    pub(super) len: usize,
    pub(super) dev: ARef<device::Device>,
    /// Session stream offset of its first byte: the release point (`ACQ_IOC_PB_RELEASE`)
    /// stays at or before it while the page is held.
    pub(super) stream_off: u64,
}

impl PipePage {
    /// Takes a reference on `page` (owned by a confirmed pipe buffer) and maps its bytes
    /// `offset .. offset + len`.
    ///
    /// # Safety
    ///
    /// `dev` must be bound. `page` must be a valid page for the duration of the call (the
    /// caller's pipe buffer holds it), with `offset + len <= PAGE_SIZE`.
    pub(super) unsafe fn new(
        dev: &device::Device,
        page: *mut bindings::page,
        offset: usize,
        len: usize,
        stream_off: u64,
    ) -> Result<Self> {
        // SAFETY: `page` is valid for the call (caller).
        let page = unsafe { PageRef::from_raw(page) };
        let mut addr: bindings::dma_addr_t = 0;
        // SAFETY: `dev` is bound (caller: the card is not removed, under the playback
        // lock that unbind takes), `page` valid and referenced, the range in the page.
        let ret = unsafe {
            acq_shim_dma_map_to_device(
                raw_dev(dev),
                page.as_ptr().cast(),
                offset as c_uint,
                len,
                &mut addr,
            )
        };
        if ret != 0 {
            // `page` drops the reference.
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: reference and mapping were just taken.
        Ok(Self {
            _page: page,
            addr,
            len,
            dev: dev.into(),
            stream_off,
        })
    }
}

impl Drop for PipePage {
    fn drop(&mut self) {
        // SAFETY: the mapping is live and removed exactly once, here (type invariant).
        unsafe { acq_shim_dma_unmap_to_device(raw_dev(&self.dev), self.addr, self.len) };
        // `page` drops the reference after the mapping is gone.
    }
}

/// What a posted slot holds of the writer's memory until the card's completion.
pub(super) enum Held {
    /// A spliced pipe page: referenced and mapped by us.
    Pipe(PipePage),
    /// A page of the imported dma-buf (`Import`, which owns the mapping): nothing to drop
    /// but the mark, which keeps the release point before it.
    Import { stream_off: u64 },
}

impl Held {
    /// Session stream offset of the block's first byte.
    fn stream_off(&self) -> u64 {
        match self {
            Held::Pipe(p) => p.stream_off,
            Held::Import { stream_off } => *stream_off,
        }
    }
}

/// The playback channel's DMA memory: rings, event area, bounce pages, and the pipe pages
/// the card is reading. Dropped at unbind after the card was stopped.
pub(crate) struct PbHw {
    pub(super) desc: DmaRegion,
    pub(super) comp: DmaRegion,
    pub(super) event: DmaRegion,
    pub(super) bounce: KVec<BouncePage>,
    /// Per ring slot: the writer's memory it carries while posted (zero-copy), else
    /// `None` (its bounce page).
    pub(super) held: KVec<Option<Held>>,
}

impl PbHw {
    pub(crate) fn new(dev: &device::Device<Bound>) -> Result<Self> {
        let mut bounce = KVec::with_capacity(MAX_ENTRIES, GFP_KERNEL)?;
        let mut held = KVec::with_capacity(MAX_ENTRIES, GFP_KERNEL)?;
        for _ in 0..MAX_ENTRIES {
            bounce.push(BouncePage::new(dev)?, GFP_KERNEL)?;
            held.push(None, GFP_KERNEL)?;
        }
        Ok(Self {
            desc: DmaRegion::new(dev, MAX_ENTRIES * regs::desc::SIZE)?,
            comp: DmaRegion::new(dev, MAX_ENTRIES * regs::comp::SIZE)?,
            event: DmaRegion::new(dev, PAGE_SIZE)?,
            bounce,
            held,
        })
    }

    pub(super) fn completion(&self, k: u32, log2: u32) -> Option<regs::Completion> {
        completions::read(&self.comp, 0, k, log2)
    }

    /// True if the card's `cons` (playback event area) is past ring index `k` while the
    /// record there still carries the previous lap's phase: a completion the card lied
    /// about or lost (as capture's `Card::head_lost`). A `cons` beyond what the card was
    /// given (`published`) is a lie of its own and proves nothing: taking it would release
    /// pages the card may still be reading.
    pub(super) fn head_lost(&self, k: u32, published: u32, log2: u32) -> bool {
        let cons = self.event.read32(regs::pb_event::OFF_CONS);
        let max_ahead = regs::ring::entries(log2).min(regs::ring::outstanding(published, k));
        completions::passed_unwritten(&self.comp, 0, k, log2, cons, max_ahead)
    }

    /// Marks the record of ring index `k` unwritten for the next lap
    /// ([`completions::unmark`]), before its slot goes back to the card.
    pub(super) fn unmark(&self, k: u32, log2: u32) {
        completions::unmark(&self.comp, 0, k, log2);
    }

    pub(super) fn write_desc(&self, slot: usize, addr: u64, len: u32) {
        posting::write_desc(&self.desc, slot, addr, len);
    }

    /// Session stream offset of the oldest byte in held writer memory, if any: the first
    /// held page of the posted slots `head .. prod` (pages are held only while posted, and
    /// posted in stream order).
    pub(super) fn oldest_held(&self, head: u32, prod: u32, log2: u32) -> Option<u64> {
        let posted = regs::ring::outstanding(prod, head).min(self.held.len() as u32);
        (0..posted).find_map(|i| {
            let slot = regs::ring::slot(head.wrapping_add(i), log2) as usize;
            self.held.get(slot)?.as_ref().map(Held::stream_off)
        })
    }

    /// True while a posted slot carries a page of the imported dma-buf.
    pub(super) fn holds_import(&self) -> bool {
        self.held
            .iter()
            .any(|h| matches!(h, Some(Held::Import { .. })))
    }

    /// Drops every held page (the card no longer reads any: it is stopped).
    pub(super) fn release_all(&mut self) {
        self.held.iter_mut().for_each(|h| *h = None);
    }
}
