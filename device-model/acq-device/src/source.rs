//! The sample source and the on-card FIFO (docs/device.md section 7.2), in device time.
//!
//! Block `b` covers stream bytes `[b * B, (b + 1) * B)`. With RATE > 0 it is complete at
//! `t_b = floor((b + 1) * B * 10^9 / RATE)` ns and is appended to the FIFO if the FIFO holds
//! fewer than `F` blocks, else dropped. With RATE = 0 the source makes the next block as
//! soon as the FIFO has room. The data itself is a pure function of the stream offset, so
//! the FIFO holds only block numbers and timestamps; the engine generates the bytes
//! straight into the host buffer when the block leaves the FIFO.

/// One block in the FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Block number `b` (stream offset `b * B`).
    pub index: u64,
    /// Device time in ns at which it was complete (`t_b` for RATE > 0).
    pub timestamp_ns: u64,
}

/// What one [`Source::advance`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Advance {
    /// Blocks produced (appended or dropped).
    pub produced: u64,
    /// Blocks dropped.
    pub dropped: u64,
    /// Overflow episodes that started (each raises cause OVERFLOW once).
    pub episodes: u32,
}

/// The source and its FIFO.
#[derive(Debug)]
pub struct Source {
    block: u64,
    rate: u64,
    capacity: usize,
    /// Blocks produced so far (appended or dropped): the next block's number.
    produced: u64,
    fifo: Box<[Block]>,
    head: usize,
    len: usize,
    in_episode: bool,
}

const NS_PER_S: u128 = 1_000_000_000;

impl Source {
    /// A source of `block`-byte blocks at `rate` bytes/s (0 = unlimited) feeding a FIFO of
    /// `fifo_depth` bytes (whole blocks only). `block` must be non-zero and at most
    /// `fifo_depth`.
    pub fn new(block: u32, rate: u64, fifo_depth: u32) -> Source {
        let capacity = crate::regs::limits::fifo_blocks(fifo_depth, block).max(1) as usize;
        Source {
            block: u64::from(block.max(1)),
            rate,
            capacity,
            produced: 0,
            fifo: vec![
                Block {
                    index: 0,
                    timestamp_ns: 0
                };
                capacity
            ]
            .into_boxed_slice(),
            head: 0,
            len: 0,
            in_episode: false,
        }
    }

    /// FIFO capacity in blocks (`F`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks in the FIFO.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the FIFO is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Blocks produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Nominal completion time of block `b`, in ns (RATE > 0 only).
    pub fn block_time_ns(&self, b: u64) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        let t = (u128::from(b) + 1) * u128::from(self.block) * NS_PER_S / u128::from(self.rate);
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// Number of blocks complete by device time `now_ns` (RATE > 0): the `b` with
    /// `t_b <= now`, i.e. `(b + 1) * B * 10^9 < (now + 1) * RATE`.
    fn due(&self, now_ns: u64) -> u64 {
        let x = (u128::from(now_ns) + 1) * u128::from(self.rate);
        let d = u128::from(self.block) * NS_PER_S;
        u64::try_from((x - 1) / d).unwrap_or(u64::MAX)
    }

    /// Device time at which the next block will be complete (`None` if RATE = 0).
    pub fn next_due_ns(&self) -> Option<u64> {
        (self.rate > 0).then(|| self.block_time_ns(self.produced))
    }

    /// Device time of the next drop that would start an overflow episode, if nothing leaves
    /// the FIFO before then (`None` with RATE = 0, or while an episode is running).
    pub fn next_overflow_ns(&self) -> Option<u64> {
        if self.rate == 0 || self.in_episode {
            return None;
        }
        let room = (self.capacity - self.len) as u64;
        Some(self.block_time_ns(self.produced + room))
    }

    fn push(&mut self, b: Block) {
        let mut tail = self.head + self.len;
        if tail >= self.capacity {
            tail -= self.capacity;
        }
        self.fifo[tail] = b;
        self.len += 1;
    }

