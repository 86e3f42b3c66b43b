//! Focal operations, as GeoTrellis's `focal`: each output cell is computed from the input cells
//! around it. An operation declares the **halo** it needs, in cells; a tile task reads its tile
//! plus that border and computes only its interior, so a tiled result is bit-identical to the
//! operation run on the whole raster at once, whatever the tile size — and a halo may be larger
//! than a tile.
//!
//! Inputs are f64 windows with NaN as NoData; the edge rule is the same for the raster's own
//! edge and for NoData inside it:
//! - [`svf`](SvfParams): samples outside the raster or on NoData are ignored (they are not
//!   obstacles); a NoData cell gives NoData.
//! - `slope`, `aspect`, `hillshade` (Horn, as `gdaldem`): a cell whose 3 × 3 window holds NoData or
//!   reaches past the raster's edge is NoData, as `gdaldem` does without `-compute_edges`.
//!
//! Distances are in metres: the cell size for a projected CRS, the cell size times `scale`
//! for a geographic one (where `scale` is required).

mod horn;
mod svf;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

pub use horn::{AspectParams, HillshadeParams, SlopeParams, SlopeUnits};
pub use svf::{Cells32, SvfParams};

use horn::Gradient;

/// The largest halo a job may ask for unless it raises `max_halo`: a tile task reads
/// (tile + 2 × halo)² cells.
pub const DEFAULT_MAX_HALO: usize = 1024;

/// The largest `max_halo` a job may set: (256 + 2 × 8192)² f64 cells is 2.2 GB per task.
pub const MAX_HALO: usize = 8192;

/// Parameters that do not fit the operation or its grid; the message names the parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error(message.into())
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        &self.0
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a focal operation needs to know of the grid it runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FocalGrid {
    /// Cell size in map units.
    pub cell_width: f64,
    pub cell_height: f64,
    /// Map units are degrees.
    pub geographic: bool,
}

impl FocalGrid {
    /// The cell size in metres: map units times `scale`, which a geographic CRS requires.
    fn metric_cell(&self, op: &str, scale: Option<f64>) -> Result<(f64, f64)> {
        let scale = match scale {
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(s) => {
                return Err(Error::invalid(format!(
                    "{op} scale must be a positive number, got {s}"
                )));
            }
            None if self.geographic => {
                return Err(Error::invalid(format!(
                    "{op} on a geographic CRS needs `scale`, the metres per degree \
                     (111120 at the equator, less east-west away from it)"
                )));
            }
            None => 1.0,
        };
        Ok((self.cell_width * scale, self.cell_height * scale))
    }
}

/// A focal operation of a job's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FocalOp {
    /// Sky view factor, 0..1.
    Svf(SvfParams),
    /// Horn slope, degrees or percent.
    Slope(SlopeParams),
    /// Horn aspect, degrees clockwise from north (0..360); flat cells are NoData.
    Aspect(AspectParams),
    /// Horn hillshade, 1..255 (0 is NoData), as `gdaldem` writes it.
    Hillshade(HillshadeParams),
}

/// A focal operation checked against its grid.
#[derive(Debug, Clone)]
pub struct PreparedFocal {
    kernel: Kernel,
    halo: usize,
}

#[derive(Debug, Clone)]
enum Kernel {
    Svf(svf::Rays),
    Gradient(Gradient),
}

impl FocalOp {
    /// The operation's name in a job spec.
    pub fn name(&self) -> &'static str {
        match self {
            FocalOp::Svf(_) => "svf",
            FocalOp::Slope(_) => "slope",
            FocalOp::Aspect(_) => "aspect",
            FocalOp::Hillshade(_) => "hillshade",
        }
    }

    /// Checks the parameters against `grid` and a largest halo; errors name the parameter.
    pub fn prepare(&self, grid: &FocalGrid, max_halo: usize) -> Result<PreparedFocal> {
        let prepared = match self {
            FocalOp::Svf(p) => {
                // The halo first, from the parameters: a radius past `max_halo` is refused
                // before its rays are laid out (a ray of 100,000 cells is memory too).
                let halo = p.halo(grid)?;
                if halo > max_halo {
                    return Err(Error::invalid(format!(
                        "svf needs a halo of {halo} cells, more than the maximum of {max_halo} \
                         (reduce the radius or raise max_halo)"
                    )));
                }
                let rays = p.rays(grid)?;
                let halo = rays.halo;
                PreparedFocal {
                    kernel: Kernel::Svf(rays),
                    halo,
                }
            }
            FocalOp::Slope(p) => PreparedFocal {
                kernel: Kernel::Gradient(Gradient::slope(p, grid)?),
                halo: 1,
            },
            FocalOp::Aspect(p) => PreparedFocal {
                kernel: Kernel::Gradient(Gradient::aspect(p)),
                halo: 1,
            },
            FocalOp::Hillshade(p) => PreparedFocal {
                kernel: Kernel::Gradient(Gradient::hillshade(p, grid)?),
                halo: 1,
            },
        };
        if prepared.halo > max_halo {
            return Err(Error::invalid(format!(
                "{} needs a halo of {} cells, more than the maximum of {max_halo} \
                 (reduce the radius or raise max_halo)",
                self.name(),
                prepared.halo
            )));
        }
        Ok(prepared)
    }

    /// The cell type the operation's output is written as unless the job says otherwise: one
    /// byte (0 = NoData) for hillshade, as gdaldem writes it, else 32-bit floats (NaN = NoData).
    pub fn output_is_byte(&self) -> bool {
        matches!(self, FocalOp::Hillshade(_))
    }
}

