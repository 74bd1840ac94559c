//! What `acq-stream` does when its sink fails, and the byte-exact account of what reached
//! it (docs/sink.md, "Consumer behaviour").
//!
//! A [`SinkIo`] sits between the stream loop and the sink file. It
//!
//! * writes each piece of the stream at its place: on a block device (positional mode)
//!   disk offset = stream offset − `base`, so a stretch the card lost (an overflow gap)
//!   becomes a hole on the disk of exactly that size, and the host-side check of the disk
//!   stays in step with the stream;
//! * makes every write error visible at once: with `O_DIRECT` the write itself fails;
//!   buffered writes to a block device are followed by `sync_file_range` of their range
//!   (the error would otherwise surface only at the final `fsync`, with no range);
//! * applies the policy (`stop`, `retry` with a limit and a doubling backoff, `skip`);
//! * records every byte: bytes that reached the sink, the stream ranges lost at the sink,
//!   the stream ranges the card lost (gaps), failed attempts, and the holes the disk must
//!   show — so the consumer's report can be compared to the disk's and the card's counters
//!   to the byte.

use acq_wire::consumer::SinkIoReport;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// What to do when a write to the sink fails: stop, retry, or skip the range (the one
/// definition, in `acq_wire`).
pub use acq_wire::consumer::SinkPolicy as Policy;

/// Settings of the sink error handling.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The policy.
    pub policy: Policy,
    /// Retries per failed range (policy `retry`).
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Positional writes (block device): disk offset = stream offset − base. False: the
    /// sink is written sequentially (a file).
    pub positional: bool,
    /// Stream offset of disk offset 0; `None`: the stream offset of the first byte.
    pub base: Option<u64>,
    /// Buffered writes are synced range by range (`sync_file_range`) so that an error
    /// is seen for the range that failed.
    pub sync_each: bool,
}

/// Whether the stream goes on after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// The sink failed and the policy says stop.
    Stop,
}

/// Why a write attempt failed: a sink error the policy handles, or a usage error that no
/// policy can fix (bad alignment for `O_DIRECT`, a stream that went backwards).
#[derive(Debug)]
pub enum Failure {
    /// An I/O error of the sink (EIO, ENOSPC, ...): handled by the policy.
    Io(io::Error),
    /// Fatal for the stream.
    Fatal(String),
}

/// The written stretches of the disk, merged (half-open `[start, end)` disk offsets).
#[derive(Debug, Default, Clone)]
pub struct Extents {
    map: BTreeMap<u64, u64>,
}

impl Extents {
    /// Adds `[start, end)`.
    pub fn add(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with every range that touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .map
            .range(..=end)
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.map.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.map.insert(start, end);
    }

    /// Bytes covered.
    pub fn bytes(&self) -> u64 {
        self.map.iter().map(|(s, e)| e - s).sum()
    }

    /// End of the highest range (0 when empty).
    pub fn highest(&self) -> u64 {
        self.map.values().next_back().copied().unwrap_or(0)
    }

