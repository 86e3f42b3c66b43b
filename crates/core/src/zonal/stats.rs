//! Zonal statistics with exactextract's definitions: every cell weighted by the zone's
//! coverage of it, NoData (NaN) cells left out.
//!
//! An [`Accumulator`] holds the partial aggregates of one zone — Σw, Σw·v, the weighted mean
//! and sum of squared deviations (West's update), min, max, the number of cells, and the
//! (value, weight) pairs when a statistic needs them — and merges with another exactly as if
//! their cells had been added to one (Chan's combination), so a result does not depend on how
//! the raster was cut.

use crate::error::{Error, Result};

/// A statistic a zonal job computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Σ coverage of the cells with a value.
    Count,
    /// Σ coverage · value.
    Sum,
    /// sum / count.
    Mean,
    Min,
    Max,
    /// The coverage-weighted population variance, and its square root.
    Variance,
    Stdev,
    /// The coverage-weighted median (exactextract's weighted quantile).
    Median,
    /// The value with the largest (smallest) total coverage; on a tie, the greatest (smallest)
    /// value.
    Majority,
    Minority,
    /// The number of distinct values.
    Variety,
    /// The number of cells with a value that the zone covers any part of.
    CellCount,
    /// Σ coverage · cell area, in the square map units of the grid.
    CoverageArea,
    /// Σ coverage · weight · value, and the mean, variance and standard deviation with each
    /// cell weighted by coverage × weight (`--weights`: a cell's area, or a weights raster).
    WeightedSum,
    WeightedMean,
    WeightedVariance,
    WeightedStdev,
    /// The distinct values, ascending (a list).
    Unique,
    /// The share of `count` each distinct value covers, in the order of `unique` (a list).
    Frac,
}

impl Stat {
    pub const ALL: [Stat; 19] = [
        Stat::Count,
        Stat::Sum,
        Stat::Mean,
        Stat::Min,
        Stat::Max,
        Stat::Variance,
        Stat::Stdev,
        Stat::Median,
        Stat::Majority,
        Stat::Minority,
        Stat::Variety,
        Stat::CellCount,
        Stat::CoverageArea,
        Stat::WeightedSum,
        Stat::WeightedMean,
        Stat::WeightedVariance,
        Stat::WeightedStdev,
        Stat::Unique,
        Stat::Frac,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stat::Count => "count",
            Stat::Sum => "sum",
            Stat::Mean => "mean",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Variance => "variance",
            Stat::Stdev => "stdev",
            Stat::Median => "median",
            Stat::Majority => "majority",
            Stat::Minority => "minority",
            Stat::Variety => "variety",
            Stat::CellCount => "cell_count",
            Stat::CoverageArea => "coverage_area",
            Stat::WeightedSum => "weighted_sum",
            Stat::WeightedMean => "weighted_mean",
            Stat::WeightedVariance => "weighted_variance",
            Stat::WeightedStdev => "weighted_stdev",
            Stat::Unique => "unique",
            Stat::Frac => "frac",
        }
    }

    /// A comma-separated list of statistics; an unknown name is an error that lists the known.
    pub fn parse_list(text: &str) -> Result<Vec<Stat>> {
        let mut out = Vec::new();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let stat = Stat::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
                    Error::invalid(format!(
                        "unknown statistic {name:?} (known: {})",
                        known.join(", ")
                    ))
                })?;
            if !out.contains(&stat) {
                out.push(stat);
            }
        }
        if out.is_empty() {
            return Err(Error::invalid("no statistics asked for"));
        }
        Ok(out)
    }

    /// Whether the statistic is a whole number (the rest are floats: coverage is fractional).
    pub fn is_integer(self) -> bool {
        matches!(self, Stat::Variety | Stat::CellCount)
    }

    /// Whether it needs a weight per cell (`--weights`).
    pub fn is_weighted(self) -> bool {
        matches!(
            self,
            Stat::WeightedSum | Stat::WeightedMean | Stat::WeightedVariance | Stat::WeightedStdev
        )
    }

    /// Whether its value is a list (one entry per distinct value).
    pub fn is_list(self) -> bool {
        matches!(self, Stat::Unique | Stat::Frac)
    }

    /// Whether it needs every (value, weight) pair, not only running sums.
    fn needs_values(self) -> bool {
        matches!(
            self,
            Stat::Median
                | Stat::Majority
                | Stat::Minority
                | Stat::Variety
                | Stat::Unique
                | Stat::Frac
        )
    }
}

