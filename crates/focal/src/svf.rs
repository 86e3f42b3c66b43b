//! Sky view factor: the share of the sky hemisphere a cell sees past the terrain around it.
//!
//! For each of `directions` azimuths (0 = north, clockwise, evenly spaced) a ray leaves the cell
//! and samples the terrain by nearest neighbour; the horizon of that azimuth is the largest
//! elevation angle of a sample, floored at 0; SVF = 1 − mean over azimuths of sin(horizon).
//!
//! Rays are laid out in cell space: a step of `t` cells along azimuth `a` lands on the cell
//! (row − round(t·cos a), col + round(t·sin a)), rounding halves (within 1e-9) away from zero,
//! at a distance of `t·L` metres, where `L` is the length of one cell step along `a` (the cell
//! size when cells are square). Samples are taken at
//! - `steps: K`: `t = T·j / K` for j = 1..K (the seed's sampling), or
//! - exact (no `steps`): every whole cell `t = 1, 2, …, ⌊T⌋` (the sampling RVT uses),
//!
//! where `T` is `radius_cells`, or `radius / L` for a radius in metres. A sample outside the raster
//! or on NoData is ignored; a NoData cell gives NoData.
//!
//! The kernel works in the tangent form — max(Δz / d) per azimuth, one sine per azimuth and
//! cell — in f32 over a window padded with −∞, so ignored samples need no branch. For a fixed
//! azimuth and step every cell reads the same offset, so the inner loop runs over contiguous
//! cells, 32 at a time, and vectorises; the result is the same whatever the window or tile.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

use crate::FocalGrid;

fn default_directions() -> u32 {
    16
}

/// The parameters of `svf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvfParams {
    /// Azimuths, evenly spaced from north (16 by default).
    #[serde(default = "default_directions")]
    pub directions: u32,
    /// Search radius in metres (map units × `scale`).
    #[serde(default)]
    pub radius: Option<f64>,
    /// Search radius in cells; 10 when neither radius is given.
    #[serde(default)]
    pub radius_cells: Option<f64>,
    /// Samples per ray, evenly spaced; every whole cell along the ray when absent.
    #[serde(default)]
    pub steps: Option<u32>,
    /// Metres per map unit: required on a geographic CRS (e.g. 111120 for degrees).
    #[serde(default)]
    pub scale: Option<f64>,
}

impl Default for SvfParams {
    fn default() -> Self {
        SvfParams {
            directions: default_directions(),
            radius: None,
            radius_cells: None,
            steps: None,
            scale: None,
        }
    }
}

/// The samples of one azimuth: cell offsets and 1 / distance in metres.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ray {
    pub samples: Vec<(isize, isize, f32)>,
}

/// The rays of an SVF and the halo they need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rays {
    pub rays: Vec<Ray>,
    pub halo: usize,
}

/// The most samples a ray may take with `steps` (more than the cells it crosses only repeats
/// them).
pub const MAX_SVF_STEPS: u32 = 65_536;
/// The most samples all rays together may take: the kernel's table of offsets and weights.
const MAX_SVF_SAMPLES: u64 = 16_000_000;

/// One azimuth's ray before it is laid out: its direction, the length of one step along it,
/// and how many cells it reaches.
struct Azimuth {
    sin: f64,
    cos: f64,
    step: f64,
    reach: f64,
}

impl SvfParams {
    /// The halo the rays need on `grid`, from the parameters alone (nothing is allocated):
    /// a job checks it against its `max_halo` before laying the rays out.
    pub(crate) fn halo(&self, grid: &FocalGrid) -> Result<usize> {
        Ok(self
            .azimuths(grid)?
            .iter()
            .map(|a| {
                let t = match self.steps {
                    Some(_) => a.reach,
                    None => (a.reach + 1e-9).floor(),
                };
                nearest(t * a.cos)
                    .unsigned_abs()
                    .max(nearest(t * a.sin).unsigned_abs())
            })
            .max()
            .unwrap_or(0))
    }