impl PreparedFocal {
    /// Cells of context the operation needs on every side.
    pub fn halo(&self) -> usize {
        self.halo
    }

    /// Runs on `input`, which carries [`halo`](Self::halo) cells of context on every side; the
    /// output is `input` less the halo. NaN is NoData, in and out.
    pub fn apply(&self, input: ArrayView2<f64>) -> Array2<f64> {
        match &self.kernel {
            Kernel::Svf(rays) => svf::svf(rays, input),
            Kernel::Gradient(g) => g.apply(input),
        }
    }

    /// Whether the kernel computes in f32 (SVF): then [`apply_f32`](Self::apply_f32) on f32
    /// cells gives [`apply`](Self::apply)'s output rounded to f32, without the conversions.
    pub fn computes_in_f32(&self) -> bool {
        matches!(self.kernel, Kernel::Svf(_))
    }

    /// [`apply`](Self::apply) on f32 cells, the output in f32. An operation that computes in f64
    /// (the Horn operations) converts on the way in and out.
    pub fn apply_f32(&self, input: &Cells32) -> Array2<f32> {
        match &self.kernel {
            Kernel::Svf(rays) => svf::svf_f32(rays, input),
            Kernel::Gradient(g) => g
                .apply(input.view().mapv(f64::from).view())
                .mapv(|v| v as f32),
        }
    }

    /// Runs on a whole raster: cells outside it are NoData.
    pub fn apply_whole(&self, raster: ArrayView2<f64>) -> Array2<f64> {
        self.apply(padded(raster, self.halo).view())
    }
}

/// `raster` inside a border of `halo` NoData cells: the window a whole raster is computed in.
fn padded(raster: ArrayView2<f64>, halo: usize) -> Array2<f64> {
    let (rows, cols) = raster.dim();
    let mut out = Array2::from_elem((rows + 2 * halo, cols + 2 * halo), f64::NAN);
    out.slice_mut(ndarray::s![halo..halo + rows, halo..halo + cols])
        .assign(&raster);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_radius_beyond_the_maximum_halo_is_refused_before_any_work() {
        let grid = FocalGrid {
            cell_width: 1.0,
            cell_height: 1.0,
            geographic: false,
        };
        let op = FocalOp::Svf(SvfParams {
            radius: Some(500.0),
            ..SvfParams::default()
        });
        let err = op.prepare(&grid, 300).unwrap_err().to_string();
        assert!(
            err.contains("svf needs a halo of 500 cells, more than the maximum of 300"),
            "{err}"
        );
        assert_eq!(op.prepare(&grid, 500).unwrap().halo(), 500);
    }

    #[test]
    fn whole_raster_equals_any_tiling_of_it() {
        let (rows, cols) = (83, 61);
        let z = Array2::from_shape_fn((rows, cols), |(r, c)| {
            if r == 40 && c > 10 {
                f64::NAN
            } else {
                ((r as f64) * 0.37).sin() * 20.0 + ((c * 7 + r) % 13) as f64
            }
        });
        let grid = FocalGrid {
            cell_width: 1.0,
            cell_height: 1.0,
            geographic: false,
        };
        let ops = [
            FocalOp::Svf(SvfParams {
                radius_cells: Some(25.0),
                ..SvfParams::default()
            }),
            FocalOp::Hillshade(HillshadeParams::default()),
        ];
        for op in ops {
            let p = op.prepare(&grid, 100).unwrap();
            let whole = p.apply_whole(z.view());
            let h = p.halo();
            let padded = padded(z.view(), h);
            // Tiles of 16 (smaller than the halo), each read with its halo.
            for r0 in (0..rows).step_by(16) {
                for c0 in (0..cols).step_by(16) {
                    let (r1, c1) = ((r0 + 16).min(rows), (c0 + 16).min(cols));
                    let window = padded.slice(ndarray::s![r0..r1 + 2 * h, c0..c1 + 2 * h]);
                    let tile = p.apply(window);
                    let want = whole.slice(ndarray::s![r0..r1, c0..c1]);
                    for (a, b) in tile.iter().zip(want.iter()) {
                        assert_eq!(a.to_bits(), b.to_bits());
                    }
                }
            }
        }
    }
}
