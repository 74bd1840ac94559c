// SPDX-License-Identifier: GPL-2.0

//! BAR2 streaming mode (docs/device.md section 12): for cards, or hosts, without DMA.
//!
//! In this mode the card keeps the event page, the completion ring and N data slots in
//! its BAR2 (on-card memory) and never touches host memory. The driver reads completions
//! and the event page through the BAR2 mapping, gives slots back by advancing `prod` in
//! the BAR2 event page, and copies every block out of its slot into a pool page
//! (`memcpy_fromio`) when it consumes the completion. From there on a block is an ordinary
//! pool page: read(), splice() (which lends the page, so the pipe never sees BAR memory,
//! which has no `struct page`) and mmap() work on it unchanged. The one extra copy per
//! block is the price of a card without a DMA engine.
//!
//! Everything here is reached only through [`Bar2`], which owns the BAR2 mapping
//! (revoked at unbind like BAR0's). The session logic stays with the capture ring
//! (ring.rs, capture.rs), which asks this module for the few mode-specific operations.

use core::ptr;

use kernel::{
    bindings,
    device::Bound,
    ffi::c_void,
    io::{Io, IoBackend, IoBase, IoCopyable, Mmio, MmioBackend},
    page::PAGE_SIZE,
    pci,
    prelude::*,
};

use super::{regs, uapi::AcqConfig, StreamingPage};

/// The smallest BAR2 a card can have (docs/device.md section 4); the mapping is checked
/// against it at probe, every access against the real size at run time.
const BAR2_MIN: usize = regs::bar::BAR2_SIZE_MIN as usize;

/// Where the running session keeps its data slots in BAR2.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) ring_log2: u32,
    pub(crate) block_size: u32,
}

impl Layout {
    /// The layout a configuration asks for.
    pub(crate) fn of(cfg: &AcqConfig) -> Self {
        Self {
            ring_log2: cfg.ring_log2,
            block_size: cfg.block_size,
        }
    }

    /// BAR2 bytes the layout needs: event page, completion ring, N slots.
    fn bytes_needed(self) -> u64 {
        regs::bar2::data_offset(self.ring_log2)
            + u64::from(regs::ring::entries(self.ring_log2)) * u64::from(self.block_size)
    }
}

/// The card's BAR2, mapped for the driver (`pci_iomap` of the whole BAR).
pub(crate) struct Bar2 {
    bar: pci::DevresBar<BAR2_MIN>,
    /// Usable bytes: the smaller of the BAR's length and the card's BAR2_SIZE register.
    size: usize,
}

impl Bar2 {
    /// Maps BAR2 of a card that has the BAR2_STREAM capability. `reg_size` is the card's
    /// BAR2_SIZE register.
    pub(crate) fn map(pdev: &pci::Device<Bound>, reg_size: u32) -> Result<Self> {
        let bar = pdev.iomap_region_sized::<BAR2_MIN>(regs::bar::BAR2_INDEX, c"acq-bar2")?;
        let size = (&bar).size().min(reg_size as usize);
        if size < BAR2_MIN {
            return Err(ENODEV);
        }
        Ok(Self {
            bar: bar.into_devres()?,
            size,
        })
    }