    /// Checks the parameters; the azimuths with their reach on `grid`.
    fn azimuths(&self, grid: &FocalGrid) -> Result<Vec<Azimuth>> {
        if self.directions == 0 {
            return Err(Error::invalid("svf needs at least 1 direction, got 0"));
        }
        if self.directions > 3600 {
            return Err(Error::invalid(format!(
                "svf directions {} is more than 3600",
                self.directions
            )));
        }
        if self.steps == Some(0) {
            return Err(Error::invalid("svf steps must be at least 1, got 0"));
        }
        if let Some(k) = self.steps
            && k > MAX_SVF_STEPS
        {
            return Err(Error::invalid(format!(
                "svf steps {k} is more than {MAX_SVF_STEPS}"
            )));
        }
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(Error::invalid(format!(
                    "svf {name} must be a positive number, got {v}"
                )))
            }
        };
        let radius = match (self.radius, self.radius_cells) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "svf takes `radius` (metres) or `radius_cells`, not both",
                ));
            }
            (Some(r), None) => Radius::Metres(positive("radius", r)?),
            (None, Some(r)) => Radius::Cells(positive("radius_cells", r)?),
            (None, None) => Radius::Cells(10.0),
        };
        let (cw, ch) = grid.metric_cell("svf", self.scale)?;
        let n = self.directions as usize;
        let mut azimuths = Vec::with_capacity(n);
        let mut samples = 0u64;
        for k in 0..n {
            let a = std::f64::consts::TAU * k as f64 / n as f64;
            let (sin, cos) = (a.sin(), a.cos());
            let step = if cw == ch {
                cw
            } else {
                ((sin * cw) * (sin * cw) + (cos * ch) * (cos * ch)).sqrt()
            };
            let reach = match radius {
                Radius::Cells(r) => r,
                Radius::Metres(r) => r / step,
            };
            // A ray reaching further than any halo could hold is refused before it is laid out.
            if reach > 1e6 {
                return Err(Error::invalid(format!(
                    "svf radius of {reach:.0} cells is too large"
                )));
            }
            samples += u64::from(self.steps.unwrap_or(reach as u32));
            azimuths.push(Azimuth {
                sin,
                cos,
                step,
                reach,
            });
        }
        if samples > MAX_SVF_SAMPLES {
            return Err(Error::invalid(format!(
                "svf of {n} directions takes {samples} samples, more than {MAX_SVF_SAMPLES} \
                 (fewer directions, steps or a smaller radius)"
            )));
        }
        Ok(azimuths)
    }

    /// Checks the parameters and lays out the rays on `grid`.
    pub(crate) fn rays(&self, grid: &FocalGrid) -> Result<Rays> {
        let azimuths = self.azimuths(grid)?;
        let mut rays = Vec::with_capacity(azimuths.len());
        let mut halo = 0usize;
        for &Azimuth {
            sin: s,
            cos: c,
            step,
            reach,
        } in &azimuths
        {
            let ts: Vec<f64> = match self.steps {
                Some(k_steps) => (1..=k_steps)
                    .map(|j| reach * j as f64 / k_steps as f64)
                    .collect(),
                None => (1..=(reach + 1e-9).floor() as usize)
                    .map(|j| j as f64)
                    .collect(),
            };
            let mut samples: Vec<(isize, isize, f32)> = Vec::with_capacity(ts.len());
            for t in ts {
                let (di, dj) = (nearest(-t * c), nearest(t * s));
                // The cell itself, or the cell the previous (nearer) sample already read: a
                // nearer sample has the larger 1/d, so for a rise it wins, and a fall is floored
                // at 0 anyway. Dropping the repeat leaves every maximum unchanged.
                if (di, dj) == (0, 0) || samples.last().is_some_and(|p| (p.0, p.1) == (di, dj)) {
                    continue;
                }
                halo = halo.max(di.unsigned_abs()).max(dj.unsigned_abs());
                samples.push((di, dj, (1.0 / (t * step)) as f32));
            }
            rays.push(Ray { samples });
        }
        Ok(Rays { rays, halo })
    }
}

/// The nearest whole cell, halves away from zero. A geometric half (sin 30° · 1) computed in
/// floating point lands a hair to either side of .5, so halves are recognised within 1e-9.
fn nearest(x: f64) -> isize {
    let n = (x.abs() + 0.5 + 1e-9).floor() as isize;
    if x < 0.0 { -n } else { n }
}

#[derive(Debug, Clone, Copy)]
enum Radius {
    Metres(f64),
    Cells(f64),
}

/// Cells computed together: the width of the inner loop.
const LANES: usize = 32;
/// Output rows and columns a block of work covers: its window stays in a core's L2.
const BLOCK_ROWS: usize = 32;
const BLOCK_COLS: usize = 256;

