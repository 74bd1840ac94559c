//! A read-only shared mapping of a file's first bytes: a card's ring (`/dev/acqN`'s
//! mmap()), a BAR through sysfs, with every access bounds-checked. (acq-share maps
//! dma-bufs, writable ones too, between DMA_BUF_IOCTL_SYNC calls: its own `Map`.)

use std::io;
use std::os::fd::RawFd;

/// `len` bytes of a file from offset 0, mapped shared and read-only; unmapped on drop.
///
/// # Invariants
///
/// `base` is a live `PROT_READ`, `MAP_SHARED` mapping of `len` bytes until `drop`.
pub struct ReadOnlyMap {
    base: *mut libc::c_void,
    len: usize,
}

impl ReadOnlyMap {
    /// Maps the first `len` bytes of `fd`.
    pub fn new(fd: RawFd, len: usize) -> io::Result<ReadOnlyMap> {
        // SAFETY: a new mapping at an address the kernel picks; nothing else is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // INVARIANT: the mapping was just made, `len` bytes long.
        Ok(ReadOnlyMap { base, len })
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes `off .. off + len` (clamped to the mapping). What they hold is the file's to
    /// say: a ring's block only while the driver has handed it to the reader.
    pub fn bytes(&self, off: usize, len: usize) -> &[u8] {
        let off = off.min(self.len);
        let len = len.min(self.len - off);
        // SAFETY: `off .. off + len` lies inside the live mapping (type invariant), which
        // outlives the borrow of `self`.
        unsafe { std::slice::from_raw_parts(self.base.cast::<u8>().add(off), len) }
    }

    /// The 32-bit word at `off`, read with one volatile load (a register, a word the card
    /// or the driver changes); `None` unless `off` is 4-byte aligned and inside.
    pub fn read_u32(&self, off: usize) -> Option<u32> {
        if !off.is_multiple_of(4) || off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: `off` is aligned and the word lies inside the live mapping.
        Some(unsafe { std::ptr::read_volatile(self.base.cast::<u8>().add(off).cast::<u32>()) })
    }

    /// The address of byte `off` (clamped), for a system call that reads the mapping
    /// itself (write() from it, vmsplice() of it). Valid while `self` lives.
    pub fn addr(&self, off: usize) -> *const u8 {
        // SAFETY: `off.min(len)` is inside the mapping or one past its end.
        unsafe { self.base.cast::<u8>().add(off.min(self.len)) }
    }
}

impl Drop for ReadOnlyMap {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are the live mapping (type invariant), unmapped once.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn every_access_stays_inside_the_mapping() {
        let path = std::env::temp_dir().join(format!("acq-map-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        f.write_all(&data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let m = ReadOnlyMap::new(f.as_raw_fd(), 4096).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(m.len(), 4096);
        assert_eq!(m.bytes(4090, 100), &data[4090..]);
        assert!(m.bytes(5000, 8).is_empty());
        assert_eq!(m.read_u32(4), Some(u32::from_le_bytes([4, 5, 6, 7])));
        assert_eq!(
            m.read_u32(4092),
            Some(u32::from_le_bytes([252, 253, 254, 255]))
        );
        assert_eq!(m.read_u32(4096), None, "past the end");
        assert_eq!(m.read_u32(2), None, "unaligned");
        assert_eq!(m.read_u32(usize::MAX - 3), None, "no overflow");
    }
}
