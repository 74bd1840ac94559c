//! The capture disk's contents and accounting, independent of virtio: every write is
//! checked against the card's stream at stream offset `base + disk offset`, recorded in an
//! interval set, and optionally stored in a sparse host file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::config::SinkConfig;
use crate::extents::Extents;
use acq_daemon::pattern::Generator;
use acq_wire::counters::DataCounters;

/// Statistics of the disk, counted since the process started (never reset): the disk's
/// part of the control socket's `DiskCounters` (writes, reads, flushes, verification);
/// the backend counts the requests' part in its own.
pub type Counters = DataCounters;

/// The disk.
#[derive(Debug)]
pub struct Disk {
    cfg: SinkConfig,
    gen: Generator,
    store: Option<File>,
    written: Extents,
    counters: Counters,
    /// Scratch buffer for the expected stream bytes.
    expected: Vec<u8>,
}

impl Disk {
    /// A fresh disk with settings `cfg` (validated by the caller). Creates (truncates) the
    /// store file if one is configured.
    pub fn new(cfg: SinkConfig) -> io::Result<Disk> {
        let store = match &cfg.store {
            Some(p) => {
                let f = File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(p)?;
                f.set_len(cfg.size)?;
                Some(f)
            }
            None => None,
        };
        Ok(Disk {
            gen: Generator::new(cfg.pattern, cfg.seed),
            cfg,
            store,
            written: Extents::new(),
            counters: Counters::default(),
            expected: Vec::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SinkConfig {
        &self.cfg
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.cfg.size
    }

    /// True if `[offset, offset + len)` lies on the disk.
    pub fn in_range(&self, offset: u64, len: u64) -> bool {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.cfg.size)
    }

    /// Records a write of `data` at disk offset `offset` (in range, checked by the
    /// caller): verifies it, stores it, counts it.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if let Some(f) = &self.store {
            f.write_all_at(data, offset)?;
        }
        let len = data.len() as u64;
        let c = &mut self.counters;
        c.writes += 1;
        c.bytes_written += len;
        if self.cfg.verify {
            let base = self.cfg.base.wrapping_add(offset);
            match self.gen.compare(base, data, &mut self.expected) {
                None => c.bytes_verified += len,
                Some(m) => {
                    let first = offset + m.first as u64;
                    c.bytes_mismatched += m.bytes;
                    c.bytes_verified += len - m.bytes;
                    c.mismatched_writes += 1;
                    c.first_mismatch.get_or_insert(first);
                    c.lowest_mismatch = Some(c.lowest_mismatch.map_or(first, |l| l.min(first)));
                }
            }
        }
        self.written.insert(offset, offset + len);
        Ok(())
    }

