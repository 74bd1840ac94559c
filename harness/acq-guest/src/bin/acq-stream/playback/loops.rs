//! The write paths: write(), splice() from a pipe a thread fills, sendfile(), and the run's
//! account of bytes, errors and retries.

use super::*;
use crate::pipes::Pipe;

/// Fills `buf` with the source's bytes at stream offset `off`.
pub(super) struct Producer {
    pub(super) cfg: AcqConfig,
    pub(super) corrupt_at: Option<u64>,
    pub(super) file: Option<std::fs::File>,
}

impl Producer {
    pub(super) fn fill(&mut self, off: u64, buf: &mut [u8]) -> Result<usize, String> {
        match &mut self.file {
            None => {
                regs::pattern_fill(self.cfg.pattern, self.cfg.seed, off, buf);
                if let Some(c) = self.corrupt_at {
                    if c >= off && c < off + buf.len() as u64 {
                        buf[(c - off) as usize] ^= 1;
                    }
                }
                Ok(buf.len())
            }
            Some(f) => f.read(buf).map_err(|e| format!("source read: {e}")),
        }
    }
}

/// Loop state.
pub(super) struct Run {
    pub(super) errnos: BTreeMap<String, u64>,
    pub(super) total: u64,
    pub(super) paused: bool,
    pub(super) start: Instant,
    pub(super) timed_out: bool,
}

impl Run {
    pub(super) fn count(&mut self, e: i32) {
        *self.errnos.entry(errno_name(e)).or_default() += 1;
    }

    pub(super) fn pause_if_due(&mut self, a: &Args) {
        if let Some(p) = a.pause_at {
            if !self.paused && self.total >= p {
                self.paused = true;
                std::thread::sleep(Duration::from_millis(a.pause_ms));
            }
        }
    }

    pub(super) fn expired(&mut self, a: &Args) -> bool {
        if let Some(t) = a.timeout {
            if self.start.elapsed().as_secs_f64() > t {
                self.timed_out = true;
            }
        }
        self.timed_out
    }

    /// The chunk to move next: up to `max`, not past the pause point or the end.
    pub(super) fn chunk(&self, a: &Args, max: usize) -> usize {
        let mut left = a.bytes - self.total;
        if let Some(p) = a.pause_at {
            if !self.paused && self.total < p {
                left = left.min(p - self.total);
            }
        }
        left.min(max as u64) as usize
    }
}

/// Handles a failed transfer: documented errnos are counted and the loop goes on
/// (EPIPE: an underrun; EIO: an error completion or halt; EAGAIN: wait for POLLOUT).
pub(super) fn on_error(dev: &PbDev, st: &mut Run, e: i32) -> Result<(), String> {
    // EAGAIN is flow control (O_NONBLOCK), not an event: not counted.
    if e != libc::EAGAIN {
        st.count(e);
    }
    match e {
        libc::EPIPE | libc::EIO | libc::EINTR => Ok(()),
        libc::EAGAIN => dev.wait_writable(),
        other => Err(format!("fatal {}", errno_name(other))),
    }
}

pub(super) fn write_loop(
    a: &Args,
    dev: &PbDev,
    p: &mut Producer,
    st: &mut Run,
) -> Result<(), String> {
    let mut buf = vec![0u8; a.write_size as usize];
    let (mut have, mut at) = (0usize, 0usize);
    while st.total < a.bytes && !st.expired(a) {
        st.pause_if_due(a);
        if at == have {
            let n = st.chunk(a, buf.len());
            have = p.fill(st.total, &mut buf[..n])?;
            at = 0;
            if have == 0 {
                return Err(format!("source ended after {} bytes", st.total));
            }
        }
        let chunk = &buf[at..have];
        let r = if a.mode == Mode::Writev {
            let iov: Vec<libc::iovec> = chunk
                .chunks(4096)
                .take(1024)
                .map(|c| libc::iovec {
                    iov_base: c.as_ptr().cast_mut().cast(),
                    iov_len: c.len(),
                })
                .collect();
            // SAFETY: every iovec points into `chunk`, valid for reads of its length; the
            // kernel only reads through them.
            unsafe { libc::writev(dev.raw(), iov.as_ptr(), iov.len() as libc::c_int) }
        } else {
            // SAFETY: `chunk` is valid for reads of its length.
            unsafe { libc::write(dev.raw(), chunk.as_ptr().cast(), chunk.len()) }
        };
        if r < 0 {
            on_error(dev, st, last_errno())?;
            continue;
        }
        at += r as usize;
        st.total += r as u64;
    }
    Ok(())
}

