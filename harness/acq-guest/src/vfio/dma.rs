//! DMA memory for a userspace driver: anonymous memory, populated and locked, whose bus
//! address is its physical address (no-IOMMU, read from /proc/self/pagemap, needs
//! CAP_SYS_ADMIN) or an IOVA equal to its virtual address (type-1, mapped through
//! vfio-ioctls' `VfioContainer::vfio_dma_map`, i.e. VFIO_IOMMU_MAP_DMA). With an IOMMU a
//! chunk is contiguous in IOVA space whatever the physical pages are, so ordinary memory
//! will do.
//!
//! Limits (docs/vfio.md): without an IOMMU a structure larger than a page must be
//! physically contiguous, which anonymous memory does not promise; [`Chunk::alloc`]
//! searches a larger locked allocation for a physically contiguous run and fails if there
//! is none. Locked pages are not swapped; the guest kernel has no compaction and no NUMA
//! balancing, the two things that could still migrate them (on a host, set
//! vm.compact_unevictable_allowed = 0).

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vfio_ioctls::VfioContainer;

use super::{Device, Iommu};

pub const PAGE: usize = 4096;

/// A DMA-able, zeroed, locked range: `len` bytes at `ptr`, bus address `bus`.
pub struct Chunk {
    map: *mut u8,
    map_len: usize,
    pub ptr: *mut u8,
    pub bus: u64,
    pub len: usize,
    /// Type-1: the container the chunk is mapped in, at IOVA `bus` for `map_len` bytes.
    container: Option<Arc<VfioContainer>>,
}

fn phys_of(pagemap: &std::fs::File, vaddr: usize) -> io::Result<u64> {
    let mut e = [0u8; 8];
    pagemap.read_exact_at(&mut e, (vaddr / PAGE * 8) as u64)?;
    let e = u64::from_le_bytes(e);
    let pfn = e & ((1u64 << 55) - 1);
    if e >> 63 == 0 || pfn == 0 {
        return Err(io::Error::other(
            "/proc/self/pagemap gives no page frame (not resident, or not root)",
        ));
    }
    Ok(pfn * PAGE as u64)
}

impl Chunk {
    /// Allocates `len` bytes (rounded up to pages) that the device can reach.
    pub fn alloc(dev: &Device, len: usize) -> io::Result<Chunk> {
        let pages = len.div_ceil(PAGE).max(1);
        if dev.iommu != Iommu::NoIommu || pages == 1 {
            return Chunk::alloc_from(dev, pages, pages);
        }
        // Without an IOMMU a multi-page chunk must be physically contiguous: allocate more
        // and look for a run. Memory fragmented by earlier runs may hold no run in a small
        // pool (a VM test met that after five streams): try larger ones before giving up.
        let mut last = io::Error::other("no pool tried");
        for factor in [1, 4, 16] {
            match Chunk::alloc_from(dev, pages, (pages * 16 + 64) * factor) {
                Err(e) if e.kind() == io::ErrorKind::OutOfMemory => last = e,
                r => return r,
            }
        }
        Err(last)
    }

