// SPDX-License-Identifier: GPL-2.0

//! `ACQ_IOC_PB_IMPORT` and `ACQ_IOC_PB_QUEUE`: a dma-buf as the playback source
//! (docs/driver.md, "Sharing the ring with another device"). The card reads the exporter's
//! pages through its own mapping of them (an IOMMU gives each device its own addresses);
//! no CPU touches the data. A posted block is held like a spliced pipe page: the release
//! point (`ACQ_IOC_PB_RELEASE`) stays before it until the card's completion, which is when
//! the exporter may reuse the page.

use super::*;

extern "C" {
    fn acq_shim_dmabuf_import(
        fd: c_int,
        dev: *mut c_void,
        addrs: *mut u64,
        max_pages: c_uint,
        pages: *mut c_uint,
        size: *mut u64,
        out: *mut *mut c_void,
    ) -> c_int;
    fn acq_shim_dmabuf_unimport(imp: *mut c_void);
}

/// Largest dma-buf the playback channel imports: the largest ring's worth of pages.
const MAX_IMPORT_PAGES: usize = MAX_ENTRIES;

/// A dma-buf attached to and mapped for the card's playback channel.
///
/// # Invariants
///
/// `raw` is a live import from `acq_shim_dmabuf_import` for `dev`, whose pages' device
/// addresses are `addrs`; it is undone only in `drop`, which must run while `dev` is
/// bound: the playback channel drops it at close and at a new import (under the playback
/// lock, the card not removed) and at unbind (in `pb_shutdown`, which runs before the
/// device's resources are released, after waiting out an import being built).
pub(super) struct Import {
    raw: *mut c_void,
    addrs: KVec<u64>,
    size: u64,
    dev: ARef<device::Device>,
}

// SAFETY: an import is a set of kernel objects (dma-buf, attachment, table) with no
// thread affinity; it is only used under the playback mutex.
unsafe impl Send for Import {}

impl Import {
    /// Attaches the dma-buf behind `fd` to `dev` and maps it for reading by the card.
    ///
    /// # Safety
    ///
    /// `dev` must be bound, and stay bound until the import is dropped.
    pub(super) unsafe fn new(fd: i32, dev: &device::Device) -> Result<Self> {
        let mut addrs = KVec::with_capacity(MAX_IMPORT_PAGES, GFP_KERNEL)?;
        addrs.resize(MAX_IMPORT_PAGES, 0, GFP_KERNEL)?;
        let (mut pages, mut size, mut raw): (c_uint, u64, *mut c_void) = (0, 0, ptr::null_mut());
        // SAFETY: `dev` is bound (caller); `addrs` has room for `MAX_IMPORT_PAGES`
        // entries; the shim writes `pages`, `size` and `raw` only on success.
        let ret = unsafe {
            acq_shim_dmabuf_import(
                fd,
                raw_dev(dev),
                addrs.as_mut_ptr(),
                MAX_IMPORT_PAGES as c_uint,
                &mut pages,
                &mut size,
                &mut raw,
            )
        };
        to_result(ret)?;
        addrs.truncate(pages as usize);
        // INVARIANT: the import just succeeded, for `dev`.
        Ok(Self {
            raw,
            addrs,
            size,
            dev: dev.into(),
        })
    }

    pub(super) fn pages(&self) -> u32 {
        self.addrs.len() as u32
    }

    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// The card's address of page `i`, made current for the card first: with a bounce
    /// buffer (swiotlb) the card reads a copy, taken at map time unless synced now.
    ///
    /// The sync assumes what exporters of system memory do (this driver's, the DMA heaps,
    /// udmabuf): a table from `dma_map_sgtable` for `dev`. An exporter of device memory
    /// (`dma_map_resource`, a GPU's VRAM) has nothing to sync; on x86, the only platform
    /// this driver is built for, the sync of such an address is a no-op (docs/driver.md
    /// says imports of device memory are not supported elsewhere).
    pub(super) fn page_for_device(&self, i: u32, len: usize) -> Option<u64> {
        let addr = *self.addrs.get(i as usize)?;
        // SAFETY: `addr .. + len` (len <= PAGE_SIZE) lies in a live mapping of `dev`
        // (type invariant) for `DMA_TO_DEVICE`, from the exporter's map callback.
        unsafe { acq_shim_dma_sync_to_device(raw_dev(&self.dev), addr, len.min(PAGE_SIZE)) };
        Some(addr)
    }
}

impl Drop for Import {
    fn drop(&mut self) {
        // SAFETY: the import is live and undone exactly once, here, with `dev` still bound
        // (type invariant).
        unsafe { acq_shim_dmabuf_unimport(self.raw) };
    }
}

