//! Shared memory backed by a memfd and mapped into this process: the card's BAR2 sample
//! memory (whose fd the VMM maps into the guest), and fake guest RAM in tests and benches.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestRegionMmap, MemoryRegionAddress};

/// A memfd of a fixed size, mapped shared and read/write at (region) address 0.
#[derive(Debug)]
pub struct Memfd {
    file: File,
    region: Arc<GuestRegionMmap>,
    size: usize,
}

impl Memfd {
    /// Creates a zero-filled memfd of `size` bytes named `name` and maps it.
    pub fn new(name: &str, size: usize) -> io::Result<Memfd> {
        let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `cname` is a valid NUL-terminated string; the result is checked.
        let fd = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nothing else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(size as u64)?;
        // Sealed at its size, as QEMU seals guest RAM: whoever maps it (the VMM, or the
        // card in tests) can rely on every page existing for as long as the mapping does.
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS takes an int of seal bits; `file` is open for the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mmap = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::new(file.try_clone()?, 0))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let region = GuestRegionMmap::new(mmap, GuestAddress(0))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(Memfd {
            file,
            region: Arc::new(region),
            size,
        })
    }

    /// The memfd.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The memfd's descriptor number.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.size
    }

    /// True if the size is 0.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The mapping, as a vm-memory region at address 0.
    pub fn region(&self) -> Arc<GuestRegionMmap> {
        Arc::clone(&self.region)
    }

    /// Copies `len` bytes at `offset` out (empty on a bad range).
    pub fn read_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        match self.region.read_slice(&mut v, MemoryRegionAddress(offset)) {
            Ok(()) => v,
            Err(_) => Vec::new(),
        }
    }

    /// Copies `buf` in at `offset`. Returns false on a bad range.
    pub fn write_bytes(&self, offset: u64, buf: &[u8]) -> bool {
        self.region
            .write_slice(buf, MemoryRegionAddress(offset))
            .is_ok()
    }

    /// Loads an aligned `u32` (little-endian) at `offset`.
    pub fn load_u32(&self, offset: u64, order: Ordering) -> Option<u32> {
        self.region
            .load::<u32>(MemoryRegionAddress(offset), order)
            .ok()
            .map(u32::from_le)
    }

    /// Stores an aligned `u32` (little-endian) at `offset`.
    pub fn store_u32(&self, offset: u64, v: u32, order: Ordering) -> bool {
        self.region
            .store(v.to_le(), MemoryRegionAddress(offset), order)
            .is_ok()
    }

    /// Fills `[offset, offset + len)` with `byte`.
    pub fn fill(&self, offset: u64, len: usize, byte: u8) -> bool {
        self.write_bytes(offset, &vec![byte; len])
    }
}