    /// Runs the source up to device time `now_ns`. The next `*force_drop` blocks produced
    /// are dropped whatever the FIFO holds (fault injection; with RATE = 0 they are produced
    /// and dropped at once); `*force_drop` is decreased by the number dropped so.
    pub fn advance(&mut self, now_ns: u64, force_drop: &mut u64) -> Advance {
        let mut a = Advance::default();
        let new = if self.rate == 0 {
            *force_drop + (self.capacity - self.len) as u64
        } else {
            self.due(now_ns).saturating_sub(self.produced)
        };
        if new == 0 {
            return a;
        }
        let forced = (*force_drop).min(new);
        *force_drop -= forced;
        if forced > 0 {
            if !self.in_episode {
                a.episodes += 1;
            }
            self.in_episode = true;
            self.produced += forced;
            a.dropped += forced;
        }
        let rest = new - forced;
        let room = (self.capacity - self.len) as u64;
        let appended = rest.min(room);
        for _ in 0..appended {
            let index = self.produced;
            let timestamp_ns = if self.rate == 0 {
                now_ns
            } else {
                self.block_time_ns(index)
            };
            self.push(Block {
                index,
                timestamp_ns,
            });
            self.produced += 1;
        }
        if appended > 0 {
            self.in_episode = false;
        }
        let dropped = rest - appended;
        if dropped > 0 {
            if !self.in_episode {
                a.episodes += 1;
            }
            self.in_episode = true;
            self.produced += dropped;
            a.dropped += dropped;
        }
        a.produced = new;
        a
    }

    /// The oldest block in the FIFO.
    pub fn front(&self) -> Option<Block> {
        (self.len > 0).then(|| self.fifo[self.head])
    }

    /// Removes the oldest block (it was delivered).
    pub fn pop(&mut self) {
        if self.len > 0 {
            self.head += 1;
            if self.head == self.capacity {
                self.head = 0;
            }
            self.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_times_and_due_counts_agree() {
        // 4096-byte blocks at 3000 bytes/s: awkward ratios on purpose.
        let s = Source::new(4096, 3000, 1 << 20);
        for b in 0..50u64 {
            let t = s.block_time_ns(b);
            assert_eq!(s.due(t), b + 1, "block {b} complete at its own time");
            assert_eq!(s.due(t - 1), b, "block {b} not complete 1 ns earlier");
        }
    }

    #[test]
    fn overflow_drops_whole_blocks_and_counts_episodes() {
        // FIFO of 4 blocks of 64 bytes, 64 bytes per ms.
        let mut s = Source::new(64, 64_000, 4 * 64);
        let ms = 1_000_000;
        let a = s.advance(3 * ms, &mut 0);
        assert_eq!((a.produced, a.dropped, a.episodes), (3, 0, 0));
        let a = s.advance(10 * ms, &mut 0);
        assert_eq!((a.produced, a.dropped, a.episodes), (7, 6, 1));
        assert_eq!(s.len(), 4);
        // Still full: more drops, same episode.
        let a = s.advance(12 * ms, &mut 0);
        assert_eq!((a.dropped, a.episodes), (2, 0));
        s.pop();
        // One block appended (the episode ends), then drops: a new episode.
        let a = s.advance(14 * ms, &mut 0);
        assert_eq!((a.produced, a.dropped, a.episodes), (2, 1, 1));
        let blocks: Vec<u64> = std::iter::from_fn(|| {
            let b = s.front()?;
            s.pop();
            Some(b.index)
        })
        .collect();
        assert_eq!(blocks, vec![1, 2, 3, 12]);
    }

    #[test]
    fn unlimited_rate_fills_and_never_drops() {
        let mut s = Source::new(4096, 0, 16 * 4096);
        let a = s.advance(5, &mut 0);
        assert_eq!((a.produced, a.dropped), (16, 0));
        assert_eq!(s.front().unwrap().timestamp_ns, 5);
        s.pop();
        let a = s.advance(9, &mut 0);
        assert_eq!((a.produced, a.dropped), (1, 0));
        let a = s.advance(10, &mut 3);
        assert_eq!((a.produced, a.dropped, a.episodes), (3, 3, 1));
        assert_eq!(s.produced(), 20);
    }

    #[test]
    fn forced_drops_come_first() {
        let mut s = Source::new(64, 64_000, 4 * 64);
        let a = s.advance(2_000_000, &mut 1);
        assert_eq!((a.produced, a.dropped, a.episodes), (2, 1, 1));
        assert_eq!(s.front().unwrap().index, 1);
    }
}
