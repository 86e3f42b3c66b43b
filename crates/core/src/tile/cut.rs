//! Cutting a source window onto a target grid: nearest, bilinear or cubic resampling with
//! GDAL's conventions (cell (c, r) has its centre at (c + 0.5, r + 0.5) in grid coordinates),
//! or a plain copy when the grids are aligned.

use ndarray::ArrayView2;

use super::Merger;
use crate::error::{Error, Result};
use crate::model::{CellType, GridExtent};

/// A resampling method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    #[default]
    Nearest,
    Bilinear,
    /// Cubic convolution (Keys, a = −0.5), as GDAL's `cubic`; falls back to bilinear where a
    /// 4 × 4 neighbourhood is not all valid, as GDAL's warper does.
    Cubic,
}

impl Resample {
    /// Cells beyond a footprint the method may read.
    pub fn margin(self) -> usize {
        match self {
            Resample::Nearest => 1,
            Resample::Bilinear => 1,
            Resample::Cubic => 2,
        }
    }

    /// GDAL's name for it.
    pub fn gdal_name(self) -> &'static str {
        match self {
            Resample::Nearest => "near",
            Resample::Bilinear => "bilinear",
            Resample::Cubic => "cubic",
        }
    }
}

impl std::str::FromStr for Resample {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nearest" | "near" => Ok(Resample::Nearest),
            "bilinear" => Ok(Resample::Bilinear),
            "cubic" => Ok(Resample::Cubic),
            _ => Err(Error::invalid(format!(
                "unknown resampling `{s}` (expected nearest, bilinear or cubic)"
            ))),
        }
    }
}

/// Source cells in memory, as f64, and the grid they sit on.
#[derive(Debug, Clone, Copy)]
pub struct SourceWindow<'a> {
    pub values: ArrayView2<'a, f64>,
    pub grid: GridExtent,
    pub cell_type: CellType,
}

impl SourceWindow<'_> {
    #[inline]
    fn valid(&self, row: isize, col: isize) -> Option<f64> {
        let (rows, cols) = self.values.dim();
        if row < 0 || col < 0 || row as usize >= rows || col as usize >= cols {
            return None;
        }
        let v = self.values[(row as usize, col as usize)];
        (!self.cell_type.is_nodata(v)).then_some(v)
    }

    /// Whether a point in grid coordinates lies inside the window (GDAL computes no value for a
    /// target cell whose centre falls outside the source, whatever the method).
    #[inline]
    fn inside(&self, gx: f64, gy: f64) -> bool {
        let (rows, cols) = self.values.dim();
        gx >= 0.0 && gy >= 0.0 && gx < cols as f64 && gy < rows as f64
    }

    fn nearest(&self, gx: f64, gy: f64) -> Option<f64> {
        self.valid(gy.floor() as isize, gx.floor() as isize)
    }

    /// GDAL's bilinear: the weights of valid neighbours only, renormalised.
    fn bilinear(&self, gx: f64, gy: f64) -> Option<f64> {
        let (x, y) = (gx - 0.5, gy - 0.5);
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (c0, r0) = (x0 as isize, y0 as isize);
        let mut sum = 0.0;
        let mut wsum = 0.0;
        for (dr, wy) in [(0, 1.0 - fy), (1, fy)] {
            for (dc, wx) in [(0, 1.0 - fx), (1, fx)] {
                let w = wx * wy;
                if w == 0.0 {
                    continue;
                }
                if let Some(v) = self.valid(r0 + dr, c0 + dc) {
                    sum += w * v;
                    wsum += w;
                }
            }
        }
        (wsum > 0.0).then(|| sum / wsum)
    }

    fn cubic(&self, gx: f64, gy: f64) -> Option<f64> {
        let (x, y) = (gx - 0.5, gy - 0.5);
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (c0, r0) = (x0 as isize, y0 as isize);
        let wx = keys_weights(fx);
        let wy = keys_weights(fy);
        let mut sum = 0.0;
        for (j, wyj) in wy.iter().enumerate() {
            let mut row_sum = 0.0;
            for (i, wxi) in wx.iter().enumerate() {
                match self.valid(r0 - 1 + j as isize, c0 - 1 + i as isize) {
                    Some(v) => row_sum += wxi * v,
                    None => return self.bilinear(gx, gy),
                }
            }
            sum += wyj * row_sum;
        }
        Some(sum)
    }
}

/// Keys cubic convolution weights (a = −0.5) of the four samples around offset `t` ∈ [0, 1).
fn keys_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.5;
    let near = |d: f64| ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0;
    let far = |d: f64| ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A;
    [far(1.0 + t), near(t), near(1.0 - t), far(2.0 - t)]
}

/// A map from target CRS coordinates to source CRS coordinates, in place; a point that cannot
/// be transformed is set to NaN.
pub type PointTransform<'a> = &'a dyn Fn(&mut [f64], &mut [f64]);

