//! `KeyIndex`: space-filling curves that map keys to one dimension, so that neighbouring tiles
//! are stored and scheduled together, and a query box becomes a few index ranges.

use serde::{Deserialize, Serialize};

use super::{GridBounds, KeyBounds, SpatialKey};

/// A space-filling curve over the keys of a layer.
pub trait KeyIndex {
    /// The curve position of `key`.
    fn to_index(&self, key: SpatialKey) -> u64;

    /// Inclusive index ranges, sorted and merged, whose union is exactly the keys in `query`
    /// (for a Hilbert index: the part of `query` inside its key bounds).
    fn index_ranges(&self, query: GridBounds) -> Vec<(u64, u64)>;
}

/// Interleaves the low 32 bits of `v` with zeros: bit i moves to bit 2i.
fn spread(v: u32) -> u64 {
    let mut x = v as u64;
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    x = (x | (x << 1)) & 0x5555_5555_5555_5555;
    x
}

/// Z-order (Morton) index, column in the even bits, as GeoTrellis's `ZSpatialKeyIndex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZOrderIndex {
    bits: u32,
}

impl ZOrderIndex {
    pub fn new(bounds: &KeyBounds<SpatialKey>) -> Self {
        ZOrderIndex {
            bits: bits_for(bounds.max.col.max(bounds.max.row) as u64 + 1),
        }
    }
}

impl KeyIndex for ZOrderIndex {
    fn to_index(&self, key: SpatialKey) -> u64 {
        spread(key.col) | (spread(key.row) << 1)
    }

    fn index_ranges(&self, query: GridBounds) -> Vec<(u64, u64)> {
        decompose(self.bits, query, |c, r| {
            self.to_index(SpatialKey::new(c, r))
        })
    }
}

/// Hilbert index over the key bounds (offset to their minimum), as GeoTrellis's
/// `HilbertSpatialKeyIndex`: better locality than Z-order, no long jumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HilbertIndex {
    min: SpatialKey,
    max: SpatialKey,
    bits: u32,
}

impl HilbertIndex {
    pub fn new(bounds: &KeyBounds<SpatialKey>) -> Self {
        let span =
            (bounds.max.col - bounds.min.col).max(bounds.max.row - bounds.min.row) as u64 + 1;
        HilbertIndex {
            min: bounds.min,
            max: bounds.max,
            bits: bits_for(span),
        }
    }

    fn curve(&self, mut x: u64, mut y: u64) -> u64 {
        let n = 1u64 << self.bits;
        let mut d = 0u64;
        let mut s = n / 2;
        while s > 0 {
            let rx = u64::from(x & s > 0);
            let ry = u64::from(y & s > 0);
            d += s * s * ((3 * rx) ^ ry);
            if ry == 0 {
                if rx == 1 {
                    x = n - 1 - x;
                    y = n - 1 - y;
                }
                std::mem::swap(&mut x, &mut y);
            }
            s /= 2;
        }
        d
    }
}

impl KeyIndex for HilbertIndex {
    fn to_index(&self, key: SpatialKey) -> u64 {
        self.curve(
            (key.col - self.min.col) as u64,
            (key.row - self.min.row) as u64,
        )
    }

    fn index_ranges(&self, query: GridBounds) -> Vec<(u64, u64)> {
        let (c0, r0) = (self.min.col, self.min.row);
        let bounds = GridBounds::new(c0, r0, self.max.col, self.max.row);
        let Some(q) = query.intersection(&bounds) else {
            return Vec::new();
        };
        let local = GridBounds::new(
            q.col_min - c0,
            q.row_min - r0,
            q.col_max - c0,
            q.row_max - r0,
        );
        decompose(self.bits, local, |c, r| self.curve(c as u64, r as u64))
    }
}

/// Bits per axis for a square of side at least `n`.
fn bits_for(n: u64) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

