//! The card's view of host memory: the DMA maps the VMM gave us, as vm-memory collections,
//! and the bounds-checked accesses the engine makes through them.
//!
//! Every device access to guest RAM goes through a [`MemView`]: an address outside every
//! map (or in a map without the needed permission) fails, it never faults or writes
//! elsewhere. The engine holds a read guard of the [`DmaSpace`] for one block at a time, so
//! a `DMA_UNMAP` (write guard) waits for the block in flight and no write reaches a mapping
//! after its unmap was answered.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use thiserror::Error;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, VolatileSlice,
};

use crate::pattern::Generator;

/// The most DMA maps one client may hold. Each is an mmap of this process, and the kernel
/// allows about 65530 per process (vm.max_map_count): a client mapping page by page
/// without end would otherwise exhaust them. QEMU maps guest RAM in a handful of
/// ranges, and behind a vIOMMU one per IOMMU mapping the guest makes.
pub const MAX_DMA_MAPS: usize = 16384;

/// A refused DMA map or unmap request.
#[derive(Debug, Error)]
pub enum DmaError {
    /// Size zero, or the range wraps around the address space.
    #[error("bad range {addr:#x}+{size:#x}")]
    Range {
        /// Start address.
        addr: u64,
        /// Size.
        size: u64,
    },
    /// The range overlaps an existing map.
    #[error("{addr:#x}+{size:#x} overlaps an existing DMA map")]
    Overlap {
        /// Start address.
        addr: u64,
        /// Size.
        size: u64,
    },
    /// Neither read nor write permission.
    #[error("DMA map {addr:#x}+{size:#x} has neither read nor write permission")]
    NoAccess {
        /// Start address.
        addr: u64,
        /// Size.
        size: u64,
    },
    /// mmap() of the file failed.
    #[error("mapping {addr:#x}+{size:#x} failed: {source}")]
    Mmap {
        /// Start address.
        addr: u64,
        /// Size.
        size: u64,
        /// Why.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The file cannot back the map (too short, or it can shrink).
    #[error("DMA map {addr:#x}+{size:#x}: {source}")]
    File {
        /// Start address.
        addr: u64,
        /// Size.
        size: u64,
        /// Why.
        #[source]
        source: crate::mapfile::MapFileError,
    },
    /// The client holds [`MAX_DMA_MAPS`] maps already.
    #[error("DMA map {addr:#x}+{size:#x}: the client holds {MAX_DMA_MAPS} maps already")]
    TooMany {
        /// Start address.
        addr: u64,
        /// Size.
        size: u64,
    },
    /// No map matches the unmap request.
    #[error("no DMA map at {addr:#x}+{size:#x}")]
    NotMapped {
        /// Start address.
        addr: u64,
        /// Size.
        size: u64,
    },
}

/// One DMA map, as the VMM described it.
#[derive(Clone, Debug)]
struct MapEntry {
    addr: u64,
    size: u64,
    /// The mapping, or `None` for ranges without a file descriptor (ROM/BIOS ranges that
    /// QEMU announces but cannot share): those are never reachable.
    region: Option<Arc<GuestRegionMmap>>,
    read: bool,
    write: bool,
}

/// Host memory as the card sees it: what it may read, and what it may write.
#[derive(Clone, Debug, Default)]
pub struct MemView {
    read: GuestMemoryMmap,
    write: GuestMemoryMmap,
}

/// Distinguishes the failure of a device memory access (the details do not matter to the
/// card: any failure is a failed DMA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("DMA access outside the mapped memory")]
pub struct DmaFault;

impl MemView {
    /// A view of one mapping at bus address 0, readable and writable (BAR2 memory).
    pub fn single(region: Arc<GuestRegionMmap>) -> MemView {
        let mem = GuestMemoryMmap::from_arc_regions(vec![region]).unwrap_or_default();
        MemView {
            read: mem.clone(),
            write: mem,
        }
    }