/// Cuts `src` onto the cells of `target` and adds every valid sample to `merger`.
///
/// Without a `transform` and with aligned grids (same cell size, corner on a cell line), cells
/// are copied exactly whatever the method — resampling an aligned grid must not change values.
pub fn cut_into(
    src: &SourceWindow<'_>,
    target: &GridExtent,
    method: Resample,
    transform: Option<PointTransform<'_>>,
    merger: &mut Merger,
) {
    let (rows, cols) = merger.shape();
    debug_assert_eq!((rows as u64, cols as u64), (target.rows, target.cols));
    if transform.is_none() && src.grid.is_aligned_with(target) {
        let (gx, gy) = src
            .grid
            .map_to_grid_f64(target.extent.xmin, target.extent.ymax);
        let (dc, dr) = (gx.round() as isize, gy.round() as isize);
        for r in 0..rows {
            for c in 0..cols {
                if merger.wants(r, c)
                    && let Some(v) = src.valid(r as isize + dr, c as isize + dc)
                {
                    merger.add(r, c, v);
                }
            }
        }
        return;
    }
    let mut xs = vec![0.0; cols];
    let mut ys = vec![0.0; cols];
    for r in 0..rows {
        for (c, (x, y)) in xs.iter_mut().zip(ys.iter_mut()).enumerate() {
            (*x, *y) = target.cell_centre(c as u64, r as u64);
        }
        if let Some(t) = transform {
            t(&mut xs, &mut ys);
        }
        for c in 0..cols {
            if !merger.wants(r, c) || !xs[c].is_finite() || !ys[c].is_finite() {
                continue;
            }
            let (gx, gy) = src.grid.map_to_grid_f64(xs[c], ys[c]);
            if !src.inside(gx, gy) {
                continue;
            }
            let v = match method {
                Resample::Nearest => src.nearest(gx, gy),
                Resample::Bilinear => src.bilinear(gx, gy),
                Resample::Cubic => src.cubic(gx, gy),
            };
            if let Some(v) = v {
                merger.add(r, c, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CellSize, DataType};
    use crate::tile::MergeMethod;
    use ndarray::{Array2, array};

    fn src_grid(cols: u64, rows: u64) -> GridExtent {
        GridExtent::from_origin(0.0, 10.0, CellSize::new(1.0, 1.0), cols, rows)
    }

    fn run(
        values: &Array2<f64>,
        nodata: Option<f64>,
        target: GridExtent,
        m: Resample,
    ) -> Array2<f64> {
        let src = SourceWindow {
            values: values.view(),
            grid: src_grid(values.ncols() as u64, values.nrows() as u64),
            cell_type: CellType::new(DataType::F64, nodata),
        };
        let mut merger = Merger::new(
            MergeMethod::First,
            target.rows as usize,
            target.cols as usize,
        );
        cut_into(&src, &target, m, None, &mut merger);
        merger
            .finish(CellType::new(DataType::F64, Some(-1.0)))
            .data
            .to_f64()
    }

    #[test]
    fn aligned_grids_copy_exactly_with_any_method() {
        let v = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        // Target starts one column east and extends past the source: uncovered is NoData.
        let t = GridExtent::from_origin(1.0, 10.0, CellSize::new(1.0, 1.0), 3, 3);
        for m in [Resample::Nearest, Resample::Bilinear, Resample::Cubic] {
            assert_eq!(
                run(&v, None, t, m),
                array![[2.0, 3.0, -1.0], [5.0, 6.0, -1.0], [-1.0, -1.0, -1.0]]
            );
        }
    }

    #[test]
    fn bilinear_at_half_cell_offsets_averages_and_skips_nodata() {
        let v = array![[0.0, 2.0], [4.0, 6.0]];
        // A 1 × 1 target cell centred on the shared corner of all four source cells.
        let t = GridExtent::from_origin(0.5, 9.5, CellSize::new(1.0, 1.0), 1, 1);
        assert_eq!(run(&v, None, t, Resample::Bilinear)[(0, 0)], 3.0);
        assert_eq!(run(&v, Some(6.0), t, Resample::Bilinear)[(0, 0)], 2.0);
        // Nearest picks the cell containing the centre (1.0, 9.0) -> (col 1, row 1).
        assert_eq!(run(&v, None, t, Resample::Nearest)[(0, 0)], 6.0);
    }

    #[test]
    fn upsampling_matches_gdal_pixel_centres() {
        // Source 4 cells of 1 m in a row; target cells of 0.5 m. Bilinear reproduces a linear ramp
        // in the interior and clamps (renormalises) at the edges, as GDAL does.
        let v = array![[0.0, 10.0, 20.0, 30.0]];
        let t = GridExtent::from_origin(0.0, 10.0, CellSize::new(0.5, 1.0), 8, 1);
        let got = run(&v, None, t, Resample::Bilinear);
        assert_eq!(
            got.row(0).to_vec(),
            vec![0.0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30.0]
        );
        // A target cell whose centre lies outside the source gets nothing, even with bilinear.
        // (The cell spans x -1.0..-0.1, its centre -0.55 is west of the source's x = 0.)
        let outside = GridExtent::from_origin(-1.0, 10.0, CellSize::new(0.9, 1.0), 1, 1);
        assert_eq!(run(&v, None, outside, Resample::Bilinear)[(0, 0)], -1.0);
        // Cubic on a linear ramp is exact in the interior too.
        let got = run(&v, None, t, Resample::Cubic);
        for (i, want) in [(3, 12.5), (4, 17.5)] {
            assert!((got[(0, i)] - want).abs() < 1e-12, "{got}");
        }
    }

    #[test]
    fn keys_weights_sum_to_one() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let w = keys_weights(t);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert_eq!(keys_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }
}
