//! Ordinary kriging, as PyKrige's `OrdinaryKriging` computes it.
//!
//! For a point p and stations s₁..sₙ with values z, the weights w and the Lagrange multiplier
//! solve
//!
//! ```text
//! ⎡ −Γ  1 ⎤ ⎡ w ⎤   ⎡ −γ ⎤        Γᵢⱼ = γ(|sᵢ − sⱼ|), Γᵢᵢ = 0
//! ⎣ 1ᵀ  0 ⎦ ⎣ μ ⎦ = ⎣  1 ⎦        γᵢ  = γ(|p − sᵢ|), 0 where p is on sᵢ (exact values)
//! ```
//!
//! the estimate is wᵀz and the kriging variance −[w; μ]·[−γ; 1]. The system is solved by LU
//! with partial pivoting (LAPACK's `gesv`, which PyKrige calls).
//!
//! - **Global**: one system for every point; it is factored once, and each point costs two
//!   triangular solves (the estimate alone: one dot product with A⁻¹[z; 0]).
//! - **Moving neighbourhood** (the k nearest stations): a system per point, but neighbouring
//!   cells mostly share their k nearest stations, so the factorisation of the last set is
//!   kept and reused while the set does not change. The k nearest of each cell are picked
//!   from the candidates of its block of cells: every station within r + 2R of the block's
//!   centre, where r is the distance of the centre's k-th nearest station and R the block's
//!   half-diagonal (any cell's k nearest lie within r + R of it).

use std::ops::Range;

use super::search::{Reach, Search, block_corners, block_side, by_blocks};
use super::variogram::Variogram;
use crate::model::GridExtent;

/// Neighbour-set systems a block keeps for reuse.
const SYSTEMS_KEPT: usize = 64;

/// PyKrige's cut-off for a point on a station.
pub const EPS: f64 = 1e-10;

/// An LU factorisation with partial pivoting of a square matrix (row-major).
#[derive(Debug, Clone)]
pub struct Lu {
    lu: Vec<f64>,
    piv: Vec<usize>,
    n: usize,
}

impl Lu {
    /// Factors `a` (n × n, row-major); `None` when it is singular.
    pub fn factor(mut a: Vec<f64>, n: usize) -> Option<Lu> {
        let mut piv: Vec<usize> = (0..n).collect();
        for k in 0..n {
            let (mut p, mut best) = (k, a[k * n + k].abs());
            for i in k + 1..n {
                let v = a[i * n + k].abs();
                if v > best {
                    (p, best) = (i, v);
                }
            }
            if best == 0.0 || !best.is_finite() {
                return None;
            }
            if p != k {
                for j in 0..n {
                    a.swap(k * n + j, p * n + j);
                }
                piv.swap(k, p);
            }
            let pivot = a[k * n + k];
            let (top, rest) = a.split_at_mut((k + 1) * n);
            let row_k = &top[k * n..];
            for i in 0..n - k - 1 {
                let row = &mut rest[i * n..(i + 1) * n];
                let f = row[k] / pivot;
                row[k] = f;
                if f != 0.0 {
                    for j in k + 1..n {
                        row[j] -= f * row_k[j];
                    }
                }
            }
        }
        Some(Lu { lu: a, piv, n })
    }

    /// Solves A x = b, overwriting `b` with x.
    pub fn solve_in_place(&self, b: &mut [f64]) {
        let mut x = Vec::with_capacity(self.n);
        self.solve(b, &mut x);
        b.copy_from_slice(&x);
    }

    /// Solves A x = b into `x` (its memory reused), leaving `b` as it is.
    pub fn solve(&self, b: &[f64], x: &mut Vec<f64>) {
        let n = self.n;
        x.clear();
        x.extend(self.piv.iter().map(|&p| b[p]));
        for i in 0..n {
            let row = &self.lu[i * n..i * n + i];
            let s: f64 = row.iter().zip(&x[..i]).map(|(a, b)| a * b).sum();
            x[i] -= s;
        }
        for i in (0..n).rev() {
            let row = &self.lu[i * n + i + 1..(i + 1) * n];
            let s: f64 = row.iter().zip(&x[i + 1..]).map(|(a, b)| a * b).sum();
            x[i] = (x[i] - s) / self.lu[i * n + i];
        }
    }
}

/// Which stations take part in each point's system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbourhood {
    /// Every station.
    Global,
    /// The k nearest stations (PyKrige's `n_closest_points`).
    Nearest(usize),
}

/// Stations and their values at one time step, ready to krige.
#[derive(Debug)]
pub struct Kriging<'a> {
    xy: &'a [(f64, f64)],
    z: &'a [f64],
    variogram: Variogram,
}

/// The estimate and the kriging variance of each cell of a band of rows (row-major).
#[derive(Debug, Default, Clone)]
pub struct Estimates {
    pub estimate: Vec<f64>,
    pub variance: Vec<f64>,
}

/// Why a kriging system could not be solved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Singular;

