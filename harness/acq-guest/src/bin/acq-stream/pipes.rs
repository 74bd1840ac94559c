//! Pipes and the system calls on them (splice, tee, draining), and the stream's source.

use super::*;

/// The stream source: the card, or any file with `--raw`.
pub(crate) enum Source {
    Card(AcqDev),
    Raw(File),
}

impl Source {
    pub(crate) fn fd(&self) -> RawFd {
        match self {
            Source::Card(d) => d.raw_fd(),
            Source::Raw(f) => f.as_raw_fd(),
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Card(d) => d.read(buf),
            Source::Raw(f) => f.read(buf),
        }
    }

    pub(crate) fn card(&self) -> Option<&AcqDev> {
        match self {
            Source::Card(d) => Some(d),
            Source::Raw(_) => None,
        }
    }

    pub(crate) fn stats(&self) -> Result<Option<AcqStats>, String> {
        match self {
            Source::Card(d) => d.stats().map(Some).map_err(|e| format!("GET_STATS: {e}")),
            Source::Raw(_) => Ok(None),
        }
    }
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(crate) use acq_guest::pipe::{splice, Pipe};

/// Moves exactly `len` bytes out of pipe `from` into `to`.
pub(crate) fn drain(from: RawFd, to: RawFd, mut len: usize, what: &str) -> Result<(), String> {
    while len > 0 {
        match splice(from, to, len, libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE) {
            Ok(0) => return Err(format!("splice to {what}: wrote nothing")),
            Ok(n) => len -= n.min(len),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(format!("splice to {what}: {e}")),
        }
    }
    Ok(())
}

/// Duplicates exactly `len` bytes of pipe `from` into pipe `to` (tee()).
pub(crate) fn tee_all(from: RawFd, to: RawFd, len: usize) -> Result<(), String> {
    let mut done = 0usize;
    while done < len {
        // SAFETY: plain system call on two pipes.
        let n = unsafe { libc::tee(from, to, len - done, 0) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(format!("tee: {}", std::io::Error::last_os_error()));
        }
        if n == 0 {
            return Err("tee: duplicated nothing".into());
        }
        // tee() starts again at the head of the pipe: everything in `from` is this chunk,
        // and `to` was empty, so a short tee can only mean `to` is full.
        done = n as usize;
        if done < len {
            return Err(format!(
                "tee: only {done} of {len} bytes fit the second pipe"
            ));
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes from `fd`.
pub(crate) fn read_exact_fd(fd: RawFd, buf: &mut [u8]) -> Result<(), String> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the buffer range is valid for writes.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(format!("read pipe: {}", std::io::Error::last_os_error()));
        }
        if n == 0 {
            return Err("read pipe: end of file".into());
        }
        done += n as usize;
    }
    Ok(())
}
