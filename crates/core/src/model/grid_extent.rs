//! `GridExtent`: an extent divided into a whole number of cells.

use serde::{Deserialize, Serialize};

use super::{CellSize, Extent};

/// Within this fraction of a cell, a computed cell count or offset is taken as whole.
pub(crate) const GRID_EPSILON: f64 = 1e-6;

/// Rounds `v` to the nearest integer when it is within [`GRID_EPSILON`] of it, else takes the ceiling.
pub(crate) fn ceil_snapped(v: f64) -> f64 {
    let r = v.round();
    if (v - r).abs() <= GRID_EPSILON {
        r
    } else {
        v.ceil()
    }
}

/// Rounds `v` to the nearest integer when it is within [`GRID_EPSILON`] of it, else takes the floor.
pub(crate) fn floor_snapped(v: f64) -> f64 {
    let r = v.round();
    if (v - r).abs() <= GRID_EPSILON {
        r
    } else {
        v.floor()
    }
}

/// A raster grid: an extent, a cell size and the whole number of columns and rows they give.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GridExtent {
    pub extent: Extent,
    pub cell_size: CellSize,
    pub cols: u64,
    pub rows: u64,
}

impl GridExtent {
    /// A grid from its north-west corner, cell size and dimensions.
    pub fn from_origin(xmin: f64, ymax: f64, cell_size: CellSize, cols: u64, rows: u64) -> Self {
        let extent = Extent::new(
            xmin,
            ymax - rows as f64 * cell_size.height,
            xmin + cols as f64 * cell_size.width,
            ymax,
        );
        GridExtent {
            extent,
            cell_size,
            cols,
            rows,
        }
    }

    /// A grid covering `extent` with `cell_size`; a partial cell at the east or south edge counts whole.
    pub fn covering(extent: Extent, cell_size: CellSize) -> Self {
        let cols = ceil_snapped(extent.width() / cell_size.width).max(1.0) as u64;
        let rows = ceil_snapped(extent.height() / cell_size.height).max(1.0) as u64;
        GridExtent::from_origin(extent.xmin, extent.ymax, cell_size, cols, rows)
    }

    /// GDAL's geotransform: (xmin, cell width, 0, ymax, 0, -cell height).
    pub fn geo_transform(&self) -> [f64; 6] {
        [
            self.extent.xmin,
            self.cell_size.width,
            0.0,
            self.extent.ymax,
            0.0,
            -self.cell_size.height,
        ]
    }

    /// Map coordinates of the centre of cell (`col`, `row`).
    pub fn cell_centre(&self, col: u64, row: u64) -> (f64, f64) {
        (
            self.extent.xmin + (col as f64 + 0.5) * self.cell_size.width,
            self.extent.ymax - (row as f64 + 0.5) * self.cell_size.height,
        )
    }

    /// Continuous grid coordinates of a map point: cell (c, r) spans [c, c+1) × [r, r+1).
    pub fn map_to_grid_f64(&self, x: f64, y: f64) -> (f64, f64) {
        (
            (x - self.extent.xmin) / self.cell_size.width,
            (self.extent.ymax - y) / self.cell_size.height,
        )
    }

    /// The extent of the cells from (`col`, `row`) spanning `cols` × `rows`.
    pub fn window_extent(&self, col: i64, row: i64, cols: u64, rows: u64) -> Extent {
        let xmin = self.extent.xmin + col as f64 * self.cell_size.width;
        let ymax = self.extent.ymax - row as f64 * self.cell_size.height;
        Extent::new(
            xmin,
            ymax - rows as f64 * self.cell_size.height,
            xmin + cols as f64 * self.cell_size.width,
            ymax,
        )
    }

    /// The number of columns and rows, for indexing in memory.
    pub fn shape(&self) -> (usize, usize) {
        (self.cols as usize, self.rows as usize)
    }

    /// Cell-centre x coordinates, west to east.
    pub fn xs(&self) -> Vec<f64> {
        (0..self.cols)
            .map(|c| self.extent.xmin + (c as f64 + 0.5) * self.cell_size.width)
            .collect()
    }

