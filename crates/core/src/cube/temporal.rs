//! Temporal operations as accumulators over time steps, one slot per output step or group:
//! resample to a period (xarray's `resample(time=...)`: left-closed, left-labelled bins from
//! the first step's midnight — or month, year — on), climatology by month, season or day of
//! year (`groupby("time.month")`), and the statistics they apply, skipping NaN as xarray does.

use serde::{Deserialize, Serialize};

use super::time::{Civil, days_from_civil};
use crate::error::{Error, Result};

/// A statistic over the steps of a period or group, NaN skipped (xarray's `skipna=True`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    /// NaN where a cell has no value in the period.
    Mean,
    Max,
    Min,
    /// 0 where a cell has no value in the period.
    Sum,
    /// The number of values.
    Count,
}

impl Stat {
    /// What an accumulator of the statistic keeps per cell: (sum, count, extreme).
    fn parts(self) -> (bool, bool, bool) {
        match self {
            Stat::Mean => (true, true, false),
            Stat::Sum => (true, false, false),
            Stat::Count => (false, true, false),
            Stat::Max | Stat::Min => (false, false, true),
        }
    }

    /// Whether this statistic over a group follows from accumulators of `of` over bins that
    /// split the group: a mean's sums and counts also give the sum and the count.
    pub fn follows_from(self, of: Stat) -> bool {
        self == of || (of == Stat::Mean && matches!(self, Stat::Sum | Stat::Count))
    }

    pub fn name(self) -> &'static str {
        match self {
            Stat::Mean => "mean",
            Stat::Max => "max",
            Stat::Min => "min",
            Stat::Sum => "sum",
            Stat::Count => "count",
        }
    }
}

/// A resampling frequency: `6h`, `1D`, `1M` (month starts, xarray's `MS`), `1Y` (`YS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Freq {
    Hours(u32),
    Days(u32),
    Months(u32),
    Years(u32),
}

impl Freq {
    pub fn parse(text: &str) -> Result<Freq> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let n: u32 = if split == 0 {
            1
        } else {
            t[..split].parse().unwrap_or(0)
        };
        let bad = || {
            Error::invalid(format!(
                "resample frequency {text:?} is not one of Nh, ND, NM (or NMS), NY (or NYS), e.g. 6h, 1D, 1M, 1Y"
            ))
        };
        if n == 0 {
            return Err(bad());
        }
        Ok(match &t[split..] {
            "h" | "H" => Freq::Hours(n),
            "D" | "d" => Freq::Days(n),
            "M" | "MS" => Freq::Months(n),
            "Y" | "YS" | "A" | "AS" => Freq::Years(n),
            _ => return Err(bad()),
        })
    }
}

impl Freq {
    /// Whether every bin lies inside one group: bins of hours that divide a day (they start at
    /// midnight) and days lie in one day of year, month and season; calendar months in one
    /// month and season.
    pub fn nests_in(self, by: GroupBy) -> bool {
        match self {
            Freq::Hours(n) => 24 % n == 0,
            Freq::Days(n) => n == 1,
            Freq::Months(n) => n == 1 && by != GroupBy::Dayofyear,
            Freq::Years(_) => false,
        }
    }
}

/// The bins of a resample: bin k starts at `label(k)`; bins are anchored at the first step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Periods {
    pub freq: Freq,
    /// Midnight of the first step's day (hours, days); its month (months) or year (years) as
    /// a month count since year 0.
    origin: i64,
}

impl Periods {
    pub fn new(freq: Freq, first: i64) -> Periods {
        let c = Civil::of(first);
        let origin = match freq {
            Freq::Hours(_) | Freq::Days(_) => first.div_euclid(86400) * 86400,
            Freq::Months(_) => c.year * 12 + i64::from(c.month) - 1,
            Freq::Years(_) => c.year * 12,
        };
        Periods { freq, origin }
    }

    /// The bin of an instant.
    pub fn index(&self, t: i64) -> i64 {
        match self.freq {
            Freq::Hours(n) => (t - self.origin).div_euclid(3600 * i64::from(n)),
            Freq::Days(n) => (t - self.origin).div_euclid(86400 * i64::from(n)),
            Freq::Months(n) => {
                let c = Civil::of(t);
                (c.year * 12 + i64::from(c.month) - 1 - self.origin).div_euclid(i64::from(n))
            }
            Freq::Years(n) => (Civil::of(t).year * 12 - self.origin).div_euclid(12 * i64::from(n)),
        }
    }

