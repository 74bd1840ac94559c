//! The system calls a method reads with, each wrapped once: a pipe for sendfile and splice,
//! an io_uring, preadv2(RWF_NOWAIT), and the readiness waits of poll() and epoll.

use super::*;

pub(super) use acq_guest::pipe::Pipe;

/// Draining the pipe a sendfile() or splice() filled.
pub(super) trait Drain {
    fn drain(&self, n: usize, buf: &mut [u8], scan: &mut Scanner) -> io::Result<()>;
}

impl Drain for Pipe {
    /// Reads exactly `n` bytes (what the last fill put in) into the scanner.
    fn drain(&self, n: usize, buf: &mut [u8], scan: &mut Scanner) -> io::Result<()> {
        let mut left = n;
        while left > 0 {
            let want = left.min(buf.len());
            // SAFETY: `buf` is valid for `want` bytes of writes.
            let k =
                check(unsafe { libc::read(self.r.as_raw_fd(), buf.as_mut_ptr().cast(), want) })?;
            if k == 0 {
                return Err(io::Error::other("pipe closed"));
            }
            scan.feed(&buf[..k]);
            left -= k;
        }
        Ok(())
    }
}

/// splice() of up to `len` bytes from `fd` into the pipe's write end.
pub(super) fn splice_into(fd: RawFd, p: &Pipe, len: usize) -> io::Result<usize> {
    acq_guest::pipe::splice(fd, p.w.as_raw_fd(), len, 0)
}

/// io_uring reads of the device (one request in flight at a time).
pub(super) struct Uring {
    pub(super) ring: io_uring::IoUring,
    /// The longest io_uring_enter() that only submitted.
    pub(super) max_submit_ms: u64,
}

impl Uring {
    pub(super) fn new() -> io::Result<Uring> {
        Ok(Uring {
            ring: io_uring::IoUring::new(4)?,
            max_submit_ms: 0,
        })
    }

    pub(super) fn run(&mut self, sqe: io_uring::squeue::Entry) -> io::Result<usize> {
        // SAFETY: the buffers the entry points at live on the caller's stack/heap until
        // this call returns, and we wait for the completion before returning.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        // Submit, then wait: io_uring_enter() must not block in the submission (its
        // non-blocking attempt at a file that poll() reports ready), only in the wait.
        let t = Instant::now();
        self.ring.submit()?;
        self.max_submit_ms = self.max_submit_ms.max(t.elapsed().as_millis() as u64);
        self.ring.submit_and_wait(1)?;
        let cqe = self
            .ring
            .completion()
            .next()
            .ok_or_else(|| io::Error::other("io_uring: no completion"))?;
        let r = cqe.result();
        if r < 0 {
            Err(io::Error::from_raw_os_error(-r))
        } else {
            Ok(r as usize)
        }
    }
}

/// `preadv2(fd, buf, 1, -1, RWF_NOWAIT)`: a read at the file position that must not
/// block (EAGAIN when no block is ready; EOPNOTSUPP from a file that cannot promise that).
pub(super) fn preadv2_nowait(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    /// include/uapi/linux/fs.h.
    const RWF_NOWAIT: libc::c_long = 0x8;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, valid for writes of its length; the offset -1
    // (low word, high word 0 on a 64-bit kernel) means the file position.
    let r = unsafe {
        libc::syscall(
            libc::SYS_preadv2,
            fd,
            &iov as *const libc::iovec,
            1,
            -1i64,
            0,
            RWF_NOWAIT,
        )
    };
    check(r as isize)
}

/// One poll() (or epoll_wait() on a new epoll set) for POLLIN of at most `timeout_ms`:
/// the number of ready descriptors.
pub(super) fn wait_once(fd: RawFd, epoll: bool, timeout_ms: i32) -> io::Result<usize> {
    if !epoll {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd.
        return check(unsafe { libc::poll(&mut p, 1, timeout_ms) } as isize);
    }
    // SAFETY: epoll_create1 has no memory arguments.
    let e = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)? as RawFd;
    // SAFETY: `e` was just created and is owned by nobody else.
    let e = unsafe { OwnedFd::from_raw_fd(e) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: `ev` is a valid event for the duration of the call.
    check(unsafe { libc::epoll_ctl(e.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } as isize)?;
    // SAFETY: `ev` has room for the one event asked for.
    check(unsafe { libc::epoll_wait(e.as_raw_fd(), &mut ev, 1, timeout_ms) } as isize)
}

/// Waits up to 5 s for POLLIN (or an error) through epoll or poll(); returns whether the
/// file reported it.
pub(super) fn wait_readable(fd: RawFd, epfd: Option<RawFd>) -> Result<bool, String> {
    match epfd {
        Some(e) => {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: `ev` has room for the one event asked for.
            let r = unsafe { libc::epoll_wait(e, &mut ev, 1, 5000) };
            if r < 0 && errno().raw_os_error() != Some(libc::EINTR) {
                return Err(format!("epoll_wait: {}", errno()));
            }
            Ok(r > 0)
        }
        None => {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `p` is one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, 5000) };
            if r < 0 && errno().raw_os_error() != Some(libc::EINTR) {
                return Err(format!("poll: {}", errno()));
            }
            Ok(r > 0)
        }
    }
}

/// Readiness that read() does not find. POLLIN promises that a read will not block, so
/// EAGAIN right after it, again and again, is a driver reporting data it does not have,
/// and an event loop spinning on it. (Once can happen honestly: the block was taken by a
/// session end in between; three times in a row cannot.)
#[derive(Default)]
pub(super) struct EmptyReadiness {
    /// The last wait reported readiness, and no read() has run since.
    pub(super) pending: bool,
    /// Readiness-then-EAGAIN in a row.
    pub(super) streak: u32,
}

impl EmptyReadiness {
    pub(super) fn polled(&mut self, ready: bool) {
        self.pending = ready;
    }

    pub(super) fn read(&mut self, eagain: bool) -> Result<(), String> {
        if !eagain {
            self.streak = 0;
        } else if self.pending {
            self.streak += 1;
            if self.streak >= 3 {
                return Err(
                    "poll()/epoll reported POLLIN 3 times in a row and each read() after it found nothing (EAGAIN): readiness the driver does not have".into(),
                );
            }
        }
        self.pending = false;
        Ok(())
    }
}
