// SPDX-License-Identifier: GPL-2.0

//! The memory the card reaches by DMA: pool pages with streaming mappings, coherent
//! regions (rings, event page, control page) and [`Hw`], which owns them all.

use super::*;

/// A new zeroed page of our own and its streaming DMA mapping, made by `map` (a shim call
/// of the direction wanted: it returns 0 and writes the bus address, or a negative errno).
/// Both channels' pages are made so (capture's pool pages, playback's bounce pages).
pub(crate) fn new_mapped_page(
    map: impl FnOnce(&Page, &mut bindings::dma_addr_t) -> c_int,
) -> Result<(Page, bindings::dma_addr_t)> {
    let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
    let mut addr: bindings::dma_addr_t = 0;
    let ret = map(&page, &mut addr);
    if ret != 0 {
        return Err(Error::from_errno(ret));
    }
    Ok((page, addr))
}

impl StreamingPage {
    /// A new page with a mapping; `index` (its place in the pool) is stored in the page's
    /// `private` field, where the pipe buffer operations find it.
    pub(crate) fn new(dev: &device::Device<Bound>, index: usize) -> Result<Self> {
        let (page, addr) = new_mapped_page(|page, addr| {
            // SAFETY: `dev` is a valid, bound device and `page` a valid page we own; the
            // shim writes `addr` only on success.
            unsafe { acq_shim_dma_map_page(raw_dev(dev), page.as_ptr().cast(), PAGE_SIZE, addr) }
        })?;
        // SAFETY: the page was just allocated by us; nobody else uses its `private` field.
        unsafe { acq_shim_page_set_index(page.as_ptr().cast(), index as c_ulong) };
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
    pub(crate) fn lent(&self) -> bool {
        // SAFETY: `page` is a valid page (we hold a reference).
        unsafe { acq_shim_page_count(self.page.as_ptr().cast()) != 1 }
    }

    /// Bus address of the page.
    pub(crate) fn bus_addr(&self) -> u64 {
        self.addr
    }

    /// Hands the first `len` bytes back to the CPU after the device wrote them.
    pub(crate) fn sync_for_cpu(&self, len: usize) {
        // SAFETY: `addr` is a live mapping of `dev` (type invariant) at least `len` long.
        unsafe { acq_shim_dma_sync_for_cpu(raw_dev(&self.dev), self.addr, len.min(PAGE_SIZE)) };
    }

    /// Hands the page back to the device before it is posted again.
    pub(crate) fn sync_for_device(&self) {
        // SAFETY: `addr` is a live mapping of `dev` (type invariant).
        unsafe { acq_shim_dma_sync_for_device(raw_dev(&self.dev), self.addr, PAGE_SIZE) };
    }
}

impl Drop for StreamingPage {
    fn drop(&mut self) {
        // Without a CPU sync (shim.c says why): a bounce buffer's stale bytes must not
        // land on a page a pipe still holds.
        // SAFETY: the mapping is live (type invariant) and is removed exactly once, here.
        unsafe { acq_shim_dma_unmap_page(raw_dev(&self.dev), self.addr, PAGE_SIZE) };
        // A pipe may still hold the page (it keeps its own reference and frees the page
        // when done); its index means nothing after this.
        // SAFETY: `page` is a valid page.
        unsafe { acq_shim_page_set_index(self.page.as_ptr().cast(), 0) };
    }
}

impl DmaRegion {
    pub(crate) fn new(dev: &device::Device<Bound>, bytes: usize) -> Result<Self> {
        let words = bytes.div_ceil(4);
        Ok(Self {
            mem: Coherent::<u32>::zeroed_slice(dev, words, GFP_KERNEL)?,
        })
    }

    pub(crate) fn bus_addr(&self) -> u64 {
        self.mem.dma_address()
    }

    pub(crate) fn word_ptr(&self, off: usize) -> Option<*mut u32> {
        let idx = off / 4;
        if off % 4 != 0 || idx >= self.mem.len() {
            return None;
        }
        // SAFETY: `idx` is within the allocation, so the result stays in bounds.
        Some(unsafe { self.mem.as_mut_ptr().cast::<u32>().add(idx) })
    }

    pub(crate) fn read32(&self, off: usize) -> u32 {
        match self.word_ptr(off) {
            // SAFETY: `p` is an aligned pointer into live coherent memory (checked above).
            Some(p) => u32::from_le(unsafe { ptr::read_volatile(p) }),
            None => 0,
        }
    }

    pub(crate) fn write32(&self, off: usize, v: u32) {
        if let Some(p) = self.word_ptr(off) {
            // SAFETY: `p` is an aligned pointer into live coherent memory (checked above).
            unsafe { ptr::write_volatile(p, v.to_le()) };
        }
    }

    pub(crate) fn write64(&self, off: usize, v: u64) {
        self.write32(off, regs::lo32(v));
        self.write32(off + 4, regs::hi32(v));
    }

    pub(crate) fn zero(&self, bytes: usize) {
        let mut off = 0;
        while off < bytes {
            self.write32(off, 0);
            off += 4;
        }
    }
}

impl Hw {
    pub(crate) fn new(dev: &device::Device<Bound>) -> Result<Self> {
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
    pub(crate) fn clear_slots(&mut self) {
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
    pub(crate) fn page_for_slot(&mut self, slot: usize, keep: bool) -> Option<usize> {
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
    pub(crate) fn slot_buf(&self, slot: usize) -> Option<(usize, &StreamingPage)> {
        let i = usize::from(*self.slot_page.get(slot)?);
        Some((i, self.pool.get(i)?))
    }

    /// Writes the control page's words (`uapi::ctl` offsets).
    pub(crate) fn write_ctl(&self, words: &[(usize, u64)]) {
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
    pub(crate) fn free_pages(&self) -> usize {
        self.pool.iter().filter(|p| !p.lent()).count()
    }

    /// Hands pool page `page` to the card's side: marked busy in `busy` until its
    /// completion is consumed (what a lent page's ->confirm waits for). In BAR2 mode this is
    /// all "posting" does: the slot gets its page now, the data is copied into it later.
    pub(crate) fn arm_page(&self, page: usize, busy: &[Atomic<u32>]) -> Option<&StreamingPage> {
        let buf = self.pool.get(page)?;
        if let Some(b) = busy.get(page) {
            b.store(1, Relaxed);
        }
        buf.sync_for_device();
        Some(buf)
    }

    /// Writes descriptor `k` (id: its ring slot) for pool page `page` (see `arm_page`).
    pub(crate) fn write_desc(&self, k: u32, log2: u32, page: usize, busy: &[Atomic<u32>]) {
        let Some(buf) = self.arm_page(page, busy) else {
            return;
        };
        let slot = regs::ring::slot(k, log2) as usize;
        posting::write_desc(&self.desc, slot, buf.bus_addr(), PAGE_SIZE as u32);
    }
}