    /// The start (label) of bin k.
    pub fn label(&self, k: i64) -> i64 {
        let months = |m: i64| {
            let (y, mo) = (m.div_euclid(12), m.rem_euclid(12) as u32 + 1);
            days_from_civil(y, mo, 1) * 86400
        };
        match self.freq {
            Freq::Hours(n) => self.origin + k * 3600 * i64::from(n),
            Freq::Days(n) => self.origin + k * 86400 * i64::from(n),
            Freq::Months(n) => months(self.origin + k * i64::from(n)),
            Freq::Years(n) => months(self.origin + k * 12 * i64::from(n)),
        }
    }
}

/// The groups of a climatology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Month,
    Season,
    Dayofyear,
}

pub const SEASONS: [&str; 4] = ["DJF", "JJA", "MAM", "SON"];

impl GroupBy {
    /// The group of an instant: month 1..12, season index into [`SEASONS`] (xarray's sorted
    /// order), day of year 1..366.
    pub fn key(self, t: i64) -> u32 {
        let c = Civil::of(t);
        match self {
            GroupBy::Month => c.month,
            GroupBy::Season => match c.month {
                12 | 1 | 2 => 0,
                6..=8 => 1,
                3..=5 => 2,
                _ => 3,
            },
            GroupBy::Dayofyear => c.day_of_year(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Month => "month",
            GroupBy::Season => "season",
            GroupBy::Dayofyear => "dayofyear",
        }
    }
}

/// Per slot and cell: what a statistic needs (sums in f64).
///
/// A cell's count of valid values is `count[cell] + whole[slot]`: a step without NaN counts
/// once for its slot instead of once per cell (most steps of most data have none).
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulator {
    pub stat: Stat,
    pub cells: usize,
    pub slots: usize,
    sum: Vec<f64>,
    count: Vec<u32>,
    whole: Vec<u32>,
    extreme: Vec<f32>,
    /// Per slot: every cell's extreme is a value (not NaN), so a NaN step changes nothing by
    /// itself and the fold needs one comparison per cell.
    filled: Vec<bool>,
}

impl Accumulator {
    pub fn new(stat: Stat, slots: usize, cells: usize) -> Accumulator {
        let mut a = Accumulator {
            stat,
            cells,
            slots: 0,
            sum: Vec::new(),
            count: Vec::new(),
            whole: Vec::new(),
            extreme: Vec::new(),
            filled: Vec::new(),
        };
        a.reset(slots);
        a
    }

    /// Empties the accumulator for `slots` slots of the same cells, keeping its memory (fresh
    /// memory costs two page faults per 4 KB when it is read before it is written).
    pub fn reset(&mut self, slots: usize) {
        fn refill<T: Copy>(v: &mut Vec<T>, used: bool, n: usize, value: T) {
            v.clear();
            if used {
                v.resize(n, value);
            }
        }
        let n = slots * self.cells;
        let (sum, count, extreme) = self.stat.parts();
        refill(&mut self.sum, sum, n, 0.0);
        refill(&mut self.count, count, n, 0);
        refill(&mut self.whole, count, slots, 0);
        refill(&mut self.extreme, extreme, n, f32::NAN);
        refill(&mut self.filled, extreme, slots, false);
        self.slots = slots;
    }

    /// Folds one step's values (`cells` of them) into `slot`.
    pub fn add(&mut self, slot: usize, values: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, as just checked.
                return unsafe { self.add_avx512(slot, values) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, as just checked.
                return unsafe { self.add_avx2(slot, values) };
            }
        }
        self.add_any(slot, values)
    }