impl<'a> Kriging<'a> {
    pub fn new(xy: &'a [(f64, f64)], z: &'a [f64], variogram: Variogram) -> Kriging<'a> {
        Kriging { xy, z, variogram }
    }

    /// The system's matrix over the stations `idx` (with the row and column of ones).
    fn matrix(&self, idx: &[usize], gamma: Option<&[f64]>) -> Vec<f64> {
        let n = idx.len();
        let m = n + 1;
        let total = self.xy.len();
        let mut a = vec![0.0; m * m];
        for (i, &si) in idx.iter().enumerate() {
            for (j, &sj) in idx.iter().enumerate() {
                if i != j {
                    a[i * m + j] = -match gamma {
                        Some(g) => g[si * total + sj],
                        None => self.variogram.gamma(dist(self.xy[si], self.xy[sj])),
                    };
                }
            }
            a[i * m + n] = 1.0;
            a[n * m + i] = 1.0;
        }
        a
    }

    /// The right-hand side for point p over the stations `idx`: −γ(|p − sᵢ|) and 1, with
    /// stations p lies on at 0.
    fn rhs(&self, p: (f64, f64), idx: &[usize], b: &mut Vec<f64>) {
        b.clear();
        for &s in idx {
            let d = dist(p, self.xy[s]);
            b.push(if d <= EPS {
                0.0
            } else {
                -self.variogram.gamma(d)
            });
        }
        b.push(1.0);
    }

    /// Kriges the cells of `rows` of `grid`.
    pub fn grid(
        &self,
        grid: &GridExtent,
        rows: Range<usize>,
        neighbourhood: Neighbourhood,
        variance: bool,
    ) -> Result<Estimates, Singular> {
        let cols = grid.cols as usize;
        let points = |r: usize| (0..cols).map(move |c| grid.cell_centre(c as u64, r as u64));
        match neighbourhood {
            Neighbourhood::Nearest(k) if k < self.xy.len() => self.moving(grid, rows, k, variance),
            _ => {
                let mut out = Estimates::default();
                let pts: Vec<(f64, f64)> = rows.flat_map(points).collect();
                self.global(&pts, variance, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Kriges `points` with every station.
    pub fn global(
        &self,
        points: &[(f64, f64)],
        variance: bool,
        out: &mut Estimates,
    ) -> Result<(), Singular> {
        use rayon::prelude::*;
        let n = self.xy.len();
        let idx: Vec<usize> = (0..n).collect();
        let lu = Lu::factor(self.matrix(&idx, None), n + 1).ok_or(Singular)?;
        // λ = A⁻¹ [z; 0]: the estimate at p is b(p)·λ (A is symmetric).
        let mut lambda: Vec<f64> = self.z.iter().copied().chain([0.0]).collect();
        lu.solve_in_place(&mut lambda);
        let results: Vec<(f64, f64)> = points
            .par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(b, x), &p| {
                    self.rhs(p, &idx, b);
                    if variance {
                        lu.solve(b, x);
                        let z: f64 = x[..n].iter().zip(self.z).map(|(w, z)| w * z).sum();
                        let s: f64 = x.iter().zip(b.iter()).map(|(x, r)| -x * r).sum();
                        (z, s)
                    } else {
                        (b.iter().zip(&lambda).map(|(x, l)| x * l).sum(), f64::NAN)
                    }
                },
            )
            .collect();
        out.estimate = results.iter().map(|r| r.0).collect();
        if variance {
            out.variance = results.iter().map(|r| r.1).collect();
        }
        Ok(())
    }

    /// Kriges the cells of `rows` with the `k` nearest stations of each.
    fn moving(
        &self,
        grid: &GridExtent,
        rows: Range<usize>,
        k: usize,
        variance: bool,
    ) -> Result<Estimates, Singular> {
        use rayon::prelude::*;
        let n = self.xy.len();
        let search = Search::new(self.xy);
        // The variogram between every two stations once, when it fits in 256 MB.
        let gamma: Option<Vec<f64>> = (n * n <= 32 << 20).then(|| {
            let mut g = vec![0.0; n * n];
            g.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = self.variogram.gamma(dist(self.xy[i], self.xy[j]));
                }
            });
            g
        });
        let reach = Reach {
            nearest: Some(k),
            max_distance: None,
        };
        let side = block_side(self.xy, grid, Some(k));
        let cells = by_blocks(grid, rows, side, |rows, cols| {
            let (nw, se) = block_corners(grid, &rows, &cols);
            let candidates = search.candidates(nw, se, reach);
            let mut out = Vec::with_capacity(rows.len() * cols.len());
            let n_c = candidates.len();
            // Each candidate's squared distance to the cell, and whether it is in the set.
            let mut d2 = vec![0.0; n_c];
            let mut in_set = vec![false; n_c];
            let mut order: Vec<(f64, usize, usize)> = Vec::with_capacity(n_c);
            let mut set: Vec<usize> = Vec::with_capacity(k);
            // The systems of this block's recent neighbour sets, most recent last: cells of a
            // block share a few sets, and a factorisation costs as much as ~100 cells.
            let mut systems: Vec<(Vec<usize>, Lu, Vec<f64>)> = Vec::new();
            let mut current: Option<usize> = None;
            let mut b = Vec::with_capacity(k + 1);
            let mut x = Vec::with_capacity(k + 1);
            for r in rows {
                for c in cols.clone() {
                    let p = grid.cell_centre(c as u64, r as u64);
                    for (d, &s) in d2.iter_mut().zip(&candidates) {
                        *d = dist2(p, self.xy[s]);
                    }
                    // The last cell's set is this one's too when all its stations are nearer
                    // than every other candidate (a tie is decided afresh below).
                    let same = current.is_some() && {
                        let (mut max_in, mut min_out) = (f64::NEG_INFINITY, f64::INFINITY);
                        for (d, &inside) in d2.iter().zip(&in_set) {
                            if inside {
                                max_in = max_in.max(*d);
                            } else {
                                min_out = min_out.min(*d);
                            }
                        }
                        max_in < min_out
                    };
                    if !same {
                        order.clear();
                        order.extend(
                            d2.iter()
                                .zip(&candidates)
                                .enumerate()
                                .map(|(j, (&d, &s))| (d, s, j)),
                        );
                        if k < order.len() {
                            order.select_nth_unstable_by(k - 1, |a, b| {
                                a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
                            });
                            order.truncate(k);
                        }
                        in_set.fill(false);
                        set.clear();
                        for &(_, s, j) in &order {
                            in_set[j] = true;
                            set.push(s);
                        }
                        set.sort_unstable();
                        current = Some(match systems.iter().rposition(|(s, _, _)| *s == set) {
                            Some(at) => at,
                            None => {
                                let m = set.len() + 1;
                                let lu = Lu::factor(self.matrix(&set, gamma.as_deref()), m)
                                    .ok_or(Singular)?;
                                let mut lambda: Vec<f64> =
                                    set.iter().map(|&s| self.z[s]).chain([0.0]).collect();
                                lu.solve_in_place(&mut lambda);
                                if systems.len() == SYSTEMS_KEPT {
                                    systems.remove(0);
                                }
                                systems.push((set.clone(), lu, lambda));
                                systems.len() - 1
                            }
                        });
                    }
                    let Some((set, lu, lambda)) = current.and_then(|at| systems.get(at)) else {
                        return Err(Singular);
                    };
                    self.rhs(p, set, &mut b);
                    if variance {
                        lu.solve(&b, &mut x);
                        let z: f64 = x.iter().zip(set).map(|(w, &s)| w * self.z[s]).sum();
                        let s: f64 = x.iter().zip(&b).map(|(x, r)| -x * r).sum();
                        out.push((z, s));
                    } else {
                        out.push((b.iter().zip(lambda).map(|(x, l)| x * l).sum(), f64::NAN));
                    }
                }
            }
            Ok(out)
        })?;
        Ok(Estimates {
            estimate: cells.iter().map(|c| c.0).collect(),
            variance: if variance {
                cells.iter().map(|c| c.1).collect()
            } else {
                Vec::new()
            },
        })
    }
}