/// SVF of the interior of `input` (NaN = NoData), which carries `rays.halo` cells of context on
/// every side; the output is `input` less the halo.
pub(crate) fn svf(rays: &Rays, input: ArrayView2<f64>) -> Array2<f64> {
    let (rows, cols) = input.dim();
    // Elevations in f32. On all cores: on a wide window (a row of tiles) this is not negligible
    // beside the rays.
    let mut z = Cells32::nan(rows, cols);
    if cols > 0 {
        z.as_mut_slice()
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, to)| {
                for (d, &v) in to.iter_mut().zip(input.row(r)) {
                    *d = v as f32;
                }
            });
    }
    kernel(rays, &z)
}

/// [`svf`] on f32 elevations, computed on them where they are, the output rounded to f32: the
/// same cells as [`svf`] on the same elevations, without converting either way.
pub(crate) fn svf_f32(rays: &Rays, input: &Cells32) -> Array2<f32> {
    kernel(rays, input)
}

/// The SVF of the interior of `z` (NaN or −∞ = NoData) less the halo, on all cores.
fn kernel<O: Out>(rays: &Rays, z: &Cells32) -> Array2<O> {
    let h = rays.halo;
    let (rin, cin) = (z.rows, z.cols);
    let (rout, cout) = (rin.saturating_sub(2 * h), cin.saturating_sub(2 * h));
    if rout == 0 || cout == 0 {
        return Array2::from_elem((rout, cout), O::NAN);
    }
    let offsets: Vec<Vec<(isize, f32)>> = rays
        .rays
        .iter()
        .map(|r| {
            r.samples
                .iter()
                .map(|&(di, dj, inv)| (di * cin as isize + dj, inv))
                .collect()
        })
        .collect();
    let kernel = Kernel {
        z: &z.cells,
        stride: cin,
        halo: h,
        offsets: &offsets,
    };
    let mut out = vec![O::NAN; rout * cout];
    out.par_chunks_mut(BLOCK_ROWS * cout)
        .enumerate()
        .for_each(|(b, band)| kernel.band(b * BLOCK_ROWS, cout, band));
    Array2::from_shape_vec((rout, cout), out).unwrap_or_else(|_| Array2::from_elem((0, 0), O::NAN))
}

/// `rows` × `cols` f32 elevations, row-major (NaN = NoData), followed by the LANES cells the
/// SVF kernel may read past the last one: what [`crate::PreparedFocal::apply_f32`] takes, so
/// that the cells are computed where they are.
#[derive(Debug, Clone)]
pub struct Cells32 {
    cells: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Cells32 {
    /// `rows` × `cols` NoData cells.
    pub fn nan(rows: usize, cols: usize) -> Cells32 {
        Cells32 {
            cells: vec![f32::NAN; rows * cols + LANES],
            rows,
            cols,
        }
    }

    /// (rows, columns).
    pub fn dim(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The cells, row after row.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.cells[..self.rows * self.cols]
    }

    /// The cells as an array.
    pub fn view(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.rows, self.cols), &self.cells[..self.rows * self.cols])
            .expect("a Cells32 holds rows × cols cells")
    }
}

/// A cell type the kernel writes its output in.
trait Out: Copy + Send + Sync {
    const NAN: Self;
    fn from_f64(v: f64) -> Self;
}

impl Out for f64 {
    const NAN: f64 = f64::NAN;
    fn from_f64(v: f64) -> f64 {
        v
    }
}

impl Out for f32 {
    const NAN: f32 = f32::NAN;
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
}

/// Reads elevations `z` (`stride` cells a row, and LANES to spare at the end): a chunk of LANES
/// cells of a row may run past its last column, into the next row or the room to spare, as the
/// output's lanes past the last column are dropped.
struct Kernel<'a> {
    z: &'a [f32],
    stride: usize,
    halo: usize,
    offsets: &'a [Vec<(isize, f32)>],
}

