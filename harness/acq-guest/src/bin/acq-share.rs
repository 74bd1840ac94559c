//! acq-share: one card's capture ring played by another card, with no CPU copy
//! (docs/driver.md, "Sharing the ring with another device").
//!
//! ```text
//! acq-share --from /dev/acq0 --to /dev/acq1-out --bytes 64M [--pattern prbs] [--seed S]
//!           [--block 4096] [--ring-log2 6] [--map-verify] [--close-capture-after N]
//!           [--play-rate R] [--until-gone] [--hold-s S]
//! acq-share --heap /dev/dma_heap/system [--heap-pages 64] --to /dev/acq0-out --bytes 16M
//! acq-share --copy --from /dev/acq0 --to /dev/acq1-out --bytes 64M
//! ```
//!
//! `/dev/acq0` exports its ring as a dma-buf (`ACQ_IOC_EXPBUF`); `/dev/acq1-out` imports it
//! (`ACQ_IOC_PB_IMPORT`). Each block card 0 reports (`ACQ_IOC_MMAP_SYNC`) is posted to card
//! 1 from the same page (`ACQ_IOC_PB_QUEUE`) and handed back to card 0 only once card 1
//! released it (`ACQ_IOC_PB_RELEASE`). Card 1 is configured with card 0's pattern and seed,
//! so its model verifies every byte of card 0's stream.
//!
//! `--map-verify` also maps the dma-buf (read-only) and checks each block there, between
//! `DMA_BUF_IOCTL_SYNC` start and end. `--close-capture-after N` closes `/dev/acq0` once N
//! bytes were queued, with blocks still queued on card 1 and the mapping still held: the
//! dma-buf must keep the pages valid, card 1 must still verify every queued byte, and the
//! pages must go back to card 0's pool once the last holder let go (`pool_free`, read
//! from a fresh open). `--until-gone` ends the stream when card 0 is unplugged (its
//! `ENODEV`): what card 1 still has queued must play and verify from pages the dma-buf
//! keeps. `--play-rate` slows card 1 down (bytes/s), so that it is still reading then.
//! `--hold-s S` closes both device files at the end and holds only the dma-buf and its
//! mapping for S seconds before it checks the mapping once more and lets go (the module
//! must stay loaded meanwhile: each dma-buf pins it).
//!
//! `--heap` plays from a dma-buf of another exporter instead (a DMA heap): the tool writes
//! the pattern into the heap buffer through its mapping (between `DMA_BUF_IOCTL_SYNC`
//! start and end for writing), queues each page and rewrites a page only after the card
//! released it.
//!
//! `--copy` is the path without dma-buf, for comparison (`make bench`): read() from card
//! 0 into a buffer and write() it to card 1, two CPU copies per byte, verified the same way.
//!
//! One JSON line on stdout: `ok`, the bytes queued, card 1's verification counters, the
//! zero-copy bytes, the pool counts; exit 0 ok, 1 a failed run, 2 bad arguments.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use acq_guest::acqdev::{errno_name, AcqDev};
use acq_guest::result::{finish, line};
use acq_guest::uapi::{
    self, AcqConfig, AcqExpBuf, AcqMmapSync, AcqPbImport, AcqPbQueue, AcqPbRelease, AcqPbStats,
};
use acq_hw::regs;
use acq_wire::consumer::{ConsumerReport, ShareArgs, ShareSource};
use serde_json::json;

/// `DMA_BUF_IOCTL_SYNC` (include/uapi/linux/dma-buf.h): `_IOW('b', 0, __u64)`.
const DMA_BUF_IOCTL_SYNC: u32 = uapi::ioc(1, b'b' as u32, 0, 8);
const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;

struct Args {
    from: String,
    to: String,
    bytes: u64,
    pattern: u32,
    seed: u64,
    block: u32,
    /// `None`: the card's current ring size.
    ring_log2: Option<u32>,
    map_verify: bool,
    close_capture_after: Option<u64>,
    play_rate: u64,
    until_gone: bool,
    heap: Option<String>,
    heap_pages: u32,
    copy: bool,
    hold_s: u64,
}