    /// Usable BAR2 bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Runs `f` on the mapping, if the card is still bound (`None` after the unbind). `f`
    /// must not sleep (the mapping is protected by RCU).
    fn with<R>(&self, f: impl FnOnce(&pci::Bar<'_, BAR2_MIN>) -> R) -> Option<R> {
        let bar = self.bar.try_access()?;
        Some(f(&bar))
    }

    /// A 32-bit read at a BAR2 offset; 0 if the card is gone or the offset is out of range
    /// (a driver bug, not memory corruption: the access is bounds checked).
    pub(crate) fn read32(&self, off: usize) -> u32 {
        self.with(|b| b.try_read32(off).unwrap_or(0)).unwrap_or(0)
    }

    /// A 32-bit write at a BAR2 offset (dropped when out of range or unbound).
    pub(crate) fn write32(&self, off: usize, v: u32) {
        let _ = self.with(|b| b.try_write32(v, off));
    }

    /// A word of the BAR2 event page (`regs::event` offsets).
    pub(crate) fn event_read(&self, off: usize) -> u32 {
        self.read32(regs::bar2::EVENT_OFFSET as usize + off)
    }

    /// Writes a driver word of the BAR2 event page (`prod`, `irq_armed`).
    pub(crate) fn event_write(&self, off: usize, v: u32) {
        self.write32(regs::bar2::EVENT_OFFSET as usize + off, v);
    }

    /// Session start, before ENABLE (the engine is stopped): zero the event page and the
    /// completion ring (stale PHASE bits from an earlier session would look new). The
    /// device rewrites its half of the event page at enable; zeroing it too means a
    /// `cons` or `events` of the previous session is never mistaken for this one's.
    pub(crate) fn prepare(&self, l: Layout) -> Result {
        if !self.fits(l) {
            return Err(EINVAL);
        }
        let comp_end = regs::bar2::data_offset(l.ring_log2) as usize;
        self.with(|b| {
            let mut off = regs::bar2::EVENT_OFFSET as usize;
            while off < regs::bar2::EVENT_OFFSET as usize + regs::event::SIZE {
                let _ = b.try_write32(0, off);
                off += 4;
            }
            let mut off = regs::bar2::COMP_OFFSET as usize;
            while off < comp_end {
                let _ = b.try_write32(0, off);
                off += 4;
            }
        })
        .ok_or(ENODEV)
    }

    /// True if the layout fits this card's BAR2 (else the card refuses it at enable with
    /// CONFIG/BAR2_LAYOUT).
    pub(crate) fn fits(&self, l: Layout) -> bool {
        regs::bar2::layout_fits(self.size as u64, l.ring_log2, l.block_size)
    }

    /// Copies the first `len` bytes of data slot `slot` into `page` (`memcpy_fromio`).
    /// The caller owns the page (it is assigned to the slot and not lent) and has synced
    /// it for the CPU; the slot is not given back before this returns.
    pub(crate) fn copy_slot(
        &self,
        l: Layout,
        slot: usize,
        page: &StreamingPage,
        len: usize,
    ) -> Result {
        let len = len.min(l.block_size as usize).min(PAGE_SIZE);
        if slot >= regs::ring::entries(l.ring_log2) as usize {
            return Err(EINVAL);
        }
        let off = regs::bar2::slot_offset(l.ring_log2, l.block_size, slot as u32) as usize;
        let end = off.checked_add(len).ok_or(EINVAL)?;
        if end > self.size {
            return Err(EINVAL);
        }
        self.with(|b| -> Result {
            let view: Mmio<'_, _> = b.as_view();
            if end > Io::size(view) {
                return Err(EINVAL);
            }
            let src = ptr::slice_from_raw_parts_mut(
                MmioBackend::as_ptr(view).cast::<u8>().wrapping_add(off),
                len,
            );
            // SAFETY: `src` is a projection of `view`: the same mapping, starting `off`
            // bytes in, `len` bytes long, and `off + len` is within the view (checked
            // above).
            let src: Mmio<'_, [u8]> = unsafe { MmioBackend::project_view(view, src) };
            // SAFETY: the pool holds a reference to the page; the local mapping is
            // released below, after the copy.
            let dst = unsafe { bindings::kmap_local_page(page.page.as_ptr()) }.cast::<u8>();
            // SAFETY: `dst` maps the whole page and `len <= PAGE_SIZE`; BAR memory and a
            // RAM page never overlap. The caller owns the page (nobody else reads or
            // writes it during the copy).
            unsafe { MmioBackend::copy_from_io(src, dst) };
            // SAFETY: `dst` came from `kmap_local_page` above and is no longer used.
            unsafe { bindings::kunmap_local(dst.cast::<c_void>()) };
            Ok(())
        })
        .ok_or(ENODEV)?
    }
}

/// Refuses (EINVAL, with a kernel log line saying why) a configuration that selects BAR2
/// mode on a card that cannot do it or whose BAR2 cannot hold the ring.
pub(crate) fn check_config(index: u32, bar2: Option<&Bar2>, cfg: &AcqConfig) -> Result {
    let Some(b) = bar2 else {
        pr_err!(
            "acq{}: BAR2 mode refused: the card has no usable BAR2 streaming mode\n",
            index
        );
        return Err(EINVAL);
    };
    let l = Layout::of(cfg);
    if !b.fits(l) {
        pr_err!(
            "acq{}: BAR2 mode refused: {} slots of {} bytes need {} bytes of BAR2, the card has {} (use a smaller ring or block)\n",
            index,
            regs::ring::entries(l.ring_log2),
            l.block_size,
            l.bytes_needed(),
            b.size()
        );
        return Err(EINVAL);
    }
    Ok(())
}