/// Splits `query` into aligned quads of the curve. Both curves visit every aligned quad of side
/// 2^k as one contiguous run of 4^k indices, so a quad inside the query is one range.
fn decompose(bits: u32, query: GridBounds, index: impl Fn(u32, u32) -> u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    // Quads larger than the curve's square exist when the query reaches past it; cover up to 32 bits.
    let top = bits.max(32 - (query.col_max.max(query.row_max)).leading_zeros());
    let mut stack = vec![(0u64, 0u64, top)];
    while let Some((x, y, k)) = stack.pop() {
        let side = 1u64 << k;
        let (x1, y1) = (x + side - 1, y + side - 1);
        let (qx0, qy0, qx1, qy1) = (
            query.col_min as u64,
            query.row_min as u64,
            query.col_max as u64,
            query.row_max as u64,
        );
        if x1 < qx0 || y1 < qy0 || x > qx1 || y > qy1 {
            continue;
        }
        if x >= qx0 && y >= qy0 && x1 <= qx1 && y1 <= qy1 {
            let len = side * side;
            let start = index(x as u32, y as u32) & !(len - 1);
            out.push((start, start + len - 1));
            continue;
        }
        let h = side / 2;
        for (dx, dy) in [(0, 0), (h, 0), (0, h), (h, h)] {
            stack.push((x + dx, y + dy, k - 1));
        }
    }
    out.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
    for (a, b) in out {
        match merged.last_mut() {
            Some(last) if last.1 + 1 == a => last.1 = b,
            _ => merged.push((a, b)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(index: &dyn KeyIndex, q: GridBounds) -> Vec<u64> {
        let mut v: Vec<u64> = q.iter_keys().map(|k| index.to_index(k)).collect();
        v.sort_unstable();
        v
    }

    fn expand(ranges: &[(u64, u64)]) -> Vec<u64> {
        ranges.iter().flat_map(|&(a, b)| a..=b).collect()
    }

    #[test]
    fn z_order_worked_numbers() {
        let z = ZOrderIndex::new(&KeyBounds {
            min: SpatialKey::new(0, 0),
            max: SpatialKey::new(7, 7),
        });
        assert_eq!(z.to_index(SpatialKey::new(1, 0)), 1);
        assert_eq!(z.to_index(SpatialKey::new(0, 1)), 2);
        assert_eq!(z.to_index(SpatialKey::new(3, 3)), 15);
        assert_eq!(z.to_index(SpatialKey::new(4, 0)), 16);
        // Box cols 1..=2, rows 0..=1: keys with z 1, 3, 4, 6 -> ranges [1], [3,4], [6].
        assert_eq!(
            z.index_ranges(GridBounds::new(1, 0, 2, 1)),
            vec![(1, 1), (3, 4), (6, 6)]
        );
        // An aligned 4 × 4 quad is one range.
        assert_eq!(z.index_ranges(GridBounds::new(4, 4, 7, 7)), vec![(48, 63)]);
    }

    #[test]
    fn hilbert_worked_numbers() {
        let h = HilbertIndex::new(&KeyBounds {
            min: SpatialKey::new(10, 20),
            max: SpatialKey::new(13, 23),
        });
        // Order-2 Hilbert curve: (0,0)=0 (1,0)=1 (1,1)=2 (0,1)=3 ... (2,0)=14 (3,0)=15.
        let at = |c: u32, r: u32| h.to_index(SpatialKey::new(10 + c, 20 + r));
        assert_eq!(
            [at(0, 0), at(1, 0), at(1, 1), at(0, 1), at(2, 0), at(3, 0)],
            [0, 1, 2, 3, 14, 15]
        );
        // Consecutive indices are always neighbours.
        let mut by_index: Vec<(u64, SpatialKey)> = GridBounds::new(10, 20, 13, 23)
            .iter_keys()
            .map(|k| (h.to_index(k), k))
            .collect();
        by_index.sort();
        for w in by_index.windows(2) {
            let (a, b) = (w[0].1, w[1].1);
            assert_eq!(a.col.abs_diff(b.col) + a.row.abs_diff(b.row), 1);
        }
        assert_eq!(
            h.index_ranges(GridBounds::new(10, 20, 11, 21)),
            vec![(0, 3)]
        );
    }

    #[test]
    fn ranges_cover_exactly_the_query_box() {
        let bounds = KeyBounds {
            min: SpatialKey::new(3, 5),
            max: SpatialKey::new(40, 33),
        };
        let z = ZOrderIndex::new(&bounds);
        let h = HilbertIndex::new(&bounds);
        let mut seed = 12345u64;
        let mut next = |m: u32| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32 % m
        };
        for _ in 0..200 {
            let (c0, r0) = (3 + next(38), 5 + next(29));
            let (c1, r1) = (c0 + next(41 - c0), r0 + next(34 - r0));
            let q = GridBounds::new(c0, r0, c1, r1);
            for index in [&z as &dyn KeyIndex, &h] {
                let ranges = index.index_ranges(q);
                assert_eq!(expand(&ranges), brute(index, q), "{q:?}");
                assert!(
                    ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0),
                    "merged and sorted"
                );
            }
        }
    }
}