fn usage_text() -> String {
    format!("usage: {}", ShareArgs::usage())
}

fn usage() -> ExitCode {
    eprintln!("{}", usage_text());
    ExitCode::from(2)
}

/// The run's settings, from the command line's type ([`ShareArgs`], the one the harness
/// builds): each card setting resolved to what the tool uses when it is not given.
fn parse(argv: &[String]) -> Result<Args, String> {
    let s = ShareArgs::parse(argv.iter().cloned()).map_err(|e| e.to_string())?;
    let (from, heap, heap_pages, copy) = match &s.source {
        ShareSource::Card { from } => (from.clone(), None, 0, false),
        ShareSource::Copy { from } => (from.clone(), None, 0, true),
        ShareSource::Heap { path, pages } => (String::new(), Some(path.clone()), *pages, false),
    };
    Ok(Args {
        from,
        to: s.to.clone(),
        bytes: s.bytes,
        pattern: s.card.pattern.unwrap_or(regs::pattern::PRBS),
        seed: s.card.seed.unwrap_or(1),
        block: s.block(),
        ring_log2: s.card.ring_log2,
        map_verify: s.map_verify,
        close_capture_after: s.close_capture_after,
        play_rate: s.play_rate.unwrap_or(0),
        until_gone: s.until_gone,
        heap,
        heap_pages,
        copy,
        hold_s: s.hold_s.unwrap_or(0),
    })
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// An ioctl whose argument is a `T` (the size encoded in `cmd`); the errno on failure.
fn ioctl<T>(fd: RawFd, cmd: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is a valid, writable `T`, the structure `cmd` encodes; the driver
    // reads and writes no more than its size.
    let r = unsafe { libc::ioctl(fd, cmd as _, arg as *mut T) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn named(what: &str) -> impl Fn(i32) -> String + '_ {
    move |e| format!("{what}: {}", errno_name(e))
}

/// A shared mapping of a dma-buf: read-only (card 0's ring) or writable (a heap buffer).
struct Map {
    ptr: *mut u8,
    len: usize,
    writable: bool,
}

impl Map {
    fn new(fd: RawFd, len: usize, writable: bool) -> Result<Map, String> {
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh shared mapping of `len` bytes of `fd`; no address hint.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(named("mmap of the dma-buf")(errno()));
        }
        Ok(Map {
            ptr: p.cast(),
            len,
            writable,
        })
    }

    /// Bytes `i * 4096 .. + len` (clamped to the mapping).
    fn span(&self, i: usize, len: usize) -> (usize, usize) {
        let off = (i * 4096).min(self.len);
        (off, len.min(self.len - off))
    }

    fn page(&self, i: usize, len: usize) -> &[u8] {
        let (off, n) = self.span(i, len);
        // SAFETY: `off .. off + n` lies in the mapping, which lives as long as `self`. For
        // card 0's ring, bytes may change under us only in blocks the driver has not
        // handed out, which are not read here.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), n) }
    }

    /// A page to write (a writable mapping only): the caller writes only a page the card
    /// released.
    fn page_mut(&mut self, i: usize, len: usize) -> &mut [u8] {
        let (off, n) = self.span(i, len);
        let n = if self.writable { n } else { 0 };
        // SAFETY: as for `page`; a writable mapping (else the slice is empty), and
        // `&mut self` makes this the only slice of it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), n) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our mapping, unmapped once, here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn open_out(path: &str) -> Result<OwnedFd, String> {
    let c = CString::new(path).map_err(|_| format!("{path}: bad path"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(named(path)(errno()));
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pb_stats(fd: RawFd) -> Result<AcqPbStats, String> {
    let mut s = AcqPbStats::default();
    ioctl(fd, uapi::ACQ_IOC_PB_GET_STATS, &mut s).map_err(named("PB_GET_STATS"))?;
    Ok(s)
}

/// Card 1's release point (bytes of its session), waiting at most `timeout_ms` for `want`.
fn released(fd: RawFd, want: u64, timeout_ms: u32) -> Result<u64, String> {
    let mut r = AcqPbRelease {
        offset: want,
        timeout_ms,
        ..Default::default()
    };
    match ioctl(fd, uapi::ACQ_IOC_PB_RELEASE, &mut r) {
        Ok(()) | Err(libc::ETIMEDOUT) => Ok(r.released),
        Err(libc::EINTR) => Ok(0),
        Err(e) => Err(named("PB_RELEASE")(e)),
    }
}

/// How long a run may take before it is called stuck: a minute plus the bytes at 1 MiB/s,
/// or at the receiving card's rate if that is slower.
fn deadline_for(a: &Args) -> Duration {
    let rate = match a.play_rate {
        0 => 1 << 20,
        r => r.min(1 << 20),
    };
    Duration::from_secs(60 + a.bytes / rate)
}

/// Card 0's free pool pages, through `cap` or a fresh open of `path`.
fn pool_free(cap: Option<&AcqDev>, path: &str, what: &str) -> Result<u64, String> {
    let fresh;
    let dev = match cap {
        Some(c) => c,
        None => {
            fresh = AcqDev::open(path, false).map_err(|e| format!("{what}: {path}: {e}"))?;
            &fresh
        }
    };
    Ok(u64::from(
        dev.stats().map_err(|e| format!("{what}: {e}"))?.pool_free,
    ))
}

fn run(a: &Args) -> Result<(serde_json::Value, bool), String> {
    let (cap, out) = open_pair(a)?;
    let pool_before = cap.stats().map_err(|e| format!("GET_STATS: {e}"))?;
    // The card's and the driver's playback counters run across sessions: this run's are
    // the difference.
    let pb_before = pb_stats(out.as_raw_fd())?;

    let mut exp = AcqExpBuf {
        flags: uapi::ACQ_EXPBUF_CLOEXEC,
        ..Default::default()
    };
    ioctl(cap.raw_fd(), uapi::ACQ_IOC_EXPBUF, &mut exp).map_err(named("EXPBUF"))?;
    // SAFETY: the driver just installed this descriptor for us.
    let dmabuf = unsafe { OwnedFd::from_raw_fd(exp.fd) };
    let entries = exp.entries as usize;
    let mut imp = AcqPbImport {
        fd: dmabuf.as_raw_fd(),
        ..Default::default()
    };
    ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_IMPORT, &mut imp).map_err(named("PB_IMPORT"))?;
    if imp.pages != exp.entries || imp.size != exp.size {
        return Err(format!(
            "PB_IMPORT saw {} pages ({} bytes), EXPBUF made {} ({} bytes)",
            imp.pages, imp.size, exp.entries, exp.size
        ));
    }
    let map = if a.map_verify {
        Some(Map::new(dmabuf.as_raw_fd(), exp.size as usize, false)?)
    } else {
        None
    };

    let bs = u64::from(a.block);
    let mut cap = Some(cap);
    let mut queued = 0u64; // blocks posted to card 1
    let mut returned = 0u64; // blocks handed back to card 0
    let mut release = 0u32;
    let mut gone = false;
    let mut underruns = 0u64;
    let (mut map_checked, mut map_bad) = (0u64, 0u64);
    let start = Instant::now();
    let deadline = deadline_for(a);
    while queued * bs < a.bytes {
        if start.elapsed() > deadline {
            return Err(format!("stuck after {} of {} bytes", queued * bs, a.bytes));
        }
        let Some(c) = cap.as_ref() else { break };
        let held = queued - returned;
        let mut sync = AcqMmapSync {
            release,
            timeout_ms: if held == 0 { 1000 } else { 0 },
            ..Default::default()
        };
        match ioctl(c.raw_fd(), uapi::ACQ_IOC_MMAP_SYNC, &mut sync) {
            Ok(()) => {}
            Err(libc::ENODEV) if a.until_gone => {
                gone = true;
                cap = None;
                break;
            }
            Err(e) => return Err(named("MMAP_SYNC")(e)),
        }
        returned += u64::from(release);
        if sync.stream_offset != returned * bs {
            return Err(format!(
                "card 0 skipped: block {} at stream offset {} (expected {})",
                returned,
                sync.stream_offset,
                returned * bs
            ));
        }
        let held = queued - returned;
        // Card 0 still reports every block this tool holds, from `returned` on: anything
        // else (a halt or reset dropped them) is card 0's failure, not card 1's.
        let Some(fresh) = u64::from(sync.count).checked_sub(held) else {
            return Err(format!(
                "card 0 reported {} ready blocks while {held} were held: it dropped them",
                sync.count
            ));
        };
        if sync.head % (1 << 32) != returned % (1 << 32) {
            return Err(format!(
                "card 0's ring head {} is not block {returned}: its session restarted",
                sync.head
            ));
        }
        let fresh = fresh.min(a.bytes / bs - queued);
        if fresh > 0 {
            let first = ((sync.head + held) % entries as u64) as u32;
            let mut q = AcqPbQueue {
                first,
                count: fresh as u32,
                ..Default::default()
            };
            match ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_QUEUE, &mut q) {
                Ok(()) => {}
                Err(libc::EINTR) => q.done = 0,
                // Card 1 ran dry while card 0 had nothing new (a rate-limited card 1 starts
                // playing with the first block): silence played, reported once; the
                // stream's offsets, and so the verification, are unaffected.
                Err(libc::EPIPE) => {
                    underruns += 1;
                    q.done = 0;
                }
                Err(e) => return Err(named("PB_QUEUE")(e)),
            }
            // The queued blocks, checked in the mapping too (held by this tool until card
            // 1 released them: card 0 does not write them meanwhile).
            if let (Some(m), true) = (&map, q.done > 0) {
                let mut s = DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ;
                ioctl(dmabuf.as_raw_fd(), DMA_BUF_IOCTL_SYNC, &mut s)
                    .map_err(named("DMA_BUF_IOCTL_SYNC"))?;
                for i in 0..u64::from(q.done) {
                    let page = (first as usize + i as usize) % entries;
                    let off = (queued + i) * bs;
                    map_checked += 1;
                    if regs::pattern_check(a.pattern, a.seed, off, m.page(page, bs as usize))
                        .is_some()
                    {
                        map_bad += 1;
                    }
                }
                let mut s = DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ;
                ioctl(dmabuf.as_raw_fd(), DMA_BUF_IOCTL_SYNC, &mut s)
                    .map_err(named("DMA_BUF_IOCTL_SYNC"))?;
            }
            queued += u64::from(q.done);
        }
        if a.close_capture_after.is_some_and(|n| queued * bs >= n) {
            // Card 0's file goes with blocks still queued on card 1 (and the mapping held).
            cap = None;
            break;
        }
        // Hand back what card 1 is done with; wait for it when nothing new came.
        let want = (returned + 1) * bs;
        let rel = released(
            out.as_raw_fd(),
            want.min(queued * bs),
            if fresh == 0 { 100 } else { 0 },
        )?;
        release = (rel / bs).saturating_sub(returned).min(queued - returned) as u32;
    }
    let drain = ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_DRAIN, &mut 0u64);
    drain.map_err(named("PB_DRAIN"))?;
    let pb_after = pb_stats(out.as_raw_fd())?;
    let pb = AcqPbStats {
        card_verified: pb_after.card_verified.wrapping_sub(pb_before.card_verified),
        card_mismatch: pb_after.card_mismatch.wrapping_sub(pb_before.card_mismatch),
        zero_copy_bytes: pb_after
            .zero_copy_bytes
            .wrapping_sub(pb_before.zero_copy_bytes),
        copied_bytes: pb_after.copied_bytes.wrapping_sub(pb_before.copied_bytes),
        ..pb_after
    };
    // The mapping still reads what card 0 wrote, even after its file was closed.
    let pool_free_held = match gone {
        false => Some(pool_free(
            cap.as_ref(),
            &a.from,
            "GET_STATS with the dma-buf held",
        )?),
        true => None,
    };
    let mut none = AcqPbImport {
        fd: -1,
        ..Default::default()
    };
    ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_IMPORT, &mut none).map_err(named("PB_IMPORT -1"))?;
    drop(out);
    if a.hold_s > 0 {
        // Nothing but the dma-buf and its mapping holds the pages now (and the module:
        // rmmod must be refused meanwhile).
        drop(cap.take());
        std::thread::sleep(Duration::from_secs(a.hold_s));
    }
    // Block k of the session is in page k % entries (docs/driver.md).
    let map_after_close = match (&map, cap.is_none() || gone) {
        (Some(m), true) => {
            let bad = (returned..queued)
                .filter(|&k| {
                    let page = m.page((k % entries as u64) as usize, bs as usize);
                    regs::pattern_check(a.pattern, a.seed, k * bs, page).is_some()
                })
                .count();
            Some((queued - returned, bad))
        }
        _ => None,
    };
    drop(map);
    drop(dmabuf);
    drop(cap.take());
    // The last reference goes with a deferred fput: give it a moment.
    let mut pool_free_after = None;
    for _ in 0..50 {
        if gone {
            // The card and its pool are gone: the pages are freed with the last holder.
            break;
        }
        let now = pool_free(None, &a.from, "GET_STATS after the last holder")?;
        pool_free_after = Some(now);
        if now == u64::from(pool_before.pool_free) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let bytes = queued * bs;
    let ok = pb.card_verified == bytes
        && pb.card_mismatch == 0
        && pb.zero_copy_bytes == bytes
        && map_bad == 0
        && map_after_close.is_none_or(|(_, bad)| bad == 0)
        && pool_free_held.is_none_or(|h| h < u64::from(pool_before.pool_free))
        && (gone || pool_free_after == Some(u64::from(pool_before.pool_free)))
        && gone == a.until_gone;
    let secs = start.elapsed().as_secs_f64();
    Ok((
        line(
            &ConsumerReport {
                ok,
                // As a play step's result names them (the scenario runner sums them).
                verified_bytes: pb.card_verified,
                errors: u64::from(pb.card_mismatch),
                ..ConsumerReport::moved(bytes, secs)
            },
            json!({
            "exported_pages": exp.entries,
            "import_pages": imp.pages,
            "card_verified": pb.card_verified,
            "card_mismatch": pb.card_mismatch,
            "card_first_bad": pb.card_first_bad,
            "zero_copy_bytes": pb.zero_copy_bytes,
            "copied_bytes": pb.copied_bytes,
            "map_checked_blocks": map_checked,
            "map_bad_blocks": map_bad,
            "capture_closed": a.close_capture_after.is_some(),
            "card0_gone": gone,
            "underruns": underruns,
            "map_after_close_blocks": map_after_close.map(|m| m.0),
            "map_after_close_bad": map_after_close.map(|m| m.1),
            "pool_free_before": pool_before.pool_free,
            "pool_free_held": pool_free_held,
            "pool_free_after": pool_free_after,
            }),
        ),
        ok,
    ))
}

/// Opens card 0's capture node and card 1's playback node, and configures both for the
/// stream: card 0's pattern, seed, block and ring (its current ring unless given), card 0
/// unlimited (with no free slot it waits instead of overflowing), card 1 at the play rate.
fn open_pair(a: &Args) -> Result<(AcqDev, OwnedFd), String> {
    let cap = AcqDev::open(&a.from, false).map_err(|e| format!("{}: {e}", a.from))?;
    let out = open_out(&a.to)?;
    let cur = cap.config().map_err(|e| format!("GET_CONFIG: {e}"))?;
    let cfg = AcqConfig {
        block_size: a.block,
        ring_log2: a.ring_log2.unwrap_or(cur.ring_log2),
        rate: 0,
        seed: a.seed,
        pattern: a.pattern,
        flags: 0,
        ..cur
    };
    cap.set_config(&cfg)
        .map_err(|e| format!("SET_CONFIG: {e}"))?;
    let mut pb_cfg = AcqConfig {
        rate: a.play_rate,
        ..cfg
    };
    ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_SET_CONFIG, &mut pb_cfg)
        .map_err(named("PB_SET_CONFIG"))?;
    Ok((cap, out))
}

/// `--copy`: card 0 to card 1 through a buffer, read() then write().
fn run_copy(a: &Args) -> Result<(serde_json::Value, bool), String> {
    let (cap, out) = open_pair(a)?;
    let pb_before = pb_stats(out.as_raw_fd())?;
    let mut buf = vec![0u8; 64 << 10];
    let start = Instant::now();
    let mut moved = 0u64;
    while moved < a.bytes {
        let want = buf.len().min((a.bytes - moved) as usize);
        let n = cap
            .read(&mut buf[..want])
            .map_err(|e| format!("read {}: {e}", a.from))?;
        if n == 0 {
            return Err(format!("{} ended after {moved} bytes", a.from));
        }
        let mut at = 0;
        while at < n {
            // SAFETY: `buf[at..n]` is initialised memory we own, valid for the call.
            let w = unsafe { libc::write(out.as_raw_fd(), buf[at..n].as_ptr().cast(), n - at) };
            if w < 0 {
                return Err(named("write")(errno()));
            }
            at += w as usize;
        }
        moved += n as u64;
    }
    ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_DRAIN, &mut 0u64).map_err(named("PB_DRAIN"))?;
    let secs = start.elapsed().as_secs_f64();
    let after = pb_stats(out.as_raw_fd())?;
    let verified = after.card_verified.wrapping_sub(pb_before.card_verified);
    let mismatch = after.card_mismatch.wrapping_sub(pb_before.card_mismatch);
    let ok = verified == moved && mismatch == 0;
    Ok((
        line(
            &ConsumerReport {
                ok,
                verified_bytes: verified,
                errors: u64::from(mismatch),
                ..ConsumerReport::moved(moved, secs)
            },
            json!({
                "mode": "copy",
                "card_verified": verified,
                "card_mismatch": mismatch,
            }),
        ),
        ok,
    ))
}

