//! Verifying copies of the stream against the card's pattern: in memory, and a file's
//! data extents after the run (FIEMAP), by stream offset.

use super::*;

/// Outcome of verifying a copy of the stream.
#[derive(Default)]
pub(crate) struct Check {
    pub(crate) bytes: u64,
    pub(crate) verified: u64,
    pub(crate) mismatches: u64,
    pub(crate) first_mismatch: Option<serde_json::Value>,
}

impl Check {
    /// Verifies `data`, found at sink position `pos`, against the pattern.
    pub(crate) fn verify(&mut self, cfg: &AcqConfig, segs: &[(u64, u64)], pos: u64, data: &[u8]) {
        self.bytes += data.len() as u64;
        let mut done = 0usize;
        while done < data.len() {
            let p = pos + done as u64;
            // The segment holding `p`, and where the next one starts.
            let i = segs.partition_point(|s| s.0 <= p);
            let Some(&(seg_pos, seg_off)) = i.checked_sub(1).and_then(|i| segs.get(i)) else {
                self.mismatch(serde_json::json!({ "sink_pos": p, "why": "no segment" }));
                return;
            };
            let end = segs
                .get(i)
                .map(|s| (s.0 - p).min((data.len() - done) as u64) as usize)
                .unwrap_or(data.len() - done);
            let chunk = &data[done..done + end];
            let off = seg_off + (p - seg_pos);
            match regs::pattern_check(cfg.pattern, cfg.seed, off, chunk) {
                Some(j) => {
                    let at = off + j as u64;
                    self.mismatch(serde_json::json!({
                        "sink_pos": p + j as u64,
                        "stream_offset": at,
                        "got": chunk[j],
                        "want": regs::pattern_byte(cfg.pattern, cfg.seed, at),
                    }));
                }
                None => self.verified += chunk.len() as u64,
            }
            done += end;
        }
    }

    pub(crate) fn mismatch(&mut self, what: serde_json::Value) {
        self.mismatches += 1;
        if self.first_mismatch.is_none() {
            self.first_mismatch = Some(what);
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "bytes": self.bytes,
            "verified_bytes": self.verified,
            "errors": self.mismatches,
            "first_mismatch": self.first_mismatch,
        })
    }
}

/// Re-reads a sink file and verifies it segment by segment.
pub(crate) fn verify_file(
    path: &str,
    cfg: &AcqConfig,
    segs: &[(u64, u64)],
) -> Result<Check, String> {
    let mut f = File::open(path).map_err(|e| format!("re-open {path}: {e}"))?;
    // The file was synced: drop its clean pages from the page cache so that the check reads
    // what the disk holds (no effect on tmpfs).
    // SAFETY: an advice call on our own descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut buf = vec![0u8; 1 << 20];
    let mut check = Check::default();
    let mut pos = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("re-read {path}: {e}"))?;
        if n == 0 {
            return Ok(check);
        }
        check.verify(cfg, segs, pos, &buf[..n]);
        pos += n as u64;
    }
}

/// Most extents [`file_extents`] reports (a sequentially written file has a handful).
pub(crate) const MAX_EXTENTS: usize = 4096;

/// The file's extents as (logical, physical, length) byte triples, from `FS_IOC_FIEMAP`
/// (synced first). `None` where the file system has no block mapping (tmpfs) or the file
/// has more than [`MAX_EXTENTS`] extents.
pub(crate) fn file_extents(path: &str) -> Option<Vec<(u64, u64, u64)>> {
    // struct fiemap (32 bytes) followed by struct fiemap_extent (56 bytes) each, as u64s.
    const BATCH: usize = 256;
    const HEADER: usize = 4;
    const EXTENT: usize = 7;
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B; // _IOWR('f', 11, struct fiemap)
    const FLAG_SYNC: u64 = 1;
    const EXTENT_LAST: u64 = 1;
    let f = File::open(path).ok()?;
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut buf = vec![0u64; HEADER + BATCH * EXTENT];
        buf[0] = start; // fm_start
        buf[1] = u64::MAX; // fm_length: to the end
        buf[2] = FLAG_SYNC; // fm_flags (low half), fm_mapped_extents (high half) = 0
        buf[3] = BATCH as u64; // fm_extent_count (low half), fm_reserved = 0
                               // SAFETY: FS_IOC_FIEMAP reads the header and writes at most fm_extent_count
                               // extents after it, all inside `buf`, which lives across the call.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, buf.as_mut_ptr()) };
        if r != 0 {
            return None;
        }
        let mapped = (buf[2] >> 32) as usize;
        if mapped == 0 {
            return Some(out);
        }
        for e in buf[HEADER..].chunks(EXTENT).take(mapped.min(BATCH)) {
            let (logical, physical, len, flags) = (e[0], e[1], e[2], e[5] & 0xFFFF_FFFF);
            out.push((logical, physical, len));
            if out.len() > MAX_EXTENTS {
                return None;
            }
            start = logical + len;
            if flags & EXTENT_LAST != 0 {
                return Some(out);
            }
        }
    }
}