impl Kernel<'_> {
    /// Output rows `row0..` (as many as `band` has), block of columns by block of columns.
    /// `band` holds whole output rows of `cols` cells.
    fn band<O: Out>(&self, row0: usize, cols: usize, band: &mut [O]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { self.band_avx2(row0, cols, band) };
                return;
            }
        }
        self.band_generic(row0, cols, band);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn band_avx2<O: Out>(&self, row0: usize, cols: usize, band: &mut [O]) {
        self.band_generic(row0, cols, band);
    }

    #[inline(always)]
    fn band_generic<O: Out>(&self, row0: usize, cols: usize, band: &mut [O]) {
        let rows = band.len() / cols;
        let n = self.offsets.len() as f64;
        let mut acc = [0f64; LANES];
        for c_block in (0..cols).step_by(BLOCK_COLS) {
            let c_end = (c_block + BLOCK_COLS).min(cols);
            for r in 0..rows {
                let centre_row = (row0 + r + self.halo) * self.stride + self.halo;
                for c0 in (c_block..c_end).step_by(LANES) {
                    let base = centre_row + c0;
                    let z0: &[f32; LANES] = self.z[base..base + LANES]
                        .try_into()
                        .unwrap_or(&[f32::NAN; LANES]);
                    acc.fill(0.0);
                    for ray in self.offsets {
                        let m = self.horizon(base, z0, ray);
                        for (a, &t) in acc.iter_mut().zip(&m) {
                            let t = t as f64;
                            *a += t / (1.0 + t * t).sqrt();
                        }
                    }
                    let width = LANES.min(c_end - c0);
                    for l in 0..width {
                        // NaN and −∞ are NoData.
                        band[r * cols + c0 + l] = if z0[l] > f32::NEG_INFINITY {
                            O::from_f64(1.0 - acc[l] / n)
                        } else {
                            O::NAN
                        };
                    }
                }
            }
        }
    }

    /// max(0, max over the ray's samples of Δz / d) for LANES cells from `base`. A NoData
    /// sample (NaN or −∞) gives NaN or −∞, which is never the larger. (The loop is as it is
    /// for speed: a branch of another shape here, or `m` handed to a function, costs 30 %.)
    #[inline(always)]
    fn horizon(&self, base: usize, z0: &[f32; LANES], ray: &[(isize, f32)]) -> [f32; LANES] {
        let mut m = [0f32; LANES];
        for &(off, inv) in ray {
            let at = base.wrapping_add_signed(off);
            let Some(w) = self.z.get(at..at + LANES) else {
                continue;
            };
            for l in 0..LANES {
                let v = (w[l] - z0[l]) * inv;
                m[l] = if v > m[l] { v } else { m[l] };
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::padded;
    use ndarray::Array2;

    fn grid(cell: f64) -> FocalGrid {
        FocalGrid {
            cell_width: cell,
            cell_height: cell,
            geographic: false,
        }
    }

    /// The definition, cell by cell, in f64: the oracle for the kernel.
    fn naive(p: &SvfParams, g: &FocalGrid, z: &Array2<f64>) -> Array2<f64> {
        let rays = p.rays(g).unwrap();
        let (rows, cols) = z.dim();
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            let z0 = z[(r, c)];
            if z0.is_nan() {
                return f64::NAN;
            }
            let mut s = 0.0;
            for ray in &rays.rays {
                let mut m: f64 = 0.0;
                for &(di, dj, inv) in &ray.samples {
                    let (rr, cc) = (r as isize + di, c as isize + dj);
                    if rr < 0 || cc < 0 || rr >= rows as isize || cc >= cols as isize {
                        continue;
                    }
                    let v = z[(rr as usize, cc as usize)];
                    if !v.is_nan() {
                        m = m.max((v - z0) * inv as f64);
                    }
                }
                s += m / (1.0 + m * m).sqrt();
            }
            1.0 - s / rays.rays.len() as f64
        })
    }

    #[test]
    fn flat_ground_sees_the_whole_sky_and_a_pit_sees_less() {
        let p = SvfParams {
            directions: 8,
            radius_cells: Some(3.0),
            ..SvfParams::default()
        };
        let rays = p.rays(&grid(1.0)).unwrap();
        assert_eq!(rays.halo, 3);
        let mut z = Array2::from_elem((9, 9), 10.0);
        z[(4, 4)] = 9.0;
        let out = svf(&rays, padded(z.view(), 3).view());
        assert_eq!(out[(0, 0)], 1.0);
        // Every direction rises 1 m at 1 m: sin(45°) in all 8.
        assert!((out[(4, 4)] - (1.0 - 0.5f64.sqrt())).abs() < 1e-7);
    }

    #[test]
    fn kernel_equals_the_definition_with_nodata_and_edges() {
        let (rows, cols) = (37, 70);
        let z = Array2::from_shape_fn((rows, cols), |(r, c)| {
            if (r * 7 + c * 3) % 41 == 0 {
                f64::NAN
            } else {
                ((r * 13 + c * 29) % 17) as f64 * 0.75 + (r as f64 * 0.1).sin() * 4.0
            }
        });
        for p in [
            SvfParams {
                directions: 16,
                radius_cells: Some(9.0),
                ..SvfParams::default()
            },
            SvfParams {
                directions: 7,
                radius: Some(11.0),
                steps: Some(5),
                ..SvfParams::default()
            },
        ] {
            let g = grid(0.5);
            let rays = p.rays(&g).unwrap();
            let got = svf(&rays, padded(z.view(), rays.halo).view());
            let want = naive(&p, &g, &z);
            for (a, b) in got.iter().zip(want.iter()) {
                assert!(
                    (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-6,
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn on_f32_cells_the_kernel_gives_the_f64_output_rounded() {
        // 45 columns: chunks of 32 cells run past the ends of rows.
        let (rows, cols) = (41, 45);
        let z = Array2::from_shape_fn((rows, cols), |(r, c)| match (r * 5 + c * 11) % 37 {
            0 => f64::NAN,
            1 => f64::NEG_INFINITY,
            k => f64::from((k as f32) * 0.37 + (c as f32 * 0.2).cos() * 3.0),
        });
        let p = SvfParams {
            directions: 16,
            radius_cells: Some(8.0),
            ..SvfParams::default()
        };
        let rays = p.rays(&grid(0.75)).unwrap();
        let window = padded(z.view(), rays.halo);
        let want = svf(&rays, window.view());
        let mut cells = Cells32::nan(window.nrows(), window.ncols());
        for (to, &v) in cells.as_mut_slice().iter_mut().zip(window.iter()) {
            *to = v as f32;
        }
        assert_eq!(
            cells.view().mapv(f32::to_bits),
            window.mapv(|v| (v as f32).to_bits())
        );
        let got = svf_f32(&rays, &cells);
        assert_eq!(got.dim(), want.dim());
        for (a, b) in got.iter().zip(want.iter()) {
            assert!(a.to_bits() == (*b as f32).to_bits(), "{a} vs {b}");
        }
        assert!(want.iter().filter(|v| v.is_nan()).count() > 20);
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        let g = grid(1.0);
        let err = |p: SvfParams| p.rays(&g).unwrap_err().to_string();
        assert!(
            err(SvfParams {
                directions: 0,
                ..SvfParams::default()
            })
            .contains("at least 1 direction")
        );
        assert!(
            err(SvfParams {
                radius: Some(-5.0),
                ..SvfParams::default()
            })
            .contains("radius must be a positive number, got -5")
        );
        assert!(
            err(SvfParams {
                steps: Some(0),
                ..SvfParams::default()
            })
            .contains("steps must be at least 1")
        );
        let geo = FocalGrid {
            geographic: true,
            ..g
        };
        let e = SvfParams::default().rays(&geo).unwrap_err().to_string();
        assert!(e.contains("geographic") && e.contains("scale"), "{e}");
    }

    /// The halo is known from the parameters before any ray is laid out, and it is the halo
    /// the rays then need; sizes that would allocate without bound are refused (issue 20,
    /// findings 2 and 6: `steps: 4000000000`, a radius of 100,000 cells).
    #[test]
    fn the_halo_is_known_before_the_rays_and_huge_sizes_are_refused() {
        for (directions, radius_cells, steps, cell) in [
            (8, 3.0, None, 1.0),
            (16, 9.5, Some(5), 1.0),
            (7, 100.0, Some(30), 1.0),
            (36, 33.3, None, 3.0),
        ] {
            let p = SvfParams {
                directions,
                radius_cells: Some(radius_cells),
                steps,
                ..SvfParams::default()
            };
            let g = grid(cell);
            assert_eq!(p.halo(&g).unwrap(), p.rays(&g).unwrap().halo, "{p:?}");
        }
        let g = grid(1.0);
        let huge_steps = SvfParams {
            steps: Some(4_000_000_000),
            ..SvfParams::default()
        };
        let e = huge_steps.rays(&g).unwrap_err().to_string();
        assert!(e.contains("svf steps 4000000000 is more than 65536"), "{e}");
        let many = SvfParams {
            directions: 3600,
            radius_cells: Some(100_000.0),
            ..SvfParams::default()
        };
        let e = many.halo(&g).unwrap_err().to_string();
        assert!(e.contains("samples, more than 16000000"), "{e}");
        let far = SvfParams {
            directions: 16,
            radius_cells: Some(100_000.0),
            ..SvfParams::default()
        };
        let e = crate::FocalOp::Svf(far)
            .prepare(&g, 1024)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs a halo of 100000 cells, more than the maximum of 1024"),
            "{e}"
        );
    }
}