    fn build(entries: &[MapEntry]) -> MemView {
        let pick = |f: fn(&MapEntry) -> bool| {
            let regions: Vec<_> = entries
                .iter()
                .filter(|e| f(e))
                .filter_map(|e| e.region.clone())
                .collect();
            // Entries never overlap (checked at map time), so this cannot fail but for
            // an empty list.
            GuestMemoryMmap::from_arc_regions(regions).unwrap_or_default()
        };
        MemView {
            read: pick(|e| e.read),
            write: pick(|e| e.write),
        }
    }

    /// The readable slice `[addr, addr + len)` if it lies in one map (the fast path).
    fn rslice(&self, addr: u64, len: usize) -> Option<VolatileSlice<'_, ()>> {
        GuestMemoryBackend::get_slice(&self.read, GuestAddress(addr), len).ok()
    }

    /// The writable slice `[addr, addr + len)` if it lies in one map (the fast path).
    fn wslice(&self, addr: u64, len: usize) -> Option<VolatileSlice<'_, ()>> {
        GuestMemoryBackend::get_slice(&self.write, GuestAddress(addr), len).ok()
    }

    /// Reads `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        if let Some(s) = self.rslice(addr, buf.len()) {
            s.copy_to(buf);
            return Ok(());
        }
        self.read
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| DmaFault)
    }

    /// Writes `buf` at `addr` (all or nothing: the range is checked first).
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), DmaFault> {
        if let Some(s) = self.wslice(addr, buf.len()) {
            s.copy_from(buf);
            return Ok(());
        }
        if !self.writable(addr, buf.len()) {
            return Err(DmaFault);
        }
        self.write
            .write_slice(buf, GuestAddress(addr))
            .map_err(|_| DmaFault)
    }

    /// Loads an aligned `u32` at `addr` with `order`.
    pub fn load_u32(&self, addr: u64, order: Ordering) -> Result<u32, DmaFault> {
        self.rslice(addr, 4)
            .ok_or(DmaFault)?
            .load::<u32>(0, order)
            .map(u32::from_le)
            .map_err(|_| DmaFault)
    }

    /// Stores an aligned `u32` at `addr` with `order` (one 4-byte store).
    pub fn store_u32(&self, addr: u64, v: u32, order: Ordering) -> Result<(), DmaFault> {
        self.wslice(addr, 4)
            .ok_or(DmaFault)?
            .store(v.to_le(), 0, order)
            .map_err(|_| DmaFault)
    }

    /// The first page-aligned address after every writable map: one the card cannot
    /// write to (0 if nothing is mapped).
    pub fn beyond_writable(&self) -> u64 {
        self.write
            .iter()
            .map(|r| r.last_addr().0)
            .max()
            .map_or(0, |last| (last | 0xFFF).wrapping_add(1))
    }

    /// True if all of `[addr, addr + len)` is mapped writable.
    pub fn writable(&self, addr: u64, len: usize) -> bool {
        self.write.check_range(GuestAddress(addr), len)
    }

    /// Writes the stream bytes `[offset, offset + len)` of `gen` at `addr`, straight into
    /// the mapping (no intermediate buffer). The range is checked first: on failure
    /// nothing was written. The range may span adjacent maps.
    pub fn fill(
        &self,
        addr: u64,
        len: usize,
        gen: &Generator,
        offset: u64,
    ) -> Result<(), DmaFault> {
        let fill_slice = |s: &VolatileSlice<'_, ()>, at: u64| {
            let guard = s.ptr_guard_mut();
            // SAFETY: `guard` points at `s.len()` bytes of a live mapping that this view
            // (borrowed for the call) keeps mapped; the fill only writes.
            unsafe { gen.fill_raw(at, guard.as_ptr(), s.len()) };
        };
        if let Some(s) = self.wslice(addr, len) {
            fill_slice(&s, offset);
            return Ok(());
        }
        if !self.writable(addr, len) {
            return Err(DmaFault);
        }
        let mut done = 0usize;
        for slice in GuestMemoryBackend::get_slices(&self.write, GuestAddress(addr), len) {
            let slice = slice.map_err(|_| DmaFault)?;
            fill_slice(&slice, offset + done as u64);
            done += slice.len();
        }
        Ok(())
    }

    /// Flips bit 0 of the byte at `addr` (fault injection: corrupt data).
    pub fn flip_bit(&self, addr: u64) -> Result<(), DmaFault> {
        let mut b = [0u8];
        self.write
            .read_slice(&mut b, GuestAddress(addr))
            .map_err(|_| DmaFault)?;
        b[0] ^= 1;
        self.write
            .write_slice(&b, GuestAddress(addr))
            .map_err(|_| DmaFault)
    }
}

