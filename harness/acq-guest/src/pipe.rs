//! A pipe and splice(): what the consumers and the producer move data through (acq-stream
//! in both directions, acq-consume), written once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A pipe, both ends, and its capacity.
pub struct Pipe {
    /// The read end.
    pub r: OwnedFd,
    /// The write end.
    pub w: OwnedFd,
    /// Its capacity in bytes (F_GETPIPE_SZ).
    pub size: usize,
}

impl Pipe {
    /// A new pipe (close-on-exec), of `size` bytes if given (F_SETPIPE_SZ: the kernel
    /// rounds up to pages, and refuses more than /proc/sys/fs/pipe-max-size).
    pub fn new(size: Option<usize>) -> Result<Pipe, String> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("pipe: {}", io::Error::last_os_error()));
        }
        // SAFETY: pipe2 returned two new descriptors nobody else owns.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if let Some(s) = size {
            let want = libc::c_int::try_from(s).unwrap_or(libc::c_int::MAX);
            // SAFETY: fcntl on a descriptor we own.
            if unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, want) } < 0 {
                return Err(format!(
                    "F_SETPIPE_SZ {s}: {} (see /proc/sys/fs/pipe-max-size)",
                    io::Error::last_os_error()
                ));
            }
        }
        // SAFETY: fcntl on a descriptor we own.
        let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
        Ok(Pipe {
            r,
            w,
            size: usize::try_from(got).unwrap_or(65536),
        })
    }
}

/// splice() of up to `len` bytes from `from` to `to`, without offsets (at least one end is
/// a pipe; the other a stream or a file at its position).
pub fn splice(from: RawFd, to: RawFd, len: usize, flags: libc::c_uint) -> io::Result<usize> {
    // SAFETY: plain system call on descriptors; null offsets, no memory passed.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