/// Whether any of `stats` needs the (value, weight) pairs kept.
pub fn keeps_values(stats: &[Stat]) -> bool {
    stats.iter().any(|s| s.needs_values())
}

/// Σw, Σw·v and the weighted mean and sum of squared deviations (West's update), for one
/// kind of weight.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Moments {
    weight: f64,
    sum: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    #[inline]
    fn add(&mut self, v: f64, w: f64) {
        let total = self.weight + w;
        let delta = v - self.mean;
        let r = delta * w / total;
        self.mean += r;
        self.m2 += self.weight * delta * r;
        self.weight = total;
        self.sum += w * v;
    }

    /// Chan's combination: as if `other`'s cells had been added one by one.
    fn merge(&mut self, other: &Moments) {
        if other.weight == 0.0 {
            return;
        }
        let total = self.weight + other.weight;
        let delta = other.mean - self.mean;
        self.mean += delta * other.weight / total;
        self.m2 += other.m2 + delta * delta * self.weight * other.weight / total;
        self.weight = total;
        self.sum += other.sum;
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.weight, self.sum, self.mean, self.m2] {
            out.extend(v.to_le_bytes());
        }
    }

    fn decode(input: &mut &[u8]) -> Result<Moments> {
        Ok(Moments {
            weight: f64::from_le_bytes(word(input)?),
            sum: f64::from_le_bytes(word(input)?),
            mean: f64::from_le_bytes(word(input)?),
            m2: f64::from_le_bytes(word(input)?),
        })
    }
}

fn word(input: &mut &[u8]) -> Result<[u8; 8]> {
    let (head, rest) = input
        .split_first_chunk::<8>()
        .ok_or_else(|| Error::Internal("a zonal partial is cut short".into()))?;
    *input = rest;
    Ok(*head)
}

/// The partial aggregates of one zone over the cells seen so far: moments weighted by
/// coverage, and — with a weight per cell (`--weights`) — by coverage × weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulator {
    moments: Moments,
    weighted: Option<Moments>,
    min: f64,
    max: f64,
    cells: u64,
    values: Option<Vec<(f64, f64)>>,
}

impl Accumulator {
    pub fn new(keep_values: bool) -> Accumulator {
        Accumulator {
            moments: Moments::default(),
            weighted: None,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            cells: 0,
            values: keep_values.then(Vec::new),
        }
    }

    /// An accumulator that also takes a weight per cell ([`add_weighted`](Self::add_weighted)).
    pub fn weighted(keep_values: bool) -> Accumulator {
        Accumulator {
            weighted: Some(Moments::default()),
            ..Accumulator::new(keep_values)
        }
    }

    /// Adds a cell of value `v` covered by `w` (> 0); a NaN value is NoData and left out.
    #[inline]
    pub fn add(&mut self, v: f64, w: f64) {
        if v.is_nan() {
            return;
        }
        self.moments.add(v, w);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.cells += 1;
        if let Some(values) = &mut self.values {
            values.push((v, w));
        }
    }

    /// [`add`](Self::add) for a cell that also weighs `weight` (a cell's area, or a weights
    /// raster's value); the weighted statistics use coverage × weight.
    #[inline]
    pub fn add_weighted(&mut self, v: f64, w: f64, weight: f64) {
        if v.is_nan() {
            return;
        }
        self.add(v, w);
        if let Some(m) = &mut self.weighted {
            m.add(v, w * weight);
        }
    }