impl Card {
    /// `ACQ_IOC_PB_IMPORT`: replaces the import (`fd` -1: drops it). Refused (`EBUSY`)
    /// while blocks of the current one are posted: the card may still read its pages.
    ///
    /// It holds the write position (`WriterClaim`: no `ACQ_IOC_PB_QUEUE` runs meanwhile,
    /// so a queue call never sees its import change), but not the playback lock while the
    /// exporter attaches and maps: a map may wait for the exporter's fences, and the
    /// watchdog, poll() and unbind need that lock. `importing` tells unbind to wait for
    /// it (the device must stay bound until the new import is installed or undone).
    pub(super) fn pb_import(&self, req: &mut uapi::AcqPbImport) -> Result {
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        // (Declared first: it drops after `g`.)
        let _writer: WriterClaim<'_>;
        let mut g = self.pb.lock();
        _writer = self.pb_claim_writer(&mut g, false)?;
        // Completions already written release their slots first.
        self.pb_reap(&mut g);
        if g.removed {
            return Err(ENODEV);
        }
        if g.hw.as_ref().is_some_and(|hw| hw.holds_import()) {
            return Err(EBUSY);
        }
        // The card reads none of its pages (no slot holds one): it may go.
        g.import = None;
        if req.fd == -1 {
            req.pages = 0;
            req.size = 0;
            return Ok(());
        }
        g.importing = true;
        drop(g);
        let pd: &pci::Device = &self.pdev.0;
        // SAFETY: the card was not removed when `importing` was set, and unbind waits
        // (`pb_shutdown`) until it is cleared below, after the import is installed or
        // dropped: the device stays bound meanwhile.
        let imp = unsafe { Import::new(req.fd, pd.as_ref()) };
        g = self.pb.lock();
        let r = match imp {
            Ok(imp) if !g.removed => {
                req.pages = imp.pages();
                req.size = imp.size();
                g.import = Some(imp);
                Ok(())
            }
            Ok(imp) => {
                // Unbind began meanwhile and waits for `importing`: undo it now, while
                // the device is still bound.
                drop(imp);
                Err(ENODEV)
            }
            Err(e) => Err(e),
        };
        g.importing = false;
        self.pb_wait.notify_all();
        r
    }

    /// `ACQ_IOC_PB_QUEUE`: posts `count` blocks from import pages `first`, `first + 1`, ...
    /// (modulo its pages), with write()'s session and errno rules.
    pub(super) fn pb_queue(&self, req: &mut uapi::AcqPbQueue) -> Result {
        if req.flags & !uapi::ACQ_PB_QUEUE_NONBLOCK != 0 {
            return Err(EINVAL);
        }
        let nonblock = req.flags & uapi::ACQ_PB_QUEUE_NONBLOCK != 0;
        req.done = 0;
        // (Declared first: it drops after `g`.)
        let _writer: WriterClaim<'_>;
        let mut g = self.pb.lock();
        _writer = self.pb_claim_writer(&mut g, nonblock)?;
        // The import cannot change during the call: PB_IMPORT needs the claim held here.
        let pages = g.import.as_ref().map_or(0, |i| i.pages());
        if req.first >= pages {
            return Err(EINVAL);
        }
        let mut done = 0u32;
        let r = loop {
            if done == req.count {
                break Ok(());
            }
            if done > 0 && yield_between_blocks(1).is_some() {
                break Ok(());
            }
            let d = done as usize;
            match self.pb_ready(&mut g, d, nonblock) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break if done > 0 { Ok(()) } else { Err(e) },
            }
            if let Err(e) = self.pb_wait_space(&mut g, nonblock) {
                break if done > 0 { Ok(()) } else { Err(e) };
            }
            if g.owes() || !g.running {
                continue;
            }
            if g.fill != 0 {
                // A partial block from write() waits in the bounce page of the next slot:
                // an import block cannot go before it, nor into it.
                break if done > 0 { Ok(()) } else { Err(EINVAL) };
            }
            let block = g.cfg.block_size;
            let page = ((u64::from(req.first) + u64::from(done)) % u64::from(pages)) as u32;
            let Some(addr) = g
                .import
                .as_ref()
                .and_then(|i| i.page_for_device(page, block as usize))
            else {
                // Not reachable while the claim is held (see above); said as what it
                // would mean, an import that is not there.
                break if done > 0 { Ok(()) } else { Err(EINVAL) };
            };
            let off = g.written;
            g.written += u64::from(block);
            g.stats.bytes += u64::from(block);
            g.stats.zero_copy_bytes += u64::from(block);
            self.pb_post(
                &mut g,
                Source::Import {
                    addr,
                    stream_off: off,
                },
            );
            done += 1;
        };
        self.pb_publish(&mut g);
        req.done = done;
        r
    }
}
