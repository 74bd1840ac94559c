//! A set of disjoint byte ranges (which parts of the disk were ever written), merged on
//! insert, and the holes below its highest offset.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `[start, end)`, keyed by start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extents {
    ranges: BTreeMap<u64, u64>,
}

/// The holes of an [`Extents`]: ranges never written below its highest written offset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holes {
    /// Number of holes.
    pub count: u64,
    /// Total bytes in holes.
    pub bytes: u64,
    /// The lowest hole, if any.
    pub first: Option<(u64, u64)>,
}

impl Extents {
    /// An empty set.
    pub fn new() -> Extents {
        Extents::default()
    }

    /// Adds `[start, end)` (empty ranges are ignored), merging with overlapping or
    /// adjacent ranges.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // The range starting at or before `start` may overlap or touch it.
        if let Some((&ps, &pe)) = self.ranges.range(..=start).next_back() {
            if pe >= start {
                s = ps;
                e = e.max(pe);
            }
        }
        // Ranges starting inside `[s, e]` are swallowed.
        let swallowed: Vec<u64> = self.ranges.range(s..=e).map(|(&k, _)| k).collect();
        for k in swallowed {
            if let Some(v) = self.ranges.remove(&k) {
                e = e.max(v);
            }
        }
        self.ranges.insert(s, e);
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Bytes covered.
    pub fn covered(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// End of the highest range (0 when empty).
    pub fn end(&self) -> u64 {
        self.ranges.values().next_back().copied().unwrap_or(0)
    }

    /// The ranges in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// The ranges that overlap `[start, end)`, clipped to it.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let first = self
            .ranges
            .range(..=start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(start);
        for (&s, &e) in self.ranges.range(first..end) {
            let (cs, ce) = (s.max(start), e.min(end));
            if cs < ce {
                out.push((cs, ce));
            }
        }
        out
    }

    /// The gaps between 0 and [`Extents::end`] that were never written.
    pub fn holes(&self) -> Holes {
        let mut h = Holes::default();
        let mut pos = 0;
        for (s, e) in self.iter() {
            if s > pos {
                h.count += 1;
                h.bytes += s - pos;
                h.first.get_or_insert((pos, s));
            }
            pos = e;
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(x: &Extents) -> Vec<(u64, u64)> {
        x.iter().collect()
    }

    #[test]
    fn merges_overlapping_and_adjacent() {
        let mut x = Extents::new();
        x.insert(100, 200);
        x.insert(300, 400);
        assert_eq!(ranges(&x), vec![(100, 200), (300, 400)]);
        x.insert(200, 250); // adjacent to the first
        assert_eq!(ranges(&x), vec![(100, 250), (300, 400)]);
        x.insert(240, 310); // bridges both
        assert_eq!(ranges(&x), vec![(100, 400)]);
        x.insert(0, 50);
        x.insert(500, 600);
        x.insert(40, 550); // swallows the middle one, extends the first and the last
        assert_eq!(ranges(&x), vec![(0, 600)]);
        x.insert(10, 20); // inside: no change
        x.insert(7, 7); // empty: ignored
        assert_eq!(ranges(&x), vec![(0, 600)]);
        assert_eq!(x.covered(), 600);
    }

    #[test]
    fn holes_below_the_highest_write() {
        let mut x = Extents::new();
        assert_eq!(x.holes(), Holes::default());
        x.insert(0, 4096);
        assert_eq!(x.holes().count, 0);
        x.insert(8192, 12288);
        x.insert(16384, 20480);
        let h = x.holes();
        assert_eq!(h.count, 2);
        assert_eq!(h.bytes, 8192);
        assert_eq!(h.first, Some((4096, 8192)));
        let mut y = Extents::new();
        y.insert(512, 1024);
        assert_eq!(y.holes().first, Some((0, 512)));
        assert_eq!(y.end(), 1024);
    }

    #[test]
    fn overlapping_is_clipped() {
        let mut x = Extents::new();
        x.insert(0, 10);
        x.insert(20, 30);
        x.insert(40, 50);
        assert_eq!(x.overlapping(5, 45), vec![(5, 10), (20, 30), (40, 45)]);
        assert_eq!(x.overlapping(10, 20), vec![]);
        assert_eq!(x.overlapping(25, 26), vec![(25, 26)]);
    }

    #[test]
    fn random_inserts_match_a_bitmap() {
        // A small deterministic LCG; the model is a byte map.
        let mut state = 12345u64;
        let mut rnd = |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        let mut x = Extents::new();
        let mut map = vec![false; 1000];
        for _ in 0..300 {
            let s = rnd(1000);
            let e = (s + rnd(40)).min(1000);
            x.insert(s, e);
            for b in &mut map[s as usize..e as usize] {
                *b = true;
            }
            let covered = map.iter().filter(|b| **b).count() as u64;
            assert_eq!(x.covered(), covered);
            let end = map
                .iter()
                .rposition(|b| *b)
                .map(|i| i as u64 + 1)
                .unwrap_or(0);
            assert_eq!(x.end(), end);
            let hole_bytes = map[..end as usize].iter().filter(|b| !**b).count() as u64;
            assert_eq!(x.holes().bytes, hole_bytes);
            let v: Vec<_> = x.iter().collect();
            assert!(
                v.windows(2).all(|w| w[0].1 < w[1].0),
                "disjoint, non-adjacent"
            );
        }
    }
}