    /// Bytes below `highest()` not covered: the disk's `hole_bytes` (holes start at 0).
    pub fn hole_bytes(&self) -> u64 {
        self.highest() - self.bytes()
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> Vec<[u64; 2]> {
        self.map.iter().map(|(&s, &e)| [s, e]).collect()
    }
}

/// Appends `[start, end)` to a list of ranges, merging with the last one when adjacent.
fn push_range(v: &mut Vec<[u64; 2]>, start: u64, end: u64) {
    if let Some(last) = v.last_mut() {
        if last[1] == start {
            last[1] = end;
            return;
        }
    }
    v.push([start, end]);
}

/// The account of one stream's sink.
#[derive(Debug)]
pub struct SinkIo {
    /// The settings.
    pub set: Settings,
    base: Option<u64>,
    /// Stream offset expected next (after the last piece handed to `put`).
    next: Option<u64>,
    /// Sequential position (files).
    seq_pos: u64,
    /// Bytes that reached the sink (acknowledged writes, and for buffered block writes,
    /// synced ranges).
    pub bytes_to_sink: u64,
    /// Stream ranges lost at the sink.
    pub lost: Vec<[u64; 2]>,
    /// Stream ranges the card lost before the consumer (overflow gaps, failed blocks).
    pub gaps: Vec<[u64; 2]>,
    /// Failed write attempts.
    pub failed_attempts: u64,
    /// Bytes of the failed attempts (each attempt's whole remaining range).
    pub failed_bytes: u64,
    /// Retries made.
    pub retries: u64,
    /// Errors by errno name (writes and syncs).
    pub errnos: BTreeMap<String, u64>,
    /// The disk ranges written (positional mode) / file ranges written.
    pub written: Extents,
    /// The stream stopped because of the sink.
    pub stopped: bool,
    /// The final fsync: `None` not done yet, `Some(Ok)` done, `Some(Err(errno name))`
    /// failed for good.
    pub sync: Option<Result<(), String>>,
    /// Failed fsync attempts.
    pub sync_errors: u64,
}

impl SinkIo {
    /// A new account.
    pub fn new(set: Settings) -> SinkIo {
        SinkIo {
            set,
            base: set.base,
            next: None,
            seq_pos: 0,
            bytes_to_sink: 0,
            lost: Vec::new(),
            gaps: Vec::new(),
            failed_attempts: 0,
            failed_bytes: 0,
            retries: 0,
            errnos: BTreeMap::new(),
            written: Extents::default(),
            stopped: false,
            sync: None,
            sync_errors: 0,
        }
    }

    /// Where `len` bytes starting at stream offset `off` go in the sink, after noting a gap
    /// before them. Errors when the stream went backwards on a positional sink (a new
    /// session would overwrite what is on the disk).
    pub fn place(&mut self, off: u64, len: u64) -> Result<u64, String> {
        if let Some(n) = self.next {
            if off > n {
                push_range(&mut self.gaps, n, off);
            } else if off < n && self.set.positional {
                return Err(format!(
                    "the stream went back from offset {n} to {off} (a new session): \
                     positional writes to the disk would overwrite it"
                ));
            }
        }
        self.next = Some(off + len);
        if !self.set.positional {
            let p = self.seq_pos;
            return Ok(p);
        }
        let base = *self.base.get_or_insert(off);
        off.checked_sub(base).ok_or_else(|| {
            format!(
                "stream offset {off} is below the disk's base {base}: it has no place on the disk"
            )
        })
    }

    /// Writes the piece `[off, off + len)` of the stream with `attempt(sink position,
    /// bytes done so far) -> bytes written`, which is called until everything is written
    /// or it fails; applies the policy to failures.
    pub fn put(
        &mut self,
        off: u64,
        len: u64,
        mut attempt: impl FnMut(u64, u64) -> Result<u64, Failure>,
    ) -> Result<Flow, String> {
        let pos = self.place(off, len)?;
        let mut done = 0u64;
        let mut tries = 0u32;
        while done < len {
            match attempt(pos + done, done) {
                Ok(0) => return Err(format!("the sink took nothing at position {}", pos + done)),
                Ok(n) => {
                    self.written.add(pos + done, pos + done + n);
                    self.bytes_to_sink += n;
                    done += n;
                    tries = 0;
                }
                Err(Failure::Fatal(m)) => return Err(m),
                Err(Failure::Io(e)) => {
                    self.failed_attempts += 1;
                    self.failed_bytes += len - done;
                    *self.errnos.entry(errno_name(&e)).or_default() += 1;
                    if self.set.policy == Policy::Retry && tries < self.set.retries {
                        std::thread::sleep(self.set.backoff * (1u32 << tries.min(16)));
                        tries += 1;
                        self.retries += 1;
                        continue;
                    }
                    push_range(&mut self.lost, off + done, off + len);
                    if !self.set.positional {
                        // A file keeps its sequence: what follows is written after what
                        // reached it (the lost range is recorded, not left as a hole).
                        self.seq_pos += done;
                    }
                    if self.set.policy == Policy::Skip {
                        return Ok(Flow::Continue);
                    }
                    self.stopped = true;
                    return Ok(Flow::Stop);
                }
            }
        }
        if !self.set.positional {
            self.seq_pos += len;
        }
        Ok(Flow::Continue)
    }

