//! Inverse distance weighting and nearest station.
//!
//! IDW: the estimate at p is Σ wᵢzᵢ / Σ wᵢ with wᵢ = 1 / dᵢ^power over p's stations (all, the k
//! nearest, those within the maximum distance, or the k nearest within it); a cell on a
//! station (d ≤ 1e-10) takes that station's value; a cell with no station in reach is NaN.
//! Nearest: the value of the nearest station (the lowest index among equally near ones).

use std::ops::Range;

use super::kriging::EPS;
use super::search::{Reach, Search, block_corners, block_side, by_blocks};
use crate::model::GridExtent;

/// Inverse distance weighting of the cells of `rows`.
pub fn idw(
    xy: &[(f64, f64)],
    z: &[f64],
    grid: &GridExtent,
    rows: Range<usize>,
    power: f64,
    reach: Reach,
) -> Vec<f64> {
    each_cell(xy, grid, rows, reach, |near| weighted(near, z, power))
}

/// The IDW estimate from a point's stations, nearest first, as (squared distance, station).
fn weighted(near: &[(f64, usize)], z: &[f64], power: f64) -> f64 {
    match near.first() {
        None => f64::NAN,
        Some(&(d2, s)) if d2.sqrt() <= EPS => z[s],
        _ => {
            let (mut num, mut den) = (0.0, 0.0);
            for &(d2, s) in near {
                let w = 1.0 / d2.sqrt().powf(power);
                num += w * z[s];
                den += w;
            }
            num / den
        }
    }
}

/// The nearest station's index for each cell of `rows` (its Thiessen polygon); `usize::MAX`
/// without stations.
pub fn nearest(xy: &[(f64, f64)], grid: &GridExtent, rows: Range<usize>) -> Vec<usize> {
    let reach = Reach {
        nearest: Some(1),
        max_distance: None,
    };
    each_cell(xy, grid, rows, reach, |near| {
        near.first().map_or(usize::MAX, |n| n.1)
    })
}

/// `value` of each cell of `rows` from the cell's stations in `reach`, nearest first.
fn each_cell<T: Send + Copy + Default>(
    xy: &[(f64, f64)],
    grid: &GridExtent,
    rows: Range<usize>,
    reach: Reach,
    value: impl Fn(&[(f64, usize)]) -> T + Sync,
) -> Vec<T> {
    let search = Search::new(xy);
    let side = block_side(xy, grid, reach.nearest);
    let filled: Result<Vec<T>, ()> = by_blocks(grid, rows, side, |rows, cols| {
        let (nw, se) = block_corners(grid, &rows, &cols);
        let candidates = search.candidates(nw, se, reach);
        let mut near = Vec::new();
        let mut out = Vec::with_capacity(rows.len() * cols.len());
        for r in rows {
            for c in cols.clone() {
                let p = grid.cell_centre(c as u64, r as u64);
                search.select(p, &candidates, reach, true, &mut near);
                out.push(value(&near));
            }
        }
        Ok(out)
    });
    filled.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CellSize;

    #[test]
    fn idw_weights_by_inverse_distance_and_takes_a_station_it_sits_on() {
        let xy = vec![(0.5, 0.5), (3.5, 0.5)];
        let z = vec![1.0, 4.0];
        let grid = GridExtent::from_origin(0.0, 1.0, CellSize::new(1.0, 1.0), 4, 1);
        let v = idw(&xy, &z, &grid, 0..1, 2.0, Reach::ALL);
        assert_eq!(v[0], 1.0);
        assert_eq!(v[3], 4.0);
        // Cell 1: distances 1 and 2 → weights 1 and 1/4.
        assert!((v[1] - (1.0 + 4.0 / 4.0) / 1.25).abs() < 1e-15);
        let near = Reach {
            nearest: Some(1),
            max_distance: None,
        };
        assert_eq!(
            idw(&xy, &z, &grid, 0..1, 2.0, near),
            vec![1.0, 1.0, 4.0, 4.0]
        );
        let short = Reach {
            nearest: None,
            max_distance: Some(0.5),
        };
        let v = idw(&xy, &z, &grid, 0..1, 2.0, short);
        assert!(v[1].is_nan() && v[0] == 1.0);
        assert_eq!(nearest(&xy, &grid, 0..1), vec![0, 0, 1, 1]);
    }
}
