// SPDX-License-Identifier: GPL-2.0

//! [`PageRef`]: one counted reference to a page, and the copies between it and user
//! memory that read() and write() make without the card's lock.
//!
//! A copy to or from user memory can take as long as the user's page fault: a buffer
//! registered with userfaultfd, a mapping of a FUSE file or of a file on a hung disk.
//! Made under the card's mutex, that fault would hold up the interrupt thread, the
//! watchdog, every ioctl and unbind (seed 003's class of hang). So the copy runs with the
//! lock dropped, and this reference is what keeps the page safe meanwhile: a pool page
//! somebody else holds is never posted to the card (`StreamingPage::lent`), and the page
//! stays allocated even if the card is unbound and its pool freed during the copy.

use super::*;

extern "C" {
    fn acq_shim_get_page(page: *mut c_void);
    fn acq_shim_put_page(page: *mut c_void);
}

/// One reference on a page, dropped with this value.
///
/// # Invariants
///
/// `page` is a valid order-0 page on which this value holds one reference.
pub(crate) struct PageRef {
    page: *mut bindings::page,
}

// SAFETY: a page reference may be dropped from any thread (put_page has no thread
// affinity), and the copies below only need the page to be valid, which it is.
unsafe impl Send for PageRef {}

impl PageRef {
    /// A new reference on `page` (a page we own).
    pub(crate) fn new(page: &Page) -> Self {
        // SAFETY: `page` owns a reference for the duration of this borrow, so the page is
        // valid while we take ours.
        unsafe { Self::from_raw(page.as_ptr()) }
    }

    /// A new reference on the page at `page`.
    ///
    /// # Safety
    ///
    /// `page` must be a valid order-0 page for the duration of the call (its holder keeps
    /// a reference meanwhile).
    pub(crate) unsafe fn from_raw(page: *mut bindings::page) -> Self {
        // SAFETY: `page` is valid (caller); the reference is ours until `drop`.
        unsafe { acq_shim_get_page(page.cast()) };
        // INVARIANT: the reference was just taken.
        Self { page }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::page {
        self.page
    }

    /// Copies bytes `off .. off + len` of the page (clamped to the page) to `out`;
    /// returns how many arrived (fewer on a fault in the user's buffer).
    ///
    /// No Rust reference to the bytes is formed: a faulty or hostile card could still be
    /// writing them (the data may then tear; memory safety does not depend on it).
    pub(crate) fn copy_to(&self, off: usize, len: usize, out: &mut IovIterDest<'_>) -> usize {
        let off = off.min(PAGE_SIZE);
        let len = len.min(PAGE_SIZE - off);
        // SAFETY: `page` is valid (type invariant); the local mapping is released below.
        let base = unsafe { bindings::kmap_local_page(self.page) }.cast::<u8>();
        // SAFETY: `base + off .. + len` lies in the mapped page; `_copy_to_iter` reads it
        // as raw bytes and writes only into the destination iterator, valid for this call.
        let n = unsafe { bindings::_copy_to_iter(base.add(off).cast(), len, out.as_raw()) };
        // SAFETY: `base` came from `kmap_local_page` above and is no longer used.
        unsafe { bindings::kunmap_local(base.cast::<c_void>()) };
        n
    }

    /// Copies up to `len` bytes from `src` into the page at `off` (clamped to the page);
    /// returns how many arrived (fewer on a fault in the user's buffer).
    ///
    /// The bytes land in the page as they are; the caller must own them (a bounce slot
    /// not posted to the card) for them to mean anything.
    pub(crate) fn fill_from(&self, off: usize, len: usize, src: &mut IovIterSource<'_>) -> usize {
        let off = off.min(PAGE_SIZE);
        let len = len.min(PAGE_SIZE - off);
        // SAFETY: `page` is valid (type invariant); the local mapping is released below.
        let base = unsafe { bindings::kmap_local_page(self.page) }.cast::<u8>();
        // SAFETY: `base + off .. + len` lies in the mapped page; `_copy_from_iter` writes
        // it as raw bytes (no reference to them exists) and reads only the source
        // iterator, valid for this call.
        let n = unsafe { bindings::_copy_from_iter(base.add(off).cast(), len, src.as_raw()) };
        // SAFETY: `base` came from `kmap_local_page` above and is no longer used.
        unsafe { bindings::kunmap_local(base.cast::<c_void>()) };
        n
    }
}

impl Drop for PageRef {
    fn drop(&mut self) {
        // SAFETY: we hold one reference (type invariant), dropped exactly once, here. If it
        // is the last one (the pool was freed meanwhile), the page is freed now.
        unsafe { acq_shim_put_page(self.page.cast()) };
    }
}