    /// Allocates `pages` pages the device can reach, out of a pool of `tries` pages (more
    /// than `pages` without an IOMMU: the pool is searched for a physically contiguous
    /// run). No run: an `OutOfMemory` error.
    fn alloc_from(dev: &Device, pages: usize, tries: usize) -> io::Result<Chunk> {
        let len = pages * PAGE;
        let map_len = tries * PAGE;
        // SAFETY: a fresh private anonymous mapping; populated and locked so that every
        // page is resident and stays at its physical address.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | libc::MAP_LOCKED,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = map.cast::<u8>();
        let mut chunk = Chunk {
            map,
            map_len,
            ptr: map,
            bus: 0,
            len: pages * PAGE,
            container: None,
        };
        // SAFETY: the mapping is ours; mlock makes sure it is resident (MAP_LOCKED is
        // best effort).
        if unsafe { libc::mlock(map.cast(), map_len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        match dev.iommu {
            Iommu::Type1 => {
                let container = dev
                    .container()
                    .ok_or_else(|| io::Error::other("type-1 device without a container"))?;
                // SAFETY: the range is our own locked anonymous mapping; until the unmap in
                // Drop (before the munmap) it is only accessed through raw pointers with
                // volatile or atomic operations (Chunk's users), never through references.
                unsafe { container.vfio_dma_map(map as u64, map_len, map) }
                    .map_err(|e| io::Error::other(format!("VFIO_IOMMU_MAP_DMA: {e}")))?;
                chunk.bus = map as u64;
                chunk.container = Some(container);
            }
            Iommu::NoIommu => {
                let pm = std::fs::File::open("/proc/self/pagemap")?;
                let phys: Vec<u64> = (0..tries)
                    .map(|i| phys_of(&pm, map as usize + i * PAGE))
                    .collect::<io::Result<_>>()?;
                if pages == 1 {
                    chunk.bus = phys[0];
                    return Ok(chunk);
                }
                // Pages in physical order; a run of `pages` consecutive frames is then
                // moved, page by page, into one virtually contiguous range (mremap keeps
                // the frames; anonymous memory often comes in descending frame order).
                let mut order: Vec<usize> = (0..tries).collect();
                order.sort_by_key(|&i| phys[i]);
                let run = (0..=tries - pages)
                    .find(|&r| {
                        (1..pages).all(|j| phys[order[r + j]] == phys[order[r]] + (j * PAGE) as u64)
                    })
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::OutOfMemory,
                            format!(
                                "no physically contiguous run of {pages} pages among {tries} \
                                 (no-IOMMU mode needs one for a structure of {len} bytes)"
                            ),
                        )
                    })?;
                let target = Chunk::alloc_virtual(pages)?;
                for j in 0..pages {
                    // SAFETY: moves one page of our pool onto one page of our target range
                    // (both mappings are ours; MREMAP_FIXED replaces the target page).
                    let r = unsafe {
                        libc::mremap(
                            map.add(order[run + j] * PAGE).cast(),
                            PAGE,
                            PAGE,
                            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                            target.add(j * PAGE).cast::<libc::c_void>(),
                        )
                    };
                    if r == libc::MAP_FAILED {
                        let e = io::Error::last_os_error();
                        // SAFETY: the target range is ours.
                        unsafe { libc::munmap(target.cast(), pages * PAGE) };
                        return Err(e);
                    }
                }
                // The pool (minus the moved pages) is no longer needed; the chunk is the
                // target range. Check that the move kept the frames.
                // SAFETY: unmaps our own pool; the moved pages are already gone from it.
                unsafe { libc::munmap(map.cast(), map_len) };
                chunk.map = target;
                chunk.map_len = pages * PAGE;
                chunk.ptr = target;
                // SAFETY: our range; keep it locked (mremap keeps VM_LOCKED, belt and braces).
                if unsafe { libc::mlock(target.cast(), pages * PAGE) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                let base = phys_of(&pm, target as usize)?;
                for j in 1..pages {
                    if phys_of(&pm, target as usize + j * PAGE)? != base + (j * PAGE) as u64 {
                        return Err(io::Error::other("mremap did not keep the page frames"));
                    }
                }
                chunk.bus = base;
            }
        }
        Ok(chunk)
    }

    /// Reserves `pages` pages of address space (anonymous, to be replaced page by page).
    fn alloc_virtual(pages: usize) -> io::Result<*mut u8> {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(p.cast())
    }

    /// Fills the chunk with zeros (volatile: the device may read it later).
    pub fn zero(&self) {
        for i in 0..self.len {
            // SAFETY: i < len: inside the chunk.
            unsafe { std::ptr::write_volatile(self.ptr.add(i), 0) };
        }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // The owner makes sure that the device no longer uses the memory (engine stopped
        // or function reset) before it drops a chunk. Under type-1 the IOVA goes first (it
        // may already be gone with the group, when the device was closed before: then the
        // unmap fails and there is nothing to do).
        if let Some(c) = self.container.take() {
            let _ = c.vfio_dma_unmap(self.bus, self.map_len);
        }
        // SAFETY: unmaps exactly what mmap returned.
        unsafe {
            libc::munmap(self.map.cast(), self.map_len);
        }
    }
}
