//! Finding each cell's stations: the k nearest, those within a distance, or both — for a
//! block of cells at a time.
//!
//! A block's candidates are found once in an R-tree (`rstar`): every station within r + 2R of
//! the block's centre, where r is the reach a cell needs (the centre's k-th nearest station's
//! distance, or the maximum distance) and R the block's half-diagonal. Any cell of the block
//! finds its own stations among them, by a partial sort of a few dozen distances.

use std::ops::Range;

use rayon::prelude::*;
use rstar::RTree;
use rstar::primitives::GeomWithData;

use super::kriging::{dist, dist2};
use crate::model::GridExtent;

/// Cells per side of a block, at the most and at the least.
const BLOCK_MAX: usize = 64;
const BLOCK_MIN: usize = 8;

/// Cells per side of a block for `k` nearest stations among `xy` on `grid`: about a quarter
/// of the distance of a cell's k-th nearest station, so a block's candidates stay few (they
/// reach r + 2R) while its cells share neighbour sets; 16 without a k.
pub fn block_side(xy: &[(f64, f64)], grid: &GridExtent, k: Option<usize>) -> usize {
    let Some(k) = k else {
        return 16;
    };
    let (mut x0, mut y0, mut x1, mut y1) = (
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in xy {
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let area = ((x1 - x0) * (y1 - y0)).max(grid.extent.width() * grid.extent.height());
    let r_k = (k as f64 * area / (std::f64::consts::PI * xy.len().max(1) as f64)).sqrt();
    let cell = grid.cell_size.width.max(grid.cell_size.height);
    let side = r_k / (4.0 * cell);
    if side.is_finite() {
        (side as usize).clamp(BLOCK_MIN, BLOCK_MAX)
    } else {
        16
    }
}

/// Which stations a cell uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reach {
    /// The k nearest (all when `None`).
    pub nearest: Option<usize>,
    /// Only those within this distance.
    pub max_distance: Option<f64>,
}

impl Reach {
    pub const ALL: Reach = Reach {
        nearest: None,
        max_distance: None,
    };
}

/// Stations indexed for search.
#[derive(Debug)]
pub struct Search<'a> {
    xy: &'a [(f64, f64)],
    tree: RTree<GeomWithData<[f64; 2], usize>>,
}

impl<'a> Search<'a> {
    pub fn new(xy: &'a [(f64, f64)]) -> Search<'a> {
        let tree = RTree::bulk_load(
            xy.iter()
                .enumerate()
                .map(|(i, &(x, y))| GeomWithData::new([x, y], i))
                .collect(),
        );
        Search { xy, tree }
    }

    /// The candidates of the block of cells whose centres span `nw`..`se`.
    pub fn candidates(&self, nw: (f64, f64), se: (f64, f64), reach: Reach) -> Vec<usize> {
        let centre = [(nw.0 + se.0) / 2.0, (nw.1 + se.1) / 2.0];
        let half_diag = dist(nw, se) / 2.0;
        let knn = reach.nearest.and_then(|k| {
            self.tree
                .nearest_neighbor_iter(&centre)
                .take(k)
                .last()
                .map(|s| dist((centre[0], centre[1]), (s.geom()[0], s.geom()[1])))
        });
        let r = match (knn, reach.max_distance) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return (0..self.xy.len()).collect(),
        };
        let reach = r + 2.0 * half_diag;
        self.tree
            .locate_within_distance(centre, reach * reach * (1.0 + 1e-12) + 1e-9)
            .map(|s| s.data)
            .collect()
    }

    /// The stations of point `p` among `candidates`, as (squared distance, station): nearest
    /// first (ties by station order) when `ordered`, else in no particular order.
    pub fn select(
        &self,
        p: (f64, f64),
        candidates: &[usize],
        reach: Reach,
        ordered: bool,
        out: &mut Vec<(f64, usize)>,
    ) {
        out.clear();
        let max2 = reach.max_distance.map_or(f64::INFINITY, |m| m * m);
        out.extend(
            candidates
                .iter()
                .map(|&s| (dist2(p, self.xy[s]), s))
                .filter(|&(d2, _)| d2 <= max2),
        );
        let order = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if let Some(k) = reach.nearest
            && k < out.len()
        {
            out.select_nth_unstable_by(k - 1, order);
            out.truncate(k);
        }
        if ordered {
            out.sort_unstable_by(order);
        }
    }
}

/// Computes `f` over the cells of `rows` of `grid` a block of `side` × `side` cells at a
/// time, in parallel; `f` gets a block (rows, columns) and returns its values row-major. The result is the band's values,
/// row-major.
pub fn by_blocks<T: Send + Copy + Default, E: Send>(
    grid: &GridExtent,
    rows: Range<usize>,
    side: usize,
    f: impl Fn(Range<usize>, Range<usize>) -> Result<Vec<T>, E> + Sync,
) -> Result<Vec<T>, E> {
    let cols = grid.cols as usize;
    let blocks: Vec<(usize, usize)> = rows
        .clone()
        .step_by(side)
        .flat_map(|r0| (0..cols).step_by(side).map(move |c0| (r0, c0)))
        .collect();
    let computed: Vec<Vec<T>> = blocks
        .par_iter()
        .map(|&(r0, c0)| f(r0..(r0 + side).min(rows.end), c0..(c0 + side).min(cols)))
        .collect::<Result<_, E>>()?;
    let mut out = vec![T::default(); rows.len() * cols];
    for (&(r0, c0), values) in blocks.iter().zip(computed) {
        let w = side.min(cols - c0);
        for (i, row) in values.chunks(w).enumerate() {
            let at = (r0 - rows.start + i) * cols + c0;
            out[at..at + w].copy_from_slice(row);
        }
    }
    Ok(out)
}

/// The centres of the first and last cells of a block.
pub fn block_corners(
    grid: &GridExtent,
    rows: &Range<usize>,
    cols: &Range<usize>,
) -> ((f64, f64), (f64, f64)) {
    (
        grid.cell_centre(cols.start as u64, rows.start as u64),
        grid.cell_centre(cols.end as u64 - 1, rows.end as u64 - 1),
    )
}