    /// Serves a read of `buf.len()` bytes at `offset` (in range): from the store file if
    /// there is one; otherwise the stream for written ranges and zeros elsewhere.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        if let Some(f) = &self.store {
            f.read_exact_at(buf, offset)?;
        } else {
            buf.fill(0);
            for (s, e) in self.written.overlapping(offset, offset + len) {
                let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
                self.gen.fill(self.cfg.base.wrapping_add(s), dst);
            }
        }
        self.counters.reads += 1;
        self.counters.bytes_read += len;
        Ok(())
    }

    /// Makes stored data durable (the store file's fdatasync).
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(f) = &self.store {
            f.sync_data()?;
        }
        self.counters.flushes += 1;
        Ok(())
    }

    /// Counts a GET_ID request.
    pub fn count_get_id(&mut self) {
        self.counters.get_ids += 1;
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The ranges ever written.
    pub fn written(&self) -> &Extents {
        &self.written
    }

    /// The disk's counters and written-range summary (the rest of the control socket's
    /// counters are the backend's: [`crate::backend::SharedDisk::report`]).
    pub fn report(&self) -> DataCounters {
        let holes = self.written.holes();
        DataCounters {
            written_bytes_unique: self.written.covered(),
            written_extents: self.written.len() as u64,
            highest_written: self.written.end(),
            holes: holes.count,
            hole_bytes: holes.bytes,
            first_hole: holes.first.map(|(s, e)| [s, e]),
            ..self.counters.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acq_hw::regs;

    fn cfg() -> SinkConfig {
        SinkConfig {
            size: 1 << 20,
            ..SinkConfig::default()
        }
    }

    fn stream(c: &SinkConfig, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        regs::pattern_fill(c.pattern, c.seed, c.base + off, &mut v);
        v
    }

    #[test]
    fn verifies_every_pattern_with_a_base() {
        for pattern in ["counter", "prbs", "sine:3"] {
            let c = SinkConfig {
                pattern: super::super::config::parse_pattern(pattern).unwrap(),
                seed: 0x1234_5678,
                base: 4096 * 3 + 8,
                ..cfg()
            };
            let mut d = Disk::new(c.clone()).unwrap();
            d.write(0, &stream(&c, 0, 4096)).unwrap();
            d.write(8192, &stream(&c, 8192, 512)).unwrap();
            // An unaligned length still verifies.
            d.write(4096, &stream(&c, 4096, 100)).unwrap();
            let k = d.counters().clone();
            assert_eq!(k.bytes_verified, 4096 + 512 + 100, "{pattern}");
            assert_eq!(k.bytes_mismatched, 0, "{pattern}");
            assert_eq!(k.first_mismatch, None);
            let r = d.report();
            assert_eq!(r.holes, 1, "{pattern}: {r:?}");
            assert_eq!(r.first_hole, Some([4196, 8192]));
            assert_eq!(r.highest_written, 8704);
        }
    }

    #[test]
    fn mismatches_give_the_exact_first_bad_offset() {
        let c = cfg();
        let mut d = Disk::new(c.clone()).unwrap();
        let mut data = stream(&c, 65536, 4096);
        data[1000] ^= 1;
        data[1001] ^= 0x80;
        d.write(65536, &data).unwrap();
        d.write(512, &[0u8; 512]).unwrap(); // counter seed 0: word 64.. is not 0
        let k = d.counters();
        assert_eq!(k.first_mismatch, Some(65536 + 1000));
        assert_eq!(k.lowest_mismatch, Some(512));
        assert_eq!(k.mismatched_writes, 2);
        assert_eq!(k.bytes_written, 4608);
        // Zeros against counter words 64..128: the high bytes are zero anyway.
        let expected_zero_hits = stream(&c, 512, 512).iter().filter(|b| **b == 0).count() as u64;
        assert_eq!(k.bytes_mismatched, 2 + 512 - expected_zero_hits);
        assert_eq!(k.bytes_verified + k.bytes_mismatched, k.bytes_written);
    }

    #[test]
    fn verify_off_only_counts() {
        let c = SinkConfig {
            verify: false,
            ..cfg()
        };
        let mut d = Disk::new(c).unwrap();
        d.write(0, &[7u8; 512]).unwrap();
        assert_eq!(d.counters().bytes_written, 512);
        assert_eq!(d.counters().bytes_verified, 0);
        assert_eq!(d.counters().bytes_mismatched, 0);
    }

    #[test]
    fn reads_without_a_store_give_the_stream_where_written() {
        let c = cfg();
        let mut d = Disk::new(c.clone()).unwrap();
        d.write(1024, &stream(&c, 1024, 1024)).unwrap();
        let mut buf = vec![0xAAu8; 3072];
        d.read(0, &mut buf).unwrap();
        assert!(buf[..1024].iter().all(|b| *b == 0));
        assert_eq!(&buf[1024..2048], &stream(&c, 1024, 1024)[..]);
        assert!(buf[2048..].iter().all(|b| *b == 0));
        assert_eq!(d.counters().bytes_read, 3072);
    }

    #[test]
    fn the_store_file_keeps_what_was_written() {
        let dir = std::env::temp_dir().join(format!("acq-sink-store-{}", std::process::id()));
        let c = SinkConfig {
            store: Some(dir.clone()),
            ..cfg()
        };
        let mut d = Disk::new(c).unwrap();
        d.write(4096, b"hello, disk").unwrap();
        d.flush().unwrap();
        let mut buf = [0u8; 11];
        d.read(4096, &mut buf).unwrap();
        assert_eq!(&buf, b"hello, disk");
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        assert_eq!(d.counters().flushes, 1);
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn range_checks() {
        let d = Disk::new(cfg()).unwrap();
        assert!(d.in_range(0, 1 << 20));
        assert!(!d.in_range(1, 1 << 20));
        assert!(!d.in_range(u64::MAX, 2));
    }
}

#[cfg(test)]
mod rate {
    use super::*;

    /// Host verification rate (`cargo test --release -p acq-sink --lib verify_rate --
    /// --ignored --nocapture`).
    #[test]
    #[ignore]
    fn verify_rate() {
        for pattern in ["counter", "prbs", "sine:4"] {
            let c = SinkConfig {
                size: 1 << 30,
                pattern: super::super::config::parse_pattern(pattern).unwrap(),
                ..SinkConfig::default()
            };
            let mut d = Disk::new(c.clone()).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let t = std::time::Instant::now();
            for i in 0..256u64 {
                Generator::new(c.pattern, c.seed).fill(i << 20, &mut buf);
                d.write(i << 20, &buf).unwrap();
            }
            let s = t.elapsed().as_secs_f64();
            assert_eq!(d.counters().bytes_verified, 256 << 20);
            eprintln!(
                "{pattern}: 256 MiB generated + verified in {s:.3} s = {:.0} MiB/s",
                256.0 / s
            );
        }
    }
}
