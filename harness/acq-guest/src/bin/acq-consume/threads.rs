//! `--threads N`: N threads read() one descriptor at once, as a program that hands the
//! file to a thread pool does. The driver serves one reader at a time (its `reader`
//! lock), so between them the threads must get the stream exactly once: no byte twice,
//! none torn, and each gap reported by exactly one EPIPE (to whichever thread asked).
//!
//! Each thread records the stream words of every read (COUNTER pattern, seed 0: a word's
//! value is its stream offset / 8); the ranges are merged afterwards. Every thread
//! sleeps 1 s after its tenth read, all at about the same time, so that the ring
//! overflows and there are gaps to report.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

/// What one thread read: word ranges `[start, end)` and the errnos it got.
#[derive(Default)]
struct Share {
    ranges: Vec<(u64, u64)>,
    epipe: u64,
    eio: u64,
    /// Reads whose words were not consecutive, or not whole words.
    torn: u64,
    other: Vec<String>,
}

fn reader(fd: RawFd, chunk: usize, bytes: u64, taken: &AtomicU64, deadline: Instant) -> Share {
    let mut share = Share::default();
    let mut buf = vec![0u8; chunk];
    let mut calls = 0u64;
    while taken.load(Ordering::Relaxed) < bytes && Instant::now() < deadline {
        // SAFETY: `buf` is valid for `chunk` bytes of writes.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), chunk) };
        calls += 1;
        if calls == 10 {
            std::thread::sleep(Duration::from_secs(1));
        }
        if r < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EPIPE) => share.epipe += 1,
                Some(libc::EIO) => share.eio += 1,
                Some(libc::EINTR) => {}
                e => {
                    share
                        .other
                        .push(acq_guest::acqdev::errno_name(e.unwrap_or(0)));
                    break;
                }
            }
            continue;
        }
        let n = r as usize;
        taken.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            share.other.push("end of file".into());
            break;
        }
        let words: Vec<u64> = buf[..n]
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
            .collect();
        let consecutive = words.windows(2).all(|p| p[1] == p[0].wrapping_add(1));
        if !n.is_multiple_of(8) || !consecutive {
            share.torn += 1;
        }
        if let (Some(&first), Some(&last)) = (words.first(), words.last()) {
            share.ranges.push((first, last + 1));
        }
    }
    share
}

/// Runs `threads` readers on `fd` until they took `bytes` between them; the JSON result
/// and whether the stream was shared exactly.
pub fn run(
    fd: RawFd,
    threads: usize,
    chunk: usize,
    bytes: u64,
    deadline: Instant,
) -> (serde_json::Value, bool) {
    let taken = AtomicU64::new(0);
    let shares: Vec<Share> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| reader(fd, chunk, bytes, &taken, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Share {
                    other: vec!["a reader panicked".into()],
                    ..Share::default()
                })
            })
            .collect()
    });
    // A thread may have taken an EPIPE just as another one took the last bytes asked
    // for: the data after that gap was never read, so the merge below could not see the
    // gap. One more read here shows where the stream went on.
    let tail = reader(fd, chunk, 1, &AtomicU64::new(0), deadline);
    let mut ranges: Vec<(u64, u64)> = shares
        .iter()
        .chain(std::iter::once(&tail))
        .flat_map(|s| s.ranges.clone())
        .collect();
    ranges.sort_unstable();
    // Walk the merged stream from offset 0: a range that starts past the end of the last
    // one is a gap; one that starts before it was delivered twice.
    let (mut end, mut gaps, mut overlaps) = (0u64, 0u64, 0u64);
    for &(a, b) in &ranges {
        if a > end {
            gaps += 1;
        } else if a < end {
            overlaps += 1;
        }
        end = end.max(b);
    }
    let all = || shares.iter().chain(std::iter::once(&tail));
    let epipe: u64 = all().map(|s| s.epipe).sum();
    let eio: u64 = all().map(|s| s.eio).sum();
    let torn: u64 = all().map(|s| s.torn).sum();
    let other: Vec<String> = all().flat_map(|s| s.other.clone()).collect();
    let got = taken.load(Ordering::Relaxed);
    let ok =
        gaps == epipe && overlaps == 0 && torn == 0 && eio == 0 && other.is_empty() && got >= bytes;
    let per_thread: Vec<u64> = shares.iter().map(|s| s.ranges.len() as u64).collect();
    (
        json!({
            "method": "read",
            "threads": threads,
            "ok": ok,
            "bytes": got,
            "reads_per_thread": per_thread,
            "gaps": gaps,
            "epipe": epipe,
            "gaps_match_epipe": gaps == epipe,
            "overlaps": overlaps,
            "torn": torn,
            "eio": eio,
            "other_errors": other,
        }),
        ok,
    )
}