/// The DMA maps of the current connection.
#[derive(Debug, Default)]
pub struct DmaSpace {
    view: RwLock<MemView>,
    entries: Mutex<Vec<MapEntry>>,
}

impl DmaSpace {
    /// No maps.
    pub fn new() -> DmaSpace {
        DmaSpace::default()
    }

    /// The current maps, held for the duration of the guard (unmaps wait for it).
    pub fn view(&self) -> RwLockReadGuard<'_, MemView> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, entries: &[MapEntry]) {
        let v = MemView::build(entries);
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// Adds a map of `size` bytes at bus address `addr`, backed by `file` at `offset`
    /// (`None`: a range the device can never reach).
    pub fn map(
        &self,
        addr: u64,
        size: u64,
        file: Option<File>,
        offset: u64,
        read: bool,
        write: bool,
    ) -> Result<(), DmaError> {
        let end = addr.checked_add(size);
        if size == 0 || end.is_none() || usize::try_from(size).is_err() {
            return Err(DmaError::Range { addr, size });
        }
        if !read && !write {
            return Err(DmaError::NoAccess { addr, size });
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_DMA_MAPS {
            return Err(DmaError::TooMany { addr, size });
        }
        if entries
            .iter()
            .any(|e| addr < e.addr + e.size && e.addr < addr + size)
        {
            return Err(DmaError::Overlap { addr, size });
        }
        let region = match file {
            None => None,
            Some(f) => {
                crate::mapfile::check(&f, offset, size).map_err(|source| DmaError::File {
                    addr,
                    size,
                    source,
                })?;
                let mut prot = 0;
                if read {
                    prot |= libc::PROT_READ;
                }
                if write {
                    prot |= libc::PROT_WRITE;
                }
                let mmap = MmapRegionBuilder::new(size as usize)
                    .with_file_offset(FileOffset::new(f, offset))
                    .with_mmap_prot(prot)
                    .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
                    .build()
                    .map_err(|source| DmaError::Mmap { addr, size, source })?;
                let r = GuestRegionMmap::new(mmap, GuestAddress(addr))
                    .ok_or(DmaError::Range { addr, size })?;
                Some(Arc::new(r))
            }
        };
        entries.push(MapEntry {
            addr,
            size,
            region,
            read,
            write,
        });
        entries.sort_by_key(|e| e.addr);
        self.publish(&entries);
        Ok(())
    }

    /// Removes every map inside `[addr, addr + size)`. Returns once no device access to them
    /// is in flight.
    pub fn unmap(&self, addr: u64, size: u64) -> Result<(), DmaError> {
        let end = addr
            .checked_add(size)
            .ok_or(DmaError::Range { addr, size })?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let before = entries.len();
        entries.retain(|e| !(e.addr >= addr && e.addr + e.size <= end));
        if entries.len() == before {
            return Err(DmaError::NotMapped { addr, size });
        }
        self.publish(&entries);
        Ok(())
    }

    /// Removes every map.
    pub fn unmap_all(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.clear();
        self.publish(&entries);
    }

    /// `(address, size, has_fd)` of every map, in address order.
    pub fn maps(&self) -> Vec<(u64, u64, bool)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|e| (e.addr, e.size, e.region.is_some()))
            .collect()
    }
}

