//! Fast, in-place sample-stream generation.
//!
//! The stream is defined by `regs::pattern_word` (docs/device.md section 10). This module
//! produces exactly the same bytes, but fast enough for the DMA hot path: it writes 64-bit
//! words straight into the destination (guest RAM or BAR2), with no intermediate buffer.
//!
//! * COUNTER: one add per word (the compiler vectorises the loop).
//! * PRBS: one `pattern_word` per word (every word is independent, so the loop pipelines).
//! * SINE: the stream is periodic with a period of `1024 * channels` samples
//!   (`256 * channels` words: channel `c` advances `(c + 1) << 22` per frame, so 1024 frames
//!   are a whole number of turns for every channel). One period is computed per session and
//!   the fill is a copy from that table.

use acq_hw::regs;

/// Generator of one session's sample stream (PATTERN register value and seed).
#[derive(Clone, Debug)]
pub struct Generator {
    pattern: u32,
    seed: u64,
    /// One period of the SINE stream, in words (empty for the other patterns).
    table: Vec<u64>,
}

/// Number of words in one period of the SINE stream with `channels` channels.
const fn sine_period_words(channels: u32) -> usize {
    256 * channels as usize
}

/// Where a block differs from the stream ([`Generator::compare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Index of the first wrong byte.
    pub first: usize,
    /// How many bytes are wrong.
    pub bytes: u64,
}

impl Generator {
    /// A generator for PATTERN value `pattern` and seed `seed`. Unknown pattern ids produce
    /// zeros, like `regs::pattern_word` (the device refuses them at enable anyway).
    pub fn new(pattern: u32, seed: u64) -> Generator {
        let table = if regs::pattern::id(pattern) == regs::pattern::SINE {
            let words = sine_period_words(regs::pattern::channels(pattern));
            (0..words as u64)
                .map(|w| regs::pattern_word(pattern, seed, w))
                .collect()
        } else {
            Vec::new()
        };
        Generator {
            pattern,
            seed,
            table,
        }
    }

    /// The PATTERN register value this generator follows.
    pub fn pattern(&self) -> u32 {
        self.pattern
    }

    /// The seed this generator follows.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The stream word with index `word` (the same value as `regs::pattern_word`).
    #[inline]
    pub fn word(&self, word: u64) -> u64 {
        if self.table.is_empty() {
            regs::pattern_word(self.pattern, self.seed, word)
        } else {
            let period = self.table.len() as u64;
            self.table[(word % period) as usize]
        }
    }

    /// Compares `data` with the stream bytes at stream offset `offset`, using `scratch`
    /// for the expected bytes (kept between calls, so a verifier allocates once). `None`
    /// when every byte matches. The one check behind every verifier of the model: the
    /// playback channel's and the capture disk's.
    pub fn compare(&self, offset: u64, data: &[u8], scratch: &mut Vec<u8>) -> Option<Mismatch> {
        scratch.resize(data.len(), 0);
        self.fill(offset, scratch);
        if scratch.as_slice() == data {
            return None;
        }
        let mut bad = data
            .iter()
            .zip(scratch.iter())
            .enumerate()
            .filter(|(_, (a, b))| a != b);
        let first = bad.next().map_or(0, |(i, _)| i);
        Some(Mismatch {
            first,
            bytes: 1 + bad.count() as u64,
        })
    }

