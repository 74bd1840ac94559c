//! userfaultfd(2): a user buffer whose first touch blocks until the test says so.
//!
//! A read() or write() given such a buffer stops inside the driver's copy to or from
//! user memory, for as long as the test likes, which is how a FUSE file, a file on a hung
//! disk or a remote page behaves. The tests use it to check that nothing else waits for
//! that copy (seed 003's class of hang). The constants are linux/userfaultfd.h's (the
//! libc crate has none of them); x86_64 layouts.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const PAGE: usize = 4096;
const UFFD_API: u64 = 0xAA;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)` (24 bytes).
const UFFDIO_API: u64 = 0xC018_AA3F;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)` (32 bytes).
const UFFDIO_REGISTER: u64 = 0xC020_AA00;
/// `_IOWR(0xAA, 0x03, struct uffdio_copy)` (40 bytes).
const UFFDIO_COPY: u64 = 0xC028_AA03;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// `struct uffd_msg` (32 bytes): the event, then for a page fault its flags and address.
#[repr(C)]
#[derive(Default)]
struct UffdMsg {
    event: u8,
    _reserved: [u8; 7],
    flags: u64,
    address: u64,
    _feat: u64,
}

/// `pages` anonymous pages that fault to this process on first touch.
pub struct SlowBuffer {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
}

impl SlowBuffer {
    pub fn new(pages: usize) -> io::Result<SlowBuffer> {
        // Without UFFD_USER_MODE_ONLY: the faults to catch are the kernel's own, in
        // copy_to_user()/copy_from_user() (allowed for root).
        // SAFETY: a plain system call with integer arguments.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = UffdioApi {
            api: UFFD_API,
            ..Default::default()
        };
        ioctl(&fd, UFFDIO_API, &mut api)?;
        let len = pages * PAGE;
        // SAFETY: a new private anonymous mapping at an address the kernel picks; it is
        // only accessed within `len` and unmapped in `drop`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let buf = SlowBuffer {
            fd,
            base: base.cast(),
            len,
        };
        let mut reg = UffdioRegister {
            start: buf.base as u64,
            len: len as u64,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        ioctl(&buf.fd, UFFDIO_REGISTER, &mut reg)?;
        Ok(buf)
    }

    /// The buffer's address, for a read() or write() in another thread.
    pub fn addr(&self) -> usize {
        self.base as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Waits up to `timeout_ms` for a page fault in the buffer; returns its page address,
    /// `None` if nothing touched the buffer in that time.
    pub fn wait_fault(&self, timeout_ms: i32) -> io::Result<Option<u64>> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Ok(None);
        }
        let mut msg = UffdMsg::default();
        let want = std::mem::size_of::<UffdMsg>();
        // SAFETY: `msg` is valid for writes of its own size.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), (&mut msg as *mut UffdMsg).cast(), want) };
        if n != want as isize {
            return Err(io::Error::last_os_error());
        }
        if msg.event != UFFD_EVENT_PAGEFAULT {
            return Err(io::Error::other(format!(
                "userfaultfd event {:#x}",
                msg.event
            )));
        }
        Ok(Some(msg.address & !(PAGE as u64 - 1)))
    }

    /// Fills the faulting page at `page_addr` with `data` and wakes whoever waits for it.
    pub fn resolve(&self, page_addr: u64, data: &[u8; PAGE]) -> io::Result<()> {
        let mut copy = UffdioCopy {
            dst: page_addr,
            src: data.as_ptr() as u64,
            len: PAGE as u64,
            mode: 0,
            copy: 0,
        };
        ioctl(&self.fd, UFFDIO_COPY, &mut copy)
    }

    /// The buffer's bytes (after every page was resolved).
    pub fn bytes(&self) -> Vec<u8> {
        // SAFETY: the mapping is `len` bytes long and live; touching a page not yet
        // resolved would block, so callers read only after resolving them all.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }.to_vec()
    }
}

impl Drop for SlowBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn ioctl<T>(fd: &OwnedFd, cmd: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the structure of the size `cmd` encodes (the callers above).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as _, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