/// `struct dma_heap_allocation_data` (include/uapi/linux/dma-heap.h).
#[repr(C)]
#[derive(Default)]
struct DmaHeapAlloc {
    len: u64,
    fd: u32,
    fd_flags: u32,
    heap_flags: u64,
}

/// `DMA_HEAP_IOCTL_ALLOC`: `_IOWR('H', 0, struct dma_heap_allocation_data)`.
const DMA_HEAP_IOCTL_ALLOC: u32 = uapi::ioc(3, b'H' as u32, 0, std::mem::size_of::<DmaHeapAlloc>());
const DMA_BUF_SYNC_WRITE: u64 = 2;

/// `--heap`: another exporter's buffer played by the card, each page rewritten only
/// after the card released it.
fn run_heap(a: &Args, heap: &str) -> Result<(serde_json::Value, bool), String> {
    let out = open_out(&a.to)?;
    let mut pb_cfg = AcqConfig::default();
    ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_GET_CONFIG, &mut pb_cfg)
        .map_err(named("PB_GET_CONFIG"))?;
    let mut pb_cfg = AcqConfig {
        block_size: a.block,
        ring_log2: a.ring_log2.unwrap_or(pb_cfg.ring_log2),
        rate: a.play_rate,
        seed: a.seed,
        pattern: a.pattern,
        flags: 0,
        ..pb_cfg
    };
    ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_SET_CONFIG, &mut pb_cfg)
        .map_err(named("PB_SET_CONFIG"))?;
    let pb_before = pb_stats(out.as_raw_fd())?;
    let c = CString::new(heap).map_err(|_| format!("{heap}: bad path"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let hfd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if hfd < 0 {
        return Err(named(heap)(errno()));
    }
    // SAFETY: just opened, owned by nobody else.
    let hfd = unsafe { OwnedFd::from_raw_fd(hfd) };
    let pages = a.heap_pages.max(1) as usize;
    let mut alloc = DmaHeapAlloc {
        len: (pages * 4096) as u64,
        fd_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
        ..Default::default()
    };
    ioctl(hfd.as_raw_fd(), DMA_HEAP_IOCTL_ALLOC, &mut alloc)
        .map_err(named("DMA_HEAP_IOCTL_ALLOC"))?;
    // SAFETY: the heap just installed this descriptor for us.
    let buf = unsafe { OwnedFd::from_raw_fd(alloc.fd as RawFd) };
    let mut map = Map::new(buf.as_raw_fd(), pages * 4096, true)?;
    let mut imp = AcqPbImport {
        fd: buf.as_raw_fd(),
        ..Default::default()
    };
    ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_IMPORT, &mut imp).map_err(named("PB_IMPORT"))?;
    let bs = u64::from(a.block);
    let blocks = a.bytes / bs;
    let start = Instant::now();
    let mut underruns = 0u64;
    let mut k = 0u64;
    while k < blocks {
        if start.elapsed() > deadline_for(a) {
            return Err(format!("stuck after {} of {} bytes", k * bs, a.bytes));
        }
        if k >= pages as u64 {
            // The page's previous block must be released before it is rewritten.
            let want = (k + 1 - pages as u64) * bs;
            if released(out.as_raw_fd(), want, 1000)? < want {
                continue;
            }
        }
        let page = (k % pages as u64) as usize;
        let mut s = DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE;
        ioctl(buf.as_raw_fd(), DMA_BUF_IOCTL_SYNC, &mut s).map_err(named("DMA_BUF_IOCTL_SYNC"))?;
        regs::pattern_fill(a.pattern, a.seed, k * bs, map.page_mut(page, bs as usize));
        let mut s = DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE;
        ioctl(buf.as_raw_fd(), DMA_BUF_IOCTL_SYNC, &mut s).map_err(named("DMA_BUF_IOCTL_SYNC"))?;
        let mut q = AcqPbQueue {
            first: page as u32,
            count: 1,
            ..Default::default()
        };
        match ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_QUEUE, &mut q) {
            Ok(()) => k += u64::from(q.done),
            Err(libc::EINTR) => {}
            Err(libc::EPIPE) => underruns += 1,
            Err(e) => return Err(named("PB_QUEUE")(e)),
        }
    }
    ioctl(out.as_raw_fd(), uapi::ACQ_IOC_PB_DRAIN, &mut 0u64).map_err(named("PB_DRAIN"))?;
    let after = pb_stats(out.as_raw_fd())?;
    let verified = after.card_verified.wrapping_sub(pb_before.card_verified);
    let mismatch = after.card_mismatch.wrapping_sub(pb_before.card_mismatch);
    let zero_copy = after
        .zero_copy_bytes
        .wrapping_sub(pb_before.zero_copy_bytes);
    let bytes = k * bs;
    let ok = verified == bytes && mismatch == 0 && zero_copy == bytes;
    let secs = start.elapsed().as_secs_f64();
    Ok((
        line(
            &ConsumerReport {
                ok,
                verified_bytes: verified,
                errors: u64::from(mismatch),
                ..ConsumerReport::moved(bytes, secs)
            },
            json!({
                "source": heap,
                "import_pages": imp.pages,
                "card_verified": verified,
                "card_mismatch": mismatch,
                "zero_copy_bytes": zero_copy,
                "underruns": underruns,
            }),
        ),
        ok,
    ))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(done) = acq_guest::result::help(&argv, usage_text) {
        return done;
    }
    let a = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("acq-share: {e}");
            return usage();
        }
    };
    let result = match &a.heap {
        Some(heap) => run_heap(&a, heap),
        None if a.copy => run_copy(&a),
        None => run(&a),
    };
    finish(result, json!({ "ok": false, "tool": "acq-share" }))
}