    /// The final sync: `fsync` by `f`, retried under policy `retry`.
    pub fn final_sync(&mut self, mut f: impl FnMut() -> io::Result<()>) {
        let mut tries = 0u32;
        loop {
            match f() {
                Ok(()) => {
                    self.sync = Some(Ok(()));
                    return;
                }
                Err(e) => {
                    self.sync_errors += 1;
                    *self.errnos.entry(errno_name(&e)).or_default() += 1;
                    if self.set.policy == Policy::Retry && tries < self.set.retries {
                        std::thread::sleep(self.set.backoff * (1u32 << tries.min(16)));
                        tries += 1;
                        self.retries += 1;
                        continue;
                    }
                    self.sync = Some(Err(errno_name(&e)));
                    return;
                }
            }
        }
    }

    /// Bytes lost at the sink.
    pub fn lost_bytes(&self) -> u64 {
        self.lost.iter().map(|r| r[1] - r[0]).sum()
    }

    /// Bytes the card lost between pieces the consumer got.
    pub fn gap_bytes(&self) -> u64 {
        self.gaps.iter().map(|r| r[1] - r[0]).sum()
    }

    /// True when nothing was lost at the sink and the final sync (if any) worked.
    pub fn clean(&self) -> bool {
        self.lost.is_empty() && !self.stopped && !matches!(self.sync, Some(Err(_)))
    }