/// [`crate::pipes::splice`] (the capture side's) with SPLICE_F_MOVE, failing with the
/// errno, which the playback loops match on.
pub(super) fn splice(
    from: RawFd,
    to: RawFd,
    len: usize,
    flags: libc::c_uint,
) -> Result<usize, i32> {
    crate::pipes::splice(from, to, len, libc::SPLICE_F_MOVE | flags)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// Sendfile mode: file -> card with sendfile() (the kernel's direct splice: its own pipe,
/// and a loop of splice_read/splice_write steps inside one call).
pub(super) fn sendfile_loop(
    a: &Args,
    dev: &PbDev,
    p: &Producer,
    st: &mut Run,
) -> Result<(), String> {
    let src = p
        .file
        .as_ref()
        .ok_or("sendfile needs a source file")?
        .as_raw_fd();
    while st.total < a.bytes && !st.expired(a) {
        st.pause_if_due(a);
        let n = st.chunk(a, a.write_size as usize);
        // SAFETY: plain descriptors; a null offset reads the source at its file position.
        let r = unsafe { libc::sendfile(dev.raw(), src, std::ptr::null_mut(), n) };
        match r {
            0 => return Err(format!("source ended after {} bytes", st.total)),
            r if r < 0 => on_error(dev, st, last_errno())?,
            r => st.total += r as u64,
        }
    }
    Ok(())
}

/// Splice mode: source -> pipe -> card. The pipe is filled by splicing a file, or by a
/// thread writing the generated pattern into it.
pub(super) fn splice_loop(a: &Args, dev: &PbDev, p: Producer, st: &mut Run) -> Result<(), String> {
    let pipe = Pipe::new(a.pipe_size.map(|p| p as usize))?;
    let mut feeder = None;
    let src_fd = match &p.file {
        Some(f) => Some(f.as_raw_fd()),
        None => {
            // "splice from a pipe": the pattern is written into the pipe by a thread.
            let w = pipe.w.try_clone().map_err(|e| format!("dup: {e}"))?;
            let bytes = a.bytes;
            let chunk = a.write_size as usize;
            let mut prod = Producer {
                cfg: p.cfg,
                corrupt_at: p.corrupt_at,
                file: None,
            };
            feeder = Some(std::thread::spawn(move || -> Result<(), String> {
                let mut f = std::fs::File::from(w);
                let mut buf = vec![0u8; chunk];
                let mut off = 0u64;
                while off < bytes {
                    let n = (bytes - off).min(chunk as u64) as usize;
                    prod.fill(off, &mut buf[..n])?;
                    std::io::Write::write_all(&mut f, &buf[..n])
                        .map_err(|e| format!("pipe write: {e}"))?;
                    off += n as u64;
                }
                Ok(())
            }));
            None
        }
    };
    let mut in_pipe = 0u64;
    let mut fed = 0u64;
    while st.total < a.bytes && !st.expired(a) {
        st.pause_if_due(a);
        if let Some(fd) = src_fd {
            // Keep the pipe topped up from the file (never past --bytes).
            let want = st.chunk(a, a.write_size as usize) as u64;
            if in_pipe < want && fed < a.bytes {
                let n = (a.bytes - fed).min(a.write_size) as usize;
                // Non-blocking: this thread is also the pipe's only reader, so a full pipe
                // (EAGAIN) just means "drain first".
                match splice(fd, pipe.w.as_raw_fd(), n, libc::SPLICE_F_NONBLOCK) {
                    Ok(0) => return Err(format!("source ended after {fed} bytes")),
                    Ok(n) => {
                        fed += n as u64;
                        in_pipe += n as u64;
                    }
                    Err(libc::EAGAIN) => {}
                    Err(e) => return Err(format!("splice from source: {}", errno_name(e))),
                }
            }
        }
        let n = st.chunk(a, a.write_size as usize);
        let n = if src_fd.is_some() {
            n.min(in_pipe as usize)
        } else {
            n
        };
        if n == 0 {
            continue;
        }
        match splice(pipe.r.as_raw_fd(), dev.raw(), n, 0) {
            Ok(0) => return Err("splice to the card returned 0".into()),
            Ok(m) => {
                st.total += m as u64;
                in_pipe = in_pipe.saturating_sub(m as u64);
            }
            Err(e) => on_error(dev, st, e)?,
        }
    }
    drop(pipe);
    if let Some(t) = feeder {
        match t.join() {
            Ok(Ok(())) => {}
            // The feeder's pipe closed early because we stopped (timeout): not its fault.
            Ok(Err(_)) if st.timed_out => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("pipe feeder panicked".into()),
        }
    }
    Ok(())
}