#[inline]
pub(crate) fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    dist2(a, b).sqrt()
}

#[inline]
pub(crate) fn dist2(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (a.0 - b.0, a.1 - b.1);
    dx * dx + dy * dy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interpolate::variogram::Model;
    use crate::model::CellSize;

    #[test]
    fn lu_solves_a_pivoting_system() {
        let a = vec![0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        let lu = Lu::factor(a, 3).unwrap();
        let mut b = vec![2.0, 2.0, 2.0];
        lu.solve_in_place(&mut b);
        for x in b {
            assert!((x - 1.0).abs() < 1e-15);
        }
        assert!(Lu::factor(vec![1.0, 2.0, 2.0, 4.0], 2).is_none());
    }

    #[test]
    fn kriging_honours_the_stations_and_the_neighbourhood_matches_global_when_it_holds_all() {
        let xy = vec![(1.5, 1.5), (7.5, 2.5), (3.5, 8.5), (8.5, 7.5), (5.2, 4.9)];
        let z = vec![1.0, 4.0, 2.0, 3.0, 5.0];
        let v = Model::Exponential.with(&[2.0, 9.0, 0.1]);
        let kr = Kriging::new(&xy, &z, v);
        let grid = GridExtent::from_origin(0.0, 10.0, CellSize::new(1.0, 1.0), 10, 10);
        let global = kr.grid(&grid, 0..10, Neighbourhood::Global, true).unwrap();
        // Cell (1, 8) has its centre on station 0.
        assert!((global.estimate[8 * 10 + 1] - 1.0).abs() < 1e-12);
        assert!(global.variance[8 * 10 + 1].abs() < 1e-12);
        let moving = kr.moving(&grid, 0..10, 5, true).unwrap();
        for (a, b) in global.estimate.iter().zip(&moving.estimate) {
            assert!((a - b).abs() < 1e-12);
        }
        for (a, b) in global.variance.iter().zip(&moving.variance) {
            assert!((a - b).abs() < 1e-12);
        }
        // Estimates alone take the short path and agree.
        let quick = kr.grid(&grid, 3..7, Neighbourhood::Global, false).unwrap();
        for (a, b) in quick.estimate.iter().zip(&global.estimate[30..70]) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