    /// Adds every cell `other` has seen.
    pub fn merge(&mut self, other: &Accumulator) {
        self.moments.merge(&other.moments);
        if let (Some(a), Some(b)) = (&mut self.weighted, &other.weighted) {
            a.merge(b);
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.cells += other.cells;
        if let (Some(a), Some(b)) = (&mut self.values, &other.values) {
            a.extend_from_slice(b);
        }
    }

    /// Appends the accumulator to `out`, little-endian: the coverage moments (Σw, Σw·v, mean,
    /// M²), a flag and the weighted moments, min, max, cells, then the (value, weight) pairs
    /// when kept (their count first, or u64::MAX when not).
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.moments.encode(out);
        match &self.weighted {
            Some(m) => {
                out.extend(1u64.to_le_bytes());
                m.encode(out);
            }
            None => out.extend(0u64.to_le_bytes()),
        }
        for v in [self.min, self.max] {
            out.extend(v.to_le_bytes());
        }
        out.extend(self.cells.to_le_bytes());
        match &self.values {
            None => out.extend(u64::MAX.to_le_bytes()),
            Some(values) => {
                out.extend((values.len() as u64).to_le_bytes());
                for (v, w) in values {
                    out.extend(v.to_le_bytes());
                    out.extend(w.to_le_bytes());
                }
            }
        }
    }

