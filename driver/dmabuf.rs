// SPDX-License-Identifier: GPL-2.0

//! `ACQ_IOC_EXPBUF`: the capture ring's pages as one read-only dma-buf (docs/driver.md,
//! "Sharing the ring with another device"), for another device to read by DMA (a card's
//! playback channel, `ACQ_IOC_PB_IMPORT`) or a process to map.
//!
//! It is mmap mode without the mapping: the ring's slots keep their pages (a page the
//! dma-buf holds is never replaced: `Hw::page_for_slot` with `keep`), blocks are handed
//! out and back with `ACQ_IOC_MMAP_SYNC`, and read() and splice() are refused while the
//! file is in that mode. The dma-buf holds a reference on each page and nothing of the
//! card (shim_dmabuf.c), so it stays valid after the file is closed or the card is gone;
//! a page it still holds counts as not free in the pool (`pool_free`), and is never posted
//! to the card again by a later session.

use super::*;

extern "C" {
    // Pages and dma-bufs as `void *`: their bindgen types contain zero-sized arrays that
    // are not FFI-safe in a declaration.
    fn acq_shim_dmabuf_export(
        pages: *mut *mut c_void,
        n: c_uint,
        cloexec: bool,
        out: *mut *mut c_void,
        fd: *mut c_int,
    ) -> c_int;
    fn acq_shim_dmabuf_publish(dmabuf: *mut c_void, fd: c_int);
    fn acq_shim_dmabuf_abort(dmabuf: *mut c_void, fd: c_int);
}

/// A dma-buf over a set of pages with a descriptor reserved for it but not yet in the
/// process's table: `publish` installs it, dropping it undoes both (an installed
/// descriptor cannot be taken back, so the answer is copied out first).
///
/// # Invariants
///
/// `dmabuf` is a dma-buf from `acq_shim_dmabuf_export` whose only reference is ours, and
/// `fd` the descriptor reserved with it, not installed.
pub(crate) struct ExportedRing {
    dmabuf: *mut c_void,
    fd: c_int,
}

impl ExportedRing {
    /// Exports `pages` (the dma-buf takes a reference of its own on each).
    pub(crate) fn new(pages: &[PageRef], cloexec: bool) -> Result<Self> {
        let mut raw = KVec::with_capacity(pages.len(), GFP_KERNEL)?;
        for p in pages {
            raw.push(p.as_ptr().cast::<c_void>(), GFP_KERNEL)?;
        }
        let n = c_uint::try_from(raw.len()).map_err(|_| EINVAL)?;
        let mut dmabuf = ptr::null_mut();
        let mut fd: c_int = -1;
        // SAFETY: `raw` holds `n` valid pages (each kept by a `PageRef` in `pages` for the
        // call); the shim writes `dmabuf` and `fd` only on success.
        let ret =
            unsafe { acq_shim_dmabuf_export(raw.as_mut_ptr(), n, cloexec, &mut dmabuf, &mut fd) };
        to_result(ret)?;
        // INVARIANT: the export just succeeded; nothing else has the dma-buf or the fd.
        Ok(Self { dmabuf, fd })
    }

    /// The reserved descriptor's number.
    pub(crate) fn fd(&self) -> i32 {
        self.fd
    }

    /// Installs the descriptor: the process owns the dma-buf from now on.
    pub(crate) fn publish(self) {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `fd` is reserved for `dmabuf` and not installed (type invariant); the
        // reference moves into the process's table, and `drop` does not run.
        unsafe { acq_shim_dmabuf_publish(this.dmabuf, this.fd) };
    }
}

impl Drop for ExportedRing {
    fn drop(&mut self) {
        // SAFETY: never published (`publish` skips this): the reservation and our only
        // reference are undone exactly once, here.
        unsafe { acq_shim_dmabuf_abort(self.dmabuf, self.fd) };
    }
}

impl Card {
    /// `ACQ_IOC_EXPBUF`, first half: gives every slot a page it keeps and exports them.
    /// The file enters mmap mode only in [`Card::expbuf_commit`], once the answer reached
    /// the caller: a failed call changes nothing.
    pub(crate) fn expbuf(&self, req: &mut uapi::AcqExpBuf) -> Result<ExportedRing> {
        if req.flags & !uapi::ACQ_EXPBUF_CLOEXEC != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let pages = {
            let mut g = self.inner.lock();
            self.pin_slots(&mut g)?;
            // A reference on each slot's page, in slot order, for the dma-buf to take.
            let hw = g.hw.as_ref().ok_or(ENODEV)?;
            let n = g.entries() as usize;
            let mut refs = KVec::with_capacity(n, GFP_KERNEL)?;
            for slot in 0..n {
                let (_, page) = hw.slot_buf(slot).ok_or(ENOMEM)?;
                refs.push(PageRef::new(&page.page), GFP_KERNEL)?;
            }
            refs
        };
        let n = pages.len();
        let exp = ExportedRing::new(&pages, req.flags & uapi::ACQ_EXPBUF_CLOEXEC != 0)?;
        req.fd = exp.fd();
        req.entries = n as u32;
        req.size = (n * PAGE_SIZE) as u64;
        Ok(exp)
    }

    /// `ACQ_IOC_EXPBUF`, second half: the file enters mmap mode and the descriptor is
    /// installed. `EBUSY` (the export undone) if a read() or splice() session started
    /// since the first half: its slots no longer carry the exported pages.
    pub(crate) fn expbuf_commit(&self, exp: ExportedRing) -> Result {
        let mut g = self.inner.lock();
        if g.removed {
            return Err(ENODEV);
        }
        if g.running && !g.mapped {
            return Err(EBUSY);
        }
        g.mapped = true;
        self.update_ctl(&g, 0);
        drop(g);
        exp.publish();
        Ok(())
    }
}