    /// Fills `buf` with the stream bytes starting at stream offset `offset`.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        // SAFETY: `buf` is a live, exclusively borrowed slice of `buf.len()` bytes.
        unsafe { self.fill_raw(offset, buf.as_mut_ptr(), buf.len()) }
    }

    /// Writes the stream bytes `[offset, offset + len)` to `dst`.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `len` bytes (any alignment). The memory may be
    /// shared with another process (guest RAM): it is only written, never read, so a
    /// concurrent writer cannot cause undefined behaviour here, only wrong data there.
    pub unsafe fn fill_raw(&self, offset: u64, dst: *mut u8, len: usize) {
        let mut off = offset;
        let mut p = dst;
        let mut left = len;
        // Unaligned head: single bytes up to the next word boundary.
        while left > 0 && off & 7 != 0 {
            let byte = (self.word(off >> 3) >> ((off & 7) * 8)) as u8;
            // SAFETY: `p` is inside `dst .. dst + len` (left > 0), per the caller's contract.
            unsafe { p.write(byte) };
            // SAFETY: one past the byte just written, still within or one past the range.
            p = unsafe { p.add(1) };
            off += 1;
            left -= 1;
        }
        let words = left / 8;
        // SAFETY: `p .. p + words * 8` lies inside the caller's range.
        unsafe { self.fill_words(off >> 3, p.cast::<u64>(), words) };
        // SAFETY: `words * 8 <= left`, so this stays inside (or one past) the range.
        p = unsafe { p.add(words * 8) };
        off += (words * 8) as u64;
        left -= words * 8;
        if left > 0 {
            let bytes = self.word(off >> 3).to_le_bytes();
            // SAFETY: `left < 8` bytes remain in the caller's range at `p`; `bytes` has 8.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, left) };
        }
    }

    /// Writes `n` whole words, stream words `first ..`, to `dst` (any alignment).
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `n * 8` bytes.
    unsafe fn fill_words(&self, first: u64, dst: *mut u64, n: usize) {
        match regs::pattern::id(self.pattern) {
            regs::pattern::COUNTER => {
                let base = self.seed.wrapping_add(first);
                for i in 0..n {
                    // SAFETY: `i < n`, inside the caller's range.
                    unsafe {
                        dst.add(i)
                            .write_unaligned(base.wrapping_add(i as u64).to_le())
                    };
                }
            }
            regs::pattern::SINE if !self.table.is_empty() => {
                let period = self.table.len();
                let mut idx = (first % period as u64) as usize;
                let mut done = 0;
                while done < n {
                    let chunk = (period - idx).min(n - done);
                    // SAFETY: the source is `chunk` words inside `table` (idx + chunk <=
                    // period); the destination is `chunk` words inside the caller's range;
                    // the table is private memory, so the ranges cannot overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            self.table.as_ptr().add(idx).cast::<u8>(),
                            dst.add(done).cast::<u8>(),
                            chunk * 8,
                        )
                    };
                    done += chunk;
                    idx = 0;
                }
            }
            regs::pattern::PRBS => {
                // The PRBS word spelled out, not through `pattern_word` (whose SINE arm keeps
                // it from being inlined): the words are independent, so the loop pipelines.
                for i in 0..n {
                    let w = regs::prbs31_word(regs::prbs31_seed(
                        self.seed,
                        first.wrapping_add(i as u64),
                    ));
                    // SAFETY: `i < n`, inside the caller's range.
                    unsafe { dst.add(i).write_unaligned(w.to_le()) };
                }
            }
            _ => {
                for i in 0..n {
                    let w =
                        regs::pattern_word(self.pattern, self.seed, first.wrapping_add(i as u64));
                    // SAFETY: `i < n`, inside the caller's range.
                    unsafe { dst.add(i).write_unaligned(w.to_le()) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_finds_the_first_wrong_byte_and_counts_them() {
        let g = Generator::new(regs::pattern::PRBS, 5);
        let mut data = vec![0u8; 4096];
        g.fill(8192, &mut data);
        let mut scratch = Vec::new();
        assert_eq!(g.compare(8192, &data, &mut scratch), None);
        data[100] ^= 1;
        data[3000] ^= 0x80;
        assert_eq!(
            g.compare(8192, &data, &mut scratch),
            Some(Mismatch {
                first: 100,
                bytes: 2
            })
        );
        // The wrong offset is a mismatch too (nearly every byte).
        assert!(g.compare(0, &data, &mut scratch).is_some());
    }

    fn patterns() -> Vec<u32> {
        vec![
            regs::pattern::make(regs::pattern::COUNTER, 1),
            regs::pattern::make(regs::pattern::PRBS, 1),
            regs::pattern::make(regs::pattern::SINE, 1),
            regs::pattern::make(regs::pattern::SINE, 3),
            regs::pattern::make(regs::pattern::SINE, 16),
            0xF, // unknown id: zeros
        ]
    }

    #[test]
    fn matches_reference_at_any_offset_and_length() {
        let seed = 0x0123_4567_89AB_CDEF;
        for p in patterns() {
            let g = Generator::new(p, seed);
            for &(off, len) in &[
                (0u64, 4096usize),
                (8, 64),
                (3, 29),
                (7, 1),
                (4096 * 1000 + 5, 100),
                (256 * 8 * 16 - 24, 200), // across the SINE period end
            ] {
                let mut buf = vec![0u8; len];
                g.fill(off, &mut buf);
                assert_eq!(
                    regs::pattern_check(p, seed, off, &buf),
                    None,
                    "pattern {p:#x} offset {off} len {len}"
                );
            }
        }
    }

    #[test]
    fn known_answers() {
        let seed = 0x0123_4567_89AB_CDEF;
        let g = Generator::new(0x302, seed);
        assert_eq!(g.word(0), 0x818792b2b48fe1e8);
        assert_eq!(g.word(1000), 0xa1d1b9bbd5daf47d);
        let g = Generator::new(0x001, seed);
        assert_eq!(g.word(1), 0x7ee9c64d134fe84b);
    }
}