    /// Reads an accumulator [`encode`](Self::encode) wrote from the front of `input`.
    pub fn decode(input: &mut &[u8]) -> Result<Accumulator> {
        let moments = Moments::decode(input)?;
        let weighted = match u64::from_le_bytes(word(input)?) {
            0 => None,
            _ => Some(Moments::decode(input)?),
        };
        let min = f64::from_le_bytes(word(input)?);
        let max = f64::from_le_bytes(word(input)?);
        let cells = u64::from_le_bytes(word(input)?);
        let n = u64::from_le_bytes(word(input)?);
        let values = if n == u64::MAX {
            None
        } else {
            if n > (input.len() / 16) as u64 {
                return Err(Error::Internal("a zonal partial is cut short".into()));
            }
            let mut values = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let v = f64::from_le_bytes(word(input)?);
                let w = f64::from_le_bytes(word(input)?);
                values.push((v, w));
            }
            Some(values)
        };
        Ok(Accumulator {
            moments,
            weighted,
            min,
            max,
            cells,
            values,
        })
    }

    /// The value of `stat`, or `None` where it is undefined (no cell with a value): `count`,
    /// `sum`, `variety`, `cell_count` and `coverage_area` are 0 then, as exactextract gives.
    pub fn value(&self, stat: Stat, cell_area: f64) -> Option<f64> {
        let some = self.cells > 0;
        let m = &self.moments;
        let weighted = |f: fn(&Moments) -> f64| -> Option<f64> {
            self.weighted.as_ref().filter(|w| w.weight > 0.0).map(f)
        };
        match stat {
            Stat::Count => Some(m.weight),
            Stat::Sum => Some(m.sum),
            Stat::CellCount => Some(self.cells as f64),
            Stat::CoverageArea => Some(m.weight * cell_area),
            Stat::Mean => some.then(|| m.sum / m.weight),
            Stat::Min => some.then_some(self.min),
            Stat::Max => some.then_some(self.max),
            Stat::Variance => some.then(|| m.m2 / m.weight),
            Stat::Stdev => some.then(|| (m.m2 / m.weight).sqrt()),
            Stat::Median => some.then(|| self.quantile(0.5)).flatten(),
            Stat::Majority => some.then(|| self.mode(true)).flatten(),
            Stat::Minority => some.then(|| self.mode(false)).flatten(),
            Stat::Variety => Some(self.by_value().len() as f64),
            Stat::WeightedSum => Some(self.weighted.map_or(0.0, |w| w.sum)),
            Stat::WeightedMean => weighted(|w| w.sum / w.weight),
            Stat::WeightedVariance => weighted(|w| w.m2 / w.weight),
            Stat::WeightedStdev => weighted(|w| (w.m2 / w.weight).sqrt()),
            // Lists: see `list`.
            Stat::Unique | Stat::Frac => None,
        }
    }

    /// The value of a list statistic (`unique`, `frac`): empty when the zone has no value.
    pub fn list(&self, stat: Stat) -> Vec<f64> {
        let by_value = self.by_value();
        match stat {
            Stat::Unique => by_value.iter().map(|&(v, _)| v).collect(),
            Stat::Frac => by_value
                .iter()
                .map(|&(_, w)| w / self.moments.weight)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Total weight per distinct value, by value.
    fn by_value(&self) -> Vec<(f64, f64)> {
        let Some(values) = &self.values else {
            return Vec::new();
        };
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out: Vec<(f64, f64)> = Vec::new();
        for (v, w) in sorted {
            match out.last_mut() {
                Some((last, total)) if *last == v => *total += w,
                _ => out.push((v, w)),
            }
        }
        out
    }

    /// The value of the largest (smallest) total coverage; on a tie the greatest (smallest)
    /// value, as exactextract picks.
    fn mode(&self, largest: bool) -> Option<f64> {
        let mut best: Option<(f64, f64)> = None;
        for (v, w) in self.by_value() {
            // Values come in increasing order.
            let better = match best {
                None => true,
                Some((_, bw)) if largest => w >= bw,
                Some((_, bw)) => w < bw,
            };
            if better {
                best = Some((v, w));
            }
        }
        best.map(|(v, _)| v)
    }

    /// The weighted quantile `q` as exactextract defines it: the distinct values sorted, each
    /// weighted by its total coverage w_k; the k-th (from 0) at position
    /// s_k = k·w_k + (n − 1)·Σ_{j<k} w_j on a scale of (n − 1)·Σw, linear between neighbours.
    fn quantile(&self, q: f64) -> Option<f64> {
        let cells = self.by_value();
        let n = cells.len();
        if n == 0 {
            return None;
        }
        let mut positions = Vec::with_capacity(n);
        let (mut cumulative, mut total) = (0.0, 0.0);
        for (k, &(_, w)) in cells.iter().enumerate() {
            positions.push(if k == 0 {
                0.0
            } else {
                k as f64 * w + (n as f64 - 1.0) * cumulative
            });
            cumulative += w;
            total += w;
        }
        let target = q * total * (n as f64 - 1.0);
        let right = positions.partition_point(|&s| s <= target);
        if right == 0 {
            return Some(cells[0].0);
        }
        if right == n {
            return Some(cells[n - 1].0);
        }
        let (l, r) = (right - 1, right);
        let (xl, xr) = (cells[l].0, cells[r].0);
        Some(xl + (target - positions[l]) * (xr - xl) / (positions[r] - positions[l]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(cells: &[(f64, f64)]) -> Accumulator {
        let mut a = Accumulator::new(true);
        for &(v, w) in cells {
            a.add(v, w);
        }
        a
    }

    #[test]
    fn weighted_statistics_follow_exactextract() {
        let a = filled(&[(1.0, 0.5), (2.0, 1.0), (4.0, 0.25), (f64::NAN, 1.0)]);
        let v = |s| a.value(s, 2.0).unwrap();
        assert_eq!(v(Stat::Count), 1.75);
        assert_eq!(v(Stat::Sum), 3.5);
        assert_eq!(v(Stat::Mean), 2.0);
        assert_eq!((v(Stat::Min), v(Stat::Max)), (1.0, 4.0));
        // Σw(v − 2)² / Σw = (0.5 + 0 + 1) / 1.75
        assert!((v(Stat::Variance) - 1.5 / 1.75).abs() < 1e-15);
        assert_eq!(v(Stat::Majority), 2.0);
        assert_eq!(v(Stat::Minority), 4.0);
        assert_eq!(v(Stat::Variety), 3.0);
        assert_eq!(v(Stat::CellCount), 3.0);
        assert_eq!(v(Stat::CoverageArea), 3.5);
        assert_eq!(a.list(Stat::Unique), [1.0, 2.0, 4.0]);
        assert_eq!(a.list(Stat::Frac), [0.5 / 1.75, 1.0 / 1.75, 0.25 / 1.75]);
        // Equal weights: the ordinary median.
        let b = filled(&[(3.0, 1.0), (1.0, 1.0), (2.0, 1.0), (10.0, 1.0)]);
        assert_eq!(b.value(Stat::Median, 1.0), Some(2.5));
    }

    #[test]
    fn merged_partials_equal_one_pass() {
        let cells: Vec<(f64, f64)> = (0..100)
            .map(|i| ((i * 37 % 101) as f64 * 0.5, 0.01 + (i % 7) as f64 / 7.0))
            .collect();
        let whole = filled(&cells);
        let mut merged = filled(&cells[..40]);
        merged.merge(&filled(&cells[40..77]));
        merged.merge(&filled(&cells[77..]));
        merged.merge(&Accumulator::new(true));
        // Through its encoding, unchanged.
        let mut bytes = Vec::new();
        merged.encode(&mut bytes);
        Accumulator::new(false).encode(&mut bytes);
        let mut input = bytes.as_slice();
        assert_eq!(Accumulator::decode(&mut input).unwrap(), merged);
        assert_eq!(
            Accumulator::decode(&mut input).unwrap(),
            Accumulator::new(false)
        );
        assert!(input.is_empty());
        assert!(Accumulator::decode(&mut &bytes[..20]).is_err());
        for s in Stat::ALL
            .into_iter()
            .filter(|s| !s.is_list() && !s.is_weighted())
        {
            let (a, b) = (whole.value(s, 1.0).unwrap(), merged.value(s, 1.0).unwrap());
            assert!(
                (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                "{s:?}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn weighted_statistics_weigh_coverage_times_weight_and_merge() {
        let cells = [
            (1.0, 0.5, 2.0),
            (3.0, 1.0, 1.0),
            (f64::NAN, 1.0, 5.0),
            (5.0, 0.25, 4.0),
        ];
        let mut a = Accumulator::weighted(false);
        for &(v, c, w) in &cells {
            a.add_weighted(v, c, w);
        }
        // Weights c·w = 1, 1, 1: the plain mean of 1, 3, 5.
        assert_eq!(a.value(Stat::WeightedSum, 1.0), Some(9.0));
        assert_eq!(a.value(Stat::WeightedMean, 1.0), Some(3.0));
        assert_eq!(a.value(Stat::WeightedVariance, 1.0), Some(8.0 / 3.0));
        // Coverage alone still drives the unweighted ones.
        assert_eq!(a.value(Stat::Count, 1.0), Some(1.75));
        let mut b = Accumulator::weighted(false);
        b.add_weighted(1.0, 0.5, 2.0);
        let mut rest = Accumulator::weighted(false);
        rest.add_weighted(3.0, 1.0, 1.0);
        rest.add_weighted(5.0, 0.25, 4.0);
        b.merge(&rest);
        let mut bytes = Vec::new();
        b.encode(&mut bytes);
        let b = Accumulator::decode(&mut bytes.as_slice()).unwrap();
        for s in [
            Stat::WeightedSum,
            Stat::WeightedMean,
            Stat::WeightedVariance,
        ] {
            let (x, y) = (a.value(s, 1.0).unwrap(), b.value(s, 1.0).unwrap());
            assert!((x - y).abs() < 1e-12, "{s:?}");
        }
        assert_eq!(
            Accumulator::weighted(false).value(Stat::WeightedMean, 1.0),
            None
        );
    }

    #[test]
    fn a_zone_without_values_has_zero_counts_and_no_mean() {
        let a = filled(&[(f64::NAN, 1.0)]);
        assert_eq!(a.value(Stat::Count, 1.0), Some(0.0));
        assert_eq!(a.value(Stat::Sum, 1.0), Some(0.0));
        for s in [
            Stat::Mean,
            Stat::Min,
            Stat::Stdev,
            Stat::Median,
            Stat::Majority,
        ] {
            assert_eq!(a.value(s, 1.0), None, "{s:?}");
        }
        let e = Stat::parse_list("mean,avg").unwrap_err().to_string();
        assert!(
            e.contains("unknown statistic \"avg\"") && e.contains("known: count"),
            "{e}"
        );
    }
}