    /// Cell-centre y coordinates, north to south.
    pub fn ys(&self) -> Vec<f64> {
        (0..self.rows)
            .map(|r| self.extent.ymax - (r as f64 + 0.5) * self.cell_size.height)
            .collect()
    }

    /// The grid of a window of rows and columns of this one.
    pub fn window(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> GridExtent {
        GridExtent::from_origin(
            self.extent.xmin + cols.start as f64 * self.cell_size.width,
            self.extent.ymax - rows.start as f64 * self.cell_size.height,
            self.cell_size,
            cols.len() as u64,
            rows.len() as u64,
        )
    }

    /// Whether both have the same dimensions, corner and cell size, to within a millionth of a
    /// cell.
    pub fn same_as(&self, other: &GridExtent) -> bool {
        let tol = GRID_EPSILON * self.cell_size.width.max(self.cell_size.height);
        let close = |a: f64, b: f64| (a - b).abs() <= tol;
        self.cols == other.cols
            && self.rows == other.rows
            && close(self.extent.xmin, other.extent.xmin)
            && close(self.extent.ymax, other.extent.ymax)
            && close(self.cell_size.width, other.cell_size.width)
            && close(self.cell_size.height, other.cell_size.height)
    }

    /// Whether `other` has the same cell size and its corner falls on this grid's cell lines.
    pub fn is_aligned_with(&self, other: &GridExtent) -> bool {
        let same = |a: f64, b: f64| (a - b).abs() <= GRID_EPSILON * a.abs().max(b.abs());
        if !same(self.cell_size.width, other.cell_size.width)
            || !same(self.cell_size.height, other.cell_size.height)
        {
            return false;
        }
        let (dx, dy) = self.map_to_grid_f64(other.extent.xmin, other.extent.ymax);
        (dx - dx.round()).abs() <= GRID_EPSILON && (dy - dy.round()).abs() <= GRID_EPSILON
    }
}

/// `cols`x`rows` cells of `width`x`height` from (xmin, ymax), for messages.
impl std::fmt::Display for GridExtent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{} cells of {}x{} from ({}, {})",
            self.cols,
            self.rows,
            self.cell_size.width,
            self.cell_size.height,
            self.extent.xmin,
            self.extent.ymax
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_counts_partial_cells_and_tolerates_rounding() {
        let g = GridExtent::covering(Extent::new(0.0, 0.0, 10.5, 3.0), CellSize::new(1.0, 1.0));
        assert_eq!((g.cols, g.rows), (11, 3));
        assert_eq!(g.extent, Extent::new(0.0, 0.0, 11.0, 3.0));
        // 0.1 * 3 is 0.30000000000000004: still exactly 3 cells.
        let g = GridExtent::covering(
            Extent::new(0.0, 0.0, 0.1 * 3.0, 0.3),
            CellSize::new(0.1, 0.1),
        );
        assert_eq!((g.cols, g.rows), (3, 3));
    }

    #[test]
    fn cell_centres_follow_gdal_pixel_convention() {
        let g = GridExtent::from_origin(563999.5, 146999.5, CellSize::new(1.0, 1.0), 1000, 1000);
        assert_eq!(g.cell_centre(0, 0), (564000.0, 146999.0));
        assert_eq!(g.map_to_grid_f64(564000.0, 146999.0), (0.5, 0.5));
        assert_eq!(g.geo_transform(), [563999.5, 1.0, 0.0, 146999.5, 0.0, -1.0]);
        assert_eq!(g.xs()[..2], [564000.0, 564001.0]);
        assert_eq!(g.ys()[..2], [146999.0, 146998.0]);
    }

    #[test]
    fn a_window_is_the_grid_of_its_cells() {
        let g = GridExtent::from_origin(-10.125, 60.125, CellSize::new(0.25, 0.25), 80, 40);
        let w = g.window(4..10, 8..20);
        assert_eq!((w.cols, w.rows), (12, 6));
        assert_eq!(w.cell_centre(0, 0), g.cell_centre(8, 4));
        assert!(g.window(0..40, 0..80).same_as(&g));
        assert!(!w.same_as(&g));
        assert_eq!(
            w.to_string(),
            "12x6 cells of 0.25x0.25 from (-8.125, 59.125)"
        );
    }
}
