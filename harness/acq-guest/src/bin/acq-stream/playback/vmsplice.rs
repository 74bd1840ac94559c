//! `--mode vmsplice`: user memory into a pipe by reference (vmsplice(2)), and from the
//! pipe to the card (splice(2)), with no copy anywhere when the pages are whole blocks.
//!
//! The card reads those pages after splice() returned, so a buffer may be written again
//! only when the driver says it let go of it (`ACQ_IOC_PB_RELEASE`, docs/driver.md
//! "Reusing spliced memory"). The loop cycles through `--buffers` page-aligned buffers
//! and waits for each one's release before it fills it again. `--reuse-before-release`
//! skips that wait (the hazard: the card then reads the new contents where it expected
//! the old ones, and counts mismatches); `--gift` hands each buffer over for good
//! (SPLICE_F_GIFT), unmaps it as soon as it is in the card's queue and never waits for a
//! release (a new buffer is mapped for the next chunk): the driver's page references
//! alone must keep up to a ring of unmapped pages valid until the card read them.

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::{errno_name, last_errno, on_error, splice, Args, PbDev, Producer, Run};
use crate::pipes::Pipe;
use acq_guest::uapi::{self, AcqPbRelease};
use acq_wire::consumer::playback::BUFFERS_DEFAULT;

/// What the loop did besides moving bytes (in the result line).
#[derive(Debug, Default)]
pub(super) struct VmspliceStats {
    /// Waits for a buffer's release that had to sleep (the card had not read it yet).
    pub release_waits: u64,
    /// Time spent in those waits.
    pub release_wait_ms: u64,
    /// Buffers handed over with SPLICE_F_GIFT (and unmapped at once).
    pub gifted: u64,
}

/// A private anonymous mapping: page-aligned memory of our own for vmsplice.
struct Buffer {
    ptr: *mut u8,
    len: usize,
}

impl Buffer {
    fn new(len: usize) -> Result<Buffer, String> {
        // SAFETY: a fresh private anonymous mapping; no address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap {len}: {}", errno_name(last_errno())));
        }
        Ok(Buffer { ptr: p.cast(), len })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr .. ptr + len` is our mapping, readable and writable, and only
        // reachable through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and unmapped once, here. Pages a pipe or the driver
        // still references stay alive through those references.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl PbDev {
    /// `ACQ_IOC_PB_RELEASE`: waits at most `timeout_ms` for `offset` of `session`.
    fn release(&self, session: u64, offset: u64, timeout_ms: u32) -> Result<AcqPbRelease, i32> {
        let mut r = AcqPbRelease {
            session,
            offset,
            timeout_ms,
            ..AcqPbRelease::default()
        };
        // SAFETY: `r` is an `AcqPbRelease`, the size encoded in the command.
        let ret = unsafe {
            libc::ioctl(
                self.raw(),
                uapi::ACQ_IOC_PB_RELEASE as _,
                &mut r as *mut AcqPbRelease,
            )
        };
        if ret < 0 {
            Err(last_errno())
        } else {
            Ok(r)
        }
    }
}

/// Puts `buf` into the pipe by reference; `Err(EAGAIN)` when the pipe is full.
fn vmsplice(pipe: &Pipe, buf: &[u8], gift: bool) -> Result<usize, i32> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    let flags = libc::SPLICE_F_NONBLOCK | if gift { libc::SPLICE_F_GIFT } else { 0 };
    // SAFETY: one iovec over `buf`, which stays mapped for the call; the kernel takes
    // page references of its own.
    let r = unsafe { libc::vmsplice(pipe.w.as_raw_fd(), &iov, 1, flags) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as usize)
    }
}

/// The loop: fill a buffer, vmsplice it, splice the pipe to the card until it is empty,
/// note the stream offset where the buffer ends; before a buffer is filled again, wait
/// until the card released that offset.
pub(super) fn vmsplice_loop(
    a: &Args,
    dev: &PbDev,
    p: &mut Producer,
    st: &mut Run,
) -> Result<VmspliceStats, String> {
    let pipe = Pipe::new(a.pipe_size.map(|p| p as usize))?;
    let mut vs = VmspliceStats::default();
    let buffers = a.buffers.unwrap_or(BUFFERS_DEFAULT) as usize;
    let mut ring: Vec<Option<Buffer>> = (0..buffers).map(|_| None).collect();
    // Per buffer: the session and stream offset where its last contents ended.
    let mut last_end: Vec<Option<(u64, u64)>> = vec![None; buffers];
    let mut i = 0usize;
    while st.total < a.bytes && !st.expired(a) {
        st.pause_if_due(a);
        let n = st.chunk(a, a.write_size as usize);
        let b = i % buffers;
        i += 1;
        if let (Some((session, end)), false) = (last_end[b], a.reuse_before_release || a.gift) {
            wait_release(dev, session, end, &mut vs)?;
        }
        let mut buf = match ring[b].take() {
            Some(buf) if !a.gift => buf,
            _ => Buffer::new(a.write_size as usize)?,
        };
        let got = p.fill(st.total, &mut buf.bytes()[..n])?;
        if got == 0 {
            return Err(format!("source ended after {} bytes", st.total));
        }
        let mut at = 0;
        let mut in_pipe = 0usize;
        while (at < got || in_pipe > 0) && !st.expired(a) {
            if at < got {
                match vmsplice(&pipe, &buf.bytes()[at..got], a.gift) {
                    Ok(m) => {
                        at += m;
                        in_pipe += m;
                    }
                    Err(libc::EAGAIN) => {}
                    Err(e) => return Err(format!("vmsplice: {}", errno_name(e))),
                }
            }
            if in_pipe > 0 {
                match splice(pipe.r.as_raw_fd(), dev.raw(), in_pipe, 0) {
                    Ok(0) => return Err("splice to the card returned 0".into()),
                    Ok(m) => {
                        st.total += m as u64;
                        in_pipe -= m;
                    }
                    Err(e) => on_error(dev, st, e)?,
                }
            }
        }
        // Where this buffer's bytes end in the session (the writer is this thread alone).
        let now = dev
            .release(0, 0, 0)
            .map_err(|e| format!("PB_RELEASE: {}", errno_name(e)))?;
        last_end[b] = Some((now.session, now.written));
        if a.gift {
            // Given away: never touched again, unmapped now (nothing to wait for later).
            vs.gifted += 1;
            last_end[b] = None;
            drop(buf);
        } else {
            ring[b] = Some(buf);
        }
    }
    Ok(vs)
}

/// Waits until the card released `end` of `session` (at most 60 s per call, then an
/// error: a release that never comes is a driver bug this tool exists to show).
fn wait_release(dev: &PbDev, session: u64, end: u64, vs: &mut VmspliceStats) -> Result<(), String> {
    let start = Instant::now();
    let first = dev.release(session, end, 0);
    if matches!(first, Ok(r) if r.session != session || r.released >= end) {
        return Ok(());
    }
    vs.release_waits += 1;
    loop {
        match dev.release(session, end, 10_000) {
            Ok(_) => break,
            Err(libc::EINTR) => continue,
            Err(libc::ETIMEDOUT) if start.elapsed().as_secs() < 60 => continue,
            Err(e) => {
                return Err(format!(
                    "PB_RELEASE session {session} offset {end}: {} after {:.1} s",
                    errno_name(e),
                    start.elapsed().as_secs_f64()
                ))
            }
        }
    }
    vs.release_wait_ms += start.elapsed().as_millis() as u64;
    Ok(())
}
