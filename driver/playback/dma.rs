// SPDX-License-Identifier: GPL-2.0

//! The playback channel's DMA memory: bounce pages, pipe pages held (and mapped) until
//! the card's completion, and [`PbHw`], which owns the rings and both.

use super::*;

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
    pub(super) fn acq_shim_dma_unmap_to_device(dev: *mut c_void, addr: bindings::dma_addr_t, size: usize);
    pub(super) fn acq_shim_dma_sync_to_device(dev: *mut c_void, addr: bindings::dma_addr_t, size: usize);
    pub(super) fn acq_shim_get_page(page: *mut c_void);
    pub(super) fn acq_shim_put_page(page: *mut c_void);
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
        let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let mut addr: bindings::dma_addr_t = 0;
        // SAFETY: `dev` is a bound device and `page` a page we own; the shim writes `addr`
        // only on success.
        let ret = unsafe {
            acq_shim_dma_map_to_device(raw_dev(dev), page.as_ptr().cast(), 0, PAGE_SIZE, &mut addr)
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

    /// Copies `len` bytes at `src` into the page at `off`.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reading `len` bytes.
    pub(super) unsafe fn write(&self, off: usize, src: *const u8, len: usize) -> Result {
        // SAFETY: the caller guarantees `src`; the page is not posted to the card (the
        // caller owns its slot), so nothing else accesses it.
        unsafe { self.page.write_raw(src, off, len) }
    }

    /// Copies up to `len` bytes from `src` into the page at `off` (clamped to the page);
    /// returns how many arrived (fewer on a fault in the user's buffer).
    ///
    /// The caller must own the slot (not posted), so nothing else accesses the page.
    pub(super) fn fill_from_iter(&self, off: usize, len: usize, src: &mut IovIterSource<'_>) -> usize {
        let off = off.min(PAGE_SIZE);
        let len = len.min(PAGE_SIZE - off);
        // SAFETY: `page` is a valid page we own; the local mapping is released below,
        // after the last use of the slice.
        let base = unsafe { bindings::kmap_local_page(self.page.as_ptr()) }.cast::<u8>();
        // SAFETY: `base` maps the whole page and `off + len <= PAGE_SIZE`; the slot is not
        // posted (caller), so neither the card nor another thread accesses these bytes
        // while the slice lives. `MaybeUninit<u8>` accepts any byte.
        let dst = unsafe {
            core::slice::from_raw_parts_mut(base.add(off).cast::<MaybeUninit<u8>>(), len)
        };
        let n = src.copy_from_iter_raw(dst).len();
        // SAFETY: `base` came from `kmap_local_page` above and `dst` is no longer used.
        unsafe { bindings::kunmap_local(base.cast::<c_void>()) };
        n
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
/// We hold one reference on `page`; `addr` is a live `DMA_TO_DEVICE` mapping of
/// `offset .. offset + len` of it for `dev`.
pub(super) struct PipePage {
    pub(super) page: *mut bindings::page,
    pub(super) addr: bindings::dma_addr_t,
    pub(super) len: usize,
    pub(super) dev: ARef<device::Device>,
}

// SAFETY: the page reference and the mapping may be released from any thread.
unsafe impl Send for PipePage {}

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
    ) -> Result<Self> {
        // SAFETY: `page` is valid (caller); the reference is ours until `drop`.
        unsafe { acq_shim_get_page(page.cast()) };
        let mut addr: bindings::dma_addr_t = 0;
        // SAFETY: `dev` is bound (caller: the card is not removed, under the playback
        // lock that unbind takes), `page` valid and referenced, the range in the page.
        let ret = unsafe {
            acq_shim_dma_map_to_device(raw_dev(dev), page.cast(), offset as c_uint, len, &mut addr)
        };
        if ret != 0 {
            // SAFETY: drops the reference taken above.
            unsafe { acq_shim_put_page(page.cast()) };
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: reference and mapping were just taken.
        Ok(Self {
            page,
            addr,
            len,
            dev: dev.into(),
        })
    }
}

impl Drop for PipePage {
    fn drop(&mut self) {
        // SAFETY: the mapping is live and removed exactly once, here (type invariant).
        unsafe { acq_shim_dma_unmap_to_device(raw_dev(&self.dev), self.addr, self.len) };
        // SAFETY: we hold one reference (type invariant), dropped exactly once, here.
        unsafe { acq_shim_put_page(self.page.cast()) };
    }
}

/// The playback channel's DMA memory: rings, event area, bounce pages, and the pipe pages
/// the card is reading. Dropped at unbind after the card was stopped.
pub(crate) struct PbHw {
    pub(super) desc: DmaRegion,
    pub(super) comp: DmaRegion,
    pub(super) event: DmaRegion,
    pub(super) bounce: KVec<BouncePage>,
    /// Per ring slot: the pipe page it carries while posted (zero-copy), else `None`.
    pub(super) held: KVec<Option<PipePage>>,
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
        let base = regs::ring::slot(k, log2) as usize * regs::comp::SIZE;
        let tail = self.comp.read32(base + regs::comp::OFF_TAIL_DWORD);
        if regs::comp::tail_phase(tail) != regs::ring::phase(k, log2) {
            return None;
        }
        // ACQUIRE: the tail dword before the rest of the record.
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

    pub(super) fn write_desc(&self, slot: usize, addr: u64, len: u32) {
        let base = slot * regs::desc::SIZE;
        self.desc.write64(base + regs::desc::OFF_ADDR, addr);
        self.desc.write32(base + regs::desc::OFF_LEN, len);
        self.desc
            .write32(base + regs::desc::OFF_ID, slot as u32 & 0xFFFF);
    }

    /// Drops every held pipe page (the card no longer reads any: it is stopped).
    pub(super) fn release_all(&mut self) {
        self.held.iter_mut().for_each(|h| *h = None);
    }
}