/// Total bytes covered by the regions of a collection (for logs and tests).
pub fn mapped_bytes(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfd::Memfd;

    fn space_with(addr: u64, size: usize) -> (DmaSpace, Memfd) {
        let m = Memfd::new("test", size).unwrap();
        let s = DmaSpace::new();
        s.map(
            addr,
            size as u64,
            Some(m.file().try_clone().unwrap()),
            0,
            true,
            true,
        )
        .unwrap();
        (s, m)
    }

    #[test]
    fn the_number_of_maps_is_bounded() {
        let s = DmaSpace::new();
        // Maps without a file cost no mmap: the bound still counts them.
        for i in 0..MAX_DMA_MAPS as u64 {
            s.map(i * 0x1000, 0x1000, None, 0, true, true).unwrap();
        }
        let e = s
            .map(MAX_DMA_MAPS as u64 * 0x1000, 0x1000, None, 0, true, true)
            .unwrap_err();
        assert!(matches!(e, DmaError::TooMany { .. }), "{e}");
        s.unmap(0, 0x1000).unwrap();
        s.map(0, 0x1000, None, 0, true, true).unwrap();
    }

    #[test]
    fn accesses_are_bounds_checked() {
        let (s, m) = space_with(0x10000, 0x4000);
        let v = s.view();
        v.write(0x10000, &[1, 2, 3]).unwrap();
        assert_eq!(m.read_bytes(0, 3), vec![1, 2, 3]);
        assert_eq!(v.write(0x13FFE, &[1, 2, 3]), Err(DmaFault));
        assert_eq!(
            m.read_bytes(0x3FFE, 2),
            vec![0, 0],
            "nothing written on failure"
        );
        assert_eq!(v.write(0xFFFF, &[1]), Err(DmaFault));
        assert!(v.load_u32(0x14000, Ordering::Acquire).is_err());
        let g = Generator::new(0, 7);
        assert!(v.fill(0x13000, 0x2000, &g, 0).is_err());
        v.fill(0x13000, 0x1000, &g, 0).unwrap();
        assert_eq!(
            crate::regs::pattern_check(0, 7, 0, &m.read_bytes(0x3000, 0x1000)),
            None
        );
    }

    #[test]
    fn the_address_beyond_every_map_is_not_writable() {
        let a = Memfd::new("a", 0x1000).unwrap();
        let s = DmaSpace::new();
        assert_eq!(s.view().beyond_writable(), 0, "nothing mapped");
        s.map(
            0x4000,
            0x1000,
            Some(a.file().try_clone().unwrap()),
            0,
            true,
            true,
        )
        .unwrap();
        let v = s.view();
        assert_eq!(v.beyond_writable(), 0x5000);
        assert!(!v.writable(v.beyond_writable(), 8));
    }

    #[test]
    fn fills_across_adjacent_maps() {
        let a = Memfd::new("a", 0x1000).unwrap();
        let b = Memfd::new("b", 0x1000).unwrap();
        let s = DmaSpace::new();
        s.map(
            0x2000,
            0x1000,
            Some(b.file().try_clone().unwrap()),
            0,
            true,
            true,
        )
        .unwrap();
        s.map(
            0x1000,
            0x1000,
            Some(a.file().try_clone().unwrap()),
            0,
            true,
            true,
        )
        .unwrap();
        let g = Generator::new(1, 9);
        s.view().fill(0x1800, 0x1000, &g, 64).unwrap();
        assert_eq!(
            crate::regs::pattern_check(1, 9, 64, &a.read_bytes(0x800, 0x800)),
            None
        );
        assert_eq!(
            crate::regs::pattern_check(1, 9, 64 + 0x800, &b.read_bytes(0, 0x800)),
            None
        );
    }

    #[test]
    fn permissions_and_unmap() {
        let m = Memfd::new("ro", 0x1000).unwrap();
        let s = DmaSpace::new();
        s.map(
            0x1000,
            0x1000,
            Some(m.file().try_clone().unwrap()),
            0,
            true,
            false,
        )
        .unwrap();
        assert!(s.view().load_u32(0x1000, Ordering::Acquire).is_ok());
        assert!(s.view().store_u32(0x1000, 1, Ordering::Release).is_err());
        assert!(
            s.map(0x1800, 0x1000, None, 0, true, true).is_err(),
            "overlap"
        );
        s.map(0x8000, 0x1000, None, 0, true, true).unwrap();
        assert!(
            s.view().load_u32(0x8000, Ordering::Acquire).is_err(),
            "no fd: unreachable"
        );
        s.unmap(0x1000, 0x1000).unwrap();
        assert!(s.view().load_u32(0x1000, Ordering::Acquire).is_err());
        assert!(s.unmap(0x1000, 0x1000).is_err());
        assert_eq!(s.maps().len(), 1);
    }
}