    /// [`add`](Self::add) compiled for AVX-512 (8 f64 or 16 f32 lanes).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn add_avx512(&mut self, slot: usize, values: &[f32]) {
        self.add_any(slot, values)
    }

    /// [`add`](Self::add) compiled for AVX2 (4 f64 or 8 f32 lanes instead of SSE2's 2 or 4):
    /// the fold is a tenth of a resample's CPU.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn add_avx2(&mut self, slot: usize, values: &[f32]) {
        self.add_any(slot, values)
    }

    #[inline(always)]
    fn add_any(&mut self, slot: usize, values: &[f32]) {
        let r = slot * self.cells..(slot + 1) * self.cells;
        // Written without branches inside the loops so that they vectorise.
        let has_nan = || values.iter().fold(false, |any, v| any | v.is_nan());
        match self.stat {
            Stat::Mean | Stat::Count if !has_nan() => {
                self.whole[slot] += 1;
                if self.stat == Stat::Mean {
                    for (s, &v) in self.sum[r].iter_mut().zip(values) {
                        *s += f64::from(v);
                    }
                }
                return;
            }
            // `v > m` is false for a NaN `v`: once filled, a slot keeps its values.
            Stat::Max if self.filled[slot] => {
                for (m, &v) in self.extreme[r].iter_mut().zip(values) {
                    *m = if v > *m { v } else { *m };
                }
                return;
            }
            Stat::Min if self.filled[slot] => {
                for (m, &v) in self.extreme[r].iter_mut().zip(values) {
                    *m = if v < *m { v } else { *m };
                }
                return;
            }
            Stat::Max | Stat::Min => self.filled[slot] = !has_nan(),
            _ => {}
        }
        match self.stat {
            Stat::Mean => {
                for ((s, c), &v) in self.sum[r.clone()]
                    .iter_mut()
                    .zip(&mut self.count[r])
                    .zip(values)
                {
                    let ok = !v.is_nan();
                    *s += if ok { f64::from(v) } else { 0.0 };
                    *c += u32::from(ok);
                }
            }
            Stat::Sum => {
                for (s, &v) in self.sum[r].iter_mut().zip(values) {
                    *s += if v.is_nan() { 0.0 } else { f64::from(v) };
                }
            }
            Stat::Count => {
                for (c, &v) in self.count[r].iter_mut().zip(values) {
                    *c += u32::from(!v.is_nan());
                }
            }
            Stat::Max => {
                for (m, &v) in self.extreme[r].iter_mut().zip(values) {
                    *m = if v > *m || m.is_nan() { v } else { *m };
                }
            }
            Stat::Min => {
                for (m, &v) in self.extreme[r].iter_mut().zip(values) {
                    *m = if v < *m || m.is_nan() { v } else { *m };
                }
            }
        }
    }

    /// Combines another accumulator of the same shape (a partial over other steps).
    pub fn merge(&mut self, other: &Accumulator) {
        for slot in 0..self.slots.min(other.slots) {
            self.merge_slot(slot, other, slot);
        }
    }

    /// Folds slot `from` of `other` (over other steps, of this statistic or one it
    /// [follows from](Stat::follows_from)) into slot `to`.
    pub fn merge_slot(&mut self, to: usize, other: &Accumulator, from: usize) {
        let (sum, count, extreme) = self.stat.parts();
        let r = to * self.cells..(to + 1) * self.cells;
        let q = from * other.cells..(from + 1) * other.cells;
        if sum {
            for (a, b) in self.sum[r.clone()].iter_mut().zip(&other.sum[q.clone()]) {
                *a += b;
            }
        }
        if count {
            for (a, b) in self.count[r.clone()]
                .iter_mut()
                .zip(&other.count[q.clone()])
            {
                *a += b;
            }
            self.whole[to] += other.whole[from];
        }
        if extreme {
            let max = self.stat == Stat::Max;
            for (a, &b) in self.extreme[r].iter_mut().zip(&other.extreme[q]) {
                if a.is_nan() || (max && b > *a) || (!max && b < *a) {
                    *a = b;
                }
            }
        }
    }

    /// Folds slot `from` of `other` into slot `to` where their rows overlap: both hold
    /// `planes` planes of whole rows `w` wide, this one of rows `mine`, `other` of rows `its`
    /// (a partial kept for other bands of rows than this run's).
    pub fn merge_rows(
        &mut self,
        (to, from): (usize, usize),
        other: &Accumulator,
        (planes, w): (usize, usize),
        (mine, its): (std::ops::Range<usize>, std::ops::Range<usize>),
    ) {
        let (sum, count, extreme) = self.stat.parts();
        let max = self.stat == Stat::Max;
        let rows = mine.start.max(its.start)..mine.end.min(its.end);
        for p in 0..planes {
            for r in rows.clone() {
                let a0 = to * self.cells + (p * mine.len() + r - mine.start) * w;
                let b0 = from * other.cells + (p * its.len() + r - its.start) * w;
                for (a, b) in (a0..a0 + w).zip(b0..b0 + w) {
                    if sum {
                        self.sum[a] += other.sum[b];
                    }
                    if count {
                        self.count[a] += other.count[b] + other.whole[from];
                    }
                    if extreme {
                        let (x, y) = (self.extreme[a], other.extreme[b]);
                        if x.is_nan() || (max && y > x) || (!max && y < x) {
                            self.extreme[a] = y;
                        }
                    }
                }
            }
        }
    }

    /// The statistic of `slot`, one value per cell.
    pub fn finish_slot(&self, slot: usize, out: &mut [f32]) {
        let r = slot * self.cells..(slot + 1) * self.cells;
        match self.stat {
            Stat::Mean => {
                let whole = self.whole[slot];
                for ((o, &s), &c) in out.iter_mut().zip(&self.sum[r.clone()]).zip(&self.count[r]) {
                    let c = c + whole;
                    *o = if c == 0 {
                        f32::NAN
                    } else {
                        (s / f64::from(c)) as f32
                    };
                }
            }
            Stat::Sum => {
                for (o, &s) in out.iter_mut().zip(&self.sum[r]) {
                    *o = s as f32;
                }
            }
            Stat::Count => {
                let whole = self.whole[slot];
                for (o, &c) in out.iter_mut().zip(&self.count[r]) {
                    *o = (c + whole) as f32;
                }
            }
            Stat::Max | Stat::Min => out.copy_from_slice(&self.extreme[r]),
        }
    }

    /// Little-endian bytes: sums, counts, extremes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b =
            Vec::with_capacity(self.sum.len() * 8 + self.count.len() * 4 + self.extreme.len() * 4);
        b.extend(self.sum.iter().flat_map(|v| v.to_le_bytes()));
        let cells = self.cells.max(1);
        b.extend(
            self.count
                .iter()
                .enumerate()
                .flat_map(|(i, v)| (v + self.whole[i / cells]).to_le_bytes()),
        );
        b.extend(self.extreme.iter().flat_map(|v| v.to_le_bytes()));
        b
    }

    pub fn from_bytes(stat: Stat, slots: usize, cells: usize, bytes: &[u8]) -> Result<Accumulator> {
        let mut a = Accumulator::new(stat, slots, cells);
        let need = a.sum.len() * 8 + a.count.len() * 4 + a.extreme.len() * 4;
        if bytes.len() != need {
            return Err(Error::Internal(format!(
                "partial of {} bytes, want {need}",
                bytes.len()
            )));
        }
        let (s, rest) = bytes.split_at(a.sum.len() * 8);
        let (c, e) = rest.split_at(a.count.len() * 4);
        for (v, b) in a.sum.iter_mut().zip(s.chunks_exact(8)) {
            *v = f64::from_le_bytes(b.try_into().unwrap_or_default());
        }
        for (v, b) in a.count.iter_mut().zip(c.chunks_exact(4)) {
            *v = u32::from_le_bytes(b.try_into().unwrap_or_default());
        }
        for (v, b) in a.extreme.iter_mut().zip(e.chunks_exact(4)) {
            *v = f32::from_le_bytes(b.try_into().unwrap_or_default());
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cube::time::parse_instant;

    #[test]
    fn periods_are_left_closed_and_left_labelled() -> Result<()> {
        let t0 = parse_instant("2019-03-01T05:00")?;
        let d = Periods::new(Freq::parse("1D")?, t0);
        assert_eq!(d.index(parse_instant("2019-03-01T23:00")?), 0);
        assert_eq!(d.index(parse_instant("2019-03-02T00:00")?), 1);
        assert_eq!(d.label(1), parse_instant("2019-03-02")?);
        let m = Periods::new(Freq::parse("1M")?, t0);
        assert_eq!(m.index(parse_instant("2020-02-29T23:00")?), 11);
        assert_eq!(m.label(11), parse_instant("2020-02-01")?);
        let h = Periods::new(Freq::parse("6h")?, t0);
        assert_eq!(h.index(t0), 0);
        assert_eq!(h.label(1), parse_instant("2019-03-01T06:00")?);
        let y = Periods::new(Freq::parse("1Y")?, t0);
        assert_eq!(
            y.label(y.index(parse_instant("2021-07-01")?)),
            parse_instant("2021-01-01")?
        );
        assert!(Freq::parse("1W").is_err());
        assert!(Freq::parse("0D").is_err());
        Ok(())
    }

    #[test]
    fn statistics_skip_nan_and_merge() {
        let mut a = Accumulator::new(Stat::Mean, 1, 2);
        a.add(0, &[1.0, f32::NAN]);
        let mut b = Accumulator::new(Stat::Mean, 1, 2);
        b.add(0, &[3.0, f32::NAN]);
        a.merge(&b);
        let mut out = [0.0; 2];
        a.finish_slot(0, &mut out);
        assert_eq!(out[0], 2.0);
        assert!(out[1].is_nan());
        // Steps without NaN count once for their slot; with NaN, cell by cell.
        let mut a = Accumulator::new(Stat::Mean, 2, 2);
        let mut n = Accumulator::new(Stat::Count, 2, 2);
        for (slot, step) in [
            (0, [1.0, 5.0]),
            (0, [f32::NAN, 7.0]),
            (1, [2.0, 4.0]),
            (0, [3.0, 3.0]),
        ] {
            a.add(slot, &step);
            n.add(slot, &step);
        }
        let mut b = Accumulator::new(Stat::Mean, 2, 2);
        b.add(1, &[4.0, f32::NAN]);
        a.merge(&b);
        let a = Accumulator::from_bytes(Stat::Mean, 2, 2, &a.to_bytes()).expect("bytes");
        a.finish_slot(0, &mut out);
        assert_eq!(out, [2.0, 5.0]);
        a.finish_slot(1, &mut out);
        assert_eq!(out, [3.0, 4.0]);
        n.finish_slot(0, &mut out);
        assert_eq!(out, [2.0, 3.0]);
        // A monthly mean, sum and count from daily means' bins; a maximum from maxima.
        assert!(Stat::Sum.follows_from(Stat::Mean) && Stat::Count.follows_from(Stat::Mean));
        assert!(!Stat::Mean.follows_from(Stat::Sum) && !Stat::Max.follows_from(Stat::Mean));
        let day = Freq::parse("1D").expect("1D");
        assert!(day.nests_in(GroupBy::Dayofyear) && Freq::Hours(6).nests_in(GroupBy::Month));
        assert!(
            !Freq::Hours(5).nests_in(GroupBy::Month) && !Freq::Days(2).nests_in(GroupBy::Season)
        );
        assert!(
            Freq::Months(1).nests_in(GroupBy::Season)
                && !Freq::Months(1).nests_in(GroupBy::Dayofyear)
        );
        let mut days = Accumulator::new(Stat::Mean, 2, 2);
        days.add(0, &[1.0, 2.0]);
        days.add(0, &[3.0, f32::NAN]);
        days.add(1, &[5.0, 6.0]);
        let mut month = Accumulator::new(Stat::Sum, 1, 2);
        let mut count = Accumulator::new(Stat::Count, 1, 2);
        for d in 0..2 {
            month.merge_slot(0, &days, d);
            count.merge_slot(0, &days, d);
        }
        month.finish_slot(0, &mut out);
        assert_eq!(out, [9.0, 8.0]);
        count.finish_slot(0, &mut out);
        assert_eq!(out, [3.0, 2.0]);
        let mut m = Accumulator::new(Stat::Max, 1, 2);
        m.add(0, &[f32::NAN, 1.0]);
        m.add(0, &[2.0, f32::NAN]);
        // A slot that every cell has a value in skips NaN by comparison alone.
        let (mut hi, mut lo) = (
            Accumulator::new(Stat::Max, 1, 2),
            Accumulator::new(Stat::Min, 1, 2),
        );
        for step in [[1.0, 2.0], [f32::NAN, 5.0], [3.0, f32::NAN], [0.5, 1.5]] {
            hi.add(0, &step);
            lo.add(0, &step);
        }
        hi.finish_slot(0, &mut out);
        assert_eq!(out, [3.0, 5.0]);
        lo.finish_slot(0, &mut out);
        assert_eq!(out, [0.5, 1.5]);
        let round = Accumulator::from_bytes(Stat::Max, 1, 2, &m.to_bytes()).expect("bytes");
        round.finish_slot(0, &mut out);
        assert_eq!(out, [2.0, 1.0]);
        assert_eq!(
            GroupBy::Season.key(parse_instant("2019-12-05").unwrap_or(0)),
            0
        );
    }
}