    /// The account (`sink_io` in acq-stream's result line); `direct`: written with O_DIRECT.
    pub fn report(&self, direct: bool) -> SinkIoReport {
        // At most 1000 ranges each: enough for any test, bounded for a long bad run.
        let ranges = |v: &[[u64; 2]]| v.iter().take(1000).copied().collect::<Vec<_>>();
        SinkIoReport {
            policy: self.set.policy.as_str().into(),
            retries_max: self.set.retries,
            positional: self.set.positional,
            base: if self.set.positional { self.base } else { None },
            sync_each: self.set.sync_each,
            bytes_to_sink: self.bytes_to_sink,
            written_bytes_unique: self.written.bytes(),
            highest_written: self.written.highest(),
            hole_bytes: self.written.hole_bytes(),
            lost: ranges(&self.lost),
            lost_bytes: self.lost_bytes(),
            gaps: ranges(&self.gaps),
            gap_bytes: self.gap_bytes(),
            failed_attempts: self.failed_attempts,
            failed_bytes: self.failed_bytes,
            retries: self.retries,
            errno: self.errnos.clone(),
            stopped: self.stopped,
            sync: match &self.sync {
                None => None,
                Some(Ok(())) => Some("ok".into()),
                Some(Err(e)) => Some(e.clone()),
            },
            sync_errors: self.sync_errors,
            direct,
        }
    }
}

fn errno_name(e: &io::Error) -> String {
    crate::acqdev::errno_name(e.raw_os_error().unwrap_or(0))
}

/// `pwrite` of all of `data` or an error.
pub fn pwrite(fd: RawFd, pos: u64, data: &[u8]) -> io::Result<u64> {
    loop {
        // SAFETY: `data` is valid for reads of its length.
        let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), pos as libc::off_t) };
        if n >= 0 {
            return Ok(n as u64);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Writes back `[pos, pos + len)` of `fd` and waits for it: reports a write-back error
/// of that range now (`sync_file_range` with WAIT_BEFORE | WRITE | WAIT_AFTER).
pub fn sync_range(fd: RawFd, pos: u64, len: u64) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    loop {
        // SAFETY: plain system call on our descriptor.
        let r = unsafe { libc::sync_file_range(fd, pos as i64, len as i64, flags) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// splice() from a pipe to `fd` at position `pos` (block device or file).
pub fn splice_at(from: RawFd, to: RawFd, pos: u64, len: usize) -> io::Result<usize> {
    let mut off = pos as libc::loff_t;
    loop {
        // SAFETY: plain system call; `off` lives across it.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                &mut off,
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// A buffer aligned for `O_DIRECT` (4096 bytes, the largest logical block the disk has).
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    const ALIGN: usize = 4096;

    /// A zeroed buffer of `len` bytes (at least one).
    pub fn new(len: usize) -> AlignedBuf {
        let len = len.max(1);
        let layout = std::alloc::Layout::from_size_align(len, Self::ALIGN)
            .expect("buffer size fits a layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }

    /// The whole buffer.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `len` bytes we own; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// True when `data` already satisfies the alignment.
    pub fn aligned(data: &[u8]) -> bool {
        (data.as_ptr() as usize).is_multiple_of(Self::ALIGN)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, Self::ALIGN)
            .expect("buffer size fits a layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(policy: Policy, positional: bool) -> Settings {
        Settings {
            policy,
            retries: 2,
            backoff: Duration::from_millis(1),
            positional,
            base: None,
            sync_each: false,
        }
    }

    fn eio() -> Failure {
        Failure::Io(io::Error::from_raw_os_error(libc::EIO))
    }

    /// A fake disk: fails the attempts whose numbers are in `fail`.
    fn writer(fail: &'static [u32]) -> impl FnMut(u64, u64) -> Result<u64, Failure> {
        let mut n = 0u32;
        move |_pos, _done| {
            n += 1;
            if fail.contains(&n) {
                Err(eio())
            } else {
                Ok(4096)
            }
        }
    }

    #[test]
    fn extents_merge_and_holes() {
        let mut x = Extents::default();
        x.add(8192, 12288);
        x.add(0, 4096);
        assert_eq!(x.hole_bytes(), 4096);
        x.add(4096, 8192);
        assert_eq!(x.ranges(), vec![[0, 12288]]);
        assert_eq!(x.hole_bytes(), 0);
        x.add(20000, 20001);
        assert_eq!(x.highest(), 20001);
        assert_eq!(x.hole_bytes(), 20000 - 12288);
        x.add(10000, 30000);
        assert_eq!(x.ranges(), vec![[0, 30000]]);
    }

    #[test]
    fn positional_gaps_become_holes() {
        let mut s = SinkIo::new(set(Policy::Stop, true));
        let mut w = writer(&[]);
        // The first byte at stream offset 8192 sets the base: disk offset 0.
        assert_eq!(s.put(8192, 4096, &mut w).unwrap(), Flow::Continue);
        // The card lost 3 blocks.
        assert_eq!(s.place(8192 + 4096 + 12288, 4096).unwrap(), 4096 + 12288);
        assert_eq!(s.gap_bytes(), 12288);
        assert_eq!(s.gaps, vec![[12288, 24576]]);
        let mut s = SinkIo::new(set(Policy::Stop, true));
        s.put(0, 4096, &mut w).unwrap();
        s.put(4096 + 8192, 4096, &mut w).unwrap();
        assert_eq!(s.written.hole_bytes(), 8192);
        assert_eq!(s.gap_bytes(), 8192);
        assert!(s.clean());
        // Backwards is refused on a disk.
        let e = s.put(0, 4096, &mut w).unwrap_err();
        assert!(e.contains("went back"), "{e}");
    }

    #[test]
    fn stop_records_the_failed_range() {
        let mut s = SinkIo::new(set(Policy::Stop, true));
        let mut w = writer(&[3]);
        assert_eq!(s.put(0, 4096, &mut w).unwrap(), Flow::Continue);
        assert_eq!(s.put(4096, 4096, &mut w).unwrap(), Flow::Continue);
        assert_eq!(s.put(8192, 4096, &mut w).unwrap(), Flow::Stop);
        assert!(s.stopped);
        assert_eq!(s.bytes_to_sink, 8192);
        assert_eq!(s.lost, vec![[8192, 12288]]);
        assert_eq!((s.failed_attempts, s.failed_bytes), (1, 4096));
        assert_eq!(s.errnos.get("EIO"), Some(&1));
        assert!(!s.clean());
    }

    #[test]
    fn retry_recovers_or_gives_up() {
        let mut s = SinkIo::new(set(Policy::Retry, true));
        let mut w = writer(&[2, 3]);
        s.put(0, 4096, &mut w).unwrap();
        assert_eq!(s.put(4096, 4096, &mut w).unwrap(), Flow::Continue);
        assert_eq!(s.retries, 2);
        assert_eq!(s.bytes_to_sink, 8192);
        assert!(s.lost.is_empty());
        assert_eq!(s.failed_bytes, 8192);
        assert!(s.clean());
        // Three failures in a row exceed two retries.
        let mut s = SinkIo::new(set(Policy::Retry, true));
        let mut w = writer(&[1, 2, 3]);
        assert_eq!(s.put(0, 4096, &mut w).unwrap(), Flow::Stop);
        assert_eq!(s.lost, vec![[0, 4096]]);
        assert_eq!(s.failed_attempts, 3);
    }

    #[test]
    fn skip_leaves_holes_and_goes_on() {
        let mut s = SinkIo::new(set(Policy::Skip, true));
        let mut w = writer(&[2, 3]);
        for i in 0..4 {
            assert_eq!(s.put(i * 4096, 4096, &mut w).unwrap(), Flow::Continue);
        }
        assert_eq!(s.lost, vec![[4096, 12288]]);
        assert_eq!(s.bytes_to_sink, 8192);
        assert_eq!(s.written.hole_bytes(), 8192);
        assert!(!s.stopped);
    }

    #[test]
    fn sequential_files_keep_their_order() {
        let mut s = SinkIo::new(set(Policy::Skip, false));
        let mut seen = Vec::new();
        let mut n = 0;
        let mut w = |pos: u64, _done: u64| {
            n += 1;
            seen.push(pos);
            if n == 2 {
                Err(eio())
            } else {
                Ok(4096)
            }
        };
        s.put(0, 4096, &mut w).unwrap();
        s.put(4096, 4096, &mut w).unwrap();
        s.put(8192 + 4096, 4096, &mut w).unwrap();
        // The failed piece is not a hole in the file; the gap neither.
        assert_eq!(seen, vec![0, 4096, 4096]);
        assert_eq!(s.gap_bytes(), 4096);
        assert_eq!(s.lost, vec![[4096, 8192]]);
    }

    #[test]
    fn partial_writes_and_fatal() {
        let mut s = SinkIo::new(set(Policy::Stop, true));
        let mut calls = 0;
        let r = s.put(0, 8192, |_pos, done| {
            calls += 1;
            if done == 0 {
                Ok(4096)
            } else {
                Err(eio())
            }
        });
        assert_eq!(r.unwrap(), Flow::Stop);
        assert_eq!(calls, 2);
        assert_eq!(s.bytes_to_sink, 4096);
        assert_eq!(s.lost, vec![[4096, 8192]]);
        let mut s = SinkIo::new(set(Policy::Retry, true));
        let e = s
            .put(0, 100, |_, _| Err(Failure::Fatal("misaligned".into())))
            .unwrap_err();
        assert_eq!(e, "misaligned");
    }

    #[test]
    fn final_sync_retries() {
        let mut s = SinkIo::new(set(Policy::Retry, true));
        let mut n = 0;
        s.final_sync(|| {
            n += 1;
            if n == 1 {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        });
        assert!(matches!(s.sync, Some(Ok(()))));
        assert_eq!(s.sync_errors, 1);
        let mut s = SinkIo::new(set(Policy::Stop, true));
        s.final_sync(|| Err(io::Error::from_raw_os_error(libc::EIO)));
        assert_eq!(s.sync, Some(Err("EIO".into())));
        assert!(!s.clean());
    }

    #[test]
    fn base_below_the_stream() {
        let mut s = SinkIo::new(Settings {
            base: Some(1 << 20),
            ..set(Policy::Stop, true)
        });
        assert!(s
            .place(0, 4096)
            .unwrap_err()
            .contains("below the disk's base"));
        let mut s = SinkIo::new(Settings {
            base: Some(4096),
            ..set(Policy::Stop, true)
        });
        assert_eq!(s.place(8192, 4096).unwrap(), 4096);
    }
}
