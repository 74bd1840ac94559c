//! The file behind a DMA map, checked before the card maps it.
//!
//! A mapping of a file that is shorter than the mapped range, or that the client can
//! shrink later (`ftruncate`), turns the card's next DMA into SIGBUS and kills the model
//! with nothing in its log. So a map is accepted only if the file covers it and cannot
//! shrink: it carries `F_SEAL_SHRINK` already (QEMU's `memory-backend-memfd` seals its
//! memfds by default), or we can add that seal. Anything else is refused with a reason.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use thiserror::Error;

/// Why a file cannot back a DMA map.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MapFileError {
    /// The mapped range ends beyond the end of the file.
    #[error(
        "file offset {offset:#x} + size {size:#x} ends beyond the end of the file \
         ({file_size:#x} bytes)"
    )]
    BeyondEnd {
        /// Offset into the file.
        offset: u64,
        /// Size of the map.
        size: u64,
        /// The file's size.
        file_size: u64,
    },
    /// The file can shrink under the mapping and cannot be sealed.
    #[error(
        "the file can shrink under the device (no F_SEAL_SHRINK, and sealing it failed: \
         {0}); share guest memory as a sealed memfd"
    )]
    Shrinkable(String),
    /// fstat or fcntl failed.
    #[error("inspecting the file: {0}")]
    Io(String),
}

/// Checks that `file` covers `[offset, offset + size)` and can never shrink below it,
/// sealing it against shrinking if it is not sealed yet.
pub fn check(file: &File, offset: u64, size: u64) -> Result<(), MapFileError> {
    let beyond = |file_size| MapFileError::BeyondEnd {
        offset,
        size,
        file_size,
    };
    let file_size = file
        .metadata()
        .map_err(|e| MapFileError::Io(e.to_string()))?
        .len();
    match offset.checked_add(size) {
        Some(end) if end <= file_size => {}
        _ => return Err(beyond(file_size)),
    }
    seal_shrink(file).map_err(|e| MapFileError::Shrinkable(e.to_string()))?;
    // The seal holds from now on, but the file may have shrunk between fstat and it.
    let now = file
        .metadata()
        .map_err(|e| MapFileError::Io(e.to_string()))?
        .len();
    if now < file_size {
        return Err(beyond(now));
    }
    Ok(())
}

/// Makes sure `file` carries `F_SEAL_SHRINK`.
fn seal_shrink(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GET_SEALS takes no argument and only reads the file's seals; `fd` is open
    // for the duration of the call (borrowed from `file`).
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals >= 0 && seals & libc::F_SEAL_SHRINK != 0 {
        return Ok(());
    }
    // SAFETY: F_ADD_SEALS takes an int of seal bits; `fd` is open for the call.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } == 0 {
        return Ok(());
    }
    Err(io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::{FromRawFd, OwnedFd};

    fn memfd(flags: libc::c_uint, len: u64) -> File {
        let name = CString::new("mapfile-test").unwrap();
        // SAFETY: valid name; the result is checked.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor owned by nothing else.
        let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn a_map_beyond_the_file_is_refused() {
        let f = memfd(libc::MFD_ALLOW_SEALING, 1 << 20);
        assert!(matches!(
            check(&f, 1 << 40, 4096),
            Err(MapFileError::BeyondEnd { .. })
        ));
        assert!(matches!(
            check(&f, 0, 2 << 20),
            Err(MapFileError::BeyondEnd { .. })
        ));
        assert!(matches!(
            check(&f, u64::MAX, 2),
            Err(MapFileError::BeyondEnd { .. })
        ));
        assert_eq!(check(&f, 4096, (1 << 20) - 4096), Ok(()));
    }

    #[test]
    fn a_sealable_file_is_sealed_so_that_it_cannot_shrink() {
        let f = memfd(libc::MFD_ALLOW_SEALING, 1 << 20);
        check(&f, 0, 1 << 20).unwrap();
        let e = f.set_len(4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn a_file_that_can_shrink_and_cannot_be_sealed_is_refused() {
        // Without MFD_ALLOW_SEALING a memfd carries F_SEAL_SEAL and nothing else.
        let f = memfd(0, 1 << 20);
        assert!(matches!(
            check(&f, 0, 4096),
            Err(MapFileError::Shrinkable(_))
        ));
    }
}
